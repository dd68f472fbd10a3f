//! The embedded store's connections: one writer thread that group-commits, and a few reader
//! threads.
//!
//! Every connection lives on an OS thread of its own and runs whole jobs — closures over a
//! `rusqlite::Connection` — synchronously, with cached prepared statements. An async caller
//! hands a job over and awaits its answer: one hand-over per operation, however many statements
//! the operation runs. (Drivers that run each *statement* as a round trip to a connection
//! thread pay that hand-over per statement, which bounds a single writer at a few thousand
//! transactions a second; this is why the embedded store uses rusqlite directly.)
//!
//! **Group commit.** A durable SQLite commit costs an fsync, so committing each write on its
//! own caps the store at a few hundred writes a second on ordinary disks. The writer thread
//! takes every job waiting (up to [`MAX_BATCH`]), runs them in one `BEGIN IMMEDIATE`
//! transaction, commits once, and only then answers each caller. If a job fails, that
//! transaction is rolled back and the batch runs again with each job in its own `SAVEPOINT`,
//! so a failing job is rolled back alone and disturbs no other (see [`Writer::write`]). A caller is therefore
//! acknowledged only after its write is durable, and a crash before the commit loses only
//! unacknowledged writes. Jobs run in arrival order, so each sees the effects of the jobs before
//! it exactly as if they had committed one by one.
//!
//! No pool crate is used: the writer must be a single dedicated thread for group commit, and
//! the readers use the same hand-over, which is a few lines on top of `flume` channels.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags};
use tokio::sync::{oneshot, watch};

use super::checkpoint::CommitSignal;
use crate::error::StoreError;

/// Most jobs sharing one transaction.
pub const MAX_BATCH: usize = 512;

/// Prepared statements kept per connection.
const STATEMENT_CACHE: usize = 128;

/// How to open each connection.
#[derive(Clone, Debug)]
pub(crate) struct ConnectionOptions {
    /// The database file.
    pub path: PathBuf,
    /// `synchronous=FULL` (durable across power loss) rather than `NORMAL`.
    pub synchronous_full: bool,
    /// How long a connection waits for a lock another process holds.
    pub busy_timeout: Duration,
    /// Bytes of the database file read through a memory map (`PRAGMA mmap_size`; 0: none).
    pub mmap_bytes: u64,
}

/// Opens one connection with the store's pragmas (the writer also switches the file to WAL).
pub(crate) fn open(options: &ConnectionOptions, writer: bool) -> Result<Connection, StoreError> {
    let flags = if writer {
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE
    } else {
        OpenFlags::SQLITE_OPEN_READ_ONLY
    } | OpenFlags::SQLITE_OPEN_NO_MUTEX
        | OpenFlags::SQLITE_OPEN_URI;
    let conn = Connection::open_with_flags(&options.path, flags).map_err(|e| {
        StoreError::Unavailable(format!("cannot open {}: {e}", options.path.display()))
    })?;
    conn.busy_timeout(options.busy_timeout)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    if writer {
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Unavailable(format!(
                "{} cannot use write-ahead logging (journal_mode stays {mode})",
                options.path.display()
            )));
        }
    }
    let synchronous = if options.synchronous_full {
        "FULL"
    } else {
        "NORMAL"
    };
    // The memory map lets every connection read pages the operating system has cached
    // without a system call and a copy each (`taskflow bench api` at 100 000 tasks: lists at
    // peak 58–75 → 139–173/s); the connections' own page caches stay small, since they would
    // each hold copies of the same pages.
    conn.execute_batch(&format!(
        "PRAGMA synchronous = {synchronous};
         PRAGMA foreign_keys = ON;
         PRAGMA temp_store = MEMORY;
         PRAGMA cache_size = -16000;
         PRAGMA mmap_size = {};",
        options.mmap_bytes
    ))?;
    if writer {
        conn.execute_batch(super::deferred_index::PENDING_TABLE)?;
    }
    Ok(conn)
}

/// A message to a connection thread.
enum Message<J> {
    Job(J),
    /// Finish what was taken and close the connection.
    Stop,
}

