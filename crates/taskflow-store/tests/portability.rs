//! Export and import between backends: SQLite → PostgreSQL → SQLite keeps every record byte
//! for byte, an import goes into an empty database only, and a bad file imports nothing.
//!
//! PostgreSQL is `postgres://postgres@127.0.0.1:5432/postgres` (trust auth) unless
//! `TASKFLOW_TEST_POSTGRES_URL` names another admin URL; each test uses fresh databases
//! (`taskflow_test_<uuid>`) dropped when it ends.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use chrono::{DateTime, TimeDelta, TimeZone as _, Utc};
use taskflow_domain::events::{
    OutgoingEvent, TaskEventKind, Topic, dead_letter_topic, task_events,
};
use taskflow_domain::recurrence::{Anchor, RecurrenceRule};
use taskflow_domain::{
    Description, DisplayName, Email, NewTask, Priority, RecurrenceSpec, Tags, Task, TaskStatus,
    TimeZone, Title, TokenId, User, UserId,
};
use taskflow_store::portability::{self, PortabilityError, Record};
use taskflow_store::postgres::{PostgresSettings, PostgresStore};
use taskflow_store::sqlite::{SqliteSettings, SqliteStore};
use taskflow_store::{
    AccessToken, AuditEntry, AuditQuery, ConsumerEffect, DeadLetter, OutboxStore as _, Store,
    TaskQuery, query::search_terms,
};
use taskflow_testing::postgres::ScratchPostgres;

/// A migrated PostgreSQL store on `db`.
async fn postgres_store(db: &ScratchPostgres) -> PostgresStore {
    let store = PostgresStore::connect(&PostgresSettings::new(&db.url))
        .await
        .expect("connect");
    store.migrate().await.expect("migrate");
    store
}

/// A fresh, migrated SQLite file in its own folder (removed with the guard).
struct TestFile {
    dir: std::path::PathBuf,
    store: SqliteStore,
}

impl TestFile {
    async fn create() -> Self {
        let dir = std::env::temp_dir().join(format!("taskflow-port-{}", uuid::Uuid::now_v7()));
        let url = format!("sqlite://{}/test.db", dir.display());
        let store = SqliteStore::connect(&SqliteSettings::new(url))
            .await
            .expect("connect");
        store.migrate().await.expect("migrate");
        Self { dir, store }
    }
}

impl Drop for TestFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A start with microseconds, so truncation anywhere would show.
fn start() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).single().unwrap() + TimeDelta::microseconds(123_457)
}

fn at(seconds: i64) -> DateTime<Utc> {
    start() + TimeDelta::seconds(seconds) + TimeDelta::microseconds(seconds * 7 + 1)
}

#[allow(clippy::too_many_arguments)] // a test helper: every field spelled out at the call
fn new_task(
    owner: &User,
    title: &str,
    description: &str,
    tags: &[&str],
    priority: Priority,
    due: Option<DateTime<Utc>>,
    recurrence: Option<(&str, Anchor)>,
    now: DateTime<Utc>,
) -> Task {
    Task::create(
        owner.id,
        owner.time_zone,
        NewTask {
            title: Title::parse(title).unwrap(),
            description: Description::parse(description).unwrap(),
            priority,
            tags: Tags::parse(tags).unwrap(),
            due_at: due,
            time_zone: None,
            recurrence: recurrence.map(|(rule, anchor)| RecurrenceSpec {
                rule: RecurrenceRule::parse(rule).unwrap(),
                anchor,
            }),
            reminders: Default::default(),
        },
        now,
    )
    .unwrap()
}

/// The token secret hash used in [`fill`], to authenticate with after an import.
const TOKEN_HASH: [u8; 32] = [
    0x00, 0x01, 0xfe, 0xff, 0x10, 0x20, 0x30, 0x40, 0x50, 0x60, 0x70, 0x80, 0x90, 0xa0, 0xb0, 0xc0,
    0xd0, 0xe0, 0xf0, 0x0f, 0x1e, 0x2d, 0x3c, 0x4b, 0x5a, 0x69, 0x78, 0x87, 0x96, 0xa5, 0xb4, 0xc3,
];

/// What [`fill`] made, to check against after imports.
struct Filled {
    owner: User,
    external: User,
    tasks: Vec<Task>,
}

