//! W3C trace context: the `traceparent` of the request, carried into every event it causes.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use crate::error::ApiError;

/// The request's `traceparent` header when it is well-formed, else a fresh one, so every event
/// of one request shares a trace id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceParent(pub String);

impl TraceParent {
    /// A new sampled trace context with random ids.
    pub fn fresh() -> Self {
        let trace = hex::encode(crate::auth::random_bytes::<16>());
        let span = hex::encode(crate::auth::random_bytes::<8>());
        Self(format!("00-{trace}-{span}-01"))
    }

    /// Parses `00-<32 hex>-<16 hex>-<2 hex>` (all-zero ids are invalid).
    pub fn parse(value: &str) -> Option<Self> {
        let parts: Vec<&str> = value.trim().split('-').collect();
        let hex = |s: &str, len: usize| {
            s.len() == len
                && s.bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        };
        match parts.as_slice() {
            [version, trace, span, flags]
                if hex(version, 2)
                    && *version != "ff"
                    && hex(trace, 32)
                    && hex(span, 16)
                    && hex(flags, 2)
                    && trace.bytes().any(|b| b != b'0')
                    && span.bytes().any(|b| b != b'0') =>
            {
                Some(Self(value.trim().to_owned()))
            }
            _ => None,
        }
    }

    /// The header value.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<S: Send + Sync> FromRequestParts<S> for TraceParent {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(parts
            .headers
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
            .and_then(TraceParent::parse)
            .unwrap_or_else(TraceParent::fresh))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_valid_and_rejects_invalid_trace_contexts() {
        let valid = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        assert_eq!(TraceParent::parse(valid).unwrap().as_str(), valid);
        for bad in [
            "",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",
        ] {
            assert!(TraceParent::parse(bad).is_none(), "{bad}");
        }
        assert!(TraceParent::parse(TraceParent::fresh().as_str()).is_some());
    }
}
