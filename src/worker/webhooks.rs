//! The webhook worker: a long-lived background worker (started with the server, restarted after
//! a crash, idle on a standby until it is promoted) that delivers the events to the webhook
//! subscriptions. Each round, in short transactions of its own that never touch the history:
//! it queues the new events of each subscription as deliveries, reads the deliveries that are
//! due, POSTs them with no transaction open (each one event, signed as Standard Webhooks says),
//! and records what each answer means: delivered, failed for good (a 3xx or 4xx other than 408
//! and 429), or another attempt after a backoff, up to `employes_sync.webhook_max_attempts`
//! (then `dead`). Pending deliveries live in a table, so a restart loses nothing.

use std::time::{Duration, Instant};

use pgrx::bgworkers::{
    BackgroundWorker, BackgroundWorkerBuilder, BgWorkerStartTime, SignalWakeFlags,
};
use pgrx::pg_sys;
use pgrx::prelude::*;

use employes_sync_core::sync::StoreError;
use employes_sync_core::webhook::{self, Attempt, Message};

use super::spi::{in_tx, spi_err};
use super::SQL_VERSION;
use crate::guc;

/// Deliveries sent per round, and in parallel.
const ROUND: i64 = 200;
const PARALLEL: usize = 4;
/// The longest the worker sleeps when nothing is due; when there is no active subscription.
const IDLE: Duration = Duration::from_millis(1000);
const IDLE_UNSUBSCRIBED: Duration = Duration::from_secs(2);

pub fn register_webhook_worker() {
    BackgroundWorkerBuilder::new("employes_sync webhooks")
        .set_type("employes_sync webhooks")
        .set_library("employes_sync")
        .set_function("employes_sync_webhooks_main")
        .enable_spi_access()
        .set_start_time(BgWorkerStartTime::RecoveryFinished)
        .set_restart_time(Some(Duration::from_secs(10)))
        .load();
}

#[pg_guard]
#[no_mangle]
pub extern "C-unwind" fn employes_sync_webhooks_main(_arg: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    let db = guc::database_name();
    BackgroundWorker::connect_worker_to_spi(Some(&db), None);
    let mut pruned = Instant::now() - Duration::from_secs(3600);
    loop {
        if BackgroundWorker::sighup_received() {
            // SAFETY: the documented way for a background worker to re-read its settings.
            unsafe { pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP) };
        }
        let wait = match ready() {
            Ok(true) => {
                if pruned.elapsed() >= Duration::from_secs(3600) {
                    prune();
                    pruned = Instant::now();
                }
                match round() {
                    Ok(wait) => wait,
                    Err(e) => {
                        pgrx::log!("employes_sync webhooks: {e}");
                        Duration::from_secs(5)
                    }
                }
            }
            Ok(false) => Duration::from_secs(5),
            Err(e) => {
                pgrx::log!("employes_sync webhooks: {e}");
                Duration::from_secs(5)
            }
        };
        if !BackgroundWorker::wait_latch(Some(wait)) {
            return;
        }
    }
}

/// Whether the extension is installed here at this library's version (its tables are then the
/// ones this code knows); sets the search path to its schema.
fn ready() -> Result<bool, StoreError> {
    in_tx(|| {
        let (schema, version) = Spi::get_two::<String, String>(
            "SELECT (SELECT n.nspname::text FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
                      WHERE e.extname = 'employes_sync'),
                    (SELECT e.extversion::text FROM pg_extension e WHERE e.extname = 'employes_sync')",
        )
        .map_err(spi_err)?;
        let (Some(schema), Some(version)) = (schema, version) else {
            return Ok(false);
        };
        if version != SQL_VERSION {
            return Ok(false);
        }
        Spi::run_with_args(
            "SELECT set_config('search_path', quote_ident($1) || ', pg_catalog', false)",
            &[schema.into()],
        )
        .map_err(spi_err)?;
        Ok(true)
    })
}

