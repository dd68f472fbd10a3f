//! Settings: defaults, then the config file, then `TASKFLOW_…` environment variables, then
//! command-line flags; validated at start with messages that say how to fix a mistake.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};
use taskflow_http::auth::{AuthSettings, Secret};
use taskflow_http::rate_limit::RateLimitSettings;

/// Everything TaskFlow can be told at start.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Address the HTTP server binds, e.g. `127.0.0.1:8080` or `0.0.0.0:8080`.
    pub listen: String,
    /// Folder for the embedded database and generated secrets.
    pub data_dir: PathBuf,
    /// Database connection.
    pub database: DatabaseSettings,
    /// Logging.
    pub log: LogSettings,
    /// OpenTelemetry traces.
    pub telemetry: TelemetrySettings,
    /// Authentication.
    pub auth: AuthSettings,
    /// Request budgets.
    pub rate_limit: RateLimitSettings,
    /// Seconds in-flight requests get to finish after SIGTERM/SIGINT.
    pub shutdown_grace_secs: u64,
    /// Seconds a client may take to send a request's headers (and a keep-alive connection may
    /// sit idle between requests) before the connection is closed.
    pub header_read_timeout_secs: u64,
    /// Where secrets come from.
    pub secrets: SecretsSettings,
    /// Roles this process runs (`api`, `relay`, `audit`, `realtime`, `scheduler`, `notifier`);
    /// empty means all. A list, or one
    /// comma-separated string (as from `TASKFLOW_ROLES=api,relay`).
    #[serde(deserialize_with = "list_or_csv")]
    pub roles: Vec<String>,
    /// The event bus.
    pub bus: BusSettings,
    /// The reminder scheduler.
    pub scheduler: SchedulerConfig,
    /// The notifier: channels, retries, quiet-hours handling.
    pub notifications: NotificationSettings,
    /// The stdio MCP server (`taskflow mcp`).
    pub mcp: McpSettings,
    /// Limits of the real-time streams (SSE and WebSocket).
    pub realtime: RealtimeConfig,
}

/// `[realtime]`: limits of the SSE and WebSocket streams this process serves.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RealtimeConfig {
    /// Open streams (SSE and WebSocket together) one user may hold on this instance; one more
    /// is answered 429.
    pub max_connections_per_user: usize,
    /// Updates a session may have waiting before it is dropped as too slow (with a `resync`).
    pub session_queue: usize,
    /// Updates kept per user for resumption.
    pub replay_capacity: usize,
    /// Seconds updates are kept for resumption (and an idle user's log survives).
    pub replay_window_secs: u64,
    /// Seconds between SSE heartbeat comments and WebSocket pings.
    pub heartbeat_secs: u64,
    /// Seconds a stream ticket (`POST /api/v1/stream/tickets`) stays valid.
    pub ticket_ttl_secs: u64,
}

impl Default for RealtimeConfig {
    fn default() -> Self {
        let hub = taskflow_http::realtime::RealtimeSettings::default();
        Self {
            max_connections_per_user: hub.max_connections_per_user,
            session_queue: hub.session_queue,
            replay_capacity: hub.replay_capacity,
            replay_window_secs: hub.replay_window.as_secs(),
            heartbeat_secs: hub.heartbeat.as_secs(),
            ticket_ttl_secs: hub.ticket_ttl.as_secs(),
        }
    }
}

impl RealtimeConfig {
    /// The hub's settings.
    pub fn hub_settings(&self) -> taskflow_http::realtime::RealtimeSettings {
        use std::time::Duration;
        taskflow_http::realtime::RealtimeSettings {
            max_connections_per_user: self.max_connections_per_user,
            replay_capacity: self.replay_capacity,
            replay_window: Duration::from_secs(self.replay_window_secs),
            session_queue: self.session_queue,
            heartbeat: Duration::from_secs(self.heartbeat_secs),
            ticket_ttl: Duration::from_secs(self.ticket_ttl_secs),
        }
    }

    /// Checks every limit is within its bounds.
    pub fn validate(&self) -> Result<(), SettingsError> {
        let checks: [(&'static str, u64, u64, u64, &str); 6] = [
            (
                "realtime.max_connections_per_user",
                self.max_connections_per_user as u64,
                1,
                1_000_000,
                "streams per user and instance",
            ),
            (
                "realtime.session_queue",
                self.session_queue as u64,
                1,
                65_536,
                "updates waiting per session",
            ),
            (
                "realtime.replay_capacity",
                self.replay_capacity as u64,
                1,
                1_000_000,
                "updates kept per user",
            ),
            (
                "realtime.replay_window_secs",
                self.replay_window_secs,
                1,
                86_400,
                "seconds",
            ),
            (
                "realtime.heartbeat_secs",
                self.heartbeat_secs,
                1,
                300,
                "seconds (proxies close idle streams after 60 s or more)",
            ),
            (
                "realtime.ticket_ttl_secs",
                self.ticket_ttl_secs,
                5,
                3600,
                "seconds",
            ),
        ];
        for (key, value, min, max, unit) in checks {
            if value < min || value > max {
                return Err(SettingsError::Invalid {
                    key,
                    message: format!("use {min} to {max} {unit}"),
                });
            }
        }
        Ok(())
    }
}

/// `[scheduler]`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SchedulerConfig {
    /// Seconds a claim on due reminders holds before another scheduler may take it over.
    pub lease_secs: u64,
    /// Most reminders fired in one transaction.
    pub batch: u32,
    /// Upcoming instants kept in memory.
    pub horizon: u32,
    /// Milliseconds between reads of the table for reminders other processes scheduled.
    pub poll_interval_ms: u64,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            lease_secs: 30,
            batch: 5000,
            horizon: 1000,
            poll_interval_ms: 1000,
        }
    }
}

