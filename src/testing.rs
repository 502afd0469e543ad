//! Helpers shared by the `#[pg_test]`s of several modules.

use pgrx::prelude::*;

/// The company of the rows a test writes.
pub(crate) const COMPANY: &str = "5f1c6a4e-1c1f-4b8e-9a53-2b7d3f0e9a11";

/// A completed session to write rows for; the history tables' company_id defaults to
/// [`COMPANY`] in the test's transaction, so its rows need not name one.
pub(crate) fn session() -> String {
    for table in ["employes_raw_data", "employes_changes", "employes_timeline"] {
        Spi::run(&format!(
            "ALTER TABLE {table} ALTER COLUMN company_id SET DEFAULT '{COMPANY}'"
        ))
        .unwrap();
    }
    Spi::get_one::<String>(
        "INSERT INTO employes_sync_sessions (source, triggered_by, status, completed_at)
         VALUES ('manual', 'test', 'completed', now()) RETURNING id::text",
    )
    .unwrap()
    .unwrap()
}

/// Inserts version `version` of employee e1's `kind` record, current, and returns its id.
pub(crate) fn version_of_e1(s: &str, kind: &str, payload: &str, version: i32) -> i64 {
    Spi::get_one_with_args::<i64>(
        "INSERT INTO employes_raw_data (kind, employee_id, payload, content_hash, version, valid_from, first_session_id)
         VALUES ($1, 'e1', $2::jsonb, repeat('a', 64), $3, now(), $4::uuid) RETURNING id",
        &[kind.into(), payload.into(), version.into(), s.into()],
    )
    .unwrap()
    .unwrap()
}

/// The plan of `query` with sequential scans off: which index answers it.
pub(crate) fn plan_of(query: &str) -> Vec<String> {
    Spi::run("SET LOCAL enable_seqscan = off").unwrap();
    Spi::connect(|c| {
        c.select(&format!("EXPLAIN (COSTS OFF) {query}"), None, &[])
            .unwrap()
            .map(|r| r.get::<String>(1).unwrap().unwrap_or_default())
            .collect()
    })
}

pub(crate) fn index_count(table: &str) -> i64 {
    Spi::get_one::<i64>(&format!(
        "SELECT count(*) FROM pg_index WHERE indrelid = '{table}'::regclass"
    ))
    .unwrap()
    .unwrap()
}
