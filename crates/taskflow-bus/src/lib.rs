//! TaskFlow's event bus.
//!
//! Commands write events to the store's transactional outbox in the same transaction as their
//! change. The [`relay::OutboxRelay`] hands unpublished rows to an [`EventBus`] in commit order
//! (so per user, the partition key, in order) and marks them published; it is woken by every
//! commit and never waits for a polling interval. Consumers run inside a
//! [`consumer::ConsumerRunner`], which retries failures with exponential backoff and jitter,
//! dead-letters an event after the last attempt, and acknowledges only after the handler's
//! transaction (with its idempotency record) committed.
//!
//! Backends implement [`EventBus`]: [`backends::memory`] (in-process; the outbox itself is the
//! log, so it is as durable as the database), and behind cargo features NATS JetStream, Kafka
//! and Dapr pub/sub. The [`conformance`] story runs against every backend.

pub mod backends;
pub mod conformance;
pub mod consumer;
pub mod outbox_bench;
pub mod relay;

use std::any::Any;
use std::collections::HashMap;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

/// A message as it travels on a broker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// Physical topic name.
    pub topic: String,
    /// Ordering key (the user id): messages with one key are delivered in publish order.
    pub key: String,
    /// Unique id, stable across re-sends of one outbox row (a bus may skip what it knows it
    /// stored already).
    pub id: String,
    /// The CloudEvent as JSON (structured mode).
    pub payload: Vec<u8>,
}

/// A message handed to a consumer, with what its backend needs to acknowledge it.
pub struct Received {
    /// The message.
    pub message: Message,
    /// How many times the broker has delivered it before (0 when unknown or first).
    pub redeliveries: u32,
    /// Backend-specific acknowledgement state.
    pub token: Box<dyn Any + Send + Sync>,
}

impl std::fmt::Debug for Received {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Received")
            .field("message", &self.message)
            .field("redeliveries", &self.redeliveries)
            .finish_non_exhaustive()
    }
}

/// What went wrong talking to a broker.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The broker cannot be reached or refused the operation; retry later.
    #[error("broker unavailable: {0}")]
    Unavailable(String),
    /// Misconfiguration (bad URL, missing topic, …).
    #[error("bus configuration: {0}")]
    Config(String),
    /// The subscription ended (shutdown or broker closed it).
    #[error("subscription closed")]
    Closed,
    /// Storage failed (the in-process bus reads the outbox).
    #[error(transparent)]
    Store(#[from] taskflow_store::StoreError),
}

/// A topic to create, with its partitioning and retention.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicSpec {
    /// Physical name.
    pub name: String,
    /// Partitions (Kafka) — ordering holds per key within a partition.
    pub partitions: u32,
    /// How long messages are kept.
    pub retention: std::time::Duration,
}

/// The broker's acceptance of messages already sent ([`EventBus::send`]).
pub type PendingPublish = futures::future::BoxFuture<'static, Result<(), BusError>>;

/// A message broker.
#[async_trait]
pub trait EventBus: Send + Sync + 'static {
    /// A short name for logs and metrics (`memory`, `nats`, …).
    fn name(&self) -> &'static str;
    /// Publishes `messages` in order and returns once the broker has accepted all of them.
    /// On error some may have been published; the relay publishes them again (at least once).
    async fn publish(&self, messages: &[Message]) -> Result<(), BusError>;
    /// Sends `messages` in order and returns once they are on their way, with a future that
    /// completes when the broker has accepted all of them (as [`Self::publish`] would). What a
    /// later call sends goes out after these, so the relay can send its next batch while the
    /// broker still acknowledges this one. The default publishes before returning.
    async fn send(&self, messages: &[Message]) -> Result<PendingPublish, BusError> {
        self.publish(messages).await?;
        Ok(Box::pin(std::future::ready(Ok(()))))
    }
    /// Joins consumer group `group` on `topic`; each message goes to one member of a group.
    async fn subscribe(&self, topic: &str, group: &str) -> Result<Box<dyn Subscription>, BusError>;
    /// Joins `group` on `topic` for the life of this process only (a realtime feeder's group,
    /// named afresh at each start): a broker that keeps each group's state may discard this
    /// one once no member has asked it for messages for a while, instead of keeping it for
    /// ever after the process is gone. Otherwise as [`Self::subscribe`].
    async fn subscribe_transient(
        &self,
        topic: &str,
        group: &str,
    ) -> Result<Box<dyn Subscription>, BusError> {
        self.subscribe(topic, group).await
    }
    /// Whether consumers read the store's outbox themselves (the in-process bus): publishing
    /// then hands nothing over and only records rows as published (for pruning), so the relay
    /// may do it in batches instead of after every commit.
    fn consumers_read_outbox(&self) -> bool {
        false
    }
    /// Creates topics that do not exist yet (no-op where the backend needs none).
    async fn ensure_topics(&self, _topics: &[TopicSpec]) -> Result<(), BusError> {
        Ok(())
    }
    /// Called by the outbox relay when it takes the lead, its first included: another
    /// process may have published since this bus last did, so whatever the bus remembers of
    /// the topics' contents is stale (no-op where it remembers nothing).
    fn lead_taken(&self) {}
}

/// One member of a consumer group.
#[async_trait]
pub trait Subscription: Send {
    /// Waits for the next message.
    async fn next(&mut self) -> Result<Received, BusError>;
    /// Waits for the next message, then adds up to `max - 1` more that are already at hand,
    /// in order. The default takes one; backends that read in batches hand them all over.
    async fn next_batch(&mut self, max: usize) -> Result<Vec<Received>, BusError> {
        let _ = max;
        Ok(vec![self.next().await?])
    }
    /// Acknowledges `received` (commits the offset / acks the message). Call only after the
    /// handler's effects are durable.
    async fn ack(&mut self, received: Received) -> Result<(), BusError>;
    /// Acknowledges several messages, in order. The default acknowledges one after the other;
    /// backends whose acknowledgements are round trips send them together.
    async fn ack_all(&mut self, received: Vec<Received>) -> Result<(), BusError> {
        for one in received {
            self.ack(one).await?;
        }
        Ok(())
    }
}

/// Physical topic names for the logical ones, with an optional prefix (tests use a unique
/// prefix so runs never see each other's messages).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TopicNames {
    /// Prepended to every physical name.
    pub prefix: String,
    /// Overrides by logical name, e.g. `task-events = "prod.task-events"`.
    pub names: HashMap<String, String>,
}

impl TopicNames {
    /// The physical name of a logical topic (dead-letter topics map their base topic).
    pub fn physical(&self, logical: &str) -> String {
        let (base, suffix) = match logical.strip_suffix(".dlq") {
            Some(base) => (base, ".dlq"),
            None => (logical, ""),
        };
        let name = self.names.get(base).map_or(base, String::as_str);
        format!("{}{name}{suffix}", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn physical_names_apply_prefix_and_overrides() {
        let mut names = TopicNames::default();
        assert_eq!(names.physical("task-events"), "task-events");
        names.prefix = "t1-".into();
        names
            .names
            .insert("reminders".into(), "prod-reminders".into());
        assert_eq!(names.physical("reminders"), "t1-prod-reminders");
        assert_eq!(names.physical("reminders.dlq"), "t1-prod-reminders.dlq");
        assert_eq!(names.physical("task-updates"), "t1-task-updates");
    }
}
