//! The HTTP side of a sync: a few threads fed by a queue where list pages go before histories,
//! each fetching and hashing one unit of work within the client's rate limit.

use std::collections::VecDeque;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::canonical::content_hash;
use crate::client::{ApiError, Client, ListPage};
use crate::versions::{unstorable, Incoming};

pub(super) enum Job {
    Page(u32),
    History(String),
}

/// A fetched unit of work, hashed on the HTTP thread that fetched it (canonical hashing is the
/// costliest Rust step of a sync; the main thread only compares).
pub(super) enum Event {
    Page(u32, Result<(ListPage, Vec<Checked>), ApiError>),
    History(String, Result<Option<(Incoming, Option<String>)>, ApiError>),
}

/// What the HTTP thread found out about one record of a list page: its content hash, and why
/// it cannot be stored as received (`versions::unstorable`), if it cannot.
pub(super) struct Checked {
    pub(super) hash: String,
    pub(super) unstorable: Option<String>,
}

struct Queue {
    jobs: Mutex<(VecDeque<Job>, bool)>,
    ready: Condvar,
}

/// A few HTTP threads fed by a queue where list pages go before histories.
pub(super) struct Pipeline {
    queue: Arc<Queue>,
    events: Receiver<Event>,
    threads: Vec<JoinHandle<()>>,
    pub(super) outstanding: usize,
}

impl Pipeline {
    pub(super) fn start(client: &Client, threads: usize) -> Pipeline {
        let queue = Arc::new(Queue {
            jobs: Mutex::new((VecDeque::new(), false)),
            ready: Condvar::new(),
        });
        // Bounded: when the database side is slower than HTTP, the threads wait instead of
        // piling parsed pages up in memory.
        let (tx, events) = mpsc::sync_channel(threads.max(1) * 2);
        let threads = (0..threads.max(1))
            .map(|_| {
                let (queue, client, tx): (Arc<Queue>, Client, SyncSender<Event>) =
                    (queue.clone(), client.clone(), tx.clone());
                std::thread::spawn(move || loop {
                    let job = {
                        let mut guard = queue.jobs.lock().unwrap_or_else(|e| e.into_inner());
                        loop {
                            if guard.1 {
                                return;
                            }
                            if let Some(job) = guard.0.pop_front() {
                                break job;
                            }
                            guard = queue.ready.wait(guard).unwrap_or_else(|e| e.into_inner());
                        }
                    };
                    let event = match job {
                        Job::Page(p) => Event::Page(
                            p,
                            client.list_page(p).map(|lp| {
                                let checked = lp
                                    .records
                                    .iter()
                                    .map(|r| Checked {
                                        hash: content_hash(r),
                                        unstorable: unstorable(r),
                                    })
                                    .collect();
                                (lp, checked)
                            }),
                        ),
                        Job::History(id) => {
                            let r = client.employments(&id).map(|body| {
                                body.map(|b| {
                                    let why = unstorable(&b);
                                    (Incoming::new(id.clone(), b), why)
                                })
                            });
                            Event::History(id, r)
                        }
                    };
                    if tx.send(event).is_err() {
                        return;
                    }
                })
            })
            .collect();
        Pipeline {
            queue,
            events,
            threads,
            outstanding: 0,
        }
    }

    pub(super) fn push(&mut self, job: Job) {
        let mut guard = self.queue.jobs.lock().unwrap_or_else(|e| e.into_inner());
        match job {
            Job::Page(_) => guard.0.push_front(job),
            Job::History(_) => guard.0.push_back(job),
        }
        self.outstanding += 1;
        self.queue.ready.notify_one();
    }

    /// Drops jobs not yet started; in-flight requests finish (or stop, with the client).
    pub(super) fn cancel_pending(&mut self) {
        let mut guard = self.queue.jobs.lock().unwrap_or_else(|e| e.into_inner());
        self.outstanding -= guard.0.len();
        guard.0.clear();
    }

    pub(super) fn recv(&mut self, timeout: Duration) -> Option<Event> {
        match self.events.recv_timeout(timeout) {
            Ok(e) => {
                self.outstanding -= 1;
                Some(e)
            }
            Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => None,
        }
    }

    /// Stops the threads; `join` waits for in-flight requests (skipped when stopping on a
    /// signal, so a server shutdown is not held up by a slow API).
    pub(super) fn shutdown(self, join: bool) {
        {
            let mut guard = self.queue.jobs.lock().unwrap_or_else(|e| e.into_inner());
            guard.1 = true;
            guard.0.clear();
        }
        self.queue.ready.notify_all();
        if join {
            for t in self.threads {
                let _ = t.join();
            }
        }
    }
}
