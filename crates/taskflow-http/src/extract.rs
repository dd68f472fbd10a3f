//! Extractors that turn every kind of bad input into an [`ApiError`] instead of axum's plain-text rejections.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use taskflow_domain::FieldError;

use crate::error::ApiError;

/// A JSON body, limited to 1 MiB, with unknown fields and wrong types reported per field.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(|mime| {
                let mime = mime.trim().to_ascii_lowercase();
                mime == "application/json"
                    || (mime.starts_with("application/") && mime.ends_with("+json"))
            })
            .unwrap_or(false);
        if !is_json {
            return Err(ApiError::UnsupportedMediaType);
        }
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|rejection| match rejection {
                BytesRejection::FailedToBufferBody(
                    axum::extract::rejection::FailedToBufferBody::LengthLimitError(_),
                ) => ApiError::PayloadTooLarge,
                _ => ApiError::MalformedJson("the body could not be read completely".into()),
            })?;
        parse_json(&bytes).map(ApiJson)
    }
}

/// Parses a JSON object body: syntax errors (including trailing garbage and excessive nesting)
/// are a 400; anything that is not an object, and shape errors, are a 422 naming the field.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let document: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| ApiError::MalformedJson(strip_position(&e.to_string())))?;
    if !document.is_object() {
        return Err(ApiError::Validation(
            FieldError::new(
                "body",
                "invalid_type",
                "the body must be a JSON object like {\"title\": \"…\"}",
            )
            .into(),
        ));
    }
    // Deserialise from the text, not the parsed value, so duplicate keys are still refused.
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let path = error.path().to_string();
        let message = strip_position(&error.into_inner().to_string());
        let (field, code) = if let Some(name) = unknown_field(&message) {
            // The path already ends with the unknown key, except at the top level.
            let field = if path == "." { name } else { path };
            (field, "unknown_field")
        } else if let Some(name) = missing_field(&message) {
            let field = if path == "." {
                name
            } else {
                format!("{path}.{name}")
            };
            (field, "required")
        } else if path == "." {
            ("body".to_owned(), "invalid")
        } else {
            (path, "invalid_type")
        };
        ApiError::Validation(FieldError::new(field, code, message).into())
    })
}

fn strip_position(message: &str) -> String {
    match message.find(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}

fn backticked(message: &str) -> Option<String> {
    let start = message.find('`')? + 1;
    let end = message[start..].find('`')? + start;
    Some(message[start..end].to_owned())
}

fn unknown_field(message: &str) -> Option<String> {
    message
        .starts_with("unknown field")
        .then(|| backticked(message))
        .flatten()
}

fn missing_field(message: &str) -> Option<String> {
    message
        .starts_with("missing field")
        .then(|| backticked(message))
        .flatten()
}

/// The raw query string split into parameters; every value kept, order preserved per name.
#[derive(Debug, Default)]
pub struct QueryParams(BTreeMap<String, Vec<String>>);

impl<S: Send + Sync> FromRequestParts<S> for QueryParams {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
        if let Some(query) = parts.uri.query() {
            if query.len() > 8192 {
                return Err(ApiError::query(
                    "query",
                    "too_long",
                    "the query string has at most 8192 characters",
                ));
            }
            for (key, value) in form_urlencoded::parse(query.as_bytes()) {
                if key.is_empty() {
                    continue;
                }
                map.entry(key.into_owned())
                    .or_default()
                    .push(value.into_owned());
            }
        }
        Ok(Self(map))
    }
}

impl QueryParams {
    /// Rejects any parameter not in `allowed` (catches typos like `prority`).
    pub fn only(&self, allowed: &[&str]) -> Result<(), ApiError> {
        let mut errors = taskflow_domain::ValidationErrors::new();
        for name in self.0.keys() {
            if !allowed.contains(&name.as_str()) {
                errors.push(FieldError::new(
                    name.chars().take(64).collect::<String>(),
                    "unknown_parameter",
                    format!("unknown parameter; accepted: {}", allowed.join(", ")),
                ));
            }
        }
        errors.into_result().map_err(ApiError::InvalidQuery)
    }

