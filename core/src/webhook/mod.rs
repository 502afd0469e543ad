//! Webhook deliveries as the Standard Webhooks spec (<https://www.standardwebhooks.com/>) has
//! them: the secret (`whsec_` + base64 of 24 to 64 random bytes), the signature
//! (`v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")>`), the body of one event, one POST
//! and what its answer means (delivered, retry later, failed for good), and the backoff between
//! attempts, and one round of deliveries sent in parallel (`round`). The extension's delivery
//! worker keeps the ledger; this has no Postgres in it.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::text;

mod round;
pub use round::{send_round, Outgoing, Sent, Stops};

/// Bytes of a generated secret's key (the spec asks for 24 to 64).
const KEY_BYTES: usize = 32;

/// A new secret: `whsec_` + base64 of 32 bytes from the operating system's random source.
pub fn new_secret() -> Result<String, String> {
    let mut key = [0u8; KEY_BYTES];
    getrandom::getrandom(&mut key).map_err(|e| format!("no random bytes: {e}"))?;
    Ok(format!("whsec_{}", B64.encode(key)))
}

/// The signing key of a secret, when it is one: `whsec_` + base64 of 24 to 64 bytes.
pub fn secret_key(secret: &str) -> Option<Vec<u8>> {
    let key = B64.decode(secret.strip_prefix("whsec_")?).ok()?;
    (24..=64).contains(&key.len()).then_some(key)
}

/// The `webhook-signature` header: `v1,` + base64 of HMAC-SHA256 over `{id}.{timestamp}.{body}`.
pub fn signature(key: &[u8], id: &str, timestamp: i64, body: &str) -> String {
    // HMAC takes a key of any length.
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts any key length");
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body.as_bytes());
    format!("v1,{}", B64.encode(mac.finalize().into_bytes()))
}

/// What one attempt came to.
#[derive(Debug, Clone, PartialEq)]
pub enum Attempt {
    /// A 2xx.
    Delivered { status: u16 },
    /// Worth another attempt: a connection error, a timeout, 408, 429 (with the wait its
    /// `Retry-After` asks for) or 5xx.
    Retry {
        status: Option<u16>,
        error: String,
        retry_after: Option<Duration>,
    },
    /// A 3xx or another 4xx: the receiver refuses it, another attempt would too.
    Failed { status: u16, error: String },
}

/// One delivery to send.
pub struct Message<'a> {
    pub url: &'a str,
    /// The `webhook-id`: the same on every attempt of the same delivery.
    pub id: &'a str,
    pub key: &'a [u8],
    pub body: &'a str,
}

/// The HTTP agent of the deliveries: no redirects followed (a redirect is the receiver's
/// answer, not an instruction), statuses read rather than raised.
pub fn agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .timeout_global(Some(timeout))
        .user_agent("employes_sync-webhooks")
        .build()
        .into()
}

/// POSTs one message, signed now, and says what the answer means.
pub fn send(agent: &ureq::Agent, m: &Message<'_>) -> Attempt {
    let now = SystemTime::now();
    let timestamp = now
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let result = agent
        .post(m.url)
        .header("content-type", "application/json")
        .header("webhook-id", m.id)
        .header("webhook-timestamp", timestamp.to_string())
        .header(
            "webhook-signature",
            signature(m.key, m.id, timestamp, m.body),
        )
        .send(m.body);
    match result {
        Err(e) => Attempt::Retry {
            status: None,
            error: text::clean(&e.to_string(), 300),
            retry_after: None,
        },
        Ok(mut resp) => {
            let status = resp.status().as_u16();
            let retry_after = resp
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| text::retry_after(v, now));
            let answer = resp
                .body_mut()
                .with_config()
                .limit(4096)
                .read_to_string()
                .unwrap_or_default();
            judge(status, &answer, retry_after)
        }
    }
}

/// What a status means for a delivery.
pub fn judge(status: u16, body: &str, retry_after: Option<Duration>) -> Attempt {
    let error = || {
        let said = text::summarize_body(body);
        if said.is_empty() {
            format!("HTTP {status}")
        } else {
            format!("HTTP {status}: {said}")
        }
    };
    match status {
        200..=299 => Attempt::Delivered { status },
        408 | 429 | 500..=599 => Attempt::Retry {
            status: Some(status),
            error: error(),
            retry_after: if matches!(status, 429 | 503) {
                retry_after
            } else {
                None
            },
        },
        _ => Attempt::Failed {
            status,
            error: error(),
        },
    }
}

