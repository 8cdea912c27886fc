//! Experiment files (`experiments/*.toml`): one run described once, for any backend: a
//! topology file, a workload, a fault schedule and the checks that decide pass or fail.
//! `butter-kit run EXP --backend compose|netns --seed S` runs it; `experiments/README.md`
//! documents every key.
//!
//! ```
//! use butter_chaos::experiment::Experiment;
//! let text = r#"
//! topology = "../topologies/default.toml"
//! [workload]
//! items = 20
//! [[fault]]
//! do = "kill-site"
//! site = "lan-c"
//! [[fault]]
//! do = "wait-r"
//! timeout_secs = 60
//! [checks]
//! back_at_r_secs = 90
//! "#;
//! let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../experiments");
//! let e = Experiment::parse(text, "inline.toml", &dir).unwrap();
//! assert_eq!(e.workload.items, 20);
//! assert_eq!(e.scenario().steps[0].name(), "kill-lan");
//! ```
//!
//! Faults are today's chaos steps ([`crate::scenario::Step`]), checked against the topology
//! before anything runs: a site or node the topology does not have, a key a fault does not
//! take, 0 items, are errors with the file, the line and what to change (the same
//! [`butter_testbed::topology::Error`] as topology files, so `butter-kit` exits 2 on either).

use std::collections::BTreeSet;
use std::ops::Range;
use std::path::{Path, PathBuf};

use butter_testbed::network::gateway_of;
use butter_testbed::topology::{Error, Topology};
use serde::Deserialize;
use toml::Spanned;

