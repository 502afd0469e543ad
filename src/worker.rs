//! The background worker that runs one sync session, shaped like pg_cron's: HTTP on helper
//! threads outside any transaction, one short transaction per page or history batch on the main
//! thread, SIGTERM and cancellation checked between units of work, every failure recorded on the
//! session row and in the log table rather than lost in a panic.

use std::cell::RefCell;
use std::collections::HashMap;
use std::time::{Duration, Instant};

use pgrx::bgworkers::{
    BackgroundWorker, BackgroundWorkerBuilder, BgWorkerStartTime, SignalWakeFlags,
};
use pgrx::datum::DatumWithOid;
use pgrx::pg_sys::{self, PgOid};
use pgrx::prelude::*;
use pgrx::spi::{OwnedPreparedStatement, SpiClient, SpiTupleTable};
use serde_json::{json, Value};

use employes_sync_core::classify::{ChangeType, Kind};
use employes_sync_core::client::Client;
use employes_sync_core::sync::{
    run_sync, Applied, ApplyStats, FinalStatus, Level, Outcome, Progress, SeenIds, StopReason,
    Store, SyncOptions,
};
use employes_sync_core::timeline;
use employes_sync_core::versions::{self, Existing, Incoming};

use crate::guc;

pub const WORKER_TYPE: &str = "employes_sync worker";

/// Starts the worker for a session; the pid once the postmaster started it, `None` when no
/// background worker slot is free.
pub fn launch(session_id: &str, requested_xid: &str) -> Option<i32> {
    let db = unsafe { pg_sys::MyDatabaseId };
    let extra = format!("{} {} {}", u32::from(db), session_id, requested_xid);
    let handle = BackgroundWorkerBuilder::new(&format!("{WORKER_TYPE} {session_id}"))
        .set_type(WORKER_TYPE)
        .set_library("employes_sync")
        .set_function("employes_sync_worker_main")
        .enable_spi_access()
        .set_extra(&extra)
        .set_restart_time(None)
        .set_notify_pid(unsafe { pg_sys::MyProcPid })
        .load_dynamic()
        .ok()?;
    handle.wait_for_startup().ok()
}

/// Registers the watchdog: a long-lived worker (restarted after a crash, like pg_cron's
/// launcher) that marks sessions whose worker is gone as `error`, at server start and every
/// few seconds after, so no session stays `running` after a restart or a `kill -9`.
pub fn register_watchdog() {
    BackgroundWorkerBuilder::new("employes_sync watchdog")
        .set_type("employes_sync watchdog")
        .set_library("employes_sync")
        .set_function("employes_sync_watchdog_main")
        .enable_spi_access()
        .set_start_time(BgWorkerStartTime::RecoveryFinished)
        .set_restart_time(Some(Duration::from_secs(10)))
        .load();
}

#[pg_guard]
#[no_mangle]
pub extern "C-unwind" fn employes_sync_watchdog_main(_arg: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    let db = guc::database_name();
    BackgroundWorker::connect_worker_to_spi(Some(&db), None);
    loop {
        let reaped = in_tx(|| {
            let installed = Spi::get_one::<String>(
                // A scalar subquery: one row, NULL when the extension is not installed.
                "SELECT (SELECT quote_ident(n.nspname) FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
                          WHERE e.extname = 'employes_sync')",
            )
            .map_err(spi_err)?;
            match installed {
                Some(schema) => {
                    Spi::get_one::<i32>(&format!("SELECT {schema}.employes_sync_reap_stale()"))
                        .map_err(spi_err)
                }
                None => Ok(None),
            }
        });
        match reaped {
            Ok(Some(n)) if n > 0 => {
                pgrx::log!("employes_sync watchdog: marked {n} abandoned session(s) as error")
            }
            Ok(_) => {}
            Err(e) => pgrx::log!("employes_sync watchdog: {e}"),
        }
        if !BackgroundWorker::wait_latch(Some(Duration::from_secs(5))) {
            return;
        }
    }
}

#[pg_guard]
#[no_mangle]
pub extern "C-unwind" fn employes_sync_worker_main(_arg: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    let extra = BackgroundWorker::get_extra().to_owned();
    let mut parts = extra.split_whitespace();
    let (Some(db), Some(session), Some(xid)) = (parts.next(), parts.next(), parts.next()) else {
        pgrx::log!("employes_sync worker: malformed start arguments");
        return;
    };
    let Ok(db) = db.parse::<u32>() else { return };
    BackgroundWorker::connect_worker_to_spi_by_oid(Some(pg_sys::Oid::from(db)), None);
    run(session.to_owned(), xid.to_owned());
}

/// Runs `f` in its own transaction; a Postgres error inside is caught, the transaction aborted,
/// and the message returned.
fn in_tx<R>(
    f: impl FnOnce() -> Result<R, String> + std::panic::UnwindSafe + std::panic::RefUnwindSafe,
) -> Result<R, String> {
    unsafe {
        pg_sys::SetCurrentStatementStartTimestamp();
        pg_sys::StartTransactionCommand();
        pg_sys::PushActiveSnapshot(pg_sys::GetTransactionSnapshot());
    }
    let result = PgTryBuilder::new(f)
        .catch_others(|e| Err(caught_message(e)))
        .execute();
    unsafe {
        match &result {
            Ok(_) => {
                pg_sys::PopActiveSnapshot();
                pg_sys::CommitTransactionCommand();
            }
            Err(_) => pg_sys::AbortCurrentTransaction(),
        }
    }
    result
}

/// The message (and detail) of an error caught in a transaction.
fn caught_message(e: pg_sys::panic::CaughtError) -> String {
    match e {
        pg_sys::panic::CaughtError::PostgresError(r)
        | pg_sys::panic::CaughtError::ErrorReport(r) => match r.detail() {
            Some(d) => format!("{} ({d})", r.message()),
            None => r.message().to_owned(),
        },
        pg_sys::panic::CaughtError::RustPanic { ereport, .. } => ereport.message().to_owned(),
    }
}

fn spi_err(e: pgrx::spi::SpiError) -> String {
    e.to_string()
}

