-- The transactional outbox, consumer bookkeeping, dead letters and the audit log.

-- Events written in the same transaction as the change that caused them. `seq` is commit order.
-- The in-process bus reads this table as its log; external buses get rows through the relay.
CREATE TABLE outbox (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id      TEXT NOT NULL,
    topic         TEXT NOT NULL,
    partition_key TEXT NOT NULL,
    event_type    TEXT NOT NULL,
    payload       TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    published_at  INTEGER
);
CREATE INDEX outbox_unpublished ON outbox (seq) WHERE published_at IS NULL;
CREATE INDEX outbox_topic ON outbox (topic, seq);
CREATE INDEX outbox_published ON outbox (published_at) WHERE published_at IS NOT NULL;

-- How far each consumer group of the in-process bus has read each topic.
CREATE TABLE consumer_offsets (
    consumer_group TEXT NOT NULL,
    topic          TEXT NOT NULL,
    seq            INTEGER NOT NULL,
    PRIMARY KEY (consumer_group, topic)
) WITHOUT ROWID;

-- Events a consumer has applied; written in the same transaction as the consumer's effect, so a
-- redelivered event has no second effect.
CREATE TABLE processed_events (
    consumer     TEXT NOT NULL,
    event_id     TEXT NOT NULL,
    processed_at INTEGER NOT NULL,
    PRIMARY KEY (consumer, event_id)
) WITHOUT ROWID;
CREATE INDEX processed_events_age ON processed_events (processed_at);

-- Events a consumer gave up on after its last attempt.
CREATE TABLE dead_letters (
    id          TEXT PRIMARY KEY NOT NULL,
    consumer    TEXT NOT NULL,
    topic       TEXT NOT NULL,
    event_id    TEXT NOT NULL,
    event_type  TEXT NOT NULL,
    payload     TEXT NOT NULL,
    error       TEXT NOT NULL,
    attempts    INTEGER NOT NULL,
    created_at  INTEGER NOT NULL,
    replayed_at INTEGER
);
CREATE INDEX dead_letters_created ON dead_letters (created_at, id);

-- Append-only history of every task event, per owner.
CREATE TABLE audit_log (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id   TEXT NOT NULL UNIQUE,
    user_id    TEXT NOT NULL,
    task_id    TEXT NOT NULL,
    event_type TEXT NOT NULL,
    occurred_at INTEGER NOT NULL,
    data       TEXT NOT NULL
);
CREATE INDEX audit_log_user_task ON audit_log (user_id, task_id, seq);
CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log BEGIN
    SELECT RAISE(ABORT, 'the audit log is append-only');
END;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log BEGIN
    SELECT RAISE(ABORT, 'the audit log is append-only');
END;
