//! Dapr pub/sub: the bus talks to the Dapr sidecar next to the process over its HTTP API.
//!
//! # What the sidecar is expected to do
//!
//! * **Publish.** [`DaprBus::publish`] sends every message as
//!   `POST <http_endpoint>/v1.0/publish/<pubsub_name>/<topic>?metadata.partitionKey=<key>`
//!   with `Content-Type: application/cloudevents+json`, so the sidecar forwards our CloudEvent
//!   as-is (it only adds its `topic`, `pubsubname`, `traceid`, `traceparent` and `tracestate`
//!   attributes). The event's `traceparent` goes along as the `traceparent` header so the
//!   sidecar continues the request's trace. `204` means the broker accepted it; anything else,
//!   or no answer within `timeout_ms`, is [`BusError::Unavailable`] and the outbox relay
//!   publishes again later (at least once). Kafka components use `partitionKey` as the record
//!   key, which keeps one user's events in order. Messages of one topic and key are sent one
//!   after the other, each awaited, so they reach the broker in order; different topics or
//!   keys are sent side by side (up to [`PUBLISH_LANES`] requests at once).
//! * **Bulk publish** (off unless [`DaprSettings::bulk_publish_max_messages`] is above 1).
//!   Events go as `POST <http_endpoint>/v1.0-alpha1/publish/bulk/<pubsub_name>/<topic>` with
//!   a JSON array of entries `{"entryId","event","contentType","metadata":{"partitionKey"}}`
//!   (the entry id is the event's id; Kafka components key each record by its entry's
//!   `partitionKey`). `204` means every entry was accepted; `500` lists `failedEntries`, and
//!   then the whole batch counts as failed and is published again. Dapr promises no order
//!   among the entries of one request, so a request holds **at most one event per key**: the
//!   batch goes out in waves, wave `n` carrying the `n`-th event of every key of a topic, and
//!   the next wave starts only once every request of this one was accepted. With many users
//!   one round trip then carries many events; with one user it carries one, like a single
//!   publish. The sidecar gives each entry a span of its own under the request's trace, so
//!   the request carries a `traceparent` header only when all its entries share one (always
//!   for a single entry); the events of a mixed request start new traces at the sidecar
//!   instead of joining their own request's. The endpoint exists from Dapr 1.10 (alpha API).
//! * **Subscribe (programmatic, pushed).** The application merges [`DaprBus::router`] into its
//!   HTTP server. The sidecar reads `GET /dapr/subscribe` (one entry per topic, route
//!   `/dapr/events/<topic>`) and then pushes every event as `POST /dapr/events/<topic>` with
//!   the CloudEvent as body. The handler hands the event to the subscription(s) and answers
//!   only once the consumer acknowledged it: `{"status":"SUCCESS"}`; if the subscription is
//!   dropped (or [`DaprBus::shutdown`] is called) before that, `{"status":"RETRY"}`, so the
//!   sidecar delivers it again. A body that is not a JSON object is answered `DROP` (it can
//!   never succeed) and logged; a topic this process never registered is answered `404`
//!   (which the sidecar treats as a drop with a warning).
//! * **Bulk subscribe** (on unless [`DaprSettings::bulk_max_messages`] is 1). Each
//!   subscription asks for `bulkSubscribe` with `maxMessagesCount` =
//!   [`DaprSettings::bulk_max_messages`] and `maxAwaitDurationMs` =
//!   [`DaprSettings::bulk_max_await_ms`]; the sidecar then posts up to that many events in one
//!   request (`{"entries":[{"entryId","event","contentType","metadata"}],…}`) to the same
//!   route. Every entry goes to the subscriptions in order, and the answer carries one status
//!   per entry (`{"statuses":[{"entryId","status"}]}`) under the same rules as a single
//!   delivery: `SUCCESS` once every group acknowledged it, `RETRY` otherwise, `DROP` for an
//!   entry whose event is not a JSON object. One round trip then carries a whole batch, which
//!   is what keeps the latency low at thousands of events per second. Sidecars older than
//!   Dapr 1.10 ignore `bulkSubscribe` and deliver one event per request, which works too.
//! * **Secrets.** [`DaprSecrets::get`] reads `GET /v1.0/secrets/<store>/<key>` (for
//!   `secrets.backend = dapr`).
//!
//! The sidecar reads `/dapr/subscribe` **once**, when the application's port opens. Register
//! every topic the process consumes ([`DaprBus::register`], or subscribe) *before* serving
//! HTTP; a topic registered later is not delivered until the sidecar restarts.
//!
//! # Consumer groups
//!
//! In Dapr the consumer group is the **app-id**: every replica of one app-id shares the
//! deliveries, every other app-id gets its own copy. The `group` argument of
//! [`EventBus::subscribe`] therefore does not reach the broker. Several subscriptions of one
//! group in this process share the deliveries (each event goes to one of them). Several
//! *groups* on one topic in this process each get every event (the sidecar delivers the event
//! once to the process, the bus fans it out) and the sidecar hears `SUCCESS` only when every
//! group acknowledged it; a group that is known but has no live subscription (a consumer that
//! is restarting) makes the delivery `RETRY`. Replicas of one app-id must therefore run the
//! same consumers. Redelivered events may reach groups that had already handled them, which
//! consumers tolerate (they are idempotent).
//!
//! Ordering holds as far as the component keeps it: Kafka delivers one partition (one key)
//! at a time and waits for our answer, so a key's events arrive in order. Dapr does not say
//! how often it delivered an event before, so [`Received::redeliveries`](crate::Received::redeliveries) is always 0.
//!
//! # Configuring components
//!
//! Declare a pub/sub component named like [`DaprSettings::pubsub_name`] (default
//! `taskflow-pubsub`), e.g. `pubsub.kafka` with `consumerGroup: "{appID}"` and, so a new
//! app-id does not miss events published before it first subscribed, `initialOffset: oldest`.
//! Retries of `RETRY`ed events follow the component (Kafka: `consumeRetryEnabled`) and the
//! resiliency policy; dead letters are handled by TaskFlow's consumer runner, so no
//! `deadLetterTopic` is declared. When the sidecar runs with `APP_API_TOKEN`, set
//! [`DaprSettings::app_api_token`] to the same value; with `DAPR_API_TOKEN`, set
//! [`DaprSettings::api_token`] (or leave it empty and export `DAPR_API_TOKEN`).
//!
//! # Tests
//!
//! The tests use a local double because the sidecar cannot run here: `tests/dapr_double/`
//! is a small HTTP server that follows Dapr's documented HTTP contract as far as this module
//! uses it (publish, programmatic subscriptions, the subscriber's status answers, dead-letter
//! topics, secrets, the API token).

