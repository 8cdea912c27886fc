//! Driving `netns/lab.sh`: bring a lab up, name its hosts, kill and restart nodes, take it down.
//!
//! Only one lab can exist on a machine (namespace names and the admin link are fixed), so a
//! [`Lab`] holds an exclusive file lock from `up` to drop: tests and benchmarks in other
//! processes wait for it instead of tearing each other's lab down.

use std::collections::HashMap;
use std::fs::{self, File};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};

use crate::node_api::{self, Peer};

/// HTTP port of every node (bound on the host's own address).
pub const HTTP_PORT: u16 = 7100;

/// Set to `1` to turn "skipped" into a failure (CI, once the daemon is built).
pub const REQUIRE_ENV: &str = "BUTTER_NETNS_REQUIRE";
/// Path of the butter-node binary; default `target/release/butter-node`, else `target/debug`.
pub const BIN_ENV: &str = "BUTTER_NODE_BIN";
/// Set to `1` to leave the lab up after a test or bench, for inspection with `lab.sh status`.
pub const KEEP_ENV: &str = "BUTTER_NETNS_KEEP";

/// Which hosts get bootstrap peers (`lab.sh up --bootstrap`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bootstrap {
    /// Multicast only.
    None,
    /// Host 1 of subnet N bootstraps from host 1 of subnet N+1 (cyclically).
    OnePerSubnet,
    /// Every host bootstraps from host 1 of every other subnet.
    All,
    /// NAT topology: every LAN host bootstraps from the first public host.
    Public,
}

impl Bootstrap {
    fn as_arg(self) -> &'static str {
        match self {
            Bootstrap::None => "none",
            Bootstrap::OnePerSubnet => "one-per-subnet",
            Bootstrap::All => "all",
            Bootstrap::Public => "public",
        }
    }
}

/// What to build.
#[derive(Debug, Clone)]
pub struct Config {
    /// Number of subnets.
    pub subnets: u32,
    /// Hosts per subnet.
    pub hosts: u32,
    /// Bootstrap mode.
    pub bootstrap: Bootstrap,
    /// `--loss` specs, `[WHERE=]PCT`.
    pub loss: Vec<String>,
    /// Extra `butter-node run` arguments.
    pub node_args: Vec<String>,
    /// Seconds `up` waits for every node's `/health` (0: return right after the start, for
    /// benchmarks that time the start themselves).
    pub wait_secs: u32,
    /// Topology arguments (`--topology nat --public 1 --nat s1=eim …`); empty: routed.
    pub topology: Vec<String>,
    /// Start every node in `up` (default); `false` builds the topology only, for tests that start
    /// nodes themselves ([`Lab::start_many`]).
    pub start: bool,
}

impl Config {
    /// `subnets` × `hosts`, no bootstrap, no loss.
    pub fn new(subnets: u32, hosts: u32) -> Self {
        Self {
            subnets,
            hosts,
            bootstrap: Bootstrap::None,
            loss: Vec::new(),
            node_args: Vec::new(),
            wait_secs: 30,
            topology: Vec::new(),
            start: true,
        }
    }

    /// The NAT topology: a public segment (subnet 0) with `public` hosts, every LAN behind its
    /// own NAT gateway of type `nats[i]` (`eim` or `symmetric`) for subnet `i + 1`; LAN hosts
    /// bootstrap from the first public host.
    pub fn nat(mut self, public: u32, nats: &[&str]) -> Self {
        self.topology = vec!["--topology".into(), "nat".into(), "--public".into()];
        self.topology.push(public.to_string());
        for (i, n) in nats.iter().enumerate() {
            self.topology.push("--nat".into());
            self.topology.push(format!("s{}={n}", i + 1));
        }
        self.bootstrap = Bootstrap::Public;
        self
    }

    /// Sets the bootstrap mode.
    pub fn bootstrap(mut self, bootstrap: Bootstrap) -> Self {
        self.bootstrap = bootstrap;
        self
    }

