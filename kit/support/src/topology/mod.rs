//! Topology files (`topologies/*.toml`): one description of a Butter network that renders for
//! every backend (compose, netns, Kubernetes; see [`render`]).
//!
//! A file names its sites (node counts, labels, a NAT preset, a gateway), per-site link shaping
//! (loss, rate, delay) and the bootstrap policy. Unknown keys are errors, and every error says the
//! file, the line and what to change ([`Error`]); `topologies/README.md` documents each key.
//!
//! ```
//! let text = r#"
//! [bootstrap]
//! policy = "gateways"
//!
//! [[site]]
//! name = "lan-a"
//! nodes = 4
//! "#;
//! let t = butter_testbed::topology::Topology::parse(text, "inline.toml").unwrap();
//! assert_eq!(t.sites[0].nodes, 4);
//! assert!(t.sites[0].gateway);
//! ```

pub mod render;

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::Path;

use serde::Deserialize;
use toml::Spanned;

/// Most sites a file may have (each is a /24 under the backends' address prefix).
pub const MAX_SITES: usize = 200;
/// Most nodes a site may have (a /24, and the netns lab's limit per subnet).
pub const MAX_NODES: usize = 200;

/// A topology file that does not parse or does not make sense: where and what to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}:{column}: {message}")]
pub struct Error {
    /// The file as given.
    pub file: String,
    /// 1-based line of the offending key or value (1 when the file as a whole is at fault).
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// What is wrong and what to change.
    pub message: String,
}

impl Error {
    /// An error at byte range `span` of `text`.
    pub fn at(file: &str, text: &str, span: Option<Range<usize>>, message: String) -> Self {
        let start = span.map_or(0, |s| s.start).min(text.len());
        let before = &text[..start];
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        Error {
            file: file.to_string(),
            line,
            column,
            message,
        }
    }
}

/// A site's NAT preset: how the router between the site and the rest maps and filters
/// (RFC 4787 terms).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Nat {
    /// No NAT: the site's addresses are routed.
    #[default]
    None,
    /// Endpoint-independent mapping and filtering (full cone).
    EndpointIndependent,
    /// Endpoint-independent mapping, address-dependent filtering.
    AddressRestricted,
    /// Endpoint-independent mapping, address-and-port-dependent filtering.
    PortRestricted,
    /// A new mapping per destination (address-and-port-dependent mapping).
    Symmetric,
}

impl Nat {
    /// The name used in files.
    pub fn as_str(self) -> &'static str {
        match self {
            Nat::None => "none",
            Nat::EndpointIndependent => "endpoint-independent",
            Nat::AddressRestricted => "address-restricted",
            Nat::PortRestricted => "port-restricted",
            Nat::Symmetric => "symmetric",
        }
    }
}

/// Who bootstraps from whom (multicast finds the rest inside each site).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Policy {
    /// Every node bootstraps from its site's gateway; every gateway from every other gateway
    /// (today's compose network). Every site needs `gateway = true`.
    #[default]
    Gateways,
    /// Every node of a NATed site bootstraps from the first node of the one site without NAT
    /// (the public segment).
    Public,
    /// Nobody: multicast only, so sites stay apart.
    None,
}

