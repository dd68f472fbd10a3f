//! The embedded default: one SQLite file in WAL mode.
//!
//! Writes go to one writer thread that group-commits them ([`connection`]): write
//! transactions queue in the application instead of failing with `SQLITE_BUSY`, and writes
//! that arrive together share one durable commit. Reads run on separate read-only connections
//! concurrently with the writer (WAL readers never block it). Commits use `synchronous=FULL` by
//! default, so an acknowledged write survives a crash of the process or the machine.
//!
//! Queries go through rusqlite with cached prepared statements; sqlx is used only to run the
//! versioned migrations (`migrations/sqlite/`), so databases keep sqlx's migration table.

mod calendar;
mod checkpoint;
mod connection;
mod deferred_index;
mod events;
mod notifications;
mod portability;
mod reminders;
mod rows;
mod tasks;

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension as _, params};
use sqlx::ConnectOptions as _;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode};
use taskflow_domain::{Email, TokenId, User, UserId};

use crate::error::StoreError;
use crate::{AccessToken, Store, TokenStore, UserStore};
use connection::{ConnectionOptions, Readers, Writer};
use rows::{micros, user_from_row};

pub use connection::MAX_BATCH;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// How to open the SQLite database.
#[derive(Clone, Debug)]
pub struct SqliteSettings {
    /// `sqlite://path/to/file.db` (the file and its folder are created when missing).
    pub url: String,
    /// Connections for reads.
    pub read_connections: u32,
    /// Wait at most this long for a lock another process holds.
    pub acquire_timeout: Duration,
    /// `FULL` (default: durable across power loss) or `NORMAL` (durable across process crashes only).
    pub synchronous_full: bool,
    /// Checkpoint the write-ahead log on a thread of its own (the default) rather than in the
    /// commit that filled it (SQLite's automatic checkpoints); see [`checkpoint`] for what was
    /// measured.
    pub background_checkpoints: bool,
    /// Bytes of the database file each connection reads through a memory map (0: none, every
    /// page is read with a system call). Address space, not memory: the mapped pages are the
    /// operating system's file cache, shared by all connections.
    pub mmap_bytes: u64,
}

/// [`SqliteSettings::mmap_bytes`] by default: 1 GiB.
pub const DEFAULT_MMAP_BYTES: u64 = 1 << 30;

impl SqliteSettings {
    /// Defaults for `url`.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            read_connections: 4,
            acquire_timeout: Duration::from_secs(10),
            synchronous_full: true,
            background_checkpoints: true,
            mmap_bytes: DEFAULT_MMAP_BYTES,
        }
    }
}

