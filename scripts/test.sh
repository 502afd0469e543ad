#!/usr/bin/env bash
# Runs every test: unit tests of the pure crates, the simulator's tests, the whole-system
# scenarios (a real PostgreSQL 15 with pg_cron and the extension preloaded, employes-sim over
# loopback) and the #[pg_test]s. Sets the machine up first (idempotent).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

./scripts/setup.sh

echo "== formatting and lints"
cargo fmt --all --check
cargo clippy --workspace --all-targets -- -D warnings

echo "== unit tests (core) and simulator tests"
cargo test -p employes-sync-core -p employes-sim

echo "== the released 0.1.0, for the upgrade test (built once, cached outside the clone)"
./scripts/old-release.sh cf9700f

echo "== whole-system scenarios"
cargo test -p employes-sync-e2e -- --test-threads=2

echo "== pgrx tests"
pgdata_parent="${TMPDIR:-/tmp}/employes_sync_pgrx"
mkdir -p "$pgdata_parent"
if [ "$(id -u)" -eq 0 ]; then chown postgres:postgres "$pgdata_parent"; fi
cargo pgrx test pg15 --runas postgres --pgdata "$pgdata_parent/data"

echo "== the Debian package (installs into the system's PostgreSQL: alone, last)"
cargo test -p employes-sync-e2e --test package -- --ignored --nocapture
