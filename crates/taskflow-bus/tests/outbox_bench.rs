//! The events benchmark's measurement, run once at a tiny scale on the in-process bus: it
//! writes, relays and consumes for real and reports figures that hang together.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use taskflow_bus::backends::memory::MemoryBus;
use taskflow_bus::outbox_bench::{self, Figures};
use taskflow_bus::{EventBus, TopicNames};
use taskflow_store::Store;
use taskflow_store::sqlite::{SqliteSettings, SqliteStore};

#[tokio::test]
async fn one_round_on_the_memory_bus_measures_throughput_and_latency() {
    let dir = std::env::temp_dir().join(format!("taskflow-outbox-bench-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&dir).unwrap();
    let store: Arc<dyn Store> = Arc::new(
        SqliteStore::connect(&SqliteSettings::new(format!(
            "sqlite://{}/bench.db",
            dir.display()
        )))
        .await
        .unwrap(),
    );
    store.migrate().await.unwrap();
    let names = TopicNames::default();
    let bus: Arc<dyn EventBus> = Arc::new(MemoryBus::new(store.clone(), names.clone()));
    let started = AtomicBool::new(false);
    let figures: Figures = outbox_bench::measure(store.clone(), bus, names, 1, 3, async || {
        started.store(true, Ordering::SeqCst)
    })
    .await
    .unwrap();
    assert!(started.load(Ordering::SeqCst), "the start hook ran");
    assert_eq!(figures.events_per_second_rounds.len(), 1);
    assert!(figures.events_per_second > 0.0, "{figures:?}");
    assert!(
        figures.latency_rate > 0.0 && figures.latency_rate <= outbox_bench::LATENCY_RATE_CAP,
        "{figures:?}"
    );
    assert_eq!(
        figures.unconsumed, 0,
        "every paced write was consumed and timed: {figures:?}"
    );
    assert!(
        figures.p50_ms >= 0.0 && figures.p99_ms >= figures.p50_ms && figures.p99_ms > 0.0,
        "{figures:?}"
    );
    // Every write's events went through: nothing is left unpublished.
    assert_eq!(store.outbox_backlog().await.unwrap().unpublished, 0);
    store.close().await;
    let _ = std::fs::remove_dir_all(&dir);
}
