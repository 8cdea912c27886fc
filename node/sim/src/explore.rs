//! The seeded fault explorer: random topologies, churn, partitions and loss, each run checked
//! against the invariants a user relies on. A broken invariant names its seed and the command
//! that replays it.
//!
//! One seed decides everything about its run ([`scenario`]): nodes (16–64) on 2–6 sites, items,
//! a churn model (none, the original's per-second chance, exponential sessions or a whole site
//! failing), 0–2 partitions between random sides, 0–5 % message loss, in half the runs one
//! node that lies about what it holds (it keeps ids, not data: [`crate::world::SimStore`]), and
//! in half the runs one node that replays every data message it sends 5–60 s later (stale
//! views, trims, heartbeats and proofs: `NetConfig::replayers`).
//! Every fault ends a minute
//! before the run does, so the last minute shows whether the network settles. Checked after
//! every run ([`check`]):
//! - **no item vanishes from live nodes**: an item may be lost only when the last node holding
//!   it dies, never because a live holder dropped it (copies are counted on honest nodes only:
//!   a liar's claim keeps nothing alive);
//! - **every group converges to r**: at the end every item not destroyed by deaths has at least
//!   `r` live holders (over-replication is reported, not counted as a break: trims wait for
//!   proofs);
//! - **dead nodes leave tables**: no live table holds a node dead for longer than SWIM's bound
//!   (a full round of probes over a full table, plus the probe phases and the suspicion
//!   timeout, plus slack);
//! - **no panic** in any node core.

use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::churn::Churn;
use crate::world::{Partition, Report, Scenario, World};

/// The scenario seed `seed` stands for.
pub fn scenario(seed: u64) -> Scenario {
    let mut rng = SmallRng::seed_from_u64(seed ^ 0x6578_706c_6f72_6521);
    let sites = rng.random_range(2..=6usize);
    let nodes = rng.random_range(16..=64usize).max(2 * sites);
    let items = rng.random_range(10..=100usize);
    let duration = Duration::from_secs(rng.random_range(100..=160u64));
    // Faults happen in [20 s, end − 60 s).
    let quiet = duration - Duration::from_secs(60);
    let window = |rng: &mut SmallRng| {
        let a = rng.random_range(20.0..quiet.as_secs_f64() - 5.0);
        let b = rng.random_range(a + 5.0..quiet.as_secs_f64());
        (Duration::from_secs_f64(a), Duration::from_secs_f64(b))
    };
    let churn_window = window(&mut rng);
    let churn = match rng.random_range(0..4u8) {
        0 => Churn::None,
        1 => Churn::PerSecond {
            chance: 1.0 / rng.random_range(40.0..400.0),
        },
        2 => Churn::Exponential {
            mean: Duration::from_secs(rng.random_range(40..300)),
        },
        _ => Churn::SiteFailure {
            site: rng.random_range(0..sites),
            at: churn_window.0,
        },
    };
    let partitions = (0..rng.random_range(0..=2u8))
        .map(|_| {
            let (from, until) = window(&mut rng);
            let side: Vec<usize> = (0..sites).filter(|_| rng.random_bool(0.5)).collect();
            let side = if side.is_empty() || side.len() == sites {
                vec![0]
            } else {
                side
            };
            Partition { side, from, until }
        })
        .collect();
    let mut sc = Scenario {
        seed,
        nodes,
        sites,
        items,
        churn,
        churn_window,
        partitions,
        final_sweep: Some(duration - Duration::from_secs(15)),
        duration,
        check_invariants: true,
        ..Scenario::default()
    };
    if rng.random_bool(0.5) {
        sc.net.loss = rng.random_range(0.0..0.05);
    }
    if rng.random_bool(0.5) {
        sc.liars.push(rng.random_range(0..nodes));
    }
    // Drawn apart from everything above, so adding it left every earlier scenario as it was.
    let mut extra = SmallRng::seed_from_u64(seed ^ 0x7265_706c_6179_6572);
    if extra.random_bool(0.5) {
        let slot = extra.random_range(0..nodes);
        if !sc.liars.contains(&slot) {
            sc.net.replayers.push(slot);
        }
    }
    sc
}

