//! The rigs: the original's churn and retrieval experiments side by side with ours, the scale run
//! (T14) and the maintenance-cost check (T13). Each returns rows the CLI prints as a table; small
//! versions run as tests.

use std::time::{Duration, Instant};

use butter_proto::rbfs;
use serde::Serialize;

use crate::churn::Churn;
use crate::world::{Report, Scenario, World};

/// The original Butter's churn figures (items retrievable), by `1/c`.
pub const ORIGINAL_CHURN: [(u32, f64); 4] = [(50, 74.8), (100, 88.4), (1000, 98.4), (10000, 100.0)];

/// Settings of the churn rig (defaults: the original's regime).
#[derive(Clone, Debug)]
pub struct ChurnRig {
    /// Nodes. Default 250.
    pub nodes: usize,
    /// Items stored before churn. Default 500.
    pub items: usize,
    /// Values of `1/c`. Default 50, 100, 1000, 10000.
    pub rates: Vec<u32>,
    /// Seeds; counts are summed over them. Default 1..=5.
    pub seeds: Vec<u64>,
    /// Churn duration. Default 30 s.
    pub churn: Duration,
    /// Settling time before churn (items stored, groups formed, summaries pulled). Default 20 s.
    pub warmup: Duration,
    /// Scenario template (PCG and RBFS settings, sites, membership model).
    pub template: Scenario,
}

impl Default for ChurnRig {
    fn default() -> Self {
        ChurnRig {
            nodes: 250,
            items: 500,
            rates: vec![50, 100, 1000, 10000],
            seeds: (1..=5).collect(),
            churn: Duration::from_secs(30),
            warmup: Duration::from_secs(20),
            template: Scenario::default(),
        }
    }
}

/// One row of the churn table.
#[derive(Clone, Debug, Serialize)]
pub struct ChurnRow {
    /// `1/c`.
    pub rate: u32,
    /// The original's figure (% retrievable), if it measured this rate.
    pub original: Option<f64>,
    /// Items searched (summed over seeds).
    pub items: usize,
    /// Items no live node held when searched.
    pub lost: usize,
    /// Items that existed but the search failed.
    pub retrieval_failed: usize,
    /// % of items found.
    pub retrievable_pct: f64,
    /// Node deaths (summed over seeds).
    pub deaths: u64,
    /// Repair bytes sent / replica bytes destroyed by deaths (T13 wants ≤ 1.5).
    pub repair_ratio: f64,
    /// Mean messages per search.
    pub msgs_per_search: f64,
    /// Median seconds from a death to the first table that dropped the node (SWIM).
    pub detect_p50_s: f64,
    /// 99th percentile of the same.
    pub detect_p99_s: f64,
    /// Deaths no table noticed before the run ended.
    pub undetected: u64,
    /// Live nodes some table declared dead (SWIM false positives).
    pub false_dead: u64,
    /// Membership messages (beacons, Hellos, probes, gossip) per node per second.
    pub membership_per_node_s: f64,
    /// Seeds used.
    pub seeds: Vec<u64>,
}

impl ChurnRig {
    /// The scenario for one rate and seed.
    pub fn scenario(&self, rate: u32, seed: u64) -> Scenario {
        let end = self.warmup + self.churn;
        Scenario {
            seed,
            nodes: self.nodes,
            items: self.items,
            store_window: (Duration::from_secs(5), Duration::from_secs(10)),
            churn: Churn::PerSecond {
                chance: 1.0 / f64::from(rate),
            },
            churn_window: (self.warmup, end),
            final_sweep: Some(end),
            sweep_spread: Duration::from_secs(10),
            duration: end + Duration::from_secs(15),
            ..self.template.clone()
        }
    }

