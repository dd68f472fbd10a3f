//! The outbox, consumer offsets, processed-event records, dead letters and the audit log on
//! PostgreSQL.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::postgres::{PgArguments, PgRow};
use sqlx::{ConnectOptions as _, Connection as _, PgConnection, Row};
use taskflow_domain::events::OutgoingEvent;
use taskflow_domain::{TaskId, UserId};

use super::{
    OUTBOX_KEY_LOCK_SPACE, OUTBOX_LOCK, OutboxOrder, PostgresStore, RELAY_LOCK, add_argument,
    at_micros, pg_error,
};
use crate::error::StoreError;
use crate::{
    AuditEntry, AuditPage, AuditQuery, ConsumerEffect, ConsumerStore, DeadLetter, OutboxBacklog,
    OutboxRecord, OutboxStore,
};

/// Columns of one outbox row to insert.
pub(super) struct OutboxRow<'a> {
    event_id: &'a str,
    topic: &'a str,
    partition_key: &'a str,
    event_type: &'a str,
    payload: String,
    at: DateTime<Utc>,
}

/// The outbox rows of `events`, serialised.
pub(super) fn outbox_rows(events: &[OutgoingEvent]) -> Result<Vec<OutboxRow<'_>>, StoreError> {
    events
        .iter()
        .map(|outgoing| {
            let payload = serde_json::to_string(&outgoing.event)
                .map_err(|e| StoreError::Corrupt(format!("event does not serialise: {e}")))?;
            Ok(OutboxRow {
                event_id: &outgoing.event.id,
                topic: &outgoing.topic,
                partition_key: &outgoing.event.partitionkey,
                event_type: &outgoing.event.event_type,
                payload,
                at: outgoing.event.time,
            })
        })
        .collect()
}

/// Appends `events` to the outbox inside the caller's transaction; returns the last seq written.
///
/// Takes the transaction-scoped locks `order` asks for (see [`OutboxOrder`]) in the same
/// statement, before the rows get their `seq`, so outbox rows become visible in `seq` order
/// overall or per partition key. Call it as the transaction's last write.
pub(crate) async fn write_events(
    conn: &mut PgConnection,
    events: &[OutgoingEvent],
    order: OutboxOrder,
) -> Result<Option<i64>, StoreError> {
    insert_outbox_rows(conn, &outbox_rows(events)?, order).await
}

async fn insert_outbox_rows(
    conn: &mut PgConnection,
    rows: &[OutboxRow<'_>],
    order: OutboxOrder,
) -> Result<Option<i64>, StoreError> {
    if rows.is_empty() {
        return Ok(None);
    }
    let sql = format!(
        "WITH {} {}",
        outbox_lock_cte(order, 7, ""),
        outbox_insert(1)
    );
    let mut arguments = PgArguments::default();
    add_outbox_arguments(&mut arguments, rows, order)?;
    let seqs: Vec<i64> = sqlx::query_scalar_with(&sql, arguments)
        .fetch_all(&mut *conn)
        .await
        .map_err(pg_error)?;
    Ok(seqs.into_iter().max())
}

/// A CTE `outbox_lock` taking the transaction-scoped locks `order` asks for, its parameters
/// numbered from `$first` (added by [`add_outbox_arguments`] after the rows' six). `after`,
/// if not empty, is a row source evaluated before the locks are taken: the statement's
/// other writes, so that the locks are not held while they run.
///
/// [`outbox_insert`] joins it, so the locks are held before any row gets its `seq`: a CTE
/// calling a volatile function is evaluated once and never inlined.
pub(super) fn outbox_lock_cte(order: OutboxOrder, first: usize, after: &str) -> String {
    let after = if after.is_empty() {
        String::new()
    } else {
        format!(" FROM {after} AS written")
    };
    match order {
        OutboxOrder::Global => {
            format!("outbox_lock AS (SELECT pg_advisory_xact_lock(${first}){after})")
        }
        // Shared: exclusive holders of OUTBOX_LOCK still pause every outbox writer. The
        // per-key locks use the two-key advisory space, apart from the bigint keys, and are
        // taken in a fixed order so two writers never wait for each other in a cycle.
        OutboxOrder::PerKey => format!(
            "outbox_lock AS (SELECT pg_advisory_xact_lock_shared(${first}),
                (SELECT count(*) FROM (
                    SELECT pg_advisory_xact_lock(${}, hashtext(k))
                    FROM unnest(${}::text[]) WITH ORDINALITY AS u(k, n) ORDER BY n
                ) AS locked){after})",
            first + 1,
            first + 2
        ),
    }
}

