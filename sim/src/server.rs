//! A small HTTP/1.1 server on std's `TcpListener`: one thread per connection, keep-alive,
//! `Content-Length` bodies. Routes the API (auth, rate limit, faults, pagination) and the
//! `/_sim/` control API.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::faults::{Endpoint, FaultAction, Target};
use crate::{lock, AdvanceOptions, FaultRule, Shared};

const MAX_HEAD: usize = 64 * 1024;
const MAX_BODY: usize = 64 * 1024 * 1024;
const POLL: Duration = Duration::from_millis(200);

pub(crate) fn serve(listener: TcpListener, shared: Arc<Shared>) {
    for stream in listener.incoming() {
        if shared.shutdown.load(Ordering::SeqCst) {
            break;
        }
        let Ok(stream) = stream else { continue };
        let sh = Arc::clone(&shared);
        let _ = std::thread::Builder::new()
            .name("employes-sim-conn".into())
            .spawn(move || connection(stream, sh));
    }
}

struct Request {
    method: String,
    path: String,
    query: Vec<(String, String)>,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    close: bool,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

enum Delivery {
    Normal,
    /// Close with SO_LINGER 0 without answering.
    Reset,
    /// Full Content-Length, half the body, then close.
    Truncate,
}

struct Response {
    status: u16,
    body: Vec<u8>,
    retry_after: Option<u64>,
    /// Headers of a `raw` fault; its Content-Type replaces JSON's.
    headers: Vec<(String, String)>,
    delivery: Delivery,
}

impl Response {
    fn json(status: u16, v: &Value) -> Response {
        Response {
            status,
            body: serde_json::to_vec(v).unwrap_or_default(),
            retry_after: None,
            headers: Vec::new(),
            delivery: Delivery::Normal,
        }
    }

    fn message(status: u16, msg: &str) -> Response {
        Response::json(status, &json!({ "message": msg }))
    }
}

fn connection(stream: TcpStream, sh: Arc<Shared>) {
    let _ = stream.set_nodelay(true);
    let _ = stream.set_read_timeout(Some(POLL));
    let mut reader = BufReader::new(&stream);
    loop {
        let req = match read_request(&mut reader, &sh) {
            Ok(Some(r)) => r,
            Ok(None) => return,
            Err(e) => {
                if e.kind() == io::ErrorKind::InvalidData {
                    let _ = write_response(&stream, &Response::message(400, "Bad Request"), true);
                }
                return;
            }
        };
        let resp = handle(&req, &sh);
        match resp.delivery {
            Delivery::Reset => {
                let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
                return;
            }
            Delivery::Truncate => {
                let head = head(&resp, resp.body.len(), true);
                let mut out = head.into_bytes();
                out.extend_from_slice(&resp.body[..resp.body.len() / 2]);
                let _ = (&stream).write_all(&out);
                let _ = (&stream).flush();
                let _ = stream.shutdown(Shutdown::Both);
                return;
            }
            Delivery::Normal => {
                if write_response(&stream, &resp, req.close).is_err() || req.close {
                    return;
                }
            }
        }
    }
}

/// One line, waiting through read timeouts unless the server is shutting down.
fn read_line(r: &mut BufReader<&TcpStream>, sh: &Shared) -> io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    loop {
        match r.read_until(b'\n', &mut buf) {
            Ok(_) => return Ok(buf),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                if sh.shutdown.load(Ordering::SeqCst) {
                    return Err(e);
                }
                if buf.len() > MAX_HEAD {
                    return Err(io::Error::new(io::ErrorKind::InvalidData, "line too long"));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

fn read_request(r: &mut BufReader<&TcpStream>, sh: &Shared) -> io::Result<Option<Request>> {
    let bad = |m: &str| io::Error::new(io::ErrorKind::InvalidData, m.to_string());
    let mut line = read_line(r, sh)?;
    while line == b"\r\n" || line == b"\n" {
        line = read_line(r, sh)?;
    }
    if line.is_empty() {
        return Ok(None);
    }
    let line = String::from_utf8(line).map_err(|_| bad("request line"))?;
    let mut parts = line.split_whitespace();
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(bad("request line"));
    };
    let mut headers = Vec::new();
    let mut total = 0;
    loop {
        let h = read_line(r, sh)?;
        if h.is_empty() {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "eof in head"));
        }
        total += h.len();
        if total > MAX_HEAD {
            return Err(bad("head too large"));
        }
        let h = String::from_utf8(h).map_err(|_| bad("header"))?;
        let h = h.trim_end_matches(['\r', '\n']);
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':').ok_or_else(|| bad("header"))?;
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    let get = |name: &str| {
        headers
            .iter()
            .find(|(k, _): &&(String, String)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.to_ascii_lowercase())
    };
    if get("transfer-encoding").is_some() {
        return Err(bad("chunked bodies are not supported"));
    }
    let len: usize = match get("content-length") {
        Some(v) => v.parse().map_err(|_| bad("content-length"))?,
        None => 0,
    };
    if len > MAX_BODY {
        return Err(bad("body too large"));
    }
    let mut body = vec![0u8; len];
    let mut got = 0;
    while got < len {
        match r.read(&mut body[got..]) {
            Ok(0) => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "eof in body")),
            Ok(n) => got += n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                if sh.shutdown.load(Ordering::SeqCst) {
                    return Err(e);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let conn = get("connection").unwrap_or_default();
    let close = conn.contains("close") || (version == "HTTP/1.0" && !conn.contains("keep-alive"));
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let query = query
        .split('&')
        .filter(|s| !s.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (k.to_string(), v.to_string())
        })
        .collect();
    Ok(Some(Request {
        method: method.to_string(),
        path: path.to_string(),
        query,
        headers,
        body,
        close,
    }))
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        301 => "Moved Permanently",
        302 => "Found",
        307 => "Temporary Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    }
}

fn head(resp: &Response, len: usize, close: bool) -> String {
    let content_type = resp
        .headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-type"))
        .map_or("application/json", |(_, v)| v.as_str());
    let mut h = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n",
        resp.status,
        reason(resp.status),
        len
    );
    for (k, v) in &resp.headers {
        if !k.eq_ignore_ascii_case("content-type") {
            h.push_str(&format!("{k}: {v}\r\n"));
        }
    }
    if let Some(s) = resp.retry_after {
        h.push_str(&format!("Retry-After: {s}\r\n"));
    }
    h.push_str(if close {
        "Connection: close\r\n\r\n"
    } else {
        "Connection: keep-alive\r\n\r\n"
    });
    h
}

