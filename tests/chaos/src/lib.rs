//! The chaos tier: `tests/chaos.rs` runs each fault of `butter-chaos` once against the live
//! compose network, then the CI scenario (`compose/chaos/ci.toml`), and checks that no item is
//! lost. This crate holds only that test; the driver is `kit/chaos`, what it shares with the
//! other tools is `kit/support` (`butter-testbed`). `make test-chaos` runs it.
