//! Every way a request can fail, as a session, a log row and a DBA read it.

use serde_json::Value;

/// Every way a request can fail. `Display` is safe to store and show: it never contains the
/// token, and what the API answered is summarised (no control characters, at most a couple of
/// hundred characters); `body` keeps a bounded excerpt for the log.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    #[error("configuration error: {0}")]
    Config(String),
    /// The token was refused: `expired_at` is its `exp` when that has passed (the token
    /// expired), `None` when it has not or is unknown (the API rejected it).
    #[error("GET {url}: {}", refused(*status, message, expired_at.as_deref()))]
    Auth {
        url: String,
        status: u16,
        message: String,
        expired_at: Option<String>,
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

/// Why the token was refused, and what to do.
fn refused(status: u16, message: &str, expired_at: Option<&str>) -> String {
    match expired_at {
        Some(at) => format!(
            "the Employes token expired at {at} (HTTP {status}); set a new one in employes_sync.api_token, or with employes_sync_set_company_token() for a company with a token of its own"
        ),
        None => format!(
            "the Employes API rejected the token (HTTP {status}): {message}; check employes_sync.api_token (or the company's own token)"
        ),
    }
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
            ApiError::Auth {
                url,
                status,
                expired_at,
                ..
            } => serde_json::json!({"url": url, "status": status, "token_expired_at": expired_at}),
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
}
