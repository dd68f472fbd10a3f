//! iCalendar: export of the user's tasks as VTODOs, a secret feed URL calendar programs can
//! subscribe to, and import of VTODOs (idempotent by UID). The mapping lives in [`crate::ical`].
//!
//! The feed token (`tfc_…`, 256 random bits) is shown once when made; only its SHA-256 is
//! stored, like personal access tokens. Making a new one rotates it (the old URL stops
//! working); deleting revokes it. Imported VTODOs get a task id derived from (user, UID), so
//! importing the same calendar twice creates nothing the second time.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{FromRequest, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::Serialize;
use sha2::{Digest, Sha256};
use taskflow_domain::{Task, TaskId, TaskStatus, User};
use taskflow_store::{CalendarFeed, StoreError, TaskQuery};
use utoipa::ToSchema;

use crate::auth::{CurrentUser, personal_token_hash, random_bytes};
use crate::error::{ApiError, Problem};
use crate::extract::QueryParams;
use crate::ical::{self, ImportedTodo, Skipped};
use crate::state::AppState;
use crate::trace::TraceParent;
use taskflow_domain::events::{TaskEventKind, task_events};

/// Prefix of calendar feed tokens.
pub const FEED_PREFIX: &str = "tfc_";

/// Most tasks one export contains.
pub const MAX_EXPORTED_TASKS: usize = 10_000;

/// Most VTODOs one import may contain.
pub const MAX_IMPORTED_TODOS: usize = 1_000;

/// Media type of iCalendar bodies.
pub const TEXT_CALENDAR: &str = "text/calendar; charset=utf-8";

/// Every task of `user`, oldest first (at most [`MAX_EXPORTED_TASKS`]).
async fn all_tasks(state: &AppState, user: &User) -> Result<Vec<Task>, ApiError> {
    let now = state.clock.now();
    let mut tasks = Vec::new();
    let mut query = TaskQuery::new(now);
    query.limit = TaskQuery::MAX_LIMIT;
    query.direction = taskflow_store::SortDirection::Asc;
    loop {
        let page = state.store.list_tasks(user.id, &query).await?;
        tasks.extend(page.items);
        match page.next_cursor {
            Some(cursor) if tasks.len() < MAX_EXPORTED_TASKS => query.after = Some(cursor),
            _ => break,
        }
    }
    tasks.truncate(MAX_EXPORTED_TASKS);
    Ok(tasks)
}

async fn calendar_response(state: &AppState, user: &User) -> Result<Response, ApiError> {
    let tasks = all_tasks(state, user).await?;
    let body = ical::calendar_for(&tasks, "TaskFlow", state.clock.now());
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(TEXT_CALENDAR),
    );
    headers.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_static("inline; filename=\"taskflow.ics\""),
    );
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-cache"),
    );
    Ok((StatusCode::OK, headers, body).into_response())
}

/// Exports every task of the caller as an iCalendar VTODO.
#[utoipa::path(get, path = "/api/v1/calendar.ics", tag = "calendar", security(("bearer" = [])),
    responses((status = 200, description = "The caller's tasks as VTODOs", content_type = "text/calendar", body = String),
              (status = 401, body = Problem)))]
pub async fn export_calendar(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    params: QueryParams,
) -> Result<Response, ApiError> {
    params.only(&[])?;
    calendar_response(&state, &user).await
}

/// The secret feed: the tasks of the feed's owner, without other authentication.
#[utoipa::path(get, path = "/api/v1/calendar/feed/{token}", tag = "calendar",
    params(("token" = String, Path, description = "The feed token (`tfc_…`), optionally followed by `.ics`")),
    responses((status = 200, description = "The owner's tasks as VTODOs", content_type = "text/calendar", body = String),
              (status = 404, body = Problem)))]
pub async fn calendar_feed(
    State(state): State<AppState>,
    Path(token): Path<String>,
) -> Result<Response, ApiError> {
    let token = token.strip_suffix(".ics").unwrap_or(&token);
    if !token.starts_with(FEED_PREFIX) || token.len() > 128 {
        return Err(ApiError::NotFound);
    }
    let user = state
        .store
        .user_by_calendar_feed(&personal_token_hash(token), state.clock.now())
        .await?
        .ok_or(ApiError::NotFound)?;
    calendar_response(&state, &user).await
}

/// A calendar feed's metadata.
#[derive(Serialize, ToSchema)]
pub struct FeedInfo {
    /// The first characters of the token.
    pub prefix: String,
    /// When the current token was made.
    pub created_at: DateTime<Utc>,
    /// Last fetch by a calendar program (to the minute).
    pub last_used_at: Option<DateTime<Utc>>,
}

