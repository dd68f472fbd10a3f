//! Tasks and their fields.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Datelike, SubsecRound, Utc};
use serde::{Deserialize, Serialize};

use crate::ids::{TaskId, UserId};
use crate::time::{TimeZone, truncate_for_message};
use crate::validation::{FieldError, ValidationErrors};

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
        if trimmed.is_empty() {
            return Err(FieldError::new("title", "empty", "a task needs a title"));
        }
        if trimmed.chars().count() > Self::MAX_CHARS {
            return Err(FieldError::new(
                "title",
                "too_long",
                format!("a title has at most {} characters", Self::MAX_CHARS),
            ));
        }
        if trimmed.chars().any(char::is_control) {
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
}

impl TaskStatus {
    /// The wire and storage name.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Completed => "completed",
        }
    }
}

impl FromStr for TaskStatus {
    type Err = FieldError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "pending" => Ok(Self::Pending),
            "completed" => Ok(Self::Completed),
            other => Err(FieldError::new(
                "status",
                "invalid_status",
                format!(
                    "`{}` is not a status; use `pending` or `completed`",
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
        usize::try_from(rank).ok().and_then(|i| Self::ALL.get(i).copied())
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
        if normalised
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || matches!(c, ',' | '#' | '"'))
        {
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
            if let Some(tag) = errors.check(Tag::parse(input.as_ref()).map_err(|e| e.at(format!("tags[{i}]"))))
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
    /// Pending or completed.
    pub status: TaskStatus,
    /// Priority.
    pub priority: Priority,
    /// Tags.
    pub tags: Tags,
    /// When it is due, if ever.
    pub due_at: Option<DateTime<Utc>>,
    /// Zone in which the task's dates are meant.
    pub time_zone: TimeZone,
    /// Creation instant.
    pub created_at: DateTime<Utc>,
    /// Last change instant.
    pub updated_at: DateTime<Utc>,
    /// When it was completed, while it is.
    pub completed_at: Option<DateTime<Utc>>,
    /// Incremented on every change; the ETag.
    pub version: i64,
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
    /// New status (same effect as complete / reopen).
    pub status: Option<TaskStatus>,
}

impl Task {
    /// A new pending task owned by `user_id`, created at `now`.
    pub fn create(user_id: UserId, default_zone: TimeZone, new: NewTask, now: DateTime<Utc>) -> Self {
        Self {
            id: TaskId::new(),
            user_id,
            title: new.title,
            description: new.description,
            status: TaskStatus::Pending,
            priority: new.priority,
            tags: new.tags,
            due_at: new.due_at,
            time_zone: new.time_zone.unwrap_or(default_zone),
            created_at: now,
            updated_at: now,
            completed_at: None,
            version: 1,
        }
    }

    /// The task after `patch`, or `None` when the patch changes nothing (no new version).
    pub fn patched(&self, patch: TaskPatch, now: DateTime<Utc>) -> Option<Self> {
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
        match patch.status {
            Some(TaskStatus::Completed) if next.status == TaskStatus::Pending => {
                next.status = TaskStatus::Completed;
                next.completed_at = Some(now);
            }
            Some(TaskStatus::Pending) if next.status == TaskStatus::Completed => {
                next.status = TaskStatus::Pending;
                next.completed_at = None;
            }
            _ => {}
        }
        next.bumped_if_changed(self, now)
    }

    /// The task marked completed at `now`, or `None` if it already is.
    pub fn completed(&self, now: DateTime<Utc>) -> Option<Self> {
        self.patched(
            TaskPatch {
                status: Some(TaskStatus::Completed),
                ..TaskPatch::default()
            },
            now,
        )
    }

    /// The task made pending again, or `None` if it already is.
    pub fn reopened(&self, now: DateTime<Utc>) -> Option<Self> {
        self.patched(
            TaskPatch {
                status: Some(TaskStatus::Pending),
                ..TaskPatch::default()
            },
            now,
        )
    }

    /// Whether the task is pending and its due instant has passed at `now`.
    pub fn is_overdue(&self, now: DateTime<Utc>) -> bool {
        self.status == TaskStatus::Pending && self.due_at.is_some_and(|due| due < now)
    }

    fn bumped_if_changed(mut self, before: &Self, now: DateTime<Utc>) -> Option<Self> {
        if self == *before {
            return None;
        }
        self.version = before.version + 1;
        self.updated_at = now.max(before.updated_at);
        Some(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone as _;

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
            },
            now,
        )
    }

    #[test]
    fn titles_are_trimmed_and_bounded() {
        assert_eq!(Title::parse("  hi  ").unwrap().as_str(), "hi");
        assert_eq!(Title::parse("   ").unwrap_err().code, "empty");
        assert!(Title::parse(&"a".repeat(500)).is_ok());
        assert_eq!(Title::parse(&"a".repeat(501)).unwrap_err().code, "too_long");
        assert_eq!(Title::parse(&"é".repeat(500)).unwrap().as_str().chars().count(), 500);
        assert!(Title::parse("a\nb").is_err());
        assert!(Title::parse("a\u{0}b").is_err());
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
        assert!(task.patched(TaskPatch::default(), now).is_none());
        let same_title = TaskPatch {
            title: Some(Title::parse("Write report").unwrap()),
            ..TaskPatch::default()
        };
        assert!(task.patched(same_title, now).is_none());
        let later = now + chrono::TimeDelta::minutes(1);
        let changed = task
            .patched(
                TaskPatch {
                    priority: Some(Priority::Low),
                    ..TaskPatch::default()
                },
                later,
            )
            .unwrap();
        assert_eq!(changed.version, 2);
        assert_eq!(changed.updated_at, later);
    }

    #[test]
    fn complete_and_reopen_are_idempotent() {
        let now = Utc.with_ymd_and_hms(2026, 1, 1, 9, 0, 0).unwrap();
        let task = sample(now);
        let done = task.completed(now).unwrap();
        assert_eq!(done.status, TaskStatus::Completed);
        assert_eq!(done.completed_at, Some(now));
        assert!(done.completed(now).is_none());
        let open = done.reopened(now).unwrap();
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
}
