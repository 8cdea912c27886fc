//! Chaos scenarios: a TOML file of steps run in order, after the survival check has stored its
//! items and before it verifies them.
//!
//! ```toml
//! name = "default"
//! seed = 7                  # optional; `--seed` wins, else a random seed (printed)
//!
//! [survival]
//! items = 200               # M items stored before the first step
//! item_bytes = 4096
//! r = 3                     # replicas every group should hold
//!
//! [[step]]
//! do = "kill"
//! target = "random-node"    # random | random-node | random-gateway | a name (lan-a-1, gw-b)
//! count = 2
//!
//! [[step]]
//! do = "wait-r"             # until every item is back at r (or the timeout)
//! timeout_secs = 60
//! target_secs = 15          # optional: the run fails if r takes longer
//!
//! [[step]]
//! do = "kill-lan"
//! lan = "random"            # or lan-a, lan-b, lan-c
//!
//! [[step]]
//! do = "heal"
//! ```
//!
//! Steps: `kill`, `pause`, `unpause`, `restart`, `kill-lan`, `partition` (cut a LAN's gateway
//! from the WAN), `loss` (`pct` % of a node's UDP dropped), `heal`, `sleep` (`secs`) and
//! `wait-r`. The check after the last step always heals first, so a scenario need not end with
//! `heal`.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use serde::{Deserialize, Serialize};

use crate::target::Target;

/// A parsed scenario.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Name shown in the report.
    #[serde(default)]
    pub name: String,
    /// What it models, for people.
    #[serde(default)]
    pub description: String,
    /// Seed of every random choice (items, targets); `--seed` overrides it.
    #[serde(default)]
    pub seed: Option<u64>,
    /// The survival check's parameters.
    #[serde(default)]
    pub survival: Survival,
    /// The faults and waits, in order.
    #[serde(rename = "step", default)]
    pub steps: Vec<Step>,
}

/// What the survival check stores and expects.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Survival {
    /// Items stored before the faults (default 200).
    pub items: usize,
    /// Bytes per item (default 4096).
    pub item_bytes: usize,
    /// Replicas a healthy group holds (default 3).
    pub r: usize,
    /// After the final heal: how long to wait for every item to be back at r before checking
    /// (default 120 s).
    pub settle_secs: f64,
}

impl Default for Survival {
    fn default() -> Self {
        Survival {
            items: 200,
            item_bytes: 4096,
            r: 3,
            settle_secs: 120.0,
        }
    }
}

impl Survival {
    /// [`Survival::settle_secs`] as a duration.
    pub fn settle(&self) -> Duration {
        Duration::from_secs_f64(self.settle_secs)
    }
}

fn one() -> usize {
    1
}

/// One step of a scenario.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "do", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Step {
    /// SIGKILL `count` containers (a crash; the container stays stopped until healed).
    Kill {
        /// Which containers.
        target: String,
        /// How many (random targets only; default 1).
        #[serde(default = "one")]
        count: usize,
    },
    /// Freeze `count` containers (cgroup freezer): alive to the kernel, silent to peers.
    Pause {
        /// Which containers.
        target: String,
        /// How many (default 1).
        #[serde(default = "one")]
        count: usize,
    },
    /// Thaw a paused container (`random`: one of the paused ones).
    Unpause {
        /// Which container.
        target: String,
    },
    /// Stop (SIGTERM, 5 s grace) and start `count` containers: a clean restart.
    Restart {
        /// Which containers.
        target: String,
        /// How many (default 1).
        #[serde(default = "one")]
        count: usize,
    },
    /// SIGKILL every container of a LAN, its gateway included.
    KillLan {
        /// `lan-a`, `lan-b`, `lan-c` or `random`.
        lan: String,
    },
    /// Cut a LAN from the WAN: its gateway is disconnected from the WAN network.
    Partition {
        /// `lan-a`, `lan-b`, `lan-c` or `random`.
        lan: String,
    },
    /// Drop `pct` % of a node's UDP (QUIC and beacons) both ways with nftables.
    Loss {
        /// Which containers.
        target: String,
        /// Loss in percent, 1 to 100.
        pct: u8,
        /// How many (default 1).
        #[serde(default = "one")]
        count: usize,
    },
    /// Undo everything: unpause, reconnect, remove loss rules, start stopped containers.
    Heal,
    /// Wait a fixed time.
    Sleep {
        /// Seconds.
        secs: f64,
    },
    /// Wait until every stored item is held by r live members again, and record how long that
    /// took since the last fault.
    WaitR {
        /// Give up after this many seconds (the run goes on).
        timeout_secs: f64,
        /// The run fails if r is not reached within this many seconds (e.g. 15, T9).
        #[serde(default)]
        target_secs: Option<f64>,
    },
}

