//! Many callers at once: simultaneous triggers share one session, a trigger during a sync joins
//! it, a cancel stops it at a safe point without deleting anybody, and scheduling while a sync
//! runs starts nothing new.

use std::sync::{Arc, Barrier, Mutex, OnceLock};
use std::time::Duration;

use employes_sim::AdvanceOptions;
use employes_sync_e2e::*;

const EMPLOYEES: usize = 30;
const SEED: u64 = 31;

fn reference() -> &'static Vec<Vec<String>> {
    static R: OnceLock<Vec<Vec<String>>> = OnceLock::new();
    R.get_or_init(|| reference_run("conc-ref", EMPLOYEES, SEED, &[AdvanceOptions::default()]))
}

/// A simulator slow enough (100 ms a request) that a sync lasts a few seconds.
fn setup(name: &str) -> (Cluster, Sim, Client) {
    let cluster = Cluster::start(name, &fast_conf());
    let sim = sim(EMPLOYEES, SEED, 0.0);
    cluster.use_sim(&sim, 300.0);
    sim.set_latency(100, 0);
    let c = cluster.connect();
    (cluster, sim, c)
}

fn active(c: &mut Client) -> i64 {
    count(
        c,
        "SELECT count(*) FROM employes_sync_sessions WHERE status IN ('queued', 'running')",
    )
}

#[test]
fn fifty_simultaneous_triggers_start_exactly_one_session_and_all_get_it() {
    let (cluster, _sim, mut c) = setup("conc-50");
    let n = 50;
    let barrier = Arc::new(Barrier::new(n));
    let handles: Vec<_> = (0..n)
        .map(|i| {
            let mut c = cluster.connect();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                trigger(&mut c, "api", &format!("caller{i}@example.org")).id
            })
        })
        .collect();
    let ids: Vec<uuid::Uuid> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let first = ids[0];
    assert!(
        ids.iter().all(|id| *id == first),
        "every caller must get the same session: {ids:?}"
    );
    assert_eq!(
        count(&mut c, "SELECT count(*) FROM employes_sync_sessions"),
        1
    );
    // One "queued by" line and 49 "joined" lines, one per caller.
    assert_eq!(
        count(
            &mut c,
            "SELECT count(*) FROM employes_sync_logs WHERE step = 'trigger' AND message LIKE '%joined this%'"
        ),
        49
    );
    assert_eq!(
        count(
            &mut c,
            "SELECT count(DISTINCT details->>'triggered_by') FROM employes_sync_logs WHERE step = 'trigger'"
        ),
        50
    );
    let s = wait(&mut c, first);
    assert_eq!(s.status, "completed", "{s:?}");
    assert_eq!(
        count(&mut c, "SELECT count(*) FROM employes_sync_sessions"),
        1
    );
}

#[test]
fn trigger_during_a_sync_returns_the_running_session_with_a_notice() {
    let (cluster, _sim, mut c) = setup("conc-join");
    let s = trigger(&mut c, "manual", "first@example.org");
    wait_until(Duration::from_secs(30), "the sync to run", || {
        let s = session(&mut c, s.id);
        s.status == "running" && s.pages_done >= 1
    });
    let notices = Arc::new(Mutex::new(Vec::<String>::new()));
    let seen = notices.clone();
    let mut c2 = postgres::Config::new()
        .host("127.0.0.1")
        .port(cluster.port)
        .user("postgres")
        .dbname("postgres")
        .notice_callback(move |n| seen.lock().unwrap().push(n.message().to_string()))
        .connect(NoTls)
        .unwrap();
    for source in ["manual", "api", "webhook", "scheduler"] {
        let joined = trigger(&mut c2, source, "second@example.org");
        assert_eq!(joined.id, s.id);
        assert_eq!(joined.source, "manual", "the session keeps its own source");
        assert_eq!(joined.triggered_by, "first@example.org");
    }
    let notices = notices.lock().unwrap().clone();
    assert_eq!(notices.len(), 4, "{notices:?}");
    assert!(
        notices[0].contains("already running") && notices[0].contains(&s.id.to_string()),
        "{notices:?}"
    );
    let end = wait(&mut c, s.id);
    assert_eq!(end.status, "completed", "{end:?}");
    assert_eq!(
        count(&mut c, "SELECT count(*) FROM employes_sync_sessions"),
        1
    );
    // Once it has ended, a trigger starts a new session.
    let next = trigger(&mut c, "manual", "third@example.org");
    assert_ne!(next.id, s.id);
    assert_eq!(wait(&mut c, next.id).status, "completed");
}

