//! Tasks on SQLite: writes keep `task_tags` and the FTS index in step; listings are keyset-paged.

use async_trait::async_trait;
use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension as _, ToSql, params, params_from_iter};
use taskflow_domain::events::OutgoingEvent;
use taskflow_domain::{SeriesId, Task, TaskId, UserId};

use super::SqliteStore;
use super::events::{serialize_events, write_events, write_serialized};
use super::reminders::{cancel_task_reminders, sync_reminders};
use super::rows::{anchor_name, dtstart_text, micros, reminders_text, task_from_row};
use crate::ReminderSync;
use crate::error::StoreError;
use crate::query::{
    Cursor, CursorKey, SortDirection, SortField, TagMode, TaskPage, TaskQuery, title_key,
};
use crate::{EventsFor, TagCount, TaskStore};

/// BM25 column weights: title, description, tags, owner (never ranked).
const BM25: &str = "bm25(tasks_fts, 10.0, 1.0, 5.0, 0.0)";

fn tags_json(task: &Task) -> String {
    serde_json::to_string(&task.tags.to_strings()).unwrap_or_else(|_| "[]".to_owned())
}

/// The values of the 17 columns an insert and an update of a task both write, in the order
/// both statements list them: `title, title_key, description, status, priority, tags, due_at,
/// time_zone, recurrence_rule, recurrence_anchor, recurrence_dtstart, series_id,
/// occurrence_index, updated_at, completed_at, version, reminders`.
struct WrittenColumns<'a> {
    title: &'a str,
    title_key: String,
    description: &'a str,
    status: &'static str,
    priority: i64,
    tags: String,
    due_at: Option<i64>,
    time_zone: &'a str,
    recurrence_rule: Option<&'a str>,
    recurrence_anchor: Option<&'static str>,
    recurrence_dtstart: Option<String>,
    series_id: Option<String>,
    occurrence_index: i64,
    updated_at: i64,
    completed_at: Option<i64>,
    version: i64,
    reminders: String,
}

impl<'a> WrittenColumns<'a> {
    fn of(task: &'a Task) -> Self {
        let recurrence = task.recurrence.as_ref();
        Self {
            title: task.title.as_str(),
            title_key: title_key(task.title.as_str()),
            description: task.description.as_str(),
            status: task.status.as_str(),
            priority: task.priority.rank(),
            tags: tags_json(task),
            due_at: task.due_at.map(micros),
            time_zone: task.time_zone.name(),
            recurrence_rule: recurrence.map(|r| r.rule.as_str()),
            recurrence_anchor: recurrence.map(|r| anchor_name(r.anchor)),
            recurrence_dtstart: recurrence.map(dtstart_text),
            series_id: task.series_id.map(|s| s.to_string()),
            occurrence_index: i64::from(task.occurrence_index),
            updated_at: micros(task.updated_at),
            completed_at: task.completed_at.map(micros),
            version: task.version,
            reminders: reminders_text(&task.reminders),
        }
    }

    /// The values in the statements' order.
    fn values(&self) -> [&dyn ToSql; 17] {
        [
            &self.title,
            &self.title_key,
            &self.description,
            &self.status,
            &self.priority,
            &self.tags,
            &self.due_at,
            &self.time_zone,
            &self.recurrence_rule,
            &self.recurrence_anchor,
            &self.recurrence_dtstart,
            &self.series_id,
            &self.occurrence_index,
            &self.updated_at,
            &self.completed_at,
            &self.version,
            &self.reminders,
        ]
    }
}

/// Replaces the tag rows of task `seq` (`fresh`: the task is new, there is nothing to delete).
fn write_tags(conn: &Connection, seq: i64, task: &Task, fresh: bool) -> Result<(), StoreError> {
    if !fresh {
        conn.prepare_cached("DELETE FROM task_tags WHERE task_seq = ?")?
            .execute([seq])?;
    }
    if task.tags.is_empty() {
        return Ok(());
    }
    let user = task.user_id.to_string();
    let mut insert =
        conn.prepare_cached("INSERT INTO task_tags (task_seq, user_id, tag) VALUES (?, ?, ?)")?;
    for tag in task.tags.as_slice() {
        insert.execute(params![seq, user, tag.as_str()])?;
    }
    Ok(())
}

