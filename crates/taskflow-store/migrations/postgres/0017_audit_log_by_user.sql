-- A user's whole audit log is read a page at a time, oldest or newest first, from a cursor
-- (`GET /api/v1/audit` without `task_id`). `audit_log_user_task` orders by task first, so those
-- reads sorted every entry of the user; this index holds them in log order. Building it blocks
-- only the audit consumer's inserts (they wait, then continue); no request writes this table.
CREATE INDEX audit_log_user_seq ON audit_log (user_id, seq);
