//! The history writes of a batch: look up the latest stored versions, plan, close the replaced
//! versions, write the new ones with their changes (checking their references set-wise), bring
//! the timeline up to date; a batch the database refuses is written in halves, in
//! subtransactions, down to the records it refuses. And the deletions of employees who left.

use std::collections::HashMap;

use pgrx::datum::DatumWithOid;
use serde_json::Value;

use employes_sync_core::model::{ChangeType, Kind};
use employes_sync_core::sync::{ApplyStats, Progress};
use employes_sync_core::versions::{self, Existing, Incoming};

use super::references::References;
use super::session::Ledger;
use super::spi::{exec, in_subtx, spi_err};
use super::timeline::{refresh_timeline, write_timeline, PayloadEvents, StoredPayloads};
use employes_sync_core::sync::StoreError;

const LOOKUP: &str = "
SELECT i.employee_id, r.id, r.version, r.content_hash, r.valid_to IS NULL,
       CASE WHEN r.content_hash <> i.hash OR r.valid_to IS NOT NULL THEN r.payload::text END
  FROM unnest($2::text[], $3::text[]) AS i (employee_id, hash)
  JOIN LATERAL (SELECT d.id, d.version, d.content_hash, d.valid_to, d.payload
                  FROM employes_raw_data d
                 WHERE d.company_id = $4::uuid AND d.kind = $1 AND d.employee_id = i.employee_id
                 ORDER BY d.version DESC LIMIT 1) r ON true";

const CLOSE: &str = "
UPDATE employes_raw_data SET valid_to = now(), closed_session_id = $2::uuid
 WHERE id = ANY ($1::bigint[]) AND valid_to IS NULL
RETURNING id";

/// Ids for the versions and changes a write is about to make ($1 and $2 of each), so that the
/// worker can put each event together, change ids included, before the write.
const RESERVE_IDS: &str = "
SELECT (SELECT array_agg(nextval('employes_raw_data_id_seq')) FROM generate_series(1, $1)),
       (SELECT array_agg(nextval('employes_changes_id_seq')) FROM generate_series(1, $2))";

const WRITE: &str = "
WITH v AS (
    SELECT * FROM unnest($3::text[], $4::text[], $5::text[], $6::integer[], $16::bigint[]) WITH ORDINALITY
                  AS x (employee_id, payload, content_hash, version, id, ord)
), ins AS (
    INSERT INTO employes_raw_data (id, kind, employee_id, payload, content_hash, version, valid_from, first_session_id,
                                   company_id)
    OVERRIDING SYSTEM VALUE
    SELECT id, $1, employee_id, payload::jsonb, content_hash, version, now(), $2::uuid, $15::uuid FROM v ORDER BY ord
    RETURNING id, employee_id
), c AS (
    SELECT * FROM unnest($7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::text[], $13::bigint[],
                         $17::bigint[], $18::bigint[])
                  AS y (employee_id, change_type, field_path, old_value, new_value, effective_date, raw_from_id, id, raw_to_id)
), chg AS (
    INSERT INTO employes_changes (id, session_id, employee_id, kind, change_type, field_path, old_value, new_value,
                                  effective_date, detected_at, raw_from_id, raw_to_id, company_id)
    OVERRIDING SYSTEM VALUE
    SELECT c.id, $2::uuid, c.employee_id, $1, c.change_type, c.field_path, c.old_value::jsonb, c.new_value::jsonb,
           c.effective_date::date, now(), c.raw_from_id, ins.id, $15::uuid
      FROM c JOIN ins ON ins.id = c.raw_to_id AND ins.employee_id = c.employee_id
    RETURNING 1
), evt AS (
    -- One event per employee per change type per version transition, with every change it
    -- groups, put together by the worker (the caller holds employes_events_lock()).
    INSERT INTO employes_events (company_id, session_id, employee_id, event_type, data)
    SELECT $15::uuid, $2::uuid, e.employee_id, employes_events_type_of(e.change_type), e.data::jsonb
      FROM unnest($19::text[], $20::text[], $21::text[]) WITH ORDINALITY AS e (employee_id, change_type, data, ord)
     ORDER BY e.ord
    RETURNING id
), src AS (
    -- What the foreign-key triggers would check for each change, in one pass: the versions the
    -- changes start from exist (src) and so does the session (ses), each locked so that it
    -- cannot be deleted before this transaction ends: KEY SHARE here (lck, ses), except the
    -- versions this transaction closed, which the close's own update has locked ($14 leaves
    -- them out).
    SELECT r.id FROM employes_raw_data r WHERE r.id IN (SELECT c.raw_from_id FROM c)
), lck AS (
    SELECT r.id FROM employes_raw_data r WHERE r.id = ANY ($14::bigint[]) FOR KEY SHARE OF r
), ses AS (
    SELECT s.id FROM employes_sync_sessions s WHERE s.id = $2::uuid FOR KEY SHARE OF s
)
SELECT (SELECT count(*) FROM ins)::bigint, (SELECT count(*) FROM chg)::bigint,
       (SELECT count(DISTINCT c.raw_from_id) FROM c)::bigint, (SELECT count(*) FROM src)::bigint,
       (SELECT count(*) FROM lck)::bigint, (SELECT count(*) FROM ses)::bigint,
       (SELECT min(id) FROM evt), (SELECT max(id) FROM evt)";

