//! The HR events a month can bring, each applied to one employee's record and history: raises,
//! hours changes, contract renewals and conversions, terminations, rehires, hires, and noise
//! (JSON that changes without any HR change).

use super::*;

pub(super) fn split_salary(
    e: &mut Entry,
    rng: &mut Rng,
    ctx: &Ctx,
    at: NaiveDate,
) -> Option<Changes> {
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

pub(super) fn hours_change(e: &mut Entry, rng: &mut Rng, ctx: &Ctx) -> Option<Changes> {
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
pub(super) fn active_fixed(e: &mut Entry) -> Option<(&mut Vec<Value>, usize)> {
    let item = latest_item(e)?;
    let arr = item.get_mut("contracts")?;
    let ai = active_index(arr)?;
    let arr = arr.as_array_mut()?;
    (arr[ai].get("contract_duration")? == "fixed").then_some((arr, ai))
}

pub(super) fn renewal(e: &mut Entry, rng: &mut Rng, ctx: &Ctx) -> Option<Changes> {
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

pub(super) fn conversion(e: &mut Entry, rng: &mut Rng, ctx: &Ctx) -> Option<Changes> {
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

pub(super) fn termination(e: &mut Entry, rng: &mut Rng, ctx: &Ctx) -> Option<Changes> {
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

pub(super) fn rehire(e: &mut Entry, rng: &mut Rng, ctx: &Ctx) -> Option<Changes> {
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

pub(super) fn hire(ds: &Dataset, rng: &mut Rng, ctx: &Ctx) -> Entry {
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
pub(super) fn flip(v: &mut Value) -> bool {
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

pub(super) fn reversed(m: &Map<String, Value>) -> Map<String, Value> {
    m.iter()
        .rev()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Changes that are not HR changes: dt_update, number representation, key order.
pub(super) fn noise(e: &mut Entry, rng: &mut Rng, ctx: &Ctx) -> bool {
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
