//! TaskFlow's HTTP API.
//!
//! [`router`] assembles every route with its middleware; [`serve`] runs it on a bound listener
//! until a shutdown future resolves, letting in-flight requests finish. Layout: [`api`] (one
//! module per resource), [`auth`], [`rate_limit`], [`error`] (problem+json), [`extract`]
//! (extractors that never answer in plain text), [`metrics`], [`openapi`].

pub mod api;
pub mod auth;
pub mod error;
pub mod extract;
pub mod ical;
pub mod mcp;
pub mod metrics;
pub mod openapi;
pub mod rate_limit;
pub mod realtime;
pub mod state;
pub mod trace;

use std::future::Future;
use std::time::Duration;

use axum::Router;
use axum::extract::{ConnectInfo, DefaultBodyLimit};
use axum::http::HeaderName;
use axum::middleware::{from_fn, from_fn_with_state};
use axum::routing::{get, post};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

pub use state::AppState;

/// Largest accepted request body.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// What a process serves over HTTP besides health, readiness and metrics.
pub struct RouterOptions {
    /// Serve the public API (`/api/v1`, `/docs`) and the web UI (`/`, `/ui/…`); off for
    /// worker-only processes.
    pub api: bool,
    /// Routes a backend contributes (e.g. Dapr's subscription endpoints), served without auth.
    pub extra: Option<Router>,
    /// How long a client may take to send a request's headers, counted from the moment the
    /// connection is ready for one (so it also closes keep-alive connections idle that long).
    /// Without it, a client that trickles headers (slowloris) holds a connection for ever.
    pub header_read_timeout: Duration,
}

/// [`RouterOptions::header_read_timeout`] unless configured.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

impl Default for RouterOptions {
    /// No API, no extra routes, the default header timeout.
    fn default() -> Self {
        Self {
            api: false,
            extra: None,
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
        }
    }
}

/// Every route, with authentication, rate limits, metrics, request ids and tracing.
pub fn router(state: AppState) -> Router {
    router_with(
        state,
        RouterOptions {
            api: true,
            ..RouterOptions::default()
        },
    )
}

/// The routes `options` ask for; health, readiness and metrics are always served.
pub fn router_with(state: AppState, options: RouterOptions) -> Router {
    let operations = Router::new()
        .route("/healthz", get(api::health::healthz))
        .route("/readyz", get(api::health::readyz))
        .route("/metrics", get(metrics::render));
    let request_id = HeaderName::from_static("x-request-id");
    let mut app = Router::new().merge(operations);
    if options.api {
        let mcp = Router::new()
            .nest_service(
                "/mcp",
                mcp::http_service(api_router(state.clone()), state.clock.clone()),
            )
            .layer(from_fn_with_state(state.clone(), auth::require_user));
        app = app
            .merge(api_routes(state.clone()))
            .merge(mcp)
            .merge(taskflow_web::router());
    }
    if let Some(extra) = options.extra {
        app = app.merge(extra.with_state(()));
    }
    app.fallback(error::no_route)
        .method_not_allowed_fallback(error::method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(from_fn(metrics::record_request))
        .layer(CatchPanicLayer::custom(|_| {
            axum::response::IntoResponse::into_response(error::ApiError::Internal(
                "handler panicked".into(),
            ))
        }))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(trace::request_span)
                .on_response(trace::record_response),
        )
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
        .with_state(state)
}

