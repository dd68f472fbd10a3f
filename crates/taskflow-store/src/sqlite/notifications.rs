//! Notifications on SQLite: the feed, preferences, webhook endpoints and deliveries.

use async_trait::async_trait;
use chrono::{DateTime, NaiveTime, Utc};
use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension as _, Row, params};
use taskflow_domain::events::OutgoingEvent;
use taskflow_domain::notification::{
    Delivery, DeliveryAttempt, DeliveryStatus, Notification, NotificationPreferences, QuietWindow,
    WebhookEndpoint,
};
use taskflow_domain::{DeliveryId, Email, NotificationId, TimeZone, UserId, WebhookId};

use super::SqliteStore;
use super::events::write_events;
use super::rows::{instant, micros, optional_instant, parse_id};
use super::tasks::{SqlBuilder, query_all};
use crate::error::StoreError;
use crate::{
    ClaimedDelivery, DeliveryOutcome, NotificationPage, NotificationPlan, NotificationStore,
};

/// Stores what the notifier decided for one event inside the caller's transaction. Returns the
/// newest outbox seq written and the earliest new delivery instant.
pub(super) fn apply_plan(
    conn: &Connection,
    plan: &NotificationPlan,
) -> Result<(Option<i64>, Option<DateTime<Utc>>), StoreError> {
    let mut seq = None;
    if let Some(n) = &plan.notification {
        let inserted =
            conn.prepare_cached(
                "INSERT INTO notifications (id, user_id, kind, title, body, task_id, reminder_id,
                                            dedup_key, created_at, read_at)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, NULL)
                 ON CONFLICT (user_id, dedup_key) DO NOTHING",
            )?
            .execute(params![
                n.id.to_string(),
                n.user_id.to_string(),
                n.kind,
                n.title,
                n.body,
                n.task_id.map(|t| t.to_string()),
                n.reminder_id.map(|r| r.to_string()),
                n.dedup_key,
                micros(n.created_at),
            ])? == 1;
        if inserted {
            seq = write_events(conn, &plan.events)?;
        }
    }
    let mut earliest: Option<DateTime<Utc>> = None;
    for d in &plan.deliveries {
        let inserted = conn
            .prepare_cached(
                "INSERT INTO deliveries (id, user_id, reminder_id, task_id, channel, endpoint_id,
                                         idempotency_key, status, payload, attempts, next_attempt_at,
                                         created_at, updated_at)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 0, ?, ?, ?)
                 ON CONFLICT (idempotency_key) DO NOTHING",
            )?
            .execute(params![
                d.id.to_string(),
                d.user_id.to_string(),
                d.reminder_id.to_string(),
                d.task_id.to_string(),
                d.channel,
                d.endpoint_id.map(|e| e.to_string()),
                d.idempotency_key,
                d.status.as_str(),
                d.payload,
                micros(d.next_attempt_at),
                micros(d.created_at),
                micros(d.updated_at),
            ])?
            == 1;
        if inserted && d.status == DeliveryStatus::Pending {
            earliest = Some(earliest.map_or(d.next_attempt_at, |e| e.min(d.next_attempt_at)));
        }
    }
    Ok((seq, earliest))
}

fn notification_from_row(row: &Row<'_>) -> Result<Notification, StoreError> {
    let id: String = row.get("id")?;
    let user_id: String = row.get("user_id")?;
    let task_id: Option<String> = row.get("task_id")?;
    let reminder_id: Option<String> = row.get("reminder_id")?;
    Ok(Notification {
        id: parse_id(&id, "notifications.id")?,
        user_id: parse_id(&user_id, "notifications.user_id")?,
        kind: row.get("kind")?,
        title: row.get("title")?,
        body: row.get("body")?,
        task_id: task_id
            .map(|t| parse_id(&t, "notifications.task_id"))
            .transpose()?,
        reminder_id: reminder_id
            .map(|r| parse_id(&r, "notifications.reminder_id"))
            .transpose()?,
        dedup_key: row.get("dedup_key")?,
        created_at: instant(row.get("created_at")?, "notifications.created_at")?,
        read_at: optional_instant(row.get("read_at")?, "notifications.read_at")?,
    })
}

