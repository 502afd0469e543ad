//! The sync end to end, as a user runs it: trigger from a client connection, a background worker
//! fetching from employes-sim over loopback, raw versions, typed changes and the timeline.

use std::collections::BTreeSet;

use employes_sim::{AdvanceOptions, Endpoint, FaultAction, FaultRule, StepReport};
use employes_sync_e2e::*;

/// Fast but still rate limited: the sim allows 200/s, the extension paces at 150/s.
fn setup(name: &str, employees: usize) -> (Cluster, Sim, Client) {
    let cluster = Cluster::start(name, &[]);
    let sim = sim(employees, 1, 200.0);
    cluster.use_sim(&sim, 150.0);
    let c = cluster.connect();
    (cluster, sim, c)
}

fn truth_pairs(report: &StepReport) -> BTreeSet<(String, String)> {
    report
        .changes
        .iter()
        .map(|t| (t.employee_id.clone(), t.change_type.clone()))
        .collect()
}

fn assert_matches_truth(c: &mut Client, session: &Session, report: &StepReport) {
    assert_eq!(session.status, "completed", "{session:?}");
    let detected = change_pairs(c, session.id);
    let truth = truth_pairs(report);
    let missed: Vec<_> = truth.difference(&detected).collect();
    let noise: Vec<_> = detected.difference(&truth).collect();
    assert!(
        missed.is_empty() && noise.is_empty(),
        "step {}: missed {missed:?}\nnoise {noise:?}",
        report.step
    );
    let dates = change_dates(c, session.id);
    for t in &report.changes {
        if let Some(eff) = &t.effective_date {
            assert!(
                dates.contains(&(
                    t.employee_id.clone(),
                    t.change_type.clone(),
                    Some(eff.clone())
                )),
                "step {}: {} {} has no change effective {eff}; recorded: {:?}",
                report.step,
                t.employee_id,
                t.change_type,
                dates
                    .iter()
                    .filter(|d| d.0 == t.employee_id)
                    .collect::<Vec<_>>()
            );
        }
    }
}

