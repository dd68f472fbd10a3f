//! The NATS JetStream backend.
//!
//! # Layout
//!
//! Every topic gets its own stream, named `{stream_prefix}_{topic}` with every character
//! outside `[A-Za-z0-9_-]` replaced by `_` (topic `task-events.dlq` with the default prefix is
//! stream `TASKFLOW_task-events_dlq`). A stream captures exactly one subject, the topic name
//! itself, never a wildcard, so the stream of `task-events` does not capture `task-events.dlq`.
//! Should two topics sanitize to the same stream name, the second one is refused with
//! [`BusError::Config`] rather than taking the stream over. Streams use file storage, limits
//! retention with `max_age` and a duplicate window; [`EventBus::ensure_topics`] creates or
//! updates them, and publishing or subscribing creates a missing stream with the settings'
//! `max_age` (so consumers may start before the relay and dead-letter topics need no setup).
//!
//! # Publishing
//!
//! [`NatsBus::publish`] sends every message with header `Taskflow-Id` set to the message id and
//! header `Taskflow-Key` with the ordering key, pipelined: all messages are sent first, then
//! the acknowledgements are awaited in order, and the call succeeds only once every one of
//! them arrived. [`NatsBus::send`](EventBus::send) returns once the messages are queued, in
//! order, on the client's connection, so the relay sends its next batches while the server
//! acknowledges earlier ones. One connection and one stream per topic keep publish order,
//! across batches too. Should one message be lost or refused while later ones were stored (a
//! reconnect between them, a limit reached), re-sending it puts it after them: the relay's
//! `batches_in_flight = 1` limits that to one batch.
//!
//! # Publishing once
//!
//! The relay sends an outbox row again when it cannot know whether the broker stored it: after
//! a crash between the acknowledgement and the "published" mark, after a publish that failed or
//! timed out, after a failed mark. An outbox row keeps its message id across re-sends, and the
//! bus skips a message whose id it knows the stream holds: before its first publish to a topic,
//! and again after a publish to it failed, it reads the ids of the stream's newest
//! [`NatsSettings::resume_lookback`] messages (headers only, through an ordered consumer of
//! its own), and it remembers that many of the ids it stored since. So every event is stored
//! once as long as what the relay re-sends is among the stream's newest `resume_lookback`
//! messages (the relay has a few batches of 500 unmarked at a time; the default looks back
//! 10 000). Beyond that (or with 0), a re-sent row is stored again, which costs consumers a
//! redundant delivery: they are idempotent. A process whose relay lost the lead to another
//! and takes it back reads the streams' ends again too ([`EventBus::lead_taken`]): the other
//! leader may have stored rows it did not mark.
//!
//! JetStream's own de-duplication (`Nats-Msg-Id`) is not used: the server keeps every id of
//! the duplicate window in a map, and at 10 000 events/s that doubled the commit-to-consume p99
//! of `taskflow bench events` on a 2-core machine (NATS 2.9). Messages stored by earlier
//! versions carry their id in `Nats-Msg-Id`, which is still read. The streams' duplicate
//! window setting remains for other publishers that set that header.
//!
//! # Consuming
//!
//! A consumer group is a durable pull consumer named after the group (sanitized like stream
//! names), with explicit acknowledgement, delivery of everything from the start of the stream,
//! `ack_wait` and `max_deliver` from the settings. Each [`Subscription`] is one member: it
//! pulls up to [`NatsSettings::prefetch`] messages at a time and hands them out in stream
//! order (all that are at hand to the consumer runner's batches). JetStream spreads a group's
//! messages over its members, so ordering by key holds per member: run one member per group
//! where a key's order matters across the whole group. Redeliveries come first, so a message
//! that was not acknowledged may overtake later ones.
//!
//! Messages a member holds (prefetched or handed out and not yet acknowledged) are kept alive
//! with "in progress" signals every third of `ack_wait`, so a handler that retries for longer
//! than `ack_wait` does not see its message redelivered elsewhere meanwhile. A [`Received`]
//! dropped without acknowledgement is no longer kept alive (JetStream redelivers it after
//! `ack_wait`); dropping the subscription gives every message it still holds back at once
//! (negative acknowledgement), so another member gets them without waiting.
//! [`Subscription::ack`] waits for the server to confirm the acknowledgement ("double ack");
//! [`Subscription::ack_all`] sends a batch's acknowledgements together and waits for every
//! confirmation.
//!
//! Broker errors never panic: the client reconnects by itself, and while the broker is away
//! `publish`, `next` and `ack` return [`BusError::Unavailable`] (after at most a few seconds),
//! on which the relay backs off and the consumer runner resubscribes.
//!
//! # Durability (operators, read this)
//!
//! By default a NATS server acknowledges a JetStream publish once the message is written, but
//! before it is synced to disk (`sync_interval` defaults to two minutes). Jepsen's analysis of
//! NATS 2.12.1 showed acknowledged messages lost after power failures (a process crash alone
//! keeps them: the operating system still has the data). The relay marks outbox rows published
//! on that acknowledgement, so a lost message is not re-sent. For deployments that must survive
//! power loss or a kernel crash set `jetstream { sync_interval: always }` in the server
//! configuration (slower publishes), and run three replicas (`replicas = 3`) in a cluster.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_nats::header::{HeaderName, IntoHeaderName as _, NATS_MESSAGE_ID};
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, PullConsumer, pull};
use async_nats::jetstream::context::{GetStreamErrorKind, Publish};
use async_nats::jetstream::stream::{Config as StreamConfig, RetentionPolicy, StorageType};
use async_nats::jetstream::{self, ErrorCode};
use async_nats::{Client, ConnectErrorKind, ConnectOptions, Subject};
use async_trait::async_trait;
use futures::StreamExt as _;
use serde::{Deserialize, Serialize};

