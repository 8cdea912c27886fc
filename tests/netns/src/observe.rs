//! Questions about what the nodes know, asked over one poll of every `/peers` table.

use std::collections::BTreeSet;
use std::net::IpAddr;

use crate::lab::Lab;
use crate::node_api::Peer;

/// Same-site hosts a node keeps once its LAN is larger than that: the known-host table's default
/// capacity (`peers::Config::capacity`, 64), all of which a one-site network can fill.
pub const SITE_SHARE: usize = 64;

/// Fewest polled hosts that must list each host (its in-degree) on a LAN of more than this many:
/// a node known by 8 others keeps being probed, found and offered in samples when a few of them
/// fail at once. Smaller LANs need every host known by all the others.
pub const MIN_KNOWN_BY: usize = 8;

/// One poll: `tables[k]` is the table of host `hosts[k]` (`None`: the node did not answer).
#[derive(Debug, Clone)]
pub struct Poll {
    /// Host indices polled.
    pub hosts: Vec<usize>,
    /// Their tables.
    pub tables: Vec<Option<Vec<Peer>>>,
}

impl Poll {
    /// Polls `hosts` in parallel.
    pub fn take(lab: &Lab, hosts: &[usize]) -> Self {
        Self {
            hosts: hosts.to_vec(),
            tables: lab.poll(hosts),
        }
    }

    /// Lab hosts in each polled table (peers the lab cannot place are left out).
    pub fn known(&self, lab: &Lab) -> Vec<Option<BTreeSet<usize>>> {
        self.tables
            .iter()
            .map(|t| {
                t.as_ref()
                    .map(|peers| peers.iter().filter_map(|p| lab.host_of(p)).collect())
            })
            .collect()
    }

    /// Hosts (of those polled) that know fewer than their share of the polled hosts of their own
    /// subnet: every other one while that is at most [`SITE_SHARE`], else [`SITE_SHARE`] of them.
    pub fn lan_laggards(&self, lab: &Lab) -> Vec<usize> {
        let known = self.known(lab);
        let hosts = lab.hosts();
        self.hosts
            .iter()
            .zip(&known)
            .filter(|(i, k)| {
                let Some(k) = k else { return true };
                let same: Vec<&usize> = self
                    .hosts
                    .iter()
                    .filter(|j| *j != *i && hosts[**j].subnet == hosts[**i].subnet)
                    .collect();
                let have = same.iter().filter(|j| k.contains(j)).count();
                have < same.len().min(SITE_SHARE)
            })
            .map(|(i, _)| *i)
            .collect()
    }

    /// The LAN goal at any size (T6): every polled host holds its share of its subnet
    /// ([`lan_laggards`](Self::lan_laggards)), is listed by at least [`MIN_KNOWN_BY`] polled
    /// hosts (all the others on smaller LANs), and the who-knows-whom graph is strongly connected.
    /// Returns the hosts that hold it back (all of them when only connectivity is missing).
    pub fn lan_goal_laggards(&self, lab: &Lab) -> Vec<usize> {
        let mut lag = self.lan_laggards(lab);
        if !lag.is_empty() {
            return lag;
        }
        let need = MIN_KNOWN_BY.min(self.hosts.len().saturating_sub(1));
        lag = self
            .hosts
            .iter()
            .zip(self.in_degrees(lab))
            .filter(|(_, d)| *d < need)
            .map(|(h, _)| *h)
            .collect();
        if lag.is_empty() && !self.strongly_connected(lab) {
            lag = self.hosts.clone();
        }
        lag
    }

    /// How many polled hosts list each polled host (in `hosts` order).
    pub fn in_degrees(&self, lab: &Lab) -> Vec<usize> {
        let known = self.known(lab);
        self.hosts
            .iter()
            .map(|j| known.iter().flatten().filter(|k| k.contains(j)).count())
            .collect()
    }

    /// Whether every polled host reaches every other through "knows" edges (the who-knows-whom
    /// graph among polled hosts is strongly connected). A host that did not answer breaks it.
    pub fn strongly_connected(&self, lab: &Lab) -> bool {
        let known = self.known(lab);
        let index: std::collections::BTreeMap<usize, usize> = self
            .hosts
            .iter()
            .enumerate()
            .map(|(k, h)| (*h, k))
            .collect();
        let Some(out): Option<Vec<Vec<usize>>> = known
            .iter()
            .map(|k| {
                k.as_ref()
                    .map(|set| set.iter().filter_map(|h| index.get(h).copied()).collect())
            })
            .collect()
        else {
            return false;
        };
        let mut inc = vec![Vec::new(); out.len()];
        for (a, targets) in out.iter().enumerate() {
            for b in targets {
                inc[*b].push(a);
            }
        }
        let reach_all = |edges: &[Vec<usize>]| {
            let mut seen = vec![false; edges.len()];
            let mut stack = vec![0];
            while let Some(a) = stack.pop() {
                if !std::mem::replace(&mut seen[a], true) {
                    stack.extend(edges[a].iter().copied());
                }
            }
            seen.iter().all(|s| *s)
        };
        out.is_empty() || (reach_all(&out) && reach_all(&inc))
    }

