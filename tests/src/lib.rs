//! Harness for whole-system scenarios: a throwaway PostgreSQL 15 cluster (Debian's binaries, run
//! as the `postgres` user when we are root) with `shared_preload_libraries = 'pg_cron,employes_sync'`
//! and the extension created, talking over loopback to an in-process `employes-sim`.
//!
//! The extension must be installed first (`cargo pgrx install`, done by `scripts/test.sh`).

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

mod lifecycle;

pub use employes_sim::{Sim, SimConfig};
pub use lifecycle::*;
pub use postgres::{Client, NoTls, Row};

/// Directory of the PostgreSQL 15 binaries: Debian's, unless `EMPLOYES_SYNC_PG_BIN` names a
/// relocated copy (so several people can install builds side by side).
pub fn bin() -> String {
    std::env::var("EMPLOYES_SYNC_PG_BIN").unwrap_or_else(|_| "/usr/lib/postgresql/15/bin".into())
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc_geteuid() == 0 }
}

extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}

/// Runs a PostgreSQL binary of the installation in `bin` as the cluster owner.
pub fn pg_cmd_in(bin: &str, program: &str) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--", &format!("{bin}/{program}")]);
        c
    } else {
        Command::new(format!("{bin}/{program}"))
    }
}

/// A port on loopback that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A fresh directory for a test's files, owned by the cluster owner.
fn test_dir(name: &str) -> PathBuf {
    let base =
        std::env::var("EMPLOYES_SYNC_TEST_DIR").unwrap_or_else(|_| "/tmp/employes_sync_e2e".into());
    let dir = PathBuf::from(base).join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    if is_root() {
        let ok = Command::new("chown")
            .args(["postgres:postgres"])
            .arg(&dir)
            .status()
            .unwrap();
        assert!(ok.success());
    }
    dir
}

