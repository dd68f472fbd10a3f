-- Reminders and notifications. The `reminders` table is the scheduler's truth: one row per
-- reminder of one task occurrence; the plan that produces them is `tasks.reminders` (JSON).

ALTER TABLE tasks ADD COLUMN reminders jsonb NOT NULL DEFAULT '[]';

CREATE TABLE reminders (
    id          uuid PRIMARY KEY,
    user_id     uuid NOT NULL,
    task_id     uuid NOT NULL,
    -- The plan entry it comes from (`before_due:PT1H`, `at:<instant>`).
    key         text NOT NULL,
    remind_at   timestamptz NOT NULL,
    -- When it fires next: `remind_at`, or later once snoozed.
    fire_at     timestamptz NOT NULL,
    state       text NOT NULL CHECK (state IN ('scheduled', 'firing', 'sent', 'failed', 'cancelled')),
    fire_count  integer NOT NULL DEFAULT 0,
    -- A claim: who holds it and until when (state `firing`).
    lease_token uuid,
    lease_until timestamptz,
    fired_at    timestamptz,
    late_ms     bigint,
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL
);
CREATE UNIQUE INDEX reminders_task_key ON reminders (task_id, key, remind_at);
CREATE INDEX reminders_scheduled ON reminders (fire_at) WHERE state = 'scheduled';
CREATE INDEX reminders_leased ON reminders (lease_until) WHERE state = 'firing';
CREATE INDEX reminders_user_task ON reminders (user_id, task_id);

-- The in-app feed.
CREATE TABLE notifications (
    id          uuid PRIMARY KEY,
    user_id     uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    kind        text NOT NULL,
    title       text NOT NULL,
    body        text NOT NULL,
    task_id     uuid,
    reminder_id uuid,
    -- Reminder id + fire count: a redelivered event adds nothing.
    dedup_key   text NOT NULL,
    created_at  timestamptz NOT NULL,
    read_at     timestamptz
);
CREATE UNIQUE INDEX notifications_dedup ON notifications (user_id, dedup_key);
CREATE INDEX notifications_user_created ON notifications (user_id, created_at, id);
CREATE INDEX notifications_user_unread ON notifications (user_id) WHERE read_at IS NULL;

CREATE TABLE notification_preferences (
    user_id       uuid PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    in_app        boolean NOT NULL,
    email         boolean NOT NULL,
    webhook       boolean NOT NULL,
    email_address text,
    quiet_start   text,
    quiet_end     text,
    time_zone     text,
    updated_at    timestamptz NOT NULL
);

CREATE TABLE webhook_endpoints (
    id          uuid PRIMARY KEY,
    user_id     uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    url         text NOT NULL,
    -- The signing secret; it must be readable to sign, so it is stored as given.
    secret      text NOT NULL,
    description text NOT NULL,
    enabled     boolean NOT NULL,
    created_at  timestamptz NOT NULL
);
CREATE INDEX webhook_endpoints_user ON webhook_endpoints (user_id, created_at);

-- One delivery of one firing of a reminder over one channel (and endpoint).
CREATE TABLE deliveries (
    id              uuid PRIMARY KEY,
    user_id         uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    reminder_id     uuid NOT NULL,
    task_id         uuid NOT NULL,
    channel         text NOT NULL CHECK (channel IN ('in_app', 'webhook', 'email')),
    endpoint_id     uuid,
    -- Reminder id + fire count + channel + endpoint: never the same reminder twice on a channel.
    idempotency_key text NOT NULL,
    status          text NOT NULL CHECK (status IN ('pending', 'sending', 'sent', 'dead')),
    payload         text NOT NULL,
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL,
    lease_token     uuid,
    lease_until     timestamptz,
    last_error      text,
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL,
    sent_at         timestamptz
);
CREATE UNIQUE INDEX deliveries_idempotency ON deliveries (idempotency_key);
CREATE INDEX deliveries_pending ON deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX deliveries_leased ON deliveries (lease_until) WHERE status = 'sending';
CREATE INDEX deliveries_user_status ON deliveries (user_id, status, created_at);

CREATE TABLE delivery_attempts (
    delivery_id uuid NOT NULL REFERENCES deliveries (id) ON DELETE CASCADE,
    attempt     integer NOT NULL,
    at          timestamptz NOT NULL,
    outcome     text NOT NULL CHECK (outcome IN ('sent', 'retry', 'dead', 'deferred')),
    error       text,
    duration_ms bigint NOT NULL,
    PRIMARY KEY (delivery_id, attempt)
);
