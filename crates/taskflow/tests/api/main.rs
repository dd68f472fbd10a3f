//! HTTP integration tests: each starts the real app on port 0 with a fresh database.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod accounts;
mod calendar;
mod events;
mod health;
mod isolation;
mod listing;
mod malformed;
mod mcp;
mod quick_add;
mod rate_limit;
mod realtime;
mod recurrence;
mod reminders;
mod support;
mod tasks;
mod tokens;
mod web;
