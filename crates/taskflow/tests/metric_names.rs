//! The alert rules and Grafana dashboards under `deploy/` query only metrics the binary exports.
//!
//! Starts the real `taskflow` binary twice — once on the in-process bus (the happy path: sign-up,
//! a task created and completed, an SSE session, the relay and the audit consumer at work) and once
//! on the Dapr bus with no sidecar behind it (the failure paths: publishing fails, a malformed
//! delivery is dropped, a poison event is retried and dead-lettered) — scrapes `/metrics` of both,
//! and runs `scripts/check-metric-names.py` on what they exported.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .unwrap()
        .to_path_buf()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts `taskflow serve` in a fresh folder with `env` on a free port; returns it and its port.
fn start(env: &[(&str, String)]) -> (Child, u16) {
    let dir = std::env::temp_dir().join(format!("taskflow-metrics-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&dir).unwrap();
    let port = free_port();
    let mut command = Command::new(env!("CARGO_BIN_EXE_taskflow"));
    for (key, _) in std::env::vars() {
        if key.starts_with("TASKFLOW_") || key.starts_with("DAPR_") || key == "RUST_LOG" {
            command.env_remove(key);
        }
    }
    command
        .current_dir(&dir)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .env("TASKFLOW_BUS__RELAY_POLL_INTERVAL_MS", "100")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for (key, value) in env {
        command.env(key, value);
    }
    let mut child = command.spawn().unwrap();
    taskflow_testing::wait_until_listening(&mut child, port, "run it by hand to see its log");
    (child, port)
}

async fn stop(mut child: Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = tokio::task::spawn_blocking(move || child.wait()).await;
}

async fn register(client: &reqwest::Client, base: &str, email: &str) -> String {
    let registered: serde_json::Value = client
        .post(format!("{base}/api/v1/auth/register"))
        .json(&serde_json::json!({"email": email, "password": "long enough password"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    registered["access_token"].as_str().unwrap().to_owned()
}

async fn create_task(client: &reqwest::Client, base: &str, token: &str) -> String {
    let task: serde_json::Value = client
        .post(format!("{base}/api/v1/tasks"))
        .bearer_auth(token)
        .json(&serde_json::json!({"title": "Measured"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    task["id"].as_str().unwrap().to_owned()
}

async fn scrape(client: &reqwest::Client, base: &str) -> String {
    client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Waits until `/metrics` mentions every one of `names`, or `limit` passes; returns the last scrape.
async fn scrape_until(
    client: &reqwest::Client,
    base: &str,
    names: &[&str],
    limit: Duration,
) -> String {
    let deadline = Instant::now() + limit;
    loop {
        let text = scrape(client, base).await;
        if names.iter().all(|name| text.contains(name)) || Instant::now() > deadline {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The happy path on the in-process bus.
async fn exercise_memory_bus(client: &reqwest::Client) -> String {
    let (child, port) = start(&[]);
    let base = format!("http://127.0.0.1:{port}");
    let token = register(client, &base, "metrics@example.com").await;
    // An open SSE session counts in realtime_sessions.
    let mut stream = client
        .get(format!("{base}/api/v1/stream"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert!(stream.status().is_success(), "{}", stream.status());
    // A reminder due in a moment: the scheduler fires it and the notifier files it.
    let soon = (chrono::Utc::now() + chrono::TimeDelta::milliseconds(500)).to_rfc3339();
    let reminded = client
        .post(format!("{base}/api/v1/tasks"))
        .bearer_auth(&token)
        .json(&serde_json::json!({"title": "remind me", "reminders": [{"at": soon}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(reminded.status(), 201);
    let task = create_task(client, &base, &token).await;
    let completed = client
        .post(format!("{base}/api/v1/tasks/{task}/complete"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert!(completed.status().is_success(), "{}", completed.status());
    let _ = tokio::time::timeout(Duration::from_secs(2), stream.chunk()).await;
    let text = scrape_until(
        client,
        &base,
        &[
            "events_published_total",
            "events_consumed_total",
            "event_consume_delay_seconds",
            "outbox_publish_delay_seconds",
            "realtime_sessions",
            "reminder_lateness_seconds",
            "notification_deliveries_total",
        ],
        Duration::from_secs(20),
    )
    .await;
    drop(stream);
    stop(child).await;
    text
}

/// The failure paths on the Dapr bus, whose sidecar address answers nothing.
async fn exercise_dapr_bus(client: &reqwest::Client) -> String {
    let app_token = "metric-names-test-app-token";
    let (child, port) = start(&[
        ("TASKFLOW_BUS__BACKEND", "dapr".into()),
        (
            "TASKFLOW_BUS__DAPR__HTTP_ENDPOINT",
            format!("http://127.0.0.1:{}", free_port()),
        ),
        ("TASKFLOW_BUS__DAPR__APP_API_TOKEN", app_token.into()),
        ("TASKFLOW_BUS__DAPR__TIMEOUT_MS", "200".into()),
    ]);
    let base = format!("http://127.0.0.1:{port}");
    let token = register(client, &base, "dapr-metrics@example.com").await;
    // The relay cannot publish this: outbox_publish_failures_total, backlog, oldest age.
    create_task(client, &base, &token).await;
    let deliver = |body: String| {
        client
            .post(format!("{base}/dapr/events/task-events"))
            .header("dapr-api-token", app_token)
            .header("content-type", "application/cloudevents+json")
            .body(body)
            .send()
    };
    // Not a CloudEvent object: dropped (dapr_deliveries_dropped_total).
    let dropped = deliver("[]".into()).await.unwrap();
    assert!(dropped.status().is_success(), "{}", dropped.status());
    // A task event without its fields: the audit handler fails on every attempt
    // (event_handler_failures_total) and the event is dead-lettered (events_dead_lettered_total).
    let poison = serde_json::json!({
        "specversion": "1.0",
        "id": uuid::Uuid::now_v7().to_string(),
        "source": "metric-names-test",
        "type": "taskflow.task.created.v1",
        "time": chrono::Utc::now().to_rfc3339(),
        "datacontenttype": "application/json",
        "partitionkey": "poison",
        "data": {}
    });
    let handled = tokio::time::timeout(Duration::from_secs(30), deliver(poison.to_string()))
        .await
        .expect("the poison event was not dead-lettered within 30 s")
        .unwrap();
    assert!(handled.status().is_success(), "{}", handled.status());
    let text = scrape_until(
        client,
        &base,
        &[
            "outbox_publish_failures_total",
            "outbox_oldest_age_seconds",
            "dapr_deliveries_dropped_total",
            "event_handler_failures_total",
            "events_dead_lettered_total",
        ],
        Duration::from_secs(20),
    )
    .await;
    stop(child).await;
    text
}

#[tokio::test]
async fn alerts_and_dashboards_use_only_exported_metrics() {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(40))
        .build()
        .unwrap();
    let mut scraped = exercise_memory_bus(&client).await;
    scraped.push('\n');
    scraped.push_str(&exercise_dapr_bus(&client).await);
    let file = std::env::temp_dir().join(format!("taskflow-metrics-{}.txt", uuid::Uuid::now_v7()));
    std::fs::write(&file, &scraped).unwrap();

    let root = workspace_root();
    let output = Command::new("python3")
        .arg(root.join("scripts/check-metric-names.py"))
        .arg(&file)
        .output()
        .expect("python3 is needed to run scripts/check-metric-names.py");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "{report}\n(scraped metrics kept in {})",
        file.display()
    );
    let _ = std::fs::remove_file(&file);
}
