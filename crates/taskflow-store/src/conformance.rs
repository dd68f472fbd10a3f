//! One behaviour story that every [`Store`] backend must pass.
//!
//! Backends call [`run`] from their own test file with a freshly migrated, empty store. The
//! story panics (with a message saying which step) on the first difference, so it is meant for
//! tests only.

use chrono::{DateTime, TimeDelta, TimeZone as _, Utc};
use taskflow_domain::events::{OutgoingEvent, TaskEventKind, Topic, task_events};
use taskflow_domain::recurrence::{Anchor, RecurrenceRule};
use taskflow_domain::{
    Description, Email, NewTask, Priority, RecurrenceSpec, Tag, Tags, Task, TaskId, TaskStatus,
    TimeZone, Title, TokenId, User, UserId,
};

use crate::query::search_terms;
use crate::{
    AccessToken, CalendarFeed, SortDirection, SortField, Store, StoreError, TagMode, TaskQuery,
};

fn start() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0)
        .single()
        .unwrap_or_default()
}

/// A user with `email` (for the crate's own tests too).
pub(crate) fn user(email: &str) -> User {
    User {
        id: UserId::new(),
        email: Email::parse(email).unwrap_or_else(|e| panic!("test e-mail {email}: {e}")),
        display_name: None,
        time_zone: TimeZone::UTC,
        is_admin: false,
        created_at: start(),
    }
}

/// A task of `owner` (for the crate's own tests too).
pub(crate) fn task(
    owner: UserId,
    title: &str,
    priority: Priority,
    tags: &[&str],
    due: Option<i64>,
    at: i64,
) -> Task {
    let now = start() + TimeDelta::seconds(at);
    Task::create(
        owner,
        TimeZone::UTC,
        NewTask {
            title: Title::parse(title).unwrap_or_else(|e| panic!("title {title}: {e}")),
            description: Description::parse(&format!("about {title}")).unwrap_or_default(),
            priority,
            tags: Tags::parse(tags).unwrap_or_default(),
            due_at: due.map(|h| start() + TimeDelta::hours(h)),
            time_zone: None,
            recurrence: None,
            reminders: taskflow_domain::ReminderPlan::default(),
        },
        now,
    )
    .unwrap_or_else(|e| panic!("task {title}: {e}"))
}

fn no_events(_: &Task) -> Vec<OutgoingEvent> {
    Vec::new()
}

fn completed(task: &Task, at: DateTime<Utc>) -> Task {
    task.completed(at)
        .expect("completes")
        .expect("changes")
        .task
}

/// Runs the whole story against `store`, which must be migrated and empty.
pub async fn run(store: &dyn Store) {
    store.readiness().await.expect("a migrated store is ready");
    users(store).await;
    tokens(store).await;
    tasks(store).await;
    listing(store).await;
    series(store).await;
    outbox(store).await;
    consumers(store).await;
    calendar_feeds(store).await;
    tags_with_events(store).await;
}

