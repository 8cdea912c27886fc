//! The client: one thread stores items through random live nodes, another reads random earlier
//! items through random live nodes and checks their bytes. Only a `201 Created` counts as
//! acknowledged; the final check asks for every acknowledged item that was not deleted.
//!
//! With a working set (`keep`), the writer deletes the oldest live item once more than `keep` are
//! live — through the node that stored it, else any live node that is a member of its group — so
//! the network holds a steady amount of data and a node's memory has no reason to grow.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use butter_testbed::http::request;

/// The content of item `index`: a readable header, then bytes derived from the seed.
pub fn content(seed: u64, index: u64, size: usize) -> Vec<u8> {
    let mut v = format!("soak {seed} item {index}:").into_bytes();
    let mut z = seed ^ index.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    while v.len() < size.max(32) {
        z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut x = z;
        x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        v.extend_from_slice(&(x ^ (x >> 31)).to_le_bytes());
    }
    v.truncate(size.max(32));
    v
}

/// An acknowledged item.
#[derive(Clone, Debug)]
pub struct Acked {
    /// Which content (see [`content`]).
    pub index: u64,
    /// The id the node answered.
    pub id: String,
    /// The node that stored it.
    pub node: usize,
}

/// Counters, readable while the client runs.
#[derive(Debug, Default)]
pub struct Counters {
    /// PUTs answered 201.
    pub puts_ok: AtomicU64,
    /// PUTs answered otherwise or not at all.
    pub puts_failed: AtomicU64,
    /// GETs answered 200 with the right bytes.
    pub gets_ok: AtomicU64,
    /// GETs answered with an error status.
    pub gets_failed: AtomicU64,
    /// GETs answered 200 with bytes that are not the item's.
    pub gets_wrong: AtomicU64,
    /// GETs whose node went away mid-request (churn; not counted in the success rate).
    pub gets_cut: AtomicU64,
    /// Items deleted (a member answered 200).
    pub deletes_ok: AtomicU64,
    /// Items no live member would delete (they stay live and are checked at the end).
    pub deletes_failed: AtomicU64,
}

/// A snapshot of [`Counters`].
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Tally {
    /// PUTs answered 201.
    pub puts_ok: u64,
    /// PUTs answered otherwise or not at all.
    pub puts_failed: u64,
    /// GETs answered 200 with the right bytes.
    pub gets_ok: u64,
    /// GETs answered with an error status.
    pub gets_failed: u64,
    /// GETs answered 200 with wrong bytes.
    pub gets_wrong: u64,
    /// GETs cut by churn.
    pub gets_cut: u64,
    /// Items deleted.
    pub deletes_ok: u64,
    /// Deletes no live member accepted.
    pub deletes_failed: u64,
}

impl Tally {
    /// Share of answered GETs that returned the right bytes, in percent (100 with none).
    pub fn get_success_pct(&self) -> f64 {
        let answered = self.gets_ok + self.gets_failed + self.gets_wrong;
        if answered == 0 {
            100.0
        } else {
            100.0 * self.gets_ok as f64 / answered as f64
        }
    }
}

impl Counters {
    /// The current figures.
    pub fn tally(&self) -> Tally {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Tally {
            puts_ok: l(&self.puts_ok),
            puts_failed: l(&self.puts_failed),
            gets_ok: l(&self.gets_ok),
            gets_failed: l(&self.gets_failed),
            gets_wrong: l(&self.gets_wrong),
            gets_cut: l(&self.gets_cut),
            deletes_ok: l(&self.deletes_ok),
            deletes_failed: l(&self.deletes_failed),
        }
    }
}

/// What the client threads share with the driver.
pub struct Shared {
    /// Every node's HTTP address.
    pub http: Vec<SocketAddr>,
    /// Which nodes are up (the driver flips these around stops and starts).
    pub up: Vec<AtomicBool>,
    /// Acknowledged items not deleted, in order.
    pub acked: Mutex<Vec<Acked>>,
    /// Ids of deleted items (a GET of one that fails is not a failure).
    pub deleted: Mutex<std::collections::HashSet<String>>,
    /// Counters.
    pub counters: Counters,
    /// Set to stop the client.
    pub stop: AtomicBool,
}

impl Shared {
    /// A random node that is up.
    fn pick(&self, rng: &mut SmallRng) -> Option<usize> {
        let up: Vec<usize> = (0..self.up.len())
            .filter(|&i| self.up[i].load(Ordering::Relaxed))
            .collect();
        (!up.is_empty()).then(|| up[rng.random_range(0..up.len())])
    }

