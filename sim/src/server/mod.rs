//! A small HTTP/1.1 server on std's `TcpListener`: one thread per connection, keep-alive,
//! `Content-Length` bodies. Routes the API (auth, rate limit, faults, pagination) and the
//! `/_sim/` control API.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

mod api;
mod control;

use crate::faults::{Endpoint, FaultAction, Target};
use crate::{lock, AdvanceOptions, FaultRule, Shared};
use api::api;
use control::control;

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
