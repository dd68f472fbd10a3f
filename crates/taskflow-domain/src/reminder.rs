//! Reminder plans: when to remind about a task, relative to its due date or at a fixed instant.
//!
//! A plan is part of a task and travels with a recurring task to every next occurrence;
//! `before_due` reminders follow the due date when it changes. Offsets are ISO 8601 durations
//! of weeks, days, hours, minutes and seconds (`P1W`, `P1D`, `PT1H30M`); years and months are
//! refused because their length depends on the calendar (use days or weeks).

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

use crate::events::{CloudEvent, OutgoingEvent, Topic};
use crate::ids::{ReminderId, TaskId, UserId};
use crate::task::{Task, TaskStatus};
use crate::time::truncate_for_message;
use crate::validation::{FieldError, ValidationErrors};

/// How far in the past a newly planned reminder may lie: within it, the reminder fires at
/// once (clocks of clients and servers differ by seconds); beyond it, the plan is refused.
pub const PAST_GRACE: TimeDelta = TimeDelta::seconds(60);

/// Most reminders one task may carry.
pub const MAX_REMINDERS: usize = 10;
/// Longest offset before the due date.
pub const MAX_OFFSET_DAYS: i64 = 366;

/// A positive ISO 8601 duration, kept with its normalised text.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Offset {
    duration: TimeDelta,
}

impl Offset {
    /// Parses `PnW`, `PnDTnHnMnS` and their parts (no years or months, no fractions beyond
    /// milliseconds). `field` names the input in errors.
    pub fn parse(field: &str, text: &str) -> Result<Self, FieldError> {
        let invalid = |why: &str| {
            FieldError::new(
                field,
                "invalid_duration",
                format!(
                    "`{}` {why}; use an ISO 8601 duration such as PT10M, PT1H, P1D or P1W",
                    truncate_for_message(text)
                ),
            )
        };
        let trimmed = text.trim();
        if trimmed.len() > 64 || !trimmed.starts_with('P') {
            return Err(invalid("is not an ISO 8601 duration"));
        }
        let parsed =
            iso8601::duration(trimmed).map_err(|_| invalid("is not an ISO 8601 duration"))?;
        let duration = match parsed {
            iso8601::Duration::Weeks(weeks) => TimeDelta::try_weeks(i64::from(weeks)),
            iso8601::Duration::YMDHMS {
                year,
                month,
                day,
                hour,
                minute,
                second,
                millisecond,
            } => {
                if year != 0 || month != 0 {
                    return Err(invalid(
                        "uses years or months, whose length depends on the calendar",
                    ));
                }
                TimeDelta::try_days(i64::from(day))
                    .zip(TimeDelta::try_hours(i64::from(hour)))
                    .zip(TimeDelta::try_minutes(i64::from(minute)))
                    .zip(TimeDelta::try_seconds(i64::from(second)))
                    .map(|(((d, h), m), s)| {
                        d + h + m + s + TimeDelta::milliseconds(i64::from(millisecond))
                    })
            }
        }
        .ok_or_else(|| invalid("is too long"))?;
        if duration <= TimeDelta::zero() {
            return Err(invalid("must be longer than zero"));
        }
        if duration > TimeDelta::days(MAX_OFFSET_DAYS) {
            return Err(invalid(&format!("is longer than {MAX_OFFSET_DAYS} days")));
        }
        Ok(Self { duration })
    }

    /// The length.
    pub fn duration(&self) -> TimeDelta {
        self.duration
    }

    /// Canonical ISO 8601 text: `P1W`, `P2D`, `PT1H30M`, `P1DT2H`.
    pub fn to_iso(&self) -> String {
        let total = self.duration.num_milliseconds();
        let (ms, total_s) = (total % 1000, total / 1000);
        if ms == 0 && total_s % (7 * 86_400) == 0 {
            return format!("P{}W", total_s / (7 * 86_400));
        }
        let days = total_s / 86_400;
        let (h, m, s) = (
            (total_s % 86_400) / 3600,
            (total_s % 3600) / 60,
            total_s % 60,
        );
        let mut text = String::from("P");
        if days > 0 {
            text.push_str(&format!("{days}D"));
        }
        if h > 0 || m > 0 || s > 0 || ms > 0 {
            text.push('T');
            if h > 0 {
                text.push_str(&format!("{h}H"));
            }
            if m > 0 {
                text.push_str(&format!("{m}M"));
            }
            if ms > 0 {
                text.push_str(&format!("{s}.{ms:03}S"));
            } else if s > 0 {
                text.push_str(&format!("{s}S"));
            }
        }
        text
    }
}