#[test]
fn cancel_during_a_sync_stops_it_deletes_nobody_and_the_next_sync_converges() {
    let (_cluster, sim, mut c) = setup("conc-cancel");
    sim.set_latency(0, 0);
    assert_eq!(sync(&mut c).status, "completed");
    assert_eq!(fingerprint(&mut c), reference()[0]);
    let report = sim.advance();
    assert!(report.changes.iter().any(|t| t.event == "removal"));
    sim.set_latency(100, 0);
    let s = trigger(&mut c, "manual", "canceller@example.org");
    wait_until(Duration::from_secs(30), "the sync to be mid-way", || {
        let s = session(&mut c, s.id);
        s.status == "running" && s.pages_done >= 1
    });
    let asked: Option<chrono::DateTime<chrono::Utc>> = c
        .query_one(
            "SELECT cancel_requested_at FROM employes_sync_cancel($1)",
            &[&s.id],
        )
        .unwrap()
        .get(0);
    assert!(asked.is_some());
    let end = wait(&mut c, s.id);
    assert_eq!(end.status, "cancelled", "{end:?}");
    assert_eq!(end.error.as_deref(), Some("cancelled on request"));
    assert_eq!(end.employees_deleted, 0);
    assert_eq!(end.snapshot_complete, Some(false));
    assert!(
        end.employees_done < EMPLOYEES as i32,
        "it stopped early: {end:?}"
    );
    // Cancelling an ended session is a conflict (HTTP 409 over PostgREST).
    let (code, msg) = sql_error(&mut c, "SELECT employes_sync_cancel($1)", &[&s.id]);
    assert_eq!(code, "PT409", "{msg}");
    assert!(msg.contains("cancelled"), "{msg}");
    assert_history_consistent(&mut c);
    sim.set_latency(0, 0);
    assert_eq!(sync(&mut c).status, "completed");
    assert_eq!(fingerprint(&mut c), reference()[1]);
}

#[test]
fn scheduling_while_a_sync_runs_starts_no_second_sync() {
    let (_cluster, _sim, mut c) = setup("conc-schedule");
    let s = trigger(&mut c, "manual", "dba@example.org");
    wait_until(Duration::from_secs(30), "the sync to run", || {
        session(&mut c, s.id).status == "running"
    });
    let status: serde_json::Value = c
        .query_one("SELECT employes_sync_schedule('*/5 * * * *')", &[])
        .unwrap()
        .get(0);
    assert_eq!(status["enabled"], serde_json::json!(true), "{status}");
    assert_eq!(active(&mut c), 1);
    // What pg_cron runs at the next tick, run now: it joins the running session.
    let command: String = c
        .query_one(
            "SELECT command FROM cron.job WHERE jobname = 'employes-sync'",
            &[],
        )
        .unwrap()
        .get(0);
    let joined: uuid::Uuid = c
        .query_one(&format!("SELECT (x).id FROM ({command}) AS t(x)"), &[])
        .map(|r| r.get(0))
        .unwrap_or_else(|e| panic!("{command}: {e}"));
    assert_eq!(joined, s.id);
    assert_eq!(active(&mut c), 1);
    let panel: serde_json::Value = c
        .query_one("SELECT employes_sync_status()", &[])
        .unwrap()
        .get(0);
    assert_eq!(panel["state"], "syncing", "{panel}");
    assert_eq!(panel["running_session"]["id"], s.id.to_string());
    assert!(c
        .query_one("SELECT employes_sync_unschedule()", &[])
        .unwrap()
        .get::<_, bool>(0));
    assert_eq!(wait(&mut c, s.id).status, "completed");
    assert_eq!(
        count(&mut c, "SELECT count(*) FROM employes_sync_sessions"),
        1
    );
}