/// Writes new versions, their changes and their events in one statement and checks what it
/// wrote: every version and change written (none dropped by the join), every version a change
/// starts from still there, the session still there. Any failure is an error: the caller's
/// transaction is then rolled back whole. The events written are added to `events`.
pub(crate) fn write_versions(
    kind: Kind,
    session: &str,
    company: &str,
    plan: &[versions::NewVersion],
    events: &EventIds,
) -> Result<ApplyStats, StoreError> {
    let n_versions = plan.len() as i64;
    let n_changes: i64 = plan.iter().map(|v| v.changes.len() as i64).sum();
    let (raw_ids, change_ids) = exec(RESERVE_IDS, &[n_versions.into(), n_changes.into()], |t| {
        let row = t.first();
        Ok((
            row.get::<Vec<i64>>(1).map_err(spi_err)?.unwrap_or_default(),
            row.get::<Vec<i64>>(2).map_err(spi_err)?.unwrap_or_default(),
        ))
    })?;
    if raw_ids.len() as i64 != n_versions || change_ids.len() as i64 != n_changes {
        return Err(
            "could not reserve the ids of the versions and changes: nothing written".into(),
        );
    }
    let changes = ChangeColumns::of(plan, &raw_ids, &change_ids);
    let evts = EventColumns::of(kind, plan, &raw_ids, &changes);
    // The versions changes start from that this transaction has not closed (a deleted one, which
    // a restore starts from): the write locks them itself.
    let mut to_lock: Vec<i64> = plan
        .iter()
        .filter(|v| !v.changes.is_empty() && v.from_raw_id != v.close_raw_id)
        .filter_map(|v| v.from_raw_id)
        .collect();
    to_lock.sort_unstable();
    to_lock.dedup();
    let n_to_lock = to_lock.len() as i64;
    let column = |f: fn(&versions::NewVersion) -> String| plan.iter().map(f).collect::<Vec<_>>();
    let args: [DatumWithOid; 21] = [
        kind.as_str().into(),
        session.to_owned().into(),
        column(|v| v.employee_id.clone()).into(),
        column(|v| v.payload.to_string()).into(),
        column(|v| v.content_hash.clone()).into(),
        plan.iter().map(|v| v.version).collect::<Vec<_>>().into(),
        changes.employee.into(),
        changes.change_type.into(),
        changes.field_path.into(),
        changes.old_value.into(),
        changes.new_value.into(),
        changes.effective_date.into(),
        changes.raw_from_id.into(),
        to_lock.into(),
        company.to_owned().into(),
        raw_ids.into(),
        changes.id.into(),
        changes.raw_to_id.into(),
        evts.employee.into(),
        evts.change_type.into(),
        evts.data.into(),
    ];
    let [versions, written, sources, found, locked, sessions, first_event, last_event] =
        exec(WRITE, &args, |t| {
            let row = t.first();
            let mut out = [0i64; 8];
            for (i, v) in out.iter_mut().enumerate() {
                *v = row.get::<i64>(i + 1).map_err(spi_err)?.unwrap_or(0);
            }
            Ok(out)
        })?;
    let kind = kind.as_str();
    if sessions != 1 {
        return Err(format!("session {session} no longer exists: nothing written").into());
    }
    if found != sources || locked != n_to_lock {
        let missing = (sources - found).max(n_to_lock - locked);
        return Err(format!("{missing} of the {sources} versions the {kind} changes start from no longer exist: modified concurrently, nothing written").into());
    }
    if versions != n_versions || written != n_changes {
        return Err(format!("wrote {versions} of {n_versions} {kind} versions and {written} of {n_changes} changes: nothing written").into());
    }
    if written > 0 && first_event == 0 {
        return Err(format!("wrote {written} {kind} changes but no event: nothing written").into());
    }
    events.add(first_event, last_event);
    Ok(ApplyStats {
        versions_written: versions as u64,
        changes_detected: written as u64,
    })
}

