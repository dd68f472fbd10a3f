//! Listing: filters, sorting (nulls last, ties by id), full-text search, cursor pagination, tag counts.

// Helpers outside `#[test]` functions unwrap too: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::cmp::Ordering;
use std::collections::HashSet;

use chrono::{DateTime, Utc};
use reqwest::Method;
use serde_json::{Value, json};
use taskflow_testing::{TestApp, TestUser};

use crate::support::{error_fields, expect_json, expect_problem, ids, list, titles};

const SORTS: [&str; 5] = ["due_at", "priority", "created_at", "updated_at", "title"];

fn sorted(mut values: Vec<String>) -> Vec<String> {
    values.sort();
    values
}

fn strings(values: &[&str]) -> Vec<String> {
    sorted(values.iter().map(|s| (*s).to_owned()).collect())
}

fn instant(value: &Value) -> Option<DateTime<Utc>> {
    value.as_str().map(|s| s.parse().unwrap())
}

fn rank(task: &Value) -> usize {
    ["none", "low", "medium", "high", "urgent"]
        .iter()
        .position(|p| task["priority"] == *p)
        .unwrap()
}

/// The order the API promises: by `sort` in `direction`, tasks without a due date last in both
/// directions, ties broken by id in the same direction.
fn expected_order(tasks: &[Value], sort: &str, descending: bool) -> Vec<String> {
    let mut tasks = tasks.to_vec();
    tasks.sort_by(|a, b| {
        let directed = |ordering: Ordering| {
            if descending {
                ordering.reverse()
            } else {
                ordering
            }
        };
        let key = match sort {
            "due_at" => match (instant(&a["due_at"]), instant(&b["due_at"])) {
                (Some(x), Some(y)) => x.cmp(&y),
                (None, None) => Ordering::Equal,
                (None, Some(_)) => return Ordering::Greater,
                (Some(_), None) => return Ordering::Less,
            },
            "priority" => rank(a).cmp(&rank(b)),
            "created_at" | "updated_at" => instant(&a[sort]).cmp(&instant(&b[sort])),
            "title" => {
                let lower = |t: &Value| t["title"].as_str().unwrap().to_lowercase();
                lower(a).cmp(&lower(b))
            }
            other => panic!("no reference order for {other}"),
        };
        directed(key.then_with(|| a["id"].as_str().cmp(&b["id"].as_str())))
    });
    tasks
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_owned())
        .collect()
}

/// Every page of `query` with `limit`, asserting the last page (and only it) has no cursor.
async fn all_pages(app: &TestApp, user: &TestUser, query: &str, limit: usize) -> Vec<Vec<String>> {
    let mut pages = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut path = format!("{query}&limit={limit}");
        if let Some(cursor) = &cursor {
            path.push_str(&format!("&cursor={cursor}"));
        }
        let page = list(app, user, &path).await;
        let page_ids = ids(&page);
        assert!(page_ids.len() <= limit);
        cursor = page["next_cursor"].as_str().map(str::to_owned);
        if cursor.is_some() {
            assert_eq!(page_ids.len(), limit, "only the last page is short: {path}");
        }
        pages.push(page_ids);
        assert!(pages.len() < 100, "paging does not end: {query}");
        if cursor.is_none() {
            return pages;
        }
    }
}

async fn tags(app: &TestApp, user: &TestUser) -> Value {
    expect_json(
        app.authed(Method::GET, "/api/v1/tags", user)
            .send()
            .await
            .unwrap(),
        200,
    )
    .await["items"]
        .clone()
}

/// Five tasks covering every filter dimension.
async fn filter_fixture(app: &TestApp, user: &TestUser) {
    let rows = [
        (
            "t1",
            "high",
            json!(["work", "home"]),
            Some("2030-01-01T00:00:00Z"),
            false,
        ),
        (
            "t2",
            "low",
            json!(["work"]),
            Some("2030-02-01T00:00:00Z"),
            true,
        ),
        ("t3", "none", json!([]), None, false),
        (
            "t4",
            "urgent",
            json!(["home"]),
            Some("2020-01-01T00:00:00Z"),
            false,
        ),
        (
            "t5",
            "medium",
            json!(["errand"]),
            Some("2020-06-01T00:00:00Z"),
            true,
        ),
    ];
    for (title, priority, tags, due, completed) in rows {
        let task = app
            .create_task(
                user,
                json!({ "title": title, "priority": priority, "tags": tags, "due_at": due }),
            )
            .await;
        if completed {
            let path = format!("/api/v1/tasks/{}/complete", task["id"].as_str().unwrap());
            expect_json(
                app.authed(Method::POST, &path, user).send().await.unwrap(),
                200,
            )
            .await;
        }
    }
}

