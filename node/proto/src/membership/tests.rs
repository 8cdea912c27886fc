//! A deterministic in-process harness: several [`Membership`] instances on a fake network with
//! latency, per-message loss, LANs (multicast reaches only the sender's site) and killable nodes.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use rand::SeedableRng;

use super::*;
use crate::wire::MemberUpdate;

const LATENCY: Duration = Duration::from_micros(500);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn secs(n: u64) -> Time {
    Time::from_duration(Duration::from_secs(n))
}

#[derive(Debug)]
enum Msg {
    Beacon {
        datagram: Vec<u8>,
        from: SocketAddr,
    },
    HelloReq {
        dialer: usize,
        addr: SocketAddr,
        source: Source,
    },
    HelloResp {
        addr: SocketAddr,
        record: PeerRecord,
        sample: Vec<PeerRecord>,
        source: Source,
    },
    DialFailed {
        addrs: Vec<SocketAddr>,
        expected: Option<PeerId>,
        source: Source,
    },
    Ping {
        from: usize,
        seq: u64,
    },
    ProbeResult {
        from: PeerId,
        seq: u64,
        outcome: ProbeOutcome,
    },
    PingReq {
        from: usize,
        seq: u64,
        target: PeerId,
    },
    Gossip {
        from: PeerId,
        updates: Vec<MemberUpdate>,
    },
}

struct Node {
    m: Membership,
    addr: SocketAddr,
    site: String,
    alive: bool,
}

struct Net {
    nodes: Vec<Node>,
    queue: BTreeMap<(Time, u64), (usize, Msg)>,
    seq: u64,
    rng: SmallRng,
    loss: f64,
    now: Time,
    events: Vec<(Time, usize, Event)>,
    beacons: Vec<Time>,
    dials: Vec<(Time, Source)>,
    config: Config,
}

fn record(n: usize, site: &str, addr: SocketAddr) -> PeerRecord {
    PeerRecord {
        id: PeerId::from_public_key(format!("node-{n}").as_bytes()),
        addrs: vec![addr],
        site: site.into(),
        uptime_secs: 0,
        storage_free: 1 << 30,
        known_hosts: 0,
        public: false,
        relays: vec![],
    }
}

impl Net {
    fn new(seed: u64, loss: f64) -> Self {
        Net {
            nodes: Vec::new(),
            queue: BTreeMap::new(),
            seq: 0,
            rng: SmallRng::seed_from_u64(seed),
            loss,
            now: Time::ZERO,
            events: Vec::new(),
            beacons: Vec::new(),
            dials: Vec::new(),
            config: Config::default(),
        }
    }

