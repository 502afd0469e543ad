//! The background worker that runs one sync session, shaped like pg_cron's: HTTP on helper
//! threads outside any transaction, one short transaction per page or history batch on the main
//! thread, SIGTERM and cancellation checked between units of work, every failure recorded on the
//! session row and in the log table rather than lost in a panic.
//!
//! - `session`: the session ledger (start, progress, end, log lines).
//! - `companies`: the companies a session syncs, one after the other, and its outcome.
//! - `store`: the [`Store`](employes_sync_core::sync::Store) the core's sync driver writes through.
//! - `history`: the history writes of a batch (versions, changes, deletions), record by record
//!   isolation; `references`: how their references are checked.
//! - `timeline`: the timeline upkeep of the employees a batch changed.
//! - `spi`: transactions, subtransactions and kept plans.
//! - `watchdog`: the long-lived worker that ends sessions whose worker is gone.
//! - `webhooks`: the long-lived worker that delivers events to webhook subscriptions.

mod companies;
mod history;
mod references;
mod session;
mod spi;
mod store;
mod timeline;
mod watchdog;
mod webhooks;

use std::time::Instant;

use pgrx::bgworkers::{BackgroundWorker, BackgroundWorkerBuilder, SignalWakeFlags};
use pgrx::pg_sys;
use pgrx::prelude::*;

use employes_sync_core::sync::FinalStatus;

use crate::guc;

pub use watchdog::register_watchdog;
pub use webhooks::register_webhook_worker;

/// Registers a long-lived worker of this library (from `shared_preload_libraries`): started once
/// recovery has finished (so on a standby only after its promotion), restarted 10 s after a crash.
fn register_long_lived(name: &str, function: &str) {
    BackgroundWorkerBuilder::new(name)
        .set_type(name)
        .set_library("employes_sync")
        .set_function(function)
        .enable_spi_access()
        .set_start_time(pgrx::bgworkers::BgWorkerStartTime::RecoveryFinished)
        .set_restart_time(Some(std::time::Duration::from_secs(10)))
        .load();
}

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

/// The version of the SQL this library was built with: a worker refuses to run a session against
/// another one (between a package upgrade and `ALTER EXTENSION employes_sync UPDATE`).
pub(super) const SQL_VERSION: &str = env!("CARGO_PKG_VERSION");

/// One session, from its trigger's commit to its end.
fn run(session: String, xid: String) {
    let version = match session::prepare() {
        Ok(Some(v)) => v,
        Ok(None) => {
            return pgrx::log!(
                "employes_sync worker: extension employes_sync is not installed in this database"
            )
        }
        Err(e) => return pgrx::log!("employes_sync worker: {e}"),
    };
    if !session::wait_for_creator(&session, &xid) {
        return; // its trigger rolled back: nothing to do
    }
    if version != SQL_VERSION {
        return session::refuse_version_mismatch(&session, &version);
    }
    let Some(cancelled_early) = session::start(&session) else {
        return; // already ended (reaped, or handled by another worker)
    };
    let begun = Instant::now();
    let outcome = if cancelled_early {
        companies::ended(FinalStatus::Cancelled, "cancelled before it started")
    } else {
        companies::sync_all(&session)
    };
    session::prune_logs(guc::LOG_RETENTION_DAYS.get());
    session::finish(&session, &outcome, begun.elapsed());
}
