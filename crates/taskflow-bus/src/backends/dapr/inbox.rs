//! The application side of Dapr's push delivery: the routes the sidecar calls and the
//! subscriptions they feed.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::{API_TOKEN_HEADER, EVENTS_ROUTE_PREFIX, encode_component};
use crate::{BusError, Message, Received, Subscription};

/// Deliveries buffered per group before the sidecar's requests wait (backpressure).
const GROUP_BUFFER: usize = 256;

/// The `bulkSubscribe` options every subscription asks the sidecar for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct BulkOptions {
    /// `maxMessagesCount`.
    pub(super) max_messages: u32,
    /// `maxAwaitDurationMs`.
    pub(super) max_await_ms: u32,
}

/// What we answer the sidecar for one delivery.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verdict {
    Success,
    Retry,
    Drop,
}

impl Verdict {
    fn as_str(self) -> &'static str {
        match self {
            Self::Success => "SUCCESS",
            Self::Retry => "RETRY",
            Self::Drop => "DROP",
        }
    }

    fn response(self) -> Response {
        (
            StatusCode::OK,
            Json(serde_json::json!({ "status": self.as_str() })),
        )
            .into_response()
    }
}

/// One event handed to one group, with the way back to the waiting HTTP request.
struct Delivery {
    message: Message,
    responder: oneshot::Sender<Verdict>,
}

/// A group's shared queue: its members compete for the deliveries.
#[derive(Clone)]
struct Queue {
    sender: mpsc::Sender<Delivery>,
    receiver: Arc<tokio::sync::Mutex<mpsc::Receiver<Delivery>>>,
}

#[derive(Default)]
struct Group {
    members: usize,
    queue: Option<Queue>,
}

#[derive(Default)]
struct Topic {
    groups: BTreeMap<String, Group>,
}

/// Registered topics and their groups.
pub(super) struct Inbox {
    pubsub: String,
    app_api_token: Option<String>,
    bulk: Option<BulkOptions>,
    shutdown: CancellationToken,
    next_token: AtomicU64,
    topics: Mutex<BTreeMap<String, Topic>>,
}

/// Why a delivery cannot be handed to consumers right now.
enum Unroutable {
    UnknownTopic,
    NotReady(String),
}

impl Inbox {
    pub(super) fn new(
        pubsub: String,
        app_api_token: Option<String>,
        bulk: Option<BulkOptions>,
    ) -> Self {
        Self {
            pubsub,
            app_api_token,
            bulk,
            shutdown: CancellationToken::new(),
            next_token: AtomicU64::new(1),
            topics: Mutex::new(BTreeMap::new()),
        }
    }

    fn topics(&self) -> MutexGuard<'_, BTreeMap<String, Topic>> {
        // A panic while holding this lock leaves consistent data (plain counters and queues).
        self.topics
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(super) fn register(&self, topic: &str) {
        self.topics().entry(topic.to_owned()).or_default();
    }

    pub(super) fn shutdown(&self) {
        self.shutdown.cancel();
        // Dropping the queues drops what is buffered: those requests answer RETRY.
        for topic in self.topics().values_mut() {
            for group in topic.groups.values_mut() {
                group.queue = None;
            }
        }
    }

    pub(super) fn join(self: &Arc<Self>, topic: &str, group: &str) -> DaprSubscription {
        let mut topics = self.topics();
        let entry = topics
            .entry(topic.to_owned())
            .or_default()
            .groups
            .entry(group.to_owned())
            .or_default();
        entry.members += 1;
        let queue = entry
            .queue
            .get_or_insert_with(|| {
                let (sender, receiver) = mpsc::channel(GROUP_BUFFER);
                Queue {
                    sender,
                    receiver: Arc::new(tokio::sync::Mutex::new(receiver)),
                }
            })
            .clone();
        DaprSubscription {
            inbox: self.clone(),
            topic: topic.to_owned(),
            group: group.to_owned(),
            receiver: queue.receiver,
            pending: HashMap::new(),
        }
    }

    fn leave(&self, topic: &str, group: &str) {
        if let Some(entry) = self
            .topics()
            .get_mut(topic)
            .and_then(|t| t.groups.get_mut(group))
        {
            entry.members = entry.members.saturating_sub(1);
            if entry.members == 0 {
                entry.queue = None;
            }
        }
    }

