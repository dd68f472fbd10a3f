//! Events over the real app: every produced event validates against its JSON Schema, the audit
//! consumer records each task change once, the audit log pages in either order, and dead letters
//! are listed and replayed by admins.

use std::collections::HashMap;
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use taskflow_domain::events::{CloudEvent, OutgoingEvent, Topic};
use taskflow_testing::{TestApp, TestUser};

use crate::support::{error_fields, expect_problem};

/// A validator per event type, from `docs/events/`.
pub fn schemas() -> HashMap<String, jsonschema::Validator> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/events");
    let mut validators = HashMap::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let Some(event_type) = name.strip_suffix(".schema.json") else {
            continue;
        };
        let schema: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let validator = jsonschema::options()
            .should_validate_formats(true)
            .build(&schema)
            .unwrap();
        validators.insert(event_type.to_owned(), validator);
    }
    assert!(validators.len() >= 13, "schemas found in {}", dir.display());
    validators
}

/// Every event in the outbox, with its topic.
pub async fn all_events(app: &TestApp) -> Vec<(String, Value)> {
    let mut events = Vec::new();
    for topic in Topic::ALL {
        for row in app
            .store
            .events_after(topic.name(), 0, 10_000)
            .await
            .unwrap()
        {
            events.push((
                row.topic.clone(),
                serde_json::from_str::<Value>(&row.payload).unwrap(),
            ));
        }
    }
    events
}

