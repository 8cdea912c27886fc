//! The survival check: store M seeded random items through different nodes before the faults,
//! watch replica health once a second while they run, and after the final heal verify every item.
//!
//! "At r" is judged from the group's own view, corrected by what the driver knows for certain:
//! an item counts as at r when the group (as `GET /items/{id}/group` on a node that lists the
//! item in `GET /items` reports it) has at least r members that are `live && holding` **and**
//! whose containers are really running. Without that correction a group that has not yet noticed
//! a kill would still report r members, and recovery would look instant.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Result, bail};
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use butter_testbed::engine::Container;
use butter_testbed::fanout::concurrently;
use butter_testbed::http;

/// Timeout of one observation request (`/status`, `/items`, `/items/{id}/group`).
pub const OBSERVE_TIMEOUT: Duration = Duration::from_millis(1500);
/// Timeout of one retrieval (`GET /items/{id}` searches the network).
pub const RETRIEVE_TIMEOUT: Duration = Duration::from_secs(20);
/// Nodes (other than the one that stored it) an item is asked of before it counts as lost.
pub const RETRIEVE_TRIES: usize = 3;

/// Salt that separates the item stream from the fault-choice stream of one seed, so changing
/// the number of items does not change which containers die.
const ITEM_STREAM: u64 = 0x6974_656d_7321;

/// One stored item.
#[derive(Debug, Clone)]
pub struct Item {
    /// Its id: the hex sha-256 of `content`.
    pub id: String,
    /// The bytes stored.
    pub content: Vec<u8>,
    /// Label of the container it was stored through.
    pub stored_via: String,
}

/// Lower-case hex sha-256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `n` items of `size` random bytes from `seed` (the same seed gives the same bytes).
pub fn contents(seed: u64, n: usize, size: usize) -> Vec<Vec<u8>> {
    let mut rng = StdRng::seed_from_u64(seed ^ ITEM_STREAM);
    (0..n)
        .map(|_| {
            let mut b = vec![0u8; size];
            rng.fill_bytes(&mut b);
            b
        })
        .collect()
}

/// Stores every content through the up nodes in turn (item i through node i mod n, retrying on
/// the next node on failure) and checks the returned id is the content's sha-256. `progress`
/// hears how many are stored and answers whether to go on (false: stop with an error).
pub fn store(
    nodes: &[Container],
    contents: Vec<Vec<u8>>,
    mut progress: impl FnMut(usize) -> bool,
) -> Result<Vec<Item>> {
    let up: Vec<(&Container, SocketAddr)> = nodes
        .iter()
        .filter(|c| c.is_up())
        .filter_map(|c| c.http().map(|a| (c, a)))
        .collect();
    if up.is_empty() {
        bail!("no running node to store through");
    }
    let mut out = Vec::with_capacity(contents.len());
    for (i, content) in contents.into_iter().enumerate() {
        let want = sha256_hex(&content);
        let mut last = None;
        let mut stored = None;
        for k in 0..up.len().min(3) {
            let (c, addr) = up[(i + k) % up.len()];
            match http::request(addr, "PUT", "/items", &content, Duration::from_secs(10)) {
                Ok(r) if r.status == 201 => {
                    #[derive(Deserialize)]
                    struct Put {
                        id: String,
                    }
                    let id = r.json::<Put>()?.id;
                    if id != want {
                        bail!(
                            "{} returned id {id} for an item whose sha-256 is {want}",
                            c.label()
                        );
                    }
                    stored = Some(c.label());
                    break;
                }
                Ok(r) => last = Some(format!("{}: HTTP {} {}", c.label(), r.status, r.error())),
                Err(e) => last = Some(format!("{}: {e:#}", c.label())),
            }
        }
        let Some(stored_via) = stored else {
            bail!("item {i} could not be stored: {}", last.unwrap_or_default());
        };
        out.push(Item {
            id: want,
            content,
            stored_via,
        });
        if !progress(i + 1) {
            return Err(crate::run::Interrupted.into());
        }
    }
    Ok(out)
}

/// Replica health of every item at one instant.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Sample {
    /// Seconds since the run started, when the observation began.
    pub t_secs: f64,
    /// Items with at least r live holding members.
    pub at_r: usize,
    /// Items with 1 to r-1.
    pub under_r: usize,
    /// Items no running node holds (unavailable now; lost if it stays so after the heal).
    pub lost: usize,
    /// Butter containers running.
    pub nodes_up: usize,
    /// Items whose live holding members all sit on one site while running nodes span several
    /// (one site failure away from unavailable). Absent in reports written before it existed.
    #[serde(default)]
    pub one_site: usize,
}