type ReadJob = Box<dyn FnOnce(&Connection) + Send>;

/// Reader threads, each with a read-only connection, taking jobs from one queue.
///
/// Slow reads (searches that rank thousands of matches, tens of milliseconds each) may hold all
/// but one of the threads at a time ([`Readers::read_slow`]), so a quick read never queues for a
/// connection behind them.
#[derive(Clone, Debug)]
pub(crate) struct Readers {
    jobs: flume::Sender<Message<ReadJob>>,
    threads: usize,
    closed: Arc<AtomicBool>,
    /// Slow reads queued or running, at most all threads but one.
    slow_reads: Arc<tokio::sync::Semaphore>,
}

impl Readers {
    /// Opens `count` read-only connections, each on a thread of its own.
    pub(crate) fn start(options: &ConnectionOptions, count: usize) -> Result<Self, StoreError> {
        let (jobs, queue) = flume::unbounded::<Message<ReadJob>>();
        let count = count.max(1);
        for index in 0..count {
            let conn = open(options, false)?;
            let queue = queue.clone();
            std::thread::Builder::new()
                .name(format!("sqlite-reader-{index}"))
                .spawn(move || {
                    while let Ok(Message::Job(job)) = queue.recv() {
                        job(&conn);
                    }
                })
                .map_err(|e| StoreError::Unavailable(format!("cannot start a reader: {e}")))?;
        }
        Ok(Self {
            jobs,
            threads: count,
            closed: Arc::new(AtomicBool::new(false)),
            slow_reads: Arc::new(tokio::sync::Semaphore::new((count - 1).max(1))),
        })
    }

    /// [`Readers::read`] for a read that may take long: it waits while all threads but one are
    /// taken by other slow reads.
    pub(crate) async fn read_slow<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let _slot = self
            .slow_reads
            .acquire()
            .await
            .map_err(|_| StoreError::Unavailable("the database readers have stopped".into()))?;
        self.read(work).await
    }

    /// Runs `work` on a reader connection and returns its result; the wait for a free reader
    /// is recorded in `sqlite_read_queue_seconds`.
    pub(crate) async fn read<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        if self.closed.load(Ordering::Acquire) {
            return Err(StoreError::Unavailable("the database is closed".into()));
        }
        let (reply, answer) = oneshot::channel();
        let queued_at = Instant::now();
        let job: ReadJob = Box::new(move |conn| {
            metrics::histogram!("sqlite_read_queue_seconds").record(queued_at.elapsed());
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(conn)))
                .unwrap_or_else(|_| Err(StoreError::Corrupt("a database read panicked".into())));
            let _ = reply.send(result);
        });
        self.jobs
            .send(Message::Job(job))
            .map_err(|_| StoreError::Unavailable("the database readers have stopped".into()))?;
        answer
            .await
            .map_err(|_| StoreError::Unavailable("the database readers have stopped".into()))?
    }

    /// Stops every reader once it finished the jobs queued before.
    pub(crate) fn close(&self) {
        if !self.closed.swap(true, Ordering::AcqRel) {
            for _ in 0..self.threads {
                let _ = self.jobs.send(Message::Stop);
            }
        }
    }
}

/// What one run of a job reports to the writer (before the commit).
struct Attempt {
    succeeded: bool,
    /// Newest outbox seq the job wrote, announced after the commit.
    outbox_seq: Option<i64>,
}

/// A write waiting for the writer thread.
struct WriteJob {
    /// Runs the work; may run again if its first run was rolled back with its batch.
    run: Box<dyn Fn(&Connection) -> Attempt + Send>,
    /// Answers the caller with the outcome of the last run and the commit's result.
    finish: Box<dyn FnOnce(Result<(), String>) + Send>,
    /// When the caller queued it (`sqlite_write_queue_seconds` is the wait until its batch).
    queued_at: Instant,
}

/// The handle write methods use; cheap to clone.
#[derive(Clone, Debug)]
pub(crate) struct Writer {
    jobs: flume::Sender<Message<WriteJob>>,
    closed: Arc<AtomicBool>,
    /// Answered when the writer thread has closed its connection.
    stopped: Arc<tokio::sync::Mutex<Option<oneshot::Receiver<()>>>>,
}

