//! Membership on a real node: what the driver ([`crate::driver`]) does for the membership half of
//! the node core. Actions that need the network (dials, probes, gossip) run as short tracked
//! tasks that report their outcome back into the core; inbound membership requests are answered
//! synchronously from the core under its lock; core events become metrics and logs.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use butter_proto::PeerId;
use butter_proto::membership::{Action, Config as CoreConfig, Event, HelloRefused, ProbeOutcome};
use butter_proto::peers::Source;
use butter_proto::wire::{ErrorCode, Request, Response};
use bytes::Bytes;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::discovery::Multicast;
use crate::metrics::Event as MetricEvent;
use crate::node::{Node, PeerSnapshot};
use crate::transport::{Remote, RequestError};

/// The membership settings of a node's core.
pub(crate) fn core_config(config: &crate::Config) -> CoreConfig {
    CoreConfig {
        network: config.network.clone(),
        multicast: config.multicast.enabled,
        ..CoreConfig::default()
    }
}

/// The site label of an address when none is configured: its /24 (IPv4) or /48 (IPv6).
pub fn site_of(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) if !v4.is_unspecified() => {
            let o = v4.octets();
            format!("{}.{}.{}.0/24", o[0], o[1], o[2])
        }
        IpAddr::V6(v6) if !v6.is_unspecified() => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}::/48", s[0], s[1], s[2])
        }
        _ => "local".to_string(),
    }
}

/// The known hosts as the API shows them, most recently seen first.
pub(crate) fn snapshot(shared: &crate::driver::Shared) -> Vec<PeerSnapshot> {
    shared.read(|core, now| {
        let mut v: Vec<PeerSnapshot> = core
            .table()
            .iter()
            .map(|h| PeerSnapshot {
                id: h.record.id.to_string(),
                short: h.record.id.short(),
                addrs: h.record.addrs.clone(),
                site: h.record.site.clone(),
                public: h.record.public,
                source: h.source.as_str(),
                state: liveness_label(h.liveness),
                last_seen_ms: u64::try_from(now.saturating_since(h.last_seen).as_millis())
                    .unwrap_or(u64::MAX),
                rtt_ms: h.rtt.map(|d| d.as_secs_f64() * 1000.0),
                relays: h.record.relays.iter().map(|r| r.id.short()).collect(),
                path: "none",
            })
            .collect();
        v.sort_by_key(|p| p.last_seen_ms);
        v
    })
}

/// Dials `addr`, runs a Hello and feeds the answer to the core. Returns the peer's id.
pub(crate) async fn introduce(
    node: &Node,
    addr: SocketAddr,
    expected: Option<PeerId>,
    source: Source,
) -> Result<PeerId, RequestError> {
    // A private peer elsewhere is dialled through its relay, not at its unreachable addresses.
    if let Some(exp) = expected {
        if let Some(r) = node
            .record_of(&exp)
            .filter(|r| crate::relay::needs_relay(node, r))
        {
            crate::relay::connect_relayed(node, &r).await?;
            return hello(node, exp, UNSPECIFIED, source).await;
        }
    }
    let (id, conn) = node.inner.transport.connect(addr, expected).await?;
    if id == node.id() {
        conn.close(0u32.into(), b"self");
        return Err(RequestError::Unexpected("dialled ourselves".into()));
    }
    hello(node, id, addr, source).await
}

/// What the core is told a relayed peer's address is: nothing worth announcing.
const UNSPECIFIED: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 0);