impl Step {
    /// The step's name as written in the scenario (`kill`, `kill-lan`, …).
    pub fn name(&self) -> &'static str {
        match self {
            Step::Kill { .. } => "kill",
            Step::Pause { .. } => "pause",
            Step::Unpause { .. } => "unpause",
            Step::Restart { .. } => "restart",
            Step::KillLan { .. } => "kill-lan",
            Step::Partition { .. } => "partition",
            Step::Loss { .. } => "loss",
            Step::Heal => "heal",
            Step::Sleep { .. } => "sleep",
            Step::WaitR { .. } => "wait-r",
        }
    }

    /// Whether the step injects a fault (the clock of `wait-r` starts at the last one).
    pub fn is_fault(&self) -> bool {
        matches!(
            self,
            Step::Kill { .. }
                | Step::Pause { .. }
                | Step::Restart { .. }
                | Step::KillLan { .. }
                | Step::Partition { .. }
                | Step::Loss { .. }
        )
    }
}

/// A LAN named in a step: one of `lans`, or `random`.
fn check_lan(lan: &str, lans: &[&str]) -> Result<()> {
    ensure!(
        lan == "random" || lans.contains(&lan),
        "unknown LAN {lan:?}: expected random or one of {}",
        lans.join(", ")
    );
    Ok(())
}

impl Scenario {
    /// Parses and validates TOML text.
    pub fn parse(text: &str) -> Result<Self> {
        let s: Scenario = toml::from_str(text).context("not a valid scenario")?;
        s.validate()?;
        Ok(s)
    }

