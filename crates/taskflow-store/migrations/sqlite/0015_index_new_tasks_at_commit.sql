-- New tasks enter the full-text index at the end of their group commit, all at once, instead
-- of through a trigger one by one: FTS5 writes what it gathered to disk at every statement
-- that opens a statement journal (every INSERT INTO tasks does, for its foreign key), so each
-- task became an index segment of its own. The writer connection keeps the seqs of new tasks
-- in a temporary table and indexes them just before COMMIT (see `sqlite/deferred_index.rs`);
-- the update and delete triggers stay.
DROP TRIGGER tasks_fts_insert;