#[tokio::test]
async fn every_filter_selects_the_right_tasks() {
    let app = TestApp::spawn().await;
    let user = app.register_user().await;
    filter_fixture(&app, &user).await;
    let cases: &[(&str, &[&str])] = &[
        ("", &["t1", "t2", "t3", "t4", "t5"]),
        ("status=pending", &["t1", "t3", "t4"]),
        ("status=completed", &["t2", "t5"]),
        ("priority=high", &["t1"]),
        ("priority=high,low", &["t1", "t2"]),
        ("priority=high&priority=urgent", &["t1", "t4"]),
        ("priority=none", &["t3"]),
        ("tag=work", &["t1", "t2"]),
        ("tag=WORK", &["t1", "t2"]),
        ("tag=%23work", &["t1", "t2"]),
        ("tag=work&tag=home", &["t1", "t2", "t4"]),
        ("tag=work,home", &["t1", "t2", "t4"]),
        ("tag=work&tag=home&tag_mode=any", &["t1", "t2", "t4"]),
        ("tag=work&tag=home&tag_mode=all", &["t1"]),
        ("tag=work&tag=work&tag_mode=all", &["t1", "t2"]),
        ("tag=nothing", &[]),
        ("due_before=2030-01-01T00:00:00Z", &["t4", "t5"]),
        (
            "due_before=2030-01-01T00:00:00.000001Z",
            &["t1", "t4", "t5"],
        ),
        ("due_before=2030-01-01T01:00:00%2B01:00", &["t4", "t5"]),
        ("due_after=2030-01-01T00:00:00Z", &["t1", "t2"]),
        (
            "due_after=2020-01-01T00:00:00Z&due_before=2030-01-01T00:00:01Z",
            &["t1", "t4", "t5"],
        ),
        ("overdue=true", &["t4"]),
        ("overdue=false", &["t1", "t2", "t3", "t5"]),
        (
            "status=pending&priority=urgent,high&tag=home",
            &["t1", "t4"],
        ),
        ("status=completed&overdue=true", &[]),
    ];
    for (query, expected) in cases {
        let body = list(&app, &user, query).await;
        assert_eq!(sorted(titles(&body)), strings(expected), "?{query}");
        assert_eq!(body["next_cursor"], Value::Null, "?{query}");
    }
}

#[tokio::test]
async fn bad_filter_values_are_400_naming_the_parameter() {
    let app = TestApp::spawn().await;
    let user = app.register_user().await;
    let cases = [
        ("status=done", "status"),
        ("priority=high,HIGH", "priority[1]"),
        ("tag=has%20space", "tag[0]"),
        ("tag_mode=some", "tag_mode"),
        ("due_before=yesterday", "due_before"),
        ("due_after=2030-01-01", "due_after"),
        ("overdue=yes", "overdue"),
        ("sort=name", "sort"),
        ("order=up", "order"),
        ("limit=0", "limit"),
        ("limit=201", "limit"),
        ("prority=high", "prority"),
        ("status=pending&status=completed", "status"),
    ];
    for (query, field) in cases {
        let response = app
            .authed(Method::GET, &format!("/api/v1/tasks?{query}"), &user)
            .send()
            .await
            .unwrap();
        let problem = expect_problem(response, 400, "invalid_query_parameter").await;
        assert_eq!(error_fields(&problem), [field], "?{query}: {problem}");
    }
}

/// Tasks with deliberate ties: equal priorities, equal due dates, titles equal but for case, no due date.
async fn sort_fixture(app: &TestApp, user: &TestUser) -> Vec<Value> {
    let rows = [
        ("banana", "high", Some("2030-01-02T00:00:00Z")),
        ("Apple", "high", Some("2030-01-01T00:00:00Z")),
        ("apple", "none", Some("2030-01-01T00:00:00Z")),
        ("cherry", "low", None),
        ("date", "low", None),
        ("Elder", "urgent", Some("2029-12-31T23:59:59Z")),
        ("fig", "none", None),
        ("grape", "high", Some("2030-01-02T00:00:00Z")),
    ];
    let mut tasks = Vec::new();
    for (title, priority, due) in rows {
        tasks.push(
            app.create_task(
                user,
                json!({ "title": title, "priority": priority, "due_at": due }),
            )
            .await,
        );
    }
    // Touch two tasks so updated_at differs from created_at order.
    for task in [&tasks[0], &tasks[3]] {
        let path = format!("/api/v1/tasks/{}", task["id"].as_str().unwrap());
        app.authed(Method::PATCH, &path, user)
            .json(&json!({ "description": "touched" }))
            .send()
            .await
            .unwrap();
    }
    list(app, user, "limit=200").await["items"]
        .as_array()
        .unwrap()
        .clone()
}

