//! The NATS JetStream backend against a real nats-server with JetStream.
//!
//! Most tests use the shared server on 127.0.0.1:4222 (override with `TASKFLOW_TEST_NATS_URL`)
//! and fail, not skip, when it is down. Every test uses its own stream prefix and topic names
//! and deletes its streams at the end. The outage test starts a server of its own on a free
//! port (binary from `TASKFLOW_TEST_NATS_SERVER`, default `/usr/sbin/nats-server`).
#![cfg(feature = "nats")]
#![allow(clippy::unwrap_used)]

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt as _;
use taskflow_bus::backends::nats::{NatsBus, NatsSettings};
use taskflow_bus::consumer::{ConsumerRunner, EventHandler, HandlerError, RetryPolicy};
use taskflow_bus::relay::RelaySettings;
use taskflow_bus::{EventBus, Message, Subscription, TopicNames, TopicSpec};
use taskflow_domain::events::{CloudEvent, OutgoingEvent, dead_letter_topic};
use taskflow_domain::{SystemClock, UserId};
use taskflow_store::sqlite::{SqliteSettings, SqliteStore};
use taskflow_store::{ConsumerEffect, Store};
use tokio_util::sync::CancellationToken;

/// How long the outage test keeps its broker down (the scenario: 30 s under writes).
const OUTAGE: Duration = Duration::from_secs(30);

const START_HINT: &str = "start it with: start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server -- -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log";

fn shared_url() -> String {
    std::env::var("TASKFLOW_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned())
}

fn unique() -> String {
    uuid::Uuid::now_v7().simple().to_string()
}

fn settings(url: &str) -> NatsSettings {
    NatsSettings {
        url: url.to_owned(),
        stream_prefix: format!("TFTEST_{}", unique()),
        // Short, so redelivery of abandoned messages is quick in tests.
        ack_wait_secs: 2,
        // Streams leaked by a failed test empty themselves.
        max_age_secs: 3600,
        ..NatsSettings::default()
    }
}

/// Connects to the shared server, failing loudly when it is not there.
async fn shared_bus() -> NatsBus {
    let url = shared_url();
    let address = url.trim_start_matches("nats://").to_owned();
    let reachable = tokio::time::timeout(
        Duration::from_secs(3),
        tokio::net::TcpStream::connect(&address),
    )
    .await;
    assert!(
        matches!(reachable, Ok(Ok(_))),
        "nats-server is not reachable at {url} (these tests need a real server with JetStream); {START_HINT}"
    );
    let bus = NatsBus::connect(&settings(&url)).await.unwrap();
    // Any JetStream API call fails without JetStream (-js).
    let names = bus.jetstream().stream_names().next().await;
    assert!(
        !matches!(names, Some(Err(_))),
        "JetStream is not usable on the server at {url} (started with -js?): {names:?}"
    );
    bus
}

/// Deletes streams when dropped, also when the test fails halfway (the shared server is
/// shared); the tests' explicit `delete_topic` calls make this a no-op when they pass.
struct DeleteStreams {
    streams: Vec<String>,
}

fn delete_on_drop(bus: &NatsBus, topics: &[&str]) -> DeleteStreams {
    DeleteStreams {
        streams: topics.iter().map(|topic| bus.stream_name(topic)).collect(),
    }
}

impl Drop for DeleteStreams {
    fn drop(&mut self) {
        let streams = std::mem::take(&mut self.streams);
        let url = shared_url();
        // A runtime of its own: the test's runtime may be unwinding.
        let _ = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async move {
                let Ok(Ok(client)) =
                    tokio::time::timeout(Duration::from_secs(3), async_nats::connect(url)).await
                else {
                    return;
                };
                let jetstream = async_nats::jetstream::new(client);
                for stream in streams {
                    let _ = tokio::time::timeout(
                        Duration::from_secs(3),
                        jetstream.delete_stream(stream),
                    )
                    .await;
                }
            });
        })
        .join();
    }
}

async fn store() -> Arc<dyn Store> {
    let dir = std::env::temp_dir().join(format!("taskflow-bus-nats-{}", unique()));
    let store = SqliteStore::connect(&SqliteSettings::new(format!(
        "sqlite://{}/bus.db",
        dir.display()
    )))
    .await
    .unwrap();
    store.migrate().await.unwrap();
    Arc::new(store)
}