/// A [`Store`] on one SQLite file.
#[derive(Clone, Debug)]
pub struct SqliteStore {
    /// How each connection is opened (also for migrations and exports).
    options: ConnectionOptions,
    /// Read-only connections.
    readers: Readers,
    /// Group-committing access to the writer connection.
    writes: Writer,
    /// Newest committed outbox seq; wakes the relay and in-process consumers.
    outbox_commits: std::sync::Arc<tokio::sync::watch::Sender<i64>>,
    /// Earliest instant of newly scheduled reminders; wakes sleeping schedulers.
    reminder_changes: std::sync::Arc<tokio::sync::watch::Sender<Option<DateTime<Utc>>>>,
    /// Earliest instant of new or rescheduled deliveries; wakes sleeping notifiers.
    delivery_changes: std::sync::Arc<tokio::sync::watch::Sender<Option<DateTime<Utc>>>>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database. Does not migrate: call [`Store::migrate`].
    pub async fn connect(settings: &SqliteSettings) -> Result<Self, StoreError> {
        let path = connection::database_path(&settings.url)?;
        if let Some(parent) = path.parent()
            && !parent.as_os_str().is_empty()
        {
            std::fs::create_dir_all(parent).map_err(|e| {
                StoreError::Unavailable(format!("cannot create folder {}: {e}", parent.display()))
            })?;
        }
        let options = ConnectionOptions {
            path,
            synchronous_full: settings.synchronous_full,
            busy_timeout: settings.acquire_timeout,
            mmap_bytes: settings.mmap_bytes,
        };
        let (writer, readers, checkpoints) = {
            let options = options.clone();
            let read_connections = settings.read_connections as usize;
            let background_checkpoints = settings.background_checkpoints;
            tokio::task::spawn_blocking(move || {
                // The writer first: it creates the file and switches it to WAL, which the
                // read-only connections need.
                let writer = connection::open(&options, true)?;
                let readers = Readers::start(&options, read_connections)?;
                let checkpoints = background_checkpoints
                    .then(|| {
                        checkpoint::start(&options, &writer)
                            .inspect_err(|error| {
                                tracing::warn!(%error, "WAL checkpoints stay on the writer's commits");
                            })
                            .ok()
                    })
                    .flatten();
                Ok::<_, StoreError>((writer, readers, checkpoints))
            })
            .await
            .map_err(|e| StoreError::Unavailable(format!("opening the database failed: {e}")))??
        };
        let outbox_commits = std::sync::Arc::new(tokio::sync::watch::channel(0).0);
        Ok(Self {
            writes: Writer::start(writer, outbox_commits.clone(), checkpoints)?,
            readers,
            options,
            outbox_commits,
            reminder_changes: std::sync::Arc::new(tokio::sync::watch::channel(None).0),
            delivery_changes: std::sync::Arc::new(tokio::sync::watch::channel(None).0),
        })
    }

    /// Runs `work` on a read-only connection.
    async fn read<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        self.readers.read(work).await
    }

    /// [`Self::read`] for a read that may take long (a search ranking every match), which
    /// leaves at least one reader free for quick reads.
    async fn read_slow<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        self.readers.read_slow(work).await
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn migrate(&self) -> Result<(), StoreError> {
        let failed =
            |e: &dyn std::fmt::Display| StoreError::Unavailable(format!("migration failed: {e}"));
        let options =
            SqliteConnectOptions::from_str(&format!("sqlite://{}", self.options.path.display()))
                .map_err(|e| failed(&e))?
                .journal_mode(SqliteJournalMode::Wal)
                .busy_timeout(self.options.busy_timeout)
                .foreign_keys(true);
        let mut conn = options.connect().await.map_err(|e| failed(&e))?;
        let outcome = MIGRATOR.run_direct(&mut conn).await.map_err(|e| failed(&e));
        let _ = sqlx::Connection::close(conn).await;
        outcome
    }

    async fn readiness(&self) -> Result<(), StoreError> {
        let latest = MIGRATOR.iter().map(|m| m.version).max();
        let applied: Option<i64> = self
            .read(|conn| {
                conn.query_row(
                    "SELECT MAX(version) FROM _sqlx_migrations WHERE success = 1",
                    [],
                    |row| row.get(0),
                )
                .map_err(|e| StoreError::Unavailable(e.to_string()))
            })
            .await?;
        if applied != latest {
            return Err(StoreError::Unavailable(format!(
                "migrations not current: applied {applied:?}, expected {latest:?}; run `taskflow migrate`"
            )));
        }
        Ok(())
    }

    async fn close(&self) {
        self.writes.close().await;
        self.readers.close();
    }
}

#[async_trait]
impl UserStore for SqliteStore {
    async fn create_user(&self, user: &User, password_hash: &str) -> Result<(), StoreError> {
        let (user, hash) = (user.clone(), password_hash.to_owned());
        self.writes
            .write(move |conn| insert_user(conn, &user, &hash, None).map(|()| ((), None)))
            .await
    }

