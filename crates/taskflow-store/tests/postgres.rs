//! The PostgreSQL backend against a real server: the conformance story, migrations, readiness
//! and concurrency. Each test works in a fresh database (`taskflow_test_<uuid>`) that is
//! dropped when the test ends, whether it passed or not.
//!
//! The server is `postgres://postgres@127.0.0.1:5432/postgres` (trust auth) unless
//! `TASKFLOW_TEST_POSTGRES_URL` names another admin URL. A missing server fails the tests.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, TimeZone as _, Utc};
use sqlx::{Connection as _, Executor};
use taskflow_domain::events::{TaskEventKind, Topic, task_events};
use taskflow_domain::recurrence::{Anchor, RecurrenceRule};
use taskflow_domain::{
    Description, Email, NewTask, Priority, RecurrenceSpec, Tags, Task, TaskId, TimeZone, Title,
    User, UserId,
};
use taskflow_store::postgres::{
    OUTBOX_KEY_LOCK_SPACE, OUTBOX_LOCK, OutboxOrder, PostgresSettings, PostgresStore,
};
use taskflow_store::{
    AuditQuery, OutboxStore, SortDirection, SortField, Store, StoreError, TaskQuery, TaskStore,
    UserStore,
};
use taskflow_testing::postgres::ScratchPostgres;

/// A fresh database (see [`ScratchPostgres`]) with the stores these tests open on it.
struct TestDb(ScratchPostgres);

impl std::ops::Deref for TestDb {
    type Target = ScratchPostgres;
    fn deref(&self) -> &ScratchPostgres {
        &self.0
    }
}

impl TestDb {
    async fn create() -> Self {
        Self(ScratchPostgres::create("taskflow_test").await)
    }

    /// A fresh database that the tests reach as a locked-down role (see
    /// [`ScratchPostgres::restrict_login`]).
    async fn create_restricted() -> Self {
        let mut db = ScratchPostgres::create("taskflow_test").await;
        db.restrict_login().await;
        Self(db)
    }

    async fn store(&self) -> PostgresStore {
        PostgresStore::connect(&PostgresSettings::new(&self.url))
            .await
            .expect("connect")
    }

    async fn per_key_store(&self, max_connections: u32) -> PostgresStore {
        let mut settings = PostgresSettings::new(&self.url);
        settings.max_connections = max_connections;
        settings.outbox_order = OutboxOrder::PerKey;
        PostgresStore::connect(&settings).await.expect("connect")
    }

    /// A fresh, migrated database and a store on it with `max_connections`, writing its outbox
    /// rows in `order`.
    async fn migrated(max_connections: u32, order: OutboxOrder) -> (Self, Arc<PostgresStore>) {
        let db = Self::create().await;
        let mut settings = PostgresSettings::new(&db.url);
        settings.max_connections = max_connections;
        settings.outbox_order = order;
        let store = PostgresStore::connect(&settings).await.expect("connect");
        store.migrate().await.expect("migrate");
        (db, Arc::new(store))
    }
}

fn start() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).single().unwrap()
}

fn user(email: &str) -> User {
    User {
        id: UserId::new(),
        email: Email::parse(email).unwrap(),
        display_name: None,
        time_zone: TimeZone::UTC,
        is_admin: false,
        created_at: start(),
    }
}

fn new_task(owner: UserId, title: &str, description: &str, recurring: bool) -> Task {
    Task::create(
        owner,
        TimeZone::UTC,
        NewTask {
            title: Title::parse(title).unwrap(),
            description: Description::parse(description).unwrap(),
            priority: Priority::None,
            tags: Tags::parse::<&str>(&[]).unwrap(),
            due_at: Some(start() + TimeDelta::hours(1)),
            time_zone: None,
            recurrence: recurring.then(|| RecurrenceSpec {
                rule: RecurrenceRule::parse("FREQ=DAILY").unwrap(),
                anchor: Anchor::Due,
            }),
            reminders: Default::default(),
        },
        start(),
    )
    .unwrap()
}

async fn migrations_recorded(db: &TestDb) -> i64 {
    let mut conn = db.admin_connection().await;
    let n = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    let _ = conn.close().await;
    n
}

