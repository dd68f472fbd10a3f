//! WAL checkpoints on a thread of their own (`database.sqlite_checkpoints = "background"`, the
//! default).
//!
//! In WAL mode every commit appends pages to the `-wal` file; a *checkpoint* copies them back
//! into the database file and syncs it. SQLite's own way (`wal_autocheckpoint = 1000`, kept
//! with `sqlite_checkpoints = "commit"`) runs that checkpoint inside whichever commit pushed the
//! log past 1 000 pages, so now and then one batch of writers waits for the copying and a sync
//! of many scattered pages. Here the writer turns automatic checkpoints off and a dedicated
//! connection runs `PASSIVE` checkpoints instead, which never block the writer or the readers.
//! The thread checkpoints when the writer reported a commit since the last checkpoint, at most
//! once per [`CHECKPOINT_INTERVAL`]: often, so that each sync is short (a long one holds up
//! the writer's own log syncs on the same disk), yet a hot page written by several commits in
//! between is copied once. Durability is unchanged: a commit is durable once its WAL frames are
//! synced, before any checkpoint; a crash during a checkpoint is recovered by SQLite.
//!
//! **Rewinding the log.** SQLite starts the log over only when a write transaction begins
//! after a checkpoint copied *all* of it and no reader still reads from it. A checkpoint beside
//! a busy writer never gets there (frames arrive while it copies), so under sustained writes
//! the log would grow without end and every read would search an ever larger WAL index (seen:
//! 100 MB of log for 80 MB written, list p99 from ~14 to ~120 ms after a minute of writes).
//! So once the thread reports [`REWIND_FRAMES`] frames, the writer, between two batches, runs
//! a `RESTART` checkpoint itself: it copies the few frames the thread has not, and starts the
//! log over. It never waits: if a reader still reads from the log (or the thread is
//! checkpointing) it gives up at once and tries again after [`REWIND_RETRY`]; only if readers
//! kept it from rewinding until the log reached twice that size does it wait for them, at most
//! [`REWIND_WAIT`], so reads that never pause cannot make the log grow without end. An earlier
//! version waited up to 50 ms for readers, and each rewind held the writer ~20 ms (SQLite's
//! busy handler sleeps 1, 2, 5, 10… ms between tries, likely most of that).
//!
//! **Measured** (`taskflow bench api --database sqlite`, 64 users, 2 cores, alternating runs;
//! README, "HTTP API throughput"): against `commit`, ~1.3× the peak creates (the copying moves
//! to the other core) and a lower create p99 at the same load (~11–12 against ~17 ms at
//! 1 250/s). With checkpoints at most every 100 ms the tail was ~3× *worse* (~60 ms at half
//! peak): each checkpoint synced ~100 ms of scattered pages in one go (up to 50 ms a sync),
//! during which the writer's small log writes and syncs stalled behind it.
//!
//! SQLite has no checkpointing thread of its own to turn on, and rusqlite's WAL hook is not
//! exposed in the version we use, so this is the few lines it takes by hand.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use rusqlite::Connection;

use crate::error::StoreError;

use super::connection::{ConnectionOptions, open};

/// Shortest time between two checkpoints (5 ms: measured against 1, 20 and 100 ms).
pub const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(5);

/// Log size (frames, ~4 KiB each) from which the writer completes a checkpoint itself so the
/// log can start over (about 64 MiB; SQLite's automatic threshold is 1 000 frames). Smaller
/// means more of the writer's short rewinds; larger, a larger log for readers to search.
pub const REWIND_FRAMES: i64 = 16_000;

/// Shortest time between two of the writer's attempts to rewind the log (an attempt that
/// finds a reader still in the log, or the thread checkpointing, gives up at once).
pub const REWIND_RETRY: Duration = Duration::from_millis(20);

/// Longest the writer waits for readers of the log when it rewinds a log of twice
/// [`REWIND_FRAMES`] or more (below that it does not wait).
pub const REWIND_WAIT: Duration = Duration::from_millis(50);

/// How long a rewind of a log of `log_frames` frames waits for readers still in it.
fn rewind_wait(log_frames: i64) -> Duration {
    if log_frames >= 2 * REWIND_FRAMES {
        REWIND_WAIT
    } else {
        Duration::ZERO
    }
}

/// The writer's side: tells the checkpointing thread that a commit added to the log.
/// Dropping it (the writer stopped) makes the thread run a last checkpoint and close.
#[derive(Debug)]
pub(crate) struct CommitSignal {
    signals: flume::Sender<()>,
    /// Frames in the log at the thread's last checkpoint.
    log_frames: Arc<AtomicI64>,
    /// The writer connection's usual busy timeout.
    busy_timeout: Duration,
    /// When the writer may next try to rewind the log.
    next_rewind: std::cell::Cell<Instant>,
}

