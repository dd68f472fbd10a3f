#!/usr/bin/env bash
# EXPLAIN (ANALYZE, BUFFERS) of the task listing queries the PostgreSQL store issues, at 1 M
# tasks, written into docs/postgres-explain.md between the GENERATED markers.
#
# Creates a scratch database, applies migrations/postgres/*.sql in order, bulk-loads synthetic
# rows with generate_series (1 000 users; one of them owns 100 000 tasks, the other 900 000 are
# spread over the rest), runs each query as a prepared statement with the same parameters the
# store binds, and drops the database (also on failure). Takes about two minutes.
#
#   scripts/explain-postgres.sh            # admin URL: $TASKFLOW_TEST_POSTGRES_URL or
#                                          # postgres://postgres@127.0.0.1:5432/postgres
#   TASKS=200000 scripts/explain-postgres.sh   # smaller run (the doc says how many rows)
#
# Exits 1 when a plan of a listing query contains a sequential scan of tasks or task_tags.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
doc="$root/docs/postgres-explain.md"
admin="${TASKFLOW_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
tasks="${TASKS:-1000000}"
users=1000
hot_tasks=$((tasks / 10))
db="taskflow_explain_$$_$(date +%s)"
url="${admin%/*}/$db"
hot_user='00000000-0000-4000-8000-000000000001'
typical_user='00000000-0000-4000-8000-000000000002'

command -v psql >/dev/null || { echo "psql is required" >&2; exit 2; }
started=$(date +%s)

cleanup() { psql "$admin" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true; }
trap cleanup EXIT
psql "$admin" -qc "CREATE DATABASE $db"

q() { psql "$url" -v ON_ERROR_STOP=1 -qX "$@"; }

