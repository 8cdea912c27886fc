//! Issue 18: a mixed fault and a heal, deterministically. Twelve nodes on three sites (the compose
//! network's 3 LANs × 4) keep 60 items at `r = 3`; then, as in the chaos run that thrashed:
//! pause 3 nodes, cut one site off, 20 % loss on 3 nodes, 15 s, restart 2 (same id, same data,
//! views restored as the daemon does), unpause 1, kill 2 for good, 40 s, heal everything. After
//! the heal every group must converge to exactly `r` live holders that agree on one view, stay
//! there, and repair with no more than 1.5 × the bytes that were actually missing.
//!
//! Each node has its own view of who is live, as in the real node: a node on the other side of
//! the cut, paused, or killed is dead to it (and reported with `handle_peer_dead`, as SWIM does);
//! healed peers come back by their messages.

use super::*;
use crate::item::MemoryStore;

struct Hosts {
    me: PeerId,
    all: Vec<(PeerId, String)>,
    dead: BTreeSet<PeerId>,
}

impl HostView for Hosts {
    fn live_hosts(&self) -> Vec<PeerId> {
        self.all
            .iter()
            .map(|(p, _)| *p)
            .filter(|p| *p != self.me && !self.dead.contains(p))
            .collect()
    }
    fn is_live(&self, id: &PeerId) -> bool {
        !self.dead.contains(id)
    }
    fn site(&self, id: &PeerId) -> Option<&str> {
        self.all
            .iter()
            .find(|(p, _)| p == id)
            .map(|(_, s)| s.as_str())
    }
    fn most_diverse(&self, k: usize, exclude: &BTreeSet<PeerId>) -> Vec<PeerId> {
        // Round robin over sites, so the first picks span sites (as the real table's does).
        let mut by_site: BTreeMap<&str, Vec<PeerId>> = BTreeMap::new();
        for (p, s) in &self.all {
            if *p != self.me && !self.dead.contains(p) && !exclude.contains(p) {
                by_site.entry(s.as_str()).or_default().push(*p);
            }
        }
        let mut out = Vec::new();
        let mut round = 0;
        while out.len() < k {
            let before = out.len();
            for list in by_site.values() {
                if let Some(p) = list.get(round) {
                    out.push(*p);
                }
            }
            if out.len() == before {
                break;
            }
            round += 1;
        }
        out.truncate(k);
        out
    }
}

/// What a run measured.
#[derive(Debug)]
pub(super) struct Outcome {
    /// Seconds after the heal until every group was converged (and stayed so to the end).
    pub settled: Option<u64>,
    /// Converged groups per second after the heal.
    pub series: Vec<usize>,
    /// Healthy groups (every live holder in one agreed view of at least `r`) per second after
    /// the heal.
    pub healthy: Vec<usize>,
    /// Seconds, after 90 % of the groups were first healthy again, with fewer than 80 % healthy:
    /// a second descent, the thrash of issue 18 (a spread, which makes a group `r + 1` for a
    /// moment by design, is not one).
    pub dips: usize,
    /// Items no live node held at the end.
    pub lost: usize,
    /// Item bytes sent after the heal to recruits that replace missing members (repair), to
    /// recruits on a new site (spread), and bytes that were missing at the heal (r minus live
    /// holders, per item, times its size).
    pub repair_bytes: usize,
    pub spread_bytes: usize,
    pub missing_bytes: usize,
    /// Item bytes that actually crossed the network after the heal (every push and block).
    pub sent_bytes: usize,
}

struct Lab {
    nodes: Vec<Node<MemoryStore>>,
    sites: Vec<(PeerId, String)>,
    config: Config,
    side: Vec<u8>,
    paused: BTreeSet<usize>,
    killed: BTreeSet<usize>,
    lossy: BTreeSet<usize>,
    rng: SmallRng,
    now: Time,
    data_bytes: usize,
    /// (second, node, event) of every event, when PCG_FAULTS_DEBUG is set.
    log: Vec<(u64, usize, Event)>,
    debug: bool,
}

