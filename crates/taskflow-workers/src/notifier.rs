//! The notifier: `reminder.due` → the user's channels.
//!
//! Two parts. [`NotifierHandler`] consumes the `reminders` topic and, for each fired reminder,
//! stores in one transaction (with the record that the event was processed) the in-app feed
//! entry with its `notification.created` event for open sessions, and one pending delivery per
//! external channel (each webhook endpoint, e-mail) whose idempotency key is the reminder, its
//! firing and the channel: a redelivered event never sends the same reminder twice on a
//! channel. Deliveries due in the user's quiet hours wait until they end.
//!
//! [`DeliveryWorker`] then attempts pending deliveries when they are due, under a lease (so
//! several notifiers share the work and a crashed one's claims are taken over), records every
//! attempt, retries failures with exponential backoff and jitter, and dead-letters a delivery
//! after the last attempt; a user can retry a dead delivery.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, TimeDelta, Utc};
use futures::StreamExt as _;
use taskflow_bus::consumer::{EventHandler, HandlerError};
use taskflow_domain::events::CloudEvent;
use taskflow_domain::notification::{
    Delivery, DeliveryAttempt, DeliveryStatus, Notification, NotificationPreferences,
};
use taskflow_domain::{Clock, DeliveryId, NotificationId, ReminderId, TaskId, UserId};
use taskflow_notify::{
    DeliveryError, EmailSender, QuietHours, RetryDecision, RetryPolicy, Secret, WebhookDelivery,
    WebhookSender, WebhookTarget, reminder_email,
};
use taskflow_store::{
    ClaimedDelivery, ConsumerEffect, DeliveryOutcome, NotificationPlan, Store, StoreError,
};

/// The consumer group (and idempotency name) of the notifier.
pub const NOTIFIER_GROUP: &str = "notifier";

/// What a `reminder.due` event carries that the notifier needs.
#[derive(Clone, Debug)]
struct DueData {
    reminder_id: ReminderId,
    task_id: TaskId,
    user_id: UserId,
    title: String,
    due_at: Option<DateTime<Utc>>,
    remind_at: DateTime<Utc>,
    fire_count: u64,
}

fn due_data(event: &CloudEvent) -> Result<DueData, HandlerError> {
    let data = &event.data;
    let bad = |field: &str| HandlerError(format!("{} has no valid `{field}`", event.event_type));
    let text = |field: &str| data[field].as_str().ok_or_else(|| bad(field));
    let instant = |field: &str| {
        text(field)?
            .parse::<DateTime<Utc>>()
            .map_err(|_| bad(field))
    };
    Ok(DueData {
        reminder_id: text("reminder_id")?
            .parse()
            .map_err(|_| bad("reminder_id"))?,
        task_id: text("task_id")?.parse().map_err(|_| bad("task_id"))?,
        user_id: text("user_id")?.parse().map_err(|_| bad("user_id"))?,
        title: text("title")?.to_owned(),
        due_at: match &data["due_at"] {
            serde_json::Value::Null => None,
            _ => Some(instant("due_at")?),
        },
        remind_at: instant("remind_at")?,
        fire_count: data["fire_count"].as_u64().unwrap_or(1),
    })
}

/// Turns fired reminders into feed entries and pending deliveries.
pub struct NotifierHandler {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    email_enabled: bool,
}