/// Runs a command to its end; panics with its output when it fails.
pub fn run_ok(mut cmd: Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A running cluster; stopped and removed on drop.
pub struct Cluster {
    pub dir: PathBuf,
    pub port: u16,
    /// The directory of the PostgreSQL binaries it runs.
    pub bin: String,
}

impl Cluster {
    /// initdb + start with the extension's settings plus `extra` lines of postgresql.conf, then
    /// `CREATE EXTENSION pg_cron, employes_sync`.
    pub fn start(name: &str, extra: &[String]) -> Cluster {
        Cluster::start_with(name, extra, &bin(), true)
    }

    /// As `start`, with the binaries of `bin`, creating the extensions only if `create_extensions`.
    pub fn start_with(name: &str, extra: &[String], bin: &str, create_extensions: bool) -> Cluster {
        let dir = test_dir(name);
        let data = dir.join("data");
        let out = pg_cmd_in(bin, "initdb")
            .args(["-D"])
            .arg(&data)
            .args([
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
                "-E",
                "UTF8",
                "--locale",
                "C",
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = free_port();
        let mut conf = vec![
            format!("port = {port}"),
            "listen_addresses = '127.0.0.1'".into(),
            format!("unix_socket_directories = '{}'", dir.display()),
            "shared_preload_libraries = 'pg_cron,employes_sync'".into(),
            "cron.database_name = 'postgres'".into(),
            "max_worker_processes = 16".into(),
            "fsync = off".into(),
            "log_min_messages = warning".into(),
            "employes_sync.api_token = 'demo-token'".into(),
            "employes_sync.max_retries = 3".into(),
            "employes_sync.request_timeout_ms = 5000".into(),
        ];
        conf.extend(extra.iter().cloned());
        let mut text = std::fs::read_to_string(data.join("postgresql.conf")).unwrap();
        text.push_str("\n# employes_sync e2e\n");
        text.push_str(&conf.join("\n"));
        text.push('\n');
        std::fs::write(data.join("postgresql.conf"), text).unwrap();
        let cluster = Cluster {
            dir,
            port,
            bin: bin.to_owned(),
        };
        cluster.pg_ctl_start();
        if create_extensions {
            let mut c = cluster.connect();
            c.batch_execute("CREATE EXTENSION pg_cron; CREATE EXTENSION employes_sync;")
                .unwrap();
        }
        cluster
    }

    /// A hot standby of `primary`, made with `pg_basebackup -R` (so it has the primary's
    /// configuration, `ALTER SYSTEM` settings included) and started on a port of its own.
    pub fn standby_of(primary: &Cluster, name: &str) -> Cluster {
        let dir = test_dir(name);
        let data = dir.join("data");
        run_ok({
            let mut c = primary.pg_cmd("pg_basebackup");
            c.arg("-D")
                .arg(&data)
                .args(["-h", "127.0.0.1", "-p", &primary.port.to_string()])
                .args([
                    "-U",
                    "postgres",
                    "-R",
                    "-X",
                    "stream",
                    "-c",
                    "fast",
                    "--no-sync",
                ]);
            c
        });
        let port = free_port();
        let mut text = std::fs::read_to_string(data.join("postgresql.conf")).unwrap();
        text.push_str(&format!(
            "\n# standby\nport = {port}\nunix_socket_directories = '{}'\n",
            dir.display()
        ));
        std::fs::write(data.join("postgresql.conf"), text).unwrap();
        let cluster = Cluster {
            dir,
            port,
            bin: primary.bin.clone(),
        };
        cluster.pg_ctl_start();
        cluster
    }

    /// A PostgreSQL program of this cluster's installation, run as the cluster owner.
    pub fn pg_cmd(&self, program: &str) -> Command {
        pg_cmd_in(&self.bin, program)
    }

    fn log_file(&self) -> PathBuf {
        self.dir.join("server.log")
    }

    pub fn pg_ctl_start(&self) {
        let out = self
            .pg_cmd("pg_ctl")
            .args(["-D"])
            .arg(self.dir.join("data"))
            .args(["-l"])
            .arg(self.log_file())
            .args(["-w", "-t", "60", "start"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "pg_ctl start failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.server_log()
        );
    }

    /// `mode`: smart, fast or immediate.
    pub fn pg_ctl_stop(&self, mode: &str) {
        let _ = self
            .pg_cmd("pg_ctl")
            .args(["-D"])
            .arg(self.dir.join("data"))
            .args(["-w", "-t", "60", "-m", mode, "stop"])
            .output();
    }

    /// `pg_dump` of database `postgres` in `format` (`p`, `c`) to `file` in the cluster's directory.
    pub fn pg_dump(&self, format: &str, file: &str) -> PathBuf {
        let path = self.dir.join(file);
        run_ok({
            let mut cmd = self.pg_cmd("pg_dump");
            cmd.args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
            ])
            .args(["-d", "postgres", "-F", format, "-f"])
            .arg(&path);
            cmd
        });
        path
    }

    /// Restores a dump into database `postgres` of this cluster (which has the extension
    /// installed but not created), stopping at the first error: `psql -f` for a plain dump,
    /// `pg_restore` for the others.
    pub fn restore(&self, dump: &std::path::Path, format: &str) {
        let port = self.port.to_string();
        let mut cmd = if format == "p" {
            let mut cmd = self.pg_cmd("psql");
            cmd.args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-f"])
                .arg(dump);
            cmd
        } else {
            let mut cmd = self.pg_cmd("pg_restore");
            cmd.args(["--exit-on-error"]).arg(dump);
            cmd
        };
        cmd.args([
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-U",
            "postgres",
            "-d",
            "postgres",
        ]);
        run_ok(cmd);
    }

    pub fn server_log(&self) -> String {
        std::fs::read_to_string(self.log_file()).unwrap_or_default()
    }

    pub fn connect(&self) -> Client {
        self.connect_to("postgres")
    }

    /// A connection to database `dbname` of this cluster.
    pub fn connect_to(&self, dbname: &str) -> Client {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match Client::connect(
                &format!(
                    "host=127.0.0.1 port={} user=postgres dbname={dbname}",
                    self.port
                ),
                NoTls,
            ) {
                Ok(c) => return c,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => panic!("cannot connect: {e}"),
            }
        }
    }

    /// Points the extension at a simulator (ALTER SYSTEM + reload; workers read it at start).
    pub fn use_sim(&self, sim: &Sim, requests_per_second: f64) {
        let mut c = self.connect();
        for (name, value) in [
            ("base_url", sim.base_url()),
            ("company_id", sim.company_id()),
            ("api_token", sim.token()),
            ("requests_per_second", requests_per_second.to_string()),
        ] {
            c.batch_execute(&format!(
                "ALTER SYSTEM SET employes_sync.{name} = '{value}'"
            ))
            .unwrap();
        }
        c.batch_execute("SELECT pg_reload_conf()").unwrap();
        // pg_reload_conf only signals; wait until a new backend sees the value.
        let expected = sim.base_url();
        wait_until(Duration::from_secs(10), "settings reloaded", || {
            let mut c = self.connect();
            let v: String = c
                .query_one("SELECT current_setting('employes_sync.base_url')", &[])
                .unwrap()
                .get(0);
            v == expected
        });
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.pg_ctl_stop("immediate");
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        } else {
            eprintln!("cluster kept for inspection: {}", self.dir.display());
        }
    }
}

