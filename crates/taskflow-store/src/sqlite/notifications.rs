//! Notifications on SQLite: the feed, preferences, webhook endpoints and deliveries.

use async_trait::async_trait;
use chrono::{DateTime, NaiveTime, Utc};
use sqlx::sqlite::SqliteRow;
use sqlx::{QueryBuilder, Row, Sqlite, SqliteConnection};
use taskflow_domain::events::OutgoingEvent;
use taskflow_domain::notification::{
    Delivery, DeliveryAttempt, DeliveryStatus, Notification, NotificationPreferences, QuietWindow,
    WebhookEndpoint,
};
use taskflow_domain::{DeliveryId, Email, NotificationId, TimeZone, UserId, WebhookId};

use super::SqliteStore;
use super::events::write_events;
use super::rows::{instant, micros, optional_instant, parse_id};
use crate::error::StoreError;
use crate::{
    ClaimedDelivery, DeliveryOutcome, NotificationPage, NotificationPlan, NotificationStore,
};

/// Stores what the notifier decided for one event inside the caller's transaction. Returns the
/// newest outbox seq written and the earliest new delivery instant.
pub(super) async fn apply_plan(
    conn: &mut SqliteConnection,
    plan: &NotificationPlan,
) -> Result<(Option<i64>, Option<DateTime<Utc>>), StoreError> {
    let mut seq = None;
    if let Some(n) = &plan.notification {
        let inserted = sqlx::query(
            "INSERT INTO notifications (id, user_id, kind, title, body, task_id, reminder_id,
                                        dedup_key, created_at, read_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, NULL)
             ON CONFLICT (user_id, dedup_key) DO NOTHING",
        )
        .bind(n.id.to_string())
        .bind(n.user_id.to_string())
        .bind(&n.kind)
        .bind(&n.title)
        .bind(&n.body)
        .bind(n.task_id.map(|t| t.to_string()))
        .bind(n.reminder_id.map(|r| r.to_string()))
        .bind(&n.dedup_key)
        .bind(micros(n.created_at))
        .execute(&mut *conn)
        .await?
        .rows_affected()
            == 1;
        if inserted {
            seq = write_events(conn, &plan.events).await?;
        }
    }
    let mut earliest: Option<DateTime<Utc>> = None;
    for d in &plan.deliveries {
        let inserted = sqlx::query(
            "INSERT INTO deliveries (id, user_id, reminder_id, task_id, channel, endpoint_id,
                                     idempotency_key, status, payload, attempts, next_attempt_at,
                                     created_at, updated_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 0, ?, ?, ?)
             ON CONFLICT (idempotency_key) DO NOTHING",
        )
        .bind(d.id.to_string())
        .bind(d.user_id.to_string())
        .bind(d.reminder_id.to_string())
        .bind(d.task_id.to_string())
        .bind(&d.channel)
        .bind(d.endpoint_id.map(|e| e.to_string()))
        .bind(&d.idempotency_key)
        .bind(d.status.as_str())
        .bind(&d.payload)
        .bind(micros(d.next_attempt_at))
        .bind(micros(d.created_at))
        .bind(micros(d.updated_at))
        .execute(&mut *conn)
        .await?
        .rows_affected()
            == 1;
        if inserted && d.status == DeliveryStatus::Pending {
            earliest = Some(earliest.map_or(d.next_attempt_at, |e| e.min(d.next_attempt_at)));
        }
    }
    Ok((seq, earliest))
}

fn notification_from_row(row: &SqliteRow) -> Result<Notification, StoreError> {
    let id: String = row.try_get("id")?;
    let user_id: String = row.try_get("user_id")?;
    let task_id: Option<String> = row.try_get("task_id")?;
    let reminder_id: Option<String> = row.try_get("reminder_id")?;
    Ok(Notification {
        id: parse_id(&id, "notifications.id")?,
        user_id: parse_id(&user_id, "notifications.user_id")?,
        kind: row.try_get("kind")?,
        title: row.try_get("title")?,
        body: row.try_get("body")?,
        task_id: task_id
            .map(|t| parse_id(&t, "notifications.task_id"))
            .transpose()?,
        reminder_id: reminder_id
            .map(|r| parse_id(&r, "notifications.reminder_id"))
            .transpose()?,
        dedup_key: row.try_get("dedup_key")?,
        created_at: instant(row.try_get("created_at")?, "notifications.created_at")?,
        read_at: optional_instant(row.try_get("read_at")?, "notifications.read_at")?,
    })
}

