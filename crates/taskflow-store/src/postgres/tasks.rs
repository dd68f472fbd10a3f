//! Tasks on PostgreSQL: writes keep `task_tags` in step (the search vector is a generated
//! column); listings are keyset-paged on the same total orders as the SQLite backend.

use async_trait::async_trait;
use chrono::Utc;
use sqlx::postgres::PgArguments;
use sqlx::{PgConnection, Postgres, QueryBuilder, Row};
use taskflow_domain::events::OutgoingEvent;
use taskflow_domain::{SeriesId, Task, TaskId, UserId};

use super::events::{
    add_outbox_arguments, outbox_insert, outbox_lock_cte, outbox_rows, write_events,
};
use super::reminders::{cancel_task_reminders, sync_reminders};
use super::rows::{TASK_COLUMNS, anchor_name, task_from_row};
use super::{PostgresStore, add_argument, at_micros, clamp_micros, pg_error};
use crate::ReminderSync;
use crate::error::StoreError;
use crate::query::{
    Cursor, CursorKey, SortDirection, SortField, TagMode, TaskPage, TaskQuery, title_key,
};
use crate::{EventsFor, TagCount, TaskStore};

/// What a search reads of each match before its page is chosen: the sort and keyset columns.
const SEARCH_KEY_COLUMNS: &str =
    "t.id, t.due_at, t.priority, t.created_at, t.updated_at, t.title_key";

/// `ts_rank_cd` weights for D, C, B, A: description (C) 0.1, tags (B) 0.5, title (A) 1.0 — the
/// same 1 : 5 : 10 proportions as the SQLite backend's BM25 column weights.
const RANK_WEIGHTS: &str = "'{0.0, 0.1, 0.5, 1.0}'::float4[]";

