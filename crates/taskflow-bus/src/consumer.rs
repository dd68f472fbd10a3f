//! The consumer runner every consumer uses: one consumer group on one topic, handler retries
//! with exponential backoff and jitter, dead letters after the last attempt, and acknowledgement
//! only after the handler succeeded (its effects and idempotency record are committed).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rand::Rng as _;
use taskflow_domain::Clock;
use taskflow_domain::events::{CloudEvent, OutgoingEvent, dead_letter_topic};
use taskflow_store::{DeadLetter, Store};
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use crate::{BusError, EventBus, Received, TopicNames};

/// Why a handler failed; every failure is retried until the policy gives up.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct HandlerError(pub String);

impl From<taskflow_store::StoreError> for HandlerError {
    fn from(error: taskflow_store::StoreError) -> Self {
        Self(error.to_string())
    }
}

/// Reacts to events. Implementations must be idempotent: apply effects through
/// [`taskflow_store::ConsumerStore::apply_once`] (or another unique key), because an event can
/// arrive more than once.
#[async_trait]
pub trait EventHandler: Send + Sync + 'static {
    /// Handles one event.
    async fn handle(&self, event: &CloudEvent) -> Result<(), HandlerError>;
}

/// How a consumer retries.
#[derive(Clone, Debug, PartialEq)]
pub struct RetryPolicy {
    /// Attempts in all, including the first.
    pub attempts: u32,
    /// Wait after the first failure; doubles each time.
    pub initial_backoff: Duration,
    /// Longest wait.
    pub max_backoff: Duration,
    /// Random spread as a fraction of the wait (0.2 = ±20 %).
    pub jitter: f64,
}

impl RetryPolicy {
    /// The specification's policy for reminders: 10 attempts, 1 s … 512 s.
    pub fn reminders() -> Self {
        Self {
            attempts: 10,
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(512),
            jitter: 0.2,
        }
    }

    /// The specification's policy for task events: 3 attempts.
    pub fn task_events() -> Self {
        Self {
            attempts: 3,
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
            jitter: 0.2,
        }
    }

    /// The specification's policy for the update feed: 5 attempts.
    pub fn task_updates() -> Self {
        Self {
            attempts: 5,
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(10),
            jitter: 0.2,
        }
    }

    /// The wait after failed attempt `attempt` (1-based), with jitter.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let base = self
            .initial_backoff
            .saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1)))
            .min(self.max_backoff);
        let spread = self.jitter.clamp(0.0, 1.0);
        let factor = if spread > 0.0 {
            rand::rng().random_range(1.0 - spread..=1.0 + spread)
        } else {
            1.0
        };
        base.mul_f64(factor)
    }
}

/// Messages handled together: their first attempts run concurrently, so the writes of a
/// batch share group commits instead of waiting for one commit each.
pub const BATCH: usize = 64;

/// How the first attempt at a message went.
enum FirstAttempt {
    /// Handled.
    Done,
    /// The handler failed; the event and its consumer span, for the retries.
    Failed(Box<(CloudEvent, tracing::Span)>, HandlerError),
    /// Not a CloudEvent: dead-lettered without retries.
    Malformed(String),
}

/// One consumer group member: subscribe, handle, retry, dead-letter, acknowledge.
pub struct ConsumerRunner {
    /// Group name; also the consumer name in idempotency records and dead letters.
    pub group: String,
    /// Logical topic.
    pub topic: String,
    bus: Arc<dyn EventBus>,
    store: Arc<dyn Store>,
    names: TopicNames,
    clock: Arc<dyn Clock>,
    handler: Arc<dyn EventHandler>,
    policy: RetryPolicy,
    /// The group lives only as long as this process ([`EventBus::subscribe_transient`]).
    transient: bool,
    /// Pause after a batch that was not full, so the next one gathers what arrived meanwhile
    /// (see [`Self::gathering`]).
    gather: Duration,
}

