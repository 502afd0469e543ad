//! One request's life: paced within the rate limit, sent, its answer judged, retried with
//! backoff and jitter (or after the `Retry-After` the API asked for).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{ApiError, Client};

/// What one request ended in.
pub(super) enum Attempt {
    Done(Value),
    NotFound,
    Retry {
        error: ApiError,
        retry_after: Option<Duration>,
    },
    Fail(ApiError),
}

/// An answer as read off the wire.
struct Answer {
    status: u16,
    retry_after: Option<Duration>,
    location: Option<String>,
    text: String,
}

impl Client {
    /// GET with pacing and retries. `Ok(None)` is a 404. A 429 is the API asking us to wait:
    /// it does not use up `max_retries` as a failure does; the waiting it asks for is bounded by
    /// `throttle_max` instead.
    pub(super) fn get(&self, url: &str) -> Result<Option<Value>, ApiError> {
        let mut attempt = 0u32;
        let mut failures = 0u32;
        let mut throttled = Duration::ZERO;
        loop {
            attempt += 1;
            if !self.pacer.acquire(&self.stop) {
                return Err(ApiError::Stopped);
            }
            self.counters.requests.fetch_add(1, Ordering::Relaxed);
            let (error, retry_after) = match self.attempt(url, attempt) {
                Attempt::Done(v) => return Ok(Some(v)),
                Attempt::NotFound => return Ok(None),
                Attempt::Fail(e) => return Err(e),
                Attempt::Retry { error, retry_after } => (error, retry_after),
            };
            let throttle = matches!(error, ApiError::Status { status: 429, .. });
            if !throttle {
                failures += 1;
                if failures > self.cfg.max_retries {
                    return Err(error);
                }
            }
            let delay = match retry_after {
                Some(ra) => ra + self.jitter(Duration::from_millis(100)),
                None => {
                    let exp = self
                        .cfg
                        .backoff_base
                        .saturating_mul(1 << failures.saturating_sub(1).min(16));
                    let capped = exp.min(self.cfg.backoff_max);
                    capped / 2 + self.jitter(capped / 2)
                }
            };
            if throttle {
                throttled += delay;
                if throttled > self.cfg.throttle_max {
                    return Err(error);
                }
            }
            if let Some(ra) = retry_after {
                self.pacer.push_back(Instant::now() + ra);
            }
            self.counters.retries.fetch_add(1, Ordering::Relaxed);
            if !sleep_until(Instant::now() + delay, &self.stop) {
                return Err(ApiError::Stopped);
            }
        }
    }

    /// The API's own message with the token masked: an API that echoes the credential back
    /// must not put it into a session row, a log line or an error.
    fn redact(&self, message: String) -> String {
        let token = self.cfg.token.trim();
        if token.len() >= 4 && message.contains(token) {
            message.replace(token, "********")
        } else {
            message
        }
    }

    /// One request: its answer, or what to do about it.
    fn attempt(&self, url: &str, attempt: u32) -> Attempt {
        match self.send(url) {
            Ok(answer) => self.judge(url, attempt, answer),
            Err(detail) => Attempt::Retry {
                error: ApiError::Transport {
                    url: url.into(),
                    detail,
                    attempts: attempt,
                },
                retry_after: None,
            },
        }
    }

    /// Sends the request and reads the whole answer; the transport error in words otherwise.
    fn send(&self, url: &str) -> Result<Answer, String> {
        let mut response = self
            .agent
            .get(url)
            .header("Authorization", format!("Bearer {}", self.cfg.token))
            .header("Accept", "application/json")
            .call()
            .map_err(|e| transport_detail(&e))?;
        let status = response.status().as_u16();
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let retry_after = header("retry-after")
            .and_then(|v| crate::text::retry_after(&v, std::time::SystemTime::now()))
            .map(|d| d.min(self.cfg.retry_after_max));
        let location = header("location");
        let text = response
            .body_mut()
            .with_config()
            .limit(256 * 1024 * 1024)
            .read_to_string()
            .map_err(|e| {
                format!(
                    "HTTP {status}, body not fully read: {}",
                    transport_detail(&e)
                )
            })?;
        Ok(Answer {
            status,
            retry_after,
            location,
            text,
        })
    }

