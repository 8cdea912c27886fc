//! The fault actions, shared by the one-shot commands and the scenario runner: each one resolves
//! its targets (seeded), acts through the testbed's [`Backend`] (the Engine API and nftables on
//! compose, `netns/lab.sh` in the netns lab), and writes one `fault` line to the log.
//!
//! A partition (`partition lan-b`) cuts a site from the others: on compose its gateway leaves
//! the WAN network, in the netns lab the router (or the site's NAT gateway) stops forwarding to
//! and from it. That models a WAN cut: the site keeps working inside, nothing crosses to the
//! other sites. Compose keeps the gateway's WAN endpoint in `partitions.json` beside the log so
//! `heal`, even from another process, reconnects it as it was.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use rand::Rng;
use serde_json::json;

use crate::backend::Backend;
use crate::log::FaultLog;
use crate::target::{self, Target};
use butter_testbed::engine::{Container, State};

/// Runs fault actions against one testbed.
#[derive(Debug)]
pub struct Chaos<'a> {
    backend: &'a dyn Backend,
    log: &'a FaultLog,
    state_dir: PathBuf,
}

/// What a `heal` did.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Healed {
    /// Containers thawed.
    pub unpaused: Vec<String>,
    /// Containers started.
    pub started: Vec<String>,
    /// Gateways reconnected to the WAN (compose) or sites whose partition was lifted (netns).
    pub reconnected: Vec<String>,
    /// Nodes (compose) or sites (netns) whose loss rules were removed.
    pub loss_cleared: Vec<String>,
    /// What could not be undone.
    pub errors: Vec<String>,
}

impl Healed {
    /// Whether anything was done or failed.
    pub fn is_noop(&self) -> bool {
        self.unpaused.is_empty()
            && self.started.is_empty()
            && self.reconnected.is_empty()
            && self.errors.is_empty()
    }
}

fn labels(v: &[Container]) -> Vec<String> {
    v.iter().map(Container::label).collect()
}

/// The sites of `nodes`, sorted (seeded choices among them replay).
pub fn sites(nodes: &[Container]) -> Vec<String> {
    let mut s: Vec<String> = nodes.iter().map(|c| c.lan.clone()).collect();
    s.sort();
    s.dedup();
    s
}

impl<'a> Chaos<'a> {
    /// Faults go to `backend`, are logged to `log`; partition state lives in `state_dir`.
    pub fn new(backend: &'a dyn Backend, log: &'a FaultLog, state_dir: PathBuf) -> Self {
        Chaos {
            backend,
            log,
            state_dir,
        }
    }

    fn fault(&self, action: &str, targets: &[String], extra: serde_json::Value) {
        let mut fields = json!({ "action": action, "targets": targets });
        if let (Some(f), serde_json::Value::Object(e)) = (fields.as_object_mut(), extra) {
            f.extend(e);
        }
        self.log.write("fault", fields);
    }

    fn pick<R: Rng + ?Sized>(
        &self,
        target: &str,
        count: usize,
        eligible: impl Fn(&Container) -> bool,
        rng: &mut R,
    ) -> Result<Vec<Container>> {
        let pool = self.backend.nodes()?;
        let t = Target::parse(target)?;
        Ok(target::choose(&t, &pool, count, eligible, rng)?
            .into_iter()
            .cloned()
            .collect())
    }

    fn each(
        &self,
        action: &str,
        victims: &[Container],
        f: impl Fn(&Container) -> Result<()>,
    ) -> Result<Vec<String>> {
        for c in victims {
            f(c).with_context(|| format!("{action} {}", c.label()))?;
        }
        let names = labels(victims);
        self.fault(action, &names, json!({}));
        Ok(names)
    }

    /// SIGKILLs `count` nodes (random ones among the running).
    pub fn kill<R: Rng + ?Sized>(
        &self,
        target: &str,
        count: usize,
        rng: &mut R,
    ) -> Result<Vec<String>> {
        let v = self.pick(target, count, Container::is_up, rng)?;
        self.each("kill", &v, |c| self.backend.kill(c))
    }

    /// Pauses `count` nodes.
    pub fn pause<R: Rng + ?Sized>(
        &self,
        target: &str,
        count: usize,
        rng: &mut R,
    ) -> Result<Vec<String>> {
        let v = self.pick(target, count, Container::is_up, rng)?;
        self.each("pause", &v, |c| self.backend.pause(c))
    }

