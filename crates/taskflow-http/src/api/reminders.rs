//! Reminders: a task's plan is part of the task (`reminders` on create and PATCH); these
//! routes show what is scheduled for one occurrence and snooze one reminder.

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use taskflow_domain::reminder::{MAX_SNOOZE_DAYS, Offset, Reminder, ReminderState};
use taskflow_domain::{
    FieldError, ReminderId, ReminderPlan, ReminderSpec, TaskId, ValidationErrors,
};
use taskflow_store::StoreError;
use utoipa::ToSchema;

use crate::auth::CurrentUser;
use crate::error::{ApiError, Problem};
use crate::extract::{ApiJson, IdPath, QueryParams};
use crate::state::AppState;

/// Parses the `reminders` list of a task body; errors name `reminders[i]…`.
pub(crate) fn parse_plan(values: &[serde_json::Value]) -> Result<ReminderPlan, ValidationErrors> {
    let mut errors = ValidationErrors::new();
    let mut specs = Vec::with_capacity(values.len());
    if values.len() > taskflow_domain::reminder::MAX_REMINDERS * 4 {
        return Err(FieldError::new(
            "reminders",
            "too_many",
            format!(
                "a task has at most {} reminders",
                taskflow_domain::reminder::MAX_REMINDERS
            ),
        )
        .into());
    }
    for (index, value) in values.iter().enumerate() {
        let field = format!("reminders[{index}]");
        let shape = || {
            FieldError::new(
                field.clone(),
                "invalid_reminder",
                "use {\"before_due\": \"PT1H\"} or {\"at\": \"2026-12-01T09:00:00Z\"}",
            )
        };
        let Some(object) = value.as_object().filter(|o| o.len() == 1) else {
            errors.push(shape());
            continue;
        };
        let spec = match object.iter().next() {
            Some((key, serde_json::Value::String(text))) if key == "before_due" => {
                Offset::parse(&format!("{field}.before_due"), text).map(ReminderSpec::BeforeDue)
            }
            Some((key, serde_json::Value::String(text))) if key == "at" => {
                super::tasks::parse_instant(&format!("{field}.at"), text).map(ReminderSpec::At)
            }
            _ => Err(shape()),
        };
        if let Some(spec) = errors.check(spec) {
            specs.push(spec);
        }
    }
    errors.into_result()?;
    ReminderPlan::new(specs)
}

/// One scheduled reminder of a task occurrence.
#[derive(Serialize, ToSchema)]
pub struct ReminderResponse {
    /// Identifier (for snoozing).
    #[schema(value_type = String, format = Uuid)]
    pub id: ReminderId,
    /// The task occurrence.
    #[schema(value_type = String, format = Uuid)]
    pub task_id: TaskId,
    /// The plan entry: `before_due:PT1H` or `at:<instant>`.
    pub key: String,
    /// The instant the plan asks for.
    pub remind_at: DateTime<Utc>,
    /// When it fires next (later than `remind_at` once snoozed).
    pub fire_at: DateTime<Utc>,
    /// `scheduled`, `firing`, `sent`, `failed` or `cancelled`.
    #[schema(value_type = String, example = "scheduled")]
    pub state: ReminderState,
    /// How many times it fired.
    pub fire_count: u32,
    /// When it last fired.
    pub fired_at: Option<DateTime<Utc>>,
    /// How late the last firing was, in milliseconds.
    pub late_ms: Option<i64>,
}

impl From<&Reminder> for ReminderResponse {
    fn from(r: &Reminder) -> Self {
        Self {
            id: r.id,
            task_id: r.task_id,
            key: r.key.clone(),
            remind_at: r.remind_at,
            fire_at: r.fire_at,
            state: r.state,
            fire_count: r.fire_count,
            fired_at: r.fired_at,
            late_ms: r.late_ms,
        }
    }
}

/// The reminders of one task.
#[derive(Serialize, ToSchema)]
pub struct ReminderList {
    /// Soonest first.
    pub items: Vec<ReminderResponse>,
}

/// Lists what is scheduled (and what fired) for one task occurrence.
#[utoipa::path(get, path = "/api/v1/tasks/{id}/reminders", tag = "reminders", security(("bearer" = [])),
    params(("id" = String, Path, description = "Task id")),
    responses((status = 200, body = ReminderList), (status = 404, body = Problem)))]
pub async fn task_reminders(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    IdPath(id): IdPath<TaskId>,
    params: QueryParams,
) -> Result<Json<ReminderList>, ApiError> {
    params.only(&[])?;
    if state.store.task(user.id, id).await?.is_none() {
        return Err(ApiError::NotFound);
    }
    let reminders = state.store.task_reminders(user.id, id).await?;
    Ok(Json(ReminderList {
        items: reminders.iter().map(ReminderResponse::from).collect(),
    }))
}

/// Body of `POST /api/v1/reminders/{id}/snooze`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SnoozeRequest {
    /// How long from now: an ISO 8601 duration (`PT10M`, `PT1H`, `P1D`), at most 30 days.
    #[serde(rename = "for")]
    #[schema(example = "PT10M")]
    pub duration: String,
}

/// Reschedules one reminder to fire again after the given duration (also after it fired).
#[utoipa::path(post, path = "/api/v1/reminders/{id}/snooze", tag = "reminders", security(("bearer" = [])),
    params(("id" = String, Path, description = "Reminder id")), request_body = SnoozeRequest,
    responses((status = 200, body = ReminderResponse), (status = 404, body = Problem),
              (status = 409, description = "Cancelled, or its task is closed", body = Problem),
              (status = 422, body = Problem)))]
pub async fn snooze_reminder(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    IdPath(id): IdPath<ReminderId>,
    ApiJson(body): ApiJson<SnoozeRequest>,
) -> Result<Json<ReminderResponse>, ApiError> {
    let offset = Offset::parse("for", &body.duration)?;
    if offset.duration() > TimeDelta::days(MAX_SNOOZE_DAYS) {
        return Err(FieldError::new(
            "for",
            "too_long",
            format!("snooze for at most {MAX_SNOOZE_DAYS} days"),
        )
        .into());
    }
    let now = state.clock.now();
    let reminder = state
        .store
        .snooze_reminder(user.id, id, now + offset.duration(), now)
        .await
        .map_err(|error| match error {
            StoreError::Conflict(_) => ApiError::Conflict {
                code: "reminder_cancelled",
                message: "This reminder was cancelled or its task is no longer pending.".into(),
            },
            other => other.into(),
        })?;
    Ok(Json(ReminderResponse::from(&reminder)))
}
