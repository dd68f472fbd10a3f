//! The outbox, consumer offsets, processed-event records, dead letters and the audit log on SQLite.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::sqlite::SqliteRow;
use sqlx::{Row, SqliteConnection};
use taskflow_domain::events::OutgoingEvent;
use taskflow_domain::{TaskId, UserId};

use super::SqliteStore;
use super::rows::micros;
use crate::error::StoreError;
use crate::{
    AuditEntry, ConsumerEffect, ConsumerStore, DeadLetter, OutboxBacklog, OutboxRecord, OutboxStore,
};

/// Appends `events` to the outbox inside the caller's transaction; returns the last seq written.
pub(crate) async fn write_events(
    conn: &mut SqliteConnection,
    events: &[OutgoingEvent],
) -> Result<Option<i64>, StoreError> {
    if events.is_empty() {
        return Ok(None);
    }
    // One multi-row statement: every statement is a round trip to SQLite's worker thread.
    let mut sql = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
        "INSERT INTO outbox (event_id, topic, partition_key, event_type, payload, created_at) ",
    );
    let mut payloads = Vec::with_capacity(events.len());
    for outgoing in events {
        payloads.push(
            serde_json::to_string(&outgoing.event)
                .map_err(|e| StoreError::Corrupt(format!("event does not serialise: {e}")))?,
        );
    }
    sql.push_values(
        events.iter().zip(payloads),
        |mut row, (outgoing, payload)| {
            row.push_bind(outgoing.event.id.clone())
                .push_bind(outgoing.topic.clone())
                .push_bind(outgoing.event.partitionkey.clone())
                .push_bind(outgoing.event.event_type.clone())
                .push_bind(payload)
                .push_bind(micros(outgoing.event.time));
        },
    );
    sql.push(" RETURNING seq");
    let seqs: Vec<i64> = sql.build_query_scalar().fetch_all(&mut *conn).await?;
    Ok(seqs.into_iter().max())
}

async fn insert_outbox_row(
    conn: &mut SqliteConnection,
    event_id: &str,
    topic: &str,
    partition_key: &str,
    event_type: &str,
    payload: &str,
    at: DateTime<Utc>,
) -> Result<i64, StoreError> {
    let seq = sqlx::query_scalar(
        "INSERT INTO outbox (event_id, topic, partition_key, event_type, payload, created_at)
         VALUES (?, ?, ?, ?, ?, ?) RETURNING seq",
    )
    .bind(event_id)
    .bind(topic)
    .bind(partition_key)
    .bind(event_type)
    .bind(payload)
    .bind(micros(at))
    .fetch_one(&mut *conn)
    .await?;
    Ok(seq)
}

fn instant(value: i64) -> Result<DateTime<Utc>, StoreError> {
    DateTime::from_timestamp_micros(value)
        .ok_or_else(|| StoreError::Corrupt(format!("instant out of range: {value}")))
}

fn outbox_from_row(row: &SqliteRow) -> Result<OutboxRecord, StoreError> {
    Ok(OutboxRecord {
        seq: row.try_get("seq")?,
        event_id: row.try_get("event_id")?,
        topic: row.try_get("topic")?,
        partition_key: row.try_get("partition_key")?,
        event_type: row.try_get("event_type")?,
        payload: row.try_get("payload")?,
        created_at: instant(row.try_get("created_at")?)?,
    })
}

pub(super) fn dead_letter_from_row(row: &SqliteRow) -> Result<DeadLetter, StoreError> {
    let id: String = row.try_get("id")?;
    let attempts: i64 = row.try_get("attempts")?;
    Ok(DeadLetter {
        id: id
            .parse()
            .map_err(|_| StoreError::Corrupt(format!("dead_letters.id: {id}")))?,
        consumer: row.try_get("consumer")?,
        topic: row.try_get("topic")?,
        event_id: row.try_get("event_id")?,
        event_type: row.try_get("event_type")?,
        payload: row.try_get("payload")?,
        error: row.try_get("error")?,
        attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
        created_at: instant(row.try_get("created_at")?)?,
        replayed_at: row
            .try_get::<Option<i64>, _>("replayed_at")?
            .map(instant)
            .transpose()?,
    })
}

#[async_trait]
impl OutboxStore for SqliteStore {
    async fn enqueue_events(&self, events: &[OutgoingEvent]) -> Result<(), StoreError> {
        let events = events.to_vec();
        self.writes
            .write(move |conn| {
                Box::pin(async move { Ok(((), write_events(conn, &events).await?)) })
            })
            .await
    }

