//! The `employes_sync.*` settings. Everything that decides where the token goes or what it is is
//! superuser-only; the token is hidden from `SHOW ALL` and shown masked even to superusers.

use std::ffi::{c_char, c_void, CStr, CString};

use pgrx::guc::{GucContext, GucFlags, GucRegistry, GucSetting};
use pgrx::pg_sys;
use pgrx::prelude::*;

use employes_sync_core::client::{validate_base_url, ClientConfig};

pub static BASE_URL: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c"https://connect.employes.nl/v4"));
pub static COMPANY_ID: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
pub static DATABASE_NAME: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c"postgres"));
pub static API_TOKEN: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
pub static REQUESTS_PER_SECOND: GucSetting<f64> = GucSetting::<f64>::new(5.0);
pub static CONNECT_TIMEOUT_MS: GucSetting<i32> = GucSetting::<i32>::new(10_000);
pub static REQUEST_TIMEOUT_MS: GucSetting<i32> = GucSetting::<i32>::new(30_000);
pub static MAX_RETRIES: GucSetting<i32> = GucSetting::<i32>::new(5);
pub static CONCURRENCY: GucSetting<i32> = GucSetting::<i32>::new(4);
pub static PER_PAGE: GucSetting<i32> = GucSetting::<i32>::new(100);
pub static LOG_RETENTION_DAYS: GucSetting<i32> = GucSetting::<i32>::new(30);
pub static RETRY_AFTER_MAX_SECONDS: GucSetting<i32> = GucSetting::<i32>::new(300);
pub static THROTTLE_MAX_WAIT_SECONDS: GucSetting<i32> = GucSetting::<i32>::new(600);
pub static WEBHOOK_MAX_ATTEMPTS: GucSetting<i32> = GucSetting::<i32>::new(13);
pub static WEBHOOK_BACKOFF_BASE_MS: GucSetting<i32> = GucSetting::<i32>::new(60_000);
pub static WEBHOOK_TIMEOUT_MS: GucSetting<i32> = GucSetting::<i32>::new(10_000);
pub static RAW_RETENTION_DAYS: GucSetting<i32> = GucSetting::<i32>::new(0);
pub static FORMER_EMPLOYEE_RETENTION_DAYS: GucSetting<i32> = GucSetting::<i32>::new(0);
pub static HOUSEKEEPING_INTERVAL: GucSetting<i32> = GucSetting::<i32>::new(3_600);

