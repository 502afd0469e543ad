//! One round of deliveries: sent by a few threads, each taking the next delivery in turn, while
//! the calling thread keeps watch (`poll`, which the worker uses to notice a shutdown or an
//! unsubscription as it happens). What a receiver says about itself holds for the rest of the
//! round: after a connection error, a timeout, a 429 or a `Retry-After`, its other deliveries
//! are not sent this round but deferred, without counting an attempt, so a receiver that is
//! down costs one attempt per round and never holds up the other subscribers.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use super::{Attempt, Message};

/// One delivery of a round, with the subscription it goes to.
pub struct Outgoing<'a> {
    pub subscription: &'a str,
    pub message: Message<'a>,
}

/// What became of one delivery of a round.
#[derive(Debug, Clone, PartialEq)]
pub enum Sent {
    /// It was sent: the answer.
    Attempted(Attempt),
    /// Not sent: its receiver asked for a pause this round; try again after this long.
    Deferred(Duration),
    /// Not sent: the round was stopped (shutdown), or its subscription ended meanwhile.
    NotSent,
}

/// What the watch found: stop everything, or stop these subscriptions.
#[derive(Debug, Default, Clone)]
pub struct Stops {
    pub all: bool,
    pub subscriptions: HashSet<String>,
}

/// Whether an answer speaks for the receiver as a whole rather than for one message.
fn receiver_wide(a: &Attempt) -> Option<Duration> {
    match a {
        Attempt::Retry {
            status: None,
            retry_after,
            ..
        }
        | Attempt::Retry {
            status: Some(429),
            retry_after,
            ..
        } => Some(retry_after.unwrap_or_default()),
        Attempt::Retry {
            retry_after: Some(ra),
            ..
        } => Some(*ra),
        _ => None,
    }
}