/// Inserts `task`, its tags and its reminders (their events carry `trace`). With
/// `skip_existing_occurrence`, a task whose (series, index) already exists is not inserted and
/// `None` is returned.
pub(super) fn insert_row(
    conn: &Connection,
    task: &Task,
    skip_existing_occurrence: bool,
    trace: Option<&str>,
) -> Result<Option<(i64, ReminderSync)>, StoreError> {
    // One literal for both statements, so neither is formatted again at every insert.
    macro_rules! insert {
        () => {
            "INSERT INTO tasks (id, user_id, created_at, ical_uid, title, title_key, description,
                                status, priority, tags, due_at, time_zone, recurrence_rule,
                                recurrence_anchor, recurrence_dtstart, series_id, occurrence_index,
                                updated_at, completed_at, version, reminders)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        };
    }
    let sql = if skip_existing_occurrence {
        concat!(
            insert!(),
            " ON CONFLICT (series_id, occurrence_index) WHERE series_id IS NOT NULL DO NOTHING"
        )
    } else {
        insert!()
    };
    let (id, user, created_at) = (
        task.id.to_string(),
        task.user_id.to_string(),
        micros(task.created_at),
    );
    let own: [&dyn ToSql; 4] = [&id, &user, &created_at, &task.ical_uid];
    let written = WrittenColumns::of(task);
    // The new seq is read with `last_insert_rowid` rather than `RETURNING`: SQLite runs a
    // `RETURNING` as a trigger, which gives every insert a statement journal (each page it
    // changes copied first) and a temporary table for the returned row.
    let inserted = conn
        .prepare_cached(sql)?
        .execute(params_from_iter(own.iter().chain(&written.values())))
        .map_err(|e| {
            super::unique_violation(
                e,
                &[
                    ("tasks.id", "tasks_id"),
                    ("tasks.series_id", "tasks_series_occurrence"),
                ],
            )
        })?;
    let seq = (inserted == 1).then(|| conn.last_insert_rowid());
    if let Some(seq) = seq {
        super::deferred_index::index_at_commit(conn, seq)?;
        write_tags(conn, seq, task, true)?;
        if !task.reminders.is_empty() {
            let sync = sync_reminders(conn, task, trace)?;
            return Ok(Some((seq, sync)));
        }
    }
    Ok(seq.map(|seq| (seq, ReminderSync::default())))
}

/// Runs `query` with `values` bound in order, mapping each row with `map`.
pub(super) fn query_all<T>(
    conn: &Connection,
    sql: &str,
    values: &[Value],
    mut map: impl FnMut(&rusqlite::Row<'_>) -> Result<T, StoreError>,
) -> Result<Vec<T>, StoreError> {
    let mut statement = conn.prepare_cached(sql)?;
    let mut rows = statement.query(rusqlite::params_from_iter(values))?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        out.push(map(row)?);
    }
    Ok(out)
}

#[async_trait]
impl TaskStore for SqliteStore {
    async fn insert_task(&self, task: &Task, events: &[OutgoingEvent]) -> Result<(), StoreError> {
        // Serialise here, on the caller's task, so the writer thread spends its time on SQLite.
        let serialized = serialize_events(events)?;
        let trace = crate::trace_of(events).map(str::to_owned);
        let task = task.clone();
        self.writes
            .write(move |conn| {
                let sync = insert_row(conn, &task, false, trace.as_deref())?
                    .map(|(_, sync)| sync)
                    .unwrap_or_default();
                let mut seq = write_serialized(conn, &serialized)?;
                if let Some(last) = write_events(conn, &sync.events)? {
                    seq = Some(last);
                }
                Ok((sync.earliest, seq))
            })
            .await
            .map(|earliest| crate::announce_earliest(&self.reminder_changes, earliest))
    }

    async fn task(&self, user: UserId, id: TaskId) -> Result<Option<Task>, StoreError> {
        self.read(move |conn| {
            conn.prepare_cached("SELECT * FROM tasks WHERE id = ? AND user_id = ?")?
                .query_row([id.to_string(), user.to_string()], |row| {
                    Ok(task_from_row(row))
                })
                .optional()?
                .transpose()
        })
        .await
    }

