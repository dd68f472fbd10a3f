//! Real-time streams: SSE and WebSocket delivery, resumption, isolation, tickets, limits and
//! slow clients.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use taskflow_http::realtime::RealtimeSettings;
use taskflow_testing::{TestApp, TestOptions, TestUser};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const WAIT: Duration = Duration::from_secs(5);

async fn spawn() -> TestApp {
    TestApp::spawn_with(TestOptions {
        realtime: RealtimeSettings {
            max_connections_per_user: 3,
            replay_capacity: 5,
            session_queue: 8,
            ticket_ttl: Duration::from_secs(1),
            ..RealtimeSettings::default()
        },
        ..TestOptions::default()
    })
    .await
}

/// One parsed SSE event.
#[derive(Debug, Clone)]
struct SseEvent {
    id: Option<String>,
    event: String,
    data: Value,
}

impl SseEvent {
    fn seq(&self) -> i64 {
        self.id.as_deref().unwrap().parse().unwrap()
    }
}

struct Sse {
    response: reqwest::Response,
    buffer: String,
}

impl Sse {
    async fn open(app: &TestApp, user: &TestUser, last_event_id: Option<i64>) -> Sse {
        let mut request = app.authed(Method::GET, "/api/v1/stream", user);
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id.to_string());
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(
            response.headers()["content-type"].to_str().unwrap(),
            "text/event-stream"
        );
        Sse {
            response,
            buffer: String::new(),
        }
    }

    /// The next event within `wait`, skipping comments (heartbeats).
    async fn next_within(&mut self, wait: Duration) -> Option<SseEvent> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            while let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let (mut id, mut event, mut data) = (None, "message".to_owned(), String::new());
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id:") {
                        id = Some(v.trim().to_owned());
                    } else if let Some(v) = line.strip_prefix("event:") {
                        event = v.trim().to_owned();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim_start());
                    }
                }
                if !data.is_empty() {
                    return Some(SseEvent {
                        id,
                        event,
                        data: serde_json::from_str(&data).unwrap(),
                    });
                }
            }
            let chunk = tokio::time::timeout_at(deadline, self.response.chunk())
                .await
                .ok()?
                .unwrap()?;
            self.buffer.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    }

    async fn next(&mut self) -> SseEvent {
        self.next_within(WAIT).await.expect("an event in time")
    }
}

async fn create(app: &TestApp, user: &TestUser, title: &str) -> Value {
    app.create_task(user, json!({ "title": title })).await
}

async fn call(app: &TestApp, user: &TestUser, method: Method, path: &str, body: Option<Value>) {
    let mut request = app.authed(method, path, user);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    assert!(
        response.status().is_success(),
        "{path}: {}",
        response.status()
    );
}

fn task_path(task: &Value) -> String {
    format!("/api/v1/tasks/{}", task["id"].as_str().unwrap())
}

async fn assert_problem(response: reqwest::Response, status: u16, code: &str) {
    assert_eq!(response.status(), status);
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "application/problem+json"
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], code, "{body}");
}

#[tokio::test]
async fn sse_delivers_every_change_in_order_with_increasing_ids() {
    let app = spawn().await;
    let user = app.register_user().await;
    let mut stream = Sse::open(&app, &user, None).await;
    let task = create(&app, &user, "Stream me").await;
    let path = task_path(&task);
    call(
        &app,
        &user,
        Method::PATCH,
        &path,
        Some(json!({ "title": "Renamed" })),
    )
    .await;
    call(&app, &user, Method::POST, &format!("{path}/complete"), None).await;
    call(&app, &user, Method::DELETE, &path, None).await;

    let mut last = 0;
    let mut seen = Vec::new();
    for _ in 0..4 {
        let event = stream.next().await;
        assert_eq!(event.event, "task.changed");
        assert!(
            event.seq() > last,
            "ids increase: {} after {last}",
            event.seq()
        );
        last = event.seq();
        assert_eq!(event.data["task_id"], task["id"]);
        assert_eq!(event.data["user_id"].as_str().unwrap(), user.id);
        seen.push((
            event.data["change"].as_str().unwrap().to_owned(),
            event.data["task"]["title"].clone(),
            event.data["task"]["status"].clone(),
        ));
    }
    assert_eq!(
        seen,
        [
            ("upserted".into(), json!("Stream me"), json!("pending")),
            ("upserted".into(), json!("Renamed"), json!("pending")),
            ("upserted".into(), json!("Renamed"), json!("completed")),
            ("deleted".into(), Value::Null, Value::Null),
        ]
    );
    assert!(
        stream
            .next_within(Duration::from_millis(300))
            .await
            .is_none()
    );
}

