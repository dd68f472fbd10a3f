//! WAL checkpoints on a thread of their own (`database.sqlite_checkpoints = "background"`).
//!
//! In WAL mode every commit appends pages to the `-wal` file; a *checkpoint* copies them back
//! into the database file and syncs it. SQLite's default (`wal_autocheckpoint = 1000`, our
//! default too) runs that checkpoint inside whichever commit pushed the log past 1 000 pages,
//! so now and then one batch of writers waits for the copying and an extra fsync. With
//! background checkpoints the writer turns automatic checkpoints off and a dedicated
//! connection runs `PASSIVE` checkpoints instead, which never block the writer or the readers.
//! The thread checkpoints when the writer reported a commit since the last checkpoint, at most
//! once per [`CHECKPOINT_INTERVAL`], so hot pages written many times in between are copied
//! once. Durability is unchanged: a commit is durable once its WAL frames are synced, before
//! any checkpoint; a crash during a checkpoint is recovered by SQLite.
//!
//! **Rewinding the log.** SQLite starts the log over only when a write transaction begins
//! after a checkpoint copied *all* of it and no reader still reads from it. A checkpoint beside
//! a busy writer never gets there (frames arrive while it copies), so under sustained writes
//! the log would grow without end and every read would search an ever larger WAL index (seen:
//! 100 MB of log for 80 MB written, list p99 from ~14 to ~120 ms after a minute of writes).
//! So once the thread reports [`REWIND_FRAMES`] frames, it copies once more (leaving only what
//! arrived meanwhile) and the writer, between two batches, runs a `RESTART` checkpoint: it
//! copies the rest, waits for readers of the log to finish, and the next transaction starts
//! the log over.
//!
//! **Measured** (`taskflow bench api --database sqlite`, 2 cores, alternating runs): ~1.4× the
//! peak creates (the copying moves to another core), but create p99 at a fixed 1 000/s about
//! three times worse (~47 against ~14 ms): each rewind holds the writer ~20 ms (two fsyncs and
//! the wait for the log's readers on that disk), and the thread's writes and fsyncs slow the
//! writer's own commits. Hence the default stays `commit`; `background` is for
//! throughput-bound deployments.
//!
//! SQLite has no checkpointing thread of its own to turn on, and rusqlite's WAL hook is not
//! exposed in the version we use, so this is the few lines it takes by hand.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use rusqlite::Connection;

use crate::error::StoreError;

use super::connection::{ConnectionOptions, open};

/// Shortest time between two checkpoints.
pub const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(100);

/// Log size (frames, ~4 KiB each) from which the writer completes a checkpoint itself so the
/// log can start over (about 64 MiB; SQLite's automatic threshold is 1 000 frames). Smaller
/// means more frequent ~20 ms writer stalls; larger, a larger log for readers to search.
pub const REWIND_FRAMES: i64 = 16_000;

/// Longest the writer waits for readers of the log when it rewinds it.
pub const REWIND_WAIT: Duration = Duration::from_millis(50);

/// The writer's side: tells the checkpointing thread that a commit added to the log.
/// Dropping it (the writer stopped) makes the thread run a last checkpoint and close.
#[derive(Debug)]
pub(crate) struct CommitSignal {
    signals: flume::Sender<()>,
    /// Frames in the log at the thread's last checkpoint.
    log_frames: Arc<AtomicI64>,
    /// The writer connection's usual busy timeout.
    busy_timeout: Duration,
}

impl CommitSignal {
    /// Notes a commit on the writer connection `conn`; never blocks on the thread (one pending
    /// signal is enough). When the log has grown to [`REWIND_FRAMES`], completes a checkpoint
    /// on `conn` so that the next transaction starts the log over.
    pub(crate) fn committed(&self, conn: &Connection) {
        let _ = self.signals.try_send(());
        if self.log_frames.load(Ordering::Acquire) >= REWIND_FRAMES {
            self.log_frames.store(0, Ordering::Release);
            let started = Instant::now();
            let outcome = rewind(conn, self.busy_timeout);
            metrics::histogram!("sqlite_writer_checkpoint_seconds").record(started.elapsed());
            if let Err(error) = outcome {
                tracing::warn!(%error, "the writer's WAL checkpoint failed; the next one retries");
            }
        }
    }
}

/// What one checkpoint reported (`PRAGMA wal_checkpoint` returns these three numbers).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Checkpoint {
    /// The checkpoint could not finish (another connection holds a conflicting lock).
    pub busy: bool,
    /// Frames in the log.
    pub log_frames: i64,
    /// Frames of the log now copied into the database file.
    pub checkpointed_frames: i64,
}