/// The changes of a plan as column arrays, one element per change row: each value is parsed
/// once, by its own cast in the write statement.
struct ChangeColumns {
    employee: Vec<String>,
    change_type: Vec<String>,
    field_path: Vec<String>,
    old_value: Vec<Option<String>>,
    new_value: Vec<Option<String>>,
    effective_date: Vec<Option<String>>,
    raw_from_id: Vec<Option<i64>>,
    id: Vec<i64>,
    raw_to_id: Vec<i64>,
}

/// A change's value as stored: JSON text, a JSON null and an absent value both SQL NULL.
fn stored_json(v: &Option<Value>) -> Option<String> {
    v.as_ref().filter(|v| !v.is_null()).map(Value::to_string)
}

impl ChangeColumns {
    /// The changes of `plan` in order, the i-th version's with id `raw_ids[i]`, the changes
    /// taking `change_ids` in turn.
    fn of(plan: &[versions::NewVersion], raw_ids: &[i64], change_ids: &[i64]) -> ChangeColumns {
        let mut out = ChangeColumns {
            employee: Vec::new(),
            change_type: Vec::new(),
            field_path: Vec::new(),
            old_value: Vec::new(),
            new_value: Vec::new(),
            effective_date: Vec::new(),
            raw_from_id: Vec::new(),
            id: change_ids.to_vec(),
            raw_to_id: Vec::new(),
        };
        for (v, raw_id) in plan.iter().zip(raw_ids) {
            for c in &v.changes {
                out.employee.push(v.employee_id.clone());
                out.change_type.push(c.change_type.as_str().to_owned());
                out.field_path.push(c.field_path.clone());
                out.old_value.push(stored_json(&c.old_value));
                out.new_value.push(stored_json(&c.new_value));
                out.effective_date
                    .push(c.effective_date.map(|d| d.to_string()));
                out.raw_from_id.push(v.from_raw_id);
                out.raw_to_id.push(*raw_id);
            }
        }
        out
    }
}

/// The events of a plan as column arrays: one per employee and change type, by employee and
/// type, each with the JSON of its `data` (see `employes_events`), its changes' values taken
/// from `changes` (the same text the changes store).
struct EventColumns {
    employee: Vec<String>,
    change_type: Vec<String>,
    data: Vec<String>,
}

impl EventColumns {
    fn of(
        kind: Kind,
        plan: &[versions::NewVersion],
        raw_ids: &[i64],
        changes: &ChangeColumns,
    ) -> EventColumns {
        let mut out = EventColumns {
            employee: Vec::new(),
            change_type: Vec::new(),
            data: Vec::new(),
        };
        // The ids of each version's changes start where the previous version's end.
        let mut first_id = Vec::with_capacity(plan.len());
        let mut next = 0;
        for v in plan {
            first_id.push(next);
            next += v.changes.len();
        }
        let mut order: Vec<usize> = (0..plan.len()).collect();
        order.sort_by(|&a, &b| plan[a].employee_id.cmp(&plan[b].employee_id));
        let null = || "null".to_owned();
        for i in order {
            let v = &plan[i];
            let mut by_type: std::collections::BTreeMap<&str, Vec<usize>> = Default::default();
            for (k, c) in v.changes.iter().enumerate() {
                by_type.entry(c.change_type.as_str()).or_default().push(k);
            }
            for (change_type, ks) in by_type {
                let effective = ks.iter().filter_map(|&k| v.changes[k].effective_date).min();
                let items: Vec<String> = ks
                    .iter()
                    .map(|&k| {
                        let c = &v.changes[k];
                        let n = first_id[i] + k;
                        format!(
                            "{{\"change_id\":{},\"field_path\":{},\"old_value\":{},\"new_value\":{},\"effective_date\":{}}}",
                            changes.id[n],
                            Value::from(c.field_path.as_str()),
                            changes.old_value[n].as_deref().unwrap_or("null"),
                            changes.new_value[n].as_deref().unwrap_or("null"),
                            c.effective_date.map_or_else(null, |d| format!("\"{d}\"")),
                        )
                    })
                    .collect();
                out.employee.push(v.employee_id.clone());
                out.change_type.push(change_type.to_owned());
                out.data.push(format!(
                    "{{\"kind\":{},\"raw_from_id\":{},\"raw_to_id\":{},\"effective_date\":{},\"changes\":[{}]}}",
                    Value::from(kind.as_str()),
                    v.from_raw_id.map_or_else(null, |id| id.to_string()),
                    raw_ids[i],
                    effective.map_or_else(null, |d| format!("\"{d}\"")),
                    items.join(","),
                ));
            }
        }
        out
    }
}

