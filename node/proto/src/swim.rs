//! SWIM-style liveness: direct probes, indirect probes, suspicion, refutation, dissemination.
//!
//! ## Protocol
//! Every [`Config::period`] the node probes **one** member, taken round-robin from a shuffled list
//! (reshuffled each round; newcomers are inserted at a random place), so each node sends one probe
//! per period whatever the table size and every member is probed by someone about once a period.
//! 1. **Direct**: `Ping{seq}` to the target; an `Ack{seq}` within [`Config::probe_timeout`] ends it.
//! 2. **Indirect**: otherwise `PingReq{seq, target}` to [`Config::indirect_probes`] other members
//!    *and* a second direct `Ping` (a lost datagram is the likeliest cause); any ack with that `seq`
//!    within [`Config::indirect_timeout`] ends it.
//! 3. **Suspicion**: otherwise the target becomes *suspect* at its current incarnation, and the
//!    suspicion is disseminated (the suspect itself is told directly, so it can refute). A suspect
//!    that has not refuted within [`Config::suspicion_timeout`] is declared **dead** and removed.
//!
//! A suspect refutes by raising its own *incarnation* and disseminating `Alive` at the new number,
//! which overrides the suspicion everywhere. Locally, any direct sign of life (an ack, a Hello, a
//! gossip message from it) also clears a suspicion at once. Updates spread by infection-style
//! gossip: a new update is sent at once and then every [`Config::gossip_interval`] to
//! [`Config::gossip_fanout`] random members, `retransmit_mult · ⌈log10(n + 1)⌉` times per node, as
//! in memberlist; nothing is sent when there is nothing new (no periodic cost).
//!
//! ## Why the defaults (goal T8: killed node gone everywhere within 8 s p99 at N = 30; ≤ 1 false
//! suspicion per node-hour at 5 % loss)
//! - **Detection** = wait for the first probe of the dead node + probe + suspicion + spread. With
//!   N − 1 nodes each probing it once per N − 1 periods at independent phases, the wait is about
//!   exponential with mean one period: p99 ≈ 4.3 periods = 2.2 s at `period` = 500 ms. Probing
//!   takes 200 + 300 ms, the suspicion 3 s, and gossip (sent at once, 200 ms rounds) well under
//!   0.5 s: p99 ≈ 6 s, leaving about 2 s for the driver and scheduling.
//! - **False suspicions** with 5 % independent loss per message (the simulator's model; over QUIC a
//!   lost packet is retransmitted within a few ms on a LAN, so real losses are rarer still): a
//!   direct ping fails with p = 1 − 0.95² ≈ 0.098; the second ping also fails with 0.098; each of
//!   3 indirect probes (4 messages) fails with 1 − 0.95⁴ ≈ 0.19, all three with 0.0064. So a probe
//!   fails with ≈ 6 · 10⁻⁵, i.e. 7 200 probes per hour give ≈ 0.44 false suspicions per node-hour,
//!   and a false suspicion is refuted (gossip round trip) long before 3 s, so no false eviction.
//! - **Local health** (Lifeguard's local health multiplier, as in memberlist): the failure
//!   detector above assumes the *prober* is healthy. A node starved of CPU (a hundred nodes
//!   starting at once on two cores), or losing its own packets, sees every answer late and would
//!   suspect one healthy member per period, and the whole network would spend its time refuting
//!   (seen in the netns lab at N = 100: ~200 suspicions and ~20 false deaths per node in the
//!   first seconds). So each failed probe, and each suspicion of us that we must refute, raises a
//!   local health score (at most `max_local_health`, 8); each probe answered within half its
//!   window lowers it; the period and both probe timeouts are stretched by `1 + score`. A node
//!   whose answers come back late therefore suspects once, then waits long enough, and returns
//!   to full speed when answers are fast again. A real death is still suspected by the first
//!   probe that misses it: only the pace of the prober's later probes changes.
//! - `probe_timeout` 200 ms is ≫ LAN round trips (and room for a QUIC retransmission or two);
//!   `probe_timeout + indirect_timeout` must fit in a period so probes never overlap.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use rand::Rng;
use rand::seq::{IndexedRandom, SliceRandom};
use serde::{Deserialize, Serialize};

use crate::id::PeerId;
use crate::time::Time;
use crate::wire::{MemberState, MemberUpdate};

/// Settings of the liveness protocol. See the [module documentation](self) for why the defaults.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// One probe per period. Default 500 ms.
    pub period: Duration,
    /// How long a direct ping may take. Default 200 ms.
    pub probe_timeout: Duration,
    /// How long the indirect phase may take after the direct one timed out. Default 300 ms.
    pub indirect_timeout: Duration,
    /// Members asked to probe indirectly (k). Default 3.
    pub indirect_probes: usize,
    /// How long a suspect has to refute before it is declared dead. Default 3 s.
    pub suspicion_timeout: Duration,
    /// Gossip round while there are updates to spread. Default 200 ms.
    pub gossip_interval: Duration,
    /// Members each gossip round goes to. Default 3.
    pub gossip_fanout: usize,
    /// Each update is sent `retransmit_mult · ⌈log10(n + 1)⌉` times per node. Default 4.
    pub retransmit_mult: u32,
    /// Most updates in one gossip message. Default 32.
    pub max_updates_per_message: usize,
    /// How long a dead member's id is remembered (so stale rumours do not resurrect it). Default 30 s.
    pub dead_retention: Duration,
    /// Highest local health score (Lifeguard's local health multiplier): a node whose own probes
    /// keep failing, or that keeps being suspected, is probably the slow one (CPU-starved,
    /// overloaded, losing packets), so it stretches its period and probe timeouts up to
    /// `1 + max_local_health` times instead of suspecting healthy members. 0 turns it off.
    /// Default 8.
    pub max_local_health: u32,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            period: Duration::from_millis(500),
            probe_timeout: Duration::from_millis(200),
            indirect_timeout: Duration::from_millis(300),
            indirect_probes: 3,
            suspicion_timeout: Duration::from_secs(3),
            gossip_interval: Duration::from_millis(200),
            gossip_fanout: 3,
            retransmit_mult: 4,
            max_updates_per_message: 32,
            dead_retention: Duration::from_secs(30),
            max_local_health: 8,
        }
    }
}

