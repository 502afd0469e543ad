//! The sync driver against the simulator over loopback, with an in-memory store that keeps
//! versions the way the extension does (current version per record, plan() for the writes).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use employes_sim::{AdvanceOptions, Endpoint, FaultAction, FaultRule, Sim, SimConfig};
use employes_sync_core::client::{Client, ClientConfig};
use employes_sync_core::model::Kind;
use employes_sync_core::sync::{
    run_sync, Applied, ApplyStats, FinalStatus, Level, Progress, SeenIds, StopReason, Store,
    StoreError, SyncOptions,
};
use employes_sync_core::versions::{self, Existing, Incoming};
use serde_json::Value;

/// A stored version: payload, content hash, current.
type Version = (Value, String, bool);

#[derive(Default)]
struct MemStore {
    /// (kind, employee) -> versions, newest last
    versions: HashMap<(Kind, String), Vec<Version>>,
    changes: Vec<(Kind, String, String)>,
    logs: Vec<(Level, String)>,
    stop_after_applies: Option<usize>,
    applies: usize,
    /// Size of each applied batch, in order.
    batch_sizes: Vec<(Kind, usize)>,
    /// Every apply of employee records fails (a storage error).
    fail_employee_applies: bool,
    /// Employees erased: never stored again.
    erased: std::collections::HashSet<String>,
}

impl Store for MemStore {
    fn changed(&mut self, kind: Kind, records: Vec<Incoming>) -> Result<Vec<Incoming>, StoreError> {
        Ok(records
            .into_iter()
            .filter(|r| {
                self.versions
                    .get(&(kind, r.employee_id.clone()))
                    .and_then(|vs| vs.last())
                    .is_none_or(|(_, hash, current)| !*current || *hash != r.content_hash)
            })
            .collect())
    }

    fn apply(
        &mut self,
        kind: Kind,
        records: Vec<Incoming>,
        _p: &Progress,
    ) -> Result<Applied, StoreError> {
        self.applies += 1;
        self.batch_sizes.push((kind, records.len()));
        if kind == Kind::Employee && self.fail_employee_applies {
            return Err("storage unavailable".into());
        }
        let mut existing = HashMap::new();
        for r in &records {
            if let Some(vs) = self.versions.get(&(kind, r.employee_id.clone())) {
                let (payload, hash, current) = vs.last().unwrap().clone();
                existing.insert(
                    r.employee_id.clone(),
                    Existing {
                        raw_id: vs.len() as i64,
                        version: vs.len() as i32,
                        content_hash: hash,
                        is_current: current,
                        payload: Some(payload),
                    },
                );
            }
        }
        let plan = versions::plan(kind, records, &existing);
        let mut stats = ApplyStats::default();
        for v in plan {
            let vs = self
                .versions
                .entry((kind, v.employee_id.clone()))
                .or_default();
            if let Some(last) = vs.last_mut() {
                last.2 = false;
            }
            vs.push((v.payload, v.content_hash, true));
            stats.versions_written += 1;
            for c in v.changes {
                self.changes.push((
                    kind,
                    v.employee_id.clone(),
                    c.change_type.as_str().to_owned(),
                ));
                stats.changes_detected += 1;
            }
        }
        Ok(stats.into())
    }

    fn erased(&mut self, employee_id: &str) -> Result<bool, StoreError> {
        Ok(self.erased.contains(employee_id))
    }

    fn missing(&mut self, seen: &SeenIds) -> Result<Vec<String>, StoreError> {
        let mut ids: Vec<String> = self
            .versions
            .iter()
            .filter(|((_, id), vs)| vs.last().unwrap().2 && !seen.contains(id))
            .map(|((_, id), _)| id.clone())
            .collect();
        ids.sort_unstable();
        ids.dedup();
        Ok(ids)
    }

