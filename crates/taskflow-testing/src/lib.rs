//! Test harness: [`TestApp::spawn`] starts the real TaskFlow HTTP app in-process on port 0
//! with a fresh SQLite database in its own temporary folder, and offers helpers to register
//! users and call the API. With the `nats` feature, [`cluster`] runs several `taskflow serve`
//! processes on one PostgreSQL database and NATS JetStream. [`postgres::ScratchPostgres`] is a
//! database of a test's own, dropped afterwards.

#[cfg(feature = "nats")]
pub mod cluster;
pub mod postgres;

use std::path::PathBuf;
use std::sync::Arc;

use reqwest::{Client, RequestBuilder};
use serde_json::{Value, json};
use taskflow_bus::backends::memory::MemoryBus;
use taskflow_bus::consumer::{ConsumerRunner, RetryPolicy};
use taskflow_bus::relay::{OutboxRelay, RelaySettings};
use taskflow_bus::{EventBus, TopicNames};
use taskflow_domain::Clock;
use taskflow_domain::events::Topic;
use taskflow_http::AppState;
use taskflow_http::auth::{AuthSettings, Secret};
use taskflow_http::rate_limit::RateLimitSettings;
use taskflow_http::realtime::{RealtimeHub, RealtimeSettings};
use taskflow_store::Store;
use taskflow_store::sqlite::{SqliteSettings, SqliteStore};
use taskflow_workers::audit::{AUDIT_GROUP, AuditHandler};
use taskflow_workers::notifier::{
    DeliverySettings, DeliveryWorker, NOTIFIER_GROUP, NotifierHandler, run_deliveries,
};
use taskflow_workers::realtime::{RealtimeHandler, RealtimeUpdate, realtime_group};
use taskflow_workers::scheduler::{Scheduler, SchedulerSettings};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// The JWT secret every test app signs with.
pub const TEST_JWT_SECRET: &str = "test-secret-test-secret-test-secret!";

/// How to start a test app.
#[derive(Clone)]
pub struct TestOptions {
    /// Authentication settings (the secret defaults to [`TEST_JWT_SECRET`]).
    pub auth: AuthSettings,
    /// Rate limits (off by default so tests are not throttled).
    pub rate_limit: RateLimitSettings,
    /// Run the outbox relay and the audit consumer on the in-process bus (on by default).
    pub workers: bool,
    /// Retry policy of the audit consumer (fast by default).
    pub audit_retry: RetryPolicy,
    /// Limits of the real-time streams (the realtime feeder runs with the other workers).
    pub realtime: RealtimeSettings,
    /// Retries of webhook and e-mail deliveries (fast and without jitter by default).
    pub delivery_retry: taskflow_notify::RetryPolicy,
    /// An SMTP relay for e-mail deliveries (none by default: e-mail off).
    pub smtp: Option<taskflow_notify::SmtpSettings>,
    /// Source of "now" (default: the system clock). A fixed clock makes relative dates such
    /// as quick add's "tomorrow" deterministic; keep it in the future of the real clock, since
    /// access tokens it issues expire relative to it.
    pub clock: Option<Arc<dyn Clock>>,
}

impl Default for TestOptions {
    fn default() -> Self {
        Self {
            auth: AuthSettings {
                jwt_secret: Secret::new(TEST_JWT_SECRET),
                ..AuthSettings::default()
            },
            rate_limit: RateLimitSettings {
                enabled: false,
                ..RateLimitSettings::default()
            },
            workers: true,
            audit_retry: RetryPolicy {
                attempts: 3,
                initial_backoff: std::time::Duration::from_millis(10),
                max_backoff: std::time::Duration::from_millis(50),
                jitter: 0.1,
            },
            realtime: RealtimeSettings::default(),
            delivery_retry: taskflow_notify::RetryPolicy {
                max_attempts: 4,
                initial: std::time::Duration::from_millis(200),
                max: std::time::Duration::from_secs(2),
                jitter: 0.0,
            },
            smtp: None,
            clock: None,
        }
    }
}

/// A running app.
pub struct TestApp {
    /// `http://127.0.0.1:<port>`.
    pub address: String,
    /// A client without default headers.
    pub client: Client,
    /// The app's store, for checking what was persisted.
    pub store: Arc<dyn Store>,
    /// Folder holding the database; removed on drop.
    pub data_dir: PathBuf,
    shutdown: CancellationToken,
}

/// A registered user and their access token.
#[derive(Clone, Debug)]
pub struct TestUser {
    /// Account id.
    pub id: String,
    /// E-mail address.
    pub email: String,
    /// Password.
    pub password: String,
    /// Bearer token.
    pub token: String,
}

impl TestApp {
    /// Starts an app with default test options.
    pub async fn spawn() -> Self {
        Self::spawn_with(TestOptions::default()).await
    }