/// `[notifications]`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NotificationSettings {
    /// The web UI's public base URL, for links in e-mails (empty: no links).
    pub public_url: String,
    /// Webhook delivery: `timeout_secs`, `allow_private_targets` (refused by default:
    /// loopback, private and link-local targets).
    pub webhooks: taskflow_notify::WebhookSettings,
    /// Retries of webhook deliveries: `max_attempts`, `initial_delay_secs`, `max_delay_secs`, `jitter`.
    pub webhook_retry: taskflow_notify::RetryPolicy,
    /// E-mail through SMTP; off unless `email_enabled`.
    pub email_enabled: bool,
    /// The SMTP relay: `host`, `port`, `security` (`none`, `starttls`, `tls`), `username`,
    /// `password`, `from`, `timeout_secs`.
    pub smtp: taskflow_notify::SmtpSettings,
    /// Retries of e-mail deliveries.
    pub email_retry: taskflow_notify::RetryPolicy,
    /// Seconds a claim on deliveries holds before another notifier may take it over.
    pub lease_secs: u64,
    /// Most deliveries attempted at the same time.
    pub concurrency: usize,
    /// Milliseconds between reads of the table for deliveries other processes created.
    pub poll_interval_ms: u64,
}

impl Default for NotificationSettings {
    fn default() -> Self {
        Self {
            public_url: String::new(),
            webhooks: Default::default(),
            webhook_retry: Default::default(),
            email_enabled: false,
            smtp: Default::default(),
            email_retry: Default::default(),
            lease_secs: 120,
            concurrency: 16,
            poll_interval_ms: 1000,
        }
    }
}

/// `[telemetry]`: OpenTelemetry traces, exported over OTLP/HTTP when an endpoint is set.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetrySettings {
    /// The collector's OTLP/HTTP base URL, e.g. `http://otel-collector:4318` (spans go to
    /// `<url>/v1/traces`). Empty: nothing is exported, but trace ids still travel through events
    /// and appear in JSON logs.
    pub otlp_endpoint: String,
    /// `service.name` of the exported spans.
    pub service_name: String,
    /// OTLP transport; `http/protobuf` is the one built in.
    pub protocol: String,
    /// Share of new traces recorded and exported (0.0 … 1.0); a request that continues a trace
    /// follows the caller's sampling decision.
    pub sampling_ratio: f64,
    /// Seconds one export request may take.
    pub export_timeout_secs: u64,
}

impl Default for TelemetrySettings {
    fn default() -> Self {
        Self {
            otlp_endpoint: String::new(),
            service_name: "taskflow".into(),
            protocol: "http/protobuf".into(),
            sampling_ratio: 1.0,
            export_timeout_secs: 10,
        }
    }
}

impl TelemetrySettings {
    /// Where spans are posted (`<otlp_endpoint>/v1/traces`), or `None` when export is off.
    pub fn traces_endpoint(&self) -> Option<String> {
        let base = self.otlp_endpoint.trim().trim_end_matches('/');
        if base.is_empty() {
            None
        } else if base.ends_with("/v1/traces") {
            Some(base.to_owned())
        } else {
            Some(format!("{base}/v1/traces"))
        }
    }

    /// Checks the endpoint, protocol, name and ratio.
    pub fn validate(&self) -> Result<(), SettingsError> {
        let invalid = |key, message: String| Err(SettingsError::Invalid { key, message });
        let endpoint = self.otlp_endpoint.trim();
        if !endpoint.is_empty() {
            let usable = url::Url::parse(endpoint).ok().filter(|url| {
                matches!(url.scheme(), "http" | "https")
                    && url.host_str().is_some_and(|h| !h.is_empty())
                    && url.query().is_none()
            });
            if usable.is_none() {
                return invalid(
                    "telemetry.otlp_endpoint",
                    format!(
                        "`{}` is not an OTLP/HTTP URL; use the collector's base URL such as http://otel-collector:4318, or leave it empty to export nothing",
                        redact_url(&self.otlp_endpoint)
                    ),
                );
            }
        }
        if self.protocol != "http/protobuf" {
            return invalid(
                "telemetry.protocol",
                format!(
                    "`{}` is not available; use `http/protobuf` (OTLP over HTTP, port 4318 on most collectors)",
                    self.protocol
                ),
            );
        }
        if self.service_name.trim().is_empty() {
            return invalid(
                "telemetry.service_name",
                "name the service, e.g. `taskflow`".into(),
            );
        }
        if !(0.0..=1.0).contains(&self.sampling_ratio) {
            return invalid(
                "telemetry.sampling_ratio",
                "use a share from 0.0 (no new traces) to 1.0 (every trace)".into(),
            );
        }
        if self.export_timeout_secs == 0 || self.export_timeout_secs > 300 {
            return invalid("telemetry.export_timeout_secs", "use 1 to 300".into());
        }
        Ok(())
    }
}

