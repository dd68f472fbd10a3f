//! Task CRUD, complete/reopen, ETags and `If-Match` preconditions.

// Helpers outside `#[test]` functions unwrap too: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use chrono::{DateTime, TimeDelta, Utc};
use reqwest::{Method, RequestBuilder, Response};
use serde_json::{Value, json};
use taskflow_domain::{TaskId, UserId};
use taskflow_testing::{TestApp, TestUser};

use crate::support::{error_code, error_fields, expect_json, expect_problem, get_task, header};

fn task_path(task: &Value) -> String {
    format!("/api/v1/tasks/{}", task["id"].as_str().unwrap())
}

fn instant(value: &Value) -> DateTime<Utc> {
    value.as_str().unwrap().parse().unwrap()
}

async fn send(request: RequestBuilder) -> Response {
    request.send().await.unwrap()
}

async fn patch(app: &TestApp, user: &TestUser, task: &Value, body: Value) -> Response {
    send(
        app.authed(Method::PATCH, &task_path(task), user)
            .json(&body),
    )
    .await
}

async fn action(app: &TestApp, user: &TestUser, task: &Value, verb: &str) -> Response {
    send(app.authed(Method::POST, &format!("{}/{verb}", task_path(task)), user)).await
}

/// Registers a user whose default zone is `zone`.
async fn register_in_zone(app: &TestApp, email: &str, zone: &str) -> TestUser {
    let response = app
        .client
        .post(app.url("/api/v1/auth/register"))
        .json(&json!({ "email": email, "password": "correct horse battery", "time_zone": zone }))
        .send()
        .await
        .unwrap();
    let body = expect_json(response, 201).await;
    TestUser {
        id: body["user"]["id"].as_str().unwrap().to_owned(),
        email: email.to_owned(),
        password: "correct horse battery".into(),
        token: body["access_token"].as_str().unwrap().to_owned(),
    }
}

#[tokio::test]
async fn creating_a_task_normalises_every_field() {
    let app = TestApp::spawn().await;
    let user = register_in_zone(&app, "ny@example.com", "America/New_York").await;
    let before = Utc::now() - TimeDelta::seconds(1);
    let response = send(
        app.authed(Method::POST, "/api/v1/tasks", &user)
            .json(&json!({
                "title": "  Write the quarterly report \t",
                "description": "Line one\nLine two\twith a tab",
                "priority": "high",
                "tags": ["Work", "#work", " Home ", "URGENT", "home"],
                "due_at": "2030-06-01T10:00:00.123456789+02:00",
            })),
    )
    .await;
    let location = header(&response, "location");
    let etag = header(&response, "etag");
    let task = expect_json(response, 201).await;
    assert_eq!(location, Some(task_path(&task)));
    assert_eq!(etag.as_deref(), Some("\"1\""));
    assert_eq!(task["title"], "Write the quarterly report");
    assert_eq!(task["description"], "Line one\nLine two\twith a tab");
    assert_eq!(task["priority"], "high");
    assert_eq!(task["tags"], json!(["work", "home", "urgent"]));
    assert_eq!(
        task["due_at"], "2030-06-01T08:00:00.123456Z",
        "UTC, microseconds"
    );
    assert_eq!(task["time_zone"], "America/New_York", "the account's zone");
    assert_eq!(task["status"], "pending");
    assert_eq!(task["completed_at"], Value::Null);
    assert_eq!(task["version"], 1);
    assert_eq!(task["overdue"], false);
    assert_eq!(task["created_at"], task["updated_at"]);
    assert!(instant(&task["created_at"]) >= before);

    // What was stored is what was answered.
    assert_eq!(
        get_task(&app, &user, task["id"].as_str().unwrap()).await,
        task
    );
    let stored = app
        .store
        .task(
            user.id.parse::<UserId>().unwrap(),
            task["id"].as_str().unwrap().parse::<TaskId>().unwrap(),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.title.as_str(), "Write the quarterly report");
    assert_eq!(stored.tags.to_strings(), ["work", "home", "urgent"]);
    assert_eq!(stored.version, 1);

    // An explicit zone wins over the account's.
    let tokyo = app
        .create_task(&user, json!({ "title": "t", "time_zone": "Asia/Tokyo" }))
        .await;
    assert_eq!(tokyo["time_zone"], "Asia/Tokyo");
}