impl From<CalendarFeed> for FeedInfo {
    fn from(feed: CalendarFeed) -> Self {
        Self {
            prefix: feed.prefix,
            created_at: feed.created_at,
            last_used_at: feed.last_used_at,
        }
    }
}

/// A new feed URL: the only time its token is shown.
#[derive(Serialize, ToSchema)]
pub struct CreatedFeed {
    /// Metadata.
    #[serde(flatten)]
    pub info: FeedInfo,
    /// The secret token.
    pub token: String,
    /// Path of the feed on this server.
    pub path: String,
    /// Absolute URL to paste into a calendar program (from the request's `Host`).
    pub url: Option<String>,
}

/// Makes the caller's secret calendar feed URL, replacing (rotating) any previous one.
#[utoipa::path(post, path = "/api/v1/calendar/feed", tag = "calendar", security(("bearer" = [])),
    responses((status = 201, body = CreatedFeed), (status = 401, body = Problem)))]
pub async fn create_feed(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    headers: HeaderMap,
) -> Result<(StatusCode, Json<CreatedFeed>), ApiError> {
    use base64::Engine as _;
    let token = format!(
        "{FEED_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random_bytes::<32>())
    );
    let feed = CalendarFeed {
        user_id: user.id,
        prefix: token.chars().take(8).collect(),
        created_at: state.clock.now(),
        last_used_at: None,
    };
    state
        .store
        .replace_calendar_feed(&feed, &personal_token_hash(&token))
        .await?;
    let path = format!("/api/v1/calendar/feed/{token}.ics");
    let url = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| !h.is_empty() && h.chars().all(|c| c.is_ascii_graphic()))
        .map(|host| {
            let scheme = headers
                .get("x-forwarded-proto")
                .and_then(|v| v.to_str().ok())
                .filter(|v| *v == "https")
                .unwrap_or("http");
            format!("{scheme}://{host}{path}")
        });
    Ok((
        StatusCode::CREATED,
        Json(CreatedFeed {
            info: feed.into(),
            token,
            path,
            url,
        }),
    ))
}

/// The caller's feed (without its token).
#[utoipa::path(get, path = "/api/v1/calendar/feed", tag = "calendar", security(("bearer" = [])),
    responses((status = 200, body = FeedInfo), (status = 404, body = Problem)))]
pub async fn get_feed(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    params: QueryParams,
) -> Result<Json<FeedInfo>, ApiError> {
    params.only(&[])?;
    let feed = state
        .store
        .calendar_feed(user.id)
        .await?
        .ok_or(ApiError::NotFound)?;
    Ok(Json(feed.into()))
}

/// Revokes the caller's feed URL.
#[utoipa::path(delete, path = "/api/v1/calendar/feed", tag = "calendar", security(("bearer" = [])),
    responses((status = 204), (status = 404, body = Problem)))]
