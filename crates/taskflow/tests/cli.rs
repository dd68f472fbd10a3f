//! The `taskflow` binary as a process: settings, migrations, serving and graceful shutdown.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn binary() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_taskflow"));
    // Keep the developer's environment from leaking into the tests.
    for (key, _) in std::env::vars() {
        if key.starts_with("TASKFLOW_") || key == "RUST_LOG" {
            command.env_remove(key);
        }
    }
    command
}

fn temp_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("taskflow-cli-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn run(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = binary();
    command.current_dir(dir).args(args);
    for (k, v) in env {
        command.env(k, v);
    }
    command.output().unwrap()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start_server(dir: &Path, port: u16) -> Child {
    start_server_with(dir, port, &[])
}

fn start_server_with(dir: &Path, port: u16, env: &[(&str, &str)]) -> Child {
    let mut child = binary()
        .current_dir(dir)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    taskflow_testing::wait_until_listening(&mut child, port, "see its log");
    child
}

fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn config_prints_effective_settings_with_secrets_redacted() {
    let dir = temp_dir();
    std::fs::write(
        dir.join("custom.toml"),
        "listen = \"127.0.0.1:9999\"\n[log]\nformat = \"json\"\n",
    )
    .unwrap();
    let output = run(
        &dir,
        &[
            "--config",
            "custom.toml",
            "config",
            "--database-url",
            "sqlite://./x.db",
        ],
        &[
            (
                "TASKFLOW_AUTH__JWT_SECRET",
                "a-very-secret-value-that-is-long-enough",
            ),
            ("TASKFLOW_RATE_LIMIT__USER_BURST", "7"),
            (
                "TASKFLOW_NOTIFICATIONS__SMTP__PASSWORD",
                "smtp-password-do-not-print",
            ),
        ],
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(
        text.contains("listen = \"127.0.0.1:9999\""),
        "file value: {text}"
    );
    assert!(text.contains("format = \"json\""), "{text}");
    assert!(
        text.contains("url = \"sqlite://./x.db\""),
        "flag value: {text}"
    );
    assert!(text.contains("user_burst = 7"), "env value: {text}");
    assert!(text.contains("jwt_secret = \"[redacted]\""), "{text}");
    assert!(
        !text.contains("a-very-secret-value"),
        "secret leaked: {text}"
    );
    assert!(
        !text.contains("smtp-password-do-not-print"),
        "SMTP password leaked: {text}"
    );
}

#[test]
fn flags_override_environment_which_overrides_the_file() {
    let dir = temp_dir();
    std::fs::write(dir.join("taskflow.toml"), "listen = \"127.0.0.1:1111\"\n").unwrap();
    let file_only = String::from_utf8(run(&dir, &["config"], &[]).stdout).unwrap();
    assert!(file_only.contains("127.0.0.1:1111"), "{file_only}");
    let env =
        String::from_utf8(run(&dir, &["config"], &[("TASKFLOW_LISTEN", "127.0.0.1:2222")]).stdout)
            .unwrap();
    assert!(env.contains("127.0.0.1:2222"), "{env}");
    let flag = String::from_utf8(
        run(
            &dir,
            &["config", "--listen", "127.0.0.1:3333"],
            &[("TASKFLOW_LISTEN", "127.0.0.1:2222")],
        )
        .stdout,
    )
    .unwrap();
    assert!(flag.contains("127.0.0.1:3333"), "{flag}");
}

#[test]
fn bad_settings_fail_fast_with_a_fix() {
    let dir = temp_dir();
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);
    let cases: &[Case] = &[
        (&["serve", "--listen", "nonsense"], &[], "127.0.0.1:8080"),
        (
            &["serve", "--database-url", "mysql://u:hunter2@h/db"],
            &[],
            "sqlite://",
        ),
        (
            &["serve"],
            &[("TASKFLOW_AUTH__JWT_SECRET", "short")],
            "32 bytes",
        ),
        (&["serve", "--log-format", "xml"], &[], "pretty"),
        (
            &["serve"],
            &[("TASKFLOW_NOT_A_SETTING", "1")],
            "not_a_setting",
        ),
        (
            &["serve"],
            &[("TASKFLOW_RATE_LIMIT__USER_BURST", "-3")],
            "user_burst",
        ),
        (
            &["serve"],
            &[("TASKFLOW_HEADER_READ_TIMEOUT_SECS", "0")],
            "header_read_timeout_secs",
        ),
        (
            &["serve"],
            &[("TASKFLOW_DATABASE__SQLITE_CHECKPOINTS", "sometimes")],
            "sqlite_checkpoints",
        ),
        (
            &["--config", "missing.toml", "serve"],
            &[],
            "does not exist",
        ),
    ];
    for (args, env, hint) in cases {
        let output = run(&dir, args, env);
        assert_eq!(output.status.code(), Some(2), "{args:?} should be refused");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.to_lowercase().contains(&hint.to_lowercase()),
            "{args:?} {env:?}: message should mention {hint}: {stderr}"
        );
        assert!(!stderr.contains("hunter2"), "password leaked: {stderr}");
    }
}

