-- Tag filters look tags up by (task, tag) for each candidate task, which suits common tags; for
-- a rare tag the planner prefers to find its rows first, and without an index led by `tag`
-- that was a sequential scan of every user's tag rows (see docs/postgres-explain.md). The
-- listing's EXISTS does not constrain `task_tags.user_id`, so `task_tags_user_tag` cannot serve it.
CREATE INDEX task_tags_tag ON task_tags (tag, task_id);
