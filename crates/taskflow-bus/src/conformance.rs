//! One behaviour story every [`EventBus`] backend must pass (tests only).
//!
//! It checks: messages published with one key arrive in order; each consumer group gets every
//! message once while acknowledged; an unacknowledged message is delivered again to a new
//! member of the group; separate groups each see every message.

use std::time::Duration;

use crate::relay::{OutboxRelay, RelaySettings};
use crate::{EventBus, Message, TopicNames};

fn message(topic: &str, key: &str, n: usize) -> Message {
    Message {
        topic: topic.to_owned(),
        key: key.to_owned(),
        id: format!("{key}-{n}"),
        payload: format!("{{\"key\":\"{key}\",\"n\":{n}}}").into_bytes(),
    }
}

/// The (key, n) a story message carries, whether the backend delivers it raw or wrapped in a
/// CloudEvent (the outbox-backed bus stores CloudEvents).
fn marker(payload: &[u8]) -> (String, u64) {
    let value: serde_json::Value = serde_json::from_slice(payload).expect("JSON payload");
    let body = if value.get("data").is_some() {
        &value["data"]
    } else {
        &value
    };
    (
        body["key"].as_str().expect("key").to_owned(),
        body["n"].as_u64().expect("n"),
    )
}

async fn next_payload(sub: &mut Box<dyn crate::Subscription>) -> crate::Received {
    tokio::time::timeout(Duration::from_secs(20), sub.next())
        .await
        .expect("a message within 20 s")
        .expect("subscription works")
}

/// Runs the story on `topic` (a fresh, unique topic name) of `bus`. `publish` must make the
/// messages visible to the bus (for the outbox-backed memory bus it writes outbox rows).
pub async fn run<F, Fut>(bus: &dyn EventBus, topic: &str, publish: F)
where
    F: Fn(Vec<Message>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let group = format!("g-{}", uuid::Uuid::now_v7().simple());
    let mut first = bus.subscribe(topic, &group).await.expect("subscribe");
    let mut other_group = bus
        .subscribe(topic, &format!("{group}-other"))
        .await
        .expect("subscribe");

    let batch: Vec<Message> = (0..20)
        .map(|n| message(topic, if n % 2 == 0 { "alice" } else { "bob" }, n))
        .collect();
    publish(batch.clone()).await;

    // Per-key order within the group.
    let mut seen = Vec::new();
    for _ in 0..batch.len() {
        let received = next_payload(&mut first).await;
        seen.push(marker(&received.message.payload));
        if seen.len() < 10 {
            first.ack(received).await.expect("ack");
        } else {
            // Leave the last ten unacknowledged.
            drop(received);
        }
    }
    let sent: Vec<(String, u64)> = batch.iter().map(|m| marker(&m.payload)).collect();
    for key in ["alice", "bob"] {
        let got: Vec<&(String, u64)> = seen.iter().filter(|(k, _)| k == key).collect();
        let expected: Vec<&(String, u64)> = sent.iter().filter(|(k, _)| k == key).collect();
        assert_eq!(got, expected, "{key}'s messages in publish order");
    }

    // Another group sees everything independently.
    let mut other = Vec::new();
    for _ in &batch {
        let received = next_payload(&mut other_group).await;
        other.push(marker(&received.message.payload));
        other_group.ack(received).await.expect("ack");
    }
    let mut sorted_other = other.clone();
    sorted_other.sort();
    let mut sorted_sent = sent.clone();
    sorted_sent.sort();
    assert_eq!(
        sorted_other, sorted_sent,
        "the other group sees every message"
    );

    // A new member of the first group gets the unacknowledged messages again.
    drop(first);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut again = bus.subscribe(topic, &group).await.expect("resubscribe");
    // At least once: acknowledged messages may come again too, but every unacknowledged one must.
    let mut missing: Vec<(String, u64)> = seen[10..].to_vec();
    while !missing.is_empty() {
        let received = next_payload(&mut again).await;
        let payload = marker(&received.message.payload);
        again.ack(received).await.expect("ack");
        missing.retain(|m| *m != payload);
    }
}

