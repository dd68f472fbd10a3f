//! Conversions between PostgreSQL rows and domain values.

use chrono::NaiveDateTime;
use sqlx::Row;
use sqlx::postgres::PgRow;
use taskflow_domain::recurrence::{Anchor, RecurrenceRule};
use taskflow_domain::{
    Description, DisplayName, Email, Priority, Recurrence, SeriesId, Tags, Task, TaskId,
    TaskStatus, TimeZone, Title, TokenId, User, UserId,
};

use crate::AccessToken;
use crate::error::StoreError;

/// The task columns every task query selects (not the `search` vector).
pub(crate) const TASK_COLUMNS: &str = "t.id, t.user_id, t.title, t.description, t.status, \
     t.priority, t.tags, t.due_at, t.time_zone, t.recurrence_rule, t.recurrence_anchor, \
     t.recurrence_dtstart, t.series_id, t.occurrence_index, t.created_at, t.updated_at, \
     t.completed_at, t.version, t.reminders, t.ical_uid";

fn zone(row: &PgRow) -> Result<TimeZone, StoreError> {
    let zone: String = row.try_get("time_zone")?;
    TimeZone::parse(&zone).map_err(|e| StoreError::Corrupt(e.to_string()))
}

pub(crate) fn user_from_row(row: &PgRow) -> Result<User, StoreError> {
    Ok(User {
        id: UserId::from_uuid(row.try_get("id")?),
        email: Email::from_trusted(row.try_get("email")?),
        display_name: row
            .try_get::<Option<String>, _>("display_name")?
            .map(DisplayName::from_trusted),
        time_zone: zone(row)?,
        is_admin: row.try_get("is_admin")?,
        created_at: row.try_get("created_at")?,
    })
}

pub(crate) fn token_from_row(row: &PgRow) -> Result<AccessToken, StoreError> {
    Ok(AccessToken {
        id: TokenId::from_uuid(row.try_get("id")?),
        user_id: UserId::from_uuid(row.try_get("user_id")?),
        name: row.try_get("name")?,
        prefix: row.try_get("prefix")?,
        created_at: row.try_get("created_at")?,
        last_used_at: row.try_get("last_used_at")?,
        expires_at: row.try_get("expires_at")?,
    })
}

pub(crate) fn task_from_row(row: &PgRow) -> Result<Task, StoreError> {
    let status: String = row.try_get("status")?;
    let priority: i16 = row.try_get("priority")?;
    let occurrence_index: i64 = row.try_get("occurrence_index")?;
    Ok(Task {
        id: TaskId::from_uuid(row.try_get("id")?),
        user_id: UserId::from_uuid(row.try_get("user_id")?),
        title: Title::from_trusted(row.try_get("title")?),
        description: Description::from_trusted(row.try_get("description")?),
        status: status
            .parse::<TaskStatus>()
            .map_err(|e| StoreError::Corrupt(e.to_string()))?,
        priority: Priority::from_rank(i64::from(priority))
            .ok_or_else(|| StoreError::Corrupt(format!("tasks.priority: {priority}")))?,
        tags: Tags::from_trusted(row.try_get("tags")?),
        due_at: row.try_get("due_at")?,
        time_zone: zone(row)?,
        recurrence: recurrence_from_row(row)?,
        series_id: row
            .try_get::<Option<uuid::Uuid>, _>("series_id")?
            .map(SeriesId::from_uuid),
        occurrence_index: u32::try_from(occurrence_index).map_err(|_| {
            StoreError::Corrupt(format!("tasks.occurrence_index: {occurrence_index}"))
        })?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        completed_at: row.try_get("completed_at")?,
        version: row.try_get("version")?,
        reminders: serde_json::from_value(row.try_get("reminders")?)
            .map_err(|e| StoreError::Corrupt(format!("tasks.reminders: {e}")))?,
        ical_uid: row.try_get("ical_uid")?,
    })
}

/// Storage name of an anchor.
pub(crate) fn anchor_name(anchor: Anchor) -> &'static str {
    match anchor {
        Anchor::Due => "due",
        Anchor::Completion => "completion",
    }
}

fn recurrence_from_row(row: &PgRow) -> Result<Option<Recurrence>, StoreError> {
    let rule: Option<String> = row.try_get("recurrence_rule")?;
    let Some(rule) = rule else { return Ok(None) };
    let anchor: Option<String> = row.try_get("recurrence_anchor")?;
    let dtstart: Option<NaiveDateTime> = row.try_get("recurrence_dtstart")?;
    let anchor = match anchor.as_deref() {
        Some("due") => Anchor::Due,
        Some("completion") => Anchor::Completion,
        other => {
            return Err(StoreError::Corrupt(format!(
                "tasks.recurrence_anchor: {other:?}"
            )));
        }
    };
    let dtstart =
        dtstart.ok_or_else(|| StoreError::Corrupt("tasks.recurrence_dtstart: NULL".into()))?;
    let rule = RecurrenceRule::parse(&rule)
        .map_err(|e| StoreError::Corrupt(format!("tasks.recurrence_rule: {e}")))?;
    Ok(Some(Recurrence {
        rule,
        anchor,
        dtstart,
    }))
}