#[tokio::test]
async fn a_minimal_task_gets_the_defaults() {
    let app = TestApp::spawn().await;
    let user = app.register_user().await;
    let task = app
        .create_task(&user, json!({ "title": "just a title" }))
        .await;
    assert_eq!(task["description"], "");
    assert_eq!(task["priority"], "none");
    assert_eq!(task["tags"], json!([]));
    assert_eq!(task["due_at"], Value::Null);
    assert_eq!(task["time_zone"], "UTC");
    for key in [
        "completed_at",
        "created_at",
        "description",
        "due_at",
        "id",
        "overdue",
        "priority",
        "status",
        "tags",
        "time_zone",
        "title",
        "updated_at",
        "version",
    ] {
        assert!(task.get(key).is_some(), "{key} missing from {task}");
    }
}

#[tokio::test]
async fn create_rejects_each_bad_field_by_name() {
    let app = TestApp::spawn().await;
    let user = app.register_user().await;
    let many_tags: Vec<String> = (0..31).map(|i| format!("t{i}")).collect();
    let cases = [
        (json!({ "title": "   " }), "title", "empty"),
        (json!({ "title": "x".repeat(501) }), "title", "too_long"),
        (
            json!({ "title": "two\nlines" }),
            "title",
            "invalid_characters",
        ),
        (
            json!({ "title": "ok", "description": "d".repeat(20_001) }),
            "description",
            "too_long",
        ),
        (
            json!({ "title": "ok", "priority": "HIGH" }),
            "priority",
            "invalid_priority",
        ),
        (
            json!({ "title": "ok", "tags": ["fine", "has space"] }),
            "tags[1]",
            "invalid_characters",
        ),
        (
            json!({ "title": "ok", "tags": ["a".repeat(65)] }),
            "tags[0]",
            "too_long",
        ),
        (
            json!({ "title": "ok", "tags": many_tags }),
            "tags",
            "too_many",
        ),
        (
            json!({ "title": "ok", "due_at": "2030-06-01" }),
            "due_at",
            "invalid_datetime",
        ),
        (
            json!({ "title": "ok", "due_at": "1899-12-31T23:59:59Z" }),
            "due_at",
            "out_of_range",
        ),
        (
            json!({ "title": "ok", "time_zone": "Mars/Base" }),
            "time_zone",
            "invalid_time_zone",
        ),
    ];
    for (body, field, code) in cases {
        let response = send(app.authed(Method::POST, "/api/v1/tasks", &user).json(&body)).await;
        let problem = expect_problem(response, 422, "validation_failed").await;
        assert_eq!(error_fields(&problem), [field], "{body}: {problem}");
        assert_eq!(
            error_code(&problem, field).as_deref(),
            Some(code),
            "{body}: {problem}"
        );
    }
    // The edges are accepted: 500 characters (counted as characters) and 30 tags.
    let thirty: Vec<String> = (0..30).map(|i| format!("t{i}")).collect();
    let task = app
        .create_task(&user, json!({ "title": "é".repeat(500), "tags": thirty }))
        .await;
    assert_eq!(task["tags"].as_array().unwrap().len(), 30);
    let listed = crate::support::list(&app, &user, "").await;
    assert_eq!(
        listed["items"].as_array().unwrap().len(),
        1,
        "no invalid task was stored"
    );
}

