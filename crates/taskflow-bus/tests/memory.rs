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
    store_with_path().await.0
}

/// A migrated store in a fresh directory, and the path of its database file.
async fn store_with_path() -> (Arc<dyn Store>, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("taskflow-bus-{}", uuid::Uuid::now_v7()));
    let path = dir.join("bus.db");
    let store = SqliteStore::connect(&SqliteSettings::new(format!("sqlite://{}", path.display())))
        .await
        .unwrap();
    store.migrate().await.unwrap();
    (Arc::new(store), path)
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
    /// Batches handed over.
    batches: std::sync::atomic::AtomicUsize,
    /// Claims its consumers read the outbox themselves, as the in-process bus does.
    reads_outbox: bool,
    /// Times the relay said it took the lead.
    leads_taken: std::sync::atomic::AtomicUsize,
}

#[async_trait::async_trait]
impl EventBus for KeepingBus {
    fn name(&self) -> &'static str {
        "keeping"
    }

    async fn publish(&self, messages: &[taskflow_bus::Message]) -> Result<(), BusError> {
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        self.kept.lock().unwrap().extend_from_slice(messages);
        self.batches
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    fn consumers_read_outbox(&self) -> bool {
        self.reads_outbox
    }

    async fn subscribe(
        &self,
        _topic: &str,
        _group: &str,
    ) -> Result<Box<dyn taskflow_bus::Subscription>, BusError> {
        Err(BusError::Config("nothing to subscribe to".into()))
    }

    fn lead_taken(&self) {
        self.leads_taken
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
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
    let relaying = Relaying::start(
        &store,
        bus.clone(),
        RelaySettings {
            batch_size: 50,
            ..RelaySettings::default()
        },
    );
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let store = store.clone();
        writers.push(tokio::spawn(async move {
            for n in 0..EACH {
                write_event(&store, &format!("key-{w}"), n as u64).await;
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
    relaying.stop().await;

    let kept = bus.kept.lock().unwrap().clone();
    assert_eq!(kept.len(), WRITERS * EACH, "every row once");
    let mut by_key: std::collections::HashMap<String, Vec<u64>> = Default::default();
    for message in &kept {
        by_key
            .entry(message.key.clone())
            .or_default()
            .push(n_of(message));
    }
    let in_order: Vec<u64> = (0..EACH as u64).collect();
    assert_eq!(by_key.len(), WRITERS);
    assert!(by_key.values().all(|ns| ns == &in_order));
    // The last mark was written before the relay stopped.
    assert_eq!(store.outbox_backlog().await.unwrap().unpublished, 0);
    assert_eq!(
        bus.leads_taken.load(std::sync::atomic::Ordering::Relaxed),
        1,
        "the bus hears when the relay takes the lead, not at each of its checks"
    );
}

/// A relay from a test's store to its bus, running until [`Relaying::stop`].
struct Relaying {
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Relaying {
    fn start(store: &Arc<dyn Store>, bus: Arc<dyn EventBus>, settings: RelaySettings) -> Self {
        let shutdown = CancellationToken::new();
        let task = taskflow_bus::conformance::spawn_relay(
            store.clone(),
            bus,
            TopicNames::default(),
            settings,
            &shutdown,
        );
        Self { shutdown, task }
    }

    /// Stops the relay and waits until it finished (its last marks written).
    async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.unwrap();
    }
}

/// Writes `count` events (`{"n": 0}`, `{"n": 1}`, … on `task-events`, one key), each committed
/// on its own, 5 ms apart: a trickle of commits.
async fn trickle(store: &Arc<dyn Store>, count: u64) {
    for n in 0..count {
        write_event(store, "key", n).await;
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

/// Commits one event `{"n": n}` on `task-events` with partition key `key`.
async fn write_event(store: &Arc<dyn Store>, key: &str, n: u64) {
    let message = taskflow_bus::Message {
        topic: "task-events".into(),
        key: key.into(),
        id: String::new(),
        payload: serde_json::to_vec(&serde_json::json!({ "n": n })).unwrap(),
    };
    store
        .enqueue_events(&[as_outgoing(&message)])
        .await
        .unwrap();
}

/// The `n` of an event [`write_event`] wrote.
fn n_of(message: &taskflow_bus::Message) -> u64 {
    let event: serde_json::Value = serde_json::from_slice(&message.payload).unwrap();
    event["data"]["n"].as_u64().unwrap()
}

/// Waits until `done` holds, for 20 s at most (the caller's assertions then tell what is missing).
async fn wait_until(mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !done() && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Relays `COMMITS` rows, each committed on its own a few milliseconds apart, to a
/// [`KeepingBus`]; returns how many batches it took and how long the commits took, after
/// checking every row went out once, in order, and was recorded as published.
async fn relay_one_commit_at_a_time(reads_outbox: bool) -> (usize, std::time::Duration) {
    const COMMITS: u64 = 100;
    let store = store().await;
    let bus = Arc::new(KeepingBus {
        reads_outbox,
        ..KeepingBus::default()
    });
    let relaying = Relaying::start(
        &store,
        bus.clone(),
        RelaySettings {
            bookkeeping_interval: std::time::Duration::from_millis(200),
            ..RelaySettings::default()
        },
    );
    let started = std::time::Instant::now();
    trickle(&store, COMMITS).await;
    let trickling = started.elapsed();
    wait_until(|| bus.kept.lock().unwrap().len() >= COMMITS as usize).await;
    relaying.stop().await;
    let numbers: Vec<u64> = bus.kept.lock().unwrap().iter().map(n_of).collect();
    assert_eq!(
        numbers,
        (0..COMMITS).collect::<Vec<_>>(),
        "every row once, in order"
    );
    assert_eq!(store.outbox_backlog().await.unwrap().unpublished, 0);
    (
        bus.batches.load(std::sync::atomic::Ordering::Relaxed),
        trickling,
    )
}

/// Where consumers read the outbox themselves (the in-process bus), the relay only records
/// rows as published, which nothing waits for: it gathers the commits of a bookkeeping
/// interval into one batch instead of reading and marking after every commit. A broker's
/// consumers wait for the relay, so there it follows every commit.
#[tokio::test]
async fn the_relay_batches_bookkeeping_where_consumers_read_the_outbox() {
    let (gathered, trickling) = relay_one_commit_at_a_time(true).await;
    let (followed, _) = relay_one_commit_at_a_time(false).await;
    // 100 commits over at least half a second (longer on a busy machine), in 200 ms intervals:
    // a batch after each interval, and another when a commit lands while it is published.
    let intervals = 2 * (trickling.as_millis() / 200) as usize + 4;
    assert!(
        gathered <= intervals,
        "{gathered} batches for 100 commits over {trickling:?}"
    );
    assert!(
        followed > 3 * gathered,
        "a broker's relay follows the commits: {followed} batches against {gathered}"
    );
}

/// Records when each event reached it.
#[derive(Default)]
struct TimingHandler {
    seen: std::sync::Mutex<Vec<std::time::Instant>>,
}

#[async_trait::async_trait]
impl taskflow_bus::consumer::EventHandler for TimingHandler {
    async fn handle(
        &self,
        _event: &CloudEvent,
    ) -> Result<(), taskflow_bus::consumer::HandlerError> {
        self.seen.lock().unwrap().push(std::time::Instant::now());
        Ok(())
    }
}

/// Consumes `EVENTS` events, each committed on its own a few milliseconds apart, with a
/// consumer runner that waits `gather` after a batch that was not full; returns how many
/// bursts the handler saw (calls less than 2 ms apart count as one burst) and how long the
/// commits took.
async fn consume_one_commit_at_a_time(gather: std::time::Duration) -> (usize, std::time::Duration) {
    const EVENTS: u64 = 100;
    let store = store().await;
    let bus: Arc<dyn EventBus> = Arc::new(MemoryBus::new(store.clone(), TopicNames::default()));
    let handler = Arc::new(TimingHandler::default());
    let shutdown = CancellationToken::new();
    let runner = taskflow_bus::consumer::ConsumerRunner::new(
        "gathering",
        "task-events",
        bus,
        store.clone(),
        TopicNames::default(),
        Arc::new(taskflow_domain::SystemClock),
        handler.clone(),
        taskflow_bus::consumer::RetryPolicy::task_events(),
    )
    .gathering(gather);
    let consuming = tokio::spawn(runner.run(shutdown.clone()));
    let started = std::time::Instant::now();
    trickle(&store, EVENTS).await;
    let trickling = started.elapsed();
    wait_until(|| handler.seen.lock().unwrap().len() >= EVENTS as usize).await;
    shutdown.cancel();
    consuming.await.unwrap();
    let seen = handler.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), EVENTS as usize, "every event handled once");
    let bursts = 1 + seen
        .windows(2)
        .filter(|pair| pair[1] - pair[0] >= std::time::Duration::from_millis(2))
        .count();
    (bursts, trickling)
}

/// A consumer that nothing waits for (the audit log) gathers a trickle of events into a few
/// batches (a store commit each) instead of handling each as it comes; others follow every
/// commit.
#[tokio::test]
async fn a_gathering_consumer_handles_a_trickle_of_events_in_few_batches() {
    let (gathered, trickling) =
        consume_one_commit_at_a_time(std::time::Duration::from_millis(200)).await;
    let (followed, _) = consume_one_commit_at_a_time(std::time::Duration::ZERO).await;
    // 100 commits over at least half a second (longer on a busy machine), in 200 ms pauses.
    let pauses = (trickling.as_millis() / 200) as usize + 4;
    assert!(
        gathered <= pauses,
        "{gathered} bursts for 100 commits over {trickling:?}"
    );
    assert!(
        followed > 3 * gathered,
        "without gathering the consumer follows the commits: {followed} bursts against {gathered}"
    );
}

/// A broker stand-in whose acknowledgements the test hands out: it keeps every batch it was
/// sent, and each batch is accepted only once it gets a permit (refused instead while
/// `refuse_next` is set).
struct GatedBus {
    sent: std::sync::Mutex<Vec<Vec<u64>>>,
    permits: Arc<tokio::sync::Semaphore>,
    refuse_next: Arc<std::sync::atomic::AtomicBool>,
}

impl Default for GatedBus {
    fn default() -> Self {
        Self {
            sent: Default::default(),
            permits: Arc::new(tokio::sync::Semaphore::new(0)),
            refuse_next: Default::default(),
        }
    }
}

impl GatedBus {
    /// The `n` of each batch's events, batch by batch.
    fn sent(&self) -> Vec<Vec<u64>> {
        self.sent.lock().unwrap().clone()
    }
}

#[async_trait::async_trait]
impl EventBus for GatedBus {
    fn name(&self) -> &'static str {
        "gated"
    }

    async fn publish(&self, messages: &[taskflow_bus::Message]) -> Result<(), BusError> {
        self.send(messages).await?.await
    }

    async fn send(
        &self,
        messages: &[taskflow_bus::Message],
    ) -> Result<taskflow_bus::PendingPublish, BusError> {
        let numbers = messages.iter().map(n_of).collect();
        self.sent.lock().unwrap().push(numbers);
        let (permits, refuse) = (self.permits.clone(), self.refuse_next.clone());
        Ok(Box::pin(async move {
            permits.acquire().await.unwrap().forget();
            if refuse.swap(false, std::sync::atomic::Ordering::SeqCst) {
                return Err(BusError::Unavailable("refused by the test".into()));
            }
            Ok(())
        }))
    }

    async fn subscribe(
        &self,
        _topic: &str,
        _group: &str,
    ) -> Result<Box<dyn taskflow_bus::Subscription>, BusError> {
        Err(BusError::Config("nothing to subscribe to".into()))
    }
}

/// Starts a relay with `batches_in_flight` to `bus` and commits events 0, 1, … `sent_apart - 1`
/// one at a time, each once the bus got the one before (so each goes out in a batch of its
/// own while no acknowledgement comes).
async fn relay_to_gated_bus(
    bus: &Arc<GatedBus>,
    batches_in_flight: usize,
    sent_apart: u64,
) -> (Arc<dyn Store>, Relaying) {
    let store = store().await;
    let relaying = Relaying::start(
        &store,
        bus.clone(),
        RelaySettings {
            batches_in_flight,
            ..RelaySettings::default()
        },
    );
    for n in 0..sent_apart {
        write_event(&store, "key", n).await;
        wait_until(|| bus.sent().len() > n as usize).await;
    }
    (store, relaying)
}

/// The relay sends the next batches while the broker still acknowledges earlier ones, up to
/// `batches_in_flight`, and marks a batch published only once the broker accepted it.
#[tokio::test]
async fn the_relay_sends_on_while_the_broker_acknowledges() {
    let bus = Arc::new(GatedBus::default());
    let (store, relaying) = relay_to_gated_bus(&bus, 3, 3).await;
    assert_eq!(
        bus.sent(),
        vec![vec![0], vec![1], vec![2]],
        "three batches in flight"
    );
    for n in 3..6 {
        write_event(&store, "key", n).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(bus.sent().len(), 3, "no fourth batch while three wait");
    assert_eq!(
        store.outbox_backlog().await.unwrap().unpublished,
        6,
        "nothing is marked published before the broker accepted it"
    );

    bus.permits.add_permits(100);
    wait_until(|| bus.sent().concat().len() >= 6).await;
    wait_until_all_published(&store).await;
    assert_eq!(
        bus.sent().concat(),
        (0..6).collect::<Vec<_>>(),
        "every row once, in order"
    );
    assert_eq!(store.outbox_backlog().await.unwrap().unpublished, 0);
    relaying.stop().await;
}

/// When the broker refuses a batch, it and every batch sent after it go out again (the broker
/// drops repeats it already has), in order; the batch accepted before it is not sent again,
/// and all are marked published in the end.
#[tokio::test]
async fn a_refused_batch_and_those_sent_after_it_go_out_again() {
    let bus = Arc::new(GatedBus::default());
    let (store, relaying) = relay_to_gated_bus(&bus, 4, 3).await;
    bus.permits.add_permits(1);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while store.outbox_backlog().await.unwrap().unpublished > 2
        && std::time::Instant::now() < deadline
    {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(
        store.outbox_backlog().await.unwrap().unpublished,
        2,
        "the first batch is accepted and marked"
    );
    bus.refuse_next
        .store(true, std::sync::atomic::Ordering::SeqCst);
    bus.permits.add_permits(100);
    wait_until(|| bus.sent().len() >= 4).await;
    wait_until_all_published(&store).await;
    assert_eq!(
        bus.sent(),
        vec![vec![0], vec![1], vec![2], vec![1, 2]],
        "the refused batch and the one after it, sent again together"
    );
    assert_eq!(store.outbox_backlog().await.unwrap().unpublished, 0);
    relaying.stop().await;
}

/// Waits until the outbox has no unpublished rows, for 20 s at most.
async fn wait_until_all_published(store: &Arc<dyn Store>) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while store.outbox_backlog().await.unwrap().unpublished > 0
        && std::time::Instant::now() < deadline
    {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// While the store refuses to record rows as published, the relay backs off as it does when
/// the broker fails (it does not re-send the rows in a hot loop), and once marks work again
/// every row ends up marked, first sent in order.
#[tokio::test]
async fn the_relay_backs_off_while_marks_fail() {
    let (store, path) = store_with_path().await;
    let side = rusqlite::Connection::open(&path).unwrap();
    side.execute_batch(
        "CREATE TRIGGER refuse_marks BEFORE UPDATE ON outbox_relay
         BEGIN SELECT RAISE(ABORT, 'marks refused by the test'); END;",
    )
    .unwrap();
    let bus = Arc::new(KeepingBus::default());
    let relaying = Relaying::start(
        &store,
        bus.clone(),
        RelaySettings {
            // Without a backoff, a relay polling this often would re-send ~100 times a second.
            poll_interval: std::time::Duration::from_millis(10),
            max_backoff: std::time::Duration::from_millis(400),
            ..RelaySettings::default()
        },
    );
    for n in 0..3 {
        write_event(&store, "key", n).await;
    }
    wait_until(|| !bus.kept.lock().unwrap().is_empty()).await;
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    let batches = bus.batches.load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        (2..=12).contains(&batches),
        "{batches} batches in a second of failing marks (sent again after each backoff)"
    );
    assert_eq!(
        store.outbox_backlog().await.unwrap().unpublished,
        3,
        "nothing is recorded as published"
    );

    side.execute_batch("DROP TRIGGER refuse_marks").unwrap();
    wait_until_all_published(&store).await;
    assert_eq!(store.outbox_backlog().await.unwrap().unpublished, 0);
    relaying.stop().await;
    // Each row's first send, in the order they happened (a row sent before a failed mark is
    // sent again, possibly before a later row's first send).
    let mut first_sent: Vec<u64> = Vec::new();
    for n in bus.kept.lock().unwrap().iter().map(n_of) {
        if !first_sent.contains(&n) {
            first_sent.push(n);
        }
    }
    assert_eq!(first_sent, vec![0, 1, 2]);
}
