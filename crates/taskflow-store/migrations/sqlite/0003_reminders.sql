-- Reminders and notifications. The `reminders` table is the scheduler's truth: one row per
-- reminder of one task occurrence; the plan that produces them is `tasks.reminders` (JSON).

ALTER TABLE tasks ADD COLUMN reminders TEXT NOT NULL DEFAULT '[]';

CREATE TABLE reminders (
    id          TEXT PRIMARY KEY NOT NULL,
    user_id     TEXT NOT NULL,
    task_id     TEXT NOT NULL,
    -- The plan entry it comes from (`before_due:PT1H`, `at:<instant>`).
    key         TEXT NOT NULL,
    remind_at   INTEGER NOT NULL,
    -- When it fires next: `remind_at`, or later once snoozed.
    fire_at     INTEGER NOT NULL,
    state       TEXT NOT NULL CHECK (state IN ('scheduled', 'firing', 'sent', 'failed', 'cancelled')),
    fire_count  INTEGER NOT NULL DEFAULT 0,
    -- A claim: who holds it and until when (state `firing`).
    lease_token TEXT,
    lease_until INTEGER,
    fired_at    INTEGER,
    late_ms     INTEGER,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);
CREATE UNIQUE INDEX reminders_task_key ON reminders (task_id, key, remind_at);
CREATE INDEX reminders_scheduled ON reminders (fire_at) WHERE state = 'scheduled';
CREATE INDEX reminders_leased ON reminders (lease_until) WHERE state = 'firing';
CREATE INDEX reminders_user_task ON reminders (user_id, task_id);

-- The in-app feed.
CREATE TABLE notifications (
    id          TEXT PRIMARY KEY NOT NULL,
    user_id     TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    kind        TEXT NOT NULL,
    title       TEXT NOT NULL,
    body        TEXT NOT NULL,
    task_id     TEXT,
    reminder_id TEXT,
    -- Reminder id + fire count: a redelivered event adds nothing.
    dedup_key   TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    read_at     INTEGER
);
CREATE UNIQUE INDEX notifications_dedup ON notifications (user_id, dedup_key);
CREATE INDEX notifications_user_created ON notifications (user_id, created_at, id);
CREATE INDEX notifications_user_unread ON notifications (user_id) WHERE read_at IS NULL;

CREATE TABLE notification_preferences (
    user_id       TEXT PRIMARY KEY NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    in_app        INTEGER NOT NULL,
    email         INTEGER NOT NULL,
    webhook       INTEGER NOT NULL,
    email_address TEXT,
    quiet_start   TEXT,
    quiet_end     TEXT,
    time_zone     TEXT,
    updated_at    INTEGER NOT NULL
);

CREATE TABLE webhook_endpoints (
    id          TEXT PRIMARY KEY NOT NULL,
    user_id     TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    url         TEXT NOT NULL,
    -- The signing secret; it must be readable to sign, so it is stored as given.
    secret      TEXT NOT NULL,
    description TEXT NOT NULL,
    enabled     INTEGER NOT NULL,
    created_at  INTEGER NOT NULL
);
CREATE INDEX webhook_endpoints_user ON webhook_endpoints (user_id, created_at);

-- One delivery of one firing of a reminder over one channel (and endpoint).
CREATE TABLE deliveries (
    id              TEXT PRIMARY KEY NOT NULL,
    user_id         TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    reminder_id     TEXT NOT NULL,
    task_id         TEXT NOT NULL,
    channel         TEXT NOT NULL CHECK (channel IN ('in_app', 'webhook', 'email')),
    endpoint_id     TEXT,
    -- Reminder id + fire count + channel + endpoint: never the same reminder twice on a channel.
    idempotency_key TEXT NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('pending', 'sending', 'sent', 'dead')),
    payload         TEXT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    lease_token     TEXT,
    lease_until     INTEGER,
    last_error      TEXT,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    sent_at         INTEGER
);
CREATE UNIQUE INDEX deliveries_idempotency ON deliveries (idempotency_key);
CREATE INDEX deliveries_pending ON deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX deliveries_leased ON deliveries (lease_until) WHERE status = 'sending';
CREATE INDEX deliveries_user_status ON deliveries (user_id, status, created_at);

CREATE TABLE delivery_attempts (
    delivery_id TEXT NOT NULL REFERENCES deliveries (id) ON DELETE CASCADE,
    attempt     INTEGER NOT NULL,
    at          INTEGER NOT NULL,
    outcome     TEXT NOT NULL CHECK (outcome IN ('sent', 'retry', 'dead', 'deferred')),
    error       TEXT,
    duration_ms INTEGER NOT NULL,
    PRIMARY KEY (delivery_id, attempt)
);