/// Every page of the audit log, of one task or all, in either order, walks an index from the
/// cursor, in the generic plan too, over a log of 20 000 entries of 1 000 users and 5 000 tasks.
/// (With a handful of users whose entries interleave evenly, PostgreSQL rightly prefers walking
/// the primary key from the cursor and skipping other users' entries; with many users, each
/// holding a small share, that would read ~1 000 entries per entry returned.)
#[tokio::test]
async fn audit_pages_walk_an_index_in_order() {
    let db = TestDb::create().await;
    let store = db.store().await;
    store.migrate().await.expect("migrate");
    let mut conn = db.admin_connection().await;
    for statement in [
        "INSERT INTO audit_log (event_id, user_id, task_id, event_type, occurred_at, data)
         SELECT 'e' || i, ('00000000-0000-4000-8000-' || lpad((i % 1000)::text, 12, '0'))::uuid,
                ('00000000-0000-4000-9000-' || lpad((i % 5000)::text, 12, '0'))::uuid,
                'taskflow.task.updated.v1', now(), '{}'
         FROM generate_series(1, 20000) AS i",
        "ANALYZE audit_log",
        "SET plan_cache_mode = force_generic_plan",
    ] {
        sqlx::query(statement).execute(&mut conn).await.unwrap();
    }
    for (of_task, newest_first, index) in [
        (false, false, "audit_log_user_seq"),
        (false, true, "audit_log_user_seq"),
        (true, false, "audit_log_task"),
        (true, true, "audit_log_task"),
    ] {
        let shape = format!("task {of_task}, newest first {newest_first}");
        let types = if of_task {
            "uuid, bigint, bigint, uuid"
        } else {
            "uuid, bigint, bigint"
        };
        let name = format!("audit_{of_task}_{newest_first}");
        sqlx::raw_sql(&format!(
            "PREPARE {name} ({types}) AS {}",
            taskflow_store::postgres::audit_page_statement(of_task, newest_first)
        ))
        .execute(&mut conn)
        .await
        .unwrap();
        let arguments = if of_task {
            format!(
                "'{}', 5, 10, '{}'",
                uuid::Uuid::now_v7(),
                uuid::Uuid::now_v7()
            )
        } else {
            format!("'{}', 5, 10", uuid::Uuid::now_v7())
        };
        let plan: Vec<String> =
            sqlx::query_scalar(&format!("EXPLAIN (COSTS OFF) EXECUTE {name} ({arguments})"))
                .fetch_all(&mut conn)
                .await
                .unwrap();
        let plan = plan.join("\n");
        assert!(plan.contains(index), "{shape}: {plan}");
        assert!(
            !plan.contains("Sort") && !plan.contains("Seq Scan"),
            "{shape}: {plan}"
        );
    }
    let _ = conn.close().await;
    store.close().await;
}