impl Serialize for Offset {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_iso())
    }
}

impl<'de> Deserialize<'de> for Offset {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Offset::parse("offset", &text).map_err(serde::de::Error::custom)
    }
}

/// One reminder of a plan.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReminderSpec {
    /// This long before the due date (follows the due date when it changes).
    BeforeDue(Offset),
    /// At a fixed instant.
    At(DateTime<Utc>),
}

impl ReminderSpec {
    /// A stable text naming this reminder within its task: `before_due:PT1H` or
    /// `at:2027-01-03T08:00:00Z`. Stored with each scheduled reminder, so a changed plan can
    /// be reconciled with what is already scheduled.
    pub fn key(&self) -> String {
        match self {
            Self::BeforeDue(offset) => format!("before_due:{}", offset.to_iso()),
            Self::At(at) => format!(
                "at:{}",
                at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
            ),
        }
    }

    /// When this reminder fires for a task due at `due` (`None` for a relative reminder of a
    /// task without a due date).
    pub fn remind_at(&self, due: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
        match self {
            Self::BeforeDue(offset) => due.map(|due| due - offset.duration()),
            Self::At(at) => Some(*at),
        }
    }
}

/// A task's reminders: at most [`MAX_REMINDERS`], without duplicates, in the order given.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ReminderPlan(Vec<ReminderSpec>);

impl ReminderPlan {
    /// Checks the count and removes duplicates; errors name `reminders[i]`.
    pub fn new(specs: Vec<ReminderSpec>) -> Result<Self, ValidationErrors> {
        let mut unique: Vec<ReminderSpec> = Vec::with_capacity(specs.len());
        for spec in specs {
            if !unique.contains(&spec) {
                unique.push(spec);
            }
        }
        if unique.len() > MAX_REMINDERS {
            return Err(FieldError::new(
                "reminders",
                "too_many",
                format!("a task has at most {MAX_REMINDERS} reminders"),
            )
            .into());
        }
        Ok(Self(unique))
    }

    /// The reminders.
    pub fn specs(&self) -> &[ReminderSpec] {
        &self.0
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether some reminder depends on the due date.
    pub fn needs_due_date(&self) -> bool {
        self.0
            .iter()
            .any(|s| matches!(s, ReminderSpec::BeforeDue(_)))
    }

    /// What the plan asks to be scheduled for a task due at `due`: one entry per reminder
    /// that has an instant, earliest first.
    pub fn planned(&self, due: Option<DateTime<Utc>>) -> Vec<PlannedReminder> {
        let mut planned: Vec<PlannedReminder> = self
            .0
            .iter()
            .filter_map(|spec| {
                spec.remind_at(due).map(|remind_at| PlannedReminder {
                    key: spec.key(),
                    remind_at,
                })
            })
            .collect();
        planned.sort_by(|a, b| a.remind_at.cmp(&b.remind_at).then(a.key.cmp(&b.key)));
        planned
    }

    /// The distinct instants the plan fires at for a task due at `due`, earliest first.
    pub fn instants(&self, due: Option<DateTime<Utc>>) -> Vec<DateTime<Utc>> {
        let mut instants: Vec<DateTime<Utc>> =
            self.0.iter().filter_map(|s| s.remind_at(due)).collect();
        instants.sort();
        instants.dedup();
        instants
    }
}

/// One reminder a task's plan asks for.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PlannedReminder {
    /// [`ReminderSpec::key`] of the reminder it comes from.
    pub key: String,
    /// When it is meant to fire.
    pub remind_at: DateTime<Utc>,
}

/// What should be scheduled for `task` as it now is: its plan while it is pending, nothing
/// once it is completed, skipped or deleted. Stores reconcile their scheduled reminders with
/// this in the transaction that writes the task.
pub fn wanted_reminders(task: &Task) -> Vec<PlannedReminder> {
    if task.status == TaskStatus::Pending {
        task.reminders.planned(task.due_at)
    } else {
        Vec::new()
    }
}

/// Where a scheduled reminder is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReminderState {
    /// Waiting for its instant.
    Scheduled,
    /// Claimed by a scheduler (under a lease) and being fired.
    Firing,
    /// Its `reminder.due` event was committed.
    Sent,
    /// Could not be fired (its task vanished while it was claimed).
    Failed,
    /// Its task was completed, deleted or re-planned before it fired.
    Cancelled,
}

impl ReminderState {
    /// The stored name.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Scheduled => "scheduled",
            Self::Firing => "firing",
            Self::Sent => "sent",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }
}

