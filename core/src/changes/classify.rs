//! The change detector's rules: each field-level difference between two versions of a record
//! becomes a typed change (salary, hours, contract, status, termination, hire...) with the
//! effective date the API gives for it, kept apart from when the change was detected.

use chrono::NaiveDate;
use serde_json::Value;

use super::diff::{diff_canonical, FieldChange, PathSeg};
use crate::canonical::{canonicalize, id_key};
use crate::model::{parse_api_date, ChangeType, Kind};

/// One row of `employes_changes`, before the database adds ids, session and timestamps.
#[derive(Clone, Debug, PartialEq)]
pub struct Change {
    pub change_type: ChangeType,
    pub field_path: String,
    pub old_value: Option<Value>,
    pub new_value: Option<Value>,
    pub effective_date: Option<NaiveDate>,
}

/// The typed changes between two versions of one record: one per field-level difference of the
/// canonical forms, in diff order. Noise (key order, number spelling, `dt_update`) gives none.
pub fn classify(kind: Kind, old: &Value, new: &Value) -> Vec<Change> {
    let o = canonicalize(old);
    let n = canonicalize(new);
    diff_canonical(&o, &n)
        .into_iter()
        .map(|fc| {
            let (change_type, effective_date) = match kind {
                Kind::Employee => employee_rule(&fc, &o, &n),
                Kind::Employments => employments_rule(&fc, &o, &n),
            };
            Change {
                change_type,
                field_path: fc.path_string(),
                old_value: fc.old,
                new_value: fc.new,
                effective_date,
            }
        })
        .collect()
}

/// The change for the first version of a record; effective at the hire date when there is one.
pub fn created(kind: Kind, new: &Value) -> Change {
    let n = canonicalize(new);
    let effective_date = match kind {
        Kind::Employee => date_at(&n, &["employment", "start_date"]),
        Kind::Employments => items(&n)
            .iter()
            .filter_map(|item| date_at(item, &["start_date"]))
            .min(),
    };
    Change {
        change_type: ChangeType::Created,
        field_path: "$".to_string(),
        old_value: None,
        new_value: Some(n),
        effective_date,
    }
}

/// The change for a record that reappeared after being deleted.
pub fn restored(_kind: Kind, new: &Value) -> Change {
    Change {
        change_type: ChangeType::Restored,
        field_path: "$".to_string(),
        old_value: None,
        new_value: Some(canonicalize(new)),
        effective_date: None,
    }
}

const HOURS_FIELDS: &[&str] = &[
    "hours_per_week",
    "days_per_week",
    "employee_type",
    "max_hours",
    "min_hours",
];

fn employee_rule(fc: &FieldChange, o: &Value, n: &Value) -> (ChangeType, Option<NaiveDate>) {
    let keys = key_prefix(&fc.path);
    match keys.as_slice() {
        ["status"] if fc.path.len() == 1 => {
            let eff = if n.get("status").and_then(Value::as_str) == Some("out of service") {
                date_at(n, &["employment", "end_date"])
            } else {
                None
            };
            (ChangeType::StatusChange, eff)
        }
        ["yearly_wage"] if fc.path.len() == 1 => (
            ChangeType::SalaryChange,
            date_at(n, &["employment", "salary", "start_date"]),
        ),
        ["employment"] if fc.path.len() == 1 => (
            ChangeType::ContractChange,
            fc.new.as_ref().and_then(|v| date_at(v, &["start_date"])),
        ),
        ["employment", "salary", ..] => (
            ChangeType::SalaryChange,
            date_at(n, &["employment", "salary", "start_date"])
                .or_else(|| date_at(o, &["employment", "salary", "start_date"])),
        ),
        ["employment", "contract", field, ..] if HOURS_FIELDS.contains(field) => {
            (ChangeType::HoursChange, None)
        }
        ["employment", "end_date"] if fc.path.len() == 2 => end_date_rule(fc),
        ["employment", ..] => (ChangeType::ContractChange, field_date(fc, n)),
        _ => (ChangeType::Updated, None),
    }
}