    fn mark_deleted(&mut self, ids: Vec<String>, _p: &Progress) -> Result<ApplyStats, StoreError> {
        let mut stats = ApplyStats::default();
        for ((kind, id), vs) in self.versions.iter_mut() {
            let last = vs.last_mut().unwrap();
            if last.2 && ids.contains(id) {
                last.2 = false;
                self.changes.push((*kind, id.clone(), "deleted".into()));
                stats.changes_detected += 1;
                if *kind == Kind::Employee {
                    stats.versions_written += 1;
                }
            }
        }
        Ok(stats)
    }

    fn progress(&mut self, _p: &Progress) -> Result<(), StoreError> {
        Ok(())
    }

    fn log(&mut self, level: Level, _step: &str, message: &str, _details: Value) {
        self.logs.push((level, message.to_owned()));
    }

    fn check_stop(&mut self) -> Option<StopReason> {
        match self.stop_after_applies {
            Some(n) if self.applies >= n => Some(StopReason::Cancelled),
            _ => None,
        }
    }
}

fn client(sim: &Sim, rps: f64) -> Client {
    Client::new(ClientConfig {
        base_url: sim.base_url(),
        company_id: sim.company_id(),
        token: sim.token(),
        requests_per_second: rps,
        max_retries: 3,
        backoff_base: Duration::from_millis(20),
        backoff_max: Duration::from_millis(200),
        request_timeout: Duration::from_secs(2),
        ..ClientConfig::default()
    })
    .unwrap()
}

fn start(employees: usize, rps: f64) -> Sim {
    Sim::start(SimConfig {
        employees,
        rps,
        ..SimConfig::default()
    })
    .unwrap()
}

/// A simulator of `employees` and a store that has synced it once, completely.
fn synced(employees: usize) -> (Sim, MemStore) {
    let sim = start(employees, 0.0);
    let mut store = MemStore::default();
    let out = run_sync(&client(&sim, 0.0), &mut store, opts());
    assert_eq!(out.status, FinalStatus::Completed, "first sync: {out:?}");
    (sim, store)
}

fn opts() -> SyncOptions {
    SyncOptions {
        stop_poll: Duration::from_millis(20),
        ..SyncOptions::default()
    }
}

#[test]
fn a_full_sync_fetches_every_page_and_history_exactly_once() {
    let sim = start(250, 0.0);
    let mut store = MemStore::default();
    let out = run_sync(&client(&sim, 0.0), &mut store, opts());
    assert_eq!(out.status, FinalStatus::Completed, "{out:?}");
    assert!(out.snapshot_complete);
    assert_eq!(out.progress.pages_total, Some(3));
    assert_eq!(out.progress.api_requests, 3 + 250);
    assert_eq!(sim.stats().total, 3 + 250);
    assert_eq!(out.progress.versions_written, 500);
    assert_eq!(
        store.changes.iter().filter(|c| c.2 == "created").count(),
        500
    );

    let again = run_sync(&client(&sim, 0.0), &mut store, opts());
    assert_eq!(
        (
            again.progress.versions_written,
            again.progress.changes_detected
        ),
        (0, 0)
    );
}

#[test]
fn requests_never_exceed_the_rate_limit() {
    let sim = start(40, 20.0);
    let mut store = MemStore::default();
    let t = Instant::now();
    let out = run_sync(&client(&sim, 20.0), &mut store, opts());
    let secs = t.elapsed().as_secs_f64();
    assert_eq!(out.status, FinalStatus::Completed, "{out:?}");
    let stats = sim.stats();
    assert_eq!(
        stats
            .by_endpoint
            .values()
            .flat_map(|m| m.get("429"))
            .sum::<u64>(),
        0,
        "{stats:?}"
    );
    assert!(stats.max_requests_in_any_second <= 21, "{stats:?}");
    // Pacing, not speed: 41 requests at 20/s cannot finish before the first 40 intervals pass.
    assert!(
        secs >= 40.0 / 20.0 * 0.95,
        "{secs} s is faster than the rate allows"
    );
}