/// The consumer story on top of a backend: a handler that fails twice is retried and its effect
/// happens once even when the event is delivered twice; a poison event is dead-lettered after
/// the last attempt with its error and attempt count; replaying it delivers it again.
///
/// `store` must be migrated; `publish_event` must put `event` on logical topic `topic` of `bus`
/// (for external brokers: write it to the outbox and let a relay publish it, or publish directly).
pub async fn run_consumer_story<F, Fut>(
    bus: std::sync::Arc<dyn EventBus>,
    store: std::sync::Arc<dyn taskflow_store::Store>,
    names: crate::TopicNames,
    topic: &str,
    publish_event: F,
) where
    F: Fn(taskflow_domain::events::OutgoingEvent) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    use async_trait::async_trait;
    use taskflow_domain::events::{CloudEvent, OutgoingEvent};
    use taskflow_domain::{SystemClock, UserId};
    use taskflow_store::ConsumerEffect;
    use tokio_util::sync::CancellationToken;

    use crate::consumer::{ConsumerRunner, EventHandler, HandlerError, RetryPolicy};

    struct Flaky {
        store: Arc<dyn taskflow_store::Store>,
        group: String,
        calls: AtomicU32,
        effects: AtomicU32,
    }

    #[async_trait]
    impl EventHandler for Flaky {
        async fn handle(&self, event: &CloudEvent) -> Result<(), HandlerError> {
            let call = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
            if event.data["poison"] == true {
                return Err(HandlerError(format!("poison event (call {call})")));
            }
            if event.data["fail_times"]
                .as_u64()
                .is_some_and(|n| u64::from(call) <= n)
            {
                return Err(HandlerError(format!("transient failure {call}")));
            }
            let fresh = self
                .store
                .apply_once(
                    &self.group,
                    &event.id,
                    &ConsumerEffect::Nothing,
                    chrono::Utc::now(),
                )
                .await?;
            if fresh {
                self.effects.fetch_add(1, Ordering::SeqCst);
            }
            Ok(())
        }
    }

    let group = format!("story-{}", uuid::Uuid::now_v7().simple());
    let handler = Arc::new(Flaky {
        store: store.clone(),
        group: group.clone(),
        calls: AtomicU32::new(0),
        effects: AtomicU32::new(0),
    });
    let policy = RetryPolicy {
        attempts: 3,
        initial_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(100),
        jitter: 0.1,
    };
    let shutdown = CancellationToken::new();
    let runner = ConsumerRunner::new(
        group.clone(),
        topic,
        bus.clone(),
        store.clone(),
        names,
        Arc::new(SystemClock),
        handler.clone(),
        policy,
    );
    let task = tokio::spawn(runner.run(shutdown.clone()));
    let event = |data: serde_json::Value| OutgoingEvent {
        topic: topic.to_owned(),
        event: CloudEvent::new(
            "story.test",
            None,
            UserId::new(),
            chrono::Utc::now(),
            None,
            data,
        ),
    };

    let wait_for = |what: &'static str, check: Box<dyn Fn() -> bool + Send>| async move {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while !check() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };

    // Two transient failures, then success: one effect.
    let flaky = event(serde_json::json!({"fail_times": 2}));
    publish_event(flaky.clone()).await;
    let h = handler.clone();
    wait_for(
        "the flaky event to succeed",
        Box::new(move || h.effects.load(Ordering::SeqCst) == 1),
    )
    .await;
    assert_eq!(
        handler.calls.load(Ordering::SeqCst),
        3,
        "two failures and one success"
    );

    // The same event delivered again has no second effect.
    publish_event(flaky.clone()).await;
    let h = handler.clone();
    wait_for(
        "the duplicate to be handled",
        Box::new(move || h.calls.load(Ordering::SeqCst) == 4),
    )
    .await;
    assert_eq!(
        handler.effects.load(Ordering::SeqCst),
        1,
        "no second effect"
    );

    // A poison event is dead-lettered after three attempts.
    let poison = event(serde_json::json!({"poison": true}));
    publish_event(poison.clone()).await;
    let mut letter = None;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while letter.is_none() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for the dead letter"
        );
        letter = store
            .dead_letters(100)
            .await
            .expect("dead letters")
            .into_iter()
            .find(|l| l.event_id == poison.event.id && l.consumer == group);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let letter = letter.expect("dead letter");
    assert_eq!(letter.attempts, 3);
    assert!(letter.error.contains("poison event"), "{}", letter.error);
    assert_eq!(letter.topic, topic);
    assert_eq!(handler.calls.load(Ordering::SeqCst), 7);

    // Replaying re-publishes it through the outbox: the handler sees it again.
    store
        .replay_dead_letter(letter.id, chrono::Utc::now())
        .await
        .expect("replay");
    let h = handler.clone();
    wait_for(
        "the replayed event",
        Box::new(move || h.calls.load(Ordering::SeqCst) >= 8),
    )
    .await;

    shutdown.cancel();
    let _ = task.await;
}

/// Runs the outbox relay from `store` to `bus` (on the system clock) until `shutdown` is
/// cancelled; the handle finishes once the relay has stopped.
pub fn spawn_relay(
    store: std::sync::Arc<dyn taskflow_store::Store>,
    bus: std::sync::Arc<dyn EventBus>,
    names: TopicNames,
    settings: RelaySettings,
    shutdown: &tokio_util::sync::CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let relay = OutboxRelay::new(
        store,
        bus,
        names,
        std::sync::Arc::new(taskflow_domain::SystemClock),
        settings,
    );
    tokio::spawn(relay.run(shutdown.clone()))
}