#[tokio::test]
async fn every_sort_orders_with_nulls_last_and_ties_by_id() {
    let app = TestApp::spawn().await;
    let user = app.register_user().await;
    let tasks = sort_fixture(&app, &user).await;
    for sort in SORTS {
        for (order, descending) in [("asc", false), ("desc", true)] {
            let expected = expected_order(&tasks, sort, descending);
            let one_page =
                ids(&list(&app, &user, &format!("sort={sort}&order={order}&limit=200")).await);
            assert_eq!(one_page, expected, "sort={sort}&order={order}");
            // Page boundaries inside tie groups and inside the null group.
            for limit in [1, 2, 3] {
                let paged: Vec<String> =
                    all_pages(&app, &user, &format!("sort={sort}&order={order}"), limit)
                        .await
                        .concat();
                assert_eq!(paged, expected, "sort={sort}&order={order}&limit={limit}");
            }
        }
    }
    // Spot checks of the reference itself: nulls last both ways, case-insensitive titles.
    let due_desc = titles(&list(&app, &user, "sort=due_at&order=desc").await);
    assert_eq!(
        sorted(due_desc[..2].to_vec()),
        strings(&["banana", "grape"])
    );
    assert_eq!(
        sorted(due_desc[5..].to_vec()),
        strings(&["cherry", "date", "fig"])
    );
    let by_title = titles(&list(&app, &user, "sort=title").await);
    assert_eq!(
        &by_title[2..],
        ["banana", "cherry", "date", "Elder", "fig", "grape"]
    );
}

#[tokio::test]
async fn default_orders_match_the_documented_directions() {
    let app = TestApp::spawn().await;
    let user = app.register_user().await;
    sort_fixture(&app, &user).await;
    let defaults = [
        ("", "sort=created_at&order=desc"),
        ("sort=created_at", "sort=created_at&order=desc"),
        ("sort=updated_at", "sort=updated_at&order=desc"),
        ("sort=priority", "sort=priority&order=desc"),
        ("sort=due_at", "sort=due_at&order=asc"),
        ("sort=title", "sort=title&order=asc"),
    ];
    for (implicit, explicit) in defaults {
        assert_eq!(
            ids(&list(&app, &user, implicit).await),
            ids(&list(&app, &user, explicit).await),
            "{implicit}"
        );
    }
}

#[tokio::test]
async fn full_text_search_matches_prefixes_all_terms_and_every_field() {
    let app = TestApp::spawn().await;
    let user = app.register_user().await;
    let rows = [
        ("Quarterly report", "", json!([])),
        ("Buy milk", "and eggs from the farm", json!([])),
        ("Trip to Zürich", "", json!([])),
        ("Zurich notes", "", json!([])),
        ("Prune roses", "", json!(["gardening"])),
        ("Call the bank", "about the invoice", json!(["finance"])),
        ("Crème brûlée recipe", "", json!([])),
    ];
    for (title, description, tags) in rows {
        app.create_task(
            &user,
            json!({ "title": title, "description": description, "tags": tags }),
        )
        .await;
    }
    let cases: &[(&str, &[&str])] = &[
        ("quart", &["Quarterly report"]),
        ("REPO", &["Quarterly report"]),
        ("quarterly%20report", &["Quarterly report"]),
        ("report%20quarterly", &["Quarterly report"]),
        ("quarterly%20milk", &[]),
        ("eggs", &["Buy milk"]),
        ("farm", &["Buy milk"]),
        ("garden", &["Prune roses"]),
        ("invoice%20finance", &["Call the bank"]),
        ("zurich", &["Trip to Zürich", "Zurich notes"]),
        ("z%C3%BCrich", &["Trip to Zürich", "Zurich notes"]),
        ("ZÜRICH", &["Trip to Zürich", "Zurich notes"]),
        ("creme%20brulee", &["Crème brûlée recipe"]),
        ("milk%2C%20eggs!", &["Buy milk"]),
        ("nothing-like-this", &[]),
    ];
    for (q, expected) in cases {
        let body = list(&app, &user, &format!("q={q}")).await;
        assert_eq!(sorted(titles(&body)), strings(expected), "q={q}");
    }
    // Search combines with filters and other sorts.
    let body = list(&app, &user, "q=zurich&sort=title&order=desc").await;
    assert_eq!(titles(&body), ["Zurich notes", "Trip to Zürich"]);
    assert_eq!(
        list(&app, &user, "q=zurich&tag=gardening").await["items"],
        json!([])
    );
}

