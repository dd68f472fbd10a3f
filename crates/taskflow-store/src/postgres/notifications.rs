//! Notifications on PostgreSQL: the feed, preferences, webhook endpoints and deliveries.
//! Deliveries are claimed with `FOR UPDATE SKIP LOCKED`, so notifiers in several processes never
//! wait for or double-claim a row.

use async_trait::async_trait;
use chrono::{DateTime, NaiveTime, Utc};
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Postgres, QueryBuilder, Row};
use taskflow_domain::events::OutgoingEvent;
use taskflow_domain::notification::{
    Delivery, DeliveryAttempt, DeliveryStatus, Notification, NotificationPreferences, QuietWindow,
    WebhookEndpoint,
};
use taskflow_domain::{
    DeliveryId, Email, NotificationId, ReminderId, TaskId, TimeZone, UserId, WebhookId,
};

use super::OutboxOrder;
use super::events::write_events;
use super::{PostgresStore, at_micros, pg_error};
use crate::error::StoreError;
use crate::{
    ClaimedDelivery, DeliveryOutcome, NotificationPage, NotificationPlan, NotificationStore,
};

/// Stores what the notifier decided for one event inside the caller's transaction. Returns the
/// newest outbox seq written and the earliest new pending delivery instant.
///
/// The `notification.created` events are written last (only when the notification was new), as
/// [`write_events`] requires.
pub(super) async fn apply_plan(
    conn: &mut PgConnection,
    plan: &NotificationPlan,
    order: OutboxOrder,
) -> Result<(Option<i64>, Option<DateTime<Utc>>), StoreError> {
    let mut fresh_notification = false;
    if let Some(n) = &plan.notification {
        fresh_notification = sqlx::query(
            "INSERT INTO notifications (id, user_id, kind, title, body, task_id, reminder_id,
                                        dedup_key, created_at, read_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, NULL)
             ON CONFLICT (user_id, dedup_key) DO NOTHING",
        )
        .bind(n.id.as_uuid())
        .bind(n.user_id.as_uuid())
        .bind(&n.kind)
        .bind(&n.title)
        .bind(&n.body)
        .bind(n.task_id.map(|t| t.as_uuid()))
        .bind(n.reminder_id.map(|r| r.as_uuid()))
        .bind(&n.dedup_key)
        .bind(at_micros(n.created_at))
        .execute(&mut *conn)
        .await
        .map_err(pg_error)?
        .rows_affected()
            == 1;
    }
    let mut earliest: Option<DateTime<Utc>> = None;
    for d in &plan.deliveries {
        let next_attempt_at = at_micros(d.next_attempt_at);
        let inserted = sqlx::query(
            "INSERT INTO deliveries (id, user_id, reminder_id, task_id, channel, endpoint_id,
                                     idempotency_key, status, payload, attempts, next_attempt_at,
                                     created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 0, $10, $11, $12)
             ON CONFLICT (idempotency_key) DO NOTHING",
        )
        .bind(d.id.as_uuid())
        .bind(d.user_id.as_uuid())
        .bind(d.reminder_id.as_uuid())
        .bind(d.task_id.as_uuid())
        .bind(&d.channel)
        .bind(d.endpoint_id.map(|e| e.as_uuid()))
        .bind(&d.idempotency_key)
        .bind(d.status.as_str())
        .bind(&d.payload)
        .bind(next_attempt_at)
        .bind(at_micros(d.created_at))
        .bind(at_micros(d.updated_at))
        .execute(&mut *conn)
        .await
        .map_err(pg_error)?
        .rows_affected()
            == 1;
        if inserted && d.status == DeliveryStatus::Pending {
            earliest = Some(earliest.map_or(next_attempt_at, |e| e.min(next_attempt_at)));
        }
    }
    let seq = if fresh_notification {
        write_events(conn, &plan.events, order).await?
    } else {
        None
    };
    Ok((seq, earliest))
}

