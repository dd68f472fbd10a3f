//! A local double of the Dapr sidecar (the real one cannot run here).
//!
//! It follows Dapr's documented HTTP contract as far as TaskFlow uses it:
//!
//! * `POST /v1.0/publish/{pubsub}/{topic}`: an unknown pubsub is `404 ERR_PUBSUB_NOT_FOUND`;
//!   `application/cloudevents+json` bodies are kept as they are, other content types are
//!   wrapped into a CloudEvent (`type: com.dapr.event.sent`) like the sidecar does; either
//!   way the sidecar's `topic`, `pubsubname`, `traceid`, `traceparent`, `tracestate`
//!   attributes are set; `metadata.partitionKey` is recorded; `204` on success.
//! * `POST /v1.0-alpha1/publish/bulk/{pubsub}/{topic}`: a JSON array of
//!   `{"entryId","event","contentType","metadata"}`; each entry is enveloped like a single
//!   publish (each with a span of its own under the request's `traceparent`), entry metadata
//!   (e.g. `partitionKey`) overriding the request's `metadata.*` query; an unknown pubsub is
//!   `400 ERR_PUBSUB_NOT_FOUND`, a body that is not such an array or an entry id that is
//!   missing or repeated `400 ERR_PUBSUB_EVENTS_SER`, a CloudEvent entry that is not an
//!   object `400 ERR_PUBSUB_CLOUD_EVENTS_SER`; `204` when all were accepted. The entries of
//!   one request are appended in a **random order**, since Dapr promises none.
//! * Programmatic subscriptions: [`DaprDouble::attach_app`] (the sidecar's start-up) and
//!   [`DaprDouble::refresh`] read the app's `GET /dapr/subscribe` (`route` or
//!   `routes.default`, `deadLetterTopic`). A new subscription starts at the end of the topic
//!   (Kafka's default `initialOffset: newest`).
//! * Delivery: per app and topic one event at a time, in publish order (one partition),
//!   `POST <route>` with `application/cloudevents+json`. Answers are read like the runtime
//!   does: 2xx with `SUCCESS`, an empty status or an unreadable body is done; `RETRY`, an
//!   unknown status or any non-2xx but 404 is retried after a backoff, at most
//!   `max_attempts` times, then the event goes to the subscription's `deadLetterTopic` if
//!   there is one, else it is dropped; `DROP` and `404` drop it.
//! * Bulk subscribe (a subscription with `bulkSubscribe.enabled`): per app and topic one
//!   request at a time, in publish order, holding up to `maxMessagesCount` events (default
//!   100); a request that is not full waits until `maxAwaitDurationMs` (default 1 000) after
//!   its oldest event became available. The body is the runtime's bulk envelope
//!   (`application/json`, `{"id","type":"com.dapr.event.sent.bulk","topic","pubsubname",
//!   "metadata","entries":[{"entryId","event","contentType","metadata"}]}`). The answer is
//!   read per entry (`{"statuses":[{"entryId","status"}]}`): an entry missing from it, or
//!   with an empty status, is `RETRY`; a 2xx body that cannot be read retries all, `404`
//!   drops all, another status retries all. A retry sends only the failed entries.
//! * `GET /v1.0/secrets/{store}/{key}` from an in-memory map (`204` when the secret is
//!   missing, `400 ERR_SECRET_STORE_NOT_FOUND` for an unknown store).
//! * `dapr-api-token` is required on every API call when configured (`401` otherwise), and
//!   sent to the app when an app token is configured.
//!
//! Not modelled: partitions (one topic is one ordered stream), `rawPayload`, partial
//! failures of a bulk publish (`500` with `failedEntries`), routing rules, TTLs, resiliency
//! policies, gRPC.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// How the double behaves.
#[derive(Clone, Debug)]
pub struct DoubleConfig {
    /// Pub/sub component names that exist.
    pub pubsubs: Vec<String>,
    /// Secret store names that exist.
    pub secret_stores: Vec<String>,
    /// `source` of events the double wraps (the publisher's app-id).
    pub app_id: String,
    /// Required `dapr-api-token` on API calls (the sidecar's `DAPR_API_TOKEN`).
    pub api_token: Option<String>,
    /// Sent as `dapr-api-token` to apps (the sidecar's `APP_API_TOKEN`).
    pub app_api_token: Option<String>,
    /// Delivery attempts per event before dead-lettering or dropping it.
    pub max_attempts: u32,
    /// Wait after the first failed attempt; doubles up to `max_backoff`.
    pub initial_backoff: Duration,
    /// Longest wait between attempts.
    pub max_backoff: Duration,
}

