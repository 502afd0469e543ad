//! Secrets and privileges: the API token unreadable to a non-superuser by every route, the
//! settings that decide where it goes superuser-only, nothing for PUBLIC, SECURITY DEFINER
//! functions immune to objects planted in the caller's search_path, and the documented grant
//! script for Supabase's roles (docs/supabase-grants.sql, with row level security).

use employes_sim::{Endpoint, FaultAction, FaultRule};
use employes_sync_e2e::*;

const TOKEN: &str = "eyJhbGciOiJIUzI1NiJ9.SECRET-e2e-token-7f3a9c";

fn setup(name: &str) -> (Cluster, Sim, Client) {
    let mut conf = fast_conf();
    // Every statement in the server log, ALTER SYSTEM SET employes_sync.api_token included.
    conf.push("log_statement = 'all'".into());
    conf.push("log_min_error_statement = 'error'".into());
    let cluster = Cluster::start(name, &conf);
    let sim = Sim::start(SimConfig {
        employees: 12,
        seed: 41,
        rps: 0.0,
        token: TOKEN.into(),
        ..SimConfig::default()
    })
    .unwrap();
    cluster.use_sim(&sim, 300.0);
    let c = cluster.connect();
    (cluster, sim, c)
}

fn connect_as(cluster: &Cluster, user: &str) -> Client {
    Client::connect(
        &format!(
            "host=127.0.0.1 port={} user={user} dbname=postgres",
            cluster.port
        ),
        NoTls,
    )
    .unwrap()
}

fn denied(c: &mut Client, sql: &str) {
    let (code, msg) = sql_error(c, sql, &[]);
    assert_eq!(code, "42501", "{sql}: {msg}");
    assert!(!msg.contains(TOKEN), "{sql}: the token is in the error");
}

#[test]
fn the_token_is_unreadable_to_a_non_superuser_by_every_route() {
    let (cluster, sim, mut c) = setup("sec-token");
    c.batch_execute(
        "CREATE ROLE app LOGIN;
         GRANT EXECUTE ON FUNCTION employes_sync_trigger(text, text, uuid), employes_sync_wait(uuid, integer),
                                   employes_sync_status() TO app;",
    )
    .unwrap();
    // A brand-new backend that has not called anything of the extension yet: the settings are
    // the library's (preloaded), not placeholders anyone could read or set.
    let mut app = connect_as(&cluster, "app");
    for sql in [
        "SHOW employes_sync.api_token",
        "SELECT current_setting('employes_sync.api_token')",
        "SELECT current_setting('employes_sync.api_token', true)",
        "SET employes_sync.api_token = 'x'",
        "SELECT set_config('employes_sync.api_token', 'x', false)",
        "SHOW employes_sync.base_url",
        "SHOW employes_sync.company_id",
        "SELECT * FROM pg_file_settings",
        "SELECT * FROM pg_show_all_file_settings()",
        "SELECT pg_read_file('postgresql.auto.conf')",
        "SELECT pg_read_file('postgresql.conf')",
        "SELECT * FROM employes_sync_sessions",
        "SELECT * FROM employes_sync_logs",
        "ALTER SYSTEM SET employes_sync.api_token = 'x'",
    ] {
        denied(&mut app, sql);
    }
    assert_eq!(
        count(
            &mut app,
            "SELECT count(*) FROM pg_settings WHERE name IN ('employes_sync.api_token', 'employes_sync.base_url', 'employes_sync.company_id')"
        ),
        0
    );
    let show_all = app.simple_query("SHOW ALL").unwrap();
    let text = format!("{show_all:?}");
    assert!(!text.contains(TOKEN) && !text.contains("employes_sync.api_token"));

    // Even a superuser sees it masked, and SHOW ALL / pg_settings do not list it.
    let shown: String = c
        .query_one("SELECT current_setting('employes_sync.api_token')", &[])
        .unwrap()
        .get(0);
    assert_eq!(shown, "********");
    let text = format!("{:?}", c.simple_query("SHOW ALL").unwrap());
    assert!(!text.contains(TOKEN));
    assert_eq!(
        count(
            &mut c,
            &format!("SELECT count(*) FROM pg_settings WHERE setting LIKE '%{TOKEN}%' OR reset_val LIKE '%{TOKEN}%' OR boot_val LIKE '%{TOKEN}%'")
        ),
        0
    );

    // Syncs that succeed and that fail on authentication: the token is in no row and no log.
    let s = trigger(&mut app, "manual", "app@example.org");
    assert_eq!(wait(&mut app, s.id).status, "completed");
    sim.set_faults(vec![FaultRule {
        endpoint: Endpoint::Any,
        page: None,
        employee_ids: None,
        company_id: None,
        every: None,
        skip: 2,
        count: None,
        action: FaultAction::Status {
            status: 401,
            body: Some(serde_json::json!({"message": format!("token {TOKEN} expired")})),
            retry_after: None,
        },
    }]);
    let s = trigger(&mut app, "manual", "app@example.org");
    let s = wait(&mut app, s.id);
    assert_eq!(s.status, "error", "{s:?}");
    // The API echoing the token back is not repeated either.
    let error = s.error.clone().unwrap();
    assert!(error.contains("HTTP 401"), "{error}");
    assert!(
        !error.contains(TOKEN),
        "the token leaked into the session: {error}"
    );
    let status: serde_json::Value = app
        .query_one("SELECT employes_sync_status()", &[])
        .unwrap()
        .get(0);
    assert!(!status.to_string().contains(TOKEN));
    for (table, column) in [
        ("employes_sync_sessions", "t::text"),
        ("employes_sync_logs", "t::text"),
        ("employes_raw_data", "t::text"),
        ("employes_changes", "t::text"),
    ] {
        assert_eq!(
            count(
                &mut c,
                &format!("SELECT count(*) FROM {table} t WHERE strpos({column}, '{TOKEN}') > 0")
            ),
            0,
            "the token is in {table}"
        );
    }
    // A bad base URL set by a superuser: the error names the value, never the token.
    let (code, msg) = sql_error(
        &mut c,
        "ALTER SYSTEM SET employes_sync.base_url = 'file:///etc/passwd'",
        &[],
    );
    assert_eq!(code, "22023", "{msg}");
    let log = cluster.server_log();
    assert!(!log.contains(TOKEN), "the token is in the server log");
    assert!(
        !log.contains("SECRET-e2e"),
        "part of the token is in the server log"
    );
}