/// `[mcp]`: how `taskflow mcp` acts.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct McpSettings {
    /// The personal access token (`tfp_…`) of the user the stdio MCP server acts for;
    /// usually given as `TASKFLOW_MCP__TOKEN` in the assistant's configuration.
    pub token: Secret,
}

fn list_or_csv<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum ListOrCsv {
        List(Vec<String>),
        Csv(String),
    }
    Ok(match ListOrCsv::deserialize(deserializer)? {
        ListOrCsv::List(list) => list,
        ListOrCsv::Csv(text) => text
            .split(',')
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect(),
    })
}

/// `[secrets]`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SecretsSettings {
    /// `config` (the values in this file / the environment) or `dapr` (read at start through the
    /// sidecar's secrets API, e.g. from a Kubernetes secret store).
    pub backend: String,
    /// The Dapr secret store component.
    pub dapr_store: String,
    /// The secret (in that store) holding TaskFlow's secrets; its `jwt-secret` entry becomes
    /// `auth.jwt_secret`.
    pub dapr_secret: String,
}

impl Default for SecretsSettings {
    fn default() -> Self {
        Self {
            backend: "config".into(),
            dapr_store: "kubernetes".into(),
            dapr_secret: "taskflow".into(),
        }
    }
}

/// `[bus]`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BusSettings {
    /// `memory` (in-process; the outbox is the log), `nats`, `kafka` or `dapr`.
    pub backend: String,
    /// Physical topic names: `prefix` and per-topic overrides.
    pub topics: taskflow_bus::TopicNames,
    /// Outbox rows the relay publishes per batch.
    pub relay_batch_size: u32,
    /// Batches the relay may have sent to the broker before it acknowledged them (1 waits for
    /// each batch's acknowledgements before sending the next).
    pub relay_batches_in_flight: usize,
    /// Milliseconds between outbox checks when no commit woke the relay (other processes' writes).
    pub relay_poll_interval_ms: u64,
    /// Hours published outbox rows and processed-event records are kept.
    pub retention_hours: u64,
    /// Attempts (including the first) before a task event is dead-lettered by a consumer.
    pub task_event_attempts: u32,
    /// Partitions of created topics (Kafka); ordering holds per user within a partition.
    pub partitions: u32,
    /// The Dapr sidecar, for `backend = "dapr"` and `secrets.backend = "dapr"`.
    #[cfg(feature = "dapr")]
    pub dapr: taskflow_bus::backends::dapr::DaprSettings,
    /// NATS JetStream, for `backend = "nats"`.
    #[cfg(feature = "nats")]
    pub nats: taskflow_bus::backends::nats::NatsSettings,
    /// Kafka (or a Kafka-compatible service), for `backend = "kafka"`.
    #[cfg(feature = "kafka")]
    pub kafka: taskflow_bus::backends::kafka::KafkaSettings,
}

impl BusSettings {
    /// Every topic TaskFlow publishes to, with its dead-letter topic, as the broker should hold them.
    pub fn topic_specs(&self) -> Vec<taskflow_bus::TopicSpec> {
        taskflow_domain::events::Topic::ALL
            .iter()
            .flat_map(|t| {
                [
                    t.name().to_owned(),
                    taskflow_domain::events::dead_letter_topic(t.name()),
                ]
            })
            .map(|logical| taskflow_bus::TopicSpec {
                name: self.topics.physical(&logical),
                partitions: self.partitions,
                retention: std::time::Duration::from_secs(self.retention_hours * 3600),
            })
            .collect()
    }
}

impl Default for BusSettings {
    fn default() -> Self {
        Self {
            backend: "memory".into(),
            topics: taskflow_bus::TopicNames::default(),
            relay_batch_size: 500,
            relay_batches_in_flight: 4,
            relay_poll_interval_ms: 1000,
            retention_hours: 24 * 7,
            task_event_attempts: 3,
            partitions: 12,
            #[cfg(feature = "dapr")]
            dapr: Default::default(),
            #[cfg(feature = "nats")]
            nats: Default::default(),
            #[cfg(feature = "kafka")]
            kafka: Default::default(),
        }
    }
}

/// A role a process can run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The HTTP API.
    Api,
    /// The outbox relay.
    Relay,
    /// The audit consumer.
    Audit,
    /// The realtime feeder: `task-updates` → this process's SSE/WebSocket sessions (run it
    /// wherever the API runs).
    Realtime,
    /// The reminder scheduler: fires reminders at their instants.
    Scheduler,
    /// The notifier: `reminders` → in-app feed, webhooks, e-mail.
    Notifier,
}

impl Role {
    /// Every role.
    pub const ALL: [Role; 6] = [
        Role::Api,
        Role::Relay,
        Role::Audit,
        Role::Realtime,
        Role::Scheduler,
        Role::Notifier,
    ];