fn notification_from_row(row: &PgRow) -> Result<Notification, StoreError> {
    Ok(Notification {
        id: NotificationId::from_uuid(row.try_get("id")?),
        user_id: UserId::from_uuid(row.try_get("user_id")?),
        kind: row.try_get("kind")?,
        title: row.try_get("title")?,
        body: row.try_get("body")?,
        task_id: row
            .try_get::<Option<uuid::Uuid>, _>("task_id")?
            .map(TaskId::from_uuid),
        reminder_id: row
            .try_get::<Option<uuid::Uuid>, _>("reminder_id")?
            .map(ReminderId::from_uuid),
        dedup_key: row.try_get("dedup_key")?,
        created_at: row.try_get("created_at")?,
        read_at: row.try_get("read_at")?,
    })
}

/// The endpoint whose columns are named `{prefix}id`, `{prefix}url`, …; `None` when the id is
/// NULL (no endpoint joined).
fn endpoint_from_row(row: &PgRow, prefix: &str) -> Result<Option<WebhookEndpoint>, StoreError> {
    let column = |name: &str| format!("{prefix}{name}");
    let Some(id) = row.try_get::<Option<uuid::Uuid>, _>(column("id").as_str())? else {
        return Ok(None);
    };
    Ok(Some(WebhookEndpoint {
        id: WebhookId::from_uuid(id),
        user_id: UserId::from_uuid(row.try_get(column("user_id").as_str())?),
        url: row.try_get(column("url").as_str())?,
        secret: row.try_get(column("secret").as_str())?,
        description: row.try_get(column("description").as_str())?,
        enabled: row.try_get(column("enabled").as_str())?,
        created_at: row.try_get(column("created_at").as_str())?,
    }))
}

fn delivery_from_row(row: &PgRow) -> Result<Delivery, StoreError> {
    let status: String = row.try_get("status")?;
    let attempts: i32 = row.try_get("attempts")?;
    Ok(Delivery {
        id: DeliveryId::from_uuid(row.try_get("id")?),
        user_id: UserId::from_uuid(row.try_get("user_id")?),
        reminder_id: ReminderId::from_uuid(row.try_get("reminder_id")?),
        task_id: TaskId::from_uuid(row.try_get("task_id")?),
        channel: row.try_get("channel")?,
        endpoint_id: row
            .try_get::<Option<uuid::Uuid>, _>("endpoint_id")?
            .map(WebhookId::from_uuid),
        idempotency_key: row.try_get("idempotency_key")?,
        status: status.parse().map_err(StoreError::Corrupt)?,
        payload: row.try_get("payload")?,
        attempts: u32::try_from(attempts)
            .map_err(|_| StoreError::Corrupt(format!("deliveries.attempts: {attempts}")))?,
        next_attempt_at: row.try_get("next_attempt_at")?,
        last_error: row.try_get("last_error")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        sent_at: row.try_get("sent_at")?,
    })
}

fn attempt_from_row(row: &PgRow) -> Result<DeliveryAttempt, StoreError> {
    let attempt: i32 = row.try_get("attempt")?;
    Ok(DeliveryAttempt {
        attempt: u32::try_from(attempt)
            .map_err(|_| StoreError::Corrupt(format!("delivery_attempts.attempt: {attempt}")))?,
        at: row.try_get("at")?,
        outcome: row.try_get("outcome")?,
        error: row.try_get("error")?,
        duration_ms: row.try_get("duration_ms")?,
    })
}

fn time_text(time: NaiveTime) -> String {
    time.format("%H:%M").to_string()
}

fn parse_time(text: &str, column: &str) -> Result<NaiveTime, StoreError> {
    NaiveTime::parse_from_str(text, "%H:%M")
        .map_err(|_| StoreError::Corrupt(format!("{column}: {text}")))
}

const DELIVERY_COLUMNS: &str = "d.id, d.user_id, d.reminder_id, d.task_id, d.channel, \
     d.endpoint_id, d.idempotency_key, d.status, d.payload, d.attempts, d.next_attempt_at, \
     d.last_error, d.created_at, d.updated_at, d.sent_at";

