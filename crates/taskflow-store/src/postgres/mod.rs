//! A shared PostgreSQL server: for several application processes, or data that outgrows one file.
//!
//! Behaves exactly like the [`sqlite`](crate::sqlite) backend (both pass the
//! [`conformance`](crate::conformance) story); the differences are in how it gets there:
//!
//! - **Concurrency.** Writes are ordinary transactions on a connection pool. Version checks lock
//!   the row (`SELECT … FOR UPDATE`), so concurrent updates with the same expected version
//!   serialise and all but one see [`StoreError::VersionMismatch`]; next occurrences are inserted
//!   with `ON CONFLICT (series_id, occurrence_index) DO NOTHING`, so concurrent completions create
//!   one.
//! - **Outbox order.** An identity column hands out `seq` in *allocation* order, which is not
//!   commit order under concurrency; a reader following the outbox by position could see seq 11
//!   before seq 10 commits and skip it forever. Every transaction writes its events last and,
//!   just before its first outbox row, takes transaction-scoped advisory locks held until it
//!   commits, as [`PostgresSettings::outbox_order`] says:
//!   - [`OutboxOrder::Global`] (the default): one lock ([`OUTBOX_LOCK`]) for everybody, so
//!     `seq` order is commit order. Needed while anything follows the outbox by `seq` — the
//!     in-process bus does. Event-writing commits are serialised from the outbox insert on,
//!     WAL flush included: about a millisecond each, whatever the number of cores.
//!   - [`OutboxOrder::PerKey`]: one lock per partition key (user), so `seq` order is commit
//!     order *per key* and writers of different users commit side by side (with group commit).
//!     Enough for the relay, which publishes every unpublished row in `seq` order: rows of one
//!     key appear in order, a row of another key that commits late is published when it
//!     appears. Use it with an external broker (NATS, Kafka, Dapr), where the relay is the
//!     outbox's only reader. Writers also take [`OUTBOX_LOCK`] shared, so whoever holds it
//!     exclusively still pauses every outbox writer.
//! - **Search.** A stored `tsvector` column (title A, tags B, description C; `simple`
//!   configuration; accents removed with `unaccent` when the extension can be created, else a
//!   built-in table of Latin diacritics) with a GIN index. Terms are prefix-matched (`term:*`,
//!   all must match) and ranked with `ts_rank_cd`; the listing's score is the *negated* rank so
//!   that, as with SQLite's BM25, lower is better and ascending relevance means best first.
//! - **One relay at a time.** The outbox relay leader holds a session advisory lock
//!   ([`RELAY_LOCK`]) on a dedicated connection; standbys try to take it, each on a connection
//!   it keeps for that, and stay idle while they cannot. The lock is released with the leader's session (process death, broken
//!   connection, or a leader that stopped checking for longer than it asked: the server ends
//!   the idle session), so a standby takes over at its next attempt.
//! - **One outbox order per database.** With [`PostgresSettings::claim_outbox_order`] a
//!   process claims its order for as long as it runs and refuses to start next to processes
//!   of the other order (session advisory locks [`GLOBAL_ORDER_LOCK`] and
//!   [`PER_KEY_ORDER_LOCK`], checked under [`CLAIM_CHECK_LOCK`]): one per-key writer beside
//!   an in-process bus could make it skip events.
//! - **Migrations** run under a session advisory lock ([`MIGRATION_LOCK`]) on a dedicated
//!   connection, so several processes may call [`Store::migrate`] at once.
//!
//! `outbox_commits` announces only this process's commits; rows written by other processes are
//! found by the relay's and in-process consumers' polling.

mod calendar;
mod consumed;
mod events;
mod notifications;
mod order_claim;
mod portability;
mod reminders;
mod rows;
mod tasks;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, TimeDelta, Utc};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgConnection, PgPool, Row};
use taskflow_domain::{Email, TokenId, User, UserId};

use crate::error::StoreError;
use crate::{AccessToken, Store, TokenStore, UserStore};
use rows::user_from_row;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// Session advisory lock key held while migrating (`'tfmigrat'` as ASCII). sqlx's migrator
/// also takes its own per-database advisory lock, but releases it only on success (a failed
/// migration leaves it held by a pooled connection); this lock is held on a dedicated
/// connection that is closed afterwards whatever happened.
pub const MIGRATION_LOCK: i64 = 0x7466_6d69_6772_6174;

