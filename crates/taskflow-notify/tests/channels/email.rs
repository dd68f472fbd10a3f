//! The email sender against a real SMTP server on 127.0.0.1: aiosmtpd, run by
//! `smtp_capture.py` with the interpreter in `TASKFLOW_TEST_PYTHON` (default
//! `$HOME/.cache/taskflow/venv/bin/python`, set up by `scripts/install-test-deps.sh`).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use chrono::{DateTime, Utc};
use taskflow_notify::{
    DeliveryError, EmailMessage, EmailSender, SmtpSecurity, SmtpSettings, reminder_email,
};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// A running `smtp_capture.py`; killed when dropped (and it exits by itself when our end of
/// its stdin closes).
struct SmtpCapture {
    _child: Child,
    port: u16,
    directory: tempfile::TempDir,
}

fn python() -> PathBuf {
    let python = std::env::var_os("TASKFLOW_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME").expect("HOME is not set");
            Path::new(&home).join(".cache/taskflow/venv/bin/python")
        });
    assert!(
        python.exists(),
        "{} is missing: run scripts/install-test-deps.sh (or set TASKFLOW_TEST_PYTHON to a python with aiosmtpd)",
        python.display()
    );
    python
}

impl SmtpCapture {
    async fn start(extra_args: &[&str]) -> Self {
        let directory = tempfile::tempdir().unwrap();
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/channels/smtp_capture.py"
        );
        let mut child = Command::new(python())
            .arg(script)
            .arg(directory.path())
            .args(extra_args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("start smtp_capture.py");
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        tokio::time::timeout(
            Duration::from_secs(30),
            BufReader::new(stdout).read_line(&mut line),
        )
        .await
        .expect("smtp_capture.py did not report its port within 30 s (is aiosmtpd installed?)")
        .unwrap();
        let port = line
            .trim()
            .strip_prefix("PORT ")
            .and_then(|port| port.parse().ok())
            .unwrap_or_else(|| panic!("unexpected first line from smtp_capture.py: {line:?}"));
        Self {
            _child: child,
            port,
            directory,
        }
    }

    fn settings(&self, security: SmtpSecurity) -> SmtpSettings {
        SmtpSettings {
            host: "127.0.0.1".into(),
            port: self.port,
            security,
            from: "TaskFlow <reminders@taskflow.test>".into(),
            timeout_secs: 10,
            ..SmtpSettings::default()
        }
    }

    /// The messages received so far, oldest first (saved before the server answered 250).
    fn messages(&self) -> Vec<serde_json::Value> {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(self.directory.path())
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
            .collect();
        paths.sort();
        paths
            .iter()
            .map(|path| serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap())
            .collect()
    }
}

fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .unwrap()
        .with_timezone(&Utc)
}

fn simple_message(to: &str) -> EmailMessage {
    EmailMessage {
        to: to.into(),
        subject: "Hello".into(),
        text: "plain".into(),
        html: "<p>html</p>".into(),
    }
}

#[tokio::test]
async fn sends_the_reminder_email_as_plain_text_and_html() {
    let server = SmtpCapture::start(&[]).await;
    let sender = EmailSender::new(&server.settings(SmtpSecurity::None)).unwrap();
    let title = "<script>alert('x')</script> & pay rent";
    let email = reminder_email(
        "Ada Lovelace <ada@example.com>",
        title,
        Some(at("2026-03-29T07:00:00Z")),
        at("2026-03-29T06:30:00Z"),
        chrono_tz::Europe::Berlin,
        Some("https://taskflow.example.com/tasks/42"),
    );
    sender.send(&email).await.unwrap();

    let messages = server.messages();
    assert_eq!(messages.len(), 1);
    let received = &messages[0];
    assert_eq!(received["mail_from"], "reminders@taskflow.test");
    assert_eq!(received["rcpt_tos"], serde_json::json!(["ada@example.com"]));
    assert_eq!(received["from"], "TaskFlow <reminders@taskflow.test>");
    assert_eq!(received["to"], "Ada Lovelace <ada@example.com>");
    assert_eq!(received["subject"], format!("Reminder: {title}"));
    assert_eq!(received["content_type"], "multipart/alternative");

    let parts = received["parts"].as_array().unwrap();
    assert_eq!(parts.len(), 2, "{parts:?}");
    assert_eq!(parts[0]["content_type"], "text/plain");
    assert_eq!(parts[1]["content_type"], "text/html");
    let text = parts[0]["content"].as_str().unwrap();
    let html = parts[1]["content"].as_str().unwrap();
    // Summer time began that night in Berlin: 07:00 UTC is 09:00 CEST.
    assert!(
        text.contains("Due: Sunday, 29 March 2026, 09:00 CEST (Europe/Berlin)"),
        "{text}"
    );
    assert!(
        text.contains(title),
        "the plain text keeps the title as typed"
    );
    assert!(text.contains("https://taskflow.example.com/tasks/42"));
    assert!(!html.contains("<script>"), "{html}");
    assert!(
        html.contains("<h1>&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; pay rent</h1>"),
        "{html}"
    );
    assert!(html.contains("<a href=\"https://taskflow.example.com/tasks/42\">"));

    // The pooled connection carries a second message too.
    sender
        .send(&simple_message("bob@example.com"))
        .await
        .unwrap();
    let messages = server.messages();
    assert_eq!(messages.len(), 2);
    assert_eq!(
        messages[1]["rcpt_tos"],
        serde_json::json!(["bob@example.com"])
    );
}

