//! No false deletions when the employee list changes while a sync is between two pages: HR
//! deletes, hires or reorders right after page 1 has been answered (the simulator's list moves).
//! A deletion is recorded only once `GET /employees/{id}` answers 404.

use std::collections::BTreeSet;

use employes_sim::{AdvanceOptions, Endpoint, FaultAction, FaultRule, ListMove, StepReport};
use employes_sync_e2e::*;
use serde_json::Value;

const EMPLOYEES: usize = 130;

/// 130 employees on two list pages of 100, synced once.
fn setup(name: &str, extra: &[&str]) -> (Cluster, Sim, Client) {
    let mut conf = vec!["employes_sync.per_page = 100".to_owned()];
    conf.extend(extra.iter().map(|s| s.to_string()));
    let cluster = Cluster::start(name, &conf);
    let sim = sim(EMPLOYEES, 5, 0.0);
    cluster.use_sim(&sim, 300.0);
    let mut c = cluster.connect();
    let s = sync(&mut c);
    assert_eq!(s.status, "completed", "{s:?}");
    (cluster, sim, c)
}

fn pairs(report: &StepReport) -> BTreeSet<(String, String)> {
    report
        .changes
        .iter()
        .map(|t| (t.employee_id.clone(), t.change_type.clone()))
        .collect()
}

fn deleted(pairs: &BTreeSet<(String, String)>) -> Vec<&String> {
    pairs
        .iter()
        .filter(|(_, t)| t == "deleted")
        .map(|(id, _)| id)
        .collect()
}

/// Syncs with the list moved right after page 1; returns the session and what the move did.
fn sync_with_move(sim: &Sim, c: &mut Client, mv: ListMove) -> (Session, StepReport) {
    let before = sim.list_moves_done().len();
    sim.move_list_after_page(mv);
    let s = sync(c);
    let done = sim.list_moves_done();
    assert_eq!(done.len(), before + 1, "the move happened during the sync");
    (s, done[before].clone())
}

