-- Listings by due date put tasks without one last. SQLite orders NULL first, so an index on
-- `due_at` could not serve `ORDER BY (due_at IS NULL), due_at` and every such listing sorted all
-- of the user's tasks (about 5 ms per request at 5 000 tasks). These indexes hold the key the
-- store now sorts and filters by, `coalesce(due_at, 9223372036854775807)`, instead of `due_at`;
-- the store writes its due ranges against the same expression so they still use an index.
DROP INDEX tasks_user_due;
DROP INDEX tasks_user_status_due;
CREATE INDEX tasks_user_due_key
    ON tasks (user_id, coalesce(due_at, 9223372036854775807), id);
CREATE INDEX tasks_user_status_due_key
    ON tasks (user_id, status, coalesce(due_at, 9223372036854775807), id);