#[test]
fn first_sync_creates_every_employee_with_true_counters() {
    let (_cluster, sim, mut c) = setup("first", 117);
    let s = sync(&mut c);
    assert_eq!(s.status, "completed", "{s:?}");
    assert_eq!(s.error, None);
    assert_eq!((s.pages_total, s.pages_done), (Some(2), 2));
    assert_eq!((s.employees_total, s.employees_done), (Some(117), 117));
    assert_eq!(s.snapshot_complete, Some(true));
    let stats = sim.stats();
    assert_eq!(
        s.api_requests as u64, stats.total,
        "api_requests must equal the requests the API received"
    );
    assert_eq!(s.api_requests, 2 + 117);
    assert_eq!(s.retries, 0);
    assert_eq!(
        count(
            &mut c,
            "SELECT count(*) FROM employes_raw_data WHERE kind = 'employee'"
        ),
        117
    );
    assert_eq!(
        count(
            &mut c,
            "SELECT count(*) FROM employes_raw_data WHERE kind = 'employments'"
        ),
        117
    );
    assert_eq!(s.versions_written, 234);
    let created: BTreeSet<String> = c
        .query("SELECT employee_id FROM employes_changes WHERE change_type = 'created' AND kind = 'employee'", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let listed: BTreeSet<String> = sim.listed_employee_ids().into_iter().collect();
    assert_eq!(created, listed);
    assert_eq!(
        count(&mut c, "SELECT count(*) FROM employes_changes"),
        s.changes_detected as i64
    );
    assert_eq!(
        count(
            &mut c,
            "SELECT count(*) FROM employes_changes WHERE change_type <> 'created'"
        ),
        0
    );
    assert_eq!(count(&mut c, "SELECT count(*) FROM employes_current"), 117);
    assert!(
        count(
            &mut c,
            "SELECT count(*) FROM employes_timeline WHERE event_type = 'hired'"
        ) > 50
    );
    // The employee as we knew it: NULL before the first sync, the record after.
    let id = sim.listed_employee_ids()[0].clone();
    let before: Option<serde_json::Value> = c
        .query_one(
            "SELECT employes_employee_as_of($1, now() - interval '1 hour')",
            &[&id],
        )
        .unwrap()
        .get(0);
    assert_eq!(before, None);
    let now: Option<serde_json::Value> = c
        .query_one("SELECT employes_employee_as_of($1, now())", &[&id])
        .unwrap()
        .get(0);
    assert_eq!(now.unwrap()["id"], serde_json::Value::String(id));
}

#[test]
fn resync_without_changes_writes_nothing() {
    let (_cluster, sim, mut c) = setup("resync", 117);
    sync(&mut c);
    let before = fingerprint(&mut c);
    let xact_before = count(&mut c, "SELECT n_tup_ins + n_tup_upd + n_tup_del FROM pg_stat_user_tables WHERE relname = 'employes_raw_data'");
    // Noise-only edits (dt_update, 2846 vs 2846.0, key order) are not changes either.
    let report = sim.advance_with(AdvanceOptions {
        noise: Some(10),
        ..AdvanceOptions::none()
    });
    assert!(report.changes.is_empty());
    assert!(!report.noise_employee_ids.is_empty());
    let s = sync(&mut c);
    assert_eq!(s.status, "completed", "{s:?}");
    assert_eq!(
        (s.versions_written, s.changes_detected, s.employees_deleted),
        (0, 0, 0)
    );
    assert_eq!(fingerprint(&mut c), before);
    let xact_after = count(&mut c, "SELECT n_tup_ins + n_tup_upd + n_tup_del FROM pg_stat_user_tables WHERE relname = 'employes_raw_data'");
    assert_eq!(
        xact_before, xact_after,
        "a re-sync without changes must not write a single raw row"
    );
}

/// DESIGN: the payload is stored exactly as received. A number keeps the spelling the API sent
/// (2846.50 stays 2846.50, not 2846.5), in the employee record and in the /employments history;
/// a later sync that only spells it differently writes nothing.
#[test]
fn payloads_keep_numbers_as_the_api_wrote_them() {
    let (_cluster, sim, mut c) = setup("exact_numbers", 20);
    sync(&mut c);
    let spelled = |text: &str| serde_json::from_str::<serde_json::Value>(text).unwrap();
    let mut dump = sim.dump();
    // An employee with a monthly wage in the record and salary periods in the history.
    let i = dump["employees"]
        .as_array()
        .unwrap()
        .iter()
        .position(|e| {
            e["record"]["employment"]["salary"]["month_wage"].is_number()
                && e["record"]["employment"]["contract"]["hours_per_week"].is_number()
                && e["employments"][0]["salary"]
                    .as_array()
                    .is_some_and(|p| p.last().is_some_and(|p| p["month_wage"].is_number()))
        })
        .unwrap();
    let entry = &mut dump["employees"][i];
    let id = entry["record"]["id"].as_str().unwrap().to_string();
    assert_ne!(
        entry["record"]["employment"]["salary"]["month_wage"].as_f64(),
        Some(2846.5)
    );
    entry["record"]["employment"]["salary"]["month_wage"] = spelled("2846.50");
    entry["record"]["employment"]["contract"]["hours_per_week"] = spelled("32.0");
    let periods = entry["employments"][0]["salary"].as_array_mut().unwrap();
    let last = periods.len() - 1;
    periods[last]["month_wage"] = spelled("2846.50");
    sim.load(dump.clone()).unwrap();
    let s = sync(&mut c);
    assert_eq!(s.status, "completed", "{s:?}");
    assert_eq!(s.versions_written, 2, "{s:?}");
    let stored = |c: &mut Client, kind: &str, path: &str| -> String {
        c.query_one(
            &format!(
                "SELECT payload #>> '{path}' FROM employes_raw_data
                  WHERE kind = $1 AND employee_id = $2 AND valid_to IS NULL"
            ),
            &[&kind, &id],
        )
        .unwrap()
        .get(0)
    };
    let wage = "{employment,salary,month_wage}";
    assert_eq!(stored(&mut c, "employee", wage), "2846.50");
    assert_eq!(
        stored(&mut c, "employee", "{employment,contract,hours_per_week}"),
        "32.0"
    );
    assert_eq!(
        stored(
            &mut c,
            "employments",
            &format!("{{data,0,salary,{last},month_wage}}")
        ),
        "2846.50"
    );
    // The same values spelled otherwise: not content, nothing written.
    let entry = &mut dump["employees"][i];
    entry["record"]["employment"]["salary"]["month_wage"] = spelled("2846.5");
    entry["record"]["employment"]["contract"]["hours_per_week"] = spelled("32");
    sim.load(dump).unwrap();
    let s = sync(&mut c);
    assert_eq!(s.status, "completed", "{s:?}");
    assert_eq!((s.versions_written, s.changes_detected), (0, 0), "{s:?}");
    assert_eq!(stored(&mut c, "employee", wage), "2846.50");
}

#[test]
fn detected_changes_equal_the_simulators_ground_truth() {
    let (_cluster, sim, mut c) = setup("truth", 150);
    sync(&mut c);
    for _ in 0..3 {
        let report = sim.advance();
        assert!(!report.changes.is_empty());
        let s = sync(&mut c);
        assert_matches_truth(&mut c, &s, &report);
    }
    // Every kind of event at least once, rehire and back-dated raise included.
    let report = sim.advance_with(AdvanceOptions {
        raises: Some(3),
        backdated_raises: Some(2),
        hours_changes: Some(2),
        renewals: Some(2),
        conversions: Some(1),
        hires: Some(2),
        terminations: Some(2),
        removals: Some(2),
        restores: Some(1),
        rehires: Some(2),
        noise: Some(5),
    });
    let events: BTreeSet<&str> = report.changes.iter().map(|t| t.event.as_str()).collect();
    for e in [
        "raise",
        "backdated_raise",
        "hours_change",
        "hire",
        "termination",
        "removal",
        "rehire",
    ] {
        assert!(
            events.contains(e),
            "the step should contain a {e}: {events:?}"
        );
    }
    let s = sync(&mut c);
    assert_matches_truth(&mut c, &s, &report);
    // And again: nothing new.
    let s = sync(&mut c);
    assert_eq!((s.versions_written, s.changes_detected), (0, 0), "{s:?}");
    assert_history_consistent(&mut c);
    // The timeline kept up incrementally is exactly what a full rebuild computes.
    let timeline = |c: &mut Client| -> Vec<String> {
        c.query(
            "SELECT t::text FROM employes_timeline t ORDER BY employee_id, event_type, event_key",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
    };
    let incremental = timeline(&mut c);
    assert!(incremental.len() > 300, "{}", incremental.len());
    // A full rebuild writes only differences: none.
    let rewritten: i64 = c
        .query_one("SELECT employes_timeline_refresh()", &[])
        .unwrap()
        .get(0);
    assert_eq!(rewritten, 0, "a full rebuild found rows the syncs missed");
    assert_eq!(timeline(&mut c), incremental);
    // Rows gone, altered or stale for some employees: a refresh of those employees puts back
    // exactly what a rebuild computes, deleting the stale ones.
    let ids: Vec<String> = c
        .query(
            "SELECT DISTINCT employee_id FROM employes_timeline ORDER BY 1 LIMIT 5",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    c.execute(
        "WITH d AS (DELETE FROM employes_timeline WHERE employee_id = $1 RETURNING 1),
              u AS (UPDATE employes_timeline SET details = '{}', title = 'tampered' WHERE employee_id = $2 RETURNING 1)
         INSERT INTO employes_timeline
         SELECT employee_id, event_date, event_type, title, details, event_key || ':stale', company_id
           FROM employes_timeline WHERE employee_id = ANY ($3)",
        &[&ids[0], &ids[1], &&ids[2..]],
    )
    .unwrap();
    assert_ne!(timeline(&mut c), incremental);
    c.execute("SELECT employes_timeline_refresh($1)", &[&ids])
        .unwrap();
    assert_eq!(timeline(&mut c), incremental);
    // And from nothing, a rebuild writes every row, the same ones.
    c.batch_execute("DELETE FROM employes_timeline").unwrap();
    let written: i64 = c
        .query_one("SELECT employes_timeline_refresh()", &[])
        .unwrap()
        .get(0);
    assert_eq!(written as usize, incremental.len());
    assert_eq!(timeline(&mut c), incremental);
}

/// The history writes run with the foreign-key triggers off and check references set-wise;
/// a trigger of the user's on the history puts the per-row checks back, and it fires for
/// every row the sync writes.
#[test]
fn a_users_trigger_on_the_history_fires_for_every_row_a_sync_writes() {
    let (_cluster, sim, mut c) = setup("user_trigger", 40);
    let references = |c: &mut Client, session: uuid::Uuid| -> Vec<String> {
        c.query(
            "SELECT details->>'references' FROM employes_sync_logs
              WHERE session_id = $1 AND details ? 'references' ORDER BY id",
            &[&session],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
    };
    let s = sync(&mut c);
    assert_eq!(s.status, "completed", "{s:?}");
    assert_eq!(references(&mut c, s.id), ["set-wise"]);
    c.batch_execute(
        "CREATE TABLE audit (change_id bigint, raw_to_id bigint);
         CREATE FUNCTION audit_change() RETURNS trigger LANGUAGE plpgsql AS
           'BEGIN INSERT INTO audit VALUES (NEW.id, NEW.raw_to_id); RETURN NULL; END';
         CREATE TRIGGER audit AFTER INSERT ON employes_changes FOR EACH ROW EXECUTE FUNCTION audit_change();",
    )
    .unwrap();
    sim.advance_with(AdvanceOptions {
        raises: Some(5),
        hours_changes: Some(2),
        ..AdvanceOptions::default()
    });
    let s = sync(&mut c);
    assert_eq!(s.status, "completed", "{s:?}");
    assert!(s.changes_detected >= 7, "{s:?}");
    assert_eq!(references(&mut c, s.id), ["per-row"]);
    assert_eq!(
        count(
            &mut c,
            &format!(
                "SELECT count(*) FROM audit a JOIN employes_changes ch ON ch.id = a.change_id
                  WHERE ch.session_id = '{}' AND a.raw_to_id IS NOT DISTINCT FROM ch.raw_to_id",
                s.id
            )
        ),
        s.changes_detected as i64
    );
    // Without it, set-wise again; the history is whole either way.
    c.batch_execute("DROP TRIGGER audit ON employes_changes")
        .unwrap();
    let s = raise_and_sync(&sim, &mut c, 5);
    assert!(s.changes_detected >= 5, "{s:?}");
    assert_eq!(references(&mut c, s.id), ["set-wise"]);
    assert_history_consistent(&mut c);
}

/// Gives `n` employees a raise and syncs; the sync must complete.
fn raise_and_sync(sim: &Sim, c: &mut Client, n: usize) -> Session {
    sim.advance_with(AdvanceOptions {
        raises: Some(n),
        ..AdvanceOptions::default()
    });
    let s = sync(c);
    assert_eq!(s.status, "completed", "{s:?}");
    s
}

/// A database may run its sessions with `session_replication_role = replica` (a logical
/// replication subscriber, say). The worker turns the triggers off for its history write only and
/// then gives the setting back as configured, not `origin`: what it writes after (the timeline,
/// the session's progress) runs as the database says.
#[test]
fn the_history_write_gives_a_configured_replication_role_back() {
    let (cluster, sim, mut c) = setup("replica_role", 30);
    c.batch_execute(
        "ALTER DATABASE postgres SET session_replication_role = replica;
         CREATE TABLE progress_seen (status text);
         CREATE FUNCTION progress_seen() RETURNS trigger LANGUAGE plpgsql AS
           'BEGIN INSERT INTO progress_seen VALUES (NEW.status); RETURN NULL; END';
         CREATE TRIGGER progress_seen AFTER UPDATE ON employes_sync_sessions
           FOR EACH ROW EXECUTE FUNCTION progress_seen();",
    )
    .unwrap();
    // Every session from now on runs as the database says, this client's too.
    let mut c = cluster.connect();
    sync(&mut c);
    let s = raise_and_sync(&sim, &mut c, 5);
    assert!(s.versions_written >= 5, "{s:?}");
    // In replica mode a trigger of the default kind does not fire: no session update by the
    // worker, before or after its history writes, may have run as origin.
    assert_eq!(count(&mut c, "SELECT count(*) FROM progress_seen"), 0);
    assert_history_consistent(&mut c);
}

#[test]
fn removed_employee_is_deleted_then_restored_and_history_is_kept() {
    let (_cluster, sim, mut c) = setup("removal", 60);
    sync(&mut c);
    let report = sim.advance_with(AdvanceOptions {
        removals: Some(1),
        ..AdvanceOptions::none()
    });
    let gone = report.changes[0].employee_id.clone();
    let s = sync(&mut c);
    assert_eq!(s.employees_deleted, 1, "{s:?}");
    assert_eq!(
        change_pairs(&mut c, s.id),
        BTreeSet::from([(gone.clone(), "deleted".to_string())])
    );
    assert_eq!(
        count(
            &mut c,
            &format!("SELECT count(*) FROM employes_current WHERE employee_id = '{gone}'")
        ),
        0
    );
    assert_eq!(
        count(
            &mut c,
            &format!("SELECT count(*) FROM employes_raw_data WHERE employee_id = '{gone}'")
        ),
        2
    );
    assert_eq!(count(&mut c, &format!("SELECT count(*) FROM employes_timeline WHERE employee_id = '{gone}' AND event_type = 'left'")), 1);

    let report = sim.advance_with(AdvanceOptions {
        restores: Some(1),
        ..AdvanceOptions::none()
    });
    assert_eq!(report.changes[0].employee_id, gone);
    let s = sync(&mut c);
    assert_eq!(
        change_pairs(&mut c, s.id),
        BTreeSet::from([(gone.clone(), "restored".to_string())])
    );
    assert_eq!(
        count(
            &mut c,
            &format!("SELECT count(*) FROM employes_current WHERE employee_id = '{gone}'")
        ),
        1
    );
    assert_eq!(
        count(
            &mut c,
            &format!("SELECT count(*) FROM employes_raw_data WHERE employee_id = '{gone}'")
        ),
        4
    );
    assert_eq!(count(&mut c, &format!("SELECT count(*) FROM employes_timeline WHERE employee_id = '{gone}' AND event_type = 'restored'")), 1);
    assert_history_consistent(&mut c);
}

#[test]
fn a_failed_page_deletes_nobody_and_says_which_url() {
    let (_cluster, sim, mut c) = setup("failedpage", 250);
    sync(&mut c);
    sim.advance_with(AdvanceOptions {
        removals: Some(2),
        ..AdvanceOptions::none()
    });
    sim.set_faults(vec![FaultRule {
        endpoint: Endpoint::List,
        page: Some(2),
        employee_ids: None,
        company_id: None,
        every: None,
        skip: 0,
        count: None,
        action: FaultAction::MalformedJson,
    }]);
    let s = sync(&mut c);
    assert_eq!(s.status, "partial", "{s:?}");
    let error = s.error.clone().unwrap();
    assert!(
        error.contains("page=2") && error.contains("not valid JSON"),
        "{error}"
    );
    assert!(!error.contains("demo-token"));
    assert_eq!(s.snapshot_complete, Some(false));
    assert_eq!(s.employees_deleted, 0);
    assert_eq!(
        count(
            &mut c,
            "SELECT count(*) FROM employes_changes WHERE change_type = 'deleted'"
        ),
        0
    );
    assert!(s.retries >= 3, "malformed pages are retried: {s:?}");

    sim.clear_faults();
    let s = sync(&mut c);
    assert_eq!(s.status, "completed", "{s:?}");
    assert_eq!(s.employees_deleted, 2);
}

#[test]
fn two_concurrent_triggers_start_one_session() {
    let (cluster, _sim, mut c) = setup("concurrent", 40);
    let handles: Vec<_> = (0..2)
        .map(|i| {
            let mut c = cluster.connect();
            std::thread::spawn(move || {
                trigger(&mut c, "manual", &format!("user{i}@example.org")).id
            })
        })
        .collect();
    let ids: BTreeSet<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(ids.len(), 1, "both callers must get the same session");
    let id = *ids.iter().next().unwrap();
    assert_eq!(wait(&mut c, id).status, "completed");
    assert_eq!(
        count(&mut c, "SELECT count(*) FROM employes_sync_sessions"),
        1
    );
}

#[test]
fn the_worker_waits_for_the_trigger_to_commit_and_forgets_a_rolled_back_one() {
    let (_cluster, _sim, mut c) = setup("txn", 30);
    // Rolled back: the session never existed, and no worker runs on for it.
    let mut tx = c.transaction().unwrap();
    let s = Session::from(
        &tx.query_one(
            &format!("SELECT {SESSION_COLUMNS} FROM employes_sync_trigger('manual', 'dba')"),
            &[],
        )
        .unwrap(),
    );
    assert_eq!(s.status, "queued");
    tx.rollback().unwrap();
    wait_until(
        std::time::Duration::from_secs(20),
        "the worker of a rolled-back trigger to exit",
        || {
            count(
                &mut c,
                "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'employes_sync worker'",
            ) == 0
        },
    );
    assert_eq!(
        count(&mut c, "SELECT count(*) FROM employes_sync_sessions"),
        0
    );

    // Committed late: the worker started at once, waited, then ran the sync.
    let mut tx = c.transaction().unwrap();
    let s = Session::from(
        &tx.query_one(
            &format!("SELECT {SESSION_COLUMNS} FROM employes_sync_trigger('manual', 'dba')"),
            &[],
        )
        .unwrap(),
    );
    let err = tx
        .query_one("SELECT status FROM employes_sync_wait($1, 1)", &[&s.id])
        .unwrap_err();
    assert_eq!(err.code().unwrap().code(), "PT409", "{err}");
    tx.rollback().unwrap();
    let mut tx = c.transaction().unwrap();
    let s = Session::from(
        &tx.query_one(
            &format!("SELECT {SESSION_COLUMNS} FROM employes_sync_trigger('manual', 'dba')"),
            &[],
        )
        .unwrap(),
    );
    std::thread::sleep(std::time::Duration::from_millis(500)); // the caller is slow to commit
    tx.commit().unwrap();
    let done = wait(&mut c, s.id);
    assert_eq!(done.status, "completed", "{done:?}");
    assert_eq!(done.employees_done, 30);
}

#[test]
fn no_free_worker_slot_is_recorded_on_the_session() {
    // The logical replication launcher, pg_cron and our watchdog take all three slots.
    let cluster = Cluster::start("noslot", &["max_worker_processes = 3".into()]);
    let sim = sim(10, 1, 200.0);
    cluster.use_sim(&sim, 150.0);
    let mut c = cluster.connect();
    wait_until(
        std::time::Duration::from_secs(20),
        "pg_cron and the watchdog to take the slots",
        || {
            count(&mut c, "SELECT count(*) FROM pg_stat_activity WHERE backend_type IN ('pg_cron launcher', 'employes_sync watchdog')") == 2
        },
    );
    let s = trigger(&mut c, "manual", "dba");
    assert_eq!(s.status, "error");
    let error = s.error.unwrap();
    assert!(
        error.contains("no background worker could be started")
            && error.contains("max_worker_processes (3)"),
        "{error}"
    );
    assert_eq!(sim.stats().total, 0);
    // The next trigger is not blocked by it.
    assert_eq!(
        count(
            &mut c,
            "SELECT count(*) FROM employes_sync_sessions WHERE status IN ('queued', 'running')"
        ),
        0
    );
}

#[test]
fn triggered_by_defaults_to_the_jwt_email_then_the_role_as_postgrest_calls_it() {
    let (_cluster, _sim, mut c) = setup("postgrest", 10);
    c.batch_execute(
        "CREATE ROLE authenticated NOLOGIN;
         GRANT EXECUTE ON FUNCTION employes_sync_trigger(text, text, uuid), employes_sync_wait(uuid, integer) TO authenticated;",
    )
    .unwrap();
    // What PostgREST does for POST /rpc/employes_sync_trigger {"source": "manual"} with a JWT.
    let mut tx = c.transaction().unwrap();
    tx.batch_execute(
        "SET LOCAL request.jwt.claims = '{\"email\": \"anna@example.org\", \"role\": \"authenticated\"}';
         SET LOCAL ROLE authenticated;",
    )
    .unwrap();
    let body: serde_json::Value = tx
        .query_one(
            "SELECT to_json(r) FROM employes_sync_trigger(source => 'manual') r",
            &[],
        )
        .unwrap()
        .get(0);
    tx.commit().unwrap();
    assert_eq!(body["triggered_by"], "anna@example.org");
    assert_eq!(body["source"], "manual");
    assert_eq!(body["status"], "queued");
    let id: uuid::Uuid = body["id"].as_str().unwrap().parse().unwrap();
    assert_eq!(wait(&mut c, id).status, "completed");

    // No claims: the role that called, not the function's owner.
    let mut tx = c.transaction().unwrap();
    tx.batch_execute("SET LOCAL ROLE authenticated").unwrap();
    let row = tx
        .query_one("SELECT id, triggered_by FROM employes_sync_trigger()", &[])
        .unwrap();
    tx.commit().unwrap();
    assert_eq!(row.get::<_, String>(1), "authenticated");
    wait(&mut c, row.get(0));
    // Malformed claims are ignored rather than failing the call.
    let mut tx = c.transaction().unwrap();
    tx.batch_execute("SET LOCAL request.jwt.claims = 'not json'")
        .unwrap();
    let who: String = tx
        .query_one("SELECT triggered_by FROM employes_sync_trigger()", &[])
        .unwrap()
        .get(0);
    tx.commit().unwrap();
    assert_eq!(who, "postgres");
}

#[test]
fn old_log_lines_are_pruned_after_the_retention_and_history_is_kept() {
    let cluster = Cluster::start(
        "retention",
        &["employes_sync.log_retention_days = 7".into()],
    );
    let sim = sim(10, 1, 200.0);
    cluster.use_sim(&sim, 150.0);
    let mut c = cluster.connect();
    let first = sync(&mut c);
    // Make the first session's log lines 8 days old, one of them only 6.
    c.execute(
        "UPDATE employes_sync_logs SET logged_at = now() - interval '8 days' WHERE session_id = $1",
        &[&first.id],
    )
    .unwrap();
    c.execute(
        "UPDATE employes_sync_logs SET logged_at = now() - interval '6 days'
          WHERE id = (SELECT min(id) FROM employes_sync_logs WHERE session_id = $1)",
        &[&first.id],
    )
    .unwrap();
    let versions = count(&mut c, "SELECT count(*) FROM employes_raw_data");
    let changes = count(&mut c, "SELECT count(*) FROM employes_changes");
    let second = sync(&mut c);
    assert_eq!(second.status, "completed");
    let kept: i64 = c
        .query_one(
            "SELECT count(*) FROM employes_sync_logs WHERE session_id = $1",
            &[&first.id],
        )
        .unwrap()
        .get(0);
    assert_eq!(kept, 1, "only the line younger than 7 days is kept");
    assert!(
        count(
            &mut c,
            &format!(
                "SELECT count(*) FROM employes_sync_logs WHERE session_id = '{}'",
                second.id
            )
        ) > 3
    );
    // Sessions and history are never pruned.
    assert_eq!(
        count(&mut c, "SELECT count(*) FROM employes_sync_sessions"),
        2
    );
    assert_eq!(
        count(&mut c, "SELECT count(*) FROM employes_raw_data"),
        versions
    );
    assert_eq!(
        count(&mut c, "SELECT count(*) FROM employes_changes"),
        changes
    );
}

#[test]
fn a_dead_api_ends_the_session_as_error_naming_the_url_and_changes_nothing() {
    let cluster = Cluster::start("deadapi", &fast_conf());
    let sim = sim(20, 1, 0.0);
    cluster.use_sim(&sim, 300.0);
    let mut c = cluster.connect();
    assert_eq!(sync(&mut c).status, "completed");
    let before = fingerprint(&mut c);
    // Nothing listens at the configured address any more.
    let port = sim.addr().port();
    sim.shutdown();
    let s = sync(&mut c);
    assert_eq!(s.status, "error", "{s:?}");
    let error = s.error.clone().unwrap();
    assert!(
        error.contains(&format!("127.0.0.1:{port}"))
            && error.contains("could not be fetched")
            && error.contains("3 attempts"),
        "{error}"
    );
    assert_eq!(s.retries, 2, "{s:?}");
    assert_eq!(s.employees_deleted, 0);
    assert_eq!(fingerprint(&mut c), before);
    let state: String = c
        .query_one("SELECT employes_sync_status() ->> 'state'", &[])
        .unwrap()
        .get(0);
    assert_eq!(state, "error");
}

/// Installed in a database whose default collation is linguistic (ICU `en-US`, as many are), a
/// sync writes the same history as in a `C` database, and the history's text keys still compare
/// byte by byte: text of the database's default collation (a literal, a parameter, a column of
/// the user's) compared with them takes their collation and finds them through their indexes.
#[test]
fn a_database_with_a_linguistic_default_collation_gets_the_same_history() {
    let (cluster, _sim, mut c) = setup("icu", 20);
    c.batch_execute(
        "CREATE DATABASE app LOCALE_PROVIDER icu ICU_LOCALE 'en-US' TEMPLATE template0",
    )
    .unwrap();
    let mut app = Client::connect(
        &format!(
            "host=127.0.0.1 port={} user=postgres dbname=app",
            cluster.port
        ),
        NoTls,
    )
    .unwrap();
    app.batch_execute("CREATE EXTENSION employes_sync").unwrap();
    // The database's own comparisons are linguistic: 'a' sorts before 'B'.
    let linguistic: bool = app
        .query_one("SELECT 'a'::text < 'B'::text", &[])
        .unwrap()
        .get(0);
    assert!(linguistic, "app's default collation is not linguistic");
    let s = sync(&mut app);
    assert_eq!(s.status, "completed", "{s:?}");
    let s = sync(&mut c);
    assert_eq!(s.status, "completed", "{s:?}");
    assert_eq!(fingerprint(&mut app), fingerprint(&mut c));
    // Byte order against a default-collation literal: ids beginning with a-f come after 'Z'.
    let after_z = count(
        &mut app,
        "SELECT count(*) FROM employes_raw_data WHERE employee_id > 'Z'",
    );
    let after_z_in_c = count(
        &mut app,
        "SELECT count(*) FROM employes_raw_data WHERE employee_id > 'Z' COLLATE \"C\"",
    );
    assert!(
        after_z_in_c > 0,
        "no id begins with a-f: the check proves nothing"
    );
    assert_eq!(
        after_z, after_z_in_c,
        "employee_id compared with a default-collation literal linguistically, not byte by byte"
    );
    // A user's column of the default collation joins through the history's index (sequential
    // scans off: these tables are small enough for one to win, and an index whose collation did
    // not match could not be used at all).
    app.batch_execute(
        "CREATE TABLE mine AS SELECT DISTINCT employee_id::text COLLATE \"default\" AS id FROM employes_changes;
         ANALYZE mine; ANALYZE employes_changes; SET enable_seqscan = off;",
    )
    .unwrap();
    let id: String = app
        .query_one("SELECT min(id) FROM mine", &[])
        .unwrap()
        .get(0);
    let plan: Vec<String> = app
        .query(
            "EXPLAIN SELECT c.* FROM mine m JOIN employes_changes c ON c.employee_id = m.id WHERE m.id = $1",
            &[&id],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(
        plan.iter().any(|l| l.contains("employes_changes_employee")),
        "{plan:?}"
    );
}