use crate::scenario::{Scenario, Step, Survival};
use crate::target::Target;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRepr {
    name: Option<String>,
    description: Option<String>,
    topology: Option<Spanned<String>>,
    seed: Option<u64>,
    #[serde(default)]
    workload: Option<WorkloadRepr>,
    #[serde(default, rename = "fault")]
    faults: Vec<Spanned<FaultRepr>>,
    #[serde(default)]
    checks: Option<ChecksRepr>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WorkloadRepr {
    items: Option<Spanned<i64>>,
    item_bytes: Option<Spanned<i64>>,
    r: Option<Spanned<i64>>,
    settle_secs: Option<Spanned<f64>>,
    reads_per_sec: Option<Spanned<f64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ChecksRepr {
    max_lost: Option<Spanned<i64>>,
    back_at_r_secs: Option<Spanned<f64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FaultRepr {
    #[serde(rename = "do")]
    action: Spanned<String>,
    target: Option<Spanned<String>>,
    count: Option<Spanned<i64>>,
    site: Option<Spanned<String>>,
    pct: Option<Spanned<i64>>,
    secs: Option<Spanned<f64>>,
    timeout_secs: Option<Spanned<f64>>,
    target_secs: Option<Spanned<f64>>,
}

/// What the run stores and expects.
#[derive(Debug, Clone, PartialEq)]
pub struct Workload {
    /// Items stored before the first fault (at least 1).
    pub items: usize,
    /// Bytes per item.
    pub item_bytes: usize,
    /// Replicas a healthy group holds.
    pub r: usize,
    /// After the final heal: how long to wait for every item to be back at r.
    pub settle_secs: f64,
    /// Reads of random items through random running nodes, per second, from the first fault
    /// until the check (0: none; at most [`MAX_READS_PER_SEC`]).
    pub reads_per_sec: f64,
}

/// Most reads per second an experiment may ask for (one client thread, one read at a time).
pub const MAX_READS_PER_SEC: f64 = 50.0;

/// What decides pass or fail (besides wrong bytes, which always fail).
#[derive(Debug, Clone, PartialEq)]
pub struct Checks {
    /// Items that may be lost (default 0: the gate).
    pub max_lost: usize,
    /// Every back-at-r figure (each `wait-r`, and the final heal) within this many seconds.
    pub back_at_r_secs: Option<f64>,
}

/// A parsed, checked experiment.
#[derive(Debug, Clone)]
pub struct Experiment {
    /// Its name (the file's stem unless `name` is set): the report directory.
    pub name: String,
    /// What it models, for people.
    pub description: String,
    /// The topology file, resolved against the experiment file's directory.
    pub topology_path: PathBuf,
    /// The topology.
    pub topology: Topology,
    /// Seed of items and random targets (`--seed` wins).
    pub seed: Option<u64>,
    /// The workload.
    pub workload: Workload,
    /// The fault schedule, in order.
    pub faults: Vec<Step>,
    /// The checks.
    pub checks: Checks,
}

/// The actions a `[[fault]]` may `do`, and the keys each takes besides `do`.
const ACTIONS: &[(&str, &[&str])] = &[
    ("kill", &["target", "count"]),
    ("pause", &["target", "count"]),
    ("unpause", &["target"]),
    ("restart", &["target", "count"]),
    ("kill-site", &["site"]),
    ("partition", &["site"]),
    ("loss", &["target", "pct", "count"]),
    ("heal", &[]),
    ("sleep", &["secs"]),
    ("wait-r", &["timeout_secs", "target_secs"]),
];

/// Default `wait-r` timeout.
const WAIT_R_TIMEOUT_SECS: f64 = 120.0;

impl Experiment {
    /// Reads and checks `path`; its topology is read relative to the file's directory.
    pub fn load(path: &Path) -> Result<Self, Error> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| Error {
            file: file.clone(),
            line: 1,
            column: 1,
            message: format!("cannot read the experiment file: {e}"),
        })?;
        let dir = path.parent().unwrap_or(Path::new("."));
        let mut e = Self::parse(&text, &file, dir)?;
        if e.name.is_empty() {
            e.name = path
                .file_stem()
                .map_or_else(|| "experiment".into(), |s| s.to_string_lossy().into_owned());
        }
        Ok(e)
    }

    /// Parses and checks `text` (named `file` in messages); `topology` is relative to `dir`.
    pub fn parse(text: &str, file: &str, dir: &Path) -> Result<Self, Error> {
        let err =
            |span: Option<Range<usize>>, message: String| Error::at(file, text, span, message);
        let repr: FileRepr = toml::from_str(text).map_err(|e| {
            let hint = if e.message().contains("unknown field") {
                "; experiments/README.md lists every key"
            } else {
                ""
            };
            err(e.span(), format!("{}{hint}", e.message().trim()))
        })?;
        let Some(topo) = &repr.topology else {
            return Err(err(
                None,
                "no topology: add topology = \"../topologies/default.toml\" (a topology file, \
                 relative to this file)"
                    .into(),
            ));
        };
        let topology_path = dir.join(topo.get_ref());
        if !topology_path.is_file() {
            return Err(err(
                Some(topo.span()),
                format!(
                    "topology {:?}: no such file ({}); name a file under topologies/, relative \
                     to this file",
                    topo.get_ref(),
                    topology_path.display()
                ),
            ));
        }
        let topology = Topology::load(&topology_path)?;

        let defaults = Survival::default();
        let count = |v: &Option<Spanned<i64>>, key: &str, min: i64, default: usize| match v {
            None => Ok(default),
            Some(n) if *n.get_ref() >= min => Ok(*n.get_ref() as usize),
            Some(n) => Err(err(
                Some(n.span()),
                format!("{key} = {}: must be at least {min}", n.get_ref()),
            )),
        };
        let secs = |v: &Option<Spanned<f64>>, key: &str, default: f64, zero_ok: bool| match v {
            None => Ok(default),
            Some(s)
                if s.get_ref().is_finite()
                    && (*s.get_ref() > 0.0 || zero_ok && *s.get_ref() == 0.0) =>
            {
                Ok(*s.get_ref())
            }
            Some(s) => Err(err(
                Some(s.span()),
                format!(
                    "{key} = {}: must be {} seconds",
                    s.get_ref(),
                    if zero_ok { "0 or more" } else { "more than 0" }
                ),
            )),
        };
        let workload = match &repr.workload {
            None => Workload {
                items: defaults.items,
                item_bytes: defaults.item_bytes,
                r: defaults.r,
                settle_secs: defaults.settle_secs,
                reads_per_sec: 0.0,
            },
            Some(w) => Workload {
                items: count(&w.items, "items", 1, defaults.items)?,
                item_bytes: count(&w.item_bytes, "item_bytes", 1, defaults.item_bytes)?,
                r: count(&w.r, "r", 1, defaults.r)?,
                settle_secs: secs(&w.settle_secs, "settle_secs", defaults.settle_secs, true)?,
                reads_per_sec: match &w.reads_per_sec {
                    None => 0.0,
                    Some(v) if (0.0..=MAX_READS_PER_SEC).contains(v.get_ref()) => *v.get_ref(),
                    Some(v) => {
                        return Err(err(
                            Some(v.span()),
                            format!(
                                "reads_per_sec = {}: must be 0 (no reads) to {MAX_READS_PER_SEC}",
                                v.get_ref()
                            ),
                        ));
                    }
                },
            },
        };
        if let Some(r) = repr.workload.as_ref().and_then(|w| w.r.as_ref())
            && workload.r > topology.total_nodes()
        {
            return Err(err(
                Some(r.span()),
                format!(
                    "r = {}: the topology has {} nodes in all; r can be at most that",
                    workload.r,
                    topology.total_nodes()
                ),
            ));
        }
        let checks = match &repr.checks {
            None => Checks {
                max_lost: 0,
                back_at_r_secs: None,
            },
            Some(c) => Checks {
                max_lost: count(&c.max_lost, "max_lost", 0, 0)?,
                back_at_r_secs: match &c.back_at_r_secs {
                    None => None,
                    v => Some(secs(v, "back_at_r_secs", 0.0, false)?),
                },
            },
        };
        let nodes = node_names(&topology);
        let sites: Vec<&str> = topology.sites.iter().map(|s| s.name.as_str()).collect();
        let mut faults = Vec::new();
        for (i, f) in repr.faults.iter().enumerate() {
            faults.push(fault(i + 1, f, &err, &topology, &nodes, &sites)?);
        }
        Ok(Experiment {
            name: repr.name.clone().unwrap_or_default(),
            description: repr.description.clone().unwrap_or_default(),
            topology_path,
            topology,
            seed: repr.seed,
            workload,
            faults,
            checks,
        })
    }

    /// The chaos scenario the runner executes.
    pub fn scenario(&self) -> Scenario {
        Scenario {
            name: self.name.clone(),
            description: self.description.clone(),
            seed: self.seed,
            survival: Survival {
                items: self.workload.items,
                item_bytes: self.workload.item_bytes,
                r: self.workload.r,
                settle_secs: self.workload.settle_secs,
            },
            steps: self.faults.clone(),
        }
    }
}

/// Every node name a topology runs: `SITE-N` for its nodes, `gw-…` for its gateway (as compose
/// and the netns lab both name them).
pub fn node_names(t: &Topology) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for s in &t.sites {
        out.extend((1..=s.nodes).map(|n| format!("{}-{n}", s.name)));
        if s.gateway {
            out.insert(gateway_of(&s.name));
        }
    }
    out
}