#[tokio::test]
async fn search_ranks_title_matches_above_description_matches() {
    let app = TestApp::spawn().await;
    let user = app.register_user().await;
    // Created in the opposite order to the expected ranking, so creation order cannot explain it.
    app.create_task(
        &user,
        json!({ "title": "Misc", "description": "remember the budget meeting notes" }),
    )
    .await;
    app.create_task(&user, json!({ "title": "Other", "tags": ["budget"] }))
        .await;
    app.create_task(&user, json!({ "title": "Budget" })).await;
    let body = list(&app, &user, "q=budget").await;
    assert_eq!(
        titles(&body),
        ["Budget", "Other", "Misc"],
        "title > tags > description"
    );
    assert_eq!(
        ids(&body),
        ids(&list(&app, &user, "q=budget&sort=relevance&order=asc").await)
    );
    let worst_first = titles(&list(&app, &user, "q=budget&sort=relevance&order=desc").await);
    assert_eq!(worst_first, ["Misc", "Other", "Budget"]);
}

/// Creates `count` tasks with repeating priorities, due dates (some missing) and titles.
async fn many_tasks(app: &TestApp, user: &TestUser, count: usize, prefix: &str) -> Vec<Value> {
    let priorities = ["none", "low", "medium", "high", "urgent"];
    let mut tasks = Vec::new();
    for i in 0..count {
        let due = (i % 4 != 0).then(|| format!("2030-01-{:02}T00:00:00Z", 1 + i % 3));
        let body = json!({
            "title": format!("{prefix} {}", ["alpha", "Beta", "gamma"][i % 3]),
            "priority": priorities[i % 5],
            "due_at": due,
            "description": format!("report number {i}"),
        });
        tasks.push(app.create_task(user, body).await);
    }
    tasks
}

#[tokio::test]
async fn paging_returns_every_task_once_in_the_same_order_as_one_page() {
    let app = TestApp::spawn().await;
    let user = app.register_user().await;
    let tasks = many_tasks(&app, &user, 25, "task").await;
    let everyone: HashSet<String> = tasks
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_owned())
        .collect();
    let mut queries: Vec<String> = SORTS
        .iter()
        .flat_map(|sort| {
            [
                format!("sort={sort}&order=asc"),
                format!("sort={sort}&order=desc"),
            ]
        })
        .collect();
    queries.extend([
        "q=report".to_owned(),
        "q=report&sort=relevance&order=desc".to_owned(),
        "q=alpha%20report".to_owned(),
    ]);
    for query in queries {
        let big = ids(&list(&app, &user, &format!("{query}&limit=200")).await);
        let pages = all_pages(&app, &user, &query, 7).await;
        let paged = pages.concat();
        assert_eq!(paged, big, "{query}: paging agrees with one page");
        let unique: HashSet<&String> = paged.iter().collect();
        assert_eq!(unique.len(), paged.len(), "{query}: no duplicates");
        if !query.contains("alpha") {
            assert_eq!(pages.len(), 4, "{query}: 25 tasks in pages of 7");
            assert_eq!(unique.len(), everyone.len(), "{query}");
        }
    }
}

#[tokio::test]
async fn the_default_page_holds_fifty() {
    let app = TestApp::spawn().await;
    let user = app.register_user().await;
    many_tasks(&app, &user, 51, "bulk").await;
    let first = list(&app, &user, "").await;
    assert_eq!(first["items"].as_array().unwrap().len(), 50);
    let cursor = first["next_cursor"].as_str().unwrap();
    let second = list(&app, &user, &format!("cursor={cursor}")).await;
    assert_eq!(second["items"].as_array().unwrap().len(), 1);
    assert_eq!(second["next_cursor"], Value::Null);
    assert_eq!(
        list(&app, &user, "limit=200").await["items"]
            .as_array()
            .unwrap()
            .len(),
        51
    );
}