#[test]
fn base_url_company_and_limits_are_superuser_only_and_only_http_is_accepted() {
    let (_cluster, _sim, mut c) = setup("sec-ssrf");
    c.batch_execute(
        "CREATE ROLE app LOGIN; GRANT CREATE ON DATABASE postgres TO app;
         GRANT EXECUTE ON FUNCTION employes_sync_trigger(text, text, uuid) TO app;",
    )
    .unwrap();
    let mut app = connect_as(&_cluster, "app");
    for setting in [
        "base_url = 'http://attacker.example/'",
        "company_id = '00000000-0000-0000-0000-000000000000'",
        "api_token = 'x'",
        "requests_per_second = 1000",
        "max_retries = 20",
        "request_timeout_ms = 100",
        "per_page = 1",
    ] {
        denied(&mut app, &format!("SET employes_sync.{setting}"));
        denied(
            &mut app,
            &format!("ALTER ROLE app SET employes_sync.{setting}"),
        );
        denied(
            &mut app,
            &format!("ALTER DATABASE postgres SET employes_sync.{setting}"),
        );
        denied(
            &mut app,
            &format!("ALTER SYSTEM SET employes_sync.{setting}"),
        );
    }
    denied(
        &mut app,
        "SELECT set_config('employes_sync.base_url', 'http://attacker.example/', false)",
    );
    denied(
        &mut app,
        "CREATE FUNCTION redirect() RETURNS int LANGUAGE sql SET employes_sync.base_url = 'http://attacker.example/' AS 'SELECT 1'",
    );
    // Superuser: only http and https, with a host and no credentials in the URL.
    for url in [
        "file:///etc/passwd",
        "ftp://example.org/v4",
        "gopher://example.org/",
        "javascript:alert(1)",
        "http://",
        "http://user:pass@example.org/v4",
        "https://exa mple.org/v4",
        "example.org/v4",
    ] {
        let (code, msg) = sql_error(
            &mut c,
            &format!("ALTER SYSTEM SET employes_sync.base_url = '{url}'"),
            &[],
        );
        assert_eq!(code, "22023", "{url}: {msg}");
    }
    c.batch_execute("ALTER SYSTEM SET employes_sync.base_url = 'HTTPS://connect.employes.nl/v4'")
        .unwrap();
}