#[test]
fn a_429_storm_is_waited_out_with_retry_after_and_counted() {
    let sim = start(30, 0.0);
    sim.set_faults(vec![FaultRule {
        endpoint: Endpoint::Employments,
        page: None,
        employee_ids: None,
        company_id: None,
        every: None,
        skip: 3,
        count: Some(3),
        action: FaultAction::Status {
            status: 429,
            body: None,
            retry_after: Some(1),
        },
    }]);
    let mut store = MemStore::default();
    let t = Instant::now();
    let out = run_sync(&client(&sim, 0.0), &mut store, opts());
    assert_eq!(out.status, FinalStatus::Completed, "{out:?}");
    assert_eq!(out.progress.retries, 3);
    assert_eq!(out.progress.api_requests, 1 + 30 + 3);
    assert!(
        t.elapsed() >= Duration::from_secs(1),
        "Retry-After must be honoured"
    );
}

#[test]
fn throttling_does_not_use_up_the_retries_of_failures() {
    // max_retries is 3: one request answered 429 six times in a row, then 200, still completes;
    // and so does a run where every 3rd request is throttled and every 7th fails with 503.
    let sim = start(30, 0.0);
    let id = sim.listed_employee_ids()[4].clone();
    sim.set_faults(vec![FaultRule {
        endpoint: Endpoint::Employments,
        page: None,
        employee_ids: Some(vec![id]),
        company_id: None,
        every: None,
        skip: 0,
        count: Some(6),
        action: FaultAction::Status {
            status: 429,
            body: None,
            retry_after: None,
        },
    }]);
    let mut store = MemStore::default();
    let out = run_sync(&client(&sim, 0.0), &mut store, opts());
    assert_eq!(out.status, FinalStatus::Completed, "{out:?}");
    assert_eq!(out.progress.retries, 6);

    let sim = start(130, 0.0);
    let rule = |every: u32, status: u16| FaultRule {
        endpoint: Endpoint::Any,
        page: None,
        employee_ids: None,
        company_id: None,
        every: Some(every),
        skip: 0,
        count: None,
        action: FaultAction::Status {
            status,
            body: None,
            retry_after: (status == 429).then_some(0),
        },
    };
    sim.set_faults(vec![rule(3, 429), rule(7, 503)]);
    let mut store = MemStore::default();
    // Five retries of failures, as by default: six 503s in a row for one request (1 in 7^5 for
    // each failed one, as the parallel requests interleave) stays out of reach.
    let c = Client::new(ClientConfig {
        max_retries: 5,
        ..client(&sim, 0.0).config().clone()
    })
    .unwrap();
    let out = run_sync(&c, &mut store, opts());
    assert_eq!(out.status, FinalStatus::Completed, "{out:?}");
    assert_eq!(out.progress.errors, 0);
    assert_eq!(out.progress.versions_written, 260);
}

#[test]
fn throttling_is_bounded_by_time() {
    let sim = start(5, 0.0);
    sim.set_faults(vec![FaultRule {
        endpoint: Endpoint::List,
        page: None,
        employee_ids: None,
        company_id: None,
        every: None,
        skip: 0,
        count: None,
        action: FaultAction::Status {
            status: 429,
            body: None,
            retry_after: Some(0),
        },
    }]);
    // Each wait is Retry-After 0 plus at most 100 ms of jitter: 600 ms of waiting takes at least
    // 6 retries, whatever the jitter draws, against a max_retries of 1.
    let c = Client::new(ClientConfig {
        throttle_max: Duration::from_millis(600),
        max_retries: 1,
        ..client(&sim, 0.0).config().clone()
    })
    .unwrap();
    let mut store = MemStore::default();
    let t = Instant::now();
    let out = run_sync(&c, &mut store, opts());
    assert_ne!(out.status, FinalStatus::Completed, "{out:?}");
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert!(
        out.progress.retries >= 6,
        "throttled more times than max_retries: {out:?}"
    );
}

