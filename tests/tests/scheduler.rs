//! Scheduling and status end to end: a real pg_cron 1.4 (preloaded, `cron.database_name =
//! 'postgres'`) running the `employes-sync` job against employes-sim, the cron validation and
//! next-run times as SQL sees them, and the "Sync now" panel's states.

use std::time::Duration;

use chrono::{DateTime, Timelike, Utc};
use employes_sim::{Endpoint, FaultAction};
use employes_sync_e2e::*;
use serde_json::Value;

const JOB_COMMAND: &str = "SELECT public.employes_sync_trigger('scheduler', 'system')";

fn setup(name: &str, employees: usize) -> (Cluster, Sim, Client) {
    let cluster = Cluster::start(name, &[]);
    let sim = sim(employees, 1, 200.0);
    cluster.use_sim(&sim, 150.0);
    let c = cluster.connect();
    (cluster, sim, c)
}

fn json(c: &mut Client, sql: &str) -> Value {
    c.query_one(sql, &[]).unwrap().get(0)
}

fn status(c: &mut Client) -> Value {
    json(c, "SELECT employes_sync_status()")
}

fn scheduler_status(c: &mut Client) -> Value {
    json(c, "SELECT employes_sync_scheduler_status()")
}

fn time(v: &Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(v.as_str().unwrap_or_else(|| panic!("not a time: {v}")))
        .unwrap()
        .with_timezone(&Utc)
}

fn server_now(c: &mut Client) -> DateTime<Utc> {
    c.query_one("SELECT clock_timestamp()", &[]).unwrap().get(0)
}

/// (jobid, jobname, schedule, command, database, active) of every pg_cron job.
fn cron_jobs(c: &mut Client) -> Vec<(i64, String, String, String, String, bool)> {
    c.query(
        "SELECT jobid, jobname::text, schedule, command, database, active FROM cron.job ORDER BY jobid",
        &[],
    )
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5)))
    .collect()
}

#[test]
fn schedule_creates_one_cron_job_and_rescheduling_replaces_it() {
    let (_cluster, _sim, mut c) = setup("schedule", 10);
    let s = json(&mut c, "SELECT employes_sync_schedule()");
    let jobs = cron_jobs(&mut c);
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    let (jobid, name, schedule, command, database, active) = jobs[0].clone();
    assert_eq!(
        (
            name.as_str(),
            schedule.as_str(),
            command.as_str(),
            database.as_str(),
            active
        ),
        (
            "employes-sync",
            "0 */6 * * *",
            JOB_COMMAND,
            "postgres",
            true
        )
    );
    assert_eq!(s["enabled"], true);
    assert_eq!(s["job_id"], jobid);
    assert_eq!(s["schedule"], "0 */6 * * *");
    assert_eq!(s["description"], "every 6 hours");
    assert_eq!(s["timezone"], "UTC");
    assert_eq!(s["interval_seconds"], 6 * 3600);

    // Same name: replaced in place, whitespace normalised.
    let s = json(&mut c, "SELECT employes_sync_schedule('30   2 * *  *')");
    let jobs = cron_jobs(&mut c);
    assert_eq!(jobs.len(), 1, "rescheduling must replace the job: {jobs:?}");
    assert_eq!(jobs[0].0, jobid);
    assert_eq!(jobs[0].2, "30 2 * * *");
    assert_eq!(s["description"], "daily at 02:30 UTC");
    assert_eq!(s["interval_seconds"], 24 * 3600);
    assert_eq!(scheduler_status(&mut c)["schedule"], "30 2 * * *");

    let removed: bool = c
        .query_one("SELECT employes_sync_unschedule()", &[])
        .unwrap()
        .get(0);
    assert!(removed);
    assert!(cron_jobs(&mut c).is_empty());
    let s = scheduler_status(&mut c);
    assert_eq!(
        (
            &s["available"],
            &s["enabled"],
            &s["schedule"],
            &s["next_run_at"]
        ),
        (
            &Value::Bool(true),
            &Value::Bool(false),
            &Value::Null,
            &Value::Null
        )
    );
    let removed: bool = c
        .query_one("SELECT employes_sync_unschedule()", &[])
        .unwrap()
        .get(0);
    assert!(!removed, "nothing left to remove");
}

