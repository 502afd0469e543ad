//! employes_sync: keeps a current and historical copy of Employes.nl payroll data inside
//! PostgreSQL. `guc` defines the settings, `api` the Rust-side SQL functions, `worker` the
//! background worker and its storage; the pure logic lives in the `employes-sync-core` crate and
//! the schema and SQL API in `sql/`.

use pgrx::prelude::*;

mod api;
mod guc;
mod scheduler;
mod worker;

::pgrx::pg_module_magic!();

extension_sql_file!("../sql/01_sessions.sql", name = "sessions", bootstrap);
extension_sql_file!(
    "../sql/02_raw_data.sql",
    name = "raw_data",
    requires = ["sessions"]
);
extension_sql_file!(
    "../sql/03_changes.sql",
    name = "changes",
    requires = ["raw_data"]
);
extension_sql_file!(
    "../sql/04_timeline.sql",
    name = "timeline",
    requires = [
        "changes",
        api::employes_sync_jdate,
        api::employes_sync_employment_events
    ]
);
extension_sql_file!(
    "../sql/05_views.sql",
    name = "views",
    requires = ["timeline"]
);
extension_sql_file!(
    "../sql/06_api.sql",
    name = "api",
    requires = [
        "views",
        api::employes_sync_launch_worker,
        api::employes_sync_worker_alive,
        api::employes_sync_instance
    ]
);
extension_sql_file!(
    "../sql/07_scheduler.sql",
    name = "scheduler",
    requires = [
        "api",
        scheduler::employes_sync_cron_check,
        scheduler::employes_sync_cron_describe,
        scheduler::employes_sync_cron_next,
        scheduler::employes_sync_cron_interval
    ]
);
extension_sql_file!(
    "../sql/08_privileges.sql",
    name = "privileges",
    requires = ["scheduler"]
);

