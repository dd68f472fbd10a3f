//! The webhook channel: a signed HTTP POST of the CloudEvent to the user's URL.
//!
//! A request looks like
//!
//! ```text
//! POST /hook HTTP/1.1
//! Content-Type: application/cloudevents+json
//! User-Agent: TaskFlow-Webhook/0.1.0
//! TaskFlow-Delivery: 0190a5c4-…        (the same on every retry: deduplicate on it)
//! TaskFlow-Event-Type: taskflow.reminder.due.v1
//! TaskFlow-Timestamp: 1767225600       (Unix seconds of this attempt)
//! TaskFlow-Signature: sha256=5d41…     (HMAC of timestamp and body)
//!
//! {"specversion":"1.0","type":"taskflow.reminder.due.v1",…}
//! ```
//!
//! What is signed and how a receiver verifies it: [`signature`]. Where requests may go:
//! [`target`].
//!
//! Any 2xx answer is success. 5xx, 408, 429, timeouts and connection failures are retryable;
//! other 4xx answers are permanent, and so are redirects, which are not followed (a redirect
//! could lead past the target policy). The sender never uses a proxy from the environment,
//! since a proxy would connect on our behalf to addresses the policy never saw.

pub mod signature;
pub mod target;

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use reqwest::header::{CONTENT_TYPE, HeaderMap, RETRY_AFTER};
use reqwest::redirect;
use serde::{Deserialize, Serialize};
use taskflow_domain::events::CloudEvent;
use tracing::instrument;
use uuid::Uuid;

pub use signature::{
    SIGNATURE_PREFIX, generate_secret, sign, timestamp_is_fresh, verify_signature,
};
pub use target::{
    HostLookup, MAX_URL_LEN, PolicyResolver, ResolveError, SpecialRange, SystemLookup, TargetError,
    TargetPolicy, validate_webhook_url,
};

use crate::error::error_chain;
use crate::{DeliveryError, Secret, SetupError};

/// `Content-Type` of the body: a CloudEvent in structured mode.
pub const CONTENT_TYPE_CLOUDEVENTS: &str = "application/cloudevents+json";
/// Header with the delivery id, stable across retries.
pub const HEADER_DELIVERY: &str = "TaskFlow-Delivery";
/// Header with the CloudEvents type, so receivers can route before parsing.
pub const HEADER_EVENT_TYPE: &str = "TaskFlow-Event-Type";
/// Header with the attempt's Unix time in seconds, part of the signed message.
pub const HEADER_TIMESTAMP: &str = "TaskFlow-Timestamp";
/// Header with `sha256=<hex HMAC>`.
pub const HEADER_SIGNATURE: &str = "TaskFlow-Signature";
/// How much of a response body is read (for the error message); the rest is discarded.
pub const RESPONSE_BODY_LIMIT: usize = 4096;
/// The longest `Retry-After` honoured; longer requests are shortened to it.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);
/// The request timeout unless configured.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where a webhook goes: the user's registered URL and signing secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebhookTarget {
    /// The receiver's URL (`http` or `https`).
    pub url: String,
    /// The shared secret the signature is keyed with.
    pub secret: Secret,
}

/// One webhook delivery attempt's content.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebhookDelivery {
    /// The delivery's id, sent as `TaskFlow-Delivery`. The caller keeps it for every retry of
    /// the same delivery so receivers can deduplicate.
    pub delivery_id: Uuid,
    /// The CloudEvents type, e.g. `taskflow.reminder.due.v1`.
    pub event_type: String,
    /// The request body: the CloudEvent as JSON bytes, signed as they are.
    pub body: Vec<u8>,
    /// The time of this attempt (not of the event), sent as `TaskFlow-Timestamp` and signed, so
    /// receivers' freshness checks accept retries.
    pub timestamp: DateTime<Utc>,
}

impl WebhookDelivery {
    /// A delivery of `event` with the attempt time `timestamp`.
    pub fn for_event(
        delivery_id: Uuid,
        event: &CloudEvent,
        timestamp: DateTime<Utc>,
    ) -> Result<Self, serde_json::Error> {
        Ok(Self {
            delivery_id,
            event_type: event.event_type.clone(),
            body: serde_json::to_vec(event)?,
            timestamp,
        })
    }
}

