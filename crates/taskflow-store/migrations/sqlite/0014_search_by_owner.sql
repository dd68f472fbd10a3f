-- A search found its full-text matches among every user's tasks and then kept the user's own,
-- so its cost grew with everybody's data: a one-word search among 157 000 tasks (15 700
-- matches, 50 of them the user's) read 15 700 task rows, ~25 ms. The index now also holds each
-- task's owner as a token (`u` and the user id's hex digits) in a column of its own, and a
-- search asks for that token AND its terms, so the index intersects the two and only the
-- user's matches are read.
--
-- The index reads its content from a view (it is an external-content table), which derives
-- the owner token from `tasks.user_id`; the triggers keep the index in step as before.
DROP TRIGGER tasks_fts_insert;
DROP TRIGGER tasks_fts_delete;
DROP TRIGGER tasks_fts_update;
DROP TABLE tasks_fts;

CREATE VIEW tasks_fts_content AS
    SELECT seq, title, description, tags, 'u' || replace(user_id, '-', '') AS owner FROM tasks;

CREATE VIRTUAL TABLE tasks_fts USING fts5 (
    title, description, tags, owner,
    content = 'tasks_fts_content', content_rowid = 'seq',
    tokenize = 'unicode61 remove_diacritics 2'
);

CREATE TRIGGER tasks_fts_insert AFTER INSERT ON tasks BEGIN
    INSERT INTO tasks_fts (rowid, title, description, tags, owner)
    VALUES (new.seq, new.title, new.description, new.tags, 'u' || replace(new.user_id, '-', ''));
END;

CREATE TRIGGER tasks_fts_delete AFTER DELETE ON tasks BEGIN
    INSERT INTO tasks_fts (tasks_fts, rowid, title, description, tags, owner)
    VALUES ('delete', old.seq, old.title, old.description, old.tags,
            'u' || replace(old.user_id, '-', ''));
END;

CREATE TRIGGER tasks_fts_update AFTER UPDATE OF title, description, tags ON tasks BEGIN
    INSERT INTO tasks_fts (tasks_fts, rowid, title, description, tags, owner)
    VALUES ('delete', old.seq, old.title, old.description, old.tags,
            'u' || replace(old.user_id, '-', ''));
    INSERT INTO tasks_fts (rowid, title, description, tags, owner)
    VALUES (new.seq, new.title, new.description, new.tags, 'u' || replace(new.user_id, '-', ''));
END;

INSERT INTO tasks_fts (tasks_fts) VALUES ('rebuild');