mod inbox;
mod secrets;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::{BusError, EventBus, Message, Subscription};

pub use secrets::DaprSecrets;

/// The sidecar's default HTTP address.
pub const DEFAULT_HTTP_ENDPOINT: &str = "http://127.0.0.1:3500";
/// The pub/sub component name TaskFlow expects by default.
pub const DEFAULT_PUBSUB_NAME: &str = "taskflow-pubsub";
/// The header carrying Dapr API tokens (both directions).
pub const API_TOKEN_HEADER: &str = "dapr-api-token";
/// The content type that makes the sidecar forward our CloudEvent unchanged.
pub const CLOUDEVENTS_CONTENT_TYPE: &str = "application/cloudevents+json";
/// Requests [`DaprBus::publish`] has in flight at most: one per topic and partition key.
pub const PUBLISH_LANES: usize = 32;
/// The path of the routes the sidecar pushes events to (`/dapr/events/<topic>`).
pub const EVENTS_ROUTE_PREFIX: &str = "/dapr/events/";

/// How to reach the Dapr sidecar.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DaprSettings {
    /// The sidecar's HTTP API. While this is the default, `DAPR_HTTP_PORT` (which the sidecar
    /// injector sets) picks the port.
    pub http_endpoint: String,
    /// The pub/sub component's name.
    pub pubsub_name: String,
    /// Sent as `dapr-api-token` to the sidecar (its `DAPR_API_TOKEN`); when empty,
    /// the `DAPR_API_TOKEN` environment variable is used if set. Redacted in `Debug`.
    pub api_token: Option<String>,
    /// The token the sidecar must send us (its `APP_API_TOKEN`); deliveries without it are
    /// refused with `401`. Redacted in `Debug`.
    pub app_api_token: Option<String>,
    /// Timeout of every call to the sidecar, in milliseconds.
    pub timeout_ms: u64,
    /// Most events the sidecar delivers in one request (Dapr bulk subscribe,
    /// `maxMessagesCount`). `1` turns bulk subscribe off: one event per request.
    pub bulk_max_messages: u32,
    /// Longest the sidecar waits to fill a bulk delivery before sending what it has, in
    /// milliseconds (`maxAwaitDurationMs`); it bounds the latency bulk delivery adds.
    pub bulk_max_await_ms: u32,
    /// Most events in one bulk publish request (Dapr's alpha bulk publish API, at most one
    /// event per partition key each). `1`, the default, publishes one event per request,
    /// which keeps every event's own trace and works with every sidecar version.
    pub bulk_publish_max_messages: u32,
}

