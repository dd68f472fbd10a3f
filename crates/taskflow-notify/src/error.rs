//! What went wrong with one delivery attempt, classified so the caller knows whether to retry.
//!
//! The notifier records every attempt; it retries the [retryable](DeliveryError::is_retryable)
//! ones after [`RetryPolicy::decide`](crate::RetryPolicy::decide) and dead-letters the others
//! at once. The `Display` text is short and safe to store as the attempt's failure reason: it
//! never contains a secret, and the webhook URL (whose query may carry a token) is left out.

use std::time::Duration;

use crate::webhook::TargetError;

/// Longest response or server text kept in a [`DeliveryError`]'s message, in characters.
const MESSAGE_CHARS: usize = 256;

/// Why a delivery attempt failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DeliveryError {
    /// The webhook URL is malformed or points where the [`TargetPolicy`](crate::TargetPolicy)
    /// refuses to go. Permanent: the same URL will be refused again.
    #[error("target refused: {0}")]
    Target(#[from] TargetError),
    /// No complete answer within the timeout. Retryable.
    #[error("no answer within {}", format_duration(*.0))]
    Timeout(Duration),
    /// No connection: name resolution failed, the connection was refused or reset. Retryable.
    #[error("could not connect: {0}")]
    Connect(String),
    /// The webhook receiver answered with a status other than 2xx. Retryable for 5xx, 408 and
    /// 429; permanent for the rest (other 4xx, 410 Gone, and 3xx since redirects are not
    /// followed).
    #[error("receiver answered HTTP {status}{}", detail(body))]
    HttpStatus {
        /// The status code.
        status: u16,
        /// The receiver's `Retry-After` (on 429 and 503), the least time to wait.
        retry_after: Option<Duration>,
        /// The start of the response body (at most 4 KiB read), lossily decoded.
        body: String,
    },
    /// The SMTP server answered with a negative reply. Retryable for 4xx (transient), permanent
    /// for 5xx.
    #[error("SMTP server replied {code}{}", detail(message))]
    SmtpReply {
        /// The three-digit reply code.
        code: u16,
        /// The server's text.
        message: String,
    },
    /// TLS could not be set up: the server does not offer STARTTLS although the settings
    /// require it, or the handshake or certificate check failed. Permanent: the sender never
    /// falls back to plain text, and a misconfigured server or setting does not heal within a
    /// retry schedule; fix it and replay the dead letters.
    #[error("TLS failed: {0}")]
    Tls(String),
    /// The message cannot be sent as built (e.g. an invalid recipient address, no
    /// authentication mechanism in common with the server). Permanent.
    #[error("message refused before sending: {0}")]
    InvalidMessage(String),
    /// The exchange broke off after connecting (I/O error, malformed response). Retryable.
    #[error("transport failed: {0}")]
    Transport(String),
}

impl DeliveryError {
    /// Whether trying again later may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Timeout(_) | Self::Connect(_) | Self::Transport(_) => true,
            Self::HttpStatus { status, .. } => *status >= 500 || *status == 408 || *status == 429,
            Self::SmtpReply { code, .. } => (400..500).contains(code),
            Self::Target(_) | Self::Tls(_) | Self::InvalidMessage(_) => false,
        }
    }

    /// The least time the other side asked us to wait before trying again (HTTP `Retry-After`).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::HttpStatus { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// A stable, low-cardinality name of the failure kind, for metric labels and columns:
    /// `target`, `timeout`, `connect`, `http_status`, `smtp_reply`, `tls`, `invalid_message`,
    /// `transport`.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Target(_) => "target",
            Self::Timeout(_) => "timeout",
            Self::Connect(_) => "connect",
            Self::HttpStatus { .. } => "http_status",
            Self::SmtpReply { .. } => "smtp_reply",
            Self::Tls(_) => "tls",
            Self::InvalidMessage(_) => "invalid_message",
            Self::Transport(_) => "transport",
        }
    }
}

/// `: <text>` with the text shortened and control characters replaced, or nothing if empty.
fn detail(text: &str) -> String {
    let text = text.trim();
    if text.is_empty() {
        return String::new();
    }
    format!(": {}", short_text(text))
}

/// `text` on one line, at most [`MESSAGE_CHARS`] characters.
pub(crate) fn short_text(text: &str) -> String {
    let mut short: String = text
        .chars()
        .take(MESSAGE_CHARS)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if text.chars().count() > MESSAGE_CHARS {
        short.push('…');
    }
    short
}

/// The error and its sources joined with `: ` (the outer messages of HTTP and SMTP client
/// errors alone rarely say what happened).
pub(crate) fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    short_text(&text)
}

fn format_duration(duration: Duration) -> String {
    if duration.subsec_millis() == 0 {
        format!("{} s", duration.as_secs())
    } else {
        format!("{} ms", duration.as_millis())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn http(status: u16) -> DeliveryError {
        DeliveryError::HttpStatus {
            status,
            retry_after: None,
            body: String::new(),
        }
    }

    #[test]
    fn http_statuses_are_classified() {
        for status in [500, 502, 503, 504, 408, 429] {
            assert!(http(status).is_retryable(), "{status}");
        }
        for status in [301, 400, 401, 403, 404, 410, 413, 422] {
            assert!(!http(status).is_retryable(), "{status}");
        }
    }

    #[test]
    fn smtp_replies_are_classified() {
        let reply = |code| DeliveryError::SmtpReply {
            code,
            message: "x".into(),
        };
        assert!(reply(421).is_retryable());
        assert!(reply(451).is_retryable());
        assert!(!reply(550).is_retryable());
        assert!(!reply(554).is_retryable());
    }

    #[test]
    fn messages_are_short_and_on_one_line() {
        let error = DeliveryError::HttpStatus {
            status: 500,
            retry_after: None,
            body: format!("line one\nline two {}", "x".repeat(5000)),
        };
        let message = error.to_string();
        assert!(message.starts_with("receiver answered HTTP 500: line one line two"));
        assert!(!message.contains('\n'));
        assert!(message.chars().count() < 300, "{message}");
        assert_eq!(http(404).to_string(), "receiver answered HTTP 404");
        assert_eq!(
            DeliveryError::Timeout(Duration::from_secs(10)).to_string(),
            "no answer within 10 s"
        );
        assert_eq!(
            DeliveryError::Timeout(Duration::from_millis(300)).to_string(),
            "no answer within 300 ms"
        );
    }
}
