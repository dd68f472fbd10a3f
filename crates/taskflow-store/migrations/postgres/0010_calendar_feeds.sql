-- Secret calendar feed URLs: at most one per user, stored only as the SHA-256 of its token.
CREATE TABLE calendar_feeds (
    user_id      uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    token_hash   bytea NOT NULL,
    prefix       text NOT NULL,
    created_at   timestamptz NOT NULL,
    last_used_at timestamptz,
    CONSTRAINT calendar_feeds_pkey PRIMARY KEY (user_id)
);
CREATE UNIQUE INDEX calendar_feeds_hash ON calendar_feeds (token_hash);
