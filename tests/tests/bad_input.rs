//! Bad input, from callers and from the API. Every bad argument or setting is answered with a
//! clear error and the right SQLSTATE and changes nothing; bad API data is logged as a warning
//! (or fails the page it is on), never half-applied, and never deletes anybody.

use employes_sim::{Endpoint, FaultAction, FaultRule};
use employes_sync_e2e::*;
use serde_json::{json, Value};

const EMPLOYEES: usize = 30;

fn setup(name: &str) -> (Cluster, Sim, Client) {
    let cluster = Cluster::start(name, &fast_conf());
    let sim = sim(EMPLOYEES, 51, 0.0);
    cluster.use_sim(&sim, 300.0);
    let c = cluster.connect();
    (cluster, sim, c)
}

/// Settings as the server has them, and every session and raw row: what must not change.
fn state(c: &mut Client) -> (Vec<String>, i64, Vec<String>) {
    let settings: Vec<String> = c
        .query(
            "SELECT name || '=' || setting FROM pg_settings WHERE name LIKE 'employes_sync.%' ORDER BY 1",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let file: Vec<String> = c
        .query(
            "SELECT name || '=' || coalesce(setting, '') FROM pg_file_settings WHERE name LIKE 'employes_sync.%' ORDER BY 1",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let sessions = count(c, "SELECT count(*) FROM employes_sync_sessions");
    let mut all = settings;
    all.extend(file);
    (all, sessions, fingerprint(c))
}

#[test]
fn bad_arguments_and_settings_are_rejected_with_their_sqlstate_and_change_nothing() {
    let (_cluster, _sim, mut c) = setup("bad-args");
    assert_eq!(sync(&mut c).status, "completed");
    let ended: uuid::Uuid = c
        .query_one("SELECT id FROM employes_sync_sessions", &[])
        .unwrap()
        .get(0);
    let before = state(&mut c);
    let long = format!("'{}'", "x".repeat(321));
    let cases: Vec<(String, &str)> = vec![
        // source
        ("SELECT employes_sync_trigger('bogus')".into(), "22023"),
        ("SELECT employes_sync_trigger(NULL)".into(), "22023"),
        ("SELECT employes_sync_trigger('')".into(), "22023"),
        ("SELECT employes_sync_trigger('MANUAL')".into(), "22023"),
        ("SELECT employes_sync_trigger(' manual')".into(), "22023"),
        // triggered_by
        (
            format!("SELECT employes_sync_trigger('manual', {long})"),
            "22023",
        ),
        ("SELECT employes_sync_trigger('manual', '')".into(), "22023"),
        (
            "SELECT employes_sync_trigger('manual', E'a\\nb')".into(),
            "22023",
        ),
        // session ids
        ("SELECT employes_sync_wait('not-a-uuid')".into(), "22P02"),
        (
            "SELECT employes_sync_wait('00000000-0000-0000-0000-000000000000')".into(),
            "22023",
        ),
        ("SELECT employes_sync_wait(NULL)".into(), "22023"),
        ("SELECT employes_sync_cancel('12345')".into(), "22P02"),
        ("SELECT employes_sync_cancel(NULL)".into(), "22023"),
        (
            "SELECT employes_sync_cancel('00000000-0000-0000-0000-000000000000')".into(),
            "22023",
        ),
        (format!("SELECT employes_sync_cancel('{ended}')"), "PT409"),
        // timeouts
        (format!("SELECT employes_sync_wait('{ended}', -1)"), "22023"),
        (
            format!("SELECT employes_sync_wait('{ended}', NULL)"),
            "22023",
        ),
        (
            format!("SELECT employes_sync_wait('{ended}', 86401)"),
            "22023",
        ),
        // cron expressions
        (
            "SELECT employes_sync_schedule('every hour')".into(),
            "22023",
        ),
        (
            "SELECT employes_sync_schedule('61 * * * *')".into(),
            "22023",
        ),
        ("SELECT employes_sync_schedule('* * * *')".into(), "22023"),
        (
            "SELECT employes_sync_schedule('* * * * * *')".into(),
            "22023",
        ),
        (
            "SELECT employes_sync_schedule('0 0 31 2 *')".into(),
            "22023",
        ),
        (
            "SELECT employes_sync_schedule('*/0 * * * *')".into(),
            "22023",
        ),
        ("SELECT employes_sync_schedule(NULL)".into(), "22023"),
        ("SELECT employes_sync_schedule('')".into(), "22023"),
        // settings (superuser, so only the value is wrong)
        (
            "ALTER SYSTEM SET employes_sync.requests_per_second = -1".into(),
            "22023",
        ),
        (
            "ALTER SYSTEM SET employes_sync.requests_per_second = 0".into(),
            "22023",
        ),
        (
            "ALTER SYSTEM SET employes_sync.requests_per_second = 'fast'".into(),
            "22023",
        ),
        (
            "ALTER SYSTEM SET employes_sync.base_url = 'not a url'".into(),
            "22023",
        ),
        (
            "ALTER SYSTEM SET employes_sync.base_url = 'file:///etc/passwd'".into(),
            "22023",
        ),
        (
            "ALTER SYSTEM SET employes_sync.base_url = 'ftp://example.org'".into(),
            "22023",
        ),
        (
            "ALTER SYSTEM SET employes_sync.company_id = 'acme'".into(),
            "22023",
        ),
        (
            "ALTER SYSTEM SET employes_sync.company_id = '5f1c6a4e1c1f4b8e9a532b7d3f0e9a11'".into(),
            "22023",
        ),
        (
            "SET employes_sync.company_id = '5f1c6a4e-1c1f-4b8e-9a53-2b7d3f0e9a1z'".into(),
            "22023",
        ),
        (
            "ALTER SYSTEM SET employes_sync.max_retries = -1".into(),
            "22023",
        ),
        (
            "ALTER SYSTEM SET employes_sync.request_timeout_ms = -5".into(),
            "22023",
        ),
        (
            "ALTER SYSTEM SET employes_sync.connect_timeout_ms = 0".into(),
            "22023",
        ),
        (
            "ALTER SYSTEM SET employes_sync.per_page = 0".into(),
            "22023",
        ),
        (
            "ALTER SYSTEM SET employes_sync.per_page = 101".into(),
            "22023",
        ),
        (
            "ALTER SYSTEM SET employes_sync.concurrency = 0".into(),
            "22023",
        ),
        (
            "ALTER SYSTEM SET employes_sync.log_retention_days = -1".into(),
            "22023",
        ),
        (
            "SET employes_sync.base_url = 'gopher://example.org'".into(),
            "22023",
        ),
    ];
    let mut table = Vec::new();
    for (sql, want) in &cases {
        let (code, msg) = sql_error(&mut c, sql, &[]);
        table.push(format!("{code} {sql} -> {msg}"));
        assert_eq!(&code, want, "{sql}: {msg}");
        assert!(!msg.is_empty());
    }
    eprintln!("{}", table.join("\n"));
    assert!(cases.len() >= 25);
    assert_eq!(state(&mut c), before, "a rejected call changed something");
    assert_eq!(
        count(&mut c, "SELECT count(*) FROM cron.job"),
        0,
        "no job was scheduled"
    );
}

#[test]
fn scheduling_without_pg_cron_is_a_wrong_state_with_a_hint() {
    let (_cluster, _sim, mut c) = setup("bad-nocron");
    c.batch_execute("DROP EXTENSION pg_cron").unwrap();
    for sql in [
        "SELECT employes_sync_schedule()",
        "SELECT employes_sync_schedule('0 * * * *')",
        "SELECT employes_sync_unschedule()",
    ] {
        let e = c.query(sql, &[]).unwrap_err();
        let db = e.as_db_error().unwrap();
        assert_eq!(db.code().code(), "55000", "{sql}: {db}");
        assert!(db.message().contains("pg_cron"), "{db}");
        assert!(db.hint().unwrap_or("").contains("shared_preload_libraries"));
    }
    // A bad expression is still reported as such first.
    let (code, _) = sql_error(&mut c, "SELECT employes_sync_schedule('nonsense')", &[]);
    assert_eq!(code, "22023");
    let s: Value = c
        .query_one("SELECT employes_sync_scheduler_status()", &[])
        .unwrap()
        .get(0);
    assert_eq!(s["available"], json!(false));
    // Syncing does not need it.
    assert_eq!(sync(&mut c).status, "completed");
}

/// The listed records of the simulator's dataset, in list order.
fn listed_records(sim: &Sim) -> Vec<Value> {
    let dump = sim.dump();
    let records: Vec<Value> = dump["employees"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["removed"] != json!(true))
        .map(|e| e["record"].clone())
        .collect();
    let ids: Vec<String> = records
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, sim.listed_employee_ids());
    records
}

fn body_rule(
    endpoint: Endpoint,
    page: Option<u32>,
    ids: Option<Vec<String>>,
    body: Value,
) -> FaultRule {
    FaultRule {
        endpoint,
        page,
        employee_ids: ids,
        company_id: None,
        every: None,
        skip: 0,
        count: None,
        action: FaultAction::Body { body },
    }
}

/// One bad answer of the API: the sync's status, a log line, nobody deleted, nothing of the bad
/// page written; and once the API is sane again, the state of before.
fn bad_answer(
    c: &mut Client,
    sim: &Sim,
    rules: Vec<FaultRule>,
    status: &str,
    log: &str,
    level: &str,
) -> Session {
    let before = fingerprint(c);
    sim.set_faults(rules);
    let s = sync(c);
    sim.clear_faults();
    assert_eq!(s.status, status, "{s:?}");
    assert_eq!(s.employees_deleted, 0, "{s:?}");
    assert_eq!(s.versions_written, 0, "nothing changed in the data: {s:?}");
    let n = count(
        c,
        &format!(
            "SELECT count(*) FROM employes_sync_logs WHERE session_id = '{}' AND level = '{level}' AND message LIKE '%{log}%'",
            s.id
        ),
    );
    assert!(n > 0, "no {level} log line with {log:?}: {s:?}");
    assert_eq!(fingerprint(c), before, "the bad answer changed the data");
    assert_history_consistent(c);
    let clean = sync(c);
    assert_eq!(clean.status, "completed", "{clean:?}");
    assert_eq!((clean.versions_written, clean.changes_detected), (0, 0));
    s
}

#[test]
fn bad_list_pages_are_warned_about_and_delete_nobody() {
    let (_cluster, sim, mut c) = setup("bad-list");
    assert_eq!(sync(&mut c).status, "completed");
    let records = listed_records(&sim);
    let page = |n: usize| records[(n - 1) * 10..n * 10].to_vec();
    let all_ids: Vec<String> = sim.listed_employee_ids();

    // A lying total.
    let s = bad_answer(
        &mut c,
        &sim,
        vec![body_rule(
            Endpoint::List,
            Some(1),
            None,
            json!({"data": page(1), "pages": 3, "total": 999}),
        )],
        "partial",
        "the snapshot is incomplete",
        "warning",
    );
    assert_eq!(s.snapshot_complete, Some(false));
    // pages = 0 with employees.
    bad_answer(
        &mut c,
        &sim,
        vec![body_rule(
            Endpoint::List,
            Some(1),
            None,
            json!({"data": page(1), "pages": 0, "total": 30}),
        )],
        "partial",
        "the snapshot is incomplete",
        "warning",
    );
    // A page that disagrees with page 1 on the totals.
    bad_answer(
        &mut c,
        &sim,
        vec![body_rule(
            Endpoint::List,
            Some(3),
            None,
            json!({"data": page(3), "pages": 4, "total": 40}),
        )],
        "partial",
        "the snapshot is incomplete",
        "warning",
    );
    // A null id, an id that is not a string, an empty id, a record that is not an object.
    for bad in [json!(null), json!({"a": 1}), json!(" ")] {
        let mut p2 = page(2);
        p2[4]["id"] = bad;
        bad_answer(
            &mut c,
            &sim,
            vec![body_rule(
                Endpoint::List,
                Some(2),
                None,
                json!({"data": p2, "pages": 3, "total": 30}),
            )],
            "partial",
            "no usable",
            "warning",
        );
    }
    let mut p2 = page(2);
    p2[4] = json!(42);
    bad_answer(
        &mut c,
        &sim,
        vec![body_rule(
            Endpoint::List,
            Some(2),
            None,
            json!({"data": p2, "pages": 3, "total": 30}),
        )],
        "partial",
        "no usable",
        "warning",
    );
    // The same id on two pages (page 1 is always applied first).
    let mut p2 = page(2);
    p2[5]["id"] = json!(all_ids[2]);
    bad_answer(
        &mut c,
        &sim,
        vec![body_rule(
            Endpoint::List,
            Some(2),
            None,
            json!({"data": p2, "pages": 3, "total": 30}),
        )],
        "partial",
        "appears more than once",
        "warning",
    );
    // `data` not an array, `total` not a number, not an object at all: the page fails.
    for body in [
        json!({"data": {"0": page(2)[0].clone()}, "pages": 3, "total": 30}),
        json!({"data": page(2), "pages": 3, "total": "30"}),
        json!({"data": page(2), "pages": -1, "total": 30}),
        json!([page(2)]),
    ] {
        let s = bad_answer(
            &mut c,
            &sim,
            vec![body_rule(Endpoint::List, Some(2), None, body)],
            "partial",
            "unexpected response shape",
            "error",
        );
        assert!(s.error.unwrap().contains("page=2"));
    }
    // On page 1 the whole sync fails.
    let s = bad_answer(
        &mut c,
        &sim,
        vec![body_rule(
            Endpoint::List,
            Some(1),
            None,
            json!({"data": "none", "pages": 3, "total": 30}),
        )],
        "error",
        "unexpected response shape",
        "error",
    );
    assert!(s.error.unwrap().contains("could not be fetched"));
}

#[test]
fn bad_histories_are_reported_per_employee_and_never_taken_for_no_history() {
    let (_cluster, sim, mut c) = setup("bad-history");
    assert_eq!(sync(&mut c).status, "completed");
    let id = sim.listed_employee_ids()[7].clone();
    for body in [
        json!({"data": {"salary": []}}),
        json!([]),
        json!({"items": []}),
        json!(null),
    ] {
        let s = bad_answer(
            &mut c,
            &sim,
            vec![body_rule(
                Endpoint::Employments,
                None,
                Some(vec![id.clone()]),
                body,
            )],
            "partial",
            "employment history of",
            "error",
        );
        assert!(s.error.unwrap().contains(&id));
        // Its history is still the last good one, current.
        assert_eq!(
            count(
                &mut c,
                &format!("SELECT count(*) FROM employes_raw_data WHERE kind = 'employments' AND employee_id = '{id}' AND valid_to IS NULL")
            ),
            1
        );
    }
}

#[test]
fn wrongly_typed_values_are_kept_verbatim_and_break_nothing() {
    let (_cluster, sim, mut c) = setup("bad-types");
    assert_eq!(sync(&mut c).status, "completed");
    let mut dump = sim.dump();
    let employees = dump["employees"].as_array_mut().unwrap();
    let i = employees
        .iter()
        .position(|e| {
            e["record"]["employment"]["contract"]["hours_per_week"].is_number()
                && e["record"]["status"] == "active"
                && e["employments"].as_array().is_some_and(|items| {
                    items
                        .iter()
                        .any(|it| it["hours"].as_array().is_some_and(|h| h.len() >= 2))
                })
        })
        .unwrap();
    let id = employees[i]["record"]["id"].as_str().unwrap().to_string();
    let hours_events = format!(
        "SELECT count(*) FROM employes_timeline WHERE employee_id = '{id}' AND event_type = 'hours_changed'"
    );
    assert!(count(&mut c, &hours_events) > 0);
    let hours = employees[i]["record"]["employment"]["contract"]["hours_per_week"].clone();
    employees[i]["record"]["employment"]["contract"]["hours_per_week"] = json!(hours.to_string());
    employees[i]["record"]["yearly_wage"] = json!("lots");
    employees[i]["record"]["employment"]["salary"]["start_date"] = json!("yesterday");
    // Dates of the right shape that do not exist: a date cast would raise an error in a view.
    employees[i]["record"]["date_of_birth"] = json!("1990-02-30T00:00:00");
    if let Some(items) = employees[i]["employments"].as_array_mut() {
        for item in items {
            if let Some(periods) = item["hours"].as_array_mut() {
                for p in periods {
                    p["hours_per_week"] = json!("many");
                    p["start_date"] = json!("2025-02-31T00:00:00");
                }
            }
        }
    }
    sim.load(dump).unwrap();
    let s = sync(&mut c);
    assert_eq!(s.status, "completed", "{s:?}");
    assert_eq!(s.employees_deleted, 0);
    // Kept exactly as received.
    let stored: Value = c
        .query_one(
            "SELECT payload FROM employes_raw_data WHERE kind = 'employee' AND employee_id = $1 AND valid_to IS NULL",
            &[&id],
        )
        .unwrap()
        .get(0);
    assert_eq!(
        stored["employment"]["contract"]["hours_per_week"],
        json!(hours.to_string())
    );
    // A warning names the employee and each odd field, for the list and for the history.
    let warnings: Vec<Value> = c
        .query(
            "SELECT details FROM employes_sync_logs WHERE session_id = $1 AND level = 'warning'
                AND message LIKE '%values of unexpected types%' ORDER BY id",
            &[&s.id],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert_eq!(warnings[0]["examples"][0]["employee_id"], json!(id));
    let problems = warnings[0]["examples"][0]["problems"].to_string();
    for field in [
        "yearly_wage",
        "employment.contract.hours_per_week",
        "employment.salary.start_date",
    ] {
        assert!(problems.contains(field), "{field} not named in {problems}");
    }
    assert!(warnings[1]["examples"][0]["problems"]
        .to_string()
        .contains("hours_per_week is a string"));
    // The timeline and the views still work.
    assert_eq!(
        count(
            &mut c,
            &format!(
                "SELECT count(*) FROM employes_sync_logs WHERE session_id = '{}' AND message LIKE 'timeline refresh failed%'",
                s.id
            )
        ),
        0
    );
    count(&mut c, "SELECT count(*) FROM employes_timeline");
    count(&mut c, "SELECT count(*) FROM employes_current");
    count(&mut c, "SELECT count(*) FROM employes_recent_changes");
    // The impossible dates read as NULL, and the periods that carry one give no event.
    assert_eq!(
        count(
            &mut c,
            &format!("SELECT count(*) FROM employes_current WHERE employee_id = '{id}' AND date_of_birth IS NULL")
        ),
        1
    );
    assert_eq!(count(&mut c, &hours_events), 0);
    assert_history_consistent(&mut c);
    let again = sync(&mut c);
    assert_eq!((again.versions_written, again.changes_detected), (0, 0));
}