impl fmt::Display for ReminderState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ReminderState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "scheduled" => Self::Scheduled,
            "firing" => Self::Firing,
            "sent" => Self::Sent,
            "failed" => Self::Failed,
            "cancelled" => Self::Cancelled,
            other => return Err(format!("unknown reminder state `{other}`")),
        })
    }
}

/// A scheduled reminder of one task occurrence, as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reminder {
    /// Identifier.
    pub id: ReminderId,
    /// Owner.
    pub user_id: UserId,
    /// The occurrence it reminds of.
    pub task_id: TaskId,
    /// [`ReminderSpec::key`] of the plan entry it comes from.
    pub key: String,
    /// The instant the plan asked for.
    pub remind_at: DateTime<Utc>,
    /// When it fires next (later than `remind_at` once snoozed).
    pub fire_at: DateTime<Utc>,
    /// Its state.
    pub state: ReminderState,
    /// How many times it has fired (a snoozed reminder fires again).
    pub fire_count: u32,
    /// When it last fired.
    pub fired_at: Option<DateTime<Utc>>,
    /// How late the last firing was, in milliseconds after `fire_at`.
    pub late_ms: Option<i64>,
    /// Creation instant.
    pub created_at: DateTime<Utc>,
    /// Last change instant.
    pub updated_at: DateTime<Utc>,
}

/// A reminder a scheduler has claimed, with what its event needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DueReminder {
    /// The reminder.
    pub reminder: Reminder,
    /// The task's title.
    pub title: String,
    /// The task's due instant.
    pub due_at: Option<DateTime<Utc>>,
    /// The task's zone.
    pub time_zone: String,
}

/// Longest snooze.
pub const MAX_SNOOZE_DAYS: i64 = 30;

/// The `reminder.due` event of a reminder fired at `fired_at` (the `fire_count`-th time).
pub fn reminder_due_event(
    due: &DueReminder,
    fire_count: u32,
    fired_at: DateTime<Utc>,
) -> OutgoingEvent {
    let reminder = &due.reminder;
    let late_ms = (fired_at - reminder.fire_at).num_milliseconds().max(0);
    OutgoingEvent::new(
        Topic::Reminders,
        CloudEvent::new(
            "reminder.due",
            Some(reminder.task_id.to_string()),
            reminder.user_id,
            fired_at,
            None,
            serde_json::json!({
                "event_type": "reminder.due",
                "schema_version": 1,
                "reminder_id": reminder.id,
                "task_id": reminder.task_id,
                "user_id": reminder.user_id,
                "title": due.title,
                "due_at": due.due_at,
                "time_zone": due.time_zone,
                "remind_at": reminder.remind_at,
                "fire_at": reminder.fire_at,
                "fired_at": fired_at,
                "fire_count": fire_count,
                "late_by_ms": late_ms,
                "timestamp": fired_at,
            }),
        ),
    )
}

/// Why a pending reminder was cancelled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CancelReason {
    /// Its task was completed or skipped.
    TaskClosed,
    /// Its task was deleted.
    TaskDeleted,
    /// The task's plan or due date changed, so this instant is no longer wanted.
    Replanned,
}

impl CancelReason {
    /// The name events carry.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::TaskClosed => "task_closed",
            Self::TaskDeleted => "task_deleted",
            Self::Replanned => "replanned",
        }
    }

    /// Why `task`'s reminders no longer wanted by it are cancelled.
    pub fn for_task(task: &Task) -> Self {
        if task.status == TaskStatus::Pending {
            Self::Replanned
        } else {
            Self::TaskClosed
        }
    }
}

/// An event of `kind` (`reminder.scheduled` or `reminder.cancelled`) about one reminder of
/// `task`: the fields both share, plus `extra`'s.
fn reminder_change_event(
    kind: &str,
    task: &Task,
    reminder_id: ReminderId,
    remind_at: DateTime<Utc>,
    at: DateTime<Utc>,
    traceparent: Option<String>,
    extra: serde_json::Value,
) -> OutgoingEvent {
    let mut data = serde_json::json!({
        "event_type": kind,
        "schema_version": 1,
        "reminder_id": reminder_id,
        "task_id": task.id,
        "user_id": task.user_id,
        "title": task.title.as_str(),
        "due_at": task.due_at,
        "remind_at": remind_at,
        "timestamp": at,
    });
    if let (Some(data), serde_json::Value::Object(extra)) = (data.as_object_mut(), extra) {
        data.extend(extra);
    }
    OutgoingEvent::new(
        Topic::Reminders,
        CloudEvent::new(
            kind,
            Some(task.id.to_string()),
            task.user_id,
            at,
            traceparent,
            data,
        ),
    )
}

