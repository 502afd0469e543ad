//! SQL functions implemented in Rust. The user-facing API is written in SQL (`sql/06_api.sql`);
//! these are the parts it needs from Rust.

use pgrx::pg_sys;
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

/// Where this backend runs: `system identifier:timeline:postmaster start:database OID`. A
/// session records it when it is queued; a session whose instance is not this one has no worker
/// here, whatever its pid says: it came from another cluster or database (a restored dump), from
/// the old primary (a promoted standby is on a new timeline) or from before a restart. NULL
/// during recovery (a standby), where the syncs of the primary cannot be judged.
#[pg_extern(volatile, parallel_safe)]
fn employes_sync_instance() -> Option<String> {
    // SAFETY: plain reads of this backend's and the cluster's identity; GetWALInsertionTimeLine
    // is valid once recovery has ended, which is checked first.
    unsafe {
        if pg_sys::RecoveryInProgress() {
            return None;
        }
        let started = std::ptr::addr_of!(pg_sys::PgStartTime).read();
        Some(format!(
            "{}:{}:{started}:{}",
            pg_sys::GetSystemIdentifier(),
            pg_sys::GetWALInsertionTimeLine(),
            u32::from(pg_sys::MyDatabaseId)
        ))
    }
}

/// A new Standard Webhooks signing secret: `whsec_` + base64 of 32 random bytes.
#[pg_extern(volatile, parallel_safe)]
fn employes_webhook_new_secret() -> String {
    match employes_sync_core::webhook::new_secret() {
        Ok(secret) => secret,
        Err(e) => {
            pgrx::ereport!(
                ERROR,
                PgSqlErrorCode::ERRCODE_SYSTEM_ERROR,
                format!("cannot make a webhook secret: {e}")
            );
        }
    }
}

/// Whether `secret` is a Standard Webhooks secret: `whsec_` + base64 of 24 to 64 bytes.
#[pg_extern(immutable, parallel_safe, strict)]
fn employes_webhook_secret_ok(secret: &str) -> bool {
    employes_sync_core::webhook::secret_key(secret).is_some()
}

/// When a token stops working: its JWT `exp` (the signature is not checked); NULL for a token
/// that is not a JWT with an `exp`. Internal: the companies view and the watchdog's token check
/// call it; the token is never stored or shown by it.
#[pg_extern(immutable, parallel_safe, strict)]
fn employes_sync_token_expiry(token: &str) -> Option<TimestampWithTimeZone> {
    employes_sync_core::token::expiry(token)
        .map(|at| pgrx::datum::datetime_support::to_timestamp(at.timestamp() as f64))
}

/// The expiry of the token in `employes_sync.api_token` (the one companies without a token of
/// their own use), as this session sees the setting; NULL when it is unset or not a JWT.
#[pg_extern(stable, parallel_safe)]
fn employes_sync_setting_token_expiry() -> Option<TimestampWithTimeZone> {
    employes_sync_core::token::expiry(&crate::guc::api_token())
        .map(|at| pgrx::datum::datetime_support::to_timestamp(at.timestamp() as f64))
}

/// An Employes date (`YYYY-MM-DD`, then anything such as `T00:00:00`) as a date, read exactly as
/// the sync reads effective dates (`model::parse_api_date`); NULL for null, the `0001-01-01`
/// sentinel, an impossible date such as 2025-02-30 and anything else. Never an error, so a bad
/// value from the API cannot break a view. In Rust because the timeline calls it for every
/// period: several times faster than the SQL expression it replaces.
#[pg_extern(immutable, parallel_safe, strict)]
fn employes_sync_jdate(v: pgrx::JsonB) -> Option<pgrx::prelude::Date> {
    employes_sync_core::model::parse_api_date(&v.0).map(pg_date)
}

/// A date of the core as a PostgreSQL date. The core's dates have years 1 to 9999 (its parser
/// refuses year 0, and four digits keep it below 10000), all within PostgreSQL's range.
pub(crate) fn pg_date(d: chrono::NaiveDate) -> Date {
    use chrono::Datelike;
    Date::new_unchecked(d.year() as isize, d.month() as u8, d.day() as u8)
}

