//! The fault matrix: every fault the simulator can inject, once while the employee list is
//! fetched and once while employment histories are fetched. For each: the session's status,
//! message and retry counter, nothing half-applied, no deletion from an incomplete snapshot,
//! and the next clean sync converging to exactly the state of a fault-free reference run.

use std::sync::OnceLock;

use employes_sim::{AdvanceOptions, Endpoint, FaultAction, FaultRule};
use employes_sync_e2e::*;
use serde_json::json;

const EMPLOYEES: usize = 30;
const SEED: u64 = 11;
/// `max_retries = 2` (fast_conf): a request is sent at most 3 times.
const RETRIES: i32 = 2;

/// Fingerprints of the fault-free run: after the first sync and after each of three steps.
fn reference() -> &'static Vec<Vec<String>> {
    static R: OnceLock<Vec<Vec<String>>> = OnceLock::new();
    R.get_or_init(|| {
        reference_run(
            "faults-ref",
            EMPLOYEES,
            SEED,
            &vec![AdvanceOptions::default(); 3],
        )
    })
}

fn list_page_2(action: FaultAction) -> FaultRule {
    FaultRule {
        page: Some(2),
        ..rule(Endpoint::List, action)
    }
}

fn history_of(id: &str, count: Option<u32>, action: FaultAction) -> FaultRule {
    FaultRule {
        employee_ids: Some(vec![id.to_string()]),
        company_id: None,
        every: None,
        count,
        ..rule(Endpoint::Employments, action)
    }
}

fn status(code: u16, retry_after: Option<u32>) -> FaultAction {
    FaultAction::Status {
        status: code,
        body: None,
        retry_after,
    }
}

/// What one faulty sync must end as.
struct Expect {
    status: &'static str,
    /// Substrings of the session's error (none: the error is NULL).
    error: &'static [&'static str],
    retries: i32,
    /// A log line of the session must contain this.
    log: Option<&'static str>,
    /// Whether the list was complete (deletions applied).
    snapshot_complete: bool,
}

/// Records (kind, employee) that must have no version first seen by `session`.
fn assert_untouched(c: &mut Client, session: uuid::Uuid, kind: &str, ids: &[String]) {
    let n = count_with(
        c,
        "SELECT count(*) FROM employes_raw_data WHERE first_session_id = $1 AND kind = $2 AND employee_id = ANY($3)",
        &[&session, &kind, &ids],
    );
    assert_eq!(n, 0, "{kind} of {ids:?} half-applied by the faulty session");
}

fn count_with(c: &mut Client, sql: &str, params: &[&(dyn postgres::types::ToSql + Sync)]) -> i64 {
    c.query_one(sql, params).unwrap().get(0)
}

fn assert_session(c: &mut Client, sim: &Sim, s: &Session, e: &Expect, removals: usize) {
    assert_eq!(s.status, e.status, "{s:?}");
    match &s.error {
        None => assert!(e.error.is_empty(), "expected an error: {s:?}"),
        Some(msg) => {
            assert!(!e.error.is_empty(), "unexpected error: {s:?}");
            for part in e.error {
                assert!(msg.contains(part), "error {msg:?} lacks {part:?}");
            }
            assert!(!msg.contains(&sim.token()), "the token leaked: {msg}");
        }
    }
    assert_eq!(s.retries, e.retries, "retries: {s:?}");
    // A timed-out request reaches the simulator's counter only when its delayed answer is sent.
    wait_until(
        std::time::Duration::from_secs(10),
        "api_requests equal to the requests the API received",
        || s.api_requests as u64 == sim.stats().total,
    );
    assert_eq!(s.snapshot_complete, Some(e.snapshot_complete), "{s:?}");
    let deleted = count_with(
        c,
        "SELECT count(DISTINCT employee_id) FROM employes_changes WHERE session_id = $1 AND change_type = 'deleted'",
        &[&s.id],
    );
    if e.snapshot_complete {
        assert_eq!(s.employees_deleted as usize, removals, "{s:?}");
    } else {
        assert_eq!(
            (s.employees_deleted, deleted),
            (0, 0),
            "an incomplete snapshot deleted: {s:?}"
        );
    }
    if let Some(line) = e.log {
        let n = count_with(
            c,
            "SELECT count(*) FROM employes_sync_logs WHERE session_id = $1 AND message LIKE '%' || $2 || '%'",
            &[&s.id, &line],
        );
        assert!(n > 0, "no log line with {line:?} for {s:?}");
    }
    let leaks = count_with(
        c,
        "SELECT count(*) FROM employes_sync_logs WHERE strpos(message || coalesce(details::text, ''), $1) > 0",
        &[&sim.token()],
    );
    assert_eq!(leaks, 0, "the token is in the log table");
    // The counters are the rows really written.
    let written = count_with(
        c,
        "SELECT count(*) FROM employes_changes WHERE session_id = $1",
        &[&s.id],
    );
    assert_eq!(written, s.changes_detected as i64, "{s:?}");
    assert_history_consistent(c);
}