use crate::{BusError, EventBus, Message, PendingPublish, Received, Subscription, TopicSpec};

/// Header carrying the message's ordering key.
pub const KEY_HEADER: &str = "Taskflow-Key";
/// Header carrying [`Message::id`]: how a resuming publisher recognizes what a stream already
/// holds (see the module documentation, "Publishing once").
pub const ID_HEADER: &str = "Taskflow-Id";

/// [`NatsSettings::resume_lookback`] by default: well beyond what the relay has sent and not
/// yet marked published at any time (a few batches of 500).
pub const DEFAULT_RESUME_LOOKBACK: u64 = 10_000;

/// Highest [`NatsSettings::resume_lookback`]: the bus keeps that many ids per topic in memory.
pub const MAX_RESUME_LOOKBACK: u64 = 1_000_000;

/// How long one pull waits for a message before pulling again.
const PULL_WAIT: Duration = Duration::from_secs(5);
/// Longest wait for any single reply from the server (pull, fetch, acknowledgement, API).
const REPLY_TIMEOUT: Duration = Duration::from_secs(5);

/// How long the server keeps a transient group's consumer ([`EventBus::subscribe_transient`])
/// after its last pull: a realtime feeder's group, left behind by every process that stopped.
/// Long enough that a member that is alive never loses it (it pulls every few seconds, and
/// resubscribes should the consumer be gone).
pub const TRANSIENT_GROUP_EXPIRY: Duration = Duration::from_secs(3600);

/// Connection and stream settings for the NATS JetStream backend.
#[derive(Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NatsSettings {
    /// Server URL(s), comma-separated, e.g. `nats://127.0.0.1:4222`.
    pub url: String,
    /// Prepended (with `_`) to every stream name, e.g. `TASKFLOW_task-events`.
    pub stream_prefix: String,
    /// Stream replicas (1 for a single server, 3 for a durable cluster).
    pub replicas: usize,
    /// How long streams keep messages, in seconds, unless a [`TopicSpec`] says otherwise.
    pub max_age_secs: u64,
    /// The streams' JetStream de-duplication window in seconds, for publishers that set
    /// `Nats-Msg-Id` (TaskFlow de-duplicates by itself: see [`Self::resume_lookback`]).
    pub duplicate_window_secs: u64,
    /// Seconds a delivered message may stay unacknowledged before JetStream redelivers it
    /// (held messages are kept alive; see the module documentation).
    pub ack_wait_secs: u64,
    /// Deliveries before JetStream gives up on a message; -1 is unlimited (the consumer runner
    /// retries and dead-letters by itself, so keep it unlimited).
    pub max_deliver: i64,
    /// Messages one subscription pulls at a time (at least 1).
    pub prefetch: usize,
    /// Newest messages of a topic's stream whose ids a publisher reads before it publishes to
    /// it for the first time, and again after a failed publish, so that it skips what the
    /// stream already holds; it also remembers that many of what it stored since. 0 turns
    /// this off (a row re-sent after a crash is then stored twice; consumers are idempotent).
    pub resume_lookback: u64,
    /// Path of a NATS credentials file (JWT and NKey seed), if the server requires one.
    pub credentials_file: Option<String>,
    /// User name for user/password authentication.
    pub user: Option<String>,
    /// Password for user/password authentication (never printed by `Debug`).
    pub password: Option<String>,
}

impl Default for NatsSettings {
    fn default() -> Self {
        Self {
            url: "nats://127.0.0.1:4222".to_owned(),
            stream_prefix: "TASKFLOW".to_owned(),
            replicas: 1,
            max_age_secs: 7 * 24 * 3600,
            duplicate_window_secs: 120,
            ack_wait_secs: 30,
            max_deliver: -1,
            prefetch: 128,
            resume_lookback: DEFAULT_RESUME_LOOKBACK,
            credentials_file: None,
            user: None,
            password: None,
        }
    }
}

