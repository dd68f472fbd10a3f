//! Tasks and their fields.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Datelike, SubsecRound, Utc};
use serde::{Deserialize, Serialize};

use chrono::NaiveDateTime;
use taskflow_recurrence::{Anchor, RecurrenceError, RecurrenceRule, Schedule};

use crate::ids::{SeriesId, TaskId, UserId};
use crate::reminder::ReminderPlan;
use crate::time::{TimeZone, truncate_for_message};
use crate::validation::{FieldError, ValidationErrors};

/// Characters that render as nothing: zero-width spaces and joiners, direction marks, the
/// byte-order mark, soft hyphens, word joiners.
pub fn is_invisible(c: char) -> bool {
    matches!(c, '\u{00AD}' | '\u{180E}' | '\u{200B}'..='\u{200F}' | '\u{2060}'..='\u{2064}' | '\u{FEFF}')
}

/// Characters refused in one-line text: line and paragraph separators, and the bidirectional
/// embeddings, overrides and isolates used to disguise text (`"\u{202E}txt.exe"`).
pub fn is_disallowed_format(c: char) -> bool {
    matches!(c, '\u{2028}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// A task title: trimmed, 1–500 characters, on one line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Title(String);

impl Title {
    /// Most characters accepted.
    pub const MAX_CHARS: usize = 500;

    /// Parses a title.
    pub fn parse(input: &str) -> Result<Self, FieldError> {
        let trimmed = input.trim();
        if trimmed
            .chars()
            .all(|c| c.is_whitespace() || is_invisible(c))
        {
            return Err(FieldError::new("title", "empty", "a task needs a title"));
        }
        if trimmed.chars().count() > Self::MAX_CHARS {
            return Err(FieldError::new(
                "title",
                "too_long",
                format!("a title has at most {} characters", Self::MAX_CHARS),
            ));
        }
        if trimmed
            .chars()
            .any(|c| c.is_control() || is_disallowed_format(c))
        {
            return Err(FieldError::new(
                "title",
                "invalid_characters",
                "a title is one line without control characters; put details in the description",
            ));
        }
        Ok(Self(trimmed.to_owned()))
    }

    /// The title.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Wraps a title read back from storage.
    pub fn from_trusted(value: String) -> Self {
        Self(value)
    }
}

/// A free-text description of at most 20 000 characters (line breaks and tabs allowed).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Description(String);

impl Description {
    /// Most characters accepted.
    pub const MAX_CHARS: usize = 20_000;

    /// Parses a description.
    pub fn parse(input: &str) -> Result<Self, FieldError> {
        if input.chars().count() > Self::MAX_CHARS {
            return Err(FieldError::new(
                "description",
                "too_long",
                format!("a description has at most {} characters", Self::MAX_CHARS),
            ));
        }
        if input
            .chars()
            .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
        {
            return Err(FieldError::new(
                "description",
                "invalid_characters",
                "a description cannot contain control characters other than line breaks and tabs",
            ));
        }
        Ok(Self(input.to_owned()))
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Wraps a description read back from storage.
    pub fn from_trusted(value: String) -> Self {
        Self(value)
    }
}

/// Whether a task is still to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskStatus {
    /// Still to do.
    Pending,
    /// Done.
    Completed,
    /// An occurrence of a recurring task passed over without being done.
    Skipped,
}

impl TaskStatus {
    /// The wire and storage name.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Completed => "completed",
            Self::Skipped => "skipped",
        }
    }
}

impl FromStr for TaskStatus {
    type Err = FieldError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "pending" => Ok(Self::Pending),
            "completed" => Ok(Self::Completed),
            "skipped" => Ok(Self::Skipped),
            other => Err(FieldError::new(
                "status",
                "invalid_status",
                format!(
                    "`{}` is not a status; use `pending`, `completed` or `skipped`",
                    truncate_for_message(other)
                ),
            )),
        }
    }
}