    /// Adds a `--loss` spec.
    pub fn loss(mut self, spec: impl Into<String>) -> Self {
        self.loss.push(spec.into());
        self
    }
}

/// Where the repository, the lab script and the node binary are; found by [`Environment::detect`].
#[derive(Debug, Clone)]
pub struct Environment {
    /// Repository root.
    pub repo: PathBuf,
    /// `netns/lab.sh`.
    pub script: PathBuf,
    /// The lab's run dir (`netns/run`).
    pub run_dir: PathBuf,
    /// butter-node binary.
    pub bin: PathBuf,
}

impl Environment {
    /// Checks that the lab can run here: root, the tools, the binary. `Err` is the reason to skip.
    pub fn detect() -> std::result::Result<Self, String> {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let repo = repo.canonicalize().unwrap_or(repo);
        if !is_root() {
            return Err("the netns lab needs root (network namespaces)".into());
        }
        for tool in ["ip", "nft", "tc", "curl", "jq", "flock"] {
            if !on_path(tool) {
                return Err(format!(
                    "tool `{tool}` is missing (apt-get install iproute2 nftables curl jq)"
                ));
            }
        }
        let bin = match std::env::var_os(BIN_ENV) {
            Some(path) => PathBuf::from(path),
            None => {
                let release = repo.join("target/release/butter-node");
                if release.exists() {
                    release
                } else {
                    repo.join("target/debug/butter-node")
                }
            }
        };
        if !bin.exists() {
            return Err(format!(
                "butter-node not found at {} (cargo build -p butter-node, or set {BIN_ENV})",
                bin.display()
            ));
        }
        Ok(Self {
            script: repo.join("netns/lab.sh"),
            run_dir: repo.join("netns/run"),
            repo,
            bin,
        })
    }

    /// [`detect`](Self::detect), printing why `what` is skipped; panics instead when
    /// `BUTTER_NETNS_REQUIRE=1`, so CI cannot pass by skipping.
    pub fn detect_or_skip(what: &str) -> Option<Self> {
        match Self::detect() {
            Ok(env) => Some(env),
            Err(reason) if std::env::var(REQUIRE_ENV).is_ok_and(|v| v == "1") => {
                panic!("{what}: cannot run and {REQUIRE_ENV}=1: {reason}")
            }
            Err(reason) => {
                eprintln!("SKIPPED {what}: {reason}");
                None
            }
        }
    }
}

fn is_root() -> bool {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false)
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(tool).is_file()))
        .unwrap_or(false)
}

/// UDP datagram counts on one bridge.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Traffic {
    /// To multicast groups (beacons).
    pub multicast: u64,
    /// Unicast (QUIC: dials, exchanges, probes).
    pub unicast: u64,
}

impl std::ops::Sub for Traffic {
    type Output = Traffic;

    fn sub(self, earlier: Traffic) -> Traffic {
        Traffic {
            multicast: self.multicast.saturating_sub(earlier.multicast),
            unicast: self.unicast.saturating_sub(earlier.unicast),
        }
    }
}

/// One host namespace of the lab.
#[derive(Debug, Clone)]
pub struct Host {
    /// Namespace name, e.g. `bt-s1h2`.
    pub name: String,
    /// Subnet number, from 1.
    pub subnet: u32,
    /// The host's address (QUIC on port 7000, HTTP on 7100).
    pub addr: Ipv4Addr,
    /// The node's HTTP API.
    pub http: SocketAddr,
}

/// A running lab. Dropping it takes the lab down (unless `BUTTER_NETNS_KEEP=1`).
#[derive(Debug)]
pub struct Lab {
    env: Environment,
    hosts: Vec<Host>,
    /// Node ids by host index, learnt from `/status` ([`Lab::identify`]).
    ids: HashMap<String, usize>,
    by_ip: HashMap<IpAddr, usize>,
    started: Instant,
    _lock: File,
}

