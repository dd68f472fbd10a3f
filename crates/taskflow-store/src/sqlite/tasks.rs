//! Tasks on SQLite: writes keep `task_tags` and the FTS index in step; listings are keyset-paged.

use async_trait::async_trait;
use sqlx::{QueryBuilder, Row, Sqlite, SqliteConnection};
use taskflow_domain::events::OutgoingEvent;
use taskflow_domain::{SeriesId, Task, TaskId, UserId};

use super::SqliteStore;
use super::events::write_events;
use super::reminders::{cancel_task_reminders, sync_reminders};
use super::rows::{anchor_name, dtstart_text, micros, reminders_text, task_from_row};
use crate::ReminderSync;
use crate::error::StoreError;
use crate::query::{
    Cursor, CursorKey, SortDirection, SortField, TagMode, TaskPage, TaskQuery, title_key,
};
use crate::{EventsFor, TagCount, TaskStore};

/// BM25 column weights: title, description, tags.
const BM25: &str = "bm25(tasks_fts, 10.0, 1.0, 5.0)";

fn tags_json(task: &Task) -> String {
    serde_json::to_string(&task.tags.to_strings()).unwrap_or_else(|_| "[]".to_owned())
}

/// Replaces the tag rows of task `seq` (`fresh`: the task is new, there is nothing to delete).
async fn write_tags(
    conn: &mut SqliteConnection,
    seq: i64,
    task: &Task,
    fresh: bool,
) -> Result<(), StoreError> {
    if !fresh {
        sqlx::query("DELETE FROM task_tags WHERE task_seq = ?")
            .bind(seq)
            .execute(&mut *conn)
            .await?;
    }
    if task.tags.is_empty() {
        return Ok(());
    }
    let user = task.user_id.to_string();
    let mut sql = QueryBuilder::<Sqlite>::new("INSERT INTO task_tags (task_seq, user_id, tag) ");
    sql.push_values(task.tags.as_slice(), |mut row, tag| {
        row.push_bind(seq)
            .push_bind(user.clone())
            .push_bind(tag.as_str().to_owned());
    });
    sql.build().execute(&mut *conn).await?;
    Ok(())
}

/// Inserts `task`, its tags and its reminders (their events carry `trace`). With
/// `skip_existing_occurrence`, a task whose (series, index) already exists is not inserted and
/// `None` is returned.
pub(super) async fn insert_row(
    conn: &mut SqliteConnection,
    task: &Task,
    skip_existing_occurrence: bool,
    trace: Option<&str>,
) -> Result<Option<(i64, ReminderSync)>, StoreError> {
    let conflict = if skip_existing_occurrence {
        " ON CONFLICT (series_id, occurrence_index) WHERE series_id IS NOT NULL DO NOTHING"
    } else {
        ""
    };
    let recurrence = task.recurrence.as_ref();
    let seq: Option<i64> = sqlx::query_scalar(&format!(
        "INSERT INTO tasks (id, user_id, title, title_key, description, status, priority, tags,
                            due_at, time_zone, recurrence_rule, recurrence_anchor, recurrence_dtstart,
                            series_id, occurrence_index, created_at, updated_at, completed_at, version,
                            reminders, ical_uid)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?){conflict} RETURNING seq"
    ))
    .bind(task.id.to_string())
    .bind(task.user_id.to_string())
    .bind(task.title.as_str())
    .bind(title_key(task.title.as_str()))
    .bind(task.description.as_str())
    .bind(task.status.as_str())
    .bind(task.priority.rank())
    .bind(tags_json(task))
    .bind(task.due_at.map(micros))
    .bind(task.time_zone.name())
    .bind(recurrence.map(|r| r.rule.as_str().to_owned()))
    .bind(recurrence.map(|r| anchor_name(r.anchor)))
    .bind(recurrence.map(dtstart_text))
    .bind(task.series_id.map(|s| s.to_string()))
    .bind(i64::from(task.occurrence_index))
    .bind(micros(task.created_at))
    .bind(micros(task.updated_at))
    .bind(task.completed_at.map(micros))
    .bind(task.version)
    .bind(reminders_text(&task.reminders))
    .bind(task.ical_uid.as_deref())
    .fetch_optional(&mut *conn)
    .await
    .map_err(|e| {
        super::unique_violation(
            e,
            &[("tasks.id", "tasks_id"), ("tasks.series_id", "tasks_series_occurrence")],
        )
    })?;
    if let Some(seq) = seq {
        write_tags(conn, seq, task, true).await?;
        if !task.reminders.is_empty() {
            let sync = sync_reminders(conn, task, trace).await?;
            return Ok(Some((seq, sync)));
        }
    }
    Ok(seq.map(|seq| (seq, ReminderSync::default())))
}