/// Sends our record to a connected (or reachable) peer and feeds its answer to the core.
async fn hello(
    node: &Node,
    id: PeerId,
    addr: SocketAddr,
    source: Source,
) -> Result<PeerId, RequestError> {
    let shared = &node.inner.core;
    let (record, sample_size) =
        shared.read(|c, now| (c.local_record(now), c.membership().config().sample_size));
    let req = Request::Hello {
        record,
        network: node.config().network.clone(),
        sample: sample_size,
    };
    let (resp, _) = node.send(id, &req, Bytes::new(), "hello").await?;
    let Response::Hello {
        record,
        sample,
        observed,
    } = resp
    else {
        return Err(RequestError::Unexpected(
            "hello answered with another message".into(),
        ));
    };
    if record.id != id {
        node.metrics().record(&MetricEvent::Rejected {
            reason: "identity_mismatch",
        });
        return Err(RequestError::Unexpected(
            "hello record does not match the peer's key".into(),
        ));
    }
    node.inner.relay.remember(sample.iter().cloned());
    // A peer elsewhere saw us at an address that is not ours: we are behind a NAT, and an
    // inbound connection no longer proves we can be dialled (it may be a punched hole).
    if record.site != node.site() && !crate::relay::is_virtual(&addr) && observed.port() != 0 {
        let ours = shared.read(|c, now| c.local_record(now).addrs);
        let natted = !ours.iter().any(|a| a.ip() == observed.ip());
        if natted && node.inner.relay.set_behind_nat() {
            info!(%observed, "behind a NAT: reachable through a relay unless configured public");
            if node.config().relay.reachability == crate::config::Reachability::Auto {
                shared.with(|c, _| c.membership_mut().set_public(false));
            }
        }
    }
    let addr = if crate::relay::is_virtual(&addr) {
        UNSPECIFIED
    } else {
        addr
    };
    shared.with(|c, now| c.handle_hello(now, addr, record, sample, source));
    Ok(id)
}

/// Sends our (changed) record to the live hosts we know, so they learn how to reach us.
pub(crate) fn announce(node: &Node) {
    let peers: Vec<PeerId> = node.inner.core.read(|c, _| {
        c.table()
            .iter()
            .filter(|h| h.is_alive())
            .map(|h| h.id())
            .take(64)
            .collect()
    });
    for id in peers {
        let n = node.clone();
        node.inner.tasks.spawn(async move {
            let _ = tokio::time::timeout(
                Duration::from_secs(5),
                hello(&n, id, UNSPECIFIED, Source::Exchange),
            )
            .await;
        });
    }
}

/// Answers membership requests (ping, indirect ping, hello, gossip).
pub(crate) async fn handle(node: &Node, from: Remote, request: Request) -> (Response, Bytes) {
    let shared = &node.inner.core;
    let reply = match request {
        Request::Ping { seq } => {
            shared.with(|c, now| c.handle_ping(now, from.id));
            Response::Ack { seq }
        }
        Request::PingReq { seq, target, addrs } => {
            shared.with(|c, now| c.handle_ping(now, from.id));
            let wait = shared.read(|c, _| c.ping_req_timeout());
            let ok = tokio::time::timeout(wait, ping(node, target, &addrs, seq))
                .await
                .is_ok_and(|r| r);
            if ok {
                Response::Ack { seq }
            } else {
                Response::Nack { seq }
            }
        }
        Request::Hello {
            record,
            network,
            sample,
        } => {
            if record.id != from.id {
                node.metrics().record(&MetricEvent::Rejected {
                    reason: "identity_mismatch",
                });
                return (
                    Response::Error {
                        code: ErrorCode::Malformed,
                        message: "record id does not match your certificate".into(),
                    },
                    Bytes::new(),
                );
            }
            // A peer from another site dialled us: we are reachable from outside our LAN.
            // (Not over a relay: that proves nothing about being reachable.)
            let relayed = crate::relay::is_virtual(&from.addr);
            // Only a connection the peer opened proves it: a hello on one we opened does not.
            let from_elsewhere = record.site != node.site() && !relayed && from.inbound;
            let learn = node.config().relay.reachability == crate::config::Reachability::Auto
                && !node.inner.relay.behind_nat();
            let observed = if relayed { UNSPECIFIED } else { from.addr };
            let answer = shared.with(|c, now| {
                if from_elsewhere && learn && !c.local_record(now).public {
                    c.membership_mut().set_public(true);
                }
                c.handle_inbound_hello(now, observed, record, &network, sample)
            });
            match answer {
                Ok(r) => Response::Hello {
                    record: r.record,
                    observed,
                    sample: r.sample,
                },
                Err(HelloRefused::WrongNetwork) => {
                    node.metrics().record(&MetricEvent::Rejected {
                        reason: "wrong_network",
                    });
                    Response::Error {
                        code: ErrorCode::WrongNetwork,
                        message: format!("this is network {:?}", node.config().network),
                    }
                }
                Err(e) => Response::Error {
                    code: ErrorCode::Malformed,
                    message: e.to_string(),
                },
            }
        }
        Request::Gossip { updates } => {
            shared.with(|c, now| c.handle_gossip(now, from.id, &updates));
            Response::Ok
        }
        _ => Response::Error {
            code: ErrorCode::UnknownMessage,
            message: "not a membership message".into(),
        },
    };
    (reply, Bytes::new())
}

