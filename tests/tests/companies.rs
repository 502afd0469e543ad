//! Several Employes companies in one database: one trigger syncs each enabled company in turn,
//! each keeps its own history, deletions are inferred per company from that company's complete
//! list only, a company's own token is never readable, and throttling is waited out without
//! using up the retries of failures.

use std::time::{Duration, Instant};

use employes_sim::{AdvanceOptions, Endpoint, FaultAction, FaultRule};
use employes_sync_e2e::*;
use postgres::NoTls;
use serde_json::Value;

const EMPLOYEES: usize = 20;
const SEED: u64 = 71;

/// What one company's part of a session did.
#[derive(Debug, Clone, PartialEq)]
struct Part {
    company: String,
    status: String,
    versions_written: i32,
    employees_deleted: i32,
    api_requests: i32,
    error: Option<String>,
}

fn parts(c: &mut Client, session: uuid::Uuid) -> Vec<Part> {
    c.query(
        "SELECT company_id::text, status, versions_written, employees_deleted, api_requests, error
           FROM employes_sync_session_companies WHERE session_id = $1 ORDER BY started_at",
        &[&session],
    )
    .unwrap()
    .iter()
    .map(|r| Part {
        company: r.get(0),
        status: r.get(1),
        versions_written: r.get(2),
        employees_deleted: r.get(3),
        api_requests: r.get(4),
        error: r.get(5),
    })
    .collect()
}

fn current_of(c: &mut Client, company: &str) -> i64 {
    count(
        c,
        &format!("SELECT count(*) FROM employes_current WHERE company_id = '{company}'"),
    )
}

fn deletions(c: &mut Client) -> i64 {
    count(
        c,
        "SELECT count(*) FROM employes_changes WHERE change_type = 'deleted'",
    )
}

/// The companies as the view shows them: (id, enabled, removed, has_own_token, last_status).
fn companies(c: &mut Client) -> Vec<(String, bool, bool, bool, Option<String>)> {
    c.query(
        "SELECT company_id::text, enabled, removed, has_own_token, last_status
           FROM employes_sync_companies ORDER BY added_at, company_id",
        &[],
    )
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
    .collect()
}

fn trigger_company(c: &mut Client, company: &str) -> Session {
    let row = c
        .query_one(
            &format!(
                "SELECT {SESSION_COLUMNS} FROM employes_sync_trigger('manual', 'e2e', $1::text::uuid)"
            ),
            &[&company],
        )
        .unwrap();
    Session::from(&row)
}

fn seconds(c: &mut Client, session: uuid::Uuid) -> f64 {
    c.query_one(
        "SELECT extract(epoch FROM completed_at - started_at)::float8 FROM employes_sync_sessions WHERE id = $1",
        &[&session],
    )
    .unwrap()
    .get(0)
}

/// Sets employes_sync.`name` (ALTER SYSTEM) and waits until a new backend sees `value`.
fn set(cluster: &Cluster, name: &str, value: &str) {
    let mut c = cluster.connect();
    c.batch_execute(&format!(
        "ALTER SYSTEM SET employes_sync.{name} = '{value}'"
    ))
    .unwrap();
    c.batch_execute("SELECT pg_reload_conf()").unwrap();
    wait_until(Duration::from_secs(10), "the setting reloaded", || {
        let v: String = cluster
            .connect()
            .query_one(
                &format!("SELECT current_setting('employes_sync.{name}')"),
                &[],
            )
            .unwrap()
            .get(0);
        v == value
    });
}

fn fail_everything_of(company: &str) -> FaultRule {
    FaultRule {
        endpoint: Endpoint::Any,
        page: None,
        employee_ids: None,
        company_id: Some(company.to_owned()),
        every: None,
        skip: 0,
        count: None,
        action: FaultAction::Status {
            status: 500,
            body: None,
            retry_after: None,
        },
    }
}