#[tokio::test]
async fn transient_replies_are_retryable() {
    let server = SmtpCapture::start(&["--rcpt-reply", "451 4.3.0 Mailbox busy, try later"]).await;
    let sender = EmailSender::new(&server.settings(SmtpSecurity::None)).unwrap();
    let error = sender
        .send(&simple_message("ada@example.com"))
        .await
        .unwrap_err();
    assert!(
        matches!(&error, DeliveryError::SmtpReply { code: 451, message } if message.contains("try later")),
        "{error:?}"
    );
    assert!(error.is_retryable());
    assert!(server.messages().is_empty());
}

#[tokio::test]
async fn permanent_replies_are_not_retryable() {
    let server = SmtpCapture::start(&["--rcpt-reply", "550 5.1.1 No such user"]).await;
    let sender = EmailSender::new(&server.settings(SmtpSecurity::None)).unwrap();
    let error = sender
        .send(&simple_message("nobody@example.com"))
        .await
        .unwrap_err();
    assert!(
        matches!(error, DeliveryError::SmtpReply { code: 550, .. }),
        "{error:?}"
    );
    assert!(!error.is_retryable());
    assert_eq!(
        error.to_string(),
        "SMTP server replied 550: 5.1.1 No such user"
    );
}

#[tokio::test]
async fn required_starttls_is_never_skipped() {
    // The server offers no STARTTLS; the sender refuses to go on in plain text. Permanent: a
    // relay without TLS will not grow it during the retry schedule.
    let server = SmtpCapture::start(&[]).await;
    let sender = EmailSender::new(&server.settings(SmtpSecurity::StartTls)).unwrap();
    let error = sender
        .send(&simple_message("ada@example.com"))
        .await
        .unwrap_err();
    assert!(matches!(error, DeliveryError::Tls(_)), "{error:?}");
    assert!(!error.is_retryable());
    assert!(error.to_string().contains("STARTTLS"), "{error}");
    assert!(server.messages().is_empty());
}

#[tokio::test]
async fn an_unreachable_server_is_retryable() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let sender = EmailSender::new(&SmtpSettings {
        host: "127.0.0.1".into(),
        port,
        security: SmtpSecurity::None,
        timeout_secs: 5,
        ..SmtpSettings::default()
    })
    .unwrap();
    let error = sender
        .send(&simple_message("ada@example.com"))
        .await
        .unwrap_err();
    assert!(error.is_retryable(), "{error:?}");
    assert!(
        matches!(
            error,
            DeliveryError::Connect(_) | DeliveryError::Transport(_)
        ),
        "{error:?}"
    );
}

#[tokio::test]
async fn an_invalid_recipient_is_permanent_and_never_sent() {
    let sender = EmailSender::new(&SmtpSettings {
        security: SmtpSecurity::None,
        ..SmtpSettings::default()
    })
    .unwrap();
    let error = sender
        .send(&simple_message("not an address"))
        .await
        .unwrap_err();
    assert!(
        matches!(error, DeliveryError::InvalidMessage(_)),
        "{error:?}"
    );
    assert!(!error.is_retryable());
}
