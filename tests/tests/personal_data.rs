//! Personal data, as a DPO and an HR panel use it: erasure of a former employee that a full
//! `pg_dump` proves complete, a later sync that does not bring them back, retention run by the
//! watchdog, row level security on every table and view with the Supabase recipe's HR claim,
//! the token's expiry warned about before it stops the syncs, and no personal value in the
//! server log, `pg_stat_activity` or NOTIFY payloads.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use employes_sim::{Endpoint, FaultAction, FaultRule, Sim};
use employes_sync_e2e::*;
use postgres::fallible_iterator::FallibleIterator;
use postgres::Client;
use serde_json::Value;

fn setup(name: &str, employees: usize, extra: &[String]) -> (Cluster, Sim, Client) {
    let cluster = Cluster::start(name, extra);
    let sim = sim(employees, 7, 300.0);
    cluster.use_sim(&sim, 250.0);
    let c = cluster.connect();
    (cluster, sim, c)
}

/// What identifies a person in their record: the values a dump must not hold once they are
/// forgotten.
#[derive(Debug, Clone)]
struct Person {
    id: String,
    values: Vec<String>,
}

fn person_of(record: &Value) -> Person {
    let s = |k: &str| record[k].as_str().unwrap_or("").trim().to_owned();
    let mut values = vec![
        s("id"),
        s("email"),
        s("iban"),
        s("street"),
        s("phone_number"),
        s("surname"),
        s("first_name"),
        s("date_of_birth").chars().take(10).collect(),
    ];
    values.retain(|v| v.len() >= 4);
    Person {
        id: s("id"),
        values,
    }
}

/// Active employees of the simulator with an email, IBAN, street, birth date and name that
/// occur in no other employee's record (so that finding one in a dump can only mean this
/// person); each keeps only their values that no other record holds (two people may share a
/// surname).
fn distinct_people(sim: &Sim) -> Vec<(usize, Person)> {
    let dump = sim.dump();
    let all = dump["employees"].as_array().unwrap();
    let texts: Vec<String> = all.iter().map(|e| e.to_string()).collect();
    all.iter()
        .enumerate()
        .filter(|(_, e)| e["record"]["status"] == "active")
        .filter_map(|(i, e)| {
            let mut p = person_of(&e["record"]);
            let needed = [0, 1, 2, 3, 7].map(|k| p.values.get(k).cloned());
            p.values.retain(|v| {
                texts
                    .iter()
                    .enumerate()
                    .all(|(j, t)| j == i || !t.contains(v.as_str()))
            });
            let complete = needed
                .iter()
                .all(|v| v.as_ref().is_some_and(|v| p.values.contains(v)));
            (complete && p.values.len() >= 5).then_some((i, p))
        })
        .collect()
}

/// Whether `v` occurs in `text`: a name or street as a whole word (not "Mark" in "Marks"),
/// anything else (ids, emails, IBANs, phones, dates) anywhere.
fn contains_value(text: &str, v: &str) -> bool {
    if !v.chars().all(|c| c.is_alphabetic() || c == ' ') {
        return text.contains(v);
    }
    text.match_indices(v).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = text[at + v.len()..].chars().next();
        !before.is_some_and(char::is_alphanumeric) && !after.is_some_and(char::is_alphanumeric)
    })
}

/// The values of `p` found in `text`.
fn found_in<'a>(p: &'a Person, text: &str) -> Vec<&'a str> {
    p.values
        .iter()
        .filter(|v| contains_value(text, v))
        .map(String::as_str)
        .collect()
}

fn full_dump(cluster: &Cluster, file: &str) -> String {
    let path = cluster.pg_dump("p", file);
    std::fs::read_to_string(path).unwrap()
}

fn scalar<T: postgres::types::FromSqlOwned>(c: &mut Client, sql: &str) -> T {
    c.query_one(sql, &[]).unwrap().get(0)
}