/// The longest wait between two attempts.
pub const BACKOFF_MAX: Duration = Duration::from_secs(6 * 3600);

/// The wait before attempt `next` (2, 3, ...): `base` doubled for each attempt made, at most
/// [`BACKOFF_MAX`], with up to a quarter of it added at random (`jitter` in 0..1) so that many
/// receivers coming back do not get everything at once; at least what `Retry-After` asked.
pub fn backoff(base: Duration, next: u32, jitter: f64, retry_after: Option<Duration>) -> Duration {
    let doubled = base.saturating_mul(1u32 << next.saturating_sub(2).min(20));
    let wait = doubled.min(BACKOFF_MAX);
    let wait = wait + wait.mul_f64(jitter.clamp(0.0, 1.0) / 4.0);
    match retry_after {
        Some(ra) => wait.max(ra.min(BACKOFF_MAX)),
        None => wait,
    }
}

/// The least time `attempts` attempts span with this base (no jitter, no `Retry-After`).
pub fn span(base: Duration, attempts: u32) -> Duration {
    (2..=attempts).map(|n| backoff(base, n, 0.0, None)).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The spec's own example (standard-webhooks, libraries' test vectors).
    #[test]
    fn signs_as_the_standard_webhooks_example() {
        let key = secret_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let sig = signature(
            &key,
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            r#"{"test": 2432232314}"#,
        );
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn secrets_are_whsec_and_24_to_64_bytes() {
        let s = new_secret().unwrap();
        assert!(s.starts_with("whsec_"));
        assert_eq!(secret_key(&s).unwrap().len(), 32);
        assert_ne!(s, new_secret().unwrap());
        assert!(secret_key("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").is_none());
        assert!(secret_key("whsec_not base64!").is_none());
        assert!(secret_key(&format!("whsec_{}", B64.encode([0u8; 23]))).is_none());
        assert!(secret_key(&format!("whsec_{}", B64.encode([0u8; 65]))).is_none());
        assert!(secret_key(&format!("whsec_{}", B64.encode([7u8; 64]))).is_some());
    }

    #[test]
    fn answers_mean_delivered_retry_or_failed() {
        assert_eq!(judge(204, "", None), Attempt::Delivered { status: 204 });
        for s in [408, 429, 500, 503] {
            assert!(matches!(judge(s, "", None), Attempt::Retry { .. }), "{s}");
        }
        for s in [301, 400, 401, 404, 410, 422] {
            assert!(matches!(judge(s, "", None), Attempt::Failed { .. }), "{s}");
        }
        let ra = Some(Duration::from_secs(7));
        assert_eq!(
            judge(429, r#"{"message":"slow down"}"#, ra),
            Attempt::Retry {
                status: Some(429),
                error: "HTTP 429: slow down".into(),
                retry_after: ra
            }
        );
        assert!(
            matches!(judge(503, "", ra), Attempt::Retry { retry_after, .. } if retry_after == ra)
        );
        assert!(matches!(
            judge(500, "", ra),
            Attempt::Retry {
                retry_after: None,
                ..
            }
        ));
    }

    #[test]
    fn backoff_doubles_up_to_six_hours_and_honours_retry_after() {
        let base = Duration::from_secs(60);
        assert_eq!(backoff(base, 2, 0.0, None), Duration::from_secs(60));
        assert_eq!(backoff(base, 3, 0.0, None), Duration::from_secs(120));
        assert_eq!(backoff(base, 30, 0.0, None), BACKOFF_MAX);
        assert_eq!(backoff(base, 2, 1.0, None), Duration::from_secs(75));
        assert_eq!(
            backoff(base, 2, 0.0, Some(Duration::from_secs(600))),
            Duration::from_secs(600)
        );
        // The default (13 attempts, 60 s) spans more than a day; 12 would not.
        assert!(
            span(base, 13) >= Duration::from_secs(24 * 3600),
            "{:?}",
            span(base, 13)
        );
        assert!(span(base, 12) < Duration::from_secs(24 * 3600));
    }
}
