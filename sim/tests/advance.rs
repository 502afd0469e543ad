//! Time travel: every step's report is exactly the truth of what changed in the data.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use chrono::{Duration, NaiveDate};
use common::{api, control, list_all, sim};
use employes_sim::{AdvanceOptions, StepReport};
use serde_json::{Map, Value};

fn by_id(dump: &Value) -> BTreeMap<String, Value> {
    dump["employees"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["record"]["id"].as_str().unwrap().to_string(), e.clone()))
        .collect()
}

/// Numbers as f64, keys sorted, `dt_update` dropped: what noise may not change.
fn canonical(v: &Value) -> Value {
    match v {
        Value::Number(n) => serde_json::json!(n.as_f64().unwrap()),
        Value::Array(a) => Value::Array(a.iter().map(canonical).collect()),
        Value::Object(m) => {
            let sorted: BTreeMap<&String, Value> = m
                .iter()
                .filter(|(k, _)| k.as_str() != "dt_update")
                .map(|(k, v)| (k, canonical(v)))
                .collect();
            Value::Object(
                sorted
                    .into_iter()
                    .map(|(k, v)| (k.clone(), v))
                    .collect::<Map<_, _>>(),
            )
        }
        other => other.clone(),
    }
}

fn day(s: &str) -> NaiveDate {
    NaiveDate::parse_from_str(&s[..10], "%Y-%m-%d").unwrap()
}

fn t00(d: NaiveDate) -> Value {
    Value::String(d.format("%Y-%m-%dT00:00:00").to_string())
}

fn latest(entry: &Value) -> &Value {
    entry["employments"].as_array().unwrap().last().unwrap()
}

fn last_period<'a>(entry: &'a Value, key: &str) -> &'a Value {
    latest(entry)[key].as_array().unwrap().last().unwrap()
}

fn expected_types(event: &str) -> Vec<&'static str> {
    match event {
        "raise" | "backdated_raise" => vec!["salary_change"],
        "hours_change" => vec!["hours_change"],
        "renewal" | "conversion" => vec!["contract_change"],
        "hire" => vec!["created"],
        "removal" => vec!["deleted"],
        "restore" => vec!["restored"],
        "rehire" => vec![
            "rehired",
            "status_change",
            "contract_change",
            "salary_change",
            "hours_change",
        ],
        other => panic!("unexpected event {other}"),
    }
}

/// One employee's event, change types and effective dates in a report.
type EmployeeTruth<'a> = (&'a str, Vec<&'a str>, Vec<Option<&'a str>>);

