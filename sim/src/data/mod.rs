//! The dataset the simulator serves, its JSON form (dump/load) and its deterministic generator.
//!
//! Records are kept as `serde_json::Value` (with preserve_order) so that key order and number
//! representation are exactly what a test expects, and so that a loaded dataset with odd JSON is
//! served verbatim.

use chrono::{Datelike, Duration, Months, NaiveDate};
use serde_json::{json, Map, Value};

use crate::rng::Rng;

mod generate;

pub use generate::*;

/// One employee: the record served by list/detail, its `/employments` items, and whether it is
/// currently removed (404 everywhere, absent from the list).
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub record: Value,
    pub employments: Value,
    pub removed: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    pub company_id: String,
    pub date: NaiveDate,
    pub employees: Vec<Entry>,
    /// List positions changed without changing any record (a reorder): the sort key of these
    /// employees (by index) instead of their `employee_number`.
    pub list_rank: std::collections::HashMap<usize, f64>,
}

impl Dataset {
    pub fn to_json(&self) -> Value {
        let employees: Vec<Value> = self
            .employees
            .iter()
            .map(
                |e| json!({"record": e.record, "employments": e.employments, "removed": e.removed}),
            )
            .collect();
        json!({
            "company_id": self.company_id,
            "date": self.date.format("%Y-%m-%d").to_string(),
            "employees": employees,
        })
    }

    /// Accepts any JSON inside `record` and `employments`; only the envelope is checked.
    pub fn from_json(
        v: &Value,
        default_company: &str,
        default_date: NaiveDate,
    ) -> Result<Dataset, String> {
        let obj = v.as_object().ok_or("dataset must be a JSON object")?;
        let company_id = match obj.get("company_id") {
            None | Some(Value::Null) => default_company.to_string(),
            Some(Value::String(s)) => s.clone(),
            Some(_) => return Err("company_id must be a string".into()),
        };
        let date = match obj.get("date") {
            None | Some(Value::Null) => default_date,
            Some(d) => parse_date(d).ok_or("date must be a string YYYY-MM-DD")?,
        };
        let list = obj
            .get("employees")
            .and_then(Value::as_array)
            .ok_or("employees must be an array")?;
        let mut employees = Vec::with_capacity(list.len());
        for (i, e) in list.iter().enumerate() {
            let eo = e
                .as_object()
                .ok_or_else(|| format!("employees[{i}] must be an object"))?;
            let record = eo
                .get("record")
                .cloned()
                .ok_or_else(|| format!("employees[{i}].record is missing"))?;
            let employments = eo.get("employments").cloned().unwrap_or(Value::Null);
            let removed = match eo.get("removed") {
                None | Some(Value::Null) => false,
                Some(Value::Bool(b)) => *b,
                Some(_) => return Err(format!("employees[{i}].removed must be a boolean")),
            };
            employees.push(Entry {
                record,
                employments,
                removed,
            });
        }
        Ok(Dataset {
            company_id,
            date,
            employees,
            list_rank: Default::default(),
        })
    }

    /// Indices of the listed (not removed) employees in list order: `employee_number` ascending
    /// (or the rank a reorder gave), records without a numeric one last, ties in dataset order.
    pub fn listed(&self) -> Vec<usize> {
        let mut idx: Vec<usize> = (0..self.employees.len())
            .filter(|&i| !self.employees[i].removed)
            .collect();
        let key = |i: usize| {
            self.list_rank
                .get(&i)
                .copied()
                .or_else(|| number_key(&self.employees[i].record))
        };
        idx.sort_by(|&a, &b| {
            let (ka, kb) = (key(a), key(b));
            match (ka, kb) {
                (Some(x), Some(y)) => x.partial_cmp(&y).unwrap_or(std::cmp::Ordering::Equal),
                (Some(_), None) => std::cmp::Ordering::Less,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (None, None) => std::cmp::Ordering::Equal,
            }
        });
        idx
    }

    /// The listed employee with this id.
    pub fn find(&self, id: &str) -> Option<&Entry> {
        self.employees
            .iter()
            .find(|e| !e.removed && e.record.get("id").and_then(Value::as_str) == Some(id))
    }

