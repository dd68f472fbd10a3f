//! Reminders on SQLite: kept in step with each task's plan by the task writes, claimed and
//! fired by schedulers in batches through the single writer.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension as _, Row, params};
use taskflow_domain::events::OutgoingEvent;
use taskflow_domain::reminder::{
    CancelReason, DueReminder, PAST_GRACE, Reminder, ReminderState, reminder_cancelled_event,
    reminder_scheduled_event, wanted_reminders,
};
use taskflow_domain::{ReminderId, Task, TaskId, UserId};

use super::SqliteStore;
use super::events::write_events;
use super::rows::{instant, micros, optional_instant, parse_id};
use super::tasks::query_all;
use crate::ReminderSync;
use crate::error::StoreError;
use crate::{ReminderClaim, ReminderStore};

/// Reconciles the reminders of `task` with its plan inside the caller's transaction: entries
/// the plan no longer asks for are cancelled, new ones scheduled (a cancelled entry that is
/// wanted again is rescheduled; a sent one stays sent). Instants more than
/// [`PAST_GRACE`] before the write are not scheduled. Returns the earliest newly scheduled
/// instant and a `reminder.scheduled` / `reminder.cancelled` event per change, carrying `trace`.
pub(super) fn sync_reminders(
    conn: &Connection,
    task: &Task,
    trace: Option<&str>,
) -> Result<ReminderSync, StoreError> {
    let now = task.updated_at;
    let wanted = wanted_reminders(task);
    let task_id = task.id.to_string();
    let pending: Vec<(String, String, i64)> = query_all(
        conn,
        "SELECT id, key, remind_at FROM reminders
         WHERE task_id = ? AND state IN ('scheduled', 'firing')",
        &[Value::Text(task_id.clone())],
        |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
    )?;
    let mut sync = ReminderSync::default();
    let reason = CancelReason::for_task(task);
    for (id, key, remind_at) in &pending {
        let still_wanted = wanted
            .iter()
            .any(|w| &w.key == key && micros(w.remind_at) == *remind_at);
        if !still_wanted {
            conn.prepare_cached(
                "UPDATE reminders SET state = 'cancelled', lease_token = NULL, lease_until = NULL,
                     updated_at = ? WHERE id = ?",
            )?
            .execute(params![micros(now), id])?;
            sync.events.push(reminder_cancelled_event(
                task,
                parse_id(id, "reminders.id")?,
                instant(*remind_at, "reminders.remind_at")?,
                reason,
                now,
                trace.map(str::to_owned),
            ));
        }
    }
    for planned in wanted {
        if planned.remind_at < now - PAST_GRACE {
            continue;
        }
        let scheduled: Option<String> = conn
            .prepare_cached(
                "INSERT INTO reminders (id, user_id, task_id, key, remind_at, fire_at, state,
                                        created_at, updated_at)
                 VALUES (?, ?, ?, ?, ?, ?, 'scheduled', ?, ?)
                 ON CONFLICT (task_id, key, remind_at) DO UPDATE
                     SET state = 'scheduled', fire_at = excluded.fire_at, updated_at = excluded.updated_at
                     WHERE reminders.state = 'cancelled'
                 RETURNING id",
            )?
            .query_row(
                params![
                    ReminderId::new().to_string(),
                    task.user_id.to_string(),
                    task_id,
                    planned.key,
                    micros(planned.remind_at),
                    micros(planned.remind_at),
                    micros(now),
                    micros(now),
                ],
                |row| row.get(0),
            )
            .optional()?;
        if let Some(id) = scheduled {
            sync.earliest = Some(
                sync.earliest
                    .map_or(planned.remind_at, |e| e.min(planned.remind_at)),
            );
            sync.events.push(reminder_scheduled_event(
                task,
                parse_id(&id, "reminders.id")?,
                planned.remind_at,
                planned.remind_at,
                now,
                trace.map(str::to_owned),
            ));
        }
    }
    Ok(sync)
}

/// Cancels every pending reminder of a deleted task inside the caller's transaction,
/// returning a `reminder.cancelled` event per reminder.
pub(super) fn cancel_task_reminders(
    conn: &Connection,
    task: &Task,
    now: DateTime<Utc>,
    trace: Option<&str>,
) -> Result<Vec<OutgoingEvent>, StoreError> {
    let cancelled: Vec<(String, i64)> = query_all(
        conn,
        "UPDATE reminders SET state = 'cancelled', lease_token = NULL, lease_until = NULL,
             updated_at = ? WHERE task_id = ? AND state IN ('scheduled', 'firing')
         RETURNING id, remind_at",
        &[
            Value::Integer(micros(now)),
            Value::Text(task.id.to_string()),
        ],
        |row| Ok((row.get(0)?, row.get(1)?)),
    )?;
    cancelled
        .into_iter()
        .map(|(id, remind_at)| {
            Ok(reminder_cancelled_event(
                task,
                parse_id(&id, "reminders.id")?,
                instant(remind_at, "reminders.remind_at")?,
                CancelReason::TaskDeleted,
                now,
                trace.map(str::to_owned),
            ))
        })
        .collect()
}