#[test]
fn forgetting_a_former_employee_leaves_none_of_their_values_in_a_full_dump_and_no_sync_brings_them_back(
) {
    let (cluster, sim, mut c) = setup("pd-forget", 80, &[]);
    let people = distinct_people(&sim);
    assert!(people.len() >= 3, "{people:?}");
    let (left_i, left) = people[0].clone();
    let (out_i, out) = people[1].clone();
    let (_, active) = people[2].clone();
    let email = sim.dump()["employees"][out_i]["record"]["email"]
        .as_str()
        .unwrap()
        .trim()
        .to_owned();
    // Their ids end up in log lines and the session's error: their history fails once.
    sim.set_faults(vec![FaultRule {
        employee_ids: Some(vec![left.id.clone(), out.id.clone()]),
        count: Some(2),
        ..rule(
            Endpoint::Employments,
            FaultAction::Status {
                status: 400,
                body: None,
                retry_after: None,
            },
        )
    }]);
    let first = sync(&mut c);
    assert_eq!(first.status, "partial", "{first:?}");
    assert!(
        first.error.as_deref().unwrap_or("").contains(&left.id)
            || first.error.as_deref().unwrap_or("").contains(&out.id)
    );
    sim.clear_faults();
    // Undelivered webhook payloads: a receiver nobody runs.
    c.batch_execute("SELECT employes_webhook_subscribe('http://127.0.0.1:9/hooks')")
        .unwrap();
    // A raise for both, then one leaves Employes and the other is "out of service", still listed.
    let mut data = sim.dump();
    for i in [left_i, out_i] {
        let r = &mut data["employees"][i]["record"];
        r["yearly_wage"] = serde_json::json!(99_999.5);
    }
    sim.load(data.clone()).unwrap();
    assert_eq!(sync(&mut c).status, "completed");
    data["employees"][out_i]["record"]["status"] = "out of service".into();
    data["employees"].as_array_mut().unwrap().remove(left_i);
    sim.load(data.clone()).unwrap();
    let s = sync(&mut c);
    assert_eq!(
        (s.status.as_str(), s.employees_deleted),
        ("completed", 1),
        "{s:?}"
    );
    let theirs = format!(
        "SELECT count(*) FROM employes_webhook_deliveries d JOIN employes_events e ON e.id = d.event_id
          WHERE d.status = 'pending' AND e.employee_id IN ('{}', '{}')",
        left.id, out.id
    );
    wait_until(Duration::from_secs(30), "their deliveries queued", || {
        count(&mut c, &theirs) >= 2
    });
    let former: BTreeSet<String> = c
        .query("SELECT employee_id FROM employes_former_employees", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(
        former.contains(&left.id) && former.contains(&out.id),
        "{former:?}"
    );
    assert!(!former.contains(&active.id));

    let before = full_dump(&cluster, "before.sql");
    for p in [&left, &out] {
        assert_eq!(
            found_in(p, &before).len(),
            p.values.len(),
            "the dump holds {p:?}"
        );
    }

    // Refused, changing nothing: an active employee, an unknown one, NULL, a reason that names
    // the person, a sync running.
    let (code, msg, hint) =
        sql_error_with_hint(&mut c, "SELECT employes_forget_employee($1)", &[&active.id]);
    assert_eq!(code, "55000", "{msg}");
    assert!(
        msg.contains("still listed by Employes as current (status active)"),
        "{msg}"
    );
    assert!(hint
        .unwrap_or_default()
        .contains("employes_former_employees"));
    let (code, _) = sql_error(
        &mut c,
        "SELECT employes_forget_employee('no-such-employee')",
        &[],
    );
    assert_eq!(code, "P0002");
    let (code, _) = sql_error(&mut c, "SELECT employes_forget_employee(NULL)", &[]);
    assert_eq!(code, "22023");

    let (code, msg) = sql_error(
        &mut c,
        "SELECT employes_forget_employee($1, NULL, $2)",
        &[&out.id, &format!("asked by {email}")],
    );
    assert_eq!(code, "22023", "{msg}");
    assert!(!msg.contains(&email), "{msg}");
    sim.set_latency(30, 0);
    let running = trigger(&mut c, "manual", "dpo@example.org");
    let (code, _) = sql_error(&mut c, "SELECT employes_forget_employee($1)", &[&left.id]);
    assert_eq!(code, "PT409");
    assert_eq!(wait(&mut c, running.id).status, "completed");
    sim.set_latency(0, 0);
    assert_eq!(
        found_in(&left, &full_dump(&cluster, "refused.sql")).len(),
        left.values.len()
    );

    // Forgotten: one who left, one still listed as out of service, by two erasures at once (the
    // second waits for the first to commit; neither deadlocks).
    let company = sim.company_id();
    let forget = "SELECT id, erased_by, how, reason, rows_removed FROM employes_forget_employee($1, $2::text::uuid, 'request of 2026-11-30, ticket 1234')";
    let mut first = cluster.connect();
    let mut tx = first.transaction().unwrap();
    let row_left = tx.query_one(forget, &[&left.id, &None::<String>]).unwrap();
    let second = {
        let (mut c2, id, company) = (cluster.connect(), out.id.clone(), company.clone());
        std::thread::spawn(move || c2.query_one(forget, &[&id, &Some(company)]))
    };
    wait_until(Duration::from_secs(10), "the second erasure waits", || {
        count(
            &mut c,
            "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
              WHERE NOT l.granted AND l.relation = 'employes_sync_sessions'::regclass
                AND a.query LIKE '%employes_forget_employee%'",
        ) == 1
    });
    tx.commit().unwrap();
    let row_out = second.join().unwrap().unwrap();
    for row in [row_left, row_out] {
        let rows: Value = row.get(4);
        eprintln!("forgotten: {rows}");
        assert_eq!(row.get::<_, String>(1), "postgres");
        assert_eq!(row.get::<_, String>(2), "manual");
        for k in [
            "raw_versions",
            "changes",
            "events",
            "timeline_events",
            "webhook_deliveries",
            "pending_deliveries",
            "log_lines",
        ] {
            assert!(rows[k].as_i64().unwrap() > 0, "{k}: {rows}");
        }
    }
    let after = full_dump(&cluster, "after.sql");
    for p in [&left, &out] {
        assert_eq!(
            found_in(p, &after),
            Vec::<&str>::new(),
            "a full dump still holds values of {}",
            p.id
        );
    }
    assert_eq!(found_in(&active, &after).len(), active.values.len());
    assert!(after.contains("[erased]"));
    assert_history_consistent(&mut c);
    assert_eq!(
        count(&mut c, "SELECT count(*) FROM employes_erasures WHERE tag IS NOT NULL AND reason LIKE 'request of%'"),
        2
    );
    // Forgetting again: nobody left to forget.
    let (code, _) = sql_error(&mut c, "SELECT employes_forget_employee($1)", &[&left.id]);
    assert_eq!(code, "P0002");

    // The API still lists the one out of service: later syncs skip them, and say so.
    let s = sync(&mut c);
    assert_eq!(s.status, "completed", "{s:?}");
    assert_eq!(
        count(
            &mut c,
            &format!(
                "SELECT count(*) FROM employes_raw_data WHERE employee_id = '{}'",
                out.id
            )
        ),
        0
    );
    assert_eq!(
        count(&mut c, &format!(
            "SELECT count(*) FROM employes_sync_logs WHERE session_id = '{}' AND message LIKE '1 listed employee(s) were erased earlier%'",
            s.id
        )),
        1
    );
    sim.advance();
    assert_eq!(sync(&mut c).status, "completed");
    assert_eq!(
        found_in(&out, &full_dump(&cluster, "later.sql")),
        Vec::<&str>::new()
    );
    // Webhooks: a delivery of theirs that was pending is gone, the others stay.
    assert_eq!(
        count(&mut c, &format!(
            "SELECT count(*) FROM employes_webhook_deliveries d JOIN employes_events e ON e.id = d.event_id WHERE e.employee_id IN ('{}', '{}')",
            left.id, out.id
        )),
        0
    );

    // A dump restored on another server keeps the erasure: the key and the tags come along, and
    // a sync there skips the one Employes still lists.
    let dump = cluster.pg_dump("c", "erased.dump");
    let target = Cluster::start_with("pd-forget-restored", &[], &bin(), false);
    target.restore(&dump, "c");
    target.use_sim(&sim, 250.0);
    let mut t = target.connect();
    let s = sync(&mut t);
    assert_eq!(s.status, "completed", "{s:?}");
    assert_eq!(
        count(
            &mut t,
            &format!(
                "SELECT count(*) FROM employes_raw_data WHERE employee_id = '{}'",
                out.id
            )
        ),
        0
    );
    assert_eq!(
        found_in(&out, &full_dump(&target, "restored.sql")),
        Vec::<&str>::new()
    );
    drop(t);
    drop(target);

    // Bad arguments change nothing.
    let long = "x".repeat(501);
    for (sql, params) in [
        (
            "SELECT employes_forget_employee($1, NULL, $2)",
            vec![active.id.clone(), long],
        ),
        (
            "SELECT employes_forget_employee($1, NULL, $2)",
            vec![active.id.clone(), "a\nb".to_owned()],
        ),
        (
            "SELECT employes_forget_employee($1, NULL, $2)",
            vec!["  ".to_owned(), "x".to_owned()],
        ),
        (
            "SELECT employes_unforget_employee($1, NULL)",
            vec![out.id.clone()],
        ),
    ] {
        let params: Vec<&(dyn postgres::types::ToSql + Sync)> = params
            .iter()
            .map(|p| p as &(dyn postgres::types::ToSql + Sync))
            .collect();
        let (code, msg) = sql_error(&mut c, sql, &params);
        assert_eq!(code, "22023", "{sql}: {msg}");
    }
    assert_eq!(
        count(
            &mut c,
            "SELECT count(*) FROM employes_erasures WHERE tag IS NOT NULL"
        ),
        2
    );

    // Hired again: let back, the next sync stores them as new.
    let (code, _) = sql_error(
        &mut c,
        "SELECT employes_unforget_employee($1, $2::text::uuid)",
        &[&active.id, &company],
    );
    assert_eq!(code, "P0002");
    c.execute(
        "SELECT employes_unforget_employee($1, $2::text::uuid)",
        &[&out.id, &company],
    )
    .unwrap();
    let s = sync(&mut c);
    assert_eq!(s.status, "completed", "{s:?}");
    assert_eq!(
        count(&mut c, &format!(
            "SELECT count(*) FROM employes_changes WHERE employee_id = '{}' AND change_type = 'created'",
            out.id
        )),
        2
    );
    assert_history_consistent(&mut c);
}

#[test]
fn the_watchdog_applies_both_retention_settings_and_logs_what_it_did() {
    let (cluster, sim, mut c) = setup(
        "pd-retention",
        30,
        &["employes_sync.housekeeping_interval = 1".into()],
    );
    let people = distinct_people(&sim);
    let (gone_i, gone) = people[0].clone();
    assert_eq!(sync(&mut c).status, "completed");
    // A raise for everyone (superseded versions), and one employee whose employment ended long
    // ago leaves Employes.
    let mut data = sim.dump();
    for e in data["employees"].as_array_mut().unwrap() {
        e["record"]["yearly_wage"] = serde_json::json!(12_345.5);
    }
    data["employees"][gone_i]["record"]["employment"] =
        serde_json::json!({"start_date": "2015-01-01T00:00:00", "end_date": "2020-01-31T00:00:00"});
    sim.load(data.clone()).unwrap();
    assert_eq!(sync(&mut c).status, "completed");
    data["employees"].as_array_mut().unwrap().remove(gone_i);
    sim.load(data).unwrap();
    let s = sync(&mut c);
    assert_eq!(s.employees_deleted, 1, "{s:?}");
    let left_on: String = c
        .query_one(
            "SELECT left_on::text FROM employes_former_employees WHERE employee_id = $1",
            &[&gone.id],
        )
        .unwrap()
        .get(0);
    assert_eq!(left_on, "2020-01-31");
    // Superseded versions, as if superseded 3 days ago.
    let superseded = c
        .execute(
            "UPDATE employes_raw_data r SET valid_from = valid_from - interval '3 days', valid_to = valid_to - interval '3 days'
              WHERE valid_to IS NOT NULL
                AND EXISTS (SELECT 1 FROM employes_raw_data n WHERE (n.company_id, n.kind, n.employee_id) = (r.company_id, r.kind, r.employee_id)
                              AND n.version = r.version + 1)",
            &[],
        )
        .unwrap() as i64;
    assert!(superseded >= 30);
    // Who is due: the one who left, and those the simulator has "out of service" since long ago.
    let due: Vec<String> = c
        .query(
            "SELECT employee_id FROM employes_former_employees WHERE left_on < current_date - 365 ORDER BY 1",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(due.contains(&gone.id), "{due:?}");
    let kept_values = count(
        &mut c,
        &format!(
            "SELECT count(*) FROM employes_changes WHERE (old_value IS NOT NULL OR new_value IS NOT NULL)
               AND employee_id NOT IN ('{}')",
            due.join("', '")
        ),
    );

    for sql in [
        "ALTER SYSTEM SET employes_sync.raw_retention_days = 2",
        "ALTER SYSTEM SET employes_sync.former_employee_retention_days = 365",
        "SELECT pg_reload_conf()",
    ] {
        c.batch_execute(sql).unwrap();
    }
    wait_until(Duration::from_secs(30), "retention applied", || {
        count(
            &mut c,
            "SELECT count(*) FROM employes_erasures WHERE how = 'retention'",
        ) == due.len() as i64
            && count(
                &mut c,
                "SELECT count(*) FROM employes_raw_data WHERE payload IS NULL",
            ) > 0
    });
    // Only superseded versions lost their payload (the forgotten employee's are gone whole).
    let removed = count(
        &mut c,
        "SELECT count(*) FROM employes_raw_data WHERE payload IS NULL",
    );
    assert_eq!(
        removed,
        count(
            &mut c,
            "SELECT count(*) FROM employes_raw_data r WHERE valid_to IS NOT NULL
               AND EXISTS (SELECT 1 FROM employes_raw_data n WHERE (n.company_id, n.kind, n.employee_id) = (r.company_id, r.kind, r.employee_id)
                             AND n.version = r.version + 1)"
        )
    );
    assert_eq!(
        count(
            &mut c,
            "SELECT count(*) FROM employes_raw_data WHERE valid_to IS NULL AND payload IS NULL"
        ),
        0
    );
    assert_eq!(
        count(&mut c, "SELECT count(*) FROM employes_current"),
        count(
            &mut c,
            "SELECT count(*) FROM employes_current WHERE full_name <> ''"
        )
    );
    // The changes keep what changed: every value of those not forgotten.
    assert_eq!(
        count(&mut c, "SELECT count(*) FROM employes_changes WHERE old_value IS NOT NULL OR new_value IS NOT NULL"),
        kept_values
    );
    assert_eq!(
        count(
            &mut c,
            &format!(
                "SELECT count(*) FROM employes_raw_data WHERE employee_id IN ('{}')",
                due.join("', '")
            )
        ),
        0
    );
    let reason: String = scalar(
        &mut c,
        "SELECT DISTINCT reason || ' by ' || erased_by FROM employes_erasures",
    );
    assert_eq!(
        reason,
        "former_employee_retention_days = 365 by employes_sync watchdog"
    );
    assert_eq!(
        found_in(&gone, &full_dump(&cluster, "retained.sql")),
        Vec::<&str>::new()
    );
    wait_until(Duration::from_secs(10), "logged", || {
        let log = cluster.server_log();
        log.contains("raw_retention_days = 2: removed the payload of")
            && log.contains(&format!(
                "former_employee_retention_days = 365: forgot {} former employee(s)",
                due.len()
            ))
    });
    assert_eq!(
        count(
            &mut c,
            "SELECT count(*) FROM employes_sync_logs WHERE step IN ('retention', 'erasure')"
        ),
        1 + due.len() as i64
    );
    // Idempotent: nothing more to do in the next rounds, and the next sync still works.
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(
        count(
            &mut c,
            "SELECT count(*) FROM employes_sync_logs WHERE step IN ('retention', 'erasure')"
        ),
        1 + due.len() as i64
    );
    sim.advance();
    assert_eq!(sync(&mut c).status, "completed");
    assert_history_consistent(&mut c);
}

/// A JWT with this `exp`, unsigned (the extension reads the claim, never checks the signature).
fn jwt(exp: i64) -> String {
    format!(
        "{}.{}.c2ln",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"HS256","typ":"JWT"}"#),
        URL_SAFE_NO_PAD.encode(format!(r#"{{"sub":"employes","exp":{exp}}}"#))
    )
}

fn set_token(cluster: &Cluster, c: &mut Client, token: &str) {
    c.batch_execute(&format!(
        "ALTER SYSTEM SET employes_sync.api_token = '{token}'"
    ))
    .unwrap();
    c.batch_execute("SELECT pg_reload_conf()").unwrap();
    wait_until(Duration::from_secs(10), "token reloaded", || {
        let mut n = cluster.connect();
        let e: Option<chrono::DateTime<chrono::Utc>> = n
            .query_one("SELECT employes_sync_setting_token_expiry()", &[])
            .unwrap()
            .get(0);
        let t: Option<chrono::DateTime<chrono::Utc>> = n
            .query_one("SELECT employes_sync_token_expiry($1)", &[&token])
            .unwrap()
            .get(0);
        e == t
    });
}

#[test]
fn a_token_that_expires_soon_is_warned_about_once_per_threshold_and_a_401_says_expired_or_rejected()
{
    let (cluster, sim, mut c) = setup(
        "pd-token",
        12,
        &["employes_sync.housekeeping_interval = 1".into()],
    );
    let now = chrono::Utc::now().timestamp();
    let soon = jwt(now + 5 * 86_400 + 3_600);
    sim.set_company_token(&sim.company_id(), &soon);
    set_token(&cluster, &mut c, &soon);
    let mut listener = cluster.connect();
    listener.batch_execute("LISTEN employes_sync").unwrap();
    assert_eq!(sync(&mut c).status, "completed");

    let panel: Value = scalar(&mut c, "SELECT employes_sync_status()");
    let expires: chrono::DateTime<chrono::Utc> = scalar(
        &mut c,
        "SELECT token_expires_at FROM employes_sync_companies",
    );
    assert_eq!(expires.timestamp(), now + 5 * 86_400 + 3_600);
    assert_eq!(
        panel["companies"][0]["token_expires_at"],
        panel["token_expires_at"]
    );
    let warning = panel["warnings"][0].as_str().unwrap_or_default().to_owned();
    assert!(
        warning.contains("expires in 5 day(s)") && warning.contains("employes_sync.api_token"),
        "{panel}"
    );
    assert!(!warning.contains(&soon));

    // The watchdog: one warning in the log table, one token.expiring event, one NOTIFY, one
    // server log WARNING; and not again in the next rounds.
    wait_until(Duration::from_secs(20), "token.expiring", || {
        count(
            &mut c,
            "SELECT count(*) FROM employes_events WHERE event_type = 'token.expiring'",
        ) == 1
    });
    let event: Value = scalar(
        &mut c,
        "SELECT data FROM employes_events WHERE event_type = 'token.expiring'",
    );
    assert_eq!(
        (
            event["days_left"].as_i64(),
            event["threshold_days"].as_i64()
        ),
        (Some(5), Some(7)),
        "{event}"
    );
    let mut heard = false;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !heard && Instant::now() < deadline {
        let mut n = listener.notifications();
        let mut it = n.timeout_iter(Duration::from_millis(200));
        while let Some(note) = it.next().unwrap() {
            let v: Value = serde_json::from_str(note.payload()).unwrap();
            heard |= v["types"]["token.expiring"] == 1;
        }
    }
    assert!(heard, "no NOTIFY of the token.expiring event");
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(
        count(
            &mut c,
            "SELECT count(*) FROM employes_sync_logs WHERE step = 'token' AND level = 'warning'"
        ),
        1
    );
    assert_eq!(
        count(
            &mut c,
            "SELECT count(*) FROM employes_events WHERE event_type = 'token.expiring'"
        ),
        1
    );
    let log = cluster.server_log();
    assert_eq!(
        log.matches("WARNING:  employes_sync: the Employes token of company")
            .count(),
        1,
        "{log}"
    );
    assert!(!log.contains(&soon));
    assert_history_consistent(&mut c);

    // A company's own token: its expiry, not the setting's.
    let own = jwt(now + 200 * 86_400);
    c.execute(
        "SELECT employes_sync_set_company_token($1::text::uuid, $2)",
        &[&sim.company_id(), &own],
    )
    .unwrap();
    let expires: chrono::DateTime<chrono::Utc> = scalar(
        &mut c,
        "SELECT token_expires_at FROM employes_sync_companies",
    );
    assert_eq!(expires.timestamp(), now + 200 * 86_400);
    let panel: Value = scalar(&mut c, "SELECT employes_sync_status()");
    assert_eq!(panel["warnings"], serde_json::json!([]), "{panel}");
    c.execute(
        "SELECT employes_sync_set_company_token($1::text::uuid, NULL)",
        &[&sim.company_id()],
    )
    .unwrap();

    // A 401 with a token whose exp has passed: expired; with one that has not: rejected.
    let expired = jwt(now - 86_400);
    set_token(&cluster, &mut c, &expired);
    let s = sync(&mut c);
    let error = s.error.clone().unwrap_or_default();
    assert_eq!(s.status, "error");
    assert!(
        error.contains("the Employes token expired at") && error.contains("(HTTP 401)"),
        "{error}"
    );
    assert!(!error.contains(&expired));
    let panel: Value = scalar(&mut c, "SELECT employes_sync_status()");
    assert!(
        panel["warnings"][0]
            .as_str()
            .unwrap_or_default()
            .contains("expired at"),
        "{panel}"
    );
    let wrong = jwt(now + 300 * 86_400);
    set_token(&cluster, &mut c, &wrong);
    let s = sync(&mut c);
    let error = s.error.clone().unwrap_or_default();
    assert!(
        error.contains("the Employes API rejected the token (HTTP 401)"),
        "{error}"
    );
    assert_eq!(s.api_requests, 1, "a 401 ends the sync at once: {s:?}");
    // Not a JWT: no known expiry, no warning.
    set_token(&cluster, &mut c, "demo-token-not-a-jwt");
    let panel: Value = scalar(&mut c, "SELECT employes_sync_status()");
    assert_eq!(
        (panel["token_expires_at"].clone(), panel["warnings"].clone()),
        (Value::Null, serde_json::json!([]))
    );
}

/// Runs `sql` as `authenticated` with these JWT claims (or none), as PostgREST does.
fn as_user(c: &mut Client, claims: Option<&str>, sql: &str) -> Result<i64, String> {
    let mut tx = c.transaction().unwrap();
    if let Some(claims) = claims {
        tx.execute(
            "SELECT set_config('request.jwt.claims', $1, true)",
            &[&claims],
        )
        .unwrap();
    }
    tx.batch_execute("SET LOCAL ROLE authenticated").unwrap();
    let r = tx
        .query_one(sql, &[])
        .map(|r| r.get::<_, i64>(0))
        .map_err(|e| e.code().map(|c| c.code().to_owned()).unwrap_or_default());
    let _ = tx.rollback();
    r
}

#[test]
fn every_table_and_view_with_personal_data_shows_rows_only_to_hr_users_and_service_role() {
    let (_cluster, sim, mut c) = setup("pd-rls", 15, &[]);
    c.batch_execute(
        "CREATE ROLE anon NOLOGIN; CREATE ROLE authenticated NOLOGIN; CREATE ROLE service_role NOLOGIN;
         GRANT USAGE ON SCHEMA public TO anon, authenticated, service_role;
         GRANT ALL ON ALL TABLES IN SCHEMA public TO anon, authenticated, service_role;
         GRANT ALL ON ALL FUNCTIONS IN SCHEMA public TO anon, authenticated, service_role;
         SELECT employes_webhook_subscribe('http://127.0.0.1:9/hooks');",
    )
    .unwrap();
    c.batch_execute(include_str!("../../docs/supabase-grants.sql"))
        .unwrap();
    assert_eq!(sync(&mut c).status, "completed");
    sim.advance();
    assert_eq!(sync(&mut c).status, "completed");
    wait_until(Duration::from_secs(20), "deliveries", || {
        count(&mut c, "SELECT count(*) FROM employes_webhook_deliveries") > 0
    });

    // Every table of the extension has row level security on; the views of personal data read
    // with the caller's rights.
    assert_eq!(
        count(
            &mut c,
            "SELECT count(*) FROM pg_depend d JOIN pg_class k ON k.oid = d.objid
              WHERE d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'employes_sync') AND d.deptype = 'e'
                AND d.classid = 'pg_class'::regclass AND k.relkind = 'r' AND NOT k.relrowsecurity"
        ),
        0
    );
    for view in [
        "employes_current",
        "employes_recent_changes",
        "employes_former_employees",
    ] {
        let opts: Vec<String> = c
            .query_one(
                "SELECT coalesce(reloptions, '{}') FROM pg_class WHERE oid = $1::text::regclass",
                &[&view],
            )
            .unwrap()
            .get(0);
        assert_eq!(opts, vec!["security_invoker=true".to_owned()], "{view}");
    }

    let hr = r#"{"sub":"u1","role":"authenticated","email":"hr@example.org","app_metadata":{"employes_hr":true}}"#;
    let others = [
        Some(r#"{"sub":"u2","role":"authenticated","app_metadata":{"employes_hr":false}}"#),
        Some(r#"{"sub":"u3","role":"authenticated","app_metadata":{"employes_hr":"true"}}"#),
        Some(r#"{"sub":"u4","role":"authenticated","user_metadata":{"employes_hr":true}}"#),
        Some(r#"{"sub":"u5","role":"authenticated"}"#),
        None,
    ];
    for object in [
        "employes_raw_data",
        "employes_changes",
        "employes_timeline",
        "employes_events",
        "employes_current",
        "employes_recent_changes",
        "employes_sync_sessions",
    ] {
        let sql = format!("SELECT count(*) FROM {object}");
        let all = count(&mut c, &sql);
        assert!(all > 0, "{object}");
        assert_eq!(as_user(&mut c, Some(hr), &sql), Ok(all), "{object} for HR");
        for claims in others {
            assert_eq!(
                as_user(&mut c, claims, &sql),
                Ok(0),
                "{object} for {claims:?}"
            );
        }
        // service_role: every row, by its policy (no BYPASSRLS here).
        c.batch_execute("SET ROLE service_role").unwrap();
        assert_eq!(count(&mut c, &sql), all, "{object} for service_role");
        c.batch_execute("RESET ROLE").unwrap();
    }
    // The HR panel's catch-up reads the same rows.
    let events = count(&mut c, "SELECT count(*) FROM employes_events");
    assert_eq!(
        as_user(
            &mut c,
            Some(hr),
            "SELECT count(*) FROM employes_events_since(0, 100000)"
        ),
        Ok(events)
    );
    assert_eq!(
        as_user(
            &mut c,
            None,
            "SELECT count(*) FROM employes_events_since(0, 100000)"
        ),
        Ok(0)
    );
    // Deliveries, logs, erasures and the former employees: the admin's, nobody else's.
    for object in [
        "employes_webhook_deliveries",
        "employes_sync_logs",
        "employes_erasures",
        "employes_former_employees",
    ] {
        let sql = format!("SELECT count(*) FROM {object}");
        assert_eq!(
            as_user(&mut c, Some(hr), &sql),
            Err("42501".into()),
            "{object}"
        );
    }
    assert!(count(&mut c, "SELECT count(*) FROM employes_webhook_deliveries") > 0);
    // A careless grant still shows no row of a table without a policy.
    c.batch_execute(
        "GRANT SELECT ON employes_webhook_deliveries, employes_sync_logs TO authenticated",
    )
    .unwrap();
    for object in ["employes_webhook_deliveries", "employes_sync_logs"] {
        assert_eq!(
            as_user(&mut c, Some(hr), &format!("SELECT count(*) FROM {object}")),
            Ok(0)
        );
    }
    // A view owned by someone else cannot be used to read around it either: the views read as
    // the caller, so revoking the table hides the view's rows too.
    c.batch_execute("REVOKE SELECT ON employes_raw_data FROM authenticated")
        .unwrap();
    assert_eq!(
        as_user(&mut c, Some(hr), "SELECT count(*) FROM employes_current"),
        Err("42501".into())
    );
}

#[test]
fn no_personal_value_reaches_the_server_log_pg_stat_activity_or_notify_payloads() {
    let (cluster, sim, mut c) = setup(
        "pd-audit",
        60,
        &[
            "log_min_messages = debug1".into(),
            "log_statement = 'all'".into(),
            // log_statement shows what clients send; the workers' own statements (SPI, and the
            // ones inside functions) reach the log through auto_explain.
            "shared_preload_libraries = 'pg_cron,employes_sync,auto_explain'".into(),
            "auto_explain.log_min_duration = 0".into(),
            "auto_explain.log_nested_statements = on".into(),
            "log_min_error_statement = debug1".into(),
            "log_error_verbosity = verbose".into(),
        ],
    );
    // Error paths too: a failing history, a throttled page.
    let ids = sim.listed_employee_ids();
    sim.set_faults(vec![
        FaultRule {
            employee_ids: Some(ids[3..5].to_vec()),
            count: Some(2),
            ..rule(
                Endpoint::Employments,
                FaultAction::Status {
                    status: 500,
                    body: None,
                    retry_after: None,
                },
            )
        },
        FaultRule {
            page: Some(2),
            count: Some(1),
            ..rule(
                Endpoint::List,
                FaultAction::Status {
                    status: 429,
                    body: None,
                    retry_after: Some(1),
                },
            )
        },
    ]);
    sim.set_latency(5, 0);
    let mut listener = cluster.connect();
    listener.batch_execute("LISTEN employes_sync").unwrap();
    // Everything pg_stat_activity shows while the syncs run.
    let seen = Arc::new(Mutex::new(BTreeSet::<String>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (seen, stop) = (seen.clone(), stop.clone());
        let mut s = cluster.connect();
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                for r in s
                    .query("SELECT coalesce(query, '') FROM pg_stat_activity WHERE pid <> pg_backend_pid()", &[])
                    .unwrap()
                {
                    seen.lock().unwrap().insert(r.get(0));
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    let first = sync(&mut c);
    sim.clear_faults();
    sim.advance();
    let second = sync(&mut c);
    stop.store(true, Ordering::SeqCst);
    sampler.join().unwrap();
    assert_eq!(second.status, "completed", "{first:?} {second:?}");
    let mut notes = Vec::new();
    let mut n = listener.notifications();
    let mut it = n.timeout_iter(Duration::from_millis(500));
    while let Some(note) = it.next().unwrap() {
        notes.push(note.payload().to_owned());
    }
    assert!(!notes.is_empty());

    // Every person's values, from what the database stored.
    let people: Vec<Person> = c
        .query(
            "SELECT payload FROM employes_raw_data WHERE kind = 'employee'",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| person_of(&r.get::<_, Value>(0)))
        .collect();
    assert!(people.len() >= 60);
    let log = cluster.server_log();
    assert!(
        log.contains("statement: SELECT"),
        "log_statement = 'all' is on"
    );
    assert!(
        log.contains("Query Text:") && log.contains("INSERT INTO employes_raw_data"),
        "auto_explain logs the workers' statements"
    );
    let activity = seen
        .lock()
        .unwrap()
        .iter()
        .cloned()
        .collect::<Vec<_>>()
        .join("\n");
    for (place, text) in [
        ("server log", log.as_str()),
        ("pg_stat_activity", activity.as_str()),
        ("NOTIFY", &notes.join("\n")),
    ] {
        for p in &people {
            // The id is a pseudonym the logs of a sync may name; the rest must not appear.
            let values: Vec<&str> = found_in(p, text)
                .into_iter()
                .filter(|v| *v != p.id)
                .collect();
            assert!(values.is_empty(), "{place} holds {values:?} of {}", p.id);
        }
    }
    // The search finds a value that does reach the log: a statement of ours that carries one.
    let email = people[0].values[1].clone();
    c.batch_execute(&format!("SELECT 1 /* {email} */")).unwrap();
    wait_until(
        Duration::from_secs(5),
        "the control statement logged",
        || found_in(&people[0], &cluster.server_log()).contains(&email.as_str()),
    );
}