/// Tags written together with events (the path an API create or edit takes): stored, counted,
/// replaced by an edit; a failed insert leaves neither rows nor events.
async fn tags_with_events(store: &dyn Store) {
    let owner = user("tagged@example.com");
    store.create_user(&owner, "h").await.expect("user");
    let names = |counts: Vec<crate::TagCount>| {
        let mut names: Vec<(String, i64)> = counts.into_iter().map(|c| (c.tag, c.tasks)).collect();
        names.sort();
        names
    };
    let t = task(
        owner.id,
        "Tagged",
        Priority::High,
        &["home", "finance"],
        Some(2),
        0,
    );
    let created = task_events(TaskEventKind::Created, &t, start(), None);
    store.insert_task(&t, &created).await.expect("insert");
    assert_eq!(
        store.task(owner.id, t.id).await.expect("get"),
        Some(t.clone())
    );
    assert_eq!(
        names(store.tag_counts(owner.id).await.expect("tags")),
        vec![("finance".to_owned(), 1), ("home".to_owned(), 1)]
    );

    let before = store
        .unpublished_events(10_000)
        .await
        .expect("events")
        .len();
    assert!(matches!(
        store.insert_task(&t, &created).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(
        store
            .unpublished_events(10_000)
            .await
            .expect("events")
            .len(),
        before,
        "a failed insert writes no events"
    );

    let mut edited = t.clone();
    edited.tags = Tags::parse(&["finance", "garden"]).expect("tags");
    edited.version = t.version + 1;
    let updated = task_events(TaskEventKind::Updated, &edited, start(), None);
    store
        .update_task(owner.id, &edited, t.version, &updated, None)
        .await
        .expect("update");
    assert_eq!(
        names(store.tag_counts(owner.id).await.expect("tags")),
        vec![("finance".to_owned(), 1), ("garden".to_owned(), 1)],
        "an edit replaces the tags it dropped and keeps the others"
    );
    let tag = |s: &str| Tag::parse(s).unwrap_or_else(|e| panic!("{e}"));
    let mut by_tag = TaskQuery::new(start());
    by_tag.tags = vec![tag("home")];
    assert!(collect(store, owner.id, by_tag.clone()).await.is_empty());
    by_tag.tags = vec![tag("garden")];
    assert_eq!(collect(store, owner.id, by_tag).await, vec![t.id]);
}

async fn calendar_feeds(store: &dyn Store) {
    let owner = user("feed@example.com");
    let other = user("feed2@example.com");
    store.create_user(&owner, "h").await.expect("user");
    store.create_user(&other, "h").await.expect("user");
    let now = start();
    assert_eq!(store.calendar_feed(owner.id).await.expect("read"), None);
    assert!(matches!(
        store.delete_calendar_feed(owner.id).await,
        Err(StoreError::NotFound)
    ));
    let feed = CalendarFeed {
        user_id: owner.id,
        prefix: "tfc_aaaa".into(),
        created_at: now,
        last_used_at: None,
    };
    store
        .replace_calendar_feed(&feed, b"feed-one")
        .await
        .expect("feed");
    assert_eq!(
        store.calendar_feed(owner.id).await.expect("read"),
        Some(feed.clone())
    );
    let found = store
        .user_by_calendar_feed(b"feed-one", now + TimeDelta::minutes(5))
        .await
        .expect("lookup")
        .expect("the feed's owner");
    assert_eq!(found.id, owner.id);
    assert_eq!(
        store
            .calendar_feed(owner.id)
            .await
            .expect("read")
            .and_then(|f| f.last_used_at),
        Some(now + TimeDelta::minutes(5)),
        "a fetch records its time"
    );
    assert!(
        store
            .user_by_calendar_feed(b"unknown", now)
            .await
            .expect("lookup")
            .is_none()
    );

    // Rotating replaces the token: the old one stops working.
    let rotated = CalendarFeed {
        prefix: "tfc_bbbb".into(),
        created_at: now + TimeDelta::hours(1),
        ..feed.clone()
    };
    store
        .replace_calendar_feed(&rotated, b"feed-two")
        .await
        .expect("rotate");
    assert!(
        store
            .user_by_calendar_feed(b"feed-one", now)
            .await
            .expect("lookup")
            .is_none()
    );
    assert_eq!(
        store.calendar_feed(owner.id).await.expect("read"),
        Some(rotated)
    );
    // Another user cannot take a token hash that is in use.
    let theirs = CalendarFeed {
        user_id: other.id,
        ..feed.clone()
    };
    assert!(matches!(
        store.replace_calendar_feed(&theirs, b"feed-two").await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(store.calendar_feed(other.id).await.expect("read"), None);

    store.delete_calendar_feed(owner.id).await.expect("revoke");
    assert!(
        store
            .user_by_calendar_feed(b"feed-two", now)
            .await
            .expect("lookup")
            .is_none()
    );
    assert_eq!(store.calendar_feed(owner.id).await.expect("read"), None);
}

async fn users(store: &dyn Store) {
    let ann = user("ann@example.com");
    store
        .create_user(&ann, "hash-a")
        .await
        .expect("create user");
    let again = user("ANN@example.com");
    assert!(
        matches!(
            store.create_user(&again, "h").await,
            Err(StoreError::Conflict("users_email"))
        ),
        "duplicate e-mail must conflict"
    );
    let (found, hash) = store
        .user_credentials(&ann.email)
        .await
        .expect("credentials")
        .expect("user exists");
    assert_eq!(found, ann);
    assert_eq!(hash, "hash-a");
    assert_eq!(store.user(ann.id).await.expect("user"), Some(ann.clone()));
    assert_eq!(store.user(UserId::new()).await.expect("missing user"), None);

    let promoted = store
        .set_admin(&ann.email, true)
        .await
        .expect("grant admin");
    assert!(promoted.is_admin);
    assert!(
        store
            .user(ann.id)
            .await
            .expect("user")
            .expect("exists")
            .is_admin
    );
    assert!(
        !store
            .set_admin(&ann.email, false)
            .await
            .expect("revoke")
            .is_admin
    );
    assert!(matches!(
        store
            .set_admin(&Email::parse("nobody@example.com").expect("email"), true)
            .await,
        Err(StoreError::NotFound)
    ));

    let external = user("ext@example.com");
    store
        .create_external_user(&external, "auth0|123")
        .await
        .expect("external user");
    assert_eq!(
        store
            .user_by_external_subject("auth0|123")
            .await
            .expect("by subject"),
        Some(external)
    );
    assert_eq!(
        store
            .user_by_external_subject("nobody")
            .await
            .expect("by subject"),
        None
    );
}

async fn tokens(store: &dyn Store) {
    let owner = user("tok@example.com");
    let other = user("tok2@example.com");
    store.create_user(&owner, "h").await.expect("user");
    store.create_user(&other, "h").await.expect("user");
    let now = start();
    let live = AccessToken {
        id: TokenId::new(),
        user_id: owner.id,
        name: "cli".into(),
        prefix: "tfp_abcd".into(),
        created_at: now,
        last_used_at: None,
        expires_at: None,
    };
    let expired = AccessToken {
        id: TokenId::new(),
        name: "old".into(),
        expires_at: Some(now - TimeDelta::seconds(1)),
        ..live.clone()
    };
    store
        .create_access_token(&live, b"hash-live")
        .await
        .expect("token");
    store
        .create_access_token(&expired, b"hash-old")
        .await
        .expect("token");
    assert_eq!(store.access_tokens(owner.id).await.expect("list").len(), 2);
    assert!(
        store
            .access_tokens(other.id)
            .await
            .expect("list")
            .is_empty()
    );

    let authed = store
        .authenticate_access_token(b"hash-live", now)
        .await
        .expect("auth");
    assert_eq!(authed.map(|u| u.id), Some(owner.id));
    assert_eq!(
        store
            .authenticate_access_token(b"hash-old", now)
            .await
            .expect("auth"),
        None
    );
    assert_eq!(
        store
            .authenticate_access_token(b"nope", now)
            .await
            .expect("auth"),
        None
    );
    let listed = store.access_tokens(owner.id).await.expect("list");
    assert!(
        listed
            .iter()
            .any(|t| t.id == live.id && t.last_used_at == Some(now))
    );

    assert!(matches!(
        store.delete_access_token(other.id, live.id).await,
        Err(StoreError::NotFound)
    ));
    store
        .delete_access_token(owner.id, live.id)
        .await
        .expect("delete");
    assert_eq!(
        store
            .authenticate_access_token(b"hash-live", now)
            .await
            .expect("auth"),
        None
    );
}

async fn tasks(store: &dyn Store) {
    let owner = user("tasks@example.com");
    let intruder = user("intruder@example.com");
    store.create_user(&owner, "h").await.expect("user");
    store.create_user(&intruder, "h").await.expect("user");

    let original = task(
        owner.id,
        "Buy milk",
        Priority::High,
        &["home", "errand"],
        Some(5),
        0,
    );
    store.insert_task(&original, &[]).await.expect("insert");
    assert_eq!(
        store.task(owner.id, original.id).await.expect("get"),
        Some(original.clone())
    );
    assert_eq!(
        store.task(intruder.id, original.id).await.expect("get"),
        None
    );

    let later = start() + TimeDelta::minutes(1);
    let done = completed(&original, later);
    store
        .update_task(owner.id, &done, original.version, &[], None)
        .await
        .expect("update");
    assert_eq!(
        store.task(owner.id, original.id).await.expect("get"),
        Some(done.clone())
    );
    assert!(matches!(
        store
            .update_task(owner.id, &done, original.version, &[], None)
            .await,
        Err(StoreError::VersionMismatch { current: 2 })
    ));
    assert!(matches!(
        store
            .update_task(intruder.id, &done, done.version, &[], None)
            .await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        store
            .delete_task(
                intruder.id,
                original.id,
                None,
                std::sync::Arc::new(no_events)
            )
            .await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        store
            .delete_task(
                owner.id,
                original.id,
                Some(1),
                std::sync::Arc::new(no_events)
            )
            .await,
        Err(StoreError::VersionMismatch { current: 2 })
    ));
    store
        .delete_task(
            owner.id,
            original.id,
            Some(2),
            std::sync::Arc::new(no_events),
        )
        .await
        .expect("delete");
    assert_eq!(store.task(owner.id, original.id).await.expect("get"), None);
    assert!(matches!(
        store
            .delete_task(owner.id, original.id, None, std::sync::Arc::new(no_events))
            .await,
        Err(StoreError::NotFound)
    ));
    assert!(store.tag_counts(owner.id).await.expect("tags").is_empty());
    assert!(matches!(
        store.update_task(owner.id, &done, 2, &[], None).await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(store.insert_task(&done, &[]).await, Ok(())));
    assert!(matches!(
        store.insert_task(&done, &[]).await,
        Err(StoreError::Conflict(_))
    ));
    store
        .delete_task(owner.id, done.id, None, std::sync::Arc::new(no_events))
        .await
        .expect("delete");
}

async fn collect(store: &dyn Store, owner: UserId, mut query: TaskQuery) -> Vec<TaskId> {
    let mut ids = Vec::new();
    loop {
        let page = store.list_tasks(owner, &query).await.expect("list");
        assert!(page.items.len() <= query.limit as usize);
        ids.extend(page.items.iter().map(|t| t.id));
        match page.next_cursor {
            Some(cursor) => query.after = Some(cursor),
            None => return ids,
        }
    }
}

async fn listing(store: &dyn Store) {
    let owner = user("list@example.com");
    let other = user("list2@example.com");
    store.create_user(&owner, "h").await.expect("user");
    store.create_user(&other, "h").await.expect("user");
    let specs: [(&str, Priority, &[&str], Option<i64>); 8] = [
        (
            "Pay rent",
            Priority::Urgent,
            &["finance", "home"],
            Some(-48),
        ),
        ("Buy milk", Priority::Low, &["errand"], Some(2)),
        ("buy bread", Priority::Low, &["errand", "home"], None),
        ("Call mom", Priority::Medium, &[], Some(2)),
        ("Write report", Priority::High, &["work"], Some(30)),
        ("Review budget", Priority::None, &["finance", "work"], None),
        (
            "Plan trip to Zürich",
            Priority::Medium,
            &["travel"],
            Some(100),
        ),
        ("Milkshake recipe", Priority::None, &[], None),
    ];
    let mut tasks = Vec::new();
    for (i, (title, priority, tags, due)) in specs.into_iter().enumerate() {
        let t = task(owner.id, title, priority, tags, due, i as i64);
        store.insert_task(&t, &[]).await.expect("insert");
        tasks.push(t);
    }
    store
        .insert_task(
            &task(
                other.id,
                "Buy milk elsewhere",
                Priority::Low,
                &["errand"],
                Some(1),
                0,
            ),
            &[],
        )
        .await
        .expect("insert other");
    // Complete "Call mom".
    let done = completed(&tasks[3], start());
    store
        .update_task(owner.id, &done, 1, &[], None)
        .await
        .expect("complete");
    tasks[3] = done;

    let now = start();
    let by_title = |titles: &[&str]| -> Vec<TaskId> {
        titles
            .iter()
            .map(|title| {
                tasks
                    .iter()
                    .find(|t| t.title.as_str() == *title)
                    .map(|t| t.id)
                    .unwrap_or_default()
            })
            .collect()
    };

    // Default: newest first, across pages of 3, no gaps or duplicates, only the owner's tasks.
    let mut query = TaskQuery::new(now);
    query.limit = 3;
    let all = collect(store, owner.id, query.clone()).await;
    let mut expected: Vec<TaskId> = tasks.iter().map(|t| t.id).collect();
    expected.reverse();
    assert_eq!(all, expected, "created_at desc");

    // Due date ascending, nulls last, id tie-break.
    let mut q = query.clone();
    q.sort = SortField::DueAt;
    q.direction = SortDirection::Asc;
    let due_asc = collect(store, owner.id, q.clone()).await;
    assert_eq!(
        due_asc,
        by_title(&[
            "Pay rent",
            "Buy milk",
            "Call mom",
            "Write report",
            "Plan trip to Zürich",
            "buy bread",
            "Review budget",
            "Milkshake recipe"
        ]),
        "due_at asc, nulls last"
    );
    q.direction = SortDirection::Desc;
    let due_desc = collect(store, owner.id, q).await;
    assert_eq!(
        due_desc,
        by_title(&[
            "Plan trip to Zürich",
            "Write report",
            "Call mom",
            "Buy milk",
            "Pay rent",
            "Milkshake recipe",
            "Review budget",
            "buy bread"
        ]),
        "due_at desc, nulls still last"
    );

    // Priority descending, ties by id descending.
    let mut q = query.clone();
    q.sort = SortField::Priority;
    q.direction = SortDirection::Desc;
    assert_eq!(
        collect(store, owner.id, q).await,
        by_title(&[
            "Pay rent",
            "Write report",
            "Plan trip to Zürich",
            "Call mom",
            "buy bread",
            "Buy milk",
            "Milkshake recipe",
            "Review budget"
        ]),
        "priority desc"
    );

    // Title, case-insensitively.
    let mut q = query.clone();
    q.sort = SortField::Title;
    q.direction = SortDirection::Asc;
    assert_eq!(
        collect(store, owner.id, q).await,
        by_title(&[
            "buy bread",
            "Buy milk",
            "Call mom",
            "Milkshake recipe",
            "Pay rent",
            "Plan trip to Zürich",
            "Review budget",
            "Write report"
        ]),
        "title asc"
    );

    // Filters.
    let mut q = query.clone();
    q.status = Some(TaskStatus::Completed);
    assert_eq!(collect(store, owner.id, q).await, by_title(&["Call mom"]));
    let mut q = query.clone();
    q.priorities = vec![Priority::Low, Priority::Urgent];
    assert_eq!(
        collect(store, owner.id, q).await,
        by_title(&["buy bread", "Buy milk", "Pay rent"])
    );
    let tag = |s: &str| Tag::parse(s).unwrap_or_else(|e| panic!("{e}"));
    let mut q = query.clone();
    q.tags = vec![tag("home"), tag("finance")];
    assert_eq!(
        collect(store, owner.id, q.clone()).await,
        by_title(&["Review budget", "buy bread", "Pay rent"])
    );
    q.tag_mode = TagMode::All;
    assert_eq!(collect(store, owner.id, q).await, by_title(&["Pay rent"]));
    let mut q = query.clone();
    q.due_after = Some(now);
    q.due_before = Some(now + TimeDelta::hours(30));
    assert_eq!(
        collect(store, owner.id, q).await,
        by_title(&["Call mom", "Buy milk"])
    );
    let mut q = query.clone();
    q.overdue = Some(true);
    assert_eq!(collect(store, owner.id, q).await, by_title(&["Pay rent"]));
    let mut q = query.clone();
    q.overdue = Some(false);
    assert_eq!(collect(store, owner.id, q).await.len(), 7);

    // Full text: prefix matching over title, description and tags; ranked; scoped to the owner.
    let mut q = query.clone();
    q.search_terms = search_terms("milk");
    q.sort = SortField::Relevance;
    q.direction = SortDirection::Asc;
    let found = collect(store, owner.id, q.clone()).await;
    assert_eq!(
        found.len(),
        2,
        "milk matches Buy milk and Milkshake (prefix)"
    );
    assert!(found.contains(&by_title(&["Buy milk"])[0]));
    q.search_terms = search_terms("zurich");
    assert_eq!(
        collect(store, owner.id, q.clone()).await,
        by_title(&["Plan trip to Zürich"]),
        "diacritics folded"
    );
    q.search_terms = search_terms("fin");
    assert_eq!(
        collect(store, owner.id, q.clone()).await.len(),
        2,
        "tags are searchable"
    );
    q.search_terms = search_terms("buy bre");
    assert_eq!(
        collect(store, owner.id, q.clone()).await,
        by_title(&["buy bread"]),
        "all terms must match"
    );
    // A store may index who owns a task to scope its searches (SQLite does), but that is
    // not text of the task: neither the owner's id nor a prefix of it matches.
    let owner_hex = owner.id.to_string().replace('-', "");
    for owner_term in [
        format!("u{owner_hex}"),
        format!("u{}", &owner_hex[..4]),
        owner_hex,
    ] {
        q.search_terms = search_terms(&owner_term);
        assert_eq!(
            collect(store, owner.id, q.clone()).await,
            Vec::<TaskId>::new(),
            "searching {owner_term}"
        );
    }
    q.search_terms = search_terms("\"OR\" NEAR(");
    let _ = collect(store, owner.id, q).await;

    // Tag counts.
    let counts = store.tag_counts(owner.id).await.expect("tags");
    let home = counts
        .iter()
        .find(|c| c.tag == "home")
        .expect("home counted");
    assert_eq!((home.tasks, home.pending), (2, 2));
    assert_eq!(counts.iter().map(|c| c.tasks).sum::<i64>(), 9);
    assert_eq!(counts[0].tasks, 2);

    // Pagination stays consistent while rows are inserted between pages.
    let mut q = query.clone();
    q.sort = SortField::CreatedAt;
    q.direction = SortDirection::Asc;
    q.limit = 2;
    let first = store.list_tasks(owner.id, &q).await.expect("page 1");
    let extra = task(
        owner.id,
        "Inserted meanwhile",
        Priority::None,
        &[],
        None,
        1000,
    );
    store.insert_task(&extra, &[]).await.expect("insert");
    q.after = first.next_cursor.clone();
    let rest = collect(store, owner.id, q).await;
    let mut seen: Vec<TaskId> = first.items.iter().map(|t| t.id).collect();
    seen.extend(rest);
    let mut expected: Vec<TaskId> = tasks.iter().map(|t| t.id).collect();
    expected.push(extra.id);
    assert_eq!(seen, expected, "no gaps or duplicates across inserts");
}

async fn series(store: &dyn Store) {
    let owner = user("series@example.com");
    let other = user("series2@example.com");
    store.create_user(&owner, "h").await.expect("user");
    store.create_user(&other, "h").await.expect("user");
    let mut first = task(
        owner.id,
        "Water plants",
        Priority::Low,
        &["home"],
        Some(1),
        0,
    );
    first = Task::create(
        owner.id,
        TimeZone::parse("Europe/Berlin").expect("zone"),
        NewTask {
            title: first.title.clone(),
            description: first.description.clone(),
            priority: first.priority,
            tags: first.tags.clone(),
            due_at: first.due_at,
            time_zone: None,
            recurrence: Some(RecurrenceSpec {
                rule: RecurrenceRule::parse("FREQ=WEEKLY;BYDAY=MO,TH").expect("rule"),
                anchor: Anchor::Due,
            }),
            reminders: taskflow_domain::ReminderPlan::default(),
        },
        start(),
    )
    .expect("recurring task");
    store.insert_task(&first, &[]).await.expect("insert");
    assert_eq!(
        store.task(owner.id, first.id).await.expect("get"),
        Some(first.clone()),
        "recurrence round-trips"
    );

    let change = first
        .completed(start())
        .expect("completes")
        .expect("changes");
    let next = change.next_occurrence.clone().expect("next occurrence");
    assert!(
        store
            .update_task(
                owner.id,
                &change.task,
                first.version,
                &[],
                Some((&next, &[]))
            )
            .await
            .expect("complete")
    );
    assert_eq!(
        store.task(owner.id, next.id).await.expect("get"),
        Some(next.clone())
    );

    // Reopen, complete again: the (series, index) already exists, so nothing new is created.
    let reopened = change
        .task
        .reopened(start())
        .expect("reopens")
        .expect("changes")
        .task;
    assert!(
        !store
            .update_task(owner.id, &reopened, change.task.version, &[], None)
            .await
            .expect("reopen")
    );
    let again = reopened
        .completed(start())
        .expect("completes")
        .expect("changes");
    let duplicate = again.next_occurrence.clone().expect("would-be next");
    assert_ne!(duplicate.id, next.id);
    assert!(
        !store
            .update_task(
                owner.id,
                &again.task,
                reopened.version,
                &[],
                Some((&duplicate, &[]))
            )
            .await
            .expect("complete again")
    );
    assert_eq!(
        store.task(owner.id, duplicate.id).await.expect("get"),
        None,
        "no second next occurrence"
    );

    let occurrences = store
        .series_occurrences(owner.id, first.series_id.expect("series"))
        .await
        .expect("series");
    assert_eq!(
        occurrences
            .iter()
            .map(|t| t.occurrence_index)
            .collect::<Vec<_>>(),
        vec![0, 1]
    );
    assert!(
        store
            .series_occurrences(other.id, first.series_id.expect("series"))
            .await
            .expect("series")
            .is_empty()
    );

    let mut q = TaskQuery::new(start());
    q.recurring = Some(true);
    assert_eq!(collect(store, owner.id, q.clone()).await.len(), 2);
    q.recurring = Some(false);
    assert!(collect(store, owner.id, q.clone()).await.is_empty());
    q.recurring = None;
    q.series_id = first.series_id;
    assert_eq!(collect(store, owner.id, q).await.len(), 2);
}

async fn outbox(store: &dyn Store) {
    let owner = user("outbox@example.com");
    store.create_user(&owner, "h").await.expect("user");
    // Earlier steps wrote no events.
    assert!(
        store
            .unpublished_events(10)
            .await
            .expect("unpublished")
            .is_empty()
    );
    let mut commits = store.outbox_commits();
    let t = task(owner.id, "Evented", Priority::None, &[], Some(1), 0);
    let created = task_events(
        TaskEventKind::Created,
        &t,
        start(),
        Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
    );
    store
        .insert_task(&t, &created)
        .await
        .expect("insert with events");
    assert!(
        commits.has_changed().expect("watch open"),
        "a commit with events is announced"
    );
    let done = completed(&t, start());
    let completed_events = task_events(TaskEventKind::Completed, &done, start(), None);
    store
        .update_task(owner.id, &done, t.version, &completed_events, None)
        .await
        .expect("update");
    let deleted = |task: &Task| task_events(TaskEventKind::Deleted, task, start(), None).to_vec();
    store
        .delete_task(owner.id, t.id, None, std::sync::Arc::new(deleted))
        .await
        .expect("delete");

    // Failed writes leave no events behind.
    let stale = task_events(TaskEventKind::Updated, &done, start(), None);
    assert!(
        store
            .update_task(owner.id, &done, 99, &stale, None)
            .await
            .is_err()
    );

    let rows = store.unpublished_events(100).await.expect("unpublished");
    let types: Vec<&str> = rows.iter().map(|r| r.event_type.as_str()).collect();
    assert_eq!(
        types,
        vec![
            "taskflow.task.created.v1",
            "taskflow.task.changed.v1",
            "taskflow.task.completed.v1",
            "taskflow.task.changed.v1",
            "taskflow.task.deleted.v1",
            "taskflow.task.changed.v1",
        ],
        "commit order"
    );
    assert!(rows.windows(2).all(|w| w[0].seq < w[1].seq));
    assert_eq!(rows[0].topic, Topic::TaskEvents.name());
    assert_eq!(rows[1].topic, Topic::TaskUpdates.name());
    assert_eq!(rows[0].partition_key, owner.id.to_string());
    assert_eq!(rows[0].event_id, created[0].event.id);
    let payload: serde_json::Value = serde_json::from_str(&rows[0].payload).expect("json");
    assert_eq!(
        payload["traceparent"],
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    );
    assert_eq!(payload["data"]["task_data"]["title"], "Evented");
    assert_eq!(*commits.borrow_and_update(), rows[5].seq);

    let backlog = store.outbox_backlog().await.expect("backlog");
    assert_eq!(backlog.unpublished, 6);
    assert_eq!(backlog.oldest_unpublished_at, Some(start()));

    // The in-process bus reads a topic after an offset.
    let updates = store
        .events_after(Topic::TaskUpdates.name(), 0, 10)
        .await
        .expect("after");
    assert_eq!(updates.len(), 3);
    let rest = store
        .events_after(Topic::TaskUpdates.name(), updates[0].seq, 10)
        .await
        .expect("after");
    assert_eq!(rest.len(), 2);
    assert_eq!(
        store
            .consumer_offset("realtime", Topic::TaskUpdates.name())
            .await
            .expect("offset"),
        0
    );
    store
        .commit_consumer_offset("realtime", Topic::TaskUpdates.name(), updates[1].seq)
        .await
        .expect("commit");
    store
        .commit_consumer_offset("realtime", Topic::TaskUpdates.name(), updates[0].seq)
        .await
        .expect("commit");
    assert_eq!(
        store
            .consumer_offset("realtime", Topic::TaskUpdates.name())
            .await
            .expect("offset"),
        updates[1].seq,
        "offsets never go back"
    );

    // Publishing and pruning.
    let seqs: Vec<i64> = rows.iter().map(|r| r.seq).collect();
    store.mark_published(&seqs, start()).await.expect("mark");
    assert!(
        store
            .unpublished_events(100)
            .await
            .expect("unpublished")
            .is_empty()
    );
    let pruned = store
        .prune_events(start() + TimeDelta::seconds(1))
        .await
        .expect("prune");
    // The unread task-updates row (beyond the realtime group's offset) is kept.
    assert_eq!(pruned, 5);
    assert_eq!(
        store
            .events_after(Topic::TaskUpdates.name(), 0, 10)
            .await
            .expect("after")
            .len(),
        1
    );
}

/// Reads every page of `user`'s audit log (of `task`, if given), newest first or oldest first,
/// `limit` entries a page, and returns the event ids in the order read.
async fn all_audit_pages(
    store: &dyn Store,
    user: UserId,
    task: Option<TaskId>,
    newest_first: bool,
    limit: u32,
) -> Vec<String> {
    let mut ids = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .audit_entries(
                user,
                crate::AuditQuery {
                    task,
                    after,
                    newest_first,
                    limit,
                },
            )
            .await
            .expect("audit page");
        assert!(
            page.entries.len() <= limit as usize,
            "a page holds at most `limit`"
        );
        assert!(
            page.entries.iter().all(|e| e.user_id == user),
            "only the caller's entries"
        );
        ids.extend(page.entries.into_iter().map(|e| e.event_id));
        match page.next {
            Some(next) => after = Some(next),
            None => return ids,
        }
    }
}

/// Audit pages: cursors continue where the last page ended, in log order or newest first, for
/// the whole log or one task, and never reach another user's entries.
async fn audit_pages(store: &dyn Store, owner: &User, other: &User, first: &Task) {
    let second = task(owner.id, "Audited too", Priority::None, &[], None, 0);
    let theirs = task(other.id, "Not yours", Priority::None, &[], None, 0);
    let mut written = vec!["e1".to_owned(), "e2".to_owned()];
    for n in 0..7 {
        // Alternate the owner's two tasks, with another user's entries in between.
        let (owner_task, event_id) = if n % 2 == 0 {
            (second.id, format!("p{n}"))
        } else {
            (first.id, format!("p{n}"))
        };
        for (user, task_id, id) in [
            (owner.id, owner_task, event_id.clone()),
            (other.id, theirs.id, format!("x{n}")),
        ] {
            let entry = crate::AuditEntry {
                event_id: id.clone(),
                user_id: user,
                task_id,
                event_type: "taskflow.task.updated.v1".into(),
                occurred_at: start(),
                data: serde_json::json!({"n": n}),
            };
            store
                .apply_once("audit", &id, &crate::ConsumerEffect::Audit(entry), start())
                .await
                .expect("apply");
        }
        written.push(event_id);
    }
    let newest_first: Vec<String> = written.iter().rev().cloned().collect();
    for limit in [1, 2, 3, 9, 10] {
        assert_eq!(
            all_audit_pages(store, owner.id, None, false, limit).await,
            written,
            "oldest first, {limit} a page"
        );
        assert_eq!(
            all_audit_pages(store, owner.id, None, true, limit).await,
            newest_first,
            "newest first, {limit} a page"
        );
    }
    let of_first: Vec<String> = ["e1", "e2", "p1", "p3", "p5"].map(String::from).to_vec();
    assert_eq!(
        all_audit_pages(store, owner.id, Some(first.id), false, 2).await,
        of_first
    );
    let mut reversed = of_first.clone();
    reversed.reverse();
    assert_eq!(
        all_audit_pages(store, owner.id, Some(first.id), true, 2).await,
        reversed
    );
    // A full last page says so only when more follow.
    let exact = store
        .audit_entries(
            owner.id,
            crate::AuditQuery {
                task: Some(first.id),
                after: None,
                newest_first: false,
                limit: 5,
            },
        )
        .await
        .expect("audit");
    assert_eq!(exact.entries.len(), 5);
    assert_eq!(exact.next, None);
    // Another user's task, or a cursor taken from another user's log, shows nothing of theirs.
    let mine = store
        .audit_entries(
            owner.id,
            crate::AuditQuery {
                task: Some(theirs.id),
                after: None,
                newest_first: false,
                limit: 10,
            },
        )
        .await
        .expect("audit");
    assert!(mine.entries.is_empty());
    let their_page = store
        .audit_entries(
            other.id,
            crate::AuditQuery {
                task: None,
                after: None,
                newest_first: false,
                limit: 2,
            },
        )
        .await
        .expect("audit");
    let continued = store
        .audit_entries(
            owner.id,
            crate::AuditQuery {
                task: None,
                after: their_page.next,
                newest_first: false,
                limit: 100,
            },
        )
        .await
        .expect("audit");
    assert!(continued.entries.iter().all(|e| e.user_id == owner.id));
}

async fn consumers(store: &dyn Store) {
    let owner = user("audit@example.com");
    let other = user("audit2@example.com");
    store.create_user(&owner, "h").await.expect("user");
    store.create_user(&other, "h").await.expect("user");
    let t = task(owner.id, "Audited", Priority::None, &[], None, 0);
    let entry = |event_id: &str| crate::AuditEntry {
        event_id: event_id.to_owned(),
        user_id: owner.id,
        task_id: t.id,
        event_type: "taskflow.task.created.v1".into(),
        occurred_at: start(),
        data: serde_json::json!({"title": "Audited"}),
    };
    let effect = crate::ConsumerEffect::Audit(entry("e1"));
    assert!(
        store
            .apply_once("audit", "e1", &effect, start())
            .await
            .expect("apply")
    );
    assert!(
        !store
            .apply_once("audit", "e1", &effect, start())
            .await
            .expect("apply"),
        "second delivery has no effect"
    );
    assert!(
        store
            .apply_once(
                "other-group",
                "e1",
                &crate::ConsumerEffect::Nothing,
                start()
            )
            .await
            .expect("apply")
    );
    store
        .apply_once(
            "audit",
            "e2",
            &crate::ConsumerEffect::Audit(entry("e2")),
            start(),
        )
        .await
        .expect("apply");
    let audit = |task: Option<TaskId>| crate::AuditQuery {
        task,
        after: None,
        newest_first: false,
        limit: 10,
    };
    let page = store
        .audit_entries(owner.id, audit(Some(t.id)))
        .await
        .expect("audit");
    assert_eq!(
        page.entries
            .iter()
            .map(|e| e.event_id.as_str())
            .collect::<Vec<_>>(),
        vec!["e1", "e2"]
    );
    assert_eq!(page.entries[0], entry("e1"));
    assert_eq!(page.next, None, "everything fit on one page");
    assert!(
        store
            .audit_entries(other.id, audit(Some(t.id)))
            .await
            .expect("audit")
            .entries
            .is_empty()
    );
    assert!(
        store
            .audit_entries(owner.id, audit(Some(TaskId::new())))
            .await
            .expect("audit")
            .entries
            .is_empty()
    );
    assert_eq!(
        store
            .audit_entries(owner.id, audit(None))
            .await
            .expect("audit")
            .entries
            .len(),
        2
    );
    audit_pages(store, &owner, &other, &t).await;

    // Dead letters: recorded with a notice on the .dlq topic, listed, replayed through the outbox.
    let events = task_events(TaskEventKind::Created, &t, start(), None);
    let letter = crate::DeadLetter {
        id: uuid::Uuid::now_v7(),
        consumer: "audit".into(),
        topic: Topic::TaskEvents.name().into(),
        event_id: events[0].event.id.clone(),
        event_type: events[0].event.event_type.clone(),
        payload: serde_json::to_string(&events[0].event).expect("json"),
        error: "boom".into(),
        attempts: 3,
        created_at: start(),
        replayed_at: None,
    };
    let notice = OutgoingEvent {
        topic: taskflow_domain::events::dead_letter_topic(Topic::TaskEvents.name()),
        event: events[0].event.clone(),
    };
    let before = store
        .unpublished_events(1000)
        .await
        .expect("unpublished")
        .len();
    store
        .record_dead_letter(&letter, &notice)
        .await
        .expect("dead letter");
    let pending = store.unpublished_events(1000).await.expect("unpublished");
    assert_eq!(pending.len(), before + 1);
    assert_eq!(
        pending.last().map(|r| r.topic.as_str()),
        Some("task-events.dlq")
    );
    assert_eq!(
        store.dead_letters(10).await.expect("list"),
        vec![letter.clone()]
    );
    let replayed = store
        .replay_dead_letter(letter.id, start())
        .await
        .expect("replay");
    assert_eq!(replayed.replayed_at, Some(start()));
    let pending = store.unpublished_events(1000).await.expect("unpublished");
    let last = pending.last().expect("replayed row");
    assert_eq!(
        (last.topic.as_str(), last.event_id.as_str()),
        ("task-events", letter.event_id.as_str())
    );
    assert_eq!(last.payload, letter.payload);
    assert!(matches!(
        store
            .replay_dead_letter(uuid::Uuid::now_v7(), start())
            .await,
        Err(StoreError::NotFound)
    ));
}
