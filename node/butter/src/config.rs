//! Node configuration: plain data with documented defaults and `validate()`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Why a configuration is unusable. The message names the offending key.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// A value is out of range.
    #[error("{key}: {reason}")]
    Invalid {
        /// Dotted path of the key, e.g. `limits.max_frame`.
        key: &'static str,
        /// What is wrong and what would be right.
        reason: String,
    },
}

fn invalid(key: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        reason: reason.into(),
    }
}

/// Everything a node needs to start.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// QUIC listen address. Default `0.0.0.0:7000`.
    pub listen: SocketAddr,
    /// Where the key (and later the store) live; `None` = ephemeral identity. Default `None`.
    pub data_dir: Option<PathBuf>,
    /// Network id: nodes only talk to nodes with the same id. Default `butter`.
    pub network: String,
    /// Site label (network location) used by the diversity rule; empty = derived from the subnet.
    pub site: String,
    /// Private network mode: the network CA certificate (PEM). Peers must present a certificate it
    /// signed, and so must this node (`node.crt` in the data directory, made by `butter-node ca
    /// sign`). Default none (open network).
    pub network_ca: Option<PathBuf>,
    /// Bootstrap peers as `host:port` (DNS names are re-resolved). Default none.
    pub bootstrap: Vec<String>,
    /// Ready with no peers at all (a deliberately single node). Default `false`.
    pub alone: bool,
    /// LAN multicast discovery.
    pub multicast: MulticastConfig,
    /// Transport limits.
    pub limits: Limits,
    /// The data overlay (Peer Content Groups and search).
    pub data: crate::data::DataConfig,
    /// Relaying for peers that cannot be dialled, and hole punching.
    pub relay: RelayConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([0, 0, 0, 0], 7000)),
            data_dir: None,
            network_ca: None,
            network: "butter".into(),
            site: String::new(),
            bootstrap: Vec::new(),
            alone: false,
            multicast: MulticastConfig::default(),
            limits: Limits::default(),
            data: crate::data::DataConfig::default(),
            relay: RelayConfig::default(),
        }
    }
}

impl Config {
    /// A configuration for tests: loopback, port 0, multicast off, tight timeouts.
    pub fn for_tests() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            multicast: MulticastConfig {
                enabled: false,
                ..MulticastConfig::default()
            },
            ..Config::default()
        }
    }

    /// Checks every value; the error names the offending key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.network.is_empty() || self.network.len() > 64 {
            return Err(invalid("network", "must be 1 to 64 characters"));
        }
        if self.site.len() > 64 {
            return Err(invalid("site", "must be at most 64 characters"));
        }
        for b in &self.bootstrap {
            let ok = b
                .rsplit_once(':')
                .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
            if !ok {
                return Err(invalid("bootstrap", format!("{b:?} is not host:port")));
            }
        }
        if self.data.replicas == 0 || self.data.replicas > 16 {
            return Err(invalid("data.replicas", "must be between 1 and 16"));
        }
        let block = butter_proto::item::Config::default().block_size;
        if self.data.max_item_size < block || self.data.max_item_size > self.limits.max_body {
            return Err(invalid(
                "data.max_item_size",
                format!("must be between the block size ({block} B) and limits.max_body"),
            ));
        }
        if !(self.data.heartbeat_secs > 0.0 && self.data.heartbeat_secs <= 60.0) {
            return Err(invalid("data.heartbeat_secs", "must be in (0, 60]"));
        }
        if self.network_ca.is_some() && self.data_dir.is_none() {
            return Err(invalid(
                "network_ca",
                "private network mode needs data_dir (holding node.crt from `butter-node ca sign`)",
            ));
        }
        self.multicast.validate()?;
        self.relay.validate()?;
        self.limits.validate()
    }
}

