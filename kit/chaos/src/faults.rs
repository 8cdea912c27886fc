//! The fault actions, shared by the one-shot commands and the scenario runner: each one resolves
//! its targets (seeded), acts through the Engine API or nftables, and writes one `fault` line to
//! the log.
//!
//! A partition (`partition lan-b`) disconnects the LAN's gateway from the WAN network: that models
//! a WAN cut (the LAN keeps working inside, nothing crosses to the other LANs, because in the
//! testbed the gateway is the LAN's only way out). The gateway's WAN endpoint (pinned address,
//! aliases) is saved to `partitions.json` beside the log so `heal`, even from another process,
//! reconnects it as it was.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use butter_testbed::engine::EndpointSettings;
use butter_testbed::network::{self, LANS, WAN};
use rand::Rng;
use serde_json::json;

use crate::log::FaultLog;
use crate::loss;
use crate::target::{self, Target};
use butter_testbed::engine::{Container, Engine, Role, State};

/// Runs fault actions against one compose project.
#[derive(Debug)]
pub struct Chaos<'a> {
    engine: &'a Engine,
    log: &'a FaultLog,
    partitions: PathBuf,
}

/// What a `heal` did.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Healed {
    /// Containers thawed.
    pub unpaused: Vec<String>,
    /// Containers started.
    pub started: Vec<String>,
    /// Gateways reconnected to the WAN.
    pub reconnected: Vec<String>,
    /// Containers whose loss rules were removed (every running one is cleared).
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

fn labels(v: &[&Container]) -> Vec<String> {
    v.iter().map(|c| c.label()).collect()
}

