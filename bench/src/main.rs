//! The benchmark harness of employes_sync (issue 6): one run, one table.
//!
//! - floor ratio: full sync wall time against the rate-limit floor `(pages + employees) / rps`;
//! - database apply: first sync, re-sync with nothing changed, re-sync with 1% changed, at two
//!   sizes against an unlimited simulator, with SQL time (pg_stat_statements), timeline refresh,
//!   worker CPU and rows written;
//! - peer: the same records and the same 1% change applied with `dbt snapshot` (check strategy);
//! - memory: the worker's peak RSS (VmHWM) at both sizes;
//! - trigger latency: `employes_sync_trigger` with 20 concurrent callers joining a running sync;
//! - webhook throughput (`--webhooks=N`, printed only): events per second to one subscriber.
//!
//! Run it with `./bench/run.sh [--quick]` (installs a release build into the PostgreSQL copy named by
//! `EMPLOYES_SYNC_PG_BIN`, prepares dbt, writes bench/results.md).

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use employes_sim::{AdvanceOptions, Sim, SimConfig};
use employes_sync_core::client::{Client as ApiClient, ClientConfig};
use employes_sync_core::model::Kind;
use employes_sync_core::sync::{
    run_sync, Applied, ApplyStats, Level, Progress, StopReason, Store, StoreError, SyncOptions,
};
use employes_sync_core::versions::Incoming;
use employes_sync_e2e::{wait_until, Client, Cluster};
use serde_json::Value;

mod replay;
mod webhooks;
use replay::Replay;

const PER_PAGE: usize = 100;
/// Tag of the bench's own statements, so pg_stat_statements sums only the worker's.
const TAG: &str = "/* bench */";

struct Sizes {
    floor: Vec<usize>,
    floor_rps: Vec<f64>,
    apply: Vec<usize>,
    trigger_rounds: usize,
    trigger_calls: usize,
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let trigger_only = std::env::args().any(|a| a == "--trigger-only");
    // Database apply, peer and memory only, for the sizes given (e.g. --apply-only=100000);
    // printed, not written to results.md.
    let apply_only: Option<Vec<usize>> = std::env::args().find_map(|a| {
        a.strip_prefix("--apply-only=").map(|v| {
            v.split(',')
                .map(|n| n.parse().expect("--apply-only=N[,N]"))
                .collect()
        })
    });
    let sizes = if quick {
        Sizes {
            floor: vec![117, 500],
            floor_rps: vec![20.0, 50.0],
            apply: vec![1_000, 5_000],
            trigger_rounds: 3,
            trigger_calls: 10,
        }
    } else {
        Sizes {
            floor: vec![117, 2_000],
            floor_rps: vec![20.0, 50.0],
            apply: vec![10_000, 100_000],
            trigger_rounds: 5,
            trigger_calls: 25,
        }
    };
    let started = Instant::now();
    let cluster = Cluster::start(
        "bench",
        &[
            "shared_preload_libraries = 'pg_cron,employes_sync,pg_stat_statements'".into(),
            "pg_stat_statements.track = top".into(),
            "pg_stat_statements.track_planning = on".into(),
            "pg_stat_statements.max = 1000".into(),
            "shared_buffers = '1GB'".into(),
            "work_mem = '64MB'".into(),
            "maintenance_work_mem = '256MB'".into(),
            "max_wal_size = '8GB'".into(),
            "checkpoint_timeout = '30min'".into(),
        ],
    );
    let mut c = cluster.connect();
    c.batch_execute("CREATE EXTENSION pg_stat_statements")
        .unwrap();
    let machine = machine(&mut c);
    eprintln!("bench: cluster on port {} ({machine})", cluster.port);

    let mut out = String::new();
    writeln!(
        out,
        "# employes_sync benchmark{}\n",
        if quick { " (--quick)" } else { "" }
    )
    .unwrap();
    writeln!(out, "Machine: {machine}.\n").unwrap();
    writeln!(
        out,
        "Command: `./bench/run.sh{}`.\n",
        if quick { " --quick" } else { "" }
    )
    .unwrap();

    if trigger_only {
        let md = trigger_section(&cluster, &mut c, &sizes);
        println!("{md}");
        return;
    }
    // Webhook delivery only (printed): --webhooks=EMPLOYEES.
    if let Some(n) = std::env::args().find_map(|a| {
        a.strip_prefix("--webhooks=")
            .map(|v| v.parse::<usize>().expect("--webhooks=EMPLOYEES"))
    }) {
        println!("{out}{}", webhooks::section(&cluster, &mut c, n, 5));
        return;
    }
    if let Some(apply) = apply_only {
        let sizes = Sizes { apply, ..sizes };
        let (apply_md, peer_input, rss) = apply_section(&cluster, &mut c, &sizes);
        if std::env::var_os("BENCH_HOLD").is_some() {
            eprintln!(
                "bench: HOLD port {} dir {}",
                cluster.port,
                cluster.dir.display()
            );
            println!("{apply_md}");
            loop {
                std::thread::sleep(Duration::from_secs(3600));
            }
        }
        let peer_md = peer_section(&mut c, peer_input);
        println!("{out}{apply_md}{peer_md}{}", memory_section(&rss));
        return;
    }
    let floor_md = floor_section(&cluster, &mut c, &sizes);
    eprint!("{floor_md}");
    out.push_str(&floor_md);