/// Sends `items` with `parallel` threads through `send`, calling `poll` on this thread until
/// they are done (it should wait a little each time). A receiver-wide answer defers the other
/// deliveries to that subscription by at least `pause`.
pub fn send_round<F>(
    items: &[Outgoing<'_>],
    parallel: usize,
    pause: Duration,
    send: &(dyn Fn(&Message<'_>) -> Attempt + Sync),
    mut poll: F,
) -> Vec<Sent>
where
    F: FnMut() -> Stops,
{
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let stops = Mutex::new(Stops::default());
    let paused: Mutex<HashMap<String, Duration>> = Mutex::new(HashMap::new());
    let results: Mutex<Vec<Sent>> = Mutex::new(vec![Sent::NotSent; items.len()]);
    let threads = parallel.clamp(1, items.len().max(1));
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(item) = items.get(i) else { break };
                    let stopped = {
                        let s = stops.lock().unwrap_or_else(|e| e.into_inner());
                        s.all || s.subscriptions.contains(item.subscription)
                    };
                    let wait = paused
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .get(item.subscription)
                        .copied();
                    let outcome = if stopped {
                        Sent::NotSent
                    } else if let Some(wait) = wait {
                        Sent::Deferred(wait)
                    } else {
                        let a = send(&item.message);
                        if let Some(asked) = receiver_wide(&a) {
                            paused
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .insert(item.subscription.to_owned(), asked.max(pause));
                        }
                        Sent::Attempted(a)
                    };
                    results.lock().unwrap_or_else(|e| e.into_inner())[i] = outcome;
                }
                done.fetch_add(1, Ordering::SeqCst);
            });
        }
        while done.load(Ordering::SeqCst) < threads {
            let found = poll();
            let mut s = stops.lock().unwrap_or_else(|e| e.into_inner());
            s.all |= found.all;
            s.subscriptions.extend(found.subscriptions);
        }
    });
    results.into_inner().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;
    use std::time::Instant;

    fn items<'a>(subs: &'a [&'a str], ids: &'a [String]) -> Vec<Outgoing<'a>> {
        subs.iter()
            .zip(ids)
            .map(|(s, id)| Outgoing {
                subscription: s,
                message: Message {
                    url: "http://127.0.0.1:9/",
                    id,
                    key: b"0123456789abcdef01234567",
                    body: "{}",
                },
            })
            .collect()
    }

    fn nap() -> Stops {
        std::thread::sleep(Duration::from_millis(5));
        Stops::default()
    }

    #[test]
    fn a_receiver_that_is_down_costs_one_attempt_and_holds_up_nobody_else() {
        let subs = ["down", "down", "up", "down", "up", "down"];
        let ids: Vec<String> = (0..subs.len()).map(|i| format!("msg_{i}")).collect();
        let out = send_round(
            &items(&subs, &ids),
            1,
            Duration::from_secs(2),
            &|m| {
                if m.id == "msg_2" || m.id == "msg_4" {
                    Attempt::Delivered { status: 204 }
                } else {
                    Attempt::Retry {
                        status: None,
                        error: "connection refused".into(),
                        retry_after: None,
                    }
                }
            },
            nap,
        );
        assert!(matches!(out[0], Sent::Attempted(Attempt::Retry { .. })));
        assert_eq!(out[1], Sent::Deferred(Duration::from_secs(2)));
        assert_eq!(out[2], Sent::Attempted(Attempt::Delivered { status: 204 }));
        assert_eq!(out[3], Sent::Deferred(Duration::from_secs(2)));
        assert_eq!(out[4], Sent::Attempted(Attempt::Delivered { status: 204 }));
        assert_eq!(out[5], Sent::Deferred(Duration::from_secs(2)));
    }

    #[test]
    fn retry_after_holds_for_the_receiver_and_a_503_alone_does_not() {
        let subs = ["a", "a", "b", "b"];
        let ids: Vec<String> = (0..subs.len()).map(|i| format!("msg_{i}")).collect();
        let out = send_round(
            &items(&subs, &ids),
            1,
            Duration::from_millis(100),
            &|m| match m.id {
                "msg_0" => Attempt::Retry {
                    status: Some(429),
                    error: "slow down".into(),
                    retry_after: Some(Duration::from_secs(30)),
                },
                _ => Attempt::Retry {
                    status: Some(503),
                    error: "busy".into(),
                    retry_after: None,
                },
            },
            nap,
        );
        assert_eq!(out[1], Sent::Deferred(Duration::from_secs(30)));
        // A 503 without Retry-After is about that message: the next one is still sent.
        assert!(matches!(out[2], Sent::Attempted(_)));
        assert!(matches!(out[3], Sent::Attempted(_)));
    }

    #[test]
    fn a_stop_found_by_the_watch_sends_nothing_more() {
        let subs = ["a"; 40];
        let ids: Vec<String> = (0..subs.len()).map(|i| format!("msg_{i}")).collect();
        let sent = AtomicUsize::new(0);
        let seen_first = AtomicBool::new(false);
        let started = Instant::now();
        let out = send_round(
            &items(&subs, &ids),
            2,
            Duration::from_millis(100),
            &|_| {
                sent.fetch_add(1, Ordering::SeqCst);
                seen_first.store(true, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(50));
                Attempt::Delivered { status: 200 }
            },
            || {
                std::thread::sleep(Duration::from_millis(5));
                Stops {
                    all: false,
                    subscriptions: if seen_first.load(Ordering::SeqCst) {
                        HashSet::from(["a".to_owned()])
                    } else {
                        HashSet::new()
                    },
                }
            },
        );
        let n = sent.load(Ordering::SeqCst);
        assert!(n <= 4, "{n} sent after the stop");
        assert_eq!(
            out.iter()
                .filter(|s| matches!(s, Sent::Attempted(_)))
                .count(),
            n
        );
        assert!(out.iter().skip(n).all(|s| *s == Sent::NotSent));
        assert!(started.elapsed() < Duration::from_secs(1));
    }
}
