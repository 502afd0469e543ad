//! Hostile and malformed API answers: a lying `pages`, ids with NUL or `..`, a record the
//! database cannot store among good ones, numbers beyond an f64, `Retry-After` as an HTTP date,
//! a megabyte of HTML as an error, redirects. The walk is bounded, bad records are refused alone,
//! numbers are exact, and every session error is one clean line.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use employes_sim::{Endpoint, FaultAction};
use employes_sync_e2e::*;
use serde_json::Value;

const EMPLOYEES: usize = 130;

/// 130 employees on two list pages of 100, synced once.
fn setup(name: &str, extra: &[&str]) -> (Cluster, Sim, Client) {
    let mut conf = vec![
        "employes_sync.per_page = 100".to_owned(),
        "employes_sync.max_retries = 2".to_owned(),
    ];
    conf.extend(extra.iter().map(|s| s.to_string()));
    let cluster = Cluster::start(name, &conf);
    let sim = sim(EMPLOYEES, 9, 0.0);
    cluster.use_sim(&sim, 300.0);
    let mut c = cluster.connect();
    let s = sync(&mut c);
    assert_eq!(s.status, "completed", "{s:?}");
    (cluster, sim, c)
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap()
}

/// The simulator's records in list order.
fn listed_records(sim: &Sim) -> Vec<Value> {
    let dump = sim.dump();
    let by_id: BTreeMap<String, Value> = dump["employees"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["record"]["id"].as_str().unwrap().to_owned(),
                e["record"].clone(),
            )
        })
        .collect();
    sim.listed_employee_ids()
        .iter()
        .map(|id| by_id[id].clone())
        .collect()
}

/// Changes the records of the simulated company with `edit(record, position in the list)` and
/// serves the result.
fn edit_records(sim: &Sim, edit: impl Fn(&mut Value, usize)) {
    let order = sim.listed_employee_ids();
    let mut dump = sim.dump();
    for e in dump["employees"].as_array_mut().unwrap() {
        let id = e["record"]["id"].as_str().unwrap().to_owned();
        if let Some(pos) = order.iter().position(|x| *x == id) {
            edit(&mut e["record"], pos);
        }
    }
    sim.load(dump).unwrap();
}

fn requests(sim: &Sim, endpoint: &str) -> u64 {
    sim.stats()
        .by_endpoint
        .get(endpoint)
        .map_or(0, |by_status| by_status.values().sum())
}

/// A session error as a panel shows it: one line, at most ~500 characters, no control
/// characters, no Rust debug text.
fn assert_readable(error: &str) {
    assert!(!error.is_empty());
    assert!(
        error.chars().count() <= 501,
        "{} characters",
        error.chars().count()
    );
    assert!(!error.chars().any(char::is_control), "{error:?}");
    for debug in ["Some(", "None", "\\\""] {
        assert!(!error.contains(debug), "{error}");
    }
}

#[test]
fn a_lying_page_count_is_bounded_by_the_total() {
    let (_cluster, sim, mut c) = setup("hostile-pages", &[]);
    let records = listed_records(&sim);
    for pages in ["1e12", "500"] {
        sim.reset_stats();
        let page1 = json(&format!(
            r#"{{"data": {}, "pages": {pages}, "total": 130}}"#,
            serde_json::to_string(&records[..100]).unwrap()
        ));
        let mut r = rule(Endpoint::List, FaultAction::Body { body: page1 });
        r.page = Some(1);
        sim.set_faults(vec![r]);
        let s = sync(&mut c);
        // ceil(130 / 100) + 2
        assert!(requests(&sim, "list") <= 4, "{pages}: {:?}", sim.stats());
        assert_eq!(s.pages_total, Some(4), "{s:?}");
        assert_eq!(
            (s.status.as_str(), s.employees_deleted),
            ("partial", 0),
            "{s:?}"
        );
        let error = s.error.clone().unwrap_or_default();
        assert_readable(&error);
        assert!(
            error.contains(&format!("the API reported {pages} pages"))
                || error.contains("pages, but its total of 130 employees"),
            "{error}"
        );
    }
    sim.clear_faults();
    let s = sync(&mut c);
    assert_eq!(s.status, "completed", "{s:?}");
    assert_history_consistent(&mut c);
}

