//! Personal access tokens: created and shown once, usable as bearer tokens, revocable.

// Helpers outside `#[test]` functions unwrap too: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use chrono::{DateTime, TimeDelta, Utc};
use reqwest::Method;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use taskflow_domain::{TokenId, UserId};
use taskflow_store::AccessToken;
use taskflow_testing::{TestApp, TestUser};

use crate::support::{error_code, error_fields, expect_json, expect_problem, user_with_token};

async fn create_token(app: &TestApp, user: &TestUser, body: Value) -> reqwest::Response {
    app.authed(Method::POST, "/api/v1/tokens", user)
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn list_tokens(app: &TestApp, user: &TestUser) -> Value {
    expect_json(
        app.authed(Method::GET, "/api/v1/tokens", user)
            .send()
            .await
            .unwrap(),
        200,
    )
    .await
}

async fn me_status(app: &TestApp, token: &str) -> u16 {
    app.client
        .get(app.url("/api/v1/me"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

fn instant(value: &Value) -> DateTime<Utc> {
    value.as_str().unwrap().parse().unwrap()
}

#[tokio::test]
async fn a_new_token_is_shown_once_and_listed_without_its_secret() {
    let app = TestApp::spawn().await;
    let user = app.register_user().await;
    let before = Utc::now();
    let forever = expect_json(
        create_token(&app, &user, json!({ "name": "  backup script  " })).await,
        201,
    )
    .await;
    let secret = forever["token"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("tfp_"), "{secret}");
    assert_eq!(secret.len(), 47, "tfp_ and 43 base64url characters");
    assert_eq!(forever["name"], "backup script", "the name is trimmed");
    assert_eq!(forever["prefix"], secret[..8]);
    assert_eq!(forever["expires_at"], Value::Null);
    assert_eq!(forever["last_used_at"], Value::Null);
    assert!(instant(&forever["created_at"]) >= before - TimeDelta::seconds(1));

    let monthly = expect_json(
        create_token(&app, &user, json!({ "name": "ci", "expires_in_days": 30 })).await,
        201,
    )
    .await;
    let lifetime = instant(&monthly["expires_at"]) - instant(&monthly["created_at"]);
    assert_eq!(lifetime, TimeDelta::days(30));
    assert_ne!(monthly["token"], forever["token"]);

    let listed = list_tokens(&app, &user).await;
    let items = listed["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["id"], monthly["id"], "newest first");
    assert_eq!(items[1]["id"], forever["id"]);
    for item in items {
        assert!(item.get("token").is_none(), "{item}");
        for key in [
            "created_at",
            "expires_at",
            "id",
            "last_used_at",
            "name",
            "prefix",
        ] {
            assert!(item.get(key).is_some(), "{key} missing from {item}");
        }
    }
    let text = listed.to_string();
    for created in [&forever, &monthly] {
        assert!(
            !text.contains(created["token"].as_str().unwrap()),
            "a secret leaked: {text}"
        );
    }
}

#[tokio::test]
async fn a_personal_token_authenticates_task_routes() {
    let app = TestApp::spawn().await;
    let user = app.register_user().await;
    let created = expect_json(
        create_token(&app, &user, json!({ "name": "script" })).await,
        201,
    )
    .await;
    let pat = user_with_token(&user, created["token"].as_str().unwrap());

    let me = expect_json(
        app.authed(Method::GET, "/api/v1/me", &pat)
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    assert_eq!(me["id"], user.id.as_str());

    let task = app
        .create_task(
            &pat,
            json!({ "title": "made by a script", "tags": ["auto"] }),
        )
        .await;
    let path = format!("/api/v1/tasks/{}", task["id"].as_str().unwrap());
    let seen = expect_json(
        app.authed(Method::GET, &path, &user).send().await.unwrap(),
        200,
    )
    .await;
    assert_eq!(seen, task, "the JWT user sees the task the PAT made");
    let done = expect_json(
        app.authed(Method::POST, &format!("{path}/complete"), &pat)
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    assert_eq!(done["status"], "completed");

    let listed = list_tokens(&app, &user).await;
    assert!(
        !listed["items"][0]["last_used_at"].is_null(),
        "use is recorded: {listed}"
    );
}

#[tokio::test]
async fn a_deleted_token_stops_working() {
    let app = TestApp::spawn().await;
    let user = app.register_user().await;
    let keep = expect_json(
        create_token(&app, &user, json!({ "name": "keep" })).await,
        201,
    )
    .await;
    let gone = expect_json(
        create_token(&app, &user, json!({ "name": "gone" })).await,
        201,
    )
    .await;
    let gone_secret = gone["token"].as_str().unwrap();
    assert_eq!(me_status(&app, gone_secret).await, 200);

    let path = format!("/api/v1/tokens/{}", gone["id"].as_str().unwrap());
    let response = app
        .authed(Method::DELETE, &path, &user)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    assert!(response.text().await.unwrap().is_empty());

    let response = app
        .client
        .get(app.url("/api/v1/me"))
        .bearer_auth(gone_secret)
        .send()
        .await
        .unwrap();
    expect_problem(response, 401, "invalid_token").await;
    assert_eq!(
        me_status(&app, keep["token"].as_str().unwrap()).await,
        200,
        "the other token still works"
    );

    let listed = list_tokens(&app, &user).await;
    let ids: Vec<&Value> = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| &t["id"])
        .collect();
    assert_eq!(ids, [&keep["id"]]);

    let again = app
        .authed(Method::DELETE, &path, &user)
        .send()
        .await
        .unwrap();
    expect_problem(again, 404, "not_found").await;
}

#[tokio::test]
async fn another_user_cannot_delete_or_see_my_token() {
    let app = TestApp::spawn().await;
    let ann = app.register_user().await;
    let bob = app.register_user().await;
    let token = expect_json(
        create_token(&app, &ann, json!({ "name": "ann's" })).await,
        201,
    )
    .await;
    let path = format!("/api/v1/tokens/{}", token["id"].as_str().unwrap());

    let response = app
        .authed(Method::DELETE, &path, &bob)
        .send()
        .await
        .unwrap();
    let problem = expect_problem(response, 404, "not_found").await;
    let unknown = app
        .authed(
            Method::DELETE,
            &format!("/api/v1/tokens/{}", uuid::Uuid::now_v7()),
            &bob,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(
        expect_problem(unknown, 404, "not_found").await,
        problem,
        "no existence oracle"
    );

    assert_eq!(me_status(&app, token["token"].as_str().unwrap()).await, 200);
    assert_eq!(list_tokens(&app, &bob).await["items"], json!([]));
    assert_eq!(
        list_tokens(&app, &ann).await["items"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn token_requests_are_validated() {
    let app = TestApp::spawn().await;
    let user = app.register_user().await;
    let cases = [
        (json!({ "name": "" }), "name", "invalid"),
        (json!({ "name": "   " }), "name", "invalid"),
        (json!({ "name": "x".repeat(101) }), "name", "invalid"),
        (json!({ "name": "two\nlines" }), "name", "invalid"),
        (json!({}), "name", "required"),
        (json!({ "name": 5 }), "name", "invalid_type"),
        (
            json!({ "name": "n", "expires_in_days": 0 }),
            "expires_in_days",
            "out_of_range",
        ),
        (
            json!({ "name": "n", "expires_in_days": -1 }),
            "expires_in_days",
            "out_of_range",
        ),
        (
            json!({ "name": "n", "expires_in_days": 3651 }),
            "expires_in_days",
            "out_of_range",
        ),
        (
            json!({ "name": "n", "expires_in_days": 5000 }),
            "expires_in_days",
            "out_of_range",
        ),
        (
            json!({ "name": "n", "expires_in_days": "x" }),
            "expires_in_days",
            "invalid_type",
        ),
        (
            json!({ "name": "n", "expires_in_days": "30" }),
            "expires_in_days",
            "invalid_type",
        ),
        (
            json!({ "name": "n", "expires_in_days": 1.5 }),
            "expires_in_days",
            "invalid_type",
        ),
        (
            json!({ "name": "n", "expires_in_days": 1e300 }),
            "expires_in_days",
            "invalid_type",
        ),
        (
            json!({ "name": "n", "scope": "admin" }),
            "scope",
            "unknown_field",
        ),
    ];
    for (body, field, code) in cases {
        let problem = expect_problem(
            create_token(&app, &user, body.clone()).await,
            422,
            "validation_failed",
        )
        .await;
        assert_eq!(error_fields(&problem), [field], "{body}: {problem}");
        assert_eq!(
            error_code(&problem, field).as_deref(),
            Some(code),
            "{body}: {problem}"
        );
    }
    assert_eq!(
        list_tokens(&app, &user).await["items"],
        json!([]),
        "nothing was created"
    );

    // The bounds themselves are accepted.
    for days in [1, 3650] {
        expect_json(
            create_token(
                &app,
                &user,
                json!({ "name": "edge", "expires_in_days": days }),
            )
            .await,
            201,
        )
        .await;
    }
    let hundred = "é".repeat(100);
    let created = expect_json(
        create_token(&app, &user, json!({ "name": hundred })).await,
        201,
    )
    .await;
    assert_eq!(
        created["name"],
        hundred.as_str(),
        "100 characters, counted as characters"
    );
}

#[tokio::test]
async fn an_expired_token_is_refused() {
    let app = TestApp::spawn().await;
    let user = app.register_user().await;
    let user_id: UserId = user.id.parse().unwrap();
    let now = Utc::now();
    let store_token = |name: &str, expires_at: DateTime<Utc>| {
        let secret = format!("tfp_{}{}", name, "x".repeat(40 - name.len()));
        let token = AccessToken {
            id: TokenId::new(),
            user_id,
            name: name.to_owned(),
            prefix: secret[..8].to_owned(),
            created_at: now - TimeDelta::days(10),
            last_used_at: None,
            expires_at: Some(expires_at),
        };
        let hash = Sha256::digest(secret.as_bytes()).to_vec();
        (token, hash, secret)
    };
    let (expired, expired_hash, expired_secret) =
        store_token("expired", now - TimeDelta::minutes(1));
    let (valid, valid_hash, valid_secret) = store_token("valid", now + TimeDelta::minutes(10));
    app.store
        .create_access_token(&expired, &expired_hash)
        .await
        .unwrap();
    app.store
        .create_access_token(&valid, &valid_hash)
        .await
        .unwrap();

    assert_eq!(
        me_status(&app, &valid_secret).await,
        200,
        "a stored token in its lifetime works"
    );
    let response = app
        .client
        .get(app.url("/api/v1/me"))
        .bearer_auth(&expired_secret)
        .send()
        .await
        .unwrap();
    expect_problem(response, 401, "invalid_token").await;
    // It is still listed, with its expiry, so the user can see why it stopped working.
    let listed = list_tokens(&app, &user).await;
    assert!(
        listed["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["name"] == "expired")
    );
}
