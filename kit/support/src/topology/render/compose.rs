//! A topology as a docker compose file (format 2.4, for `docker-compose` 1.29 and `docker
//! compose` v2), shaped like `compose/docker-compose.yml`: one scalable service per site, one
//! dual-homed gateway per site on a shared WAN, pinned subnets under `BUTTER_SUBNET_PREFIX`, the
//! monitoring profile. Relative paths are relative to `compose/`: run it with
//! `--project-directory compose` (what [`crate::compose::Compose`] does for a rendered file).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::{Backend, refuse_nat_and_links};
use crate::network::gateway_of;
use crate::topology::{Endpoint, Error, Policy, Shape, Topology};

const PREFIX: &str = "${BUTTER_SUBNET_PREFIX:-10.210}";

const HEAD: &str = r#"version: "2.4"

x-node: &node
  image: ${BUTTER_IMAGE:-butter-node:local}
  restart: "no"
  read_only: true
  cap_drop: [ALL]
  security_opt: ["no-new-privileges:true"]
  mem_limit: 128m
  stop_grace_period: 6s
  healthcheck:
    test: ["CMD", "/butter-node", "health"]
    interval: ${BUTTER_HEALTH_INTERVAL:-5s}
    timeout: 3s
    retries: 3
    start_period: 10s

x-env: &env
  BUTTER_LISTEN: 0.0.0.0:7000
  BUTTER_HTTP: 0.0.0.0:7100
  BUTTER_DATA_DIR: /data
  BUTTER_NETWORK: ${BUTTER_NETWORK:-butter-compose}
  BUTTER_LOG_FORMAT: ${BUTTER_LOG_FORMAT:-json}
  BUTTER_LOG_LEVEL: ${BUTTER_LOG_LEVEL:-info}

services:
"#;

/// The third octet of the monitoring network: 9 as in the shipped file, past the sites when
/// there are more than 8.
fn monitoring_octet(sites: usize) -> usize {
    if sites < 9 { 9 } else { sites + 1 }
}

fn labels(role: &str, site: &str, extra: &BTreeMap<String, String>) -> String {
    let mut out = format!("{{butter.role: {role}, butter.lan: {site}");
    for (k, v) in extra {
        let _ = write!(
            out,
            ", butter.label.{k}: {}",
            serde_json::Value::from(v.as_str())
        );
    }
    out.push('}');
    out
}

/// The compose file for `t`, or why compose cannot run it.
pub fn render(t: &Topology) -> Result<String, Error> {
    refuse_nat_and_links(t, Backend::Compose)?;
    let mut out = format!(
        "# Rendered by `butter-kit render --backend compose` from {} ({}){}.\n# Edit the topology, \
         not this file. Relative paths are relative to compose/ (--project-directory compose).\n",
        t.file_name(),
        t.name,
        if t.description.is_empty() {
            String::new()
        } else {
            format!(": {}", t.description)
        }
    );
    out.push_str(HEAD);
    let gateways = t.gateway_sites();
    for s in &t.sites {
        let _ = write!(
            out,
            "  {name}:\n    <<: *node\n    scale: {n}\n    labels: {labels}\n    environment:\n      \
             <<: *env\n      BUTTER_SITE: {name}\n",
            name = s.name,
            n = s.nodes,
            labels = labels("node", &s.name, &s.labels),
        );
        if t.bootstrap == Policy::Gateways {
            let _ = writeln!(out, "      BUTTER_BOOTSTRAP: {}:7000", gateway_of(&s.name));
        }
        let _ = write!(out, "    networks: [{}]\n\n", s.name);
    }
    for (i, s) in t.sites.iter().enumerate().filter(|(_, s)| s.gateway) {
        let gw = gateway_of(&s.name);
        let _ = write!(
            out,
            "  {gw}:\n    <<: *node\n    hostname: {gw}\n    labels: {labels}\n    environment:\n      \
             <<: *env\n      BUTTER_SITE: {name}\n",
            name = s.name,
            labels = labels("gateway", &s.name, &s.labels),
        );
        let others: Vec<String> = gateways
            .iter()
            .filter(|g| **g != s.name)
            .map(|g| format!("{}:7000", gateway_of(g)))
            .collect();
        if t.bootstrap == Policy::Gateways && !others.is_empty() {
            let _ = writeln!(out, "      BUTTER_BOOTSTRAP: {}", others.join(","));
        }
        let _ = write!(
            out,
            "      BUTTER_CONFIG: /etc/butter/gateway.toml\n    volumes: [\"{gw}-data:/data\", \
             \"./node/gateway.toml:/etc/butter/gateway.toml:ro\"]\n    networks:\n      \
             {name}: {{ipv4_address: \"{PREFIX}.{sub}.2\"}}\n      wan: {{ipv4_address: \
             \"{PREFIX}.0.{wan}\"}}\n\n",
            name = s.name,
            sub = i + 1,
            wan = 11 + i,
        );
    }
    let site_list: Vec<&str> = t.sites.iter().map(|s| s.name.as_str()).collect();
    let _ = write!(
        out,
        r#"  prometheus:
    image: ${{PROMETHEUS_IMAGE:-prom/prometheus:v2.53.4}}
    profiles: [monitoring]
    command:
      - --config.file=/etc/prometheus/prometheus.yml
      - --storage.tsdb.retention.time=2d
      - --web.enable-lifecycle
    volumes:
      - ./prometheus/prometheus.yml:/etc/prometheus/prometheus.yml:ro
    ports: ["${{PROMETHEUS_PORT:-9090}}:9090"]
    extra_hosts: ["host.docker.internal:host-gateway"]
    networks: [{sites}, monitoring]

  grafana:
    image: ${{GRAFANA_IMAGE:-grafana/grafana-oss:11.6.1}}
    profiles: [monitoring]
    environment:
      GF_AUTH_ANONYMOUS_ENABLED: "true"
      GF_AUTH_ANONYMOUS_ORG_ROLE: Viewer
      GF_AUTH_DISABLE_LOGIN_FORM: "false"
      GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH: /var/lib/grafana/dashboards/butter-overview.json
      GF_ANALYTICS_REPORTING_ENABLED: "false"
      GF_ANALYTICS_CHECK_FOR_UPDATES: "false"
    volumes:
      - ./grafana/provisioning:/etc/grafana/provisioning:ro
      - ../dashboards:/var/lib/grafana/dashboards:ro
    ports: ["${{GRAFANA_PORT:-3000}}:3000"]
    depends_on: [prometheus]
    networks: [monitoring]

networks:
"#,
        sites = site_list.join(", ")
    );
    let network = |out: &mut String, name: &str, octet: usize, range: bool| {
        let _ = write!(
            out,
            "  {name}:\n    ipam:\n      config:\n        - subnet: {PREFIX}.{octet}.0/24\n"
        );
        if range {
            let _ = write!(
                out,
                "          gateway: {PREFIX}.{octet}.1\n          ip_range: {PREFIX}.{octet}.128/25\n"
            );
        }
    };
    network(&mut out, "wan", 0, true);
    for (i, s) in t.sites.iter().enumerate() {
        network(&mut out, &s.name, i + 1, true);
    }
    network(
        &mut out,
        "monitoring",
        monitoring_octet(t.sites.len()),
        false,
    );
    if !gateways.is_empty() {
        out.push_str("\nvolumes:\n");
        for g in &gateways {
            let _ = writeln!(out, "  {}-data:", gateway_of(g));
        }
    }
    Ok(out)
}