fn employments_rule(fc: &FieldChange, o: &Value, n: &Value) -> (ChangeType, Option<NaiveDate>) {
    let path = fc.path.as_slice();
    let (item_id, rest) = match path {
        [PathSeg::Key(data), PathSeg::Id(item_id), rest @ ..] if data == "data" => (item_id, rest),
        _ => return (ChangeType::Updated, None),
    };
    match rest {
        [] => match (&fc.old, &fc.new) {
            (None, Some(item)) => {
                let others = items(o)
                    .iter()
                    .any(|it| id_key(it).as_ref() != Some(item_id));
                let t = if others {
                    ChangeType::Rehired
                } else {
                    ChangeType::Hired
                };
                (t, date_at(item, &["start_date"]))
            }
            _ => (ChangeType::Updated, None),
        },
        [PathSeg::Key(f)] if f == "end_date" => end_date_rule(fc),
        [PathSeg::Key(section), tail @ ..] => {
            let t = match section.as_str() {
                "salary" => ChangeType::SalaryChange,
                "hours" => ChangeType::HoursChange,
                "contracts" | "start_date" => ChangeType::ContractChange,
                _ => ChangeType::Updated,
            };
            let eff = match tail {
                // A whole array added, removed or replaced: no single effective date.
                [] if fc
                    .old
                    .as_ref()
                    .or(fc.new.as_ref())
                    .is_some_and(Value::is_array) =>
                {
                    None
                }
                // A period added or removed: its own start.
                [PathSeg::Id(_)] => fc
                    .new
                    .as_ref()
                    .or(fc.old.as_ref())
                    .and_then(|p| date_at(p, &["start_date"])),
                // A field of a period: its new value for start/end dates, else the period's start.
                [PathSeg::Id(_), PathSeg::Key(_), ..] => {
                    if is_date_field(path) {
                        fc.new.as_ref().and_then(parse_api_date)
                    } else {
                        enclosing_start(&path[..4], &[n, o])
                    }
                }
                _ => field_date(fc, n),
            };
            (t, eff)
        }
        _ => (ChangeType::Updated, None),
    }
}

/// `employment.end_date` and an employment item's `end_date`: a new or earlier end is a
/// termination; a removed or later end is a contract change (an extension or a conversion).
fn end_date_rule(fc: &FieldChange) -> (ChangeType, Option<NaiveDate>) {
    let old = fc.old.as_ref().and_then(parse_api_date);
    let new = fc.new.as_ref().and_then(parse_api_date);
    match (old, new) {
        (None, Some(n)) => (ChangeType::Termination, Some(n)),
        (Some(o), Some(n)) if n < o => (ChangeType::Termination, Some(n)),
        _ => (ChangeType::ContractChange, new),
    }
}

/// The effective date of a changed field below `employment` or an employment item:
/// a `start_date`/`end_date` field is effective at its new value (none when removed); an object
/// that appears is effective at its own `start_date`; any other field at the `start_date` of the
/// object that holds it in the new version.
fn field_date(fc: &FieldChange, n: &Value) -> Option<NaiveDate> {
    if is_date_field(&fc.path) {
        return fc.new.as_ref().and_then(parse_api_date);
    }
    fc.new
        .as_ref()
        .and_then(|v| date_at(v, &["start_date"]))
        .or_else(|| enclosing_start(&fc.path[..fc.path.len().saturating_sub(1)], &[n]))
}

fn is_date_field(path: &[PathSeg]) -> bool {
    matches!(path.last(), Some(PathSeg::Key(k)) if k == "start_date" || k == "end_date")
}

/// `start_date` of the object at `parent`, in the first of `roots` that has one.
fn enclosing_start(parent: &[PathSeg], roots: &[&Value]) -> Option<NaiveDate> {
    roots
        .iter()
        .find_map(|root| lookup(root, parent).and_then(|v| date_at(v, &["start_date"])))
}

fn lookup<'a>(root: &'a Value, path: &[PathSeg]) -> Option<&'a Value> {
    path.iter().try_fold(root, |v, seg| match seg {
        PathSeg::Key(k) => v.get(k),
        PathSeg::Id(id) => v
            .as_array()?
            .iter()
            .find(|item| id_key(item).as_ref() == Some(id)),
    })
}

/// The leading object keys of a path (stops at the first id segment).
fn key_prefix(path: &[PathSeg]) -> Vec<&str> {
    path.iter()
        .map_while(|seg| match seg {
            PathSeg::Key(k) => Some(k.as_str()),
            PathSeg::Id(_) => None,
        })
        .collect()
}

fn date_at(v: &Value, keys: &[&str]) -> Option<NaiveDate> {
    keys.iter()
        .try_fold(v, |v, k| v.get(k))
        .and_then(parse_api_date)
}

