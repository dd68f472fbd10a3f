//! Wiring: builds the concrete backends from settings and runs the configured roles.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use taskflow_bus::EventBus;
use taskflow_bus::backends::memory::MemoryBus;
use taskflow_bus::consumer::{ConsumerRunner, RetryPolicy};
use taskflow_bus::relay::{OutboxRelay, RelaySettings};
use taskflow_domain::events::Topic;
use taskflow_domain::{Clock, SystemClock};
use taskflow_http::{AppState, RouterOptions};
use taskflow_store::Store;
use taskflow_store::sqlite::{SqliteSettings, SqliteStore};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::settings::{Role, Settings};

/// Opens the configured database (no migrations applied).
pub async fn open_store(settings: &Settings) -> anyhow::Result<Arc<dyn Store>> {
    open(settings, false).await
}

/// As [`open_store`], for a process that writes events (`serve`, `mcp`): on PostgreSQL it
/// claims the outbox order its bus needs for as long as it runs, and refuses to start beside
/// processes that claimed the other one.
pub async fn open_event_store(settings: &Settings) -> anyhow::Result<Arc<dyn Store>> {
    open(settings, true).await
}

async fn open(settings: &Settings, writes_events: bool) -> anyhow::Result<Arc<dyn Store>> {
    let url = settings.database_url();
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let mut postgres = taskflow_store::postgres::PostgresSettings::new(&url);
        postgres.max_connections = settings.database.max_connections;
        postgres.acquire_timeout = Duration::from_secs(settings.database.acquire_timeout_secs);
        postgres.statement_timeout = Duration::from_secs(settings.database.statement_timeout_secs);
        // The in-process bus follows the outbox by position and needs one global commit order;
        // with an external broker the relay is the only reader and per-user order is enough.
        if settings.bus.backend != "memory" {
            postgres.outbox_order = taskflow_store::postgres::OutboxOrder::PerKey;
        }
        postgres.claim_outbox_order = writes_events;
        let store = taskflow_store::postgres::PostgresStore::connect(&postgres)
            .await
            .with_context(|| format!("connecting to {}", crate::settings::redact_url(&url)))?;
        return Ok(Arc::new(store));
    }
    let mut sqlite = SqliteSettings::new(&url);
    sqlite.read_connections = settings.database.max_connections;
    sqlite.acquire_timeout = Duration::from_secs(settings.database.acquire_timeout_secs);
    sqlite.synchronous_full = settings.database.sqlite_synchronous == "full";
    sqlite.background_checkpoints = settings.database.sqlite_checkpoints == "background";
    sqlite.mmap_bytes = settings.database.sqlite_mmap_mib << 20;
    let store = SqliteStore::connect(&sqlite)
        .await
        .with_context(|| format!("opening {}", crate::settings::redact_url(&url)))?;
    Ok(Arc::new(store))
}

/// Opens the database and applies pending migrations.
pub async fn migrate(settings: &Settings) -> anyhow::Result<()> {
    let store = open_store(settings).await?;
    store.migrate().await.context("applying migrations")?;
    store.close().await;
    Ok(())
}

/// The configured event bus and the HTTP routes it needs (Dapr's subscription endpoints).
pub async fn open_bus(
    settings: &Settings,
    store: &Arc<dyn Store>,
) -> anyhow::Result<(Arc<dyn EventBus>, Option<axum::Router>)> {
    match settings.bus.backend.as_str() {
        "memory" => Ok((
            Arc::new(MemoryBus::new(store.clone(), settings.bus.topics.clone())),
            None,
        )),
        #[cfg(feature = "nats")]
        "nats" => {
            let bus = taskflow_bus::backends::nats::NatsBus::connect(&settings.bus.nats)
                .await
                .with_context(|| format!("connecting to NATS at {}", settings.bus.nats.url))?;
            bus.ensure_topics(&settings.bus.topic_specs()).await?;
            Ok((Arc::new(bus), None))
        }
        #[cfg(feature = "kafka")]
        "kafka" => {
            let bus = taskflow_bus::backends::kafka::KafkaBus::new(settings.bus.kafka.clone())?;
            Ok((Arc::new(bus), None))
        }
        #[cfg(feature = "dapr")]
        "dapr" => {
            let bus = taskflow_bus::backends::dapr::DaprBus::new(&settings.bus.dapr)?;
            // The sidecar reads /dapr/subscribe once, when our port opens: list every topic
            // this process's roles consume before serving (and no other, or the sidecar would
            // deliver events nobody here handles).
            for topic in consumed_topics(&settings.roles().unwrap_or_default()) {
                bus.register(&settings.bus.topics.physical(topic));
            }
            let routes = bus.router();
            Ok((Arc::new(bus), Some(routes)))
        }
        other => anyhow::bail!("bus backend `{other}` is not available in this build"),
    }
}

