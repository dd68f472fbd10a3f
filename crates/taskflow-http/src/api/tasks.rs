//! Tasks: create, read, list, update, complete, reopen, delete.
//!
//! Writes are optimistic: the handler reads the task, checks `If-Match`, computes the new state
//! in the domain and stores it only if the version is unchanged. A concurrent change turns into
//! a 412 when the client named a version, and into a quiet retry when it did not.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize};
use taskflow_domain::recurrence::{Anchor, RecurrenceRule};
use taskflow_domain::task::{recurrence_error, validate_instant};
use taskflow_domain::{
    Description, FieldError, NewTask, Priority, RecurrenceSpec, ReminderPlan, SeriesId, Tag, Tags,
    Task, TaskChange, TaskId, TaskPatch, TaskStatus, TimeZone, Title, ValidationErrors,
};
use taskflow_store::query::search_terms;
use taskflow_store::{Cursor, SortDirection, SortField, StoreError, TagMode, TaskQuery};
use utoipa::ToSchema;

use crate::auth::CurrentUser;
use crate::error::{ApiError, Problem};
use crate::extract::{ApiJson, IdPath, IfMatch, QueryParams, etag};
use crate::state::AppState;
use crate::trace::TraceParent;
use taskflow_domain::events::{TaskEventKind, task_events};

/// A field of a partial update: absent (keep), `null` (clear) or a value.
#[derive(Debug, Default)]
pub enum Patch<T> {
    /// Not in the body: leave the field as it is.
    #[default]
    Missing,
    /// `null`: clear the field.
    Null,
    /// A new value.
    Value(T),
}

impl<T: Serialize> Serialize for Patch<T> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Patch::Missing | Patch::Null => serializer.serialize_none(),
            Patch::Value(value) => value.serialize(serializer),
        }
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Patch<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Option::<T>::deserialize(deserializer).map(|value| value.map_or(Patch::Null, Patch::Value))
    }
}

/// How a task repeats.
#[derive(Deserialize, ToSchema, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RecurrenceRequest {
    /// An RFC 5545 RRULE (`FREQ=WEEKLY;BYDAY=MO,WE`) or a preset: `daily`, `weekdays`, `weekly`,
    /// `biweekly`, `monthly`, `yearly`. SECONDLY/MINUTELY/HOURLY and BYHOUR/BYMINUTE/BYSECOND are
    /// refused: an occurrence happens at the task's time of day.
    #[schema(example = "FREQ=WEEKLY;BYDAY=MO,WE,FR")]
    pub rule: String,
    /// `due` (default: follow the calendar from the first due date, skipping missed occurrences)
    /// or `completion` (count from the moment an occurrence is completed).
    #[schema(example = "due")]
    pub anchor: Option<String>,
    /// Optional end, instead of COUNT/UNTIL inside the rule.
    pub ends: Option<EndsRequest>,
}

/// When a series ends: after a number of occurrences, or at an instant.
#[derive(Deserialize, ToSchema, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EndsRequest {
    /// Total number of occurrences (COUNT).
    pub count: Option<u32>,
    /// Last possible instant (UNTIL), RFC 3339.
    pub until: Option<String>,
}

impl RecurrenceRequest {
    /// The validated rule and anchor.
    pub(crate) fn validate(&self) -> Result<RecurrenceSpec, FieldError> {
        let anchor = match self.anchor.as_deref() {
            None | Some("due") => Anchor::Due,
            Some("completion") => Anchor::Completion,
            Some(_) => {
                return Err(FieldError::new(
                    "recurrence.anchor",
                    "invalid",
                    "use `due` or `completion`",
                ));
            }
        };
        let mut rule = RecurrenceRule::parse(&self.rule)
            .map_err(|e| recurrence_error(e).at("recurrence.rule"))?;
        if let Some(ends) = &self.ends {
            let end = match (ends.count, ends.until.as_deref()) {
                (Some(count), None) => format!("COUNT={count}"),
                (None, Some(until)) => {
                    let until = parse_instant("recurrence.ends.until", until)?;
                    format!("UNTIL={}", until.format("%Y%m%dT%H%M%SZ"))
                }
                _ => {
                    return Err(FieldError::new(
                        "recurrence.ends",
                        "invalid",
                        "give exactly one of `count` or `until`",
                    ));
                }
            };
            if rule.count().is_some() || rule.until_bound().is_some() {
                return Err(FieldError::new(
                    "recurrence.ends",
                    "conflict",
                    "the rule already has COUNT or UNTIL; remove it or drop `ends`",
                ));
            }
            rule = RecurrenceRule::parse(&format!("{};{end}", rule.as_str()))
                .map_err(|e| recurrence_error(e).at("recurrence.ends"))?;
        }
        Ok(RecurrenceSpec { rule, anchor })
    }
}