/// Whether this node can be dialled from outside its LAN.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Reachability {
    /// Learn it: public once a peer of another site has dialled in. Default.
    #[default]
    Auto,
    /// Always announce itself as public (e.g. a node with a public address or a forwarded port).
    Public,
    /// Always announce itself as private: it keeps a relay and is reached through it.
    Private,
}

/// Relaying and hole punching: how nodes that cannot be dialled are reached.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RelayConfig {
    /// Whether this node can be dialled from outside its LAN. Default `auto`.
    pub reachability: Reachability,
    /// Relay traffic for other peers when reachable. Default `true`.
    pub enabled: bool,
    /// Try a hole punch to move a relayed connection onto a direct path. Default `true`.
    pub punch: bool,
    /// Peers that may attach to this node as their relay. Default 256.
    pub max_links: usize,
    /// Relayed sessions (pairs of end points) carried at once. Default 512.
    pub max_sessions: usize,
    /// Bytes one relayed session may carry. Default 256 MiB.
    pub session_bytes: u64,
    /// How long one relayed session may live. Default 3600 s.
    #[serde(with = "humantime_secs")]
    pub session_lifetime: Duration,
    /// Test only: a relay that alters (`tamper`) or repeats (`replay`) what it carries.
    #[doc(hidden)]
    #[serde(skip)]
    pub fault: Option<RelayFault>,
    /// Test only: drop inbound connections from addresses this node has not sent to, like a NAT
    /// with endpoint-independent mapping and address-and-port-dependent filtering.
    #[doc(hidden)]
    #[serde(skip)]
    pub simulate_nat: bool,
}

/// How a deliberately broken relay misbehaves (tests of end-to-end integrity only).
#[doc(hidden)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RelayFault {
    /// Flip a byte in every relayed packet.
    Tamper,
    /// Send every relayed packet twice.
    Replay,
}

impl Default for RelayConfig {
    fn default() -> Self {
        let core = butter_proto::relay::Limits::default();
        RelayConfig {
            reachability: Reachability::Auto,
            enabled: core.enabled,
            punch: true,
            max_links: core.max_links,
            max_sessions: core.max_sessions,
            session_bytes: core.session_bytes,
            session_lifetime: core.session_lifetime,
            fault: None,
            simulate_nat: false,
        }
    }
}

impl RelayConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.max_links > 65_536 {
            return Err(invalid("relay.max_links", "must be at most 65536"));
        }
        if self.max_sessions > 65_536 {
            return Err(invalid("relay.max_sessions", "must be at most 65536"));
        }
        if self.session_lifetime < Duration::from_secs(1) {
            return Err(invalid("relay.session_lifetime", "must be at least 1 s"));
        }
        Ok(())
    }

    /// The limits the relay core enforces.
    pub fn limits(&self) -> butter_proto::relay::Limits {
        butter_proto::relay::Limits {
            enabled: self.enabled,
            max_links: self.max_links,
            max_sessions: self.max_sessions,
            session_bytes: self.session_bytes,
            session_lifetime: self.session_lifetime,
            ..butter_proto::relay::Limits::default()
        }
    }
}

/// LAN discovery by UDP multicast.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MulticastConfig {
    /// On or off. Default on.
    pub enabled: bool,
    /// Group and port. Default `239.255.42.99:7099` (IPv4 site-local scope).
    pub group: SocketAddr,
    /// Interfaces to announce on, by name; empty = every multicast-capable IPv4 interface.
    pub interfaces: Vec<String>,
}

impl Default for MulticastConfig {
    fn default() -> Self {
        MulticastConfig {
            enabled: true,
            group: SocketAddr::from(([239, 255, 42, 99], 7099)),
            interfaces: Vec::new(),
        }
    }
}

impl MulticastConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if !self.group.ip().is_multicast() {
            return Err(invalid(
                "multicast.group",
                format!("{} is not a multicast address", self.group.ip()),
            ));
        }
        Ok(())
    }
}

