//! The compose network as a whole: bring it up, wait until every node is ready (and Docker
//! reports it healthy), observe every node's view, print the status table, take it down.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::api::{self, Peer, Status};
use crate::compose::Compose;
use crate::engine::{Container, Engine, Health, Role, State};
use crate::fanout::concurrently;
use crate::network;
use crate::readiness;

/// How to bring the network up.
#[derive(Debug, Clone)]
pub struct UpOptions {
    /// Nodes per LAN (gateways not counted).
    pub scale: usize,
    /// Also start the `monitoring` profile (Prometheus, Grafana): needs a registry.
    pub monitoring: bool,
}

impl Default for UpOptions {
    fn default() -> Self {
        UpOptions {
            scale: network::DEFAULT_SCALE,
            monitoring: false,
        }
    }
}

/// One node as seen at one instant.
#[derive(Debug, Clone)]
pub struct NodeView {
    /// The container.
    pub container: Container,
    /// The node says it is ready (`/status`'s `ready`: what makes `/ready` answer 200).
    pub ready: bool,
    /// Docker's health check state (`butter-node health`, i.e. `/ready`), if the engine
    /// listed it.
    pub health: Option<Health>,
    /// `/status`, if it answered.
    pub status: Option<Status>,
    /// `/peers`, if it answered.
    pub peers: Option<Vec<Peer>>,
}

impl NodeView {
    /// Known hosts by site label.
    pub fn peers_by_site(&self) -> BTreeMap<String, usize> {
        let mut m = BTreeMap::new();
        for p in self.peers.iter().flatten() {
            *m.entry(p.site.clone()).or_default() += 1;
        }
        m
    }

    /// The node's peer id, if `/status` answered.
    pub fn id(&self) -> Option<&str> {
        self.status.as_ref().map(|s| s.id.as_str())
    }
}

/// The running (or not yet running) compose network.
#[derive(Debug)]
pub struct Testbed {
    root: PathBuf,
    project: String,
    /// The compose file and the directory its paths resolve in (a rendered topology's refer
    /// to `compose/`).
    compose_file: (PathBuf, Option<PathBuf>),
    /// The compose CLI, found on first use: `status` never needs it, and finding it runs
    /// `docker-compose version` (a Python start, a second or more on a loaded machine).
    compose: std::sync::OnceLock<Compose>,
    engine: Engine,
}

impl Testbed {
    /// Connects to the engine for the repository at `root`. The compose file is the one a
    /// topology was rendered to for this project by [`Testbed::up_topology`], while that
    /// network is up, else `compose/docker-compose.yml`; the compose CLI is found on first use
    /// ([`Testbed::compose`]).
    pub fn open(root: &Path) -> Result<Self> {
        let project = network::project();
        let rendered = rendered_file(root, &project);
        let compose_file = if rendered.is_file() {
            (rendered, Some(root.join("compose")))
        } else {
            (network::compose_file(root), None)
        };
        let engine = Engine::connect(&project).context("Docker engine unavailable")?;
        Ok(Testbed {
            root: root.to_path_buf(),
            project,
            compose_file,
            compose: std::sync::OnceLock::new(),
            engine,
        })
    }

    /// The repository root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The compose project name.
    pub fn project(&self) -> &str {
        &self.project
    }