fn endpoint_from_row(row: &Row<'_>) -> Result<WebhookEndpoint, StoreError> {
    let id: String = row.get("id")?;
    let user_id: String = row.get("user_id")?;
    Ok(WebhookEndpoint {
        id: parse_id(&id, "webhook_endpoints.id")?,
        user_id: parse_id(&user_id, "webhook_endpoints.user_id")?,
        url: row.get("url")?,
        secret: row.get("secret")?,
        description: row.get("description")?,
        enabled: row.get("enabled")?,
        created_at: instant(row.get("created_at")?, "webhook_endpoints.created_at")?,
    })
}

fn delivery_from_row(row: &Row<'_>) -> Result<Delivery, StoreError> {
    let id: String = row.get("id")?;
    let user_id: String = row.get("user_id")?;
    let reminder_id: String = row.get("reminder_id")?;
    let task_id: String = row.get("task_id")?;
    let endpoint_id: Option<String> = row.get("endpoint_id")?;
    let status: String = row.get("status")?;
    let attempts: i64 = row.get("attempts")?;
    Ok(Delivery {
        id: parse_id(&id, "deliveries.id")?,
        user_id: parse_id(&user_id, "deliveries.user_id")?,
        reminder_id: parse_id(&reminder_id, "deliveries.reminder_id")?,
        task_id: parse_id(&task_id, "deliveries.task_id")?,
        channel: row.get("channel")?,
        endpoint_id: endpoint_id
            .map(|e| parse_id(&e, "deliveries.endpoint_id"))
            .transpose()?,
        idempotency_key: row.get("idempotency_key")?,
        status: status.parse().map_err(StoreError::Corrupt)?,
        payload: row.get("payload")?,
        attempts: u32::try_from(attempts)
            .map_err(|_| StoreError::Corrupt(format!("deliveries.attempts: {attempts}")))?,
        next_attempt_at: instant(row.get("next_attempt_at")?, "deliveries.next_attempt_at")?,
        last_error: row.get("last_error")?,
        created_at: instant(row.get("created_at")?, "deliveries.created_at")?,
        updated_at: instant(row.get("updated_at")?, "deliveries.updated_at")?,
        sent_at: optional_instant(row.get("sent_at")?, "deliveries.sent_at")?,
    })
}