/// Varied data through the ordinary store API (outbox rows included, which are not exported).
async fn fill(store: &dyn Store) -> Filled {
    let owner = User {
        id: UserId::new(),
        email: Email::parse("zoe@example.com").unwrap(),
        display_name: Some(DisplayName::parse("Zoë Ångström 🚀").unwrap()),
        time_zone: TimeZone::parse("Europe/Berlin").unwrap(),
        is_admin: true,
        created_at: start(),
    };
    store
        .create_user(
            &owner,
            "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo",
        )
        .await
        .unwrap();
    let external = User {
        id: UserId::new(),
        email: Email::parse("sso@example.org").unwrap(),
        display_name: None,
        time_zone: TimeZone::UTC,
        is_admin: false,
        created_at: at(1),
    };
    store
        .create_external_user(&external, "auth0|5f7c8ec7c33c6c004bbafe82")
        .await
        .unwrap();
    let idle = User {
        id: UserId::new(),
        email: Email::parse("idle@example.net").unwrap(),
        display_name: Some(DisplayName::parse("\"Quotes\" \\ backslash").unwrap()),
        time_zone: TimeZone::parse("America/Argentina/Buenos_Aires").unwrap(),
        is_admin: false,
        created_at: at(2),
    };
    store.create_user(&idle, "plain-hash").await.unwrap();

    let used = AccessToken {
        id: TokenId::new(),
        user_id: owner.id,
        name: "CLI 💻".into(),
        prefix: "tf_abcd".into(),
        created_at: at(3),
        last_used_at: None,
        expires_at: Some(at(86_400 * 30)),
    };
    store.create_access_token(&used, &TOKEN_HASH).await.unwrap();
    store
        .authenticate_access_token(&TOKEN_HASH, at(60))
        .await
        .unwrap()
        .expect("token authenticates");
    let forever = AccessToken {
        id: TokenId::new(),
        user_id: external.id,
        name: "never expires".into(),
        prefix: "tf_zzzz".into(),
        created_at: at(4),
        last_used_at: None,
        expires_at: None,
    };
    store
        .create_access_token(&forever, &[7u8; 16])
        .await
        .unwrap();

    let mut tasks = Vec::new();
    let plain = new_task(
        &owner,
        "Café ☕ — naïve façade 日本語 🎉",
        "Line one\n\tindented \"quoted\" \\ line\r\nemoji 👩‍👩‍👧 and RTL עברית",
        &["work", "日本語", "ünïcode"],
        Priority::High,
        Some(at(3_600)),
        None,
        at(10),
    );
    let events = task_events(TaskEventKind::Created, &plain, at(10), None);
    store.insert_task(&plain, &events).await.unwrap();
    // Edited twice: version 3.
    let mut edited = plain.clone();
    edited.description = Description::parse("edited once").unwrap();
    edited.version = 2;
    edited.updated_at = at(20);
    store
        .update_task(owner.id, &edited, 1, &[], None)
        .await
        .unwrap();
    let mut edited2 = edited.clone();
    edited2.tags = Tags::parse(&["zeta", "alpha", "mid"]).unwrap();
    edited2.version = 3;
    edited2.updated_at = at(21);
    store
        .update_task(owner.id, &edited2, 2, &[], None)
        .await
        .unwrap();
    tasks.push(edited2);

    let done = new_task(
        &owner,
        "Done already",
        "",
        &[],
        Priority::None,
        None,
        None,
        at(30),
    );
    store.insert_task(&done, &[]).await.unwrap();
    let completed = done.completed(at(31)).unwrap().unwrap().task;
    store
        .update_task(owner.id, &completed, done.version, &[], None)
        .await
        .unwrap();
    tasks.push(completed);

    // A series: the first occurrence completed, the second skipped, the third pending.
    // Imported from a calendar: its VTODO's UID goes with every occurrence.
    let mut first = new_task(
        &owner,
        "Water the plants 🌱",
        "every other day",
        &["home"],
        Priority::Low,
        Some(at(7_200)),
        Some(("FREQ=DAILY;INTERVAL=2", Anchor::Due)),
        at(40),
    );
    first.ical_uid = Some("plants-19970901T130000Z-123401@example.com".into());
    store.insert_task(&first, &[]).await.unwrap();
    let change = first.completed(at(41)).unwrap().unwrap();
    let second = change.next_occurrence.clone().expect("a next occurrence");
    assert!(
        store
            .update_task(
                owner.id,
                &change.task,
                first.version,
                &[],
                Some((&second, &[]))
            )
            .await
            .unwrap()
    );
    let skip = second.skipped(at(42)).unwrap().unwrap();
    assert_eq!(skip.task.status, TaskStatus::Skipped);
    let third = skip.next_occurrence.clone().expect("a third occurrence");
    assert!(
        store
            .update_task(
                owner.id,
                &skip.task,
                second.version,
                &[],
                Some((&third, &[]))
            )
            .await
            .unwrap()
    );
    tasks.extend([change.task, skip.task, third]);

    let weekly = new_task(
        &external,
        "Weekly report",
        "",
        &["reports"],
        Priority::Urgent,
        Some(at(86_400)),
        Some(("FREQ=WEEKLY;BYDAY=MO,TH", Anchor::Completion)),
        at(50),
    );
    store.insert_task(&weekly, &[]).await.unwrap();
    tasks.push(weekly);

    // Audit entries: data with unicode, nesting, numbers, keys out of order.
    let audited = &tasks[0];
    for (n, data) in [
        serde_json::json!({"title": "Café ☕", "z": 1, "a": [1, 2.5, -3, null, true]}),
        serde_json::json!({"nested": {"b": {"c": "日本語"}, "a": 1e3}, "big": 9_007_199_254_740_993_u64}),
        serde_json::json!({"empty": {}, "list": [], "text": "line\nbreak \"q\" \\"}),
    ]
    .into_iter()
    .enumerate()
    {
        let entry = AuditEntry {
            event_id: format!("evt-{n}"),
            user_id: owner.id,
            task_id: audited.id,
            event_type: "taskflow.task.updated.v1".into(),
            occurred_at: at(100 + n as i64),
            data,
        };
        assert!(
            store
                .apply_once("audit", &entry.event_id, &ConsumerEffect::Audit(entry.clone()), at(100))
                .await
                .unwrap()
        );
    }

    // Dead letters: one replayed, one whose payload is not even JSON.
    let events = task_events(TaskEventKind::Created, audited, at(10), None);
    let replayed = DeadLetter {
        id: uuid::Uuid::now_v7(),
        consumer: "audit".into(),
        topic: Topic::TaskEvents.name().into(),
        event_id: events[0].event.id.clone(),
        event_type: events[0].event.event_type.clone(),
        payload: serde_json::to_string(&events[0].event).unwrap(),
        error: "boom: ☠".into(),
        attempts: 5,
        created_at: at(200),
        replayed_at: None,
    };
    let notice = OutgoingEvent {
        topic: dead_letter_topic(Topic::TaskEvents.name()),
        event: events[0].event.clone(),
    };
    store.record_dead_letter(&replayed, &notice).await.unwrap();
    store
        .replay_dead_letter(replayed.id, at(201))
        .await
        .unwrap();
    let poison = DeadLetter {
        id: uuid::Uuid::now_v7(),
        payload: "not json {\u{1F4A5}".into(),
        error: "expected value at line 1".into(),
        attempts: 1,
        created_at: at(202),
        ..replayed.clone()
    };
    store.record_dead_letter(&poison, &notice).await.unwrap();

    Filled {
        owner,
        external,
        tasks,
    }
}

