//! Samples, figures and output: per-node RSS, connections and tasks over time; the summary table;
//! JSON; an SVG plot of RSS over time.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};
use butter_testbed::plot::{self, Chart, Line};
use serde::Serialize;

/// One node at one sampling instant.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Sample {
    /// Minutes since the client started.
    pub t_min: f64,
    /// Which start of the process this is (1: the first).
    pub incarnation: usize,
    /// Resident set size, KiB (None: the node was down).
    pub rss_kib: Option<u64>,
    /// Its anonymous part (heap and stacks), KiB.
    pub anon_kib: Option<u64>,
    /// Live heap allocations (`butter_heap_bytes`), KiB: what a leak grows.
    pub heap_kib: Option<u64>,
    /// `butter_connections_open` (None: down or no answer).
    pub connections: Option<f64>,
    /// `butter_tasks`.
    pub tasks: Option<f64>,
    /// `butter_items_stored`.
    pub items: Option<f64>,
}

/// Least-squares slope of `y` over `x` (None with fewer than 3 points or no spread in `x`).
pub fn slope(points: &[(f64, f64)]) -> Option<f64> {
    if points.len() < 3 {
        return None;
    }
    let n = points.len() as f64;
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    (sxx > 1e-12).then(|| sxy / sxx)
}

/// Least-squares fit of `y = a + b·u + c·x` over `(x, u, y)` points: returns `(b, c)`, the part
/// of `y` that follows `u` and the trend over `x` once `u` is accounted for (None with fewer than
/// 5 points or when `x` and `u` do not vary independently).
pub fn fit_with(points: &[(f64, f64, f64)]) -> Option<(f64, f64)> {
    if points.len() < 5 {
        return None;
    }
    let n = points.len() as f64;
    let (mx, mu, my) = points.iter().fold((0.0, 0.0, 0.0), |a, p| {
        (a.0 + p.0 / n, a.1 + p.1 / n, a.2 + p.2 / n)
    });
    let (mut sxx, mut suu, mut sxu, mut sxy, mut suy) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for (x, u, y) in points {
        let (dx, du, dy) = (x - mx, u - mu, y - my);
        sxx += dx * dx;
        suu += du * du;
        sxu += dx * du;
        sxy += dx * dy;
        suy += du * dy;
    }
    let det = suu * sxx - sxu * sxu;
    if det.abs() < 1e-9 * (suu * sxx).max(1e-12) {
        return None;
    }
    let b = (suy * sxx - sxy * sxu) / det;
    let c = (sxy * suu - suy * sxu) / det;
    Some((b, c))
}

/// One node's figures.
#[derive(Clone, Debug, Serialize)]
pub struct NodeSummary {
    /// Slot index.
    pub node: usize,
    /// Never churned (its trend covers the whole run).
    pub stable: bool,
    /// Times restarted by churn (or after a crash).
    pub restarts: usize,
    /// RSS at the first sample, KiB.
    pub rss_start_kib: Option<u64>,
    /// RSS at the last sample, KiB.
    pub rss_end_kib: Option<u64>,
    /// Highest RSS sampled, KiB.
    pub rss_max_kib: Option<u64>,
    /// RSS trend of the last process after its warm-up, KiB per minute.
    pub rss_slope_kib_per_min: Option<f64>,
    /// Minutes the slope covers.
    pub slope_span_min: f64,
    /// Anonymous memory (heap) at the last sample, KiB.
    pub anon_end_kib: Option<u64>,
    /// Its trend over the same span as the RSS slope, KiB per minute.
    pub anon_slope_kib_per_min: Option<f64>,
    /// Live heap at the last sample, KiB.
    pub heap_end_kib: Option<u64>,
    /// Its trend over the same span, KiB per minute.
    pub heap_slope_kib_per_min: Option<f64>,
    /// Live heap per item held (item content in the read cache plus group state), KiB: fitted
    /// together with the drift.
    pub heap_per_item_kib: Option<f64>,
    /// The live heap's trend once the items held are accounted for, KiB per minute: the leak
    /// measure (the items a node holds come and go with the working set).
    pub heap_drift_kib_per_min: Option<f64>,
    /// Open connections at the first and last sample.
    pub connections: (Option<f64>, Option<f64>),
    /// Tracked tasks at the first and last sample.
    pub tasks: (Option<f64>, Option<f64>),
    /// Items held at the last sample.
    pub items_end: Option<f64>,
}