/// Pings `target` (dialling `addrs` if there is no connection); true on an ack.
async fn ping(node: &Node, target: PeerId, addrs: &[SocketAddr], seq: u64) -> bool {
    if node.connection_with(target, addrs).await.is_err() {
        return false;
    }
    matches!(
        node.send(target, &Request::Ping { seq }, Bytes::new(), "ping")
            .await,
        Ok((Response::Ack { .. }, _))
    )
}

/// Resolves every bootstrap entry (DNS names included, every address used) and hands the set to
/// the core, which dials what it does not know yet.
pub(crate) async fn resolve_bootstrap(node: &Node) {
    if node.config().bootstrap.is_empty() {
        return;
    }
    let mut addrs = Vec::new();
    for entry in &node.config().bootstrap {
        match resolve(entry).await {
            Ok(found) => addrs.extend(found.into_iter().filter(|a| *a != node.inner.local_addr)),
            Err(e) => {
                debug!(%entry, error = %e, "bootstrap name does not resolve (yet)");
                node.metrics()
                    .membership
                    .with_label_values(&["bootstrap_unresolved"])
                    .inc();
            }
        }
    }
    node.inner.core.with(|c, now| c.set_bootstrap(now, addrs));
}

/// Resolves `host:port` to every address. Names go to hickory-resolver (it reads
/// /etc/resolv.conf and /etc/hosts itself, so it works in a static binary in a scratch image,
/// where glibc's NSS cannot), falling back to the system resolver.
async fn resolve(entry: &str) -> Result<Vec<SocketAddr>, ResolveError> {
    if let Ok(addr) = entry.parse::<SocketAddr>() {
        return Ok(vec![addr]);
    }
    let (host, port) = entry.rsplit_once(':').ok_or(ResolveError::NotHostPort)?;
    let port: u16 = port.parse().map_err(|_| ResolveError::BadPort)?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let resolver = resolver();
    if let Some(r) = resolver {
        let lookup = tokio::time::timeout(Duration::from_secs(3), r.lookup_ip(host)).await;
        if let Ok(Ok(ips)) = lookup {
            let found: Vec<SocketAddr> = ips.iter().map(|ip| SocketAddr::new(ip, port)).collect();
            if !found.is_empty() {
                return Ok(found);
            }
        }
    }
    match tokio::time::timeout(Duration::from_secs(3), tokio::net::lookup_host(entry)).await {
        Ok(Ok(found)) => Ok(found.collect()),
        Ok(Err(e)) => Err(ResolveError::Lookup(e)),
        Err(_) => Err(ResolveError::TimedOut),
    }
}

/// Why a bootstrap entry did not resolve.
#[derive(Debug, thiserror::Error)]
enum ResolveError {
    #[error("not host:port")]
    NotHostPort,
    #[error("the port is not a number from 0 to 65535")]
    BadPort,
    #[error(transparent)]
    Lookup(std::io::Error),
    #[error("resolution timed out (3 s)")]
    TimedOut,
}

fn resolver() -> Option<&'static hickory_resolver::TokioResolver> {
    static RESOLVER: std::sync::OnceLock<Option<hickory_resolver::TokioResolver>> =
        std::sync::OnceLock::new();
    RESOLVER
        .get_or_init(|| {
            let mut builder = hickory_resolver::TokioResolver::builder_tokio().ok()?;
            // Re-resolve for real every time: StatefulSet and compose names appear late.
            builder.options_mut().cache_size = 0;
            builder.options_mut().positive_max_ttl = Some(Duration::from_secs(1));
            builder.options_mut().negative_max_ttl = Some(Duration::from_secs(1));
            Some(builder.build())
        })
        .as_ref()
}

