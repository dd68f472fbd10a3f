-- A user's whole audit log is read a page at a time, oldest or newest first, from a cursor
-- (`GET /api/v1/audit` without `task_id`). `audit_log_user_task` ordered entries by task first,
-- so those reads sorted every entry of the user; `audit_log_user_seq` holds them in log order.
-- A task's history is read through `audit_log_task` instead of `audit_log_user_task` (the
-- owner is checked on each entry row, which the read fetches anyway): most task ids grow with time
-- (UUIDv7), so a new task's entries append at one end of that index. Building the indexes
-- blocks only the audit consumer's inserts (they wait, then continue); no request writes here.
DROP INDEX audit_log_user_task;
CREATE INDEX audit_log_user_seq ON audit_log (user_id, seq);
CREATE INDEX audit_log_task ON audit_log (task_id, seq);