fn message(topic: &str, id: &str, n: u32) -> Message {
    Message {
        topic: topic.to_owned(),
        key: "alice".to_owned(),
        id: id.to_owned(),
        payload: format!("{{\"n\":{n}}}").into_bytes(),
    }
}

fn n_of(payload: &[u8]) -> u64 {
    serde_json::from_slice::<serde_json::Value>(payload).unwrap()["n"]
        .as_u64()
        .unwrap()
}

async fn stream_messages(bus: &NatsBus, topic: &str) -> u64 {
    let mut stream = bus
        .jetstream()
        .get_stream(bus.stream_name(topic))
        .await
        .unwrap();
    stream.info().await.unwrap().state.messages
}

/// Asserts nothing more arrives for `wait`.
async fn assert_quiet(sub: &mut Box<dyn Subscription>, wait: Duration) {
    if let Ok(received) = tokio::time::timeout(wait, sub.next()).await {
        panic!(
            "expected no more messages, got {:?}",
            received.map(|r| r.message)
        );
    }
}

#[tokio::test]
async fn nats_bus_passes_the_delivery_story() {
    let bus = shared_bus().await;
    let topic = format!("story-{}", unique());
    let _cleanup = delete_on_drop(&bus, &[&topic]);
    bus.ensure_topics(&[TopicSpec {
        name: topic.clone(),
        partitions: 1,
        retention: Duration::from_secs(600),
    }])
    .await
    .unwrap();
    taskflow_bus::conformance::run(&bus, &topic, |messages| {
        let bus = &bus;
        async move { bus.publish(&messages).await.unwrap() }
    })
    .await;
    bus.delete_topic(&topic).await.unwrap();
}

#[tokio::test]
async fn nats_bus_passes_the_consumer_story_through_the_outbox_relay() {
    let store = store().await;
    let nats = Arc::new(shared_bus().await);
    let bus: Arc<dyn EventBus> = nats.clone();
    let names = TopicNames {
        prefix: format!("t{}-", unique()),
        ..TopicNames::default()
    };
    let _cleanup = delete_on_drop(
        &nats,
        &[
            &names.physical("task-events"),
            &names.physical("task-events.dlq"),
        ],
    );
    let shutdown = CancellationToken::new();
    let relay = taskflow_bus::conformance::spawn_relay(
        store.clone(),
        bus.clone(),
        names.clone(),
        RelaySettings::default(),
        &shutdown,
    );
    let writer = store.clone();
    taskflow_bus::conformance::run_consumer_story(
        bus,
        store.clone(),
        names.clone(),
        "task-events",
        |event| {
            let writer = writer.clone();
            async move { writer.enqueue_events(&[event]).await.unwrap() }
        },
    )
    .await;
    // The relay published everything, the dead-letter notice included.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while store.outbox_backlog().await.unwrap().unpublished > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the relay did not drain the outbox"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    shutdown.cancel();
    relay.await.unwrap();
    let dlq = names.physical("task-events.dlq");
    assert_eq!(
        stream_messages(&nats, &dlq).await,
        1,
        "one dead-letter notice on {dlq}"
    );
    for topic in [names.physical("task-events"), dlq] {
        nats.delete_topic(&topic).await.unwrap();
    }
}

/// The messages of `topic` in stream order: (id, n).
async fn consume_all(bus: &NatsBus, topic: &str, count: usize) -> Vec<(String, u64)> {
    let mut sub = bus.subscribe(topic, "reader").await.unwrap();
    let mut got = Vec::new();
    for _ in 0..count {
        let received = tokio::time::timeout(Duration::from_secs(10), sub.next())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(received.redeliveries, 0);
        got.push((received.message.id.clone(), n_of(&received.message.payload)));
        sub.ack(received).await.unwrap();
    }
    assert_quiet(&mut sub, Duration::from_secs(2)).await;
    got
}

fn expected(ids: &[u32]) -> Vec<(String, u64)> {
    ids.iter()
        .map(|&n| (format!("event-{n}:{n}"), u64::from(n)))
        .collect()
}

