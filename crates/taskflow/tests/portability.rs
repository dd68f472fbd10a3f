//! `taskflow export` / `taskflow import` as processes: SQLite → PostgreSQL → SQLite through the
//! binary gives the same bytes, and the commands fail clearly on a non-empty target or a bad file.
//!
//! PostgreSQL is `postgres://postgres@127.0.0.1:5432/postgres` unless
//! `TASKFLOW_TEST_POSTGRES_URL` names another admin URL (databases are made and dropped with psql).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use chrono::{TimeDelta, TimeZone as _, Utc};
use taskflow_domain::recurrence::{Anchor, RecurrenceRule};
use taskflow_domain::{
    Description, Email, NewTask, Priority, RecurrenceSpec, Tags, Task, TimeZone, Title, User,
    UserId,
};
use taskflow_store::sqlite::{SqliteSettings, SqliteStore};
use taskflow_store::{
    AuditEntry, ConsumerEffect, ConsumerStore as _, Store, TaskStore as _, UserStore as _,
};

fn taskflow(dir: &Path, args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_taskflow"));
    for (key, _) in std::env::vars() {
        if key.starts_with("TASKFLOW_") || key == "RUST_LOG" {
            command.env_remove(key);
        }
    }
    command.current_dir(dir).args(args).output().unwrap()
}

fn succeeded(output: &Output, what: &str) {
    assert!(
        output.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn admin_url() -> String {
    std::env::var("TASKFLOW_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A fresh PostgreSQL database, dropped with the guard.
struct Database {
    name: String,
    url: String,
}

impl Database {
    fn create() -> Self {
        let name = format!("taskflow_cli_{}", uuid::Uuid::now_v7().simple());
        psql(&format!("CREATE DATABASE {name}"));
        let admin = admin_url();
        let url = format!("{}/{name}", admin.rsplit_once('/').unwrap().0);
        Self { name, url }
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        psql(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        ));
    }
}

fn psql(sql: &str) {
    let status = Command::new("psql")
        .args([admin_url().as_str(), "-qc", sql])
        .status()
        .unwrap();
    assert!(
        status.success(),
        "psql {sql} (is PostgreSQL running on 127.0.0.1:5432?)"
    );
}

/// A few records of every kind in a SQLite file.
async fn fill(url: &str) {
    let store = SqliteStore::connect(&SqliteSettings::new(url))
        .await
        .unwrap();
    store.migrate().await.unwrap();
    let at = Utc.with_ymd_and_hms(2026, 5, 4, 3, 2, 1).single().unwrap()
        + TimeDelta::microseconds(654_321);
    let user = User {
        id: UserId::new(),
        email: Email::parse("port@example.com").unwrap(),
        display_name: None,
        time_zone: TimeZone::parse("Asia/Tokyo").unwrap(),
        is_admin: false,
        created_at: at,
    };
    store.create_user(&user, "$argon2id$fake").await.unwrap();
    let task = Task::create(
        user.id,
        user.time_zone,
        NewTask {
            title: Title::parse("Übung — 練習 ✅").unwrap(),
            description: Description::parse("two\nlines").unwrap(),
            priority: Priority::Medium,
            tags: Tags::parse(&["b", "a"]).unwrap(),
            due_at: Some(at + TimeDelta::days(1)),
            time_zone: None,
            recurrence: Some(RecurrenceSpec {
                rule: RecurrenceRule::parse("FREQ=MONTHLY").unwrap(),
                anchor: Anchor::Due,
            }),
            reminders: Default::default(),
        },
        at,
    )
    .unwrap();
    store.insert_task(&task, &[]).await.unwrap();
    let entry = AuditEntry {
        event_id: "e-1".into(),
        user_id: user.id,
        task_id: task.id,
        event_type: "taskflow.task.created.v1".into(),
        occurred_at: at,
        data: serde_json::json!({"title": "Übung"}),
    };
    store
        .apply_once("audit", "e-1", &ConsumerEffect::Audit(entry), at)
        .await
        .unwrap();
    store.close().await;
}

fn body(export: &[u8]) -> String {
    let text = String::from_utf8(export.to_vec()).unwrap();
    text.split_once('\n').unwrap().1.to_owned()
}

fn temp_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("taskflow-port-cli-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test]
async fn export_and_import_move_a_database_to_postgres_and_back() {
    let dir = temp_dir();
    let source = format!("sqlite://{}/source.db", dir.display());
    fill(&source).await;

    let out = taskflow(
        &dir,
        &["export", "--database-url", &source, "--out", "first.jsonl"],
    );
    succeeded(&out, "export from SQLite");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("exported 1 users, 0 access tokens, 1 tasks"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let first = std::fs::read(dir.join("first.jsonl")).unwrap();
    assert!(!dir.join("first.jsonl.partial").exists());

    let database = Database::create();
    let out = taskflow(
        &dir,
        &["import", "first.jsonl", "--database-url", &database.url],
    );
    succeeded(&out, "import into PostgreSQL");
    assert!(String::from_utf8_lossy(&out.stdout).contains("imported 1 users"));
    let out = taskflow(&dir, &["export", "--database-url", &database.url]);
    succeeded(&out, "export from PostgreSQL to stdout");
    assert_eq!(
        body(&out.stdout),
        body(&first),
        "PostgreSQL gives the same records"
    );
    std::fs::write(dir.join("second.jsonl"), &out.stdout).unwrap();

    let again = taskflow(
        &dir,
        &["import", "first.jsonl", "--database-url", &database.url],
    );
    assert!(
        !again.status.success(),
        "a second import into the same database is refused"
    );
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("not empty"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );

    let back = format!("sqlite://{}/back/restored.db", dir.display());
    let out = taskflow(&dir, &["import", "second.jsonl", "--database-url", &back]);
    succeeded(&out, "import into a new SQLite file");
    let out = taskflow(
        &dir,
        &["export", "--database-url", &back, "--out", "third.jsonl"],
    );
    succeeded(&out, "export from the new SQLite file");
    assert_eq!(
        body(&std::fs::read(dir.join("third.jsonl")).unwrap()),
        body(&first),
        "and back on SQLite"
    );

    // A bad line: the command names it and the database stays empty.
    let mut broken = String::from_utf8(first.clone()).unwrap();
    broken.push_str("{\"kind\":\"reminder\"}\n");
    std::fs::write(dir.join("broken.jsonl"), broken).unwrap();
    let lines = first.iter().filter(|b| **b == b'\n').count();
    let empty = format!("sqlite://{}/empty.db", dir.display());
    let out = taskflow(&dir, &["import", "broken.jsonl", "--database-url", &empty]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "line {}: unknown record kind `reminder`",
            lines + 1
        )),
        "{stderr}"
    );

    let _ = std::fs::remove_dir_all(dir);
}
