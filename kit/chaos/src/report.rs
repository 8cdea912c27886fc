//! What a run found: the summary table, `report.json` and `health.svg` (items at ≥ r, < r and
//! lost over the run, with the faults marked).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::survival::{ItemCheck, Sample};

/// How long the groups took to be back at r after a fault (or the final heal).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Recovery {
    /// The fault(s) waited on, e.g. `kill lan-a-2, lan-c-1`.
    pub after: String,
    /// When the last of them happened (s since the start).
    pub fault_t_secs: f64,
    /// Seconds from then until every item was at r again; `None` if not within the timeout.
    pub back_at_r_secs: Option<f64>,
    /// How long the driver waited.
    pub timeout_secs: f64,
    /// The target, if the scenario set one (e.g. 15 s, T9).
    pub target_secs: Option<f64>,
    /// Items at r when the wait ended.
    pub at_r_when_done: usize,
    /// Items no running node held when the wait ended.
    pub unavailable_when_done: usize,
}

impl Recovery {
    /// Whether a target was set and missed.
    pub fn missed(&self) -> bool {
        match (self.target_secs, self.back_at_r_secs) {
            (Some(t), Some(s)) => s > t,
            (Some(_), None) => true,
            (None, _) => false,
        }
    }
}

/// Item counts after the heal.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Items {
    /// Stored before the faults.
    pub stored: usize,
    /// Not retrievable through any of the nodes asked.
    pub lost: usize,
    /// Retrieved with the right bytes.
    pub retrievable: usize,
    /// Of those, on the first node asked.
    pub retrievable_first_try: usize,
    /// Answers with bytes that did not match the id.
    pub wrong_content: usize,
    /// Held by ≥ r live members after the heal.
    pub at_r: usize,
    /// Retrievable but held by fewer than r.
    pub under_r: usize,
    /// Lost items that some running node still lists (held but not found by search).
    pub lost_but_listed: usize,
}

/// Everything a run found; serialised as `report.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// Scenario name.
    pub scenario: String,
    /// The seed of every random choice.
    pub seed: u64,
    /// Replicas expected.
    pub r: usize,
    /// Wall-clock start (ms since the epoch).
    pub started_unix_ms: u64,
    /// Length of the run.
    pub duration_secs: f64,
    /// Time from the last store until every item was first at r (before any fault).
    pub initial_replication_secs: Option<f64>,
    /// Time from the last store until every item was at r on more than one site (before any
    /// fault; the faults wait for it).
    #[serde(default)]
    pub initial_spread_secs: Option<f64>,
    /// Item counts.
    pub items: Items,
    /// Lost items by the LAN they were stored in.
    pub lost_by_lan: BTreeMap<String, usize>,
    /// One per `wait-r` step, then the final heal.
    pub recoveries: Vec<Recovery>,
    /// The fault log's lines.
    pub events: Vec<serde_json::Value>,
    /// Replica health, about once a second.
    pub samples: Vec<Sample>,
    /// Items that failed a check (lost, wrong bytes or under r), in detail.
    pub problems: Vec<ItemCheck>,
    /// Where it ran: `compose` or `netns`.
    #[serde(default)]
    pub backend: String,
    /// Items that may be lost for the run to pass (an experiment's `checks.max_lost`).
    #[serde(default)]
    pub max_lost: usize,
    /// The reads made while the faults went on, if the workload asked for them.
    #[serde(default)]
    pub reads: Option<crate::reads::Reads>,
}

/// Exit status: items lost or served wrong.
pub const EXIT_LOST: i32 = 1;
/// Exit status: nothing lost, but r was missed (a target, or not all at r after the heal).
pub const EXIT_UNDER_R: i32 = 2;

impl Report {
    /// 0, [`EXIT_LOST`] or [`EXIT_UNDER_R`].
    pub fn exit_code(&self) -> i32 {
        let wrong_reads = self.reads.as_ref().map_or(0, |r| r.wrong_bytes);
        if self.items.lost > self.max_lost || self.items.wrong_content > 0 || wrong_reads > 0 {
            EXIT_LOST
        } else if self.items.under_r > 0 || self.recoveries.iter().any(Recovery::missed) {
            EXIT_UNDER_R
        } else {
            0
        }
    }

