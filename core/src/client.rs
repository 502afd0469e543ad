//! The Employes v4 API client: one pacer shared by every thread (never more than
//! `requests_per_second`), retries with exponential backoff and jitter on 429/5xx/timeouts/resets
//! honouring `Retry-After`, fast failure on authentication errors, and error messages that name the
//! URL and status but never the token.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

/// What the client needs to talk to the API. Built by the extension from its GUCs.
#[derive(Clone)]
pub struct ClientConfig {
    pub base_url: String,
    pub company_id: String,
    pub token: String,
    /// 0 or less disables pacing (benchmarks against an unlimited simulator).
    pub requests_per_second: f64,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    pub max_retries: u32,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// The longest `Retry-After` honoured; a longer one is cut to this.
    pub retry_after_max: Duration,
    pub per_page: u32,
}

impl std::fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientConfig")
            .field("base_url", &self.base_url)
            .field("company_id", &self.company_id)
            .field(
                "token",
                &if self.token.is_empty() {
                    "(empty)"
                } else {
                    "(hidden)"
                },
            )
            .field("requests_per_second", &self.requests_per_second)
            .field("max_retries", &self.max_retries)
            .finish()
    }
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            base_url: "https://connect.employes.nl/v4".into(),
            company_id: String::new(),
            token: String::new(),
            requests_per_second: 5.0,
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            max_retries: 5,
            backoff_base: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
            retry_after_max: Duration::from_secs(300),
            per_page: 100,
        }
    }
}

/// Every way a request can fail. `Display` is safe to store and show: it never contains the
/// token, and what the API answered is summarised (no control characters, at most a couple of
/// hundred characters); `body` keeps a bounded excerpt for the log.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    #[error("configuration error: {0}")]
    Config(String),
    #[error("GET {url}: authentication failed (HTTP {status}): {message}; check employes_sync.api_token")]
    Auth {
        url: String,
        status: u16,
        message: String,
    },
    #[error("GET {url}: access restricted (HTTP 403): {message}")]
    Restricted { url: String, message: String },
    #[error("GET {url}: HTTP {status} after {}: {message}", tries(*attempts))]
    Status {
        url: String,
        status: u16,
        attempts: u32,
        message: String,
        body: String,
    },
    #[error("GET {url}: {detail} after {}", tries(*attempts))]
    Transport {
        url: String,
        detail: String,
        attempts: u32,
    },
    #[error("GET {url}: the response is not valid JSON ({detail}) after {}", tries(*attempts))]
    Malformed {
        url: String,
        detail: String,
        attempts: u32,
    },
    #[error("GET {url}: unexpected response shape: {detail}")]
    Shape { url: String, detail: String },
    #[error("stopped before the request was sent")]
    Stopped,
}

/// "1 attempt", "3 attempts".
fn tries(n: u32) -> String {
    if n == 1 {
        "1 attempt".into()
    } else {
        format!("{n} attempts")
    }
}

impl ApiError {
    /// What a log row's `details` keeps of the error: the URL, the status and a bounded
    /// excerpt of what the API answered.
    pub fn details(&self) -> Value {
        match self {
            ApiError::Status {
                url,
                status,
                attempts,
                body,
                ..
            } => {
                serde_json::json!({"url": url, "status": status, "attempts": attempts, "body": body})
            }
            ApiError::Auth { url, status, .. } => serde_json::json!({"url": url, "status": status}),
            ApiError::Restricted { url, .. } | ApiError::Shape { url, .. } => {
                serde_json::json!({"url": url})
            }
            ApiError::Transport { url, attempts, .. }
            | ApiError::Malformed { url, attempts, .. } => {
                serde_json::json!({"url": url, "attempts": attempts})
            }
            ApiError::Config(_) | ApiError::Stopped => serde_json::json!({}),
        }
    }

    /// Errors after which no further request can succeed: stop the whole sync.
    pub fn is_fatal(&self) -> bool {
        matches!(self, ApiError::Auth { .. } | ApiError::Config(_))
    }

    /// The SQLSTATE a DBA sees for this error.
    pub fn sqlstate(&self) -> &'static str {
        match self {
            ApiError::Config(_) => "22023",
            ApiError::Auth { .. } => "28000",
            ApiError::Transport { .. } => "08006",
            _ => "58000",
        }
    }
}