pub fn init() {
    unsafe {
        GucRegistry::define_string_guc_with_hooks(
            c"employes_sync.base_url",
            c"Base URL of the Employes API (http or https).",
            c"Superuser-only: the API token is sent there. Point it at employes-sim for tests and demos.",
            &BASE_URL,
            GucContext::Suset,
            GucFlags::SUPERUSER_ONLY,
            Some(check_base_url),
            None,
            None,
        );
        GucRegistry::define_string_guc_with_hooks(
            c"employes_sync.company_id",
            c"Employes company (administration) UUID to sync.",
            c"",
            &COMPANY_ID,
            GucContext::Suset,
            GucFlags::SUPERUSER_ONLY,
            Some(check_company_id),
            None,
            None,
        );
        GucRegistry::define_string_guc_with_hooks(
            c"employes_sync.api_token",
            c"Employes API token (JWT). Never shown, logged or put in an error.",
            c"",
            &API_TOKEN,
            GucContext::Suset,
            GucFlags::SUPERUSER_ONLY | GucFlags::NO_SHOW_ALL | GucFlags::NO_RESET_ALL,
            None,
            None,
            Some(show_token),
        );
    }
    GucRegistry::define_string_guc(
        c"employes_sync.database_name",
        c"Database where the extension lives, watched for sessions left behind by a restart or a killed worker.",
        c"Read when the watchdog starts (server start, or after a crash), like cron.database_name.",
        &DATABASE_NAME,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_float_guc(
        c"employes_sync.requests_per_second",
        c"Most requests per second sent to the Employes API, across all requests of a sync.",
        c"",
        &REQUESTS_PER_SECOND,
        0.1,
        10_000.0,
        GucContext::Suset,
        GucFlags::default(),
    );
    type IntGuc = (
        &'static CStr,
        &'static CStr,
        &'static GucSetting<i32>,
        i32,
        i32,
        GucFlags,
    );
    let ints: [IntGuc; 14] = [
        (c"employes_sync.connect_timeout_ms", c"Timeout to connect to the API.", &CONNECT_TIMEOUT_MS, 100, 600_000, GucFlags::UNIT_MS),
        (c"employes_sync.request_timeout_ms", c"Timeout of one API request, body included.", &REQUEST_TIMEOUT_MS, 100, 3_600_000, GucFlags::UNIT_MS),
        (c"employes_sync.max_retries", c"Retries of a request after 429, 5xx, timeouts and resets.", &MAX_RETRIES, 0, 20, GucFlags::default()),
        (c"employes_sync.concurrency", c"HTTP connections used in parallel (always within requests_per_second).", &CONCURRENCY, 1, 32, GucFlags::default()),
        (c"employes_sync.per_page", c"Employees per list page requested (the API caps it at 100).", &PER_PAGE, 1, 100, GucFlags::default()),
        (c"employes_sync.retry_after_max_seconds", c"Longest wait a 429's Retry-After (seconds or an HTTP date) is honoured for; a longer one is cut to this.", &RETRY_AFTER_MAX_SECONDS, 1, 86_400, GucFlags::UNIT_S),
        (c"employes_sync.throttle_max_wait_seconds", c"Longest a request waits in all on 429s: throttling does not use up max_retries, this bounds it instead.", &THROTTLE_MAX_WAIT_SECONDS, 1, 86_400, GucFlags::UNIT_S),
        (c"employes_sync.log_retention_days", c"Days employes_sync_logs rows (and finished webhook deliveries) are kept (0 = forever); history tables are never pruned.", &LOG_RETENTION_DAYS, 0, 36_500, GucFlags::default()),
        (c"employes_sync.webhook_max_attempts", c"Attempts of a webhook delivery before it is dead (the default, with a 60 s base, spans more than a day).", &WEBHOOK_MAX_ATTEMPTS, 1, 100, GucFlags::default()),
        (c"employes_sync.webhook_backoff_base_ms", c"Wait before a webhook delivery's second attempt; doubled for each further one, at most 6 hours, plus up to a quarter at random.", &WEBHOOK_BACKOFF_BASE_MS, 10, 3_600_000, GucFlags::UNIT_MS),
        (c"employes_sync.webhook_timeout_ms", c"Timeout of one webhook POST, answer included.", &WEBHOOK_TIMEOUT_MS, 100, 300_000, GucFlags::UNIT_MS),
        (c"employes_sync.raw_retention_days", c"Days a superseded raw version keeps its payload after it was replaced (0 = forever); its changes keep their values.", &RAW_RETENTION_DAYS, 0, 36_500, GucFlags::default()),
        (c"employes_sync.former_employee_retention_days", c"Days after they left that former employees are forgotten (employes_forget_employee) by the watchdog (0 = never).", &FORMER_EMPLOYEE_RETENTION_DAYS, 0, 36_500, GucFlags::default()),
        (c"employes_sync.housekeeping_interval", c"How often the watchdog applies the retention settings and checks the tokens' expiry.", &HOUSEKEEPING_INTERVAL, 1, 86_400, GucFlags::UNIT_S),
    ];
    for (name, short, setting, min, max, flags) in ints {
        GucRegistry::define_int_guc(
            name,
            short,
            c"",
            setting,
            min,
            max,
            GucContext::Suset,
            flags,
        );
    }
}

fn string(setting: &GucSetting<Option<CString>>) -> String {
    setting
        .get()
        .map(|c| c.to_string_lossy().into_owned())
        .unwrap_or_default()
}

pub fn database_name() -> String {
    string(&DATABASE_NAME)
}

/// The token of `employes_sync.api_token`, as a sync sends it (main thread only).
pub fn api_token() -> String {
    string(&API_TOKEN).trim().to_owned()
}

/// The client configuration from the current settings (main thread only).
pub fn client_config() -> ClientConfig {
    ClientConfig {
        base_url: string(&BASE_URL),
        company_id: string(&COMPANY_ID).trim().to_owned(),
        token: api_token(),
        requests_per_second: REQUESTS_PER_SECOND.get(),
        connect_timeout: std::time::Duration::from_millis(CONNECT_TIMEOUT_MS.get() as u64),
        request_timeout: std::time::Duration::from_millis(REQUEST_TIMEOUT_MS.get() as u64),
        max_retries: MAX_RETRIES.get() as u32,
        per_page: PER_PAGE.get() as u32,
        retry_after_max: std::time::Duration::from_secs(RETRY_AFTER_MAX_SECONDS.get() as u64),
        throttle_max: std::time::Duration::from_secs(THROTTLE_MAX_WAIT_SECONDS.get() as u64),
        ..ClientConfig::default()
    }
}

unsafe fn reject(detail: &str) -> bool {
    let detail = CString::new(detail).unwrap_or_default();
    unsafe {
        pg_sys::GUC_check_errcode(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE as i32);
        pg_sys::GUC_check_errdetail_string = pg_sys::pstrdup(detail.as_ptr());
    }
    false
}

unsafe fn new_value(newval: *mut *mut c_char) -> Option<String> {
    unsafe {
        if newval.is_null() || (*newval).is_null() {
            None
        } else {
            Some(CStr::from_ptr(*newval).to_string_lossy().into_owned())
        }
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn check_base_url(
    newval: *mut *mut c_char,
    _extra: *mut *mut c_void,
    _source: pg_sys::GucSource::Type,
) -> bool {
    match unsafe { new_value(newval) } {
        None => true,
        Some(v) => match validate_base_url(&v) {
            Ok(()) => true,
            Err(e) => unsafe { reject(&e) },
        },
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn check_company_id(
    newval: *mut *mut c_char,
    _extra: *mut *mut c_void,
    _source: pg_sys::GucSource::Type,
) -> bool {
    match unsafe { new_value(newval) } {
        None => true,
        Some(v) if v.trim().is_empty() || is_uuid(v.trim()) => true,
        Some(_) => unsafe {
            reject("employes_sync.company_id must be a UUID such as 5f1c6a4e-1c1f-4b8e-9a53-2b7d3f0e9a11")
        },
    }
}

fn is_uuid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| {
            if [8, 13, 18, 23].contains(&i) {
                *c == b'-'
            } else {
                c.is_ascii_hexdigit()
            }
        })
}

#[pg_guard]
unsafe extern "C-unwind" fn show_token() -> *const c_char {
    let set = unsafe { !API_TOKEN.as_ptr().read().is_null() && *API_TOKEN.as_ptr().read() != 0 };
    if set {
        c"********".as_ptr()
    } else {
        c"".as_ptr()
    }
}

static mut PREV_EMIT_LOG_HOOK: pg_sys::emit_log_hook_type = None;

/// Keeps tokens out of the server log. PostgreSQL itself logs `parameter "..." changed to
/// "<value>"` in the postmaster when a reload changes a setting, and `log_statement` (or
/// `log_min_duration_statement`) logs an `ALTER SYSTEM SET employes_sync.api_token = ...` or a
/// `SELECT employes_sync_add_company(..., '<token>')` verbatim, with the values of its
/// parameters in the detail. The hook (installed from `shared_preload_libraries`, so it runs in
/// the postmaster too) masks the setting's token in every message and detail, and of a statement
/// that may carry a token (one naming the setting or a function that takes a company's token)
/// hides the text, its parameters and the `STATEMENT:` line of any report about it; so of a
/// statement that subscribes a webhook (it may carry the signing secret).
pub fn install_log_redaction() {
    unsafe {
        PREV_EMIT_LOG_HOOK = pg_sys::emit_log_hook;
        pg_sys::emit_log_hook = Some(redact_token_in_log);
    }
}

/// What a statement that may carry a token (or a webhook's signing secret) names.
const CARRIES_TOKEN: [&str; 4] = [
    "employes_sync.api_token",
    "employes_sync_add_company",
    "employes_sync_set_company_token",
    "employes_webhook_subscribe",
];

fn carries_token(text: &str) -> bool {
    let lower = text.to_ascii_lowercase();
    CARRIES_TOKEN.iter().any(|m| lower.contains(m))
}

/// A message that logs a statement's text: `statement: ...`, `execute <name>: ...`,
/// `duration: ... ms  statement: ...`, `duration: ... ms  execute ...`, `parse/bind ...`.
fn logs_statement(text: &str) -> bool {
    let after_duration = text
        .strip_prefix("duration: ")
        .and_then(|t| t.split_once("  ").map(|(_, rest)| rest))
        .unwrap_or(text);
    ["statement: ", "execute ", "parse ", "bind "]
        .iter()
        .any(|p| after_duration.starts_with(p))
}

/// The masked text of one message field, or None to leave it as it is.
fn redacted(text: &str, token: &str, secret_statement: bool) -> Option<String> {
    let about_setting = text.contains("employes_sync.api_token");
    if about_setting && text.starts_with("parameter ") && text.contains("changed to") {
        return Some("parameter \"employes_sync.api_token\" changed to \"********\"".to_owned());
    }
    if logs_statement(text) && (secret_statement || carries_token(text) || text.contains(token)) {
        return Some(
            "statement: (not logged: it may carry an Employes API token or a webhook secret)"
                .to_owned(),
        );
    }
    if secret_statement && text.starts_with("parameters: ") {
        return Some(
            "parameters: (not logged: they may carry an Employes API token or a webhook secret)"
                .to_owned(),
        );
    }
    text.contains(token)
        .then(|| text.replace(token, "********"))
}

unsafe fn redact_field(field: *mut *mut c_char, token: &str, secret_statement: bool) -> bool {
    unsafe {
        if field.is_null() || (*field).is_null() {
            return false;
        }
        let text = CStr::from_ptr(*field).to_string_lossy();
        let Some(masked) = redacted(&text, token, secret_statement) else {
            return false;
        };
        let masked = CString::new(masked).unwrap_or_default();
        *field = pg_sys::pstrdup(masked.as_ptr());
        true
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn redact_token_in_log(edata: *mut pg_sys::ErrorData) {
    unsafe {
        if !edata.is_null() {
            let token = string(&API_TOKEN).trim().to_owned();
            // Too short to search for: match nothing (a NUL never occurs in a message).
            let token = if token.len() >= 4 {
                token
            } else {
                "\0".to_owned()
            };
            let secret = debug_query_mentions(&token);
            let mut hit = redact_field(&mut (*edata).message, &token, secret);
            hit |= redact_field(&mut (*edata).detail, &token, secret);
            hit |= redact_field(&mut (*edata).detail_log, &token, secret);
            hit |= redact_field(&mut (*edata).context, &token, secret);
            if hit || secret {
                (*edata).hide_stmt = true;
            }
        }
        if let Some(prev) = PREV_EMIT_LOG_HOOK {
            prev(edata);
        }
    }
}

/// Whether the statement being run may carry a token.
unsafe fn debug_query_mentions(token: &str) -> bool {
    unsafe {
        let q = pg_sys::debug_query_string;
        !q.is_null() && {
            let q = CStr::from_ptr(q).to_string_lossy();
            q.contains(token) || carries_token(&q)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::redacted;

    #[test]
    fn statements_that_may_carry_a_token_are_not_logged() {
        let hidden = Some(
            "statement: (not logged: it may carry an Employes API token or a webhook secret)"
                .to_owned(),
        );
        for text in [
            "statement: SELECT employes_sync_add_company('5f1c6a4e-1c1f-4b8e-9a53-2b7d3f0e9a11', 'A', 'tok-123456')",
            "statement: select EMPLOYES_SYNC_SET_COMPANY_TOKEN($1, $2)",
            "execute <unnamed>: SELECT employes_sync_add_company($1, $2, $3)",
            "duration: 1.234 ms  statement: ALTER SYSTEM SET employes_sync.api_token = 'abc'",
            "duration: 0.5 ms  execute s1: SELECT employes_sync_set_company_token($1, $2)",
            "statement: SELECT 'the-setting-token'",
            "statement: SELECT * FROM employes_webhook_subscribe('https://x.example', NULL, 'whsec_abc')",
        ] {
            assert_eq!(redacted(text, "the-setting-token", false), hidden, "{text}");
        }
        assert_eq!(
            redacted("parameters: $1 = 'x', $2 = 'tok-123456'", "zzzz", true).as_deref(),
            Some("parameters: (not logged: they may carry an Employes API token or a webhook secret)")
        );
        // Anything else is left alone, but for the setting's token.
        assert_eq!(
            redacted("statement: SELECT employes_sync_trigger()", "zzzz", false),
            None
        );
        assert_eq!(redacted("parameters: $1 = 'x'", "zzzz", false), None);
        assert_eq!(
            redacted("could not connect with abcd-tok", "abcd-tok", false).as_deref(),
            Some("could not connect with ********")
        );
        assert_eq!(
            redacted(
                "parameter \"employes_sync.api_token\" changed to \"s3cret\"",
                "zz\0",
                false
            )
            .as_deref(),
            Some("parameter \"employes_sync.api_token\" changed to \"********\"")
        );
    }

    #[test]
    fn uuids_are_recognised() {
        assert!(super::is_uuid("5f1c6a4e-1c1f-4b8e-9a53-2b7d3f0e9a11"));
        assert!(!super::is_uuid("5f1c6a4e1c1f4b8e9a532b7d3f0e9a11"));
        assert!(!super::is_uuid("not-a-uuid"));
    }
}
