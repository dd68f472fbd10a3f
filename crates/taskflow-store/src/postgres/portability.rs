//! Whole-database export and import on PostgreSQL.
//!
//! The export reads one `REPEATABLE READ, READ ONLY` transaction (one snapshot, writers carry
//! on meanwhile) without a statement timeout, since streaming a large table to a slow sink may
//! take longer than a request; the import is one transaction.

use async_trait::async_trait;
use futures::TryStreamExt as _;
use sqlx::{PgConnection, Row};

use super::events::dead_letter_from_row;
use super::rows::{TASK_COLUMNS, task_from_row, token_from_row, user_from_row};
use super::{PostgresStore, at_micros, pg_error};
use crate::error::StoreError;
use crate::portability::{
    AccessTokenRecord, AuditRecord, DeadLetterRecord, PortabilityError, PortabilityStore, Record,
    TaskRecord, UserRecord, sort_for_import,
};

/// The tables an import target must have no rows in.
const DATA_TABLES: [&str; 5] = [
    "users",
    "access_tokens",
    "tasks",
    "audit_log",
    "dead_letters",
];

type Sink<'a> = &'a mut (dyn FnMut(Record) -> Result<(), PortabilityError> + Send);

#[async_trait]
impl PortabilityStore for PostgresStore {
    async fn export_records(&self, sink: Sink<'_>) -> Result<(), PortabilityError> {
        let mut tx = self.begin().await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut *tx)
            .await
            .map_err(pg_error)?;
        sqlx::query("SET LOCAL statement_timeout = 0")
            .execute(&mut *tx)
            .await
            .map_err(pg_error)?;
        export_all(&mut tx, sink).await?;
        tx.commit().await.map_err(pg_error)?;
        Ok(())
    }

    async fn import_records(&self, mut records: Vec<Record>) -> Result<(), PortabilityError> {
        sort_for_import(&mut records);
        let mut tx = self.begin().await?;
        sqlx::query("SET LOCAL statement_timeout = 0")
            .execute(&mut *tx)
            .await
            .map_err(pg_error)?;
        for table in DATA_TABLES {
            let found: Option<i32> = sqlx::query_scalar(&format!("SELECT 1 FROM {table} LIMIT 1"))
                .fetch_optional(&mut *tx)
                .await
                .map_err(pg_error)?;
            if found.is_some() {
                return Err(PortabilityError::NotEmpty(table));
            }
        }
        for record in &records {
            insert(&mut tx, record).await?;
        }
        tx.commit().await.map_err(pg_error)?;
        Ok(())
    }
}

fn store(error: sqlx::Error) -> PortabilityError {
    PortabilityError::Store(pg_error(error))
}

async fn export_all(conn: &mut PgConnection, sink: Sink<'_>) -> Result<(), PortabilityError> {
    let mut rows = sqlx::query("SELECT * FROM users ORDER BY id").fetch(&mut *conn);
    while let Some(row) = rows.try_next().await.map_err(store)? {
        let user = user_from_row(&row)?;
        sink(Record::User(UserRecord::new(
            &user,
            row.try_get("password_hash")?,
            row.try_get("external_subject")?,
        )))?;
    }
    drop(rows);
    let mut rows = sqlx::query("SELECT * FROM access_tokens ORDER BY id").fetch(&mut *conn);
    while let Some(row) = rows.try_next().await.map_err(store)? {
        let hash: Vec<u8> = row.try_get("token_hash")?;
        sink(Record::AccessToken(AccessTokenRecord::new(
            &token_from_row(&row)?,
            &hash,
        )))?;
    }
    drop(rows);
    let sql = format!("SELECT {TASK_COLUMNS} FROM tasks t ORDER BY t.id");
    let mut rows = sqlx::query(&sql).fetch(&mut *conn);
    while let Some(row) = rows.try_next().await.map_err(store)? {
        sink(Record::Task(TaskRecord::new(&task_from_row(&row)?)))?;
    }
    drop(rows);
    let mut rows = sqlx::query(
        "SELECT event_id, user_id, task_id, event_type, occurred_at, data FROM audit_log ORDER BY seq",
    )
    .fetch(&mut *conn);
    while let Some(row) = rows.try_next().await.map_err(store)? {
        sink(Record::Audit(AuditRecord {
            event_id: row.try_get("event_id")?,
            user_id: row.try_get("user_id")?,
            task_id: row.try_get("task_id")?,
            event_type: row.try_get("event_type")?,
            occurred_at: row.try_get("occurred_at")?,
            data: row.try_get("data")?,
        }))?;
    }
    drop(rows);
    let mut rows = sqlx::query("SELECT * FROM dead_letters ORDER BY id").fetch(&mut *conn);
    while let Some(row) = rows.try_next().await.map_err(store)? {
        sink(Record::DeadLetter(DeadLetterRecord::from(
            &dead_letter_from_row(&row)?,
        )))?;
    }
    Ok(())
}

async fn insert(conn: &mut PgConnection, record: &Record) -> Result<(), StoreError> {
    let invalid = |e: String| StoreError::Corrupt(format!("invalid import record: {e}"));
    match record {
        Record::User(user) => {
            let account = user.to_user().map_err(invalid)?;
            sqlx::query(
                "INSERT INTO users (id, email, password_hash, display_name, time_zone, is_admin, external_subject, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(user.id)
            .bind(&user.email)
            .bind(&user.password_hash)
            .bind(&user.display_name)
            .bind(account.time_zone.name())
            .bind(user.is_admin)
            .bind(&user.external_subject)
            .bind(at_micros(user.created_at))
            .execute(&mut *conn)
            .await
            .map_err(pg_error)?;
        }
        Record::AccessToken(token) => {
            sqlx::query(
                "INSERT INTO access_tokens (id, user_id, name, token_hash, prefix, created_at, last_used_at, expires_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(token.id)
            .bind(token.user_id)
            .bind(&token.name)
            .bind(token.secret_hash().map_err(invalid)?)
            .bind(&token.prefix)
            .bind(at_micros(token.created_at))
            .bind(token.last_used_at.map(at_micros))
            .bind(token.expires_at.map(at_micros))
            .execute(&mut *conn)
            .await
            .map_err(pg_error)?;
        }
        Record::Task(task) => {
            super::tasks::insert_row(conn, &task.to_task().map_err(invalid)?, false, None).await?;
        }
        Record::Audit(entry) => {
            sqlx::query(
                "INSERT INTO audit_log (event_id, user_id, task_id, event_type, occurred_at, data)
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(&entry.event_id)
            .bind(entry.user_id)
            .bind(entry.task_id)
            .bind(&entry.event_type)
            .bind(at_micros(entry.occurred_at))
            .bind(&entry.data)
            .execute(&mut *conn)
            .await
            .map_err(pg_error)?;
        }
        Record::DeadLetter(letter) => {
            sqlx::query(
                "INSERT INTO dead_letters (id, consumer, topic, event_id, event_type, payload, error, attempts, created_at, replayed_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            )
            .bind(letter.id)
            .bind(&letter.consumer)
            .bind(&letter.topic)
            .bind(&letter.event_id)
            .bind(&letter.event_type)
            .bind(&letter.payload)
            .bind(&letter.error)
            .bind(i64::from(letter.attempts))
            .bind(at_micros(letter.created_at))
            .bind(letter.replayed_at.map(at_micros))
            .execute(&mut *conn)
            .await
            .map_err(pg_error)?;
        }
    }
    Ok(())
}