/// Most events per bulk delivery [`DaprSettings::bulk_max_messages`] accepts.
pub const MAX_BULK_MESSAGES: u32 = 1_000;
/// Longest wait [`DaprSettings::bulk_max_await_ms`] accepts.
pub const MAX_BULK_AWAIT_MS: u32 = 60_000;

impl Default for DaprSettings {
    fn default() -> Self {
        Self {
            http_endpoint: DEFAULT_HTTP_ENDPOINT.to_owned(),
            pubsub_name: DEFAULT_PUBSUB_NAME.to_owned(),
            api_token: None,
            app_api_token: None,
            timeout_ms: 5_000,
            bulk_max_messages: 100,
            bulk_max_await_ms: 5,
            bulk_publish_max_messages: 1,
        }
    }
}

impl fmt::Debug for DaprSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redact = |token: &Option<String>| token.as_ref().map(|_| "<redacted>");
        f.debug_struct("DaprSettings")
            .field("http_endpoint", &self.http_endpoint)
            .field("pubsub_name", &self.pubsub_name)
            .field("api_token", &redact(&self.api_token))
            .field("app_api_token", &redact(&self.app_api_token))
            .field("timeout_ms", &self.timeout_ms)
            .field("bulk_max_messages", &self.bulk_max_messages)
            .field("bulk_max_await_ms", &self.bulk_max_await_ms)
            .field("bulk_publish_max_messages", &self.bulk_publish_max_messages)
            .finish()
    }
}

impl DaprSettings {
    /// The sidecar address to use, after the `DAPR_HTTP_PORT` convention.
    pub fn effective_endpoint(&self) -> String {
        self.endpoint_with_port(std::env::var("DAPR_HTTP_PORT").ok().as_deref())
    }

    /// The sidecar address given the value of `DAPR_HTTP_PORT` (`None` when unset): the port
    /// replaces the default endpoint's, an explicitly configured endpoint wins.
    pub fn endpoint_with_port(&self, dapr_http_port: Option<&str>) -> String {
        let endpoint = match dapr_http_port.map(str::trim) {
            Some(port)
                if self.http_endpoint == DEFAULT_HTTP_ENDPOINT && port.parse::<u16>().is_ok() =>
            {
                format!("http://127.0.0.1:{port}")
            }
            _ => self.http_endpoint.clone(),
        };
        endpoint.trim_end_matches('/').to_owned()
    }

