//! A topology as the flags of `netns/lab.sh up` (root), which builds it in network namespaces.
//!
//! Without NAT the lab is *routed*: site N is subnet `sN` (10.N.0.0/24) behind one router, and a
//! site's gateway is its host 1 (`--gateways`: it runs with `compose/node/gateway.toml`, like
//! compose's `gw-*`). With NAT the lab has a public segment (subnet 0: the one site without NAT)
//! and one NAT gateway namespace per other site (`--nat sN=eim|symmetric`); a site's gateway is
//! its host 1, whose QUIC port the NAT forwards (`--forward sN`). The lab builds every subnet
//! alike, so the sites of a subnet kind must have the same nodes and gateway.
//!
//! Nodes carry their site's name as their site label (`--site-name sN=NAME`), as on compose and
//! Kubernetes; the [`Plan`] also lists which site each subnet is, for people.

use std::path::Path;

use crate::topology::{Endpoint, Error, Nat, Policy, Shape, Site, Topology};

/// What `lab.sh` runs for a topology.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The arguments of `netns/lab.sh` (starting with `up`).
    pub args: Vec<String>,
    /// Site name per subnet: `(subnet, site)`; subnet 0 is the public segment.
    pub subnets: Vec<(usize, String)>,
    /// What the lab will not do as written (a delay without netem), for the user.
    pub warnings: Vec<String>,
}

impl Plan {
    /// The command line, for printing.
    pub fn command(&self) -> String {
        format!("netns/lab.sh {}", self.args.join(" "))
    }
}

fn lab_nat(t: &Topology, s: &Site) -> Result<&'static str, Error> {
    match s.nat {
        Nat::EndpointIndependent => Ok("eim"),
        Nat::Symmetric => Ok("symmetric"),
        other => Err(t.error(
            &s.nat_span,
            format!(
                "site {:?}: NAT preset {:?} is not in the netns lab yet: its NAT gateways are \
                 Linux masquerade, endpoint-independent or symmetric; use nat = \
                 \"endpoint-independent\" or \"symmetric\"",
                s.name,
                other.as_str()
            ),
        )),
    }
}

/// Whether this kernel can run `tc netem` (one-way delay): the module is loaded, built in, or
/// on disk to load.
pub fn netem_available() -> bool {
    if Path::new("/sys/module/sch_netem").exists() {
        return true;
    }
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let dir = Path::new("/lib/modules")
        .join(release.trim())
        .join("kernel/net/sched");
    [
        "sch_netem.ko",
        "sch_netem.ko.xz",
        "sch_netem.ko.zst",
        "sch_netem.ko.gz",
    ]
    .iter()
    .any(|f| dir.join(f).exists())
}

fn same_shape<'a>(t: &Topology, sites: &[&'a Site]) -> Result<Option<&'a Site>, Error> {
    let Some(first) = sites.first() else {
        return Ok(None);
    };
    if let Some(odd) = sites
        .iter()
        .find(|s| s.nodes != first.nodes || s.gateway != first.gateway)
    {
        let describe = |s: &Site| {
            format!(
                "{} nodes{}",
                s.nodes,
                if s.gateway { " + gateway" } else { "" }
            )
        };
        return Err(t.error(
            &odd.span,
            format!(
                "the netns lab builds every subnet alike: site {:?} has {} but {:?} has {}; \
                 give them the same nodes and gateway, or use --backend compose",
                odd.name,
                describe(odd),
                first.name,
                describe(first)
            ),
        ));
    }
    Ok(Some(first))
}