    /// Runs every rate over every seed. `each` is called after each run (for progress).
    pub fn run(&self, mut each: impl FnMut(u32, u64, &Report)) -> Vec<ChurnRow> {
        let mut rows = Vec::new();
        for &rate in &self.rates {
            let mut row = ChurnRow {
                rate,
                original: ORIGINAL_CHURN
                    .iter()
                    .find(|(r, _)| *r == rate)
                    .map(|(_, p)| *p),
                items: 0,
                lost: 0,
                retrieval_failed: 0,
                retrievable_pct: 0.0,
                deaths: 0,
                repair_ratio: 0.0,
                msgs_per_search: 0.0,
                detect_p50_s: 0.0,
                detect_p99_s: 0.0,
                undetected: 0,
                false_dead: 0,
                membership_per_node_s: 0.0,
                seeds: self.seeds.clone(),
            };
            let (mut repair, mut destroyed, mut msgs) = (0u64, 0u64, 0u64);
            let mut all = Report::default();
            for &seed in &self.seeds {
                let sc = self.scenario(rate, seed);
                let initial = (sc.items * sc.item_size * (sc.core.pcg.replicas - 1)) as u64;
                let report = World::new(sc).run();
                let sweep: Vec<_> = report.queries.iter().filter(|q| q.sweep).collect();
                // Items the sweep did not reach (no live non-holder found) count as searched and lost
                // only if they were lost; here every item is swept.
                row.items += sweep.len();
                row.lost += sweep.iter().filter(|q| !q.existed).count();
                row.retrieval_failed += sweep.iter().filter(|q| q.existed && !q.found).count();
                msgs += sweep.iter().map(|q| u64::from(q.messages)).sum::<u64>();
                row.deaths += report.deaths;
                row.undetected += report.undetected;
                row.false_dead += report.false_dead;
                all.detection_s.extend_from_slice(&report.detection_s);
                all.node_seconds += report.node_seconds;
                for k in crate::world::MEMBERSHIP_KINDS {
                    *all.messages.entry(k.to_owned()).or_default() +=
                        report.messages.get(k).copied().unwrap_or(0);
                }
                repair += report.data_bytes.saturating_sub(initial);
                destroyed += report.bytes_lost_by_deaths;
                each(rate, seed, &report);
            }
            let found = row.items - row.lost - row.retrieval_failed;
            row.retrievable_pct = 100.0 * found as f64 / row.items.max(1) as f64;
            row.repair_ratio = repair as f64 / destroyed.max(1) as f64;
            row.msgs_per_search = msgs as f64 / row.items.max(1) as f64;
            row.detect_p50_s = all.detection_quantile(0.5).unwrap_or(0.0);
            row.detect_p99_s = all.detection_quantile(0.99).unwrap_or(0.0);
            row.membership_per_node_s = all.rate(&crate::world::MEMBERSHIP_KINDS);
            rows.push(row);
        }
        rows
    }
}

/// The original's retrieval figures on 100 nodes: (name, messages per query, % found).
pub const ORIGINAL_RETRIEVAL: [(&str, f64, f64); 2] =
    [("BFS", 587.0, 100.0), ("RBFS", 235.0, 68.0)];

/// Settings of the retrieval rig.
#[derive(Clone, Debug)]
pub struct RetrievalRig {
    /// Network sizes. Default 100 and 1000.
    pub sizes: Vec<usize>,
    /// Searches per setting. Default 300.
    pub queries: usize,
    /// Items stored per node. Default 1.
    pub items_per_node: usize,
    /// Seed.
    pub seed: u64,
    /// Scenario template.
    pub template: Scenario,
}

impl Default for RetrievalRig {
    fn default() -> Self {
        RetrievalRig {
            sizes: vec![100, 1000],
            queries: 300,
            items_per_node: 1,
            seed: 1,
            template: Scenario::default(),
        }
    }
}

/// One row of the retrieval table.
#[derive(Clone, Debug, Serialize)]
pub struct RetrievalRow {
    /// Nodes.
    pub nodes: usize,
    /// Strategy label.
    pub strategy: String,
    /// Searches.
    pub queries: usize,
    /// % found.
    pub found_pct: f64,
    /// % found within 4 hops.
    pub found_4_hops_pct: f64,
    /// Mean messages per search (every forward and every answer hop).
    pub msgs_mean: f64,
    /// Median messages per search.
    pub msgs_p50: u32,
    /// 99th percentile of messages per search.
    pub msgs_p99: u32,
    /// Mean hops of successful searches.
    pub hops_mean: f64,
    /// Median time to an answer (found searches), in milliseconds.
    pub latency_p50_ms: f64,
    /// Seed.
    pub seed: u64,
}