#[test]
fn ids_with_nul_dot_dot_or_a_slash_are_refused_and_the_others_sync() {
    let (_cluster, sim, mut c) = setup("hostile-ids", &[]);
    sim.advance_with(employes_sim::AdvanceOptions {
        raises: Some(3),
        ..employes_sim::AdvanceOptions::none()
    });
    let records = listed_records(&sim);
    let e = records[0]["id"].as_str().unwrap().to_owned();
    let mut page1: Vec<Value> = records[..100].to_vec();
    for (i, bad) in [
        format!("{e}\u{0}evil"),
        "..".into(),
        "a/b".into(),
        "a\u{0}b".into(),
    ]
    .into_iter()
    .enumerate()
    {
        let mut copy = records[i].clone();
        copy["id"] = Value::String(bad);
        page1.push(copy);
    }
    let mut r = rule(
        Endpoint::List,
        FaultAction::Body {
            body: serde_json::json!({"data": page1, "pages": 2, "total": 130}),
        },
    );
    r.page = Some(1);
    sim.reset_stats();
    sim.set_faults(vec![r]);
    let s = sync(&mut c);
    assert_eq!(
        (s.status.as_str(), s.employees_deleted),
        ("partial", 0),
        "{s:?}"
    );
    assert_readable(s.error.as_deref().unwrap_or_default());
    // Nothing under a changed id: every stored employee is one the API lists.
    let listed = sim.listed_employee_ids();
    let stored: Vec<String> = c
        .query("SELECT DISTINCT employee_id FROM employes_raw_data", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(stored.iter().all(|id| listed.contains(id)), "{stored:?}");
    assert_eq!(stored.len(), EMPLOYEES);
    assert_eq!(
        count(
            &mut c,
            "SELECT count(*) FROM employes_timeline t WHERE octet_length(t.employee_id) <> 36"
        ),
        0
    );
    // No request for them: one /employments request per real employee.
    assert_eq!(requests(&sim, "employments"), EMPLOYEES as u64);
    // The others synced: the three raises are there.
    let raises = count(
        &mut c,
        &format!("SELECT count(DISTINCT employee_id) FROM employes_changes WHERE session_id = '{}' AND change_type = 'salary_change'", s.id),
    );
    assert_eq!(raises, 3);
    // Each refused record is named by its place on the page, never by its id.
    let warnings: Vec<String> = c
        .query(
            "SELECT message FROM employes_sync_logs WHERE session_id = $1 AND message LIKE 'skipped record%' ORDER BY id",
            &[&s.id],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        warnings,
        [
            "skipped record 101 on page 1: it has an id that contains a NUL character",
            "skipped record 102 on page 1: it has an id that is a relative path segment (. or ..)",
            "skipped record 103 on page 1: it has an id that has characters other than letters, digits, -, _, . and ~",
            "skipped record 104 on page 1: it has an id that contains a NUL character",
        ]
    );
    sim.clear_faults();
    assert_eq!(sync(&mut c).status, "completed");
    assert_history_consistent(&mut c);
}

#[test]
fn a_record_the_database_cannot_store_is_refused_alone_and_its_neighbours_are_applied() {
    let (_cluster, sim, mut c) = setup("hostile-poison", &[]);
    let order = sim.listed_employee_ids();
    // Three real changes, on both pages; a NUL in a name; a number no numeric holds.
    edit_records(&sim, |r, pos| match pos {
        3 | 50 | 120 => r["street"] = Value::String(format!("Nieuwe Straat {pos}")),
        10 => r["first_name"] = Value::String("An\u{0}na".into()),
        60 => r["yearly_wage"] = json("1e400000"),
        _ => {}
    });
    let s = sync(&mut c);
    assert_eq!(s.status, "partial", "{s:?}");
    assert_eq!((s.records_rejected, s.employees_deleted), (2, 0), "{s:?}");
    assert_readable(s.error.as_deref().unwrap_or_default());
    let streets: Vec<String> = c
        .query(
            "SELECT employee_id FROM employes_changes WHERE session_id = $1 AND field_path = '$.street' ORDER BY 1",
            &[&s.id],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut expected = vec![order[3].clone(), order[50].clone(), order[120].clone()];
    expected.sort();
    assert_eq!(streets, expected);
    for (pos, reason) in [(10, "NUL character"), (60, "numeric")] {
        let id = &order[pos];
        let logged = count(
            &mut c,
            &format!(
                "SELECT count(*) FROM employes_sync_logs WHERE session_id = '{}' AND level = 'error'
                  AND message LIKE 'the record of employee {id} was not stored:%{reason}%'
                  AND details ->> 'employee_id' = '{id}'",
                s.id
            ),
        );
        assert_eq!(logged, 1, "employee {id} ({reason})");
        // Its earlier version stays current.
        assert_eq!(
            count(&mut c, &format!("SELECT count(*) FROM employes_raw_data WHERE employee_id = '{id}' AND kind = 'employee'")),
            1
        );
    }
    // Again: the good ones are done, the bad ones refused again, nothing else.
    let again = sync(&mut c);
    assert_eq!(
        (again.versions_written, again.records_rejected),
        (0, 2),
        "{again:?}"
    );
    assert_history_consistent(&mut c);
}

#[test]
fn numbers_beyond_an_f64_are_compared_and_recorded_exactly() {
    let (_cluster, sim, mut c) = setup("hostile-numbers", &[]);
    let order = sim.listed_employee_ids();
    let x = order[7].clone();
    let set = |wage: &str, big: &str| {
        edit_records(&sim, |r, pos| {
            if pos == 7 {
                r["employment"]["salary"]["month_wage"] = json(wage);
                r["bonus_points"] = json(big);
            }
        })
    };
    set("2846.1234567890123456", "12345678901234567890123");
    assert_eq!(sync(&mut c).status, "completed");
    set("2846.1234567890123457", "12345678901234567890124");
    let s = sync(&mut c);
    assert_eq!(
        (s.status.as_str(), s.versions_written),
        ("completed", 1),
        "{s:?}"
    );
    let rows: Vec<(String, String, String)> = c
        .query(
            "SELECT field_path, old_value::text, new_value::text FROM employes_changes
              WHERE session_id = $1 AND employee_id = $2 ORDER BY field_path",
            &[&s.id, &x],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(
        rows,
        [
            (
                "$.bonus_points".into(),
                "12345678901234567890123".into(),
                "12345678901234567890124".into()
            ),
            (
                "$.employment.salary.month_wage".into(),
                "2846.1234567890123456".into(),
                "2846.1234567890123457".into()
            ),
        ]
    );
    // The payload keeps the digits too, and the same value spelled otherwise is no change.
    let wage: String = c
        .query_one(
            "SELECT payload #>> '{employment,salary,month_wage}' FROM employes_raw_data
              WHERE employee_id = $1 AND kind = 'employee' AND valid_to IS NULL",
            &[&x],
        )
        .unwrap()
        .get(0);
    assert_eq!(wage, "2846.1234567890123457");
    set("2846.12345678901234570", "1.2345678901234567890124e22");
    let s = sync(&mut c);
    assert_eq!((s.versions_written, s.changes_detected), (0, 0), "{s:?}");
}

/// An HTTP date `secs` seconds from now, as `Retry-After` gives it.
fn http_date_in(secs: u64) -> String {
    let at: chrono::DateTime<chrono::Utc> = (SystemTime::now() + Duration::from_secs(secs)).into();
    at.format("%a, %d %b %Y %H:%M:%S GMT").to_string()
}

fn seconds(c: &mut Client, s: &Session) -> f64 {
    c.query_one(
        "SELECT extract(epoch FROM completed_at - started_at)::float8 FROM employes_sync_sessions WHERE id = $1",
        &[&s.id],
    )
    .unwrap()
    .get(0)
}

#[test]
fn retry_after_as_an_http_date_is_honoured_and_capped() {
    let (_cluster, sim, mut c) = setup(
        "hostile-retry-after",
        &["employes_sync.retry_after_max_seconds = 8"],
    );
    let throttle = |secs: u64| {
        let mut r = rule(
            Endpoint::Employments,
            FaultAction::Raw {
                status: 429,
                headers: vec![("Retry-After".into(), http_date_in(secs))],
                body: r#"{"message":"Too Many Requests"}"#.into(),
            },
        );
        r.count = Some(1);
        sim.set_faults(vec![r]);
    };
    // A date 5 s ahead: the retry waits at least the 4 whole seconds the date still allows.
    throttle(5);
    let s = sync(&mut c);
    assert_eq!((s.status.as_str(), s.retries), ("completed", 1), "{s:?}");
    let took = seconds(&mut c, &s);
    assert!(took >= 3.9, "retried after {took:.1} s");
    // A date an hour ahead is cut to employes_sync.retry_after_max_seconds.
    throttle(3600);
    let s = sync(&mut c);
    assert_eq!((s.status.as_str(), s.retries), ("completed", 1), "{s:?}");
    let took = seconds(&mut c, &s);
    assert!((7.5..30.0).contains(&took), "waited {took:.1} s");
}

#[test]
fn api_errors_become_one_clean_sentence_with_the_detail_in_the_log() {
    let (cluster, sim, mut c) = setup("hostile-errors", &[]);
    let order = sim.listed_employee_ids();
    let html = format!(
        "<!DOCTYPE html><html><head><script>alert('x')</script></head><body>\u{1b}[31m<h1>400 Bad Request</h1>{}</body></html>",
        "<p>Lorem ipsum dolor sit amet.</p>".repeat(32_000)
    );
    assert!(html.len() > 1_000_000);
    let for_one = |id: &str, action: FaultAction| {
        let mut r = rule(Endpoint::Employments, action);
        r.employee_ids = Some(vec![id.to_owned()]);
        r
    };
    sim.set_faults(vec![
        for_one(
            &order[0],
            FaultAction::Raw {
                status: 400,
                headers: vec![("Content-Type".into(), "text/html".into())],
                body: html,
            },
        ),
        for_one(
            &order[1],
            FaultAction::Raw {
                status: 302,
                headers: vec![("Location".into(), "https://elsewhere.example/steal".into())],
                body: String::new(),
            },
        ),
        for_one(
            &order[2],
            FaultAction::Body {
                body: serde_json::json!({"data": null}),
            },
        ),
        for_one(
            &order[3],
            FaultAction::Body {
                body: serde_json::json!({"data": "x"}),
            },
        ),
        for_one(
            &order[4],
            FaultAction::Raw {
                status: 200,
                headers: vec![],
                body: r#"{"data":[{"id":"x\ud800"}]}"#.into(),
            },
        ),
    ]);
    let s = sync(&mut c);
    assert_eq!(s.status, "partial", "{s:?}");
    let error = s.error.clone().unwrap_or_default();
    assert_readable(&error);
    let messages: Vec<(String, Value)> = c
        .query(
            "SELECT message, details FROM employes_sync_logs WHERE session_id = $1 AND level = 'error' ORDER BY id",
            &[&s.id],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let about = |id: &str| -> (String, Value) {
        messages
            .iter()
            .find(|(m, _)| m.contains(id))
            .cloned()
            .unwrap_or_else(|| panic!("no error about {id}: {messages:#?}"))
    };
    for (m, _) in &messages {
        assert_readable(m);
    }
    let (html_error, details) = about(&order[0]);
    assert!(
        html_error.contains("HTTP 400") && html_error.contains("400 Bad Request"),
        "{html_error}"
    );
    assert!(
        !html_error.contains("alert") && !html_error.contains('<') && !html_error.contains("[31m"),
        "{html_error}"
    );
    let body = details["body"].as_str().unwrap_or_default();
    assert!(
        body.contains("400 Bad Request") && body.chars().count() <= 4097,
        "{} characters",
        body.chars().count()
    );
    assert!(!body.chars().any(char::is_control));
    assert!(about(&order[1])
        .0
        .contains("a redirect to https://elsewhere.example/steal (not followed"));
    assert!(about(&order[2]).0.contains("whose \"data\" is null"));
    assert!(about(&order[3]).0.contains("whose \"data\" is a string"));
    assert!(about(&order[4]).0.contains("a lone UTF-16 surrogate"));
    // A role that may only read the panel does not see the URL or the company in it.
    c.batch_execute("CREATE ROLE panel; GRANT EXECUTE ON FUNCTION employes_sync_status() TO panel")
        .unwrap();
    let mut p = cluster.connect();
    p.batch_execute("SET ROLE panel").unwrap();
    let st: Value = p
        .query_one("SELECT employes_sync_status()", &[])
        .unwrap()
        .get(0);
    let shown = st["last_session"]["error"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        !shown.contains(&sim.base_url()) && !shown.contains(&sim.company_id()),
        "{shown}"
    );
    assert!(shown.contains("<employes_sync.base_url>"), "{shown}");
    let st: Value = c
        .query_one("SELECT employes_sync_status()", &[])
        .unwrap()
        .get(0);
    assert_eq!(
        st["last_session"]["error"],
        Value::from(error),
        "a superuser sees it whole"
    );
    sim.clear_faults();
    assert_eq!(sync(&mut c).status, "completed");
}
