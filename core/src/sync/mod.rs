//! The sync driver: runs the snapshot collector (every page of `/employees`, [`snapshot`]) and
//! the history collector (`/employments` per employee, [`history`]) on a few HTTP threads
//! ([`pipeline`]) inside the client's rate limit, applies what changed through the [`Store`]
//! (in the extension: SPI, one short transaction per batch) on the caller's thread, and decides
//! the session's outcome and its deletions ([`outcome`]).

mod history;
mod outcome;
mod pipeline;
mod snapshot;
mod store;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::client::Client;
use crate::model::Kind;
use crate::text;
use crate::versions::Incoming;

pub use store::{Applied, ApplyStats, Level, Progress, SeenIds, StopReason, Store, StoreError};

use pipeline::{Event, Job, Pipeline};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinalStatus {
    Completed,
    Partial,
    Error,
    Cancelled,
}

impl FinalStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            FinalStatus::Completed => "completed",
            FinalStatus::Partial => "partial",
            FinalStatus::Error => "error",
            FinalStatus::Cancelled => "cancelled",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Outcome {
    pub status: FinalStatus,
    pub error: Option<String>,
    pub snapshot_complete: bool,
    pub progress: Progress,
}

#[derive(Debug, Clone, Copy)]
pub struct SyncOptions {
    pub concurrency: usize,
    /// Changed records of one kind that make the pending batch be applied (one transaction).
    pub apply_batch: usize,
    /// The longest a changed record waits for its batch: data and progress stay this fresh.
    pub max_pending: Duration,
    /// How often the store's stop flag is polled.
    pub stop_poll: Duration,
    /// How often progress is recorded while nothing is written.
    pub progress_every: Duration,
}

impl Default for SyncOptions {
    fn default() -> Self {
        SyncOptions {
            concurrency: 4,
            apply_batch: 1000,
            max_pending: Duration::from_secs(5),
            stop_poll: Duration::from_millis(250),
            progress_every: Duration::from_millis(500),
        }
    }
}

/// An error's log details (`details()` of an API or store error) with more keys.
fn merged(mut details: Value, more: Value) -> Value {
    if let (Some(d), Value::Object(more)) = (details.as_object_mut(), more) {
        d.extend(more);
    }
    details
}

/// An error's log details with the list page it concerns.
fn with_page(mut details: Value, page: u32) -> Value {
    details["page"] = json!(page);
    details
}

/// An error's log details with the employee it concerns.
fn with_employee(mut details: Value, id: &str) -> Value {
    details["employee_id"] = json!(id);
    details
}

/// One warning per page or batch whose records carry values of unexpected types.
fn warn_types(store: &mut dyn Store, step: &str, place: &str, mut odd: Vec<Value>) {
    let n = odd.len();
    odd.truncate(20);
    store.log(
        Level::Warning,
        step,
        &format!("{n} record(s) in {place} have values of unexpected types: kept as received; views read those fields as NULL"),
        json!({"records": n, "examples": odd}),
    );
}

/// Runs one sync to its end. Never panics on API or storage errors: they end up in the outcome.
pub fn run_sync(client: &Client, store: &mut dyn Store, opts: SyncOptions) -> Outcome {
    let mut run = Run::new(client, opts.concurrency);
    let mut pipeline = Pipeline::start(client, opts.concurrency);
    pipeline.push(Job::Page(1));
    store.log(
        Level::Info,
        "snapshot",
        "fetching the employee list",
        json!({"per_page": client.config().per_page}),
    );
    let mut last_poll = Instant::now() - opts.stop_poll;
    let mut last_progress = Instant::now();

    while pipeline.outstanding > 0 || run.pending.any() {
        if last_poll.elapsed() >= opts.stop_poll {
            last_poll = Instant::now();
            if let Some(reason) = store.check_stop() {
                run.stopped = Some(reason);
                break;
            }
        }
        let event = if pipeline.outstanding > 0 {
            let due = run.pending.since.map_or(opts.stop_poll, |t| {
                opts.max_pending.saturating_sub(t.elapsed())
            });
            pipeline.recv(due.min(opts.stop_poll))
        } else {
            None
        };
        match event {
            Some(Event::Page(page, result)) => run.on_page(store, &mut pipeline, page, result),
            Some(Event::History(id, result)) => run.on_history(store, id, result),
            None => {}
        }
        if run.fatal.is_some() {
            break;
        }
        // Changed records wait for a full batch, the end of the work, or their deadline: one
        // transaction then writes what many pages changed (a 1% change spread over every page
        // costs a few transactions, not one per page).
        if run.pending.employee.len() >= opts.apply_batch
            || run.pending.history.len() >= opts.apply_batch
            || (pipeline.outstanding == 0 && run.pending.any())
            || run
                .pending
                .since
                .is_some_and(|t| t.elapsed() >= opts.max_pending)
        {
            run.flush(store);
            last_progress = Instant::now();
        } else if last_progress.elapsed() >= opts.progress_every {
            run.sync_counters();
            let _ = store.progress(&run.progress);
            last_progress = Instant::now();
        }
    }
    let interrupted = run.fatal.is_some() || run.stopped.is_some();
    if interrupted {
        client.stop();
        pipeline.cancel_pending();
    }
    pipeline.shutdown(!interrupted);
    // What was fetched completely is still applied after a cancel or an API failure; a
    // terminated worker (server shutdown, pg_terminate_backend) leaves at once instead, and the
    // next sync fetches those records again. Either way nothing is half-applied.
    if !matches!(run.stopped, Some(StopReason::Terminated(_))) && run.pending.any() {
        run.flush(store);
    }
    run.finish(store)
}