/// The strategies compared: (label, settings).
pub fn strategies() -> Vec<(&'static str, rbfs::Config)> {
    vec![
        ("BFS (flood, hop limit 8)", rbfs::Config::flood(8)),
        ("original RBFS (p=0.5, hops 4)", rbfs::Config::original()),
        ("ours (guided)", rbfs::Config::default()),
    ]
}

impl RetrievalRig {
    /// The scenario for one size and strategy.
    pub fn scenario(&self, nodes: usize, config: rbfs::Config) -> Scenario {
        let items = nodes * self.items_per_node;
        Scenario {
            seed: self.seed,
            nodes,
            items,
            store_window: (Duration::from_secs(5), Duration::from_secs(10)),
            core: butter_proto::node::Config {
                rbfs: config,
                ..self.template.core.clone()
            },
            // Searches start once groups formed and summaries were pulled twice.
            probe_rate: self.queries as f64 / 30.0,
            probe_window: (Duration::from_secs(30), Duration::from_secs(60)),
            duration: Duration::from_secs(70),
            sample_every: Duration::from_secs(5),
            ..self.template.clone()
        }
    }

    /// Runs every size with every strategy.
    pub fn run(&self, mut each: impl FnMut(&RetrievalRow)) -> Vec<RetrievalRow> {
        let mut rows = Vec::new();
        for &n in &self.sizes {
            for (label, config) in strategies() {
                let report = World::new(self.scenario(n, config)).run();
                let row = retrieval_row(n, label, self.seed, &report);
                each(&row);
                rows.push(row);
            }
        }
        rows
    }
}

fn percentile(v: &mut [u32], p: f64) -> u32 {
    if v.is_empty() {
        return 0;
    }
    v.sort_unstable();
    let i = ((v.len() - 1) as f64 * p).round() as usize;
    v[i]
}

/// Summarises a report's searches.
pub fn retrieval_row(nodes: usize, label: &str, seed: u64, report: &Report) -> RetrievalRow {
    let q = &report.queries;
    let n = q.len().max(1) as f64;
    let found: Vec<_> = q.iter().filter(|x| x.found).collect();
    let mut msgs: Vec<u32> = q.iter().map(|x| x.messages).collect();
    let mut lat: Vec<u32> = found.iter().map(|x| (x.seconds * 1e6) as u32).collect();
    RetrievalRow {
        nodes,
        strategy: label.to_owned(),
        queries: q.len(),
        found_pct: 100.0 * found.len() as f64 / n,
        found_4_hops_pct: 100.0 * found.iter().filter(|x| x.hops <= 4).count() as f64 / n,
        msgs_mean: msgs.iter().map(|m| f64::from(*m)).sum::<f64>() / n,
        msgs_p50: percentile(&mut msgs, 0.5),
        msgs_p99: percentile(&mut msgs, 0.99),
        hops_mean: found.iter().map(|x| f64::from(x.hops)).sum::<f64>() / found.len().max(1) as f64,
        latency_p50_ms: f64::from(percentile(&mut lat, 0.5)) / 1000.0,
        seed,
    }
}

/// The scale run's result.
#[derive(Clone, Debug, Serialize)]
pub struct ScaleRow {
    /// Nodes.
    pub nodes: usize,
    /// Simulated seconds.
    pub simulated_s: f64,
    /// Wall-clock seconds.
    pub wall_s: f64,
    /// Events processed.
    pub events: u64,
    /// Node deaths.
    pub deaths: u64,
    /// Items lost at the end.
    pub lost: usize,
    /// Items stored.
    pub items: usize,
    /// Messages per node per second.
    pub msgs_per_node_s: f64,
    /// Event-log hash.
    pub log_hash: String,
}