/// A liveness setting out of range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A duration or count that must be positive is zero.
    #[error("{0} must be positive")]
    Zero(&'static str),
    /// The two probe phases do not fit in one period.
    #[error("probe_timeout + indirect_timeout must not exceed period")]
    ProbeLongerThanPeriod,
}

impl Config {
    /// Checks that every value is in range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let zero = [
            ("period", self.period.is_zero()),
            ("probe_timeout", self.probe_timeout.is_zero()),
            ("indirect_timeout", self.indirect_timeout.is_zero()),
            ("suspicion_timeout", self.suspicion_timeout.is_zero()),
            ("gossip_interval", self.gossip_interval.is_zero()),
            ("gossip_fanout", self.gossip_fanout == 0),
            ("retransmit_mult", self.retransmit_mult == 0),
            ("max_updates_per_message", self.max_updates_per_message == 0),
        ];
        if let Some((name, _)) = zero.iter().find(|(_, z)| *z) {
            return Err(ConfigError::Zero(name));
        }
        if self.probe_timeout + self.indirect_timeout > self.period {
            return Err(ConfigError::ProbeLongerThanPeriod);
        }
        Ok(())
    }
}

/// A message SWIM wants sent.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Command {
    /// Send `Request::Ping{seq}` to `to`; report the ack with [`Swim::handle_ack`].
    Ping {
        /// The target.
        to: PeerId,
        /// Probe sequence number.
        seq: u64,
    },
    /// Send `Request::PingReq{seq, target}` to `via`; report an `Ack` with [`Swim::handle_ack`].
    PingReq {
        /// The helper.
        via: PeerId,
        /// Whom the helper should probe.
        target: PeerId,
        /// Probe sequence number.
        seq: u64,
    },
    /// Send `Request::Gossip{updates}` to `to`.
    Gossip {
        /// The recipient.
        to: PeerId,
        /// The updates.
        updates: Vec<MemberUpdate>,
    },
}

/// Most deaths remembered at once (members declared dead and deaths heard of by gossip): a
/// flood of forged death claims cannot grow the memory past this.
pub const MAX_DEAD_REMEMBERED: usize = 4096;