impl ConsumerRunner {
    /// A runner for `group` on logical `topic`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        group: impl Into<String>,
        topic: impl Into<String>,
        bus: Arc<dyn EventBus>,
        store: Arc<dyn Store>,
        names: TopicNames,
        clock: Arc<dyn Clock>,
        handler: Arc<dyn EventHandler>,
        policy: RetryPolicy,
    ) -> Self {
        Self {
            group: group.into(),
            topic: topic.into(),
            bus,
            store,
            names,
            clock,
            handler,
            policy,
            transient: false,
            gather: Duration::ZERO,
        }
    }

    /// After handling a batch that was not full, waits `pause` before asking for the next, so
    /// a consumer that nothing waits for (the audit log) handles a steady trickle of events in
    /// a few batches (and store commits) a second instead of one per event, at the cost of up
    /// to `pause` of extra lag. Under load batches are full and it never waits.
    pub fn gathering(mut self, pause: Duration) -> Self {
        self.gather = pause;
        self
    }

    /// Marks the group as this process's own, named afresh at each start: the broker may
    /// discard it some time after the process is gone ([`EventBus::subscribe_transient`]).
    pub fn transient(mut self) -> Self {
        self.transient = true;
        self
    }

    /// Consumes until `shutdown`, resubscribing with backoff when the broker goes away.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut backoff = Duration::from_millis(200);
        while !shutdown.is_cancelled() {
            let started = tokio::time::Instant::now();
            match self.consume(&shutdown).await {
                Ok(()) => return,
                Err(error) => {
                    // A subscription that worked for a while starts the backoff over.
                    if started.elapsed() > Duration::from_secs(30) {
                        backoff = Duration::from_millis(200);
                    }
                    tracing::warn!(%error, group = %self.group, topic = %self.topic, "consumer lost its subscription; retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            }
        }
    }

    async fn consume(&self, shutdown: &CancellationToken) -> Result<(), BusError> {
        let physical = self.names.physical(&self.topic);
        let mut subscription = if self.transient {
            self.bus.subscribe_transient(&physical, &self.group).await?
        } else {
            self.bus.subscribe(&physical, &self.group).await?
        };
        loop {
            let batch = tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                batch = subscription.next_batch(BATCH) => batch?,
            };
            // Handle the batch together: handler calls start in order (so their writes queue
            // in order and share one group commit instead of one commit each); a message whose
            // first attempt failed is retried on its own, in order, before anything is acked.
            let first_attempts = futures::future::join_all(
                batch.iter().map(|received| self.process_first(received)),
            )
            .await;
            let full = batch.len() >= BATCH;
            let mut handled = Vec::with_capacity(batch.len());
            let mut interrupted = false;
            for (received, first) in batch.into_iter().zip(first_attempts) {
                let done = match first {
                    FirstAttempt::Done => true,
                    FirstAttempt::Failed(event, error) => {
                        self.retry(&received, &event, error, shutdown).await
                    }
                    FirstAttempt::Malformed(error) => {
                        self.dead_letter(&received, None, &error, 1, shutdown).await
                    }
                };
                if !done {
                    // Shut down mid-retry: this one and the rest stay unacknowledged.
                    interrupted = true;
                    break;
                }
                handled.push(received);
            }
            subscription.ack_all(handled).await?;
            if interrupted {
                return Ok(());
            }
            if !full && !self.gather.is_zero() {
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(self.gather) => {}
                }
            }
        }
    }

    /// The first attempt at one message, traced under its consumer span.
    async fn process_first(&self, received: &Received) -> FirstAttempt {
        let event: CloudEvent = match serde_json::from_slice(&received.message.payload) {
            Ok(event) => event,
            // A malformed event will never succeed: it is dead-lettered at once.
            Err(error) => return FirstAttempt::Malformed(format!("malformed event: {error}")),
        };
        let labels = self.labels();
        if let Ok(age) = (self.clock.now() - event.time).to_std() {
            metrics::histogram!("event_consume_delay_seconds", &labels).record(age.as_secs_f64());
        }
        let span = self.consume_span(&event);
        let outcome = self.handler.handle(&event).instrument(span.clone()).await;
        match outcome {
            Ok(()) => {
                metrics::counter!("events_consumed_total", &labels).increment(1);
                FirstAttempt::Done
            }
            Err(error) => {
                metrics::counter!("event_handler_failures_total", &labels).increment(1);
                FirstAttempt::Failed(Box::new((event, span)), error)
            }
        }
    }

    /// Retries a message whose first attempt failed, then dead-letters it; `false` when
    /// shutdown interrupted it.
    async fn retry(
        &self,
        received: &Received,
        failed: &(CloudEvent, tracing::Span),
        error: HandlerError,
        shutdown: &CancellationToken,
    ) -> bool {
        let (event, span) = failed;
        let labels = self.labels();
        self.handle_with_retries(received, event, &labels, Some(error), shutdown)
            .instrument(span.clone())
            .await
    }

    fn labels(&self) -> [(&'static str, String); 2] {
        [("topic", self.topic.clone()), ("group", self.group.clone())]
    }

    /// The consumer span `consume <topic> <group>` of one event: a child of the event's
    /// `traceparent`, so the consumer's work joins the trace of the request that caused it.
    fn consume_span(&self, event: &CloudEvent) -> tracing::Span {
        let span = tracing::info_span!(
            "consume",
            otel.name = %format_args!("consume {} {}", self.topic, self.group),
            otel.kind = "consumer",
            otel.status_code = tracing::field::Empty,
            messaging.system = self.bus.name(),
            messaging.destination.name = %self.topic,
            messaging.consumer.group.name = %self.group,
            messaging.message.id = %event.id,
            cloudevents.event_type = %event.event_type,
            cloudevents.event_subject = event.subject.as_deref().unwrap_or(""),
        );
        if let Some(traceparent) = &event.traceparent {
            taskflow_trace::set_remote_parent(&span, traceparent);
        }
        span
    }

    /// Runs the handler until it succeeds or the policy gives up (then dead-letters); `false`
    /// when shutdown interrupted it.
    /// `failed_first`: the first attempt already ran and failed with this error.
    async fn handle_with_retries(
        &self,
        received: &Received,
        event: &CloudEvent,
        labels: &[(&'static str, String); 2],
        mut failed_first: Option<HandlerError>,
        shutdown: &CancellationToken,
    ) -> bool {
        let mut attempt = 1;
        loop {
            // The first attempt's failure was counted where it ran.
            let outcome = match failed_first.take() {
                Some(error) => Err(error),
                None => {
                    let outcome = self.handler.handle(event).await;
                    if outcome.is_err() {
                        metrics::counter!("event_handler_failures_total", labels).increment(1);
                    }
                    outcome
                }
            };
            match outcome {
                Ok(()) => {
                    metrics::counter!("events_consumed_total", labels).increment(1);
                    return true;
                }
                Err(error) => {
                    if attempt >= self.policy.attempts {
                        tracing::Span::current().record("otel.status_code", "ERROR");
                        return self
                            .dead_letter(received, Some(event), &error.0, attempt, shutdown)
                            .await;
                    }
                    let wait = self.policy.backoff(attempt);
                    tracing::warn!(%error, group = %self.group, event_id = %event.id, attempt, retry_in_ms = wait.as_millis() as u64, "handler failed; retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => return false,
                        _ = tokio::time::sleep(wait) => {}
                    }
                    attempt += 1;
                }
            }
        }
    }

    /// Stores the dead letter; `false` when shutdown came first (the event stays unacknowledged).
    async fn dead_letter(
        &self,
        received: &Received,
        event: Option<&CloudEvent>,
        error: &str,
        attempts: u32,
        shutdown: &CancellationToken,
    ) -> bool {
        let payload = String::from_utf8_lossy(&received.message.payload).into_owned();
        let now = self.clock.now();
        let letter = DeadLetter {
            id: uuid::Uuid::now_v7(),
            consumer: self.group.clone(),
            topic: self.topic.clone(),
            event_id: event.map_or_else(|| received.message.id.clone(), |e| e.id.clone()),
            event_type: event.map_or_else(|| "unknown".to_owned(), |e| e.event_type.clone()),
            payload,
            error: error.chars().take(2000).collect(),
            attempts,
            created_at: now,
            replayed_at: None,
        };
        let notice = CloudEvent {
            specversion: "1.0".into(),
            id: uuid::Uuid::now_v7().to_string(),
            source: taskflow_domain::events::SOURCE.into(),
            event_type: "taskflow.deadletter.v1".into(),
            subject: Some(letter.event_id.clone()),
            time: now,
            datacontenttype: "application/json".into(),
            partitionkey: received.message.key.clone(),
            traceparent: event.and_then(|e| e.traceparent.clone()),
            data: serde_json::json!({
                "dead_letter_id": letter.id,
                "consumer": letter.consumer,
                "topic": letter.topic,
                "event_id": letter.event_id,
                "event_type": letter.event_type,
                "error": letter.error,
                "attempts": attempts,
                "event": serde_json::from_str::<serde_json::Value>(&letter.payload).unwrap_or(serde_json::Value::Null),
            }),
        };
        let notice = OutgoingEvent {
            topic: dead_letter_topic(&self.topic),
            event: notice,
        };
        metrics::counter!("events_dead_lettered_total", "topic" => self.topic.clone(), "group" => self.group.clone()).increment(1);
        tracing::error!(group = %self.group, event_id = %letter.event_id, attempts, error, "event dead-lettered");
        // Storing the letter must not fail silently: keep trying, the event stays unacknowledged meanwhile.
        let mut wait = Duration::from_millis(100);
        while let Err(store_error) = self.store.record_dead_letter(&letter, &notice).await {
            tracing::error!(%store_error, "cannot store dead letter; retrying");
            tokio::select! {
                _ = shutdown.cancelled() => return false,
                _ = tokio::time::sleep(wait) => {}
            }
            wait = (wait * 2).min(Duration::from_secs(10));
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_within_the_jitter() {
        let policy = RetryPolicy::reminders();
        for (attempt, base) in [(1, 1.0), (2, 2.0), (3, 4.0), (10, 512.0), (20, 512.0)] {
            let wait = policy.backoff(attempt).as_secs_f64();
            assert!(
                wait >= base * 0.8 - 1e-9 && wait <= base * 1.2 + 1e-9,
                "attempt {attempt}: {wait}"
            );
        }
        let exact = RetryPolicy {
            jitter: 0.0,
            ..RetryPolicy::task_events()
        };
        assert_eq!(exact.backoff(2), Duration::from_secs(2));
    }
}
