//! The outbox relay: publishes committed outbox rows to the bus in commit order.

use std::sync::Arc;
use std::time::Duration;

use chrono::TimeDelta;
use taskflow_domain::Clock;
use taskflow_store::{OutboxRecord, Store};
use tokio_util::sync::CancellationToken;

use crate::{BusError, EventBus, Message, TopicNames};

/// What the relay's spans read from an event's payload.
#[derive(serde::Deserialize)]
struct TraceFields {
    traceparent: Option<String>,
    subject: Option<String>,
}

/// The producer span `publish <topic>` of one outbox row: a child of the event's
/// `traceparent` (the request that wrote it), ending when the row is marked published.
fn publish_span(row: &OutboxRecord, physical_topic: &str, backend: &'static str) -> tracing::Span {
    let span = tracing::info_span!(
        "publish",
        otel.name = %format_args!("publish {}", row.topic),
        otel.kind = "producer",
        otel.status_code = tracing::field::Empty,
        messaging.system = backend,
        messaging.destination.name = physical_topic,
        messaging.message.id = %row.event_id,
        cloudevents.event_type = %row.event_type,
        cloudevents.event_subject = tracing::field::Empty,
        error = tracing::field::Empty,
    );
    if span.is_disabled() {
        return span;
    }
    if let Ok(fields) = serde_json::from_str::<TraceFields>(&row.payload) {
        if let Some(subject) = &fields.subject {
            span.record("cloudevents.event_subject", subject.as_str());
        }
        if let Some(traceparent) = &fields.traceparent {
            taskflow_trace::set_remote_parent(&span, traceparent);
        }
    }
    span
}

/// Below this many published events a second (measured over about a second), a relay on a bus
/// whose consumers read the outbox gathers commits for [`RelaySettings::bookkeeping_interval`].
pub const TRICKLE_EVENTS_PER_SECOND: f64 = 2_000.0;

/// Rows the relay published per second, over windows of about a second.
#[derive(Debug)]
struct PublishRate {
    window_started: tokio::time::Instant,
    rows: usize,
    last: f64,
}

impl PublishRate {
    fn new() -> Self {
        Self {
            window_started: tokio::time::Instant::now(),
            rows: 0,
            last: 0.0,
        }
    }

    /// Counts `rows` published now.
    fn add(&mut self, rows: usize) {
        self.rows += rows;
    }

    /// The rate of the last complete window (0 before the first one ends).
    fn per_second(&mut self) -> f64 {
        let elapsed = self.window_started.elapsed();
        if elapsed >= Duration::from_secs(1) {
            self.last = self.rows as f64 / elapsed.as_secs_f64();
            self.rows = 0;
            self.window_started = tokio::time::Instant::now();
        }
        self.last
    }
}

/// What a leading relay may spend beyond its longest planned pause before its lead lapses
/// (see [`OutboxRelay::lead_lapse`]).
const LEAD_MARGIN: Duration = Duration::from_secs(10);

/// Relay tuning.
#[derive(Clone, Debug)]
pub struct RelaySettings {
    /// Rows published per batch.
    pub batch_size: u32,
    /// Re-check the outbox at least this often (another process may have written to it).
    pub poll_interval: Duration,
    /// Longest wait between attempts while the broker is down.
    pub max_backoff: Duration,
    /// Published rows are deleted after this long.
    pub retention: Duration,
    /// On a bus whose consumers read the outbox themselves
    /// ([`EventBus::consumers_read_outbox`]), the relay only records rows as published, which
    /// nothing waits for: while commits trickle in (fewer than [`TRICKLE_EVENTS_PER_SECOND`]),
    /// after a commit wakes it, it waits this long so that one cycle covers the commits of the
    /// whole interval, instead of a read and a mark per commit. Faster, cycles fill up by
    /// themselves, and gathering would only make bursts (at 250 ms for every rate, reading
    /// ~2 500 rows at once at 10 000 events/s raised the in-process bus's commit-to-consume
    /// p99 from 1.2–2.2 to 2.7–2.9 ms).
    pub bookkeeping_interval: Duration,
    /// Batches sent to the bus and not yet acknowledged by it, at most (at least 1). While the
    /// broker acknowledges a batch, the relay reads and sends the next ones (a broker that
    /// keeps the order of what it receives keeps each key's order; see [`EventBus::send`]).
    /// Should the broker lose or refuse a message and store later ones, the re-sent message
    /// lands after them; 1 waits for every batch's acknowledgements before reading the next,
    /// which limits that to one batch.
    pub batches_in_flight: usize,
}

