//! The outbox, consumer offsets, processed-event records, dead letters and the audit log on SQLite.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension as _, Row, params};
use taskflow_domain::UserId;
use taskflow_domain::events::OutgoingEvent;

use super::SqliteStore;
use super::rows::micros;
use super::tasks::query_all;
use crate::error::StoreError;
use crate::{
    AuditEntry, AuditPage, AuditQuery, ConsumerEffect, ConsumerStore, DeadLetter, OutboxBacklog,
    OutboxRecord, OutboxStore,
};

/// An outbox row ready to insert: the event already serialised.
pub(crate) struct SerializedEvent {
    event_id: String,
    topic: String,
    partition_key: String,
    event_type: String,
    payload: String,
    created_at: i64,
}

/// Serialises `events` for [`write_serialized`] (outside the writer thread where possible).
pub(crate) fn serialize_events(
    events: &[OutgoingEvent],
) -> Result<Vec<SerializedEvent>, StoreError> {
    events
        .iter()
        .map(|outgoing| {
            Ok(SerializedEvent {
                event_id: outgoing.event.id.clone(),
                topic: outgoing.topic.clone(),
                partition_key: outgoing.event.partitionkey.clone(),
                event_type: outgoing.event.event_type.clone(),
                payload: serde_json::to_string(&outgoing.event)
                    .map_err(|e| StoreError::Corrupt(format!("event does not serialise: {e}")))?,
                created_at: micros(outgoing.event.time),
            })
        })
        .collect()
}

/// Appends serialised events to the outbox inside the caller's transaction; returns the last
/// seq written.
pub(crate) fn write_serialized(
    conn: &Connection,
    events: &[SerializedEvent],
) -> Result<Option<i64>, StoreError> {
    let mut last = None;
    for event in events {
        last = Some(insert_outbox_row(
            conn,
            &event.event_id,
            &event.topic,
            &event.partition_key,
            &event.event_type,
            &event.payload,
            event.created_at,
        )?);
    }
    Ok(last)
}

/// Appends `events` to the outbox inside the caller's transaction; returns the last seq written.
pub(crate) fn write_events(
    conn: &Connection,
    events: &[OutgoingEvent],
) -> Result<Option<i64>, StoreError> {
    write_serialized(conn, &serialize_events(events)?)
}

fn insert_outbox_row(
    conn: &Connection,
    event_id: &str,
    topic: &str,
    partition_key: &str,
    event_type: &str,
    payload: &str,
    at_micros: i64,
) -> Result<i64, StoreError> {
    // `last_insert_rowid` rather than `RETURNING seq`: see `tasks::insert_row`.
    conn.prepare_cached(
        "INSERT INTO outbox (event_id, topic, partition_key, event_type, payload, created_at)
         VALUES (?, ?, ?, ?, ?, ?)",
    )?
    .execute(params![
        event_id,
        topic,
        partition_key,
        event_type,
        payload,
        at_micros
    ])?;
    Ok(conn.last_insert_rowid())
}

fn instant(value: i64) -> Result<DateTime<Utc>, StoreError> {
    DateTime::from_timestamp_micros(value)
        .ok_or_else(|| StoreError::Corrupt(format!("instant out of range: {value}")))
}

fn outbox_from_row(row: &Row<'_>) -> Result<OutboxRecord, StoreError> {
    Ok(OutboxRecord {
        seq: row.get("seq")?,
        event_id: row.get("event_id")?,
        topic: row.get("topic")?,
        partition_key: row.get("partition_key")?,
        event_type: row.get("event_type")?,
        payload: row.get("payload")?,
        created_at: instant(row.get("created_at")?)?,
    })
}

pub(super) fn dead_letter_from_row(row: &Row<'_>) -> Result<DeadLetter, StoreError> {
    let id: String = row.get("id")?;
    let attempts: i64 = row.get("attempts")?;
    Ok(DeadLetter {
        id: id
            .parse()
            .map_err(|_| StoreError::Corrupt(format!("dead_letters.id: {id}")))?,
        consumer: row.get("consumer")?,
        topic: row.get("topic")?,
        event_id: row.get("event_id")?,
        event_type: row.get("event_type")?,
        payload: row.get("payload")?,
        error: row.get("error")?,
        attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
        created_at: instant(row.get("created_at")?)?,
        replayed_at: row
            .get::<_, Option<i64>>("replayed_at")?
            .map(instant)
            .transpose()?,
    })
}