#[test]
fn two_companies_share_one_token_and_its_rate_limit_and_one_failing_deletes_nobody() {
    let rps = 5.0;
    let cluster = Cluster::start("companies", &fast_conf());
    let sim = sim_of_companies(EMPLOYEES, SEED, rps, 2);
    cluster.use_sim(&sim, rps);
    let ids = sim.company_ids();
    let (a, b) = (ids[0].clone(), ids[1].clone());
    let mut c = cluster.connect();
    c.batch_execute(&format!(
        "SELECT employes_sync_add_company('{a}', 'Bakery Utrecht');
         SELECT employes_sync_add_company('{b}', 'Bakery Delft');"
    ))
    .unwrap();

    // One trigger: both companies, one after the other, within one rate limit of 5/s.
    let t = Instant::now();
    let s = sync(&mut c);
    let wall = t.elapsed().as_secs_f64();
    assert_eq!(s.status, "completed", "{s:?}");
    let p = parts(&mut c, s.id);
    assert_eq!(
        p.iter().map(|p| p.company.as_str()).collect::<Vec<_>>(),
        [a.as_str(), b.as_str()]
    );
    for (k, part) in p.iter().enumerate() {
        let listed = sim.listed_employee_ids_of(k).len();
        assert_eq!(part.status, "completed", "{part:?}");
        assert_eq!(part.versions_written as usize, 2 * listed, "{part:?}");
        assert_eq!(current_of(&mut c, &part.company), listed as i64);
    }
    assert_eq!(
        s.versions_written,
        p.iter().map(|p| p.versions_written).sum::<i32>()
    );
    assert_eq!(
        s.api_requests,
        p.iter().map(|p| p.api_requests).sum::<i32>()
    );
    // Each company alone needs (its requests - 1) / rps at least; together, the sum.
    let floors: f64 = p.iter().map(|p| (p.api_requests - 1) as f64 / rps).sum();
    let took = seconds(&mut c, s.id);
    eprintln!(
        "two companies, {} requests, one token at {rps}/s: session {took:.1} s (wall {wall:.1} s), sum of floors {floors:.1} s, sim throttled {}",
        s.api_requests,
        sim.stats().rate_limited
    );
    assert!(took >= floors, "{took} s < sum of floors {floors} s");
    assert_eq!(sim.stats().rate_limited, 0, "the API's limit was never hit");
    let panel: Value = c
        .query_one("SELECT employes_sync_status()", &[])
        .unwrap()
        .get(0);
    let listed: Vec<(&str, &str)> = panel["companies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            (
                x["company_id"].as_str().unwrap(),
                x["last_status"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        listed,
        [(a.as_str(), "completed"), (b.as_str(), "completed")]
    );
    for (x, part) in panel["companies"].as_array().unwrap().iter().zip(&p) {
        assert_eq!(
            x["last_counts"]["versions_written"], part.versions_written,
            "{x}"
        );
        assert_eq!(x["last_counts"]["api_requests"], part.api_requests, "{x}");
        assert_eq!(
            x["employees_synced"],
            current_of(&mut c, &part.company),
            "{x}"
        );
    }

    // Company B's API answers 500 for everything: A's sync completes, B's fails, nobody of
    // either is marked deleted.
    sim.set_rate_limit(0.0);
    set(&cluster, "requests_per_second", "200");
    // (A month with raises and a hire, and nobody leaving: any deletion would be false.)
    sim.advance_all_with(AdvanceOptions {
        raises: Some(3),
        hires: Some(1),
        ..AdvanceOptions::none()
    });
    sim.set_faults(vec![fail_everything_of(&b)]);
    let (a_before, b_before) = (current_of(&mut c, &a), current_of(&mut c, &b));
    let s = sync(&mut c);
    assert_eq!(s.status, "partial", "{s:?}");
    let error = s.error.clone().unwrap_or_default();
    assert!(error.contains(&format!("company {b}")), "{error}");
    let p = parts(&mut c, s.id);
    assert_eq!(p[0].status, "completed", "{p:?}");
    assert!(p[0].versions_written > 0, "A's changes were stored: {p:?}");
    assert_eq!(p[1].status, "error", "{p:?}");
    assert!(p[1].error.as_deref().unwrap_or("").contains("500"), "{p:?}");
    assert_eq!(s.employees_deleted, 0);
    assert_eq!(deletions(&mut c), 0);
    assert_eq!(current_of(&mut c, &b), b_before);
    assert_eq!(
        current_of(&mut c, &a),
        sim.listed_employee_ids_of(0).len() as i64,
        "A is current ({a_before} before)"
    );
    let view = companies(&mut c);
    assert_eq!(view[0].4.as_deref(), Some("completed"));
    assert_eq!(view[1].4.as_deref(), Some("error"));

    // Removing A marks nobody deleted and keeps its history; the next sync is B's alone.
    sim.set_faults(Vec::new());
    let history_a = count(
        &mut c,
        &format!("SELECT count(*) FROM employes_raw_data WHERE company_id = '{a}'"),
    );
    let removed: (bool, bool) = {
        let r = c
            .query_one(
                "SELECT enabled, removed FROM employes_sync_remove_company($1::text::uuid)",
                &[&a],
            )
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!(removed, (false, true));
    let s = sync(&mut c);
    assert_eq!(s.status, "completed", "{s:?}");
    let p = parts(&mut c, s.id);
    assert_eq!(
        p.iter().map(|p| p.company.as_str()).collect::<Vec<_>>(),
        [b.as_str()]
    );
    assert_eq!(deletions(&mut c), 0);
    assert_eq!(
        count(
            &mut c,
            &format!("SELECT count(*) FROM employes_raw_data WHERE company_id = '{a}'")
        ),
        history_a
    );
    assert_history_consistent(&mut c);

    // Added again, A's history goes on where it was.
    c.query_one("SELECT employes_sync_add_company($1::text::uuid)", &[&a])
        .unwrap();
    let s = sync(&mut c);
    assert_eq!(s.status, "completed", "{s:?}");
    assert_eq!(
        parts(&mut c, s.id)[0].versions_written,
        0,
        "nothing changed for A"
    );
    assert_eq!(deletions(&mut c), 0);
}

#[test]
fn pausing_a_company_and_syncing_one_company_alone() {
    let cluster = Cluster::start("companies-pause", &fast_conf());
    let sim = sim_of_companies(EMPLOYEES, SEED, 0.0, 2);
    cluster.use_sim(&sim, 300.0);
    let ids = sim.company_ids();
    let (a, b) = (ids[0].clone(), ids[1].clone());
    let mut c = cluster.connect();
    // Without any company added, the setting's company is synced (as in 0.1.0), and added.
    let s = sync(&mut c);
    assert_eq!(s.status, "completed", "{s:?}");
    let view = companies(&mut c);
    assert_eq!(view.len(), 1);
    assert_eq!(view[0].0, a);
    let added_by: String = c
        .query_one(
            "SELECT added_by FROM employes_sync_companies WHERE company_id = $1::text::uuid",
            &[&a],
        )
        .unwrap()
        .get(0);
    assert_eq!(added_by, "employes_sync.company_id");

    c.query_one(
        "SELECT employes_sync_add_company($1::text::uuid, 'B')",
        &[&b],
    )
    .unwrap();
    c.query_one("SELECT employes_sync_pause_company($1::text::uuid)", &[&b])
        .unwrap();
    let s = sync(&mut c);
    let p = parts(&mut c, s.id);
    assert_eq!(
        p.iter().map(|p| p.company.as_str()).collect::<Vec<_>>(),
        [a.as_str()],
        "a paused company is skipped"
    );
    let (code, message) = sql_error(
        &mut c,
        "SELECT employes_sync_trigger('manual', 'e2e', $1::text::uuid)",
        &[&b],
    );
    assert_eq!(code, "PT409", "{message}");
    assert!(message.contains("paused"), "{message}");

    c.query_one("SELECT employes_sync_resume_company($1::text::uuid)", &[&b])
        .unwrap();
    let s = trigger_company(&mut c, &b);
    let s = wait(&mut c, s.id);
    assert_eq!(s.status, "completed", "{s:?}");
    let p = parts(&mut c, s.id);
    assert_eq!(
        p.iter().map(|p| p.company.as_str()).collect::<Vec<_>>(),
        [b.as_str()]
    );
    let requested: Option<uuid::Uuid> = c
        .query_one(
            "SELECT requested_company FROM employes_sync_sessions WHERE id = $1",
            &[&s.id],
        )
        .unwrap()
        .get(0);
    assert_eq!(requested.map(|u| u.to_string()), Some(b.clone()));
    // Both companies' employees, each under its own company.
    assert_eq!(
        current_of(&mut c, &a),
        sim.listed_employee_ids_of(0).len() as i64
    );
    assert_eq!(
        current_of(&mut c, &b),
        sim.listed_employee_ids_of(1).len() as i64
    );
    let one_of_b = sim.listed_employee_ids_of(1)[0].clone();
    let record: Option<Value> = c
        .query_one(
            "SELECT employes_employee_as_of($1, now(), $2::text::uuid)",
            &[&one_of_b, &b],
        )
        .unwrap()
        .get(0);
    assert_eq!(record.unwrap()["id"], one_of_b.as_str());
    let elsewhere: Option<Value> = c
        .query_one(
            "SELECT employes_employee_as_of($1, now(), $2::text::uuid)",
            &[&one_of_b, &a],
        )
        .unwrap()
        .get(0);
    assert_eq!(elsewhere, None);
}

#[test]
fn bad_company_input_gets_a_clear_sqlstate_and_changes_nothing() {
    let cluster = Cluster::start("companies-bad", &fast_conf());
    // Slow enough that a sync is still running when it is asked to remove its company.
    let sim = sim_of_companies(EMPLOYEES, SEED, 2.0, 1);
    cluster.use_sim(&sim, 2.0);
    let a = sim.company_id();
    let mut c = cluster.connect();
    c.query_one(
        "SELECT employes_sync_add_company($1::text::uuid, 'A')",
        &[&a],
    )
    .unwrap();
    let unknown = "00000000-0000-4000-8000-000000000001";
    let state = |c: &mut Client| -> Vec<String> {
        c.query(
            "SELECT row_to_json(s)::text FROM employes_sync_company_settings s
             UNION ALL SELECT 'token ' || company_id FROM employes_sync_company_tokens
             UNION ALL SELECT 'session ' || id FROM employes_sync_sessions ORDER BY 1",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
    };
    let before = state(&mut c);
    for (sql, code, says) in [
        (
            "SELECT employes_sync_add_company(NULL)",
            "22023",
            "must not be NULL",
        ),
        (
            "SELECT employes_sync_add_company('not-a-uuid')",
            "22P02",
            "uuid",
        ),
        (
            "SELECT employes_sync_add_company('5f1c6a4e-1c1f-4b8e-9a53')",
            "22P02",
            "uuid",
        ),
        (
            "SELECT employes_sync_add_company(gen_random_uuid(), 'x', 'has a space')",
            "22023",
            "invalid api_token",
        ),
        (
            "SELECT employes_sync_add_company(gen_random_uuid(), repeat('n', 201))",
            "23514",
            "name",
        ),
        (
            "SELECT employes_sync_remove_company(NULL)",
            "22023",
            "must not be NULL",
        ),
        (
            "SELECT employes_sync_pause_company(NULL)",
            "22023",
            "must not be NULL",
        ),
        (
            "SELECT employes_sync_resume_company(NULL)",
            "22023",
            "must not be NULL",
        ),
        (
            "SELECT employes_sync_set_company_token(NULL, 'abcdefghij')",
            "22023",
            "must not be NULL",
        ),
    ] {
        let (got, message) = sql_error(&mut c, sql, &[]);
        assert_eq!(got, code, "{sql}: {message}");
        assert!(message.contains(says), "{sql}: {message}");
        assert!(
            !message.contains("has a space"),
            "{sql}: the token is in the error"
        );
    }
    for sql in [
        "SELECT employes_sync_remove_company($1::text::uuid)",
        "SELECT employes_sync_pause_company($1::text::uuid)",
        "SELECT employes_sync_resume_company($1::text::uuid)",
        "SELECT employes_sync_set_company_token($1::text::uuid, 'abcdefghij')",
        "SELECT employes_sync_trigger('manual', 'e2e', $1::text::uuid)",
    ] {
        let (code, message, hint) = sql_error_with_hint(&mut c, sql, &[&unknown]);
        assert_eq!(code, "22023", "{sql}: {message}");
        assert_eq!(message, format!("no company {unknown}"), "{sql}");
        assert!(hint
            .unwrap_or_default()
            .contains("employes_sync_add_company"));
    }
    let (code, message) = sql_error(
        &mut c,
        "SELECT employes_sync_add_company($1::text::uuid)",
        &[&a],
    );
    assert_eq!(code, "23505", "{message}");
    assert!(message.contains("already added"), "{message}");
    assert_eq!(state(&mut c), before, "bad input changed something");

    // Removing a company while its sync runs: PT409, and the sync goes on.
    let s = trigger(&mut c, "manual", "e2e");
    wait_until(Duration::from_secs(30), "the sync to run", || {
        session(&mut c, s.id).status == "running"
    });
    let (code, message, hint) = sql_error_with_hint(
        &mut c,
        "SELECT employes_sync_remove_company($1::text::uuid)",
        &[&a],
    );
    assert_eq!(code, "PT409", "{message}");
    assert!(message.contains(&s.id.to_string()), "{message}");
    assert!(hint.unwrap_or_default().contains("employes_sync_cancel"));
    let removed: bool = c
        .query_one(
            "SELECT removed FROM employes_sync_companies WHERE company_id = $1::text::uuid",
            &[&a],
        )
        .unwrap()
        .get(0);
    assert!(!removed);
    c.batch_execute(&format!("SELECT employes_sync_cancel('{}')", s.id))
        .unwrap();
    assert_eq!(wait(&mut c, s.id).status, "cancelled");
    c.query_one("SELECT employes_sync_remove_company($1::text::uuid)", &[&a])
        .unwrap();
    let (code, message) = sql_error(
        &mut c,
        "SELECT employes_sync_remove_company($1::text::uuid)",
        &[&a],
    );
    assert_eq!(code, "22023", "{message}");
    assert!(message.contains("was removed"), "{message}");
}

const OWN_TOKEN: &str = "own-TOKEN-of-company-b-7d2e91";
const OTHER_TOKEN: &str = "second-OWN-token-b-4c1a88";

#[test]
fn a_company_token_of_its_own_works_and_is_never_readable() {
    let cluster = Cluster::start(
        "companies-token",
        &[
            fast_conf(),
            vec![
                "log_statement = 'all'".into(),
                "log_min_duration_statement = 0".into(),
                "log_min_error_statement = info".into(),
            ],
        ]
        .concat(),
    );
    let sim = sim_of_companies(EMPLOYEES, SEED, 0.0, 2);
    cluster.use_sim(&sim, 300.0);
    let ids = sim.company_ids();
    let (a, b) = (ids[0].clone(), ids[1].clone());
    sim.set_company_token(&b, OWN_TOKEN);
    let mut c = cluster.connect();
    // Simple protocol: the token is in the statement's text.
    c.batch_execute(&format!(
        "SELECT employes_sync_add_company('{b}', 'Own token', '{OWN_TOKEN}')"
    ))
    .unwrap();
    let s = sync(&mut c);
    assert_eq!(s.status, "completed", "{s:?}");
    let p = parts(&mut c, s.id);
    assert_eq!(p.len(), 2, "{p:?}");
    assert!(p.iter().all(|p| p.status == "completed"), "{p:?}");
    assert_eq!(
        current_of(&mut c, &b),
        sim.listed_employee_ids_of(1).len() as i64
    );
    assert_eq!(
        companies(&mut c)
            .iter()
            .map(|x| (x.0.clone(), x.3))
            .collect::<Vec<_>>(),
        [(b.clone(), true), (a.clone(), false)]
    );

    // A wrong token (as bind parameters: the extended protocol): B fails with 401, A is synced.
    c.query(
        "SELECT employes_sync_set_company_token($1::text::uuid, $2)",
        &[&b, &OTHER_TOKEN],
    )
    .unwrap();
    let s = sync(&mut c);
    assert_eq!(s.status, "partial", "{s:?}");
    let p = parts(&mut c, s.id);
    let failed = p.iter().find(|p| p.company == b).unwrap();
    assert_eq!(failed.status, "error");
    assert!(
        failed.error.as_deref().unwrap_or("").contains("401"),
        "{failed:?}"
    );
    assert_eq!(deletions(&mut c), 0);
    // A malformed token is refused without being echoed.
    let (code, message) = sql_error(
        &mut c,
        "SELECT employes_sync_set_company_token($1::text::uuid, $2)",
        &[&b, &format!("{OWN_TOKEN} x")],
    );
    assert_eq!(code, "22023");
    assert!(!message.contains(OWN_TOKEN), "{message}");
    c.query(
        "SELECT employes_sync_set_company_token($1::text::uuid, $2)",
        &[&b, &OWN_TOKEN],
    )
    .unwrap();
    assert_eq!(sync(&mut c).status, "completed");

    // Roles: an ordinary login role granted the status panel and the companies view, and a
    // PostgREST-style authenticator switching to its anon/authenticated roles.
    c.batch_execute(
        "CREATE ROLE app LOGIN;
         GRANT EXECUTE ON FUNCTION employes_sync_status(), employes_sync_trigger(text, text, uuid) TO app;
         GRANT SELECT ON employes_sync_companies TO app;
         CREATE ROLE anon NOLOGIN; CREATE ROLE authenticated NOLOGIN;
         CREATE ROLE authenticator LOGIN NOINHERIT; GRANT anon, authenticated TO authenticator;
         GRANT EXECUTE ON FUNCTION employes_sync_status() TO authenticated;",
    )
    .unwrap();
    // The superuser's last statement carries the token: other roles must not see its text.
    let mut admin = cluster.connect();
    let admin_pid: i32 = admin
        .query_one("SELECT pg_backend_pid()", &[])
        .unwrap()
        .get(0);
    admin
        .batch_execute(&format!(
            "SELECT employes_sync_set_company_token('{b}', '{OWN_TOKEN}')"
        ))
        .unwrap();
    let connect_as = |user: &str| {
        Client::connect(
            &format!(
                "host=127.0.0.1 port={} user={user} dbname=postgres",
                cluster.port
            ),
            NoTls,
        )
        .unwrap()
    };
    let mut app = connect_as("app");
    let mut postgrest = connect_as("authenticator");
    let routes = [
        "SELECT row_to_json(t)::text FROM employes_sync_company_tokens t",
        "SELECT row_to_json(t)::text FROM employes_sync_company_settings t",
        "SELECT row_to_json(t)::text FROM employes_sync_companies t",
        "SELECT employes_sync_status()::text",
        "SELECT coalesce(query, '') FROM pg_stat_activity WHERE pid <> pg_backend_pid()",
        "SELECT string_agg(row_to_json(l)::text, ' ') FROM employes_sync_logs l",
        "SELECT string_agg(row_to_json(s)::text, ' ') FROM employes_sync_sessions s",
        "SELECT employes_sync_add_company(gen_random_uuid())",
        "SELECT employes_sync_set_company_token(gen_random_uuid(), 'abcdefghij')",
        "SELECT current_setting('employes_sync.api_token')",
    ];
    let mut seen_activity = false;
    for (who, role) in [
        ("app", None),
        ("anon", Some("anon")),
        ("authenticated", Some("authenticated")),
    ] {
        let client = if role.is_some() {
            &mut postgrest
        } else {
            &mut app
        };
        if let Some(r) = role {
            client.batch_execute(&format!("SET ROLE {r}")).unwrap();
        }
        for sql in routes {
            let text = match client.query(sql, &[]) {
                Ok(rows) => rows
                    .iter()
                    .map(|r| {
                        r.try_get::<_, Option<String>>(0)
                            .ok()
                            .flatten()
                            .unwrap_or_default()
                    })
                    .collect::<Vec<_>>()
                    .join("\n"),
                Err(e) => e.to_string(),
            };
            assert!(
                !text.contains(OWN_TOKEN) && !text.contains(OTHER_TOKEN),
                "{who}: {sql} shows a token: {text}"
            );
            if sql.contains("pg_stat_activity") && text.contains("insufficient privilege") {
                seen_activity = true;
            }
        }
        if role.is_some() {
            client.batch_execute("RESET ROLE").unwrap();
        }
    }
    assert!(seen_activity, "pg_stat_activity was not checked");
    // The superuser does see it (the check above is not vacuous).
    let own_query: String = c
        .query_one(
            "SELECT query FROM pg_stat_activity WHERE pid = $1",
            &[&admin_pid],
        )
        .unwrap()
        .get(0);
    assert!(own_query.contains(OWN_TOKEN));

    // The dump leaves the tokens out (and keeps the companies).
    let dump = cluster.pg_dump("p", "companies.sql");
    let text = std::fs::read_to_string(&dump).unwrap();
    assert!(!text.contains(OWN_TOKEN) && !text.contains(OTHER_TOKEN));
    assert!(text.contains(&b), "the companies are in the dump");
    // Restored (into a new server, as after a loss), the companies are back without their
    // tokens: they are set again.
    let target = Cluster::start_with("companies-restored", &fast_conf(), &bin(), false);
    target
        .connect()
        .batch_execute(
            "CREATE ROLE app LOGIN; CREATE ROLE anon NOLOGIN; CREATE ROLE authenticated NOLOGIN;
             CREATE ROLE authenticator LOGIN NOINHERIT;",
        )
        .unwrap();
    run_ok({
        let mut cmd = target.pg_cmd("psql");
        cmd.args([
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            "127.0.0.1",
            "-p",
            &target.port.to_string(),
            "-U",
            "postgres",
            "-d",
            "postgres",
            "-f",
        ])
        .arg(&dump);
        cmd
    });
    let mut restored = target.connect();
    assert_eq!(
        companies(&mut restored)
            .iter()
            .map(|x| (x.0.clone(), x.3))
            .collect::<Vec<_>>(),
        [(b.clone(), false), (a.clone(), false)]
    );

    // Nor is a token in the server log, whatever log_statement logged.
    drop(admin);
    let log = cluster.server_log();
    // (log_statement logged them, masked: the text, and the bind parameters of the extended
    // protocol.)
    assert!(
        log.contains(
            "statement: (not logged: it may carry an Employes API token or a webhook secret)"
        ),
        "the statements were not logged at all"
    );
    assert!(
        log.contains("parameters: (not logged"),
        "the bind parameters were not logged at all"
    );
    for token in [OWN_TOKEN, OTHER_TOKEN] {
        assert!(!log.contains(token), "a token is in the server log");
    }
}

#[test]
fn throttling_is_waited_out_without_using_up_the_retries_of_failures() {
    // Five retries of a failure, as by default; every 3rd request throttled (429, Retry-After: 0)
    // and every 7th failing (503).
    let cluster = Cluster::start(
        "companies-throttle",
        &[fast_conf(), vec!["employes_sync.max_retries = 5".into()]].concat(),
    );
    let sim = sim(130, SEED, 0.0);
    cluster.use_sim(&sim, 300.0);
    let every_nth = |every: u32, status: u16| FaultRule {
        every: Some(every),
        ..rule(
            Endpoint::Any,
            FaultAction::Status {
                status,
                body: None,
                retry_after: (status == 429).then_some(0),
            },
        )
    };
    sim.set_faults(vec![every_nth(3, 429), every_nth(7, 503)]);
    let mut c = cluster.connect();
    let s = sync(&mut c);
    assert_eq!(s.status, "completed", "{s:?}");
    assert_eq!(s.errors, 0);
    assert_eq!(
        s.versions_written as usize,
        2 * sim.listed_employee_ids().len()
    );
    let stats = sim.stats();
    eprintln!(
        "throttled every 3rd, failing every 7th: {} requests, {} retries, completed",
        stats.total, s.retries
    );

    // Throttling is bounded by time: a 429 for everything ends the sync after the wait allowed.
    set(&cluster, "throttle_max_wait_seconds", "2s");
    sim.set_faults(vec![rule(
        Endpoint::Any,
        FaultAction::Status {
            status: 429,
            body: None,
            retry_after: Some(1),
        },
    )]);
    let t = Instant::now();
    let s = sync(&mut c);
    assert_eq!(s.status, "error", "{s:?}");
    assert!(s.error.as_deref().unwrap_or("").contains("429"), "{s:?}");
    assert!(t.elapsed() < Duration::from_secs(30), "{:?}", t.elapsed());
    assert_eq!(deletions(&mut c), 0);
}