/// A bus on the shared server with settings of its own (so a test can connect again as a
/// restarted process would), a topic named after `what`, and the topic's cleanup.
async fn restartable(what: &str) -> (NatsSettings, NatsBus, String, DeleteStreams) {
    shared_bus().await;
    let settings = settings(&shared_url());
    let bus = NatsBus::connect(&settings).await.unwrap();
    let topic = format!("{what}-{}", unique());
    let cleanup = delete_on_drop(&bus, &[&topic]);
    (settings, bus, topic, cleanup)
}

/// The outbox row `n` of `topic` as the relay sends it.
fn row(topic: &str, n: u32) -> Message {
    message(topic, &format!("event-{n}:{n}"), n)
}

/// The relay sends a row again when its "published" mark was lost: in the same process (the
/// bus remembers what it stored) or after a restart (a new bus reads the ids at the end of
/// the stream before it publishes). Either way the stream stores it once.
#[tokio::test]
async fn republishing_a_message_id_stores_it_once() {
    let (settings, before, topic, _cleanup) = restartable("dedup").await;
    let row = |n: u32| row(&topic, n);
    before.publish(&[row(1)]).await.unwrap();
    before.publish(&[row(1), row(2)]).await.unwrap();
    assert_eq!(stream_messages(&before, &topic).await, 2, "one process");
    drop(before);
    let after = NatsBus::connect(&settings).await.unwrap();
    after.publish(&[row(1), row(2), row(3)]).await.unwrap();
    assert_eq!(stream_messages(&after, &topic).await, 3, "after a restart");
    assert_eq!(consume_all(&after, &topic, 3).await, expected(&[1, 2, 3]));
    after.delete_topic(&topic).await.unwrap();
}

/// A process whose relay lost the lead and takes it back may re-send rows the other leader
/// stored without marking them: told it took the lead, its bus reads the stream's end again
/// and stores them once. Not told, it goes by what it stored itself and stores them again.
#[tokio::test]
async fn a_bus_told_its_relay_took_the_lead_back_reads_the_stream_again() {
    let (settings, first_leader, topic, _cleanup) = restartable("lead").await;
    let row = |n: u32| row(&topic, n);
    first_leader.publish(&[row(1)]).await.unwrap();
    let second_leader = NatsBus::connect(&settings).await.unwrap();
    second_leader.publish(&[row(1), row(2)]).await.unwrap();
    assert_eq!(stream_messages(&first_leader, &topic).await, 2);

    first_leader.lead_taken();
    first_leader.publish(&[row(2), row(3)]).await.unwrap();
    assert_eq!(
        stream_messages(&first_leader, &topic).await,
        3,
        "row 2, stored by the other leader, is not stored again"
    );

    second_leader.publish(&[row(4)]).await.unwrap();
    first_leader.publish(&[row(4)]).await.unwrap();
    assert_eq!(
        consume_all(&first_leader, &topic, 5).await,
        expected(&[1, 2, 3, 4, 4]),
        "without being told, the first bus stores row 4 a second time"
    );
    first_leader.delete_topic(&topic).await.unwrap();
}

/// A restarted bus looks back `resume_lookback` messages, no further: an older row sent again
/// is stored again (at least once; consumers are idempotent), and 0 looks at nothing.
#[tokio::test]
async fn a_restarted_bus_looks_back_as_far_as_configured() {
    let (settings, first, topic, _cleanup) = restartable("lookback").await;
    let row = |n: u32| row(&topic, n);
    first.publish(&[row(1), row(2), row(3)]).await.unwrap();
    let two = NatsBus::connect(&NatsSettings {
        resume_lookback: 2,
        ..settings.clone()
    })
    .await
    .unwrap();
    two.publish(&[row(1), row(2), row(3)]).await.unwrap();
    assert_eq!(
        stream_messages(&two, &topic).await,
        4,
        "only row 1, beyond the last two messages, is stored again"
    );
    let none = NatsBus::connect(&NatsSettings {
        resume_lookback: 0,
        ..settings.clone()
    })
    .await
    .unwrap();
    none.publish(&[row(3)]).await.unwrap();
    assert_eq!(stream_messages(&none, &topic).await, 5);
    assert_eq!(
        consume_all(&none, &topic, 5).await,
        expected(&[1, 2, 3, 1, 3])
    );
    none.delete_topic(&topic).await.unwrap();
}

