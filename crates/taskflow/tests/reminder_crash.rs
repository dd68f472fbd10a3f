//! Reminders survive kill -9: reminders due a few seconds ahead are created, the server is
//! killed with SIGKILL while they fall due (several times, at moments spread over the firing
//! window), and restarted. In the end every reminder fired exactly once (one `reminder.due`
//! event, one feed entry) and reached the webhook receiver under exactly one delivery id; those
//! due while the server was down fired at once after the restart, marked late.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::Child;
use std::time::Duration;

use chrono::{TimeDelta, Utc};
use serde_json::{Value, json};
use taskflow_store::sqlite::{SqliteSettings, SqliteStore};
use taskflow_store::{OutboxStore, Store};

const REMINDERS: usize = 30;

fn start(dir: &Path, port: u16) -> Child {
    taskflow_testing::start_taskflow(
        env!("CARGO_BIN_EXE_taskflow"),
        dir,
        port,
        &[
            (
                "TASKFLOW_NOTIFICATIONS__WEBHOOKS__ALLOW_PRIVATE_TARGETS",
                "true",
            ),
            (
                "TASKFLOW_NOTIFICATIONS__WEBHOOK_RETRY__INITIAL_DELAY_SECS",
                "1",
            ),
            ("TASKFLOW_NOTIFICATIONS__WEBHOOK_RETRY__MAX_DELAY_SECS", "1"),
            ("TASKFLOW_NOTIFICATIONS__LEASE_SECS", "2"),
            ("TASKFLOW_SCHEDULER__LEASE_SECS", "2"),
        ],
    )
}

use taskflow_testing::kill9;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reminders_fire_exactly_once_across_kill_9() {
    let dir =
        std::env::temp_dir().join(format!("taskflow-reminder-crash-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&dir).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let base = format!("http://127.0.0.1:{port}");
    let (hook, received) = taskflow_testing::reminder_webhook_receiver().await;

    let server = start(&dir, port);
    let client = reqwest::Client::new();
    let registered: Value = client
        .post(format!("{base}/api/v1/auth/register"))
        .json(&json!({"email": "kill@example.com", "password": "kill test password"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = registered["access_token"].as_str().unwrap().to_owned();
    let response = client
        .post(format!("{base}/api/v1/webhooks"))
        .bearer_auth(&token)
        .json(&json!({"url": hook}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    // Reminders due 2 s … 5 s from now, spread evenly.
    let start_at = Utc::now() + TimeDelta::seconds(2);
    for i in 0..REMINDERS {
        let at = start_at + TimeDelta::milliseconds(100 * i as i64);
        let response = client
            .post(format!("{base}/api/v1/tasks"))
            .bearer_auth(&token)
            .json(&json!({"title": format!("r{i}"), "reminders": [{"at": at.to_rfc3339()}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
    }
    // Kill while they fall due, restart, kill again, restart for good.
    let until_first = (start_at - Utc::now()).to_std().unwrap_or_default();
    tokio::time::sleep(until_first + Duration::from_millis(700)).await;
    kill9(server);
    tokio::time::sleep(Duration::from_millis(1200)).await; // some fall due while down
    let server = start(&dir, port);
    tokio::time::sleep(Duration::from_millis(400)).await;
    kill9(server);
    let server = start(&dir, port);

    // Wait until every reminder reached the receiver.
    let deadline = std::time::Instant::now() + Duration::from_secs(40);
    loop {
        let distinct: HashSet<String> = received
            .lock()
            .unwrap()
            .iter()
            .map(|(_, r)| r.clone())
            .collect();
        if distinct.len() == REMINDERS {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "only {} of {REMINDERS} reminders reached the webhook",
            distinct.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await; // let any duplicate show up
    let feed: Value = client
        .get(format!("{base}/api/v1/notifications?limit=200"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    kill9(server);

    // The webhook: each reminder under exactly one delivery id (a crash between a receiver's
    // answer and the record of it can repeat a request, always with the same delivery id, so
    // receivers deduplicate on it).
    let mut ids_per_reminder: HashMap<String, HashSet<String>> = HashMap::new();
    for (delivery, reminder) in received.lock().unwrap().iter() {
        ids_per_reminder
            .entry(reminder.clone())
            .or_default()
            .insert(delivery.clone());
    }
    assert_eq!(ids_per_reminder.len(), REMINDERS);
    assert!(
        ids_per_reminder.values().all(|ids| ids.len() == 1),
        "{ids_per_reminder:?}"
    );
    // The feed: one entry per reminder.
    let items = feed["items"].as_array().unwrap();
    let reminders: HashSet<&str> = items
        .iter()
        .map(|n| n["reminder_id"].as_str().unwrap())
        .collect();
    assert_eq!(items.len(), REMINDERS, "one feed entry each");
    assert_eq!(reminders.len(), REMINDERS);
    // The outbox: one reminder.due per reminder, some marked late.
    let store = SqliteStore::connect(&SqliteSettings::new(format!(
        "sqlite://{}/taskflow-data/taskflow.db",
        dir.display()
    )))
    .await
    .unwrap();
    let events = store.events_after("reminders", 0, 10_000).await.unwrap();
    let mut fired: HashMap<String, usize> = HashMap::new();
    let mut late = 0;
    for record in &events {
        let event: Value = serde_json::from_str(&record.payload).unwrap();
        if event["type"] != "taskflow.reminder.due.v1" {
            continue;
        }
        *fired
            .entry(event["data"]["reminder_id"].as_str().unwrap().to_owned())
            .or_default() += 1;
        if event["data"]["late_by_ms"].as_i64().unwrap() > 500 {
            late += 1;
        }
    }
    assert_eq!(fired.len(), REMINDERS);
    assert!(
        fired.values().all(|n| *n == 1),
        "each fired once: {fired:?}"
    );
    assert!(
        late > 0,
        "reminders due while the server was down fire late"
    );
    store.close().await;
    let _ = std::fs::remove_dir_all(dir);
}
