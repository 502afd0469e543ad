//! The timeline upkeep of a sync: the events of the `/employments` payloads a batch writes,
//! computed before its transaction, and the difference from the replaced payloads' events
//! written in it (`employes_timeline_apply`); a recompute (`employes_timeline_refresh`) where
//! that cannot be done.

use std::collections::HashMap;
use std::time::Instant;

use employes_sync_core::timeline;
use employes_sync_core::versions::{self, Incoming};

use super::spi::exec;
use employes_sync_core::sync::StoreError;

/// Milliseconds this worker spent maintaining the timeline (main thread only).
static TIMELINE_MS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Recomputes the timeline of these employees, in the caller's transaction.
pub(super) fn refresh_timeline(company: &str, mut ids: Vec<String>) -> Result<(), StoreError> {
    ids.sort_unstable();
    ids.dedup();
    if ids.is_empty() {
        return Ok(());
    }
    let t = Instant::now();
    exec(
        "SELECT employes_timeline_refresh($1::text[], $2::uuid)",
        &[ids.into(), company.to_owned().into()],
        |_| Ok(()),
    )?;
    count_timeline(t);
    Ok(())
}

/// Milliseconds this worker has spent on the timeline so far.
pub(super) fn timeline_ms() -> u64 {
    TIMELINE_MS.load(std::sync::atomic::Ordering::Relaxed)
}

fn count_timeline(since: Instant) {
    TIMELINE_MS.fetch_add(
        since.elapsed().as_millis() as u64,
        std::sync::atomic::Ordering::Relaxed,
    );
}

/// The timeline events of each `/employments` payload of a batch, by employee: computed by the
/// rules `employes_sync_employment_events` applies to a stored version (`timeline::employment_events`
/// on the text PostgreSQL prints for the payload), before the batch's transaction starts, since
/// they depend on the payload alone. `None` for a payload PostgreSQL would print otherwise (a
/// number written with an exponent): its events are computed from the stored version instead.
/// They are the events `employes_sync_employment_events` gives the stored version: both read
/// the same values with the same rules (`timeline::events_of`).
pub(crate) type PayloadEvents = HashMap<String, Option<Vec<timeline::EmploymentEvent>>>;

pub(crate) fn payload_events(records: &[Incoming]) -> PayloadEvents {
    let t = Instant::now();
    let events = records
        .iter()
        .map(|r| {
            (
                r.employee_id.clone(),
                timeline::events_of_received(&r.payload),
            )
        })
        .collect();
    count_timeline(t);
    events
}

/// The `/employments` payload of each employee's latest stored version, as the batch's lookup
/// read it (the text PostgreSQL prints for it), for each employee that has one: `None` when the
/// lookup did not return it.
pub(crate) type StoredPayloads = HashMap<String, Option<String>>;

/// Writes the timeline of the employees whose `/employments` versions this transaction has just
/// written, in the caller's transaction, without reading the timeline: the stored rows are the
/// events of the version replaced (`stored`), so the events of the new payload (`events`,
/// computed before the transaction by `payload_events`) differ from them only by what
/// `timeline::event_delta` finds, and `employes_timeline_apply` writes just that. An employee
/// whose events cannot be computed on both sides is recomputed from the stored version, by
/// `employes_timeline_refresh`.
pub(crate) fn write_timeline(
    company: &str,
    plan: &[versions::NewVersion],
    events: &PayloadEvents,
    stored: &StoredPayloads,
) -> Result<(), StoreError> {
    let t = Instant::now();
    let mut plan: Vec<&versions::NewVersion> = plan.iter().collect();
    plan.sort_unstable_by(|a, b| a.employee_id.cmp(&b.employee_id));
    let mut refresh = Vec::new();
    let (mut g_employee, mut g_type, mut g_key) = (vec![], vec![], vec![]);
    let (mut e_employee, mut e_date, mut e_type, mut e_title) = (vec![], vec![], vec![], vec![]);
    let (mut e_details, mut e_key, mut e_old, mut e_new) = (vec![], vec![], vec![], vec![]);
    for v in plan {
        let new = events.get(&v.employee_id).cloned().flatten();
        let old = match stored.get(&v.employee_id) {
            // No earlier version: no employment events stored.
            None => Some(Vec::new()),
            Some(Some(text)) => timeline::employment_events(text).ok(),
            Some(None) => None,
        };
        let (Some(old), Some(new)) = (old, new) else {
            refresh.push(v.employee_id.clone());
            continue;
        };
        let delta = timeline::event_delta(old, new);
        for (event_type, event_key) in delta.gone {
            g_employee.push(v.employee_id.clone());
            g_type.push(event_type.to_owned());
            g_key.push(event_key);
        }
        for e in delta.upsert {
            e_employee.push(v.employee_id.clone());
            e_date.push(crate::api::pg_date(e.event_date));
            e_type.push(e.event_type.to_owned());
            e_title.push(e.title);
            e_details.push(e.details);
            e_key.push(e.event_key);
            e_old.push(e.old_wage);
            e_new.push(e.new_wage);
        }
    }
    if !g_employee.is_empty() || !e_employee.is_empty() {
        exec(
            "SELECT employes_timeline_apply($1::uuid, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
            &[
                company.to_owned().into(),
                g_employee.into(),
                g_type.into(),
                g_key.into(),
                e_employee.into(),
                e_date.into(),
                e_type.into(),
                e_title.into(),
                e_details.into(),
                e_key.into(),
                e_old.into(),
                e_new.into(),
            ],
            |_| Ok(()),
        )?;
    }
    count_timeline(t);
    refresh_timeline(company, refresh)
}