    let (apply_md, peer_input, rss) = apply_section(&cluster, &mut c, &sizes);
    eprint!("{apply_md}");
    out.push_str(&apply_md);

    let peer_md = peer_section(&mut c, peer_input);
    eprint!("{peer_md}");
    out.push_str(&peer_md);

    let mem_md = memory_section(&rss);
    eprint!("{mem_md}");
    out.push_str(&mem_md);

    let trig_md = trigger_section(&cluster, &mut c, &sizes);
    eprint!("{trig_md}");
    out.push_str(&trig_md);

    writeln!(
        out,
        "\nWhole run: {:.0} s.",
        started.elapsed().as_secs_f64()
    )
    .unwrap();
    println!("{out}");
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(if quick {
        "results-quick.md"
    } else {
        "results.md"
    });
    std::fs::write(&path, &out).unwrap();
    eprintln!("bench: written {}", path.display());
}

fn machine(c: &mut Client) -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .unwrap_or("unknown CPU")
        .trim()
        .to_string();
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let mem_kb: u64 = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("MemTotal"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let version: String = c
        .query_one("SELECT current_setting('server_version')", &[])
        .unwrap()
        .get(0);
    format!(
        "{model}, {cores} cores, {:.0} GB RAM, PostgreSQL {version} (fsync off, shared_buffers 1GB), release build; \
         simulator in the bench process on the same cores",
        mem_kb as f64 / 1_048_576.0
    )
}

// ---------------------------------------------------------------------------------------------
// Shared measurement

/// Empties the extension's tables so the next sync is a first sync.
fn reset_db(c: &mut Client) {
    for sql in [
        // DELETE, not TRUNCATE: the extension's own workers hold locks on these tables. Without
        // FK triggers: employes_changes.raw_from_id/raw_to_id have no index, so the FK check would
        // scan the changes table once per deleted version.
        "SET session_replication_role = replica",
        "DELETE FROM employes_changes",
        "DELETE FROM employes_raw_data",
        "DELETE FROM employes_sync_logs",
        "DELETE FROM employes_sync_session_companies",
        "DELETE FROM employes_webhook_deliveries",
        "DELETE FROM employes_events",
        "DELETE FROM employes_sync_sessions",
        "RESET session_replication_role",
        "DELETE FROM employes_timeline",
        "VACUUM ANALYZE employes_raw_data",
        "VACUUM ANALYZE employes_changes",
        "VACUUM ANALYZE employes_sync_sessions",
        "VACUUM ANALYZE employes_sync_logs",
        "VACUUM ANALYZE employes_events",
    ] {
        c.batch_execute(sql).unwrap();
    }
}

fn point_at(cluster: &Cluster, sim: &Sim, rps: f64) {
    cluster.use_sim(sim, rps);
}

/// Like `Cluster::use_sim`, for the replay server.
fn point_at_replay(cluster: &Cluster, r: &Replay, rps: f64) {
    let mut c = cluster.connect();
    for (name, value) in [
        ("base_url", r.base_url()),
        ("company_id", r.company_id().to_string()),
        ("api_token", r.token().to_string()),
        ("requests_per_second", rps.to_string()),
    ] {
        c.batch_execute(&format!(
            "ALTER SYSTEM SET employes_sync.{name} = '{value}'"
        ))
        .unwrap();
    }
    c.batch_execute("SELECT pg_reload_conf()").unwrap();
    let expected = r.base_url();
    wait_until(Duration::from_secs(10), "settings reloaded", || {
        let v: String = cluster
            .connect()
            .query_one("SELECT current_setting('employes_sync.base_url')", &[])
            .unwrap()
            .get(0);
        v == expected
    });
}

#[derive(Debug, Clone, Default)]
struct Sample {
    hwm_kb: u64,
    /// Peak of RssAnon over the samples: the worker's private memory, shared buffers aside.
    anon_peak_kb: u64,
    cpu_total_ticks: u64,
    cpu_main_ticks: u64,
}

/// Polls the worker's /proc entry every 50 ms; the last sample is the peak so far.
struct Sampler {
    stop: Arc<AtomicBool>,
    last: Arc<Mutex<Sample>>,
    handle: Option<std::thread::JoinHandle<()>>,
}

