//! The stream handlers: SSE, WebSocket and ticket issuance.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::Serialize;
use taskflow_domain::User;
use utoipa::ToSchema;

use super::hub::{Backlog, ConnectError, Next, ResyncReason, Session, Update};
use crate::auth::{CurrentUser, authenticate};
use crate::error::{ApiError, Problem};
use crate::extract::QueryParams;
use crate::state::AppState;

/// WebSocket close code sent to a session dropped for being too slow ("try again later").
pub const CLOSE_SLOW_CONSUMER: u16 = 1013;

/// A stream ticket.
#[derive(Serialize, ToSchema)]
pub struct StreamTicket {
    /// Pass as `?ticket=` to `/api/v1/stream` or `/api/v1/ws`; valid once.
    pub ticket: String,
    /// When it stops being accepted.
    pub expires_at: DateTime<Utc>,
    /// Seconds until then.
    pub expires_in: u64,
}

/// `POST /api/v1/stream/tickets`: a short-lived, single-use ticket for opening a stream from a
/// browser, which cannot set the `Authorization` header on `EventSource` or `WebSocket`.
#[utoipa::path(post, path = "/api/v1/stream/tickets", tag = "realtime", security(("bearer" = [])),
    responses((status = 201, body = StreamTicket), (status = 401, body = Problem)))]
pub async fn create_ticket(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
) -> Result<(StatusCode, Json<StreamTicket>), ApiError> {
    let (ticket, expires_at) = state.realtime.tickets().issue(user.id, state.clock.now())?;
    Ok((
        StatusCode::CREATED,
        Json(StreamTicket {
            ticket,
            expires_at,
            expires_in: state.realtime.settings().ticket_ttl.as_secs(),
        }),
    ))
}

/// `GET /api/v1/stream`: the caller's updates as Server-Sent Events.
///
/// Events: `task.changed` (`id: <seq>`, `data`: the change) and `resync` (reload the task list;
/// `data: {"reason", "seq"}`). Resume with `Last-Event-ID` or `?resume_from=`. A comment is
/// sent every 15 s.
#[utoipa::path(get, path = "/api/v1/stream", tag = "realtime", security(("bearer" = [])),
    params(
        ("ticket" = Option<String>, Query, description = "A ticket from POST /api/v1/stream/tickets, instead of the Authorization header"),
        ("resume_from" = Option<i64>, Query, description = "Resume after this seq (like Last-Event-ID)"),
        ("Last-Event-ID" = Option<i64>, Header, description = "Resume after this seq"),
    ),
    responses(
        (status = 200, description = "An endless text/event-stream", content_type = "text/event-stream", body = String),
        (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 429, description = "Too many open streams for this user", body = Problem)))]
pub async fn sse_stream(
    State(state): State<AppState>,
    headers: HeaderMap,
    params: QueryParams,
) -> Result<Response, ApiError> {
    params.only(&["ticket", "resume_from"])?;
    let user = stream_user(&state, &headers, &params).await?;
    let header_position = match headers.get("last-event-id") {
        None => None,
        Some(value) => Some(
            value
                .to_str()
                .ok()
                .and_then(|v| v.trim().parse::<i64>().ok())
                .ok_or_else(|| ApiError::InvalidHeader {
                    name: "Last-Event-ID",
                    message: "give the id of the last event received (a number)".into(),
                })?,
        ),
    };
    let position = match header_position {
        Some(position) => Some(position),
        None => resume_param(&params)?,
    };
    let session = open(&state, &user, position)?;
    let mut pending = VecDeque::new();
    match &session.backlog {
        Backlog::Replay(updates) => pending.extend(updates.iter().map(sse_update)),
        Backlog::Resync { seq } => pending.push_back(sse_resync(*seq, ResyncReason::TooFarBehind)),
    }
    let stream = futures::stream::unfold(
        (session, pending, false),
        |(mut session, mut pending, done)| async move {
            if let Some(event) = pending.pop_front() {
                return Some((Ok::<_, Infallible>(event), (session, pending, done)));
            }
            if done {
                return None;
            }
            match session.next().await {
                Next::Update(update) => Some((Ok(sse_update(&update)), (session, pending, false))),
                Next::Dropped { seq } => Some((
                    Ok(sse_resync(seq, ResyncReason::SlowConsumer)),
                    (session, pending, true),
                )),
                Next::Closed => None,
            }
        },
    );
    let heartbeat = state.realtime.settings().heartbeat;
    let mut response = Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(heartbeat))
        .into_response();
    // Ask reverse proxies (nginx) not to buffer the stream.
    response
        .headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}

/// `GET /api/v1/ws`: the caller's updates over a WebSocket.
///
/// Text frames `{"seq", "type", "data"}` with `type` `task.changed` or `resync`; the server
/// pings every 15 s and ignores what the client sends. Resume with `?resume_from=<seq>`.
#[utoipa::path(get, path = "/api/v1/ws", tag = "realtime", security(("bearer" = [])),
    params(
        ("ticket" = Option<String>, Query, description = "A ticket from POST /api/v1/stream/tickets, instead of the Authorization header"),
        ("resume_from" = Option<i64>, Query, description = "Resume after this seq"),
    ),
    responses(
        (status = 101, description = "Switching to the WebSocket protocol"),
        (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 429, description = "Too many open streams for this user", body = Problem)))]
