//! A static replay of the simulator's dataset for the large apply cases.
//!
//! `employes-sim` answers `/employments/{id}` with a linear search of its dataset and every list
//! page by sorting the whole dataset, both under one lock: O(employees) per request, so 100,000
//! employees take tens of minutes per sync and the bench would measure the simulator. This server
//! serves the same records (from `Sim::dump`, in `Sim::listed_employee_ids` order, same envelopes)
//! from hash maps, so the apply figures measure employes_sync.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, RwLock};

use employes_sim::Sim;
use serde_json::{json, Value};

struct Data {
    /// Serialized list pages, index 0 = page 1.
    pages: Vec<Vec<u8>>,
    total: usize,
    employments: HashMap<String, Vec<u8>>,
}

pub struct Replay {
    data: Arc<RwLock<Data>>,
    port: u16,
    company: String,
    token: String,
}

fn build(sim: &Sim, per_page: usize) -> Data {
    let dump = sim.dump();
    let order = sim.listed_employee_ids();
    let mut records: HashMap<String, (&Value, &Value)> = HashMap::new();
    for e in dump["employees"].as_array().into_iter().flatten() {
        if e["removed"].as_bool() == Some(true) {
            continue;
        }
        if let Some(id) = e["record"]["id"].as_str() {
            records.insert(id.to_string(), (&e["record"], &e["employments"]));
        }
    }
    let total = order.len();
    let npages = total.div_ceil(per_page);
    let pages = order
        .chunks(per_page)
        .map(|ids| {
            let data: Vec<&Value> = ids
                .iter()
                .filter_map(|id| records.get(id).map(|r| r.0))
                .collect();
            serde_json::to_vec(&json!({"data": data, "pages": npages, "total": total})).unwrap()
        })
        .collect();
    let employments = records
        .iter()
        .map(|(id, (_, emp))| {
            let data = if emp.is_null() {
                json!([])
            } else {
                (*emp).clone()
            };
            (
                id.clone(),
                serde_json::to_vec(&json!({"data": data})).unwrap(),
            )
        })
        .collect();
    Data {
        pages,
        total,
        employments,
    }
}

impl Replay {
    pub fn start(sim: &Sim, per_page: usize) -> Replay {
        let data = Arc::new(RwLock::new(build(sim, per_page)));
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let d2 = data.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let d = d2.clone();
                std::thread::spawn(move || serve(stream, d));
            }
        });
        Replay {
            data,
            port,
            company: sim.company_id(),
            token: sim.token(),
        }
    }

    /// Serves the simulator's current dataset from now on.
    pub fn refresh(&self, sim: &Sim, per_page: usize) {
        *self.data.write().unwrap() = build(sim, per_page);
    }

    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}/v4", self.port)
    }

    pub fn company_id(&self) -> &str {
        &self.company
    }

    pub fn token(&self) -> &str {
        &self.token
    }
}

fn respond(w: &mut TcpStream, status: &str, body: &[u8]) -> std::io::Result<()> {
    write!(
        w,
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )?;
    w.write_all(body)
}

fn serve(stream: TcpStream, data: Arc<RwLock<Data>>) {
    let _ = stream.set_nodelay(true);
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut w = stream;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let target = line.split_whitespace().nth(1).unwrap_or("").to_string();
        let mut content_length = 0usize;
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            if h == "\r\n" || h == "\n" {
                break;
            }
            if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                content_length = v.trim().parse().unwrap_or(0);
            }
        }
        if content_length > 0 {
            let mut skip = vec![0; content_length];
            let _ = reader.read_exact(&mut skip);
        }
        let (path, query) = target.split_once('?').unwrap_or((&target, ""));
        let d = data.read().unwrap();
        let result = if let Some(rest) = path.strip_suffix("/employments") {
            let id = rest.rsplit('/').next().unwrap_or("");
            match d.employments.get(id) {
                Some(body) => respond(&mut w, "200 OK", body),
                None => respond(&mut w, "404 Not Found", br#"{"message":"Not found"}"#),
            }
        } else if path.ends_with("/employees") {
            let page: usize = query
                .split('&')
                .find_map(|kv| kv.strip_prefix("page="))
                .and_then(|v| v.parse().ok())
                .unwrap_or(1);
            match d.pages.get(page.saturating_sub(1)) {
                Some(body) => respond(&mut w, "200 OK", body),
                None => {
                    let body = serde_json::to_vec(
                        &json!({"data": [], "pages": d.pages.len(), "total": d.total}),
                    )
                    .unwrap();
                    respond(&mut w, "200 OK", &body)
                }
            }
        } else {
            respond(&mut w, "404 Not Found", br#"{"message":"Not found"}"#)
        };
        if result.is_err() {
            return;
        }
    }
}