impl Default for RelaySettings {
    fn default() -> Self {
        Self {
            batch_size: 500,
            poll_interval: Duration::from_secs(1),
            max_backoff: Duration::from_secs(30),
            retention: Duration::from_secs(7 * 24 * 3600),
            bookkeeping_interval: Duration::from_millis(50),
            batches_in_flight: 4,
        }
    }
}

/// Moves outbox rows to the bus.
///
/// Several processes may run a relay on one database: only the one that leads
/// ([`taskflow_store::OutboxStore::lead_outbox_relay`]) publishes; the others stand by, ask for
/// the lead once per poll interval, and take over when the leader goes away.
pub struct OutboxRelay {
    store: Arc<dyn Store>,
    bus: Arc<dyn EventBus>,
    names: TopicNames,
    clock: Arc<dyn Clock>,
    settings: RelaySettings,
    lead: std::sync::Mutex<Lead>,
}

/// What this relay knows about its lead.
#[derive(Clone, Copy, Debug, Default)]
struct Lead {
    /// It led at its last check.
    leading: bool,
    /// A standby asks again no sooner than this.
    next_attempt: Option<tokio::time::Instant>,
}

impl OutboxRelay {
    /// A relay from `store` to `bus`.
    pub fn new(
        store: Arc<dyn Store>,
        bus: Arc<dyn EventBus>,
        names: TopicNames,
        clock: Arc<dyn Clock>,
        settings: RelaySettings,
    ) -> Self {
        Self {
            store,
            bus,
            names,
            clock,
            settings,
            lead: std::sync::Mutex::new(Lead::default()),
        }
    }

    /// How long this relay's lead lasts without a check: its longest pause between checks
    /// while working (the poll interval, or the backoff while the broker is down) and a margin
    /// for the publishing in between. A leader that stops checking for longer (frozen, or its
    /// node gone without closing the connection) loses the lead to a standby.
    fn lead_lapse(&self) -> Duration {
        self.settings.poll_interval.max(self.settings.max_backoff) + LEAD_MARGIN
    }

    /// Whether this relay may publish now: asks the store on every call while leading (the
    /// store checks the lead is still held), once per poll interval while standing by.
    async fn leads(&self) -> Result<bool, BusError> {
        let now = tokio::time::Instant::now();
        let before = *self.lead.lock().unwrap_or_else(|e| e.into_inner());
        if !before.leading && before.next_attempt.is_some_and(|at| now < at) {
            return Ok(false);
        }
        let leading = self.store.lead_outbox_relay(self.lead_lapse()).await?;
        if leading != before.leading {
            if leading {
                tracing::info!("this process now leads the outbox relay");
                self.bus.lead_taken();
            } else {
                tracing::info!("another process leads the outbox relay; standing by");
            }
        }
        metrics::gauge!("outbox_relay_leader").set(if leading { 1.0 } else { 0.0 });
        *self.lead.lock().unwrap_or_else(|e| e.into_inner()) = Lead {
            leading,
            next_attempt: (!leading).then(|| now + self.settings.poll_interval),
        };
        Ok(leading)
    }

    /// Publishes one batch if this relay leads and marks it published; returns how many rows
    /// it published. (The running relay overlaps each batch's acknowledgements and mark with
    /// the next batches: see [`Self::relay_until`].)
    pub async fn tick(&self) -> Result<usize, BusError> {
        let mut pipeline = self.pipeline();
        let published = self.send_batch(&mut pipeline).await;
        let settled = self.settle_all(&mut pipeline).await;
        let marked = pipeline.marker.close().await;
        let published = published?;
        settled?;
        marked?;
        Ok(published)
    }

