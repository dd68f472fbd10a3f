//! Handlers, one module per resource.

pub mod accounts;
pub mod calendar;
pub mod events;
pub mod health;
pub mod notifications;
pub mod quick_add;
pub mod reminders;
pub mod series;
pub mod tags;
pub mod tasks;
pub mod tokens;
