//! The deletion confirmer. Employes pages its list by offset and offers no cursor or deletion
//! feed, so a list that changes while a sync is between two pages can skip an employee who is
//! still there (a deletion on an earlier page moves everyone after it up a place). An employee
//! missing from an otherwise complete list is therefore only recorded as deleted once
//! `GET /employees/{id}` answers 404; a record means the list moved under the sync.

use std::sync::Mutex;

use crate::client::{ApiError, Client};

/// What the API said about the employees missing from the list.
#[derive(Debug, Default)]
pub struct Confirmation {
    /// 404: they are gone.
    pub gone: Vec<String>,
    /// The API still has them: the list moved while the sync read it.
    pub present: Vec<String>,
    /// No answer that settles it (5xx or timeouts after the retries, 403, a stop): they stay
    /// as they are.
    pub unconfirmed: Vec<(String, ApiError)>,
    /// An error after which no request can succeed (401): nothing is confirmed.
    pub fatal: Option<ApiError>,
}

/// Asks the API about each of `ids`, on up to `threads` connections (within the client's rate
/// limit). Deletions are rare: this costs one request per employee missing from the list.
pub fn confirm(client: &Client, ids: Vec<String>, threads: usize) -> Confirmation {
    let queue = Mutex::new(ids);
    let out = Mutex::new(Confirmation::default());
    std::thread::scope(|scope| {
        for _ in 0..threads.max(1) {
            scope.spawn(|| loop {
                let Some(id) = queue.lock().unwrap_or_else(|e| e.into_inner()).pop() else {
                    return;
                };
                let answer = client.employee(&id);
                let mut out = out.lock().unwrap_or_else(|e| e.into_inner());
                match answer {
                    Ok(None) => out.gone.push(id),
                    Ok(Some(_)) => out.present.push(id),
                    Err(e) if e.is_fatal() => {
                        out.fatal.get_or_insert(e);
                    }
                    Err(e) => out.unconfirmed.push((id, e)),
                }
            });
        }
    });
    let mut out = out.into_inner().unwrap_or_else(|e| e.into_inner());
    out.gone.sort_unstable();
    out.present.sort_unstable();
    out.unconfirmed.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    out
}