    /// The queues of every group of `topic`, if all of them have a live member.
    fn targets(&self, topic: &str) -> Result<Vec<(String, mpsc::Sender<Delivery>)>, Unroutable> {
        if self.shutdown.is_cancelled() {
            return Err(Unroutable::NotReady(
                "the application is shutting down".into(),
            ));
        }
        let topics = self.topics();
        let topic = topics.get(topic).ok_or(Unroutable::UnknownTopic)?;
        if topic.groups.is_empty() {
            return Err(Unroutable::NotReady(
                "no consumer has subscribed yet".into(),
            ));
        }
        topic
            .groups
            .iter()
            .map(|(name, group)| match &group.queue {
                Some(queue) => Ok((name.clone(), queue.sender.clone())),
                None => Err(Unroutable::NotReady(format!(
                    "group {name} has no live subscription"
                ))),
            })
            .collect()
    }

    fn authorized(&self, headers: &HeaderMap) -> bool {
        match &self.app_api_token {
            None => true,
            Some(token) => headers
                .get(API_TOKEN_HEADER)
                .is_some_and(|value| value.as_bytes() == token.as_bytes()),
        }
    }
}

pub(super) fn router(inbox: Arc<Inbox>) -> axum::Router {
    axum::Router::new()
        .route("/dapr/subscribe", get(list_subscriptions))
        .route("/dapr/events/{topic}", post(deliver))
        .with_state(inbox)
}

fn unauthorized() -> Response {
    (StatusCode::UNAUTHORIZED, "invalid api token").into_response()
}

async fn list_subscriptions(State(inbox): State<Arc<Inbox>>, headers: HeaderMap) -> Response {
    if !inbox.authorized(&headers) {
        return unauthorized();
    }
    let entries: Vec<serde_json::Value> = inbox
        .topics()
        .keys()
        .map(|topic| {
            let mut entry = serde_json::json!({
                "pubsubname": inbox.pubsub,
                "topic": topic,
                "route": format!("{EVENTS_ROUTE_PREFIX}{}", encode_component(topic)),
                "metadata": {},
            });
            if let Some(bulk) = inbox.bulk {
                entry["bulkSubscribe"] = serde_json::json!({
                    "enabled": true,
                    "maxMessagesCount": bulk.max_messages,
                    "maxAwaitDurationMs": bulk.max_await_ms,
                });
            }
            entry
        })
        .collect();
    Json(entries).into_response()
}

/// The attributes of a delivered CloudEvent the bus reads.
#[derive(Deserialize)]
struct Envelope {
    #[serde(default)]
    id: serde_json::Value,
    #[serde(default)]
    partitionkey: serde_json::Value,
}

/// One entry of a bulk delivery (`entryId` in current runtimes, `entryID` in Dapr 1.10).
#[derive(Deserialize)]
struct BulkEntry {
    #[serde(default, rename = "entryId", alias = "entryID")]
    entry_id: String,
    #[serde(default)]
    event: serde_json::Value,
}

/// A bulk delivery: `{"id","type","topic","pubsubname","metadata","entries":[…]}`.
#[derive(Deserialize)]
struct BulkDelivery {
    entries: Vec<BulkEntry>,
}

/// The message a delivered CloudEvent carries, or `None` when it is not a JSON object.
fn message_of(topic: &str, event: serde_json::Value) -> Option<Message> {
    if !event.is_object() {
        return None;
    }
    let payload = serde_json::to_vec(&event).ok()?;
    let envelope = serde_json::from_value::<Envelope>(event).ok()?;
    let as_text = |value: serde_json::Value| match value {
        serde_json::Value::String(text) => text,
        serde_json::Value::Null => String::new(),
        other => other.to_string(),
    };
    Some(Message {
        topic: topic.to_owned(),
        key: as_text(envelope.partitionkey),
        id: as_text(envelope.id),
        payload,
    })
}

