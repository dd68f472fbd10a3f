//! W3C trace context: the `traceparent` of the request, carried into every event it causes.
//!
//! With OpenTelemetry on (the binary installs the layer), the request span is a child of the
//! request's `traceparent` header (or a new root), and [`TraceParent`] is that span's own
//! context, so the ids in events match the exported spans. Without it, the header is carried as
//! it came (or a fresh context is made).

use std::time::Duration;

use axum::extract::{FromRequestParts, MatchedPath};
use axum::http::request::Parts;
use axum::http::{Request, Response};
use tracing::field::Empty;

use crate::error::ApiError;

/// The current (request) span's trace context; without OpenTelemetry, the request's
/// `traceparent` header when it is well-formed, else a fresh one. Every event of one request
/// shares its trace id.
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

/// The span of one HTTP request: a server span named `<METHOD> <route>` (the matched route, so
/// names stay few), a child of the request's `traceparent` header when it carries a valid one.
pub fn request_span<B>(request: &Request<B>) -> tracing::Span {
    let header = |name: &str| request.headers().get(name).and_then(|v| v.to_str().ok());
    let method = request.method();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(MatchedPath::as_str);
    let name = match route {
        Some(route) => format!("{method} {route}"),
        None => method.to_string(),
    };
    let span = tracing::info_span!(
        "request",
        method = %method,
        path = %request.uri().path(),
        route = route.unwrap_or(""),
        request_id = header("x-request-id").unwrap_or("-"),
        status = Empty,
        otel.name = %name,
        otel.kind = "server",
        otel.status_code = Empty,
    );
    if let Some(parent) = header(taskflow_trace::TRACEPARENT) {
        taskflow_trace::set_remote_parent(&span, parent);
    }
    span
}

/// Records the answer's status on the request span (server errors mark the span as failed).
pub fn record_response<B>(response: &Response<B>, latency: Duration, span: &tracing::Span) {
    let status = response.status().as_u16();
    span.record("status", status);
    if response.status().is_server_error() {
        span.record("otel.status_code", "ERROR");
    }
    tracing::debug!(
        status,
        latency_ms = latency.as_millis() as u64,
        "finished processing request"
    );
}

impl<S: Send + Sync> FromRequestParts<S> for TraceParent {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        if let Some(current) = taskflow_trace::current_traceparent() {
            return Ok(Self(current));
        }
        Ok(parts
            .headers
            .get(taskflow_trace::TRACEPARENT)
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
