//! Recurring tasks: skip an occurrence, stop a series, preview upcoming occurrences, list a series.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use chrono::{DateTime, NaiveDateTime, Utc};
use serde::{Deserialize, Serialize};
use taskflow_domain::task::recurrence_error;
use taskflow_domain::{
    FieldError, Recurrence, SeriesId, TaskId, TaskPatch, TimeZone, ValidationErrors,
};
use utoipa::ToSchema;

use crate::api::tasks::{
    RecurrenceRequest, TaskResponse, modify_task, parse_instant, task_response,
};
use crate::auth::CurrentUser;
use crate::error::{ApiError, Problem};
use crate::extract::{ApiJson, IdPath, IfMatch, QueryParams};
use crate::state::AppState;
use crate::trace::TraceParent;

/// Records the occurrence as skipped and creates the next one (no change if it is not pending).
#[utoipa::path(post, path = "/api/v1/tasks/{id}/skip", tag = "recurrence", security(("bearer" = [])),
    params(("id" = String, Path, description = "Task id"), ("If-Match" = Option<String>, Header, description = "ETag of the version you saw")),
    responses((status = 200, body = TaskResponse), (status = 404, body = Problem), (status = 412, body = Problem),
              (status = 422, description = "Not a recurring task", body = Problem)))]
pub async fn skip_occurrence(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    IdPath(id): IdPath<TaskId>,
    if_match: IfMatch,
    trace: TraceParent,
) -> Result<Response, ApiError> {
    let task = modify_task(&state, &user, id, &if_match, &trace, |task, now| {
        task.skipped(now)
    })
    .await?;
    Ok(task_response(StatusCode::OK, &task, state.clock.now()))
}

/// Stops the series: no further occurrences are created; this occurrence stays as it is.
#[utoipa::path(post, path = "/api/v1/tasks/{id}/recurrence/cancel", tag = "recurrence", security(("bearer" = [])),
    params(("id" = String, Path, description = "Task id"), ("If-Match" = Option<String>, Header, description = "ETag of the version you saw")),
    responses((status = 200, body = TaskResponse), (status = 404, body = Problem), (status = 412, body = Problem)))]
pub async fn cancel_recurrence(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    IdPath(id): IdPath<TaskId>,
    if_match: IfMatch,
    trace: TraceParent,
) -> Result<Response, ApiError> {
    let task = modify_task(&state, &user, id, &if_match, &trace, |task, now| {
        task.patched(
            TaskPatch {
                recurrence: Some(None),
                ..TaskPatch::default()
            },
            now,
        )
    })
    .await?;
    Ok(task_response(StatusCode::OK, &task, state.clock.now()))
}

/// One upcoming occurrence.
#[derive(Serialize, ToSchema)]
pub struct OccurrencePreview {
    /// 0-based position in the series.
    pub index: u32,
    /// Due instant (UTC).
    pub due_at: DateTime<Utc>,
    /// Wall-clock time in the task's zone.
    #[schema(value_type = String, example = "2026-12-01T09:00:00")]
    pub local: NaiveDateTime,
}

/// Upcoming occurrences of a series.
#[derive(Serialize, ToSchema)]
pub struct OccurrenceList {
    /// The task's IANA zone.
    pub time_zone: String,
    /// The rule in words.
    pub description: String,
    /// From the current occurrence on, at most `limit`.
    pub items: Vec<OccurrencePreview>,
}

/// Previews the next due instants of the series from this occurrence on, without creating anything.
#[utoipa::path(get, path = "/api/v1/tasks/{id}/occurrences", tag = "recurrence", security(("bearer" = [])),
    params(("id" = String, Path, description = "Task id"), ("limit" = Option<u32>, Query, description = "1–100, default 10")),
    responses((status = 200, body = OccurrenceList), (status = 404, body = Problem), (status = 409, description = "Not recurring", body = Problem)))]
pub async fn preview_occurrences(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    IdPath(id): IdPath<TaskId>,
    params: QueryParams,
) -> Result<Json<OccurrenceList>, ApiError> {
    params.only(&["limit"])?;
    let limit = match params.single("limit")? {
        None => 10,
        Some(text) => match text.parse::<usize>() {
            Ok(n @ 1..=100) => n,
            _ => {
                return Err(ApiError::query(
                    "limit",
                    "out_of_range",
                    "limit is a whole number from 1 to 100",
                ));
            }
        },
    };
    let task = state
        .store
        .task(user.id, id)
        .await?
        .ok_or(ApiError::NotFound)?;
    let (Some(recurrence), Some(due)) = (&task.recurrence, task.due_at) else {
        return Err(ApiError::Conflict {
            code: "not_recurring",
            message: "This task does not repeat; give it a `recurrence` first.".into(),
        });
    };
    let schedule = recurrence.schedule(task.time_zone);
    let occurrences = schedule
        .preview(due, task.occurrence_index, limit)
        .map_err(|e| ApiError::Validation(recurrence_error(e).into()))?;
    Ok(Json(OccurrenceList {
        time_zone: task.time_zone.name().to_owned(),
        description: schedule.describe(),
        items: occurrences
            .into_iter()
            .map(|o| OccurrencePreview {
                index: o.index,
                due_at: o.utc,
                local: o.local,
            })
            .collect(),
    }))
}

