//! Webhook throughput (`--webhooks`): how many events per second the webhook worker delivers to
//! one subscriber, a receiver on loopback that checks every signature and answers 204 at once.
//!
//! A first sync of `employees` writes the events (two per employee and a sync event). Each
//! round subscribes the receiver anew and hands it the whole log as a backlog (its cursor set
//! back to 0), then times from that commit to the last delivery recorded as delivered.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use employes_sim::{Sim, SimConfig};
use employes_sync_core::webhook::{secret_key, signature};
use employes_sync_e2e::{wait_until, Client, Cluster};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// Requests the receiver got, and how many had a valid signature.
#[derive(Default)]
struct Counts {
    requests: AtomicU64,
    verified: AtomicU64,
}

/// A minimal HTTP/1.1 receiver (keep-alive, one thread per connection); returns its port.
fn receiver(counts: Arc<Counts>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let counts = counts.clone();
            std::thread::spawn(move || serve(stream, &counts));
        }
    });
    port
}

fn serve(stream: TcpStream, counts: &Counts) {
    let key = secret_key(SECRET).unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut out = stream;
    loop {
        let mut length = 0usize;
        let (mut id, mut timestamp, mut sig) = (String::new(), 0i64, String::new());
        let mut line = String::new();
        // The request line, then the headers up to an empty line.
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        loop {
            line.clear();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            let Some((name, value)) = l.split_once(':') else {
                continue;
            };
            let value = value.trim();
            match name.to_ascii_lowercase().as_str() {
                "content-length" => length = value.parse().unwrap_or(0),
                "webhook-id" => id = value.to_owned(),
                "webhook-timestamp" => timestamp = value.parse().unwrap_or(0),
                "webhook-signature" => sig = value.to_owned(),
                _ => {}
            }
        }
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        counts.requests.fetch_add(1, Ordering::Relaxed);
        let body = String::from_utf8_lossy(&body);
        if sig
            .split(' ')
            .any(|s| s == signature(&key, &id, timestamp, &body))
        {
            counts.verified.fetch_add(1, Ordering::Relaxed);
        }
        if out
            .write_all(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n")
            .is_err()
        {
            return;
        }
    }
}

pub fn section(cluster: &Cluster, c: &mut Client, employees: usize, rounds: usize) -> String {
    let sim = Sim::start(SimConfig {
        employees,
        seed: 4242,
        rps: 0.0,
        ..SimConfig::default()
    })
    .unwrap();
    cluster.use_sim(&sim, 10000.0);
    let id: uuid::Uuid = c
        .query_one(
            "SELECT id FROM employes_sync_trigger('manual', 'bench')",
            &[],
        )
        .unwrap()
        .get(0);
    c.query_one("SELECT status FROM employes_sync_wait($1, 3600)", &[&id])
        .unwrap();
    let events: i64 = c
        .query_one("SELECT count(*) FROM employes_events", &[])
        .unwrap()
        .get(0);
    let counts = Arc::new(Counts::default());
    let port = receiver(counts.clone());
    let url = format!("http://127.0.0.1:{port}/hook");
    let mut rates = Vec::new();
    for round in 0..rounds {
        let before = counts.requests.load(Ordering::Relaxed);
        let sub: uuid::Uuid = c
            .query_one(
                "SELECT subscription_id FROM employes_webhook_subscribe($1, NULL, $2)",
                &[&url, &SECRET],
            )
            .unwrap()
            .get(0);
        // The whole log as this subscriber's backlog.
        c.execute(
            "UPDATE employes_webhook_subscriptions SET last_event_id = 0 WHERE id = $1",
            &[&sub],
        )
        .unwrap();
        let started = Instant::now();
        wait_until(Duration::from_secs(3600), "every event delivered", || {
            c.query_one(
                "SELECT count(*) FROM employes_webhook_deliveries WHERE subscription_id = $1 AND status = 'delivered'",
                &[&sub],
            )
            .unwrap()
            .get::<_, i64>(0)
                == events
        });
        let took = started.elapsed().as_secs_f64();
        let got = counts.requests.load(Ordering::Relaxed) - before;
        eprintln!(
            "bench: webhooks round {}: {events} events in {took:.2} s ({:.0}/s), {got} requests",
            round + 1,
            events as f64 / took
        );
        rates.push(events as f64 / took);
        c.execute("SELECT employes_webhook_unsubscribe($1)", &[&sub])
            .unwrap();
    }
    rates.sort_by(f64::total_cmp);
    let mut md = String::new();
    writeln!(md, "## Webhook throughput\n").unwrap();
    writeln!(
        md,
        "One subscriber, a receiver on loopback that checks each signature and answers 204; a backlog of {events} events (a first sync of {employees} employees); {rounds} rounds.\n"
    )
    .unwrap();
    writeln!(
        md,
        "| events/s (median) | min | max | requests | valid signatures |\n|---|---|---|---|---|"
    )
    .unwrap();
    writeln!(
        md,
        "| {:.0} | {:.0} | {:.0} | {} | {} |",
        rates[rates.len() / 2],
        rates[0],
        rates[rates.len() - 1],
        counts.requests.load(Ordering::Relaxed),
        counts.verified.load(Ordering::Relaxed)
    )
    .unwrap();
    md
}
