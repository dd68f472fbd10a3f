//! OpenTelemetry end to end: the `taskflow` binary, pointed at an OTLP/HTTP collector double on
//! loopback, exports one trace per task completion that spans the API request, the outbox
//! relay's publish and the consumers; its JSON log lines inside the request carry the same ids.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use prost::Message as _;
use serde_json::{Value, json};

/// One span as the collector double received it, ids in hex.
#[derive(Clone, Debug)]
struct ExportedSpan {
    service: String,
    trace_id: String,
    span_id: String,
    parent_span_id: String,
    name: String,
    kind: i32,
    attributes: HashMap<String, String>,
}

/// An OTLP/HTTP collector double: accepts `POST /v1/traces` with a protobuf
/// `ExportTraceServiceRequest` and keeps every span.
#[derive(Clone, Default)]
struct Collector {
    spans: Arc<Mutex<Vec<ExportedSpan>>>,
}

fn text(value: Option<&AnyValue>) -> String {
    match value.and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        other => format!("{other:?}"),
    }
}

fn attributes(list: &[KeyValue]) -> HashMap<String, String> {
    list.iter()
        .map(|kv| (kv.key.clone(), text(kv.value.as_ref())))
        .collect()
}

async fn receive_traces(
    State(collector): State<Collector>,
    headers: HeaderMap,
    body: Bytes,
) -> impl IntoResponse {
    if headers
        .get(header::CONTENT_TYPE)
        .is_none_or(|v| v != "application/x-protobuf")
    {
        return (StatusCode::UNSUPPORTED_MEDIA_TYPE, Vec::new()).into_response();
    }
    let Ok(request) = ExportTraceServiceRequest::decode(body) else {
        return (StatusCode::BAD_REQUEST, Vec::new()).into_response();
    };
    let mut spans = collector.spans.lock().unwrap();
    for resource_spans in request.resource_spans {
        let resource = resource_spans
            .resource
            .map(|r| attributes(&r.attributes))
            .unwrap_or_default();
        let service = resource.get("service.name").cloned().unwrap_or_default();
        for scope_spans in resource_spans.scope_spans {
            for span in scope_spans.spans {
                spans.push(ExportedSpan {
                    service: service.clone(),
                    trace_id: hex::encode(&span.trace_id),
                    span_id: hex::encode(&span.span_id),
                    parent_span_id: hex::encode(&span.parent_span_id),
                    name: span.name.clone(),
                    kind: span.kind,
                    attributes: attributes(&span.attributes),
                });
            }
        }
    }
    (
        [(header::CONTENT_TYPE, "application/x-protobuf")],
        ExportTraceServiceResponse::default().encode_to_vec(),
    )
        .into_response()
}