impl Lab {
    fn new(n: usize, sites: usize, seed: u64, config: Config) -> Self {
        let ids: Vec<PeerId> = (0..n)
            .map(|i| PeerId::from_public_key(&(seed * 1000 + i as u64).to_le_bytes()))
            .collect();
        let nodes = ids
            .iter()
            .enumerate()
            .map(|(i, id)| {
                Node::new(
                    *id,
                    config.clone(),
                    MemoryStore::new(1 << 24),
                    seed ^ i as u64,
                )
                .unwrap()
            })
            .collect();
        Lab {
            nodes,
            sites: ids
                .iter()
                .enumerate()
                .map(|(i, id)| (*id, format!("s{}", i % sites)))
                .collect(),
            config,
            side: vec![0; n],
            paused: BTreeSet::new(),
            killed: BTreeSet::new(),
            lossy: BTreeSet::new(),
            rng: SmallRng::seed_from_u64(seed),
            now: Time::ZERO,
            data_bytes: 0,
            log: Vec::new(),
            debug: std::env::var("PCG_FAULTS_DEBUG").is_ok(),
        }
    }

    fn down(&self, i: usize) -> bool {
        self.paused.contains(&i) || self.killed.contains(&i)
    }

    /// Whether `i` can reach `j` right now (either way).
    fn reach(&self, i: usize, j: usize) -> bool {
        !self.down(i) && !self.down(j) && self.side[i] == self.side[j]
    }

    fn hosts(&self, i: usize) -> Hosts {
        Hosts {
            me: self.nodes[i].id(),
            all: self.sites.clone(),
            dead: (0..self.nodes.len())
                .filter(|j| *j != i && !self.reach(i, *j))
                .map(|j| self.nodes[j].id())
                .collect(),
        }
    }

    fn idx(&self, id: &PeerId) -> usize {
        self.nodes.iter().position(|n| n.id() == *id).unwrap()
    }

    /// Tells every running node about peers it can no longer reach (SWIM's verdict).
    fn declare(&mut self, before: &[Vec<bool>]) {
        for (i, was) in before.iter().enumerate() {
            if self.down(i) {
                continue;
            }
            for (j, reached) in was.iter().enumerate() {
                if i != j && *reached && !self.reach(i, j) {
                    let h = self.hosts(i);
                    let peer = self.nodes[j].id();
                    let now = self.now;
                    self.nodes[i].handle_peer_dead(now, peer, &h);
                }
            }
        }
        self.deliver();
    }

    fn reach_matrix(&self) -> Vec<Vec<bool>> {
        (0..self.nodes.len())
            .map(|i| (0..self.nodes.len()).map(|j| self.reach(i, j)).collect())
            .collect()
    }

    fn deliver(&mut self) {
        for round in 0..100_000 {
            let mut any = false;
            for i in 0..self.nodes.len() {
                while let Some(t) = self.nodes[i].poll_transmit() {
                    any = true;
                    if round > 99_990 {
                        eprintln!("storm: {i} -> {} {:?}", self.idx(&t.to), t.msg.kind());
                    }
                    let j = self.idx(&t.to);
                    if !self.reach(i, j) {
                        continue;
                    }
                    if (self.lossy.contains(&i) || self.lossy.contains(&j))
                        && self.rng.random_bool(0.2)
                    {
                        continue;
                    }
                    self.data_bytes += t.msg.data_bytes();
                    let h = self.hosts(j);
                    let from = self.nodes[i].id();
                    let now = self.now;
                    self.nodes[j].handle_message(now, from, t.msg, &h);
                }
                while let Some(e) = self.nodes[i].poll_event() {
                    if self.debug {
                        let t = self.now.saturating_since(Time::ZERO).as_secs();
                        self.log.push((t, i, e));
                    }
                }
            }
            if !any {
                return;
            }
        }
        panic!("message storm");
    }