#[async_trait]
impl NotificationStore for PostgresStore {
    async fn notification_preferences(
        &self,
        user: UserId,
    ) -> Result<Option<NotificationPreferences>, StoreError> {
        let row = sqlx::query("SELECT * FROM notification_preferences WHERE user_id = $1")
            .bind(user.as_uuid())
            .fetch_optional(&self.pool)
            .await
            .map_err(pg_error)?;
        let Some(row) = row else { return Ok(None) };
        let start: Option<String> = row.try_get("quiet_start")?;
        let end: Option<String> = row.try_get("quiet_end")?;
        let quiet_hours = match (start, end) {
            (Some(start), Some(end)) => Some(QuietWindow {
                start: parse_time(&start, "notification_preferences.quiet_start")?,
                end: parse_time(&end, "notification_preferences.quiet_end")?,
            }),
            _ => None,
        };
        let zone: Option<String> = row.try_get("time_zone")?;
        Ok(Some(NotificationPreferences {
            in_app: row.try_get("in_app")?,
            email: row.try_get("email")?,
            webhook: row.try_get("webhook")?,
            email_address: row
                .try_get::<Option<String>, _>("email_address")?
                .map(Email::from_trusted),
            quiet_hours,
            time_zone: zone
                .map(|z| TimeZone::parse(&z).map_err(|e| StoreError::Corrupt(e.to_string())))
                .transpose()?,
        }))
    }

    async fn set_notification_preferences(
        &self,
        user: UserId,
        preferences: &NotificationPreferences,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let p = preferences;
        sqlx::query(
            "INSERT INTO notification_preferences (user_id, in_app, email, webhook,
                 email_address, quiet_start, quiet_end, time_zone, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
             ON CONFLICT (user_id) DO UPDATE SET in_app = excluded.in_app,
                 email = excluded.email, webhook = excluded.webhook,
                 email_address = excluded.email_address,
                 quiet_start = excluded.quiet_start, quiet_end = excluded.quiet_end,
                 time_zone = excluded.time_zone, updated_at = excluded.updated_at",
        )
        .bind(user.as_uuid())
        .bind(p.in_app)
        .bind(p.email)
        .bind(p.webhook)
        .bind(p.email_address.as_ref().map(|e| e.as_str()))
        .bind(p.quiet_hours.map(|q| time_text(q.start)))
        .bind(p.quiet_hours.map(|q| time_text(q.end)))
        .bind(p.time_zone.map(|z| z.name()))
        .bind(at_micros(now))
        .execute(&self.pool)
        .await
        .map_err(pg_error)?;
        Ok(())
    }