#[tokio::test]
async fn resuming_replays_exactly_the_missed_updates_or_asks_for_a_resync() {
    let app = spawn().await;
    let user = app.register_user().await;
    let mut watcher = Sse::open(&app, &user, None).await;
    let mut first = Sse::open(&app, &user, None).await;
    let task = create(&app, &user, "one").await;
    let seen = first.next().await.seq();
    assert_eq!(watcher.next().await.seq(), seen);
    drop(first);

    let path = task_path(&task);
    call(
        &app,
        &user,
        Method::PATCH,
        &path,
        Some(json!({ "title": "two" })),
    )
    .await;
    call(
        &app,
        &user,
        Method::PATCH,
        &path,
        Some(json!({ "title": "three" })),
    )
    .await;
    let missed = [watcher.next().await.seq(), watcher.next().await.seq()];

    let mut resumed = Sse::open(&app, &user, Some(seen)).await;
    let replayed = [resumed.next().await, resumed.next().await];
    assert_eq!(
        replayed.iter().map(SseEvent::seq).collect::<Vec<_>>(),
        missed
    );
    assert_eq!(replayed[1].data["task"]["title"], "three");
    assert!(
        resumed
            .next_within(Duration::from_millis(300))
            .await
            .is_none()
    );
    drop(resumed);

    // `?resume_from=` does the same.
    let response = app
        .authed(
            Method::GET,
            &format!("/api/v1/stream?resume_from={}", missed[0]),
            &user,
        )
        .send()
        .await
        .unwrap();
    let mut by_query = Sse {
        response,
        buffer: String::new(),
    };
    assert_eq!(by_query.next().await.seq(), missed[1]);
    drop(by_query);

    // Six more changes push the first ones out of the five-entry replay log.
    for i in 0..6 {
        call(
            &app,
            &user,
            Method::PATCH,
            &path,
            Some(json!({ "title": format!("t{i}") })),
        )
        .await;
    }
    let mut latest = 0;
    for _ in 0..6 {
        latest = watcher.next().await.seq();
    }
    let mut behind = Sse::open(&app, &user, Some(seen)).await;
    let resync = behind.next().await;
    assert_eq!(resync.event, "resync");
    assert_eq!(resync.data["reason"], "too_far_behind");
    assert_eq!(resync.seq(), latest);
    // The session goes on live after the resync.
    call(
        &app,
        &user,
        Method::PATCH,
        &path,
        Some(json!({ "title": "live" })),
    )
    .await;
    let live = behind.next().await;
    assert_eq!(live.data["task"]["title"], "live");
    assert!(live.seq() > latest);
}

#[tokio::test]
async fn a_user_never_sees_another_users_updates() {
    let app = spawn().await;
    let alice = app.register_user().await;
    let bob = app.register_user().await;
    let mut bobs = Sse::open(&app, &bob, None).await;
    let mut alices = Sse::open(&app, &alice, None).await;
    for i in 0..3 {
        create(&app, &alice, &format!("alice {i}")).await;
    }
    let own = create(&app, &bob, "bob's").await;
    let first = bobs.next().await;
    assert_eq!(first.data["task_id"], own["id"]);
    assert!(bobs.next_within(Duration::from_millis(300)).await.is_none());
    for _ in 0..3 {
        assert_eq!(
            alices.next().await.data["user_id"].as_str().unwrap(),
            alice.id
        );
    }
    assert!(
        alices
            .next_within(Duration::from_millis(300))
            .await
            .is_none()
    );
}