    /// An empty pipeline, with its marker running.
    fn pipeline(&self) -> Pipeline {
        Pipeline {
            in_flight: std::collections::VecDeque::new(),
            marker: Marker::start(self.store.clone(), self.clock.clone()),
        }
    }

    /// Sends one batch if this relay leads and leaves it in `pipeline` awaiting the bus's
    /// acknowledgements; returns how many rows it sent. Rows in flight or being marked are
    /// skipped, so they are not published twice; rows of the same keys after them go out
    /// meanwhile, which keeps each key's order because those rows were sent first.
    async fn send_batch(&self, pipeline: &mut Pipeline) -> Result<usize, BusError> {
        if !self.leads().await? {
            return Ok(0);
        }
        let pending = pipeline.seqs();
        let mut rows = match pending.iter().copied().max() {
            None => {
                self.store
                    .unpublished_events(self.settings.batch_size)
                    .await?
            }
            Some(through) => {
                let limit = self.settings.batch_size + pending.len() as u32;
                let mut rows = self.store.unpublished_events_after(through, limit).await?;
                rows.retain(|row| !pending.contains(&row.seq));
                rows
            }
        };
        rows.truncate(self.settings.batch_size as usize);
        if rows.is_empty() {
            return Ok(0);
        }
        let messages: Vec<Message> = rows
            .iter()
            .map(|row| Message {
                topic: self.names.physical(&row.topic),
                key: row.partition_key.clone(),
                id: format!("{}:{}", row.event_id, row.seq),
                payload: row.payload.clone().into_bytes(),
            })
            .collect();
        let spans: Vec<tracing::Span> = rows
            .iter()
            .zip(&messages)
            .map(|(row, message)| publish_span(row, &message.topic, self.bus.name()))
            .collect();
        let accepted = match self.bus.send(&messages).await {
            Ok(accepted) => accepted,
            Err(error) => {
                record_failure(&spans, &error);
                return Err(error);
            }
        };
        pipeline.in_flight.push_back(InFlight {
            rows,
            accepted,
            spans,
        });
        Ok(messages.len())
    }

    /// The oldest batch in flight was accepted (`outcome`): hands it to the marker. When the
    /// bus refused it, every batch sent after it is dropped from the pipeline too (so none of
    /// them is marked, which would mark the refused one with it); all go out again.
    fn accepted(
        &self,
        pipeline: &mut Pipeline,
        outcome: Result<(), BusError>,
    ) -> Result<(), BusError> {
        let Some(batch) = pipeline.in_flight.pop_front() else {
            return Ok(());
        };
        if let Err(error) = outcome {
            record_failure(&batch.spans, &error);
            pipeline.in_flight.clear();
            return Err(error);
        }
        let now = self.clock.now();
        for row in &batch.rows {
            metrics::counter!("events_published_total", "topic" => row.topic.clone(), "backend" => self.bus.name())
                .increment(1);
            let age = (now - row.created_at)
                .num_microseconds()
                .unwrap_or(0)
                .max(0) as f64
                / 1e6;
            metrics::histogram!("outbox_publish_delay_seconds").record(age);
        }
        pipeline.marker.mark(batch);
        Ok(())
    }

    /// Settles the batches in flight the bus has already accepted, then waits for the oldest
    /// ones until fewer than [`RelaySettings::batches_in_flight`] remain.
    async fn settle_ready(&self, pipeline: &mut Pipeline) -> Result<(), BusError> {
        use futures::FutureExt as _;
        while let Some(outcome) = pipeline
            .in_flight
            .front_mut()
            .and_then(|batch| (&mut batch.accepted).now_or_never())
        {
            self.accepted(pipeline, outcome)?;
        }
        while pipeline.in_flight.len() >= self.settings.batches_in_flight.max(1) {
            let outcome = pipeline.oldest_accepted().await;
            self.accepted(pipeline, outcome)?;
        }
        Ok(())
    }