/// Checks one step against the dumps around it; returns the events seen.
fn check_step(
    sim: &employes_sim::Sim,
    before: &Value,
    rep: &StepReport,
    after: &Value,
) -> BTreeSet<String> {
    let (b, a) = (by_id(before), by_id(after));
    let changed: BTreeSet<String> = a
        .iter()
        .filter(|(id, e)| b.get(*id) != Some(*e))
        .map(|(id, _)| id.clone())
        .chain(b.keys().filter(|id| !a.contains_key(*id)).cloned())
        .collect();
    let truth_ids: BTreeSet<String> = rep.changes.iter().map(|c| c.employee_id.clone()).collect();
    let noise_ids: BTreeSet<String> = rep.noise_employee_ids.iter().cloned().collect();
    assert!(truth_ids.is_disjoint(&noise_ids));
    let reported: BTreeSet<String> = truth_ids.union(&noise_ids).cloned().collect();
    assert_eq!(changed, reported, "changed employees vs report");

    for id in &noise_ids {
        let (x, y) = (&b[id], &a[id]);
        assert_ne!(x, y);
        assert_eq!(canonical(x), canonical(y), "noise changed data of {id}");
        assert_ne!(x["record"]["dt_update"], y["record"]["dt_update"]);
    }

    let e_date = day(&rep.date);
    let mut per_employee: BTreeMap<&str, EmployeeTruth> = BTreeMap::new();
    for c in &rep.changes {
        let slot = per_employee
            .entry(&c.employee_id)
            .or_insert((&c.event, Vec::new(), Vec::new()));
        assert_eq!(slot.0, c.event, "one event per employee per step");
        slot.1.push(&c.change_type);
        slot.2.push(c.effective_date.as_deref());
    }
    let mut events = BTreeSet::new();
    for (id, (event, types, effs)) in per_employee {
        events.insert(event.to_string());
        let (x, y) = (b.get(id), &a[id]);
        let eff = effs[0].map(day);
        match event {
            "termination" => {
                assert_eq!(&types[..2], ["termination", "status_change"]);
                assert!(types.len() == 2 || types[2] == "contract_change");
                let t = eff.unwrap();
                assert_eq!(t + Duration::days(1), e_date + chrono::Months::new(1));
                assert_eq!(effs[1], None);
                assert_eq!(x.unwrap()["record"]["status"], "active");
                assert_eq!(y["record"]["status"], "out of service");
                assert_eq!(y["record"]["employment"]["end_date"], t00(t));
                assert_eq!(latest(y)["end_date"], t00(t));
                let contract_end =
                    |v: &Value| v["record"]["employment"]["contract"]["end_date"].clone();
                assert_eq!(
                    types.len() == 3,
                    contract_end(x.unwrap()) != contract_end(y)
                );
                if types.len() == 3 {
                    assert_eq!(contract_end(y), t00(t));
                } else {
                    assert!(day(contract_end(y).as_str().unwrap()) <= t);
                }
            }
            _ => assert_eq!(types, expected_types(event), "{event}"),
        }
        match event {
            "raise" | "backdated_raise" => {
                let eff = eff.unwrap();
                let want = if event == "raise" {
                    e_date
                } else {
                    e_date - chrono::Months::new(2)
                };
                assert_eq!(eff, want);
                let sal = latest(y)["salary"].as_array().unwrap();
                let (prev, new) = (&sal[sal.len() - 2], &sal[sal.len() - 1]);
                assert_eq!(new["start_date"], t00(eff));
                assert_eq!(new["is_active"], true);
                assert!(new["end_date"].is_null());
                assert_eq!(prev["end_date"], t00(eff - Duration::days(1)));
                assert_eq!(prev["is_active"], false);
                let rs = &y["record"]["employment"]["salary"];
                assert_eq!(rs["start_date"], t00(eff));
                assert_eq!(rs["month_wage"], new["month_wage"]);
                let old = x.unwrap()["record"]["employment"]["salary"]["month_wage"]
                    .as_f64()
                    .unwrap();
                assert!(new["month_wage"].as_f64().unwrap() > old);
                assert_ne!(
                    x.unwrap()["record"]["yearly_wage"],
                    y["record"]["yearly_wage"]
                );
            }
            "hours_change" => {
                let h = last_period(y, "hours");
                assert_eq!(h["start_date"], t00(eff.unwrap()));
                assert_eq!(h["is_active"], true);
                let c = &y["record"]["employment"]["contract"];
                assert_eq!(c["hours_per_week"], h["hours_per_week"]);
                assert_eq!(c["employee_type"], h["employee_type"]);
                assert_ne!(
                    x.unwrap()["record"]["employment"]["contract"]["hours_per_week"],
                    c["hours_per_week"]
                );
            }
            "renewal" | "conversion" => {
                let c = last_period(y, "contracts");
                assert_eq!(c["start_date"], t00(eff.unwrap()));
                assert_eq!(c["is_active"], true);
                assert_eq!(
                    y["record"]["employment"]["contract"]["start_date"],
                    t00(eff.unwrap())
                );
                if event == "conversion" {
                    assert_eq!(eff.unwrap(), e_date);
                    assert_eq!(c["contract_duration"], "permanent");
                    assert!(y["record"]["employment"]["contract"]["end_date"].is_null());
                } else {
                    assert_eq!(c["contract_duration"], "fixed");
                    assert_eq!(
                        y["record"]["employment"]["contract"]["end_date"],
                        c["end_date"]
                    );
                }
            }
            "hire" => {
                assert!(x.is_none());
                assert_eq!(eff, Some(e_date));
                assert_eq!(y["record"]["employment"]["start_date"], t00(e_date));
                assert_eq!(y["record"]["status"], "active");
                assert_eq!(api(sim, &format!("/employees/{id}")).status, 200);
            }
            "removal" => {
                assert_eq!(y["removed"], true);
                assert_eq!(x.unwrap()["record"], y["record"]);
                assert_eq!(api(sim, &format!("/employees/{id}")).status, 404);
                assert_eq!(
                    api(sim, &format!("/employees/{id}/employments")).status,
                    404
                );
            }
            "restore" => {
                assert_eq!(x.unwrap()["removed"], true);
                assert_eq!(y["removed"], false);
                assert_eq!(x.unwrap()["record"], y["record"]);
                assert_eq!(api(sim, &format!("/employees/{id}")).status, 200);
            }
            "rehire" => {
                let x = x.unwrap();
                assert_eq!(x["record"]["status"], "out of service");
                assert_eq!(y["record"]["status"], "active");
                let n = |v: &Value| v["employments"].as_array().unwrap().len();
                assert_eq!(n(y), n(x) + 1);
                assert_eq!(
                    effs,
                    [
                        Some(rep.date.as_str()),
                        None,
                        Some(&rep.date),
                        Some(&rep.date),
                        None
                    ]
                );
                let emp = &y["record"]["employment"];
                assert_eq!(emp["start_date"], t00(e_date));
                assert!(emp["end_date"].is_null());
                assert_eq!(emp["tax_details"]["start_date"], t00(e_date));
                let old_month = x["employments"].as_array().unwrap().last().unwrap()["salary"]
                    .as_array()
                    .unwrap()
                    .last()
                    .unwrap()["month_wage"]
                    .as_f64()
                    .unwrap();
                assert_ne!(emp["salary"]["month_wage"].as_f64().unwrap(), old_month);
                assert_ne!(
                    emp["contract"]["hours_per_week"],
                    x["record"]["employment"]["contract"]["hours_per_week"]
                );
            }
            _ => {}
        }
    }
    let http_ids: Vec<String> = list_all(sim)
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(http_ids, sim.listed_employee_ids());
    events
}

