#!/usr/bin/env bash
# Re-runs the last sync of a held benchmark cluster with the real worker, to compare a change
# (schema or build) A/B on the same data. Not part of the benchmark table.
#
#   BENCH_HOLD=1 ./bench/run.sh --apply-only=100000      # prints "bench: HOLD port P dir D"
#   bench/lab/rerun-step.sh D P undo                      # once: undo the last session's writes
#   bench/lab/rerun-step.sh D P run [rounds]              # trigger, time, undo; per round
#
# The held cluster's replay server still serves the data after the last step, so once that
# step's writes are undone, a new sync writes them again: the same versions, changes and
# timeline rows each round. `undo` deletes the last session's changes and new versions, reopens
# the versions it closed, refreshes the timeline of its employees and deletes the session and
# its logs (committed). Each `run` round starts from a checkpoint, written back to disk, and a
# VACUUM ANALYZE, as the benchmark's steps do, then prints the worker's SQL time from
# pg_stat_statements (timeline refresh apart) and undoes the sync.
set -euo pipefail
dir=$1 port=$2 cmd=$3
psql_bin=${EMPLOYES_SYNC_PG_BIN:-/opt/pgb/usr/lib/postgresql/15/bin}/psql
q() {
  if [ "$(id -u)" -eq 0 ]; then
    runuser -u postgres -- "$psql_bin" -h "$dir" -p "$port" -d postgres -X -q -A -t -v ON_ERROR_STOP=1 "$@"
  else
    "$psql_bin" -h "$dir" -p "$port" -d postgres -X -q -A -t -v ON_ERROR_STOP=1 "$@"
  fi
}

undo() {
  q <<'SQL'
BEGIN;
CREATE TEMP TABLE last_session AS SELECT id FROM employes_sync_sessions ORDER BY created_at DESC LIMIT 1;
CREATE TEMP TABLE touched AS
  SELECT DISTINCT employee_id FROM employes_raw_data
   WHERE first_session_id IN (SELECT id FROM last_session) OR closed_session_id IN (SELECT id FROM last_session);
-- The session's changes go first, so no reference to its versions is left: skip the foreign-key
-- triggers, which would scan employes_changes for every deleted version (raw_from_id and raw_to_id
-- have no index of their own).
SET LOCAL session_replication_role = replica;
DELETE FROM employes_changes WHERE session_id IN (SELECT id FROM last_session);
DELETE FROM employes_raw_data WHERE first_session_id IN (SELECT id FROM last_session);
UPDATE employes_raw_data SET valid_to = NULL, closed_session_id = NULL
 WHERE closed_session_id IN (SELECT id FROM last_session);
SET LOCAL session_replication_role = origin;
SELECT employes_timeline_refresh((SELECT array_agg(employee_id) FROM touched)) \g /dev/null
DELETE FROM employes_sync_logs WHERE session_id IN (SELECT id FROM last_session);
DO $$ BEGIN  -- its events (0.6.0 on)
  IF to_regclass('employes_events') IS NOT NULL THEN
    DELETE FROM employes_webhook_deliveries WHERE event_id IN
      (SELECT id FROM employes_events WHERE session_id IN (SELECT id FROM last_session));
    DELETE FROM employes_events WHERE session_id IN (SELECT id FROM last_session);
  END IF;
END $$;
DELETE FROM employes_sync_sessions WHERE id IN (SELECT id FROM last_session);
COMMIT;
VACUUM ANALYZE;
SQL
}

case $cmd in
undo) undo ;;
run)
  rounds=${4:-3}
  for _ in $(seq "$rounds"); do
    q -c CHECKPOINT
    sync
    q -c 'VACUUM ANALYZE' -c 'SELECT pg_stat_statements_reset()' >/dev/null
    id=$(q -c "SELECT id FROM employes_sync_trigger('manual', 'lab')")
    q -c "SELECT status || ' ' || versions_written || ' versions ' || changes_detected || ' changes'
            FROM employes_sync_wait('$id', 600)" | tr '\n' ' '
    q -c "SELECT 'sql ' || round(sum(total_exec_time + total_plan_time) FILTER (WHERE query !~ 'employes_timeline_(refresh|apply)')::numeric)
                 || ' ms, timeline ' || round(sum(total_exec_time + total_plan_time) FILTER (WHERE query ~ 'employes_timeline_(refresh|apply)')::numeric)
                 || ' ms, total ' || round(sum(total_exec_time + total_plan_time)::numeric) || ' ms'
            FROM pg_stat_statements
           WHERE query NOT ILIKE '%pg_stat_statements%' AND query NOT ILIKE '%employes_sync_wait%'
             AND query NOT ILIKE '%employes_sync_trigger%' AND query NOT ILIKE 'VACUUM%' AND query NOT ILIKE 'CHECKPOINT%'"
    undo
  done
  ;;
*)
  echo "usage: $0 DIR PORT undo | run [rounds]" >&2
  exit 2
  ;;
esac