    async fn update_task(
        &self,
        user: UserId,
        task: &Task,
        expected_version: i64,
        events: &[OutgoingEvent],
        next_occurrence: Option<(&Task, &[OutgoingEvent])>,
    ) -> Result<bool, StoreError> {
        let serialized = serialize_events(events)?;
        let trace = crate::trace_of(events).map(str::to_owned);
        let task = task.clone();
        let next = next_occurrence
            .map(|(t, e)| {
                Ok::<_, StoreError>((
                    t.clone(),
                    serialize_events(e)?,
                    crate::trace_of(e).map(str::to_owned),
                ))
            })
            .transpose()?;
        self.writes
            .write(move |conn| {
                let task = &task;
                let current: Option<(i64, i64)> = conn
                    .prepare_cached("SELECT seq, version FROM tasks WHERE id = ? AND user_id = ?")?
                    .query_row([task.id.to_string(), user.to_string()], |row| {
                        Ok((row.get(0)?, row.get(1)?))
                    })
                    .optional()?;
                let Some((seq, version)) = current else {
                    return Err(StoreError::NotFound);
                };
                if version != expected_version {
                    return Err(StoreError::VersionMismatch { current: version });
                }
                let written = WrittenColumns::of(task);
                conn.prepare_cached(
                    "UPDATE tasks SET title = ?, title_key = ?, description = ?, status = ?, priority = ?,
                         tags = ?, due_at = ?, time_zone = ?, recurrence_rule = ?, recurrence_anchor = ?,
                         recurrence_dtstart = ?, series_id = ?, occurrence_index = ?, updated_at = ?,
                         completed_at = ?, version = ?, reminders = ?
                     WHERE seq = ?",
                )?
                .execute(params_from_iter(written.values().iter().chain([&seq as &dyn ToSql].iter())))?;
                write_tags(conn, seq, task, false)?;
                let mut sync = sync_reminders(conn, task, trace.as_deref())?;
                // The change's own events first, then what its reminders did, then the next
                // occurrence's events and what its reminders did.
                let mut last_event = write_serialized(conn, &serialized)?;
                let mut created = false;
                let mut next_sync = ReminderSync::default();
                if let Some((next, _, next_trace)) = &next
                    && let Some((_, synced)) =
                        insert_row(conn, next, true, next_trace.as_deref())?
                {
                    created = true;
                    next_sync = synced;
                }
                for written in [
                    write_events(conn, &std::mem::take(&mut sync.events))?,
                    match &next {
                        Some((_, next_events, _)) if created => {
                            write_serialized(conn, next_events)?
                        }
                        _ => None,
                    },
                    write_events(conn, &next_sync.events)?,
                ]
                .into_iter()
                .flatten()
                {
                    last_event = Some(written);
                }
                sync.earliest = sync.earliest.into_iter().chain(next_sync.earliest).min();
                Ok(((created, sync.earliest), last_event))
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
        self.read(move |conn| {
            query_all(
                conn,
                "SELECT * FROM tasks WHERE user_id = ? AND series_id = ? ORDER BY occurrence_index",
                &[
                    Value::Text(user.to_string()),
                    Value::Text(series.to_string()),
                ],
                task_from_row,
            )
        })
        .await
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
                let found = conn
                    .prepare_cached("SELECT * FROM tasks WHERE id = ? AND user_id = ?")?
                    .query_row([id.to_string(), user.to_string()], |row| {
                        Ok(row
                            .get::<_, i64>("seq")
                            .map_err(StoreError::from)
                            .and_then(|seq| Ok((seq, task_from_row(row)?))))
                    })
                    .optional()?
                    .transpose()?;
                let Some((seq, task)) = found else {
                    return Err(StoreError::NotFound);
                };
                if expected_version.is_some_and(|expected| expected != task.version) {
                    return Err(StoreError::VersionMismatch {
                        current: task.version,
                    });
                }
                conn.prepare_cached("DELETE FROM tasks WHERE seq = ?")?
                    .execute([seq])?;
                let mut events = events_for(&task);
                let cancelled = cancel_task_reminders(
                    conn,
                    &task,
                    chrono::Utc::now(),
                    crate::trace_of(&events),
                )?;
                events.extend(cancelled);
                let last_event = write_events(conn, &events)?;
                Ok(((), last_event))
            })
            .await
    }