/// One `[[fault]]`, checked: number `n` in the file.
fn fault(
    n: usize,
    f: &Spanned<FaultRepr>,
    err: &dyn Fn(Option<Range<usize>>, String) -> Error,
    t: &Topology,
    nodes: &BTreeSet<String>,
    sites: &[&str],
) -> Result<Step, Error> {
    let r = f.get_ref();
    let action = r.action.get_ref().as_str();
    let Some((_, takes)) = ACTIONS.iter().find(|(a, _)| *a == action) else {
        return Err(err(
            Some(r.action.span()),
            format!(
                "fault {n}: do = {action:?} is not a fault; use one of {}",
                ACTIONS
                    .iter()
                    .map(|(a, _)| *a)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    };
    let present: [(&str, Option<Range<usize>>); 7] = [
        ("target", r.target.as_ref().map(Spanned::span)),
        ("count", r.count.as_ref().map(Spanned::span)),
        ("site", r.site.as_ref().map(Spanned::span)),
        ("pct", r.pct.as_ref().map(Spanned::span)),
        ("secs", r.secs.as_ref().map(Spanned::span)),
        ("timeout_secs", r.timeout_secs.as_ref().map(Spanned::span)),
        ("target_secs", r.target_secs.as_ref().map(Spanned::span)),
    ];
    for (key, span) in present {
        if let Some(span) = span
            && !takes.contains(&key)
        {
            return Err(err(
                Some(span),
                format!(
                    "fault {n} ({action}) takes no `{key}`; it takes {}",
                    if takes.is_empty() {
                        "nothing but `do`".to_string()
                    } else {
                        takes
                            .iter()
                            .map(|k| format!("`{k}`"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    }
                ),
            ));
        }
    }
    let whole = Some(f.span());
    let need = |key: &str| err(whole.clone(), format!("fault {n} ({action}) needs `{key}`"));
    let target = || -> Result<String, Error> {
        let tv = r.target.as_ref().ok_or_else(|| need("target"))?;
        let name = tv.get_ref();
        let parsed =
            Target::parse(name).map_err(|e| err(Some(tv.span()), format!("fault {n}: {e:#}")))?;
        if let Target::Named(node) = &parsed
            && !nodes.contains(node)
        {
            return Err(err(
                Some(tv.span()),
                format!(
                    "fault {n}: target {node:?} is not a node of topology {}; use random, \
                     random-node, random-gateway or one of {}",
                    t.name,
                    nodes.iter().cloned().collect::<Vec<_>>().join(", ")
                ),
            ));
        }
        Ok(name.clone())
    };
    let count = || -> Result<usize, Error> {
        match &r.count {
            None => Ok(1),
            Some(c) if *c.get_ref() >= 1 && (*c.get_ref() as usize) <= nodes.len() => {
                Ok(*c.get_ref() as usize)
            }
            Some(c) => Err(err(
                Some(c.span()),
                format!(
                    "fault {n}: count = {}: must be 1 to {} (the topology's nodes)",
                    c.get_ref(),
                    nodes.len()
                ),
            )),
        }
    };
    let site = || -> Result<String, Error> {
        let s = r.site.as_ref().ok_or_else(|| need("site"))?;
        let name = s.get_ref();
        if name != "random" && !sites.contains(&name.as_str()) {
            return Err(err(
                Some(s.span()),
                format!(
                    "fault {n}: site {name:?} is not in topology {}; use random or one of {}",
                    t.name,
                    sites.join(", ")
                ),
            ));
        }
        Ok(name.clone())
    };
    let positive = |v: &Spanned<f64>, key: &str| {
        let x = *v.get_ref();
        if x.is_finite() && x > 0.0 {
            Ok(x)
        } else {
            Err(err(
                Some(v.span()),
                format!("fault {n}: {key} = {x}: must be more than 0 seconds"),
            ))
        }
    };
    // A named target is one node: a count beyond 1 needs a random target.
    if let (Some(tv), Some(c)) = (&r.target, &r.count)
        && !Target::parse(tv.get_ref()).is_ok_and(|t| t.is_random())
        && *c.get_ref() != 1
    {
        return Err(err(
            Some(c.span()),
            format!(
                "fault {n}: count = {}: target {:?} names one node; drop count or use a random \
                 target",
                c.get_ref(),
                tv.get_ref()
            ),
        ));
    }
    Ok(match action {
        "kill" => Step::Kill {
            target: target()?,
            count: count()?,
        },
        "pause" => Step::Pause {
            target: target()?,
            count: count()?,
        },
        "unpause" => Step::Unpause { target: target()? },
        "restart" => Step::Restart {
            target: target()?,
            count: count()?,
        },
        "kill-site" => Step::KillLan { lan: site()? },
        "partition" => Step::Partition { lan: site()? },
        "loss" => {
            let p = r.pct.as_ref().ok_or_else(|| need("pct"))?;
            if !(1..=100).contains(p.get_ref()) {
                return Err(err(
                    Some(p.span()),
                    format!("fault {n}: pct = {}: must be 1 to 100", p.get_ref()),
                ));
            }
            Step::Loss {
                target: target()?,
                pct: *p.get_ref() as u8,
                count: count()?,
            }
        }
        "heal" => Step::Heal,
        "sleep" => Step::Sleep {
            secs: positive(r.secs.as_ref().ok_or_else(|| need("secs"))?, "secs")?,
        },
        "wait-r" => Step::WaitR {
            timeout_secs: match &r.timeout_secs {
                Some(v) => positive(v, "timeout_secs")?,
                None => WAIT_R_TIMEOUT_SECS,
            },
            target_secs: match &r.target_secs {
                Some(v) => Some(positive(v, "target_secs")?),
                None => None,
            },
        },
        _ => unreachable!("every action in ACTIONS is matched"),
    })
}

#[cfg(test)]
mod tests;