async fn send(
    app: &TestApp,
    user: &TestUser,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> Value {
    let mut request = app.authed(method, path, user);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    assert!(
        response.status().is_success(),
        "{path}: {}",
        response.status()
    );
    response.json().await.unwrap_or(Value::Null)
}

/// How many items a GET of `path` lists.
async fn item_count(app: &TestApp, user: &TestUser, path: &str) -> usize {
    send(app, user, Method::GET, path, None).await["items"]
        .as_array()
        .unwrap()
        .len()
}

async fn eventually<F: AsyncFn() -> bool>(what: &str, check: F) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The id of the third occurrence of `series` (the one skipping the second created).
async fn series_after_skip(app: &TestApp, user: &TestUser, series: &str) -> String {
    let series = send(
        app,
        user,
        Method::GET,
        &format!("/api/v1/series/{series}"),
        None,
    )
    .await;
    let third = series["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["occurrence_index"] == 2)
        .expect("a third occurrence");
    third["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn every_produced_event_matches_its_schema_and_each_change_has_one_event_per_topic() {
    let app = TestApp::spawn().await;
    let user = app.register_user().await;
    let validators = schemas();
    let task = app
        .create_task(
            &user,
            json!({"title": "Evented", "due_at": "2027-01-04T09:00:00Z", "tags": ["a"],
            "recurrence": {"rule": "daily"}, "reminders": [{"before_due": "PT1H"}]}),
        )
        .await;
    let id = task["id"].as_str().unwrap();
    let traced = app
        .authed(Method::PATCH, &format!("/api/v1/tasks/{id}"), &user)
        .header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .json(&json!({"priority": "high"}))
        .send()
        .await
        .unwrap();
    assert_eq!(traced.status(), 200);
    send(
        &app,
        &user,
        Method::POST,
        &format!("/api/v1/tasks/{id}/complete"),
        None,
    )
    .await;
    send(
        &app,
        &user,
        Method::POST,
        &format!("/api/v1/tasks/{id}/reopen"),
        None,
    )
    .await;
    let series = send(
        &app,
        &user,
        Method::GET,
        &format!("/api/v1/series/{}", task["series_id"].as_str().unwrap()),
        None,
    )
    .await;
    let next = series["items"][1]["id"].as_str().unwrap().to_owned();
    send(
        &app,
        &user,
        Method::POST,
        &format!("/api/v1/tasks/{next}/skip"),
        None,
    )
    .await;
    let response = app
        .authed(Method::DELETE, &format!("/api/v1/tasks/{id}"), &user)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);

    let events = all_events(&app).await;
    for (topic, event) in &events {
        let event_type = event["type"].as_str().unwrap();
        let validator = validators
            .get(event_type)
            .unwrap_or_else(|| panic!("no schema for {event_type}"));
        let errors: Vec<String> = validator
            .iter_errors(event)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        assert!(
            errors.is_empty(),
            "{event_type} on {topic} breaks its schema: {errors:?}\n{event:#}"
        );
        assert_eq!(event["partitionkey"], user.id.as_str());
    }
    let task_events: Vec<&str> = events
        .iter()
        .filter(|(topic, _)| topic == "task-events")
        .map(|(_, e)| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        task_events,
        vec![
            "taskflow.task.created.v1",   // create
            "taskflow.task.updated.v1",   // patch
            "taskflow.task.completed.v1", // complete …
            "taskflow.task.created.v1",   // … and its next occurrence, same transaction
            "taskflow.task.reopened.v1",
            "taskflow.task.skipped.v1", // skip the next occurrence …
            "taskflow.task.created.v1", // … which creates the one after
            "taskflow.task.deleted.v1",
        ]
    );
    // Each change to the reminders is an event on `reminders`, in the task's transaction.
    let reminder_events: Vec<(String, &str, Value)> = events
        .iter()
        .filter(|(topic, _)| topic == "reminders")
        .map(|(_, e)| {
            (
                e["data"]["task_id"].as_str().unwrap().to_owned(),
                e["type"].as_str().unwrap(),
                e["data"]["reason"].clone(),
            )
        })
        .collect();
    let first = id.to_owned();
    let after_next = series_after_skip(&app, &user, task["series_id"].as_str().unwrap()).await;
    let scheduled = "taskflow.reminder.scheduled.v1";
    let cancelled = "taskflow.reminder.cancelled.v1";
    assert_eq!(
        reminder_events,
        vec![
            (first.clone(), scheduled, Value::Null),          // create
            (first.clone(), cancelled, json!("task_closed")), // complete …
            (next.clone(), scheduled, Value::Null),           // … the next occurrence's
            (first.clone(), scheduled, Value::Null),          // reopen
            (next.clone(), cancelled, json!("task_closed")),  // skip …
            (after_next, scheduled, Value::Null),             // … the one after
            (first, cancelled, json!("task_deleted")),        // delete
        ]
    );
    let updates = events
        .iter()
        .filter(|(topic, _)| topic == "task-updates")
        .count();
    assert_eq!(
        updates,
        task_events.len(),
        "one slim task.changed per task event"
    );
    let traced: Vec<&Value> = events
        .iter()
        .map(|(_, e)| e)
        .filter(|e| e["traceparent"] == "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
        .collect();
    assert_eq!(
        traced.len(),
        2,
        "the request's trace context is carried by its events"
    );
    let deleted = events
        .iter()
        .find(|(_, e)| e["type"] == "taskflow.task.changed.v1" && e["data"]["change"] == "deleted");
    assert!(deleted.is_some_and(|(_, e)| e["data"]["task"].is_null()));
}

#[tokio::test]
async fn the_audit_log_records_each_change_once_for_its_owner_only() {
    let app = TestApp::spawn().await;
    let user = app.register_user().await;
    let other = app.register_user().await;
    let task = app.create_task(&user, json!({"title": "Audited"})).await;
    let id = task["id"].as_str().unwrap();
    send(
        &app,
        &user,
        Method::PATCH,
        &format!("/api/v1/tasks/{id}"),
        Some(json!({"title": "Audited twice"})),
    )
    .await;
    send(
        &app,
        &user,
        Method::POST,
        &format!("/api/v1/tasks/{id}/complete"),
        None,
    )
    .await;
    app.create_task(&user, json!({"title": "Another"})).await;

    let path = format!("/api/v1/audit?task_id={id}");
    eventually("three audit entries", async || {
        item_count(&app, &user, &path).await == 3
    })
    .await;
    let audit = send(&app, &user, Method::GET, &path, None).await;
    let types: Vec<&str> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event_type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        vec![
            "taskflow.task.created.v1",
            "taskflow.task.updated.v1",
            "taskflow.task.completed.v1"
        ]
    );
    assert_eq!(
        audit["items"][1]["data"]["task_data"]["title"],
        "Audited twice"
    );
    // Redelivering every event has no second effect.
    let rows = app
        .store
        .events_after("task-events", 0, 1000)
        .await
        .unwrap();
    let events: Vec<OutgoingEvent> = rows
        .iter()
        .map(|r| OutgoingEvent {
            topic: r.topic.clone(),
            event: serde_json::from_str::<CloudEvent>(&r.payload).unwrap(),
        })
        .collect();
    app.store.enqueue_events(&events).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let all = send(&app, &user, Method::GET, "/api/v1/audit", None).await;
    assert_eq!(
        all["items"].as_array().unwrap().len(),
        4,
        "no duplicates after redelivery"
    );
    // Another user sees nothing of it.
    let theirs = send(&app, &other, Method::GET, &path, None).await;
    assert!(theirs["items"].as_array().unwrap().is_empty());
    for bad in ["task_id=nope", "limit=0", "limit=1001", "whatever=1"] {
        let response = app
            .authed(Method::GET, &format!("/api/v1/audit?{bad}"), &user)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{bad}");
    }
}

/// Every page of the caller's audit log through `next_cursor`, as event ids.
async fn audit_pages(app: &TestApp, user: &TestUser, query: &str) -> Vec<String> {
    let mut ids = Vec::new();
    let mut path = format!("/api/v1/audit?{query}");
    loop {
        let page = send(app, user, Method::GET, &path, None).await;
        ids.extend(
            page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["event_id"].as_str().unwrap().to_owned()),
        );
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("/api/v1/audit?{query}&cursor={cursor}"),
            None => return ids,
        }
    }
}