fn attempt_from_row(row: &Row<'_>) -> Result<DeliveryAttempt, StoreError> {
    let attempt: i64 = row.get("attempt")?;
    Ok(DeliveryAttempt {
        attempt: u32::try_from(attempt)
            .map_err(|_| StoreError::Corrupt(format!("delivery_attempts.attempt: {attempt}")))?,
        at: instant(row.get("at")?, "delivery_attempts.at")?,
        outcome: row.get("outcome")?,
        error: row.get("error")?,
        duration_ms: row.get("duration_ms")?,
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
        self.read(move |conn| {
            conn.prepare_cached("SELECT * FROM notification_preferences WHERE user_id = ?")?
                .query_row([user.to_string()], |row| Ok(preferences_from_row(row)))
                .optional()?
                .transpose()
        })
        .await
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
                conn.prepare_cached(
                    "INSERT INTO notification_preferences (user_id, in_app, email, webhook,
                         email_address, quiet_start, quiet_end, time_zone, updated_at)
                     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
                     ON CONFLICT (user_id) DO UPDATE SET in_app = excluded.in_app,
                         email = excluded.email, webhook = excluded.webhook,
                         email_address = excluded.email_address,
                         quiet_start = excluded.quiet_start, quiet_end = excluded.quiet_end,
                         time_zone = excluded.time_zone, updated_at = excluded.updated_at",
                )?
                .execute(params![
                    user.to_string(),
                    p.in_app,
                    p.email,
                    p.webhook,
                    p.email_address.as_ref().map(|e| e.as_str().to_owned()),
                    p.quiet_hours.map(|q| time_text(q.start)),
                    p.quiet_hours.map(|q| time_text(q.end)),
                    p.time_zone.map(|z| z.name()),
                    micros(now),
                ])?;
                Ok(((), None))
            })
            .await
    }

    async fn create_webhook_endpoint(&self, endpoint: &WebhookEndpoint) -> Result<(), StoreError> {
        let e = endpoint.clone();
        self.writes
            .write(move |conn| {
                conn.prepare_cached(
                    "INSERT INTO webhook_endpoints (id, user_id, url, secret, description,
                         enabled, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                )?
                .execute(params![
                    e.id.to_string(),
                    e.user_id.to_string(),
                    e.url,
                    e.secret,
                    e.description,
                    e.enabled,
                    micros(e.created_at),
                ])?;
                Ok(((), None))
            })
            .await
    }

    async fn webhook_endpoints(&self, user: UserId) -> Result<Vec<WebhookEndpoint>, StoreError> {
        self.read(move |conn| {
            query_all(
                conn,
                "SELECT * FROM webhook_endpoints WHERE user_id = ? ORDER BY created_at, id",
                &[Value::Text(user.to_string())],
                endpoint_from_row,
            )
        })
        .await
    }

    async fn delete_webhook_endpoint(&self, user: UserId, id: WebhookId) -> Result<(), StoreError> {
        self.writes
            .write(move |conn| {
                let deleted = conn
                    .prepare_cached("DELETE FROM webhook_endpoints WHERE id = ? AND user_id = ?")?
                    .execute([id.to_string(), user.to_string()])?;
                if deleted == 0 {
                    return Err(StoreError::NotFound);
                }
                Ok(((), None))
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
        let mut sql = SqlBuilder::new("SELECT * FROM notifications WHERE user_id = ");
        sql.bind(user.to_string());
        if unread_only {
            sql.push(" AND read_at IS NULL");
        }
        if let Some((at, id)) = cursor {
            sql.push(" AND (created_at, id) < (")
                .bind(micros(at))
                .push(", ")
                .bind(id.to_string())
                .push(")");
        }
        sql.push(" ORDER BY created_at DESC, id DESC LIMIT ")
            .bind(i64::from(limit) + 1);
        let (mut items, unread) = self
            .read(move |conn| {
                let items = query_all(conn, &sql.sql, &sql.values, notification_from_row)?;
                let unread: i64 = conn
                    .prepare_cached(
                        "SELECT COUNT(*) FROM notifications WHERE user_id = ? AND read_at IS NULL",
                    )?
                    .query_row([user.to_string()], |row| row.get(0))?;
                Ok((items, unread))
            })
            .await?;
        let next_cursor = if items.len() > limit as usize {
            items.truncate(limit as usize);
            items.last().map(|n| (n.created_at, n.id))
        } else {
            None
        };
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
                conn.prepare_cached(
                    "UPDATE notifications SET read_at = ?
                     WHERE id = ? AND user_id = ? AND read_at IS NULL",
                )?
                .execute(params![
                    micros(now),
                    id.to_string(),
                    user.to_string()
                ])?;
                let notification = conn
                    .prepare_cached("SELECT * FROM notifications WHERE id = ? AND user_id = ?")?
                    .query_row([id.to_string(), user.to_string()], |row| {
                        Ok(notification_from_row(row))
                    })
                    .optional()?
                    .ok_or(StoreError::NotFound)??;
                Ok((notification, None))
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
                let changed = conn
                    .prepare_cached(
                        "UPDATE notifications SET read_at = ? WHERE user_id = ? AND read_at IS NULL",
                    )?
                    .execute(params![micros(now), user.to_string()])?;
                Ok((changed as u64, None))
            })
            .await
    }

    async fn next_delivery_at(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        let at: Option<i64> = self
            .read(|conn| {
                Ok(conn
                    .prepare_cached(
                        "SELECT MIN(at) FROM (
                             SELECT MIN(next_attempt_at) AS at FROM deliveries WHERE status = 'pending'
                             UNION ALL
                             SELECT MIN(lease_until) AS at FROM deliveries WHERE status = 'sending')",
                    )?
                    .query_row([], |row| row.get(0))?)
            })
            .await?;
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
                conn.prepare_cached(
                    "UPDATE deliveries SET status = 'sending', lease_token = ?1,
                         lease_until = ?2, updated_at = ?3
                     WHERE id IN (SELECT id FROM deliveries WHERE status = 'pending'
                                      AND next_attempt_at <= ?3
                                      ORDER BY next_attempt_at LIMIT ?4)
                        OR id IN (SELECT id FROM deliveries WHERE status = 'sending'
                                      AND lease_until <= ?3 ORDER BY lease_until LIMIT ?4)",
                )?
                .execute(params![
                    token.to_string(),
                    micros(lease_until),
                    micros(now),
                    i64::from(limit)
                ])?;
                let claimed = query_all(
                    conn,
                    "SELECT d.*, w.id AS w_id, w.user_id AS w_user_id, w.url AS w_url,
                            w.secret AS w_secret, w.description AS w_description,
                            w.enabled AS w_enabled, w.created_at AS w_created_at
                     FROM deliveries d LEFT JOIN webhook_endpoints w ON w.id = d.endpoint_id
                     WHERE d.status = 'sending' AND d.lease_until = ? AND d.lease_token = ?
                     ORDER BY d.next_attempt_at, d.id",
                    &[
                        Value::Integer(micros(lease_until)),
                        Value::Text(token.to_string()),
                    ],
                    |row| {
                        let endpoint = match row.get::<_, Option<String>>("w_id")? {
                            Some(id) => {
                                let user_id: String = row.get("w_user_id")?;
                                Some(WebhookEndpoint {
                                    id: parse_id(&id, "webhook_endpoints.id")?,
                                    user_id: parse_id(&user_id, "webhook_endpoints.user_id")?,
                                    url: row.get("w_url")?,
                                    secret: row.get("w_secret")?,
                                    description: row.get("w_description")?,
                                    enabled: row.get("w_enabled")?,
                                    created_at: instant(
                                        row.get("w_created_at")?,
                                        "webhook_endpoints.created_at",
                                    )?,
                                })
                            }
                            None => None,
                        };
                        Ok(ClaimedDelivery {
                            delivery: delivery_from_row(row)?,
                            endpoint,
                        })
                    },
                )?;
                Ok(((token, claimed), None))
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
                let (status, next_at, sent_at, counts) = match &outcome {
                    DeliveryOutcome::Sent => ("sent", None, Some(attempt.at), 1),
                    DeliveryOutcome::Retry(at) => ("pending", Some(*at), None, 1),
                    DeliveryOutcome::Deferred(at) => ("pending", Some(*at), None, 0),
                    DeliveryOutcome::Dead => ("dead", None, None, 1),
                };
                let updated = conn
                    .prepare_cached(
                        "UPDATE deliveries SET status = ?, attempts = attempts + ?,
                             next_attempt_at = COALESCE(?, next_attempt_at),
                             sent_at = COALESCE(?, sent_at), last_error = ?,
                             lease_token = NULL, lease_until = NULL, updated_at = ?
                         WHERE id = ? AND status = 'sending' AND lease_token = ?",
                    )?
                    .execute(params![
                        status,
                        counts,
                        next_at.map(micros),
                        sent_at.map(micros),
                        attempt.error,
                        micros(attempt.at),
                        id.to_string(),
                        token.to_string(),
                    ])?;
                if updated == 0 {
                    return Ok((false, None));
                }
                if counts == 1 {
                    conn.prepare_cached(
                        "INSERT INTO delivery_attempts (delivery_id, attempt, at, outcome,
                             error, duration_ms) VALUES (?, ?, ?, ?, ?, ?)
                         ON CONFLICT (delivery_id, attempt) DO NOTHING",
                    )?
                    .execute(params![
                        id.to_string(),
                        i64::from(attempt.attempt),
                        micros(attempt.at),
                        attempt.outcome,
                        attempt.error,
                        attempt.duration_ms,
                    ])?;
                }
                let seq = write_events(conn, &events)?;
                Ok((true, seq))
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
        let mut sql = SqlBuilder::new("SELECT * FROM deliveries WHERE user_id = ");
        sql.bind(user.to_string());
        if let Some(status) = status {
            sql.push(" AND status = ").bind(status.as_str().to_owned());
        }
        sql.push(" ORDER BY created_at DESC, id DESC LIMIT ")
            .bind(i64::from(limit));
        self.read(move |conn| {
            let deliveries = query_all(conn, &sql.sql, &sql.values, delivery_from_row)?;
            let mut out = Vec::with_capacity(deliveries.len());
            for delivery in deliveries {
                let attempts = query_all(
                    conn,
                    "SELECT * FROM delivery_attempts WHERE delivery_id = ? ORDER BY attempt",
                    &[Value::Text(delivery.id.to_string())],
                    attempt_from_row,
                )?;
                out.push((delivery, attempts));
            }
            Ok(out)
        })
        .await
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
                let delivery = conn
                    .prepare_cached("SELECT * FROM deliveries WHERE id = ? AND user_id = ?")?
                    .query_row([id.to_string(), user.to_string()], |row| {
                        Ok(delivery_from_row(row))
                    })
                    .optional()?
                    .ok_or(StoreError::NotFound)??;
                if delivery.status != DeliveryStatus::Dead {
                    return Err(StoreError::Conflict("delivery_not_dead"));
                }
                conn.prepare_cached(
                    "UPDATE deliveries SET status = 'pending', next_attempt_at = ?,
                         updated_at = ? WHERE id = ?",
                )?
                .execute(params![micros(now), micros(now), id.to_string()])?;
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
            .await?;
        crate::announce_earliest(&self.delivery_changes, Some(now));
        Ok(delivery)
    }

    async fn dead_delivery_count(&self) -> Result<i64, StoreError> {
        self.read(|conn| {
            Ok(conn
                .prepare_cached("SELECT COUNT(*) FROM deliveries WHERE status = 'dead'")?
                .query_row([], |row| row.get(0))?)
        })
        .await
    }

    fn delivery_changes(&self) -> tokio::sync::watch::Receiver<Option<DateTime<Utc>>> {
        self.delivery_changes.subscribe()
    }
}

fn preferences_from_row(row: &Row<'_>) -> Result<NotificationPreferences, StoreError> {
    let start: Option<String> = row.get("quiet_start")?;
    let end: Option<String> = row.get("quiet_end")?;
    let quiet_hours = match (start, end) {
        (Some(start), Some(end)) => Some(QuietWindow {
            start: parse_time(&start, "notification_preferences.quiet_start")?,
            end: parse_time(&end, "notification_preferences.quiet_end")?,
        }),
        _ => None,
    };
    let zone: Option<String> = row.get("time_zone")?;
    Ok(NotificationPreferences {
        in_app: row.get("in_app")?,
        email: row.get("email")?,
        webhook: row.get("webhook")?,
        email_address: row
            .get::<_, Option<String>>("email_address")?
            .map(Email::from_trusted),
        quiet_hours,
        time_zone: zone
            .map(|z| TimeZone::parse(&z).map_err(|e| StoreError::Corrupt(e.to_string())))
            .transpose()?,
    })
}
