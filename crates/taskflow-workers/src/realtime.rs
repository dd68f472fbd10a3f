//! The realtime feeder: every process serving streams consumes `task-updates` and hands each
//! `task.changed` event to its in-process hub (a [`RealtimeSink`]), which fans it out to the
//! owner's open sessions and drops it at once when the owner has none here.
//!
//! Every instance must see every update (a change made through instance A must reach a session
//! on instance B), so each process joins its own consumer group ([`realtime_group`]). The
//! feeder keeps no state and has no side effects to make idempotent; a redelivered event gets a
//! new sequence number at the hub, which clients tolerate (updates carry the task version).
//!
//! `notification.created` (written by the notifier on the same topic) arrives the same way.

use std::hash::{BuildHasher as _, Hasher as _};
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, TimeDelta, Utc};
use taskflow_bus::consumer::{EventHandler, HandlerError};
use taskflow_domain::UserId;
use taskflow_domain::events::CloudEvent;

/// Prefix of the feeder's consumer groups.
pub const REALTIME_GROUP_PREFIX: &str = "realtime";

/// Event types (short form) streamed to clients.
pub const STREAMED_TYPES: &[&str] = &["task.changed", "notification.created"];

/// Events older than this before the feeder started are history (a fresh consumer group starts
/// at the beginning of the stream): nobody here was connected then, so they are skipped. The
/// margin absorbs clock differences between instances.
pub const HISTORY_MARGIN: TimeDelta = TimeDelta::seconds(30);

/// The consumer group of this process's feeder. On brokers every process needs its own group
/// (`realtime-<random>`) to see every update. The in-process bus reads the shared outbox, where
/// every subscription sees every row anyway, so it uses one fixed group: random ones would
/// leave offsets behind that hold back outbox pruning.
pub fn realtime_group(bus_name: &str) -> String {
    if bus_name == "memory" {
        return REALTIME_GROUP_PREFIX.to_owned();
    }
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    hasher.write_i64(Utc::now().timestamp_nanos_opt().unwrap_or_default());
    format!("{REALTIME_GROUP_PREFIX}-{:016x}", hasher.finish())
}

/// One update for one user's sessions.
#[derive(Clone, Debug, PartialEq)]
pub struct RealtimeUpdate {
    /// Whose sessions get it.
    pub user_id: UserId,
    /// The type clients see, e.g. `task.changed`.
    pub event_type: String,
    /// When the change happened (the CloudEvent `time`).
    pub time: DateTime<Utc>,
    /// The payload (the event's data).
    pub data: serde_json::Value,
}

/// Where updates go: the HTTP layer's hub.
pub trait RealtimeSink: Send + Sync + 'static {
    /// Hands `update` over; must not block.
    fn deliver(&self, update: RealtimeUpdate);
}

impl<F: Fn(RealtimeUpdate) + Send + Sync + 'static> RealtimeSink for F {
    fn deliver(&self, update: RealtimeUpdate) {
        self(update)
    }
}

/// Feeds streamed events to a [`RealtimeSink`].
pub struct RealtimeHandler {
    sink: Arc<dyn RealtimeSink>,
    since: DateTime<Utc>,
}

impl RealtimeHandler {
    /// A handler feeding `sink`, skipping events from before `started` (less [`HISTORY_MARGIN`]).
    pub fn new(sink: Arc<dyn RealtimeSink>, started: DateTime<Utc>) -> Self {
        Self {
            sink,
            since: started - HISTORY_MARGIN,
        }
    }
}

/// The update for a streamed event, or `None` for other events and history.
pub fn realtime_update(event: &CloudEvent, since: DateTime<Utc>) -> Option<RealtimeUpdate> {
    let event_type = event.short_type();
    if !STREAMED_TYPES.contains(&event_type) || event.time < since {
        return None;
    }
    let owner = event.data["user_id"]
        .as_str()
        .unwrap_or(event.partitionkey.as_str());
    let Ok(user_id) = owner.parse::<UserId>() else {
        tracing::warn!(event_id = %event.id, "streamed event without a valid user_id; skipped");
        return None;
    };
    Some(RealtimeUpdate {
        user_id,
        event_type: event_type.to_owned(),
        time: event.time,
        data: event.data.clone(),
    })
}

#[async_trait]
impl EventHandler for RealtimeHandler {
    async fn handle(&self, event: &CloudEvent) -> Result<(), HandlerError> {
        if let Some(update) = realtime_update(event, self.since) {
            self.sink.deliver(update);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use taskflow_domain::events::{TaskEventKind, task_events};
    use taskflow_domain::{NewTask, Task, TimeZone, Title};

    #[test]
    fn only_fresh_task_changes_are_streamed() {
        let task = Task::create(
            UserId::new(),
            TimeZone::UTC,
            NewTask {
                title: Title::parse("x").unwrap(),
                description: Default::default(),
                priority: Default::default(),
                tags: Default::default(),
                due_at: None,
                time_zone: None,
                recurrence: None,
                reminders: Default::default(),
            },
            Utc::now(),
        )
        .unwrap();
        let now = Utc::now();
        let [full, slim] = task_events(TaskEventKind::Created, &task, now, None);
        assert!(realtime_update(&full.event, now - TimeDelta::seconds(1)).is_none());
        let update = realtime_update(&slim.event, now - TimeDelta::seconds(1)).unwrap();
        assert_eq!(update.user_id, task.user_id);
        assert_eq!(update.event_type, "task.changed");
        assert_eq!(update.data["change"], "upserted");
        assert!(realtime_update(&slim.event, now + TimeDelta::seconds(1)).is_none());
        assert_eq!(realtime_group("memory"), "realtime");
        assert_ne!(realtime_group("nats"), realtime_group("nats"));
    }
}
