#!/usr/bin/env bash
# The employes_sync benchmark, in one command: ./bench/run.sh [--quick]
#
# Sets the machine up (scripts/setup.sh), installs a RELEASE build of the extension into the
# PostgreSQL 15 whose binaries are in $EMPLOYES_SYNC_PG_BIN (default: Debian's; point it at a
# relocated copy, e.g. `cp -a` of /usr/lib/postgresql/15 and /usr/share/postgresql/15 under
# /opt/pgb/usr/..., to leave the debug build the tests use alone), creates bench/.venv with dbt-postgres if it
# is missing, then runs the harness: a throwaway cluster, the simulator in-process, a markdown
# table on stdout and in bench/results.md (bench/results-quick.md with --quick).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

./scripts/setup.sh >&2
export EMPLOYES_SYNC_PG_BIN="${EMPLOYES_SYNC_PG_BIN:-/usr/lib/postgresql/15/bin}"
export EMPLOYES_SYNC_TEST_DIR="${EMPLOYES_SYNC_TEST_DIR:-/tmp/employes_sync_bench}"
PG_CONFIG="$EMPLOYES_SYNC_PG_BIN/pg_config"
[ -x "$PG_CONFIG" ] || { echo "no pg_config in $EMPLOYES_SYNC_PG_BIN" >&2; exit 1; }

if [ "${BENCH_SKIP_INSTALL:-}" != 1 ]; then
  cargo pgrx install --release --pg-config "$PG_CONFIG" >&2
fi

if [ ! -x bench/.venv/bin/dbt ]; then
  python3 -m venv bench/.venv
  bench/.venv/bin/pip install -q "dbt-core>=1.9,<1.11" "dbt-postgres>=1.9,<1.10" >&2
fi

exec cargo run --release -p employes-sync-bench -- "$@"