    fn parse(name: &str) -> Option<Self> {
        match name.trim() {
            "api" => Some(Self::Api),
            "relay" => Some(Self::Relay),
            "audit" => Some(Self::Audit),
            "realtime" => Some(Self::Realtime),
            "scheduler" => Some(Self::Scheduler),
            "notifier" => Some(Self::Notifier),
            _ => None,
        }
    }
}

/// Largest `database.sqlite_mmap_mib`: SQLite maps at most 0x7fff0000 bytes (its
/// `SQLITE_MAX_MMAP_SIZE`) and silently caps larger requests.
pub const MAX_SQLITE_MMAP_MIB: u64 = 2047;

/// `[database]`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseSettings {
    /// `sqlite://path/file.db`. Empty: `sqlite://<data_dir>/taskflow.db`.
    pub url: String,
    /// Pool size: reader connections on SQLite (there is always exactly one writer besides),
    /// all connections on PostgreSQL.
    pub max_connections: u32,
    /// Seconds to wait for a free connection.
    pub acquire_timeout_secs: u64,
    /// SQLite durability: `full` (survives power loss) or `normal` (survives process crashes).
    pub sqlite_synchronous: String,
    /// SQLite WAL checkpoints: `background` (the default: a thread of their own, copying a few
    /// milliseconds of commits at a time) or `commit` (SQLite's automatic ones, inside the
    /// commit that filled the log).
    pub sqlite_checkpoints: String,
    /// SQLite: MiB of the database file each connection reads through a memory map (0 … 2047;
    /// 0 reads every page with a system call).
    pub sqlite_mmap_mib: u64,
    /// PostgreSQL: seconds a statement may run before the server cancels it.
    pub statement_timeout_secs: u64,
}

/// `[log]`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSettings {
    /// `pretty` (human-readable; `text` is the same) or `json` (one object per line, with
    /// `trace_id` and `span_id` inside a span).
    pub format: String,
    /// A `tracing` filter such as `info` or `taskflow=debug,info`; `RUST_LOG` overrides it.
    pub level: String,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            data_dir: PathBuf::from("./taskflow-data"),
            database: DatabaseSettings::default(),
            log: LogSettings::default(),
            telemetry: TelemetrySettings::default(),
            auth: AuthSettings::default(),
            rate_limit: RateLimitSettings::default(),
            shutdown_grace_secs: 30,
            header_read_timeout_secs: 30,
            secrets: SecretsSettings::default(),
            roles: Vec::new(),
            bus: BusSettings::default(),
            scheduler: SchedulerConfig::default(),
            notifications: NotificationSettings::default(),
            mcp: McpSettings::default(),
            realtime: RealtimeConfig::default(),
        }
    }
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        Self {
            url: String::new(),
            max_connections: 4,
            acquire_timeout_secs: 10,
            sqlite_synchronous: "full".into(),
            sqlite_checkpoints: "background".into(),
            sqlite_mmap_mib: 1024,
            statement_timeout_secs: 30,
        }
    }
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            format: "pretty".into(),
            level: "info".into(),
        }
    }
}

/// Values given on the command line, which win over everything else.
#[derive(Clone, Debug, Default, Serialize)]
pub struct CliOverrides {
    /// `--listen`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    /// `--data-dir`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    /// `--database-url`, `--log-format`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database: Option<DatabaseOverride>,
    /// `--log-format`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log: Option<LogOverride>,
    /// `--roles`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub roles: Option<Vec<String>>,
}

/// `--database-url`.
#[derive(Clone, Debug, Serialize)]
pub struct DatabaseOverride {
    /// The URL.
    pub url: String,
}

/// `--log-format`.
#[derive(Clone, Debug, Serialize)]
pub struct LogOverride {
    /// The format.
    pub format: String,
}

/// A settings problem, worded for the person starting TaskFlow.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// The config file named with `--config` does not exist.
    #[error("config file {0} does not exist; create it or drop --config")]
    MissingFile(PathBuf),
    /// The file or environment could not be read into settings.
    #[error("{0}")]
    Load(String),
    /// A value is out of bounds.
    #[error("invalid setting {key}: {message}")]
    Invalid {
        /// Dotted key, e.g. `database.url`.
        key: &'static str,
        /// How to fix it.
        message: String,
    },
}

impl Settings {
    /// Loads settings from `config_file` (or `./taskflow.toml` when it exists), the environment and `cli`.
    pub fn load(config_file: Option<&Path>, cli: &CliOverrides) -> Result<Self, SettingsError> {
        let mut figment = Figment::from(Serialized::defaults(Settings::default()));
        match config_file {
            Some(path) if !path.exists() => {
                return Err(SettingsError::MissingFile(path.to_owned()));
            }
            Some(path) => figment = figment.merge(Toml::file(path)),
            None => figment = figment.merge(Toml::file("taskflow.toml")),
        }
        let settings: Settings = figment
            .merge(Env::prefixed("TASKFLOW_").split("__").ignore(&["config"]))
            .merge(Serialized::defaults(cli))
            .extract()
            .map_err(|e| {
                SettingsError::Load(format!(
                    "{e}\nSettings come from the config file, TASKFLOW_<SECTION>__<KEY> environment variables \
                     (e.g. TASKFLOW_DATABASE__URL) and flags; see `taskflow --help` and the README."
                ))
            })?;
        settings.validate()?;
        Ok(settings)
    }