thread_local! {
    /// The plans of the statements a sync runs many times, prepared on first use and kept for
    /// the worker's life (SPI_keepplan: valid across its transactions, replanned by PostgreSQL
    /// if a table they use changes).
    static PLANS: RefCell<HashMap<&'static str, &'static OwnedPreparedStatement>> =
        RefCell::new(HashMap::new());
}

/// The kept plan of `sql`, prepared the first time with the types of `args`.
fn plan(
    client: &SpiClient<'_>,
    sql: &'static str,
    args: &[DatumWithOid<'_>],
) -> Result<&'static OwnedPreparedStatement, String> {
    if let Some(p) = PLANS.with(|m| m.borrow().get(sql).copied()) {
        return Ok(p);
    }
    let types: Vec<PgOid> = args.iter().map(|a| PgOid::from_untagged(a.oid())).collect();
    let kept = client.prepare_mut(sql, &types).map_err(spi_err)?.keep();
    // A handful of statements, each kept once for the worker's life.
    let kept: &'static OwnedPreparedStatement = Box::leak(Box::new(kept));
    PLANS.with(|m| m.borrow_mut().insert(sql, kept));
    Ok(kept)
}

/// Runs `sql` through its kept plan, in the caller's transaction; `f` reads the result.
fn exec<R>(
    sql: &'static str,
    args: &[DatumWithOid<'_>],
    f: impl FnOnce(SpiTupleTable<'_>) -> Result<R, String>,
) -> Result<R, String> {
    Spi::connect_mut(|client| {
        let kept = plan(client, sql, args)?;
        let table = client.update(kept, None, args).map_err(spi_err)?;
        f(table)
    })
}

/// The version of the SQL this library was built with: a worker refuses to run a session against
/// another one (between a package upgrade and `ALTER EXTENSION employes_sync UPDATE`).
const SQL_VERSION: &str = env!("CARGO_PKG_VERSION");

fn run(session: String, xid: String) {
    let installed = in_tx(|| {
        // Scalar subqueries: one row, NULLs when the extension is not installed.
        let (schema, version) = Spi::get_two::<String, String>(
            "SELECT (SELECT n.nspname::text FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
                      WHERE e.extname = 'employes_sync'),
                    (SELECT e.extversion::text FROM pg_extension e WHERE e.extname = 'employes_sync')",
        )
        .map_err(spi_err)?;
        let schema = schema.ok_or("extension employes_sync is not installed in this database")?;
        Spi::run_with_args(
            "SELECT set_config('search_path', quote_ident($1) || ', pg_catalog', false)",
            &[schema.into()],
        )
        .map_err(spi_err)?;
        // The worker runs short statements on bounded batches. Compiling them with JIT costs
        // more than running them (up to a second per statement when the planner has no
        // statistics yet, as during a fresh install's first sync), so it is off for this session.
        Spi::run("SET jit = off").map_err(spi_err)?;
        Ok(version.unwrap_or_default())
    });
    let version = match installed {
        Ok(v) => v,
        Err(e) => {
            pgrx::log!("employes_sync worker: {e}");
            return;
        }
    };
    if !wait_for_creator(&session, &xid) {
        return;
    }
    if version != SQL_VERSION {
        refuse_version_mismatch(&session, &version);
        return;
    }
    let started = in_tx(|| {
        Spi::get_one_with_args::<bool>(
            "UPDATE employes_sync_sessions SET status = 'running', started_at = clock_timestamp(), worker_pid = pg_backend_pid(),
                    worker_instance = employes_sync_instance(), heartbeat_at = clock_timestamp()
              WHERE id = $1::uuid AND status = 'queued' RETURNING cancel_requested_at IS NOT NULL",
            &[session.clone().into()],
        )
        .map_err(spi_err)
    });
    let cancelled_early = match started {
        Ok(Some(c)) => c,
        Ok(None) => return, // reaped or already handled
        Err(e) => {
            pgrx::log!("employes_sync worker: cannot start session {session}: {e}");
            return;
        }
    };
    let mut store = SpiStore::new(session.clone());
    let begun = Instant::now();
    let outcome = if cancelled_early {
        Outcome {
            status: FinalStatus::Cancelled,
            error: Some("cancelled before it started".into()),
            snapshot_complete: false,
            progress: Progress::default(),
        }
    } else {
        let cfg = guc::client_config();
        let opts = SyncOptions {
            concurrency: guc::CONCURRENCY.get().max(1) as usize,
            ..SyncOptions::default()
        };
        store.log(
            Level::Info,
            "start",
            "sync started",
            json!({"base_url": cfg.base_url, "company_id": cfg.company_id, "requests_per_second": cfg.requests_per_second,
                   "per_page": cfg.per_page, "concurrency": opts.concurrency, "max_retries": cfg.max_retries}),
        );
        match Client::new(cfg) {
            Ok(client) => run_sync(&client, &mut store, opts),
            Err(e) => {
                store.log(Level::Error, "start", &e.to_string(), json!({}));
                Outcome {
                    status: FinalStatus::Error,
                    error: Some(e.to_string()),
                    snapshot_complete: false,
                    progress: Progress::default(),
                }
            }
        }
    };
    let p = &outcome.progress;
    if p.versions_written > 0 || p.deleted > 0 {
        store.log(
            Level::Info,
            "timeline",
            "timeline maintained for the employees this sync changed",
            json!({"ms": TIMELINE_MS.load(std::sync::atomic::Ordering::Relaxed)}),
        );
    }
    let retention = guc::LOG_RETENTION_DAYS.get();
    if retention > 0 {
        let _ = in_tx(|| {
            Spi::run_with_args(
                "DELETE FROM employes_sync_logs l WHERE l.logged_at < now() - make_interval(days => $1)
                   AND NOT EXISTS (SELECT 1 FROM employes_sync_sessions s WHERE s.id = l.session_id AND s.status IN ('queued', 'running'))",
                &[retention.into()],
            )
            .map_err(spi_err)
        });
    }
    store.log(
        if outcome.status == FinalStatus::Completed { Level::Info } else { Level::Warning },
        "finish",
        &format!("sync {} in {:.1} s", outcome.status.as_str(), begun.elapsed().as_secs_f64()),
        json!({"status": outcome.status.as_str(), "seconds": begun.elapsed().as_secs_f64(), "snapshot_complete": outcome.snapshot_complete,
               "api_requests": p.api_requests, "retries": p.retries, "versions_written": p.versions_written,
               "changes_detected": p.changes_detected, "employees_deleted": p.deleted, "list_moved": p.list_moved,
               "records_rejected": p.rejected, "errors": p.errors}),
    );
    let finished = in_tx(|| {
        let mut args = progress_args(&session, p);
        args.push(outcome.status.as_str().into());
        args.push(outcome.error.clone().into());
        args.push(outcome.snapshot_complete.into());
        Spi::run_with_args(
            &format!(
                "UPDATE employes_sync_sessions SET {PROGRESS_SET}, status = $14, error = $15, snapshot_complete = $16,
                        completed_at = clock_timestamp() WHERE id = $1::uuid"
            ),
            &args,
        )
        .map_err(spi_err)
    });
    if let Err(e) = finished {
        pgrx::log!("employes_sync worker: could not close session {session}: {e}");
    }
}

/// Ends a session whose database still has the SQL of another version, with statements that
/// every version's schema understands.
fn refuse_version_mismatch(session: &str, version: &str) {
    let error = format!(
        "the extension's SQL in this database is version {version}, but the server runs the library of version {SQL_VERSION}: run ALTER EXTENSION employes_sync UPDATE, then sync again"
    );
    let ended = in_tx(|| {
        Spi::run_with_args(
            "WITH s AS (UPDATE employes_sync_sessions SET status = 'error', errors = errors + 1, error = $2,
                               completed_at = clock_timestamp()
                         WHERE id = $1::uuid AND status IN ('queued', 'running') RETURNING id)
             INSERT INTO employes_sync_logs (session_id, level, step, message) SELECT id, 'error', 'start', $2 FROM s",
            &[session.to_owned().into(), error.clone().into()],
        )
        .map_err(spi_err)
    });
    if let Err(e) = ended {
        pgrx::log!("employes_sync worker: {error}; could not end session {session}: {e}");
    }
}