    fn step(&mut self) {
        self.now = self.now + Duration::from_millis(100);
        for i in 0..self.nodes.len() {
            if self.down(i) {
                continue;
            }
            if self.nodes[i].poll_timeout().is_some_and(|t| t <= self.now) {
                let h = self.hosts(i);
                let now = self.now;
                self.nodes[i].handle_timeout(now, &h);
            }
        }
        self.deliver();
    }

    fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        while self.now < end {
            self.step();
        }
    }

    /// A process restart: same id, same stored items, the views it had restored (the daemon
    /// persists every view change), all soft state gone.
    fn restart(&mut self, i: usize, seed: u64) {
        let id = self.nodes[i].id();
        let mut store = MemoryStore::new(1 << 24);
        for item in self.nodes[i].store().ids() {
            if let Some(it) = self.nodes[i].store().get(&item) {
                store.insert(it).unwrap();
            }
        }
        let views: Vec<View> = self.nodes[i]
            .groups
            .values()
            .map(|g| g.view.clone())
            .collect();
        let mut fresh = Node::new(id, self.config.clone(), store, seed).unwrap();
        for v in views {
            fresh.restore(self.now, v);
        }
        self.nodes[i] = fresh;
    }

    fn live(&self) -> Vec<usize> {
        (0..self.nodes.len()).filter(|i| !self.down(*i)).collect()
    }

    /// Live nodes holding `item`.
    fn holders(&self, item: &ItemId) -> Vec<usize> {
        self.live()
            .into_iter()
            .filter(|i| self.nodes[*i].store().contains(item))
            .collect()
    }

    /// The live holders that are members of their view (orphans on their way out aside) all hold
    /// one view, and at least `r` of them do: no split group, nothing short.
    fn healthy(&self, item: &ItemId) -> bool {
        let members: Vec<usize> = self
            .holders(item)
            .into_iter()
            .filter(|i| {
                self.nodes[*i]
                    .groups
                    .get(item)
                    .is_some_and(|g| g.orphan_since.is_none())
            })
            .collect();
        let views: BTreeSet<(u64, PeerId)> = members
            .iter()
            .filter_map(|i| self.nodes[*i].groups.get(item).map(|g| g.view.key()))
            .collect();
        views.len() == 1 && members.len() >= self.config.replicas
    }

    /// Exactly `r` live holders, all members of one view they all hold, with exactly those members.
    fn converged(&self, item: &ItemId) -> bool {
        let holders = self.holders(item);
        if holders.len() != self.config.replicas {
            return false;
        }
        let ids: BTreeSet<PeerId> = holders.iter().map(|i| self.nodes[*i].id()).collect();
        let views: BTreeSet<(u64, PeerId)> = holders
            .iter()
            .filter_map(|i| self.nodes[*i].groups.get(item).map(|g| g.view.key()))
            .collect();
        views.len() == 1
            && holders.iter().all(|i| {
                self.nodes[*i].groups.get(item).is_some_and(|g| {
                    g.orphan_since.is_none()
                        && g.view.members.iter().copied().collect::<BTreeSet<_>>() == ids
                })
            })
    }
}

/// The fault mix of issue 18 on seed `seed`.
pub(super) fn fault_mix(seed: u64) -> Outcome {
    fault_mix_with(seed, Config::default())
}