    async fn list_tasks(&self, user: UserId, query: &TaskQuery) -> Result<TaskPage, StoreError> {
        let sql = list_statement(user, query);
        let (sort, direction, limit) = (query.sort, query.direction, query.limit as usize);
        let searching = !query.search_terms.is_empty();
        let list = move |conn: &Connection| {
            query_all(conn, &sql.sql, &sql.values, |row| {
                Ok((task_from_row(row)?, row.get::<_, f64>("score")?))
            })
            .map_err(|e| match e {
                // A malformed FTS expression cannot come from `search_terms`, but never
                // answer 500 for one.
                StoreError::Sqlite(error) if error.to_string().contains("fts5") => {
                    StoreError::Corrupt(format!("search failed: {error}"))
                }
                other => other,
            })
        };
        // A search ranks every match (tens of milliseconds among thousands); it must not take
        // the last reader from quick reads.
        let rows = if searching {
            self.read_slow(list).await?
        } else {
            self.read(list).await?
        };
        let (mut items, scores): (Vec<Task>, Vec<f64>) = rows.into_iter().unzip();
        let next_cursor = if items.len() > limit {
            items.truncate(limit);
            items.last().map(|last| {
                Cursor::after(last, sort, direction, scores.get(items.len() - 1).copied())
            })
        } else {
            None
        };
        Ok(TaskPage { items, next_cursor })
    }

    async fn tag_counts(&self, user: UserId) -> Result<Vec<TagCount>, StoreError> {
        self.read(move |conn| {
            query_all(
                conn,
                "SELECT tt.tag AS tag, COUNT(*) AS tasks,
                        SUM(CASE WHEN t.status = 'pending' THEN 1 ELSE 0 END) AS pending
                 FROM task_tags tt JOIN tasks t ON t.seq = tt.task_seq
                 WHERE tt.user_id = ?
                 GROUP BY tt.tag ORDER BY tasks DESC, tt.tag ASC",
                &[Value::Text(user.to_string())],
                |row| {
                    Ok(TagCount {
                        tag: row.get("tag")?,
                        tasks: row.get("tasks")?,
                        pending: row.get("pending")?,
                    })
                },
            )
        })
        .await
    }
}

/// SQL text with `?` placeholders and the values to bind to them, in order.
pub(super) struct SqlBuilder {
    /// The statement so far.
    pub sql: String,
    /// One value per `?`.
    pub values: Vec<Value>,
}

impl SqlBuilder {
    /// Starts a statement.
    pub fn new(sql: &str) -> Self {
        Self {
            sql: sql.to_owned(),
            values: Vec::new(),
        }
    }

    /// Appends SQL text.
    pub fn push(&mut self, sql: &str) -> &mut Self {
        self.sql.push_str(sql);
        self
    }

    /// Appends a placeholder bound to `value`.
    pub fn bind(&mut self, value: impl Into<Value>) -> &mut Self {
        self.sql.push('?');
        self.values.push(value.into());
        self
    }

    /// Appends `values` as a parenthesised, comma-separated list of placeholders.
    pub fn bind_list<V: Into<Value>>(&mut self, values: impl IntoIterator<Item = V>) -> &mut Self {
        self.sql.push('(');
        for (i, value) in values.into_iter().enumerate() {
            if i > 0 {
                self.sql.push_str(", ");
            }
            self.bind(value);
        }
        self.sql.push(')');
        self
    }
}

/// The full-text query for `terms` among `user`'s tasks: every term as a prefix, all required
/// (`"buy"* "mil"*`), in the title, description and tags of tasks whose owner token is the
/// user's. The index holds that token in a column of its own (migration 0014), so it intersects
/// the user's tasks with the matches itself instead of reading every user's matches.
fn fts_query(user: UserId, terms: &[String]) -> String {
    let terms = terms
        .iter()
        .map(|t| format!("\"{}\"*", t.replace('"', "\"\"")))
        .collect::<Vec<_>>()
        .join(" ");
    format!(
        "owner : \"{}\" AND {{title description tags}} : ({terms})",
        owner_token(user)
    )
}

/// The token standing for `user` in the full-text index's `owner` column, as migration 0014
/// derives it from `tasks.user_id`.
fn owner_token(user: UserId) -> String {
    format!("u{}", user.to_string().replace('-', ""))
}

