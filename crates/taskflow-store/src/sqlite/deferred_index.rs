//! New tasks enter the full-text index at commit, all of a group commit's at once.
//!
//! FTS5 writes the terms it has gathered to disk whenever a savepoint opens, and SQLite opens
//! one (a statement journal) for every statement that may have to be undone alone: every
//! `INSERT INTO tasks` does, for its foreign key. With the index kept by an insert trigger,
//! each task of a group commit therefore became an index segment of its own, merged again
//! later. Since migration 0015 the writer notes new tasks' seqs in a temporary table instead
//! and indexes them together just before `COMMIT` ([`index_pending`]). Temporary triggers
//! index the waiting tasks first whenever a task is updated or deleted in the same
//! transaction, so the index's own update and delete triggers always find what they change.
//!
//! The temporary objects exist on the writer connection only; they roll back with the
//! transaction or savepoint that wrote them, like everything else.

use rusqlite::Connection;

/// The waiting seqs (created with every writer connection).
pub(super) const PENDING_TABLE: &str =
    "CREATE TEMP TABLE IF NOT EXISTS tasks_fts_pending (seq INTEGER PRIMARY KEY)";

/// Indexes every waiting task as it is now. (The tables written are named without their
/// schema, as trigger bodies require; each name exists in one schema only.)
const INDEX_WAITING: &str = "INSERT INTO tasks_fts (rowid, title, description, tags, owner)
    SELECT seq, title, description, tags, 'u' || replace(user_id, '-', '') FROM main.tasks
    WHERE seq IN (SELECT seq FROM temp.tasks_fts_pending)";

/// Forgets the waiting tasks once indexed.
const FORGET_WAITING: &str = "DELETE FROM tasks_fts_pending";

/// Whether tasks wait for the commit on this connection: once migration 0015 dropped the insert
/// trigger, this makes sure the temporary triggers exist and says yes.
pub(super) fn defers(conn: &Connection) -> rusqlite::Result<bool> {
    let ready: bool = conn
        .prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM temp.sqlite_master WHERE name = 'tasks_fts_pending_delete')",
        )?
        .query_row([], |row| row.get(0))?;
    if ready {
        return Ok(true);
    }
    let trigger_gone: bool = conn
        .prepare_cached(
            "SELECT NOT EXISTS (SELECT 1 FROM main.sqlite_master
                                WHERE type = 'trigger' AND name = 'tasks_fts_insert')",
        )?
        .query_row([], |row| row.get(0))?;
    if trigger_gone {
        conn.execute_batch(&format!(
            "{PENDING_TABLE};
             CREATE TEMP TRIGGER IF NOT EXISTS tasks_fts_pending_update
                 BEFORE UPDATE OF title, description, tags ON main.tasks
                 WHEN EXISTS (SELECT 1 FROM temp.tasks_fts_pending)
             BEGIN {INDEX_WAITING}; {FORGET_WAITING}; END;
             CREATE TEMP TRIGGER IF NOT EXISTS tasks_fts_pending_delete
                 BEFORE DELETE ON main.tasks
                 WHEN EXISTS (SELECT 1 FROM temp.tasks_fts_pending)
             BEGIN {INDEX_WAITING}; {FORGET_WAITING}; END;"
        ))?;
    }
    Ok(trigger_gone)
}

/// Notes the new task `seq` for indexing at commit, or does nothing where the insert trigger
/// still indexes it (before migration 0015).
pub(super) fn index_at_commit(conn: &Connection, seq: i64) -> rusqlite::Result<()> {
    if defers(conn)? {
        conn.prepare_cached("INSERT INTO temp.tasks_fts_pending (seq) VALUES (?)")?
            .execute([seq])?;
    }
    Ok(())
}