#[tokio::test]
async fn get_answers_the_etag_and_honours_if_none_match() {
    let app = TestApp::spawn().await;
    let user = app.register_user().await;
    let task = app.create_task(&user, json!({ "title": "cache me" })).await;
    let path = task_path(&task);

    let response = send(app.authed(Method::GET, &path, &user)).await;
    assert_eq!(header(&response, "etag").as_deref(), Some("\"1\""));
    assert_eq!(expect_json(response, 200).await, task);

    for matching in ["\"1\"", "W/\"1\"", "\"7\", \"1\""] {
        let response = send(
            app.authed(Method::GET, &path, &user)
                .header("if-none-match", matching),
        )
        .await;
        assert_eq!(response.status(), 304, "{matching}");
        assert_eq!(header(&response, "etag").as_deref(), Some("\"1\""));
        assert!(response.text().await.unwrap().is_empty());
    }
    let response = send(
        app.authed(Method::GET, &path, &user)
            .header("if-none-match", "\"0\""),
    )
    .await;
    assert_eq!(expect_json(response, 200).await, task);

    expect_json(
        patch(&app, &user, &task, json!({ "title": "changed" })).await,
        200,
    )
    .await;
    let response = send(
        app.authed(Method::GET, &path, &user)
            .header("if-none-match", "\"1\""),
    )
    .await;
    assert_eq!(header(&response, "etag").as_deref(), Some("\"2\""));
    assert_eq!(expect_json(response, 200).await["title"], "changed");
}

