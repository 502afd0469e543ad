//! The dataset the simulator serves, its JSON form (dump/load) and its deterministic generator.
//!
//! Records are kept as `serde_json::Value` (with preserve_order) so that key order and number
//! representation are exactly what a test expects, and so that a loaded dataset with odd JSON is
//! served verbatim.

use chrono::{Datelike, Duration, Months, NaiveDate};
use serde_json::{json, Map, Value};

use crate::rng::Rng;

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

const MALE: &[&str] = &[
    "Jan", "Pieter", "Daan", "Sem", "Lucas", "Bram", "Thijs", "Ruben", "Jeroen", "Mark", "Sander",
    "Bas", "Joost", "Wouter", "Maarten", "Kees", "Henk", "Tim", "Niels", "Koen", "Stefan", "Rick",
    "Martijn", "Gijs", "Erik", "Dennis", "Milan", "Jesse", "Luuk", "Floris",
];
const FEMALE: &[&str] = &[
    "Anna", "Emma", "Sophie", "Julia", "Lotte", "Sanne", "Fleur", "Eva", "Lisa", "Anouk", "Iris",
    "Femke", "Marloes", "Ingrid", "Petra", "Mirjam", "Esther", "Linda", "Noor", "Tess", "Maud",
    "Roos", "Lieke", "Saskia", "Karin", "Annemiek", "Yvonne", "Nina", "Evi", "Merel",
];
const SURNAMES: &[(&str, &str)] = &[
    ("", "Jansen"),
    ("de", "Jong"),
    ("de", "Vries"),
    ("van den", "Berg"),
    ("van", "Dijk"),
    ("", "Bakker"),
    ("", "Janssen"),
    ("", "Visser"),
    ("", "Smit"),
    ("", "Meijer"),
    ("de", "Boer"),
    ("", "Mulder"),
    ("de", "Groot"),
    ("", "Bos"),
    ("", "Vos"),
    ("", "Peters"),
    ("", "Hendriks"),
    ("van", "Leeuwen"),
    ("", "Dekker"),
    ("", "Brouwer"),
    ("de", "Wit"),
    ("", "Dijkstra"),
    ("", "Smits"),
    ("de", "Graaf"),
    ("van der", "Meer"),
    ("van der", "Linden"),
    ("", "Kok"),
    ("", "Jacobs"),
    ("de", "Haan"),
    ("", "Vermeulen"),
    ("van den", "Heuvel"),
    ("van der", "Veen"),
    ("van den", "Broek"),
    ("de", "Bruijn"),
    ("van der", "Heijden"),
    ("", "Schouten"),
    ("van", "Beek"),
    ("", "Willems"),
    ("van", "Vliet"),
    ("", "Hoekstra"),
];
const CITIES: &[(&str, i64)] = &[
    ("Amsterdam", 1011),
    ("Rotterdam", 3011),
    ("Den Haag", 2511),
    ("Utrecht", 3511),
    ("Eindhoven", 5611),
    ("Groningen", 9711),
    ("Tilburg", 5011),
    ("Almere", 1311),
    ("Breda", 4811),
    ("Nijmegen", 6511),
    ("Haarlem", 2011),
    ("Arnhem", 6811),
    ("Amersfoort", 3811),
    ("Zwolle", 8011),
    ("Leiden", 2311),
    ("Delft", 2611),
    ("Maastricht", 6211),
    ("Leeuwarden", 8911),
    ("Deventer", 7411),
    ("Alkmaar", 1811),
];
const STREETS: &[&str] = &[
    "Kerkstraat",
    "Schoolstraat",
    "Dorpsstraat",
    "Molenweg",
    "Lange Gracht",
    "Stationsweg",
    "Julianastraat",
    "Beatrixlaan",
    "Wilhelminastraat",
    "Nieuwstraat",
    "Oranjestraat",
    "Prinsengracht",
    "Herengracht",
    "Keizersgracht",
    "Vondelstraat",
    "Parallelweg",
    "Industrieweg",
    "Eikenlaan",
    "Beukenlaan",
    "Lindenlaan",
    "Marktplein",
    "Havenstraat",
    "Burgemeester de Withstraat",
    "Van Goghstraat",
    "Rembrandtlaan",
];
const BANKS: &[&str] = &[
    "ABNA", "INGB", "RABO", "TRIO", "SNSB", "ASNB", "KNAB", "BUNQ",
];

