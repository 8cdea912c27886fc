//! Prometheus metrics, recorded from node events.
//!
//! The transport and the membership driver emit [`Event`]s; [`Metrics::record`] turns them into
//! series. Every series carries the `butter_` prefix, units in its name and help text.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Direction of a connection or request, from this node's point of view.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// We opened it.
    Outbound,
    /// The peer opened it.
    Inbound,
}

impl Direction {
    fn as_str(self) -> &'static str {
        match self {
            Direction::Outbound => "outbound",
            Direction::Inbound => "inbound",
        }
    }
}

/// Something that happened in the node and is worth counting.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Event {
    /// A QUIC + TLS handshake finished.
    HandshakeSucceeded {
        /// Who started it.
        direction: Direction,
        /// How long it took.
        duration: Duration,
    },
    /// A handshake failed or a connection attempt was refused.
    HandshakeFailed {
        /// Who started it.
        direction: Direction,
        /// A short stable reason label (`alpn`, `bad_certificate`, `peer_id_mismatch`, …).
        reason: &'static str,
    },
    /// A connection entered the pool.
    ConnectionOpened,
    /// A connection left the pool.
    ConnectionClosed,
    /// A request finished (either side).
    Request {
        /// Who sent it.
        direction: Direction,
        /// What it was: a behaviour name, an overlay name, or an internal message kind.
        kind: String,
        /// `ok` or an error label.
        outcome: &'static str,
        /// Wall time from open to reply.
        duration: Duration,
    },
    /// Input from the network was refused (bad frame, wrong identity, over a limit, …).
    Rejected {
        /// A short stable reason label.
        reason: &'static str,
    },
    /// Stream payload bytes sent.
    BytesSent(u64),
    /// Stream payload bytes received.
    BytesReceived(u64),
}

/// The node's metrics registry and series.
#[derive(Clone, Debug)]
pub struct Metrics {
    registry: Registry,
    connections_open: IntGauge,
    handshakes: IntCounterVec,
    handshake_duration: Histogram,
    requests: IntCounterVec,
    /// `butter_request_duration_seconds`' two series (outbound, inbound), looked up once: every
    /// request records into one, and a label lookup hashes and locks.
    request_duration_by_direction: [Histogram; 2],
    /// `butter_requests_total{outcome="ok"}`'s series (outbound, inbound) by kind, looked up
    /// once per kind: a label lookup hashes three labels and clones the series. Filled only on
    /// success, so by the kinds this node runs (a made-up name never succeeds), and capped.
    request_ok_by_kind: Arc<RwLock<HashMap<Box<str>, [IntCounter; 2]>>>,
    rejected: IntCounterVec,
    bytes_sent: IntCounter,
    bytes_received: IntCounter,
    /// Extra gauges keyed by label, set by subsystems that own a state snapshot.
    pub known_hosts: IntGaugeVec,
    /// Known hosts by diversity class.
    pub known_hosts_by_class: IntGaugeVec,
    /// SWIM's local health score (0 = healthy; see `butter_proto::swim::Config::max_local_health`).
    pub swim_local_health: IntGauge,
    /// Discoveries by method.
    pub discoveries: IntCounterVec,
    /// Membership events (probes, suspicions, evictions, beacon errors) by kind.
    pub membership: IntCounterVec,
    /// Retrievals started here, by outcome.
    pub retrievals: IntCounterVec,
    /// Hops to the holder of retrieved items.
    pub retrieval_hops: Histogram,
    /// Time to retrieve an item.
    pub retrieval_duration: Histogram,
    /// PCG messages by direction and kind.
    pub pcg_messages: IntCounterVec,
    /// RBFS messages by direction and kind.
    pub rbfs_messages: IntCounterVec,
    /// PCG events (repairs, trims, failed proofs, corrupt data) by kind.
    pub pcg_events: IntCounterVec,
    /// Owned records stored (put here, or taken in place of an older one), by kind (`value`,
    /// `tombstone`).
    pub owned_updates: IntCounterVec,
    /// Owned records (or unsigned deletes of owned items) this node refused, by reason.
    pub owned_refused: IntCounterVec,
    /// Groups this node is in, by state.
    pub groups: IntGaugeVec,
    /// Items held.
    pub items_stored: IntGauge,
    /// Bytes of item content held.
    pub stored_bytes: IntGauge,
    /// Bytes of item content held in memory (all of it without a data directory; the read cache
    /// with one).
    pub store_memory_bytes: IntGauge,
    /// Background tasks the node and its transport track (spawned, not yet finished).
    pub tasks: IntGauge,
    /// Outgoing UDP datagrams the kernel dropped in the node's network namespace since it started
    /// (the kernel's `Udp: SndbufErrors`, Linux only).
    pub udp_send_dropped: IntCounter,
    /// Relaying, reachability and hole punching.
    pub relay: RelayMetrics,
}

