//! The simulated Employes API: routes, auth, the rate limit, injected faults, pagination and the
//! list moves.

use super::*;

// ---------- the API ----------

pub(super) enum Route<'a> {
    List,
    Detail(&'a str),
    Employments(&'a str),
    Payruns,
    /// Another path under the company.
    Forbidden,
    /// A company id that is not ours.
    OtherCompany,
    NotFound,
}

pub(super) fn route<'a>(path: &'a str, company: &str) -> Route<'a> {
    let mut segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    if segs.first() == Some(&"v4") {
        segs.remove(0);
    }
    let Some(&c) = segs.first() else {
        return Route::NotFound;
    };
    if c != company {
        return if looks_like_uuid(c) {
            Route::OtherCompany
        } else {
            Route::NotFound
        };
    }
    match segs[1..] {
        ["employees"] => Route::List,
        ["employees", id] => Route::Detail(id),
        ["employees", id, "employments"] => Route::Employments(id),
        ["payruns"] => Route::Payruns,
        _ => Route::Forbidden,
    }
}

pub(super) fn looks_like_uuid(s: &str) -> bool {
    s.len() == 36
        && s.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        })
}

pub(super) fn endpoint_name(r: &Route) -> &'static str {
    match r {
        Route::List => "list",
        Route::Detail(_) => "detail",
        Route::Employments(_) => "employments",
        Route::Payruns => "payruns",
        _ => "other",
    }
}

/// A positive integer query parameter, or a 400 message naming it.
pub(super) fn positive(req: &Request, name: &str) -> Result<Option<usize>, String> {
    match req.param(name) {
        None => Ok(None),
        Some(v) => match v.parse::<i64>() {
            Ok(n) if n > 0 => Ok(Some(n as usize)),
            _ => Err(format!(
                "Invalid value for parameter '{name}': {v:?} is not a positive integer"
            )),
        },
    }
}

/// Which company a path names: its index (0 for the first), or 0 for a path naming none.
fn company_of(path: &str, sh: &Shared) -> (usize, String) {
    let named = path
        .split('/')
        .find(|s| !s.is_empty() && *s != "v4")
        .unwrap_or("");
    let first = lock(&sh.state).ds.company_id.clone();
    if named == first {
        return (0, first);
    }
    match lock(&sh.others)
        .iter()
        .position(|o| o.ds.company_id == named)
    {
        Some(k) => (k + 1, named.to_owned()),
        None => (0, first),
    }
}

pub(super) fn api(req: &Request, sh: &Shared) -> Response {
    let now = Instant::now();
    let (company, company_id) = company_of(&req.path, sh);
    let r = route(&req.path, &company_id);
    let name = endpoint_name(&r);
    lock(&sh.stats).arrival(now);

    let resp = api_answer(req, sh, &r, company, &company_id);

    let (latency, jitter) = *lock(&sh.latency);
    let extra = if jitter > 0 {
        lock(&sh.jitter).below(jitter + 1)
    } else {
        0
    };
    if latency + extra > 0 {
        std::thread::sleep(Duration::from_millis(latency + extra));
    }
    let status = match resp.delivery {
        Delivery::Reset => 0,
        _ => resp.status,
    };
    lock(&sh.stats).answered(name, status);
    resp
}

pub(super) fn api_answer(
    req: &Request,
    sh: &Shared,
    r: &Route,
    company: usize,
    company_id: &str,
) -> Response {
    if let Err(secs) = lock(&sh.limiter).take(Instant::now()) {
        lock(&sh.stats).stats.rate_limited += 1;
        let mut resp = Response::message(429, "Too Many Requests");
        resp.retry_after = Some(secs);
        return resp;
    }
    let auth = req.header("authorization").unwrap_or("");
    let token = auth
        .strip_prefix("Bearer ")
        .map(str::trim)
        .filter(|t| !t.is_empty());
    let Some(token) = token else {
        return Response::message(
            403,
            "Invalid key=value pair (missing equal-sign) in Authorization header",
        );
    };
    let expected = lock(&sh.company_tokens)
        .get(company_id)
        .cloned()
        .unwrap_or_else(|| sh.token.clone());
    if token != expected {
        return Response::message(401, "Unauthorized");
    }

    let (endpoint, employee_id) = match r {
        Route::List => (Some(Endpoint::List), None),
        Route::Detail(id) => (Some(Endpoint::Detail), Some(*id)),
        Route::Employments(id) => (Some(Endpoint::Employments), Some(*id)),
        Route::Payruns => (Some(Endpoint::Payruns), None),
        _ => (None, None),
    };
    let page = match r {
        Route::List => positive(req, "page").ok().map(|p| p.unwrap_or(1) as u32),
        _ => None,
    };
    let target = Target {
        company_id,
        endpoint,
        page,
        employee_id,
    };
    let fault = lock(&sh.faults).check(&target);
    match fault {
        None => {}
        Some(FaultAction::Delay { ms }) => std::thread::sleep(Duration::from_millis(ms)),
        Some(FaultAction::Status {
            status,
            body,
            retry_after,
        }) => {
            let body = body.unwrap_or_else(|| json!({ "message": reason(status) }));
            let mut resp = Response::json(status, &body);
            resp.retry_after = retry_after.map(u64::from);
            return resp;
        }
        Some(FaultAction::Reset) => {
            let mut resp = Response::message(0, "");
            resp.delivery = Delivery::Reset;
            return resp;
        }
        Some(FaultAction::MalformedJson) => {
            let mut resp = Response::message(200, "");
            resp.body =
                br#"{"data":[{"id":"3f0c9a52-7d41-4c1e-9b0e-5e1a2c3d4f50","first_name":"Ann"#
                    .to_vec();
            return resp;
        }
        Some(FaultAction::Truncate) => {
            let mut resp = answer(req, sh, r, company);
            resp.status = 200;
            resp.delivery = Delivery::Truncate;
            return resp;
        }
        Some(FaultAction::Body { body }) => return Response::json(200, &body),
        Some(FaultAction::Raw {
            status,
            headers,
            body,
        }) => {
            let mut resp = Response::message(status, "");
            resp.body = body.into_bytes();
            resp.headers = headers;
            return resp;
        }
    }
    answer(req, sh, r, company)
}