/// How important a task is, from `none` to `urgent`.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    /// Not prioritised (the default).
    #[default]
    None,
    /// Low.
    Low,
    /// Medium.
    Medium,
    /// High.
    High,
    /// Urgent.
    Urgent,
}

impl Priority {
    /// All priorities, least important first.
    pub const ALL: [Priority; 5] = [
        Self::None,
        Self::Low,
        Self::Medium,
        Self::High,
        Self::Urgent,
    ];

    /// Sort rank stored in the database: 0 (`none`) to 4 (`urgent`).
    pub fn rank(&self) -> i64 {
        *self as i64
    }

    /// The priority for a stored rank.
    pub fn from_rank(rank: i64) -> Option<Self> {
        usize::try_from(rank)
            .ok()
            .and_then(|i| Self::ALL.get(i).copied())
    }

    /// The wire name.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Low => "low",
            Self::Medium => "medium",
            Self::High => "high",
            Self::Urgent => "urgent",
        }
    }
}

impl FromStr for Priority {
    type Err = FieldError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| {
                FieldError::new(
                    "priority",
                    "invalid_priority",
                    format!(
                        "`{}` is not a priority; use none, low, medium, high or urgent",
                        truncate_for_message(s)
                    ),
                )
            })
    }
}

/// One tag: trimmed, lower-case, 1–64 characters, no spaces, commas or `#`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Tag(String);

impl Tag {
    /// Most characters accepted.
    pub const MAX_CHARS: usize = 64;

    /// Parses and normalises a tag (a leading `#` is dropped, so `#Work` is `work`).
    pub fn parse(input: &str) -> Result<Self, FieldError> {
        let trimmed = input.trim();
        let trimmed = trimmed.strip_prefix('#').unwrap_or(trimmed);
        let normalised = trimmed.to_lowercase();
        if normalised.is_empty() {
            return Err(FieldError::new("tag", "empty", "a tag cannot be blank"));
        }
        if normalised.chars().count() > Self::MAX_CHARS {
            return Err(FieldError::new(
                "tag",
                "too_long",
                format!("a tag has at most {} characters", Self::MAX_CHARS),
            ));
        }
        if normalised.chars().any(|c| {
            c.is_whitespace()
                || c.is_control()
                || is_disallowed_format(c)
                || (is_invisible(c) && !matches!(c, '\u{200C}' | '\u{200D}'))
                || matches!(c, ',' | '#' | '"')
        }) {
            return Err(FieldError::new(
                "tag",
                "invalid_characters",
                format!(
                    "`{}` is not a tag: tags have no spaces, commas, quotes or `#`",
                    truncate_for_message(input)
                ),
            ));
        }
        Ok(Self(normalised))
    }

    /// The tag.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A task's tags: at most 30, normalised, without duplicates, in the order first given.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Tags(Vec<Tag>);

impl Tags {
    /// Most tags on one task.
    pub const MAX_COUNT: usize = 30;

    /// Parses a list of tags, reporting each bad one under `tags[i]`.
    pub fn parse<S: AsRef<str>>(inputs: &[S]) -> Result<Self, ValidationErrors> {
        let mut errors = ValidationErrors::new();
        let mut tags: Vec<Tag> = Vec::with_capacity(inputs.len().min(Self::MAX_COUNT));
        for (i, input) in inputs.iter().enumerate() {
            if let Some(tag) =
                errors.check(Tag::parse(input.as_ref()).map_err(|e| e.at(format!("tags[{i}]"))))
                && !tags.contains(&tag)
            {
                tags.push(tag);
            }
        }
        if tags.len() > Self::MAX_COUNT {
            errors.push(FieldError::new(
                "tags",
                "too_many",
                format!("a task has at most {} tags", Self::MAX_COUNT),
            ));
        }
        errors.into_result()?;
        Ok(Self(tags))
    }

