//! The netns lab as a chaos [`Backend`]: nodes are the `butter-node` processes `netns/lab.sh`
//! runs in host namespaces (`bt-s1h2`), found through the lab's pid files, and faults go through
//! the lab script, the lab's single entry point (root):
//!
//! | fault | lab.sh | what the node sees |
//! |---|---|---|
//! | kill | `kill sNhM KILL` | SIGKILL: a crash; the namespace and the data stay |
//! | pause | `kill sNhM STOP` (`CONT` to thaw) | frozen, like the cgroup freezer |
//! | restart | `stop sNhM`, `start sNhM` | SIGTERM (5 s grace), relaunched with its data |
//! | partition | `partition sN` (`unpartition`) | nftables on the router (or NAT gateway) |
//! | loss | `loss sNhM PCT` | nftables on the host's bridge port, both ways |
//!
//! Nodes are presented as [`Container`] records named as on compose (`lan-a-1` for host 2 of a
//! site with a gateway, `gw-a` for its host 1), so an experiment's named targets mean the same
//! node on both backends. Lab commands run in their own process group: a Ctrl-C meant for the
//! driver must not reach the nodes they start.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use butter_testbed::engine::{Container, Role, State};
use butter_testbed::network;
use butter_testbed::topology::{Nat, Topology};

use crate::backend::Backend;
use crate::faults::Healed;

/// Namespace prefix of everything the lab makes.
const PREFIX: &str = "bt-";
/// Host M of subnet N is 10.N.0.(HOST_BASE + M); the public segment (subnet 0) 198.51.100.x.
const HOST_BASE: u8 = 10;
/// How long `start` waits for a relaunched node's `/health`.
const START_WAIT_SECS: u32 = 30;

/// One lab subnet: a topology site.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subnet {
    /// Lab subnet number (`sN`; 0 is the public segment of a NAT lab).
    pub index: usize,
    /// The site's name (the nodes' site label).
    pub site: String,
    /// Hosts in the subnet, its gateway (host 1) included.
    pub hosts: usize,
    /// Whether host 1 is the site's gateway.
    pub gateway: bool,
    /// The topology's own link loss on the site, percent (what a heal restores).
    pub loss: u8,
}

/// The running netns lab of one topology.
#[derive(Debug)]
pub struct Lab {
    root: PathBuf,
    run_dir: PathBuf,
    subnets: Vec<Subnet>,
}

