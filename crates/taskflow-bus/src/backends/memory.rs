//! The in-process bus: the store's outbox is the log.
//!
//! Publishing is a no-op (the rows are already in the outbox, committed with the change that
//! caused them), so the relay only records rows as published, for pruning, and does that once
//! per bookkeeping interval rather than after every commit
//! ([`crate::relay::RelaySettings::bookkeeping_interval`]). A subscription reads its topic's
//! rows after its group's committed offset, in commit order, and is woken by every commit (once
//! it has read everything, it reads again only after the next commit, or after [`POLL`] for
//! other processes' writes); acknowledging advances the group's offset in the database. A crash
//! loses nothing: on restart each group resumes after its last committed offset, and consumers
//! skip what they had already applied (their idempotency records). Offsets are committed in the
//! background by one task per subscription (every [`COMMIT_EVERY`] acknowledgements, when the
//! subscription goes idle, and when it is dropped; at most one commit per [`COMMIT_PAUSE`]), so
//! delivering the next event never waits for a database commit; a crash can only widen the
//! already-safe redelivery window.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use taskflow_domain::events::Topic;
use taskflow_store::{OutboxRecord, Store};
use tokio::sync::watch;

use crate::{BusError, EventBus, Message, Received, Subscription, TopicNames};

/// Acknowledgements between two offset commits.
pub const COMMIT_EVERY: usize = 64;
/// Rows fetched per read.
const READ_BATCH: u32 = 512;
/// Re-read at least this often (other processes may write to the same database).
const POLL: Duration = Duration::from_millis(500);
/// Shortest pause between two offset commits of one subscription: a steady trickle of events
/// (each leaving the subscription idle) then costs a commit per pause, not one per event. (At
/// 20 ms, three subscriptions committed ~150 times a second under a few hundred writes a
/// second: a durable write each, for a position that consumers' idempotency records make
/// safe to lose.)
const COMMIT_PAUSE: Duration = Duration::from_millis(200);

/// The in-process bus over a store's outbox.
pub struct MemoryBus {
    store: Arc<dyn Store>,
    names: TopicNames,
}

impl MemoryBus {
    /// A bus reading `store`'s outbox; `names` maps logical topics to the names consumers use.
    pub fn new(store: Arc<dyn Store>, names: TopicNames) -> Self {
        Self { store, names }
    }

    fn logical(&self, physical: &str) -> String {
        Topic::ALL
            .iter()
            .flat_map(|t| [t.name().to_owned(), format!("{}.dlq", t.name())])
            .find(|logical| self.names.physical(logical) == physical)
            .unwrap_or_else(|| physical.to_owned())
    }
}

#[async_trait]
impl EventBus for MemoryBus {
    fn name(&self) -> &'static str {
        "memory"
    }

    async fn publish(&self, _messages: &[Message]) -> Result<(), BusError> {
        Ok(())
    }

    fn consumers_read_outbox(&self) -> bool {
        true
    }

    async fn subscribe(&self, topic: &str, group: &str) -> Result<Box<dyn Subscription>, BusError> {
        let logical = self.logical(topic);
        let commits = self.store.outbox_commits();
        let offset = self.store.consumer_offset(group, &logical).await?;
        let (offsets, acknowledged) = watch::channel(offset);
        tokio::spawn(commit_offsets(
            self.store.clone(),
            group.to_owned(),
            logical.clone(),
            acknowledged,
        ));
        Ok(Box::new(MemorySubscription {
            store: self.store.clone(),
            physical: topic.to_owned(),
            logical,
            position: offset,
            acked: offset,
            unflushed: 0,
            buffer: VecDeque::new(),
            caught_up: false,
            commits,
            offsets,
        }))
    }
}