struct Matrix {
    name: &'static str,
    /// Faults while the list is fetched (page 2 of 3).
    list: Vec<FaultRule>,
    list_expect: Expect,
    /// Faults while histories are fetched, given two listed employees (a, b).
    history: fn(&str, &str) -> Vec<FaultRule>,
    history_expect: Expect,
    /// Whether employee `a`'s history must not be written by the faulty history sync.
    history_of_a_untouched: bool,
}

/// Cluster: clean sync, then for each phase: advance, faulty sync, clean sync; every clean sync
/// must reach the reference run's state.
fn run(m: Matrix) {
    let reference = reference();
    let cluster = Cluster::start(m.name, &fast_conf());
    let sim = sim(EMPLOYEES, SEED, 0.0);
    cluster.use_sim(&sim, 300.0);
    let mut c = cluster.connect();
    let s = sync(&mut c);
    assert_eq!(s.status, "completed", "{s:?}");
    assert_eq!(fingerprint(&mut c), reference[0]);

    // During the employee list.
    let report = sim.advance();
    let removals = report
        .changes
        .iter()
        .filter(|t| t.event == "removal")
        .count();
    assert!(removals > 0, "the step should remove someone: {report:?}");
    let page2: Vec<String> = sim.listed_employee_ids()[10..20].to_vec();
    sim.set_faults(m.list);
    sim.reset_stats();
    let s = sync(&mut c);
    assert_session(&mut c, &sim, &s, &m.list_expect, removals);
    if m.list_expect.status != "completed" {
        assert_untouched(&mut c, s.id, "employee", &page2);
        assert_untouched(&mut c, s.id, "employments", &page2);
    }
    sim.clear_faults();
    let clean = sync(&mut c);
    assert_eq!(clean.status, "completed", "{clean:?}");
    assert_eq!(
        fingerprint(&mut c),
        reference[1],
        "after the list fault, the clean sync must converge"
    );

    // During the histories.
    let report = sim.advance();
    let removals = report
        .changes
        .iter()
        .filter(|t| t.event == "removal")
        .count();
    let ids = sim.listed_employee_ids();
    let (a, b) = (ids[3].clone(), ids[17].clone());
    sim.set_faults((m.history)(&a, &b));
    sim.reset_stats();
    let s = sync(&mut c);
    assert_session(&mut c, &sim, &s, &m.history_expect, removals);
    if m.history_of_a_untouched {
        assert_untouched(&mut c, s.id, "employments", std::slice::from_ref(&a));
    }
    sim.clear_faults();
    let clean = sync(&mut c);
    assert_eq!(clean.status, "completed", "{clean:?}");
    assert_eq!(
        fingerprint(&mut c),
        reference[2],
        "after the history fault, the clean sync must converge"
    );
    let again = sync(&mut c);
    assert_eq!(
        (again.versions_written, again.changes_detected),
        (0, 0),
        "{again:?}"
    );
}

