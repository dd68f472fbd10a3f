//! The Kafka backend (Apache Kafka, Redpanda, Confluent Cloud, any Kafka-protocol broker), on
//! librdkafka through the `rdkafka` crate.
//!
//! # Delivery semantics: at least once
//!
//! The outbox relay calls [`KafkaBus::publish`] with a batch of committed outbox rows. Every
//! message is sent by an idempotent producer (`enable.idempotence=true`, `acks=all`), so a
//! producer retry never writes a duplicate or reorders a partition, and `publish` returns `Ok`
//! only after the broker acknowledged every message of the batch; any failure is
//! [`BusError::Unavailable`] and the relay publishes the rows again later. A re-publish after a
//! failure (or a crash between publishing and marking the rows published) can write a message
//! twice: consumers are idempotent ([`taskflow_store::ConsumerStore::apply_once`] keyed by the
//! CloudEvent id), and each message also carries its outbox id in the `taskflow-msg-id` header
//! (stable across re-publishes of one row).
//!
//! # Ordering: key = user id
//!
//! The record key is [`Message::key`], the user id. librdkafka is set to the `murmur2_random`
//! partitioner, the Java client's, so every client of a deployment maps one user to one
//! partition; within a partition Kafka keeps publish order, so one user's events are consumed in
//! order. Changing a topic's partition count remaps keys: create topics with their final count.
//!
//! # Consuming: commits after the handler
//!
//! [`EventBus::subscribe`] joins a Kafka consumer group (`group.id` = the consumer's group) with
//! `enable.auto.commit=false` and `auto.offset.reset=earliest`. [`Subscription::ack`] commits
//! the acknowledged message's offset + 1 synchronously ([`Subscription::ack_all`]: past the last
//! message of each partition of a batch, in one commit), and the
//! [`crate::consumer::ConsumerRunner`] acknowledges only after the handler's transaction (with
//! its idempotency record) committed. A member that dies before acknowledging leaves the offset
//! where it was, and the partition's next owner receives the message again. Offsets are per
//! partition: acknowledge in delivery order (the runner does), since committing a later offset
//! also covers the earlier messages of that partition. `max.poll.interval.ms` defaults to 30
//! minutes here because a handler's retries (up to ~17 minutes for reminders) run between two
//! polls; a shorter value would make the member leave its group mid-retry.
//!
//! # Topics
//!
//! Physical topic names come from [`crate::TopicNames`] (a prefix and per-topic overrides) as
//! for every backend. [`KafkaBus::ensure_topics`] and [`create_topics`] (behind
//! `taskflow topics create`) create missing topics with the AdminClient and leave existing ones
//! alone; a [`TopicSpec`]'s partitions and retention win, and zero values fall back to
//! [`KafkaSettings::partitions`] and [`KafkaSettings::retention_ms`].
//! [`KafkaSettings::topic_specs`] lists every logical topic and its dead-letter topic with those
//! defaults. Production runs `task-events` with 12 partitions (the per-user ordering unit is the
//! partition, so partitions bound consumer parallelism), the other topics with the default 3,
//! and a replication factor of 3 on multi-broker clusters.
//!
//! # Security: SASL and TLS
//!
//! Local brokers use `PLAINTEXT`. Managed clusters (Redpanda Cloud, Confluent Cloud) use
//! `security_protocol = "SASL_SSL"` with `sasl_mechanism = "SCRAM-SHA-256"` (Redpanda) or
//! `"PLAIN"` (Confluent, API key and secret as username and password). TLS uses the system's CA
//! certificates; anything else librdkafka understands (`ssl.ca.location`, `linger.ms`,
//! `compression.type`, …) goes into [`KafkaSettings::extra`], which is applied last and so
//! overrides this module's defaults.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use futures::FutureExt as _;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{CommitMode, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, Message as _, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use taskflow_domain::events::{Topic, dead_letter_topic};

use crate::{BusError, EventBus, Message, Received, Subscription, TopicNames, TopicSpec};