/// Body of `POST /api/v1/tasks`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTaskRequest {
    /// 1–500 characters, trimmed.
    #[schema(example = "Buy milk")]
    pub title: String,
    /// Up to 20 000 characters.
    pub description: Option<String>,
    /// `none` (default), `low`, `medium`, `high` or `urgent`.
    #[schema(example = "high")]
    pub priority: Option<String>,
    /// Up to 30 tags; lower-cased, duplicates dropped.
    pub tags: Option<Vec<String>>,
    /// RFC 3339 instant, e.g. `2026-12-01T09:00:00+01:00`.
    #[schema(example = "2026-12-01T09:00:00Z")]
    pub due_at: Option<String>,
    /// IANA zone; defaults to the account's.
    #[schema(example = "Europe/Berlin")]
    pub time_zone: Option<String>,
    /// Makes the task repeat (needs `due_at`: the first occurrence is the task itself).
    pub recurrence: Option<RecurrenceRequest>,
    /// Up to 10 reminders, each `{"before_due": "PT1H"}` (ISO 8601 duration, follows the due
    /// date) or `{"at": "<RFC 3339 instant>"}`. An instant more than 60 s in the past is refused;
    /// within that grace it fires at once.
    #[schema(value_type = Option<Vec<Object>>, example = json!([{"before_due": "PT1H"}]))]
    pub reminders: Option<Vec<serde_json::Value>>,
}

/// Body of `PATCH /api/v1/tasks/{id}`: only the fields present change; `null` clears.
#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields, default)]
pub struct UpdateTaskRequest {
    /// New title (cannot be null).
    #[schema(value_type = Option<String>)]
    pub title: Patch<String>,
    /// New description; null empties it.
    #[schema(value_type = Option<String>)]
    pub description: Patch<String>,
    /// New priority; null means `none`.
    #[schema(value_type = Option<String>)]
    pub priority: Patch<String>,
    /// New tag list (replaces the old one); null removes all.
    #[schema(value_type = Option<Vec<String>>)]
    pub tags: Patch<Vec<String>>,
    /// New due instant; null removes it.
    #[schema(value_type = Option<String>)]
    pub due_at: Patch<String>,
    /// New IANA zone (cannot be null).
    #[schema(value_type = Option<String>)]
    pub time_zone: Patch<String>,
    /// `pending`, `completed` or `skipped` (same as reopen / complete / skip).
    #[schema(value_type = Option<String>)]
    pub status: Patch<String>,
    /// New recurrence for this and future occurrences; null stops the series (this occurrence stays).
    #[schema(value_type = Option<RecurrenceRequest>)]
    pub recurrence: Patch<RecurrenceRequest>,
    /// New reminder plan (replaces the old one); null removes all reminders.
    #[schema(value_type = Option<Vec<Object>>)]
    pub reminders: Patch<Vec<serde_json::Value>>,
}