/// Indexes the tasks waiting for this commit, if any (called just before `COMMIT`).
pub(super) fn index_pending(conn: &Connection) -> rusqlite::Result<()> {
    let waiting: bool = conn
        .prepare_cached("SELECT EXISTS (SELECT 1 FROM temp.tasks_fts_pending)")?
        .query_row([], |row| row.get(0))?;
    if waiting {
        conn.prepare_cached(INDEX_WAITING)?.execute([])?;
        conn.prepare_cached(FORGET_WAITING)?.execute([])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use taskflow_domain::{Priority, Task, UserId};

    use crate::conformance::user;
    use crate::{Store as _, UserStore as _};

    fn task(owner: UserId, title: &str) -> Task {
        crate::conformance::task(owner, title, Priority::default(), &[], None, 0)
    }

    /// Seqs whose index entry matches `query`, and FTS5's own integrity check.
    fn matches(conn: &rusqlite::Connection, query: &str) -> Vec<i64> {
        conn.execute(
            "INSERT INTO tasks_fts (tasks_fts) VALUES ('integrity-check')",
            [],
        )
        .expect("the index matches its content");
        let mut statement = conn
            .prepare("SELECT rowid FROM tasks_fts WHERE tasks_fts MATCH ? ORDER BY rowid")
            .expect("prepare");
        statement
            .query_map([query], |row| row.get(0))
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("rows")
    }

    /// New tasks wait for the commit, and a task updated or deleted in the transaction that
    /// created it (its own job or a later one of the same group commit) leaves the index
    /// exactly as if each change had been committed on its own.
    #[tokio::test]
    async fn new_tasks_are_indexed_at_commit_and_changes_in_the_same_transaction_hold() {
        let (store, dir) = crate::sqlite::scratch_store("deferred-index").await;
        let user = user("index@example.com");
        store.create_user(&user, "").await.expect("user");
        let (kept, renamed, removed) = (
            task(user.id, "alpha kept"),
            task(user.id, "bravo before"),
            task(user.id, "charlie removed"),
        );
        let seqs = store
            .writes
            .write(move |conn| {
                let mut seqs = Vec::new();
                for task in [&kept, &renamed, &removed] {
                    let (seq, _) = super::super::tasks::insert_row(conn, task, false, None)?
                        .expect("inserted");
                    seqs.push(seq);
                }
                let waiting: i64 =
                    conn.query_row("SELECT count(*) FROM temp.tasks_fts_pending", [], |row| {
                        row.get(0)
                    })?;
                let indexed: i64 =
                    conn.query_row("SELECT count(*) FROM tasks_fts_docsize", [], |row| {
                        row.get(0)
                    })?;
                assert_eq!((waiting, indexed), (3, 0), "indexed at commit, not before");
                conn.execute(
                    "UPDATE tasks SET title = 'bravo after', description = '' WHERE seq = ?",
                    [seqs[1]],
                )?;
                conn.execute("DELETE FROM tasks WHERE seq = ?", [seqs[2]])?;
                Ok((seqs, None))
            })
            .await
            .expect("one transaction");
        let (kept_seq, renamed_seq) = (seqs[0], seqs[1]);
        // A later job of another transaction: created and then changed in separate jobs.
        let late = task(user.id, "delta late");
        let late_seq = store
            .writes
            .write(move |conn| {
                let (seq, _) =
                    super::super::tasks::insert_row(conn, &late, false, None)?.expect("inserted");
                Ok((seq, None))
            })
            .await
            .expect("insert");
        store
            .writes
            .write(move |conn| {
                conn.execute(
                    "UPDATE tasks SET description = 'echo' WHERE seq = ?",
                    [late_seq],
                )?;
                Ok(((), None))
            })
            .await
            .expect("update");
        let found = store
            .writes
            .write(move |conn| {
                let found: Vec<Vec<i64>> = [
                    "alpha", "bravo", "before", "after", "charlie", "delta", "echo",
                ]
                .iter()
                .map(|term| matches(conn, term))
                .collect();
                Ok((found, None))
            })
            .await
            .expect("read the index");
        assert_eq!(
            found,
            [
                vec![kept_seq],
                vec![renamed_seq],
                vec![],
                vec![renamed_seq],
                vec![],
                vec![late_seq],
                vec![late_seq],
            ]
        );
        store.close().await;
        drop(store);
        let _ = std::fs::remove_dir_all(dir);
    }
}
