//! employes-sim: a simulator of the Employes.nl payroll REST API (v4) for tests, demos and
//! benchmarks of `employes_sync`.
//!
//! [`Sim::start`] serves a deterministic dataset (see [`generate`]) over real HTTP with the real
//! API's shapes, auth answers, pagination and rate limit; [`Sim::advance`] moves time on by a
//! month and reports exactly which HR changes it made; [`Sim::set_faults`] injects failures. The
//! same operations are available over HTTP under `/_sim/` for out-of-process use.

mod advance;
mod data;
mod faults;
mod ratelimit;
mod rng;
mod server;
mod stats;

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use advance::{AdvanceOptions, ListMove, StepReport, TruthChange};
pub use faults::{Endpoint, FaultAction, FaultRule};
pub use stats::Stats;

use data::Dataset;
use faults::Faults;
use ratelimit::TokenBucket;
use rng::Rng;
use stats::Recorder;

/// How a simulator instance is started.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct SimConfig {
    pub bind: IpAddr,
    /// 0 = an ephemeral port (see [`Sim::addr`]).
    pub port: u16,
    /// Size of the generated dataset (ignored when `data` is given).
    pub employees: usize,
    pub seed: u64,
    /// The bearer token the API accepts.
    pub token: String,
    pub company_id: String,
    /// Requests per second allowed (bucket capacity and refill rate); 0 = unlimited.
    pub rps: f64,
    pub latency_ms: u64,
    pub jitter_ms: u64,
    /// The current date of the generated dataset.
    pub start_date: NaiveDate,
    pub default_per_page: usize,
    /// A dataset (the `dump` format) to serve instead of a generated one.
    pub data: Option<Value>,
    /// How many companies (administrations) the account has: each its own employees, from its
    /// own seed (`seed + k`), under its own id ([`company_id_of`]). The first is `company_id`.
    pub companies: usize,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: 0,
            employees: 117,
            seed: 1,
            token: "demo-token".into(),
            company_id: "5f1c6a4e-1c1f-4b8e-9a53-2b7d3f0e9a11".into(),
            rps: 5.0,
            latency_ms: 0,
            jitter_ms: 0,
            start_date: NaiveDate::from_ymd_opt(2026, 1, 1).unwrap_or_default(),
            default_per_page: 25,
            data: None,
            companies: 1,
        }
    }
}

/// The generated dataset, in the `dump`/`load` format.
pub fn generate(employees: usize, seed: u64, start_date: NaiveDate, company_id: &str) -> Value {
    data::generate_dataset(employees, seed, start_date, company_id).to_json()
}

/// The id of the `k`-th company of an account whose first company is `first`: its last four
/// hex digits replaced by `k` (the first company is `first` itself).
pub fn company_id_of(first: &str, k: usize) -> String {
    if k == 0 || first.len() < 4 {
        return first.to_owned();
    }
    format!("{}{:04x}", &first[..first.len() - 4], k % 0x10000)
}

pub(crate) struct State {
    pub ds: Dataset,
    /// What `reset` goes back to: the generated or last loaded dataset.
    pub initial: Dataset,
    pub step: u32,
}

/// Everything the server threads and the [`Sim`] handle share.
pub(crate) struct Shared {
    pub token: String,
    pub seed: u64,
    pub default_per_page: usize,
    pub state: Mutex<State>,
    /// The account's other companies, in order (company 1, 2, ...).
    pub others: Mutex<Vec<State>>,
    /// Companies that accept a token of their own instead of `token`.
    pub company_tokens: Mutex<std::collections::HashMap<String, String>>,
    pub limiter: Mutex<TokenBucket>,
    pub rps: Mutex<f64>,
    pub latency: Mutex<(u64, u64)>,
    pub jitter: Mutex<Rng>,
    pub stats: Mutex<Recorder>,
    pub faults: Mutex<Faults>,
    /// List moves waiting for their page, and the reports of those applied.
    pub list_moves: Mutex<(Vec<ListMove>, Vec<StepReport>)>,
    pub shutdown: AtomicBool,
}