/// The search document of a fixed task computed in a session with an empty `search_path`, as
/// a restored dump computes `tasks.search`.
async fn search_document_without_search_path(db: &TestDb) -> String {
    let mut conn = db.admin_connection().await;
    let schema: String = sqlx::query_scalar(
        "SELECT n.nspname::text FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
         WHERE p.proname = 'taskflow_search_document'",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    conn.execute("SET search_path = ''").await.unwrap();
    let document: String = sqlx::query_scalar(&format!(
        "SELECT \"{schema}\".taskflow_search_document('Crème', ARRAY['Zoë'], 'Déjà')::text"
    ))
    .fetch_one(&mut conn)
    .await
    .unwrap();
    let _ = conn.close().await;
    document
}

#[tokio::test]
async fn postgres_store_passes_the_conformance_story() {
    let db = TestDb::create().await;
    let store = db.store().await;
    store.migrate().await.expect("migrate");
    let recorded = migrations_recorded(&db).await;
    store.migrate().await.expect("migrating twice is a no-op");
    assert_eq!(migrations_recorded(&db).await, recorded);
    taskflow_store::conformance::run(&store).await;
    assert_eq!(
        search_document_without_search_path(&db).await,
        "'creme':1A 'deja':3C 'zoe':2B",
        "the search functions name every schema themselves"
    );

    // The audit log is append-only, even for someone with SQL access.
    let mut conn = db.admin_connection().await;
    for statement in [
        "UPDATE audit_log SET event_type = 'forged'",
        "DELETE FROM audit_log",
        "TRUNCATE audit_log",
    ] {
        let error = conn.execute(statement).await.expect_err(statement);
        assert!(
            error.to_string().contains("append-only"),
            "{statement}: {error}"
        );
    }
    let entries: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_log")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(entries, 16, "every entry the story wrote is still there");
    let _ = conn.close().await;
    store.close().await;
}

#[tokio::test]
async fn the_story_passes_without_the_unaccent_extension() {
    let db = TestDb::create_restricted().await;
    let store = db.store().await;
    store
        .migrate()
        .await
        .expect("migrate without extension rights");
    let mut conn = db.admin_connection().await;
    let unaccent: i64 =
        sqlx::query_scalar("SELECT count(*) FROM pg_extension WHERE extname = 'unaccent'")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert_eq!(unaccent, 0, "the role must not have been able to create it");
    let _ = conn.close().await;
    // The story's "diacritics folded" step now runs on the built-in folding table.
    taskflow_store::conformance::run(&store).await;
    assert_eq!(
        search_document_without_search_path(&db).await,
        "'creme':1A 'deja':3C 'zoe':2B"
    );
    store.close().await;
}

#[tokio::test]
async fn an_unmigrated_store_is_not_ready() {
    let db = TestDb::create().await;
    let store = db.store().await;
    assert!(matches!(
        store.readiness().await,
        Err(StoreError::Unavailable(_))
    ));
    store.close().await;
}

#[tokio::test]
async fn readiness_fails_once_the_pool_is_closed() {
    let db = TestDb::create().await;
    let store = db.store().await;
    store.migrate().await.expect("migrate");
    store.readiness().await.expect("ready");
    store.close().await;
    assert!(matches!(
        store.readiness().await,
        Err(StoreError::Unavailable(_))
    ));
    assert!(matches!(
        store.user(UserId::new()).await,
        Err(StoreError::Unavailable(_))
    ));
}

#[tokio::test]
async fn an_unreachable_server_is_unavailable() {
    // Port 1 on localhost: nothing listens there.
    let mut settings = PostgresSettings::new("postgres://postgres@127.0.0.1:1/postgres");
    settings.acquire_timeout = Duration::from_secs(2);
    let started = std::time::Instant::now();
    assert!(matches!(
        PostgresStore::connect(&settings).await,
        Err(StoreError::Unavailable(_))
    ));
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_migrations_all_succeed() {
    let db = TestDb::create().await;
    let stores = [db.store().await, db.store().await, db.store().await];
    let runs = stores.iter().map(|store| store.migrate());
    for outcome in futures::future::join_all(runs).await {
        outcome.expect("every concurrent migration succeeds");
    }
    for store in &stores {
        store.readiness().await.expect("ready");
    }
    let files = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/postgres"))
        .unwrap()
        .filter(|entry| {
            entry
                .as_ref()
                .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "sql"))
        })
        .count() as i64;
    assert_eq!(
        migrations_recorded(&db).await,
        files,
        "each migration recorded once"
    );
    for store in &stores {
        store.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_updates_with_one_expected_version_let_exactly_one_through() {
    let (_db, store) = TestDb::migrated(20, OutboxOrder::Global).await;
    let owner = user("race@example.com");
    store.create_user(&owner, "h").await.unwrap();
    let original = new_task(owner.id, "Contended", "", false);
    store.insert_task(&original, &[]).await.unwrap();

    let attempts = (0..20).map(|i| {
        let store = store.clone();
        let mut changed = original.clone();
        changed.title = Title::parse(&format!("Contended {i}")).unwrap();
        changed.version = original.version + 1;
        let events = task_events(TaskEventKind::Updated, &changed, start(), None).to_vec();
        tokio::spawn(async move {
            store
                .update_task(owner.id, &changed, original.version, &events, None)
                .await
        })
    });
    let outcomes: Vec<_> = futures::future::join_all(attempts)
        .await
        .into_iter()
        .map(|joined| joined.unwrap())
        .collect();
    let succeeded = outcomes.iter().filter(|o| o.is_ok()).count();
    let mismatched = outcomes
        .iter()
        .filter(|o| {
            matches!(o, Err(StoreError::VersionMismatch { current }) if *current == original.version + 1)
        })
        .count();
    assert_eq!((succeeded, mismatched), (1, 19), "{outcomes:?}");
    let stored = store.task(owner.id, original.id).await.unwrap().unwrap();
    assert_eq!(stored.version, original.version + 1);
    // Only the winner's events were written.
    assert_eq!(store.unpublished_events(100).await.unwrap().len(), 2);
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_completions_create_one_next_occurrence() {
    let (_db, store) = TestDb::migrated(20, OutboxOrder::Global).await;
    let owner = user("series-race@example.com");
    store.create_user(&owner, "h").await.unwrap();
    let first = new_task(owner.id, "Daily", "", true);
    let series = first.series_id.expect("a recurring task has a series");
    // Twenty occurrences of one series (indexes 0-19), each completed at once by its own
    // request, all proposing occurrence 20 as their next one.
    let mut occurrences = Vec::new();
    for index in 0..20u32 {
        let mut occurrence = first.clone();
        occurrence.id = TaskId::new();
        occurrence.occurrence_index = index;
        store.insert_task(&occurrence, &[]).await.unwrap();
        occurrences.push(occurrence);
    }
    let completions = occurrences.into_iter().map(|occurrence| {
        let store = store.clone();
        let change = occurrence.completed(start()).unwrap().unwrap();
        let mut next = change.next_occurrence.clone().expect("the series goes on");
        next.occurrence_index = 20;
        let next_events = task_events(TaskEventKind::Created, &next, start(), None).to_vec();
        tokio::spawn(async move {
            let created = store
                .update_task(
                    owner.id,
                    &change.task,
                    occurrence.version,
                    &[],
                    Some((&next, &next_events)),
                )
                .await
                .expect("each completion succeeds");
            (created, next.id)
        })
    });
    let outcomes: Vec<(bool, TaskId)> = futures::future::join_all(completions)
        .await
        .into_iter()
        .map(|joined| joined.unwrap())
        .collect();
    let winners: Vec<TaskId> = outcomes
        .iter()
        .filter(|(created, _)| *created)
        .map(|(_, id)| *id)
        .collect();
    assert_eq!(
        winners.len(),
        1,
        "exactly one completion creates occurrence 20"
    );
    let all = store.series_occurrences(owner.id, series).await.unwrap();
    let twentieth: Vec<&Task> = all.iter().filter(|t| t.occurrence_index == 20).collect();
    assert_eq!(twentieth.len(), 1);
    assert_eq!(twentieth[0].id, winners[0]);
    // Only the winner's next-occurrence events were written.
    let events = store.unpublished_events(1000).await.unwrap();
    assert_eq!(events.len(), 2);
    assert!(
        events
            .iter()
            .all(|e| e.payload.contains(&winners[0].to_string()))
    );
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbox_readers_never_skip_rows_of_concurrent_writers() {
    let (_db, store) = TestDb::migrated(12, OutboxOrder::Global).await;
    let owner = user("outbox-race@example.com");
    store.create_user(&owner, "h").await.unwrap();
    let topic = Topic::TaskEvents.name();

    let writers: Vec<_> = (0..8)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                for i in 0..25 {
                    let task = new_task(owner.id, &format!("w{w} t{i}"), "", false);
                    let events = task_events(TaskEventKind::Created, &task, start(), None);
                    store.insert_task(&task, &events).await.unwrap();
                }
            })
        })
        .collect();
    // A consumer that trusts `seq` order: it reads after its offset and never looks back.
    let mut offset = 0;
    let mut seen = BTreeSet::new();
    let mut finished = false;
    loop {
        let done = writers.iter().all(|w| w.is_finished());
        loop {
            let rows = store.events_after(topic, offset, 50).await.unwrap();
            let Some(last) = rows.last() else { break };
            offset = last.seq;
            seen.extend(rows.iter().map(|r| r.seq));
        }
        if finished {
            break;
        }
        // One more pass after every writer has finished.
        finished = done;
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    for writer in writers {
        writer.await.unwrap();
    }
    let all: BTreeSet<i64> = store
        .events_after(topic, 0, 10_000)
        .await
        .unwrap()
        .iter()
        .map(|r| r.seq)
        .collect();
    assert_eq!(all.len(), 200);
    assert_eq!(seen, all, "the offset-following reader saw every row");
    assert_eq!(
        *store.outbox_commits().borrow(),
        store
            .unpublished_events(10_000)
            .await
            .unwrap()
            .last()
            .unwrap()
            .seq
    );
    store.close().await;
}

/// With `OutboxOrder::PerKey`, a relay-like reader (every unpublished row in `seq` order, then
/// marked published) sees each user's rows in `seq` order although several writers of each
/// user and of different users commit concurrently: per key, `seq` order is commit order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_key_outbox_order_keeps_each_users_rows_in_commit_order_for_the_relay() {
    let (_db, store) = TestDb::migrated(12, OutboxOrder::PerKey).await;
    let mut owners = Vec::new();
    for n in 0..3 {
        let owner = user(&format!("per-key-{n}@example.com"));
        store.create_user(&owner, "h").await.unwrap();
        owners.push(owner.id);
    }
    let writers: Vec<_> = (0..9)
        .map(|w| {
            let (store, owner) = (store.clone(), owners[w % 3]);
            tokio::spawn(async move {
                for i in 0..20 {
                    let task = new_task(owner, &format!("w{w} t{i}"), "", false);
                    let events = task_events(TaskEventKind::Created, &task, start(), None);
                    store.insert_task(&task, &events).await.unwrap();
                }
            })
        })
        .collect();
    let mut last_of_key = std::collections::HashMap::<String, i64>::new();
    let mut published = 0;
    let mut finished = false;
    loop {
        let done = writers.iter().all(|w| w.is_finished());
        loop {
            let rows = store.unpublished_events(50).await.unwrap();
            if rows.is_empty() {
                break;
            }
            for row in &rows {
                let last = last_of_key.entry(row.partition_key.clone()).or_default();
                assert!(
                    row.seq > *last,
                    "{}: seq {} appeared after {}",
                    row.partition_key,
                    row.seq,
                    last
                );
                *last = row.seq;
            }
            published += rows.len();
            let seqs: Vec<i64> = rows.iter().map(|r| r.seq).collect();
            store.mark_published(&seqs, start()).await.unwrap();
        }
        if finished {
            break;
        }
        finished = done;
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    for writer in writers {
        writer.await.unwrap();
    }
    // Two events (task-events, task-updates) per task.
    assert_eq!(published, 9 * 20 * 2);
    assert_eq!(last_of_key.len(), 3);
    store.close().await;
}

/// With `OutboxOrder::PerKey`, a writer waits only for writers of its own user, and whoever
/// holds `OUTBOX_LOCK` exclusively still pauses every outbox writer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_key_outbox_writers_wait_for_their_own_key_and_for_the_global_lock() {
    let (db, store) = TestDb::migrated(4, OutboxOrder::PerKey).await;
    let (alice, bob) = (user("alice@example.com"), user("bob@example.com"));
    store.create_user(&alice, "h").await.unwrap();
    store.create_user(&bob, "h").await.unwrap();
    let write = |owner: UserId, title: &'static str| {
        let store = store.clone();
        tokio::spawn(async move {
            let task = new_task(owner, title, "", false);
            let events = task_events(TaskEventKind::Created, &task, start(), None);
            store.insert_task(&task, &events).await.unwrap();
        })
    };
    let mut holder = db.admin_connection().await;

    sqlx::query("SELECT pg_advisory_lock($1, hashtext($2))")
        .bind(OUTBOX_KEY_LOCK_SPACE)
        .bind(alice.id.to_string())
        .execute(&mut holder)
        .await
        .unwrap();
    let for_alice = write(alice.id, "waits");
    tokio::time::timeout(Duration::from_secs(5), write(bob.id, "passes"))
        .await
        .expect("bob's write does not wait for alice's key")
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!for_alice.is_finished(), "alice's write waits for her key");
    sqlx::query("SELECT pg_advisory_unlock($1, hashtext($2))")
        .bind(OUTBOX_KEY_LOCK_SPACE)
        .bind(alice.id.to_string())
        .execute(&mut holder)
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(5), for_alice)
        .await
        .expect("alice's write goes on once her key is free")
        .unwrap();

    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(OUTBOX_LOCK)
        .execute(&mut holder)
        .await
        .unwrap();
    let paused = write(bob.id, "paused");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !paused.is_finished(),
        "the exclusive global lock pauses writers"
    );
    sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(OUTBOX_LOCK)
        .execute(&mut holder)
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(5), paused)
        .await
        .expect("the write goes on once the global lock is free")
        .unwrap();
    let rows = store
        .events_after(Topic::TaskEvents.name(), 0, 10)
        .await
        .unwrap();
    assert_eq!(rows.len(), 3);
    let _ = holder.close().await;
    store.close().await;
}

