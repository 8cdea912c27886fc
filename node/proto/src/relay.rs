//! Relaying: how a node that cannot be dialled (behind a NAT, or on a LAN with no route out) is
//! reached through a node that can, and how two such nodes meet for a hole punch.
//!
//! A **link** is one long-lived bidirectional stream between two peers, opened with
//! [`Request::Relay`](crate::wire::Request::Relay) on their ordinary (authenticated) connection.
//! Over a link flow [`Frame`]s. A frame carries a source route: `to` lists the hops still ahead
//! (the last is the destination), `from` the hops back to the origin (nearest first). Every node
//! that forwards a frame pops the next hop off `to` and pushes the link it came from onto `from`,
//! so the destination learns the full route back without any relay keeping per-packet state.
//!
//! What a frame carries between the two end points ([`Body::Packet`]) is an opaque datagram of the
//! end points' own QUIC connection: mutual TLS runs end to end, so a relay only ever sees
//! ciphertext and cannot impersonate either side; a packet it alters fails authentication and is
//! dropped by the receiver, a packet it replays is discarded as a duplicate.
//!
//! [`Relay`] is the relay's bookkeeping: which peers are attached, which relayed *sessions* (pairs
//! of end points) exist, and the limits that stop a public node from becoming a free tunnel:
//! links, sessions, bytes and lifetime per session. It is sans-IO: the driver feeds it frames and
//! time and writes what it returns.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::id::PeerId;
use crate::time::Time;
use crate::wire::Message;

/// Longest source route a frame may carry (`to` plus `from`): origin relay, far relay, target.
pub const MAX_ROUTE: usize = 3;
/// Largest datagram a [`Body::Packet`] may carry (QUIC packets are at most ~1.5 KiB here).
pub const MAX_PACKET: usize = 2048;
/// Largest encoded link frame.
pub const MAX_FRAME: usize = MAX_PACKET + 512;

/// A relayed peer as a node's record announces it: reach me through `id` at `addrs`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayHint {
    /// The relay's peer id.
    pub id: PeerId,
    /// Where the relay listens.
    pub addrs: Vec<SocketAddr>,
}

/// One message on a link.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Frame {
    /// Hops still ahead; empty means "for the node at the end of this link".
    pub to: Vec<PeerId>,
    /// Hops back to the origin, nearest first (empty when the origin is the link's other end).
    pub from: Vec<PeerId>,
    /// What is carried.
    pub body: Body,
}

/// What a [`Frame`] carries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Body {
    /// The answer to a link being opened: accepted, and the address the relay sees the opener at.
    Accepted {
        /// The opener's address as the relay sees it (its NAT mapping, if any).
        observed: SocketAddr,
    },
    /// A datagram of the end points' QUIC connection: opaque to relays.
    Packet(#[serde(with = "serde_bytes_vec")] Vec<u8>),
    /// A relay refused to carry traffic for `target`; travels back to the origin.
    Refused {
        /// The destination the refused frame was for.
        target: PeerId,
        /// Why.
        reason: Refusal,
    },
    /// "Let us punch a hole": sent by the origin towards the target. The relay next to the
    /// origin fills in `observed` (the origin's address as that relay sees it).
    Punch {
        /// The origin's public address, filled in by its relay.
        observed: Option<SocketAddr>,
    },
    /// The relay's answer to a [`Body::Punch`]: where it sees the target.
    PunchReply {
        /// The target the punch was for.
        target: PeerId,
        /// The target's address as the relay sees it.
        observed: SocketAddr,
    },
    /// Keeps the link and the NAT mapping under it alive; nothing else.
    Keepalive,
}

mod serde_bytes_vec {
    //! Bytes as a postcard byte string rather than a sequence of u8 (same wire size, faster).
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
                Ok(v.to_vec())
            }
            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
                Ok(v)
            }
        }
        d.deserialize_bytes(V)
    }
}

impl Message for Frame {
    // A frame is a struct, not an enum: its first byte is the length of `to`, at most MAX_ROUTE.
    const VARIANTS: u32 = MAX_ROUTE as u32 + 1;
}

/// Why a relay refused to carry traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Refusal {
    /// The relay carries as many links as it allows.
    TooManyLinks {
        /// Its limit.
        max: u32,
    },
    /// The relay carries as many relayed sessions as it allows.
    TooManySessions {
        /// Its limit.
        max: u32,
    },
    /// This session has used its byte budget.
    SessionBytes {
        /// The budget.
        max: u64,
    },
    /// This session has lived as long as the relay allows.
    SessionExpired {
        /// The lifetime, seconds.
        max_secs: u64,
    },
    /// The destination is not attached to this relay.
    NotAttached,
    /// The route is longer than [`MAX_ROUTE`] or names this relay twice.
    BadRoute,
    /// The relay does not relay (disabled by configuration).
    Disabled,
}

