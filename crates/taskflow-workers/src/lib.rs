//! TaskFlow's background roles, each an [`taskflow_bus::consumer::EventHandler`] run by a
//! consumer runner (or, for the scheduler, its own loop).
//!
//! - [`audit`]: `task-events` → the append-only audit log.
//! - [`realtime`]: `task-updates` → this process's real-time sessions.
//! - [`scheduler`]: the reminders table → `reminder.due` events, each at its instant, once.
//! - [`notifier`]: `reminder.due` → the in-app feed, webhooks and e-mail, with retries.

pub mod audit;
pub mod notifier;
pub mod realtime;
pub mod scheduler;