/// The public API alone (no operations routes, no `/mcp`), with its state: what MCP tools
/// call in-process.
pub fn api_router(state: AppState) -> Router {
    api_routes(state.clone())
        .fallback(error::no_route)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

fn api_routes(state: AppState) -> Router<AppState> {
    let protected = Router::new()
        .route("/api/v1/me", get(api::accounts::me))
        .route(
            "/api/v1/tokens",
            post(api::tokens::create_token).get(api::tokens::list_tokens),
        )
        .route(
            "/api/v1/tokens/{id}",
            axum::routing::delete(api::tokens::delete_token),
        )
        .route(
            "/api/v1/tasks",
            post(api::tasks::create_task).get(api::tasks::list_tasks),
        )
        .route("/api/v1/tasks/quick", post(api::quick_add::quick_add))
        .route(
            "/api/v1/tasks/{id}",
            get(api::tasks::get_task)
                .patch(api::tasks::update_task)
                .delete(api::tasks::delete_task),
        )
        .route(
            "/api/v1/tasks/{id}/complete",
            post(api::tasks::complete_task),
        )
        .route("/api/v1/tasks/{id}/reopen", post(api::tasks::reopen_task))
        .route(
            "/api/v1/tasks/{id}/skip",
            post(api::series::skip_occurrence),
        )
        .route(
            "/api/v1/tasks/{id}/recurrence/cancel",
            post(api::series::cancel_recurrence),
        )
        .route(
            "/api/v1/tasks/{id}/occurrences",
            get(api::series::preview_occurrences),
        )
        .route(
            "/api/v1/tasks/{id}/reminders",
            get(api::reminders::task_reminders),
        )
        .route(
            "/api/v1/reminders/{id}/snooze",
            post(api::reminders::snooze_reminder),
        )
        .route(
            "/api/v1/notifications",
            get(api::notifications::list_notifications),
        )
        .route(
            "/api/v1/notifications/read-all",
            post(api::notifications::mark_all_read),
        )
        .route(
            "/api/v1/notifications/preferences",
            get(api::notifications::get_preferences).put(api::notifications::put_preferences),
        )
        .route(
            "/api/v1/notifications/deliveries",
            get(api::notifications::list_deliveries),
        )
        .route(
            "/api/v1/notifications/deliveries/{id}/retry",
            post(api::notifications::retry_delivery),
        )
        .route(
            "/api/v1/notifications/{id}/read",
            post(api::notifications::mark_read),
        )
        .route(
            "/api/v1/webhooks",
            post(api::notifications::create_webhook).get(api::notifications::list_webhooks),
        )
        .route(
            "/api/v1/webhooks/{id}",
            axum::routing::delete(api::notifications::delete_webhook),
        )
        .route("/api/v1/series/{id}", get(api::series::get_series))
        .route(
            "/api/v1/recurrence/preview",
            post(api::series::preview_rule),
        )
        .route("/api/v1/audit", get(api::events::audit_log))
        .route("/api/v1/admin/dlq", get(api::events::list_dead_letters))
        .route(
            "/api/v1/admin/dlq/{id}/replay",
            post(api::events::replay_dead_letter),
        )
        .route("/api/v1/tags", get(api::tags::list_tags))
        .route("/api/v1/calendar.ics", get(api::calendar::export_calendar))
        .route(
            "/api/v1/calendar/feed",
            post(api::calendar::create_feed)
                .get(api::calendar::get_feed)
                .delete(api::calendar::delete_feed),
        )
        .route("/api/v1/import/ics", post(api::calendar::import_ics))
        .route(
            "/api/v1/stream/tickets",
            post(realtime::routes::create_ticket),
        )
        .route_layer(from_fn_with_state(state.clone(), auth::require_user));

    // Streams authenticate themselves: a bearer token or a `?ticket=`.
    let streams = Router::new()
        .route("/api/v1/stream", get(realtime::routes::sse_stream))
        .route("/api/v1/ws", get(realtime::routes::websocket_stream));

    let sign_in = Router::new()
        .route("/api/v1/auth/register", post(api::accounts::register))
        .route("/api/v1/auth/login", post(api::accounts::login))
        .route_layer(from_fn_with_state(
            state.clone(),
            rate_limit::limit_auth_attempts,
        ));

    let public = Router::new()
        .route("/api/v1/openapi.json", get(openapi::openapi_json))
        .route("/docs", get(openapi::docs_page))
        .route(
            "/api/v1/calendar/feed/{token}",
            get(api::calendar::calendar_feed),
        )
        .merge(sign_in)
        .route_layer(from_fn_with_state(state.clone(), rate_limit::limit_by_ip));

    Router::new().merge(protected).merge(streams).merge(public)
}

/// Serves `router(state)` on `listener` until `shutdown` resolves, then lets in-flight requests finish.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with(
        listener,
        state,
        RouterOptions {
            api: true,
            ..RouterOptions::default()
        },
        shutdown,
    )
    .await
}

/// Serves `router_with(state, options)` on `listener` until `shutdown` resolves; then stops
/// accepting, lets each connection finish its in-flight request and waits for all of them.
///
/// A plain HTTP/1.1 server (hyper's, with upgrades for WebSocket) rather than `axum::serve`:
/// axum's server first sniffs for HTTP/2, and the 24 bytes it reads ahead make hyper grow every
/// connection's read buffer from 8 to 16 KiB. Idle streams are most of what a busy instance
/// holds, so each one's buffers count. Accepted sockets set `TCP_NODELAY`: streams send small
/// frames and must not hold one back waiting for the previous one's acknowledgement.
pub async fn serve_with(
    listener: TcpListener,
    state: AppState,
    options: RouterOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let limits = state.rate_limits.clone();
    let header_read_timeout = options.header_read_timeout;
    let sweeper = tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(60));
        loop {
            every.tick().await;
            limits.forget_idle();
        }
    });
    let router = router_with(state, options);
    // `stop` closes when shutdown begins; every connection holds a `running` receiver, so
    // `finished.closed()` resolves once the last one ended.
    let (stop, stopping) = tokio::sync::watch::channel(());
    tokio::spawn(async move {
        shutdown.await;
        drop(stopping);
    });
    let (finished, running) = tokio::sync::watch::channel(());
    loop {
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    if !is_connection_error(&error) {
                        // E.g. out of file descriptors: wait for some to be released.
                        tracing::error!(%error, "accepting a connection failed");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                    continue;
                }
            },
            _ = stop.closed() => break,
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(remote));
            tower::ServiceExt::oneshot(router.clone(), request)
        });
        let stop = stop.clone();
        let running = running.clone();
        tokio::spawn(async move {
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_read_timeout)
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            let mut connection = std::pin::pin!(connection);
            let mut stopped = std::pin::pin!(stop.closed());
            let mut stopping = false;
            loop {
                tokio::select! {
                    served = connection.as_mut() => {
                        if let Err(error) = served {
                            tracing::trace!(%error, "connection ended with an error");
                        }
                        break;
                    }
                    _ = &mut stopped, if !stopping => {
                        stopping = true;
                        connection.as_mut().graceful_shutdown();
                    }
                }
            }
            drop(running);
        });
    }
    drop(running);
    drop(listener);
    finished.closed().await;
    sweeper.abort();
    Ok(())
}

/// Errors of one connection that was being accepted (the listener itself is fine).
fn is_connection_error(error: &std::io::Error) -> bool {
    matches!(
        error.kind(),
        std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
    )
}
