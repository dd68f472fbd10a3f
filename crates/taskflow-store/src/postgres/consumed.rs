//! Group commit for consumer records on PostgreSQL.
//!
//! Every consumer handles each event in a transaction with its idempotency record
//! ([`crate::ConsumerStore::apply_once`]). Most of those transactions hold one small insert or
//! two (the record, and for the audit consumer its log entry), so one transaction each costs a
//! commit (a WAL flush) per event and consumer: at a few thousand task writes per second that
//! is most of the server's work. Calls whose effect is [`ConsumerEffect::Nothing`] or
//! [`ConsumerEffect::Audit`] are therefore queued and applied together: one transaction, one
//! insert of every record (`ON CONFLICT DO NOTHING … RETURNING` tells which were new), one
//! insert of the audit entries of the new ones, one commit. A call waits at most for the batch
//! in progress; alone it is a batch of one. If a batch fails, each of its calls is applied on
//! its own, so one bad call cannot fail the others.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot};

use super::{at_micros, pg_error};
use crate::error::StoreError;
use crate::{AuditEntry, ConsumerEffect};

/// Calls applied in one transaction at most.
const MAX_BATCH: usize = 256;

/// One queued `apply_once` call.
pub(super) struct Request {
    pub(super) consumer: String,
    pub(super) event_id: String,
    /// `Some` for the audit consumer's entry, `None` for [`ConsumerEffect::Nothing`].
    pub(super) audit: Option<AuditEntry>,
    pub(super) now: DateTime<Utc>,
    pub(super) answer: oneshot::Sender<Result<bool, StoreError>>,
}

impl Request {
    /// The request for `effect`, or `None` when the effect is not batched.
    pub(super) fn batchable(
        consumer: &str,
        event_id: &str,
        effect: &ConsumerEffect,
        now: DateTime<Utc>,
    ) -> Option<(Self, oneshot::Receiver<Result<bool, StoreError>>)> {
        let audit = match effect {
            ConsumerEffect::Nothing => None,
            ConsumerEffect::Audit(entry) => Some(entry.clone()),
            ConsumerEffect::Notify(_) => return None,
        };
        let (answer, receiver) = oneshot::channel();
        Some((
            Self {
                consumer: consumer.to_owned(),
                event_id: event_id.to_owned(),
                audit,
                now,
                answer,
            },
            receiver,
        ))
    }
}

/// Starts the task that applies queued calls; it ends when every sender is gone.
pub(super) fn start(pool: PgPool) -> mpsc::UnboundedSender<Request> {
    let (sender, receiver) = mpsc::unbounded_channel();
    tokio::spawn(run(pool, receiver));
    sender
}

async fn run(pool: PgPool, mut receiver: mpsc::UnboundedReceiver<Request>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while receiver.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let requests = std::mem::take(&mut batch);
        match apply_batch(&pool, &requests).await {
            Ok(fresh) => {
                for (request, fresh) in requests.into_iter().zip(fresh) {
                    let _ = request.answer.send(Ok(fresh));
                }
            }
            Err(error) if requests.len() == 1 => {
                if let Some(request) = requests.into_iter().next() {
                    let _ = request.answer.send(Err(error));
                }
            }
            Err(error) => {
                tracing::debug!(%error, calls = requests.len(), "a batch of consumer records failed; applying them one by one");
                for request in requests {
                    let outcome = apply_batch(&pool, std::slice::from_ref(&request))
                        .await
                        .map(|fresh| fresh.first().copied().unwrap_or(false));
                    let _ = request.answer.send(outcome);
                }
            }
        }
    }
}

/// Applies `requests` in one transaction; per request whether it was new. A (consumer, event)
/// pair repeated within the batch counts as new once, for its first call.
async fn apply_batch(pool: &PgPool, requests: &[Request]) -> Result<Vec<bool>, StoreError> {
    let mut tx = pool.begin().await.map_err(pg_error)?;
    let inserted: Vec<(String, String)> = sqlx::query_as(
        "INSERT INTO processed_events (consumer, event_id, processed_at)
         SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[])
         ON CONFLICT (consumer, event_id) DO NOTHING
         RETURNING consumer, event_id",
    )
    .bind(
        requests
            .iter()
            .map(|r| r.consumer.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(
        requests
            .iter()
            .map(|r| r.event_id.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(
        requests
            .iter()
            .map(|r| at_micros(r.now))
            .collect::<Vec<_>>(),
    )
    .fetch_all(&mut *tx)
    .await
    .map_err(pg_error)?;
    let mut new: HashSet<(&str, &str)> = inserted
        .iter()
        .map(|(c, e)| (c.as_str(), e.as_str()))
        .collect();
    let fresh: Vec<bool> = requests
        .iter()
        .map(|r| new.remove(&(r.consumer.as_str(), r.event_id.as_str())))
        .collect();
    let entries: Vec<&AuditEntry> = requests
        .iter()
        .zip(&fresh)
        .filter_map(|(r, fresh)| r.audit.as_ref().filter(|_| *fresh))
        .collect();
    if !entries.is_empty() {
        sqlx::query(
            "INSERT INTO audit_log (event_id, user_id, task_id, event_type, occurred_at, data)
             SELECT event_id, user_id, task_id, event_type, occurred_at, data::jsonb
             FROM unnest($1::text[], $2::uuid[], $3::uuid[], $4::text[], $5::timestamptz[],
                         $6::text[])
                  AS entry(event_id, user_id, task_id, event_type, occurred_at, data)
             ON CONFLICT (event_id) DO NOTHING",
        )
        .bind(
            entries
                .iter()
                .map(|e| e.event_id.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            entries
                .iter()
                .map(|e| e.user_id.as_uuid())
                .collect::<Vec<_>>(),
        )
        .bind(
            entries
                .iter()
                .map(|e| e.task_id.as_uuid())
                .collect::<Vec<_>>(),
        )
        .bind(
            entries
                .iter()
                .map(|e| e.event_type.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            entries
                .iter()
                .map(|e| at_micros(e.occurred_at))
                .collect::<Vec<_>>(),
        )
        .bind(
            entries
                .iter()
                .map(|e| e.data.to_string())
                .collect::<Vec<_>>(),
        )
        .execute(&mut *tx)
        .await
        .map_err(pg_error)?;
    }
    tx.commit().await.map_err(pg_error)?;
    Ok(fresh)
}