echo "migrating $db" >&2
for migration in "$root"/crates/taskflow-store/migrations/postgres/*.sql; do
  q -f "$migration" >/dev/null
done

echo "loading $tasks tasks for $users users" >&2
q <<SQL
SET maintenance_work_mem = '256MB';
SET synchronous_commit = off;
-- Secondary indexes are dropped for the load and rebuilt afterwards (much faster than
-- maintaining them row by row); constraint indexes stay.
CREATE TEMP TABLE saved_indexes AS
  SELECT indexname, indexdef FROM pg_indexes i
  WHERE schemaname = 'public' AND tablename IN ('tasks', 'task_tags')
    AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conname = i.indexname);
DO \$\$ DECLARE r record; BEGIN
  FOR r IN SELECT indexname FROM saved_indexes LOOP EXECUTE format('DROP INDEX %I', r.indexname); END LOOP;
END \$\$;

CREATE FUNCTION pg_temp.user_id(n bigint) RETURNS uuid LANGUAGE sql IMMUTABLE
  AS \$\$ SELECT ('00000000-0000-4000-8000-' || lpad(to_hex(n), 12, '0'))::uuid \$\$;

INSERT INTO users (id, email, password_hash, time_zone, created_at)
SELECT pg_temp.user_id(n), 'user' || n || '@example.com', '', 'UTC', now() - interval '3 years'
FROM generate_series(1, $users) AS n;

-- Task n: owner 1 for the first $hot_tasks, else users 2..$users in turn; created one minute
-- apart (so the newest are the highest n); 70 % pending, 25 % completed, 5 % skipped; 20 %
-- without a due date, the rest within a year either side of now; 0-2 of 40 tags, plus the
-- rare tag "errand" on one task in 2 000; titles of two words from a 99-word vocabulary.
WITH words AS (
  SELECT ARRAY['report','review','budget','meeting','call','email','invoice','plan','draft','design',
    'deploy','release','backup','server','garden','plants','groceries','laundry','dentist','doctor',
    'gym','run','swim','read','book','paper','slides','demo','client','customer','payroll','taxes',
    'insurance','car','bike','repair','paint','clean','kitchen','garage','birthday','gift','party',
    'flight','hotel','visa','passport','school','homework','exam','lecture','thesis','research','data',
    'model','train','test','bug','feature','refactor','database','index','query','migration','schema',
    'backlog','sprint','retro','standup','roadmap','strategy','hiring','interview','onboarding','offsite',
    'café','naïve','résumé','façade','piñata','über','smörgåsbord','jalapeño','crème','brûlée',
    'water','coffee','tea','lunch','dinner','breakfast','walk','dog','cat','vet','bank','loan','rent','bills']
    AS w
)
INSERT INTO tasks (id, user_id, title, title_key, description, status, priority, tags, due_at,
                   time_zone, occurrence_index, created_at, updated_at, completed_at, version)
SELECT gen_random_uuid(), owner, title, lower(title), 'notes about ' || title, status, (n % 5)::smallint,
       tags, due, 'UTC', 0, created, created + interval '1 hour',
       CASE WHEN status <> 'pending' THEN created + interval '2 hours' END, 1
FROM (
  SELECT n,
         CASE WHEN n <= $hot_tasks THEN pg_temp.user_id(1) ELSE pg_temp.user_id(2 + n % ($users - 1)) END AS owner,
         initcap(w[1 + (n * 13) % array_length(w, 1)]) || ' ' || w[1 + (n * 29 + 7) % array_length(w, 1)] || ' ' || n AS title,
         CASE WHEN n % 20 < 14 THEN 'pending' WHEN n % 20 < 19 THEN 'completed' ELSE 'skipped' END AS status,
         CASE n % 3 WHEN 0 THEN '{}'::text[]
                    WHEN 1 THEN ARRAY['tag' || (n * 31) % 40]
                    ELSE ARRAY['tag' || (n * 31) % 40, 'tag' || ((n * 31) % 40 + 1 + n % 39) % 40] END
           || CASE WHEN n % 2000 = 0 THEN ARRAY['errand'] ELSE '{}'::text[] END AS tags,
         CASE WHEN n % 5 = 0 THEN NULL
              ELSE date_trunc('second', now()) + ((n * 7919) % 730 - 365) * interval '1 day'
                   + (n % 86400) * interval '1 second' END AS due,
         date_trunc('second', now()) - ($tasks - n) * interval '1 minute' AS created
  FROM generate_series(1::bigint, $tasks) AS n, words
) AS g;

INSERT INTO task_tags (task_id, user_id, tag) SELECT id, user_id, unnest(tags) FROM tasks;

DO \$\$ DECLARE r record; BEGIN
  FOR r IN SELECT indexdef FROM saved_indexes LOOP EXECUTE r.indexdef; END LOOP;
END \$\$;
VACUUM (ANALYZE) users, tasks, task_tags;
SQL

# The listing query exactly as `list_tasks` in crates/taskflow-store/src/postgres/tasks.rs builds
# it (keep in step): inner select with the filters, outer ORDER BY the sort key and id, LIMIT
# page size + 1. Parameters are typed as sqlx binds them.
columns="t.id, t.user_id, t.title, t.description, t.status, t.priority, t.tags, t.due_at, t.time_zone, t.recurrence_rule, t.recurrence_anchor, t.recurrence_dtstart, t.series_id, t.occurrence_index, t.created_at, t.updated_at, t.completed_at, t.version, t.reminders, t.ical_uid"
plain="SELECT * FROM (SELECT $columns, t.title_key, 0::float8 AS score FROM tasks t WHERE t.user_id = \$1"
search_query="(SELECT to_tsquery('simple', string_agg(lexeme || ':*', ' & ' ORDER BY n) FILTER (WHERE folded <> '')) AS query,
            coalesce(bool_and(CASE WHEN folded = '' THEN false
                                   ELSE numnode(to_tsquery('simple', lexeme)) > 0 END), false) AS complete
     FROM (SELECT n, folded, '''' || replace(replace(folded, '\\', '\\\\'), '''', '''''') || '''' AS lexeme
           FROM (SELECT n, taskflow_fold(term) AS folded FROM unnest(\$1::text[]) WITH ORDINALITY AS u(term, n)) AS f) AS l) AS s"
search_query="$(printf '%s' "$search_query" | tr -s '\n ' '  ')"  # one line: `read` splits entries on lines
# A search chooses its page from the matches' sort keys, then reads the page's rows whole.
searching="SELECT $columns, page.title_key, page.score FROM (SELECT * FROM (SELECT t.id, t.due_at, t.priority, t.created_at, t.updated_at, t.title_key, (-ts_rank_cd('{0.0, 0.1, 0.5, 1.0}'::float4[], t.search, s.query, 1))::float8 AS score FROM tasks t, $search_query WHERE t.user_id = \$2 AND s.complete AND t.search @@ s.query"
search_page=") AS page JOIN tasks t ON t.id = page.id ORDER BY page.score ASC, page.id ASC"

# name # title # PREPARE types # SQL # EXECUTE arguments ('#'-separated)
queries=(
  "default#Default sort (created_at desc), first page#uuid, int8#$plain) AS page WHERE true ORDER BY created_at DESC, id DESC LIMIT \$2#'$hot_user', 51"
  "default-typical#Default sort, a typical user (~900 tasks)#uuid, int8#$plain) AS page WHERE true ORDER BY created_at DESC, id DESC LIMIT \$2#'$typical_user', 51"
  "default-page2#Default sort, a later page (keyset cursor)#uuid, timestamptz, uuid, int8#$plain) AS page WHERE true AND ((created_at, id) < (\$2, \$3)) ORDER BY created_at DESC, id DESC LIMIT \$4#'$hot_user', now() - interval '1 year', 'ffffffff-ffff-4fff-bfff-ffffffffffff', 51"
  "due-asc#due_at asc (nulls last)#uuid, int8#$plain) AS page WHERE true ORDER BY due_at ASC NULLS LAST, id ASC LIMIT \$2#'$hot_user', 51"
  "due-desc#due_at desc (nulls last)#uuid, int8#$plain) AS page WHERE true ORDER BY due_at DESC NULLS LAST, id DESC LIMIT \$2#'$hot_user', 51"
  "priority#priority desc#uuid, int8#$plain) AS page WHERE true ORDER BY priority DESC, id DESC LIMIT \$2#'$hot_user', 51"
  "title#title asc#uuid, int8#$plain) AS page WHERE true ORDER BY title_key ASC, id ASC LIMIT \$2#'$hot_user', 51"
  "tag#Tag filter, a common tag (~4 % of tasks), default sort#uuid, text[], int8#$plain AND EXISTS (SELECT 1 FROM task_tags tt WHERE tt.task_id = t.id AND tt.tag = ANY(\$2::text[]))) AS page WHERE true ORDER BY created_at DESC, id DESC LIMIT \$3#'$hot_user', '{tag7}', 51"
  "tag-rare#Tag filter, a rare tag (1 task in 2 000), default sort#uuid, text[], int8#$plain AND EXISTS (SELECT 1 FROM task_tags tt WHERE tt.task_id = t.id AND tt.tag = ANY(\$2::text[]))) AS page WHERE true ORDER BY created_at DESC, id DESC LIMIT \$3#'$hot_user', '{errand}', 51"
  "overdue#Overdue (pending, due before now), due_at asc#uuid, timestamptz, int8#$plain AND t.status = 'pending' AND t.due_at < \$2) AS page WHERE true ORDER BY due_at ASC NULLS LAST, id ASC LIMIT \$3#'$hot_user', now(), 51"
  "search#Full-text search \"report\", by relevance#text[], uuid, int8#$searching) AS page WHERE true ORDER BY score ASC, id ASC LIMIT \$3$search_page#'{report}', '$hot_user', 51"
  "search-accent#Full-text search \"cafe\" (accent-folded prefix: matches café), by relevance#text[], uuid, int8#$searching) AS page WHERE true ORDER BY score ASC, id ASC LIMIT \$3$search_page#'{cafe}', '$hot_user', 51"
)

out="$(mktemp)"
trap 'rm -f "$out"; cleanup' EXIT
{
  echo "Generated by \`scripts/explain-postgres.sh\` on $(date -u +%Y-%m-%d) against"
  echo "$(psql "$url" -AtXc 'SHOW server_version') with $tasks tasks, $users users (the listed user owns $hot_tasks)"
  echo "and $(psql "$url" -AtXc 'SELECT count(*) FROM task_tags') tag rows. Plans are of the prepared statement's custom plan"
  echo "(as the store's first executions get); timings are from a 2-core test machine."
} >"$out"
seq_scans=0
for entry in "${queries[@]}"; do
  IFS='#' read -r name title types sql args <<<"$entry"
  plan="$(q -At <<SQL
SET max_parallel_workers_per_gather = 0;
PREPARE listing($types) AS $sql;
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) EXECUTE listing($args);
SQL
)"
  if grep -Eq 'Seq Scan on (tasks|task_tags)' <<<"$plan"; then
    seq_scans=$((seq_scans + 1))
    echo "SEQUENTIAL SCAN in $name" >&2
  fi
  {
    echo
    echo "### $title"
    echo
    echo '```'
    echo "$plan"
    echo '```'
  } >>"$out"
done

python3 - "$doc" "$out" <<'PY'
import sys
doc_path, plans_path = sys.argv[1], sys.argv[2]
begin, end = "<!-- BEGIN GENERATED PLANS -->", "<!-- END GENERATED PLANS -->"
doc = open(doc_path, encoding="utf-8").read()
plans = open(plans_path, encoding="utf-8").read().rstrip("\n")
head, rest = doc.split(begin, 1)
_, tail = rest.split(end, 1)
open(doc_path, "w", encoding="utf-8").write(f"{head}{begin}\n{plans}\n{end}{tail}")
PY
echo "wrote $doc in $(( $(date +%s) - started )) s" >&2
[ "$seq_scans" = 0 ] || { echo "$seq_scans listing plans scan tasks or task_tags sequentially" >&2; exit 1; }