#[test]
fn invalid_cron_expressions_are_rejected_before_pg_cron_sees_them() {
    let (_cluster, _sim, mut c) = setup("invalidcron", 10);
    json(&mut c, "SELECT employes_sync_schedule('0 3 * * *')");
    let cases: &[(&str, &str)] = &[
        ("", "cron expression is empty"),
        ("0 0 * *", "cron expression must have 5 fields (minute hour day-of-month month day-of-week), got 4"),
        ("0 0 * * * *", "cron expression must have 5 fields (minute hour day-of-month month day-of-week), got 6"),
        ("60 * * * *", "minute value 60 is out of range 0-59"),
        ("0 24 * * *", "hour value 24 is out of range 0-23"),
        ("0 0 32 * *", "day-of-month value 32 is out of range 1-31"),
        ("0 0 * 13 *", "month value 13 is out of range 1-12"),
        ("0 0 * * 8", "day-of-week value 8 is out of range 0-7"),
        ("*/0 * * * *", "step must be at least 1 in \"*/0\""),
        ("5-2 * * * *", "range 5-2 in minute field is reversed"),
        ("1,,2 * * * *", "empty list element in minute field \"1,,2\""),
        ("0 0 1 foo *", "unknown month name \"foo\" (allowed: jan-dec or 1-12)"),
        ("0 0 * * monday", "unknown day-of-week name \"monday\" (allowed: sun-sat or 0-7)"),
        ("0 0 ? * *", "unexpected character '?' in day-of-month field"),
        ("@reboot", "@reboot is not supported"),
        ("30 seconds", "seconds schedules (\"30 seconds\") are not supported by pg_cron 1.4"),
        ("0 0 30 2 *", "schedule never runs: day-of-month 30 never occurs in month 2"),
        ("every 6 hours", "got 3"),
    ];
    for (expr, fragment) in cases {
        let (code, message, hint) =
            sql_error_with_hint(&mut c, "SELECT employes_sync_schedule($1)", &[expr]);
        assert_eq!(code, "22023", "{expr:?}: {message}");
        assert!(
            message.contains(fragment),
            "{expr:?}: {message:?} should contain {fragment:?}"
        );
        assert!(hint.is_some_and(|h| h.contains("minute hour day-of-month month day-of-week")));
    }
    let (code, _, _) = sql_error_with_hint(&mut c, "SELECT employes_sync_schedule(NULL)", &[]);
    assert_eq!(code, "22023");
    // The job pg_cron has is untouched by every rejected call.
    let jobs = cron_jobs(&mut c);
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].2, "0 3 * * *");
}