/// Queues the new events of every subscription, sends what is due, records the answers;
/// returns how long to wait before the next round.
fn round() -> Result<Duration, StoreError> {
    let active = in_tx(|| Spi::get_one::<i64>(ENQUEUE).map_err(spi_err))?.unwrap_or(0);
    if active == 0 {
        return Ok(IDLE_UNSUBSCRIBED);
    }
    let due = in_tx(|| {
        let mut out = Vec::new();
        Spi::connect(|c| {
            for row in c.select(DUE, None, &[ROUND.into()]).map_err(spi_err)? {
                out.push(Due {
                    delivery: row.get(1).map_err(spi_err)?.unwrap_or_default(),
                    attempts: row.get(2).map_err(spi_err)?.unwrap_or_default(),
                    url: row.get(3).map_err(spi_err)?.unwrap_or_default(),
                    secret: row.get(4).map_err(spi_err)?.unwrap_or_default(),
                    event: row.get(5).map_err(spi_err)?.unwrap_or_default(),
                    body: row.get(6).map_err(spi_err)?.unwrap_or_default(),
                });
            }
            Ok::<_, StoreError>(())
        })?;
        Ok(out)
    })?;
    if !due.is_empty() {
        let sent = send_all(&due);
        record(&due, &sent)?;
    }
    // Sooner when something is due before the idle wait is over (a retry's backoff).
    let next = in_tx(|| {
        Spi::get_one::<f64>(
            "SELECT extract(epoch FROM min(next_attempt_at) - clock_timestamp())::float8
               FROM employes_webhook_deliveries WHERE status = 'pending'",
        )
        .map_err(spi_err)
    })?;
    Ok(match next {
        Some(s) if s <= 0.0 => Duration::from_millis(10),
        Some(s) => Duration::from_secs_f64(s).min(IDLE),
        None => IDLE,
    })
}

/// The new events of each active subscription become its deliveries (of the types it chose),
/// in id order; its cursor moves past every event it has seen. Writers of events commit in id
/// order (`employes_events_lock`), so an event below the cursor can never appear later.
const ENQUEUE: &str = "
WITH subs AS (
    SELECT s.id, s.event_types, s.last_event_id FROM employes_webhook_subscriptions s WHERE s.unsubscribed_at IS NULL
), next AS (
    SELECT s.id AS subscription_id, s.event_types, e.id AS event_id, e.event_type
      FROM subs s
      CROSS JOIN LATERAL (SELECT e.id, e.event_type FROM employes_events e
                           WHERE e.id > s.last_event_id ORDER BY e.id LIMIT 10000) e
), queued AS (
    INSERT INTO employes_webhook_deliveries (subscription_id, event_id, next_attempt_at)
    SELECT n.subscription_id, n.event_id, clock_timestamp() FROM next n
     WHERE n.event_types IS NULL OR n.event_type = ANY (n.event_types)
     ORDER BY n.subscription_id, n.event_id
    ON CONFLICT (subscription_id, event_id) DO NOTHING
), moved AS (
    UPDATE employes_webhook_subscriptions s SET last_event_id = m.last
      FROM (SELECT n.subscription_id, max(n.event_id) AS last FROM next n GROUP BY 1) m
     WHERE s.id = m.subscription_id AND s.unsubscribed_at IS NULL
), dropped AS (
    -- A subscription unsubscribed while this ran gets nothing more.
    UPDATE employes_webhook_deliveries d SET status = 'failed', next_attempt_at = NULL,
           last_error = 'unsubscribed before it was delivered'
      FROM employes_webhook_subscriptions s
     WHERE d.status = 'pending' AND s.id = d.subscription_id AND s.unsubscribed_at IS NOT NULL
)
SELECT count(*) FROM subs";