    /// Waits for every batch in flight to be accepted and starts its mark.
    async fn settle_all(&self, pipeline: &mut Pipeline) -> Result<(), BusError> {
        while !pipeline.in_flight.is_empty() {
            let outcome = pipeline.oldest_accepted().await;
            self.accepted(pipeline, outcome)?;
        }
        Ok(())
    }

    /// Deletes published rows past the retention period.
    pub async fn prune(&self) -> Result<u64, BusError> {
        let retention = TimeDelta::from_std(self.settings.retention).unwrap_or(TimeDelta::days(7));
        Ok(self
            .store
            .prune_events(self.clock.now() - retention)
            .await?)
    }

    async fn record_backlog(&self) {
        if let Ok(backlog) = self.store.outbox_backlog().await {
            metrics::gauge!("outbox_backlog").set(backlog.unpublished as f64);
            let age = backlog
                .oldest_unpublished_at
                .map(|t| (self.clock.now() - t).num_milliseconds().max(0) as f64 / 1000.0)
                .unwrap_or(0.0);
            metrics::gauge!("outbox_oldest_age_seconds").set(age);
        }
    }

    /// Runs until `shutdown`: drains the outbox whenever a commit announces rows, polls as a
    /// fallback, backs off exponentially while the broker is unavailable, prunes hourly. Gives
    /// the lead up when it stops.
    pub async fn run(self, shutdown: CancellationToken) {
        self.relay_until(&shutdown).await;
        self.store.resign_outbox_relay().await;
    }

    /// The relay loop. Batches are sent to the bus without waiting for the ones before them
    /// to be acknowledged (up to [`RelaySettings::batches_in_flight`]); once the bus accepted
    /// a batch, the [`Marker`] records it as published (a store write, which waits for a
    /// commit) while the next batches are read and sent. So a batch waits only for the read
    /// and the send of the one before it. Should the bus refuse a batch, its rows and those
    /// sent after it are sent again after a backoff; should a mark fail, its rows may be (at
    /// least once, as after a crash).
    async fn relay_until(&self, shutdown: &CancellationToken) {
        let mut pipeline = self.pipeline();
        self.relay_with(shutdown, &mut pipeline).await;
        let settled = self.settle_all(&mut pipeline).await;
        if let Err(error) = settled.and(pipeline.marker.close().await) {
            tracing::warn!(%error, "the last batches were not marked published; they will be published again");
        }
    }