#[tokio::test]
async fn the_audit_log_pages_through_every_entry_in_either_order() {
    let app = TestApp::spawn().await;
    let user = app.register_user().await;
    let other = app.register_user().await;
    let first = app.create_task(&user, json!({"title": "One"})).await;
    let first = first["id"].as_str().unwrap().to_owned();
    app.create_task(&other, json!({"title": "Theirs"})).await;
    app.create_task(&user, json!({"title": "Two"})).await;
    for n in 0..3 {
        send(
            &app,
            &user,
            Method::PATCH,
            &format!("/api/v1/tasks/{first}"),
            Some(json!({"title": format!("One, edit {n}")})),
        )
        .await;
    }
    eventually("five audit entries", async || {
        item_count(&app, &user, "/api/v1/audit").await == 5
    })
    .await;
    let all = send(&app, &user, Method::GET, "/api/v1/audit", None).await;
    assert!(all["next_cursor"].is_null(), "one page holds all five");
    let oldest_first: Vec<String> = all["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event_id"].as_str().unwrap().to_owned())
        .collect();
    let newest_first: Vec<String> = oldest_first.iter().rev().cloned().collect();
    for limit in [1, 2, 4, 5] {
        assert_eq!(
            audit_pages(&app, &user, &format!("limit={limit}")).await,
            oldest_first,
            "{limit} a page"
        );
        assert_eq!(
            audit_pages(&app, &user, &format!("limit={limit}&order=newest")).await,
            newest_first,
            "{limit} a page, newest first"
        );
    }
    let of_first = audit_pages(
        &app,
        &user,
        &format!("task_id={first}&limit=2&order=newest"),
    )
    .await;
    assert_eq!(of_first.len(), 4, "created and three edits");
    let newest = send(
        &app,
        &user,
        Method::GET,
        &format!("/api/v1/audit?task_id={first}&order=newest&limit=1"),
        None,
    )
    .await;
    assert_eq!(
        newest["items"][0]["data"]["task_data"]["title"],
        "One, edit 2"
    );
    // The other user's log holds their one entry, and the caller's cursor is only a position in
    // the log: it reads the other user's own entries after it, never the caller's.
    let their_entries = audit_pages(&app, &other, "limit=1").await;
    assert_eq!(their_entries.len(), 1);
    let mine = send(&app, &user, Method::GET, "/api/v1/audit?limit=1", None).await;
    let cursor = mine["next_cursor"].as_str().unwrap().to_owned();
    let theirs = send(
        &app,
        &other,
        Method::GET,
        &format!("/api/v1/audit?cursor={cursor}"),
        None,
    )
    .await;
    for entry in theirs["items"].as_array().unwrap() {
        assert!(their_entries.contains(&entry["event_id"].as_str().unwrap().to_owned()));
    }

    // Bad cursors and orders are refused by field; a cursor only continues its own order.
    for (query, field, code) in [
        (
            format!("cursor={cursor}&order=newest"),
            "cursor",
            "invalid_cursor",
        ),
        ("cursor=o0".to_owned(), "cursor", "invalid_cursor"),
        ("cursor=o-4".to_owned(), "cursor", "invalid_cursor"),
        ("cursor=o%2B4".to_owned(), "cursor", "invalid_cursor"),
        (
            "cursor=o99999999999999999999".to_owned(),
            "cursor",
            "invalid_cursor",
        ),
        ("cursor=".to_owned(), "cursor", "invalid_cursor"),
        (
            "cursor=n3&cursor=n4&order=newest".to_owned(),
            "cursor",
            "repeated",
        ),
        ("order=latest".to_owned(), "order", "invalid"),
    ] {
        let problem = expect_problem(
            app.authed(Method::GET, &format!("/api/v1/audit?{query}"), &user)
                .send()
                .await
                .unwrap(),
            400,
            "invalid_query_parameter",
        )
        .await;
        assert_eq!(error_fields(&problem), [field], "{query}");
        assert_eq!(problem["errors"][0]["code"], code, "{query}");
    }
}