/// With the default lookback a restarted bus reads the newest 10 000 ids of a longer stream
/// (many pulls of its reading consumer), quickly: a row among them is skipped, an older one is
/// stored again.
#[tokio::test]
async fn a_restarted_bus_reads_the_default_lookback_of_a_long_stream() {
    const ROWS: u32 = 12_000;
    let (settings, first, topic, _cleanup) = restartable("long").await;
    assert_eq!(settings.resume_lookback, 10_000);
    let row = |n: u32| row(&topic, n);
    let rows: Vec<Message> = (1..=ROWS).map(row).collect();
    for chunk in rows.chunks(1_000) {
        first.publish(chunk).await.unwrap();
    }
    let restarted = NatsBus::connect(&settings).await.unwrap();
    let started = std::time::Instant::now();
    // Row 2 001 is the oldest of the newest 10 000; row 2 000 is beyond them.
    restarted.publish(&[row(2_001), row(ROWS)]).await.unwrap();
    let read_in = started.elapsed();
    eprintln!("read the newest 10 000 ids in {read_in:?}");
    assert_eq!(stream_messages(&restarted, &topic).await, u64::from(ROWS));
    restarted.publish(&[row(2_000)]).await.unwrap();
    assert_eq!(
        stream_messages(&restarted, &topic).await,
        u64::from(ROWS) + 1
    );
    assert!(
        read_in < Duration::from_secs(3),
        "reading 10 000 ids took {read_in:?}"
    );
    restarted.delete_topic(&topic).await.unwrap();
}

/// Messages stored by earlier versions carry their id in JetStream's `Nats-Msg-Id` header:
/// consumers read it there, and a restarted bus recognizes them.
#[tokio::test]
async fn ids_in_the_earlier_header_are_still_read() {
    let (settings, bus, topic, _cleanup) = restartable("legacy").await;
    bus.ensure_topics(&[TopicSpec {
        name: topic.clone(),
        partitions: 1,
        retention: Duration::ZERO,
    }])
    .await
    .unwrap();
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", "event-1:1");
    headers.insert("Taskflow-Key", "alice");
    bus.jetstream()
        .publish_with_headers(topic.clone(), headers, "{\"n\":1}".into())
        .await
        .unwrap()
        .await
        .unwrap();
    let restarted = NatsBus::connect(&settings).await.unwrap();
    restarted
        .publish(&[
            message(&topic, "event-1:1", 1),
            message(&topic, "event-2:2", 2),
        ])
        .await
        .unwrap();
    assert_eq!(stream_messages(&bus, &topic).await, 2);
    assert_eq!(consume_all(&bus, &topic, 2).await, expected(&[1, 2]));
    bus.delete_topic(&topic).await.unwrap();
}

/// The relay sends its next batches before the broker acknowledged the ones before
/// (`EventBus::send`): batches sent back to back are stored in the order they were sent.
#[tokio::test]
async fn batches_sent_back_to_back_keep_their_order() {
    const BATCHES: u32 = 20;
    const EACH: u32 = 10;
    let bus = shared_bus().await;
    let topic = format!("pipelined-{}", unique());
    let _cleanup = delete_on_drop(&bus, &[&topic]);
    let mut acceptances = Vec::new();
    for batch in 0..BATCHES {
        let messages: Vec<Message> = (0..EACH)
            .map(|i| {
                let n = batch * EACH + i;
                message(&topic, &format!("event-{n}:{n}"), n)
            })
            .collect();
        acceptances.push(bus.send(&messages).await.unwrap());
    }
    for accepted in acceptances {
        accepted.await.unwrap();
    }
    assert_eq!(
        stream_messages(&bus, &topic).await,
        u64::from(BATCHES * EACH)
    );

    let mut sub = bus.subscribe(&topic, "pipelined").await.unwrap();
    let mut got = Vec::new();
    while got.len() < (BATCHES * EACH) as usize {
        let batch = tokio::time::timeout(Duration::from_secs(10), sub.next_batch(64))
            .await
            .unwrap()
            .unwrap();
        got.extend(batch.iter().map(|r| n_of(&r.message.payload)));
        sub.ack_all(batch).await.unwrap();
    }
    assert_eq!(got, (0..u64::from(BATCHES * EACH)).collect::<Vec<_>>());
    drop(sub);
    bus.delete_topic(&topic).await.unwrap();
}

