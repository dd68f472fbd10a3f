-- The transactional outbox, consumer bookkeeping, dead letters and the audit log.

-- Events written in the same transaction as the change that caused them. `seq` is commit order:
-- writers take a transaction-scoped advisory lock before their first outbox row and hold it to
-- their commit (see `postgres/events.rs`), so a reader never sees a row while a smaller `seq`
-- is still uncommitted. `payload` is text, kept byte for byte (replays compare it verbatim).
CREATE TABLE outbox (
    seq           bigint GENERATED ALWAYS AS IDENTITY,
    event_id      text NOT NULL,
    topic         text NOT NULL,
    partition_key text NOT NULL,
    event_type    text NOT NULL,
    payload       text NOT NULL,
    created_at    timestamptz NOT NULL,
    published_at  timestamptz,
    CONSTRAINT outbox_pkey PRIMARY KEY (seq)
) WITH (autovacuum_vacuum_scale_factor = 0.02, autovacuum_vacuum_insert_scale_factor = 0.05);
CREATE INDEX outbox_unpublished ON outbox (seq) WHERE published_at IS NULL;
CREATE INDEX outbox_topic ON outbox (topic, seq);
CREATE INDEX outbox_published ON outbox (published_at) WHERE published_at IS NOT NULL;

-- How far each consumer group of the in-process bus has read each topic.
CREATE TABLE consumer_offsets (
    consumer_group text NOT NULL,
    topic          text NOT NULL,
    seq            bigint NOT NULL,
    CONSTRAINT consumer_offsets_pkey PRIMARY KEY (consumer_group, topic)
);

-- Events a consumer has applied; written in the same transaction as the consumer's effect, so a
-- redelivered event has no second effect.
CREATE TABLE processed_events (
    consumer     text NOT NULL,
    event_id     text NOT NULL,
    processed_at timestamptz NOT NULL,
    CONSTRAINT processed_events_pkey PRIMARY KEY (consumer, event_id)
);
CREATE INDEX processed_events_age ON processed_events (processed_at);

-- Events a consumer gave up on after its last attempt. `payload` is text: a poison message
-- need not be valid JSON.
CREATE TABLE dead_letters (
    id          uuid NOT NULL,
    consumer    text NOT NULL,
    topic       text NOT NULL,
    event_id    text NOT NULL,
    event_type  text NOT NULL,
    payload     text NOT NULL,
    error       text NOT NULL,
    attempts    bigint NOT NULL,
    created_at  timestamptz NOT NULL,
    replayed_at timestamptz,
    CONSTRAINT dead_letters_pkey PRIMARY KEY (id)
);
CREATE INDEX dead_letters_created ON dead_letters (created_at, id);

-- Append-only history of every task event, per owner.
CREATE TABLE audit_log (
    seq         bigint GENERATED ALWAYS AS IDENTITY,
    event_id    text NOT NULL,
    user_id     uuid NOT NULL,
    task_id     uuid NOT NULL,
    event_type  text NOT NULL,
    occurred_at timestamptz NOT NULL,
    data        jsonb NOT NULL,
    CONSTRAINT audit_log_pkey PRIMARY KEY (seq),
    CONSTRAINT audit_log_event_id UNIQUE (event_id)
);
CREATE INDEX audit_log_user_task ON audit_log (user_id, task_id, seq);

CREATE FUNCTION audit_log_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the audit log is append-only' USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER audit_log_no_update BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only();