#[tokio::test]
async fn a_client_that_trickles_its_headers_is_cut_off_after_the_header_timeout() {
    let dir = temp_dir();
    let port = free_port();
    let mut child = start_server_with(&dir, port, &[("TASKFLOW_HEADER_READ_TIMEOUT_SECS", "2")]);

    let mut slow = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let started = Instant::now();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n")
        .await
        .unwrap();
    // A well-behaved client on another connection is served meanwhile.
    let healthy = reqwest::get(format!("http://127.0.0.1:{port}/healthz"))
        .await
        .unwrap();
    assert_eq!(healthy.status(), 200);
    // The slow one never finishes its headers; the server closes it (hyper may answer 408
    // first), well before the 10 s this test waits.
    let mut answer = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), slow.read_to_end(&mut answer)).await;
    assert!(closed.is_ok(), "the connection stayed open");
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
        "{answer}"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(1900),
        "closed before the timeout: {:?}",
        started.elapsed()
    );

    signal(&child, "TERM");
    assert!(
        tokio::task::spawn_blocking(move || child.wait())
            .await
            .unwrap()
            .unwrap()
            .success()
    );
}

#[test]
fn migrate_creates_the_database() {
    let dir = temp_dir();
    let output = run(&dir, &["migrate"], &[]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(dir.join("taskflow-data/taskflow.db").exists());
    let again = run(&dir, &["migrate"], &[]);
    assert!(again.status.success());
}

#[tokio::test]
async fn serve_answers_and_sigterm_lets_an_in_flight_request_finish() {
    let dir = temp_dir();
    let port = free_port();
    let mut child = start_server(&dir, port);

    // Health check through the binary's own subcommand.
    let healthcheck = run(
        &dir,
        &["healthcheck", "--url", &format!("http://127.0.0.1:{port}")],
        &[],
    );
    assert!(healthcheck.status.success());

    // Start a request whose body is still arriving, then ask the server to stop.
    let body = br#"{"email":"late@example.com","password":"long enough password"}"#;
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let head = format!(
        "POST /api/v1/auth/register HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&body[..10]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    signal(&child, "TERM");
    tokio::time::sleep(Duration::from_millis(300)).await;
    // New connections are refused once shutdown began...
    let deadline = Instant::now() + Duration::from_secs(5);
    while TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
        assert!(
            Instant::now() < deadline,
            "listener still open after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // ...but the in-flight request completes.
    stream.write_all(&body[10..]).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 201"), "{response}");

    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "clean exit after SIGTERM: {status:?}");

    // The write was durable: a restarted server still knows the account.
    let mut child = start_server(&dir, port);
    let client = reqwest::Client::new();
    let login = client
        .post(format!("http://127.0.0.1:{port}/api/v1/auth/login"))
        .json(&serde_json::json!({"email": "late@example.com", "password": "long enough password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 200);
    signal(&child, "INT");
    assert!(
        tokio::task::spawn_blocking(move || child.wait())
            .await
            .unwrap()
            .unwrap()
            .success()
    );
}

#[tokio::test]
async fn json_logs_carry_the_request_id_of_each_request() {
    let dir = temp_dir();
    let port = free_port();
    let mut child = binary()
        .current_dir(&dir)
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--log-format",
            "json",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    taskflow_testing::wait_until_listening(&mut child, port, "see its log");
    let response = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/api/v1/auth/register"))
        .header("x-request-id", "req-for-log-test")
        .json(&serde_json::json!({"email": "log@example.com", "password": "long enough password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    assert_eq!(response.headers()["x-request-id"], "req-for-log-test");
    signal(&child, "TERM");
    let output = tokio::task::spawn_blocking(move || {
        let _ = child.wait();
        let mut text = String::new();
        use std::io::Read as _;
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut text)
            .unwrap();
        text
    })
    .await
    .unwrap();
    let lines: Vec<serde_json::Value> = output
        .lines()
        .map(|line| {
            serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"))
        })
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l["message"] == "TaskFlow is listening"),
        "{output}"
    );
    let registered = lines
        .iter()
        .find(|l| l["message"] == "account registered")
        .unwrap_or_else(|| panic!("no registration log line: {output}"));
    assert_eq!(
        registered["span"]["request_id"], "req-for-log-test",
        "{registered}"
    );
    assert_eq!(registered["level"], "INFO");
}

/// The whole path on a real broker: API → outbox → relay → NATS JetStream → audit consumer.
#[cfg(feature = "nats")]
#[tokio::test]
async fn serve_on_nats_delivers_task_events_to_the_audit_log() {
    let dir = temp_dir();
    let port = free_port();
    let prefix = format!("cli-{}-", uuid::Uuid::now_v7().simple());
    let mut child = binary()
        .current_dir(&dir)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .env("TASKFLOW_BUS__BACKEND", "nats")
        .env("TASKFLOW_BUS__TOPICS__PREFIX", &prefix)
        .env(
            "TASKFLOW_BUS__NATS__STREAM_PREFIX",
            prefix.trim_end_matches('-').replace('-', "_"),
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    taskflow_testing::wait_until_listening(
        &mut child,
        port,
        "is nats-server running on 127.0.0.1:4222?",
    );
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let registered: serde_json::Value = client
        .post(format!("{base}/api/v1/auth/register"))
        .json(&serde_json::json!({"email": "nats@example.com", "password": "long enough password"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = registered["access_token"].as_str().unwrap();
    let task: serde_json::Value = client
        .post(format!("{base}/api/v1/tasks"))
        .bearer_auth(token)
        .json(&serde_json::json!({"title": "Through JetStream"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let path = format!(
        "{base}/api/v1/audit?task_id={}",
        task["id"].as_str().unwrap()
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let audit: serde_json::Value = client
            .get(&path)
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if audit["items"]
            .as_array()
            .is_some_and(|items| items.len() == 1)
        {
            assert_eq!(audit["items"][0]["event_type"], "taskflow.task.created.v1");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the audit consumer never saw the event: {audit}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    signal(&child, "TERM");
    assert!(
        tokio::task::spawn_blocking(move || child.wait())
            .await
            .unwrap()
            .unwrap()
            .success()
    );
    // Leave the shared broker as we found it.
    let settings = taskflow_bus::backends::nats::NatsSettings {
        stream_prefix: prefix.trim_end_matches('-').replace('-', "_"),
        ..Default::default()
    };
    let bus = taskflow_bus::backends::nats::NatsBus::connect(&settings)
        .await
        .unwrap();
    let names = taskflow_bus::TopicNames {
        prefix,
        ..Default::default()
    };
    let _ = bus.delete_topics(&names).await;
}

/// The binary on PostgreSQL: migrations, the API and the audit consumer, on a fresh database.
#[tokio::test]
async fn serve_on_postgres_migrates_and_answers() {
    let admin = std::env::var("TASKFLOW_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let name = format!("taskflow_cli_{}", uuid::Uuid::now_v7().simple());
    let psql = |sql: &str| {
        let status = Command::new("psql")
            .args([admin.as_str(), "-qc", sql])
            .status()
            .unwrap();
        assert!(
            status.success(),
            "psql {sql} (is PostgreSQL running on 127.0.0.1:5432?)"
        );
    };
    psql(&format!("CREATE DATABASE {name}"));
    let url = format!("{}/{name}", admin.rsplit_once('/').unwrap().0);
    let dir = temp_dir();
    let port = free_port();
    let migrate = run(&dir, &["migrate", "--database-url", &url], &[]);
    assert!(
        migrate.status.success(),
        "{}",
        String::from_utf8_lossy(&migrate.stderr)
    );
    let mut child = binary()
        .current_dir(&dir)
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--database-url",
            &url,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    taskflow_testing::wait_until_listening(&mut child, port, "see its log");
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    assert_eq!(
        client
            .get(format!("{base}/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let registered: serde_json::Value = client
        .post(format!("{base}/api/v1/auth/register"))
        .json(&serde_json::json!({"email": "pg@example.com", "password": "long enough password"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = registered["access_token"].as_str().unwrap();
    let task: serde_json::Value = client
        .post(format!("{base}/api/v1/tasks"))
        .bearer_auth(token)
        .json(&serde_json::json!({"title": "Stored in PostgreSQL", "tags": ["pg"], "due_at": "2027-01-04T09:00:00Z",
            "recurrence": {"rule": "weekly"}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let completed = client
        .post(format!(
            "{base}/api/v1/tasks/{}/complete",
            task["id"].as_str().unwrap()
        ))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(completed.status(), 200);
    let found: serde_json::Value = client
        .get(format!("{base}/api/v1/tasks?q=postgre"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        found["items"].as_array().unwrap().len(),
        2,
        "the completed occurrence and the next one: {found}"
    );
    let path = format!(
        "{base}/api/v1/audit?task_id={}",
        task["id"].as_str().unwrap()
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let audit: serde_json::Value = client
            .get(&path)
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if audit["items"]
            .as_array()
            .is_some_and(|items| items.len() == 2)
        {
            break;
        }
        assert!(Instant::now() < deadline, "audit never caught up: {audit}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    signal(&child, "TERM");
    assert!(
        tokio::task::spawn_blocking(move || child.wait())
            .await
            .unwrap()
            .unwrap()
            .success()
    );
    psql(&format!("DROP DATABASE {name} WITH (FORCE)"));
}

#[test]
fn admin_grant_needs_an_existing_account() {
    let dir = temp_dir();
    let output = run(&dir, &["admin", "grant", "nobody@example.com"], &[]);
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("no account"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let output = run(&dir, &["admin", "grant", "not-an-email"], &[]);
    assert!(!output.status.success());
}