#[tokio::test]
async fn poison_events_are_dead_lettered_and_admins_can_replay_them() {
    let app = TestApp::spawn().await;
    let admin = app.register("admin@example.com").await;
    let me = send(&app, &admin, Method::GET, "/api/v1/me", None).await;
    assert_eq!(me["is_admin"], false, "registering never makes an admin");
    app.store
        .set_admin(
            &taskflow_domain::Email::parse("admin@example.com").unwrap(),
            true,
        )
        .await
        .unwrap();
    let user = app.register_user().await;
    let me = send(&app, &admin, Method::GET, "/api/v1/me", None).await;
    assert_eq!(me["is_admin"], true);

    // A task event without a task id can never be audited.
    let poison = CloudEvent::new(
        "task.created",
        None,
        user.id.parse().unwrap(),
        chrono::Utc::now(),
        None,
        json!({"event_type": "created"}),
    );
    app.store
        .enqueue_events(&[OutgoingEvent::new(Topic::TaskEvents, poison.clone())])
        .await
        .unwrap();
    eventually("the dead letter", async || {
        item_count(&app, &admin, "/api/v1/admin/dlq").await == 1
    })
    .await;
    let list = send(&app, &admin, Method::GET, "/api/v1/admin/dlq", None).await;
    let letter = &list["items"][0];
    assert_eq!(letter["event_id"], poison.id.as_str());
    assert_eq!(letter["consumer"], "audit");
    assert_eq!(letter["topic"], "task-events");
    assert_eq!(letter["attempts"], 3);
    assert!(
        letter["error"].as_str().unwrap().contains("user_id"),
        "{letter}"
    );
    // The notice went to task-events.dlq.
    let notices = app
        .store
        .events_after("task-events.dlq", 0, 10)
        .await
        .unwrap();
    assert_eq!(notices.len(), 1);

    for path in ["/api/v1/admin/dlq"] {
        let response = app.authed(Method::GET, path, &user).send().await.unwrap();
        assert_eq!(response.status(), 403);
        let problem: Value = response.json().await.unwrap();
        assert_eq!(problem["code"], "forbidden");
    }
    let replay = format!(
        "/api/v1/admin/dlq/{}/replay",
        letter["id"].as_str().unwrap()
    );
    let response = app
        .authed(Method::POST, &replay, &user)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    let replayed = send(&app, &admin, Method::POST, &replay, None).await;
    assert!(replayed["replayed_at"].is_string());
    // Still poison: it comes back as a second dead letter.
    eventually("the replayed event to fail again", async || {
        item_count(&app, &admin, "/api/v1/admin/dlq").await == 2
    })
    .await;
    let missing = app
        .authed(
            Method::POST,
            &format!("/api/v1/admin/dlq/{}/replay", uuid::Uuid::now_v7()),
            &admin,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    let malformed = app
        .authed(Method::POST, "/api/v1/admin/dlq/nope/replay", &admin)
        .send()
        .await
        .unwrap();
    assert_eq!(malformed.status(), 400);
}