impl Writer {
    /// Starts the writer thread on `conn`. Commits that wrote outbox rows raise
    /// `outbox_commits` to their newest seq; every commit is reported to `checkpoints`, the
    /// thread that checkpoints the log when `conn` does not (see [`super::checkpoint`]).
    pub(crate) fn start(
        conn: Connection,
        outbox_commits: Arc<watch::Sender<i64>>,
        checkpoints: Option<CommitSignal>,
    ) -> Result<Self, StoreError> {
        let (jobs, queue) = flume::bounded::<Message<WriteJob>>(4 * MAX_BATCH);
        let (stopped_tx, stopped) = oneshot::channel();
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || {
                run(&conn, &queue, &outbox_commits, checkpoints.as_ref());
                drop(checkpoints);
                drop(conn);
                let _ = stopped_tx.send(());
            })
            .map_err(|e| StoreError::Unavailable(format!("cannot start the writer: {e}")))?;
        Ok(Self {
            jobs,
            closed: Arc::new(AtomicBool::new(false)),
            stopped: Arc::new(tokio::sync::Mutex::new(Some(stopped))),
        })
    }

    /// Runs `work` in the next group transaction. Its value is returned once the transaction
    /// committed; its error (after rolling back its own changes) once the batch is done.
    /// `work` returns the newest outbox seq it wrote, if any, to wake the relay after the
    /// commit. `work` may run twice: when another job of its batch fails, the batch is rolled
    /// back and run again with each job in a savepoint, so `work` must depend only on what it
    /// captured and on the database.
    pub(crate) async fn write<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: Fn(&Connection) -> Result<(T, Option<i64>), StoreError> + Send + 'static,
    {
        if self.closed.load(Ordering::Acquire) {
            return Err(StoreError::Unavailable("the database is closed".into()));
        }
        let (reply, answer) = oneshot::channel::<Result<T, StoreError>>();
        let outcome = Arc::new(std::sync::Mutex::new(None::<Result<T, StoreError>>));
        let last_run = outcome.clone();
        let job = WriteJob {
            run: Box::new(move |conn| {
                let result = work(conn);
                let attempt = Attempt {
                    succeeded: result.is_ok(),
                    outbox_seq: result.as_ref().ok().and_then(|(_, seq)| *seq),
                };
                *last_run.lock().unwrap_or_else(PoisonError::into_inner) =
                    Some(result.map(|(value, _)| value));
                attempt
            }),
            finish: Box::new(move |committed| {
                let result = outcome
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .take();
                let answer = match (result, committed) {
                    (Some(Ok(value)), Ok(())) => Ok(value),
                    (Some(Ok(_)), Err(reason)) => Err(StoreError::Unavailable(reason)),
                    (Some(Err(error)), _) => Err(error),
                    (None, _) => Err(StoreError::Unavailable(
                        "the write did not complete (it panicked or its batch failed)".into(),
                    )),
                };
                let _ = reply.send(answer);
            }),
            queued_at: Instant::now(),
        };
        self.jobs
            .send_async(Message::Job(job))
            .await
            .map_err(|_| StoreError::Unavailable("the database writer has stopped".into()))?;
        answer.await.map_err(|_| {
            StoreError::Unavailable("the database writer stopped before committing".into())
        })?
    }

    /// Stops the writer after the jobs queued before, and waits until its connection is closed.
    pub(crate) async fn close(&self) {
        if !self.closed.swap(true, Ordering::AcqRel) {
            let _ = self.jobs.send_async(Message::Stop).await;
        }
        if let Some(stopped) = self.stopped.lock().await.take() {
            let _ = stopped.await;
        }
    }
}

/// Runs one statement without parameters (transaction control), prepared once per connection.
fn execute(conn: &Connection, sql: &str) -> Result<(), rusqlite::Error> {
    conn.prepare_cached(sql)?.execute([]).map(|_| ())
}