impl Default for DoubleConfig {
    fn default() -> Self {
        Self {
            pubsubs: vec!["taskflow-pubsub".into()],
            secret_stores: vec!["vault".into()],
            app_id: "publisher".into(),
            api_token: None,
            app_api_token: None,
            max_attempts: 10,
            initial_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_millis(400),
        }
    }
}

/// One accepted publish request.
#[derive(Clone, Debug)]
pub struct Published {
    pub pubsub: String,
    pub topic: String,
    pub content_type: String,
    pub partition_key: Option<String>,
    /// The CloudEvent as the sidecar stores and delivers it.
    pub envelope: Value,
    /// Which publish request carried it (a bulk publish carries several events).
    pub request: u64,
}

/// How an app answered one delivery attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AppResult {
    Success,
    Retry,
    Drop,
    NotFound,
    UnknownStatus(String),
    Status(u16),
    Unreachable,
}

/// One delivery attempt.
#[derive(Clone, Debug)]
pub struct Attempt {
    pub app: String,
    pub topic: String,
    pub id: String,
    /// Which HTTP request carried it (a bulk request carries several events).
    pub request: u64,
    pub attempt: u32,
    pub result: AppResult,
}

/// What finally became of an event for one app.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fate {
    Delivered,
    Dropped,
    DeadLettered(String),
    GaveUp,
}

/// The final fate of one event for one app.
#[derive(Clone, Debug)]
pub struct Disposition {
    pub app: String,
    pub topic: String,
    pub id: String,
    pub fate: Fate,
}

#[derive(Clone, Copy, Debug)]
struct BulkSubscribe {
    max_messages: usize,
    max_await: Duration,
}

#[derive(Clone, Debug)]
struct SubscriptionInfo {
    route: String,
    dead_letter_topic: Option<String>,
    /// Set when the subscription enabled `bulkSubscribe`.
    bulk: Option<BulkSubscribe>,
}

#[derive(Default)]
struct App {
    base_url: String,
    subscriptions: HashMap<(String, String), SubscriptionInfo>,
}

#[derive(Default)]
struct Inner {
    logs: HashMap<(String, String), Vec<Value>>,
    published: Vec<Published>,
    apps: BTreeMap<String, App>,
    attempts: Vec<Attempt>,
    dispositions: Vec<Disposition>,
    secrets: HashMap<(String, String), HashMap<String, String>>,
}

struct Shared {
    config: DoubleConfig,
    http: reqwest::Client,
    inner: Mutex<Inner>,
    wake: watch::Sender<u64>,
    stop: CancellationToken,
    next_request: AtomicU64,
}

impl Shared {
    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .expect("the double's state lock is not poisoned")
    }

    fn append(&self, pubsub: &str, topic: &str, envelope: Value) {
        self.inner()
            .logs
            .entry((pubsub.to_owned(), topic.to_owned()))
            .or_default()
            .push(envelope);
        self.wake.send_modify(|n| *n += 1);
    }
}

/// A running double.
pub struct DaprDouble {
    addr: SocketAddr,
    shared: Arc<Shared>,
    server: Option<tokio::task::JoinHandle<()>>,
}

