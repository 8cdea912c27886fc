//! What `compose/docker-compose.yml` builds, named once for the driver and the tests.

use std::path::{Path, PathBuf};

/// Compose project name (also in `compose/.env`, for users who run compose by hand).
pub const DEFAULT_PROJECT: &str = "butter";

/// The LAN networks, which are also the LAN node services and the nodes' site labels.
pub const LANS: [&str; 3] = ["lan-a", "lan-b", "lan-c"];

/// The WAN network the gateways share.
pub const WAN: &str = "wan";

/// Nodes per LAN in the compose file (`scale:`), gateways not counted.
pub const DEFAULT_SCALE: usize = 4;

/// The node's HTTP port inside every container (`BUTTER_HTTP=0.0.0.0:7100`).
pub const HTTP_PORT: u16 = 7100;

/// Image the compose file runs unless `BUTTER_IMAGE` says otherwise.
pub const DEFAULT_IMAGE: &str = "butter-node:local";

/// The gateway service of `lan`: `lan-a` → `gw-a`.
pub fn gateway_of(lan: &str) -> String {
    format!("gw-{}", lan.trim_start_matches("lan-"))
}

/// The compose file under the repository root.
pub fn compose_file(root: &Path) -> PathBuf {
    root.join("compose").join("docker-compose.yml")
}

/// The shipped Prometheus config (for the `monitoring` profile).
pub fn prometheus_config(root: &Path) -> PathBuf {
    root.join("compose")
        .join("prometheus")
        .join("prometheus.yml")
}

/// The dashboards directory.
pub fn dashboards_dir(root: &Path) -> PathBuf {
    root.join("dashboards")
}

/// The compose project: `BUTTER_COMPOSE_PROJECT` or [`DEFAULT_PROJECT`].
pub fn project() -> String {
    std::env::var("BUTTER_COMPOSE_PROJECT")
        .ok()
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| DEFAULT_PROJECT.to_string())
}

/// The node image: `BUTTER_IMAGE` or [`DEFAULT_IMAGE`].
pub fn image() -> String {
    std::env::var("BUTTER_IMAGE")
        .ok()
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| DEFAULT_IMAGE.to_string())
}

/// The repository root for tests: two levels above this crate's manifest.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateways_follow_lan_names() {
        assert_eq!(gateway_of("lan-b"), "gw-b");
    }

    #[test]
    fn repo_root_holds_the_compose_file() {
        assert!(compose_file(&repo_root()).is_file());
        assert!(prometheus_config(&repo_root()).is_file());
    }
}