    async fn user_credentials(&self, email: &Email) -> Result<Option<(User, String)>, StoreError> {
        let email = email.as_str().to_owned();
        self.read(move |conn| {
            conn.prepare_cached("SELECT * FROM users WHERE email = ?")?
                .query_row([&email], |row| {
                    Ok(user_from_row(row).and_then(|user| Ok((user, row.get("password_hash")?))))
                })
                .optional()?
                .transpose()
        })
        .await
    }

    async fn user(&self, id: UserId) -> Result<Option<User>, StoreError> {
        self.read(move |conn| {
            conn.prepare_cached("SELECT * FROM users WHERE id = ?")?
                .query_row([id.to_string()], |row| Ok(user_from_row(row)))
                .optional()?
                .transpose()
        })
        .await
    }

    async fn user_by_external_subject(&self, subject: &str) -> Result<Option<User>, StoreError> {
        let subject = subject.to_owned();
        self.read(move |conn| {
            conn.prepare_cached("SELECT * FROM users WHERE external_subject = ?")?
                .query_row([&subject], |row| Ok(user_from_row(row)))
                .optional()?
                .transpose()
        })
        .await
    }

    async fn create_external_user(&self, user: &User, subject: &str) -> Result<(), StoreError> {
        let (user, subject) = (user.clone(), subject.to_owned());
        self.writes
            .write(move |conn| insert_user(conn, &user, "", Some(&subject)).map(|()| ((), None)))
            .await
    }

    async fn set_admin(&self, email: &Email, is_admin: bool) -> Result<User, StoreError> {
        let email = email.as_str().to_owned();
        self.writes
            .write(move |conn| {
                let user = conn
                    .prepare_cached("UPDATE users SET is_admin = ? WHERE email = ? RETURNING *")?
                    .query_row(params![is_admin, email], |row| Ok(user_from_row(row)))
                    .optional()?
                    .transpose()?;
                Ok((user, None))
            })
            .await?
            .ok_or(StoreError::NotFound)
    }
}

fn insert_user(
    conn: &Connection,
    user: &User,
    password_hash: &str,
    external_subject: Option<&str>,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO users (id, email, password_hash, display_name, time_zone, is_admin, external_subject, created_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
    )?
    .execute(params![
        user.id.to_string(),
        user.email.as_str(),
        password_hash,
        user.display_name.as_ref().map(|n| n.as_str()),
        user.time_zone.name(),
        user.is_admin,
        external_subject,
        micros(user.created_at),
    ])
    .map_err(|e| {
        unique_violation(
            e,
            &[
                ("users.email", "users_email"),
                ("users.external_subject", "users_external_subject"),
            ],
        )
    })?;
    Ok(())
}