    /// Checks the values no sidecar could work with; the error names the field.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.pubsub_name.trim().is_empty() {
            return Err(("pubsub_name", "must not be empty".into()));
        }
        if !(1..=MAX_BULK_MESSAGES).contains(&self.bulk_max_messages) {
            return Err((
                "bulk_max_messages",
                format!("use 1 to {MAX_BULK_MESSAGES} (1 turns bulk subscribe off)"),
            ));
        }
        if !(1..=MAX_BULK_MESSAGES).contains(&self.bulk_publish_max_messages) {
            return Err((
                "bulk_publish_max_messages",
                format!("use 1 to {MAX_BULK_MESSAGES} (1 turns bulk publish off)"),
            ));
        }
        if self.bulk_max_await_ms > MAX_BULK_AWAIT_MS {
            return Err(("bulk_max_await_ms", format!("use 0 to {MAX_BULK_AWAIT_MS}")));
        }
        Ok(())
    }

    /// The bulk subscribe options to ask the sidecar for, if bulk delivery is on.
    fn bulk(&self) -> Option<inbox::BulkOptions> {
        (self.bulk_max_messages > 1).then_some(inbox::BulkOptions {
            max_messages: self.bulk_max_messages,
            max_await_ms: self.bulk_max_await_ms,
        })
    }

    /// The token to send to the sidecar: the configured one, else `DAPR_API_TOKEN`.
    pub fn effective_api_token(&self) -> Option<String> {
        self.api_token
            .clone()
            .or_else(|| std::env::var("DAPR_API_TOKEN").ok())
            .filter(|token| !token.is_empty())
    }
}

/// An HTTP client for the sidecar's API.
#[derive(Clone)]
struct Sidecar {
    client: reqwest::Client,
    endpoint: String,
    api_token: Option<String>,
}

impl Sidecar {
    fn new(settings: &DaprSettings) -> Result<Self, BusError> {
        let endpoint = settings.effective_endpoint();
        if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
            return Err(BusError::Config(format!(
                "Dapr http_endpoint must be an http:// URL, got {endpoint:?}"
            )));
        }
        let timeout = Duration::from_millis(settings.timeout_ms.max(1));
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .build()
            .map_err(|error| BusError::Config(format!("Dapr HTTP client: {error}")))?;
        Ok(Self {
            client,
            endpoint,
            api_token: settings.effective_api_token(),
        })
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let request = self
            .client
            .request(method, format!("{}{path}", self.endpoint));
        match &self.api_token {
            Some(token) => request.header(API_TOKEN_HEADER, token),
            None => request,
        }
    }
}

/// Dapr's error body: `{"errorCode": "...", "message": "..."}`.
async fn describe_error(response: reqwest::Response) -> String {
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    #[derive(Deserialize)]
    struct DaprError {
        #[serde(rename = "errorCode")]
        error_code: Option<String>,
        message: Option<String>,
    }
    match serde_json::from_str::<DaprError>(&body) {
        Ok(DaprError {
            error_code: Some(code),
            message,
        }) => format!("{status} {code}: {}", message.unwrap_or_default()),
        _ => format!("{status}: {}", body.chars().take(300).collect::<String>()),
    }
}

/// Percent-encodes `value` for a URL path segment or query value (RFC 3986 unreserved kept).
pub(crate) fn encode_component(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// The event bus over a Dapr sidecar. See the [module documentation](self).
pub struct DaprBus {
    sidecar: Sidecar,
    pubsub: String,
    inbox: Arc<inbox::Inbox>,
    /// Most entries per bulk publish request; 1 publishes one event per request.
    bulk_publish: usize,
}

impl fmt::Debug for DaprBus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DaprBus")
            .field("endpoint", &self.sidecar.endpoint)
            .field("pubsub", &self.pubsub)
            .finish_non_exhaustive()
    }
}

