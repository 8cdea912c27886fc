//! The nodes: `butter-node` processes on loopback, each with its own data directory, HTTP port
//! and QUIC port kept across restarts; bootstrap to the first few nodes (the seeds); no multicast.

use std::fs::OpenOptions;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// How a node is stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Stop {
    /// `kill -9`: no hand-off, no goodbye.
    Kill,
    /// SIGTERM: graceful shutdown with hand-off (SIGKILL after 10 s).
    Term,
}

/// One node slot: its ports and directory stay, its process comes and goes.
pub struct Node {
    /// Index in the cluster.
    pub index: usize,
    /// HTTP API address.
    pub http: SocketAddr,
    /// QUIC address.
    pub quic: SocketAddr,
    data_dir: PathBuf,
    log: PathBuf,
    site: String,
    child: Option<Child>,
    /// Times the process was started.
    pub starts: usize,
}

impl Node {
    /// The process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether a process is running for this slot.
    pub fn is_up(&self) -> bool {
        self.child.is_some()
    }
}

/// The whole set of nodes.
pub struct Cluster {
    bin: PathBuf,
    seeds: String,
    /// The slots.
    pub nodes: Vec<Node>,
}

/// A port free on both TCP (HTTP) and UDP (QUIC) on 127.0.0.1.
fn free_port() -> Result<u16> {
    for _ in 0..1000 {
        let t = std::net::TcpListener::bind("127.0.0.1:0")?;
        let port = t.local_addr()?.port();
        if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no port free on both TCP and UDP")
}

impl Cluster {
    /// Lays out `n` slots under `dir` (data in `dir/n<i>`, logs in `dir/n<i>.log`) on `sites`
    /// site labels, the first `seeds` being everyone's bootstrap peers. Starts nothing.
    pub fn new(bin: &Path, dir: &Path, n: usize, sites: usize, seeds: usize) -> Result<Cluster> {
        let mut nodes = Vec::with_capacity(n);
        for index in 0..n {
            let (q, h) = (free_port()?, free_port()?);
            nodes.push(Node {
                index,
                http: SocketAddr::from(([127, 0, 0, 1], h)),
                quic: SocketAddr::from(([127, 0, 0, 1], q)),
                data_dir: dir.join(format!("n{index}")),
                log: dir.join(format!("n{index}.log")),
                site: format!("site-{}", index % sites.max(1)),
                child: None,
                starts: 0,
            });
        }
        let seeds = nodes
            .iter()
            .take(seeds.max(1))
            .map(|n| n.quic.to_string())
            .collect::<Vec<_>>()
            .join(",");
        Ok(Cluster {
            bin: bin.to_path_buf(),
            seeds,
            nodes,
        })
    }

    /// Starts slot `i`'s process (warn-level logs appended to its log file).
    pub fn start(&mut self, i: usize) -> Result<()> {
        let node = &mut self.nodes[i];
        if node.child.is_some() {
            return Ok(());
        }
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)
            .with_context(|| format!("opening {}", node.log.display()))?;
        let child = Command::new(&self.bin)
            .args(["run", "--no-multicast", "--log-level", "warn"])
            .args(["--listen", &node.quic.to_string()])
            .args(["--http", &node.http.to_string()])
            .arg("--data-dir")
            .arg(&node.data_dir)
            .args(["--site", &node.site])
            .args(["--bootstrap", &self.seeds])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", self.bin.display()))?;
        node.child = Some(child);
        node.starts += 1;
        Ok(())
    }

    /// Stops slot `i`'s process and waits for it to exit.
    pub fn stop(&mut self, i: usize, how: Stop) -> Result<()> {
        let Some(mut child) = self.nodes[i].child.take() else {
            return Ok(());
        };
        match how {
            Stop::Kill => child.kill()?,
            Stop::Term => {
                // No libc (unsafe is forbidden): the kill(1) utility sends the signal.
                let sent = Command::new("kill")
                    .args(["-TERM", &child.id().to_string()])
                    .status()
                    .is_ok_and(|s| s.success());
                let deadline = Instant::now() + Duration::from_secs(10);
                while sent && Instant::now() < deadline {
                    if child.try_wait()?.is_some() {
                        return Ok(());
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                child.kill()?;
            }
        }
        child.wait()?;
        Ok(())
    }

    /// Notices processes that exited on their own (a crash): returns their slots, now down.
    pub fn reap(&mut self) -> Vec<usize> {
        let mut out = Vec::new();
        for n in &mut self.nodes {
            if let Some(c) = &mut n.child {
                if matches!(c.try_wait(), Ok(Some(_))) {
                    n.child = None;
                    out.push(n.index);
                }
            }
        }
        out
    }

    /// Stops every node: SIGTERM to all at once, SIGKILL to any still running after 10 s.
    pub fn stop_all(&mut self) {
        for n in &self.nodes {
            if let Some(pid) = n.pid() {
                let _ = Command::new("kill")
                    .args(["-TERM", &pid.to_string()])
                    .status();
            }
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        for n in &mut self.nodes {
            let Some(mut child) = n.child.take() else {
                continue;
            };
            while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            if let Some(mut c) = n.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

/// Resident set size of process `pid` and its anonymous part (heap, stacks: what a leak grows;
/// the rest is the binary's pages, touched as code runs for the first time), in KiB (`VmRSS` and
/// `RssAnon` in `/proc/<pid>/status`).
pub fn rss_kib(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
    };
    Some((field("VmRSS:")?, field("RssAnon:")?))
}