#[async_trait]
impl OutboxStore for SqliteStore {
    async fn enqueue_events(&self, events: &[OutgoingEvent]) -> Result<(), StoreError> {
        let events = serialize_events(events)?;
        self.writes
            .write(move |conn| Ok(((), write_serialized(conn, &events)?)))
            .await
    }

    async fn unpublished_events(&self, limit: u32) -> Result<Vec<OutboxRecord>, StoreError> {
        self.read(move |conn| {
            query_all(
                conn,
                "SELECT * FROM outbox WHERE seq > (SELECT published_through FROM outbox_relay)
                 ORDER BY seq LIMIT ?",
                &[Value::Integer(i64::from(limit))],
                outbox_from_row,
            )
        })
        .await
    }

    /// One writer commits rows in seq order, so the rows being marked are all at or before
    /// `marking_through`.
    async fn unpublished_events_after(
        &self,
        marking_through: i64,
        limit: u32,
    ) -> Result<Vec<OutboxRecord>, StoreError> {
        self.read(move |conn| {
            query_all(
                conn,
                "SELECT * FROM outbox WHERE seq > MAX((SELECT published_through FROM outbox_relay), ?)
                 ORDER BY seq LIMIT ?",
                &[
                    Value::Integer(marking_through),
                    Value::Integer(i64::from(limit)),
                ],
                outbox_from_row,
            )
        })
        .await
    }

    async fn mark_published(&self, seqs: &[i64], _at: DateTime<Utc>) -> Result<(), StoreError> {
        if seqs.is_empty() {
            return Ok(());
        }
        // The relay hands rows over in seq order: everything up to the highest is published.
        let through = seqs.iter().copied().max().unwrap_or_default();
        self.writes
            .write(move |conn| {
                conn.prepare_cached(
                    "UPDATE outbox_relay SET published_through = MAX(published_through, ?)",
                )?
                .execute([through])?;
                Ok(((), None))
            })
            .await
    }