#[test]
fn public_gets_nothing_and_an_ungranted_role_can_do_nothing() {
    let (cluster, _sim, mut c) = setup("sec-public");
    // Only the two JSON helpers the views call with the caller's rights stay executable.
    let public_functions: Vec<String> = c
        .query(
            "SELECT p.oid::regprocedure::text FROM pg_depend d JOIN pg_proc p ON p.oid = d.objid
              WHERE d.refclassid = 'pg_extension'::regclass
                AND d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'employes_sync')
                AND d.classid = 'pg_proc'::regclass
                AND (p.proacl IS NULL OR EXISTS (SELECT 1 FROM aclexplode(p.proacl) a WHERE a.grantee = 0))
              ORDER BY 1",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        public_functions,
        ["employes_sync_jdate(jsonb)", "employes_sync_jnum(jsonb)"]
    );
    assert_eq!(
        count(
            &mut c,
            "SELECT count(*) FROM pg_depend d JOIN pg_class c ON c.oid = d.objid
              WHERE d.refclassid = 'pg_extension'::regclass
                AND d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'employes_sync')
                AND d.classid = 'pg_class'::regclass
                AND EXISTS (SELECT 1 FROM aclexplode(c.relacl) a WHERE a.grantee = 0)"
        ),
        0
    );
    c.batch_execute("CREATE ROLE nobody LOGIN").unwrap();
    let mut nobody = connect_as(&cluster, "nobody");
    for sql in [
        "SELECT employes_sync_trigger()",
        "SELECT employes_sync_trigger('manual', 'x')",
        "SELECT employes_sync_wait(gen_random_uuid())",
        "SELECT employes_sync_cancel(gen_random_uuid())",
        "SELECT employes_sync_status()",
        "SELECT employes_sync_scheduler_status()",
        "SELECT employes_sync_schedule('0 * * * *')",
        "SELECT employes_sync_unschedule()",
        "SELECT employes_sync_reap_stale()",
        "SELECT employes_sync_launch_worker(gen_random_uuid(), '1')",
        "SELECT employes_employee_as_of('x')",
        "SELECT employes_timeline_apply(NULL, '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}')",
        "SELECT * FROM employes_sync_sessions",
        "SELECT * FROM employes_sync_logs",
        "SELECT * FROM employes_raw_data",
        "SELECT * FROM employes_changes",
        "SELECT * FROM employes_timeline",
        "SELECT * FROM employes_current",
        "SELECT * FROM employes_recent_changes",
        "INSERT INTO employes_sync_sessions (source, triggered_by) VALUES ('manual', 'x')",
        "UPDATE employes_sync_sessions SET status = 'error'",
        "DELETE FROM employes_raw_data",
    ] {
        denied(&mut nobody, sql);
    }
    assert_eq!(
        count(&mut c, "SELECT count(*) FROM employes_sync_sessions"),
        0
    );
}

