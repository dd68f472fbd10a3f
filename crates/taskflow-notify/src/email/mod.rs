//! The email channel: a multipart (plain text + HTML) message through an SMTP relay.
//!
//! Outcomes: 2xx from the server is success; 4xx replies, timeouts and connection failures are
//! retryable; 5xx replies are permanent. With [`SmtpSecurity::StartTls`] or
//! [`SmtpSecurity::Tls`] the sender never falls back to plain text: a server that does not offer
//! STARTTLS, or whose certificate does not check out, fails with a permanent
//! [`DeliveryError::Tls`] (a configuration problem that retries will not fix; after fixing it,
//! replay the dead letters).

mod render;

use std::time::Duration;

use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use serde::{Deserialize, Serialize};
use tracing::instrument;

pub use render::{escape_html, reminder_email};

use crate::error::{error_chain, short_text};
use crate::{DeliveryError, Secret, SetupError};

/// How the connection to the SMTP server is protected.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SmtpSecurity {
    /// Plain text: only for a relay on the same host or network (and tests).
    None,
    /// Plain connection upgraded with STARTTLS, which is required (usually port 587).
    #[default]
    #[serde(rename = "starttls")]
    StartTls,
    /// TLS from the first byte ("SMTPS", usually port 465).
    Tls,
}

/// SMTP relay settings, a part of the notifier's configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SmtpSettings {
    /// The relay's host name (also the name its TLS certificate must carry).
    pub host: String,
    /// The relay's port.
    pub port: u16,
    /// Connection protection.
    pub security: SmtpSecurity,
    /// User name for SMTP AUTH; no authentication when absent.
    pub username: Option<String>,
    /// Password for SMTP AUTH.
    pub password: Option<Secret>,
    /// The sender mailbox, e.g. `TaskFlow <reminders@example.com>`.
    pub from: String,
    /// Seconds to wait for the server at each step.
    pub timeout_secs: u64,
}

impl Default for SmtpSettings {
    fn default() -> Self {
        Self {
            host: "localhost".into(),
            port: 587,
            security: SmtpSecurity::StartTls,
            username: None,
            password: None,
            from: "TaskFlow <taskflow@localhost>".into(),
            timeout_secs: 30,
        }
    }
}

/// An email to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EmailMessage {
    /// The recipient mailbox (`a@example.com` or `Name <a@example.com>`).
    pub to: String,
    /// The subject (one line).
    pub subject: String,
    /// The plain-text alternative.
    pub text: String,
    /// The HTML alternative (already escaped where it contains user text).
    pub html: String,
}

/// Sends email through one SMTP relay, reusing connections. Cheap to clone.
#[derive(Clone)]
pub struct EmailSender {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    timeout: Duration,
}

impl std::fmt::Debug for EmailSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmailSender")
            .field("from", &self.from.to_string())
            .finish_non_exhaustive()
    }
}