    /// Adds (starts) a node on LAN `site` at the current time.
    fn add(&mut self, site_no: u8, site: &str) -> usize {
        let n = self.nodes.len();
        let addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, site_no, n as u8 + 1)), 7000);
        let seed = self.rng.random::<u64>();
        let m = Membership::new(
            self.config.clone(),
            record(n, site, addr),
            self.now,
            SmallRng::seed_from_u64(seed),
        )
        .unwrap();
        self.nodes.push(Node {
            m,
            addr,
            site: site.into(),
            alive: true,
        });
        self.drain(n);
        n
    }

    /// Restarts a killed node with the same identity and address.
    fn restart(&mut self, n: usize) {
        let seed = self.rng.random::<u64>();
        let node = &self.nodes[n];
        let m = Membership::new(
            self.config.clone(),
            record(n, &node.site, node.addr),
            self.now,
            SmallRng::seed_from_u64(seed),
        )
        .unwrap();
        self.nodes[n].m = m;
        self.nodes[n].alive = true;
        self.drain(n);
    }

    fn id(&self, n: usize) -> PeerId {
        self.nodes[n].m.local_id()
    }

    fn by_addr(&self, addr: SocketAddr) -> Option<usize> {
        self.nodes.iter().position(|x| x.addr == addr)
    }

    fn by_id(&self, id: PeerId) -> Option<usize> {
        self.nodes.iter().position(|x| x.m.local_id() == id)
    }

    fn lost(&mut self) -> bool {
        self.loss > 0.0 && self.rng.random_bool(self.loss)
    }

    fn send(&mut self, at: Time, to: usize, msg: Msg) {
        self.seq += 1;
        self.queue.insert((at, self.seq), (to, msg));
    }

    /// Sends over the lossy network: one message, dropped with probability `loss`.
    fn send_lossy(&mut self, at: Time, to: usize, msg: Msg) {
        if !self.lost() {
            self.send(at, to, msg);
        }
    }

    fn drain(&mut self, n: usize) {
        let now = self.now;
        while let Some(e) = self.nodes[n].m.poll_event() {
            self.events.push((now, n, e));
        }
        while let Some(a) = self.nodes[n].m.poll_action() {
            let at = now + LATENCY;
            match a {
                Action::SendBeacon { datagram } => {
                    self.beacons.push(now);
                    let from = self.nodes[n].addr;
                    let site = self.nodes[n].site.clone();
                    for to in 0..self.nodes.len() {
                        if self.nodes[to].site == site {
                            self.send_lossy(
                                at,
                                to,
                                Msg::Beacon {
                                    datagram: datagram.clone(),
                                    from,
                                },
                            );
                        }
                    }
                }
                Action::Dial {
                    addrs,
                    expected_id,
                    source,
                } => {
                    self.dials.push((now, source));
                    let target = addrs.iter().find_map(|a| self.by_addr(*a).map(|t| (t, *a)));
                    let reachable = target.filter(|(t, _)| {
                        self.nodes[*t].alive && expected_id.is_none_or(|id| id == self.id(*t))
                    });
                    match reachable {
                        Some((t, addr)) if !self.lost() => {
                            self.send(
                                at,
                                t,
                                Msg::HelloReq {
                                    dialer: n,
                                    addr,
                                    source,
                                },
                            );
                        }
                        _ => self.send(
                            now + ms(1000),
                            n,
                            Msg::DialFailed {
                                addrs,
                                expected: expected_id,
                                source,
                            },
                        ),
                    }
                }
                Action::Ping { to, seq, .. } => {
                    if let Some(t) = self.by_id(to) {
                        self.send_lossy(at, t, Msg::Ping { from: n, seq });
                    }
                }
                Action::PingReq {
                    via, target, seq, ..
                } => {
                    if let Some(v) = self.by_id(via) {
                        self.send_lossy(
                            at,
                            v,
                            Msg::PingReq {
                                from: n,
                                seq,
                                target,
                            },
                        );
                    }
                }
                Action::Gossip { to, updates, .. } => {
                    let from = self.id(n);
                    if let Some(t) = self.by_id(to) {
                        self.send_lossy(at, t, Msg::Gossip { from, updates });
                    }
                }
            }
        }
    }

    fn deliver(&mut self, to: usize, msg: Msg) {
        if !self.nodes[to].alive {
            return;
        }
        let now = self.now;
        let at = now + LATENCY;
        match msg {
            Msg::Beacon { datagram, from } => self.nodes[to].m.handle_beacon(now, &datagram, from),
            Msg::HelloReq {
                dialer,
                addr,
                source,
            } => {
                let rec = self.nodes[dialer].m.local_record(now);
                let observed = self.nodes[dialer].addr;
                let network = self.nodes[dialer].m.config().network.clone();
                let sample = self.nodes[dialer].m.config().sample_size;
                match self.nodes[to]
                    .m
                    .handle_inbound_hello(now, observed, rec, &network, sample)
                {
                    Ok(reply) if !self.lost() => self.send(
                        at,
                        dialer,
                        Msg::HelloResp {
                            addr,
                            record: reply.record,
                            sample: reply.sample,
                            source,
                        },
                    ),
                    _ => {
                        let expected = Some(self.id(to));
                        self.send(
                            now + ms(1000),
                            dialer,
                            Msg::DialFailed {
                                addrs: vec![addr],
                                expected,
                                source,
                            },
                        )
                    }
                }
            }
            Msg::HelloResp {
                addr,
                record,
                sample,
                source,
            } => self.nodes[to]
                .m
                .handle_hello(now, addr, record, sample, source),
            Msg::DialFailed {
                addrs,
                expected,
                source,
            } => self.nodes[to]
                .m
                .handle_dial_failed(now, &addrs, expected, source),
            Msg::Ping { from, seq } => {
                let me = self.id(to);
                let pinger = self.id(from);
                self.nodes[to].m.handle_contact(now, pinger);
                self.send_lossy(
                    at,
                    from,
                    Msg::ProbeResult {
                        from: me,
                        seq,
                        outcome: ProbeOutcome::Ack,
                    },
                );
            }
            Msg::PingReq { from, seq, target } => {
                // The helper pings the target (two messages) and answers Ack, or Nack on timeout.
                let me = self.id(to);
                let t = self.by_id(target);
                let ok = t.is_some_and(|t| self.nodes[t].alive) && !self.lost() && !self.lost();
                let timeout = self.nodes[to].m.ping_req_timeout();
                let (when, outcome) = if ok {
                    (at + LATENCY * 2, ProbeOutcome::Ack)
                } else {
                    (now + timeout, ProbeOutcome::Nack)
                };
                self.send_lossy(
                    when,
                    from,
                    Msg::ProbeResult {
                        from: me,
                        seq,
                        outcome,
                    },
                );
            }
            Msg::ProbeResult { from, seq, outcome } => self.nodes[to]
                .m
                .handle_probe_result(now, from, seq, outcome),
            Msg::Gossip { from, updates } => self.nodes[to].m.handle_gossip(now, from, &updates),
        }
        self.drain(to);
    }

    fn run_until(&mut self, end: Time) {
        loop {
            let next_msg = self.queue.keys().next().map(|k| k.0);
            let next_timer = self
                .nodes
                .iter()
                .enumerate()
                .filter(|(_, x)| x.alive)
                .filter_map(|(i, x)| x.m.poll_timeout().map(|t| (t, i)))
                .min();
            let msg_first = match (next_msg, next_timer) {
                (Some(m), Some((t, _))) => m <= t,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (None, None) => break,
            };
            if msg_first {
                let Some((&key, _)) = self.queue.iter().next() else {
                    break;
                };
                if key.0 > end {
                    break;
                }
                let (to, msg) = self.queue.remove(&key).unwrap();
                self.now = self.now.max(key.0);
                self.deliver(to, msg);
            } else {
                let (t, i) = next_timer.unwrap();
                if t > end {
                    break;
                }
                self.now = self.now.max(t);
                let now = self.now;
                self.nodes[i].m.handle_timeout(now);
                self.drain(i);
            }
        }
        self.now = self.now.max(end);
    }

    fn kill(&mut self, n: usize) {
        self.nodes[n].alive = false;
    }

    /// Whether every live node knows every other live node.
    fn converged(&self) -> bool {
        let live: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| self.nodes[i].alive)
            .collect();
        live.iter().all(|&i| {
            live.iter()
                .all(|&j| i == j || self.nodes[i].m.table().contains(&self.id(j)))
        })
    }

    /// Runs in 10 ms steps until converged; returns when.
    fn run_until_converged(&mut self, limit: Time) -> Option<Time> {
        while self.now < limit {
            if self.converged() {
                return Some(self.now);
            }
            let next = self.now + ms(10);
            self.run_until(next);
        }
        self.converged().then_some(self.now)
    }

    fn count(&self, f: impl Fn(&Event) -> bool) -> usize {
        self.events.iter().filter(|(_, _, e)| f(e)).count()
    }
}