/// The lab plan for `t` (with `netem`: whether delays can be applied), or why the lab cannot
/// build it.
pub fn render(t: &Topology, netem: bool) -> Result<Plan, Error> {
    let natted = t.sites.iter().any(|s| s.nat != Nat::None);
    let mut args: Vec<String> = vec!["up".into()];
    let push = |args: &mut Vec<String>, k: &str, v: String| {
        args.push(k.into());
        args.push(v);
    };
    let mut subnets = Vec::new();
    if natted {
        let public: Vec<&Site> = t.sites.iter().filter(|s| s.nat == Nat::None).collect();
        if public.len() > 1 {
            return Err(t.error(
                &public[1].span,
                format!(
                    "the netns lab has one public segment, so one site without NAT; {:?} and \
                     {:?} both have none: give one of them a NAT preset",
                    public[0].name, public[1].name
                ),
            ));
        }
        let lans: Vec<&Site> = t.sites.iter().filter(|s| s.nat != Nat::None).collect();
        let lan = same_shape(t, &lans)?.expect("a NATed topology has a NATed site");
        push(&mut args, "--topology", "nat".into());
        push(&mut args, "--subnets", lans.len().to_string());
        push(
            &mut args,
            "--hosts",
            (lan.nodes + usize::from(lan.gateway)).to_string(),
        );
        if let Some(p) = public.first() {
            if p.gateway {
                return Err(t.error(
                    &p.span,
                    format!(
                        "site {:?} is the public segment (no NAT): every node there is public \
                         already; set gateway = false",
                        p.name
                    ),
                ));
            }
            push(&mut args, "--public", p.nodes.to_string());
            subnets.push((0, p.name.clone()));
        } else {
            push(&mut args, "--public", "0".into());
        }
        for (i, s) in lans.iter().enumerate() {
            push(&mut args, "--nat", format!("s{}={}", i + 1, lab_nat(t, s)?));
            if s.gateway {
                push(&mut args, "--forward", format!("s{}", i + 1));
            }
            subnets.push((i + 1, s.name.clone()));
        }
        if lan.gateway {
            args.push("--gateways".into());
        }
        match t.bootstrap {
            Policy::Public => push(&mut args, "--bootstrap", "public".into()),
            Policy::None => push(&mut args, "--bootstrap", "none".into()),
            Policy::Gateways => {
                return Err(t.error(
                    &t.bootstrap_span,
                    "behind NATs the netns lab bootstraps through the public segment: use \
                     policy \"public\" (or \"none\")"
                        .into(),
                ));
            }
        }
    } else {
        let sites: Vec<&Site> = t.sites.iter().collect();
        let site = same_shape(t, &sites)?.expect("a topology has a site");
        push(&mut args, "--subnets", t.sites.len().to_string());
        push(
            &mut args,
            "--hosts",
            (site.nodes + usize::from(site.gateway)).to_string(),
        );
        if site.gateway {
            args.push("--gateways".into());
        }
        push(&mut args, "--bootstrap", t.bootstrap.as_str().to_string());
        subnets.extend(
            t.sites
                .iter()
                .enumerate()
                .map(|(i, s)| (i + 1, s.name.clone())),
        );
    }
    for (i, name) in &subnets {
        push(&mut args, "--site-name", format!("s{i}={name}"));
    }
    let mut warnings = Vec::new();
    for l in &t.links {
        let subnet = subnets
            .iter()
            .find(|(_, n)| *n == l.site)
            .map_or(0, |(i, _)| *i);
        if subnet == 0 {
            return Err(t.error(
                &l.span,
                format!(
                    "[[link]] of {:?}: the netns lab shapes the LAN subnets, not the public \
                     segment; shape the NATed sites instead",
                    l.site
                ),
            ));
        }
        if let Some(loss) = l.loss {
            if loss.fract() != 0.0 {
                return Err(t.error(
                    &l.span,
                    format!(
                        "[[link]] of {:?}: loss = {loss}: the netns lab drops whole percentages; \
                         use {} or {}",
                        l.site,
                        loss.floor(),
                        loss.ceil()
                    ),
                ));
            }
            push(&mut args, "--loss", format!("s{subnet}={loss}"));
        }
        if let Some(rate) = &l.rate {
            push(&mut args, "--rate", format!("s{subnet}={rate}"));
        }
        if let Some(delay) = l.delay_ms {
            if !netem {
                let at = t.error(&l.span, String::new());
                warnings.push(format!(
                    "{}:{}: site {:?}: delay_ms = {delay} needs the netem qdisc (sch_netem), \
                     which this kernel lacks: the lab skips the delay (loss and rate still \
                     apply); a kernel with CONFIG_NET_SCH_NETEM runs it",
                    at.file, at.line, l.site
                ));
            }
            push(&mut args, "--delay", format!("s{subnet}={delay}"));
        }
    }
    Ok(Plan {
        args,
        subnets,
        warnings,
    })
}

/// Reads a plan's flags back as `lab.sh` would build them: subnets and hosts, who is a gateway
/// (`--gateways`: host 1 of each LAN subnet), the site labels (`--site-name`) and the bootstrap
/// edges of `bootstrap_of` in `lab.sh`.
pub fn shape(plan: &Plan) -> Shape {
    let flag = |k: &str| {
        plan.args
            .windows(2)
            .find(|w| w[0] == k)
            .map(|w| w[1].clone())
    };
    let num = |k: &str, d: usize| flag(k).and_then(|v| v.parse().ok()).unwrap_or(d);
    let nat = flag("--topology").as_deref() == Some("nat");
    let subnets = num("--subnets", 2);
    let hosts = num("--hosts", 3);
    let public = if nat { num("--public", 1) } else { 0 };
    let gateways = plan.args.iter().any(|a| a == "--gateways");
    let bootstrap = flag("--bootstrap").unwrap_or_else(|| "none".into());
    // Site labels as lab.sh gives them: `--site-name sN=NAME`, else `sN`.
    let name = |i: usize| {
        let prefix = format!("s{i}=");
        plan.args
            .windows(2)
            .filter(|w| w[0] == "--site-name")
            .find_map(|w| w[1].strip_prefix(&prefix).map(String::from))
            .unwrap_or_else(|| format!("s{i}"))
    };
    let mut shape = Shape::default();
    if public > 0 {
        shape.sites.insert(name(0), (public, 0));
    }
    for i in 1..=subnets {
        let g = usize::from(gateways);
        shape.sites.insert(name(i), (hosts - g, g));
    }
    let node = |i: usize| Endpoint::Nodes(name(i));
    let gw = |i: usize| Endpoint::Gateway(name(i));
    for i in 1..=subnets {
        match bootstrap.as_str() {
            "gateways" => {
                if hosts > 1 {
                    shape.edges.insert((node(i), gw(i)));
                }
                for o in (1..=subnets).filter(|o| *o != i) {
                    shape.edges.insert((gw(i), gw(o)));
                }
            }
            "public" if public > 0 => {
                let first = Endpoint::First(name(0));
                if hosts > usize::from(gateways) {
                    shape.edges.insert((node(i), first.clone()));
                }
                if gateways {
                    shape.edges.insert((gw(i), first));
                }
            }
            _ => {}
        }
    }
    shape
}
