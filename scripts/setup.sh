#!/usr/bin/env bash
# Installs what a fresh Debian 12 machine lacks to build, test and run employes_sync, then builds
# and installs the extension into Debian's PostgreSQL 15. Idempotent: what is present is skipped.
set -euo pipefail
cd "$(dirname "$0")/.."

PG_CONFIG=/usr/lib/postgresql/15/bin/pg_config
export PATH="$HOME/.cargo/bin:$PATH"

# The one thing this script does not install: a Rust toolchain (pgrx 0.18.1 needs Rust 1.95; the
# workspace's rust-version says so too). Say so now rather than fail in the middle of a build.
need_rust="1.95"
if ! command -v cargo >/dev/null 2>&1 || ! command -v rustc >/dev/null 2>&1; then
  echo "setup: no Rust toolchain found (cargo, rustc). Install Rust $need_rust or later with rustup" >&2
  echo "       (https://rustup.rs: curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh), then run this again." >&2
  exit 1
fi
have_rust=$(rustc --version | awk '{print $2}')
if [ "$(printf '%s\n%s\n' "$need_rust" "$have_rust" | sort -V | head -1)" != "$need_rust" ]; then
  echo "setup: Rust $have_rust is too old: employes_sync needs $need_rust or later (rustup update), then run this again." >&2
  exit 1
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

packages=(postgresql-15 postgresql-server-dev-15 postgresql-15-cron libclang-dev sudo curl jq build-essential pkg-config python3-venv)
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