/// The trigger may still be inside its transaction; the session row appears when it commits.
fn wait_for_creator(session: &str, xid: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(24 * 3600);
    let mut committed_at: Option<Instant> = None;
    loop {
        let state = in_tx(|| {
            // The creator's state first, then the row (each query its own snapshot): read the
            // other way round, a commit between the two looked like a session that never was.
            let status: Option<String> =
                Spi::get_one_with_args("SELECT pg_xact_status($1::xid8)", &[xid.to_owned().into()])
                    .map_err(spi_err)?;
            let visible = Spi::get_one_with_args::<bool>(
                "SELECT EXISTS (SELECT 1 FROM employes_sync_sessions WHERE id = $1::uuid)",
                &[session.to_owned().into()],
            )
            .map_err(spi_err)?
            .unwrap_or(false);
            Ok((visible, status))
        });
        match state {
            Ok((true, _)) => return true,
            Ok((false, Some(s))) if s == "in progress" => {}
            // A commit is in the commit log a moment before every new snapshot sees it: wait a
            // little for the row before concluding it is gone.
            Ok((false, Some(s))) if s == "committed" => {
                if committed_at.get_or_insert_with(Instant::now).elapsed() > Duration::from_secs(5)
                {
                    return false;
                }
            }
            Ok(_) | Err(_) => return false, // rolled back: nothing to do
        }
        if Instant::now() > deadline
            || !BackgroundWorker::wait_latch(Some(Duration::from_millis(20)))
        {
            return false;
        }
    }
}

/// The progress columns a worker keeps current ($1 = the session).
macro_rules! progress_set {
    () => {
        "pages_total = $2, pages_done = $3, employees_total = $4, employees_done = $5, api_requests = $6,
    retries = $7, versions_written = $8, changes_detected = $9, errors = $10, employees_deleted = $11, list_moved = $12,
    records_rejected = $13, heartbeat_at = clock_timestamp()"
    };
}
const PROGRESS_SET: &str = progress_set!();
const PROGRESS: &str = concat!(
    "UPDATE employes_sync_sessions SET ",
    progress_set!(),
    " WHERE id = $1::uuid"
);

fn clamp(v: u64) -> i32 {
    i32::try_from(v).unwrap_or(i32::MAX)
}

fn progress_args<'a>(session: &str, p: &Progress) -> Vec<DatumWithOid<'a>> {
    vec![
        session.to_owned().into(),
        p.pages_total.map(clamp).into(),
        clamp(p.pages_done).into(),
        p.employees_total.map(clamp).into(),
        clamp(p.employees_done).into(),
        clamp(p.api_requests).into(),
        clamp(p.retries).into(),
        clamp(p.versions_written).into(),
        clamp(p.changes_detected).into(),
        clamp(p.errors).into(),
        clamp(p.deleted).into(),
        clamp(p.list_moved).into(),
        clamp(p.rejected).into(),
    ]
}

fn write_progress(session: &str, p: &Progress) -> Result<(), String> {
    exec(PROGRESS, &progress_args(session, p), |_| Ok(()))
}

struct SpiStore {
    session: String,
    sigterm: bool,
    current: Option<CurrentHashes>,
    /// How the last batch's references were checked (logged when it changes).
    references: Option<References>,
}

impl SpiStore {
    fn new(session: String) -> SpiStore {
        SpiStore {
            session,
            sigterm: false,
            current: None,
            references: None,
        }
    }
}

/// The hashes of the current versions, in the order of `employes_raw_data_current`, which holds
/// all three columns: an index-only scan, not a read of every payload.
pub(crate) const HASH_LOAD: &str = "SELECT kind, employee_id, content_hash FROM employes_raw_data WHERE valid_to IS NULL ORDER BY kind, employee_id";

/// Rows per fetch when the worker streams a large result.
const CURSOR_CHUNK: i64 = 10_000;

/// The content hash of every current version, loaded once per sync so that comparing a fetched
/// record costs no SQL (a re-sync of an unchanged company only reads). Compact, so the worker's
/// memory stays small as the company grows: per employee, the 64-bit key of its id (the driver's
/// `SeenIds::key`, so the list of this sync can be checked against it directly) and the first
/// 128 bits of the SHA-256 of each kind, about 24 bytes per record. A record is taken as
/// unchanged only if its key finds the same 128 bits; a wrong answer would need a 64-bit key
/// collision between two employees whose contents also share a 128-bit hash prefix.
struct CurrentHashes(HashMap<u64, [Option<[u8; 16]>; 2]>);