    /// A few plausible monthly payroll periods around the current date.
    pub fn payruns(&self) -> Value {
        let mut out = Vec::new();
        let cur = first_of_month(self.date);
        let mut rng = Rng::derive(fnv(&self.company_id), 7, 0);
        for back in (0..4).rev() {
            let start = add_months(cur, -back);
            let end = last_of_month(start);
            let mut r = Rng::derive(rng.next_u64(), start.year() as u64, start.month() as u64);
            out.push(json!({
                "id": r.uuid(),
                "period": start.format("%Y-%m").to_string(),
                "start_date": dt(start),
                "end_date": dt(end),
                "payment_date": dt(start.with_day(25).unwrap_or(end)),
                "status": if back == 0 { "open" } else { "processed" },
            }));
        }
        Value::Array(out)
    }
}

fn number_key(record: &Value) -> Option<f64> {
    record.get("employee_number").and_then(Value::as_f64)
}

fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

// ---------- date and number helpers shared with `advance` ----------

/// `YYYY-MM-DDT00:00:00`, the API's date format.
pub fn dt(d: NaiveDate) -> String {
    d.format("%Y-%m-%dT00:00:00").to_string()
}

/// A date from the first ten characters of a JSON string.
pub fn parse_date(v: &Value) -> Option<NaiveDate> {
    let s = v.as_str()?;
    NaiveDate::parse_from_str(s.get(..10)?, "%Y-%m-%d").ok()
}

pub fn add_months(d: NaiveDate, n: i32) -> NaiveDate {
    if n >= 0 {
        d.checked_add_months(Months::new(n as u32)).unwrap_or(d)
    } else {
        d.checked_sub_months(Months::new((-n) as u32)).unwrap_or(d)
    }
}

pub fn first_of_month(d: NaiveDate) -> NaiveDate {
    d.with_day(1).unwrap_or(d)
}

pub fn last_of_month(d: NaiveDate) -> NaiveDate {
    add_months(first_of_month(d), 1) - Duration::days(1)
}

pub fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// A month wage as the API sends it: an integer, or a float with cents that is never integral.
pub fn wage_value(x: f64, integral: bool) -> Value {
    if integral {
        json!(x.round() as i64)
    } else {
        let mut v = round2(x);
        if v.fract() == 0.0 {
            v += 0.5;
        }
        json!(v)
    }
}

pub fn employee_type(hours_per_week: f64) -> &'static str {
    if hours_per_week >= 36.0 {
        "fulltime"
    } else {
        "parttime"
    }
}

pub fn days_per_week(hours_per_week: i64) -> i64 {
    ((hours_per_week + 7) / 8).clamp(2, 5)
}

pub const HOURS: [i64; 12] = [16, 20, 24, 24, 28, 32, 32, 36, 36, 38, 40, 40];

/// A `dt_update`-style timestamp on day `d`, with microseconds.
pub fn stamp(rng: &mut Rng, d: NaiveDate) -> String {
    format!(
        "{}T{:02}:{:02}:{:02}.{:06}",
        d.format("%Y-%m-%d"),
        rng.range(7, 19),
        rng.range(0, 59),
        rng.range(0, 59),
        rng.range(0, 999_999)
    )
}

pub fn salary_period(
    rng: &mut Rng,
    start: NaiveDate,
    end: Option<NaiveDate>,
    month: f64,
    integral: bool,
    hours_per_week: i64,
    active: bool,
) -> Value {
    let mw = wage_value(month, integral);
    let m = mw.as_f64().unwrap_or(month);
    json!({
        "id": rng.uuid(),
        "start_date": dt(start),
        "end_date": end.map(dt),
        "hour_wage": round2(m * 3.0 / (13.0 * hours_per_week.max(1) as f64)),
        "month_wage": mw,
        "yearly_wage": round2(m * 12.0),
        "is_active": active,
    })
}

pub fn hours_period(
    rng: &mut Rng,
    start: NaiveDate,
    end: Option<NaiveDate>,
    hours_per_week: i64,
    active: bool,
) -> Value {
    json!({
        "id": rng.uuid(),
        "start_date": dt(start),
        "end_date": end.map(dt),
        "hours_per_week": hours_per_week,
        "days_per_week": days_per_week(hours_per_week),
        "employee_type": employee_type(hours_per_week as f64),
        "is_active": active,
    })
}