    async fn relay_with(&self, shutdown: &CancellationToken, pipeline: &mut Pipeline) {
        let mut commits = self.store.outbox_commits();
        let mut backoff = Duration::from_millis(100);
        let mut last_prune = tokio::time::Instant::now();
        let mut last_backlog = tokio::time::Instant::now() - Duration::from_secs(60);
        let mut rate = PublishRate::new();
        // A batch refused while the relay waited for commits.
        let mut refused = None;
        loop {
            if shutdown.is_cancelled() {
                return;
            }
            commits.borrow_and_update();
            let mut published = match refused.take().or_else(|| pipeline.marker.failure()) {
                Some(error) => Err(error),
                None => self.send_batch(pipeline).await,
            };
            if published.is_ok() {
                published = self.settle_ready(pipeline).await.and(published);
            }
            match published {
                Ok(n) if n > 0 => {
                    rate.add(n);
                    backoff = Duration::from_millis(100);
                    // Read again at once only when there is more: a full batch, or a commit
                    // since this read (an empty read per batch costs CPU the writers need).
                    if n >= self.settings.batch_size as usize
                        || commits.has_changed().unwrap_or(true)
                    {
                        continue;
                    }
                }
                Ok(_) => {
                    backoff = Duration::from_millis(100);
                }
                Err(error) => {
                    // What is still in flight is sent again after the backoff (a bus may skip
                    // what it knows it stored: NATS reads its streams' ends again).
                    pipeline.in_flight.clear();
                    if pipeline.marker.stopped() {
                        pipeline.marker = Marker::start(self.store.clone(), self.clock.clone());
                    }
                    tracing::warn!(%error, retry_in_ms = backoff.as_millis() as u64, "outbox relay cannot publish; will retry");
                    metrics::counter!("outbox_publish_failures_total").increment(1);
                    self.record_backlog().await;
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(self.settings.max_backoff);
                    continue;
                }
            }
            if last_backlog.elapsed() >= Duration::from_secs(5) {
                self.record_backlog().await;
                last_backlog = tokio::time::Instant::now();
            }
            if last_prune.elapsed() >= Duration::from_secs(3600) {
                match self.prune().await {
                    Ok(n) => tracing::debug!(pruned = n, "pruned published outbox rows"),
                    Err(error) => tracing::warn!(%error, "pruning the outbox failed"),
                }
                last_prune = tokio::time::Instant::now();
            }
            // Nothing new to send: wait for a commit, marking the batches in flight as the bus
            // accepts them.
            let committed = loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    outcome = pipeline.oldest_accepted(), if !pipeline.in_flight.is_empty() => {
                        if let Err(error) = self.accepted(pipeline, outcome) {
                            refused = Some(error);
                            break false;
                        }
                    }
                    changed = commits.changed() => break changed.is_ok(),
                    _ = tokio::time::sleep(self.settings.poll_interval) => break false,
                }
            };
            if committed
                && self.bus.consumers_read_outbox()
                && rate.per_second() < TRICKLE_EVENTS_PER_SECOND
            {
                tokio::select! {
                    _ = shutdown.cancelled() => {
                        // Record what the interval gathered before stopping.
                        if let Err(error) = self.send_batch(pipeline).await {
                            tracing::debug!(%error, "the last bookkeeping batch failed; the next start repeats it");
                        }
                        return;
                    }
                    _ = tokio::time::sleep(self.settings.bookkeeping_interval) => {}
                }
            }
        }
    }
}

/// What the running relay has sent and not yet seen marked published.
struct Pipeline {
    /// Batches sent, oldest first, awaiting the bus's acknowledgements.
    in_flight: std::collections::VecDeque<InFlight>,
    /// Marks accepted batches published.
    marker: Marker,
}

impl Pipeline {
    /// The seqs of every row in flight or accepted and not yet marked.
    fn seqs(&self) -> std::collections::HashSet<i64> {
        let mut seqs = self.marker.unmarked();
        seqs.extend(
            self.in_flight
                .iter()
                .flat_map(|batch| batch.rows.iter().map(|row| row.seq)),
        );
        seqs
    }

    /// Waits until the bus has accepted (or refused) the oldest batch in flight; pending for
    /// ever when there is none. Cancel-safe: the batch stays in flight until
    /// [`OutboxRelay::accepted`] takes it.
    async fn oldest_accepted(&mut self) -> Result<(), BusError> {
        match self.in_flight.front_mut() {
            Some(batch) => (&mut batch.accepted).await,
            None => std::future::pending().await,
        }
    }
}

/// A batch sent to the bus, not yet acknowledged.
struct InFlight {
    rows: Vec<OutboxRecord>,
    accepted: crate::PendingPublish,
    /// The rows' `publish` spans, which end once the batch is marked.
    spans: Vec<tracing::Span>,
}

/// Marks accepted batches published in a task of its own, in the order they were accepted
/// (the store marks in order; SQLite keeps a high-water mark), all batches accepted while a
/// mark was being written in the next single store write, so the relay never waits for a
/// commit. The relay skips rows accepted and not yet marked. A failed mark is reported to the
/// relay ([`Self::failure`]), which backs off as when the broker fails; its rows may then be
/// published again (at least once, as after a crash).
struct Marker {
    /// Seqs of accepted rows not yet marked.
    unmarked: Arc<std::sync::Mutex<std::collections::HashSet<i64>>>,
    /// The last mark failure the relay has not seen yet.
    failed: Arc<std::sync::Mutex<Option<String>>>,
    queue: Option<tokio::sync::mpsc::UnboundedSender<InFlight>>,
    task: tokio::task::JoinHandle<()>,
}