/// The search expression built from the bound `text[]` of terms: one row with `query` (every
/// term accent-folded, quoted as a lexeme and prefix-matched, all required) and `complete`
/// (false when some term yields no lexeme at all, which then matches nothing rather than
/// being dropped; so does a term that folds to nothing). Quoting doubles `'` and `\`, so no user text is read as tsquery syntax.
const SEARCH_QUERY: &str = r"(SELECT to_tsquery('simple', string_agg(lexeme || ':*', ' & ' ORDER BY n) FILTER (WHERE folded <> '')) AS query,
            coalesce(bool_and(CASE WHEN folded = '' THEN false
                                   ELSE numnode(to_tsquery('simple', lexeme)) > 0 END), false) AS complete
     FROM (SELECT n, folded, '''' || replace(replace(folded, '\', '\\'), '''', '''''') || '''' AS lexeme
           FROM (SELECT n, taskflow_fold(term) AS folded FROM unnest(";

/// Closes [`SEARCH_QUERY`] after its bound terms.
const SEARCH_QUERY_END: &str = "::text[]) WITH ORDINALITY AS u(term, n)) AS f) AS l) AS s";

/// Writes the tag rows of `task`; `replace` also removes the ones it no longer has (a new task
/// has none), in the same statement, and leaves the rows of tags it keeps alone.
async fn write_tags(conn: &mut PgConnection, task: &Task, replace: bool) -> Result<(), StoreError> {
    if !replace && task.tags.as_slice().is_empty() {
        return Ok(());
    }
    let removed = if replace {
        "WITH removed AS (DELETE FROM task_tags WHERE task_id = $1 AND tag <> ALL($3::text[])) "
    } else {
        ""
    };
    sqlx::query(&format!(
        "{removed}INSERT INTO task_tags (task_id, user_id, tag)
         SELECT $1, $2, tag FROM unnest($3::text[]) AS tag ON CONFLICT DO NOTHING"
    ))
    .bind(task.id.as_uuid())
    .bind(task.user_id.as_uuid())
    .bind(task.tags.to_strings())
    .execute(&mut *conn)
    .await
    .map_err(pg_error)?;
    Ok(())
}

/// Inserts `task`, its tags and its reminders (their events carry `trace`). With
/// `skip_existing_occurrence`, a task whose (series, index) already exists is not inserted and
/// `None` is returned; otherwise what scheduling its reminders did.
pub(super) async fn insert_row(
    conn: &mut PgConnection,
    task: &Task,
    skip_existing_occurrence: bool,
    trace: Option<&str>,
) -> Result<Option<ReminderSync>, StoreError> {
    let conflict = if skip_existing_occurrence {
        " ON CONFLICT (series_id, occurrence_index) WHERE series_id IS NOT NULL DO NOTHING"
    } else {
        ""
    };
    let inserted = sqlx::query_with(&format!("{INSERT_TASK}{conflict}"), task_arguments(task)?)
        .execute(&mut *conn)
        .await
        .map_err(pg_error)?
        .rows_affected()
        == 1;
    if !inserted {
        return Ok(None);
    }
    write_tags(conn, task, false).await?;
    if task.reminders.is_empty() {
        return Ok(Some(ReminderSync::default()));
    }
    Ok(Some(sync_reminders(conn, task, trace).await?))
}

/// Inserts one task row from the 21 parameters [`task_arguments`] adds.
const INSERT_TASK: &str = "INSERT INTO tasks (id, user_id, title, title_key, description, status, priority, tags,
                            due_at, time_zone, recurrence_rule, recurrence_anchor, recurrence_dtstart,
                            series_id, occurrence_index, created_at, updated_at, completed_at, version,
                            reminders, ical_uid)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21)";

/// How many parameters [`INSERT_TASK`] takes.
const TASK_PARAMETERS: usize = 21;

/// The parameters of [`INSERT_TASK`] for `task`: `$1` its id, `$2` its owner, `$8` its tags.
fn task_arguments(task: &Task) -> Result<PgArguments, StoreError> {
    let recurrence = task.recurrence.as_ref();
    let mut arguments = PgArguments::default();
    let a = &mut arguments;
    add_argument(a, task.id.as_uuid())?;
    add_argument(a, task.user_id.as_uuid())?;
    add_argument(a, task.title.as_str())?;
    add_argument(a, title_key(task.title.as_str()))?;
    add_argument(a, task.description.as_str())?;
    add_argument(a, task.status.as_str())?;
    add_argument(a, priority(task)?)?;
    add_argument(a, task.tags.to_strings())?;
    add_argument(a, task.due_at.map(at_micros))?;
    add_argument(a, task.time_zone.name())?;
    add_argument(a, recurrence.map(|r| r.rule.as_str().to_owned()))?;
    add_argument(a, recurrence.map(|r| anchor_name(r.anchor)))?;
    add_argument(a, recurrence.map(|r| r.dtstart))?;
    add_argument(a, task.series_id.map(|s| s.as_uuid()))?;
    add_argument(a, i64::from(task.occurrence_index))?;
    add_argument(a, at_micros(task.created_at))?;
    add_argument(a, at_micros(task.updated_at))?;
    add_argument(a, task.completed_at.map(at_micros))?;
    add_argument(a, task.version)?;
    add_argument(a, reminders_json(task))?;
    add_argument(a, task.ical_uid.as_deref())?;
    Ok(arguments)
}

/// Inserts `task` (without reminders), its tags and the outbox rows of `events` in one
/// statement, committed on its own: one round trip instead of six. Returns the last seq.
async fn insert_task_in_one_statement(
    store: &PostgresStore,
    task: &Task,
    events: &[OutgoingEvent],
) -> Result<Option<i64>, StoreError> {
    let rows = outbox_rows(events)?;
    let outbox_first = TASK_PARAMETERS + 1;
    let sql = format!(
        "WITH task AS ({INSERT_TASK} RETURNING id),
              tags AS (INSERT INTO task_tags (task_id, user_id, tag)
                       SELECT task.id, $2, tag FROM task, unnest($8::text[]) AS tag
                       ON CONFLICT DO NOTHING RETURNING 1),
              {}
         {}",
        outbox_lock_cte(
            store.outbox_order,
            outbox_first + 6,
            "(SELECT (SELECT count(*) FROM task) + (SELECT count(*) FROM tags))"
        ),
        outbox_insert(outbox_first)
    );
    let mut arguments = task_arguments(task)?;
    add_outbox_arguments(&mut arguments, &rows, store.outbox_order)?;
    let seqs: Vec<i64> = sqlx::query_scalar_with(&sql, arguments)
        .fetch_all(&store.pool)
        .await
        .map_err(pg_error)?;
    Ok(seqs.into_iter().max())
}

fn reminders_json(task: &Task) -> serde_json::Value {
    serde_json::to_value(&task.reminders).unwrap_or_else(|_| serde_json::json!([]))
}

fn priority(task: &Task) -> Result<i16, StoreError> {
    let rank = task.priority.rank();
    i16::try_from(rank).map_err(|_| StoreError::Corrupt(format!("priority rank {rank}")))
}

/// Locks one of the user's tasks for the rest of the transaction and returns its version.
async fn lock_version(
    conn: &mut PgConnection,
    user: UserId,
    id: TaskId,
) -> Result<i64, StoreError> {
    let version: Option<i64> =
        sqlx::query_scalar("SELECT version FROM tasks WHERE id = $1 AND user_id = $2 FOR UPDATE")
            .bind(id.as_uuid())
            .bind(user.as_uuid())
            .fetch_optional(&mut *conn)
            .await
            .map_err(pg_error)?;
    version.ok_or(StoreError::NotFound)
}

#[async_trait]
impl TaskStore for PostgresStore {
    async fn insert_task(&self, task: &Task, events: &[OutgoingEvent]) -> Result<(), StoreError> {
        if task.reminders.is_empty() && !events.is_empty() {
            let seq = insert_task_in_one_statement(self, task, events).await?;
            self.announce(seq);
            return Ok(());
        }
        let mut tx = self.begin().await?;
        let sync = insert_row(&mut tx, task, false, crate::trace_of(events))
            .await?
            .unwrap_or_default();
        let mut all_events = events.to_vec();
        all_events.extend(sync.events);
        let seq = write_events(&mut tx, &all_events, self.outbox_order).await?;
        tx.commit().await.map_err(pg_error)?;
        self.announce(seq);
        crate::announce_earliest(&self.reminder_changes, sync.earliest);
        Ok(())
    }

    async fn task(&self, user: UserId, id: TaskId) -> Result<Option<Task>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {TASK_COLUMNS} FROM tasks t WHERE t.id = $1 AND t.user_id = $2"
        ))
        .bind(id.as_uuid())
        .bind(user.as_uuid())
        .fetch_optional(&self.pool)
        .await
        .map_err(pg_error)?;
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
        let mut tx = self.begin().await?;
        // The row lock makes concurrent updates with the same expected version queue here; each
        // later one reads the version its predecessor committed.
        let version = lock_version(&mut tx, user, task.id).await?;
        if version != expected_version {
            return Err(StoreError::VersionMismatch { current: version });
        }
        let recurrence = task.recurrence.as_ref();
        sqlx::query(
            "UPDATE tasks SET title = $1, title_key = $2, description = $3, status = $4, priority = $5,
                 tags = $6, due_at = $7, time_zone = $8, recurrence_rule = $9, recurrence_anchor = $10,
                 recurrence_dtstart = $11, series_id = $12, occurrence_index = $13, updated_at = $14,
                 completed_at = $15, version = $16, reminders = $19
             WHERE id = $17 AND user_id = $18",
        )
        .bind(task.title.as_str())
        .bind(title_key(task.title.as_str()))
        .bind(task.description.as_str())
        .bind(task.status.as_str())
        .bind(priority(task)?)
        .bind(task.tags.to_strings())
        .bind(task.due_at.map(at_micros))
        .bind(task.time_zone.name())
        .bind(recurrence.map(|r| r.rule.as_str().to_owned()))
        .bind(recurrence.map(|r| anchor_name(r.anchor)))
        .bind(recurrence.map(|r| r.dtstart))
        .bind(task.series_id.map(|s| s.as_uuid()))
        .bind(i64::from(task.occurrence_index))
        .bind(at_micros(task.updated_at))
        .bind(task.completed_at.map(at_micros))
        .bind(task.version)
        .bind(task.id.as_uuid())
        .bind(user.as_uuid())
        .bind(reminders_json(task))
        .execute(&mut *tx)
        .await
        .map_err(pg_error)?;
        write_tags(&mut tx, task, true).await?;
        let mut sync = sync_reminders(&mut tx, task, crate::trace_of(events)).await?;
        let mut created = false;
        // Rows first, events last: the outbox lock is then held only until the commit.
        let mut all_events = events.to_vec();
        all_events.append(&mut sync.events);
        if let Some((next, next_events)) = next_occurrence
            && let Some(next_sync) =
                insert_row(&mut tx, next, true, crate::trace_of(next_events)).await?
        {
            created = true;
            all_events.extend_from_slice(next_events);
            sync.merge(next_sync);
            all_events.append(&mut sync.events);
        }
        let seq = write_events(&mut tx, &all_events, self.outbox_order).await?;
        tx.commit().await.map_err(pg_error)?;
        self.announce(seq);
        crate::announce_earliest(&self.reminder_changes, sync.earliest);
        Ok(created)
    }

    async fn series_occurrences(
        &self,
        user: UserId,
        series: SeriesId,
    ) -> Result<Vec<Task>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {TASK_COLUMNS} FROM tasks t WHERE t.user_id = $1 AND t.series_id = $2
             ORDER BY t.occurrence_index"
        ))
        .bind(user.as_uuid())
        .bind(series.as_uuid())
        .fetch_all(&self.pool)
        .await
        .map_err(pg_error)?;
        rows.iter().map(task_from_row).collect()
    }

    async fn delete_task(
        &self,
        user: UserId,
        id: TaskId,
        expected_version: Option<i64>,
        events_for: EventsFor,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        let row = sqlx::query(&format!(
            "SELECT {TASK_COLUMNS} FROM tasks t WHERE t.id = $1 AND t.user_id = $2 FOR UPDATE"
        ))
        .bind(id.as_uuid())
        .bind(user.as_uuid())
        .fetch_optional(&mut *tx)
        .await
        .map_err(pg_error)?;
        let task = task_from_row(&row.ok_or(StoreError::NotFound)?)?;
        if expected_version.is_some_and(|expected| expected != task.version) {
            return Err(StoreError::VersionMismatch {
                current: task.version,
            });
        }
        sqlx::query("DELETE FROM tasks WHERE id = $1")
            .bind(id.as_uuid())
            .execute(&mut *tx)
            .await
            .map_err(pg_error)?;
        let mut events = events_for(&task);
        let cancelled =
            cancel_task_reminders(&mut tx, &task, Utc::now(), crate::trace_of(&events)).await?;
        events.extend(cancelled);
        let seq = write_events(&mut tx, &events, self.outbox_order).await?;
        tx.commit().await.map_err(pg_error)?;
        self.announce(seq);
        Ok(())
    }

    async fn list_tasks(&self, user: UserId, query: &TaskQuery) -> Result<TaskPage, StoreError> {
        let searching = !query.search_terms.is_empty();
        // A search ranks and sorts every match: it chooses the page from the matches' sort
        // keys and then reads the page's tasks whole, instead of carrying every match's whole
        // row through the sort. A listing without search walks an index and stops after the
        // page.
        let mut sql: QueryBuilder<Postgres> = QueryBuilder::new(if searching {
            format!(
                "SELECT {TASK_COLUMNS}, page.title_key, page.score FROM (SELECT * FROM (SELECT {SEARCH_KEY_COLUMNS}, "
            )
        } else {
            format!("SELECT * FROM (SELECT {TASK_COLUMNS}, t.title_key, ")
        });
        if searching {
            // Negated, so lower is better as with BM25 and ascending relevance is best first.
            sql.push(format_args!(
                "(-ts_rank_cd({RANK_WEIGHTS}, t.search, s.query, 1))::float8"
            ));
        } else {
            sql.push("0::float8");
        }
        sql.push(" AS score FROM tasks t");
        if searching {
            sql.push(format_args!(", {SEARCH_QUERY}"))
                .push_bind(query.search_terms.clone())
                .push(SEARCH_QUERY_END);
        }
        sql.push(" WHERE t.user_id = ").push_bind(user.as_uuid());
        if searching {
            sql.push(" AND s.complete AND t.search @@ s.query");
        }
        push_filters(&mut sql, query);
        sql.push(") AS page WHERE true");

        let column = sort_column(query.sort);
        let (op, dir) = match query.direction {
            SortDirection::Asc => (">", "ASC"),
            SortDirection::Desc => ("<", "DESC"),
        };
        if let Some(cursor) = &query.after {
            push_keyset(&mut sql, query.sort, column, op, cursor)?;
        }
        sql.push(format_args!(" ORDER BY {column} {dir}"));
        if query.sort == SortField::DueAt {
            sql.push(" NULLS LAST");
        }
        sql.push(format_args!(", id {dir} LIMIT "));
        sql.push_bind(i64::from(query.limit) + 1);
        if searching {
            sql.push(format_args!(
                ") AS page JOIN tasks t ON t.id = page.id ORDER BY page.{column} {dir}"
            ));
            if query.sort == SortField::DueAt {
                sql.push(" NULLS LAST");
            }
            sql.push(format_args!(", page.id {dir}"));
        }

        let _search_slot = if searching {
            Some(
                self.searches
                    .acquire()
                    .await
                    .map_err(|_| StoreError::Unavailable("the store is closed".into()))?,
            )
        } else {
            None
        };
        let rows = sql.build().fetch_all(&self.pool).await.map_err(pg_error)?;
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
            "SELECT tt.tag AS tag, count(*) AS tasks,
                    count(*) FILTER (WHERE t.status = 'pending') AS pending
             FROM task_tags tt JOIN tasks t ON t.id = tt.task_id
             WHERE tt.user_id = $1
             GROUP BY tt.tag ORDER BY tasks DESC, tt.tag ASC",
        )
        .bind(user.as_uuid())
        .fetch_all(&self.pool)
        .await
        .map_err(pg_error)?;
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