/// Bounds on everything a peer can make this node hold or wait for.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Maximum size of a header frame. Default 64 KiB.
    pub max_frame: usize,
    /// Maximum size of a request or response body. Default 64 MiB.
    pub max_body: usize,
    /// Maximum concurrently open connections (in + out). Default 512.
    pub max_connections: usize,
    /// Maximum concurrent request streams a peer may open on one connection. Default 128.
    pub max_streams: u32,
    /// Sustained requests per second one peer may make. Default 5000.
    pub peer_rate: f64,
    /// Requests one peer may burst above its rate. Default 10000.
    pub peer_burst: f64,
    /// A peer refused this many times in a row is banned. Default 2000.
    pub ban_after: u32,
    /// A peer caught lying about data this many times (a wrong possession proof, bytes that do not
    /// match their id; each within 10 min of the last) is banned. Default 3.
    pub ban_after_lies: u32,
    /// How long a ban lasts. Default 60 s.
    #[serde(with = "humantime_secs")]
    pub ban_for: Duration,
    /// Deadline for a whole request (open, send, reply). Default 10 s.
    #[serde(with = "humantime_secs")]
    pub request_timeout: Duration,
    /// Deadline for a handshake. Default 5 s.
    #[serde(with = "humantime_secs")]
    pub handshake_timeout: Duration,
    /// A connection with no traffic for this long is closed. Default 30 s.
    #[serde(with = "humantime_secs")]
    pub idle_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_frame: butter_proto::wire::DEFAULT_MAX_FRAME,
            max_body: 64 << 20,
            max_connections: 512,
            max_streams: 128,
            peer_rate: 5000.0,
            peer_burst: 10_000.0,
            ban_after: 2000,
            ban_after_lies: 3,
            ban_for: Duration::from_secs(60),
            request_timeout: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(30),
        }
    }
}

impl Limits {
    fn validate(&self) -> Result<(), ConfigError> {
        if !(256..=16 << 20).contains(&self.max_frame) {
            return Err(invalid(
                "limits.max_frame",
                "must be between 256 B and 16 MiB",
            ));
        }
        if self.max_body == 0 || self.max_body > 1 << 30 {
            return Err(invalid("limits.max_body", "must be between 1 B and 1 GiB"));
        }
        if self.max_connections == 0 {
            return Err(invalid("limits.max_connections", "must be at least 1"));
        }
        if !(self.peer_rate > 0.0 && self.peer_burst >= 1.0) {
            return Err(invalid(
                "limits.peer_rate",
                "peer_rate must be > 0 and peer_burst >= 1",
            ));
        }
        if self.max_streams == 0 {
            return Err(invalid("limits.max_streams", "must be at least 1"));
        }
        for (key, d) in [
            ("limits.request_timeout", self.request_timeout),
            ("limits.handshake_timeout", self.handshake_timeout),
            ("limits.idle_timeout", self.idle_timeout),
        ] {
            if d.is_zero() || d > Duration::from_secs(3600) {
                return Err(invalid(key, "must be between 1 ms and 1 h"));
            }
        }
        Ok(())
    }
}

/// Durations in config files as seconds (fractions allowed): `request_timeout = 2.5`.
mod humantime_secs {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let secs = f64::deserialize(d)?;
        Duration::try_from_secs_f64(secs).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        Config::default().validate().unwrap();
        Config::for_tests().validate().unwrap();
    }

    #[test]
    fn errors_name_the_key() {
        let mut c = Config::default();
        c.data.max_item_size = 1000;
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .starts_with("data.max_item_size")
        );
        let mut c = Config::default();
        c.limits.max_frame = 10;
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .starts_with("limits.max_frame")
        );
        let c = Config {
            bootstrap: vec!["nohost".into()],
            ..Config::default()
        };
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .starts_with("bootstrap")
        );
        let c = Config {
            multicast: MulticastConfig {
                group: "10.0.0.1:1".parse().unwrap(),
                ..Default::default()
            },
            ..Config::default()
        };
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .starts_with("multicast.group")
        );
    }
}