/// The fault mix with PCG settings of one's own.
fn fault_mix_with(seed: u64, config: Config) -> Outcome {
    const N: usize = 12;
    const ITEMS: usize = 60;
    const SIZE: usize = 600;
    let mut lab = Lab::new(N, 3, seed, config);
    let mut items = Vec::new();
    for k in 0..ITEMS {
        let at = k % N;
        let h = lab.hosts(at);
        let mut content = vec![0u8; SIZE];
        content[..8].copy_from_slice(&(seed * 100_000 + k as u64).to_le_bytes());
        let now = lab.now;
        items.push(lab.nodes[at].store_item(now, content, &h).unwrap());
        lab.deliver();
    }
    lab.run_for(Duration::from_secs(30));

    let mut pick = SmallRng::seed_from_u64(seed.wrapping_mul(31));
    let mut order: Vec<usize> = (0..N).collect();
    order.shuffle(&mut pick);
    // Site 0 is cut off; the faults fall on the other sites' nodes (and one on site 0).
    let others: Vec<usize> = order.iter().copied().filter(|i| i % 3 != 0).collect();
    let paused = [others[0], others[1], others[2]];
    let lossy = [
        others[3],
        others[4],
        order.iter().copied().find(|i| i % 3 == 0).unwrap(),
    ];
    let restarted = [others[5], others[6]];
    let killed = [others[1], others[7]]; // one still paused: killed while away
    let before = lab.reach_matrix();
    lab.paused.extend(paused);
    for i in 0..N {
        lab.side[i] = u8::from(i % 3 == 0);
    }
    lab.lossy.extend(lossy);
    lab.declare(&before);
    lab.run_for(Duration::from_secs(15));
    for (k, i) in restarted.iter().enumerate() {
        lab.restart(*i, seed ^ (0x5eed + k as u64));
    }
    lab.paused.remove(&paused[0]);
    let before = lab.reach_matrix();
    for k in killed {
        lab.paused.remove(&k);
        lab.killed.insert(k);
    }
    lab.declare(&before);
    lab.run_for(Duration::from_secs(40));

    // Heal: the cut, the pauses and the loss end at once.
    lab.paused.clear();
    lab.side = vec![0; N];
    lab.lossy.clear();
    let r = lab.config.replicas;
    let missing_bytes: usize = items
        .iter()
        .map(|it| r.saturating_sub(lab.holders(it).len()) * SIZE)
        .sum();
    let sent_at_heal = lab.data_bytes;
    let mut series = Vec::new();
    let mut healthy = Vec::new();
    let (mut repair_bytes, mut spread_bytes) = (0, 0);
    lab.debug = true;
    let mut seen = lab.log.len();
    for _ in 0..120 {
        lab.run_for(Duration::from_secs(1));
        series.push(items.iter().filter(|it| lab.converged(it)).count());
        healthy.push(items.iter().filter(|it| lab.healthy(it)).count());
        for (_, _, e) in &lab.log[seen..] {
            match e {
                Event::Recruited { peers, .. } => repair_bytes += peers.len() * SIZE,
                Event::Spread { .. } => spread_bytes += SIZE,
                _ => {}
            }
        }
        if std::env::var("PCG_FAULTS_DEBUG").is_ok() {
            let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
            for (_, _, e) in &lab.log[seen..] {
                let k = format!("{e:?}");
                let k = k
                    .split(|c: char| !c.is_alphanumeric())
                    .next()
                    .unwrap_or("")
                    .to_owned();
                *kinds.entry(k).or_default() += 1;
            }
            eprintln!(
                "  +{}s healthy {} {kinds:?}",
                healthy.len(),
                healthy.last().unwrap_or(&0)
            );
        }
        seen = lab.log.len();
    }
    let settled = series
        .iter()
        .rposition(|c| *c != ITEMS)
        .map_or(Some(0), |last| {
            (last + 1 < series.len()).then_some(last as u64 + 1)
        });
    // A second descent: once 90 % of the groups were healthy, falling below 80 % again.
    let recovered = healthy.iter().position(|h| *h * 10 >= ITEMS * 9);
    let dips = recovered.map_or(0, |at| {
        healthy[at..]
            .iter()
            .filter(|h| **h * 10 < ITEMS * 8)
            .count()
    });
    if std::env::var("PCG_FAULTS_DEBUG").is_ok() {
        // With PCG_FAULTS_SPREADS set, the items that spread after the heal too (traffic).
        let healed_at = lab.now.saturating_since(Time::ZERO).as_secs() - series.len() as u64;
        let spread_items: BTreeSet<ItemId> = lab
            .log
            .iter()
            .filter(|(t, _, _)| *t >= healed_at)
            .filter_map(|(_, _, e)| match e {
                Event::Spread { item, .. } => Some(*item),
                _ => None,
            })
            .collect();
        for it in items
            .iter()
            .filter(|it| {
                !lab.converged(it)
                    || (std::env::var("PCG_FAULTS_SPREADS").is_ok() && spread_items.contains(it))
            })
            .take(3)
        {
            eprintln!("item {it:?}:");
            let short = |p: &PeerId| lab.idx(p);
            for (t, i, e) in &lab.log {
                let line = match e {
                    Event::ViewChanged(v) if v.item == *it => format!(
                        "view v{} by {} {:?}",
                        v.version,
                        short(&v.author),
                        v.members.iter().map(short).collect::<Vec<_>>()
                    ),
                    Event::Refounded(x) if x == it => "REFOUNDED".into(),
                    Event::Spread { item, peer } if item == it => {
                        format!("spread to {}", short(peer))
                    }
                    Event::Dropped(x) if x == it => "dropped".into(),
                    Event::Recruited { item, peers } if item == it => format!(
                        "recruited {:?}",
                        peers.iter().map(short).collect::<Vec<_>>()
                    ),
                    Event::Trimmed { item, peers } if item == it => {
                        format!("trimmed {:?}", peers.iter().map(short).collect::<Vec<_>>())
                    }
                    Event::ViewRefused { item, from } if item == it => {
                        format!("refused view from {}", short(from))
                    }
                    _ => continue,
                };
                eprintln!("    t={t} node {i}: {line}");
            }
            for i in lab.live() {
                if let Some(g) = lab.nodes[i].groups.get(it) {
                    let short = |p: &PeerId| lab.idx(p);
                    eprintln!(
                        "  node {i} (site {}) holds {} view v{} by {} members {:?} orphan {:?} rival {:?} departed {:?} members' state {:?}",
                        i % 3,
                        lab.nodes[i].store().contains(it),
                        g.view.version,
                        short(&g.view.author),
                        g.view.members.iter().map(short).collect::<Vec<_>>(),
                        g.orphan_since
                            .map(|t| t.saturating_since(Time::ZERO).as_secs()),
                        g.rival.as_ref().map(|r| (r.view.version, r.proven.len())),
                        g.departed.keys().map(short).collect::<Vec<_>>(),
                        g.members
                            .iter()
                            .map(|m| (short(&m.id), m.holding, m.gone, m.absent_since.is_some()))
                            .collect::<Vec<_>>(),
                    );
                }
            }
        }
        eprintln!("killed {killed:?} restarted {restarted:?} paused {paused:?}");
    }
    Outcome {
        settled,
        dips,
        lost: items.iter().filter(|it| lab.holders(it).is_empty()).count(),
        repair_bytes,
        spread_bytes,
        missing_bytes,
        sent_bytes: lab.data_bytes - sent_at_heal,
        series,
        healthy,
    }
}

