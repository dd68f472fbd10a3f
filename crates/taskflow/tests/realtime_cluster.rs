//! Two `taskflow serve` processes on one PostgreSQL database and one NATS JetStream: a change
//! made through instance A reaches an SSE session on instance B.
#![allow(clippy::unwrap_used, clippy::expect_used)]
#![cfg(feature = "nats")]

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use taskflow_testing::cluster::Cluster;

/// The next SSE event with data, within `wait`.
async fn next_event(
    response: &mut reqwest::Response,
    buffer: &mut String,
    wait: Duration,
) -> Option<(String, String, Value)> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            let (mut id, mut event, mut data) = (String::new(), String::new(), String::new());
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("id:") {
                    id = v.trim().to_owned();
                } else if let Some(v) = line.strip_prefix("event:") {
                    event = v.trim().to_owned();
                } else if let Some(v) = line.strip_prefix("data:") {
                    data.push_str(v.trim_start());
                }
            }
            if !data.is_empty() {
                return Some((id, event, serde_json::from_str(&data).unwrap()));
            }
        }
        let chunk = tokio::time::timeout_at(deadline, response.chunk())
            .await
            .ok()?
            .unwrap()?;
        buffer.push_str(std::str::from_utf8(&chunk).unwrap());
    }
}

#[tokio::test]
async fn a_change_through_one_instance_reaches_a_stream_on_another() {
    let mut cluster = Cluster::create(env!("CARGO_BIN_EXE_taskflow"), "rt");
    let a = cluster.start(&[]).url.clone();
    let b = cluster.start(&[]).url.clone();

    let client = reqwest::Client::new();
    let registered: Value = client
        .post(format!("{a}/api/v1/auth/register"))
        .json(&json!({"email": "cluster@example.com", "password": "long enough password"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = registered["access_token"].as_str().unwrap().to_owned();

    let mut stream = client
        .get(format!("{b}/api/v1/stream"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    let mut buffer = String::new();

    // The feeders subscribe in the background: retry until B's session sees a change from A.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut created = Vec::new();
    let first = loop {
        let task: Value = client
            .post(format!("{a}/api/v1/tasks"))
            .bearer_auth(&token)
            .json(&json!({"title": format!("warm-up {}", created.len())}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        created.push(task["id"].clone());
        if let Some(event) = next_event(&mut stream, &mut buffer, Duration::from_secs(2)).await {
            break event;
        }
        assert!(
            Instant::now() < deadline,
            "instance B never received an update from A"
        );
    };
    assert_eq!(first.1, "task.changed");
    assert!(created.contains(&first.2["task_id"]));
    // Drain what the warm-up produced.
    while next_event(&mut stream, &mut buffer, Duration::from_millis(500))
        .await
        .is_some()
    {}

    // Now it is running: a change through A reaches B within 2 s.
    let started = Instant::now();
    let task: Value = client
        .post(format!("{a}/api/v1/tasks"))
        .bearer_auth(&token)
        .json(&json!({"title": "through A"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let (id, event, data) = next_event(&mut stream, &mut buffer, Duration::from_secs(2))
        .await
        .expect("the change reached instance B within 2 s");
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(event, "task.changed");
    assert_eq!(data["task_id"], task["id"]);
    assert_eq!(data["task"]["title"], "through A");
    let seq: i64 = id.parse().unwrap();
    assert!(seq > 0);

    // And the other way round, with a second session on A.
    let mut on_a = client
        .get(format!("{a}/api/v1/stream"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    let mut buffer_a = String::new();
    client
        .patch(format!("{b}/api/v1/tasks/{}", task["id"].as_str().unwrap()))
        .bearer_auth(&token)
        .json(&json!({"title": "through B"}))
        .send()
        .await
        .unwrap();
    // A's new session may first see the change through A: A's own consumer can hand it out
    // after the session opened.
    let id_a = update_titled(&mut on_a, &mut buffer_a, "through B")
        .await
        .expect("the change reached instance A within 2 s");
    let id_b = update_titled(&mut stream, &mut buffer, "through B")
        .await
        .expect("the change reached instance B within 2 s");
    assert_eq!(id_a, id_b, "both instances number the same update alike");
}

/// The id of the first update on `response` whose task is titled `title`, within 2 s; earlier
/// updates are skipped.
async fn update_titled(
    response: &mut reqwest::Response,
    buffer: &mut String,
    title: &str,
) -> Option<String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    loop {
        let wait = deadline.saturating_duration_since(tokio::time::Instant::now());
        let (id, _, data) = next_event(response, buffer, wait).await?;
        if data["task"]["title"] == title {
            return Some(id);
        }
    }
}
