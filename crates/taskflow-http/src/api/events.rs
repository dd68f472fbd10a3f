//! The audit log (for owners) and dead letters (for admins).

use axum::Json;
use axum::extract::{Path, State};
use chrono::{DateTime, Utc};
use serde::Serialize;
use taskflow_domain::TaskId;
use taskflow_store::{AuditQuery, DeadLetter};
use utoipa::ToSchema;

use crate::auth::CurrentUser;
use crate::error::{ApiError, Problem};
use crate::extract::{QueryParams, path_id};
use crate::state::AppState;

/// One audit entry.
#[derive(Serialize, ToSchema)]
pub struct AuditEntryResponse {
    /// The event's id.
    pub event_id: String,
    /// The task.
    #[schema(value_type = String, format = Uuid)]
    pub task_id: TaskId,
    /// CloudEvents type, e.g. `taskflow.task.completed.v1`.
    pub event_type: String,
    /// When the change happened.
    pub occurred_at: DateTime<Utc>,
    /// The event's data (including the task's state after the change).
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
}

/// One page of audit entries.
#[derive(Serialize, ToSchema)]
pub struct AuditList {
    /// The entries, oldest first (or newest first with `order=newest`).
    pub items: Vec<AuditEntryResponse>,
    /// Pass as `cursor` (with the same `order` and `task_id`) for the next page; null on the last.
    pub next_cursor: Option<String>,
}

/// The caller's audit log, optionally for one task (append-only; written by the audit consumer),
/// a page at a time.
#[utoipa::path(get, path = "/api/v1/audit", tag = "events", security(("bearer" = [])),
    params(("task_id" = Option<String>, Query, description = "Only this task"),
           ("order" = Option<String>, Query, description = "`oldest` (default) or `newest` first"),
           ("cursor" = Option<String>, Query, description = "next_cursor of the previous page"),
           ("limit" = Option<u32>, Query, description = "1–1000, default 200")),
    responses((status = 200, body = AuditList), (status = 400, body = Problem)))]
pub async fn audit_log(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    params: QueryParams,
) -> Result<Json<AuditList>, ApiError> {
    params.only(&["task_id", "order", "cursor", "limit"])?;
    let task = match params.single("task_id")? {
        Some(text) => Some(
            text.parse::<TaskId>()
                .map_err(|_| ApiError::query("task_id", "invalid", "a task id is a UUID"))?,
        ),
        None => None,
    };
    let newest_first = match params.single("order")? {
        None | Some("oldest") => false,
        Some("newest") => true,
        Some(_) => {
            return Err(ApiError::query(
                "order",
                "invalid",
                "order is `oldest` or `newest`",
            ));
        }
    };
    let after = params
        .single("cursor")?
        .map(|text| decode_audit_cursor(text, newest_first))
        .transpose()?;
    let limit = parse_limit(&params, 200, 1000)?;
    let page = state
        .store
        .audit_entries(
            user.id,
            AuditQuery {
                task,
                after,
                newest_first,
                limit,
            },
        )
        .await?;
    let items = page
        .entries
        .into_iter()
        .map(|e| AuditEntryResponse {
            event_id: e.event_id,
            task_id: e.task_id,
            event_type: e.event_type,
            occurred_at: e.occurred_at,
            data: e.data,
        })
        .collect();
    Ok(Json(AuditList {
        items,
        next_cursor: page.next.map(|seq| encode_audit_cursor(seq, newest_first)),
    }))
}

/// A cursor is the log position of a page's last entry, marked with the order it was read in
/// (`o` oldest first, `n` newest first), so it cannot continue a page of the other order.
fn encode_audit_cursor(seq: i64, newest_first: bool) -> String {
    format!("{}{seq}", if newest_first { 'n' } else { 'o' })
}

