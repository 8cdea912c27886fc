//! The faults the Docker Engine API can inject (through bollard), behind a small blocking facade.
//!
//! The driver is a few plain threads (steps, the once-a-second sampler, HTTP checks); every call
//! here runs on one shared multi-thread runtime, so any of them may call it. Containers are found
//! by their compose labels (`com.docker.compose.project`, `…service`, `…container-number`) and the
//! testbed's own (`butter.role`, `butter.lan`), never by parsing `docker` output.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use bollard::models::{
    ContainerSummaryStateEnum, EndpointSettings, NetworkConnectRequest, NetworkDisconnectRequest,
};
use bollard::query_parameters::{
    InspectContainerOptions, KillContainerOptions, ListContainersOptions, RestartContainerOptions,
    StartContainerOptions,
};
use butter_compose_tests::topology::HTTP_PORT;

/// A Butter container's role (its `butter.role` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// A LAN node: on its LAN network only.
    Node,
    /// A gateway: on its LAN and on the WAN.
    Gateway,
}

/// What the engine says a container is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Running (and not paused).
    Running,
    /// Frozen by `pause`.
    Paused,
    /// Created, exited or dead: `start` brings it back.
    Stopped,
    /// Restarting or being removed.
    Other,
}

/// One Butter container of the compose project.
#[derive(Debug, Clone)]
pub struct Container {
    /// Engine id.
    pub id: String,
    /// Container name (`butter_lan-a_1` with compose 1.29, `butter-lan-a-1` with v2).
    pub name: String,
    /// Compose service (`lan-a`, `gw-a`).
    pub service: String,
    /// Replica number within the service.
    pub number: u32,
    /// Node or gateway.
    pub role: Role,
    /// Its LAN (`butter.lan`).
    pub lan: String,
    /// Running, paused, stopped.
    pub state: State,
    /// IPv4 address per network, by the compose network name (`lan-a`, `wan`); only while
    /// running.
    pub ips: BTreeMap<String, Ipv4Addr>,
    /// The compose networks it is attached to, running or not.
    pub networks: BTreeSet<String>,
}

impl Container {
    /// Short stable name: `lan-a-1`, `gw-a`.
    pub fn label(&self) -> String {
        match self.role {
            Role::Node => format!("{}-{}", self.service, self.number),
            Role::Gateway => self.service.clone(),
        }
    }

    /// Whether `name` names this container: its label, its name (compose v1 or v2 spelling) or
    /// an id prefix of at least 6 characters.
    pub fn matches(&self, name: &str) -> bool {
        let norm = |s: &str| s.replace('_', "-");
        self.label() == name
            || norm(&self.name) == norm(name)
            || (name.len() >= 6 && self.id.starts_with(name))
    }

    /// Running and not paused: it can serve and be faulted.
    pub fn is_up(&self) -> bool {
        self.state == State::Running
    }

    /// Its HTTP API on its LAN address.
    pub fn http(&self) -> Option<SocketAddr> {
        self.ips
            .get(&self.lan)
            .map(|ip| SocketAddr::from((*ip, HTTP_PORT)))
    }

    /// A container for unit tests.
    #[cfg(test)]
    pub fn fake(service: &str, number: u32, role: Role, lan: &str, state: State) -> Self {
        Container {
            id: format!("{service}{number:0>60}"),
            name: format!("butter_{service}_{number}"),
            service: service.into(),
            number,
            role,
            lan: lan.into(),
            state,
            ips: BTreeMap::new(),
            networks: BTreeSet::new(),
        }
    }
}

/// A connection to the local Docker engine, scoped to one compose project.
#[derive(Debug)]
pub struct Engine {
    docker: bollard::Docker,
    rt: tokio::runtime::Runtime,
    project: String,
}

