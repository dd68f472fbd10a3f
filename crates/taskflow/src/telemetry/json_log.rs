//! JSON log lines that name the trace they belong to.

use std::fmt;

use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::{Format, Json, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// `tracing-subscriber`'s JSON line plus `trace_id` and `span_id` (W3C hex) of the innermost
/// span the event happened in, so a log search can jump to the trace and back.
pub struct WithTraceIds {
    inner: Format<Json>,
}

impl WithTraceIds {
    /// Wraps a configured JSON format.
    pub fn new(inner: Format<Json>) -> Self {
        Self { inner }
    }
}

impl<S, N> FormatEvent<S, N> for WithTraceIds
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut line = String::new();
        self.inner
            .format_event(ctx, Writer::new(&mut line), event)?;
        let ids = ctx
            .event_scope()
            .and_then(|mut scope| scope.next())
            .and_then(|span| {
                let extensions = span.extensions();
                let otel = extensions.get::<tracing_opentelemetry::OtelData>()?;
                let trace_id = otel.trace_id()?;
                let span_id = otel.span_id()?;
                (trace_id != opentelemetry::TraceId::INVALID).then_some((trace_id, span_id))
            });
        match (ids, line.trim_end().strip_suffix('}')) {
            (Some((trace_id, span_id)), Some(object)) => {
                let separator = if object.trim_end().ends_with('{') {
                    ""
                } else {
                    ","
                };
                writeln!(
                    writer,
                    "{object}{separator}\"trace_id\":\"{trace_id}\",\"span_id\":\"{span_id}\"}}"
                )
            }
            _ => writer.write_str(&line),
        }
    }
}