#[async_trait]
impl TaskStore for SqliteStore {
    async fn insert_task(&self, task: &Task, events: &[OutgoingEvent]) -> Result<(), StoreError> {
        let (task, events) = (task.clone(), events.to_vec());
        self.writes
            .write(move |conn| {
                Box::pin(async move {
                    let sync = insert_row(conn, &task, false, crate::trace_of(&events))
                        .await?
                        .map(|(_, sync)| sync)
                        .unwrap_or_default();
                    let mut events = events;
                    events.extend(sync.events);
                    let seq = write_events(conn, &events).await?;
                    Ok((sync.earliest, seq))
                })
            })
            .await
            .map(|earliest| crate::announce_earliest(&self.reminder_changes, earliest))
    }

    async fn task(&self, user: UserId, id: TaskId) -> Result<Option<Task>, StoreError> {
        let row = sqlx::query("SELECT * FROM tasks WHERE id = ? AND user_id = ?")
            .bind(id.to_string())
            .bind(user.to_string())
            .fetch_optional(&self.reader)
            .await
            .map_err(StoreError::from_sqlx)?;
        row.as_ref().map(task_from_row).transpose()
    }

    async fn update_task(
        &self,
        user: UserId,
        task: &Task,
        expected_version: i64,
        events: &[OutgoingEvent],
        next_occurrence: Option<(&Task, &[OutgoingEvent])>,
    ) -> Result<bool, StoreError> {
        let (task, events) = (task.clone(), events.to_vec());
        let next = next_occurrence.map(|(t, e)| (t.clone(), e.to_vec()));
        self.writes
            .write(move |conn| {
                Box::pin(async move {
                    let task = &task;
                let current: Option<(i64, i64)> =
                    sqlx::query_as("SELECT seq, version FROM tasks WHERE id = ? AND user_id = ?")
                        .bind(task.id.to_string())
                        .bind(user.to_string())
                        .fetch_optional(&mut *conn)
                        .await?;
                let Some((seq, version)) = current else {
                    return Err(StoreError::NotFound);
                };
                if version != expected_version {
                    return Err(StoreError::VersionMismatch { current: version });
                }
                let recurrence = task.recurrence.as_ref();
                sqlx::query(
                    "UPDATE tasks SET title = ?, title_key = ?, description = ?, status = ?, priority = ?,
                         tags = ?, due_at = ?, time_zone = ?, recurrence_rule = ?, recurrence_anchor = ?,
                         recurrence_dtstart = ?, series_id = ?, occurrence_index = ?, updated_at = ?,
                         completed_at = ?, version = ?, reminders = ?
                     WHERE seq = ?",
                )
                .bind(task.title.as_str())
                .bind(title_key(task.title.as_str()))
                .bind(task.description.as_str())
                .bind(task.status.as_str())
                .bind(task.priority.rank())
                .bind(tags_json(task))
                .bind(task.due_at.map(micros))
                .bind(task.time_zone.name())
                .bind(recurrence.map(|r| r.rule.as_str().to_owned()))
                .bind(recurrence.map(|r| anchor_name(r.anchor)))
                .bind(recurrence.map(dtstart_text))
                .bind(task.series_id.map(|s| s.to_string()))
                .bind(i64::from(task.occurrence_index))
                .bind(micros(task.updated_at))
                .bind(task.completed_at.map(micros))
                .bind(task.version)
                .bind(reminders_text(&task.reminders))
                .bind(seq)
                .execute(&mut *conn)
                .await?;
                write_tags(conn, seq, task, false).await?;
                let mut sync = sync_reminders(conn, task, crate::trace_of(&events)).await?;
                let mut written = events.clone();
                written.append(&mut sync.events);
                let mut created = false;
                if let Some((next, next_events)) = next
                    && let Some((_, next_sync)) =
                        insert_row(conn, &next, true, crate::trace_of(&next_events)).await?
                {
                    created = true;
                    written.extend(next_events);
                    sync.merge(next_sync);
                    written.append(&mut sync.events);
                }
                let last_event = write_events(conn, &written).await?;
                    Ok(((created, sync.earliest), last_event))
                })
            })
            .await
            .map(|(created, earliest)| {
                crate::announce_earliest(&self.reminder_changes, earliest);
                created
            })
    }

    async fn series_occurrences(
        &self,
        user: UserId,
        series: SeriesId,
    ) -> Result<Vec<Task>, StoreError> {
        let rows = sqlx::query(
            "SELECT * FROM tasks WHERE user_id = ? AND series_id = ? ORDER BY occurrence_index",
        )
        .bind(user.to_string())
        .bind(series.to_string())
        .fetch_all(&self.reader)
        .await
        .map_err(StoreError::from_sqlx)?;
        rows.iter().map(task_from_row).collect()
    }