#[test]
fn definer_functions_pin_search_path_and_ignore_functions_planted_by_the_caller() {
    let (cluster, _sim, mut c) = setup("sec-path");
    let insecure: Vec<String> = c
        .query(
            "SELECT p.oid::regprocedure::text FROM pg_proc p
              WHERE p.proname IN ('employes_sync_trigger', 'employes_sync_wait', 'employes_sync_cancel',
                                  'employes_sync_status', 'employes_sync_schedule', 'employes_sync_unschedule',
                                  'employes_sync_scheduler_status', 'employes_sync_reap_stale',
                                  'employes_forget_employee', 'employes_unforget_employee')
                AND NOT (p.prosecdef AND p.proconfig = ARRAY['search_path=pg_catalog, public, pg_temp'])",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(
        insecure.is_empty(),
        "not SECURITY DEFINER with a pinned search_path: {insecure:?}"
    );

    c.batch_execute(
        "CREATE ROLE app LOGIN; GRANT CREATE ON DATABASE postgres TO app;
         GRANT EXECUTE ON FUNCTION employes_sync_trigger(text, text, uuid), employes_sync_wait(uuid, integer),
                                   employes_sync_status() TO app;",
    )
    .unwrap();
    let mut app = connect_as(&cluster, "app");
    // Shadows of everything the trigger calls, ahead of pg_catalog and public in the caller's path.
    app.batch_execute(
        "CREATE SCHEMA app;
         SET search_path = app, pg_catalog, public;
         CREATE TABLE app.pwned (what text);
         CREATE TABLE app.employes_sync_logs (session_id uuid, level text, step text, message text, details jsonb);
         CREATE FUNCTION app.employes_sync_reap_stale() RETURNS integer LANGUAGE sql
             AS $$ INSERT INTO app.pwned VALUES ('reap_stale') RETURNING 0 $$;
         CREATE FUNCTION app.employes_sync_launch_worker(uuid, text) RETURNS integer LANGUAGE sql
             AS $$ INSERT INTO app.pwned VALUES ('launch_worker') RETURNING 0 $$;
         CREATE FUNCTION app.pg_advisory_xact_lock(integer, integer) RETURNS void LANGUAGE sql
             AS $$ INSERT INTO app.pwned VALUES ('advisory_lock') $$;
         CREATE FUNCTION app.pg_current_xact_id() RETURNS xid8 LANGUAGE sql
             AS $$ INSERT INTO app.pwned VALUES ('xact_id') RETURNING '1'::xid8 $$;
         CREATE FUNCTION app.clock_timestamp() RETURNS timestamptz LANGUAGE sql
             AS $$ INSERT INTO app.pwned VALUES ('clock') RETURNING now() $$;
         CREATE FUNCTION app.current_setting(text, boolean) RETURNS text LANGUAGE sql
             AS $$ INSERT INTO app.pwned VALUES ('current_setting') RETURNING NULL::text $$;
         CREATE FUNCTION app.format(text, text, text) RETURNS text LANGUAGE sql
             AS $$ INSERT INTO app.pwned VALUES ('format') RETURNING $1 $$;
         CREATE FUNCTION app.jsonb_build_object(text, text, text, text) RETURNS jsonb LANGUAGE sql
             AS $$ INSERT INTO app.pwned VALUES ('jsonb_build_object') RETURNING '{}'::jsonb $$;",
    )
    .unwrap();
    let s = trigger(&mut app, "manual", "planter@example.org");
    let s = wait(&mut app, s.id);
    assert_eq!(s.status, "completed", "{s:?}");
    let status: serde_json::Value = app
        .query_one("SELECT employes_sync_status()", &[])
        .unwrap()
        .get(0);
    assert_eq!(status["state"], "current", "{status}");
    assert_eq!(count(&mut app, "SELECT count(*) FROM app.pwned"), 0);
    assert_eq!(
        count(&mut app, "SELECT count(*) FROM app.employes_sync_logs"),
        0
    );
    assert!(count(&mut c, "SELECT count(*) FROM employes_sync_logs") > 0);
}

fn as_role(c: &mut Client, role: &str, sql: &str) -> Result<Vec<Row>, postgres::Error> {
    c.batch_execute(&format!("RESET ROLE; SET ROLE {role}"))
        .unwrap();
    let r = c.query(sql, &[]);
    c.batch_execute("RESET ROLE").unwrap();
    r
}

fn role_denied(c: &mut Client, role: &str, sql: &str) {
    let e = as_role(c, role, sql)
        .err()
        .unwrap_or_else(|| panic!("{role}: {sql} should fail"));
    assert_eq!(
        e.code().map(|s| s.code()),
        Some("42501"),
        "{role}: {sql}: {e}"
    );
}