/// Body of `POST /api/v1/recurrence/preview`: a rule not saved yet, as a task would carry it.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RulePreviewRequest {
    /// The recurrence, exactly as `recurrence` of a task.
    pub recurrence: RecurrenceRequest,
    /// First due instant (RFC 3339): the series starts here.
    #[schema(example = "2026-12-01T09:00:00+01:00")]
    pub due_at: String,
    /// IANA zone the rule is evaluated in; defaults to the account's.
    #[schema(example = "Europe/Berlin")]
    pub time_zone: Option<String>,
    /// 1–100, default 5.
    pub limit: Option<u32>,
}

/// Describes a rule and previews its first occurrences without creating anything, so an editor
/// can show the rule in words and its next dates while the user builds it.
#[utoipa::path(post, path = "/api/v1/recurrence/preview", tag = "recurrence", security(("bearer" = [])),
    request_body = RulePreviewRequest,
    responses((status = 200, body = OccurrenceList), (status = 422, body = Problem)))]
pub async fn preview_rule(
    CurrentUser(user): CurrentUser,
    ApiJson(body): ApiJson<RulePreviewRequest>,
) -> Result<Json<OccurrenceList>, ApiError> {
    let mut errors = ValidationErrors::new();
    let spec = errors.check(body.recurrence.validate());
    let due = errors.check(parse_instant("due_at", &body.due_at));
    let zone = match body.time_zone.as_deref() {
        Some(name) => errors.check(TimeZone::parse(name)),
        None => Some(user.time_zone),
    };
    let limit = match body.limit {
        None => Some(5),
        Some(n @ 1..=100) => Some(n as usize),
        Some(_) => {
            errors.push(FieldError::new(
                "limit",
                "out_of_range",
                "limit is a whole number from 1 to 100",
            ));
            None
        }
    };
    errors.into_result()?;
    let (Some(spec), Some(due), Some(zone), Some(limit)) = (spec, due, zone, limit) else {
        return Err(ApiError::Internal("validated fields missing".into()));
    };
    let recurrence = Recurrence {
        rule: spec.rule,
        anchor: spec.anchor,
        dtstart: due.with_timezone(&zone.tz()).naive_local(),
    };
    let schedule = recurrence.schedule(zone);
    let invalid = |e| ApiError::Validation(recurrence_error(e).at("recurrence.rule").into());
    schedule.validate(due).map_err(invalid)?;
    let occurrences = schedule.preview(due, 0, limit).map_err(invalid)?;
    Ok(Json(OccurrenceList {
        time_zone: zone.name().to_owned(),
        description: schedule.describe(),
        items: occurrences
            .into_iter()
            .map(|o| OccurrencePreview {
                index: o.index,
                due_at: o.utc,
                local: o.local,
            })
            .collect(),
    }))
}

/// A series' occurrences.
#[derive(Serialize, ToSchema)]
pub struct SeriesResponse {
    /// The series.
    #[schema(value_type = String, format = Uuid)]
    pub series_id: SeriesId,
    /// Past and current occurrences, oldest first.
    pub items: Vec<TaskResponse>,
}

/// Lists the past and current occurrences of a series.
#[utoipa::path(get, path = "/api/v1/series/{id}", tag = "recurrence", security(("bearer" = [])),
    params(("id" = String, Path, description = "Series id")),
    responses((status = 200, body = SeriesResponse), (status = 404, body = Problem)))]
pub async fn get_series(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    IdPath(series_id): IdPath<SeriesId>,
    params: QueryParams,
) -> Result<Json<SeriesResponse>, ApiError> {
    params.only(&[])?;
    let tasks = state.store.series_occurrences(user.id, series_id).await?;
    if tasks.is_empty() {
        return Err(ApiError::NotFound);
    }
    let now = state.clock.now();
    Ok(Json(SeriesResponse {
        series_id,
        items: tasks.iter().map(|t| TaskResponse::new(t, now)).collect(),
    }))
}
