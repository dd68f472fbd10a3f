//! The load generator of `taskflow bench fanout`: opens many SSE and WebSocket streams, each from
//! a chosen loopback source address, keeps them open and timestamps what arrives on each.
//!
//! A process may hold fewer than 20 000 open files here, so the benchmark runs several load
//! generators as child processes (`taskflow bench fanout --fanout-client`), each told what to open
//! by one JSON line on its standard input and answering commands line by line on its standard
//! output (see [`run_child`]). The single-process phases use [`Streams`] directly.
//!
//! Each socket is bound to its source address (127.0.0.x, port chosen by the kernel) before it
//! connects: one source address has only the ephemeral ports 32768–60999, so a few tens of
//! thousands of connections need several.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use http_body_util::{BodyExt as _, Empty};
use hyper::body::Bytes;
use hyper::header::{AUTHORIZATION, HOST};
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::io::AsyncBufReadExt as _;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{Notify, Semaphore, mpsc};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// How long one stream may take to open.
const OPEN_TIMEOUT: Duration = Duration::from_secs(60);

/// Which stream to open.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StreamKind {
    /// `GET /api/v1/stream` (Server-Sent Events).
    Sse,
    /// `GET /api/v1/ws` (WebSocket).
    Ws,
}

impl StreamKind {
    /// The name used in output and result files.
    pub fn name(self) -> &'static str {
        match self {
            Self::Sse => "sse",
            Self::Ws => "ws",
        }
    }
}

/// One stream to open.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Target {
    /// The server's address.
    pub server: SocketAddr,
    /// The local address the socket is bound to before connecting.
    pub source: IpAddr,
    /// SSE or WebSocket.
    pub kind: StreamKind,
    /// Index of the access token (in the list given with the targets) to open it with.
    pub token: usize,
}

/// What a load-generator child process is asked to open (its first line of input).
#[derive(Debug, Serialize, Deserialize)]
pub struct ClientSpec {
    /// The streams, in the order reports list them.
    pub targets: Vec<Target>,
    /// Access tokens the targets refer to.
    pub tokens: Vec<String>,
    /// Streams being opened at the same time.
    pub open_concurrency: usize,
}

/// How opening went.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct OpenReport {
    /// Streams the server accepted (200 for SSE, 101 for WebSocket).
    pub opened: usize,
    /// Streams that could not be opened.
    pub failed: usize,
    /// The first few distinct reasons of failures.
    pub errors: Vec<String>,
    /// Seconds opening all of them took.
    pub secs: f64,
}

/// What one stream has seen.
#[derive(Default)]
struct Slot {
    /// Open and not closed by the server.
    open: AtomicBool,
    /// Unix microseconds of the first update carrying the armed marker (0: none yet).
    change_at: AtomicI64,
    /// Heartbeats (SSE comments, WebSocket pings) since the last arming.
    heartbeats: AtomicU32,
}

struct Shared {
    slots: Vec<Slot>,
    /// The marker (a task title, quoted) whose update is being waited for.
    marker: RwLock<Vec<u8>>,
    /// Streams that received the armed marker.
    arrivals: AtomicUsize,
    arrived: Notify,
}

impl Shared {
    fn heartbeat(&self, index: usize) {
        self.slots[index].heartbeats.fetch_add(1, Ordering::Relaxed);
    }

    /// Records the arrival time of an update if it carries the armed marker.
    fn update(&self, index: usize, at: i64, payload: &[u8]) {
        let slot = &self.slots[index];
        if slot.change_at.load(Ordering::Acquire) != 0 {
            return;
        }
        let carries = {
            let marker = self.marker.read().unwrap_or_else(|p| p.into_inner());
            !marker.is_empty()
                && payload
                    .windows(marker.len())
                    .any(|w| w == marker.as_slice())
        };
        if carries
            && slot
                .change_at
                .compare_exchange(0, at, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            self.arrivals.fetch_add(1, Ordering::AcqRel);
            self.arrived.notify_waiters();
        }
    }
}