#[test]
fn supabase_grant_script_gives_each_role_exactly_its_rights_with_row_level_security() {
    let (_cluster, _sim, mut c) = setup("sec-supabase");
    // Supabase's roles, and its default privileges: every role gets everything in public.
    c.batch_execute(
        "CREATE ROLE anon NOLOGIN; CREATE ROLE authenticated NOLOGIN; CREATE ROLE service_role NOLOGIN;
         GRANT USAGE ON SCHEMA public TO anon, authenticated, service_role;
         GRANT ALL ON ALL TABLES IN SCHEMA public TO anon, authenticated, service_role;
         GRANT ALL ON ALL FUNCTIONS IN SCHEMA public TO anon, authenticated, service_role;",
    )
    .unwrap();
    let script = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/supabase-grants.sql"
    ))
    .unwrap();
    c.batch_execute(&script).unwrap();
    // Idempotent.
    c.batch_execute(&script).unwrap();
    let first = sync(&mut c);
    assert_eq!(first.status, "completed");
    let raw = count(&mut c, "SELECT count(*) FROM employes_raw_data");
    let changes = count(&mut c, "SELECT count(*) FROM employes_changes");
    assert!(raw > 0 && changes > 0);

    for sql in [
        "SELECT employes_sync_trigger()",
        "SELECT employes_sync_status()",
        "SELECT employes_sync_wait(gen_random_uuid())",
        "SELECT * FROM employes_sync_sessions",
        "SELECT * FROM employes_raw_data",
        "SELECT * FROM employes_changes",
        "SELECT * FROM employes_current",
        "SELECT * FROM employes_timeline",
        "SELECT * FROM employes_sync_companies",
        "SELECT * FROM employes_sync_company_tokens",
        "SELECT employes_sync_add_company(gen_random_uuid())",
    ] {
        role_denied(&mut c, "anon", sql);
    }
    for sql in [
        "SELECT employes_sync_wait(gen_random_uuid())",
        "SELECT employes_sync_cancel(gen_random_uuid())",
        "SELECT employes_sync_schedule('0 * * * *')",
        "SELECT employes_sync_unschedule()",
        "SELECT employes_sync_reap_stale()",
        "SELECT employes_sync_launch_worker(gen_random_uuid(), '1')",
        "SELECT employes_employee_as_of('x')",
        "SELECT employes_timeline_apply(NULL, '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}')",
        "SELECT employes_forget_employee('x')",
        "SELECT * FROM employes_erasures",
        "SELECT * FROM employes_former_employees",
        "SELECT * FROM employes_webhook_deliveries",
        "SELECT * FROM employes_sync_logs",
        "SELECT * FROM employes_sync_companies",
        "SELECT * FROM employes_sync_company_settings",
        "SELECT * FROM employes_sync_company_tokens",
        "SELECT * FROM employes_sync_session_companies",
        "SELECT employes_sync_add_company(gen_random_uuid())",
        "SELECT employes_sync_set_company_token(gen_random_uuid(), 'xxxxxxxxxx')",
    ] {
        role_denied(&mut c, "authenticated", sql);
    }
    // authenticated: the panel, and a trigger recorded with the JWT's email.
    c.batch_execute(
        "SET request.jwt.claims = '{\"email\": \"user@example.org\", \"role\": \"authenticated\"}'",
    )
    .unwrap();
    let rows = as_role(
        &mut c,
        "authenticated",
        &format!("SELECT {SESSION_COLUMNS} FROM employes_sync_trigger('manual')"),
    )
    .unwrap();
    let s = Session::from(&rows[0]);
    assert_eq!(s.triggered_by, "user@example.org");
    c.batch_execute("RESET request.jwt.claims").unwrap();
    assert_eq!(wait(&mut c, s.id).status, "completed");
    let panel = as_role(&mut c, "authenticated", "SELECT employes_sync_status()").unwrap();
    let panel: serde_json::Value = panel[0].get(0);
    assert_eq!(panel["state"], "current", "{panel}");
    as_role(
        &mut c,
        "authenticated",
        "SELECT employes_sync_scheduler_status()",
    )
    .unwrap();

    // Row level security: authenticated may read the HR panel's tables and views, and sees no
    // row of them without the HR claim (tests/tests/personal_data.rs checks both sides).
    for table in [
        "employes_raw_data",
        "employes_changes",
        "employes_events",
        "employes_timeline",
        "employes_current",
        "employes_recent_changes",
        "employes_sync_sessions",
    ] {
        let rows = as_role(
            &mut c,
            "authenticated",
            &format!("SELECT count(*) FROM {table}"),
        )
        .unwrap();
        assert_eq!(
            rows[0].get::<_, i64>(0),
            0,
            "{table} visible to authenticated"
        );
    }

    // service_role: everything.
    let n = as_role(
        &mut c,
        "service_role",
        "SELECT count(*) FROM employes_raw_data",
    )
    .unwrap();
    assert_eq!(n[0].get::<_, i64>(0), raw);
    let n = as_role(
        &mut c,
        "service_role",
        "SELECT count(*) FROM employes_changes",
    )
    .unwrap();
    assert_eq!(n[0].get::<_, i64>(0), changes);
    let events = count(&mut c, "SELECT count(*) FROM employes_events");
    assert!(events > 0);
    let n = as_role(
        &mut c,
        "service_role",
        "SELECT count(*) FROM employes_events_since(0, 100000)",
    )
    .unwrap();
    assert_eq!(n[0].get::<_, i64>(0), events);
    for sql in [
        "SELECT count(*) FROM employes_sync_sessions",
        "SELECT count(*) FROM employes_sync_logs",
        "SELECT count(*) FROM employes_current",
        "SELECT count(*) FROM employes_recent_changes",
        "SELECT count(*) FROM employes_timeline",
        "SELECT employes_employee_as_of(employee_id) FROM employes_current LIMIT 1",
        "SELECT employes_sync_status()",
        "SELECT employes_sync_schedule('0 3 * * *')",
        "SELECT employes_sync_unschedule()",
        "SELECT count(*) FROM employes_sync_companies",
        "SELECT count(*) FROM employes_sync_session_companies",
        "SELECT count(*) FROM employes_events_since(0)",
    ] {
        as_role(&mut c, "service_role", sql).unwrap_or_else(|e| panic!("service_role: {sql}: {e}"));
    }
    // Companies are managed by the admin; tokens are read by nobody but a superuser.
    for sql in [
        "SELECT * FROM employes_sync_company_tokens",
        "SELECT * FROM employes_sync_company_settings",
        "SELECT employes_sync_add_company(gen_random_uuid())",
        "SELECT employes_sync_remove_company(gen_random_uuid())",
        "SELECT employes_sync_pause_company(gen_random_uuid())",
        "SELECT employes_sync_set_company_token(gen_random_uuid(), 'xxxxxxxxxx')",
        "SELECT employes_webhook_subscribe('https://x.example/h')",
        "SELECT * FROM employes_webhook_subscriptions",
        "SELECT * FROM employes_webhooks",
    ] {
        role_denied(&mut c, "service_role", sql);
    }
    let rows = as_role(
        &mut c,
        "service_role",
        &format!("SELECT {SESSION_COLUMNS} FROM employes_sync_trigger('api', 'backoffice')"),
    )
    .unwrap();
    let s = Session::from(&rows[0]);
    as_role(
        &mut c,
        "service_role",
        &format!("SELECT employes_sync_wait('{}', 60)", s.id),
    )
    .unwrap();
    // The worker still writes with RLS on.
    assert_eq!(session(&mut c, s.id).status, "completed");
}