impl Lab {
    /// The lab `netns/lab.sh` under `root` runs for `topology` (brought up with the plan of
    /// [`butter_testbed::topology::render::netns::render`]). The run directory is
    /// `$BUTTER_LAB_RUN_DIR` or `netns/run`, as for the script.
    pub fn new(root: &Path, topology: &Topology) -> Result<Self> {
        let plan = butter_testbed::topology::render::netns::render(topology, false)?;
        let subnets = plan
            .subnets
            .iter()
            .map(|(index, name)| {
                let site = topology
                    .site(name)
                    .with_context(|| format!("no site {name} in the topology"))?;
                // On a NATed lab the public segment's nodes are all public: no gateway there.
                let gateway = site.gateway && !(*index == 0 && site.nat == Nat::None);
                Ok(Subnet {
                    index: *index,
                    site: name.clone(),
                    hosts: site.nodes + usize::from(gateway),
                    gateway,
                    loss: topology
                        .link(name)
                        .and_then(|l| l.loss)
                        .map_or(0, |l| l as u8),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let run_dir = std::env::var_os("BUTTER_LAB_RUN_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("netns").join("run"));
        Ok(Lab {
            root: root.to_path_buf(),
            run_dir,
            subnets,
        })
    }

    /// The lab's subnets.
    pub fn subnets(&self) -> &[Subnet] {
        &self.subnets
    }

    /// Runs `lab.sh ARGS…` in its own process group, its output captured (stderr shown on
    /// failure); returns its stdout.
    fn lab_out(&self, args: &[&str]) -> Result<String> {
        let script = self.root.join("netns").join("lab.sh");
        let out = Command::new(&script)
            .args(args)
            .current_dir(&self.root)
            .process_group(0)
            .output()
            .with_context(|| format!("running {}", script.display()))?;
        if !out.status.success() {
            bail!(
                "`netns/lab.sh {}` failed ({}): {}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn lab(&self, args: &[&str]) -> Result<()> {
        self.lab_out(args).map(drop)
    }

    fn subnet_of(&self, site: &str) -> Result<&Subnet> {
        self.subnets
            .iter()
            .find(|s| s.site == site)
            .with_context(|| {
                format!(
                    "no site {site:?} in the lab; it has {}",
                    self.subnets
                        .iter()
                        .map(|s| s.site.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })
    }

    /// What the driver knows of one host: its record as a [`Container`].
    fn node(&self, s: &Subnet, h: usize) -> Container {
        let ns = format!("{PREFIX}s{}h{h}", s.index);
        let (role, service, number) = if s.gateway && h == 1 {
            (Role::Gateway, network::gateway_of(&s.site), 1)
        } else {
            let n = h - usize::from(s.gateway);
            (Role::Node, s.site.clone(), n as u32)
        };
        let ip = host_addr(s.index, h);
        Container {
            id: ns.clone(),
            name: ns.clone(),
            service,
            number,
            role,
            lan: s.site.clone(),
            state: self.state(&ns),
            ips: BTreeMap::from([(s.site.clone(), ip)]),
            networks: BTreeSet::from([s.site.clone()]),
        }
    }

    /// Running, paused (SIGSTOP) or stopped, from the lab's pid file and `/proc`: the pid must
    /// be alive and still in the namespace it was started in (pids get reused).
    fn state(&self, ns: &str) -> State {
        let pid = std::fs::read_to_string(self.run_dir.join(ns).join("pid"))
            .ok()
            .and_then(|p| p.trim().parse::<u32>().ok());
        let Some(pid) = pid else {
            return State::Stopped;
        };
        let netns = |p: &Path| std::fs::metadata(p).ok().map(|m| (m.dev(), m.ino()));
        let same_ns = netns(&PathBuf::from(format!("/proc/{pid}/ns/net")))
            .is_some_and(|a| Some(a) == netns(&Path::new("/run/netns").join(ns)));
        if !same_ns {
            return State::Stopped;
        }
        // /proc/PID/stat: "pid (comm) S …"; comm may hold spaces, so read after the last ')'.
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        match stat
            .rsplit(')')
            .next()
            .and_then(|r| r.trim().chars().next())
        {
            Some('T' | 't') => State::Paused,
            Some('Z' | 'X') | None => State::Stopped,
            Some(_) => State::Running,
        }
    }

    /// `sNhM` of a node record.
    fn host(node: &Container) -> &str {
        node.id.strip_prefix(PREFIX).unwrap_or(&node.id)
    }
}

/// Host `h` of subnet `s`, as `lab.sh` addresses it.
fn host_addr(s: usize, h: usize) -> Ipv4Addr {
    let last = HOST_BASE.saturating_add(h as u8);
    if s == 0 {
        Ipv4Addr::new(198, 51, 100, last)
    } else {
        Ipv4Addr::new(10, s as u8, 0, last)
    }
}

impl Backend for Lab {
    fn name(&self) -> &'static str {
        "netns"
    }

    fn nodes(&self) -> Result<Vec<Container>> {
        if !self.run_dir.join("lab.env").is_file() {
            bail!(
                "no netns lab in {} (`butter-kit --backend netns up` starts one)",
                self.run_dir.display()
            );
        }
        let mut out: Vec<Container> = self
            .subnets
            .iter()
            .flat_map(|s| (1..=s.hosts).map(move |h| (s, h)))
            .map(|(s, h)| self.node(s, h))
            .collect();
        out.sort_by(|a, b| {
            (&a.lan, a.role, &a.service, a.number).cmp(&(&b.lan, b.role, &b.service, b.number))
        });
        Ok(out)
    }

    fn kill(&self, node: &Container) -> Result<()> {
        self.lab(&["kill", Self::host(node), "KILL"])
    }

    fn pause(&self, node: &Container) -> Result<()> {
        self.lab(&["kill", Self::host(node), "STOP"])
    }

    fn unpause(&self, node: &Container) -> Result<()> {
        self.lab(&["kill", Self::host(node), "CONT"])
    }

    fn restart(&self, node: &Container) -> Result<()> {
        self.lab(&["stop", Self::host(node)])?;
        self.start(std::slice::from_ref(node))
    }

    fn start(&self, nodes: &[Container]) -> Result<()> {
        let wait = START_WAIT_SECS.to_string();
        let mut args = vec!["start", "--wait", wait.as_str()];
        args.extend(nodes.iter().map(Self::host));
        self.lab(&args)
    }

    fn partition(&self, site: &str, _state_dir: &Path) -> Result<Vec<String>> {
        let s = self.subnet_of(site)?;
        self.lab(&["partition", &format!("s{}", s.index)])?;
        Ok(vec![site.to_string()])
    }

    /// Lifts every partition (the lab's tables say which are in place, so this works from
    /// another process too): the namespaces whose partition table went (`bt-router`, `bt-gw2`).
    fn reconnect(&self, _state_dir: &Path, h: &mut Healed) -> Result<()> {
        let lifted = self.lab_out(&["unpartition"])?;
        h.reconnected
            .extend(lifted.split_whitespace().map(String::from));
        Ok(())
    }

    fn loss(&self, node: &Container, pct: u8) -> Result<()> {
        self.lab(&["loss", Self::host(node), &pct.to_string()])
    }

    /// Sets every host link back to its site's loss in the topology (0 unless a `[[link]]`
    /// shapes it).
    fn clear_loss(&self, h: &mut Healed) -> Result<()> {
        for s in self.subnets.iter().filter(|s| s.index > 0) {
            match self.lab(&["loss", &format!("s{}", s.index), &s.loss.to_string()]) {
                Ok(()) => h.loss_cleared.push(s.site.clone()),
                Err(e) => h.errors.push(format!("{}: clearing loss: {e:#}", s.site)),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_are_named_as_on_compose() {
        let t = Topology::load(&network::repo_root().join("topologies/default.toml")).unwrap();
        let lab = Lab {
            run_dir: PathBuf::from("/nonexistent"),
            ..Lab::new(&network::repo_root(), &t).unwrap()
        };
        assert_eq!(lab.subnets().len(), 3);
        let s = &lab.subnets()[1];
        assert_eq!(
            (s.index, s.site.as_str(), s.hosts, s.gateway),
            (2, "lan-b", 5, true)
        );
        let gw = lab.node(s, 1);
        assert_eq!((gw.label(), gw.role), ("gw-b".to_string(), Role::Gateway));
        let n = lab.node(s, 3);
        assert_eq!(n.label(), "lan-b-2");
        assert_eq!(n.lan, "lan-b");
        assert_eq!(n.id, "bt-s2h3");
        assert_eq!(n.http(), Some("10.2.0.13:7100".parse().unwrap()));
        assert_eq!(n.state, State::Stopped, "no pid file: stopped");
        assert_eq!(Lab::host(&n), "s2h3");
    }
}