fn iban(rng: &mut Rng) -> String {
    let bank = *rng.pick(BANKS);
    let account = format!("{:010}", rng.below(10_000_000_000));
    // ISO 13616 check digits: move "NL00" to the end, letters to numbers, 98 - mod 97.
    let rearranged = format!("{bank}{account}NL00");
    let mut rem = 0u64;
    for c in rearranged.chars() {
        let digits = if c.is_ascii_digit() {
            c.to_string()
        } else {
            (c as u64 - 'A' as u64 + 10).to_string()
        };
        for d in digits.chars() {
            rem = (rem * 10 + d.to_digit(10).unwrap_or(0) as u64) % 97;
        }
    }
    format!("NL{:02}{bank}{account}", 98 - rem)
}

/// What goes in the record's `employment` key.
pub enum EmploymentField {
    Absent,
    Null,
    Object(Value),
}

/// The variable parts of a new record.
pub struct RecordParts<'a> {
    pub company_id: &'a str,
    pub number: i64,
    pub status: &'a str,
    pub yearly_wage: Value,
    pub dt_create: String,
    pub dt_update: String,
    pub trailing_space: bool,
    pub employment: EmploymentField,
}

/// A complete employee record with personal data from `rng`, keys in the API's order.
pub fn new_record(rng: &mut Rng, p: RecordParts) -> Value {
    let female = rng.chance(0.5);
    let first = *rng.pick(if female { FEMALE } else { MALE });
    let (prefix, surname) = *rng.pick(SURNAMES);
    let initials = if rng.chance(0.25) {
        let second = rng.pick(if female { FEMALE } else { MALE });
        format!("{}.{}.", &first[..1], &second[..1])
    } else {
        format!("{}.", &first[..1])
    };
    let dob = NaiveDate::from_ymd_opt(1960, 1, 1).unwrap_or_default()
        + Duration::days(rng.range(0, 44 * 365));
    let (city, zip_base) = *rng.pick(CITIES);
    let letters = b"ABCDEGHJKLMNPRSTVWXZ";
    let zipcode = format!(
        "{}{}{}",
        zip_base + rng.range(0, 80),
        letters[rng.below(letters.len() as u64) as usize] as char,
        letters[rng.below(letters.len() as u64) as usize] as char
    );
    let mut street = rng.pick(STREETS).to_string();
    if p.trailing_space {
        street.push(' ');
    }
    let mut housenumber = rng.range(1, 240).to_string();
    if rng.chance(0.1) {
        housenumber.push(*rng.pick(&['A', 'B', 'C']));
    }
    let mail_name = format!(
        "{}.{}{}",
        first.to_lowercase(),
        prefix.replace(' ', "").to_lowercase(),
        surname.to_lowercase()
    );
    let domain = *rng.pick(&["example.nl", "example.org", "example.com"]);
    let mut m = Map::new();
    m.insert("id".into(), json!(rng.uuid()));
    m.insert("administration_id".into(), json!(p.company_id));
    m.insert("employee_type_id".into(), json!(rng.range(1, 4)));
    m.insert("employee_number".into(), json!(p.number));
    m.insert("first_name".into(), json!(first));
    m.insert("surname".into(), json!(surname));
    m.insert("surname_prefix".into(), json!(prefix));
    m.insert("initials".into(), json!(initials));
    m.insert(
        "gender".into(),
        json!(if female { "female" } else { "male" }),
    );
    m.insert("date_of_birth".into(), json!(dt(dob)));
    m.insert("street".into(), json!(street));
    m.insert("housenumber".into(), json!(housenumber));
    m.insert("zipcode".into(), json!(zipcode));
    m.insert("city".into(), json!(city));
    m.insert("country_code".into(), json!("NL"));
    m.insert("iban".into(), json!(iban(rng)));
    m.insert("email".into(), json!(format!("{mail_name}@{domain}")));
    m.insert(
        "phone_number".into(),
        json!(format!("+31 6 {:08}", rng.below(100_000_000))),
    );
    m.insert("status".into(), json!(p.status));
    m.insert("yearly_wage".into(), p.yearly_wage);
    m.insert("dt_create".into(), json!(p.dt_create));
    m.insert("dt_update".into(), json!(p.dt_update));
    match p.employment {
        EmploymentField::Absent => {}
        EmploymentField::Null => {
            m.insert("employment".into(), Value::Null);
        }
        EmploymentField::Object(v) => {
            m.insert("employment".into(), v);
        }
    }
    Value::Object(m)
}