/// Figures for one node from its samples; the slope skips the first `warmup_min` of its last
/// process.
pub fn summarise(
    node: usize,
    stable: bool,
    restarts: usize,
    samples: &[Sample],
    warmup_min: f64,
) -> NodeSummary {
    let rss: Vec<u64> = samples.iter().filter_map(|s| s.rss_kib).collect();
    let last_inc = samples.iter().map(|s| s.incarnation).max().unwrap_or(0);
    let inc_start = samples
        .iter()
        .find(|s| s.incarnation == last_inc && s.rss_kib.is_some())
        .map_or(0.0, |s| s.t_min);
    let after_warmup = || {
        samples
            .iter()
            .filter(move |s| s.incarnation == last_inc && s.t_min >= inc_start + warmup_min)
    };
    let pts: Vec<(f64, f64)> = after_warmup()
        .filter_map(|s| s.rss_kib.map(|r| (s.t_min, r as f64)))
        .collect();
    let anon_pts: Vec<(f64, f64)> = after_warmup()
        .filter_map(|s| s.anon_kib.map(|r| (s.t_min, r as f64)))
        .collect();
    let heap_pts: Vec<(f64, f64)> = after_warmup()
        .filter_map(|s| s.heap_kib.map(|r| (s.t_min, r as f64)))
        .collect();
    let heap_items: Vec<(f64, f64, f64)> = after_warmup()
        .filter_map(|s| Some((s.t_min, s.items?, s.heap_kib? as f64)))
        .collect();
    let fit = fit_with(&heap_items);
    let span = match (pts.first(), pts.last()) {
        (Some(a), Some(b)) => b.0 - a.0,
        _ => 0.0,
    };
    let first = |f: fn(&Sample) -> Option<f64>| samples.iter().find_map(f);
    let last = |f: fn(&Sample) -> Option<f64>| samples.iter().rev().find_map(f);
    NodeSummary {
        node,
        stable,
        restarts,
        rss_start_kib: rss.first().copied(),
        rss_end_kib: rss.last().copied(),
        rss_max_kib: rss.iter().max().copied(),
        rss_slope_kib_per_min: slope(&pts),
        slope_span_min: span,
        anon_end_kib: samples.iter().rev().find_map(|s| s.anon_kib),
        anon_slope_kib_per_min: slope(&anon_pts),
        heap_end_kib: samples.iter().rev().find_map(|s| s.heap_kib),
        heap_slope_kib_per_min: slope(&heap_pts),
        heap_per_item_kib: fit.map(|f| f.0),
        heap_drift_kib_per_min: fit.map(|f| f.1),
        connections: (first(|s| s.connections), last(|s| s.connections)),
        tasks: (first(|s| s.tasks), last(|s| s.tasks)),
        items_end: last(|s| s.items),
    }
}

fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or_else(|| "-".into(), |v| v.to_string())
}

fn opt_f(v: Option<f64>, prec: usize) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.prec$}"))
}

/// The per-node table.
pub fn node_table(rows: &[NodeSummary]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:>4} {:>6} {:>8} {:>11} {:>11} {:>11} {:>14} {:>11} {:>14} {:>11} {:>14} {:>9} {:>11} {:>11} {:>7}",
        "node",
        "kind",
        "restarts",
        "RSS start",
        "RSS end",
        "RSS max",
        "slope KiB/min",
        "anon end",
        "heap end",
        "heap KiB/min",
        "drift KiB/min",
        "over min",
        "conns s/e",
        "tasks s/e",
        "items"
    );
    for r in rows {
        let _ = writeln!(
            out,
            "{:>4} {:>6} {:>8} {:>8} KiB {:>7} KiB {:>7} KiB {:>14} {:>7} KiB {:>7} KiB {:>14} {:>14} {:>9.1} {:>11} {:>11} {:>7}",
            r.node,
            if r.stable { "stable" } else { "churn" },
            r.restarts,
            opt(r.rss_start_kib),
            opt(r.rss_end_kib),
            opt(r.rss_max_kib),
            opt_f(r.rss_slope_kib_per_min, 1),
            opt(r.anon_end_kib),
            opt(r.heap_end_kib),
            opt_f(r.heap_slope_kib_per_min, 1),
            opt_f(r.heap_drift_kib_per_min, 1),
            r.slope_span_min,
            format!(
                "{}/{}",
                opt_f(r.connections.0, 0),
                opt_f(r.connections.1, 0)
            ),
            format!("{}/{}", opt_f(r.tasks.0, 0), opt_f(r.tasks.1, 0)),
            opt_f(r.items_end, 0),
        );
    }
    out
}

/// Which memory figure a plot shows.
#[derive(Clone, Copy, Debug)]
pub enum Series {
    /// The whole resident set.
    Rss,
    /// Its anonymous part (heap and stacks).
    Anon,
    /// Live heap allocations.
    Heap,
}