#[test]
fn three_nodes_on_a_lan_converge_by_multicast() {
    let mut net = Net::new(1, 0.0);
    for _ in 0..3 {
        net.add(1, "lan");
    }
    let t = net.run_until_converged(secs(2)).expect("converged");
    assert!(t <= Time::from_duration(ms(500)), "took {t:?}");
    for i in 0..3 {
        for h in net.nodes[i].m.table().iter() {
            assert_ne!(h.source, Source::Bootstrap);
        }
    }
    // Every node announces (its first beacon is unconditional); looped-back own beacons are
    // ignored and counted.
    net.run_until(secs(1));
    assert!(net.beacons.len() >= 3);
    assert!(
        net.count(|e| matches!(
            e,
            Event::BeaconIgnored {
                reason: beacon::Ignored::Own
            }
        )) >= 3
    );
}

#[test]
fn killed_node_leaves_every_table_within_8_s() {
    let mut net = Net::new(2, 0.0);
    for _ in 0..3 {
        net.add(1, "lan");
    }
    net.run_until(secs(5));
    assert!(net.converged());
    let victim = net.id(2);
    net.kill(2);
    let killed = net.now;
    net.run_until(killed + Duration::from_secs(8));
    for i in 0..2 {
        assert!(
            !net.nodes[i].m.table().contains(&victim),
            "node {i} still has the victim"
        );
    }
    let removed: Vec<Time> = net
        .events
        .iter()
        .filter(|(_, _, e)| matches!(e, Event::PeerRemoved { id, reason: RemoveReason::Dead } if *id == victim))
        .map(|(t, _, _)| *t)
        .collect();
    assert_eq!(removed.len(), 2);
    assert!(
        removed
            .iter()
            .all(|t| *t - killed <= Duration::from_secs(8))
    );
}

