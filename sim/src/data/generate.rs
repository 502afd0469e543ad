//! The deterministic generator: N employees from a seed, with plausible Dutch names, addresses,
//! IBANs, employments and salary, hours and contract periods.

use super::*;

pub(super) const MALE: &[&str] = &[
    "Jan", "Pieter", "Daan", "Sem", "Lucas", "Bram", "Thijs", "Ruben", "Jeroen", "Mark", "Sander",
    "Bas", "Joost", "Wouter", "Maarten", "Kees", "Henk", "Tim", "Niels", "Koen", "Stefan", "Rick",
    "Martijn", "Gijs", "Erik", "Dennis", "Milan", "Jesse", "Luuk", "Floris",
];
pub(super) const FEMALE: &[&str] = &[
    "Anna", "Emma", "Sophie", "Julia", "Lotte", "Sanne", "Fleur", "Eva", "Lisa", "Anouk", "Iris",
    "Femke", "Marloes", "Ingrid", "Petra", "Mirjam", "Esther", "Linda", "Noor", "Tess", "Maud",
    "Roos", "Lieke", "Saskia", "Karin", "Annemiek", "Yvonne", "Nina", "Evi", "Merel",
];
pub(super) const SURNAMES: &[(&str, &str)] = &[
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
pub(super) const CITIES: &[(&str, i64)] = &[
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
pub(super) const STREETS: &[&str] = &[
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
pub(super) const BANKS: &[&str] = &[
    "ABNA", "INGB", "RABO", "TRIO", "SNSB", "ASNB", "KNAB", "BUNQ",
];

pub(super) fn iban(rng: &mut Rng) -> String {
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
pub(super) enum Category {
    NoEmployment,
    Active,
    Pending,
    OutOfService,
    Rehired,
}

/// The generated dataset: `employees` records with the quirks of employes-api.md present in every
/// dataset of at least 20 employees.
pub fn generate_dataset(n: usize, seed: u64, today: NaiveDate, company_id: &str) -> Dataset {
    let mut counts = Counts::default();
    let employees = categories(n, seed)
        .into_iter()
        .enumerate()
        .map(|(i, cat)| {
            let mut r = Rng::derive(seed, 1, i as u64);
            let c = Common::draw(&mut r, i, today);
            if cat == Category::NoEmployment {
                without_employment(&mut r, &c, today, company_id, &mut counts)
            } else {
                employed(&mut r, &c, cat, today, company_id, &mut counts)
            }
        })
        .collect();
    Dataset {
        company_id: company_id.to_string(),
        date: today,
        employees,
        list_rank: Default::default(),
    }
}

/// Who is what: a quarter without employment, 5% rehired, 6% out of service, 3% pending, the
/// rest active; shuffled.
fn categories(n: usize, seed: u64) -> Vec<Category> {
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
    cats
}

/// Running counts that alternate the variants (absent or null employment, integral wages, ...).
#[derive(Default)]
struct Counts {
    no_employment: usize,
    employed: usize,
    open_ended: usize,
    pending: usize,
}

/// What every employee draws first, in this order (the generator is deterministic).
struct Common {
    number: i64,
    dt_update: String,
    trailing_space: bool,
    sentinel: bool,
    wage: f64,
    hours_per_week: i64,
}

impl Common {
    fn draw(r: &mut Rng, i: usize, today: NaiveDate) -> Common {
        let age = Duration::days(r.range(1, 400));
        Common {
            number: i as i64 + 1,
            dt_update: stamp(r, today - age),
            trailing_space: i % 7 == 3,
            sentinel: i % 5 == 2,
            wage: r.range(2300, 5600) as f64,
            hours_per_week: *r.pick(&HOURS),
        }
    }
}

fn without_employment(
    r: &mut Rng,
    c: &Common,
    today: NaiveDate,
    company_id: &str,
    counts: &mut Counts,
) -> Entry {
    let created = today - Duration::days(r.range(30, 3000));
    let field = if counts.no_employment.is_multiple_of(2) {
        EmploymentField::Absent
    } else {
        EmploymentField::Null
    };
    counts.no_employment += 1;
    let dt_create = if c.sentinel {
        "0001-01-01T00:00:00".to_string()
    } else {
        stamp(r, created)[..19].to_string()
    };
    let record = new_record(
        r,
        RecordParts {
            company_id,
            number: c.number,
            status: "active",
            yearly_wage: json!(0),
            dt_create,
            dt_update: c.dt_update.clone(),
            trailing_space: c.trailing_space,
            employment: field,
        },
    );
    Entry {
        record,
        employments: json!([]),
        removed: false,
    }
}

fn employed(
    r: &mut Rng,
    c: &Common,
    cat: Category,
    today: NaiveDate,
    company_id: &str,
    counts: &mut Counts,
) -> Entry {
    let (max_h, min_h) = match counts.employed % 3 {
        0 => (Value::Null, Value::Null),
        1 => (json!(0), json!(0)),
        _ => (Value::Null, json!(0)),
    };
    let mut plan = ItemPlan {
        start: today,
        end: None,
        today,
        integral_wage: counts.employed.is_multiple_of(2),
        history: true,
        signed: true,
        fixed_only: false,
        fulltime_month_wage: c.wage,
        hours_per_week: c.hours_per_week,
    };
    counts.employed += 1;
    let mut items = Vec::new();
    let status = plan_employment(r, cat, &mut plan, &mut items, counts);
    let mut item = gen_item(r, &plan);
    // Some fixed-term employees carry the contract end as the planned employment end.
    if cat == Category::Active && r.chance(0.5) {
        if let Some(contract) = active_period(&item, "contracts") {
            if contract.get("contract_duration") == Some(&json!("fixed")) {
                let end = contract.get("end_date").cloned().unwrap_or(Value::Null);
                item["end_date"] = end;
            }
        }
    }
    let absent = if item.get("end_date").is_none_or(Value::is_null) {
        counts.open_ended += 1;
        counts.open_ended.is_multiple_of(2)
    } else {
        false
    };
    let employment = mirror(&item, absent, max_h, min_h, r.chance(0.8));
    let month = employment["salary"]["month_wage"].as_f64().unwrap_or(0.0);
    let dt_create = if c.sentinel {
        "0001-01-01T00:00:00".to_string()
    } else {
        let first_start = items
            .first()
            .and_then(|it| parse_date(&it["start_date"]))
            .unwrap_or(plan.start);
        let created = (first_start - Duration::days(r.range(3, 60))).min(today - Duration::days(1));
        stamp(r, created)[..19].to_string()
    };
    items.push(item);
    let record = new_record(
        r,
        RecordParts {
            company_id,
            number: c.number,
            status,
            yearly_wage: top_yearly_wage(month),
            dt_create,
            dt_update: c.dt_update.clone(),
            trailing_space: c.trailing_space,
            employment: EmploymentField::Object(employment),
        },
    );
    Entry {
        record,
        employments: Value::Array(items),
        removed: false,
    }
}

/// The current employment's dates by category (a rehire's earlier employment goes into
/// `items`); returns the employee's status.
fn plan_employment(
    r: &mut Rng,
    cat: Category,
    plan: &mut ItemPlan,
    items: &mut Vec<Value>,
    counts: &mut Counts,
) -> &'static str {
    let today = plan.today;
    match cat {
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
            plan.signed = counts.pending.is_multiple_of(2);
            counts.pending += 1;
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
                fulltime_month_wage: plan.fulltime_month_wage * 0.9,
                hours_per_week: *r.pick(&HOURS),
                ..*plan
            };
            items.push(gen_item(r, &first));
            plan.start = first_of_month(add_months(e1 + Duration::days(1), r.range(3, 12) as i32));
            "active"
        }
        Category::NoEmployment => unreachable!("generated by without_employment"),
    }
}