#[tokio::test]
async fn a_topic_stream_does_not_capture_its_dead_letter_topic() {
    let bus = shared_bus().await;
    let topic = format!("events-{}", unique());
    let dlq = format!("{topic}.dlq");
    let _cleanup = delete_on_drop(&bus, &[&topic, &dlq]);
    // Subscribing first creates the stream on demand (consumers may start before the relay).
    let mut sub = bus.subscribe(&topic, "main").await.unwrap();
    let mut batch: Vec<Message> = (0..3)
        .map(|n| message(&topic, &format!("main-{n}"), n))
        .collect();
    batch.extend((10..12).map(|n| message(&dlq, &format!("dlq-{n}"), n)));
    batch.push(message(&topic, "main-3", 3));
    bus.publish(&batch).await.unwrap();

    assert_eq!(stream_messages(&bus, &topic).await, 4);
    assert_eq!(stream_messages(&bus, &dlq).await, 2);
    let subjects = bus
        .jetstream()
        .get_stream(bus.stream_name(&topic))
        .await
        .unwrap()
        .cached_info()
        .config
        .subjects
        .clone();
    assert_eq!(
        subjects,
        std::slice::from_ref(&topic),
        "exact subject, no wildcard"
    );

    let mut got = Vec::new();
    for _ in 0..4 {
        let received = tokio::time::timeout(Duration::from_secs(10), sub.next())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(received.message.topic, topic);
        got.push(n_of(&received.message.payload));
        sub.ack(received).await.unwrap();
    }
    assert_eq!(got, [0, 1, 2, 3], "only the topic's own messages, in order");
    assert_quiet(&mut sub, Duration::from_secs(3)).await;

    let mut dead = bus.subscribe(&dlq, "dlq-reader").await.unwrap();
    for n in [10, 11] {
        let received = tokio::time::timeout(Duration::from_secs(10), dead.next())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(n_of(&received.message.payload), n);
        dead.ack(received).await.unwrap();
    }
    drop((sub, dead));
    bus.delete_topic(&topic).await.unwrap();
    bus.delete_topic(&dlq).await.unwrap();
}

#[tokio::test]
async fn a_dropped_member_hands_its_messages_back_at_once() {
    // A long ack_wait: the message can only come back this fast because it was handed back.
    let url = shared_url();
    shared_bus().await;
    let bus = NatsBus::connect(&NatsSettings {
        ack_wait_secs: 60,
        ..settings(&url)
    })
    .await
    .unwrap();
    let topic = format!("handback-{}", unique());
    let _cleanup = delete_on_drop(&bus, &[&topic]);
    bus.publish(&[message(&topic, "m-1", 1), message(&topic, "m-2", 2)])
        .await
        .unwrap();

    let mut member = bus.subscribe(&topic, "workers").await.unwrap();
    let received = tokio::time::timeout(Duration::from_secs(10), member.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (received.message.id.as_str(), received.redeliveries),
        ("m-1", 0)
    );
    drop(received); // the handler never finished
    drop(member); // shutdown: m-1 (handed out) and m-2 (prefetched) go back

    let mut other = bus.subscribe(&topic, "workers").await.unwrap();
    let mut got = Vec::new();
    for _ in 0..2 {
        let received = tokio::time::timeout(Duration::from_secs(5), other.next())
            .await
            .expect("handed back without waiting for ack_wait")
            .unwrap();
        got.push((received.message.id.clone(), received.redeliveries));
        other.ack(received).await.unwrap();
    }
    assert_eq!(got, [("m-1".to_owned(), 1), ("m-2".to_owned(), 1)]);
    drop(other);
    bus.delete_topic(&topic).await.unwrap();
}

