//! Quick add over HTTP: `POST /api/v1/tasks/quick`. A table of phrases checks that the
//! endpoint answers exactly what the parser library understands at the server's "now" and
//! creates a task carrying it; the issue's examples are checked field by field; bad input gets
//! problem+json with stable codes; random text never panics or answers 500.

use std::sync::Arc;

use chrono::{DateTime, TimeZone as _, Utc};
use proptest::prelude::*;
use reqwest::Method;
use serde_json::{Value, json};
use taskflow_domain::{Clock, ManualClock};
use taskflow_quickadd::{Anchor, ParsedReminder, QuickAddInput, parse};
use taskflow_testing::{TestApp, TestOptions, TestUser};

use crate::support::{error_code, expect_json, expect_problem};

const ZONE: &str = "Europe/Berlin";

/// Monday 4 January 2027, 10:00 in Berlin: a fixed "now" in the future of the real clock
/// (access tokens issued at it stay valid).
fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2027, 1, 4, 9, 0, 0).unwrap()
}

async fn app_at_fixed_now() -> TestApp {
    let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(now()));
    TestApp::spawn_with(TestOptions {
        clock: Some(clock),
        ..TestOptions::default()
    })
    .await
}

async fn quick(app: &TestApp, user: &TestUser, body: Value) -> reqwest::Response {
    app.authed(Method::POST, "/api/v1/tasks/quick", user)
        .json(&body)
        .send()
        .await
        .unwrap()
}

/// At least 100 phrases: the issue's examples, dates, times, recurrences, tags, priorities,
/// reminders, and text the grammar must leave alone.
const PHRASES: &[&str] = &[
    "Pay rent every month on the 1st at 9am #finance !high remind me 1 day before",
    "standup every weekday at 9:30 #work",
    "call mom tomorrow 6pm",
    "taxes by apr 15 !urgent",
    "water plants every 3 days from completion",
    "buy milk",
    "buy milk today",
    "buy milk tonight",
    "dentist tomorrow at 3pm",
    "dentist tmrw 15:00",
    "report friday",
    "report on friday at noon",
    "report this friday",
    "report next friday",
    "meeting next week",
    "party this weekend",
    "clean garage next weekend",
    "invoice next month",
    "plan next year",
    "review end of month",
    "close books end of the year",
    "follow up in 3 days",
    "follow up in two weeks",
    "check oven in 20 minutes",
    "call back in an hour",
    "renew passport in 2 months",
    "pay bill on the 15th",
    "pay bill by the 1st",
    "dinner jan 5",
    "dinner 5 jan",
    "dinner january 5th",
    "dinner 5th of january",
    "trip feb 29",
    "conference 2027-03-15",
    "conference 12/01",
    "conference 12/01/2027",
    "lunch at noon",
    "sleep at midnight",
    "gym at 6",
    "gym @ 7",
    "gym at 18:00",
    "read in the morning",
    "walk in the afternoon",
    "cook in the evening",
    "tomorrow morning run",
    "friday evening drinks",
    "monday night football",
    "breakfast 8am",
    "breakfast 8 am",
    "call 9:30pm",
    "backup 12am",
    "stretch every day",
    "stretch daily",
    "vitamins every morning",
    "journal every night",
    "weekly review every week",
    "pay rent monthly #home",
    "weekly report",
    "water lawn every other week",
    "sync every 2 weeks",
    "team lunch biweekly",
    "newsletter fortnightly",
    "budget every month",
    "birthday every year",
    "anniversary yearly",
    "insurance annually",
    "plants every 4 days",
    "gym every monday",
    "gym every mon, wed and fri",
    "trash every other tuesday",
    "1:1 every 2 weeks on monday",
    "groceries weekly on friday",
    "payday every 15th",
    "bills every 1st and 15th",
    "rent every month on the 1st",
    "close every last day of the month",
    "payroll every last friday",
    "board meeting every 2nd tuesday",
    "book club monthly on the first monday",
    "mom's birthday every jan 5",
    "anniversary every 5th of january",
    "tax return every year on apr 15",
    "water plants every! 3 days",
    "mow lawn every week after completion",
    "meds every day until jan 31",
    "class every tuesday for 10 times",
    "class every thursday 8 times",
    "training every monday starting feb 1",
    "yoga every wednesday from jan 20",
    "standup every weekday at 9am",
    "weekend hike every weekend",
    "report #work",
    "report #work #urgent-stuff",
    "C# homework",
    "read http://example.com/#anchor",
    "task #a#b",
    "fix bug !high",
    "fix bug !low",
    "fix bug !medium",
    "fix bug !urgent",
    "fix bug !p1",
    "fix bug !p2",
    "fix bug !p3",
    "fix bug !p4",
    "wow!!! that is great",
    "flight friday 7am remind me 2 hours before",
    "exam monday remind me 1 week before",
    "call tomorrow remind me 30 minutes before",
    "pitch thursday 10am remind me the day before",
    "visa renewal remind me at 8am",
    "dentist friday remind me tomorrow at 7pm",
    "party saturday remind me friday",
    "pizza remind me in 2 hours",
    "ship release remind me an hour ahead",
    "meet Monday Jones",
    "meet monday",
    "tomorrow",
    "#only #tags",
    "!high",
    "email bob, tomorrow, then call",
    "(call mom tomorrow)",
    "📞 call mom tomorrow 6pm 🎉",
    "Köln trip on 3 march",
    "buy 2 apples",
    "every",
    "due",
    "at",
    "remind me",
    "in 999999999 days",
    "every 0 days",
    "jan 32",
    "13/45/2027",
    "25:00 meeting",
];

