//! Recurring tasks over HTTP: creation, exactly one next occurrence, series operations,
//! previews that match what completing produces, and bad rules.

use chrono::{DateTime, Datelike, Timelike, Utc};
use reqwest::Method;
use serde_json::{Value, json};
use taskflow_testing::{TestApp, TestUser};

async fn post(app: &TestApp, user: &TestUser, path: &str) -> (u16, Value) {
    let response = app.authed(Method::POST, path, user).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn get(app: &TestApp, user: &TestUser, path: &str) -> (u16, Value) {
    let response = app.authed(Method::GET, path, user).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn instant(value: &Value) -> DateTime<Utc> {
    value.as_str().unwrap().parse().unwrap()
}

async fn series(app: &TestApp, user: &TestUser, task: &Value) -> Vec<Value> {
    let (status, body) = get(
        app,
        user,
        &format!("/api/v1/series/{}", task["series_id"].as_str().unwrap()),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body["items"].as_array().unwrap().clone()
}

async fn daily_berlin(app: &TestApp, user: &TestUser) -> Value {
    // 27 March 2027, 09:00 in Berlin (UTC+1); DST starts on the 28th.
    app.create_task(
        user,
        json!({"title": "Stretch", "due_at": "2027-03-27T09:00:00+01:00", "time_zone": "Europe/Berlin",
               "tags": ["health"], "priority": "medium", "description": "10 minutes",
               "recurrence": {"rule": "daily"}}),
    )
    .await
}

#[tokio::test]
async fn a_recurring_task_shows_its_rule_and_series() {
    let app = TestApp::spawn().await;
    let user = app.register_user().await;
    let task = daily_berlin(&app, &user).await;
    assert_eq!(task["recurrence"]["rule"], "FREQ=DAILY");
    assert_eq!(task["recurrence"]["anchor"], "due");
    assert_eq!(task["recurrence"]["description"], "every day at 09:00");
    assert_eq!(task["recurrence"]["dtstart"], "2027-03-27T09:00:00");
    assert_eq!(task["occurrence_index"], 0);
    assert!(task["series_id"].is_string());

    let weekdays = app
        .create_task(&user, json!({"title": "Standup", "due_at": "2027-03-29T09:30:00+02:00", "time_zone": "Europe/Berlin", "recurrence": {"rule": "weekdays"}}))
        .await;
    assert_eq!(
        weekdays["recurrence"]["description"],
        "every weekday at 09:30"
    );

    let (_, list) = get(&app, &user, "/api/v1/tasks?recurring=true").await;
    assert_eq!(list["items"].as_array().unwrap().len(), 2);
    app.create_task(&user, json!({"title": "One-off"})).await;
    let (_, list) = get(&app, &user, "/api/v1/tasks?recurring=false").await;
    assert_eq!(list["items"][0]["title"], "One-off");
    let (_, list) = get(
        &app,
        &user,
        &format!(
            "/api/v1/tasks?series_id={}",
            task["series_id"].as_str().unwrap()
        ),
    )
    .await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn completing_creates_the_next_occurrence_at_the_same_local_time_across_dst() {
    let app = TestApp::spawn().await;
    let user = app.register_user().await;
    let mut current = daily_berlin(&app, &user).await;
    let berlin: chrono_tz::Tz = "Europe/Berlin".parse().unwrap();
    for day in [28, 29, 30] {
        let (status, done) = post(
            &app,
            &user,
            &format!("/api/v1/tasks/{}/complete", current["id"].as_str().unwrap()),
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(done["status"], "completed");
        let occurrences = series(&app, &user, &current).await;
        let next = occurrences.last().unwrap().clone();
        let local = instant(&next["due_at"]).with_timezone(&berlin);
        assert_eq!(
            (local.month(), local.day(), local.hour(), local.minute()),
            (3, day, 9, 0),
            "{next}"
        );
        assert_eq!(next["status"], "pending");
        assert_eq!(
            next["occurrence_index"],
            current["occurrence_index"].as_u64().unwrap() + 1
        );
        for field in [
            "title",
            "description",
            "priority",
            "tags",
            "time_zone",
            "recurrence",
            "series_id",
        ] {
            assert_eq!(next[field], current[field], "{field} carried over");
        }
        current = next;
    }
}

#[tokio::test]
async fn fifty_parallel_completions_create_exactly_one_next_occurrence() {
    let app = TestApp::spawn().await;
    let user = app.register_user().await;
    let task = daily_berlin(&app, &user).await;
    let path = format!("/api/v1/tasks/{}/complete", task["id"].as_str().unwrap());
    let requests = (0..50).map(|_| {
        let request = app.authed(Method::POST, &path, &user);
        async move { request.send().await.unwrap().status().as_u16() }
    });
    let statuses = futures::future::join_all(requests).await;
    // The first wins; every other request sees the occurrence already completed and answers
    // 200 with it unchanged (success with no change).
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    let occurrences = series(&app, &user, &task).await;
    assert_eq!(occurrences.len(), 2, "{occurrences:?}");
    assert_eq!(occurrences[0]["version"], 2, "completed once");

    // Racing completions that carry If-Match: one wins, the rest get 412.
    let next = occurrences[1].clone();
    let path = format!("/api/v1/tasks/{}/complete", next["id"].as_str().unwrap());
    let requests = (0..20).map(|_| {
        let request = app
            .authed(Method::POST, &path, &user)
            .header("if-match", "\"1\"");
        async move { request.send().await.unwrap().status().as_u16() }
    });
    let statuses = futures::future::join_all(requests).await;
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        1,
        "{statuses:?}"
    );
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 412),
        "{statuses:?}"
    );
    assert_eq!(series(&app, &user, &task).await.len(), 3);
}

#[tokio::test]
async fn reopening_and_completing_again_does_not_create_another_occurrence() {
    let app = TestApp::spawn().await;
    let user = app.register_user().await;
    let task = daily_berlin(&app, &user).await;
    let id = task["id"].as_str().unwrap();
    assert_eq!(
        post(&app, &user, &format!("/api/v1/tasks/{id}/complete"))
            .await
            .0,
        200
    );
    let (status, reopened) = post(&app, &user, &format!("/api/v1/tasks/{id}/reopen")).await;
    assert_eq!(
        (status, reopened["status"].as_str()),
        (200, Some("pending"))
    );
    assert_eq!(
        post(&app, &user, &format!("/api/v1/tasks/{id}/complete"))
            .await
            .0,
        200
    );
    assert_eq!(series(&app, &user, &task).await.len(), 2);
}

#[tokio::test]
async fn a_series_ends_when_count_or_until_is_exhausted() {
    let app = TestApp::spawn().await;
    let user = app.register_user().await;
    let counted = app
        .create_task(&user, json!({"title": "Twice", "due_at": "2027-01-04T08:00:00Z", "recurrence": {"rule": "weekly", "ends": {"count": 2}}}))
        .await;
    assert_eq!(counted["recurrence"]["rule"], "FREQ=WEEKLY;COUNT=2");
    post(
        &app,
        &user,
        &format!("/api/v1/tasks/{}/complete", counted["id"].as_str().unwrap()),
    )
    .await;
    let occurrences = series(&app, &user, &counted).await;
    assert_eq!(occurrences.len(), 2);
    post(
        &app,
        &user,
        &format!(
            "/api/v1/tasks/{}/complete",
            occurrences[1]["id"].as_str().unwrap()
        ),
    )
    .await;
    assert_eq!(
        series(&app, &user, &counted).await.len(),
        2,
        "COUNT=2 makes two occurrences in all"
    );

    let until = app
        .create_task(
            &user,
            json!({"title": "Until", "due_at": "2027-01-04T08:00:00Z",
            "recurrence": {"rule": "daily", "ends": {"until": "2027-01-05T08:00:00Z"}}}),
        )
        .await;
    post(
        &app,
        &user,
        &format!("/api/v1/tasks/{}/complete", until["id"].as_str().unwrap()),
    )
    .await;
    let occurrences = series(&app, &user, &until).await;
    assert_eq!(occurrences.len(), 2);
    post(
        &app,
        &user,
        &format!(
            "/api/v1/tasks/{}/complete",
            occurrences[1]["id"].as_str().unwrap()
        ),
    )
    .await;
    assert_eq!(series(&app, &user, &until).await.len(), 2);
}

#[tokio::test]
async fn skip_cancel_and_patch_act_on_the_series() {
    let app = TestApp::spawn().await;
    let user = app.register_user().await;
    let task = daily_berlin(&app, &user).await;
    let (status, skipped) = post(
        &app,
        &user,
        &format!("/api/v1/tasks/{}/skip", task["id"].as_str().unwrap()),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(skipped["status"], "skipped");
    assert!(skipped["completed_at"].is_null());
    let occurrences = series(&app, &user, &task).await;
    assert_eq!(occurrences.len(), 2);
    let next = &occurrences[1];
    let (_, skipped) = get(&app, &user, "/api/v1/tasks?status=skipped").await;
    assert_eq!(skipped["items"].as_array().unwrap().len(), 1);

    // PATCH the rule: this and future occurrences follow it.
    let response = app
        .authed(
            Method::PATCH,
            &format!("/api/v1/tasks/{}", next["id"].as_str().unwrap()),
            &user,
        )
        .json(&json!({"recurrence": {"rule": "FREQ=WEEKLY;BYDAY=MO,FR"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let patched: Value = response.json().await.unwrap();
    assert_eq!(patched["recurrence"]["rule"], "FREQ=WEEKLY;BYDAY=MO,FR");
    assert_eq!(patched["series_id"], task["series_id"]);
    let (_, preview) = get(
        &app,
        &user,
        &format!(
            "/api/v1/tasks/{}/occurrences?limit=3",
            next["id"].as_str().unwrap()
        ),
    )
    .await;
    let weekdays: Vec<String> = preview["items"].as_array().unwrap()[1..]
        .iter()
        .map(|o| instant(&o["due_at"]).weekday().to_string())
        .collect();
    assert_eq!(weekdays, vec!["Mon", "Fri"]);

    // Cancel: this occurrence stays, nothing follows it.
    let (status, cancelled) = post(
        &app,
        &user,
        &format!(
            "/api/v1/tasks/{}/recurrence/cancel",
            next["id"].as_str().unwrap()
        ),
    )
    .await;
    assert_eq!(status, 200);
    assert!(cancelled["recurrence"].is_null());
    assert_eq!(cancelled["status"], "pending");
    post(
        &app,
        &user,
        &format!("/api/v1/tasks/{}/complete", next["id"].as_str().unwrap()),
    )
    .await;
    assert_eq!(series(&app, &user, &task).await.len(), 2);
    let (status, body) = post(
        &app,
        &user,
        &format!("/api/v1/tasks/{}/skip", next["id"].as_str().unwrap()),
    )
    .await;
    assert_eq!(
        status, 200,
        "skipping a closed occurrence changes nothing: {body}"
    );
}

#[tokio::test]
async fn preview_is_bounded_and_needs_a_recurring_task() {
    let app = TestApp::spawn().await;
    let user = app.register_user().await;
    let task = daily_berlin(&app, &user).await;
    let id = task["id"].as_str().unwrap();
    let (status, preview) = get(
        &app,
        &user,
        &format!("/api/v1/tasks/{id}/occurrences?limit=100"),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(preview["items"].as_array().unwrap().len(), 100);
    assert_eq!(preview["items"][1]["local"], "2027-03-28T09:00:00");
    assert_eq!(
        preview["items"][1]["due_at"], "2027-03-28T07:00:00Z",
        "after the DST change"
    );
    for bad in ["0", "101", "-1", "x"] {
        assert_eq!(
            get(
                &app,
                &user,
                &format!("/api/v1/tasks/{id}/occurrences?limit={bad}")
            )
            .await
            .0,
            400,
            "{bad}"
        );
    }
    let plain = app.create_task(&user, json!({"title": "Plain"})).await;
    let (status, body) = get(
        &app,
        &user,
        &format!(
            "/api/v1/tasks/{}/occurrences",
            plain["id"].as_str().unwrap()
        ),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (409, Some("not_recurring"))
    );
    let other = app.register_user().await;
    assert_eq!(
        get(&app, &other, &format!("/api/v1/tasks/{id}/occurrences"))
            .await
            .0,
        404
    );
    assert_eq!(
        get(
            &app,
            &other,
            &format!("/api/v1/series/{}", task["series_id"].as_str().unwrap())
        )
        .await
        .0,
        404
    );
}

/// A small deterministic generator, so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % bound
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.next(items.len() as u64) as usize]
    }
}

fn random_rule(rng: &mut Rng) -> String {
    let freq = rng.pick(&["DAILY", "WEEKLY", "MONTHLY", "YEARLY"]);
    let mut rule = format!("FREQ={freq};INTERVAL={}", 1 + rng.next(4));
    match freq {
        "WEEKLY" if rng.next(2) == 0 => rule.push_str(&format!(
            ";BYDAY={}",
            rng.pick(&["MO,WE,FR", "TU,TH", "SA,SU", "MO"])
        )),
        "MONTHLY" => rule.push_str(rng.pick(&[
            "",
            ";BYMONTHDAY=1,15",
            ";BYMONTHDAY=-1",
            ";BYDAY=-1FR",
            ";BYDAY=2TU",
            ";BYDAY=MO,TU,WE,TH,FR;BYSETPOS=-1",
        ])),
        "YEARLY" => {
            rule.push_str(rng.pick(&["", ";BYMONTH=3;BYDAY=-1SU", ";BYMONTH=1,7;BYMONTHDAY=31"]))
        }
        _ => {}
    }
    if rng.next(3) == 0 {
        rule.push_str(&format!(";COUNT={}", 3 + rng.next(5)));
    }
    rule
}

#[tokio::test]
async fn previews_match_the_occurrences_completing_creates() {
    let app = TestApp::spawn().await;
    let user = app.register_user().await;
    let zones = [
        "Europe/Berlin",
        "Europe/London",
        "America/New_York",
        "Australia/Lord_Howe",
        "Asia/Kolkata",
        "UTC",
    ];
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for case in 0..24 {
        let rule = random_rule(&mut rng);
        let zone = zones[case % zones.len()];
        let due = format!(
            "2027-{:02}-{:02}T{:02}:30:00Z",
            1 + rng.next(12),
            1 + rng.next(28),
            rng.next(24)
        );
        let task = app
            .create_task(&user, json!({"title": format!("case {case}"), "due_at": due, "time_zone": zone, "recurrence": {"rule": rule}}))
            .await;
        let (status, preview) = get(
            &app,
            &user,
            &format!(
                "/api/v1/tasks/{}/occurrences?limit=6",
                task["id"].as_str().unwrap()
            ),
        )
        .await;
        assert_eq!(status, 200, "{rule} {zone}: {preview}");
        let expected: Vec<DateTime<Utc>> = preview["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| instant(&o["due_at"]))
            .collect();
        assert!(
            expected.windows(2).all(|w| w[0] < w[1]),
            "{rule} {zone}: strictly increasing {expected:?}"
        );

        let mut current = task.clone();
        let mut created = vec![instant(&task["due_at"])];
        for _ in 1..expected.len() {
            post(
                &app,
                &user,
                &format!("/api/v1/tasks/{}/complete", current["id"].as_str().unwrap()),
            )
            .await;
            let occurrences = series(&app, &user, &task).await;
            current = occurrences.last().unwrap().clone();
            created.push(instant(&current["due_at"]));
        }
        assert_eq!(created, expected, "{rule} in {zone} from {due}");
    }
}

#[tokio::test]
async fn bad_recurrences_are_refused_and_nothing_is_stored() {
    let app = TestApp::spawn().await;
    let user = app.register_user().await;
    let due = "2027-01-04T08:00:00Z";
    let cases = [
        (
            json!({"title": "x", "due_at": due, "recurrence": {"rule": "FREQ=SOMETIMES"}}),
            "recurrence.rule",
            "invalid_rrule",
        ),
        (
            json!({"title": "x", "due_at": due, "recurrence": {"rule": "fortnightly"}}),
            "recurrence.rule",
            "invalid_rrule",
        ),
        (
            json!({"title": "x", "due_at": due, "recurrence": {"rule": "FREQ=HOURLY"}}),
            "recurrence.rule",
            "unsupported_frequency",
        ),
        (
            json!({"title": "x", "due_at": due, "recurrence": {"rule": "FREQ=DAILY;UNTIL=20260101T000000Z"}}),
            "recurrence",
            "until_before_start",
        ),
        (
            json!({"title": "x", "due_at": due, "recurrence": {"rule": "FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=30"}}),
            "recurrence.rule",
            "no_occurrences",
        ),
        (
            json!({"title": "x", "recurrence": {"rule": "daily"}}),
            "due_at",
            "required_for_recurrence",
        ),
        (
            json!({"title": "x", "due_at": due, "recurrence": {"rule": "daily", "anchor": "whenever"}}),
            "recurrence.anchor",
            "invalid",
        ),
        (
            json!({"title": "x", "due_at": due, "recurrence": {"rule": "daily", "ends": {"count": 2, "until": due}}}),
            "recurrence.ends",
            "invalid",
        ),
        (
            json!({"title": "x", "due_at": due, "recurrence": {"rule": "FREQ=DAILY;COUNT=3", "ends": {"count": 2}}}),
            "recurrence.ends",
            "conflict",
        ),
        (
            json!({"title": "x", "due_at": due, "time_zone": "Mars/Olympus", "recurrence": {"rule": "daily"}}),
            "time_zone",
            "invalid_time_zone",
        ),
    ];
    for (body, field, code) in cases {
        let response = app
            .authed(Method::POST, "/api/v1/tasks", &user)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 422, "{body}");
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
        let problem: Value = response.json().await.unwrap();
        let errors = problem["errors"].as_array().unwrap();
        assert!(
            errors
                .iter()
                .any(|e| e["field"] == field && e["code"] == code),
            "{body}: expected {field}/{code} in {problem}"
        );
    }
    let (_, list) = get(&app, &user, "/api/v1/tasks").await;
    assert!(
        list["items"].as_array().unwrap().is_empty(),
        "nothing stored: {list}"
    );

    // A PATCH with a bad rule leaves the task as it was.
    let task = daily_berlin(&app, &user).await;
    let response = app
        .authed(
            Method::PATCH,
            &format!("/api/v1/tasks/{}", task["id"].as_str().unwrap()),
            &user,
        )
        .json(&json!({"recurrence": {"rule": "FREQ=MINUTELY"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 422);
    let (_, after) = get(
        &app,
        &user,
        &format!("/api/v1/tasks/{}", task["id"].as_str().unwrap()),
    )
    .await;
    assert_eq!(after, task);
    // Removing the due date of a recurring task is refused too.
    let response = app
        .authed(
            Method::PATCH,
            &format!("/api/v1/tasks/{}", task["id"].as_str().unwrap()),
            &user,
        )
        .json(&json!({"due_at": null}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 422);
}

#[tokio::test]
async fn a_completion_anchored_series_counts_from_the_day_it_was_done() {
    let app = TestApp::spawn().await;
    let user = app.register_user().await;
    let berlin: chrono_tz::Tz = "Europe/Berlin".parse().unwrap();
    // Due two days ago at 18:00 Berlin time; "every 3 days" from whenever it is done.
    let two_days_ago =
        (chrono::Utc::now().with_timezone(&berlin) - chrono::TimeDelta::days(2)).date_naive();
    let due = two_days_ago
        .and_hms_opt(18, 0, 0)
        .unwrap()
        .and_local_timezone(berlin)
        .earliest()
        .unwrap();
    let task = app
        .create_task(&user, json!({"title": "Water plants", "due_at": due.to_rfc3339(), "time_zone": "Europe/Berlin",
            "recurrence": {"rule": "FREQ=DAILY;INTERVAL=3", "anchor": "completion"}}))
        .await;
    assert_eq!(task["recurrence"]["anchor"], "completion");
    let completed_on = chrono::Utc::now().with_timezone(&berlin).date_naive();
    post(
        &app,
        &user,
        &format!("/api/v1/tasks/{}/complete", task["id"].as_str().unwrap()),
    )
    .await;
    let occurrences = series(&app, &user, &task).await;
    let next = instant(&occurrences[1]["due_at"]).with_timezone(&berlin);
    assert_eq!(
        next.date_naive(),
        completed_on + chrono::TimeDelta::days(3),
        "three days after completion, not after the due date"
    );
    assert_eq!(
        (next.hour(), next.minute()),
        (18, 0),
        "the task's time of day is kept"
    );
}

#[tokio::test]
async fn an_unsaved_rule_is_described_and_previewed() {
    let app = TestApp::spawn().await;
    let user = app.register_user().await;
    let preview = |body: Value| {
        let app = &app;
        let user = &user;
        async move {
            let response = app
                .authed(Method::POST, "/api/v1/recurrence/preview", user)
                .json(&body)
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.unwrap())
        }
    };
    // Across the start of daylight saving time the wall-clock time stays 09:00.
    let (status, body) = preview(json!({
        "recurrence": {"rule": "daily"}, "due_at": "2027-03-27T09:00:00+01:00",
        "time_zone": "Europe/Berlin", "limit": 3
    }))
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["description"], "every day at 09:00");
    assert_eq!(body["time_zone"], "Europe/Berlin");
    let items = body["items"].as_array().unwrap();
    let due: Vec<&str> = items
        .iter()
        .map(|o| o["due_at"].as_str().unwrap())
        .collect();
    assert_eq!(
        due,
        [
            "2027-03-27T08:00:00Z",
            "2027-03-28T07:00:00Z",
            "2027-03-29T07:00:00Z"
        ]
    );
    assert_eq!(items[1]["local"], "2027-03-28T09:00:00");

    // A rule with an end, in the account's zone by default; five previews by default.
    let (status, body) = preview(json!({
        "recurrence": {"rule": "FREQ=WEEKLY;BYDAY=MO,TH", "ends": {"count": 3}},
        "due_at": "2027-03-29T09:30:00Z"
    }))
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["items"].as_array().unwrap().len(), 3, "{body}");

    // Bad rules and fields answer 422 naming the field.
    let (status, body) = preview(json!({
        "recurrence": {"rule": "FREQ=HOURLY"}, "due_at": "2027-03-29T09:30:00Z"
    }))
    .await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["errors"][0]["field"]
            .as_str()
            .unwrap()
            .starts_with("recurrence"),
        "{body}"
    );
    let (status, body) = preview(json!({
        "recurrence": {"rule": "daily"}, "due_at": "tomorrow", "limit": 0
    }))
    .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["errors"].as_array().unwrap().len(), 2, "{body}");
}