/// A retryable fault: page 2 fails on every attempt (partial, nobody deleted); in the histories,
/// employee a fails on every attempt and b twice before it succeeds.
fn retryable(name: &'static str, action: FaultAction, error: &'static [&'static str]) -> Matrix {
    fn history(action: FaultAction) -> impl Fn(&str, &str) -> Vec<FaultRule> {
        move |a, b| {
            vec![
                history_of(a, None, action.clone()),
                history_of(b, Some(2), action.clone()),
            ]
        }
    }
    // fn pointers cannot capture: the action is chosen by name below.
    let history: fn(&str, &str) -> Vec<FaultRule> = match name {
        "fault-429" => |a, b| history(status(429, Some(1)))(a, b),
        "fault-503" => |a, b| history(status(503, None))(a, b),
        "fault-reset" => |a, b| history(FaultAction::Reset)(a, b),
        "fault-timeout" => |a, b| history(FaultAction::Delay { ms: 2500 })(a, b),
        "fault-malformed" => |a, b| history(FaultAction::MalformedJson)(a, b),
        "fault-truncate" => |a, b| history(FaultAction::Truncate)(a, b),
        other => panic!("unknown case {other}"),
    };
    Matrix {
        name,
        list: vec![list_page_2(action)],
        list_expect: Expect {
            status: "partial",
            error: leak(["page 2 of the employee list failed", "page=2"], error),
            retries: RETRIES,
            log: Some("the snapshot is incomplete"),
            snapshot_complete: false,
        },
        history,
        history_expect: Expect {
            status: "partial",
            error: leak(["employment history of", "/employments"], error),
            retries: 2 * RETRIES,
            log: None,
            snapshot_complete: true,
        },
        history_of_a_untouched: true,
    }
}

fn leak(head: [&'static str; 2], tail: &'static [&'static str]) -> &'static [&'static str] {
    let mut v: Vec<&'static str> = head.to_vec();
    v.extend_from_slice(tail);
    Box::leak(v.into_boxed_slice())
}

#[test]
fn storm_of_429_with_retry_after_is_retried_honouring_the_header() {
    // Throttling is not failure: a 429 does not use up max_retries (2 here), it is waited out
    // for at most throttle_max_wait_seconds (3 s here). Retry-After: 1 s (plus jitter) three
    // times is more than that: the storm ends the request after 3 attempts, 2 of them retries.
    let started = std::time::Instant::now();
    run(retryable(
        "fault-429",
        status(429, Some(1)),
        &["HTTP 429 after 3 attempts"],
    ));
    // Four syncs wait out Retry-After: 1 s at least twice each for the faulty ones.
    assert!(started.elapsed() >= std::time::Duration::from_secs(4));
}

#[test]
fn burst_of_5xx_is_retried_then_reported() {
    run(retryable(
        "fault-503",
        status(503, None),
        &["HTTP 503 after 3 attempts"],
    ));
}

#[test]
fn connection_reset_is_retried_then_reported() {
    run(retryable(
        "fault-reset",
        FaultAction::Reset,
        &["after 3 attempts"],
    ));
}

#[test]
fn read_timeout_is_retried_then_reported() {
    run(retryable(
        "fault-timeout",
        FaultAction::Delay { ms: 2500 },
        &["timed out", "after 3 attempts"],
    ));
}

#[test]
fn malformed_json_is_retried_then_reported_and_never_half_applied() {
    run(retryable(
        "fault-malformed",
        FaultAction::MalformedJson,
        &["not valid JSON", "after 3 attempts"],
    ));
}

#[test]
fn truncated_body_is_retried_then_reported_and_never_half_applied() {
    run(retryable(
        "fault-truncate",
        FaultAction::Truncate,
        &["after 3 attempts"],
    ));
}

#[test]
fn unauthorized_mid_sync_fails_fast_without_deleting() {
    run(Matrix {
        name: "fault-401",
        list: vec![list_page_2(status(401, None))],
        list_expect: Expect {
            status: "error",
            error: &[
                "the Employes API rejected the token (HTTP 401)",
                "check employes_sync.api_token",
            ],
            retries: 0,
            log: None,
            snapshot_complete: false,
        },
        history: |_, _| {
            vec![FaultRule {
                skip: 5,
                ..rule(Endpoint::Employments, status(401, None))
            }]
        },
        history_expect: Expect {
            status: "error",
            error: &[
                "the Employes API rejected the token (HTTP 401)",
                "/employments",
            ],
            retries: 0,
            log: None,
            snapshot_complete: false,
        },
        history_of_a_untouched: false,
    });
}

#[test]
fn forbidden_list_page_is_partial_and_forbidden_history_is_restricted() {
    run(Matrix {
        name: "fault-403",
        list: vec![list_page_2(status(403, None))],
        list_expect: Expect {
            status: "partial",
            error: &[
                "page 2 of the employee list failed",
                "access restricted (HTTP 403)",
            ],
            retries: 0,
            log: Some("the snapshot is incomplete"),
            snapshot_complete: false,
        },
        // Every /employments request answers 403: restricted, not a failure.
        history: |_, _| vec![rule(Endpoint::Employments, status(403, None))],
        history_expect: Expect {
            status: "completed",
            error: &[],
            retries: 0,
            log: Some("employment history restricted (403)"),
            snapshot_complete: true,
        },
        history_of_a_untouched: true,
    });
}

#[test]
fn not_found_list_page_is_partial_and_not_found_history_means_no_history() {
    run(Matrix {
        name: "fault-404",
        list: vec![list_page_2(status(404, None))],
        list_expect: Expect {
            status: "partial",
            error: &["page 2 of the employee list failed", "HTTP 404"],
            retries: 0,
            log: Some("the snapshot is incomplete"),
            snapshot_complete: false,
        },
        history: |a, _| vec![history_of(a, None, status(404, None))],
        history_expect: Expect {
            status: "completed",
            error: &[],
            retries: 0,
            log: Some("no employment history (404)"),
            snapshot_complete: true,
        },
        history_of_a_untouched: true,
    });
}

/// A 403 whose message is about the key (the API gateway's answer to a malformed header)
/// is an authentication failure: the sync stops at once, even in the middle of the histories.
#[test]
fn forbidden_for_a_bad_key_during_history_fails_fast() {
    let reference = reference();
    let cluster = Cluster::start("fault-403-auth", &fast_conf());
    let sim = sim(EMPLOYEES, SEED, 0.0);
    cluster.use_sim(&sim, 300.0);
    let mut c = cluster.connect();
    sync(&mut c);
    for step in 1..=3 {
        let report = sim.advance();
        if step < 3 {
            assert_eq!(sync(&mut c).status, "completed");
            continue;
        }
        let _ = report;
        sim.set_faults(vec![FaultRule {
            skip: 4,
            ..rule(
                Endpoint::Employments,
                FaultAction::Status {
                    status: 403,
                    body: Some(json!({"message": "Invalid key=value pair (missing equal-sign) in Authorization header"})),
                    retry_after: None,
                },
            )
        }]);
        sim.reset_stats();
        let s = sync(&mut c);
        assert_session(
            &mut c,
            &sim,
            &s,
            &Expect {
                status: "error",
                error: &[
                    "the Employes API rejected the token (HTTP 403)",
                    "Authorization header",
                ],
                retries: 0,
                log: None,
                snapshot_complete: false,
            },
            0,
        );
        sim.clear_faults();
        assert_eq!(sync(&mut c).status, "completed");
        assert_eq!(fingerprint(&mut c), reference[3]);
    }
}