fn items(v: &Value) -> &[Value] {
    v.get("data")
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::collections::BTreeSet;

    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    fn ts(s: &str) -> Value {
        json!(format!("{s}T00:00:00"))
    }

    fn types(changes: &[Change]) -> BTreeSet<ChangeType> {
        changes.iter().map(|c| c.change_type).collect()
    }

    fn set(t: &[ChangeType]) -> BTreeSet<ChangeType> {
        t.iter().copied().collect()
    }

    fn has_eff(changes: &[Change], t: ChangeType, date: &str) -> bool {
        changes
            .iter()
            .any(|c| c.change_type == t && c.effective_date == Some(d(date)))
    }

    fn row(
        t: ChangeType,
        path: &str,
        old: Option<Value>,
        new: Option<Value>,
        eff: Option<&str>,
    ) -> Change {
        Change {
            change_type: t,
            field_path: path.to_string(),
            old_value: old,
            new_value: new,
            effective_date: eff.map(d),
        }
    }

    /// A permanent employee as the list endpoint returns her.
    fn record() -> Value {
        json!({
            "id": "e-anna", "administration_id": "company", "employee_type_id": 3,
            "employee_number": 93, "first_name": "Anna", "surname": "Jansen", "surname_prefix": "",
            "initials": "A.", "gender": "female", "date_of_birth": "1996-09-17T00:00:00",
            "street": "Lange Gracht ", "housenumber": "50", "zipcode": "2611AB", "city": "Delft",
            "country_code": "NL", "iban": "NL00BANK0123456789", "email": "anna@example.org",
            "phone_number": "+31 6 12345678", "status": "active", "yearly_wage": 29252.42,
            "dt_create": "0001-01-01T00:00:00", "dt_update": "2025-07-02T14:22:15.133794",
            "employment": {
                "start_date": "2024-09-01T00:00:00", "end_date": null,
                "contract": {"start_date": "2024-09-01T00:00:00", "end_date": null,
                             "hours_per_week": 30, "max_hours": null, "min_hours": null,
                             "days_per_week": 5, "employee_type": "parttime"},
                "tax_details": {"start_date": "2024-09-01T00:00:00", "is_reduction_applied": true},
                "salary": {"start_date": "2025-07-01T00:00:00", "hour_wage": 18.24,
                           "month_wage": 2846, "yearly_wage": 30736.677}
            }
        })
    }

    /// Her `/employments` history: one employment with one period of each kind.
    fn history() -> Value {
        json!({"data": [{
            "id": "emp-1", "start_date": "2024-09-01T00:00:00", "end_date": null,
            "salary": [{"id": "sal-1", "start_date": "2025-07-01T00:00:00", "end_date": null,
                        "hour_wage": 18.24, "month_wage": 2846, "yearly_wage": 30736.677, "is_active": true}],
            "hours": [{"id": "hrs-1", "start_date": "2024-09-01T00:00:00", "end_date": null,
                       "hours_per_week": 30, "days_per_week": 5, "employee_type": "parttime", "is_active": true}],
            "contracts": [{"id": "con-1", "start_date": "2024-09-01T00:00:00", "end_date": null,
                           "contract_duration": "permanent", "is_signed": true,
                           "sign_date": "2024-08-20T00:00:00", "is_active": true}]
        }]})
    }

    /// A fixed-term variant: contract and employment end on 2025-11-09.
    fn fixed_term(mut rec: Value, mut hist: Value) -> (Value, Value) {
        rec["employment"]["end_date"] = ts("2025-11-09");
        rec["employment"]["contract"]["end_date"] = ts("2025-11-09");
        hist["data"][0]["end_date"] = ts("2025-11-09");
        hist["data"][0]["contracts"][0]["end_date"] = ts("2025-11-09");
        hist["data"][0]["contracts"][0]["contract_duration"] = json!("fixed");
        (rec, hist)
    }

    fn reversed_keys(v: &Value) -> Value {
        match v {
            Value::Object(m) => {
                let mut out = serde_json::Map::new();
                for (k, v) in m.iter().rev() {
                    out.insert(k.clone(), reversed_keys(v));
                }
                Value::Object(out)
            }
            Value::Array(a) => Value::Array(a.iter().rev().map(reversed_keys).collect()),
            other => other.clone(),
        }
    }

    #[test]
    fn first_version_of_employee_is_created_at_hire_date() {
        let c = created(Kind::Employee, &record());
        assert_eq!(c.change_type, ChangeType::Created);
        assert_eq!(c.field_path, "$");
        assert_eq!(c.old_value, None);
        assert_eq!(c.new_value, Some(canonicalize(&record())));
        assert_eq!(c.effective_date, Some(d("2024-09-01")));
    }

    #[test]
    fn first_version_without_employment_is_created_without_date() {
        let mut rec = record();
        rec["employment"] = Value::Null;
        assert_eq!(created(Kind::Employee, &rec).effective_date, None);
        assert_eq!(
            created(Kind::Employments, &json!({"data": []})).effective_date,
            None
        );
    }

    #[test]
    fn first_employments_version_is_created_at_earliest_start() {
        let hist = json!({"data": [
            {"id": "b", "start_date": "2026-06-01T00:00:00"},
            {"id": "a", "start_date": "2020-01-15T00:00:00"},
            {"id": "c", "start_date": "0001-01-01T00:00:00"}
        ]});
        let c = created(Kind::Employments, &hist);
        assert_eq!(c.effective_date, Some(d("2020-01-15")));
        assert_eq!(c.new_value, Some(canonicalize(&hist)));
    }

    #[test]
    fn restored_carries_the_whole_canonical_record() {
        // (A deletion is written by the extension's SQL alone: its old value is the payload.)
        let res = restored(Kind::Employments, &history());
        assert_eq!(
            res,
            row(
                ChangeType::Restored,
                "$",
                None,
                Some(canonicalize(&history())),
                None
            )
        );
    }

    #[test]
    fn noise_only_changes_give_no_changes() {
        let mut rec = record();
        rec["dt_update"] = json!("2026-01-05T08:00:00.000001");
        rec["employment"]["salary"]["month_wage"] = json!(2846.0);
        rec["employment"]["contract"]["hours_per_week"] = json!(30.0);
        let rec = reversed_keys(&rec);
        assert_eq!(classify(Kind::Employee, &record(), &rec), vec![]);

        let mut hist = history();
        hist["data"][0]["salary"][0]["month_wage"] = json!(2846.0);
        hist["data"][0]["dt_update"] = json!("2026-01-05T08:00:00.000001");
        let hist = reversed_keys(&hist);
        assert_eq!(classify(Kind::Employments, &history(), &hist), vec![]);
    }

    #[test]
    fn personal_field_edit_is_updated() {
        let mut rec = record();
        rec["street"] = json!("Oude Delft");
        assert_eq!(
            classify(Kind::Employee, &record(), &rec),
            vec![row(
                ChangeType::Updated,
                "$.street",
                Some(json!("Lange Gracht ")),
                Some(json!("Oude Delft")),
                None
            )]
        );
    }

    #[test]
    fn trailing_space_removal_is_an_update() {
        let mut rec = record();
        rec["street"] = json!("Lange Gracht");
        assert_eq!(
            types(&classify(Kind::Employee, &record(), &rec)),
            set(&[ChangeType::Updated])
        );
    }

    #[test]
    fn unknown_extra_field_is_updated() {
        let mut rec = record();
        rec["nickname"] = json!("An");
        assert_eq!(
            classify(Kind::Employee, &record(), &rec),
            vec![row(
                ChangeType::Updated,
                "$.nickname",
                None,
                Some(json!("An")),
                None
            )]
        );
    }

    #[test]
    fn raise_on_record_is_only_salary_change_effective_at_new_period() {
        let mut rec = record();
        rec["yearly_wage"] = json!(30421.0);
        rec["employment"]["salary"] = json!({"start_date": "2026-01-01T00:00:00", "hour_wage": 18.97,
                                             "month_wage": 2960.0, "yearly_wage": 31968.0});
        let eff = Some("2026-01-01");
        assert_eq!(
            classify(Kind::Employee, &record(), &rec),
            vec![
                row(
                    ChangeType::SalaryChange,
                    "$.employment.salary.hour_wage",
                    Some(json!(18.24)),
                    Some(json!(18.97)),
                    eff
                ),
                row(
                    ChangeType::SalaryChange,
                    "$.employment.salary.month_wage",
                    Some(json!(2846)),
                    Some(json!(2960)),
                    eff
                ),
                row(
                    ChangeType::SalaryChange,
                    "$.employment.salary.start_date",
                    Some(ts("2025-07-01")),
                    Some(ts("2026-01-01")),
                    eff
                ),
                row(
                    ChangeType::SalaryChange,
                    "$.employment.salary.yearly_wage",
                    Some(json!(30736.677)),
                    Some(json!(31968)),
                    eff
                ),
                row(
                    ChangeType::SalaryChange,
                    "$.yearly_wage",
                    Some(json!(29252.42)),
                    Some(json!(30421)),
                    eff
                ),
            ]
        );
    }

    #[test]
    fn raise_in_history_is_only_salary_change_effective_at_new_period() {
        let mut hist = history();
        hist["data"][0]["salary"][0]["end_date"] = ts("2025-12-31");
        hist["data"][0]["salary"][0]["is_active"] = json!(false);
        let new_period = json!({"id": "sal-2", "start_date": "2026-01-01T00:00:00", "end_date": null,
                                "hour_wage": 18.97, "month_wage": 2960, "yearly_wage": 31968.0, "is_active": true});
        hist["data"][0]["salary"]
            .as_array_mut()
            .unwrap()
            .push(new_period.clone());
        assert_eq!(
            classify(Kind::Employments, &history(), &hist),
            vec![
                row(
                    ChangeType::SalaryChange,
                    "$.data[id=emp-1].salary[id=sal-1].end_date",
                    None,
                    Some(ts("2025-12-31")),
                    Some("2025-12-31")
                ),
                row(
                    ChangeType::SalaryChange,
                    "$.data[id=emp-1].salary[id=sal-1].is_active",
                    Some(json!(true)),
                    Some(json!(false)),
                    Some("2025-07-01")
                ),
                row(
                    ChangeType::SalaryChange,
                    "$.data[id=emp-1].salary[id=sal-2]",
                    None,
                    Some(canonicalize(&new_period)),
                    Some("2026-01-01")
                ),
            ]
        );
    }

    #[test]
    fn back_dated_raise_is_only_salary_change_effective_at_back_date() {
        // Seen in January 2026, applying from 2025-10-01: the running period is split.
        let mut rec = record();
        rec["yearly_wage"] = json!(30100.5);
        rec["employment"]["salary"]["start_date"] = ts("2025-10-01");
        rec["employment"]["salary"]["month_wage"] = json!(2900);
        let mut hist = history();
        hist["data"][0]["salary"][0]["end_date"] = ts("2025-09-30");
        hist["data"][0]["salary"][0]["is_active"] = json!(false);
        hist["data"][0]["salary"]
            .as_array_mut()
            .unwrap()
            .push(json!(
            {"id": "sal-2", "start_date": "2025-10-01T00:00:00", "end_date": null,
             "hour_wage": 18.58, "month_wage": 2900, "yearly_wage": 31320.0, "is_active": true}));

        let r = classify(Kind::Employee, &record(), &rec);
        assert_eq!(types(&r), set(&[ChangeType::SalaryChange]));
        assert!(r.iter().all(|c| c.effective_date == Some(d("2025-10-01"))));
        let h = classify(Kind::Employments, &history(), &hist);
        assert_eq!(types(&h), set(&[ChangeType::SalaryChange]));
        assert_eq!(
            h.iter()
                .filter(|c| c.effective_date == Some(d("2025-10-01")))
                .count(),
            1
        );
        assert_eq!(h[2].field_path, "$.data[id=emp-1].salary[id=sal-2]");
    }

    #[test]
    fn retroactive_edit_of_period_amount_is_dated_at_period_start() {
        let mut hist = history();
        hist["data"][0]["salary"][0]["month_wage"] = json!(2900);
        assert_eq!(
            classify(Kind::Employments, &history(), &hist),
            vec![row(
                ChangeType::SalaryChange,
                "$.data[id=emp-1].salary[id=sal-1].month_wage",
                Some(json!(2846)),
                Some(json!(2900)),
                Some("2025-07-01")
            )]
        );
    }

    #[test]
    fn hours_change_is_only_hours_change_effective_at_new_hours_period() {
        let mut rec = record();
        rec["employment"]["contract"]["hours_per_week"] = json!(36);
        rec["employment"]["contract"]["employee_type"] = json!("fulltime");
        rec["employment"]["contract"]["max_hours"] = json!(0);
        let mut hist = history();
        hist["data"][0]["hours"][0]["end_date"] = ts("2026-01-31");
        hist["data"][0]["hours"][0]["is_active"] = json!(false);
        hist["data"][0]["hours"].as_array_mut().unwrap().push(json!(
            {"id": "hrs-2", "start_date": "2026-02-01T00:00:00", "end_date": null, "hours_per_week": 36,
             "days_per_week": 5, "employee_type": "fulltime", "is_active": true}));

        assert_eq!(
            classify(Kind::Employee, &record(), &rec),
            vec![
                row(
                    ChangeType::HoursChange,
                    "$.employment.contract.employee_type",
                    Some(json!("parttime")),
                    Some(json!("fulltime")),
                    None
                ),
                row(
                    ChangeType::HoursChange,
                    "$.employment.contract.hours_per_week",
                    Some(json!(30)),
                    Some(json!(36)),
                    None
                ),
                row(
                    ChangeType::HoursChange,
                    "$.employment.contract.max_hours",
                    None,
                    Some(json!(0)),
                    None
                ),
            ]
        );
        let h = classify(Kind::Employments, &history(), &hist);
        assert_eq!(types(&h), set(&[ChangeType::HoursChange]));
        assert!(has_eff(&h, ChangeType::HoursChange, "2026-02-01"));
    }

    #[test]
    fn contract_renewal_is_only_contract_change_effective_at_new_contract() {
        let (old_rec, old_hist) = fixed_term(record(), history());
        let mut rec = old_rec.clone();
        rec["employment"]["end_date"] = ts("2026-11-09");
        rec["employment"]["contract"]["start_date"] = ts("2025-11-10");
        rec["employment"]["contract"]["end_date"] = ts("2026-11-09");
        let mut hist = old_hist.clone();
        hist["data"][0]["end_date"] = ts("2026-11-09");
        hist["data"][0]["contracts"][0]["is_active"] = json!(false);
        hist["data"][0]["contracts"].as_array_mut().unwrap().push(json!(
            {"id": "con-2", "start_date": "2025-11-10T00:00:00", "end_date": "2026-11-09T00:00:00",
             "contract_duration": "fixed", "is_signed": true, "sign_date": "2025-10-20T00:00:00", "is_active": true}));

        assert_eq!(
            classify(Kind::Employee, &old_rec, &rec),
            vec![
                row(
                    ChangeType::ContractChange,
                    "$.employment.contract.end_date",
                    Some(ts("2025-11-09")),
                    Some(ts("2026-11-09")),
                    Some("2026-11-09")
                ),
                row(
                    ChangeType::ContractChange,
                    "$.employment.contract.start_date",
                    Some(ts("2024-09-01")),
                    Some(ts("2025-11-10")),
                    Some("2025-11-10")
                ),
                row(
                    ChangeType::ContractChange,
                    "$.employment.end_date",
                    Some(ts("2025-11-09")),
                    Some(ts("2026-11-09")),
                    Some("2026-11-09")
                ),
            ]
        );
        let h = classify(Kind::Employments, &old_hist, &hist);
        assert_eq!(types(&h), set(&[ChangeType::ContractChange]));
        assert!(has_eff(&h, ChangeType::ContractChange, "2025-11-10"));
        assert!(h
            .iter()
            .any(|c| c.field_path == "$.data[id=emp-1].end_date"));
    }

    #[test]
    fn conversion_to_permanent_is_only_contract_change() {
        let (old_rec, old_hist) = fixed_term(record(), history());
        let mut rec = old_rec.clone();
        rec["employment"]["end_date"] = Value::Null;
        rec["employment"]["contract"]
            .as_object_mut()
            .unwrap()
            .remove("end_date");
        let mut hist = old_hist.clone();
        hist["data"][0]["end_date"] = Value::Null;
        hist["data"][0]["contracts"][0]["end_date"] = Value::Null;
        hist["data"][0]["contracts"][0]["contract_duration"] = json!("permanent");

        assert_eq!(
            classify(Kind::Employee, &old_rec, &rec),
            vec![
                row(
                    ChangeType::ContractChange,
                    "$.employment.contract.end_date",
                    Some(ts("2025-11-09")),
                    None,
                    None
                ),
                row(
                    ChangeType::ContractChange,
                    "$.employment.end_date",
                    Some(ts("2025-11-09")),
                    None,
                    None
                ),
            ]
        );
        assert_eq!(
            classify(Kind::Employments, &old_hist, &hist),
            vec![
                row(
                    ChangeType::ContractChange,
                    "$.data[id=emp-1].contracts[id=con-1].contract_duration",
                    Some(json!("fixed")),
                    Some(json!("permanent")),
                    Some("2024-09-01")
                ),
                row(
                    ChangeType::ContractChange,
                    "$.data[id=emp-1].contracts[id=con-1].end_date",
                    Some(ts("2025-11-09")),
                    None,
                    None
                ),
                row(
                    ChangeType::ContractChange,
                    "$.data[id=emp-1].end_date",
                    Some(ts("2025-11-09")),
                    None,
                    None
                ),
            ]
        );
    }

    #[test]
    fn termination_is_termination_status_change_and_contract_change() {
        let mut rec = record();
        rec["status"] = json!("out of service");
        rec["employment"]["end_date"] = ts("2026-03-31");
        rec["employment"]["contract"]["end_date"] = ts("2026-03-31");
        let mut hist = history();
        hist["data"][0]["end_date"] = ts("2026-03-31");
        hist["data"][0]["contracts"][0]["end_date"] = ts("2026-03-31");

        let r = classify(Kind::Employee, &record(), &rec);
        assert_eq!(
            r,
            vec![
                row(
                    ChangeType::ContractChange,
                    "$.employment.contract.end_date",
                    None,
                    Some(ts("2026-03-31")),
                    Some("2026-03-31")
                ),
                row(
                    ChangeType::Termination,
                    "$.employment.end_date",
                    None,
                    Some(ts("2026-03-31")),
                    Some("2026-03-31")
                ),
                row(
                    ChangeType::StatusChange,
                    "$.status",
                    Some(json!("active")),
                    Some(json!("out of service")),
                    Some("2026-03-31")
                ),
            ]
        );
        let h = classify(Kind::Employments, &history(), &hist);
        assert_eq!(
            h,
            vec![
                row(
                    ChangeType::ContractChange,
                    "$.data[id=emp-1].contracts[id=con-1].end_date",
                    None,
                    Some(ts("2026-03-31")),
                    Some("2026-03-31")
                ),
                row(
                    ChangeType::Termination,
                    "$.data[id=emp-1].end_date",
                    None,
                    Some(ts("2026-03-31")),
                    Some("2026-03-31")
                ),
            ]
        );
        let all: Vec<Change> = r.into_iter().chain(h).collect();
        assert_eq!(
            types(&all),
            set(&[
                ChangeType::Termination,
                ChangeType::StatusChange,
                ChangeType::ContractChange
            ])
        );
    }

    #[test]
    fn earlier_end_date_is_termination_and_later_is_contract_change() {
        let (old_rec, _) = fixed_term(record(), history());
        let mut earlier = old_rec.clone();
        earlier["employment"]["end_date"] = ts("2025-08-31");
        assert_eq!(
            classify(Kind::Employee, &old_rec, &earlier),
            vec![row(
                ChangeType::Termination,
                "$.employment.end_date",
                Some(ts("2025-11-09")),
                Some(ts("2025-08-31")),
                Some("2025-08-31")
            )]
        );
        let mut later = old_rec.clone();
        later["employment"]["end_date"] = ts("2026-02-28");
        assert_eq!(
            types(&classify(Kind::Employee, &old_rec, &later)),
            set(&[ChangeType::ContractChange])
        );
    }

    #[test]
    fn status_change_not_to_out_of_service_has_no_date() {
        let mut old = record();
        old["status"] = json!("pending");
        assert_eq!(
            classify(Kind::Employee, &old, &record()),
            vec![row(
                ChangeType::StatusChange,
                "$.status",
                Some(json!("pending")),
                Some(json!("active")),
                None
            )]
        );
    }

    #[test]
    fn rehire_is_rehired_status_contract_salary_and_hours_changes() {
        // Terminated on 2026-03-31, hired again on 2026-06-01.
        let mut old_rec = record();
        old_rec["status"] = json!("out of service");
        old_rec["employment"]["end_date"] = ts("2026-03-31");
        old_rec["employment"]["contract"]["end_date"] = ts("2026-03-31");
        let mut old_hist = history();
        old_hist["data"][0]["end_date"] = ts("2026-03-31");
        old_hist["data"][0]["contracts"][0]["end_date"] = ts("2026-03-31");

        let mut rec = old_rec.clone();
        rec["status"] = json!("active");
        rec["employment"] = json!({
            "start_date": "2026-06-01T00:00:00", "end_date": "2027-05-31T00:00:00",
            "contract": {"start_date": "2026-06-01T00:00:00", "end_date": "2027-05-31T00:00:00",
                         "hours_per_week": 32, "max_hours": null, "min_hours": null,
                         "days_per_week": 4, "employee_type": "parttime"},
            "tax_details": {"start_date": "2026-06-01T00:00:00", "is_reduction_applied": false},
            "salary": {"start_date": "2026-06-01T00:00:00", "hour_wage": 19.5,
                       "month_wage": 2704, "yearly_wage": 32448.0}
        });
        let mut hist = old_hist.clone();
        let item = json!({
            "id": "emp-2", "start_date": "2026-06-01T00:00:00", "end_date": "2027-05-31T00:00:00",
            "salary": [{"id": "sal-9", "start_date": "2026-06-01T00:00:00", "end_date": null,
                        "hour_wage": 19.5, "month_wage": 2704, "yearly_wage": 32448.0, "is_active": true}],
            "hours": [{"id": "hrs-9", "start_date": "2026-06-01T00:00:00", "end_date": null,
                       "hours_per_week": 32, "days_per_week": 4, "employee_type": "parttime", "is_active": true}],
            "contracts": [{"id": "con-9", "start_date": "2026-06-01T00:00:00", "end_date": "2027-05-31T00:00:00",
                           "contract_duration": "fixed", "is_signed": true, "sign_date": "2026-05-15T00:00:00", "is_active": true}]
        });
        hist["data"].as_array_mut().unwrap().push(item.clone());

        let r = classify(Kind::Employee, &old_rec, &rec);
        let h = classify(Kind::Employments, &old_hist, &hist);
        assert_eq!(
            h,
            vec![row(
                ChangeType::Rehired,
                "$.data[id=emp-2]",
                None,
                Some(canonicalize(&item)),
                Some("2026-06-01")
            )]
        );
        assert!(has_eff(&r, ChangeType::ContractChange, "2026-06-01"));
        assert!(has_eff(&r, ChangeType::SalaryChange, "2026-06-01"));
        let status: Vec<&Change> = r
            .iter()
            .filter(|c| c.change_type == ChangeType::StatusChange)
            .collect();
        assert_eq!(status.len(), 1);
        assert_eq!(status[0].effective_date, None);
        let all: Vec<Change> = r.into_iter().chain(h).collect();
        assert_eq!(
            types(&all),
            set(&[
                ChangeType::Rehired,
                ChangeType::StatusChange,
                ChangeType::ContractChange,
                ChangeType::SalaryChange,
                ChangeType::HoursChange
            ])
        );
    }

    #[test]
    fn first_employment_in_history_is_hired() {
        let h = classify(Kind::Employments, &json!({"data": []}), &history());
        assert_eq!(h.len(), 1);
        assert_eq!(h[0].change_type, ChangeType::Hired);
        assert_eq!(h[0].field_path, "$.data[id=emp-1]");
        assert_eq!(h[0].effective_date, Some(d("2024-09-01")));
    }

    #[test]
    fn removed_employment_item_is_updated() {
        let h = classify(Kind::Employments, &history(), &json!({"data": []}));
        assert_eq!(
            h,
            vec![row(
                ChangeType::Updated,
                "$.data[id=emp-1]",
                Some(canonicalize(&history()["data"][0])),
                None,
                None
            )]
        );
    }

    #[test]
    fn data_that_is_not_id_keyed_is_updated() {
        let h = classify(
            Kind::Employments,
            &json!({"data": [1]}),
            &json!({"data": [2]}),
        );
        assert_eq!(
            h,
            vec![row(
                ChangeType::Updated,
                "$.data",
                Some(json!([1])),
                Some(json!([2])),
                None
            )]
        );
        let h = classify(Kind::Employments, &json!({}), &history());
        assert_eq!(types(&h), set(&[ChangeType::Updated]));
        assert_eq!(h[0].field_path, "$.data");
    }

    #[test]
    fn employment_item_fields_are_typed_by_section() {
        let mut hist = history();
        hist["data"][0]["start_date"] = ts("2024-08-15");
        hist["data"][0]["department"] = json!("Finance");
        hist["data"][0]["hours"] = json!("restricted");
        assert_eq!(
            classify(Kind::Employments, &history(), &hist),
            vec![
                row(
                    ChangeType::Updated,
                    "$.data[id=emp-1].department",
                    None,
                    Some(json!("Finance")),
                    Some("2024-08-15")
                ),
                row(
                    ChangeType::HoursChange,
                    "$.data[id=emp-1].hours",
                    Some(canonicalize(&history()["data"][0]["hours"])),
                    Some(json!("restricted")),
                    None
                ),
                row(
                    ChangeType::ContractChange,
                    "$.data[id=emp-1].start_date",
                    Some(ts("2024-09-01")),
                    Some(ts("2024-08-15")),
                    Some("2024-08-15")
                ),
            ]
        );
    }

    #[test]
    fn period_array_replaced_whole_has_no_date() {
        let mut hist = history();
        hist["data"][0]["salary"] = json!([{"month_wage": 1}]);
        let h = classify(Kind::Employments, &history(), &hist);
        assert_eq!(h.len(), 1);
        assert_eq!(
            (h[0].change_type, h[0].effective_date),
            (ChangeType::SalaryChange, None)
        );
    }

    #[test]
    fn removed_period_is_dated_at_its_start() {
        let mut hist = history();
        hist["data"][0]["contracts"] = json!([]);
        let h = classify(Kind::Employments, &history(), &hist);
        assert_eq!(h.len(), 1);
        assert_eq!(h[0].field_path, "$.data[id=emp-1].contracts[id=con-1]");
        assert_eq!(
            (h[0].change_type, h[0].effective_date),
            (ChangeType::ContractChange, Some(d("2024-09-01")))
        );
    }

    #[test]
    fn employment_object_added_or_removed_is_contract_change() {
        let mut none = record();
        none["employment"] = Value::Null;
        let added = classify(Kind::Employee, &none, &record());
        assert_eq!(added.len(), 1);
        assert_eq!(added[0].field_path, "$.employment");
        assert_eq!(
            (added[0].change_type, added[0].effective_date),
            (ChangeType::ContractChange, Some(d("2024-09-01")))
        );
        let removed = classify(Kind::Employee, &record(), &none);
        assert_eq!(removed.len(), 1);
        assert_eq!(
            (removed[0].change_type, removed[0].effective_date),
            (ChangeType::ContractChange, None)
        );
        assert_eq!(removed[0].new_value, None);
    }

    #[test]
    fn other_employment_fields_are_contract_changes_dated_by_their_object() {
        let mut rec = record();
        rec["employment"]["tax_details"]["is_reduction_applied"] = json!(false);
        rec["employment"]["contract"]["notice_days"] = json!(30);
        rec["employment"]["start_date"] = ts("2024-08-15");
        assert_eq!(
            classify(Kind::Employee, &record(), &rec),
            vec![
                row(
                    ChangeType::ContractChange,
                    "$.employment.contract.notice_days",
                    None,
                    Some(json!(30)),
                    Some("2024-09-01")
                ),
                row(
                    ChangeType::ContractChange,
                    "$.employment.start_date",
                    Some(ts("2024-09-01")),
                    Some(ts("2024-08-15")),
                    Some("2024-08-15")
                ),
                row(
                    ChangeType::ContractChange,
                    "$.employment.tax_details.is_reduction_applied",
                    Some(json!(true)),
                    Some(json!(false)),
                    Some("2024-09-01")
                ),
            ]
        );
    }

    #[test]
    fn salary_date_falls_back_to_old_when_new_salary_is_gone() {
        let mut rec = record();
        rec["employment"].as_object_mut().unwrap().remove("salary");
        assert_eq!(
            classify(Kind::Employee, &record(), &rec),
            vec![row(
                ChangeType::SalaryChange,
                "$.employment.salary",
                Some(canonicalize(&record()["employment"]["salary"])),
                None,
                Some("2025-07-01")
            )]
        );
    }
}