fn decode_audit_cursor(text: &str, newest_first: bool) -> Result<i64, ApiError> {
    let mark = if newest_first { "n" } else { "o" };
    text.strip_prefix(mark)
        .filter(|digits| !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|digits| digits.parse::<i64>().ok())
        .filter(|seq| *seq > 0)
        .ok_or_else(|| {
            ApiError::query(
                "cursor",
                "invalid_cursor",
                "pass back the next_cursor of a previous page, with the same order",
            )
        })
}

fn parse_limit(params: &QueryParams, default: u32, max: u32) -> Result<u32, ApiError> {
    match params.single("limit")? {
        None => Ok(default),
        Some(text) => match text.parse::<u32>() {
            Ok(n) if (1..=max).contains(&n) => Ok(n),
            _ => Err(ApiError::query(
                "limit",
                "out_of_range",
                format!("limit is a whole number from 1 to {max}"),
            )),
        },
    }
}

/// A dead letter.
#[derive(Serialize, ToSchema)]
pub struct DeadLetterResponse {
    /// Identifier.
    #[schema(value_type = String, format = Uuid)]
    pub id: uuid::Uuid,
    /// The consumer group that gave up.
    pub consumer: String,
    /// The topic the event came from.
    pub topic: String,
    /// The event's id.
    pub event_id: String,
    /// The event's type.
    pub event_type: String,
    /// The last error.
    pub error: String,
    /// Attempts made.
    pub attempts: u32,
    /// When it was dead-lettered.
    pub created_at: DateTime<Utc>,
    /// When it was last replayed.
    pub replayed_at: Option<DateTime<Utc>>,
    /// The event itself.
    #[schema(value_type = Object)]
    pub event: serde_json::Value,
}

impl From<DeadLetter> for DeadLetterResponse {
    fn from(letter: DeadLetter) -> Self {
        Self {
            id: letter.id,
            event: serde_json::from_str(&letter.payload)
                .unwrap_or(serde_json::Value::String(letter.payload.clone())),
            consumer: letter.consumer,
            topic: letter.topic,
            event_id: letter.event_id,
            event_type: letter.event_type,
            error: letter.error,
            attempts: letter.attempts,
            created_at: letter.created_at,
            replayed_at: letter.replayed_at,
        }
    }
}

/// Dead letters, newest first.
#[derive(Serialize, ToSchema)]
pub struct DeadLetterList {
    /// The letters.
    pub items: Vec<DeadLetterResponse>,
}

fn require_admin(user: &taskflow_domain::User) -> Result<(), ApiError> {
    if user.is_admin {
        Ok(())
    } else {
        Err(ApiError::Forbidden)
    }
}

/// Lists dead letters (admin role only).
#[utoipa::path(get, path = "/api/v1/admin/dlq", tag = "events", security(("bearer" = [])),
    params(("limit" = Option<u32>, Query, description = "1–1000, default 100")),
    responses((status = 200, body = DeadLetterList), (status = 403, body = Problem)))]
pub async fn list_dead_letters(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    params: QueryParams,
) -> Result<Json<DeadLetterList>, ApiError> {
    require_admin(&user)?;
    params.only(&["limit"])?;
    let limit = parse_limit(&params, 100, 1000)?;
    let items = state
        .store
        .dead_letters(limit)
        .await?
        .into_iter()
        .map(DeadLetterResponse::from)
        .collect();
    Ok(Json(DeadLetterList { items }))
}

/// Re-publishes a dead letter's event on its topic (admin role only).
#[utoipa::path(post, path = "/api/v1/admin/dlq/{id}/replay", tag = "events", security(("bearer" = [])),
    params(("id" = String, Path, description = "Dead letter id")),
    responses((status = 200, body = DeadLetterResponse), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub async fn replay_dead_letter(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Path(id): Path<String>,
) -> Result<Json<DeadLetterResponse>, ApiError> {
    require_admin(&user)?;
    let id: uuid::Uuid = path_id(&id, "id")?;
    let letter = state
        .store
        .replay_dead_letter(id, state.clock.now())
        .await?;
    tracing::info!(dead_letter = %id, event_id = %letter.event_id, admin = %user.id, "dead letter replayed");
    Ok(Json(letter.into()))
}
