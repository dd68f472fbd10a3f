//! The stream handlers: SSE, WebSocket and ticket issuance.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use chrono::{DateTime, Utc};
use serde::Serialize;
use taskflow_domain::User;
use tokio::time::Instant;
use utoipa::ToSchema;

use super::hub::{Backlog, ConnectError, Next, ResyncReason, Session, Update};
use crate::auth::{CurrentUser, authenticate};
use crate::error::{ApiError, Problem};
use crate::extract::QueryParams;
use crate::state::AppState;

/// WebSocket close code sent to a session dropped for being too slow ("try again later").
pub const CLOSE_SLOW_CONSUMER: u16 = 1013;

/// Bytes read from a WebSocket at a time. Clients only answer pings (and may close); the server
/// ignores anything else they send, so a small buffer keeps idle streams light: the default of
/// 128 KiB per stream was nearly all of an idle WebSocket's memory.
pub const WS_READ_BUFFER: usize = 1024;

/// Largest message (and frame) a client may send on a stream; larger ones close it.
pub const WS_MAX_MESSAGE: usize = 64 * 1024;

/// The SSE heartbeat: an empty comment.
const SSE_HEARTBEAT: &[u8] = b":\n\n";

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
        Backlog::Replay(updates) => pending.extend(updates.iter().map(|u| sse_frame(u))),
        Backlog::Resync { seq } => pending.push_back(sse_resync(*seq, ResyncReason::TooFarBehind)),
    }
    // Frames are rendered once per update and shared by every session (a change may fan out to
    // thousands). A comment goes out every heartbeat interval, on one timer per stream that is
    // never re-armed per frame (re-arming it per frame put the p99 of a change reaching 10 000
    // sessions at 115 ms; without, 99 ms).
    let heartbeat = state.realtime.settings().heartbeat;
    let mut beats = tokio::time::interval_at(Instant::now() + heartbeat, heartbeat);
    beats.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let stream = futures::stream::unfold(
        (session, pending, false, beats),
        move |(mut session, mut pending, done, mut beats)| async move {
            if let Some(frame) = pending.pop_front() {
                return Some((Ok::<_, Infallible>(frame), (session, pending, done, beats)));
            }
            if done {
                return None;
            }
            tokio::select! {
                next = session.next() => match next {
                    Next::Update(update) => {
                        Some((Ok(sse_frame(&update)), (session, pending, false, beats)))
                    }
                    Next::Dropped { seq } => Some((
                        Ok(sse_resync(seq, ResyncReason::SlowConsumer)),
                        (session, pending, true, beats),
                    )),
                    Next::Closed => None,
                },
                _ = beats.tick() => Some((
                    Ok(Bytes::from_static(SSE_HEARTBEAT)),
                    (session, pending, done, beats),
                )),
            }
        },
    );
    let mut response = Response::new(Body::from_stream(stream));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // Ask reverse proxies (nginx) not to buffer the stream.
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}

/// `GET /api/v1/ws`: the caller's updates over a WebSocket.
///
/// Text frames `{"seq", "type", "data"}` with `type` `task.changed` or `resync`; the server
/// pings every 15 s and ignores what the client sends (a message over 64 KiB closes the
/// stream). Resume with `?resume_from=<seq>`.
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
    Ok(upgrade
        .read_buffer_size(WS_READ_BUFFER)
        .max_message_size(WS_MAX_MESSAGE)
        .max_frame_size(WS_MAX_MESSAGE)
        .on_upgrade(move |socket| run_websocket(socket, session, heartbeat)))
}

async fn run_websocket(mut socket: WebSocket, mut session: Session, heartbeat: Duration) {
    let first: Vec<Utf8Bytes> = match &session.backlog {
        Backlog::Replay(updates) => updates.iter().map(|u| ws_frame(u)).collect(),
        Backlog::Resync { seq } => vec![ws_resync(*seq, ResyncReason::TooFarBehind).into()],
    };
    for frame in first {
        if socket.send(Message::Text(frame)).await.is_err() {
            return;
        }
    }
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + heartbeat, heartbeat);
    loop {
        tokio::select! {
            next = session.next() => match next {
                Next::Update(update) => {
                    if socket.send(Message::Text(ws_frame(&update))).await.is_err() {
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

/// The update as an SSE frame (`id`, `event`, `data`), rendered on first use and shared.
fn sse_frame(update: &Update) -> Bytes {
    update
        .sse_frame
        .get_or_init(|| {
            // `data_json` is compact JSON, which has no line breaks: one `data:` line holds it.
            Bytes::from(format!(
                "id: {}\nevent: {}\ndata: {}\n\n",
                update.seq, update.event_type, update.data_json
            ))
        })
        .clone()
}

fn sse_resync(seq: i64, reason: ResyncReason) -> Bytes {
    let data = resync_data(seq, reason);
    Bytes::from(if seq > 0 {
        format!("id: {seq}\nevent: resync\ndata: {data}\n\n")
    } else {
        format!("event: resync\ndata: {data}\n\n")
    })
}

fn resync_data(seq: i64, reason: ResyncReason) -> serde_json::Value {
    serde_json::json!({ "reason": reason.name(), "seq": seq })
}

/// The update as a WebSocket text frame, rendered on first use and shared.
fn ws_frame(update: &Update) -> Utf8Bytes {
    update
        .ws_frame
        .get_or_init(|| {
            format!(
                r#"{{"seq":{},"type":{},"data":{}}}"#,
                update.seq,
                serde_json::Value::String(update.event_type.clone()),
                update.data_json
            )
            .into()
        })
        .clone()
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