    /// What an answer means: the body, no data (404), a retry (429, 5xx, a body that is not
    /// JSON) or a failure (auth, restricted, a redirect, any other status).
    fn judge(&self, url: &str, attempt: u32, answer: Answer) -> Attempt {
        let Answer {
            status,
            retry_after,
            location,
            text,
        } = answer;
        let status_error = |message: String| ApiError::Status {
            url: url.into(),
            status,
            attempts: attempt,
            message,
            body: self.redact(crate::text::excerpt(&text)),
        };
        let message = || self.redact(api_message(&text));
        match status {
            200..=299 => match serde_json::from_str::<Value>(&text) {
                Ok(v) => Attempt::Done(v),
                Err(e) => Attempt::Retry {
                    error: ApiError::Malformed {
                        url: url.into(),
                        detail: json_error(&e),
                        attempts: attempt,
                    },
                    retry_after: None,
                },
            },
            300..=399 => Attempt::Fail(status_error(match location {
                Some(to) => format!(
                    "a redirect to {} (not followed: the token is only sent to employes_sync.base_url)",
                    crate::text::clean(&to, 200)
                ),
                None => "a redirect without a Location (not followed)".into(),
            })),
            404 => Attempt::NotFound,
            401 => Attempt::Fail(ApiError::Auth {
                url: url.into(),
                status,
                message: message(),
                expired_at: self.token_expired_at(),
            }),
            403 => Attempt::Fail(forbidden(url, message())),
            429 => Attempt::Retry {
                error: status_error(message()),
                retry_after: Some(retry_after.unwrap_or(Duration::from_secs(1))),
            },
            500..=599 => Attempt::Retry {
                error: status_error(message()),
                retry_after,
            },
            _ => Attempt::Fail(status_error(message())),
        }
    }

    /// The token's expiry when it has passed (RFC 3339, UTC), for the error of a 401.
    fn token_expired_at(&self) -> Option<String> {
        crate::token::expiry(&self.cfg.token)
            .filter(|at| *at <= chrono::Utc::now())
            .map(|at| at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
    }

    fn jitter(&self, max: Duration) -> Duration {
        // splitmix64: good enough to spread retries, no dependency.
        let mut z = self
            .seed
            .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        max.mul_f64((z >> 11) as f64 / (1u64 << 53) as f64)
    }
}

/// A 403 about the key or the Authorization header fails the sync like a 401; any other is a
/// restricted endpoint.
fn forbidden(url: &str, message: String) -> ApiError {
    let lower = message.to_ascii_lowercase();
    if lower.contains("authorization header")
        || lower.contains("key=value")
        || lower.contains("token")
    {
        ApiError::Auth {
            url: url.into(),
            status: 403,
            message,
            expired_at: None,
        }
    } else {
        ApiError::Restricted {
            url: url.into(),
            message,
        }
    }
}

/// Spaces request start times `1 / rps` apart across all threads; a 429 pushes the next slot
/// back by its `Retry-After` for everyone.
pub(super) struct Pacer {
    interval: Option<Duration>,
    next: Mutex<Instant>,
}

impl Pacer {
    pub(super) fn new(rps: f64) -> Pacer {
        let interval = (rps > 0.0 && rps.is_finite()).then(|| Duration::from_secs_f64(1.0 / rps));
        Pacer {
            interval,
            next: Mutex::new(Instant::now()),
        }
    }

    fn acquire(&self, stop: &AtomicBool) -> bool {
        let slot = {
            let mut next = self.next.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            let slot = (*next).max(now);
            *next = slot + self.interval.unwrap_or_default();
            slot
        };
        sleep_until(slot, stop)
    }

    fn push_back(&self, until: Instant) {
        let mut next = self.next.lock().unwrap_or_else(|e| e.into_inner());
        if *next < until {
            *next = until;
        }
    }
}

/// Sleeps in short steps so a stop request is seen quickly; false when stopped.
fn sleep_until(deadline: Instant, stop: &AtomicBool) -> bool {
    loop {
        if stop.load(Ordering::Relaxed) {
            return false;
        }
        let now = Instant::now();
        if now >= deadline {
            return true;
        }
        std::thread::sleep((deadline - now).min(Duration::from_millis(50)));
    }
}

fn api_message(body: &str) -> String {
    match crate::text::summarize_body(body) {
        s if s.is_empty() => "(empty body)".into(),
        s => s,
    }
}

/// A JSON parser's complaint, in words: where, and what a lone surrogate escape is.
fn json_error(e: &serde_json::Error) -> String {
    let what = e.to_string();
    let what = what.split(" at line ").next().unwrap_or(&what);
    let what = if what.contains("hex escape") || what.contains("surrogate") {
        "an invalid \\u escape: a lone UTF-16 surrogate such as \\ud800 is not a character"
    } else {
        what
    };
    format!("{what}, at line {} column {}", e.line(), e.column())
}

fn transport_detail(e: &ureq::Error) -> String {
    match e {
        ureq::Error::Timeout(t) => format!("timed out ({t})"),
        ureq::Error::Io(io) => format!("connection error: {}", io.kind()),
        other => super::url::truncate(&other.to_string(), 200),
    }
}