fn write_response(mut stream: &TcpStream, resp: &Response, close: bool) -> io::Result<()> {
    let mut out = head(resp, resp.body.len(), close).into_bytes();
    out.extend_from_slice(&resp.body);
    stream.write_all(&out)?;
    stream.flush()
}

fn handle(req: &Request, sh: &Shared) -> Response {
    if req.path == "/_sim" || req.path.starts_with("/_sim/") {
        return control(req, sh);
    }
    api(req, sh)
}

// ---------- the API ----------

enum Route<'a> {
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

fn route<'a>(path: &'a str, company: &str) -> Route<'a> {
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

fn looks_like_uuid(s: &str) -> bool {
    s.len() == 36
        && s.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        })
}

fn endpoint_name(r: &Route) -> &'static str {
    match r {
        Route::List => "list",
        Route::Detail(_) => "detail",
        Route::Employments(_) => "employments",
        Route::Payruns => "payruns",
        _ => "other",
    }
}

/// A positive integer query parameter, or a 400 message naming it.
fn positive(req: &Request, name: &str) -> Result<Option<usize>, String> {
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

fn api(req: &Request, sh: &Shared) -> Response {
    let now = Instant::now();
    let company = lock(&sh.state).ds.company_id.clone();
    let r = route(&req.path, &company);
    let name = endpoint_name(&r);
    lock(&sh.stats).arrival(now);

    let resp = api_answer(req, sh, &r);

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

fn api_answer(req: &Request, sh: &Shared, r: &Route) -> Response {
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
    if token != sh.token {
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
            let mut resp = answer(req, sh, r);
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
    answer(req, sh, r)
}

/// The normal answer of an authenticated API request.
fn answer(req: &Request, sh: &Shared, r: &Route) -> Response {
    if !matches!(r, Route::NotFound | Route::OtherCompany) && req.method != "GET" {
        return Response::message(405, "Method Not Allowed");
    }
    let mut st = lock(&sh.state);
    let ds = &st.ds;
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
            apply_list_moves(sh, &mut st.ds, page);
            resp
        }
    }
}

/// Applies the list moves armed for after this page, now that it is answered.
fn apply_list_moves(sh: &Shared, ds: &mut crate::data::Dataset, page: usize) {
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

// ---------- the control API ----------

fn parse_body<T: serde::de::DeserializeOwned>(req: &Request) -> Result<Option<T>, Response> {
    if req.body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    serde_json::from_slice(&req.body)
        .map(Some)
        .map_err(|e| Response::message(400, &format!("invalid JSON body: {e}")))
}

fn ok() -> Response {
    Response::json(200, &json!({ "ok": true }))
}

fn control(req: &Request, sh: &Shared) -> Response {
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
                ok()
            }
            Err(r) => r,
        },
        (
            _,
            "/_sim/advance" | "/_sim/faults" | "/_sim/stats" | "/_sim/stats/reset" | "/_sim/reset"
            | "/_sim/dump" | "/_sim/load" | "/_sim/config" | "/_sim/list_move",
        ) => Response::message(405, "Method Not Allowed"),
        _ => Response::message(404, "Not found"),
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
