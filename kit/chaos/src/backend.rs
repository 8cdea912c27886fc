//! Where faults go: the one interface the fault actions ([`crate::faults`]), the survival
//! check and the runner ([`crate::run`]) drive, with one implementation per testbed backend.
//!
//! - The compose project's containers through the Engine API: [`Engine`] itself (kill = SIGKILL,
//!   pause = cgroup freezer, restart = SIGTERM then start, partition = the gateway leaves the WAN
//!   network, loss = nftables in the container's namespace).
//! - The netns lab's nodes through `netns/lab.sh`: [`crate::netns::Lab`] (kill = SIGKILL to the
//!   node process in its namespace, pause = SIGSTOP, restart = SIGTERM then relaunch with its
//!   data, partition = nftables on the router or NAT gateway, loss = nftables on the host's link).
//!
//! Both present their nodes as the same [`Container`] records (label `lan-a-1` or `gw-a`, the
//! site in `lan`, the HTTP API on the node's LAN address), so targets, seeded choices, the
//! survival check and the report do not know which backend ran.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result, bail};
use butter_testbed::engine::{Container, EndpointSettings, Engine, Role};
use butter_testbed::network::{self, WAN};

use crate::faults::Healed;
use crate::loss;

/// A testbed the chaos driver can break and heal. Every method acts on nodes as
/// [`Backend::nodes`] lists them.
pub trait Backend: Send + Sync + std::fmt::Debug {
    /// `compose` or `netns`.
    fn name(&self) -> &'static str;
    /// Every Butter node (LAN nodes and gateways), stopped ones included, in a stable order (so
    /// seeded choices replay).
    fn nodes(&self) -> Result<Vec<Container>>;
    /// SIGKILL: a crash; the node stays down until started.
    fn kill(&self, node: &Container) -> Result<()>;
    /// Freeze: alive to the kernel, silent to peers.
    fn pause(&self, node: &Container) -> Result<()>;
    /// Thaw a paused node.
    fn unpause(&self, node: &Container) -> Result<()>;
    /// SIGTERM (5 s grace, the node hands its groups off), then start it again with its data.
    fn restart(&self, node: &Container) -> Result<()>;
    /// Start stopped nodes with their data (and so their peer ids).
    fn start(&self, nodes: &[Container]) -> Result<()>;
    /// Cut `site` off from the other sites (traffic inside it goes on). What was cut, by name.
    /// `state_dir` keeps what [`Backend::reconnect`] needs, for a heal from another process.
    fn partition(&self, site: &str, state_dir: &Path) -> Result<Vec<String>>;
    /// Undo every partition, recording what was reconnected (and failures) in `healed`.
    fn reconnect(&self, state_dir: &Path, healed: &mut Healed) -> Result<()>;
    /// Drop `pct` % of the node's UDP both ways.
    fn loss(&self, node: &Container, pct: u8) -> Result<()>;
    /// Remove every loss the driver added (a topology's own link loss stays), recording it in
    /// `healed`.
    fn clear_loss(&self, healed: &mut Healed) -> Result<()>;
}

fn saved(path: &Path) -> BTreeMap<String, EndpointSettings> {
    std::fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

fn save(path: &Path, m: &BTreeMap<String, EndpointSettings>) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, serde_json::to_vec_pretty(m)?)
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Where the compose backend keeps partitioned gateways' WAN endpoints (pinned address,
/// aliases), so `heal`, even from another process, reconnects them as they were.
fn partitions_file(state_dir: &Path) -> std::path::PathBuf {
    state_dir.join("partitions.json")
}

impl Backend for Engine {
    fn name(&self) -> &'static str {
        "compose"
    }

    fn nodes(&self) -> Result<Vec<Container>> {
        Ok(self.containers()?)
    }

    fn kill(&self, node: &Container) -> Result<()> {
        Ok(Engine::kill(self, &node.id)?)
    }

    fn pause(&self, node: &Container) -> Result<()> {
        Ok(Engine::pause(self, &node.id)?)
    }

    fn unpause(&self, node: &Container) -> Result<()> {
        Ok(Engine::unpause(self, &node.id)?)
    }

    fn restart(&self, node: &Container) -> Result<()> {
        Ok(Engine::restart(self, &node.id)?)
    }

    fn start(&self, nodes: &[Container]) -> Result<()> {
        for c in nodes {
            Engine::start(self, &c.id).with_context(|| format!("start {}", c.label()))?;
        }
        Ok(())
    }

    /// Disconnects the site's gateway from the WAN network: a WAN cut (in the testbed the
    /// gateway is the site's only way out).
    fn partition(&self, site: &str, state_dir: &Path) -> Result<Vec<String>> {
        let gw_service = network::gateway_of(site);
        let gw = self
            .containers()?
            .into_iter()
            .find(|c| c.role == Role::Gateway && c.service == gw_service)
            .with_context(|| format!("no gateway {gw_service}"))?;
        let Some(ep) = self.endpoint(&gw.id, WAN)? else {
            bail!(
                "{} is not on the {WAN} network (already partitioned?)",
                gw.label()
            );
        };
        let file = partitions_file(state_dir);
        let mut m = saved(&file);
        m.insert(gw.name.clone(), ep);
        save(&file, &m)?;
        self.detach(WAN, &gw.id)?;
        Ok(vec![gw.label()])
    }

    fn reconnect(&self, state_dir: &Path, h: &mut Healed) -> Result<()> {
        let file = partitions_file(state_dir);
        let mut m = saved(&file);
        for c in self.containers()? {
            if c.role == Role::Gateway && !c.networks.contains(WAN) {
                let ep = m.remove(&c.name);
                match self.attach(WAN, &c.id, &c.service, ep.as_ref()) {
                    Ok(()) => h.reconnected.push(c.label()),
                    Err(e) => h.errors.push(format!("{}: {e:#}", c.label())),
                }
            }
        }
        if file.exists() {
            save(&file, &m)?;
        }
        Ok(())
    }

    fn loss(&self, node: &Container, pct: u8) -> Result<()> {
        let pid = self.pid(&node.id)?;
        loss::apply(pid, pct)
    }

    /// Clears the loss table of every running container (the image has no tools, so rules are
    /// installed from the host; without nsenter/nft none can have been).
    fn clear_loss(&self, h: &mut Healed) -> Result<()> {
        if !loss::available() {
            return Ok(());
        }
        for c in self.containers()? {
            if !c.is_up() {
                continue;
            }
            match self
                .pid(&c.id)
                .map_err(anyhow::Error::from)
                .and_then(loss::clear)
            {
                Ok(()) => h.loss_cleared.push(c.label()),
                Err(e) => h
                    .errors
                    .push(format!("{}: clearing loss: {e:#}", c.label())),
            }
        }
        Ok(())
    }
}
