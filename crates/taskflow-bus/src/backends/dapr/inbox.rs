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
const GROUP_BUFFER: usize = 64;

/// What we answer the sidecar for one delivery.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verdict {
    Success,
    Retry,
    Drop,
}

impl Verdict {
    fn response(self) -> Response {
        let status = match self {
            Self::Success => "SUCCESS",
            Self::Retry => "RETRY",
            Self::Drop => "DROP",
        };
        (
            StatusCode::OK,
            Json(serde_json::json!({ "status": status })),
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
    pub(super) fn new(pubsub: String, app_api_token: Option<String>) -> Self {
        Self {
            pubsub,
            app_api_token,
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
            serde_json::json!({
                "pubsubname": inbox.pubsub,
                "topic": topic,
                "route": format!("{EVENTS_ROUTE_PREFIX}{}", encode_component(topic)),
                "metadata": {},
            })
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

async fn deliver(
    State(inbox): State<Arc<Inbox>>,
    Path(topic): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if !inbox.authorized(&headers) {
        return unauthorized();
    }
    let targets = match inbox.targets(&topic) {
        Ok(targets) => targets,
        Err(Unroutable::UnknownTopic) => {
            tracing::warn!(%topic, "Dapr delivered an event for a topic this process never subscribed to");
            return StatusCode::NOT_FOUND.into_response();
        }
        Err(Unroutable::NotReady(why)) => {
            tracing::debug!(%topic, why, "Dapr delivery answered RETRY");
            return Verdict::Retry.response();
        }
    };
    let envelope = match serde_json::from_slice::<serde_json::Value>(&body) {
        Ok(value @ serde_json::Value::Object(_)) => serde_json::from_value::<Envelope>(value).ok(),
        _ => None,
    };
    let Some(envelope) = envelope else {
        tracing::error!(%topic, bytes = body.len(), body = %String::from_utf8_lossy(&body[..body.len().min(200)]), "malformed Dapr delivery (not a CloudEvent JSON object); answering DROP");
        metrics::counter!("dapr_deliveries_dropped_total", "topic" => topic.clone()).increment(1);
        return Verdict::Drop.response();
    };
    let as_text = |value: serde_json::Value| match value {
        serde_json::Value::String(text) => text,
        serde_json::Value::Null => String::new(),
        other => other.to_string(),
    };
    let message = Message {
        topic: topic.clone(),
        key: as_text(envelope.partitionkey),
        id: as_text(envelope.id),
        payload: body.to_vec(),
    };

    let mut answers = Vec::with_capacity(targets.len());
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
            tracing::debug!(%topic, group, "subscription went away before the delivery; answering RETRY");
            return Verdict::Retry.response();
        }
        answers.push(answer);
    }
    let verdicts = tokio::select! {
        verdicts = futures::future::join_all(answers) => verdicts,
        () = inbox.shutdown.cancelled() => return Verdict::Retry.response(),
    };
    if verdicts.iter().all(|v| matches!(v, Ok(Verdict::Success))) {
        Verdict::Success.response()
    } else {
        tracing::debug!(%topic, id = %message.id, "delivery not acknowledged by every group; answering RETRY");
        Verdict::Retry.response()
    }
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

#[async_trait]
impl Subscription for DaprSubscription {
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
            if delivery.responder.is_closed() {
                // The sidecar gave up on this request (timeout, restart); it delivers again.
                continue;
            }
            let token = self.inbox.next_token.fetch_add(1, Ordering::Relaxed);
            self.pending.insert(token, delivery.responder);
            return Ok(Received {
                message: delivery.message,
                redeliveries: 0,
                token: Box::new(DeliveryToken(token)),
            });
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