impl Refusal {
    /// A stable label for metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::TooManyLinks { .. } => "too_many_links",
            Refusal::TooManySessions { .. } => "too_many_sessions",
            Refusal::SessionBytes { .. } => "session_bytes",
            Refusal::SessionExpired { .. } => "session_expired",
            Refusal::NotAttached => "not_attached",
            Refusal::BadRoute => "bad_route",
            Refusal::Disabled => "disabled",
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::TooManyLinks { max } => {
                write!(f, "relay is at its limit of {max} links; try another relay")
            }
            Refusal::TooManySessions { max } => write!(
                f,
                "relay is at its limit of {max} relayed sessions; try another relay or later"
            ),
            Refusal::SessionBytes { max } => {
                write!(f, "relayed session used its budget of {max} bytes")
            }
            Refusal::SessionExpired { max_secs } => {
                write!(f, "relayed session reached its lifetime of {max_secs} s")
            }
            Refusal::NotAttached => f.write_str("destination is not attached to this relay"),
            Refusal::BadRoute => f.write_str("malformed relay route"),
            Refusal::Disabled => f.write_str("this node does not relay"),
        }
    }
}

/// The limits a relay enforces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Whether this node relays for others at all.
    pub enabled: bool,
    /// Links (attached peers) at once.
    pub max_links: usize,
    /// Relayed sessions (end-point pairs) at once.
    pub max_sessions: usize,
    /// Bytes one session may carry.
    pub session_bytes: u64,
    /// How long one session may live.
    pub session_lifetime: Duration,
    /// A session with no traffic for this long is forgotten.
    pub session_idle: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            enabled: true,
            max_links: 256,
            max_sessions: 512,
            session_bytes: 256 << 20,
            session_lifetime: Duration::from_secs(3600),
            session_idle: Duration::from_secs(120),
        }
    }
}

/// A peer attached to this relay by a link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Link {
    /// Where the relay sees it.
    pub observed: SocketAddr,
    /// Whether it asked to be reachable through this relay.
    pub registered: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Session {
    started: Time,
    last: Time,
    bytes: u64,
}

/// What to do with a frame that arrived on a link.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Routed {
    /// It is for this node.
    Local(Frame),
    /// Send these frames on the links to these peers (the next hop; possibly a refusal going back).
    Send(Vec<(PeerId, Frame)>),
    /// Drop it (a refusal cannot itself be refused; a keepalive needs nothing).
    Drop,
}

/// Counters the driver turns into metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Packets relayed for others.
    pub packets: u64,
    /// Packet bytes relayed for others.
    pub bytes: u64,
}

/// A relay's state: attached peers, sessions, limits.
#[derive(Debug)]
pub struct Relay {
    local: PeerId,
    limits: Limits,
    links: BTreeMap<PeerId, Link>,
    sessions: BTreeMap<(PeerId, PeerId), Session>,
    stats: Stats,
}