async fn export(store: &dyn Store) -> String {
    let mut out = Vec::new();
    portability::export(store, &mut out, Utc::now())
        .await
        .expect("export");
    String::from_utf8(out).expect("UTF-8")
}

/// Everything after the header line.
fn body(export: &str) -> &str {
    export.split_once('\n').expect("a header line").1
}

async fn import(store: &dyn Store, export: &str) -> Result<portability::Counts, PortabilityError> {
    let records = portability::parse(export.as_bytes())?;
    portability::import(store, records).await
}

/// The imported store holds the same data and works: reads, search, token login, no events.
async fn check_imported(store: &dyn Store, filled: &Filled) {
    for task in &filled.tasks {
        assert_eq!(
            store.task(task.user_id, task.id).await.unwrap().as_ref(),
            Some(task),
            "task {} survives exactly",
            task.title.as_str()
        );
    }
    let (user, hash) = store
        .user_credentials(&filled.owner.email)
        .await
        .unwrap()
        .expect("owner");
    assert_eq!(user, filled.owner);
    assert!(hash.starts_with("$argon2id$"));
    assert_eq!(
        store
            .user_by_external_subject("auth0|5f7c8ec7c33c6c004bbafe82")
            .await
            .unwrap(),
        Some(filled.external.clone())
    );
    assert_eq!(
        store
            .authenticate_access_token(&TOKEN_HASH, at(61))
            .await
            .unwrap()
            .map(|u| u.id),
        Some(filled.owner.id),
        "the token hash came across"
    );
    let mut query = TaskQuery::new(at(10_000));
    query.search_terms = search_terms("cafe FACADE 日本語");
    let found = store.list_tasks(filled.owner.id, &query).await.unwrap();
    assert_eq!(
        found.items.iter().map(|t| t.id).collect::<Vec<_>>(),
        vec![filled.tasks[0].id],
        "the search index was rebuilt"
    );
    assert_eq!(
        store
            .audit_entries(
                filled.owner.id,
                AuditQuery {
                    task: None,
                    after: None,
                    newest_first: false,
                    limit: 10,
                },
            )
            .await
            .unwrap()
            .entries
            .iter()
            .map(|e| e.event_id.as_str())
            .collect::<Vec<_>>(),
        vec!["evt-0", "evt-1", "evt-2"]
    );
    assert_eq!(store.dead_letters(10).await.unwrap().len(), 2);
    assert!(
        store.unpublished_events(10).await.unwrap().is_empty(),
        "an import writes no outbox events"
    );
}

