//! Wiring: builds the concrete backends from settings and runs the server.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use taskflow_domain::SystemClock;
use taskflow_http::AppState;
use taskflow_store::Store;
use taskflow_store::sqlite::{SqliteSettings, SqliteStore};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::settings::Settings;

/// Opens the configured database (no migrations applied).
pub async fn open_store(settings: &Settings) -> anyhow::Result<Arc<dyn Store>> {
    let url = settings.database_url();
    let mut sqlite = SqliteSettings::new(&url);
    sqlite.read_connections = settings.database.max_connections;
    sqlite.acquire_timeout = Duration::from_secs(settings.database.acquire_timeout_secs);
    sqlite.synchronous_full = settings.database.sqlite_synchronous == "full";
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

/// Runs every role until `shutdown` is cancelled; in-flight requests get `shutdown_grace_secs` to finish.
pub async fn serve(mut settings: Settings, shutdown: CancellationToken) -> anyhow::Result<()> {
    settings.ensure_jwt_secret()?;
    let store = open_store(&settings).await?;
    store.migrate().await.context("applying migrations")?;
    let state = AppState::new(
        store.clone(),
        Arc::new(SystemClock),
        &settings.auth,
        &settings.rate_limit,
    );
    let addr = settings.listen_addr()?;
    let listener = TcpListener::bind(addr).await.with_context(|| {
        format!(
            "cannot listen on {addr}; is another process using it? Choose another with --listen"
        )
    })?;
    tracing::info!(address = %listener.local_addr()?, database = %crate::settings::redact_url(&settings.database_url()), "TaskFlow is listening");

    let grace = Duration::from_secs(settings.shutdown_grace_secs);
    let signal = shutdown.clone();
    let server = tokio::spawn(taskflow_http::serve(listener, state, async move {
        signal.cancelled().await
    }));
    shutdown.cancelled().await;
    tracing::info!("shutting down: finishing in-flight requests");
    match tokio::time::timeout(grace, server).await {
        Ok(result) => result.context("server task")?.context("server")?,
        Err(_) => tracing::warn!(
            grace_secs = grace.as_secs(),
            "in-flight requests did not finish in time"
        ),
    }
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
