//! Quick add: one line of plain English becomes a task.
//!
//! `POST /api/v1/tasks/quick {text, time_zone?, dry_run?}` parses the text with
//! `taskflow-quickadd` in the user's (or the given) time zone at the server's "now", and creates
//! the task through the same domain path as `POST /api/v1/tasks` (validation, events, outbox).
//! The answer always shows what was understood (`parsed`) and lists in `not_applied` every
//! understood phrase the created task could not carry, with the reason: nothing the user typed
//! is dropped silently.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use taskflow_domain::recurrence::{Anchor, RecurrenceRule};
use taskflow_domain::reminder::{Offset, ReminderPlan, ReminderSpec};
use taskflow_domain::task::recurrence_error;
use taskflow_domain::{
    Description, FieldError, NewTask, Priority, RecurrenceSpec, Tags, Task, TimeZone, Title,
};
use taskflow_quickadd::{ParsedReminder, ParsedTask, QuickAddInput};
use utoipa::ToSchema;

use crate::api::tasks::TaskResponse;
use crate::auth::CurrentUser;
use crate::error::{ApiError, Problem};
use crate::extract::{ApiJson, etag};
use crate::state::AppState;
use crate::trace::TraceParent;
use taskflow_domain::events::{TaskEventKind, task_events};

/// Longest quick-add text, in characters (a title holds at most 500, and a text never
/// yields a longer title than itself).
pub const MAX_TEXT_CHARS: usize = Title::MAX_CHARS;

/// Body of `POST /api/v1/tasks/quick`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QuickAddRequest {
    /// The line to parse (1–500 characters).
    #[schema(
        example = "Pay rent every month on the 1st at 9am #finance !high remind me 1 day before"
    )]
    pub text: String,
    /// IANA zone the text's dates and times are meant in; defaults to the account's.
    #[schema(example = "Europe/Berlin")]
    pub time_zone: Option<String>,
    /// Only parse: answer what was understood without creating a task.
    #[serde(default)]
    pub dry_run: bool,
}

/// A reminder as the task JSON carries it: `{"before_due": "PT1H"}` or `{"at": "<RFC 3339>"}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReminderJson {
    /// This long before the due date (ISO 8601 duration).
    BeforeDue(String),
    /// At this instant.
    At(DateTime<Utc>),
}

/// A recurrence understood in the text.
#[derive(Serialize, ToSchema)]
pub struct ParsedRecurrenceJson {
    /// The normalised RRULE.
    #[schema(example = "FREQ=MONTHLY;BYMONTHDAY=1")]
    pub rule: String,
    /// `due` or `completion`.
    pub anchor: &'static str,
}

/// One understood phrase of the text.
#[derive(Serialize, ToSchema)]
pub struct UnderstoodSpan {
    /// `due`, `recurrence`, `tag`, `priority` or `reminder`.
    pub kind: &'static str,
    /// The words as typed.
    pub text: String,
    /// Byte offset of the phrase in `text`.
    pub start: usize,
    /// Byte offset just past the phrase.
    pub end: usize,
}

/// What the parser understood.
#[derive(Serialize, ToSchema)]
pub struct ParsedQuickAdd {
    /// The text without the understood phrases.
    pub title: String,
    /// Due instant (UTC).
    pub due_at: Option<DateTime<Utc>>,
    /// Whether a time of day was given (date-only due dates are due at 23:59 local time).
    pub due_has_time: bool,
    /// IANA zone the text was read in (and the task's zone).
    pub time_zone: String,
    /// Recurrence, if one was understood; `due_at` is its first occurrence.
    pub recurrence: Option<ParsedRecurrenceJson>,
    /// Tags, lower-cased.
    pub tags: Vec<String>,
    /// `low`, `medium`, `high` or `urgent`.
    pub priority: Option<&'static str>,
    /// Reminders from "remind me …" phrases.
    pub reminders: Vec<ReminderJson>,
    /// The understood phrases, in text order.
    pub understood: Vec<UnderstoodSpan>,
}

/// An understood phrase the created task does not carry, and why.
#[derive(Serialize, ToSchema)]
pub struct NotApplied {
    /// `reminder`, `tag`, …
    pub kind: &'static str,
    /// The words as typed.
    pub text: String,
    /// Why it was not applied.
    pub reason: String,
}

/// Answer of `POST /api/v1/tasks/quick`.
#[derive(Serialize, ToSchema)]
pub struct QuickAddResponse {
    /// What was understood.
    pub parsed: ParsedQuickAdd,
    /// The created task; null for a dry run.
    pub task: Option<TaskResponse>,
    /// Understood phrases the task does not carry (empty when everything was applied).
    pub not_applied: Vec<NotApplied>,
}

