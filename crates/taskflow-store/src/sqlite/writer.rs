//! Group commit: every write runs on the one writer connection, and writes that arrive while a
//! transaction is in progress share the next one.
//!
//! A durable SQLite commit costs an fsync (milliseconds on ordinary disks), so committing each
//! write on its own caps the store at a few hundred writes per second. Here each write is a job
//! sent to a single writer task, which takes every job waiting (up to [`MAX_BATCH`]), runs each
//! inside its own `SAVEPOINT` of one `BEGIN IMMEDIATE` transaction — a failing job is rolled
//! back to its savepoint and does not disturb the others — commits once, and only then answers
//! each caller. A caller is therefore acknowledged only after its write is durable, and a crash
//! before the commit loses only unacknowledged writes. Jobs run in arrival order, so each sees
//! the effects of the jobs before it exactly as if they had committed one by one.

use futures::FutureExt as _;
use futures::future::BoxFuture;
use sqlx::{SqliteConnection, SqlitePool};
use tokio::sync::{mpsc, oneshot, watch};

use crate::error::StoreError;

/// Most jobs sharing one transaction.
pub const MAX_BATCH: usize = 512;

/// What a job reports to the writer once it has run (before the commit).
pub(crate) struct JobOutcome {
    succeeded: bool,
    /// Newest outbox seq the job wrote, announced after the commit.
    outbox_seq: Option<i64>,
    /// Answers the caller with the commit's result.
    finish: Box<dyn FnOnce(Result<(), String>) + Send>,
}

type Job = Box<dyn for<'c> FnOnce(&'c mut SqliteConnection) -> BoxFuture<'c, JobOutcome> + Send>;

/// The handle write methods use; cheap to clone.
#[derive(Clone, Debug)]
pub(crate) struct Writer {
    jobs: mpsc::Sender<Job>,
}

impl Writer {
    /// Starts the writer task on `pool` (which must hold exactly one connection).
    pub(crate) fn start(
        pool: SqlitePool,
        outbox_commits: std::sync::Arc<watch::Sender<i64>>,
    ) -> Self {
        let (jobs, queue) = mpsc::channel::<Job>(4 * MAX_BATCH);
        tokio::spawn(run(pool, queue, outbox_commits));
        Self { jobs }
    }

    /// Runs `work` in the next group transaction. Its value is returned once the transaction
    /// committed; its error (after rolling back its own savepoint) right away. `work` returns
    /// the newest outbox seq it wrote, if any, to wake the relay after the commit.
    pub(crate) async fn write<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(
                &'c mut SqliteConnection,
            ) -> BoxFuture<'c, Result<(T, Option<i64>), StoreError>>
            + Send
            + 'static,
    {
        let (reply, answer) = oneshot::channel::<Result<T, StoreError>>();
        let job: Job = Box::new(move |conn| {
            Box::pin(async move {
                match work(conn).await {
                    Ok((value, outbox_seq)) => JobOutcome {
                        succeeded: true,
                        outbox_seq,
                        finish: Box::new(move |committed: Result<(), String>| {
                            let _ = reply
                                .send(committed.map(|()| value).map_err(StoreError::Unavailable));
                        }),
                    },
                    Err(error) => JobOutcome {
                        succeeded: false,
                        outbox_seq: None,
                        finish: Box::new(move |_| {
                            let _ = reply.send(Err(error));
                        }),
                    },
                }
            })
        });
        self.jobs
            .send(job)
            .await
            .map_err(|_| StoreError::Unavailable("the database writer has stopped".into()))?;
        answer.await.map_err(|_| {
            StoreError::Unavailable("the database writer stopped before committing".into())
        })?
    }
}

async fn execute(conn: &mut SqliteConnection, sql: &str) -> Result<(), sqlx::Error> {
    sqlx::query(sql).execute(&mut *conn).await.map(|_| ())
}