impl Lab {
    /// Takes the lab lock, tears down whatever lab exists, builds `config`, starts every node at
    /// one instant and waits for their `/health`.
    pub fn up(env: &Environment, config: &Config) -> Result<Self> {
        fs::create_dir_all(&env.run_dir)?;
        let lock =
            File::create(env.run_dir.join("harness.lock")).context("create the harness lock")?;
        lock.lock().context("take the harness lock")?;
        let mut lab = Self {
            env: env.clone(),
            hosts: Vec::new(),
            ids: HashMap::new(),
            by_ip: HashMap::new(),
            started: Instant::now(),
            _lock: lock,
        };
        lab.script(["down"])?;
        let mut args = vec![
            "up".to_string(),
            "--subnets".into(),
            config.subnets.to_string(),
            "--hosts".into(),
            config.hosts.to_string(),
            "--bootstrap".into(),
            config.bootstrap.as_arg().into(),
            "--bin".into(),
            env.bin.display().to_string(),
            "--wait".into(),
            config.wait_secs.to_string(),
        ];
        for spec in &config.loss {
            args.extend(["--loss".into(), spec.clone()]);
        }
        args.extend(config.topology.iter().cloned());
        if !config.start {
            args.push("--no-start".into());
        }
        if !config.node_args.is_empty() {
            args.push("--".into());
            args.extend(config.node_args.iter().cloned());
        }
        lab.script(&args)?;
        lab.hosts = lab.read_hosts()?;
        lab.by_ip = lab
            .hosts
            .iter()
            .enumerate()
            .map(|(i, h)| (IpAddr::V4(h.addr), i))
            .collect();
        if config.start {
            lab.started = lab.read_started()?;
        }
        Ok(lab)
    }

