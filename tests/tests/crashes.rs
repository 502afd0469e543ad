//! Workers that die in the middle of a sync: terminated, killed with SIGKILL (the postmaster
//! then restarts every backend), or the whole server stopped in immediate mode. No session may
//! stay queued/running, the reason is recorded, and the next sync converges to the state of a
//! run without crash, with no duplicate version or change.

use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use employes_sim::AdvanceOptions;
use employes_sync_e2e::*;

const EMPLOYEES: usize = 40;
const SEED: u64 = 21;

fn reference() -> &'static Vec<Vec<String>> {
    static R: OnceLock<Vec<Vec<String>>> = OnceLock::new();
    R.get_or_init(|| reference_run("crash-ref", EMPLOYEES, SEED, &[AdvanceOptions::default()]))
}

/// A cluster synced once (at the reference's first state), the simulator one step on and slow
/// enough (150 ms a request) that a sync can be caught in the middle.
fn setup(name: &str) -> (Cluster, Sim, Client) {
    let cluster = Cluster::start(name, &fast_conf());
    let sim = sim(EMPLOYEES, SEED, 0.0);
    cluster.use_sim(&sim, 300.0);
    let mut c = cluster.connect();
    assert_eq!(sync(&mut c).status, "completed");
    assert_eq!(fingerprint(&mut c), reference()[0]);
    let report = sim.advance();
    assert!(report.changes.iter().any(|t| t.event == "removal"));
    sim.set_latency(150, 0);
    (cluster, sim, c)
}

/// Triggers a sync and returns (session, worker pid) once it has applied a page and is
/// fetching histories.
fn start_mid_sync(c: &mut Client) -> (uuid::Uuid, i32) {
    let id = trigger(c, "manual", "crash@example.org").id;
    wait_until(Duration::from_secs(30), "the sync to be mid-way", || {
        let s = session(c, id);
        assert!(
            s.status == "queued" || s.status == "running",
            "ended too early: {s:?}"
        );
        s.status == "running" && s.pages_done >= 1 && s.employees_done < EMPLOYEES as i32
    });
    let pid: i32 = c
        .query_one(
            "SELECT worker_pid FROM employes_sync_sessions WHERE id = $1",
            &[&id],
        )
        .unwrap()
        .get(0);
    (id, pid)
}

/// Polls with fresh connections (the server may be restarting) until the session has ended.
fn wait_ended(cluster: &Cluster, id: uuid::Uuid, timeout: Duration) -> Session {
    let mut last = None;
    wait_until(timeout, "the abandoned session to be marked", || {
        let Ok(mut c) = std::panic::catch_unwind(|| cluster.connect()) else {
            return false;
        };
        let Ok(row) = c.query_one(
            &format!("SELECT {SESSION_COLUMNS} FROM employes_sync_sessions WHERE id = $1"),
            &[&id],
        ) else {
            return false;
        };
        let s = Session::from(&row);
        let done = s.status != "queued" && s.status != "running";
        last = Some(s);
        done
    });
    last.unwrap()
}