/// Series of the relay layer (issue: wider reach through relays and hole punching).
#[derive(Clone, Debug)]
pub struct RelayMetrics {
    /// Pooled connections by path: `direct`, `relayed`, `punched`.
    pub connections_by_path: IntGaugeVec,
    /// Hole-punch attempts by outcome: `success`, `no_reply`, `failed`.
    pub holepunch: IntCounterVec,
    /// Packet bytes this node relayed for others.
    pub relayed_bytes: IntCounter,
    /// Packets this node relayed for others.
    pub relayed_packets: IntCounter,
    /// Relay refusals by reason, as relay (`side=relay`) or as the refused end (`side=client`).
    pub refused: IntCounterVec,
    /// 1 for the current reachability state (`public` or `private`), 0 for the other.
    pub reachability: IntGaugeVec,
    /// Relay links open (peers attached to this node plus links it opened).
    pub links: IntGauge,
    /// Relayed sessions this node carries for others.
    pub sessions: IntGauge,
}

impl RelayMetrics {
    fn new() -> Self {
        let connections_by_path = must(IntGaugeVec::new(
            Opts::new(
                "butter_connections_by_path",
                "Pooled connections by path (direct, relayed, punched)",
            ),
            &["path"],
        ));
        for p in ["direct", "relayed", "punched"] {
            connections_by_path.with_label_values(&[p]).set(0);
        }
        let holepunch = must(IntCounterVec::new(
            Opts::new(
                "butter_holepunch_total",
                "Hole-punch attempts by outcome (success, no_reply, failed)",
            ),
            &["outcome"],
        ));
        for o in ["success", "no_reply", "failed"] {
            holepunch.with_label_values(&[o]);
        }
        let refused = must(IntCounterVec::new(
            Opts::new(
                "butter_relay_refused_total",
                "Relayed traffic refused, by side (relay or client) and reason",
            ),
            &["side", "reason"],
        ));
        let reachability = must(IntGaugeVec::new(
            Opts::new(
                "butter_reachability",
                "1 for the node's reachability state (public: dialled from outside its LAN; private: needs a relay)",
            ),
            &["state"],
        ));
        for s in ["public", "private"] {
            reachability.with_label_values(&[s]).set(0);
        }
        RelayMetrics {
            connections_by_path,
            holepunch,
            relayed_bytes: must(IntCounter::new(
                "butter_relayed_bytes_total",
                "Packet bytes this node relayed for other peers",
            )),
            relayed_packets: must(IntCounter::new(
                "butter_relayed_packets_total",
                "Packets this node relayed for other peers",
            )),
            refused,
            reachability,
            links: must(IntGauge::new(
                "butter_relay_links",
                "Relay links open on this node",
            )),
            sessions: must(IntGauge::new(
                "butter_relay_sessions",
                "Relayed sessions this node carries for other peers",
            )),
        }
    }

    fn collectors(&self) -> Vec<Box<dyn prometheus::core::Collector>> {
        vec![
            Box::new(self.connections_by_path.clone()),
            Box::new(self.holepunch.clone()),
            Box::new(self.relayed_bytes.clone()),
            Box::new(self.relayed_packets.clone()),
            Box::new(self.refused.clone()),
            Box::new(self.reachability.clone()),
            Box::new(self.links.clone()),
            Box::new(self.sessions.clone()),
        ]
    }
}