/// One observation: the sample and each item's live holding member count.
#[derive(Debug, Clone)]
pub struct Observation {
    /// The aggregate.
    pub sample: Sample,
    /// Per item (same order as the items): live holding members (see the module docs).
    pub replicas: Vec<usize>,
    /// Per item: running nodes that list it in `GET /items`.
    pub listed: Vec<usize>,
}

use butter_testbed::api::{Group, Status};

/// Observes every item once: `/status` and `/items` of each running node, then the group of
/// each item from one of its holders. Node requests run in parallel, one thread per node.
pub fn observe(containers: &[Container], ids: &[String], r: usize, t_secs: f64) -> Observation {
    let up: Vec<SocketAddr> = containers
        .iter()
        .filter(|c| c.is_up())
        .filter_map(Container::http)
        .collect();
    // Each running node: its peer id and the items it lists.
    let views: Vec<Option<(String, BTreeSet<String>)>> = concurrently(&up, up.len(), |&addr| {
        let st: Status = http::get(addr, "/status", OBSERVE_TIMEOUT)
            .ok()
            .filter(|r| r.status == 200)?
            .json()
            .ok()?;
        let items: Vec<String> = http::get(addr, "/items", OBSERVE_TIMEOUT)
            .ok()
            .filter(|r| r.status == 200)?
            .json()
            .ok()?;
        Some((st.id, items.into_iter().collect()))
    });
    let live_ids: BTreeSet<&str> = views.iter().flatten().map(|(id, _)| id.as_str()).collect();
    // Site (LAN) of each running node, by peer id.
    let site_of: BTreeMap<&str, &str> = views
        .iter()
        .zip(
            containers
                .iter()
                .filter(|c| c.is_up() && c.http().is_some()),
        )
        .filter_map(|(v, c)| v.as_ref().map(|(id, _)| (id.as_str(), c.lan.as_str())))
        .collect();
    let sites_up: BTreeSet<&str> = site_of.values().copied().collect();
    // Holders of each item (indices into `up`), and which holder to ask (spread by item index).
    let holders: Vec<Vec<usize>> = ids
        .iter()
        .map(|id| {
            views
                .iter()
                .enumerate()
                .filter(|(_, v)| v.as_ref().is_some_and(|(_, items)| items.contains(id)))
                .map(|(i, _)| i)
                .collect()
        })
        .collect();
    let mut asks: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (item, hs) in holders.iter().enumerate() {
        if !hs.is_empty() {
            asks.entry(hs[item % hs.len()]).or_default().push(item);
        }
    }
    // Live holding members and the sites they span.
    let count = |g: &Group| {
        let holding: Vec<&str> = g
            .members
            .iter()
            .filter(|m| m.live && m.holding && live_ids.contains(m.id.as_str()))
            .map(|m| m.id.as_str())
            .collect();
        let sites: BTreeSet<&str> = holding
            .iter()
            .filter_map(|id| site_of.get(id))
            .copied()
            .collect();
        (holding.len(), sites.len())
    };
    // A node that fails once (killed during the observation) is not asked again in this one:
    // otherwise every remaining item would wait out a timeout on it and one observation could
    // take a minute.
    let dead: Vec<AtomicBool> = up.iter().map(|_| AtomicBool::new(false)).collect();
    let ask = |node: usize, item: usize| -> Option<(usize, usize)> {
        if dead[node].load(Ordering::Relaxed) {
            return None;
        }
        let path = format!("/items/{}/group", ids[item]);
        let Ok(r) = http::get(up[node], &path, OBSERVE_TIMEOUT) else {
            dead[node].store(true, Ordering::Relaxed);
            return None;
        };
        (r.status == 200)
            .then(|| r.json::<Group>().ok())
            .flatten()
            .filter(|g| !g.orphan)
            .map(|g| count(&g))
    };
    let mut replicas = vec![0usize; ids.len()];
    let mut spans = vec![0usize; ids.len()];
    let asks: Vec<(usize, Vec<usize>)> = asks.into_iter().collect();
    let answers: Vec<(usize, (usize, usize))> = concurrently(&asks, asks.len(), |(node, items)| {
        items
            .iter()
            .map(|&item| {
                // The chosen holder first, then the others: a node may list an item it keeps
                // outside the group (404 from /group, or an orphan's view).
                let n = std::iter::once(*node)
                    .chain(holders[item].iter().copied().filter(|h| h != node))
                    .find_map(|h| ask(h, item))
                    .unwrap_or((0, 0));
                (item, n)
            })
            .collect::<Vec<_>>()
    })
    .into_iter()
    .flatten()
    .collect();
    for (item, (n, sites)) in answers {
        replicas[item] = n;
        spans[item] = sites;
    }
    let listed: Vec<usize> = holders.iter().map(Vec::len).collect();
    let mut sample = Sample {
        t_secs,
        at_r: 0,
        under_r: 0,
        lost: 0,
        nodes_up: up.len(),
        one_site: spans
            .iter()
            .filter(|&&s| s == 1 && sites_up.len() > 1)
            .count(),
    };
    for (n, l) in replicas.iter().zip(&listed) {
        if *l == 0 {
            sample.lost += 1;
        } else if *n >= r {
            sample.at_r += 1;
        } else {
            sample.under_r += 1;
        }
    }
    Observation {
        sample,
        replicas,
        listed,
    }
}