/// The reminders of a parse as the task JSON shape.
pub fn reminders_json(parsed: &ParsedTask) -> Vec<ReminderJson> {
    parsed
        .reminders
        .iter()
        .map(|r| match r {
            ParsedReminder::BeforeDue(iso) => ReminderJson::BeforeDue(iso.clone()),
            ParsedReminder::At(at) => ReminderJson::At(*at),
        })
        .collect()
}

/// The reminder plan a parse asks for; errors name `reminders[i]`.
pub fn reminder_plan_for(parsed: &ParsedTask) -> Result<ReminderPlan, FieldError> {
    let mut specs = Vec::with_capacity(parsed.reminders.len());
    for (i, reminder) in parsed.reminders.iter().enumerate() {
        specs.push(match reminder {
            ParsedReminder::BeforeDue(iso) => {
                ReminderSpec::BeforeDue(Offset::parse(&format!("reminders[{i}].before_due"), iso)?)
            }
            ParsedReminder::At(at) => ReminderSpec::At(*at),
        });
    }
    ReminderPlan::new(specs).map_err(|errors| {
        errors.into_vec().into_iter().next().unwrap_or_else(|| {
            FieldError::new("reminders", "invalid", "the reminders cannot be stored")
        })
    })
}

/// Attaches `plan` to the new task, checked like a plan given to `POST /api/v1/tasks` (a
/// relative reminder needs a due date; none may lie in the past). Returns the reason when the
/// task cannot carry it (the task is then created without it).
fn attach_reminders(
    task: &mut Task,
    plan: &ReminderPlan,
    now: DateTime<Utc>,
) -> Result<(), String> {
    if plan.is_empty() {
        return Ok(());
    }
    let mut with_plan = task.clone();
    with_plan.reminders = plan.clone();
    with_plan
        .check_reminders(None, now)
        .map_err(|e| e.message.clone())?;
    *task = with_plan;
    Ok(())
}

fn parsed_json(parsed: &ParsedTask, zone: TimeZone) -> ParsedQuickAdd {
    ParsedQuickAdd {
        title: parsed.title.clone(),
        due_at: parsed.due_at,
        due_has_time: parsed.due_has_time,
        time_zone: zone.name().to_owned(),
        recurrence: parsed.recurrence.as_ref().map(|r| ParsedRecurrenceJson {
            rule: r.rule.clone(),
            anchor: match r.anchor {
                Anchor::Due => "due",
                Anchor::Completion => "completion",
            },
        }),
        tags: parsed.tags.clone(),
        priority: parsed.priority,
        reminders: reminders_json(parsed),
        understood: parsed
            .understood
            .iter()
            .map(|s| UnderstoodSpan {
                kind: s.kind,
                text: s.text.clone(),
                start: s.start,
                end: s.end,
            })
            .collect(),
    }
}

fn span_text(parsed: &ParsedTask, kind: &str, needle: &str) -> String {
    parsed
        .understood
        .iter()
        .find(|s| s.kind == kind && s.text.to_lowercase().contains(needle))
        .map_or_else(|| needle.to_owned(), |s| s.text.clone())
}

/// Turns a parse into the fields of a new task. Tags the domain refuses are kept in the
/// title (and reported), so no typed word disappears.
fn new_task(
    parsed: &ParsedTask,
    zone: TimeZone,
    not_applied: &mut Vec<NotApplied>,
) -> Result<NewTask, ApiError> {
    let mut title = parsed.title.clone();
    let mut tags = Vec::new();
    for tag in &parsed.tags {
        let text = span_text(parsed, "tag", &format!("#{tag}"));
        if tags.len() >= 30 {
            title.push_str(&format!(" {text}"));
            not_applied.push(NotApplied {
                kind: "tag",
                text,
                reason: "a task has at most 30 tags; kept in the title".into(),
            });
            continue;
        }
        match taskflow_domain::Tag::parse(tag) {
            Ok(_) => tags.push(tag.clone()),
            Err(e) => {
                title.push_str(&format!(" {text}"));
                not_applied.push(NotApplied {
                    kind: "tag",
                    text,
                    reason: format!("{}; kept in the title", e.message),
                });
            }
        }
    }
    let title = Title::parse(&title).map_err(|e| e.at("text"))?;
    let tags = Tags::parse(&tags).map_err(ApiError::Validation)?;
    let priority = match parsed.priority {
        Some(p) => p.parse::<Priority>().map_err(|e| e.at("text"))?,
        None => Priority::None,
    };
    let recurrence = match &parsed.recurrence {
        Some(r) => Some(RecurrenceSpec {
            rule: RecurrenceRule::parse(&r.rule).map_err(|e| recurrence_error(e).at("text"))?,
            anchor: r.anchor,
        }),
        None => None,
    };
    Ok(NewTask {
        title,
        description: Description::default(),
        priority,
        tags,
        due_at: parsed.due_at,
        time_zone: Some(zone),
        recurrence,
        reminders: ReminderPlan::default(),
    })
}