/// Locks a mutex, carrying on after a panic in another thread (the data stays usable).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    /// One month on for every company; the first company's report.
    pub fn advance(&self, opts: &AdvanceOptions) -> StepReport {
        self.advance_all(opts).remove(0)
    }

    /// One month on for every company; each company's report, in order.
    pub fn advance_all(&self, opts: &AdvanceOptions) -> Vec<StepReport> {
        let mut reports = Vec::new();
        let mut st = lock(&self.state);
        st.step += 1;
        let step = st.step;
        reports.push(advance::advance(&mut st.ds, self.seed, step, opts));
        for (k, other) in lock(&self.others).iter_mut().enumerate() {
            other.step += 1;
            let step = other.step;
            let seed = self.seed.wrapping_add(k as u64 + 1);
            reports.push(advance::advance(&mut other.ds, seed, step, opts));
        }
        reports
    }

    pub fn reset(&self) {
        {
            let mut st = lock(&self.state);
            st.ds = st.initial.clone();
            st.step = 0;
            for other in lock(&self.others).iter_mut() {
                other.ds = other.initial.clone();
                other.step = 0;
            }
        }
        lock(&self.stats).reset();
        lock(&self.faults).set(Vec::new());
        *lock(&self.list_moves) = Default::default();
        let rps = *lock(&self.rps);
        *lock(&self.limiter) = TokenBucket::new(rps);
    }

    pub fn load(&self, v: &Value) -> Result<(), String> {
        let mut st = lock(&self.state);
        let ds = Dataset::from_json(v, &st.ds.company_id, st.ds.date)?;
        st.initial = ds.clone();
        st.ds = ds;
        st.step = 0;
        Ok(())
    }

    pub fn set_rate_limit(&self, rps: f64) {
        *lock(&self.rps) = rps;
        *lock(&self.limiter) = TokenBucket::new(rps);
    }
}

/// A running simulator; dropping it shuts the server down.
pub struct Sim {
    shared: Arc<Shared>,
    addr: SocketAddr,
    accept: Option<JoinHandle<()>>,
}