/// Runs one passive checkpoint on `conn`.
pub(crate) fn checkpoint(conn: &Connection) -> Result<Checkpoint, rusqlite::Error> {
    checkpoint_with(conn, "PRAGMA wal_checkpoint(PASSIVE)")
}

/// Runs the checkpoint `pragma` asks for and reads its report.
fn checkpoint_with(conn: &Connection, pragma: &str) -> Result<Checkpoint, rusqlite::Error> {
    conn.query_row(pragma, [], |row| {
        Ok(Checkpoint {
            busy: row.get::<_, i64>(0)? != 0,
            log_frames: row.get(1)?,
            checkpointed_frames: row.get(2)?,
        })
    })
}

/// Completes a checkpoint and waits, at most [`REWIND_WAIT`], until no reader still reads from
/// the log, so the next write transaction starts it over (`RESTART`); for the writer
/// connection, between batches, which then gets `busy_timeout` back. A reader that keeps the
/// log longer (an export, say) makes it report `busy`, and a later rewind tries again.
fn rewind(conn: &Connection, busy_timeout: Duration) -> Result<Checkpoint, rusqlite::Error> {
    conn.busy_timeout(REWIND_WAIT)?;
    let outcome = checkpoint_with(conn, "PRAGMA wal_checkpoint(RESTART)");
    conn.busy_timeout(busy_timeout)?;
    outcome
}

/// Starts the checkpointing thread on a connection of its own and turns automatic
/// checkpoints off on `writer`. If the thread cannot start, the writer keeps SQLite's
/// automatic checkpoints and this returns the error.
pub(crate) fn start(
    options: &ConnectionOptions,
    writer: &Connection,
) -> Result<CommitSignal, StoreError> {
    let conn = open(options, true)?;
    let (signals, received) = flume::bounded::<()>(1);
    let log_frames = Arc::new(AtomicI64::new(0));
    let reported = log_frames.clone();
    std::thread::Builder::new()
        .name("sqlite-checkpoint".into())
        .spawn(move || run(&conn, &received, &reported))
        .map_err(|e| StoreError::Unavailable(format!("cannot start the checkpointer: {e}")))?;
    writer.execute_batch("PRAGMA wal_autocheckpoint = 0")?;
    Ok(CommitSignal {
        signals,
        log_frames,
        busy_timeout: options.busy_timeout,
    })
}

/// The thread: a checkpoint after each signal, at most once per interval, and a last one when
/// the writer is gone.
fn run(conn: &Connection, received: &flume::Receiver<()>, log_frames: &AtomicI64) {
    let mut open = received.recv().is_ok();
    while open {
        let started = Instant::now();
        if let Some(mut done) = report(checkpoint(conn), started) {
            if done.log_frames >= REWIND_FRAMES {
                // Copy what arrived during that checkpoint too, so the writer's own one (which
                // it runs once told the log is long) is left with only a few frames.
                let again = Instant::now();
                done = report(checkpoint(conn), again).unwrap_or(done);
            }
            log_frames.store(done.log_frames, Ordering::Release);
        }
        // Wait out the interval; a commit meanwhile makes the next checkpoint start right after.
        let until = started + CHECKPOINT_INTERVAL;
        let mut signalled = false;
        loop {
            match received.recv_deadline(until) {
                Ok(()) => signalled = true,
                Err(flume::RecvTimeoutError::Timeout) => break,
                Err(flume::RecvTimeoutError::Disconnected) => {
                    open = false;
                    break;
                }
            }
        }
        if open && !signalled {
            open = received.recv().is_ok();
        }
    }
    let started = Instant::now();
    report(checkpoint(conn), started);
}

/// Records a checkpoint's outcome in the metrics (and the log, when it failed).
fn report(outcome: Result<Checkpoint, rusqlite::Error>, started: Instant) -> Option<Checkpoint> {
    match outcome {
        Ok(done) => {
            metrics::histogram!("sqlite_checkpoint_seconds").record(started.elapsed());
            metrics::gauge!("sqlite_wal_frames").set(done.log_frames as f64);
            if done.busy {
                tracing::debug!(
                    ?done,
                    "a WAL checkpoint could not finish; the next one will"
                );
            }
            Some(done)
        }
        Err(error) => {
            tracing::warn!(%error, "a WAL checkpoint failed; the next one retries");
            None
        }
    }
}