/// Counters shared by all threads; `requests` counts every request really sent.
#[derive(Default, Debug)]
pub struct Counters {
    pub requests: AtomicU64,
    pub retries: AtomicU64,
    pub throttled: AtomicU64,
}

/// Spaces request start times `1 / rps` apart across all threads; a 429 pushes the next slot
/// back by its `Retry-After` for everyone.
struct Pacer {
    interval: Option<Duration>,
    next: Mutex<Instant>,
}

impl Pacer {
    fn new(rps: f64) -> Pacer {
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

/// One page of `/employees`.
#[derive(Debug, Clone)]
pub struct ListPage {
    pub page: u32,
    pub pages: u64,
    pub total: u64,
    pub records: Vec<Value>,
}

/// The API client. Cheap to clone; clones share the pacer, counters and stop flag.
#[derive(Clone)]
pub struct Client {
    cfg: Arc<ClientConfig>,
    agent: ureq::Agent,
    pacer: Arc<Pacer>,
    counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
    seed: Arc<AtomicU64>,
}

enum Attempt {
    Done(Value),
    NotFound,
    Retry {
        error: ApiError,
        retry_after: Option<Duration>,
    },
    Fail(ApiError),
}

impl Client {
    pub fn new(cfg: ClientConfig) -> Result<Client, ApiError> {
        validate_base_url(&cfg.base_url).map_err(ApiError::Config)?;
        if cfg.company_id.trim().is_empty() {
            return Err(ApiError::Config(
                "employes_sync.company_id is not set".into(),
            ));
        }
        if cfg.token.is_empty() {
            return Err(ApiError::Config(
                "employes_sync.api_token is not set".into(),
            ));
        }
        if !(1..=100).contains(&cfg.per_page) {
            return Err(ApiError::Config(format!(
                "per_page must be 1-100, got {}",
                cfg.per_page
            )));
        }
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .timeout_connect(Some(cfg.connect_timeout))
            .timeout_global(Some(cfg.request_timeout))
            .user_agent("employes_sync")
            .build()
            .into();
        let seed = Instant::now().elapsed().as_nanos() as u64
            ^ 0x9E37_79B9_7F4A_7C15
            ^ std::process::id() as u64;
        Ok(Client {
            pacer: Arc::new(Pacer::new(cfg.requests_per_second)),
            cfg: Arc::new(cfg),
            agent,
            counters: Arc::new(Counters::default()),
            stop: Arc::new(AtomicBool::new(false)),
            seed: Arc::new(AtomicU64::new(seed)),
        })
    }

    pub fn config(&self) -> &ClientConfig {
        &self.cfg
    }

    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Asks every thread using this client to give up at the next chance (sleeps included).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    pub fn is_stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    fn url(&self, path: &str) -> String {
        format!(
            "{}/{}{}",
            self.cfg.base_url.trim_end_matches('/'),
            self.cfg.company_id.trim(),
            path
        )
    }

    /// `GET /{company}/employees?page=N&per_page=M`, checked for the `{"data":[],"pages","total"}` envelope.
    pub fn list_page(&self, page: u32) -> Result<ListPage, ApiError> {
        let url = self.url(&format!(
            "/employees?page={page}&per_page={}",
            self.cfg.per_page
        ));
        let body = self.get(&url)?.ok_or_else(|| ApiError::Status {
            url: url.clone(),
            status: 404,
            attempts: 1,
            message: "employee list not found (check employes_sync.company_id)".into(),
            body: String::new(),
        })?;
        parse_list_page(&url, page, body)
    }

    /// `GET /{company}/employees/{id}`; the API answers bare or wrapped in `data`: both accepted.
    pub fn employee(&self, id: &str) -> Result<Option<Value>, ApiError> {
        let url = self.url(&format!("/employees/{}", encode_segment(id)));
        Ok(self.get(&url)?.map(|body| match body {
            Value::Object(mut map)
                if map.len() == 1 && map.get("data").is_some_and(Value::is_object) =>
            {
                map.remove("data").unwrap_or_default()
            }
            other => other,
        }))
    }

    /// `GET /{company}/employees/{id}/employments`: `Ok(None)` on 404 (no history); the whole
    /// `{"data":[...]}` body otherwise. Anything but that envelope is an error, never "no history".
    pub fn employments(&self, id: &str) -> Result<Option<Value>, ApiError> {
        let url = self.url(&format!("/employees/{}/employments", encode_segment(id)));
        match self.get(&url)? {
            None => Ok(None),
            Some(body) if body.get("data").is_some_and(Value::is_array) => Ok(Some(body)),
            Some(body) => Err(ApiError::Shape {
                url,
                detail: match body.get("data") {
                    Some(data) => format!(
                        "expected an object with a \"data\" array, got one whose \"data\" is {}",
                        describe_json(data)
                    ),
                    None => format!(
                        "expected an object with a \"data\" array, got {}",
                        describe_json(&body)
                    ),
                },
            }),
        }
    }

    /// GET with pacing and retries. `Ok(None)` is a 404.
    fn get(&self, url: &str) -> Result<Option<Value>, ApiError> {
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            if !self.pacer.acquire(&self.stop) {
                return Err(ApiError::Stopped);
            }
            self.counters.requests.fetch_add(1, Ordering::Relaxed);
            match self.attempt(url, attempt) {
                Attempt::Done(v) => return Ok(Some(v)),
                Attempt::NotFound => return Ok(None),
                Attempt::Fail(e) => return Err(e),
                Attempt::Retry { error, retry_after } => {
                    if attempt > self.cfg.max_retries {
                        return Err(error);
                    }
                    let delay = match retry_after {
                        Some(ra) => {
                            let until = Instant::now() + ra;
                            self.pacer.push_back(until);
                            ra + self.jitter(Duration::from_millis(100))
                        }
                        None => {
                            let exp = self
                                .cfg
                                .backoff_base
                                .saturating_mul(1 << (attempt - 1).min(16));
                            let capped = exp.min(self.cfg.backoff_max);
                            capped / 2 + self.jitter(capped / 2)
                        }
                    };
                    self.counters.retries.fetch_add(1, Ordering::Relaxed);
                    if !sleep_until(Instant::now() + delay, &self.stop) {
                        return Err(ApiError::Stopped);
                    }
                }
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

    fn attempt(&self, url: &str, attempt: u32) -> Attempt {
        let response = self
            .agent
            .get(url)
            .header("Authorization", format!("Bearer {}", self.cfg.token))
            .header("Accept", "application/json")
            .call();
        let mut response = match response {
            Ok(r) => r,
            Err(e) => {
                return Attempt::Retry {
                    error: ApiError::Transport {
                        url: url.into(),
                        detail: transport_detail(&e),
                        attempts: attempt,
                    },
                    retry_after: None,
                };
            }
        };
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
            .read_to_string();
        let text = match text {
            Ok(t) => t,
            Err(e) => {
                return Attempt::Retry {
                    error: ApiError::Transport {
                        url: url.into(),
                        detail: format!(
                            "HTTP {status}, body not fully read: {}",
                            transport_detail(&e)
                        ),
                        attempts: attempt,
                    },
                    retry_after: None,
                };
            }
        };
        let status_error = |message: String| ApiError::Status {
            url: url.into(),
            status,
            attempts: attempt,
            message,
            body: self.redact(crate::text::excerpt(&text)),
        };
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
                message: self.redact(api_message(&text)),
            }),
            403 => {
                let message = self.redact(api_message(&text));
                let lower = message.to_ascii_lowercase();
                if lower.contains("authorization header")
                    || lower.contains("key=value")
                    || lower.contains("token")
                {
                    Attempt::Fail(ApiError::Auth {
                        url: url.into(),
                        status,
                        message,
                    })
                } else {
                    Attempt::Fail(ApiError::Restricted {
                        url: url.into(),
                        message,
                    })
                }
            }
            429 => {
                self.counters.throttled.fetch_add(1, Ordering::Relaxed);
                Attempt::Retry {
                    error: status_error(self.redact(api_message(&text))),
                    retry_after: Some(retry_after.unwrap_or(Duration::from_secs(1))),
                }
            }
            500..=599 => Attempt::Retry {
                error: status_error(self.redact(api_message(&text))),
                retry_after,
            },
            _ => Attempt::Fail(status_error(self.redact(api_message(&text)))),
        }
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

/// Checks the envelope of a list page.
pub fn parse_list_page(url: &str, page: u32, body: Value) -> Result<ListPage, ApiError> {
    let shape = |detail: String| ApiError::Shape {
        url: url.into(),
        detail,
    };
    let Value::Object(mut map) = body else {
        return Err(shape(format!(
            "expected an object with data/pages/total, got {}",
            describe_json(&body)
        )));
    };
    let records = match map.remove("data") {
        Some(Value::Array(records)) => records,
        Some(other) => {
            return Err(shape(format!(
                "\"data\" is {}, expected an array",
                describe_json(&other)
            )))
        }
        None => return Err(shape("no \"data\" field".into())),
    };
    let number = |key: &str| -> Result<u64, ApiError> {
        match map.get(key) {
            Some(v) => v
                .as_u64()
                .or_else(|| {
                    v.as_f64()
                        .filter(|f| *f >= 0.0 && f.fract() == 0.0)
                        .map(|f| f as u64)
                })
                .ok_or_else(|| {
                    shape(format!(
                        "\"{key}\" is {}, expected a non-negative integer",
                        describe_json(v)
                    ))
                }),
            None => Err(shape(format!("no \"{key}\" field"))),
        }
    };
    Ok(ListPage {
        page,
        pages: number("pages")?,
        total: number("total")?,
        records,
    })
}

/// Only http and https, with a host: the base URL is where the token is sent.
pub fn validate_base_url(url: &str) -> Result<(), String> {
    let lower = url.to_ascii_lowercase();
    let rest = if let Some(r) = lower.strip_prefix("https://") {
        r
    } else if let Some(r) = lower.strip_prefix("http://") {
        r
    } else {
        return Err(format!(
            "base URL must start with http:// or https://, got \"{}\"",
            truncate(url, 80)
        ));
    };
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    if host.is_empty()
        || host.contains('@')
        || url.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(format!(
            "base URL \"{}\" has no valid host",
            truncate(url, 80)
        ));
    }
    Ok(())
}

fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
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
        other => truncate(&other.to_string(), 200),
    }
}

