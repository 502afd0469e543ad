//! The generated dataset carries the quirks of employes-api.md; a loaded dataset is served
//! verbatim.

mod common;

use chrono::NaiveDate;
use common::{api, list_all, sim};
use serde_json::{json, Value};

fn ds() -> Value {
    let d = NaiveDate::from_ymd_opt(2026, 1, 1).unwrap();
    employes_sim::generate(117, 1, d, "5f1c6a4e-1c1f-4b8e-9a53-2b7d3f0e9a11")
}

#[test]
fn generated_dataset_has_every_documented_quirk() {
    for n in [20usize, 117] {
        let d = NaiveDate::from_ymd_opt(2026, 1, 1).unwrap();
        let v = employes_sim::generate(n, 7, d, "c0ffee00-0000-4000-8000-000000000000");
        let es = v["employees"].as_array().unwrap();
        assert_eq!(es.len(), n);
        let recs: Vec<&Value> = es.iter().map(|e| &e["record"]).collect();
        let has = |f: &dyn Fn(&Value) -> bool| recs.iter().any(|r| f(r));
        let no_emp = recs
            .iter()
            .filter(|r| r.get("employment").is_none_or(Value::is_null))
            .count();
        assert!(
            (n * 20 / 100..=n * 30 / 100).contains(&no_emp),
            "{n}: {no_emp}"
        );
        assert!(
            has(&|r| r.get("employment").is_none()),
            "employment key absent"
        );
        assert!(
            has(&|r| r.get("employment") == Some(&Value::Null)),
            "employment null"
        );
        let emp = |r: &Value| r.get("employment").filter(|e| e.is_object()).cloned();
        assert!(
            has(&|r| emp(r).is_some_and(|e| e.get("end_date").is_none())),
            "end_date absent"
        );
        assert!(has(
            &|r| emp(r).is_some_and(|e| e.get("end_date") == Some(&Value::Null))
        ));
        assert!(
            has(&|r| emp(r).is_some_and(|e| e["salary"]["month_wage"].is_i64())),
            "int wage"
        );
        assert!(
            has(&|r| emp(r).is_some_and(|e| e["salary"]["month_wage"].is_f64())),
            "float wage"
        );
        assert!(has(
            &|r| emp(r).is_some_and(|e| e["contract"]["max_hours"].is_null())
        ));
        assert!(has(
            &|r| emp(r).is_some_and(|e| e["contract"]["max_hours"] == json!(0))
        ));
        assert!(has(
            &|r| emp(r).is_some_and(|e| e["contract"]["min_hours"].is_null())
        ));
        assert!(has(
            &|r| emp(r).is_some_and(|e| e["contract"]["min_hours"] == json!(0))
        ));
        for s in ["active", "pending", "out of service"] {
            assert!(has(&|r| r["status"] == s), "{n}: status {s}");
        }
        assert!(has(&|r| r["dt_create"] == "0001-01-01T00:00:00"));
        assert!(has(&|r| r["street"].as_str().unwrap().ends_with(' ')));
        assert!(has(&|r| r["surname_prefix"] == ""));
        assert!(has(&|r| r["surname_prefix"]
            .as_str()
            .unwrap()
            .contains(' ')));
        let rehires = es
            .iter()
            .filter(|e| e["employments"].as_array().unwrap().len() == 2)
            .count();
        assert!(rehires >= 1, "{n}: a rehire with two employments");
        for e in es {
            let r = &e["record"];
            let upd = r["dt_update"].as_str().unwrap();
            assert_eq!(upd.len(), 26, "{upd}");
            assert!(r["date_of_birth"].as_str().unwrap().ends_with("T00:00:00"));
            let Some(emp) = emp(r) else { continue };
            let hpw = emp["contract"]["hours_per_week"].as_f64().unwrap();
            let want = if hpw >= 36.0 { "fulltime" } else { "parttime" };
            assert_eq!(emp["contract"]["employee_type"], want);
            assert_ne!(r["yearly_wage"], emp["salary"]["yearly_wage"]);
            let items = e["employments"].as_array().unwrap();
            let last = items.last().unwrap();
            assert_eq!(last["start_date"], emp["start_date"]);
            assert_eq!(emp["tax_details"]["start_date"], emp["start_date"]);
            if items.len() == 2 {
                assert!(
                    items[0]["end_date"].as_str().unwrap() < last["start_date"].as_str().unwrap()
                );
            }
            match r["status"].as_str().unwrap() {
                "pending" => assert!(emp["start_date"].as_str().unwrap() > "2026-01-01"),
                "out of service" => assert!(emp["end_date"].as_str().unwrap() < "2026-01-01"),
                _ => {}
            }
        }
    }
}