/// The record header carrying [`Message::id`].
pub const MESSAGE_ID_HEADER: &str = "taskflow-msg-id";
/// The record header naming the payload's format.
pub const CONTENT_TYPE_HEADER: &str = "content-type";
/// The payload's format: a CloudEvent in structured JSON mode.
pub const CONTENT_TYPE: &str = "application/cloudevents+json";

/// How long `publish` waits for room in librdkafka's local queue before giving up.
const QUEUE_FULL_TIMEOUT: Duration = Duration::from_secs(30);
/// How long admin requests (topic creation) may take.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Connection and topic settings of the Kafka backend (`[bus.kafka]` in the configuration).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaSettings {
    /// Bootstrap brokers, comma-separated `host:port` (`127.0.0.1:9092`).
    pub brokers: String,
    /// Client id reported to the brokers (shows up in their logs and quotas).
    pub client_id: String,
    /// `security.protocol`: `PLAINTEXT` (default when unset), `SSL`, `SASL_PLAINTEXT` or
    /// `SASL_SSL`.
    pub security_protocol: Option<String>,
    /// `sasl.mechanisms`: `PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512`.
    pub sasl_mechanism: Option<String>,
    /// SASL username (Confluent Cloud: the API key).
    pub sasl_username: Option<String>,
    /// SASL password (Confluent Cloud: the API secret); redacted in `Debug`.
    pub sasl_password: Option<String>,
    /// Partitions of topics created without an explicit count (3; production gives
    /// `task-events` 12).
    pub partitions: i32,
    /// Replication factor of created topics (1 for a single broker; 3 in production).
    pub replication_factor: i32,
    /// `retention.ms` of created topics without an explicit retention (7 days; -1 keeps
    /// messages forever).
    pub retention_ms: i64,
    /// Further librdkafka properties, applied last to producers, consumers and admin clients.
    pub extra: BTreeMap<String, String>,
}

impl Default for KafkaSettings {
    fn default() -> Self {
        Self {
            brokers: "127.0.0.1:9092".into(),
            client_id: "taskflow".into(),
            security_protocol: None,
            sasl_mechanism: None,
            sasl_username: None,
            sasl_password: None,
            partitions: 3,
            replication_factor: 1,
            retention_ms: 7 * 24 * 3600 * 1000,
            extra: BTreeMap::new(),
        }
    }
}

impl std::fmt::Debug for KafkaSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSettings")
            .field("brokers", &self.brokers)
            .field("client_id", &self.client_id)
            .field("security_protocol", &self.security_protocol)
            .field("sasl_mechanism", &self.sasl_mechanism)
            .field("sasl_username", &self.sasl_username)
            .field(
                "sasl_password",
                &self.sasl_password.as_ref().map(|_| "<redacted>"),
            )
            .field("partitions", &self.partitions)
            .field("replication_factor", &self.replication_factor)
            .field("retention_ms", &self.retention_ms)
            .field("extra", &self.extra)
            .finish()
    }
}

impl KafkaSettings {
    /// Specs for every logical topic and its dead-letter topic under `names`, with this
    /// configuration's default partitions and retention.
    pub fn topic_specs(&self, names: &TopicNames) -> Vec<TopicSpec> {
        let partitions = u32::try_from(self.partitions).unwrap_or(1).max(1);
        Topic::ALL
            .iter()
            .flat_map(|topic| [topic.name().to_owned(), dead_letter_topic(topic.name())])
            .map(|logical| TopicSpec {
                name: names.physical(&logical),
                partitions,
                retention: Duration::from_millis(u64::try_from(self.retention_ms).unwrap_or(0)),
            })
            .collect()
    }

    fn validate(&self) -> Result<(), BusError> {
        if self.brokers.trim().is_empty() {
            return Err(BusError::Config("kafka: `brokers` is empty".into()));
        }
        if self.partitions < 1 {
            return Err(BusError::Config(format!(
                "kafka: `partitions` must be at least 1, not {}",
                self.partitions
            )));
        }
        if self.replication_factor < 1 {
            return Err(BusError::Config(format!(
                "kafka: `replication_factor` must be at least 1, not {}",
                self.replication_factor
            )));
        }
        Ok(())
    }