/// Consumer records are applied in batches on PostgreSQL: concurrent calls each learn whether
/// their event was new (a pair repeated in one batch is new once), audit entries land for the
/// new ones only, and a call that cannot be stored fails alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batched_consumer_records_answer_each_call_and_fail_alone() {
    use taskflow_store::{AuditEntry, ConsumerEffect, ConsumerStore};
    let (_db, store) = TestDb::migrated(4, OutboxOrder::Global).await;
    let owner = user("batched@example.com");
    store.create_user(&owner, "h").await.unwrap();
    let task_id = TaskId::new();
    let audit = |event_id: String| {
        ConsumerEffect::Audit(AuditEntry {
            event_id,
            user_id: owner.id,
            task_id,
            event_type: "taskflow.task.created.v1".into(),
            occurred_at: start(),
            data: serde_json::json!({"n": 1}),
        })
    };
    // 100 distinct events, one event delivered 20 times, and one event id PostgreSQL cannot
    // store (a NUL byte), all at once.
    let mut calls: Vec<(String, ConsumerEffect)> = (0..100)
        .map(|n| (format!("e{n}"), audit(format!("e{n}"))))
        .collect();
    calls.extend((0..20).map(|_| ("dup".to_owned(), audit("dup".to_owned()))));
    calls.push(("bad\0id".to_owned(), ConsumerEffect::Nothing));
    let outcomes = futures::future::join_all(calls.iter().map(|(event_id, effect)| {
        let store = store.clone();
        async move { store.apply_once("audit", event_id, effect, start()).await }
    }))
    .await;
    for (n, outcome) in outcomes.iter().take(100).enumerate() {
        assert!(matches!(outcome, Ok(true)), "e{n}: {outcome:?}");
    }
    let dup_fresh = outcomes[100..120]
        .iter()
        .filter(|o| matches!(o, Ok(true)))
        .count();
    assert_eq!(dup_fresh, 1, "a repeated event is new exactly once");
    assert!(outcomes[100..120].iter().all(Result::is_ok));
    assert!(outcomes[120].is_err(), "the bad call fails on its own");
    let entries = store
        .audit_entries(
            owner.id,
            AuditQuery {
                task: Some(task_id),
                after: None,
                newest_first: false,
                limit: 1_000,
            },
        )
        .await
        .unwrap()
        .entries;
    assert_eq!(entries.len(), 101, "one entry per new event");
    assert!(
        !store
            .apply_once("audit", "e7", &audit("e7".into()), start())
            .await
            .unwrap(),
        "a later delivery is not new"
    );
    store.close().await;
}