fn reminders_json(reminders: &[ParsedReminder]) -> Value {
    Value::Array(
        reminders
            .iter()
            .map(|r| match r {
                ParsedReminder::BeforeDue(iso) => json!({ "before_due": iso }),
                ParsedReminder::At(at) => json!({ "at": at }),
            })
            .collect(),
    )
}

#[tokio::test]
async fn every_phrase_of_the_table_creates_the_task_the_parser_understood() {
    assert!(
        PHRASES.len() >= 100,
        "the table has {} phrases",
        PHRASES.len()
    );
    let app = app_at_fixed_now().await;
    let user = app.register_user().await;
    let mut failures = Vec::new();
    for text in PHRASES {
        let expected = parse(&QuickAddInput {
            text,
            now: now(),
            time_zone: chrono_tz::Europe::Berlin,
        });
        let response = quick(&app, &user, json!({ "text": text, "time_zone": ZONE })).await;
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap();
        if expected.title.is_empty() {
            // Only tags or a priority: no title to create a task with.
            if status != 422 || error_code(&body, "text").as_deref() != Some("empty") {
                failures.push(format!(
                    "{text:?}: expected 422 text/empty, got {status}: {body}"
                ));
            }
            continue;
        }
        if status != 201 {
            failures.push(format!("{text:?}: status {status}: {body}"));
            continue;
        }
        let parsed = &body["parsed"];
        let task = &body["task"];
        let due = expected.due_at.map(|d| json!(d)).unwrap_or(Value::Null);
        let rule = expected
            .recurrence
            .as_ref()
            .map(|r| json!(r.rule))
            .unwrap_or(Value::Null);
        let anchor = expected.recurrence.as_ref().map(|r| match r.anchor {
            Anchor::Due => "due",
            Anchor::Completion => "completion",
        });
        let checks = [
            (
                "parsed.title",
                parsed["title"].clone(),
                json!(expected.title),
            ),
            ("task.title", task["title"].clone(), json!(expected.title)),
            ("parsed.due_at", parsed["due_at"].clone(), due.clone()),
            ("task.due_at", task["due_at"].clone(), due),
            (
                "parsed.due_has_time",
                parsed["due_has_time"].clone(),
                json!(expected.due_has_time),
            ),
            (
                "parsed.rule",
                parsed["recurrence"]["rule"].clone(),
                rule.clone(),
            ),
            ("task.rule", task["recurrence"]["rule"].clone(), rule),
            (
                "task.anchor",
                task["recurrence"]["anchor"].clone(),
                anchor.map(|a| json!(a)).unwrap_or(Value::Null),
            ),
            ("parsed.tags", parsed["tags"].clone(), json!(expected.tags)),
            ("task.tags", task["tags"].clone(), json!(expected.tags)),
            (
                "task.priority",
                task["priority"].clone(),
                json!(expected.priority.unwrap_or("none")),
            ),
            (
                "parsed.reminders",
                parsed["reminders"].clone(),
                reminders_json(&expected.reminders),
            ),
            ("task.time_zone", task["time_zone"].clone(), json!(ZONE)),
            (
                "understood",
                json!(parsed["understood"].as_array().unwrap().len()),
                json!(expected.understood.len()),
            ),
        ];
        for (what, got, want) in checks {
            if got != want {
                failures.push(format!("{text:?}: {what} = {got}, expected {want}"));
            }
        }
        // Every reminder phrase becomes part of the task's plan, unless the task cannot carry
        // it (e.g. an instant already past), which is then reported as not applied.
        let not_applied = body["not_applied"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|n| n["kind"] == "reminder")
            .count();
        let applied = if not_applied == 0 {
            reminders_json(&expected.reminders)
        } else {
            json!([])
        };
        if task["reminders"] != applied {
            failures.push(format!(
                "{text:?}: task.reminders = {}, expected {applied} ({not_applied} not applied)",
                task["reminders"]
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} problems:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[tokio::test]
async fn the_issue_examples_are_understood_field_by_field() {
    let app = app_at_fixed_now().await;
    let user = app.register_user().await;

    let body = expect_json(
        quick(
            &app,
            &user,
            json!({ "text": "Pay rent every month on the 1st at 9am #finance !high remind me 1 day before", "time_zone": ZONE }),
        )
        .await,
        201,
    )
    .await;
    let task = &body["task"];
    assert_eq!(task["title"], "Pay rent");
    assert_eq!(task["due_at"], "2027-02-01T08:00:00Z"); // 09:00 Berlin (UTC+1)
    assert_eq!(task["recurrence"]["rule"], "FREQ=MONTHLY;BYMONTHDAY=1");
    assert_eq!(task["recurrence"]["anchor"], "due");
    assert_eq!(task["recurrence"]["dtstart"], "2027-02-01T09:00:00");
    assert_eq!(task["tags"], json!(["finance"]));
    assert_eq!(task["priority"], "high");
    assert_eq!(
        body["parsed"]["reminders"],
        json!([{ "before_due": "P1D" }])
    );
    assert_eq!(task["reminders"], json!([{ "before_due": "P1D" }]));
    assert!(body["not_applied"].as_array().unwrap().is_empty(), "{body}");

    let body = expect_json(
        quick(
            &app,
            &user,
            json!({ "text": "standup every weekday at 9:30 #work", "time_zone": ZONE }),
        )
        .await,
        201,
    )
    .await;
    assert_eq!(body["task"]["title"], "standup");
    assert_eq!(
        body["task"]["recurrence"]["rule"],
        "FREQ=WEEKLY;BYDAY=MO,TU,WE,TH,FR"
    );
    assert_eq!(body["task"]["due_at"], "2027-01-05T08:30:00Z"); // today's 09:30 has passed
    assert_eq!(body["task"]["tags"], json!(["work"]));

    let body = expect_json(
        quick(
            &app,
            &user,
            json!({ "text": "call mom tomorrow 6pm", "time_zone": ZONE }),
        )
        .await,
        201,
    )
    .await;
    assert_eq!(body["task"]["title"], "call mom");
    assert_eq!(body["task"]["due_at"], "2027-01-05T17:00:00Z");
    assert_eq!(body["parsed"]["due_has_time"], true);
    assert_eq!(body["task"]["recurrence"], Value::Null);

    let body = expect_json(
        quick(
            &app,
            &user,
            json!({ "text": "taxes by apr 15 !urgent", "time_zone": ZONE }),
        )
        .await,
        201,
    )
    .await;
    assert_eq!(body["task"]["title"], "taxes");
    assert_eq!(body["task"]["due_at"], "2027-04-15T21:59:00Z"); // end of the day, CEST
    assert_eq!(body["parsed"]["due_has_time"], false);
    assert_eq!(body["task"]["priority"], "urgent");

    let body = expect_json(
        quick(
            &app,
            &user,
            json!({ "text": "water plants every 3 days from completion", "time_zone": ZONE }),
        )
        .await,
        201,
    )
    .await;
    assert_eq!(body["task"]["title"], "water plants");
    assert_eq!(body["task"]["recurrence"]["rule"], "FREQ=DAILY;INTERVAL=3");
    assert_eq!(body["task"]["recurrence"]["anchor"], "completion");
    assert!(body["not_applied"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn a_dry_run_parses_without_creating_and_the_account_zone_is_the_default() {
    let app = app_at_fixed_now().await;
    let user = app.register_user().await; // registered without a zone: UTC
    let body = expect_json(
        quick(
            &app,
            &user,
            json!({ "text": "call mom tomorrow 6pm #family", "dry_run": true }),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(body["task"], Value::Null);
    assert_eq!(body["parsed"]["title"], "call mom");
    assert_eq!(body["parsed"]["time_zone"], "UTC");
    assert_eq!(body["parsed"]["due_at"], "2027-01-05T18:00:00Z");
    assert_eq!(body["parsed"]["understood"][0]["kind"], "due");
    assert_eq!(body["parsed"]["understood"][0]["text"], "tomorrow 6pm");
    let list = expect_json(
        app.authed(Method::GET, "/api/v1/tasks", &user)
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    assert!(list["items"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn a_reminder_no_task_can_have_is_reported_not_refused() {
    let app = app_at_fixed_now().await;
    let user = app.register_user().await;
    let body = expect_json(
        quick(
            &app,
            &user,
            json!({ "text": "renew passport dec 1 remind me 400 days before", "dry_run": true }),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(body["parsed"]["title"], "renew passport");
    let not_applied = body["not_applied"].as_array().unwrap();
    assert_eq!(not_applied.len(), 1, "{body}");
    assert_eq!(not_applied[0]["kind"], "reminder");
    assert!(
        not_applied[0]["reason"]
            .as_str()
            .unwrap()
            .contains("366 days"),
        "{body}"
    );
}

#[tokio::test]
async fn bad_input_is_problem_json_with_stable_codes() {
    let app = app_at_fixed_now().await;
    let user = app.register_user().await;
    for (body, field, code) in [
        (json!({ "text": "" }), "text", "empty"),
        (json!({ "text": "   " }), "text", "empty"),
        (json!({ "text": "x".repeat(501) }), "text", "too_long"),
        (
            json!({ "text": "milk", "time_zone": "Mars/Olympus" }),
            "time_zone",
            "invalid_time_zone",
        ),
        (
            json!({ "text": "milk", "colour": "red" }),
            "colour",
            "unknown_field",
        ),
        (json!({ "text": 5 }), "text", "invalid_type"),
        (json!({}), "text", "required"),
    ] {
        let problem = expect_problem(
            quick(&app, &user, body.clone()).await,
            422,
            "validation_failed",
        )
        .await;
        assert_eq!(
            error_code(&problem, field).as_deref(),
            Some(code),
            "{body}: {problem}"
        );
    }
    let response = app
        .client
        .post(app.url("/api/v1/tasks/quick"))
        .json(&json!({ "text": "milk" }))
        .send()
        .await
        .unwrap();
    expect_problem(response, 401, "missing_token").await;
    // A control character stays in the title, which refuses it: the error names `text`.
    let problem = expect_problem(
        quick(&app, &user, json!({ "text": "milk\u{7}" })).await,
        422,
        "validation_failed",
    )
    .await;
    assert_eq!(
        error_code(&problem, "text").as_deref(),
        Some("invalid_characters")
    );
}

#[tokio::test]
async fn quick_add_spends_the_task_creation_budget() {
    let app = TestApp::spawn_with(TestOptions {
        rate_limit: taskflow_http::rate_limit::RateLimitSettings {
            task_create_per_minute: 1,
            task_create_burst: 2,
            ..taskflow_http::rate_limit::RateLimitSettings::default()
        },
        ..TestOptions::default()
    })
    .await;
    let user = app.register_user().await;
    for _ in 0..2 {
        expect_json(quick(&app, &user, json!({ "text": "milk" })).await, 201).await;
    }
    let response = quick(&app, &user, json!({ "text": "milk" })).await;
    assert!(response.headers().contains_key("retry-after"));
    expect_problem(response, 429, "rate_limited").await;
    // A dry run creates nothing and is not counted against the creation budget.
    expect_json(
        quick(&app, &user, json!({ "text": "milk", "dry_run": true })).await,
        200,
    )
    .await;
}

#[tokio::test]
async fn another_users_quick_added_task_stays_theirs() {
    let app = app_at_fixed_now().await;
    let ann = app.register_user().await;
    let bob = app.register_user().await;
    let body = expect_json(
        quick(&app, &ann, json!({ "text": "secret tomorrow #private" })).await,
        201,
    )
    .await;
    let id = body["task"]["id"].as_str().unwrap();
    let response = app
        .authed(Method::GET, &format!("/api/v1/tasks/{id}"), &bob)
        .send()
        .await
        .unwrap();
    expect_problem(response, 404, "not_found").await;
}

fn random_text() -> impl Strategy<Value = String> {
    let word = prop_oneof![
        Just("every".to_owned()),
        Just("tomorrow".to_owned()),
        Just("at".to_owned()),
        Just("9am".to_owned()),
        Just("remind me".to_owned()),
        Just("before".to_owned()),
        Just("#tag".to_owned()),
        Just("!high".to_owned()),
        Just("from completion".to_owned()),
        Just("on the 31st".to_owned()),
        Just("until".to_owned()),
        Just("feb 29".to_owned()),
        "[0-9]{1,12}",
        "#[a-z\\-_/]{0,70}",
        "\\PC{0,12}",
        "[\\x00-\\x1f]{1,3}",
    ];
    prop::collection::vec(word, 0..14).prop_map(|words| words.join(" "))
}

#[test]
fn random_text_never_answers_500() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (app, user) = runtime.block_on(async {
        let app = app_at_fixed_now().await;
        let user = app.register_user().await;
        (app, user)
    });
    let config = ProptestConfig {
        cases: 96,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    proptest!(config, |(text in random_text(), dry_run in any::<bool>())| {
        let status = runtime.block_on(async {
            quick(&app, &user, json!({ "text": text, "dry_run": dry_run, "time_zone": ZONE }))
                .await
                .status()
                .as_u16()
        });
        prop_assert!(matches!(status, 200 | 201 | 422), "{text:?} answered {status}");
    });
    drop(app);
}
