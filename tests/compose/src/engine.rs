//! The Docker Engine API (through bollard), behind a small blocking facade: the driver and the
//! tests are plain threads that poll HTTP, so each call runs on a private current-thread runtime.

use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv4Addr, SocketAddr};

use anyhow::{Context, Result};
use bollard::Docker;
use bollard::models::{ContainerCreateBody, ContainerSummaryStateEnum, HostConfig};
use bollard::query_parameters::{
    CreateContainerOptions, InspectContainerOptions, KillContainerOptions, ListContainersOptions,
    RemoveContainerOptions, StartContainerOptions, StatsOptions,
};
use futures::StreamExt;

use crate::topology::HTTP_PORT;

/// What a container is in the testbed (from its `butter.role` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
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

/// One container of the compose project.
#[derive(Debug, Clone)]
pub struct Container {
    /// Engine id.
    pub id: String,
    /// Container name without the leading `/` (e.g. `butter_lan-a_1`).
    pub name: String,
    /// Compose service (`lan-a`, `gw-a`, `prometheus`).
    pub service: String,
    /// Replica number within the service (1-based).
    pub number: u32,
    /// Node, gateway or other.
    pub role: Role,
    /// The LAN it belongs to (`butter.lan` label); empty for monitoring containers.
    pub lan: String,
    /// Whether it is running.
    pub running: bool,
    /// IPv4 address per network, by the compose network name (`lan-a`, `wan`).
    pub ips: BTreeMap<String, Ipv4Addr>,
}

impl Container {
    /// Short stable name for tables: `lan-a-1`, `gw-a`.
    pub fn label(&self) -> String {
        match self.role {
            Role::Node => format!("{}-{}", self.service, self.number),
            _ => self.service.clone(),
        }
    }

    /// The address on its own LAN.
    pub fn lan_ip(&self) -> Option<Ipv4Addr> {
        self.ips.get(&self.lan).copied()
    }

    /// Where its HTTP API answers (its LAN address, port 7100).
    pub fn http(&self) -> Option<SocketAddr> {
        self.lan_ip().map(|ip| SocketAddr::from((ip, HTTP_PORT)))
    }