pub async fn delete_feed(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
) -> Result<StatusCode, ApiError> {
    state.store.delete_calendar_feed(user.id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// One imported VTODO.
#[derive(Serialize, ToSchema)]
pub struct ImportedItem {
    /// Its UID.
    pub uid: String,
    /// The task made from it.
    #[schema(value_type = String, format = Uuid)]
    pub task_id: TaskId,
    /// The task's title.
    pub title: String,
    /// Parts of the VTODO the task does not carry, and why.
    pub not_applied: Vec<String>,
}

/// One VTODO that was not imported.
#[derive(Serialize, ToSchema)]
pub struct SkippedItem {
    /// Its UID, when it has one.
    pub uid: Option<String>,
    /// 0-based position among the VTODOs of the body.
    pub index: usize,
    /// `missing_uid`, `missing_summary`, `invalid_field`, `cancelled`, `unsupported_recurrence`,
    /// `already_imported` or `already_exists`.
    pub code: &'static str,
    /// Why.
    pub reason: String,
}

impl From<Skipped> for SkippedItem {
    fn from(s: Skipped) -> Self {
        Self {
            uid: s.uid,
            index: s.index,
            code: s.code,
            reason: s.reason,
        }
    }
}

/// Answer of an import.
#[derive(Serialize, ToSchema)]
pub struct ImportReport {
    /// VTODOs that became tasks.
    pub imported: Vec<ImportedItem>,
    /// VTODOs that did not, with the reason.
    pub skipped: Vec<SkippedItem>,
}

/// The task id an imported UID gets for `user`: stable, so a second import finds it.
fn imported_task_id(user: &User, uid: &str) -> TaskId {
    let digest = Sha256::new()
        .chain_update(user.id.to_string().as_bytes())
        .chain_update(b"\n")
        .chain_update(uid.as_bytes())
        .finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    // A version-8 (custom) UUID: version and variant bits set by hand.
    bytes[6] = (bytes[6] & 0x0f) | 0x80;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    TaskId::from_uuid(uuid::Uuid::from_bytes(bytes))
}

async fn import_one(
    state: &AppState,
    user: &User,
    trace: &TraceParent,
    index: usize,
    todo: ImportedTodo,
) -> Result<Result<ImportedItem, Skipped>, ApiError> {
    let skip = |code, reason: String| {
        Ok(Err(Skipped {
            uid: Some(todo.uid.clone()),
            index,
            code,
            reason,
        }))
    };
    if let Some(own) = ical::task_id_in_uid(&todo.uid)
        && state.store.task(user.id, own).await?.is_some()
    {
        return skip(
            "already_exists",
            "this task is already in your account".into(),
        );
    }
    let id = imported_task_id(user, &todo.uid);
    if state.store.task(user.id, id).await?.is_some() {
        return skip(
            "already_imported",
            "a VTODO with this UID was imported before".into(),
        );
    }
    let now = state.clock.now();
    let mut task = match Task::create(user.id, user.time_zone, todo.task.clone(), now) {
        Ok(task) => task,
        Err(e) => return skip("invalid_field", format!("{}: {}", e.field, e.message)),
    };
    task.id = id;
    task.ical_uid = Some(todo.uid.clone());
    if let Some(at) = todo.completed_at {
        task.status = TaskStatus::Completed;
        task.completed_at = Some(at.min(now));
    }
    let mut not_applied = todo.not_applied.clone();
    if !todo.reminders.is_empty() {
        let mut with_plan = task.clone();
        with_plan.reminders = todo.reminders.clone();
        // Alarms of a closed task, or already past, are history: kept in the plan (so a
        // re-export shows them) but never scheduled; only a plan that cannot exist is refused.
        match with_plan.check_reminders(None, now) {
            Ok(()) => task = with_plan,
            Err(e) if e.code == "in_the_past" => task = with_plan,
            Err(e) => not_applied.push(format!("VALARM: {}", e.message)),
        }
    }
    let events = task_events(TaskEventKind::Created, &task, now, Some(trace.as_str()));
    match state.store.insert_task(&task, &events).await {
        Ok(()) => {}
        Err(StoreError::Conflict(_)) => {
            return skip(
                "already_imported",
                "a VTODO with this UID was imported before".into(),
            );
        }
        Err(other) => return Err(other.into()),
    }
    Ok(Ok(ImportedItem {
        uid: todo.uid,
        task_id: task.id,
        title: task.title.as_str().to_owned(),
        not_applied,
    }))
}

/// Imports the VTODOs of an iCalendar body (any content type; at most 1 MiB and
/// 1000 VTODOs). Idempotent by UID: a VTODO imported before, or one of the caller's own
/// exported tasks, is reported as skipped.
#[utoipa::path(post, path = "/api/v1/import/ics", tag = "calendar", security(("bearer" = [])),
    request_body(content = String, content_type = "text/calendar", description = "A VCALENDAR with VTODOs"),
    responses((status = 200, body = ImportReport), (status = 400, description = "Not iCalendar (`malformed_ics`)", body = Problem),
              (status = 413, body = Problem), (status = 422, description = "Too many VTODOs", body = Problem), (status = 429, body = Problem)))]
pub async fn import_ics(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    trace: TraceParent,
    request: Request,
) -> Result<Json<ImportReport>, ApiError> {
    let bytes = Bytes::from_request(request, &())
        .await
        .map_err(|rejection| match rejection {
            axum::extract::rejection::BytesRejection::FailedToBufferBody(
                axum::extract::rejection::FailedToBufferBody::LengthLimitError(_),
            ) => ApiError::PayloadTooLarge,
            _ => ApiError::MalformedIcs("the body could not be read completely".into()),
        })?;
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| ApiError::MalformedIcs("the body is not UTF-8 text".into()))?;
    let todos = ical::read_calendar(text, user.time_zone, state.clock.now())
        .map_err(ApiError::MalformedIcs)?;
    if todos.len() > MAX_IMPORTED_TODOS {
        return Err(ApiError::field(
            "body",
            "too_many_todos",
            format!(
                "an import holds at most {MAX_IMPORTED_TODOS} VTODOs; this one has {}",
                todos.len()
            ),
        ));
    }
    state.rate_limits.check_task_create(user.id)?;
    let mut report = ImportReport {
        imported: Vec::new(),
        skipped: Vec::new(),
    };
    for (index, todo) in todos.into_iter().enumerate() {
        let outcome = match todo {
            Ok(todo) => import_one(&state, &user, &trace, index, todo).await?,
            Err(skipped) => Err(skipped),
        };
        match outcome {
            Ok(item) => report.imported.push(item),
            Err(skipped) => report.skipped.push(skipped.into()),
        }
    }
    Ok(Json(report))
}
