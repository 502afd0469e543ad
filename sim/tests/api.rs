//! The HTTP API's shapes, pagination, auth answers, errors and rate limit.

mod common;

use common::{api, get_auth, list_all, sim};
use employes_sim::{Sim, SimConfig};

#[test]
fn pagination_117_employees_per_page_100_is_100_plus_17() {
    let s = sim();
    let p1 = api(&s, "/employees?page=1&per_page=100");
    assert_eq!(p1.status, 200);
    assert_eq!(p1.content_type.as_deref(), Some("application/json"));
    let v1 = p1.json();
    assert_eq!(v1["pages"], 2);
    assert_eq!(v1["total"], 117);
    assert_eq!(v1["data"].as_array().unwrap().len(), 100);
    let v2 = api(&s, "/employees?page=2&per_page=100").json();
    assert_eq!(v2["data"].as_array().unwrap().len(), 17);
    assert_eq!(v2["pages"], 2);
    let v3 = api(&s, "/employees?page=3&per_page=100").json();
    assert_eq!(
        v3,
        serde_json::json!({"data": [], "pages": 2, "total": 117})
    );
}

#[test]
fn list_is_ordered_by_employee_number_and_matches_listed_ids() {
    let s = sim();
    let all = list_all(&s);
    let numbers: Vec<i64> = all
        .iter()
        .map(|e| e["employee_number"].as_i64().unwrap())
        .collect();
    let mut sorted = numbers.clone();
    sorted.sort();
    assert_eq!(numbers, sorted);
    let ids: Vec<String> = all
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, s.listed_employee_ids());
}

#[test]
fn default_per_page_is_25_and_per_page_200_is_capped_at_100() {
    let s = sim();
    let v = api(&s, "/employees").json();
    assert_eq!(v["data"].as_array().unwrap().len(), 25);
    assert_eq!(v["pages"], 5);
    let v = api(&s, "/employees?per_page=200").json();
    assert_eq!(v["data"].as_array().unwrap().len(), 100);
    assert_eq!(v["pages"], 2);
    assert_eq!(v["total"], 117);
}

#[test]
fn bad_page_or_per_page_is_400_naming_the_parameter() {
    let s = sim();
    for q in ["page=0", "page=-1", "page=abc", "page=1.5", "page="] {
        let r = api(&s, &format!("/employees?{q}"));
        assert_eq!(r.status, 400, "{q}");
        assert!(
            r.json()["message"].as_str().unwrap().contains("'page'"),
            "{q}"
        );
    }
    for q in ["per_page=0", "per_page=-5", "per_page=x"] {
        let r = api(&s, &format!("/employees?page=1&{q}"));
        assert_eq!(r.status, 400, "{q}");
        assert!(
            r.json()["message"].as_str().unwrap().contains("'per_page'"),
            "{q}"
        );
    }
}