impl CurrentHashes {
    fn slot(kind: Kind) -> usize {
        match kind {
            Kind::Employee => 0,
            Kind::Employments => 1,
        }
    }

    fn prefix(hex: &str) -> Option<[u8; 16]> {
        let mut out = [0u8; 16];
        if hex.len() != 64 {
            return None;
        }
        for (i, b) in out.iter_mut().enumerate() {
            *b = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Some(out)
    }

    fn is_current(&self, kind: Kind, employee_id: &str, hash: &str) -> bool {
        let stored = self
            .0
            .get(&SeenIds::key(employee_id))
            .and_then(|slots| slots[Self::slot(kind)]);
        stored.is_some_and(|h| Self::prefix(hash) == Some(h))
    }

    /// A version written by this sync is now the current one.
    fn set(&mut self, kind: Kind, employee_id: &str, hash: &str) {
        self.0.entry(SeenIds::key(employee_id)).or_default()[Self::slot(kind)] = Self::prefix(hash);
    }

    /// Whether some employee with a current record is missing from this sync's list (every
    /// record written by the sync is of a listed employee, so only the ones loaded can be).
    fn any_unlisted(&self, seen: &SeenIds) -> bool {
        self.0
            .iter()
            .any(|(key, slots)| slots.iter().any(Option::is_some) && !seen.contains_key(*key))
    }

    /// Reads the current versions' hashes (streamed: see `for_each_row`).
    fn load() -> Result<CurrentHashes, String> {
        let mut out = in_tx(|| {
            let mut out = CurrentHashes(HashMap::new());
            for_each_row(HASH_LOAD, |row| {
                let kind: String = row.get(1).map_err(spi_err)?.unwrap_or_default();
                let id: String = row.get(2).map_err(spi_err)?.unwrap_or_default();
                let hash: String = row.get(3).map_err(spi_err)?.unwrap_or_default();
                if let Ok(kind) = kind.parse::<Kind>() {
                    out.set(kind, &id, &hash);
                }
                Ok(())
            })?;
            Ok(out)
        })?;
        out.0.shrink_to_fit();
        Ok(out)
    }
}

/// Runs `query` through a cursor, CURSOR_CHUNK rows per fetch, freeing each chunk before the
/// next: a large result is never held whole by the worker. In the caller's transaction.
fn for_each_row(
    query: &str,
    mut f: impl FnMut(pgrx::spi::SpiHeapTupleData<'_>) -> Result<(), String>,
) -> Result<(), String> {
    Spi::connect(|client| {
        let mut cursor = client.open_cursor(query, &[]);
        loop {
            let mut n = 0;
            for row in cursor.fetch(CURSOR_CHUNK).map_err(spi_err)? {
                n += 1;
                f(row)?;
            }
            // SAFETY: the chunk just read is no longer referenced; SPI would otherwise keep
            // every chunk until the connection ends.
            unsafe { pg_sys::SPI_freetuptable(pg_sys::SPI_tuptable) };
            if n < CURSOR_CHUNK {
                return Ok(());
            }
        }
    })
}

const LOOKUP: &str = "
SELECT i.employee_id, r.id, r.version, r.content_hash, r.valid_to IS NULL,
       CASE WHEN r.content_hash <> i.hash OR r.valid_to IS NOT NULL THEN r.payload::text END
  FROM unnest($2::text[], $3::text[]) AS i (employee_id, hash)
  JOIN LATERAL (SELECT d.id, d.version, d.content_hash, d.valid_to, d.payload
                  FROM employes_raw_data d
                 WHERE d.kind = $1 AND d.employee_id = i.employee_id
                 ORDER BY d.version DESC LIMIT 1) r ON true";

const CLOSE: &str = "
UPDATE employes_raw_data SET valid_to = now(), closed_session_id = $2::uuid
 WHERE id = ANY ($1::bigint[]) AND valid_to IS NULL
RETURNING id";

const WRITE: &str = "
WITH v AS (
    SELECT * FROM unnest($3::text[], $4::text[], $5::text[], $6::integer[]) WITH ORDINALITY
                  AS x (employee_id, payload, content_hash, version, ord)
), ins AS (
    INSERT INTO employes_raw_data (kind, employee_id, payload, content_hash, version, valid_from, first_session_id)
    SELECT $1, employee_id, payload::jsonb, content_hash, version, now(), $2::uuid FROM v ORDER BY ord
    RETURNING id, employee_id
), c AS (
    SELECT * FROM unnest($7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::text[], $13::bigint[])
                  AS y (employee_id, change_type, field_path, old_value, new_value, effective_date, raw_from_id)
), chg AS (
    INSERT INTO employes_changes (session_id, employee_id, kind, change_type, field_path, old_value, new_value,
                                  effective_date, detected_at, raw_from_id, raw_to_id)
    SELECT $2::uuid, c.employee_id, $1, c.change_type, c.field_path, c.old_value::jsonb, c.new_value::jsonb,
           c.effective_date::date, now(), c.raw_from_id, ins.id
      FROM c JOIN ins ON ins.employee_id = c.employee_id
    RETURNING 1
), src AS (
    -- What the foreign-key triggers would check for each change, in one pass: the versions the
    -- changes start from exist (src) and so does the session (ses), each locked so that it
    -- cannot be deleted before this transaction ends: KEY SHARE here (lck, ses), except the
    -- versions this transaction closed, which the close's own update has locked ($14 leaves
    -- them out).
    SELECT r.id FROM employes_raw_data r WHERE r.id IN (SELECT c.raw_from_id FROM c)
), lck AS (
    SELECT r.id FROM employes_raw_data r WHERE r.id = ANY ($14::bigint[]) FOR KEY SHARE OF r
), ses AS (
    SELECT s.id FROM employes_sync_sessions s WHERE s.id = $2::uuid FOR KEY SHARE OF s
)
SELECT (SELECT count(*) FROM ins)::bigint, (SELECT count(*) FROM chg)::bigint,
       (SELECT count(DISTINCT c.raw_from_id) FROM c)::bigint, (SELECT count(*) FROM src)::bigint,
       (SELECT count(*) FROM lck)::bigint, (SELECT count(*) FROM ses)::bigint";

/// Whether this transaction's CLOSE and WRITE may run without the per-row foreign-key triggers
/// (`session_replication_role = replica`, as a logical replication apply worker runs): WRITE
/// checks every reference of what it and CLOSE write, set-wise, taking the locks those triggers
/// would take, so the only thing replica mode may skip is what nobody else has put there: a
/// trigger or rule of the user's on the two history tables that fires in origin or replica mode
/// only, or a foreign key that is not ours. The tables are locked first, in the mode the writes
/// take anyway (ROW EXCLUSIVE), so none can be added before this transaction ends.
const LOCK_HISTORY: &str = "LOCK TABLE employes_raw_data, employes_changes IN ROW EXCLUSIVE MODE";
const SET_WISE_REFERENCES: &str = "
SELECT has_parameter_privilege('session_replication_role', 'SET')
   AND NOT EXISTS (SELECT 1 FROM pg_trigger
                    WHERE tgrelid IN ('employes_raw_data'::regclass, 'employes_changes'::regclass)
                      AND NOT tgisinternal AND tgenabled IN ('O', 'R'))
   AND NOT EXISTS (SELECT 1 FROM pg_rewrite
                    WHERE ev_class IN ('employes_raw_data'::regclass, 'employes_changes'::regclass)
                      AND ev_enabled IN ('O', 'R'))
   AND NOT EXISTS (SELECT 1 FROM pg_constraint
                    WHERE contype = 'f' AND conrelid IN ('employes_raw_data'::regclass, 'employes_changes'::regclass)
                      AND conname <> ALL (ARRAY['employes_raw_data_first_session_id_fkey', 'employes_raw_data_closed_session_id_fkey',
                                                'employes_changes_session_id_fkey', 'employes_changes_raw_from_id_fkey',
                                                'employes_changes_raw_to_id_fkey']))";

/// How the references of a batch's writes were checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum References {
    /// By the write statement, in one pass (the foreign-key triggers skipped).
    SetWise,
    /// By the foreign-key triggers, row by row (and by the write statement too).
    PerRow,
}