impl Relay {
    /// A relay for node `local` with these limits.
    pub fn new(local: PeerId, limits: Limits) -> Self {
        Relay {
            local,
            limits,
            links: BTreeMap::new(),
            sessions: BTreeMap::new(),
            stats: Stats::default(),
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// A link with `peer` opened (by either side). Refused when at the link limit; links this node
    /// opened itself (`outbound`) are always allowed, they are bounded by the connection cap.
    pub fn attach(
        &mut self,
        peer: PeerId,
        observed: SocketAddr,
        registered: bool,
        outbound: bool,
    ) -> Result<(), Refusal> {
        if peer == self.local {
            return Err(Refusal::BadRoute);
        }
        if !self.links.contains_key(&peer) && !outbound {
            let inbound = self.links.values().filter(|l| l.registered).count();
            if registered && !self.limits.enabled {
                return Err(Refusal::Disabled);
            }
            if inbound >= self.limits.max_links {
                return Err(Refusal::TooManyLinks {
                    max: u32::try_from(self.limits.max_links).unwrap_or(u32::MAX),
                });
            }
        }
        let entry = self.links.entry(peer).or_insert(Link {
            observed,
            registered,
        });
        entry.observed = observed;
        entry.registered |= registered;
        Ok(())
    }

    /// The link with `peer` closed.
    pub fn detach(&mut self, peer: &PeerId) {
        self.links.remove(peer);
    }

    /// The attached peers.
    pub fn links(&self) -> &BTreeMap<PeerId, Link> {
        &self.links
    }

    /// Relayed sessions currently open.
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// What this relay has carried for others.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Routes a frame that arrived on the link with `link`.
    pub fn route(&mut self, now: Time, link: PeerId, mut frame: Frame) -> Routed {
        if link == self.local {
            // No link leads to ourselves; a driver bug, not something to answer.
            return Routed::Drop;
        }
        if frame.to.is_empty() {
            return match frame.body {
                Body::Keepalive => Routed::Drop,
                _ => Routed::Local(frame),
            };
        }
        let refuse = |frame: &Frame, reason: Refusal| {
            if matches!(frame.body, Body::Refused { .. }) {
                return Routed::Drop;
            }
            let target = *frame.to.last().unwrap_or(&link);
            // The way back is the sender's claim: a bad one is answered to the link alone.
            let to = if reason == Refusal::BadRoute || frame.from.len() > MAX_ROUTE {
                Vec::new()
            } else {
                frame.from.clone()
            };
            Routed::Send(vec![(
                link,
                Frame {
                    to,
                    from: Vec::new(),
                    body: Body::Refused { target, reason },
                },
            )])
        };
        if frame.to.len() + frame.from.len() > MAX_ROUTE
            || frame.to.contains(&self.local)
            || frame.from.contains(&self.local)
        {
            return refuse(&frame, Refusal::BadRoute);
        }
        if !self.limits.enabled && !matches!(frame.body, Body::Refused { .. }) {
            return refuse(&frame, Refusal::Disabled);
        }
        let next = frame.to.remove(0);
        let target = *frame.to.last().unwrap_or(&next);
        let origin = *frame.from.last().unwrap_or(&link);
        frame.from.insert(0, link);
        if frame.to.is_empty() && !self.links.contains_key(&next) {
            frame.to.insert(0, next);
            frame.from.remove(0);
            return refuse(&frame, Refusal::NotAttached);
        }
        let key = if origin < target {
            (origin, target)
        } else {
            (target, origin)
        };
        let size = match &frame.body {
            Body::Packet(p) => p.len() as u64,
            _ => 0,
        };
        let sessions = self.sessions.len();
        let limits = &self.limits;
        let verdict = match self.sessions.get_mut(&key) {
            Some(s) if now.saturating_since(s.started) > limits.session_lifetime => {
                Err(Refusal::SessionExpired {
                    max_secs: limits.session_lifetime.as_secs(),
                })
            }
            Some(s) if s.bytes.saturating_add(size) > limits.session_bytes => {
                Err(Refusal::SessionBytes {
                    max: limits.session_bytes,
                })
            }
            Some(s) => {
                s.bytes += size;
                s.last = now;
                Ok(())
            }
            None if sessions >= limits.max_sessions => Err(Refusal::TooManySessions {
                max: u32::try_from(limits.max_sessions).unwrap_or(u32::MAX),
            }),
            None => {
                self.sessions.insert(
                    key,
                    Session {
                        started: now,
                        last: now,
                        bytes: size,
                    },
                );
                Ok(())
            }
        };
        if let Err(reason) = verdict {
            frame.from.remove(0);
            frame.to.insert(0, next);
            return refuse(&frame, reason);
        }
        if size > 0 {
            self.stats.packets += 1;
            self.stats.bytes += size;
        }
        let mut out = Vec::with_capacity(2);
        if let Body::Punch { observed } = &mut frame.body {
            // Only the relay next to the origin knows the origin's public address.
            if frame.from.len() == 1 {
                *observed = self.links.get(&link).map(|l| l.observed);
            }
            if frame.to.is_empty() {
                if let Some(t) = self.links.get(&next) {
                    out.push((
                        link,
                        Frame {
                            to: frame.from[1..].to_vec(),
                            from: vec![next],
                            body: Body::PunchReply {
                                target: next,
                                observed: t.observed,
                            },
                        },
                    ));
                }
            }
        }
        out.insert(0, (next, frame));
        Routed::Send(out)
    }

    /// When [`Relay::handle_timeout`] has work next.
    pub fn poll_timeout(&self) -> Option<Time> {
        self.sessions
            .values()
            .map(|s| s.last + self.limits.session_idle)
            .min()
    }

    /// Forgets idle sessions.
    pub fn handle_timeout(&mut self, now: Time) {
        let idle = self.limits.session_idle;
        self.sessions
            .retain(|_, s| now.saturating_since(s.last) < idle);
    }
}

impl Frame {
    /// The refusal reason, when this frame is a refusal.
    pub fn body_reason(&self) -> Option<Refusal> {
        match self.body {
            Body::Refused { reason, .. } => Some(reason),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{decode_frame, encode_frame};

    fn id(n: u8) -> PeerId {
        PeerId([n; 32])
    }

    fn addr(n: u8) -> SocketAddr {
        SocketAddr::from(([203, 0, 113, n], 4000 + u16::from(n)))
    }

    fn packet(to: Vec<PeerId>, len: usize) -> Frame {
        Frame {
            to,
            from: vec![],
            body: Body::Packet(vec![7; len]),
        }
    }

    fn relay(limits: Limits) -> Relay {
        let mut r = Relay::new(id(100), limits);
        for n in 1..=4 {
            r.attach(id(n), addr(n), true, false).unwrap();
        }
        r
    }

    #[test]
    fn forwards_to_an_attached_destination_and_records_the_way_back() {
        let mut r = relay(Limits::default());
        let Routed::Send(out) = r.route(Time::ZERO, id(1), packet(vec![id(2)], 100)) else {
            panic!("not forwarded");
        };
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].0, id(2));
        assert_eq!(out[0].1.to, Vec::<PeerId>::new());
        assert_eq!(out[0].1.from, vec![id(1)]);
        assert_eq!(r.session_count(), 1);
        // The answer travels the recorded route back and joins the same session.
        let Routed::Send(back) = r.route(Time::ZERO, id(2), packet(vec![id(1)], 50)) else {
            panic!("answer not forwarded");
        };
        assert_eq!(back[0].0, id(1));
        assert_eq!(r.session_count(), 1);
        assert_eq!(r.stats().bytes, 150);
    }

    #[test]
    fn chains_through_a_second_relay_with_the_full_route_back() {
        // Node 1 reaches 9 through this relay (100) and relay 50.
        let mut r = relay(Limits::default());
        let Routed::Send(out) = r.route(Time::ZERO, id(1), packet(vec![id(50), id(9)], 10)) else {
            panic!("not forwarded");
        };
        assert_eq!(out[0].0, id(50));
        assert_eq!(out[0].1.to, vec![id(9)]);
        assert_eq!(out[0].1.from, vec![id(1)]);
        // At relay 50, node 9 is attached: it is delivered with the whole way back.
        let mut far = Relay::new(id(50), Limits::default());
        far.attach(id(9), addr(9), true, false).unwrap();
        far.attach(id(100), addr(100), false, false).unwrap();
        let Routed::Send(out) = far.route(Time::ZERO, id(100), out[0].1.clone()) else {
            panic!("not delivered");
        };
        assert_eq!(out[0].0, id(9));
        assert_eq!(out[0].1.from, vec![id(100), id(1)]);
        assert!(out[0].1.to.is_empty());
    }

    #[test]
    fn refuses_new_sessions_at_the_limit_but_keeps_serving_existing_ones() {
        let mut r = relay(Limits {
            max_sessions: 1,
            ..Limits::default()
        });
        assert!(matches!(
            r.route(Time::ZERO, id(1), packet(vec![id(2)], 10)),
            Routed::Send(ref v) if v[0].0 == id(2)
        ));
        let refused = r.route(Time::ZERO, id(3), packet(vec![id(4)], 10));
        let Routed::Send(out) = refused else {
            panic!("no refusal sent");
        };
        assert_eq!(out[0].0, id(3));
        assert_eq!(
            out[0].1.body,
            Body::Refused {
                target: id(4),
                reason: Refusal::TooManySessions { max: 1 }
            }
        );
        assert!(
            out[0]
                .1
                .body_reason()
                .unwrap()
                .to_string()
                .contains("limit of 1"),
            "the reason is readable"
        );
        // The existing session still flows.
        assert!(matches!(
            r.route(Time::ZERO, id(2), packet(vec![id(1)], 10)),
            Routed::Send(ref v) if v[0].0 == id(1)
        ));
    }

    #[test]
    fn enforces_session_bytes_lifetime_and_forgets_idle_sessions() {
        let mut r = relay(Limits {
            session_bytes: 100,
            session_lifetime: Duration::from_secs(10),
            session_idle: Duration::from_secs(5),
            ..Limits::default()
        });
        assert!(matches!(
            r.route(Time::ZERO, id(1), packet(vec![id(2)], 80)),
            Routed::Send(ref v) if v[0].0 == id(2)
        ));
        let Routed::Send(out) = r.route(Time::ZERO, id(1), packet(vec![id(2)], 30)) else {
            panic!()
        };
        assert!(matches!(
            out[0].1.body,
            Body::Refused {
                reason: Refusal::SessionBytes { max: 100 },
                ..
            }
        ));
        let later = Time::from_duration(Duration::from_secs(11));
        let Routed::Send(out) = r.route(later, id(2), packet(vec![id(1)], 1)) else {
            panic!()
        };
        assert!(matches!(
            out[0].1.body,
            Body::Refused {
                reason: Refusal::SessionExpired { max_secs: 10 },
                ..
            }
        ));
        r.handle_timeout(later);
        assert_eq!(r.session_count(), 0);
    }

    #[test]
    fn refuses_unattached_destinations_bad_routes_and_never_refuses_a_refusal() {
        let mut r = relay(Limits::default());
        let Routed::Send(out) = r.route(Time::ZERO, id(1), packet(vec![id(77)], 1)) else {
            panic!()
        };
        assert!(matches!(
            out[0].1.body,
            Body::Refused {
                reason: Refusal::NotAttached,
                target
            } if target == id(77)
        ));
        let long = packet(vec![id(2), id(3), id(4), id(5)], 1);
        let Routed::Send(out) = r.route(Time::ZERO, id(1), long) else {
            panic!()
        };
        assert!(matches!(
            out[0].1.body,
            Body::Refused {
                reason: Refusal::BadRoute,
                ..
            }
        ));
        // A forged, overlong way back is not echoed: the refusal goes to the link alone.
        let forged = Frame {
            to: vec![id(2)],
            from: vec![id(9); 40],
            body: Body::Packet(vec![1]),
        };
        let Routed::Send(out) = r.route(Time::ZERO, id(1), forged) else {
            panic!()
        };
        assert_eq!(out[0].0, id(1));
        assert!(out[0].1.to.is_empty());
        let loop_ = packet(vec![id(100), id(2)], 1);
        assert!(matches!(
            r.route(Time::ZERO, id(1), loop_),
            Routed::Send(ref v) if matches!(v[0].1.body, Body::Refused { reason: Refusal::BadRoute, .. })
        ));
        let refusal = Frame {
            to: vec![id(77)],
            from: vec![],
            body: Body::Refused {
                target: id(1),
                reason: Refusal::NotAttached,
            },
        };
        assert_eq!(r.route(Time::ZERO, id(1), refusal), Routed::Drop);
    }

    #[test]
    fn link_limit_applies_to_inbound_registrations_only() {
        let mut r = Relay::new(
            id(100),
            Limits {
                max_links: 1,
                ..Limits::default()
            },
        );
        r.attach(id(1), addr(1), true, false).unwrap();
        assert_eq!(
            r.attach(id(2), addr(2), true, false),
            Err(Refusal::TooManyLinks { max: 1 })
        );
        r.attach(id(3), addr(3), false, true).unwrap();
        assert_eq!(
            r.attach(id(100), addr(100), false, true),
            Err(Refusal::BadRoute),
            "never a link to itself"
        );
        assert_eq!(
            r.route(Time::ZERO, id(100), packet(vec![id(3)], 1)),
            Routed::Drop
        );
        r.detach(&id(1));
        r.attach(id(2), addr(2), true, false).unwrap();
    }

    #[test]
    fn a_punch_gets_both_observed_addresses() {
        let mut r = relay(Limits::default());
        let punch = Frame {
            to: vec![id(2)],
            from: vec![],
            body: Body::Punch { observed: None },
        };
        let Routed::Send(out) = r.route(Time::ZERO, id(1), punch) else {
            panic!()
        };
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].0, id(2));
        assert_eq!(
            out[0].1.body,
            Body::Punch {
                observed: Some(addr(1))
            }
        );
        assert_eq!(out[1].0, id(1));
        assert_eq!(
            out[1].1.body,
            Body::PunchReply {
                target: id(2),
                observed: addr(2)
            }
        );
    }

    #[test]
    fn frames_round_trip_and_garbage_is_an_error() {
        let f = Frame {
            to: vec![id(1), id(2)],
            from: vec![id(3)],
            body: Body::Packet(vec![1, 2, 3]),
        };
        let enc = encode_frame(&f, MAX_FRAME).unwrap();
        assert_eq!(decode_frame::<Frame>(&enc, MAX_FRAME).unwrap(), f);
        let mut bad = enc.clone();
        bad[5] = 200;
        assert!(decode_frame::<Frame>(&bad, MAX_FRAME).is_err());
        assert!(decode_frame::<Frame>(&enc[..enc.len() - 1], MAX_FRAME).is_err());
    }
}
