//! A closed-loop HTTP load generator for tests: client threads doing one GET per new
//! connection until stopped, counting answers by server pid and failures by kind.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use super::{body_pid, http_get};

#[derive(Default)]
pub struct LoadStats {
    /// Requests answered 200 with a pid.
    pub ok: u64,
    /// Failed requests by kind (refused, reset, timeout, bad response, ...).
    pub failures: BTreeMap<String, u64>,
    /// The first few failures, described.
    pub samples: Vec<String>,
    /// Every server pid that answered.
    pub pids: HashSet<i32>,
}

/// HTTP clients hammering `addr` until dropped (also on panic).
pub struct Load {
    stop: Arc<AtomicBool>,
    stats: Arc<Mutex<LoadStats>>,
    threads: Vec<JoinHandle<()>>,
}

impl Load {
    pub fn start(addr: SocketAddr, clients: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(Mutex::new(LoadStats::default()));
        let threads = (0..clients)
            .map(|_| {
                let (stop, stats) = (Arc::clone(&stop), Arc::clone(&stats));
                thread::spawn(move || {
                    while !stop.load(Ordering::SeqCst) {
                        let result = http_get(addr, Duration::from_secs(10));
                        let mut stats = stats.lock().unwrap_or_else(|e| e.into_inner());
                        let failure = match result {
                            Ok((200, body)) => match body_pid(&body) {
                                Some(pid) => {
                                    stats.ok += 1;
                                    stats.pids.insert(pid);
                                    continue;
                                }
                                None => ("bad body".to_owned(), format!("body {body:?}")),
                            },
                            Ok((status, body)) => {
                                (format!("status {status}"), format!("body {body:?}"))
                            }
                            Err(failure) => (failure.kind(), failure.to_string()),
                        };
                        *stats.failures.entry(failure.0).or_default() += 1;
                        if stats.samples.len() < 10 {
                            stats.samples.push(failure.1);
                        }
                    }
                })
            })
            .collect();
        Load {
            stop,
            stats,
            threads,
        }
    }

    /// Whether some request was answered by `pid`.
    pub fn seen(&self, pid: i32) -> bool {
        self.stats
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pids
            .contains(&pid)
    }

    /// Whether any request failed.
    pub fn failed(&self) -> bool {
        let stats = self.stats.lock().unwrap_or_else(|e| e.into_inner());
        !stats.failures.is_empty()
    }

    /// Stops the clients and returns what they saw.
    pub fn finish(mut self) -> LoadStats {
        self.stop_and_join();
        let mut stats = self.stats.lock().unwrap_or_else(|e| e.into_inner());
        std::mem::take(&mut *stats)
    }

    fn stop_and_join(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}