    async fn unpublished_events(&self, limit: u32) -> Result<Vec<OutboxRecord>, StoreError> {
        let rows =
            sqlx::query("SELECT * FROM outbox WHERE published_at IS NULL ORDER BY seq LIMIT ?")
                .bind(i64::from(limit))
                .fetch_all(&self.reader)
                .await
                .map_err(StoreError::from_sqlx)?;
        rows.iter().map(outbox_from_row).collect()
    }

    async fn mark_published(&self, seqs: &[i64], at: DateTime<Utc>) -> Result<(), StoreError> {
        if seqs.is_empty() {
            return Ok(());
        }
        let seqs = seqs.to_vec();
        self.writes
            .write(move |conn| {
                Box::pin(async move {
                    for chunk in seqs.chunks(500) {
                        let placeholders = vec!["?"; chunk.len()].join(",");
                        let sql = format!(
                            "UPDATE outbox SET published_at = ? WHERE seq IN ({placeholders})"
                        );
                        let mut query = sqlx::query(&sql).bind(micros(at));
                        for seq in chunk {
                            query = query.bind(seq);
                        }
                        query.execute(&mut *conn).await?;
                    }
                    Ok(((), None))
                })
            })
            .await
    }

    async fn events_after(
        &self,
        topic: &str,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<OutboxRecord>, StoreError> {
        let rows =
            sqlx::query("SELECT * FROM outbox WHERE topic = ? AND seq > ? ORDER BY seq LIMIT ?")
                .bind(topic)
                .bind(after_seq)
                .bind(i64::from(limit))
                .fetch_all(&self.reader)
                .await
                .map_err(StoreError::from_sqlx)?;
        rows.iter().map(outbox_from_row).collect()
    }

    async fn consumer_offset(&self, group: &str, topic: &str) -> Result<i64, StoreError> {
        let seq: Option<i64> = sqlx::query_scalar(
            "SELECT seq FROM consumer_offsets WHERE consumer_group = ? AND topic = ?",
        )
        .bind(group)
        .bind(topic)
        .fetch_optional(&self.reader)
        .await
        .map_err(StoreError::from_sqlx)?;
        Ok(seq.unwrap_or(0))
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
                Box::pin(async move {
                    sqlx::query(
                        "INSERT INTO consumer_offsets (consumer_group, topic, seq) VALUES (?, ?, ?)
                         ON CONFLICT (consumer_group, topic) DO UPDATE SET seq = MAX(seq, excluded.seq)",
                    )
                    .bind(&group)
                    .bind(&topic)
                    .bind(seq)
                    .execute(&mut *conn)
                    .await?;
                    Ok(((), None))
                })
            })
            .await
    }

    async fn prune_events(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        self.writes
            .write(move |conn| {
                Box::pin(async move {
                    let deleted = sqlx::query(
                        "DELETE FROM outbox WHERE published_at IS NOT NULL AND published_at < ?
                           AND NOT EXISTS (SELECT 1 FROM consumer_offsets c WHERE c.topic = outbox.topic AND c.seq < outbox.seq)",
                    )
                    .bind(micros(before))
                    .execute(&mut *conn)
                    .await?
                    .rows_affected();
                    sqlx::query("DELETE FROM processed_events WHERE processed_at < ?")
                        .bind(micros(before))
                        .execute(&mut *conn)
                        .await?;
                    Ok((deleted, None))
                })
            })
            .await
    }

    async fn outbox_backlog(&self) -> Result<OutboxBacklog, StoreError> {
        let row = sqlx::query("SELECT COUNT(*) AS n, MIN(created_at) AS oldest FROM outbox WHERE published_at IS NULL")
            .fetch_one(&self.reader)
            .await
            .map_err(StoreError::from_sqlx)?;
        Ok(OutboxBacklog {
            unpublished: row.try_get("n")?,
            oldest_unpublished_at: row
                .try_get::<Option<i64>, _>("oldest")?
                .map(instant)
                .transpose()?,
        })
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
                Box::pin(async move {
                    let fresh = sqlx::query(
                        "INSERT INTO processed_events (consumer, event_id, processed_at) VALUES (?, ?, ?)
                         ON CONFLICT (consumer, event_id) DO NOTHING",
                    )
                    .bind(&consumer)
                    .bind(&event_id)
                    .bind(micros(now))
                    .execute(&mut *conn)
                    .await?
                    .rows_affected()
                        == 1;
                    if !fresh {
                        return Ok(((false, None), None));
                    }
                    let mut written = (None, None);
                    match &effect {
                        ConsumerEffect::Nothing => {}
                        ConsumerEffect::Notify(plan) => {
                            written = super::notifications::apply_plan(conn, plan).await?;
                        }
                        ConsumerEffect::Audit(entry) => {
                            sqlx::query(
                                "INSERT INTO audit_log (event_id, user_id, task_id, event_type, occurred_at, data)
                                 VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (event_id) DO NOTHING",
                            )
                            .bind(&entry.event_id)
                            .bind(entry.user_id.to_string())
                            .bind(entry.task_id.to_string())
                            .bind(&entry.event_type)
                            .bind(micros(entry.occurred_at))
                            .bind(entry.data.to_string())
                            .execute(&mut *conn)
                            .await?;
                        }
                    }
                    Ok(((true, written.1), written.0))
                })
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
        let (letter, notice) = (letter.clone(), notice.clone());
        self.writes
            .write(move |conn| {
                Box::pin(async move {
                    sqlx::query(
                        "INSERT INTO dead_letters (id, consumer, topic, event_id, event_type, payload, error, attempts, created_at)
                         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    )
                    .bind(letter.id.to_string())
                    .bind(&letter.consumer)
                    .bind(&letter.topic)
                    .bind(&letter.event_id)
                    .bind(&letter.event_type)
                    .bind(&letter.payload)
                    .bind(&letter.error)
                    .bind(i64::from(letter.attempts))
                    .bind(micros(letter.created_at))
                    .execute(&mut *conn)
                    .await?;
                    let last = write_events(conn, std::slice::from_ref(&notice)).await?;
                    Ok(((), last))
                })
            })
            .await
    }

    async fn dead_letters(&self, limit: u32) -> Result<Vec<DeadLetter>, StoreError> {
        let rows =
            sqlx::query("SELECT * FROM dead_letters ORDER BY created_at DESC, id DESC LIMIT ?")
                .bind(i64::from(limit))
                .fetch_all(&self.reader)
                .await
                .map_err(StoreError::from_sqlx)?;
        rows.iter().map(dead_letter_from_row).collect()
    }

    async fn replay_dead_letter(
        &self,
        id: uuid::Uuid,
        now: DateTime<Utc>,
    ) -> Result<DeadLetter, StoreError> {
        self.writes
            .write(move |conn| {
                Box::pin(async move {
                    let row = sqlx::query("SELECT * FROM dead_letters WHERE id = ?")
                        .bind(id.to_string())
                        .fetch_optional(&mut *conn)
                        .await?;
                    let mut letter = dead_letter_from_row(&row.ok_or(StoreError::NotFound)?)?;
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
                        now,
                    )
                    .await?;
                    sqlx::query("UPDATE dead_letters SET replayed_at = ? WHERE id = ?")
                        .bind(micros(now))
                        .bind(id.to_string())
                        .execute(&mut *conn)
                        .await?;
                    letter.replayed_at = Some(now);
                    Ok((letter, Some(seq)))
                })
            })
            .await
    }

    async fn audit_entries(
        &self,
        user: UserId,
        task: Option<TaskId>,
        limit: u32,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        let rows = sqlx::query(
            "SELECT * FROM audit_log WHERE user_id = ? AND (? IS NULL OR task_id = ?) ORDER BY seq LIMIT ?",
        )
        .bind(user.to_string())
        .bind(task.map(|t| t.to_string()))
        .bind(task.map(|t| t.to_string()))
        .bind(i64::from(limit))
        .fetch_all(&self.reader)
        .await
        .map_err(StoreError::from_sqlx)?;
        rows.iter()
            .map(|row| {
                let user_id: String = row.try_get("user_id")?;
                let task_id: String = row.try_get("task_id")?;
                let data: String = row.try_get("data")?;
                Ok(AuditEntry {
                    event_id: row.try_get("event_id")?,
                    user_id: user_id
                        .parse()
                        .map_err(|_| StoreError::Corrupt("audit_log.user_id".into()))?,
                    task_id: task_id
                        .parse()
                        .map_err(|_| StoreError::Corrupt("audit_log.task_id".into()))?,
                    event_type: row.try_get("event_type")?,
                    occurred_at: instant(row.try_get("occurred_at")?)?,
                    data: serde_json::from_str(&data)
                        .map_err(|e| StoreError::Corrupt(format!("audit_log.data: {e}")))?,
                })
            })
            .collect()
    }
}
