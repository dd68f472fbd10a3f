//! W3C trace context (`traceparent`) between `tracing` spans and TaskFlow's events.
//!
//! The API's request span, the relay's `publish <topic>` spans and the consumers'
//! `consume <topic> <group>` spans are `tracing` spans; the binary turns them into OpenTelemetry
//! spans (`tracing-opentelemetry`). What links them across the bus is the CloudEvent's
//! `traceparent` extension: the API writes the request span's context into every event it
//! causes, and the relay and consumers make their spans children of it. Without an
//! OpenTelemetry layer installed every function here is a cheap no-op.

use std::collections::HashMap;

use opentelemetry::propagation::TextMapPropagator as _;
use opentelemetry::trace::TraceContextExt as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// The name of the W3C header and of the CloudEvents extension.
pub const TRACEPARENT: &str = "traceparent";

/// The OpenTelemetry context whose (remote) parent is `traceparent`, or `None` when the value
/// is not a valid W3C trace context.
pub fn remote_context(traceparent: &str) -> Option<opentelemetry::Context> {
    let carrier = HashMap::from([(TRACEPARENT.to_owned(), traceparent.to_owned())]);
    let context = TraceContextPropagator::new().extract(&carrier);
    context.span().span_context().is_valid().then_some(context)
}

/// Makes `span` a child of `traceparent` (a remote parent). Call before the span is first
/// entered. Returns whether the parent was set: `false` for a malformed value, or when no
/// OpenTelemetry layer is installed.
pub fn set_remote_parent(span: &tracing::Span, traceparent: &str) -> bool {
    match remote_context(traceparent) {
        Some(parent) => span.set_parent(parent).is_ok(),
        None => false,
    }
}

/// The `traceparent` of `span`: its own trace and span ids, so whatever carries it continues
/// the trace as a child of this span. `None` when the span has no OpenTelemetry context (no
/// layer installed, or the span is disabled).
pub fn traceparent_of(span: &tracing::Span) -> Option<String> {
    let context = span.context();
    if !context.span().span_context().is_valid() {
        return None;
    }
    let mut carrier: HashMap<String, String> = HashMap::new();
    TraceContextPropagator::new().inject_context(&context, &mut carrier);
    carrier.remove(TRACEPARENT)
}

/// The `traceparent` of the current span (see [`traceparent_of`]).
pub fn current_traceparent() -> Option<String> {
    traceparent_of(&tracing::Span::current())
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::TracerProvider as _;
    use tracing_subscriber::layer::SubscriberExt as _;

    use super::*;

    const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn with_otel_layer(test: impl FnOnce()) {
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        tracing::subscriber::with_default(subscriber, test);
    }

    #[test]
    fn rejects_malformed_trace_contexts() {
        assert!(remote_context(PARENT).is_some());
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
        ] {
            assert!(remote_context(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn a_child_of_a_remote_parent_keeps_its_trace_id_and_gets_its_own_span_id() {
        with_otel_layer(|| {
            let span = tracing::info_span!("child");
            assert!(set_remote_parent(&span, PARENT));
            let own = traceparent_of(&span).expect("a trace context");
            let parts: Vec<&str> = own.split('-').collect();
            assert_eq!(parts[1], "4bf92f3577b34da6a3ce929d0e0e4736");
            assert_ne!(parts[2], "00f067aa0ba902b7");
            assert_eq!(parts[3], "01");
            let _entered = span.enter();
            let nested = tracing::info_span!("nested");
            let nested_own = traceparent_of(&nested).expect("a trace context");
            assert!(nested_own.contains("4bf92f3577b34da6a3ce929d0e0e4736"));
            assert_eq!(current_traceparent(), Some(own));
        });
    }

    #[test]
    fn without_a_layer_there_is_no_context() {
        let span = tracing::info_span!("plain");
        assert!(!set_remote_parent(&span, PARENT));
        assert_eq!(traceparent_of(&span), None);
        assert_eq!(current_traceparent(), None);
    }
}