/// A task as the API shows it.
#[derive(Serialize, ToSchema)]
pub struct TaskResponse {
    /// UUIDv7.
    #[schema(value_type = String, format = Uuid)]
    pub id: TaskId,
    /// Title.
    pub title: String,
    /// Description (may be empty).
    pub description: String,
    /// `pending` or `completed`.
    #[schema(value_type = String, example = "pending")]
    pub status: TaskStatus,
    /// `none`, `low`, `medium`, `high` or `urgent`.
    #[schema(value_type = String, example = "high")]
    pub priority: Priority,
    /// Normalised tags.
    pub tags: Vec<String>,
    /// Due instant (UTC).
    pub due_at: Option<DateTime<Utc>>,
    /// IANA zone the task's dates are meant in.
    pub time_zone: String,
    /// Creation instant.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// Completion instant while completed.
    pub completed_at: Option<DateTime<Utc>>,
    /// How the task repeats, if it does.
    pub recurrence: Option<RecurrenceResponse>,
    /// Links the occurrences of a recurring task.
    #[schema(value_type = Option<String>, format = Uuid)]
    pub series_id: Option<SeriesId>,
    /// 0-based position in the series.
    pub occurrence_index: u32,
    /// Increases with every change; the `ETag` is `"<version>"`.
    pub version: i64,
    /// Pending and past due now.
    pub overdue: bool,
    /// The reminder plan: `{"before_due": "PT1H"}` or `{"at": "<instant>"}` entries.
    #[schema(value_type = Vec<Object>)]
    pub reminders: ReminderPlan,
}

/// A task's recurrence as the API shows it.
#[derive(Serialize, ToSchema)]
pub struct RecurrenceResponse {
    /// The normalised RRULE.
    #[schema(example = "FREQ=WEEKLY;BYDAY=MO,WE,FR")]
    pub rule: String,
    /// `due` or `completion`.
    pub anchor: &'static str,
    /// The rule in words, e.g. "every weekday at 09:00".
    pub description: String,
    /// Local wall-clock start of the series (its time of day is every occurrence's).
    #[schema(value_type = String, example = "2026-12-01T09:00:00")]
    pub dtstart: chrono::NaiveDateTime,
}

impl TaskResponse {
    /// The API view of `task` at `now`.
    pub fn new(task: &Task, now: DateTime<Utc>) -> Self {
        Self {
            id: task.id,
            title: task.title.as_str().to_owned(),
            description: task.description.as_str().to_owned(),
            status: task.status,
            priority: task.priority,
            tags: task.tags.to_strings(),
            due_at: task.due_at,
            time_zone: task.time_zone.name().to_owned(),
            created_at: task.created_at,
            updated_at: task.updated_at,
            completed_at: task.completed_at,
            recurrence: task.recurrence.as_ref().map(|r| RecurrenceResponse {
                rule: r.rule.as_str().to_owned(),
                anchor: match r.anchor {
                    Anchor::Due => "due",
                    Anchor::Completion => "completion",
                },
                description: r.describe(task.time_zone),
                dtstart: r.dtstart,
            }),
            series_id: task.series_id,
            occurrence_index: task.occurrence_index,
            version: task.version,
            overdue: task.is_overdue(now),
            reminders: task.reminders.clone(),
        }
    }
}

/// One page of tasks.
#[derive(Serialize, ToSchema)]
pub struct TaskList {
    /// The tasks in the requested order.
    pub items: Vec<TaskResponse>,
    /// Pass as `cursor` to get the next page; null on the last page.
    pub next_cursor: Option<String>,
}

pub(crate) fn parse_instant(field: &str, text: &str) -> Result<DateTime<Utc>, FieldError> {
    let parsed = DateTime::parse_from_rfc3339(text.trim()).map_err(|_| {
        FieldError::new(
            field,
            "invalid_datetime",
            "use an RFC 3339 instant with an offset, like 2026-12-01T09:00:00Z or 2026-12-01T10:00:00+01:00",
        )
    })?;
    validate_instant(field, parsed.with_timezone(&Utc))
}

fn with_field(error: FieldError, field: &str) -> FieldError {
    error.at(field)
}