impl DaprBus {
    /// A bus publishing through the sidecar described by `settings`. Nothing is contacted yet.
    pub fn new(settings: &DaprSettings) -> Result<Self, BusError> {
        settings
            .validate()
            .map_err(|(field, why)| BusError::Config(format!("Dapr {field}: {why}")))?;
        Ok(Self {
            sidecar: Sidecar::new(settings)?,
            pubsub: settings.pubsub_name.clone(),
            inbox: Arc::new(inbox::Inbox::new(
                settings.pubsub_name.clone(),
                settings
                    .app_api_token
                    .clone()
                    .filter(|token| !token.is_empty()),
                settings.bulk(),
            )),
            bulk_publish: settings.bulk_publish_max_messages as usize,
        })
    }

    /// The sidecar address in use.
    pub fn endpoint(&self) -> &str {
        &self.sidecar.endpoint
    }

    /// The routes the sidecar calls: `GET /dapr/subscribe` and `POST /dapr/events/{topic}`.
    /// Merge them into the application's router; they carry their own state.
    pub fn router(&self) -> axum::Router {
        inbox::router(self.inbox.clone())
    }

    /// Lists `topic` in `/dapr/subscribe` without subscribing yet. Call it for every consumed
    /// topic before the application serves HTTP: the sidecar reads the list once. Deliveries
    /// are answered `RETRY` until a consumer subscribes.
    pub fn register(&self, topic: &str) {
        self.inbox.register(topic);
    }

    /// Answers `RETRY` to every delivery still waiting for an acknowledgement and to every
    /// later one, so the sidecar redelivers them (to another replica, or after a restart).
    /// Call it before stopping the HTTP server, whose graceful shutdown waits for them.
    pub fn shutdown(&self) {
        self.inbox.shutdown();
    }

    /// Publishes `lanes` (one topic, one key each, in order) through the bulk publish API:
    /// wave `n` carries the `n`-th message of every lane, split into requests of at most
    /// [`Self::bulk_publish`] entries, and starts once every request of wave `n - 1` was
    /// accepted; the first refusal ends the topic's publishing.
    async fn publish_waves(&self, topic: &str, mut lanes: Vec<Lane<'_>>) -> Result<(), BusError> {
        use futures::StreamExt;
        loop {
            let wave: Vec<&Message> = lanes.iter_mut().filter_map(Lane::pop_front).collect();
            if wave.is_empty() {
                return Ok(());
            }
            let mut requests: Vec<futures::future::BoxFuture<'_, Result<(), BusError>>> =
                Vec::new();
            for entries in wave.chunks(self.bulk_publish) {
                requests.push(Box::pin(self.publish_bulk(topic, entries)));
            }
            let mut sent = futures::stream::iter(requests).buffer_unordered(PUBLISH_LANES);
            let mut outcome = Ok(());
            while let Some(result) = sent.next().await {
                outcome = outcome.and(result);
            }
            outcome?;
        }
    }

    /// One bulk publish request; every entry has a key of its own (Dapr keeps no order among
    /// the entries of a request).
    async fn publish_bulk(&self, topic: &str, entries: &[&Message]) -> Result<(), BusError> {
        let path = format!(
            "/v1.0-alpha1/publish/bulk/{}/{}",
            encode_component(&self.pubsub),
            encode_component(topic)
        );
        let mut request = self
            .sidecar
            .request(reqwest::Method::POST, &path)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(bulk_body(entries)?);
        let traces: Vec<Option<String>> = entries.iter().map(|m| traceparent(&m.payload)).collect();
        if let Some(Some(shared)) = traces.first()
            && traces.iter().all(|t| t.as_ref() == Some(shared))
        {
            request = request.header("traceparent", shared);
        }
        let what = format!("a bulk publish of {} events to", entries.len());
        self.send_publish(request, topic, &what).await
    }