    /// Wraps tags read back from storage.
    pub fn from_trusted(values: Vec<String>) -> Self {
        Self(values.into_iter().map(Tag).collect())
    }

    /// The tags.
    pub fn as_slice(&self) -> &[Tag] {
        &self.0
    }

    /// The tags as strings.
    pub fn to_strings(&self) -> Vec<String> {
        self.0.iter().map(|t| t.0.clone()).collect()
    }

    /// Whether there are no tags.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Checks that an instant is within the years we accept (1900–9999) and drops sub-microsecond precision.
pub fn validate_instant(field: &str, instant: DateTime<Utc>) -> Result<DateTime<Utc>, FieldError> {
    if !(1900..=9999).contains(&instant.year()) {
        return Err(FieldError::new(
            field,
            "out_of_range",
            "dates must lie between the years 1900 and 9999",
        ));
    }
    Ok(instant.trunc_subsecs(6))
}

/// How a task repeats: the rule, what the next occurrence is computed from, and the local
/// wall-clock start of the series (its time of day is every occurrence's time of day).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recurrence {
    /// The RFC 5545 rule.
    pub rule: RecurrenceRule,
    /// Calendar of the rule (`due`) or restarted at each completion (`completion`).
    pub anchor: Anchor,
    /// Local wall time of the series start (DTSTART) in the task's zone.
    pub dtstart: NaiveDateTime,
}

impl Recurrence {
    /// The schedule in `zone`.
    pub fn schedule(&self, zone: TimeZone) -> Schedule {
        Schedule::new(self.rule.clone(), self.anchor, zone.tz(), self.dtstart)
    }

    /// English description, e.g. "every weekday at 09:00".
    pub fn describe(&self, zone: TimeZone) -> String {
        self.schedule(zone).describe()
    }
}

/// A requested recurrence, before it is tied to a due date.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecurrenceSpec {
    /// The rule.
    pub rule: RecurrenceRule,
    /// The anchor.
    pub anchor: Anchor,
}

/// Turns a recurrence problem into a field error under `recurrence`.
pub fn recurrence_error(error: RecurrenceError) -> FieldError {
    FieldError::new("recurrence", error.code(), error.to_string())
}

/// A task as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Task {
    /// Identifier (UUIDv7).
    pub id: TaskId,
    /// Owner; every store call is scoped by it.
    pub user_id: UserId,
    /// Title.
    pub title: Title,
    /// Description (may be empty).
    pub description: Description,
    /// Pending, completed or skipped.
    pub status: TaskStatus,
    /// Priority.
    pub priority: Priority,
    /// Tags.
    pub tags: Tags,
    /// When it is due, if ever.
    pub due_at: Option<DateTime<Utc>>,
    /// Zone in which the task's dates are meant.
    pub time_zone: TimeZone,
    /// How it repeats, if it does.
    pub recurrence: Option<Recurrence>,
    /// The series this occurrence belongs to (set once a task has had a recurrence).
    pub series_id: Option<SeriesId>,
    /// 0-based position in its series.
    pub occurrence_index: u32,
    /// Creation instant.
    pub created_at: DateTime<Utc>,
    /// Last change instant.
    pub updated_at: DateTime<Utc>,
    /// When it was completed, while it is.
    pub completed_at: Option<DateTime<Utc>>,
    /// Incremented on every change; the ETag.
    pub version: i64,
    /// When to remind the owner; carried to every next occurrence.
    pub reminders: ReminderPlan,
    /// The UID of the iCalendar VTODO this task was imported from, kept so that exports
    /// show the same UID (carried to every next occurrence, as one VTODO is one series).
    pub ical_uid: Option<String>,
}

/// The validated fields of a task to create.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewTask {
    /// Title.
    pub title: Title,
    /// Description.
    pub description: Description,
    /// Priority.
    pub priority: Priority,
    /// Tags.
    pub tags: Tags,
    /// Due instant.
    pub due_at: Option<DateTime<Utc>>,
    /// Zone; `None` means the owner's default.
    pub time_zone: Option<TimeZone>,
    /// Recurrence; needs `due_at`.
    pub recurrence: Option<RecurrenceSpec>,
    /// Reminders; relative ones need `due_at`.
    pub reminders: ReminderPlan,
}

