//! Each fault action, the rule filters, and how faults show in the stats.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{api, control, sim};
use employes_sim::{Endpoint, FaultAction, FaultRule, Sim};
use serde_json::json;

fn rules(v: serde_json::Value) -> Vec<FaultRule> {
    serde_json::from_value(v).unwrap()
}

/// Sends one request on a fresh connection and reads until the server closes it.
fn raw(sim: &Sim, path: &str) -> std::io::Result<Vec<u8>> {
    let mut c = TcpStream::connect(sim.addr())?;
    c.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        c,
        "GET /v4/{}{path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer demo-token\r\nConnection: close\r\n\r\n",
        sim.company_id()
    )?;
    let mut out = Vec::new();
    c.read_to_end(&mut out)?;
    Ok(out)
}

#[test]
fn status_burst_on_any_endpoint_then_normal() {
    let s = sim();
    s.set_faults(rules(
        json!([{"endpoint":"any","count":3,"action":{"type":"status","status":503}}]),
    ));
    let got: Vec<u16> = (0..5).map(|_| api(&s, "/employees").status).collect();
    assert_eq!(got, [503, 503, 503, 200, 200]);
    s.set_faults(rules(
        json!([{"endpoint":"any","count":1,"action":{"type":"status","status":503}}]),
    ));
    assert_eq!(
        api(&s, "/payruns").body,
        r#"{"message":"Service Unavailable"}"#
    );
}

#[test]
fn status_429_storm_carries_retry_after() {
    let s = sim();
    s.set_faults(rules(json!([
        {"endpoint":"list","count":4,"action":{"type":"status","status":429,"retry_after":1}}
    ])));
    assert_eq!(
        api(&s, "/payruns").status,
        200,
        "other endpoints unaffected"
    );
    for _ in 0..4 {
        let r = api(&s, "/employees");
        assert_eq!(r.status, 429);
        assert_eq!(r.retry_after.as_deref(), Some("1"));
    }
    assert_eq!(api(&s, "/employees").status, 200);
    let st = s.stats();
    assert_eq!(st.by_endpoint["list"]["429"], 4);
    assert_eq!(st.rate_limited, 0, "fault 429s are not the rate limiter's");
}

#[test]
fn status_401_after_skip_with_custom_body_until_cleared() {
    let s = sim();
    s.set_faults(rules(json!([{"endpoint":"any","skip":5,
        "action":{"type":"status","status":401,"body":{"message":"Unauthorized"}}}])));
    let got: Vec<u16> = (0..8).map(|_| api(&s, "/employees").status).collect();
    assert_eq!(got, [200, 200, 200, 200, 200, 401, 401, 401]);
    assert_eq!(api(&s, "/employees").body, r#"{"message":"Unauthorized"}"#);
    s.clear_faults();
    assert_eq!(api(&s, "/employees").status, 200);
}

#[test]
fn malformed_json_on_page_2_only() {
    let s = sim();
    s.set_faults(rules(
        json!([{"endpoint":"list","page":2,"action":{"type":"malformed_json"}}]),
    ));
    let p1 = api(&s, "/employees?page=1&per_page=100");
    assert_eq!(p1.status, 200);
    p1.json();
    let p2 = api(&s, "/employees?page=2&per_page=100");
    assert_eq!(p2.status, 200);
    assert!(serde_json::from_str::<serde_json::Value>(&p2.body).is_err());
}

#[test]
fn employments_403_and_404_for_chosen_ids() {
    let s = sim();
    let ids = s.listed_employee_ids();
    s.set_faults(vec![
        FaultRule {
            endpoint: Endpoint::Employments,
            page: None,
            employee_ids: Some(vec![ids[0].clone()]),
            company_id: None,
            every: None,
            skip: 0,
            count: None,
            action: FaultAction::Status {
                status: 403,
                body: Some(json!({"message":"Forbidden"})),
                retry_after: None,
            },
        },
        FaultRule {
            endpoint: Endpoint::Employments,
            page: None,
            employee_ids: Some(vec![ids[1].clone()]),
            company_id: None,
            every: None,
            skip: 0,
            count: None,
            action: FaultAction::Status {
                status: 404,
                body: None,
                retry_after: None,
            },
        },
    ]);
    assert_eq!(
        api(&s, &format!("/employees/{}/employments", ids[0])).status,
        403
    );
    assert_eq!(
        api(&s, &format!("/employees/{}/employments", ids[0])).status,
        403
    );
    assert_eq!(
        api(&s, &format!("/employees/{}/employments", ids[1])).status,
        404
    );
    assert_eq!(
        api(&s, &format!("/employees/{}/employments", ids[2])).status,
        200
    );
    assert_eq!(api(&s, &format!("/employees/{}", ids[0])).status, 200);
}

#[test]
fn reset_closes_the_connection_with_a_reset() {
    let s = sim();
    s.set_faults(rules(
        json!([{"endpoint":"payruns","count":1,"action":{"type":"reset"}}]),
    ));
    let err = raw(&s, "/payruns").expect_err("connection reset");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset, "{err}");
    assert!(String::from_utf8(raw(&s, "/payruns").unwrap())
        .unwrap()
        .starts_with("HTTP/1.1 200"));
    // through an HTTP client too
    s.set_faults(rules(
        json!([{"endpoint":"list","count":1,"action":{"type":"reset"}}]),
    ));
    let url = format!("{}/{}/employees", s.base_url(), s.company_id());
    assert!(common::agent()
        .get(&url)
        .header("Authorization", "Bearer demo-token")
        .call()
        .is_err());
    assert_eq!(s.stats().by_endpoint["list"]["0"], 1);
}