/// The session's warning about a moved list: the employee ids it names.
fn moved_ids(c: &mut Client, s: &Session) -> Vec<String> {
    let details: Vec<Value> = c
        .query(
            "SELECT details FROM employes_sync_logs WHERE session_id = $1 AND level = 'warning'
                AND message LIKE 'the employee list moved while it was read%'",
            &[&s.id],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    details
        .iter()
        .flat_map(|d| d["employee_ids"].as_array().cloned().unwrap_or_default())
        .map(|v| v.as_str().unwrap_or_default().to_owned())
        .collect()
}

#[test]
fn delete_and_hire_between_pages_with_the_same_total_delete_no_one_falsely() {
    let (_cluster, sim, mut c) = setup("move-both", &[]);
    let order = sim.listed_employee_ids();
    let (s, truth) = sync_with_move(
        &sim,
        &mut c,
        ListMove {
            after_page: 1,
            delete_positions: vec![4],
            hires: 1,
            ..ListMove::default()
        },
    );
    // Everyone after position 4 moved up a place: the first of page 2 slid onto page 1, which
    // was already read, so this sync never saw it; the total stayed 130.
    let skipped = order[100].clone();
    assert_eq!(s.status, "partial", "{s:?}");
    assert_eq!(s.snapshot_complete, Some(true), "{s:?}");
    assert_eq!((s.employees_deleted, s.list_moved), (0, 1), "{s:?}");
    let error = s.error.clone().unwrap_or_default();
    assert!(
        error.starts_with("the employee list moved while it was read: 1 employees"),
        "{error}"
    );
    assert_eq!(moved_ids(&mut c, &s), std::slice::from_ref(&skipped));
    let first = change_pairs(&mut c, s.id);
    assert!(
        deleted(&first).is_empty(),
        "no deletion in the moved sync: {first:?}"
    );
    assert!(first.iter().all(|(id, _)| id != &skipped));

    // The next clean sync records the real deletion; with the moved sync's hire that is the
    // whole truth, and nothing else.
    let next = sync(&mut c);
    assert_eq!(next.status, "completed", "{next:?}");
    assert_eq!(
        (next.employees_deleted, next.list_moved),
        (1, 0),
        "{next:?}"
    );
    let second = change_pairs(&mut c, next.id);
    let all: BTreeSet<_> = first.union(&second).cloned().collect();
    assert_eq!(
        all,
        pairs(&truth),
        "moved sync {first:?}, next sync {second:?}"
    );
    assert_eq!(deleted(&second), [&order[4]]);
    assert_history_consistent(&mut c);
}

#[test]
fn delete_only_hire_only_and_a_reorder_between_pages_make_no_false_deletion_or_creation() {
    let (_cluster, sim, mut c) = setup("move-each", &[]);
    let moves = [
        ListMove {
            after_page: 1,
            delete_positions: vec![7],
            ..ListMove::default()
        },
        ListMove {
            after_page: 1,
            hires: 1,
            ..ListMove::default()
        },
        ListMove {
            after_page: 1,
            reorder: Some((100, 0)),
            ..ListMove::default()
        },
        ListMove {
            after_page: 1,
            reorder: Some((3, 100)),
            ..ListMove::default()
        },
    ];
    for mv in moves {
        let (s, truth) = sync_with_move(&sim, &mut c, mv.clone());
        let truth = pairs(&truth);
        let first = change_pairs(&mut c, s.id);
        assert!(deleted(&first).is_empty(), "{mv:?}: {first:?}");
        assert!(
            first.is_subset(&truth),
            "{mv:?}: false changes {first:?}, truth {truth:?}"
        );
        assert_eq!(s.employees_deleted, 0, "{mv:?}: {s:?}");
        assert!(
            !s.error.clone().unwrap_or_default().contains("Some("),
            "{mv:?}: {s:?}"
        );
        let next = sync(&mut c);
        assert_eq!(next.status, "completed", "{mv:?}: {next:?}");
        let second = change_pairs(&mut c, next.id);
        let all: BTreeSet<_> = first.union(&second).cloned().collect();
        assert_eq!(
            all, truth,
            "{mv:?}: moved sync {first:?}, next sync {second:?}"
        );
    }
    assert_history_consistent(&mut c);
}

#[test]
fn a_deletion_that_cannot_be_confirmed_is_not_written_and_the_session_says_why() {
    let (_cluster, sim, mut c) = setup(
        "move-unconfirmed",
        &[
            "employes_sync.max_retries = 1",
            "employes_sync.request_timeout_ms = 1000",
        ],
    );
    let report = sim.advance_with(AdvanceOptions {
        removals: Some(1),
        ..AdvanceOptions::none()
    });
    let gone = report.changes[0].employee_id.clone();
    for (fault, why) in [
        (
            FaultAction::Status {
                status: 503,
                body: None,
                retry_after: None,
            },
            "HTTP 503",
        ),
        (FaultAction::Delay { ms: 3000 }, "timed out"),
    ] {
        sim.set_faults(vec![FaultRule {
            endpoint: Endpoint::Detail,
            page: None,
            employee_ids: Some(vec![gone.clone()]),
            company_id: None,
            every: None,
            skip: 0,
            count: None,
            action: fault,
        }]);
        let s = sync(&mut c);
        assert_eq!(s.status, "partial", "{s:?}");
        assert_eq!(s.employees_deleted, 0, "{s:?}");
        assert!(deleted(&change_pairs(&mut c, s.id)).is_empty());
        let error = s.error.clone().unwrap_or_default();
        assert!(
            error.contains(&format!("employee {gone} is missing from the list"))
                && error.contains("could not be confirmed")
                && error.contains(why),
            "{error}"
        );
    }
    sim.clear_faults();
    let s = sync(&mut c);
    assert_eq!(
        (s.status.as_str(), s.employees_deleted),
        ("completed", 1),
        "{s:?}"
    );
    assert_eq!(deleted(&change_pairs(&mut c, s.id)), [&gone]);
}

#[test]
fn confirming_deletions_costs_a_request_per_deletion_and_none_without() {
    let (_cluster, sim, mut c) = setup("move-cost", &[]);
    let minimum = |employees: i32| 2 + employees;
    sim.advance_with(AdvanceOptions {
        raises: Some(3),
        ..AdvanceOptions::none()
    });
    let s = sync(&mut c);
    assert_eq!(s.status, "completed", "{s:?}");
    assert_eq!(s.api_requests, minimum(EMPLOYEES as i32), "{s:?}");
    sim.advance_with(AdvanceOptions {
        removals: Some(2),
        ..AdvanceOptions::none()
    });
    let s = sync(&mut c);
    assert_eq!(
        (s.status.as_str(), s.employees_deleted),
        ("completed", 2),
        "{s:?}"
    );
    assert_eq!(s.api_requests, minimum(EMPLOYEES as i32 - 2) + 2, "{s:?}");
}