fn proc_ticks(path: &str) -> Option<u64> {
    let s = std::fs::read_to_string(path).ok()?;
    // Fields after the command (which may hold spaces) end with ')'.
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat, 12 and 13 after the state field.
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

fn proc_status(pid: i32, field: &str) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

impl Sampler {
    fn start(pid: i32) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let last = Arc::new(Mutex::new(Sample::default()));
        let (s2, l2) = (stop.clone(), last.clone());
        let handle = std::thread::spawn(move || {
            while !s2.load(Ordering::Relaxed) {
                let (Some(hwm), Some(anon), Some(total), Some(main)) = (
                    proc_status(pid, "VmHWM:"),
                    proc_status(pid, "RssAnon:"),
                    proc_ticks(&format!("/proc/{pid}/stat")),
                    proc_ticks(&format!("/proc/{pid}/task/{pid}/stat")),
                ) else {
                    return; // the worker has exited
                };
                let mut l = l2.lock().unwrap();
                let anon_peak_kb = l.anon_peak_kb.max(anon);
                *l = Sample {
                    hwm_kb: hwm,
                    anon_peak_kb,
                    cpu_total_ticks: total,
                    cpu_main_ticks: main,
                };
                drop(l);
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        Sampler {
            stop,
            last,
            handle: Some(handle),
        }
    }

    fn finish(mut self) -> Sample {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
        self.last.lock().unwrap().clone()
    }
}

fn clk_tck() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

#[derive(Debug, Clone, Default)]
struct Tuples {
    history_ins: i64,
    history_upd: i64,
    all_ins: i64,
    all_upd: i64,
    raw_rows: i64,
    change_rows: i64,
}

fn tuples(c: &mut Client) -> Tuples {
    c.batch_execute("SELECT pg_stat_clear_snapshot()").unwrap();
    let r = c
        .query_one(
            &format!(
                "{TAG} SELECT
                   coalesce(sum(n_tup_ins) FILTER (WHERE relname IN ('employes_raw_data', 'employes_changes')), 0)::bigint,
                   coalesce(sum(n_tup_upd) FILTER (WHERE relname IN ('employes_raw_data', 'employes_changes')), 0)::bigint,
                   coalesce(sum(n_tup_ins), 0)::bigint, coalesce(sum(n_tup_upd), 0)::bigint,
                   (SELECT count(*) FROM employes_raw_data), (SELECT count(*) FROM employes_changes)
                 FROM pg_stat_user_tables WHERE relname LIKE 'employes%'"
            ),
            &[],
        )
        .unwrap();
    Tuples {
        history_ins: r.get(0),
        history_upd: r.get(1),
        all_ins: r.get(2),
        all_upd: r.get(3),
        raw_rows: r.get(4),
        change_rows: r.get(5),
    }
}

/// What one measured sync did.
#[derive(Debug, Clone, Default)]
struct Measured {
    status: String,
    /// created_at → completed_at: what a caller of trigger + wait sees.
    wall_s: f64,
    /// started_at → completed_at: the worker's run.
    run_s: f64,
    api_requests: i64,
    retries: i64,
    timeline_ms: Option<f64>,
    /// pg_stat_statements: the worker's SQL, timeline refresh excluded.
    sql_ms: f64,
    sql_calls: i64,
    refresh_sql_ms: f64,
    hwm_mb: f64,
    anon_mb: f64,
    cpu_total_s: f64,
    cpu_main_s: f64,
    raw_added: i64,
    changes_added: i64,
    history_ins: i64,
    history_upd: i64,
    all_ins: i64,
    all_upd: i64,
}

/// Lets the server settle before a measured step, ours or dbt's: a checkpoint, written back to
/// disk, and a VACUUM ANALYZE of the whole database, so the maintenance the previous step caused
/// (autovacuum of 200,000 fresh rows, a checkpoint, the kernel writing back the checkpoint's
/// hundreds of megabytes: the cluster runs with fsync off) does not land inside the next step's
/// timing on 2 cores. Syncs run hours apart in production, with all of that done in between.
fn quiesce(c: &mut Client) {
    c.batch_execute("/* bench */ CHECKPOINT").unwrap();
    let synced = Command::new("sync").status();
    assert!(
        synced.as_ref().is_ok_and(|s| s.success()),
        "sync: {synced:?}"
    );
    c.batch_execute("/* bench */ VACUUM ANALYZE").unwrap();
}

/// Triggers a sync, samples the worker while it runs, and collects its timings and writes.
fn measured_sync(c: &mut Client) -> Measured {
    quiesce(c);
    let before = tuples(c);
    c.batch_execute("SELECT pg_stat_statements_reset()")
        .unwrap();
    let row = c
        .query_one(
            &format!("{TAG} SELECT id, worker_pid FROM employes_sync_trigger('manual', 'bench')"),
            &[],
        )
        .unwrap();
    let id: uuid::Uuid = row.get(0);
    let pid: Option<i32> = row.get(1);
    let sampler = pid.map(Sampler::start);
    let row = c
        .query_one(
            &format!(
                "{TAG} SELECT status, api_requests, retries, versions_written, changes_detected,
                        extract(epoch FROM completed_at - created_at)::float8,
                        extract(epoch FROM completed_at - started_at)::float8
                   FROM employes_sync_wait($1, 3600)"
            ),
            &[&id],
        )
        .unwrap();
    let sample = sampler.map(Sampler::finish).unwrap_or_default();
    // The worker flushes its table statistics when it exits.
    if let Some(pid) = pid {
        wait_until(Duration::from_secs(60), "the worker exits", || {
            !Path::new(&format!("/proc/{pid}")).exists()
        });
    }
    std::thread::sleep(Duration::from_millis(700));
    let after = tuples(c);
    let timeline_ms: Option<f64> = c
        .query_one(
            &format!(
                "{TAG} SELECT max((details ->> 'ms')::float8) FROM employes_sync_logs WHERE session_id = $1 AND step = 'timeline'"
            ),
            &[&id],
        )
        .unwrap()
        .get(0);
    let stmts = c
        .query_one(
            "/* bench */ SELECT
               coalesce(sum(total_exec_time + total_plan_time) FILTER (WHERE query !~ 'employes_timeline_(refresh|apply)'), 0)::float8,
               coalesce(sum(calls) FILTER (WHERE query !~ 'employes_timeline_(refresh|apply)'), 0)::bigint,
               coalesce(sum(total_exec_time + total_plan_time) FILTER (WHERE query ~ 'employes_timeline_(refresh|apply)'), 0)::float8
             FROM pg_stat_statements
             WHERE query NOT LIKE '%/* bench */%' AND query NOT ILIKE '%pg_stat_statements%'
               AND query NOT ILIKE '%pg_stat_clear_snapshot%'",
            &[],
        )
        .unwrap();
    if std::env::var_os("BENCH_TOP_SQL").is_some() {
        // Where the database time went, for profiling: the ten costliest statements.
        for r in c
            .query(
                "/* bench */ SELECT round((total_exec_time + total_plan_time)::numeric, 1)::text, calls, rows,
                        format('hit %s read %s dirtied %s fpi %s plan %s ms: ', shared_blks_hit, shared_blks_read,
                               shared_blks_dirtied, wal_fpi, round(total_plan_time::numeric, 1))
                          || left(regexp_replace(query, '\\s+', ' ', 'g'), 60)
                   FROM pg_stat_statements WHERE query NOT LIKE '%/* bench */%'
                  ORDER BY total_exec_time + total_plan_time DESC LIMIT 10",
                &[],
            )
            .unwrap()
        {
            eprintln!(
                "bench: sql {} ms, {} calls, {} rows: {}",
                r.get::<_, String>(0),
                r.get::<_, i64>(1),
                r.get::<_, i64>(2),
                r.get::<_, String>(3)
            );
        }
    }
    let tck = clk_tck();
    Measured {
        status: row.get(0),
        api_requests: row.get::<_, i32>(1) as i64,
        retries: row.get::<_, i32>(2) as i64,
        wall_s: row.get(5),
        run_s: row.get(6),
        timeline_ms,
        sql_ms: stmts.get(0),
        sql_calls: stmts.get(1),
        refresh_sql_ms: stmts.get(2),
        hwm_mb: sample.hwm_kb as f64 / 1024.0,
        anon_mb: sample.anon_peak_kb as f64 / 1024.0,
        cpu_total_s: sample.cpu_total_ticks as f64 / tck,
        cpu_main_s: sample.cpu_main_ticks as f64 / tck,
        raw_added: after.raw_rows - before.raw_rows,
        changes_added: after.change_rows - before.change_rows,
        history_ins: after.history_ins - before.history_ins,
        history_upd: after.history_upd - before.history_upd,
        all_ins: after.all_ins - before.all_ins,
        all_upd: after.all_upd - before.all_upd,
    }
}

// ---------------------------------------------------------------------------------------------
// Floor ratio

fn floor_section(cluster: &Cluster, c: &mut Client, sizes: &Sizes) -> String {
    let mut md = String::from(
        "## Floor ratio (simulator latency 20-50 ms, rate limit = requests_per_second)\n\n\
         Floor = (list pages + employees) / rps. Wall = trigger to completed (worker start, timeline refresh included).\n\n\
         | employees | rps | requests sent | minimum | retries | 429s | floor s | wall s | worker run s | ratio (wall / floor) | goal |\n\
         |---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n",
    );
    for &n in &sizes.floor {
        for &rps in &sizes.floor_rps {
            eprintln!("bench: floor {n} employees at {rps} rps");
            reset_db(c);
            let sim = Sim::start(SimConfig {
                employees: n,
                seed: 1,
                rps,
                latency_ms: 20,
                jitter_ms: 30,
                ..SimConfig::default()
            })
            .unwrap();
            point_at(cluster, &sim, rps);
            sim.reset_stats();
            let m = measured_sync(c);
            let stats = sim.stats();
            let pages = n.div_ceil(PER_PAGE);
            let minimum = (pages + n) as i64;
            let floor = minimum as f64 / rps;
            let ratio = m.wall_s / floor;
            let ok =
                ratio <= 1.10 && m.api_requests == minimum + m.retries && m.status == "completed";
            writeln!(
                md,
                "| {n} | {rps} | {} | {minimum} | {} | {} | {floor:.2} | {:.2} | {:.2} | **{ratio:.3}** | {} |",
                m.api_requests,
                m.retries,
                stats.rate_limited,
                m.wall_s,
                m.run_s,
                if ok { "met" } else { "missed" }
            )
            .unwrap();
            if m.status != "completed" {
                writeln!(md, "\n(session ended {})\n", m.status).unwrap();
            }
        }
    }
    md.push('\n');
    md
}

// ---------------------------------------------------------------------------------------------
// Database apply

/// A store that keeps nothing and finds every record unchanged: the same HTTP pipeline (which
/// hashes every record on its threads), to separate HTTP time from the database.
struct NullStore;

impl Store for NullStore {
    fn changed(
        &mut self,
        _kind: Kind,
        _records: Vec<Incoming>,
    ) -> Result<Vec<Incoming>, StoreError> {
        Ok(Vec::new())
    }
    fn apply(
        &mut self,
        _kind: Kind,
        _records: Vec<Incoming>,
        _p: &Progress,
    ) -> Result<Applied, StoreError> {
        Ok(Applied::default())
    }
    fn missing(
        &mut self,
        _seen: &employes_sync_core::sync::SeenIds,
    ) -> Result<Vec<String>, StoreError> {
        Ok(Vec::new())
    }
    fn mark_deleted(&mut self, _ids: Vec<String>, _p: &Progress) -> Result<ApplyStats, StoreError> {
        Ok(ApplyStats::default())
    }
    fn progress(&mut self, _p: &Progress) -> Result<(), StoreError> {
        Ok(())
    }
    fn log(&mut self, _l: Level, _s: &str, _m: &str, _d: Value) {}
    fn check_stop(&mut self) -> Option<StopReason> {
        None
    }
}

struct HttpOnly {
    seconds: f64,
    requests: u64,
}

fn http_only(r: &Replay) -> HttpOnly {
    let client = ApiClient::new(ClientConfig {
        base_url: r.base_url(),
        company_id: r.company_id().to_string(),
        token: r.token().to_string(),
        requests_per_second: 0.0,
        ..ClientConfig::default()
    })
    .unwrap();
    let mut store = NullStore;
    let t = Instant::now();
    let outcome = run_sync(&client, &mut store, SyncOptions::default());
    HttpOnly {
        seconds: t.elapsed().as_secs_f64(),
        requests: outcome.progress.api_requests,
    }
}

/// The largest size's datasets before and after the 1% change, and our 1%-step figures.
struct PeerInput {
    employees: usize,
    /// dbt's `--version` line; `None` when dbt is not installed.
    version: Option<String>,
    /// Rows staged for dbt (the first dump).
    staged: usize,
    /// Each of our steps at the largest size with dbt's snapshot of the same data, taken right
    /// after ours (on the same cores a few seconds apart, so both see the same machine).
    rows: Vec<(String, Measured, Option<DbtRun>)>,
}

/// Rounds of the 1% step at the largest size (ours and dbt's alike, interleaved): one run on 2
/// shared cores moves by 10-20% from minute to minute, so the goal is judged on the median.
const ONE_PERCENT_ROUNDS: usize = 5;

fn apply_section(
    cluster: &Cluster,
    c: &mut Client,
    sizes: &Sizes,
) -> (String, Option<PeerInput>, Vec<(usize, f64, f64)>) {
    let mut md = String::from(
        "## Database apply (simulator without rate limit or latency, requests_per_second = 10000)\n\n\
         run = the worker's session (started → completed); SQL = the worker's statements in pg_stat_statements \
         (apply, progress, logs; timeline refresh apart); timeline = `employes_timeline_apply` (the employment events that changed), or `employes_timeline_refresh(ids)`, for the employees each transaction changed; \
         main CPU = the worker's main thread (SQL executor, comparing, diffing); HTTP CPU = its HTTP threads (requests, JSON parsing, canonical hashing); \
         HTTP-only = the same client, pipeline and hashing with a store that writes nothing (no database). \
         Rows: new raw versions / new changes; tuples = pg_stat_user_tables inserts/updates on the two history \
         tables (all extension tables in brackets: session progress, logs).\n\n\
         | employees | step | status | run s | SQL s (calls) | timeline s | main CPU s | HTTP CPU s | requests | raw versions + | changes + | tuples ins / upd | peak RSS MB (private) |\n\
         |---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|\n",
    );
    let mut http_md = String::from(
        "\nHTTP alone (same pipeline and hashing, 4 threads, no database):\n\n\
         | employees | requests | HTTP-only s | requests/s |\n|---:|---:|---:|---:|\n",
    );
    let mut peer = None;
    let mut rss = Vec::new();
    let largest = *sizes.apply.iter().max().unwrap();
    for &n in &sizes.apply {
        eprintln!("bench: apply {n} employees");
        reset_db(c);
        let sim = Sim::start(SimConfig {
            employees: n,
            seed: 1,
            rps: 0.0,
            ..SimConfig::default()
        })
        .unwrap();
        let replay = Replay::start(&sim, PER_PAGE);
        point_at_replay(cluster, &replay, 10_000.0);
        let h = http_only(&replay);
        writeln!(
            http_md,
            "| {n} | {} | {:.2} | {:.0} |",
            h.requests,
            h.seconds,
            h.requests as f64 / h.seconds,
        )
        .unwrap();
        // dbt snapshots the same data right after each of our steps at the largest size (not
        // when the cluster is held for the lab).
        let dbt = if n == largest && std::env::var_os("BENCH_HOLD").is_none() {
            dbt_bin()
        } else {
            None
        };
        let before = (n == largest).then(|| sim.dump());
        let mut steps: Vec<(String, Measured, Option<DbtRun>)> = Vec::new();
        let first = measured_sync(c);
        let same = measured_sync(c);
        let mut staged = 0;
        let (dbt_first, dbt_same) = match (&dbt, &before) {
            (Some(dbt), Some(before)) => {
                eprintln!("bench: dbt peer");
                c.batch_execute("DROP SCHEMA IF EXISTS bench_dbt CASCADE")
                    .unwrap();
                staged = stage(c, before);
                quiesce(c);
                let initial = dbt_snapshot(dbt, cluster.port);
                quiesce(c);
                (Some(initial), Some(dbt_snapshot(dbt, cluster.port)))
            }
            _ => (None, None),
        };
        steps.push(("first sync".to_string(), first, dbt_first));
        steps.push(("re-sync, nothing changed".to_string(), same, dbt_same));
        // The 1% step: once, and ONE_PERCENT_ROUNDS times at the largest size (each another
        // n/100 raises), each followed by dbt's snapshot of the same data.
        let rounds = if n == largest { ONE_PERCENT_ROUNDS } else { 1 };
        for round in 1..=rounds {
            let report = sim.advance_with(AdvanceOptions {
                raises: Some(n / 100),
                ..AdvanceOptions::none()
            });
            let touched: std::collections::BTreeSet<&str> = report
                .changes
                .iter()
                .map(|c| c.employee_id.as_str())
                .collect();
            let mut name = format!("re-sync, 1% changed ({} raises)", touched.len());
            if round > 1 {
                name.push_str(&format!(", round {round}"));
            }
            replay.refresh(&sim, PER_PAGE);
            let m = measured_sync(c);
            let theirs = dbt.as_ref().map(|dbt| {
                stage(c, &sim.dump());
                quiesce(c);
                dbt_snapshot(dbt, cluster.port)
            });
            steps.push((name, m, theirs));
        }
        let peak = steps.iter().map(|(_, m, _)| m.hwm_mb).fold(0.0, f64::max);
        let anon = steps.iter().map(|(_, m, _)| m.anon_mb).fold(0.0, f64::max);
        rss.push((n, peak, anon));
        let all_rows = steps.iter().map(|(name, m, _)| (name, m));
        for (name, m) in all_rows {
            writeln!(
                md,
                "| {n} | {name} | {} | {:.2} | {:.2} ({}) | {} | {:.2} | {:.2} | {} | {} | {} | {} / {} ({} / {}) | {:.0} ({:.0}) |",
                m.status,
                m.run_s,
                m.sql_ms / 1000.0,
                m.sql_calls,
                m.timeline_ms.map(|t| format!("{:.2}", t / 1000.0)).unwrap_or_else(|| "skipped".into()),
                m.cpu_main_s,
                m.cpu_total_s - m.cpu_main_s,
                m.api_requests,
                m.raw_added,
                m.changes_added,
                m.history_ins,
                m.history_upd,
                m.all_ins,
                m.all_upd,
                m.hwm_mb,
                m.anon_mb,
            )
            .unwrap();
        }
        if n == largest {
            peer = Some(PeerInput {
                employees: n,
                version: dbt.as_ref().map(|d| dbt_version(d)),
                staged,
                rows: steps,
            });
        }
    }
    md.push_str(&http_md);
    md.push('\n');
    (md, peer, rss)
}

// ---------------------------------------------------------------------------------------------
// dbt peer

fn stage(c: &mut Client, dump: &Value) -> usize {
    c.batch_execute(
        "CREATE SCHEMA IF NOT EXISTS bench_dbt;
         CREATE TABLE IF NOT EXISTS bench_dbt.employees_staged (employee_id text PRIMARY KEY, record jsonb NOT NULL, employments jsonb);
         TRUNCATE bench_dbt.employees_staged;",
    )
    .unwrap();
    let mut buf = Vec::new();
    let mut n = 0;
    for e in dump["employees"].as_array().unwrap() {
        if e["removed"].as_bool() == Some(true) {
            continue;
        }
        let Some(id) = e["record"]["id"].as_str() else {
            continue;
        };
        let csv = |s: String| format!("\"{}\"", s.replace('"', "\"\""));
        let employments = if e["employments"].is_null() {
            serde_json::json!([])
        } else {
            e["employments"].clone()
        };
        writeln!(
            buf,
            "{},{},{}",
            csv(id.to_string()),
            csv(e["record"].to_string()),
            csv(employments.to_string())
        )
        .unwrap();
        n += 1;
    }
    let mut w = c
        .copy_in("COPY bench_dbt.employees_staged FROM STDIN (FORMAT csv)")
        .unwrap();
    w.write_all(&buf).unwrap();
    w.finish().unwrap();
    c.batch_execute("ANALYZE bench_dbt.employees_staged")
        .unwrap();
    n
}

struct DbtRun {
    wall_s: f64,
    node_s: f64,
    ok: bool,
}

fn dbt_bin() -> Option<PathBuf> {
    let p = std::env::var("BENCH_DBT")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/dbt"));
    p.exists().then_some(p)
}

fn dbt_snapshot(dbt: &Path, port: u16) -> DbtRun {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("dbt");
    let t = Instant::now();
    let out = Command::new(dbt)
        .args(["snapshot", "--no-version-check", "--project-dir"])
        .arg(&dir)
        .arg("--profiles-dir")
        .arg(&dir)
        .env("BENCH_PG_PORT", port.to_string())
        .env("DBT_SEND_ANONYMOUS_USAGE_STATS", "false")
        .env("DO_NOT_TRACK", "1")
        .output()
        .unwrap();
    let wall_s = t.elapsed().as_secs_f64();
    if !out.status.success() {
        eprintln!(
            "dbt snapshot failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let results: Value = std::fs::read_to_string(dir.join("target/run_results.json"))
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or(Value::Null);
    let node_s = results["results"][0]["execution_time"]
        .as_f64()
        .unwrap_or(f64::NAN);
    DbtRun {
        wall_s,
        node_s,
        ok: out.status.success(),
    }
}

fn dbt_version(dbt: &Path) -> String {
    Command::new(dbt)
        .arg("--version")
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .find(|l| l.contains("installed"))
                .unwrap_or("")
                .trim()
                .to_string()
        })
        .unwrap_or_default()
}

fn peer_section(c: &mut Client, input: Option<PeerInput>) -> String {
    let mut md = String::new();
    let Some(input) = input else { return md };
    writeln!(
        md,
        "## Peer: dbt snapshot (check strategy, check_cols = all) of the same {} records on the same server\n",
        input.employees
    )
    .unwrap();
    let Some(version) = input.version else {
        md.push_str("dbt not found (bench/.venv/bin/dbt or BENCH_DBT): peer skipped.\n\n");
        return md;
    };
    writeln!(
        md,
        "Staged: bench_dbt.employees_staged (employee_id, record jsonb, employments jsonb), {} rows. dbt {version}. \
         Each of dbt's snapshots runs right after our sync of the same data (ours, then dbt's, round after round), \
         so that both sides of a ratio see the machine in the same state. \
         dbt wall = the `dbt snapshot` command (Python start-up and parsing included); dbt node = the snapshot's \
         execution_time in run_results.json. Ours: run = the worker's whole sync, HTTP of every record included; \
         DB = SQL time of the apply + timeline upkeep (pg_stat_statements); main CPU = the worker's main thread.\n",
        input.staged
    )
    .unwrap();
    md.push_str(
        "| step | dbt wall s | dbt node s | ours run s | ours DB s | ours main CPU s | run / dbt node | DB / dbt node | goal (1%: <= 0.10) |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---|\n",
    );
    let mut ratios = Vec::new();
    for (name, m, d) in &input.rows {
        let Some(d) = d else { continue };
        let db_s = (m.sql_ms + m.refresh_sql_ms) / 1000.0;
        let is_one = name.contains("1%");
        if is_one {
            ratios.push(db_s / d.node_s);
        }
        let goal = match (is_one, db_s / d.node_s <= 0.10) {
            (false, _) => "",
            (true, true) => "met (DB)",
            (true, false) => "missed (DB)",
        };
        writeln!(
            md,
            "| {name} | {:.2}{} | {:.2} | {:.2} | {:.2} | {:.2} | {:.3} | **{:.3}** | {goal} |",
            d.wall_s,
            if d.ok { "" } else { " (failed)" },
            d.node_s,
            m.run_s,
            db_s,
            m.cpu_main_s,
            m.run_s / d.node_s,
            db_s / d.node_s,
        )
        .unwrap();
    }
    ratios.sort_by(f64::total_cmp);
    if let Some(median) = ratios.get(ratios.len() / 2) {
        writeln!(
            md,
            "\n1% step, {} rounds (ours and dbt's on the same changes), DB / dbt node: {}; median **{median:.3}**: goal <= 0.10 {}.",
            ratios.len(),
            ratios
                .iter()
                .map(|r| format!("{r:.3}"))
                .collect::<Vec<_>>()
                .join(", "),
            if *median <= 0.10 { "met" } else { "missed" }
        )
        .unwrap();
    }
    let rows_after: i64 = c
        .query_one("SELECT count(*) FROM bench_dbt.employees_snapshot", &[])
        .unwrap()
        .get(0);
    writeln!(
        md,
        "\ndbt snapshot table after all runs: {rows_after} rows.\n"
    )
    .unwrap();
    md
}

// ---------------------------------------------------------------------------------------------
// Memory

fn memory_section(rss: &[(usize, f64, f64)]) -> String {
    let mut md = String::from(
        "## Memory: the worker's peak RSS (sampled every 50 ms until the worker exits, max over its syncs)\n\n\
         VmHWM counts the shared-buffer pages the worker touched; private = peak RssAnon (its own heap).\n\n\
         | employees | peak RSS MB (VmHWM) | peak private MB (RssAnon) |\n|---:|---:|---:|\n",
    );
    for (n, mb, anon) in rss {
        writeln!(md, "| {n} | {mb:.0} | {anon:.0} |").unwrap();
    }
    if let (Some(a), Some(b)) = (rss.first(), rss.last()) {
        let verdict = |x: f64, y: f64| {
            if y <= x * 1.5 && y < 200.0 {
                "met"
            } else {
                "missed"
            }
        };
        writeln!(
            md,
            "\n{} → {}: VmHWM x{:.2}, private x{:.2}. Goal flat and under 200 MB: private memory {}; \
             VmHWM {} (it also counts the pages of the server's shared buffer pool, allocated once for \
             all backends, that the worker read or wrote: it grows with the data a sync touches, up to \
             shared_buffers).\n",
            a.0,
            b.0,
            b.1 / a.1,
            b.2 / a.2,
            verdict(a.2, b.2),
            verdict(a.1, b.1),
        )
        .unwrap();
    }
    md
}

// ---------------------------------------------------------------------------------------------
// Trigger latency

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn trigger_section(cluster: &Cluster, c: &mut Client, sizes: &Sizes) -> String {
    const CALLERS: usize = 20;
    eprintln!("bench: trigger latency");
    reset_db(c);
    let sim = Sim::start(SimConfig {
        employees: 2_000,
        seed: 1,
        rps: 20.0,
        latency_ms: 20,
        jitter_ms: 30,
        ..SimConfig::default()
    })
    .unwrap();
    point_at(cluster, &sim, 20.0);
    let mut conns: Vec<Client> = (0..CALLERS).map(|_| cluster.connect()).collect();
    let samples = Arc::new(Mutex::new(Vec::<f64>::new()));
    // The first call on each connection also loads the backend's caches (PL/pgSQL compiles the
    // functions, catalog lookups): reported apart, since a pool such as PostgREST's reuses its
    // connections.
    let mut first_calls = Vec::<f64>::new();
    let mut first_round = true;
    let mut creating = Vec::new();
    let mut joined_other = 0usize;
    for _ in 0..sizes.trigger_rounds {
        let t = Instant::now();
        let id: uuid::Uuid = c
            .query_one(
                &format!("{TAG} SELECT id FROM employes_sync_trigger('manual', 'bench')"),
                &[],
            )
            .unwrap()
            .get(0);
        creating.push(t.elapsed().as_secs_f64() * 1000.0);
        let barrier = Arc::new(Barrier::new(CALLERS));
        let calls = sizes.trigger_calls;
        let results: Vec<(Client, Vec<(f64, uuid::Uuid)>)> = std::thread::scope(|s| {
            let handles: Vec<_> = conns
                .drain(..)
                .map(|mut conn| {
                    let barrier = barrier.clone();
                    s.spawn(move || {
                        barrier.wait();
                        let mut v = Vec::with_capacity(calls);
                        for _ in 0..calls {
                            let t = Instant::now();
                            let got: uuid::Uuid = conn
                                .query_one(
                                    "SELECT id FROM employes_sync_trigger('manual', 'bench')",
                                    &[],
                                )
                                .unwrap()
                                .get(0);
                            v.push((t.elapsed().as_secs_f64() * 1000.0, got));
                        }
                        (conn, v)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for (conn, v) in results {
            let mut s = samples.lock().unwrap();
            for (i, (ms, got)) in v.into_iter().enumerate() {
                if first_round && i == 0 {
                    first_calls.push(ms);
                } else {
                    s.push(ms);
                }
                joined_other += usize::from(got != id);
            }
            conns.push(conn);
        }
        first_round = false;
        c.query_one(
            &format!("{TAG} SELECT status FROM employes_sync_cancel($1)"),
            &[&id],
        )
        .unwrap();
        c.query_one(
            &format!("{TAG} SELECT status FROM employes_sync_wait($1, 600)"),
            &[&id],
        )
        .unwrap();
        // A trigger that landed after the end started another session: stop it too.
        c.batch_execute(&format!(
            "{TAG} SELECT employes_sync_cancel(id) FROM employes_sync_sessions WHERE status IN ('queued', 'running')"
        ))
        .unwrap();
        wait_until(Duration::from_secs(60), "no active session", || {
            c.query_one(
                "SELECT count(*) FROM employes_sync_sessions WHERE status IN ('queued', 'running')",
                &[],
            )
            .unwrap()
            .get::<_, i64>(0)
                == 0
        });
    }
    let mut s = samples.lock().unwrap().clone();
    s.sort_by(f64::total_cmp);
    creating.sort_by(f64::total_cmp);
    first_calls.sort_by(f64::total_cmp);
    let mut all = [s.clone(), first_calls.clone()].concat();
    all.sort_by(f64::total_cmp);
    let p99 = percentile(&s, 99.0);
    let mut md = String::new();
    writeln!(
        md,
        "## Trigger latency: {CALLERS} concurrent callers, each on its own connection, while a sync runs (2,000 employees at 20 rps)\n\n\
         {} rounds; in each, one trigger starts a session, then every caller calls `employes_sync_trigger('manual', 'bench')` \
         {} times back to back (they join the running session), then the session is cancelled.\n\n\
         | calls | p50 ms | p90 ms | p99 ms | max ms | goal p99 < 50 ms | starting trigger (median, ms) |\n|---|---:|---:|---:|---:|---|---:|\n\
         | {} on open connections | {:.1} | {:.1} | **{p99:.1}** | {:.1} | {} | {:.1} |\n\
         | {} first calls on new connections | {:.1} | {:.1} | {:.1} | {:.1} |  |  |\n\
         | {} all calls | {:.1} | {:.1} | {:.1} | {:.1} | {} |  |\n",
        sizes.trigger_rounds,
        sizes.trigger_calls,
        s.len(),
        percentile(&s, 50.0),
        percentile(&s, 90.0),
        s.last().copied().unwrap_or(f64::NAN),
        if p99 < 50.0 { "met" } else { "missed" },
        percentile(&creating, 50.0),
        first_calls.len(),
        percentile(&first_calls, 50.0),
        percentile(&first_calls, 90.0),
        percentile(&first_calls, 99.0),
        first_calls.last().copied().unwrap_or(f64::NAN),
        all.len(),
        percentile(&all, 50.0),
        percentile(&all, 90.0),
        percentile(&all, 99.0),
        all.last().copied().unwrap_or(f64::NAN),
        if percentile(&all, 99.0) < 50.0 { "met" } else { "missed" },
    )
    .unwrap();
    if joined_other > 0 {
        writeln!(md, "\n{joined_other} calls started or joined another session (the round's session had ended).").unwrap();
    }
    md.push('\n');
    md
}