/// The statement listing `user`'s tasks for `query`: one more row than a page, to tell whether
/// another page follows.
fn list_statement(user: UserId, query: &TaskQuery) -> SqlBuilder {
    let searching = !query.search_terms.is_empty();
    let mut sql = SqlBuilder::new("SELECT * FROM (SELECT t.*, ");
    sql.push(if searching { BM25 } else { "0.0" });
    if searching {
        // The matches first, whatever the sort: `CROSS JOIN` fixes that order. Left to itself
        // the planner may walk every task of the user in the sort's index and probe the
        // full-text index once per task (6.5 s for a 2-match phrase among 170 000 tasks,
        // against 0.2 ms this way).
        sql.push(" AS score FROM tasks_fts CROSS JOIN tasks t ON t.seq = tasks_fts.rowid WHERE tasks_fts MATCH ")
            .bind(fts_query(user, &query.search_terms))
            .push(" AND t.user_id = ")
            .bind(user.to_string());
    } else {
        sql.push(" AS score FROM tasks t WHERE t.user_id = ")
            .bind(user.to_string());
    }
    push_filters(&mut sql, query);
    sql.push(") AS page WHERE 1 = 1");

    let ascending = query.direction == SortDirection::Asc;
    let (expr, null_key) = sort_expression(query.sort, ascending);
    let (op, dir) = if ascending {
        (">", "ASC")
    } else {
        ("<", "DESC")
    };
    if let Some(cursor) = &query.after {
        push_keyset(&mut sql, expr, null_key, op, cursor);
    }
    sql.push(&format!(" ORDER BY {expr} {dir}, id {dir} LIMIT "));
    sql.bind(i64::from(query.limit) + 1);
    sql
}

/// `due_at` with tasks without a due date last in ascending order: the expression the
/// `tasks_user_due_key` and `tasks_user_status_due_key` indexes hold, so due-date listings and
/// due ranges walk an index instead of sorting every task of the user. No due date is ever
/// `i64::MAX` microseconds (chrono stops at year 262 143).
const DUE_KEY_ASC: &str = "coalesce(due_at, 9223372036854775807)";
/// The same for descending order (no due date last again); not indexed, so it sorts.
const DUE_KEY_DESC: &str = "coalesce(due_at, -9223372036854775807)";
/// [`DUE_KEY_ASC`] inside the task subquery.
const T_DUE_KEY: &str = "coalesce(t.due_at, 9223372036854775807)";

/// The ordering expression of `sort`, and the key that stands for "no value" in it when the
/// column is nullable (tasks without a due date sort last in either direction).
fn sort_expression(sort: SortField, ascending: bool) -> (&'static str, Option<i64>) {
    match sort {
        SortField::DueAt if ascending => (DUE_KEY_ASC, Some(i64::MAX)),
        SortField::DueAt => (DUE_KEY_DESC, Some(-i64::MAX)),
        SortField::Priority => ("priority", None),
        SortField::CreatedAt => ("created_at", None),
        SortField::UpdatedAt => ("updated_at", None),
        SortField::Title => ("title_key", None),
        SortField::Relevance => ("score", None),
    }
}

fn push_filters(sql: &mut SqlBuilder, query: &TaskQuery) {
    if let Some(status) = query.status {
        sql.push(" AND t.status = ")
            .bind(status.as_str().to_owned());
    }
    if !query.priorities.is_empty() {
        sql.push(" AND t.priority IN ")
            .bind_list(query.priorities.iter().map(|p| p.rank()));
    }
    if !query.tags.is_empty() {
        let tags = query.tags.iter().map(|tag| tag.as_str().to_owned());
        match query.tag_mode {
            TagMode::Any => {
                sql.push(" AND EXISTS (SELECT 1 FROM task_tags tt WHERE tt.task_seq = t.seq AND tt.tag IN ")
                    .bind_list(tags)
                    .push(")");
            }
            TagMode::All => {
                let distinct = query
                    .tags
                    .iter()
                    .collect::<std::collections::BTreeSet<_>>()
                    .len();
                sql.push(" AND (SELECT COUNT(*) FROM task_tags tt WHERE tt.task_seq = t.seq AND tt.tag IN ")
                    .bind_list(tags)
                    .push(") = ")
                    .bind(distinct as i64);
            }
        }
    }
    // Written against the indexed due key (equivalent: no due date is never in a range).
    if let Some(before) = query.due_before {
        sql.push(&format!(" AND {T_DUE_KEY} < "))
            .bind(micros(before));
    }
    if let Some(after) = query.due_after {
        sql.push(&format!(" AND {T_DUE_KEY} >= "))
            .bind(micros(after))
            .push(&format!(" AND {T_DUE_KEY} < 9223372036854775807"));
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
        sql.push(" AND t.series_id = ").bind(series.to_string());
    }
    match query.overdue {
        Some(true) => {
            sql.push(&format!(" AND t.status = 'pending' AND {T_DUE_KEY} < "))
                .bind(micros(query.now));
        }
        Some(false) => {
            sql.push(" AND (t.status <> 'pending' OR t.due_at IS NULL OR t.due_at >= ")
                .bind(micros(query.now))
                .push(")");
        }
        None => {}
    }
}

