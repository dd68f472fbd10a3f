-- Secret calendar feed URLs: at most one per user, stored only as the SHA-256 of its token.
CREATE TABLE calendar_feeds (
    user_id      TEXT PRIMARY KEY NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    token_hash   BLOB NOT NULL,
    prefix       TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    last_used_at INTEGER
);
CREATE UNIQUE INDEX calendar_feeds_hash ON calendar_feeds (token_hash);