impl std::fmt::Debug for NatsSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsSettings")
            .field("url", &self.url)
            .field("stream_prefix", &self.stream_prefix)
            .field("replicas", &self.replicas)
            .field("max_age_secs", &self.max_age_secs)
            .field("duplicate_window_secs", &self.duplicate_window_secs)
            .field("ack_wait_secs", &self.ack_wait_secs)
            .field("max_deliver", &self.max_deliver)
            .field("prefetch", &self.prefetch)
            .field("resume_lookback", &self.resume_lookback)
            .field("credentials_file", &self.credentials_file)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

fn unavailable(what: &str, error: impl std::fmt::Display) -> BusError {
    BusError::Unavailable(format!("nats: {what}: {error}"))
}

fn stream_not_found(kind: &GetStreamErrorKind) -> bool {
    matches!(kind, GetStreamErrorKind::JetStream(inner) if inner.error_code() == ErrorCode::STREAM_NOT_FOUND)
}

/// `name` with every character outside `[A-Za-z0-9_-]` replaced by `_`.
fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Topics are used as literal subjects: non-empty dot-separated tokens without wildcards or
/// whitespace.
fn check_topic(topic: &str) -> Result<(), BusError> {
    let valid = !topic.is_empty()
        && topic.split('.').all(|token| {
            !token.is_empty()
                && token != "*"
                && token != ">"
                && !token.chars().any(|c| c.is_whitespace() || c.is_control())
        });
    if valid {
        Ok(())
    } else {
        Err(BusError::Config(format!(
            "nats: topic {topic:?} is not a literal subject"
        )))
    }
}

/// The NATS JetStream bus.
pub struct NatsBus {
    client: Client,
    jetstream: jetstream::Context,
    settings: NatsSettings,
    /// Topics whose stream is known to exist (publishing skips the lookup).
    ensured: Arc<Mutex<HashSet<String>>>,
    /// What this bus knows each topic's stream holds; a topic missing here is read from its
    /// stream before the next publish to it.
    stored: Arc<Mutex<HashMap<String, StoredIds>>>,
}

/// The ids of the newest messages of one stream, as far as a publisher knows them: read from
/// the stream's end, then those it stored since, at most [`NatsSettings::resume_lookback`].
#[derive(Debug, Default)]
struct StoredIds {
    /// Oldest first.
    order: VecDeque<String>,
    ids: HashSet<String>,
}

impl StoredIds {
    fn contains(&self, id: &str) -> bool {
        self.ids.contains(id)
    }

    /// Notes `id` as stored, forgetting the oldest beyond `limit`.
    fn note(&mut self, id: String, limit: u64) {
        if limit == 0 || !self.ids.insert(id.clone()) {
            return;
        }
        self.order.push_back(id);
        while self.order.len() as u64 > limit {
            if let Some(oldest) = self.order.pop_front() {
                self.ids.remove(&oldest);
            }
        }
    }
}