/// At most this many request kinds keep their series looked up (beyond it, each is looked up per
/// request, as before).
const MAX_CACHED_KINDS: usize = 256;

fn must<T>(r: prometheus::Result<T>) -> T {
    // Metric definitions are static; a failure here is a programming error caught by tests.
    #[allow(clippy::expect_used)]
    r.expect("static metric definition is valid")
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates every series in a fresh registry.
    pub fn new() -> Self {
        let registry = Registry::new();
        let build = must(IntGaugeVec::new(
            Opts::new(
                "butter_build_info",
                "Build information; the value is always 1",
            ),
            &["version"],
        ));
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        let connections_open = must(IntGauge::new(
            "butter_connections_open",
            "QUIC connections currently pooled",
        ));
        let handshakes = must(IntCounterVec::new(
            Opts::new(
                "butter_handshakes_total",
                "Connection handshakes by direction and outcome",
            ),
            &["direction", "outcome"],
        ));
        let handshake_duration = must(Histogram::with_opts(
            HistogramOpts::new(
                "butter_handshake_duration_seconds",
                "Time to complete a QUIC + TLS handshake",
            )
            .buckets(vec![
                0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
            ]),
        ));
        let requests = must(IntCounterVec::new(
            Opts::new(
                "butter_requests_total",
                "Requests by direction, kind and outcome",
            ),
            &["direction", "kind", "outcome"],
        ));
        let request_duration = must(HistogramVec::new(
            HistogramOpts::new("butter_request_duration_seconds", "Request duration").buckets(
                vec![
                    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                    0.5, 1.0, 2.5, 5.0,
                ],
            ),
            &["direction"],
        ));
        let rejected = must(IntCounterVec::new(
            Opts::new("butter_rejected_total", "Network input refused, by reason"),
            &["reason"],
        ));
        let bytes_sent = must(IntCounter::new(
            "butter_sent_bytes_total",
            "Stream payload bytes sent",
        ));
        let bytes_received = must(IntCounter::new(
            "butter_received_bytes_total",
            "Stream payload bytes received",
        ));
        let known_hosts = must(IntGaugeVec::new(
            Opts::new("butter_known_hosts", "Known hosts by site and state"),
            &["site", "state"],
        ));
        let known_hosts_by_class = must(IntGaugeVec::new(
            Opts::new(
                "butter_known_hosts_by_class",
                "Known hosts by diversity class (uptime/storage/known-host count above or below the mean)",
            ),
            &["class"],
        ));
        let swim_local_health = must(IntGauge::new(
            "butter_swim_local_health",
            "SWIM local health score: 0 is healthy; each point stretches this node's probe period and timeouts by one more base length (its own probes fail or it is suspected: it is likely the slow one)",
        ));
        let discoveries = must(IntCounterVec::new(
            Opts::new("butter_discoveries_total", "Hosts discovered, by method"),
            &["method"],
        ));
        let membership = must(IntCounterVec::new(
            Opts::new(
                "butter_membership_events_total",
                "Membership events by kind",
            ),
            &["kind"],
        ));
        let retrievals = must(IntCounterVec::new(
            Opts::new(
                "butter_retrievals_total",
                "Item retrievals started on this node, by outcome",
            ),
            &["outcome"],
        ));
        let retrieval_hops = must(Histogram::with_opts(
            HistogramOpts::new(
                "butter_retrieval_hops",
                "Hops from the asking node to the holder that answered",
            )
            .buckets(vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0]),
        ));
        let retrieval_duration = must(Histogram::with_opts(
            HistogramOpts::new(
                "butter_retrieval_duration_seconds",
                "Time to retrieve an item",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ]),
        ));
        let pcg_messages = must(IntCounterVec::new(
            Opts::new(
                "butter_pcg_messages_total",
                "Peer Content Group messages by direction and kind",
            ),
            &["direction", "kind"],
        ));
        let rbfs_messages = must(IntCounterVec::new(
            Opts::new(
                "butter_rbfs_messages_total",
                "Search messages by direction and kind",
            ),
            &["direction", "kind"],
        ));
        let pcg_events = must(IntCounterVec::new(
            Opts::new(
                "butter_pcg_events_total",
                "Peer Content Group events (repair, trim, proof_failed, corrupt, ...)",
            ),
            &["kind"],
        ));
        let owned_updates = must(IntCounterVec::new(
            Opts::new(
                "butter_owned_updates_total",
                "Owned records stored: put here, or taken from a peer in place of an older one (value or tombstone)",
            ),
            &["kind"],
        ));
        let owned_refused = must(IntCounterVec::new(
            Opts::new(
                "butter_owned_refused_total",
                "Owned records refused (stale, bad_signature, malformed, too_large) and unsigned deletes of owned items (unsigned_delete)",
            ),
            &["reason"],
        ));
        let groups = must(IntGaugeVec::new(
            Opts::new(
                "butter_groups",
                "Groups this node is a member of, by state (cold < r, goldilocks = r, hot > r)",
            ),
            &["state"],
        ));
        for s in ["cold", "goldilocks", "hot"] {
            groups.with_label_values(&[s]).set(0);
        }
        let items_stored = must(IntGauge::new(
            "butter_items_stored",
            "Items held by this node",
        ));
        let stored_bytes = must(IntGauge::new(
            "butter_stored_bytes",
            "Bytes of item content held by this node",
        ));
        let store_memory_bytes = must(IntGauge::new(
            "butter_store_memory_bytes",
            "Bytes of item content held in memory (the read cache when items live on disk)",
        ));
        let tasks = must(IntGauge::new(
            "butter_tasks",
            "Background tasks the node and its transport track (spawned, not yet finished)",
        ));
        let udp_send_dropped = must(IntCounter::new(
            "butter_udp_send_dropped_total",
            "Outgoing UDP datagrams the kernel dropped in this node's network namespace since it \
             started (Udp SndbufErrors); a full neighbour (ARP) table on a host running many \
             nodes is the usual cause",
        ));
        // Known labels start at 0, so dashboards show a flat line rather than "no data".
        for reason in [
            "malformed",
            "unknown_message",
            "unsupported_version",
            "too_large",
            "read_timeout",
            "alpn",
            "bad_certificate",
            "peer_id_mismatch",
            "identity_mismatch",
            "rate_limited",
            "banned",
            "wrong_proof",
            "wrong_data",
            "not_quic",
        ] {
            rejected.with_label_values(&[reason]);
        }
        for method in ["multicast", "bootstrap", "exchange", "inbound"] {
            discoveries.with_label_values(&[method]);
        }
        for c in [
            Box::new(build) as Box<dyn prometheus::core::Collector>,
            Box::new(connections_open.clone()),
            Box::new(handshakes.clone()),
            Box::new(handshake_duration.clone()),
            Box::new(requests.clone()),
            Box::new(request_duration.clone()),
            Box::new(rejected.clone()),
            Box::new(bytes_sent.clone()),
            Box::new(bytes_received.clone()),
            Box::new(known_hosts.clone()),
            Box::new(known_hosts_by_class.clone()),
            Box::new(swim_local_health.clone()),
            Box::new(discoveries.clone()),
            Box::new(membership.clone()),
            Box::new(retrievals.clone()),
            Box::new(retrieval_hops.clone()),
            Box::new(retrieval_duration.clone()),
            Box::new(pcg_messages.clone()),
            Box::new(rbfs_messages.clone()),
            Box::new(pcg_events.clone()),
            Box::new(owned_updates.clone()),
            Box::new(owned_refused.clone()),
            Box::new(groups.clone()),
            Box::new(items_stored.clone()),
            Box::new(stored_bytes.clone()),
            Box::new(store_memory_bytes.clone()),
            Box::new(tasks.clone()),
            Box::new(udp_send_dropped.clone()),
        ] {
            must(registry.register(c));
        }
        let relay = RelayMetrics::new();
        for c in relay.collectors() {
            must(registry.register(c));
        }
        Metrics {
            registry,
            connections_open,
            handshakes,
            handshake_duration,
            requests,
            request_duration_by_direction: [
                request_duration.with_label_values(&[Direction::Outbound.as_str()]),
                request_duration.with_label_values(&[Direction::Inbound.as_str()]),
            ],
            request_ok_by_kind: Arc::default(),
            rejected,
            bytes_sent,
            bytes_received,
            known_hosts,
            known_hosts_by_class,
            swim_local_health,
            discoveries,
            membership,
            retrievals,
            retrieval_hops,
            retrieval_duration,
            pcg_messages,
            rbfs_messages,
            pcg_events,
            owned_updates,
            owned_refused,
            groups,
            items_stored,
            stored_bytes,
            store_memory_bytes,
            tasks,
            udp_send_dropped,
            relay,
        }
    }

    /// The registry, for applications that add their own series.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Turns one event into series updates.
    pub fn record(&self, event: &Event) {
        match event {
            Event::HandshakeSucceeded {
                direction,
                duration,
            } => {
                self.handshakes
                    .with_label_values(&[direction.as_str(), "ok"])
                    .inc();
                self.handshake_duration.observe(duration.as_secs_f64());
            }
            Event::HandshakeFailed { direction, reason } => {
                self.handshakes
                    .with_label_values(&[direction.as_str(), reason])
                    .inc();
                self.rejected.with_label_values(&[reason]).inc();
            }
            Event::ConnectionOpened => self.connections_open.inc(),
            Event::ConnectionClosed => self.connections_open.dec(),
            Event::Request {
                direction,
                kind,
                outcome,
                duration,
            } => self.record_request(*direction, kind, outcome, *duration),
            Event::Rejected { reason } => self.rejected.with_label_values(&[reason]).inc(),
            Event::BytesSent(n) => self.bytes_sent.inc_by(*n),
            Event::BytesReceived(n) => self.bytes_received.inc_by(*n),
        }
    }

    /// Records a finished request, as [`Event::Request`] does, without building the event.
    pub(crate) fn record_request(
        &self,
        direction: Direction,
        kind: &str,
        outcome: &str,
        duration: Duration,
    ) {
        let d = match direction {
            Direction::Outbound => 0,
            Direction::Inbound => 1,
        };
        if outcome == "ok" {
            let cache = self
                .request_ok_by_kind
                .read()
                .unwrap_or_else(|e| e.into_inner());
            if let Some(series) = cache.get(kind) {
                series[d].inc();
            } else {
                drop(cache);
                let series = [
                    self.requests
                        .with_label_values(&[Direction::Outbound.as_str(), kind, "ok"]),
                    self.requests
                        .with_label_values(&[Direction::Inbound.as_str(), kind, "ok"]),
                ];
                series[d].inc();
                let mut cache = self
                    .request_ok_by_kind
                    .write()
                    .unwrap_or_else(|e| e.into_inner());
                if cache.len() < MAX_CACHED_KINDS {
                    cache.insert(kind.into(), series);
                }
            }
        } else {
            self.requests
                .with_label_values(&[direction.as_str(), kind, outcome])
                .inc();
        }
        self.request_duration_by_direction[d].observe(duration.as_secs_f64());
    }

    /// The counter of inputs rejected for `reason` (for code outside the event path: the socket).
    pub(crate) fn rejected_counter(&self, reason: &str) -> prometheus::IntCounter {
        self.rejected.with_label_values(&[reason])
    }

    /// How many inputs were rejected for `reason` so far.
    pub fn rejected(&self, reason: &str) -> u64 {
        self.rejected.with_label_values(&[reason]).get()
    }

    /// Prometheus text exposition of every series.
    pub fn encode(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}
