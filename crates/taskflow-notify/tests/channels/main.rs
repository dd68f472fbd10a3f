//! Channel tests against real receivers on loopback: an axum HTTP server for webhooks and an
//! aiosmtpd SMTP server (Python, installed by `scripts/install-test-deps.sh`) for email.

mod email;
mod webhook;
