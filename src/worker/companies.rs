//! The companies of a session: each synced in turn by the core's driver, with a client of its
//! own token (companies that share a token share its rate limit: the API limits the account),
//! recorded in its own row of `employes_sync_session_companies`; one company's failure leaves
//! the others' results alone, and the session's outcome is theirs together.

use std::collections::HashMap;

use serde_json::json;

use employes_sync_core::client::Client;
use employes_sync_core::sync::{
    run_sync, FinalStatus, Level, Outcome, Progress, Store, SyncOptions,
};

use super::session::{self, Company, Ledger};
use super::store::SpiStore;
use crate::guc;

/// Syncs every company of the session, one after the other.
pub(super) fn sync_all(session: &str) -> Outcome {
    let companies = match session::companies(session) {
        Ok(c) if c.is_empty() => {
            let why = "no company to sync: set employes_sync.company_id, or add one with employes_sync_add_company()";
            session::log(session, Level::Error, "start", why, json!({}));
            return ended(FinalStatus::Error, why);
        }
        Ok(c) => c,
        Err(e) => {
            return ended(
                FinalStatus::Error,
                &format!("the companies to sync could not be read: {e}"),
            )
        }
    };
    let mut clients: HashMap<String, Client> = HashMap::new();
    let mut done: Vec<(String, Outcome)> = Vec::new();
    let mut totals = Progress::default();
    for company in &companies {
        let ledger = Ledger {
            session: session.to_owned(),
            company: company.id.clone(),
            before: totals.clone(),
        };
        if let Err(e) = ledger.start() {
            pgrx::log!("employes_sync worker: session {session}: {e}");
        }
        let mut store = SpiStore::new(ledger.clone());
        let outcome = sync_company(&mut store, company, &mut clients);
        if let Err(e) = ledger.finish(&outcome) {
            pgrx::log!("employes_sync worker: session {session}: {e}");
        }
        totals = totals.plus(&outcome.progress);
        let stop = matches!(outcome.status, FinalStatus::Cancelled)
            || outcome
                .error
                .as_deref()
                .is_some_and(|e| e.contains("SIGTERM"));
        done.push((company.id.clone(), outcome));
        if stop {
            break;
        }
    }
    together(done, totals)
}

/// One company's sync: the core's driver with a client of its token, sharing the rate limit of
/// the clients of the same token.
fn sync_company(
    store: &mut SpiStore,
    company: &Company,
    clients: &mut HashMap<String, Client>,
) -> Outcome {
    let mut cfg = guc::client_config();
    if let Some(token) = &company.token {
        cfg.token = token.clone();
    }
    cfg.company_id = company.id.clone();
    let opts = SyncOptions {
        concurrency: guc::CONCURRENCY.get().max(1) as usize,
        ..SyncOptions::default()
    };
    store.log(
        Level::Info,
        "start",
        "sync started",
        json!({"base_url": cfg.base_url, "own_token": company.token.is_some(), "requests_per_second": cfg.requests_per_second,
               "per_page": cfg.per_page, "concurrency": opts.concurrency, "max_retries": cfg.max_retries}),
    );
    let client = match clients.get(&cfg.token) {
        Some(c) => Ok(c.for_company(&company.id)),
        None => Client::new(cfg.clone()).inspect(|c| {
            clients.insert(cfg.token.clone(), c.clone());
        }),
    };
    match client {
        Ok(client) => run_sync(&client, store, opts),
        Err(e) => {
            store.log(Level::Error, "start", &e.to_string(), json!({}));
            ended(FinalStatus::Error, &e.to_string())
        }
    }
}

/// The session's outcome from its companies': completed when every one completed; cancelled
/// when it was cancelled; error when every one failed; partial otherwise. The error names the
/// company when there are several.
fn together(done: Vec<(String, Outcome)>, totals: Progress) -> Outcome {
    let several = done.len() > 1;
    let named = |company: &str, e: &str| {
        if several {
            format!("company {company}: {e}")
        } else {
            e.to_owned()
        }
    };
    let first_error = done
        .iter()
        .find_map(|(c, o)| o.error.as_deref().map(|e| named(c, e)));
    let all = |s: FinalStatus| done.iter().all(|(_, o)| o.status == s);
    let status = if done.iter().any(|(_, o)| o.status == FinalStatus::Cancelled) {
        FinalStatus::Cancelled
    } else if all(FinalStatus::Completed) {
        FinalStatus::Completed
    } else if all(FinalStatus::Error) {
        FinalStatus::Error
    } else {
        FinalStatus::Partial
    };
    Outcome {
        status,
        error: if status == FinalStatus::Completed {
            None
        } else {
            first_error
        },
        snapshot_complete: !done.is_empty() && done.iter().all(|(_, o)| o.snapshot_complete),
        progress: totals,
    }
}

/// The outcome of a session that ended before its sync ran.
pub(super) fn ended(status: FinalStatus, why: &str) -> Outcome {
    Outcome {
        status,
        error: Some(why.to_owned()),
        snapshot_complete: false,
        progress: Progress::default(),
    }
}