pub(super) fn reminder_from_row(row: &Row<'_>) -> Result<Reminder, StoreError> {
    let id: String = row.get("id")?;
    let user_id: String = row.get("user_id")?;
    let task_id: String = row.get("task_id")?;
    let state: String = row.get("state")?;
    let fire_count: i64 = row.get("fire_count")?;
    Ok(Reminder {
        id: parse_id(&id, "reminders.id")?,
        user_id: parse_id(&user_id, "reminders.user_id")?,
        task_id: parse_id(&task_id, "reminders.task_id")?,
        key: row.get("key")?,
        remind_at: instant(row.get("remind_at")?, "reminders.remind_at")?,
        fire_at: instant(row.get("fire_at")?, "reminders.fire_at")?,
        state: state
            .parse::<ReminderState>()
            .map_err(StoreError::Corrupt)?,
        fire_count: u32::try_from(fire_count)
            .map_err(|_| StoreError::Corrupt(format!("reminders.fire_count: {fire_count}")))?,
        fired_at: optional_instant(row.get("fired_at")?, "reminders.fired_at")?,
        late_ms: row.get("late_ms")?,
        created_at: instant(row.get("created_at")?, "reminders.created_at")?,
        updated_at: instant(row.get("updated_at")?, "reminders.updated_at")?,
    })
}

