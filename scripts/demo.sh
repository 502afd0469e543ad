#!/usr/bin/env bash
# Sets the machine up (idempotent), then runs a demo: a throwaway PostgreSQL 15 cluster with
# pg_cron and employes_sync preloaded, employes-sim with 117 employees at 5 requests/s, a first
# sync, one simulated month, a second sync, the detected changes and one employee's timeline.
# Never touches an existing server; everything lives under $DEMO_DIR and is stopped at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

./scripts/setup.sh

DEMO_DIR="${DEMO_DIR:-${TMPDIR:-/tmp}/employes_sync_demo}"
PGPORT="${DEMO_PGPORT:-55439}"
SIMPORT="${DEMO_SIMPORT:-18089}"
COMPANY=5f1c6a4e-1c1f-4b8e-9a53-2b7d3f0e9a11
BIN=/usr/lib/postgresql/15/bin
as_pg() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
sql() { as_pg "$BIN/psql" -X -q -h "$DEMO_DIR" -p "$PGPORT" -U postgres -d postgres -v ON_ERROR_STOP=1 "$@"; }

sim_pid=""
cleanup() {
  [ -n "$sim_pid" ] && kill "$sim_pid" 2>/dev/null || true
  [ -f "$DEMO_DIR/data/postmaster.pid" ] && as_pg "$BIN/pg_ctl" -D "$DEMO_DIR/data" -m fast -w stop >/dev/null 2>&1 || true
}
trap cleanup EXIT

# A previous run may have been interrupted: stop what it left, then start afresh.
cleanup
rm -rf "$DEMO_DIR"
mkdir -p "$DEMO_DIR"
[ "$(id -u)" -eq 0 ] && chown postgres:postgres "$DEMO_DIR"
as_pg "$BIN/initdb" -D "$DEMO_DIR/data" -A trust -U postgres --no-sync >/dev/null
cat >> "$DEMO_DIR/data/postgresql.conf" <<CONF
port = $PGPORT
listen_addresses = ''
unix_socket_directories = '$DEMO_DIR'
shared_preload_libraries = 'pg_cron,employes_sync'
cron.database_name = 'postgres'
employes_sync.base_url = 'http://127.0.0.1:$SIMPORT/v4'
employes_sync.company_id = '$COMPANY'
employes_sync.api_token = 'demo-token'
employes_sync.requests_per_second = 5
CONF

target/debug/employes-sim --port "$SIMPORT" --employees 117 --seed 1 --token demo-token \
  --company-id "$COMPANY" --rps 5 --latency-ms 20 --jitter-ms 30 > "$DEMO_DIR/sim.log" 2>&1 &
sim_pid=$!
for _ in $(seq 100); do grep -q listening "$DEMO_DIR/sim.log" && break; sleep 0.1; done
grep -q listening "$DEMO_DIR/sim.log" || { cat "$DEMO_DIR/sim.log"; exit 1; }

as_pg "$BIN/pg_ctl" -D "$DEMO_DIR/data" -l "$DEMO_DIR/server.log" -w start >/dev/null
sql -c "CREATE EXTENSION pg_cron; CREATE EXTENSION employes_sync;"

echo "== first sync: 117 employees at 5 requests/s (floor: 119 requests / 5 = 23.8 s)"
sql <<'SQL'
SELECT id AS session_id FROM employes_sync_trigger('manual', 'demo@example.org') \gset
SELECT status, api_requests, retries, versions_written, changes_detected,
       round(extract(epoch FROM completed_at - started_at)::numeric, 1) AS seconds
  FROM employes_sync_wait(:'session_id');
SELECT kind, count(*) AS versions FROM employes_raw_data GROUP BY kind ORDER BY kind;
SELECT change_type, count(*) FROM employes_changes GROUP BY change_type ORDER BY change_type;
SQL

echo "== the simulated company moves one month forward"
curl -s -X POST "http://127.0.0.1:$SIMPORT/_sim/advance" | jq -r '"step \(.step) (\(.date)): \(.changes | length) real changes, noise-only edits on \(.noise_employee_ids | length) employees", (.changes[] | "  \(.event)\t\(.change_type)\t\(.effective_date // "-")\t\(.employee_id)")'

echo "== second sync"
sql <<'SQL'
SELECT id AS session_id FROM employes_sync_trigger('manual', 'demo@example.org') \gset
SELECT status, api_requests, versions_written, changes_detected, employees_deleted,
       round(extract(epoch FROM completed_at - started_at)::numeric, 1) AS seconds
  FROM employes_sync_wait(:'session_id');
SELECT employee_name, change_type, effective_date, count(*) AS fields
  FROM employes_recent_changes WHERE session_id = :'session_id'
 GROUP BY 1, 2, 3 ORDER BY 2, 1;
SELECT employee_id, employee_name FROM employes_recent_changes
 WHERE session_id = :'session_id' AND change_type = 'salary_change' ORDER BY id LIMIT 1 \gset
\echo == timeline of :employee_name
SELECT event_date, event_type, title,
       details - 'salary_id' - 'contract_id' - 'hours_id' - 'employment_id' - 'session_id' - 'change_id' AS details
  FROM employes_timeline WHERE employee_id = :'employee_id' ORDER BY event_date, event_type;
SQL
echo "== done: cluster and simulator stopped (files in $DEMO_DIR)"
