#!/usr/bin/env bash
# Replays the writes of the last sync session of a benchmark cluster by hand, to see what each part
# costs and what a schema change would save. Not part of the benchmark table.
#
#   BENCH_HOLD=1 ./bench/run.sh --apply-only=100000      # prints "bench: HOLD port P dir D"
#   bench/lab/replay-step.sh D P save                     # once: keep the last session's rows, undo them
#   bench/lab/replay-step.sh D P run [extra.sql] [rounds] # time the replay; all rolled back
#
# `save` copies the last session's new versions, changes and closed versions into lab_* tables and
# undoes them (committed), so the cluster is back where it was before that sync. Each `run` round
# then starts from a checkpoint and a VACUUM, and in one transaction that is rolled back: runs
# extra.sql (e.g. `ALTER TABLE employes_changes DROP CONSTRAINT employes_changes_session_id_fkey;`
# to see what a foreign key costs), closes the versions, inserts the new versions and their
# changes (plain INSERT ... SELECT from the saved rows, one statement per kind, as the worker
# writes one transaction per kind), and refreshes the timeline of the employees whose history
# changed. Prints the milliseconds of each statement.
set -euo pipefail
dir=$1 port=$2 cmd=$3
psql_bin=${EMPLOYES_SYNC_PG_BIN:-/opt/pgb/usr/lib/postgresql/15/bin}/psql
q() {
  if [ "$(id -u)" -eq 0 ]; then
    runuser -u postgres -- "$psql_bin" -h "$dir" -p "$port" -d postgres -X -q -v ON_ERROR_STOP=1 "$@"
  else
    "$psql_bin" -h "$dir" -p "$port" -d postgres -X -q -v ON_ERROR_STOP=1 "$@"
  fi
}

case $cmd in
save)
  q <<'SQL'
BEGIN;
CREATE TABLE lab_session AS SELECT id FROM employes_sync_sessions ORDER BY created_at DESC LIMIT 1;
CREATE TABLE lab_new AS SELECT * FROM employes_raw_data WHERE first_session_id = (SELECT id FROM lab_session);
CREATE TABLE lab_changes AS SELECT * FROM employes_changes WHERE session_id = (SELECT id FROM lab_session);
CREATE TABLE lab_closed AS SELECT id, kind FROM employes_raw_data WHERE closed_session_id = (SELECT id FROM lab_session);
DELETE FROM employes_changes WHERE session_id = (SELECT id FROM lab_session);
DO $$ BEGIN  -- its events (0.6.0 on), and any delivery of them
  IF to_regclass('employes_events') IS NOT NULL THEN
    DELETE FROM employes_webhook_deliveries WHERE event_id IN
      (SELECT id FROM employes_events WHERE session_id = (SELECT id FROM lab_session));
    DELETE FROM employes_events WHERE session_id = (SELECT id FROM lab_session);
  END IF;
END $$;
DELETE FROM employes_raw_data WHERE first_session_id = (SELECT id FROM lab_session);
UPDATE employes_raw_data SET valid_to = NULL, closed_session_id = NULL WHERE id IN (SELECT id FROM lab_closed);
SELECT employes_timeline_refresh((SELECT array_agg(DISTINCT employee_id) FROM lab_new)) \g /dev/null
COMMIT;
VACUUM ANALYZE;
SELECT kind, count(*) AS versions, (SELECT count(*) FROM lab_changes c WHERE c.kind = n.kind) AS changes
  FROM lab_new n GROUP BY kind ORDER BY kind;
SQL
  ;;
run)
  extra=${4:-/dev/null}
  rounds=${5:-3}
  for _ in $(seq "$rounds"); do
    q -c 'VACUUM employes_raw_data, employes_changes, employes_timeline' -c CHECKPOINT
    # Write back what the checkpoint left in the page cache, so that it does not compete with the round.
    sync
    {
      echo 'BEGIN;'
      cat "$extra"
      echo '\timing on'
      for kind in employee employments; do
        echo "\\echo close $kind"
        echo "UPDATE employes_raw_data SET valid_to = now(), closed_session_id = (SELECT id FROM lab_session)
               WHERE id IN (SELECT id FROM lab_closed WHERE kind = '$kind') AND valid_to IS NULL;"
        echo "\\echo write $kind"
        echo "WITH ins AS (
                INSERT INTO employes_raw_data (kind, employee_id, payload, content_hash, version, valid_from, first_session_id)
                SELECT kind, employee_id, payload, content_hash, version, now(), first_session_id
                  FROM lab_new WHERE kind = '$kind' ORDER BY id
                RETURNING id, employee_id)
              INSERT INTO employes_changes (session_id, employee_id, kind, change_type, field_path, old_value, new_value,
                                            effective_date, detected_at, raw_from_id, raw_to_id)
              SELECT c.session_id, c.employee_id, c.kind, c.change_type, c.field_path, c.old_value, c.new_value,
                     c.effective_date, now(), c.raw_from_id, ins.id
                FROM lab_changes c JOIN ins ON ins.employee_id = c.employee_id WHERE c.kind = '$kind';"
      done
      echo '\echo timeline'
      echo "SELECT employes_timeline_refresh((SELECT array_agg(DISTINCT employee_id) FROM lab_new WHERE kind = 'employments'));"
      echo '\echo rollback'
      echo 'ROLLBACK;'
    } | q -o /dev/null 2>&1 | awk '
      /^(close|write|timeline|rollback)/ { part = $0 }
      /^Time:/ && part != "rollback" { printf "%s %.0f ms; ", part, $2; total += $2 }
      END { printf "total %.0f ms\n", total }'
  done
  ;;
*)
  echo "usage: $0 DIR PORT save | run [extra.sql] [rounds]" >&2
  exit 2
  ;;
esac