#[test]
fn no_false_eviction_with_5_percent_loss_over_2_minutes() {
    let mut net = Net::new(3, 0.05);
    for _ in 0..3 {
        net.add(1, "lan");
    }
    net.run_until(secs(120));
    assert!(net.converged(), "not converged under loss");
    let dead = net.count(|e| {
        matches!(
            e,
            Event::PeerRemoved {
                reason: RemoveReason::Dead,
                ..
            }
        )
    });
    assert_eq!(dead, 0, "false evictions");
    // Suspicions happen and are refuted. With 3 nodes a probe has one helper, so it fails with
    // ≈ 0.098 · 0.098 · 0.19 ≈ 1.8 · 10⁻³: about 1.3 expected among 720 probes.
    let suspicions = net.count(|e| matches!(e, Event::PeerSuspected { local: true, .. }));
    assert!(
        suspicions <= 8,
        "{suspicions} local suspicions in 6 node-minutes"
    );
    assert!(net.count(|e| matches!(e, Event::PeerAlive { .. })) >= suspicions);
}

#[test]
fn two_nodes_with_loss_keep_each_other() {
    // With two nodes there is no helper for indirect probes: suspicion and refutation carry it.
    let mut net = Net::new(4, 0.05);
    net.add(1, "lan");
    net.add(1, "lan");
    net.run_until(secs(120));
    assert!(net.converged());
    assert_eq!(net.count(|e| matches!(e, Event::PeerRemoved { .. })), 0);
}

#[test]
fn multicast_stays_on_its_lan_and_bootstrap_crosses_sites() {
    let mut net = Net::new(5, 0.0);
    let a0 = net.add(1, "a");
    let a1 = net.add(1, "a");
    let b0 = net.add(2, "b");
    let b1 = net.add(2, "b");
    net.run_until(secs(10));
    let knows = |net: &Net, i: usize, j: usize| net.nodes[i].m.table().contains(&net.id(j));
    assert!(knows(&net, a0, a1) && knows(&net, b0, b1));
    for (i, j) in [(a0, b0), (a0, b1), (a1, b0), (a1, b1)] {
        assert!(
            !knows(&net, i, j) && !knows(&net, j, i),
            "multicast crossed sites"
        );
    }
    // One bootstrap address on one node of b: within 10 s everyone knows everyone.
    let a0_addr = net.nodes[a0].addr;
    let now = net.now;
    net.nodes[b1].m.set_bootstrap(now, [a0_addr]);
    let started = net.now;
    let t = net
        .run_until_converged(started + Duration::from_secs(10))
        .expect("cross-site convergence");
    assert!(t - started <= Duration::from_secs(10));
    assert!(
        net.nodes[b1]
            .m
            .table()
            .get(&net.id(a0))
            .is_some_and(|h| h.source == Source::Bootstrap)
    );
    // b0 never heard a0's beacon: it learnt a0 by exchange (or a0 dialled it after learning b0).
    let b0_a0 = net.nodes[b0].m.table().get(&net.id(a0)).map(|h| h.source);
    assert!(
        matches!(b0_a0, Some(Source::Exchange | Source::Inbound)),
        "{b0_a0:?}"
    );
}

#[test]
fn an_emptied_table_restarts_discovery() {
    let mut net = Net::new(6, 0.0);
    net.add(1, "lan");
    net.add(1, "lan");
    net.run_until(secs(60));
    assert!(net.converged());
    let beacons_before = net.beacons.len();
    net.kill(1);
    let killed = net.now;
    net.run_until(killed + Duration::from_secs(10));
    assert!(net.nodes[0].m.table().is_empty());
    assert_eq!(net.count(|e| matches!(e, Event::Rediscovery)), 1);
    // Node 0 beacons quickly again (alone: at most 5 s apart).
    assert!(net.beacons.len() > beacons_before);
    // The node comes back (same identity): found again by multicast.
    net.restart(1);
    let back = net.now;
    let t = net
        .run_until_converged(back + Duration::from_secs(6))
        .expect("found again");
    assert!(t - back <= Duration::from_secs(6));
}

