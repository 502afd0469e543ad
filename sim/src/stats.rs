//! Request statistics: per endpoint and status, 429s, and the busiest one-second window.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// API requests answered (control requests are not counted).
    pub total: u64,
    /// endpoint (`list`, `detail`, `employments`, `payruns`, `other`) -> status code -> count;
    /// a reset connection counts as status `0`.
    pub by_endpoint: BTreeMap<String, BTreeMap<String, u64>>,
    /// Requests refused by the rate limiter.
    pub rate_limited: u64,
    /// The most API requests that arrived within any sliding one-second window.
    pub max_requests_in_any_second: u64,
}

#[derive(Debug, Default)]
pub struct Recorder {
    pub stats: Stats,
    window: VecDeque<Instant>,
}

impl Recorder {
    pub fn arrival(&mut self, now: Instant) {
        while let Some(first) = self.window.front() {
            if now.saturating_duration_since(*first) >= Duration::from_secs(1) {
                self.window.pop_front();
            } else {
                break;
            }
        }
        self.window.push_back(now);
        let n = self.window.len() as u64;
        if n > self.stats.max_requests_in_any_second {
            self.stats.max_requests_in_any_second = n;
        }
    }

    pub fn answered(&mut self, endpoint: &str, status: u16) {
        self.stats.total += 1;
        *self
            .stats
            .by_endpoint
            .entry(endpoint.to_string())
            .or_default()
            .entry(status.to_string())
            .or_default() += 1;
    }

    pub fn reset(&mut self) {
        *self = Recorder::default();
    }
}
