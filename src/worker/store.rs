//! The [`Store`] the core's sync driver writes through: the hash cache, one transaction per
//! batch, deletions, progress, log lines and the stop flag.

use std::collections::{HashMap, HashSet};

use pgrx::bgworkers::BackgroundWorker;
use serde_json::{json, Value};

use employes_sync_core::model::Kind;
use employes_sync_core::sync::{Applied, ApplyStats, Level, Progress, SeenIds, StopReason, Store};
use employes_sync_core::versions::Incoming;

use super::history::{apply_batch, mark_deleted};
use super::references::References;
use super::session::{self, Ledger};
use super::spi::{exec, for_each_row, in_tx, spi_err};
use super::timeline::{payload_events, PayloadEvents};
use employes_sync_core::sync::StoreError;

pub(super) struct SpiStore {
    ledger: Ledger,
    sigterm: bool,
    current: Option<CurrentHashes>,
    /// How the last batch's references were checked (logged when it changes).
    references: Option<References>,
    erased: Option<Erased>,
}

impl SpiStore {
    pub(super) fn new(ledger: Ledger) -> SpiStore {
        SpiStore {
            ledger,
            sigterm: false,
            current: None,
            references: None,
            erased: None,
        }
    }
}

/// The tags of the company's erased employees (`employes_forget_employee`) and the key they are
/// made with: loaded once per sync; usually there are none, and nothing is hashed.
struct Erased {
    key: Vec<u8>,
    tags: HashSet<[u8; 32]>,
}

const ERASED_LOAD: &str =
    "SELECT k.key, e.tag FROM employes_erasures e CROSS JOIN employes_erasure_key k
  WHERE e.company_id = $1::uuid AND e.tag IS NOT NULL";

impl Erased {
    fn load(company: &str) -> Result<Erased, StoreError> {
        in_tx(|| {
            let mut out = Erased {
                key: Vec::new(),
                tags: HashSet::new(),
            };
            for_each_row(ERASED_LOAD, &[company.to_owned().into()], |row| {
                out.key = row.get::<Vec<u8>>(1).map_err(spi_err)?.unwrap_or_default();
                let tag: Vec<u8> = row.get(2).map_err(spi_err)?.unwrap_or_default();
                if let Ok(tag) = <[u8; 32]>::try_from(tag.as_slice()) {
                    out.tags.insert(tag);
                }
                Ok(())
            })?;
            Ok(out)
        })
    }
}

/// The hashes of the current versions, in the order of `employes_raw_data_current`, which holds
/// all three columns: an index-only scan, not a read of every payload.
pub(crate) const HASH_LOAD: &str = "SELECT kind, employee_id, content_hash FROM employes_raw_data
  WHERE company_id = $1::uuid AND valid_to IS NULL ORDER BY company_id, kind, employee_id";

/// The content hash of every current version, loaded once per sync so that comparing a fetched
/// record costs no SQL (a re-sync of an unchanged company only reads). Compact, so the worker's
/// memory stays small as the company grows: per employee, the 64-bit key of its id (the driver's
/// `SeenIds::key`, so the list of this sync can be checked against it directly) and the first
/// 128 bits of the SHA-256 of each kind, about 24 bytes per record. A record is taken as
/// unchanged only if its key finds the same 128 bits; a wrong answer would need a 64-bit key
/// collision between two employees whose contents also share a 128-bit hash prefix.
struct CurrentHashes(HashMap<u64, [Option<[u8; 16]>; 2]>);

impl CurrentHashes {
    fn slot(kind: Kind) -> usize {
        match kind {
            Kind::Employee => 0,
            Kind::Employments => 1,
        }
    }