/// Transaction advisory lock key that orders outbox writers (`'tfoutbox'` as ASCII).
pub const OUTBOX_LOCK: i64 = 0x7466_6f75_7462_6f78;

/// First key of the two-key advisory locks [`OutboxOrder::PerKey`] takes per partition key
/// (`'tfok'` as ASCII); the second is the key's `hashtext`.
pub const OUTBOX_KEY_LOCK_SPACE: i32 = 0x7466_6f6b;

/// How outbox writers are ordered; see the module documentation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OutboxOrder {
    /// `seq` order is commit order: one lock serialises every event-writing commit.
    #[default]
    Global,
    /// `seq` order is commit order per partition key; different keys commit concurrently.
    PerKey,
}

/// Session advisory lock key held by the outbox relay leader (`'tfrelayl'` as ASCII), on a
/// connection of its own outside the pool (see [`crate::OutboxStore::lead_outbox_relay`]).
pub const RELAY_LOCK: i64 = 0x7466_7265_6c61_796c;

/// How to reach the PostgreSQL server.
#[derive(Clone, Debug)]
pub struct PostgresSettings {
    /// `postgres://user:password@host:port/database?sslmode=…`.
    pub url: String,
    /// Most connections the pool opens.
    pub max_connections: u32,
    /// Connections kept open even when idle.
    pub min_connections: u32,
    /// Wait at most this long for a pooled connection.
    pub acquire_timeout: Duration,
    /// Longest a statement may run before the server cancels it (`statement_timeout`,
    /// set for every connection; migrations lift it on their own connection).
    pub statement_timeout: Duration,
    /// Idle connections above `min_connections` are closed after this long.
    pub idle_timeout: Duration,
    /// How outbox writers are ordered: [`OutboxOrder::Global`] whenever something follows the
    /// outbox by position (the in-process bus), else [`OutboxOrder::PerKey`] may be used.
    pub outbox_order: OutboxOrder,
    /// Claim `outbox_order` for this process's lifetime, refusing to connect while a process
    /// of the other order holds its claim; for processes that write events (see the module
    /// documentation). Off by default: migrations, exports and other tools write no events.
    pub claim_outbox_order: bool,
}

impl PostgresSettings {
    /// Defaults for `url`: 10 connections at most, none kept idle, 10 s to get one, statements
    /// cancelled after 30 s, idle connections closed after 10 minutes.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            max_connections: 10,
            min_connections: 0,
            acquire_timeout: Duration::from_secs(10),
            statement_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(600),
            outbox_order: OutboxOrder::Global,
            claim_outbox_order: false,
        }
    }
}

pub use events::audit_page_statement;
pub use order_claim::{CLAIM_CHECK_LOCK, GLOBAL_ORDER_LOCK, PER_KEY_ORDER_LOCK};

/// The connection on which this process leads the outbox relay (holding [`RELAY_LOCK`]) or,
/// as a standby, asks for the lead again at each attempt instead of connecting anew.
#[derive(Debug)]
struct RelaySession {
    conn: PgConnection,
    leading: bool,
}

/// A [`Store`] on a PostgreSQL database.
#[derive(Clone, Debug)]
pub struct PostgresStore {
    pool: PgPool,
    /// Newest outbox seq this process committed; wakes the relay and in-process consumers.
    outbox_commits: Arc<tokio::sync::watch::Sender<i64>>,
    /// Earliest instant of reminders this process newly scheduled; wakes its schedulers.
    reminder_changes: Arc<tokio::sync::watch::Sender<Option<DateTime<Utc>>>>,
    /// Earliest instant of deliveries this process created or rescheduled; wakes its notifiers.
    delivery_changes: Arc<tokio::sync::watch::Sender<Option<DateTime<Utc>>>>,
    /// How the pool connects; the relay leader opens its own connection with it.
    connect_options: PgConnectOptions,
    /// The connection holding [`RELAY_LOCK`] while this process leads the outbox relay.
    relay_leader: Arc<tokio::sync::Mutex<Option<RelaySession>>>,
    /// How outbox writers are ordered.
    outbox_order: OutboxOrder,
    /// The connection holding this process's claim on `outbox_order`, when it claims one.
    order_claim: Option<Arc<tokio::sync::Mutex<Option<PgConnection>>>>,
    /// Queue of consumer records applied together (see [`consumed`]).
    consumed: tokio::sync::mpsc::UnboundedSender<consumed::Request>,
    /// Searches running or waiting for a connection: at most every pooled connection but one,
    /// so quick queries (and the relay and consumers) never wait for a connection behind
    /// searches that rank thousands of matches.
    searches: Arc<tokio::sync::Semaphore>,
}

