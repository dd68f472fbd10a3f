-- Accounts, personal access tokens and tasks. Instants are INTEGER microseconds since the Unix
-- epoch (UTC); identifiers are lower-case hyphenated UUID text, which sorts like the UUID bytes.

CREATE TABLE users (
    id               TEXT PRIMARY KEY NOT NULL,
    email            TEXT NOT NULL,
    password_hash    TEXT NOT NULL,
    display_name     TEXT,
    time_zone        TEXT NOT NULL,
    is_admin         INTEGER NOT NULL DEFAULT 0,
    external_subject TEXT,
    created_at       INTEGER NOT NULL
);
CREATE UNIQUE INDEX users_email ON users (email);
CREATE UNIQUE INDEX users_external_subject ON users (external_subject) WHERE external_subject IS NOT NULL;

CREATE TABLE access_tokens (
    id           TEXT PRIMARY KEY NOT NULL,
    user_id      TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    token_hash   BLOB NOT NULL,
    prefix       TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    last_used_at INTEGER,
    expires_at   INTEGER
);
CREATE UNIQUE INDEX access_tokens_hash ON access_tokens (token_hash);
CREATE INDEX access_tokens_user ON access_tokens (user_id, created_at);

-- `seq` is the stable integer rowid the full-text index points at.
CREATE TABLE tasks (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    id           TEXT NOT NULL,
    user_id      TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    title        TEXT NOT NULL,
    title_key    TEXT NOT NULL,
    description  TEXT NOT NULL,
    status       TEXT NOT NULL CHECK (status IN ('pending', 'completed', 'skipped')),
    priority     INTEGER NOT NULL CHECK (priority BETWEEN 0 AND 4),
    tags         TEXT NOT NULL,
    due_at       INTEGER,
    time_zone    TEXT NOT NULL,
    -- Recurrence: normalised RRULE, anchor (`due`/`completion`), local wall-clock series start.
    recurrence_rule    TEXT,
    recurrence_anchor  TEXT,
    recurrence_dtstart TEXT,
    series_id          TEXT,
    occurrence_index   INTEGER NOT NULL DEFAULT 0,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL,
    completed_at INTEGER,
    version      INTEGER NOT NULL
);
CREATE UNIQUE INDEX tasks_id ON tasks (id);
CREATE INDEX tasks_user_created ON tasks (user_id, created_at, id);
CREATE INDEX tasks_user_updated ON tasks (user_id, updated_at, id);
CREATE INDEX tasks_user_due ON tasks (user_id, due_at, id);
CREATE INDEX tasks_user_priority ON tasks (user_id, priority, id);
CREATE INDEX tasks_user_title ON tasks (user_id, title_key, id);
CREATE INDEX tasks_user_status_due ON tasks (user_id, status, due_at);
-- At most one task per (series, occurrence): a retried or concurrent completion cannot create two.
CREATE UNIQUE INDEX tasks_series_occurrence ON tasks (series_id, occurrence_index) WHERE series_id IS NOT NULL;

CREATE TABLE task_tags (
    task_seq INTEGER NOT NULL REFERENCES tasks (seq) ON DELETE CASCADE,
    user_id  TEXT NOT NULL,
    tag      TEXT NOT NULL,
    PRIMARY KEY (task_seq, tag)
) WITHOUT ROWID;
CREATE INDEX task_tags_user_tag ON task_tags (user_id, tag, task_seq);

-- Full-text index over title, description and tags, kept in step by triggers.
CREATE VIRTUAL TABLE tasks_fts USING fts5 (
    title, description, tags,
    content = 'tasks', content_rowid = 'seq',
    tokenize = 'unicode61 remove_diacritics 2'
);

CREATE TRIGGER tasks_fts_insert AFTER INSERT ON tasks BEGIN
    INSERT INTO tasks_fts (rowid, title, description, tags)
    VALUES (new.seq, new.title, new.description, new.tags);
END;

CREATE TRIGGER tasks_fts_delete AFTER DELETE ON tasks BEGIN
    INSERT INTO tasks_fts (tasks_fts, rowid, title, description, tags)
    VALUES ('delete', old.seq, old.title, old.description, old.tags);
END;

CREATE TRIGGER tasks_fts_update AFTER UPDATE OF title, description, tags ON tasks BEGIN
    INSERT INTO tasks_fts (tasks_fts, rowid, title, description, tags)
    VALUES ('delete', old.seq, old.title, old.description, old.tags);
    INSERT INTO tasks_fts (rowid, title, description, tags)
    VALUES (new.seq, new.title, new.description, new.tags);
END;