/// Polls `cond` until it is true or the deadline passes (then panics with `what`).
pub fn wait_until(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The columns of a session that scenarios look at.
#[derive(Debug, Clone)]
pub struct Session {
    pub id: uuid::Uuid,
    pub status: String,
    pub source: String,
    pub triggered_by: String,
    pub error: Option<String>,
    pub api_requests: i32,
    pub retries: i32,
    pub versions_written: i32,
    pub changes_detected: i32,
    pub employees_deleted: i32,
    pub pages_total: Option<i32>,
    pub pages_done: i32,
    pub employees_total: Option<i32>,
    pub employees_done: i32,
    pub errors: i32,
    pub snapshot_complete: Option<bool>,
    pub list_moved: i32,
    pub records_rejected: i32,
}

pub const SESSION_COLUMNS: &str = "id, status, source, triggered_by, error, api_requests, retries, versions_written, changes_detected,
    employees_deleted, pages_total, pages_done, employees_total, employees_done, errors, snapshot_complete, list_moved, records_rejected";

impl From<&Row> for Session {
    fn from(r: &Row) -> Session {
        Session {
            id: r.get(0),
            status: r.get(1),
            source: r.get(2),
            triggered_by: r.get(3),
            error: r.get(4),
            api_requests: r.get(5),
            retries: r.get(6),
            versions_written: r.get(7),
            changes_detected: r.get(8),
            employees_deleted: r.get(9),
            pages_total: r.get(10),
            pages_done: r.get(11),
            employees_total: r.get(12),
            employees_done: r.get(13),
            errors: r.get(14),
            snapshot_complete: r.get(15),
            list_moved: r.get(16),
            records_rejected: r.get(17),
        }
    }
}

pub fn trigger(c: &mut Client, source: &str, by: &str) -> Session {
    let row = c
        .query_one(
            &format!("SELECT {SESSION_COLUMNS} FROM employes_sync_trigger($1, $2)"),
            &[&source, &by],
        )
        .unwrap();
    Session::from(&row)
}

pub fn wait(c: &mut Client, id: uuid::Uuid) -> Session {
    let row = c
        .query_one(
            &format!("SELECT {SESSION_COLUMNS} FROM employes_sync_wait($1, 600)"),
            &[&id],
        )
        .unwrap();
    Session::from(&row)
}

/// Triggers a manual sync and waits for its end.
pub fn sync(c: &mut Client) -> Session {
    let s = trigger(c, "manual", "e2e@example.org");
    wait(c, s.id)
}

/// (employee_id, change_type) pairs recorded by a session.
pub fn change_pairs(c: &mut Client, session: uuid::Uuid) -> BTreeSet<(String, String)> {
    c.query(
        "SELECT DISTINCT employee_id, change_type FROM employes_changes WHERE session_id = $1",
        &[&session],
    )
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect()
}

/// (employee_id, change_type, effective_date) triples recorded by a session.
pub fn change_dates(
    c: &mut Client,
    session: uuid::Uuid,
) -> BTreeSet<(String, String, Option<String>)> {
    c.query(
        "SELECT DISTINCT employee_id, change_type, effective_date::text FROM employes_changes WHERE session_id = $1",
        &[&session],
    )
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2)))
    .collect()
}