/// The writer thread: takes batches of jobs until stopped or every handle is gone.
fn run(
    conn: &Connection,
    queue: &flume::Receiver<Message<WriteJob>>,
    outbox_commits: &watch::Sender<i64>,
    checkpoints: Option<&CommitSignal>,
) {
    let mut stopping = false;
    while !stopping {
        let first = match queue.recv() {
            Ok(Message::Job(job)) => job,
            Ok(Message::Stop) | Err(_) => return,
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(Message::Job(job)) => batch.push(job),
                Ok(Message::Stop) => {
                    stopping = true;
                    break;
                }
                Err(_) => break,
            }
        }
        commit_batch(conn, batch, outbox_commits);
        if let Some(checkpoints) = checkpoints {
            checkpoints.committed(conn);
        }
    }
}

/// Runs one attempt of `job`; a panic counts as a failure (its caller is told the write did
/// not complete), so one bad job cannot take the writer and every later write down with it.
fn attempt(conn: &Connection, job: &WriteJob) -> Attempt {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (job.run)(conn))).unwrap_or_else(
        |_| {
            tracing::error!("a database write panicked; it is rolled back");
            Attempt {
                succeeded: false,
                outbox_seq: None,
            }
        },
    )
}

/// Runs `batch` in one transaction and answers every job.
///
/// First every job runs straight through, without savepoints: the common case, and the cheap
/// one (a savepoint per job makes SQLite journal every page again and flush the full-text
/// index at every release). Only if a job fails is that transaction rolled back and the batch
/// run again with each job in its own `SAVEPOINT`, so a failing job is rolled back alone.
fn commit_batch(conn: &Connection, batch: Vec<WriteJob>, outbox_commits: &watch::Sender<i64>) {
    metrics::histogram!("sqlite_group_commit_size").record(batch.len() as f64);
    let started = Instant::now();
    let queue_wait = metrics::histogram!("sqlite_write_queue_seconds");
    for job in &batch {
        queue_wait.record(started.saturating_duration_since(job.queued_at));
    }
    let (committed, attempts) = match run_straight(conn, &batch) {
        Some(result) => result,
        None => {
            metrics::counter!("sqlite_group_commit_reruns_total").increment(1);
            run_isolated(conn, &batch)
        }
    };
    if committed.is_ok()
        && let Some(seq) = attempts
            .iter()
            .filter(|a| a.succeeded)
            .filter_map(|a| a.outbox_seq)
            .max()
    {
        crate::announce_outbox_commit(outbox_commits, seq);
    }
    metrics::histogram!("sqlite_group_commit_seconds").record(started.elapsed());
    for job in batch {
        (job.finish)(committed.clone());
    }
}

/// Every job in one transaction; `None` (rolled back) when a job failed and the batch holds
/// others that must not share its fate.
fn run_straight(
    conn: &Connection,
    batch: &[WriteJob],
) -> Option<(Result<(), String>, Vec<Attempt>)> {
    if let Err(error) = execute(conn, "BEGIN IMMEDIATE") {
        return Some((
            Err(format!("cannot begin a transaction: {error}")),
            Vec::new(),
        ));
    }
    let mut attempts = Vec::with_capacity(batch.len());
    for job in batch {
        let attempt = attempt(conn, job);
        if !attempt.succeeded {
            let _ = execute(conn, "ROLLBACK");
            if batch.len() == 1 {
                return Some((Err("the write failed".into()), vec![attempt]));
            }
            return None;
        }
        attempts.push(attempt);
    }
    Some((commit(conn), attempts))
}

/// Every job in its own savepoint of one transaction.
fn run_isolated(conn: &Connection, batch: &[WriteJob]) -> (Result<(), String>, Vec<Attempt>) {
    if let Err(error) = execute(conn, "BEGIN IMMEDIATE") {
        return (
            Err(format!("cannot begin a transaction: {error}")),
            Vec::new(),
        );
    }
    let mut attempts = Vec::with_capacity(batch.len());
    for job in batch {
        if let Err(error) = execute(conn, "SAVEPOINT job") {
            let _ = execute(conn, "ROLLBACK");
            return (Err(format!("savepoint failed: {error}")), attempts);
        }
        let attempt = attempt(conn, job);
        let end = if attempt.succeeded {
            execute(conn, "RELEASE job")
        } else {
            execute(conn, "ROLLBACK TO job").and_then(|()| execute(conn, "RELEASE job"))
        };
        attempts.push(attempt);
        if let Err(error) = end {
            let _ = execute(conn, "ROLLBACK");
            return (Err(format!("savepoint release failed: {error}")), attempts);
        }
    }
    (commit(conn), attempts)
}