#[async_trait]
impl ReminderStore for SqliteStore {
    async fn upcoming_reminder_instants(
        &self,
        limit: u32,
    ) -> Result<Vec<DateTime<Utc>>, StoreError> {
        let values: Vec<i64> = self
            .read(move |conn| {
                query_all(
                    conn,
                    "SELECT at FROM (
                         SELECT at FROM (SELECT fire_at AS at FROM reminders WHERE state = 'scheduled'
                                         ORDER BY fire_at LIMIT ?1)
                         UNION ALL
                         SELECT at FROM (SELECT lease_until AS at FROM reminders WHERE state = 'firing'
                                         ORDER BY lease_until LIMIT ?1))
                     ORDER BY at LIMIT ?1",
                    &[Value::Integer(i64::from(limit))],
                    |row| Ok(row.get(0)?),
                )
            })
            .await?;
        values
            .into_iter()
            .map(|v| instant(v, "reminders.fire_at"))
            .collect()
    }

    async fn claim_due_reminders(
        &self,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
    ) -> Result<ReminderClaim, StoreError> {
        let token = uuid::Uuid::now_v7();
        self.writes
            .write(move |conn| {
                conn.prepare_cached(
                    "UPDATE reminders SET state = 'firing', lease_token = ?1, lease_until = ?2,
                         updated_at = ?3
                     WHERE id IN (SELECT id FROM reminders WHERE state = 'scheduled'
                                      AND fire_at <= ?3 ORDER BY fire_at LIMIT ?4)
                        OR id IN (SELECT id FROM reminders WHERE state = 'firing'
                                      AND lease_until <= ?3 ORDER BY lease_until LIMIT ?4)",
                )?
                .execute(params![
                    token.to_string(),
                    micros(lease_until),
                    micros(now),
                    i64::from(limit)
                ])?;
                let mut due = Vec::new();
                let mut orphans = Vec::new();
                query_all(
                    conn,
                    "SELECT r.*, t.title AS task_title, t.due_at AS task_due_at,
                            t.time_zone AS task_time_zone
                     FROM reminders r LEFT JOIN tasks t ON t.id = r.task_id
                     WHERE r.state = 'firing' AND r.lease_until = ? AND r.lease_token = ?
                     ORDER BY r.fire_at, r.id",
                    &[
                        Value::Integer(micros(lease_until)),
                        Value::Text(token.to_string()),
                    ],
                    |row| {
                        let reminder = reminder_from_row(row)?;
                        match row.get::<_, Option<String>>("task_title")? {
                            Some(title) => due.push(DueReminder {
                                reminder,
                                title,
                                due_at: optional_instant(row.get("task_due_at")?, "tasks.due_at")?,
                                time_zone: row.get("task_time_zone")?,
                            }),
                            None => orphans.push(reminder.id.to_string()),
                        }
                        Ok(())
                    },
                )?;
                if !orphans.is_empty() {
                    let mut failed = conn.prepare_cached(
                        "UPDATE reminders SET state = 'failed', lease_token = NULL,
                             lease_until = NULL, updated_at = ? WHERE id = ?",
                    )?;
                    for id in &orphans {
                        failed.execute(params![micros(now), id])?;
                    }
                }
                Ok((
                    ReminderClaim {
                        token,
                        lease_until,
                        due,
                        orphaned: orphans.len() as u64,
                    },
                    None,
                ))
            })
            .await
    }

    async fn fire_reminders(
        &self,
        token: uuid::Uuid,
        fired: &[(ReminderId, OutgoingEvent)],
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        let fired = fired.to_vec();
        self.writes
            .write(move |conn| {
                // One statement for the whole batch: the ids travel as one JSON array.
                let ids = serde_json::to_string(
                    &fired
                        .iter()
                        .map(|(id, _)| id.to_string())
                        .collect::<Vec<_>>(),
                )
                .map_err(|e| StoreError::Corrupt(e.to_string()))?;
                let updated: std::collections::HashSet<String> = query_all(
                    conn,
                    "UPDATE reminders SET state = 'sent', fire_count = fire_count + 1,
                         fired_at = ?1,
                         late_ms = MAX(0, (?1 - fire_at) / 1000),
                         lease_token = NULL, lease_until = NULL, updated_at = ?1
                     WHERE id IN (SELECT value FROM json_each(?2))
                       AND state = 'firing' AND lease_token = ?3
                     RETURNING id",
                    &[
                        Value::Integer(micros(now)),
                        Value::Text(ids),
                        Value::Text(token.to_string()),
                    ],
                    |row| Ok(row.get::<_, String>(0)?),
                )?
                .into_iter()
                .collect();
                let events: Vec<OutgoingEvent> = fired
                    .iter()
                    .filter(|(id, _)| updated.contains(&id.to_string()))
                    .map(|(_, event)| event.clone())
                    .collect();
                let seq = write_events(conn, &events)?;
                Ok((events.len() as u64, seq))
            })
            .await
    }

    async fn task_reminders(
        &self,
        user: UserId,
        task: TaskId,
    ) -> Result<Vec<Reminder>, StoreError> {
        self.read(move |conn| {
            query_all(
                conn,
                "SELECT * FROM reminders WHERE user_id = ? AND task_id = ? ORDER BY fire_at, id",
                &[Value::Text(user.to_string()), Value::Text(task.to_string())],
                reminder_from_row,
            )
        })
        .await
    }

    async fn snooze_reminder(
        &self,
        user: UserId,
        id: ReminderId,
        fire_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Reminder, StoreError> {
        let reminder = self
            .writes
            .write(move |conn| {
                let found = conn
                    .prepare_cached(
                        "SELECT r.*, t.status AS task_status FROM reminders r
                         LEFT JOIN tasks t ON t.id = r.task_id
                         WHERE r.id = ? AND r.user_id = ?",
                    )?
                    .query_row([id.to_string(), user.to_string()], |row| {
                        Ok(reminder_from_row(row).and_then(|reminder| {
                            Ok((reminder, row.get::<_, Option<String>>("task_status")?))
                        }))
                    })
                    .optional()?
                    .transpose()?;
                let Some((reminder, task_status)) = found else {
                    return Err(StoreError::NotFound);
                };
                if reminder.state == ReminderState::Cancelled
                    || task_status.as_deref() != Some("pending")
                {
                    return Err(StoreError::Conflict("reminder_cancelled"));
                }
                conn.prepare_cached(
                    "UPDATE reminders SET state = 'scheduled', fire_at = ?, lease_token = NULL,
                         lease_until = NULL, updated_at = ? WHERE id = ?",
                )?
                .execute(params![micros(fire_at), micros(now), id.to_string()])?;
                let task = conn
                    .prepare_cached("SELECT * FROM tasks WHERE id = ?")?
                    .query_row([reminder.task_id.to_string()], |row| {
                        Ok(super::rows::task_from_row(row))
                    })??;
                let event = reminder_scheduled_event(
                    &task,
                    reminder.id,
                    reminder.remind_at,
                    fire_at,
                    now,
                    None,
                );
                let seq = write_events(conn, &[event])?;
                Ok((
                    Reminder {
                        state: ReminderState::Scheduled,
                        fire_at,
                        updated_at: now,
                        ..reminder
                    },
                    seq,
                ))
            })
            .await?;
        crate::announce_earliest(&self.reminder_changes, Some(fire_at));
        Ok(reminder)
    }

    async fn pending_reminder_count(&self) -> Result<i64, StoreError> {
        self.read(|conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT (SELECT COUNT(*) FROM reminders WHERE state = 'scheduled')
                          + (SELECT COUNT(*) FROM reminders WHERE state = 'firing')",
                )?
                .query_row([], |row| row.get(0))?)
        })
        .await
    }

    fn reminder_changes(&self) -> tokio::sync::watch::Receiver<Option<DateTime<Utc>>> {
        self.reminder_changes.subscribe()
    }
}