    /// The summary table.
    pub fn table(&self) -> String {
        let i = &self.items;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "scenario {}  backend {}  seed {}  r = {}  {:.0} s",
            self.scenario, self.backend, self.seed, self.r, self.duration_secs
        );
        let _ = writeln!(s, "{:-<72}", "");
        let row = |s: &mut String, k: &str, v: String| {
            let _ = writeln!(s, "{k:<34} {v}");
        };
        row(&mut s, "items stored", i.stored.to_string());
        row(
            &mut s,
            "items lost",
            if i.lost_but_listed > 0 {
                format!("{} ({} still listed by a node)", i.lost, i.lost_but_listed)
            } else {
                i.lost.to_string()
            },
        );
        row(
            &mut s,
            "retrievable (other node, bytes ok)",
            format!("{} (first try {})", i.retrievable, i.retrievable_first_try),
        );
        row(&mut s, "wrong bytes served", i.wrong_content.to_string());
        row(&mut s, "at r after heal", i.at_r.to_string());
        row(&mut s, "under r after heal", i.under_r.to_string());
        if !self.lost_by_lan.is_empty() {
            let v: Vec<String> = self
                .lost_by_lan
                .iter()
                .map(|(l, n)| format!("{l} {n}"))
                .collect();
            row(&mut s, "lost by LAN stored in", v.join(", "));
        }
        if let Some(r) = &self.reads {
            row(
                &mut s,
                "reads during the run",
                format!(
                    "{} at {}/s: {:.1} % ok ({} on another node), {} failed, {} wrong bytes; \
                     p50 {:.0} ms, p99 {:.0} ms",
                    r.attempted,
                    r.rate,
                    r.ok_percent(),
                    r.retried,
                    r.failed,
                    r.wrong_bytes,
                    r.p50_ms,
                    r.p99_ms
                ),
            );
        }
        row(
            &mut s,
            "initial replication to r",
            secs(self.initial_replication_secs, None),
        );
        row(
            &mut s,
            "every item on more than one site",
            secs(self.initial_spread_secs, None),
        );
        let _ = writeln!(s, "{:-<72}", "");
        let _ = writeln!(
            s,
            "{:<34} {:>8} {:>14} {:>8}",
            "time back to r after", "at t", "took", "target"
        );
        for r in &self.recoveries {
            let verdict = match r.target_secs {
                Some(t) if r.missed() => format!("{t:.0} s MISS"),
                Some(t) => format!("{t:.0} s ok"),
                None => "-".into(),
            };
            let mut after = r.after.clone();
            if after.len() > 34 {
                after.truncate(31);
                after.push_str("...");
            }
            let _ = writeln!(
                s,
                "{after:<34} {:>7.1}s {:>14} {verdict:>8}",
                r.fault_t_secs,
                secs(r.back_at_r_secs, Some(r.timeout_secs)),
            );
            if r.back_at_r_secs.is_none() {
                let _ = writeln!(
                    s,
                    "{:<34} at r {} / {}, held by no running node {}",
                    "", r.at_r_when_done, self.items.stored, r.unavailable_when_done
                );
            }
        }
        let _ = writeln!(s, "{:-<72}", "");
        let verdict = match self.exit_code() {
            0 if self.items.lost == 0 => "PASS: 0 lost, every item at r",
            0 => "PASS: no more lost than checks.max_lost, every other item at r",
            EXIT_LOST => "FAIL: items lost",
            _ => "FAIL: nothing lost, but r was not (re)gained in time",
        };
        let _ = writeln!(s, "{verdict}");
        s
    }

    /// Writes `report.json` and `health.svg` into `dir`.
    pub fn write(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join("report.json"), serde_json::to_vec_pretty(self)?)
            .context("writing report.json")?;
        std::fs::write(dir.join("summary.txt"), self.table()).context("writing summary.txt")?;
        plot(&dir.join("health.svg"), self).context("writing health.svg")
    }
}

fn secs(v: Option<f64>, timeout: Option<f64>) -> String {
    match (v, timeout) {
        (Some(s), _) => format!("{s:.1} s"),
        (None, Some(t)) => format!("not in {t:.0} s"),
        (None, None) => "never".into(),
    }
}

