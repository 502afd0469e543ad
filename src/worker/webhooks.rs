//! The webhook worker: a long-lived background worker (started with the server, restarted after
//! a crash, idle on a standby until it is promoted) that delivers the events to the webhook
//! subscriptions. Each round, in short transactions of its own that never touch the history:
//! it queues the new events of each subscription as deliveries, reads the deliveries that are
//! due, POSTs them with no transaction open (each one event, signed as Standard Webhooks says),
//! and records what each answer means: delivered, failed for good (a 3xx or 4xx other than 408
//! and 429), or another attempt after a backoff, up to `employes_sync.webhook_max_attempts`
//! (then `dead`). Pending deliveries live in a table, so a restart loses nothing.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use pgrx::bgworkers::{BackgroundWorker, SignalWakeFlags};
use pgrx::pg_sys;
use pgrx::prelude::*;

use employes_sync_core::sync::StoreError;
use employes_sync_core::webhook::{self, Attempt, Message, Outgoing, Sent, Stops};

use super::session;
use super::spi::{in_tx, spi_err};
use super::SQL_VERSION;
use crate::guc;

/// Deliveries sent per round, and in parallel; how often the worker looks, while they are sent,
/// for a shutdown or a subscription that ended.
const ROUND: i64 = 500;
const PARALLEL: usize = 4;
const WATCH: Duration = Duration::from_millis(100);

/// Set once a SIGTERM was seen while sending (pgrx's signal flag is read only once).
static STOPPING: AtomicBool = AtomicBool::new(false);
/// The longest the worker sleeps when nothing is due; when there is no active subscription.
const IDLE: Duration = Duration::from_millis(1000);
const IDLE_UNSUBSCRIBED: Duration = Duration::from_secs(2);

pub fn register_webhook_worker() {
    super::register_long_lived("employes_sync webhooks", "employes_sync_webhooks_main");
}

#[pg_guard]
#[no_mangle]
pub extern "C-unwind" fn employes_sync_webhooks_main(_arg: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    let db = guc::database_name();
    BackgroundWorker::connect_worker_to_spi(Some(&db), None);
    let mut pruned = Instant::now() - Duration::from_secs(3600);
    loop {
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
        if STOPPING.load(Ordering::SeqCst) || !sleep(wait) {
            return;
        }
    }
}

/// Sleeps for `wait`, through wake-ups that are not a signal to this worker (the latch is also
/// set by catch-up interrupts while other sessions work); false on SIGTERM.
fn sleep(wait: Duration) -> bool {
    let until = Instant::now() + wait;
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return true;
        }
        if !BackgroundWorker::wait_latch(Some(left)) {
            return false;
        }
        if BackgroundWorker::sighup_received() {
            // SAFETY: the documented way for a background worker to re-read its settings.
            unsafe { pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP) };
        }
    }
}