impl DaprDouble {
    /// Starts the double on a free local port.
    pub async fn start(config: DoubleConfig) -> Self {
        let shared = Arc::new(Shared {
            config,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .expect("an HTTP client for deliveries"),
            inner: Mutex::new(Inner::default()),
            wake: watch::channel(0).0,
            stop: CancellationToken::new(),
            next_request: AtomicU64::new(1),
        });
        let router = axum::Router::new()
            .route("/v1.0/publish/{pubsub}/{*topic}", post(publish))
            .route(
                "/v1.0-alpha1/publish/bulk/{pubsub}/{*topic}",
                post(bulk_publish),
            )
            .route("/v1.0/secrets/{store}/{key}", get(secret))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a free local port for the double");
        let addr = listener.local_addr().expect("the double's local address");
        let stop = shared.stop.clone();
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, router)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await;
        });
        Self {
            addr,
            shared,
            server: Some(server),
        }
    }

    /// The sidecar's HTTP endpoint.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops serving and delivering (the sidecar goes away).
    pub async fn stop(mut self) {
        self.shared.stop.cancel();
        if let Some(server) = self.server.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
        }
    }

    /// Sets secret `key` of `store`.
    pub fn set_secret(&self, store: &str, key: &str, values: &[(&str, &str)]) {
        self.shared.inner().secrets.insert(
            (store.to_owned(), key.to_owned()),
            values
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        );
    }

    /// What the double accepted for publishing so far.
    pub fn published(&self) -> Vec<Published> {
        self.shared.inner().published.clone()
    }

    /// Every delivery attempt so far.
    pub fn attempts(&self) -> Vec<Attempt> {
        self.shared.inner().attempts.clone()
    }

    /// Final fates so far.
    pub fn dispositions(&self) -> Vec<Disposition> {
        self.shared.inner().dispositions.clone()
    }

    /// Polls `check` until it holds (10 s at most).
    pub async fn wait_for(&self, what: &str, check: impl Fn(&[Attempt], &[Disposition]) -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            {
                let inner = self.shared.inner();
                if check(&inner.attempts, &inner.dispositions) {
                    return;
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The sidecar of `app_id` starts next to the app at `base_url`: it reads the app's
    /// subscriptions and starts delivering.
    pub async fn attach_app(&self, app_id: &str, base_url: &str) -> Result<(), String> {
        self.shared
            .inner()
            .apps
            .entry(app_id.to_owned())
            .or_default()
            .base_url = base_url.trim_end_matches('/').to_owned();
        self.refresh(app_id).await
    }

    /// Reads `GET /dapr/subscribe` of `app_id` again and starts delivering new subscriptions.
    pub async fn refresh(&self, app_id: &str) -> Result<(), String> {
        let base_url = self
            .shared
            .inner()
            .apps
            .get(app_id)
            .map(|app| app.base_url.clone())
            .ok_or_else(|| format!("unknown app {app_id}"))?;
        let mut request = self.shared.http.get(format!("{base_url}/dapr/subscribe"));
        if let Some(token) = &self.shared.config.app_api_token {
            request = request.header("dapr-api-token", token);
        }
        let response = request.send().await.map_err(|e| e.to_string())?;
        if !response.status().is_success() {
            return Err(format!(
                "GET /dapr/subscribe answered {}",
                response.status()
            ));
        }
        let entries: Vec<Value> = response.json().await.map_err(|e| e.to_string())?;
        for entry in entries {
            let pubsub = entry["pubsubname"].as_str().unwrap_or_default().to_owned();
            let topic = entry["topic"].as_str().unwrap_or_default().to_owned();
            let route = entry["route"]
                .as_str()
                .or_else(|| entry["routes"]["default"].as_str())
                .unwrap_or_default()
                .to_owned();
            if !self.shared.config.pubsubs.contains(&pubsub) || topic.is_empty() || route.is_empty()
            {
                // The sidecar logs and ignores subscriptions it cannot serve.
                continue;
            }
            let info = SubscriptionInfo {
                route: if route.starts_with('/') {
                    route
                } else {
                    format!("/{route}")
                },
                dead_letter_topic: entry["deadLetterTopic"]
                    .as_str()
                    .filter(|t| !t.is_empty())
                    .map(str::to_owned),
                // The runtime's defaults: 100 messages, 1 000 ms.
                bulk: (entry["bulkSubscribe"]["enabled"] == json!(true)).then(|| BulkSubscribe {
                    max_messages: entry["bulkSubscribe"]["maxMessagesCount"]
                        .as_u64()
                        .filter(|n| *n > 0)
                        .map_or(100, |n| n as usize),
                    max_await: Duration::from_millis(
                        entry["bulkSubscribe"]["maxAwaitDurationMs"]
                            .as_u64()
                            .unwrap_or(1_000),
                    ),
                }),
            };
            let key = (pubsub, topic);
            let start = {
                let mut inner = self.shared.inner();
                let start = inner.logs.get(&key).map_or(0, Vec::len);
                let app = inner.apps.entry(app_id.to_owned()).or_default();
                let is_new = app.subscriptions.insert(key.clone(), info).is_none();
                is_new.then_some(start)
            };
            if let Some(start) = start {
                tokio::spawn(dispatch(self.shared.clone(), app_id.to_owned(), key, start));
            }
        }
        Ok(())
    }
}

impl Drop for DaprDouble {
    fn drop(&mut self) {
        self.shared.stop.cancel();
    }
}

/// Delivers one app's subscription in order: one event at a time, or with bulk subscribe up
/// to `maxMessagesCount` events per request, each request waiting for the answer to the last.
async fn dispatch(shared: Arc<Shared>, app: String, key: (String, String), mut cursor: usize) {
    let mut wake = shared.wake.subscribe();
    // When the oldest event not yet delivered was first seen (bulk batches fill until
    // `maxAwaitDurationMs` after it).
    let mut first_seen: Option<tokio::time::Instant> = None;
    loop {
        wake.borrow_and_update();
        let bulk = {
            let inner = shared.inner();
            let Some(info) = inner
                .apps
                .get(&app)
                .and_then(|state| state.subscriptions.get(&key))
            else {
                return;
            };
            info.bulk
        };
        let max = bulk.map_or(1, |b| b.max_messages);
        let events: Vec<Value> = shared
            .inner()
            .logs
            .get(&key)
            .map(|log| log.iter().skip(cursor).take(max).cloned().collect())
            .unwrap_or_default();
        if events.is_empty() {
            tokio::select! {
                _ = wake.changed() => continue,
                () = shared.stop.cancelled() => return,
            }
        }
        if let Some(bulk) = bulk
            && events.len() < max
        {
            let deadline =
                *first_seen.get_or_insert_with(tokio::time::Instant::now) + bulk.max_await;
            if tokio::time::Instant::now() < deadline {
                tokio::select! {
                    _ = wake.changed() => continue,
                    () = tokio::time::sleep_until(deadline) => {}
                    () = shared.stop.cancelled() => return,
                }
                continue;
            }
        }
        let count = events.len();
        if !deliver(&shared, &app, &key, events, bulk.is_some()).await {
            return;
        }
        first_seen = None;
        cursor += count;
    }
}

/// Delivers `events` (one request, bulk or not) and retries the entries that failed; `false`
/// when the double stopped.
async fn deliver(
    shared: &Shared,
    app: &str,
    key: &(String, String),
    events: Vec<Value>,
    bulk: bool,
) -> bool {
    let record = |id: &str, request: u64, attempt: u32, result: AppResult| {
        shared.inner().attempts.push(Attempt {
            app: app.to_owned(),
            topic: key.1.clone(),
            id: id.to_owned(),
            request,
            attempt,
            result,
        });
    };
    let settle = |id: &str, fate: Fate| {
        shared.inner().dispositions.push(Disposition {
            app: app.to_owned(),
            topic: key.1.clone(),
            id: id.to_owned(),
            fate,
        });
    };
    let config = &shared.config;
    let mut backoff = config.initial_backoff;
    // (entryId, event) still to deliver; a retry sends only the entries that failed.
    let mut pending: Vec<(String, Value)> = events
        .into_iter()
        .map(|event| (uuid::Uuid::now_v7().to_string(), event))
        .collect();
    for attempt in 1..=config.max_attempts.max(1) {
        let (url, dead_letter_topic) = {
            let inner = shared.inner();
            let Some(app_state) = inner.apps.get(app) else {
                return false;
            };
            let Some(info) = app_state.subscriptions.get(key) else {
                return false;
            };
            (
                format!("{}{}", app_state.base_url, info.route),
                info.dead_letter_topic.clone(),
            )
        };
        let request_id = shared.next_request.fetch_add(1, Ordering::Relaxed);
        let mut request = if bulk {
            let entries: Vec<Value> = pending
                .iter()
                .map(|(entry_id, event)| {
                    json!({
                        "entryId": entry_id,
                        "event": event,
                        "contentType": "application/cloudevents+json",
                        "metadata": {},
                    })
                })
                .collect();
            shared
                .http
                .post(url)
                .header("content-type", "application/json")
                .body(
                    json!({
                        "id": uuid::Uuid::now_v7().to_string(),
                        "type": "com.dapr.event.sent.bulk",
                        "topic": key.1,
                        "pubsubname": key.0,
                        "metadata": {},
                        "entries": entries,
                    })
                    .to_string(),
                )
        } else {
            let event = &pending[0].1;
            let mut request = shared
                .http
                .post(url)
                .header("content-type", "application/cloudevents+json")
                .body(event.to_string());
            if let Some(traceparent) = event["traceparent"].as_str().filter(|t| !t.is_empty()) {
                request = request.header("traceparent", traceparent);
            }
            request
        };
        if let Some(token) = &config.app_api_token {
            request = request.header("dapr-api-token", token);
        }
        let results = tokio::select! {
            response = request.send() => {
                if bulk {
                    classify_bulk(response, &pending).await
                } else {
                    vec![classify(response).await]
                }
            }
            () = shared.stop.cancelled() => return false,
        };
        let mut failed = Vec::new();
        for ((entry_id, event), result) in pending.into_iter().zip(results) {
            let id = event["id"].as_str().unwrap_or_default().to_owned();
            record(&id, request_id, attempt, result.clone());
            match result {
                AppResult::Success => settle(&id, Fate::Delivered),
                AppResult::Drop | AppResult::NotFound => settle(&id, Fate::Dropped),
                AppResult::Retry
                | AppResult::UnknownStatus(_)
                | AppResult::Status(_)
                | AppResult::Unreachable => failed.push((entry_id, event)),
            }
        }
        pending = failed;
        if pending.is_empty() {
            return true;
        }
        if attempt == config.max_attempts.max(1) {
            for (_, event) in &pending {
                let id = event["id"].as_str().unwrap_or_default().to_owned();
                match &dead_letter_topic {
                    Some(dlt) => {
                        // The runtime publishes the original CloudEvent to the dead-letter topic.
                        shared.append(&key.0, dlt, event.clone());
                        settle(&id, Fate::DeadLettered(dlt.clone()));
                    }
                    None => settle(&id, Fate::GaveUp),
                }
            }
            return true;
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = shared.stop.cancelled() => return false,
        }
        backoff = (backoff * 2).min(config.max_backoff);
    }
    true
}

/// Reads an app's answer to a bulk delivery the way the Dapr runtime does: one result per
/// entry of `sent`, in order. A 2xx answer is read per entry (`statuses[].entryId`); an entry
/// it does not mention, or an empty status, is `RETRY`; an unreadable 2xx body retries all;
/// `404` drops all; any other status retries all.
async fn classify_bulk(
    response: Result<reqwest::Response, reqwest::Error>,
    sent: &[(String, Value)],
) -> Vec<AppResult> {
    let all = |result: AppResult| vec![result; sent.len()];
    let Ok(response) = response else {
        return all(AppResult::Unreachable);
    };
    let status = response.status();
    if status == reqwest::StatusCode::NOT_FOUND {
        return all(AppResult::NotFound);
    }
    if !status.is_success() {
        return all(AppResult::Status(status.as_u16()));
    }
    let body = response.bytes().await.unwrap_or_default();
    let Ok(answer) = serde_json::from_slice::<Value>(&body) else {
        return all(AppResult::UnknownStatus("unreadable bulk answer".into()));
    };
    let mut by_entry: HashMap<String, String> = HashMap::new();
    for status in answer["statuses"].as_array().into_iter().flatten() {
        // Go's JSON decoding matches field names case-insensitively.
        let entry_id = status
            .as_object()
            .and_then(|o| {
                o.iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case("entryId"))
                    .map(|(_, v)| v)
            })
            .and_then(Value::as_str);
        if let Some(entry_id) = entry_id {
            by_entry.insert(
                entry_id.to_owned(),
                status["status"].as_str().unwrap_or_default().to_owned(),
            );
        }
    }
    sent.iter()
        .map(
            |(entry_id, _)| match by_entry.get(entry_id).map(String::as_str) {
                None | Some("") | Some("RETRY") => AppResult::Retry,
                Some("SUCCESS") => AppResult::Success,
                Some("DROP") => AppResult::Drop,
                Some(other) => AppResult::UnknownStatus(other.to_owned()),
            },
        )
        .collect()
}

/// Reads an app's answer the way the Dapr runtime does for HTTP subscribers.
async fn classify(response: Result<reqwest::Response, reqwest::Error>) -> AppResult {
    let Ok(response) = response else {
        return AppResult::Unreachable;
    };
    let status = response.status();
    if status.is_success() {
        let body = response.bytes().await.unwrap_or_default();
        // An unreadable body is not checked further: done.
        let Ok(answer) = serde_json::from_slice::<Value>(&body) else {
            return AppResult::Success;
        };
        return match answer["status"]
            .as_str()
            .unwrap_or_default()
            .to_ascii_uppercase()
            .as_str()
        {
            "" | "SUCCESS" => AppResult::Success,
            "RETRY" => AppResult::Retry,
            "DROP" => AppResult::Drop,
            other => AppResult::UnknownStatus(other.to_owned()),
        };
    }
    if status == reqwest::StatusCode::NOT_FOUND {
        return AppResult::NotFound;
    }
    AppResult::Status(status.as_u16())
}

fn dapr_error(status: StatusCode, code: &str, message: String) -> Response {
    (
        status,
        Json(json!({ "errorCode": code, "message": message })),
    )
        .into_response()
}

/// `None` when the call may proceed, else the sidecar's `401`.
fn refused(shared: &Shared, headers: &HeaderMap) -> Option<Response> {
    let token = shared.config.api_token.as_ref()?;
    let given = headers.get("dapr-api-token").and_then(|v| v.to_str().ok());
    (given != Some(token.as_str()))
        .then(|| (StatusCode::UNAUTHORIZED, "invalid api token").into_response())
}

fn random_traceparent() -> String {
    format!(
        "00-{:032x}-{:016x}-00",
        rand::random::<u128>(),
        rand::random::<u64>()
    )
}

/// `None` when a publish to `pubsub` may proceed; else the sidecar's `401`, or
/// `unknown_pubsub` with `ERR_PUBSUB_NOT_FOUND`.
fn refused_publish(
    shared: &Shared,
    headers: &HeaderMap,
    pubsub: &str,
    unknown_pubsub: StatusCode,
) -> Option<Response> {
    if let Some(denied) = refused(shared, headers) {
        return Some(denied);
    }
    (!shared.config.pubsubs.iter().any(|p| p == pubsub)).then(|| {
        dapr_error(
            unknown_pubsub,
            "ERR_PUBSUB_NOT_FOUND",
            format!("pubsub {pubsub} not found"),
        )
    })
}

async fn publish(
    State(shared): State<Arc<Shared>>,
    Path((pubsub, topic)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if let Some(refusal) = refused_publish(&shared, &headers, &pubsub, StatusCode::NOT_FOUND) {
        return refusal;
    }
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("text/plain")
        .to_owned();
    let traceparent = headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .map_or_else(random_traceparent, str::to_owned);
    let envelope = match envelope_of(
        &shared,
        &pubsub,
        &topic,
        &content_type,
        &body,
        &traceparent,
        &tracestate_of(&headers),
    ) {
        Some(envelope) => envelope,
        None => return unreadable_cloud_event(&topic),
    };
    shared.inner().published.push(Published {
        pubsub: pubsub.clone(),
        topic: topic.clone(),
        content_type,
        partition_key: query.get("metadata.partitionKey").cloned(),
        envelope: envelope.clone(),
        request: shared.next_request.fetch_add(1, Ordering::Relaxed),
    });
    shared.append(&pubsub, &topic, envelope);
    StatusCode::NO_CONTENT.into_response()
}

fn tracestate_of(headers: &HeaderMap) -> String {
    headers
        .get("tracestate")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// The CloudEvent the sidecar stores for `body` published as `content_type`:
/// `application/cloudevents+json` kept as it is, anything else wrapped; the sidecar's
/// attributes set either way. `None` for a CloudEvent body that is not a JSON object.
fn envelope_of(
    shared: &Shared,
    pubsub: &str,
    topic: &str,
    content_type: &str,
    body: &[u8],
    traceparent: &str,
    tracestate: &str,
) -> Option<Value> {
    let mut envelope = if content_type.starts_with("application/cloudevents+json") {
        match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(map)) => map,
            _ => return None,
        }
    } else {
        let is_json =
            content_type.starts_with("application/json") || content_type.contains("+json");
        let data = if is_json {
            serde_json::from_slice::<Value>(body)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned()))
        } else {
            Value::String(String::from_utf8_lossy(body).into_owned())
        };
        let Value::Object(map) = json!({
            "id": uuid::Uuid::now_v7().to_string(),
            "specversion": "1.0",
            "datacontenttype": content_type,
            "source": shared.config.app_id,
            "type": "com.dapr.event.sent",
            "time": chrono::Utc::now().to_rfc3339(),
            "data": data,
        }) else {
            unreachable!()
        };
        map
    };
    envelope.insert("traceid".into(), json!(traceparent));
    envelope.insert("traceparent".into(), json!(traceparent));
    envelope.insert("tracestate".into(), json!(tracestate));
    envelope.insert("topic".into(), json!(topic));
    envelope.insert("pubsubname".into(), json!(pubsub));
    envelope.entry("source").or_insert(json!("Dapr"));
    envelope
        .entry("type")
        .or_insert(json!("com.dapr.event.sent"));
    envelope.entry("specversion").or_insert(json!("1.0"));
    Some(Value::Object(envelope))
}

