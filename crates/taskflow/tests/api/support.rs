//! Helpers shared by the API test modules: problem+json assertions, hand-made JWTs, listings.

// Helpers outside `#[test]` functions unwrap too: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(dead_code)]

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use reqwest::{Method, Response};
use serde_json::{Value, json};
use sha2::Sha256;
use taskflow_testing::{TEST_JWT_SECRET, TestApp, TestUser};

/// Media type of error bodies.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// A header of `response` as text.
pub fn header(response: &Response, name: &str) -> Option<String> {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// Asserts `response` has `status` and a JSON body, and returns the body.
pub async fn expect_json(response: Response, status: u16) -> Value {
    let actual = response.status().as_u16();
    let text = response.text().await.unwrap();
    assert_eq!(actual, status, "unexpected status; body: {text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("body is not JSON ({e}): {text}"))
}

/// Checks that `response` is a well-formed problem document (any status) and returns
/// `(status, body)`. Panics on 5xx, 2xx/3xx, wrong media type or an inconsistent body.
pub async fn any_problem(response: Response, context: &str) -> (u16, Value) {
    let status = response.status().as_u16();
    let content_type = header(&response, "content-type");
    let text = response.text().await.unwrap();
    assert!(
        (400..500).contains(&status),
        "{context}: expected a 4xx, got {status}: {text}"
    );
    assert_eq!(
        content_type.as_deref(),
        Some(PROBLEM_JSON),
        "{context}: status {status}, body {text}"
    );
    let body: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{context}: problem body is not JSON ({e}): {text}"));
    assert_eq!(body["status"], status, "{context}: {body}");
    let code = body["code"].as_str().unwrap_or_default();
    assert!(!code.is_empty(), "{context}: no code in {body}");
    assert_eq!(
        body["type"],
        format!("urn:taskflow:problem:{code}"),
        "{context}"
    );
    assert!(
        body["title"].as_str().is_some_and(|t| !t.is_empty()),
        "{context}: {body}"
    );
    assert!(
        body["detail"].as_str().is_some_and(|t| !t.is_empty()),
        "{context}: {body}"
    );
    (status, body)
}

/// Asserts `response` is a problem with `status` and `code`, and returns the body.
pub async fn expect_problem(response: Response, status: u16, code: &str) -> Value {
    let (actual, body) = any_problem(response, code).await;
    assert_eq!(actual, status, "expected {status} {code}: {body}");
    assert_eq!(body["code"], code, "{body}");
    body
}

/// The `field` of every entry of a problem's `errors`.
pub fn error_fields(problem: &Value) -> Vec<String> {
    problem["errors"]
        .as_array()
        .map(|errors| {
            errors
                .iter()
                .map(|e| e["field"].as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// The `code` of the error entry for `field`.
pub fn error_code(problem: &Value, field: &str) -> Option<String> {
    problem["errors"]
        .as_array()?
        .iter()
        .find(|e| e["field"] == field)
        .and_then(|e| e["code"].as_str())
        .map(str::to_owned)
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// base64url without padding.
pub fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A JWT with `header` and `claims`, signed with HMAC-SHA256 over `secret`.
pub fn sign_jwt(secret: &[u8], header: &Value, claims: &Value) -> String {
    let signing_input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap();
    mac.update(signing_input.as_bytes());
    format!("{signing_input}.{}", b64(&mac.finalize().into_bytes()))
}

/// Claims our app accepts for `sub`: right issuer and audience, expiring in ten minutes.
pub fn good_claims(sub: &str) -> Value {
    let now = unix_now();
    json!({ "sub": sub, "iss": "taskflow", "aud": "taskflow", "iat": now, "exp": now + 600 })
}

/// An HS256 token signed with the test secret.
pub fn test_jwt(claims: &Value) -> String {
    sign_jwt(
        TEST_JWT_SECRET.as_bytes(),
        &json!({ "alg": "HS256", "typ": "JWT" }),
        claims,
    )
}

/// A user handle that authenticates with `token`.
pub fn user_with_token(user: &TestUser, token: &str) -> TestUser {
    TestUser {
        token: token.to_owned(),
        ..user.clone()
    }
}

/// `GET /api/v1/tasks?<query>` for `user`, asserting 200.
pub async fn list(app: &TestApp, user: &TestUser, query: &str) -> Value {
    let path = if query.is_empty() {
        "/api/v1/tasks".to_owned()
    } else {
        format!("/api/v1/tasks?{query}")
    };
    let response = app.authed(Method::GET, &path, user).send().await.unwrap();
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, 200, "GET {path}: {body}");
    body
}

/// The titles of a task list, in order.
pub fn titles(list: &Value) -> Vec<String> {
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["title"].as_str().unwrap().to_owned())
        .collect()
}

/// The ids of a task list, in order.
pub fn ids(list: &Value) -> Vec<String> {
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_owned())
        .collect()
}

/// `GET /api/v1/tasks/{id}` for `user`, asserting 200.
pub async fn get_task(app: &TestApp, user: &TestUser, id: &str) -> Value {
    let response = app
        .authed(Method::GET, &format!("/api/v1/tasks/{id}"), user)
        .send()
        .await
        .unwrap();
    expect_json(response, 200).await
}