    /// Checks values that types alone cannot.
    pub fn validate(&self) -> Result<(), SettingsError> {
        self.listen_addr()?;
        if !(1..=3600).contains(&self.header_read_timeout_secs) {
            return Err(SettingsError::Invalid {
                key: "header_read_timeout_secs",
                message: "use a number of seconds from 1 to 3600".into(),
            });
        }
        let url = self.database_url();
        if !(url.starts_with("sqlite:")
            || url.starts_with("postgres://")
            || url.starts_with("postgresql://"))
        {
            let shown = url.split('@').next_back().unwrap_or_default();
            return Err(SettingsError::Invalid {
                key: "database.url",
                message: format!(
                    "`…{shown}` is not a database TaskFlow supports; use sqlite://path/to/file.db or postgres://user:password@host:5432/database"
                ),
            });
        }
        if self.scheduler.batch == 0
            || self.scheduler.horizon == 0
            || self.scheduler.lease_secs == 0
        {
            return Err(SettingsError::Invalid {
                key: "scheduler",
                message: "batch, horizon and lease_secs must be at least 1".into(),
            });
        }
        for (key, policy) in [
            (
                "notifications.webhook_retry",
                &self.notifications.webhook_retry,
            ),
            ("notifications.email_retry", &self.notifications.email_retry),
        ] {
            policy.validate().map_err(|e| SettingsError::Invalid {
                key,
                message: e.to_string(),
            })?;
        }
        if self.notifications.concurrency == 0 || self.notifications.lease_secs == 0 {
            return Err(SettingsError::Invalid {
                key: "notifications",
                message: "concurrency and lease_secs must be at least 1".into(),
            });
        }
        if self.notifications.email_enabled && self.notifications.smtp.host.trim().is_empty() {
            return Err(SettingsError::Invalid {
                key: "notifications.smtp.host",
                message: "e-mail is enabled: set the SMTP relay's host name".into(),
            });
        }
        if self.database.max_connections == 0 || self.database.max_connections > 1000 {
            return Err(SettingsError::Invalid {
                key: "database.max_connections",
                message: "use a number from 1 to 1000".into(),
            });
        }
        if !matches!(self.database.sqlite_synchronous.as_str(), "full" | "normal") {
            return Err(SettingsError::Invalid {
                key: "database.sqlite_synchronous",
                message: "use `full` (durable across power loss) or `normal`".into(),
            });
        }
        if !matches!(
            self.database.sqlite_checkpoints.as_str(),
            "background" | "commit"
        ) {
            return Err(SettingsError::Invalid {
                key: "database.sqlite_checkpoints",
                message: "use `background` (a thread of their own) or `commit` (inside the commit that filled the log)".into(),
            });
        }
        if self.database.sqlite_mmap_mib > MAX_SQLITE_MMAP_MIB {
            return Err(SettingsError::Invalid {
                key: "database.sqlite_mmap_mib",
                message: format!(
                    "use a number from 0 (no memory map) to {MAX_SQLITE_MMAP_MIB} (SQLite maps at most ~2 GiB)"
                ),
            });
        }
        if !matches!(self.log.format.as_str(), "pretty" | "text" | "json") {
            return Err(SettingsError::Invalid {
                key: "log.format",
                message: format!(
                    "`{}` is not a log format; use `pretty` (or `text`) or `json`",
                    self.log.format
                ),
            });
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log.level).is_err() {
            return Err(SettingsError::Invalid {
                key: "log.level",
                message: "use a level such as `info` or a filter like `taskflow=debug,info`".into(),
            });
        }
        let secret = &self.auth.jwt_secret;
        if !secret.is_empty() && secret.expose().len() < 32 {
            return Err(SettingsError::Invalid {
                key: "auth.jwt_secret",
                message: "use at least 32 bytes (e.g. `openssl rand -hex 32`), or leave it empty to generate one".into(),
            });
        }
        if self.auth.access_token_ttl_secs < 60 || self.auth.access_token_ttl_secs > 30 * 86_400 {
            return Err(SettingsError::Invalid {
                key: "auth.access_token_ttl_secs",
                message: "use 60 to 2592000 seconds".into(),
            });
        }
        self.roles()?;
        let backends: &[&str] = &[
            "memory",
            #[cfg(feature = "nats")]
            "nats",
            #[cfg(feature = "kafka")]
            "kafka",
            #[cfg(feature = "dapr")]
            "dapr",
        ];
        if !backends.contains(&self.bus.backend.as_str()) {
            return Err(SettingsError::Invalid {
                key: "bus.backend",
                message: format!(
                    "`{}` is not available in this build; use one of: {} (kafka needs `--features kafka`)",
                    self.bus.backend,
                    backends.join(", ")
                ),
            });
        }
        let secret_backends: &[&str] = &[
            "config",
            #[cfg(feature = "dapr")]
            "dapr",
        ];
        if !secret_backends.contains(&self.secrets.backend.as_str()) {
            return Err(SettingsError::Invalid {
                key: "secrets.backend",
                message: format!("use one of: {}", secret_backends.join(", ")),
            });
        }
        #[cfg(feature = "dapr")]
        if let Err((field, message)) = self.bus.dapr.validate() {
            return Err(SettingsError::Invalid {
                key: match field {
                    "bulk_max_messages" => "bus.dapr.bulk_max_messages",
                    "bulk_max_await_ms" => "bus.dapr.bulk_max_await_ms",
                    "bulk_publish_max_messages" => "bus.dapr.bulk_publish_max_messages",
                    "pubsub_name" => "bus.dapr.pubsub_name",
                    _ => "bus.dapr",
                },
                message,
            });
        }
        #[cfg(feature = "dapr")]
        if self.bus.backend == "dapr"
            && self
                .bus
                .dapr
                .app_api_token
                .as_deref()
                .is_none_or(str::is_empty)
        {
            return Err(SettingsError::Invalid {
                key: "bus.dapr.app_api_token",
                message: "set it (the sidecar's APP_API_TOKEN) so only the Dapr sidecar can deliver events to /dapr/events".into(),
            });
        }
        if self.bus.relay_batch_size == 0 || self.bus.relay_batch_size > 10_000 {
            return Err(SettingsError::Invalid {
                key: "bus.relay_batch_size",
                message: "use 1 to 10000".into(),
            });
        }
        if self.bus.relay_batches_in_flight == 0 || self.bus.relay_batches_in_flight > 64 {
            return Err(SettingsError::Invalid {
                key: "bus.relay_batches_in_flight",
                message: "use 1 to 64".into(),
            });
        }
        if self.bus.task_event_attempts == 0 || self.bus.task_event_attempts > 100 {
            return Err(SettingsError::Invalid {
                key: "bus.task_event_attempts",
                message: "use 1 to 100".into(),
            });
        }
        self.telemetry.validate()?;
        self.realtime.validate()?;
        self.rate_limit
            .validate()
            .map_err(|message| SettingsError::Invalid {
                key: "rate_limit",
                message,
            })?;
        Ok(())
    }

