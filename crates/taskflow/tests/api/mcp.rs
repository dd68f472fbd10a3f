//! The MCP server driven by the official MCP Python SDK client (`tests/py/mcp_check.py`):
//! `taskflow mcp` over stdio with a personal access token, and `/mcp` over Streamable HTTP with
//! a bearer token. Each run lists the tools, calls every one, checks results and tool errors,
//! and checks that another user's task cannot be read or changed.

use std::path::PathBuf;

use reqwest::Method;
use serde_json::json;
use taskflow_testing::{TestApp, TestUser, run_python};

use crate::support::{expect_json, expect_problem};

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/py/mcp_check.py")
}

async fn personal_token(app: &TestApp, user: &TestUser) -> String {
    let body = expect_json(
        app.authed(Method::POST, "/api/v1/tokens", user)
            .json(&json!({ "name": "assistant" }))
            .send()
            .await
            .unwrap(),
        201,
    )
    .await;
    body["token"].as_str().unwrap().to_owned()
}

async fn bobs_task(app: &TestApp) -> (TestUser, String) {
    let bob = app.register_user().await;
    let task = app
        .create_task(
            &bob,
            json!({ "title": "bob's private task", "due_at": "2030-01-01T10:00:00Z" }),
        )
        .await;
    (bob, task["id"].as_str().unwrap().to_owned())
}

async fn assert_unchanged(app: &TestApp, bob: &TestUser, id: &str) {
    let task = expect_json(
        app.authed(Method::GET, &format!("/api/v1/tasks/{id}"), bob)
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    assert_eq!(task["title"], "bob's private task");
    assert_eq!(task["status"], "pending");
    assert_eq!(task["version"], 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_python_sdk_drives_taskflow_mcp_over_stdio() {
    let app = TestApp::spawn().await;
    let ann = app.register_user().await;
    let token = personal_token(&app, &ann).await;
    let (bob, bobs) = bobs_task(&app).await;
    let database_url = format!("sqlite://{}/taskflow.db", app.data_dir.display());
    let data_dir = app.data_dir.join("mcp");
    std::fs::create_dir_all(&data_dir).unwrap();
    let data_dir = data_dir.to_str().unwrap().to_owned();
    let id = bobs.clone();
    let out = tokio::task::spawn_blocking(move || {
        let binary = env!("CARGO_BIN_EXE_taskflow");
        let args = ["stdio", binary, &database_url, &data_dir, &token, &id];
        run_python(&script(), &args, &[])
    })
    .await
    .unwrap();
    assert!(out.starts_with("ok "), "{out}");
    println!("{}", out.trim());
    assert_unchanged(&app, &bob, &bobs).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_python_sdk_drives_the_streamable_http_endpoint() {
    let app = TestApp::spawn().await;
    let ann = app.register_user().await;
    let (bob, bobs) = bobs_task(&app).await;
    let url = app.url("/mcp");
    let token = ann.token.clone();
    let id = bobs.clone();
    let out = tokio::task::spawn_blocking(move || {
        run_python(
            &script(),
            &["http", url.as_str(), token.as_str(), id.as_str()],
            &[],
        )
    })
    .await
    .unwrap();
    assert!(out.starts_with("ok "), "{out}");
    println!("{}", out.trim());
    assert_unchanged(&app, &bob, &bobs).await;
}

#[tokio::test]
async fn the_http_endpoint_needs_a_valid_bearer_token() {
    let app = TestApp::spawn().await;
    let initialize = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}});
    let response = app
        .client
        .post(app.url("/mcp"))
        .header("accept", "application/json, text/event-stream")
        .json(&initialize)
        .send()
        .await
        .unwrap();
    expect_problem(response, 401, "missing_token").await;
    let response = app
        .client
        .post(app.url("/mcp"))
        .bearer_auth("tfp_not-a-real-token")
        .header("accept", "application/json, text/event-stream")
        .json(&initialize)
        .send()
        .await
        .unwrap();
    expect_problem(response, 401, "invalid_token").await;
}