impl NotifierHandler {
    /// A handler writing to `store`; `email_enabled` when an SMTP relay is configured.
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>, email_enabled: bool) -> Self {
        Self {
            store,
            clock,
            email_enabled,
        }
    }

    async fn plan(
        &self,
        event: &CloudEvent,
        due: &DueData,
        now: DateTime<Utc>,
    ) -> Result<Option<NotificationPlan>, StoreError> {
        let Some(user) = self.store.user(due.user_id).await? else {
            return Ok(None);
        };
        let preferences = self
            .store
            .notification_preferences(user.id)
            .await?
            .unwrap_or_default();
        let zone = preferences.time_zone.unwrap_or(user.time_zone);
        let not_before = release_after_quiet_hours(&preferences, zone.tz(), now).unwrap_or(now);
        let firing = format!("{}:{}", due.reminder_id, due.fire_count);
        let notification = preferences.in_app.then(|| Notification {
            id: NotificationId::new(),
            user_id: user.id,
            kind: "reminder".into(),
            title: due.title.clone(),
            body: match due.due_at {
                Some(at) => format!(
                    "Due {}",
                    at.with_timezone(&zone.tz()).format("%a %e %b %Y, %H:%M %Z")
                ),
                None => "Reminder".into(),
            },
            task_id: Some(due.task_id),
            reminder_id: Some(due.reminder_id),
            dedup_key: firing.clone(),
            created_at: now,
            read_at: None,
        });
        let events = notification
            .iter()
            .map(|n| n.created_event(event.traceparent.clone()))
            .collect();
        let body = serde_json::to_string(event)
            .map_err(|e| StoreError::Corrupt(format!("event does not serialise: {e}")))?;
        let delivery = |channel: &str, endpoint, key: String, payload: String| Delivery {
            id: DeliveryId::new(),
            user_id: user.id,
            reminder_id: due.reminder_id,
            task_id: due.task_id,
            channel: channel.into(),
            endpoint_id: endpoint,
            idempotency_key: key,
            status: DeliveryStatus::Pending,
            payload,
            attempts: 0,
            next_attempt_at: not_before,
            last_error: None,
            created_at: now,
            updated_at: now,
            sent_at: None,
        };
        let mut deliveries = Vec::new();
        if preferences.webhook {
            for endpoint in self.store.webhook_endpoints(user.id).await? {
                if endpoint.enabled {
                    deliveries.push(delivery(
                        "webhook",
                        Some(endpoint.id),
                        format!("{firing}:webhook:{}", endpoint.id),
                        body.clone(),
                    ));
                }
            }
        }
        if preferences.email && self.email_enabled {
            let to = preferences
                .email_address
                .as_ref()
                .unwrap_or(&user.email)
                .as_str()
                .to_owned();
            let payload =
                serde_json::json!({ "event": event, "email": to, "time_zone": zone.name() });
            deliveries.push(delivery(
                "email",
                None,
                format!("{firing}:email"),
                payload.to_string(),
            ));
        }
        Ok(Some(NotificationPlan {
            notification,
            deliveries,
            events,
        }))
    }
}

/// When quiet hours that contain `now` end (in `zone`), or `None` outside them.
fn release_after_quiet_hours(
    preferences: &NotificationPreferences,
    zone: chrono_tz::Tz,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let window = preferences.quiet_hours?;
    QuietHours::new(window.start, window.end).release_at(zone, now)
}

#[async_trait]
impl EventHandler for NotifierHandler {
    async fn handle(&self, event: &CloudEvent) -> Result<(), HandlerError> {
        let now = self.clock.now();
        let effect = if event.short_type() == "reminder.due" {
            let due = due_data(event)?;
            match self.plan(event, &due, now).await {
                Ok(Some(plan)) => ConsumerEffect::Notify(plan),
                Ok(None) => ConsumerEffect::Nothing,
                Err(error) => return Err(HandlerError(error.to_string())),
            }
        } else {
            ConsumerEffect::Nothing
        };
        let in_app = matches!(&effect, ConsumerEffect::Notify(p) if p.notification.is_some());
        let fresh = self
            .store
            .apply_once(NOTIFIER_GROUP, &event.id, &effect, now)
            .await
            .map_err(|e| HandlerError(e.to_string()))?;
        if fresh && in_app {
            metrics::counter!("notification_deliveries_total", "channel" => "in_app", "outcome" => "sent")
                .increment(1);
        }
        Ok(())
    }
}

/// How the delivery worker works.
#[derive(Clone, Debug)]
pub struct DeliverySettings {
    /// Retries of failed deliveries (the same for every channel unless overridden).
    pub webhook_retry: RetryPolicy,
    /// Retries of failed e-mails.
    pub email_retry: RetryPolicy,
    /// How long a claim holds before another notifier may take it over.
    pub lease: Duration,
    /// Most deliveries claimed at once.
    pub batch: u32,
    /// Most deliveries attempted at the same time.
    pub concurrency: usize,
    /// How often the table is read again for work other processes created.
    pub poll_interval: Duration,
    /// The web UI's base URL, for links in e-mails.
    pub public_url: Option<String>,
}