    async fn delete_task(
        &self,
        user: UserId,
        id: TaskId,
        expected_version: Option<i64>,
        events_for: EventsFor,
    ) -> Result<(), StoreError> {
        self.writes
            .write(move |conn| {
                Box::pin(async move {
                    let row = sqlx::query("SELECT * FROM tasks WHERE id = ? AND user_id = ?")
                        .bind(id.to_string())
                        .bind(user.to_string())
                        .fetch_optional(&mut *conn)
                        .await?;
                    let Some(row) = row else {
                        return Err(StoreError::NotFound);
                    };
                    let seq: i64 = row.try_get("seq")?;
                    let task = task_from_row(&row)?;
                    if expected_version.is_some_and(|expected| expected != task.version) {
                        return Err(StoreError::VersionMismatch {
                            current: task.version,
                        });
                    }
                    sqlx::query("DELETE FROM tasks WHERE seq = ?")
                        .bind(seq)
                        .execute(&mut *conn)
                        .await?;
                    let mut events = events_for(&task);
                    let cancelled = cancel_task_reminders(
                        conn,
                        &task,
                        chrono::Utc::now(),
                        crate::trace_of(&events),
                    )
                    .await?;
                    events.extend(cancelled);
                    let last_event = write_events(conn, &events).await?;
                    Ok(((), last_event))
                })
            })
            .await
    }

    async fn list_tasks(&self, user: UserId, query: &TaskQuery) -> Result<TaskPage, StoreError> {
        let searching = !query.search_terms.is_empty();
        let mut sql: QueryBuilder<Sqlite> = QueryBuilder::new("SELECT * FROM (SELECT t.*, ");
        if searching {
            sql.push(BM25);
        } else {
            sql.push("0.0");
        }
        sql.push(" AS score FROM tasks t ");
        if searching {
            sql.push("JOIN tasks_fts ON tasks_fts.rowid = t.seq AND tasks_fts MATCH ")
                .push_bind(fts_query(&query.search_terms))
                .push(" ");
        }
        sql.push("WHERE t.user_id = ").push_bind(user.to_string());
        push_filters(&mut sql, query);
        sql.push(") AS page WHERE 1 = 1");

        let (expr, nullable) = sort_expression(query.sort);
        let ascending = query.direction == SortDirection::Asc;
        let (op, dir) = if ascending {
            (">", "ASC")
        } else {
            ("<", "DESC")
        };
        if let Some(cursor) = &query.after {
            push_keyset(&mut sql, expr, nullable, op, cursor);
        }
        sql.push(" ORDER BY ");
        if nullable {
            sql.push(format_args!("({expr} IS NULL) ASC, "));
        }
        sql.push(format_args!("{expr} {dir}, id {dir} LIMIT "));
        sql.push_bind(i64::from(query.limit) + 1);

        let rows = sql
            .build()
            .fetch_all(&self.reader)
            .await
            .map_err(|e| match &e {
                // A malformed FTS expression cannot come from `search_terms`, but never answer 500 for one.
                sqlx::Error::Database(db) if db.message().contains("fts5") => {
                    StoreError::Corrupt(format!("search failed: {}", db.message()))
                }
                _ => StoreError::from_sqlx(e),
            })?;
        let mut items = Vec::with_capacity(rows.len());
        let mut scores = Vec::with_capacity(rows.len());
        for row in &rows {
            items.push(task_from_row(row)?);
            scores.push(row.try_get::<f64, _>("score")?);
        }
        let next_cursor = if items.len() > query.limit as usize {
            items.truncate(query.limit as usize);
            items.last().map(|last| {
                Cursor::after(
                    last,
                    query.sort,
                    query.direction,
                    scores.get(items.len() - 1).copied(),
                )
            })
        } else {
            None
        };
        Ok(TaskPage { items, next_cursor })
    }

    async fn tag_counts(&self, user: UserId) -> Result<Vec<TagCount>, StoreError> {
        let rows = sqlx::query(
            "SELECT tt.tag AS tag, COUNT(*) AS tasks,
                    SUM(CASE WHEN t.status = 'pending' THEN 1 ELSE 0 END) AS pending
             FROM task_tags tt JOIN tasks t ON t.seq = tt.task_seq
             WHERE tt.user_id = ?
             GROUP BY tt.tag ORDER BY tasks DESC, tt.tag ASC",
        )
        .bind(user.to_string())
        .fetch_all(&self.reader)
        .await
        .map_err(StoreError::from_sqlx)?;
        rows.iter()
            .map(|row| {
                Ok(TagCount {
                    tag: row.try_get("tag")?,
                    tasks: row.try_get("tasks")?,
                    pending: row.try_get("pending")?,
                })
            })
            .collect()
    }
}