pub async fn websocket_stream(
    State(state): State<AppState>,
    headers: HeaderMap,
    params: QueryParams,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    params.only(&["ticket", "resume_from"])?;
    let user = stream_user(&state, &headers, &params).await?;
    let position = resume_param(&params)?;
    let upgrade = upgrade.map_err(|rejection| ApiError::InvalidHeader {
        name: "upgrade",
        message: format!("this route speaks WebSocket only: {rejection}"),
    })?;
    let session = open(&state, &user, position)?;
    let heartbeat = state.realtime.settings().heartbeat;
    Ok(upgrade.on_upgrade(move |socket| run_websocket(socket, session, heartbeat)))
}

async fn run_websocket(mut socket: WebSocket, mut session: Session, heartbeat: Duration) {
    let first: Vec<String> = match &session.backlog {
        Backlog::Replay(updates) => updates.iter().map(|u| ws_update(u)).collect(),
        Backlog::Resync { seq } => vec![ws_resync(*seq, ResyncReason::TooFarBehind)],
    };
    for frame in first {
        if socket.send(Message::Text(frame.into())).await.is_err() {
            return;
        }
    }
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + heartbeat, heartbeat);
    loop {
        tokio::select! {
            next = session.next() => match next {
                Next::Update(update) => {
                    if socket.send(Message::Text(ws_update(&update).into())).await.is_err() {
                        return;
                    }
                }
                Next::Dropped { seq } => {
                    let _ = socket
                        .send(Message::Text(ws_resync(seq, ResyncReason::SlowConsumer).into()))
                        .await;
                    let _ = socket
                        .send(Message::Close(Some(CloseFrame {
                            code: CLOSE_SLOW_CONSUMER,
                            reason: "too slow; resync".into(),
                        })))
                        .await;
                    return;
                }
                Next::Closed => {
                    let _ = socket.send(Message::Close(None)).await;
                    return;
                }
            },
            _ = ping.tick() => {
                if socket.send(Message::Ping(Default::default())).await.is_err() {
                    return;
                }
            }
            incoming = socket.recv() => match incoming {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                Some(Ok(_)) => {}
            },
        }
    }
}

fn open(state: &AppState, user: &User, position: Option<i64>) -> Result<Session, ApiError> {
    state
        .realtime
        .connect(user.id, position)
        .map_err(|ConnectError::TooManyConnections| ApiError::RateLimited {
            retry_after_secs: 5,
        })
}

/// The stream's user: from `?ticket=` when given, else from the bearer token.
async fn stream_user(
    state: &AppState,
    headers: &HeaderMap,
    params: &QueryParams,
) -> Result<User, ApiError> {
    let user = match params.single("ticket")? {
        Some(ticket) => {
            let id = state.realtime.tickets().redeem(ticket, state.clock.now())?;
            state
                .store
                .user(id)
                .await?
                .ok_or(ApiError::Unauthorized("invalid_ticket"))?
        }
        None => authenticate(state, bearer_token(headers)?).await?,
    };
    state.rate_limits.check_user(user.id)?;
    Ok(user)
}

fn bearer_token(headers: &HeaderMap) -> Result<&str, ApiError> {
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or(ApiError::Unauthorized("missing_token"))?
        .to_str()
        .map_err(|_| ApiError::Unauthorized("invalid_token"))?;
    match value.split_once(' ') {
        Some((scheme, token))
            if scheme.eq_ignore_ascii_case("bearer")
                && !token.trim().is_empty()
                && token.len() <= 8192 =>
        {
            Ok(token.trim())
        }
        _ => Err(ApiError::Unauthorized("invalid_token")),
    }
}

fn resume_param(params: &QueryParams) -> Result<Option<i64>, ApiError> {
    params
        .single("resume_from")?
        .map(|value| {
            value.trim().parse::<i64>().map_err(|_| {
                ApiError::query(
                    "resume_from",
                    "malformed",
                    "give the seq of the last update received",
                )
            })
        })
        .transpose()
}

fn sse_update(update: &Arc<Update>) -> Event {
    Event::default()
        .id(update.seq.to_string())
        .event(update.event_type.as_str())
        .data(update.data_json.as_str())
}

fn sse_resync(seq: i64, reason: ResyncReason) -> Event {
    let event = Event::default()
        .event("resync")
        .data(resync_data(seq, reason).to_string());
    if seq > 0 {
        event.id(seq.to_string())
    } else {
        event
    }
}

fn resync_data(seq: i64, reason: ResyncReason) -> serde_json::Value {
    serde_json::json!({ "reason": reason.name(), "seq": seq })
}

fn ws_update(update: &Update) -> String {
    format!(
        r#"{{"seq":{},"type":{},"data":{}}}"#,
        update.seq,
        serde_json::Value::String(update.event_type.clone()),
        update.data_json
    )
}

fn ws_resync(seq: i64, reason: ResyncReason) -> String {
    serde_json::json!({ "seq": seq, "type": "resync", "data": resync_data(seq, reason) })
        .to_string()
}

#[cfg(test)]
mod tests {
    use utoipa::OpenApi as _;

    #[derive(utoipa::OpenApi)]
    #[openapi(paths(super::create_ticket, super::sse_stream, super::websocket_stream))]
    struct Doc;

    #[test]
    fn the_stream_routes_are_documented() {
        let doc = serde_json::to_value(Doc::openapi()).unwrap();
        for path in ["/api/v1/stream/tickets", "/api/v1/stream", "/api/v1/ws"] {
            assert!(doc["paths"][path].is_object(), "{path}");
        }
        let stream = &doc["paths"]["/api/v1/stream"]["get"];
        assert!(stream["responses"]["200"]["content"]["text/event-stream"].is_object());
        assert!(stream["responses"]["429"]["content"]["application/json"].is_object());
        assert!(doc["components"]["schemas"]["StreamTicket"].is_object());
    }
}
