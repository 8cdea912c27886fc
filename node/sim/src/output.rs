//! Output: series as CSV and JSON, an SVG plot of item health and retrieval success, and tables.

use std::fmt::Write as _;
use std::path::Path;

use plotters::prelude::*;

use crate::rigs::{ChurnRow, MaintenanceRow, ORIGINAL_RETRIEVAL, RetrievalRow, ScaleRow};
use crate::world::Sample;

/// Why writing output failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OutputError {
    /// Writing a file failed.
    #[error("writing {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// Drawing the plot failed.
    #[error("plotting: {0}")]
    Plot(String),
    /// Encoding JSON failed.
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
}

fn write(path: &Path, text: &str) -> Result<(), OutputError> {
    std::fs::write(path, text).map_err(|source| OutputError::Io {
        path: path.display().to_string(),
        source,
    })
}

/// The series as CSV (one row per sample).
pub fn csv(series: &[Sample]) -> String {
    let mut out =
        String::from("t_s,live_nodes,stored,held_ok,held_low,lost,found,failed,msgs_per_node_s\n");
    for s in series {
        let _ = writeln!(
            out,
            "{:.1},{},{},{},{},{},{},{},{:.3}",
            s.t,
            s.live_nodes,
            s.stored,
            s.held_ok,
            s.held_low,
            s.lost,
            s.found,
            s.failed,
            s.msgs_per_node_s
        );
    }
    out
}

/// Writes `<stem>.csv`, `<stem>.json` and `<stem>.svg` into `dir`.
pub fn write_series(
    dir: &Path,
    stem: &str,
    title: &str,
    series: &[Sample],
) -> Result<(), OutputError> {
    std::fs::create_dir_all(dir).map_err(|source| OutputError::Io {
        path: dir.display().to_string(),
        source,
    })?;
    write(&dir.join(format!("{stem}.csv")), &csv(series))?;
    write(
        &dir.join(format!("{stem}.json")),
        &serde_json::to_string_pretty(series)?,
    )?;
    plot(&dir.join(format!("{stem}.svg")), title, series)
}

/// A plotted line: label, colour, value of a sample (None: no point).
type Line = (&'static str, RGBColor, Box<dyn Fn(&Sample) -> Option<f64>>);

/// Plots % of items held at ≥ r, at < r, lost, and the retrieval success rate over time.
pub fn plot(path: &Path, title: &str, series: &[Sample]) -> Result<(), OutputError> {
    let err = |e: &dyn std::fmt::Display| OutputError::Plot(e.to_string());
    let root = SVGBackend::new(path, (900, 500)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let t_max = series.last().map_or(1.0, |s| s.t).max(1.0);
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(0f64..t_max, 0f64..100f64)
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_desc("simulated time (s)")
        .y_desc("% of items / % of searches")
        .draw()
        .map_err(|e| err(&e))?;
    let pct = |n: usize, d: usize| {
        if d == 0 {
            0.0
        } else {
            100.0 * n as f64 / d as f64
        }
    };
    let lines: [Line; 3] = [
        (
            "held at >= r",
            GREEN,
            Box::new(move |s: &Sample| Some(pct(s.held_ok, s.stored))),
        ),
        (
            "held at < r",
            RGBColor(230, 150, 0),
            Box::new(move |s: &Sample| Some(pct(s.held_low, s.stored))),
        ),
        (
            "lost",
            RED,
            Box::new(move |s: &Sample| Some(pct(s.lost, s.stored))),
        ),
    ];
    // Cumulative retrieval success: a window holding only the late failures of lost items would
    // otherwise read as 0 %.
    let (mut found, mut failed) = (0usize, 0usize);
    let cumulative: Vec<(f64, f64)> = series
        .iter()
        .filter_map(|s| {
            found += s.found;
            failed += s.failed;
            (found + failed > 0).then(|| (s.t, pct(found, found + failed)))
        })
        .collect();
    chart
        .draw_series(LineSeries::new(cumulative, BLUE.stroke_width(2)))
        .map_err(|e| err(&e))?
        .label("retrieval success (cumulative)")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE.stroke_width(2)));
    for (label, color, f) in lines {
        let pts: Vec<(f64, f64)> = series
            .iter()
            .filter(|s| s.stored > 0)
            .filter_map(|s| f(s).map(|v| (s.t, v)))
            .collect();
        chart
            .draw_series(LineSeries::new(pts, color.stroke_width(2)))
            .map_err(|e| err(&e))?
            .label(label)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::LowerRight)
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

/// The churn table, beside the original's figures.
pub fn churn_table(rows: &[ChurnRow]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:>8} | {:>9} | {:>11} | {:>6} | {:>9} | {:>9} | {:>6} | {:>12} | {:>10} | {:>17} | {:>10}",
        "c",
        "original",
        "ours found",
        "items",
        "data lost",
        "retr fail",
        "deaths",
        "repair/lost",
        "msgs/search",
        "SWIM p50/p99 (s)",
        "memb msg/s"
    );
    let _ = writeln!(out, "{}", "-".repeat(140));
    for r in rows {
        let orig = r.original.map_or("-".to_owned(), |p| format!("{p:.1} %"));
        let _ = writeln!(
            out,
            "{:>8} | {:>9} | {:>9.2} % | {:>6} | {:>9} | {:>9} | {:>6} | {:>12.2} | {:>10.1} | {:>17} | {:>10.2}",
            format!("1/{}", r.rate),
            orig,
            r.retrievable_pct,
            r.items,
            r.lost,
            r.retrieval_failed,
            r.deaths,
            r.repair_ratio,
            r.msgs_per_search,
            format!("{:.1} / {:.1}", r.detect_p50_s, r.detect_p99_s),
            r.membership_per_node_s
        );
    }
    let seeds = rows
        .first()
        .map(|r| format!("{:?}", r.seeds))
        .unwrap_or_default();
    let _ = writeln!(out, "seeds {seeds}; counts summed over seeds");
    for r in rows {
        if r.undetected + r.false_dead > 0 {
            let _ = writeln!(
                out,
                "1/{}: {} deaths no table noticed before the end, {} live nodes declared dead",
                r.rate, r.undetected, r.false_dead
            );
        }
    }
    out
}