    fn prefix(hex: &str) -> Option<[u8; 16]> {
        let mut out = [0u8; 16];
        if hex.len() != 64 {
            return None;
        }
        for (i, b) in out.iter_mut().enumerate() {
            *b = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Some(out)
    }

    fn is_current(&self, kind: Kind, employee_id: &str, hash: &str) -> bool {
        let stored = self
            .0
            .get(&SeenIds::key(employee_id))
            .and_then(|slots| slots[Self::slot(kind)]);
        stored.is_some_and(|h| Self::prefix(hash) == Some(h))
    }

    /// A version written by this sync is now the current one.
    fn set(&mut self, kind: Kind, employee_id: &str, hash: &str) {
        self.0.entry(SeenIds::key(employee_id)).or_default()[Self::slot(kind)] = Self::prefix(hash);
    }

    /// Whether some employee with a current record is missing from this sync's list (every
    /// record written by the sync is of a listed employee, so only the ones loaded can be).
    fn any_unlisted(&self, seen: &SeenIds) -> bool {
        self.0
            .iter()
            .any(|(key, slots)| slots.iter().any(Option::is_some) && !seen.contains_key(*key))
    }

    /// Reads the current versions' hashes (streamed: see `for_each_row`).
    fn load(company: &str) -> Result<CurrentHashes, StoreError> {
        let mut out = in_tx(|| {
            let mut out = CurrentHashes(HashMap::new());
            for_each_row(HASH_LOAD, &[company.to_owned().into()], |row| {
                let kind: String = row.get(1).map_err(spi_err)?.unwrap_or_default();
                let id: String = row.get(2).map_err(spi_err)?.unwrap_or_default();
                let hash: String = row.get(3).map_err(spi_err)?.unwrap_or_default();
                if let Ok(kind) = kind.parse::<Kind>() {
                    out.set(kind, &id, &hash);
                }
                Ok(())
            })?;
            Ok(out)
        })?;
        out.0.shrink_to_fit();
        Ok(out)
    }
}

impl Store for SpiStore {
    fn changed(&mut self, kind: Kind, records: Vec<Incoming>) -> Result<Vec<Incoming>, StoreError> {
        if self.current.is_none() {
            self.current = Some(CurrentHashes::load(&self.ledger.company)?);
        }
        let current = self.current.as_ref().expect("loaded above");
        Ok(records
            .into_iter()
            .filter(|r| !current.is_current(kind, &r.employee_id, &r.content_hash))
            .collect())
    }

    fn apply(
        &mut self,
        kind: Kind,
        records: Vec<Incoming>,
        progress: &Progress,
    ) -> Result<Applied, StoreError> {
        let ledger = self.ledger.clone();
        let progress = progress.clone();
        // The timeline events of history payloads depend on the payloads alone: computed before
        // the transaction, which they would otherwise lengthen.
        let events = match kind {
            Kind::Employments => payload_events(&records),
            Kind::Employee => PayloadEvents::new(),
        };
        let batch = std::sync::Mutex::new(Some((records, events)));
        let outcome = in_tx(move || {
            let (records, events) = batch
                .lock()
                .map_err(|e| e.to_string())?
                .take()
                .unwrap_or_default();
            apply_batch(&ledger, kind, records, events, &progress)
        })?;
        if let Some(mode) = outcome.references.filter(|m| self.references != Some(*m)) {
            self.references = Some(mode);
            let message = match mode {
                References::SetWise => "references of new versions and changes are checked set-wise by the write statement",
                References::PerRow => "references of new versions and changes are checked row by row by the foreign-key triggers: a trigger, rule or foreign key of your own is on employes_raw_data or employes_changes",
            };
            self.log(
                Level::Debug,
                "changes",
                message,
                json!({"references": mode.as_str()}),
            );
        }
        if let Some(current) = self.current.as_mut() {
            for (id, hash) in outcome.written {
                current.set(kind, &id, &hash);
            }
        }
        Ok(Applied {
            stats: outcome.stats,
            rejected: outcome.rejected,
        })
    }

