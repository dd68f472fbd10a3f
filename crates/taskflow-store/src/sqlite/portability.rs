//! Whole-database export and import on SQLite.
//!
//! The export reads one deferred read transaction on a reader connection (a WAL snapshot, so
//! writers carry on meanwhile); the import is one job of the group-commit writer, so it is one
//! transaction that other writes queue behind.

use async_trait::async_trait;
use futures::TryStreamExt as _;
use sqlx::{Row, SqliteConnection};

use super::SqliteStore;
use super::events::dead_letter_from_row;
use super::rows::{micros, task_from_row, token_from_row, user_from_row};
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
impl PortabilityStore for SqliteStore {
    async fn export_records(&self, sink: Sink<'_>) -> Result<(), PortabilityError> {
        let mut tx = self.reader.begin().await.map_err(StoreError::from_sqlx)?;
        export_all(&mut tx, sink).await?;
        tx.commit().await.map_err(StoreError::from_sqlx)?;
        Ok(())
    }

    async fn import_records(&self, mut records: Vec<Record>) -> Result<(), PortabilityError> {
        sort_for_import(&mut records);
        let refused = self
            .writes
            .write(move |conn| {
                Box::pin(async move {
                    for table in DATA_TABLES {
                        let found: Option<i64> =
                            sqlx::query_scalar(&format!("SELECT 1 FROM {table} LIMIT 1"))
                                .fetch_optional(&mut *conn)
                                .await?;
                        if found.is_some() {
                            return Ok((Some(table), None));
                        }
                    }
                    for record in &records {
                        insert(conn, record).await?;
                    }
                    Ok((None, None))
                })
            })
            .await?;
        match refused {
            Some(table) => Err(PortabilityError::NotEmpty(table)),
            None => Ok(()),
        }
    }
}

async fn export_all(conn: &mut SqliteConnection, sink: Sink<'_>) -> Result<(), PortabilityError> {
    let mut rows = sqlx::query("SELECT * FROM users ORDER BY id").fetch(&mut *conn);
    while let Some(row) = rows.try_next().await? {
        let user = user_from_row(&row)?;
        sink(Record::User(UserRecord::new(
            &user,
            row.try_get("password_hash")?,
            row.try_get("external_subject")?,
        )))?;
    }
    drop(rows);
    let mut rows = sqlx::query("SELECT * FROM access_tokens ORDER BY id").fetch(&mut *conn);
    while let Some(row) = rows.try_next().await? {
        let hash: Vec<u8> = row.try_get("token_hash")?;
        sink(Record::AccessToken(AccessTokenRecord::new(
            &token_from_row(&row)?,
            &hash,
        )))?;
    }
    drop(rows);
    let mut rows = sqlx::query("SELECT * FROM tasks ORDER BY id").fetch(&mut *conn);
    while let Some(row) = rows.try_next().await? {
        sink(Record::Task(TaskRecord::new(&task_from_row(&row)?)))?;
    }
    drop(rows);
    let mut rows = sqlx::query("SELECT * FROM audit_log ORDER BY seq").fetch(&mut *conn);
    while let Some(row) = rows.try_next().await? {
        let id = |column: &str| -> Result<uuid::Uuid, StoreError> {
            let text: String = row.try_get(column)?;
            text.parse()
                .map_err(|_| StoreError::Corrupt(format!("audit_log.{column}: {text}")))
        };
        let data: String = row.try_get("data")?;
        let occurred_at: i64 = row.try_get("occurred_at")?;
        sink(Record::Audit(AuditRecord {
            event_id: row.try_get("event_id")?,
            user_id: id("user_id")?,
            task_id: id("task_id")?,
            event_type: row.try_get("event_type")?,
            occurred_at: chrono::DateTime::from_timestamp_micros(occurred_at).ok_or_else(|| {
                StoreError::Corrupt(format!("audit_log.occurred_at: {occurred_at}"))
            })?,
            data: serde_json::from_str(&data)
                .map_err(|e| StoreError::Corrupt(format!("audit_log.data: {e}")))?,
        }))?;
    }
    drop(rows);
    let mut rows = sqlx::query("SELECT * FROM dead_letters ORDER BY id").fetch(&mut *conn);
    while let Some(row) = rows.try_next().await? {
        sink(Record::DeadLetter(DeadLetterRecord::from(
            &dead_letter_from_row(&row)?,
        )))?;
    }
    Ok(())
}

async fn insert(conn: &mut SqliteConnection, record: &Record) -> Result<(), StoreError> {
    let invalid = |e: String| StoreError::Corrupt(format!("invalid import record: {e}"));
    match record {
        Record::User(user) => {
            super::insert_user(
                conn,
                &user.to_user().map_err(invalid)?,
                &user.password_hash,
                user.external_subject.as_deref(),
            )
            .await?;
        }
        Record::AccessToken(token) => {
            sqlx::query(
                "INSERT INTO access_tokens (id, user_id, name, token_hash, prefix, created_at, last_used_at, expires_at)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(token.id.to_string())
            .bind(token.user_id.to_string())
            .bind(&token.name)
            .bind(token.secret_hash().map_err(invalid)?)
            .bind(&token.prefix)
            .bind(micros(token.created_at))
            .bind(token.last_used_at.map(micros))
            .bind(token.expires_at.map(micros))
            .execute(&mut *conn)
            .await
            .map_err(|e| super::unique_violation(e, &[("access_tokens.token_hash", "access_tokens_hash")]))?;
        }
        Record::Task(task) => {
            super::tasks::insert_row(conn, &task.to_task().map_err(invalid)?, false, None).await?;
        }
        Record::Audit(entry) => {
            sqlx::query(
                "INSERT INTO audit_log (event_id, user_id, task_id, event_type, occurred_at, data)
                 VALUES (?, ?, ?, ?, ?, ?)",
            )
            .bind(&entry.event_id)
            .bind(entry.user_id.to_string())
            .bind(entry.task_id.to_string())
            .bind(&entry.event_type)
            .bind(micros(entry.occurred_at))
            .bind(entry.data.to_string())
            .execute(&mut *conn)
            .await
            .map_err(|e| {
                super::unique_violation(e, &[("audit_log.event_id", "audit_log_event_id")])
            })?;
        }
        Record::DeadLetter(letter) => {
            sqlx::query(
                "INSERT INTO dead_letters (id, consumer, topic, event_id, event_type, payload, error, attempts, created_at, replayed_at)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(letter.id.to_string())
            .bind(&letter.consumer)
            .bind(&letter.topic)
            .bind(&letter.event_id)
            .bind(&letter.event_type)
            .bind(&letter.payload)
            .bind(&letter.error)
            .bind(i64::from(letter.attempts))
            .bind(micros(letter.created_at))
            .bind(letter.replayed_at.map(micros))
            .execute(&mut *conn)
            .await
            .map_err(|e| super::unique_violation(e, &[("dead_letters.id", "dead_letters_pkey")]))?;
        }
    }
    Ok(())
}