impl EmailSender {
    /// A sender for `settings`; fails if the sender address or the TLS setup is invalid. Call it
    /// within a Tokio runtime: the connection pool starts a task that closes idle connections.
    pub fn new(settings: &SmtpSettings) -> Result<Self, SetupError> {
        let from: Mailbox = settings.from.parse().map_err(|error| {
            SetupError(format!(
                "smtp.from `{}` is not a mailbox ({error}); use `Name <address@example.com>` or a bare address",
                short_text(&settings.from)
            ))
        })?;
        if settings.host.trim().is_empty() {
            return Err(SetupError(
                "smtp.host is empty; set the relay's host name".into(),
            ));
        }
        let tls_parameters = || {
            TlsParameters::new(settings.host.clone())
                .map_err(|error| SetupError(format!("smtp TLS setup: {}", error_chain(&error))))
        };
        let tls = match settings.security {
            SmtpSecurity::None => Tls::None,
            SmtpSecurity::StartTls => Tls::Required(tls_parameters()?),
            SmtpSecurity::Tls => Tls::Wrapper(tls_parameters()?),
        };
        let timeout = Duration::from_secs(settings.timeout_secs.max(1));
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&settings.host)
            .port(settings.port)
            .tls(tls)
            .timeout(Some(timeout));
        match (&settings.username, &settings.password) {
            (Some(user), password) => {
                builder = builder.credentials(Credentials::new(
                    user.clone(),
                    password
                        .as_ref()
                        .map(|p| p.expose().to_owned())
                        .unwrap_or_default(),
                ));
            }
            (None, Some(_)) => {
                return Err(SetupError(
                    "smtp.password is set without smtp.username; set both or neither".into(),
                ));
            }
            (None, None) => {}
        }
        Ok(Self {
            transport: builder.build(),
            from,
            timeout,
        })
    }

    /// The sender mailbox.
    pub fn from_mailbox(&self) -> String {
        self.from.to_string()
    }

    /// Sends `message` as multipart/alternative (plain text, then HTML).
    #[instrument(skip_all)]
    pub async fn send(&self, message: &EmailMessage) -> Result<(), DeliveryError> {
        let to: Mailbox = message.to.parse().map_err(|error| {
            DeliveryError::InvalidMessage(format!(
                "recipient `{}` is not a mailbox: {error}",
                short_text(&message.to)
            ))
        })?;
        let subject: String = message
            .subject
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        let email = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(subject)
            .multipart(MultiPart::alternative_plain_html(
                message.text.clone(),
                message.html.clone(),
            ))
            .map_err(|error| DeliveryError::InvalidMessage(error.to_string()))?;
        self.transport
            .send(email)
            .await
            .map(|_| ())
            .map_err(|error| classify(error, self.timeout))
    }
}

/// Maps an SMTP client error to a delivery error.
fn classify(error: lettre::transport::smtp::Error, timeout: Duration) -> DeliveryError {
    if let Some(code) = error.status() {
        let code = u16::from(code);
        let message = std::error::Error::source(&error)
            .map(ToString::to_string)
            .unwrap_or_default();
        return DeliveryError::SmtpReply {
            code,
            message: short_text(&message),
        };
    }
    let text = error_chain(&error);
    if error.is_timeout() {
        DeliveryError::Timeout(timeout)
    } else if error.is_tls() {
        DeliveryError::Tls(text)
    } else if error.is_client() {
        // Client errors are decisions about this server (no STARTTLS offered, no common
        // authentication mechanism) or this message; neither changes on retry.
        if text.contains("STARTTLS") {
            DeliveryError::Tls(text)
        } else {
            DeliveryError::InvalidMessage(text)
        }
    } else if text.starts_with("Connection error") {
        DeliveryError::Connect(text)
    } else {
        DeliveryError::Transport(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn settings_are_checked_when_the_sender_is_built() {
        let mut settings = SmtpSettings {
            host: "mail.example.com".into(),
            from: "TaskFlow <reminders@example.com>".into(),
            ..SmtpSettings::default()
        };
        let sender = EmailSender::new(&settings).unwrap();
        assert_eq!(sender.from_mailbox(), "TaskFlow <reminders@example.com>");
        settings.from = "not an address".into();
        let error = EmailSender::new(&settings).unwrap_err();
        assert!(error.to_string().contains("smtp.from"), "{error}");
        settings.from = "reminders@example.com".into();
        settings.password = Some(Secret::new("pw"));
        let error = EmailSender::new(&settings).unwrap_err();
        assert!(error.to_string().contains("smtp.username"), "{error}");
    }

    #[test]
    fn security_names_are_stable() {
        for (security, name) in [
            (SmtpSecurity::None, "none"),
            (SmtpSecurity::StartTls, "starttls"),
            (SmtpSecurity::Tls, "tls"),
        ] {
            assert_eq!(serde_json::to_value(security).unwrap(), name);
        }
        let settings: SmtpSettings =
            serde_json::from_str(r#"{"host": "smtp.example.com", "security": "tls", "port": 465, "password": "x", "username": "u"}"#)
                .unwrap();
        assert_eq!(settings.security, SmtpSecurity::Tls);
        assert!(!format!("{settings:?}").contains("\"x\""));
    }
}
