#!/usr/bin/env bash
# Builds a released version of employes_sync from its commit, once, and prints the directory of
# its package (usr/lib/postgresql/15/lib/employes_sync.so, usr/share/postgresql/15/extension/...).
# The upgrade test installs it into a private copy of PostgreSQL, syncs, then upgrades to the
# current build. The build is cached outside the clone, keyed by the commit, in
# ${EMPLOYES_SYNC_CACHE:-/var/cache/employes_sync}; without a cache it is built from the commit
# (git archive of this repository), which takes a few minutes.
#
# usage: scripts/old-release.sh [commit]     (default: cf9700f, release 0.1.0)
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

commit=$(git rev-parse --verify "${1:-cf9700f}^{commit}")
cache=${EMPLOYES_SYNC_CACHE:-/var/cache/employes_sync}
out="$cache/release-$commit"
if [ -f "$out/.complete" ]; then
  echo "$out"
  exit 0
fi

mkdir -p "$cache"
exec 9>"$cache/.lock-$commit"
flock 9
if [ -f "$out/.complete" ]; then
  echo "$out"
  exit 0
fi

src="$cache/src-$commit"
rm -rf "$src" "$out"
mkdir -p "$src"
git archive "$commit" | tar -x -C "$src"
echo "old-release: building $commit in $src (once; cached in $out)" >&2
# Its own target directory, removed once the package is made: the package is what is cached.
CARGO_TARGET_DIR="$cache/target-$commit" cargo pgrx package --debug \
  --manifest-path "$src/Cargo.toml" \
  --pg-config /usr/lib/postgresql/15/bin/pg_config \
  --out-dir "$out.tmp" >&2
rm -rf "$src" "$cache/target-$commit"
mv "$out.tmp" "$out"
touch "$out/.complete"
echo "$out"
