//! Packet loss on one node: nftables rules in the container's network namespace, installed from
//! the host (`nsenter -t <pid> -n nft …`), because the image is `FROM scratch` and has no tools.
//!
//! The rules drop `pct` % of UDP both ways (QUIC between nodes and the discovery beacons) with
//! `numgen random`; TCP, i.e. the HTTP API the driver observes the node through, is left alone.
//! (netem is missing on this machine's kernel, and a TCP proxy cannot shape QUIC: DESIGN §8.)
//! Everything lives in one table, `inet butter_chaos`, so clearing it is one `delete table`.

use std::io::Write;
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

/// The nftables table the driver owns inside a container's namespace.
pub const TABLE: &str = "butter_chaos";

/// The ruleset for `pct` % loss (idempotent: an existing table is replaced).
pub fn ruleset(pct: u8) -> String {
    format!(
        "table inet {TABLE}\n\
         delete table inet {TABLE}\n\
         table inet {TABLE} {{\n\
         \tchain input {{ type filter hook input priority -10; policy accept; meta l4proto udp numgen random mod 100 < {pct} drop; }}\n\
         \tchain output {{ type filter hook output priority -10; policy accept; meta l4proto udp numgen random mod 100 < {pct} drop; }}\n\
         }}\n"
    )
}

/// The ruleset that removes the table whether or not it exists.
pub fn clear_ruleset() -> String {
    format!("table inet {TABLE}\ndelete table inet {TABLE}\n")
}

/// Runs `nft -f -` with `script` inside the network namespace of host process `pid`.
fn nft(pid: u32, script: &str) -> Result<()> {
    let mut child = Command::new("nsenter")
        .args(["-t", &pid.to_string(), "-n", "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot run nsenter (util-linux) and nft (nftables); both are needed, as root")?;
    child
        .stdin
        .take()
        .context("no stdin for nft")?
        .write_all(script.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "nft in the namespace of pid {pid} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Whether `nsenter` and `nft` can run here (`heal` skips loss rules without them).
pub fn available() -> bool {
    let ok = |prog: &str, arg: &str| {
        Command::new(prog)
            .arg(arg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    ok("nsenter", "--version") && ok("nft", "--version")
}

/// Drops `pct` % of the UDP of the namespace of `pid`.
pub fn apply(pid: u32, pct: u8) -> Result<()> {
    nft(pid, &ruleset(pct))
}

/// Removes the loss rules from the namespace of `pid` (no-op if there are none).
pub fn clear(pid: u32) -> Result<()> {
    nft(pid, &clear_ruleset())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ruleset_drops_udp_both_ways_at_the_given_rate() {
        let r = ruleset(30);
        assert_eq!(r.matches("numgen random mod 100 < 30 drop").count(), 2);
        assert!(r.contains("hook input") && r.contains("hook output"));
        assert!(
            r.starts_with("table inet butter_chaos\ndelete table"),
            "idempotent"
        );
        assert!(!r.contains("tcp"), "the HTTP API stays reachable");
    }
}