#[test]
fn auth_missing_or_malformed_is_403_and_wrong_token_is_401() {
    let s = sim();
    let url = format!("{}/{}/employees", s.base_url(), s.company_id());
    let gateway =
        r#"{"message":"Invalid key=value pair (missing equal-sign) in Authorization header"}"#;
    for header in [
        None,
        Some("demo-token"),
        Some("Basic ZGVtbzp4"),
        Some("Bearer"),
        Some("Bearer "),
    ] {
        let r = get_auth(&url, header);
        assert_eq!(r.status, 403, "{header:?}");
        assert_eq!(r.body, gateway, "{header:?}");
    }
    let r = get_auth(&url, Some("Bearer wrong-token"));
    assert_eq!(r.status, 401);
    assert_eq!(r.body, r#"{"message":"Unauthorized"}"#);
    assert_eq!(get_auth(&url, Some("Bearer demo-token")).status, 200);
}

#[test]
fn v4_prefix_is_optional() {
    let s = sim();
    let with = api(&s, "/employees?page=2");
    let url = format!("http://{}/{}/employees?page=2", s.addr(), s.company_id());
    let without = get_auth(&url, Some("Bearer demo-token"));
    assert_eq!(with.status, 200);
    assert_eq!(with.body, without.body);
}

#[test]
fn detail_is_wrapped_in_data_and_equals_the_list_record() {
    let s = sim();
    let all = list_all(&s);
    for e in all.iter().take(10) {
        let r = api(&s, &format!("/employees/{}", e["id"].as_str().unwrap()));
        assert_eq!(r.status, 200);
        assert_eq!(r.json(), serde_json::json!({ "data": e }));
    }
}

#[test]
fn employments_are_an_envelope_and_empty_without_employment() {
    let s = sim();
    let all = list_all(&s);
    let mut saw_empty = false;
    for e in &all {
        let v = api(
            &s,
            &format!("/employees/{}/employments", e["id"].as_str().unwrap()),
        )
        .json();
        let items = v["data"].as_array().expect("data is an array");
        if e.get("employment").is_none_or(|x| x.is_null()) {
            assert!(items.is_empty());
            saw_empty = true;
        } else {
            assert!(!items.is_empty());
            let last = items.last().unwrap();
            assert_eq!(last["start_date"], e["employment"]["start_date"]);
        }
    }
    assert!(saw_empty);
}

#[test]
fn unknown_ids_and_paths_are_404() {
    let s = sim();
    let r = api(&s, "/employees/00000000-0000-4000-8000-000000000000");
    assert_eq!(
        (r.status, r.body.as_str()),
        (404, r#"{"message":"Not found"}"#)
    );
    let r = api(&s, "/employees/nope/employments");
    assert_eq!(r.status, 404);
    let r = get_auth(
        &format!("{}/something", s.base_url()),
        Some("Bearer demo-token"),
    );
    assert_eq!(r.status, 404);
}

#[test]
fn other_company_endpoints_and_wrong_company_are_403() {
    let s = sim();
    for p in [
        "/departments",
        "/locations",
        "/contracts",
        "/salary-history",
        "/wage-components",
        "/personnel-files",
        "/timetracking",
        "/employment-history",
    ] {
        let r = api(&s, p);
        assert_eq!(
            (r.status, r.body.as_str()),
            (403, r#"{"message":"Forbidden"}"#),
            "{p}"
        );
    }
    let id = s.listed_employee_ids()[0].clone();
    assert_eq!(
        api(&s, &format!("/employees/{id}/salary-history")).status,
        403
    );
    let url = format!(
        "{}/11111111-2222-4333-8444-555555555555/employees",
        s.base_url()
    );
    let r = get_auth(&url, Some("Bearer demo-token"));
    assert_eq!(
        (r.status, r.body.as_str()),
        (403, r#"{"message":"Forbidden"}"#)
    );
}

#[test]
fn payruns_are_served() {
    let s = sim();
    let v = api(&s, "/payruns").json();
    let runs = v["data"].as_array().unwrap();
    assert!(runs.len() >= 3);
    assert!(runs
        .iter()
        .all(|r| r["start_date"].as_str().unwrap().ends_with("T00:00:00")));
}

#[test]
fn exceeding_rps_gives_429_with_retry_after() {
    let s = Sim::start(SimConfig::default()).unwrap(); // 5 rps
    let statuses: Vec<(u16, Option<String>)> = (0..12)
        .map(|_| {
            let r = api(&s, "/employees?page=1");
            (r.status, r.retry_after)
        })
        .collect();
    assert!(
        statuses[..5].iter().all(|(st, _)| *st == 200),
        "{statuses:?}"
    );
    let limited: Vec<_> = statuses.iter().filter(|(st, _)| *st == 429).collect();
    assert!(!limited.is_empty(), "{statuses:?}");
    for (_, ra) in limited {
        let secs: u64 = ra.as_deref().expect("Retry-After").parse().unwrap();
        assert!(secs >= 1);
    }
    let stats = s.stats();
    assert!(stats.rate_limited > 0);
    assert_eq!(stats.total, 12);
    assert_eq!(stats.by_endpoint["list"]["429"], stats.rate_limited);
    assert!(stats.max_requests_in_any_second >= 5);
    // control requests are never limited
    assert_eq!(common::control(&s, "GET", "/_sim/stats", None).status, 200);
}

#[test]
fn latency_delays_api_responses() {
    let s = sim();
    s.set_latency(150, 0);
    let t = std::time::Instant::now();
    assert_eq!(api(&s, "/payruns").status, 200);
    assert!(t.elapsed() >= std::time::Duration::from_millis(150));
}

#[test]
fn same_seed_gives_byte_identical_responses_and_another_seed_differs() {
    let a = sim();
    let b = sim();
    let c = Sim::start(SimConfig {
        rps: 0.0,
        seed: 2,
        ..SimConfig::default()
    })
    .unwrap();
    let paths = [
        "/employees?page=1&per_page=100",
        "/employees?page=2&per_page=100",
        "/payruns",
    ];
    for p in paths {
        assert_eq!(api(&a, p).body, api(&b, p).body, "{p}");
    }
    assert_ne!(api(&a, paths[0]).body, api(&c, paths[0]).body);
    for id in a.listed_employee_ids().iter().take(20) {
        let p = format!("/employees/{id}/employments");
        assert_eq!(api(&a, &p).body, api(&b, &p).body);
    }
    assert_eq!(a.dump(), b.dump());
    let (ra, rb) = (a.advance(), b.advance());
    assert_eq!(ra, rb);
    assert_eq!(
        serde_json::to_string(&a.dump()).unwrap(),
        serde_json::to_string(&b.dump()).unwrap()
    );
}

#[test]
fn keep_alive_serves_many_requests_on_one_connection() {
    use std::io::{BufRead, BufReader, Read, Write};
    let s = sim();
    let mut conn = std::net::TcpStream::connect(s.addr()).unwrap();
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    for _ in 0..3 {
        write!(
            conn,
            "GET /v4/{}/payruns HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer demo-token\r\n\r\n",
            s.company_id()
        )
        .unwrap();
        let mut len = 0;
        let mut status = String::new();
        reader.read_line(&mut status).unwrap();
        assert!(status.starts_with("HTTP/1.1 200"), "{status}");
        loop {
            let mut h = String::new();
            reader.read_line(&mut h).unwrap();
            if h == "\r\n" {
                break;
            }
            if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                len = v.trim().parse().unwrap();
            }
        }
        let mut body = vec![0; len];
        reader.read_exact(&mut body).unwrap();
        serde_json::from_slice::<serde_json::Value>(&body).unwrap();
    }
}

#[test]
fn stats_count_by_endpoint_and_status_and_reset() {
    let s = sim();
    let id = s.listed_employee_ids()[0].clone();
    api(&s, "/employees");
    api(&s, &format!("/employees/{id}"));
    api(&s, &format!("/employees/{id}/employments"));
    api(&s, &format!("/employees/{id}/employments"));
    api(&s, "/payruns");
    api(&s, "/departments");
    api(&s, "/employees/nope");
    let st = s.stats();
    assert_eq!(st.total, 7);
    assert_eq!(st.by_endpoint["list"]["200"], 1);
    assert_eq!(st.by_endpoint["detail"]["200"], 1);
    assert_eq!(st.by_endpoint["detail"]["404"], 1);
    assert_eq!(st.by_endpoint["employments"]["200"], 2);
    assert_eq!(st.by_endpoint["payruns"]["200"], 1);
    assert_eq!(st.by_endpoint["other"]["403"], 1);
    let over_http: employes_sim::Stats =
        serde_json::from_str(&common::control(&s, "GET", "/_sim/stats", None).body).unwrap();
    assert_eq!(over_http, st);
    assert_eq!(
        common::control(&s, "POST", "/_sim/stats/reset", None).status,
        200
    );
    assert_eq!(s.stats(), employes_sim::Stats::default());
}

#[test]
fn config_endpoint_switches_rate_limit_and_latency() {
    let s = sim();
    let r = common::control(&s, "POST", "/_sim/config", Some(r#"{"rps":1}"#));
    assert_eq!(r.status, 200);
    assert_eq!(api(&s, "/payruns").status, 200);
    assert_eq!(api(&s, "/payruns").status, 429);
    common::control(
        &s,
        "POST",
        "/_sim/config",
        Some(r#"{"rps":0,"latency_ms":120}"#),
    );
    let t = std::time::Instant::now();
    assert_eq!(api(&s, "/payruns").status, 200);
    assert!(t.elapsed() >= std::time::Duration::from_millis(120));
}

#[test]
fn shutdown_stops_serving() {
    let s = sim();
    let addr = s.addr();
    s.shutdown();
    assert!(std::net::TcpStream::connect(addr).is_err());
}

/// The ids on one list page.
fn page_ids(s: &Sim, page: u32, per_page: u32) -> Vec<String> {
    api(s, &format!("/employees?page={page}&per_page={per_page}")).json()["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn a_list_move_changes_the_list_right_after_its_page_is_answered() {
    let s = sim();
    let before = s.listed_employee_ids();
    s.move_list_after_page(employes_sim::ListMove {
        after_page: 1,
        delete_positions: vec![4],
        hires: 1,
        ..Default::default()
    });
    // Page 2 first: the move waits for page 1.
    assert_eq!(page_ids(&s, 2, 100), before[100..].to_vec());
    assert_eq!(page_ids(&s, 1, 100), before[..100].to_vec());
    let done = s.list_moves_done();
    assert_eq!(done.len(), 1);
    let kinds: Vec<(&str, &str)> = done[0]
        .changes
        .iter()
        .map(|t| (t.change_type.as_str(), t.event.as_str()))
        .collect();
    assert_eq!(kinds, [("deleted", "removal"), ("created", "hire")]);
    assert_eq!(done[0].changes[0].employee_id, before[4]);
    // Everyone after the deleted one moved up a place; the hire is last; the total is the same.
    let after = s.listed_employee_ids();
    assert_eq!(after.len(), before.len());
    assert_eq!(after[4..116], before[5..117]);
    assert_eq!(after[116], done[0].changes[1].employee_id);
    assert_eq!(api(&s, &format!("/employees/{}", before[4])).status, 404);
    let hired = api(&s, &format!("/employees/{}", after[116]));
    assert_eq!(hired.status, 200);
    // Once only.
    page_ids(&s, 1, 100);
    assert_eq!(s.list_moves_done().len(), 1);
}

#[test]
fn a_reorder_moves_an_employee_without_changing_any_record() {
    let s = sim();
    let before = s.listed_employee_ids();
    let records = api(&s, "/employees?page=1&per_page=100").json();
    s.move_list_after_page(employes_sim::ListMove {
        after_page: 1,
        reorder: Some((100, 0)),
        ..Default::default()
    });
    page_ids(&s, 1, 100);
    let after = s.listed_employee_ids();
    assert_eq!(after[0], before[100]);
    assert_eq!(after[1..101], before[..100]);
    assert!(s.list_moves_done()[0].changes.is_empty());
    // The same records, in another order.
    let moved = api(&s, "/employees?page=1&per_page=100").json();
    assert_eq!(moved["data"][1], records["data"][0]);
    assert_eq!(moved["total"], records["total"]);
}