    async fn events_after(
        &self,
        topic: &str,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<OutboxRecord>, StoreError> {
        let topic = topic.to_owned();
        self.read(move |conn| {
            query_all(
                conn,
                "SELECT * FROM outbox WHERE topic = ? AND seq > ? ORDER BY seq LIMIT ?",
                &[
                    Value::Text(topic),
                    Value::Integer(after_seq),
                    Value::Integer(i64::from(limit)),
                ],
                outbox_from_row,
            )
        })
        .await
    }

    async fn consumer_offset(&self, group: &str, topic: &str) -> Result<i64, StoreError> {
        let (group, topic) = (group.to_owned(), topic.to_owned());
        self.read(move |conn| {
            let seq: Option<i64> = conn
                .prepare_cached(
                    "SELECT seq FROM consumer_offsets WHERE consumer_group = ? AND topic = ?",
                )?
                .query_row([group, topic], |row| row.get(0))
                .optional()?;
            Ok(seq.unwrap_or(0))
        })
        .await
    }

    async fn commit_consumer_offset(
        &self,
        group: &str,
        topic: &str,
        seq: i64,
    ) -> Result<(), StoreError> {
        let (group, topic) = (group.to_owned(), topic.to_owned());
        self.writes
            .write(move |conn| {
                conn.prepare_cached(
                    "INSERT INTO consumer_offsets (consumer_group, topic, seq) VALUES (?, ?, ?)
                     ON CONFLICT (consumer_group, topic) DO UPDATE SET seq = MAX(seq, excluded.seq)",
                )?
                .execute(params![group, topic, seq])?;
                Ok(((), None))
            })
            .await
    }

    async fn prune_events(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        self.writes
            .write(move |conn| {
                let deleted = conn
                    .prepare_cached(
                        "DELETE FROM outbox WHERE seq <= (SELECT published_through FROM outbox_relay)
                           AND created_at < ?
                           AND NOT EXISTS (SELECT 1 FROM consumer_offsets c WHERE c.topic = outbox.topic AND c.seq < outbox.seq)",
                    )?
                    .execute([micros(before)])?;
                conn.prepare_cached("DELETE FROM processed_events WHERE processed_at < ?")?
                    .execute([micros(before)])?;
                Ok((deleted as u64, None))
            })
            .await
    }

    async fn outbox_backlog(&self) -> Result<OutboxBacklog, StoreError> {
        self.read(|conn| {
            let (unpublished, oldest): (i64, Option<i64>) = conn
                .prepare_cached(
                    "SELECT COUNT(*), MIN(created_at) FROM outbox
                     WHERE seq > (SELECT published_through FROM outbox_relay)",
                )?
                .query_row([], |row| Ok((row.get(0)?, row.get(1)?)))?;
            Ok(OutboxBacklog {
                unpublished,
                oldest_unpublished_at: oldest.map(instant).transpose()?,
            })
        })
        .await
    }

    fn outbox_commits(&self) -> tokio::sync::watch::Receiver<i64> {
        self.outbox_commits.subscribe()
    }

    async fn lead_outbox_relay(
        &self,
        _lapse_after: std::time::Duration,
    ) -> Result<bool, StoreError> {
        // One process owns the database file.
        Ok(true)
    }

    async fn resign_outbox_relay(&self) {}
}

#[async_trait]
impl ConsumerStore for SqliteStore {
    async fn apply_once(
        &self,
        consumer: &str,
        event_id: &str,
        effect: &ConsumerEffect,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let (consumer, event_id, effect) =
            (consumer.to_owned(), event_id.to_owned(), effect.clone());
        self.writes
            .write(move |conn| {
                let fresh = conn
                    .prepare_cached(
                        "INSERT INTO processed_events (consumer, event_id, processed_at) VALUES (?, ?, ?)
                         ON CONFLICT (consumer, event_id) DO NOTHING",
                    )?
                    .execute(params![consumer, event_id, micros(now)])?
                    == 1;
                if !fresh {
                    return Ok(((false, None), None));
                }
                let mut written = (None, None);
                match &effect {
                    ConsumerEffect::Nothing => {}
                    ConsumerEffect::Notify(plan) => {
                        written = super::notifications::apply_plan(conn, plan)?;
                    }
                    ConsumerEffect::Audit(entry) => {
                        conn.prepare_cached(
                            "INSERT INTO audit_log (event_id, user_id, task_id, event_type, occurred_at, data)
                             VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (event_id) DO NOTHING",
                        )?
                        .execute(params![
                            entry.event_id,
                            entry.user_id.to_string(),
                            entry.task_id.to_string(),
                            entry.event_type,
                            micros(entry.occurred_at),
                            entry.data.to_string(),
                        ])?;
                    }
                }
                Ok(((true, written.1), written.0))
            })
            .await
            .map(|(fresh, earliest_delivery)| {
                crate::announce_earliest(&self.delivery_changes, earliest_delivery);
                fresh
            })
    }

    async fn record_dead_letter(
        &self,
        letter: &DeadLetter,
        notice: &OutgoingEvent,
    ) -> Result<(), StoreError> {
        let letter = letter.clone();
        let notice = serialize_events(std::slice::from_ref(notice))?;
        self.writes
            .write(move |conn| {
                conn.prepare_cached(
                    "INSERT INTO dead_letters (id, consumer, topic, event_id, event_type, payload, error, attempts, created_at)
                     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                )?
                .execute(params![
                    letter.id.to_string(),
                    letter.consumer,
                    letter.topic,
                    letter.event_id,
                    letter.event_type,
                    letter.payload,
                    letter.error,
                    i64::from(letter.attempts),
                    micros(letter.created_at),
                ])?;
                let last = write_serialized(conn, &notice)?;
                Ok(((), last))
            })
            .await
    }

    async fn dead_letters(&self, limit: u32) -> Result<Vec<DeadLetter>, StoreError> {
        self.read(move |conn| {
            query_all(
                conn,
                "SELECT * FROM dead_letters ORDER BY created_at DESC, id DESC LIMIT ?",
                &[Value::Integer(i64::from(limit))],
                dead_letter_from_row,
            )
        })
        .await
    }