/// One seed's outcome.
#[derive(Clone, Debug, Serialize)]
pub struct Outcome {
    /// The seed.
    pub seed: u64,
    /// What it ran, in one line.
    pub scenario: String,
    /// Invariants broken (empty: none).
    pub broken: Vec<String>,
    /// Items, items destroyed by deaths, deaths.
    pub items: usize,
    /// Items whose every copy died with its node.
    pub destroyed: usize,
    /// Node deaths.
    pub deaths: u64,
    /// Longest a dead node stayed in a live table, seconds.
    pub stale_dead_max_s: f64,
    /// Items above r at the end.
    pub over_r: usize,
    /// Event-log hash (replays must match it).
    pub log_hash: String,
    /// Where vanished items' copies went (see [`crate::world::Invariants::drop_trace`]).
    pub trace: Vec<String>,
}

/// How long a dead node may stay in a live table: a round of probes over a full table, the
/// probe phases and the suspicion timeout, plus slack for the gossip and the sample period.
pub fn stale_bound(sc: &Scenario) -> Duration {
    let m = &sc.core.membership;
    let round = m.swim.period * m.peers.capacity as u32;
    round + m.swim.period + m.swim.suspicion_timeout + Duration::from_secs(10)
}

/// The invariants broken by a finished run of `sc`.
pub fn check(sc: &Scenario, r: &Report) -> Vec<String> {
    let mut broken = Vec::new();
    let inv = &r.invariants;
    if inv.dropped_by_live > 0 {
        broken.push(format!(
            "{} items vanished while a holder stayed up (first seen at {:.0} s)",
            inv.dropped_by_live,
            inv.first_dropped_s.unwrap_or(0.0)
        ));
    }
    if inv.under_r_at_end > 0 {
        broken.push(format!(
            "{} items below r = {} a minute after the last fault",
            inv.under_r_at_end, sc.core.pcg.replicas
        ));
    }
    let bound = stale_bound(sc).as_secs_f64();
    if inv.stale_dead_max_s > bound {
        broken.push(format!(
            "a dead node stayed in a live table {:.0} s (bound {bound:.0} s)",
            inv.stale_dead_max_s
        ));
    }
    broken
}

fn describe(sc: &Scenario) -> String {
    let parts: Vec<String> = sc
        .partitions
        .iter()
        .map(|p| {
            format!(
                "cut {:?} {:.0}-{:.0}s",
                p.side,
                p.from.as_secs_f64(),
                p.until.as_secs_f64()
            )
        })
        .collect();
    format!(
        "{} nodes / {} sites, {} items, {}, loss {:.1} %{}{}{}{}",
        sc.nodes,
        sc.sites,
        sc.items,
        sc.churn.label(),
        sc.net.loss * 100.0,
        match sc.liars.as_slice() {
            [] => String::new(),
            l => format!(", liar in slot {l:?}"),
        },
        match sc.net.replayers.as_slice() {
            [] => String::new(),
            l => format!(", replayer in slot {l:?}"),
        },
        if parts.is_empty() { "" } else { ", " },
        parts.join(", ")
    )
}

/// Runs seed `seed` and checks it. A panic inside is caught and reported as a broken invariant.
pub fn run_seed(seed: u64) -> Outcome {
    let sc = scenario(seed);
    let scenario = describe(&sc);
    let run = {
        let sc = sc.clone();
        std::panic::catch_unwind(move || World::new(sc).run())
    };
    match run {
        Ok(report) => Outcome {
            seed,
            scenario,
            broken: check(&sc, &report),
            items: report.items,
            destroyed: report.invariants.destroyed,
            deaths: report.deaths,
            stale_dead_max_s: report.invariants.stale_dead_max_s,
            over_r: report.invariants.over_r_at_end,
            trace: report
                .invariants
                .drop_trace
                .iter()
                .chain(&report.invariants.under_r_trace)
                .cloned()
                .collect(),
            log_hash: report.log_hash,
        },
        Err(panic) => {
            let what = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_else(|| "unknown panic".to_owned());
            Outcome {
                seed,
                scenario,
                broken: vec![format!("panic: {what}")],
                items: sc.items,
                destroyed: 0,
                deaths: 0,
                stale_dead_max_s: 0.0,
                over_r: 0,
                log_hash: String::new(),
                trace: Vec::new(),
            }
        }
    }
}

/// The command that replays `seed`.
pub fn replay_command(seed: u64) -> String {
    format!("cargo run --release -p butter-sim -- explore --seeds {seed}..{seed}")
}