    /// Whether it is a Butter node (LAN node or gateway).
    pub fn is_butter(&self) -> bool {
        matches!(self.role, Role::Node | Role::Gateway)
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

/// A connection to the local Docker engine.
#[derive(Debug)]
pub struct Engine {
    docker: Docker,
    rt: tokio::runtime::Runtime,
}

impl Engine {
    /// Connects to the local engine (`DOCKER_HOST` or the default socket) and negotiates the API
    /// version, so an older engine (20.10 here) is spoken to in its own version.
    pub fn connect() -> Result<Self> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let docker = rt.block_on(async {
            let d = Docker::connect_with_local_defaults().context("no Docker socket")?;
            let d = tokio::time::timeout(std::time::Duration::from_secs(5), d.negotiate_version())
                .await
                .context("the Docker engine does not answer within 5 s")?
                .context("the Docker engine does not answer")?;
            d.ping()
                .await
                .context("the Docker engine does not answer")?;
            anyhow::Ok(d)
        })?;
        Ok(Engine { docker, rt })
    }

    /// Every container of `project` (stopped ones included), sorted by role, LAN and number.
    pub fn containers(&self, project: &str) -> Result<Vec<Container>> {
        let filters = HashMap::from([(
            "label".to_string(),
            vec![format!("com.docker.compose.project={project}")],
        )]);
        let list = self
            .rt
            .block_on(self.docker.list_containers(Some(ListContainersOptions {
                all: true,
                filters: Some(filters),
                ..Default::default()
            })))?;
        let prefix = format!("{project}_");
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
                let ips = c
                    .network_settings
                    .and_then(|n| n.networks)
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|(net, ep)| {
                        let ip = ep.ip_address?.parse().ok()?;
                        let short = net.strip_prefix(&prefix).unwrap_or(&net).to_string();
                        Some((short, ip))
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
                    running: c.state == Some(ContainerSummaryStateEnum::RUNNING),
                    ips,
                }
            })
            .collect();
        out.sort_by(|a, b| {
            (&a.lan, a.role, &a.service, a.number).cmp(&(&b.lan, b.role, &b.service, b.number))
        });
        Ok(out)
    }

    /// Sends SIGKILL to a container (a crash, not a clean stop).
    pub fn kill(&self, id: &str) -> Result<()> {
        self.rt.block_on(
            self.docker
                .kill_container(id, Some(KillContainerOptions::default())),
        )?;
        Ok(())
    }

    /// Starts a stopped container (it keeps its volume, so its peer id).
    pub fn start(&self, id: &str) -> Result<()> {
        self.rt.block_on(
            self.docker
                .start_container(id, None::<StartContainerOptions>),
        )?;
        Ok(())
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
        let stats = stats.context("no stats")??;
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
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(None),
            Err(e) => Err(e.into()),
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
        let r = self.rt.block_on(
            self.docker
                .create_container(None::<CreateContainerOptions>, body),
        )?;
        Ok(r.id)
    }

    /// The first IPv4 address of a running container.
    pub fn ip(&self, id: &str) -> Result<Option<Ipv4Addr>> {
        let c = self.rt.block_on(
            self.docker
                .inspect_container(id, None::<InspectContainerOptions>),
        )?;
        Ok(c.network_settings
            .and_then(|n| n.networks)
            .unwrap_or_default()
            .into_values()
            .filter_map(|ep| ep.ip_address?.parse().ok())
            .next())
    }

    /// The container's health check state, from inspect (`State.Health`).
    pub fn health(&self, id: &str) -> Result<Health> {
        let c = self.rt.block_on(
            self.docker
                .inspect_container(id, None::<InspectContainerOptions>),
        )?;
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

    /// The host pid of a running container's main process (the node), if running.
    pub fn pid(&self, id: &str) -> Result<Option<u32>> {
        let c = self.rt.block_on(
            self.docker
                .inspect_container(id, None::<InspectContainerOptions>),
        )?;
        Ok(c.state
            .and_then(|s| s.pid)
            .and_then(|p| u32::try_from(p).ok())
            .filter(|p| *p > 0))
    }

    /// Names of the volumes mounted by the project's containers (named and anonymous).
    pub fn project_volumes(&self, project: &str) -> Result<Vec<String>> {
        let filters = HashMap::from([(
            "label".to_string(),
            vec![format!("com.docker.compose.project={project}")],
        )]);
        let list = self
            .rt
            .block_on(self.docker.list_containers(Some(ListContainersOptions {
                all: true,
                filters: Some(filters),
                ..Default::default()
            })))?;
        let mut out: Vec<String> = list
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
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Removes a container (forced) and its anonymous volumes.
    pub fn remove(&self, id: &str) -> Result<()> {
        self.rt.block_on(self.docker.remove_container(
            id,
            Some(RemoveContainerOptions {
                force: true,
                v: true,
                ..Default::default()
            }),
        ))?;
        Ok(())
    }

    /// Names of the networks and volumes still labelled with `project`, to prove `down` cleaned up.
    pub fn leftovers(&self, project: &str) -> Result<Vec<String>> {
        use bollard::query_parameters::{ListNetworksOptions, ListVolumesOptions};
        let label = HashMap::from([(
            "label".to_string(),
            vec![format!("com.docker.compose.project={project}")],
        )]);
        let (nets, vols) = self.rt.block_on(async {
            let nets = self
                .docker
                .list_networks(Some(ListNetworksOptions {
                    filters: Some(label.clone()),
                }))
                .await?;
            let vols = self
                .docker
                .list_volumes(Some(ListVolumesOptions {
                    filters: Some(label.clone()),
                }))
                .await?;
            anyhow::Ok((nets, vols))
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
