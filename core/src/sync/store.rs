//! Storage as the sync driver sees it: the [`Store`] trait, and what the driver and a store
//! tell each other (progress, applied batches, log levels, why a sync stopped).

use std::collections::HashSet;

use serde_json::Value;

use crate::model::Kind;
use crate::versions::Incoming;

/// Why a store could not do what the driver asked. A failed statement keeps the SQLSTATE,
/// message and detail the database gave, which go into the log row's `details`.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    #[error("{message}{}", detail.as_deref().map(|d| format!(" ({d})")).unwrap_or_default())]
    Sql {
        sqlstate: String,
        message: String,
        detail: Option<String>,
    },
    /// What the store found is not what it expected (a concurrent change, a missing row).
    #[error("{0}")]
    Conflict(String),
}

impl StoreError {
    /// What a log row's `details` keep of the error.
    pub fn details(&self) -> Value {
        match self {
            StoreError::Sql {
                sqlstate, detail, ..
            } => serde_json::json!({"sqlstate": sqlstate, "detail": detail}),
            StoreError::Conflict(_) => serde_json::json!({}),
        }
    }
}

impl From<String> for StoreError {
    fn from(s: String) -> StoreError {
        StoreError::Conflict(s)
    }
}

impl From<&str> for StoreError {
    fn from(s: &str) -> StoreError {
        StoreError::Conflict(s.to_owned())
    }
}

/// Counters a session shows; `api_requests` and `retries` come from the client.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Progress {
    pub pages_total: Option<u64>,
    pub pages_done: u64,
    pub employees_total: Option<u64>,
    pub employees_done: u64,
    pub api_requests: u64,
    pub retries: u64,
    pub versions_written: u64,
    pub changes_detected: u64,
    pub errors: u64,
    pub deleted: u64,
    /// Employees missing from the list whom the API still has: the list moved under the sync.
    pub list_moved: u64,
    /// Records that could not be stored as received (NUL in a string, refused by the database).
    pub rejected: u64,
}

impl Progress {
    /// The sum of two syncs' counters (the companies of one session).
    pub fn plus(&self, o: &Progress) -> Progress {
        let opt = |a: Option<u64>, b: Option<u64>| match (a, b) {
            (None, None) => None,
            (a, b) => Some(a.unwrap_or(0) + b.unwrap_or(0)),
        };
        Progress {
            pages_total: opt(self.pages_total, o.pages_total),
            pages_done: self.pages_done + o.pages_done,
            employees_total: opt(self.employees_total, o.employees_total),
            employees_done: self.employees_done + o.employees_done,
            api_requests: self.api_requests + o.api_requests,
            retries: self.retries + o.retries,
            versions_written: self.versions_written + o.versions_written,
            changes_detected: self.changes_detected + o.changes_detected,
            errors: self.errors + o.errors,
            deleted: self.deleted + o.deleted,
            list_moved: self.list_moved + o.list_moved,
            rejected: self.rejected + o.rejected,
        }
    }
}

/// The employee ids a list gave, kept as 64-bit keys: 8 bytes each whatever an id's length, so
/// the set stays small for a large company. Two different ids sharing a key (about 1 in 10^9 at
/// 100,000 employees) can only err on the safe side: the second looks like a duplicate (the
/// snapshot counts as incomplete and nobody is deleted), or an employee who left is not marked
/// deleted until a later sync.
#[derive(Debug, Default)]
pub struct SeenIds(HashSet<u64>);

impl SeenIds {
    /// The 64-bit key of an id (fixed for the whole process, so a store can key its own
    /// per-employee data the same way and ask `contains_key`).
    pub fn key(id: &str) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::hash::DefaultHasher::new();
        id.hash(&mut h);
        h.finish()
    }

    /// False when the id was already there.
    pub fn insert(&mut self, id: &str) -> bool {
        self.0.insert(Self::key(id))
    }

    pub fn contains(&self, id: &str) -> bool {
        self.contains_key(Self::key(id))
    }

    pub fn contains_key(&self, key: u64) -> bool {
        self.0.contains(&key)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// What one applied batch wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ApplyStats {
    pub versions_written: u64,
    pub changes_detected: u64,
}

/// What one batch's transaction wrote, and the records the store refused alone (employee id,
/// reason): the database would not take them, and their neighbours were applied.
#[derive(Debug, Default)]
pub struct Applied {
    pub stats: ApplyStats,
    pub rejected: Vec<(String, StoreError)>,
}

impl From<ApplyStats> for Applied {
    fn from(stats: ApplyStats) -> Applied {
        Applied {
            stats,
            rejected: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Debug,
    Info,
    Warning,
    Error,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warning => "warning",
            Level::Error => "error",
        }
    }
}

/// Why a sync stopped early.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopReason {
    Cancelled,
    Terminated(String),
}

/// Storage as the driver sees it. Each `apply` is atomic: all of the batch or none of it,
/// together with the progress given.
pub trait Store {
    /// Keeps the records whose content differs from their current stored version and drops the
    /// rest (they need no write). Called for every fetched record, so it must be cheap: the
    /// extension answers from a per-sync cache of current hashes, with no SQL. The default keeps
    /// everything, which is also correct: `apply` plans nothing for unchanged content.
    fn changed(&mut self, kind: Kind, records: Vec<Incoming>) -> Result<Vec<Incoming>, StoreError> {
        let _ = kind;
        Ok(records)
    }
    /// Applies the batch; a record the storage refuses may be left out alone (`rejected`)
    /// while the rest is applied.
    fn apply(
        &mut self,
        kind: Kind,
        records: Vec<Incoming>,
        progress: &Progress,
    ) -> Result<Applied, StoreError>;
    /// Whether this employee was erased (`employes_forget_employee`) and must not be stored
    /// again: the driver then neither stores their record nor fetches their history. The
    /// default: nobody was.
    fn erased(&mut self, employee_id: &str) -> Result<bool, StoreError> {
        let _ = employee_id;
        Ok(false)
    }
    /// The employees with a current record who are not in `seen`, sorted.
    fn missing(&mut self, seen: &SeenIds) -> Result<Vec<String>, StoreError>;
    /// Marks the current records of these employees deleted; returns how many employees (as
    /// `versions_written`) and the changes recorded.
    fn mark_deleted(
        &mut self,
        ids: Vec<String>,
        progress: &Progress,
    ) -> Result<ApplyStats, StoreError>;
    fn progress(&mut self, progress: &Progress) -> Result<(), StoreError>;
    fn log(&mut self, level: Level, step: &str, message: &str, details: Value);
    /// Polled between units of work.
    fn check_stop(&mut self) -> Option<StopReason>;
}