async fn ticket(app: &TestApp, user: &TestUser) -> String {
    let response = app
        .authed(Method::POST, "/api/v1/stream/tickets", user)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["expires_in"], 1);
    body["ticket"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn tickets_open_a_stream_once_and_expire() {
    let app = spawn().await;
    let user = app.register_user().await;
    let ticket = ticket(&app, &user).await;
    let url = app.url(&format!("/api/v1/stream?ticket={ticket}"));
    let response = app.client.get(&url).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let mut stream = Sse {
        response,
        buffer: String::new(),
    };
    create(&app, &user, "via ticket").await;
    assert_eq!(stream.next().await.data["task"]["title"], "via ticket");

    assert_problem(
        app.client.get(&url).send().await.unwrap(),
        401,
        "ticket_used",
    )
    .await;
    let stale = self::ticket(&app, &user).await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let url = app.url(&format!("/api/v1/stream?ticket={stale}"));
    assert_problem(
        app.client.get(&url).send().await.unwrap(),
        401,
        "ticket_expired",
    )
    .await;
    // A ticket is not an access token.
    let fresh = self::ticket(&app, &user).await;
    let response = app
        .client
        .get(app.url("/api/v1/me"))
        .bearer_auth(&fresh)
        .send()
        .await
        .unwrap();
    assert_problem(response, 401, "invalid_token").await;
}

#[tokio::test]
async fn streams_without_valid_credentials_are_refused_as_problems() {
    let app = spawn().await;
    let user = app.register_user().await;
    for path in ["/api/v1/stream", "/api/v1/ws"] {
        let url = app.url(path);
        assert_problem(
            app.client.get(&url).send().await.unwrap(),
            401,
            "missing_token",
        )
        .await;
        let response = app
            .client
            .get(&url)
            .bearer_auth("nonsense")
            .send()
            .await
            .unwrap();
        assert_problem(response, 401, "invalid_token").await;
        let response = app
            .client
            .get(app.url(&format!("{path}?ticket=forged")))
            .send()
            .await
            .unwrap();
        assert_problem(response, 401, "invalid_ticket").await;
        // Long-lived tokens are never taken from the URL.
        let response = app
            .client
            .get(app.url(&format!("{path}?access_token={}", user.token)))
            .send()
            .await
            .unwrap();
        assert_problem(response, 400, "invalid_query_parameter").await;
    }
    let response = app
        .client
        .post(app.url("/api/v1/stream/tickets"))
        .send()
        .await
        .unwrap();
    assert_problem(response, 401, "missing_token").await;
}

#[tokio::test]
async fn too_many_streams_of_one_user_get_429() {
    let app = spawn().await;
    let user = app.register_user().await;
    let other = app.register_user().await;
    let mut open = Vec::new();
    for _ in 0..3 {
        open.push(Sse::open(&app, &user, None).await);
    }
    let response = app
        .authed(Method::GET, "/api/v1/stream", &user)
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["retry-after"], "5");
    assert_problem(response, 429, "rate_limited").await;
    let ws = WsClient::connect(
        &app,
        &format!("/api/v1/ws?ticket={}", ticket(&app, &user).await),
    )
    .await;
    assert!(ws.is_err(), "the cap counts WebSockets too");
    // Others are not affected, and a closed stream frees its place.
    Sse::open(&app, &other, None).await;
    drop(open.pop());
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let response = app
            .authed(Method::GET, "/api/v1/stream", &user)
            .send()
            .await
            .unwrap();
        if response.status() == 200 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the place was never freed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A minimal WebSocket client (text frames in, pings answered).
struct WsClient {
    stream: TcpStream,
    buffer: Vec<u8>,
}

impl WsClient {
    async fn connect(app: &TestApp, path: &str) -> Result<WsClient, String> {
        let mut stream = TcpStream::connect(app.address.trim_start_matches("http://"))
            .await
            .unwrap();
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut buffer = Vec::new();
        let mut byte = [0u8; 1];
        while !buffer.ends_with(b"\r\n\r\n") {
            if stream.read(&mut byte).await.unwrap() == 0 {
                break;
            }
            buffer.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&buffer).into_owned();
        if !head.starts_with("HTTP/1.1 101") {
            return Err(head);
        }
        Ok(WsClient {
            stream,
            buffer: Vec::new(),
        })
    }

    async fn fill(&mut self, at_least: usize) -> Option<()> {
        while self.buffer.len() < at_least {
            let mut chunk = [0u8; 8192];
            let n = self.stream.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            self.buffer.extend_from_slice(&chunk[..n]);
        }
        Some(())
    }

    /// The next text frame as JSON, answering pings; `None` on close.
    async fn next_json(&mut self) -> Option<Value> {
        loop {
            self.fill(2).await?;
            let opcode = self.buffer[0] & 0x0f;
            let (len, header) = match self.buffer[1] & 0x7f {
                126 => {
                    self.fill(4).await?;
                    (
                        u16::from_be_bytes([self.buffer[2], self.buffer[3]]) as usize,
                        4,
                    )
                }
                127 => {
                    self.fill(10).await?;
                    let mut bytes = [0u8; 8];
                    bytes.copy_from_slice(&self.buffer[2..10]);
                    (u64::from_be_bytes(bytes) as usize, 10)
                }
                n => (n as usize, 2),
            };
            self.fill(header + len).await?;
            let payload: Vec<u8> = self.buffer.drain(..header + len).skip(header).collect();
            match opcode {
                1 => return Some(serde_json::from_slice(&payload).unwrap()),
                8 => return None,
                9 => {
                    // Pong, masked with a zero key.
                    let mut frame = vec![0x8a, 0x80 | payload.len() as u8, 0, 0, 0, 0];
                    frame.extend_from_slice(&payload);
                    self.stream.write_all(&frame).await.ok()?;
                }
                _ => {}
            }
        }
    }

    /// Sends a text frame (masked with a zero key, as clients must mask).
    async fn send_text(&mut self, payload: &[u8]) -> std::io::Result<()> {
        let mut frame = vec![0x81];
        match payload.len() {
            n if n < 126 => frame.push(0x80 | n as u8),
            n if n <= usize::from(u16::MAX) => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                frame.push(0x80 | 127);
                frame.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        frame.extend_from_slice(&[0, 0, 0, 0]);
        frame.extend_from_slice(payload);
        self.stream.write_all(&frame).await
    }

    async fn next(&mut self) -> Value {
        tokio::time::timeout(WAIT, self.next_json())
            .await
            .expect("a frame in time")
            .expect("an open socket")
    }
}

#[tokio::test]
async fn websocket_delivers_the_same_updates_and_resumes() {
    let app = spawn().await;
    let user = app.register_user().await;
    let mut sse = Sse::open(&app, &user, None).await;
    let mut ws = WsClient::connect(
        &app,
        &format!("/api/v1/ws?ticket={}", ticket(&app, &user).await),
    )
    .await
    .unwrap();
    let task = create(&app, &user, "over ws").await;
    let frame = ws.next().await;
    let event = sse.next().await;
    assert_eq!(frame["type"], "task.changed");
    assert_eq!(frame["seq"].as_i64().unwrap(), event.seq());
    assert_eq!(frame["data"], event.data);
    let seen = event.seq();
    drop(ws);

    call(
        &app,
        &user,
        Method::PATCH,
        &task_path(&task),
        Some(json!({ "title": "missed" })),
    )
    .await;
    let missed = sse.next().await.seq();
    let path = format!(
        "/api/v1/ws?ticket={}&resume_from={seen}",
        ticket(&app, &user).await
    );
    let mut resumed = WsClient::connect(&app, &path).await.unwrap();
    let frame = resumed.next().await;
    assert_eq!(frame["seq"].as_i64().unwrap(), missed);
    assert_eq!(frame["data"]["task"]["title"], "missed");
    call(
        &app,
        &user,
        Method::POST,
        &format!("{}/complete", task_path(&task)),
        None,
    )
    .await;
    assert_eq!(resumed.next().await["data"]["task"]["status"], "completed");

    let plain = app
        .authed(Method::GET, "/api/v1/ws", &user)
        .send()
        .await
        .unwrap();
    assert_eq!(
        plain.status(),
        400,
        "a plain GET is not a WebSocket handshake"
    );
}

#[tokio::test]
async fn a_slow_client_is_dropped_without_slowing_the_others() {
    let app = spawn().await;
    let user = app.register_user().await;
    let task = create(&app, &user, "big").await;
    // A client that never reads, with a tiny receive buffer.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut slow = socket
        .connect(app.address.trim_start_matches("http://").parse().unwrap())
        .await
        .unwrap();
    let request = format!(
        "GET /api/v1/stream HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nAuthorization: Bearer {}\r\n\r\n",
        user.token
    );
    slow.write_all(request.as_bytes()).await.unwrap();
    let mut fast = Sse::open(&app, &user, None).await;
    tokio::time::sleep(Duration::from_millis(100)).await;

    // ~20 KB per update: a few hundred fill the socket buffers and the eight-update queue.
    let description = "x".repeat(19_000);
    let path = task_path(&task);
    let updates = 400;
    for i in 0..updates {
        let started = tokio::time::Instant::now();
        call(
            &app,
            &user,
            Method::PATCH,
            &path,
            Some(json!({ "description": format!("{i}{description}") })),
        )
        .await;
        let mut event = fast.next().await;
        // Under load the task's creation can reach the hub after the sessions opened.
        while i == 0 && event.data["task"]["description"] == "" {
            event = fast.next().await;
        }
        assert!(
            event.data["task"]["description"]
                .as_str()
                .unwrap()
                .starts_with(&format!("{i}x")),
            "the fast session gets every update in order"
        );
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "update {i} was slow"
        );
    }

    // The slow client now drains: some updates, then a resync, then the end of the stream.
    let mut received = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), slow.read_to_end(&mut received)).await;
    let text = String::from_utf8_lossy(&received);
    assert!(read.is_ok(), "the dropped stream ends");
    assert!(
        text.contains("event: resync"),
        "a resync instruction is sent"
    );
    assert!(text.contains("slow_consumer"));
    let delivered = text.matches("event: task.changed").count();
    assert!(
        delivered < updates,
        "the slow session was cut short ({delivered})"
    );
}

#[tokio::test]
async fn websocket_ignores_client_messages_but_closes_on_oversized_ones() {
    let app = spawn().await;
    let user = app.register_user().await;
    let path = format!("/api/v1/ws?ticket={}", ticket(&app, &user).await);
    let mut ws = WsClient::connect(&app, &path).await.unwrap();
    ws.send_text(b"hello").await.unwrap();
    create(&app, &user, "still streaming").await;
    assert_eq!(ws.next().await["data"]["task"]["title"], "still streaming");
    // Over the 64 KiB limit: the server ends the stream rather than buffer what it ignores.
    let _ = ws.send_text(&vec![b'x'; 64 * 1024 + 1]).await;
    let after = tokio::time::timeout(WAIT, ws.next_json())
        .await
        .expect("the server ends the stream in time");
    assert!(after.is_none(), "{after:?}");
}
