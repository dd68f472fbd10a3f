//! The webhook sender against an axum receiver on 127.0.0.1 that checks every signature.

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use chrono::{DateTime, Utc};
use taskflow_domain::UserId;
use taskflow_domain::events::CloudEvent;
use taskflow_notify::webhook::{HostLookup, SpecialRange, verify_signature};
use taskflow_notify::{
    DeliveryError, RetryDecision, RetryPolicy, Secret, TargetError, TargetPolicy, WebhookDelivery,
    WebhookSender, WebhookTarget,
};
use uuid::Uuid;

const SECRET: &str = "test-signing-secret";

/// What the receiver answers to one request.
enum Answer {
    Status(u16),
    StatusWith(u16, &'static str, &'static str),
    StatusBody(u16, String),
    SleepThenOk(Duration),
}

/// One request as the receiver saw it.
struct Seen {
    headers: HeaderMap,
    body: Bytes,
    signature_valid: bool,
}

#[derive(Clone, Default)]
struct Receiver {
    answers: Arc<Mutex<VecDeque<Answer>>>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Receiver {
    /// Starts on 127.0.0.1:0, answering `answers` in turn and 200 after them.
    async fn start(answers: Vec<Answer>) -> (Self, SocketAddr) {
        let receiver = Receiver {
            answers: Arc::new(Mutex::new(answers.into())),
            seen: Arc::default(),
        };
        let app = Router::new()
            .route("/hook", post(hook))
            .route("/elsewhere", post(hook))
            .with_state(receiver.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (receiver, address)
    }

    fn seen(&self) -> std::sync::MutexGuard<'_, Vec<Seen>> {
        self.seen.lock().unwrap()
    }
}

async fn hook(State(receiver): State<Receiver>, headers: HeaderMap, body: Bytes) -> Response {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let signature_valid = verify_signature(
        SECRET.as_bytes(),
        &header("taskflow-timestamp"),
        &body,
        &header("taskflow-signature"),
    );
    receiver.seen().push(Seen {
        headers: headers.clone(),
        body,
        signature_valid,
    });
    let answer = receiver.answers.lock().unwrap().pop_front();
    match answer {
        None => StatusCode::NO_CONTENT.into_response(),
        Some(Answer::Status(status)) => status_code(status).into_response(),
        Some(Answer::StatusWith(status, name, value)) => {
            let mut response = status_code(status).into_response();
            response
                .headers_mut()
                .insert(name, HeaderValue::from_static(value));
            response
        }
        Some(Answer::StatusBody(status, body)) => (status_code(status), body).into_response(),
        Some(Answer::SleepThenOk(pause)) => {
            tokio::time::sleep(pause).await;
            StatusCode::OK.into_response()
        }
    }
}

fn status_code(status: u16) -> StatusCode {
    StatusCode::from_u16(status).unwrap()
}

fn local_sender() -> WebhookSender {
    WebhookSender::builder()
        .policy(TargetPolicy::ALLOW_PRIVATE)
        .build()
        .unwrap()
}

fn target(address: SocketAddr) -> WebhookTarget {
    WebhookTarget {
        url: format!("http://{address}/hook"),
        secret: Secret::new(SECRET),
    }
}

fn reminder_event() -> CloudEvent {
    CloudEvent::new(
        "reminder.due",
        Some("task-1".into()),
        UserId::new(),
        Utc::now(),
        None,
        serde_json::json!({"title": "Pay rent", "remind_at": "2026-01-15T08:00:00Z"}),
    )
}

fn delivery(id: Uuid, at: i64) -> WebhookDelivery {
    let timestamp = DateTime::from_timestamp(at, 0).unwrap();
    WebhookDelivery::for_event(id, &reminder_event(), timestamp).unwrap()
}

#[tokio::test]
async fn delivers_a_signed_cloudevent_with_a_stable_delivery_id() {
    let (receiver, address) = Receiver::start(vec![]).await;
    let sender = local_sender();
    let id = Uuid::now_v7();
    let first = delivery(id, 1_767_225_600);
    let second = WebhookDelivery {
        timestamp: DateTime::from_timestamp(1_767_225_660, 0).unwrap(),
        ..first.clone()
    };

    let receipt = sender.deliver(&target(address), &first).await.unwrap();
    assert_eq!(receipt.status, 204);
    sender.deliver(&target(address), &second).await.unwrap();

    let seen = receiver.seen();
    assert_eq!(seen.len(), 2);
    for (request, sent) in seen.iter().zip([&first, &second]) {
        assert!(request.signature_valid, "signature did not verify");
        assert_eq!(request.body.as_ref(), sent.body.as_slice());
        let header = |name: &str| request.headers.get(name).unwrap().to_str().unwrap();
        assert_eq!(header("content-type"), "application/cloudevents+json");
        assert_eq!(
            header("user-agent"),
            concat!("TaskFlow-Webhook/", env!("CARGO_PKG_VERSION"))
        );
        assert_eq!(header("taskflow-delivery"), id.to_string());
        assert_eq!(header("taskflow-event-type"), "taskflow.reminder.due.v1");
        assert_eq!(
            header("taskflow-timestamp"),
            sent.timestamp.timestamp().to_string()
        );
        assert!(header("taskflow-signature").starts_with("sha256="));
        let event: CloudEvent = serde_json::from_slice(&request.body).unwrap();
        assert_eq!(event.event_type, "taskflow.reminder.due.v1");
    }
    // Same delivery id, new timestamp and therefore a new signature on the retry.
    assert_ne!(
        seen[0].headers.get("taskflow-signature"),
        seen[1].headers.get("taskflow-signature")
    );
}

#[tokio::test]
async fn a_wrong_secret_does_not_verify_at_the_receiver() {
    let (receiver, address) = Receiver::start(vec![]).await;
    let wrong = WebhookTarget {
        secret: Secret::new("another-secret"),
        ..target(address)
    };
    local_sender()
        .deliver(&wrong, &delivery(Uuid::now_v7(), 1_767_225_600))
        .await
        .unwrap();
    assert!(!receiver.seen()[0].signature_valid);
}

#[tokio::test]
async fn a_server_error_is_retryable_and_the_retry_succeeds() {
    let (receiver, address) = Receiver::start(vec![Answer::StatusBody(500, "boom".into())]).await;
    let sender = local_sender();
    let attempt = delivery(Uuid::now_v7(), 1_767_225_600);

    let error = sender
        .deliver(&target(address), &attempt)
        .await
        .unwrap_err();
    assert!(error.is_retryable(), "{error}");
    assert_eq!(error.to_string(), "receiver answered HTTP 500: boom");
    assert_eq!(
        RetryPolicy::default().decide_with_sample(1, &error, 0.0),
        RetryDecision::RetryAfter(Duration::from_secs(1))
    );

    let receipt = sender.deliver(&target(address), &attempt).await.unwrap();
    assert_eq!(receipt.status, 204);
    assert_eq!(receiver.seen().len(), 2);
}

#[tokio::test]
async fn too_many_requests_honours_retry_after() {
    let (_receiver, address) =
        Receiver::start(vec![Answer::StatusWith(429, "retry-after", "120")]).await;
    let error = local_sender()
        .deliver(&target(address), &delivery(Uuid::now_v7(), 1_767_225_600))
        .await
        .unwrap_err();
    assert!(error.is_retryable());
    assert_eq!(error.retry_after(), Some(Duration::from_secs(120)));
    // Retry-After is a floor over the 1 s backoff of the first retry.
    assert_eq!(
        RetryPolicy::default().decide_with_sample(1, &error, 0.0),
        RetryDecision::RetryAfter(Duration::from_secs(120))
    );
}

#[tokio::test]
async fn gone_and_other_client_errors_are_permanent() {
    let (_receiver, address) = Receiver::start(vec![
        Answer::Status(410),
        Answer::Status(404),
        Answer::Status(400),
    ])
    .await;
    let sender = local_sender();
    for expected in [410, 404, 400] {
        let error = sender
            .deliver(&target(address), &delivery(Uuid::now_v7(), 1_767_225_600))
            .await
            .unwrap_err();
        assert!(
            matches!(error, DeliveryError::HttpStatus { status, .. } if status == expected),
            "{error:?}"
        );
        assert!(!error.is_retryable(), "{expected} must be permanent");
    }
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let (receiver, address) =
        Receiver::start(vec![Answer::StatusWith(307, "location", "/elsewhere")]).await;
    let error = local_sender()
        .deliver(&target(address), &delivery(Uuid::now_v7(), 1_767_225_600))
        .await
        .unwrap_err();
    assert!(
        matches!(error, DeliveryError::HttpStatus { status: 307, .. }),
        "{error:?}"
    );
    assert!(!error.is_retryable());
    assert_eq!(receiver.seen().len(), 1, "the redirect was followed");
}

#[tokio::test]
async fn the_error_message_reads_at_most_4_kib_of_the_body() {
    let (_receiver, address) =
        Receiver::start(vec![Answer::StatusBody(502, "x".repeat(100_000))]).await;
    let error = local_sender()
        .deliver(&target(address), &delivery(Uuid::now_v7(), 1_767_225_600))
        .await
        .unwrap_err();
    let DeliveryError::HttpStatus { body, .. } = &error else {
        panic!("{error:?}");
    };
    assert_eq!(body.len(), 4096);
    assert!(error.to_string().len() < 400);
}

#[tokio::test]
async fn a_slow_receiver_times_out_and_is_retryable() {
    let (_receiver, address) =
        Receiver::start(vec![Answer::SleepThenOk(Duration::from_secs(5))]).await;
    let sender = WebhookSender::builder()
        .policy(TargetPolicy::ALLOW_PRIVATE)
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let started = std::time::Instant::now();
    let error = sender
        .deliver(&target(address), &delivery(Uuid::now_v7(), 1_767_225_600))
        .await
        .unwrap_err();
    assert_eq!(error, DeliveryError::Timeout(Duration::from_millis(300)));
    assert!(error.is_retryable());
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn a_closed_port_is_a_retryable_connect_error() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    drop(listener);
    let error = local_sender()
        .deliver(&target(address), &delivery(Uuid::now_v7(), 1_767_225_600))
        .await
        .unwrap_err();
    assert!(matches!(error, DeliveryError::Connect(_)), "{error:?}");
    assert!(error.is_retryable());
    // The message leaves the URL out (its query could carry a token).
    assert!(!error.to_string().contains("/hook"), "{error}");
}

#[tokio::test]
async fn loopback_is_refused_unless_private_targets_are_allowed() {
    let (receiver, address) = Receiver::start(vec![]).await;
    let public_only = WebhookSender::builder().build().unwrap();
    let attempt = delivery(Uuid::now_v7(), 1_767_225_600);

    let error = public_only
        .deliver(&target(address), &attempt)
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            DeliveryError::Target(TargetError::RefusedAddress {
                range: SpecialRange::Loopback,
                ..
            })
        ),
        "{error:?}"
    );
    assert!(!error.is_retryable());

    let by_name = WebhookTarget {
        url: format!("http://localhost:{}/hook", address.port()),
        ..target(address)
    };
    let error = public_only.deliver(&by_name, &attempt).await.unwrap_err();
    assert!(
        matches!(error, DeliveryError::Target(TargetError::LocalName(_))),
        "{error:?}"
    );
    assert!(receiver.seen().is_empty());

    local_sender()
        .deliver(&target(address), &attempt)
        .await
        .unwrap();
    local_sender().deliver(&by_name, &attempt).await.unwrap();
    assert_eq!(receiver.seen().len(), 2);
}