/// The verdict on one item after the heal.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ItemCheck {
    /// Item id.
    pub id: String,
    /// Stored through.
    pub stored_via: String,
    /// Retrieved through (the first node that returned the right bytes).
    pub retrieved_via: Option<String>,
    /// Attempts until then (1 = first try).
    pub attempts: usize,
    /// `x-butter-holder` of the successful answer.
    pub holder: Option<String>,
    /// `x-butter-hops` of the successful answer.
    pub hops: Option<u32>,
    /// Answers whose bytes did not hash to the id or differed from what was stored.
    pub wrong_content: usize,
    /// Live holding members (see the module docs).
    pub replicas: usize,
    /// Running nodes listing it.
    pub listed: usize,
    /// Last failure, if any.
    pub error: Option<String>,
}

/// Retrieves every item through up to [`RETRIEVE_TRIES`] running nodes other than the one that
/// stored it, checking the bytes against the id (sha-256) and against what was stored.
pub fn retrieve_all(containers: &[Container], items: &[Item], obs: &Observation) -> Vec<ItemCheck> {
    let up: Vec<(String, SocketAddr)> = containers
        .iter()
        .filter(|c| c.is_up())
        .filter_map(|c| c.http().map(|a| (c.label(), a)))
        .collect();
    let one = |i: usize| -> ItemCheck {
        let item = &items[i];
        let mut check = ItemCheck {
            id: item.id.clone(),
            stored_via: item.stored_via.clone(),
            retrieved_via: None,
            attempts: 0,
            holder: None,
            hops: None,
            wrong_content: 0,
            replicas: obs.replicas.get(i).copied().unwrap_or(0),
            listed: obs.listed.get(i).copied().unwrap_or(0),
            error: None,
        };
        let others: Vec<&(String, SocketAddr)> =
            up.iter().filter(|(l, _)| *l != item.stored_via).collect();
        if others.is_empty() {
            check.error = Some("no other running node to ask".into());
            return check;
        }
        for k in 0..RETRIEVE_TRIES.min(others.len()) {
            let (label, addr) = others[(i + k) % others.len()];
            check.attempts = k + 1;
            match http::get(*addr, &format!("/items/{}", item.id), RETRIEVE_TIMEOUT) {
                Ok(r) if r.status == 200 => {
                    if sha256_hex(&r.body) != item.id || r.body != item.content {
                        check.wrong_content += 1;
                        check.error = Some(format!("{label}: bytes do not match the id"));
                        continue;
                    }
                    check.retrieved_via = Some(label.clone());
                    check.holder = r.header("x-butter-holder").map(String::from);
                    check.hops = r.header("x-butter-hops").and_then(|h| h.parse().ok());
                    check.error = None;
                    return check;
                }
                Ok(r) => check.error = Some(format!("{label}: HTTP {} {}", r.status, r.error())),
                Err(e) => check.error = Some(format!("{label}: {e:#}")),
            }
        }
        check
    };
    // A few threads: retrievals search the network, and the nodes share two cores.
    const THREADS: usize = 6;
    let indices: Vec<usize> = (0..items.len()).collect();
    concurrently(&indices, THREADS, |&i| one(i))
}

/// The ids of `items`, in order.
pub fn ids(items: &[Item]) -> Vec<String> {
    items.iter().map(|i| i.id.clone()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_sha256_hex() {
        assert_eq!(
            sha256_hex(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn contents_are_seeded() {
        let a = contents(5, 3, 4096);
        assert_eq!(a, contents(5, 3, 4096));
        assert_ne!(a, contents(6, 3, 4096));
        assert_eq!(a.len(), 3);
        assert!(a.iter().all(|c| c.len() == 4096));
        assert_ne!(a[0], a[1]);
        // A longer run starts with the same items.
        assert_eq!(contents(5, 5, 4096)[..3], a[..]);
    }

    #[test]
    fn store_needs_a_node() {
        let err = store(&[], vec![vec![1]], |_| true).unwrap_err();
        assert!(format!("{err}").contains("no running node"));
    }
}