impl PostgresStore {
    /// Opens a pool on the database (and checks one connection). Does not migrate: call
    /// [`Store::migrate`]. [`StoreError::Unavailable`] when the server cannot be reached.
    pub async fn connect(settings: &PostgresSettings) -> Result<Self, StoreError> {
        let timeout_ms = settings.statement_timeout.as_millis().max(1).to_string();
        let options = PgConnectOptions::from_str(&settings.url)
            .map_err(|e| StoreError::Unavailable(format!("bad PostgreSQL URL: {e}")))?
            .application_name("taskflow")
            .options([("statement_timeout", timeout_ms.as_str())]);
        let pool = PgPoolOptions::new()
            .max_connections(settings.max_connections.max(1))
            .min_connections(settings.min_connections)
            .acquire_timeout(settings.acquire_timeout)
            .idle_timeout(Some(settings.idle_timeout))
            .connect_with(options.clone())
            .await
            .map_err(|e| StoreError::Unavailable(format!("cannot connect to PostgreSQL: {e}")))?;
        let order_claim = if settings.claim_outbox_order {
            let claim = order_claim::claim(&options, settings.outbox_order).await;
            if claim.is_err() {
                pool.close().await;
            }
            Some(Arc::new(tokio::sync::Mutex::new(Some(claim?))))
        } else {
            None
        };
        Ok(Self {
            order_claim,
            outbox_commits: Arc::new(tokio::sync::watch::channel(0).0),
            reminder_changes: Arc::new(tokio::sync::watch::channel(None).0),
            delivery_changes: Arc::new(tokio::sync::watch::channel(None).0),
            connect_options: options,
            relay_leader: Arc::new(tokio::sync::Mutex::new(None)),
            outbox_order: settings.outbox_order,
            consumed: consumed::start(pool.clone()),
            searches: Arc::new(tokio::sync::Semaphore::new(
                (settings.max_connections.max(1) as usize - 1).max(1),
            )),
            pool,
        })
    }

    /// Tells listeners that this process committed outbox rows up to `seq`.
    fn announce(&self, seq: Option<i64>) {
        if let Some(seq) = seq {
            crate::announce_outbox_commit(&self.outbox_commits, seq);
        }
    }

    async fn begin(&self) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, StoreError> {
        self.pool.begin().await.map_err(pg_error)
    }
}

/// Adds one bound parameter to `arguments` (encoding a value of these types cannot fail in
/// practice; if it does, the write is refused rather than sent).
pub(super) fn add_argument<'q, T>(
    arguments: &mut sqlx::postgres::PgArguments,
    value: T,
) -> Result<(), StoreError>
where
    T: 'q + sqlx::Encode<'q, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
{
    use sqlx::Arguments as _;
    arguments
        .add(value)
        .map_err(|e| StoreError::Corrupt(format!("cannot encode a parameter: {e}")))
}

/// Maps a driver error: connection trouble to [`StoreError::Unavailable`], unique violations
/// to [`StoreError::Conflict`] named like the SQLite backend's, the rest to
/// [`StoreError::Database`].
pub(crate) fn pg_error(error: sqlx::Error) -> StoreError {
    if let sqlx::Error::Database(db) = &error {
        let code = db.code().unwrap_or_default();
        if db.is_unique_violation() {
            return match db.constraint() {
                Some("users_email") => StoreError::Conflict("users_email"),
                Some("users_external_subject") => StoreError::Conflict("users_external_subject"),
                Some("access_tokens_hash") => StoreError::Conflict("access_tokens_hash"),
                Some("calendar_feeds_hash") => StoreError::Conflict("calendar_feeds_hash"),
                Some("tasks_id") => StoreError::Conflict("tasks_id"),
                Some("tasks_series_occurrence") => StoreError::Conflict("tasks_series_occurrence"),
                Some("users_pkey" | "access_tokens_pkey") => StoreError::Conflict("unique"),
                _ => StoreError::Database(error),
            };
        }
        // Class 08: connection exception; 57P01-57P03: shutdown / cannot connect now;
        // 53300: too many connections.
        if code.starts_with("08") || matches!(&*code, "57P01" | "57P02" | "57P03" | "53300") {
            return StoreError::Unavailable(error.to_string());
        }
        return StoreError::Database(error);
    }
    match error {
        sqlx::Error::Tls(_) | sqlx::Error::WorkerCrashed => {
            StoreError::Unavailable(error.to_string())
        }
        other => StoreError::from_sqlx(other),
    }
}

