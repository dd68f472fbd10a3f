//! Conversions between SQLite rows and domain values.

use chrono::{DateTime, Utc};
use rusqlite::Row;
use taskflow_domain::recurrence::{Anchor, RecurrenceRule};
use taskflow_domain::{
    Description, DisplayName, Email, Priority, Recurrence, ReminderPlan, Tags, Task, TaskStatus,
    TimeZone, Title, User,
};

use crate::AccessToken;
use crate::error::StoreError;

/// An instant as stored: microseconds since the epoch.
pub(crate) fn micros(instant: DateTime<Utc>) -> i64 {
    instant.timestamp_micros()
}

pub(crate) fn instant(value: i64, column: &str) -> Result<DateTime<Utc>, StoreError> {
    DateTime::from_timestamp_micros(value)
        .ok_or_else(|| StoreError::Corrupt(format!("{column} out of range: {value}")))
}

pub(crate) fn optional_instant(
    value: Option<i64>,
    column: &str,
) -> Result<Option<DateTime<Utc>>, StoreError> {
    value.map(|v| instant(v, column)).transpose()
}

pub(crate) fn parse_id<T: std::str::FromStr>(text: &str, column: &str) -> Result<T, StoreError> {
    text.parse()
        .map_err(|_| StoreError::Corrupt(format!("{column} is not a UUID: {text}")))
}

pub(crate) fn user_from_row(row: &Row<'_>) -> Result<User, StoreError> {
    let id: String = row.get("id")?;
    let zone: String = row.get("time_zone")?;
    Ok(User {
        id: parse_id(&id, "users.id")?,
        email: Email::from_trusted(row.get("email")?),
        display_name: row
            .get::<_, Option<String>>("display_name")?
            .map(DisplayName::from_trusted),
        time_zone: TimeZone::parse(&zone).map_err(|e| StoreError::Corrupt(e.to_string()))?,
        is_admin: row.get("is_admin")?,
        created_at: instant(row.get("created_at")?, "users.created_at")?,
    })
}

pub(crate) fn token_from_row(row: &Row<'_>) -> Result<AccessToken, StoreError> {
    let id: String = row.get("id")?;
    let user_id: String = row.get("user_id")?;
    Ok(AccessToken {
        id: parse_id(&id, "access_tokens.id")?,
        user_id: parse_id(&user_id, "access_tokens.user_id")?,
        name: row.get("name")?,
        prefix: row.get("prefix")?,
        created_at: instant(row.get("created_at")?, "access_tokens.created_at")?,
        last_used_at: optional_instant(row.get("last_used_at")?, "access_tokens.last_used_at")?,
        expires_at: optional_instant(row.get("expires_at")?, "access_tokens.expires_at")?,
    })
}

pub(crate) fn task_from_row(row: &Row<'_>) -> Result<Task, StoreError> {
    let id: String = row.get("id")?;
    let user_id: String = row.get("user_id")?;
    let status: String = row.get("status")?;
    let priority: i64 = row.get("priority")?;
    let tags: String = row.get("tags")?;
    let zone: String = row.get("time_zone")?;
    let tags: Vec<String> =
        serde_json::from_str(&tags).map_err(|e| StoreError::Corrupt(format!("tasks.tags: {e}")))?;
    let series_id: Option<String> = row.get("series_id")?;
    let occurrence_index: i64 = row.get("occurrence_index")?;
    Ok(Task {
        id: parse_id(&id, "tasks.id")?,
        user_id: parse_id(&user_id, "tasks.user_id")?,
        title: Title::from_trusted(row.get("title")?),
        description: Description::from_trusted(row.get("description")?),
        status: status
            .parse::<TaskStatus>()
            .map_err(|e| StoreError::Corrupt(e.to_string()))?,
        priority: Priority::from_rank(priority)
            .ok_or_else(|| StoreError::Corrupt(format!("tasks.priority: {priority}")))?,
        tags: Tags::from_trusted(tags),
        due_at: optional_instant(row.get("due_at")?, "tasks.due_at")?,
        time_zone: TimeZone::parse(&zone).map_err(|e| StoreError::Corrupt(e.to_string()))?,
        recurrence: recurrence_from_row(row)?,
        series_id: series_id
            .map(|s| parse_id(&s, "tasks.series_id"))
            .transpose()?,
        occurrence_index: u32::try_from(occurrence_index).map_err(|_| {
            StoreError::Corrupt(format!("tasks.occurrence_index: {occurrence_index}"))
        })?,
        created_at: instant(row.get("created_at")?, "tasks.created_at")?,
        updated_at: instant(row.get("updated_at")?, "tasks.updated_at")?,
        completed_at: optional_instant(row.get("completed_at")?, "tasks.completed_at")?,
        version: row.get("version")?,
        reminders: reminders_from_text(&row.get::<_, String>("reminders")?)?,
        ical_uid: row.get("ical_uid")?,
    })
}

/// A stored reminder plan (JSON, as the API shows it).
pub(crate) fn reminders_from_text(text: &str) -> Result<ReminderPlan, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("tasks.reminders: {e}")))
}

/// The storage form of a reminder plan.
pub(crate) fn reminders_text(plan: &ReminderPlan) -> String {
    serde_json::to_string(plan).unwrap_or_else(|_| "[]".to_owned())
}

/// Storage name of an anchor.
pub(crate) fn anchor_name(anchor: Anchor) -> &'static str {
    match anchor {
        Anchor::Due => "due",
        Anchor::Completion => "completion",
    }
}

/// Storage form of a series start: ISO local date-time without offset.
pub(crate) fn dtstart_text(recurrence: &Recurrence) -> String {
    recurrence
        .dtstart
        .format("%Y-%m-%dT%H:%M:%S%.f")
        .to_string()
}

fn recurrence_from_row(row: &Row<'_>) -> Result<Option<Recurrence>, StoreError> {
    let rule: Option<String> = row.get("recurrence_rule")?;
    let Some(rule) = rule else { return Ok(None) };
    let anchor: Option<String> = row.get("recurrence_anchor")?;
    let dtstart: Option<String> = row.get("recurrence_dtstart")?;
    let anchor = match anchor.as_deref() {
        Some("due") => Anchor::Due,
        Some("completion") => Anchor::Completion,
        other => {
            return Err(StoreError::Corrupt(format!(
                "tasks.recurrence_anchor: {other:?}"
            )));
        }
    };
    let dtstart = dtstart
        .as_deref()
        .and_then(|d| chrono::NaiveDateTime::parse_from_str(d, "%Y-%m-%dT%H:%M:%S%.f").ok())
        .ok_or_else(|| StoreError::Corrupt(format!("tasks.recurrence_dtstart: {dtstart:?}")))?;
    let rule = RecurrenceRule::parse(&rule)
        .map_err(|e| StoreError::Corrupt(format!("tasks.recurrence_rule: {e}")))?;
    Ok(Some(Recurrence {
        rule,
        anchor,
        dtstart,
    }))
}