pub fn count(c: &mut Client, sql: &str) -> i64 {
    c.query_one(sql, &[]).unwrap().get(0)
}

/// A stable fingerprint of the history tables' contents, ids, times and sessions aside.
pub fn fingerprint(c: &mut Client) -> Vec<String> {
    let mut rows: Vec<String> = c
        .query(
            "SELECT format('raw %s %s v%s %s current=%s', kind, employee_id, version, content_hash, valid_to IS NULL)
               FROM employes_raw_data
             UNION ALL
             SELECT format('change %s %s %s %s %s -> %s eff %s', kind, employee_id, change_type, field_path, old_value, new_value, effective_date)
               FROM employes_changes",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    rows.sort();
    rows
}

/// A simulator with test-friendly defaults (fast, but still rate limited).
pub fn sim(employees: usize, seed: u64, rps: f64) -> Sim {
    sim_of_companies(employees, seed, rps, 1)
}

/// A simulator of an account with `companies` companies of `employees` each (the first one is
/// the company of [`sim`] with the same seed).
pub fn sim_of_companies(employees: usize, seed: u64, rps: f64, companies: usize) -> Sim {
    Sim::start(SimConfig {
        employees,
        seed,
        rps,
        companies,
        ..SimConfig::default()
    })
    .expect("simulator starts")
}

/// Settings that keep fault and crash scenarios short: 10 employees per list page (so a list
/// has several pages), 2 retries, 1 s request timeout, at most 3 s of waiting on 429s per request.
pub fn fast_conf() -> Vec<String> {
    vec![
        "employes_sync.per_page = 10".into(),
        "employes_sync.max_retries = 2".into(),
        "employes_sync.throttle_max_wait_seconds = 3".into(),
        "employes_sync.request_timeout_ms = 1000".into(),
        "employes_sync.connect_timeout_ms = 1000".into(),
    ]
}

/// The session as it is now.
pub fn session(c: &mut Client, id: uuid::Uuid) -> Session {
    let row = c
        .query_one(
            &format!("SELECT {SESSION_COLUMNS} FROM employes_sync_sessions WHERE id = $1"),
            &[&id],
        )
        .unwrap();
    Session::from(&row)
}

/// The SQLSTATE and message of a statement that must fail.
pub fn sql_error(
    c: &mut Client,
    sql: &str,
    params: &[&(dyn postgres::types::ToSql + Sync)],
) -> (String, String) {
    let (code, message, _) = sql_error_with_hint(c, sql, params);
    (code, message)
}

/// The SQLSTATE, message and hint of a statement that must fail.
pub fn sql_error_with_hint(
    c: &mut Client,
    sql: &str,
    params: &[&(dyn postgres::types::ToSql + Sync)],
) -> (String, String, Option<String>) {
    let e = c
        .query(sql, params)
        .err()
        .unwrap_or_else(|| panic!("{sql} should fail"));
    let db = e
        .as_db_error()
        .unwrap_or_else(|| panic!("not a server error: {e}"));
    (
        db.code().code().to_string(),
        db.message().to_string(),
        db.hint().map(str::to_string),
    )
}

/// Fingerprints of a fault-free run in a throwaway cluster: after a first sync, then after
/// each advance step and a sync. Same seed and size give the same data and events.
pub fn reference_run(
    name: &str,
    employees: usize,
    seed: u64,
    steps: &[employes_sim::AdvanceOptions],
) -> Vec<Vec<String>> {
    let cluster = Cluster::start(name, &fast_conf());
    let sim = sim(employees, seed, 0.0);
    cluster.use_sim(&sim, 300.0);
    let mut c = cluster.connect();
    let mut out = Vec::new();
    let s = sync(&mut c);
    assert_eq!(s.status, "completed", "reference run: {s:?}");
    out.push(fingerprint(&mut c));
    for opts in steps {
        sim.advance_with(opts.clone());
        let s = sync(&mut c);
        assert_eq!(s.status, "completed", "reference run: {s:?}");
        out.push(fingerprint(&mut c));
    }
    out
}

/// No record has two current versions and no version number is used twice (the indexes say
/// so; this checks they hold after crashes too).
pub fn assert_history_consistent(c: &mut Client) {
    assert_eq!(
        count(
            c,
            "SELECT count(*) FROM (SELECT company_id, kind, employee_id FROM employes_raw_data WHERE valid_to IS NULL
               GROUP BY 1, 2, 3 HAVING count(*) > 1) d"
        ),
        0
    );
    assert_eq!(
        count(
            c,
            "SELECT count(*) FROM (SELECT company_id, kind, employee_id, field_path, change_type, raw_from_id, raw_to_id
               FROM employes_changes GROUP BY 1, 2, 3, 4, 5, 6, 7 HAVING count(*) > 1) d"
        ),
        0
    );
    // Every reference holds: the sync's history writes check them set-wise with the
    // foreign-key triggers off, so the declared keys alone do not prove it.
    assert_eq!(
        count(
            c,
            "SELECT count(*) FROM employes_changes ch
              WHERE (ch.raw_from_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM employes_raw_data r WHERE r.id = ch.raw_from_id))
                 OR (ch.raw_to_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM employes_raw_data r WHERE r.id = ch.raw_to_id))
                 OR NOT EXISTS (SELECT 1 FROM employes_sync_sessions s WHERE s.id = ch.session_id)"
        ),
        0
    );
    assert_eq!(
        count(
            c,
            "SELECT count(*) FROM employes_raw_data r
              WHERE NOT EXISTS (SELECT 1 FROM employes_sync_sessions s WHERE s.id = r.first_session_id)
                 OR (r.closed_session_id IS NOT NULL
                     AND NOT EXISTS (SELECT 1 FROM employes_sync_sessions s WHERE s.id = r.closed_session_id))"
        ),
        0
    );
    // A change links the versions of its own record.
    assert_eq!(
        count(
            c,
            "SELECT count(*) FROM employes_changes ch
               JOIN employes_raw_data r ON r.id IN (ch.raw_from_id, ch.raw_to_id)
              WHERE (r.company_id, r.kind, r.employee_id) <> (ch.company_id, ch.kind, ch.employee_id)"
        ),
        0
    );
    // A timeline row belongs to an employee of its company.
    assert_eq!(
        count(
            c,
            "SELECT count(*) FROM employes_timeline t
              WHERE NOT EXISTS (SELECT 1 FROM employes_raw_data r
                                 WHERE r.company_id = t.company_id AND r.employee_id = t.employee_id)"
        ),
        0
    );
    // Versions of a record are numbered 1..n without gaps.
    assert_eq!(
        count(
            c,
            "SELECT count(*) FROM (SELECT company_id, kind, employee_id FROM employes_raw_data GROUP BY 1, 2, 3
               HAVING max(version) <> count(*)) d"
        ),
        0
    );
    // Events and changes match one to one (where the event log exists: 0.6.0 on).
    let has_events: bool = c
        .query_one("SELECT to_regclass('employes_events') IS NOT NULL", &[])
        .unwrap()
        .get(0);
    if has_events {
        assert_events_match_changes(c);
        assert_sync_events(c);
    }
}