impl References {
    /// Locks the history tables and decides, for this transaction.
    pub(crate) fn decide() -> Result<References, String> {
        exec(LOCK_HISTORY, &[], |_| Ok(()))?;
        let set_wise = exec(SET_WISE_REFERENCES, &[], |t| {
            t.first().get_one::<bool>().map_err(spi_err)
        })?;
        Ok(if set_wise == Some(true) {
            References::SetWise
        } else {
            References::PerRow
        })
    }

    /// Turns the per-row triggers off (SetWise) for the statements that follow, or gives
    /// `session_replication_role` back its configured value (a database or role may set it to
    /// `replica`, and the statements after the write must run as configured).
    fn triggers(self, on: bool) -> Result<(), String> {
        if self == References::SetWise {
            let sql = if on {
                "SET LOCAL session_replication_role TO DEFAULT"
            } else {
                "SET LOCAL session_replication_role = replica"
            };
            exec(sql, &[], |_| Ok(()))?;
        }
        Ok(())
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            References::SetWise => "set-wise",
            References::PerRow => "per-row",
        }
    }
}

/// Writes new versions and their changes in one statement and checks what it wrote: every
/// version and change written (none dropped by the join), every version a change starts from
/// still there, the session still there. Any failure is an error: the caller's transaction is
/// then rolled back whole.
pub(crate) fn write_versions(
    kind: Kind,
    session: &str,
    plan: &[versions::NewVersion],
) -> Result<ApplyStats, String> {
    // Column arrays, one element per row: each payload is parsed once, by its own cast.
    let n_versions = plan.len() as i64;
    let mut c_ids = Vec::new();
    let (mut c_types, mut c_paths, mut c_old, mut c_new, mut c_dates, mut c_from) = (
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
    );
    // A JSON null and an absent value are both stored as SQL NULL.
    let json = |v: &Option<Value>| v.as_ref().filter(|v| !v.is_null()).map(Value::to_string);
    for v in plan {
        for c in &v.changes {
            c_ids.push(v.employee_id.clone());
            c_types.push(c.change_type.as_str().to_owned());
            c_paths.push(c.field_path.clone());
            c_old.push(json(&c.old_value));
            c_new.push(json(&c.new_value));
            c_dates.push(c.effective_date.map(|d| d.to_string()));
            c_from.push(v.from_raw_id);
        }
    }
    let n_changes = c_ids.len() as i64;
    // The versions changes start from that this transaction has not closed (a deleted one, which
    // a restore starts from): the write locks them itself.
    let mut to_lock: Vec<i64> = plan
        .iter()
        .filter(|v| !v.changes.is_empty() && v.from_raw_id != v.close_raw_id)
        .filter_map(|v| v.from_raw_id)
        .collect();
    to_lock.sort_unstable();
    to_lock.dedup();
    let n_to_lock = to_lock.len() as i64;
    let args: [DatumWithOid; 14] = [
        kind.as_str().into(),
        session.to_owned().into(),
        plan.iter()
            .map(|v| v.employee_id.clone())
            .collect::<Vec<_>>()
            .into(),
        plan.iter()
            .map(|v| v.payload.to_string())
            .collect::<Vec<_>>()
            .into(),
        plan.iter()
            .map(|v| v.content_hash.clone())
            .collect::<Vec<_>>()
            .into(),
        plan.iter().map(|v| v.version).collect::<Vec<_>>().into(),
        c_ids.into(),
        c_types.into(),
        c_paths.into(),
        c_old.into(),
        c_new.into(),
        c_dates.into(),
        c_from.into(),
        to_lock.into(),
    ];
    let counts = exec(WRITE, &args, |t| {
        let row = t.first();
        let mut out = [0i64; 6];
        for (i, v) in out.iter_mut().enumerate() {
            *v = row.get::<i64>(i + 1).map_err(spi_err)?.unwrap_or(0);
        }
        Ok(out)
    })?;
    let [versions, written, sources, found, locked, sessions] = counts;
    if sessions != 1 {
        return Err(format!(
            "session {session} no longer exists: nothing written"
        ));
    }
    if found != sources || locked != n_to_lock {
        return Err(format!(
            "{} of the {sources} versions the {kind} changes start from no longer exist: modified concurrently, nothing written",
            (sources - found).max(n_to_lock - locked),
            kind = kind.as_str()
        ));
    }
    if versions != n_versions || written != n_changes {
        return Err(format!(
            "wrote {versions} of {n_versions} {kind} versions and {written} of {n_changes} changes: nothing written",
            kind = kind.as_str()
        ));
    }
    Ok(ApplyStats {
        versions_written: versions as u64,
        changes_detected: written as u64,
    })
}