/// A validated partial update: `None` leaves a field as it is.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TaskPatch {
    /// New title.
    pub title: Option<Title>,
    /// New description.
    pub description: Option<Description>,
    /// New priority.
    pub priority: Option<Priority>,
    /// New tags (replacing the old list).
    pub tags: Option<Tags>,
    /// New due instant; `Some(None)` clears it.
    pub due_at: Option<Option<DateTime<Utc>>>,
    /// New zone.
    pub time_zone: Option<TimeZone>,
    /// New status (same effect as complete / reopen / skip).
    pub status: Option<TaskStatus>,
    /// New recurrence; `Some(None)` stops the series (this occurrence stays).
    pub recurrence: Option<Option<RecurrenceSpec>>,
    /// New reminder plan (replacing the old one).
    pub reminders: Option<ReminderPlan>,
}

/// The outcome of a change: the task's new state and, when it closed an occurrence of a
/// recurring task, the next occurrence to create in the same transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskChange {
    /// The changed task (version bumped).
    pub task: Task,
    /// The next occurrence, if the change closed a recurring occurrence and the series goes on.
    pub next_occurrence: Option<Task>,
}

impl Task {
    /// A new pending task owned by `user_id`, created at `now`. Fails when a recurrence is
    /// requested without a due date, or its rule has no occurrence after the due date.
    pub fn create(
        user_id: UserId,
        default_zone: TimeZone,
        new: NewTask,
        now: DateTime<Utc>,
    ) -> Result<Self, FieldError> {
        let time_zone = new.time_zone.unwrap_or(default_zone);
        let mut task = Self {
            id: TaskId::new(),
            user_id,
            title: new.title,
            description: new.description,
            status: TaskStatus::Pending,
            priority: new.priority,
            tags: new.tags,
            due_at: new.due_at,
            time_zone,
            recurrence: None,
            series_id: None,
            occurrence_index: 0,
            created_at: now,
            updated_at: now,
            completed_at: None,
            version: 1,
            reminders: new.reminders,
            ical_uid: None,
        };
        if let Some(spec) = new.recurrence {
            task.start_series(spec)?;
        }
        task.check_reminders(None, now)?;
        Ok(task)
    }

    /// Ties `spec` to this task's due date: the series starts at this occurrence.
    fn start_series(&mut self, spec: RecurrenceSpec) -> Result<(), FieldError> {
        let due = self.due_at.ok_or_else(|| {
            FieldError::new(
                "due_at",
                "required_for_recurrence",
                "a recurring task needs a due date: its first occurrence is the task itself",
            )
        })?;
        let recurrence = Recurrence {
            rule: spec.rule,
            anchor: spec.anchor,
            dtstart: due.with_timezone(&self.time_zone.tz()).naive_local(),
        };
        recurrence
            .schedule(self.time_zone)
            .validate(due)
            .map_err(recurrence_error)?;
        self.recurrence = Some(recurrence);
        if self.series_id.is_none() {
            self.series_id = Some(SeriesId::new());
            self.occurrence_index = 0;
        }
        Ok(())
    }

