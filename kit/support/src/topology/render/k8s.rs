//! A topology as a kustomize overlay over `k8s/base`: a directory per site (its nodes: a
//! StatefulSet `butter-<site>` with its headless Service) and per gateway (`butter-<site>-gw`, one
//! replica), all in namespace `butter`. Pods get `butter.dev/site` (their `BUTTER_SITE`, through
//! the downward API) and `butter.dev/role`; bootstrap addresses are the headless Services' DNS
//! names, so sites find each other without multicast, as in `k8s/overlays/two-sites`.
//!
//! NAT presets and link shaping are refused: a pod network is flat.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::{Backend, refuse_nat_and_links};
use crate::topology::{Endpoint, Error, Policy, Shape, Topology};

/// An overlay: file path (relative to the overlay directory) → text.
pub type Overlay = BTreeMap<String, String>;

fn service(site: &str, gateway: bool) -> String {
    format!("butter-{site}{}", if gateway { "-gw" } else { "" })
}

fn dns(site: &str, gateway: bool) -> String {
    format!(
        "{}.$(POD_NAMESPACE).svc.cluster.local:7000",
        service(site, gateway)
    )
}

fn valid_label_value(v: &str) -> bool {
    v.len() <= 63
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && v.chars().next().is_none_or(|c| c.is_ascii_alphanumeric())
        && v.chars().last().is_none_or(|c| c.is_ascii_alphanumeric())
}

/// The overlay for `t`; `base` is the path from a site directory of the overlay to `k8s/base`
/// (`../../../base` for an overlay in `k8s/overlays/<name>/`).
pub fn render(t: &Topology, base: &str) -> Result<Overlay, Error> {
    refuse_nat_and_links(t, Backend::K8s)?;
    for s in &t.sites {
        if let Some((k, v)) = s.labels.iter().find(|(_, v)| !valid_label_value(v)) {
            return Err(t.error(
                &s.span,
                format!(
                    "site {:?}: label {k} = {v:?} is not a Kubernetes label value (63 \
                     characters at most: letters, digits, '-', '_', '.'); shorten it",
                    s.name
                ),
            ));
        }
    }
    let mut overlay = Overlay::new();
    let mut resources = vec!["namespace.yaml".to_string()];
    let gateways = t.gateway_sites();
    for s in &t.sites {
        let mut parts = vec![(false, s.nodes)];
        if s.gateway {
            parts.push((true, 1));
        }
        for (gateway, replicas) in parts {
            let dir = service(&s.name, gateway)
                .trim_start_matches("butter-")
                .to_string();
            let bootstrap: Vec<String> = match (t.bootstrap, gateway) {
                (Policy::Gateways, false) => vec![dns(&s.name, true)],
                (Policy::Gateways, true) => gateways
                    .iter()
                    .filter(|g| **g != s.name)
                    .map(|g| dns(g, true))
                    .collect(),
                _ => Vec::new(),
            };
            let role = if gateway { "gateway" } else { "node" };
            let mut text = format!(
                "# Site {site}: {what}. Rendered by `butter-kit render --backend k8s` from {file};\n\
                 # edit the topology, not this file.\n\
                 apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n\n\
                 resources:\n  - {base}\n\nnameSuffix: -{dir}\n\nlabels:\n  - pairs:\n      \
                 butter.dev/site: {site}\n      butter.dev/role: {role}\n",
                site = s.name,
                what = if gateway { "its gateway" } else { "its nodes" },
                file = t.file_name(),
            );
            for (k, v) in &s.labels {
                let _ = writeln!(text, "      butter.dev/label-{k}: {v:?}");
            }
            let _ = write!(
                text,
                "    includeSelectors: true\n    includeTemplates: true\n\npatches:\n  \
                 # A JSON patch keeps BUTTER_BOOTSTRAP after POD_NAMESPACE (see two-sites).\n  \
                 - target:\n      kind: StatefulSet\n      name: butter\n    patch: |-\n      \
                 - op: replace\n        path: /spec/replicas\n        value: {replicas}\n      \
                 - op: test\n        path: /spec/template/spec/containers/0/env/2/name\n        \
                 value: BUTTER_BOOTSTRAP\n      - op: replace\n        path: \
                 /spec/template/spec/containers/0/env/2/value\n        value: \"{}\"\n",
                bootstrap.join(",")
            );
            overlay.insert(format!("{dir}/kustomization.yaml"), text);
            resources.push(dir);
        }
    }
    overlay.insert(
        "namespace.yaml".into(),
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: butter\n  labels:\n    \
         pod-security.kubernetes.io/enforce: restricted\n"
            .into(),
    );
    let mut top = format!(
        "# Topology {name} ({file}){desc}: a StatefulSet per site and per gateway in namespace\n\
         # butter. Rendered by `butter-kit render --backend k8s`; edit the topology, not this file.\n\
         #   kubectl apply -k <this directory>\n\
         apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n\nnamespace: butter\n\n\
         resources:\n",
        name = t.name,
        file = t.file_name(),
        desc = if t.description.is_empty() {
            String::new()
        } else {
            format!(": {}", t.description)
        },
    );
    for r in &resources {
        let _ = writeln!(top, "  - {r}");
    }
    overlay.insert("kustomization.yaml".into(), top);
    Ok(overlay)
}

/// Reads an overlay back: per site directory its site and role labels, replicas and the
/// Services its `BUTTER_BOOTSTRAP` names.
pub fn shape(overlay: &Overlay) -> Shape {
    struct Part {
        site: String,
        gateway: bool,
        replicas: usize,
        bootstrap: Vec<String>,
    }
    let mut parts: BTreeMap<String, Part> = BTreeMap::new();
    for (path, text) in overlay {
        let Some(dir) = path.strip_suffix("/kustomization.yaml") else {
            continue;
        };
        let mut part = Part {
            site: String::new(),
            gateway: false,
            replicas: 0,
            bootstrap: Vec::new(),
        };
        let mut next_is_replicas = false;
        let mut next_is_bootstrap = false;
        for line in text.lines().map(str::trim) {
            if let Some(v) = line.strip_prefix("butter.dev/site:") {
                part.site = v.trim().to_string();
            } else if let Some(v) = line.strip_prefix("butter.dev/role:") {
                part.gateway = v.trim() == "gateway";
            } else if line == "path: /spec/replicas" {
                next_is_replicas = true;
            } else if line == "path: /spec/template/spec/containers/0/env/2/value" {
                next_is_bootstrap = true;
            } else if let Some(v) = line.strip_prefix("value:") {
                let v = v.trim().trim_matches('"');
                if next_is_replicas {
                    part.replicas = v.parse().unwrap_or(0);
                } else if next_is_bootstrap {
                    part.bootstrap = v
                        .split(',')
                        .filter_map(|a| a.split('.').next())
                        .filter(|a| !a.is_empty())
                        .map(String::from)
                        .collect();
                }
                next_is_replicas = false;
                next_is_bootstrap = false;
            }
        }
        parts.insert(format!("butter-{dir}"), part);
    }
    let endpoint = |p: &Part| {
        if p.gateway {
            Endpoint::Gateway(p.site.clone())
        } else {
            Endpoint::Nodes(p.site.clone())
        }
    };
    let mut shape = Shape::default();
    for p in parts.values() {
        let e = shape.sites.entry(p.site.clone()).or_default();
        if p.gateway {
            e.1 += p.replicas;
        } else {
            e.0 += p.replicas;
        }
        for svc in &p.bootstrap {
            if let Some(target) = parts.get(svc) {
                shape.edges.insert((endpoint(p), endpoint(target)));
            }
        }
    }
    shape
}
