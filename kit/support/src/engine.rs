//! The one Docker Engine API wrapper (through bollard), behind a small blocking facade: the
//! project's containers, their addresses and health, the faults the chaos driver injects (kill,
//! pause, restart, network disconnect/connect), memory and image size for the bench.
//!
//! The callers are plain threads (the driver, the chaos sampler, HTTP checks); every call here
//! runs on one shared multi-thread runtime, so any of them may call it. Containers are found by
//! their compose labels (`com.docker.compose.project`, `…service`, `…container-number`) and the
//! testbed's own (`butter.role`, `butter.lan`), never by parsing `docker` output, so compose v1
//! and v2 naming (`butter_lan-a_1` vs `butter-lan-a-1`) do not matter.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use bollard::models::{
    ContainerCreateBody, ContainerSummaryStateEnum, HostConfig, NetworkConnectRequest,
    NetworkDisconnectRequest,
};
use bollard::query_parameters::{
    CreateContainerOptions, InspectContainerOptions, KillContainerOptions, ListContainersOptions,
    RemoveContainerOptions, RestartContainerOptions, StartContainerOptions, StatsOptions,
};
use futures::StreamExt;

use crate::network::HTTP_PORT;

/// A container's endpoint on a network (address, aliases), as the engine reports it.
pub use bollard::models::EndpointSettings;

/// What a container is in the testbed (its `butter.role` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// A LAN node: on its LAN network only.
    Node,
    /// A gateway: on its LAN and on the WAN.
    Gateway,
    /// Anything else in the project (Prometheus, Grafana).
    Other,
}

impl Role {
    /// `node`, `gateway` or `other`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Node => "node",
            Role::Gateway => "gateway",
            Role::Other => "other",
        }
    }
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

impl State {
    /// `running`, `paused`, `stopped` or `other`.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Running => "running",
            State::Paused => "paused",
            State::Stopped => "stopped",
            State::Other => "other",
        }
    }
}

/// One container of the compose project.
#[derive(Debug, Clone)]
pub struct Container {
    /// Engine id.
    pub id: String,
    /// Container name (`butter_lan-a_1` with compose 1.29, `butter-lan-a-1` with v2).
    pub name: String,
    /// Compose service (`lan-a`, `gw-a`, `prometheus`).
    pub service: String,
    /// Replica number within the service.
    pub number: u32,
    /// Node, gateway or other.
    pub role: Role,
    /// Its LAN (`butter.lan`); empty for monitoring containers.
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
            Role::Gateway | Role::Other => self.service.clone(),
        }
    }

    /// Whether it is a Butter node (LAN node or gateway).
    pub fn is_butter(&self) -> bool {
        matches!(self.role, Role::Node | Role::Gateway)
    }

    /// The address on its own LAN.
    pub fn lan_ip(&self) -> Option<Ipv4Addr> {
        self.ips.get(&self.lan).copied()
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
        self.lan_ip().map(|ip| SocketAddr::from((ip, HTTP_PORT)))
    }

    /// A container that exists only on paper (no engine id, no address): for unit tests of
    /// what picks among containers.
    pub fn on_paper(service: &str, number: u32, role: Role, lan: &str, state: State) -> Self {
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

/// A container's Docker health check (`State.Health` of `docker inspect`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    /// `starting`, `healthy` or `unhealthy`; `none` for a container without a health check.
    pub status: String,
    /// What the latest check printed (for a node: `butter-node health`'s line), trimmed.
    pub last_output: Option<String>,
}

impl Health {
    /// Whether Docker reports the container healthy.
    pub fn is_healthy(&self) -> bool {
        self.status == "healthy"
    }
}

/// The health state in a container list's status text (`Up 3 minutes (healthy)`, `Up 2 seconds
/// (health: starting)`): the words `docker inspect` uses, `none` without a health check.
fn health_in_summary(status: &str) -> &'static str {
    if status.ends_with("(healthy)") {
        "healthy"
    } else if status.ends_with("(unhealthy)") {
        "unhealthy"
    } else if status.ends_with("(health: starting)") {
        "starting"
    } else {
        "none"
    }
}