    /// The task after `patch`, or `None` when the patch changes nothing (no new version).
    pub fn patched(
        &self,
        patch: TaskPatch,
        now: DateTime<Utc>,
    ) -> Result<Option<TaskChange>, FieldError> {
        let mut next = self.clone();
        if let Some(title) = patch.title {
            next.title = title;
        }
        if let Some(description) = patch.description {
            next.description = description;
        }
        if let Some(priority) = patch.priority {
            next.priority = priority;
        }
        if let Some(tags) = patch.tags {
            next.tags = tags;
        }
        if let Some(due_at) = patch.due_at {
            next.due_at = due_at;
        }
        if let Some(zone) = patch.time_zone {
            next.time_zone = zone;
        }
        if let Some(reminders) = patch.reminders {
            next.reminders = reminders;
        }
        let spec = match patch.recurrence {
            Some(None) => {
                next.recurrence = None;
                None
            }
            Some(Some(spec)) => Some(spec),
            // A new due date or zone re-anchors an existing series at this occurrence.
            None if next.due_at != self.due_at || next.time_zone != self.time_zone => {
                next.recurrence.as_ref().map(|r| RecurrenceSpec {
                    rule: r.rule.clone(),
                    anchor: r.anchor,
                })
            }
            None => None,
        };
        if let Some(spec) = spec {
            next.start_series(spec)?;
        }
        let mut spawned = None;
        match patch.status {
            Some(status) if status == next.status => {}
            Some(TaskStatus::Pending) => {
                next.status = TaskStatus::Pending;
                next.completed_at = None;
            }
            Some(closing @ (TaskStatus::Completed | TaskStatus::Skipped)) => {
                if closing == TaskStatus::Skipped && next.recurrence.is_none() {
                    return Err(FieldError::new(
                        "status",
                        "not_recurring",
                        "only an occurrence of a recurring task can be skipped; complete or delete it instead",
                    ));
                }
                if next.status == TaskStatus::Pending {
                    spawned = next.next_occurrence(now)?;
                }
                next.status = closing;
                next.completed_at = (closing == TaskStatus::Completed).then_some(now);
            }
            None => {}
        }
        if next == *self {
            return Ok(None);
        }
        next.check_reminders(Some(self), now)?;
        next.version = self.version + 1;
        next.updated_at = now.max(self.updated_at);
        Ok(Some(TaskChange {
            task: next,
            next_occurrence: spawned,
        }))
    }

    /// The occurrence that follows this one when it is closed at `now`: same fields and plan,
    /// next due instant from the schedule; `None` when the series has ended (COUNT/UNTIL).
    fn next_occurrence(&self, now: DateTime<Utc>) -> Result<Option<Task>, FieldError> {
        let (Some(recurrence), Some(due)) = (&self.recurrence, self.due_at) else {
            return Ok(None);
        };
        let next_due = recurrence
            .schedule(self.time_zone)
            .next_after(due, now, self.occurrence_index)
            .map_err(recurrence_error)?;
        Ok(next_due.map(|due_at| Task {
            id: TaskId::new(),
            status: TaskStatus::Pending,
            due_at: Some(due_at),
            occurrence_index: self.occurrence_index + 1,
            created_at: now,
            updated_at: now,
            completed_at: None,
            version: 1,
            ..self.clone()
        }))
    }

    /// The task marked completed at `now` (with the series' next occurrence), or `None` if it already is.
    pub fn completed(&self, now: DateTime<Utc>) -> Result<Option<TaskChange>, FieldError> {
        self.with_status(TaskStatus::Completed, now)
    }

    /// This occurrence recorded as skipped and the next one created; `None` if it is not pending.
    pub fn skipped(&self, now: DateTime<Utc>) -> Result<Option<TaskChange>, FieldError> {
        if self.status != TaskStatus::Pending {
            return Ok(None);
        }
        self.with_status(TaskStatus::Skipped, now)
    }

    /// The task made pending again, or `None` if it already is. Never creates an occurrence.
    pub fn reopened(&self, now: DateTime<Utc>) -> Result<Option<TaskChange>, FieldError> {
        self.with_status(TaskStatus::Pending, now)
    }

    fn with_status(
        &self,
        status: TaskStatus,
        now: DateTime<Utc>,
    ) -> Result<Option<TaskChange>, FieldError> {
        self.patched(
            TaskPatch {
                status: Some(status),
                ..TaskPatch::default()
            },
            now,
        )
    }

