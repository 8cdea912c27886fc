//! The node's one driver: a thin async shell around [`NodeCore`], the sans-IO core that owns
//! every membership and data decision (known-host table, beacons, SWIM, exchange, PCG, RBFS and
//! the glue between them). The simulator and the core's tests run the same `NodeCore`.
//!
//! One task owns the timing: it drains the core's transmits and events, sleeps until the core's
//! next timeout, and reads beacons from the multicast socket. Transmits that need the network
//! (dials, probes, gossip, data messages) run as short tracked tasks that report their outcome
//! back into the core ([`membership::execute`], [`data::send`]); inbound requests are fed to the
//! core synchronously under its lock and answered from it. Events become metrics, logs and the
//! answers to searches.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use butter_proto::Time;
use butter_proto::node::{Event, NodeCore, Transmit};
use tokio::sync::Notify;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::discovery::Multicast;
use crate::node::Node;
use crate::store::NodeStore;
use crate::{data, membership};

/// The core a real node runs: over its on-disk (or in-memory) item store.
pub(crate) type Core = NodeCore<NodeStore>;

/// The core behind a short lock, plus the driver's clock and wake-up.
pub(crate) struct Shared {
    core: Mutex<Core>,
    notify: Notify,
    epoch: Instant,
}

impl Shared {
    pub(crate) fn new(core: Core, epoch: Instant) -> Self {
        Shared {
            core: Mutex::new(core),
            notify: Notify::new(),
            epoch,
        }
    }

    /// The core's clock: time since the node started.
    pub(crate) fn now(&self) -> Time {
        Time::from_duration(self.epoch.elapsed())
    }

    fn lock(&self) -> MutexGuard<'_, Core> {
        self.core.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` on the core and wakes the driver to drain what it produced.
    pub(crate) fn with<R>(&self, f: impl FnOnce(&mut Core, Time) -> R) -> R {
        let now = self.now();
        let r = f(&mut self.lock(), now);
        self.notify.notify_one();
        r
    }

    /// Reads the core without changing it.
    pub(crate) fn read<R>(&self, f: impl FnOnce(&Core, Time) -> R) -> R {
        let now = self.now();
        f(&self.lock(), now)
    }

    fn to_instant(&self, t: Time) -> Instant {
        self.epoch + t.as_duration()
    }
}

/// Opens the multicast socket (if enabled) and starts the driver task.
pub(crate) fn start(node: &Node) {
    let mcast = if node.config().multicast.enabled {
        match Multicast::open(&node.config().multicast) {
            Ok(m) => {
                info!(group = %node.config().multicast.group, interfaces = ?m.interface_addrs(), "multicast discovery on");
                Some(Arc::new(m))
            }
            Err(e) => {
                warn!(error = %e, "multicast discovery off");
                node.metrics()
                    .membership
                    .with_label_values(&["multicast_unavailable"])
                    .inc();
                None
            }
        }
    } else {
        None
    };
    let n = node.clone();
    node.inner.tasks.spawn(async move { drive(n, mcast).await });
}

async fn drive(node: Node, mcast: Option<Arc<Multicast>>) {
    let shared = node.inner.core.clone();
    let cancel = node.cancelled();
    let mut buf = vec![0u8; 2048];
    let mut resolve_at = Instant::now();
    let mut gauges_at = Instant::now();
    let mut drops = membership::SendDrops::new();
    let views = shared.read(|c, _| c.store().views());
    loop {
        // Drain everything the core produced, acting outside the lock.
        let (transmits, events, timeout) = {
            let mut core = shared.lock();
            let mut transmits = Vec::new();
            while let Some(t) = core.poll_transmit() {
                transmits.push(t);
            }
            let mut events = Vec::new();
            while let Some(e) = core.poll_event() {
                events.push(e);
            }
            (transmits, events, core.poll_timeout())
        };
        // Group views are persisted as they change, so a restart rejoins its groups: in order,
        // outside the lock (disk writes must not hold up probes, Hellos or /ready).
        if let Some(views) = &views {
            for e in &events {
                if let Event::Data(e) = e {
                    data::persist(views, e);
                }
            }
        }
        for e in events {
            match e {
                Event::Membership(e) => membership::record(&node, e),
                Event::Data(e) => data::record(&node, e),
                other => debug!(?other, "core event not handled by this driver"),
            }
        }
        for t in transmits {
            match t {
                Transmit::Membership(a) => membership::execute(&node, a, mcast.clone()),
                Transmit::Data(t) => data::send(&node, t),
                other => debug!(?other, "core transmit not handled by this driver"),
            }
        }
        let now = Instant::now();
        if now >= resolve_at {
            let alone = shared.read(|c, _| c.table().is_empty());
            resolve_at = now
                + if alone {
                    Duration::from_secs(2)
                } else {
                    Duration::from_secs(15)
                };
            let n = node.clone();
            node.inner
                .tasks
                .spawn(async move { membership::resolve_bootstrap(&n).await });
        }
        if now >= gauges_at {
            gauges_at = now + Duration::from_secs(1);
            membership::update_gauges(&node);
            data::update_gauges(&node);
            drops.tick(&node, now);
        }
        let wake = timeout
            .map(|t| shared.to_instant(t))
            .unwrap_or(now + Duration::from_secs(1));
        let wake = wake.min(resolve_at).min(gauges_at);
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = shared.notify.notified() => {}
            _ = tokio::time::sleep_until(wake) => {
                shared.with(|c, now| c.handle_timeout(now));
            }
            r = recv_beacon(mcast.as_deref(), &mut buf) => match r {
                Ok((n, from)) => shared.with(|c, now| c.handle_beacon(now, &buf[..n], from)),
                Err(e) => {
                    debug!(error = %e, "beacon receive failed");
                    node.metrics().membership.with_label_values(&["beacon_error"]).inc();
                }
            },
        }
    }
}

async fn recv_beacon(
    mcast: Option<&Multicast>,
    buf: &mut [u8],
) -> std::io::Result<(usize, SocketAddr)> {
    match mcast {
        Some(m) => m.recv(buf).await,
        None => std::future::pending().await,
    }
}