#[test]
fn next_run_at_is_computed_from_the_expression() {
    let (_cluster, _sim, mut c) = setup("nextrun", 10);
    // 2026-11-25 14:53:20 UTC is a Wednesday; the session time zone must not matter.
    c.batch_execute("SET TimeZone = 'Europe/Amsterdam'")
        .unwrap();
    for (expr, next) in [
        ("0 */6 * * *", "2026-11-25 18:00:00"),
        ("0 2 * * *", "2026-11-26 02:00:00"),
        ("*/15 * * * *", "2026-11-25 15:00:00"),
        ("* * * * *", "2026-11-25 14:54:00"),
        ("30 9 * * mon", "2026-11-30 09:30:00"),
        ("0 0 1 jan *", "2027-01-01 00:00:00"),
        ("0 0 29 feb *", "2028-02-29 00:00:00"),
        ("0 0 31 * *", "2026-12-31 00:00:00"),
        ("0 0 13 * 5", "2026-11-27 00:00:00"),
        ("@weekly", "2026-11-29 00:00:00"),
        ("@monthly", "2026-12-01 00:00:00"),
    ] {
        let got: String = c
            .query_one(
                "SELECT (employes_sync_cron_next($1, '2026-11-25 14:53:20+00') AT TIME ZONE 'UTC')::text",
                &[&expr],
            )
            .unwrap()
            .get(0);
        assert_eq!(got, next, "next run of {expr:?}");
    }

    // And as the status reports it for the live job: the next run after now.
    for (expr, period_minutes) in [
        ("0 */6 * * *", 360),
        ("*/10 * * * *", 10),
        ("45 3 * * *", 1440),
    ] {
        let before = server_now(&mut c);
        let s = json(&mut c, &format!("SELECT employes_sync_schedule('{expr}')"));
        let after = server_now(&mut c);
        let next = time(&s["next_run_at"]);
        assert!(next > before, "{expr}: {next} must be after {before}");
        assert!(
            next <= after + chrono::Duration::minutes(period_minutes),
            "{expr}: {next} is more than one period after {after}"
        );
        assert_eq!((next.second(), next.nanosecond()), (0, 0), "{expr}: {next}");
        let on_schedule = match expr {
            "0 */6 * * *" => next.minute() == 0 && next.hour().is_multiple_of(6),
            "*/10 * * * *" => next.minute().is_multiple_of(10),
            _ => (next.hour(), next.minute()) == (3, 45),
        };
        assert!(on_schedule, "{expr}: {next}");
        assert_eq!(s["interval_seconds"], period_minutes * 60, "{expr}");
        assert_eq!(scheduler_status(&mut c)["next_run_at"], s["next_run_at"]);
    }
}