/// Closes the current records of the employees who left (`$1`: missing from a complete list,
/// and confirmed gone by the API).
const DELETE_MISSING: &str = "
WITH gone AS (
    UPDATE employes_raw_data r SET valid_to = now(), closed_session_id = $2::uuid
     WHERE r.company_id = $3::uuid AND r.valid_to IS NULL AND r.employee_id = ANY ($1::text[])
    RETURNING r.id, r.kind, r.employee_id, r.payload
), chg AS (
    INSERT INTO employes_changes (session_id, employee_id, kind, change_type, field_path, old_value, detected_at, raw_from_id,
                                  company_id)
    SELECT $2::uuid, employee_id, kind, 'deleted', '$', payload, now(), id, $3::uuid FROM gone
    RETURNING id, employee_id, kind, old_value, raw_from_id
), evt AS (
    -- One employee.deleted event per employee and kind (the caller holds employes_events_lock()).
    INSERT INTO employes_events (company_id, session_id, employee_id, event_type, data)
    SELECT $3::uuid, $2::uuid, chg.employee_id, 'employee.deleted',
           jsonb_build_object('kind', chg.kind, 'raw_from_id', chg.raw_from_id, 'raw_to_id', NULL,
                              'effective_date', NULL,
                              'changes', jsonb_build_array(jsonb_build_object(
                                  'change_id', chg.id, 'field_path', '$', 'old_value', chg.old_value,
                                  'new_value', NULL, 'effective_date', NULL)))
      FROM chg ORDER BY chg.employee_id, chg.kind
    RETURNING id
)
SELECT (SELECT count(DISTINCT employee_id) FROM gone)::bigint, (SELECT count(*) FROM chg)::bigint,
       (SELECT min(id) FROM evt), (SELECT max(id) FROM evt)";

/// Closes the current records of the employees who left and records their `deleted` changes,
/// with their timeline and the session's progress, in the caller's transaction.
pub(super) fn mark_deleted(
    ledger: &Ledger,
    gone: Vec<String>,
    progress: &Progress,
) -> Result<ApplyStats, StoreError> {
    lock_events()?;
    let [employees, changes, first_event, last_event] = exec(
        DELETE_MISSING,
        &[
            gone.clone().into(),
            ledger.session.clone().into(),
            ledger.company.clone().into(),
        ],
        |t| {
            let row = t.first();
            let mut out = [0i64; 4];
            for (i, v) in out.iter_mut().enumerate() {
                *v = row.get::<i64>(i + 1).map_err(spi_err)?.unwrap_or(0);
            }
            Ok(out)
        },
    )?;
    refresh_timeline(&ledger.company, gone)?;
    let events = EventIds::default();
    events.add(first_event, last_event);
    events.notify()?;
    let stats = ApplyStats {
        versions_written: employees as u64,
        changes_detected: changes as u64,
    };
    let mut p = progress.clone();
    p.deleted = stats.versions_written;
    p.changes_detected += stats.changes_detected;
    ledger.write(&p)?;
    Ok(stats)
}

/// Takes the lock every writer of events holds to its commit (`employes_events_lock`): ids are
/// then handed out in commit order, and a reader that has seen id n never sees a smaller one
/// appear later.
fn lock_events() -> Result<(), StoreError> {
    exec("SELECT employes_events_lock()", &[], |_| Ok(()))
}