    /// The compose CLI (found on the first call; an error if there is none).
    pub fn compose(&self) -> Result<&Compose> {
        if let Some(c) = self.compose.get() {
            return Ok(c);
        }
        let (file, dir) = &self.compose_file;
        let mut c = Compose::detect(file, &self.project)?;
        if let Some(dir) = dir {
            c = c.in_directory(dir);
        }
        Ok(self.compose.get_or_init(|| c))
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// `compose up -d` with the given scale; idempotent (running containers are left alone).
    pub fn up(&self, opts: &UpOptions) -> Result<()> {
        let rendered = rendered_file(&self.root, &self.project);
        if rendered.is_file() {
            bail!(
                "project {} runs a network rendered from a topology ({}): `make down` first",
                self.project,
                rendered.display()
            );
        }
        let env = self.prepare(network::LANS.len(), opts.scale)?;
        self.compose()?
            .up(Some(opts.scale), &profiles(opts.monitoring), &env)
    }

    /// Renders `topology` to a compose file for this project (kept under
    /// `target/butter-kit/<project>/` until [`Testbed::down`]), then `compose up -d` on it.
    /// Returns the testbed bound to that file.
    pub fn up_topology(
        root: &Path,
        topology: &crate::topology::Topology,
        monitoring: bool,
    ) -> Result<Self> {
        let text = crate::topology::render::compose::render(topology)?;
        let project = network::project();
        let rendered = rendered_file(root, &project);
        let running = Testbed::open(root)?;
        if !rendered.is_file() && !running.nodes()?.is_empty() {
            bail!(
                "project {project} already runs the default network: `make down` first, then \
                 bring up the topology"
            );
        }
        if let Some(dir) = rendered.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(&rendered, text)
            .with_context(|| format!("writing {}", rendered.display()))?;
        let bed = Testbed::open(root)?;
        let widest = topology.sites.iter().map(|s| s.nodes).max().unwrap_or(1);
        let env = bed.prepare(topology.sites.len(), widest)?;
        bed.compose()?.up(None, &profiles(monitoring), &env)?;
        Ok(bed)
    }

    /// Checks the image, makes room in the neighbour table and picks the health-check interval
    /// for `lans` LANs of up to `scale` nodes: the environment for the compose CLI.
    fn prepare(&self, lans: usize, scale: usize) -> Result<Vec<(&'static str, String)>> {
        let image = network::image();
        if self.engine.image_size(&image)?.is_none() {
            bail!("image {image} is missing: `make image` builds it (no registry needed)");
        }
        let need = crate::host::neighbour_entries(lans, scale);
        if let Some(changed) = crate::host::ensure_neighbour_capacity(need)? {
            eprintln!("{changed}");
        }
        Ok(health_interval(lans * (scale + 1))
            .map(|s| vec![("BUTTER_HEALTH_INTERVAL", format!("{s}s"))])
            .unwrap_or_default())
    }

    /// `compose down -v`, then removes the anonymous volumes the containers had (compose 1.29
    /// can leave those of recreated replicas behind) and checks that no network or named volume
    /// of the project is left.
    ///
    /// Right after 100+ containers go, the engine can still count endpoints on a network ("has
    /// active endpoints"): `down` tries again for [`DOWN_RETRIES`] × 3 s. Docker 20.10 can also
    /// keep such a count for good on a network no container is attached to; then `down`
    /// removes everything else and says so (a later `up` of the project reuses that network).
    pub fn down(&self) -> Result<()> {
        let volumes = self.engine.project_volumes()?;
        let mut tries = 0;
        let compose_down = loop {
            match self.compose()?.down() {
                Ok(()) => break Ok(()),
                Err(e) if tries + 1 < DOWN_RETRIES => {
                    tries += 1;
                    eprintln!("down: {e:#}; trying again in 3 s");
                    std::thread::sleep(Duration::from_secs(3));
                }
                Err(e) => break Err(e),
            }
        };
        // Compose stops at the first network it cannot remove: remove the rest here.
        let mut stuck = Vec::new();
        if compose_down.is_err() {
            for (name, attached) in self.engine.project_networks()? {
                if self.engine.remove_network(&name).is_err() {
                    stuck.push(format!("{name} ({attached} containers attached)"));
                }
            }
        }
        for v in volumes
            .into_iter()
            .chain(self.engine.project_named_volumes()?)
        {
            self.engine.remove_volume(&v)?;
        }
        let rendered = rendered_file(&self.root, &self.project);
        if rendered.is_file() {
            std::fs::remove_file(&rendered)
                .with_context(|| format!("removing {}", rendered.display()))?;
        }
        if !stuck.is_empty() {
            bail!(
                "every container and volume of project {} is removed, but the engine refuses to \
                 remove {}: it still counts an endpoint there. With no container attached that \
                 is the engine's own stale count (Docker 20.10, after many containers leave at \
                 once): harmless, the next `up` of this project reuses the network; restarting \
                 the engine (`systemctl restart docker`) clears it",
                self.project,
                stuck.join(", ")
            );
        }
        compose_down?;
        let left = self.engine.leftovers()?;
        if !left.is_empty() {
            bail!("left after down: {}", left.join(", "));
        }
        Ok(())
    }

    /// The project's Butter containers (LAN nodes and gateways), running or not.
    pub fn nodes(&self) -> Result<Vec<Container>> {
        Ok(self.engine.containers()?)
    }

    /// Every running Butter node's readiness, Docker health, status and peers, now.
    pub fn observe(&self) -> Result<Vec<NodeView>> {
        let running: Vec<Container> = self.nodes()?.into_iter().filter(|c| c.is_up()).collect();
        // Docker health from one list call; one request of each kind per node (`/status`,
        // `/peers`), 64 nodes at a time: 100+ containers stay fast.
        let healths = self.engine.healths()?;
        Ok(concurrently(&running, readiness::WIDTH, |c| NodeView {
            health: healths.get(&c.id).cloned(),
            ..observe(c.clone())
        }))
    }

    /// Waits until Docker reports every running Butter node `healthy` (its health check, i.e.
    /// `butter-node health` on `/ready`, passed); returns their views.
    pub fn wait_healthy(&self, timeout: Duration) -> Result<Vec<NodeView>> {
        let deadline = Instant::now() + timeout;
        loop {
            let nodes: Vec<Container> = self.nodes()?.into_iter().filter(|c| c.is_up()).collect();
            if nodes.is_empty() {
                bail!("no running node containers in project {}", self.project);
            }
            let healths = self.engine.healths()?;
            let not_healthy: Vec<&Container> = nodes
                .iter()
                .filter(|c| !healths.get(&c.id).is_some_and(Health::is_healthy))
                .collect();
            if not_healthy.is_empty() {
                return self.observe();
            }
            if Instant::now() >= deadline {
                // Only now each laggard's last check output (an inspect each).
                let not_healthy: Vec<String> = not_healthy
                    .iter()
                    .map(|c| match self.engine.health(&c.id) {
                        Ok(h) => format!(
                            "{} {} (last check: {})",
                            c.label(),
                            h.status,
                            h.last_output.as_deref().unwrap_or("none yet")
                        ),
                        Err(e) => format!("{} (inspect: {e})", c.label()),
                    })
                    .collect();
                bail!(
                    "not healthy after {:?}:\n{}",
                    timeout,
                    not_healthy.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Waits until every Butter node answers `/ready` (see [`readiness::wait`]: 64 nodes at a
    /// time, `ready N/M` on standard error, the table of laggards on a timeout); returns their
    /// views. A container that stopped fails the wait at once: it will not become ready.
    pub fn wait_ready(&self, timeout: Duration) -> Result<Vec<NodeView>> {
        let nodes = || {
            let nodes = self.nodes()?;
            let stopped: Vec<String> = nodes
                .iter()
                .filter(|c| c.state == State::Stopped)
                .map(Container::label)
                .collect();
            if !stopped.is_empty() {
                bail!(
                    "containers not running: {} (`docker logs <name>` says why)",
                    stopped.join(", ")
                );
            }
            if nodes.is_empty() {
                bail!("no node containers in project {}", self.project);
            }
            Ok(nodes)
        };
        readiness::wait(
            nodes,
            timeout,
            || Ok(()),
            "raise --wait, or see their logs: docker logs <name>",
        )?;
        self.observe()
    }

    /// URLs of the monitoring services if their containers run.
    pub fn monitoring_urls(&self) -> Result<Vec<String>> {
        let running: Vec<String> = self
            .engine
            .all_containers()?
            .into_iter()
            .filter(|c| c.is_up() && c.role == Role::Other)
            .map(|c| c.service)
            .collect();
        let port = |var: &str, default: &str| std::env::var(var).unwrap_or_else(|_| default.into());
        let mut out = Vec::new();
        if running.iter().any(|s| s == "prometheus") {
            out.push(format!(
                "Prometheus: http://localhost:{}",
                port("PROMETHEUS_PORT", "9090")
            ));
        }
        if running.iter().any(|s| s == "grafana") {
            out.push(format!(
                "Grafana:    http://localhost:{} (anonymous viewer)",
                port("GRAFANA_PORT", "3000")
            ));
        }
        Ok(out)
    }
}

/// How many times `down` runs `compose down` before it removes what is left itself.
pub const DOWN_RETRIES: usize = 6;

/// Where a topology rendered for `project` is kept while its network is up.
pub fn rendered_file(root: &Path, project: &str) -> PathBuf {
    root.join("target")
        .join("butter-kit")
        .join(project)
        .join("docker-compose.yml")
}

fn profiles(monitoring: bool) -> Vec<&'static str> {
    if monitoring {
        vec!["monitoring"]
    } else {
        vec![]
    }
}

/// The Docker health-check interval (seconds) for a network of `containers`, unless the user
/// chose one (`BUTTER_HEALTH_INTERVAL`) or the compose file's 5 s is fine: every check is an
/// exec (runc, a shim, a process) in the container, and past ~64 containers checks every 5 s
/// cost a 2-core machine more than the nodes do. At most ~6 checks a second in all.
pub fn health_interval(containers: usize) -> Option<u64> {
    if std::env::var_os("BUTTER_HEALTH_INTERVAL").is_some() || containers <= 64 {
        return None;
    }
    Some((containers as u64).div_ceil(6).max(5))
}

/// Reads one node's API (not its Docker health: [`Testbed::observe`] adds that).
/// Two requests, `/status` (which says whether the node is ready) and `/peers`.
pub fn observe(container: Container) -> NodeView {
    let addr = container.http();
    let status = addr.and_then(|a| api::status(a).ok());
    NodeView {
        ready: status.as_ref().is_some_and(|s| s.ready),
        health: None,
        status,
        peers: addr.and_then(|a| api::peers(a).ok()),
        container,
    }
}

/// The status table: node, LAN, role, address, ready, Docker health, known hosts per LAN, hosts
/// reached over a relayed path, groups held.
pub fn table(views: &[NodeView]) -> String {
    // The network's own sites first (its containers' LANs, in order), then any other site label
    // a node reports.
    let mut sites: Vec<String> = Vec::new();
    for v in views {
        if !v.container.lan.is_empty() && !sites.contains(&v.container.lan) {
            sites.push(v.container.lan.clone());
        }
    }
    for v in views {
        for s in v.peers_by_site().into_keys() {
            if !sites.contains(&s) {
                sites.push(s);
            }
        }
    }
    let mut out = String::new();
    let _ = write!(
        out,
        "{:<10} {:<6} {:<8} {:<15} {:<5} {:<9} {:<10}",
        "node", "lan", "role", "address", "ready", "health", "id"
    );
    for s in &sites {
        let _ = write!(out, " {s:>6}");
    }
    let _ = writeln!(
        out,
        " {:>7} {:>6} {:>4} {:>5}",
        "relayed", "groups", "cold", "items"
    );
    for v in views {
        let c = &v.container;
        let addr = c
            .lan_ip()
            .map_or_else(|| "-".to_string(), |ip| ip.to_string());
        let id = v.id().map_or("-", |id| &id[..id.len().min(10)]);
        let _ = write!(
            out,
            "{:<10} {:<6} {:<8} {:<15} {:<5} {:<9} {:<10}",
            c.label(),
            c.lan,
            c.role.as_str(),
            addr,
            match (&v.status, v.ready) {
                (None, _) => "?",
                (Some(_), true) => "yes",
                (Some(_), false) => "no",
            },
            v.health.as_ref().map_or("?", |h| h.status.as_str()),
            id
        );
        let by_site = v.peers_by_site();
        for s in &sites {
            let n = if v.peers.is_some() {
                by_site.get(s).copied().unwrap_or(0).to_string()
            } else {
                "?".to_string()
            };
            let _ = write!(out, " {n:>6}");
        }
        let relayed = v.peers.as_ref().map_or_else(
            || "?".to_string(),
            |peers| {
                peers
                    .iter()
                    .filter(|p| p.path == "relayed")
                    .count()
                    .to_string()
            },
        );
        let _ = write!(out, " {relayed:>7}");
        let (groups, cold) = v
            .status
            .as_ref()
            .and_then(|s| s.groups)
            .map_or((0, 0), |g| (g.total(), g.cold));
        let items = v.status.as_ref().and_then(|s| s.items).unwrap_or(0);
        let _ = writeln!(out, " {groups:>6} {cold:>4} {items:>5}");
    }
    let ready = views.iter().filter(|v| v.ready).count();
    let silent = views.iter().filter(|v| v.status.is_none()).count();
    let healthy = views
        .iter()
        .filter(|v| v.health.as_ref().is_some_and(Health::is_healthy))
        .count();
    let silent = if silent > 0 {
        format!(
            " ({silent} did not answer /status within {} s: ready ?)",
            api::NODE_TIMEOUT.as_secs()
        )
    } else {
        String::new()
    };
    let _ = writeln!(
        out,
        "{ready}/{n} ready{silent}, {healthy}/{n} healthy; health: Docker's health check \
         (`butter-node health` on /ready); per-LAN columns: the node's known hosts by site \
         label; relayed: hosts it reaches over a relayed path; groups: PCG groups it is a member \
         of (cold: fewer than r members); items: items it holds",
        n = views.len()
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::State;

    #[test]
    fn the_table_has_a_row_per_node_and_says_which_did_not_answer() {
        let view = |number, ready: Option<bool>| NodeView {
            container: Container::on_paper("lan-a", number, Role::Node, "lan-a", State::Running),
            ready: ready == Some(true),
            health: Some(Health {
                status: "healthy".into(),
                last_output: None,
            }),
            status: ready.map(|ready| Status {
                id: format!("{number:0>52}"),
                site: "lan-a".into(),
                ready,
                groups: None,
                items: None,
            }),
            peers: ready.map(|_| Vec::new()),
        };
        let views: Vec<NodeView> = (1..=123)
            .map(|n| match n {
                7 => view(n, None),
                9 => view(n, Some(false)),
                _ => view(n, Some(true)),
            })
            .collect();
        let table = table(&views);
        let ready_of = |label: &str| {
            table
                .lines()
                .find(|l| l.split_whitespace().next() == Some(label))
                .and_then(|row| row.split_whitespace().nth(4).map(String::from))
        };
        for n in 1..=123 {
            let want = match n {
                7 => "?",
                9 => "no",
                _ => "yes",
            };
            assert_eq!(
                ready_of(&format!("lan-a-{n}")).as_deref(),
                Some(want),
                "{table}"
            );
        }
        assert!(
            table.contains("121/123 ready (1 did not answer /status within 1 s: ready ?)"),
            "{table}"
        );
    }

    #[test]
    fn health_checks_slow_down_past_64_containers() {
        if std::env::var_os("BUTTER_HEALTH_INTERVAL").is_some() {
            return; // the user's choice wins; nothing to check here
        }
        assert_eq!(health_interval(15), None);
        assert_eq!(health_interval(63), None);
        assert_eq!(health_interval(123), Some(21));
        assert_eq!(health_interval(303), Some(51));
    }
}
