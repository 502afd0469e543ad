//! The sync driver: the snapshot collector (every page of `/employees`), the history collector
//! (`/employments` per employee) and the rules that decide a session's outcome. HTTP runs on a
//! few worker threads inside the client's rate limit; everything that touches storage happens
//! on the caller's thread through the [`Store`] trait (in the extension: SPI, one short
//! transaction per page or batch).

use std::collections::{HashSet, VecDeque};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::canonical::content_hash;
use crate::classify::Kind;
use crate::client::{ApiError, Client, ListPage};
use crate::deletions;
use crate::text;
use crate::versions::{invalid_id, record_id, unstorable, Incoming};

/// Counters a session shows; `api_requests` and `retries` come from the client.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Progress {
    pub pages_total: Option<u64>,
    pub pages_done: u64,
    pub employees_total: Option<u64>,
    pub employees_done: u64,
    pub api_requests: u64,
    pub retries: u64,
    pub versions_written: u64,
    pub changes_detected: u64,
    pub errors: u64,
    pub deleted: u64,
    /// Employees missing from the list whom the API still has: the list moved under the sync.
    pub list_moved: u64,
    /// Records that could not be stored as received (NUL in a string, refused by the database).
    pub rejected: u64,
}

/// The employee ids a list gave, kept as 64-bit keys: 8 bytes each whatever an id's length, so
/// the set stays small for a large company. Two different ids sharing a key (about 1 in 10^9 at
/// 100,000 employees) can only err on the safe side: the second looks like a duplicate (the
/// snapshot counts as incomplete and nobody is deleted), or an employee who left is not marked
/// deleted until a later sync.
#[derive(Debug, Default)]
pub struct SeenIds(HashSet<u64>);

impl SeenIds {
    /// The 64-bit key of an id (fixed for the whole process, so a store can key its own
    /// per-employee data the same way and ask `contains_key`).
    pub fn key(id: &str) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::hash::DefaultHasher::new();
        id.hash(&mut h);
        h.finish()
    }

    /// False when the id was already there.
    pub fn insert(&mut self, id: &str) -> bool {
        self.0.insert(Self::key(id))
    }

    pub fn contains(&self, id: &str) -> bool {
        self.contains_key(Self::key(id))
    }

    pub fn contains_key(&self, key: u64) -> bool {
        self.0.contains(&key)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// What one applied batch wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ApplyStats {
    pub versions_written: u64,
    pub changes_detected: u64,
}

/// What one batch's transaction wrote, and the records the store refused alone (employee id,
/// reason): the database would not take them, and their neighbours were applied.
#[derive(Debug, Default)]
pub struct Applied {
    pub stats: ApplyStats,
    pub rejected: Vec<(String, String)>,
}

impl From<ApplyStats> for Applied {
    fn from(stats: ApplyStats) -> Applied {
        Applied {
            stats,
            rejected: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Debug,
    Info,
    Warning,
    Error,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warning => "warning",
            Level::Error => "error",
        }
    }
}

/// Why a sync stopped early.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopReason {
    Cancelled,
    Terminated(String),
}

/// Storage as the driver sees it. Each `apply` is atomic: all of the batch or none of it,
/// together with the progress given.
pub trait Store {
    /// Keeps the records whose content differs from their current stored version and drops the
    /// rest (they need no write). Called for every fetched record, so it must be cheap: the
    /// extension answers from a per-sync cache of current hashes, with no SQL. The default keeps
    /// everything, which is also correct: `apply` plans nothing for unchanged content.
    fn changed(&mut self, kind: Kind, records: Vec<Incoming>) -> Result<Vec<Incoming>, String> {
        let _ = kind;
        Ok(records)
    }
    /// Applies the batch; a record the storage refuses may be left out alone (`rejected`)
    /// while the rest is applied.
    fn apply(
        &mut self,
        kind: Kind,
        records: Vec<Incoming>,
        progress: &Progress,
    ) -> Result<Applied, String>;
    /// The employees with a current record who are not in `seen`, sorted.
    fn missing(&mut self, seen: &SeenIds) -> Result<Vec<String>, String>;
    /// Marks the current records of these employees deleted; returns how many employees (as
    /// `versions_written`) and the changes recorded.
    fn mark_deleted(&mut self, ids: Vec<String>, progress: &Progress)
        -> Result<ApplyStats, String>;
    fn progress(&mut self, progress: &Progress) -> Result<(), String>;
    fn log(&mut self, level: Level, step: &str, message: &str, details: Value);
    /// Polled between units of work.
    fn check_stop(&mut self) -> Option<StopReason>;
}

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