#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    guc::init();
    if unsafe { pg_sys::process_shared_preload_libraries_in_progress } {
        worker::register_watchdog();
        guc::install_log_redaction();
    }
}

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use pgrx::prelude::*;

    #[pg_test]
    fn schema_is_installed_with_comments() {
        let missing: Option<i64> = Spi::get_one(
            "SELECT count(*) FROM unnest(ARRAY['employes_sync_sessions','employes_sync_logs','employes_raw_data',
                 'employes_changes','employes_timeline','employes_current','employes_recent_changes']) t(name)
              WHERE obj_description(to_regclass(t.name), 'pg_class') IS NULL",
        )
        .unwrap();
        assert_eq!(missing, Some(0));
    }
    #[pg_test(error = "invalid sync source: 'nightly'")]
    fn trigger_rejects_an_unknown_source() {
        Spi::run("SELECT employes_sync_trigger('nightly', 'dba')").unwrap();
    }

    #[pg_test(error = "invalid sync source: NULL")]
    fn trigger_rejects_a_null_source() {
        Spi::run("SELECT employes_sync_trigger(NULL, 'dba')").unwrap();
    }

    #[pg_test(
        error = "invalid triggered_by: 321 characters; it must be 1 to 320 characters without control characters"
    )]
    fn trigger_rejects_an_overlong_triggered_by() {
        Spi::run("SELECT employes_sync_trigger('manual', repeat('x', 321))").unwrap();
    }

    #[pg_test(
        error = "invalid triggered_by: 8 characters; it must be 1 to 320 characters without control characters"
    )]
    fn trigger_rejects_control_characters_in_triggered_by() {
        Spi::run("SELECT employes_sync_trigger('manual', E'dba\\nrm -')").unwrap();
    }

    #[pg_test(error = "timeout_seconds must be between 0 and 86400, got -1")]
    fn wait_rejects_a_negative_timeout() {
        Spi::run("SELECT employes_sync_wait(gen_random_uuid(), -1)").unwrap();
    }

    #[pg_test(error = "no sync session with id 00000000-0000-0000-0000-000000000000")]
    fn cancel_of_an_unknown_session_is_an_error() {
        Spi::run("SELECT employes_sync_cancel('00000000-0000-0000-0000-000000000000')").unwrap();
    }

    fn session() -> String {
        Spi::get_one::<String>(
            "INSERT INTO employes_sync_sessions (source, triggered_by, status, completed_at)
             VALUES ('manual', 'test', 'completed', now()) RETURNING id::text",
        )
        .unwrap()
        .unwrap()
    }

    /// Inserts version `version` of employee e1's `kind` record, current, and returns its id.
    fn version_of_e1(s: &str, kind: &str, payload: &str, version: i32) -> i64 {
        Spi::get_one_with_args::<i64>(
            "INSERT INTO employes_raw_data (kind, employee_id, payload, content_hash, version, valid_from, first_session_id)
             VALUES ($1, 'e1', $2::jsonb, repeat('a', 64), $3, now(), $4::uuid) RETURNING id",
            &[kind.into(), payload.into(), version.into(), s.into()],
        )
        .unwrap()
        .unwrap()
    }

    #[pg_test]
    fn current_hashes_are_read_from_the_index_alone() {
        let s = session();
        Spi::run(&format!(
            "INSERT INTO employes_raw_data (kind, employee_id, payload, content_hash, version, valid_from, first_session_id)
             SELECT 'employee', 'e' || i, '{{}}', repeat('a', 64), 1, now(), '{s}' FROM generate_series(1, 50) i"
        ))
        .unwrap();
        // Whatever the planner prefers for 50 rows: the index alone must be able to answer.
        Spi::run("SET LOCAL enable_bitmapscan = off").unwrap();
        let plan = plan_of(crate::worker::HASH_LOAD);
        assert!(
            plan[0].contains("Index Only Scan using employes_raw_data_current"),
            "{plan:?}"
        );
    }

    #[pg_test(
        error = "duplicate key value violates unique constraint \"employes_raw_data_current\""
    )]
    fn two_current_versions_of_a_record_are_impossible() {
        let s = session();
        for v in 1..=2 {
            version_of_e1(&s, "employee", "{}", v);
        }
    }

    /// The plan of `query` with sequential scans off: which index answers it.
    fn plan_of(query: &str) -> Vec<String> {
        Spi::run("SET LOCAL enable_seqscan = off").unwrap();
        Spi::connect(|c| {
            c.select(&format!("EXPLAIN (COSTS OFF) {query}"), None, &[])
                .unwrap()
                .map(|r| r.get::<String>(1).unwrap().unwrap_or_default())
                .collect()
        })
    }

    fn index_count(table: &str) -> i64 {
        Spi::get_one::<i64>(&format!(
            "SELECT count(*) FROM pg_index WHERE indrelid = '{table}'::regclass"
        ))
        .unwrap()
        .unwrap()
    }

    /// An employee's changes are found through a narrow index of their own; the unique key
    /// leads with the new version, so a sync's change rows land at its right edge.
    #[pg_test]
    fn an_employees_changes_are_found_through_the_employee_index() {
        let plan =
            plan_of("SELECT * FROM employes_changes WHERE employee_id = 'e1' ORDER BY detected_at");
        assert!(
            plan.iter().any(|l| l.contains("employes_changes_employee")),
            "{plan:?}"
        );
        let key =
            Spi::get_one::<String>("SELECT pg_get_indexdef('employes_changes_unique'::regclass)")
                .unwrap()
                .unwrap();
        assert!(
            key.contains("(COALESCE(raw_to_id, (0)::bigint), COALESCE(raw_from_id, (0)::bigint), kind, field_path, change_type)"),
            "{key}"
        );
        assert_eq!(
            index_count("employes_changes"),
            5,
            "id, unique key, employee, detected_at, timeline"
        );
    }

    /// The text keys of the history compare byte by byte whatever the database's collation, and
    /// a value of the default collation (a parameter, a user's column) compared with them still
    /// finds them through their indexes.
    #[pg_test]
    fn history_text_keys_compare_byte_by_byte() {
        let got = Spi::get_one::<String>(
            "SELECT string_agg(a.attrelid::regclass || '.' || a.attname || ' ' || c.collname, ', '
                               ORDER BY a.attrelid::regclass::text, a.attnum)
               FROM pg_attribute a JOIN pg_collation c ON c.oid = a.attcollation
              WHERE a.attrelid IN ('employes_raw_data'::regclass, 'employes_changes'::regclass, 'employes_timeline'::regclass)
                AND a.attnum > 0 AND NOT a.attisdropped AND a.atttypid = 'text'::regtype AND c.collname = 'C'",
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            got,
            "employes_changes.employee_id C, employes_changes.kind C, employes_changes.change_type C, \
             employes_changes.field_path C, employes_raw_data.kind C, employes_raw_data.employee_id C, \
             employes_timeline.employee_id C, employes_timeline.event_type C, employes_timeline.event_key C"
        );
        Spi::run("CREATE TEMP TABLE mine (id text COLLATE \"default\")").unwrap();
        let plan = plan_of(
            "SELECT * FROM mine m JOIN employes_changes c ON c.employee_id = m.id WHERE m.id = 'e1'",
        );
        assert!(
            plan.iter().any(|l| l.contains("employes_changes_employee")),
            "{plan:?}"
        );
    }

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

    #[pg_test(error = "duplicate key value violates unique constraint \"employes_changes_unique\"")]
    fn the_same_change_cannot_be_recorded_twice() {
        let s = session();
        let raw = version_of_e1(&s, "employee", "{}", 1);
        for _ in 0..2 {
            Spi::run(&format!(
                "INSERT INTO employes_changes (session_id, employee_id, kind, change_type, field_path, detected_at, raw_to_id)
                 VALUES ('{s}', 'e1', 'employee', 'created', '$', now(), {raw})"
            ))
            .unwrap();
        }
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
               FROM employes_timeline_events(ARRAY['e1', 'e1', 'nobody'])",
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
                match employes_sync_core::timeline::jsonb_text(&payload) {
                    Some(ours) => assert_eq!(ours, printed),
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
            let stored: crate::worker::StoredPayloads = replaced
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
            crate::worker::write_timeline(
                &plan,
                &crate::worker::payload_events(&incoming),
                &stored,
            )
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
        error = "employes_timeline_apply: the keys to delete and the events to write must be non-NULL arrays of one length each"
    )]
    fn timeline_apply_refuses_event_arrays_of_different_lengths() {
        Spi::run(
            "SELECT employes_timeline_apply('{}', '{}', '{}', ARRAY['e1', 'e1'], ARRAY['2020-01-01']::date[], ARRAY['hired'],
                                            ARRAY['Hired'], ARRAY['{}'], ARRAY['employment:m1:1'], ARRAY[NULL], ARRAY[NULL])",
        )
        .unwrap();
    }

    #[pg_test(
        error = "employes_timeline_apply: the keys to delete and the events to write must be non-NULL arrays of one length each"
    )]
    fn timeline_apply_refuses_a_null_array() {
        Spi::run(
            "SELECT employes_timeline_apply(ARRAY['e1'], ARRAY['hired'], NULL, '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}')",
        )
        .unwrap();
    }

    /// What the worker passes is applied as given: the listed keys deleted (other employees'
    /// rows and other event types untouched), new keys inserted, existing ones updated.
    #[pg_test]
    fn timeline_apply_deletes_and_upserts_what_it_is_given() {
        Spi::run(
            "INSERT INTO employes_timeline VALUES
                ('e1', '2019-01-01', 'hired', 'Hired', '{}', 'employment:m1:1'),
                ('e1', '2019-01-01', 'contract_started', 'Contract started', '{}', 'contract:m1:c1:1'),
                ('e1', '2020-01-01', 'contract_renewed', 'Contract renewed', '{}', 'contract:m1:c2:2'),
                ('e2', '2020-01-01', 'contract_renewed', 'Contract renewed', '{}', 'contract:m1:c2:2')",
        )
        .unwrap();
        let n = Spi::get_one::<i64>(
            "SELECT employes_timeline_apply(ARRAY['e1', 'e1'], ARRAY['contract_renewed', 'hired'], ARRAY['contract:m1:c2:2', 'nope'],
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

    #[pg_test(
        error = "employes_sync_employment_events: the payload is not valid JSON at byte 10: expected a value"
    )]
    fn employment_events_reject_text_that_is_not_json() {
        Spi::run("SELECT * FROM employes_sync_employment_events('{\"data\": [}')").unwrap();
    }

    /// With the foreign-key triggers off (as the worker runs its history writes), the write
    /// statement itself refuses a change whose starting version is gone and a session that is.
    #[pg_test]
    fn history_writes_check_their_references_set_wise_without_the_triggers() {
        use crate::worker::{write_versions, References};
        use employes_sync_core::classify::{Change, ChangeType, Kind};
        use employes_sync_core::versions::NewVersion;
        use serde_json::json;
        let s = session();
        let raw = version_of_e1(&s, "employee", "{}", 1);
        assert_eq!(References::decide(), Ok(References::SetWise));
        Spi::run("SELECT set_config('session_replication_role', 'replica', true)").unwrap();
        // Each write for an employee of its own: a failed write is not rolled back here (the
        // worker's transaction would be), so its new version stays current.
        let version = |n: i64, from: i64| NewVersion {
            employee_id: format!("e{n}"),
            payload: json!({"n": n, "wage": 2846.5}),
            content_hash: "b".repeat(64),
            version: 1,
            close_raw_id: None,
            from_raw_id: Some(from),
            changes: vec![Change {
                change_type: ChangeType::Updated,
                field_path: "$.n".into(),
                old_value: Some(json!(1)),
                new_value: Some(serde_json::Value::Null),
                effective_date: chrono::NaiveDate::from_ymd_opt(2021, 1, 31),
            }],
        };
        let err = write_versions(Kind::Employee, &s, &[version(2, raw + 1000)]);
        assert_eq!(
            err,
            Err("1 of the 1 versions the employee changes start from no longer exist: modified concurrently, nothing written".into())
        );
        let gone = "00000000-0000-0000-0000-000000000001";
        let err = write_versions(Kind::Employee, gone, &[version(3, raw)]);
        assert_eq!(
            err,
            Err(format!("session {gone} no longer exists: nothing written"))
        );
        let ok = write_versions(Kind::Employee, &s, &[version(4, raw)]).unwrap();
        assert_eq!((ok.versions_written, ok.changes_detected), (1, 1));
        // What is stored: the payload, the values (a JSON null as SQL NULL), the date, the links.
        let stored = Spi::get_one::<String>(&format!(
            "SELECT concat_ws(' | ', r.payload::text, c.change_type, c.field_path, c.old_value::text,
                              coalesce(c.new_value::text, 'NULL'), c.effective_date, c.raw_from_id = {raw},
                              c.raw_to_id = r.id, c.session_id::text = '{s}', r.first_session_id::text = '{s}')
               FROM employes_changes c JOIN employes_raw_data r ON r.id = c.raw_to_id WHERE r.employee_id = 'e4'"
        ))
        .unwrap()
        .unwrap();
        assert_eq!(
            stored,
            r#"{"n": 4, "wage": 2846.5} | updated | $.n | 1 | NULL | 2021-01-31 | t | t | t | t"#
        );
    }

    /// Replica mode would also skip a trigger or rule of the user's, or a foreign key that is not
    /// the extension's: any of them puts the per-row checks back.
    #[pg_test]
    fn a_trigger_rule_or_foreign_key_of_the_users_keeps_the_per_row_checks() {
        use crate::worker::References;
        let decide = || References::decide().unwrap();
        assert_eq!(decide(), References::SetWise);
        Spi::run(
            "CREATE FUNCTION audit() RETURNS trigger LANGUAGE plpgsql AS 'BEGIN RETURN NULL; END';
             CREATE TRIGGER audit AFTER INSERT ON employes_changes FOR EACH ROW EXECUTE FUNCTION audit()",
        )
        .unwrap();
        assert_eq!(decide(), References::PerRow);
        // Disabled, or firing whatever the role: nothing would be skipped.
        Spi::run("ALTER TABLE employes_changes DISABLE TRIGGER audit").unwrap();
        assert_eq!(decide(), References::SetWise);
        Spi::run("ALTER TABLE employes_changes ENABLE ALWAYS TRIGGER audit").unwrap();
        assert_eq!(decide(), References::SetWise);
        // Firing only in replica mode: it would fire where it never does.
        Spi::run("ALTER TABLE employes_changes ENABLE REPLICA TRIGGER audit").unwrap();
        assert_eq!(decide(), References::PerRow);
        Spi::run("DROP TRIGGER audit ON employes_changes").unwrap();
        assert_eq!(decide(), References::SetWise);
        Spi::run("CREATE RULE r AS ON UPDATE TO employes_raw_data DO ALSO NOTIFY employes_raw_data_updated").unwrap();
        assert_eq!(decide(), References::PerRow);
        Spi::run("DROP RULE r ON employes_raw_data").unwrap();
        Spi::run("ALTER TABLE employes_changes ADD COLUMN reviewed_in uuid REFERENCES employes_sync_sessions (id)").unwrap();
        assert_eq!(decide(), References::PerRow);
    }

    #[pg_test(
        error = "duplicate key value violates unique constraint \"employes_sync_sessions_one_active\""
    )]
    fn two_active_sessions_are_impossible() {
        for _ in 0..2 {
            Spi::run("INSERT INTO employes_sync_sessions (source, triggered_by) VALUES ('manual', 'test')").unwrap();
        }
    }

    #[pg_test]
    fn api_dates_and_numbers_read_leniently() {
        let got = Spi::get_one::<String>(
            "SELECT concat_ws(',', employes_sync_jdate('\"2025-07-01T00:00:00\"'), employes_sync_jdate('\"0001-01-01T00:00:00\"'),
                              employes_sync_jdate('\"soon\"'), employes_sync_jdate('12'), employes_sync_jnum('2846.0'),
                              employes_sync_jnum('\"30\"'))",
        )
        .unwrap();
        assert_eq!(got.as_deref(), Some("2025-07-01,2846.0"));
        // Impossible or out-of-range dates are NULL, never an error that would break a view.
        let got = Spi::get_one::<String>(
            "SELECT concat_ws(',', employes_sync_jdate('\"2024-02-29T00:00:00\"'), employes_sync_jdate('\"2025-02-30T00:00:00\"'),
                              employes_sync_jdate('\"0000-01-01\"'), employes_sync_jdate('\"9999-12-31\"'),
                              employes_sync_jdate('\"2025-07-011\"'), employes_sync_jdate('\"2025-7-1\"'),
                              employes_sync_jdate('{\"start_date\": \"2025-01-01\"}'), employes_sync_jdate(NULL),
                              employes_sync_jdate('null'))",
        )
        .unwrap();
        assert_eq!(got.as_deref(), Some("2024-02-29,9999-12-31"));
    }

    #[pg_test]
    fn only_a_sync_worker_counts_as_alive() {
        // This backend, the logical replication launcher (a background worker of another type),
        // a pid that does not exist and nonsense are all "not a sync worker".
        let got = Spi::get_one::<String>(
            "SELECT concat_ws(',', employes_sync_worker_alive(pg_backend_pid()),
                              employes_sync_worker_alive((SELECT pid FROM pg_stat_activity WHERE backend_type = 'logical replication launcher')),
                              employes_sync_worker_alive(2147483647), employes_sync_worker_alive(0),
                              employes_sync_worker_alive(-1), employes_sync_worker_alive(NULL) IS NULL)",
        )
        .unwrap();
        assert_eq!(got.as_deref(), Some("f,f,f,f,f,t"));
    }

    #[pg_test]
    fn public_gets_nothing() {
        let granted = Spi::get_one::<i64>(
            "SELECT count(*) FROM information_schema.role_table_grants WHERE grantee = 'PUBLIC' AND table_name LIKE 'employes%'",
        )
        .unwrap();
        assert_eq!(granted, Some(0));
        let executable = Spi::get_one::<String>(
            "SELECT string_agg(p.proname, ',' ORDER BY p.proname) FROM pg_proc p
              WHERE p.proname LIKE 'employes%' AND has_function_privilege('public', p.oid, 'EXECUTE')",
        )
        .unwrap();
        assert_eq!(
            executable.as_deref(),
            Some("employes_sync_jdate,employes_sync_jnum")
        );
    }
}

#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    pub fn postgresql_conf_options() -> Vec<&'static str> {
        vec![
            "shared_preload_libraries = 'pg_cron,employes_sync'",
            "cron.database_name = 'pgrx_tests'",
        ]
    }
}