    /// Sends a publish request to `topic`; a refusal reads "Dapr refused <what> <pubsub>/<topic>".
    async fn send_publish(
        &self,
        request: reqwest::RequestBuilder,
        topic: &str,
        what: &str,
    ) -> Result<(), BusError> {
        let response = request.send().await.map_err(|error| {
            BusError::Unavailable(format!(
                "cannot publish to Dapr sidecar at {}: {error}",
                self.sidecar.endpoint
            ))
        })?;
        if response.status().is_success() {
            return Ok(());
        }
        Err(BusError::Unavailable(format!(
            "Dapr refused {what} {}/{topic}: {}",
            self.pubsub,
            describe_error(response).await
        )))
    }

    /// Publishes `lane` (one topic and key) in order, each message awaited.
    async fn publish_lane(&self, lane: Vec<&Message>) -> Result<(), BusError> {
        for message in lane {
            self.publish_one(message).await?;
        }
        Ok(())
    }

    async fn publish_one(&self, message: &Message) -> Result<(), BusError> {
        let path = format!(
            "/v1.0/publish/{}/{}",
            encode_component(&self.pubsub),
            encode_component(&message.topic)
        );
        let mut request = self
            .sidecar
            .request(reqwest::Method::POST, &path)
            .header(reqwest::header::CONTENT_TYPE, CLOUDEVENTS_CONTENT_TYPE)
            .body(message.payload.clone());
        if !message.key.is_empty() {
            request = request.query(&[("metadata.partitionKey", message.key.as_str())]);
        }
        if let Some(traceparent) = traceparent(&message.payload) {
            request = request.header("traceparent", traceparent);
        }
        let what = format!("to publish {} to", message.id);
        self.send_publish(request, &message.topic, &what).await
    }
}

/// The messages of one topic and key, in publish order.
type Lane<'a> = std::collections::VecDeque<&'a Message>;

/// `messages` split by topic and key, each lane in publish order, lanes in order of first
/// appearance.
fn lanes_of(messages: &[Message]) -> Vec<Lane<'_>> {
    let mut lanes: Vec<Lane<'_>> = Vec::new();
    let mut lane_of: std::collections::HashMap<(&str, &str), usize> =
        std::collections::HashMap::new();
    for message in messages {
        let lane = *lane_of
            .entry((message.topic.as_str(), message.key.as_str()))
            .or_insert_with(|| {
                lanes.push(Lane::new());
                lanes.len() - 1
            });
        lanes[lane].push_back(message);
    }
    lanes
}

/// The bulk publish body: `[{"entryId","event","contentType","metadata"}…]`, each event
/// embedded as the JSON object it is (a payload that is not one is refused here, as the
/// sidecar would refuse it).
fn bulk_body(entries: &[&Message]) -> Result<Vec<u8>, BusError> {
    let mut body = Vec::with_capacity(entries.iter().map(|m| m.payload.len() + 160).sum());
    body.push(b'[');
    for (i, message) in entries.iter().enumerate() {
        let is_object = message.payload.trim_ascii_start().first() == Some(&b'{')
            && serde_json::from_slice::<serde::de::IgnoredAny>(&message.payload).is_ok();
        if !is_object {
            return Err(BusError::Unavailable(format!(
                "event {} is not a JSON object; the sidecar cannot publish it",
                message.id
            )));
        }
        if i > 0 {
            body.push(b',');
        }
        let quoted = |value: &str| serde_json::to_string(value).unwrap_or_default();
        body.extend_from_slice(b"{\"entryId\":");
        body.extend_from_slice(quoted(&message.id).as_bytes());
        body.extend_from_slice(b",\"contentType\":\"");
        body.extend_from_slice(CLOUDEVENTS_CONTENT_TYPE.as_bytes());
        body.extend_from_slice(b"\",\"event\":");
        body.extend_from_slice(&message.payload);
        if !message.key.is_empty() {
            body.extend_from_slice(b",\"metadata\":{\"partitionKey\":");
            body.extend_from_slice(quoted(&message.key).as_bytes());
            body.push(b'}');
        }
        body.push(b'}');
    }
    body.push(b']');
    Ok(body)
}