impl std::fmt::Debug for NatsBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsBus")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl NatsBus {
    /// Connects to the server(s) in `settings.url`. The client reconnects by itself later on;
    /// this first connection must succeed ([`BusError::Unavailable`] otherwise).
    pub async fn connect(settings: &NatsSettings) -> Result<Self, BusError> {
        if settings.resume_lookback > MAX_RESUME_LOOKBACK {
            return Err(BusError::Config(format!(
                "nats: resume_lookback {} is above {MAX_RESUME_LOOKBACK}",
                settings.resume_lookback
            )));
        }
        let mut options = ConnectOptions::new()
            .name("taskflow")
            .connection_timeout(Duration::from_secs(5))
            .request_timeout(Some(REPLY_TIMEOUT));
        if let Some(path) = &settings.credentials_file {
            options = options.credentials_file(path).await.map_err(|error| {
                BusError::Config(format!("nats: credentials file {path}: {error}"))
            })?;
        }
        match (&settings.user, &settings.password) {
            (Some(user), password) => {
                options =
                    options.user_and_password(user.clone(), password.clone().unwrap_or_default());
            }
            (None, Some(_)) => {
                return Err(BusError::Config("nats: a password needs a user".into()));
            }
            (None, None) => {}
        }
        let client = options
            .connect(settings.url.as_str())
            .await
            .map_err(|error| match error.kind() {
                ConnectErrorKind::ServerParse => {
                    BusError::Config(format!("nats: url {:?}: {error}", settings.url))
                }
                _ => unavailable(&format!("connecting to {}", settings.url), error),
            })?;
        let mut jetstream = jetstream::new(client.clone());
        jetstream.set_timeout(REPLY_TIMEOUT);
        Ok(Self {
            client,
            jetstream,
            settings: settings.clone(),
            ensured: Arc::new(Mutex::new(HashSet::new())),
            stored: Arc::default(),
        })
    }

    /// The name of `topic`'s stream.
    pub fn stream_name(&self, topic: &str) -> String {
        sanitize(&format!("{}_{topic}", self.settings.stream_prefix))
    }

    /// The JetStream context (for operators' tools and tests).
    pub fn jetstream(&self) -> &jetstream::Context {
        &self.jetstream
    }

    /// Deletes `topic`'s stream with its messages and consumers (no error if it is missing).
    pub async fn delete_topic(&self, topic: &str) -> Result<(), BusError> {
        self.forget(topic);
        match self.jetstream.delete_stream(self.stream_name(topic)).await {
            Ok(_) => Ok(()),
            Err(error) if stream_not_found(&error.kind()) => Ok(()),
            Err(error) => Err(unavailable("deleting a stream", error)),
        }
    }

    /// Deletes the stream of every TaskFlow topic and of its dead-letter topic under `names`
    /// (a test's or a benchmark's own prefix), going on past failures; returns the first.
    pub async fn delete_topics(&self, names: &crate::TopicNames) -> Result<(), BusError> {
        let mut first_error = None;
        for topic in taskflow_domain::events::Topic::ALL {
            for logical in [
                topic.name().to_owned(),
                taskflow_domain::events::dead_letter_topic(topic.name()),
            ] {
                if let Err(error) = self.delete_topic(&names.physical(&logical)).await {
                    first_error.get_or_insert(error);
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    fn forget(&self, topic: &str) {
        self.ensured
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(topic);
        forget_stored(&self.stored, topic);
    }

    /// Reads the ids of the newest [`NatsSettings::resume_lookback`] messages of `topic`'s
    /// stream (headers only, through an ordered consumer of its own that the server removes).
    async fn read_stored_ids(&self, topic: &str) -> Result<StoredIds, BusError> {
        let lookback = self.settings.resume_lookback;
        let mut read = StoredIds::default();
        if lookback == 0 {
            return Ok(read);
        }
        let name = self.stream_name(topic);
        let failed = |error: &dyn std::fmt::Display| {
            unavailable(&format!("reading the end of stream {name}"), error)
        };
        let mut stream = self
            .jetstream
            .get_stream(&name)
            .await
            .map_err(|error| failed(&error))?;
        let state = stream
            .info()
            .await
            .map_err(|error| failed(&error))?
            .state
            .clone();
        if state.messages == 0 {
            return Ok(read);
        }
        let last = state.last_sequence;
        let start = state
            .first_sequence
            .max(last.saturating_sub(lookback - 1))
            .max(1);
        let consumer = stream
            .create_consumer(pull::OrderedConfig {
                deliver_policy: DeliverPolicy::ByStartSequence {
                    start_sequence: start,
                },
                headers_only: true,
                ..Default::default()
            })
            .await
            .map_err(|error| failed(&error))?;
        let mut messages = consumer.messages().await.map_err(|error| failed(&error))?;
        loop {
            let message = match tokio::time::timeout(REPLY_TIMEOUT, messages.next()).await {
                // Nothing more comes (messages at the end deleted): what was read is all there
                // is; a re-sent message it misses is stored again, never skipped wrongly.
                Err(_) | Ok(None) => {
                    tracing::warn!(stream = %name, last, "the end of the stream did not arrive; going on with what was read");
                    return Ok(read);
                }
                Ok(Some(Err(error))) => return Err(failed(&error)),
                Ok(Some(Ok(message))) => message,
            };
            let info = message.info().map_err(|error| failed(&error))?;
            let (sequence, pending) = (info.stream_sequence, info.pending);
            if let Some(id) = message_id(&message) {
                read.note(id, lookback);
            }
            if sequence >= last || pending == 0 {
                return Ok(read);
            }
        }
    }

    /// Reads what `topics`' streams hold, for each of them this bus does not know yet.
    async fn learn_stored(&self, topics: &[&str]) -> Result<(), BusError> {
        for topic in topics {
            let known = self
                .stored
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .contains_key(*topic);
            if !known {
                let read = self.read_stored_ids(topic).await?;
                self.stored
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .entry((*topic).to_owned())
                    .or_insert(read);
            }
        }
        Ok(())
    }

    fn stream_config(&self, topic: &str, max_age: Duration) -> StreamConfig {
        StreamConfig {
            name: self.stream_name(topic),
            subjects: vec![topic.to_owned()],
            retention: RetentionPolicy::Limits,
            storage: StorageType::File,
            num_replicas: self.settings.replicas.max(1),
            max_age,
            duplicate_window: Duration::from_secs(self.settings.duplicate_window_secs),
            ..StreamConfig::default()
        }
    }

    /// Makes sure `topic`'s stream exists; with `update`, also that it has that `max_age` and
    /// the settings' duplicate window and replicas.
    async fn ensure_stream(
        &self,
        topic: &str,
        max_age: Duration,
        update: bool,
    ) -> Result<jetstream::stream::Stream, BusError> {
        check_topic(topic)?;
        let wanted = self.stream_config(topic, max_age);
        let stream = match self.jetstream.get_stream(&wanted.name).await {
            Ok(stream) => stream,
            Err(error) => match error.kind() {
                kind if stream_not_found(&kind) => {
                    match self.jetstream.create_stream(wanted.clone()).await {
                        Ok(stream) => stream,
                        // Created concurrently by someone else: use theirs (checked below).
                        Err(create_error) => match self.jetstream.get_stream(&wanted.name).await {
                            Ok(stream) => stream,
                            Err(_) => {
                                return Err(unavailable(
                                    &format!("creating stream {}", wanted.name),
                                    create_error,
                                ));
                            }
                        },
                    }
                }
                GetStreamErrorKind::InvalidStreamName | GetStreamErrorKind::EmptyName => {
                    return Err(BusError::Config(format!(
                        "nats: invalid stream name {:?}",
                        wanted.name
                    )));
                }
                _ => {
                    return Err(unavailable(
                        &format!("looking up stream {}", wanted.name),
                        error,
                    ));
                }
            },
        };
        let current = &stream.cached_info().config;
        if current.subjects != wanted.subjects {
            return Err(BusError::Config(format!(
                "nats: stream {} holds subjects {:?}, not {topic:?} (two topics map to one stream name)",
                wanted.name, current.subjects
            )));
        }
        let stream = if update
            && (current.max_age != wanted.max_age
                || current.duplicate_window != wanted.duplicate_window
                || current.num_replicas != wanted.num_replicas)
        {
            let mut config = current.clone();
            config.max_age = wanted.max_age;
            config.duplicate_window = wanted.duplicate_window;
            config.num_replicas = wanted.num_replicas;
            self.jetstream
                .update_stream(config)
                .await
                .map_err(|error| unavailable(&format!("updating stream {}", wanted.name), error))?;
            self.jetstream
                .get_stream(&wanted.name)
                .await
                .map_err(|error| {
                    unavailable(&format!("looking up stream {}", wanted.name), error)
                })?
        } else {
            stream
        };
        self.ensured
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(topic.to_owned());
        Ok(stream)
    }

    /// Joins durable consumer `group` on `topic`'s stream; `inactive_threshold` above zero lets
    /// the server delete the consumer once nobody pulled from it that long.
    async fn join(
        &self,
        topic: &str,
        group: &str,
        inactive_threshold: Duration,
    ) -> Result<Box<dyn Subscription>, BusError> {
        if group.is_empty() {
            return Err(BusError::Config("nats: empty consumer group".into()));
        }
        let stream = self
            .ensure_stream(topic, self.default_max_age(), false)
            .await?;
        let durable = sanitize(group);
        let config = pull::Config {
            durable_name: Some(durable.clone()),
            ack_policy: AckPolicy::Explicit,
            deliver_policy: DeliverPolicy::All,
            ack_wait: Duration::from_secs(self.settings.ack_wait_secs.max(1)),
            max_deliver: self.settings.max_deliver,
            inactive_threshold,
            ..pull::Config::default()
        };
        let consumer: PullConsumer = stream
            .get_or_create_consumer(&durable, config)
            .await
            .map_err(|error| {
                unavailable(
                    &format!("consumer {durable} on {}", self.stream_name(topic)),
                    error,
                )
            })?;
        let held: Held = Arc::new(Mutex::new(HashMap::new()));
        let interval = Duration::from_secs(self.settings.ack_wait_secs.max(1)) / 3;
        let keepalive = tokio::spawn(keep_alive(self.client.clone(), held.clone(), interval));
        Ok(Box::new(NatsSubscription {
            client: self.client.clone(),
            consumer,
            topic: topic.to_owned(),
            prefetch: self.settings.prefetch.max(1),
            buffer: VecDeque::new(),
            held,
            keepalive,
        }))
    }

    fn default_max_age(&self) -> Duration {
        Duration::from_secs(self.settings.max_age_secs)
    }
}

#[async_trait]
impl EventBus for NatsBus {
    fn name(&self) -> &'static str {
        "nats"
    }

    async fn publish(&self, messages: &[Message]) -> Result<(), BusError> {
        self.send(messages).await?.await
    }

    /// Sends every message (in order, on the one connection) and returns a future that awaits
    /// their acknowledgements in order.
    async fn send(&self, messages: &[Message]) -> Result<PendingPublish, BusError> {
        // Streams first (dead-letter topics and topics nobody set up are created on demand).
        let mut topics: Vec<&str> = messages.iter().map(|m| m.topic.as_str()).collect();
        topics.sort_unstable();
        topics.dedup();
        let missing: Vec<&str> = {
            let ensured = self.ensured.lock().unwrap_or_else(PoisonError::into_inner);
            topics
                .iter()
                .copied()
                .filter(|t| !ensured.contains(*t))
                .collect()
        };
        for topic in missing {
            self.ensure_stream(topic, self.default_max_age(), false)
                .await?;
        }
        self.learn_stored(&topics).await?;
        // Header values cannot hold line breaks; refuse before sending anything.
        if let Some(bad) = messages
            .iter()
            .find(|m| m.key.contains(['\r', '\n']) || m.id.contains(['\r', '\n']))
        {
            return Err(BusError::Config(format!(
                "nats: message {:?} has a line break in its key or id",
                bad.id
            )));
        }
        let fresh: Vec<&Message> = {
            let stored = self.stored.lock().unwrap_or_else(PoisonError::into_inner);
            messages
                .iter()
                .filter(|m| !stored.get(&m.topic).is_some_and(|s| s.contains(&m.id)))
                .collect()
        };
        let mut acks = Vec::with_capacity(fresh.len());
        for message in fresh {
            let publish = Publish::build()
                .payload(message.payload.clone().into())
                .header(ID_HEADER, message.id.as_str())
                .header(KEY_HEADER, message.key.as_str());
            let ack = match self
                .jetstream
                .send_publish(message.topic.clone(), publish)
                .await
            {
                Ok(ack) => ack,
                Err(error) => {
                    // What was sent before may be stored or not: read the stream next time.
                    forget_stored(&self.stored, &message.topic);
                    return Err(unavailable("publishing", error));
                }
            };
            acks.push((message.topic.clone(), message.id.clone(), ack));
        }
        let (ensured, stored) = (self.ensured.clone(), self.stored.clone());
        let lookback = self.settings.resume_lookback;
        Ok(Box::pin(async move {
            for (topic, id, ack) in acks {
                match ack.await {
                    Ok(_) => {
                        if let Some(known) = stored
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .get_mut(&topic)
                        {
                            known.note(id, lookback);
                        }
                    }
                    Err(error) => {
                        if matches!(
                            error.kind(),
                            jetstream::context::PublishErrorKind::StreamNotFound
                        ) {
                            // Someone deleted the stream: create it again on the next attempt.
                            ensured
                                .lock()
                                .unwrap_or_else(PoisonError::into_inner)
                                .remove(&topic);
                        }
                        // A message that timed out may be stored all the same: the next
                        // publish to this topic reads what the stream holds first.
                        forget_stored(&stored, &topic);
                        return Err(unavailable(&format!("publishing to {topic}"), error));
                    }
                }
            }
            Ok(())
        }))
    }

    async fn subscribe(&self, topic: &str, group: &str) -> Result<Box<dyn Subscription>, BusError> {
        self.join(topic, group, Duration::ZERO).await
    }

    async fn subscribe_transient(
        &self,
        topic: &str,
        group: &str,
    ) -> Result<Box<dyn Subscription>, BusError> {
        self.join(topic, group, TRANSIENT_GROUP_EXPIRY).await
    }

    async fn ensure_topics(&self, topics: &[TopicSpec]) -> Result<(), BusError> {
        for spec in topics {
            let max_age = if spec.retention.is_zero() {
                self.default_max_age()
            } else {
                spec.retention
            };
            self.ensure_stream(&spec.name, max_age, true).await?;
        }
        Ok(())
    }

    /// Forgets every stream's ids: another leader may have stored rows it did not mark, so
    /// each stream's end is read again before the next publish to it.
    fn lead_taken(&self) {
        self.stored
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }
}

/// Drops what `stored` knows of `topic`'s stream, so that it is read again before the next
/// publish to it.
fn forget_stored(stored: &Mutex<HashMap<String, StoredIds>>, topic: &str) {
    stored
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .remove(topic);
}

/// The [`Message::id`] a stored message carries: [`ID_HEADER`], or JetStream's `Nats-Msg-Id`
/// for messages published by earlier versions.
fn message_id(message: &async_nats::Message) -> Option<String> {
    let headers = message.headers.as_ref()?;
    headers
        .get(ID_HEADER)
        .or_else(|| headers.get(NATS_MESSAGE_ID))
        .map(|value| value.as_str().to_owned())
}

/// A message a member holds: prefetched, or handed out and not acknowledged yet.
struct Hold {
    reply: Subject,
    /// Handed out and dropped without acknowledgement: no longer kept alive.
    abandoned: bool,
}

/// Held messages by stream sequence.
type Held = Arc<Mutex<HashMap<u64, Hold>>>;

fn lock(held: &Held) -> std::sync::MutexGuard<'_, HashMap<u64, Hold>> {
    held.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Tells the server every held message is still being worked on, every `interval`.
async fn keep_alive(client: Client, held: Held, interval: Duration) {
    loop {
        tokio::time::sleep(interval).await;
        let replies: Vec<Subject> = lock(&held)
            .values()
            .filter(|h| !h.abandoned)
            .map(|h| h.reply.clone())
            .collect();
        for reply in replies {
            // Best effort: a lost signal only risks a redelivery, which consumers tolerate.
            let _ = client.publish(reply, "+WPI".into()).await;
        }
    }
}

/// The acknowledgement handle in [`Received::token`].
struct NatsToken {
    sequence: u64,
    reply: Subject,
    held: Held,
    settled: bool,
}

impl Drop for NatsToken {
    fn drop(&mut self) {
        if !self.settled
            && let Some(hold) = lock(&self.held).get_mut(&self.sequence)
        {
            hold.abandoned = true;
        }
    }
}

struct NatsSubscription {
    client: Client,
    consumer: PullConsumer,
    topic: String,
    prefetch: usize,
    /// Pulled, not handed out yet (all of them also in `held`).
    buffer: VecDeque<jetstream::Message>,
    held: Held,
    keepalive: tokio::task::JoinHandle<()>,
}

impl NatsSubscription {
    fn hold(&mut self, message: jetstream::Message) -> Result<(), BusError> {
        let sequence = message
            .info()
            .map_err(|error| unavailable("reading message metadata", error))?
            .stream_sequence;
        let reply = message.reply.clone().ok_or_else(|| {
            BusError::Unavailable("nats: delivered message without a reply subject".into())
        })?;
        lock(&self.held).insert(
            sequence,
            Hold {
                reply,
                abandoned: false,
            },
        );
        self.buffer.push_back(message);
        Ok(())
    }

    /// Takes what is ready up to `prefetch` (one round trip, the common case under load); when
    /// nothing is, waits up to [`PULL_WAIT`] for one message and then takes whatever else is
    /// ready. Returns with an empty buffer when nothing arrived.
    async fn fill(&mut self) -> Result<(), BusError> {
        self.take_ready(self.prefetch).await?;
        if !self.buffer.is_empty() {
            return Ok(());
        }
        let wait = PULL_WAIT + REPLY_TIMEOUT;
        let mut first = tokio::time::timeout(
            wait,
            self.consumer
                .batch()
                .max_messages(1)
                .expires(PULL_WAIT)
                .messages(),
        )
        .await
        .map_err(|_| BusError::Unavailable("nats: pull request timed out".into()))?
        .map_err(|error| unavailable("pulling", error))?;
        match tokio::time::timeout(wait, first.next()).await {
            Err(_) => {
                return Err(BusError::Unavailable(
                    "nats: no reply to a pull request".into(),
                ));
            }
            Ok(None) => return Ok(()),
            Ok(Some(Err(error))) => return Err(unavailable("pulling", error)),
            Ok(Some(Ok(message))) => self.hold(message)?,
        }
        if self.prefetch > 1 {
            // A failure here leaves the rest to the next pull.
            let _ = self.take_ready(self.prefetch - 1).await;
        }
        Ok(())
    }

    /// Fetches up to `max` messages that are ready now, without waiting for more (a failed
    /// request takes nothing and is reported).
    async fn take_ready(&mut self, max: usize) -> Result<(), BusError> {
        let mut ready = tokio::time::timeout(
            REPLY_TIMEOUT,
            self.consumer.fetch().max_messages(max).messages(),
        )
        .await
        .map_err(|_| BusError::Unavailable("nats: fetch request timed out".into()))?
        .map_err(|error| unavailable("fetching", error))?;
        while let Ok(Some(Ok(message))) = tokio::time::timeout(REPLY_TIMEOUT, ready.next()).await {
            self.hold(message)?;
        }
        Ok(())
    }

    fn hand_out(&self, message: jetstream::Message) -> Result<Received, BusError> {
        let info = message
            .info()
            .map_err(|error| unavailable("reading message metadata", error))?;
        let (sequence, delivered) = (info.stream_sequence, info.delivered);
        let header = |name: HeaderName| {
            message
                .headers
                .as_ref()
                .and_then(|h| h.get(name))
                .map(|v| v.as_str().to_owned())
                .unwrap_or_default()
        };
        let (key, id) = (
            header(KEY_HEADER.into_header_name()),
            message_id(&message).unwrap_or_default(),
        );
        let reply = message.reply.clone().ok_or_else(|| {
            BusError::Unavailable("nats: delivered message without a reply subject".into())
        })?;
        Ok(Received {
            message: Message {
                topic: self.topic.clone(),
                key,
                id,
                payload: message.payload.to_vec(),
            },
            redeliveries: u32::try_from(delivered.saturating_sub(1).max(0)).unwrap_or(u32::MAX),
            token: Box::new(NatsToken {
                sequence,
                reply,
                held: self.held.clone(),
                settled: false,
            }),
        })
    }
}

#[async_trait]
impl Subscription for NatsSubscription {
    async fn next(&mut self) -> Result<Received, BusError> {
        loop {
            if let Some(message) = self.buffer.pop_front() {
                return self.hand_out(message);
            }
            self.fill().await?;
        }
    }

    async fn next_batch(&mut self, max: usize) -> Result<Vec<Received>, BusError> {
        let mut batch = vec![self.next().await?];
        while batch.len() < max
            && let Some(message) = self.buffer.pop_front()
        {
            batch.push(self.hand_out(message)?);
        }
        Ok(batch)
    }

    async fn ack(&mut self, received: Received) -> Result<(), BusError> {
        self.ack_all(vec![received]).await
    }

    /// Sends every acknowledgement request at once and waits for all the confirmations: one
    /// round trip for the batch instead of one per message.
    async fn ack_all(&mut self, received: Vec<Received>) -> Result<(), BusError> {
        let mut tokens = Vec::with_capacity(received.len());
        for one in received {
            tokens.push(one.token.downcast::<NatsToken>().map_err(|_| {
                BusError::Config("nats: acknowledging a message from another backend".into())
            })?);
        }
        // Requests, so the server confirms it recorded each acknowledgement.
        let confirmations = futures::future::join_all(tokens.iter().map(|token| {
            tokio::time::timeout(
                REPLY_TIMEOUT,
                self.client.request(token.reply.clone(), "+ACK".into()),
            )
        }))
        .await;
        let mut outcome = Ok(());
        for (token, confirmation) in tokens.iter_mut().zip(confirmations) {
            match confirmation {
                Ok(Ok(_)) => {
                    lock(&self.held).remove(&token.sequence);
                    token.settled = true;
                }
                Ok(Err(error)) => outcome = Err(unavailable("acknowledging", error)),
                Err(_) => {
                    outcome = Err(BusError::Unavailable(
                        "nats: acknowledgement not confirmed in time".into(),
                    ));
                }
            }
        }
        outcome
    }
}

impl Drop for NatsSubscription {
    fn drop(&mut self) {
        self.keepalive.abort();
        // In stream order: JetStream redelivers in the order the messages come back.
        let mut held: Vec<(u64, Hold)> = lock(&self.held).drain().collect();
        held.sort_unstable_by_key(|(sequence, _)| *sequence);
        let replies: Vec<Subject> = held.into_iter().map(|(_, hold)| hold.reply).collect();
        if replies.is_empty() {
            return;
        }
        // Give back everything this member held so another one gets it now, not after ack_wait.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let client = self.client.clone();
            runtime.spawn(async move {
                for reply in replies {
                    let _ = client.publish(reply, "-NAK".into()).await;
                }
                let _ = client.flush().await;
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_sanitized_and_topics_checked() {
        assert_eq!(
            sanitize("TASKFLOW_task-events.dlq"),
            "TASKFLOW_task-events_dlq"
        );
        assert_eq!(sanitize("a b/c*>"), "a_b_c__");
        assert!(check_topic("task-events.dlq").is_ok());
        for bad in ["", "a..b", "a.*", "a.>", "a b", ".a", "a."] {
            assert!(check_topic(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn debug_hides_the_password() {
        let settings = NatsSettings {
            user: Some("svc".into()),
            password: Some("hunter2".into()),
            ..NatsSettings::default()
        };
        let printed = format!("{settings:?}");
        assert!(!printed.contains("hunter2"), "{printed}");
        assert!(printed.contains("<redacted>"));
    }

    #[test]
    fn settings_default_and_parse() {
        let settings: NatsSettings =
            serde_json::from_str(r#"{"url": "nats://nats:4222"}"#).unwrap_or_default();
        assert_eq!(settings.url, "nats://nats:4222");
        assert_eq!(settings.stream_prefix, "TASKFLOW");
        assert_eq!(settings.max_deliver, -1);
        assert!(serde_json::from_str::<NatsSettings>(r#"{"bogus": 1}"#).is_err());
    }

    #[tokio::test]
    async fn a_lookback_beyond_the_limit_is_refused_before_connecting() {
        let settings = NatsSettings {
            // Nothing listens there: the setting is refused first.
            url: "nats://127.0.0.1:1".into(),
            resume_lookback: MAX_RESUME_LOOKBACK + 1,
            ..NatsSettings::default()
        };
        let error = NatsBus::connect(&settings).await.unwrap_err();
        assert!(
            matches!(&error, BusError::Config(message) if message.contains("resume_lookback")),
            "{error}"
        );
    }

    #[test]
    fn stored_ids_keep_the_newest_up_to_the_limit() {
        let mut stored = StoredIds::default();
        for id in ["a", "b", "a", "c"] {
            stored.note(id.to_owned(), 2);
        }
        assert!(!stored.contains("a"));
        assert!(stored.contains("b") && stored.contains("c"));
        assert_eq!(stored.order, ["b", "c"]);
        let mut off = StoredIds::default();
        off.note("a".to_owned(), 0);
        assert!(!off.contains("a"));
    }
}