/// The statement inserting the outbox rows bound as six arrays from `$first` on, in order,
/// after the `outbox_lock` CTE's locks; returns their `seq`s.
pub(super) fn outbox_insert(first: usize) -> String {
    let [a, b, c, d, e, f] = std::array::from_fn(|i| first + i);
    format!(
        "INSERT INTO outbox (event_id, topic, partition_key, event_type, payload, created_at)
         SELECT event_id, topic, partition_key, event_type, payload, created_at
         FROM unnest(${a}::text[], ${b}::text[], ${c}::text[], ${d}::text[], ${e}::text[], ${f}::timestamptz[])
              WITH ORDINALITY AS r(event_id, topic, partition_key, event_type, payload, created_at, n),
              outbox_lock
         ORDER BY n
         RETURNING seq"
    )
}

/// Adds `rows` to `arguments` as the six arrays of [`outbox_insert`], then the parameters of
/// [`outbox_lock_cte`].
pub(super) fn add_outbox_arguments(
    arguments: &mut PgArguments,
    rows: &[OutboxRow<'_>],
    order: OutboxOrder,
) -> Result<(), StoreError> {
    add_argument(
        arguments,
        rows.iter().map(|r| r.event_id).collect::<Vec<_>>(),
    )?;
    add_argument(arguments, rows.iter().map(|r| r.topic).collect::<Vec<_>>())?;
    add_argument(
        arguments,
        rows.iter().map(|r| r.partition_key).collect::<Vec<_>>(),
    )?;
    add_argument(
        arguments,
        rows.iter().map(|r| r.event_type).collect::<Vec<_>>(),
    )?;
    add_argument(
        arguments,
        rows.iter().map(|r| r.payload.as_str()).collect::<Vec<_>>(),
    )?;
    add_argument(
        arguments,
        rows.iter().map(|r| at_micros(r.at)).collect::<Vec<_>>(),
    )?;
    add_argument(arguments, OUTBOX_LOCK)?;
    if order == OutboxOrder::PerKey {
        let mut keys: Vec<&str> = rows.iter().map(|r| r.partition_key).collect();
        keys.sort_unstable();
        keys.dedup();
        add_argument(arguments, OUTBOX_KEY_LOCK_SPACE)?;
        add_argument(arguments, keys)?;
    }
    Ok(())
}

fn outbox_from_row(row: &PgRow) -> Result<OutboxRecord, StoreError> {
    Ok(OutboxRecord {
        seq: row.try_get("seq")?,
        event_id: row.try_get("event_id")?,
        topic: row.try_get("topic")?,
        partition_key: row.try_get("partition_key")?,
        event_type: row.try_get("event_type")?,
        payload: row.try_get("payload")?,
        created_at: row.try_get("created_at")?,
    })
}

pub(super) fn dead_letter_from_row(row: &PgRow) -> Result<DeadLetter, StoreError> {
    let attempts: i64 = row.try_get("attempts")?;
    Ok(DeadLetter {
        id: row.try_get("id")?,
        consumer: row.try_get("consumer")?,
        topic: row.try_get("topic")?,
        event_id: row.try_get("event_id")?,
        event_type: row.try_get("event_type")?,
        payload: row.try_get("payload")?,
        error: row.try_get("error")?,
        attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
        created_at: row.try_get("created_at")?,
        replayed_at: row.try_get("replayed_at")?,
    })
}

/// A leader whose connection does not answer a ping within this long gives the lead up (the
/// server may already have ended its session and let a standby take over).
const LEADER_PING_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

const OUTBOX_COLUMNS: &str = "seq, event_id, topic, partition_key, event_type, payload, created_at";

#[async_trait]
impl OutboxStore for PostgresStore {
    async fn enqueue_events(&self, events: &[OutgoingEvent]) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        let seq = write_events(&mut tx, events, self.outbox_order).await?;
        tx.commit().await.map_err(pg_error)?;
        self.announce(seq);
        Ok(())
    }

    async fn unpublished_events(&self, limit: u32) -> Result<Vec<OutboxRecord>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {OUTBOX_COLUMNS} FROM outbox WHERE published_at IS NULL ORDER BY seq LIMIT $1"
        ))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(pg_error)?;
        rows.iter().map(outbox_from_row).collect()
    }

    async fn mark_published(&self, seqs: &[i64], at: DateTime<Utc>) -> Result<(), StoreError> {
        if seqs.is_empty() {
            return Ok(());
        }
        sqlx::query("UPDATE outbox SET published_at = $1 WHERE seq = ANY($2::bigint[])")
            .bind(at_micros(at))
            .bind(seqs)
            .execute(&self.pool)
            .await
            .map_err(pg_error)?;
        Ok(())
    }

    async fn events_after(
        &self,
        topic: &str,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<OutboxRecord>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {OUTBOX_COLUMNS} FROM outbox WHERE topic = $1 AND seq > $2 ORDER BY seq LIMIT $3"
        ))
        .bind(topic)
        .bind(after_seq)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(pg_error)?;
        rows.iter().map(outbox_from_row).collect()
    }

    async fn consumer_offset(&self, group: &str, topic: &str) -> Result<i64, StoreError> {
        let seq: Option<i64> = sqlx::query_scalar(
            "SELECT seq FROM consumer_offsets WHERE consumer_group = $1 AND topic = $2",
        )
        .bind(group)
        .bind(topic)
        .fetch_optional(&self.pool)
        .await
        .map_err(pg_error)?;
        Ok(seq.unwrap_or(0))
    }

    async fn commit_consumer_offset(
        &self,
        group: &str,
        topic: &str,
        seq: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO consumer_offsets (consumer_group, topic, seq) VALUES ($1, $2, $3)
             ON CONFLICT (consumer_group, topic)
             DO UPDATE SET seq = GREATEST(consumer_offsets.seq, excluded.seq)",
        )
        .bind(group)
        .bind(topic)
        .bind(seq)
        .execute(&self.pool)
        .await
        .map_err(pg_error)?;
        Ok(())
    }

    async fn prune_events(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        let before = at_micros(before);
        let mut tx = self.begin().await?;
        let deleted = sqlx::query(
            "DELETE FROM outbox o WHERE o.published_at IS NOT NULL AND o.published_at < $1
               AND NOT EXISTS (SELECT 1 FROM consumer_offsets c WHERE c.topic = o.topic AND c.seq < o.seq)",
        )
        .bind(before)
        .execute(&mut *tx)
        .await
        .map_err(pg_error)?
        .rows_affected();
        sqlx::query("DELETE FROM processed_events WHERE processed_at < $1")
            .bind(before)
            .execute(&mut *tx)
            .await
            .map_err(pg_error)?;
        tx.commit().await.map_err(pg_error)?;
        Ok(deleted)
    }

    async fn outbox_backlog(&self) -> Result<OutboxBacklog, StoreError> {
        let row = sqlx::query(
            "SELECT count(*) AS n, min(created_at) AS oldest FROM outbox WHERE published_at IS NULL",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(pg_error)?;
        Ok(OutboxBacklog {
            unpublished: row.try_get("n")?,
            oldest_unpublished_at: row.try_get("oldest")?,
        })
    }

    fn outbox_commits(&self) -> tokio::sync::watch::Receiver<i64> {
        self.outbox_commits.subscribe()
    }

    async fn lead_outbox_relay(
        &self,
        lapse_after: std::time::Duration,
    ) -> Result<bool, StoreError> {
        let mut session = self.relay_leader.lock().await;
        if let Some(held) = session.as_mut() {
            // A leader is still the leader while the session holding the lock is alive; a
            // standby asks for the lock again on the connection it kept.
            let check = async {
                if held.leading {
                    sqlx::query("SELECT 1").execute(&mut held.conn).await?;
                    Ok(true)
                } else {
                    sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
                        .bind(RELAY_LOCK)
                        .fetch_one(&mut held.conn)
                        .await
                }
            };
            match tokio::time::timeout(LEADER_PING_TIMEOUT, check).await {
                Ok(Ok(true)) if held.leading => return Ok(true),
                Ok(Ok(true)) => {
                    take_lead(held, lapse_after).await;
                    return Ok(true);
                }
                Ok(Ok(false)) => return Ok(false),
                Ok(Err(error)) => {
                    if held.leading {
                        tracing::warn!(%error, "outbox relay lost its leader connection; the lead is free");
                    }
                    *session = None;
                }
                Err(_) => {
                    if held.leading {
                        tracing::warn!(
                            "outbox relay's leader connection does not answer; giving the lead up"
                        );
                    }
                    *session = None;
                }
            }
        }
        let connect = self.connect_options.connect();
        let mut conn = tokio::time::timeout(LEADER_PING_TIMEOUT * 5, connect)
            .await
            .map_err(|_| StoreError::Unavailable("connecting for the relay lead timed out".into()))?
            .map_err(pg_error)?;
        let won: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(RELAY_LOCK)
            .fetch_one(&mut conn)
            .await
            .map_err(pg_error)?;
        let held = session.insert(super::RelaySession {
            conn,
            leading: false,
        });
        if won {
            take_lead(held, lapse_after).await;
        }
        Ok(won)
    }

    async fn resign_outbox_relay(&self) {
        if let Some(held) = self.relay_leader.lock().await.take() {
            // Closing the session releases its advisory lock.
            let _ = held.conn.close().await;
        }
    }
}

