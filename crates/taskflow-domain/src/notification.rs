//! Notifications: the in-app feed, the user's channel preferences and webhook endpoints, and the
//! deliveries of each reminder over each channel with their attempts.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, NaiveTime, Utc};
use serde::{Deserialize, Serialize};

use crate::events::{CloudEvent, OutgoingEvent, Topic};
use crate::ids::{DeliveryId, NotificationId, ReminderId, TaskId, UserId, WebhookId};
use crate::time::TimeZone;
use crate::user::Email;

/// Longest notification title kept.
pub const MAX_TITLE_CHARS: usize = 500;

/// One entry of the in-app feed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notification {
    /// Identifier.
    pub id: NotificationId,
    /// Owner.
    pub user_id: UserId,
    /// What it is about: `reminder`.
    pub kind: String,
    /// Headline (the task's title).
    pub title: String,
    /// One line of detail.
    pub body: String,
    /// The task it concerns.
    pub task_id: Option<TaskId>,
    /// The reminder that caused it.
    pub reminder_id: Option<ReminderId>,
    /// Deduplication key (reminder id and firing): a redelivered event adds nothing.
    #[serde(skip)]
    pub dedup_key: String,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When the user read it.
    pub read_at: Option<DateTime<Utc>>,
}

impl Notification {
    /// The `notification.created` event that pushes it to the user's open sessions.
    pub fn created_event(&self, traceparent: Option<String>) -> OutgoingEvent {
        OutgoingEvent::new(
            Topic::TaskUpdates,
            CloudEvent::new(
                "notification.created",
                Some(self.id.to_string()),
                self.user_id,
                self.created_at,
                traceparent,
                serde_json::json!({
                    "schema_version": 1,
                    "user_id": self.user_id,
                    "timestamp": self.created_at,
                    // As the feed (`GET /api/v1/notifications`) shows it.
                    "notification": {
                        "id": self.id,
                        "kind": self.kind,
                        "title": self.title,
                        "body": self.body,
                        "task_id": self.task_id,
                        "reminder_id": self.reminder_id,
                        "created_at": self.created_at,
                        "read_at": self.read_at,
                    },
                }),
            ),
        )
    }
}

/// Quiet hours: deliveries due between `start` and `end` (local time, may wrap midnight) wait
/// until `end`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuietWindow {
    /// Start, local time.
    pub start: NaiveTime,
    /// End, local time.
    pub end: NaiveTime,
}

/// Which channels a user wants and when they may be disturbed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotificationPreferences {
    /// The in-app feed (and browser notifications).
    pub in_app: bool,
    /// E-mail (when the server has SMTP configured).
    pub email: bool,
    /// The user's webhook endpoints.
    pub webhook: bool,
    /// Where e-mail goes; the account's address when `None`.
    pub email_address: Option<Email>,
    /// Quiet hours, if any.
    pub quiet_hours: Option<QuietWindow>,
    /// Zone of the quiet hours; the account's when `None`.
    pub time_zone: Option<TimeZone>,
}

impl Default for NotificationPreferences {
    fn default() -> Self {
        Self {
            in_app: true,
            email: false,
            webhook: true,
            email_address: None,
            quiet_hours: None,
            time_zone: None,
        }
    }
}

/// A user's webhook endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebhookEndpoint {
    /// Identifier.
    pub id: WebhookId,
    /// Owner.
    pub user_id: UserId,
    /// Target URL (checked against the target policy when registered and at every delivery).
    pub url: String,
    /// The HMAC signing secret (shown to the user once).
    pub secret: String,
    /// What the user called it.
    pub description: String,
    /// Whether deliveries go to it.
    pub enabled: bool,
    /// Creation instant.
    pub created_at: DateTime<Utc>,
}

/// Where a delivery is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    /// Waiting for its next attempt.
    Pending,
    /// Claimed by a notifier (under a lease) and being attempted.
    Sending,
    /// Delivered.
    Sent,
    /// Given up on (dead-lettered); can be retried by the user.
    Dead,
}

impl DeliveryStatus {
    /// The stored name.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Sending => "sending",
            Self::Sent => "sent",
            Self::Dead => "dead",
        }
    }
}

impl fmt::Display for DeliveryStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DeliveryStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "pending" => Self::Pending,
            "sending" => Self::Sending,
            "sent" => Self::Sent,
            "dead" => Self::Dead,
            other => return Err(format!("unknown delivery status `{other}`")),
        })
    }
}

/// One delivery of one firing of a reminder over one channel (and endpoint).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// Identifier; also the webhook delivery id, the same on every attempt.
    pub id: DeliveryId,
    /// Owner.
    pub user_id: UserId,
    /// The reminder.
    pub reminder_id: ReminderId,
    /// Its task.
    pub task_id: TaskId,
    /// `in_app`, `webhook` or `email`.
    pub channel: String,
    /// The webhook endpoint, for webhook deliveries.
    pub endpoint_id: Option<WebhookId>,
    /// Reminder id + firing + channel + endpoint: unique.
    pub idempotency_key: String,
    /// Status.
    pub status: DeliveryStatus,
    /// What is delivered: the `reminder.due` CloudEvent as JSON, plus the e-mail address for
    /// e-mail deliveries (`{"event": …, "email": …}`).
    pub payload: String,
    /// Attempts made.
    pub attempts: u32,
    /// When the next attempt is due.
    pub next_attempt_at: DateTime<Utc>,
    /// The last attempt's error.
    pub last_error: Option<String>,
    /// Creation instant.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// When it was delivered.
    pub sent_at: Option<DateTime<Utc>>,
}

impl Delivery {
    /// The event recording the outcome of attempt number `attempts` at `at`:
    /// `notification.delivered`, or `notification.failed` with the error and whether the
    /// delivery is now dead-lettered. Written with the attempt, on the `notifications` topic.
    pub fn outcome_event(
        &self,
        attempts: u32,
        at: DateTime<Utc>,
        failure: Option<(&str, bool)>,
    ) -> OutgoingEvent {
        let mut data = serde_json::json!({
            "schema_version": 1,
            "delivery_id": self.id,
            "reminder_id": self.reminder_id,
            "task_id": self.task_id,
            "user_id": self.user_id,
            "channel": self.channel,
            "attempts": attempts,
            "timestamp": at,
        });
        let kind = match failure {
            Some((error, dead)) => {
                data["error"] = serde_json::Value::from(error);
                data["dead"] = serde_json::Value::from(dead);
                "notification.failed"
            }
            None => "notification.delivered",
        };
        OutgoingEvent::new(
            Topic::Notifications,
            CloudEvent::new(
                kind,
                Some(self.task_id.to_string()),
                self.user_id,
                at,
                None,
                data,
            ),
        )
    }
}

/// One attempt of a delivery.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DeliveryAttempt {
    /// 1-based.
    pub attempt: u32,
    /// When it was made.
    pub at: DateTime<Utc>,
    /// `sent`, `retry`, `dead` or `deferred` (quiet hours).
    pub outcome: String,
    /// What went wrong.
    pub error: Option<String>,
    /// How long it took.
    pub duration_ms: i64,
}