#[test]
fn unauthorized_stops_the_sync_at_once() {
    let sim = start(120, 0.0);
    sim.set_faults(vec![FaultRule {
        endpoint: Endpoint::Any,
        page: None,
        employee_ids: None,
        company_id: None,
        every: None,
        skip: 5,
        count: None,
        action: FaultAction::Status {
            status: 401,
            body: Some(serde_json::json!({"message": "Unauthorized"})),
            retry_after: None,
        },
    }]);
    let mut store = MemStore::default();
    let out = run_sync(&client(&sim, 0.0), &mut store, opts());
    assert_eq!(out.status, FinalStatus::Error);
    let err = out.error.unwrap();
    assert!(
        err.contains("HTTP 401") && err.contains("api_token"),
        "{err}"
    );
    assert!(!err.contains(&sim.token()));
    assert_eq!(out.progress.retries, 0, "401 is never retried");
    assert!(!store.changes.iter().any(|c| c.2 == "deleted"));
}

#[test]
fn an_expired_token_is_named_as_expired() {
    use base64::Engine;
    let sim = start(20, 0.0);
    let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    let mut cfg = client(&sim, 0.0).config().clone();
    // Expired on 2020-01-01; the simulator accepts only its own token: a 401.
    cfg.token = format!(
        "{}.{}.sig",
        b64(r#"{"alg":"HS256"}"#),
        b64(r#"{"exp":1577836800}"#)
    );
    let out = run_sync(
        &Client::new(cfg.clone()).unwrap(),
        &mut MemStore::default(),
        opts(),
    );
    let err = out.error.unwrap();
    assert!(
        err.contains("the Employes token expired at 2020-01-01T00:00:00Z (HTTP 401)"),
        "{err}"
    );
    assert!(!err.contains(&cfg.token));
    // Not expired (2100), or not a JWT: rejected, not expired.
    for token in [
        format!("{}.{}.sig", b64("{}"), b64(r#"{"exp":4102444800}"#)),
        "not-a-jwt".to_owned(),
    ] {
        cfg.token = token;
        let out = run_sync(
            &Client::new(cfg.clone()).unwrap(),
            &mut MemStore::default(),
            opts(),
        );
        let err = out.error.unwrap();
        assert!(
            err.contains("the Employes API rejected the token (HTTP 401)"),
            "{err}"
        );
        assert!(!err.contains("expired"), "{err}");
    }
}

#[test]
fn erased_employees_are_neither_stored_nor_fetched_and_others_are_still_deleted() {
    let (sim, mut store) = synced(150);
    let ids = sim.listed_employee_ids();
    // Forgotten: their rows are gone, and they stay listed by the API.
    let forgotten: Vec<String> = ids[10..13].to_vec();
    store.versions.retain(|(_, id), _| !forgotten.contains(id));
    store.erased.extend(forgotten.iter().cloned());
    sim.advance_with(AdvanceOptions {
        removals: Some(2),
        ..AdvanceOptions::none()
    });
    sim.reset_stats();
    let out = run_sync(&client(&sim, 0.0), &mut store, opts());
    assert_eq!(out.status, FinalStatus::Completed, "{out:?}");
    assert!(out.snapshot_complete, "the erased still count as listed");
    for id in &forgotten {
        assert!(
            !store.versions.keys().any(|(_, v)| v == id),
            "{id} came back"
        );
    }
    // Their histories were not fetched: pages plus one request per other listed employee.
    let listed = sim.listed_employee_ids().len() as u64;
    assert_eq!(out.progress.api_requests, 2 + (listed - 3) + 2, "{out:?}");
    assert_eq!(
        store
            .changes
            .iter()
            .filter(|c| c.2 == "deleted" && c.0 == Kind::Employee)
            .count(),
        2,
        "the removed employees are still detected"
    );
    assert!(store.logs.iter().any(
        |(l, m)| *l == Level::Info && m.starts_with("3 listed employee(s) were erased earlier")
    ));
}

#[test]
fn an_incomplete_snapshot_deletes_nobody() {
    let (sim, mut store) = synced(150);
    sim.advance_with(AdvanceOptions {
        removals: Some(3),
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
        action: FaultAction::Status {
            status: 503,
            body: None,
            retry_after: None,
        },
    }]);
    let out = run_sync(&client(&sim, 0.0), &mut store, opts());
    assert_eq!(out.status, FinalStatus::Partial, "{out:?}");
    assert!(!out.snapshot_complete);
    assert!(out.error.unwrap().contains("page=2"));
    assert!(!store.changes.iter().any(|c| c.2 == "deleted"));
    sim.clear_faults();
    let out = run_sync(&client(&sim, 0.0), &mut store, opts());
    assert_eq!(out.status, FinalStatus::Completed);
    assert_eq!(
        store
            .changes
            .iter()
            .filter(|c| c.2 == "deleted" && c.0 == Kind::Employee)
            .count(),
        3
    );
}

#[test]
fn a_lying_total_or_duplicate_ids_make_the_snapshot_incomplete() {
    let (sim, mut store) = synced(30);
    sim.set_faults(vec![FaultRule {
        endpoint: Endpoint::List,
        page: Some(1),
        employee_ids: None,
        company_id: None,
        every: None,
        skip: 0,
        count: None,
        action: FaultAction::Body {
            body: serde_json::json!({"data": [], "pages": 1, "total": 30}),
        },
    }]);
    let out = run_sync(&client(&sim, 0.0), &mut store, opts());
    assert_eq!(out.status, FinalStatus::Partial, "{out:?}");
    assert!(
        !store.changes.iter().any(|c| c.2 == "deleted"),
        "an empty page with total 30 must delete nobody"
    );
}

#[test]
fn cancelling_stops_between_units_of_work() {
    let sim = start(300, 0.0);
    let mut store = MemStore {
        stop_after_applies: Some(2),
        ..MemStore::default()
    };
    let opts = SyncOptions {
        apply_batch: 50,
        ..opts()
    };
    let out = run_sync(&client(&sim, 0.0), &mut store, opts);
    assert_eq!(out.status, FinalStatus::Cancelled);
    assert!(!out.snapshot_complete);
    // At most one more batch of each kind: what was already fetched when the stop was seen.
    assert!(
        store.applies <= 2 + 2,
        "{} applies after the stop",
        store.applies
    );
    assert!(out.progress.api_requests < 300, "{:?}", out.progress);
    assert!(!store.changes.iter().any(|c| c.2 == "deleted"));
}

#[test]
fn changed_records_from_many_pages_are_applied_in_one_transaction_per_kind() {
    let sim = start(300, 0.0);
    let mut store = MemStore::default();
    // A deadline longer than the sync: batches are cut by size and by the end of the work only.
    let opts = SyncOptions {
        max_pending: Duration::from_secs(600),
        ..opts()
    };
    let out = run_sync(&client(&sim, 0.0), &mut store, opts);
    assert_eq!(out.status, FinalStatus::Completed, "{out:?}");
    assert_eq!(out.progress.versions_written, 600);
    assert_eq!(
        store.batch_sizes,
        vec![(Kind::Employee, 300), (Kind::Employments, 300)],
        "3 list pages and 300 histories, one batch per kind"
    );

    sim.advance_with(AdvanceOptions {
        raises: Some(5),
        ..AdvanceOptions::none()
    });
    store.batch_sizes.clear();
    let out = run_sync(&client(&sim, 0.0), &mut store, opts);
    assert_eq!(out.status, FinalStatus::Completed, "{out:?}");
    let applied: usize = store.batch_sizes.iter().map(|b| b.1).sum();
    assert!(
        store.batch_sizes.len() <= 2 && applied == out.progress.versions_written as usize,
        "only the changed records reach apply, batched: {:?}, {:?}",
        store.batch_sizes,
        out.progress
    );
    assert!(
        (5..=10).contains(&applied),
        "5 raises change 5 histories (and maybe their records): {applied}"
    );
}

#[test]
fn batches_are_cut_at_the_batch_size() {
    let sim = start(300, 0.0);
    let mut store = MemStore::default();
    let opts = SyncOptions {
        apply_batch: 50,
        max_pending: Duration::from_secs(600),
        ..opts()
    };
    let out = run_sync(&client(&sim, 0.0), &mut store, opts);
    assert_eq!(out.status, FinalStatus::Completed, "{out:?}");
    for kind in [Kind::Employee, Kind::Employments] {
        let sizes: Vec<usize> = store
            .batch_sizes
            .iter()
            .filter(|b| b.0 == kind)
            .map(|b| b.1)
            .collect();
        assert_eq!(sizes.iter().sum::<usize>(), 300, "{kind:?}: {sizes:?}");
        // A list page (100 records) is added whole, so a batch can pass the size by a page.
        assert!(
            sizes.len() >= 3 && sizes.iter().all(|&n| n < 50 + 100),
            "{kind:?}: {sizes:?}"
        );
    }
}

#[test]
fn a_batch_that_cannot_be_applied_fails_its_pages_and_deletes_nobody() {
    let (sim, mut store) = synced(250);
    sim.advance_with(AdvanceOptions {
        removals: Some(2),
        raises: Some(3),
        ..AdvanceOptions::none()
    });
    store.fail_employee_applies = true;
    let out = run_sync(&client(&sim, 0.0), &mut store, opts());
    assert_eq!(out.status, FinalStatus::Partial, "{out:?}");
    assert!(!out.snapshot_complete);
    let err = out.error.unwrap();
    assert!(
        err.contains("could not be applied") && err.contains("storage unavailable"),
        "{err}"
    );
    assert!(!store.changes.iter().any(|c| c.2 == "deleted"));

    store.fail_employee_applies = false;
    let out = run_sync(&client(&sim, 0.0), &mut store, opts());
    assert_eq!(out.status, FinalStatus::Completed, "{out:?}");
    assert_eq!(
        store
            .changes
            .iter()
            .filter(|c| c.2 == "deleted" && c.0 == Kind::Employee)
            .count(),
        2
    );
}

#[test]
fn an_employee_the_list_skipped_but_the_api_still_has_is_not_deleted() {
    let (sim, mut store) = synced(150);
    let order = sim.listed_employee_ids();
    // After page 1 the employee at position 2 is deleted and one is hired: everyone after it
    // moves up a place, the first of page 2 onto page 1 (already read); the total stays 150.
    sim.move_list_after_page(employes_sim::ListMove {
        after_page: 1,
        delete_positions: vec![2],
        hires: 1,
        ..Default::default()
    });
    let before = store.changes.len();
    let out = run_sync(&client(&sim, 0.0), &mut store, opts());
    assert_eq!(out.status, FinalStatus::Partial, "{out:?}");
    assert!(out.snapshot_complete);
    assert_eq!((out.progress.deleted, out.progress.list_moved), (0, 1));
    assert!(!store.changes[before..].iter().any(|c| c.2 == "deleted"));
    assert!(out
        .error
        .unwrap()
        .contains("the employee list moved while it was read"));
    // One confirmation request, for the skipped employee: 150 listed of which 1 new, 2 pages.
    assert_eq!(out.progress.api_requests, 2 + 150 + 1);
    assert!(store
        .logs
        .iter()
        .any(|(l, m)| *l == Level::Warning && m.contains("1 of the 1 employees missing")));
    let out = run_sync(&client(&sim, 0.0), &mut store, opts());
    assert_eq!(out.status, FinalStatus::Completed, "{out:?}");
    let deleted: Vec<&String> = store.changes[before..]
        .iter()
        .filter(|c| c.2 == "deleted" && c.0 == Kind::Employee)
        .map(|c| &c.1)
        .collect();
    assert_eq!(deleted, [&order[2]]);
}
