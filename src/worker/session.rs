//! The session ledger: the worker's side of `employes_sync_sessions` and `employes_sync_logs`:
//! how a session starts, records its progress and ends.

use std::time::{Duration, Instant};

use pgrx::bgworkers::BackgroundWorker;
use pgrx::datum::DatumWithOid;
use pgrx::prelude::*;

use serde_json::{json, Value};

use employes_sync_core::sync::{FinalStatus, Level, Outcome, Progress};

use super::spi::{exec, in_tx, spi_err};
use super::SQL_VERSION;
use employes_sync_core::sync::StoreError;

/// Ends a session whose database still has the SQL of another version, with statements that
/// every version's schema understands.
pub(super) fn refuse_version_mismatch(session: &str, version: &str) {
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
pub(super) fn wait_for_creator(session: &str, xid: &str) -> bool {
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

/// The progress columns of a session's last write ($1 = the session).
const PROGRESS_SET: &str = "pages_total = $2, pages_done = $3, employees_total = $4, employees_done = $5, api_requests = $6,
    retries = $7, versions_written = $8, changes_detected = $9, errors = $10, employees_deleted = $11, list_moved = $12,
    records_rejected = $13, heartbeat_at = clock_timestamp()";

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

/// Where the sync of one company records its progress: its row of
/// `employes_sync_session_companies`, and the session row, which holds the totals (what the
/// companies synced before it did, plus its own).
#[derive(Clone, Debug)]
pub(super) struct Ledger {
    pub(super) session: String,
    pub(super) company: String,
    pub(super) before: Progress,
}

/// The session's totals ($1, $3..$14) and the company's own counters ($2, $15..$26) in one
/// statement: a progress write costs one statement, as it did before there were companies.
const COMPANY_PROGRESS: &str = "
WITH totals AS (
    UPDATE employes_sync_sessions SET pages_total = $3, pages_done = $4, employees_total = $5, employees_done = $6,
           api_requests = $7, retries = $8, versions_written = $9, changes_detected = $10, errors = $11,
           employees_deleted = $12, list_moved = $13, records_rejected = $14, heartbeat_at = clock_timestamp()
     WHERE id = $1::uuid)
UPDATE employes_sync_session_companies SET pages_total = $15, pages_done = $16, employees_total = $17,
       employees_done = $18, api_requests = $19, retries = $20, versions_written = $21, changes_detected = $22,
       errors = $23, employees_deleted = $24, list_moved = $25, records_rejected = $26
 WHERE session_id = $1::uuid AND company_id = $2::uuid";

impl Ledger {
    /// Records the company's progress `p` and the session's totals, in the caller's transaction.
    pub(super) fn write(&self, p: &Progress) -> Result<(), StoreError> {
        let mut args = progress_args(&self.session, &self.before.plus(p));
        args.insert(1, self.company.clone().into());
        args.extend(progress_args(&self.session, p).into_iter().skip(1));
        exec(COMPANY_PROGRESS, &args, |_| Ok(()))
    }

    /// Opens the company's row, running.
    pub(super) fn start(&self) -> Result<(), StoreError> {
        in_tx(|| {
            exec(
                "INSERT INTO employes_sync_session_companies (session_id, company_id) VALUES ($1::uuid, $2::uuid)
                 ON CONFLICT (session_id, company_id) DO NOTHING",
                &[self.session.clone().into(), self.company.clone().into()],
                |_| Ok(()),
            )
        })
    }

    /// Closes the company's row with its outcome.
    pub(super) fn finish(&self, outcome: &Outcome) -> Result<(), StoreError> {
        in_tx(|| {
            let mut args = progress_args(&self.session, &outcome.progress);
            args.insert(1, self.company.clone().into());
            args.push(outcome.status.as_str().into());
            args.push(outcome.error.clone().into());
            args.push(outcome.snapshot_complete.into());
            exec(
                "UPDATE employes_sync_session_companies SET pages_total = $3, pages_done = $4, employees_total = $5,
                        employees_done = $6, api_requests = $7, retries = $8, versions_written = $9,
                        changes_detected = $10, errors = $11, employees_deleted = $12, list_moved = $13,
                        records_rejected = $14, status = $15, error = $16, snapshot_complete = $17,
                        completed_at = clock_timestamp()
                  WHERE session_id = $1::uuid AND company_id = $2::uuid",
                &args,
                |_| Ok(()),
            )
        })
    }
}

/// A company to sync: its id and its own token, if it has one.
pub(super) struct Company {
    pub(super) id: String,
    pub(super) token: Option<String>,
}

/// The companies this session syncs: the one it was triggered for, or every enabled one (the
/// company of employes_sync.company_id among them), in the order they were added.
pub(super) fn companies(session: &str) -> Result<Vec<Company>, StoreError> {
    in_tx(|| {
        let mut out = Vec::new();
        Spi::connect(|client| {
            let rows = client
                .select(
                    "SELECT c.company_id::text, t.api_token
                       FROM employes_sync_sessions s
                       JOIN employes_sync_company_settings c
                         ON c.removed_at IS NULL
                        AND (c.company_id = s.requested_company OR (s.requested_company IS NULL AND c.enabled))
                       LEFT JOIN employes_sync_company_tokens t ON t.company_id = c.company_id
                      WHERE s.id = $1::uuid
                      ORDER BY c.added_at, c.company_id",
                    None,
                    &[session.to_owned().into()],
                )
                .map_err(spi_err)?;
            for row in rows {
                out.push(Company {
                    id: row.get(1).map_err(spi_err)?.unwrap_or_default(),
                    token: row.get(2).map_err(spi_err)?,
                });
            }
            Ok::<_, StoreError>(())
        })?;
        Ok(out)
    })
}

/// Connects the worker's session to the extension: its schema first in `search_path`, JIT off;
/// returns the version of the extension's SQL in this database, `None` when it is not installed.
pub(super) fn prepare() -> Result<Option<String>, StoreError> {
    in_tx(|| {
        // Scalar subqueries: one row, NULLs when the extension is not installed.
        let (schema, version) = Spi::get_two::<String, String>(
            "SELECT (SELECT n.nspname::text FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
                      WHERE e.extname = 'employes_sync'),
                    (SELECT e.extversion::text FROM pg_extension e WHERE e.extname = 'employes_sync')",
        )
        .map_err(spi_err)?;
        let Some(schema) = schema else {
            return Ok(None);
        };
        Spi::run_with_args(
            "SELECT set_config('search_path', quote_ident($1) || ', pg_catalog', false)",
            &[schema.into()],
        )
        .map_err(spi_err)?;
        // The worker runs short statements on bounded batches. Compiling them with JIT costs
        // more than running them (up to a second per statement when the planner has no
        // statistics yet, as during a fresh install's first sync), so it is off for this session.
        Spi::run("SET jit = off").map_err(spi_err)?;
        Ok(version)
    })
}

/// Marks the session running with this worker; whether a cancel came first, or `None` when
/// the session is no longer queued.
pub(super) fn start(session: &str) -> Option<bool> {
    let started = in_tx(|| {
        Spi::get_one_with_args::<bool>(
            "UPDATE employes_sync_sessions SET status = 'running', started_at = clock_timestamp(), worker_pid = pg_backend_pid(),
                    worker_instance = employes_sync_instance(), heartbeat_at = clock_timestamp()
              WHERE id = $1::uuid AND status = 'queued' RETURNING cancel_requested_at IS NOT NULL",
            &[session.to_owned().into()],
        )
        .map_err(spi_err)
    });
    match started {
        Ok(c) => c,
        Err(e) => {
            pgrx::log!("employes_sync worker: cannot start session {session}: {e}");
            None
        }
    }
}

/// Deletes log rows older than `days` (0 keeps them), but never those of an active session.
pub(super) fn prune_logs(days: i32) {
    if days > 0 {
        let _ = in_tx(|| {
            Spi::run_with_args(
                "DELETE FROM employes_sync_logs l WHERE l.logged_at < now() - make_interval(days => $1)
                   AND NOT EXISTS (SELECT 1 FROM employes_sync_sessions s WHERE s.id = l.session_id AND s.status IN ('queued', 'running'))",
                &[days.into()],
            )
            .map_err(spi_err)
        });
    }
}

/// Logs the session's end and records its outcome on the session row.
/// Writes a log line of the session, in a transaction of its own.
pub(super) fn log(session: &str, level: Level, step: &str, message: &str, details: Value) {
    let args = (
        session.to_owned(),
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

/// Logs the session's end and records its outcome (the totals of its companies) on its row.
pub(super) fn finish(session: &str, outcome: &Outcome, took: Duration) {
    let p = &outcome.progress;
    if p.versions_written > 0 || p.deleted > 0 {
        let message = "timeline maintained for the employees this sync changed";
        log(
            session,
            Level::Info,
            "timeline",
            message,
            json!({"ms": super::timeline::timeline_ms()}),
        );
    }
    log(
        session,
        if outcome.status == FinalStatus::Completed {
            Level::Info
        } else {
            Level::Warning
        },
        "finish",
        &format!(
            "sync {} in {:.1} s",
            outcome.status.as_str(),
            took.as_secs_f64()
        ),
        json!({"status": outcome.status.as_str(), "seconds": took.as_secs_f64(), "snapshot_complete": outcome.snapshot_complete,
               "api_requests": p.api_requests, "retries": p.retries, "versions_written": p.versions_written,
               "changes_detected": p.changes_detected, "employees_deleted": p.deleted, "list_moved": p.list_moved,
               "records_rejected": p.rejected, "errors": p.errors}),
    );
    let finished = in_tx(|| {
        let mut args = progress_args(session, p);
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
