//! The one HTTP error type. Every failure leaves as RFC 9457 `application/problem+json` with a
//! stable `code`; validation failures list the offending fields.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use taskflow_domain::{FieldError, ValidationErrors};
use taskflow_store::StoreError;

/// Media type of error bodies.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// Everything a handler can answer other than success.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request body or a parameter broke one or more rules (422).
    #[error("validation failed: {0}")]
    Validation(ValidationErrors),
    /// A query parameter is missing, unknown or malformed (400).
    #[error("invalid query: {0}")]
    InvalidQuery(ValidationErrors),
    /// A path segment is malformed (400).
    #[error("invalid path parameter `{0}`")]
    InvalidPath(&'static str),
    /// A header is malformed (400).
    #[error("invalid header `{name}`: {message}")]
    InvalidHeader {
        /// Header name.
        name: &'static str,
        /// What is wrong.
        message: String,
    },
    /// The body is not JSON at all (400).
    #[error("malformed JSON: {0}")]
    MalformedJson(String),
    /// The body is not iCalendar text (400).
    #[error("malformed iCalendar: {0}")]
    MalformedIcs(String),
    /// The body is not declared as JSON (415).
    #[error("unsupported media type")]
    UnsupportedMediaType,
    /// The body exceeds the limit (413).
    #[error("payload too large")]
    PayloadTooLarge,
    /// No usable credentials (401).
    #[error("unauthorized: {0}")]
    Unauthorized(&'static str),
    /// Wrong e-mail or password (401).
    #[error("invalid credentials")]
    InvalidCredentials,
    /// The caller may not use this endpoint (403).
    #[error("forbidden")]
    Forbidden,
    /// Nothing here for this user (404).
    #[error("not found")]
    NotFound,
    /// No such route (404).
    #[error("no such route")]
    NoRoute,
    /// Route exists, method does not (405).
    #[error("method not allowed")]
    MethodNotAllowed,
    /// A uniqueness rule (409); `code` says which.
    #[error("conflict: {message}")]
    Conflict {
        /// Stable code, e.g. `email_taken`.
        code: &'static str,
        /// Explanation.
        message: String,
    },
    /// `If-Match` named an old version (412).
    #[error("precondition failed: current version is {current_version}")]
    PreconditionFailed {
        /// The version now stored.
        current_version: i64,
    },
    /// Too many requests (429).
    #[error("rate limited")]
    RateLimited {
        /// Seconds until a retry can succeed.
        retry_after_secs: u64,
    },
    /// The database is unreachable or not migrated (503).
    #[error("service unavailable: {0}")]
    Unavailable(String),
    /// A bug or an unexpected failure (500); logged, answered opaquely.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    /// A 422 for one field.
    pub fn field(field: impl Into<String>, code: &'static str, message: impl Into<String>) -> Self {
        Self::Validation(FieldError::new(field, code, message).into())
    }

    /// A 400 for one query parameter.
    pub fn query(field: impl Into<String>, code: &'static str, message: impl Into<String>) -> Self {
        Self::InvalidQuery(FieldError::new(field, code, message).into())
    }

    fn status(&self) -> StatusCode {
        match self {
            Self::Validation(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::InvalidQuery(_)
            | Self::InvalidPath(_)
            | Self::InvalidHeader { .. }
            | Self::MalformedJson(_)
            | Self::MalformedIcs(_) => StatusCode::BAD_REQUEST,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Unauthorized(_) | Self::InvalidCredentials => StatusCode::UNAUTHORIZED,
            Self::Forbidden => StatusCode::FORBIDDEN,
            Self::NotFound | Self::NoRoute => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Conflict { .. } => StatusCode::CONFLICT,
            Self::PreconditionFailed { .. } => StatusCode::PRECONDITION_FAILED,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Validation(_) => "validation_failed",
            Self::InvalidQuery(_) => "invalid_query_parameter",
            Self::InvalidPath(_) => "invalid_path_parameter",
            Self::InvalidHeader { .. } => "invalid_header",
            Self::MalformedJson(_) => "malformed_json",
            Self::MalformedIcs(_) => "malformed_ics",
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::PayloadTooLarge => "payload_too_large",
            Self::Unauthorized(code) => code,
            Self::InvalidCredentials => "invalid_credentials",
            Self::Forbidden => "forbidden",
            Self::NotFound => "not_found",
            Self::NoRoute => "no_such_route",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::Conflict { code, .. } => code,
            Self::PreconditionFailed { .. } => "precondition_failed",
            Self::RateLimited { .. } => "rate_limited",
            Self::Unavailable(_) => "service_unavailable",
            Self::Internal(_) => "internal_error",
        }
    }

    fn detail(&self) -> String {
        match self {
            Self::Validation(_) => "The request has invalid fields; see `errors`.".into(),
            Self::InvalidQuery(_) => "The query string has invalid parameters; see `errors`.".into(),
            Self::InvalidPath(name) => format!("The path parameter `{name}` is malformed."),
            Self::InvalidHeader { name, message } => format!("The `{name}` header is invalid: {message}"),
            Self::MalformedJson(message) => format!("The body is not valid JSON: {message}"),
            Self::MalformedIcs(message) => format!("The body is not an iCalendar VCALENDAR: {message}"),
            Self::UnsupportedMediaType => "Send the body as `Content-Type: application/json`.".into(),
            Self::PayloadTooLarge => "The body is larger than 1 MiB.".into(),
            Self::Unauthorized("missing_token") => {
                "Send `Authorization: Bearer <token>` with an access token from /api/v1/auth/login or a personal access token.".into()
            }
            Self::Unauthorized(_) => "The access token is invalid, expired or revoked; sign in again.".into(),
            Self::InvalidCredentials => "The e-mail or password is wrong.".into(),
            Self::Forbidden => "Your account may not use this endpoint.".into(),
            Self::NotFound => "There is no such resource for your account.".into(),
            Self::NoRoute => "There is no such route; see /api/v1/openapi.json.".into(),
            Self::MethodNotAllowed => "This route does not accept that method.".into(),
            Self::Conflict { message, .. } => message.clone(),
            Self::PreconditionFailed { current_version } => format!(
                "The resource changed since you read it (now version {current_version}); fetch it again and reapply your change."
            ),
            Self::RateLimited { retry_after_secs } => {
                format!("Too many requests; retry after {retry_after_secs} s.")
            }
            Self::Unavailable(_) => "The service is temporarily unavailable; retry shortly.".into(),
            Self::Internal(_) => "Something went wrong on our side; it has been logged.".into(),
        }
    }

    fn title(&self) -> &'static str {
        self.status().canonical_reason().unwrap_or("Error")
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::NotFound => Self::NotFound,
            StoreError::VersionMismatch { current } => Self::PreconditionFailed {
                current_version: current,
            },
            StoreError::Conflict(rule) => Self::Conflict {
                code: "conflict",
                message: format!("This would break the uniqueness rule `{rule}`."),
            },
            StoreError::Unavailable(message) => Self::Unavailable(message),
            other => Self::Internal(other.to_string()),
        }
    }
}