impl CreateTaskRequest {
    fn validate(self) -> Result<NewTask, ValidationErrors> {
        let mut errors = ValidationErrors::new();
        let title = errors.check(Title::parse(&self.title));
        let description = match self.description.as_deref() {
            Some(text) => errors.check(Description::parse(text)),
            None => Some(Description::default()),
        };
        let priority = match self.priority.as_deref() {
            Some(text) => errors.check(text.parse::<Priority>()),
            None => Some(Priority::None),
        };
        let tags = match Tags::parse(self.tags.as_deref().unwrap_or_default()) {
            Ok(tags) => Some(tags),
            Err(tag_errors) => {
                tag_errors
                    .into_vec()
                    .into_iter()
                    .for_each(|e| errors.push(e));
                None
            }
        };
        let due_at = match self.due_at.as_deref() {
            Some(text) => errors.check(parse_instant("due_at", text)).map(Some),
            None => Some(None),
        };
        let time_zone = match self.time_zone.as_deref() {
            Some(text) => errors.check(TimeZone::parse(text)).map(Some),
            None => Some(None),
        };
        let recurrence = match &self.recurrence {
            Some(request) => errors.check(request.validate()).map(Some),
            None => Some(None),
        };
        let reminders = match self.reminders.as_deref() {
            Some(values) => match super::reminders::parse_plan(values) {
                Ok(plan) => Some(plan),
                Err(plan_errors) => {
                    plan_errors
                        .into_vec()
                        .into_iter()
                        .for_each(|e| errors.push(e));
                    None
                }
            },
            None => Some(ReminderPlan::default()),
        };
        errors.into_result()?;
        match (
            title,
            description,
            priority,
            tags,
            due_at,
            time_zone,
            recurrence,
        ) {
            (
                Some(title),
                Some(description),
                Some(priority),
                Some(tags),
                Some(due_at),
                Some(time_zone),
                Some(recurrence),
            ) => Ok(NewTask {
                title,
                description,
                priority,
                tags,
                due_at,
                time_zone,
                recurrence,
                reminders: reminders.unwrap_or_default(),
            }),
            _ => Err(FieldError::new("body", "invalid", "invalid task").into()),
        }
    }
}

impl UpdateTaskRequest {
    fn validate(self) -> Result<TaskPatch, ValidationErrors> {
        let mut errors = ValidationErrors::new();
        let mut patch = TaskPatch::default();
        let cannot_be_null = |field: &str| {
            FieldError::new(
                field,
                "null",
                format!("`{field}` cannot be null; omit it to keep it"),
            )
        };
        match self.title {
            Patch::Missing => {}
            Patch::Null => errors.push(cannot_be_null("title")),
            Patch::Value(text) => patch.title = errors.check(Title::parse(&text)),
        }
        match self.description {
            Patch::Missing => {}
            Patch::Null => patch.description = Some(Description::default()),
            Patch::Value(text) => patch.description = errors.check(Description::parse(&text)),
        }
        match self.priority {
            Patch::Missing => {}
            Patch::Null => patch.priority = Some(Priority::None),
            Patch::Value(text) => patch.priority = errors.check(text.parse::<Priority>()),
        }
        match self.tags {
            Patch::Missing => {}
            Patch::Null => patch.tags = Some(Tags::default()),
            Patch::Value(list) => match Tags::parse(&list) {
                Ok(tags) => patch.tags = Some(tags),
                Err(tag_errors) => tag_errors
                    .into_vec()
                    .into_iter()
                    .for_each(|e| errors.push(e)),
            },
        }
        match self.due_at {
            Patch::Missing => {}
            Patch::Null => patch.due_at = Some(None),
            Patch::Value(text) => {
                patch.due_at = errors.check(parse_instant("due_at", &text)).map(Some)
            }
        }
        match self.time_zone {
            Patch::Missing => {}
            Patch::Null => errors.push(cannot_be_null("time_zone")),
            Patch::Value(text) => patch.time_zone = errors.check(TimeZone::parse(&text)),
        }
        match self.status {
            Patch::Missing => {}
            Patch::Null => errors.push(cannot_be_null("status")),
            Patch::Value(text) => patch.status = errors.check(text.parse::<TaskStatus>()),
        }
        match self.recurrence {
            Patch::Missing => {}
            Patch::Null => patch.recurrence = Some(None),
            Patch::Value(request) => patch.recurrence = errors.check(request.validate()).map(Some),
        }
        match self.reminders {
            Patch::Missing => {}
            Patch::Null => patch.reminders = Some(ReminderPlan::default()),
            Patch::Value(values) => match super::reminders::parse_plan(&values) {
                Ok(plan) => patch.reminders = Some(plan),
                Err(plan_errors) => plan_errors
                    .into_vec()
                    .into_iter()
                    .for_each(|e| errors.push(e)),
            },
        }
        errors.into_result()?;
        Ok(patch)
    }
}

