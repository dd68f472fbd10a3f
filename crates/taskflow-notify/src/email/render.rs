//! The reminder email: subject, plain text and HTML, built with `format!` (no template engine).
//! Every piece of user text goes into the HTML through [`escape_html`].

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

use super::EmailMessage;

/// Longest title quoted in a subject line, in characters.
const SUBJECT_TITLE_CHARS: usize = 120;

/// Escapes `text` for HTML element content and double- or single-quoted attribute values:
/// `&`, `<`, `>`, `"` and `'` become character references.
pub fn escape_html(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len() + text.len() / 8);
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            _ => escaped.push(c),
        }
    }
    escaped
}

/// The reminder email for a task titled `title`, due at `due_at` (if it has a due date), whose
/// reminder was set for `remind_at`; times are shown in `time_zone`. `task_url` links to the
/// task in the UI; it is left out unless it is an `http`/`https` URL.
pub fn reminder_email(
    to: &str,
    title: &str,
    due_at: Option<DateTime<Utc>>,
    remind_at: DateTime<Utc>,
    time_zone: Tz,
    task_url: Option<&str>,
) -> EmailMessage {
    let one_line: String = title
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let one_line = one_line.trim();
    let mut subject_title: String = one_line.chars().take(SUBJECT_TITLE_CHARS).collect();
    if one_line.chars().count() > SUBJECT_TITLE_CHARS {
        subject_title.push('…');
    }
    let subject = format!("Reminder: {subject_title}");
    let due = due_at.map(|due| local_time(due, time_zone));
    let reminded = local_time(remind_at, time_zone);
    let link = task_url.filter(|url| {
        url::Url::parse(url).is_ok_and(|parsed| matches!(parsed.scheme(), "http" | "https"))
    });

    let mut text = format!("Reminder: {one_line}\n\n");
    if let Some(due) = &due {
        text.push_str(&format!("Due: {due}\n"));
    }
    text.push_str(&format!("Reminder set for: {reminded}\n"));
    if let Some(link) = link {
        text.push_str(&format!("\nOpen the task: {link}\n"));
    }
    text.push_str("\nYou receive this email because you set a reminder in TaskFlow.\n");

    let mut html = String::from(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"></head>\n<body style=\"font-family: sans-serif\">\n",
    );
    html.push_str(&format!("<h1>{}</h1>\n<p>", escape_html(one_line)));
    if let Some(due) = &due {
        html.push_str(&format!("<strong>Due:</strong> {}<br>\n", escape_html(due)));
    }
    html.push_str(&format!(
        "<strong>Reminder set for:</strong> {}</p>\n",
        escape_html(&reminded)
    ));
    if let Some(link) = link {
        html.push_str(&format!(
            "<p><a href=\"{}\">Open the task</a></p>\n",
            escape_html(link)
        ));
    }
    html.push_str(
        "<p style=\"color: #666\">You receive this email because you set a reminder in TaskFlow.</p>\n</body></html>\n",
    );

    EmailMessage {
        to: to.to_owned(),
        subject,
        text,
        html,
    }
}

/// `Thursday, 15 January 2026, 09:00 CET (Europe/Berlin)`.
fn local_time(instant: DateTime<Utc>, time_zone: Tz) -> String {
    let local = instant.with_timezone(&time_zone);
    format!(
        "{} ({})",
        local.format("%A, %-d %B %Y, %H:%M %Z"),
        time_zone.name()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(
            escape_html(r#"<script>alert("x&y")</script> 'q'"#),
            "&lt;script&gt;alert(&quot;x&amp;y&quot;)&lt;/script&gt; &#39;q&#39;"
        );
        assert_eq!(escape_html("Grüße"), "Grüße");
    }

    #[test]
    fn renders_times_in_the_users_zone() {
        let email = reminder_email(
            "ada@example.com",
            "Pay rent",
            Some(at("2026-01-15T08:00:00Z")),
            at("2026-01-15T07:30:00Z"),
            chrono_tz::Europe::Berlin,
            Some("https://taskflow.example.com/tasks/42"),
        );
        assert_eq!(email.to, "ada@example.com");
        assert_eq!(email.subject, "Reminder: Pay rent");
        assert!(
            email
                .text
                .contains("Due: Thursday, 15 January 2026, 09:00 CET (Europe/Berlin)"),
            "{}",
            email.text
        );
        assert!(
            email
                .text
                .contains("Reminder set for: Thursday, 15 January 2026, 08:30 CET")
        );
        assert!(
            email
                .text
                .contains("Open the task: https://taskflow.example.com/tasks/42")
        );
        assert!(email.html.contains("<h1>Pay rent</h1>"));
        assert!(
            email
                .html
                .contains("<a href=\"https://taskflow.example.com/tasks/42\">")
        );
    }

    #[test]
    fn user_text_cannot_inject_markup_or_headers() {
        let email = reminder_email(
            "ada@example.com",
            "<script>alert(1)</script>\r\nBcc: eve@example.com",
            None,
            at("2026-07-01T12:00:00Z"),
            chrono_tz::America::New_York,
            Some("javascript:alert(1)"),
        );
        assert!(!email.subject.contains('\n') && !email.subject.contains('\r'));
        assert!(!email.html.contains("<script>"));
        assert!(email.html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(!email.html.contains("javascript:"));
        assert!(!email.text.contains("javascript:"));
        assert!(!email.text.contains("Due:"));
        assert!(email.text.contains("08:00 EDT (America/New_York)"));
        let long = reminder_email(
            "a@example.com",
            &"x".repeat(500),
            None,
            at("2026-07-01T12:00:00Z"),
            chrono_tz::UTC,
            None,
        );
        assert!(long.subject.chars().count() <= "Reminder: ".len() + SUBJECT_TITLE_CHARS + 1);
    }
}
