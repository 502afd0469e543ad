//! The Employes v4 API client: one pacer shared by every thread (never more than
//! `requests_per_second`), retries with exponential backoff and jitter on 429/5xx/timeouts/resets
//! honouring `Retry-After`, fast failure on authentication errors, and error messages that name the
//! URL and status but never the token. `request` holds one request's life, `error` what can go
//! wrong, `url` what a URL may be.

mod error;
mod request;
mod url;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

pub use error::ApiError;
pub use url::validate_base_url;

use request::Pacer;
use url::encode_segment;

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
    /// How long one request may wait in all on 429s (throttling, not failure: it does not use
    /// up `max_retries`).
    pub throttle_max: Duration,
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
            throttle_max: Duration::from_secs(600),
            per_page: 100,
        }
    }
}

/// Counters shared by all threads; `requests` counts every request really sent.
#[derive(Default, Debug)]
pub struct Counters {
    pub requests: AtomicU64,
    pub retries: AtomicU64,
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

    /// A client of another company on the same account: it shares this client's rate limit
    /// (the API limits the token, not the company) and stop flag, and counts its own requests.
    pub fn for_company(&self, company_id: &str) -> Client {
        let mut cfg = (*self.cfg).clone();
        cfg.company_id = company_id.to_owned();
        Client {
            cfg: Arc::new(cfg),
            agent: self.agent.clone(),
            pacer: Arc::clone(&self.pacer),
            counters: Arc::new(Counters::default()),
            stop: Arc::clone(&self.stop),
            seed: Arc::clone(&self.seed),
        }
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