    /// The connection part every client shares; `defaults` come before `extra`.
    fn client_config(&self, defaults: &[(&str, &str)]) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.brokers)
            .set("client.id", &self.client_id);
        if let Some(protocol) = &self.security_protocol {
            config.set("security.protocol", protocol);
        }
        if let Some(mechanism) = &self.sasl_mechanism {
            config.set("sasl.mechanisms", mechanism);
        }
        if let Some(username) = &self.sasl_username {
            config.set("sasl.username", username);
        }
        if let Some(password) = &self.sasl_password {
            config.set("sasl.password", password);
        }
        for (key, value) in defaults {
            config.set(*key, *value);
        }
        for (key, value) in &self.extra {
            config.set(key, value);
        }
        config.set_log_level(RDKafkaLogLevel::Warning);
        config
    }

    fn producer(&self) -> Result<FutureProducer<TracingContext>, BusError> {
        self.client_config(&[
            ("enable.idempotence", "true"),
            ("acks", "all"),
            ("partitioner", "murmur2_random"),
            ("message.timeout.ms", "30000"),
        ])
        .create_with_context(TracingContext)
        .map_err(|error| BusError::Config(format!("kafka producer: {error}")))
    }
}

/// Forwards librdkafka's logs and errors to `tracing`.
#[derive(Clone, Copy, Debug, Default)]
struct TracingContext;

impl ClientContext for TracingContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => {
                tracing::error!(target: "librdkafka", facility, "{message}");
            }
            RDKafkaLogLevel::Warning => tracing::warn!(target: "librdkafka", facility, "{message}"),
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::info!(target: "librdkafka", facility, "{message}");
            }
            RDKafkaLogLevel::Debug => tracing::debug!(target: "librdkafka", facility, "{message}"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(target: "librdkafka", %error, reason, "kafka client error");
    }
}

impl ConsumerContext for TracingContext {}

/// Whether a topic was created or already existed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicOutcome {
    /// Physical name.
    pub name: String,
    /// `true` when this call created it, `false` when it existed already.
    pub created: bool,
}

/// Creates the topics in `topics` that do not exist yet (partitions, replication factor and
/// `retention.ms`); existing topics are left as they are. For `taskflow topics create`.
pub async fn create_topics(
    settings: &KafkaSettings,
    topics: &[TopicSpec],
) -> Result<Vec<TopicOutcome>, BusError> {
    settings.validate()?;
    if topics.is_empty() {
        return Ok(Vec::new());
    }
    let admin: AdminClient<TracingContext> = settings
        .client_config(&[])
        .create_with_context(TracingContext)
        .map_err(|error| BusError::Config(format!("kafka admin client: {error}")))?;
    let specs: Vec<(String, i32, String)> = topics
        .iter()
        .map(|spec| {
            let partitions = if spec.partitions == 0 {
                settings.partitions
            } else {
                i32::try_from(spec.partitions).map_err(|_| {
                    BusError::Config(format!("topic {}: too many partitions", spec.name))
                })?
            };
            let retention = if spec.retention.is_zero() {
                settings.retention_ms
            } else {
                i64::try_from(spec.retention.as_millis()).unwrap_or(i64::MAX)
            };
            Ok((spec.name.clone(), partitions, retention.to_string()))
        })
        .collect::<Result<_, BusError>>()?;
    let new_topics: Vec<NewTopic<'_>> = specs
        .iter()
        .map(|(name, partitions, retention)| {
            NewTopic::new(
                name,
                *partitions,
                TopicReplication::Fixed(settings.replication_factor),
            )
            .set("retention.ms", retention)
        })
        .collect();
    let options = AdminOptions::new()
        .request_timeout(Some(ADMIN_TIMEOUT))
        .operation_timeout(Some(ADMIN_TIMEOUT));
    let results = admin
        .create_topics(&new_topics, &options)
        .await
        .map_err(|error| BusError::Unavailable(format!("kafka create topics: {error}")))?;
    let mut outcomes = Vec::with_capacity(results.len());
    for result in results {
        match result {
            Ok(name) => {
                tracing::info!(topic = %name, "created kafka topic");
                outcomes.push(TopicOutcome {
                    name,
                    created: true,
                });
            }
            Err((name, RDKafkaErrorCode::TopicAlreadyExists)) => outcomes.push(TopicOutcome {
                name,
                created: false,
            }),
            Err((name, code)) => {
                let error = format!("kafka: cannot create topic {name}: {code}");
                return Err(match code {
                    RDKafkaErrorCode::InvalidPartitions
                    | RDKafkaErrorCode::InvalidReplicationFactor
                    | RDKafkaErrorCode::InvalidTopic
                    | RDKafkaErrorCode::InvalidConfig
                    | RDKafkaErrorCode::TopicAuthorizationFailed
                    | RDKafkaErrorCode::ClusterAuthorizationFailed
                    | RDKafkaErrorCode::PolicyViolation => BusError::Config(error),
                    _ => BusError::Unavailable(error),
                });
            }
        }
    }
    Ok(outcomes)
}

