//! Sustained task writes through the outbox to a bus: events per second and commit-to-consume
//! latency. One measurement for every backend, so their figures compare: `taskflow bench
//! events` runs it on the in-process, NATS and Kafka buses, the `dapr_events` bench binary of
//! this crate on the Dapr bus against the local sidecar double.
//!
//! Each write creates a task through [`Store::insert_task`] with its two events
//! (`task.created` on `task-events`, `task.changed` on `task-updates`) and counts as
//! acknowledged when that call returns, i.e. once its transaction is durable. The relay
//! publishes the outbox to `bus`; a consumer of `task-updates` notes when each task's update
//! arrives. Latency is arrival − acknowledgement.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::Utc;
use taskflow_domain::events::{CloudEvent, TaskEventKind, Topic, task_events};
use taskflow_domain::{Clock, NewTask, SystemClock, Task, TimeZone, Title, User, UserId};
use taskflow_store::Store;
use tokio_util::sync::CancellationToken;

use crate::consumer::{ConsumerRunner, EventHandler, HandlerError, RetryPolicy};
use crate::relay::{OutboxRelay, RelaySettings};
use crate::{EventBus, TopicNames};

/// Concurrent writers in the throughput phase.
pub const WRITERS: u32 = 32;

/// How long each round writes.
pub const ROUND: Duration = Duration::from_secs(2);

/// Highest paced rate of the latency phase (the goals are stated at it).
pub const LATENCY_RATE_CAP: f64 = 10_000.0;

/// What one measurement found (each figure the median of its rounds).
#[derive(Clone, Debug)]
pub struct Figures {
    /// Events per second committed by [`WRITERS`] writers going as fast as they can.
    pub events_per_second: f64,
    /// The throughput of every round.
    pub events_per_second_rounds: Vec<f64>,
    /// The paced rate of the latency rounds: 80 % of the throughput, at most [`LATENCY_RATE_CAP`].
    pub latency_rate: f64,
    /// Median over rounds of the commit-to-consume p50, in milliseconds.
    pub p50_ms: f64,
    /// Median over rounds of the commit-to-consume p99, in milliseconds.
    pub p99_ms: f64,
    /// Acknowledged writes of the latency rounds whose update never arrived (must be 0).
    pub unconsumed: usize,
    /// Median over rounds of the p99 of the first leg, acknowledgement to the broker having
    /// accepted the update (the relay's share), in milliseconds; the rest is the broker and
    /// the consumer.
    pub publish_p99_ms: f64,
}

/// The median of `values` (sorted in place); NaN when empty.
pub fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

/// The `p`-th percentile of `sorted` (nearest rank); zero when empty.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * (sorted.len() as f64 - 1.0)).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// Milliseconds of `d`.
pub fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Acknowledgement, publication and arrival instants per task id.
#[derive(Default)]
struct LatencyRecorder {
    committed: Mutex<HashMap<String, Instant>>,
    published: Mutex<HashMap<String, Instant>>,
    consumed: Mutex<HashMap<String, Instant>>,
}

impl LatencyRecorder {
    fn clear(&self) {
        if let (Ok(mut c), Ok(mut p), Ok(mut d)) = (
            self.committed.lock(),
            self.published.lock(),
            self.consumed.lock(),
        ) {
            c.clear();
            p.clear();
            d.clear();
        }
    }

    /// Acknowledgement-to-publication latencies of this round's writes, sorted.
    fn publish_samples(&self) -> Vec<Duration> {
        let (Ok(committed), Ok(published)) = (self.committed.lock(), self.published.lock()) else {
            return Vec::new();
        };
        let mut samples: Vec<Duration> = committed
            .iter()
            .filter_map(|(id, at)| {
                published
                    .get(id)
                    .map(|done| done.saturating_duration_since(*at))
            })
            .collect();
        samples.sort();
        samples
    }

    /// The latency of every acknowledged write whose update arrived, sorted, and how many
    /// never arrived. A consumer often sees an update before the writer's task has taken its
    /// acknowledgement (the commit wakes both); such samples count as zero.
    fn samples(&self) -> (Vec<Duration>, usize) {
        let (Ok(committed), Ok(consumed)) = (self.committed.lock(), self.consumed.lock()) else {
            return (Vec::new(), 0);
        };
        let mut samples: Vec<Duration> = committed
            .iter()
            .filter_map(|(id, at)| {
                consumed
                    .get(id)
                    .map(|seen| seen.saturating_duration_since(*at))
            })
            .collect();
        samples.sort();
        let unconsumed = committed.len() - samples.len();
        (samples, unconsumed)
    }
}