#[test]
fn bootstrap_is_retried_until_reachable() {
    let mut net = Net::new(7, 0.0);
    let a = net.add(1, "a");
    let b = net.add(2, "b");
    net.kill(a);
    let a_addr = net.nodes[a].addr;
    let now = net.now;
    net.nodes[b].m.set_bootstrap(now, [a_addr]);
    net.run_until(secs(20));
    let failures = net.count(|e| {
        matches!(
            e,
            Event::DialFailed {
                source: Source::Bootstrap
            }
        )
    });
    // Backoff 1, 2, 4, 8 s (+ 1 s simulated failure latency each): a handful, not one per tick.
    assert!((3..=8).contains(&failures), "{failures} bootstrap failures");
    net.restart(a);
    let back = net.now;
    let t = net
        .run_until_converged(back + Duration::from_secs(35))
        .expect("reached");
    assert!(t - back <= Duration::from_secs(35));
}

#[test]
fn wrong_network_and_garbage_are_refused() {
    let mut net = Net::new(8, 0.0);
    let a = net.add(1, "lan");
    let stranger = record(99, "lan", "10.0.1.99:7000".parse().unwrap());
    let now = net.now;
    let r =
        net.nodes[a]
            .m
            .handle_inbound_hello(now, stranger.addrs[0], stranger.clone(), "other", 16);
    assert_eq!(r, Err(HelloRefused::WrongNetwork));
    let other_net = Beacon {
        id: stranger.id,
        network: "other".into(),
        addrs: stranger.addrs.clone(),
        site: "lan".into(),
    };
    net.nodes[a]
        .m
        .handle_beacon(now, &other_net.encode().unwrap(), stranger.addrs[0]);
    net.nodes[a]
        .m
        .handle_beacon(now, b"garbage", stranger.addrs[0]);
    net.drain(a);
    assert!(net.nodes[a].m.table().is_empty());
    assert_eq!(
        net.count(|e| matches!(
            e,
            Event::BeaconIgnored {
                reason: beacon::Ignored::OtherNetwork
            }
        )),
        1
    );
    assert_eq!(
        net.count(|e| matches!(
            e,
            Event::BeaconIgnored {
                reason: beacon::Ignored::Malformed
            }
        )),
        1
    );
    assert_eq!(
        net.count(|e| matches!(
            e,
            Event::HelloRefused {
                reason: HelloRefused::WrongNetwork
            }
        )),
        1
    );
}

#[test]
fn hello_sample_is_bounded_and_excludes_the_requester() {
    let mut net = Net::new(9, 0.0);
    for _ in 0..40 {
        net.add(1, "lan");
    }
    net.run_until(secs(5));
    assert!(net.converged());
    let requester = net.nodes[1].m.local_record(net.now);
    let now = net.now;
    let observed = net.nodes[1].addr;
    let reply = net.nodes[0]
        .m
        .handle_inbound_hello(now, observed, requester.clone(), "butter", 100)
        .unwrap();
    assert_eq!(reply.sample.len(), 32);
    assert!(reply.sample.iter().all(|r| r.id != requester.id));
    assert_eq!(reply.record.known_hosts, 39);
}