/// The Kafka event bus: an idempotent producer shared by all publishers, and one consumer-group
/// member per subscription.
pub struct KafkaBus {
    settings: KafkaSettings,
    producer: RwLock<Arc<FutureProducer<TracingContext>>>,
}

impl std::fmt::Debug for KafkaBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaBus")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl KafkaBus {
    /// A bus for `settings`. Creating it does not connect: brokers are contacted on first use.
    pub fn new(settings: KafkaSettings) -> Result<Self, BusError> {
        settings.validate()?;
        let producer = settings.producer()?;
        Ok(Self {
            settings,
            producer: RwLock::new(Arc::new(producer)),
        })
    }

    /// The settings this bus was made with.
    pub fn settings(&self) -> &KafkaSettings {
        &self.settings
    }

    fn current_producer(&self) -> Arc<FutureProducer<TracingContext>> {
        match self.producer.read() {
            Ok(producer) => producer.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// An idempotent producer that hit a fatal error (e.g. an out-of-order sequence) refuses
    /// every further message: replace it so the relay's next attempt can succeed.
    fn replace_if_fatal(&self, producer: &Arc<FutureProducer<TracingContext>>) {
        let Some((code, reason)) = producer.client().fatal_error() else {
            return;
        };
        tracing::error!(%code, reason, "kafka producer hit a fatal error; creating a new one");
        match self.settings.producer() {
            Ok(fresh) => {
                let mut slot = match self.producer.write() {
                    Ok(slot) => slot,
                    Err(poisoned) => poisoned.into_inner(),
                };
                if Arc::ptr_eq(&slot, producer) {
                    *slot = Arc::new(fresh);
                }
            }
            Err(error) => tracing::error!(%error, "cannot create a new kafka producer"),
        }
    }
}

#[async_trait]
impl EventBus for KafkaBus {
    fn name(&self) -> &'static str {
        "kafka"
    }

    async fn publish(&self, messages: &[Message]) -> Result<(), BusError> {
        let producer = self.current_producer();
        let mut deliveries = Vec::with_capacity(messages.len());
        let mut failure = None;
        'messages: for message in messages {
            let headers = OwnedHeaders::new_with_capacity(2)
                .insert(Header {
                    key: MESSAGE_ID_HEADER,
                    value: Some(message.id.as_str()),
                })
                .insert(Header {
                    key: CONTENT_TYPE_HEADER,
                    value: Some(CONTENT_TYPE),
                });
            let mut record = FutureRecord::to(&message.topic)
                .key(message.key.as_bytes())
                .payload(message.payload.as_slice())
                .headers(headers);
            let started = tokio::time::Instant::now();
            loop {
                match producer.send_result(record) {
                    Ok(delivery) => {
                        deliveries.push(delivery);
                        break;
                    }
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), returned))
                        if started.elapsed() < QUEUE_FULL_TIMEOUT =>
                    {
                        record = returned;
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    Err((error, _)) => {
                        failure = Some(format!("kafka: cannot send to {}: {error}", message.topic));
                        break 'messages;
                    }
                }
            }
        }
        // Await every delivery report, in order, even after a failure: they all settle within
        // `message.timeout.ms`, and the first error is the one worth reporting.
        for delivery in deliveries {
            let error = match delivery.await {
                Ok(Ok(_)) => continue,
                Ok(Err((error, message))) => {
                    format!("kafka: delivery to {} failed: {error}", message.topic())
                }
                Err(_canceled) => "kafka: producer shut down before delivery".to_owned(),
            };
            failure.get_or_insert(error);
        }
        match failure {
            None => Ok(()),
            Some(error) => {
                self.replace_if_fatal(&producer);
                Err(BusError::Unavailable(error))
            }
        }
    }

    async fn subscribe(&self, topic: &str, group: &str) -> Result<Box<dyn Subscription>, BusError> {
        let consumer: StreamConsumer<TracingContext> = self
            .settings
            .client_config(&[
                ("group.id", group),
                ("enable.auto.commit", "false"),
                ("enable.auto.offset.store", "false"),
                ("auto.offset.reset", "earliest"),
                ("max.poll.interval.ms", "1800000"),
            ])
            .create_with_context(TracingContext)
            .map_err(|error| BusError::Config(format!("kafka consumer: {error}")))?;
        consumer.subscribe(&[topic]).map_err(|error| {
            BusError::Unavailable(format!("kafka: cannot subscribe to {topic}: {error}"))
        })?;
        Ok(Box::new(KafkaSubscription {
            consumer: Some(Arc::new(consumer)),
            committed: BTreeMap::new(),
        }))
    }

    async fn ensure_topics(&self, topics: &[TopicSpec]) -> Result<(), BusError> {
        create_topics(&self.settings, topics).await.map(|_| ())
    }
}