/// The deliveries due now, oldest due first, with what to send.
const DUE: &str = "
SELECT d.id, d.attempts, s.url, s.secret, e.id,
       jsonb_build_object(
           'type', e.event_type,
           'timestamp', to_char(e.occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'),
           'data', jsonb_build_object('event_id', e.id, 'company_id', e.company_id, 'session_id', e.session_id,
                                      'employee_id', e.employee_id, 'data', e.data))::text
  FROM employes_webhook_deliveries d
  JOIN employes_webhook_subscriptions s ON s.id = d.subscription_id AND s.unsubscribed_at IS NULL
  JOIN employes_events e ON e.id = d.event_id
 WHERE d.status = 'pending' AND d.next_attempt_at <= clock_timestamp()
 ORDER BY d.next_attempt_at, d.id
 LIMIT $1";

/// One delivery to make.
struct Due {
    delivery: i64,
    attempts: i32,
    url: String,
    secret: String,
    event: i64,
    body: String,
}

/// Sends every due delivery, a few at a time, with no transaction open.
fn send_all(due: &[Due]) -> Vec<Attempt> {
    let agent = webhook::agent(Duration::from_millis(
        guc::WEBHOOK_TIMEOUT_MS.get().max(1) as u64
    ));
    let mut out: Vec<Option<Attempt>> = vec![None; due.len()];
    let chunk = due.len().div_ceil(PARALLEL).max(1);
    std::thread::scope(|scope| {
        for (part, results) in due.chunks(chunk).zip(out.chunks_mut(chunk)) {
            let agent = agent.clone();
            scope.spawn(move || {
                for (d, slot) in part.iter().zip(results.iter_mut()) {
                    *slot = Some(match webhook::secret_key(&d.secret) {
                        None => Attempt::Failed {
                            status: 0,
                            error: "the subscription's secret is not a Standard Webhooks secret"
                                .into(),
                        },
                        Some(key) => webhook::send(
                            &agent,
                            &Message {
                                url: &d.url,
                                id: &format!("msg_{}", d.event),
                                key: &key,
                                body: &d.body,
                            },
                        ),
                    });
                }
            });
        }
    });
    out.into_iter()
        .map(|a| {
            a.unwrap_or(Attempt::Retry {
                status: None,
                error: "not sent".into(),
                retry_after: None,
            })
        })
        .collect()
}

/// Records each answer: delivered, failed, or pending again after a backoff (dead after the
/// last attempt). A delivery that changed meanwhile (unsubscribed) is left as it is.
fn record(due: &[Due], sent: &[Attempt]) -> Result<(), StoreError> {
    let max_attempts = guc::WEBHOOK_MAX_ATTEMPTS.get().max(1);
    let base = Duration::from_millis(guc::WEBHOOK_BACKOFF_BASE_MS.get().max(1) as u64);
    let mut ids = Vec::new();
    let mut status = Vec::new();
    let mut attempts = Vec::new();
    let mut wait = Vec::new();
    let mut http = Vec::new();
    let mut error = Vec::new();
    for (d, a) in due.iter().zip(sent) {
        let made = d.attempts + 1;
        let (s, w, h, e) = match a {
            Attempt::Delivered { status } => ("delivered", None, Some(*status as i32), None),
            Attempt::Failed { status, error } => (
                "failed",
                None,
                (*status > 0).then_some(*status as i32),
                Some(error.clone()),
            ),
            Attempt::Retry {
                status,
                error,
                retry_after,
            } => {
                let h = status.map(|s| s as i32);
                if made >= max_attempts {
                    ("dead", None, h, Some(error.clone()))
                } else {
                    let next = webhook::backoff(base, made as u32 + 1, jitter(), *retry_after);
                    ("pending", Some(next.as_secs_f64()), h, Some(error.clone()))
                }
            }
        };
        ids.push(d.delivery);
        status.push(s.to_owned());
        attempts.push(made);
        wait.push(w);
        http.push(h);
        error.push(e);
    }
    in_tx(move || {
        Spi::run_with_args(
            "UPDATE employes_webhook_deliveries d
                SET status = u.status, attempts = u.attempts, last_status = u.http, last_error = u.error,
                    next_attempt_at = CASE WHEN u.status = 'pending' THEN clock_timestamp() + make_interval(secs => u.wait) END,
                    delivered_at = CASE WHEN u.status = 'delivered' THEN clock_timestamp() ELSE d.delivered_at END
               FROM unnest($1::bigint[], $2::text[], $3::integer[], $4::float8[], $5::integer[], $6::text[])
                    AS u (id, status, attempts, wait, http, error)
              WHERE d.id = u.id AND d.status = 'pending'",
            &[
                ids.clone().into(),
                status.clone().into(),
                attempts.clone().into(),
                wait.clone().into(),
                http.clone().into(),
                error.clone().into(),
            ],
        )
        .map_err(spi_err)
    })
}

/// 0..1, different on every call (for the backoff's jitter).
fn jitter() -> f64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    (nanos.wrapping_mul(2_654_435_761) % 1_000_000) as f64 / 1_000_000.0
}

/// Deletes finished deliveries older than `employes_sync.log_retention_days` (0: keeps them).
fn prune() {
    let days = guc::LOG_RETENTION_DAYS.get();
    if days <= 0 {
        return;
    }
    let pruned = in_tx(move || {
        Spi::run_with_args(
            "DELETE FROM employes_webhook_deliveries
              WHERE status <> 'pending' AND coalesce(delivered_at, created_at) < clock_timestamp() - make_interval(days => $1)",
            &[days.into()],
        )
        .map_err(spi_err)
    });
    if let Err(e) = pruned {
        pgrx::log!("employes_sync webhooks: pruning deliveries: {e}");
    }
}
