//! The membership driver: bootstrap dialling, hello exchange with a bounded sample, and liveness.
//!
//! This is the thin async side; the bookkeeping lives in [`PeerBook`].

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use butter_proto::PeerId;
use butter_proto::wire::{ErrorCode, PeerRecord, Request, Response};
use bytes::Bytes;
use tokio::time::Instant;
use tracing::{debug, info};

use crate::metrics::Event;
use crate::node::{Node, PeerSnapshot};
use crate::transport::{Remote, RequestError};

/// How many known hosts a hello carries at most (never the whole table).
pub const SAMPLE: u16 = 16;
/// A peer that failed this many probes in a row is removed.
const MAX_FAILURES: u32 = 3;
/// Probe a peer not heard from for this long.
const PROBE_AFTER: Duration = Duration::from_secs(1);

/// How a host became known.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// Heard its LAN multicast beacon.
    Multicast,
    /// Dialled from the bootstrap list.
    Bootstrap,
    /// Learnt from another peer's sample.
    Exchange,
    /// It dialled us.
    Inbound,
}

impl Source {
    /// Stable label.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Multicast => "multicast",
            Source::Bootstrap => "bootstrap",
            Source::Exchange => "exchange",
            Source::Inbound => "inbound",
        }
    }
}

#[derive(Clone, Debug)]
struct Entry {
    record: PeerRecord,
    source: Source,
    last_seen: Instant,
    rtt: Option<Duration>,
    failures: u32,
}

/// The known hosts.
#[derive(Debug, Default)]
pub struct PeerBook {
    hosts: BTreeMap<PeerId, Entry>,
}

impl PeerBook {
    /// Inserts or refreshes a host; returns true if it is new.
    pub fn upsert(&mut self, record: PeerRecord, source: Source, now: Instant) -> bool {
        match self.hosts.get_mut(&record.id) {
            Some(e) => {
                if !record.addrs.is_empty() {
                    e.record.addrs = record.addrs;
                }
                e.record.site = record.site;
                e.record.uptime_secs = record.uptime_secs;
                e.record.known_hosts = record.known_hosts;
                e.last_seen = now;
                e.failures = 0;
                false
            }
            None => {
                self.hosts.insert(
                    record.id,
                    Entry {
                        record,
                        source,
                        last_seen: now,
                        rtt: None,
                        failures: 0,
                    },
                );
                true
            }
        }
    }

    /// Addresses known for `id`.
    pub fn addrs(&self, id: &PeerId) -> Vec<SocketAddr> {
        self.hosts
            .get(id)
            .map(|e| e.record.addrs.clone())
            .unwrap_or_default()
    }

    /// Whether `id` is known.
    pub fn contains(&self, id: &PeerId) -> bool {
        self.hosts.contains_key(id)
    }

    /// Whether any known host listens on `addr`.
    pub fn knows_addr(&self, addr: &SocketAddr) -> bool {
        self.hosts.values().any(|e| e.record.addrs.contains(addr))
    }

    /// A bounded sample of records (most recently seen first), excluding `exclude`.
    pub fn sample(&self, n: usize, exclude: &PeerId) -> Vec<PeerRecord> {
        let mut v: Vec<&Entry> = self
            .hosts
            .values()
            .filter(|e| &e.record.id != exclude)
            .collect();
        v.sort_by_key(|e| std::cmp::Reverse(e.last_seen));
        v.into_iter().take(n).map(|e| e.record.clone()).collect()
    }

    fn snapshot(&self, now: Instant) -> Vec<PeerSnapshot> {
        let mut v: Vec<PeerSnapshot> = self
            .hosts
            .values()
            .map(|e| PeerSnapshot {
                id: e.record.id.to_string(),
                short: e.record.id.short(),
                addrs: e.record.addrs.clone(),
                site: e.record.site.clone(),
                source: e.source.as_str(),
                state: if e.failures > 0 { "suspect" } else { "alive" },
                last_seen_ms: u64::try_from(now.saturating_duration_since(e.last_seen).as_millis())
                    .unwrap_or(u64::MAX),
                rtt_ms: e.rtt.map(|d| d.as_secs_f64() * 1000.0),
            })
            .collect();
        v.sort_by_key(|p| p.last_seen_ms);
        v
    }

