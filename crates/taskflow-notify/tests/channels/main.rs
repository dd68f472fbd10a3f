//! Channel tests against real receivers on loopback: an axum HTTP server for webhooks and an
//! aiosmtpd SMTP server (Python, installed by `scripts/install-test-deps.sh`) for email.

// Test helpers outside #[test] functions panic on setup failures on purpose.
#![allow(clippy::unwrap_used)]

mod email;
mod webhook;
