//! LAN multicast sockets: one receiving socket joined on every multicast-capable IPv4 interface (or
//! the configured ones) and one sending socket per interface, so a beacon leaves on every LAN the
//! node is attached to and carries that LAN's source address.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;
use tracing::{debug, warn};

use crate::config::MulticastConfig;

/// Why multicast discovery could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MulticastError {
    /// Only IPv4 groups are supported for now.
    #[error("multicast.group {0}: only IPv4 groups are supported")]
    NotIpv4(SocketAddr),
    /// No interface can carry multicast.
    #[error(
        "no multicast-capable IPv4 interface{0}; set multicast.interfaces or disable multicast"
    )]
    NoInterface(String),
    /// A socket operation failed.
    #[error("multicast socket: {0}")]
    Io(#[from] io::Error),
}

/// The beacon sockets.
#[derive(Debug)]
pub struct Multicast {
    recv: UdpSocket,
    senders: Vec<(String, Ipv4Addr, UdpSocket)>,
    group: SocketAddrV4,
}

/// IPv4 interfaces that can carry multicast: up, not loopback (unless nothing else exists or it
/// is asked for by name).
fn interfaces(names: &[String]) -> Vec<(String, Ipv4Addr)> {
    let all: Vec<(String, Ipv4Addr)> = if_addrs::get_if_addrs()
        .unwrap_or_default()
        .into_iter()
        .filter_map(|i| match i.addr {
            if_addrs::IfAddr::V4(v4) => Some((i.name, v4.ip)),
            _ => None,
        })
        .collect();
    if !names.is_empty() {
        return all.into_iter().filter(|(n, _)| names.contains(n)).collect();
    }
    let external: Vec<_> = all
        .iter()
        .filter(|(_, ip)| !ip.is_loopback())
        .cloned()
        .collect();
    if external.is_empty() { all } else { external }
}

/// The dialable addresses of a socket bound to an unspecified address: every non-loopback
/// interface address of the same family with its port (loopback only if there is nothing else).
pub fn interface_addrs(bound: SocketAddr) -> Vec<SocketAddr> {
    let all: Vec<std::net::IpAddr> = if_addrs::get_if_addrs()
        .unwrap_or_default()
        .into_iter()
        .map(|i| i.ip())
        .filter(|ip| ip.is_ipv4() == bound.is_ipv4())
        .filter(
            |ip| !matches!(ip, std::net::IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80),
        )
        .collect();
    let external: Vec<_> = all.iter().copied().filter(|ip| !ip.is_loopback()).collect();
    let chosen = if external.is_empty() { all } else { external };
    chosen
        .into_iter()
        .take(8)
        .map(|ip| SocketAddr::new(ip, bound.port()))
        .collect()
}

impl Multicast {
    /// Opens the sockets for `cfg`.
    pub fn open(cfg: &MulticastConfig) -> Result<Self, MulticastError> {
        let SocketAddr::V4(group) = cfg.group else {
            return Err(MulticastError::NotIpv4(cfg.group));
        };
        let ifaces = interfaces(&cfg.interfaces);
        if ifaces.is_empty() {
            let which = if cfg.interfaces.is_empty() {
                String::new()
            } else {
                format!(" among {:?}", cfg.interfaces)
            };
            return Err(MulticastError::NoInterface(which));
        }
        let recv = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
        recv.set_reuse_address(true)?;
        recv.set_reuse_port(true)?;
        recv.set_nonblocking(true)?;
        // Binding the group address filters out unrelated traffic to the same port.
        recv.bind(&SocketAddr::V4(SocketAddrV4::new(*group.ip(), group.port())).into())?;
        recv.set_multicast_loop_v4(true)?;
        let mut joined = 0;
        let mut senders = Vec::new();
        for (name, ip) in &ifaces {
            match recv.join_multicast_v4(group.ip(), ip) {
                Ok(()) => joined += 1,
                Err(e) => {
                    debug!(interface = %name, error = %e, "cannot join the multicast group here");
                    continue;
                }
            }
            let send = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
            send.set_nonblocking(true)?;
            send.set_multicast_if_v4(ip)?;
            send.set_multicast_ttl_v4(1)?;
            send.set_multicast_loop_v4(true)?;
            send.bind(&SocketAddr::V4(SocketAddrV4::new(*ip, 0)).into())?;
            senders.push((name.clone(), *ip, UdpSocket::from_std(send.into())?));
        }
        if joined == 0 {
            return Err(MulticastError::NoInterface(
                " that accepts the group".into(),
            ));
        }
        Ok(Multicast {
            recv: UdpSocket::from_std(recv.into())?,
            senders,
            group,
        })
    }

    /// Sends `datagram` to the group on every interface; returns how many sends succeeded.
    pub async fn send(&self, datagram: &[u8]) -> usize {
        let mut ok = 0;
        for (name, _, sock) in &self.senders {
            match sock.send_to(datagram, SocketAddr::V4(self.group)).await {
                Ok(_) => ok += 1,
                Err(e) => warn!(interface = %name, error = %e, "beacon send failed"),
            }
        }
        ok
    }

    /// Receives one datagram.
    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        self.recv.recv_from(buf).await
    }

    /// The interface addresses beacons leave from.
    pub fn interface_addrs(&self) -> Vec<Ipv4Addr> {
        self.senders.iter().map(|(_, ip, _)| *ip).collect()
    }
}
