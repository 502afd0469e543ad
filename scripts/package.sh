#!/usr/bin/env bash
# Builds the Debian package of employes_sync for Debian 12 / PostgreSQL 15:
#   postgresql-15-employes-sync_<version>_amd64.deb
# with the shared library, the control file, the install script of this version and every
# upgrade script, in Debian's PostgreSQL directories. Depends on postgresql-15; recommends
# postgresql-15-cron (only scheduling needs it).
#
# usage: scripts/package.sh [--out DIR]            a release build of this checkout (cargo pgrx package)
#        scripts/package.sh --from STAGED VERSION [--out DIR]
#                                                  a package of files already staged the way
#                                                  `cargo pgrx package` lays them out (an old release)
# Prints the path of the .deb. Builds are cached outside the clone, keyed by the sources, in
# ${EMPLOYES_SYNC_CACHE:-/var/cache/employes_sync}/packages; without a cache it builds (a few minutes).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

PG_CONFIG=/usr/lib/postgresql/15/bin/pg_config
cache=${EMPLOYES_SYNC_CACHE:-/var/cache/employes_sync}/packages
out=""
from=""
version=""
while [ $# -gt 0 ]; do
  case $1 in
    --out) out=$2; shift 2 ;;
    --from) from=$2; version=$3; shift 3 ;;
    *) echo "package: unknown argument $1" >&2; exit 2 ;;
  esac
done
mkdir -p "$cache"

if [ -z "$from" ]; then
  version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -1)
  # What the build is made of: the commit's tree of those paths and any change on top of it.
  paths=(Cargo.toml Cargo.lock employes_sync.control src sql core)
  key=$( { git rev-parse "HEAD:" ; git ls-tree -r HEAD -- "${paths[@]}";
           git status --porcelain --untracked-files=all -- "${paths[@]}"; git diff HEAD -- "${paths[@]}"; } \
         | sha256sum | cut -c1-16)
  from="$cache/staged-$version-$key"
  if [ ! -f "$from/.complete" ]; then
    rm -rf "$from" "$from.tmp"
    echo "package: release build of $version (once per source state; cached in $from)" >&2
    cargo pgrx package --pg-config "$PG_CONFIG" --out-dir "$from.tmp" >&2
    mv "$from.tmp" "$from"
    touch "$from/.complete"
  fi
fi
[ -n "$version" ] || { echo "package: no version" >&2; exit 2; }
[ -f "$from/usr/lib/postgresql/15/lib/employes_sync.so" ] || { echo "package: no library in $from" >&2; exit 1; }

name=postgresql-15-employes-sync
deb="${out:-$cache}/${name}_${version}_amd64.deb"
root=$(mktemp -d)
chmod 0755 "$root"
trap 'rm -rf "$root"' EXIT
install -d "$root/DEBIAN" "$root/usr/lib/postgresql/15/lib" "$root/usr/share/postgresql/15/extension" \
  "$root/usr/share/doc/$name"
install -m 0644 "$from/usr/lib/postgresql/15/lib/employes_sync.so" "$root/usr/lib/postgresql/15/lib/"
strip --strip-unneeded "$root/usr/lib/postgresql/15/lib/employes_sync.so"
# The control file, this version's install script and every upgrade script; nothing else.
for f in "$from"/usr/share/postgresql/15/extension/employes_sync*; do
  case $(basename "$f") in
    employes_sync.control | "employes_sync--$version.sql" | employes_sync--*--*.sql)
      install -m 0644 "$f" "$root/usr/share/postgresql/15/extension/" ;;
  esac
done
[ -f "$root/usr/share/postgresql/15/extension/employes_sync--$version.sql" ] \
  || { echo "package: no install script for $version in $from" >&2; exit 1; }
cat > "$root/usr/share/doc/$name/copyright" <<EOF
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: employes_sync
License: MIT
EOF

size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
cat > "$root/DEBIAN/control" <<EOF
Package: $name
Version: $version
Architecture: amd64
Maintainer: employes_sync developers <employes-sync@example.org>
Installed-Size: $size
Depends: postgresql-15, libc6 (>= 2.34), libgcc-s1
Recommends: postgresql-15-cron
Section: database
Priority: optional
Homepage: https://github.com/employes-sync/employes_sync
Description: keeps a current and historical copy of Employes.nl payroll data in PostgreSQL
 employes_sync is a PostgreSQL 15 extension: one SQL function triggers a sync that a background
 worker runs against the Employes.nl v4 API, keeping every version of every record, typed
 field-level changes with their effective dates, an employee timeline and a ledger of sessions.
 .
 Add employes_sync (and pg_cron) to shared_preload_libraries, restart PostgreSQL, then
 CREATE EXTENSION employes_sync; after an upgrade run ALTER EXTENSION employes_sync UPDATE.
EOF
(cd "$root" && find usr -type f -exec md5sum {} + | sort -k2) > "$root/DEBIAN/md5sums"
mkdir -p "$(dirname "$deb")"
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >&2
echo "$deb"
