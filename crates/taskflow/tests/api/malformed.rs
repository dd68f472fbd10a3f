//! The malformed-input corpus: every route gets broken bodies, wrong types, unknown fields, huge
//! strings, bad dates and zones, bad queries, bad ids, bad headers. Every answer must be a 4xx
//! problem document, and afterwards the user's data must be exactly what it was.

// Helpers outside `#[test]` functions unwrap too: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use reqwest::{Method, RequestBuilder};
use serde_json::{Value, json};
use taskflow_domain::UserId;
use taskflow_store::TaskQuery;
use taskflow_testing::{TestApp, TestUser};

use crate::support::{any_problem, expect_json, get_task};

/// What a corpus entry must answer, beyond "a 4xx problem document".
#[derive(Clone, Copy, Debug)]
enum Expect {
    /// Exactly this status and code.
    Exactly(u16, &'static str),
    /// One of these statuses.
    OneOf(&'static [u16]),
    /// Any 4xx.
    Any,
}

/// One route of the API, with a valid body where it takes one.
struct Route {
    name: &'static str,
    method: Method,
    path: String,
    authed: bool,
    /// A valid body, and the fields it may carry with their kind.
    body: Option<(Value, &'static [(&'static str, Kind)])>,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Text,
    TextList,
    Integer,
}

const REGISTER_FIELDS: &[(&str, Kind)] = &[
    ("email", Kind::Text),
    ("password", Kind::Text),
    ("display_name", Kind::Text),
    ("time_zone", Kind::Text),
];
const LOGIN_FIELDS: &[(&str, Kind)] = &[("email", Kind::Text), ("password", Kind::Text)];
const TOKEN_FIELDS: &[(&str, Kind)] = &[("name", Kind::Text), ("expires_in_days", Kind::Integer)];
const CREATE_FIELDS: &[(&str, Kind)] = &[
    ("title", Kind::Text),
    ("description", Kind::Text),
    ("priority", Kind::Text),
    ("tags", Kind::TextList),
    ("due_at", Kind::Text),
    ("time_zone", Kind::Text),
];
const PATCH_FIELDS: &[(&str, Kind)] = &[
    ("title", Kind::Text),
    ("description", Kind::Text),
    ("priority", Kind::Text),
    ("tags", Kind::TextList),
    ("due_at", Kind::Text),
    ("time_zone", Kind::Text),
    ("status", Kind::Text),
];

/// The fixture: a user with a task, a completed task and a personal access token.
struct Fixture {
    app: TestApp,
    user: TestUser,
    task_id: String,
    token_id: String,
}

async fn fixture() -> Fixture {
    let app = TestApp::spawn().await;
    let user = app.register_user().await;
    let task = app
        .create_task(
            &user,
            json!({ "title": "keep me", "description": "as I am", "priority": "high", "tags": ["a", "b"],
                    "due_at": "2030-01-01T00:00:00Z", "time_zone": "Europe/Berlin" }),
        )
        .await;
    let done = app
        .create_task(
            &user,
            json!({ "title": "done", "due_at": "2001-01-01T00:00:00Z" }),
        )
        .await;
    let path = format!("/api/v1/tasks/{}/complete", done["id"].as_str().unwrap());
    expect_json(
        app.authed(Method::POST, &path, &user).send().await.unwrap(),
        200,
    )
    .await;
    let token = expect_json(
        app.authed(Method::POST, "/api/v1/tokens", &user)
            .json(&json!({ "name": "corpus" }))
            .send()
            .await
            .unwrap(),
        201,
    )
    .await;
    Fixture {
        task_id: task["id"].as_str().unwrap().to_owned(),
        token_id: token["id"].as_str().unwrap().to_owned(),
        app,
        user,
    }
}