/// Changed records waiting to be applied, and the list pages they came from (a page counts as
/// applied only once its changed records are committed).
#[derive(Default)]
struct Pending {
    employee: Vec<Incoming>,
    pages: Vec<u32>,
    history: Vec<Incoming>,
    odd_history: Vec<Value>,
    since: Option<Instant>,
}

impl Pending {
    fn any(&self) -> bool {
        !self.employee.is_empty() || !self.history.is_empty()
    }
}

struct Run<'a> {
    client: &'a Client,
    /// What page 1 said: (pages, total).
    reported: Option<(u64, u64)>,
    /// Connections for the requests that confirm deletions.
    concurrency: usize,
    progress: Progress,
    pages_ok: HashSet<u32>,
    pages_failed: u64,
    /// Every employee id the list gave (duplicates are refused).
    seen: SeenIds,
    pending: Pending,
    snapshot_doubts: Vec<String>,
    fatal: Option<String>,
    first_error: Option<String>,
    stopped: Option<StopReason>,
    no_history: u64,
    restricted: u64,
    history_failed: u64,
    /// Listed employees who were erased: neither stored nor fetched.
    erased_listed: u64,
}

impl<'a> Run<'a> {
    fn new(client: &'a Client, concurrency: usize) -> Run<'a> {
        Run {
            client,
            reported: None,
            concurrency,
            progress: Progress::default(),
            pages_ok: HashSet::new(),
            pages_failed: 0,
            seen: SeenIds::default(),
            pending: Pending::default(),
            snapshot_doubts: Vec::new(),
            fatal: None,
            first_error: None,
            stopped: None,
            no_history: 0,
            restricted: 0,
            history_failed: 0,
            erased_listed: 0,
        }
    }

    fn sync_counters(&mut self) {
        let c = self.client.counters();
        self.progress.api_requests = c.requests.load(std::sync::atomic::Ordering::Relaxed);
        self.progress.retries = c.retries.load(std::sync::atomic::Ordering::Relaxed);
    }

    /// A record that cannot be stored as received: left out alone, its stored version stays.
    fn reject(
        &mut self,
        store: &mut dyn Store,
        step: &str,
        id: &str,
        kind: Kind,
        why: String,
        details: Value,
    ) {
        self.progress.rejected += 1;
        let what = match kind {
            Kind::Employee => "record",
            Kind::Employments => "employment history",
        };
        let message = format!(
            "the {what} of employee {id} was not stored: {why}; its earlier version stays current, and the other records were applied"
        );
        let details = merged(
            details,
            json!({"employee_id": id, "kind": kind.as_str(), "reason": why}),
        );
        self.error(store, step, message, details);
    }

    fn error(&mut self, store: &mut dyn Store, step: &str, message: String, details: Value) {
        self.progress.errors += 1;
        let message = text::sentence(&message);
        store.log(Level::Error, step, &message, details);
        self.first_error.get_or_insert(message);
    }

    /// Applies the pending changed records: one transaction per kind.
    fn flush(&mut self, store: &mut dyn Store) {
        let pending = std::mem::take(&mut self.pending);
        if !pending.odd_history.is_empty() {
            warn_types(
                store,
                "history",
                "employment histories",
                pending.odd_history,
            );
        }
        if !pending.employee.is_empty() {
            let n = pending.employee.len();
            self.sync_counters();
            match store.apply(Kind::Employee, pending.employee, &self.progress) {
                Ok(applied) => {
                    self.pages_ok.extend(pending.pages);
                    self.count_applied(store, "snapshot", Kind::Employee, applied);
                }
                Err(e) => {
                    self.pages_failed += pending.pages.len() as u64;
                    self.error(
                        store,
                        "snapshot",
                        format!(
                            "{n} changed employee records from {} list pages could not be applied: {e}",
                            pending.pages.len()
                        ),
                        merged(e.details(), json!({"records": n, "pages": pending.pages})),
                    );
                }
            }
        }
        if !pending.history.is_empty() {
            let n = pending.history.len() as u64;
            self.progress.employees_done += n;
            self.sync_counters();
            match store.apply(Kind::Employments, pending.history, &self.progress) {
                Ok(applied) => self.count_applied(store, "history", Kind::Employments, applied),
                Err(e) => {
                    self.history_failed += n;
                    self.error(
                        store,
                        "history",
                        format!("a batch of {n} employment histories could not be applied: {e}"),
                        merged(e.details(), json!({"employees": n})),
                    );
                }
            }
        }
    }

    fn count_applied(&mut self, store: &mut dyn Store, step: &str, kind: Kind, applied: Applied) {
        self.progress.versions_written += applied.stats.versions_written;
        self.progress.changes_detected += applied.stats.changes_detected;
        for (id, e) in applied.rejected {
            let why = format!("the database refused it: {e}");
            self.reject(store, step, &id, kind, why, e.details());
        }
    }
}