/// Each session that ended since the event log exists (from the first session with an event:
/// sessions before an upgrade to 0.6.0 have none) has one sync event per company it synced, of
/// that company's status, or one when it synced none.
pub fn assert_sync_events(c: &mut Client) {
    let bad: Vec<String> = c
        .query(
            "WITH since AS (SELECT min(s.created_at) AS t FROM employes_sync_sessions s
                             WHERE EXISTS (SELECT 1 FROM employes_events e WHERE e.session_id = s.id))
             SELECT format('session %s (%s): sync events %s for %s companies', s.id, s.status,
                           (SELECT array_agg(e.event_type || '/' || coalesce(e.company_id::text, '-'))
                              FROM employes_events e WHERE e.session_id = s.id AND e.event_type LIKE 'sync.%'),
                           (SELECT count(*) FROM employes_sync_session_companies sc WHERE sc.session_id = s.id))
               FROM employes_sync_sessions s, since
              WHERE s.status NOT IN ('queued', 'running') AND s.created_at >= since.t
                AND ((SELECT count(*) FROM employes_events e WHERE e.session_id = s.id AND e.event_type LIKE 'sync.%')
                         <> greatest(1, (SELECT count(*) FROM employes_sync_session_companies sc WHERE sc.session_id = s.id))
                     OR EXISTS (SELECT 1 FROM employes_events e
                                  JOIN employes_sync_session_companies sc ON sc.session_id = e.session_id
                                                                         AND sc.company_id = e.company_id
                                 WHERE e.session_id = s.id AND e.event_type LIKE 'sync.%'
                                   AND e.event_type <> CASE sc.status WHEN 'completed' THEN 'sync.completed'
                                                                      WHEN 'partial' THEN 'sync.partial'
                                                                      WHEN 'cancelled' THEN 'sync.cancelled'
                                                                      ELSE 'sync.failed' END))",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(
        bad.is_empty(),
        "sessions without their sync events: {bad:?}"
    );
}