pub(crate) fn execute(node: &Node, action: Action, mcast: Option<Arc<Multicast>>) {
    let n = node.clone();
    match action {
        Action::SendBeacon { datagram } => {
            if let Some(m) = mcast {
                node.inner.tasks.spawn(async move {
                    if m.send(&datagram).await == 0 {
                        n.metrics()
                            .membership
                            .with_label_values(&["beacon_error"])
                            .inc();
                    }
                });
            }
        }
        Action::Dial {
            addrs,
            expected_id,
            source,
        } => {
            node.inner.tasks.spawn(async move {
                let mut last = None;
                for addr in addrs.iter().take(4) {
                    match introduce(&n, *addr, expected_id, source).await {
                        Ok(_) => return,
                        Err(e) => last = Some(e),
                    }
                }
                if let Some(e) = last {
                    debug!(?addrs, error = %e, via = source.as_str(), "dial failed");
                }
                n.inner
                    .core
                    .with(|c, now| c.handle_dial_failed(now, &addrs, expected_id, source));
            });
        }
        Action::Ping { to, addrs, seq } => {
            node.inner.tasks.spawn(async move {
                let ok =
                    tokio::time::timeout(Duration::from_secs(2), ping(&n, to, &addrs, seq)).await;
                let outcome = if ok.is_ok_and(|r| r) {
                    ProbeOutcome::Ack
                } else {
                    ProbeOutcome::Failed
                };
                n.inner
                    .core
                    .with(|c, now| c.handle_probe_result(now, to, seq, outcome));
            });
        }
        Action::PingReq {
            via,
            via_addrs,
            target,
            target_addrs,
            seq,
        } => {
            node.inner.tasks.spawn(async move {
                let req = Request::PingReq {
                    seq,
                    target,
                    addrs: target_addrs,
                };
                let reply = tokio::time::timeout(Duration::from_secs(2), async {
                    n.connection_with(via, &via_addrs).await?;
                    n.send(via, &req, Bytes::new(), "ping_req").await
                })
                .await;
                let outcome = match reply {
                    Ok(Ok((Response::Ack { .. }, _))) => ProbeOutcome::Ack,
                    Ok(Ok((Response::Nack { .. }, _))) => ProbeOutcome::Nack,
                    _ => ProbeOutcome::Failed,
                };
                n.inner
                    .core
                    .with(|c, now| c.handle_probe_result(now, via, seq, outcome));
            });
        }
        Action::Gossip { to, updates, .. } => {
            node.inner.tasks.spawn(async move {
                let req = Request::Gossip { updates };
                let _ = tokio::time::timeout(
                    Duration::from_secs(2),
                    n.send(to, &req, Bytes::new(), "gossip"),
                )
                .await;
            });
        }
        other => debug!(?other, "membership action not handled by this driver"),
    }
}

fn liveness_label(l: butter_proto::peers::Liveness) -> &'static str {
    match l {
        butter_proto::peers::Liveness::Alive => "alive",
        butter_proto::peers::Liveness::Suspect => "suspect",
        butter_proto::peers::Liveness::Unverified => "unverified",
        _ => "other",
    }
}

/// Turns core events into metrics and logs.
pub(crate) fn record(node: &Node, event: Event) {
    let m = node.metrics();
    match event {
        Event::PeerAdded { id, source } => {
            info!(peer = %id.short(), via = source.as_str(), "peer added");
            m.discoveries.with_label_values(&[source.as_str()]).inc();
        }
        Event::PeerRemoved { id, reason } => {
            info!(peer = %id.short(), reason = reason.as_str(), "peer removed");
            m.membership
                .with_label_values(&[&format!("removed_{}", reason.as_str())])
                .inc();
        }
        Event::PeerVouched { id } => {
            debug!(peer = %id.short(), "peer vouched for, unverified");
            m.membership.with_label_values(&["vouched"]).inc();
        }
        Event::PeerRejected { .. } => m.membership.with_label_values(&["rejected"]).inc(),
        Event::PeerSuspected { id, local } => {
            debug!(peer = %id.short(), local, "peer suspected");
            m.membership.with_label_values(&["suspected"]).inc();
        }
        Event::PeerAlive { .. } => m.membership.with_label_values(&["suspicion_cleared"]).inc(),
        Event::ProbeSent { indirect } => m
            .membership
            .with_label_values(&[if indirect { "probe_indirect" } else { "probe" }])
            .inc(),
        Event::ProbeFailed { .. } => m.membership.with_label_values(&["probe_failed"]).inc(),
        Event::Refuted { .. } => m.membership.with_label_values(&["refuted"]).inc(),
        Event::BeaconSent => m.membership.with_label_values(&["beacon_sent"]).inc(),
        Event::BeaconIgnored { reason } => m
            .membership
            .with_label_values(&[&format!("beacon_ignored_{}", reason.as_str())])
            .inc(),
        Event::DialFailed { .. } => m.membership.with_label_values(&["dial_failed"]).inc(),
        Event::HelloRefused { .. } => m.membership.with_label_values(&["hello_refused"]).inc(),
        Event::Rediscovery => {
            info!("known-host table empty: rediscovering");
            m.membership.with_label_values(&["rediscovery"]).inc();
        }
        _ => {}
    }
}