impl Marker {
    /// Starts the marking task.
    fn start(store: Arc<dyn Store>, clock: Arc<dyn Clock>) -> Self {
        let unmarked: Arc<std::sync::Mutex<std::collections::HashSet<i64>>> = Arc::default();
        let failed: Arc<std::sync::Mutex<Option<String>>> = Arc::default();
        let (queue, mut accepted) = tokio::sync::mpsc::unbounded_channel::<InFlight>();
        let (pending, failure) = (unmarked.clone(), failed.clone());
        let task = tokio::spawn(async move {
            while let Some(first) = accepted.recv().await {
                let mut batches = vec![first];
                while let Ok(next) = accepted.try_recv() {
                    batches.push(next);
                }
                let seqs: Vec<i64> = batches
                    .iter()
                    .flat_map(|batch| batch.rows.iter().map(|row| row.seq))
                    .collect();
                if let Err(error) = store.mark_published(&seqs, clock.now()).await {
                    *failure.lock().unwrap_or_else(|e| e.into_inner()) = Some(error.to_string());
                }
                let mut unmarked = pending.lock().unwrap_or_else(|e| e.into_inner());
                for seq in &seqs {
                    unmarked.remove(seq);
                }
                // The batches' spans end here.
            }
        });
        Self {
            unmarked,
            failed,
            queue: Some(queue),
            task,
        }
    }

    /// Queues `batch` (accepted by the bus) to be marked.
    fn mark(&mut self, batch: InFlight) {
        self.unmarked
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(batch.rows.iter().map(|row| row.seq));
        let queued = self
            .queue
            .as_ref()
            .is_some_and(|queue| queue.send(batch).is_ok());
        if !queued {
            // The task is gone (it panicked): [`Self::failure`] reports it.
            *self.failed.lock().unwrap_or_else(|e| e.into_inner()) =
                Some("the marking task stopped".into());
        }
    }

    /// A mark failure since the last call, or the task having stopped while still needed.
    fn failure(&self) -> Option<BusError> {
        let failed = self.failed.lock().unwrap_or_else(|e| e.into_inner()).take();
        match (failed, self.stopped()) {
            (Some(error), _) => Some(BusError::Unavailable(format!(
                "marking rows published: {error}"
            ))),
            (None, true) => Some(BusError::Unavailable("the marking task stopped".into())),
            (None, false) => None,
        }
    }

    /// Whether the task is gone while still needed (the relay then starts a new marker).
    fn stopped(&self) -> bool {
        self.queue.is_some() && self.task.is_finished()
    }

    /// Seqs of accepted rows not yet marked.
    fn unmarked(&self) -> std::collections::HashSet<i64> {
        self.unmarked
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Marks what is queued and stops; an error if a mark failed since the last
    /// [`Self::failure`].
    async fn close(&mut self) -> Result<(), BusError> {
        self.queue = None;
        if let Err(error) = (&mut self.task).await {
            return Err(BusError::Unavailable(format!(
                "marking batches published stopped: {error}"
            )));
        }
        self.failure().map_or(Ok(()), Err)
    }
}

/// Marks `spans` as failed with `error`.
fn record_failure(spans: &[tracing::Span], error: &BusError) {
    for span in spans {
        span.record("otel.status_code", "ERROR");
        span.record("error", tracing::field::display(error));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rate is that of the last full window of about a second, 0 before the first.
    #[tokio::test(start_paused = true)]
    async fn the_publish_rate_is_that_of_the_last_full_window() {
        let mut rate = PublishRate::new();
        rate.add(500);
        assert_eq!(rate.per_second(), 0.0, "no full window yet");
        tokio::time::advance(Duration::from_secs(1)).await;
        rate.add(1_500);
        assert_eq!(rate.per_second(), 2_000.0);
        rate.add(10);
        assert_eq!(
            rate.per_second(),
            2_000.0,
            "the next window is not full yet"
        );
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(rate.per_second(), 5.0);
    }
}
