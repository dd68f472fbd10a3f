//! The Dapr backend against a local double of the sidecar (the real sidecar cannot run here):
//! the HTTP contract, the delivery story adapted to Dapr's push model, and the consumer story
//! behind an outbox relay.
#![cfg(feature = "dapr")]
#![allow(clippy::unwrap_used)]

mod dapr_double;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::routing::{get, post};
use dapr_double::{AppResult, DaprDouble, DoubleConfig, Fate};
use serde_json::{Value, json};
use taskflow_bus::backends::dapr::{DaprBus, DaprSecrets, DaprSettings};
use taskflow_bus::relay::RelaySettings;
use taskflow_bus::{BusError, EventBus, Message, Received, Subscription, TopicNames};
use taskflow_store::Store;
use taskflow_store::sqlite::{SqliteSettings, SqliteStore};
use tokio_util::sync::CancellationToken;

/// Serves `router` on a free local port until the token is cancelled.
async fn serve(router: axum::Router) -> (String, CancellationToken) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let stop = CancellationToken::new();
    let until = stop.clone();
    tokio::spawn(async move {
        let _ = axum::serve(listener, router)
            .with_graceful_shutdown(until.cancelled_owned())
            .await;
    });
    (url, stop)
}

/// An application with a DaprBus, its routes served.
struct App {
    bus: Arc<DaprBus>,
    url: String,
    _stop: CancellationToken,
}

async fn app(settings: DaprSettings) -> App {
    let bus = Arc::new(DaprBus::new(&settings).unwrap());
    let (url, stop) = serve(bus.router()).await;
    App {
        bus,
        url,
        _stop: stop,
    }
}

fn settings(double: &DaprDouble) -> DaprSettings {
    DaprSettings {
        http_endpoint: double.endpoint(),
        timeout_ms: 2_000,
        ..DaprSettings::default()
    }
}

/// A sidecar double, an application whose bus talks to it (its settings passed through
/// `adjust`), and a fresh topic. The application has not been attached to the double yet.
async fn double_and_app(
    adjust: impl FnOnce(DaprSettings) -> DaprSettings,
) -> (DaprDouble, App, String) {
    let double = DaprDouble::start(DoubleConfig::default()).await;
    let app = app(adjust(settings(&double))).await;
    (double, app, unique_topic())
}

fn unique_topic() -> String {
    format!("dapr-{}", uuid::Uuid::now_v7().simple())
}

/// A structured CloudEvent like the outbox holds, keyed by `key`, carrying `n`.
fn event(topic: &str, key: &str, n: usize) -> Message {
    let id = uuid::Uuid::now_v7().to_string();
    let payload = json!({
        "specversion": "1.0",
        "id": id,
        "source": "/taskflow",
        "type": "taskflow.story.message.v1",
        "time": "2025-01-01T00:00:00Z",
        "datacontenttype": "application/json",
        "partitionkey": key,
        "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "data": {"key": key, "n": n},
    });
    Message {
        topic: topic.to_owned(),
        key: key.to_owned(),
        id: format!("{id}:{n}"),
        payload: serde_json::to_vec(&payload).unwrap(),
    }
}

fn n_of(received: &Received) -> u64 {
    let value: Value = serde_json::from_slice(&received.message.payload).unwrap();
    value["data"]["n"].as_u64().unwrap()
}

fn id_of(message: &Message) -> String {
    let value: Value = serde_json::from_slice(&message.payload).unwrap();
    value["id"].as_str().unwrap().to_owned()
}

async fn next(subscription: &mut Box<dyn Subscription>) -> Received {
    tokio::time::timeout(Duration::from_secs(10), subscription.next())
        .await
        .expect("a delivery within 10 s")
        .unwrap()
}

#[tokio::test]
async fn publish_sends_the_cloud_event_as_is_with_the_partition_key_and_trace() {
    let double = DaprDouble::start(DoubleConfig::default()).await;
    let bus = DaprBus::new(&settings(&double)).unwrap();
    let topic = unique_topic();
    let mut batch: Vec<Message> = (0..3)
        .map(|n| event(&topic, if n == 1 { "bob" } else { "alice" }, n))
        .collect();
    batch[2].key = String::new();
    bus.publish(&batch).await.unwrap();

    let published = double.published();
    assert_eq!(published.len(), 3);
    for (sent, got) in batch.iter().zip(&published) {
        let original: Value = serde_json::from_slice(&sent.payload).unwrap();
        assert_eq!(got.pubsub, "taskflow-pubsub");
        assert_eq!(got.topic, topic);
        assert_eq!(got.content_type, "application/cloudevents+json");
        assert_eq!(
            got.partition_key.as_deref(),
            (!sent.key.is_empty()).then_some(sent.key.as_str())
        );
        // Passthrough: our attributes unchanged, the sidecar's added.
        for attribute in [
            "id",
            "source",
            "type",
            "time",
            "partitionkey",
            "data",
            "traceparent",
        ] {
            assert_eq!(got.envelope[attribute], original[attribute], "{attribute}");
        }
        assert_eq!(got.envelope["topic"], json!(topic));
        assert_eq!(got.envelope["pubsubname"], json!("taskflow-pubsub"));
    }
}

/// The settings of a bus that publishes in bulk, at most `max` events per request.
fn bulk_publishing(double: &DaprDouble, max: u32) -> DaprSettings {
    DaprSettings {
        bulk_publish_max_messages: max,
        ..settings(double)
    }
}

