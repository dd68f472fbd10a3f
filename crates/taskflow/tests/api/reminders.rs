//! Reminders end to end: plans on tasks, the scheduler firing them at their instant, the
//! notifier's feed, webhooks (a real receiver on loopback checking signatures), e-mail (a real
//! SMTP server, Python's aiosmtpd), retries with their spacing, dead letters and quiet hours.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use chrono::{DateTime, TimeDelta, Utc};
use reqwest::Method;
use serde_json::{Value, json};
use taskflow_testing::{TestApp, TestOptions, TestUser, eventually};

use crate::support::{expect_json, expect_problem};

fn instant(offset: TimeDelta) -> String {
    (Utc::now() + offset).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

async fn get(app: &TestApp, user: &TestUser, path: &str) -> Value {
    expect_json(
        app.authed(Method::GET, path, user).send().await.unwrap(),
        200,
    )
    .await
}

async fn notifications(app: &TestApp, user: &TestUser) -> Value {
    get(app, user, "/api/v1/notifications").await
}

/// Waits until the user's feed holds `count` notifications and returns it.
async fn feed_with(app: &TestApp, user: &TestUser, count: usize) -> Value {
    eventually(Duration::from_secs(10), "notifications", || async {
        let feed = notifications(app, user).await;
        (feed["items"].as_array().unwrap().len() >= count).then_some(feed)
    })
    .await
}

#[tokio::test]
async fn a_reminder_fires_at_its_instant_into_the_feed() {
    let app = TestApp::spawn().await;
    let user = app.register_user().await;
    let due = Utc::now() + TimeDelta::hours(2);
    let task = app
        .create_task(
            &user,
            json!({"title": "Call the bank", "due_at": due.to_rfc3339(),
                   "reminders": [{"at": instant(TimeDelta::milliseconds(800))}, {"before_due": "PT1H"}]}),
        )
        .await;
    assert_eq!(task["reminders"][1], json!({"before_due": "PT1H"}));
    let id = task["id"].as_str().unwrap();
    let scheduled = get(&app, &user, &format!("/api/v1/tasks/{id}/reminders")).await;
    let items = scheduled["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert!(items.iter().all(|r| r["state"] == "scheduled"));
    assert_eq!(items[1]["key"], "before_due:PT1H");

    let feed = feed_with(&app, &user, 1).await;
    assert_eq!(feed["unread"], 1);
    let entry = &feed["items"][0];
    assert_eq!(entry["title"], "Call the bank");
    assert_eq!(entry["kind"], "reminder");
    assert_eq!(entry["task_id"], id);
    let fired = get(&app, &user, &format!("/api/v1/tasks/{id}/reminders")).await;
    let first = &fired["items"][0];
    assert_eq!(first["state"], "sent");
    assert_eq!(first["fire_count"], 1);
    let fired_at: DateTime<Utc> = first["fired_at"].as_str().unwrap().parse().unwrap();
    let fire_at: DateTime<Utc> = first["fire_at"].as_str().unwrap().parse().unwrap();
    assert!(fired_at >= fire_at, "never early");
    assert!(first["late_ms"].as_i64().unwrap() < 1000, "{first}");
    assert_eq!(fired["items"][1]["state"], "scheduled");
    // The reminder.due and notification.created events match their published schemas.
    let validators = crate::events::schemas();
    let events = crate::events::all_events(&app).await;
    for wanted in [
        "taskflow.reminder.due.v1",
        "taskflow.notification.created.v1",
    ] {
        let found: Vec<&Value> = events
            .iter()
            .map(|(_, e)| e)
            .filter(|e| e["type"] == wanted)
            .collect();
        assert_eq!(found.len(), 1, "{wanted}");
        let errors: Vec<String> = validators[wanted]
            .iter_errors(found[0])
            .map(|e| e.to_string())
            .collect();
        assert!(errors.is_empty(), "{wanted}: {errors:?} in {}", found[0]);
    }
    let due = events
        .iter()
        .find(|(_, e)| e["type"] == "taskflow.reminder.due.v1")
        .unwrap();
    assert_eq!(due.0, "reminders");
    assert_eq!(due.1["data"]["title"], "Call the bank");

    // Read one, then all.
    let nid = entry["id"].as_str().unwrap();
    let read = expect_json(
        app.authed(
            Method::POST,
            &format!("/api/v1/notifications/{nid}/read"),
            &user,
        )
        .send()
        .await
        .unwrap(),
        200,
    )
    .await;
    assert!(read["read_at"].is_string());
    assert_eq!(notifications(&app, &user).await["unread"], 0);
    let all = expect_json(
        app.authed(Method::POST, "/api/v1/notifications/read-all", &user)
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    assert_eq!(all["updated"], 0);

    // Another user sees nothing and cannot touch it.
    let other = app.register_user().await;
    assert_eq!(notifications(&app, &other).await["items"], json!([]));
    let response = app
        .authed(
            Method::POST,
            &format!("/api/v1/notifications/{nid}/read"),
            &other,
        )
        .send()
        .await
        .unwrap();
    expect_problem(response, 404, "not_found").await;
    let response = app
        .authed(
            Method::GET,
            &format!("/api/v1/tasks/{id}/reminders"),
            &other,
        )
        .send()
        .await
        .unwrap();
    expect_problem(response, 404, "not_found").await;
}

#[tokio::test]
async fn bad_reminder_plans_are_refused_with_the_field() {
    let app = TestApp::spawn().await;
    let user = app.register_user().await;
    let due = instant(TimeDelta::hours(3));
    for (body, field, code) in [
        (
            json!({"title": "x", "reminders": [{"at": instant(TimeDelta::minutes(-5))}]}),
            "reminders[0]",
            "in_the_past",
        ),
        (
            json!({"title": "x", "reminders": [{"before_due": "PT1H"}]}),
            "reminders",
            "required_due_date",
        ),
        (
            json!({"title": "x", "due_at": due, "reminders": [{"before_due": "P1M"}]}),
            "reminders[0].before_due",
            "invalid_duration",
        ),
        (
            json!({"title": "x", "due_at": due, "reminders": [{"soon": "PT1H"}]}),
            "reminders[0]",
            "invalid_reminder",
        ),
        (
            json!({"title": "x", "due_at": due, "reminders": [{"at": "tomorrow"}]}),
            "reminders[0].at",
            "invalid_datetime",
        ),
        (
            json!({"title": "x", "due_at": due, "reminders": ["PT1H"]}),
            "reminders[0]",
            "invalid_reminder",
        ),
        (
            json!({"title": "x", "due_at": due,
                   "reminders": (1..=11).map(|m| json!({"before_due": format!("PT{m}M")})).collect::<Vec<_>>()}),
            "reminders",
            "too_many",
        ),
    ] {
        let response = app
            .authed(Method::POST, "/api/v1/tasks", &user)
            .json(&body)
            .send()
            .await
            .unwrap();
        let problem = expect_problem(response, 422, "validation_failed").await;
        let errors = problem["errors"].as_array().unwrap();
        assert!(
            errors
                .iter()
                .any(|e| e["field"] == field && e["code"] == code),
            "{body} → {problem}"
        );
    }
    // Within the grace window it is accepted and fires at once.
    app.create_task(
        &user,
        json!({"title": "just now", "reminders": [{"at": instant(TimeDelta::seconds(-30))}]}),
    )
    .await;
    feed_with(&app, &user, 1).await;
    let list = get(&app, &user, "/api/v1/tasks").await;
    assert_eq!(
        list["items"].as_array().unwrap().len(),
        1,
        "nothing else stored"
    );
}

#[tokio::test]
async fn snoozing_fires_again_and_closing_a_task_cancels() {
    let app = TestApp::spawn().await;
    let user = app.register_user().await;
    let task = app
        .create_task(
            &user,
            json!({"title": "Stretch", "reminders": [{"at": instant(TimeDelta::milliseconds(300))}]}),
        )
        .await;
    let id = task["id"].as_str().unwrap();
    let feed = feed_with(&app, &user, 1).await;
    let reminder = feed["items"][0]["reminder_id"].as_str().unwrap().to_owned();
    let snooze = |who: &TestUser, body: Value| {
        app.authed(
            Method::POST,
            &format!("/api/v1/reminders/{reminder}/snooze"),
            who,
        )
        .json(&body)
        .send()
    };
    let other = app.register_user().await;
    expect_problem(
        snooze(&other, json!({"for": "PT1S"})).await.unwrap(),
        404,
        "not_found",
    )
    .await;
    expect_problem(
        snooze(&user, json!({"for": "P40D"})).await.unwrap(),
        422,
        "validation_failed",
    )
    .await;
    expect_problem(
        snooze(&user, json!({"until": "PT1S"})).await.unwrap(),
        422,
        "validation_failed",
    )
    .await;
    let snoozed = expect_json(snooze(&user, json!({"for": "PT1S"})).await.unwrap(), 200).await;
    assert_eq!(snoozed["state"], "scheduled");
    // The snooze is a `reminder.scheduled` event at the new instant, valid by its schema.
    let validators = crate::events::schemas();
    let moved: Vec<Value> = crate::events::all_events(&app)
        .await
        .into_iter()
        .map(|(_, e)| e)
        .filter(|e| {
            e["type"] == "taskflow.reminder.scheduled.v1"
                && e["data"]["reminder_id"] == reminder.as_str()
                && e["data"]["fire_at"] == snoozed["fire_at"]
        })
        .collect();
    assert_eq!(moved.len(), 1, "{snoozed}");
    assert!(validators["taskflow.reminder.scheduled.v1"].is_valid(&moved[0]));
    let feed = feed_with(&app, &user, 2).await;
    assert_eq!(feed["items"][0]["reminder_id"], reminder.as_str());
    let reminders = get(&app, &user, &format!("/api/v1/tasks/{id}/reminders")).await;
    assert_eq!(reminders["items"][0]["fire_count"], 2);

    // Completing cancels what is pending; snoozing a closed task's reminder is a conflict.
    let later = app
        .create_task(
            &user,
            json!({"title": "Later", "reminders": [{"at": instant(TimeDelta::seconds(1))}]}),
        )
        .await;
    let later_id = later["id"].as_str().unwrap();
    expect_json(
        app.authed(
            Method::POST,
            &format!("/api/v1/tasks/{later_id}/complete"),
            &user,
        )
        .send()
        .await
        .unwrap(),
        200,
    )
    .await;
    let reminders = get(&app, &user, &format!("/api/v1/tasks/{later_id}/reminders")).await;
    assert_eq!(reminders["items"][0]["state"], "cancelled");
    expect_json(
        app.authed(Method::POST, &format!("/api/v1/tasks/{id}/complete"), &user)
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    expect_problem(
        snooze(&user, json!({"for": "PT1M"})).await.unwrap(),
        409,
        "reminder_cancelled",
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        notifications(&app, &user).await["items"]
            .as_array()
            .unwrap()
            .len(),
        2,
        "the cancelled reminder never fired"
    );
}

/// A webhook receiver on loopback: records each request (time, headers, body) and answers
/// with the next status from its script (then 200).
#[derive(Clone, Default)]
struct Receiver {
    requests: Arc<Mutex<Vec<(Instant, HeaderMap, Bytes)>>>,
    script: Arc<Mutex<Vec<u16>>>,
}

impl Receiver {
    async fn start(script: Vec<u16>) -> (Self, SocketAddr) {
        let receiver = Self {
            requests: Arc::default(),
            script: Arc::new(Mutex::new(script.into_iter().rev().collect())),
        };
        let router = axum::Router::new()
            .route("/hook", axum::routing::post(Self::handle))
            .with_state(receiver.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router).await });
        (receiver, address)
    }

    async fn handle(State(receiver): State<Self>, headers: HeaderMap, body: Bytes) -> StatusCode {
        receiver
            .requests
            .lock()
            .unwrap()
            .push((Instant::now(), headers, body));
        let status = receiver.script.lock().unwrap().pop().unwrap_or(200);
        StatusCode::from_u16(status).unwrap()
    }

    fn requests(&self) -> Vec<(Instant, HeaderMap, Bytes)> {
        self.requests.lock().unwrap().clone()
    }
}

async fn register_webhook(app: &TestApp, user: &TestUser, address: SocketAddr) -> Value {
    expect_json(
        app.authed(Method::POST, "/api/v1/webhooks", user)
            .json(&json!({"url": format!("http://{address}/hook"), "description": "test"}))
            .send()
            .await
            .unwrap(),
        201,
    )
    .await
}

async fn deliveries(app: &TestApp, user: &TestUser, query: &str) -> Vec<Value> {
    get(
        app,
        user,
        &format!("/api/v1/notifications/deliveries{query}"),
    )
    .await["items"]
        .as_array()
        .unwrap()
        .clone()
}

#[tokio::test]
async fn webhooks_are_signed_retried_with_backoff_and_dead_lettered() {
    let app = TestApp::spawn().await; // retries: 4 attempts, 200 ms doubling, no jitter
    let user = app.register_user().await;
    let (flaky, flaky_address) = Receiver::start(vec![500, 503]).await;
    let hook = register_webhook(&app, &user, flaky_address).await;
    let secret = hook["secret"].as_str().unwrap().to_owned();
    let listed = get(&app, &user, "/api/v1/webhooks").await;
    assert!(
        listed["items"][0].get("secret").is_none(),
        "the secret is shown once"
    );

    let task = app
        .create_task(
            &user,
            json!({"title": "Pay rent", "reminders": [{"at": instant(TimeDelta::milliseconds(300))}]}),
        )
        .await;
    let sent = eventually(Duration::from_secs(15), "a delivered webhook", || async {
        let all = deliveries(&app, &user, "?status=sent").await;
        (!all.is_empty()).then_some(all)
    })
    .await;
    let delivery = &sent[0];
    assert_eq!(delivery["attempts"], 3);
    let log: Vec<&str> = delivery["attempt_log"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(log, ["retry", "retry", "sent"]);
    let requests = flaky.requests();
    assert_eq!(requests.len(), 3);
    // Spacing: 200 ms, then 400 ms (no jitter in tests).
    let gaps: Vec<Duration> = requests.windows(2).map(|w| w[1].0 - w[0].0).collect();
    assert!(gaps[0] >= Duration::from_millis(190), "{gaps:?}");
    assert!(gaps[1] >= Duration::from_millis(390), "{gaps:?}");
    assert!(gaps[1] > gaps[0], "exponential: {gaps:?}");
    let mut ids = std::collections::HashSet::new();
    for (_, headers, body) in &requests {
        let header = |name: &str| headers.get(name).unwrap().to_str().unwrap().to_owned();
        assert!(taskflow_notify::verify_signature(
            secret.as_bytes(),
            &header("taskflow-timestamp"),
            body,
            &header("taskflow-signature"),
        ));
        ids.insert(header("taskflow-delivery"));
        let event: Value = serde_json::from_slice(body).unwrap();
        assert_eq!(event["type"], "taskflow.reminder.due.v1");
        assert_eq!(event["data"]["task_id"], task["id"]);
        assert_eq!(event["data"]["title"], "Pay rent");
    }
    assert_eq!(ids.len(), 1, "one delivery id across retries");
    assert_eq!(ids.iter().next().unwrap(), delivery["id"].as_str().unwrap());
    // Each attempt's outcome is an event on `notifications`, valid against its schema.
    let validators = crate::events::schemas();
    let outcomes: Vec<Value> = crate::events::all_events(&app)
        .await
        .into_iter()
        .filter(|(topic, e)| topic == "notifications" && e["data"]["delivery_id"] == delivery["id"])
        .map(|(_, e)| e)
        .collect();
    let kinds: Vec<(&str, Value)> = outcomes
        .iter()
        .map(|e| (e["type"].as_str().unwrap(), e["data"]["dead"].clone()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("taskflow.notification.failed.v1", json!(false)),
            ("taskflow.notification.failed.v1", json!(false)),
            ("taskflow.notification.delivered.v1", Value::Null),
        ]
    );
    for event in &outcomes {
        let kind = event["type"].as_str().unwrap();
        let errors: Vec<String> = validators[kind]
            .iter_errors(event)
            .map(|e| e.to_string())
            .collect();
        assert!(errors.is_empty(), "{kind}: {errors:?}");
    }

    // A receiver that always fails ends dead-lettered; retrying gives it one more attempt.
    let other = app.register_user().await;
    let (broken, broken_address) = Receiver::start(vec![500; 20]).await;
    register_webhook(&app, &other, broken_address).await;
    app.create_task(
        &other,
        json!({"title": "Doomed", "reminders": [{"at": instant(TimeDelta::milliseconds(200))}]}),
    )
    .await;
    let dead = eventually(Duration::from_secs(20), "a dead delivery", || async {
        let all = deliveries(&app, &other, "?status=dead").await;
        (!all.is_empty()).then_some(all)
    })
    .await;
    assert_eq!(dead[0]["attempts"], 4);
    assert_eq!(broken.requests().len(), 4);
    let last = crate::events::all_events(&app)
        .await
        .into_iter()
        .rfind(|(_, e)| e["data"]["delivery_id"] == dead[0]["id"])
        .unwrap()
        .1;
    assert_eq!(last["type"], "taskflow.notification.failed.v1");
    assert_eq!(last["data"]["dead"], true);
    assert_eq!(last["data"]["attempts"], 4);
    assert!(dead[0]["last_error"].as_str().unwrap().contains("500"));
    assert!(
        deliveries(&app, &user, "?status=dead").await.is_empty(),
        "per user"
    );
    let id = dead[0]["id"].as_str().unwrap();
    let response = app
        .authed(
            Method::POST,
            &format!("/api/v1/notifications/deliveries/{id}/retry"),
            &user,
        )
        .send()
        .await
        .unwrap();
    expect_problem(response, 404, "not_found").await;
    let retried = expect_json(
        app.authed(
            Method::POST,
            &format!("/api/v1/notifications/deliveries/{id}/retry"),
            &other,
        )
        .send()
        .await
        .unwrap(),
        202,
    )
    .await;
    assert_eq!(retried["status"], "pending");
    eventually(Duration::from_secs(10), "the retried attempt", || async {
        (broken.requests().len() == 5).then_some(())
    })
    .await;
    let response = app
        .authed(
            Method::POST,
            &format!(
                "/api/v1/notifications/deliveries/{}/retry",
                delivery["id"].as_str().unwrap()
            ),
            &user,
        )
        .send()
        .await
        .unwrap();
    expect_problem(response, 409, "delivery_not_dead").await;
    let response = app
        .authed(
            Method::GET,
            "/api/v1/notifications/deliveries?status=lost",
            &user,
        )
        .send()
        .await
        .unwrap();
    expect_problem(response, 400, "invalid_query_parameter").await;
}

#[tokio::test]
async fn webhook_registration_is_validated_and_isolated() {
    let app = TestApp::spawn().await;
    let user = app.register_user().await;
    for url in [
        "ftp://example.com/x",
        "http://user:pw@example.com/",
        "not a url",
        "",
    ] {
        let response = app
            .authed(Method::POST, "/api/v1/webhooks", &user)
            .json(&json!({"url": url}))
            .send()
            .await
            .unwrap();
        let problem = expect_problem(response, 422, "validation_failed").await;
        assert_eq!(problem["errors"][0]["field"], "url", "{url}");
    }
    let (_, address) = Receiver::start(vec![]).await;
    let hook = register_webhook(&app, &user, address).await;
    let id = hook["id"].as_str().unwrap();
    let other = app.register_user().await;
    let response = app
        .authed(Method::DELETE, &format!("/api/v1/webhooks/{id}"), &other)
        .send()
        .await
        .unwrap();
    expect_problem(response, 404, "not_found").await;
    assert!(
        get(&app, &other, "/api/v1/webhooks").await["items"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    let response = app
        .authed(Method::DELETE, &format!("/api/v1/webhooks/{id}"), &user)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
}

#[tokio::test]
async fn quiet_hours_hold_deliveries_until_they_end() {
    let app = TestApp::spawn().await;
    let user = app.register_user().await;
    let (receiver, address) = Receiver::start(vec![]).await;
    register_webhook(&app, &user, address).await;
    let now = Utc::now();
    let start = (now - TimeDelta::hours(1)).format("%H:%M").to_string();
    let end = (now + TimeDelta::hours(2)).format("%H:%M").to_string();
    let preferences = expect_json(
        app.authed(Method::PUT, "/api/v1/notifications/preferences", &user)
            .json(&json!({"in_app": true, "email": false, "webhook": true,
                          "quiet_hours": {"start": start, "end": end}, "time_zone": "UTC"}))
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    assert_eq!(preferences["quiet_hours"]["end"], end);
    let response = app
        .authed(Method::PUT, "/api/v1/notifications/preferences", &user)
        .json(&json!({"in_app": true, "email": false, "webhook": true,
                      "quiet_hours": {"start": "25:00", "end": "7"}}))
        .send()
        .await
        .unwrap();
    let problem = expect_problem(response, 422, "validation_failed").await;
    assert_eq!(problem["errors"].as_array().unwrap().len(), 2);

    app.create_task(
        &user,
        json!({"title": "Quiet", "reminders": [{"at": instant(TimeDelta::milliseconds(200))}]}),
    )
    .await;
    feed_with(&app, &user, 1).await; // the feed is silent and immediate
    let pending = eventually(Duration::from_secs(10), "a held delivery", || async {
        let all = deliveries(&app, &user, "?status=pending").await;
        (!all.is_empty()).then_some(all)
    })
    .await;
    let next: DateTime<Utc> = pending[0]["next_attempt_at"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        next > now + TimeDelta::minutes(30),
        "held until quiet hours end: {next}"
    );
    assert_eq!(next.format("%H:%M").to_string(), end);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(receiver.requests().is_empty());
}

#[tokio::test]
async fn reminders_are_emailed_through_a_real_smtp_server() {
    let smtp = SmtpCapture::start().await;
    let app = TestApp::spawn_with(TestOptions {
        smtp: Some(taskflow_notify::SmtpSettings {
            host: "127.0.0.1".into(),
            port: smtp.port,
            security: taskflow_notify::SmtpSecurity::None,
            from: "TaskFlow <reminders@taskflow.test>".into(),
            timeout_secs: 10,
            ..Default::default()
        }),
        ..TestOptions::default()
    })
    .await;
    let user = app.register_user().await;
    expect_json(
        app.authed(Method::PUT, "/api/v1/notifications/preferences", &user)
            .json(&json!({"in_app": false, "email": true, "webhook": false,
                          "email_address": "me@example.org"}))
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    app.create_task(
        &user,
        json!({"title": "Renew <passport>", "due_at": instant(TimeDelta::hours(5)),
               "time_zone": "Europe/Berlin",
               "reminders": [{"at": instant(TimeDelta::milliseconds(300))}]}),
    )
    .await;
    let message = eventually(Duration::from_secs(15), "an e-mail", || async {
        smtp.messages().into_iter().next()
    })
    .await;
    assert_eq!(message["rcpt_tos"], json!(["me@example.org"]));
    assert_eq!(message["subject"], "Reminder: Renew <passport>");
    let parts = message["parts"].as_array().unwrap();
    let html = parts
        .iter()
        .find(|p| p["content_type"] == "text/html")
        .unwrap()["content"]
        .as_str()
        .unwrap();
    assert!(html.contains("Renew &lt;passport&gt;"), "{html}");
    assert!(parts.iter().any(|p| p["content_type"] == "text/plain"));
    let sent = eventually(Duration::from_secs(5), "the recorded delivery", || async {
        let all = deliveries(&app, &user, "?status=sent").await;
        (!all.is_empty()).then_some(all)
    })
    .await;
    assert_eq!(sent[0]["channel"], "email");
    assert!(
        notifications(&app, &user).await["items"]
            .as_array()
            .unwrap()
            .is_empty(),
        "in-app off"
    );
}

/// `crates/taskflow-notify/tests/channels/smtp_capture.py`, a real SMTP server (aiosmtpd).
struct SmtpCapture {
    _child: tokio::process::Child,
    port: u16,
    directory: PathBufGuard,
}

struct PathBufGuard(std::path::PathBuf);

impl Drop for PathBufGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl SmtpCapture {
    async fn start() -> Self {
        use tokio::io::AsyncBufReadExt as _;
        let directory =
            std::env::temp_dir().join(format!("taskflow-smtp-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&directory).unwrap();
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../taskflow-notify/tests/channels/smtp_capture.py"
        );
        let mut child = tokio::process::Command::new(taskflow_testing::test_python())
            .arg(script)
            .arg(&directory)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start smtp_capture.py (run scripts/install-test-deps.sh)");
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        tokio::time::timeout(
            Duration::from_secs(30),
            tokio::io::BufReader::new(stdout).read_line(&mut line),
        )
        .await
        .expect("smtp_capture.py reports its port (is aiosmtpd installed?)")
        .unwrap();
        let port = line.trim().strip_prefix("PORT ").unwrap().parse().unwrap();
        Self {
            _child: child,
            port,
            directory: PathBufGuard(directory),
        }
    }

    fn messages(&self) -> Vec<Value> {
        let mut files: Vec<_> = std::fs::read_dir(&self.directory.0)
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        files.sort();
        files
            .iter()
            .filter_map(|p| serde_json::from_str(&std::fs::read_to_string(p).ok()?).ok())
            .collect()
    }
}