/// Closes the current records of the employees who left (`$1`: missing from a complete list,
/// and confirmed gone by the API).
const DELETE_MISSING: &str = "
WITH gone AS (
    UPDATE employes_raw_data r SET valid_to = now(), closed_session_id = $2::uuid
     WHERE r.valid_to IS NULL AND r.employee_id = ANY ($1::text[])
    RETURNING r.id, r.kind, r.employee_id, r.payload
), chg AS (
    INSERT INTO employes_changes (session_id, employee_id, kind, change_type, field_path, old_value, detected_at, raw_from_id)
    SELECT $2::uuid, employee_id, kind, 'deleted', '$', payload, now(), id FROM gone
    RETURNING 1
)
SELECT (SELECT count(DISTINCT employee_id) FROM gone)::bigint, (SELECT count(*) FROM chg)::bigint";

/// Milliseconds this worker spent maintaining the timeline (main thread only).
static TIMELINE_MS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Recomputes the timeline of these employees, in the caller's transaction.
fn refresh_timeline(mut ids: Vec<String>) -> Result<(), String> {
    ids.sort_unstable();
    ids.dedup();
    if ids.is_empty() {
        return Ok(());
    }
    let t = Instant::now();
    exec(
        "SELECT employes_timeline_refresh($1::text[])",
        &[ids.into()],
        |_| Ok(()),
    )?;
    count_timeline(t);
    Ok(())
}

fn count_timeline(since: Instant) {
    TIMELINE_MS.fetch_add(
        since.elapsed().as_millis() as u64,
        std::sync::atomic::Ordering::Relaxed,
    );
}

/// The timeline events of each `/employments` payload of a batch, by employee: computed by the
/// rules `employes_sync_employment_events` applies to a stored version (`timeline::employment_events`
/// on the text PostgreSQL prints for the payload), before the batch's transaction starts, since
/// they depend on the payload alone. `None` for a payload PostgreSQL would print otherwise (a
/// number written with an exponent): its events are computed from the stored version instead.
pub(crate) type PayloadEvents = HashMap<String, Option<Vec<timeline::EmploymentEvent>>>;

pub(crate) fn payload_events(records: &[Incoming]) -> PayloadEvents {
    let t = Instant::now();
    let events = records
        .iter()
        .map(|r| {
            let events = timeline::jsonb_text(&r.payload)
                .and_then(|text| timeline::employment_events(&text).ok());
            (r.employee_id.clone(), events)
        })
        .collect();
    count_timeline(t);
    events
}

/// The `/employments` payload of each employee's latest stored version, as the batch's lookup
/// read it (the text PostgreSQL prints for it), for each employee that has one: `None` when the
/// lookup did not return it.
pub(crate) type StoredPayloads = HashMap<String, Option<String>>;

/// Writes the timeline of the employees whose `/employments` versions this transaction has just
/// written, in the caller's transaction, without reading the timeline: the stored rows are the
/// events of the version replaced (`stored`), so the events of the new payload (`events`,
/// computed before the transaction by `payload_events`) differ from them only by what
/// `timeline::event_delta` finds, and `employes_timeline_apply` writes just that. An employee
/// whose events cannot be computed on both sides is recomputed from the stored version, by
/// `employes_timeline_refresh`.
pub(crate) fn write_timeline(
    plan: &[versions::NewVersion],
    events: &PayloadEvents,
    stored: &StoredPayloads,
) -> Result<(), String> {
    let t = Instant::now();
    let mut plan: Vec<&versions::NewVersion> = plan.iter().collect();
    plan.sort_unstable_by(|a, b| a.employee_id.cmp(&b.employee_id));
    let mut refresh = Vec::new();
    let (mut g_employee, mut g_type, mut g_key) = (vec![], vec![], vec![]);
    let (mut e_employee, mut e_date, mut e_type, mut e_title) = (vec![], vec![], vec![], vec![]);
    let (mut e_details, mut e_key, mut e_old, mut e_new) = (vec![], vec![], vec![], vec![]);
    for v in plan {
        let new = events.get(&v.employee_id).cloned().flatten();
        let old = match stored.get(&v.employee_id) {
            // No earlier version: no employment events stored.
            None => Some(Vec::new()),
            Some(Some(text)) => timeline::employment_events(text).ok(),
            Some(None) => None,
        };
        let (Some(old), Some(new)) = (old, new) else {
            refresh.push(v.employee_id.clone());
            continue;
        };
        let delta = timeline::event_delta(old, new);
        for (event_type, event_key) in delta.gone {
            g_employee.push(v.employee_id.clone());
            g_type.push(event_type.to_owned());
            g_key.push(event_key);
        }
        for e in delta.upsert {
            e_employee.push(v.employee_id.clone());
            e_date.push(crate::api::pg_date(e.event_date));
            e_type.push(e.event_type.to_owned());
            e_title.push(e.title);
            e_details.push(e.details);
            e_key.push(e.event_key);
            e_old.push(e.old_wage);
            e_new.push(e.new_wage);
        }
    }
    if !g_employee.is_empty() || !e_employee.is_empty() {
        exec(
            "SELECT employes_timeline_apply($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            &[
                g_employee.into(),
                g_type.into(),
                g_key.into(),
                e_employee.into(),
                e_date.into(),
                e_type.into(),
                e_title.into(),
                e_details.into(),
                e_key.into(),
                e_old.into(),
                e_new.into(),
            ],
            |_| Ok(()),
        )?;
    }
    count_timeline(t);
    refresh_timeline(refresh)
}

/// What one batch's transaction wrote: its counts, the (employee, hash) pairs that are now
/// current, the records the database refused (employee, reason) and how references were checked.
pub(crate) struct BatchOutcome {
    stats: ApplyStats,
    written: Vec<(String, String)>,
    rejected: Vec<(String, String)>,
    references: Option<References>,
}