async fn run(
    pool: SqlitePool,
    mut queue: mpsc::Receiver<Job>,
    outbox_commits: std::sync::Arc<watch::Sender<i64>>,
) {
    while let Some(first) = queue.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        metrics::histogram!("sqlite_group_commit_size").record(batch.len() as f64);
        let mut conn = match pool.acquire().await {
            Ok(conn) => conn,
            Err(error) => {
                fail_all(batch, &format!("no database connection: {error}"));
                continue;
            }
        };
        if let Err(error) = execute(&mut conn, "BEGIN IMMEDIATE").await {
            fail_all(batch, &format!("cannot begin a transaction: {error}"));
            continue;
        }
        let mut outcomes = Vec::with_capacity(batch.len());
        let mut broken = None;
        // A lone job needs no savepoint: if it fails, the whole transaction is rolled back.
        let isolate = batch.len() > 1;
        for job in batch {
            if broken.is_some() {
                // The transaction is unusable: drop the job unrun; its caller gets an error.
                drop(job);
                continue;
            }
            if isolate && let Err(error) = execute(&mut conn, "SAVEPOINT job").await {
                broken = Some(format!("savepoint failed: {error}"));
                continue;
            }
            // A panicking job must not take the writer (and every later write) down with it:
            // treat it as failed; its caller sees its reply channel close.
            let outcome = match std::panic::AssertUnwindSafe(job(&mut conn))
                .catch_unwind()
                .await
            {
                Ok(outcome) => outcome,
                Err(_) => {
                    tracing::error!("a database write panicked; it is rolled back");
                    JobOutcome {
                        succeeded: false,
                        outbox_seq: None,
                        finish: Box::new(|_| {}),
                    }
                }
            };
            let end = match (isolate, outcome.succeeded) {
                (false, _) => Ok(()),
                (true, true) => execute(&mut conn, "RELEASE job").await,
                (true, false) => match execute(&mut conn, "ROLLBACK TO job").await {
                    Ok(()) => execute(&mut conn, "RELEASE job").await,
                    Err(error) => Err(error),
                },
            };
            if let Err(error) = end {
                broken = Some(format!("savepoint release failed: {error}"));
            }
            outcomes.push(outcome);
        }
        if !isolate && outcomes.iter().all(|o| !o.succeeded) {
            broken = Some("the write failed".into());
        }
        let committed = match broken {
            Some(reason) => {
                let _ = execute(&mut conn, "ROLLBACK").await;
                Err(reason)
            }
            None => match execute(&mut conn, "COMMIT").await {
                Ok(()) => Ok(()),
                Err(error) => {
                    let _ = execute(&mut conn, "ROLLBACK").await;
                    Err(format!("commit failed: {error}"))
                }
            },
        };
        drop(conn);
        if committed.is_ok()
            && let Some(seq) = outcomes
                .iter()
                .filter(|o| o.succeeded)
                .filter_map(|o| o.outbox_seq)
                .max()
        {
            crate::announce_outbox_commit(&outbox_commits, seq);
        }
        for outcome in outcomes {
            (outcome.finish)(committed.clone());
        }
    }
}

fn fail_all(batch: Vec<Job>, reason: &str) {
    tracing::error!(reason, jobs = batch.len(), "database writes failed");
    // Dropping a job drops its reply sender: the caller sees "stopped before committing".
    drop(batch);
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
    use std::str::FromStr as _;

    async fn writer() -> Writer {
        let options = SqliteConnectOptions::from_str("sqlite::memory:").unwrap();
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await
            .unwrap();
        sqlx::query("CREATE TABLE t (v INTEGER)")
            .execute(&pool)
            .await
            .unwrap();
        Writer::start(pool, std::sync::Arc::new(watch::channel(0).0))
    }

    #[tokio::test]
    async fn a_panicking_write_fails_alone_and_the_writer_keeps_going() {
        let writer = writer().await;
        let panicking = writer.write(
            |_conn| -> BoxFuture<'_, Result<((), Option<i64>), StoreError>> {
                Box::pin(async move { panic!("boom") })
            },
        );
        assert!(matches!(panicking.await, Err(StoreError::Unavailable(_))));
        let count = writer
            .write(|conn| {
                Box::pin(async move {
                    sqlx::query("INSERT INTO t (v) VALUES (1)")
                        .execute(&mut *conn)
                        .await?;
                    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM t")
                        .fetch_one(&mut *conn)
                        .await?;
                    Ok((n, None))
                })
            })
            .await
            .unwrap();
        assert_eq!(count, 1);
    }

    #[tokio::test]
    async fn concurrent_writes_share_commits_and_a_failing_one_is_isolated() {
        let writer = writer().await;
        let writes = (0..50).map(|i| {
            let writer = writer.clone();
            async move {
                writer
                    .write(move |conn| {
                        Box::pin(async move {
                            sqlx::query("INSERT INTO t (v) VALUES (?)")
                                .bind(i)
                                .execute(&mut *conn)
                                .await?;
                            if i == 7 {
                                return Err(StoreError::NotFound);
                            }
                            Ok(((), None))
                        })
                    })
                    .await
            }
        });
        let results = futures::future::join_all(writes).await;
        assert_eq!(results.iter().filter(|r| r.is_err()).count(), 1);
        let values: Vec<i64> = writer
            .write(|conn| {
                Box::pin(async move {
                    let rows: Vec<i64> = sqlx::query_scalar("SELECT v FROM t ORDER BY v")
                        .fetch_all(&mut *conn)
                        .await?;
                    Ok((rows, None))
                })
            })
            .await
            .unwrap();
        assert_eq!(values.len(), 49);
        assert!(!values.contains(&7), "the failed write left nothing behind");
    }
}