/// The measured bus, noting when the broker accepted each task update.
struct RecordingBus {
    inner: Arc<dyn EventBus>,
    updates_topic: String,
    recorder: Arc<LatencyRecorder>,
}

#[async_trait]
impl EventBus for RecordingBus {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    async fn publish(&self, messages: &[crate::Message]) -> Result<(), crate::BusError> {
        self.send(messages).await?.await
    }

    /// Sends through the inner bus; each update's acceptance is noted when the broker
    /// acknowledged it.
    async fn send(
        &self,
        messages: &[crate::Message],
    ) -> Result<crate::PendingPublish, crate::BusError> {
        let accepted = self.inner.send(messages).await?;
        let task_ids: Vec<String> = messages
            .iter()
            .filter(|m| m.topic == self.updates_topic)
            .filter_map(|message| {
                let event = serde_json::from_slice::<serde_json::Value>(&message.payload).ok()?;
                event["data"]["task_id"].as_str().map(str::to_owned)
            })
            .collect();
        let recorder = self.recorder.clone();
        // Awaited by a task of its own, so the instant is when the broker answered, not when
        // the relay next looked.
        let noted = tokio::spawn(async move {
            accepted.await?;
            let at = Instant::now();
            if let Ok(mut published) = recorder.published.lock() {
                for id in task_ids {
                    published.entry(id).or_insert(at);
                }
            }
            Ok(())
        });
        Ok(Box::pin(async move {
            noted.await.map_err(|error| {
                crate::BusError::Unavailable(format!("noting an acceptance stopped: {error}"))
            })?
        }))
    }

    async fn subscribe(
        &self,
        topic: &str,
        group: &str,
    ) -> Result<Box<dyn crate::Subscription>, crate::BusError> {
        self.inner.subscribe(topic, group).await
    }

    async fn subscribe_transient(
        &self,
        topic: &str,
        group: &str,
    ) -> Result<Box<dyn crate::Subscription>, crate::BusError> {
        self.inner.subscribe_transient(topic, group).await
    }

    fn consumers_read_outbox(&self) -> bool {
        self.inner.consumers_read_outbox()
    }

    async fn ensure_topics(&self, topics: &[crate::TopicSpec]) -> Result<(), crate::BusError> {
        self.inner.ensure_topics(topics).await
    }

    fn lead_taken(&self) {
        self.inner.lead_taken();
    }
}

#[async_trait]
impl EventHandler for LatencyRecorder {
    async fn handle(&self, event: &CloudEvent) -> Result<(), HandlerError> {
        let seen = Instant::now();
        if let (Some(id), Ok(mut consumed)) = (event.data["task_id"].as_str(), self.consumed.lock())
        {
            consumed.insert(id.to_owned(), seen);
        }
        Ok(())
    }
}

/// A failed measurement.
pub type BenchError = Box<dyn std::error::Error + Send + Sync>;