/// The ids of the events a transaction wrote: first and last (0: none).
#[derive(Default)]
pub(crate) struct EventIds(std::cell::Cell<(i64, i64)>);

impl EventIds {
    fn get(&self) -> (i64, i64) {
        self.0.get()
    }

    fn set(&self, v: (i64, i64)) {
        self.0.set(v)
    }

    fn add(&self, first: i64, last: i64) {
        if first == 0 {
            return;
        }
        let (a, b) = self.get();
        self.set(if a == 0 {
            (first, last)
        } else {
            (a.min(first), b.max(last))
        });
    }

    /// NOTIFY employes_sync of these events, delivered when the transaction commits.
    fn notify(&self) -> Result<(), StoreError> {
        let (first, last) = self.get();
        if first == 0 {
            return Ok(());
        }
        exec(
            "SELECT employes_events_notify($1, $2)",
            &[first.into(), last.into()],
            |_| Ok(()),
        )
    }
}

/// What one batch's transaction wrote: its counts, the (employee, hash) pairs that are now
/// current, the records the database refused (employee, reason) and how references were checked.
pub(crate) struct BatchOutcome {
    pub(super) stats: ApplyStats,
    pub(super) written: Vec<(String, String)>,
    pub(super) rejected: Vec<(String, StoreError)>,
    pub(super) references: Option<References>,
}

/// A batch gives up isolating its records once this many were refused alone: the database
/// refuses everything (a dropped table, a full disk), not a record.
const MAX_REJECTED: usize = 10;

/// The writes of a batch, shared by every part of it that is written on its own.
struct BatchWrite<'a> {
    session: &'a str,
    company: &'a str,
    kind: Kind,
    references: References,
    events: &'a PayloadEvents,
    stored: &'a StoredPayloads,
    /// The events this transaction wrote (the parts that were kept).
    written: EventIds,
}

impl BatchWrite<'_> {
    /// Closes the replaced versions, writes the new ones with their changes and the timeline.
    fn write(&self, plan: &[versions::NewVersion]) -> Result<ApplyStats, StoreError> {
        self.references.triggers(false)?;
        let close: Vec<i64> = plan.iter().filter_map(|v| v.close_raw_id).collect();
        if !close.is_empty() {
            let expected = close.len();
            let closed = exec(
                CLOSE,
                &[close.into(), self.session.to_owned().into()],
                |t| Ok(t.len()),
            )?;
            if closed != expected {
                return Err(format!("expected to close {expected} current versions, closed {closed}: modified concurrently").into());
            }
        }
        let stats = write_versions(self.kind, self.session, self.company, plan, &self.written)?;
        self.references.triggers(true)?;
        // Timeline events come from the history (employments: the difference between the events
        // of the replaced payloads and of the ones just written) and, for the employee record,
        // only from status changes and restorations: recompute just the employees that can have
        // new ones.
        match self.kind {
            Kind::Employments => write_timeline(self.company, plan, self.events, self.stored)?,
            Kind::Employee => refresh_timeline(
                self.company,
                plan.iter()
                    .filter(|v| {
                        v.changes.iter().any(|c| {
                            matches!(
                                c.change_type,
                                ChangeType::StatusChange | ChangeType::Restored
                            )
                        })
                    })
                    .map(|v| v.employee_id.clone())
                    .collect(),
            )?,
        }
        Ok(stats)
    }

    /// Writes `plan` in a subtransaction; when that fails, writes each half on its own, down to
    /// single records, which are refused alone (`rejected`): one record the database cannot
    /// take does not hold up its neighbours.
    fn write_isolating(
        &self,
        plan: &[versions::NewVersion],
        rejected: &mut Vec<(String, StoreError)>,
        first_error: &mut Option<StoreError>,
    ) -> Result<ApplyStats, StoreError> {
        let before = self.written.get();
        let error = match in_subtx(|| self.write(plan)) {
            Ok(stats) => return Ok(stats),
            Err(e) => e,
        };
        // The part was rolled back, its events with it.
        self.written.set(before);
        let first = first_error.get_or_insert_with(|| error.clone()).clone();
        if plan.len() == 1 {
            rejected.push((plan[0].employee_id.clone(), error));
            if rejected.len() > MAX_REJECTED {
                return Err(first);
            }
            return Ok(ApplyStats::default());
        }
        let (a, b) = plan.split_at(plan.len() / 2);
        let one = self.write_isolating(a, rejected, first_error)?;
        let two = self.write_isolating(b, rejected, first_error)?;
        Ok(ApplyStats {
            versions_written: one.versions_written + two.versions_written,
            changes_detected: one.changes_detected + two.changes_detected,
        })
    }
}

