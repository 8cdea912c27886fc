//! Percentiles over repeated runs and the benchmark's summary table.

use std::fmt::Write as _;
use std::time::Duration;

/// The outcomes of one benchmark scenario over repeated runs.
#[derive(Debug, Clone, Default)]
pub struct Series {
    /// Scenario name.
    pub name: String,
    /// Target from GOALS.md, printed beside the figures.
    pub target: String,
    /// Time of each run that finished; runs that timed out are counted in `timeouts`.
    pub samples: Vec<Duration>,
    /// Runs that did not reach the goal before the deadline.
    pub timeouts: usize,
    /// Runs that finished within the target bound.
    pub within_target: usize,
    /// The machine's 1-minute load average at the end of each run: timings on a shared 2-core
    /// machine mean little without it.
    pub load: Vec<f64>,
}

impl Series {
    /// An empty series.
    pub fn new(name: impl Into<String>, target: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            target: target.into(),
            ..Self::default()
        }
    }

    /// Number of runs, finished or not.
    pub fn runs(&self) -> usize {
        self.samples.len() + self.timeouts
    }

    /// The `q`-quantile (0..=1) by nearest rank over finished runs; timeouts count as +∞, so a
    /// p99 over runs with a timeout is `None` (reported as "timeout") rather than flattering.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        let mut sorted = self.samples.clone();
        sorted.sort();
        let n = self.runs();
        if n == 0 {
            return None;
        }
        let rank = ((q * n as f64).ceil() as usize).clamp(1, n);
        sorted.get(rank - 1).copied()
    }
}

/// The 1-minute load average (`/proc/loadavg`), if readable.
pub fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn ms(d: Option<Duration>, runs: usize) -> String {
    match d {
        _ if runs == 0 => "-".to_string(),
        None => "timeout".to_string(),
        Some(d) => format!("{:.0} ms", d.as_secs_f64() * 1000.0),
    }
}

/// The summary table, one row per series.
pub fn table(series: &[Series]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<34} {:>5} {:>9} {:>10} {:>10} {:>10} {:>10} {:>11}  target",
        "scenario", "runs", "timeouts", "p50", "p99", "max", "in target", "load min-max"
    );
    for s in series {
        let (lo, hi) = s.load.iter().fold((f64::INFINITY, 0.0_f64), |(lo, hi), l| {
            (lo.min(*l), hi.max(*l))
        });
        let load = if s.load.is_empty() {
            "-".into()
        } else {
            format!("{lo:.1}-{hi:.1}")
        };
        let _ = writeln!(
            out,
            "{:<34} {:>5} {:>9} {:>10} {:>10} {:>10} {:>7}/{:<2} {:>11}  {}",
            s.name,
            s.runs(),
            s.timeouts,
            ms(s.quantile(0.5), s.runs()),
            ms(s.quantile(0.99), s.runs()),
            ms(s.quantile(1.0), s.runs()),
            s.within_target,
            s.runs(),
            load,
            s.target
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(ms: &[u64], timeouts: usize) -> Series {
        Series {
            samples: ms.iter().map(|&m| Duration::from_millis(m)).collect(),
            timeouts,
            ..Series::default()
        }
    }

    #[test]
    fn nearest_rank_quantiles() {
        let s = series(&[50, 10, 40, 30, 20], 0);
        assert_eq!(s.quantile(0.5), Some(Duration::from_millis(30)));
        assert_eq!(s.quantile(0.99), Some(Duration::from_millis(50)));
        assert_eq!(s.quantile(0.0), Some(Duration::from_millis(10)));
    }

    #[test]
    fn timeouts_rank_last() {
        let s = series(&[10, 20, 30], 1);
        assert_eq!(s.quantile(0.5), Some(Duration::from_millis(20)));
        assert_eq!(s.quantile(0.99), None);
    }
}
