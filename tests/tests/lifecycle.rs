//! The history survives what production databases go through: `pg_dump` and `pg_restore` (both
//! formats), an upgrade from the released 0.1.0 with `ALTER EXTENSION ... UPDATE`, a hot standby
//! made with `pg_basebackup`, and its promotion. Each through the real binaries.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use employes_sim::AdvanceOptions;
use employes_sync_e2e::*;
use serde_json::Value;

const EMPLOYEES: usize = 60;
const SEED: u64 = 33;

/// The released 0.1.0.
const RELEASE_0_1_0: &str = "cf9700f";

/// What a database holds: every table's rows, the raw versions' hashes, the sequences and the
/// schedule.
#[derive(Debug, PartialEq, Eq)]
struct Held {
    tables: BTreeMap<String, (i64, String)>,
    content_hashes: String,
    sequences: BTreeMap<String, (i64, bool)>,
    cron_jobs: Vec<String>,
}

fn held(c: &mut Client, leave_out: &BTreeMap<String, Vec<String>>) -> Held {
    Held {
        tables: table_contents(c, leave_out),
        content_hashes: content_hashes(c),
        sequences: sequence_positions(c),
        cron_jobs: c
            .query(
                "SELECT format('%s %s %s %s %s %s', jobid, jobname, schedule, command, database, active) FROM cron.job ORDER BY jobid",
                &[],
            )
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect(),
    }
}

/// A cluster synced twice (the simulator one month on in between), with a schedule.
fn synced_twice(name: &str) -> (Cluster, Sim, Client) {
    let cluster = Cluster::start(name, &fast_conf());
    let sim = sim(EMPLOYEES, SEED, 0.0);
    cluster.use_sim(&sim, 300.0);
    let mut c = cluster.connect();
    assert_eq!(sync(&mut c).status, "completed");
    sim.advance();
    assert_eq!(sync(&mut c).status, "completed");
    c.batch_execute("SELECT employes_sync_schedule('17 3 * * *')")
        .unwrap();
    (cluster, sim, c)
}

/// The SQL text of a dump (a custom-format dump is compressed: printed by pg_restore).
fn dump_text(cluster: &Cluster, dump: &Path, format: &str) -> String {
    if format == "p" {
        std::fs::read_to_string(dump).unwrap()
    } else {
        run_ok({
            let mut cmd = cluster.pg_cmd("pg_restore");
            cmd.args(["-f", "-"]).arg(dump);
            cmd
        })
    }
}

fn no_one_created_twice(c: &mut Client) {
    assert_eq!(
        count(
            c,
            "SELECT count(*) FROM (SELECT employee_id, kind FROM employes_changes WHERE change_type = 'created'
               GROUP BY 1, 2 HAVING count(*) > 1) d"
        ),
        0
    );
}

#[test]
fn dump_and_restore_in_both_formats_keep_every_row_and_the_next_syncs_continue_the_history() {
    let (source, sim, mut c) = synced_twice("dump-src");
    let before = held(&mut c, &BTreeMap::new());
    eprintln!("source database: {before:#?}");
    assert!(before.tables.values().all(|(n, _)| *n > 0), "{before:?}");
    assert_eq!(before.cron_jobs.len(), 1);

    let mut restored = Vec::new();
    for format in ["c", "p"] {
        let dump = source.pg_dump(format, &format!("employes.{format}.dump"));
        let text = dump_text(&source, &dump, format);
        assert!(
            text.contains("COPY public.employes_raw_data")
                && text.contains("employes_changes_id_seq"),
            "the history and its sequences are in the dump"
        );
        for secret in [sim.token(), "demo-token".to_owned()] {
            assert!(!text.contains(&secret), "a token is in the {format} dump");
        }
        let target =
            Cluster::start_with(&format!("restored-{format}"), &fast_conf(), &bin(), false);
        target.restore(&dump, format);
        let mut t = target.connect();
        let after = held(&mut t, &BTreeMap::new());
        assert_eq!(
            after, before,
            "format {format}: the restored database holds the same"
        );
        eprintln!("restored ({format}): identical: {:?}", after.tables);
        assert_history_consistent(&mut t);
        target.use_sim(&sim, 300.0);
        // The same API: the restored history is current, nothing to write.
        let s = sync(&mut t);
        assert_eq!(s.status, "completed", "{s:?}");
        assert_eq!((s.versions_written, s.changes_detected), (0, 0), "{s:?}");
        // The restored sequences go on where the source's were.
        let max_log: i64 = before.sequences["employes_sync_logs_id_seq"].0;
        assert!(
            count(
                &mut t,
                &format!("SELECT count(*) FROM employes_sync_logs WHERE id > {max_log}")
            ) > 0,
            "new log rows follow the restored ones"
        );
        restored.push((target, t));
    }

    // A changed API: every database writes the same changes.
    let report = sim.advance();
    assert!(!report.changes.is_empty());
    let s = sync(&mut c);
    assert_eq!(s.status, "completed", "{s:?}");
    let expected = (fingerprint(&mut c), change_pairs(&mut c, s.id));
    for (_, t) in restored.iter_mut() {
        let r = sync(t);
        assert_eq!(r.status, "completed", "{r:?}");
        assert_eq!(
            (r.versions_written, r.changes_detected),
            (s.versions_written, s.changes_detected)
        );
        assert_eq!((fingerprint(t), change_pairs(t, r.id)), expected);
        assert_history_consistent(t);
        no_one_created_twice(t);
    }
}