impl Sim {
    pub fn start(cfg: SimConfig) -> io::Result<Sim> {
        let initial = match &cfg.data {
            Some(v) => Dataset::from_json(v, &cfg.company_id, cfg.start_date)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?,
            None => {
                data::generate_dataset(cfg.employees, cfg.seed, cfg.start_date, &cfg.company_id)
            }
        };
        let others = (1..cfg.companies.max(1))
            .map(|k| {
                let id = company_id_of(&cfg.company_id, k);
                let seed = cfg.seed.wrapping_add(k as u64);
                let ds = data::generate_dataset(cfg.employees, seed, cfg.start_date, &id);
                State {
                    ds: ds.clone(),
                    initial: ds,
                    step: 0,
                }
            })
            .collect();
        let listener = TcpListener::bind((cfg.bind, cfg.port))?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            token: cfg.token,
            seed: cfg.seed,
            default_per_page: cfg.default_per_page.clamp(1, 100),
            state: Mutex::new(State {
                ds: initial.clone(),
                initial,
                step: 0,
            }),
            others: Mutex::new(others),
            company_tokens: Mutex::new(Default::default()),
            limiter: Mutex::new(TokenBucket::new(cfg.rps)),
            rps: Mutex::new(cfg.rps),
            latency: Mutex::new((cfg.latency_ms, cfg.jitter_ms)),
            jitter: Mutex::new(Rng::derive(cfg.seed, 3, 0)),
            stats: Mutex::new(Recorder::default()),
            faults: Mutex::new(Faults::default()),
            list_moves: Mutex::new(Default::default()),
            shutdown: AtomicBool::new(false),
        });
        let s2 = Arc::clone(&shared);
        let accept = std::thread::Builder::new()
            .name("employes-sim-accept".into())
            .spawn(move || server::serve(listener, s2))?;
        Ok(Sim {
            shared,
            addr,
            accept: Some(accept),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://HOST:PORT/v4`
    pub fn base_url(&self) -> String {
        format!("http://{}/v4", self.addr)
    }

    pub fn company_id(&self) -> String {
        lock(&self.shared.state).ds.company_id.clone()
    }

    pub fn token(&self) -> String {
        self.shared.token.clone()
    }

    /// Every company of the account, the first one first.
    pub fn company_ids(&self) -> Vec<String> {
        let mut ids = vec![self.company_id()];
        ids.extend(
            lock(&self.shared.others)
                .iter()
                .map(|o| o.ds.company_id.clone()),
        );
        ids
    }

    /// From now on this company accepts `token` only (instead of the account's token).
    pub fn set_company_token(&self, company_id: &str, token: &str) {
        lock(&self.shared.company_tokens).insert(company_id.to_owned(), token.to_owned());
    }

    /// One month on for every company: each company's report, in order.
    pub fn advance_all_with(&self, opts: AdvanceOptions) -> Vec<StepReport> {
        self.shared.advance_all(&opts)
    }

    /// One month on with the default number of events.
    pub fn advance(&self) -> StepReport {
        self.shared.advance(&AdvanceOptions::default())
    }

    pub fn advance_with(&self, opts: AdvanceOptions) -> StepReport {
        self.shared.advance(&opts)
    }

    /// Replaces all fault rules.
    pub fn set_faults(&self, rules: Vec<FaultRule>) {
        lock(&self.shared.faults).set(rules);
    }

    pub fn clear_faults(&self) {
        lock(&self.shared.faults).set(Vec::new());
    }

    pub fn stats(&self) -> Stats {
        lock(&self.shared.stats).stats.clone()
    }

    pub fn reset_stats(&self) {
        lock(&self.shared.stats).reset();
    }

    /// Back to the initial (generated or last loaded) dataset at step 0; stats and faults
    /// cleared, the rate-limit bucket refilled.
    pub fn reset(&self) {
        self.shared.reset();
    }

    /// The current dataset: `{"company_id", "date", "employees": [{"record", "employments",
    /// "removed"}]}`.
    pub fn dump(&self) -> Value {
        lock(&self.shared.state).ds.to_json()
    }

    /// Serves this dataset from now on (and after `reset`).
    pub fn load(&self, dataset: Value) -> Result<(), String> {
        self.shared.load(&dataset)
    }

    pub fn set_rate_limit(&self, rps: f64) {
        self.shared.set_rate_limit(rps);
    }

    /// Changes the employee list right after list page `mv.after_page` is next answered (once),
    /// as HR editing the company while a sync is between two pages.
    pub fn move_list_after_page(&self, mv: ListMove) {
        lock(&self.shared.list_moves).0.push(mv);
    }

    /// What the list moves applied so far did (deletions and hires), in order.
    pub fn list_moves_done(&self) -> Vec<StepReport> {
        lock(&self.shared.list_moves).1.clone()
    }

    pub fn set_latency(&self, latency_ms: u64, jitter_ms: u64) {
        *lock(&self.shared.latency) = (latency_ms, jitter_ms);
    }

    /// Ids of the employees the list currently serves, in list order.
    pub fn listed_employee_ids(&self) -> Vec<String> {
        listed_ids(&lock(&self.shared.state).ds)
    }

    /// Ids of the employees the list of company `k` (0 for the first) currently serves.
    pub fn listed_employee_ids_of(&self, k: usize) -> Vec<String> {
        if k == 0 {
            return self.listed_employee_ids();
        }
        lock(&self.shared.others)
            .get(k - 1)
            .map(|o| listed_ids(&o.ds))
            .unwrap_or_default()
    }

    pub fn shutdown(self) {}

    fn stop(&mut self) {
        if let Some(handle) = self.accept.take() {
            self.shared.shutdown.store(true, Ordering::SeqCst);
            let mut wake = self.addr;
            if wake.ip().is_unspecified() {
                wake.set_ip(match wake.ip() {
                    IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
                    IpAddr::V6(_) => IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
                });
            }
            let _ = TcpStream::connect(wake);
            let _ = handle.join();
        }
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        self.stop();
    }
}

fn listed_ids(ds: &data::Dataset) -> Vec<String> {
    ds.listed()
        .into_iter()
        .map(|i| match ds.employees[i].record.get("id") {
            Some(Value::String(s)) => s.clone(),
            Some(v) => v.to_string(),
            None => String::new(),
        })
        .collect()
}
