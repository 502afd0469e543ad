//! The `employes-sim` command: serves a simulated Employes.nl v4 API until killed.

use std::io::Write;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use chrono::NaiveDate;
use clap::Parser;
use employes_sim::{Sim, SimConfig};

/// A simulator of the Employes.nl payroll REST API (v4): deterministic generated data, the real
/// auth answers, pagination and rate limit, plus a control API under /_sim/ (time travel, faults,
/// stats, dump/load).
#[derive(Debug, Parser)]
#[command(name = "employes-sim", version)]
struct Args {
    /// TCP port to listen on (0 = any free port; the listening line shows which).
    #[arg(long, default_value_t = 8089)]
    port: u16,
    /// Address to bind.
    #[arg(long, default_value = "127.0.0.1")]
    bind: IpAddr,
    /// Number of employees to generate.
    #[arg(long, default_value_t = 117)]
    employees: usize,
    /// Seed of the generated data and of the events of each advance step.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Bearer token the API accepts.
    #[arg(long, default_value = "demo-token")]
    token: String,
    /// Company (administration) id served under /v4/{company_id}/.
    #[arg(long, default_value = "5f1c6a4e-1c1f-4b8e-9a53-2b7d3f0e9a11")]
    company_id: String,
    /// How many companies the account has. The first is --company-id; company k (k = 1, 2, ...)
    /// has that id with its last four hex digits replaced by k, and its own employees from seed
    /// + k. The rate limit and the token are the account's, shared by every company.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=1000))]
    companies: u16,
    /// Requests per second allowed before 429 (0 = unlimited).
    #[arg(long, default_value_t = 5.0)]
    rps: f64,
    /// Delay added to every API response, in milliseconds.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// Random extra delay, uniform in 0..=jitter, in milliseconds.
    #[arg(long, default_value_t = 0)]
    jitter_ms: u64,
    /// Current date of the generated dataset (YYYY-MM-DD).
    #[arg(long, default_value = "2026-01-01")]
    start_date: NaiveDate,
    /// per_page when a list request names none (at most 100).
    #[arg(long, default_value_t = 25)]
    per_page_default: usize,
    /// Serve this dataset (the /_sim/dump format) instead of generating one.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Write the dataset (generated, or read with --data) to this file and exit.
    #[arg(long)]
    dump: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let data = match &args.data {
        None => None,
        Some(path) => match std::fs::read(path)
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
        {
            Ok(v) => Some(v),
            Err(e) => {
                eprintln!("employes-sim: cannot read {}: {e}", path.display());
                return ExitCode::FAILURE;
            }
        },
    };
    let cfg = SimConfig {
        bind: args.bind,
        port: args.port,
        employees: args.employees,
        seed: args.seed,
        token: args.token,
        company_id: args.company_id,
        rps: args.rps,
        latency_ms: args.latency_ms,
        jitter_ms: args.jitter_ms,
        start_date: args.start_date,
        default_per_page: args.per_page_default,
        data,
        companies: usize::from(args.companies),
    };
    if let Some(path) = &args.dump {
        let dataset = match &cfg.data {
            Some(v) => v.clone(),
            None => {
                employes_sim::generate(cfg.employees, cfg.seed, cfg.start_date, &cfg.company_id)
            }
        };
        let text = serde_json::to_string_pretty(&dataset).unwrap_or_default();
        if let Err(e) = std::fs::write(path, text + "\n") {
            eprintln!("employes-sim: cannot write {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
        return ExitCode::SUCCESS;
    }
    let sim = match Sim::start(cfg) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("employes-sim: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    let n = sim.listed_employee_ids().len();
    let mut out = std::io::stdout();
    let _ = writeln!(
        out,
        "employes-sim listening on {} company={} employees={n}",
        sim.base_url(),
        sim.company_id()
    );
    for other in sim.company_ids().iter().skip(1) {
        let _ = writeln!(out, "employes-sim also serves company={other}");
    }
    let _ = out.flush();
    loop {
        std::thread::park();
    }
}