    /// The roles to run (all when none are configured).
    pub fn roles(&self) -> Result<Vec<Role>, SettingsError> {
        if self.roles.is_empty() {
            return Ok(Role::ALL.to_vec());
        }
        let mut roles = Vec::new();
        for name in self.roles.iter().flat_map(|r| r.split(',')) {
            let role = Role::parse(name).ok_or_else(|| SettingsError::Invalid {
                key: "roles",
                message: format!(
                    "`{}` is not a role; use any of api, relay, audit, realtime, scheduler, notifier",
                    name.trim()
                ),
            })?;
            if !roles.contains(&role) {
                roles.push(role);
            }
        }
        Ok(roles)
    }

    /// The parsed listen address.
    pub fn listen_addr(&self) -> Result<SocketAddr, SettingsError> {
        self.listen.parse().map_err(|_| SettingsError::Invalid {
            key: "listen",
            message: format!(
                "`{}` is not an address like 127.0.0.1:8080 or [::1]:8080",
                self.listen
            ),
        })
    }

    /// The database URL, defaulting to a file in the data folder.
    pub fn database_url(&self) -> String {
        if self.database.url.is_empty() {
            format!("sqlite://{}", self.data_dir.join("taskflow.db").display())
        } else {
            self.database.url.clone()
        }
    }

    /// Fills in a JWT secret when none is configured: read from, or generated into,
    /// `<data_dir>/jwt-secret` so tokens survive restarts.
    pub fn ensure_jwt_secret(&mut self) -> Result<(), SettingsError> {
        if !self.auth.jwt_secret.is_empty() {
            return Ok(());
        }
        let path = self.data_dir.join("jwt-secret");
        let io = |e: std::io::Error| SettingsError::Invalid {
            key: "auth.jwt_secret",
            message: format!("none configured and {} cannot be used: {e}", path.display()),
        };
        let secret = match std::fs::read_to_string(&path) {
            Ok(existing) if existing.trim().len() >= 32 => existing.trim().to_owned(),
            _ => {
                std::fs::create_dir_all(&self.data_dir).map_err(io)?;
                let generated = hex::encode(taskflow_http::auth::random_bytes::<32>());
                write_private(&path, &generated).map_err(io)?;
                generated
            }
        };
        self.auth.jwt_secret = Secret::new(secret);
        Ok(())
    }

    /// The effective settings as TOML, secrets redacted.
    pub fn to_redacted_toml(&self) -> String {
        let mut shown = self.clone();
        shown.database.url = redact_url(&self.database_url());
        shown.telemetry.otlp_endpoint = redact_url(&self.telemetry.otlp_endpoint);
        if shown.notifications.smtp.password.is_some() {
            shown.notifications.smtp.password = Some(taskflow_notify::Secret::new("[redacted]"));
        }
        #[cfg(feature = "dapr")]
        {
            let hide = |token: &mut Option<String>| {
                if token.is_some() {
                    *token = Some("[redacted]".into());
                }
            };
            hide(&mut shown.bus.dapr.api_token);
            hide(&mut shown.bus.dapr.app_api_token);
        }
        #[cfg(feature = "nats")]
        {
            if shown.bus.nats.password.is_some() {
                shown.bus.nats.password = Some("[redacted]".into());
            }
            shown.bus.nats.url = redact_url(&shown.bus.nats.url);
        }
        #[cfg(feature = "kafka")]
        {
            if shown.bus.kafka.sasl_password.is_some() {
                shown.bus.kafka.sasl_password = Some("[redacted]".into());
            }
            for (key, value) in shown.bus.kafka.extra.iter_mut() {
                if ["password", "secret", "key", "token"]
                    .iter()
                    .any(|word| key.contains(word))
                {
                    *value = "[redacted]".into();
                }
            }
        }
        toml::to_string_pretty(&shown).unwrap_or_else(|e| format!("# cannot render settings: {e}"))
    }
}