#[test]
fn triggered_by_is_bounded_and_free_of_control_characters() {
    let (_cluster, _sim, mut c) = setup("sec-by");
    let long = "a".repeat(321);
    for by in [
        long.as_str(),
        "",
        "evil\nINFO: forged",
        "tab\there",
        "esc\u{1b}[31m",
        "nul\u{7f}",
    ] {
        let (code, msg) = sql_error(&mut c, "SELECT employes_sync_trigger('manual', $1)", &[&by]);
        assert_eq!(code, "22023", "{by:?}: {msg}");
    }
    // The same through the JWT claim.
    for email in [
        format!("{}@x.org", "b".repeat(320)),
        "a\u{7}b@x.org".to_string(),
    ] {
        let claims = serde_json::json!({ "email": email }).to_string();
        c.execute(
            "SELECT set_config('request.jwt.claims', $1, false)",
            &[&claims],
        )
        .unwrap();
        let (code, msg) = sql_error(&mut c, "SELECT employes_sync_trigger('manual')", &[]);
        assert_eq!(code, "22023", "{email:?}: {msg}");
    }
    // Claims that are not JSON fall back to the role.
    c.batch_execute("SET request.jwt.claims = 'not json'")
        .unwrap();
    assert_eq!(
        count(&mut c, "SELECT count(*) FROM employes_sync_sessions"),
        0,
        "a rejected trigger records nothing"
    );
    let s = c
        .query_one(
            &format!("SELECT {SESSION_COLUMNS} FROM employes_sync_trigger('manual')"),
            &[],
        )
        .unwrap();
    let s = Session::from(&s);
    assert_eq!(s.triggered_by, "postgres");
    assert_eq!(wait(&mut c, s.id).status, "completed");
    let max = "m".repeat(320);
    let s = trigger(&mut c, "manual", &max);
    assert_eq!(s.triggered_by, max);
    assert_eq!(wait(&mut c, s.id).status, "completed");
}