/// Applies records whose content differs from the cached current version: looks up their
/// latest stored versions, plans, writes versions and changes (isolating the records the
/// database refuses), records progress.
pub(super) fn apply_batch(
    ledger: &Ledger,
    kind: Kind,
    records: Vec<Incoming>,
    events: PayloadEvents,
    progress: &Progress,
) -> Result<BatchOutcome, StoreError> {
    let ids: Vec<String> = records.iter().map(|r| r.employee_id.clone()).collect();
    let hashes: Vec<String> = records.iter().map(|r| r.content_hash.clone()).collect();
    let mut existing: HashMap<String, Existing> = HashMap::new();
    let mut stored = StoredPayloads::new();
    let args: [DatumWithOid; 4] = [
        kind.as_str().into(),
        ids.into(),
        hashes.into(),
        ledger.company.clone().into(),
    ];
    exec(LOOKUP, &args, |rows| {
        for row in rows {
            let id: String = row.get(1).map_err(spi_err)?.unwrap_or_default();
            let text: Option<String> = row.get(6).map_err(spi_err)?;
            let payload = match &text {
                Some(text) => Some(
                    serde_json::from_str::<Value>(text)
                        .map_err(|e| format!("stored payload of {id} unreadable: {e}"))?,
                ),
                None => None,
            };
            if kind == Kind::Employments {
                stored.insert(id.clone(), text);
            }
            existing.insert(
                id,
                Existing {
                    raw_id: row.get(2).map_err(spi_err)?.unwrap_or_default(),
                    version: row.get(3).map_err(spi_err)?.unwrap_or_default(),
                    content_hash: row.get(4).map_err(spi_err)?.unwrap_or_default(),
                    is_current: row.get(5).map_err(spi_err)?.unwrap_or(false),
                    payload,
                },
            );
        }
        Ok(())
    })?;
    let plan = versions::plan(kind, records, &existing);
    let mut applied = BatchOutcome {
        stats: ApplyStats::default(),
        written: Vec::new(),
        rejected: Vec::new(),
        references: None,
    };
    if !plan.is_empty() {
        let references = References::decide()?;
        lock_events()?;
        let batch = BatchWrite {
            session: &ledger.session,
            company: &ledger.company,
            kind,
            references,
            events: &events,
            stored: &stored,
            written: EventIds::default(),
        };
        applied.stats = batch.write_isolating(&plan, &mut applied.rejected, &mut None)?;
        applied.references = Some(references);
        batch.written.notify()?;
    }
    applied.written = plan
        .iter()
        .filter(|v| !applied.rejected.iter().any(|(id, _)| *id == v.employee_id))
        .map(|v| (v.employee_id.clone(), v.content_hash.clone()))
        .collect();
    let mut p = progress.clone();
    p.versions_written += applied.stats.versions_written;
    p.changes_detected += applied.stats.changes_detected;
    p.rejected += applied.rejected.len() as u64;
    ledger.write(&p)?;
    Ok(applied)
}