enum Job {
    Page(u32),
    History(String),
}

/// A fetched unit of work, hashed on the HTTP thread that fetched it (canonical hashing is the
/// costliest Rust step of a sync; the main thread only compares).
enum Event {
    Page(u32, Result<(ListPage, Vec<String>), ApiError>),
    History(String, Result<Option<Incoming>, ApiError>),
}

struct Queue {
    jobs: Mutex<(VecDeque<Job>, bool)>,
    ready: Condvar,
}

/// A few HTTP threads fed by a queue where list pages go before histories.
struct Pipeline {
    queue: Arc<Queue>,
    events: Receiver<Event>,
    threads: Vec<JoinHandle<()>>,
    outstanding: usize,
}

impl Pipeline {
    fn start(client: &Client, threads: usize) -> Pipeline {
        let queue = Arc::new(Queue {
            jobs: Mutex::new((VecDeque::new(), false)),
            ready: Condvar::new(),
        });
        // Bounded: when the database side is slower than HTTP, the threads wait instead of
        // piling parsed pages up in memory.
        let (tx, events) = mpsc::sync_channel(threads.max(1) * 2);
        let threads = (0..threads.max(1))
            .map(|_| {
                let (queue, client, tx): (Arc<Queue>, Client, SyncSender<Event>) =
                    (queue.clone(), client.clone(), tx.clone());
                std::thread::spawn(move || loop {
                    let job = {
                        let mut guard = queue.jobs.lock().unwrap_or_else(|e| e.into_inner());
                        loop {
                            if guard.1 {
                                return;
                            }
                            if let Some(job) = guard.0.pop_front() {
                                break job;
                            }
                            guard = queue.ready.wait(guard).unwrap_or_else(|e| e.into_inner());
                        }
                    };
                    let event = match job {
                        Job::Page(p) => Event::Page(
                            p,
                            client.list_page(p).map(|lp| {
                                let hashes = lp.records.iter().map(content_hash).collect();
                                (lp, hashes)
                            }),
                        ),
                        Job::History(id) => {
                            let r = client
                                .employments(&id)
                                .map(|body| body.map(|b| Incoming::new(id.clone(), b)));
                            Event::History(id, r)
                        }
                    };
                    if tx.send(event).is_err() {
                        return;
                    }
                })
            })
            .collect();
        Pipeline {
            queue,
            events,
            threads,
            outstanding: 0,
        }
    }

    fn push(&mut self, job: Job) {
        let mut guard = self.queue.jobs.lock().unwrap_or_else(|e| e.into_inner());
        match job {
            Job::Page(_) => guard.0.push_front(job),
            Job::History(_) => guard.0.push_back(job),
        }
        self.outstanding += 1;
        self.queue.ready.notify_one();
    }

    /// Drops jobs not yet started; in-flight requests finish (or stop, with the client).
    fn cancel_pending(&mut self) {
        let mut guard = self.queue.jobs.lock().unwrap_or_else(|e| e.into_inner());
        self.outstanding -= guard.0.len();
        guard.0.clear();
    }

    fn recv(&mut self, timeout: Duration) -> Option<Event> {
        match self.events.recv_timeout(timeout) {
            Ok(e) => {
                self.outstanding -= 1;
                Some(e)
            }
            Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => None,
        }
    }