/// An FTS5 expression matching every term as a prefix: `"buy"* "mil"*`.
fn fts_query(terms: &[String]) -> String {
    terms
        .iter()
        .map(|t| format!("\"{}\"*", t.replace('"', "\"\"")))
        .collect::<Vec<_>>()
        .join(" ")
}

fn sort_expression(sort: SortField) -> (&'static str, bool) {
    match sort {
        SortField::DueAt => ("due_at", true),
        SortField::Priority => ("priority", false),
        SortField::CreatedAt => ("created_at", false),
        SortField::UpdatedAt => ("updated_at", false),
        SortField::Title => ("title_key", false),
        SortField::Relevance => ("score", false),
    }
}

fn push_filters(sql: &mut QueryBuilder<'_, Sqlite>, query: &TaskQuery) {
    if let Some(status) = query.status {
        sql.push(" AND t.status = ").push_bind(status.as_str());
    }
    if !query.priorities.is_empty() {
        sql.push(" AND t.priority IN (");
        let mut list = sql.separated(", ");
        for p in &query.priorities {
            list.push_bind(p.rank());
        }
        sql.push(")");
    }
    if !query.tags.is_empty() {
        let push_tag_list = |sql: &mut QueryBuilder<'_, Sqlite>| {
            let mut list = sql.separated(", ");
            for tag in &query.tags {
                list.push_bind(tag.as_str().to_owned());
            }
        };
        match query.tag_mode {
            TagMode::Any => {
                sql.push(" AND EXISTS (SELECT 1 FROM task_tags tt WHERE tt.task_seq = t.seq AND tt.tag IN (");
                push_tag_list(sql);
                sql.push("))");
            }
            TagMode::All => {
                sql.push(" AND (SELECT COUNT(*) FROM task_tags tt WHERE tt.task_seq = t.seq AND tt.tag IN (");
                push_tag_list(sql);
                let distinct = query
                    .tags
                    .iter()
                    .collect::<std::collections::BTreeSet<_>>()
                    .len();
                sql.push(")) = ").push_bind(distinct as i64);
            }
        }
    }
    if let Some(before) = query.due_before {
        sql.push(" AND t.due_at < ").push_bind(micros(before));
    }
    if let Some(after) = query.due_after {
        sql.push(" AND t.due_at >= ").push_bind(micros(after));
    }
    match query.recurring {
        Some(true) => {
            sql.push(" AND t.recurrence_rule IS NOT NULL");
        }
        Some(false) => {
            sql.push(" AND t.recurrence_rule IS NULL");
        }
        None => {}
    }
    if let Some(series) = query.series_id {
        sql.push(" AND t.series_id = ")
            .push_bind(series.to_string());
    }
    match query.overdue {
        Some(true) => {
            sql.push(" AND t.status = 'pending' AND t.due_at < ")
                .push_bind(micros(query.now));
        }
        Some(false) => {
            sql.push(" AND (t.status <> 'pending' OR t.due_at IS NULL OR t.due_at >= ")
                .push_bind(micros(query.now))
                .push(")");
        }
        None => {}
    }
}

fn push_keyset(
    sql: &mut QueryBuilder<'_, Sqlite>,
    expr: &str,
    nullable: bool,
    op: &str,
    cursor: &Cursor,
) {
    let id = cursor.id.to_string();
    if matches!(cursor.key, CursorKey::Null) {
        // Only nullable sorts produce null keys: continue within the trailing null group.
        sql.push(format_args!(" AND {expr} IS NULL AND id {op} "))
            .push_bind(id);
        return;
    }
    sql.push(format_args!(" AND (({expr} {op} "));
    push_key(sql, &cursor.key);
    sql.push(format_args!(") OR ({expr} = "));
    push_key(sql, &cursor.key);
    sql.push(format_args!(" AND id {op} "))
        .push_bind(id)
        .push(")");
    if nullable {
        sql.push(format_args!(" OR {expr} IS NULL"));
    }
    sql.push(")");
}

fn push_key(sql: &mut QueryBuilder<'_, Sqlite>, key: &CursorKey) {
    match key {
        CursorKey::Null => sql.push("NULL"),
        CursorKey::Int(i) => sql.push_bind(*i),
        CursorKey::Float(f) => sql.push_bind(*f),
        CursorKey::Text(t) => sql.push_bind(t.clone()),
    };
}