    /// Acknowledged items so far.
    pub fn acked(&self) -> Vec<Acked> {
        self.acked.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Workload settings.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Workload {
    /// Seed of the client's choices and of item contents.
    pub seed: u64,
    /// Bytes per item.
    pub item_size: usize,
    /// Pause between PUTs.
    pub put_every: Duration,
    /// Pause between GETs.
    pub get_every: Duration,
    /// Live items to keep: beyond this the oldest is deleted (0: never delete).
    pub keep: usize,
}

/// Deletes `item` through the node that stored it, else through any live node that is a member
/// of its group (others answer 409). Returns whether one did.
fn delete(s: &Shared, item: &Acked) -> bool {
    let order = std::iter::once(item.node).chain((0..s.http.len()).filter(|&i| i != item.node));
    for i in order {
        if !s.up[i].load(Ordering::Relaxed) {
            continue;
        }
        let path = format!("/items/{}", item.id);
        if request(s.http[i], "DELETE", &path, &[], Duration::from_secs(5))
            .is_ok_and(|r| r.status == 200)
        {
            return true;
        }
    }
    false
}

/// Starts the writer and the reader.
pub fn start(shared: Arc<Shared>, w: Workload) -> Vec<JoinHandle<()>> {
    let writer = {
        let s = shared.clone();
        std::thread::spawn(move || {
            let mut rng = SmallRng::seed_from_u64(w.seed ^ 0x7772_6974);
            let mut index = 0u64;
            while !s.stop.load(Ordering::Relaxed) {
                std::thread::sleep(w.put_every);
                let Some(node) = s.pick(&mut rng) else {
                    continue;
                };
                let body = content(w.seed, index, w.item_size);
                let reply = request(
                    s.http[node],
                    "PUT",
                    "/items",
                    &body,
                    Duration::from_secs(10),
                );
                let id = reply.ok().filter(|r| r.status == 201).and_then(|r| {
                    serde_json::from_slice::<serde_json::Value>(&r.body)
                        .ok()
                        .and_then(|v| v["id"].as_str().map(String::from))
                });
                match id {
                    Some(id) => {
                        s.acked
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push(Acked { index, id, node });
                        s.counters.puts_ok.fetch_add(1, Ordering::Relaxed);
                        if w.keep > 0 {
                            trim_working_set(&s, w.keep);
                        }
                    }
                    None => {
                        s.counters.puts_failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
                index += 1;
            }
        })
    };
    let reader = std::thread::spawn(move || {
        let s = shared;
        let mut rng = SmallRng::seed_from_u64(w.seed ^ 0x7265_6164);
        while !s.stop.load(Ordering::Relaxed) {
            std::thread::sleep(w.get_every);
            let item = {
                let acked = s.acked.lock().unwrap_or_else(|e| e.into_inner());
                if acked.is_empty() {
                    continue;
                }
                acked[rng.random_range(0..acked.len())].clone()
            };
            let Some(node) = s.pick(&mut rng) else {
                continue;
            };
            let c = &s.counters;
            match fetch(s.http[node], &item, w) {
                Fetch::Ok => c.gets_ok.fetch_add(1, Ordering::Relaxed),
                // Deleted while we asked: not a failure.
                Fetch::Failed
                    if s.deleted
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .contains(&item.id) =>
                {
                    continue;
                }
                Fetch::Failed => c.gets_failed.fetch_add(1, Ordering::Relaxed),
                Fetch::Wrong => c.gets_wrong.fetch_add(1, Ordering::Relaxed),
                Fetch::Cut => c.gets_cut.fetch_add(1, Ordering::Relaxed),
            };
        }
    });
    vec![writer, reader]
}

/// Deletes the oldest live items while more than `keep` are live. The item leaves the reader's
/// pool before the delete is sent; one no member would delete goes back (it stays live).
fn trim_working_set(s: &Shared, keep: usize) {
    loop {
        let oldest = {
            let mut acked = s.acked.lock().unwrap_or_else(|e| e.into_inner());
            if acked.len() <= keep {
                return;
            }
            let a = acked.remove(0);
            s.deleted
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(a.id.clone());
            a
        };
        if delete(s, &oldest) {
            s.counters.deletes_ok.fetch_add(1, Ordering::Relaxed);
        } else {
            s.counters.deletes_failed.fetch_add(1, Ordering::Relaxed);
            s.deleted
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&oldest.id);
            s.acked
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(0, oldest);
            return;
        }
    }
}

/// How one GET went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fetch {
    /// 200 with the item's bytes.
    Ok,
    /// An error status (not found).
    Failed,
    /// 200 with other bytes.
    Wrong,
    /// No answer (the node went away).
    Cut,
}

/// GETs `item` through `node` and checks the bytes.
pub fn fetch(node: SocketAddr, item: &Acked, w: Workload) -> Fetch {
    match request(
        node,
        "GET",
        &format!("/items/{}", item.id),
        &[],
        Duration::from_secs(30),
    ) {
        Ok(r) if r.status == 200 && r.body == content(w.seed, item.index, w.item_size) => Fetch::Ok,
        Ok(r) if r.status == 200 => Fetch::Wrong,
        Ok(_) => Fetch::Failed,
        Err(_) => Fetch::Cut,
    }
}

/// The final check: every acknowledged item through up to three different live nodes, from
/// `threads` threads. Returns the items no node could return with the right bytes.
pub fn final_check(shared: &Arc<Shared>, w: Workload, threads: usize) -> Vec<Acked> {
    let acked = Arc::new(shared.acked());
    let lost = Arc::new(Mutex::new(Vec::new()));
    let handles: Vec<_> = (0..threads.max(1))
        .map(|t| {
            let (s, acked, lost) = (shared.clone(), acked.clone(), lost.clone());
            std::thread::spawn(move || {
                let mut rng = SmallRng::seed_from_u64(w.seed ^ t as u64);
                for item in acked.iter().skip(t).step_by(threads.max(1)) {
                    let ok = (0..3).any(|_| {
                        s.pick(&mut rng)
                            .is_some_and(|n| fetch(s.http[n], item, w) == Fetch::Ok)
                    });
                    if !ok {
                        lost.lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push(item.clone());
                    }
                }
            })
        })
        .collect();
    for h in handles {
        let _ = h.join();
    }
    let mut lost = lost.lock().unwrap_or_else(|e| e.into_inner()).clone();
    lost.sort_by_key(|a| a.index);
    lost
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contents_are_deterministic_distinct_and_sized() {
        assert_eq!(content(1, 2, 100), content(1, 2, 100));
        assert_ne!(content(1, 2, 100), content(1, 3, 100));
        assert_ne!(content(1, 2, 100), content(2, 2, 100));
        assert_eq!(content(1, 2, 4096).len(), 4096);
    }
}