struct MemorySubscription {
    store: Arc<dyn Store>,
    physical: String,
    logical: String,
    /// Seq of the last row handed out.
    position: i64,
    /// Highest seq acknowledged.
    acked: i64,
    unflushed: usize,
    buffer: VecDeque<OutboxRecord>,
    /// The last read returned everything there was (less than a full batch): until another
    /// commit is announced (or [`POLL`] passes) reading again would find nothing.
    caught_up: bool,
    commits: watch::Receiver<i64>,
    /// The offset to commit, for [`commit_offsets`].
    offsets: watch::Sender<i64>,
}

impl MemorySubscription {
    /// Hands out `record`, the next row of the topic.
    fn received(&mut self, record: OutboxRecord) -> Received {
        self.position = record.seq;
        Received {
            message: Message {
                topic: self.physical.clone(),
                key: record.partition_key,
                id: format!("{}:{}", record.event_id, record.seq),
                payload: record.payload.into_bytes(),
            },
            redeliveries: 0,
            token: Box::new(record.seq),
        }
    }

    /// Hands the acknowledged offset to the committing task (never waits).
    fn flush(&mut self) {
        self.offsets.send_if_modified(|offset| {
            let newer = self.acked > *offset;
            if newer {
                *offset = self.acked;
            }
            newer
        });
        self.unflushed = 0;
    }
}

/// Commits a subscription's acknowledged offset whenever it moves, at most once per
/// [`COMMIT_PAUSE`] (acknowledgements meanwhile coalesce), until the subscription is dropped:
/// then at once commits what is left and stops.
async fn commit_offsets(
    store: Arc<dyn Store>,
    group: String,
    topic: String,
    mut acknowledged: watch::Receiver<i64>,
) {
    let mut committed = *acknowledged.borrow_and_update();
    let mut open = true;
    while open {
        open = acknowledged.changed().await.is_ok();
        if open {
            // `wait_for` never finds what it waits for: it returns when the subscription is gone.
            open = tokio::select! {
                _ = tokio::time::sleep(COMMIT_PAUSE) => true,
                _ = acknowledged.wait_for(|_| false) => false,
            };
        }
        let offset = *acknowledged.borrow_and_update();
        if offset > committed {
            match store.commit_consumer_offset(&group, &topic, offset).await {
                Ok(()) => committed = offset,
                Err(error) => {
                    // Redelivery after a restart covers a lost commit; try again at the next ack.
                    tracing::warn!(%error, %group, %topic, "cannot commit the consumer offset");
                }
            }
        }
    }
}

#[async_trait]
impl Subscription for MemorySubscription {
    async fn next(&mut self) -> Result<Received, BusError> {
        loop {
            if let Some(record) = self.buffer.pop_front() {
                return Ok(self.received(record));
            }
            if self.caught_up && !self.commits.has_changed().unwrap_or(true) {
                self.flush();
                match tokio::time::timeout(POLL, self.commits.changed()).await {
                    Ok(Ok(())) | Err(_) => {}
                    Ok(Err(_)) => return Err(BusError::Closed),
                }
            }
            // Mark what we have seen before reading, so a commit racing the read still wakes us.
            self.commits.borrow_and_update();
            let rows = self
                .store
                .events_after(&self.logical, self.position, READ_BATCH)
                .await?;
            self.caught_up = rows.len() < READ_BATCH as usize;
            self.buffer.extend(rows);
        }
    }

    async fn next_batch(&mut self, max: usize) -> Result<Vec<Received>, BusError> {
        let mut batch = vec![self.next().await?];
        while batch.len() < max
            && let Some(record) = self.buffer.pop_front()
        {
            batch.push(self.received(record));
        }
        Ok(batch)
    }

    async fn ack(&mut self, received: Received) -> Result<(), BusError> {
        if let Ok(seq) = received.token.downcast::<i64>() {
            self.acked = self.acked.max(*seq);
            self.unflushed += 1;
            if self.unflushed >= COMMIT_EVERY {
                self.flush();
            }
        }
        Ok(())
    }
}

impl Drop for MemorySubscription {
    fn drop(&mut self) {
        // The committing task commits this last offset when it sees the channel close.
        self.flush();
    }
}