/// A batch gives up isolating its records once this many were refused alone: the database
/// refuses everything (a dropped table, a full disk), not a record.
const MAX_REJECTED: usize = 10;

/// Runs `f` in a subtransaction of the current transaction, as a PL/pgSQL block with an
/// EXCEPTION clause does: what it wrote stays when it succeeds and is rolled back, alone, when it
/// fails (a Postgres error or an `Err`).
fn in_subtx<R>(f: impl FnOnce() -> Result<R, String>) -> Result<R, String> {
    // SAFETY: the transaction is open (the caller runs in `in_tx`); the memory context and
    // resource owner of the caller are restored after the subtransaction ends, either way.
    let (context, owner) = unsafe { (pg_sys::CurrentMemoryContext, pg_sys::CurrentResourceOwner) };
    unsafe {
        pg_sys::BeginInternalSubTransaction(std::ptr::null());
        pg_sys::MemoryContextSwitchTo(context);
    }
    let result = PgTryBuilder::new(std::panic::AssertUnwindSafe(f))
        .catch_others(|e| Err(caught_message(e)))
        .execute();
    unsafe {
        match result {
            Ok(_) => pg_sys::ReleaseCurrentSubTransaction(),
            Err(_) => pg_sys::RollbackAndReleaseCurrentSubTransaction(),
        }
        pg_sys::MemoryContextSwitchTo(context);
        pg_sys::CurrentResourceOwner = owner;
    }
    result
}

/// The writes of a batch, shared by every part of it that is written on its own.
struct BatchWrite<'a> {
    session: &'a str,
    kind: Kind,
    references: References,
    events: &'a PayloadEvents,
    stored: &'a StoredPayloads,
}

impl BatchWrite<'_> {
    /// Closes the replaced versions, writes the new ones with their changes and the timeline.
    fn write(&self, plan: &[versions::NewVersion]) -> Result<ApplyStats, String> {
        self.references.triggers(false)?;
        let close: Vec<i64> = plan.iter().filter_map(|v| v.close_raw_id).collect();
        if !close.is_empty() {
            let expected = close.len();
            let closed = exec(
                CLOSE,
                &[close.into(), self.session.to_owned().into()],
                |t| Ok(t.len()),
            )?;
            if closed != expected {
                return Err(format!("expected to close {expected} current versions, closed {closed}: modified concurrently"));
            }
        }
        let stats = write_versions(self.kind, self.session, plan)?;
        self.references.triggers(true)?;
        // Timeline events come from the history (employments: the difference between the events
        // of the replaced payloads and of the ones just written) and, for the employee record,
        // only from status changes and restorations: recompute just the employees that can have
        // new ones.
        match self.kind {
            Kind::Employments => write_timeline(plan, self.events, self.stored)?,
            Kind::Employee => refresh_timeline(
                plan.iter()
                    .filter(|v| {
                        v.changes.iter().any(|c| {
                            matches!(
                                c.change_type,
                                ChangeType::StatusChange | ChangeType::Restored
                            )
                        })
                    })
                    .map(|v| v.employee_id.clone())
                    .collect(),
            )?,
        }
        Ok(stats)
    }

    /// Writes `plan` in a subtransaction; when that fails, writes each half on its own, down to
    /// single records, which are refused alone (`rejected`): one record the database cannot
    /// take does not hold up its neighbours.
    fn write_isolating(
        &self,
        plan: &[versions::NewVersion],
        rejected: &mut Vec<(String, String)>,
        first_error: &mut Option<String>,
    ) -> Result<ApplyStats, String> {
        let error = match in_subtx(|| self.write(plan)) {
            Ok(stats) => return Ok(stats),
            Err(e) => e,
        };
        let first = first_error.get_or_insert_with(|| error.clone()).clone();
        if plan.len() == 1 {
            rejected.push((plan[0].employee_id.clone(), error));
            if rejected.len() > MAX_REJECTED {
                return Err(first);
            }
            return Ok(ApplyStats::default());
        }
        let (a, b) = plan.split_at(plan.len() / 2);
        let one = self.write_isolating(a, rejected, first_error)?;
        let two = self.write_isolating(b, rejected, first_error)?;
        Ok(ApplyStats {
            versions_written: one.versions_written + two.versions_written,
            changes_detected: one.changes_detected + two.changes_detected,
        })
    }
}

/// Applies records whose content differs from the cached current version: looks up their
/// latest stored versions, plans, writes versions and changes (isolating the records the
/// database refuses), records progress.
fn apply_batch(
    session: &str,
    kind: Kind,
    records: Vec<Incoming>,
    events: PayloadEvents,
    progress: &Progress,
) -> Result<BatchOutcome, String> {
    let ids: Vec<String> = records.iter().map(|r| r.employee_id.clone()).collect();
    let hashes: Vec<String> = records.iter().map(|r| r.content_hash.clone()).collect();
    let mut existing: HashMap<String, Existing> = HashMap::new();
    let mut stored = StoredPayloads::new();
    let args: [DatumWithOid; 3] = [kind.as_str().into(), ids.into(), hashes.into()];
    exec(LOOKUP, &args, |rows| {
        for row in rows {
            let id: String = row.get(1).map_err(spi_err)?.unwrap_or_default();
            let text: Option<String> = row.get(6).map_err(spi_err)?;
            let payload = match &text {
                Some(text) => Some(
                    serde_json::from_str::<Value>(text)
                        .map_err(|e| format!("stored payload of {id} unreadable: {e}"))?,
                ),
                None => None,
            };
            if kind == Kind::Employments {
                stored.insert(id.clone(), text);
            }
            existing.insert(
                id,
                Existing {
                    raw_id: row.get(2).map_err(spi_err)?.unwrap_or_default(),
                    version: row.get(3).map_err(spi_err)?.unwrap_or_default(),
                    content_hash: row.get(4).map_err(spi_err)?.unwrap_or_default(),
                    is_current: row.get(5).map_err(spi_err)?.unwrap_or(false),
                    payload,
                },
            );
        }
        Ok(())
    })?;
    let plan = versions::plan(kind, records, &existing);
    let mut applied = BatchOutcome {
        stats: ApplyStats::default(),
        written: Vec::new(),
        rejected: Vec::new(),
        references: None,
    };
    if !plan.is_empty() {
        let references = References::decide()?;
        let batch = BatchWrite {
            session,
            kind,
            references,
            events: &events,
            stored: &stored,
        };
        applied.stats = batch.write_isolating(&plan, &mut applied.rejected, &mut None)?;
        applied.references = Some(references);
    }
    applied.written = plan
        .iter()
        .filter(|v| !applied.rejected.iter().any(|(id, _)| *id == v.employee_id))
        .map(|v| (v.employee_id.clone(), v.content_hash.clone()))
        .collect();
    let mut p = progress.clone();
    p.versions_written += applied.stats.versions_written;
    p.changes_detected += applied.stats.changes_detected;
    p.rejected += applied.rejected.len() as u64;
    write_progress(session, &p)?;
    Ok(applied)
}