/// Indexes the transaction's new tasks and commits it (rolling back if either fails).
///
/// Its time (indexing the batch's new tasks, writing the log, syncing it) is recorded in
/// `sqlite_commit_seconds`.
fn commit(conn: &Connection) -> Result<(), String> {
    let started = Instant::now();
    let committed = index_and_commit(conn);
    metrics::histogram!("sqlite_commit_seconds").record(started.elapsed());
    committed
}

/// [`commit`] without the timing.
fn index_and_commit(conn: &Connection) -> Result<(), String> {
    if let Err(error) = super::deferred_index::index_pending(conn) {
        let _ = execute(conn, "ROLLBACK");
        return Err(format!("indexing the new tasks failed: {error}"));
    }
    execute(conn, "COMMIT").map_err(|error| {
        let _ = execute(conn, "ROLLBACK");
        format!("commit failed: {error}")
    })
}

/// The file a `sqlite://` URL names (`sqlite::memory:` is refused: the store needs a file that
/// several connections share).
pub(crate) fn database_path(url: &str) -> Result<PathBuf, StoreError> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .ok_or_else(|| StoreError::Unavailable(format!("not a sqlite:// URL: {url}")))?;
    let path = rest.split('?').next().unwrap_or_default();
    if path.is_empty() || path == ":memory:" {
        return Err(StoreError::Unavailable(
            "the embedded store needs a database file, e.g. sqlite://./taskflow-data/taskflow.db"
                .into(),
        ));
    }
    Ok(Path::new(path).to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Durable commits, a short lock wait, no memory map.
    fn test_options(path: PathBuf) -> ConnectionOptions {
        ConnectionOptions {
            path,
            synchronous_full: true,
            busy_timeout: Duration::from_secs(1),
            mmap_bytes: 0,
        }
    }

    /// The test table's values, in order.
    async fn stored_values(writer: &Writer) -> Vec<i64> {
        writer
            .write(|conn| {
                let mut statement = conn.prepare("SELECT v FROM t ORDER BY v")?;
                let rows = statement
                    .query_map([], |r| r.get(0))?
                    .collect::<Result<Vec<i64>, _>>()?;
                Ok((rows, None))
            })
            .await
            .unwrap()
    }

    fn writer() -> (Writer, tempfile_dir::Dir) {
        let dir = tempfile_dir::Dir::new();
        let options = test_options(dir.path.join("test.db"));
        let conn = open(&options, true).unwrap();
        conn.execute_batch("CREATE TABLE t (v INTEGER)").unwrap();
        let writer = Writer::start(conn, Arc::new(watch::channel(0).0), None).unwrap();
        (writer, dir)
    }

    /// A temporary folder removed on drop (the store's tests need files, not `:memory:`).
    mod tempfile_dir {
        pub struct Dir {
            pub path: std::path::PathBuf,
        }
        impl Dir {
            pub fn new() -> Self {
                let path = std::env::temp_dir().join(format!(
                    "taskflow-writer-test-{}",
                    uuid::Uuid::now_v7().simple()
                ));
                std::fs::create_dir_all(&path).unwrap();
                Self { path }
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.path);
            }
        }
    }

    #[tokio::test]
    async fn a_panicking_write_fails_alone_and_the_writer_keeps_going() {
        let (writer, _dir) = writer();
        let panicking =
            writer.write(|_conn| -> Result<((), Option<i64>), StoreError> { panic!("boom") });
        assert!(matches!(panicking.await, Err(StoreError::Unavailable(_))));
        let count = writer
            .write(|conn| {
                conn.execute("INSERT INTO t (v) VALUES (1)", [])?;
                let n: i64 = conn.query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0))?;
                Ok((n, None))
            })
            .await
            .unwrap();
        assert_eq!(count, 1);
    }

    #[tokio::test]
    async fn concurrent_writes_share_commits_and_a_failing_one_is_isolated() {
        let (writer, _dir) = writer();
        let writes = (0..50).map(|i| {
            let writer = writer.clone();
            async move {
                writer
                    .write(move |conn| {
                        conn.execute("INSERT INTO t (v) VALUES (?)", [i])?;
                        if i == 7 {
                            return Err(StoreError::NotFound);
                        }
                        Ok(((), None))
                    })
                    .await
            }
        });
        let results = futures::future::join_all(writes).await;
        assert_eq!(results.iter().filter(|r| r.is_err()).count(), 1);
        let values = stored_values(&writer).await;
        assert_eq!(values.len(), 49);
        assert!(!values.contains(&7), "the failed write left nothing behind");
    }

    #[tokio::test]
    async fn a_failing_job_reruns_its_batch_with_savepoints_and_the_others_apply_once() {
        let (writer, _dir) = writer();
        // Hold the writer busy so the next three jobs queue up and share one batch.
        let blocker = writer.write(|_conn| {
            std::thread::sleep(Duration::from_millis(200));
            Ok(((), None))
        });
        let job = |v: i64, fail: bool| {
            let writer = writer.clone();
            async move {
                writer
                    .write(move |conn| {
                        conn.execute("INSERT INTO t (v) VALUES (?)", [v])?;
                        if fail {
                            return Err(StoreError::Conflict("test"));
                        }
                        Ok((v, Some(v)))
                    })
                    .await
            }
        };
        let (blocked, first, failing, last) =
            tokio::join!(blocker, job(1, false), job(2, true), job(3, false));
        blocked.unwrap();
        assert_eq!(first.unwrap(), 1);
        assert!(matches!(failing, Err(StoreError::Conflict("test"))));
        assert_eq!(last.unwrap(), 3);
        let values = stored_values(&writer).await;
        assert_eq!(
            values,
            vec![1, 3],
            "each successful job applied once, the failed one not at all"
        );
    }

    #[tokio::test]
    async fn closing_finishes_queued_writes_and_refuses_new_ones() {
        let (writer, _dir) = writer();
        let queued = writer.write(|conn| {
            conn.execute("INSERT INTO t (v) VALUES (1)", [])?;
            Ok(((), None))
        });
        queued.await.unwrap();
        writer.close().await;
        let refused = writer
            .write(|_conn| Ok(((), None)))
            .await
            .expect_err("closed");
        assert!(matches!(refused, StoreError::Unavailable(_)));
    }

    /// Writes `rows` rows of 4 KiB each through `writer`, 25 to a write.
    async fn write_pages(writer: &Writer, rows: i64) {
        for chunk in 0..rows / 25 {
            writer
                .write(move |conn| {
                    for v in chunk * 25..(chunk + 1) * 25 {
                        conn.execute("INSERT INTO t (v, pad) VALUES (?, zeroblob(4096))", [v])?;
                    }
                    Ok(((), None))
                })
                .await
                .unwrap();
        }
    }

    /// Size of the database file itself (not its write-ahead log).
    fn file_size(options: &ConnectionOptions) -> u64 {
        std::fs::metadata(&options.path).unwrap().len()
    }

    #[tokio::test]
    async fn the_checkpoint_thread_copies_commits_into_the_database_file_instead_of_the_writer() {
        let dir = tempfile_dir::Dir::new();
        let options = |name: &str| test_options(dir.path.join(name));
        let start = |options: &ConnectionOptions, checkpoints: bool| {
            let conn = open(options, true).unwrap();
            conn.execute_batch("CREATE TABLE t (v INTEGER, pad BLOB)")
                .unwrap();
            let signal = if checkpoints {
                Some(super::super::checkpoint::start(options, &conn).unwrap())
            } else {
                conn.execute_batch("PRAGMA wal_autocheckpoint = 0").unwrap();
                None
            };
            Writer::start(conn, Arc::new(watch::channel(0).0), signal).unwrap()
        };
        let (with, without) = (options("with.db"), options("without.db"));
        let (checkpointed, unchecked) = (start(&with, true), start(&without, false));

        let automatic: i64 = checkpointed
            .write(|conn| {
                Ok((
                    conn.query_row("PRAGMA wal_autocheckpoint", [], |r| r.get(0))?,
                    None,
                ))
            })
            .await
            .unwrap();
        assert_eq!(automatic, 0, "the writer's commits run no checkpoint");

        // 2 MiB of rows: more than SQLite's automatic threshold (1 000 pages of 4 KiB).
        write_pages(&checkpointed, 500).await;
        write_pages(&unchecked, 500).await;
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while file_size(&with) < 2_000_000 && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(
            file_size(&with) >= 2_000_000,
            "the rows reached the database file: {} bytes",
            file_size(&with)
        );
        assert!(
            file_size(&without) < 200_000,
            "without the thread (and automatic checkpoints off) they stay in the log: {} bytes",
            file_size(&without)
        );

        // Under sustained writes the log starts over instead of growing with all that was
        // written (200 MiB here; the writer completes a checkpoint from 16 000 frames, ~64 MiB).
        let log = with.path.with_extension("db-wal");
        let mut largest = 0;
        for _ in 0..100 {
            write_pages(&checkpointed, 500).await;
            largest = largest.max(std::fs::metadata(&log).unwrap().len());
        }
        assert!(
            largest < 112 << 20,
            "the log grew to {largest} bytes instead of starting over"
        );
        checkpointed.close().await;
        unchecked.close().await;
    }

    /// While slow reads hold every reader thread they may, a quick read still finds one.
    #[tokio::test]
    async fn quick_reads_never_wait_behind_slow_ones() {
        let dir = tempfile_dir::Dir::new();
        let options = test_options(dir.path.join("lanes.db"));
        drop(open(&options, true).unwrap());
        let readers = Readers::start(&options, 2).unwrap();
        let (release, gate) = flume::unbounded::<()>();
        let started = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let slow: Vec<_> = (0..2)
            .map(|_| {
                let (readers, gate, started) = (readers.clone(), gate.clone(), started.clone());
                tokio::spawn(async move {
                    readers
                        .read_slow(move |_| {
                            started.fetch_add(1, Ordering::SeqCst);
                            let _ = gate.recv();
                            Ok(())
                        })
                        .await
                })
            })
            .collect();
        while started.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let quick = tokio::time::timeout(
            Duration::from_secs(5),
            readers.read(|conn| Ok(conn.query_row("SELECT 1", [], |row| row.get::<_, i64>(0))?)),
        )
        .await
        .expect("a quick read waited behind slow ones");
        assert_eq!(quick.unwrap(), 1);
        assert_eq!(started.load(Ordering::SeqCst), 1, "one slow read at a time");
        for _ in 0..2 {
            release.send(()).unwrap();
        }
        for read in slow {
            read.await.unwrap().unwrap();
        }
        assert_eq!(started.load(Ordering::SeqCst), 2);
        readers.close();
    }

    /// Writer and readers read through the configured memory map; 0 turns it off.
    #[test]
    fn every_connection_maps_the_configured_bytes() {
        let dir = tempfile_dir::Dir::new();
        for mmap_bytes in [0, 64 << 20] {
            let options = ConnectionOptions {
                mmap_bytes,
                ..test_options(dir.path.join("map.db"))
            };
            for writer in [true, false] {
                let conn = open(&options, writer).unwrap();
                let mapped: u64 = conn
                    .query_row("PRAGMA mmap_size", [], |row| row.get(0))
                    .unwrap();
                assert_eq!(mapped, mmap_bytes, "writer: {writer}");
            }
        }
    }

    #[test]
    fn urls_name_files() {
        assert_eq!(
            database_path("sqlite://./data/t.db?mode=rwc").unwrap(),
            Path::new("./data/t.db")
        );
        assert_eq!(
            database_path("sqlite:///var/lib/t.db").unwrap(),
            Path::new("/var/lib/t.db")
        );
        assert!(database_path("sqlite::memory:").is_err());
        assert!(database_path("postgres://x").is_err());
    }
}
