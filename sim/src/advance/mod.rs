//! Time travel: one `advance` moves the dataset one month on and applies HR events, returning the
//! exact truth of what changed so that a client's change detection can be checked against it.

use std::collections::HashSet;

use chrono::{Duration, NaiveDate};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::data::{
    self, active_index, add_months, dt, first_of_month, gen_item, hours_period, last_of_month,
    mirror, new_record, parse_date, round2, stamp, top_yearly_wage, Dataset, EmploymentField,
    Entry, ItemPlan, RecordParts, HOURS,
};
use crate::rng::Rng;

mod events;
mod moves;

use events::*;
pub use moves::{move_list, ListMove};

/// How many events of each kind one step applies; `None` takes the default for the current
/// number of listed employees N: raises 5% of N, hours changes, renewals, hires and terminations
/// 2%, conversions and removals 1% (each at least 1), one back-dated raise, one restore and one
/// rehire when possible, noise 5% (at least 1).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AdvanceOptions {
    pub raises: Option<usize>,
    pub backdated_raises: Option<usize>,
    pub hours_changes: Option<usize>,
    pub renewals: Option<usize>,
    pub conversions: Option<usize>,
    pub hires: Option<usize>,
    pub terminations: Option<usize>,
    pub removals: Option<usize>,
    pub restores: Option<usize>,
    pub rehires: Option<usize>,
    pub noise: Option<usize>,
}

impl AdvanceOptions {
    /// Every count zero: a step that only moves the date.
    pub fn none() -> Self {
        AdvanceOptions {
            raises: Some(0),
            backdated_raises: Some(0),
            hours_changes: Some(0),
            renewals: Some(0),
            conversions: Some(0),
            hires: Some(0),
            terminations: Some(0),
            removals: Some(0),
            restores: Some(0),
            rehires: Some(0),
            noise: Some(0),
        }
    }
}

/// One detectable change: what a correct client should record for this employee.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TruthChange {
    pub employee_id: String,
    /// The event that caused it (`raise`, `termination`, ...).
    pub event: String,
    /// `salary_change`, `hours_change`, `contract_change`, `status_change`, `termination`,
    /// `created`, `deleted`, `restored`, `rehired`.
    pub change_type: String,
    /// `YYYY-MM-DD`, where the change has one.
    pub effective_date: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepReport {
    pub step: u32,
    /// The new current date, `YYYY-MM-DD`.
    pub date: String,
    pub changes: Vec<TruthChange>,
    /// Employees whose JSON changed without any HR change (dt_update, number representation,
    /// key order): a correct client records nothing for them.
    pub noise_employee_ids: Vec<String>,
}

