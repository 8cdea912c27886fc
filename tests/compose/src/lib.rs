//! The compose tier: `tests/compose.rs` brings up the docker compose testbed (3 LANs, a WAN,
//! dual-homed gateways), checks multicast stays inside each LAN, every dashboard query against a
//! real Prometheus, a killed node leaving its peers' tables, and `butter-kit` itself at scale.
//! This crate holds only those tests; the driver is `kit/cli` (`butter-kit`), what it shares with
//! the other tools is `kit/support` (`butter-testbed`). `make test-compose` runs it.