/// The column of the inner query a sort orders by.
fn sort_column(sort: SortField) -> &'static str {
    match sort {
        SortField::DueAt => "due_at",
        SortField::Priority => "priority",
        SortField::CreatedAt => "created_at",
        SortField::UpdatedAt => "updated_at",
        SortField::Title => "title_key",
        SortField::Relevance => "score",
    }
}

fn push_filters(sql: &mut QueryBuilder<'_, Postgres>, query: &TaskQuery) {
    if let Some(status) = query.status {
        sql.push(" AND t.status = ").push_bind(status.as_str());
    }
    if !query.priorities.is_empty() {
        let ranks: Vec<i16> = query
            .priorities
            .iter()
            .filter_map(|p| i16::try_from(p.rank()).ok())
            .collect();
        sql.push(" AND t.priority = ANY(")
            .push_bind(ranks)
            .push("::smallint[])");
    }
    if !query.tags.is_empty() {
        let mut tags: Vec<String> = query.tags.iter().map(|t| t.as_str().to_owned()).collect();
        tags.sort();
        tags.dedup();
        let distinct = tags.len() as i64;
        match query.tag_mode {
            TagMode::Any => {
                sql.push(
                    " AND EXISTS (SELECT 1 FROM task_tags tt WHERE tt.task_id = t.id AND tt.tag = ANY(",
                )
                .push_bind(tags)
                .push("::text[]))");
            }
            TagMode::All => {
                sql.push(
                    " AND (SELECT count(*) FROM task_tags tt WHERE tt.task_id = t.id AND tt.tag = ANY(",
                )
                .push_bind(tags)
                .push("::text[])) = ")
                .push_bind(distinct);
            }
        }
    }
    if let Some(before) = query.due_before {
        sql.push(" AND t.due_at < ").push_bind(at_micros(before));
    }
    if let Some(after) = query.due_after {
        sql.push(" AND t.due_at >= ").push_bind(at_micros(after));
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
        sql.push(" AND t.series_id = ").push_bind(series.as_uuid());
    }
    match query.overdue {
        Some(true) => {
            sql.push(" AND t.status = 'pending' AND t.due_at < ")
                .push_bind(at_micros(query.now));
        }
        Some(false) => {
            sql.push(" AND (t.status <> 'pending' OR t.due_at IS NULL OR t.due_at >= ")
                .push_bind(at_micros(query.now))
                .push(")");
        }
        None => {}
    }
}