/// `taskflow topics create`: creates every topic (and dead-letter topic) on the configured broker.
pub async fn create_topics(settings: &Settings) -> anyhow::Result<()> {
    let specs = settings.bus.topic_specs();
    match settings.bus.backend.as_str() {
        "memory" => println!("the in-process bus needs no topics"),
        "dapr" => println!(
            "with Dapr, topics belong to the pub/sub component (see deploy/ for Strimzi KafkaTopic manifests)"
        ),
        _ => {
            let store = open_store(settings).await?;
            let (bus, _) = open_bus(settings, &store).await?;
            bus.ensure_topics(&specs).await?;
            for spec in &specs {
                println!("{} ({} partitions)", spec.name, spec.partitions);
            }
        }
    }
    Ok(())
}

/// `taskflow admin grant|revoke EMAIL`.
pub async fn set_admin(settings: &Settings, email: &str, is_admin: bool) -> anyhow::Result<()> {
    let email =
        taskflow_domain::Email::parse(email).map_err(|e| anyhow::anyhow!("{}", e.message))?;
    let store = open_store(settings).await?;
    store.migrate().await.context("applying migrations")?;
    let result = store.set_admin(&email, is_admin).await;
    store.close().await;
    match result {
        Ok(user) => {
            println!(
                "{} is {}an admin",
                user.email,
                if user.is_admin { "now " } else { "no longer " }
            );
            Ok(())
        }
        Err(taskflow_store::StoreError::NotFound) => {
            anyhow::bail!("there is no account with the e-mail {email}")
        }
        Err(other) => Err(other.into()),
    }
}

/// Logical topics the given roles consume through a subscription registered up front. The
/// realtime feeder's topic is not among them: on Dapr the app id is the consumer group, so
/// replicas would split `task-updates` (see docs/architecture.md).
#[cfg(feature = "dapr")]
fn consumed_topics(roles: &[Role]) -> Vec<&'static str> {
    let mut topics = Vec::new();
    if roles.contains(&Role::Audit) {
        topics.push(Topic::TaskEvents.name());
    }
    if roles.contains(&Role::Notifier) {
        topics.push(Topic::Reminders.name());
    }
    topics
}