/// A task response with its `ETag`.
pub(crate) fn task_response(status: StatusCode, task: &Task, now: DateTime<Utc>) -> Response {
    let mut headers = HeaderMap::new();
    if let Ok(value) = HeaderValue::from_str(&etag(task.version)) {
        headers.insert(header::ETAG, value);
    }
    if status == StatusCode::CREATED
        && let Ok(location) = HeaderValue::from_str(&format!("/api/v1/tasks/{}", task.id))
    {
        headers.insert(header::LOCATION, location);
    }
    (status, headers, Json(TaskResponse::new(task, now))).into_response()
}

/// Creates a task.
#[utoipa::path(post, path = "/api/v1/tasks", tag = "tasks", security(("bearer" = [])), request_body = CreateTaskRequest,
    responses((status = 201, body = TaskResponse, headers(("ETag" = String), ("Location" = String))),
              (status = 401, body = Problem), (status = 422, body = Problem), (status = 429, body = Problem)))]
pub async fn create_task(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    trace: TraceParent,
    ApiJson(body): ApiJson<CreateTaskRequest>,
) -> Result<Response, ApiError> {
    let new = body.validate()?;
    state.rate_limits.check_task_create(user.id)?;
    let now = state.clock.now();
    let task = Task::create(user.id, user.time_zone, new, now)?;
    let events = task_events(TaskEventKind::Created, &task, now, Some(trace.as_str()));
    state.store.insert_task(&task, &events).await?;
    Ok(task_response(StatusCode::CREATED, &task, now))
}

/// Reads one task. `If-None-Match` with the current ETag answers 304.
#[utoipa::path(get, path = "/api/v1/tasks/{id}", tag = "tasks", security(("bearer" = [])),
    params(("id" = String, Path, description = "Task id")),
    responses((status = 200, body = TaskResponse, headers(("ETag" = String))), (status = 304), (status = 404, body = Problem)))]
pub async fn get_task(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    IdPath(id): IdPath<TaskId>,
    headers: HeaderMap,
    params: QueryParams,
) -> Result<Response, ApiError> {
    params.only(&[])?;
    let task = state
        .store
        .task(user.id, id)
        .await?
        .ok_or(ApiError::NotFound)?;
    let current = etag(task.version);
    let unchanged = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|t| t.trim().trim_start_matches("W/") == current)
        });
    if unchanged {
        let mut response = StatusCode::NOT_MODIFIED.into_response();
        if let Ok(value) = HeaderValue::from_str(&current) {
            response.headers_mut().insert(header::ETAG, value);
        }
        return Ok(response);
    }
    Ok(task_response(StatusCode::OK, &task, state.clock.now()))
}

const LIST_PARAMETERS: &[&str] = &[
    "status",
    "priority",
    "tag",
    "tag_mode",
    "due_before",
    "due_after",
    "overdue",
    "recurring",
    "series_id",
    "q",
    "sort",
    "order",
    "limit",
    "cursor",
];