/// The normal answer of an authenticated API request.
pub(super) fn answer(req: &Request, sh: &Shared, r: &Route, company: usize) -> Response {
    if !matches!(r, Route::NotFound | Route::OtherCompany) && req.method != "GET" {
        return Response::message(405, "Method Not Allowed");
    }
    if company > 0 {
        let mut others = lock(&sh.others);
        return answer_in(req, sh, r, &mut others[company - 1].ds, false);
    }
    let mut st = lock(&sh.state);
    answer_in(req, sh, r, &mut st.ds, true)
}

/// The answer from one company's dataset; list moves apply to the first company's list.
fn answer_in(
    req: &Request,
    sh: &Shared,
    r: &Route,
    ds: &mut crate::data::Dataset,
    moves: bool,
) -> Response {
    match r {
        Route::NotFound => Response::message(404, "Not found"),
        Route::OtherCompany | Route::Forbidden => Response::message(403, "Forbidden"),
        Route::Payruns => Response::json(200, &json!({ "data": ds.payruns() })),
        Route::Detail(id) => match ds.find(id) {
            Some(e) => Response::json(200, &json!({ "data": e.record })),
            None => Response::message(404, "Not found"),
        },
        Route::Employments(id) => match ds.find(id) {
            Some(e) => {
                let data = if e.employments.is_null() {
                    json!([])
                } else {
                    e.employments.clone()
                };
                Response::json(200, &json!({ "data": data }))
            }
            None => Response::message(404, "Not found"),
        },
        Route::List => {
            let page = match positive(req, "page") {
                Ok(p) => p.unwrap_or(1),
                Err(m) => return Response::message(400, &m),
            };
            let per_page = match positive(req, "per_page") {
                Ok(p) => p.unwrap_or(sh.default_per_page).min(100),
                Err(m) => return Response::message(400, &m),
            };
            let listed = ds.listed();
            let total = listed.len();
            let pages = total.div_ceil(per_page);
            let data: Vec<&Value> = listed
                .iter()
                .skip((page - 1).saturating_mul(per_page))
                .take(per_page)
                .map(|&i| &ds.employees[i].record)
                .collect();
            let resp = Response::json(
                200,
                &json!({ "data": data, "pages": pages, "total": total }),
            );
            if moves {
                apply_list_moves(sh, ds, page);
            }
            resp
        }
    }
}

/// Applies the list moves armed for after this page, now that it is answered.
pub(super) fn apply_list_moves(sh: &Shared, ds: &mut crate::data::Dataset, page: usize) {
    let mut moves = lock(&sh.list_moves);
    let (armed, done) = &mut *moves;
    let (now, later): (Vec<_>, Vec<_>) =
        armed.drain(..).partition(|m| m.after_page as usize == page);
    *armed = later;
    for mv in now {
        let nth = done.len() as u32 + 1;
        done.push(crate::advance::move_list(ds, sh.seed, nth, &mv));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let c = "5f1c6a4e-1c1f-4b8e-9a53-2b7d3f0e9a11";
        assert!(matches!(
            route(&format!("/v4/{c}/employees"), c),
            Route::List
        ));
        assert!(matches!(
            route(&format!("/{c}/employees/x"), c),
            Route::Detail("x")
        ));
        assert!(matches!(
            route(&format!("/{c}/employees/x/employments"), c),
            Route::Employments("x")
        ));
        assert!(matches!(
            route(&format!("/{c}/departments"), c),
            Route::Forbidden
        ));
        assert!(matches!(
            route("/v4/00000000-0000-0000-0000-000000000000/employees", c),
            Route::OtherCompany
        ));
        assert!(matches!(route("/v4/nothing", c), Route::NotFound));
        assert!(matches!(route("/", c), Route::NotFound));
    }
}