/// Continues after the cursor's row: `(key, id)` beyond the cursor's in the sort direction,
/// then (for due dates) the trailing group without one.
fn push_keyset(
    sql: &mut QueryBuilder<'_, Postgres>,
    sort: SortField,
    column: &str,
    op: &str,
    cursor: &Cursor,
) -> Result<(), StoreError> {
    let id = cursor.id.as_uuid();
    if matches!(cursor.key, CursorKey::Null) {
        // Only nullable sorts produce null keys: continue within the trailing null group.
        sql.push(format_args!(" AND {column} IS NULL AND id {op} "))
            .push_bind(id);
        return Ok(());
    }
    sql.push(format_args!(" AND (({column}, id) {op} ("));
    match (sort, &cursor.key) {
        (
            SortField::DueAt | SortField::CreatedAt | SortField::UpdatedAt,
            CursorKey::Int(micros),
        ) => {
            sql.push_bind(clamp_micros(*micros));
        }
        (SortField::Priority, CursorKey::Int(rank)) => {
            sql.push_bind(*rank);
        }
        (SortField::Title, CursorKey::Text(key)) => {
            sql.push_bind(key.clone());
        }
        (SortField::Relevance, CursorKey::Float(score)) => {
            sql.push_bind(*score);
        }
        (SortField::Relevance, CursorKey::Int(score)) => {
            sql.push_bind(*score as f64);
        }
        (sort, key) => {
            return Err(StoreError::Corrupt(format!(
                "cursor key {key:?} does not fit sort {sort:?}"
            )));
        }
    }
    sql.push(", ").push_bind(id).push(")");
    if sort == SortField::DueAt {
        sql.push(format_args!(" OR {column} IS NULL"));
    }
    sql.push(")");
    Ok(())
}