fn parse_list_query(params: &QueryParams, now: DateTime<Utc>) -> Result<TaskQuery, ApiError> {
    params.only(LIST_PARAMETERS)?;
    let mut errors = ValidationErrors::new();
    let mut query = TaskQuery::new(now);
    if let Some(status) = params.single("status")? {
        query.status = errors.check(status.parse::<TaskStatus>());
    }
    for (i, value) in params.many("priority")?.into_iter().enumerate() {
        if let Some(p) = errors.check(
            value
                .parse::<Priority>()
                .map_err(|e| with_field(e, &format!("priority[{i}]"))),
        ) {
            query.priorities.push(p);
        }
    }
    for (i, value) in params.many("tag")?.into_iter().enumerate() {
        if let Some(tag) =
            errors.check(Tag::parse(value).map_err(|e| with_field(e, &format!("tag[{i}]"))))
        {
            query.tags.push(tag);
        }
    }
    if query.tags.len() > 30 {
        errors.push(FieldError::new(
            "tag",
            "too_many",
            "filter by at most 30 tags",
        ));
    }
    match params.single("tag_mode")? {
        None | Some("any") => {}
        Some("all") => query.tag_mode = TagMode::All,
        Some(_) => errors.push(FieldError::new("tag_mode", "invalid", "use `any` or `all`")),
    }
    if let Some(text) = params.single("due_before")? {
        query.due_before = errors.check(parse_instant("due_before", text));
    }
    if let Some(text) = params.single("due_after")? {
        query.due_after = errors.check(parse_instant("due_after", text));
    }
    match params.single("overdue")? {
        None => {}
        Some("true") => query.overdue = Some(true),
        Some("false") => query.overdue = Some(false),
        Some(_) => errors.push(FieldError::new(
            "overdue",
            "invalid",
            "use `true` or `false`",
        )),
    }
    match params.single("recurring")? {
        None => {}
        Some("true") => query.recurring = Some(true),
        Some("false") => query.recurring = Some(false),
        Some(_) => errors.push(FieldError::new(
            "recurring",
            "invalid",
            "use `true` or `false`",
        )),
    }
    if let Some(text) = params.single("series_id")? {
        match text.parse::<SeriesId>() {
            Ok(series) => query.series_id = Some(series),
            Err(_) => errors.push(FieldError::new(
                "series_id",
                "invalid",
                "a series id is a UUID",
            )),
        }
    }
    if let Some(text) = params.single("q")? {
        if text.chars().count() > 500 {
            errors.push(FieldError::new(
                "q",
                "too_long",
                "search text has at most 500 characters",
            ));
        } else {
            query.search_terms = search_terms(text);
        }
    }
    let sort = match params.single("sort")? {
        None if !query.search_terms.is_empty() => SortField::Relevance,
        None => SortField::CreatedAt,
        Some(text) => SortField::parse(text).unwrap_or_else(|| {
            errors.push(FieldError::new(
                "sort",
                "invalid",
                "sort by due_at, priority, created_at, updated_at, title or relevance",
            ));
            SortField::CreatedAt
        }),
    };
    query.sort = sort;
    query.direction = match params.single("order")? {
        None => sort.default_direction(),
        Some("asc") => SortDirection::Asc,
        Some("desc") => SortDirection::Desc,
        Some(_) => {
            errors.push(FieldError::new("order", "invalid", "use `asc` or `desc`"));
            sort.default_direction()
        }
    };
    if let Some(text) = params.single("limit")? {
        match text.parse::<u32>() {
            Ok(limit @ 1..=TaskQuery::MAX_LIMIT) => query.limit = limit,
            _ => errors.push(FieldError::new(
                "limit",
                "out_of_range",
                format!("limit is a whole number from 1 to {}", TaskQuery::MAX_LIMIT),
            )),
        }
    }
    if let Some(text) = params.single("cursor")? {
        match Cursor::decode(text, query.sort, query.direction) {
            Ok(cursor) => query.after = Some(cursor),
            Err(e) => errors.push(FieldError::new("cursor", "invalid_cursor", e.to_string())),
        }
    }
    errors.into_result().map_err(ApiError::InvalidQuery)?;
    Ok(query)
}

