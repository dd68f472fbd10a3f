//! The embedded default: one SQLite file in WAL mode.
//!
//! Writes go through a pool of exactly one connection, so write transactions queue in the
//! application instead of failing with `SQLITE_BUSY`; reads use a separate pool and run
//! concurrently with the writer (WAL readers never block it). Commits use `synchronous=FULL`
//! by default, so an acknowledged write survives a crash of the process or the machine.

mod calendar;
mod events;
mod notifications;
mod portability;
mod reminders;
mod rows;
mod tasks;
mod writer;

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};
use taskflow_domain::{Email, TokenId, User, UserId};

use crate::error::StoreError;
use crate::{AccessToken, Store, TokenStore, UserStore};
use rows::{micros, user_from_row};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// How to open the SQLite database.
#[derive(Clone, Debug)]
pub struct SqliteSettings {
    /// `sqlite://path/to/file.db` (the file and its folder are created when missing).
    pub url: String,
    /// Connections for reads.
    pub read_connections: u32,
    /// Wait at most this long for a connection.
    pub acquire_timeout: Duration,
    /// `FULL` (default: durable across power loss) or `NORMAL` (durable across process crashes only).
    pub synchronous_full: bool,
}

impl SqliteSettings {
    /// Defaults for `url`.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            read_connections: 4,
            acquire_timeout: Duration::from_secs(10),
            synchronous_full: true,
        }
    }
}

/// A [`Store`] on one SQLite file.
#[derive(Clone, Debug)]
pub struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
    /// Group-committing access to the writer connection.
    writes: writer::Writer,
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
        let options = SqliteConnectOptions::from_str(&settings.url)
            .map_err(|e| StoreError::Unavailable(format!("bad SQLite URL: {e}")))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(if settings.synchronous_full {
                SqliteSynchronous::Full
            } else {
                SqliteSynchronous::Normal
            })
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(5))
            .pragma("temp_store", "memory")
            .pragma("cache_size", "-16000");
        if let Some(parent) = Path::new(options.get_filename()).parent()
            && !parent.as_os_str().is_empty()
        {
            std::fs::create_dir_all(parent).map_err(|e| {
                StoreError::Unavailable(format!("cannot create folder {}: {e}", parent.display()))
            })?;
        }
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(settings.acquire_timeout)
            .connect_with(options.clone())
            .await
            .map_err(StoreError::from_sqlx)?;
        let reader = SqlitePoolOptions::new()
            .max_connections(settings.read_connections.max(1))
            .acquire_timeout(settings.acquire_timeout)
            .connect_with(options.read_only(true))
            .await
            .map_err(StoreError::from_sqlx)?;
        let outbox_commits = std::sync::Arc::new(tokio::sync::watch::channel(0).0);
        Ok(Self {
            writes: writer::Writer::start(writer.clone(), outbox_commits.clone()),
            writer,
            reader,
            outbox_commits,
            reminder_changes: std::sync::Arc::new(tokio::sync::watch::channel(None).0),
            delivery_changes: std::sync::Arc::new(tokio::sync::watch::channel(None).0),
        })
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn migrate(&self) -> Result<(), StoreError> {
        MIGRATOR
            .run(&self.writer)
            .await
            .map_err(|e| StoreError::Unavailable(format!("migration failed: {e}")))
    }

    async fn readiness(&self) -> Result<(), StoreError> {
        let applied: Option<i64> =
            sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations WHERE success = 1")
                .fetch_one(&self.reader)
                .await
                .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        let latest = MIGRATOR.iter().map(|m| m.version).max();
        if applied != latest {
            return Err(StoreError::Unavailable(format!(
                "migrations not current: applied {applied:?}, expected {latest:?}; run `taskflow migrate`"
            )));
        }
        Ok(())
    }

    async fn close(&self) {
        self.writer.close().await;
        self.reader.close().await;
    }
}

#[async_trait]
impl UserStore for SqliteStore {
    async fn create_user(&self, user: &User, password_hash: &str) -> Result<(), StoreError> {
        let (user, hash) = (user.clone(), password_hash.to_owned());
        self.writes
            .write(move |conn| {
                Box::pin(async move {
                    insert_user(conn, &user, &hash, None)
                        .await
                        .map(|()| ((), None))
                })
            })
            .await
    }

    async fn user_credentials(&self, email: &Email) -> Result<Option<(User, String)>, StoreError> {
        let row = sqlx::query("SELECT * FROM users WHERE email = ?")
            .bind(email.as_str())
            .fetch_optional(&self.reader)
            .await
            .map_err(StoreError::from_sqlx)?;
        row.map(|row| {
            let hash: String = row.try_get("password_hash")?;
            Ok((user_from_row(&row)?, hash))
        })
        .transpose()
    }

    async fn user(&self, id: UserId) -> Result<Option<User>, StoreError> {
        let row = sqlx::query("SELECT * FROM users WHERE id = ?")
            .bind(id.to_string())
            .fetch_optional(&self.reader)
            .await
            .map_err(StoreError::from_sqlx)?;
        row.as_ref().map(user_from_row).transpose()
    }

    async fn user_by_external_subject(&self, subject: &str) -> Result<Option<User>, StoreError> {
        let row = sqlx::query("SELECT * FROM users WHERE external_subject = ?")
            .bind(subject)
            .fetch_optional(&self.reader)
            .await
            .map_err(StoreError::from_sqlx)?;
        row.as_ref().map(user_from_row).transpose()
    }