#[tokio::test]
async fn sqlite_to_postgres_to_sqlite_is_byte_identical() {
    let source = TestFile::create().await;
    let filled = fill(&source.store).await;
    assert!(
        !source
            .store
            .unpublished_events(10)
            .await
            .unwrap()
            .is_empty(),
        "the source has outbox rows (which are not exported)"
    );
    let first = export(&source.store).await;
    let header: serde_json::Value = serde_json::from_str(first.lines().next().unwrap()).unwrap();
    assert_eq!(header["kind"], "taskflow-export");
    assert_eq!(header["version"], 1);
    let kinds: Vec<String> = body(&first)
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["kind"].to_string())
        .collect();
    assert_eq!(
        kinds,
        [
            vec!["\"user\""; 3],
            vec!["\"access_token\""; 2],
            vec!["\"task\""; 6],
            vec!["\"audit\""; 3],
            vec!["\"dead_letter\""; 2],
        ]
        .concat()
    );
    assert!(
        first.contains("\"last_used_at\":\"2026-03-01T12:01:00.123878Z\""),
        "instants keep their microseconds:\n{first}"
    );

    let db = ScratchPostgres::create("taskflow_test").await;
    let postgres = postgres_store(&db).await;
    let counts = import(&postgres, &first)
        .await
        .expect("import into PostgreSQL");
    assert_eq!(
        counts.to_string(),
        "3 users, 2 access tokens, 6 tasks, 3 audit entries, 2 dead letters"
    );
    let second = export(&postgres).await;
    assert_eq!(
        body(&second),
        body(&first),
        "PostgreSQL exports the same bytes"
    );
    check_imported(&postgres, &filled).await;

    let back = TestFile::create().await;
    import(&back.store, &second)
        .await
        .expect("import into SQLite");
    let third = export(&back.store).await;
    assert_eq!(body(&third), body(&first), "and back on SQLite, again");
    check_imported(&back.store, &filled).await;

    postgres.close().await;
    back.store.close().await;
    source.store.close().await;
}