/// Validates the request: the text's length and the zone.
fn validate(body: &QuickAddRequest, default_zone: TimeZone) -> Result<TimeZone, ApiError> {
    let mut errors = taskflow_domain::ValidationErrors::new();
    let chars = body.text.chars().count();
    if body.text.trim().is_empty() {
        errors.push(FieldError::new("text", "empty", "type what the task is"));
    } else if chars > MAX_TEXT_CHARS {
        errors.push(FieldError::new(
            "text",
            "too_long",
            format!("quick-add text has at most {MAX_TEXT_CHARS} characters"),
        ));
    }
    let zone = match body.time_zone.as_deref() {
        Some(name) => errors.check(TimeZone::parse(name)),
        None => Some(default_zone),
    };
    errors.into_result()?;
    zone.ok_or_else(|| ApiError::field("time_zone", "invalid_time_zone", "unknown time zone"))
}

/// Parses one line of plain English into a task and creates it (or only parses, with
/// `dry_run`). Understood phrases the task cannot carry are listed in `not_applied`.
#[utoipa::path(post, path = "/api/v1/tasks/quick", tag = "tasks", security(("bearer" = [])), request_body = QuickAddRequest,
    responses((status = 201, description = "Created", body = QuickAddResponse, headers(("ETag" = String), ("Location" = String))),
              (status = 200, description = "Dry run: the parse only", body = QuickAddResponse),
              (status = 401, body = Problem), (status = 422, body = Problem), (status = 429, body = Problem)))]
pub async fn quick_add(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    trace: TraceParent,
    ApiJson(body): ApiJson<QuickAddRequest>,
) -> Result<Response, ApiError> {
    let zone = validate(&body, user.time_zone)?;
    let now = state.clock.now();
    let parsed = taskflow_quickadd::parse(&QuickAddInput {
        text: &body.text,
        now,
        time_zone: zone.tz(),
    });
    let mut not_applied = Vec::new();
    let new = new_task(&parsed, zone, &mut not_applied)?;
    let plan = match reminder_plan_for(&parsed) {
        Ok(plan) => plan,
        Err(e) => {
            // E.g. "remind me 400 days before": understood, but not a reminder a task can have.
            for span in parsed.understood.iter().filter(|s| s.kind == "reminder") {
                not_applied.push(NotApplied {
                    kind: "reminder",
                    text: span.text.clone(),
                    reason: e.message.clone(),
                });
            }
            ReminderPlan::default()
        }
    };
    let mut task = Task::create(user.id, user.time_zone, new, now).map_err(|e| {
        if e.field.starts_with("recurrence") || e.field == "due_at" {
            e.at("text")
        } else {
            e
        }
    })?;
    if let Err(reason) = attach_reminders(&mut task, &plan, now) {
        for span in parsed.understood.iter().filter(|s| s.kind == "reminder") {
            not_applied.push(NotApplied {
                kind: "reminder",
                text: span.text.clone(),
                reason: reason.clone(),
            });
        }
    }
    if body.dry_run {
        let response = QuickAddResponse {
            parsed: parsed_json(&parsed, zone),
            task: None,
            not_applied,
        };
        return Ok((StatusCode::OK, Json(response)).into_response());
    }
    state.rate_limits.check_task_create(user.id)?;
    let events = task_events(TaskEventKind::Created, &task, now, Some(trace.as_str()));
    state.store.insert_task(&task, &events).await?;
    let mut headers = HeaderMap::new();
    if let Ok(value) = HeaderValue::from_str(&etag(task.version)) {
        headers.insert(header::ETAG, value);
    }
    if let Ok(location) = HeaderValue::from_str(&format!("/api/v1/tasks/{}", task.id)) {
        headers.insert(header::LOCATION, location);
    }
    let response = QuickAddResponse {
        parsed: parsed_json(&parsed, zone),
        task: Some(TaskResponse::new(&task, now)),
        not_applied,
    };
    Ok((StatusCode::CREATED, headers, Json(response)).into_response())
}