    async fn create_webhook_endpoint(&self, endpoint: &WebhookEndpoint) -> Result<(), StoreError> {
        let e = endpoint;
        sqlx::query(
            "INSERT INTO webhook_endpoints (id, user_id, url, secret, description, enabled,
                 created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(e.id.as_uuid())
        .bind(e.user_id.as_uuid())
        .bind(&e.url)
        .bind(&e.secret)
        .bind(&e.description)
        .bind(e.enabled)
        .bind(at_micros(e.created_at))
        .execute(&self.pool)
        .await
        .map_err(pg_error)?;
        Ok(())
    }

    async fn webhook_endpoints(&self, user: UserId) -> Result<Vec<WebhookEndpoint>, StoreError> {
        let rows = sqlx::query(
            "SELECT * FROM webhook_endpoints WHERE user_id = $1 ORDER BY created_at, id",
        )
        .bind(user.as_uuid())
        .fetch_all(&self.pool)
        .await
        .map_err(pg_error)?;
        rows.iter()
            .map(|row| {
                endpoint_from_row(row, "")?
                    .ok_or_else(|| StoreError::Corrupt("webhook_endpoints.id: NULL".into()))
            })
            .collect()
    }

    async fn delete_webhook_endpoint(&self, user: UserId, id: WebhookId) -> Result<(), StoreError> {
        let deleted = sqlx::query("DELETE FROM webhook_endpoints WHERE id = $1 AND user_id = $2")
            .bind(id.as_uuid())
            .bind(user.as_uuid())
            .execute(&self.pool)
            .await
            .map_err(pg_error)?
            .rows_affected();
        if deleted == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    async fn notifications(
        &self,
        user: UserId,
        cursor: Option<(DateTime<Utc>, NotificationId)>,
        unread_only: bool,
        limit: u32,
    ) -> Result<NotificationPage, StoreError> {
        let mut sql = QueryBuilder::<Postgres>::new("SELECT * FROM notifications WHERE user_id = ");
        sql.push_bind(user.as_uuid());
        if unread_only {
            sql.push(" AND read_at IS NULL");
        }
        if let Some((at, id)) = cursor {
            sql.push(" AND (created_at, id) < (")
                .push_bind(at_micros(at))
                .push(", ")
                .push_bind(id.as_uuid())
                .push(")");
        }
        sql.push(" ORDER BY created_at DESC, id DESC LIMIT ")
            .push_bind(i64::from(limit) + 1);
        let rows = sql.build().fetch_all(&self.pool).await.map_err(pg_error)?;
        let mut items = rows
            .iter()
            .map(notification_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        let next_cursor = if items.len() > limit as usize {
            items.truncate(limit as usize);
            items.last().map(|n| (n.created_at, n.id))
        } else {
            None
        };
        let unread: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM notifications WHERE user_id = $1 AND read_at IS NULL",
        )
        .bind(user.as_uuid())
        .fetch_one(&self.pool)
        .await
        .map_err(pg_error)?;
        Ok(NotificationPage {
            items,
            next_cursor,
            unread,
        })
    }

    async fn mark_notification_read(
        &self,
        user: UserId,
        id: NotificationId,
        now: DateTime<Utc>,
    ) -> Result<Notification, StoreError> {
        let mut tx = self.begin().await?;
        sqlx::query(
            "UPDATE notifications SET read_at = $1
             WHERE id = $2 AND user_id = $3 AND read_at IS NULL",
        )
        .bind(at_micros(now))
        .bind(id.as_uuid())
        .bind(user.as_uuid())
        .execute(&mut *tx)
        .await
        .map_err(pg_error)?;
        let row = sqlx::query("SELECT * FROM notifications WHERE id = $1 AND user_id = $2")
            .bind(id.as_uuid())
            .bind(user.as_uuid())
            .fetch_optional(&mut *tx)
            .await
            .map_err(pg_error)?
            .ok_or(StoreError::NotFound)?;
        let notification = notification_from_row(&row)?;
        tx.commit().await.map_err(pg_error)?;
        Ok(notification)
    }

    async fn mark_all_notifications_read(
        &self,
        user: UserId,
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        let changed = sqlx::query(
            "UPDATE notifications SET read_at = $1 WHERE user_id = $2 AND read_at IS NULL",
        )
        .bind(at_micros(now))
        .bind(user.as_uuid())
        .execute(&self.pool)
        .await
        .map_err(pg_error)?
        .rows_affected();
        Ok(changed)
    }

    async fn next_delivery_at(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        // LEAST ignores NULLs: the earlier of the two, or whichever exists.
        sqlx::query_scalar(
            "SELECT LEAST(
                 (SELECT min(next_attempt_at) FROM deliveries WHERE status = 'pending'),
                 (SELECT min(lease_until) FROM deliveries WHERE status = 'sending'))",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(pg_error)
    }

    async fn claim_deliveries(
        &self,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
    ) -> Result<(uuid::Uuid, Vec<ClaimedDelivery>), StoreError> {
        let token = uuid::Uuid::now_v7();
        let (now, lease_until) = (at_micros(now), at_micros(lease_until));
        // PostgreSQL refuses FOR UPDATE inside UNION: lock the due and the expired rows in two
        // CTEs and update their union.
        let rows = sqlx::query(&format!(
            "WITH due AS (
                 SELECT id FROM deliveries WHERE status = 'pending' AND next_attempt_at <= $3
                 ORDER BY next_attempt_at LIMIT $4 FOR UPDATE SKIP LOCKED),
             expired AS (
                 SELECT id FROM deliveries WHERE status = 'sending' AND lease_until <= $3
                 ORDER BY lease_until LIMIT $4 FOR UPDATE SKIP LOCKED),
             claimed AS (
                 UPDATE deliveries SET status = 'sending', lease_token = $1, lease_until = $2,
                     updated_at = $3
                 WHERE id IN (SELECT id FROM due UNION SELECT id FROM expired)
                 RETURNING *)
             SELECT {DELIVERY_COLUMNS}, w.id AS w_id, w.user_id AS w_user_id, w.url AS w_url,
                    w.secret AS w_secret, w.description AS w_description,
                    w.enabled AS w_enabled, w.created_at AS w_created_at
             FROM claimed d LEFT JOIN webhook_endpoints w ON w.id = d.endpoint_id
             ORDER BY d.next_attempt_at, d.id"
        ))
        .bind(token)
        .bind(lease_until)
        .bind(now)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(pg_error)?;
        let claimed = rows
            .iter()
            .map(|row| {
                Ok(ClaimedDelivery {
                    delivery: delivery_from_row(row)?,
                    endpoint: endpoint_from_row(row, "w_")?,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok((token, claimed))
    }

    async fn record_delivery_attempt(
        &self,
        token: uuid::Uuid,
        id: DeliveryId,
        attempt: &DeliveryAttempt,
        outcome: &DeliveryOutcome,
        events: &[OutgoingEvent],
    ) -> Result<bool, StoreError> {
        let at = at_micros(attempt.at);
        let (status, next_at, sent_at, counts): (&str, _, _, i32) = match outcome {
            DeliveryOutcome::Sent => ("sent", None, Some(at), 1),
            DeliveryOutcome::Retry(next) => ("pending", Some(at_micros(*next)), None, 1),
            DeliveryOutcome::Deferred(next) => ("pending", Some(at_micros(*next)), None, 0),
            DeliveryOutcome::Dead => ("dead", None, None, 1),
        };
        let mut tx = self.begin().await?;
        let updated = sqlx::query(
            "UPDATE deliveries SET status = $1, attempts = attempts + $2,
                 next_attempt_at = COALESCE($3, next_attempt_at),
                 sent_at = COALESCE($4, sent_at), last_error = $5,
                 lease_token = NULL, lease_until = NULL, updated_at = $6
             WHERE id = $7 AND status = 'sending' AND lease_token = $8",
        )
        .bind(status)
        .bind(counts)
        .bind(next_at)
        .bind(sent_at)
        .bind(&attempt.error)
        .bind(at)
        .bind(id.as_uuid())
        .bind(token)
        .execute(&mut *tx)
        .await
        .map_err(pg_error)?
        .rows_affected();
        if updated == 0 {
            return Ok(false);
        }
        if counts == 1 {
            let number = i32::try_from(attempt.attempt).map_err(|_| {
                StoreError::Corrupt(format!("delivery_attempts.attempt: {}", attempt.attempt))
            })?;
            sqlx::query(
                "INSERT INTO delivery_attempts (delivery_id, attempt, at, outcome, error,
                     duration_ms) VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (delivery_id, attempt) DO NOTHING",
            )
            .bind(id.as_uuid())
            .bind(number)
            .bind(at)
            .bind(&attempt.outcome)
            .bind(&attempt.error)
            .bind(attempt.duration_ms)
            .execute(&mut *tx)
            .await
            .map_err(pg_error)?;
        }
        // Events last: the outbox lock is then held only until the commit.
        let seq = write_events(&mut tx, events, self.outbox_order).await?;
        tx.commit().await.map_err(pg_error)?;
        self.announce(seq);
        crate::announce_earliest(&self.delivery_changes, next_at);
        Ok(true)
    }

    async fn deliveries(
        &self,
        user: UserId,
        status: Option<DeliveryStatus>,
        limit: u32,
    ) -> Result<Vec<(Delivery, Vec<DeliveryAttempt>)>, StoreError> {
        let mut sql = QueryBuilder::<Postgres>::new(format!(
            "SELECT {DELIVERY_COLUMNS} FROM deliveries d WHERE d.user_id = "
        ));
        sql.push_bind(user.as_uuid());
        if let Some(status) = status {
            sql.push(" AND d.status = ").push_bind(status.as_str());
        }
        sql.push(" ORDER BY d.created_at DESC, d.id DESC LIMIT ")
            .push_bind(i64::from(limit));
        let rows = sql.build().fetch_all(&self.pool).await.map_err(pg_error)?;
        let deliveries = rows
            .iter()
            .map(delivery_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        let ids: Vec<uuid::Uuid> = deliveries.iter().map(|d| d.id.as_uuid()).collect();
        let attempt_rows = sqlx::query(
            "SELECT * FROM delivery_attempts WHERE delivery_id = ANY($1)
             ORDER BY delivery_id, attempt",
        )
        .bind(&ids)
        .fetch_all(&self.pool)
        .await
        .map_err(pg_error)?;
        let mut attempts: std::collections::HashMap<uuid::Uuid, Vec<DeliveryAttempt>> =
            std::collections::HashMap::new();
        for row in &attempt_rows {
            let delivery: uuid::Uuid = row.try_get("delivery_id")?;
            attempts
                .entry(delivery)
                .or_default()
                .push(attempt_from_row(row)?);
        }
        Ok(deliveries
            .into_iter()
            .map(|d| {
                let list = attempts.remove(&d.id.as_uuid()).unwrap_or_default();
                (d, list)
            })
            .collect())
    }

    async fn retry_delivery(
        &self,
        user: UserId,
        id: DeliveryId,
        now: DateTime<Utc>,
    ) -> Result<Delivery, StoreError> {
        let now = at_micros(now);
        let mut tx = self.begin().await?;
        let row = sqlx::query(&format!(
            "SELECT {DELIVERY_COLUMNS} FROM deliveries d WHERE d.id = $1 AND d.user_id = $2
             FOR UPDATE"
        ))
        .bind(id.as_uuid())
        .bind(user.as_uuid())
        .fetch_optional(&mut *tx)
        .await
        .map_err(pg_error)?
        .ok_or(StoreError::NotFound)?;
        let delivery = delivery_from_row(&row)?;
        if delivery.status != DeliveryStatus::Dead {
            return Err(StoreError::Conflict("delivery_not_dead"));
        }
        sqlx::query(
            "UPDATE deliveries SET status = 'pending', next_attempt_at = $1, updated_at = $1
             WHERE id = $2",
        )
        .bind(now)
        .bind(id.as_uuid())
        .execute(&mut *tx)
        .await
        .map_err(pg_error)?;
        tx.commit().await.map_err(pg_error)?;
        crate::announce_earliest(&self.delivery_changes, Some(now));
        Ok(Delivery {
            status: DeliveryStatus::Pending,
            next_attempt_at: now,
            updated_at: now,
            ..delivery
        })
    }

    async fn dead_delivery_count(&self) -> Result<i64, StoreError> {
        sqlx::query_scalar("SELECT count(*) FROM deliveries WHERE status = 'dead'")
            .fetch_one(&self.pool)
            .await
            .map_err(pg_error)
    }

    fn delivery_changes(&self) -> tokio::sync::watch::Receiver<Option<DateTime<Utc>>> {
        self.delivery_changes.subscribe()
    }
}