    /// For each polled host lagging behind its subnet, the polled same-subnet hosts it does not
    /// know, as `"bt-s1h2 misses bt-s1h7 bt-s1h9"` lines (for diagnosing slow runs).
    pub fn describe_lan_gaps(&self, lab: &Lab) -> Vec<String> {
        let known = self.known(lab);
        let hosts = lab.hosts();
        let lagging: BTreeSet<usize> = self.lan_laggards(lab).into_iter().collect();
        let mut out = Vec::new();
        for (i, k) in self.hosts.iter().zip(&known) {
            if !lagging.contains(i) {
                continue;
            }
            let Some(k) = k else {
                out.push(format!("{} did not answer", hosts[*i].name));
                continue;
            };
            let missing: Vec<&str> = self
                .hosts
                .iter()
                .filter(|j| *j != i && hosts[**j].subnet == hosts[*i].subnet && !k.contains(j))
                .map(|j| hosts[*j].name.as_str())
                .collect();
            if !missing.is_empty() {
                let more = missing.len().saturating_sub(6);
                let shown = missing[..missing.len().min(6)].join(" ");
                let more = if more > 0 {
                    format!(" (+{more})")
                } else {
                    String::new()
                };
                out.push(format!("{} misses {shown}{more}", hosts[*i].name));
            }
        }
        out
    }

    /// Hosts (of those polled) that do not yet know a host in every other subnet of the lab.
    pub fn cross_laggards(&self, lab: &Lab) -> Vec<usize> {
        let known = self.known(lab);
        let hosts = lab.hosts();
        let subnets: BTreeSet<u32> = hosts.iter().map(|h| h.subnet).collect();
        self.hosts
            .iter()
            .zip(&known)
            .filter(|(i, k)| {
                let Some(k) = k else { return true };
                let mine = hosts[**i].subnet;
                let reached: BTreeSet<u32> = k.iter().map(|j| hosts[*j].subnet).collect();
                subnets.iter().any(|s| *s != mine && !reached.contains(s))
            })
            .map(|(i, _)| *i)
            .collect()
    }

    /// `(host, peer)` pairs where a host knows a peer outside its own subnet, including peers
    /// the lab cannot place whose address is not in the host's subnet.
    pub fn cross_subnet_entries(&self, lab: &Lab) -> Vec<(usize, Peer)> {
        let hosts = lab.hosts();
        let mut out = Vec::new();
        for (i, table) in self.hosts.iter().zip(&self.tables) {
            let mine = hosts[*i].subnet;
            for peer in table.iter().flatten() {
                // Placed peers by their host; others by an address in another lab subnet.
                let foreign = match lab.host_of(peer) {
                    Some(j) => hosts[j].subnet != mine,
                    None => peer.ips().any(|ip| match ip {
                        IpAddr::V4(v4) => {
                            let [a, b, ..] = v4.octets();
                            a == 10 && u32::from(b) != mine && b != 255
                        }
                        IpAddr::V6(_) => false,
                    }),
                };
                if foreign {
                    out.push((*i, peer.clone()));
                }
            }
        }
        out
    }

    /// Polled hosts whose table lists the host itself (a node that "discovered" itself).
    pub fn self_listed(&self, lab: &Lab) -> Vec<usize> {
        self.hosts
            .iter()
            .zip(&self.tables)
            .filter(|(i, t)| {
                t.iter()
                    .flatten()
                    .any(|p| lab.id_of(**i) == Some(p.id.as_str()))
            })
            .map(|(i, _)| *i)
            .collect()
    }

    /// Polled hosts whose table lists host `victim` (by id or address).
    pub fn holders_of(&self, lab: &Lab, victim: usize) -> Vec<usize> {
        self.hosts
            .iter()
            .zip(&self.tables)
            .filter(|(_, t)| t.iter().flatten().any(|p| lab.host_of(p) == Some(victim)))
            .map(|(i, _)| *i)
            .collect()
    }
}