/// Open streams and what arrived on them; dropping it closes them.
pub struct Streams {
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Streams {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Unix time in microseconds (every process on the machine reads the same clock).
pub fn unix_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

impl Streams {
    /// Opens every target (`concurrency` at a time) and returns once each is open or failed.
    pub async fn open(
        targets: &[Target],
        tokens: &[String],
        concurrency: usize,
    ) -> (Self, OpenReport) {
        let started = Instant::now();
        let shared = Arc::new(Shared {
            slots: targets.iter().map(|_| Slot::default()).collect(),
            marker: RwLock::new(Vec::new()),
            arrivals: AtomicUsize::new(0),
            arrived: Notify::new(),
        });
        let gate = Arc::new(Semaphore::new(concurrency.max(1)));
        let (results, mut outcomes) = mpsc::unbounded_channel::<Result<(), String>>();
        let mut tasks = Vec::with_capacity(targets.len());
        for (index, target) in targets.iter().enumerate() {
            let token: Arc<str> = tokens
                .get(target.token)
                .map_or("".into(), |t| t.as_str().into());
            let (shared, gate, results, target) = (
                shared.clone(),
                gate.clone(),
                results.clone(),
                target.clone(),
            );
            tasks.push(tokio::spawn(async move {
                let Ok(permit) = gate.acquire_owned().await else {
                    return;
                };
                let opened = tokio::time::timeout(OPEN_TIMEOUT, connect(&target, &token)).await;
                drop(permit);
                let stream = match opened {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(error)) => {
                        let _ = results.send(Err(error));
                        return;
                    }
                    Err(_) => {
                        let _ = results.send(Err("timed out opening".into()));
                        return;
                    }
                };
                shared.slots[index].open.store(true, Ordering::Release);
                let _ = results.send(Ok(()));
                drop(results);
                stream.read(&shared, index).await;
                shared.slots[index].open.store(false, Ordering::Release);
            }));
        }
        drop(results);
        let mut report = OpenReport::default();
        while let Some(outcome) = outcomes.recv().await {
            match outcome {
                Ok(()) => report.opened += 1,
                Err(error) => {
                    report.failed += 1;
                    if report.errors.len() < 5 && !report.errors.contains(&error) {
                        report.errors.push(error);
                    }
                }
            }
        }
        report.secs = started.elapsed().as_secs_f64();
        (Self { shared, tasks }, report)
    }

    /// Waits for the update whose task title is `marker` from now on, and restarts counting
    /// heartbeats.
    pub fn arm(&self, marker: &str) {
        let mut armed = self
            .shared
            .marker
            .write()
            .unwrap_or_else(|p| p.into_inner());
        *armed = format!("\"title\":\"{marker}\"").into_bytes();
        for slot in &self.shared.slots {
            slot.change_at.store(0, Ordering::Release);
            slot.heartbeats.store(0, Ordering::Relaxed);
        }
        self.shared.arrivals.store(0, Ordering::Release);
    }

    /// Streams that received the armed update so far.
    pub fn arrived(&self) -> usize {
        self.shared.arrivals.load(Ordering::Acquire)
    }

    /// Waits until `expected` streams received the armed update, at most `limit`; returns how
    /// many did.
    pub async fn wait_for(&self, expected: usize, limit: Duration) -> usize {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let notified = self.shared.arrived.notified();
            let arrived = self.arrived();
            if arrived >= expected {
                return arrived;
            }
            let wake = deadline.min(tokio::time::Instant::now() + Duration::from_millis(50));
            if tokio::time::timeout_at(wake, notified).await.is_err()
                && tokio::time::Instant::now() >= deadline
            {
                return self.arrived();
            }
        }
    }

    /// Per stream, when the armed update arrived (Unix microseconds), in target order.
    pub fn arrivals(&self) -> Vec<Option<i64>> {
        self.shared
            .slots
            .iter()
            .map(|s| Some(s.change_at.load(Ordering::Acquire)).filter(|at| *at != 0))
            .collect()
    }

    /// Per stream, whether it is open, in target order.
    pub fn open_flags(&self) -> Vec<bool> {
        self.shared
            .slots
            .iter()
            .map(|s| s.open.load(Ordering::Acquire))
            .collect()
    }

    /// Streams still open.
    pub fn alive(&self) -> usize {
        self.shared
            .slots
            .iter()
            .filter(|s| s.open.load(Ordering::Acquire))
            .count()
    }

    /// Streams that received at least one heartbeat since the last arming.
    pub fn with_heartbeat(&self) -> usize {
        self.shared
            .slots
            .iter()
            .filter(|s| s.heartbeats.load(Ordering::Relaxed) > 0)
            .count()
    }
}

/// An open stream, ready to be read.
enum OpenStream {
    Sse(Box<SseStream>),
    Ws(Box<tokio_tungstenite::WebSocketStream<TcpStream>>),
}

/// An SSE response being received.
struct SseStream {
    // Kept so hyper keeps the connection for the streaming response.
    _sender: hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
    connection: hyper::client::conn::http1::Connection<TokioIo<TcpStream>, Empty<Bytes>>,
    body: hyper::body::Incoming,
}

