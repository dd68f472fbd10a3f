//! One user never sees or changes another user's tasks, search hits or tags.

// Helpers outside `#[test]` functions unwrap too: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use reqwest::Method;
use serde_json::{Value, json};
use taskflow_testing::TestApp;

use crate::support::{expect_json, expect_problem, get_task, list, titles};

#[tokio::test]
async fn another_users_task_is_404_for_every_route_and_stays_unchanged() {
    let app = TestApp::spawn().await;
    let ann = app.register_user().await;
    let bob = app.register_user().await;
    let task = app
        .create_task(&ann, json!({ "title": "ann's secret", "tags": ["private"], "due_at": "2030-01-01T00:00:00Z" }))
        .await;
    let id = task["id"].as_str().unwrap();
    let path = format!("/api/v1/tasks/{id}");
    let unknown_path = format!("/api/v1/tasks/{}", uuid::Uuid::now_v7());

    let attempts = [
        (Method::GET, String::new(), None),
        (
            Method::PATCH,
            String::new(),
            Some(json!({ "title": "hijacked" })),
        ),
        (Method::DELETE, String::new(), None),
        (Method::POST, "/complete".to_owned(), None),
        (Method::POST, "/reopen".to_owned(), None),
    ];
    for (method, suffix, body) in &attempts {
        for if_match in [None, Some("*"), Some("\"1\"")] {
            let send = |target: String| {
                let mut request = app.authed(method.clone(), &target, &bob);
                if let Some(value) = if_match {
                    request = request.header("if-match", value);
                }
                if let Some(body) = body {
                    request = request.json(body);
                }
                request.send()
            };
            let problem = expect_problem(
                send(format!("{path}{suffix}")).await.unwrap(),
                404,
                "not_found",
            )
            .await;
            let unknown = expect_problem(
                send(format!("{unknown_path}{suffix}")).await.unwrap(),
                404,
                "not_found",
            )
            .await;
            assert_eq!(
                problem, unknown,
                "{method} {suffix}: indistinguishable from a task that does not exist"
            );
        }
    }
    assert_eq!(
        get_task(&app, &ann, id).await,
        task,
        "ann's task is untouched"
    );
}

#[tokio::test]
async fn lists_searches_and_tags_only_show_the_callers_data() {
    let app = TestApp::spawn().await;
    let ann = app.register_user().await;
    let bob = app.register_user().await;
    for (title, tags) in [
        ("alpha report", json!(["shared", "ann-only"])),
        ("alpha plan", json!(["shared"])),
    ] {
        app.create_task(
            &ann,
            json!({ "title": title, "description": "confidential", "tags": tags, "priority": "high",
                                      "due_at": "2000-01-01T00:00:00Z" }),
        )
        .await;
    }
    app.create_task(
        &bob,
        json!({ "title": "bob's list", "tags": ["shared", "bob-only"] }),
    )
    .await;

    let queries = [
        "",
        "q=alpha",
        "q=confidential",
        "q=ann",
        "tag=shared",
        "tag=ann-only",
        "priority=high",
        "overdue=true",
        "status=pending&sort=title",
        "sort=due_at&order=desc&limit=1",
    ];
    for query in queries {
        let bobs = list(&app, &bob, query).await;
        for item in bobs["items"].as_array().unwrap() {
            assert_eq!(item["title"], "bob's list", "{query}: {bobs}");
        }
        assert!(!bobs.to_string().contains("alpha"), "{query}");
    }
    assert_eq!(
        titles(&list(&app, &bob, "tag=shared").await),
        ["bob's list"]
    );
    assert_eq!(list(&app, &bob, "q=alpha").await["items"], json!([]));
    assert_eq!(
        list(&app, &ann, "q=alpha").await["items"]
            .as_array()
            .unwrap()
            .len(),
        2
    );

    // Paging with a cursor from one user's listing never reaches the other's rows.
    let first = list(&app, &ann, "limit=1&sort=title").await;
    let cursor = first["next_cursor"].as_str().unwrap();
    let bobs_next = list(&app, &bob, &format!("limit=1&sort=title&cursor={cursor}")).await;
    assert!(!bobs_next.to_string().contains("alpha"), "{bobs_next}");

    let tags = |user| {
        let app = &app;
        async move {
            expect_json(
                app.authed(Method::GET, "/api/v1/tags", user)
                    .send()
                    .await
                    .unwrap(),
                200,
            )
            .await
        }
    };
    assert_eq!(
        tags(&bob).await["items"],
        json!([{ "tag": "bob-only", "count": 1, "pending": 1 }, { "tag": "shared", "count": 1, "pending": 1 }])
    );
    let anns: Value = tags(&ann).await;
    assert_eq!(
        anns["items"][0],
        json!({ "tag": "shared", "count": 2, "pending": 2 })
    );
    assert_eq!(
        anns["items"][1],
        json!({ "tag": "ann-only", "count": 1, "pending": 1 })
    );
}
