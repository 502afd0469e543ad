//! An account with several companies: each its own employees, one token and one rate limit for
//! the account, a token of its own where set, faults and time travel per company.

mod common;

use std::time::Instant;

use common::{control, get_auth};
use employes_sim::{company_id_of, Sim, SimConfig};
use serde_json::{json, Value};

fn sim_with(companies: usize, rps: f64) -> Sim {
    Sim::start(SimConfig {
        rps,
        employees: 12,
        companies,
        ..SimConfig::default()
    })
    .expect("start sim")
}

fn get(sim: &Sim, company: &str, path: &str, token: &str) -> common::Resp {
    let url = format!("{}/{company}{path}", sim.base_url());
    get_auth(&url, Some(&format!("Bearer {token}")))
}

fn ids(sim: &Sim, company: &str) -> Vec<String> {
    let v: Value = get(sim, company, "/employees?per_page=100", "demo-token").json();
    v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn each_company_has_its_own_employees_under_its_own_id() {
    let s = sim_with(3, 0.0);
    let companies = s.company_ids();
    assert_eq!(companies.len(), 3);
    assert_eq!(companies[0], s.company_id());
    assert_eq!(companies[1], company_id_of(&s.company_id(), 1));
    assert_ne!(companies[1], companies[2]);
    let a = ids(&s, &companies[0]);
    let b = ids(&s, &companies[1]);
    assert_eq!((a.len(), b.len()), (12, 12));
    assert!(a.iter().all(|id| !b.contains(id)), "ids differ per company");
    // An employee of B is not found under A.
    assert_eq!(
        get(
            &s,
            &companies[0],
            &format!("/employees/{}", b[0]),
            "demo-token"
        )
        .status,
        404
    );
    assert_eq!(
        get(
            &s,
            &companies[1],
            &format!("/employees/{}", b[0]),
            "demo-token"
        )
        .status,
        200
    );
    // An id the account does not have is forbidden, as for one company.
    let other = company_id_of(&s.company_id(), 9);
    assert_eq!(get(&s, &other, "/employees", "demo-token").status, 403);
    let listed: Value = control(&s, "GET", "/_sim/companies", None).json();
    assert_eq!(listed, json!(companies));
}

#[test]
fn time_travel_moves_every_company() {
    let s = sim_with(2, 0.0);
    let companies = s.company_ids();
    let before: Vec<Value> = companies
        .iter()
        .map(|c| get(&s, c, "/employees?per_page=100", "demo-token").json())
        .collect();
    let reports = s.advance_all_with(Default::default());
    assert_eq!(reports.len(), 2);
    for (c, old) in companies.iter().zip(&before) {
        let now: Value = get(&s, c, "/employees?per_page=100", "demo-token").json();
        assert_ne!(&now, old, "company {c} moved on");
    }
}

#[test]
fn one_rate_limit_for_the_account_and_a_token_per_company() {
    let s = sim_with(2, 5.0);
    let companies = s.company_ids();
    // Ten requests alternating between the companies: the account's 5/s applies to the sum.
    let t = Instant::now();
    let mut ok = 0;
    while ok < 10 {
        let r = get(&s, &companies[ok % 2], "/payruns", "demo-token");
        if r.status == 200 {
            ok += 1;
        } else {
            assert_eq!(r.status, 429);
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
    assert!(
        t.elapsed().as_secs_f64() >= 0.9,
        "10 requests at 5/s, burst included, took {:?}",
        t.elapsed()
    );

    let r = control(
        &s,
        "POST",
        "/_sim/config",
        Some(&json!({"company_tokens": {companies[1].clone(): "own-b"}}).to_string()),
    );
    assert_eq!(r.status, 200);
    s.set_rate_limit(0.0);
    assert_eq!(get(&s, &companies[1], "/payruns", "demo-token").status, 401);
    assert_eq!(get(&s, &companies[1], "/payruns", "own-b").status, 200);
    assert_eq!(get(&s, &companies[0], "/payruns", "demo-token").status, 200);
    assert_eq!(get(&s, &companies[0], "/payruns", "own-b").status, 401);
}

#[test]
fn a_fault_can_name_a_company() {
    let s = sim_with(2, 0.0);
    let companies = s.company_ids();
    s.set_faults(
        serde_json::from_value(json!([{"endpoint":"any","company_id":companies[1],
            "action":{"type":"status","status":500}}]))
        .unwrap(),
    );
    assert_eq!(
        get(&s, &companies[0], "/employees", "demo-token").status,
        200
    );
    assert_eq!(
        get(&s, &companies[1], "/employees", "demo-token").status,
        500
    );
}
