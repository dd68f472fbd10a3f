//! WAL checkpoints on a thread of their own, off the writer's path.
//!
//! In WAL mode every commit appends pages to the `-wal` file; a *checkpoint* copies them back
//! into the database file and syncs it. SQLite's default (`wal_autocheckpoint = 1000`) runs
//! that checkpoint inside whichever commit pushed the log past 1 000 pages, so every few dozen
//! group commits one batch of writers waits for a few megabytes of copying and an extra fsync
//! before it is acknowledged — the tail of the write latency. Here the writer connection turns
//! automatic checkpoints off and a dedicated connection runs `PASSIVE` checkpoints instead:
//! they never block the writer or the readers (SQLite lets a checkpoint run while a writer
//! appends), and the writer rewinds the log on its next transaction once a checkpoint has
//! copied all of it. Durability is unchanged: a commit is durable when its WAL frames are
//! synced, before any checkpoint; a crash during a checkpoint is recovered by SQLite.
//!
//! The thread checkpoints when the writer reported a commit since the last checkpoint, at most
//! once per [`CHECKPOINT_INTERVAL`], so hot pages written many times between two checkpoints
//! are copied once. SQLite has no checkpointing thread of its own to turn on, and rusqlite's
//! WAL hook is not exposed in the version we use, so this is the few lines it takes by hand.

use std::time::{Duration, Instant};

use rusqlite::Connection;

use crate::error::StoreError;

use super::connection::{ConnectionOptions, open};

/// Shortest time between two checkpoints.
pub const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(100);

/// The writer's side: tells the checkpointing thread that a commit added to the log.
/// Dropping it (the writer stopped) makes the thread run a last checkpoint and close.
#[derive(Debug)]
pub(crate) struct CommitSignal {
    signals: flume::Sender<()>,
}

impl CommitSignal {
    /// Notes a commit; never blocks (one pending signal is enough).
    pub(crate) fn committed(&self) {
        let _ = self.signals.try_send(());
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
    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| {
        Ok(Checkpoint {
            busy: row.get::<_, i64>(0)? != 0,
            log_frames: row.get(1)?,
            checkpointed_frames: row.get(2)?,
        })
    })
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
    std::thread::Builder::new()
        .name("sqlite-checkpoint".into())
        .spawn(move || run(&conn, &received))
        .map_err(|e| StoreError::Unavailable(format!("cannot start the checkpointer: {e}")))?;
    writer.execute_batch("PRAGMA wal_autocheckpoint = 0")?;
    Ok(CommitSignal { signals })
}

/// The thread: a checkpoint after each signal, at most once per interval, and a last one when
/// the writer is gone.
fn run(conn: &Connection, received: &flume::Receiver<()>) {
    let mut open = received.recv().is_ok();
    while open {
        let started = Instant::now();
        report(checkpoint(conn), started);
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
fn report(outcome: Result<Checkpoint, rusqlite::Error>, started: Instant) {
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
        }
        Err(error) => tracing::warn!(%error, "a WAL checkpoint failed; the next one retries"),
    }
}