#[tokio::test]
async fn bulk_publish_sends_one_event_per_key_per_request_and_keeps_each_keys_order() {
    let double = DaprDouble::start(DoubleConfig::default()).await;
    let bus = DaprBus::new(&bulk_publishing(&double, 10)).unwrap();
    let (first, second) = (unique_topic(), unique_topic());
    // 25 keys on the first topic (4 events each, interleaved), 1 key on the second.
    let mut batch = Vec::new();
    for n in 0..4 {
        for key in 0..25 {
            batch.push(event(&first, &format!("user-{key}"), n));
        }
        batch.push(event(&second, "solo", n));
    }
    bus.publish(&batch).await.unwrap();

    let published = double.published();
    assert_eq!(published.len(), batch.len());
    // Per key, the double's log holds the events in publish order, although it appends the
    // entries of each request in a random order.
    let mut by_key: HashMap<(String, String), Vec<u64>> = HashMap::new();
    let mut requests: HashMap<u64, Vec<String>> = HashMap::new();
    for got in &published {
        let key = got.partition_key.clone().expect("every entry has its key");
        by_key
            .entry((got.topic.clone(), key.clone()))
            .or_default()
            .push(got.envelope["data"]["n"].as_u64().unwrap());
        assert_eq!(got.envelope["partitionkey"], json!(key));
        requests.entry(got.request).or_default().push(key);
        assert_eq!(got.content_type, "application/cloudevents+json");
        // Every test event has one trace, so the request carries it and each entry's span
        // belongs to it.
        let trace = got.envelope["traceparent"].as_str().unwrap();
        assert_eq!(
            trace.split('-').nth(1),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
    }
    assert_eq!(by_key.len(), 26);
    assert!(by_key.values().all(|ns| ns == &[0, 1, 2, 3]), "{by_key:?}");
    for keys in requests.values() {
        assert!(keys.len() <= 10, "{keys:?}");
        let distinct: std::collections::HashSet<_> = keys.iter().collect();
        assert_eq!(
            distinct.len(),
            keys.len(),
            "one event per key in a request: {keys:?}"
        );
    }
    // 4 waves: 3 requests each for 25 keys, 1 for the lone key.
    assert_eq!(requests.len(), 4 * 3 + 4);
}

#[tokio::test]
async fn bulk_publish_refuses_a_batch_with_an_event_that_is_not_a_json_object() {
    let double = DaprDouble::start(DoubleConfig::default()).await;
    let bus = DaprBus::new(&bulk_publishing(&double, 10)).unwrap();
    let topic = unique_topic();
    let batch = [
        event(&topic, "alice", 0),
        Message {
            payload: b"[1]".to_vec(),
            ..event(&topic, "bob", 0)
        },
    ];
    match bus.publish(&batch).await {
        Err(BusError::Unavailable(message)) => {
            assert!(message.contains("not a JSON object"), "{message}")
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert!(double.published().is_empty());
    let wrong = DaprBus::new(&DaprSettings {
        pubsub_name: "nope".into(),
        ..bulk_publishing(&double, 10)
    })
    .unwrap();
    match wrong.publish(&[event(&topic, "alice", 1)]).await {
        Err(BusError::Unavailable(message)) => {
            assert!(message.contains("ERR_PUBSUB_NOT_FOUND"), "{message}")
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

#[tokio::test]
async fn subscribe_endpoint_lists_every_registered_topic_with_its_route() {
    let app = app(DaprSettings::default()).await;
    app.bus.register("task-events");
    let _sub = app
        .bus
        .subscribe("t1-reminders.dlq", "notifier")
        .await
        .unwrap();
    let listed: Value = reqwest::get(format!("{}/dapr/subscribe", app.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        listed,
        json!([
            {"pubsubname": "taskflow-pubsub", "topic": "t1-reminders.dlq", "route": "/dapr/events/t1-reminders.dlq", "metadata": {},
             "bulkSubscribe": {"enabled": true, "maxMessagesCount": 100, "maxAwaitDurationMs": 5}},
            {"pubsubname": "taskflow-pubsub", "topic": "task-events", "route": "/dapr/events/task-events", "metadata": {},
             "bulkSubscribe": {"enabled": true, "maxMessagesCount": 100, "maxAwaitDurationMs": 5}},
        ])
    );

    let single = self::app(DaprSettings {
        bulk_max_messages: 1,
        ..DaprSettings::default()
    })
    .await;
    single.bus.register("task-events");
    let listed: Value = reqwest::get(format!("{}/dapr/subscribe", single.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        listed,
        json!([{"pubsubname": "taskflow-pubsub", "topic": "task-events", "route": "/dapr/events/task-events", "metadata": {}}]),
        "bulk_max_messages = 1 asks for one event per request"
    );
}

#[test]
fn settings_the_sidecar_cannot_work_with_are_refused() {
    for (settings, field) in [
        (
            DaprSettings {
                bulk_max_messages: 0,
                ..DaprSettings::default()
            },
            "bulk_max_messages",
        ),
        (
            DaprSettings {
                bulk_max_messages: 1_001,
                ..DaprSettings::default()
            },
            "bulk_max_messages",
        ),
        (
            DaprSettings {
                bulk_publish_max_messages: 0,
                ..DaprSettings::default()
            },
            "bulk_publish_max_messages",
        ),
        (
            DaprSettings {
                bulk_publish_max_messages: 1_001,
                ..DaprSettings::default()
            },
            "bulk_publish_max_messages",
        ),
        (
            DaprSettings {
                bulk_max_await_ms: 60_001,
                ..DaprSettings::default()
            },
            "bulk_max_await_ms",
        ),
        (
            DaprSettings {
                pubsub_name: " ".into(),
                ..DaprSettings::default()
            },
            "pubsub_name",
        ),
    ] {
        assert_eq!(settings.validate().unwrap_err().0, field);
        let error = DaprBus::new(&settings).unwrap_err();
        assert!(
            matches!(&error, BusError::Config(message) if message.contains(field)),
            "{error}"
        );
    }
    DaprSettings::default().validate().unwrap();
}

/// Distinct HTTP requests among `attempts` of attempt number `attempt`, with their sizes.
fn requests_of(attempts: &[dapr_double::Attempt], attempt: u32) -> Vec<usize> {
    let mut sizes = std::collections::BTreeMap::<u64, usize>::new();
    for a in attempts.iter().filter(|a| a.attempt == attempt) {
        *sizes.entry(a.request).or_default() += 1;
    }
    sizes.into_values().collect()
}

#[tokio::test]
async fn bulk_deliveries_carry_many_events_per_request_in_order() {
    let (double, app, topic) = double_and_app(|s| DaprSettings {
        bulk_max_await_ms: 300,
        ..s
    })
    .await;
    let mut sub = app.bus.subscribe(&topic, "g").await.unwrap();
    double.attach_app("app", &app.url).await.unwrap();

    let batch: Vec<Message> = (0..50).map(|n| event(&topic, "alice", n)).collect();
    app.bus.publish(&batch).await.unwrap();
    let mut seen = Vec::new();
    while seen.len() < batch.len() {
        let received = tokio::time::timeout(Duration::from_secs(10), sub.next_batch(128))
            .await
            .expect("deliveries within 10 s")
            .unwrap();
        seen.extend(received.iter().map(n_of));
        sub.ack_all(received).await.unwrap();
    }
    assert_eq!(seen, (0..50).collect::<Vec<u64>>(), "in publish order");
    double
        .wait_for("every event answered SUCCESS", |_, fates| {
            fates.iter().filter(|f| f.fate == Fate::Delivered).count() == 50
        })
        .await;
    let attempts = double.attempts();
    assert!(attempts.iter().all(|a| a.result == AppResult::Success));
    let requests = requests_of(&attempts, 1);
    assert!(
        requests.len() < 5 && requests.iter().any(|n| *n > 10),
        "50 events in a few bulk requests, got sizes {requests:?}"
    );
}

#[tokio::test]
async fn bulk_entries_not_acknowledged_by_every_group_are_retried_alone() {
    let (double, app, topic) = double_and_app(|s| DaprSettings {
        bulk_max_await_ms: 300,
        ..s
    })
    .await;
    let mut audit = app.bus.subscribe(&topic, "audit").await.unwrap();
    let mut mailer = app.bus.subscribe(&topic, "mailer").await.unwrap();
    double.attach_app("app", &app.url).await.unwrap();

    let batch: Vec<Message> = (0..3).map(|n| event(&topic, "alice", n)).collect();
    app.bus.publish(&batch).await.unwrap();
    let mut to_audit = Vec::new();
    while to_audit.len() < 3 {
        to_audit.extend(audit.next_batch(10).await.unwrap());
    }
    audit.ack_all(to_audit).await.unwrap();
    let mut to_mailer = Vec::new();
    while to_mailer.len() < 3 {
        to_mailer.extend(mailer.next_batch(10).await.unwrap());
    }
    let unacked = to_mailer.pop().unwrap();
    assert_eq!(n_of(&unacked), 2);
    mailer.ack_all(to_mailer).await.unwrap();
    drop(unacked);
    // The mailer stops before acknowledging the third event, and a new member takes over.
    drop(mailer);
    let mut mailer = app.bus.subscribe(&topic, "mailer").await.unwrap();

    let third = id_of(&batch[2]);
    let again = next(&mut mailer).await;
    assert_eq!(
        again.message.id, third,
        "only the unacknowledged entry comes again"
    );
    mailer.ack(again).await.unwrap();
    let again = next(&mut audit).await;
    assert_eq!(again.message.id, third, "every group sees the redelivery");
    audit.ack(again).await.unwrap();
    double
        .wait_for("every event delivered", |_, fates| {
            fates.iter().filter(|f| f.fate == Fate::Delivered).count() == 3
        })
        .await;
    let attempts = double.attempts();
    assert_eq!(requests_of(&attempts, 1), [3], "one bulk request at first");
    let retried: Vec<_> = attempts.iter().filter(|a| a.attempt > 1).collect();
    assert!(
        retried.iter().all(|a| a.id == third),
        "retries carry the failed entry only: {retried:?}"
    );
    assert_eq!(retried.last().unwrap().result, AppResult::Success);
    let first_round: Vec<_> = attempts
        .iter()
        .filter(|a| a.attempt == 1)
        .map(|a| (a.id.clone(), a.result.clone()))
        .collect();
    assert_eq!(
        first_round,
        [
            (id_of(&batch[0]), AppResult::Success),
            (id_of(&batch[1]), AppResult::Success),
            (third.clone(), AppResult::Retry),
        ]
    );
}

#[tokio::test]
async fn bulk_entries_that_are_not_cloud_events_are_dropped_alone() {
    let app = app(DaprSettings::default()).await;
    let mut sub = app.bus.subscribe("known", "g").await.unwrap();
    let client = reqwest::Client::new();
    let post = |body: Value| {
        client
            .post(format!("{}/dapr/events/known", app.url))
            .header("content-type", "application/json")
            .json(&body)
            .send()
    };
    let consumer = tokio::spawn(async move {
        let received = next(&mut sub).await;
        let key = received.message.key.clone();
        sub.ack(received).await.unwrap();
        key
    });
    let response = post(json!({
        "id": "bulk-1", "type": "com.dapr.event.sent.bulk", "topic": "known", "pubsubname": "taskflow-pubsub",
        "metadata": {},
        "entries": [
            {"entryId": "a", "event": {"id": "e1", "partitionkey": "alice", "specversion": "1.0"}, "contentType": "application/cloudevents+json", "metadata": {}},
            {"entryId": "b", "event": "plain text", "contentType": "text/plain", "metadata": {}},
            {"event": {"id": "e3"}, "metadata": {}},
        ],
    }))
    .await
    .unwrap();
    assert_eq!(response.status(), 200);
    let mut statuses = response.json::<Value>().await.unwrap()["statuses"]
        .as_array()
        .unwrap()
        .clone();
    statuses.sort_by_key(|s| s["entryId"].as_str().unwrap().to_owned());
    assert_eq!(
        statuses,
        [
            json!({"entryId": "a", "status": "SUCCESS"}),
            json!({"entryId": "b", "status": "DROP"}),
        ],
        "an entry without an id cannot be answered"
    );
    assert_eq!(consumer.await.unwrap(), "alice");

    let response = post(json!({"entries": [1, 2]})).await.unwrap();
    assert_eq!(
        response.status(),
        400,
        "an unreadable bulk delivery is retried by the sidecar"
    );
}

/// A hand-written bulk subscriber to check the double reads bulk answers like the runtime.
#[tokio::test]
async fn the_double_interprets_bulk_answers_like_the_runtime() {
    use axum::response::IntoResponse;
    let double = DaprDouble::start(DoubleConfig {
        max_attempts: 2,
        ..DoubleConfig::default()
    })
    .await;
    let bodies: Arc<Mutex<Vec<(String, Value)>>> = Arc::default();
    let seen = bodies.clone();
    let mixed = post(
        move |headers: axum::http::HeaderMap, Json(body): Json<Value>| {
            let seen = seen.clone();
            async move {
                let content_type = headers["content-type"].to_str().unwrap().to_owned();
                seen.lock().unwrap().push((content_type, body.clone()));
                let mut statuses = vec![json!({"entryId": "not-sent", "status": "SUCCESS"})];
                for entry in body["entries"].as_array().unwrap() {
                    let status = match entry["event"]["data"]["n"].as_u64().unwrap() {
                        0 => "SUCCESS",
                        1 => "DROP",
                        2 => "RETRY",
                        _ => continue, // not answered: RETRY
                    };
                    statuses.push(json!({"entryID": entry["entryId"], "status": status}));
                }
                Json(json!({ "statuses": statuses }))
            }
        },
    );
    let bulk = json!({"enabled": true, "maxMessagesCount": 10, "maxAwaitDurationMs": 300});
    let subscriptions = json!([
        {"pubsubname": "taskflow-pubsub", "topic": "mixed", "route": "/mixed", "bulkSubscribe": bulk},
        {"pubsubname": "taskflow-pubsub", "topic": "gone", "route": "/missing", "bulkSubscribe": bulk},
        {"pubsubname": "taskflow-pubsub", "topic": "broken", "route": "/broken", "bulkSubscribe": bulk},
    ]);
    let router = axum::Router::new()
        .route(
            "/dapr/subscribe",
            get(move || async move { Json(subscriptions) }),
        )
        .route("/mixed", mixed)
        .route(
            "/broken",
            post(|| async { axum::http::StatusCode::INTERNAL_SERVER_ERROR.into_response() }),
        );
    let (url, _stop) = serve(router).await;
    double.attach_app("raw", &url).await.unwrap();
    let bus = DaprBus::new(&settings(&double)).unwrap();
    let mixed: Vec<Message> = (0..4).map(|n| event("mixed", "alice", n)).collect();
    bus.publish(&mixed).await.unwrap();
    bus.publish(&[event("gone", "alice", 0), event("gone", "alice", 1)])
        .await
        .unwrap();
    bus.publish(&[event("broken", "alice", 0)]).await.unwrap();
    double
        .wait_for("every event settled", |_, fates| fates.len() == 7)
        .await;

    let fates = double.dispositions();
    let fate_of = |message: &Message| {
        let id = id_of(message);
        fates
            .iter()
            .filter(|d| d.id == id)
            .map(|d| d.fate.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(fate_of(&mixed[0]), [Fate::Delivered]);
    assert_eq!(fate_of(&mixed[1]), [Fate::Dropped]);
    assert_eq!(
        fate_of(&mixed[2]),
        [Fate::GaveUp],
        "RETRY until the last attempt"
    );
    assert_eq!(
        fate_of(&mixed[3]),
        [Fate::GaveUp],
        "an entry left unanswered is RETRY"
    );
    let attempts = double.attempts();
    let of_topic = |topic: &str| {
        attempts
            .iter()
            .filter(|a| a.topic == topic)
            .map(|a| (a.attempt, a.result.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        of_topic("gone"),
        [(1, AppResult::NotFound), (1, AppResult::NotFound)],
        "404 drops every entry"
    );
    assert_eq!(
        of_topic("broken"),
        [(1, AppResult::Status(500)), (2, AppResult::Status(500))]
    );
    let bodies = bodies.lock().unwrap().clone();
    assert_eq!(bodies.len(), 2, "one bulk request, then one retry");
    let (content_type, first) = &bodies[0];
    assert_eq!(content_type, "application/json");
    assert_eq!(first["type"], "com.dapr.event.sent.bulk");
    assert_eq!(first["topic"], "mixed");
    assert_eq!(first["pubsubname"], "taskflow-pubsub");
    let entries = first["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 4);
    assert_eq!(entries[0]["contentType"], "application/cloudevents+json");
    assert_eq!(entries[0]["event"]["id"], json!(id_of(&mixed[0])));
    assert_eq!(
        entries[0]["event"]["topic"], "mixed",
        "entries are the sidecar's CloudEvents"
    );
    let retried: Vec<u64> = bodies[1].1["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"]["data"]["n"].as_u64().unwrap())
        .collect();
    assert_eq!(retried, [2, 3], "the retry carries only the failed entries");
}

#[tokio::test]
async fn deliveries_arrive_in_order_per_key_and_the_ack_answers_success() {
    let (double, app, topic) = double_and_app(|s| s).await;
    let mut sub = app.bus.subscribe(&topic, "g").await.unwrap();
    double.attach_app("app", &app.url).await.unwrap();

    let batch: Vec<Message> = (0..30)
        .map(|n| event(&topic, ["bob", "alice", "carol"][n % 3], n))
        .collect();
    app.bus.publish(&batch).await.unwrap();
    let mut last_of_key = std::collections::HashMap::new();
    for _ in &batch {
        let received = next(&mut sub).await;
        let n = n_of(&received);
        let sent = &batch[usize::try_from(n).unwrap()];
        if let Some(before) = last_of_key.insert(sent.key.clone(), n) {
            assert!(before < n, "{}'s events in publish order", sent.key);
        }
        assert_eq!(received.message.topic, topic);
        assert_eq!(
            received.message.key, sent.key,
            "the key comes from the partitionkey attribute"
        );
        assert_eq!(
            received.message.id,
            id_of(sent),
            "the id is the CloudEvent id"
        );
        assert_eq!(received.redeliveries, 0);
        sub.ack(received).await.unwrap();
    }
    double
        .wait_for("every event answered SUCCESS", |_, fates| {
            fates.iter().filter(|f| f.fate == Fate::Delivered).count() == 30
        })
        .await;
    assert_eq!(last_of_key.len(), 3);
    assert!(
        double
            .attempts()
            .iter()
            .all(|a| a.attempt == 1 && a.result == AppResult::Success)
    );
}

#[tokio::test]
async fn dropping_a_subscription_with_unacked_deliveries_answers_retry_and_they_come_again() {
    let (double, app, topic) = double_and_app(|s| s).await;
    app.bus.register(&topic);
    double.attach_app("app", &app.url).await.unwrap();

    let mut sub = app.bus.subscribe(&topic, "g").await.unwrap();
    let message = event(&topic, "alice", 0);
    app.bus
        .publish(std::slice::from_ref(&message))
        .await
        .unwrap();
    let received = next(&mut sub).await;
    drop(received); // never acknowledged: still pending while the subscription lives
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        double.attempts().is_empty(),
        "no answer before the ack or the drop"
    );
    drop(sub);
    let id = id_of(&message);
    double
        .wait_for("a RETRY answer", |attempts, _| {
            attempts
                .iter()
                .any(|a| a.id == id && a.result == AppResult::Retry)
        })
        .await;

    let mut again = app.bus.subscribe(&topic, "g").await.unwrap();
    let received = next(&mut again).await;
    assert_eq!(received.message.id, id);
    again.ack(received).await.unwrap();
    double
        .wait_for("the redelivery to succeed", |_, fates| {
            fates
                .iter()
                .any(|f| f.id == id && f.fate == Fate::Delivered)
        })
        .await;
}

#[tokio::test]
async fn groups_in_one_app_each_get_every_event_and_members_of_a_group_share() {
    // One event per request, so each answer can be watched on its own.
    let (double, app, topic) = double_and_app(|s| DaprSettings {
        bulk_max_messages: 1,
        ..s
    })
    .await;
    let mut audit = app.bus.subscribe(&topic, "audit").await.unwrap();
    let mut mailer_1 = app.bus.subscribe(&topic, "mailer").await.unwrap();
    let mut mailer_2 = app.bus.subscribe(&topic, "mailer").await.unwrap();
    double.attach_app("app", &app.url).await.unwrap();

    let batch = [event(&topic, "alice", 0), event(&topic, "alice", 1)];
    app.bus.publish(&batch).await.unwrap();
    let first = id_of(&batch[0]);
    let to_audit = next(&mut audit).await;
    let to_mailer = next(&mut mailer_1).await;
    assert_eq!((n_of(&to_audit), n_of(&to_mailer)), (0, 0));
    audit.ack(to_audit).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        double.attempts().is_empty(),
        "SUCCESS waits for every group"
    );
    mailer_1.ack(to_mailer).await.unwrap();
    double
        .wait_for("the first event to succeed", |_, fates| {
            fates
                .iter()
                .any(|f| f.id == first && f.fate == Fate::Delivered)
        })
        .await;

    // The second event goes to one member of the mailer group: here the idle one.
    let to_audit = next(&mut audit).await;
    let to_mailer = next(&mut mailer_2).await;
    assert_eq!((n_of(&to_audit), n_of(&to_mailer)), (1, 1));
    audit.ack(to_audit).await.unwrap();
    mailer_2.ack(to_mailer).await.unwrap();
    double
        .wait_for("both events to succeed", |_, fates| fates.len() == 2)
        .await;
}

#[tokio::test]
async fn malformed_deliveries_are_dropped_unknown_topics_are_404_and_unready_ones_retry() {
    let app = app(DaprSettings::default()).await;
    app.bus.register("waiting");
    let _sub = app.bus.subscribe("known", "g").await.unwrap();
    let client = reqwest::Client::new();
    let post = |topic: &str, body: &'static str| {
        client
            .post(format!("{}/dapr/events/{topic}", app.url))
            .header("content-type", "application/cloudevents+json")
            .body(body)
            .send()
    };
    for body in ["not json", "[1, 2]", "\"text\""] {
        let response = post("known", body).await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(
            response.json::<Value>().await.unwrap(),
            json!({"status": "DROP"}),
            "{body}"
        );
    }
    assert_eq!(post("unknown", "{}").await.unwrap().status(), 404);
    let response = post("waiting", r#"{"id":"1"}"#).await.unwrap();
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"status": "RETRY"}),
        "registered, nobody subscribed yet"
    );
}

#[tokio::test]
async fn shutdown_answers_retry_to_pending_deliveries_and_closes_subscriptions() {
    let (double, app, topic) = double_and_app(|s| s).await;
    let mut sub = app.bus.subscribe(&topic, "g").await.unwrap();
    double.attach_app("app", &app.url).await.unwrap();
    let message = event(&topic, "alice", 0);
    app.bus
        .publish(std::slice::from_ref(&message))
        .await
        .unwrap();
    let _held = next(&mut sub).await;
    app.bus.shutdown();
    let id = id_of(&message);
    double
        .wait_for("a RETRY answer", |attempts, _| {
            attempts
                .iter()
                .any(|a| a.id == id && a.result == AppResult::Retry)
        })
        .await;
    assert!(matches!(sub.next().await, Err(BusError::Closed)));
}

/// A hand-written subscriber app to check the double reads answers like the Dapr runtime.
#[tokio::test]
async fn the_double_interprets_subscriber_answers_like_the_runtime() {
    let double = DaprDouble::start(DoubleConfig {
        max_attempts: 3,
        ..DoubleConfig::default()
    })
    .await;
    let received: Arc<Mutex<Vec<(String, Value)>>> = Arc::default();
    let record = |route: &'static str, answer: Option<Value>| {
        let received = received.clone();
        post(move |Json(body): Json<Value>| async move {
            received.lock().unwrap().push((route.to_owned(), body));
            match answer {
                Some(answer) => Json(answer).into_response(),
                None => axum::http::StatusCode::INTERNAL_SERVER_ERROR.into_response(),
            }
        })
    };
    use axum::response::IntoResponse;
    let router = axum::Router::new()
        .route(
            "/dapr/subscribe",
            get(|| async {
                Json(json!([
                    {"pubsubname": "taskflow-pubsub", "topic": "ok", "route": "/ok"},
                    {"pubsubname": "taskflow-pubsub", "topic": "retry", "routes": {"default": "/retry"}, "deadLetterTopic": "retry-dead"},
                    {"pubsubname": "taskflow-pubsub", "topic": "retry-dead", "route": "/dead"},
                    {"pubsubname": "taskflow-pubsub", "topic": "drop", "route": "/drop"},
                    {"pubsubname": "taskflow-pubsub", "topic": "gone", "route": "/missing"},
                    {"pubsubname": "taskflow-pubsub", "topic": "broken", "route": "/broken"},
                    {"pubsubname": "other", "topic": "ok", "route": "/ok"},
                ]))
            }),
        )
        .route("/ok", record("ok", Some(json!({}))))
        .route("/retry", record("retry", Some(json!({"status": "RETRY"}))))
        .route("/dead", record("dead", Some(json!({"status": "SUCCESS"}))))
        .route("/drop", record("drop", Some(json!({"status": "DROP"}))))
        .route("/broken", record("broken", None));
    let (url, _stop) = serve(router).await;
    double.attach_app("raw", &url).await.unwrap();

    // Plain JSON is wrapped into a CloudEvent like the sidecar does.
    let client = reqwest::Client::new();
    for topic in ["ok", "retry", "drop", "gone", "broken"] {
        let response = client
            .post(format!(
                "{}/v1.0/publish/taskflow-pubsub/{topic}",
                double.endpoint()
            ))
            .json(&json!({"topic": topic}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 204);
    }
    double
        .wait_for("every event settled", |_, fates| fates.len() == 6)
        .await;
    let fate = |topic: &str| {
        double
            .dispositions()
            .into_iter()
            .filter(|d| d.topic == topic)
            .map(|d| d.fate)
            .collect::<Vec<_>>()
    };
    let results = |topic: &str| {
        double
            .attempts()
            .into_iter()
            .filter(|a| a.topic == topic)
            .map(|a| a.result)
            .collect::<Vec<_>>()
    };
    assert_eq!(fate("ok"), [Fate::Delivered], "an empty answer is SUCCESS");
    assert_eq!(
        results("retry"),
        [AppResult::Retry, AppResult::Retry, AppResult::Retry]
    );
    assert_eq!(fate("retry"), [Fate::DeadLettered("retry-dead".into())]);
    assert_eq!(fate("retry-dead"), [Fate::Delivered]);
    assert_eq!(fate("drop"), [Fate::Dropped]);
    assert_eq!(results("gone"), [AppResult::NotFound]);
    assert_eq!(fate("gone"), [Fate::Dropped]);
    assert_eq!(
        results("broken"),
        [
            AppResult::Status(500),
            AppResult::Status(500),
            AppResult::Status(500)
        ]
    );
    assert_eq!(fate("broken"), [Fate::GaveUp]);

    let received = received.lock().unwrap().clone();
    let (_, ok) = received.iter().find(|(route, _)| route == "ok").unwrap();
    assert_eq!(ok["type"], "com.dapr.event.sent");
    assert_eq!(ok["datacontenttype"], "application/json");
    assert_eq!(ok["data"], json!({"topic": "ok"}));
    assert_eq!(
        (ok["topic"].as_str(), ok["pubsubname"].as_str()),
        (Some("ok"), Some("taskflow-pubsub"))
    );
    let (_, dead) = received.iter().find(|(route, _)| route == "dead").unwrap();
    let (_, retried) = received.iter().find(|(route, _)| route == "retry").unwrap();
    assert_eq!(
        dead["id"], retried["id"],
        "the dead letter is the original event"
    );
    assert_eq!(
        received.iter().filter(|(route, _)| route == "ok").count(),
        1,
        "the other pubsub's subscription is ignored"
    );
}

#[tokio::test]
async fn publish_fails_with_a_bus_error_for_a_wrong_pubsub_a_bad_event_or_a_missing_sidecar() {
    let double = DaprDouble::start(DoubleConfig::default()).await;
    let topic = unique_topic();
    let wrong = DaprBus::new(&DaprSettings {
        pubsub_name: "nope".into(),
        ..settings(&double)
    })
    .unwrap();
    match wrong.publish(&[event(&topic, "alice", 0)]).await {
        Err(BusError::Unavailable(message)) => {
            assert!(message.contains("ERR_PUBSUB_NOT_FOUND"), "{message}")
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }

    let bus = DaprBus::new(&settings(&double)).unwrap();
    let mut bad = event(&topic, "alice", 0);
    bad.payload = b"[1]".to_vec();
    match bus.publish(&[bad]).await {
        Err(BusError::Unavailable(message)) => {
            assert!(message.contains("ERR_PUBSUB_CLOUD_EVENTS_SER"), "{message}")
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    // In order: the first fails, the second is not sent.
    let batch = [
        Message {
            payload: b"oops".to_vec(),
            ..event(&topic, "alice", 0)
        },
        event(&topic, "alice", 1),
    ];
    assert!(bus.publish(&batch).await.is_err());
    assert!(double.published().is_empty());

    double.stop().await;
    match bus.publish(&[event(&topic, "alice", 2)]).await {
        Err(BusError::Unavailable(message)) => {
            assert!(message.contains("cannot publish"), "{message}")
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert!(
        DaprBus::new(&DaprSettings {
            http_endpoint: "localhost:3500".into(),
            ..DaprSettings::default()
        })
        .is_err()
    );
}

#[tokio::test]
async fn api_tokens_are_sent_to_the_sidecar_and_required_from_it() {
    let double = DaprDouble::start(DoubleConfig {
        api_token: Some("sidecar-token".into()),
        app_api_token: Some("app-token".into()),
        ..DoubleConfig::default()
    })
    .await;
    let topic = unique_topic();

    let without = DaprBus::new(&settings(&double)).unwrap();
    match without.publish(&[event(&topic, "alice", 0)]).await {
        Err(BusError::Unavailable(message)) => assert!(message.contains("401"), "{message}"),
        other => panic!("expected a refusal, got {other:?}"),
    }

    let wrong_app_token = app(DaprSettings {
        app_api_token: Some("other".into()),
        ..settings(&double)
    })
    .await;
    wrong_app_token.bus.register(&topic);
    assert!(
        double
            .attach_app("wrong", &wrong_app_token.url)
            .await
            .unwrap_err()
            .contains("401")
    );

    let app = app(DaprSettings {
        api_token: Some("sidecar-token".into()),
        app_api_token: Some("app-token".into()),
        ..settings(&double)
    })
    .await;
    let mut sub = app.bus.subscribe(&topic, "g").await.unwrap();
    double.attach_app("app", &app.url).await.unwrap();
    app.bus.publish(&[event(&topic, "alice", 0)]).await.unwrap();
    let received = next(&mut sub).await;
    sub.ack(received).await.unwrap();
    double
        .wait_for("SUCCESS", |_, fates| {
            fates.iter().any(|f| f.fate == Fate::Delivered)
        })
        .await;

    // Callers without the app token are refused.
    let client = reqwest::Client::new();
    assert_eq!(
        client
            .get(format!("{}/dapr/subscribe", app.url))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    let forged = client
        .post(format!("{}/dapr/events/{topic}", app.url))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 401);
}

#[tokio::test]
async fn secrets_are_read_through_the_sidecar() {
    let double = DaprDouble::start(DoubleConfig {
        api_token: Some("sidecar-token".into()),
        ..DoubleConfig::default()
    })
    .await;
    double.set_secret(
        "vault",
        "database",
        &[("password", "hunter2"), ("user", "taskflow")],
    );
    let secrets = DaprSecrets::new(&DaprSettings {
        api_token: Some("sidecar-token".into()),
        ..settings(&double)
    })
    .unwrap();
    let values = secrets.get("vault", "database").await.unwrap();
    assert_eq!(values.get("password").map(String::as_str), Some("hunter2"));
    assert_eq!(values.len(), 2);
    assert!(
        matches!(secrets.get("vault", "missing").await, Err(BusError::Config(m)) if m.contains("not found"))
    );
    assert!(
        matches!(secrets.get("nope", "database").await, Err(BusError::Config(m)) if m.contains("ERR_SECRET_STORE_NOT_FOUND"))
    );

    let without_token = DaprSecrets::new(&settings(&double)).unwrap();
    assert!(
        matches!(without_token.get("vault", "database").await, Err(BusError::Config(m)) if m.contains("401"))
    );
    double.stop().await;
    assert!(matches!(
        secrets.get("vault", "database").await,
        Err(BusError::Unavailable(_))
    ));
}

/// The conformance delivery story with bulk subscribe: the twenty messages arrive in one bulk
/// request, so the story runs as it does for every other backend.
/// The conformance delivery story with bulk subscribe, publishing `bulk_publish_max_messages`
/// events per request at most.
async fn delivery_story_with_bulk_subscribe(bulk_publish_max_messages: u32) {
    let (double, app, topic) = double_and_app(|s| DaprSettings {
        bulk_max_await_ms: 500,
        bulk_publish_max_messages,
        ..s
    })
    .await;
    app.bus.register(&topic);
    double.attach_app("app", &app.url).await.unwrap();
    let bus = app.bus.clone();
    taskflow_bus::conformance::run(app.bus.as_ref(), &topic, |messages| {
        let bus = bus.clone();
        async move { bus.publish(&messages).await.unwrap() }
    })
    .await;
}

#[tokio::test]
async fn dapr_bus_passes_the_delivery_story_with_bulk_subscribe() {
    delivery_story_with_bulk_subscribe(1).await;
}

#[tokio::test]
async fn dapr_bus_passes_the_delivery_story_with_bulk_publish_and_bulk_subscribe() {
    delivery_story_with_bulk_subscribe(100).await;
}

/// The conformance delivery story with one event per request (`bulk_max_messages = 1`),
/// mapped to Dapr's push model. `conformance::run` itself cannot hold then: it reads twenty
/// messages while leaving ten unacknowledged, but the sidecar delivers one event per topic
/// (partition) at a time and waits for our answer, which we give only on acknowledgement.
/// Each step is kept as close as the model allows:
/// * per-key order within a group: the whole batch arrives in publish order;
/// * each group gets every message once while acknowledged: two app-ids (Dapr's groups);
/// * separate groups see everything: the second app-id drains all twenty while the first is
///   stuck on an unacknowledged event;
/// * an unacknowledged message is delivered again to a new member: dropping the subscription
///   answers RETRY, the sidecar redelivers, the new member gets the rest in order.
#[tokio::test]
async fn dapr_bus_passes_the_delivery_story_adapted_to_single_deliveries() {
    let double = DaprDouble::start(DoubleConfig::default()).await;
    let topic = unique_topic();
    let single = DaprSettings {
        bulk_max_messages: 1,
        ..settings(&double)
    };
    let first_app = app(single.clone()).await;
    let other_app = app(single).await;
    first_app.bus.register(&topic);
    other_app.bus.register(&topic);
    double.attach_app("group-a", &first_app.url).await.unwrap();
    double.attach_app("group-b", &other_app.url).await.unwrap();
    let mut first = first_app.bus.subscribe(&topic, "group-a").await.unwrap();
    let mut other_group = other_app.bus.subscribe(&topic, "group-b").await.unwrap();

    let batch: Vec<Message> = (0..20)
        .map(|n| event(&topic, if n % 2 == 0 { "alice" } else { "bob" }, n))
        .collect();
    first_app.bus.publish(&batch).await.unwrap();

    for n in 0..10 {
        let received = next(&mut first).await;
        assert_eq!(n_of(&received), n, "publish order");
        first.ack(received).await.unwrap();
    }
    let held = next(&mut first).await;
    assert_eq!(n_of(&held), 10);

    for n in 0..20 {
        let received = next(&mut other_group).await;
        assert_eq!(
            n_of(&received),
            n,
            "the other group sees every message in order"
        );
        other_group.ack(received).await.unwrap();
    }
    assert!(
        tokio::time::timeout(Duration::from_millis(300), first.next())
            .await
            .is_err(),
        "nothing overtakes the unacknowledged event"
    );

    drop(held);
    drop(first);
    let held_id = id_of(&batch[10]);
    double
        .wait_for("RETRY for the unacknowledged event", |attempts, _| {
            attempts
                .iter()
                .any(|a| a.app == "group-a" && a.id == held_id && a.result == AppResult::Retry)
        })
        .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut again = first_app.bus.subscribe(&topic, "group-a").await.unwrap();
    for n in 10..20 {
        let received = next(&mut again).await;
        assert_eq!(n_of(&received), n, "the new member gets the rest in order");
        again.ack(received).await.unwrap();
    }
    double
        .wait_for("every event delivered to both groups", |_, fates| {
            fates.iter().filter(|f| f.fate == Fate::Delivered).count() == 40
        })
        .await;
}

async fn sqlite_store() -> Arc<dyn Store> {
    let dir = std::env::temp_dir().join(format!("taskflow-bus-dapr-{}", uuid::Uuid::now_v7()));
    let store = SqliteStore::connect(&SqliteSettings::new(format!(
        "sqlite://{}/bus.db",
        dir.display()
    )))
    .await
    .unwrap();
    store.migrate().await.unwrap();
    Arc::new(store)
}

#[tokio::test]
async fn dapr_bus_passes_the_consumer_story_behind_the_outbox_relay() {
    let double = DaprDouble::start(DoubleConfig::default()).await;
    let store = sqlite_store().await;
    let app = app(settings(&double)).await;
    // The sidecar reads the subscriptions once, so the app registers them before it serves.
    app.bus.register("task-events");
    double.attach_app("taskflow", &app.url).await.unwrap();
    let bus: Arc<dyn EventBus> = app.bus.clone();
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
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(store.outbox_backlog().await.unwrap().unpublished, 0);
    let published = double.published();
    assert!(
        published.iter().any(|p| p.topic == "task-events.dlq"),
        "the dead-letter notice went out too"
    );
    assert!(
        published
            .iter()
            .all(|p| p.partition_key.as_deref().is_some_and(|k| !k.is_empty()))
    );
}
