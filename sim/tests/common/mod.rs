//! Helpers shared by the integration tests: start a simulator, make real HTTP requests.
#![allow(dead_code)]

use employes_sim::{Sim, SimConfig};
use serde_json::Value;

/// A simulator with the defaults but no rate limit, so tests can fire freely.
pub fn sim() -> Sim {
    Sim::start(SimConfig {
        rps: 0.0,
        ..SimConfig::default()
    })
    .expect("start sim")
}

pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into()
}

#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub retry_after: Option<String>,
    pub content_type: Option<String>,
    pub body: String,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

/// GET with an optional raw Authorization header value.
pub fn get_auth(url: &str, authorization: Option<&str>) -> Resp {
    let mut req = agent().get(url);
    if let Some(a) = authorization {
        req = req.header("Authorization", a);
    }
    let mut resp = req.call().expect("http call");
    let header = |n: &str| {
        resp.headers()
            .get(n)
            .map(|v| v.to_str().unwrap_or_default().to_string())
    };
    Resp {
        status: resp.status().as_u16(),
        retry_after: header("retry-after"),
        content_type: header("content-type"),
        body: resp.body_mut().read_to_string().expect("body"),
    }
}

/// GET `path` (relative to the company) with the right token.
pub fn api(sim: &Sim, path: &str) -> Resp {
    let url = format!("{}/{}{}", sim.base_url(), sim.company_id(), path);
    get_auth(&url, Some(&format!("Bearer {}", sim.token())))
}

/// All employees through the list endpoint, page by page.
pub fn list_all(sim: &Sim) -> Vec<Value> {
    let mut out = Vec::new();
    let mut page = 1;
    loop {
        let v = api(sim, &format!("/employees?page={page}&per_page=100")).json();
        out.extend(v["data"].as_array().unwrap().iter().cloned());
        if page >= v["pages"].as_u64().unwrap() as usize {
            return out;
        }
        page += 1;
    }
}

pub fn control(sim: &Sim, method: &str, path: &str, body: Option<&str>) -> Resp {
    let url = format!("http://{}{}", sim.addr(), path);
    let a = agent();
    let mut resp = match (method, body) {
        ("GET", _) => a.get(&url).call(),
        ("DELETE", _) => a.delete(&url).call(),
        ("POST", Some(b)) => a
            .post(&url)
            .header("Content-Type", "application/json")
            .send(b),
        ("POST", None) => a.post(&url).send_empty(),
        _ => panic!("method {method}"),
    }
    .expect("control call");
    Resp {
        status: resp.status().as_u16(),
        retry_after: None,
        content_type: None,
        body: resp.body_mut().read_to_string().expect("body"),
    }
}
