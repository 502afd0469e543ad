#!/usr/bin/env bash
# What a column's collation costs a B-tree insertion of text keys like ours (uuid strings): a
# scratch cluster, 200,000 keys in an indexed table per collation ("C", glibc "C.utf8", ICU
# "en-US-x-icu"), then 10,000 new random keys inserted into each, five times, rolled back each time.
# Not part of the benchmark table; the reason the history tables' text keys are COLLATE "C".
#
#   bench/lab/collation.sh            # prints the milliseconds of each insertion
set -euo pipefail
bin=${EMPLOYES_SYNC_PG_BIN:-/usr/lib/postgresql/15/bin}
dir=$(mktemp -d /tmp/employes_sync_collation.XXXXXX)
port=${PORT:-55998}
as_pg=()
if [ "$(id -u)" -eq 0 ]; then
  chown postgres "$dir"
  as_pg=(runuser -u postgres --)
fi
cleanup() {
  "${as_pg[@]}" "$bin/pg_ctl" -D "$dir/data" stop -m fast >/dev/null 2>&1 || true
  rm -rf "$dir"
}
trap cleanup EXIT
"${as_pg[@]}" "$bin/initdb" -D "$dir/data" -A trust -U postgres --no-sync -E UTF8 --locale C >/dev/null
"${as_pg[@]}" "$bin/pg_ctl" -D "$dir/data" -o "-p $port -k $dir -c fsync=off -c shared_buffers=512MB" \
  -l "$dir/log" start -w >/dev/null
"${as_pg[@]}" "$bin/psql" -h "$dir" -p "$port" -d postgres -X -q -v ON_ERROR_STOP=1 <<'SQL'
CREATE TABLE keys_c (k text COLLATE "C", v int);
CREATE TABLE keys_c_utf8 (k text COLLATE "C.utf8", v int);
CREATE TABLE keys_icu (k text COLLATE "en-US-x-icu", v int);
INSERT INTO keys_c SELECT gen_random_uuid()::text, g FROM generate_series(1, 200000) g;
INSERT INTO keys_c_utf8 SELECT k, v FROM keys_c;
INSERT INTO keys_icu SELECT k, v FROM keys_c;
CREATE INDEX ON keys_c (k);
CREATE INDEX ON keys_c_utf8 (k);
CREATE INDEX ON keys_icu (k);
CREATE TABLE new_keys AS SELECT gen_random_uuid()::text AS k, g AS v FROM generate_series(1, 10000) g;
VACUUM ANALYZE;
-- Inserts the new keys, measures, and rolls the insertion back (the exception ends the
-- subtransaction), so every round starts from the same index.
CREATE FUNCTION insert_ms(t regclass) RETURNS numeric LANGUAGE plpgsql AS $$
DECLARE t0 timestamptz := clock_timestamp();
BEGIN
    EXECUTE format('INSERT INTO %s SELECT k, v FROM new_keys', t);
    RAISE EXCEPTION '%', round(extract(epoch FROM clock_timestamp() - t0)::numeric * 1000, 1);
EXCEPTION WHEN raise_exception THEN
    RETURN SQLERRM::numeric;
END $$;
\pset footer off
SELECT t AS collation, ms AS "10,000 insertions, ms"
  FROM (VALUES ('C', 'keys_c'), ('C.utf8', 'keys_c_utf8'), ('en-US-x-icu', 'keys_icu')) v (t, tab),
       LATERAL (SELECT string_agg((insert_ms(tab::regclass) + 0 * g)::text, ', ' ORDER BY g) AS ms
                  FROM generate_series(1, 5) g) y;
SQL
