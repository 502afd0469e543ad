//! The watchdog: a long-lived worker, started with the server (and again after a crash, like
//! pg_cron's launcher), that ends the sessions whose worker is gone.

use std::time::Duration;

use pgrx::bgworkers::{BackgroundWorker, SignalWakeFlags};
use pgrx::pg_sys;
use pgrx::prelude::*;

use super::spi::{in_tx, spi_err};
use crate::guc;

/// Registers the watchdog: a long-lived worker (restarted after a crash, like pg_cron's
/// launcher) that marks sessions whose worker is gone as `error`, at server start and every
/// few seconds after, so no session stays `running` after a restart or a `kill -9`.
pub fn register_watchdog() {
    super::register_long_lived("employes_sync watchdog", "employes_sync_watchdog_main");
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