#[test]
fn each_step_reports_exactly_what_changed() {
    let s = sim();
    let mut seen = BTreeSet::new();
    let mut date = NaiveDate::from_ymd_opt(2026, 1, 1).unwrap();
    for step in 1..=8 {
        let before = s.dump();
        let rep = s.advance();
        let after = s.dump();
        date = date + chrono::Months::new(1);
        assert_eq!(rep.step, step);
        assert_eq!(rep.date, date.format("%Y-%m-%d").to_string());
        assert_eq!(after["date"], rep.date.as_str());
        assert!(!rep.noise_employee_ids.is_empty());
        seen.extend(check_step(&s, &before, &rep, &after));
    }
    for ev in [
        "raise",
        "backdated_raise",
        "hours_change",
        "renewal",
        "conversion",
        "hire",
        "termination",
        "removal",
        "restore",
        "rehire",
    ] {
        assert!(seen.contains(ev), "event {ev} never happened: {seen:?}");
    }
}

#[test]
fn default_counts_follow_the_number_of_employees() {
    let s = sim();
    let rep = s.advance();
    let count = |ev: &str| {
        rep.changes
            .iter()
            .filter(|c| c.event == ev)
            .map(|c| &c.employee_id)
            .collect::<BTreeSet<_>>()
            .len()
    };
    assert_eq!(count("raise"), 6); // 5% of 117, rounded
    assert_eq!(count("backdated_raise"), 1);
    assert_eq!(count("hours_change"), 2);
    assert_eq!(count("hire"), 2);
    assert_eq!(count("removal"), 1);
    assert_eq!(count("restore"), 0, "nothing removed yet");
    assert_eq!(rep.noise_employee_ids.len(), 6);
}

#[test]
fn explicit_counts_and_a_quiet_step() {
    let s = sim();
    let rep = s.advance_with(AdvanceOptions::none());
    assert!(rep.changes.is_empty() && rep.noise_employee_ids.is_empty());
    let before = s.dump();
    let rep = s.advance_with(AdvanceOptions {
        raises: Some(3),
        ..AdvanceOptions::none()
    });
    assert_eq!(rep.changes.len(), 3);
    assert!(rep
        .changes
        .iter()
        .all(|c| c.change_type == "salary_change"
            && c.effective_date.as_deref() == Some("2026-03-01")));
    check_step(&s, &before, &rep, &s.dump());
    // more than possible: as many as there are eligible employees, and the report says so
    let rep = s.advance_with(AdvanceOptions {
        restores: Some(50),
        ..AdvanceOptions::none()
    });
    assert!(rep.changes.is_empty());
}

#[test]
fn same_seed_same_reports_and_reset_goes_back() {
    let a = sim();
    let b = sim();
    let initial = a.dump();
    for _ in 0..3 {
        assert_eq!(a.advance(), b.advance());
    }
    assert_eq!(a.dump(), b.dump());
    a.reset();
    assert_eq!(a.dump(), initial);
    let c = sim();
    assert_eq!(
        a.advance(),
        c.advance(),
        "step numbering restarts after reset"
    );
}

#[test]
fn control_api_advances_and_dumps() {
    let s = sim();
    let r = control(&s, "POST", "/_sim/advance", None);
    assert_eq!(r.status, 200);
    let rep: StepReport = serde_json::from_str(&r.body).unwrap();
    assert_eq!(rep.step, 1);
    let r = control(
        &s,
        "POST",
        "/_sim/advance",
        Some(
            r#"{"raises":2,"backdated_raises":0,"hours_changes":0,"renewals":0,"conversions":0,"hires":0,"terminations":0,"removals":0,"restores":0,"rehires":0,"noise":0}"#,
        ),
    );
    let rep: StepReport = serde_json::from_str(&r.body).unwrap();
    assert_eq!((rep.step, rep.changes.len()), (2, 2));
    let dump = control(&s, "GET", "/_sim/dump", None).json();
    assert_eq!(dump, s.dump());
    assert_eq!(dump["date"], "2026-03-01");
    assert_eq!(control(&s, "POST", "/_sim/reset", None).status, 200);
    assert_eq!(s.dump()["date"], "2026-01-01");
    assert_eq!(
        control(
            &s,
            "POST",
            "/_sim/load",
            Some(&serde_json::to_string(&dump).unwrap())
        )
        .status,
        200
    );
    assert_eq!(s.dump(), dump);
    assert_eq!(
        control(&s, "POST", "/_sim/load", Some("{\"employees\":1}")).status,
        400
    );
    assert_eq!(
        control(&s, "POST", "/_sim/advance", Some("not json")).status,
        400
    );
}

#[test]
fn reports_hold_for_other_seeds_and_sizes() {
    for (employees, seed) in [(20, 5), (60, 9), (3, 2)] {
        let s = employes_sim::Sim::start(employes_sim::SimConfig {
            employees,
            seed,
            rps: 0.0,
            ..Default::default()
        })
        .unwrap();
        for _ in 0..12 {
            let before = s.dump();
            let rep = s.advance();
            check_step(&s, &before, &rep, &s.dump());
        }
    }
}