/// Runs the mix on every seed; returns the seeds that lost data or thrashed (a dip in the healthy
/// count) and those that did not settle at exactly `r` within 60 s of the heal.
fn check(seeds: impl IntoIterator<Item = u64>) -> (Vec<u64>, Vec<u64>) {
    let (mut broken, mut slow) = (Vec::new(), Vec::new());
    let mut settled = Vec::new();
    let (mut repair, mut spread, mut missing, mut sent, mut runs) = (0, 0, 0, 0, 0);
    for seed in seeds {
        let o = fault_mix(seed);
        runs += 1;
        eprintln!(
            "seed {seed}: settled {:?} s after the heal, {} dips, {} lost, repair {} B for {} B \
             missing, spread {} B, {} B sent; at r per second: {:?}; healthy: {:?}",
            o.settled,
            o.dips,
            o.lost,
            o.repair_bytes,
            o.missing_bytes,
            o.spread_bytes,
            o.sent_bytes,
            o.series,
            o.healthy
        );
        settled.extend(o.settled);
        repair += o.repair_bytes;
        spread += o.spread_bytes;
        missing += o.missing_bytes;
        sent += o.sent_bytes;
        if o.lost > 0 || o.dips > 0 {
            broken.push(seed);
        }
        if o.settled.is_none_or(|s| s > 60) {
            slow.push(seed);
        }
    }
    settled.sort_unstable();
    eprintln!(
        "{runs} runs: {} settled at exactly r within 120 s of the heal (median {:?} s, max {:?} \
         s), {} not within 60 s {slow:?}; lost or thrashed: {broken:?}; repair {repair} B for \
         {missing} B missing at the heal, spread (new sites) {spread} B, item bytes sent {sent} B",
        settled.len(),
        settled.get(settled.len() / 2),
        settled.last(),
        slow.len(),
    );
    (broken, slow)
}

