//! The reminder scheduler: fires each reminder at its instant, once.
//!
//! The reminders table is the truth; the scheduler keeps only a horizon of the soonest
//! instants in memory, sleeps until the first, then claims what is due under a lease and
//! fires it (state `sent` and the `reminder.due` event in one transaction). A reminder
//! scheduled earlier than what the scheduler sleeps for wakes it at once (the store announces
//! new instants after each commit); reminders added by other processes are seen at the next
//! poll. Several schedulers may run against one database: a claim is atomic, and a crashed
//! instance's claims are taken over once their lease expires. After a restart, reminders whose
//! instant passed while nothing ran are due at once and fire marked late (`late_by_ms`).
//!
//! [`Scheduler`] is the logic, driven by an injected clock so tests never sleep; [`run`] is
//! the loop that sleeps between firings.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use taskflow_domain::Clock;
use taskflow_domain::reminder::reminder_due_event;
use taskflow_store::{ReminderStore, StoreError};

/// How close to a reminder's instant the loop stops sleeping and yields until it arrives.
const FINE_WAIT: Duration = Duration::from_millis(2);

/// How a scheduler works.
#[derive(Clone, Debug)]
pub struct SchedulerSettings {
    /// How long a claim holds before another instance may take it over.
    pub lease: Duration,
    /// Most reminders claimed and fired in one transaction.
    pub batch: u32,
    /// How many upcoming instants are kept in memory.
    pub horizon: u32,
    /// How often the table is read again for reminders other processes scheduled.
    pub poll_interval: Duration,
}

impl Default for SchedulerSettings {
    fn default() -> Self {
        Self {
            lease: Duration::from_secs(30),
            batch: 5000,
            horizon: 1000,
            poll_interval: Duration::from_secs(1),
        }
    }
}

/// What one round of firing did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FireReport {
    /// Reminders fired (their events committed).
    pub fired: u64,
    /// Claimed reminders that were not fired (cancelled or taken over meanwhile).
    pub skipped: u64,
    /// Claimed reminders whose task was gone (marked failed).
    pub orphaned: u64,
    /// For each fired reminder, how long after its instant its event was committed.
    pub lateness: Vec<TimeDelta>,
}

/// The scheduling logic over a store and a clock.
pub struct Scheduler {
    store: Arc<dyn ReminderStore>,
    clock: Arc<dyn Clock>,
    settings: SchedulerSettings,
    /// Upcoming instants (with multiplicity), soonest first; at most `settings.horizon`.
    horizon: BTreeMap<DateTime<Utc>, u32>,
    /// Whether the horizon holds every upcoming instant (the table had fewer than `horizon`).
    complete: bool,
}

impl Scheduler {
    /// A scheduler with an empty horizon; call [`Scheduler::refresh`] first.
    pub fn new(
        store: Arc<dyn ReminderStore>,
        clock: Arc<dyn Clock>,
        settings: SchedulerSettings,
    ) -> Self {
        Self {
            store,
            clock,
            settings,
            horizon: BTreeMap::new(),
            complete: false,
        }
    }

    /// Reads the soonest instants from the table into the horizon.
    pub async fn refresh(&mut self) -> Result<(), StoreError> {
        let limit = self.settings.horizon.max(1);
        let instants = self.store.upcoming_reminder_instants(limit).await?;
        self.complete = instants.len() < limit as usize;
        self.horizon.clear();
        for at in instants {
            *self.horizon.entry(at).or_default() += 1;
        }
        Ok(())
    }

    /// When something next becomes due; `None` when nothing is scheduled.
    pub fn next_wake(&self) -> Option<DateTime<Utc>> {
        self.horizon.keys().next().copied()
    }

    /// Takes note of an instant the store announced (a newly scheduled reminder), so an
    /// earlier one than the current next wake is not slept through.
    pub fn note(&mut self, at: DateTime<Utc>) {
        let within = self.complete
            || self
                .horizon
                .keys()
                .next_back()
                .is_none_or(|last| at <= *last);
        if within {
            *self.horizon.entry(at).or_default() += 1;
        }
    }

