//! Reminders on PostgreSQL: kept in step with each task's plan by the task writes, claimed by
//! schedulers with `FOR UPDATE SKIP LOCKED`, so instances never wait for or double-claim a row.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row};
use taskflow_domain::events::OutgoingEvent;
use taskflow_domain::reminder::{
    CancelReason, DueReminder, PAST_GRACE, Reminder, ReminderState, reminder_cancelled_event,
    reminder_scheduled_event, wanted_reminders,
};
use taskflow_domain::{ReminderId, Task, TaskId, UserId};

use super::events::write_events;
use super::{PostgresStore, at_micros, pg_error};
use crate::ReminderSync;
use crate::error::StoreError;
use crate::{ReminderClaim, ReminderStore};

/// Reconciles the reminders of `task` with its plan inside the caller's transaction (see the
/// SQLite backend's twin for the rules). Returns the earliest newly scheduled instant and an
/// event per change, carrying `trace`.
pub(super) async fn sync_reminders(
    conn: &mut PgConnection,
    task: &Task,
    trace: Option<&str>,
) -> Result<ReminderSync, StoreError> {
    let now = at_micros(task.updated_at);
    let wanted = wanted_reminders(task);
    let pending: Vec<(uuid::Uuid, String, DateTime<Utc>)> = sqlx::query_as(
        "SELECT id, key, remind_at FROM reminders
         WHERE task_id = $1 AND state IN ('scheduled', 'firing') FOR UPDATE",
    )
    .bind(task.id.as_uuid())
    .fetch_all(&mut *conn)
    .await
    .map_err(pg_error)?;
    let stale: Vec<(uuid::Uuid, DateTime<Utc>)> = pending
        .iter()
        .filter(|(_, key, remind_at)| {
            !wanted
                .iter()
                .any(|w| &w.key == key && at_micros(w.remind_at) == *remind_at)
        })
        .map(|(id, _, remind_at)| (*id, *remind_at))
        .collect();
    let mut sync = ReminderSync::default();
    if !stale.is_empty() {
        let ids: Vec<uuid::Uuid> = stale.iter().map(|(id, _)| *id).collect();
        sqlx::query(
            "UPDATE reminders SET state = 'cancelled', lease_token = NULL, lease_until = NULL,
                 updated_at = $1 WHERE id = ANY($2)",
        )
        .bind(now)
        .bind(&ids)
        .execute(&mut *conn)
        .await
        .map_err(pg_error)?;
        let reason = CancelReason::for_task(task);
        sync.events.extend(stale.iter().map(|(id, remind_at)| {
            reminder_cancelled_event(
                task,
                ReminderId::from_uuid(*id),
                *remind_at,
                reason,
                now,
                trace.map(str::to_owned),
            )
        }));
    }
    for planned in wanted {
        if planned.remind_at < now - PAST_GRACE {
            continue;
        }
        let remind_at = at_micros(planned.remind_at);
        let scheduled: Option<uuid::Uuid> = sqlx::query_scalar(
            "INSERT INTO reminders (id, user_id, task_id, key, remind_at, fire_at, state,
                                    created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $5, 'scheduled', $6, $6)
             ON CONFLICT (task_id, key, remind_at) DO UPDATE
                 SET state = 'scheduled', fire_at = excluded.fire_at, updated_at = excluded.updated_at
                 WHERE reminders.state = 'cancelled'
             RETURNING id",
        )
        .bind(ReminderId::new().as_uuid())
        .bind(task.user_id.as_uuid())
        .bind(task.id.as_uuid())
        .bind(&planned.key)
        .bind(remind_at)
        .bind(now)
        .fetch_optional(&mut *conn)
        .await
        .map_err(pg_error)?;
        if let Some(id) = scheduled {
            sync.earliest = Some(sync.earliest.map_or(remind_at, |e| e.min(remind_at)));
            sync.events.push(reminder_scheduled_event(
                task,
                ReminderId::from_uuid(id),
                remind_at,
                remind_at,
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
    conn: &mut PgConnection,
    task: &Task,
    now: DateTime<Utc>,
    trace: Option<&str>,
) -> Result<Vec<OutgoingEvent>, StoreError> {
    let now = at_micros(now);
    let cancelled: Vec<(uuid::Uuid, DateTime<Utc>)> = sqlx::query_as(
        "UPDATE reminders SET state = 'cancelled', lease_token = NULL, lease_until = NULL,
             updated_at = $1 WHERE task_id = $2 AND state IN ('scheduled', 'firing')
         RETURNING id, remind_at",
    )
    .bind(now)
    .bind(task.id.as_uuid())
    .fetch_all(&mut *conn)
    .await
    .map_err(pg_error)?;
    Ok(cancelled
        .into_iter()
        .map(|(id, remind_at)| {
            reminder_cancelled_event(
                task,
                ReminderId::from_uuid(id),
                remind_at,
                CancelReason::TaskDeleted,
                now,
                trace.map(str::to_owned),
            )
        })
        .collect())
}

fn reminder_from_row(row: &PgRow) -> Result<Reminder, StoreError> {
    let state: String = row.try_get("state")?;
    let fire_count: i32 = row.try_get("fire_count")?;
    Ok(Reminder {
        id: ReminderId::from_uuid(row.try_get("id")?),
        user_id: UserId::from_uuid(row.try_get("user_id")?),
        task_id: TaskId::from_uuid(row.try_get("task_id")?),
        key: row.try_get("key")?,
        remind_at: row.try_get("remind_at")?,
        fire_at: row.try_get("fire_at")?,
        state: state
            .parse::<ReminderState>()
            .map_err(StoreError::Corrupt)?,
        fire_count: u32::try_from(fire_count)
            .map_err(|_| StoreError::Corrupt(format!("reminders.fire_count: {fire_count}")))?,
        fired_at: row.try_get("fired_at")?,
        late_ms: row.try_get("late_ms")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

const REMINDER_COLUMNS: &str = "r.id, r.user_id, r.task_id, r.key, r.remind_at, r.fire_at, \
     r.state, r.fire_count, r.fired_at, r.late_ms, r.created_at, r.updated_at";

#[async_trait]
impl ReminderStore for PostgresStore {
    async fn upcoming_reminder_instants(
        &self,
        limit: u32,
    ) -> Result<Vec<DateTime<Utc>>, StoreError> {
        sqlx::query_scalar(
            "SELECT at FROM (
                 (SELECT fire_at AS at FROM reminders WHERE state = 'scheduled'
                  ORDER BY fire_at LIMIT $1)
                 UNION ALL
                 (SELECT lease_until AS at FROM reminders WHERE state = 'firing'
                  ORDER BY lease_until LIMIT $1)) AS u
             ORDER BY at LIMIT $1",
        )
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(pg_error)
    }

    async fn claim_due_reminders(
        &self,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
    ) -> Result<ReminderClaim, StoreError> {
        let token = uuid::Uuid::now_v7();
        let (now, lease_until) = (at_micros(now), at_micros(lease_until));
        let mut tx = self.pool.begin().await.map_err(pg_error)?;
        let rows = sqlx::query(&format!(
            "WITH due AS (
                 SELECT id FROM reminders WHERE state = 'scheduled' AND fire_at <= $3
                 ORDER BY fire_at LIMIT $4 FOR UPDATE SKIP LOCKED),
             expired AS (
                 SELECT id FROM reminders WHERE state = 'firing' AND lease_until <= $3
                 ORDER BY lease_until LIMIT $4 FOR UPDATE SKIP LOCKED),
             claimed AS (
                 UPDATE reminders SET state = 'firing', lease_token = $1, lease_until = $2,
                     updated_at = $3
                 WHERE id IN (SELECT id FROM due UNION SELECT id FROM expired)
                 RETURNING *)
             SELECT {REMINDER_COLUMNS}, t.title AS task_title, t.due_at AS task_due_at,
                    t.time_zone AS task_time_zone
             FROM claimed r LEFT JOIN tasks t ON t.id = r.task_id
             ORDER BY r.fire_at, r.id"
        ))
        .bind(token)
        .bind(lease_until)
        .bind(now)
        .bind(i64::from(limit))
        .fetch_all(&mut *tx)
        .await
        .map_err(pg_error)?;
        let mut due = Vec::with_capacity(rows.len());
        let mut orphans = Vec::new();
        for row in &rows {
            let reminder = reminder_from_row(row)?;
            match row.try_get::<Option<String>, _>("task_title")? {
                Some(title) => due.push(DueReminder {
                    reminder,
                    title,
                    due_at: row.try_get("task_due_at")?,
                    time_zone: row.try_get("task_time_zone")?,
                }),
                None => orphans.push(reminder.id.as_uuid()),
            }
        }
        if !orphans.is_empty() {
            sqlx::query(
                "UPDATE reminders SET state = 'failed', lease_token = NULL, lease_until = NULL,
                     updated_at = $1 WHERE id = ANY($2)",
            )
            .bind(now)
            .bind(&orphans)
            .execute(&mut *tx)
            .await
            .map_err(pg_error)?;
        }
        tx.commit().await.map_err(pg_error)?;
        Ok(ReminderClaim {
            token,
            lease_until,
            due,
            orphaned: orphans.len() as u64,
        })
    }

    async fn fire_reminders(
        &self,
        token: uuid::Uuid,
        fired: &[(ReminderId, OutgoingEvent)],
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        let now = at_micros(now);
        let ids: Vec<uuid::Uuid> = fired.iter().map(|(id, _)| id.as_uuid()).collect();
        let mut tx = self.pool.begin().await.map_err(pg_error)?;
        let updated: Vec<uuid::Uuid> = sqlx::query_scalar(
            "UPDATE reminders SET state = 'sent', fire_count = fire_count + 1, fired_at = $1,
                 late_ms = GREATEST(0, (EXTRACT(EPOCH FROM ($1 - fire_at)) * 1000)::bigint),
                 lease_token = NULL, lease_until = NULL, updated_at = $1
             WHERE id = ANY($2) AND state = 'firing' AND lease_token = $3
             RETURNING id",
        )
        .bind(now)
        .bind(&ids)
        .bind(token)
        .fetch_all(&mut *tx)
        .await
        .map_err(pg_error)?;
        let updated: std::collections::HashSet<uuid::Uuid> = updated.into_iter().collect();
        let events: Vec<OutgoingEvent> = fired
            .iter()
            .filter(|(id, _)| updated.contains(&id.as_uuid()))
            .map(|(_, event)| event.clone())
            .collect();
        let seq = write_events(&mut tx, &events, self.outbox_order).await?;
        tx.commit().await.map_err(pg_error)?;
        self.announce(seq);
        Ok(events.len() as u64)
    }

    async fn task_reminders(
        &self,
        user: UserId,
        task: TaskId,
    ) -> Result<Vec<Reminder>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {REMINDER_COLUMNS} FROM reminders r WHERE r.user_id = $1 AND r.task_id = $2
             ORDER BY r.fire_at, r.id"
        ))
        .bind(user.as_uuid())
        .bind(task.as_uuid())
        .fetch_all(&self.pool)
        .await
        .map_err(pg_error)?;
        rows.iter().map(reminder_from_row).collect()
    }

    async fn snooze_reminder(
        &self,
        user: UserId,
        id: ReminderId,
        fire_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Reminder, StoreError> {
        let (fire_at, now) = (at_micros(fire_at), at_micros(now));
        let mut tx = self.pool.begin().await.map_err(pg_error)?;
        let row = sqlx::query(&format!(
            "SELECT {REMINDER_COLUMNS}, t.status AS task_status FROM reminders r
             LEFT JOIN tasks t ON t.id = r.task_id
             WHERE r.id = $1 AND r.user_id = $2 FOR UPDATE OF r"
        ))
        .bind(id.as_uuid())
        .bind(user.as_uuid())
        .fetch_optional(&mut *tx)
        .await
        .map_err(pg_error)?
        .ok_or(StoreError::NotFound)?;
        let reminder = reminder_from_row(&row)?;
        let task_status: Option<String> = row.try_get("task_status")?;
        if reminder.state == ReminderState::Cancelled || task_status.as_deref() != Some("pending") {
            return Err(StoreError::Conflict("reminder_cancelled"));
        }
        sqlx::query(
            "UPDATE reminders SET state = 'scheduled', fire_at = $1, lease_token = NULL,
                 lease_until = NULL, updated_at = $2 WHERE id = $3",
        )
        .bind(fire_at)
        .bind(now)
        .bind(id.as_uuid())
        .execute(&mut *tx)
        .await
        .map_err(pg_error)?;
        let task_row = sqlx::query(&format!(
            "SELECT {} FROM tasks t WHERE t.id = $1",
            super::rows::TASK_COLUMNS
        ))
        .bind(reminder.task_id.as_uuid())
        .fetch_one(&mut *tx)
        .await
        .map_err(pg_error)?;
        let task = super::rows::task_from_row(&task_row)?;
        let event =
            reminder_scheduled_event(&task, reminder.id, reminder.remind_at, fire_at, now, None);
        let seq = write_events(&mut tx, &[event], self.outbox_order).await?;
        tx.commit().await.map_err(pg_error)?;
        self.announce(seq);
        crate::announce_earliest(&self.reminder_changes, Some(fire_at));
        Ok(Reminder {
            state: ReminderState::Scheduled,
            fire_at,
            updated_at: now,
            ..reminder
        })
    }

    async fn pending_reminder_count(&self) -> Result<i64, StoreError> {
        sqlx::query_scalar("SELECT count(*) FROM reminders WHERE state IN ('scheduled', 'firing')")
            .fetch_one(&self.pool)
            .await
            .map_err(pg_error)
    }

    fn reminder_changes(&self) -> tokio::sync::watch::Receiver<Option<DateTime<Utc>>> {
        self.reminder_changes.subscribe()
    }
}