/// The retrieval table, beside the original's figures.
pub fn retrieval_table(rows: &[RetrievalRow]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:>5} | {:<30} | {:>7} | {:>8} | {:>10} | {:>9} | {:>7} | {:>7} | {:>5} | {:>8}",
        "N",
        "strategy",
        "queries",
        "found",
        "found<=4h",
        "msgs mean",
        "msgs50",
        "msgs99",
        "hops",
        "p50 ms"
    );
    let _ = writeln!(out, "{}", "-".repeat(118));
    for (name, msgs, found) in ORIGINAL_RETRIEVAL {
        let _ = writeln!(
            out,
            "{:>5} | {:<30} | {:>7} | {:>6.1} % | {:>10} | {:>9.1} | {:>7} | {:>7} | {:>5} | {:>8}",
            100,
            format!("original report: {name}"),
            "-",
            found,
            "-",
            msgs,
            "-",
            "-",
            "-",
            "-"
        );
    }
    for r in rows {
        let _ = writeln!(
            out,
            "{:>5} | {:<30} | {:>7} | {:>6.1} % | {:>8.1} % | {:>9.1} | {:>7} | {:>7} | {:>5.2} | {:>8.1}",
            r.nodes,
            r.strategy,
            r.queries,
            r.found_pct,
            r.found_4_hops_pct,
            r.msgs_mean,
            r.msgs_p50,
            r.msgs_p99,
            r.hops_mean,
            r.latency_p50_ms
        );
    }
    if let Some(r) = rows.first() {
        let _ = writeln!(out, "seed {}", r.seed);
    }
    out
}

/// The scale result.
pub fn scale_table(row: &ScaleRow) -> String {
    format!(
        "{:>7} | {:>11} | {:>8} | {:>12} | {:>7} | {:>5} | {:>6} | {:>11} | {}\n{}\n{:>7} | {:>11.0} | {:>8.1} | {:>12} | {:>7} | {:>5} | {:>6} | {:>11.2} | {}\n",
        "nodes",
        "simulated s",
        "wall s",
        "events",
        "deaths",
        "lost",
        "items",
        "msgs/node/s",
        "log hash",
        "-".repeat(100),
        row.nodes,
        row.simulated_s,
        row.wall_s,
        row.events,
        row.deaths,
        row.lost,
        row.items,
        row.msgs_per_node_s,
        row.log_hash
    )
}

/// The maintenance-cost table.
pub fn maintenance_table(rows: &[MaintenanceRow]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:>6} | {:>7} | {:>14} | {:>16} | {:>15} | {:>12} | {:>17}",
        "nodes",
        "items",
        "replicas/node",
        "heartbeats/node/s",
        "summaries/node/s",
        "total/node/s",
        "membership/node/s"
    );
    let _ = writeln!(out, "{}", "-".repeat(106));
    for r in rows {
        let _ = writeln!(
            out,
            "{:>6} | {:>7} | {:>14.1} | {:>16.3} | {:>15.3} | {:>12.3} | {:>17.3}",
            r.nodes,
            r.items,
            r.replicas_per_node,
            r.heartbeats_per_node_s,
            r.summaries_per_node_s,
            r.total_per_node_s,
            r.membership_per_node_s
        );
    }
    out
}

/// The explorer's summary: one row per seed, then the totals.
pub fn explore_table(rows: &[crate::explore::Outcome]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:>6} | {:>6} | {:>9} | {:>6} | {:>8} | {:>13} | invariants",
        "seed", "items", "destroyed", "deaths", "over r", "stale dead s"
    );
    let _ = writeln!(out, "{}", "-".repeat(80));
    for r in rows {
        let _ = writeln!(
            out,
            "{:>6} | {:>6} | {:>9} | {:>6} | {:>8} | {:>13.1} | {}",
            r.seed,
            r.items,
            r.destroyed,
            r.deaths,
            r.over_r,
            r.stale_dead_max_s,
            if r.broken.is_empty() {
                "held".to_owned()
            } else {
                r.broken.join("; ")
            }
        );
    }
    let broken = rows.iter().filter(|r| !r.broken.is_empty()).count();
    let _ = writeln!(
        out,
        "{} seeds, {} broke an invariant; {} items destroyed by deaths, {} deaths in all",
        rows.len(),
        broken,
        rows.iter().map(|r| r.destroyed).sum::<usize>(),
        rows.iter().map(|r| r.deaths).sum::<u64>()
    );
    out
}