    /// Claims and fires everything due now, in batches, and forgets the instants passed.
    pub async fn fire_due(&mut self) -> Result<FireReport, StoreError> {
        let mut report = FireReport::default();
        loop {
            let now = self.clock.now();
            let lease = TimeDelta::from_std(self.settings.lease).unwrap_or(TimeDelta::seconds(30));
            let claim = self
                .store
                .claim_due_reminders(now, now + lease, self.settings.batch)
                .await?;
            report.orphaned += claim.orphaned;
            let claimed = claim.due.len() as u64 + claim.orphaned;
            if !claim.due.is_empty() {
                let fired_at = self.clock.now();
                let events: Vec<_> = claim
                    .due
                    .iter()
                    .map(|due| {
                        (
                            due.reminder.id,
                            reminder_due_event(due, due.reminder.fire_count + 1, fired_at),
                        )
                    })
                    .collect();
                let fired = self
                    .store
                    .fire_reminders(claim.token, &events, fired_at)
                    .await?;
                let committed = self.clock.now();
                report.fired += fired;
                report.skipped += claim.due.len() as u64 - fired;
                for due in &claim.due {
                    let late = committed - due.reminder.fire_at;
                    report.lateness.push(late);
                    metrics::histogram!("reminder_lateness_seconds")
                        .record(late.num_microseconds().unwrap_or(i64::MAX) as f64 / 1e6);
                    if late > TimeDelta::seconds(1) {
                        metrics::counter!("reminders_late_total").increment(1);
                    }
                }
                metrics::counter!("reminders_fired_total").increment(fired);
            }
            if claimed < u64::from(self.settings.batch) {
                // Everything due at `now` is fired: forget those instants.
                self.horizon = self.horizon.split_off(&(now + TimeDelta::microseconds(1)));
                break;
            }
        }
        if self.horizon.is_empty() || !self.complete && self.horizon.len() < 16 {
            self.refresh().await?;
        }
        Ok(report)
    }
}

/// Runs `scheduler` until `shutdown` resolves: fires what is due, sleeps until the next
/// instant (or an announced earlier one, or the next poll), and again. Store errors are logged
/// and retried after a pause; nothing is lost, the table is the truth.
pub async fn run(scheduler: Scheduler, shutdown: impl std::future::Future<Output = ()> + Unpin) {
    run_reporting(scheduler, shutdown, None).await;
}

/// [`run`], also sending every round's [`FireReport`] to `reports` (for benchmarks).
pub async fn run_reporting(
    mut scheduler: Scheduler,
    mut shutdown: impl std::future::Future<Output = ()> + Unpin,
    reports: Option<tokio::sync::mpsc::UnboundedSender<FireReport>>,
) {
    let mut changes = scheduler.store.reminder_changes();
    let poll = scheduler.settings.poll_interval;
    // Exported from the start (at zero), so dashboards and alerts see them before the first firing.
    metrics::counter!("reminders_fired_total").increment(0);
    metrics::counter!("reminders_late_total").increment(0);
    let mut last_poll = tokio::time::Instant::now();
    if let Err(error) = scheduler.refresh().await {
        tracing::warn!(%error, "scheduler could not read the reminders table");
    }
    // Counting millions of pending rows takes a while: never in the firing loop.
    let counter = scheduler.store.clone();
    let gauge = tokio::spawn(async move {
        loop {
            if let Ok(pending) = counter.pending_reminder_count().await {
                metrics::gauge!("reminders_pending").set(pending as f64);
            }
            tokio::time::sleep(Duration::from_secs(30)).await;
        }
    });
    let _stop_gauge = AbortOnDrop(gauge);
    loop {
        let now = scheduler.clock.now();
        if scheduler.next_wake().is_some_and(|at| at <= now) {
            match scheduler.fire_due().await {
                Ok(report) => {
                    if report.fired > 0 || report.orphaned > 0 {
                        tracing::debug!(
                            fired = report.fired,
                            skipped = report.skipped,
                            orphaned = report.orphaned,
                            "reminders fired"
                        );
                    }
                    if let Some(reports) = &reports {
                        let _ = reports.send(report);
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "firing reminders failed; retrying");
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_millis(500)) => {}
                        () = &mut shutdown => return,
                    }
                }
            }
            continue;
        }
        let until_poll = poll.saturating_sub(last_poll.elapsed());
        let until_next = scheduler
            .next_wake()
            .map(|at| (at - now).to_std().unwrap_or(Duration::ZERO));
        // The timer has millisecond ticks and rounds up: for the last stretch, yield instead of
        // sleeping, so a reminder fires within a fraction of a millisecond of its instant.
        if until_next.is_some_and(|d| d <= FINE_WAIT) {
            tokio::task::yield_now().await;
            continue;
        }
        let sleep_for = until_next.map_or(until_poll, |d| (d - FINE_WAIT).min(until_poll));
        tokio::select! {
            () = tokio::time::sleep(sleep_for) => {
                if last_poll.elapsed() >= poll {
                    last_poll = tokio::time::Instant::now();
                    if let Err(error) = scheduler.refresh().await {
                        tracing::warn!(%error, "scheduler could not read the reminders table");
                    }
                }
            }
            changed = changes.changed() => {
                if changed.is_err() {
                    return;
                }
                let announced = *changes.borrow_and_update();
                if let Some(at) = announced {
                    scheduler.note(at);
                }
            }
            () = &mut shutdown => return,
        }
    }
}

/// Aborts a background task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