/// Answers every name with fixed addresses.
struct FixedLookup(Vec<IpAddr>);

impl HostLookup for FixedLookup {
    fn lookup(
        &self,
        _host: String,
    ) -> Pin<Box<dyn Future<Output = io::Result<Vec<IpAddr>>> + Send>> {
        let addresses = self.0.clone();
        Box::pin(async move { Ok(addresses) })
    }
}

#[tokio::test]
async fn a_public_looking_name_resolving_to_loopback_is_refused_at_connect() {
    // The URL passes registration (a host name is not resolved then), but at delivery the name
    // answers loopback, as a rebinding DNS server would: the connection is never made.
    let (receiver, address) = Receiver::start(vec![]).await;
    let url = format!("http://hooks.example.test:{}/hook", address.port());
    assert!(taskflow_notify::validate_webhook_url(&url, TargetPolicy::PUBLIC_ONLY).is_ok());
    let rebound = WebhookTarget {
        url,
        secret: Secret::new(SECRET),
    };
    let attempt = delivery(Uuid::now_v7(), 1_767_225_600);
    let loopback = || Arc::new(FixedLookup(vec!["127.0.0.1".parse().unwrap()]));

    let public_only = WebhookSender::builder().lookup(loopback()).build().unwrap();
    let error = public_only.deliver(&rebound, &attempt).await.unwrap_err();
    assert!(
        matches!(
            &error,
            DeliveryError::Target(TargetError::RefusedAddress { host, range: SpecialRange::Loopback, .. })
                if host == "hooks.example.test"
        ),
        "{error:?}"
    );
    assert!(!error.is_retryable());
    assert!(receiver.seen().is_empty());

    // With private targets allowed the connection goes to exactly the looked-up address.
    let allowed = WebhookSender::builder()
        .policy(TargetPolicy::ALLOW_PRIVATE)
        .lookup(loopback())
        .build()
        .unwrap();
    allowed.deliver(&rebound, &attempt).await.unwrap();
    let seen = receiver.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0].headers.get("host").unwrap(),
        &format!("hooks.example.test:{}", address.port())
    );
}

#[tokio::test]
async fn invalid_urls_are_permanent_target_errors() {
    let sender = local_sender();
    let attempt = delivery(Uuid::now_v7(), 1_767_225_600);
    for url in [
        "not a url",
        "ftp://127.0.0.1/x",
        "http://user:pw@127.0.0.1/x",
    ] {
        let error = sender
            .deliver(
                &WebhookTarget {
                    url: url.into(),
                    secret: Secret::new(SECRET),
                },
                &attempt,
            )
            .await
            .unwrap_err();
        assert!(
            matches!(error, DeliveryError::Target(_)),
            "{url}: {error:?}"
        );
        assert!(!error.is_retryable());
    }
}