impl Default for DeliverySettings {
    fn default() -> Self {
        Self {
            webhook_retry: RetryPolicy::default(),
            email_retry: RetryPolicy::default(),
            lease: Duration::from_secs(120),
            batch: 100,
            concurrency: 16,
            poll_interval: Duration::from_secs(1),
            public_url: None,
        }
    }
}

/// Attempts pending deliveries over webhooks and e-mail.
pub struct DeliveryWorker {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    webhooks: WebhookSender,
    email: Option<EmailSender>,
    settings: DeliverySettings,
}

impl DeliveryWorker {
    /// A worker delivering through `webhooks` and, when configured, `email`.
    pub fn new(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        webhooks: WebhookSender,
        email: Option<EmailSender>,
        settings: DeliverySettings,
    ) -> Self {
        Self {
            store,
            clock,
            webhooks,
            email,
            settings,
        }
    }

    /// Claims the deliveries due now and attempts each once; returns how many were attempted.
    pub async fn deliver_due(&self) -> Result<usize, StoreError> {
        let now = self.clock.now();
        let lease = TimeDelta::from_std(self.settings.lease).unwrap_or(TimeDelta::minutes(2));
        let (token, claimed) = self
            .store
            .claim_deliveries(now, now + lease, self.settings.batch)
            .await?;
        let count = claimed.len();
        let results: Vec<Result<(), StoreError>> = futures::stream::iter(claimed)
            .map(|claimed| self.attempt(token, claimed))
            .buffer_unordered(self.settings.concurrency.max(1))
            .collect()
            .await;
        results.into_iter().collect::<Result<Vec<()>, _>>()?;
        Ok(count)
    }

    async fn attempt(&self, token: uuid::Uuid, claimed: ClaimedDelivery) -> Result<(), StoreError> {
        let delivery = &claimed.delivery;
        let attempt_number = delivery.attempts + 1;
        let started = Instant::now();
        let at = self.clock.now();
        let result = self.send(&claimed, at).await;
        let duration_ms = i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX);
        let policy = if delivery.channel == "email" {
            &self.settings.email_retry
        } else {
            &self.settings.webhook_retry
        };
        let (outcome, label, error) = match result {
            Ok(()) => (DeliveryOutcome::Sent, "sent", None),
            Err(error) => match policy.decide(attempt_number, &error) {
                RetryDecision::RetryAfter(delay) => {
                    let delay = TimeDelta::from_std(delay).unwrap_or(TimeDelta::seconds(512));
                    (
                        DeliveryOutcome::Retry(self.clock.now() + delay),
                        "retry",
                        Some(error.to_string()),
                    )
                }
                RetryDecision::GiveUp(reason) => (
                    DeliveryOutcome::Dead,
                    "dead",
                    Some(format!("{error} ({})", reason.as_str())),
                ),
            },
        };
        let event = delivery.outcome_event(
            attempt_number,
            at,
            error
                .as_deref()
                .map(|e| (e, matches!(outcome, DeliveryOutcome::Dead))),
        );
        let recorded = self
            .store
            .record_delivery_attempt(
                token,
                delivery.id,
                &DeliveryAttempt {
                    attempt: attempt_number,
                    at,
                    outcome: label.into(),
                    error: error.clone(),
                    duration_ms,
                },
                &outcome,
                &[event],
            )
            .await?;
        if recorded {
            let channel = if delivery.channel == "email" {
                "email"
            } else {
                "webhook"
            };
            metrics::counter!("notification_deliveries_total", "channel" => channel, "outcome" => label)
                .increment(1);
            if let Some(error) = error {
                tracing::info!(delivery = %delivery.id, channel, attempt = attempt_number, outcome = label, %error, "delivery failed");
            }
        }
        Ok(())
    }

    async fn send(
        &self,
        claimed: &ClaimedDelivery,
        at: DateTime<Utc>,
    ) -> Result<(), DeliveryError> {
        let delivery = &claimed.delivery;
        match delivery.channel.as_str() {
            "webhook" => {
                let Some(endpoint) = claimed.endpoint.as_ref().filter(|e| e.enabled) else {
                    return Err(DeliveryError::InvalidMessage(
                        "the webhook endpoint was deleted or disabled".into(),
                    ));
                };
                let event: CloudEvent = serde_json::from_str(&delivery.payload).map_err(|e| {
                    DeliveryError::InvalidMessage(format!("stored event is unreadable: {e}"))
                })?;
                let request = WebhookDelivery::for_event(delivery.id.as_uuid(), &event, at)
                    .map_err(|e| DeliveryError::InvalidMessage(e.to_string()))?;
                let target = WebhookTarget {
                    url: endpoint.url.clone(),
                    secret: Secret::new(endpoint.secret.clone()),
                };
                self.webhooks.deliver(&target, &request).await.map(|_| ())
            }
            "email" => {
                let Some(sender) = &self.email else {
                    return Err(DeliveryError::InvalidMessage(
                        "e-mail is not configured on this server".into(),
                    ));
                };
                let payload: serde_json::Value = serde_json::from_str(&delivery.payload)
                    .map_err(|e| DeliveryError::InvalidMessage(e.to_string()))?;
                let event: CloudEvent = serde_json::from_value(payload["event"].clone())
                    .map_err(|e| DeliveryError::InvalidMessage(e.to_string()))?;
                let due = due_data(&event).map_err(|e| DeliveryError::InvalidMessage(e.0))?;
                let zone = payload["time_zone"]
                    .as_str()
                    .and_then(|z| z.parse::<chrono_tz::Tz>().ok())
                    .unwrap_or(chrono_tz::UTC);
                let to = payload["email"].as_str().unwrap_or_default();
                let url =
                    self.settings.public_url.as_ref().map(|base| {
                        format!("{}/#task={}", base.trim_end_matches('/'), due.task_id)
                    });
                let message = reminder_email(
                    to,
                    &due.title,
                    due.due_at,
                    due.remind_at,
                    zone,
                    url.as_deref(),
                );
                sender.send(&message).await
            }
            other => Err(DeliveryError::InvalidMessage(format!(
                "unknown channel `{other}`"
            ))),
        }
    }
}