    /// Stops the threads; `join` waits for in-flight requests (skipped when stopping on a
    /// signal, so a server shutdown is not held up by a slow API).
    fn shutdown(self, join: bool) {
        {
            let mut guard = self.queue.jobs.lock().unwrap_or_else(|e| e.into_inner());
            guard.1 = true;
            guard.0.clear();
        }
        self.queue.ready.notify_all();
        if join {
            for t in self.threads {
                let _ = t.join();
            }
        }
    }
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

/// The most list pages a sync fetches: 10,000,000 employees at 100 per page.
const MAX_PAGES: u64 = 100_000;

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
        }
    }

    fn sync_counters(&mut self) {
        let c = self.client.counters();
        self.progress.api_requests = c.requests.load(std::sync::atomic::Ordering::Relaxed);
        self.progress.retries = c.retries.load(std::sync::atomic::Ordering::Relaxed);
    }

    /// A record that cannot be stored as received: left out alone, its stored version stays.
    fn reject(&mut self, store: &mut dyn Store, step: &str, id: &str, kind: Kind, why: String) {
        self.progress.rejected += 1;
        let what = match kind {
            Kind::Employee => "record",
            Kind::Employments => "employment history",
        };
        let message = format!(
            "the {what} of employee {id} was not stored: {why}; its earlier version stays current, and the other records were applied"
        );
        self.error(
            store,
            step,
            message,
            json!({"employee_id": id, "kind": kind.as_str(), "reason": why}),
        );
    }

    fn error(&mut self, store: &mut dyn Store, step: &str, message: String, details: Value) {
        self.progress.errors += 1;
        let message = text::sentence(&message);
        store.log(Level::Error, step, &message, details);
        self.first_error.get_or_insert(message);
    }

    fn on_page(
        &mut self,
        store: &mut dyn Store,
        pipeline: &mut Pipeline,
        page: u32,
        result: Result<(ListPage, Vec<String>), ApiError>,
    ) {
        let (lp, hashes) = match result {
            Ok(r) => r,
            Err(e) => {
                if e.is_fatal() {
                    store.log(
                        Level::Error,
                        "snapshot",
                        &text::sentence(&e.to_string()),
                        with_page(e.details(), page),
                    );
                    self.fatal = Some(e.to_string());
                } else if !matches!(e, ApiError::Stopped) {
                    self.pages_failed += 1;
                    self.error(
                        store,
                        "snapshot",
                        format!("page {page} of the employee list failed: {e}"),
                        with_page(e.details(), page),
                    );
                    if page == 1 {
                        self.fatal = Some(format!("the employee list could not be fetched: {e}"));
                    }
                }
                return;
            }
        };
        if page == 1 {
            self.start_walk(store, pipeline, &lp);
        } else if Some((lp.pages, lp.total)) != self.reported {
            let (pages, total) = self.reported.unwrap_or_default();
            self.snapshot_doubts.push(format!(
                "the list changed while it was read: page {page} reported {} employees in {} pages, page 1 {total} in {pages}",
                lp.total, lp.pages
            ));
        }
        let mut batch = Vec::with_capacity(lp.records.len());
        let mut new_ids = Vec::new();
        let mut odd = Vec::new();
        for (i, (record, hash)) in lp.records.into_iter().zip(hashes).enumerate() {
            let why = match record_id(&record) {
                None => Err("has no usable \"id\""),
                Some(id) => match invalid_id(&id) {
                    Some(why) => Err(why),
                    None => Ok(id),
                },
            };
            let id = match why {
                Ok(id) => id,
                Err(why) => {
                    // Never part of a URL, a key or a message: the record is known by its place.
                    let why = if why.starts_with("has no") {
                        why.to_owned()
                    } else {
                        format!("has an id that {why}")
                    };
                    self.snapshot_doubts
                        .push(format!("record {} on page {page} {why}", i + 1));
                    store.log(
                        Level::Warning,
                        "snapshot",
                        &format!("skipped record {} on page {page}: it {why}", i + 1),
                        json!({"page": page, "index": i}),
                    );
                    continue;
                }
            };
            if !self.seen.insert(&id) {
                self.snapshot_doubts
                    .push(format!("employee {id} appears twice in the list"));
                store.log(
                    Level::Warning,
                    "snapshot",
                    &format!("employee {id} appears more than once in the list (page {page})"),
                    json!({"page": page, "employee_id": id}),
                );
                continue;
            }
            let problems = crate::shape::check_employee(&record);
            if !problems.is_empty() {
                odd.push(json!({"employee_id": id, "problems": problems}));
            }
            new_ids.push(id.clone());
            if let Some(why) = unstorable(&record) {
                self.reject(store, "snapshot", &id, Kind::Employee, why);
                continue;
            }
            batch.push(Incoming::with_hash(id, record, hash));
        }
        if !odd.is_empty() {
            warn_types(store, "snapshot", &format!("page {page}"), odd);
        }
        self.progress.pages_done += 1;
        match store.changed(Kind::Employee, batch) {
            Ok(changed) if changed.is_empty() => {
                self.pages_ok.insert(page);
            }
            Ok(changed) => {
                self.pending.employee.extend(changed);
                self.pending.pages.push(page);
                self.pending.since.get_or_insert_with(Instant::now);
            }
            Err(e) => {
                self.pages_failed += 1;
                self.error(
                    store,
                    "snapshot",
                    format!("page {page} could not be compared with the stored versions: {e}"),
                    json!({"page": page}),
                );
            }
        }
        for id in new_ids {
            pipeline.push(Job::History(id));
        }
    }

    /// Queues the list pages after the first: as many as `total` needs at `per_page`, plus a
    /// margin of 2 for a list that grows while it is read, never more than `pages` says and
    /// never more than [`MAX_PAGES`]. A `pages` that disagrees with `total` is logged and leaves
    /// the snapshot incomplete: a lying API cannot make a sync walk for hours.
    fn start_walk(&mut self, store: &mut dyn Store, pipeline: &mut Pipeline, lp: &ListPage) {
        let per_page = u64::from(self.client.config().per_page.max(1));
        let needed = lp.total.div_ceil(per_page);
        let walk = lp.pages.min(needed + 2).min(MAX_PAGES);
        self.reported = Some((lp.pages, lp.total));
        self.progress.pages_total = Some(walk);
        self.progress.employees_total = Some(lp.total);
        if lp.pages != needed {
            let doubt = format!(
                "the API reported {} pages, but its total of {} employees at {per_page} per page makes {needed}",
                lp.pages, lp.total
            );
            store.log(
                Level::Warning,
                "snapshot",
                &format!("{doubt}: fetching {} pages, and no employee is marked deleted in this session", walk.max(1)),
                json!({"pages": lp.pages, "total": lp.total, "per_page": per_page, "fetched_pages": walk.max(1)}),
            );
            self.snapshot_doubts.push(doubt);
        }
        for p in 2..=walk {
            pipeline.push(Job::Page(p as u32));
        }
        store.log(
            Level::Info,
            "snapshot",
            &format!("{} employees in {} pages", lp.total, lp.pages),
            json!({"total": lp.total, "pages": lp.pages}),
        );
    }

    fn on_history(
        &mut self,
        store: &mut dyn Store,
        id: String,
        result: Result<Option<Incoming>, ApiError>,
    ) {
        match result {
            Ok(Some(record)) if unstorable(&record.payload).is_some() => {
                let why = unstorable(&record.payload).unwrap_or_default();
                self.reject(store, "history", &id, Kind::Employments, why);
            }
            Ok(Some(record)) => {
                let problems = crate::shape::check_employments(&record.payload);
                if !problems.is_empty() {
                    self.pending
                        .odd_history
                        .push(json!({"employee_id": record.employee_id, "problems": problems}));
                }
                match store.changed(Kind::Employments, vec![record]) {
                    Ok(changed) if changed.is_empty() => {}
                    Ok(changed) => {
                        self.pending.history.extend(changed);
                        self.pending.since.get_or_insert_with(Instant::now);
                        return; // done once applied
                    }
                    Err(e) => {
                        self.history_failed += 1;
                        self.error(
                            store,
                            "history",
                            format!("employment history of {id} could not be compared with the stored versions: {e}"),
                            json!({"employee_id": id}),
                        );
                    }
                }
            }
            Ok(None) => self.no_history += 1,
            Err(e) if e.is_fatal() => {
                store.log(
                    Level::Error,
                    "history",
                    &text::sentence(&e.to_string()),
                    with_employee(e.details(), &id),
                );
                self.fatal = Some(e.to_string());
                return;
            }
            Err(ApiError::Restricted { .. }) => {
                if self.restricted == 0 {
                    store.log(Level::Warning, "history", "the /employments endpoint is restricted (HTTP 403) for this API key; employment history is not synced for these employees", json!({"employee_id": id}));
                }
                self.restricted += 1;
            }
            Err(ApiError::Stopped) => return,
            Err(e) => {
                self.history_failed += 1;
                self.error(
                    store,
                    "history",
                    format!("employment history of {id} failed: {e}"),
                    with_employee(e.details(), &id),
                );
            }
        }
        self.progress.employees_done += 1;
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
                        json!({"records": n, "pages": pending.pages}),
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
                        json!({"employees": n}),
                    );
                }
            }
        }
    }

    fn count_applied(&mut self, store: &mut dyn Store, step: &str, kind: Kind, applied: Applied) {
        self.progress.versions_written += applied.stats.versions_written;
        self.progress.changes_detected += applied.stats.changes_detected;
        for (id, why) in applied.rejected {
            let why = format!("the database refused it: {why}");
            self.reject(store, step, &id, kind, why);
        }
    }

    /// Records as deleted the employees missing from the complete list whom the API confirms
    /// gone (404); the ones it still has are logged and counted as a moved list.
    fn delete_confirmed(&mut self, store: &mut dyn Store) {
        let missing = match store.missing(&self.seen) {
            Ok(m) if m.is_empty() => return,
            Ok(m) => m,
            Err(e) => {
                let message = format!("the employees missing from the list could not be read: {e}");
                return self.error(store, "changes", message, json!({}));
            }
        };
        let asked = missing.len();
        let answer = deletions::confirm(self.client, missing, self.concurrency);
        self.sync_counters();
        if let Some(e) = answer.fatal {
            store.log(Level::Error, "changes", &e.to_string(), json!({}));
            self.fatal = Some(e.to_string());
            return;
        }
        if !answer.present.is_empty() {
            self.progress.list_moved = answer.present.len() as u64;
            store.log(
                Level::Warning,
                "changes",
                &format!(
                    "the employee list moved while it was read: {} of the {asked} employees missing from it are still in Employes; they are not marked deleted, and the next sync reads them again",
                    answer.present.len()
                ),
                json!({"employee_ids": answer.present, "missing": asked}),
            );
        }
        for (id, e) in &answer.unconfirmed {
            if !matches!(e, ApiError::Stopped) {
                let message = format!(
                    "employee {id} is missing from the list, but whether it was deleted could not be confirmed ({e}); it is not marked deleted"
                );
                self.error(store, "changes", message, json!({"employee_id": id}));
            }
        }
        if answer.gone.is_empty() {
            return;
        }
        match store.mark_deleted(answer.gone, &self.progress) {
            Ok(stats) => {
                self.progress.deleted = stats.versions_written;
                self.progress.changes_detected += stats.changes_detected;
            }
            Err(e) => self.error(
                store,
                "changes",
                format!("deletions could not be applied: {e}"),
                json!({}),
            ),
        }
    }

    fn finish(mut self, store: &mut dyn Store) -> Outcome {
        let odd = std::mem::take(&mut self.pending.odd_history);
        if !odd.is_empty() {
            warn_types(store, "history", "employment histories", odd);
        }
        self.sync_counters();
        let pages_total = self.progress.pages_total.unwrap_or(0);
        let all_pages = pages_total > 0
            && (1..=pages_total)
                .all(|p| u32::try_from(p).is_ok_and(|p| self.pages_ok.contains(&p)));
        let count_matches = Some(self.seen.len() as u64) == self.progress.employees_total;
        let empty_company = pages_total == 0
            && self.progress.employees_total == Some(0)
            && self.pages_ok.contains(&1);
        let complete = self.fatal.is_none()
            && self.stopped.is_none()
            && self.snapshot_doubts.is_empty()
            && ((all_pages && count_matches) || empty_company);
        let mut reasons = self.snapshot_doubts.clone();
        if !all_pages && !empty_company {
            reasons.push(format!(
                "{} of {} list pages fetched",
                self.pages_ok.len(),
                pages_total
            ));
        }
        if !count_matches && !empty_company {
            reasons.push(match self.progress.employees_total {
                Some(total) => format!(
                    "{} employees listed, but the API's total is {total}",
                    self.seen.len()
                ),
                None => format!(
                    "{} employees listed, and the API gave no total",
                    self.seen.len()
                ),
            });
        }

        if complete && self.seen.is_empty() {
            store.log(
                Level::Warning,
                "changes",
                "the API listed no employees; nobody is marked deleted from an empty list",
                json!({}),
            );
        } else if complete {
            self.delete_confirmed(store);
        } else if self.fatal.is_none() && self.stopped.is_none() {
            store.log(
                Level::Warning,
                "changes",
                "the snapshot is incomplete: no employee is marked deleted in this session",
                json!({"reasons": reasons}),
            );
        }
        if self.no_history > 0 {
            store.log(
                Level::Info,
                "history",
                &format!(
                    "{} employees have no employment history (404)",
                    self.no_history
                ),
                json!({"employees": self.no_history}),
            );
        }
        if self.restricted > 0 {
            store.log(
                Level::Warning,
                "history",
                &format!(
                    "employment history restricted (403) for {} employees",
                    self.restricted
                ),
                json!({"employees": self.restricted}),
            );
        }
        let _ = store.progress(&self.progress);

        let (status, error) = if let Some(reason) = self.stopped.clone() {
            match reason {
                StopReason::Cancelled => (
                    FinalStatus::Cancelled,
                    Some("cancelled on request".to_string()),
                ),
                StopReason::Terminated(why) => (FinalStatus::Error, Some(why)),
            }
        } else if let Some(f) = self.fatal.clone() {
            (FinalStatus::Error, Some(f))
        } else if self.progress.errors > 0 || !complete || self.progress.list_moved > 0 {
            let msg = self.first_error.clone().unwrap_or_else(|| {
                if self.progress.list_moved > 0 {
                    return format!(
                        "the employee list moved while it was read: {} employees missing from it are still in Employes, so they were not marked deleted; the next sync reads them again",
                        self.progress.list_moved
                    );
                }
                let mut d = self.snapshot_doubts.clone();
                d.truncate(3);
                if d.is_empty() {
                    d = reasons.clone();
                }
                format!(
                    "incomplete snapshot, so no employee was marked deleted: {}",
                    d.join("; ")
                )
            });
            (FinalStatus::Partial, Some(msg))
        } else {
            (FinalStatus::Completed, None)
        };
        Outcome {
            status,
            error: error.map(|e| text::sentence(&e)),
            snapshot_complete: complete,
            progress: self.progress,
        }
    }
}
