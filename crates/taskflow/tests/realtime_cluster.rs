//! Two `taskflow serve` processes on one PostgreSQL database and one NATS JetStream: a change
//! made through instance A reaches an SSE session on instance B.
#![allow(clippy::unwrap_used, clippy::expect_used)]
#![cfg(feature = "nats")]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

fn binary() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_taskflow"));
    for (key, _) in std::env::vars() {
        if key.starts_with("TASKFLOW_") || key == "RUST_LOG" {
            command.env_remove(key);
        }
    }
    command
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Stops the processes and removes the database and streams, even when the test fails.
struct Cluster {
    children: Vec<Child>,
    admin: String,
    database: String,
    prefix: String,
    dirs: Vec<std::path::PathBuf>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
        }
        for child in &mut self.children {
            let _ = child.wait();
        }
        let _ = Command::new("psql")
            .args([
                self.admin.as_str(),
                "-qc",
                &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.database),
            ])
            .status();
        for dir in &self.dirs {
            let _ = std::fs::remove_dir_all(dir);
        }
        let prefix = self.prefix.clone();
        // Delete the streams (and with them every consumer group the instances created).
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Runtime::new().unwrap();
            runtime.block_on(async move {
                let settings = taskflow_bus::backends::nats::NatsSettings {
                    stream_prefix: prefix.trim_end_matches('-').replace('-', "_"),
                    ..Default::default()
                };
                if let Ok(bus) = taskflow_bus::backends::nats::NatsBus::connect(&settings).await {
                    for topic in ["task-events", "task-updates", "reminders", "notifications"] {
                        for name in [format!("{prefix}{topic}"), format!("{prefix}{topic}.dlq")] {
                            let _ = bus.delete_topic(&name).await;
                        }
                    }
                }
            });
        });
        let _ = cleanup.join();
    }
}

fn start(cluster: &mut Cluster, url: &str) -> String {
    let port = free_port();
    let dir = std::env::temp_dir().join(format!("taskflow-rt-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&dir).unwrap();
    let child = binary()
        .current_dir(&dir)
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--database-url",
            url,
        ])
        .env(
            "TASKFLOW_AUTH__JWT_SECRET",
            "cluster-secret-cluster-secret-cluster!",
        )
        .env("TASKFLOW_BUS__BACKEND", "nats")
        .env("TASKFLOW_BUS__TOPICS__PREFIX", &cluster.prefix)
        .env(
            "TASKFLOW_BUS__NATS__STREAM_PREFIX",
            cluster.prefix.trim_end_matches('-').replace('-', "_"),
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    cluster.children.push(child);
    cluster.dirs.push(dir);
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "server did not start (are nats-server on 4222 and PostgreSQL on 5432 running?)"
        );
        assert!(
            cluster
                .children
                .last_mut()
                .unwrap()
                .try_wait()
                .unwrap()
                .is_none(),
            "server exited (are nats-server on 4222 and PostgreSQL on 5432 running?)"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    format!("http://127.0.0.1:{port}")
}

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
    let admin = std::env::var("TASKFLOW_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let simple = uuid::Uuid::now_v7().simple().to_string();
    let mut cluster = Cluster {
        children: Vec::new(),
        admin: admin.clone(),
        database: format!("taskflow_rt_{simple}"),
        prefix: format!("rt-{simple}-"),
        dirs: Vec::new(),
    };
    let status = Command::new("psql")
        .args([
            admin.as_str(),
            "-qc",
            &format!("CREATE DATABASE {}", cluster.database),
        ])
        .status()
        .unwrap();
    assert!(status.success(), "is PostgreSQL running on 127.0.0.1:5432?");
    let url = format!("{}/{}", admin.rsplit_once('/').unwrap().0, cluster.database);
    let a = start(&mut cluster, &url);
    let b = start(&mut cluster, &url);

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
    let (id_a, _, data_a) = next_event(&mut on_a, &mut buffer_a, Duration::from_secs(2))
        .await
        .expect("the change reached instance A within 2 s");
    assert_eq!(data_a["task"]["title"], "through B");
    let (id_b, _, _) = next_event(&mut stream, &mut buffer, Duration::from_secs(2))
        .await
        .unwrap();
    assert_eq!(id_a, id_b, "both instances number the same update alike");
}
