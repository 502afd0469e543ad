//! The `/_sim/` control API: time travel, faults, list moves, statistics, datasets.

use super::*;

// ---------- the control API ----------

pub(super) fn parse_body<T: serde::de::DeserializeOwned>(
    req: &Request,
) -> Result<Option<T>, Response> {
    if req.body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    serde_json::from_slice(&req.body)
        .map(Some)
        .map_err(|e| Response::message(400, &format!("invalid JSON body: {e}")))
}

pub(super) fn ok() -> Response {
    Response::json(200, &json!({ "ok": true }))
}

pub(super) fn control(req: &Request, sh: &Shared) -> Response {
    let path = req.path.trim_end_matches('/');
    match (req.method.as_str(), path) {
        ("POST", "/_sim/advance") => match parse_body::<AdvanceOptions>(req) {
            Ok(opts) => Response::json(200, &json!(sh.advance(&opts.unwrap_or_default()))),
            Err(r) => r,
        },
        ("POST", "/_sim/list_move") => match parse_body::<crate::ListMove>(req) {
            Ok(Some(mv)) => {
                lock(&sh.list_moves).0.push(mv);
                ok()
            }
            Ok(None) => Response::message(400, "a list move body is required"),
            Err(r) => r,
        },
        ("GET", "/_sim/companies") => {
            let mut ids = vec![lock(&sh.state).ds.company_id.clone()];
            ids.extend(lock(&sh.others).iter().map(|o| o.ds.company_id.clone()));
            Response::json(200, &json!(ids))
        }
        ("GET", "/_sim/list_move") => Response::json(200, &json!(lock(&sh.list_moves).1)),
        ("GET", "/_sim/faults") => Response::json(200, &json!(lock(&sh.faults).rules())),
        ("POST", "/_sim/faults") => match parse_body::<Vec<FaultRule>>(req) {
            Ok(rules) => {
                lock(&sh.faults).set(rules.unwrap_or_default());
                ok()
            }
            Err(r) => r,
        },
        ("DELETE", "/_sim/faults") => {
            lock(&sh.faults).set(Vec::new());
            ok()
        }
        ("GET", "/_sim/stats") => Response::json(200, &json!(lock(&sh.stats).stats)),
        ("POST", "/_sim/stats/reset") => {
            lock(&sh.stats).reset();
            ok()
        }
        ("POST", "/_sim/reset") => {
            sh.reset();
            ok()
        }
        ("GET", "/_sim/dump") => Response::json(200, &lock(&sh.state).ds.to_json()),
        ("POST", "/_sim/load") => match parse_body::<Value>(req) {
            Ok(Some(v)) => match sh.load(&v) {
                Ok(()) => ok(),
                Err(m) => Response::message(400, &m),
            },
            Ok(None) => Response::message(400, "a dataset body is required"),
            Err(r) => r,
        },
        ("POST", "/_sim/config") => match parse_body::<Value>(req) {
            Ok(v) => {
                let v = v.unwrap_or(Value::Null);
                if let Some(rps) = v.get("rps").and_then(Value::as_f64) {
                    sh.set_rate_limit(rps);
                }
                let mut lat = lock(&sh.latency);
                if let Some(l) = v.get("latency_ms").and_then(Value::as_u64) {
                    lat.0 = l;
                }
                if let Some(j) = v.get("jitter_ms").and_then(Value::as_u64) {
                    lat.1 = j;
                }
                if let Some(tokens) = v.get("company_tokens").and_then(Value::as_object) {
                    let mut own = lock(&sh.company_tokens);
                    for (company, token) in tokens {
                        match token.as_str() {
                            Some(t) => own.insert(company.clone(), t.to_owned()),
                            None => own.remove(company),
                        };
                    }
                }
                ok()
            }
            Err(r) => r,
        },
        (
            _,
            "/_sim/advance" | "/_sim/faults" | "/_sim/stats" | "/_sim/stats/reset" | "/_sim/reset"
            | "/_sim/dump" | "/_sim/load" | "/_sim/config" | "/_sim/list_move" | "/_sim/companies",
        ) => Response::message(405, "Method Not Allowed"),
        _ => Response::message(404, "Not found"),
    }
}