/// The chaos run's seed and two more, in the default test run.
#[test]
fn after_a_mixed_fault_and_a_heal_every_group_settles_at_r_once() {
    let seeds = std::env::var("PCG_FAULTS_SEEDS")
        .ok()
        .map_or(vec![11, 1, 2], |s| {
            s.split(',').filter_map(|x| x.parse().ok()).collect()
        });
    let (broken, slow) = check(seeds);
    assert!(
        broken.is_empty() && slow.is_empty(),
        "lost or thrashed: {broken:?}; not at r within 60 s: {slow:?}"
    );
}

/// Seed 4 with a looser view budget (20 a second): two views of one group reached each side
/// through a member of both; one side ordered them by version, the other by sites, each left for
/// the other's view and all copies were dropped. A holder now leaves its group only for a view
/// that wins by the convergence rule.
#[test]
fn views_met_through_a_member_of_both_are_ordered_alike_on_both_sides() {
    let config = Config {
        max_views_per_sec: 20.0,
        ..Config::default()
    };
    let o = fault_mix_with(4, config);
    assert_eq!(o.lost, 0, "items lost");
}

/// Seeds 6, 21, 51 and 77 (none settled within 120 s): a holder paused through the heal came
/// back, took the view its old co-member had made on the cut-off site (which had replaced it)
/// and became its orphan; that group then lost the merge and its members left for the winner and
/// dropped their copies. The orphan kept asking them about a view nobody held, they answered
/// "unknown", and it would have waited 40 s to found the group a third time. A node that left a
/// group now answers with the view it left for, and the orphan follows it.
#[test]
fn an_orphan_whose_view_every_member_left_follows_them_to_the_group() {
    let (broken, slow) = check([6, 21, 51, 77]);
    assert!(
        broken.is_empty() && slow.is_empty(),
        "lost or thrashed: {broken:?}; not at r within 60 s: {slow:?}"
    );
}

/// 100 seeds (the acceptance): `cargo test -p butter-proto --release --lib -- --ignored
/// fault_mix_100_seeds --nocapture`.
#[test]
#[ignore = "100 runs: a minute in release"]
fn fault_mix_100_seeds() {
    let (broken, slow) = check(0..100);
    assert!(broken.is_empty(), "lost data or thrashed: {broken:?}");
    // Measured: 100 of 100 at exactly r within 60 s (median 28 s, max 37 s), 0.29 MB of item
    // bytes sent after the heal in all (spreads; nothing was missing), 4.5 MB before split
    // groups re-admitted each other's holders and held spreads until they met. Before a node
    // that left a group answered with the view it left for, 4 never settled within 120 s: each
    // an orphan of a view whose members had all left (see the test above).
    assert!(
        slow.is_empty(),
        "{} of 100 not at r within 60 s: {slow:?}",
        slow.len()
    );
}