async fn start_collector() -> (SocketAddr, Collector) {
    let collector = Collector::default();
    let app = axum::Router::new()
        .route("/v1/traces", axum::routing::post(receive_traces))
        .with_state(collector.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, collector)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts `taskflow serve` in `dir` with `env`, its standard error (the log) going to `log`.
fn start_taskflow(dir: &Path, port: u16, log: &Path, env: &[(&str, String)]) -> Child {
    let mut command = Command::new(env!("CARGO_BIN_EXE_taskflow"));
    for (key, _) in std::env::vars() {
        if key.starts_with("TASKFLOW_") || key.starts_with("OTEL_") || key == "RUST_LOG" {
            command.env_remove(key);
        }
    }
    let mut child = command
        .current_dir(dir)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .env("TASKFLOW_RATE_LIMIT__ENABLED", "false")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .expect("start the taskflow binary");
    taskflow_testing::wait_until_listening(&mut child, port, &format!("see {}", log.display()));
    child
}

/// The value of the Prometheus sample whose line starts with `name{` and has every label.
fn sample(metrics: &str, name: &str, labels: &[&str]) -> f64 {
    metrics
        .lines()
        .filter(|line| line.starts_with(&format!("{name}{{")))
        .filter(|line| labels.iter().all(|label| line.contains(label)))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn random_hex(bytes: usize) -> String {
    (0..bytes)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_task_completion_is_one_trace_from_the_api_through_the_relay_to_the_consumers() {
    let (collector_addr, collector) = start_collector().await;
    let dir: PathBuf = std::env::temp_dir().join(format!("taskflow-otel-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("taskflow.log");
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut server = start_taskflow(
        &dir,
        port,
        &log,
        &[
            (
                "TASKFLOW_TELEMETRY__OTLP_ENDPOINT",
                format!("http://{collector_addr}"),
            ),
            (
                "TASKFLOW_TELEMETRY__SERVICE_NAME",
                "taskflow-under-test".into(),
            ),
            ("TASKFLOW_LOG__FORMAT", "json".into()),
            ("TASKFLOW_LOG__LEVEL", "info,taskflow_http=debug".into()),
            // No export before shutdown: what arrives proves the exit flush.
            ("OTEL_BSP_SCHEDULE_DELAY", "600000".into()),
        ],
    );

    let client = reqwest::Client::new();
    let registered: Value = client
        .post(format!("{base}/api/v1/auth/register"))
        .json(&json!({"email": "otel@example.com", "password": "tracing all the way"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = registered["access_token"].as_str().unwrap().to_owned();
    let created: Value = client
        .post(format!("{base}/api/v1/tasks"))
        .bearer_auth(&token)
        .json(&json!({"title": "Trace me"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let task_id = created["id"].as_str().unwrap().to_owned();
    let caller_trace = random_hex(16);
    let caller_span = random_hex(8);
    let completed = client
        .post(format!("{base}/api/v1/tasks/{task_id}/complete"))
        .bearer_auth(&token)
        .header("traceparent", format!("00-{caller_trace}-{caller_span}-01"))
        .send()
        .await
        .unwrap();
    assert_eq!(completed.status(), 200);

    // Wait until the relay published and both consumers handled the four events (created and
    // completed, each on task-events and task-updates).
    taskflow_testing::eventually(
        Duration::from_secs(20),
        "events relayed and consumed",
        || {
            let client = client.clone();
            let base = base.clone();
            async move {
                let metrics = client
                    .get(format!("{base}/metrics"))
                    .send()
                    .await
                    .ok()?
                    .text()
                    .await
                    .ok()?;
                let published = sample(&metrics, "events_published_total", &[]);
                let audited = sample(
                    &metrics,
                    "events_consumed_total",
                    &["topic=\"task-events\""],
                );
                let fed = sample(
                    &metrics,
                    "events_consumed_total",
                    &["topic=\"task-updates\""],
                );
                (published >= 4.0 && audited >= 2.0 && fed >= 2.0).then_some(())
            }
        },
    )
    .await;
    assert!(
        collector.spans.lock().unwrap().is_empty(),
        "nothing is exported before the batch delay or shutdown"
    );
    std::process::Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status()
        .unwrap();
    let status = tokio::task::spawn_blocking(move || server.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "taskflow exited with {status}");

    let spans = collector.spans.lock().unwrap().clone();
    assert!(!spans.is_empty(), "spans are flushed on exit");
    assert!(spans.iter().all(|s| s.service == "taskflow-under-test"));
    let by_id: HashMap<&str, &ExportedSpan> =
        spans.iter().map(|s| (s.span_id.as_str(), s)).collect();

    // The API request: a server span continuing the caller's trace.
    let requests: Vec<&ExportedSpan> = spans
        .iter()
        .filter(|s| s.name == "POST /api/v1/tasks/{id}/complete")
        .collect();
    assert_eq!(requests.len(), 1, "{spans:#?}");
    let request = requests[0];
    assert_eq!(request.kind, SpanKind::Server as i32);
    assert_eq!(request.trace_id, caller_trace);
    assert_eq!(request.parent_span_id, caller_span);
    assert_eq!(request.attributes["status"], "200");

    // Every span about this completion's events shares the request's trace.
    let of_completion = |s: &&ExportedSpan| {
        s.attributes.get("cloudevents.event_subject") == Some(&task_id)
            && s.attributes.get("cloudevents.event_type").is_some_and(|t| {
                t == "taskflow.task.completed.v1" || t == "taskflow.task.changed.v1"
            })
            && s.trace_id == caller_trace
    };
    let completion: Vec<&ExportedSpan> = spans.iter().filter(of_completion).collect();
    let in_trace: Vec<&ExportedSpan> = spans
        .iter()
        .filter(|s| s.trace_id == caller_trace)
        .collect();
    assert!(
        in_trace
            .iter()
            .all(|s| s.span_id == request.span_id
                || completion.iter().any(|c| c.span_id == s.span_id)),
        "the trace holds only the request and its events' spans: {in_trace:#?}"
    );

    let publishes: Vec<&&ExportedSpan> = completion
        .iter()
        .filter(|s| s.kind == SpanKind::Producer as i32)
        .collect();
    let consumes: Vec<&&ExportedSpan> = completion
        .iter()
        .filter(|s| s.kind == SpanKind::Consumer as i32)
        .collect();
    assert!(
        publishes.iter().any(|s| s.name == "publish task-events")
            && publishes.iter().any(|s| s.name == "publish task-updates"),
        "{publishes:#?}"
    );
    assert!(
        consumes
            .iter()
            .any(|s| s.name == "consume task-events audit"),
        "{consumes:#?}"
    );
    assert!(
        consumes
            .iter()
            .any(|s| s.name.starts_with("consume task-updates ")),
        "{consumes:#?}"
    );
    for span in publishes.iter().chain(&consumes) {
        // The parent chain reaches the request span.
        let mut current = **span;
        let mut hops = 0;
        while current.span_id != request.span_id {
            current = by_id
                .get(current.parent_span_id.as_str())
                .unwrap_or_else(|| panic!("{} has a parent outside the trace", span.name));
            hops += 1;
            assert!(hops < 10, "a parent cycle at {}", span.name);
        }
    }

    // The task's creation is a trace of its own.
    let creation = spans
        .iter()
        .find(|s| s.name == "POST /api/v1/tasks")
        .expect("the create request span");
    assert_ne!(creation.trace_id, caller_trace);
    assert!(spans.iter().any(|s| {
        s.trace_id == creation.trace_id
            && s.attributes
                .get("cloudevents.event_type")
                .map(String::as_str)
                == Some("taskflow.task.created.v1")
    }));

    // JSON log lines emitted inside the request carry its trace and span ids; lines outside
    // any span carry none.
    let lines: Vec<Value> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    let in_request: Vec<&Value> = lines
        .iter()
        .filter(|l| l["span"]["path"] == format!("/api/v1/tasks/{task_id}/complete"))
        .collect();
    assert!(!in_request.is_empty(), "a log line inside the request");
    for line in &in_request {
        assert_eq!(line["trace_id"], caller_trace.as_str(), "{line}");
        assert_eq!(line["span_id"], request.span_id.as_str(), "{line}");
    }
    let listening = lines
        .iter()
        .find(|l| l["message"] == "TaskFlow is listening")
        .expect("the start line");
    assert!(listening.get("trace_id").is_none(), "{listening}");
    std::fs::remove_dir_all(&dir).unwrap();
}