#[tokio::test]
async fn patch_changes_only_the_given_fields() {
    let app = TestApp::spawn().await;
    let user = app.register_user().await;
    let task = app
        .create_task(
            &user,
            json!({ "title": "full", "description": "desc", "priority": "high", "tags": ["a", "b"],
                    "due_at": "2030-01-01T00:00:00Z", "time_zone": "Europe/Paris" }),
        )
        .await;

    let response = patch(&app, &user, &task, json!({ "priority": "low" })).await;
    assert_eq!(header(&response, "etag").as_deref(), Some("\"2\""));
    let changed = expect_json(response, 200).await;
    let mut expected = task.clone();
    expected["priority"] = json!("low");
    expected["version"] = json!(2);
    expected["updated_at"] = changed["updated_at"].clone();
    assert_eq!(
        changed, expected,
        "only priority, version and updated_at moved"
    );
    assert!(instant(&changed["updated_at"]) >= instant(&task["updated_at"]));

    let cleared = expect_json(
        patch(
            &app,
            &user,
            &task,
            json!({ "due_at": null, "description": null, "tags": null, "priority": null }),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(cleared["due_at"], Value::Null);
    assert_eq!(cleared["description"], "");
    assert_eq!(cleared["tags"], json!([]));
    assert_eq!(cleared["priority"], "none");
    assert_eq!(cleared["title"], "full");
    assert_eq!(cleared["time_zone"], "Europe/Paris");
    assert_eq!(cleared["version"], 3);

    let retitled = expect_json(
        patch(&app, &user, &task, json!({ "title": "  new title ", "tags": ["X", "x"], "due_at": "2031-01-01T12:00:00-05:00" }))
            .await,
        200,
    )
    .await;
    assert_eq!(retitled["title"], "new title");
    assert_eq!(retitled["tags"], json!(["x"]));
    assert_eq!(retitled["due_at"], "2031-01-01T17:00:00Z");
    assert_eq!(
        get_task(&app, &user, task["id"].as_str().unwrap()).await,
        retitled
    );
}

#[tokio::test]
async fn patch_refuses_nulls_for_required_fields_and_keeps_the_task() {
    let app = TestApp::spawn().await;
    let user = app.register_user().await;
    let task = app.create_task(&user, json!({ "title": "keep me" })).await;
    for field in ["title", "time_zone", "status"] {
        let mut body = json!({});
        body[field] = Value::Null;
        let problem = expect_problem(
            patch(&app, &user, &task, body).await,
            422,
            "validation_failed",
        )
        .await;
        assert_eq!(error_fields(&problem), [field]);
        assert_eq!(error_code(&problem, field).as_deref(), Some("null"));
    }
    // One bad field spoils the whole patch.
    let problem = expect_problem(
        patch(
            &app,
            &user,
            &task,
            json!({ "priority": "urgent", "title": "" }),
        )
        .await,
        422,
        "validation_failed",
    )
    .await;
    assert_eq!(error_fields(&problem), ["title"]);
    assert_eq!(
        get_task(&app, &user, task["id"].as_str().unwrap()).await,
        task
    );
}

#[tokio::test]
async fn a_patch_that_changes_nothing_keeps_the_version() {
    let app = TestApp::spawn().await;
    let user = app.register_user().await;
    let task = app
        .create_task(
            &user,
            json!({ "title": "same", "priority": "low", "tags": ["t"] }),
        )
        .await;
    for body in [
        json!({}),
        json!({ "title": "same" }),
        json!({ "title": "  same  ", "priority": "low", "tags": ["T"] }),
        json!({ "due_at": null, "status": "pending" }),
    ] {
        let response = patch(&app, &user, &task, body.clone()).await;
        assert_eq!(
            header(&response, "etag").as_deref(),
            Some("\"1\""),
            "{body}"
        );
        assert_eq!(expect_json(response, 200).await, task, "{body}");
    }
}

#[tokio::test]
async fn complete_and_reopen_are_idempotent() {
    let app = TestApp::spawn().await;
    let user = app.register_user().await;
    let task = app.create_task(&user, json!({ "title": "do it" })).await;

    let done = expect_json(action(&app, &user, &task, "complete").await, 200).await;
    assert_eq!(done["status"], "completed");
    assert_eq!(done["version"], 2);
    assert!(instant(&done["completed_at"]) >= instant(&task["created_at"]));
    assert_eq!(done["updated_at"], done["completed_at"]);

    let response = action(&app, &user, &task, "complete").await;
    assert_eq!(header(&response, "etag").as_deref(), Some("\"2\""));
    assert_eq!(
        expect_json(response, 200).await,
        done,
        "completing again changes nothing"
    );

    let open = expect_json(action(&app, &user, &task, "reopen").await, 200).await;
    assert_eq!(open["status"], "pending");
    assert_eq!(open["completed_at"], Value::Null);
    assert_eq!(open["version"], 3);
    assert_eq!(
        expect_json(action(&app, &user, &task, "reopen").await, 200).await,
        open
    );

    // PATCH status does the same.
    let done = expect_json(
        patch(&app, &user, &task, json!({ "status": "completed" })).await,
        200,
    )
    .await;
    assert_eq!(done["status"], "completed");
    assert_eq!(done["version"], 4);
    let problem = expect_problem(
        patch(&app, &user, &task, json!({ "status": "done" })).await,
        422,
        "validation_failed",
    )
    .await;
    assert_eq!(
        error_code(&problem, "status").as_deref(),
        Some("invalid_status")
    );
}

#[tokio::test]
async fn a_deleted_task_is_gone_for_every_route() {
    let app = TestApp::spawn().await;
    let user = app.register_user().await;
    let task = app
        .create_task(&user, json!({ "title": "delete me", "tags": ["gone"] }))
        .await;
    let path = task_path(&task);
    let response = send(app.authed(Method::DELETE, &path, &user)).await;
    assert_eq!(response.status(), 204);
    assert!(response.text().await.unwrap().is_empty());

    expect_problem(
        send(app.authed(Method::GET, &path, &user)).await,
        404,
        "not_found",
    )
    .await;
    expect_problem(
        send(app.authed(Method::DELETE, &path, &user)).await,
        404,
        "not_found",
    )
    .await;
    expect_problem(
        patch(&app, &user, &task, json!({ "title": "x" })).await,
        404,
        "not_found",
    )
    .await;
    expect_problem(
        action(&app, &user, &task, "complete").await,
        404,
        "not_found",
    )
    .await;
    expect_problem(action(&app, &user, &task, "reopen").await, 404, "not_found").await;
    let conditional = send(
        app.authed(Method::PATCH, &path, &user)
            .header("if-match", "*")
            .json(&json!({})),
    )
    .await;
    expect_problem(conditional, 404, "not_found").await;

    assert_eq!(
        crate::support::list(&app, &user, "").await["items"],
        json!([])
    );
    let tags = expect_json(
        send(app.authed(Method::GET, "/api/v1/tags", &user)).await,
        200,
    )
    .await;
    assert_eq!(tags["items"], json!([]), "tags of deleted tasks are gone");
}

/// Sends `method` to `path` with `If-Match: if_match` (and an empty patch body for PATCH).
async fn conditional(
    app: &TestApp,
    user: &TestUser,
    method: Method,
    path: &str,
    if_match: &str,
) -> Response {
    let mut request = app
        .authed(method.clone(), path, user)
        .header("if-match", if_match);
    if method == Method::PATCH {
        request = request.json(&json!({ "title": "conditional change" }));
    }
    send(request).await
}

#[tokio::test]
async fn a_stale_if_match_is_412_and_changes_nothing() {
    let app = TestApp::spawn().await;
    let user = app.register_user().await;
    let task = app.create_task(&user, json!({ "title": "v1" })).await;
    let path = task_path(&task);
    let current = expect_json(
        patch(&app, &user, &task, json!({ "title": "v2" })).await,
        200,
    )
    .await;

    let routes = [
        (Method::PATCH, path.clone()),
        (Method::DELETE, path.clone()),
        (Method::POST, format!("{path}/complete")),
        (Method::POST, format!("{path}/reopen")),
    ];
    for (method, route) in &routes {
        for stale in ["\"1\"", "W/\"2\"", "\"3\"", "\"1\", \"3\"", "\"abc\""] {
            let response = conditional(&app, &user, method.clone(), route, stale).await;
            assert_eq!(
                header(&response, "etag").as_deref(),
                Some("\"2\""),
                "{method} {route} {stale}"
            );
            let problem = expect_problem(response, 412, "precondition_failed").await;
            assert_eq!(problem["current_version"], 2, "{problem}");
        }
        for malformed in [&b"2"[..], b"\"2", b"W/2", b"W/\"2", b"\xe9"] {
            let value = reqwest::header::HeaderValue::from_bytes(malformed).unwrap();
            let response = send(
                app.authed(method.clone(), route, &user)
                    .header("if-match", value),
            )
            .await;
            let problem = expect_problem(response, 400, "invalid_header").await;
            assert_eq!(error_fields(&problem), ["If-Match"], "{malformed:?}");
        }
    }
    assert_eq!(
        get_task(&app, &user, task["id"].as_str().unwrap()).await,
        current,
        "unchanged"
    );
}

#[tokio::test]
async fn a_current_or_wildcard_if_match_succeeds() {
    let app = TestApp::spawn().await;
    let user = app.register_user().await;
    let task = app.create_task(&user, json!({ "title": "v1" })).await;
    let path = task_path(&task);

    let v2 = expect_json(
        conditional(&app, &user, Method::PATCH, &path, "\"1\"").await,
        200,
    )
    .await;
    assert_eq!(v2["version"], 2);
    let v3 = expect_json(
        conditional(
            &app,
            &user,
            Method::POST,
            &format!("{path}/complete"),
            "\"9\", \"2\"",
        )
        .await,
        200,
    )
    .await;
    assert_eq!(v3["status"], "completed");
    let v4 = expect_json(
        conditional(&app, &user, Method::POST, &format!("{path}/reopen"), "*").await,
        200,
    )
    .await;
    assert_eq!(v4["version"], 4);
    let v5 = expect_json(
        send(
            app.authed(Method::PATCH, &path, &user)
                .header("if-match", "*")
                .json(&json!({ "priority": "high" })),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(v5["version"], 5);
    let response = conditional(&app, &user, Method::DELETE, &path, "\"5\"").await;
    assert_eq!(response.status(), 204);

    let other = app
        .create_task(&user, json!({ "title": "wildcard delete" }))
        .await;
    let response = conditional(&app, &user, Method::DELETE, &task_path(&other), "*").await;
    assert_eq!(response.status(), 204);
    assert_eq!(
        crate::support::list(&app, &user, "").await["items"],
        json!([])
    );
}

#[tokio::test]
async fn of_two_concurrent_patches_with_the_same_if_match_exactly_one_wins() {
    let app = TestApp::spawn().await;
    let user = app.register_user().await;
    for round in 0..8 {
        let task = app
            .create_task(&user, json!({ "title": format!("race {round}") }))
            .await;
        let path = task_path(&task);
        let first = app
            .authed(Method::PATCH, &path, &user)
            .header("if-match", "\"1\"")
            .json(&json!({ "title": "first" }));
        let second = app
            .authed(Method::PATCH, &path, &user)
            .header("if-match", "\"1\"")
            .json(&json!({ "title": "second" }));
        let (a, b) = tokio::join!(first.send(), second.send());
        let (a, b) = (a.unwrap(), b.unwrap());
        let mut statuses = [a.status().as_u16(), b.status().as_u16()];
        let (winner, loser) = if a.status() == 200 { (a, b) } else { (b, a) };
        statuses.sort();
        assert_eq!(statuses, [200, 412], "round {round}");
        let won = expect_json(winner, 200).await;
        let problem = expect_problem(loser, 412, "precondition_failed").await;
        assert_eq!(problem["current_version"], 2);
        assert_eq!(won["version"], 2);
        assert_eq!(
            get_task(&app, &user, task["id"].as_str().unwrap()).await,
            won,
            "the winner's change is stored"
        );
    }
}

#[tokio::test]
async fn concurrent_unconditional_patches_are_both_applied() {
    let app = TestApp::spawn().await;
    let user = app.register_user().await;
    let task = app.create_task(&user, json!({ "title": "t" })).await;
    let path = task_path(&task);
    // Each write retries after losing a race, up to five attempts: five writers must all land.
    let requests: Vec<_> = (0..5)
        .map(|i| {
            app.authed(Method::PATCH, &path, &user)
                .json(&json!({ "description": format!("writer {i}") }))
                .send()
        })
        .collect();
    for response in futures::future::join_all(requests).await {
        expect_json(response.unwrap(), 200).await;
    }
    let stored = get_task(&app, &user, task["id"].as_str().unwrap()).await;
    assert_eq!(stored["version"], 6, "five changes, none lost: {stored}");
}

#[tokio::test]
async fn a_pending_task_due_in_the_past_is_overdue() {
    let app = TestApp::spawn().await;
    let user = app.register_user().await;
    let past = (Utc::now() - TimeDelta::hours(1)).to_rfc3339();
    let future = (Utc::now() + TimeDelta::hours(1)).to_rfc3339();
    let late = app
        .create_task(&user, json!({ "title": "late", "due_at": past }))
        .await;
    assert_eq!(late["overdue"], true);
    assert_eq!(
        app.create_task(&user, json!({ "title": "soon", "due_at": future }))
            .await["overdue"],
        false
    );
    assert_eq!(
        app.create_task(&user, json!({ "title": "whenever" })).await["overdue"],
        false
    );
    let done = expect_json(action(&app, &user, &late, "complete").await, 200).await;
    assert_eq!(done["overdue"], false, "a completed task is never overdue");
    let reopened = expect_json(action(&app, &user, &late, "reopen").await, 200).await;
    assert_eq!(reopened["overdue"], true);
}