#[cfg(any(test, feature = "pg_test"))]
#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;

    use crate::testing::*;

    #[pg_test(
        error = "duplicate key value violates unique constraint \"employes_raw_data_current\""
    )]
    fn two_current_versions_of_a_record_are_impossible() {
        let s = session();
        for v in 1..=2 {
            version_of_e1(&s, "employee", "{}", v);
        }
    }

    /// An employee's changes are found through a narrow index of their own; the unique key
    /// leads with the new version, so a sync's change rows land at its right edge.
    #[pg_test]
    fn an_employees_changes_are_found_through_the_employee_index() {
        let plan =
            plan_of("SELECT * FROM employes_changes WHERE employee_id = 'e1' ORDER BY detected_at");
        assert!(
            plan.iter().any(|l| l.contains("employes_changes_employee")),
            "{plan:?}"
        );
        let key =
            Spi::get_one::<String>("SELECT pg_get_indexdef('employes_changes_unique'::regclass)")
                .unwrap()
                .unwrap();
        assert!(
            key.contains("(COALESCE(raw_to_id, (0)::bigint), COALESCE(raw_from_id, (0)::bigint), kind, field_path, change_type)"),
            "{key}"
        );
        assert_eq!(
            index_count("employes_changes"),
            5,
            "id, unique key, employee, detected_at, timeline"
        );
    }

    /// The text keys of the history compare byte by byte whatever the database's collation, and
    /// a value of the default collation (a parameter, a user's column) compared with them still
    /// finds them through their indexes.
    #[pg_test]
    fn history_text_keys_compare_byte_by_byte() {
        let got = Spi::get_one::<String>(
            "SELECT string_agg(a.attrelid::regclass || '.' || a.attname || ' ' || c.collname, ', '
                               ORDER BY a.attrelid::regclass::text, a.attnum)
               FROM pg_attribute a JOIN pg_collation c ON c.oid = a.attcollation
              WHERE a.attrelid IN ('employes_raw_data'::regclass, 'employes_changes'::regclass, 'employes_timeline'::regclass)
                AND a.attnum > 0 AND NOT a.attisdropped AND a.atttypid = 'text'::regtype AND c.collname = 'C'",
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            got,
            "employes_changes.employee_id C, employes_changes.kind C, employes_changes.change_type C, \
             employes_changes.field_path C, employes_raw_data.kind C, employes_raw_data.employee_id C, \
             employes_timeline.employee_id C, employes_timeline.event_type C, employes_timeline.event_key C"
        );
        Spi::run("CREATE TEMP TABLE mine (id text COLLATE \"default\")").unwrap();
        let plan = plan_of(
            "SELECT * FROM mine m JOIN employes_changes c ON c.employee_id = m.id WHERE m.id = 'e1'",
        );
        assert!(
            plan.iter().any(|l| l.contains("employes_changes_employee")),
            "{plan:?}"
        );
    }

    #[pg_test(error = "duplicate key value violates unique constraint \"employes_changes_unique\"")]
    fn the_same_change_cannot_be_recorded_twice() {
        let s = session();
        let raw = version_of_e1(&s, "employee", "{}", 1);
        for _ in 0..2 {
            Spi::run(&format!(
                "INSERT INTO employes_changes (session_id, employee_id, kind, change_type, field_path, detected_at, raw_to_id)
                 VALUES ('{s}', 'e1', 'employee', 'created', '$', now(), {raw})"
            ))
            .unwrap();
        }
    }

    /// With the foreign-key triggers off (as the worker runs its history writes), the write
    /// statement itself refuses a change whose starting version is gone and a session that is.
    #[pg_test]
    fn history_writes_check_their_references_set_wise_without_the_triggers() {
        use super::{write_versions, References};
        use employes_sync_core::changes::Change;
        use employes_sync_core::model::{ChangeType, Kind};
        use employes_sync_core::versions::NewVersion;
        use serde_json::json;
        let s = session();
        let raw = version_of_e1(&s, "employee", "{}", 1);
        assert_eq!(References::decide(), Ok(References::SetWise));
        Spi::run("SELECT set_config('session_replication_role', 'replica', true)").unwrap();
        // Each write for an employee of its own: a failed write is not rolled back here (the
        // worker's transaction would be), so its new version stays current.
        let version = |n: i64, from: i64| NewVersion {
            employee_id: format!("e{n}"),
            payload: json!({"n": n, "wage": 2846.5}),
            content_hash: "b".repeat(64),
            version: 1,
            close_raw_id: None,
            from_raw_id: Some(from),
            changes: vec![Change {
                change_type: ChangeType::Updated,
                field_path: "$.n".into(),
                old_value: Some(json!(1)),
                new_value: Some(serde_json::Value::Null),
                effective_date: chrono::NaiveDate::from_ymd_opt(2021, 1, 31),
            }],
        };
        let err = write_versions(
            Kind::Employee,
            &s,
            COMPANY,
            &[version(2, raw + 1000)],
            &super::EventIds::default(),
        );
        assert_eq!(
            err,
            Err("1 of the 1 versions the employee changes start from no longer exist: modified concurrently, nothing written".into())
        );
        let gone = "00000000-0000-0000-0000-000000000001";
        let err = write_versions(
            Kind::Employee,
            gone,
            COMPANY,
            &[version(3, raw)],
            &super::EventIds::default(),
        );
        assert_eq!(
            err,
            Err(format!("session {gone} no longer exists: nothing written").into())
        );
        let events = super::EventIds::default();
        let ok = write_versions(Kind::Employee, &s, COMPANY, &[version(4, raw)], &events).unwrap();
        assert_eq!((ok.versions_written, ok.changes_detected), (1, 1));
        // Its event, written by the same statement: the change with its values, the ids tracked.
        let (first, last) = events.get();
        assert!(first > 0 && first == last, "{first}..{last}");
        let event = Spi::get_one::<String>(&format!(
            "SELECT concat_ws(' | ', e.event_type, e.employee_id, e.company_id, e.data -> 'changes' -> 0 ->> 'field_path',
                              e.data -> 'changes' -> 0 -> 'old_value', e.data -> 'changes' -> 0 -> 'new_value',
                              e.data ->> 'effective_date', (e.data -> 'changes' -> 0 ->> 'change_id')::bigint = c.id)
               FROM employes_events e JOIN employes_changes c ON c.session_id = e.session_id AND c.employee_id = e.employee_id
              WHERE e.id = {first}"
        ))
        .unwrap()
        .unwrap();
        assert_eq!(
            event,
            format!("employee.updated | e4 | {COMPANY} | $.n | 1 | null | 2021-01-31 | t")
        );
        // What is stored: the payload, the values (a JSON null as SQL NULL), the date, the links.
        let stored = Spi::get_one::<String>(&format!(
            "SELECT concat_ws(' | ', r.payload::text, c.change_type, c.field_path, c.old_value::text,
                              coalesce(c.new_value::text, 'NULL'), c.effective_date, c.raw_from_id = {raw},
                              c.raw_to_id = r.id, c.session_id::text = '{s}', r.first_session_id::text = '{s}')
               FROM employes_changes c JOIN employes_raw_data r ON r.id = c.raw_to_id WHERE r.employee_id = 'e4'"
        ))
        .unwrap()
        .unwrap();
        assert_eq!(
            stored,
            r#"{"n": 4, "wage": 2846.5} | updated | $.n | 1 | NULL | 2021-01-31 | t | t | t | t"#
        );
    }

    /// Replica mode would also skip a trigger or rule of the user's, or a foreign key that is not
    /// the extension's: any of them puts the per-row checks back.
    #[pg_test]
    fn a_trigger_rule_or_foreign_key_of_the_users_keeps_the_per_row_checks() {
        use super::References;
        let decide = || References::decide().unwrap();
        assert_eq!(decide(), References::SetWise);
        Spi::run(
            "CREATE FUNCTION audit() RETURNS trigger LANGUAGE plpgsql AS 'BEGIN RETURN NULL; END';
             CREATE TRIGGER audit AFTER INSERT ON employes_changes FOR EACH ROW EXECUTE FUNCTION audit()",
        )
        .unwrap();
        assert_eq!(decide(), References::PerRow);
        // Disabled, or firing whatever the role: nothing would be skipped.
        Spi::run("ALTER TABLE employes_changes DISABLE TRIGGER audit").unwrap();
        assert_eq!(decide(), References::SetWise);
        Spi::run("ALTER TABLE employes_changes ENABLE ALWAYS TRIGGER audit").unwrap();
        assert_eq!(decide(), References::SetWise);
        // Firing only in replica mode: it would fire where it never does.
        Spi::run("ALTER TABLE employes_changes ENABLE REPLICA TRIGGER audit").unwrap();
        assert_eq!(decide(), References::PerRow);
        Spi::run("DROP TRIGGER audit ON employes_changes").unwrap();
        assert_eq!(decide(), References::SetWise);
        Spi::run("CREATE RULE r AS ON UPDATE TO employes_raw_data DO ALSO NOTIFY employes_raw_data_updated").unwrap();
        assert_eq!(decide(), References::PerRow);
        Spi::run("DROP RULE r ON employes_raw_data").unwrap();
        Spi::run("ALTER TABLE employes_changes ADD COLUMN reviewed_in uuid REFERENCES employes_sync_sessions (id)").unwrap();
        assert_eq!(decide(), References::PerRow);
    }
}