#[test]
fn a_scheduled_sync_runs_as_scheduler_system_and_shows_in_recent_runs() {
    let (_cluster, _sim, mut c) = setup("cronrun", 20);
    json(&mut c, "SELECT employes_sync_schedule('* * * * *')");
    // pg_cron fires at the next minute boundary: up to ~60 s, plus connection time.
    let mut session = None;
    wait_until(
        Duration::from_secs(150),
        "a scheduled sync to complete",
        || {
            session = c
            .query_opt(
                &format!("SELECT {SESSION_COLUMNS} FROM employes_sync_sessions WHERE source = 'scheduler' AND status NOT IN ('queued', 'running') ORDER BY created_at LIMIT 1"),
                &[],
            )
            .unwrap()
            .map(|r| Session::from(&r));
            session.is_some()
        },
    );
    let session = session.unwrap();
    assert_eq!(session.status, "completed", "{session:?}");
    assert_eq!(session.triggered_by, "system");
    assert_eq!(session.employees_done, 20);

    // The cron run that created it, with its outcome, linked to the session.
    let mut run = Value::Null;
    wait_until(Duration::from_secs(30), "the run in recent_runs", || {
        let s = scheduler_status(&mut c);
        run = s["recent_runs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["session_id"] == session.id.to_string())
            .cloned()
            .unwrap_or(Value::Null);
        run["status"] == "succeeded"
    });
    assert_eq!(run["session_status"], "completed");
    assert_eq!(run["joined"], false);
    assert_eq!(run["session"]["triggered_by"], "system");
    assert!(time(&run["end_time"]) >= time(&run["start_time"]));
    assert!(
        run["message"].as_str().is_some_and(|m| m.contains("1 row")),
        "{run}"
    );
    let s = scheduler_status(&mut c);
    assert!(s["last_run"].is_object(), "{s}");
    assert!(s["last_run"]["run_id"].as_i64() >= run["run_id"].as_i64());
    assert_eq!(status(&mut c)["scheduler"]["enabled"], true);
    assert_eq!(status(&mut c)["outdated_after_seconds"], 60);

    // Unscheduled: no run after the next minute boundary has passed.
    let removed: bool = c
        .query_one("SELECT employes_sync_unschedule()", &[])
        .unwrap()
        .get(0);
    assert!(removed);
    let runs = count(&mut c, "SELECT count(*) FROM cron.job_run_details");
    let sessions = count(
        &mut c,
        "SELECT count(*) FROM employes_sync_sessions WHERE source = 'scheduler'",
    );
    let boundary: DateTime<Utc> = c
        .query_one(
            "SELECT date_trunc('minute', clock_timestamp()) + interval '1 minute 15 seconds'",
            &[],
        )
        .unwrap()
        .get(0);
    wait_until(
        Duration::from_secs(90),
        "the next minute boundary to pass",
        || server_now(&mut c) > boundary,
    );
    assert_eq!(
        count(&mut c, "SELECT count(*) FROM cron.job_run_details"),
        runs
    );
    assert_eq!(
        count(
            &mut c,
            "SELECT count(*) FROM employes_sync_sessions WHERE source = 'scheduler'"
        ),
        sessions
    );
    let s = scheduler_status(&mut c);
    assert_eq!(s["enabled"], false);
    // History stays visible after unscheduling.
    assert!(!s["recent_runs"].as_array().unwrap().is_empty(), "{s}");
}

#[test]
fn status_goes_from_never_to_syncing_to_current_to_outdated_to_error() {
    let (_cluster, sim, mut c) = setup("states", 40);
    let st = status(&mut c);
    assert_eq!(st["state"], "never", "{st}");
    assert_eq!(st["last_session"], Value::Null);
    assert_eq!(st["running_session"], Value::Null);
    assert_eq!(st["employees_synced"], 0);
    assert_eq!(st["changes_24h"], 0);
    assert_eq!(st["outdated_after_seconds"], 6 * 3600);
    assert_eq!(st["scheduler"]["enabled"], false);

    // 200 ms a request, 4 at a time: the sync lasts a few seconds, long enough to watch.
    sim.set_latency(200, 0);
    let s = trigger(&mut c, "manual", "panel@example.org");
    let mut seen = Value::Null;
    wait_until(Duration::from_secs(30), "progress while syncing", || {
        seen = status(&mut c);
        seen["running_session"]["progress_percent"].as_i64() > Some(0)
    });
    assert_eq!(seen["state"], "syncing", "{seen}");
    let running = &seen["running_session"];
    assert_eq!(running["id"], s.id.to_string());
    assert_eq!(running["source"], "manual");
    assert_eq!(running["triggered_by"], "panel@example.org");
    assert!(
        running["progress_percent"].as_i64().unwrap() < 100,
        "{running}"
    );
    assert_eq!(running["cancel_requested"], false);

    let done = wait(&mut c, s.id);
    assert_eq!(done.status, "completed", "{done:?}");
    sim.set_latency(0, 0);
    let st = status(&mut c);
    assert_eq!(st["state"], "current", "{st}");
    assert_eq!(st["running_session"], Value::Null);
    assert_eq!(st["last_session"]["id"], s.id.to_string());
    assert_eq!(st["last_session"]["status"], "completed");
    assert_eq!(st["employees_synced"], 40);
    assert_eq!(st["changes_24h"], done.changes_detected);
    assert!(st["last_success_at"].is_string());

    // Older than 6 hours (no schedule): outdated.
    c.batch_execute(
        "UPDATE employes_sync_sessions SET created_at = created_at - interval '7 hours',
                started_at = started_at - interval '7 hours', completed_at = completed_at - interval '7 hours'",
    )
    .unwrap();
    assert_eq!(status(&mut c)["state"], "outdated");
    // With a schedule, its interval decides: daily makes 7 hours current again.
    json(&mut c, "SELECT employes_sync_schedule('0 2 * * *')");
    let st = status(&mut c);
    assert_eq!(
        (&st["state"], &st["outdated_after_seconds"]),
        (&Value::from("current"), &Value::from(86400))
    );
    c.query_one("SELECT employes_sync_unschedule()", &[])
        .unwrap();

    // The API refuses the token: the sync fails and the panel says error.
    sim.set_faults(vec![rule(
        Endpoint::Any,
        FaultAction::Status {
            status: 401,
            body: None,
            retry_after: None,
        },
    )]);
    let failed = sync(&mut c);
    assert_eq!(failed.status, "error", "{failed:?}");
    let st = status(&mut c);
    assert_eq!(st["state"], "error", "{st}");
    assert_eq!(st["last_session"]["id"], failed.id.to_string());
    assert!(st["last_session"]["error"]
        .as_str()
        .is_some_and(|e| !e.is_empty()));
    assert_eq!(st["employees_synced"], 40, "a failed sync keeps the data");
}

#[test]
fn cancel_mid_sync_stops_it_and_keeps_the_state_of_the_last_sync() {
    let (_cluster, sim, mut c) = setup("cancel", 150);
    let first = sync(&mut c);
    assert_eq!(first.status, "completed");
    // 150 histories at 200 ms a request, 4 at a time: several seconds.
    sim.set_latency(200, 0);
    let s = trigger(&mut c, "manual", "panel@example.org");
    wait_until(Duration::from_secs(30), "the list to be applied", || {
        let done: i32 = c
            .query_one(
                "SELECT pages_done FROM employes_sync_sessions WHERE id = $1",
                &[&s.id],
            )
            .unwrap()
            .get(0);
        done > 0
    });
    let row = c
        .query_one(
            "SELECT status, cancel_requested_at IS NOT NULL FROM employes_sync_cancel($1)",
            &[&s.id],
        )
        .unwrap();
    assert!(row.get::<_, bool>(1));
    let st = status(&mut c);
    assert_eq!(st["state"], "syncing");
    assert_eq!(st["running_session"]["cancel_requested"], true);

    let done = wait(&mut c, s.id);
    assert_eq!(done.status, "cancelled", "{done:?}");
    assert!(done.employees_done < 150, "{done:?}");
    assert_eq!(done.employees_deleted, 0);
    let st = status(&mut c);
    assert_eq!(
        st["state"], "current",
        "a cancelled sync does not make the data stale: {st}"
    );
    assert_eq!(st["last_session"]["status"], "cancelled");
    assert_eq!(st["running_session"], Value::Null);
    assert_eq!(st["employees_synced"], 150);
    let (code, _, _) = sql_error_with_hint(&mut c, "SELECT employes_sync_cancel($1)", &[&s.id]);
    assert_eq!(code, "PT409", "an ended session cannot be cancelled");
}

#[test]
fn without_pg_cron_scheduling_fails_with_a_hint_and_status_still_works() {
    let (_cluster, _sim, mut c) = setup("nocron", 10);
    c.batch_execute("DROP EXTENSION pg_cron").unwrap();
    let (code, message, hint) = sql_error_with_hint(&mut c, "SELECT employes_sync_schedule()", &[]);
    assert_eq!(code, "55000", "{message}");
    assert!(message.contains("pg_cron is not installed"), "{message}");
    assert_eq!(
        hint.as_deref(),
        Some("add pg_cron to shared_preload_libraries, restart, then CREATE EXTENSION pg_cron")
    );
    let (code, _, _) = sql_error_with_hint(&mut c, "SELECT employes_sync_unschedule()", &[]);
    assert_eq!(code, "55000");
    let s = scheduler_status(&mut c);
    assert_eq!(
        (&s["available"], &s["enabled"]),
        (&Value::Bool(false), &Value::Bool(false))
    );
    assert_eq!(status(&mut c)["state"], "never");
    // An invalid expression is still reported as such first.
    let (code, _, _) =
        sql_error_with_hint(&mut c, "SELECT employes_sync_schedule('0 24 * * *')", &[]);
    assert_eq!(code, "22023");
}