/// Memory of one container, from the Engine's stats (cgroup counters).
#[derive(Debug, Clone, Copy, Default)]
pub struct Memory {
    /// cgroup usage, page cache included.
    pub usage: u64,
    /// What `docker stats` shows: usage less inactive file cache.
    pub working_set: u64,
    /// Anonymous resident memory (cgroup `rss` / `anon`): the process's own RSS.
    pub rss: u64,
}

/// Why a call to the engine failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No Docker socket to connect to (`DOCKER_HOST` or the default one).
    #[error("no Docker socket (is the engine installed and running?)")]
    NoSocket(#[source] bollard::errors::Error),
    /// The engine did not answer the version negotiation within 5 s.
    #[error("the Docker engine does not answer within 5 s")]
    Timeout,
    /// The engine refused or failed a request.
    #[error("{what}")]
    Api {
        /// What was asked (`kill lan-a-1`'s id, `list containers`, …).
        what: String,
        /// The engine's answer.
        #[source]
        source: bollard::errors::Error,
    },
    /// The container has no process (stopped).
    #[error("container {0:.12} is not running (no pid)")]
    NotRunning(String),
    /// The engine sent no stats sample.
    #[error("no stats for container {0:.12}")]
    NoStats(String),
    /// The private runtime the facade blocks on could not start.
    #[error("starting the engine client's runtime")]
    Runtime(#[source] std::io::Error),
}

/// What the engine's calls return.
pub type Result<T> = std::result::Result<T, Error>;

fn api(what: impl Into<String>) -> impl FnOnce(bollard::errors::Error) -> Error {
    let what = what.into();
    move |source| Error::Api { what, source }
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
            .build()
            .map_err(Error::Runtime)?;
        let docker = rt.block_on(async {
            let d = bollard::Docker::connect_with_local_defaults().map_err(Error::NoSocket)?;
            let d = tokio::time::timeout(Duration::from_secs(5), d.negotiate_version())
                .await
                .map_err(|_| Error::Timeout)?
                .map_err(api("negotiate the API version"))?;
            d.ping().await.map_err(api("ping"))?;
            Ok::<_, Error>(d)
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

    /// The engine's filter for what carries this project's compose label.
    fn project_filter(&self) -> HashMap<String, Vec<String>> {
        HashMap::from([(
            "label".to_string(),
            vec![format!("com.docker.compose.project={}", self.project)],
        )])
    }

    /// `docker inspect` of one container.
    fn inspect(&self, id: &str) -> Result<bollard::models::ContainerInspectResponse> {
        self.rt
            .block_on(
                self.docker
                    .inspect_container(id, None::<InspectContainerOptions>),
            )
            .map_err(api(format!("inspect {id:.12}")))
    }

    /// The engine's summaries of the project's containers, stopped ones included.
    fn summaries(&self) -> Result<Vec<bollard::models::ContainerSummary>> {
        self.rt
            .block_on(self.docker.list_containers(Some(ListContainersOptions {
                all: true,
                filters: Some(self.project_filter()),
                ..Default::default()
            })))
            .map_err(api("list containers"))
    }

    /// Every Butter container of the project (LAN nodes and gateways, stopped ones included),
    /// sorted by LAN, role and number, so seeded choices over the list are reproducible.
    pub fn containers(&self) -> Result<Vec<Container>> {
        let mut all = self.all_containers()?;
        all.retain(Container::is_butter);
        Ok(all)
    }

    /// Every container of the project, monitoring ones included, sorted like
    /// [`Engine::containers`].
    pub fn all_containers(&self) -> Result<Vec<Container>> {
        let list = self.summaries()?;
        let prefix = format!("{}_", self.project);
        let mut out: Vec<Container> = list
            .into_iter()
            .map(|c| {
                let labels = c.labels.unwrap_or_default();
                let label = |k: &str| labels.get(k).cloned().unwrap_or_default();
                let role = match label("butter.role").as_str() {
                    "node" => Role::Node,
                    "gateway" => Role::Gateway,
                    _ => Role::Other,
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
                Container {
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
                }
            })
            .collect();
        out.sort_by(|a, b| {
            (&a.lan, a.role, &a.service, a.number).cmp(&(&b.lan, b.role, &b.service, b.number))
        });
        Ok(out)
    }

    /// SIGKILL: a crash, not a clean stop; the container stays stopped until started.
    pub fn kill(&self, id: &str) -> Result<()> {
        self.rt
            .block_on(
                self.docker
                    .kill_container(id, Some(KillContainerOptions::default())),
            )
            .map_err(api(format!("kill {id:.12}")))?;
        Ok(())
    }

    /// Starts a stopped container; it keeps its volume and so its peer id.
    pub fn start(&self, id: &str) -> Result<()> {
        self.rt
            .block_on(
                self.docker
                    .start_container(id, None::<StartContainerOptions>),
            )
            .map_err(api(format!("start {id:.12}")))?;
        Ok(())
    }

    /// Freezes every process of the container (cgroup freezer).
    pub fn pause(&self, id: &str) -> Result<()> {
        self.rt
            .block_on(self.docker.pause_container(id))
            .map_err(api(format!("pause {id:.12}")))?;
        Ok(())
    }

    /// Thaws a paused container.
    pub fn unpause(&self, id: &str) -> Result<()> {
        self.rt
            .block_on(self.docker.unpause_container(id))
            .map_err(api(format!("unpause {id:.12}")))?;
        Ok(())
    }

    /// SIGTERM, up to 5 s of grace (the node hands its items off), SIGKILL, start.
    pub fn restart(&self, id: &str) -> Result<()> {
        self.rt
            .block_on(self.docker.restart_container(
                id,
                Some(RestartContainerOptions {
                    t: Some(5),
                    ..Default::default()
                }),
            ))
            .map_err(api(format!("restart {id:.12}")))?;
        Ok(())
    }

    /// The host PID of the container's init process (for `nsenter`).
    pub fn pid(&self, id: &str) -> Result<u32> {
        let c = self.inspect(id)?;
        let pid = c.state.and_then(|s| s.pid).unwrap_or(0);
        match u32::try_from(pid) {
            Ok(p) if p > 0 => Ok(p),
            _ => Err(Error::NotRunning(id.to_string())),
        }
    }

    /// The container's endpoint on a network (pinned address, aliases), if attached.
    pub fn endpoint(&self, id: &str, network: &str) -> Result<Option<EndpointSettings>> {
        let c = self.inspect(id)?;
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
            .map_err(api(format!("disconnect {id:.12} from {network}")))?;
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
            Err(e) if is_404(&e) => Err(api(format!("no network {network}"))(e)),
            Err(e) => Err(api(format!("connect {id:.12} to {network}"))(e)),
        }
    }

    /// One stats sample of a running container.
    pub fn memory(&self, id: &str) -> Result<Memory> {
        let stats = self.rt.block_on(async {
            self.docker
                .stats(
                    id,
                    Some(StatsOptions {
                        stream: false,
                        one_shot: true,
                    }),
                )
                .next()
                .await
        });
        let stats = stats
            .ok_or_else(|| Error::NoStats(id.to_string()))?
            .map_err(api(format!("stats of {id:.12}")))?;
        let m = stats.memory_stats.unwrap_or_default();
        let usage = m.usage.unwrap_or(0);
        let detail = m.stats.unwrap_or_default();
        let get = |k: &str| detail.get(k).copied();
        // cgroup v1 names first, then cgroup v2.
        let inactive = get("total_inactive_file")
            .or_else(|| get("inactive_file"))
            .unwrap_or(0);
        let rss = get("total_rss")
            .or_else(|| get("rss"))
            .or_else(|| get("anon"))
            .unwrap_or(0);
        Ok(Memory {
            usage,
            working_set: usage.saturating_sub(inactive),
            rss,
        })
    }

    /// Size of an image in bytes, or `None` if the engine does not have it.
    pub fn image_size(&self, image: &str) -> Result<Option<u64>> {
        match self.rt.block_on(self.docker.inspect_image(image)) {
            Ok(i) => Ok(i.size.and_then(|s| u64::try_from(s).ok())),
            Err(e) if is_404(&e) => Ok(None),
            Err(e) => Err(api(format!("inspect image {image}"))(e)),
        }
    }

    /// Creates a throwaway container of `image` with `env` on `network` (the default bridge if
    /// `None`), labelled `butter.bench=1`; returns its id.
    pub fn create_scratch(
        &self,
        image: &str,
        env: &[&str],
        network: Option<&str>,
    ) -> Result<String> {
        let body = ContainerCreateBody {
            image: Some(image.to_string()),
            env: Some(env.iter().map(|s| s.to_string()).collect()),
            labels: Some(HashMap::from([(
                "butter.bench".to_string(),
                "1".to_string(),
            )])),
            host_config: Some(HostConfig {
                readonly_rootfs: Some(true),
                network_mode: network.map(String::from),
                ..Default::default()
            }),
            ..Default::default()
        };
        let r = self
            .rt
            .block_on(
                self.docker
                    .create_container(None::<CreateContainerOptions>, body),
            )
            .map_err(api(format!("create a container of {image}")))?;
        Ok(r.id)
    }

    /// The first IPv4 address of a running container.
    pub fn ip(&self, id: &str) -> Result<Option<Ipv4Addr>> {
        let c = self.inspect(id)?;
        Ok(c.network_settings
            .and_then(|n| n.networks)
            .unwrap_or_default()
            .into_values()
            .filter_map(|ep| ep.ip_address?.parse().ok())
            .next())
    }

    /// Every container's health check state from one list call (no inspect per container:
    /// at 100+ containers those cost the engine more than the answer is worth), by engine id.
    /// The last check's output is not in the list: [`Engine::health`] has it.
    pub fn healths(&self) -> Result<BTreeMap<String, Health>> {
        Ok(self
            .summaries()?
            .into_iter()
            .filter_map(|c| {
                let status = health_in_summary(c.status.as_deref().unwrap_or(""));
                Some((
                    c.id?,
                    Health {
                        status: status.to_string(),
                        last_output: None,
                    },
                ))
            })
            .collect())
    }

    /// The container's health check state, from inspect (`State.Health`).
    pub fn health(&self, id: &str) -> Result<Health> {
        let c = self.inspect(id)?;
        let h = c.state.and_then(|s| s.health);
        let status = h
            .as_ref()
            .and_then(|h| h.status)
            .map(|s| s.to_string())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "none".to_string());
        let last_output = h
            .and_then(|h| h.log)
            .and_then(|log| log.into_iter().next_back())
            .and_then(|r| r.output)
            .map(|o| o.trim().to_string())
            .filter(|o| !o.is_empty());
        Ok(Health {
            status,
            last_output,
        })
    }

    /// Names of the volumes mounted by the project's containers (named and anonymous).
    pub fn project_volumes(&self) -> Result<Vec<String>> {
        let mut out: Vec<String> = self
            .summaries()?
            .into_iter()
            .flat_map(|c| c.mounts.unwrap_or_default())
            .filter_map(|m| m.name)
            .collect();
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// Removes a volume if it still exists; true if it was removed.
    pub fn remove_volume(&self, name: &str) -> Result<bool> {
        match self.rt.block_on(
            self.docker
                .remove_volume(name, None::<bollard::query_parameters::RemoveVolumeOptions>),
        ) {
            Ok(()) => Ok(true),
            Err(e) if is_404(&e) => Ok(false),
            Err(e) => Err(api(format!("remove volume {name}"))(e)),
        }
    }

    /// Removes a container (forced) and its anonymous volumes.
    pub fn remove(&self, id: &str) -> Result<()> {
        self.rt
            .block_on(self.docker.remove_container(
                id,
                Some(RemoveContainerOptions {
                    force: true,
                    v: true,
                    ..Default::default()
                }),
            ))
            .map_err(api(format!("remove {id:.12}")))?;
        Ok(())
    }

    /// The project's networks: name and how many containers the engine shows attached.
    pub fn project_networks(&self) -> Result<Vec<(String, usize)>> {
        use bollard::query_parameters::{InspectNetworkOptions, ListNetworksOptions};
        let nets = self
            .rt
            .block_on(self.docker.list_networks(Some(ListNetworksOptions {
                filters: Some(self.project_filter()),
            })))
            .map_err(api("list networks"))?;
        let mut out = Vec::new();
        for name in nets.into_iter().filter_map(|n| n.name) {
            // The list leaves `Containers` empty; inspect fills it.
            let attached = match self.rt.block_on(
                self.docker
                    .inspect_network(&name, None::<InspectNetworkOptions>),
            ) {
                Ok(n) => n.containers.map_or(0, |c| c.len()),
                Err(e) if is_404(&e) => continue,
                Err(e) => return Err(api(format!("inspect network {name}"))(e)),
            };
            out.push((name, attached));
        }
        Ok(out)
    }

    /// Names of the volumes labelled with the project (its named volumes, mounted or not).
    pub fn project_named_volumes(&self) -> Result<Vec<String>> {
        use bollard::query_parameters::ListVolumesOptions;
        let vols = self
            .rt
            .block_on(self.docker.list_volumes(Some(ListVolumesOptions {
                filters: Some(self.project_filter()),
            })))
            .map_err(api("list volumes"))?;
        Ok(vols
            .volumes
            .unwrap_or_default()
            .into_iter()
            .map(|v| v.name)
            .collect())
    }

    /// Removes a network if it still exists; true if it was removed.
    pub fn remove_network(&self, name: &str) -> Result<bool> {
        match self.rt.block_on(self.docker.remove_network(name)) {
            Ok(()) => Ok(true),
            Err(e) if is_404(&e) => Ok(false),
            Err(e) => Err(api(format!("remove network {name}"))(e)),
        }
    }

    /// Names of the networks and volumes still labelled with `project`, to prove `down` cleaned up.
    pub fn leftovers(&self) -> Result<Vec<String>> {
        use bollard::query_parameters::{ListNetworksOptions, ListVolumesOptions};
        let label = self.project_filter();
        let (nets, vols) = self.rt.block_on(async {
            let nets = self
                .docker
                .list_networks(Some(ListNetworksOptions {
                    filters: Some(label.clone()),
                }))
                .await
                .map_err(api("list networks"))?;
            let vols = self
                .docker
                .list_volumes(Some(ListVolumesOptions {
                    filters: Some(label.clone()),
                }))
                .await
                .map_err(api("list volumes"))?;
            Ok::<_, Error>((nets, vols))
        })?;
        let mut out: Vec<String> = nets
            .into_iter()
            .filter_map(|n| n.name)
            .map(|n| format!("network {n}"))
            .collect();
        out.extend(
            vols.volumes
                .unwrap_or_default()
                .into_iter()
                .map(|v| format!("volume {}", v.name)),
        );
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_status_text_gives_the_health_inspect_would() {
        assert_eq!(health_in_summary("Up 3 minutes (healthy)"), "healthy");
        assert_eq!(health_in_summary("Up 9 seconds (unhealthy)"), "unhealthy");
        assert_eq!(
            health_in_summary("Up 2 seconds (health: starting)"),
            "starting"
        );
        assert_eq!(health_in_summary("Up 2 hours"), "none");
        assert_eq!(health_in_summary("Exited (137) 5 seconds ago"), "none");
        assert_eq!(health_in_summary("Up 1 minute (Paused)"), "none");
    }
}
