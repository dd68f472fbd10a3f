//! iCalendar over HTTP: the export parses with an independent parser (Python `icalendar`),
//! keeps every field, expands (with `dateutil` and `recurring-ical-events`) to exactly the
//! occurrences TaskFlow previews, and round-trips through import; the secret feed URL; import
//! idempotency, skip reasons and bad bodies.

use std::path::PathBuf;

use reqwest::Method;
use serde_json::{Value, json};
use taskflow_testing::{TestApp, TestUser, run_python};

use crate::support::{error_code, expect_json, expect_problem};

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/py/ics_check.py")
}

async fn export(app: &TestApp, user: &TestUser) -> String {
    let response = app
        .authed(Method::GET, "/api/v1/calendar.ics", user)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(content_type.starts_with("text/calendar"), "{content_type}");
    response.text().await.unwrap()
}

async fn import(
    app: &TestApp,
    user: &TestUser,
    body: impl Into<reqwest::Body>,
) -> reqwest::Response {
    app.authed(Method::POST, "/api/v1/import/ics", user)
        .header("content-type", "text/calendar")
        .body(body)
        .send()
        .await
        .unwrap()
}

/// Tasks covering every exported field: zones, DST, priorities, tags, text that needs
/// escaping, COUNT, UNTIL, BYDAY, completion anchors, completed tasks.
async fn varied_tasks(app: &TestApp, user: &TestUser) {
    let bodies = [
        json!({"title": "Pay rent, now; really", "description": "line one\nline two, with commas; and semicolons \\ backslash",
               "priority": "high", "tags": ["finance", "home"], "due_at": "2027-02-01T09:00:00+01:00",
               "time_zone": "Europe/Berlin", "recurrence": {"rule": "FREQ=MONTHLY;BYMONTHDAY=1"},
               "reminders": [{"before_due": "P1D"}, {"before_due": "PT1H30M"}]}),
        json!({"title": "Standup across DST", "priority": "medium", "tags": ["work"], "due_at": "2027-03-22T09:30:00+01:00",
               "time_zone": "Europe/Berlin", "recurrence": {"rule": "weekdays"}}),
        json!({"title": "Fortnightly review", "priority": "low", "due_at": "2027-01-05T18:00:00-05:00",
               "time_zone": "America/New_York", "recurrence": {"rule": "FREQ=WEEKLY;INTERVAL=2;BYDAY=TU;COUNT=6"}}),
        json!({"title": "Antibiotics", "priority": "urgent", "due_at": "2027-02-05T07:00:00+01:00",
               "time_zone": "Europe/Berlin", "recurrence": {"rule": "FREQ=DAILY;UNTIL=20270210"}}),
        json!({"title": "Last Friday payroll", "due_at": "2027-01-29T10:00:00Z", "time_zone": "UTC",
               "recurrence": {"rule": "FREQ=MONTHLY;BYDAY=-1FR", "ends": {"count": 5}}}),
        json!({"title": "Water plants", "due_at": "2027-01-10T18:00:00+01:00", "time_zone": "Europe/Berlin",
               "recurrence": {"rule": "FREQ=DAILY;INTERVAL=3", "anchor": "completion"}}),
        json!({"title": "Someday urgent", "priority": "urgent", "tags": ["ideas", "big-plans"],
               "reminders": [{"at": "2030-01-01T08:00:00Z"}]}),
        json!({"title": "Done already", "priority": "low", "due_at": "2026-12-01T12:00:00Z"}),
    ];
    for body in bodies {
        app.create_task(user, body).await;
    }
    let list = expect_json(
        app.authed(Method::GET, "/api/v1/tasks?q=done", user)
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    let id = list["items"][0]["id"].as_str().unwrap();
    let response = app
        .authed(Method::POST, &format!("/api/v1/tasks/{id}/complete"), user)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

/// Every task of `user` with, for repeating ones, TaskFlow's own preview of its occurrences.
async fn expected_tasks(app: &TestApp, user: &TestUser) -> Value {
    let list = expect_json(
        app.authed(Method::GET, "/api/v1/tasks?limit=200", user)
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    let mut tasks = Vec::new();
    for task in list["items"].as_array().unwrap() {
        let mut task = task.clone();
        if !task["recurrence"].is_null() && task["recurrence"]["anchor"] == "due" {
            let preview = expect_json(
                app.authed(
                    Method::GET,
                    &format!(
                        "/api/v1/tasks/{}/occurrences?limit=15",
                        task["id"].as_str().unwrap()
                    ),
                    user,
                )
                .send()
                .await
                .unwrap(),
                200,
            )
            .await;
            task["occurrences"] = preview["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|o| o["due_at"].clone())
                .collect();
        }
        tasks.push(task);
    }
    Value::Array(tasks)
}

fn temp_file(name: &str, contents: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("taskflow-ics-{}-{name}", uuid::Uuid::now_v7()));
    std::fs::write(&path, contents).unwrap();
    path
}

#[tokio::test]
async fn the_export_is_independently_parsed_expanded_and_round_trips_through_import() {
    let app = TestApp::spawn().await;
    let ann = app.register_user().await;
    varied_tasks(&app, &ann).await;
    let exported = export(&app, &ann).await;
    let expected = expected_tasks(&app, &ann).await;
    assert_eq!(expected.as_array().unwrap().len(), 8);
    let ics = temp_file("ann.ics", &exported);
    let json_file = temp_file("ann.json", &expected.to_string());
    let out = run_python(
        &script(),
        &["check", ics.to_str().unwrap(), json_file.to_str().unwrap()],
        &[],
    );
    assert!(out.contains("ok 8 VTODOs, 5 recurrences expanded"), "{out}");

    // Importing into another account keeps every field, the UIDs included: the calendar the
    // VTODOs came from recognises them in the re-export.
    let bob = app.register_user().await;
    let report = expect_json(import(&app, &bob, exported.clone()).await, 200).await;
    assert_eq!(report["imported"].as_array().unwrap().len(), 8, "{report}");
    assert!(report["skipped"].as_array().unwrap().is_empty(), "{report}");
    let bob_ics = temp_file("bob.ics", &export(&app, &bob).await);
    let out = run_python(
        &script(),
        &["compare", ics.to_str().unwrap(), bob_ics.to_str().unwrap()],
        &[],
    );
    assert!(out.contains("ok 8 VTODOs keep their fields"), "{out}");

    // Idempotent by UID: a second import creates nothing, and so does importing one's own export.
    let again = expect_json(import(&app, &bob, exported.clone()).await, 200).await;
    assert!(again["imported"].as_array().unwrap().is_empty(), "{again}");
    let codes: Vec<&str> = again["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["code"].as_str().unwrap())
        .collect();
    assert_eq!(codes, ["already_imported"; 8]);
    let own = expect_json(import(&app, &ann, exported).await, 200).await;
    let codes: Vec<&str> = own["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["code"].as_str().unwrap())
        .collect();
    assert_eq!(codes, ["already_exists"; 8]);
    let list = expect_json(
        app.authed(Method::GET, "/api/v1/tasks", &bob)
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    assert_eq!(list["items"].as_array().unwrap().len(), 8);
    for path in [ics, json_file, bob_ics] {
        let _ = std::fs::remove_file(path);
    }
}

/// The VTODO blocks of an export, unfolded, keyed by UID.
fn vtodos_by_uid(ics: &str) -> Vec<(String, String)> {
    let unfolded = ics.replace("\r\n ", "");
    unfolded
        .split("BEGIN:VTODO")
        .skip(1)
        .map(|block| {
            let uid = block
                .lines()
                .find_map(|l| l.strip_prefix("UID:"))
                .expect("every VTODO has a UID")
                .to_owned();
            (uid, block.to_owned())
        })
        .collect()
}

#[tokio::test]
async fn an_imported_vtodo_keeps_its_uid_in_exports_and_the_series_pending_occurrence_carries_it() {
    let app = TestApp::spawn().await;
    let ann = app.register_user().await;
    let body = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//Other App//EN\r\n\
         BEGIN:VTODO\r\nUID:plants-7f3a@other.example\r\nSUMMARY:Water the plants\r\n\
         DUE:20270105T090000Z\r\nRRULE:FREQ=DAILY\r\nEND:VTODO\r\n\
         BEGIN:VTODO\r\nUID:once-1@other.example\r\nSUMMARY:Call the bank\r\nEND:VTODO\r\n\
         END:VCALENDAR\r\n";
    let report = expect_json(import(&app, &ann, body).await, 200).await;
    assert_eq!(report["imported"].as_array().unwrap().len(), 2, "{report}");
    let plants = report["imported"][0]["task_id"]
        .as_str()
        .unwrap()
        .to_owned();

    let uids: Vec<String> = vtodos_by_uid(&export(&app, &ann).await)
        .into_iter()
        .map(|(uid, _)| uid)
        .collect();
    assert_eq!(
        uids.iter()
            .filter(|u| u.ends_with("@other.example"))
            .count(),
        2,
        "{uids:?}"
    );
    assert!(uids.contains(&"plants-7f3a@other.example".to_owned()));
    assert!(uids.contains(&"once-1@other.example".to_owned()));

    // Completing the occurrence moves the series on: the calendar's VTODO (same UID) is now
    // the pending next occurrence, and the completed one is exported under its own UID.
    let done = app
        .authed(
            Method::POST,
            &format!("/api/v1/tasks/{plants}/complete"),
            &ann,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(done.status(), 200);
    let todos = vtodos_by_uid(&export(&app, &ann).await);
    assert_eq!(todos.len(), 3);
    let with_uid: Vec<&(String, String)> = todos
        .iter()
        .filter(|(uid, _)| uid == "plants-7f3a@other.example")
        .collect();
    assert_eq!(with_uid.len(), 1, "a UID names one VTODO: {todos:?}");
    let pending = &with_uid[0].1;
    assert!(pending.contains("STATUS:NEEDS-ACTION"), "{pending}");
    assert!(pending.contains("RRULE:FREQ=DAILY"), "{pending}");
    let completed_uid = format!("{plants}@taskflow");
    let (_, completed) = todos
        .iter()
        .find(|(uid, _)| *uid == completed_uid)
        .expect("the completed occurrence has its own UID");
    assert!(completed.contains("STATUS:COMPLETED"), "{completed}");

    // Importing the calendar app's file again still creates nothing.
    let again = expect_json(import(&app, &ann, body).await, 200).await;
    assert!(again["imported"].as_array().unwrap().is_empty(), "{again}");
}

#[tokio::test]
async fn skipped_vtodos_are_reported_with_their_reason() {
    let app = TestApp::spawn().await;
    let ann = app.register_user().await;
    let bob = app.register_user().await;
    let ann_task = app.create_task(&ann, json!({"title": "ann's own"})).await;
    let ann_uid = format!("{}@taskflow", ann_task["id"].as_str().unwrap());
    let body = format!(
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//test//EN\r\n\
         BEGIN:VTODO\r\nSUMMARY:no uid\r\nEND:VTODO\r\n\
         BEGIN:VTODO\r\nUID:a\r\nEND:VTODO\r\n\
         BEGIN:VTODO\r\nUID:b\r\nSUMMARY:cancelled\r\nSTATUS:CANCELLED\r\nEND:VTODO\r\n\
         BEGIN:VTODO\r\nUID:c\r\nSUMMARY:hourly\r\nDUE:20270101T100000Z\r\nRRULE:FREQ=HOURLY\r\nEND:VTODO\r\n\
         BEGIN:VTODO\r\nUID:d\r\nSUMMARY:with alarms\r\nDUE;TZID=/mozilla.org/20050126_1/Europe/Berlin:20270301T090000\r\n\
         CATEGORIES:Work,bad tag\r\nPRIORITY:2\r\n\
         BEGIN:VALARM\r\nACTION:DISPLAY\r\nTRIGGER;RELATED=END:-PT1H\r\nEND:VALARM\r\nEND:VTODO\r\n\
         BEGIN:VTODO\r\nUID:e\r\nSUMMARY:date only\r\nDUE;VALUE=DATE:20270315\r\nEND:VTODO\r\n\
         BEGIN:VTODO\r\nUID:{ann_uid}\r\nSUMMARY:copy of ann's\r\nEND:VTODO\r\n\
         END:VCALENDAR\r\n"
    );
    let report = expect_json(import(&app, &bob, body).await, 200).await;
    let skipped: Vec<(Value, String)> = report["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["uid"].clone(), s["code"].as_str().unwrap().to_owned()))
        .collect();
    assert_eq!(
        skipped,
        [
            (Value::Null, "missing_uid".to_owned()),
            (json!("a"), "missing_summary".to_owned()),
            (json!("b"), "cancelled".to_owned()),
            (json!("c"), "unsupported_recurrence".to_owned()),
        ],
        "{report}"
    );
    let imported = report["imported"].as_array().unwrap();
    assert_eq!(imported.len(), 3, "{report}");
    let alarms = &imported[0];
    assert_eq!(alarms["uid"], "d");
    let notes = alarms["not_applied"].to_string();
    assert!(notes.contains("bad tag"), "{notes}");
    assert!(
        !notes.contains("VALARM"),
        "the alarm became a reminder: {notes}"
    );
    let task = expect_json(
        app.authed(
            Method::GET,
            &format!("/api/v1/tasks/{}", alarms["task_id"].as_str().unwrap()),
            &bob,
        )
        .send()
        .await
        .unwrap(),
        200,
    )
    .await;
    assert_eq!(task["due_at"], "2027-03-01T08:00:00Z");
    assert_eq!(task["time_zone"], "Europe/Berlin");
    assert_eq!(task["tags"], json!(["work"]));
    assert_eq!(task["priority"], "high");
    let date_only = expect_json(
        app.authed(
            Method::GET,
            &format!("/api/v1/tasks/{}", imported[1]["task_id"].as_str().unwrap()),
            &bob,
        )
        .send()
        .await
        .unwrap(),
        200,
    )
    .await;
    assert_eq!(date_only["due_at"], "2027-03-15T23:59:00Z"); // bob's zone is UTC
    // Ann's UID in Bob's import is a new task of Bob's; Ann's task is untouched.
    assert_ne!(imported[2]["task_id"], ann_task["id"]);
    let ann_now = expect_json(
        app.authed(
            Method::GET,
            &format!("/api/v1/tasks/{}", ann_task["id"].as_str().unwrap()),
            &ann,
        )
        .send()
        .await
        .unwrap(),
        200,
    )
    .await;
    assert_eq!(ann_now["title"], "ann's own");
    assert_eq!(ann_now["version"], 1);
}

#[tokio::test]
async fn bad_import_bodies_are_problem_json() {
    let app = TestApp::spawn().await;
    let user = app.register_user().await;
    for body in [
        "",
        "hello",
        "BEGIN:VCALENDAR\r\nBEGIN:VTODO\r\nSUMMARY:x\r\n",
        "{\"title\": 1}",
    ] {
        expect_problem(import(&app, &user, body).await, 400, "malformed_ics").await;
    }
    expect_problem(
        import(&app, &user, vec![0xff_u8, 0xfe, 0x00]).await,
        400,
        "malformed_ics",
    )
    .await;
    let many = format!(
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\n{}END:VCALENDAR\r\n",
        "BEGIN:VTODO\r\nUID:x\r\nSUMMARY:x\r\nEND:VTODO\r\n".repeat(1001)
    );
    let problem = expect_problem(import(&app, &user, many).await, 422, "validation_failed").await;
    assert_eq!(
        error_code(&problem, "body").as_deref(),
        Some("too_many_todos")
    );
    let huge = format!(
        "BEGIN:VCALENDAR\r\nX-PAD:{}\r\nEND:VCALENDAR\r\n",
        "x".repeat(1024 * 1024)
    );
    expect_problem(import(&app, &user, huge).await, 413, "payload_too_large").await;
    let response = app
        .client
        .post(app.url("/api/v1/import/ics"))
        .body("BEGIN:VCALENDAR\r\nEND:VCALENDAR\r\n")
        .send()
        .await
        .unwrap();
    expect_problem(response, 401, "missing_token").await;
}

#[tokio::test]
async fn imports_spend_the_task_creation_budget() {
    let app = TestApp::spawn_with(taskflow_testing::TestOptions {
        rate_limit: taskflow_http::rate_limit::RateLimitSettings {
            task_create_per_minute: 1,
            task_create_burst: 1,
            ..taskflow_http::rate_limit::RateLimitSettings::default()
        },
        ..taskflow_testing::TestOptions::default()
    })
    .await;
    let user = app.register_user().await;
    let body = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nBEGIN:VTODO\r\nUID:one\r\nSUMMARY:one\r\nEND:VTODO\r\nEND:VCALENDAR\r\n";
    expect_json(import(&app, &user, body).await, 200).await;
    let response = import(&app, &user, body).await;
    assert!(response.headers().contains_key("retry-after"));
    expect_problem(response, 429, "rate_limited").await;
}

#[tokio::test]
async fn the_secret_feed_url_serves_the_calendar_and_can_be_rotated_and_revoked() {
    let app = TestApp::spawn().await;
    let ann = app.register_user().await;
    let bob = app.register_user().await;
    app.create_task(
        &ann,
        json!({"title": "ann's task", "due_at": "2027-01-01T10:00:00Z"}),
    )
    .await;
    app.create_task(&bob, json!({"title": "bob's task"})).await;
    expect_problem(
        app.authed(Method::GET, "/api/v1/calendar/feed", &ann)
            .send()
            .await
            .unwrap(),
        404,
        "not_found",
    )
    .await;

    let created = expect_json(
        app.authed(Method::POST, "/api/v1/calendar/feed", &ann)
            .send()
            .await
            .unwrap(),
        201,
    )
    .await;
    let token = created["token"].as_str().unwrap().to_owned();
    assert!(token.starts_with("tfc_"));
    let url = created["url"].as_str().unwrap().to_owned();
    assert!(
        url.starts_with(&app.address) && url.ends_with(".ics"),
        "{url}"
    );
    let feed = app.client.get(&url).send().await.unwrap();
    assert_eq!(feed.status(), 200);
    let text = feed.text().await.unwrap();
    assert!(
        text.contains("SUMMARY:ann's task") && !text.contains("bob's task"),
        "{text}"
    );
    // Without the `.ics` suffix too; the token is never shown again.
    let bare = app
        .client
        .get(app.url(&format!("/api/v1/calendar/feed/{token}")))
        .send()
        .await
        .unwrap();
    assert_eq!(bare.status(), 200);
    let info = expect_json(
        app.authed(Method::GET, "/api/v1/calendar/feed", &ann)
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    assert!(info.get("token").is_none());
    assert_eq!(info["prefix"], token.chars().take(8).collect::<String>());
    assert!(info["last_used_at"].is_string());

    // Rotating: the old URL stops working, the new one works.
    let rotated = expect_json(
        app.authed(Method::POST, "/api/v1/calendar/feed", &ann)
            .send()
            .await
            .unwrap(),
        201,
    )
    .await;
    expect_problem(app.client.get(&url).send().await.unwrap(), 404, "not_found").await;
    let new_url = rotated["url"].as_str().unwrap();
    assert_eq!(app.client.get(new_url).send().await.unwrap().status(), 200);

    // Revoking: gone; guessed tokens are 404 too.
    let response = app
        .authed(Method::DELETE, "/api/v1/calendar/feed", &ann)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    expect_problem(
        app.client.get(new_url).send().await.unwrap(),
        404,
        "not_found",
    )
    .await;
    for guess in ["tfc_nothing.ics", "whatever", "tfp_abc"] {
        let response = app
            .client
            .get(app.url(&format!("/api/v1/calendar/feed/{guess}")))
            .send()
            .await
            .unwrap();
        expect_problem(response, 404, "not_found").await;
    }
    expect_problem(
        app.authed(Method::DELETE, "/api/v1/calendar/feed", &ann)
            .send()
            .await
            .unwrap(),
        404,
        "not_found",
    )
    .await;
}