impl Series {
    fn of(self, s: &Sample) -> Option<u64> {
        match self {
            Series::Rss => s.rss_kib,
            Series::Anon => s.anon_kib,
            Series::Heap => s.heap_kib,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Series::Rss => "RSS (MiB)",
            Series::Anon => "anonymous memory (MiB)",
            Series::Heap => "live heap (MiB)",
        }
    }
}

/// Plots every node's RSS or heap (MiB) over time; restarts show as drops (a new line per
/// process).
pub fn plot_rss(path: &Path, title: &str, series: &[Vec<Sample>], which: Series) -> Result<()> {
    let mut chart = Chart::new(title, "minutes", which.label());
    chart.size = (1000, 560);
    for (i, s) in series.iter().enumerate() {
        let color = plot::palette(i);
        let mut inc = usize::MAX;
        for p in s {
            let Some(r) = which.of(p) else {
                inc = usize::MAX;
                continue;
            };
            if p.incarnation != inc {
                chart.lines.push(Line {
                    label: None,
                    color,
                    width: 1,
                    points: Vec::new(),
                });
                inc = p.incarnation;
            }
            if let Some(line) = chart.lines.last_mut() {
                line.points.push((p.t_min, r as f64 / 1024.0));
            }
        }
    }
    chart.write_svg(path)?;
    Ok(())
}

/// Writes `value` as pretty JSON to `path`.
pub fn write_json(path: &Path, value: &impl Serialize) -> Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slope_of_a_line_and_of_noise_around_flat() {
        let line: Vec<(f64, f64)> = (0..10)
            .map(|i| (f64::from(i), 5.0 + 2.0 * f64::from(i)))
            .collect();
        assert!((slope(&line).unwrap() - 2.0).abs() < 1e-9);
        let flat: Vec<(f64, f64)> = (0..10)
            .map(|i| (f64::from(i), 100.0 + if i % 2 == 0 { 1.0 } else { -1.0 }))
            .collect();
        assert!(slope(&flat).unwrap().abs() < 0.5);
        assert_eq!(slope(&line[..2]), None);
    }

    #[test]
    fn the_drift_separates_growth_over_time_from_growth_with_items_held() {
        // Heap = 1000 + 6 per item + 2 per minute, items going up and down.
        let pts: Vec<(f64, f64, f64)> = (0..40)
            .map(|i| {
                let t = f64::from(i) * 0.5;
                let items = f64::from((i * 37) % 23 + 10);
                (t, items, 1000.0 + 6.0 * items + 2.0 * t)
            })
            .collect();
        let (per_item, drift) = fit_with(&pts).unwrap();
        assert!((per_item - 6.0).abs() < 1e-6 && (drift - 2.0).abs() < 1e-6);
        // Items rising in step with time cannot be told apart from a drift.
        let collinear: Vec<(f64, f64, f64)> = (0..10)
            .map(|i| (f64::from(i), f64::from(i), f64::from(i)))
            .collect();
        assert_eq!(fit_with(&collinear), None);
    }

    #[test]
    fn the_slope_covers_the_last_process_after_its_warm_up() {
        let mut samples = Vec::new();
        for i in 0..10 {
            // First process grows fast; the second is flat after one minute.
            let t = f64::from(i);
            samples.push(Sample {
                t_min: t,
                incarnation: 1,
                rss_kib: Some(1000 + 500 * i as u64),
                anon_kib: Some(400 + 100 * i as u64),
                heap_kib: Some(300 + 50 * i as u64),
                connections: Some(3.0),
                tasks: Some(10.0),
                items: None,
            });
        }
        for i in 10..20 {
            let t = f64::from(i);
            let rss = if i == 10 { 100 } else { 2000 };
            samples.push(Sample {
                t_min: t,
                incarnation: 2,
                rss_kib: Some(rss),
                anon_kib: Some(rss / 2),
                heap_kib: Some(rss / 4),
                connections: Some(4.0),
                tasks: Some(12.0),
                items: Some(7.0),
            });
        }
        let s = summarise(3, false, 1, &samples, 1.0);
        assert_eq!(s.rss_start_kib, Some(1000));
        assert_eq!(s.rss_end_kib, Some(2000));
        assert_eq!(s.rss_max_kib, Some(5500));
        assert!(s.rss_slope_kib_per_min.unwrap().abs() < 1e-9, "{s:?}");
        assert!(s.anon_slope_kib_per_min.unwrap().abs() < 1e-9, "{s:?}");
        assert_eq!(s.anon_end_kib, Some(1000));
        assert!(s.heap_slope_kib_per_min.unwrap().abs() < 1e-9, "{s:?}");
        assert_eq!(s.heap_end_kib, Some(500));
        assert_eq!(s.connections, (Some(3.0), Some(4.0)));
        assert_eq!(s.tasks, (Some(10.0), Some(12.0)));
    }
}