    /// Checks the reminder plan against the due date: relative reminders need one, and an
    /// instant the plan newly asks for (not already planned by `previous`) may not lie more than
    /// [`PAST_GRACE`](crate::reminder::PAST_GRACE) before `now` (within it, it fires at once).
    pub fn check_reminders(
        &self,
        previous: Option<&Task>,
        now: DateTime<Utc>,
    ) -> Result<(), FieldError> {
        if self.reminders.needs_due_date() && self.due_at.is_none() {
            return Err(FieldError::new(
                "reminders",
                "required_due_date",
                "a reminder before the due date needs a due date",
            ));
        }
        if self.status != TaskStatus::Pending {
            return Ok(());
        }
        let before = previous
            .filter(|p| p.status == TaskStatus::Pending)
            .map(|p| p.reminders.planned(p.due_at))
            .unwrap_or_default();
        for (index, planned) in self.reminders.planned(self.due_at).iter().enumerate() {
            if before.contains(planned) {
                continue;
            }
            if planned.remind_at < now - crate::reminder::PAST_GRACE {
                let position = self
                    .reminders
                    .specs()
                    .iter()
                    .position(|s| s.key() == planned.key)
                    .unwrap_or(index);
                return Err(FieldError::new(
                    format!("reminders[{position}]"),
                    "in_the_past",
                    format!(
                        "this reminder would fire at {}, which has passed",
                        planned
                            .remind_at
                            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Whether the task is pending and its due instant has passed at `now`.
    pub fn is_overdue(&self, now: DateTime<Utc>) -> bool {
        self.status == TaskStatus::Pending && self.due_at.is_some_and(|due| due < now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone as _, Timelike};

    fn sample(now: DateTime<Utc>) -> Task {
        Task::create(
            UserId::new(),
            TimeZone::UTC,
            NewTask {
                title: Title::parse("Write report").unwrap(),
                description: Description::default(),
                priority: Priority::High,
                tags: Tags::parse(&["Work"]).unwrap(),
                due_at: None,
                time_zone: None,
                recurrence: None,
                reminders: ReminderPlan::default(),
            },
            now,
        )
        .unwrap()
    }

    #[test]
    fn titles_are_trimmed_and_bounded() {
        assert_eq!(Title::parse("  hi  ").unwrap().as_str(), "hi");
        assert_eq!(Title::parse("   ").unwrap_err().code, "empty");
        assert!(Title::parse(&"a".repeat(500)).is_ok());
        assert_eq!(Title::parse(&"a".repeat(501)).unwrap_err().code, "too_long");
        assert_eq!(
            Title::parse(&"é".repeat(500))
                .unwrap()
                .as_str()
                .chars()
                .count(),
            500
        );
        assert!(Title::parse("a\nb").is_err());
        assert!(Title::parse("a\u{0}b").is_err());
        assert!(Title::parse("a\u{2028}b").is_err(), "line separator");
        assert_eq!(
            Title::parse("\u{200B}\u{FEFF}").unwrap_err().code,
            "empty",
            "invisible only"
        );
        assert!(Title::parse("\u{202E}txt.exe").is_err(), "bidi override");
        assert!(
            Tag::parse("wo\u{200B}rk").is_err(),
            "zero-width space inside a tag"
        );
        assert!(
            Tag::parse("می\u{200C}خواهم").is_ok(),
            "ZWNJ is part of Persian words"
        );
    }

    #[test]
    fn descriptions_allow_newlines_but_not_nul() {
        assert!(Description::parse("line 1\nline 2\ttab").is_ok());
        assert!(Description::parse("nul\u{0}").is_err());
        assert!(Description::parse(&"x".repeat(20_001)).is_err());
    }

    #[test]
    fn tags_are_normalised_deduplicated_and_bounded() {
        let tags = Tags::parse(&["Work", "#work", " Home "]).unwrap();
        assert_eq!(tags.to_strings(), vec!["work", "home"]);
        let err = Tags::parse(&["ok", "has space", ""]).unwrap_err();
        let fields: Vec<_> = err.errors().iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, vec!["tags[1]", "tags[2]"]);
        let many: Vec<String> = (0..31).map(|i| format!("t{i}")).collect();
        assert_eq!(Tags::parse(&many).unwrap_err().errors()[0].code, "too_many");
        assert!(Tag::parse(&"a".repeat(65)).is_err());
    }

    #[test]
    fn priorities_round_trip_through_rank() {
        for p in Priority::ALL {
            assert_eq!(Priority::from_rank(p.rank()), Some(p));
            assert_eq!(p.as_str().parse::<Priority>().unwrap(), p);
        }
        assert_eq!(Priority::from_rank(9), None);
        assert!("HIGH".parse::<Priority>().is_err());
    }

    #[test]
    fn patch_bumps_version_only_on_change() {
        let now = Utc.with_ymd_and_hms(2026, 1, 1, 9, 0, 0).unwrap();
        let task = sample(now);
        assert!(task.patched(TaskPatch::default(), now).unwrap().is_none());
        let same_title = TaskPatch {
            title: Some(Title::parse("Write report").unwrap()),
            ..TaskPatch::default()
        };
        assert!(task.patched(same_title, now).unwrap().is_none());
        let later = now + chrono::TimeDelta::minutes(1);
        let changed = task
            .patched(
                TaskPatch {
                    priority: Some(Priority::Low),
                    ..TaskPatch::default()
                },
                later,
            )
            .unwrap()
            .unwrap()
            .task;
        assert_eq!(changed.version, 2);
        assert_eq!(changed.updated_at, later);
    }

    #[test]
    fn complete_and_reopen_are_idempotent() {
        let now = Utc.with_ymd_and_hms(2026, 1, 1, 9, 0, 0).unwrap();
        let task = sample(now);
        let done = task.completed(now).unwrap().unwrap();
        assert!(done.next_occurrence.is_none());
        let done = done.task;
        assert_eq!(done.status, TaskStatus::Completed);
        assert_eq!(done.completed_at, Some(now));
        assert!(done.completed(now).unwrap().is_none());
        let open = done.reopened(now).unwrap().unwrap().task;
        assert_eq!(open.completed_at, None);
        assert_eq!(open.version, 3);
    }

    #[test]
    fn overdue_needs_pending_and_past_due() {
        let now = Utc.with_ymd_and_hms(2026, 1, 1, 9, 0, 0).unwrap();
        let mut task = sample(now);
        assert!(!task.is_overdue(now));
        task.due_at = Some(now - chrono::TimeDelta::hours(1));
        assert!(task.is_overdue(now));
        task.status = TaskStatus::Completed;
        assert!(!task.is_overdue(now));
    }

    #[test]
    fn instants_outside_supported_years_are_rejected() {
        let far = Utc.with_ymd_and_hms(1800, 1, 1, 0, 0, 0).unwrap();
        assert!(validate_instant("due_at", far).is_err());
    }

    fn daily_at_nine_berlin(now: DateTime<Utc>, anchor: Anchor) -> Task {
        let mut task = sample(now);
        task.time_zone = TimeZone::parse("Europe/Berlin").unwrap();
        task.due_at = Some(Utc.with_ymd_and_hms(2026, 3, 27, 8, 0, 0).unwrap());
        task.start_series(RecurrenceSpec {
            rule: RecurrenceRule::parse("daily").unwrap(),
            anchor,
        })
        .unwrap();
        task
    }

    #[test]
    fn a_recurring_task_needs_a_due_date_and_a_future_occurrence() {
        let now = Utc.with_ymd_and_hms(2026, 1, 1, 9, 0, 0).unwrap();
        let spec = |rule: &str| RecurrenceSpec {
            rule: RecurrenceRule::parse(rule).unwrap(),
            anchor: Anchor::Due,
        };
        let mut task = sample(now);
        assert_eq!(
            task.start_series(spec("daily")).unwrap_err().code,
            "required_for_recurrence"
        );
        task.due_at = Some(now);
        assert!(task.start_series(spec("FREQ=DAILY;COUNT=1")).is_err());
        task.start_series(spec("weekdays")).unwrap();
        assert!(task.series_id.is_some());
        assert_eq!(task.recurrence.unwrap().dtstart, now.naive_utc());
    }

    #[test]
    fn completing_an_occurrence_creates_exactly_the_next_one_at_the_same_local_time() {
        // 27 March 2026, 09:00 in Berlin; DST starts on the 29th.
        let now = Utc.with_ymd_and_hms(2026, 3, 27, 10, 0, 0).unwrap();
        let mut task = daily_at_nine_berlin(now, Anchor::Due);
        let berlin = task.time_zone.tz();
        for expected_day in [28, 29, 30] {
            let change = task.completed(task.due_at.unwrap()).unwrap().unwrap();
            assert_eq!(change.task.status, TaskStatus::Completed);
            let next = change.next_occurrence.unwrap();
            let local = next.due_at.unwrap().with_timezone(&berlin);
            assert_eq!(
                (local.day(), local.hour(), local.minute()),
                (expected_day, 9, 0)
            );
            assert_eq!(next.occurrence_index, task.occurrence_index + 1);
            assert_eq!(next.series_id, task.series_id);
            assert_eq!((next.version, next.status), (1, TaskStatus::Pending));
            assert_ne!(next.id, task.id);
            // Completing the closed occurrence again changes nothing.
            assert!(change.task.completed(now).unwrap().is_none());
            task = next;
        }
    }

    #[test]
    fn reopening_never_creates_an_occurrence_and_skipping_does() {
        let now = Utc.with_ymd_and_hms(2026, 3, 27, 10, 0, 0).unwrap();
        let task = daily_at_nine_berlin(now, Anchor::Due);
        let skipped = task.skipped(now).unwrap().unwrap();
        assert_eq!(skipped.task.status, TaskStatus::Skipped);
        assert_eq!(skipped.task.completed_at, None);
        assert!(skipped.next_occurrence.is_some());
        let reopened = skipped.task.reopened(now).unwrap().unwrap();
        assert!(reopened.next_occurrence.is_none());
        assert!(
            sample(now).skipped(now).is_err(),
            "a one-off task cannot be skipped"
        );
    }

    #[test]
    fn cancelling_the_series_keeps_the_occurrence() {
        let now = Utc.with_ymd_and_hms(2026, 3, 27, 10, 0, 0).unwrap();
        let task = daily_at_nine_berlin(now, Anchor::Due);
        let cancelled = task
            .patched(
                TaskPatch {
                    recurrence: Some(None),
                    ..TaskPatch::default()
                },
                now,
            )
            .unwrap()
            .unwrap()
            .task;
        assert!(cancelled.recurrence.is_none());
        assert_eq!(cancelled.series_id, task.series_id);
        assert!(
            cancelled
                .completed(now)
                .unwrap()
                .unwrap()
                .next_occurrence
                .is_none()
        );
    }

    #[test]
    fn a_count_limited_series_ends() {
        let now = Utc.with_ymd_and_hms(2026, 1, 1, 9, 0, 0).unwrap();
        let mut task = sample(now);
        task.due_at = Some(now);
        task.start_series(RecurrenceSpec {
            rule: RecurrenceRule::parse("FREQ=DAILY;COUNT=2").unwrap(),
            anchor: Anchor::Due,
        })
        .unwrap();
        let second = task
            .completed(now)
            .unwrap()
            .unwrap()
            .next_occurrence
            .unwrap();
        assert!(
            second
                .completed(second.due_at.unwrap())
                .unwrap()
                .unwrap()
                .next_occurrence
                .is_none()
        );
    }
}