/// Something SWIM concluded.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A probe was answered (`rtt` when the direct ping was).
    Acked {
        /// The probed member.
        id: PeerId,
        /// Round-trip time of the direct ping.
        rtt: Option<Duration>,
    },
    /// The direct phase of a probe failed; the indirect phase starts.
    DirectFailed {
        /// The probed member.
        id: PeerId,
    },
    /// A member became suspect (our probe failed, or we were told).
    Suspected {
        /// The member.
        id: PeerId,
        /// Its incarnation.
        incarnation: u64,
        /// Whether our own probe found it (rather than gossip).
        local: bool,
    },
    /// A suspicion was cleared (refuted, or direct contact).
    Cleared {
        /// The member.
        id: PeerId,
    },
    /// A member was declared dead and removed.
    Dead {
        /// The member.
        id: PeerId,
        /// Whether our own suspicion timed out (rather than being told).
        local: bool,
    },
    /// Gossip declared dead a node this one does not watch (not a member here): remembered as
    /// recently dead, so a stale sample does not bring it back and a data group it shares with
    /// this node can replace it, but not spread further (it is not our news to spread).
    HeardDead {
        /// The node.
        id: PeerId,
    },
    /// Someone suspected *us*: we raised our incarnation to refute it.
    Refuted {
        /// Our new incarnation.
        incarnation: u64,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Status {
    Alive,
    Suspect { deadline: Time },
}

#[derive(Clone, Copy, Debug)]
struct Member {
    incarnation: u64,
    status: Status,
    /// Re-added after we had it dead at `incarnation`, on direct proof of life (a completed
    /// Hello or a request from it). Rumours of its death or suspicion at that same incarnation are
    /// then older than what we saw ourselves and are ignored; its own refutation (a higher
    /// incarnation) clears the flag. Without it, the Dead rumours still piggybacked around the
    /// network re-killed a host within moments of each re-admission: ~300 `dead` removals of
    /// live hosts per node in 3 minutes in a loaded 100-node lab.
    revived: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Direct,
    Indirect,
}

#[derive(Clone, Copy, Debug)]
struct Probe {
    target: PeerId,
    seq: u64,
    sent: Time,
    phase: Phase,
    deadline: Time,
}

#[derive(Clone, Copy, Debug)]
struct Queued {
    update: MemberUpdate,
    remaining: u32,
}

/// The liveness state machine of one node. See the [module documentation](self).
///
/// Add and remove members as the known-host table changes ([`Swim::add`], [`Swim::remove`]); call
/// [`Swim::handle_timeout`] at [`Swim::poll_timeout`]; report acks, failures, gossip and contacts;
/// drain [`Swim::poll_command`] and [`Swim::poll_event`] after each call.
#[derive(Clone, Debug)]
pub struct Swim {
    config: Config,
    local: PeerId,
    incarnation: u64,
    members: BTreeMap<PeerId, Member>,
    order: Vec<PeerId>,
    cursor: usize,
    next_probe: Time,
    probe: Option<Probe>,
    recent: VecDeque<(u64, PeerId)>,
    next_seq: u64,
    dead: BTreeMap<PeerId, (u64, Time)>,
    /// When entries of `dead` run out, in order (every entry lives `dead_retention`, so
    /// insertion order is expiry order); stale entries (re-added members) are skipped.
    dead_expiry: VecDeque<(Time, PeerId)>,
    queue: Vec<Queued>,
    next_gossip: Option<Time>,
    commands: VecDeque<Command>,
    events: VecDeque<Event>,
    /// Local health score, 0 (healthy) to `max_local_health`: probe timings are stretched by
    /// `1 + health` (see [`Config::max_local_health`]).
    health: u32,
}

impl Swim {
    /// A node with no members; the first probe period starts at a random point within one period.
    pub fn new<R: Rng + ?Sized>(
        config: Config,
        local: PeerId,
        now: Time,
        rng: &mut R,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        let next_probe = now + config.period.mul_f64(rng.random::<f64>());
        Ok(Swim {
            config,
            local,
            incarnation: 0,
            members: BTreeMap::new(),
            order: Vec::new(),
            cursor: 0,
            next_probe,
            probe: None,
            recent: VecDeque::new(),
            next_seq: 1,
            dead: BTreeMap::new(),
            dead_expiry: VecDeque::new(),
            queue: Vec::new(),
            next_gossip: None,
            commands: VecDeque::new(),
            events: VecDeque::new(),
            health: 0,
        })
    }

    /// The settings.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Our own incarnation.
    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }

    /// Number of members.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether there are no members.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The local health score (0 = healthy; see [`Config::max_local_health`]).
    pub fn local_health(&self) -> u32 {
        self.health
    }

    /// `d` stretched by the local health score.
    fn scaled(&self, d: Duration) -> Duration {
        d * (1 + self.health)
    }

    /// Lifeguard's rule: a failed probe or a suspicion of us counts against our own health, a
    /// probe answered well within its window for it.
    fn health_worse(&mut self) {
        self.health = (self.health + 1).min(self.config.max_local_health);
    }

    /// Whether `id` is a member.
    pub fn contains(&self, id: &PeerId) -> bool {
        self.members.contains_key(id)
    }

    /// Whether `id` is currently suspect.
    pub fn is_suspect(&self, id: &PeerId) -> bool {
        matches!(
            self.members.get(id),
            Some(Member {
                status: Status::Suspect { .. },
                ..
            })
        )
    }

    /// Members declared dead within `dead_retention`.
    pub fn recently_dead(&self) -> impl Iterator<Item = &PeerId> {
        self.dead.keys()
    }

    /// Whether `id` was declared dead recently (within `dead_retention`).
    pub fn is_recently_dead(&self, id: &PeerId) -> bool {
        self.dead.contains_key(id)
    }

    /// Starts watching `id` (alive). A recent death is forgotten: the caller has direct proof of life.
    pub fn add<R: Rng + ?Sized>(&mut self, id: PeerId, rng: &mut R) {
        if id == self.local || self.members.contains_key(&id) {
            return;
        }
        let dead = self.dead.remove(&id);
        let incarnation = dead.map_or(0, |(inc, _)| inc);
        self.members.insert(
            id,
            Member {
                incarnation,
                status: Status::Alive,
                revived: dead.is_some(),
            },
        );
        // Insert at a random place among those not yet probed this round.
        let from = self.cursor.min(self.order.len());
        let at = rng.random_range(from..=self.order.len());
        self.order.insert(at, id);
    }

    /// Stops watching `id` (evicted or gone), without telling anyone.
    pub fn remove(&mut self, id: &PeerId) {
        if self.members.remove(id).is_some()
            && let Some(pos) = self.order.iter().position(|x| x == id)
        {
            self.order.remove(pos);
            if pos < self.cursor {
                self.cursor -= 1;
            }
        }
        if self.probe.is_some_and(|p| p.target == *id) {
            self.probe = None;
        }
    }

    /// When [`Swim::handle_timeout`] must be called next.
    pub fn poll_timeout(&self) -> Time {
        let mut t = self.next_probe;
        if let Some(p) = self.probe {
            t = t.min(p.deadline);
        }
        for m in self.members.values() {
            if let Status::Suspect { deadline } = m.status {
                t = t.min(deadline);
            }
        }
        if let Some(g) = self.next_gossip {
            t = t.min(g);
        }
        if let Some((until, _)) = self.dead_expiry.front() {
            t = t.min(*until);
        }
        t
    }

    /// Advances probes, suspicions and gossip to `now`.
    pub fn handle_timeout<R: Rng + ?Sized>(&mut self, now: Time, rng: &mut R) {
        while let Some((until, id)) = self.dead_expiry.front().copied() {
            if until > now {
                break;
            }
            self.dead_expiry.pop_front();
            if self.dead.get(&id).is_some_and(|(_, u)| *u <= now) {
                self.dead.remove(&id);
            }
        }
        self.expire_suspicions(now);
        if let Some(p) = self.probe
            && p.deadline <= now
        {
            match p.phase {
                Phase::Direct => self.go_indirect(now, p, rng),
                Phase::Indirect => {
                    self.probe = None;
                    self.probe_failed(now, p.target, rng);
                }
            }
        }
        if self.next_probe <= now
            && let Some(p) = self.probe
        {
            // A real driver always wakes a little late, so the indirect phase of a probe can
            // run past the next period. Abandoning it would mean a dead member is never
            // suspected; instead the next probe waits until this one has concluded.
            self.next_probe = p.deadline;
        } else if self.next_probe <= now {
            self.start_probe(now, rng);
            let period = self.scaled(self.config.period);
            self.next_probe = if self.next_probe + period > now {
                self.next_probe + period
            } else {
                now + period
            };
        }
        if self.next_gossip.is_some_and(|t| t <= now) {
            self.gossip_round(now, rng);
        }
    }

    /// An `Ack{seq}` arrived (from the target, or from a helper on its behalf).
    pub fn handle_ack(&mut self, now: Time, seq: u64) {
        if let Some(p) = self.probe
            && p.seq == seq
        {
            self.probe = None;
            // Only an answer well inside the window counts for our health: one that barely made
            // it means the window is about right, and shrinking it would fail the next probe.
            let window = self.scaled(self.config.probe_timeout + self.config.indirect_timeout);
            if now.saturating_since(p.sent) * 2 <= window {
                self.health = self.health.saturating_sub(1);
            }
            let rtt = (p.phase == Phase::Direct).then(|| now.saturating_since(p.sent));
            self.events.push_back(Event::Acked { id: p.target, rtt });
            self.contact(p.target);
            return;
        }
        // A late ack still proves the target was alive.
        if let Some(&(_, target)) = self.recent.iter().find(|(s, _)| *s == seq) {
            self.contact(target);
        }
    }

    /// A ping for probe `seq` could not be sent to `to` (no connection, dial refused): the direct
    /// phase ends early.
    pub fn handle_send_failed<R: Rng + ?Sized>(
        &mut self,
        now: Time,
        seq: u64,
        to: &PeerId,
        rng: &mut R,
    ) {
        if let Some(p) = self.probe
            && p.seq == seq
            && p.target == *to
            && p.phase == Phase::Direct
        {
            self.go_indirect(now, p, rng);
        }
    }

    /// Direct evidence that `id` is alive (it answered or asked us something): clears a suspicion
    /// locally.
    pub fn contact(&mut self, id: PeerId) {
        if let Some(m) = self.members.get_mut(&id)
            && matches!(m.status, Status::Suspect { .. })
        {
            m.status = Status::Alive;
            self.events.push_back(Event::Cleared { id });
        }
    }

    /// Membership updates arrived from `from` (a member's gossip).
    pub fn handle_gossip<R: Rng + ?Sized>(
        &mut self,
        now: Time,
        from: PeerId,
        updates: &[MemberUpdate],
        rng: &mut R,
    ) {
        self.contact(from);
        let mut refute = false;
        for u in updates {
            if u.id == self.local {
                if matches!(u.state, MemberState::Suspect | MemberState::Dead) {
                    if u.incarnation >= self.incarnation {
                        self.health_worse();
                        self.incarnation = u.incarnation + 1;
                        self.events.push_back(Event::Refuted {
                            incarnation: self.incarnation,
                        });
                        self.enqueue(self.alive_self());
                    }
                    refute = true;
                }
                continue;
            }
            let Some(m) = self.members.get_mut(&u.id) else {
                if u.state == MemberState::Dead
                    && !self.dead.contains_key(&u.id)
                    && self.dead.len() < MAX_DEAD_REMEMBERED
                {
                    self.remember_dead(now, u.id, u.incarnation);
                    self.events.push_back(Event::HeardDead { id: u.id });
                }
                continue;
            };
            let new = match u.state {
                MemberState::Alive => {
                    if u.incarnation > m.incarnation {
                        m.incarnation = u.incarnation;
                        m.revived = false;
                        if matches!(m.status, Status::Suspect { .. }) {
                            m.status = Status::Alive;
                            self.events.push_back(Event::Cleared { id: u.id });
                        }
                        true
                    } else {
                        false
                    }
                }
                MemberState::Suspect => {
                    let newer = u.incarnation > m.incarnation
                        || (u.incarnation == m.incarnation
                            && m.status == Status::Alive
                            && !m.revived);
                    if newer {
                        m.revived &= u.incarnation == m.incarnation;
                        m.incarnation = u.incarnation;
                        m.status = Status::Suspect {
                            deadline: now + self.config.suspicion_timeout,
                        };
                        self.events.push_back(Event::Suspected {
                            id: u.id,
                            incarnation: u.incarnation,
                            local: false,
                        });
                    }
                    newer
                }
                MemberState::Dead => {
                    if u.incarnation > m.incarnation
                        || (u.incarnation == m.incarnation && !m.revived)
                    {
                        self.bury(now, u.id, u.incarnation, false);
                        true
                    } else {
                        false
                    }
                }
            };
            if new {
                self.enqueue(*u);
            }
        }
        if refute {
            // Tell the one who told us straight away (even if our incarnation was already higher).
            self.commands.push_back(Command::Gossip {
                to: from,
                updates: vec![self.alive_self()],
            });
        }
        self.kick_gossip(now, rng);
    }

    /// The next message to send, if any.
    pub fn poll_command(&mut self) -> Option<Command> {
        self.commands.pop_front()
    }

    /// The next conclusion, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    fn alive_self(&self) -> MemberUpdate {
        MemberUpdate {
            id: self.local,
            incarnation: self.incarnation,
            state: MemberState::Alive,
        }
    }

    fn start_probe<R: Rng + ?Sized>(&mut self, now: Time, rng: &mut R) {
        if self.members.is_empty() {
            return;
        }
        if self.cursor >= self.order.len() {
            self.order = self.members.keys().copied().collect();
            self.order.shuffle(rng);
            self.cursor = 0;
        }
        let Some(&target) = self.order.get(self.cursor) else {
            return;
        };
        self.cursor += 1;
        let seq = self.next_seq;
        self.next_seq += 1;
        self.probe = Some(Probe {
            target,
            seq,
            sent: now,
            phase: Phase::Direct,
            deadline: now + self.scaled(self.config.probe_timeout),
        });
        self.recent.push_back((seq, target));
        if self.recent.len() > 16 {
            self.recent.pop_front();
        }
        self.commands.push_back(Command::Ping { to: target, seq });
    }

    fn go_indirect<R: Rng + ?Sized>(&mut self, now: Time, p: Probe, rng: &mut R) {
        self.events.push_back(Event::DirectFailed { id: p.target });
        let mut helpers: Vec<PeerId> = self
            .members
            .iter()
            .filter(|(id, m)| **id != p.target && m.status == Status::Alive)
            .map(|(id, _)| *id)
            .collect();
        helpers.shuffle(rng);
        helpers.truncate(self.config.indirect_probes);
        for via in helpers {
            self.commands.push_back(Command::PingReq {
                via,
                target: p.target,
                seq: p.seq,
            });
        }
        self.commands.push_back(Command::Ping {
            to: p.target,
            seq: p.seq,
        });
        self.probe = Some(Probe {
            phase: Phase::Indirect,
            deadline: now + self.scaled(self.config.indirect_timeout),
            ..p
        });
    }

    fn probe_failed<R: Rng + ?Sized>(&mut self, now: Time, target: PeerId, rng: &mut R) {
        self.health_worse();
        let Some(m) = self.members.get_mut(&target) else {
            return;
        };
        if m.status != Status::Alive {
            return; // already suspect: its timer is running
        }
        m.status = Status::Suspect {
            deadline: now + self.config.suspicion_timeout,
        };
        let update = MemberUpdate {
            id: target,
            incarnation: m.incarnation,
            state: MemberState::Suspect,
        };
        self.events.push_back(Event::Suspected {
            id: target,
            incarnation: m.incarnation,
            local: true,
        });
        // The suspect hears it first, so it can refute.
        self.commands.push_back(Command::Gossip {
            to: target,
            updates: vec![update],
        });
        self.enqueue(update);
        self.kick_gossip(now, rng);
    }

    fn expire_suspicions(&mut self, now: Time) {
        let expired: Vec<(PeerId, u64)> = self
            .members
            .iter()
            .filter_map(|(id, m)| match m.status {
                Status::Suspect { deadline } if deadline <= now => Some((*id, m.incarnation)),
                _ => None,
            })
            .collect();
        for (id, incarnation) in expired {
            self.bury(now, id, incarnation, true);
            self.enqueue(MemberUpdate {
                id,
                incarnation,
                state: MemberState::Dead,
            });
            self.next_gossip = Some(now);
        }
    }

    fn bury(&mut self, now: Time, id: PeerId, incarnation: u64, local: bool) {
        self.remove(&id);
        self.remember_dead(now, id, incarnation);
        self.events.push_back(Event::Dead { id, local });
    }

    fn remember_dead(&mut self, now: Time, id: PeerId, incarnation: u64) {
        let until = now + self.config.dead_retention;
        self.dead.insert(id, (incarnation, until));
        self.dead_expiry.push_back((until, id));
    }

    fn enqueue(&mut self, update: MemberUpdate) {
        let n = self.members.len() as f64 + 1.0;
        let remaining = self.config.retransmit_mult * (n.log10().ceil() as u32).max(1);
        // A newer claim about the same member replaces the older one.
        self.queue.retain(|q| q.update.id != update.id);
        self.queue.push(Queued { update, remaining });
    }

    /// Sends the first round right away when there is something new to spread and no round is
    /// scheduled; otherwise the news waits for the scheduled round (at most one
    /// [`Config::gossip_interval`]). Gossip rounds therefore never come faster than one per
    /// interval, however much gossip arrives: kicking a round on every received message let a burst
    /// of suspicions feed itself (each message received set off `gossip_fanout` more at once).
    fn kick_gossip<R: Rng + ?Sized>(&mut self, now: Time, rng: &mut R) {
        if !self.queue.is_empty() && self.next_gossip.is_none() {
            self.gossip_round(now, rng);
        }
    }

    fn gossip_round<R: Rng + ?Sized>(&mut self, now: Time, rng: &mut R) {
        let ids: Vec<PeerId> = self.members.keys().copied().collect();
        let targets: Vec<PeerId> = ids
            .choose_multiple(rng, self.config.gossip_fanout)
            .copied()
            .collect();
        if targets.is_empty() {
            self.queue.clear();
        }
        for to in targets {
            // Freshest first; never tell a member it is dead (it would only refute, pointlessly).
            let mut updates = Vec::new();
            for q in self.queue.iter_mut().rev() {
                if updates.len() >= self.config.max_updates_per_message {
                    break;
                }
                if q.remaining == 0 || (q.update.id == to && q.update.state == MemberState::Dead) {
                    continue;
                }
                q.remaining -= 1;
                updates.push(q.update);
            }
            if !updates.is_empty() {
                self.commands.push_back(Command::Gossip { to, updates });
            }
        }
        self.queue.retain(|q| q.remaining > 0);
        self.next_gossip = (!self.queue.is_empty()).then(|| now + self.config.gossip_interval);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::SmallRng;
    use std::collections::BTreeSet;

    fn id(n: u32) -> PeerId {
        PeerId::from_public_key(&n.to_be_bytes())
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn swim(members: u32) -> (Swim, SmallRng) {
        let mut rng = SmallRng::seed_from_u64(7);
        let mut s = Swim::new(Config::default(), id(0), Time::ZERO, &mut rng).unwrap();
        for n in 1..=members {
            s.add(id(n), &mut rng);
        }
        (s, rng)
    }

    fn drain(s: &mut Swim) -> (Vec<Command>, Vec<Event>) {
        (
            std::iter::from_fn(|| s.poll_command()).collect(),
            std::iter::from_fn(|| s.poll_event()).collect(),
        )
    }

    /// Runs to the next probe and returns its (target, seq).
    fn next_ping(s: &mut Swim, rng: &mut SmallRng) -> (PeerId, u64, Time) {
        loop {
            let t = s.poll_timeout();
            s.handle_timeout(t, rng);
            let (cmds, _) = drain(s);
            if let Some((to, seq)) = cmds.iter().find_map(|c| match c {
                Command::Ping { to, seq } => Some((*to, *seq)),
                _ => None,
            }) {
                return (to, seq, t);
            }
        }
    }

    /// A node whose answers all come back late (600 ms: longer than the 500 ms a probe may take
    /// at full health), as on a CPU-starved machine during a start-up storm, for 20 s, then fast
    /// again. Members refute every suspicion. Returns (suspicions raised by our own probes
    /// during the slow phase, local health at its end, local health at the end of the fast one).
    fn slow_then_fast(max_local_health: u32) -> (usize, u32, u32) {
        let config = Config {
            max_local_health,
            ..Config::default()
        };
        let mut rng = SmallRng::seed_from_u64(3);
        let mut s = Swim::new(config, id(0), Time::ZERO, &mut rng).unwrap();
        for n in 1..=8 {
            s.add(id(n), &mut rng);
        }
        let slow_until = Time::ZERO + Duration::from_secs(20);
        let end = Time::ZERO + Duration::from_secs(40);
        // (when, seq) acks and (when, member, refuting incarnation) in flight.
        let mut acks: Vec<(Time, u64)> = Vec::new();
        let mut refutes: Vec<(Time, PeerId, u64)> = Vec::new();
        let (mut suspicions, mut health_slow) = (0, None);
        let mut now = Time::ZERO;
        while now < end {
            let next_ack = acks.iter().map(|a| a.0).min();
            let next_refute = refutes.iter().map(|r| r.0).min();
            now = [Some(s.poll_timeout()), next_ack, next_refute]
                .into_iter()
                .flatten()
                .min()
                .unwrap();
            if now >= slow_until && health_slow.is_none() {
                health_slow = Some(s.local_health());
            }
            let delay = if now < slow_until { ms(600) } else { ms(1) };
            if let Some(i) = acks.iter().position(|a| a.0 == now) {
                let (_, seq) = acks.swap_remove(i);
                s.handle_ack(now, seq);
            } else if let Some(i) = refutes.iter().position(|r| r.0 == now) {
                let (_, from, inc) = refutes.swap_remove(i);
                let alive = MemberUpdate {
                    id: from,
                    incarnation: inc,
                    state: MemberState::Alive,
                };
                s.handle_gossip(now, from, &[alive], &mut rng);
            } else {
                s.handle_timeout(now, &mut rng);
            }
            let (cmds, events) = drain(&mut s);
            for c in cmds {
                match c {
                    Command::Ping { seq, .. } | Command::PingReq { seq, .. } => {
                        acks.push((now + delay, seq))
                    }
                    Command::Gossip { to, updates } => {
                        if let Some(u) = updates
                            .iter()
                            .find(|u| u.id == to && u.state == MemberState::Suspect)
                        {
                            refutes.push((now + delay, to, u.incarnation + 1));
                        }
                    }
                }
            }
            suspicions += events
                .iter()
                .filter(|e| matches!(e, Event::Suspected { local: true, .. }) && now < slow_until)
                .count();
        }
        (suspicions, health_slow.unwrap_or(0), s.local_health())
    }

    #[test]
    fn a_slow_node_stretches_its_own_probes_instead_of_suspecting_everyone() {
        let (suspicions, during, after) = slow_then_fast(8);
        eprintln!("slow node: {suspicions} suspicions, health {during} then {after}");
        assert!(
            suspicions <= 2,
            "{suspicions} false suspicions from a slow node"
        );
        assert!(
            during >= 1,
            "local health stayed at 0 while every answer was late"
        );
        assert_eq!(
            after, 0,
            "local health did not recover once answers were fast"
        );
        // Without it, nearly every probe of the slow phase suspects a healthy member.
        let (without, _, _) = slow_then_fast(0);
        eprintln!("without local health: {without} suspicions");
        assert!(
            without >= 20,
            "only {without} suspicions without local health"
        );
    }

    #[test]
    fn defaults_are_valid_and_fit_a_period() {
        Config::default().validate().unwrap();
        let bad = Config {
            indirect_timeout: Duration::from_secs(1),
            ..Config::default()
        };
        assert_eq!(bad.validate(), Err(ConfigError::ProbeLongerThanPeriod));
    }

    #[test]
    fn round_robin_probes_everyone_once_per_round_one_per_period() {
        let (mut s, mut rng) = swim(10);
        let mut seen = Vec::new();
        let mut times = Vec::new();
        for _ in 0..20 {
            let (to, seq, t) = next_ping(&mut s, &mut rng);
            s.handle_ack(t + ms(1), seq);
            seen.push(to);
            times.push(t);
        }
        let first: BTreeSet<PeerId> = seen[..10].iter().copied().collect();
        let second: BTreeSet<PeerId> = seen[10..].iter().copied().collect();
        assert_eq!(first.len(), 10);
        assert_eq!(second.len(), 10);
        assert!(
            times
                .windows(2)
                .all(|w| w[1] - w[0] == Config::default().period)
        );
    }

    #[test]
    fn ack_reports_rtt_and_no_suspicion() {
        let (mut s, mut rng) = swim(3);
        let (to, seq, t) = next_ping(&mut s, &mut rng);
        s.handle_ack(t + ms(3), seq);
        let (_, events) = drain(&mut s);
        assert_eq!(
            events,
            vec![Event::Acked {
                id: to,
                rtt: Some(ms(3))
            }]
        );
    }

    #[test]
    fn a_late_driver_still_suspects_a_silent_member() {
        // A real driver wakes a few milliseconds after each deadline; the indirect phase then
        // ends after the next period has begun, and must not be abandoned.
        let (mut s, mut rng) = swim(5);
        let (target, _seq, t0) = next_ping(&mut s, &mut rng);
        // The direct phase is noticed 30 ms late, later deadlines 5 ms late.
        let late = ms(5);
        let mut now = t0 + ms(230);
        s.handle_timeout(now, &mut rng);
        let mut suspected = false;
        for _ in 0..50 {
            now = s.poll_timeout().max(now) + late;
            s.handle_timeout(now, &mut rng);
            let (_, events) = drain(&mut s);
            if events
                .iter()
                .any(|e| matches!(e, Event::Suspected { id, .. } if *id == target))
            {
                suspected = true;
                break;
            }
        }
        assert!(suspected, "the silent member was never suspected");
        assert!(now - t0 < ms(1000), "suspected only after {:?}", now - t0);
    }

    #[test]
    fn silent_member_goes_indirect_then_suspect_then_dead() {
        let (mut s, mut rng) = swim(5);
        let (target, seq, t0) = next_ping(&mut s, &mut rng);
        // Direct timeout: k = 3 ping-reqs plus a second direct ping.
        s.handle_timeout(t0 + ms(200), &mut rng);
        let (cmds, events) = drain(&mut s);
        assert_eq!(events, vec![Event::DirectFailed { id: target }]);
        let reqs = cmds.iter().filter(|c| matches!(c, Command::PingReq { target: t, seq: q, .. } if *t == target && *q == seq)).count();
        assert_eq!(reqs, 3);
        assert!(cmds.contains(&Command::Ping { to: target, seq }));
        // Indirect timeout: suspect, told to the suspect itself first, then gossiped.
        s.handle_timeout(t0 + ms(500), &mut rng);
        let (cmds, events) = drain(&mut s);
        assert!(events.contains(&Event::Suspected {
            id: target,
            incarnation: 0,
            local: true
        }));
        let suspect = MemberUpdate {
            id: target,
            incarnation: 0,
            state: MemberState::Suspect,
        };
        assert!(
            matches!(&cmds[0], Command::Gossip { to, updates } if *to == target && updates == &vec![suspect])
        );
        assert!(
            cmds.iter()
                .filter(|c| matches!(c, Command::Gossip { .. }))
                .count()
                >= 3
        );
        assert!(s.is_suspect(&target));
        // Nobody refutes: dead after the suspicion timeout.
        let deadline = t0 + ms(500) + Config::default().suspicion_timeout;
        let mut events = Vec::new();
        while s.poll_timeout() <= deadline {
            let t = s.poll_timeout();
            s.handle_timeout(t, &mut rng);
            // Other probes are answered.
            let (cmds, evs) = drain(&mut s);
            events.extend(evs);
            for c in cmds {
                if let Command::Ping { to, seq } = c
                    && to != target
                {
                    s.handle_ack(t, seq);
                }
            }
        }
        assert!(
            events.contains(&Event::Dead {
                id: target,
                local: true
            }),
            "{events:?}"
        );
        assert!(!s.contains(&target) && s.is_recently_dead(&target));
    }

    #[test]
    fn an_indirect_ack_or_contact_prevents_or_clears_suspicion() {
        let (mut s, mut rng) = swim(5);
        let (target, seq, t0) = next_ping(&mut s, &mut rng);
        s.handle_timeout(t0 + ms(200), &mut rng);
        s.handle_ack(t0 + ms(250), seq);
        let (_, events) = drain(&mut s);
        assert!(events.contains(&Event::Acked {
            id: target,
            rtt: None
        }));
        // Gossip says another member is suspect; its own message clears it locally.
        let other = id(if target == id(1) { 2 } else { 1 });
        let u = MemberUpdate {
            id: other,
            incarnation: 0,
            state: MemberState::Suspect,
        };
        s.handle_gossip(t0 + ms(300), target, &[u], &mut rng);
        assert!(s.is_suspect(&other));
        s.contact(other);
        assert!(!s.is_suspect(&other));
    }

    #[test]
    fn a_suspicion_about_us_is_refuted_with_a_higher_incarnation() {
        let (mut s, mut rng) = swim(3);
        let accuser = id(1);
        let u = MemberUpdate {
            id: id(0),
            incarnation: 0,
            state: MemberState::Suspect,
        };
        s.handle_gossip(Time(1), accuser, &[u], &mut rng);
        assert_eq!(s.incarnation(), 1);
        let (cmds, events) = drain(&mut s);
        assert!(events.contains(&Event::Refuted { incarnation: 1 }));
        let alive = MemberUpdate {
            id: id(0),
            incarnation: 1,
            state: MemberState::Alive,
        };
        assert!(cmds.contains(&Command::Gossip {
            to: accuser,
            updates: vec![alive]
        }));
        // An older suspicion does not raise it again, but is still answered.
        s.handle_gossip(Time(2), accuser, &[u], &mut rng);
        assert_eq!(s.incarnation(), 1);
        let (cmds, _) = drain(&mut s);
        assert!(cmds.contains(&Command::Gossip {
            to: accuser,
            updates: vec![alive]
        }));
    }

    #[test]
    fn incarnation_rules() {
        let (mut s, mut rng) = swim(3);
        let x = id(2);
        let upd = |inc, state| MemberUpdate {
            id: x,
            incarnation: inc,
            state,
        };
        s.handle_gossip(Time(1), id(1), &[upd(0, MemberState::Suspect)], &mut rng);
        assert!(s.is_suspect(&x));
        // Alive at the same incarnation does not clear a suspicion; a higher one does.
        s.handle_gossip(Time(2), id(1), &[upd(0, MemberState::Alive)], &mut rng);
        assert!(s.is_suspect(&x));
        s.handle_gossip(Time(3), id(1), &[upd(1, MemberState::Alive)], &mut rng);
        assert!(!s.is_suspect(&x));
        // A dead claim about an older incarnation is ignored; a current one removes.
        s.handle_gossip(Time(4), id(1), &[upd(0, MemberState::Dead)], &mut rng);
        assert!(s.contains(&x));
        s.handle_gossip(Time(5), id(1), &[upd(1, MemberState::Dead)], &mut rng);
        assert!(!s.contains(&x));
        let (_, events) = drain(&mut s);
        assert!(events.contains(&Event::Dead {
            id: x,
            local: false
        }));
    }

    /// A host we had dead and then reached again (a completed Hello: `add`) is not killed again
    /// by the same death rumour still going round, nor suspected at that incarnation; a newer
    /// rumour still counts, and its own refutation makes it an ordinary member again.
    #[test]
    fn a_host_proven_alive_after_its_death_ignores_the_stale_rumour() {
        let (mut s, mut rng) = swim(3);
        let x = id(2);
        let upd = |inc, state| MemberUpdate {
            id: x,
            incarnation: inc,
            state,
        };
        s.handle_gossip(Time(1), id(1), &[upd(0, MemberState::Dead)], &mut rng);
        assert!(!s.contains(&x) && s.is_recently_dead(&x));
        // Direct proof of life.
        s.add(x, &mut rng);
        drain(&mut s);
        for t in 2..6 {
            s.handle_gossip(Time(t), id(1), &[upd(0, MemberState::Dead)], &mut rng);
            s.handle_gossip(Time(t), id(3), &[upd(0, MemberState::Suspect)], &mut rng);
        }
        assert!(s.contains(&x) && !s.is_suspect(&x));
        let (_, events) = drain(&mut s);
        assert!(
            !events.iter().any(
                |e| matches!(e, Event::Dead { id, .. } | Event::Suspected { id, .. } if *id == x)
            ),
            "{events:?}"
        );
        // A newer suspicion counts; so does a newer death.
        s.handle_gossip(Time(7), id(1), &[upd(1, MemberState::Suspect)], &mut rng);
        assert!(s.is_suspect(&x));
        s.handle_gossip(Time(8), id(1), &[upd(1, MemberState::Dead)], &mut rng);
        assert!(!s.contains(&x));
        // Re-added, then its own refutation: an ordinary member, whom a rumour at the refuted
        // incarnation kills as before.
        s.add(x, &mut rng);
        s.handle_gossip(Time(9), x, &[upd(2, MemberState::Alive)], &mut rng);
        s.handle_gossip(Time(10), id(1), &[upd(2, MemberState::Dead)], &mut rng);
        assert!(!s.contains(&x));
    }

    #[test]
    fn gossip_stops_when_retransmissions_are_spent() {
        let (mut s, mut rng) = swim(30);
        let u = MemberUpdate {
            id: id(5),
            incarnation: 0,
            state: MemberState::Suspect,
        };
        s.handle_gossip(Time(1), id(1), &[u], &mut rng);
        let mut sent = 0;
        let end = Time::from_duration(Duration::from_secs(2));
        let mut t = Time(1);
        while t < end {
            let (cmds, _) = drain(&mut s);
            sent += cmds
                .iter()
                .filter(|c| matches!(c, Command::Gossip { updates, .. } if updates.contains(&u)))
                .count();
            t = s.poll_timeout().max(t);
            s.handle_timeout(t, &mut rng);
            for c in std::iter::from_fn(|| s.poll_command()).collect::<Vec<_>>() {
                if let Command::Ping { seq, .. } = c {
                    s.handle_ack(t, seq);
                }
                if let Command::Gossip { updates, .. } = c {
                    sent += usize::from(updates.contains(&u));
                }
            }
        }
        // 4 · ⌈log10(31)⌉ = 8 transmissions.
        assert_eq!(sent, 8);
    }

    /// 100 suspicions arriving from 100 members within one gossip interval: the node sends its
    /// first round at once and then no more than one round (`gossip_fanout` messages) per
    /// interval. Before, every received message set off a round of its own (300 messages here).
    #[test]
    fn a_burst_of_gossip_sends_at_most_one_round_per_interval() {
        let (mut s, mut rng) = swim(100);
        let interval = Config::default().gossip_interval;
        let fanout = Config::default().gossip_fanout;
        let start = Time::from_duration(Duration::from_secs(1));
        let mut sent = 0;
        for n in 1..=100u32 {
            let u = MemberUpdate {
                id: id(1 + (n % 100)),
                incarnation: u64::from(n),
                state: MemberState::Suspect,
            };
            // All within the first interval, none past it.
            let at = start + interval * (n - 1) / 101;
            s.handle_gossip(at, id(n), &[u], &mut rng);
            sent += drain(&mut s)
                .0
                .iter()
                .filter(|c| matches!(c, Command::Gossip { .. }))
                .count();
        }
        assert!(
            sent <= fanout,
            "{sent} gossip messages within one interval (at most {fanout})"
        );
        assert!(sent > 0, "the first news goes out at once");
        // The rest goes with the scheduled round.
        assert!(s.poll_timeout() <= start + interval);
    }

    #[test]
    fn a_death_heard_of_a_stranger_is_remembered_not_spread_and_bounded() {
        let (mut s, mut rng) = swim(3);
        let _ = drain(&mut s);
        let stranger = id(100);
        let dead = |id| MemberUpdate {
            id,
            incarnation: 2,
            state: MemberState::Dead,
        };
        s.handle_gossip(Time::ZERO, id(1), &[dead(stranger)], &mut rng);
        let (cmds, events) = drain(&mut s);
        assert_eq!(events, vec![Event::HeardDead { id: stranger }]);
        assert!(s.is_recently_dead(&stranger) && !s.contains(&stranger));
        assert!(
            !cmds
                .iter()
                .any(|c| matches!(c, Command::Gossip { updates, .. }
                if updates.iter().any(|u| u.id == stranger))),
            "not our news to spread: {cmds:?}"
        );
        // Told again: nothing new.
        s.handle_gossip(Time::ZERO, id(2), &[dead(stranger)], &mut rng);
        assert!(drain(&mut s).1.is_empty());
        // Forgotten after the retention; a flood of forged claims stops at the bound.
        let later = Time::ZERO + Config::default().dead_retention + ms(1);
        s.handle_timeout(later, &mut rng);
        assert!(!s.is_recently_dead(&stranger));
        let flood: Vec<MemberUpdate> = (1000..1000 + MAX_DEAD_REMEMBERED as u32 + 50)
            .map(|n| dead(id(n)))
            .collect();
        for chunk in flood.chunks(32) {
            s.handle_gossip(later, id(1), chunk, &mut rng);
        }
        assert_eq!(s.recently_dead().count(), MAX_DEAD_REMEMBERED);
        // A member declared dead is still buried past the bound (members are bounded by the table).
        s.handle_gossip(later, id(1), &[dead(id(3))], &mut rng);
        assert!(s.is_recently_dead(&id(3)) && !s.contains(&id(3)));
    }

    #[test]
    fn removed_members_are_not_probed() {
        let (mut s, mut rng) = swim(4);
        s.remove(&id(2));
        for _ in 0..12 {
            let (to, seq, t) = next_ping(&mut s, &mut rng);
            assert_ne!(to, id(2));
            s.handle_ack(t, seq);
        }
    }
}