/// Reads a rendered compose file back: each Butter service's site (`butter.lan`), role
/// (`butter.role`), replicas (`scale`, 1 without) and `BUTTER_BOOTSTRAP`.
pub fn shape(text: &str) -> Shape {
    #[derive(Default)]
    struct Service {
        site: String,
        role: String,
        scale: usize,
        bootstrap: Vec<String>,
    }
    let mut services: BTreeMap<String, Service> = BTreeMap::new();
    let mut current: Option<String> = None;
    let mut in_services = false;
    for line in text.lines() {
        if !line.starts_with(' ') && !line.is_empty() && !line.starts_with('#') {
            in_services = line == "services:";
            current = None;
            continue;
        }
        if !in_services {
            continue;
        }
        if let Some(name) = line.strip_prefix("  ").and_then(|l| l.strip_suffix(':'))
            && !name.starts_with(' ')
        {
            current = Some(name.to_string());
            services.insert(
                name.to_string(),
                Service {
                    scale: 1,
                    ..Service::default()
                },
            );
            continue;
        }
        let Some(svc) = current.as_ref().and_then(|c| services.get_mut(c)) else {
            continue;
        };
        let l = line.trim();
        if let Some(v) = l.strip_prefix("scale:") {
            svc.scale = v.trim().parse().unwrap_or(1);
        } else if let Some(v) = l.strip_prefix("labels:") {
            let v = v.trim().trim_start_matches('{').trim_end_matches('}');
            for kv in v.split(',') {
                match kv.split_once(':').map(|(k, v)| (k.trim(), v.trim())) {
                    Some(("butter.role", r)) => svc.role = r.to_string(),
                    Some(("butter.lan", s)) => svc.site = s.to_string(),
                    _ => {}
                }
            }
        } else if let Some(v) = l.strip_prefix("BUTTER_BOOTSTRAP:") {
            svc.bootstrap = v
                .split(',')
                .map(|a| a.trim().trim_end_matches(":7000").to_string())
                .filter(|a| !a.is_empty())
                .collect();
        }
    }
    let endpoint = |svc: &Service| match svc.role.as_str() {
        "gateway" => Endpoint::Gateway(svc.site.clone()),
        _ => Endpoint::Nodes(svc.site.clone()),
    };
    let mut shape = Shape::default();
    for svc in services.values().filter(|s| !s.role.is_empty()) {
        let e = shape.sites.entry(svc.site.clone()).or_default();
        match svc.role.as_str() {
            "gateway" => e.1 += svc.scale,
            _ => e.0 += svc.scale,
        }
        for target in &svc.bootstrap {
            if let Some(t) = services.get(target) {
                shape.edges.insert((endpoint(svc), endpoint(t)));
            }
        }
    }
    shape
}