/// Where a received message sits, to commit past it.
#[derive(Debug)]
struct KafkaToken {
    topic: String,
    partition: i32,
    offset: i64,
}

/// One consumer-group member.
struct KafkaSubscription {
    /// `None` only while dropping.
    consumer: Option<Arc<StreamConsumer<TracingContext>>>,
    /// The offsets this member committed, to skip commits that would not advance.
    committed: BTreeMap<(String, i32), i64>,
}

impl KafkaSubscription {
    fn consumer(&self) -> Result<&Arc<StreamConsumer<TracingContext>>, BusError> {
        self.consumer.as_ref().ok_or(BusError::Closed)
    }
}

/// A consumed record as the consumer runner sees it.
fn received(record: &impl rdkafka::message::Message) -> Received {
    let topic = record.topic().to_owned();
    let (partition, offset) = (record.partition(), record.offset());
    let id = record
        .headers()
        .and_then(|headers| {
            headers
                .iter()
                .find(|header| header.key == MESSAGE_ID_HEADER)
                .and_then(|header| header.value)
                .map(|value| String::from_utf8_lossy(value).into_owned())
        })
        .unwrap_or_else(|| format!("{topic}:{partition}:{offset}"));
    let message = Message {
        key: record
            .key()
            .map(|key| String::from_utf8_lossy(key).into_owned())
            .unwrap_or_default(),
        id,
        payload: record.payload().map(<[u8]>::to_vec).unwrap_or_default(),
        topic: topic.clone(),
    };
    Received {
        message,
        redeliveries: 0,
        token: Box::new(KafkaToken {
            topic,
            partition,
            offset,
        }),
    }
}