    /// Number of known hosts.
    pub fn len(&self) -> usize {
        self.hosts.len()
    }

    /// Whether no host is known.
    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty()
    }
}

impl crate::node::NodeInner {
    pub(crate) fn book(&self) -> std::sync::MutexGuard<'_, PeerBook> {
        self.peers.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl PeerBook {
    pub(crate) fn snapshot_at(&self, now: Instant) -> Vec<PeerSnapshot> {
        self.snapshot(now)
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

/// Dials `addr`, exchanges hellos, learns the peer and its sample. Returns the peer's id.
pub async fn introduce(
    node: &Node,
    addr: SocketAddr,
    expected: Option<PeerId>,
    source: Source,
) -> Result<PeerId, RequestError> {
    let (id, conn) = node.inner.transport.connect(addr, expected).await?;
    if id == node.id() {
        conn.close(0u32.into(), b"self");
        return Err(RequestError::Unexpected("dialled ourselves".into()));
    }
    let req = Request::Hello {
        record: node.record(),
        network: node.config().network.clone(),
        sample: SAMPLE,
    };
    let start = Instant::now();
    let (resp, _) = node.send(id, &req, Bytes::new(), "hello").await?;
    let Response::Hello {
        mut record, sample, ..
    } = resp
    else {
        return Err(RequestError::Unexpected(
            "hello answered with another message".into(),
        ));
    };
    if record.id != id {
        node.metrics().record(&Event::Rejected {
            reason: "identity_mismatch",
        });
        return Err(RequestError::Unexpected(
            "hello record does not match the peer's key".into(),
        ));
    }
    if record.addrs.is_empty() {
        record.addrs = vec![addr];
    }
    let now = Instant::now();
    let fresh = {
        let mut book = node.inner.book();
        let fresh = book.upsert(record, source, now);
        if let Some(e) = book.hosts.get_mut(&id) {
            e.rtt = Some(now - start);
        }
        fresh
    };
    if fresh {
        info!(peer = %id.short(), %addr, via = source.as_str(), "peer discovered");
        node.metrics()
            .discoveries
            .with_label_values(&[source.as_str()])
            .inc();
    }
    learn_sample(node, sample);
    Ok(id)
}

/// Dials the hosts of a sample we do not know yet, in the background.
fn learn_sample(node: &Node, sample: Vec<PeerRecord>) {
    for rec in sample.into_iter().take(SAMPLE as usize) {
        if rec.id == node.id() || node.inner.book().contains(&rec.id) {
            continue;
        }
        let n = node.clone();
        node.inner.tasks.spawn(async move {
            for addr in rec.addrs.iter().take(4) {
                if introduce(&n, *addr, Some(rec.id), Source::Exchange)
                    .await
                    .is_ok()
                {
                    break;
                }
            }
        });
    }
}

/// Answers membership requests (ping, indirect ping, hello).
pub(crate) async fn handle(node: &Node, from: Remote, request: Request) -> (Response, Bytes) {
    let now = Instant::now();
    match request {
        Request::Ping { seq } => {
            if let Some(e) = node.inner.book().hosts.get_mut(&from.id) {
                e.last_seen = now;
                e.failures = 0;
            }
            (Response::Ack { seq }, Bytes::new())
        }
        Request::PingReq { seq, target, .. } => {
            let ok = node
                .send(target, &Request::Ping { seq }, Bytes::new(), "ping")
                .await
                .is_ok();
            (
                if ok {
                    Response::Ack { seq }
                } else {
                    Response::Nack { seq }
                },
                Bytes::new(),
            )
        }
        Request::Hello {
            mut record,
            network,
            sample,
        } => {
            if network != node.config().network {
                node.metrics().record(&Event::Rejected {
                    reason: "wrong_network",
                });
                return (
                    Response::Error {
                        code: ErrorCode::WrongNetwork,
                        message: format!("this is network {:?}", node.config().network),
                    },
                    Bytes::new(),
                );
            }
            if record.id != from.id {
                node.metrics().record(&Event::Rejected {
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
            // The QUIC source address is the peer's listening socket: it is always dialable.
            if !record.addrs.contains(&from.addr) {
                record.addrs.insert(0, from.addr);
            }
            record.addrs.truncate(8);
            let fresh = node.inner.book().upsert(record, Source::Inbound, now);
            if fresh {
                info!(peer = %from.id.short(), addr = %from.addr, "peer introduced itself");
                node.metrics()
                    .discoveries
                    .with_label_values(&["inbound"])
                    .inc();
            }
            let sample = node
                .inner
                .book()
                .sample(usize::from(sample.min(SAMPLE)), &from.id);
            (
                Response::Hello {
                    record: node.record(),
                    observed: from.addr,
                    sample,
                },
                Bytes::new(),
            )
        }
        _ => (
            Response::Error {
                code: ErrorCode::UnknownMessage,
                message: "not a membership message".into(),
            },
            Bytes::new(),
        ),
    }
}

/// Starts the membership tasks: bootstrap dialling and liveness probing.
pub(crate) fn start(node: &Node) {
    let n = node.clone();
    node.inner
        .tasks
        .spawn(async move { bootstrap_loop(n).await });
    let n = node.clone();
    node.inner.tasks.spawn(async move { probe_loop(n).await });
}

async fn bootstrap_loop(node: Node) {
    let cancel = node.cancelled();
    loop {
        for entry in node.config().bootstrap.clone() {
            let addrs = match tokio::net::lookup_host(entry.as_str()).await {
                Ok(a) => a.collect::<Vec<_>>(),
                Err(e) => {
                    debug!(%entry, error = %e, "bootstrap name does not resolve yet");
                    continue;
                }
            };
            for addr in addrs {
                if addr == node.inner.local_addr || node.inner.book().knows_addr(&addr) {
                    continue;
                }
                if let Err(e) = introduce(&node, addr, None, Source::Bootstrap).await {
                    debug!(%addr, error = %e, "bootstrap peer not reachable");
                }
            }
        }
        // Retry quickly while alone, slowly once joined.
        let wait = if node.inner.book().is_empty() {
            Duration::from_millis(500)
        } else {
            Duration::from_secs(10)
        };
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

async fn probe_loop(node: Node) {
    let cancel = node.cancelled();
    let mut seq = 0u64;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
        }
        let now = Instant::now();
        let stale: Vec<PeerId> = node
            .inner
            .book()
            .hosts
            .values()
            .filter(|e| now.saturating_duration_since(e.last_seen) >= PROBE_AFTER)
            .map(|e| e.record.id)
            .collect();
        for id in stale {
            seq += 1;
            let start = Instant::now();
            let ok = node
                .send(id, &Request::Ping { seq }, Bytes::new(), "ping")
                .await
                .is_ok();
            let mut book = node.inner.book();
            let Some(e) = book.hosts.get_mut(&id) else {
                continue;
            };
            if ok {
                e.last_seen = Instant::now();
                e.failures = 0;
                let sample = start.elapsed();
                e.rtt = Some(e.rtt.map_or(sample, |r| (r * 7 + sample) / 8));
            } else {
                e.failures += 1;
                if e.failures >= MAX_FAILURES {
                    book.hosts.remove(&id);
                    info!(peer = %id.short(), "peer removed after failed probes");
                    node.metrics()
                        .membership
                        .with_label_values(&["removed"])
                        .inc();
                }
            }
        }
    }
}
