-- The relay publishes the outbox in seq order (one writer assigns seqs in commit order), so what
-- it has published is one number: every row up to `published_through`. Recording that instead
-- of stamping each row saves rewriting every outbox row (payload and all) and maintaining two
-- partial indexes. `published_at` stays for rows written before this migration and is no longer
-- set; pruning goes by `created_at`.
CREATE TABLE outbox_relay (
    id                INTEGER PRIMARY KEY CHECK (id = 1),
    published_through INTEGER NOT NULL
);
INSERT INTO outbox_relay (id, published_through)
    VALUES (1, COALESCE((SELECT MAX(seq) FROM outbox WHERE published_at IS NOT NULL), 0));
DROP INDEX outbox_unpublished;
DROP INDEX outbox_published;
