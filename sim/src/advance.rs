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

type Changes = Vec<(&'static str, Option<NaiveDate>)>;

struct Ctx {
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
    let mut touched: HashSet<usize> = HashSet::new();
    let mut changes = Vec::new();

    let mut run =
        |ds: &mut Dataset,
         rng: &mut Rng,
         pool: &[usize],
         count: usize,
         event: &'static str,
         apply: &dyn Fn(&mut Entry, &mut Rng, &Ctx) -> Option<Changes>| {
            let mut cands: Vec<usize> = pool
                .iter()
                .copied()
                .filter(|i| !touched.contains(i))
                .collect();
            rng.shuffle(&mut cands);
            let mut done = 0;
            for i in cands {
                if done == count {
                    break;
                }
                let mut entry = ds.employees[i].clone();
                if let Some(list) = apply(&mut entry, rng, &ctx) {
                    let id = employee_id(&entry);
                    ds.employees[i] = entry;
                    touched.insert(i);
                    done += 1;
                    for (change_type, eff) in list {
                        changes.push(truth(&id, event, change_type, eff));
                    }
                }
            }
        };

    let o = opts;
    run(
        ds,
        &mut rng,
        &listed,
        o.raises.unwrap_or(share(0.05)),
        "raise",
        &|e, r, c| split_salary(e, r, c, c.e),
    );
    let eb = add_months(ctx.e, -2);
    run(
        ds,
        &mut rng,
        &listed,
        o.backdated_raises.unwrap_or(1),
        "backdated_raise",
        &|e, r, c| split_salary(e, r, c, eb),
    );
    run(
        ds,
        &mut rng,
        &listed,
        o.hours_changes.unwrap_or(share(0.02)),
        "hours_change",
        &hours_change,
    );
    run(
        ds,
        &mut rng,
        &listed,
        o.renewals.unwrap_or(share(0.02)),
        "renewal",
        &renewal,
    );
    run(
        ds,
        &mut rng,
        &listed,
        o.conversions.unwrap_or(share(0.01)),
        "conversion",
        &conversion,
    );
    run(
        ds,
        &mut rng,
        &listed,
        o.terminations.unwrap_or(share(0.02)),
        "termination",
        &termination,
    );
    run(
        ds,
        &mut rng,
        &listed,
        o.rehires.unwrap_or(1),
        "rehire",
        &rehire,
    );
    run(
        ds,
        &mut rng,
        &listed,
        o.removals.unwrap_or(share(0.01)),
        "removal",
        &|e, _, _| {
            e.removed = true;
            Some(vec![("deleted", None)])
        },
    );
    run(
        ds,
        &mut rng,
        &removed,
        o.restores.unwrap_or(1),
        "restore",
        &|e, _, _| {
            e.removed = false;
            Some(vec![("restored", None)])
        },
    );

    for _ in 0..o.hires.unwrap_or(share(0.02)) {
        let entry = hire(ds, &mut rng, &ctx);
        let id = employee_id(&entry);
        ds.employees.push(entry);
        touched.insert(ds.employees.len() - 1);
        changes.push(truth(&id, "hire", "created", Some(ctx.e)));
    }

    let mut cands: Vec<usize> = listed
        .iter()
        .copied()
        .filter(|i| !touched.contains(i))
        .collect();
    rng.shuffle(&mut cands);
    let mut noise_employee_ids = Vec::new();
    for i in cands {
        if noise_employee_ids.len() == o.noise.unwrap_or(share(0.05)) {
            break;
        }
        if noise(&mut ds.employees[i], &mut rng, &ctx) {
            noise_employee_ids.push(employee_id(&ds.employees[i]));
        }
    }

    StepReport {
        step,
        date: today.format("%Y-%m-%d").to_string(),
        changes,
        noise_employee_ids,
    }
}

/// A change of the employee list made while a sync is between two list pages, as HR editing
/// the company at that moment: applied right after list page `after_page` has been answered.
/// Positions are 0-based places in the list as it is when the move applies.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ListMove {
    pub after_page: u32,
    /// Remove the employees at these positions (404 from then on, absent from the list).
    pub delete_positions: Vec<usize>,
    /// Hire this many new employees; they join the end of the list.
    pub hires: usize,
    /// Move the employee at the first position to the second one (after deletions and hires),
    /// changing no record.
    pub reorder: Option<(usize, usize)>,
}