async fn tcp(target: &Target) -> Result<TcpStream, String> {
    let socket = match target.source {
        IpAddr::V4(_) => TcpSocket::new_v4(),
        IpAddr::V6(_) => TcpSocket::new_v6(),
    }
    .map_err(|e| format!("socket: {e}"))?;
    socket
        .bind(SocketAddr::new(target.source, 0))
        .map_err(|e| format!("bind {}: {e}", target.source))?;
    let stream = socket
        .connect(target.server)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

async fn connect(target: &Target, token: &str) -> Result<OpenStream, String> {
    let stream = tcp(target).await?;
    match target.kind {
        StreamKind::Sse => {
            let (mut sender, mut connection) = hyper::client::conn::http1::Builder::new()
                .handshake(TokioIo::new(stream))
                .await
                .map_err(|e| format!("http handshake: {e}"))?;
            let request = hyper::Request::get("/api/v1/stream")
                .header(HOST, target.server.to_string())
                .header(AUTHORIZATION, format!("Bearer {token}"))
                .body(Empty::new())
                .map_err(|e| format!("request: {e}"))?;
            let response = tokio::select! {
                response = sender.send_request(request) => {
                    response.map_err(|e| format!("request: {e}"))?
                }
                ended = &mut connection => {
                    return Err(format!("connection ended: {ended:?}"));
                }
            };
            if response.status() != hyper::StatusCode::OK {
                return Err(format!("SSE answered {}", response.status().as_u16()));
            }
            Ok(OpenStream::Sse(Box::new(SseStream {
                _sender: sender,
                connection,
                body: response.into_body(),
            })))
        }
        StreamKind::Ws => {
            let mut request = format!("ws://{}/api/v1/ws", target.server)
                .into_client_request()
                .map_err(|e| format!("request: {e}"))?;
            request.headers_mut().insert(
                AUTHORIZATION,
                format!("Bearer {token}")
                    .parse()
                    .map_err(|_| "token is not a header value".to_owned())?,
            );
            let config = WebSocketConfig::default().read_buffer_size(4096);
            let (socket, _) =
                tokio_tungstenite::client_async_with_config(request, stream, Some(config))
                    .await
                    .map_err(|e| match e {
                        tokio_tungstenite::tungstenite::Error::Http(response) => {
                            format!("WebSocket answered {}", response.status().as_u16())
                        }
                        other => format!("WebSocket handshake: {other}"),
                    })?;
            Ok(OpenStream::Ws(Box::new(socket)))
        }
    }
}

impl OpenStream {
    /// Reads until the server closes the stream, recording updates and heartbeats.
    async fn read(self, shared: &Shared, index: usize) {
        match self {
            Self::Sse(stream) => {
                let SseStream {
                    _sender,
                    mut connection,
                    mut body,
                } = *stream;
                let reading = async {
                    let mut pending: Vec<u8> = Vec::new();
                    while let Some(Ok(frame)) = body.frame().await {
                        let Ok(data) = frame.into_data() else {
                            continue;
                        };
                        let at = unix_micros();
                        pending.extend_from_slice(&data);
                        while let Some(end) = pending.windows(2).position(|w| w == b"\n\n") {
                            let block: Vec<u8> = pending.drain(..end + 2).collect();
                            if block.starts_with(b":") {
                                shared.heartbeat(index);
                            } else {
                                shared.update(index, at, &block);
                            }
                        }
                        if pending.capacity() > 4096 && pending.is_empty() {
                            pending = Vec::new();
                        }
                    }
                };
                tokio::select! {
                    _ = reading => {}
                    _ = &mut connection => {}
                }
            }
            Self::Ws(mut socket) => {
                while let Some(Ok(message)) = socket.next().await {
                    match message {
                        Message::Text(text) => {
                            shared.update(index, unix_micros(), text.as_bytes());
                        }
                        Message::Ping(_) => shared.heartbeat(index),
                        Message::Close(_) => break,
                        _ => {}
                    }
                }
            }
        }
    }
}

/// `taskflow bench fanout --fanout-client`: a load generator in its own process.
///
/// Input, one JSON object per line: first a [`ClientSpec`]; then commands
/// `{"cmd": "arm", "marker": "…"}`, `{"cmd": "count"}`, `{"cmd": "report"}`, `{"cmd": "exit"}`.
/// Output, one JSON object per line: `{"type": "opened", …OpenReport}` once every stream is
/// open or failed; `{"type": "armed"}`; `{"type": "count", "arrived", "alive", "heartbeats"}`;
/// `{"type": "report", "arrivals": [unix µs or null, …], "open": [bool, …], "alive",
/// "heartbeats"}` (lists in target order).
pub async fn run_child() -> anyhow::Result<()> {
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let spec: ClientSpec = match lines.next_line().await? {
        Some(line) => serde_json::from_str(&line)?,
        None => anyhow::bail!("no client spec on standard input"),
    };
    let (streams, report) = Streams::open(&spec.targets, &spec.tokens, spec.open_concurrency).await;
    let mut opened = serde_json::to_value(&report)?;
    opened["type"] = json!("opened");
    say(&opened);
    while let Some(line) = lines.next_line().await? {
        let command: Value = serde_json::from_str(&line)?;
        match command["cmd"].as_str() {
            Some("arm") => {
                streams.arm(command["marker"].as_str().unwrap_or_default());
                say(&json!({"type": "armed"}));
            }
            Some("count") => say(&json!({
                "type": "count", "arrived": streams.arrived(), "alive": streams.alive(),
                "heartbeats": streams.with_heartbeat(),
            })),
            Some("report") => say(&json!({
                "type": "report", "arrivals": streams.arrivals(), "open": streams.open_flags(),
                "alive": streams.alive(),
                "heartbeats": streams.with_heartbeat(),
            })),
            _ => break,
        }
    }
    drop(streams);
    Ok(())
}

fn say(value: &Value) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{value}");
    let _ = out.flush();
}