fn log_malformed(topic: &str, body: &[u8]) {
    tracing::error!(%topic, bytes = body.len(), body = %String::from_utf8_lossy(&body[..body.len().min(200)]), "malformed Dapr delivery (not a CloudEvent JSON object); answering DROP");
    metrics::counter!("dapr_deliveries_dropped_total", "topic" => topic.to_owned()).increment(1);
}

async fn deliver(
    State(inbox): State<Arc<Inbox>>,
    Path(topic): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if !inbox.authorized(&headers) {
        return unauthorized();
    }
    let value = serde_json::from_slice::<serde_json::Value>(&body).ok();
    let bulk = match value.as_ref().filter(|v| v["entries"].is_array()) {
        None => None,
        Some(value) => match BulkDelivery::deserialize(value) {
            Ok(bulk) => Some(bulk),
            Err(error) => {
                tracing::error!(%topic, %error, "malformed Dapr bulk delivery; answering 400 so the sidecar retries it");
                return (StatusCode::BAD_REQUEST, "malformed bulk delivery").into_response();
            }
        },
    };
    let targets = match inbox.targets(&topic) {
        Ok(targets) => targets,
        Err(Unroutable::UnknownTopic) => {
            tracing::warn!(%topic, "Dapr delivered an event for a topic this process never subscribed to");
            return StatusCode::NOT_FOUND.into_response();
        }
        Err(Unroutable::NotReady(why)) => {
            // For a bulk delivery too: an answer without statuses means RETRY for every entry.
            tracing::debug!(%topic, why, "Dapr delivery answered RETRY");
            return Verdict::Retry.response();
        }
    };
    if let Some(bulk) = bulk {
        return deliver_bulk(&inbox, &topic, targets, bulk).await;
    }
    let Some(message) = value.and_then(|value| message_of(&topic, value)) else {
        log_malformed(&topic, &body);
        return Verdict::Drop.response();
    };
    let id = message.id.clone();
    let verdict = dispatch(&inbox, &targets, vec![message]).await;
    if verdict.first() != Some(&Verdict::Success) {
        tracing::debug!(%topic, %id, "delivery not acknowledged by every group; answering RETRY");
    }
    verdict
        .first()
        .copied()
        .unwrap_or(Verdict::Retry)
        .response()
}

/// Hands the entries of a bulk delivery to the groups and answers one status per entry.
async fn deliver_bulk(
    inbox: &Inbox,
    topic: &str,
    targets: Vec<(String, mpsc::Sender<Delivery>)>,
    bulk: BulkDelivery,
) -> Response {
    let mut statuses = Vec::with_capacity(bulk.entries.len());
    let mut messages = Vec::with_capacity(bulk.entries.len());
    let mut entry_ids = Vec::with_capacity(bulk.entries.len());
    for entry in bulk.entries {
        if entry.entry_id.is_empty() {
            // Nothing to answer it with; the runtime itself never sends one.
            tracing::warn!(%topic, "Dapr bulk delivery entry without entryId ignored");
            continue;
        }
        let raw = entry.event.to_string();
        match message_of(topic, entry.event) {
            Some(message) => {
                messages.push(message);
                entry_ids.push(entry.entry_id);
            }
            None => {
                log_malformed(topic, raw.as_bytes());
                statuses.push(serde_json::json!({"entryId": entry.entry_id, "status": "DROP"}));
            }
        }
    }
    let verdicts = dispatch(inbox, &targets, messages).await;
    let retried = verdicts.iter().filter(|v| **v != Verdict::Success).count();
    if retried > 0 {
        tracing::debug!(%topic, retried, "bulk entries not acknowledged by every group; answering RETRY for them");
    }
    for (entry_id, verdict) in entry_ids.into_iter().zip(verdicts) {
        statuses.push(serde_json::json!({"entryId": entry_id, "status": verdict.as_str()}));
    }
    (
        StatusCode::OK,
        Json(serde_json::json!({ "statuses": statuses })),
    )
        .into_response()
}