/// Hides the password of a `scheme://user:password@host` URL.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let credentials = &url[scheme_end + 3..at];
            match credentials.split_once(':') {
                Some((user, _)) => {
                    format!("{}{user}:[redacted]{}", &url[..scheme_end + 3], &url[at..])
                }
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    options.open(path)?.write_all(contents.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        Settings::default().validate().unwrap();
        assert_eq!(
            Settings::default().database_url(),
            "sqlite://./taskflow-data/taskflow.db"
        );
    }

    #[test]
    fn bad_values_say_how_to_fix_them() {
        let mut s = Settings {
            listen: "localhost".into(),
            ..Settings::default()
        };
        assert!(
            s.validate()
                .unwrap_err()
                .to_string()
                .contains("127.0.0.1:8080")
        );
        s = Settings::default();
        s.auth.jwt_secret = Secret::new("short");
        assert!(s.validate().unwrap_err().to_string().contains("32 bytes"));
        s = Settings::default();
        s.database.url = "mysql://root:pw@db/x".into();
        let message = s.validate().unwrap_err().to_string();
        assert!(
            message.contains("sqlite://")
                && message.contains("postgres://")
                && !message.contains("pw")
        );
        s.database.url = "postgres://app:pw@db:5432/taskflow".into();
        s.validate().unwrap();
        s = Settings::default();
        s.log.format = "xml".into();
        assert!(s.validate().is_err());
    }

    #[test]
    fn telemetry_settings_are_checked() {
        let valid = |change: &dyn Fn(&mut TelemetrySettings)| {
            let mut s = Settings::default();
            change(&mut s.telemetry);
            s.validate().map_err(|e| e.to_string())
        };
        assert!(valid(&|_| {}).is_ok());
        assert_eq!(Settings::default().telemetry.traces_endpoint(), None);
        for endpoint in [
            "http://127.0.0.1:4318",
            "https://collector.example/otlp/",
            "http://collector:4318/v1/traces",
        ] {
            assert!(
                valid(&|t| t.otlp_endpoint = endpoint.into()).is_ok(),
                "{endpoint}"
            );
        }
        for endpoint in [
            "collector:4318",
            "127.0.0.1:4318",
            "grpc://collector:4317",
            "http://",
            "http://collector:4318?x=1",
            "not a url",
        ] {
            let message = valid(&|t| t.otlp_endpoint = endpoint.into()).unwrap_err();
            assert!(
                message.contains("telemetry.otlp_endpoint")
                    && message.contains("http://otel-collector:4318"),
                "{endpoint}: {message}"
            );
        }
        let message = valid(&|t| t.protocol = "grpc".into()).unwrap_err();
        assert!(message.contains("http/protobuf"), "{message}");
        for ratio in [-0.1, 1.5, f64::NAN] {
            let message = valid(&|t| t.sampling_ratio = ratio).unwrap_err();
            assert!(message.contains("telemetry.sampling_ratio"), "{message}");
        }
        assert!(valid(&|t| t.sampling_ratio = 0.0).is_ok());
        assert!(valid(&|t| t.service_name = " ".into()).is_err());
        assert!(valid(&|t| t.export_timeout_secs = 0).is_err());
    }

    #[test]
    fn realtime_limits_come_from_the_file_and_are_checked() {
        let defaults = Settings::default().realtime.hub_settings();
        assert_eq!(
            defaults,
            taskflow_http::realtime::RealtimeSettings::default()
        );
        let dir = std::env::temp_dir().join(format!("taskflow-settings-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("taskflow.toml");
        std::fs::write(
            &file,
            "[realtime]\nmax_connections_per_user = 10010\nheartbeat_secs = 5\n",
        )
        .unwrap();
        let s = Settings::load(Some(&file), &CliOverrides::default()).unwrap();
        let hub = s.realtime.hub_settings();
        assert_eq!(hub.max_connections_per_user, 10010);
        assert_eq!(hub.heartbeat, std::time::Duration::from_secs(5));
        assert_eq!(hub.session_queue, defaults.session_queue);
        assert!(s.to_redacted_toml().contains("[realtime]"));
        for (line, key) in [
            (
                "max_connections_per_user = 0",
                "realtime.max_connections_per_user",
            ),
            ("session_queue = 0", "realtime.session_queue"),
            ("heartbeat_secs = 0", "realtime.heartbeat_secs"),
            ("ticket_ttl_secs = 100000", "realtime.ticket_ttl_secs"),
        ] {
            std::fs::write(&file, format!("[realtime]\n{line}\n")).unwrap();
            let error = Settings::load(Some(&file), &CliOverrides::default())
                .unwrap_err()
                .to_string();
            assert!(
                error.contains(key) && error.contains("use "),
                "{line}: {error}"
            );
        }
        std::fs::write(&file, "[realtime]\nmax_streams = 3\n").unwrap();
        assert!(Settings::load(Some(&file), &CliOverrides::default()).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_traces_path_is_appended_once() {
        let mut t = TelemetrySettings {
            otlp_endpoint: "http://collector:4318/".into(),
            ..TelemetrySettings::default()
        };
        assert_eq!(
            t.traces_endpoint().as_deref(),
            Some("http://collector:4318/v1/traces")
        );
        t.otlp_endpoint = "https://gateway/otlp/v1/traces".into();
        assert_eq!(
            t.traces_endpoint().as_deref(),
            Some("https://gateway/otlp/v1/traces")
        );
    }

    #[test]
    fn telemetry_comes_from_the_file_and_is_redacted() {
        let dir = std::env::temp_dir().join(format!("taskflow-settings-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("taskflow.toml");
        std::fs::write(
            &file,
            "[telemetry]\notlp_endpoint = \"http://user:hunter2@collector:4318\"\nsampling_ratio = 0.25\n",
        )
        .unwrap();
        let s = Settings::load(Some(&file), &CliOverrides::default()).unwrap();
        assert_eq!(s.telemetry.sampling_ratio, 0.25);
        assert_eq!(s.telemetry.service_name, "taskflow");
        let shown = s.to_redacted_toml();
        assert!(
            shown.contains("[telemetry]") && !shown.contains("hunter2"),
            "{shown}"
        );
        std::fs::write(&file, "[telemetry]\notlp_endpoint = \"collector\"\n").unwrap();
        let error = Settings::load(Some(&file), &CliOverrides::default()).unwrap_err();
        assert!(
            error.to_string().contains("telemetry.otlp_endpoint"),
            "{error}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn relay_batches_in_flight_out_of_range_are_refused_with_their_key() {
        for refused in [0, 65] {
            let mut s = Settings::default();
            s.bus.relay_batches_in_flight = refused;
            assert!(
                matches!(
                    s.validate(),
                    Err(SettingsError::Invalid {
                        key: "bus.relay_batches_in_flight",
                        ..
                    })
                ),
                "{refused}"
            );
        }
        for accepted in [1, 64] {
            let mut s = Settings::default();
            s.bus.relay_batches_in_flight = accepted;
            s.validate().unwrap();
        }
    }

    #[test]
    fn a_sqlite_memory_map_beyond_what_sqlite_maps_is_refused_with_its_key() {
        let mut s = Settings::default();
        s.database.sqlite_mmap_mib = MAX_SQLITE_MMAP_MIB + 1;
        assert!(matches!(
            s.validate(),
            Err(SettingsError::Invalid {
                key: "database.sqlite_mmap_mib",
                ..
            })
        ));
        for accepted in [0, MAX_SQLITE_MMAP_MIB] {
            s.database.sqlite_mmap_mib = accepted;
            s.validate().unwrap();
        }
    }

    #[cfg(feature = "dapr")]
    #[test]
    fn dapr_bulk_settings_out_of_range_are_refused_with_their_key() {
        let mut s = Settings::default();
        s.bus.dapr.bulk_max_messages = 0;
        assert!(matches!(
            s.validate(),
            Err(SettingsError::Invalid {
                key: "bus.dapr.bulk_max_messages",
                ..
            })
        ));
        s.bus.dapr.bulk_max_messages = 1;
        s.bus.dapr.bulk_max_await_ms = 600_000;
        assert!(matches!(
            s.validate(),
            Err(SettingsError::Invalid {
                key: "bus.dapr.bulk_max_await_ms",
                ..
            })
        ));
        s.bus.dapr.bulk_max_await_ms = 5;
        s.bus.dapr.bulk_publish_max_messages = 0;
        assert!(matches!(
            s.validate(),
            Err(SettingsError::Invalid {
                key: "bus.dapr.bulk_publish_max_messages",
                ..
            })
        ));
    }

    #[cfg(feature = "dapr")]
    #[test]
    fn the_dapr_bus_needs_an_app_token() {
        let mut s = Settings::default();
        s.bus.backend = "dapr".into();
        assert!(
            s.validate()
                .unwrap_err()
                .to_string()
                .contains("app_api_token")
        );
        s.bus.dapr.app_api_token = Some("from-the-sidecar".into());
        s.validate().unwrap();
        assert!(!s.to_redacted_toml().contains("from-the-sidecar"));
    }

    #[test]
    fn urls_lose_their_passwords() {
        assert_eq!(
            redact_url("postgres://app:s3cret@db:5432/x"),
            "postgres://app:[redacted]@db:5432/x"
        );
        assert_eq!(redact_url("sqlite://./a.db"), "sqlite://./a.db");
    }

    #[test]
    fn redacted_toml_hides_the_secret() {
        let mut s = Settings::default();
        s.auth.jwt_secret = Secret::new("x".repeat(40));
        let text = s.to_redacted_toml();
        assert!(text.contains("[redacted]") && !text.contains(&"x".repeat(40)));
    }
}