fn push_keyset(sql: &mut SqlBuilder, expr: &str, null_key: Option<i64>, op: &str, cursor: &Cursor) {
    let id = cursor.id.to_string();
    let key = match (&cursor.key, null_key) {
        // A task without a due date: its key is the sentinel the ordering gives it.
        (CursorKey::Null, Some(sentinel)) => CursorKey::Int(sentinel),
        (key, _) => key.clone(),
    };
    sql.push(&format!(" AND ({expr} {op} "));
    push_key(sql, &key);
    sql.push(&format!(" OR ({expr} = "));
    push_key(sql, &key);
    sql.push(&format!(" AND id {op} ")).bind(id).push("))");
}

fn push_key(sql: &mut SqlBuilder, key: &CursorKey) {
    match key {
        CursorKey::Null => sql.push("NULL"),
        CursorKey::Int(i) => sql.bind(*i),
        CursorKey::Float(f) => sql.bind(*f),
        CursorKey::Text(t) => sql.bind(t.clone()),
    };
}

#[cfg(test)]
mod tests {
    use chrono::{TimeDelta, Utc};
    use taskflow_domain::TaskStatus;

    use super::*;
    use crate::query::{SortDirection, SortField};

    /// `EXPLAIN QUERY PLAN` of the listing statement for `query`, one detail per line.
    async fn plan(store: &SqliteStore, query: &TaskQuery) -> String {
        let sql = list_statement(UserId::new(), query);
        crate::sqlite::query_plan(store, sql.sql, sql.values).await
    }

    /// Due-date listings (all, pending only, a due range, overdue) walk an index in order
    /// instead of sorting all of a user's tasks.
    #[tokio::test]
    async fn due_date_listings_walk_an_index_and_searches_start_from_matches() {
        let (store, dir) = crate::sqlite::scratch_store("plan-test").await;
        let now = Utc::now();
        let by_due = |edit: &dyn Fn(&mut TaskQuery)| {
            let mut query = TaskQuery::new(now);
            query.sort = SortField::DueAt;
            query.direction = SortDirection::Asc;
            edit(&mut query);
            query
        };
        let cases = [
            ("all", by_due(&|_| {}), "tasks_user_due_key"),
            (
                "pending",
                by_due(&|q| q.status = Some(TaskStatus::Pending)),
                "tasks_user_status_due_key",
            ),
            (
                "range",
                by_due(&|q| {
                    q.due_after = Some(now);
                    q.due_before = Some(now + TimeDelta::days(7));
                }),
                "tasks_user_due_key",
            ),
            (
                "later page",
                by_due(&|q| {
                    q.after = Some(Cursor {
                        sort: SortField::DueAt,
                        direction: SortDirection::Asc,
                        key: CursorKey::Null,
                        id: TaskId::new(),
                    })
                }),
                "tasks_user_due_key",
            ),
        ];
        for (name, query, index) in cases {
            let plan = plan(&store, &query).await;
            assert!(plan.contains(index), "{name}: {plan}");
            assert!(!plan.contains("TEMP B-TREE"), "{name} sorts: {plan}");
        }

        // A search starts from its matches, in every sort (then sorts just those).
        for sort in [SortField::Relevance, SortField::CreatedAt, SortField::DueAt] {
            let mut query = TaskQuery::new(now);
            query.search_terms = vec!["report".into()];
            query.sort = sort;
            let plan = plan(&store, &query).await;
            assert!(
                plan.starts_with("SCAN tasks_fts VIRTUAL TABLE"),
                "search by {sort:?}: {plan}"
            );
        }
        drop(store);
        let _ = std::fs::remove_dir_all(dir);
    }
}