#[tokio::test]
async fn inserting_while_paging_never_duplicates_or_skips_existing_tasks() {
    let app = TestApp::spawn().await;
    let user = app.register_user().await;
    let tasks = many_tasks(&app, &user, 25, "old").await;
    let existing: HashSet<String> = tasks
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_owned())
        .collect();
    let queries = [
        "sort=created_at&order=desc",
        "sort=created_at&order=asc",
        "sort=due_at&order=asc",
        "sort=due_at&order=desc",
        "sort=priority&order=desc",
        "sort=title&order=asc",
        "sort=updated_at&order=asc",
    ];
    for (round, query) in queries.iter().enumerate() {
        let mut seen: Vec<String> = Vec::new();
        let mut cursor: Option<String> = None;
        let mut inserted = 0;
        loop {
            let path = match &cursor {
                Some(c) => format!("{query}&limit=7&cursor={c}"),
                None => format!("{query}&limit=7"),
            };
            let page = list(&app, &user, &path).await;
            seen.extend(ids(&page));
            cursor = page["next_cursor"].as_str().map(str::to_owned);
            let Some(_) = cursor else { break };
            // New tasks that sort at both ends and in the middle of every order.
            many_tasks(&app, &user, 3, &format!("new {round} {inserted}")).await;
            app.create_task(&user, json!({ "title": "aaa early", "priority": "urgent", "due_at": "2000-01-01T00:00:00Z" }))
                .await;
            app.create_task(&user, json!({ "title": "zzz late", "priority": "none" }))
                .await;
            inserted += 5;
        }
        let unique: HashSet<&String> = seen.iter().collect();
        assert_eq!(unique.len(), seen.len(), "{query}: a task appeared twice");
        for id in &existing {
            assert_eq!(
                seen.iter().filter(|s| *s == id).count(),
                1,
                "{query}: {id} missing"
            );
        }
    }
}

#[tokio::test]
async fn a_cursor_only_fits_the_order_it_came_from() {
    let app = TestApp::spawn().await;
    let user = app.register_user().await;
    many_tasks(&app, &user, 5, "c").await;
    let page = list(&app, &user, "sort=due_at&order=asc&limit=2").await;
    let cursor = page["next_cursor"].as_str().unwrap();
    for other in [
        "sort=title",
        "sort=due_at&order=desc",
        "sort=priority&order=asc",
        "",
        "q=report",
    ] {
        let path = format!("/api/v1/tasks?{other}&limit=2&cursor={cursor}");
        let problem = expect_problem(
            app.authed(Method::GET, &path, &user).send().await.unwrap(),
            400,
            "invalid_query_parameter",
        )
        .await;
        assert_eq!(error_fields(&problem), ["cursor"], "{other}");
        assert_eq!(problem["errors"][0]["code"], "invalid_cursor");
    }
    // The same order still accepts it, even with the default direction left implicit.
    list(&app, &user, &format!("sort=due_at&limit=2&cursor={cursor}")).await;
}

#[tokio::test]
async fn tag_counts_follow_creates_changes_and_deletes() {
    let app = TestApp::spawn().await;
    let user = app.register_user().await;
    assert_eq!(tags(&app, &user).await, json!([]));
    filter_fixture(&app, &user).await;
    assert_eq!(
        tags(&app, &user).await,
        json!([
            { "tag": "home", "count": 2, "pending": 2 },
            { "tag": "work", "count": 2, "pending": 1 },
            { "tag": "errand", "count": 1, "pending": 0 },
        ])
    );
    let t1 = &list(&app, &user, "tag=work&status=pending").await["items"][0];
    let path = format!("/api/v1/tasks/{}", t1["id"].as_str().unwrap());
    expect_json(
        app.authed(Method::PATCH, &path, &user)
            .json(&json!({ "tags": ["errand", "New"] }))
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    assert_eq!(
        tags(&app, &user).await,
        json!([
            { "tag": "errand", "count": 2, "pending": 1 },
            { "tag": "home", "count": 1, "pending": 1 },
            { "tag": "new", "count": 1, "pending": 1 },
            { "tag": "work", "count": 1, "pending": 0 },
        ])
    );
    assert_eq!(
        app.authed(Method::DELETE, &path, &user)
            .send()
            .await
            .unwrap()
            .status(),
        204
    );
    assert_eq!(
        tags(&app, &user).await,
        json!([
            { "tag": "errand", "count": 1, "pending": 0 },
            { "tag": "home", "count": 1, "pending": 1 },
            { "tag": "work", "count": 1, "pending": 0 },
        ])
    );
}