fn routes(f: &Fixture) -> Vec<Route> {
    let task = format!("/api/v1/tasks/{}", f.task_id);
    let route = |name, method, path: &str, authed, body| Route {
        name,
        method,
        path: path.to_owned(),
        authed,
        body,
    };
    vec![
        route(
            "register",
            Method::POST,
            "/api/v1/auth/register",
            false,
            Some((
                json!({ "email": "corpus@example.com", "password": "long enough" }),
                REGISTER_FIELDS,
            )),
        ),
        route(
            "login",
            Method::POST,
            "/api/v1/auth/login",
            false,
            Some((
                json!({ "email": f.user.email, "password": "wrong password" }),
                LOGIN_FIELDS,
            )),
        ),
        route("me", Method::GET, "/api/v1/me", true, None),
        route(
            "create token",
            Method::POST,
            "/api/v1/tokens",
            true,
            Some((json!({ "name": "corpus 2" }), TOKEN_FIELDS)),
        ),
        route("list tokens", Method::GET, "/api/v1/tokens", true, None),
        route(
            "delete token",
            Method::DELETE,
            &format!("/api/v1/tokens/{}", f.token_id),
            true,
            None,
        ),
        route(
            "create task",
            Method::POST,
            "/api/v1/tasks",
            true,
            Some((json!({ "title": "corpus" }), CREATE_FIELDS)),
        ),
        route("list tasks", Method::GET, "/api/v1/tasks", true, None),
        route("get task", Method::GET, &task, true, None),
        route(
            "patch task",
            Method::PATCH,
            &task,
            true,
            Some((json!({ "title": "changed" }), PATCH_FIELDS)),
        ),
        route("delete task", Method::DELETE, &task, true, None),
        route(
            "complete",
            Method::POST,
            &format!("{task}/complete"),
            true,
            None,
        ),
        route(
            "reopen",
            Method::POST,
            &format!("{task}/reopen"),
            true,
            None,
        ),
        route("tags", Method::GET, "/api/v1/tags", true, None),
    ]
}

/// Sends `request` and checks the answer against `expect`.
async fn check(request: RequestBuilder, context: &str, expect: Expect) {
    let response = request
        .send()
        .await
        .unwrap_or_else(|e| panic!("{context}: {e}"));
    let (status, body) = any_problem(response, context).await;
    match expect {
        Expect::Exactly(want, code) => {
            assert_eq!(
                (status, body["code"].as_str().unwrap()),
                (want, code),
                "{context}: {body}"
            );
        }
        Expect::OneOf(statuses) => {
            assert!(statuses.contains(&status), "{context}: {status} {body}")
        }
        Expect::Any => {}
    }
}

fn request(f: &Fixture, route: &Route, method: Method, path: &str) -> RequestBuilder {
    let request = f.app.client.request(method, f.app.url(path));
    if route.authed {
        request.bearer_auth(&f.user.token)
    } else {
        request
    }
}

/// Everything observable about the user's data.
async fn snapshot(f: &Fixture) -> (Value, String) {
    let mut api = json!({});
    for path in [
        "/api/v1/tasks?limit=200",
        "/api/v1/tags",
        "/api/v1/tokens",
        "/api/v1/me",
    ] {
        api[path] = expect_json(
            f.app
                .authed(Method::GET, path, &f.user)
                .send()
                .await
                .unwrap(),
            200,
        )
        .await;
    }
    api["task"] = get_task(&f.app, &f.user, &f.task_id).await;
    let user: UserId = f.user.id.parse().unwrap();
    let mut query = TaskQuery::new(chrono::Utc::now());
    query.limit = TaskQuery::MAX_LIMIT;
    let stored = f.app.store.list_tasks(user, &query).await.unwrap();
    (api, format!("{:?}", stored.items))
}

fn nested(depth: usize, open: &str, close: &str) -> String {
    format!("{}{}", open.repeat(depth), close.repeat(depth))
}