/// Plots items at ≥ r, at < r and held by no running node, with a line at each fault (black,
/// named) and heal (blue).
pub fn plot(path: &Path, report: &Report) -> Result<()> {
    use butter_testbed::plot::{Chart, Line, Marker, colors};
    let mut chart = Chart::new(
        format!(
            "butter-chaos {}: replica health (r = {}, seed {})",
            report.scenario, report.r, report.seed
        ),
        "time since start (s)",
        "items",
    );
    chart.y_max = Some(report.items.stored.max(1) as f64 * 1.05);
    for ev in &report.events {
        let heal = ev["event"] == "heal";
        if let (true, Some(t)) = (ev["event"] == "fault" || heal, ev["t_secs"].as_f64()) {
            let label = if heal {
                "heal".to_string()
            } else {
                let action = ev["action"].as_str().unwrap_or("fault");
                let targets: Vec<&str> = ev["targets"]
                    .as_array()
                    .map(|t| t.iter().filter_map(|v| v.as_str()).collect())
                    .unwrap_or_default();
                format!("{action} {}", targets.join(","))
            };
            chart.markers.push(Marker {
                x: t,
                color: if heal { colors::BLUE } else { colors::BLACK },
                label: Some(label),
            });
        }
    }
    type Series = (
        &'static str,
        butter_testbed::plot::Rgb,
        fn(&Sample) -> usize,
    );
    let lines: [Series; 3] = [
        ("at >= r", colors::GREEN, |s| s.at_r),
        ("at < r", colors::ORANGE, |s| s.under_r),
        ("held by no running node", colors::RED, |s| s.lost),
    ];
    for (label, color, f) in lines {
        chart.lines.push(Line {
            label: Some(label.into()),
            color,
            width: 2,
            points: report
                .samples
                .iter()
                .map(|s| (s.t_secs, f(s) as f64))
                .collect(),
        });
    }
    chart.write_svg(path)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> Report {
        Report {
            scenario: "t".into(),
            seed: 3,
            r: 3,
            started_unix_ms: 0,
            duration_secs: 10.0,
            initial_replication_secs: Some(1.0),
            initial_spread_secs: Some(2.0),
            items: Items {
                stored: 10,
                retrievable: 10,
                retrievable_first_try: 9,
                at_r: 10,
                ..Items::default()
            },
            lost_by_lan: BTreeMap::new(),
            recoveries: vec![Recovery {
                after: "kill lan-a-1".into(),
                fault_t_secs: 2.0,
                back_at_r_secs: Some(4.0),
                timeout_secs: 60.0,
                target_secs: Some(15.0),
                at_r_when_done: 10,
                unavailable_when_done: 0,
            }],
            events: vec![
                serde_json::json!({"event": "fault", "action": "kill", "targets": ["lan-a-1"], "t_secs": 2.0}),
            ],
            samples: (0..10usize)
                .map(|t| Sample {
                    t_secs: t as f64,
                    at_r: 10 - (t % 3),
                    under_r: t % 3,
                    lost: 0,
                    nodes_up: 15,
                    one_site: 0,
                })
                .collect(),
            problems: vec![],
            backend: "compose".into(),
            max_lost: 0,
            reads: None,
        }
    }

    #[test]
    fn verdicts_follow_losses_and_targets() {
        let mut r = report();
        assert_eq!(r.exit_code(), 0);
        assert!(r.table().contains("PASS"));
        r.recoveries[0].back_at_r_secs = Some(16.0);
        assert_eq!(r.exit_code(), EXIT_UNDER_R);
        r.items.lost = 1;
        assert_eq!(r.exit_code(), EXIT_LOST);
        assert!(r.table().contains("FAIL: items lost"));
    }

    #[test]
    fn files_are_written() {
        let dir = std::env::temp_dir().join(format!("butter-chaos-report-{}", std::process::id()));
        report().write(&dir).unwrap();
        let svg = std::fs::read_to_string(dir.join("health.svg")).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("polyline"));
        assert!(
            svg.contains("kill lan-a-1"),
            "the fault is not marked on the plot"
        );
        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("report.json")).unwrap()).unwrap();
        assert_eq!(json["items"]["stored"], 10);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
