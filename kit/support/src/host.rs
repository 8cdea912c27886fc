//! The machine the containers run on: limits that every container shares.
//!
//! The kernel's IPv4 neighbour (ARP) table is one table for the whole machine: every network
//! namespace, so every container, counts against `net.ipv4.neigh.default.gc_thresh3` (1024 by
//! default). Past it the kernel refuses to resolve new neighbours ("neighbor table overflow!" in
//! dmesg) and drops their datagrams: on one LAN of 40 nodes, 33 filled the table talking to each
//! other and the last 7 could reach nobody. A LAN node may resolve every node of its LAN and its
//! gateway, so the network needs about `LANs × (scale + 1) × (scale + 3)` entries.

use std::path::Path;

use anyhow::{Result, bail};

const DIR: &str = "/proc/sys/net/ipv4/neigh/default";

/// Neighbour entries `lans` LANs of `scale` nodes (plus a gateway each) may need, with room for
/// everything else the machine runs.
pub fn neighbour_entries(lans: usize, scale: usize) -> u64 {
    (lans * (scale + 1) * (scale + 3) + 1024) as u64
}

/// Makes sure the neighbour table holds `need` entries: raises `gc_thresh2` to `need` and
/// `gc_thresh3` to twice that when they are lower and this process may (root), never lowers
/// them. Returns what it changed, for the user; fails with the command to run when the limits
/// are too low and cannot be raised from here.
pub fn ensure_neighbour_capacity(need: u64) -> Result<Option<String>> {
    ensure_in(Path::new(DIR), need)
}

fn ensure_in(dir: &Path, need: u64) -> Result<Option<String>> {
    let read = |name: &str| -> Option<u64> {
        std::fs::read_to_string(dir.join(name))
            .ok()?
            .trim()
            .parse()
            .ok()
    };
    let (Some(t2), Some(t3)) = (read("gc_thresh2"), read("gc_thresh3")) else {
        return Ok(None); // not Linux, or not visible here: nothing to check
    };
    if t2 >= need && t3 >= 2 * need {
        return Ok(None);
    }
    let (want2, want3) = (t2.max(need), t3.max(2 * need));
    let write = |name: &str, v: u64| std::fs::write(dir.join(name), v.to_string());
    match write("gc_thresh3", want3).and_then(|()| write("gc_thresh2", want2)) {
        Ok(()) => Ok(Some(format!(
            "raised the machine's neighbour table limits for this network (shared by every \
             container): net.ipv4.neigh.default.gc_thresh2 {t2} -> {want2}, gc_thresh3 {t3} -> \
             {want3}"
        ))),
        Err(e) => bail!(
            "this network needs about {need} neighbour (ARP) entries but the machine's table \
             holds {t3} ({e}); without more, nodes past the limit reach nobody. Run: sudo sysctl \
             -w net.ipv4.neigh.default.gc_thresh2={want2} net.ipv4.neigh.default.gc_thresh3={want3}"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(t2: u64, t3: u64) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("gc_thresh2"), format!("{t2}\n")).unwrap();
        std::fs::write(d.path().join("gc_thresh3"), format!("{t3}\n")).unwrap();
        d
    }

    fn value(d: &tempfile::TempDir, name: &str) -> u64 {
        std::fs::read_to_string(d.path().join(name))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    #[test]
    fn raises_limits_that_are_too_low_and_never_lowers_them() {
        let need = neighbour_entries(3, 40);
        assert_eq!(need, 3 * 41 * 43 + 1024);
        let d = dir(512, 1024);
        let said = ensure_in(d.path(), need).unwrap().unwrap();
        assert!(said.contains("gc_thresh3 1024 ->"), "{said}");
        assert_eq!(
            (value(&d, "gc_thresh2"), value(&d, "gc_thresh3")),
            (need, 2 * need)
        );

        let d = dir(100_000, 200_000);
        assert_eq!(ensure_in(d.path(), need).unwrap(), None);
        assert_eq!(value(&d, "gc_thresh3"), 200_000);
    }

    #[test]
    fn missing_files_are_not_an_error() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(ensure_in(d.path(), 10).unwrap(), None);
    }
}
