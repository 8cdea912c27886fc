//! Renderers: one [`Topology`] as what each backend runs.
//!
//! - [`compose`]: a docker compose file (the default topology renders to the equivalent of
//!   `compose/docker-compose.yml`); NAT presets and link shaping are refused (Docker networks
//!   have no NAT router between them) with a pointer to the netns backend.
//! - [`netns`]: the `netns/lab.sh up` flags (routed subnets, or NAT gateways and a public
//!   segment).
//! - [`k8s`]: a kustomize overlay with a directory per site (and per gateway), over `k8s/base`.
//!
//! Each rendering can be read back into a [`Shape`](super::Shape) (sites, node counts, bootstrap
//! edges) from what it produced, so a test can check the three agree.

pub mod compose;
pub mod k8s;
pub mod netns;

use super::{Nat, Topology};

/// The backends a topology renders for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// docker compose.
    Compose,
    /// The netns lab.
    Netns,
    /// Kubernetes (kustomize).
    K8s,
}

impl Backend {
    /// Its name on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Compose => "compose",
            Backend::Netns => "netns",
            Backend::K8s => "k8s",
        }
    }
}

/// Refuses the features a backend without a NAT router or link shaping cannot model (NAT
/// presets, the `public` policy that only makes sense with them, link shaping), naming the
/// feature and the backend that has it.
pub(crate) fn refuse_nat_and_links(t: &Topology, backend: Backend) -> Result<(), super::Error> {
    let why = match backend {
        Backend::Compose => "Docker networks have no NAT router between them",
        Backend::K8s => "a pod network is flat, with no NAT router between sites",
        Backend::Netns => return Ok(()),
    };
    if let Some(s) = t.sites.iter().find(|s| s.nat != Nat::None) {
        return Err(t.error(
            &s.nat_span,
            format!(
                "site {:?}: NAT preset {:?} cannot run on the {} backend ({why}); the netns \
                 backend has NAT routers: butter-kit --backend netns render --topology {}",
                s.name,
                s.nat.as_str(),
                backend.as_str(),
                t.file
            ),
        ));
    }
    if t.bootstrap == super::Policy::Public {
        return Err(t.error(
            &t.bootstrap_span,
            format!(
                "bootstrap policy \"public\" bootstraps NATed sites through a public segment, \
                 which the {} backend cannot model; use \"gateways\" (or the netns backend)",
                backend.as_str()
            ),
        ));
    }
    if let Some(l) = t.links.first() {
        return Err(t.error(
            &l.span,
            format!(
                "[[link]] of site {:?}: link shaping (loss, rate, delay) is not modelled by the \
                 {} renderer; the netns backend shapes links (--backend netns){}",
                l.site,
                backend.as_str(),
                if backend == Backend::Compose {
                    ", and `butter-kit chaos loss` adds loss to a running compose network"
                } else {
                    ""
                }
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
