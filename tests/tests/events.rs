//! Changes go out: the event log written with the changes, `employes_events_since` for a
//! consumer that was away, NOTIFY on `employes_sync` to a real `LISTEN` connection, webhooks to
//! a real HTTP receiver on loopback that checks every signature with the Standard Webhooks
//! library (PyPI `standardwebhooks`, in a venv this test makes), and the Supabase Realtime recipe.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use employes_sync_e2e::*;
use postgres::fallible_iterator::FallibleIterator;
use serde_json::Value;

/// Settings that make webhook retries take milliseconds instead of minutes.
fn conf() -> Vec<String> {
    let mut conf = fast_conf();
    conf.push("employes_sync.webhook_backoff_base_ms = 100".into());
    conf.push("employes_sync.webhook_timeout_ms = 2000".into());
    conf
}

fn setup(name: &str, employees: usize, seed: u64) -> (Cluster, Sim, Client) {
    let cluster = Cluster::start(name, &conf());
    let sim = sim(employees, seed, 0.0);
    cluster.use_sim(&sim, 300.0);
    let c = cluster.connect();
    (cluster, sim, c)
}

/// The ids of every event, in id order.
fn event_ids(c: &mut Client, after: i64) -> Vec<i64> {
    c.query(
        "SELECT id FROM employes_events WHERE id > $1 ORDER BY id",
        &[&after],
    )
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect()
}

fn last_event_id(c: &mut Client) -> i64 {
    count(c, "SELECT coalesce(max(id), 0) FROM employes_events")
}