#[async_trait]
impl Subscription for KafkaSubscription {
    async fn next(&mut self) -> Result<Received, BusError> {
        let consumer = self.consumer()?;
        loop {
            // Convert inside the match so the borrowed record never lives across an await.
            let outcome = match consumer.recv().await {
                Ok(record) => Ok(received(&record)),
                Err(error) => Err(error),
            };
            match outcome {
                Ok(received) => return Ok(received),
                Err(KafkaError::MessageConsumptionFatal(code)) => {
                    return Err(BusError::Unavailable(format!(
                        "kafka consumer failed: {code}"
                    )));
                }
                Err(error) => {
                    // librdkafka recovers from the rest by itself (reconnects, topic metadata
                    // appearing, rebalances); report and keep polling.
                    tracing::warn!(%error, "kafka consumer error");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    async fn next_batch(&mut self, max: usize) -> Result<Vec<Received>, BusError> {
        let mut batch = vec![self.next().await?];
        let consumer = self.consumer()?;
        // Records librdkafka already fetched: taking one is immediate (and a poll that is not
        // ready takes nothing, so nothing is lost by not waiting for it).
        while batch.len() < max {
            match consumer.recv().now_or_never() {
                Some(Ok(record)) => batch.push(received(&record)),
                _ => break,
            }
        }
        Ok(batch)
    }

    async fn ack(&mut self, received: Received) -> Result<(), BusError> {
        self.ack_all(vec![received]).await
    }

    /// Commits past the last message of each partition in one synchronous commit.
    async fn ack_all(&mut self, received: Vec<Received>) -> Result<(), BusError> {
        let mut next: BTreeMap<(String, i32), i64> = BTreeMap::new();
        for one in received {
            let token = one.token.downcast::<KafkaToken>().map_err(|_| {
                BusError::Config("kafka: acknowledged a message from another backend".into())
            })?;
            let entry = next.entry((token.topic, token.partition)).or_insert(0);
            *entry = (*entry).max(token.offset + 1);
        }
        next.retain(|key, offset| self.committed.get(key).is_none_or(|done| *done < *offset));
        if next.is_empty() {
            return Ok(());
        }
        let mut offsets = TopicPartitionList::new();
        for ((topic, partition), offset) in &next {
            offsets
                .add_partition_offset(topic, *partition, Offset::Offset(*offset))
                .map_err(|error| BusError::Config(format!("kafka: bad offset: {error}")))?;
        }
        let consumer = self.consumer()?.clone();
        tokio::task::spawn_blocking(move || consumer.commit(&offsets, CommitMode::Sync))
            .await
            .map_err(|error| BusError::Unavailable(format!("kafka commit task: {error}")))?
            .map_err(|error| BusError::Unavailable(format!("kafka: cannot commit: {error}")))?;
        self.committed.extend(next);
        Ok(())
    }
}

impl Drop for KafkaSubscription {
    fn drop(&mut self) {
        // Closing leaves the group (so the partitions move on at once) and blocks until done:
        // do it off the async worker threads when there is a runtime.
        if let Some(consumer) = self.consumer.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn_blocking(move || drop(consumer));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_redacts_the_password() {
        let settings = KafkaSettings {
            sasl_password: Some("hunter2".into()),
            ..KafkaSettings::default()
        };
        let debug = format!("{settings:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(debug.contains("<redacted>"), "{debug}");
    }

    #[test]
    fn settings_deserialize_with_defaults_and_reject_unknown_fields() {
        let settings: KafkaSettings =
            serde_json::from_str(r#"{"brokers": "k1:9092,k2:9092", "extra": {"linger.ms": "5"}}"#)
                .unwrap();
        assert_eq!(settings.brokers, "k1:9092,k2:9092");
        assert_eq!(settings.partitions, 3);
        assert_eq!(
            settings.extra.get("linger.ms").map(String::as_str),
            Some("5")
        );
        assert!(serde_json::from_str::<KafkaSettings>(r#"{"broker": "x"}"#).is_err());
    }

    #[test]
    fn topic_specs_cover_every_topic_and_its_dead_letters() {
        let names = TopicNames {
            prefix: "t-".into(),
            ..TopicNames::default()
        };
        let specs = KafkaSettings::default().topic_specs(&names);
        assert_eq!(specs.len(), 8);
        assert!(
            specs
                .iter()
                .any(|s| s.name == "t-task-events" && s.partitions == 3)
        );
        assert!(specs.iter().any(|s| s.name == "t-task-events.dlq"));
        assert!(
            specs
                .iter()
                .all(|s| s.retention == Duration::from_secs(7 * 24 * 3600))
        );
    }

    #[test]
    fn invalid_settings_are_configuration_errors() {
        let settings = KafkaSettings {
            brokers: " ".into(),
            ..KafkaSettings::default()
        };
        assert!(matches!(KafkaBus::new(settings), Err(BusError::Config(_))));
    }
}