/// The T6/T8 scenario in simulation: 30 nodes started at the same instant on one LAN.
#[test]
fn thirty_nodes_simultaneous_start() {
    let mut net = Net::new(10, 0.0);
    for _ in 0..30 {
        net.add(1, "lan");
    }
    let t = net
        .run_until_converged(secs(2))
        .expect("30 nodes converge within 2 s");
    assert!(t <= secs(2));
    net.run_until(secs(10));
    let startup = net.beacons.iter().filter(|t| **t <= secs(10)).count();
    eprintln!(
        "30 nodes: converged at {:?}, {startup} beacons in 10 s",
        t.as_duration()
    );
    assert!(
        startup <= 60,
        "{startup} beacons in the first 10 s (budget 2·N = 60)"
    );
    // Steady state: well under 0.5 beacons/s for the whole LAN.
    net.run_until(secs(400));
    let steady = net.beacons.iter().filter(|t| **t > secs(100)).count() as f64 / 300.0;
    assert!(steady <= 0.5, "{steady} beacons/s in steady state");
    eprintln!("steady state: {steady:.3} beacons/s");
    // A late joiner is known to all within 1 s.
    let late = net.add(1, "lan");
    let joined = net.now;
    let t = net
        .run_until_converged(joined + Duration::from_secs(1))
        .expect("late joiner known within 1 s");
    assert!(t - joined <= Duration::from_secs(1));
    // Kill one: gone from every table within 8 s; nobody else is removed.
    net.run_until(joined + Duration::from_secs(30));
    let victim = net.id(late);
    net.kill(late);
    let killed = net.now;
    net.run_until(killed + Duration::from_secs(8));
    for i in 0..30 {
        assert!(
            !net.nodes[i].m.table().contains(&victim),
            "node {i} still has the victim after 8 s"
        );
    }
    let last = net
        .events
        .iter()
        .filter(|(_, _, e)| matches!(e, Event::PeerRemoved { id, .. } if *id == victim))
        .map(|(t, _, _)| *t - killed)
        .max();
    eprintln!("victim removed everywhere after {last:?}");
    assert!(net.converged());
    let dead_others = net.count(|e| matches!(e, Event::PeerRemoved { id, .. } if *id != victim));
    assert_eq!(dead_others, 0);
}

#[test]
fn same_seed_same_history() {
    let run = || {
        let mut net = Net::new(11, 0.05);
        for _ in 0..3 {
            net.add(1, "lan");
        }
        net.run_until(secs(30));
        net.events
            .iter()
            .map(|(t, n, e)| format!("{t:?} {n} {e:?}"))
            .collect::<Vec<_>>()
    };
    assert_eq!(run(), run());
}

/// T8 in simulation: 30 nodes, 5 % loss on every message, 5 simulated minutes (2.5 node-hours):
/// no live node is removed, and false suspicions stay near the expected ≈ 0.44 per node-hour.
#[test]
fn thirty_nodes_with_5_percent_loss_no_false_removal() {
    let mut net = Net::new(12, 0.05);
    for _ in 0..30 {
        net.add(1, "lan");
    }
    net.run_until(secs(300));
    assert!(net.converged());
    assert_eq!(net.count(|e| matches!(e, Event::PeerRemoved { .. })), 0);
    let suspicions = net.count(|e| matches!(e, Event::PeerSuspected { local: true, .. }));
    eprintln!("{suspicions} false suspicions in 2.5 node-hours");
    assert!(
        suspicions <= 5,
        "{suspicions} false suspicions in 2.5 node-hours"
    );
}

/// More hosts than the table holds, on 4 sites joined by bootstrap: every table fills up with
/// several sites, and dialling settles down instead of churning through rejected candidates.
#[test]
fn at_capacity_tables_span_sites_and_dialling_settles() {
    let mut net = Net::new(13, 0.0);
    net.config.peers.capacity = 8;
    let sites = ["a", "b", "c", "d"];
    for (s, name) in sites.iter().enumerate() {
        for _ in 0..6 {
            net.add(s as u8 + 1, name);
        }
    }
    let anchor = net.nodes[0].addr;
    let now = net.now;
    for s in 1..4 {
        net.nodes[s * 6].m.set_bootstrap(now, [anchor]);
    }
    net.run_until(secs(300));
    for (i, node) in net.nodes.iter().enumerate() {
        let t = node.m.table();
        eprintln!("node {i}: {} hosts, sites {:?}", t.len(), t.site_counts());
        assert_eq!(t.len(), 8, "node {i}");
        assert!(
            t.site_counts().len() >= 3,
            "node {i} sites {:?}",
            t.site_counts()
        );
    }
    let late = net.dials.iter().filter(|(t, _)| *t > secs(240)).count() as f64 / 60.0 / 24.0;
    for src in [Source::Multicast, Source::Bootstrap, Source::Exchange] {
        let n = net
            .dials
            .iter()
            .filter(|(t, s)| *t > secs(60) && *s == src)
            .count();
        eprintln!("{src:?}: {n} dials in the last minute");
    }
    eprintln!("{late:.3} dials per node per second in the fifth minute");
    assert!(late <= 0.5, "{late} dials per node per second");
}