/// Applies a list move without moving the date; reports the deletions and hires it made (a
/// reorder changes no record and reports nothing).
pub fn move_list(ds: &mut Dataset, seed: u64, nth: u32, mv: &ListMove) -> StepReport {
    let ctx = Ctx {
        e: first_of_month(ds.date),
        today: ds.date,
    };
    let mut rng = Rng::derive(seed, 4, nth as u64);
    let mut changes = Vec::new();
    let listed = ds.listed();
    for &pos in &mv.delete_positions {
        if let Some(&i) = listed.get(pos) {
            ds.employees[i].removed = true;
            changes.push(truth(
                &employee_id(&ds.employees[i]),
                "removal",
                "deleted",
                None,
            ));
        }
    }
    for _ in 0..mv.hires {
        let entry = hire(ds, &mut rng, &ctx);
        changes.push(truth(&employee_id(&entry), "hire", "created", Some(ctx.e)));
        ds.employees.push(entry);
    }
    if let Some((from, to)) = mv.reorder {
        let listed = ds.listed();
        let key = |i: usize| {
            ds.list_rank.get(&i).copied().or_else(|| {
                ds.employees[i]
                    .record
                    .get("employee_number")
                    .and_then(Value::as_f64)
            })
        };
        if let (Some(&moved), Some(&before)) = (listed.get(from), listed.get(to)) {
            // Just before the employee now at `to` (a half step: numbers are integers).
            if let Some(k) = key(before) {
                let rank = if from < to { k + 0.5 } else { k - 0.5 };
                ds.list_rank.insert(moved, rank);
            }
        }
    }
    StepReport {
        step: 0,
        date: ds.date.format("%Y-%m-%d").to_string(),
        changes,
        noise_employee_ids: Vec::new(),
    }
}

fn truth(id: &str, event: &str, change_type: &str, eff: Option<NaiveDate>) -> TruthChange {
    TruthChange {
        employee_id: id.to_string(),
        event: event.to_string(),
        change_type: change_type.to_string(),
        effective_date: eff.map(|d| d.format("%Y-%m-%d").to_string()),
    }
}

fn employee_id(e: &Entry) -> String {
    match e.record.get("id") {
        Some(Value::String(s)) => s.clone(),
        Some(v) => v.to_string(),
        None => String::new(),
    }
}

fn status(e: &Entry) -> Option<&str> {
    e.record.get("status").and_then(Value::as_str)
}

fn touch(e: &mut Entry, rng: &mut Rng, ctx: &Ctx) {
    let s = stamp(rng, ctx.today);
    if let Some(m) = e.record.as_object_mut() {
        m.insert("dt_update".into(), json!(s));
    }
}

fn record_employment(e: &mut Entry) -> Option<&mut Map<String, Value>> {
    e.record.get_mut("employment")?.as_object_mut()
}

fn latest_item(e: &mut Entry) -> Option<&mut Map<String, Value>> {
    e.employments.as_array_mut()?.last_mut()?.as_object_mut()
}

fn is_int(v: &Value) -> bool {
    v.is_i64() || v.is_u64()
}

/// A new wage in the same representation as the old one.
fn same_repr(old: &Value, new: f64) -> Value {
    if is_int(old) {
        json!(new.round() as i64)
    } else if old.as_f64().is_some_and(|x| x.fract() == 0.0) {
        json!(new.round())
    } else {
        data::wage_value(new, false)
    }
}