pub(super) type Changes = Vec<(&'static str, Option<NaiveDate>)>;

pub(super) struct Ctx {
    /// First day of the new month: the effective date of most events.
    e: NaiveDate,
    /// The new current date.
    today: NaiveDate,
}

/// Moves `ds` one month on and applies the events of step `step` (1-based).
pub fn advance(ds: &mut Dataset, seed: u64, step: u32, opts: &AdvanceOptions) -> StepReport {
    let today = add_months(ds.date, 1);
    ds.date = today;
    let ctx = Ctx {
        e: first_of_month(today),
        today,
    };
    let mut rng = Rng::derive(seed, 2, step as u64);
    let listed = ds.listed();
    let removed: Vec<usize> = (0..ds.employees.len())
        .filter(|&i| ds.employees[i].removed)
        .collect();
    let n = listed.len() as f64;
    let share = |p: f64| ((n * p).round() as usize).max(1);
    let mut step_state = Step {
        touched: HashSet::new(),
        changes: Vec::new(),
    };
    let o = opts;
    let eb = add_months(ctx.e, -2);
    type Apply<'a> = &'a dyn Fn(&mut Entry, &mut Rng, &Ctx) -> Option<Changes>;
    let events: [(&[usize], usize, &'static str, Apply); 9] = [
        (
            &listed,
            o.raises.unwrap_or(share(0.05)),
            "raise",
            &|e, r, c| split_salary(e, r, c, c.e),
        ),
        (
            &listed,
            o.backdated_raises.unwrap_or(1),
            "backdated_raise",
            &|e, r, c| split_salary(e, r, c, eb),
        ),
        (
            &listed,
            o.hours_changes.unwrap_or(share(0.02)),
            "hours_change",
            &hours_change,
        ),
        (
            &listed,
            o.renewals.unwrap_or(share(0.02)),
            "renewal",
            &renewal,
        ),
        (
            &listed,
            o.conversions.unwrap_or(share(0.01)),
            "conversion",
            &conversion,
        ),
        (
            &listed,
            o.terminations.unwrap_or(share(0.02)),
            "termination",
            &termination,
        ),
        (&listed, o.rehires.unwrap_or(1), "rehire", &rehire),
        (
            &listed,
            o.removals.unwrap_or(share(0.01)),
            "removal",
            &|e, _, _| {
                e.removed = true;
                Some(vec![("deleted", None)])
            },
        ),
        (&removed, o.restores.unwrap_or(1), "restore", &|e, _, _| {
            e.removed = false;
            Some(vec![("restored", None)])
        }),
    ];
    for (pool, count, event, apply) in events {
        step_state.apply(ds, &mut rng, &ctx, pool, count, event, apply);
    }
    let Step {
        mut touched,
        mut changes,
    } = step_state;
    for _ in 0..o.hires.unwrap_or(share(0.02)) {
        let entry = hire(ds, &mut rng, &ctx);
        let id = employee_id(&entry);
        ds.employees.push(entry);
        touched.insert(ds.employees.len() - 1);
        changes.push(truth(&id, "hire", "created", Some(ctx.e)));
    }
    let noise_employee_ids = add_noise(
        ds,
        &mut rng,
        &ctx,
        &listed,
        &touched,
        o.noise.unwrap_or(share(0.05)),
    );
    StepReport {
        step,
        date: today.format("%Y-%m-%d").to_string(),
        changes,
        noise_employee_ids,
    }
}

/// The employees a step has changed so far, and the truth of what it changed.
struct Step {
    touched: HashSet<usize>,
    changes: Vec<TruthChange>,
}

impl Step {
    /// Applies `event` to up to `count` employees of `pool` not yet touched, in random order.
    #[allow(clippy::too_many_arguments)]
    fn apply(
        &mut self,
        ds: &mut Dataset,
        rng: &mut Rng,
        ctx: &Ctx,
        pool: &[usize],
        count: usize,
        event: &'static str,
        apply: &dyn Fn(&mut Entry, &mut Rng, &Ctx) -> Option<Changes>,
    ) {
        let mut cands: Vec<usize> = pool
            .iter()
            .copied()
            .filter(|i| !self.touched.contains(i))
            .collect();
        rng.shuffle(&mut cands);
        let mut done = 0;
        for i in cands {
            if done == count {
                break;
            }
            let mut entry = ds.employees[i].clone();
            if let Some(list) = apply(&mut entry, rng, ctx) {
                let id = employee_id(&entry);
                ds.employees[i] = entry;
                self.touched.insert(i);
                done += 1;
                for (change_type, eff) in list {
                    self.changes.push(truth(&id, event, change_type, eff));
                }
            }
        }
    }
}

/// JSON that changes without an HR change, for up to `count` untouched listed employees.
fn add_noise(
    ds: &mut Dataset,
    rng: &mut Rng,
    ctx: &Ctx,
    listed: &[usize],
    touched: &HashSet<usize>,
    count: usize,
) -> Vec<String> {
    let mut cands: Vec<usize> = listed
        .iter()
        .copied()
        .filter(|i| !touched.contains(i))
        .collect();
    rng.shuffle(&mut cands);
    let mut ids = Vec::new();
    for i in cands {
        if ids.len() == count {
            break;
        }
        if noise(&mut ds.employees[i], rng, ctx) {
            ids.push(employee_id(&ds.employees[i]));
        }
    }
    ids
}

pub(super) fn truth(
    id: &str,
    event: &str,
    change_type: &str,
    eff: Option<NaiveDate>,
) -> TruthChange {
    TruthChange {
        employee_id: id.to_string(),
        event: event.to_string(),
        change_type: change_type.to_string(),
        effective_date: eff.map(|d| d.format("%Y-%m-%d").to_string()),
    }
}

pub(super) fn employee_id(e: &Entry) -> String {
    match e.record.get("id") {
        Some(Value::String(s)) => s.clone(),
        Some(v) => v.to_string(),
        None => String::new(),
    }
}

pub(super) fn status(e: &Entry) -> Option<&str> {
    e.record.get("status").and_then(Value::as_str)
}

pub(super) fn touch(e: &mut Entry, rng: &mut Rng, ctx: &Ctx) {
    let s = stamp(rng, ctx.today);
    if let Some(m) = e.record.as_object_mut() {
        m.insert("dt_update".into(), json!(s));
    }
}

pub(super) fn record_employment(e: &mut Entry) -> Option<&mut Map<String, Value>> {
    e.record.get_mut("employment")?.as_object_mut()
}

pub(super) fn latest_item(e: &mut Entry) -> Option<&mut Map<String, Value>> {
    e.employments.as_array_mut()?.last_mut()?.as_object_mut()
}

pub(super) fn is_int(v: &Value) -> bool {
    v.is_i64() || v.is_u64()
}

/// A new wage in the same representation as the old one.
pub(super) fn same_repr(old: &Value, new: f64) -> Value {
    if is_int(old) {
        json!(new.round() as i64)
    } else if old.as_f64().is_some_and(|x| x.fract() == 0.0) {
        json!(new.round())
    } else {
        data::wage_value(new, false)
    }
}

/// Inserts `key` right after `after` (or at the end), keeping the API's key order.
pub(super) fn insert_after(m: &mut Map<String, Value>, after: &str, key: &str, value: Value) {
    if let Some(v) = m.get_mut(key) {
        *v = value;
        return;
    }
    let old = std::mem::take(m);
    let mut placed = false;
    for (k, v) in old {
        let hit = k == after;
        m.insert(k, v);
        if hit {
            m.insert(key.to_string(), value.clone());
            placed = true;
        }
    }
    if !placed {
        m.insert(key.to_string(), value);
    }
}

/// Raise (at = E) or back-dated raise (at = two months earlier): the active salary period is
/// closed the day before `at` and a higher one starts at `at`.
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_after_keeps_order() {
        let mut m: Map<String, Value> = serde_json::from_str(r#"{"a":1,"b":2,"c":3}"#).unwrap();
        insert_after(&mut m, "a", "x", json!(0));
        assert_eq!(Value::Object(m).to_string(), r#"{"a":1,"x":0,"b":2,"c":3}"#);
    }

    #[test]
    fn flip_keeps_value() {
        let mut v = json!(2846);
        assert!(flip(&mut v));
        assert_eq!(v.to_string(), "2846.0");
        assert!(flip(&mut v));
        assert_eq!(v.to_string(), "2846");
        assert!(!flip(&mut json!(2846.5)));
    }
}
