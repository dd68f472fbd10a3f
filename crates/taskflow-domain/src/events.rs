//! Events: every change becomes a CloudEvents 1.0 event (structured JSON) on a topic.
//!
//! The `data` of task events keeps the fields consumers of the specification's design expect
//! (`event_type`, `task_id`, `task_data`, `user_id`, `timestamp`) plus `schema_version`; the
//! CloudEvents `type` carries the version (`taskflow.task.completed.v1`). An incompatible shape
//! is a new version, never an edit. JSON Schemas for every type live in `docs/events/`.

use chrono::{DateTime, NaiveDateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::recurrence::Anchor;
use crate::{Priority, SeriesId, Task, TaskId, TaskStatus, UserId};

/// The CloudEvents `source` of everything TaskFlow emits.
pub const SOURCE: &str = "/taskflow";

/// Logical topics; deployments may map them to other physical names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Topic {
    /// Every task create/update/complete/reopen/skip/delete.
    TaskEvents,
    /// Reminder scheduled/cancelled/due.
    Reminders,
    /// The slim change feed for real-time sessions.
    TaskUpdates,
    /// Notification delivered/failed.
    Notifications,
}

impl Topic {
    /// All topics.
    pub const ALL: [Topic; 4] = [
        Self::TaskEvents,
        Self::Reminders,
        Self::TaskUpdates,
        Self::Notifications,
    ];

    /// The logical name, also the default physical name.
    pub fn name(&self) -> &'static str {
        match self {
            Self::TaskEvents => "task-events",
            Self::Reminders => "reminders",
            Self::TaskUpdates => "task-updates",
            Self::Notifications => "notifications",
        }
    }
}

/// A CloudEvents 1.0 event in structured JSON mode.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CloudEvent {
    /// Always `1.0`.
    pub specversion: String,
    /// Unique id (UUIDv7); consumers deduplicate on it.
    pub id: String,
    /// Always [`SOURCE`].
    pub source: String,
    /// e.g. `taskflow.task.completed.v1`.
    #[serde(rename = "type")]
    pub event_type: String,
    /// The task id for task and reminder events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// When the change happened.
    pub time: DateTime<Utc>,
    /// Always `application/json`.
    pub datacontenttype: String,
    /// Extension: the partition/ordering key, the owning user's id.
    pub partitionkey: String,
    /// Extension: W3C trace context of the request that caused the event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    /// The payload.
    pub data: serde_json::Value,
}

impl CloudEvent {
    /// A new event of `event_type` (without the `taskflow.` prefix and version, e.g. `task.completed`).
    pub fn new(
        event_type: &str,
        subject: Option<String>,
        partition_key: UserId,
        time: DateTime<Utc>,
        traceparent: Option<String>,
        data: serde_json::Value,
    ) -> Self {
        Self {
            specversion: "1.0".into(),
            id: Uuid::now_v7().to_string(),
            source: SOURCE.into(),
            event_type: format!("taskflow.{event_type}.v1"),
            subject,
            time,
            datacontenttype: "application/json".into(),
            partitionkey: partition_key.to_string(),
            traceparent,
            data,
        }
    }

    /// The short type without prefix and version: `task.completed`.
    pub fn short_type(&self) -> &str {
        let rest = self
            .event_type
            .strip_prefix("taskflow.")
            .unwrap_or(&self.event_type);
        rest.rsplit_once(".v").map_or(rest, |(name, _)| name)
    }
}

/// An event bound for a topic, as a command writes it to the outbox.
#[derive(Clone, Debug, PartialEq)]
pub struct OutgoingEvent {
    /// Logical topic name (a [`Topic`] name, or `<topic>.dlq` for dead-letter notices).
    pub topic: String,
    /// The event.
    pub event: CloudEvent,
}

impl OutgoingEvent {
    /// `event` bound for `topic`.
    pub fn new(topic: Topic, event: CloudEvent) -> Self {
        Self {
            topic: topic.name().to_owned(),
            event,
        }
    }
}

/// The dead-letter topic of `topic`.
pub fn dead_letter_topic(topic: &str) -> String {
    format!("{topic}.dlq")
}

/// A task's state as events carry it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskSnapshot {
    /// Id.
    pub id: TaskId,
    /// Owner.
    pub user_id: UserId,
    /// Title.
    pub title: String,
    /// Description.
    pub description: String,
    /// Status.
    pub status: TaskStatus,
    /// Priority.
    pub priority: Priority,
    /// Tags.
    pub tags: Vec<String>,
    /// Due instant.
    pub due_at: Option<DateTime<Utc>>,
    /// IANA zone.
    pub time_zone: String,
    /// Recurrence.
    pub recurrence: Option<RecurrenceSnapshot>,
    /// Series.
    pub series_id: Option<SeriesId>,
    /// Position in the series.
    pub occurrence_index: u32,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Updated.
    pub updated_at: DateTime<Utc>,
    /// Completed.
    pub completed_at: Option<DateTime<Utc>>,
    /// Version.
    pub version: i64,
    /// Reminder plan.
    #[serde(default)]
    pub reminders: crate::reminder::ReminderPlan,
}

