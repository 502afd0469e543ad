//! The watchdog: a long-lived worker, started with the server (and again after a crash, like
//! pg_cron's launcher), that ends the sessions whose worker is gone and, every
//! `employes_sync.housekeeping_interval`, applies the retention settings and checks when the
//! Employes tokens expire.

use std::time::{Duration, Instant};

use pgrx::bgworkers::{BackgroundWorker, SignalWakeFlags};
use pgrx::pg_sys;
use pgrx::prelude::*;
use serde_json::Value;

use super::spi::{in_tx, spi_err};
use super::{session, SQL_VERSION};
use crate::guc;
use employes_sync_core::sync::StoreError;

/// Registers the watchdog: a long-lived worker (restarted after a crash, like pg_cron's
/// launcher) that marks sessions whose worker is gone as `error`, at server start and every
/// few seconds after, so no session stays `running` after a restart or a `kill -9`.
pub fn register_watchdog() {
    super::register_long_lived("employes_sync watchdog", "employes_sync_watchdog_main");
}

/// How often abandoned sessions are looked for.
const REAP_EVERY: Duration = Duration::from_secs(5);

#[pg_guard]
#[no_mangle]
pub extern "C-unwind" fn employes_sync_watchdog_main(_arg: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    let db = guc::database_name();
    BackgroundWorker::connect_worker_to_spi(Some(&db), None);
    let mut housekept: Option<Instant> = None;
    loop {
        match reap() {
            Ok(Some(n)) if n > 0 => {
                pgrx::log!("employes_sync watchdog: marked {n} abandoned session(s) as error")
            }
            Ok(_) => {}
            Err(e) => pgrx::log!("employes_sync watchdog: {e}"),
        }
        let every = Duration::from_secs(guc::HOUSEKEEPING_INTERVAL.get().max(1) as u64);
        if housekept.is_none_or(|at| at.elapsed() >= every) {
            housekept = Some(Instant::now());
            if let Err(e) = housekeeping() {
                pgrx::log!("employes_sync watchdog: housekeeping: {e}");
            }
        }
        let until_housekeeping = every.saturating_sub(housekept.map_or(every, |at| at.elapsed()));
        let wait = REAP_EVERY
            .min(until_housekeeping)
            .max(Duration::from_millis(100));
        if !BackgroundWorker::wait_latch(Some(wait)) {
            return;
        }
        if BackgroundWorker::sighup_received() {
            // SAFETY: the documented way for a background worker to re-read its settings.
            unsafe { pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP) };
        }
    }
}

/// Ends the sessions whose worker is gone; how many.
fn reap() -> Result<Option<i32>, StoreError> {
    in_tx(|| {
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
    })
}

/// Applies the retention settings and checks the tokens (each step in a transaction of its own), when
/// the extension here is at this library's version and the server is not a standby; what it
/// did goes to the server log (counts and dates, never a person).
fn housekeeping() -> Result<(), StoreError> {
    if session::prepare()?.as_deref() != Some(SQL_VERSION) {
        return Ok(());
    }
    let raw_days = guc::RAW_RETENTION_DAYS.get();
    let former_days = guc::FORMER_EMPLOYEE_RETENTION_DAYS.get();
    // Each step in a transaction of its own: one that fails (or waits for a sync) leaves the
    // others alone, and no lock of one is held while the next runs.
    let step = |sql: &str, arg: Option<i32>| {
        in_tx(|| {
            let sql = format!("SELECT CASE WHEN NOT pg_is_in_recovery() THEN {sql} END");
            match arg {
                Some(a) => Spi::get_one_with_args::<pgrx::JsonB>(&sql, &[a.into()]),
                None => Spi::get_one::<pgrx::JsonB>(&sql),
            }
            .map_err(spi_err)
        })
        .map(|v| v.map(|j| j.0).unwrap_or(Value::Null))
    };
    let mut done = serde_json::Map::new();
    for (sql, arg) in [
        (
            "jsonb_build_object('raw_payloads_removed', employes_sync_remove_old_payloads($1))",
            Some(raw_days),
        ),
        ("employes_sync_forget_former($1)", Some(former_days)),
        (
            "jsonb_build_object('token_warnings', employes_sync_check_tokens())",
            None,
        ),
    ] {
        match step(sql, arg) {
            Ok(Value::Object(m)) => done.extend(m),
            Ok(_) => {}
            Err(e) => pgrx::log!("employes_sync watchdog: housekeeping: {e}"),
        }
    }
    let done = Value::Object(done);
    let count = |k: &str| done.get(k).and_then(Value::as_i64).unwrap_or(0);
    if count("raw_payloads_removed") > 0 {
        pgrx::log!(
            "employes_sync watchdog: raw_retention_days = {raw_days}: removed the payload of {} superseded raw version(s)",
            count("raw_payloads_removed")
        );
    }
    if count("employees_forgotten") > 0 || count("former_skipped_syncing") > 0 {
        pgrx::log!(
            "employes_sync watchdog: former_employee_retention_days = {former_days}: forgot {} former employee(s){}",
            count("employees_forgotten"),
            match count("former_skipped_syncing") {
                0 => String::new(),
                n => format!(", {n} left for later (a session was syncing)"),
            }
        );
    }
    for w in done
        .get("token_warnings")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(message) = w.get("message").and_then(Value::as_str) {
            pgrx::warning!("employes_sync: {message}");
        }
    }
    Ok(())
}