#[tokio::test]
async fn import_into_a_non_empty_store_is_refused() {
    let source = TestFile::create().await;
    fill(&source.store).await;
    let exported = export(&source.store).await;

    let error = import(&source.store, &exported).await.unwrap_err();
    assert!(
        matches!(error, PortabilityError::NotEmpty("users")),
        "{error}"
    );
    assert!(error.to_string().contains("not empty"), "{error}");
    assert_eq!(body(&export(&source.store).await), body(&exported));

    // One dead letter is enough to make a database non-empty.
    let db = ScratchPostgres::create("taskflow_test").await;
    let postgres = postgres_store(&db).await;
    let dead_only: String = exported
        .lines()
        .filter(|l| l.contains("taskflow-export") || l.starts_with("{\"kind\":\"dead_letter\""))
        .map(|l| format!("{l}\n"))
        .collect();
    import(&postgres, &dead_only).await.expect("first import");
    let error = import(&postgres, &exported).await.unwrap_err();
    assert!(
        matches!(error, PortabilityError::NotEmpty("dead_letters")),
        "{error}"
    );
    assert_eq!(body(&export(&postgres).await), body(&dead_only));
    postgres.close().await;
    source.store.close().await;
}

#[tokio::test]
async fn malformed_files_name_the_line_and_import_nothing() {
    let source = TestFile::create().await;
    fill(&source.store).await;
    let exported = export(&source.store).await;
    let lines: Vec<&str> = exported.lines().collect();
    let with_line = |n: usize, replacement: &str| -> String {
        let mut copy = lines.clone();
        copy[n - 1] = replacement;
        copy.join("\n") + "\n"
    };
    let task_line = lines
        .iter()
        .position(|l| l.starts_with("{\"kind\":\"task\""))
        .unwrap()
        + 1;
    let task_without_version = lines[task_line - 1].replace(",\"version\":3", "");
    assert_ne!(task_without_version, lines[task_line - 1]);
    let cases = [
        (with_line(4, "{\"kind\":\"user\",\"id\":"), 4, "EOF"),
        (
            with_line(5, "{\"kind\":\"reminder\",\"id\":\"x\"}"),
            5,
            "unknown record kind `reminder`",
        ),
        (
            with_line(task_line, &task_without_version),
            task_line,
            "missing field `version`",
        ),
        (
            with_line(
                2,
                &lines[1].replace("\"is_admin\"", "\"is_admin\":true,\"extra\""),
            ),
            2,
            "unknown field `extra`",
        ),
        (
            with_line(
                task_line,
                &lines[task_line - 1].replace("Europe/Berlin", "Mars/Olympus"),
            ),
            task_line,
            "Mars/Olympus",
        ),
        (
            with_line(
                1,
                "{\"kind\":\"taskflow-export\",\"version\":2,\"exported_at\":\"2026-01-01T00:00:00.000000Z\"}",
            ),
            1,
            "version 2",
        ),
        (with_line(1, lines[1]), 1, "not a TaskFlow export"),
        (String::new(), 1, "empty"),
    ];
    let db = ScratchPostgres::create("taskflow_test").await;
    let postgres = postgres_store(&db).await;
    let target = TestFile::create().await;
    for (file, line, needle) in cases {
        for store in [&postgres as &dyn Store, &target.store] {
            let error = import(store, &file).await.unwrap_err();
            let text = error.to_string();
            assert!(
                matches!(error, PortabilityError::Line { line: l, .. } if l == line),
                "expected an error on line {line}, got: {text}"
            );
            assert!(text.starts_with(&format!("line {line}: ")), "{text}");
            assert!(text.contains(needle), "`{needle}` not in: {text}");
        }
    }

    // A file that parses but breaks a database rule (two users with one e-mail) fails in the
    // middle of the transaction: nothing of it stays.
    let user_line = lines[1];
    let mut twin: serde_json::Value = serde_json::from_str(user_line).unwrap();
    twin["id"] = serde_json::json!(uuid::Uuid::now_v7());
    let duplicate = format!("{exported}{twin}\n");
    for store in [&postgres as &dyn Store, &target.store] {
        let error = import(store, &duplicate).await.unwrap_err();
        assert!(error.to_string().contains("users_email"), "{error}");
        assert!(
            body(&export(store).await).is_empty(),
            "a failed import leaves the database empty"
        );
    }

    // Both stores are still empty, so the good file imports.
    for store in [&postgres as &dyn Store, &target.store] {
        import(store, &exported)
            .await
            .expect("the intact file imports");
        assert_eq!(body(&export(store).await), body(&exported));
    }
    assert!(matches!(
        portability::parse(exported.as_bytes()).unwrap()[0],
        Record::User(_)
    ));
    postgres.close().await;
    target.store.close().await;
    source.store.close().await;
}