/// A successful delivery.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeliveryReceipt {
    /// The receiver's 2xx status.
    pub status: u16,
    /// From sending the request to the end of the (capped) response body.
    pub elapsed: Duration,
}

/// Webhook settings, a part of the notifier's configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhookSettings {
    /// Seconds a receiver has to answer (connecting, sending, the response and its body).
    pub timeout_secs: u64,
    /// Allow loopback, private and other special addresses (see [`TargetPolicy`]).
    pub allow_private_targets: bool,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        Self {
            timeout_secs: DEFAULT_TIMEOUT.as_secs(),
            allow_private_targets: false,
        }
    }
}

/// Delivers webhooks through one shared HTTP client (connection pool, TLS sessions).
/// Cheap to clone.
#[derive(Clone, Debug)]
pub struct WebhookSender {
    client: reqwest::Client,
    policy: TargetPolicy,
    timeout: Duration,
}

/// Configures a [`WebhookSender`].
pub struct WebhookSenderBuilder {
    timeout: Duration,
    policy: TargetPolicy,
    lookup: Arc<dyn HostLookup>,
}

impl WebhookSenderBuilder {
    /// The time a receiver has to answer; default 10 s.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The address policy; default [`TargetPolicy::PUBLIC_ONLY`].
    pub fn policy(mut self, policy: TargetPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// The name resolver; default [`SystemLookup`]. Tests use it to simulate DNS answers.
    pub fn lookup(mut self, lookup: Arc<dyn HostLookup>) -> Self {
        self.lookup = lookup;
        self
    }

    /// The sender.
    pub fn build(self) -> Result<WebhookSender, SetupError> {
        let client = reqwest::Client::builder()
            .user_agent(concat!("TaskFlow-Webhook/", env!("CARGO_PKG_VERSION")))
            .timeout(self.timeout)
            .connect_timeout(self.timeout)
            .redirect(redirect::Policy::none())
            .no_proxy()
            .dns_resolver(Arc::new(PolicyResolver::new(self.policy, self.lookup)))
            .build()
            .map_err(|error| SetupError(format!("webhook HTTP client: {}", error_chain(&error))))?;
        Ok(WebhookSender {
            client,
            policy: self.policy,
            timeout: self.timeout,
        })
    }
}

impl WebhookSender {
    /// A sender configured by `settings`.
    pub fn new(settings: &WebhookSettings) -> Result<Self, SetupError> {
        Self::builder()
            .timeout(Duration::from_secs(settings.timeout_secs.max(1)))
            .policy(TargetPolicy {
                allow_private: settings.allow_private_targets,
            })
            .build()
    }

    /// A builder with the defaults (10 s, public targets only, the system resolver).
    pub fn builder() -> WebhookSenderBuilder {
        WebhookSenderBuilder {
            timeout: DEFAULT_TIMEOUT,
            policy: TargetPolicy::PUBLIC_ONLY,
            lookup: Arc::new(SystemLookup),
        }
    }

    /// The address policy this sender enforces.
    pub fn policy(&self) -> TargetPolicy {
        self.policy
    }

