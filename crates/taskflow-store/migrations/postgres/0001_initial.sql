-- Accounts, personal access tokens and tasks. Instants are `timestamptz` (microseconds),
-- identifiers `uuid` (which compares like the SQLite backend's lower-case UUID text).
-- Sort keys that are text use COLLATE "C" so that ordering, keyset comparisons and their
-- indexes follow code points exactly as the SQLite backend's BINARY collation does, whatever
-- the database's default collation is.

-- Accent folding for full-text search. `unaccent` is a trusted extension since PostgreSQL 13:
-- the database owner may create it without superuser rights. When it cannot be created
-- (no CREATE privilege on the database, or the contrib package is not installed), search folds
-- the common Latin diacritics with `translate` instead, so the schema installs everywhere.
-- Either way `taskflow_fold` is IMMUTABLE (the stored `tasks.search` column needs that) and
-- pins its search_path, so a dump restored with an empty search_path still computes it.
-- Note: the choice is made once. Installing `unaccent` later means replacing `taskflow_fold`
-- and recomputing `tasks.search` (e.g. `UPDATE tasks SET title = title`).
DO $migration$
DECLARE
    extension_schema text;
BEGIN
    BEGIN
        CREATE EXTENSION IF NOT EXISTS unaccent;
    EXCEPTION WHEN insufficient_privilege OR undefined_file OR feature_not_supported THEN
        RAISE NOTICE 'unaccent is unavailable (%); search folds common Latin accents only', SQLERRM;
    END;
    SELECT n.nspname INTO extension_schema
    FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
    WHERE e.extname = 'unaccent';
    IF extension_schema IS NOT NULL THEN
        EXECUTE format(
            'CREATE FUNCTION taskflow_fold(input text) RETURNS text
             LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE SET search_path FROM CURRENT
             AS %L',
            format('SELECT lower(%I.unaccent(%L::regdictionary, input))',
                   extension_schema, quote_ident(extension_schema) || '.unaccent'));
    ELSE
        CREATE FUNCTION taskflow_fold(input text) RETURNS text
        LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE SET search_path FROM CURRENT
        AS $fold$
            SELECT lower(translate(input,
                'ÀÁÂÃÄÅĀĂĄàáâãäåāăąÇĆĈĊČçćĉċčĎĐďđÈÉÊËĒĔĖĘĚèéêëēĕėęěĜĞĠĢĝğġģĤĦĥħÌÍÎÏĨĪĬĮİìíîïĩīĭįıĴĵĶķĹĻĽĿŁĺļľŀłÑŃŅŇñńņňÒÓÔÕÖØŌŎŐòóôõöøōŏőŔŖŘŕŗřŚŜŞŠśŝşšȘșŢŤŦţťŧȚțÙÚÛÜŨŪŬŮŰŲùúûüũūŭůűųŴŵÝŶŸýÿŷŹŻŽźżž',
                'AAAAAAAAAaaaaaaaaaCCCCCcccccDDddEEEEEEEEEeeeeeeeeeGGGGggggHHhhIIIIIIIIIiiiiiiiiiJjKkLLLLLlllllNNNNnnnnOOOOOOOOOoooooooooRRRrrrSSSSssssSsTTTtttTtUUUUUUUUUUuuuuuuuuuuWwYYYyyyZZZzzz'))
        $fold$;
    END IF;
END
$migration$;

-- The weighted document searched: title (A), tags (B), description (C), accent-folded, with the
-- `simple` configuration (no stemming, no stop words: prefix matching works on every word).
CREATE FUNCTION taskflow_search_document(title text, tags text[], description text)
RETURNS tsvector
LANGUAGE sql IMMUTABLE PARALLEL SAFE SET search_path FROM CURRENT
AS $$
    SELECT setweight(to_tsvector('simple'::regconfig, taskflow_fold(coalesce(title, ''))), 'A')
        || setweight(to_tsvector('simple'::regconfig, taskflow_fold(array_to_string(tags, ' '))), 'B')
        || setweight(to_tsvector('simple'::regconfig, taskflow_fold(coalesce(description, ''))), 'C')
$$;

CREATE TABLE users (
    id               uuid NOT NULL,
    email            text NOT NULL,
    password_hash    text NOT NULL,
    display_name     text,
    time_zone        text NOT NULL,
    is_admin         boolean NOT NULL DEFAULT false,
    external_subject text,
    created_at       timestamptz NOT NULL,
    CONSTRAINT users_pkey PRIMARY KEY (id)
);
CREATE UNIQUE INDEX users_email ON users (email);
CREATE UNIQUE INDEX users_external_subject ON users (external_subject) WHERE external_subject IS NOT NULL;

CREATE TABLE access_tokens (
    id           uuid NOT NULL,
    user_id      uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name         text NOT NULL,
    token_hash   bytea NOT NULL,
    prefix       text NOT NULL,
    created_at   timestamptz NOT NULL,
    last_used_at timestamptz,
    expires_at   timestamptz,
    CONSTRAINT access_tokens_pkey PRIMARY KEY (id)
);
CREATE UNIQUE INDEX access_tokens_hash ON access_tokens (token_hash);
CREATE INDEX access_tokens_user ON access_tokens (user_id, created_at);

CREATE TABLE tasks (
    id           uuid NOT NULL,
    user_id      uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    title        text NOT NULL,
    -- Lower-cased in Rust (`query::title_key`), exactly like the SQLite backend.
    title_key    text COLLATE "C" NOT NULL,
    description  text NOT NULL,
    status       text NOT NULL CHECK (status IN ('pending', 'completed', 'skipped')),
    priority     smallint NOT NULL CHECK (priority BETWEEN 0 AND 4),
    -- In the order the user gave them; `task_tags` holds one row per tag for filters and counts.
    tags         text[] NOT NULL DEFAULT '{}',
    due_at       timestamptz,
    time_zone    text NOT NULL,
    -- Recurrence: normalised RRULE, anchor, local wall-clock series start (all or none).
    recurrence_rule    text,
    recurrence_anchor  text CHECK (recurrence_anchor IN ('due', 'completion')),
    recurrence_dtstart timestamp,
    series_id          uuid,
    occurrence_index   bigint NOT NULL DEFAULT 0 CHECK (occurrence_index BETWEEN 0 AND 4294967295),
    created_at   timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL,
    completed_at timestamptz,
    version      bigint NOT NULL,
    search       tsvector GENERATED ALWAYS AS (taskflow_search_document(title, tags, description)) STORED,
    CONSTRAINT tasks_id PRIMARY KEY (id),
    CONSTRAINT tasks_recurrence_complete CHECK (
        (recurrence_rule IS NULL) = (recurrence_anchor IS NULL)
        AND (recurrence_rule IS NULL) = (recurrence_dtstart IS NULL))
);
CREATE INDEX tasks_user_created ON tasks (user_id, created_at, id);
CREATE INDEX tasks_user_updated ON tasks (user_id, updated_at, id);
CREATE INDEX tasks_user_due ON tasks (user_id, due_at, id);
CREATE INDEX tasks_user_priority ON tasks (user_id, priority, id);
CREATE INDEX tasks_user_title ON tasks (user_id, title_key, id);
CREATE INDEX tasks_user_status_due ON tasks (user_id, status, due_at);
CREATE INDEX tasks_search ON tasks USING gin (search);
-- At most one task per (series, occurrence): a retried or concurrent completion cannot create two.
CREATE UNIQUE INDEX tasks_series_occurrence ON tasks (series_id, occurrence_index) WHERE series_id IS NOT NULL;

CREATE TABLE task_tags (
    task_id uuid NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    user_id uuid NOT NULL,
    tag     text COLLATE "C" NOT NULL,
    CONSTRAINT task_tags_pkey PRIMARY KEY (task_id, tag)
);
CREATE INDEX task_tags_user_tag ON task_tags (user_id, tag, task_id);
