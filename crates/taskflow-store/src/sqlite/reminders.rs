//! Reminders on SQLite: kept in step with each task's plan by the task writes, claimed and
//! fired by schedulers in batches through the single writer.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::sqlite::SqliteRow;
use sqlx::{QueryBuilder, Row, Sqlite, SqliteConnection};
use taskflow_domain::events::OutgoingEvent;
use taskflow_domain::reminder::{
    CancelReason, DueReminder, PAST_GRACE, Reminder, ReminderState, reminder_cancelled_event,
    reminder_scheduled_event, wanted_reminders,
};
use taskflow_domain::{ReminderId, Task, TaskId, UserId};

use super::SqliteStore;
use super::events::write_events;
use super::rows::{instant, micros, optional_instant, parse_id};
use crate::ReminderSync;
use crate::error::StoreError;
use crate::{ReminderClaim, ReminderStore};

/// Reconciles the reminders of `task` with its plan inside the caller's transaction: entries
/// the plan no longer asks for are cancelled, new ones scheduled (a cancelled entry that is
/// wanted again is rescheduled; a sent one stays sent). Instants more than
/// [`PAST_GRACE`] before the write are not scheduled. Returns the earliest newly scheduled
/// instant and a `reminder.scheduled` / `reminder.cancelled` event per change, carrying `trace`.
pub(super) async fn sync_reminders(
    conn: &mut SqliteConnection,
    task: &Task,
    trace: Option<&str>,
) -> Result<ReminderSync, StoreError> {
    let now = task.updated_at;
    let wanted = wanted_reminders(task);
    let task_id = task.id.to_string();
    let pending: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT id, key, remind_at FROM reminders
         WHERE task_id = ? AND state IN ('scheduled', 'firing')",
    )
    .bind(&task_id)
    .fetch_all(&mut *conn)
    .await?;
    let mut sync = ReminderSync::default();
    let reason = CancelReason::for_task(task);
    for (id, key, remind_at) in &pending {
        let still_wanted = wanted
            .iter()
            .any(|w| &w.key == key && micros(w.remind_at) == *remind_at);
        if !still_wanted {
            sqlx::query(
                "UPDATE reminders SET state = 'cancelled', lease_token = NULL, lease_until = NULL,
                     updated_at = ? WHERE id = ?",
            )
            .bind(micros(now))
            .bind(id)
            .execute(&mut *conn)
            .await?;
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
        let scheduled: Option<String> = sqlx::query_scalar(
            "INSERT INTO reminders (id, user_id, task_id, key, remind_at, fire_at, state,
                                    created_at, updated_at)
             VALUES (?, ?, ?, ?, ?, ?, 'scheduled', ?, ?)
             ON CONFLICT (task_id, key, remind_at) DO UPDATE
                 SET state = 'scheduled', fire_at = excluded.fire_at, updated_at = excluded.updated_at
                 WHERE reminders.state = 'cancelled'
             RETURNING id",
        )
        .bind(ReminderId::new().to_string())
        .bind(task.user_id.to_string())
        .bind(&task_id)
        .bind(&planned.key)
        .bind(micros(planned.remind_at))
        .bind(micros(planned.remind_at))
        .bind(micros(now))
        .bind(micros(now))
        .fetch_optional(&mut *conn)
        .await?;
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
pub(super) async fn cancel_task_reminders(
    conn: &mut SqliteConnection,
    task: &Task,
    now: DateTime<Utc>,
    trace: Option<&str>,
) -> Result<Vec<OutgoingEvent>, StoreError> {
    let cancelled: Vec<(String, i64)> = sqlx::query_as(
        "UPDATE reminders SET state = 'cancelled', lease_token = NULL, lease_until = NULL,
             updated_at = ? WHERE task_id = ? AND state IN ('scheduled', 'firing')
         RETURNING id, remind_at",
    )
    .bind(micros(now))
    .bind(task.id.to_string())
    .fetch_all(&mut *conn)
    .await?;
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

pub(super) fn reminder_from_row(row: &SqliteRow) -> Result<Reminder, StoreError> {
    let id: String = row.try_get("id")?;
    let user_id: String = row.try_get("user_id")?;
    let task_id: String = row.try_get("task_id")?;
    let state: String = row.try_get("state")?;
    let fire_count: i64 = row.try_get("fire_count")?;
    Ok(Reminder {
        id: parse_id(&id, "reminders.id")?,
        user_id: parse_id(&user_id, "reminders.user_id")?,
        task_id: parse_id(&task_id, "reminders.task_id")?,
        key: row.try_get("key")?,
        remind_at: instant(row.try_get("remind_at")?, "reminders.remind_at")?,
        fire_at: instant(row.try_get("fire_at")?, "reminders.fire_at")?,
        state: state
            .parse::<ReminderState>()
            .map_err(StoreError::Corrupt)?,
        fire_count: u32::try_from(fire_count)
            .map_err(|_| StoreError::Corrupt(format!("reminders.fire_count: {fire_count}")))?,
        fired_at: optional_instant(row.try_get("fired_at")?, "reminders.fired_at")?,
        late_ms: row.try_get("late_ms")?,
        created_at: instant(row.try_get("created_at")?, "reminders.created_at")?,
        updated_at: instant(row.try_get("updated_at")?, "reminders.updated_at")?,
    })
}

#[async_trait]
impl ReminderStore for SqliteStore {
    async fn upcoming_reminder_instants(
        &self,
        limit: u32,
    ) -> Result<Vec<DateTime<Utc>>, StoreError> {
        let values: Vec<i64> = sqlx::query_scalar(
            "SELECT at FROM (
                 SELECT at FROM (SELECT fire_at AS at FROM reminders WHERE state = 'scheduled'
                                 ORDER BY fire_at LIMIT ?1)
                 UNION ALL
                 SELECT at FROM (SELECT lease_until AS at FROM reminders WHERE state = 'firing'
                                 ORDER BY lease_until LIMIT ?1))
             ORDER BY at LIMIT ?1",
        )
        .bind(i64::from(limit))
        .fetch_all(&self.reader)
        .await
        .map_err(StoreError::from_sqlx)?;
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
                Box::pin(async move {
                    sqlx::query(
                        "UPDATE reminders SET state = 'firing', lease_token = ?1, lease_until = ?2,
                             updated_at = ?3
                         WHERE id IN (SELECT id FROM reminders WHERE state = 'scheduled'
                                          AND fire_at <= ?3 ORDER BY fire_at LIMIT ?4)
                            OR id IN (SELECT id FROM reminders WHERE state = 'firing'
                                          AND lease_until <= ?3 ORDER BY lease_until LIMIT ?4)",
                    )
                    .bind(token.to_string())
                    .bind(micros(lease_until))
                    .bind(micros(now))
                    .bind(i64::from(limit))
                    .execute(&mut *conn)
                    .await?;
                    let rows = sqlx::query(
                        "SELECT r.*, t.title AS task_title, t.due_at AS task_due_at,
                                t.time_zone AS task_time_zone
                         FROM reminders r LEFT JOIN tasks t ON t.id = r.task_id
                         WHERE r.state = 'firing' AND r.lease_until = ? AND r.lease_token = ?
                         ORDER BY r.fire_at, r.id",
                    )
                    .bind(micros(lease_until))
                    .bind(token.to_string())
                    .fetch_all(&mut *conn)
                    .await?;
                    let mut due = Vec::with_capacity(rows.len());
                    let mut orphans = Vec::new();
                    for row in &rows {
                        let reminder = reminder_from_row(row)?;
                        match row.try_get::<Option<String>, _>("task_title")? {
                            Some(title) => due.push(DueReminder {
                                reminder,
                                title,
                                due_at: optional_instant(
                                    row.try_get("task_due_at")?,
                                    "tasks.due_at",
                                )?,
                                time_zone: row.try_get("task_time_zone")?,
                            }),
                            None => orphans.push(reminder.id.to_string()),
                        }
                    }
                    if !orphans.is_empty() {
                        let mut sql = QueryBuilder::<Sqlite>::new(
                            "UPDATE reminders SET state = 'failed', lease_token = NULL,
                                 lease_until = NULL, updated_at = ",
                        );
                        sql.push_bind(micros(now)).push(" WHERE id IN (");
                        let mut ids = sql.separated(", ");
                        for id in &orphans {
                            ids.push_bind(id.clone());
                        }
                        sql.push(")");
                        sql.build().execute(&mut *conn).await?;
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
                Box::pin(async move {
                    // One statement for the whole batch: the ids travel as one JSON array.
                    let ids = serde_json::to_string(
                        &fired
                            .iter()
                            .map(|(id, _)| id.to_string())
                            .collect::<Vec<_>>(),
                    )
                    .map_err(|e| StoreError::Corrupt(e.to_string()))?;
                    let updated: Vec<String> = sqlx::query_scalar(
                        "UPDATE reminders SET state = 'sent', fire_count = fire_count + 1,
                             fired_at = ?1,
                             late_ms = MAX(0, (?1 - fire_at) / 1000),
                             lease_token = NULL, lease_until = NULL, updated_at = ?1
                         WHERE id IN (SELECT value FROM json_each(?2))
                           AND state = 'firing' AND lease_token = ?3
                         RETURNING id",
                    )
                    .bind(micros(now))
                    .bind(ids)
                    .bind(token.to_string())
                    .fetch_all(&mut *conn)
                    .await?;
                    let updated: std::collections::HashSet<String> = updated.into_iter().collect();
                    let events: Vec<OutgoingEvent> = fired
                        .into_iter()
                        .filter(|(id, _)| updated.contains(&id.to_string()))
                        .map(|(_, event)| event)
                        .collect();
                    let seq = write_events(conn, &events).await?;
                    Ok((events.len() as u64, seq))
                })
            })
            .await
    }

    async fn task_reminders(
        &self,
        user: UserId,
        task: TaskId,
    ) -> Result<Vec<Reminder>, StoreError> {
        let rows = sqlx::query(
            "SELECT * FROM reminders WHERE user_id = ? AND task_id = ? ORDER BY fire_at, id",
        )
        .bind(user.to_string())
        .bind(task.to_string())
        .fetch_all(&self.reader)
        .await
        .map_err(StoreError::from_sqlx)?;
        rows.iter().map(reminder_from_row).collect()
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
                Box::pin(async move {
                    let row = sqlx::query(
                        "SELECT r.*, t.status AS task_status FROM reminders r
                         LEFT JOIN tasks t ON t.id = r.task_id
                         WHERE r.id = ? AND r.user_id = ?",
                    )
                    .bind(id.to_string())
                    .bind(user.to_string())
                    .fetch_optional(&mut *conn)
                    .await?;
                    let Some(row) = row else {
                        return Err(StoreError::NotFound);
                    };
                    let reminder = reminder_from_row(&row)?;
                    let task_status: Option<String> = row.try_get("task_status")?;
                    if reminder.state == ReminderState::Cancelled
                        || task_status.as_deref() != Some("pending")
                    {
                        return Err(StoreError::Conflict("reminder_cancelled"));
                    }
                    sqlx::query(
                        "UPDATE reminders SET state = 'scheduled', fire_at = ?, lease_token = NULL,
                             lease_until = NULL, updated_at = ? WHERE id = ?",
                    )
                    .bind(micros(fire_at))
                    .bind(micros(now))
                    .bind(id.to_string())
                    .execute(&mut *conn)
                    .await?;
                    let task_row = sqlx::query("SELECT * FROM tasks WHERE id = ?")
                        .bind(reminder.task_id.to_string())
                        .fetch_one(&mut *conn)
                        .await?;
                    let task = super::rows::task_from_row(&task_row)?;
                    let event = reminder_scheduled_event(
                        &task,
                        reminder.id,
                        reminder.remind_at,
                        fire_at,
                        now,
                        None,
                    );
                    let seq = write_events(conn, &[event]).await?;
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
            })
            .await?;
        crate::announce_earliest(&self.reminder_changes, Some(fire_at));
        Ok(reminder)
    }

    async fn pending_reminder_count(&self) -> Result<i64, StoreError> {
        sqlx::query_scalar(
            "SELECT (SELECT COUNT(*) FROM reminders WHERE state = 'scheduled')
                  + (SELECT COUNT(*) FROM reminders WHERE state = 'firing')",
        )
        .fetch_one(&self.reader)
        .await
        .map_err(StoreError::from_sqlx)
    }

    fn reminder_changes(&self) -> tokio::sync::watch::Receiver<Option<DateTime<Utc>>> {
        self.reminder_changes.subscribe()
    }
}