fn is_404(e: &bollard::errors::Error) -> bool {
    matches!(
        e,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

impl Engine {
    /// Connects to the local engine (`DOCKER_HOST` or the default socket), negotiating the API
    /// version so an older engine is spoken to in its own.
    pub fn connect(project: &str) -> Result<Self> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        let docker = rt.block_on(async {
            let d = bollard::Docker::connect_with_local_defaults().context("no Docker socket")?;
            let d = tokio::time::timeout(Duration::from_secs(5), d.negotiate_version())
                .await
                .context("the Docker engine does not answer within 5 s")??;
            d.ping()
                .await
                .context("the Docker engine does not answer")?;
            anyhow::Ok(d)
        })?;
        Ok(Engine {
            docker,
            rt,
            project: project.to_string(),
        })
    }

    /// The compose project.
    pub fn project(&self) -> &str {
        &self.project
    }

    /// The engine's name of a compose network (`wan` → `butter_wan`).
    pub fn network(&self, short: &str) -> String {
        format!("{}_{short}", self.project)
    }

    /// Every Butter container of the project (stopped ones included), sorted by LAN, role and
    /// number, so seeded choices over the list are reproducible.
    pub fn containers(&self) -> Result<Vec<Container>> {
        let filters = HashMap::from([(
            "label".to_string(),
            vec![format!("com.docker.compose.project={}", self.project)],
        )]);
        let list = self
            .rt
            .block_on(self.docker.list_containers(Some(ListContainersOptions {
                all: true,
                filters: Some(filters),
                ..Default::default()
            })))
            .context("listing containers")?;
        let prefix = format!("{}_", self.project);
        let mut out: Vec<Container> = list
            .into_iter()
            .filter_map(|c| {
                let labels = c.labels.unwrap_or_default();
                let label = |k: &str| labels.get(k).cloned().unwrap_or_default();
                let role = match label("butter.role").as_str() {
                    "node" => Role::Node,
                    "gateway" => Role::Gateway,
                    _ => return None,
                };
                let state = match c.state {
                    Some(ContainerSummaryStateEnum::RUNNING) => State::Running,
                    Some(ContainerSummaryStateEnum::PAUSED) => State::Paused,
                    Some(
                        ContainerSummaryStateEnum::EXITED
                        | ContainerSummaryStateEnum::CREATED
                        | ContainerSummaryStateEnum::DEAD,
                    ) => State::Stopped,
                    _ => State::Other,
                };
                let nets = c
                    .network_settings
                    .and_then(|n| n.networks)
                    .unwrap_or_default();
                let networks = nets
                    .keys()
                    .map(|n| n.strip_prefix(&prefix).unwrap_or(n).to_string())
                    .collect();
                let ips = nets
                    .into_iter()
                    .filter_map(|(net, ep)| {
                        let ip = ep.ip_address?.parse().ok()?;
                        Some((net.strip_prefix(&prefix).unwrap_or(&net).to_string(), ip))
                    })
                    .collect();
                Some(Container {
                    id: c.id.unwrap_or_default(),
                    name: c
                        .names
                        .and_then(|n| n.into_iter().next())
                        .unwrap_or_default()
                        .trim_start_matches('/')
                        .to_string(),
                    service: label("com.docker.compose.service"),
                    number: label("com.docker.compose.container-number")
                        .parse()
                        .unwrap_or(0),
                    role,
                    lan: label("butter.lan"),
                    state,
                    ips,
                    networks,
                })
            })
            .collect();
        out.sort_by(|a, b| {
            (&a.lan, a.role, &a.service, a.number).cmp(&(&b.lan, b.role, &b.service, b.number))
        });
        Ok(out)
    }

    /// SIGKILL: a crash, not a clean stop; the container stays stopped until started.
    pub fn kill(&self, id: &str) -> Result<()> {
        self.rt.block_on(
            self.docker
                .kill_container(id, Some(KillContainerOptions::default())),
        )?;
        Ok(())
    }

    /// Starts a stopped container; it keeps its volume and so its peer id.
    pub fn start(&self, id: &str) -> Result<()> {
        self.rt.block_on(
            self.docker
                .start_container(id, None::<StartContainerOptions>),
        )?;
        Ok(())
    }

    /// Freezes every process of the container (cgroup freezer).
    pub fn pause(&self, id: &str) -> Result<()> {
        self.rt.block_on(self.docker.pause_container(id))?;
        Ok(())
    }

    /// Thaws a paused container.
    pub fn unpause(&self, id: &str) -> Result<()> {
        self.rt.block_on(self.docker.unpause_container(id))?;
        Ok(())
    }

    /// SIGTERM, up to 5 s of grace (the node hands its items off), SIGKILL, start.
    pub fn restart(&self, id: &str) -> Result<()> {
        self.rt.block_on(self.docker.restart_container(
            id,
            Some(RestartContainerOptions {
                t: Some(5),
                ..Default::default()
            }),
        ))?;
        Ok(())
    }

    /// The host PID of the container's init process (for `nsenter`).
    pub fn pid(&self, id: &str) -> Result<u32> {
        let c = self.rt.block_on(
            self.docker
                .inspect_container(id, None::<InspectContainerOptions>),
        )?;
        let pid = c.state.and_then(|s| s.pid).unwrap_or(0);
        match u32::try_from(pid) {
            Ok(p) if p > 0 => Ok(p),
            _ => bail!("container {id:.12} is not running (no pid)"),
        }
    }

    /// The container's endpoint on a network (pinned address, aliases), if attached.
    pub fn endpoint(&self, id: &str, network: &str) -> Result<Option<EndpointSettings>> {
        let c = self.rt.block_on(
            self.docker
                .inspect_container(id, None::<InspectContainerOptions>),
        )?;
        Ok(c.network_settings
            .and_then(|n| n.networks)
            .and_then(|mut n| n.remove(&self.network(network))))
    }

    /// Detaches the container from a compose network (by short name).
    pub fn detach(&self, network: &str, id: &str) -> Result<()> {
        self.rt
            .block_on(self.docker.disconnect_network(
                &self.network(network),
                NetworkDisconnectRequest {
                    container: id.to_string(),
                    force: Some(true),
                },
            ))
            .with_context(|| format!("disconnect from {network}"))?;
        Ok(())
    }

    /// Attaches the container to a compose network again, with the pinned address and aliases
    /// it had (`endpoint`), or with the service name as alias and any free address.
    pub fn attach(
        &self,
        network: &str,
        id: &str,
        service: &str,
        endpoint: Option<&EndpointSettings>,
    ) -> Result<()> {
        let config = EndpointSettings {
            ipam_config: endpoint.and_then(|e| e.ipam_config.clone()),
            aliases: endpoint
                .and_then(|e| e.aliases.clone())
                .or_else(|| Some(vec![service.to_string()])),
            ..Default::default()
        };
        let r = self.rt.block_on(self.docker.connect_network(
            &self.network(network),
            NetworkConnectRequest {
                container: id.to_string(),
                endpoint_config: Some(config),
            },
        ));
        match r {
            Ok(()) => Ok(()),
            Err(e) if is_404(&e) => Err(e).context(format!("no network {network}")),
            Err(e) => Err(e).with_context(|| format!("connect to {network}")),
        }
    }
}
