//! The web UI as the real app serves it (the browser tests in `web/e2e` drive it).

use taskflow_testing::TestApp;

#[tokio::test]
async fn the_web_ui_is_served_at_the_root() {
    let app = TestApp::spawn().await;
    let response = reqwest::get(app.url("/")).await.unwrap();
    assert_eq!(response.status(), 200);
    let policy = response.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(!policy.contains("unsafe-inline"), "{policy}");
    assert!(response.text().await.unwrap().contains("/ui/js/main.js"));
}