/// Marks `held`, whose session just won [`RELAY_LOCK`], as leading. Every check is a statement
/// on this session: a leader that stops checking leaves it idle, and the server ends it
/// (releasing the lock) once `lapse_after` has passed.
async fn take_lead(held: &mut super::RelaySession, lapse_after: std::time::Duration) {
    let millis = lapse_after.as_millis().clamp(1, i32::MAX as u128);
    if let Err(error) = sqlx::query(&format!("SET idle_session_timeout = {millis}"))
        .execute(&mut held.conn)
        .await
    {
        static WARNED: std::sync::Once = std::sync::Once::new();
        WARNED.call_once(|| {
            tracing::warn!(%error, "the server cannot end the session of a relay leader that stopped working (idle_session_timeout needs PostgreSQL 14); its lead goes only with its connection");
        });
    }
    held.leading = true;
}

#[async_trait]
impl ConsumerStore for PostgresStore {
    async fn apply_once(
        &self,
        consumer: &str,
        event_id: &str,
        effect: &ConsumerEffect,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        // Records with no effect or an audit entry are applied together with other calls'.
        if let Some((request, answer)) =
            super::consumed::Request::batchable(consumer, event_id, effect, now)
        {
            self.consumed.send(request).map_err(|_| {
                StoreError::Unavailable("the consumer record queue has stopped".into())
            })?;
            return answer.await.map_err(|_| {
                StoreError::Unavailable("the consumer record queue has stopped".into())
            })?;
        }
        let mut tx = self.begin().await?;
        // A concurrent delivery of the same event waits here for this transaction, then sees
        // the record and does nothing.
        let fresh = sqlx::query(
            "INSERT INTO processed_events (consumer, event_id, processed_at) VALUES ($1, $2, $3)
             ON CONFLICT (consumer, event_id) DO NOTHING",
        )
        .bind(consumer)
        .bind(event_id)
        .bind(at_micros(now))
        .execute(&mut *tx)
        .await
        .map_err(pg_error)?
        .rows_affected()
            == 1;
        if !fresh {
            return Ok(false);
        }
        let mut written = (None, None);
        match effect {
            ConsumerEffect::Nothing => {}
            ConsumerEffect::Notify(plan) => {
                written =
                    super::notifications::apply_plan(&mut tx, plan, self.outbox_order).await?;
            }
            ConsumerEffect::Audit(entry) => {
                sqlx::query(
                    "INSERT INTO audit_log (event_id, user_id, task_id, event_type, occurred_at, data)
                     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (event_id) DO NOTHING",
                )
                .bind(&entry.event_id)
                .bind(entry.user_id.as_uuid())
                .bind(entry.task_id.as_uuid())
                .bind(&entry.event_type)
                .bind(at_micros(entry.occurred_at))
                .bind(&entry.data)
                .execute(&mut *tx)
                .await
                .map_err(pg_error)?;
            }
        }
        tx.commit().await.map_err(pg_error)?;
        let (seq, earliest_delivery) = written;
        self.announce(seq);
        crate::announce_earliest(&self.delivery_changes, earliest_delivery);
        Ok(true)
    }

