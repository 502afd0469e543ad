//! SQL functions implemented in Rust. The user-facing API is written in SQL (`sql/06_api.sql`);
//! these are the parts it needs from Rust.

use pgrx::prelude::*;

use crate::worker;

/// Starts the background worker of a session that the caller has just recorded. Internal:
/// EXECUTE is revoked from PUBLIC; `employes_sync_trigger` calls it.
#[pg_extern(volatile, parallel_unsafe)]
fn employes_sync_launch_worker(session_id: pgrx::Uuid, requested_xid: &str) -> Option<i32> {
    worker::launch(&session_id.to_string(), requested_xid)
}

/// Whether a sync worker with this pid is running. Asks the postmaster's background-worker
/// slots (what `pg_stat_activity.backend_type` shows for workers) instead of building a
/// statistics snapshot of every backend: the trigger's fast path calls it on every join, so it
/// must cost microseconds, and it sees a worker from the moment it is started.
#[pg_extern(volatile, parallel_safe, strict)]
fn employes_sync_worker_alive(pid: i32) -> bool {
    if pid <= 0 {
        return false;
    }
    // SAFETY: reads the shared slot array under BackgroundWorkerLock; the returned pointer is
    // to a static buffer valid until the next call in this backend, and is copied at once.
    let kind = unsafe { pgrx::pg_sys::GetBackgroundWorkerTypeByPid(pid) };
    !kind.is_null()
        && unsafe { std::ffi::CStr::from_ptr(kind) }.to_bytes() == worker::WORKER_TYPE.as_bytes()
}

/// An Employes date (`YYYY-MM-DD`, then anything such as `T00:00:00`) as a date, read exactly as
/// the sync reads effective dates (`classify::parse_api_date`); NULL for null, the `0001-01-01`
/// sentinel, an impossible date such as 2025-02-30 and anything else. Never an error, so a bad
/// value from the API cannot break a view. In Rust because the timeline calls it for every
/// period: several times faster than the SQL expression it replaces.
#[pg_extern(immutable, parallel_safe, strict)]
fn employes_sync_jdate(v: pgrx::JsonB) -> Option<pgrx::prelude::Date> {
    employes_sync_core::classify::parse_api_date(&v.0).map(pg_date)
}

/// A date of the core as a PostgreSQL date. The core's dates have years 1 to 9999 (its parser
/// refuses year 0, and four digits keep it below 10000), all within PostgreSQL's range.
pub(crate) fn pg_date(d: chrono::NaiveDate) -> Date {
    use chrono::Datelike;
    Date::new_unchecked(d.year() as isize, d.month() as u8, d.day() as u8)
}

/// The timeline events of one `/employments` payload, from its text (`payload::text`), so that
/// `details` keeps every value exactly as the payload writes it (see
/// `employes_sync_core::timeline` for the rules). Salary events carry the old and new wage as
/// numeric text; `employes_timeline_events` computes `amount` and `percent` from them in
/// `numeric`. Pure: reads nothing but its argument.
#[pg_extern(immutable, parallel_safe, strict)]
#[allow(clippy::type_complexity)]
fn employes_sync_employment_events(
    payload: &str,
) -> TableIterator<
    'static,
    (
        name!(event_date, Date),
        name!(event_type, String),
        name!(title, String),
        name!(details, String),
        name!(event_key, String),
        name!(old_wage, Option<String>),
        name!(new_wage, Option<String>),
    ),
> {
    let events = match employes_sync_core::timeline::employment_events(payload) {
        Ok(events) => events,
        Err(e) => {
            pgrx::ereport!(
                ERROR,
                PgSqlErrorCode::ERRCODE_INVALID_TEXT_REPRESENTATION,
                format!("employes_sync_employment_events: the payload is {e}"),
                "It takes the text of an /employments payload, such as payload::text of a stored version."
            );
        }
    };
    TableIterator::new(events.into_iter().map(|e| {
        (
            pg_date(e.event_date),
            e.event_type.to_string(),
            e.title,
            e.details,
            e.event_key,
            e.old_wage,
            e.new_wage,
        )
    }))
}