    async fn create_external_user(&self, user: &User, subject: &str) -> Result<(), StoreError> {
        let (user, subject) = (user.clone(), subject.to_owned());
        self.writes
            .write(move |conn| {
                Box::pin(async move {
                    insert_user(conn, &user, "", Some(&subject))
                        .await
                        .map(|()| ((), None))
                })
            })
            .await
    }

    async fn set_admin(&self, email: &Email, is_admin: bool) -> Result<User, StoreError> {
        let email = email.as_str().to_owned();
        let row = self
            .writes
            .write(move |conn| {
                Box::pin(async move {
                    let row =
                        sqlx::query("UPDATE users SET is_admin = ? WHERE email = ? RETURNING *")
                            .bind(is_admin)
                            .bind(&email)
                            .fetch_optional(&mut *conn)
                            .await
                            .map_err(StoreError::from_sqlx)?;
                    Ok((row, None))
                })
            })
            .await?;
        row.as_ref()
            .map(user_from_row)
            .transpose()?
            .ok_or(StoreError::NotFound)
    }
}

async fn insert_user(
    conn: &mut sqlx::SqliteConnection,
    user: &User,
    password_hash: &str,
    external_subject: Option<&str>,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO users (id, email, password_hash, display_name, time_zone, is_admin, external_subject, created_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(user.id.to_string())
    .bind(user.email.as_str())
    .bind(password_hash)
    .bind(user.display_name.as_ref().map(|n| n.as_str()))
    .bind(user.time_zone.name())
    .bind(user.is_admin)
    .bind(external_subject)
    .bind(micros(user.created_at))
    .execute(&mut *conn)
    .await
    .map_err(|e| unique_violation(e, &[("users.email", "users_email"), ("users.external_subject", "users_external_subject")]))?;
    Ok(())
}

/// Turns a SQLite unique-constraint failure into [`StoreError::Conflict`] naming the rule.
pub(super) fn unique_violation(error: sqlx::Error, names: &[(&str, &'static str)]) -> StoreError {
    if let sqlx::Error::Database(db) = &error
        && db.is_unique_violation()
    {
        let message = db.message();
        for (column, name) in names {
            if message.contains(column) {
                return StoreError::Conflict(name);
            }
        }
        return StoreError::Conflict("unique");
    }
    StoreError::from_sqlx(error)
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
                Box::pin(async move {
                    sqlx::query(
                        "INSERT INTO access_tokens (id, user_id, name, token_hash, prefix, created_at, last_used_at, expires_at)
                         VALUES (?, ?, ?, ?, ?, ?, NULL, ?)",
                    )
                    .bind(token.id.to_string())
                    .bind(token.user_id.to_string())
                    .bind(&token.name)
                    .bind(&secret_hash)
                    .bind(&token.prefix)
                    .bind(micros(token.created_at))
                    .bind(token.expires_at.map(micros))
                    .execute(&mut *conn)
                    .await
                    .map_err(|e| unique_violation(e, &[("access_tokens.token_hash", "access_tokens_hash")]))?;
                    Ok(((), None))
                })
            })
            .await
    }

    async fn access_tokens(&self, user: UserId) -> Result<Vec<AccessToken>, StoreError> {
        let rows = sqlx::query(
            "SELECT * FROM access_tokens WHERE user_id = ? ORDER BY created_at DESC, id DESC",
        )
        .bind(user.to_string())
        .fetch_all(&self.reader)
        .await
        .map_err(StoreError::from_sqlx)?;
        rows.iter().map(rows::token_from_row).collect()
    }

    async fn delete_access_token(&self, user: UserId, id: TokenId) -> Result<(), StoreError> {
        let result = self
            .writes
            .write(move |conn| {
                Box::pin(async move {
                    let done =
                        sqlx::query("DELETE FROM access_tokens WHERE id = ? AND user_id = ?")
                            .bind(id.to_string())
                            .bind(user.to_string())
                            .execute(&mut *conn)
                            .await
                            .map_err(StoreError::from_sqlx)?;
                    Ok((done, None))
                })
            })
            .await?;
        if result.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    async fn authenticate_access_token(
        &self,
        secret_hash: &[u8],
        now: DateTime<Utc>,
    ) -> Result<Option<User>, StoreError> {
        let row = sqlx::query(
            "SELECT t.id AS token_id, t.last_used_at AS token_last_used, u.*
             FROM access_tokens t JOIN users u ON u.id = t.user_id
             WHERE t.token_hash = ? AND (t.expires_at IS NULL OR t.expires_at > ?)",
        )
        .bind(secret_hash)
        .bind(micros(now))
        .fetch_optional(&self.reader)
        .await
        .map_err(StoreError::from_sqlx)?;
        let Some(row) = row else { return Ok(None) };
        let user = user_from_row(&row)?;
        // Record use at most once a minute, so authenticating stays a read in the common case.
        let last_used: Option<i64> = row.try_get("token_last_used")?;
        if last_used.is_none_or(|last| micros(now) - last > 60_000_000) {
            let token_id: String = row.try_get("token_id")?;
            self.writes
                .write(move |conn| {
                    Box::pin(async move {
                        sqlx::query("UPDATE access_tokens SET last_used_at = ? WHERE id = ?")
                            .bind(micros(now))
                            .bind(token_id)
                            .execute(&mut *conn)
                            .await
                            .map_err(StoreError::from_sqlx)?;
                        Ok(((), None))
                    })
                })
                .await?;
        }
        Ok(Some(user))
    }
}