// ---------- employments ----------

/// How to build one employment item.
pub struct ItemPlan {
    pub start: NaiveDate,
    /// Known end of the employment (ended employments only).
    pub end: Option<NaiveDate>,
    /// The dataset's current date: history is generated up to it.
    pub today: NaiveDate,
    pub integral_wage: bool,
    /// Several contract/hours/salary periods instead of one each.
    pub history: bool,
    pub signed: bool,
    /// Only fixed-term contracts (an employee still on a chain of fixed-term contracts).
    pub fixed_only: bool,
    /// Month wage of the final salary period (full-time equivalent is scaled by hours).
    pub fulltime_month_wage: f64,
    /// Hours per week of the final hours period.
    pub hours_per_week: i64,
}

/// A complete employment item, with the `end_date` of the plan.
pub fn gen_item(rng: &mut Rng, plan: &ItemPlan) -> Value {
    let day = Duration::days(1);
    let limit = plan.end.unwrap_or(plan.today);

    // contracts: a run of fixed-term contracts, possibly converted to a permanent one
    let mut contracts: Vec<(NaiveDate, Option<NaiveDate>, &str)> = Vec::new();
    let mut cursor = plan.start;
    loop {
        let p_fixed = if plan.fixed_only {
            1.0
        } else if !plan.history {
            0.5
        } else if contracts.is_empty() {
            0.65
        } else {
            0.45
        };
        if !rng.chance(p_fixed) || (!plan.fixed_only && contracts.len() >= 4) {
            contracts.push((cursor, None, "permanent"));
            break;
        }
        let months = if rng.chance(0.3) { 6 } else { 12 };
        let pend = add_months(cursor, months) - day;
        contracts.push((cursor, Some(pend), "fixed"));
        if !plan.history || pend >= limit {
            break;
        }
        cursor = pend + day;
    }
    if let Some(e) = plan.end {
        contracts.retain(|c| c.0 <= e);
        if let Some(last) = contracts.last_mut() {
            if last.1.is_none_or(|x| x > e) {
                last.1 = Some(e);
            }
        }
    }
    let nc = contracts.len();
    let contracts: Vec<Value> = contracts
        .iter()
        .enumerate()
        .map(|(i, (s, e, d))| {
            let signed = plan.signed || i + 1 < nc;
            contract_period(rng, *s, *e, d, signed, i + 1 == nc)
        })
        .collect();

    // hours: sometimes one earlier period with other hours
    let h = plan.hours_per_week;
    let mut hours = Vec::new();
    let change_from = add_months(first_of_month(plan.start), 3);
    if plan.history && change_from < limit && rng.chance(0.3) {
        let span = (limit - change_from).num_days().max(1);
        let b = first_of_month(change_from + Duration::days(rng.range(0, span - 1)));
        let b = if b <= plan.start { change_from } else { b };
        let mut prev = *rng.pick(&HOURS);
        if prev == h {
            prev = if h >= 32 { h - 8 } else { h + 8 };
        }
        hours.push(hours_period(rng, plan.start, Some(b - day), prev, false));
        hours.push(hours_period(rng, b, None, h, true));
    } else {
        hours.push(hours_period(rng, plan.start, None, h, true));
    }

    // salary: yearly raises on 1 January, the last few kept as periods
    let mut starts = vec![plan.start];
    if plan.history {
        let mut bounds: Vec<NaiveDate> = ((plan.start.year() + 1)..=limit.year())
            .filter_map(|y| NaiveDate::from_ymd_opt(y, 1, 1))
            .filter(|d| *d > plan.start && *d <= limit)
            .collect();
        let k = (rng.below(4) as usize).min(bounds.len());
        starts.extend(bounds.split_off(bounds.len() - k));
    }
    let final_wage = plan.fulltime_month_wage * h as f64 / 40.0;
    let mut wages = vec![final_wage; starts.len()];
    for i in (0..starts.len().saturating_sub(1)).rev() {
        wages[i] = wages[i + 1] / (1.0 + rng.range(2, 6) as f64 / 100.0);
    }
    let n = starts.len();
    let salary: Vec<Value> = (0..n)
        .map(|i| {
            let end = if i + 1 < n {
                Some(starts[i + 1] - day)
            } else {
                None
            };
            salary_period(
                rng,
                starts[i],
                end,
                wages[i],
                plan.integral_wage,
                h,
                i + 1 == n,
            )
        })
        .collect();

    json!({
        "id": rng.uuid(),
        "start_date": dt(plan.start),
        "end_date": plan.end.map(dt),
        "salary": salary,
        "hours": hours,
        "contracts": contracts,
    })
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Category {
    NoEmployment,
    Active,
    Pending,
    OutOfService,
    Rehired,
}

/// The generated dataset: `employees` records with the quirks of employes-api.md present in every
/// dataset of at least 20 employees.
pub fn generate_dataset(n: usize, seed: u64, today: NaiveDate, company_id: &str) -> Dataset {
    let mut rng = Rng::derive(seed, 0, 0);
    let share = |p: f64| ((n as f64 * p).round() as usize).max(1);
    let mut cats = Vec::with_capacity(n);
    cats.extend(std::iter::repeat_n(Category::NoEmployment, share(0.25)));
    cats.extend(std::iter::repeat_n(Category::Rehired, share(0.05)));
    cats.extend(std::iter::repeat_n(Category::OutOfService, share(0.06)));
    cats.extend(std::iter::repeat_n(Category::Pending, share(0.03)));
    cats.truncate(n);
    while cats.len() < n {
        cats.push(Category::Active);
    }
    rng.shuffle(&mut cats);

    let day = Duration::days(1);
    let (mut k_none, mut k_emp, mut k_open, mut k_pending) = (0usize, 0usize, 0usize, 0usize);
    let mut employees = Vec::with_capacity(n);
    for (i, cat) in cats.iter().enumerate() {
        let mut r = Rng::derive(seed, 1, i as u64);
        let number = i as i64 + 1;
        let age = Duration::days(r.range(1, 400));
        let dt_update = stamp(&mut r, today - age);
        let trailing_space = i % 7 == 3;
        let sentinel = i % 5 == 2;
        let wage = r.range(2300, 5600) as f64;
        let hpw = *r.pick(&HOURS);

        if *cat == Category::NoEmployment {
            let created = today - Duration::days(r.range(30, 3000));
            let field = if k_none % 2 == 0 {
                EmploymentField::Absent
            } else {
                EmploymentField::Null
            };
            k_none += 1;
            let dt_create = if sentinel {
                "0001-01-01T00:00:00".to_string()
            } else {
                stamp(&mut r, created)[..19].to_string()
            };
            let record = new_record(
                &mut r,
                RecordParts {
                    company_id,
                    number,
                    status: "active",
                    yearly_wage: json!(0),
                    dt_create,
                    dt_update,
                    trailing_space,
                    employment: field,
                },
            );
            employees.push(Entry {
                record,
                employments: json!([]),
                removed: false,
            });
            continue;
        }

        let integral_wage = k_emp % 2 == 0;
        let (max_h, min_h) = match k_emp % 3 {
            0 => (Value::Null, Value::Null),
            1 => (json!(0), json!(0)),
            _ => (Value::Null, json!(0)),
        };
        k_emp += 1;
        let mut plan = ItemPlan {
            start: today,
            end: None,
            today,
            integral_wage,
            history: true,
            signed: true,
            fixed_only: false,
            fulltime_month_wage: wage,
            hours_per_week: hpw,
        };
        let mut items = Vec::new();
        let status = match cat {
            Category::Active => {
                // About four in ten still on fixed-term contracts, the others longer in service.
                plan.fixed_only = r.chance(0.4);
                let age = if plan.fixed_only { 700 } else { 3650 };
                let mut s = today - Duration::days(r.range(45, age));
                if r.chance(0.5) {
                    s = first_of_month(s);
                }
                plan.start = s;
                "active"
            }
            Category::Pending => {
                plan.start = first_of_month(add_months(today, r.range(1, 2) as i32));
                plan.history = false;
                plan.signed = k_pending % 2 == 0;
                k_pending += 1;
                "pending"
            }
            Category::OutOfService => {
                let e = last_of_month(add_months(today, -(r.range(1, 18) as i32)));
                plan.start = e - Duration::days(r.range(200, 2500));
                plan.end = Some(e);
                "out of service"
            }
            Category::Rehired => {
                let e1 = last_of_month(add_months(today, -(r.range(20, 48) as i32)));
                let s1 = e1 - Duration::days(r.range(300, 1500));
                let first = ItemPlan {
                    start: s1,
                    end: Some(e1),
                    fulltime_month_wage: wage * 0.9,
                    hours_per_week: *r.pick(&HOURS),
                    ..plan
                };
                items.push(gen_item(&mut r, &first));
                plan.start = first_of_month(add_months(e1 + day, r.range(3, 12) as i32));
                "active"
            }
            Category::NoEmployment => unreachable!("handled above"),
        };
        let mut item = gen_item(&mut r, &plan);
        // Some fixed-term employees carry the contract end as the planned employment end.
        if *cat == Category::Active && r.chance(0.5) {
            if let Some(c) = active_period(&item, "contracts") {
                if c.get("contract_duration") == Some(&json!("fixed")) {
                    let end = c.get("end_date").cloned().unwrap_or(Value::Null);
                    item["end_date"] = end;
                }
            }
        }
        let absent = if item.get("end_date").is_none_or(Value::is_null) {
            k_open += 1;
            k_open % 2 == 0
        } else {
            false
        };
        let employment = mirror(&item, absent, max_h, min_h, r.chance(0.8));
        let month = employment["salary"]["month_wage"].as_f64().unwrap_or(0.0);
        let dt_create = if sentinel {
            "0001-01-01T00:00:00".to_string()
        } else {
            let first_start = items
                .first()
                .and_then(|it| parse_date(&it["start_date"]))
                .unwrap_or(plan.start);
            let created = (first_start - Duration::days(r.range(3, 60))).min(today - day);
            stamp(&mut r, created)[..19].to_string()
        };
        items.push(item);
        let record = new_record(
            &mut r,
            RecordParts {
                company_id,
                number,
                status,
                yearly_wage: top_yearly_wage(month),
                dt_create,
                dt_update,
                trailing_space,
                employment: EmploymentField::Object(employment),
            },
        );
        employees.push(Entry {
            record,
            employments: Value::Array(items),
            removed: false,
        });
    }
    Dataset {
        company_id: company_id.to_string(),
        date: today,
        employees,
        list_rank: Default::default(),
    }
}

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