/// The sidecar's answer to a CloudEvent it cannot read.
fn unreadable_cloud_event(topic: &str) -> Response {
    dapr_error(
        StatusCode::BAD_REQUEST,
        "ERR_PUBSUB_CLOUD_EVENTS_SER",
        format!("error when unmarshalling the CloudEvent for topic {topic}"),
    )
}

/// One entry of a bulk publish request.
#[derive(serde::Deserialize)]
struct BulkPublishEntry {
    #[serde(rename = "entryId", default)]
    entry_id: String,
    event: Value,
    #[serde(rename = "contentType", default)]
    content_type: String,
    #[serde(default)]
    metadata: HashMap<String, String>,
}

/// `POST /v1.0-alpha1/publish/bulk/{pubsub}/{topic}`: every entry is enveloped like a single
/// publish (each with a span of its own under the request's trace), entry metadata overriding
/// the request's `metadata.*` query. Entries are appended in a random order: Dapr promises no
/// order among the entries of one request.
async fn bulk_publish(
    State(shared): State<Arc<Shared>>,
    Path((pubsub, topic)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    use rand::seq::SliceRandom;
    // Dapr documents 400 here where the single publish answers 404.
    if let Some(refusal) = refused_publish(&shared, &headers, &pubsub, StatusCode::BAD_REQUEST) {
        return refusal;
    }
    let Ok(entries) = serde_json::from_slice::<Vec<BulkPublishEntry>>(&body) else {
        return dapr_error(
            StatusCode::BAD_REQUEST,
            "ERR_PUBSUB_EVENTS_SER",
            format!("error when unmarshaling the request for topic {topic}"),
        );
    };
    let repeated_or_missing = {
        let mut ids = std::collections::HashSet::new();
        entries
            .iter()
            .any(|entry| entry.entry_id.is_empty() || !ids.insert(entry.entry_id.as_str()))
    };
    if repeated_or_missing {
        return dapr_error(
            StatusCode::BAD_REQUEST,
            "ERR_PUBSUB_EVENTS_SER",
            "entryId is duplicated or not present for entry".into(),
        );
    }
    let trace_id = headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .and_then(|t| t.split('-').nth(1))
        .map(str::to_owned);
    let tracestate = tracestate_of(&headers);
    let request_metadata: HashMap<String, String> = query
        .iter()
        .filter_map(|(k, v)| Some((k.strip_prefix("metadata.")?.to_owned(), v.clone())))
        .collect();
    let request = shared.next_request.fetch_add(1, Ordering::Relaxed);
    let mut accepted = Vec::with_capacity(entries.len());
    for entry in entries {
        // A string event is its bytes; anything else is its JSON text.
        let bytes = match &entry.event {
            Value::String(text) => text.clone().into_bytes(),
            other => other.to_string().into_bytes(),
        };
        let traceparent = match &trace_id {
            Some(trace) => format!("00-{trace}-{:016x}-01", rand::random::<u64>()),
            None => random_traceparent(),
        };
        let envelope = match envelope_of(
            &shared,
            &pubsub,
            &topic,
            &entry.content_type,
            &bytes,
            &traceparent,
            &tracestate,
        ) {
            Some(envelope) => envelope,
            None => return unreadable_cloud_event(&topic),
        };
        let mut metadata = request_metadata.clone();
        metadata.extend(entry.metadata);
        accepted.push(Published {
            pubsub: pubsub.clone(),
            topic: topic.clone(),
            content_type: entry.content_type,
            partition_key: metadata.get("partitionKey").cloned(),
            envelope,
            request,
        });
    }
    accepted.shuffle(&mut rand::rng());
    for published in accepted {
        let envelope = published.envelope.clone();
        shared.inner().published.push(published);
        shared.append(&pubsub, &topic, envelope);
    }
    StatusCode::NO_CONTENT.into_response()
}

async fn secret(
    State(shared): State<Arc<Shared>>,
    Path((store, key)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Some(denied) = refused(&shared, &headers) {
        return denied;
    }
    if !shared.config.secret_stores.contains(&store) {
        return dapr_error(
            StatusCode::BAD_REQUEST,
            "ERR_SECRET_STORE_NOT_FOUND",
            format!("failed finding secret store with key {store}"),
        );
    }
    match shared.inner().secrets.get(&(store, key)) {
        Some(values) => Json(values.clone()).into_response(),
        None => StatusCode::NO_CONTENT.into_response(),
    }
}