    /// Starts an app with `options`.
    pub async fn spawn_with(options: TestOptions) -> Self {
        let data_dir = std::env::temp_dir().join(format!("taskflow-test-{}", uuid::Uuid::now_v7()));
        let url = format!("sqlite://{}/taskflow.db", data_dir.display());
        let store = SqliteStore::connect(&SqliteSettings::new(url))
            .await
            .expect("open test database");
        store.migrate().await.expect("migrate test database");
        let store: Arc<dyn Store> = Arc::new(store);
        let clock: Arc<dyn Clock> = options
            .clock
            .clone()
            .unwrap_or_else(|| Arc::new(taskflow_domain::SystemClock));
        // Tests deliver webhooks to receivers on loopback.
        let mut state = AppState::new(
            store.clone(),
            clock.clone(),
            &options.auth,
            &options.rate_limit,
        )
        .with_webhook_policy(taskflow_notify::TargetPolicy {
            allow_private: true,
        });
        state.realtime = RealtimeHub::new(options.realtime.clone())
            .with_ticket_secret(options.auth.jwt_secret.expose().as_bytes());
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind port 0");
        let address = format!("http://{}", listener.local_addr().expect("local addr"));
        let shutdown = CancellationToken::new();
        if options.workers {
            let names = TopicNames::default();
            let bus: Arc<dyn EventBus> = Arc::new(MemoryBus::new(store.clone(), names.clone()));
            let relay = OutboxRelay::new(
                store.clone(),
                bus.clone(),
                names.clone(),
                clock.clone(),
                RelaySettings::default(),
            );
            tokio::spawn(relay.run(shutdown.clone()));
            let hub = state.realtime.clone();
            let feed = move |update: RealtimeUpdate| {
                hub.publish(update.user_id, &update.event_type, update.time, update.data);
            };
            let realtime = ConsumerRunner::new(
                realtime_group(bus.name()),
                Topic::TaskUpdates.name(),
                bus.clone(),
                store.clone(),
                names.clone(),
                clock.clone(),
                Arc::new(RealtimeHandler::new(Arc::new(feed), clock.now())),
                RetryPolicy::task_updates(),
            )
            .transient();
            tokio::spawn(realtime.run(shutdown.clone()));
            let audit = ConsumerRunner::new(
                AUDIT_GROUP,
                Topic::TaskEvents.name(),
                bus.clone(),
                store.clone(),
                names.clone(),
                clock.clone(),
                Arc::new(AuditHandler::new(store.clone(), clock.clone())),
                options.audit_retry.clone(),
            );
            tokio::spawn(audit.run(shutdown.clone()));
            let scheduler =
                Scheduler::new(store.clone(), clock.clone(), SchedulerSettings::default());
            let stop = shutdown.clone();
            tokio::spawn(taskflow_workers::scheduler::run(
                scheduler,
                Box::pin(async move { stop.cancelled().await }),
            ));
            let notifier = ConsumerRunner::new(
                NOTIFIER_GROUP,
                Topic::Reminders.name(),
                bus,
                store.clone(),
                names,
                clock.clone(),
                Arc::new(NotifierHandler::new(
                    store.clone(),
                    clock.clone(),
                    options.smtp.is_some(),
                )),
                options.audit_retry.clone(),
            );
            tokio::spawn(notifier.run(shutdown.clone()));
            let webhooks = taskflow_notify::WebhookSender::builder()
                .timeout(std::time::Duration::from_secs(5))
                .policy(taskflow_notify::TargetPolicy {
                    allow_private: true,
                })
                .build()
                .expect("webhook sender");
            let email = options
                .smtp
                .as_ref()
                .map(|smtp| taskflow_notify::EmailSender::new(smtp).expect("e-mail sender"));
            let worker = DeliveryWorker::new(
                store.clone(),
                clock,
                webhooks,
                email,
                DeliverySettings {
                    webhook_retry: options.delivery_retry.clone(),
                    email_retry: options.delivery_retry.clone(),
                    poll_interval: std::time::Duration::from_millis(200),
                    ..DeliverySettings::default()
                },
            );
            let stop = shutdown.clone();
            tokio::spawn(run_deliveries(
                worker,
                Box::pin(async move { stop.cancelled().await }),
            ));
        }
        let signal = shutdown.clone();
        tokio::spawn(taskflow_http::serve(listener, state, async move {
            signal.cancelled().await
        }));
        Self {
            address,
            client: Client::new(),
            store,
            data_dir,
            shutdown,
        }
    }

    /// The absolute URL of `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    /// A request with the user's bearer token.
    pub fn authed(&self, method: reqwest::Method, path: &str, user: &TestUser) -> RequestBuilder {
        self.client
            .request(method, self.url(path))
            .bearer_auth(&user.token)
    }

    /// Registers `email` with a fixed password and returns the user with a token.
    pub async fn register(&self, email: &str) -> TestUser {
        let password = "correct horse battery".to_owned();
        let response = self
            .client
            .post(self.url("/api/v1/auth/register"))
            .json(&json!({ "email": email, "password": password }))
            .send()
            .await
            .expect("register request");
        assert_eq!(response.status(), 201, "registering {email}");
        let body: Value = response.json().await.expect("register body");
        TestUser {
            id: body["user"]["id"].as_str().expect("user id").to_owned(),
            email: email.to_owned(),
            password,
            token: body["access_token"].as_str().expect("token").to_owned(),
        }
    }

