//! Rate limits: sign-in attempts per IP, requests per user, task creations per user.

// Helpers outside `#[test]` functions unwrap too: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use reqwest::{Method, Response};
use serde_json::json;
use taskflow_http::rate_limit::RateLimitSettings;
use taskflow_testing::{TestApp, TestOptions, TestUser};

use crate::support::{expect_json, expect_problem, header};

/// Limits that never get in the way, to be tightened one at a time.
fn generous() -> RateLimitSettings {
    RateLimitSettings {
        enabled: true,
        user_per_second: 1000,
        user_burst: 1000,
        ip_per_second: 1000,
        ip_burst: 1000,
        auth_per_minute: 1000,
        auth_burst: 1000,
        task_create_per_minute: 1000,
        task_create_burst: 1000,
        trust_forwarded_for: false,
    }
}

async fn spawn(rate_limit: RateLimitSettings) -> TestApp {
    TestApp::spawn_with(TestOptions {
        rate_limit,
        ..TestOptions::default()
    })
    .await
}

/// Asserts a 429 problem and returns its `Retry-After` in seconds.
async fn expect_limited(response: Response) -> u64 {
    let retry_after: u64 = header(&response, "retry-after")
        .expect("Retry-After")
        .parse()
        .unwrap();
    let problem = expect_problem(response, 429, "rate_limited").await;
    assert!(retry_after >= 1, "{retry_after}");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains(&retry_after.to_string()),
        "{problem}"
    );
    retry_after
}

async fn login(app: &TestApp, email: &str) -> Response {
    app.client
        .post(app.url("/api/v1/auth/login"))
        .json(&json!({ "email": email, "password": "not the password" }))
        .send()
        .await
        .unwrap()
}

async fn me(app: &TestApp, user: &TestUser) -> Response {
    app.authed(Method::GET, "/api/v1/me", user)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn the_fourth_sign_in_attempt_in_a_burst_is_429() {
    let app = spawn(RateLimitSettings {
        auth_burst: 3,
        auth_per_minute: 1,
        ..generous()
    })
    .await;
    for attempt in 1..=3 {
        let response = login(&app, "nobody@example.com").await;
        assert_eq!(response.status(), 401, "attempt {attempt}");
    }
    let retry_after = expect_limited(login(&app, "nobody@example.com").await).await;
    assert!(
        (30..=60).contains(&retry_after),
        "one attempt a minute refills within a minute: {retry_after}"
    );

    // Registration shares the bucket; routes outside sign-in do not.
    let register = app
        .client
        .post(app.url("/api/v1/auth/register"))
        .json(&json!({ "email": "late@example.com", "password": "long enough" }))
        .send()
        .await
        .unwrap();
    expect_limited(register).await;
    let health = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
}

#[tokio::test]
async fn one_user_exhausting_their_budget_does_not_affect_another() {
    let app = spawn(RateLimitSettings {
        user_burst: 5,
        user_per_second: 1,
        ..generous()
    })
    .await;
    let ann = app.register_user().await;
    let bob = app.register_user().await;
    for request in 1..=5 {
        assert_eq!(
            me(&app, &ann).await.status(),
            200,
            "request {request} is within the burst"
        );
    }
    let mut limited = None;
    for _ in 0..5 {
        let response = me(&app, &ann).await;
        if response.status() == 429 {
            limited = Some(response);
            break;
        }
    }
    let retry_after = expect_limited(limited.expect("a 429 after the burst")).await;
    assert_eq!(
        retry_after, 1,
        "one request a second refills within a second"
    );

    // Bob is not affected, on any route.
    let bob_me = expect_json(me(&app, &bob).await, 200).await;
    assert_eq!(bob_me["id"], bob.id.as_str());
    app.create_task(&bob, json!({ "title": "bob still works" }))
        .await;

    // Ann's budget refills.
    tokio::time::sleep(Duration::from_millis(1100 * retry_after)).await;
    assert_eq!(me(&app, &ann).await.status(), 200);

    // Requests that fail authentication do not spend anyone's budget.
    let stranger = TestUser {
        token: "not-a-token".into(),
        ..bob.clone()
    };
    for _ in 0..10 {
        assert_eq!(me(&app, &stranger).await.status(), 401);
    }
}

#[tokio::test]
async fn the_third_task_creation_in_a_burst_is_429() {
    let app = spawn(RateLimitSettings {
        task_create_burst: 2,
        task_create_per_minute: 1,
        ..generous()
    })
    .await;
    let ann = app.register_user().await;
    let bob = app.register_user().await;
    app.create_task(&ann, json!({ "title": "one" })).await;
    app.create_task(&ann, json!({ "title": "two" })).await;
    let third = app
        .authed(Method::POST, "/api/v1/tasks", &ann)
        .json(&json!({ "title": "three" }))
        .send()
        .await
        .unwrap();
    let retry_after = expect_limited(third).await;
    assert!((30..=60).contains(&retry_after), "{retry_after}");

    // Nothing was stored, other routes still work, and other users may create.
    let listed = expect_json(
        app.authed(Method::GET, "/api/v1/tasks", &ann)
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    assert_eq!(listed["items"].as_array().unwrap().len(), 2);
    app.create_task(&bob, json!({ "title": "bob's first" }))
        .await;
}

#[tokio::test]
async fn the_per_ip_budget_covers_public_routes() {
    let app = spawn(RateLimitSettings {
        ip_burst: 3,
        ip_per_second: 1,
        ..generous()
    })
    .await;
    for _ in 0..3 {
        let response = app
            .client
            .get(app.url("/api/v1/openapi.json"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    let response = app
        .client
        .get(app.url("/api/v1/openapi.json"))
        .send()
        .await
        .unwrap();
    expect_limited(response).await;
    // Health probes are never throttled: an orchestrator must always reach them.
    for path in ["/healthz", "/readyz", "/metrics"] {
        let response = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
    }
}