/// Lists tasks with filters, full-text search, sorting and cursor pagination.
#[utoipa::path(get, path = "/api/v1/tasks", tag = "tasks", security(("bearer" = [])),
    params(
        ("status" = Option<String>, Query, description = "`pending` or `completed`"),
        ("priority" = Option<Vec<String>>, Query, description = "One or more priorities (repeat or comma-separate)"),
        ("tag" = Option<Vec<String>>, Query, description = "One or more tags"),
        ("tag_mode" = Option<String>, Query, description = "`any` (default) or `all`"),
        ("due_before" = Option<String>, Query, description = "Due strictly before this RFC 3339 instant"),
        ("due_after" = Option<String>, Query, description = "Due at or after this RFC 3339 instant"),
        ("overdue" = Option<bool>, Query, description = "Only pending tasks past due (true) or only the others (false)"),
        ("recurring" = Option<bool>, Query, description = "Only repeating (true) or one-off (false) tasks"),
        ("series_id" = Option<String>, Query, description = "Only occurrences of this series"),
        ("q" = Option<String>, Query, description = "Full-text search over title, description and tags (prefix match)"),
        ("sort" = Option<String>, Query, description = "due_at, priority, created_at (default), updated_at, title, relevance (default with q)"),
        ("order" = Option<String>, Query, description = "asc or desc (default depends on sort)"),
        ("limit" = Option<u32>, Query, description = "1–200, default 50"),
        ("cursor" = Option<String>, Query, description = "next_cursor of the previous page"),
    ),
    responses((status = 200, body = TaskList), (status = 400, body = Problem), (status = 401, body = Problem)))]
pub async fn list_tasks(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    params: QueryParams,
) -> Result<Json<TaskList>, ApiError> {
    let now = state.clock.now();
    let query = parse_list_query(&params, now)?;
    let page = state.store.list_tasks(user.id, &query).await?;
    Ok(Json(TaskList {
        items: page
            .items
            .iter()
            .map(|t| TaskResponse::new(t, now))
            .collect(),
        next_cursor: page.next_cursor.map(|c| c.encode()),
    }))
}

/// How many times a write without `If-Match` is retried after losing a race.
const WRITE_ATTEMPTS: usize = 16;

/// Reads the task, checks the precondition, applies `change` and stores the result.
pub(crate) async fn modify_task(
    state: &AppState,
    user: &taskflow_domain::User,
    id: TaskId,
    if_match: &IfMatch,
    trace: &TraceParent,
    change: impl Fn(&Task, DateTime<Utc>) -> Result<Option<TaskChange>, FieldError>,
) -> Result<Task, ApiError> {
    for _ in 0..WRITE_ATTEMPTS {
        let current = state
            .store
            .task(user.id, id)
            .await?
            .ok_or(ApiError::NotFound)?;
        if !if_match.allows(current.version) {
            return Err(ApiError::PreconditionFailed {
                current_version: current.version,
            });
        }
        let now = state.clock.now();
        let Some(next) = change(&current, now)? else {
            return Ok(current);
        };
        let kind = TaskEventKind::between(&current, &next.task);
        let events = task_events(kind, &next.task, now, Some(trace.as_str()));
        let next_occurrence = next.next_occurrence.as_ref().map(|task| {
            let events = task_events(TaskEventKind::Created, task, now, Some(trace.as_str()));
            (task, events)
        });
        match state
            .store
            .update_task(
                user.id,
                &next.task,
                current.version,
                &events,
                next_occurrence
                    .as_ref()
                    .map(|(task, events)| (*task, events.as_slice())),
            )
            .await
        {
            Ok(_) => return Ok(next.task),
            Err(StoreError::VersionMismatch { current }) if if_match.is_conditional() => {
                return Err(ApiError::PreconditionFailed {
                    current_version: current,
                });
            }
            Err(StoreError::VersionMismatch { .. }) => continue,
            Err(other) => return Err(other.into()),
        }
    }
    Err(ApiError::Conflict {
        code: "concurrent_modification",
        message: "The task kept changing while we tried to update it; try again.".into(),
    })
}

/// Changes some fields of a task. `If-Match: "<version>"` makes it conditional (412 when stale).
#[utoipa::path(patch, path = "/api/v1/tasks/{id}", tag = "tasks", security(("bearer" = [])), request_body = UpdateTaskRequest,
    params(("id" = String, Path, description = "Task id"), ("If-Match" = Option<String>, Header, description = "ETag of the version you edited")),
    responses((status = 200, body = TaskResponse), (status = 404, body = Problem), (status = 412, body = Problem), (status = 422, body = Problem)))]