pub fn contract_period(
    rng: &mut Rng,
    start: NaiveDate,
    end: Option<NaiveDate>,
    duration: &str,
    signed: bool,
    active: bool,
) -> Value {
    let sign = start - Duration::days(rng.range(5, 40));
    json!({
        "id": rng.uuid(),
        "start_date": dt(start),
        "end_date": end.map(dt),
        "contract_duration": duration,
        "is_signed": signed,
        "sign_date": if signed { Value::String(dt(sign)) } else { Value::Null },
        "is_active": active,
    })
}

/// Index of the active period of a `salary`/`hours`/`contracts` array: the last with
/// `is_active: true`.
pub fn active_index(periods: &Value) -> Option<usize> {
    periods
        .as_array()?
        .iter()
        .rposition(|p| p.get("is_active") == Some(&Value::Bool(true)))
}

pub fn active_period<'a>(item: &'a Value, key: &str) -> Option<&'a Value> {
    let arr = item.get(key)?;
    arr.get(active_index(arr)?)
}

/// The record's `employment` object for an employment item: start/end of the item, the active
/// contract and hours periods, tax details and the active salary period.
pub fn mirror(
    item: &Value,
    end_absent_if_null: bool,
    max_hours: Value,
    min_hours: Value,
    reduction: bool,
) -> Value {
    let null = Value::Null;
    let c = active_period(item, "contracts").unwrap_or(&null);
    let h = active_period(item, "hours").unwrap_or(&null);
    let s = active_period(item, "salary").unwrap_or(&null);
    let g = |v: &Value, k: &str| v.get(k).cloned().unwrap_or(Value::Null);
    let mut m = Map::new();
    m.insert("start_date".into(), g(item, "start_date"));
    let end = g(item, "end_date");
    if !(end.is_null() && end_absent_if_null) {
        m.insert("end_date".into(), end);
    }
    m.insert(
        "contract".into(),
        json!({
            "start_date": g(c, "start_date"),
            "end_date": g(c, "end_date"),
            "hours_per_week": g(h, "hours_per_week"),
            "max_hours": max_hours,
            "min_hours": min_hours,
            "days_per_week": g(h, "days_per_week"),
            "employee_type": g(h, "employee_type"),
        }),
    );
    m.insert(
        "tax_details".into(),
        json!({"start_date": g(item, "start_date"), "is_reduction_applied": reduction}),
    );
    m.insert(
        "salary".into(),
        json!({
            "start_date": g(s, "start_date"),
            "hour_wage": g(s, "hour_wage"),
            "month_wage": g(s, "month_wage"),
            "yearly_wage": g(s, "yearly_wage"),
        }),
    );
    Value::Object(m)
}

/// The top-level `yearly_wage`: a different figure from `employment.salary.yearly_wage`
/// (holiday allowance included).
pub fn top_yearly_wage(month_wage: f64) -> Value {
    json!(round2(month_wage * 12.0 * 1.08))
}

// ---------- people ----------

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iban_has_valid_check_digits() {
        let mut r = Rng::derive(5, 0, 0);
        for _ in 0..20 {
            let s = iban(&mut r);
            let re = format!("{}{}", &s[4..], &s[..4]);
            let mut rem = 0u64;
            for c in re.chars() {
                let v = if c.is_ascii_digit() {
                    c.to_string()
                } else {
                    (c as u64 - 'A' as u64 + 10).to_string()
                };
                for d in v.chars() {
                    rem = (rem * 10 + d.to_digit(10).unwrap() as u64) % 97;
                }
            }
            assert_eq!(rem, 1, "{s}");
        }
    }

    #[test]
    fn periods_are_contiguous_and_last_is_active() {
        let today = NaiveDate::from_ymd_opt(2026, 1, 1).unwrap();
        let ds = generate_dataset(200, 3, today, "c");
        for e in &ds.employees {
            for item in e.employments.as_array().unwrap() {
                for key in ["salary", "hours", "contracts"] {
                    let ps = item[key].as_array().unwrap();
                    assert!(!ps.is_empty());
                    assert_eq!(active_index(&item[key]), Some(ps.len() - 1));
                    assert_eq!(ps[0]["start_date"], item["start_date"]);
                    for w in ps.windows(2) {
                        let end = parse_date(&w[0]["end_date"]).unwrap();
                        let next = parse_date(&w[1]["start_date"]).unwrap();
                        assert_eq!(end + Duration::days(1), next, "{key} {item}");
                    }
                }
            }
        }
    }
}