fn describe_json(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(_) => "a boolean".into(),
        Value::Number(_) => "a number".into(),
        Value::String(_) => "a string".into(),
        Value::Array(a) => format!("an array of {}", a.len()),
        Value::Object(_) => "an object".into(),
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        format!("{}...", s.chars().take(max).collect::<String>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn base_url_accepts_only_http_and_https_with_a_host() {
        assert!(validate_base_url("https://connect.employes.nl/v4").is_ok());
        assert!(validate_base_url("http://127.0.0.1:8089/v4").is_ok());
        for bad in [
            "file:///etc/passwd",
            "ftp://x",
            "gopher://x",
            "https://",
            "http:///x",
            "https://u:p@host/",
            "",
            "https://a b",
        ] {
            assert!(validate_base_url(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn list_page_envelope_is_checked() {
        let ok =
            parse_list_page("u", 1, json!({"data":[{"id":"a"}],"pages":2,"total":117})).unwrap();
        assert_eq!((ok.pages, ok.total, ok.records.len()), (2, 117, 1));
        assert!(parse_list_page("u", 1, json!([{"id":"a"}])).is_err());
        assert!(parse_list_page("u", 1, json!({"data":{"id":"a"},"pages":1,"total":1})).is_err());
        assert!(parse_list_page("u", 1, json!({"data":[],"pages":-1,"total":1})).is_err());
        assert!(parse_list_page("u", 1, json!({"data":[],"total":1})).is_err());
    }

    #[test]
    fn config_debug_never_shows_the_token() {
        let cfg = ClientConfig {
            token: "secret-token-value".into(),
            ..Default::default()
        };
        assert!(!format!("{cfg:?}").contains("secret-token-value"));
    }

    #[test]
    fn path_segments_are_percent_encoded() {
        assert_eq!(encode_segment("a/b c"), "a%2Fb%20c");
        assert_eq!(encode_segment("3f0c9a52-x_y.z~"), "3f0c9a52-x_y.z~");
    }

    #[test]
    fn missing_settings_are_configuration_errors() {
        let e = Client::new(ClientConfig {
            company_id: "c".into(),
            ..Default::default()
        })
        .err()
        .unwrap();
        assert!(e.to_string().contains("api_token is not set"), "{e}");
        let e = Client::new(ClientConfig {
            token: "t".into(),
            ..Default::default()
        })
        .err()
        .unwrap();
        assert!(e.to_string().contains("company_id is not set"), "{e}");
    }
}