#[test]
fn a_restarted_node_is_known_again_well_before_dead_retention() {
    let mut net = Net::new(11, 0.0);
    let a0 = net.add(1, "a");
    let a1 = net.add(1, "a");
    let b0 = net.add(2, "b");
    let b1 = net.add(2, "b");
    let a0_addr = net.nodes[a0].addr;
    let now = net.now;
    net.nodes[b1].m.set_bootstrap(now, [a0_addr]);
    net.run_until_converged(secs(20)).expect("converged");
    let victim = net.id(b0);
    net.kill(b0);
    let killed = net.now;
    net.run_until(killed + Duration::from_secs(10));
    for i in [a0, a1, b1] {
        assert!(
            !net.nodes[i].m.table().contains(&victim),
            "{i} still has it"
        );
    }
    net.restart(b0);
    let restarted = net.now;
    let t = net
        .run_until_converged(restarted + Duration::from_secs(25))
        .expect("the restarted node is known again");
    assert!(
        t - restarted <= Duration::from_secs(10),
        "known again after {:?} (dead retention {:?})",
        t - restarted,
        net.config.swim.dead_retention
    );
}

#[test]
fn thirty_nodes_simultaneous_start_with_5_percent_loss_converge_in_seconds() {
    // Lost beacons and failed dials must not leave pairs to a slow exchange backoff: failed dials
    // to heard or sampled neighbours are retried, and a node that meets a peer knowing more hosts
    // exchanges again at once. (Before: 6.6 s to over 30 s; 7 of 20 seeds had not converged at
    // 30 s.) Dial failures surface after 1 s here, as a lost handshake would.
    let mut times = Vec::new();
    for seed in 0..20 {
        let mut net = Net::new(100 + seed, 0.05);
        for _ in 0..30 {
            net.add(1, "lan");
        }
        let t = net.run_until_converged(secs(30));
        times.push(t.map_or(f64::INFINITY, |t| t.as_duration().as_secs_f64()));
    }
    times.sort_by(f64::total_cmp);
    eprintln!("converged after {times:.2?} s");
    assert!(times[19] <= 6.0, "slowest {:.2} s: {times:.2?}", times[19]);
    assert!(times[10] <= 3.5, "median {:.2} s: {times:.2?}", times[10]);
}

#[test]
fn a_table_with_room_takes_back_a_host_it_once_evicted() {
    // One LAN of 11 with room for 8: every table is full and has evicted some of the others
    // (remembered for a minute so that full tables do not trade hosts back and forth). Then
    // hosts die: a table now has room, and the live hosts it lacks may be exactly those it
    // evicted. It must take them back at once, not after the eviction memory runs out (the
    // netns tier saw nodes of a 72-node LAN stay one host short for good this way).
    let mut net = Net::new(21, 0.0);
    net.config.peers.capacity = 8;
    for _ in 0..11 {
        net.add(1, "lan");
    }
    net.run_until(secs(30));
    let evictions = net
        .events
        .iter()
        .filter(|(_, _, e)| {
            matches!(
                e,
                Event::PeerRemoved {
                    reason: RemoveReason::Evicted { .. },
                    ..
                }
            )
        })
        .count();
    assert!(evictions > 0, "the setup evicts");
    net.kill(9);
    net.kill(10);
    let killed = net.now;
    // SWIM's detection (seconds) plus a beacon or an exchange; far below the 60 s memory.
    net.run_until(killed + Duration::from_secs(25));
    for i in 0..9 {
        let t = net.nodes[i].m.table();
        assert_eq!(
            t.len(),
            8,
            "node {i} has {} hosts of 8 live others",
            t.len()
        );
    }
    assert!(net.config.reject_memory > Duration::from_secs(25));
}

/// The #17 goal on one LAN: every node holds `min(N − 1, capacity)` hosts, is held by at least 8
/// others, and the who-knows-whom graph is strongly connected. Returns the nodes that miss it.
fn lan_goal_misses(net: &Net) -> Vec<usize> {
    let n = net.nodes.len();
    let share = (n - 1).min(net.config.peers.capacity);
    let ids: Vec<PeerId> = (0..n).map(|i| net.id(i)).collect();
    let held_by = |j: usize| {
        (0..n)
            .filter(|&i| i != j && net.nodes[i].m.table().contains(&ids[j]))
            .count()
    };
    let mut miss: Vec<usize> = (0..n)
        .filter(|&i| net.nodes[i].m.table().len() < share || held_by(i) < 8.min(n - 1))
        .collect();
    if miss.is_empty() {
        // Strongly connected: everyone reaches everyone from node 0, forwards and backwards.
        for forward in [true, false] {
            let mut seen = vec![false; n];
            let mut stack = vec![0];
            seen[0] = true;
            while let Some(a) = stack.pop() {
                for b in 0..n {
                    let edge = if forward {
                        net.nodes[a].m.table().contains(&ids[b])
                    } else {
                        net.nodes[b].m.table().contains(&ids[a])
                    };
                    if edge && !seen[b] {
                        seen[b] = true;
                        stack.push(b);
                    }
                }
            }
            miss.extend((0..n).filter(|&i| !seen[i]));
        }
    }
    miss
}

