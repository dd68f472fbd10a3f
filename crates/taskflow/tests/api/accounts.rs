//! Registration, sign-in, `/me` and every way an access token can be wrong.

// Helpers outside `#[test]` functions unwrap too: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use reqwest::Method;
use serde_json::{Value, json};
use sha2::Sha512;
use taskflow_testing::{TEST_JWT_SECRET, TestApp, TestUser};

use crate::support::{
    b64, error_code, error_fields, expect_json, expect_problem, good_claims, header, sign_jwt,
    test_jwt, unix_now, user_with_token,
};

async fn register_raw(app: &TestApp, body: Value) -> reqwest::Response {
    app.client
        .post(app.url("/api/v1/auth/register"))
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn login_raw(app: &TestApp, email: &str, password: &str) -> reqwest::Response {
    app.client
        .post(app.url("/api/v1/auth/login"))
        .json(&json!({ "email": email, "password": password }))
        .send()
        .await
        .unwrap()
}

async fn me_with(app: &TestApp, token: &str) -> reqwest::Response {
    app.client
        .get(app.url("/api/v1/me"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn registering_returns_the_normalised_account_and_a_working_token() {
    let app = TestApp::spawn().await;
    let response = register_raw(
        &app,
        json!({
            "email": "  Ann.Smith@Example.COM ",
            "password": "correct horse battery",
            "display_name": "  Ann Smith  ",
            "time_zone": "Europe/Berlin",
        }),
    )
    .await;
    let body = expect_json(response, 201).await;
    let user = &body["user"];
    assert!(
        uuid::Uuid::parse_str(user["id"].as_str().unwrap()).is_ok(),
        "{body}"
    );
    assert_eq!(user["email"], "ann.smith@example.com");
    assert_eq!(user["display_name"], "Ann Smith");
    assert_eq!(user["time_zone"], "Europe/Berlin");
    assert_eq!(user["is_admin"], false);
    assert!(chrono::DateTime::parse_from_rfc3339(user["created_at"].as_str().unwrap()).is_ok());
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3600);

    let token = body["access_token"].as_str().unwrap();
    assert_eq!(token.split('.').count(), 3, "a JWT: {token}");
    let me = expect_json(me_with(&app, token).await, 200).await;
    assert_eq!(&me, user, "/me shows the account that was registered");
}

#[tokio::test]
async fn the_time_zone_defaults_to_utc_and_the_display_name_to_null() {
    let app = TestApp::spawn().await;
    let body = expect_json(
        register_raw(
            &app,
            json!({ "email": "bob@example.com", "password": "12345678" }),
        )
        .await,
        201,
    )
    .await;
    assert_eq!(body["user"]["time_zone"], "UTC");
    assert_eq!(body["user"]["display_name"], Value::Null);
}

#[tokio::test]
async fn an_email_can_only_be_registered_once_whatever_its_case() {
    let app = TestApp::spawn().await;
    app.register("dup@example.com").await;
    for email in ["dup@example.com", "DUP@Example.Com", "  dup@example.com  "] {
        let response = register_raw(
            &app,
            json!({ "email": email, "password": "another password" }),
        )
        .await;
        let problem = expect_problem(response, 409, "email_taken").await;
        assert!(
            problem["detail"]
                .as_str()
                .unwrap()
                .contains("already exists"),
            "{problem}"
        );
    }
    // The original password still works: the duplicate did not overwrite the account.
    expect_json(
        login_raw(&app, "dup@example.com", "correct horse battery").await,
        200,
    )
    .await;
}

#[tokio::test]
async fn each_registration_rule_reports_its_field() {
    let app = TestApp::spawn().await;
    let base = || json!({ "email": "rules@example.com", "password": "long enough" });
    let with = |field: &str, value: Value| {
        let mut body = base();
        body[field] = value;
        body
    };
    let cases = [
        (
            with("email", json!("not-an-email")),
            "email",
            "invalid_email",
        ),
        (
            with("email", json!("a@localhost")),
            "email",
            "invalid_email",
        ),
        (with("email", json!("")), "email", "invalid_email"),
        (
            with("email", json!(format!("{}@example.com", "a".repeat(250)))),
            "email",
            "too_long",
        ),
        (with("password", json!("short")), "password", "too_short"),
        // 7 characters but 14 bytes: the minimum counts characters.
        (with("password", json!("ééééééé")), "password", "too_short"),
        (
            with("password", json!("x".repeat(1025))),
            "password",
            "too_long",
        ),
        (
            with("time_zone", json!("Mars/Base")),
            "time_zone",
            "invalid_time_zone",
        ),
        (
            with("time_zone", json!("")),
            "time_zone",
            "invalid_time_zone",
        ),
        (with("display_name", json!("   ")), "display_name", "empty"),
        (
            with("display_name", json!("x".repeat(101))),
            "display_name",
            "too_long",
        ),
        (
            with("display_name", json!("a\nb")),
            "display_name",
            "invalid_characters",
        ),
    ];
    for (body, field, code) in cases {
        let problem = expect_problem(
            register_raw(&app, body.clone()).await,
            422,
            "validation_failed",
        )
        .await;
        assert_eq!(
            error_fields(&problem),
            vec![field.to_owned()],
            "{body}: {problem}"
        );
        assert_eq!(
            error_code(&problem, field).as_deref(),
            Some(code),
            "{body}: {problem}"
        );
    }

    // Every broken rule is reported at once.
    let problem = expect_problem(
        register_raw(
            &app,
            json!({ "email": "nope", "password": "short", "display_name": " ", "time_zone": "Nowhere/City" }),
        )
        .await,
        422,
        "validation_failed",
    )
    .await;
    let mut fields = error_fields(&problem);
    fields.sort();
    assert_eq!(
        fields,
        ["display_name", "email", "password", "time_zone"],
        "{problem}"
    );

    // A missing required field is named too.
    let problem = expect_problem(
        register_raw(&app, json!({ "email": "rules@example.com" })).await,
        422,
        "validation_failed",
    )
    .await;
    assert_eq!(error_fields(&problem), ["password"]);
    assert_eq!(
        error_code(&problem, "password").as_deref(),
        Some("required")
    );

    // Eight multi-byte characters are enough, and nothing above was stored.
    expect_json(
        register_raw(
            &app,
            json!({ "email": "rules@example.com", "password": "éééééééé" }),
        )
        .await,
        201,
    )
    .await;
}

#[tokio::test]
async fn login_returns_a_bearer_token_for_the_right_password() {
    let app = TestApp::spawn().await;
    let user = app.register("login@example.com").await;
    for email in ["login@example.com", "LOGIN@example.com"] {
        let body = expect_json(login_raw(&app, email, &user.password).await, 200).await;
        assert_eq!(body["token_type"], "Bearer");
        assert_eq!(body["expires_in"], 3600);
        let token = body["access_token"].as_str().unwrap();
        let me = expect_json(me_with(&app, token).await, 200).await;
        assert_eq!(me["id"], user.id.as_str());
        assert_eq!(me["email"], "login@example.com");
    }
}

#[tokio::test]
async fn wrong_passwords_and_unknown_emails_are_the_same_401() {
    let app = TestApp::spawn().await;
    let user = app.register("known@example.com").await;
    let cases = [
        ("known@example.com", "wrong password".to_owned()),
        ("known@example.com", user.password.to_uppercase()),
        ("unknown@example.com", user.password.clone()),
        ("not an email", user.password.clone()),
        ("known@example.com", "x".repeat(1025)),
    ];
    let mut details = Vec::new();
    for (email, password) in cases {
        let response = login_raw(&app, email, &password).await;
        assert_eq!(
            header(&response, "www-authenticate").as_deref(),
            Some("Bearer")
        );
        let problem = expect_problem(response, 401, "invalid_credentials").await;
        assert!(!problem.to_string().contains("access_token"));
        details.push(problem["detail"].clone());
    }
    details.dedup();
    assert_eq!(
        details.len(),
        1,
        "every failure reads the same: {details:?}"
    );
}

#[tokio::test]
async fn me_without_a_token_is_401_missing_token() {
    let app = TestApp::spawn().await;
    let response = app.client.get(app.url("/api/v1/me")).send().await.unwrap();
    assert_eq!(
        header(&response, "www-authenticate").as_deref(),
        Some("Bearer")
    );
    expect_problem(response, 401, "missing_token").await;
}

/// A JWT over arbitrary header and claims, signed with HMAC-SHA512.
fn sign_hs512(header: &Value, claims: &Value) -> String {
    use hmac::{Hmac, Mac};
    let input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let mut mac = Hmac::<Sha512>::new_from_slice(TEST_JWT_SECRET.as_bytes()).unwrap();
    mac.update(input.as_bytes());
    format!("{input}.{}", b64(&mac.finalize().into_bytes()))
}

fn without(mut claims: Value, key: &str) -> Value {
    claims.as_object_mut().unwrap().remove(key);
    claims
}

fn with(mut claims: Value, key: &str, value: Value) -> Value {
    claims[key] = value;
    claims
}

#[tokio::test]
async fn bad_access_tokens_are_refused() {
    let app = TestApp::spawn().await;
    let user = app.register_user().await;
    let claims = good_claims(&user.id);
    let hs256 = json!({ "alg": "HS256", "typ": "JWT" });

    // The hand-made token is right: every variation below breaks exactly one thing.
    let good = test_jwt(&claims);
    let me = expect_json(me_with(&app, &good).await, 200).await;
    assert_eq!(me["id"], user.id.as_str());

    let tampered_signature = {
        let (head, signature) = good.rsplit_once('.').unwrap();
        let mut chars: Vec<char> = signature.chars().collect();
        chars[10] = if chars[10] == 'A' { 'B' } else { 'A' };
        format!("{head}.{}", chars.into_iter().collect::<String>())
    };
    let tampered_payload = {
        let parts: Vec<&str> = good.split('.').collect();
        let other = with(
            claims.clone(),
            "sub",
            json!(uuid::Uuid::now_v7().to_string()),
        );
        format!(
            "{}.{}.{}",
            parts[0],
            b64(other.to_string().as_bytes()),
            parts[2]
        )
    };
    let unsigned = format!(
        "{}.{}.",
        b64(br#"{"alg":"none","typ":"JWT"}"#),
        b64(claims.to_string().as_bytes())
    );
    let now = unix_now();
    let cases: Vec<(&str, String, &str)> = vec![
        ("garbage", "not-a-jwt".into(), "invalid_token"),
        ("three dots of nothing", "..".into(), "invalid_token"),
        (
            "unknown personal token",
            "tfp_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".into(),
            "invalid_token",
        ),
        ("tampered signature", tampered_signature, "invalid_token"),
        ("tampered payload", tampered_payload, "invalid_token"),
        (
            "another secret",
            sign_jwt(b"another-secret-another-secret-another", &hs256, &claims),
            "invalid_token",
        ),
        ("alg none", unsigned, "invalid_token"),
        (
            "HS512",
            sign_hs512(&json!({ "alg": "HS512", "typ": "JWT" }), &claims),
            "invalid_token",
        ),
        (
            "wrong issuer",
            test_jwt(&with(claims.clone(), "iss", json!("someone-else"))),
            "invalid_token",
        ),
        (
            "no issuer",
            test_jwt(&without(claims.clone(), "iss")),
            "invalid_token",
        ),
        (
            "wrong audience",
            test_jwt(&with(claims.clone(), "aud", json!("other-app"))),
            "invalid_token",
        ),
        (
            "no audience",
            test_jwt(&without(claims.clone(), "aud")),
            "invalid_token",
        ),
        (
            "no expiry",
            test_jwt(&without(claims.clone(), "exp")),
            "invalid_token",
        ),
        (
            "expiry as text",
            test_jwt(&with(claims.clone(), "exp", json!("tomorrow"))),
            "invalid_token",
        ),
        (
            "no subject",
            test_jwt(&without(claims.clone(), "sub")),
            "invalid_token",
        ),
        (
            "expired an hour ago",
            test_jwt(&with(claims.clone(), "exp", json!(now - 3600))),
            "token_expired",
        ),
        (
            "unknown user id",
            test_jwt(&with(
                claims.clone(),
                "sub",
                json!(uuid::Uuid::now_v7().to_string()),
            )),
            "invalid_token",
        ),
    ];
    for (name, token, code) in cases {
        let response = me_with(&app, &token).await;
        assert_eq!(
            header(&response, "www-authenticate").as_deref(),
            Some("Bearer"),
            "{name}"
        );
        let problem = expect_problem(response, 401, code).await;
        assert!(
            !problem.to_string().contains(&user.email),
            "{name}: {problem}"
        );
    }

    // Malformed Authorization headers.
    for value in [
        "Basic dXNlcjpwYXNz",
        "Bearer",
        "Bearer    ",
        &format!("Token {good}"),
        &format!("Bearer {}", "a".repeat(9000)),
    ] {
        let response = app
            .client
            .get(app.url("/api/v1/me"))
            .header("authorization", value)
            .send()
            .await
            .unwrap();
        expect_problem(response, 401, "invalid_token").await;
    }
    // The scheme is case-insensitive.
    let response = app
        .client
        .get(app.url("/api/v1/me"))
        .header("authorization", format!("bearer {good}"))
        .send()
        .await
        .unwrap();
    expect_json(response, 200).await;
}

#[tokio::test]
async fn an_external_subject_is_provisioned_once_and_keeps_its_account() {
    let app = TestApp::spawn().await;
    let sub = "better-auth|abc";
    let claims = with(
        with(good_claims(sub), "email", json!("Ext.User@Example.com")),
        "name",
        json!("Ext User"),
    );
    let first = expect_json(me_with(&app, &test_jwt(&claims)).await, 200).await;
    assert_eq!(first["email"], "ext.user@example.com");
    assert_eq!(first["display_name"], "Ext User");
    assert_eq!(first["time_zone"], "UTC");
    assert_eq!(first["is_admin"], false);

    // Later tokens for the same subject, even with another e-mail claim, are the same account.
    let later = with(good_claims(sub), "email", json!("renamed@example.com"));
    let second = expect_json(me_with(&app, &test_jwt(&later)).await, 200).await;
    assert_eq!(second, first);

    // The provisioned account owns data like any other.
    let ext = TestUser {
        id: first["id"].as_str().unwrap().to_owned(),
        email: "ext.user@example.com".into(),
        password: String::new(),
        token: test_jwt(&claims),
    };
    let task = app
        .create_task(&ext, json!({ "title": "from better-auth" }))
        .await;
    let again = user_with_token(&ext, &test_jwt(&later));
    let listed = expect_json(
        app.authed(Method::GET, "/api/v1/tasks", &again)
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    assert_eq!(listed["items"][0]["id"], task["id"]);

    // The account has no password: signing in with an empty one must fail.
    expect_problem(
        login_raw(&app, "ext.user@example.com", "").await,
        401,
        "invalid_credentials",
    )
    .await;
}

#[tokio::test]
async fn an_external_subject_needs_a_valid_email_that_is_not_a_local_account() {
    let app = TestApp::spawn().await;
    let local = app.register("local@example.com").await;
    let cases = [
        ("no email", good_claims("ext|1")),
        (
            "bad email",
            with(good_claims("ext|2"), "email", json!("not-an-email")),
        ),
        (
            "local account's email",
            with(good_claims("ext|3"), "email", json!("LOCAL@example.com")),
        ),
        (
            "empty subject",
            with(good_claims(""), "email", json!("x@example.com")),
        ),
    ];
    for (name, claims) in cases {
        let problem = expect_problem(
            me_with(&app, &test_jwt(&claims)).await,
            401,
            "invalid_token",
        )
        .await;
        assert_eq!(problem["status"], 401, "{name}");
    }
    // The local account was not taken over.
    let me = expect_json(me_with(&app, &local.token).await, 200).await;
    assert_eq!(me["email"], "local@example.com");
}
