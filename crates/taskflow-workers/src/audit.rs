//! The audit consumer: every task event becomes one entry of its owner's append-only audit log.

use std::sync::Arc;

use async_trait::async_trait;
use taskflow_bus::consumer::{EventHandler, HandlerError};
use taskflow_domain::events::CloudEvent;
use taskflow_domain::{Clock, TaskId, UserId};
use taskflow_store::{AuditEntry, ConsumerEffect, Store};

/// The consumer group (and idempotency name) of the audit log.
pub const AUDIT_GROUP: &str = "audit";

/// How long the audit consumer waits after a batch that was not full, to write the events of
/// a steady trickle of writes in a few store commits a second rather than one per event
/// ([`taskflow_bus::consumer::ConsumerRunner::gathering`]); the log lags that much more.
pub const AUDIT_GATHER: std::time::Duration = std::time::Duration::from_millis(50);

/// Writes task events to the audit log, once each.
pub struct AuditHandler {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
}

impl AuditHandler {
    /// A handler writing to `store`.
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>) -> Self {
        Self { store, clock }
    }
}

/// The audit entry for a task event, or `None` for events that are not about a task.
pub fn audit_entry(event: &CloudEvent) -> Result<Option<AuditEntry>, HandlerError> {
    if !event.short_type().starts_with("task.") || event.short_type() == "task.changed" {
        return Ok(None);
    }
    let field = |name: &str| {
        event.data[name]
            .as_str()
            .ok_or_else(|| HandlerError(format!("{} has no `{name}`", event.event_type)))
    };
    let user_id: UserId = field("user_id")?
        .parse()
        .map_err(|_| HandlerError("user_id is not a UUID".into()))?;
    let task_id: TaskId = field("task_id")?
        .parse()
        .map_err(|_| HandlerError("task_id is not a UUID".into()))?;
    Ok(Some(AuditEntry {
        event_id: event.id.clone(),
        user_id,
        task_id,
        event_type: event.event_type.clone(),
        occurred_at: event.time,
        data: event.data.clone(),
    }))
}

#[async_trait]
impl EventHandler for AuditHandler {
    async fn handle(&self, event: &CloudEvent) -> Result<(), HandlerError> {
        let effect = match audit_entry(event)? {
            Some(entry) => ConsumerEffect::Audit(entry),
            None => ConsumerEffect::Nothing,
        };
        self.store
            .apply_once(AUDIT_GROUP, &event.id, &effect, self.clock.now())
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use taskflow_domain::events::{TaskEventKind, task_events};
    use taskflow_domain::{NewTask, Task, TimeZone, Title};

    #[test]
    fn task_events_become_entries_and_others_do_not() {
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
        let [full, slim] = task_events(TaskEventKind::Created, &task, Utc::now(), None);
        let entry = audit_entry(&full.event).unwrap().unwrap();
        assert_eq!((entry.task_id, entry.user_id), (task.id, task.user_id));
        assert!(audit_entry(&slim.event).unwrap().is_none());
        let mut broken = full.event.clone();
        broken.data = serde_json::json!({});
        assert!(audit_entry(&broken).is_err());
    }
}