/// The `traceparent` attribute of a CloudEvent payload, if it has a usable one.
fn traceparent(payload: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct Trace {
        traceparent: Option<String>,
    }
    serde_json::from_slice::<Trace>(payload)
        .ok()?
        .traceparent
        .filter(|t| !t.is_empty() && t.is_ascii())
}

#[async_trait]
impl EventBus for DaprBus {
    fn name(&self) -> &'static str {
        "dapr"
    }

    /// Messages of one topic and key go one after the other (each awaited), which is all the
    /// ordering the sidecar can keep; different topics or keys go side by side, at most
    /// [`PUBLISH_LANES`] requests at a time.
    ///
    /// With bulk publish on, each topic's lanes go out in waves instead (see
    /// [`Self::publish_waves`]), the topics side by side.
    async fn publish(&self, messages: &[Message]) -> Result<(), BusError> {
        use futures::StreamExt;
        let lanes = lanes_of(messages);
        let mut sends: Vec<futures::future::BoxFuture<'_, Result<(), BusError>>> = Vec::new();
        if self.bulk_publish > 1 {
            let mut by_topic: std::collections::BTreeMap<&str, Vec<Lane<'_>>> =
                std::collections::BTreeMap::new();
            for lane in lanes {
                by_topic
                    .entry(lane[0].topic.as_str())
                    .or_default()
                    .push(lane);
            }
            for (topic, lanes) in by_topic {
                sends.push(Box::pin(self.publish_waves(topic, lanes)));
            }
        } else {
            for lane in lanes {
                sends.push(Box::pin(self.publish_lane(lane.into())));
            }
        }
        let mut results = futures::stream::iter(sends).buffer_unordered(PUBLISH_LANES);
        let mut outcome = Ok(());
        while let Some(result) = results.next().await {
            if let Err(error) = result {
                // The other lanes finish; the relay publishes the whole batch again.
                outcome = outcome.and(Err(error));
            }
        }
        outcome
    }

    async fn subscribe(&self, topic: &str, group: &str) -> Result<Box<dyn Subscription>, BusError> {
        Ok(Box::new(self.inbox.join(topic, group)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dapr_http_port_replaces_only_the_default_endpoint() {
        let settings = DaprSettings::default();
        assert_eq!(settings.endpoint_with_port(None), "http://127.0.0.1:3500");
        assert_eq!(
            settings.endpoint_with_port(Some("3601")),
            "http://127.0.0.1:3601"
        );
        assert_eq!(
            settings.endpoint_with_port(Some("nope")),
            "http://127.0.0.1:3500"
        );
        let custom = DaprSettings {
            http_endpoint: "http://dapr:3500/".into(),
            ..DaprSettings::default()
        };
        assert_eq!(custom.endpoint_with_port(Some("3601")), "http://dapr:3500");
    }

    #[test]
    fn tokens_are_redacted_in_debug() {
        let settings = DaprSettings {
            api_token: Some("s3cret".into()),
            app_api_token: Some("t0ken".into()),
            ..DaprSettings::default()
        };
        let debug = format!("{settings:?}");
        assert!(
            !debug.contains("s3cret") && !debug.contains("t0ken"),
            "{debug}"
        );
        assert!(debug.contains("<redacted>"));
    }

    #[test]
    fn settings_reject_unknown_fields_and_default_the_rest() {
        let settings: DaprSettings = serde_json::from_str(r#"{"pubsub_name":"p"}"#).unwrap();
        assert_eq!(settings.http_endpoint, DEFAULT_HTTP_ENDPOINT);
        assert_eq!(settings.timeout_ms, 5_000);
        assert!(serde_json::from_str::<DaprSettings>(r#"{"pubsubname":"p"}"#).is_err());
    }

    #[test]
    fn components_are_percent_encoded() {
        assert_eq!(encode_component("t1-task-events.dlq"), "t1-task-events.dlq");
        assert_eq!(encode_component("a/b c"), "a%2Fb%20c");
    }
}