/// Measures `rounds` throughput rounds and `rounds` latency rounds of task writes into `store`
/// (migrated; `users` users are created and written to in turn, so the events carry that many
/// partition keys) relayed to `bus` under `names`. `started` is called once the relay and the
/// consumer run (the Dapr bench attaches its sidecar double then).
pub async fn measure(
    store: Arc<dyn Store>,
    bus: Arc<dyn EventBus>,
    names: TopicNames,
    rounds: usize,
    users: usize,
    started: impl AsyncFnOnce(),
) -> Result<Figures, BenchError> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let shutdown = CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    let recorder = Arc::new(LatencyRecorder::default());
    let recording: Arc<dyn EventBus> = Arc::new(RecordingBus {
        inner: bus.clone(),
        updates_topic: names.physical(Topic::TaskUpdates.name()),
        recorder: recorder.clone(),
    });
    tokio::spawn(
        OutboxRelay::new(
            store.clone(),
            recording,
            names.clone(),
            clock.clone(),
            RelaySettings::default(),
        )
        .run(shutdown.clone()),
    );
    tokio::spawn(
        ConsumerRunner::new(
            "bench",
            Topic::TaskUpdates.name(),
            bus.clone(),
            store.clone(),
            names.clone(),
            clock,
            recorder.clone(),
            RetryPolicy::task_updates(),
        )
        .run(shutdown.clone()),
    );
    started().await;
    let mut user_ids = Vec::with_capacity(users.max(1));
    for _ in 0..users.max(1) {
        let user = User {
            id: UserId::new(),
            email: taskflow_domain::Email::parse(&format!("bench-{}@example.com", UserId::new()))?,
            display_name: None,
            time_zone: TimeZone::UTC,
            is_admin: false,
            created_at: Utc::now(),
        };
        store.create_user(&user, "").await?;
        user_ids.push(user.id);
    }
    let user_ids = Arc::new(user_ids);
    let counter = Arc::new(AtomicU64::new(0));
    let write = {
        let (store, recorder, counter) = (store.clone(), recorder.clone(), counter.clone());
        move || {
            let (store, recorder) = (store.clone(), recorder.clone());
            let i = counter.fetch_add(1, Ordering::Relaxed);
            // Round robin over the users (the partition keys).
            let user_id = user_ids[usize::try_from(i).unwrap_or(0) % user_ids.len()];
            async move {
                let now = Utc::now();
                let new = NewTask {
                    title: Title::parse(&format!("bench {i}"))?,
                    description: Default::default(),
                    priority: Default::default(),
                    tags: Default::default(),
                    due_at: None,
                    time_zone: None,
                    recurrence: None,
                    reminders: Default::default(),
                };
                let task = Task::create(user_id, TimeZone::UTC, new, now)?;
                let events = task_events(TaskEventKind::Created, &task, now, None);
                store.insert_task(&task, &events).await?;
                if let Ok(mut committed) = recorder.committed.lock() {
                    committed.insert(task.id.to_string(), Instant::now());
                }
                Ok::<(), BenchError>(())
            }
        }
    };

    // Throughput: the writers go as fast as their acknowledgements allow.
    let mut rates = Vec::new();
    for _ in 0..rounds {
        let started = Instant::now();
        let mut writers = tokio::task::JoinSet::new();
        for _ in 0..WRITERS {
            let write = write.clone();
            writers.spawn(async move {
                let mut written = 0u64;
                while started.elapsed() < ROUND {
                    write().await?;
                    written += 1;
                }
                Ok::<u64, BenchError>(written)
            });
        }
        let mut writes = 0;
        while let Some(result) = writers.join_next().await {
            writes += result??;
        }
        rates.push((writes * 2) as f64 / started.elapsed().as_secs_f64());
    }
    let events_per_second = median(&mut rates.clone());

    // Latency at a paced rate the bus keeps up with.
    let latency_rate = (events_per_second * 0.8).min(LATENCY_RATE_CAP);
    let writes_per_second = (latency_rate / 2.0).max(1.0);
    let (mut p50s, mut p99s, mut publish_p99s) = (Vec::new(), Vec::new(), Vec::new());
    let mut unconsumed = 0;
    for _ in 0..rounds {
        // Let the consumer drain what earlier rounds wrote (a bus slower than the writers
        // leaves a backlog), then measure only this round.
        let deadline = Instant::now() + Duration::from_secs(30);
        while recorder.samples().1 > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        recorder.clear();
        let interval = Duration::from_secs_f64(f64::from(WRITERS) / writes_per_second);
        let started = Instant::now();
        let mut writers = tokio::task::JoinSet::new();
        for w in 0..WRITERS {
            let write = write.clone();
            writers.spawn(async move {
                let mut next = tokio::time::Instant::now()
                    + interval.mul_f64(f64::from(w) / f64::from(WRITERS));
                while started.elapsed() < ROUND {
                    tokio::time::sleep_until(next).await;
                    next += interval;
                    write().await?;
                }
                Ok::<(), BenchError>(())
            });
        }
        while let Some(result) = writers.join_next().await {
            result??;
        }
        // Wait for the round's last updates (bounded: a lost update shows as unconsumed).
        let deadline = Instant::now() + Duration::from_secs(5);
        let (samples, missing) = loop {
            let (samples, missing) = recorder.samples();
            if missing == 0 || Instant::now() > deadline {
                break (samples, missing);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        unconsumed = unconsumed.max(missing);
        p50s.push(millis(percentile(&samples, 50.0)));
        p99s.push(millis(percentile(&samples, 99.0)));
        publish_p99s.push(millis(percentile(&recorder.publish_samples(), 99.0)));
    }
    // Let the relay catch up before it is stopped, so the bus got every event.
    let deadline = Instant::now() + Duration::from_secs(10);
    while store.outbox_backlog().await?.unpublished > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(Figures {
        events_per_second,
        events_per_second_rounds: rates,
        latency_rate: writes_per_second * 2.0,
        p50_ms: median(&mut p50s),
        p99_ms: median(&mut p99s),
        unconsumed,
        publish_p99_ms: median(&mut publish_p99s),
    })
}
