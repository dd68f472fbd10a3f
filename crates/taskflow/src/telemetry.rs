//! Logs and traces.
//!
//! Logs go to standard error through `tracing`: human-readable by default, JSON lines with
//! `log.format = "json"` (each line inside a span carries its `trace_id` and `span_id`).
//! Spans (the HTTP request, the relay's `publish <topic>`, the consumers'
//! `consume <topic> <group>`) become OpenTelemetry spans through `tracing-opentelemetry`; with
//! `telemetry.otlp_endpoint` set, a batch processor exports them over OTLP/HTTP. Without an
//! endpoint no exporter runs, but spans still get ids, so the trace context in events and logs
//! stays meaningful.

mod json_log;

use std::io::IsTerminal as _;
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use tracing::Level;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _};

use crate::settings::{LogSettings, TelemetrySettings};

/// Why telemetry could not start.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The OTLP exporter could not be built from the settings.
    #[error("cannot set up the OTLP exporter for {endpoint}: {reason}")]
    Exporter {
        /// The traces URL (credentials hidden).
        endpoint: String,
        /// What the exporter said.
        reason: String,
    },
}

/// The installed tracer provider; [`Telemetry::shutdown`] flushes the spans still queued.
pub struct Telemetry {
    provider: SdkTracerProvider,
    exporting: bool,
}

impl Telemetry {
    /// Exports what is queued and stops the exporter. Call outside the async runtime (the
    /// exporter's HTTP client blocks).
    pub fn shutdown(self) {
        let result = self.provider.shutdown();
        if let (true, Err(error)) = (self.exporting, result) {
            eprintln!("taskflow: flushing traces failed: {error}");
        }
    }
}

/// Installs the global subscriber: the log output (`RUST_LOG`, when set, overrides the
/// configured level) and the OpenTelemetry layer for TaskFlow's own spans.
pub fn init(log: &LogSettings, telemetry: &TelemetrySettings) -> Result<Telemetry, TelemetryError> {
    let provider = tracer_provider(telemetry)?;
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&log.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    // Colours only on a terminal: a log file or a collector gets plain text, and formatting
    // each span's fields without colour codes is cheaper (spans are made for every event
    // published and consumed).
    let output = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let output = if log.format == "json" {
        output
            .json()
            .event_format(json_log::WithTraceIds::new(
                tracing_subscriber::fmt::format()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true),
            ))
            .with_filter(filter)
            .boxed()
    } else {
        output.with_filter(filter).boxed()
    };
    // Spans are traced whatever the log level: the OpenTelemetry layer has its own filter,
    // TaskFlow's crates at `info` (library internals stay out of traces).
    let spans = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("taskflow"))
        .with_threads(false)
        .with_tracked_inactivity(false)
        .with_filter(Targets::new().with_target("taskflow", Level::INFO));
    let result = tracing_subscriber::registry()
        .with(output)
        .with(spans)
        .try_init();
    if let Err(error) = result {
        eprintln!("logging was already initialised: {error}");
    }
    Ok(Telemetry {
        provider,
        exporting: telemetry.traces_endpoint().is_some(),
    })
}

/// The tracer provider: sampling and resource from the settings, and a batch OTLP/HTTP
/// exporter when an endpoint is configured.
fn tracer_provider(settings: &TelemetrySettings) -> Result<SdkTracerProvider, TelemetryError> {
    let resource = Resource::builder()
        .with_service_name(settings.service_name.clone())
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .build();
    let mut builder = SdkTracerProvider::builder()
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            settings.sampling_ratio,
        ))))
        .with_resource(resource);
    if let Some(endpoint) = settings.traces_endpoint() {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(endpoint.clone())
            .with_timeout(Duration::from_secs(settings.export_timeout_secs))
            .build()
            .map_err(|error| TelemetryError::Exporter {
                endpoint: crate::settings::redact_url(&endpoint),
                reason: error.to_string(),
            })?;
        builder = builder.with_batch_exporter(exporter);
    }
    Ok(builder.build())
}