    async fn record_dead_letter(
        &self,
        letter: &DeadLetter,
        notice: &OutgoingEvent,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO dead_letters (id, consumer, topic, event_id, event_type, payload, error, attempts, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(letter.id)
        .bind(&letter.consumer)
        .bind(&letter.topic)
        .bind(&letter.event_id)
        .bind(&letter.event_type)
        .bind(&letter.payload)
        .bind(&letter.error)
        .bind(i64::from(letter.attempts))
        .bind(at_micros(letter.created_at))
        .execute(&mut *tx)
        .await
        .map_err(pg_error)?;
        let seq = write_events(&mut tx, std::slice::from_ref(notice), self.outbox_order).await?;
        tx.commit().await.map_err(pg_error)?;
        self.announce(seq);
        Ok(())
    }

    async fn dead_letters(&self, limit: u32) -> Result<Vec<DeadLetter>, StoreError> {
        let rows =
            sqlx::query("SELECT * FROM dead_letters ORDER BY created_at DESC, id DESC LIMIT $1")
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await
                .map_err(pg_error)?;
        rows.iter().map(dead_letter_from_row).collect()
    }

    async fn replay_dead_letter(
        &self,
        id: uuid::Uuid,
        now: DateTime<Utc>,
    ) -> Result<DeadLetter, StoreError> {
        let now = at_micros(now);
        let mut tx = self.begin().await?;
        let row = sqlx::query("UPDATE dead_letters SET replayed_at = $1 WHERE id = $2 RETURNING *")
            .bind(now)
            .bind(id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(pg_error)?;
        let letter = dead_letter_from_row(&row.ok_or(StoreError::NotFound)?)?;
        let event: serde_json::Value = serde_json::from_str(&letter.payload)
            .map_err(|e| StoreError::Corrupt(format!("dead letter payload: {e}")))?;
        let partition_key = event["partitionkey"].as_str().unwrap_or_default();
        let seq = insert_outbox_rows(
            &mut tx,
            &[OutboxRow {
                event_id: &letter.event_id,
                topic: &letter.topic,
                partition_key,
                event_type: &letter.event_type,
                payload: letter.payload.clone(),
                at: now,
            }],
            self.outbox_order,
        )
        .await?;
        tx.commit().await.map_err(pg_error)?;
        self.announce(seq);
        Ok(letter)
    }

    async fn audit_entries(
        &self,
        user: UserId,
        query: AuditQuery,
    ) -> Result<AuditPage, StoreError> {
        let sql = audit_page_statement(query.task.is_some(), query.newest_first);
        let mut statement = sqlx::query(sql)
            .bind(user.as_uuid())
            .bind(query.start())
            .bind(query.fetch());
        if let Some(task) = query.task {
            statement = statement.bind(task.as_uuid());
        }
        let rows = statement.fetch_all(&self.pool).await.map_err(pg_error)?;
        let rows = rows
            .iter()
            .map(|row| {
                let entry = AuditEntry {
                    event_id: row.try_get("event_id")?,
                    user_id: UserId::from_uuid(row.try_get("user_id")?),
                    task_id: TaskId::from_uuid(row.try_get("task_id")?),
                    event_type: row.try_get("event_type")?,
                    occurred_at: row.try_get("occurred_at")?,
                    data: row.try_get("data")?,
                };
                Ok((row.try_get("seq")?, entry))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok(AuditPage::from_rows(rows, query.limit))
    }
}

/// The statement reading a page of a user's audit log (`$1` user, `$2` the position to start
/// after, `$3` how many, `$4` the task if `of_task`): one per shape, so each plan, custom or
/// generic, walks `audit_log_user_seq` or `audit_log_task` in order from the cursor.
pub fn audit_page_statement(of_task: bool, newest_first: bool) -> &'static str {
    match (of_task, newest_first) {
        (false, false) => {
            "SELECT * FROM audit_log WHERE user_id = $1 AND seq > $2 ORDER BY seq LIMIT $3"
        }
        (false, true) => {
            "SELECT * FROM audit_log WHERE user_id = $1 AND seq < $2
             ORDER BY seq DESC LIMIT $3"
        }
        (true, false) => {
            "SELECT * FROM audit_log WHERE task_id = $4 AND user_id = $1 AND seq > $2
             ORDER BY seq LIMIT $3"
        }
        (true, true) => {
            "SELECT * FROM audit_log WHERE task_id = $4 AND user_id = $1 AND seq < $2
             ORDER BY seq DESC LIMIT $3"
        }
    }
}