impl Store for SpiStore {
    fn changed(&mut self, kind: Kind, records: Vec<Incoming>) -> Result<Vec<Incoming>, String> {
        if self.current.is_none() {
            self.current = Some(CurrentHashes::load()?);
        }
        let current = self.current.as_ref().expect("loaded above");
        Ok(records
            .into_iter()
            .filter(|r| !current.is_current(kind, &r.employee_id, &r.content_hash))
            .collect())
    }

    fn apply(
        &mut self,
        kind: Kind,
        records: Vec<Incoming>,
        progress: &Progress,
    ) -> Result<Applied, String> {
        let session = self.session.clone();
        let progress = progress.clone();
        // The timeline events of history payloads depend on the payloads alone: computed before
        // the transaction, which they would otherwise lengthen.
        let events = match kind {
            Kind::Employments => payload_events(&records),
            Kind::Employee => PayloadEvents::new(),
        };
        let batch = std::sync::Mutex::new(Some((records, events)));
        let outcome = in_tx(move || {
            let (records, events) = batch
                .lock()
                .map_err(|e| e.to_string())?
                .take()
                .unwrap_or_default();
            apply_batch(&session, kind, records, events, &progress)
        })?;
        if let Some(mode) = outcome.references.filter(|m| self.references != Some(*m)) {
            self.references = Some(mode);
            let message = match mode {
                References::SetWise => "references of new versions and changes are checked set-wise by the write statement",
                References::PerRow => "references of new versions and changes are checked row by row by the foreign-key triggers: a trigger, rule or foreign key of your own is on employes_raw_data or employes_changes",
            };
            self.log(
                Level::Debug,
                "changes",
                message,
                json!({"references": mode.as_str()}),
            );
        }
        if let Some(current) = self.current.as_mut() {
            for (id, hash) in outcome.written {
                current.set(kind, &id, &hash);
            }
        }
        Ok(Applied {
            stats: outcome.stats,
            rejected: outcome.rejected,
        })
    }

    fn missing(&mut self, seen: &SeenIds) -> Result<Vec<String>, String> {
        // Usually nobody left: the cache knows without any SQL.
        if self.current.as_ref().is_some_and(|c| !c.any_unlisted(seen)) {
            return Ok(Vec::new());
        }
        in_tx(|| {
            // The current records' employees, streamed, against the listed ids: the ids that
            // left are few, so only they are kept.
            let mut gone: Vec<String> = Vec::new();
            for_each_row(
                "SELECT employee_id FROM employes_raw_data WHERE valid_to IS NULL",
                |row| {
                    let id: String = row.get(1).map_err(spi_err)?.unwrap_or_default();
                    if !seen.contains(&id) {
                        gone.push(id);
                    }
                    Ok(())
                },
            )?;
            gone.sort_unstable();
            gone.dedup();
            Ok(gone)
        })
    }

    fn mark_deleted(
        &mut self,
        ids: Vec<String>,
        progress: &Progress,
    ) -> Result<ApplyStats, String> {
        let session = self.session.clone();
        let progress = progress.clone();
        let ids = std::sync::Mutex::new(ids);
        in_tx(move || {
            let gone = std::mem::take(&mut *ids.lock().map_err(|e| e.to_string())?);
            let (employees, changes) = Spi::get_two_with_args::<i64, i64>(
                DELETE_MISSING,
                &[gone.clone().into(), session.clone().into()],
            )
            .map_err(spi_err)?;
            refresh_timeline(gone)?;
            let stats = ApplyStats {
                versions_written: employees.unwrap_or(0) as u64,
                changes_detected: changes.unwrap_or(0) as u64,
            };
            let mut p = progress.clone();
            p.deleted = stats.versions_written;
            p.changes_detected += stats.changes_detected;
            write_progress(&session, &p)?;
            Ok(stats)
        })
    }

    fn progress(&mut self, progress: &Progress) -> Result<(), String> {
        let session = self.session.clone();
        let progress = progress.clone();
        in_tx(move || write_progress(&session, &progress))
    }

    fn log(&mut self, level: Level, step: &str, message: &str, details: Value) {
        let args = (
            self.session.clone(),
            level.as_str().to_owned(),
            step.to_owned(),
            message.to_owned(),
            details.to_string(),
        );
        let result = in_tx(move || {
            exec(
                "INSERT INTO employes_sync_logs (session_id, level, step, message, details) VALUES ($1::uuid, $2, $3, $4, $5::jsonb)",
                &[args.0.into(), args.1.into(), args.2.into(), args.3.into(), args.4.into()],
                |_| Ok(()),
            )
        });
        if let Err(e) = result {
            pgrx::log!("employes_sync worker: could not write a log line: {e}");
        }
    }

    fn check_stop(&mut self) -> Option<StopReason> {
        if self.sigterm || BackgroundWorker::sigterm_received() {
            self.sigterm = true;
            return Some(StopReason::Terminated(
                "the worker was terminated (SIGTERM: pg_terminate_backend or server shutdown); nothing half-applied".into(),
            ));
        }
        let session = self.session.clone();
        let cancelled = in_tx(move || {
            exec(
                "SELECT cancel_requested_at IS NOT NULL FROM employes_sync_sessions WHERE id = $1::uuid",
                &[session.into()],
                |t| t.first().get_one::<bool>().map_err(spi_err),
            )
        });
        match cancelled {
            Ok(Some(true)) => Some(StopReason::Cancelled),
            _ => None,
        }
    }
}