impl Policy {
    /// The name used in files.
    pub fn as_str(self) -> &'static str {
        match self {
            Policy::Gateways => "gateways",
            Policy::Public => "public",
            Policy::None => "none",
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRepr {
    name: Option<String>,
    description: Option<String>,
    #[serde(default)]
    bootstrap: Option<Spanned<BootstrapRepr>>,
    #[serde(default, rename = "site")]
    sites: Vec<Spanned<SiteRepr>>,
    #[serde(default, rename = "link")]
    links: Vec<Spanned<LinkRepr>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BootstrapRepr {
    policy: Spanned<Policy>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SiteRepr {
    name: Spanned<String>,
    nodes: Spanned<i64>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    nat: Option<Spanned<Nat>>,
    #[serde(default)]
    gateway: Option<Spanned<bool>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LinkRepr {
    site: Spanned<String>,
    loss: Option<Spanned<f64>>,
    rate: Option<Spanned<String>>,
    delay_ms: Option<Spanned<i64>>,
}

/// Where a value was written in the file, for backends that refuse it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Span(pub Range<usize>);

/// One site: a LAN with its own subnet and multicast domain.
#[derive(Debug, Clone, PartialEq)]
pub struct Site {
    /// Its name (also its `BUTTER_SITE` label on compose and Kubernetes): lowercase letters,
    /// digits and `-`.
    pub name: String,
    /// Nodes on the site, its gateway not counted.
    pub nodes: usize,
    /// Free-form labels (container and pod labels `butter.label.<key>`).
    pub labels: BTreeMap<String, String>,
    /// The NAT between the site and the rest.
    pub nat: Nat,
    /// A gateway: one more node, public, on the site and on the WAN (behind a NAT: the node
    /// whose port the NAT forwards); the home relay of the site's nodes.
    pub gateway: bool,
    /// Where `nat` was written (for refusals).
    pub nat_span: Span,
    /// Where the site starts.
    pub span: Span,
}

/// Shaping of every host link of one site.
#[derive(Debug, Clone, PartialEq)]
pub struct Link {
    /// The site it applies to.
    pub site: String,
    /// Packet loss each way, percent.
    pub loss: Option<f64>,
    /// Rate limit each way (`tc` syntax: `10mbit`).
    pub rate: Option<String>,
    /// One-way delay each way, milliseconds (netem).
    pub delay_ms: Option<u32>,
    /// Where the link is written.
    pub span: Span,
}

/// A validated topology file.
#[derive(Debug, Clone, PartialEq)]
pub struct Topology {
    /// Its name (`name`, else the file stem).
    pub name: String,
    /// What it is for.
    pub description: String,
    /// The file as given (for messages).
    pub file: String,
    /// Its text (for messages with line numbers).
    pub text: String,
    /// The sites, in file order.
    pub sites: Vec<Site>,
    /// Link shaping per site.
    pub links: Vec<Link>,
    /// The bootstrap policy.
    pub bootstrap: Policy,
    /// Where the policy is written.
    pub bootstrap_span: Span,
}

fn valid_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && s.len() <= 30
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !s.ends_with('-')
}

fn valid_rate(s: &str) -> bool {
    let digits = s.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let unit = &s[digits.len()..];
    !digits.is_empty()
        && digits.chars().all(|c| c.is_ascii_digit())
        && ["bit", "kbit", "mbit", "gbit"].contains(&unit)
}

impl Topology {
    /// Reads and validates `path`.
    pub fn load(path: &Path) -> Result<Self, Error> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| Error {
            file: file.clone(),
            line: 1,
            column: 1,
            message: format!("cannot read the topology file: {e}"),
        })?;
        let mut t = Self::parse(&text, &file)?;
        if t.name.is_empty() {
            t.name = path
                .file_stem()
                .map_or_else(|| "topology".into(), |s| s.to_string_lossy().into_owned());
        }
        Ok(t)
    }

    /// Parses and validates `text` (named `file` in messages).
    pub fn parse(text: &str, file: &str) -> Result<Self, Error> {
        let err =
            |span: Option<Range<usize>>, message: String| Error::at(file, text, span, message);
        let repr: FileRepr = toml::from_str(text).map_err(|e| {
            let hint = if e.message().contains("unknown field") {
                "; topologies/README.md lists every key"
            } else {
                ""
            };
            err(e.span(), format!("{}{hint}", e.message().trim()))
        })?;
        if repr.sites.is_empty() {
            return Err(err(
                None,
                "no sites: add at least one [[site]] with a name and nodes".into(),
            ));
        }
        if repr.sites.len() > MAX_SITES {
            return Err(err(
                Some(repr.sites[MAX_SITES].span()),
                format!("{} sites; at most {MAX_SITES}", repr.sites.len()),
            ));
        }
        let (bootstrap, bootstrap_span) = match &repr.bootstrap {
            Some(b) => (*b.get_ref().policy.get_ref(), b.get_ref().policy.span()),
            None => (Policy::default(), 0..0),
        };
        let mut sites: Vec<Site> = Vec::new();
        for s in &repr.sites {
            let site = s.get_ref();
            let name = site.name.get_ref();
            if !valid_name(name) {
                return Err(err(
                    Some(site.name.span()),
                    format!(
                        "site name {name:?}: use 1 to 30 lowercase letters, digits and '-', \
                         starting with a letter (it becomes a container, network and DNS name)"
                    ),
                ));
            }
            if sites.iter().any(|o| o.name == *name) {
                return Err(err(
                    Some(site.name.span()),
                    format!("site {name:?} is defined twice: give each site its own name"),
                ));
            }
            let nodes = *site.nodes.get_ref();
            if nodes < 1 || nodes > MAX_NODES as i64 {
                return Err(err(
                    Some(site.nodes.span()),
                    format!(
                        "site {name:?}: nodes = {nodes}; a site has 1 to {MAX_NODES} nodes \
                         (remove the site rather than give it none)"
                    ),
                ));
            }
            for key in site.labels.keys() {
                if !valid_name(key) {
                    return Err(err(
                        Some(s.span()),
                        format!(
                            "site {name:?}: label key {key:?}: use lowercase letters, digits \
                             and '-', starting with a letter"
                        ),
                    ));
                }
            }
            sites.push(Site {
                name: name.clone(),
                nodes: nodes as usize,
                labels: site.labels.clone(),
                nat: site.nat.as_ref().map_or(Nat::None, |n| *n.get_ref()),
                gateway: site.gateway.as_ref().is_none_or(|g| *g.get_ref()),
                nat_span: Span(site.nat.as_ref().map_or(s.span(), |n| n.span())),
                span: Span(s.span()),
            });
        }
        let mut links: Vec<Link> = Vec::new();
        for l in &repr.links {
            let link = l.get_ref();
            let site = link.site.get_ref();
            if !sites.iter().any(|s| s.name == *site) {
                let known: Vec<&str> = sites.iter().map(|s| s.name.as_str()).collect();
                return Err(err(
                    Some(link.site.span()),
                    format!(
                        "link names site {site:?}, which does not exist; sites: {}",
                        known.join(", ")
                    ),
                ));
            }
            if links.iter().any(|o| o.site == *site) {
                return Err(err(
                    Some(link.site.span()),
                    format!("a second [[link]] for site {site:?}: merge them into one"),
                ));
            }
            if let Some(loss) = link
                .loss
                .as_ref()
                .filter(|l| !(0.0..=100.0).contains(l.get_ref()))
            {
                return Err(err(
                    Some(loss.span()),
                    format!("loss = {}: a percentage from 0 to 100", loss.get_ref()),
                ));
            }
            if let Some(rate) = link.rate.as_ref().filter(|r| !valid_rate(r.get_ref())) {
                return Err(err(
                    Some(rate.span()),
                    format!(
                        "rate = {:?}: a whole number and a unit (bit, kbit, mbit or gbit), \
                         e.g. \"10mbit\"",
                        rate.get_ref()
                    ),
                ));
            }
            let delay_ms = match &link.delay_ms {
                Some(d) if !(0..=60_000).contains(d.get_ref()) => {
                    return Err(err(
                        Some(d.span()),
                        format!("delay_ms = {}: from 0 to 60000", d.get_ref()),
                    ));
                }
                Some(d) => Some(*d.get_ref() as u32),
                None => None,
            };
            if link.loss.is_none() && link.rate.is_none() && delay_ms.is_none() {
                return Err(err(
                    Some(l.span()),
                    format!("the [[link]] of {site:?} shapes nothing: set loss, rate or delay_ms"),
                ));
            }
            links.push(Link {
                site: site.clone(),
                loss: link.loss.as_ref().map(|v| *v.get_ref()),
                rate: link.rate.as_ref().map(|v| v.get_ref().clone()),
                delay_ms,
                span: Span(l.span()),
            });
        }
        let t = Topology {
            name: repr.name.clone().unwrap_or_default(),
            description: repr.description.clone().unwrap_or_default(),
            file: file.to_string(),
            text: text.to_string(),
            sites,
            links,
            bootstrap,
            bootstrap_span: Span(bootstrap_span),
        };
        t.check_policy()?;
        Ok(t)
    }

    fn check_policy(&self) -> Result<(), Error> {
        match self.bootstrap {
            Policy::Gateways => {
                if let Some(s) = self.sites.iter().find(|s| !s.gateway) {
                    return Err(self.error(
                        &s.span,
                        format!(
                            "site {:?} has no gateway but bootstrap policy \"gateways\" \
                             bootstraps every node from its site's gateway: set gateway = true, \
                             or choose policy \"none\"",
                            s.name
                        ),
                    ));
                }
            }
            Policy::Public => {
                let public: Vec<&Site> = self.sites.iter().filter(|s| s.nat == Nat::None).collect();
                if public.len() != 1 || public.len() == self.sites.len() {
                    return Err(self.error(
                        &self.bootstrap_span,
                        format!(
                            "policy \"public\" needs exactly one site without NAT (the public \
                             segment) and at least one behind a NAT; this file has {} without \
                             NAT of {}: set nat on the others, or choose policy \"gateways\"",
                            public.len(),
                            self.sites.len()
                        ),
                    ));
                }
            }
            Policy::None => {}
        }
        Ok(())
    }

    /// The file's name without its directories, for headers of rendered files (which must not
    /// depend on where the repository is).
    pub fn file_name(&self) -> &str {
        self.file.rsplit('/').next().unwrap_or(&self.file)
    }

    /// An error pointing at `span` of this file.
    pub fn error(&self, span: &Span, message: String) -> Error {
        let span = (span.0 != (0..0)).then(|| span.0.clone());
        Error::at(&self.file, &self.text, span, message)
    }

    /// The site named `name`.
    pub fn site(&self, name: &str) -> Option<&Site> {
        self.sites.iter().find(|s| s.name == name)
    }

    /// The link shaping of site `name`, if any.
    pub fn link(&self, name: &str) -> Option<&Link> {
        self.links.iter().find(|l| l.site == name)
    }

    /// The names of the sites that have a gateway, in file order.
    pub fn gateway_sites(&self) -> Vec<&str> {
        self.sites
            .iter()
            .filter(|s| s.gateway)
            .map(|s| s.name.as_str())
            .collect()
    }

    /// Every node the topology runs, gateways included.
    pub fn total_nodes(&self) -> usize {
        self.sites
            .iter()
            .map(|s| s.nodes + usize::from(s.gateway))
            .sum()
    }
}

/// One end of a bootstrap edge: a site's ordinary nodes, its gateway, or its first node.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Endpoint {
    /// The site's nodes (every one of them, gateway not counted).
    Nodes(String),
    /// The site's gateway.
    Gateway(String),
    /// The first node of the site (the one a public segment is reached at).
    First(String),
}

/// What every rendering must agree on: sites, their node counts (ordinary, gateway) and the
/// bootstrap edges (who dials whom at start).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Shape {
    /// Per site: (nodes, gateways).
    pub sites: BTreeMap<String, (usize, usize)>,
    /// Bootstrap edges.
    pub edges: std::collections::BTreeSet<(Endpoint, Endpoint)>,
}

#[cfg(test)]
mod tests;