#[test]
fn every_change_is_in_exactly_one_event_and_a_listener_hears_each_transaction_as_it_runs() {
    let (cluster, sim, mut c) = setup("events-listen", 60, 71);
    // Slow enough that the sync is still running when the first notification arrives.
    sim.set_latency(20, 0);
    let mut listener = cluster.connect();
    listener.batch_execute("LISTEN employes_sync").unwrap();

    let first = sync(&mut c);
    assert_eq!(first.status, "completed", "{first:?}");
    sim.advance();
    let id = trigger(&mut c, "manual", "events@example.org").id;
    let mut notes: Vec<Value> = Vec::new();
    let mut running_when_heard = false;
    let deadline = Instant::now() + Duration::from_secs(120);
    // Every notification of both syncs, up to the second one's sync event.
    'listen: loop {
        assert!(
            Instant::now() < deadline,
            "notifications stopped: {notes:?}"
        );
        let mut n = listener.notifications();
        let mut it = n.timeout_iter(Duration::from_millis(200));
        while let Some(note) = it.next().unwrap() {
            assert_eq!(note.channel(), "employes_sync");
            assert!(
                note.payload().len() < 1024,
                "payload of {} bytes: {}",
                note.payload().len(),
                note.payload()
            );
            let v: Value = serde_json::from_str(note.payload()).unwrap();
            let of_second = v["session_id"] == id.to_string();
            if of_second && notes.iter().all(|n| n["session_id"] != v["session_id"]) {
                // Heard while the sync runs: it has not ended yet.
                running_when_heard = session(&mut c, id).status == "running";
            }
            let done = of_second && v["types"].get("sync.completed").is_some();
            notes.push(v);
            if done {
                break 'listen;
            }
        }
    }
    let second = wait(&mut c, id);
    assert_eq!(second.status, "completed", "{second:?}");
    assert!(second.changes_detected > 0, "{second:?}");
    assert!(
        running_when_heard,
        "the first notification of the second sync came only after it ended"
    );

    // The events and the changes: one to one, with the change's values, in both sessions.
    assert_history_consistent(&mut c);
    for s in [first.id, second.id] {
        let changes = count(
            &mut c,
            &format!("SELECT count(*) FROM employes_changes WHERE session_id = '{s}'"),
        );
        let in_events = count(
            &mut c,
            &format!(
                "SELECT count(*) FROM employes_events e, jsonb_array_elements(e.data -> 'changes')
                  WHERE e.session_id = '{s}'"
            ),
        );
        assert!(changes > 0);
        assert_eq!(changes, in_events, "session {s}");
    }
    // One event per employee per change type per version transition.
    assert_eq!(
        count(
            &mut c,
            "SELECT count(*) FROM (SELECT DISTINCT session_id, employee_id, change_type, raw_from_id, raw_to_id
                                    FROM employes_changes) t"
        ),
        count(
            &mut c,
            "SELECT count(*) FROM employes_events WHERE employee_id IS NOT NULL"
        )
    );
    // What the events carry, e.g. a raise: its path, the old and new value and the date.
    let raise: Value = c
        .query_one(
            "SELECT data FROM employes_events WHERE event_type = 'salary.changed' AND session_id = $1 LIMIT 1",
            &[&second.id],
        )
        .unwrap()
        .get(0);
    {
        let item = &raise["changes"][0];
        assert!(
            item["field_path"].is_string() && item["change_id"].is_i64(),
            "{raise}"
        );
        assert!(
            item.get("old_value").is_some() && item.get("new_value").is_some(),
            "{raise}"
        );
        assert!(raise["effective_date"].is_string(), "{raise}");
    }

    // The notifications: small, no personal data, and together exactly the events.
    let mut covered = BTreeSet::new();
    let mut by_type: BTreeMap<String, i64> = BTreeMap::new();
    for n in &notes {
        let keys: BTreeSet<&str> = n.as_object().unwrap().keys().map(|k| k.as_str()).collect();
        assert_eq!(
            keys,
            BTreeSet::from([
                "company_id",
                "count",
                "first_id",
                "last_id",
                "session_id",
                "types"
            ]),
            "{n}"
        );
        let (first_id, last_id) = (
            n["first_id"].as_i64().unwrap(),
            n["last_id"].as_i64().unwrap(),
        );
        let ids: Vec<i64> = c
            .query(
                "SELECT id FROM employes_events WHERE id BETWEEN $1 AND $2",
                &[&first_id, &last_id],
            )
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(ids.len() as i64, n["count"].as_i64().unwrap(), "{n}");
        for id in ids {
            assert!(covered.insert(id), "event {id} in two notifications");
        }
        for (t, k) in n["types"].as_object().unwrap() {
            *by_type.entry(t.clone()).or_default() += k.as_i64().unwrap();
        }
    }
    assert_eq!(
        covered.into_iter().collect::<Vec<_>>(),
        event_ids(&mut c, 0)
    );
    let stored: BTreeMap<String, i64> = c
        .query(
            "SELECT event_type, count(*) FROM employes_events GROUP BY 1",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(by_type, stored);
    // Several transactions, several notifications: a listener follows the sync as it runs.
    assert!(notes.len() >= 4, "{} notifications", notes.len());
    let employee_ids: Vec<String> = c
        .query("SELECT DISTINCT employee_id FROM employes_changes", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    for n in &notes {
        let text = n.to_string();
        assert!(
            !text.contains("field_path") && !text.contains("value"),
            "{text}"
        );
        for e in &employee_ids {
            assert!(!text.contains(e.as_str()), "an employee id in {text}");
        }
    }
}

#[test]
fn a_consumer_catches_up_after_ten_syncs_with_no_gap_even_while_a_writer_waits_to_commit() {
    let (cluster, sim, mut c) = setup("events-since", 40, 72);
    assert_eq!(sync(&mut c).status, "completed");
    // The consumer has handled everything so far, then is away for 10 syncs.
    let seen: Vec<Value> = c
        .query(
            "SELECT to_jsonb(e) FROM employes_events_since(0, 100000) e",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mark = seen.last().unwrap()["id"].as_i64().unwrap();
    assert_eq!(mark, last_event_id(&mut c));

    // Meanwhile another reader polls all the time; each of its reads must be the next events.
    let poller_cluster = cluster.connect();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let poller = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut c = poller_cluster;
            let mut got = Vec::new();
            let mut last = mark;
            loop {
                let finished = stop.load(std::sync::atomic::Ordering::SeqCst);
                let ids: Vec<i64> = c
                    .query("SELECT id FROM employes_events_since($1, 50)", &[&last])
                    .unwrap()
                    .iter()
                    .map(|r| r.get(0))
                    .collect();
                if let Some(&l) = ids.last() {
                    last = l;
                }
                let empty = ids.is_empty();
                got.extend(ids);
                if finished && empty {
                    return got;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };

    let mut sessions = Vec::new();
    for round in 0..10 {
        sim.advance();
        if round == 4 {
            // A writer that holds the event lock and has not committed: the sync's history
            // transaction waits for it rather than take an id and commit before it.
            let mut writer = cluster.connect();
            let mut tx = writer.transaction().unwrap();
            tx.execute("SELECT employes_events_lock()", &[]).unwrap();
            let id = trigger(&mut c, "manual", "events@example.org").id;
            wait_until(
                Duration::from_secs(60),
                "the worker to wait for the event lock",
                || {
                    count(
                        &mut c,
                        "SELECT count(*) FROM pg_stat_activity
                          WHERE backend_type = 'employes_sync worker' AND wait_event_type = 'Lock'
                            AND wait_event = 'advisory'",
                    ) == 1
                },
            );
            let before = last_event_id(&mut c);
            // An event of the waiting writer's own, written while the worker waits.
            tx.execute(
                "INSERT INTO employes_events (company_id, session_id, event_type, data)
                 SELECT company_id, session_id, 'sync.completed', '{\"note\": \"held by the test\"}'
                   FROM employes_events WHERE event_type LIKE 'sync.%' ORDER BY id DESC LIMIT 1",
                &[],
            )
            .unwrap();
            assert_eq!(
                last_event_id(&mut c),
                before,
                "an uncommitted event is visible"
            );
            tx.commit().unwrap();
            let s = wait(&mut c, id);
            assert_eq!(s.status, "completed", "{s:?}");
            sessions.push(s.id);
            continue;
        }
        let s = sync(&mut c);
        assert_eq!(s.status, "completed", "{s:?}");
        sessions.push(s.id);
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let polled = poller.join().unwrap();

    // Back: the consumer reads from its mark, 7 at a time.
    let mut caught = Vec::new();
    let mut last = mark;
    loop {
        let ids: Vec<i64> = c
            .query("SELECT id FROM employes_events_since($1, 7)", &[&last])
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        if ids.is_empty() {
            break;
        }
        assert!(ids.len() <= 7);
        last = *ids.last().unwrap();
        caught.extend(ids);
    }
    let all = event_ids(&mut c, mark);
    assert_eq!(caught, all, "the catch-up has a gap or a duplicate");
    assert_eq!(
        polled, all,
        "the reader that polled during the syncs missed or repeated one"
    );
    // All ten syncs are in it, each with its sync event.
    let completed = count(
        &mut c,
        &format!(
            "SELECT count(DISTINCT session_id) FROM employes_events
              WHERE id > {mark} AND event_type = 'sync.completed' AND data ->> 'note' IS NULL"
        ),
    );
    assert_eq!(completed, 10);
    // The stand-in writer's own event is no sync's: gone before the checks.
    c.batch_execute("DELETE FROM employes_events WHERE data ? 'note'")
        .unwrap();
    assert_history_consistent(&mut c);
    let changes = count(
        &mut c,
        &format!(
            "SELECT count(*) FROM employes_changes WHERE session_id IN ({})",
            sessions
                .iter()
                .map(|s| format!("'{s}'"))
                .collect::<Vec<_>>()
                .join(",")
        ),
    );
    assert!(changes > 0);

    // Bad arguments: a clear error.
    for (sql, what) in [
        ("SELECT * FROM employes_events_since(-1)", "after_id"),
        ("SELECT * FROM employes_events_since(NULL)", "after_id"),
        ("SELECT * FROM employes_events_since(0, 0)", "max_events"),
        (
            "SELECT * FROM employes_events_since(0, 100001)",
            "max_events",
        ),
    ] {
        let (code, message) = sql_error(&mut c, sql, &[]);
        assert_eq!(code, "22023", "{sql}");
        assert!(message.contains(what), "{message}");
    }
}

/// Standard Webhooks, in Python: a venv with the library, made once (kept in target/).
fn venv() -> PathBuf {
    static V: OnceLock<PathBuf> = OnceLock::new();
    V.get_or_init(|| {
        let dir = repo_root().join("target/e2e-webhook-venv");
        let python = dir.join("bin/python");
        let ready = Command::new(&python)
            .args(["-c", "import standardwebhooks"])
            .status()
            .is_ok_and(|s| s.success());
        if !ready {
            run_ok({
                let mut c = Command::new("/usr/bin/python3");
                c.args(["-m", "venv", "--clear"]).arg(&dir);
                c
            });
            run_ok({
                let mut c = Command::new(dir.join("bin/pip"));
                c.args(["install", "-q", "standardwebhooks==1.3.0"]);
                c
            });
        }
        python
    })
    .clone()
}

/// The receiver of `tests/webhook_receiver.py`, on a port of its own.
struct Receiver {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Receiver {
    fn start(name: &str, port: u16) -> Receiver {
        let dir =
            std::env::temp_dir().join(format!("employes-webhooks-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("secrets.json"), "{}").unwrap();
        Receiver::start_in(dir, port)
    }

    fn start_in(dir: PathBuf, port: u16) -> Receiver {
        let mut child = Command::new(venv())
            .arg(repo_root().join("tests/webhook_receiver.py"))
            .arg(port.to_string())
            .arg(dir.join("secrets.json"))
            .arg(dir.join("requests.jsonl"))
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready", "the receiver did not start");
        Receiver { child, port, dir }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn set_secret(&self, path: &str, secret: &str) {
        let file = self.dir.join("secrets.json");
        let mut all: Value =
            serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
        all[path] = Value::String(secret.to_owned());
        let tmp = self.dir.join("secrets.json.tmp");
        std::fs::write(&tmp, all.to_string()).unwrap();
        std::fs::rename(tmp, file).unwrap();
    }

    /// Every request so far, in the order they came.
    fn requests(&self) -> Vec<Value> {
        std::fs::read_to_string(self.dir.join("requests.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    fn requests_to(&self, path: &str) -> Vec<Value> {
        self.requests()
            .into_iter()
            .filter(|r| r["path"] == path)
            .collect()
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop();
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Subscribes a path of the receiver; returns (subscription id, secret).
fn subscribe(
    c: &mut Client,
    receiver: &Receiver,
    path: &str,
    event_types: Option<&[&str]>,
) -> (uuid::Uuid, String) {
    let types: Option<Vec<String>> = event_types.map(|t| t.iter().map(|s| s.to_string()).collect());
    let row = c
        .query_one(
            "SELECT subscription_id, secret FROM employes_webhook_subscribe($1, $2)",
            &[&receiver.url(path), &types],
        )
        .unwrap();
    let (id, secret): (uuid::Uuid, String) = (row.get(0), row.get(1));
    assert!(secret.starts_with("whsec_"), "{secret}");
    receiver.set_secret(path, &secret);
    (id, secret)
}

fn deliveries_settled(c: &mut Client) -> bool {
    count(
        c,
        "SELECT count(*) FROM employes_webhook_deliveries d JOIN employes_webhook_subscriptions s ON s.id = d.subscription_id
          WHERE d.status = 'pending'",
    ) == 0
        && count(
            c,
            "SELECT count(*) FROM employes_webhook_subscriptions s
              WHERE s.unsubscribed_at IS NULL AND s.last_event_id < (SELECT coalesce(max(id), 0) FROM employes_events)",
        ) == 0
}

/// The (event id, status) of each delivery of a subscription.
fn deliveries(
    c: &mut Client,
    subscription: uuid::Uuid,
) -> Vec<(i64, i64, String, i32, Option<i32>)> {
    c.query(
        "SELECT id, event_id, status, attempts, last_status FROM employes_webhook_deliveries
          WHERE subscription_id = $1 ORDER BY event_id",
        &[&subscription],
    )
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
    .collect()
}

#[test]
fn webhooks_are_signed_retried_with_the_same_id_failed_on_a_4xx_redelivered_and_stopped() {
    let (_cluster, sim, mut c) = setup("events-webhooks", 30, 73);
    let receiver = Receiver::start("webhooks", free_port());
    assert_eq!(sync(&mut c).status, "completed");
    // A subscription gets the events from the moment it subscribed, not those before.
    let before = last_event_id(&mut c);
    let (ok, _) = subscribe(&mut c, &receiver, "/ok", None);
    let (flaky, _) = subscribe(&mut c, &receiver, "/flaky", None);
    let (bad, _) = subscribe(&mut c, &receiver, "/bad", Some(&["sync.completed"]));
    let (throttled, _) = subscribe(&mut c, &receiver, "/throttled", Some(&["sync.completed"]));
    let _ = throttled;

    sim.advance();
    let s = sync(&mut c);
    assert_eq!(s.status, "completed");
    assert!(s.changes_detected > 0);
    let events = event_ids(&mut c, before);
    wait_until(Duration::from_secs(60), "every delivery settled", || {
        deliveries_settled(&mut c)
    });

    // /ok: every event once, signed, in one POST each.
    let got = receiver.requests_to("/ok");
    assert!(got.iter().all(|r| r["verified"] == true), "{got:?}");
    assert!(
        got.iter().all(|r| r["content_type"] == "application/json"),
        "{got:?}"
    );
    let ids: Vec<i64> = got
        .iter()
        .map(|r| r["event_id"].as_i64().unwrap())
        .collect();
    assert_eq!(
        ids.iter().copied().collect::<BTreeSet<_>>(),
        events.iter().copied().collect()
    );
    assert_eq!(ids.len(), events.len(), "an event sent twice");
    assert!(deliveries(&mut c, ok)
        .iter()
        .all(|d| d.2 == "delivered" && d.3 == 1));

    // /flaky: 503 three times, then delivered; the same webhook-id on each attempt.
    let got = receiver.requests_to("/flaky");
    let mut by_id: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
    for r in &got {
        assert_eq!(r["verified"], true, "{r}");
        by_id
            .entry(r["webhook_id"].as_str().unwrap().to_owned())
            .or_default()
            .push(r);
    }
    assert_eq!(by_id.len(), events.len());
    for (id, calls) in &by_id {
        let statuses: Vec<i64> = calls
            .iter()
            .map(|r| r["status"].as_i64().unwrap())
            .collect();
        assert_eq!(statuses, vec![503, 503, 503, 200], "{id}");
        assert!(calls.iter().all(|r| r["event_id"] == calls[0]["event_id"]));
    }
    assert!(deliveries(&mut c, flaky)
        .iter()
        .all(|d| d.2 == "delivered" && d.3 == 4 && d.4 == Some(200)));

    // /bad: only the type it chose; 400 fails it after exactly one attempt.
    let got = receiver.requests_to("/bad");
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0]["type"], "sync.completed");
    let d = deliveries(&mut c, bad);
    assert_eq!(d.len(), 1);
    assert_eq!((d[0].2.as_str(), d[0].3, d[0].4), ("failed", 1, Some(400)));
    // Redelivered: the same message again (same webhook-id), delivered this time.
    let row = c
        .query_one(
            "SELECT status, attempts FROM employes_webhook_redeliver($1)",
            &[&d[0].0],
        )
        .unwrap();
    assert_eq!(
        (row.get::<_, String>(0), row.get::<_, i32>(1)),
        ("pending".into(), 0)
    );
    let (code, _) = sql_error(&mut c, "SELECT employes_webhook_redeliver($1)", &[&d[0].0]);
    assert!(
        code == "PT409" || deliveries(&mut c, bad)[0].2 == "delivered",
        "{code}"
    );
    wait_until(Duration::from_secs(30), "the redelivery", || {
        deliveries(&mut c, bad)[0].2 == "delivered"
    });
    let got = receiver.requests_to("/bad");
    assert_eq!(got.len(), 2);
    assert_eq!(got[1]["webhook_id"], got[0]["webhook_id"]);
    assert_eq!(got[1]["verified"], true);

    // /throttled: 429 with Retry-After: 1 is waited out.
    let got = receiver.requests_to("/throttled");
    assert_eq!(
        got.iter()
            .map(|r| r["status"].as_i64().unwrap())
            .collect::<Vec<_>>(),
        vec![429, 200]
    );
    let gap = got[1]["at"].as_f64().unwrap() - got[0]["at"].as_f64().unwrap();
    assert!(
        gap >= 0.95,
        "the second attempt came {gap} s after a Retry-After of 1 s"
    );

    // The panel.
    let status: Value = c
        .query_one("SELECT employes_sync_status()", &[])
        .unwrap()
        .get(0);
    assert_eq!(status["last_event_id"].as_i64(), events.last().copied());
    assert_eq!(status["webhooks"]["subscriptions"], 4);
    assert_eq!(status["webhooks"]["pending"], 0);
    assert_eq!(status["webhooks"]["dead"], 0);

    // Unsubscribed: nothing more, while the others get the next sync's events.
    let row = c
        .query_one(
            "SELECT active, delivered FROM employes_webhook_unsubscribe($1)",
            &[&flaky],
        )
        .unwrap();
    assert!(!row.get::<_, bool>(0));
    assert_eq!(row.get::<_, i64>(1), events.len() as i64);
    let flaky_calls = receiver.requests_to("/flaky").len();
    let mark = last_event_id(&mut c);
    sim.advance();
    assert_eq!(sync(&mut c).status, "completed");
    let next = event_ids(&mut c, mark);
    wait_until(Duration::from_secs(60), "the next sync delivered", || {
        deliveries_settled(&mut c)
    });
    let to_ok: BTreeSet<i64> = receiver
        .requests_to("/ok")
        .iter()
        .map(|r| r["event_id"].as_i64().unwrap())
        .collect();
    assert!(next.iter().all(|id| to_ok.contains(id)));
    assert_eq!(receiver.requests_to("/flaky").len(), flaky_calls);
    assert_eq!(deliveries(&mut c, flaky).len(), events.len());
    assert!(receiver.requests().iter().all(|r| r["verified"] == true));
    let status: Value = c
        .query_one("SELECT employes_sync_status()", &[])
        .unwrap()
        .get(0);
    assert_eq!(status["webhooks"]["subscriptions"], 3);
}

#[test]
fn an_endpoint_unsubscribed_in_the_middle_of_a_round_gets_nothing_more() {
    let (_cluster, sim, mut c) = setup("events-unsubscribe", 30, 77);
    let receiver = Receiver::start("unsubscribe", free_port());
    // A slow receiver (1 s an answer) with a backlog: the first sync's events.
    let (slow, _) = subscribe(&mut c, &receiver, "/slow", None);
    let (ok, _) = subscribe(&mut c, &receiver, "/ok", None);
    assert_eq!(sync(&mut c).status, "completed");
    let events = event_ids(&mut c, 0).len();
    assert!(events > 40, "{events} events");
    wait_until(Duration::from_secs(30), "the first answers", || {
        receiver.requests_to("/slow").len() >= 2
    });
    c.query_one("SELECT employes_webhook_unsubscribe($1)", &[&slow])
        .unwrap();
    let unsubscribed_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let at_unsubscribe = receiver.requests_to("/slow").len();
    // Settled: /ok has everything, and /slow has heard nothing new for 2 s (its requests, one
    // every 250 ms at 4 in parallel, would otherwise go on for another 10 s).
    let mut last = (at_unsubscribe, Instant::now());
    wait_until(Duration::from_secs(60), "the deliveries settled", || {
        let n = receiver.requests_to("/slow").len();
        if n != last.0 {
            last = (n, Instant::now());
        }
        deliveries_settled(&mut c) && last.1.elapsed() >= Duration::from_secs(2)
    });
    let to_slow = receiver.requests_to("/slow").len();
    // Nothing sent once the worker has seen it (it looks every 100 ms while it sends): no
    // request arrived more than half a second after the unsubscription committed.
    let late: Vec<f64> = receiver
        .requests_to("/slow")
        .iter()
        .map(|r| r["at"].as_f64().unwrap() - unsubscribed_at)
        .filter(|&dt| dt > 0.5)
        .collect();
    assert!(
        late.is_empty(),
        "{to_slow} requests ({at_unsubscribe} answered when unsubscribed), some {late:?} s after"
    );
    assert!(to_slow < events);
    let d = deliveries(&mut c, slow);
    assert!(d.iter().all(|d| d.2 != "pending"), "{d:?}");
    let unsent = count(
        &mut c,
        &format!(
            "SELECT count(*) FROM employes_webhook_deliveries WHERE subscription_id = '{slow}'
               AND status = 'failed' AND last_error = 'unsubscribed before it was delivered'"
        ),
    );
    assert!(
        unsent as usize >= events - to_slow,
        "{unsent} marked unsent"
    );
    // The other subscriber got everything.
    assert!(deliveries(&mut c, ok).iter().all(|d| d.2 == "delivered"));
    assert_eq!(deliveries(&mut c, ok).len(), events);
    // And nothing more goes to the unsubscribed one: no delivery for a new sync's events.
    sim.advance();
    assert_eq!(sync(&mut c).status, "completed");
    wait_until(Duration::from_secs(60), "the next sync delivered", || {
        deliveries_settled(&mut c)
    });
    assert_eq!(deliveries(&mut c, slow).len(), events);
    assert_eq!(receiver.requests_to("/slow").len(), to_slow);
}

#[test]
fn a_delivery_is_dead_after_the_last_attempt_and_can_be_sent_again() {
    let mut conf = conf();
    conf.push("employes_sync.webhook_max_attempts = 3".into());
    let cluster = Cluster::start("events-dead", &conf);
    let sim = sim(5, 78, 0.0);
    cluster.use_sim(&sim, 300.0);
    let mut c = cluster.connect();
    // Nothing listens on the port yet: every attempt is refused.
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}/ok");
    let sub: uuid::Uuid = c
        .query_one(
            "SELECT subscription_id FROM employes_webhook_subscribe($1, ARRAY['sync.completed'])",
            &[&url],
        )
        .unwrap()
        .get(0);
    assert_eq!(sync(&mut c).status, "completed");
    wait_until(Duration::from_secs(60), "the delivery dead", || {
        deliveries(&mut c, sub)
            .first()
            .is_some_and(|d| d.2 == "dead")
    });
    let d = deliveries(&mut c, sub);
    assert_eq!(d.len(), 1);
    assert_eq!((d[0].3, d[0].4), (3, None), "{d:?}");
    let status: Value = c
        .query_one("SELECT employes_sync_status() -> 'webhooks'", &[])
        .unwrap()
        .get(0);
    assert_eq!(
        (&status["dead"], &status["pending"]),
        (&Value::from(1), &Value::from(0))
    );
    // The receiver comes up; the dead delivery is sent again on request, and arrives.
    let receiver = Receiver::start("dead", port);
    let secret: String = c
        .query_one(
            "SELECT secret FROM employes_webhook_subscriptions WHERE id = $1",
            &[&sub],
        )
        .unwrap()
        .get(0);
    receiver.set_secret("/ok", &secret);
    c.query_one("SELECT employes_webhook_redeliver($1)", &[&d[0].0])
        .unwrap();
    wait_until(Duration::from_secs(30), "the redelivery", || {
        deliveries(&mut c, sub)[0].2 == "delivered"
    });
    let got = receiver.requests_to("/ok");
    assert_eq!(got.len(), 1);
    assert_eq!(
        (&got[0]["verified"], &got[0]["type"]),
        (&Value::from(true), &Value::from("sync.completed"))
    );
}

#[test]
fn pending_deliveries_survive_a_receiver_that_is_down_and_a_server_restart() {
    let (cluster, sim, mut c) = setup("events-restart", 20, 74);
    assert_eq!(sync(&mut c).status, "completed");
    let before = last_event_id(&mut c);
    let port = free_port();
    let dir =
        std::env::temp_dir().join(format!("employes-webhooks-restart-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("secrets.json"), "{}").unwrap();
    // Subscribed while nothing listens on the port: every attempt is refused.
    let url = format!("http://127.0.0.1:{port}/ok");
    let row = c
        .query_one(
            "SELECT subscription_id, secret FROM employes_webhook_subscribe($1, NULL, $2)",
            &[&url, &"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"],
        )
        .unwrap();
    let (sub, secret): (uuid::Uuid, String) = (row.get(0), row.get(1));
    assert_eq!(
        secret, "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "a given secret is kept"
    );
    std::fs::write(
        dir.join("secrets.json"),
        serde_json::json!({ "/ok": secret }).to_string(),
    )
    .unwrap();
    sim.advance();
    assert_eq!(sync(&mut c).status, "completed");
    let expected = count(&mut c, "SELECT count(*) FROM employes_events");
    wait_until(Duration::from_secs(30), "refused attempts", || {
        count(
            &mut c,
            "SELECT count(*) FROM employes_webhook_deliveries WHERE status = 'pending' AND attempts >= 2",
        ) > 0
    });
    let failing: Value = c
        .query_one("SELECT employes_sync_status() -> 'webhooks'", &[])
        .unwrap()
        .get(0);
    assert!(failing["failing"].as_i64().unwrap() > 0, "{failing}");
    let last_error: String = c
        .query_one(
            "SELECT last_error FROM employes_webhook_deliveries WHERE attempts > 0 LIMIT 1",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(!last_error.is_empty());

    // The server stops with deliveries pending and starts again; then the receiver comes up.
    cluster.pg_ctl_stop("fast");
    cluster.pg_ctl_start();
    let mut c = cluster.connect();
    let pending = count(
        &mut c,
        "SELECT count(*) FROM employes_webhook_deliveries WHERE status = 'pending'",
    );
    assert!(pending > 0, "nothing was pending across the restart");
    let receiver = Receiver::start_in(dir, port);
    wait_until(
        Duration::from_secs(60),
        "the pending deliveries delivered",
        || deliveries_settled(&mut c),
    );
    let d = deliveries(&mut c, sub);
    assert!(d.iter().all(|d| d.2 == "delivered"), "{d:?}");
    let got = receiver.requests_to("/ok");
    assert!(got.iter().all(|r| r["verified"] == true), "{got:?}");
    let ids: BTreeSet<i64> = got
        .iter()
        .map(|r| r["event_id"].as_i64().unwrap())
        .collect();
    let want: BTreeSet<i64> = c
        .query("SELECT id FROM employes_events WHERE id > $1", &[&before])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(ids, want);
    assert!(expected > 0);

    // Finished deliveries are pruned after employes_sync.log_retention_days (30), pending ones
    // never; the worker prunes when it starts and hourly.
    let half = (d.len() / 2) as i64;
    c.execute(
        "UPDATE employes_webhook_deliveries SET delivered_at = now() - interval '31 days'
          WHERE id IN (SELECT id FROM employes_webhook_deliveries ORDER BY id LIMIT $1)",
        &[&half],
    )
    .unwrap();
    c.execute(
        "INSERT INTO employes_webhook_deliveries (subscription_id, event_id, next_attempt_at, created_at)
         SELECT $1, min(id), now() + interval '1 day', now() - interval '40 days' FROM employes_events
         ON CONFLICT DO NOTHING",
        &[&sub],
    )
    .unwrap();
    cluster.pg_ctl_stop("fast");
    cluster.pg_ctl_start();
    let mut c = cluster.connect();
    wait_until(Duration::from_secs(30), "old deliveries pruned", || {
        count(
            &mut c,
            "SELECT count(*) FROM employes_webhook_deliveries WHERE delivered_at < now() - interval '30 days'",
        ) == 0
    });
    assert_eq!(
        count(
            &mut c,
            "SELECT count(*) FROM employes_webhook_deliveries WHERE status = 'delivered'"
        ),
        d.len() as i64 - half
    );
    assert_eq!(
        count(
            &mut c,
            "SELECT count(*) FROM employes_webhook_deliveries WHERE status = 'pending'"
        ),
        1,
        "a pending delivery is never pruned"
    );
}

#[test]
fn bad_webhook_input_gets_a_clear_sqlstate_and_changes_nothing() {
    let mut conf = conf();
    // Every statement in the server log: a subscription's secret must still not be there.
    conf.push("log_statement = 'all'".into());
    let cluster = Cluster::start("events-bad-input", &conf);
    let sim = sim(5, 75, 0.0);
    cluster.use_sim(&sim, 300.0);
    let mut c = cluster.connect();
    c.batch_execute("CREATE ROLE app LOGIN").unwrap();
    let cases: [(&str, &str, &str); 9] = [
        (
            "SELECT employes_webhook_subscribe('ftp://x.example/h')",
            "22023",
            "http",
        ),
        (
            "SELECT employes_webhook_subscribe('https://user:pw@x.example/h')",
            "22023",
            "credentials",
        ),
        (
            "SELECT employes_webhook_subscribe('https://x.example/a b')",
            "22023",
            "spaces",
        ),
        ("SELECT employes_webhook_subscribe(NULL)", "22023", "http"),
        (
            "SELECT employes_webhook_subscribe('https://x.example/h', ARRAY['salary.raised'])",
            "22023",
            "salary.raised",
        ),
        (
            "SELECT employes_webhook_subscribe('https://x.example/h', ARRAY[]::text[])",
            "22023",
            "event_types",
        ),
        (
            "SELECT employes_webhook_subscribe('https://x.example/h', NULL, 'whsec_short')",
            "22023",
            "secret",
        ),
        (
            "SELECT employes_webhook_unsubscribe('00000000-0000-0000-0000-000000000000')",
            "22023",
            "no webhook subscription",
        ),
        (
            "SELECT employes_webhook_redeliver(424242)",
            "22023",
            "no webhook delivery",
        ),
    ];
    for (sql, code, says) in cases {
        let (got, message) = sql_error(&mut c, sql, &[]);
        assert_eq!(got, code, "{sql}: {message}");
        assert!(message.contains(says), "{sql}: {message}");
    }
    assert_eq!(
        count(
            &mut c,
            "SELECT count(*) FROM employes_webhook_subscriptions"
        ),
        0
    );
    // A good one, by a literal and by a bind parameter: the secret never reaches the log.
    let secret = "whsec_dGhlLXNlY3JldC1vZi10aGUtbG9nLXRlc3QtMTIzNDU2";
    c.batch_execute(&format!(
        "SELECT employes_webhook_subscribe('https://x.example/a', NULL, '{secret}')"
    ))
    .unwrap();
    c.query(
        "SELECT employes_webhook_subscribe($1, NULL, $2)",
        &[&"https://x.example/b", &secret],
    )
    .unwrap();
    let log = cluster.server_log();
    assert!(
        log.contains("not logged"),
        "the statements were logged some other way"
    );
    assert!(
        !log.contains("dGhlLXNlY3JldC1vZi10aGUtbG9nLXRlc3Q"),
        "the secret is in the server log"
    );
    let (code, _) = sql_error(
        &mut c,
        "SELECT * FROM employes_webhook_subscribe('https://x.example/a', NULL, 'whsec_short')",
        &[],
    );
    assert_eq!(code, "22023");
    assert!(
        !cluster.server_log().contains("whsec_short"),
        "an error's STATEMENT line shows the secret"
    );
    c.batch_execute("DELETE FROM employes_webhook_subscriptions")
        .unwrap();
    // Admins only: a URL is an SSRF risk, the secret signs the deliveries.
    let mut app = Client::connect(
        &format!(
            "host=127.0.0.1 port={} user=app dbname=postgres",
            cluster.port
        ),
        NoTls,
    )
    .unwrap();
    for sql in [
        "SELECT employes_webhook_subscribe('https://x.example/h')",
        "SELECT employes_webhook_unsubscribe('00000000-0000-0000-0000-000000000000')",
        "SELECT employes_webhook_redeliver(1)",
        "SELECT * FROM employes_webhook_subscriptions",
        "SELECT * FROM employes_webhook_deliveries",
        "SELECT * FROM employes_webhooks",
        "SELECT * FROM employes_events",
        "SELECT * FROM employes_events_since()",
    ] {
        let (code, _) = sql_error(&mut app, sql, &[]);
        assert_eq!(code, "42501", "{sql}");
    }
    // A role granted SELECT on the events sees the rows a policy lets through, none without.
    assert_eq!(sync(&mut c).status, "completed");
    let events = count(&mut c, "SELECT count(*) FROM employes_events");
    assert!(events > 0);
    c.batch_execute(
        "GRANT SELECT ON employes_events TO app;
         GRANT EXECUTE ON FUNCTION employes_events_since(bigint, integer) TO app",
    )
    .unwrap();
    assert_eq!(
        count(&mut app, "SELECT count(*) FROM employes_events_since()"),
        0
    );
    c.batch_execute("CREATE POLICY app_reads ON employes_events FOR SELECT TO app USING (true)")
        .unwrap();
    assert_eq!(
        count(&mut app, "SELECT count(*) FROM employes_events_since()"),
        events
    );
    let (code, _) = sql_error(
        &mut app,
        "INSERT INTO employes_events (session_id, event_type, data) SELECT session_id, event_type, data FROM employes_events LIMIT 1",
        &[],
    );
    assert_eq!(code, "42501");
}

#[test]
fn the_supabase_realtime_recipe_streams_new_events_to_hr_users_only() {
    let mut conf = conf();
    conf.push("wal_level = logical".into());
    let cluster = Cluster::start("events-realtime", &conf);
    let sim = sim(15, 76, 0.0);
    cluster.use_sim(&sim, 300.0);
    let mut c = cluster.connect();
    // What a Supabase project has: the roles, and the publication Realtime reads.
    c.batch_execute(
        "CREATE ROLE anon NOLOGIN; CREATE ROLE authenticated NOLOGIN; CREATE ROLE service_role NOLOGIN BYPASSRLS;
         CREATE PUBLICATION supabase_realtime;",
    )
    .unwrap();
    let recipe = std::fs::read_to_string(repo_root().join("docs/supabase-realtime.sql")).unwrap();
    c.batch_execute(&recipe).unwrap();
    let published = count(
        &mut c,
        "SELECT count(*) FROM pg_publication_tables WHERE pubname = 'supabase_realtime' AND tablename = 'employes_events'",
    );
    assert_eq!(published, 1);
    // Realtime reads the publication's stream through a logical replication slot.
    c.batch_execute("SELECT pg_create_logical_replication_slot('realtime_test', 'pgoutput')")
        .unwrap();
    let s = sync(&mut c);
    assert_eq!(s.status, "completed");
    let events = count(&mut c, "SELECT count(*) FROM employes_events");
    assert!(events > 0);
    // Each event is an insert message on the stream (pgoutput: 'I', then the relation's oid).
    let inserts = count(
        &mut c,
        "SELECT count(*) FROM pg_logical_slot_peek_binary_changes('realtime_test', NULL, NULL,
                  'proto_version', '1', 'publication_names', 'supabase_realtime')
          WHERE get_byte(data, 0) = ascii('I')
            AND (get_byte(data, 1)::bigint << 24 | get_byte(data, 2) << 16 | get_byte(data, 3) << 8 | get_byte(data, 4))
                = 'employes_events'::regclass::oid::bigint",
    );
    assert_eq!(inserts, events);
    c.batch_execute("SELECT pg_drop_replication_slot('realtime_test')")
        .unwrap();
    // Realtime checks each row against the subscriber's rights as Supabase sets them for a
    // request: the role authenticated and the JWT's claims.
    let visible = |c: &mut Client, claims: &str| -> i64 {
        let mut tx = c.transaction().unwrap();
        tx.execute(
            "SELECT set_config('request.jwt.claims', $1, true)",
            &[&claims],
        )
        .unwrap();
        tx.batch_execute("SET LOCAL ROLE authenticated").unwrap();
        let n: i64 = tx
            .query_one("SELECT count(*) FROM employes_events", &[])
            .unwrap()
            .get(0);
        tx.rollback().unwrap();
        n
    };
    let check = |c: &mut Client| {
        assert_eq!(
            visible(
                c,
                r#"{"sub":"u1","role":"authenticated","app_metadata":{"employes_hr":true}}"#
            ),
            events
        );
        assert_eq!(
            visible(
                c,
                r#"{"sub":"u2","role":"authenticated","app_metadata":{"employes_hr":"true","role":"hr"}}"#
            ),
            0
        );
        assert_eq!(visible(c, r#"{"sub":"u3","role":"authenticated"}"#), 0);
        // anon gets nothing at all.
        let mut tx = c.transaction().unwrap();
        tx.batch_execute("SET LOCAL ROLE anon").unwrap();
        let e = tx
            .query("SELECT count(*) FROM employes_events", &[])
            .unwrap_err();
        assert_eq!(e.code().unwrap().code(), "42501");
    };
    check(&mut c);

    // A dump restored elsewhere: the grant comes back, the policy does not, and the table stays
    // closed (row level security on) until the recipe runs again.
    let dump = cluster.pg_dump("c", "realtime.dump");
    let target = Cluster::start_with("events-realtime-restored", &conf, &bin(), false);
    let mut t = target.connect();
    t.batch_execute(
        "CREATE ROLE anon NOLOGIN; CREATE ROLE authenticated NOLOGIN; CREATE ROLE service_role NOLOGIN BYPASSRLS;",
    )
    .unwrap();
    target.restore(&dump, "c");
    let mut t = target.connect();
    assert_eq!(
        count(&mut t, "SELECT count(*) FROM employes_events"),
        events
    );
    // pg_dump carries the grant but neither the policy nor the publication's membership of an
    // extension's table: closed until the recipe runs again (as its header says).
    assert_eq!(
        visible(
            &mut t,
            r#"{"sub":"u1","role":"authenticated","app_metadata":{"employes_hr":true}}"#
        ),
        0
    );
    t.batch_execute(&recipe).unwrap();
    check(&mut t);
    assert_eq!(
        count(
            &mut t,
            "SELECT count(*) FROM pg_publication_tables WHERE pubname = 'supabase_realtime' AND tablename = 'employes_events'",
        ),
        1
    );
}