/// Searches may hold every pooled connection but one: while two searches wait (here on a
/// lock of `tasks`) in a pool of two, a query that does not search still gets a connection.
#[tokio::test]
async fn searches_leave_a_connection_for_other_queries() {
    let (db, store) = TestDb::migrated(2, OutboxOrder::Global).await;
    let owner = user("lanes@example.com");
    store.create_user(&owner, "h").await.unwrap();
    let mut lock = db.admin_connection().await;
    lock.execute("BEGIN").await.unwrap();
    lock.execute("LOCK TABLE tasks IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let searches: Vec<_> = (0..2)
        .map(|_| {
            let (store, owner) = (store.clone(), owner.id);
            tokio::spawn(async move {
                let mut query = TaskQuery::new(start());
                query.search_terms = vec!["milk".into()];
                store.list_tasks(owner, &query).await
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let found = tokio::time::timeout(Duration::from_secs(5), store.user(owner.id))
        .await
        .expect("a query waited for a connection behind searches")
        .unwrap();
    assert_eq!(found.map(|u| u.id), Some(owner.id));
    lock.execute("ROLLBACK").await.unwrap();
    for search in searches {
        assert!(search.await.unwrap().unwrap().items.is_empty());
    }
    store.close().await;
}

#[tokio::test]
async fn search_ranks_title_matches_first_and_never_fails_on_odd_terms() {
    let db = TestDb::create().await;
    let store = db.store().await;
    store.migrate().await.expect("migrate");
    let owner = user("search@example.com");
    store.create_user(&owner, "h").await.unwrap();
    let in_description = new_task(owner.id, "Errands", "get oat milk on the way", false);
    let in_title = new_task(owner.id, "Milk", "from the shop", false);
    store.insert_task(&in_description, &[]).await.unwrap();
    store.insert_task(&in_title, &[]).await.unwrap();
    for extra in 0..3 {
        let t = new_task(owner.id, &format!("Milk run {extra}"), "milk milk", false);
        store.insert_task(&t, &[]).await.unwrap();
    }

    let mut query = TaskQuery::new(start());
    query.search_terms = vec!["MILK".to_lowercase()];
    query.sort = SortField::Relevance;
    query.direction = SortDirection::Asc;
    query.limit = 1;
    let mut order = Vec::new();
    loop {
        let page = store.list_tasks(owner.id, &query).await.unwrap();
        order.extend(page.items.iter().map(|t| t.id));
        match page.next_cursor {
            Some(cursor) => query.after = Some(cursor),
            None => break,
        }
    }
    assert_eq!(order.len(), 5, "paging by relevance: no gaps or duplicates");
    assert_eq!(order.iter().collect::<BTreeSet<_>>().len(), 5);
    assert_eq!(
        order.last(),
        Some(&in_description.id),
        "a description-only match ranks last"
    );

    // Terms normally come from `search_terms`, but the field is public: nothing in it may
    // break the tsquery or the statement.
    for hostile in [
        "a'b", "\\", "'", "&|!", "':*", "(", "ŉ", "½", "", " ", "o'neil:*", "x) | (y",
    ] {
        let mut query = TaskQuery::new(start());
        query.search_terms = vec!["milk".into(), hostile.into()];
        let page = store.list_tasks(owner.id, &query).await;
        assert!(page.is_ok(), "search term {hostile:?}: {page:?}");
    }
    store.close().await;
}

/// How long a relay lead lasts without a check, in the tests that do not let it lapse.
const LEAD: Duration = Duration::from_secs(60);

/// The backend process holding the relay lead's advisory lock on `db`, if any.
async fn relay_leader_pid(db: &TestDb) -> Option<i32> {
    let pids = advisory_lock_pids(db, taskflow_store::postgres::RELAY_LOCK).await;
    assert!(pids.len() <= 1, "one leader at most: {pids:?}");
    pids.first().copied()
}

/// Sessions holding the session advisory lock `key` in the test database.
async fn advisory_lock_pids(db: &TestDb, key: i64) -> Vec<i32> {
    let mut conn = db.admin_connection().await;
    let pids = sqlx::query_scalar(
        "SELECT pid FROM pg_locks
         WHERE locktype = 'advisory' AND granted AND objsubid = 1
           AND classid::bigint = $1 AND objid::bigint = $2
           AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
    )
    .bind(key >> 32)
    .bind(key & 0xffff_ffff)
    .fetch_all(&mut conn)
    .await
    .unwrap();
    let _ = conn.close().await;
    pids
}

/// Connects a store that writes events with `order` and claims it.
async fn claiming(db: &TestDb, order: OutboxOrder) -> Result<PostgresStore, StoreError> {
    let mut settings = PostgresSettings::new(&db.url);
    settings.max_connections = 2;
    settings.outbox_order = order;
    settings.claim_outbox_order = true;
    PostgresStore::connect(&settings).await
}

#[tokio::test]
async fn processes_of_different_outbox_orders_never_write_to_one_database_together() {
    use taskflow_store::postgres::{GLOBAL_ORDER_LOCK, PER_KEY_ORDER_LOCK};
    let db = TestDb::create().await;
    let refused = |outcome: Result<PostgresStore, StoreError>| match outcome {
        Err(StoreError::Unavailable(message)) => message,
        Ok(_) => panic!("a process of the other order was let in"),
        Err(other) => panic!("unexpected error: {other}"),
    };

    // Two in-process-bus processes share the database; a broker-backed one is refused, and
    // says why and what to do.
    let memory = [
        claiming(&db, OutboxOrder::Global).await.unwrap(),
        claiming(&db, OutboxOrder::Global).await.unwrap(),
    ];
    let message = refused(claiming(&db, OutboxOrder::PerKey).await);
    assert!(message.contains("in-process bus"), "{message}");
    assert!(message.contains("same kind of bus"), "{message}");
    assert_eq!(advisory_lock_pids(&db, GLOBAL_ORDER_LOCK).await.len(), 2);
    // Tools that write no events (migrate, export) claim nothing and are not refused.
    let tool = db.per_key_store(1).await;
    tool.migrate().await.unwrap();
    tool.close().await;

    // Once every in-process-bus process is gone the broker-backed ones may start, and then
    // the in-process bus is refused.
    for store in &memory {
        store.close().await;
    }
    let brokered = claiming(&db, OutboxOrder::PerKey).await.unwrap();
    let message = refused(claiming(&db, OutboxOrder::Global).await);
    assert!(message.contains("external broker"), "{message}");
    brokered.readiness().await.unwrap();

    // A claim lost with its session (server restart, broken connection) is taken again at the
    // next readiness check; if meanwhile a process of the other order started, readiness
    // fails instead.
    let kill = |pids: Vec<i32>| async {
        let mut admin = db.admin_connection().await;
        for pid in pids {
            // With a timeout it returns once the session is gone, its locks released.
            sqlx::query("SELECT pg_terminate_backend($1, 5000)")
                .bind(pid)
                .execute(&mut admin)
                .await
                .unwrap();
        }
        let _ = admin.close().await;
    };
    kill(advisory_lock_pids(&db, PER_KEY_ORDER_LOCK).await).await;
    brokered.readiness().await.unwrap();
    assert_eq!(advisory_lock_pids(&db, PER_KEY_ORDER_LOCK).await.len(), 1);

    kill(advisory_lock_pids(&db, PER_KEY_ORDER_LOCK).await).await;
    let memory = claiming(&db, OutboxOrder::Global).await.unwrap();
    assert!(matches!(
        brokered.readiness().await,
        Err(StoreError::Unavailable(_))
    ));
    memory.close().await;
    brokered.readiness().await.unwrap();
    brokered.close().await;
}

#[tokio::test]
async fn one_process_leads_the_outbox_relay_and_a_standby_takes_over_when_it_goes() {
    let db = TestDb::create().await;
    let stores = [db.store().await, db.store().await, db.store().await];
    stores[0].migrate().await.expect("migrate");

    assert!(stores[0].lead_outbox_relay(LEAD).await.unwrap());
    assert!(
        stores[0].lead_outbox_relay(LEAD).await.unwrap(),
        "the leader keeps the lead"
    );
    assert!(!stores[1].lead_outbox_relay(LEAD).await.unwrap());
    assert!(!stores[2].lead_outbox_relay(LEAD).await.unwrap());

    // Resigning hands the lead on at once.
    stores[0].resign_outbox_relay().await;
    assert!(stores[1].lead_outbox_relay(LEAD).await.unwrap());
    assert!(!stores[0].lead_outbox_relay(LEAD).await.unwrap());
    assert!(!stores[2].lead_outbox_relay(LEAD).await.unwrap());

    // The leader's session ends under it (its process died, the server cut it off): it notices
    // at its next check, and a standby takes the lead.
    let pid = relay_leader_pid(&db)
        .await
        .expect("a session holds the lead");
    let mut admin = db.admin_connection().await;
    // With a timeout it returns once the session is gone and its lock released; without one
    // it only signals the backend, and the standby below could ask before the lock went.
    let terminated: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1, 5000)")
        .bind(pid)
        .fetch_one(&mut admin)
        .await
        .unwrap();
    assert!(terminated);
    let _ = admin.close().await;
    // The standby asks first: the old leader has not noticed yet, but the lock went with its
    // session.
    assert!(
        stores[2].lead_outbox_relay(LEAD).await.unwrap(),
        "a standby took over"
    );
    assert!(
        !stores[1].lead_outbox_relay(LEAD).await.unwrap(),
        "the old leader noticed it lost the lead"
    );
    assert_ne!(relay_leader_pid(&db).await, Some(pid));
    for store in &stores {
        store.resign_outbox_relay().await;
        store.close().await;
    }
}

/// Backend pids of the store's own sessions (application name `taskflow`) in the test database.
async fn store_session_pids(db: &TestDb) -> BTreeSet<i32> {
    let mut conn = db.admin_connection().await;
    let pids: Vec<i32> = sqlx::query_scalar(
        "SELECT pid FROM pg_stat_activity
         WHERE datname = current_database() AND application_name = 'taskflow'",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    let _ = conn.close().await;
    pids.into_iter().collect()
}

#[tokio::test]
async fn a_standby_asks_for_the_lead_again_on_the_connection_it_kept() {
    let db = TestDb::create().await;
    let stores = [db.store().await, db.store().await];
    stores[0].migrate().await.expect("migrate");
    assert!(stores[0].lead_outbox_relay(LEAD).await.unwrap());
    assert!(!stores[1].lead_outbox_relay(LEAD).await.unwrap());
    let sessions = store_session_pids(&db).await;
    for _ in 0..5 {
        assert!(!stores[1].lead_outbox_relay(LEAD).await.unwrap());
    }
    assert_eq!(
        store_session_pids(&db).await,
        sessions,
        "a standby opens no connection per attempt"
    );
    stores[0].resign_outbox_relay().await;
    assert!(stores[1].lead_outbox_relay(LEAD).await.unwrap());
    let leader = relay_leader_pid(&db).await.expect("a leader");
    assert!(
        sessions.contains(&leader),
        "the standby took the lead on the connection it kept"
    );
    for store in &stores {
        store.resign_outbox_relay().await;
        store.close().await;
    }
}

#[tokio::test]
async fn a_relay_leader_that_stops_checking_loses_the_lead_to_a_standby() {
    let db = TestDb::create().await;
    let stores = [db.store().await, db.store().await];
    stores[0].migrate().await.expect("migrate");
    let lapse = Duration::from_millis(1500);
    assert!(stores[0].lead_outbox_relay(lapse).await.unwrap());
    // A leader that keeps checking keeps the lead, well past the lapse time.
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(
            stores[0].lead_outbox_relay(lapse).await.unwrap(),
            "a working leader keeps the lead"
        );
        assert!(!stores[1].lead_outbox_relay(lapse).await.unwrap());
    }
    // Then it stops checking (a frozen process, a node gone without closing its connection)
    // while its session stays open: the lead lapses and a standby takes it.
    let pid = relay_leader_pid(&db)
        .await
        .expect("a session holds the lead");
    let stopped = tokio::time::Instant::now();
    while !stores[1].lead_outbox_relay(lapse).await.unwrap() {
        assert!(
            stopped.elapsed() < lapse * 5,
            "no standby took over {:?} after the leader stopped checking",
            stopped.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        stopped.elapsed() >= lapse - Duration::from_millis(100),
        "the lead lapsed after {:?}, before {lapse:?}",
        stopped.elapsed()
    );
    assert_ne!(relay_leader_pid(&db).await, Some(pid));
    assert!(
        !stores[0].lead_outbox_relay(lapse).await.unwrap(),
        "the old leader noticed it lost the lead"
    );
    for store in &stores {
        store.resign_outbox_relay().await;
        store.close().await;
    }
}