#[test]
fn truncate_sends_half_the_announced_body() {
    let s = sim();
    s.set_faults(rules(
        json!([{"endpoint":"list","count":1,"action":{"type":"truncate"}}]),
    ));
    let out = raw(&s, "/employees?per_page=100").unwrap();
    let text = String::from_utf8_lossy(&out);
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"));
    let len: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap())
        })
        .unwrap();
    assert!(len > 1000);
    assert_eq!(body.len(), len / 2);
    let full = api(&s, "/employees?per_page=100").body;
    assert_eq!(full.len(), len);
}

#[test]
fn delay_then_normal_answer() {
    let s = sim();
    s.set_faults(rules(
        json!([{"endpoint":"detail","count":1,"action":{"type":"delay","ms":300}}]),
    ));
    let id = s.listed_employee_ids()[0].clone();
    let t = Instant::now();
    let r = api(&s, &format!("/employees/{id}"));
    assert!(t.elapsed() >= Duration::from_millis(300));
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["data"]["id"], id.as_str());
}

#[test]
fn body_replaces_the_answer_verbatim() {
    let s = sim();
    s.set_faults(rules(json!([
        {"endpoint":"list","page":1,"count":1,"action":{"type":"body","body":{"data":[],"pages":0,"total":999}}},
        {"endpoint":"list","count":1,"action":{"type":"body","body":{"data":{"not":"an array"}}}}
    ])));
    assert_eq!(
        api(&s, "/employees").body,
        r#"{"data":[],"pages":0,"total":999}"#
    );
    assert_eq!(
        api(&s, "/employees?page=3").body,
        r#"{"data":{"not":"an array"}}"#
    );
    assert_eq!(api(&s, "/employees").json()["total"], 117);
}

#[test]
fn faults_come_after_auth_and_control_api_sets_them() {
    let s = sim();
    let r = control(
        &s,
        "POST",
        "/_sim/faults",
        Some(r#"[{"endpoint":"any","action":{"type":"status","status":500}}]"#),
    );
    assert_eq!(r.status, 200);
    let listed = control(&s, "GET", "/_sim/faults", None).json();
    assert_eq!(listed[0]["action"]["type"], "status");
    assert_eq!(listed[0]["endpoint"], "any");
    let url = format!("{}/{}/employees", s.base_url(), s.company_id());
    assert_eq!(common::get_auth(&url, Some("Bearer bad")).status, 401);
    assert_eq!(api(&s, "/employees").status, 500);
    assert_eq!(control(&s, "DELETE", "/_sim/faults", None).status, 200);
    assert_eq!(api(&s, "/employees").status, 200);
    assert_eq!(
        control(
            &s,
            "POST",
            "/_sim/faults",
            Some("[{\"endpoint\":\"nope\"}]")
        )
        .status,
        400
    );
}