impl From<ValidationErrors> for ApiError {
    fn from(errors: ValidationErrors) -> Self {
        Self::Validation(errors)
    }
}

impl From<FieldError> for ApiError {
    fn from(error: FieldError) -> Self {
        Self::Validation(error.into())
    }
}

/// The problem document (RFC 9457) plus our extensions.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// A URI naming the problem type: `urn:taskflow:problem:<code>`.
    #[serde(rename = "type")]
    pub problem_type: String,
    /// Short summary (the HTTP reason phrase).
    pub title: String,
    /// HTTP status code.
    pub status: u16,
    /// Explanation for people.
    pub detail: String,
    /// Stable machine-readable code.
    pub code: String,
    /// Offending fields, for validation problems.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<Object>)]
    pub errors: Vec<FieldError>,
    /// For 412: the version now stored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current_version: Option<i64>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match &self {
            Self::Internal(message) => tracing::error!(error = %message, "internal error"),
            Self::Unavailable(message) => tracing::warn!(error = %message, "service unavailable"),
            _ => {}
        }
        let status = self.status();
        let errors = match &self {
            Self::Validation(errors) | Self::InvalidQuery(errors) => errors.errors().to_vec(),
            Self::InvalidPath(name) => vec![FieldError::new(*name, "malformed", self.detail())],
            Self::InvalidHeader { name, message } => {
                vec![FieldError::new(*name, "malformed", message.clone())]
            }
            _ => Vec::new(),
        };
        let current_version = match &self {
            Self::PreconditionFailed { current_version } => Some(*current_version),
            _ => None,
        };
        let problem = Problem {
            problem_type: format!("urn:taskflow:problem:{}", self.code()),
            title: self.title().to_owned(),
            status: status.as_u16(),
            detail: self.detail(),
            code: self.code().to_owned(),
            errors,
            current_version,
        };
        let body = serde_json::to_vec(&problem).unwrap_or_default();
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        match &self {
            Self::RateLimited { retry_after_secs } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_secs));
            }
            Self::Unauthorized(_) | Self::InvalidCredentials => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            Self::PreconditionFailed { current_version } => {
                if let Ok(etag) = HeaderValue::from_str(&format!("\"{current_version}\"")) {
                    headers.insert(header::ETAG, etag);
                }
            }
            _ => {}
        }
        (status, headers, body).into_response()
    }
}

/// Answers every unknown route.
pub async fn no_route() -> ApiError {
    ApiError::NoRoute
}

/// Answers a known route called with the wrong method.
pub async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}