    /// Registers a user with a unique e-mail.
    pub async fn register_user(&self) -> TestUser {
        self.register(&format!(
            "user-{}@example.com",
            uuid::Uuid::now_v7().simple()
        ))
        .await
    }

    /// Creates a task from `body` for `user`, asserting 201, and returns it.
    pub async fn create_task(&self, user: &TestUser, body: Value) -> Value {
        let response = self
            .authed(reqwest::Method::POST, "/api/v1/tasks", user)
            .json(&body)
            .send()
            .await
            .expect("create task");
        let status = response.status();
        let value: Value = response.json().await.expect("task body");
        assert_eq!(status, 201, "creating {body}: {value}");
        value
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

/// Polls `check` every 20 ms until it returns `Some`, for at most `timeout`; panics with `what`.
pub async fn eventually<T, F, Fut>(timeout: std::time::Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// The Python interpreter of the test virtualenv that `scripts/install-test-deps.sh` creates
/// (packages `mcp`, `icalendar`, `python-dateutil`, `recurring-ical-events`):
/// `$TASKFLOW_TEST_PYTHON`, else `$HOME/.cache/taskflow/venv/bin/python`.
pub fn test_python() -> PathBuf {
    if let Some(path) = std::env::var_os("TASKFLOW_TEST_PYTHON").filter(|p| !p.is_empty()) {
        return PathBuf::from(path);
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    PathBuf::from(home).join(".cache/taskflow/venv/bin/python")
}

/// Runs `script` with [`test_python`] and `args`, panicking with its output (and how to
/// install the packages) unless it exits 0; returns its standard output.
pub fn run_python(script: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> String {
    let python = test_python();
    let output = std::process::Command::new(&python)
        .arg(script)
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {} ({e}); run `bash scripts/install-test-deps.sh` or set TASKFLOW_TEST_PYTHON",
                python.display()
            )
        });
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{} {} failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{}",
        python.display(),
        script.display(),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// Starts `binary serve` (the `taskflow` binary under test) on 127.0.0.1:`port` in `dir`, without
/// the caller's `TASKFLOW_*` variables, with rate limits off and `env` set, output discarded; waits
/// until it accepts connections.
pub fn start_taskflow(
    binary: &str,
    dir: &std::path::Path,
    port: u16,
    env: &[(&str, &str)],
) -> std::process::Child {
    let mut command = std::process::Command::new(binary);
    for (key, _) in std::env::vars() {
        if key.starts_with("TASKFLOW_") {
            command.env_remove(key);
        }
    }
    let mut child = command
        .current_dir(dir)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .env("TASKFLOW_RATE_LIMIT__ENABLED", "false")
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start the taskflow binary");
    wait_until_listening(&mut child, port, "see its log");
    child
}

/// Kills `child` with SIGKILL (no chance to clean up) and reaps it.
pub fn kill9(mut child: std::process::Child) {
    std::process::Command::new("kill")
        .args(["-KILL", &child.id().to_string()])
        .status()
        .expect("run kill");
    let _ = child.wait();
}

/// Waits until the `taskflow` process `child` accepts connections on 127.0.0.1:`port`; panics
/// with `hint` (what to check) when it exits first or 30 s pass.
pub fn wait_until_listening(child: &mut std::process::Child, port: u16, hint: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        let exited = child.try_wait().ok().flatten();
        assert!(exited.is_none(), "the server exited ({exited:?}); {hint}");
        assert!(
            std::time::Instant::now() < deadline,
            "the server did not start; {hint}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Webhook requests a [`reminder_webhook_receiver`] received: (`TaskFlow-Delivery` id, the
/// event's `reminder_id`), in arrival order.
pub type ReminderWebhooks = std::sync::Arc<std::sync::Mutex<Vec<(String, String)>>>;

/// A webhook receiver on loopback for `reminder.due` deliveries: its URL and what it received.
/// It answers every request `200 ok`.
pub async fn reminder_webhook_receiver() -> (String, ReminderWebhooks) {
    use axum::extract::State;

    async fn receive(
        State(received): State<ReminderWebhooks>,
        headers: axum::http::HeaderMap,
        body: axum::body::Bytes,
    ) -> &'static str {
        let event: serde_json::Value = serde_json::from_slice(&body).expect("a JSON event");
        let delivery = headers["taskflow-delivery"]
            .to_str()
            .expect("a delivery id")
            .to_owned();
        let reminder = event["data"]["reminder_id"]
            .as_str()
            .expect("a reminder id")
            .to_owned();
        received
            .lock()
            .expect("receiver")
            .push((delivery, reminder));
        "ok"
    }

    let received = ReminderWebhooks::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the receiver");
    let url = format!("http://{}/hook", listener.local_addr().expect("address"));
    let router = axum::Router::new()
        .route("/hook", axum::routing::post(receive))
        .with_state(received.clone());
    tokio::spawn(async move { axum::serve(listener, router).await });
    (url, received)
}