    /// The single value of `name`, if given; an error if given twice.
    pub fn single(&self, name: &str) -> Result<Option<&str>, ApiError> {
        match self.0.get(name).map(Vec::as_slice) {
            None | Some([]) => Ok(None),
            Some([one]) => Ok(Some(one.as_str())),
            Some(_) => Err(ApiError::query(
                name,
                "repeated",
                "give this parameter at most once",
            )),
        }
    }

    /// Every value of `name`, with comma-separated lists split; an empty value is an error
    /// (a filter that silently matches everything would hide a client bug).
    pub fn many(&self, name: &str) -> Result<Vec<&str>, ApiError> {
        let values: Vec<&str> = self
            .0
            .get(name)
            .map(|values| {
                values
                    .iter()
                    .flat_map(|v| v.split(','))
                    .map(str::trim)
                    .collect()
            })
            .unwrap_or_default();
        if values.iter().any(|v| v.is_empty()) {
            return Err(ApiError::query(
                name,
                "empty",
                "give a value, or leave the parameter out",
            ));
        }
        Ok(values)
    }
}

/// Parses a UUID path segment into a typed id.
pub fn path_id<T: std::str::FromStr>(segment: &str, name: &'static str) -> Result<T, ApiError> {
    segment.parse().map_err(|_| ApiError::InvalidPath(name))
}

/// The `If-Match` precondition of a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IfMatch {
    /// No header: no precondition.
    Absent,
    /// `*`: the resource must exist.
    Any,
    /// One of these versions must be current (weak tags never match).
    Versions(Vec<i64>),
}

impl IfMatch {
    /// Whether `version` satisfies the precondition.
    pub fn allows(&self, version: i64) -> bool {
        match self {
            Self::Absent | Self::Any => true,
            Self::Versions(versions) => versions.contains(&version),
        }
    }

    /// Whether the client stated a version (then a concurrent change is a 412, not a retry).
    pub fn is_conditional(&self) -> bool {
        matches!(self, Self::Versions(_))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for IfMatch {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let Some(value) = parts.headers.get(header::IF_MATCH) else {
            return Ok(Self::Absent);
        };
        let invalid = |message: &str| ApiError::InvalidHeader {
            name: "If-Match",
            message: message.to_owned(),
        };
        let text = value
            .to_str()
            .map_err(|_| invalid("not visible ASCII"))?
            .trim();
        if text == "*" {
            return Ok(Self::Any);
        }
        let mut versions = Vec::new();
        for tag in text.split(',').map(str::trim) {
            if let Some(weak) = tag.strip_prefix("W/") {
                if !(weak.len() >= 2 && weak.starts_with('"') && weak.ends_with('"')) {
                    return Err(invalid("expected entity tags like \"3\""));
                }
                continue; // RFC 9110: If-Match uses strong comparison; weak tags never match.
            }
            let inner = tag
                .strip_prefix('"')
                .and_then(|t| t.strip_suffix('"'))
                .ok_or_else(|| invalid("expected entity tags like \"3\" (with quotes) or *"))?;
            // A tag that is not one of our versions can never match: keep it as an impossible version.
            versions.push(inner.parse::<i64>().unwrap_or(-1));
        }
        Ok(Self::Versions(versions))
    }
}

/// The strong entity tag of a version: `"3"`.
pub fn etag(version: i64) -> String {
    format!("\"{version}\"")
}

/// A typed id taken from the `{id}` path segment; malformed ids are a 400 naming `id`.
#[derive(Debug)]
pub struct IdPath<T>(pub T);

impl<S, T> FromRequestParts<S> for IdPath<T>
where
    S: Send + Sync,
    T: std::str::FromStr,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let axum::extract::Path(segment) =
            axum::extract::Path::<String>::from_request_parts(parts, state)
                .await
                .map_err(|_| ApiError::InvalidPath("id"))?;
        path_id(&segment, "id").map(IdPath)
    }
}