#[cfg(any(test, feature = "pg_test"))]
#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;

    use crate::testing::*;

    /// An employee's timeline, in date order as the README shows it, comes through the unique
    /// key: the timeline keeps no second index for every new event to maintain.
    #[pg_test]
    fn an_employees_timeline_is_found_through_its_unique_key() {
        let plan = plan_of(
            "SELECT event_date, event_type, title, details FROM employes_timeline
              WHERE employee_id = 'e1' ORDER BY event_date",
        );
        assert!(
            plan.iter().any(|l| l.contains("employes_timeline_key")),
            "{plan:?}"
        );
        assert_eq!(index_count("employes_timeline"), 1);
    }

    #[pg_test]
    fn timeline_events_keep_payload_values_and_compute_wages_in_numeric() {
        let s = session();
        // Version 2 is the latest: only it counts. Wages written with trailing zeros.
        for (v, wage) in [(1, "1000"), (2, "2900.00")] {
            Spi::run(&format!(
                r#"INSERT INTO employes_raw_data (kind, employee_id, payload, content_hash, version, valid_from, valid_to, first_session_id)
                   VALUES ('employments', 'e1', '{{"data": [{{"id": "m1", "start_date": "2019-05-01T00:00:00",
                       "salary": [{{"id": "s1", "start_date": "2019-05-01T00:00:00", "month_wage": 2846.50}},
                                  {{"id": "s2", "start_date": "2021-01-01T00:00:00", "month_wage": {wage}}}]}}]}}',
                           repeat('a', 64), {v}, now(), CASE WHEN {v} = 1 THEN now() END, '{s}')"#
            ))
            .unwrap();
        }
        let got = Spi::get_one::<String>(
            "SELECT string_agg(concat_ws(' | ', event_date, event_type, title, details::text, event_key), E'\n'
                               ORDER BY event_date, event_type)
               FROM employes_timeline_events('5f1c6a4e-1c1f-4b8e-9a53-2b7d3f0e9a11', ARRAY['e1', 'e1', 'nobody'])",
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            got,
            "2019-05-01 | hired | Hired | {\"end_date\": null, \"start_date\": \"2019-05-01T00:00:00\", \"employment_id\": \"m1\"} | employment:m1:1\n\
             2021-01-01 | salary_changed | Salary changed | {\"amount\": 53.50, \"percent\": 1.88, \"salary_id\": \"s2\", \"new_hour_wage\": null, \"old_hour_wage\": null, \"new_month_wage\": 2900.00, \"old_month_wage\": 2846.50} | salary:m1:s2:2"
        );
    }

    /// The timeline a sync writes for the /employments versions it has just written (events
    /// computed in Rust, on the text PostgreSQL prints for those payloads, not read back, and
    /// only their difference from the replaced version's written) is byte for byte what a
    /// refresh computes from the stored versions: a refresh after it finds nothing to write.
    /// Version 1 of e1 has escapes, keys in no order, trailing zeros, a contract whose duration
    /// changes; version 2 adds a raise, withdraws a contract and corrects a duration. e2's
    /// payload has a number PostgreSQL prints otherwise (1.5e1 is 15), so its events are
    /// computed from the stored version; e3's replaced version is not at hand (the lookup did
    /// not return it), so it is recomputed too.
    #[pg_test]
    fn a_syncs_timeline_is_what_a_refresh_computes() {
        let s = session();
        let e1_v1 = r#"{"data": [{"start_date": "2019-05-01T00:00:00", "id": "m1", "end_date": null,
                    "contracts": [{"id": "c1", "start_date": "2019-05-01T00:00:00", "contract_duration": "1 jaar\n\"tijdelijk\""},
                                  {"contract_duration": "onbepaald \u00e9", "id": "c2", "start_date": "2020-05-01T00:00:00",
                                   "end_date": "2030-01-01T00:00:00"}],
                    "hours": [{"id": "h1", "start_date": "2019-05-01T00:00:00", "hours_per_week": 40.0, "days_per_week": 5},
                              {"id": "h2", "start_date": "2021-01-01T00:00:00", "hours_per_week": 32.00, "days_per_week": 4}],
                    "salary": [{"month_wage": 2846.50, "id": "s1", "start_date": "2019-05-01T00:00:00"},
                               {"id": "s2", "start_date": "2021-01-01T00:00:00", "month_wage": 2900.00}]}]}"#;
        let e1_v2 = r#"{"data": [{"start_date": "2019-05-01T00:00:00", "id": "m1", "end_date": null,
                    "contracts": [{"id": "c1", "start_date": "2019-05-01T00:00:00", "contract_duration": "2 jaar"}],
                    "hours": [{"id": "h1", "start_date": "2019-05-01T00:00:00", "hours_per_week": 40.0, "days_per_week": 5},
                              {"id": "h2", "start_date": "2021-01-01T00:00:00", "hours_per_week": 32.00, "days_per_week": 4}],
                    "salary": [{"month_wage": 2846.50, "id": "s1", "start_date": "2019-05-01T00:00:00"},
                               {"id": "s2", "start_date": "2021-01-01T00:00:00", "month_wage": 2900.00},
                               {"id": "s3", "start_date": "2022-01-01T00:00:00", "month_wage": 3000}]}]}"#;
        let e2 = r#"{"data": [{"id": "m2", "start_date": "2020-01-01T00:00:00", "salary": [
                    {"id": "s1", "start_date": "2020-01-01T00:00:00", "hour_wage": 1.5e1},
                    {"id": "s2", "start_date": "2021-01-01T00:00:00", "hour_wage": 16}]}]}"#;
        let e3_v2 = r#"{"data": [{"id": "m3", "start_date": "2020-01-01T00:00:00", "salary": [
                    {"id": "s1", "start_date": "2020-01-01T00:00:00", "hour_wage": 15},
                    {"id": "s2", "start_date": "2021-01-01T00:00:00", "hour_wage": 16}]}]}"#;
        let e3_v1 = r#"{"data": [{"id": "m3", "start_date": "2020-01-01T00:00:00", "salary": [
                    {"id": "s1", "start_date": "2020-01-01T00:00:00", "hour_wage": 15}]}]}"#;
        // Stores a version and writes the timeline as a sync does; `replaced`: the payload text
        // the batch's lookup returned for the version before, by employee.
        let sync = |versions: &[(&str, &str, i32)], replaced: &[(&str, Option<&str>)]| {
            let (mut plan, mut incoming) = (Vec::new(), Vec::new());
            for &(id, text, version) in versions {
                Spi::run_with_args(
                    "UPDATE employes_raw_data SET valid_to = now() WHERE kind = 'employments' AND employee_id = $1 AND valid_to IS NULL",
                    &[id.into()],
                )
                .unwrap();
                Spi::run_with_args(
                    "INSERT INTO employes_raw_data (kind, employee_id, payload, content_hash, version, valid_from, first_session_id)
                     VALUES ('employments', $1, $2::jsonb, repeat('a', 64), $3, now(), $4::uuid)",
                    &[id.into(), text.into(), version.into(), s.as_str().into()],
                )
                .unwrap();
                let payload: serde_json::Value = serde_json::from_str(text).unwrap();
                let printed =
                    Spi::get_one_with_args::<String>("SELECT $1::jsonb::text", &[text.into()])
                        .unwrap()
                        .unwrap();
                // The events of the payload as received are those of its stored text, but for
                // e2's exponent, which PostgreSQL prints otherwise.
                match employes_sync_core::timeline::events_of_received(&payload) {
                    Some(ours) => assert_eq!(
                        Ok(ours),
                        employes_sync_core::timeline::employment_events(&printed)
                    ),
                    None => assert_eq!(id, "e2", "{printed}"),
                }
                incoming.push(employes_sync_core::versions::Incoming {
                    employee_id: id.into(),
                    payload: payload.clone(),
                    content_hash: "a".repeat(64),
                });
                plan.push(employes_sync_core::versions::NewVersion {
                    employee_id: id.into(),
                    payload,
                    content_hash: "a".repeat(64),
                    version,
                    close_raw_id: None,
                    from_raw_id: None,
                    changes: vec![],
                });
            }
            let stored: super::StoredPayloads = replaced
                .iter()
                .map(|&(id, text)| {
                    let printed = text.map(|t| {
                        Spi::get_one_with_args::<String>("SELECT $1::jsonb::text", &[t.into()])
                            .unwrap()
                            .unwrap()
                    });
                    (id.to_owned(), printed)
                })
                .collect();
            super::write_timeline(COMPANY, &plan, &super::payload_events(&incoming), &stored)
                .unwrap();
        };
        let timeline = || {
            Spi::get_one::<String>(
                "SELECT string_agg(concat_ws(' | ', employee_id, event_date, event_type, title, details::text, event_key), E'\n'
                                   ORDER BY employee_id, event_date, event_type, event_key)
                   FROM employes_timeline",
            )
            .unwrap()
            .unwrap()
        };
        let refresh_writes = || {
            Spi::get_one::<i64>("SELECT employes_timeline_refresh(ARRAY['e1', 'e2', 'e3'])")
                .unwrap()
                .unwrap()
        };
        sync(&[("e1", e1_v1, 1), ("e2", e2, 1), ("e3", e3_v1, 1)], &[]);
        let first = timeline();
        assert_eq!(first.lines().count(), 9, "{first}");
        assert!(
            first.contains("e2 | 2021-01-01 | salary_changed | Salary changed | {\"amount\": 1, \"percent\": 6.67,"),
            "{first}"
        );
        assert_eq!(refresh_writes(), 0, "a refresh found rows to write");
        assert_eq!(timeline(), first);
        sync(
            &[("e1", e1_v2, 2), ("e3", e3_v2, 2)],
            &[("e1", Some(e1_v1)), ("e3", None)],
        );
        let second = timeline();
        assert_eq!(second.lines().count(), 9, "{second}");
        assert!(
            second.contains("e1 | 2022-01-01 | salary_changed | Salary changed | {\"amount\": 100.00, \"percent\": 3.45,")
                && second.contains("e1 | 2019-05-01 | contract_started | Contract started | {\"end_date\": null, \"start_date\": \"2019-05-01T00:00:00\", \"contract_id\": \"c1\", \"contract_duration\": \"2 jaar\"")
                && !second.contains("contract:m1:c2")
                && second.contains("e3 | 2021-01-01 | salary_changed"),
            "{second}"
        );
        assert_eq!(refresh_writes(), 0, "a refresh found rows to write");
        assert_eq!(timeline(), second);
    }

    /// The details expression is inlined into the timeline's statements, not called per event.
    #[pg_test]
    fn timeline_details_are_inlined() {
        let plan: Vec<String> = Spi::connect_mut(|c| {
            c.update(
                "EXPLAIN (VERBOSE, COSTS OFF)
                 SELECT employes_timeline_details(t, d, o, n)
                   FROM (VALUES ('salary_changed', '{}', '1', '2')) v (t, d, o, n)",
                None,
                &[],
            )
            .unwrap()
            .map(|r| r.get::<String>(1).unwrap().unwrap_or_default())
            .collect()
        });
        let plan = plan.join("\n");
        assert!(
            plan.contains("jsonb_build_object") && !plan.contains("employes_timeline_details"),
            "{plan}"
        );
    }

    #[pg_test(
        error = "employes_timeline_apply: the company, the keys to delete and the events to write must be non-NULL, the arrays of one length each"
    )]
    fn timeline_apply_refuses_event_arrays_of_different_lengths() {
        Spi::run(
            "SELECT employes_timeline_apply('5f1c6a4e-1c1f-4b8e-9a53-2b7d3f0e9a11', '{}', '{}', '{}', ARRAY['e1', 'e1'], ARRAY['2020-01-01']::date[], ARRAY['hired'],
                                            ARRAY['Hired'], ARRAY['{}'], ARRAY['employment:m1:1'], ARRAY[NULL], ARRAY[NULL])",
        )
        .unwrap();
    }

    #[pg_test(
        error = "employes_timeline_apply: the company, the keys to delete and the events to write must be non-NULL, the arrays of one length each"
    )]
    fn timeline_apply_refuses_a_null_array() {
        Spi::run(
            "SELECT employes_timeline_apply('5f1c6a4e-1c1f-4b8e-9a53-2b7d3f0e9a11', ARRAY['e1'], ARRAY['hired'], NULL, '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}')",
        )
        .unwrap();
    }

    /// What the worker passes is applied as given: the listed keys deleted (other employees'
    /// rows and other event types untouched), new keys inserted, existing ones updated.
    #[pg_test]
    fn timeline_apply_deletes_and_upserts_what_it_is_given() {
        Spi::run(&format!(
            "INSERT INTO employes_timeline VALUES
                ('e1', '2019-01-01', 'hired', 'Hired', '{{}}', 'employment:m1:1', '{COMPANY}'),
                ('e1', '2019-01-01', 'contract_started', 'Contract started', '{{}}', 'contract:m1:c1:1', '{COMPANY}'),
                ('e1', '2020-01-01', 'contract_renewed', 'Contract renewed', '{{}}', 'contract:m1:c2:2', '{COMPANY}'),
                ('e2', '2020-01-01', 'contract_renewed', 'Contract renewed', '{{}}', 'contract:m1:c2:2', '{COMPANY}')"
        ))
        .unwrap();
        let n = Spi::get_one::<i64>(
            "SELECT employes_timeline_apply('5f1c6a4e-1c1f-4b8e-9a53-2b7d3f0e9a11', ARRAY['e1', 'e1'], ARRAY['contract_renewed', 'hired'], ARRAY['contract:m1:c2:2', 'nope'],
                                            ARRAY['e1', 'e1'], ARRAY['2019-02-01', '2021-01-01']::date[],
                                            ARRAY['contract_started', 'salary_changed'], ARRAY['Contract started', 'Salary changed'],
                                            ARRAY['{\"contract_duration\": \"2 jaar\"}', '{\"salary_id\": \"s2\"}'],
                                            ARRAY['contract:m1:c1:1', 'salary:m1:s2:2'], ARRAY[NULL, '2000'], ARRAY[NULL, '2100.00'])",
        )
        .unwrap();
        assert_eq!(n, Some(3));
        let got = Spi::get_one::<String>(
            "SELECT string_agg(concat_ws(' | ', employee_id, event_date, event_type, details::text, event_key), E'\n'
                               ORDER BY employee_id, event_type)
               FROM employes_timeline",
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            got,
            "e1 | 2019-02-01 | contract_started | {\"contract_duration\": \"2 jaar\"} | contract:m1:c1:1\n\
             e1 | 2019-01-01 | hired | {} | employment:m1:1\n\
             e1 | 2021-01-01 | salary_changed | {\"amount\": 100.00, \"percent\": 5.00, \"salary_id\": \"s2\"} | salary:m1:s2:2\n\
             e2 | 2020-01-01 | contract_renewed | {} | contract:m1:c2:2"
        );
    }

    /// A refresh leaves identical rows alone and rewrites a row whose details differ only in how
    /// a number is written (equal as jsonb, not byte for byte), as a rebuild would write it.
    #[pg_test]
    fn timeline_refresh_rewrites_rows_that_differ_only_in_number_formatting() {
        let s = session();
        version_of_e1(
            &s,
            "employments",
            r#"{"data": [{"id": "m1", "start_date": "2019-05-01T00:00:00",
                "salary": [{"id": "s1", "start_date": "2019-05-01T00:00:00", "month_wage": 2846.50},
                           {"id": "s2", "start_date": "2021-01-01T00:00:00", "month_wage": 2900.00}]}]}"#,
            1,
        );
        let refresh = || {
            Spi::get_one::<i64>("SELECT employes_timeline_refresh(ARRAY['e1'])")
                .unwrap()
                .unwrap()
        };
        assert_eq!(refresh(), 2);
        assert_eq!(refresh(), 0);
        let rewritten = "SELECT details->>'new_month_wage' FROM employes_timeline WHERE event_type = 'salary_changed'";
        Spi::run(
            "UPDATE employes_timeline SET details = details || '{\"new_month_wage\": 2900.0}' WHERE event_type = 'salary_changed'",
        )
        .unwrap();
        assert!(Spi::get_one::<bool>(
            "SELECT details = details || '{\"new_month_wage\": 2900.00}' FROM employes_timeline WHERE event_type = 'salary_changed'"
        )
        .unwrap()
        .unwrap());
        assert_eq!(
            Spi::get_one::<String>(rewritten).unwrap().unwrap(),
            "2900.0"
        );
        assert_eq!(refresh(), 1);
        assert_eq!(
            Spi::get_one::<String>(rewritten).unwrap().unwrap(),
            "2900.00"
        );
        assert_eq!(refresh(), 0);
    }

    /// JIT compiling cost up to a second per timeline call while a first sync fills tables
    /// that have no statistics yet; the timeline runs without it, and the events function
    /// tells the planner how many rows a payload gives.
    #[pg_test]
    fn timeline_functions_run_without_jit() {
        let got = Spi::get_one::<String>(
            "SELECT string_agg(p.proname || ' ' || coalesce(array_to_string(p.proconfig, ','), '') || ' rows ' || p.prorows,
                               '; ' ORDER BY p.proname)
               FROM pg_proc p
              WHERE p.proname IN ('employes_timeline_events', 'employes_timeline_refresh', 'employes_timeline_apply',
                                  'employes_sync_employment_events')",
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            got,
            "employes_sync_employment_events  rows 8; \
             employes_timeline_apply search_path=pg_catalog, public, pg_temp,jit=off rows 0; \
             employes_timeline_events search_path=pg_catalog, public, pg_temp,enable_memoize=off,jit=off rows 1000; \
             employes_timeline_refresh search_path=pg_catalog, public, pg_temp,jit=off rows 0"
        );
    }

    /// Timeline upkeep must not depend on the planner's statistics: on a fresh install there
    /// are none while the first sync fills the tables, and a join planned for an "empty" table
    /// read the whole timeline on every call.
    #[pg_test]
    fn timeline_refresh_reads_only_the_employees_it_recomputes_even_without_statistics() {
        let s = session();
        Spi::run(&format!(
            r#"INSERT INTO employes_raw_data (kind, employee_id, payload, content_hash, version, valid_from, first_session_id)
               SELECT 'employments', 'e' || i,
                      jsonb_build_object('data', jsonb_build_array(jsonb_build_object(
                          'id', 'm' || i, 'start_date', '2020-01-01T00:00:00',
                          'salary', '[{{"id": "s1", "start_date": "2020-01-01T00:00:00", "month_wage": 1000}},
                                      {{"id": "s2", "start_date": "2021-01-01T00:00:00", "month_wage": 1100}}]'::jsonb))),
                      repeat('a', 64), 1, now(), '{s}'
                 FROM generate_series(1, 2000) i"#
        ))
        .unwrap();
        let written = Spi::get_one::<i64>("SELECT employes_timeline_refresh()").unwrap();
        assert_eq!(written, Some(4000));
        // Forget what ANALYZE knows, as on a fresh install.
        Spi::run(
            "DELETE FROM pg_statistic WHERE starelid IN ('employes_timeline'::regclass, 'employes_raw_data'::regclass,
                                                       'employes_changes'::regclass);
             UPDATE pg_class SET reltuples = 0, relpages = 0
              WHERE oid IN ('employes_timeline'::regclass, 'employes_raw_data'::regclass, 'employes_changes'::regclass)",
        )
        .unwrap();
        let read = "SELECT coalesce(seq_tup_read, 0) + coalesce(idx_tup_fetch, 0) FROM pg_stat_xact_user_tables
                     WHERE relid = 'employes_timeline'::regclass";
        let before = Spi::get_one::<i64>(read).unwrap().unwrap_or(0);
        let written =
            Spi::get_one::<i64>("SELECT employes_timeline_refresh(ARRAY['e1', 'e2', 'e3'])")
                .unwrap();
        assert_eq!(written, Some(0), "nothing changed");
        let after = Spi::get_one::<i64>(read).unwrap().unwrap_or(0);
        // Their 6 events, read once (plus the upsert's checks): not the 4,000 rows of the table.
        assert!(
            after - before <= 20,
            "read {} timeline rows",
            after - before
        );
    }
}