/// Refreshes the known-host gauges (by site and state, and by diversity class) and the task gauge.
/// Follows the kernel's count of dropped outgoing datagrams: into a metric, and into a warning
/// (at most once a minute) when they come in bursts, because a node whose datagrams the kernel
/// drops looks from outside like a node nobody answers.
pub(crate) struct SendDrops {
    last: Option<u64>,
    warned: Option<Instant>,
}

impl SendDrops {
    /// Drops per second that earn a warning.
    const BURST: u64 = 10;

    pub(crate) fn new() -> Self {
        SendDrops {
            last: crate::kernel::udp_send_errors(),
            warned: None,
        }
    }

    pub(crate) fn tick(&mut self, node: &Node, now: Instant) {
        let Some(total) = crate::kernel::udp_send_errors() else {
            return;
        };
        let delta = total.saturating_sub(self.last.unwrap_or(total));
        self.last = Some(total);
        node.metrics().udp_send_dropped.inc_by(delta);
        if delta >= Self::BURST
            && self
                .warned
                .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(60))
        {
            self.warned = Some(now);
            warn!(dropped = delta, "{}", crate::kernel::SEND_DROP_HINT);
        }
    }
}

pub(crate) fn update_gauges(node: &Node) {
    let m = node.metrics();
    let tasks = node.inner.tasks.len() + node.inner.transport.task_count();
    m.tasks.set(i64::try_from(tasks).unwrap_or(i64::MAX));
    let (by_site, by_class, health) = node.inner.core.read(|c, now| {
        let mut by_site = std::collections::BTreeMap::<(String, &'static str), i64>::new();
        for h in c.table().iter() {
            *by_site
                .entry((h.record.site.clone(), liveness_label(h.liveness)))
                .or_default() += 1;
        }
        let counts = c.table().class_counts(now);
        let by_class: Vec<(&'static str, i64)> = butter_proto::peers::Class::all()
            .map(|cl| {
                (
                    cl.as_str(),
                    i64::try_from(counts[cl.index()]).unwrap_or(i64::MAX),
                )
            })
            .collect();
        let health = c.membership().swim().local_health();
        (by_site, by_class, health)
    });
    m.swim_local_health.set(i64::from(health));
    m.known_hosts.reset();
    for ((site, state), n) in by_site {
        m.known_hosts.with_label_values(&[&site, state]).set(n);
    }
    for (class, n) in by_class {
        m.known_hosts_by_class.with_label_values(&[class]).set(n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn literal_and_named_bootstrap_entries_resolve() {
        assert_eq!(
            resolve("127.0.0.1:7000").await.unwrap(),
            vec!["127.0.0.1:7000".parse().unwrap()]
        );
        let local = resolve("localhost:7000").await.unwrap();
        assert!(
            local
                .iter()
                .all(|a| a.port() == 7000 && a.ip().is_loopback()),
            "{local:?}"
        );
        assert!(!local.is_empty());
        assert!(resolve("no-port").await.is_err());
        assert!(resolve("host:notaport").await.is_err());
    }

    #[test]
    fn site_is_the_subnet() {
        assert_eq!(site_of("10.1.0.13".parse().unwrap()), "10.1.0.0/24");
        assert_eq!(site_of("0.0.0.0".parse().unwrap()), "local");
    }
}