/// Hands `messages` in order to every group and waits for their answers: per message
/// `Success` when every group acknowledged it, else `Retry`.
async fn dispatch(
    inbox: &Inbox,
    targets: &[(String, mpsc::Sender<Delivery>)],
    messages: Vec<Message>,
) -> Vec<Verdict> {
    let count = messages.len();
    let mut answers: Vec<Vec<oneshot::Receiver<Verdict>>> = Vec::with_capacity(count);
    'messages: for message in messages {
        let mut per_group = Vec::with_capacity(targets.len());
        for (group, sender) in targets {
            let (responder, answer) = oneshot::channel();
            let delivery = Delivery {
                message: message.clone(),
                responder,
            };
            let sent = tokio::select! {
                sent = sender.send(delivery) => sent.is_ok(),
                () = inbox.shutdown.cancelled() => false,
            };
            if !sent {
                tracing::debug!(
                    group,
                    "subscription went away before the delivery; answering RETRY"
                );
                // This message and the later ones are not handed out: they come again.
                break 'messages;
            }
            per_group.push(answer);
        }
        answers.push(per_group);
    }
    let handed_out = answers.len();
    let all_acknowledged = answers.into_iter().map(|per_group| async move {
        futures::future::join_all(per_group)
            .await
            .iter()
            .all(|v| matches!(v, Ok(Verdict::Success)))
    });
    let mut verdicts = tokio::select! {
        acknowledged = futures::future::join_all(all_acknowledged) => acknowledged
            .into_iter()
            .map(|ok| if ok { Verdict::Success } else { Verdict::Retry })
            .collect::<Vec<_>>(),
        () = inbox.shutdown.cancelled() => vec![Verdict::Retry; handed_out],
    };
    verdicts.resize(count, Verdict::Retry);
    verdicts
}

/// Which pending delivery a [`Received`] answers.
struct DeliveryToken(u64);

/// One member of a group: deliveries pushed by the sidecar, answered on acknowledgement.
pub(super) struct DaprSubscription {
    inbox: Arc<Inbox>,
    topic: String,
    group: String,
    receiver: Arc<tokio::sync::Mutex<mpsc::Receiver<Delivery>>>,
    /// Handed out, not yet acknowledged; dropping a responder answers RETRY.
    pending: HashMap<u64, oneshot::Sender<Verdict>>,
}

impl DaprSubscription {
    /// Keeps `delivery` pending and hands its message out, unless the sidecar gave up on it.
    fn hand_out(&mut self, delivery: Delivery) -> Option<Received> {
        if delivery.responder.is_closed() {
            // The sidecar gave up on this request (timeout, restart); it delivers again.
            return None;
        }
        let token = self.inbox.next_token.fetch_add(1, Ordering::Relaxed);
        self.pending.insert(token, delivery.responder);
        Some(Received {
            message: delivery.message,
            redeliveries: 0,
            token: Box::new(DeliveryToken(token)),
        })
    }
}

#[async_trait]
impl Subscription for DaprSubscription {
    async fn next_batch(&mut self, max: usize) -> Result<Vec<Received>, BusError> {
        let mut batch = vec![self.next().await?];
        let receiver = self.receiver.clone();
        let mut receiver = receiver.lock().await;
        while batch.len() < max {
            let Ok(delivery) = receiver.try_recv() else {
                break;
            };
            batch.extend(self.hand_out(delivery));
        }
        Ok(batch)
    }

    async fn next(&mut self) -> Result<Received, BusError> {
        loop {
            let delivery = {
                let mut receiver = self.receiver.lock().await;
                tokio::select! {
                    delivery = receiver.recv() => delivery,
                    () = self.inbox.shutdown.cancelled() => None,
                }
            };
            let Some(delivery) = delivery else {
                return Err(BusError::Closed);
            };
            if let Some(received) = self.hand_out(delivery) {
                return Ok(received);
            }
        }
    }

    async fn ack(&mut self, received: Received) -> Result<(), BusError> {
        if let Ok(token) = received.token.downcast::<DeliveryToken>()
            && let Some(responder) = self.pending.remove(&token.0)
        {
            // The request may be gone already (sidecar timeout); the sidecar then redelivers.
            let _ = responder.send(Verdict::Success);
        }
        Ok(())
    }
}

impl Drop for DaprSubscription {
    fn drop(&mut self) {
        for (_, responder) in self.pending.drain() {
            let _ = responder.send(Verdict::Retry);
        }
        self.inbox.leave(&self.topic, &self.group);
    }
}