#[tokio::test]
async fn a_transient_group_expires_on_the_server_and_a_lasting_one_does_not() {
    let bus = shared_bus().await;
    let topic = format!("groups-{}", unique());
    let _cleanup = delete_on_drop(&bus, &[&topic]);
    let lasting = bus.subscribe(&topic, "audit").await.unwrap();
    let transient = bus
        .subscribe_transient(&topic, "realtime-1234")
        .await
        .unwrap();
    let stream = bus
        .jetstream()
        .get_stream(bus.stream_name(&topic))
        .await
        .unwrap();
    let threshold = |info: async_nats::jetstream::consumer::Info| info.config.inactive_threshold;
    assert_eq!(
        threshold(stream.consumer_info("realtime-1234").await.unwrap()),
        taskflow_bus::backends::nats::TRANSIENT_GROUP_EXPIRY,
        "the server deletes a transient group an hour after its last pull"
    );
    assert_eq!(
        threshold(stream.consumer_info("audit").await.unwrap()),
        Duration::ZERO,
        "a lasting group is kept however long its members are away"
    );
    drop((lasting, transient));
    bus.delete_topic(&topic).await.unwrap();
}

#[tokio::test]
async fn a_message_in_progress_outlives_ack_wait_without_redelivery() {
    let bus = shared_bus().await; // ack_wait 2 s
    let topic = format!("slow-{}", unique());
    let _cleanup = delete_on_drop(&bus, &[&topic]);
    bus.publish(&[message(&topic, "slow-1", 1)]).await.unwrap();
    let mut busy = bus.subscribe(&topic, "workers").await.unwrap();
    let mut idle = bus.subscribe(&topic, "workers").await.unwrap();
    let received = tokio::time::timeout(Duration::from_secs(10), busy.next())
        .await
        .unwrap()
        .unwrap();
    // A handler retrying for more than twice ack_wait: the other member gets nothing meanwhile.
    assert_quiet(&mut idle, Duration::from_secs(5)).await;
    busy.ack(received).await.unwrap();
    assert_quiet(&mut idle, Duration::from_secs(3)).await;
    drop((busy, idle));
    bus.delete_topic(&topic).await.unwrap();
}

#[tokio::test]
async fn ensure_topics_creates_and_updates_streams() {
    let bus = shared_bus().await;
    let topic = format!("spec-{}", unique());
    let _cleanup = delete_on_drop(&bus, &[&topic]);
    let spec = |retention| TopicSpec {
        name: topic.clone(),
        partitions: 3,
        retention,
    };
    let config = |bus: &NatsBus| {
        let name = bus.stream_name(&topic);
        let js = bus.jetstream().clone();
        async move {
            js.get_stream(name)
                .await
                .unwrap()
                .cached_info()
                .config
                .clone()
        }
    };
    bus.ensure_topics(&[spec(Duration::from_secs(600))])
        .await
        .unwrap();
    let created = config(&bus).await;
    assert_eq!(created.max_age, Duration::from_secs(600));
    assert_eq!(created.duplicate_window, Duration::from_secs(120));
    assert_eq!(created.subjects, std::slice::from_ref(&topic));
    bus.ensure_topics(&[spec(Duration::from_secs(900))])
        .await
        .unwrap();
    assert_eq!(config(&bus).await.max_age, Duration::from_secs(900));
    // Publishing does not reset what ensure_topics set.
    bus.publish(&[message(&topic, "x", 1)]).await.unwrap();
    assert_eq!(config(&bus).await.max_age, Duration::from_secs(900));
    bus.delete_topic(&topic).await.unwrap();
}

/// A nats-server of the test's own, on a fixed port and store directory across restarts.
struct OwnServer {
    port: u16,
    dir: PathBuf,
    child: Option<tokio::process::Child>,
}

impl OwnServer {
    fn binary() -> String {
        std::env::var("TASKFLOW_TEST_NATS_SERVER")
            .unwrap_or_else(|_| "/usr/sbin/nats-server".to_owned())
    }

