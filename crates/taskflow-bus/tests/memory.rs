//! The conformance stories on the in-process bus (the outbox is its log).
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use taskflow_bus::backends::memory::MemoryBus;
use taskflow_bus::relay::{OutboxRelay, RelaySettings};
use taskflow_bus::{EventBus, TopicNames};
use taskflow_domain::SystemClock;
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
    let relay = OutboxRelay::new(
        store.clone(),
        bus.clone(),
        TopicNames::default(),
        Arc::new(SystemClock),
        RelaySettings::default(),
    );
    tokio::spawn(relay.run(shutdown.clone()));
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