/// Every change of a session that has ended since the event log exists is in exactly one event
/// (of that session, company, employee and change type, with the change's values), and every
/// employee event holds only such changes. A session has ended once its sync event is written.
pub fn assert_events_match_changes(c: &mut Client) {
    let bad: Vec<String> = c
        .query(
            "WITH ended AS (SELECT DISTINCT session_id FROM employes_events WHERE event_type LIKE 'sync.%'),
                  ev AS (SELECT e.id, e.session_id, e.company_id, e.employee_id, e.event_type, x AS item
                           FROM employes_events e CROSS JOIN jsonb_array_elements(e.data -> 'changes') x
                          WHERE e.employee_id IS NOT NULL AND e.session_id IN (SELECT session_id FROM ended)),
                  ch AS (SELECT * FROM employes_changes WHERE session_id IN (SELECT session_id FROM ended))
             SELECT format('change %s in events %s', ch.id, array_agg(ev.id ORDER BY ev.id))
               FROM ch LEFT JOIN ev ON (ev.item ->> 'change_id')::bigint = ch.id
                    AND ev.session_id = ch.session_id AND ev.company_id = ch.company_id
                    AND ev.employee_id = ch.employee_id AND ev.event_type = employes_events_type_of(ch.change_type)
                    AND ev.item -> 'field_path' = to_jsonb(ch.field_path)
                    AND ev.item -> 'old_value' = coalesce(ch.old_value, 'null')
                    AND ev.item -> 'new_value' = coalesce(ch.new_value, 'null')
                    AND ev.item -> 'effective_date' = coalesce(to_jsonb(ch.effective_date), 'null')
              GROUP BY ch.id HAVING count(ev.id) <> 1
             UNION ALL
             SELECT format('event %s holds %s, not a change of its own', ev.id, ev.item ->> 'change_id')
               FROM ev LEFT JOIN ch ON ch.id = (ev.item ->> 'change_id')::bigint AND ch.session_id = ev.session_id
              WHERE ch.id IS NULL
             UNION ALL
             SELECT format('event %s has no changes', e.id) FROM employes_events e
              WHERE e.employee_id IS NOT NULL AND jsonb_array_length(coalesce(e.data -> 'changes', '[]')) = 0
             LIMIT 20",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(bad.is_empty(), "events and changes differ: {bad:?}");
}

/// A simulator fault on every request of an endpoint (narrow it with the other fields).
pub fn rule(
    endpoint: employes_sim::Endpoint,
    action: employes_sim::FaultAction,
) -> employes_sim::FaultRule {
    employes_sim::FaultRule {
        endpoint,
        page: None,
        employee_ids: None,
        company_id: None,
        every: None,
        skip: 0,
        count: None,
        action,
    }
}