fn endpoint_from_row(row: &SqliteRow) -> Result<WebhookEndpoint, StoreError> {
    let id: String = row.try_get("id")?;
    let user_id: String = row.try_get("user_id")?;
    Ok(WebhookEndpoint {
        id: parse_id(&id, "webhook_endpoints.id")?,
        user_id: parse_id(&user_id, "webhook_endpoints.user_id")?,
        url: row.try_get("url")?,
        secret: row.try_get("secret")?,
        description: row.try_get("description")?,
        enabled: row.try_get("enabled")?,
        created_at: instant(row.try_get("created_at")?, "webhook_endpoints.created_at")?,
    })
}

fn delivery_from_row(row: &SqliteRow) -> Result<Delivery, StoreError> {
    let id: String = row.try_get("id")?;
    let user_id: String = row.try_get("user_id")?;
    let reminder_id: String = row.try_get("reminder_id")?;
    let task_id: String = row.try_get("task_id")?;
    let endpoint_id: Option<String> = row.try_get("endpoint_id")?;
    let status: String = row.try_get("status")?;
    let attempts: i64 = row.try_get("attempts")?;
    Ok(Delivery {
        id: parse_id(&id, "deliveries.id")?,
        user_id: parse_id(&user_id, "deliveries.user_id")?,
        reminder_id: parse_id(&reminder_id, "deliveries.reminder_id")?,
        task_id: parse_id(&task_id, "deliveries.task_id")?,
        channel: row.try_get("channel")?,
        endpoint_id: endpoint_id
            .map(|e| parse_id(&e, "deliveries.endpoint_id"))
            .transpose()?,
        idempotency_key: row.try_get("idempotency_key")?,
        status: status.parse().map_err(StoreError::Corrupt)?,
        payload: row.try_get("payload")?,
        attempts: u32::try_from(attempts)
            .map_err(|_| StoreError::Corrupt(format!("deliveries.attempts: {attempts}")))?,
        next_attempt_at: instant(
            row.try_get("next_attempt_at")?,
            "deliveries.next_attempt_at",
        )?,
        last_error: row.try_get("last_error")?,
        created_at: instant(row.try_get("created_at")?, "deliveries.created_at")?,
        updated_at: instant(row.try_get("updated_at")?, "deliveries.updated_at")?,
        sent_at: optional_instant(row.try_get("sent_at")?, "deliveries.sent_at")?,
    })
}

