//! Churn models: who dies when. Dead nodes are replaced at once by an empty node with a new identity
//! on the same site (the original's "replaced empty").

use std::time::Duration;

use rand::Rng;
use rand::rngs::SmallRng;

/// How nodes fail.
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub enum Churn {
    /// Nobody dies.
    None,
    /// The original's model: every second, each node dies with probability `chance`.
    PerSecond {
        /// Per-node, per-second probability of death (e.g. 1/50).
        chance: f64,
    },
    /// Session lengths drawn from an exponential distribution.
    Exponential {
        /// Mean session length.
        mean: Duration,
    },
    /// Heavy-tailed (Pareto) session lengths: most nodes leave soon, a few stay very long.
    Pareto {
        /// Mean session length.
        mean: Duration,
        /// Tail index α (> 1; smaller is heavier). 1.5 is typical of measured P2P sessions.
        shape: f64,
    },
    /// Every node of one site fails at once at `at`.
    SiteFailure {
        /// The site (0-based).
        site: usize,
        /// When.
        at: Duration,
    },
}

impl Churn {
    /// A session length for a node born now, for session-based models.
    pub fn session(&self, rng: &mut SmallRng) -> Option<Duration> {
        match *self {
            Churn::Exponential { mean } => {
                let u: f64 = rng.random_range(f64::EPSILON..1.0);
                Some(mean.mul_f64(-u.ln()))
            }
            Churn::Pareto { mean, shape } => {
                let shape = shape.max(1.01);
                // Scale x_m so that the mean is `mean`: E = α x_m / (α − 1).
                let xm = mean.as_secs_f64() * (shape - 1.0) / shape;
                let u: f64 = rng.random_range(f64::EPSILON..1.0);
                Some(Duration::from_secs_f64(xm / u.powf(1.0 / shape)))
            }
            _ => None,
        }
    }

    /// A short label for tables.
    pub fn label(&self) -> String {
        match self {
            Churn::None => "none".into(),
            Churn::PerSecond { chance } => format!("c=1/{:.0}", 1.0 / chance),
            Churn::Exponential { mean } => format!("exp(mean {}s)", mean.as_secs()),
            Churn::Pareto { mean, shape } => format!("pareto(mean {}s, a={shape})", mean.as_secs()),
            Churn::SiteFailure { site, at } => format!("site {site} fails at {}s", at.as_secs()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn mean_of(c: Churn) -> f64 {
        let mut rng = SmallRng::seed_from_u64(3);
        let n = 200_000;
        (0..n)
            .map(|_| c.session(&mut rng).expect("session model").as_secs_f64())
            .sum::<f64>()
            / n as f64
    }

    #[test]
    fn session_models_have_the_requested_mean() {
        let m = mean_of(Churn::Exponential {
            mean: Duration::from_secs(100),
        });
        assert!((m - 100.0).abs() < 2.0, "{m}");
        // Heavy tails converge slowly: a loose check, and a median well below the mean.
        let p = Churn::Pareto {
            mean: Duration::from_secs(100),
            shape: 2.5,
        };
        let m = mean_of(p);
        assert!((m - 100.0).abs() < 8.0, "{m}");
        let mut rng = SmallRng::seed_from_u64(4);
        let mut v: Vec<f64> = (0..10_001)
            .map(|_| p.session(&mut rng).expect("session model").as_secs_f64())
            .collect();
        v.sort_by(f64::total_cmp);
        assert!(v[5000] < 90.0);
    }

    #[test]
    fn per_second_and_site_models_have_no_sessions() {
        let mut rng = SmallRng::seed_from_u64(1);
        assert_eq!(Churn::PerSecond { chance: 0.1 }.session(&mut rng), None);
        assert_eq!(Churn::None.session(&mut rng), None);
    }
}