    async fn start_new() -> Self {
        let binary = Self::binary();
        assert!(
            Path::new(&binary).exists(),
            "the outage test needs a nats-server binary at {binary} (apt-get install nats-server)"
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = std::env::temp_dir().join(format!("taskflow-nats-outage-{}", unique()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut server = Self {
            port,
            dir,
            child: None,
        };
        server.start().await;
        server
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    async fn start(&mut self) {
        let child = tokio::process::Command::new(Self::binary())
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(self.dir.join("store"))
            .arg("-l")
            .arg(self.dir.join("server.log"))
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .is_err()
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "own nats-server did not start; see {}",
                self.dir.display()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM, then wait for the process to exit.
    async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = child.id().unwrap();
            let status = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .unwrap();
            assert!(status.success());
            tokio::time::timeout(Duration::from_secs(10), child.wait())
                .await
                .unwrap()
                .unwrap();
        }
    }
}

impl Drop for OwnServer {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Counts handler calls and first-time effects per event.
struct Recorder {
    store: Arc<dyn Store>,
    group: String,
    calls: AtomicU32,
    effects: Mutex<HashMap<String, u32>>,
}

#[async_trait]
impl EventHandler for Recorder {
    async fn handle(&self, event: &CloudEvent) -> Result<(), HandlerError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if self
            .store
            .apply_once(
                &self.group,
                &event.id,
                &ConsumerEffect::Nothing,
                chrono::Utc::now(),
            )
            .await?
        {
            *self
                .effects
                .lock()
                .unwrap()
                .entry(event.id.clone())
                .or_default() += 1;
        }
        Ok(())
    }
}

/// Writes one event carrying `data` to the outbox (`task-events`) and returns its id.
async fn enqueue_outage_event(store: &Arc<dyn Store>, data: serde_json::Value) -> String {
    let event = CloudEvent::new(
        "outage.test",
        None,
        UserId::new(),
        chrono::Utc::now(),
        None,
        data,
    );
    let id = event.id.clone();
    store
        .enqueue_events(&[OutgoingEvent {
            topic: "task-events".to_owned(),
            event,
        }])
        .await
        .unwrap();
    id
}

#[tokio::test]
async fn a_broker_outage_loses_nothing_and_the_backlog_drains() {
    let mut server = OwnServer::start_new().await;
    let store = store().await;
    let nats = Arc::new(NatsBus::connect(&settings(&server.url())).await.unwrap());
    let bus: Arc<dyn EventBus> = nats.clone();
    let names = TopicNames::default();
    let shutdown = CancellationToken::new();

    let relay_settings = RelaySettings {
        poll_interval: Duration::from_millis(200),
        max_backoff: Duration::from_secs(1),
        ..RelaySettings::default()
    };
    let relay = taskflow_bus::conformance::spawn_relay(
        store.clone(),
        bus.clone(),
        names.clone(),
        relay_settings,
        &shutdown,
    );

    let group = "outage-consumer".to_owned();
    let recorder = Arc::new(Recorder {
        store: store.clone(),
        group: group.clone(),
        calls: AtomicU32::new(0),
        effects: Mutex::new(HashMap::new()),
    });
    let policy = RetryPolicy {
        attempts: 5,
        initial_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(200),
        jitter: 0.1,
    };
    let runner = ConsumerRunner::new(
        group,
        "task-events",
        bus.clone(),
        store.clone(),
        names.clone(),
        Arc::new(SystemClock),
        recorder.clone(),
        policy,
    );
    let consumer = tokio::spawn(runner.run(shutdown.clone()));

    // Commands keep writing events to the outbox the whole time.
    let written = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop_writing = CancellationToken::new();
    let writer = {
        let (store, written, stop) = (store.clone(), written.clone(), stop_writing.clone());
        tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.is_cancelled() {
                let id = enqueue_outage_event(&store, serde_json::json!({ "n": n })).await;
                written.lock().unwrap().push(id);
                n += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };

    // Running normally: events flow.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while recorder.effects.lock().unwrap().len() < 20 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "events did not flow before the outage"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    server.stop().await;
    let during = written.lock().unwrap().len();
    tokio::time::sleep(OUTAGE).await;
    let backlog = store.outbox_backlog().await.unwrap().unpublished;
    assert!(
        backlog > 0,
        "events piled up in the outbox during the outage"
    );
    server.start().await;

    // Keep writing a little after the restart, then stop.
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop_writing.cancel();
    writer.await.unwrap();
    let mut written: Vec<String> = written.lock().unwrap().clone();
    assert!(
        written.len() > during,
        "events were written during the outage"
    );

    let expected: HashSet<String> = written.iter().cloned().collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let unpublished = store.outbox_backlog().await.unwrap().unpublished;
        let applied = recorder.effects.lock().unwrap().len();
        if unpublished == 0 && applied >= expected.len() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "backlog did not drain: {unpublished} unpublished, {applied} of {} applied",
            expected.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Lag is back to normal: a fresh event is consumed promptly again.
    let mut lags = Vec::new();
    for n in 0..10 {
        let started = tokio::time::Instant::now();
        let id = enqueue_outage_event(&store, serde_json::json!({ "after": n })).await;
        while !recorder.effects.lock().unwrap().contains_key(&id) {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "a fresh event was not consumed after the outage"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        lags.push(started.elapsed());
        written.push(id);
    }
    lags.sort();
    assert!(
        lags[lags.len() / 2] < Duration::from_millis(500),
        "commit-to-consume lag after the outage: {lags:?}"
    );
    let expected: HashSet<&String> = written.iter().collect();
    // Let any late redelivery arrive before checking "once".
    tokio::time::sleep(Duration::from_secs(3)).await;
    shutdown.cancel();
    relay.await.unwrap();
    consumer.await.unwrap();

    let effects = recorder.effects.lock().unwrap().clone();
    let applied: HashSet<&String> = effects.keys().collect();
    assert_eq!(
        applied, expected,
        "every written event was applied, and nothing else"
    );
    assert!(
        effects.values().all(|&n| n == 1),
        "each event applied exactly once"
    );
    assert!(recorder.calls.load(Ordering::SeqCst) as usize >= written.len());
    eprintln!(
        "outage of {OUTAGE:?}: {} events written ({} before the outage), {} handler calls, {backlog} in the outbox mid-outage, lag afterwards {:?} (median)",
        written.len(),
        during,
        recorder.calls.load(Ordering::SeqCst),
        lags[lags.len() / 2]
    );
    assert_eq!(store.outbox_backlog().await.unwrap().unpublished, 0);
    nats.delete_topic("task-events").await.unwrap();
}

/// `delete_topics` removes the stream of every topic and dead-letter topic under a prefix and
/// leaves other prefixes alone.
#[tokio::test]
async fn delete_topics_removes_every_stream_under_its_prefix_only() {
    let bus = shared_bus().await;
    let (ours, theirs) = (
        TopicNames {
            prefix: format!("mine-{}-", unique()),
            ..TopicNames::default()
        },
        TopicNames {
            prefix: format!("other-{}-", unique()),
            ..TopicNames::default()
        },
    );
    let physical = |names: &TopicNames| -> Vec<String> {
        taskflow_domain::events::Topic::ALL
            .iter()
            .flat_map(|topic| [topic.name().to_owned(), dead_letter_topic(topic.name())])
            .map(|logical| names.physical(&logical))
            .collect()
    };
    let specs: Vec<TopicSpec> = physical(&ours)
        .into_iter()
        .chain(physical(&theirs))
        .map(|name| TopicSpec {
            name,
            partitions: 1,
            retention: Duration::from_secs(3600),
        })
        .collect();
    bus.ensure_topics(&specs).await.unwrap();
    assert_eq!(specs.len(), 16);

    bus.delete_topics(&ours).await.unwrap();
    for topic in physical(&ours) {
        assert!(
            bus.jetstream()
                .get_stream(bus.stream_name(&topic))
                .await
                .is_err(),
            "{topic} is gone"
        );
    }
    for topic in physical(&theirs) {
        bus.jetstream()
            .get_stream(bus.stream_name(&topic))
            .await
            .unwrap();
    }
    bus.delete_topics(&theirs).await.unwrap();
    // Deleting what is gone is not an error.
    bus.delete_topics(&ours).await.unwrap();
}