    /// Reads and validates a scenario file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read scenario {}", path.display()))?;
        let mut s = Self::parse(&text).with_context(|| format!("in {}", path.display()))?;
        if s.name.is_empty() {
            s.name = path
                .file_stem()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
        }
        Ok(s)
    }

    /// Checks ranges and names; the testbed's LANs come from its topology.
    pub fn validate(&self) -> Result<()> {
        let lans = butter_testbed::network::LANS;
        let sv = &self.survival;
        ensure!(sv.items >= 1, "survival.items must be at least 1");
        ensure!(sv.item_bytes >= 1, "survival.item_bytes must be at least 1");
        ensure!(sv.r >= 1, "survival.r must be at least 1");
        ensure!(
            sv.settle_secs.is_finite() && sv.settle_secs >= 0.0,
            "survival.settle_secs must be >= 0"
        );
        for (i, step) in self.steps.iter().enumerate() {
            let at = || format!("step {} ({})", i + 1, step.name());
            match step {
                Step::Kill { target, count }
                | Step::Pause { target, count }
                | Step::Restart { target, count }
                | Step::Loss { target, count, .. } => {
                    Target::parse(target).with_context(at)?;
                    ensure!(*count >= 1, "{}: count must be at least 1", at());
                }
                Step::Unpause { target } => {
                    Target::parse(target).with_context(at)?;
                }
                Step::KillLan { lan } | Step::Partition { lan } => {
                    check_lan(lan, &lans).with_context(at)?;
                }
                Step::Heal => {}
                Step::Sleep { secs } => {
                    ensure!(
                        secs.is_finite() && *secs >= 0.0,
                        "{}: secs must be >= 0",
                        at()
                    );
                }
                Step::WaitR {
                    timeout_secs,
                    target_secs,
                } => {
                    ensure!(
                        timeout_secs.is_finite() && *timeout_secs > 0.0,
                        "{}: timeout_secs must be > 0",
                        at()
                    );
                    if let Some(t) = target_secs
                        && !(t.is_finite() && *t > 0.0)
                    {
                        bail!("{}: target_secs must be > 0", at());
                    }
                }
            }
            if let Step::Loss { pct, .. } = step {
                ensure!((1..=100).contains(pct), "{}: pct must be 1 to 100", at());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = r#"
name = "t"
seed = 42
[survival]
items = 50
r = 2
[[step]]
do = "kill"
target = "random-node"
count = 2
[[step]]
do = "wait-r"
timeout_secs = 30
target_secs = 15
[[step]]
do = "kill-lan"
lan = "random"
[[step]]
do = "partition"
lan = "lan-b"
[[step]]
do = "loss"
target = "lan-a-1"
pct = 30
[[step]]
do = "pause"
target = "gw-a"
[[step]]
do = "unpause"
target = "random"
[[step]]
do = "restart"
target = "random"
[[step]]
do = "sleep"
secs = 2.5
[[step]]
do = "heal"
"#;

    #[test]
    fn every_step_kind_parses() {
        let s = Scenario::parse(FULL).unwrap();
        assert_eq!(s.seed, Some(42));
        assert_eq!(s.survival.items, 50);
        assert_eq!(s.survival.item_bytes, 4096, "unset fields keep defaults");
        assert_eq!(s.survival.r, 2);
        let names: Vec<&str> = s.steps.iter().map(Step::name).collect();
        assert_eq!(
            names,
            [
                "kill",
                "wait-r",
                "kill-lan",
                "partition",
                "loss",
                "pause",
                "unpause",
                "restart",
                "sleep",
                "heal"
            ]
        );
        assert_eq!(
            s.steps[0],
            Step::Kill {
                target: "random-node".into(),
                count: 2
            }
        );
        assert_eq!(
            s.steps[1],
            Step::WaitR {
                timeout_secs: 30.0,
                target_secs: Some(15.0)
            }
        );
        assert_eq!(
            s.steps[5],
            Step::Pause {
                target: "gw-a".into(),
                count: 1
            },
            "count defaults to 1"
        );
        assert!(s.steps[0].is_fault() && !s.steps[1].is_fault() && !s.steps[9].is_fault());
    }

    #[test]
    fn empty_scenario_takes_defaults() {
        let s = Scenario::parse("").unwrap();
        assert_eq!(s.survival, Survival::default());
        assert!(s.steps.is_empty() && s.seed.is_none());
    }

    #[test]
    fn mistakes_are_rejected_with_the_step_named() {
        for (text, needle) in [
            ("[[step]]\ndo = \"explode\"\n", "explode"),
            (
                "[[step]]\ndo = \"kill\"\ntarget = \"x\"\ntimeout = 3\n",
                "timeout",
            ),
            ("[[step]]\ndo = \"kill-lan\"\nlan = \"lan-z\"\n", "lan-z"),
            (
                "[[step]]\ndo = \"loss\"\ntarget = \"gw-a\"\npct = 0\n",
                "pct",
            ),
            (
                "[[step]]\ndo = \"kill\"\ntarget = \"gw-a\"\ncount = 0\n",
                "count",
            ),
            ("[[step]]\ndo = \"kill\"\ntarget = \"\"\n", "step 1 (kill)"),
            (
                "[[step]]\ndo = \"wait-r\"\ntimeout_secs = 0\n",
                "timeout_secs",
            ),
            ("[survival]\nr = 0\n", "survival.r"),
            ("[survival]\nitem = 3\n", "item"),
            ("sed = 3\n", "sed"),
        ] {
            let err = format!("{:#}", Scenario::parse(text).unwrap_err());
            assert!(err.contains(needle), "{text:?} → {err}");
        }
    }

    #[test]
    fn the_shipped_scenarios_are_valid() {
        let dir = butter_testbed::network::repo_root()
            .join("compose")
            .join("chaos");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                let s = Scenario::load(&path).unwrap();
                assert!(!s.steps.is_empty(), "{}", path.display());
                n += 1;
            }
        }
        assert!(n >= 1, "no scenario in {}", dir.display());
    }
}
