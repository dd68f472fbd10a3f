//! TaskFlow's notification channels and delivery policies.
//!
//! The notifier role turns a `reminder.due` event into notifications. This crate is the part of
//! it that talks to the outside world and decides timing, and nothing else:
//!
//! - [`webhook`]: a signed HTTP POST of the CloudEvent ([`WebhookSender`]), with the address
//!   policy that keeps user-chosen URLs away from internal networks ([`TargetPolicy`]) and the
//!   signature helpers receivers use ([`verify_signature`]);
//! - [`email`]: a multipart email through an SMTP relay ([`EmailSender`]) and the reminder
//!   email's content ([`reminder_email`]);
//! - [`retry`]: when to try a failed delivery again and when to dead-letter it ([`RetryPolicy`]);
//! - [`quiet_hours`]: when a notification must wait for the user's quiet hours to end
//!   ([`QuietHours`]);
//! - [`ChannelKind`] names the channels, [`DeliveryError`] classifies every failure as retryable
//!   or permanent.
//!
//! # Why there is no storage here
//!
//! Deliveries, attempts, retry schedules and dead letters live in the database, written by the
//! notifier in the same transactions as its other effects (and differently per backend). Keeping
//! the channels free of storage lets that bookkeeping stay in one place, lets every channel be
//! tested against a real receiver without a database, and keeps each call a single attempt:
//! [`WebhookSender::deliver`] and [`EmailSender::send`] try once and say what happened; the
//! caller records it and asks [`RetryPolicy::decide`] what to do next. Policies are pure
//! functions of their inputs (attempt count, instant, time zone), so tests need neither sleeping
//! nor a clock.
//!
//! # One attempt, as the notifier makes it
//!
//! ```no_run
//! use chrono::Utc;
//! use taskflow_notify::{
//!     QuietHours, RetryDecision, RetryPolicy, Secret, WebhookDelivery, WebhookSender,
//!     WebhookSettings, WebhookTarget,
//! };
//! # async fn attempt(
//! #     event: taskflow_domain::events::CloudEvent,
//! #     delivery_id: uuid::Uuid,
//! #     attempts_before: u32,
//! # ) -> Result<(), Box<dyn std::error::Error>> {
//! let now = Utc::now();
//! let quiet = QuietHours::parse("22:00", "07:00")?;
//! if let Some(release) = quiet.release_at(chrono_tz::Europe::Berlin, now) {
//!     // Not now: reschedule the delivery for `release`.
//!     return Ok(());
//! }
//! let sender = WebhookSender::new(&WebhookSettings::default())?; // once, shared
//! let target = WebhookTarget {
//!     url: "https://hooks.example.com/taskflow".into(),
//!     secret: Secret::new("the user's signing secret"),
//! };
//! // The delivery id stays the same on every attempt; the timestamp is the attempt's.
//! let delivery = WebhookDelivery::for_event(delivery_id, &event, now)?;
//! match sender.deliver(&target, &delivery).await {
//!     Ok(_receipt) => { /* mark delivered */ }
//!     Err(error) => match RetryPolicy::default().decide(attempts_before + 1, &error) {
//!         RetryDecision::RetryAfter(_delay) => { /* next attempt at now + delay */ }
//!         RetryDecision::GiveUp(_reason) => { /* dead-letter with the reason and `error` */ }
//!     },
//! }
//! # Ok(())
//! # }
//! ```

#![forbid(unsafe_code)]

mod channel;
pub mod email;
mod error;
pub mod quiet_hours;
pub mod retry;
mod secret;
pub mod webhook;

pub use channel::{ChannelKind, UnknownChannel};
pub use email::{EmailMessage, EmailSender, SmtpSecurity, SmtpSettings, reminder_email};
pub use error::DeliveryError;
pub use quiet_hours::{InvalidQuietHours, QuietHours};
pub use retry::{GiveUpReason, InvalidRetryPolicy, RetryDecision, RetryPolicy};
pub use secret::Secret;
pub use webhook::{
    DeliveryReceipt, TargetError, TargetPolicy, WebhookDelivery, WebhookSender, WebhookSettings,
    WebhookTarget, validate_webhook_url, verify_signature,
};

/// A channel could not be set up from its settings; the text names the setting and the fix.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SetupError(pub String);