/// Turns a SQLite unique-constraint failure into [`StoreError::Conflict`] naming the rule.
pub(super) fn unique_violation(
    error: rusqlite::Error,
    names: &[(&str, &'static str)],
) -> StoreError {
    if let rusqlite::Error::SqliteFailure(failure, message) = &error
        && matches!(
            failure.extended_code,
            rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE | rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
        )
    {
        let message = message.as_deref().unwrap_or_default();
        for (column, name) in names {
            if message.contains(column) {
                return StoreError::Conflict(name);
            }
        }
        return StoreError::Conflict("unique");
    }
    StoreError::from(error)
}

#[async_trait]
impl TokenStore for SqliteStore {
    async fn create_access_token(
        &self,
        token: &AccessToken,
        secret_hash: &[u8],
    ) -> Result<(), StoreError> {
        let (token, secret_hash) = (token.clone(), secret_hash.to_vec());
        self.writes
            .write(move |conn| {
                conn.prepare_cached(
                    "INSERT INTO access_tokens (id, user_id, name, token_hash, prefix, created_at, last_used_at, expires_at)
                     VALUES (?, ?, ?, ?, ?, ?, NULL, ?)",
                )?
                .execute(params![
                    token.id.to_string(),
                    token.user_id.to_string(),
                    token.name,
                    secret_hash,
                    token.prefix,
                    micros(token.created_at),
                    token.expires_at.map(micros),
                ])
                .map_err(|e| {
                    unique_violation(e, &[("access_tokens.token_hash", "access_tokens_hash")])
                })?;
                Ok(((), None))
            })
            .await
    }

    async fn access_tokens(&self, user: UserId) -> Result<Vec<AccessToken>, StoreError> {
        self.read(move |conn| {
            let mut statement = conn.prepare_cached(
                "SELECT * FROM access_tokens WHERE user_id = ? ORDER BY created_at DESC, id DESC",
            )?;
            let mut rows = statement.query([user.to_string()])?;
            let mut tokens = Vec::new();
            while let Some(row) = rows.next()? {
                tokens.push(rows::token_from_row(row)?);
            }
            Ok(tokens)
        })
        .await
    }

    async fn delete_access_token(&self, user: UserId, id: TokenId) -> Result<(), StoreError> {
        self.writes
            .write(move |conn| {
                let deleted = conn
                    .prepare_cached("DELETE FROM access_tokens WHERE id = ? AND user_id = ?")?
                    .execute([id.to_string(), user.to_string()])?;
                if deleted == 0 {
                    return Err(StoreError::NotFound);
                }
                Ok(((), None))
            })
            .await
    }

    async fn authenticate_access_token(
        &self,
        secret_hash: &[u8],
        now: DateTime<Utc>,
    ) -> Result<Option<User>, StoreError> {
        let hash = secret_hash.to_vec();
        let found = self
            .read(move |conn| {
                conn.prepare_cached(
                    "SELECT t.id AS token_id, t.last_used_at AS token_last_used, u.*
                     FROM access_tokens t JOIN users u ON u.id = t.user_id
                     WHERE t.token_hash = ? AND (t.expires_at IS NULL OR t.expires_at > ?)",
                )?
                .query_row(params![hash, micros(now)], |row| {
                    Ok((|| {
                        let user = user_from_row(row)?;
                        let last_used: Option<i64> = row.get("token_last_used")?;
                        let token_id: String = row.get("token_id")?;
                        Ok::<_, StoreError>((user, last_used, token_id))
                    })())
                })
                .optional()?
                .transpose()
            })
            .await?;
        let Some((user, last_used, token_id)) = found else {
            return Ok(None);
        };
        // Record use at most once a minute, so authenticating stays a read in the common case.
        if last_used.is_none_or(|last| micros(now) - last > 60_000_000) {
            self.writes
                .write(move |conn| {
                    conn.prepare_cached("UPDATE access_tokens SET last_used_at = ? WHERE id = ?")?
                        .execute(params![micros(now), token_id])?;
                    Ok(((), None))
                })
                .await?;
        }
        Ok(Some(user))
    }
}

/// `EXPLAIN QUERY PLAN` of `sql` with `values` bound, one detail per line, for the module's
/// tests of which index a statement walks.
#[cfg(test)]
pub(crate) async fn query_plan(
    store: &SqliteStore,
    sql: String,
    values: Vec<rusqlite::types::Value>,
) -> String {
    store
        .read(move |conn| {
            let mut statement = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}"))?;
            let details = statement
                .query_map(rusqlite::params_from_iter(values.iter()), |row| {
                    row.get::<_, String>(3)
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(details.join("\n"))
        })
        .await
        .expect("plan")
}

/// A migrated store in a directory of its own under the system's temporary directory, for
/// the module's tests; remove the directory when done.
#[cfg(test)]
pub(crate) async fn scratch_store(label: &str) -> (SqliteStore, std::path::PathBuf) {
    use crate::Store as _;
    let dir = std::env::temp_dir().join(format!(
        "taskflow-{label}-{}",
        uuid::Uuid::now_v7().simple()
    ));
    let store = SqliteStore::connect(&SqliteSettings::new(format!(
        "sqlite://{}",
        dir.join("test.db").display()
    )))
    .await
    .expect("open");
    store.migrate().await.expect("migrate");
    (store, dir)
}
