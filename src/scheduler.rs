//! SQL bindings of the cron schedule logic in `employes_sync_core::cron`, for the scheduler API
//! in `sql/07_scheduler.sql`: validate an expression before pg_cron sees it, describe it in plain
//! words, and compute the next run and the interval between runs (UTC, as pg_cron 1.4 runs them).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use employes_sync_core::cron::{self, Schedule};
use pgrx::datum::{Interval, TimestampWithTimeZone};
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;

const ALLOWED_HINT: &str = "use 5 fields: minute hour day-of-month month day-of-week, with numbers, *, ranges (1-5), lists (1,15), steps (*/10) and month/day names (jan, mon); or @hourly, @daily, @weekly, @monthly, @yearly; schedules run in UTC";

/// Seconds between the Unix epoch and the Postgres epoch (2000-01-01 00:00:00 UTC).
const PG_EPOCH_UNIX_SECS: i64 = 946_684_800;
/// Years 1 to 9999: where a next run means something and every conversion is exact.
const MIN_UNIX_SECS: i64 = -62_135_596_800;
const MAX_UNIX_SECS: i64 = 253_402_300_799;

/// Parses `expr` or raises SQLSTATE 22023 with what is wrong.
fn schedule(expr: &str) -> Schedule {
    match cron::parse(expr) {
        Ok(s) => s,
        Err(e) => {
            ErrorReport::new(
                PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
                e.to_string(),
                "employes_sync_cron",
            )
            .set_detail(format!("cron expression: '{}'", expr.replace('\'', "''")))
            .set_hint(ALLOWED_HINT)
            .report(PgLogLevel::ERROR);
            unreachable!("an ERROR report does not return")
        }
    }
}

/// Whole seconds since the Unix epoch; `None` for infinity or outside years 1-9999.
fn unix_secs(t: TimestampWithTimeZone) -> Option<i64> {
    if !t.is_finite() {
        return None;
    }
    let micros: i64 = t.into_inner();
    let secs = micros.div_euclid(1_000_000) + PG_EPOCH_UNIX_SECS;
    (MIN_UNIX_SECS..=MAX_UNIX_SECS)
        .contains(&secs)
        .then_some(secs)
}

fn timestamptz(unix: i64) -> Option<TimestampWithTimeZone> {
    if !(MIN_UNIX_SECS..=MAX_UNIX_SECS).contains(&unix) {
        return None;
    }
    TimestampWithTimeZone::try_from((unix - PG_EPOCH_UNIX_SECS) * 1_000_000).ok()
}

/// The core works in `chrono::DateTime<Utc>`, which converts from and to `SystemTime`.
fn system_time(unix: i64) -> SystemTime {
    if unix >= 0 {
        UNIX_EPOCH + Duration::from_secs(unix.unsigned_abs())
    } else {
        UNIX_EPOCH - Duration::from_secs(unix.unsigned_abs())
    }
}

fn next_unix(s: &Schedule, after: i64) -> Option<i64> {
    s.next_after(system_time(after).into())
        .map(|t| t.timestamp())
}

/// Validates a cron expression as pg_cron 1.4 would run it; returns it with whitespace
/// normalised, or raises SQLSTATE 22023 saying what is wrong.
#[pg_extern(immutable, strict, parallel_safe)]
fn employes_sync_cron_check(expr: &str) -> String {
    schedule(expr).expression().to_owned()
}

/// The schedule in plain words, e.g. "every 6 hours" or "daily at 02:00 UTC".
#[pg_extern(immutable, strict, parallel_safe)]
fn employes_sync_cron_describe(expr: &str) -> String {
    schedule(expr).describe()
}

/// The first run strictly after `after` (UTC, whole minutes); NULL if there is none before the
/// year 10000 or `after` is infinite.
#[pg_extern(immutable, strict, parallel_safe)]
fn employes_sync_cron_next(
    expr: &str,
    after: default!(TimestampWithTimeZone, "now()"),
) -> Option<TimestampWithTimeZone> {
    let s = schedule(expr);
    timestamptz(next_unix(&s, unix_secs(after)?)?)
}

/// The gap between the next two runs after `after` (e.g. 06:00:00 for "0 */6 * * *"); the age
/// past which a sync counts as outdated. NULL if the schedule has no two runs.
#[pg_extern(immutable, strict, parallel_safe)]
fn employes_sync_cron_interval(
    expr: &str,
    after: default!(TimestampWithTimeZone, "now()"),
) -> Option<Interval> {
    let s = schedule(expr);
    let first = next_unix(&s, unix_secs(after)?)?;
    let second = next_unix(&s, first)?;
    let micros = (second - first).checked_mul(1_000_000)?;
    Interval::new(0, 0, micros)
        .ok()
        .map(Interval::justify_hours)
}

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use pgrx::prelude::*;

    fn text(sql: &str) -> Option<String> {
        Spi::get_one(sql).unwrap()
    }

    #[pg_test]
    fn check_normalises_and_describe_speaks_plain_words() {
        assert_eq!(
            text("SELECT employes_sync_cron_check('  0   */6 * *  * ')").as_deref(),
            Some("0 */6 * * *")
        );
        assert_eq!(
            text("SELECT employes_sync_cron_describe('0 2 * * *')").as_deref(),
            Some("daily at 02:00 UTC")
        );
    }

    #[pg_test]
    fn next_run_and_interval_are_computed_in_utc() {
        assert_eq!(
            text("SELECT (employes_sync_cron_next('0 */6 * * *', '2026-11-25 14:53:20+00')::timestamptz AT TIME ZONE 'UTC')::text")
                .as_deref(),
            Some("2026-11-25 18:00:00")
        );
        assert_eq!(
            text("SELECT (employes_sync_cron_next('30 2 * * *', '2026-11-25 02:30:00+01')::timestamptz AT TIME ZONE 'UTC')::text")
                .as_deref(),
            Some("2026-11-25 02:30:00")
        );
        assert_eq!(
            text("SELECT employes_sync_cron_interval('0 */6 * * *', '2026-11-25 14:53+00')::text")
                .as_deref(),
            Some("06:00:00")
        );
        assert_eq!(
            text("SELECT employes_sync_cron_next('0 0 * * *', 'infinity')::text"),
            None
        );
    }

    #[pg_test(error = "hour value 24 is out of range 0-23")]
    fn invalid_expression_is_an_error() {
        Spi::run("SELECT employes_sync_cron_check('0 24 * * *')").unwrap();
    }
}