fn attempt_from_row(row: &SqliteRow) -> Result<DeliveryAttempt, StoreError> {
    let attempt: i64 = row.try_get("attempt")?;
    Ok(DeliveryAttempt {
        attempt: u32::try_from(attempt)
            .map_err(|_| StoreError::Corrupt(format!("delivery_attempts.attempt: {attempt}")))?,
        at: instant(row.try_get("at")?, "delivery_attempts.at")?,
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

#[async_trait]
impl NotificationStore for SqliteStore {
    async fn notification_preferences(
        &self,
        user: UserId,
    ) -> Result<Option<NotificationPreferences>, StoreError> {
        let row = sqlx::query("SELECT * FROM notification_preferences WHERE user_id = ?")
            .bind(user.to_string())
            .fetch_optional(&self.reader)
            .await
            .map_err(StoreError::from_sqlx)?;
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
        let p = preferences.clone();
        self.writes
            .write(move |conn| {
                Box::pin(async move {
                    sqlx::query(
                        "INSERT INTO notification_preferences (user_id, in_app, email, webhook,
                             email_address, quiet_start, quiet_end, time_zone, updated_at)
                         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
                         ON CONFLICT (user_id) DO UPDATE SET in_app = excluded.in_app,
                             email = excluded.email, webhook = excluded.webhook,
                             email_address = excluded.email_address,
                             quiet_start = excluded.quiet_start, quiet_end = excluded.quiet_end,
                             time_zone = excluded.time_zone, updated_at = excluded.updated_at",
                    )
                    .bind(user.to_string())
                    .bind(p.in_app)
                    .bind(p.email)
                    .bind(p.webhook)
                    .bind(p.email_address.as_ref().map(|e| e.as_str().to_owned()))
                    .bind(p.quiet_hours.map(|q| time_text(q.start)))
                    .bind(p.quiet_hours.map(|q| time_text(q.end)))
                    .bind(p.time_zone.map(|z| z.name()))
                    .bind(micros(now))
                    .execute(&mut *conn)
                    .await?;
                    Ok(((), None))
                })
            })
            .await
    }

    async fn create_webhook_endpoint(&self, endpoint: &WebhookEndpoint) -> Result<(), StoreError> {
        let e = endpoint.clone();
        self.writes
            .write(move |conn| {
                Box::pin(async move {
                    sqlx::query(
                        "INSERT INTO webhook_endpoints (id, user_id, url, secret, description,
                             enabled, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    )
                    .bind(e.id.to_string())
                    .bind(e.user_id.to_string())
                    .bind(&e.url)
                    .bind(&e.secret)
                    .bind(&e.description)
                    .bind(e.enabled)
                    .bind(micros(e.created_at))
                    .execute(&mut *conn)
                    .await?;
                    Ok(((), None))
                })
            })
            .await
    }

    async fn webhook_endpoints(&self, user: UserId) -> Result<Vec<WebhookEndpoint>, StoreError> {
        let rows = sqlx::query(
            "SELECT * FROM webhook_endpoints WHERE user_id = ? ORDER BY created_at, id",
        )
        .bind(user.to_string())
        .fetch_all(&self.reader)
        .await
        .map_err(StoreError::from_sqlx)?;
        rows.iter().map(endpoint_from_row).collect()
    }

    async fn delete_webhook_endpoint(&self, user: UserId, id: WebhookId) -> Result<(), StoreError> {
        self.writes
            .write(move |conn| {
                Box::pin(async move {
                    let deleted =
                        sqlx::query("DELETE FROM webhook_endpoints WHERE id = ? AND user_id = ?")
                            .bind(id.to_string())
                            .bind(user.to_string())
                            .execute(&mut *conn)
                            .await?
                            .rows_affected();
                    if deleted == 0 {
                        return Err(StoreError::NotFound);
                    }
                    Ok(((), None))
                })
            })
            .await
    }

    async fn notifications(
        &self,
        user: UserId,
        cursor: Option<(DateTime<Utc>, NotificationId)>,
        unread_only: bool,
        limit: u32,
    ) -> Result<NotificationPage, StoreError> {
        let mut sql = QueryBuilder::<Sqlite>::new("SELECT * FROM notifications WHERE user_id = ");
        sql.push_bind(user.to_string());
        if unread_only {
            sql.push(" AND read_at IS NULL");
        }
        if let Some((at, id)) = cursor {
            sql.push(" AND (created_at, id) < (")
                .push_bind(micros(at))
                .push(", ")
                .push_bind(id.to_string())
                .push(")");
        }
        sql.push(" ORDER BY created_at DESC, id DESC LIMIT ")
            .push_bind(i64::from(limit) + 1);
        let rows = sql
            .build()
            .fetch_all(&self.reader)
            .await
            .map_err(StoreError::from_sqlx)?;
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
            "SELECT COUNT(*) FROM notifications WHERE user_id = ? AND read_at IS NULL",
        )
        .bind(user.to_string())
        .fetch_one(&self.reader)
        .await
        .map_err(StoreError::from_sqlx)?;
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
        self.writes
            .write(move |conn| {
                Box::pin(async move {
                    sqlx::query(
                        "UPDATE notifications SET read_at = ?
                         WHERE id = ? AND user_id = ? AND read_at IS NULL",
                    )
                    .bind(micros(now))
                    .bind(id.to_string())
                    .bind(user.to_string())
                    .execute(&mut *conn)
                    .await?;
                    let row =
                        sqlx::query("SELECT * FROM notifications WHERE id = ? AND user_id = ?")
                            .bind(id.to_string())
                            .bind(user.to_string())
                            .fetch_optional(&mut *conn)
                            .await?
                            .ok_or(StoreError::NotFound)?;
                    Ok((notification_from_row(&row)?, None))
                })
            })
            .await
    }

    async fn mark_all_notifications_read(
        &self,
        user: UserId,
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        self.writes
            .write(move |conn| {
                Box::pin(async move {
                    let changed = sqlx::query(
                        "UPDATE notifications SET read_at = ? WHERE user_id = ? AND read_at IS NULL",
                    )
                    .bind(micros(now))
                    .bind(user.to_string())
                    .execute(&mut *conn)
                    .await?
                    .rows_affected();
                    Ok((changed, None))
                })
            })
            .await
    }

    async fn next_delivery_at(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        let at: Option<i64> = sqlx::query_scalar(
            "SELECT MIN(at) FROM (
                 SELECT MIN(next_attempt_at) AS at FROM deliveries WHERE status = 'pending'
                 UNION ALL
                 SELECT MIN(lease_until) AS at FROM deliveries WHERE status = 'sending')",
        )
        .fetch_one(&self.reader)
        .await
        .map_err(StoreError::from_sqlx)?;
        at.map(|v| instant(v, "deliveries.next_attempt_at"))
            .transpose()
    }

    async fn claim_deliveries(
        &self,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
    ) -> Result<(uuid::Uuid, Vec<ClaimedDelivery>), StoreError> {
        let token = uuid::Uuid::now_v7();
        self.writes
            .write(move |conn| {
                Box::pin(async move {
                    sqlx::query(
                        "UPDATE deliveries SET status = 'sending', lease_token = ?1,
                             lease_until = ?2, updated_at = ?3
                         WHERE id IN (SELECT id FROM deliveries WHERE status = 'pending'
                                          AND next_attempt_at <= ?3
                                          ORDER BY next_attempt_at LIMIT ?4)
                            OR id IN (SELECT id FROM deliveries WHERE status = 'sending'
                                          AND lease_until <= ?3 ORDER BY lease_until LIMIT ?4)",
                    )
                    .bind(token.to_string())
                    .bind(micros(lease_until))
                    .bind(micros(now))
                    .bind(i64::from(limit))
                    .execute(&mut *conn)
                    .await?;
                    let rows = sqlx::query(
                        "SELECT d.*, w.id AS w_id, w.user_id AS w_user_id, w.url AS w_url,
                                w.secret AS w_secret, w.description AS w_description,
                                w.enabled AS w_enabled, w.created_at AS w_created_at
                         FROM deliveries d LEFT JOIN webhook_endpoints w ON w.id = d.endpoint_id
                         WHERE d.status = 'sending' AND d.lease_until = ? AND d.lease_token = ?
                         ORDER BY d.next_attempt_at, d.id",
                    )
                    .bind(micros(lease_until))
                    .bind(token.to_string())
                    .fetch_all(&mut *conn)
                    .await?;
                    let mut claimed = Vec::with_capacity(rows.len());
                    for row in &rows {
                        let endpoint = match row.try_get::<Option<String>, _>("w_id")? {
                            Some(id) => {
                                let user_id: String = row.try_get("w_user_id")?;
                                Some(WebhookEndpoint {
                                    id: parse_id(&id, "webhook_endpoints.id")?,
                                    user_id: parse_id(&user_id, "webhook_endpoints.user_id")?,
                                    url: row.try_get("w_url")?,
                                    secret: row.try_get("w_secret")?,
                                    description: row.try_get("w_description")?,
                                    enabled: row.try_get("w_enabled")?,
                                    created_at: instant(
                                        row.try_get("w_created_at")?,
                                        "webhook_endpoints.created_at",
                                    )?,
                                })
                            }
                            None => None,
                        };
                        claimed.push(ClaimedDelivery {
                            delivery: delivery_from_row(row)?,
                            endpoint,
                        });
                    }
                    Ok(((token, claimed), None))
                })
            })
            .await
    }

    async fn record_delivery_attempt(
        &self,
        token: uuid::Uuid,
        id: DeliveryId,
        attempt: &DeliveryAttempt,
        outcome: &DeliveryOutcome,
        events: &[OutgoingEvent],
    ) -> Result<bool, StoreError> {
        let (attempt, outcome, events) = (attempt.clone(), outcome.clone(), events.to_vec());
        let next = match &outcome {
            DeliveryOutcome::Retry(at) | DeliveryOutcome::Deferred(at) => Some(*at),
            _ => None,
        };
        let held = self
            .writes
            .write(move |conn| {
                Box::pin(async move {
                    let (status, next_at, sent_at, counts) = match &outcome {
                        DeliveryOutcome::Sent => ("sent", None, Some(attempt.at), 1),
                        DeliveryOutcome::Retry(at) => ("pending", Some(*at), None, 1),
                        DeliveryOutcome::Deferred(at) => ("pending", Some(*at), None, 0),
                        DeliveryOutcome::Dead => ("dead", None, None, 1),
                    };
                    let updated = sqlx::query(
                        "UPDATE deliveries SET status = ?, attempts = attempts + ?,
                             next_attempt_at = COALESCE(?, next_attempt_at),
                             sent_at = COALESCE(?, sent_at), last_error = ?,
                             lease_token = NULL, lease_until = NULL, updated_at = ?
                         WHERE id = ? AND status = 'sending' AND lease_token = ?",
                    )
                    .bind(status)
                    .bind(counts)
                    .bind(next_at.map(micros))
                    .bind(sent_at.map(micros))
                    .bind(&attempt.error)
                    .bind(micros(attempt.at))
                    .bind(id.to_string())
                    .bind(token.to_string())
                    .execute(&mut *conn)
                    .await?
                    .rows_affected();
                    if updated == 0 {
                        return Ok((false, None));
                    }
                    if counts == 1 {
                        sqlx::query(
                            "INSERT INTO delivery_attempts (delivery_id, attempt, at, outcome,
                                 error, duration_ms) VALUES (?, ?, ?, ?, ?, ?)
                             ON CONFLICT (delivery_id, attempt) DO NOTHING",
                        )
                        .bind(id.to_string())
                        .bind(i64::from(attempt.attempt))
                        .bind(micros(attempt.at))
                        .bind(&attempt.outcome)
                        .bind(&attempt.error)
                        .bind(attempt.duration_ms)
                        .execute(&mut *conn)
                        .await?;
                    }
                    let seq = write_events(conn, &events).await?;
                    Ok((true, seq))
                })
            })
            .await?;
        if held {
            crate::announce_earliest(&self.delivery_changes, next);
        }
        Ok(held)
    }

    async fn deliveries(
        &self,
        user: UserId,
        status: Option<DeliveryStatus>,
        limit: u32,
    ) -> Result<Vec<(Delivery, Vec<DeliveryAttempt>)>, StoreError> {
        let mut sql = QueryBuilder::<Sqlite>::new("SELECT * FROM deliveries WHERE user_id = ");
        sql.push_bind(user.to_string());
        if let Some(status) = status {
            sql.push(" AND status = ").push_bind(status.as_str());
        }
        sql.push(" ORDER BY created_at DESC, id DESC LIMIT ")
            .push_bind(i64::from(limit));
        let rows = sql
            .build()
            .fetch_all(&self.reader)
            .await
            .map_err(StoreError::from_sqlx)?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            let delivery = delivery_from_row(row)?;
            let attempts = sqlx::query(
                "SELECT * FROM delivery_attempts WHERE delivery_id = ? ORDER BY attempt",
            )
            .bind(delivery.id.to_string())
            .fetch_all(&self.reader)
            .await
            .map_err(StoreError::from_sqlx)?
            .iter()
            .map(attempt_from_row)
            .collect::<Result<Vec<_>, _>>()?;
            out.push((delivery, attempts));
        }
        Ok(out)
    }

    async fn retry_delivery(
        &self,
        user: UserId,
        id: DeliveryId,
        now: DateTime<Utc>,
    ) -> Result<Delivery, StoreError> {
        let delivery = self
            .writes
            .write(move |conn| {
                Box::pin(async move {
                    let row = sqlx::query("SELECT * FROM deliveries WHERE id = ? AND user_id = ?")
                        .bind(id.to_string())
                        .bind(user.to_string())
                        .fetch_optional(&mut *conn)
                        .await?
                        .ok_or(StoreError::NotFound)?;
                    let delivery = delivery_from_row(&row)?;
                    if delivery.status != DeliveryStatus::Dead {
                        return Err(StoreError::Conflict("delivery_not_dead"));
                    }
                    sqlx::query(
                        "UPDATE deliveries SET status = 'pending', next_attempt_at = ?,
                             updated_at = ? WHERE id = ?",
                    )
                    .bind(micros(now))
                    .bind(micros(now))
                    .bind(id.to_string())
                    .execute(&mut *conn)
                    .await?;
                    Ok((
                        Delivery {
                            status: DeliveryStatus::Pending,
                            next_attempt_at: now,
                            updated_at: now,
                            ..delivery
                        },
                        None,
                    ))
                })
            })
            .await?;
        crate::announce_earliest(&self.delivery_changes, Some(now));
        Ok(delivery)
    }

    async fn dead_delivery_count(&self) -> Result<i64, StoreError> {
        sqlx::query_scalar("SELECT COUNT(*) FROM deliveries WHERE status = 'dead'")
            .fetch_one(&self.reader)
            .await
            .map_err(StoreError::from_sqlx)
    }

    fn delivery_changes(&self) -> tokio::sync::watch::Receiver<Option<DateTime<Utc>>> {
        self.delivery_changes.subscribe()
    }
}