/// Fills secrets from their configured source (Dapr's secrets API when `secrets.backend = "dapr"`).
pub async fn load_secrets(settings: &mut Settings) -> anyhow::Result<()> {
    match settings.secrets.backend.as_str() {
        #[cfg(feature = "dapr")]
        "dapr" => {
            let secrets = taskflow_bus::backends::dapr::DaprSecrets::new(&settings.bus.dapr)?;
            let values = secrets
                .get(&settings.secrets.dapr_store, &settings.secrets.dapr_secret)
                .await
                .with_context(|| {
                    format!(
                        "reading secret `{}` from Dapr store `{}`",
                        settings.secrets.dapr_secret, settings.secrets.dapr_store
                    )
                })?;
            if let Some(jwt) = values.get("jwt-secret") {
                settings.auth.jwt_secret = taskflow_http::auth::Secret::new(jwt.clone());
            }
            settings.validate()?;
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Serves the MCP tools over stdio for the user of `mcp.token`, on the configured database.
pub async fn mcp_stdio(mut settings: Settings) -> anyhow::Result<()> {
    let token = settings.mcp.token.expose().trim().to_owned();
    anyhow::ensure!(
        !token.is_empty(),
        "no personal access token: set TASKFLOW_MCP__TOKEN (or `[mcp] token` in the config file) to a token from POST /api/v1/tokens"
    );
    load_secrets(&mut settings).await?;
    settings.ensure_jwt_secret()?;
    let store = open_event_store(&settings).await?;
    store.migrate().await.context("applying migrations")?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let state = AppState::new(
        store.clone(),
        clock.clone(),
        &settings.auth,
        &settings.rate_limit,
    );
    let user = taskflow_http::auth::authenticate(&state, &token)
        .await
        .map_err(|e| anyhow::anyhow!("the MCP token is not accepted: {e}"))?;
    tracing::info!(user_id = %user.id, "MCP server on stdio");
    let server =
        taskflow_http::mcp::TaskflowMcp::new(taskflow_http::api_router(state), clock, Some(token));
    let outcome = taskflow_http::mcp::serve_stdio(server).await;
    store.close().await;
    outcome
}

/// Runs the configured roles until `shutdown` is cancelled; in-flight requests get
/// `shutdown_grace_secs` to finish.
pub async fn serve(mut settings: Settings, shutdown: CancellationToken) -> anyhow::Result<()> {
    load_secrets(&mut settings).await?;
    settings.ensure_jwt_secret()?;
    // The metrics recorder first: workers record from their first moment.
    let _ = taskflow_http::metrics::prometheus_handle();
    let roles = settings.roles()?;
    let store = open_event_store(&settings).await?;
    store.migrate().await.context("applying migrations")?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let (bus, bus_routes) = open_bus(&settings, &store).await?;

    let workers = CancellationToken::new();
    let mut tasks = JoinSet::new();
    if roles.contains(&Role::Relay) {
        let relay = OutboxRelay::new(
            store.clone(),
            bus.clone(),
            settings.bus.topics.clone(),
            clock.clone(),
            RelaySettings {
                batch_size: settings.bus.relay_batch_size,
                batches_in_flight: settings.bus.relay_batches_in_flight,
                poll_interval: Duration::from_millis(settings.bus.relay_poll_interval_ms),
                retention: Duration::from_secs(settings.bus.retention_hours * 3600),
                ..RelaySettings::default()
            },
        );
        tasks.spawn(relay.run(workers.clone()));
    }
    if roles.contains(&Role::Audit) {
        let runner = ConsumerRunner::new(
            taskflow_workers::audit::AUDIT_GROUP,
            Topic::TaskEvents.name(),
            bus.clone(),
            store.clone(),
            settings.bus.topics.clone(),
            clock.clone(),
            Arc::new(taskflow_workers::audit::AuditHandler::new(
                store.clone(),
                clock.clone(),
            )),
            RetryPolicy {
                attempts: settings.bus.task_event_attempts,
                ..RetryPolicy::task_events()
            },
        )
        .gathering(taskflow_workers::audit::AUDIT_GATHER);
        tasks.spawn(runner.run(workers.clone()));
    }
    if roles.contains(&Role::Scheduler) {
        let scheduler = taskflow_workers::scheduler::Scheduler::new(
            store.clone(),
            clock.clone(),
            taskflow_workers::scheduler::SchedulerSettings {
                lease: Duration::from_secs(settings.scheduler.lease_secs),
                batch: settings.scheduler.batch,
                horizon: settings.scheduler.horizon,
                poll_interval: Duration::from_millis(settings.scheduler.poll_interval_ms),
            },
        );
        let stop = workers.clone();
        tasks.spawn(taskflow_workers::scheduler::run(
            scheduler,
            Box::pin(async move { stop.cancelled().await }),
        ));
    }
    if roles.contains(&Role::Notifier) {
        let notifications = &settings.notifications;
        let runner = ConsumerRunner::new(
            taskflow_workers::notifier::NOTIFIER_GROUP,
            Topic::Reminders.name(),
            bus.clone(),
            store.clone(),
            settings.bus.topics.clone(),
            clock.clone(),
            Arc::new(taskflow_workers::notifier::NotifierHandler::new(
                store.clone(),
                clock.clone(),
                notifications.email_enabled,
            )),
            RetryPolicy::reminders(),
        );
        tasks.spawn(runner.run(workers.clone()));
        let webhooks = taskflow_notify::WebhookSender::new(&notifications.webhooks)
            .context("setting up webhook delivery")?;
        let email = if notifications.email_enabled {
            Some(
                taskflow_notify::EmailSender::new(&notifications.smtp)
                    .context("setting up e-mail delivery (notifications.smtp)")?,
            )
        } else {
            None
        };
        let worker = taskflow_workers::notifier::DeliveryWorker::new(
            store.clone(),
            clock.clone(),
            webhooks,
            email,
            taskflow_workers::notifier::DeliverySettings {
                webhook_retry: notifications.webhook_retry.clone(),
                email_retry: notifications.email_retry.clone(),
                lease: Duration::from_secs(notifications.lease_secs),
                concurrency: notifications.concurrency,
                poll_interval: Duration::from_millis(notifications.poll_interval_ms),
                public_url: (!notifications.public_url.is_empty())
                    .then(|| notifications.public_url.clone()),
                ..Default::default()
            },
        );
        let stop = workers.clone();
        tasks.spawn(taskflow_workers::notifier::run_deliveries(
            worker,
            Box::pin(async move { stop.cancelled().await }),
        ));
    }

    let state = AppState::new(
        store.clone(),
        clock.clone(),
        &settings.auth,
        &settings.rate_limit,
    )
    .with_webhook_policy(taskflow_notify::TargetPolicy {
        allow_private: settings.notifications.webhooks.allow_private_targets,
    })
    .with_realtime(
        settings.realtime.hub_settings(),
        settings.auth.jwt_secret.expose().as_bytes(),
    );
    if roles.contains(&Role::Realtime) {
        let hub = state.realtime.clone();
        let feed = move |update: taskflow_workers::realtime::RealtimeUpdate| {
            hub.publish(update.user_id, &update.event_type, update.time, update.data);
        };
        let runner = ConsumerRunner::new(
            taskflow_workers::realtime::realtime_group(bus.name()),
            Topic::TaskUpdates.name(),
            bus.clone(),
            store.clone(),
            settings.bus.topics.clone(),
            clock.clone(),
            Arc::new(taskflow_workers::realtime::RealtimeHandler::new(
                Arc::new(feed),
                clock.now(),
            )),
            RetryPolicy::task_updates(),
        )
        .transient();
        tasks.spawn(runner.run(workers.clone()));
    }
    let addr = settings.listen_addr()?;
    let listener = TcpListener::bind(addr).await.with_context(|| {
        format!(
            "cannot listen on {addr}; is another process using it? Choose another with --listen"
        )
    })?;
    let role_names: Vec<String> = roles
        .iter()
        .map(|r| format!("{r:?}").to_lowercase())
        .collect();
    tracing::info!(
        address = %listener.local_addr()?,
        database = %crate::settings::redact_url(&settings.database_url()),
        bus = bus.name(),
        roles = %role_names.join(","),
        "TaskFlow is listening"
    );

    let hub = state.realtime.clone();
    let grace = Duration::from_secs(settings.shutdown_grace_secs);
    let signal = shutdown.clone();
    let options = RouterOptions {
        api: roles.contains(&Role::Api),
        extra: bus_routes,
        header_read_timeout: Duration::from_secs(settings.header_read_timeout_secs),
    };
    let server = tokio::spawn(taskflow_http::serve_with(
        listener,
        state,
        options,
        async move { signal.cancelled().await },
    ));
    shutdown.cancelled().await;
    tracing::info!("shutting down: finishing in-flight requests");
    hub.close_sessions();
    match tokio::time::timeout(grace, server).await {
        Ok(result) => result.context("server task")?.context("server")?,
        Err(_) => tracing::warn!(
            grace_secs = grace.as_secs(),
            "in-flight requests did not finish in time"
        ),
    }
    workers.cancel();
    while tasks.join_next().await.is_some() {}
    store.close().await;
    tracing::info!("stopped");
    Ok(())
}

/// Cancels `token` on SIGINT or SIGTERM.
pub fn cancel_on_signal(token: CancellationToken) {
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            let mut term =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(term) => term,
                    Err(error) => {
                        tracing::error!(%error, "cannot listen for SIGTERM");
                        let _ = ctrl_c.await;
                        token.cancel();
                        return;
                    }
                };
            tokio::select! {
                _ = ctrl_c => {},
                _ = term.recv() => {},
            }
        }
        #[cfg(not(unix))]
        {
            let _ = ctrl_c.await;
        }
        token.cancel();
    });
}
