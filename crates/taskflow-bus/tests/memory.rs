//! The conformance stories on the in-process bus (the outbox is its log).
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use taskflow_bus::backends::memory::MemoryBus;
use taskflow_bus::relay::RelaySettings;
use taskflow_bus::{BusError, EventBus, TopicNames};
use taskflow_domain::events::{CloudEvent, OutgoingEvent};
use taskflow_store::Store;
use taskflow_store::sqlite::{SqliteSettings, SqliteStore};
use tokio_util::sync::CancellationToken;

async fn store() -> Arc<dyn Store> {
    let dir = std::env::temp_dir().join(format!("taskflow-bus-{}", uuid::Uuid::now_v7()));
    let store = SqliteStore::connect(&SqliteSettings::new(format!(
        "sqlite://{}/bus.db",
        dir.display()
    )))
    .await
    .unwrap();
    store.migrate().await.unwrap();
    Arc::new(store)
}

fn as_outgoing(message: &taskflow_bus::Message) -> OutgoingEvent {
    let data: serde_json::Value = serde_json::from_slice(&message.payload).unwrap();
    let mut event = CloudEvent::new(
        "story.message",
        None,
        taskflow_domain::UserId::new(),
        chrono::Utc::now(),
        None,
        data,
    );
    event.partitionkey = message.key.clone();
    OutgoingEvent {
        topic: message.topic.clone(),
        event,
    }
}

#[tokio::test]
async fn memory_bus_passes_the_delivery_story() {
    let store = store().await;
    let bus = MemoryBus::new(store.clone(), TopicNames::default());
    let topic = format!("story-{}", uuid::Uuid::now_v7().simple());
    let writer = store.clone();
    taskflow_bus::conformance::run(&bus, &topic, |messages| {
        let writer = writer.clone();
        async move {
            let events: Vec<OutgoingEvent> = messages.iter().map(as_outgoing).collect();
            writer.enqueue_events(&events).await.unwrap();
        }
    })
    .await;
}

#[tokio::test]
async fn memory_bus_passes_the_consumer_story() {
    let store = store().await;
    let bus: Arc<dyn EventBus> = Arc::new(MemoryBus::new(store.clone(), TopicNames::default()));
    let shutdown = CancellationToken::new();
    taskflow_bus::conformance::spawn_relay(
        store.clone(),
        bus.clone(),
        TopicNames::default(),
        RelaySettings::default(),
        &shutdown,
    );
    let writer = store.clone();
    taskflow_bus::conformance::run_consumer_story(
        bus,
        store.clone(),
        TopicNames::default(),
        "task-events",
        |event| {
            let writer = writer.clone();
            async move { writer.enqueue_events(&[event]).await.unwrap() }
        },
    )
    .await;
    shutdown.cancel();
    // The relay marked everything published.
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert_eq!(store.outbox_backlog().await.unwrap().unpublished, 0);
}

/// A broker stand-in that keeps what it was handed, taking a millisecond per batch.
#[derive(Default)]
struct KeepingBus {
    kept: std::sync::Mutex<Vec<taskflow_bus::Message>>,
}

#[async_trait::async_trait]
impl EventBus for KeepingBus {
    fn name(&self) -> &'static str {
        "keeping"
    }

    async fn publish(&self, messages: &[taskflow_bus::Message]) -> Result<(), BusError> {
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        self.kept.lock().unwrap().extend_from_slice(messages);
        Ok(())
    }

    async fn subscribe(
        &self,
        _topic: &str,
        _group: &str,
    ) -> Result<Box<dyn taskflow_bus::Subscription>, BusError> {
        Err(BusError::Config("nothing to subscribe to".into()))
    }
}

/// The running relay marks each batch while it publishes the next: no row may go out twice
/// for that, none may be left behind, and each key keeps its order.
#[tokio::test]
async fn the_running_relay_publishes_every_row_once_in_order_while_writes_go_on() {
    const WRITERS: usize = 4;
    const EACH: usize = 300;
    let store = store().await;
    let bus = Arc::new(KeepingBus::default());
    let shutdown = CancellationToken::new();
    let relaying = taskflow_bus::conformance::spawn_relay(
        store.clone(),
        bus.clone(),
        TopicNames::default(),
        RelaySettings {
            batch_size: 50,
            ..RelaySettings::default()
        },
        &shutdown,
    );
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let store = store.clone();
        writers.push(tokio::spawn(async move {
            for n in 0..EACH {
                let message = taskflow_bus::Message {
                    topic: "task-events".into(),
                    key: format!("key-{w}"),
                    id: String::new(),
                    payload: serde_json::to_vec(&serde_json::json!({ "n": n })).unwrap(),
                };
                store
                    .enqueue_events(&[as_outgoing(&message)])
                    .await
                    .unwrap();
            }
        }));
    }
    for writer in writers {
        writer.await.unwrap();
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while bus.kept.lock().unwrap().len() < WRITERS * EACH && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    shutdown.cancel();
    relaying.await.unwrap();

    let kept = bus.kept.lock().unwrap().clone();
    assert_eq!(kept.len(), WRITERS * EACH, "every row once");
    let mut by_key: std::collections::HashMap<String, Vec<u64>> = Default::default();
    for message in &kept {
        let event: serde_json::Value = serde_json::from_slice(&message.payload).unwrap();
        by_key
            .entry(message.key.clone())
            .or_default()
            .push(event["data"]["n"].as_u64().unwrap());
    }
    let in_order: Vec<u64> = (0..EACH as u64).collect();
    assert_eq!(by_key.len(), WRITERS);
    assert!(by_key.values().all(|ns| ns == &in_order));
    // The last mark was written before the relay stopped.
    assert_eq!(store.outbox_backlog().await.unwrap().unpublished, 0);
}