    /// Runs `lab.sh ARGS`, failing with its stderr.
    pub fn script<I, S>(&self, args: I) -> Result<String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let args: Vec<_> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
        let output = Command::new(&self.env.script)
            .args(&args)
            .env("BUTTER_LAB_RUN_DIR", &self.env.run_dir)
            .output()
            .with_context(|| format!("run {}", self.env.script.display()))?;
        if !output.status.success() {
            bail!(
                "lab.sh {:?} failed ({}):\n{}",
                args,
                output.status,
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    fn read_hosts(&self) -> Result<Vec<Host>> {
        let listing = self.script(["hosts"])?;
        listing
            .lines()
            .map(|line| {
                let mut f = line.split_whitespace();
                let (Some(name), Some(addr), Some(site)) = (f.next(), f.next(), f.next()) else {
                    bail!("bad `lab.sh hosts` line {line:?}");
                };
                let addr: Ipv4Addr = addr.parse()?;
                let subnet = site.trim_start_matches('s').parse()?;
                Ok(Host {
                    name: name.into(),
                    subnet,
                    addr,
                    http: SocketAddr::new(addr.into(), HTTP_PORT),
                })
            })
            .collect()
    }

    /// The instant every node was released from the start barrier, from `started_at_ms`.
    fn read_started(&self) -> Result<Instant> {
        let text = fs::read_to_string(self.env.run_dir.join("started_at_ms"))?;
        let at = UNIX_EPOCH + Duration::from_millis(text.trim().parse()?);
        let ago = SystemTime::now().duration_since(at).unwrap_or_default();
        Ok(Instant::now().checked_sub(ago).unwrap_or_else(Instant::now))
    }

    /// When the nodes were (re)started, all at once.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// The hosts, subnet by subnet, host by host.
    pub fn hosts(&self) -> &[Host] {
        &self.hosts
    }

    /// Index of the host named `name` (`s1h2` or `bt-s1h2`).
    pub fn host_index(&self, name: &str) -> Option<usize> {
        let name = name.strip_prefix("bt-").unwrap_or(name);
        self.hosts
            .iter()
            .position(|h| h.name.strip_prefix("bt-") == Some(name))
    }

    /// Learns every node's id from `/status`, so peers can be matched by id, not only by address.
    pub fn identify(&mut self) -> Result<()> {
        self.ids.clear();
        for (i, host) in self.hosts.iter().enumerate() {
            let status = node_api::status(host.http)?;
            self.ids.insert(status.id, i);
        }
        Ok(())
    }

    /// Id of host `i`, if [`identify`](Self::identify) learnt it.
    pub fn id_of(&self, i: usize) -> Option<&str> {
        self.ids
            .iter()
            .find(|(_, h)| **h == i)
            .map(|(id, _)| id.as_str())
    }

    /// Which lab host a peer entry is: by id when known, else by address.
    pub fn host_of(&self, peer: &Peer) -> Option<usize> {
        self.ids
            .get(&peer.id)
            .copied()
            .or_else(|| peer.ips().find_map(|ip| self.by_ip.get(&ip).copied()))
    }

    /// SIGKILLs the node of host `i`.
    pub fn kill(&self, i: usize) -> Result<()> {
        self.script(["kill", self.hosts[i].name.as_str(), "KILL"])
            .map(drop)
    }

    /// Starts the node of host `i` again (keeping its data, so its id) without waiting for it;
    /// returns when it was released.
    pub fn start(&self, i: usize) -> Result<Instant> {
        self.script(["start", "--wait", "0", self.hosts[i].name.as_str()])?;
        self.read_started()
    }

    /// Starts the nodes of `hosts` at one instant, waiting up to `wait_secs` for their `/health`;
    /// returns the instant they were released (also [`started`](Self::started) from then on).
    pub fn start_many(&mut self, hosts: &[usize], wait_secs: u32) -> Result<Instant> {
        let mut args = vec!["start".to_string(), "--wait".into(), wait_secs.to_string()];
        args.extend(hosts.iter().map(|i| self.hosts[*i].name.clone()));
        self.script(&args)?;
        self.started = self.read_started()?;
        Ok(self.started)
    }

    /// Stops every node, wipes their data and starts them all again at one instant, waiting up
    /// to `wait_secs` for their `/health`. Node ids change: call [`identify`](Self::identify)
    /// again.
    pub fn restart(&mut self, wait_secs: u32) -> Result<()> {
        self.script(["restart", "--wait", &wait_secs.to_string()])?;
        self.ids.clear();
        self.started = self.read_started()?;
        Ok(())
    }

    /// UDP datagrams sent into subnet `subnet`'s bridge since the lab was built, counted once
    /// per frame as it enters the bridge.
    pub fn traffic(&self, subnet: u32) -> Result<Traffic> {
        let out = self.script(["traffic", &format!("s{subnet}")])?;
        let mut f = out.split_whitespace().map(str::parse::<u64>);
        match (f.next(), f.next()) {
            (Some(Ok(multicast)), Some(Ok(unicast))) => Ok(Traffic { multicast, unicast }),
            _ => bail!("bad `lab.sh traffic` output {out:?}"),
        }
    }

    /// Sets packet loss on a host link, a subnet (`s1`) or `all`.
    pub fn set_loss(&self, target: &str, pct: u32) -> Result<()> {
        self.script(["loss", target, &pct.to_string()]).map(drop)
    }

    /// Every node's `/peers`, fetched in parallel (`None` for a node that did not answer).
    pub fn poll(&self, hosts: &[usize]) -> Vec<Option<Vec<Peer>>> {
        std::thread::scope(|scope| {
            let handles: Vec<_> = hosts
                .iter()
                .map(|&i| {
                    let http = self.hosts[i].http;
                    scope.spawn(move || node_api::peers(http).ok())
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().ok().flatten())
                .collect()
        })
    }

    /// Where node logs are: `<run dir>/<namespace>/node.log`.
    pub fn log_path(&self, i: usize) -> PathBuf {
        self.env.run_dir.join(&self.hosts[i].name).join("node.log")
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if std::env::var(KEEP_ENV).is_ok_and(|v| v == "1") {
            eprintln!("{KEEP_ENV}=1: leaving the lab up; `netns/lab.sh down` removes it");
            return;
        }
        if let Err(e) = self.script(["down"]) {
            eprintln!("lab down failed: {e:#}");
        }
    }
}