/// Runs `worker` until `shutdown` resolves: attempts what is due, sleeps until the next
/// delivery instant (or an announced earlier one, or the next poll), and again.
pub async fn run_deliveries(
    worker: DeliveryWorker,
    mut shutdown: impl std::future::Future<Output = ()> + Unpin,
) {
    let mut changes = worker.store.delivery_changes();
    // Exported from the start (at zero), so failure-rate alerts have a denominator at once.
    for channel in ["in_app", "webhook", "email"] {
        for outcome in ["sent", "retry", "dead"] {
            metrics::counter!("notification_deliveries_total", "channel" => channel, "outcome" => outcome)
                .increment(0);
        }
    }
    let mut last_dead_count = Instant::now() - Duration::from_secs(3600);
    loop {
        if last_dead_count.elapsed() >= Duration::from_secs(15) {
            last_dead_count = Instant::now();
            if let Ok(dead) = worker.store.dead_delivery_count().await {
                metrics::gauge!("notification_deliveries_dead").set(dead as f64);
            }
        }
        let next = match worker.store.next_delivery_at().await {
            Ok(next) => next,
            Err(error) => {
                tracing::warn!(%error, "notifier could not read the deliveries table");
                None
            }
        };
        let now = worker.clock.now();
        if next.is_some_and(|at| at <= now) {
            match worker.deliver_due().await {
                Ok(0) => {}
                Ok(_) => continue,
                Err(error) => tracing::warn!(%error, "attempting deliveries failed; retrying"),
            }
        }
        let sleep_for = next
            .filter(|at| *at > now)
            .map(|at| (at - now).to_std().unwrap_or(Duration::ZERO))
            .map_or(worker.settings.poll_interval, |d| {
                d.min(worker.settings.poll_interval)
            });
        tokio::select! {
            () = tokio::time::sleep(sleep_for) => {}
            changed = changes.changed() => {
                if changed.is_err() {
                    return;
                }
                changes.borrow_and_update();
            }
            () = &mut shutdown => return,
        }
    }
}