/// The timeline events of one `/employments` payload, from its text (`payload::text`): `details`
/// keeps every value as the payload writes it (see
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

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use pgrx::prelude::*;

    /// The reason a queued or running session recorded at `instance` has no worker here.
    fn stale(status: &str, pid: &str, instance: &str, age: &str) -> Option<String> {
        Spi::get_one(&format!(
            "SELECT employes_sync_session_stale_reason('{status}', {pid}, {instance}, now() - interval '{age}')"
        ))
        .unwrap()
    }

    #[pg_test]
    fn a_session_from_another_instance_is_stale_and_says_why() {
        let here: String = Spi::get_one("SELECT employes_sync_instance()")
            .unwrap()
            .unwrap();
        let parts: Vec<&str> = here.split(':').collect();
        assert_eq!(parts.len(), 4, "{here}");
        let with = |i: usize, v: &str| {
            let mut p = parts.clone();
            p[i] = v;
            format!("'{}'", p.join(":"))
        };
        let me = "pg_backend_pid()";
        // Alive: this backend is no sync worker, but a session seen from here with a live
        // worker needs one; a fresh queued session is given its moment.
        assert_eq!(
            stale("queued", "NULL", &format!("'{here}'"), "1 second"),
            None
        );
        assert_eq!(stale("completed", me, &with(0, "1"), "1 hour"), None);
        let gone = stale("running", me, &format!("'{here}'"), "1 hour").unwrap();
        assert!(
            gone.contains("is gone while the session was running"),
            "{gone}"
        );
        let copied = stale("running", me, &with(0, "1"), "1 hour").unwrap();
        assert!(copied.contains("another database"), "{copied}");
        let other_db = stale("queued", me, &with(3, "1"), "1 second").unwrap();
        assert!(other_db.contains("another database"), "{other_db}");
        let failover = stale("running", me, &with(1, "99"), "1 hour").unwrap();
        assert!(
            failover.contains("failed over") && failover.contains("timeline 99"),
            "{failover}"
        );
        let restart = stale("running", me, &with(2, "1"), "1 hour").unwrap();
        assert!(restart.contains("the server restarted"), "{restart}");
        // A session of 0.1.0 recorded no instance: its worker's pid decides.
        let old = stale("running", me, "NULL", "1 hour").unwrap();
        assert!(old.contains("is gone"), "{old}");
    }

    /// A table or sequence of the extension that pg_dump left out would lose its rows in a
    /// restore: every one is registered, whatever is added later, but the companies' tokens,
    /// which a dump must never carry.
    #[pg_test]
    fn every_table_and_sequence_is_in_a_dump_but_the_tokens() {
        let (members, dumped): (Option<String>, Option<String>) = Spi::get_two(
            "SELECT (SELECT string_agg(d.objid::regclass::text, ' ' ORDER BY d.objid::regclass::text)
                       FROM pg_depend d JOIN pg_class c ON c.oid = d.objid
                      WHERE d.refclassid = 'pg_extension'::regclass AND d.classid = 'pg_class'::regclass
                        AND d.deptype = 'e' AND c.relkind IN ('r', 'S')
                        AND d.objid <> 'employes_sync_company_tokens'::regclass
                        AND d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'employes_sync')),
                    (SELECT string_agg(c::regclass::text, ' ' ORDER BY c::regclass::text)
                       FROM pg_extension e, unnest(e.extconfig) c WHERE e.extname = 'employes_sync')",
        )
        .unwrap();
        assert_eq!(
            dumped.as_deref(),
            Some(
                "employes_changes employes_changes_id_seq employes_erasure_key employes_erasures \
                 employes_erasures_id_seq employes_events employes_events_id_seq \
                 employes_raw_data employes_raw_data_id_seq \
                 employes_sync_company_settings employes_sync_logs employes_sync_logs_id_seq \
                 employes_sync_session_companies employes_sync_sessions employes_sync_token_warnings \
                 employes_timeline employes_webhook_deliveries employes_webhook_deliveries_id_seq \
                 employes_webhook_subscriptions"
            )
        );
        assert_eq!(members, dumped);
    }

    #[pg_test(error = "invalid sync source: 'nightly'")]
    fn trigger_rejects_an_unknown_source() {
        Spi::run("SELECT employes_sync_trigger('nightly', 'dba')").unwrap();
    }

    #[pg_test(error = "invalid sync source: NULL")]
    fn trigger_rejects_a_null_source() {
        Spi::run("SELECT employes_sync_trigger(NULL, 'dba')").unwrap();
    }

    #[pg_test(
        error = "invalid triggered_by: 321 characters; it must be 1 to 320 characters without control characters"
    )]
    fn trigger_rejects_an_overlong_triggered_by() {
        Spi::run("SELECT employes_sync_trigger('manual', repeat('x', 321))").unwrap();
    }

    #[pg_test(
        error = "invalid triggered_by: 8 characters; it must be 1 to 320 characters without control characters"
    )]
    fn trigger_rejects_control_characters_in_triggered_by() {
        Spi::run("SELECT employes_sync_trigger('manual', E'dba\\nrm -')").unwrap();
    }

    #[pg_test(error = "timeout_seconds must be between 0 and 86400, got -1")]
    fn wait_rejects_a_negative_timeout() {
        Spi::run("SELECT employes_sync_wait(gen_random_uuid(), -1)").unwrap();
    }

    #[pg_test(error = "no sync session with id 00000000-0000-0000-0000-000000000000")]
    fn cancel_of_an_unknown_session_is_an_error() {
        Spi::run("SELECT employes_sync_cancel('00000000-0000-0000-0000-000000000000')").unwrap();
    }

    #[pg_test(
        error = "employes_sync_employment_events: the payload is not valid JSON (expected value at line 1 column 11)"
    )]
    fn employment_events_reject_text_that_is_not_json() {
        Spi::run("SELECT * FROM employes_sync_employment_events('{\"data\": [}')").unwrap();
    }

    /// The same employee id in two companies (version 1 of each, a day ago).
    fn e1_in_two_companies() -> &'static str {
        let s = crate::testing::session();
        let other = "0c3d7b12-0000-4000-8000-000000000002";
        for (company, name) in [(crate::testing::COMPANY, "Anna"), (other, "Bram")] {
            Spi::run_with_args(
                "INSERT INTO employes_raw_data (kind, employee_id, payload, content_hash, version, valid_from,
                                                first_session_id, company_id)
                 VALUES ('employee', 'e1', jsonb_build_object('id', 'e1', 'first_name', $1::text), repeat('a', 64), 1,
                         now() - interval '1 day', $2::uuid, $3::uuid)",
                &[name.into(), s.clone().into(), company.into()],
            )
            .unwrap();
        }
        other
    }

    /// Employee ids are unique per company, not globally: the same id in two companies is two
    /// employees, each under its company.
    #[pg_test]
    fn the_same_employee_id_in_two_companies_is_two_employees() {
        let other = e1_in_two_companies();
        let named = |company: &str| {
            Spi::get_one_with_args::<String>(
                "SELECT employes_employee_as_of('e1', now(), $1::uuid) ->> 'first_name'",
                &[company.into()],
            )
            .unwrap()
        };
        assert_eq!(named(crate::testing::COMPANY).as_deref(), Some("Anna"));
        assert_eq!(named(other).as_deref(), Some("Bram"));
        let current = Spi::get_one::<i64>(
            "SELECT count(DISTINCT company_id) FROM employes_current WHERE employee_id = 'e1'",
        )
        .unwrap();
        assert_eq!(current, Some(2));
    }

    /// Without a company, `employes_employee_as_of` asks which one rather than pick.
    #[pg_test(error = "employee e1 exists in 2 companies")]
    fn as_of_an_id_of_two_companies_needs_the_company() {
        e1_in_two_companies();
        Spi::run("SELECT employes_employee_as_of('e1')").unwrap();
    }

    #[pg_test]
    fn api_dates_and_numbers_read_leniently() {
        let got = Spi::get_one::<String>(
            "SELECT concat_ws(',', employes_sync_jdate('\"2025-07-01T00:00:00\"'), employes_sync_jdate('\"0001-01-01T00:00:00\"'),
                              employes_sync_jdate('\"soon\"'), employes_sync_jdate('12'), employes_sync_jnum('2846.0'),
                              employes_sync_jnum('\"30\"'))",
        )
        .unwrap();
        assert_eq!(got.as_deref(), Some("2025-07-01,2846.0"));
        // Impossible or out-of-range dates are NULL, never an error that would break a view.
        let got = Spi::get_one::<String>(
            "SELECT concat_ws(',', employes_sync_jdate('\"2024-02-29T00:00:00\"'), employes_sync_jdate('\"2025-02-30T00:00:00\"'),
                              employes_sync_jdate('\"0000-01-01\"'), employes_sync_jdate('\"9999-12-31\"'),
                              employes_sync_jdate('\"2025-07-011\"'), employes_sync_jdate('\"2025-7-1\"'),
                              employes_sync_jdate('{\"start_date\": \"2025-01-01\"}'), employes_sync_jdate(NULL),
                              employes_sync_jdate('null'))",
        )
        .unwrap();
        assert_eq!(got.as_deref(), Some("2024-02-29,9999-12-31"));
    }

    #[pg_test]
    fn only_a_sync_worker_counts_as_alive() {
        // This backend, the logical replication launcher (a background worker of another type),
        // a pid that does not exist and nonsense are all "not a sync worker".
        let got = Spi::get_one::<String>(
            "SELECT concat_ws(',', employes_sync_worker_alive(pg_backend_pid()),
                              employes_sync_worker_alive((SELECT pid FROM pg_stat_activity WHERE backend_type = 'logical replication launcher')),
                              employes_sync_worker_alive(2147483647), employes_sync_worker_alive(0),
                              employes_sync_worker_alive(-1), employes_sync_worker_alive(NULL) IS NULL)",
        )
        .unwrap();
        assert_eq!(got.as_deref(), Some("f,f,f,f,f,t"));
    }

    /// Each company's token is warned about once at the threshold it has reached (30, 7 or 1
    /// days before it expires, or after), never before 30 days and never twice.
    #[pg_test]
    fn token_warnings_come_once_per_threshold() {
        Spi::run(
            "CREATE FUNCTION pg_temp.jwt(expires timestamptz) RETURNS text LANGUAGE sql AS $$
                 SELECT 'eyJhbGciOiJIUzI1NiJ9.'
                        || rtrim(translate(encode(convert_to('{\"exp\":' || floor(extract(epoch FROM expires))::bigint || '}', 'UTF8'),
                                                  'base64'), '+/', '-_'), '=') || '.c2ln' $$;
             SELECT employes_sync_add_company(('00000000-0000-4000-8000-00000000000' || n)::uuid, 'c' || n,
                                              pg_temp.jwt(now() + d))
               FROM (VALUES (1, interval '40 days'), (2, interval '20 days 1 hour'), (3, interval '3 days 1 hour'),
                            (4, interval '12 hours'), (5, interval '-23 hours')) v (n, d);
             SELECT employes_sync_add_company('00000000-0000-4000-8000-000000000006', 'not a jwt', 'plain-token-6');",
        )
        .unwrap();
        let given = Spi::get_one::<String>(
            "SELECT string_agg(w ->> 'company_id' || ':' || (w ->> 'threshold_days') || ':' || (w ->> 'days_left'), ' '
                               ORDER BY w ->> 'company_id')
               FROM jsonb_array_elements(employes_sync_check_tokens()) w",
        )
        .unwrap();
        assert_eq!(
            given.as_deref(),
            Some(
                "00000000-0000-4000-8000-000000000002:30:20 00000000-0000-4000-8000-000000000003:7:3 \
                 00000000-0000-4000-8000-000000000004:1:0 00000000-0000-4000-8000-000000000005:1:-1"
            )
        );
        let again =
            Spi::get_one::<i64>("SELECT jsonb_array_length(employes_sync_check_tokens())::bigint")
                .unwrap();
        assert_eq!(again, Some(0));
        let (events, logs) = Spi::get_two::<i64, i64>(
            "SELECT (SELECT count(*) FROM employes_events WHERE event_type = 'token.expiring' AND session_id IS NULL),
                    (SELECT count(*) FROM employes_sync_logs WHERE step = 'token' AND level = 'warning')",
        )
        .unwrap();
        assert_eq!((events, logs), (Some(4), Some(4)));
        // The panel: a warning for each of those four, none for 40 days or a token that is not a JWT.
        let warnings = Spi::get_one::<i64>(
            "SELECT jsonb_array_length(employes_sync_status() -> 'warnings')::bigint",
        )
        .unwrap();
        assert_eq!(warnings, Some(4));
    }

    /// An erasure replaces whole ids only: not inside a longer id, a number, a uuid or a
    /// key, and never breaks a jsonb document.
    #[pg_test]
    fn redaction_replaces_whole_ids_only() {
        let text = Spi::get_one::<String>(
            "SELECT employes_sync_redact('GET /v4/employees/1/employments: employee 1. 142 requests, emp-1 and emp-10, a.1, 1.5',
                                         ARRAY['1', 'emp-1'])",
        )
        .unwrap();
        assert_eq!(
            text.as_deref(),
            Some("GET /v4/employees/[erased]/employments: employee [erased]. 142 requests, [erased] and emp-10, a.1, 1.5")
        );
        // A message cut at its 500th character, in the middle of an id.
        let cut = Spi::get_one::<String>(
            "SELECT employes_sync_redact('GET /employees/3f0c9a52-1c1f…', ARRAY['3f0c9a52-1c1f-4b8e-9a53-2b7d3f0e9a11'])
                    || ' ' || employes_sync_redact('see a3f0c…', ARRAY['3f0c9a52'])",
        )
        .unwrap();
        assert_eq!(cut.as_deref(), Some("GET /employees/[erased]… see a3f0c…"));
        let same = Spi::get_one::<bool>(
            r#"SELECT employes_sync_redact('{"api_requests": 142, "employee_id": "1", "1": ["emp-1", "emp-10", 1], "url": "/employees/1"}'::jsonb,
                                          ARRAY['1', 'emp-1'])
                      = '{"api_requests": 142, "employee_id": "[erased]", "1": ["[erased]", "emp-10", 1], "url": "/employees/[erased]"}'::jsonb"#,
        )
        .unwrap();
        assert_eq!(same, Some(true));
    }
}