/// The `reminder.scheduled` event of a reminder of `task` that now waits to fire at `fire_at`
/// (its planned instant `remind_at`, or a later one after a snooze), written at `at`.
pub fn reminder_scheduled_event(
    task: &Task,
    reminder_id: ReminderId,
    remind_at: DateTime<Utc>,
    fire_at: DateTime<Utc>,
    at: DateTime<Utc>,
    traceparent: Option<String>,
) -> OutgoingEvent {
    reminder_change_event(
        "reminder.scheduled",
        task,
        reminder_id,
        remind_at,
        at,
        traceparent,
        serde_json::json!({ "fire_at": fire_at }),
    )
}

/// The `reminder.cancelled` event of a pending reminder of `task` that will not fire, written
/// at `at`.
pub fn reminder_cancelled_event(
    task: &Task,
    reminder_id: ReminderId,
    remind_at: DateTime<Utc>,
    reason: CancelReason,
    at: DateTime<Utc>,
    traceparent: Option<String>,
) -> OutgoingEvent {
    reminder_change_event(
        "reminder.cancelled",
        task,
        reminder_id,
        remind_at,
        at,
        traceparent,
        serde_json::json!({ "reason": reason.as_str() }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone as _;

    #[test]
    fn offsets_parse_and_print_canonically() {
        for (text, canonical, seconds) in [
            ("PT10M", "PT10M", 600),
            ("PT1H", "PT1H", 3600),
            ("PT90M", "PT1H30M", 5400),
            ("P1D", "P1D", 86_400),
            ("P7D", "P1W", 604_800),
            ("P1W", "P1W", 604_800),
            ("P1DT2H", "P1DT2H", 93_600),
            ("PT30S", "PT30S", 30),
        ] {
            let offset = Offset::parse("before_due", text).unwrap();
            assert_eq!(offset.duration().num_seconds(), seconds, "{text}");
            assert_eq!(offset.to_iso(), canonical, "{text}");
            assert_eq!(Offset::parse("x", &offset.to_iso()).unwrap(), offset);
        }
    }

    #[test]
    fn bad_offsets_are_refused_with_the_field() {
        for text in [
            "",
            "1H",
            "PT",
            "P1Y",
            "P1M",
            "PT0S",
            "P400D",
            "PT-1H",
            "P1.5D",
            "tomorrow",
            &"P1D".repeat(40),
        ] {
            let error = Offset::parse("reminders[2].before_due", text).unwrap_err();
            assert_eq!(error.field, "reminders[2].before_due", "{text}");
            assert_eq!(error.code, "invalid_duration", "{text}");
        }
    }

    #[test]
    fn plans_follow_the_due_date_and_deduplicate() {
        let due = Utc.with_ymd_and_hms(2027, 1, 4, 9, 0, 0).unwrap();
        let at = Utc.with_ymd_and_hms(2027, 1, 3, 8, 0, 0).unwrap();
        let hour = ReminderSpec::BeforeDue(Offset::parse("x", "PT1H").unwrap());
        let plan =
            ReminderPlan::new(vec![hour.clone(), ReminderSpec::At(at), hour.clone()]).unwrap();
        assert_eq!(plan.specs().len(), 2);
        assert!(plan.needs_due_date());
        assert_eq!(
            plan.instants(Some(due)),
            vec![at, due - TimeDelta::hours(1)]
        );
        assert_eq!(
            plan.instants(None),
            vec![at],
            "relative reminders need a due date"
        );
        let later = due + TimeDelta::days(1);
        assert_eq!(plan.instants(Some(later))[1], later - TimeDelta::hours(1));
        let many: Vec<ReminderSpec> = (1..=11)
            .map(|m| ReminderSpec::BeforeDue(Offset::parse("x", &format!("PT{m}M")).unwrap()))
            .collect();
        assert_eq!(
            ReminderPlan::new(many).unwrap_err().errors()[0].code,
            "too_many"
        );
    }

    #[test]
    fn plans_serialise_as_the_api_shows_them() {
        let plan = ReminderPlan::new(vec![
            ReminderSpec::BeforeDue(Offset::parse("x", "P1D").unwrap()),
            ReminderSpec::At(Utc.with_ymd_and_hms(2027, 1, 3, 8, 0, 0).unwrap()),
        ])
        .unwrap();
        let json = serde_json::to_value(&plan).unwrap();
        assert_eq!(
            json,
            serde_json::json!([{"before_due": "P1D"}, {"at": "2027-01-03T08:00:00Z"}])
        );
        let back: ReminderPlan = serde_json::from_value(json).unwrap();
        assert_eq!(back, plan);
    }
}
