//! Crash safety: under a stream of writes the server is killed with SIGKILL at random moments,
//! several rounds in a row. After a final restart every acknowledged write is stored, every
//! committed change has exactly one event on the bus, and the audit consumer applied each
//! event exactly once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use taskflow_store::sqlite::{SqliteSettings, SqliteStore};
use taskflow_store::{OutboxStore, Store, TaskStore};

const ROUNDS: usize = 4;
const WRITERS: usize = 6;

fn start(dir: &Path, port: u16) -> Child {
    taskflow_testing::start_taskflow(env!("CARGO_BIN_EXE_taskflow"), dir, port, &[])
}

use taskflow_testing::kill9;

/// What the clients saw acknowledged: task id → highest acknowledged version.
type Acked = Arc<Mutex<HashMap<String, i64>>>;

async fn write_until_error(base: String, token: String, acked: Acked, writer: usize) {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    for i in 0.. {
        let created = client
            .post(format!("{base}/api/v1/tasks"))
            .bearer_auth(&token)
            .json(&json!({"title": format!("w{writer} #{i}"), "tags": ["crash"]}))
            .send()
            .await;
        let Ok(response) = created else { return };
        if response.status() != 201 {
            return;
        }
        let Ok(task) = response.json::<Value>().await else {
            return;
        };
        let id = task["id"].as_str().unwrap().to_owned();
        acked.lock().unwrap().insert(id.clone(), 1);
        let completed = client
            .post(format!("{base}/api/v1/tasks/{id}/complete"))
            .bearer_auth(&token)
            .send()
            .await;
        let Ok(response) = completed else { return };
        if response.status() != 200 {
            return;
        }
        let Ok(task) = response.json::<Value>().await else {
            return;
        };
        acked
            .lock()
            .unwrap()
            .insert(id, task["version"].as_i64().unwrap());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_under_writes_loses_nothing_and_duplicates_nothing() {
    let dir: PathBuf =
        std::env::temp_dir().join(format!("taskflow-crash-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&dir).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let base = format!("http://127.0.0.1:{port}");

    let child = start(&dir, port);
    let client = reqwest::Client::new();
    let registered: Value = client
        .post(format!("{base}/api/v1/auth/register"))
        .json(&json!({"email": "crash@example.com", "password": "crash test password"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = registered["access_token"].as_str().unwrap().to_owned();
    let acked: Acked = Arc::default();

    let mut child = Some(child);
    for round in 0..ROUNDS {
        let server = match child.take() {
            Some(server) => server,
            None => start(&dir, port),
        };
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| {
                tokio::spawn(write_until_error(
                    base.clone(),
                    token.clone(),
                    acked.clone(),
                    w,
                ))
            })
            .collect();
        // A different moment every round, deterministic across runs.
        tokio::time::sleep(Duration::from_millis(300 + (round as u64 * 211) % 500)).await;
        kill9(server);
        for writer in writers {
            writer.await.unwrap();
        }
    }

    // Restart and let the relay and the audit consumer catch up.
    let server = start(&dir, port);
    let store = SqliteStore::connect(&SqliteSettings::new(format!(
        "sqlite://{}/taskflow-data/taskflow.db",
        dir.display()
    )))
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let events = store
            .events_after("task-events", 0, 1_000_000)
            .await
            .unwrap()
            .len();
        let audited = audit_count(&dir);
        let backlog = store.outbox_backlog().await.unwrap().unpublished;
        if backlog == 0 && audited == events {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "consumers did not catch up: {audited} audited of {events}, backlog {backlog}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() > 20,
        "the writers made progress: {}",
        acked.len()
    );
    let user: taskflow_domain::UserId = registered["user"]["id"].as_str().unwrap().parse().unwrap();
    let mut query = taskflow_store::TaskQuery::new(chrono::Utc::now());
    query.limit = 200;
    let mut stored: HashMap<String, i64> = HashMap::new();
    loop {
        let page = store.list_tasks(user, &query).await.unwrap();
        for task in &page.items {
            stored.insert(task.id.to_string(), task.version);
        }
        match page.next_cursor {
            Some(cursor) => query.after = Some(cursor),
            None => break,
        }
    }
    // Every acknowledged write is stored.
    for (id, version) in &acked {
        let stored_version = stored
            .get(id)
            .unwrap_or_else(|| panic!("acknowledged task {id} lost"));
        assert!(
            stored_version >= version,
            "task {id}: acknowledged v{version}, stored v{stored_version}"
        );
    }
    // Every committed change has exactly one event.
    let mut events_per_change: HashMap<(String, i64), usize> = HashMap::new();
    let rows = store
        .events_after("task-events", 0, 1_000_000)
        .await
        .unwrap();
    let mut event_ids = HashSet::new();
    for row in &rows {
        let event: Value = serde_json::from_str(&row.payload).unwrap();
        let task = &event["data"]["task_data"];
        *events_per_change
            .entry((
                task["id"].as_str().unwrap().to_owned(),
                task["version"].as_i64().unwrap(),
            ))
            .or_default() += 1;
        assert!(
            event_ids.insert(row.event_id.clone()),
            "event id {} twice",
            row.event_id
        );
    }
    for (id, version) in &stored {
        for v in 1..=*version {
            assert_eq!(
                events_per_change.get(&(id.clone(), v)),
                Some(&1),
                "task {id} v{v}: exactly one event"
            );
        }
    }
    assert_eq!(
        events_per_change.len(),
        stored.values().sum::<i64>() as usize,
        "no event without a change"
    );
    // Every event was audited exactly once (audit_log has one row per event id, checked above by count).
    assert_eq!(audit_count(&dir), rows.len());
    assert_eq!(audit_distinct(&dir), rows.len());

    store.close().await;
    kill9(server);
    let _ = std::fs::remove_dir_all(&dir);
}

fn sqlite(dir: &Path, sql: &str) -> usize {
    let output = Command::new("sqlite3")
        .arg(dir.join("taskflow-data/taskflow.db"))
        .arg(sql)
        .output()
        .unwrap();
    String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .unwrap_or(0)
}

fn audit_count(dir: &Path) -> usize {
    sqlite(dir, "SELECT COUNT(*) FROM audit_log")
}

fn audit_distinct(dir: &Path) -> usize {
    sqlite(dir, "SELECT COUNT(DISTINCT event_id) FROM audit_log")
}