/// The scale scenario: `nodes` nodes, one item each, the original's per-second churn at `1/rate`
/// for the whole run.
pub fn scale_scenario(nodes: usize, duration: Duration, rate: u32, seed: u64) -> Scenario {
    Scenario {
        seed,
        nodes,
        sites: 20,
        items: nodes,
        store_window: (Duration::from_secs(10), Duration::from_secs(20)),
        churn: Churn::PerSecond {
            chance: 1.0 / f64::from(rate),
        },
        churn_window: (Duration::from_secs(20), duration),
        duration,
        sample_every: Duration::from_secs(10),
        ..Scenario::default()
    }
}

/// Runs a scenario, timing it.
pub fn timed(world: World, nodes: usize) -> (ScaleRow, Report) {
    let start = Instant::now();
    let report = world.run();
    let wall = start.elapsed().as_secs_f64();
    let simulated = report.series.last().map_or(0.0, |s| s.t);
    let msgs: u64 = report.messages.values().sum();
    let row = ScaleRow {
        nodes,
        simulated_s: simulated,
        wall_s: wall,
        events: report.events,
        deaths: report.deaths,
        lost: report.lost_at_end,
        items: report.items,
        msgs_per_node_s: msgs as f64 / report.node_seconds.max(1e-9),
        log_hash: report.log_hash.clone(),
    };
    (row, report)
}

/// One row of the maintenance-cost check.
#[derive(Clone, Debug, Serialize)]
pub struct MaintenanceRow {
    /// Nodes.
    pub nodes: usize,
    /// Items stored in the network.
    pub items: usize,
    /// Mean replicas held per node.
    pub replicas_per_node: f64,
    /// PCG heartbeats (both directions) per node per second.
    pub heartbeats_per_node_s: f64,
    /// RBFS summary pulls and answers per node per second.
    pub summaries_per_node_s: f64,
    /// PCG and RBFS maintenance messages per node per second.
    pub total_per_node_s: f64,
    /// Membership messages (beacons, Hellos, probes, gossip) per node per second: SWIM's probes
    /// and the table's upkeep, which do not depend on items either.
    pub membership_per_node_s: f64,
}

/// Maintenance cost with different numbers of replicas held per node (items stored =
/// `nodes × replicas_per_node / r`), same network, no churn.
pub fn maintenance(nodes: usize, replicas_per_node: &[usize], seed: u64) -> Vec<MaintenanceRow> {
    replicas_per_node
        .iter()
        .map(|&per_node| {
            let r = butter_proto::pcg::Config::default().replicas;
            let n_items = (nodes * per_node).div_ceil(r);
            let sc = Scenario {
                seed,
                nodes,
                items: n_items,
                item_size: 16,
                store_window: (Duration::from_secs(5), Duration::from_secs(10)),
                duration: Duration::from_secs(120),
                measure_from: Duration::from_secs(60),
                sample_every: Duration::from_secs(10),
                ..Scenario::default()
            };
            // Steady state: the last minute, after every item was stored and placed.
            let secs = (sc.duration - sc.measure_from).as_secs_f64() * nodes as f64;
            let report = World::new(sc).run();
            let count = |kinds: &[&str]| -> f64 {
                kinds
                    .iter()
                    .map(|k| report.messages.get(*k).copied().unwrap_or(0))
                    .sum::<u64>() as f64
                    / secs
            };
            let hb = count(&["heartbeat"]);
            let sm = count(&["summary_pull", "summary"]);
            let membership = count(&crate::world::MEMBERSHIP_KINDS);
            MaintenanceRow {
                nodes,
                items: n_items,
                replicas_per_node: (n_items * r) as f64 / nodes as f64,
                heartbeats_per_node_s: hb,
                summaries_per_node_s: sm,
                total_per_node_s: hb + sm,
                membership_per_node_s: membership,
            }
        })
        .collect()
}