    /// Unpauses a node (`random`: one of the paused).
    pub fn unpause<R: Rng + ?Sized>(&self, target: &str, rng: &mut R) -> Result<Vec<String>> {
        let v = self.pick(target, 1, |c| c.state == State::Paused, rng)?;
        self.each("unpause", &v, |c| self.backend.unpause(c))
    }

    /// Restarts `count` nodes (SIGTERM, 5 s grace, start).
    pub fn restart<R: Rng + ?Sized>(
        &self,
        target: &str,
        count: usize,
        rng: &mut R,
    ) -> Result<Vec<String>> {
        let v = self.pick(target, count, Container::is_up, rng)?;
        self.each("restart", &v, |c| self.backend.restart(c))
    }

    /// SIGKILLs every running or paused node of site `lan` (`random`: a seeded site).
    pub fn kill_lan<R: Rng + ?Sized>(&self, lan: &str, rng: &mut R) -> Result<Vec<String>> {
        let nodes = self.backend.nodes()?;
        let all = sites(&nodes);
        let lan = target::choose_lan(
            lan,
            &all.iter().map(String::as_str).collect::<Vec<_>>(),
            rng,
        )?;
        let v: Vec<Container> = nodes
            .into_iter()
            .filter(|c| c.lan == lan && matches!(c.state, State::Running | State::Paused))
            .collect();
        if v.is_empty() {
            bail!("no running node in {lan}");
        }
        for c in &v {
            self.backend
                .kill(c)
                .with_context(|| format!("kill {}", c.label()))?;
        }
        let names = labels(&v);
        self.fault("kill-lan", &names, json!({ "lan": lan }));
        Ok(names)
    }

    /// Cuts site `lan` from the others (a WAN cut).
    pub fn partition<R: Rng + ?Sized>(&self, lan: &str, rng: &mut R) -> Result<Vec<String>> {
        let all = sites(&self.backend.nodes()?);
        let lan = target::choose_lan(
            lan,
            &all.iter().map(String::as_str).collect::<Vec<_>>(),
            rng,
        )?;
        let names = self.backend.partition(&lan, &self.state_dir)?;
        self.fault("partition", &names, json!({ "lan": lan }));
        Ok(names)
    }

    /// Drops `pct` % of the UDP of `count` nodes.
    pub fn loss<R: Rng + ?Sized>(
        &self,
        target: &str,
        pct: u8,
        count: usize,
        rng: &mut R,
    ) -> Result<Vec<String>> {
        let v = self.pick(target, count, Container::is_up, rng)?;
        for c in &v {
            self.backend
                .loss(c, pct)
                .with_context(|| format!("loss on {}", c.label()))?;
        }
        let names = labels(&v);
        self.fault("loss", &names, json!({ "pct": pct }));
        Ok(names)
    }

    /// Undoes everything: unpause, start the stopped, lift partitions, remove the driver's loss
    /// rules. Keeps going past errors and reports them.
    pub fn heal(&self) -> Result<Healed> {
        let mut h = Healed::default();
        let nodes = self.backend.nodes()?;
        for c in nodes.iter().filter(|c| c.state == State::Paused) {
            match self.backend.unpause(c) {
                Ok(()) => h.unpaused.push(c.label()),
                Err(e) => h.errors.push(format!("{}: {e:#}", c.label())),
            }
        }
        let stopped: Vec<Container> = nodes
            .into_iter()
            .filter(|c| c.state == State::Stopped)
            .collect();
        if !stopped.is_empty() {
            match self.backend.start(&stopped) {
                Ok(()) => h.started.extend(labels(&stopped)),
                Err(e) => h.errors.push(format!("start: {e:#}")),
            }
        }
        if let Err(e) = self.backend.reconnect(&self.state_dir, &mut h) {
            h.errors.push(format!("reconnect: {e:#}"));
        }
        if let Err(e) = self.backend.clear_loss(&mut h) {
            h.errors.push(format!("clearing loss: {e:#}"));
        }
        self.log.write("heal", serde_json::to_value(&h)?);
        Ok(h)
    }
}