pub async fn update_task(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    IdPath(id): IdPath<TaskId>,
    if_match: IfMatch,
    trace: TraceParent,
    ApiJson(body): ApiJson<UpdateTaskRequest>,
) -> Result<Response, ApiError> {
    let patch = body.validate()?;
    let task = modify_task(&state, &user, id, &if_match, &trace, |task, now| {
        task.patched(patch.clone(), now)
    })
    .await?;
    Ok(task_response(StatusCode::OK, &task, state.clock.now()))
}

/// Marks a task completed (no change if it already is).
#[utoipa::path(post, path = "/api/v1/tasks/{id}/complete", tag = "tasks", security(("bearer" = [])),
    params(("id" = String, Path, description = "Task id"), ("If-Match" = Option<String>, Header, description = "ETag of the version you saw")),
    responses((status = 200, body = TaskResponse), (status = 404, body = Problem), (status = 412, body = Problem)))]
pub async fn complete_task(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    IdPath(id): IdPath<TaskId>,
    if_match: IfMatch,
    trace: TraceParent,
) -> Result<Response, ApiError> {
    let task = modify_task(&state, &user, id, &if_match, &trace, |task, now| {
        task.completed(now)
    })
    .await?;
    Ok(task_response(StatusCode::OK, &task, state.clock.now()))
}

/// Makes a completed task pending again (no change if it is pending).
#[utoipa::path(post, path = "/api/v1/tasks/{id}/reopen", tag = "tasks", security(("bearer" = [])),
    params(("id" = String, Path, description = "Task id"), ("If-Match" = Option<String>, Header, description = "ETag of the version you saw")),
    responses((status = 200, body = TaskResponse), (status = 404, body = Problem), (status = 412, body = Problem)))]
pub async fn reopen_task(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    IdPath(id): IdPath<TaskId>,
    if_match: IfMatch,
    trace: TraceParent,
) -> Result<Response, ApiError> {
    let task = modify_task(&state, &user, id, &if_match, &trace, |task, now| {
        task.reopened(now)
    })
    .await?;
    Ok(task_response(StatusCode::OK, &task, state.clock.now()))
}

/// Deletes a task.
#[utoipa::path(delete, path = "/api/v1/tasks/{id}", tag = "tasks", security(("bearer" = [])),
    params(("id" = String, Path, description = "Task id"), ("If-Match" = Option<String>, Header, description = "ETag of the version you saw")),
    responses((status = 204), (status = 404, body = Problem), (status = 412, body = Problem)))]
pub async fn delete_task(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    IdPath(id): IdPath<TaskId>,
    if_match: IfMatch,
    trace: TraceParent,
) -> Result<StatusCode, ApiError> {
    let now = state.clock.now();
    let deleted_events: taskflow_store::EventsFor = std::sync::Arc::new(move |task: &Task| {
        task_events(TaskEventKind::Deleted, task, now, Some(trace.as_str())).to_vec()
    });
    for _ in 0..WRITE_ATTEMPTS {
        let current = state
            .store
            .task(user.id, id)
            .await?
            .ok_or(ApiError::NotFound)?;
        if !if_match.allows(current.version) {
            return Err(ApiError::PreconditionFailed {
                current_version: current.version,
            });
        }
        match state
            .store
            .delete_task(user.id, id, Some(current.version), deleted_events.clone())
            .await
        {
            Ok(()) => return Ok(StatusCode::NO_CONTENT),
            Err(StoreError::VersionMismatch { current }) if if_match.is_conditional() => {
                return Err(ApiError::PreconditionFailed {
                    current_version: current,
                });
            }
            Err(StoreError::VersionMismatch { .. }) => continue,
            Err(other) => return Err(other.into()),
        }
    }
    Err(ApiError::Conflict {
        code: "concurrent_modification",
        message: "The task kept changing while we tried to delete it; try again.".into(),
    })
}