#[test]
fn some_employees_have_several_salary_periods() {
    let v = ds();
    let max = v["employees"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|e| e["employments"].as_array().unwrap().iter())
        .map(|i| i["salary"].as_array().unwrap().len())
        .max()
        .unwrap();
    assert!(max >= 3);
}

#[test]
fn generate_is_deterministic() {
    assert_eq!(
        serde_json::to_string(&ds()).unwrap(),
        serde_json::to_string(&ds()).unwrap()
    );
}

#[test]
fn loaded_dataset_is_served_verbatim() {
    let s = sim();
    let dataset = json!({
        "company_id": s.company_id(),
        "date": "2026-03-01",
        "employees": [
            {"record": {"id": "b", "employee_number": 2, "month_wage": 2846.0, "extra": {"nested": [1, "x"]}},
             "employments": null, "removed": false},
            {"record": {"id": "a", "employee_number": 1, "first_name": 5, "employment": "weird"},
             "employments": [{"anything": true}]},
            {"record": {"id": null, "zz": 1}, "employments": null},
            {"record": {"id": "gone", "employee_number": 0}, "employments": [], "removed": true}
        ]
    });
    s.load(dataset.clone()).unwrap();
    let list = api(&s, "/employees?per_page=10");
    assert_eq!(
        list.body,
        r#"{"data":[{"id":"a","employee_number":1,"first_name":5,"employment":"weird"},{"id":"b","employee_number":2,"month_wage":2846.0,"extra":{"nested":[1,"x"]}},{"id":null,"zz":1}],"pages":1,"total":3}"#
    );
    assert_eq!(
        api(&s, "/employees/b").body,
        r#"{"data":{"id":"b","employee_number":2,"month_wage":2846.0,"extra":{"nested":[1,"x"]}}}"#
    );
    assert_eq!(api(&s, "/employees/b/employments").body, r#"{"data":[]}"#);
    assert_eq!(
        api(&s, "/employees/a/employments").body,
        r#"{"data":[{"anything":true}]}"#
    );
    assert_eq!(api(&s, "/employees/gone").status, 404);
    assert_eq!(s.dump()["employees"][0], dataset["employees"][0]);
    assert_eq!(s.dump()["date"], "2026-03-01");
    // an advance over odd data does not panic, and reset goes back to the loaded dataset
    s.advance();
    s.reset();
    assert_eq!(s.dump()["employees"][1]["removed"], false);
    assert_eq!(list_all(&s).len(), 3);
    assert!(s.load(json!({"employees": 3})).is_err());
    assert!(s.load(json!([1])).is_err());
}

#[test]
fn config_data_replaces_the_generator() {
    let v = employes_sim::generate(
        5,
        9,
        NaiveDate::from_ymd_opt(2025, 6, 1).unwrap(),
        "x-company",
    );
    let s = employes_sim::Sim::start(employes_sim::SimConfig {
        rps: 0.0,
        data: Some(v.clone()),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(s.company_id(), "x-company");
    assert_eq!(s.dump(), v);
    let url = format!("{}/x-company/employees", s.base_url());
    let r = common::get_auth(&url, Some("Bearer demo-token"));
    assert_eq!(r.json()["total"], 5);
}