/// Inserts `key` right after `after` (or at the end), keeping the API's key order.
fn insert_after(m: &mut Map<String, Value>, after: &str, key: &str, value: Value) {
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
fn split_salary(e: &mut Entry, rng: &mut Rng, ctx: &Ctx, at: NaiveDate) -> Option<Changes> {
    if status(e) != Some("active") {
        return None;
    }
    record_employment(e)?;
    let item = latest_item(e)?;
    let arr = item.get_mut("salary")?;
    let ai = active_index(arr)?;
    let arr = arr.as_array_mut()?;
    let p = arr[ai].as_object_mut()?;
    if parse_date(p.get("start_date")?)? >= at || !p.get("end_date").is_none_or(Value::is_null) {
        return None;
    }
    let old_v = p.get("month_wage")?.clone();
    let old = old_v.as_f64().filter(|x| *x > 0.0)?;
    let new_v = same_repr(&old_v, old * (1.0 + rng.range(2, 6) as f64 / 100.0));
    let new = new_v.as_f64()?;
    let hour = match p.get("hour_wage").and_then(Value::as_f64) {
        Some(h) => round2(h * new / old),
        None => round2(new * 3.0 / (13.0 * 38.0)),
    };
    p.insert("end_date".into(), json!(dt(at - Duration::days(1))));
    p.insert("is_active".into(), json!(false));
    let period = json!({
        "id": rng.uuid(),
        "start_date": dt(at),
        "end_date": null,
        "hour_wage": hour,
        "month_wage": new_v,
        "yearly_wage": round2(new * 12.0),
        "is_active": true,
    });
    arr.insert(ai + 1, period.clone());
    let emp = record_employment(e)?;
    let sal = json!({
        "start_date": period["start_date"],
        "hour_wage": period["hour_wage"],
        "month_wage": period["month_wage"],
        "yearly_wage": period["yearly_wage"],
    });
    match emp.get_mut("salary").and_then(Value::as_object_mut) {
        Some(s) => {
            for (k, v) in sal.as_object()? {
                s.insert(k.clone(), v.clone());
            }
        }
        None => {
            emp.insert("salary".into(), sal);
        }
    }
    e.record
        .as_object_mut()?
        .insert("yearly_wage".into(), top_yearly_wage(new));
    touch(e, rng, ctx);
    Some(vec![("salary_change", Some(at))])
}

fn hours_change(e: &mut Entry, rng: &mut Rng, ctx: &Ctx) -> Option<Changes> {
    if status(e) != Some("active") {
        return None;
    }
    record_employment(e)?.get("contract")?.as_object()?;
    let item = latest_item(e)?;
    let arr = item.get_mut("hours")?;
    let ai = active_index(arr)?;
    let arr = arr.as_array_mut()?;
    let p = arr[ai].as_object_mut()?;
    if parse_date(p.get("start_date")?)? >= ctx.e || !p.get("end_date").is_none_or(Value::is_null) {
        return None;
    }
    let old = p.get("hours_per_week")?.as_f64()?.round() as i64;
    let choices: Vec<i64> = HOURS.iter().copied().filter(|h| *h != old).collect();
    let new = *rng.pick(&choices);
    p.insert("end_date".into(), json!(dt(ctx.e - Duration::days(1))));
    p.insert("is_active".into(), json!(false));
    let period = hours_period(rng, ctx.e, None, new, true);
    arr.insert(ai + 1, period.clone());
    let c = record_employment(e)?.get_mut("contract")?.as_object_mut()?;
    for k in ["hours_per_week", "days_per_week", "employee_type"] {
        c.insert(k.into(), period[k].clone());
    }
    touch(e, rng, ctx);
    Some(vec![("hours_change", Some(ctx.e))])
}

/// The active contract period of the latest employment if it is a fixed-term one.
fn active_fixed(e: &mut Entry) -> Option<(&mut Vec<Value>, usize)> {
    let item = latest_item(e)?;
    let arr = item.get_mut("contracts")?;
    let ai = active_index(arr)?;
    let arr = arr.as_array_mut()?;
    (arr[ai].get("contract_duration")? == "fixed").then_some((arr, ai))
}

fn renewal(e: &mut Entry, rng: &mut Rng, ctx: &Ctx) -> Option<Changes> {
    if status(e) != Some("active") {
        return None;
    }
    record_employment(e)?.get("contract")?.as_object()?;
    let (arr, ai) = active_fixed(e)?;
    let old_end = parse_date(arr[ai].get("end_date")?)?;
    // Only contracts due: ending before the month after next.
    if old_end >= add_months(ctx.e, 2) {
        return None;
    }
    let start = old_end + Duration::days(1);
    let end = add_months(start, 12) - Duration::days(1);
    arr[ai]
        .as_object_mut()?
        .insert("is_active".into(), json!(false));
    arr.insert(
        ai + 1,
        json!({
            "id": rng.uuid(),
            "start_date": dt(start),
            "end_date": dt(end),
            "contract_duration": "fixed",
            "is_signed": true,
            "sign_date": dt(ctx.today),
            "is_active": true,
        }),
    );
    let old_s = json!(dt(old_end));
    let item = latest_item(e)?;
    if item.get("end_date") == Some(&old_s) {
        item.insert("end_date".into(), json!(dt(end)));
    }
    let emp = record_employment(e)?;
    if emp.get("end_date") == Some(&old_s) {
        emp.insert("end_date".into(), json!(dt(end)));
    }
    let c = emp.get_mut("contract")?.as_object_mut()?;
    c.insert("start_date".into(), json!(dt(start)));
    c.insert("end_date".into(), json!(dt(end)));
    touch(e, rng, ctx);
    Some(vec![("contract_change", Some(start))])
}

fn conversion(e: &mut Entry, rng: &mut Rng, ctx: &Ctx) -> Option<Changes> {
    if status(e) != Some("active") {
        return None;
    }
    record_employment(e)?.get("contract")?.as_object()?;
    let (arr, ai) = active_fixed(e)?;
    let p = arr[ai].as_object_mut()?;
    if parse_date(p.get("start_date")?)? >= ctx.e {
        return None;
    }
    let close = ctx.e - Duration::days(1);
    if p.get("end_date")
        .is_none_or(|v| parse_date(v).is_none_or(|d| d > close))
    {
        p.insert("end_date".into(), json!(dt(close)));
    }
    p.insert("is_active".into(), json!(false));
    arr.insert(
        ai + 1,
        json!({
            "id": rng.uuid(),
            "start_date": dt(ctx.e),
            "end_date": null,
            "contract_duration": "permanent",
            "is_signed": true,
            "sign_date": dt(ctx.today),
            "is_active": true,
        }),
    );
    let item = latest_item(e)?;
    if item.get("end_date").is_some_and(|v| !v.is_null()) {
        item.insert("end_date".into(), Value::Null);
    }
    let emp = record_employment(e)?;
    if emp.get("end_date").is_some_and(|v| !v.is_null()) {
        emp.insert("end_date".into(), Value::Null);
    }
    let c = emp.get_mut("contract")?.as_object_mut()?;
    c.insert("start_date".into(), json!(dt(ctx.e)));
    c.insert("end_date".into(), Value::Null);
    touch(e, rng, ctx);
    Some(vec![("contract_change", Some(ctx.e))])
}

fn termination(e: &mut Entry, rng: &mut Rng, ctx: &Ctx) -> Option<Changes> {
    if status(e) != Some("active") {
        return None;
    }
    let t = last_of_month(ctx.today);
    let ts = json!(dt(t));
    let later =
        |v: Option<&Value>| v.is_none_or(|v| v.is_null() || parse_date(v).is_some_and(|d| d > t));
    let emp = record_employment(e)?;
    if !emp.get("end_date").is_none_or(Value::is_null) {
        return None;
    }
    insert_after(emp, "start_date", "end_date", ts.clone());
    let mut contract_changed = false;
    if let Some(c) = emp.get_mut("contract").and_then(Value::as_object_mut) {
        if later(c.get("end_date")) {
            c.insert("end_date".into(), ts.clone());
            contract_changed = true;
        }
    }
    let item = latest_item(e)?;
    item.insert("end_date".into(), ts.clone());
    if let Some(arr) = item.get_mut("contracts") {
        if let Some(ai) = active_index(arr) {
            let p = arr.get_mut(ai)?.as_object_mut()?;
            if later(p.get("end_date")) {
                p.insert("end_date".into(), ts.clone());
                contract_changed = true;
            }
        }
    }
    e.record
        .as_object_mut()?
        .insert("status".into(), json!("out of service"));
    touch(e, rng, ctx);
    let mut out: Changes = vec![("termination", Some(t)), ("status_change", None)];
    if contract_changed {
        out.push(("contract_change", Some(t)));
    }
    Some(out)
}

fn rehire(e: &mut Entry, rng: &mut Rng, ctx: &Ctx) -> Option<Changes> {
    if status(e) != Some("out of service") {
        return None;
    }
    let last = e.employments.as_array()?.last()?;
    if parse_date(last.get("end_date")?)? >= ctx.e {
        return None;
    }
    let old_wage_v = data::active_period(last, "salary")
        .and_then(|s| s.get("month_wage"))
        .cloned()
        .unwrap_or(json!(3000));
    let old_wage = old_wage_v.as_f64().unwrap_or(3000.0);
    let null = Value::Null;
    let old_emp = e.record.get("employment").unwrap_or(&null);
    let old_contract = old_emp.get("contract").unwrap_or(&null);
    let cur_hours = old_contract
        .get("hours_per_week")
        .and_then(Value::as_f64)
        .or_else(|| {
            data::active_period(last, "hours")
                .and_then(|h| h.get("hours_per_week"))
                .and_then(Value::as_f64)
        })
        .map(|h| h.round() as i64);
    let max_h = old_contract
        .get("max_hours")
        .cloned()
        .unwrap_or(Value::Null);
    let min_h = old_contract
        .get("min_hours")
        .cloned()
        .unwrap_or(Value::Null);
    let reduction = old_emp
        .get("tax_details")
        .and_then(|t| t.get("is_reduction_applied"))
        .and_then(Value::as_bool)
        .unwrap_or(true);
    let choices: Vec<i64> = HOURS
        .iter()
        .copied()
        .filter(|h| Some(*h) != cur_hours)
        .collect();
    let hpw = *rng.pick(&choices);
    let mut pct = rng.range(-3, 9);
    if pct >= 0 {
        pct += 1;
    }
    let month = old_wage * (1.0 + pct as f64 / 100.0);
    let plan = ItemPlan {
        start: ctx.e,
        end: None,
        today: ctx.today,
        integral_wage: is_int(&old_wage_v),
        history: false,
        signed: true,
        fixed_only: false,
        fulltime_month_wage: month * 40.0 / hpw as f64,
        hours_per_week: hpw,
    };
    let item = gen_item(rng, &plan);
    let new_wage = data::active_period(&item, "salary")?
        .get("month_wage")?
        .as_f64()?;
    if new_wage == old_wage {
        return None;
    }
    let employment = mirror(&item, false, max_h, min_h, reduction);
    e.employments.as_array_mut()?.push(item);
    let rec = e.record.as_object_mut()?;
    rec.insert("status".into(), json!("active"));
    rec.insert("yearly_wage".into(), top_yearly_wage(new_wage));
    rec.insert("employment".into(), employment);
    touch(e, rng, ctx);
    let eff = Some(ctx.e);
    Some(vec![
        ("rehired", eff),
        ("status_change", None),
        ("contract_change", eff),
        ("salary_change", eff),
        // The record carries hours without a date; the new hours period is part of the
        // `rehired` employment itself.
        ("hours_change", None),
    ])
}

fn hire(ds: &Dataset, rng: &mut Rng, ctx: &Ctx) -> Entry {
    let number = ds
        .employees
        .iter()
        .filter_map(|e| e.record.get("employee_number").and_then(Value::as_i64))
        .max()
        .unwrap_or(0)
        + 1;
    let hpw = *rng.pick(&HOURS);
    let plan = ItemPlan {
        start: ctx.e,
        end: None,
        today: ctx.today,
        integral_wage: rng.chance(0.5),
        history: false,
        signed: true,
        fixed_only: false,
        fulltime_month_wage: rng.range(2300, 5600) as f64,
        hours_per_week: hpw,
    };
    let item = gen_item(rng, &plan);
    let employment = mirror(&item, rng.chance(0.5), Value::Null, Value::Null, true);
    let month = employment["salary"]["month_wage"].as_f64().unwrap_or(0.0);
    let dt_update = stamp(rng, ctx.today);
    let trailing_space = rng.chance(0.15);
    let record = new_record(
        rng,
        RecordParts {
            company_id: &ds.company_id,
            number,
            status: "active",
            yearly_wage: top_yearly_wage(month),
            dt_create: dt_update[..19].to_string(),
            dt_update,
            trailing_space,
            employment: EmploymentField::Object(employment),
        },
    );
    Entry {
        record,
        employments: json!([item]),
        removed: false,
    }
}

/// Flips an integral number between integer and float form (same value).
fn flip(v: &mut Value) -> bool {
    if let Some(i) = v.as_i64() {
        *v = json!(i as f64);
        true
    } else if let Some(f) = v.as_f64().filter(|f| f.fract() == 0.0 && f.abs() < 1e15) {
        *v = json!(f as i64);
        true
    } else {
        false
    }
}

fn reversed(m: &Map<String, Value>) -> Map<String, Value> {
    m.iter()
        .rev()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Changes that are not HR changes: dt_update, number representation, key order.
fn noise(e: &mut Entry, rng: &mut Rng, ctx: &Ctx) -> bool {
    if !e.record.is_object() {
        return false;
    }
    let mut record_ptrs: Vec<String> = [
        "/yearly_wage",
        "/employment/salary/month_wage",
        "/employment/salary/yearly_wage",
        "/employment/contract/hours_per_week",
        "/employment/contract/days_per_week",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut item_ptrs = Vec::new();
    if let Some(items) = e.employments.as_array() {
        for (i, item) in items.iter().enumerate() {
            for (key, fields) in [
                ("salary", ["month_wage", "yearly_wage"]),
                ("hours", ["hours_per_week", "days_per_week"]),
            ] {
                let n = item.get(key).and_then(Value::as_array).map_or(0, Vec::len);
                for j in 0..n {
                    for f in fields {
                        item_ptrs.push(format!("/{i}/{key}/{j}/{f}"));
                    }
                }
            }
        }
    }
    let flippable = |root: &Value, p: &String| {
        root.pointer(p)
            .and_then(Value::as_f64)
            .is_some_and(|f| f.fract() == 0.0)
    };
    record_ptrs.retain(|p| flippable(&e.record, p));
    item_ptrs.retain(|p| flippable(&e.employments, p));
    let has_item = e
        .employments
        .as_array()
        .is_some_and(|a| a.iter().any(|i| i.as_object().is_some_and(|m| m.len() > 1)));

    let first = rng.below(3);
    for k in 0..3 {
        let done = match (first + k) % 3 {
            0 if !record_ptrs.is_empty() || !item_ptrs.is_empty() => {
                let all = record_ptrs.len() + item_ptrs.len();
                let pick = rng.below(all as u64) as usize;
                if pick < record_ptrs.len() {
                    e.record.pointer_mut(&record_ptrs[pick]).is_some_and(flip)
                } else {
                    let p = &item_ptrs[pick - record_ptrs.len()];
                    e.employments.pointer_mut(p).is_some_and(flip)
                }
            }
            1 => match e.record.as_object() {
                Some(m) if m.len() > 1 => {
                    e.record = Value::Object(reversed(m));
                    true
                }
                _ => false,
            },
            2 if has_item => {
                let items = e
                    .employments
                    .as_array_mut()
                    .map(|a| a.as_mut_slice())
                    .unwrap_or(&mut []);
                let cands: Vec<usize> = (0..items.len())
                    .filter(|&i| items[i].as_object().is_some_and(|m| m.len() > 1))
                    .collect();
                let i = *rng.pick(&cands);
                let rev = items[i].as_object().map(reversed).unwrap_or_default();
                items[i] = Value::Object(rev);
                true
            }
            _ => false,
        };
        if done {
            touch(e, rng, ctx);
            return true;
        }
    }
    false
}

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