    fn erased(&mut self, employee_id: &str) -> Result<bool, StoreError> {
        if self.erased.is_none() {
            self.erased = Some(Erased::load(&self.ledger.company)?);
        }
        let erased = self.erased.as_ref().expect("loaded above");
        Ok(!erased.tags.is_empty()
            && erased.tags.contains(&employes_sync_core::erasure::tag(
                &erased.key,
                &self.ledger.company,
                employee_id,
            )))
    }

    fn missing(&mut self, seen: &SeenIds) -> Result<Vec<String>, StoreError> {
        // Usually nobody left: the cache knows without any SQL.
        if self.current.as_ref().is_some_and(|c| !c.any_unlisted(seen)) {
            return Ok(Vec::new());
        }
        let company = self.ledger.company.clone();
        in_tx(|| {
            // The current records' employees, streamed, against the listed ids: the ids that
            // left are few, so only they are kept.
            let mut gone: Vec<String> = Vec::new();
            for_each_row(
                "SELECT employee_id FROM employes_raw_data WHERE company_id = $1::uuid AND valid_to IS NULL",
                &[company.into()],
                |row| {
                    let id: String = row.get(1).map_err(spi_err)?.unwrap_or_default();
                    if !seen.contains(&id) {
                        gone.push(id);
                    }
                    Ok(())
                },
            )?;
            gone.sort_unstable();
            gone.dedup();
            Ok(gone)
        })
    }

    fn mark_deleted(
        &mut self,
        ids: Vec<String>,
        progress: &Progress,
    ) -> Result<ApplyStats, StoreError> {
        let ledger = self.ledger.clone();
        let progress = progress.clone();
        let ids = std::sync::Mutex::new(ids);
        in_tx(move || {
            let gone = std::mem::take(&mut *ids.lock().map_err(|e| e.to_string())?);
            mark_deleted(&ledger, gone, &progress)
        })
    }

    fn progress(&mut self, progress: &Progress) -> Result<(), StoreError> {
        let ledger = self.ledger.clone();
        let progress = progress.clone();
        in_tx(move || ledger.write(&progress))
    }

    fn log(&mut self, level: Level, step: &str, message: &str, mut details: Value) {
        // Every line of a company's sync says which company.
        if let Value::Object(map) = &mut details {
            map.insert("company_id".into(), json!(self.ledger.company));
        }
        session::log(&self.ledger.session, level, step, message, details);
    }

    fn check_stop(&mut self) -> Option<StopReason> {
        if self.sigterm || BackgroundWorker::sigterm_received() {
            self.sigterm = true;
            return Some(StopReason::Terminated(
                "the worker was terminated (SIGTERM: pg_terminate_backend or server shutdown); nothing half-applied".into(),
            ));
        }
        let session = self.ledger.session.clone();
        let cancelled = in_tx(move || {
            exec(
                "SELECT cancel_requested_at IS NOT NULL FROM employes_sync_sessions WHERE id = $1::uuid",
                &[session.into()],
                |t| t.first().get_one::<bool>().map_err(spi_err),
            )
        });
        match cancelled {
            Ok(Some(true)) => Some(StopReason::Cancelled),
            _ => None,
        }
    }
}

#[cfg(any(test, feature = "pg_test"))]
#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;

    use crate::testing::*;

    #[pg_test]
    fn current_hashes_are_read_from_the_index_alone() {
        let s = session();
        Spi::run(&format!(
            "INSERT INTO employes_raw_data (kind, employee_id, payload, content_hash, version, valid_from, first_session_id)
             SELECT 'employee', 'e' || i, '{{}}', repeat('a', 64), 1, now(), '{s}' FROM generate_series(1, 50) i"
        ))
        .unwrap();
        // Whatever the planner prefers for 50 rows: the index alone must be able to answer.
        Spi::run("SET LOCAL enable_bitmapscan = off").unwrap();
        let plan = plan_of(&super::HASH_LOAD.replace("$1::uuid", &format!("'{COMPANY}'::uuid")));
        assert!(
            plan[0].contains("Index Only Scan using employes_raw_data_current"),
            "{plan:?}"
        );
    }
}