    /// POSTs `delivery` to `target`, signed with the target's secret. Checks the URL and the
    /// resolved addresses against the policy first; a refusal is a permanent
    /// [`DeliveryError::Target`].
    #[instrument(skip_all, fields(delivery_id = %delivery.delivery_id, event_type = %delivery.event_type))]
    pub async fn deliver(
        &self,
        target: &WebhookTarget,
        delivery: &WebhookDelivery,
    ) -> Result<DeliveryReceipt, DeliveryError> {
        let url = validate_webhook_url(&target.url, self.policy)?;
        let timestamp = delivery.timestamp.timestamp();
        let signature = sign(target.secret.expose().as_bytes(), timestamp, &delivery.body);
        let started = Instant::now();
        let response = self
            .client
            .post(url)
            .header(CONTENT_TYPE, CONTENT_TYPE_CLOUDEVENTS)
            .header(HEADER_DELIVERY, delivery.delivery_id.to_string())
            .header(HEADER_EVENT_TYPE, delivery.event_type.as_str())
            .header(HEADER_TIMESTAMP, timestamp.to_string())
            .header(HEADER_SIGNATURE, signature)
            .body(delivery.body.clone())
            .send()
            .await
            .map_err(|error| self.classify(error))?;
        let status = response.status().as_u16();
        let retry_after = match status {
            429 | 503 => retry_after(response.headers(), Utc::now()),
            _ => None,
        };
        let body = read_capped(response, RESPONSE_BODY_LIMIT).await;
        let elapsed = started.elapsed();
        if (200..300).contains(&status) {
            tracing::debug!(
                status,
                elapsed_ms = elapsed.as_millis() as u64,
                "webhook delivered"
            );
            Ok(DeliveryReceipt { status, elapsed })
        } else {
            let error = DeliveryError::HttpStatus {
                status,
                retry_after,
                body: String::from_utf8_lossy(&body).into_owned(),
            };
            tracing::debug!(status, retryable = error.is_retryable(), "webhook refused");
            Err(error)
        }
    }

    /// Maps a client error to a delivery error; the URL is left out of the message (its query
    /// may carry a token).
    fn classify(&self, error: reqwest::Error) -> DeliveryError {
        let error = error.without_url();
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&error);
        while let Some(cause) = source {
            if let Some(refused) = cause.downcast_ref::<TargetError>() {
                return DeliveryError::Target(refused.clone());
            }
            source = cause.source();
        }
        if error.is_timeout() {
            DeliveryError::Timeout(self.timeout)
        } else if error.is_connect() {
            DeliveryError::Connect(error_chain(&error))
        } else if error.is_builder() {
            DeliveryError::InvalidMessage(error_chain(&error))
        } else {
            DeliveryError::Transport(error_chain(&error))
        }
    }
}

/// Reads at most `limit` bytes of the body (errors and the rest are ignored).
async fn read_capped(mut response: reqwest::Response, limit: usize) -> Vec<u8> {
    let mut body = Vec::new();
    while body.len() < limit {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                let room = limit - body.len();
                body.extend_from_slice(&chunk[..chunk.len().min(room)]);
            }
            Ok(None) | Err(_) => break,
        }
    }
    body
}

/// The `Retry-After` header as a delay from `now`: delay-seconds or an HTTP date, capped at
/// [`MAX_RETRY_AFTER`]. A date in the past is zero; anything unparsable is `None`.
pub fn retry_after(headers: &HeaderMap, now: DateTime<Utc>) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?;
    parse_retry_after(value, now)
}

/// Parses a `Retry-After` value (see [`retry_after`]).
pub fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    let delay = if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        Duration::from_secs(value.parse::<u64>().unwrap_or(u64::MAX))
    } else {
        let at = DateTime::parse_from_rfc2822(value)
            .ok()?
            .with_timezone(&Utc);
        (at - now).to_std().unwrap_or(Duration::ZERO)
    };
    Some(delay.min(MAX_RETRY_AFTER))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_accepts_seconds_and_dates() {
        let now = DateTime::parse_from_rfc3339("2026-01-01T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("Thu, 01 Jan 2026 12:01:30 GMT", now),
            Some(Duration::from_secs(90))
        );
        assert_eq!(
            parse_retry_after("Thu, 01 Jan 2026 11:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(
            parse_retry_after("99999999999999999999999", now),
            Some(MAX_RETRY_AFTER)
        );
        assert_eq!(parse_retry_after("-5", now), None);
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("", now), None);
    }

    #[test]
    fn settings_default_to_ten_seconds_and_public_targets() {
        let settings: WebhookSettings = serde_json::from_str("{}").unwrap();
        assert_eq!(settings.timeout_secs, 10);
        assert!(!settings.allow_private_targets);
        let sender = WebhookSender::new(&settings).unwrap();
        assert_eq!(sender.policy(), TargetPolicy::PUBLIC_ONLY);
        assert!(serde_json::from_str::<WebhookSettings>(r#"{"timeout": 3}"#).is_err());
    }
}