/// #17: a LAN of 40, 100 and 150 nodes started at one instant. Beacons heard and hosts named in a
/// reached host's sample take free places at once, unverified, and are checked at an even pace,
/// so the goal holds within a second of simulated time while the handshakes of the first two
/// seconds stay near the `verify_burst` plus the pace (before: every node dialled nearly every
/// other at once, ~56 handshakes per node in the first seconds at N = 100 — on 2 cores the real
/// LAN took 13 s). Then nodes join one by one into the full LAN: each newcomer is held by 8
/// others and holds its share within 2 s.
#[test]
fn a_large_lan_started_at_once_holds_its_share_with_few_handshakes() {
    for (n, seed) in [(40usize, 30u64), (100, 31), (150, 32)] {
        let mut net = Net::new(seed, 0.0);
        for _ in 0..n {
            net.add(1, "lan");
        }
        let mut reached = None;
        while net.now < secs(5) {
            let next = net.now + ms(100);
            net.run_until(next);
            if reached.is_none() && lan_goal_misses(&net).is_empty() {
                reached = Some(net.now);
            }
        }
        let early = net.dials.iter().filter(|(t, _)| *t <= secs(2)).count() as f64 / n as f64;
        eprintln!("N = {n}: goal at {reached:?}, {early:.1} dials per node in the first 2 s");
        let reached =
            reached.unwrap_or_else(|| panic!("N = {n}: goal missed: {:?}", lan_goal_misses(&net)));
        assert!(reached <= secs(1), "N = {n}: goal at {reached:?}");
        assert!(
            early <= 20.0,
            "N = {n}: {early:.1} dials per node in the first 2 s"
        );
        // Every host is reached within 30 s (64 at 4 per second, many reaching us first): none
        // stays unverified.
        net.run_until(secs(30));
        let unverified: usize = net
            .nodes
            .iter()
            .map(|x| x.m.table().unverified_count())
            .sum();
        assert_eq!(unverified, 0, "N = {n}: hosts still unverified after 30 s");
        assert!(lan_goal_misses(&net).is_empty(), "N = {n} at 30 s");
        if n == 100 {
            // Newcomers into the full LAN, one every 3 s.
            for _ in 0..5 {
                let z = net.add(1, "lan");
                let joined = net.now;
                net.run_until(joined + Duration::from_secs(2));
                let misses = lan_goal_misses(&net);
                assert!(
                    misses.is_empty(),
                    "newcomer {z}: goal missed by {misses:?} 2 s after it joined"
                );
                net.run_until(joined + Duration::from_secs(3));
            }
        }
    }
}

/// #17 as the lab sees it: processes on a loaded machine do not start at one instant, so a node
/// started late missed the beacons of those before it. 64, 100 and 150 nodes starting over 1.5 s:
/// the goal holds within 3 s of the last start (measured: 2.3 s at N = 64, where the share is
/// every other node and the last one or two hosts come from a beacon or a later sample; 0.9 s
/// at N = 100. Before the lazy verification and the sample of 32: 6 s at N = 64).
#[test]
fn a_large_lan_started_over_a_second_and_a_half_holds_its_share_3_s_after_the_last_start() {
    for n in [64usize, 100, 150] {
        let mut net = Net::new(40, 0.0);
        for _ in 0..n {
            net.add(1, "lan");
            let next = net.now + Duration::from_millis(1500 / n as u64);
            net.run_until(next);
        }
        let last = net.now;
        net.run_until(last + Duration::from_secs(3));
        let misses = lan_goal_misses(&net);
        assert!(
            misses.is_empty(),
            "N = {n}: 3 s after the last start, missed by {misses:?}"
        );
    }
}