impl CommitSignal {
    /// Notes a commit on the writer connection `conn`; never blocks on the thread (one pending
    /// signal is enough). When the log has grown to [`REWIND_FRAMES`], tries to complete a
    /// checkpoint on `conn` and start the log over, waiting for readers only as
    /// [`rewind_wait`] says.
    pub(crate) fn committed(&self, conn: &Connection) {
        let _ = self.signals.try_send(());
        let now = Instant::now();
        let log_frames = self.log_frames.load(Ordering::Acquire);
        if log_frames >= REWIND_FRAMES && now >= self.next_rewind.get() {
            let outcome = rewind(conn, rewind_wait(log_frames), self.busy_timeout);
            let label = match outcome {
                Ok(done) if !done.busy => {
                    self.log_frames.store(0, Ordering::Release);
                    "done"
                }
                Ok(_) => {
                    self.next_rewind.set(now + REWIND_RETRY);
                    "busy"
                }
                Err(error) => {
                    tracing::warn!(%error, "the writer's WAL checkpoint failed; the next one retries");
                    self.next_rewind.set(now + REWIND_RETRY);
                    "failed"
                }
            };
            metrics::counter!("sqlite_wal_rewinds_total", "outcome" => label).increment(1);
            metrics::histogram!("sqlite_writer_checkpoint_seconds", "outcome" => label)
                .record(now.elapsed());
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

/// Copies what is left of the log and starts it over (`RESTART`), waiting at most `wait`: if a
/// reader still reads from the log after that, or the thread is checkpointing, it reports
/// `busy` and the log goes on. For the writer connection between batches, which then gets
/// `busy_timeout` back.
fn rewind(
    conn: &Connection,
    wait: Duration,
    busy_timeout: Duration,
) -> Result<Checkpoint, rusqlite::Error> {
    conn.busy_timeout(wait)?;
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
        next_rewind: std::cell::Cell::new(Instant::now()),
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Appends `rows` rows of ~3 KB each, one transaction.
    fn write(conn: &Connection, rows: i64) {
        conn.execute(
            "WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < ?1)
             INSERT INTO t SELECT i, randomblob(3000) FROM s",
            [rows],
        )
        .unwrap();
    }

    /// A reader still reading from the log makes the writer's rewind give up at once, instead of
    /// waiting for it as long as the writer's busy timeout allows; once the reader is done, the
    /// rewind copies the rest and the next commit starts the log over.
    #[test]
    fn a_rewind_never_waits_for_readers_and_starts_the_log_over_once_they_are_done() {
        let dir = std::env::temp_dir().join(format!(
            "taskflow-rewind-test-{}",
            uuid::Uuid::now_v7().simple()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let options = ConnectionOptions {
            path: dir.join("rewind.db"),
            synchronous_full: false,
            busy_timeout: Duration::from_secs(10),
            mmap_bytes: 0,
        };
        let writer = open(&options, true).unwrap();
        writer
            .execute_batch("PRAGMA wal_autocheckpoint = 0; CREATE TABLE t (v INTEGER, pad BLOB)")
            .unwrap();
        write(&writer, 100);
        let reader = open(&options, false).unwrap();
        reader.execute_batch("BEGIN").unwrap();
        let rows: i64 = reader
            .query_row("SELECT count(*) FROM t", [], |row| row.get(0))
            .unwrap();
        assert_eq!(rows, 100);
        write(&writer, 100);

        let started = Instant::now();
        let held = rewind(&writer, rewind_wait(REWIND_FRAMES), options.busy_timeout).unwrap();
        assert!(held.busy, "a reader still reads from the log: {held:?}");
        assert!(
            held.checkpointed_frames < held.log_frames,
            "the frames the reader may still need stay in the log: {held:?}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the rewind gave up at once instead of waiting out the 10 s busy timeout: {:?}",
            started.elapsed()
        );

        reader.execute_batch("COMMIT").unwrap();
        let done = rewind(&writer, rewind_wait(REWIND_FRAMES), options.busy_timeout).unwrap();
        assert!(!done.busy, "no reader left: {done:?}");
        assert_eq!(done.checkpointed_frames, done.log_frames, "{done:?}");
        write(&writer, 1);
        let after = checkpoint(&writer).unwrap();
        assert!(
            after.log_frames < 10,
            "the next commit started the log over: {after:?} after {done:?}"
        );
        drop((reader, writer));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Readers that never pause cannot make the log grow without end: from twice the rewind
    /// size, the rewind waits for them.
    #[test]
    fn a_rewind_waits_for_readers_only_once_the_log_is_twice_the_rewind_size() {
        assert_eq!(rewind_wait(REWIND_FRAMES), Duration::ZERO);
        assert_eq!(rewind_wait(2 * REWIND_FRAMES - 1), Duration::ZERO);
        assert_eq!(rewind_wait(2 * REWIND_FRAMES), REWIND_WAIT);
        assert_eq!(rewind_wait(10 * REWIND_FRAMES), REWIND_WAIT);
    }
}