/// Raw bodies that are not a usable JSON object; `field` is a text field the route knows, so the
/// syntax error is the first thing wrong.
fn broken_bodies(field: &str) -> Vec<(String, Vec<u8>, Expect)> {
    let malformed = Expect::Exactly(400, "malformed_json");
    let shape = Expect::Exactly(422, "validation_failed");
    let raw = |name: &str, bytes: &[u8], expect| (name.to_owned(), bytes.to_vec(), expect);
    let bodies = vec![
        raw("open brace", b"{", malformed),
        raw("empty", b"", malformed),
        raw("whitespace", b"   \n", malformed),
        raw("null", b"null", shape),
        raw("string", b"\"x\"", shape),
        raw("number", b"1", shape),
        raw("boolean", b"true", shape),
        // A complete object followed by garbage: 422 when the object itself lacks fields, else 400.
        raw("trailing garbage", b"{}x", Expect::OneOf(&[400, 422])),
        raw("two objects", b"{}{}", Expect::OneOf(&[400, 422])),
        raw("missing value", b"{\"title\":}", malformed),
        raw("single quotes", b"{'title':'x'}", malformed),
        raw("trailing comma", b"{\"title\":\"x\",}", malformed),
        raw("comment", b"{/* hi */}", malformed),
        raw("NaN", b"{\"title\":NaN}", malformed),
        raw("invalid UTF-8", b"{\"title\":\"\xff\xfe\"}", malformed),
        raw(
            "byte order mark",
            b"\xef\xbb\xbf{\"title\":\"x\"}",
            malformed,
        ),
        raw("lone high surrogate", br#"{"title":"\ud800"}"#, malformed),
        raw("lone low surrogate", br#"{"title":"\udc00x"}"#, malformed),
        raw(
            "reversed surrogates",
            br#"{"title":"\ude00\ud83d"}"#,
            malformed,
        ),
        raw("bad escape", br#"{"title":"\x41"}"#, malformed),
        raw(
            "raw control character",
            b"{\"title\":\"a\x01b\"}",
            malformed,
        ),
        (
            "10 000 nested arrays".into(),
            nested(10_000, "[", "]").into_bytes(),
            Expect::OneOf(&[400, 422]),
        ),
        (
            "10 000 nested objects".into(),
            nested(10_000, "{\"a\":", "}").into_bytes(),
            Expect::OneOf(&[400, 422]),
        ),
        (
            "nested arrays in a field".into(),
            format!("{{\"title\":{}}}", nested(10_000, "[", "]")).into_bytes(),
            Expect::OneOf(&[400, 422]),
        ),
    ];
    let field = field.as_bytes();
    bodies
        .into_iter()
        .map(|(name, bytes, expect)| {
            let mut replaced = Vec::with_capacity(bytes.len());
            let mut rest = &bytes[..];
            while let Some(i) = rest.windows(7).position(|w| w == b"\"title\"") {
                replaced.extend_from_slice(&rest[..=i]);
                replaced.extend_from_slice(field);
                replaced.push(b'"');
                rest = &rest[i + 7..];
            }
            replaced.extend_from_slice(rest);
            (name, replaced, expect)
        })
        .collect()
}

/// Values of the wrong JSON type for a field of `kind`.
fn wrong_types(kind: Kind) -> Vec<Value> {
    match kind {
        Kind::Text => vec![
            json!(1),
            json!(-1.5),
            json!(true),
            json!([]),
            json!(["x"]),
            json!({}),
            json!({ "x": "y" }),
        ],
        Kind::TextList => {
            vec![
                json!("work"),
                json!(1),
                json!(true),
                json!({}),
                json!([1]),
                json!([["x"]]),
                json!([null]),
                json!([{}]),
            ]
        }
        Kind::Integer => vec![
            json!("x"),
            json!("30"),
            json!(1.5),
            json!(true),
            json!([]),
            json!({}),
            json!(1e40),
        ],
    }
}

const BAD_DATES: &[&str] = &[
    "2026-13-01T00:00:00Z",
    "2026-02-30T00:00:00Z",
    "2026-04-31T00:00:00Z",
    "2026-01-01T24:00:01Z",
    "2026-01-01T00:60:00Z",
    "2026-01-01T00:00:00",
    "2026-01-01",
    "0000-01-01T00:00:00Z",
    "1899-12-31T23:59:59Z",
    "10000-01-01T00:00:00Z",
    "99999-01-01T00:00:00Z",
    "-2026-01-01T00:00:00Z",
    "2026-01-01T00:00:00+25:00",
    "2026-01-01T00:00:00 +01:00",
    "tomorrow",
    "1735689600",
    "",
];

const BAD_ZONES: &[&str] = &[
    "Mars/Base",
    "../../etc/passwd",
    "",
    "   ",
    "Europe/Berlin\u{0}",
    "Europe//Berlin",
    "+01:00",
    "GMT+25",
];

const BAD_QUERIES: &[&str] = &[
    "limit=-1",
    "limit=0",
    "limit=201",
    "limit=99999999999999999999",
    "limit=1e2",
    "limit=abc",
    "limit=",
    "limit=%201",
    "cursor=AAAA",
    "cursor=%21%21%21",
    "cursor=",
    // base64url of `{"x":1}`, of a cursor with a bad id, and of a cursor whose key has the wrong type
    "cursor=eyJ4IjoxfQ",
    "cursor=eyJzIjoiY3JlYXRlZF9hdCIsImQiOiJkZXNjIiwiayI6MSwiaSI6Im5vdC1hLXV1aWQifQ",
    "cursor=eyJzIjoiY3JlYXRlZF9hdCIsImQiOiJkZXNjIiwiayI6IngiLCJpIjoiMDE5MDAwMDAtMDAwMC03MDAwLTgwMDAtMDAwMDAwMDAwMDAwIn0",
    "foo=1",
    "Status=pending",
    "status=pending&status=completed",
    "sort=title&sort=due_at",
    "order=asc&order=desc",
    "limit=5&limit=6",
    "q=a&q=b",
    "cursor=a&cursor=b",
    "tag_mode=any&tag_mode=all",
    "overdue=true&overdue=false",
    "due_before=2030-01-01T00:00:00Z&due_before=2031-01-01T00:00:00Z",
    "status=done",
    "status=",
    "priority=HIGH",
    "priority=high,nope",
    "tag=has%20space",
    "tag=a%2Cb%23c",
    "tag_mode=some",
    "overdue=1",
    "sort=name",
    "sort=",
    "order=up",
    "due_before=2026-02-30T00:00:00Z",
    "due_after=0000-01-01T00:00:00Z",
    "due_after=2026-01-01",
];

const BAD_IDS: &[&str] = &[
    "not-a-uuid",
    "%00",
    "%FF",
    "%F0%9F%92%A9",
    "00000000-0000-0000-0000-00000000000g",
    "..%2F..%2Fetc%2Fpasswd",
    "1",
    "-1",
    "%20",
];

#[tokio::test]
async fn the_malformed_corpus_never_gets_past_validation() {
    let f = fixture().await;
    let before = snapshot(&f).await;
    let routes = routes(&f);
    let mut checked = 0;

    for route in &routes {
        let ctx = |what: &str| format!("{} {} [{}]: {what}", route.method, route.path, route.name);
        let send = |method: Method, path: &str| request(&f, route, method, path);

        if let Some((base, fields)) = &route.body {
            // Broken JSON.
            for (name, bytes, expect) in broken_bodies(fields[0].0) {
                let req = send(route.method.clone(), &route.path)
                    .header("content-type", "application/json")
                    .body(bytes);
                check(req, &ctx(&name), expect).await;
                checked += 1;
            }
            // An array is not an object, except that serde reads an empty one as "all defaults" for PATCH
            // (covered by `json_arrays_are_not_request_objects`).
            if route.name != "patch task" {
                let req = send(route.method.clone(), &route.path).json(&json!([]));
                check(
                    req,
                    &ctx("empty array"),
                    Expect::Exactly(422, "validation_failed"),
                )
                .await;
            }
            // Wrong types, field by field.
            for (field, kind) in *fields {
                for value in wrong_types(*kind) {
                    let mut body = base.clone();
                    body[*field] = value.clone();
                    let req = send(route.method.clone(), &route.path).json(&body);
                    let context = ctx(&format!("{field} = {value}"));
                    let response = req.send().await.unwrap();
                    let (status, problem) = any_problem(response, &context).await;
                    assert_eq!(
                        (status, problem["code"].as_str().unwrap()),
                        (422, "validation_failed"),
                        "{context}"
                    );
                    let reported = problem["errors"][0]["field"].as_str().unwrap();
                    assert!(
                        reported.starts_with(field),
                        "{context}: reported {reported}"
                    );
                    checked += 1;
                }
                // Huge values: 1 MB in one field is refused (too long, or too large).
                let mut body = base.clone();
                body[*field] = match kind {
                    Kind::Text => json!("a".repeat(1_000_000)),
                    Kind::TextList => json!(vec!["a".repeat(100); 9_000]),
                    Kind::Integer => json!(u64::MAX),
                };
                let expect = if route.name == "login" {
                    Expect::Any
                } else {
                    Expect::OneOf(&[413, 422])
                };
                check(
                    send(route.method.clone(), &route.path).json(&body),
                    &ctx(&format!("huge {field}")),
                    expect,
                )
                .await;
                checked += 1;
            }
            // Null where a value is required.
            for field in ["email", "password", "name", "title"] {
                if base.get(field).is_some() && route.name != "patch task" {
                    let mut body = base.clone();
                    body[field] = Value::Null;
                    let req = send(route.method.clone(), &route.path).json(&body);
                    check(
                        req,
                        &ctx(&format!("{field} = null")),
                        Expect::Exactly(422, "validation_failed"),
                    )
                    .await;
                    checked += 1;
                }
            }
            // Unknown fields, including ones a client might hope to set.
            for extra in [
                "extra",
                "id",
                "version",
                "user_id",
                "created_at",
                "is_admin",
                "Title",
                "",
            ] {
                let mut body = base.clone();
                body[extra] = json!("x");
                let req = send(route.method.clone(), &route.path).json(&body);
                check(
                    req,
                    &ctx(&format!("unknown field {extra:?}")),
                    Expect::Exactly(422, "validation_failed"),
                )
                .await;
                checked += 1;
            }
            // Duplicate keys.
            let duplicate = format!(
                "{{{}, {}}}",
                &base.to_string()[1..base.to_string().len() - 1],
                &base.to_string()[1..base.to_string().len() - 1]
            );
            let req = send(route.method.clone(), &route.path)
                .header("content-type", "application/json")
                .body(duplicate);
            check(
                req,
                &ctx("duplicate keys"),
                Expect::Exactly(422, "validation_failed"),
            )
            .await;
            // A body over the 1 MiB limit.
            let big = json!({ "title": "a".repeat(2 * 1024 * 1024) }).to_string();
            let req = send(route.method.clone(), &route.path)
                .header("content-type", "application/json")
                .body(big);
            check(
                req,
                &ctx("2 MiB body"),
                Expect::Exactly(413, "payload_too_large"),
            )
            .await;
            // Not declared as JSON.
            for content_type in [
                None,
                Some("text/plain"),
                Some("application/x-www-form-urlencoded"),
                Some("multipart/form-data; boundary=x"),
                Some("application/xml"),
                Some("application/jsonx"),
                Some("json"),
                Some(""),
            ] {
                let mut req = send(route.method.clone(), &route.path).body(base.to_string());
                if let Some(value) = content_type {
                    req = req.header("content-type", value);
                }
                check(
                    req,
                    &ctx(&format!("content-type {content_type:?}")),
                    Expect::Exactly(415, "unsupported_media_type"),
                )
                .await;
                checked += 1;
            }
            // Dates and zones.
            let date_field = fields.iter().any(|(name, _)| *name == "due_at");
            for date in BAD_DATES.iter().filter(|_| date_field) {
                let mut body = base.clone();
                body["due_at"] = json!(date);
                let req = send(route.method.clone(), &route.path).json(&body);
                check(
                    req,
                    &ctx(&format!("due_at {date:?}")),
                    Expect::Exactly(422, "validation_failed"),
                )
                .await;
                checked += 1;
            }
            let zone_field = fields.iter().any(|(name, _)| *name == "time_zone");
            for zone in BAD_ZONES.iter().filter(|_| zone_field) {
                let mut body = base.clone();
                body["time_zone"] = json!(zone);
                let req = send(route.method.clone(), &route.path).json(&body);
                check(
                    req,
                    &ctx(&format!("time_zone {zone:?}")),
                    Expect::Exactly(422, "validation_failed"),
                )
                .await;
                checked += 1;
            }
        }

        if route.authed {
            let missing = f
                .app
                .client
                .request(route.method.clone(), f.app.url(&route.path));
            check(
                missing,
                &ctx("no token"),
                Expect::Exactly(401, "missing_token"),
            )
            .await;
            for value in [
                "Bearer garbage",
                "Bearer",
                "Basic dXNlcjpwYXNz",
                "Bearer tfp_nope",
                "Bearer a.b.c",
            ] {
                let req = f
                    .app
                    .client
                    .request(route.method.clone(), f.app.url(&route.path))
                    .header("authorization", value);
                check(
                    req,
                    &ctx(&format!("authorization {value}")),
                    Expect::Exactly(401, "invalid_token"),
                )
                .await;
                checked += 1;
            }
        }

        if route.path.contains(&f.task_id) || route.path.contains(&f.token_id) {
            let real = if route.path.contains(&f.task_id) {
                &f.task_id
            } else {
                &f.token_id
            };
            let long = "a".repeat(5_000);
            for id in BAD_IDS.iter().copied().chain([long.as_str()]) {
                let path = route.path.replace(real.as_str(), id);
                let mut req = send(route.method.clone(), &path);
                if route.body.is_some() {
                    req = req.json(&json!({ "title": "x" }));
                }
                check(
                    req,
                    &ctx(&format!("id {}", &id[..id.len().min(40)])),
                    Expect::Exactly(400, "invalid_path_parameter"),
                )
                .await;
                checked += 1;
            }
            // Unknown ids are 404.
            let path = route
                .path
                .replace(real.as_str(), &uuid::Uuid::now_v7().to_string());
            let mut req = send(route.method.clone(), &path);
            if route.body.is_some() {
                req = req.json(&json!({ "title": "x" }));
            }
            check(req, &ctx("unknown id"), Expect::Exactly(404, "not_found")).await;
        }

        if route.path.contains(&f.task_id) && route.method != Method::GET {
            for (value, expect) in [
                (&b"1"[..], Expect::Exactly(400, "invalid_header")),
                (b"\"1", Expect::Exactly(400, "invalid_header")),
                (b"W/1", Expect::Exactly(400, "invalid_header")),
                (b"\xff", Expect::Exactly(400, "invalid_header")),
                (b"\"0\"", Expect::Exactly(412, "precondition_failed")),
                (b"W/\"1\"", Expect::Exactly(412, "precondition_failed")),
                (
                    b"\"99999999999999999999999\"",
                    Expect::Exactly(412, "precondition_failed"),
                ),
            ] {
                let header = reqwest::header::HeaderValue::from_bytes(value).unwrap();
                let mut req = send(route.method.clone(), &route.path).header("if-match", header);
                if route.body.is_some() {
                    req = req.json(&json!({ "title": "x" }));
                }
                check(
                    req,
                    &ctx(&format!("If-Match {}", String::from_utf8_lossy(value))),
                    expect,
                )
                .await;
                checked += 1;
            }
        }

        // Methods the route does not have.
        for method in [
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
            Method::POST,
            Method::GET,
        ] {
            let exists = routes
                .iter()
                .any(|r| r.path == route.path && r.method == method);
            if !exists {
                let req = send(method.clone(), &route.path).json(&json!({}));
                check(
                    req,
                    &ctx(&format!("method {method}")),
                    Expect::Exactly(405, "method_not_allowed"),
                )
                .await;
                checked += 1;
            }
        }
    }

    // Query strings of the list route.
    let list = routes.iter().find(|r| r.name == "list tasks").unwrap();
    let long_q = format!("q={}", "a".repeat(501));
    let long_cursor = format!("cursor={}", "A".repeat(10_000));
    let long_query = format!("foo={}", "a".repeat(9_000));
    for query in BAD_QUERIES.iter().copied().chain([
        long_q.as_str(),
        long_cursor.as_str(),
        long_query.as_str(),
    ]) {
        let req = request(&f, list, Method::GET, &format!("/api/v1/tasks?{query}"));
        check(
            req,
            &format!("GET /api/v1/tasks?{}", &query[..query.len().min(60)]),
            Expect::Exactly(400, "invalid_query_parameter"),
        )
        .await;
        checked += 1;
    }
    for path in [
        "/api/v1/task",
        "/api/v2/tasks",
        "/api/v1/tasks/x/archive",
        "/api/v1/tokens/x/y",
        "/api/v1/",
    ] {
        let req = f.app.client.get(f.app.url(path)).bearer_auth(&f.user.token);
        check(req, path, Expect::Exactly(404, "no_such_route")).await;
    }

    assert!(checked > 500, "the corpus ran {checked} requests");
    assert_eq!(
        snapshot(&f).await,
        before,
        "the corpus changed the user's data"
    );
    // None of the register attempts created the account.
    f.app.register("corpus@example.com").await;
}

#[tokio::test]
async fn json_arrays_are_not_request_objects() {
    let f = fixture().await;
    let before = snapshot(&f).await;
    let task = format!("/api/v1/tasks/{}", f.task_id);
    let cases = [
        (Method::PATCH, task.as_str(), json!([])),
        (Method::PATCH, task.as_str(), json!(["renamed by an array"])),
        (
            Method::POST,
            "/api/v1/tasks",
            json!(["title", null, null, null, null, null]),
        ),
        (Method::POST, "/api/v1/tokens", json!(["name", null])),
        (
            Method::POST,
            "/api/v1/auth/register",
            json!(["array@example.com", "long enough", null, null]),
        ),
    ];
    let mut accepted = Vec::new();
    for (method, path, body) in cases {
        let req = f
            .app
            .client
            .request(method.clone(), f.app.url(path))
            .bearer_auth(&f.user.token)
            .json(&body);
        let response = req.send().await.unwrap();
        if response.status().is_success() {
            accepted.push(format!("{method} {path} {body} -> {}", response.status()));
        } else {
            let (status, _) = any_problem(response, &format!("{method} {path} {body}")).await;
            assert_eq!(status, 422);
        }
    }
    assert!(
        accepted.is_empty(),
        "arrays accepted as objects: {accepted:#?}"
    );
    assert_eq!(snapshot(&f).await, before);
}

#[tokio::test]
async fn unusual_unicode_is_stored_verbatim_or_refused() {
    let f = fixture().await;
    let samples = [
        "a\u{0}b",
        "\u{202e}txt.exe",
        "zero\u{200b}width",
        "\u{200b}",
        "\u{feff}bom",
        "e\u{301}",
        "👍🏽 family 👨‍👩‍👧",
        "\u{e000}",
        "\u{ffff}",
        "\u{10ffff}",
        "\u{1b}[31mred",
        "next\u{85}line",
        "\u{2028}line separator",
    ];
    for sample in samples {
        for field in ["title", "description", "tags"] {
            let value = if field == "tags" {
                json!([sample])
            } else {
                json!(sample)
            };
            let mut body = json!({ "title": "unicode" });
            body[field] = value.clone();
            let response = f
                .app
                .authed(Method::POST, "/api/v1/tasks", &f.user)
                .json(&body)
                .send()
                .await
                .unwrap();
            let context = format!("{field} = {sample:?}");
            if response.status() == 201 {
                let created: Value = response.json().await.unwrap();
                let stored = get_task(&f.app, &f.user, created["id"].as_str().unwrap()).await;
                assert_eq!(stored, created, "{context}");
                let expected = match field {
                    "tags" => json!([sample.trim().to_lowercase()]),
                    "title" => json!(sample.trim()),
                    _ => value,
                };
                assert_eq!(stored[field], expected, "{context}: stored as sent");
                let path = format!("/api/v1/tasks/{}", created["id"].as_str().unwrap());
                assert_eq!(
                    f.app
                        .authed(Method::DELETE, &path, &f.user)
                        .send()
                        .await
                        .unwrap()
                        .status(),
                    204
                );
            } else {
                let (status, problem) = any_problem(response, &context).await;
                assert_eq!(status, 422, "{context}: {problem}");
            }
        }
    }
    // NUL and other C0/C1 controls never reach a title.
    for sample in ["a\u{0}b", "\u{1b}[31mred", "next\u{85}line"] {
        let response = f
            .app
            .authed(Method::POST, "/api/v1/tasks", &f.user)
            .json(&json!({ "title": sample }))
            .send()
            .await
            .unwrap();
        let (status, problem) = any_problem(response, sample).await;
        assert_eq!(
            (status, problem["errors"][0]["field"].as_str()),
            (422, Some("title"))
        );
    }
}