/// Earliest and latest instants both chrono and PostgreSQL can hold: keys of hand-made cursors
/// are clamped into this range instead of failing the query.
fn clamp_micros(micros: i64) -> DateTime<Utc> {
    // PostgreSQL: 4713-11-24 BC; chrono: +262142 AD.
    const MIN: i64 = -210_866_803_200_000_000;
    let clamped = micros.max(MIN);
    DateTime::from_timestamp_micros(clamped).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// Drops sub-microsecond precision the way the SQLite backend does (floor to microseconds),
/// so both backends return identical instants.
pub(crate) fn at_micros(instant: DateTime<Utc>) -> DateTime<Utc> {
    let sub = instant.timestamp_subsec_nanos() % 1_000;
    instant - TimeDelta::nanoseconds(i64::from(sub))
}

#[async_trait]
impl Store for PostgresStore {
    async fn migrate(&self) -> Result<(), StoreError> {
        let failed =
            |e: &dyn std::fmt::Display| StoreError::Unavailable(format!("migration failed: {e}"));
        let mut conn = self.pool.acquire().await.map_err(pg_error)?;
        // Never leave this connection (and any session lock on it) in the pool.
        conn.close_on_drop();
        let outcome = migrate_locked(&mut conn).await.map_err(|e| failed(&e));
        // Closing ends the session, which releases every session lock it still holds.
        let _ = conn.close().await;
        outcome
    }

    async fn readiness(&self) -> Result<(), StoreError> {
        if let Some(claim) = &self.order_claim {
            // A claim dies with its session (a server restart, a broken connection): take it
            // again, or report why not.
            let mut held = claim.lock().await;
            let alive = match held.as_mut() {
                Some(conn) => order_claim::holds(conn).await,
                None => false,
            };
            if !alive {
                *held = None;
                *held = Some(order_claim::claim(&self.connect_options, self.outbox_order).await?);
                tracing::info!("outbox order claimed again after its connection was lost");
            }
        }
        let applied: Option<i64> =
            sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations WHERE success")
                .fetch_one(&self.pool)
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
        if let Some(claim) = &self.order_claim
            && let Some(conn) = claim.lock().await.take()
        {
            let _ = sqlx::Connection::close(conn).await;
        }
        self.searches.close();
        self.pool.close().await;
    }
}

/// Runs the migrator on `conn` while holding [`MIGRATION_LOCK`], with no statement timeout (an
/// index build or waiting for another process's migration may take longer than a request).
async fn migrate_locked(conn: &mut PgConnection) -> Result<(), String> {
    sqlx::query("SET statement_timeout = 0")
        .execute(&mut *conn)
        .await
        .map_err(|e| e.to_string())?;
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(MIGRATION_LOCK)
        .execute(&mut *conn)
        .await
        .map_err(|e| e.to_string())?;
    // `run_direct` is what `run` calls after acquiring; calling it on the connection avoids the
    // "`Acquire` is not general enough" error `run(&mut conn)` gives inside `async_trait`.
    let outcome = MIGRATOR
        .run_direct(&mut *conn)
        .await
        .map_err(|e| e.to_string());
    let unlocked = sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(MIGRATION_LOCK)
        .execute(&mut *conn)
        .await;
    outcome?;
    unlocked.map(|_| ()).map_err(|e| e.to_string())
}

#[async_trait]
impl UserStore for PostgresStore {
    async fn create_user(&self, user: &User, password_hash: &str) -> Result<(), StoreError> {
        insert_user(&self.pool, user, password_hash, None).await
    }

    async fn user_credentials(&self, email: &Email) -> Result<Option<(User, String)>, StoreError> {
        let row = sqlx::query("SELECT * FROM users WHERE email = $1")
            .bind(email.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(pg_error)?;
        row.map(|row| {
            let hash: String = row.try_get("password_hash")?;
            Ok((user_from_row(&row)?, hash))
        })
        .transpose()
    }

    async fn user(&self, id: UserId) -> Result<Option<User>, StoreError> {
        let row = sqlx::query("SELECT * FROM users WHERE id = $1")
            .bind(id.as_uuid())
            .fetch_optional(&self.pool)
            .await
            .map_err(pg_error)?;
        row.as_ref().map(user_from_row).transpose()
    }

    async fn user_by_external_subject(&self, subject: &str) -> Result<Option<User>, StoreError> {
        let row = sqlx::query("SELECT * FROM users WHERE external_subject = $1")
            .bind(subject)
            .fetch_optional(&self.pool)
            .await
            .map_err(pg_error)?;
        row.as_ref().map(user_from_row).transpose()
    }

    async fn create_external_user(&self, user: &User, subject: &str) -> Result<(), StoreError> {
        insert_user(&self.pool, user, "", Some(subject)).await
    }

    async fn set_admin(&self, email: &Email, is_admin: bool) -> Result<User, StoreError> {
        let row = sqlx::query("UPDATE users SET is_admin = $1 WHERE email = $2 RETURNING *")
            .bind(is_admin)
            .bind(email.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(pg_error)?;
        row.as_ref()
            .map(user_from_row)
            .transpose()?
            .ok_or(StoreError::NotFound)
    }
}

async fn insert_user(
    pool: &PgPool,
    user: &User,
    password_hash: &str,
    external_subject: Option<&str>,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO users (id, email, password_hash, display_name, time_zone, is_admin, external_subject, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(user.id.as_uuid())
    .bind(user.email.as_str())
    .bind(password_hash)
    .bind(user.display_name.as_ref().map(|n| n.as_str()))
    .bind(user.time_zone.name())
    .bind(user.is_admin)
    .bind(external_subject)
    .bind(at_micros(user.created_at))
    .execute(pool)
    .await
    .map_err(pg_error)?;
    Ok(())
}

#[async_trait]
impl TokenStore for PostgresStore {
    async fn create_access_token(
        &self,
        token: &AccessToken,
        secret_hash: &[u8],
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO access_tokens (id, user_id, name, token_hash, prefix, created_at, last_used_at, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6, NULL, $7)",
        )
        .bind(token.id.as_uuid())
        .bind(token.user_id.as_uuid())
        .bind(&token.name)
        .bind(secret_hash)
        .bind(&token.prefix)
        .bind(at_micros(token.created_at))
        .bind(token.expires_at.map(at_micros))
        .execute(&self.pool)
        .await
        .map_err(pg_error)?;
        Ok(())
    }

    async fn access_tokens(&self, user: UserId) -> Result<Vec<AccessToken>, StoreError> {
        let rows = sqlx::query(
            "SELECT * FROM access_tokens WHERE user_id = $1 ORDER BY created_at DESC, id DESC",
        )
        .bind(user.as_uuid())
        .fetch_all(&self.pool)
        .await
        .map_err(pg_error)?;
        rows.iter().map(rows::token_from_row).collect()
    }

    async fn delete_access_token(&self, user: UserId, id: TokenId) -> Result<(), StoreError> {
        let done = sqlx::query("DELETE FROM access_tokens WHERE id = $1 AND user_id = $2")
            .bind(id.as_uuid())
            .bind(user.as_uuid())
            .execute(&self.pool)
            .await
            .map_err(pg_error)?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    async fn authenticate_access_token(
        &self,
        secret_hash: &[u8],
        now: DateTime<Utc>,
    ) -> Result<Option<User>, StoreError> {
        let now = at_micros(now);
        let row = sqlx::query(
            "SELECT t.id AS token_id, t.last_used_at AS token_last_used, u.*
             FROM access_tokens t JOIN users u ON u.id = t.user_id
             WHERE t.token_hash = $1 AND (t.expires_at IS NULL OR t.expires_at > $2)",
        )
        .bind(secret_hash)
        .bind(now)
        .fetch_optional(&self.pool)
        .await
        .map_err(pg_error)?;
        let Some(row) = row else { return Ok(None) };
        let user = user_from_row(&row)?;
        // Record use at most once a minute, so authenticating stays a read in the common case.
        let last_used: Option<DateTime<Utc>> = row.try_get("token_last_used")?;
        if last_used.is_none_or(|last| now - last > TimeDelta::minutes(1)) {
            let token_id: uuid::Uuid = row.try_get("token_id")?;
            sqlx::query("UPDATE access_tokens SET last_used_at = $1 WHERE id = $2")
                .bind(now)
                .bind(token_id)
                .execute(&self.pool)
                .await
                .map_err(pg_error)?;
        }
        Ok(Some(user))
    }
}