/// Whether the extension is installed here at this library's version (its tables are then the
/// ones this code knows), the session then set up as a sync's worker is (`session::prepare`).
fn ready() -> Result<bool, StoreError> {
    Ok(session::prepare()?.as_deref() == Some(SQL_VERSION))
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
                    id: row.get(5).map_err(spi_err)?.unwrap_or_default(),
                    body: row.get(6).map_err(spi_err)?.unwrap_or_default(),
                    subscription: row.get(7).map_err(spi_err)?.unwrap_or_default(),
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
            "SELECT extract(epoch FROM min(d.next_attempt_at) - clock_timestamp())::float8
               FROM employes_webhook_subscriptions s
               CROSS JOIN LATERAL (SELECT d.next_attempt_at FROM employes_webhook_deliveries d
                                    WHERE d.subscription_id = s.id AND d.status = 'pending'
                                    ORDER BY d.next_attempt_at LIMIT 1) d
              WHERE s.unsubscribed_at IS NULL",
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

/// The deliveries due now, each subscription's oldest first, the subscriptions taking turns (so
/// one with a long backlog does not hold up the others), with what to send. The `webhook-id` is
/// `msg_<server's system identifier>_<event id>`: the same on every attempt and redelivery, and
/// still unique when a copy of the database restored on another server sends too.
const DUE: &str = "
WITH due AS (
    SELECT d.id, d.attempts, d.subscription_id, d.event_id, d.next_attempt_at,
           row_number() OVER (PARTITION BY d.subscription_id ORDER BY d.next_attempt_at, d.id) AS turn
      FROM employes_webhook_subscriptions s
      CROSS JOIN LATERAL (SELECT d.id, d.attempts, d.subscription_id, d.event_id, d.next_attempt_at
                            FROM employes_webhook_deliveries d
                           WHERE d.subscription_id = s.id AND d.status = 'pending'
                             AND d.next_attempt_at <= clock_timestamp()
                           ORDER BY d.next_attempt_at, d.id
                           LIMIT $1) d
     WHERE s.unsubscribed_at IS NULL
)
SELECT d.id, d.attempts, s.url, s.secret,
       format('msg_%s_%s', (SELECT c.system_identifier FROM pg_control_system() c), e.id),
       jsonb_build_object(
           'type', e.event_type,
           'timestamp', to_char(e.occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'),
           'data', jsonb_build_object('event_id', e.id, 'company_id', e.company_id, 'session_id', e.session_id,
                                      'employee_id', e.employee_id, 'data', e.data))::text,
       s.id::text
  FROM due d
  JOIN employes_webhook_subscriptions s ON s.id = d.subscription_id
  JOIN employes_events e ON e.id = d.event_id
 ORDER BY d.turn, d.next_attempt_at, d.id
 LIMIT $1";

/// One delivery to make.
struct Due {
    delivery: i64,
    attempts: i32,
    url: String,
    secret: String,
    /// The `webhook-id`.
    id: String,
    body: String,
    subscription: String,
}

/// Sends every due delivery, a few at a time, with no transaction open; meanwhile this thread
/// watches for a shutdown and for subscriptions that end, whose deliveries are then not sent.
fn send_all(due: &[Due]) -> Vec<Sent> {
    let agent = webhook::agent(Duration::from_millis(
        guc::WEBHOOK_TIMEOUT_MS.get().max(1) as u64
    ));
    let keys: Vec<Option<Vec<u8>>> = due.iter().map(|d| webhook::secret_key(&d.secret)).collect();
    let items: Vec<Outgoing<'_>> = due
        .iter()
        .zip(&keys)
        .map(|(d, key)| Outgoing {
            subscription: &d.subscription,
            message: Message {
                url: &d.url,
                id: &d.id,
                key: key.as_deref().unwrap_or_default(),
                body: &d.body,
            },
        })
        .collect();
    let subscriptions: Vec<String> = due.iter().map(|d| d.subscription.clone()).collect();
    let send = |m: &Message<'_>| {
        if m.key.is_empty() {
            return Attempt::Failed {
                status: 0,
                error: "the subscription's secret is not a Standard Webhooks secret".into(),
            };
        }
        webhook::send(&agent, m)
    };
    webhook::send_round(&items, PARALLEL, backoff_base(), &send, || {
        watch(&subscriptions)
    })
}

/// Waits a moment, then says whether to stop: the server shuts down, or subscriptions of this
/// round were unsubscribed meanwhile.
fn watch(subscriptions: &[String]) -> Stops {
    if !BackgroundWorker::wait_latch(Some(WATCH)) {
        STOPPING.store(true, Ordering::SeqCst);
        return Stops {
            all: true,
            ..Stops::default()
        };
    }
    let ended = in_tx(|| {
        let mut out = std::collections::HashSet::new();
        Spi::connect(|c| {
            let rows = c
                .select(
                    "SELECT id::text FROM employes_webhook_subscriptions
                      WHERE id = ANY ($1::uuid[]) AND unsubscribed_at IS NOT NULL",
                    None,
                    &[subscriptions.to_vec().into()],
                )
                .map_err(spi_err)?;
            for row in rows {
                if let Some(id) = row.get::<String>(1).map_err(spi_err)? {
                    out.insert(id);
                }
            }
            Ok::<_, StoreError>(())
        })?;
        Ok(out)
    });
    Stops {
        all: false,
        subscriptions: ended.unwrap_or_default(),
    }
}

fn backoff_base() -> Duration {
    Duration::from_millis(guc::WEBHOOK_BACKOFF_BASE_MS.get().max(1) as u64)
}

/// Records each answer: delivered, failed, or pending again after a backoff (dead after the
/// last attempt); a deferred delivery waits without an attempt counted; one not sent is left
/// as it is. A delivery that changed meanwhile (unsubscribed) is left as it is. The rows are
/// locked in id order first, as `employes_webhook_unsubscribe` does, so the two never deadlock.
fn record(due: &[Due], sent: &[Sent]) -> Result<(), StoreError> {
    let max_attempts = guc::WEBHOOK_MAX_ATTEMPTS.get().max(1);
    let base = backoff_base();
    let mut ids = Vec::new();
    let mut status = Vec::new();
    let mut attempts = Vec::new();
    let mut wait = Vec::new();
    let mut http = Vec::new();
    let mut error = Vec::new();
    for (d, outcome) in due.iter().zip(sent) {
        let made = d.attempts + 1;
        let (st, n, w, h, e) = match outcome {
            Sent::NotSent => continue,
            Sent::Deferred(w) => ("pending", d.attempts, Some(w.as_secs_f64()), None, None),
            Sent::Attempted(Attempt::Delivered { status }) => {
                ("delivered", made, None, Some(*status as i32), None)
            }
            Sent::Attempted(Attempt::Failed { status, error }) => (
                "failed",
                made,
                None,
                (*status > 0).then_some(*status as i32),
                Some(error.clone()),
            ),
            Sent::Attempted(Attempt::Retry {
                status,
                error,
                retry_after,
            }) => {
                let h = status.map(|s| s as i32);
                if made >= max_attempts {
                    ("dead", made, None, h, Some(error.clone()))
                } else {
                    let next = webhook::backoff(base, made as u32 + 1, jitter(), *retry_after);
                    (
                        "pending",
                        made,
                        Some(next.as_secs_f64()),
                        h,
                        Some(error.clone()),
                    )
                }
            }
        };
        ids.push(d.delivery);
        status.push(st.to_owned());
        attempts.push(n);
        wait.push(w);
        // A deferral keeps what the last attempt said.
        http.push(h);
        error.push(e);
    }
    if ids.is_empty() {
        return Ok(());
    }
    in_tx(move || {
        Spi::run_with_args(
            "WITH locked AS (
                 SELECT d.id FROM employes_webhook_deliveries d
                  WHERE d.id = ANY ($1::bigint[]) AND d.status = 'pending' ORDER BY d.id FOR UPDATE)
             UPDATE employes_webhook_deliveries d
                SET status = u.status, attempts = u.attempts,
                    last_status = CASE WHEN u.attempts > d.attempts THEN u.http ELSE d.last_status END,
                    last_error = CASE WHEN u.attempts > d.attempts THEN u.error ELSE d.last_error END,
                    next_attempt_at = CASE WHEN u.status = 'pending' THEN clock_timestamp() + make_interval(secs => u.wait) END,
                    delivered_at = CASE WHEN u.status = 'delivered' THEN clock_timestamp() ELSE d.delivered_at END
               FROM unnest($1::bigint[], $2::text[], $3::integer[], $4::float8[], $5::integer[], $6::text[])
                    AS u (id, status, attempts, wait, http, error)
              WHERE d.id = u.id AND d.id IN (SELECT id FROM locked)",
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