    async fn replay_dead_letter(
        &self,
        id: uuid::Uuid,
        now: DateTime<Utc>,
    ) -> Result<DeadLetter, StoreError> {
        self.writes
            .write(move |conn| {
                let mut letter = conn
                    .prepare_cached("SELECT * FROM dead_letters WHERE id = ?")?
                    .query_row([id.to_string()], |row| Ok(dead_letter_from_row(row)))
                    .optional()?
                    .ok_or(StoreError::NotFound)??;
                let event: serde_json::Value = serde_json::from_str(&letter.payload)
                    .map_err(|e| StoreError::Corrupt(format!("dead letter payload: {e}")))?;
                let partition_key = event["partitionkey"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                let seq = insert_outbox_row(
                    conn,
                    &letter.event_id,
                    &letter.topic,
                    &partition_key,
                    &letter.event_type,
                    &letter.payload,
                    micros(now),
                )?;
                conn.prepare_cached("UPDATE dead_letters SET replayed_at = ? WHERE id = ?")?
                    .execute(params![micros(now), id.to_string()])?;
                letter.replayed_at = Some(now);
                Ok((letter, Some(seq)))
            })
            .await
    }

    async fn audit_entries(
        &self,
        user: UserId,
        query: AuditQuery,
    ) -> Result<AuditPage, StoreError> {
        let sql = audit_statement(query.task.is_some(), query.newest_first);
        let mut values = vec![
            Value::Text(user.to_string()),
            Value::Integer(query.start()),
            Value::Integer(query.fetch()),
        ];
        if let Some(task) = query.task {
            values.push(Value::Text(task.to_string()));
        }
        let rows = self
            .read(move |conn| query_all(conn, sql, &values, audit_row))
            .await?;
        Ok(AuditPage::from_rows(rows, query.limit))
    }
}

/// The statement reading a page of a user's audit log (`?1` user, `?2` the position to start
/// after, `?3` how many, `?4` the task if `of_task`): one per shape, so each walks
/// `audit_log_user_seq` or `audit_log_task` in order from the cursor (`?4 IS NULL OR …` would
/// keep SQLite off the task index). Both indexes fit a task's page equally well as far as
/// SQLite can tell without statistics, so `INDEXED BY` names the one that reads only the task's
/// entries.
fn audit_statement(of_task: bool, newest_first: bool) -> &'static str {
    match (of_task, newest_first) {
        (false, false) => {
            "SELECT * FROM audit_log WHERE user_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3"
        }
        (false, true) => {
            "SELECT * FROM audit_log WHERE user_id = ?1 AND seq < ?2
             ORDER BY seq DESC LIMIT ?3"
        }
        (true, false) => {
            "SELECT * FROM audit_log INDEXED BY audit_log_task
             WHERE task_id = ?4 AND user_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3"
        }
        (true, true) => {
            "SELECT * FROM audit_log INDEXED BY audit_log_task
             WHERE task_id = ?4 AND user_id = ?1 AND seq < ?2 ORDER BY seq DESC LIMIT ?3"
        }
    }
}

/// An audit entry with its log position.
fn audit_row(row: &Row<'_>) -> Result<(i64, AuditEntry), StoreError> {
    let user_id: String = row.get("user_id")?;
    let task_id: String = row.get("task_id")?;
    let data: String = row.get("data")?;
    let entry = AuditEntry {
        event_id: row.get("event_id")?,
        user_id: user_id
            .parse()
            .map_err(|_| StoreError::Corrupt("audit_log.user_id".into()))?,
        task_id: task_id
            .parse()
            .map_err(|_| StoreError::Corrupt("audit_log.task_id".into()))?,
        event_type: row.get("event_type")?,
        occurred_at: instant(row.get("occurred_at")?)?,
        data: serde_json::from_str(&data)
            .map_err(|e| StoreError::Corrupt(format!("audit_log.data: {e}")))?,
    };
    Ok((row.get("seq")?, entry))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every page of the audit log, of one task or all, in either order, walks an index from the
    /// cursor instead of sorting the user's entries.
    #[tokio::test]
    async fn audit_pages_walk_an_index_in_order() {
        let (store, dir) = crate::sqlite::scratch_store("audit-plan").await;
        for (of_task, newest_first, index) in [
            (false, false, "audit_log_user_seq"),
            (false, true, "audit_log_user_seq"),
            (true, false, "audit_log_task"),
            (true, true, "audit_log_task"),
        ] {
            let mut values = vec![
                Value::Text("u".into()),
                Value::Integer(5),
                Value::Integer(10),
            ];
            if of_task {
                values.push(Value::Text("t".into()));
            }
            let sql = audit_statement(of_task, newest_first).to_owned();
            let plan = crate::sqlite::query_plan(&store, sql, values).await;
            let shape = format!("task {of_task}, newest first {newest_first}");
            assert!(plan.contains(index), "{shape}: {plan}");
            assert!(!plan.contains("TEMP B-TREE"), "{shape} sorts: {plan}");
        }
        drop(store);
        let _ = std::fs::remove_dir_all(dir);
    }
}
