//! Whole-database export and import on SQLite.
//!
//! The export reads one read transaction on a connection of its own (a WAL snapshot, so
//! writers carry on meanwhile), on a blocking thread that streams records to the caller; the
//! import is one job of the group-commit writer, so it is one transaction that other writes
//! queue behind.

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension as _, params};

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
        let (records, mut received) = tokio::sync::mpsc::channel::<Result<Record, StoreError>>(256);
        let options = self.options.clone();
        let reading = tokio::task::spawn_blocking(move || {
            let outcome = super::connection::open(&options, false).and_then(|conn| {
                conn.execute_batch("BEGIN")?;
                export_all(&conn, &mut |record| {
                    records.blocking_send(Ok(record)).is_ok()
                })
            });
            if let Err(error) = outcome {
                let _ = records.blocking_send(Err(error));
            }
        });
        let mut outcome = Ok(());
        while let Some(record) = received.recv().await {
            if let Err(error) = record.map_err(PortabilityError::from).and_then(&mut *sink) {
                outcome = Err(error);
                break;
            }
        }
        // Dropping the receiver stops the reader at its next record.
        drop(received);
        reading
            .await
            .map_err(|e| StoreError::Unavailable(format!("the export stopped: {e}")))?;
        outcome
    }

    async fn import_records(&self, mut records: Vec<Record>) -> Result<(), PortabilityError> {
        sort_for_import(&mut records);
        let refused = self
            .writes
            .write(move |conn| {
                for table in DATA_TABLES {
                    let found: Option<i64> = conn
                        .prepare(&format!("SELECT 1 FROM {table} LIMIT 1"))?
                        .query_row([], |row| row.get(0))
                        .optional()?;
                    if found.is_some() {
                        return Ok((Some(table), None));
                    }
                }
                for record in &records {
                    insert(conn, record)?;
                }
                Ok((None, None))
            })
            .await?;
        match refused {
            Some(table) => Err(PortabilityError::NotEmpty(table)),
            None => Ok(()),
        }
    }
}

/// Reads every record in export order, handing each to `emit` until it returns `false`.
fn export_all(conn: &Connection, emit: &mut dyn FnMut(Record) -> bool) -> Result<(), StoreError> {
    let mut statement = conn.prepare("SELECT * FROM users ORDER BY id")?;
    let mut rows = statement.query([])?;
    while let Some(row) = rows.next()? {
        let user = user_from_row(row)?;
        let record = Record::User(UserRecord::new(
            &user,
            row.get("password_hash")?,
            row.get("external_subject")?,
        ));
        if !emit(record) {
            return Ok(());
        }
    }
    let mut statement = conn.prepare("SELECT * FROM access_tokens ORDER BY id")?;
    let mut rows = statement.query([])?;
    while let Some(row) = rows.next()? {
        let hash: Vec<u8> = row.get("token_hash")?;
        if !emit(Record::AccessToken(AccessTokenRecord::new(
            &token_from_row(row)?,
            &hash,
        ))) {
            return Ok(());
        }
    }
    let mut statement = conn.prepare("SELECT * FROM tasks ORDER BY id")?;
    let mut rows = statement.query([])?;
    while let Some(row) = rows.next()? {
        if !emit(Record::Task(TaskRecord::new(&task_from_row(row)?))) {
            return Ok(());
        }
    }
    let mut statement = conn.prepare("SELECT * FROM audit_log ORDER BY seq")?;
    let mut rows = statement.query([])?;
    while let Some(row) = rows.next()? {
        let id = |column: &str| -> Result<uuid::Uuid, StoreError> {
            let text: String = row.get(column)?;
            text.parse()
                .map_err(|_| StoreError::Corrupt(format!("audit_log.{column}: {text}")))
        };
        let data: String = row.get("data")?;
        let occurred_at: i64 = row.get("occurred_at")?;
        let record = Record::Audit(AuditRecord {
            event_id: row.get("event_id")?,
            user_id: id("user_id")?,
            task_id: id("task_id")?,
            event_type: row.get("event_type")?,
            occurred_at: chrono::DateTime::from_timestamp_micros(occurred_at).ok_or_else(|| {
                StoreError::Corrupt(format!("audit_log.occurred_at: {occurred_at}"))
            })?,
            data: serde_json::from_str(&data)
                .map_err(|e| StoreError::Corrupt(format!("audit_log.data: {e}")))?,
        });
        if !emit(record) {
            return Ok(());
        }
    }
    let mut statement = conn.prepare("SELECT * FROM dead_letters ORDER BY id")?;
    let mut rows = statement.query([])?;
    while let Some(row) = rows.next()? {
        if !emit(Record::DeadLetter(DeadLetterRecord::from(
            &dead_letter_from_row(row)?,
        ))) {
            return Ok(());
        }
    }
    Ok(())
}

fn insert(conn: &Connection, record: &Record) -> Result<(), StoreError> {
    let invalid = |e: String| StoreError::Corrupt(format!("invalid import record: {e}"));
    match record {
        Record::User(user) => {
            super::insert_user(
                conn,
                &user.to_user().map_err(invalid)?,
                &user.password_hash,
                user.external_subject.as_deref(),
            )?;
        }
        Record::AccessToken(token) => {
            conn.prepare_cached(
                "INSERT INTO access_tokens (id, user_id, name, token_hash, prefix, created_at, last_used_at, expires_at)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            )?
            .execute(params![
                token.id.to_string(),
                token.user_id.to_string(),
                token.name,
                token.secret_hash().map_err(invalid)?,
                token.prefix,
                micros(token.created_at),
                token.last_used_at.map(micros),
                token.expires_at.map(micros),
            ])
            .map_err(|e| {
                super::unique_violation(e, &[("access_tokens.token_hash", "access_tokens_hash")])
            })?;
        }
        Record::Task(task) => {
            super::tasks::insert_row(conn, &task.to_task().map_err(invalid)?, false, None)?;
        }
        Record::Audit(entry) => {
            conn.prepare_cached(
                "INSERT INTO audit_log (event_id, user_id, task_id, event_type, occurred_at, data)
                 VALUES (?, ?, ?, ?, ?, ?)",
            )?
            .execute(params![
                entry.event_id,
                entry.user_id.to_string(),
                entry.task_id.to_string(),
                entry.event_type,
                micros(entry.occurred_at),
                entry.data.to_string(),
            ])
            .map_err(|e| {
                super::unique_violation(e, &[("audit_log.event_id", "audit_log_event_id")])
            })?;
        }
        Record::DeadLetter(letter) => {
            conn.prepare_cached(
                "INSERT INTO dead_letters (id, consumer, topic, event_id, event_type, payload, error, attempts, created_at, replayed_at)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            )?
            .execute(params![
                letter.id.to_string(),
                letter.consumer,
                letter.topic,
                letter.event_id,
                letter.event_type,
                letter.payload,
                letter.error,
                i64::from(letter.attempts),
                micros(letter.created_at),
                letter.replayed_at.map(micros),
            ])
            .map_err(|e| {
                super::unique_violation(e, &[("dead_letters.id", "dead_letters_pkey")])
            })?;
        }
    }
    Ok(())
}
