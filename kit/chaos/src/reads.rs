//! Reads during the run: a client that asks running nodes for stored items at a steady rate
//! while the faults go on, so a run also says how available the data stayed, not only whether
//! it survived (an experiment's `workload.reads_per_sec`).
//!
//! One thread, one read at a time: item and node are drawn from a seeded stream, the node among
//! those running (as listed at most a second ago); `GET /items/{id}` must return bytes whose
//! sha-256 is the id. Like a client with a list of nodes, a read that gets no answer from its
//! node (just killed, say) tries up to [`TRIES`] nodes in all before it counts as failed; the
//! retries are counted. A read that has to wait out its timeout delays the next one, so under
//! faults fewer reads are made than the rate asks; the report counts what was attempted.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::backend::Backend;
use crate::log::FaultLog;
use crate::survival::sha256_hex;
use butter_testbed::engine::Container;
use butter_testbed::http;

/// How long one request may take (it may search the network).
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Nodes a read asks before it counts as failed.
pub const TRIES: usize = 3;
/// Salt of the read stream (see `survival`'s item stream and `run`'s choice stream).
const READ_STREAM: u64 = 0x7265_6164_7321;

/// What the reads found.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Reads {
    /// The rate asked for (reads per second).
    pub rate: f64,
    /// Reads made.
    pub attempted: usize,
    /// Answered with the right bytes.
    pub ok: usize,
    /// Answered with bytes that do not hash to the id (a failure of the run).
    pub wrong_bytes: usize,
    /// No right answer from any of the nodes asked (or no running node to ask).
    pub failed: usize,
    /// Reads that needed another node after one did not answer (counted once per read).
    #[serde(default)]
    pub retried: usize,
    /// Latency of the successful reads: median, 99th percentile, worst (ms).
    pub p50_ms: f64,
    /// See `p50_ms`.
    pub p99_ms: f64,
    /// See `p50_ms`.
    pub max_ms: f64,
    /// Each failed read: seconds since the start and why (at most 100 kept).
    pub failures: Vec<(f64, String)>,
    /// Each node that did not answer a read another node then answered: seconds since the
    /// start and why (at most 100 kept).
    #[serde(default)]
    pub retry_causes: Vec<(f64, String)>,
}

impl Reads {
    /// Share of the reads that returned the right bytes, in percent.
    pub fn ok_percent(&self) -> f64 {
        if self.attempted == 0 {
            100.0
        } else {
            100.0 * self.ok as f64 / self.attempted as f64
        }
    }
}

/// The running reader.
pub struct Reader {
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<Reads>>,
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

impl Reader {
    /// Starts reading `ids` at `rate` per second through `backend`'s running nodes.
    pub fn spawn(
        backend: Arc<dyn Backend>,
        ids: Arc<Vec<String>>,
        rate: f64,
        seed: u64,
        log: Arc<FaultLog>,
    ) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut rng = StdRng::seed_from_u64(seed ^ READ_STREAM);
            let every = Duration::from_secs_f64(1.0 / rate);
            let mut reads = Reads {
                rate,
                ..Reads::default()
            };
            let mut latencies = Vec::new();
            let nodes: Mutex<(Instant, Vec<Container>)> =
                Mutex::new((Instant::now(), backend.nodes().unwrap_or_default()));
            let mut next = Instant::now();
            while !flag.load(Ordering::Relaxed) && !ids.is_empty() {
                let now = Instant::now();
                if now < next {
                    std::thread::sleep((next - now).min(Duration::from_millis(100)));
                    continue;
                }
                next += every;
                let up: Vec<Container> = {
                    let mut n = nodes.lock().unwrap_or_else(|e| e.into_inner());
                    if n.0.elapsed() > Duration::from_secs(1) {
                        *n = (Instant::now(), backend.nodes().unwrap_or_default());
                    }
                    n.1.iter().filter(|c| c.is_up()).cloned().collect()
                };
                let id = &ids[rng.random_range(0..ids.len())];
                reads.attempted += 1;
                let note = |reads: &mut Reads, why: String| {
                    if reads.failures.len() < 100 {
                        reads.failures.push(((log.t() * 10.0).round() / 10.0, why));
                    }
                };
                let asked: Vec<(String, std::net::SocketAddr)> = up
                    .choose_multiple(&mut rng, TRIES)
                    .filter_map(|c| c.http().map(|a| (c.label(), a)))
                    .collect();
                if asked.is_empty() {
                    reads.failed += 1;
                    note(&mut reads, "no running node".into());
                    continue;
                }
                let began = Instant::now();
                let mut last = String::new();
                let mut done = false;
                for (k, (label, addr)) in asked.iter().enumerate() {
                    if k == 1 {
                        reads.retried += 1;
                    }
                    match http::get(*addr, &format!("/items/{id}"), READ_TIMEOUT) {
                        Ok(r) if r.status == 200 && sha256_hex(&r.body) == *id => {
                            reads.ok += 1;
                            latencies.push(began.elapsed().as_secs_f64() * 1000.0);
                            done = true;
                        }
                        Ok(r) if r.status == 200 => {
                            reads.wrong_bytes += 1;
                            note(&mut reads, format!("{label}: bytes do not match the id"));
                            done = true;
                        }
                        Ok(r) => last = format!("{label}: HTTP {}", r.status),
                        Err(e) => last = format!("{label}: {e}"),
                    }
                    if done {
                        break;
                    }
                    if k + 1 < asked.len() && reads.retry_causes.len() < 100 {
                        let t = (log.t() * 10.0).round() / 10.0;
                        reads.retry_causes.push((t, last.clone()));
                    }
                }
                if !done {
                    reads.failed += 1;
                    note(&mut reads, last);
                }
            }
            latencies.sort_by(f64::total_cmp);
            reads.p50_ms = percentile(&latencies, 0.5);
            reads.p99_ms = percentile(&latencies, 0.99);
            reads.max_ms = latencies.last().copied().unwrap_or(0.0);
            reads
        });
        Reader {
            stop,
            handle: Some(handle),
        }
    }

    /// Stops reading and returns what was found.
    pub fn finish(mut self) -> Reads {
        self.stop.store(true, Ordering::Relaxed);
        self.handle
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_sorted_latencies() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), 51.0);
        assert_eq!(percentile(&v, 0.99), 99.0);
        assert_eq!(percentile(&[], 0.5), 0.0);
        let r = Reads {
            attempted: 4,
            ok: 3,
            ..Reads::default()
        };
        assert_eq!(r.ok_percent(), 75.0);
        assert_eq!(Reads::default().ok_percent(), 100.0);
    }
}