/// After the crash: the next sync completes and reaches the reference state.
fn assert_recovers(cluster: &Cluster, sim: &Sim, crashed: &Session) {
    let mut c = cluster.connect();
    assert_eq!(
        count(
            &mut c,
            "SELECT count(*) FROM employes_sync_sessions WHERE status IN ('queued', 'running')"
        ),
        0
    );
    assert_eq!(crashed.employees_deleted, 0, "{crashed:?}");
    // The company it was syncing ended with it, and says why.
    let part: (String, Option<String>) = {
        let r = c
            .query_one(
                "SELECT status, error FROM employes_sync_session_companies WHERE session_id = $1",
                &[&crashed.id],
            )
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!(part.0, "error", "{part:?}");
    assert_eq!(part.1, crashed.error, "{part:?}");
    assert_eq!(
        count(
            &mut c,
            &format!(
                "SELECT count(*) FROM employes_changes WHERE session_id = '{}' AND change_type = 'deleted'",
                crashed.id
            )
        ),
        0
    );
    assert_history_consistent(&mut c);
    sim.set_latency(0, 0);
    let s = sync(&mut c);
    assert_eq!(s.status, "completed", "{s:?}");
    assert_eq!(
        fingerprint(&mut c),
        reference()[1],
        "the sync after the crash must converge"
    );
    assert_history_consistent(&mut c);
    let again = sync(&mut c);
    assert_eq!(
        (again.versions_written, again.changes_detected),
        (0, 0),
        "{again:?}"
    );
}

#[test]
fn terminated_worker_ends_its_session_as_error_and_the_next_sync_converges() {
    let (cluster, sim, mut c) = setup("crash-term");
    let (id, pid) = start_mid_sync(&mut c);
    let ok: bool = c
        .query_one("SELECT pg_terminate_backend($1)", &[&pid])
        .unwrap()
        .get(0);
    assert!(ok);
    let s = wait(&mut c, id);
    assert_eq!(s.status, "error", "{s:?}");
    assert!(
        s.error.as_deref().unwrap_or("").contains("terminated"),
        "{s:?}"
    );
    assert_eq!(s.snapshot_complete, Some(false));
    assert_recovers(&cluster, &sim, &s);
}

#[test]
fn killed_worker_is_marked_error_after_the_postmaster_restarts_and_the_next_sync_converges() {
    let (cluster, sim, mut c) = setup("crash-kill");
    let (id, pid) = start_mid_sync(&mut c);
    let status = Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    drop(c);
    // Nobody triggers: the watchdog, restarted with every backend, finds the session.
    let s = wait_ended(&cluster, id, Duration::from_secs(60));
    assert_eq!(s.status, "error", "{s:?}");
    let error = s.error.clone().unwrap_or_default();
    assert!(
        error.contains(&format!("pid {pid}")) && error.contains("is gone"),
        "{error}"
    );
    let mut c = cluster.connect();
    assert_eq!(
        count(
            &mut c,
            &format!(
                "SELECT count(*) FROM employes_sync_logs WHERE session_id = '{id}' AND step = 'recovery' AND level = 'error'"
            )
        ),
        1
    );
    assert!(
        cluster.server_log().contains("terminated by signal 9"),
        "the postmaster should have seen the crash"
    );
    assert_recovers(&cluster, &sim, &s);
}

#[test]
fn immediate_server_stop_mid_sync_is_marked_error_at_start_and_the_next_sync_converges() {
    let (cluster, sim, mut c) = setup("crash-stop");
    let (id, _pid) = start_mid_sync(&mut c);
    drop(c);
    cluster.pg_ctl_stop("immediate");
    cluster.pg_ctl_start();
    let s = wait_ended(&cluster, id, Duration::from_secs(60));
    assert_eq!(s.status, "error", "{s:?}");
    assert!(
        s.error.as_deref().unwrap_or("").contains("is gone"),
        "{s:?}"
    );
    assert_recovers(&cluster, &sim, &s);
}

#[test]
fn a_trigger_after_a_crash_reaps_the_dead_session_and_starts_a_new_one() {
    let (cluster, sim, mut c) = setup("crash-trigger");
    let (id, pid) = start_mid_sync(&mut c);
    Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    drop(c);
    sim.set_latency(0, 0);
    // The first trigger that gets through either finds the session already reaped by the
    // watchdog or reaps it itself; either way it starts a new session.
    let mut c = cluster.connect();
    let fresh = loop {
        match c.query_one(
            &format!(
                "SELECT {SESSION_COLUMNS} FROM employes_sync_trigger('manual', 'after-crash')"
            ),
            &[],
        ) {
            Ok(row) => break Session::from(&row),
            Err(_) => {
                // Still in crash recovery: reconnect.
                wait_until(Duration::from_secs(30), "the server back", || {
                    std::panic::catch_unwind(|| cluster.connect())
                        .map(|mut c2| c2.simple_query("SELECT 1").is_ok())
                        .unwrap_or(false)
                });
                c = cluster.connect();
            }
        }
    };
    assert_ne!(fresh.id, id);
    let dead = session(&mut c, id);
    assert_eq!(dead.status, "error", "{dead:?}");
    let s = wait(&mut c, fresh.id);
    assert_eq!(s.status, "completed", "{s:?}");
    assert_eq!(fingerprint(&mut c), reference()[1]);
    assert_history_consistent(&mut c);
}
