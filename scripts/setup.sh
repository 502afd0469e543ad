#!/usr/bin/env bash
# Installs what a fresh Debian 12 machine lacks to build, test and run employes_sync, then builds
# and installs the extension into Debian's PostgreSQL 15. Idempotent: what is present is skipped.
set -euo pipefail
cd "$(dirname "$0")/.."

PG_CONFIG=/usr/lib/postgresql/15/bin/pg_config
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

packages=(postgresql-15 postgresql-server-dev-15 postgresql-15-cron libclang-dev sudo curl jq build-essential pkg-config)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if ! cargo pgrx --version 2>/dev/null | grep -q ' 0\.18\.1$'; then
  echo "setup: installing cargo-pgrx 0.18.1 (about 5 minutes)"
  cargo install cargo-pgrx --version 0.18.1 --locked
fi

if ! grep -qs "^pg15 = \"$PG_CONFIG\"" "$HOME/.pgrx/config.toml"; then
  cargo pgrx init --pg15 "$PG_CONFIG"
fi

echo "setup: building and installing the extension into PostgreSQL 15"
if [ -n "$SUDO" ]; then
  cargo pgrx install --pg-config "$PG_CONFIG" --sudo ${EMPLOYES_SYNC_PROFILE:+--profile "$EMPLOYES_SYNC_PROFILE"}
else
  cargo pgrx install --pg-config "$PG_CONFIG" ${EMPLOYES_SYNC_PROFILE:+--profile "$EMPLOYES_SYNC_PROFILE"}
fi
cargo build -p employes-sim ${EMPLOYES_SYNC_PROFILE:+--profile "$EMPLOYES_SYNC_PROFILE"}
echo "setup: done"