impl<'a> Chaos<'a> {
    /// Faults go through `engine`, are logged to `log`; partition state lives in `state_dir`.
    pub fn new(engine: &'a Engine, log: &'a FaultLog, state_dir: PathBuf) -> Self {
        Chaos {
            engine,
            log,
            partitions: state_dir.join("partitions.json"),
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
        let pool = self.engine.containers()?;
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
        f: impl Fn(&Container) -> Result<(), butter_testbed::engine::Error>,
    ) -> Result<Vec<String>> {
        for c in victims {
            f(c).with_context(|| format!("{action} {}", c.label()))?;
        }
        let names = labels(&victims.iter().collect::<Vec<_>>());
        self.fault(action, &names, json!({}));
        Ok(names)
    }

    /// SIGKILLs `count` containers (random ones among the running).
    pub fn kill<R: Rng + ?Sized>(
        &self,
        target: &str,
        count: usize,
        rng: &mut R,
    ) -> Result<Vec<String>> {
        let v = self.pick(target, count, Container::is_up, rng)?;
        self.each("kill", &v, |c| self.engine.kill(&c.id))
    }

    /// Pauses `count` containers.
    pub fn pause<R: Rng + ?Sized>(
        &self,
        target: &str,
        count: usize,
        rng: &mut R,
    ) -> Result<Vec<String>> {
        let v = self.pick(target, count, Container::is_up, rng)?;
        self.each("pause", &v, |c| self.engine.pause(&c.id))
    }

    /// Unpauses a container (`random`: one of the paused).
    pub fn unpause<R: Rng + ?Sized>(&self, target: &str, rng: &mut R) -> Result<Vec<String>> {
        let v = self.pick(target, 1, |c| c.state == State::Paused, rng)?;
        self.each("unpause", &v, |c| self.engine.unpause(&c.id))
    }

    /// Restarts `count` containers (SIGTERM, 5 s grace, start).
    pub fn restart<R: Rng + ?Sized>(
        &self,
        target: &str,
        count: usize,
        rng: &mut R,
    ) -> Result<Vec<String>> {
        let v = self.pick(target, count, Container::is_up, rng)?;
        self.each("restart", &v, |c| self.engine.restart(&c.id))
    }

    /// SIGKILLs every running or paused container of `lan` (`random`: a seeded LAN).
    pub fn kill_lan<R: Rng + ?Sized>(&self, lan: &str, rng: &mut R) -> Result<Vec<String>> {
        let lan = target::choose_lan(lan, &LANS, rng)?;
        let v: Vec<Container> = self
            .engine
            .containers()?
            .into_iter()
            .filter(|c| c.lan == lan && matches!(c.state, State::Running | State::Paused))
            .collect();
        if v.is_empty() {
            bail!("no running container in {lan}");
        }
        for c in &v {
            self.engine
                .kill(&c.id)
                .with_context(|| format!("kill {}", c.label()))?;
        }
        let names = labels(&v.iter().collect::<Vec<_>>());
        self.fault("kill-lan", &names, json!({ "lan": lan }));
        Ok(names)
    }

    fn saved(&self) -> BTreeMap<String, EndpointSettings> {
        std::fs::read(&self.partitions)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    fn save(&self, m: &BTreeMap<String, EndpointSettings>) -> Result<()> {
        if let Some(dir) = self.partitions.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(&self.partitions, serde_json::to_vec_pretty(m)?)
            .with_context(|| format!("cannot write {}", self.partitions.display()))
    }

    /// Cuts `lan` from the WAN: its gateway leaves the WAN network (a WAN cut).
    pub fn partition<R: Rng + ?Sized>(&self, lan: &str, rng: &mut R) -> Result<Vec<String>> {
        let lan = target::choose_lan(lan, &LANS, rng)?;
        let gw_service = network::gateway_of(&lan);
        let gw = self
            .engine
            .containers()?
            .into_iter()
            .find(|c| c.role == Role::Gateway && c.service == gw_service)
            .with_context(|| format!("no gateway {gw_service}"))?;
        let Some(ep) = self.engine.endpoint(&gw.id, WAN)? else {
            bail!(
                "{} is not on the {WAN} network (already partitioned?)",
                gw.label()
            );
        };
        let mut saved = self.saved();
        saved.insert(gw.name.clone(), ep);
        self.save(&saved)?;
        self.engine.detach(WAN, &gw.id)?;
        let names = vec![gw.label()];
        self.fault("partition", &names, json!({ "lan": lan, "network": WAN }));
        Ok(names)
    }

    /// Drops `pct` % of the UDP of `count` containers.
    pub fn loss<R: Rng + ?Sized>(
        &self,
        target: &str,
        pct: u8,
        count: usize,
        rng: &mut R,
    ) -> Result<Vec<String>> {
        let v = self.pick(target, count, Container::is_up, rng)?;
        for c in &v {
            let pid = self.engine.pid(&c.id)?;
            loss::apply(pid, pct).with_context(|| format!("loss on {}", c.label()))?;
        }
        let names = labels(&v.iter().collect::<Vec<_>>());
        self.fault("loss", &names, json!({ "pct": pct }));
        Ok(names)
    }

    /// Undoes everything: unpause, start the stopped, reconnect partitioned gateways, remove
    /// every loss table. Keeps going past errors and reports them.
    pub fn heal(&self) -> Result<Healed> {
        let mut h = Healed::default();
        let mut saved = self.saved();
        for c in self.engine.containers()? {
            let r = match c.state {
                State::Paused => self
                    .engine
                    .unpause(&c.id)
                    .map(|()| h.unpaused.push(c.label())),
                State::Stopped => self.engine.start(&c.id).map(|()| h.started.push(c.label())),
                _ => Ok(()),
            };
            if let Err(e) = r {
                h.errors.push(format!("{}: {e:#}", c.label()));
            }
            if c.role == Role::Gateway && !c.networks.contains(WAN) {
                let ep = saved.remove(&c.name);
                match self.engine.attach(WAN, &c.id, &c.service, ep.as_ref()) {
                    Ok(()) => h.reconnected.push(c.label()),
                    Err(e) => h.errors.push(format!("{}: {e:#}", c.label())),
                }
            }
        }
        if self.partitions.exists() {
            self.save(&saved)?;
        }
        // Every container runs now (or failed above): clear loss rules wherever they may be.
        // Without nsenter/nft no rule can have been installed from this host.
        let tools = loss::available();
        for c in self.engine.containers()? {
            if !c.is_up() || !tools {
                continue;
            }
            match self
                .engine
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
        self.log.write("heal", serde_json::to_value(&h)?);
        Ok(h)
    }
}