#[test]
fn a_session_running_when_the_dump_was_taken_is_ended_in_the_restored_database() {
    let source = Cluster::start("dump-running", &fast_conf());
    let sim = sim(EMPLOYEES, SEED, 0.0);
    source.use_sim(&sim, 300.0);
    let mut c = source.connect();
    assert_eq!(sync(&mut c).status, "completed");
    sim.advance();
    sim.set_latency(150, 0);
    let id = trigger(&mut c, "manual", "dump@example.org").id;
    wait_until(Duration::from_secs(30), "the sync to be running", || {
        let s = session(&mut c, id);
        s.status == "running" && s.pages_done >= 1
    });
    let dump = source.pg_dump("c", "running.dump");
    c.execute("SELECT employes_sync_cancel($1)", &[&id])
        .unwrap();
    assert_eq!(wait(&mut c, id).status, "cancelled");
    sim.set_latency(0, 0);

    // Its watchdog looks at another database, so that what this database shows before anyone
    // writes can be seen.
    let target = Cluster::start_with(
        "restored-running",
        &[
            fast_conf(),
            vec!["employes_sync.database_name = 'template1'".into()],
        ]
        .concat(),
        &bin(),
        false,
    );
    target.restore(&dump, "c");
    target.use_sim(&sim, 300.0);
    let mut t = target.connect();
    assert_eq!(session(&mut t, id).status, "running", "restored as dumped");

    // Read-only, as PostgREST's GET runs it: the run is reported dead, nothing is written.
    let mut ro = t.build_transaction().read_only(true).start().unwrap();
    let st: Value = ro
        .query_one("SELECT employes_sync_status()", &[])
        .unwrap()
        .get(0);
    assert_eq!(st["state"], "error", "{st}");
    assert_eq!(st["running_session"], Value::Null, "{st}");
    assert_eq!(st["last_session"]["id"], id.to_string(), "{st}");
    assert_eq!(st["last_session"]["status"], "error", "{st}");
    assert_eq!(st["last_session"]["worker_gone"], true, "{st}");
    let error = st["last_session"]["error"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(error.contains("another database"), "{error}");
    ro.commit().unwrap();
    assert_eq!(
        session(&mut t, id).status,
        "running",
        "status wrote nothing"
    );

    // The first trigger records it and starts a sync of its own, which completes.
    let fresh = trigger(&mut t, "manual", "after-restore@example.org");
    assert_ne!(fresh.id, id);
    let done = wait(&mut t, fresh.id);
    assert_eq!(done.status, "completed", "{done:?}");
    assert!(done.versions_written > 0, "{done:?}");
    let old = session(&mut t, id);
    assert_eq!(old.status, "error");
    assert_eq!(old.error.as_deref(), Some(error.as_str()));
    assert_eq!(
        count(
            &mut t,
            &format!("SELECT count(*) FROM employes_sync_logs WHERE session_id = '{id}' AND step = 'recovery'")
        ),
        1
    );
    assert_history_consistent(&mut t);
    no_one_created_twice(&mut t);
}

/// A sync that reads only the columns every version has: (status, versions, changes, error).
fn sync_any_version(c: &mut Client) -> (String, i32, i32, Option<String>) {
    let id: uuid::Uuid = c
        .query_one(
            "SELECT id FROM employes_sync_trigger('manual', 'upgrade@example.org')",
            &[],
        )
        .unwrap()
        .get(0);
    let r = c
        .query_one(
            "SELECT status, versions_written, changes_detected, error FROM employes_sync_wait($1, 600)",
            &[&id],
        )
        .unwrap();
    (r.get(0), r.get(1), r.get(2), r.get(3))
}

/// The settings of employes_sync as the server has them.
fn settings(c: &mut Client) -> Vec<String> {
    c.query(
        "SELECT name || '=' || setting FROM pg_settings WHERE name LIKE 'employes_sync.%' ORDER BY name",
        &[],
    )
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect()
}

#[test]
fn upgrade_from_0_1_0_keeps_every_row_continues_the_history_and_equals_a_fresh_install() {
    let release = old_release(RELEASE_0_1_0);
    let steps = [AdvanceOptions::default(), AdvanceOptions::default()];
    let reference = reference_run("upgrade-ref", EMPLOYEES, SEED, &steps);

    let pg = PgInstall::new("upgrade");
    pg.install_package(&release);
    let cluster = Cluster::start_with("upgrade", &fast_conf(), &pg.bin(), true);
    // An account with a second company, for after the upgrade (the first is the same as sim()'s).
    let sim = sim_of_companies(EMPLOYEES, SEED, 0.0, 2);
    cluster.use_sim(&sim, 300.0);
    let mut c = cluster.connect();
    let version = |c: &mut Client| -> String {
        c.query_one(
            "SELECT extversion FROM pg_extension WHERE extname = 'employes_sync'",
            &[],
        )
        .unwrap()
        .get(0)
    };
    assert_eq!(version(&mut c), "0.1.0");
    assert_eq!(sync_any_version(&mut c).0, "completed");
    sim.advance_with(steps[0].clone());
    assert_eq!(sync_any_version(&mut c).0, "completed");
    assert_eq!(
        fingerprint(&mut c),
        reference[1],
        "0.1.0 syncs as the current build does"
    );
    c.batch_execute("SELECT employes_sync_schedule('17 3 * * *')")
        .unwrap();
    // An app's role may call the trigger (a grant the database made, not the extension).
    c.batch_execute(
        "CREATE ROLE app_rpc NOLOGIN; GRANT EXECUTE ON FUNCTION employes_sync_trigger(text, text) TO app_rpc",
    )
    .unwrap();
    let settings_before = settings(&mut c);
    let scheduler_before: Value = c
        .query_one(
            "SELECT employes_sync_scheduler_status() - 'recent_runs' - 'last_run' - 'next_run_at'",
            &[],
        )
        .unwrap()
        .get(0);

    // The new package, and a restart, as `apt upgrade` and the DBA do it.
    drop(c);
    cluster.pg_ctl_stop("fast");
    let current = pg.install_current();
    assert_ne!(current, "0.1.0");
    cluster.pg_ctl_start();
    let mut c = cluster.connect();

    // Before ALTER EXTENSION ... UPDATE the new library refuses to sync against the old SQL.
    let refused = sync_any_version(&mut c);
    assert_eq!(refused.0, "error", "{refused:?}");
    assert!(
        refused
            .3
            .as_deref()
            .unwrap_or("")
            .contains("run ALTER EXTENSION employes_sync UPDATE"),
        "{refused:?}"
    );
    assert_eq!((refused.1, refused.2), (0, 0));

    let columns_before = table_columns(&mut c);
    let before = held(&mut c, &BTreeMap::new());
    // The update gives the history to the configured company; it refuses, changing nothing,
    // when it cannot tell which one that is.
    let first = sim.company_id();
    // (Unset, the company the last sync logged is taken: the second case has no such log.)
    for (setting, logs, says) in [
        (
            Some(sim.company_ids()[1].clone()),
            "",
            "the last sync fetched company",
        ),
        (
            None,
            "DELETE FROM employes_sync_logs WHERE step = 'start'",
            "employes_sync.company_id is not set",
        ),
    ] {
        set_company_id(&cluster, setting.as_deref());
        let mut c = cluster.connect();
        c.batch_execute(&format!("BEGIN; {logs}")).unwrap();
        let (code, message, hint) =
            sql_error_with_hint(&mut c, "ALTER EXTENSION employes_sync UPDATE", &[]);
        c.batch_execute("ROLLBACK").unwrap();
        assert_eq!(code, "55000", "{message}");
        assert!(message.contains(says), "{message}");
        assert!(hint
            .unwrap_or_default()
            .contains("employes_sync.company_id"));
        assert_eq!(version(&mut c), "0.1.0");
    }
    set_company_id(&cluster, Some(&first));
    let mut c = cluster.connect();
    assert_eq!(held(&mut c, &BTreeMap::new()), before);
    c.batch_execute("ALTER EXTENSION employes_sync UPDATE")
        .unwrap();
    assert_eq!(version(&mut c), current);

    // Every row is still there: the upgrade's new columns aside, the same rows.
    let added: BTreeMap<String, Vec<String>> = table_columns(&mut c)
        .into_iter()
        .map(|(t, cols)| {
            let old = &columns_before[&t];
            (
                t,
                cols.into_iter().filter(|col| !old.contains(col)).collect(),
            )
        })
        .collect();
    let after = held(&mut c, &added);
    eprintln!(
        "0.1.0 -> {current}: columns added {added:?}\nbefore: {before:#?}\nafter: {after:#?}"
    );
    assert_eq!(after, before);
    // Every setting keeps its value (a new release may add settings, with their defaults).
    let settings_after = settings(&mut c);
    let lost: Vec<&String> = settings_before
        .iter()
        .filter(|s| !settings_after.contains(s))
        .collect();
    assert!(lost.is_empty(), "settings changed by the upgrade: {lost:?}");
    let scheduler_after: Value = c
        .query_one(
            "SELECT employes_sync_scheduler_status() - 'recent_runs' - 'last_run' - 'next_run_at'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(scheduler_after, scheduler_before, "the schedule is kept");

    // The history belongs to the configured company, and so do the syncs so far.
    for table in ["employes_raw_data", "employes_changes", "employes_timeline"] {
        assert_eq!(
            count(
                &mut c,
                &format!("SELECT count(*) FROM {table} WHERE company_id <> '{first}'")
            ),
            0,
            "{table}"
        );
    }
    let companies: Vec<(String, Option<String>, bool)> = c
        .query(
            "SELECT company_id::text, last_status, enabled FROM employes_sync_companies",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    // (Its last sync is the one the new library refused before the update.)
    assert_eq!(
        companies,
        [(first.clone(), Some("error".to_string()), true)]
    );
    assert_eq!(
        count(
            &mut c,
            &format!(
                "SELECT count(*) FROM employes_sync_session_companies
                  WHERE company_id = '{first}' AND status = 'completed'"
            )
        ),
        2
    );
    // The app's grant is kept, on the trigger that now takes a company.
    assert!(c
        .query_one(
            "SELECT has_function_privilege('app_rpc', 'employes_sync_trigger(text, text, uuid)', 'EXECUTE')",
            &[],
        )
        .unwrap()
        .get::<_, bool>(0));

    // The same history goes on: nothing unchanged gets a new version, and a changed API gives
    // what a database that always ran the current build has.
    let s = sync(&mut c);
    assert_eq!(s.status, "completed", "{s:?}");
    assert_eq!((s.versions_written, s.changes_detected), (0, 0), "{s:?}");
    sim.advance_with(steps[1].clone());
    let s = sync(&mut c);
    assert_eq!(s.status, "completed", "{s:?}");
    assert_eq!(fingerprint(&mut c), reference[2]);
    assert_history_consistent(&mut c);

    // The upgraded catalog is the one a fresh install makes.
    c.batch_execute("CREATE DATABASE fresh").unwrap();
    let mut fresh = cluster.connect_to("fresh");
    fresh
        .batch_execute(
            "CREATE EXTENSION employes_sync;
             GRANT EXECUTE ON FUNCTION employes_sync_trigger(text, text, uuid) TO app_rpc",
        )
        .unwrap();
    let upgraded = catalog_fingerprint(&mut c);
    let installed = catalog_fingerprint(&mut fresh);
    let only_upgraded: Vec<&String> = upgraded.iter().filter(|f| !installed.contains(f)).collect();
    let only_fresh: Vec<&String> = installed.iter().filter(|f| !upgraded.contains(f)).collect();
    assert!(
        only_upgraded.is_empty() && only_fresh.is_empty(),
        "the upgraded extension differs from a fresh install of {current}:\nonly after the upgrade: {only_upgraded:#?}\nonly in a fresh install: {only_fresh:#?}"
    );
    eprintln!(
        "catalog fingerprint: {} facts, identical after the upgrade and in a fresh install",
        upgraded.len()
    );
    // pg_dump still writes the app's grant: it is the database's, not the extension's.
    let dump = std::fs::read_to_string(cluster.pg_dump("p", "grants.sql")).unwrap();
    assert!(
        dump.lines()
            .any(|l| l.contains("employes_sync_trigger(") && l.contains("TO app_rpc")),
        "the grant to app_rpc is not in the dump"
    );

    // The setting switched to the account's second company: that company is added and synced,
    // and nobody of the first is marked deleted.
    let current_before = count(
        &mut c,
        &format!("SELECT count(*) FROM employes_current WHERE company_id = '{first}'"),
    );
    let second = sim.company_ids()[1].clone();
    set_company_id(&cluster, Some(&second));
    let mut c = cluster.connect();
    let s = sync(&mut c);
    assert_eq!(s.status, "completed", "{s:?}");
    assert_eq!(s.employees_deleted, 0, "{s:?}");
    assert_eq!(
        count(
            &mut c,
            &format!(
                "SELECT count(*) FROM employes_changes WHERE change_type = 'deleted' AND session_id = '{}'",
                s.id
            )
        ),
        0
    );
    assert_eq!(
        count(
            &mut c,
            &format!("SELECT count(*) FROM employes_current WHERE company_id = '{first}'")
        ),
        current_before
    );
    assert_eq!(
        count(
            &mut c,
            &format!("SELECT count(*) FROM employes_current WHERE company_id = '{second}'")
        ),
        sim.listed_employee_ids_of(1).len() as i64
    );
    assert_history_consistent(&mut c);
    eprintln!(
        "setting switched to {second}: {} employees of {first} kept current, 0 deleted",
        current_before
    );
}

/// Sets (or with None resets) employes_sync.company_id, and waits until a new backend sees it.
fn set_company_id(cluster: &Cluster, company: Option<&str>) {
    let mut c = cluster.connect();
    match company {
        Some(id) => c.batch_execute(&format!(
            "ALTER SYSTEM SET employes_sync.company_id = '{id}'"
        )),
        None => c.batch_execute("ALTER SYSTEM RESET employes_sync.company_id"),
    }
    .unwrap();
    c.batch_execute("SELECT pg_reload_conf()").unwrap();
    let want = company.unwrap_or("").to_owned();
    wait_until(
        Duration::from_secs(10),
        "employes_sync.company_id reloaded",
        || {
            let v: String = cluster
                .connect()
                .query_one("SELECT current_setting('employes_sync.company_id')", &[])
                .unwrap()
                .get(0);
            v == want
        },
    );
}

/// The lines of a server log that report an error.
fn error_lines(log: &str) -> Vec<String> {
    log.lines()
        .filter(|l| ["ERROR:", "FATAL:", "PANIC:"].iter().any(|k| l.contains(k)))
        .map(str::to_owned)
        .collect()
}

#[test]
fn a_hot_standby_serves_reads_refuses_syncs_stays_quiet_and_ends_the_old_primarys_run_when_promoted(
) {
    let primary = Cluster::start("primary", &fast_conf());
    let sim = sim(EMPLOYEES, SEED, 0.0);
    primary.use_sim(&sim, 300.0);
    let mut p = primary.connect();
    assert_eq!(sync(&mut p).status, "completed");
    p.batch_execute("SELECT employes_sync_schedule('17 3 * * *')")
        .unwrap();
    let standby = Cluster::standby_of(&primary, "standby");
    let started = Instant::now();
    let mut s = standby.connect();
    let in_recovery: bool = s
        .query_one("SELECT pg_is_in_recovery()", &[])
        .unwrap()
        .get(0);
    assert!(in_recovery);
    let employees = count(&mut p, "SELECT count(*) FROM employes_current");
    wait_until(
        Duration::from_secs(30),
        "the standby to replay the sync",
        || count(&mut s, "SELECT count(*) FROM employes_current") == employees,
    );

    // Every read-only function and view works, in a read-only transaction too.
    let id: String = s
        .query_one(
            "SELECT employee_id FROM employes_current ORDER BY employee_id LIMIT 1",
            &[],
        )
        .unwrap()
        .get(0);
    let mut ro = s.build_transaction().read_only(true).start().unwrap();
    let st: Value = ro
        .query_one("SELECT employes_sync_status()", &[])
        .unwrap()
        .get(0);
    assert_eq!(
        (&st["state"], &st["standby"]),
        (&Value::from("current"), &Value::from(true)),
        "{st}"
    );
    assert_eq!(st["employees_synced"], employees, "{st}");
    let sched: Value = ro
        .query_one("SELECT employes_sync_scheduler_status()", &[])
        .unwrap()
        .get(0);
    assert_eq!(sched["enabled"], true, "{sched}");
    let as_of: Option<Value> = ro
        .query_one("SELECT employes_employee_as_of($1)", &[&id])
        .unwrap()
        .get(0);
    assert_eq!(as_of.unwrap()["id"], id.as_str());
    for view in [
        "employes_current",
        "employes_recent_changes",
        "employes_timeline",
        "employes_changes",
    ] {
        assert!(
            count_in(&mut ro, &format!("SELECT count(*) FROM {view}")) > 0,
            "{view}"
        );
    }
    // The event log reads on the standby: the primary's events, the same ids.
    let events = count(&mut p, "SELECT count(*) FROM employes_events");
    assert!(events > 0);
    assert_eq!(
        count_in(
            &mut ro,
            "SELECT count(*) FROM employes_events_since(0, 100000)"
        ),
        events
    );
    ro.commit().unwrap();
    // Quiet: in its first 60 s the standby's log has no error of ours (its watchdog waits for
    // promotion; no worker starts).
    while started.elapsed() < Duration::from_secs(60) {
        let errors = error_lines(&standby.server_log());
        assert!(errors.is_empty(), "the standby logged errors: {errors:#?}");
        std::thread::sleep(Duration::from_millis(500));
    }
    let errors = error_lines(&standby.server_log());
    assert!(errors.is_empty(), "the standby logged errors: {errors:#?}");

    // Webhooks and erasures are done on the primary: a standby refuses, changing nothing.
    for sql in [
        "SELECT employes_webhook_subscribe('https://hooks.example.org/e')",
        "SELECT employes_webhook_redeliver(1)",
        "SELECT employes_forget_employee('any-employee')",
        "SELECT employes_unforget_employee('any-employee', gen_random_uuid())",
    ] {
        let (code, _) = sql_error(&mut s, sql, &[]);
        assert!(code == "25006", "{sql}: {code}");
    }

    // A sync that runs on the primary is seen running on the standby, which cannot start one.
    sim.advance();
    sim.set_latency(150, 0);
    let running = trigger(&mut p, "manual", "primary@example.org").id;
    wait_until(
        Duration::from_secs(30),
        "the standby to see the sync running",
        || {
            // (The standby may not have replayed the new session yet.)
            s.query_opt(
                "SELECT status, pages_done FROM employes_sync_sessions WHERE id = $1",
                &[&running],
            )
            .unwrap()
            .is_some_and(|r| r.get::<_, String>(0) == "running" && r.get::<_, i32>(1) >= 1)
        },
    );
    let st: Value = s
        .query_one("SELECT employes_sync_status()", &[])
        .unwrap()
        .get(0);
    assert_eq!(
        st["state"], "syncing",
        "the primary's run, as replayed: {st}"
    );
    for (sql, what) in [
        ("SELECT employes_sync_trigger()", "trigger"),
        ("SELECT employes_sync_cancel($1)", "cancel"),
    ] {
        let e = if what == "cancel" {
            s.query(sql, &[&running]).unwrap_err()
        } else {
            s.query(sql, &[]).unwrap_err()
        };
        let db = e.as_db_error().unwrap();
        assert_eq!(db.code().code(), "25006", "{what}: {db}");
        assert!(
            db.message().contains("read-only standby") && db.message().contains("primary"),
            "{db}"
        );
    }

    // The primary fails while its sync runs; the standby is promoted and its watchdog, starting
    // with the promotion, ends the old primary's run within seconds, unasked.
    drop(p);
    primary.pg_ctl_stop("immediate");
    let promoted: bool = s.query_one("SELECT pg_promote()", &[]).unwrap().get(0);
    assert!(promoted);
    let promoted_at = Instant::now();
    wait_until(
        Duration::from_secs(20),
        "the old primary's run to be ended",
        || session(&mut s, running).status == "error",
    );
    eprintln!(
        "the old primary's run ended {:?} after the promotion",
        promoted_at.elapsed()
    );
    let ended = session(&mut s, running);
    let error = ended.error.clone().unwrap_or_default();
    assert!(error.contains("failed over"), "{error}");
    assert_eq!(ended.employees_deleted, 0);
    sim.set_latency(0, 0);
    let next = sync(&mut s);
    assert_eq!(next.status, "completed", "{next:?}");
    assert!(next.versions_written > 0, "{next:?}");
    assert_history_consistent(&mut s);
}

fn count_in(tx: &mut postgres::Transaction<'_>, sql: &str) -> i64 {
    tx.query_one(sql, &[]).unwrap().get(0)
}

/// Whose worker is gone is reported dead by every read-only function, in a read-only
/// transaction (PostgREST's GET) without writing; the errors a caller causes map to 4xx.
#[test]
fn read_only_functions_never_write_and_caller_errors_are_4xx_over_postgrest() {
    // The watchdog looks at another database: what a read-only caller sees, before anyone has
    // written, stays visible.
    let cluster = Cluster::start(
        "readonly",
        &[
            fast_conf(),
            vec!["employes_sync.database_name = 'template1'".into()],
        ]
        .concat(),
    );
    let sim = sim(EMPLOYEES, SEED, 0.0);
    cluster.use_sim(&sim, 300.0);
    let mut c = cluster.connect();
    assert_eq!(sync(&mut c).status, "completed");
    // A running session whose worker is no sync worker of this server.
    let ghost: uuid::Uuid = c
        .query_one(
            "INSERT INTO employes_sync_sessions (source, triggered_by, status, started_at, worker_pid, worker_instance, heartbeat_at)
             VALUES ('manual', 'ghost', 'running', now(), pg_backend_pid(), employes_sync_instance(), now()) RETURNING id",
            &[],
        )
        .unwrap()
        .get(0);

    let mut ro = c.build_transaction().read_only(true).start().unwrap();
    let st: Value = ro
        .query_one("SELECT employes_sync_status()", &[])
        .unwrap()
        .get(0);
    assert_eq!(st["state"], "error", "{st}");
    assert_eq!(st["standby"], false, "{st}");
    assert_eq!(st["last_session"]["id"], ghost.to_string(), "{st}");
    assert_eq!(st["last_session"]["worker_gone"], true, "{st}");
    assert!(
        st["last_session"]["error"]
            .as_str()
            .unwrap()
            .contains("is gone"),
        "{st}"
    );
    let waited = Session::from(
        &ro.query_one(
            &format!("SELECT {SESSION_COLUMNS} FROM employes_sync_wait($1, 5)"),
            &[&ghost],
        )
        .unwrap(),
    );
    assert_eq!(waited.status, "error", "{waited:?}");
    let e = ro.query("SELECT employes_sync_trigger()", &[]).unwrap_err();
    let db = e.as_db_error().unwrap();
    assert_eq!(db.code().code(), "25006", "{db}");
    assert!(db.hint().unwrap_or("").contains("POST"), "{db:?}");
    ro.rollback().unwrap();
    assert_eq!(
        session(&mut c, ghost).status,
        "running",
        "nothing was written"
    );

    // The next trigger records it and starts a sync.
    sim.advance();
    sim.set_latency(100, 0);
    let fresh = trigger(&mut c, "manual", "dba");
    assert_ne!(fresh.id, ghost);
    assert_eq!(session(&mut c, ghost).status, "error");
    // Waiting less than the sync takes: HTTP 408 over PostgREST, the session still running.
    let (code, message, hint) =
        sql_error_with_hint(&mut c, "SELECT employes_sync_wait($1, 0)", &[&fresh.id]);
    assert_eq!(code, "PT408", "{message}");
    assert!(message.contains("is still"), "{message}");
    assert!(hint.unwrap_or_default().contains("wait again"));
    sim.set_latency(0, 0);
    assert_eq!(wait(&mut c, fresh.id).status, "completed");
    // Cancelling what has ended: HTTP 409.
    let (code, message, _) =
        sql_error_with_hint(&mut c, "SELECT employes_sync_cancel($1)", &[&ghost]);
    assert_eq!(code, "PT409", "{message}");
    assert!(
        message.contains("already ended with status error"),
        "{message}"
    );
    // Bad arguments: HTTP 400.
    let (code, _) = sql_error(&mut c, "SELECT employes_sync_trigger('nightly')", &[]);
    assert_eq!(code, "22023");
}