/// A recurrence as events carry it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RecurrenceSnapshot {
    /// Normalised RRULE.
    pub rule: String,
    /// `due` or `completion`.
    pub anchor: Anchor,
    /// Local wall-clock series start.
    pub dtstart: NaiveDateTime,
}

impl From<&Task> for TaskSnapshot {
    fn from(task: &Task) -> Self {
        Self {
            id: task.id,
            user_id: task.user_id,
            title: task.title.as_str().to_owned(),
            description: task.description.as_str().to_owned(),
            status: task.status,
            priority: task.priority,
            tags: task.tags.to_strings(),
            due_at: task.due_at,
            time_zone: task.time_zone.name().to_owned(),
            recurrence: task.recurrence.as_ref().map(|r| RecurrenceSnapshot {
                rule: r.rule.as_str().to_owned(),
                anchor: r.anchor,
                dtstart: r.dtstart,
            }),
            series_id: task.series_id,
            occurrence_index: task.occurrence_index,
            created_at: task.created_at,
            updated_at: task.updated_at,
            completed_at: task.completed_at,
            version: task.version,
            reminders: task.reminders.clone(),
        }
    }
}

/// What happened to a task.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TaskEventKind {
    /// Created (including a series' next occurrence).
    Created,
    /// Fields changed.
    Updated,
    /// Completed.
    Completed,
    /// Reopened.
    Reopened,
    /// An occurrence skipped.
    Skipped,
    /// Deleted.
    Deleted,
}

impl TaskEventKind {
    /// The `event_type` in the data and the middle of the CloudEvents type.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Updated => "updated",
            Self::Completed => "completed",
            Self::Reopened => "reopened",
            Self::Skipped => "skipped",
            Self::Deleted => "deleted",
        }
    }

    /// The kind of change from `before` to `after`.
    pub fn between(before: &Task, after: &Task) -> Self {
        match (before.status, after.status) {
            (TaskStatus::Pending, TaskStatus::Completed) => Self::Completed,
            (TaskStatus::Pending, TaskStatus::Skipped) => Self::Skipped,
            (TaskStatus::Completed | TaskStatus::Skipped, TaskStatus::Pending) => Self::Reopened,
            _ => Self::Updated,
        }
    }
}

/// The events of one change to a task: the full event on `task-events` and the slim
/// `task.changed` on `task-updates`. For a deletion pass the task as it was.
pub fn task_events(
    kind: TaskEventKind,
    task: &Task,
    now: DateTime<Utc>,
    traceparent: Option<&str>,
) -> [OutgoingEvent; 2] {
    let snapshot = TaskSnapshot::from(task);
    let full = CloudEvent::new(
        &format!("task.{}", kind.name()),
        Some(task.id.to_string()),
        task.user_id,
        now,
        traceparent.map(str::to_owned),
        serde_json::json!({
            "schema_version": 1,
            "event_type": kind.name(),
            "task_id": task.id,
            "user_id": task.user_id,
            "timestamp": now,
            "task_data": snapshot,
        }),
    );
    let deleted = kind == TaskEventKind::Deleted;
    let slim = CloudEvent::new(
        "task.changed",
        Some(task.id.to_string()),
        task.user_id,
        now,
        traceparent.map(str::to_owned),
        serde_json::json!({
            "schema_version": 1,
            "task_id": task.id,
            "user_id": task.user_id,
            "change": if deleted { "deleted" } else { "upserted" },
            "version": task.version,
            "task": if deleted { serde_json::Value::Null } else { serde_json::json!(TaskSnapshot::from(task)) },
            "timestamp": now,
        }),
    );
    [
        OutgoingEvent::new(Topic::TaskEvents, full),
        OutgoingEvent::new(Topic::TaskUpdates, slim),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_types_drop_prefix_and_version() {
        let event = CloudEvent::new(
            "task.completed",
            None,
            UserId::new(),
            Utc::now(),
            None,
            serde_json::Value::Null,
        );
        assert_eq!(event.event_type, "taskflow.task.completed.v1");
        assert_eq!(event.short_type(), "task.completed");
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(json["specversion"], "1.0");
        assert!(json.get("traceparent").is_none());
        let back: CloudEvent = serde_json::from_value(json).unwrap();
        assert_eq!(back, event);
    }
}
