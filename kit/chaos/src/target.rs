//! Which containers a step hits: a name, or a seeded random choice among the eligible ones.
//!
//! Choices draw from one `StdRng` seeded by the run's seed, over containers listed in a fixed
//! order (LAN, role, number), so the same seed against the same network (and the same
//! Cargo.lock) picks the same victims; every choice is also written to the fault log.

use anyhow::{Result, bail, ensure};
use rand::Rng;
use rand::seq::IndexedRandom;

use butter_testbed::engine::{Container, Role};

/// A seed for a run that was given none: the clock's nanoseconds mixed with the PID, kept below
/// 2^53 so it survives JSON tools that read numbers as doubles. It is printed and logged.
pub fn fresh_seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    (nanos ^ (u64::from(std::process::id()) << 32)).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 11
}

/// A step's `target`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Any Butter container (LAN node or gateway).
    Random,
    /// A LAN node, never a gateway.
    RandomNode,
    /// A gateway.
    RandomGateway,
    /// One container by its short label (`lan-a-1`, `gw-b`), its name (`butter_lan-a_1`) or
    /// an id prefix of at least 6 characters.
    Named(String),
}

impl Target {
    /// Parses `random`, `random-node`, `random-gateway` or a container name.
    pub fn parse(s: &str) -> Result<Self> {
        let s = s.trim();
        ensure!(
            !s.is_empty(),
            "empty target: name a container or say random"
        );
        Ok(match s {
            "random" => Target::Random,
            "random-node" => Target::RandomNode,
            "random-gateway" => Target::RandomGateway,
            _ => Target::Named(s.to_string()),
        })
    }

    /// Whether the choice is random (and so may take a count).
    pub fn is_random(&self) -> bool {
        !matches!(self, Target::Named(_))
    }

    fn admits(&self, c: &Container) -> bool {
        match self {
            Target::Random => true,
            Target::RandomNode => c.role == Role::Node,
            Target::RandomGateway => c.role == Role::Gateway,
            Target::Named(n) => c.matches(n),
        }
    }
}

/// Picks `count` containers for `target` out of `pool`; random targets choose among those for
/// which `eligible` holds (e.g. running ones for `kill`), named ones must exist.
pub fn choose<'a, R: Rng + ?Sized>(
    target: &Target,
    pool: &'a [Container],
    count: usize,
    eligible: impl Fn(&Container) -> bool,
    rng: &mut R,
) -> Result<Vec<&'a Container>> {
    if let Target::Named(name) = target {
        ensure!(
            count == 1,
            "a named target is one container; count is {count}"
        );
        return match pool.iter().find(|c| c.matches(name)) {
            Some(c) => Ok(vec![c]),
            None => bail!(
                "no container {name:?}; known: {}",
                pool.iter()
                    .map(Container::label)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
    }
    let candidates: Vec<&Container> = pool
        .iter()
        .filter(|c| target.admits(c) && eligible(c))
        .collect();
    ensure!(
        candidates.len() >= count,
        "{target:?}: {count} wanted, {} eligible",
        candidates.len()
    );
    Ok(candidates
        .choose_multiple(rng, count)
        .copied()
        .collect::<Vec<_>>())
}

/// `random` → one of `lans` (seeded); a name is returned as is.
pub fn choose_lan<R: Rng + ?Sized>(lan: &str, lans: &[&str], rng: &mut R) -> Result<String> {
    if lan != "random" {
        return Ok(lan.to_string());
    }
    lans.choose(rng)
        .map(|l| l.to_string())
        .ok_or_else(|| anyhow::anyhow!("no LANs"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use butter_testbed::engine::State;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn bed() -> Vec<Container> {
        let mut v = Vec::new();
        for lan in ["lan-a", "lan-b", "lan-c"] {
            let gw = format!("gw-{}", &lan[4..]);
            v.push(Container::on_paper(
                &gw,
                1,
                Role::Gateway,
                lan,
                State::Running,
            ));
            for n in 1..=4 {
                v.push(Container::on_paper(lan, n, Role::Node, lan, State::Running));
            }
        }
        v
    }

    fn labels(v: &[&Container]) -> Vec<String> {
        v.iter().map(|c| c.label()).collect()
    }

    #[test]
    fn the_same_seed_picks_the_same_victims() {
        let pool = bed();
        let pick = |seed| {
            let mut rng = StdRng::seed_from_u64(seed);
            let first = labels(&choose(&Target::RandomNode, &pool, 2, |_| true, &mut rng).unwrap());
            let lan = choose_lan("random", &["lan-a", "lan-b", "lan-c"], &mut rng).unwrap();
            (first, lan)
        };
        assert_eq!(pick(7), pick(7));
        let distinct: std::collections::BTreeSet<_> = (0..20).map(pick).collect();
        assert!(distinct.len() > 5, "seeds barely matter: {distinct:?}");
    }

    #[test]
    fn random_node_never_picks_a_gateway_and_respects_eligibility() {
        let mut pool = bed();
        pool[1].state = State::Stopped; // lan-a-1
        for seed in 0..50 {
            let mut rng = StdRng::seed_from_u64(seed);
            let got = choose(
                &Target::RandomNode,
                &pool,
                3,
                |c| c.state == State::Running,
                &mut rng,
            )
            .unwrap();
            assert_eq!(got.len(), 3);
            let mut ls = labels(&got);
            assert!(ls.iter().all(|l| !l.starts_with("gw-") && l != "lan-a-1"));
            ls.sort();
            ls.dedup();
            assert_eq!(ls.len(), 3, "no container twice");
        }
        let mut rng = StdRng::seed_from_u64(1);
        let gw = choose(&Target::RandomGateway, &pool, 3, |_| true, &mut rng).unwrap();
        assert!(labels(&gw).iter().all(|l| l.starts_with("gw-")));
        assert!(choose(&Target::RandomGateway, &pool, 4, |_| true, &mut rng).is_err());
    }

    #[test]
    fn named_targets_match_label_or_name() {
        let pool = bed();
        let mut rng = StdRng::seed_from_u64(0);
        for name in ["lan-b-3", "butter_lan-b_3", "butter-lan-b-3"] {
            let got = choose(&Target::parse(name).unwrap(), &pool, 1, |_| false, &mut rng);
            assert_eq!(labels(&got.unwrap()), ["lan-b-3"], "{name}");
        }
        assert!(
            choose(
                &Target::parse("lan-q-1").unwrap(),
                &pool,
                1,
                |_| true,
                &mut rng
            )
            .is_err()
        );
        assert!(
            choose(
                &Target::parse("gw-a").unwrap(),
                &pool,
                2,
                |_| true,
                &mut rng
            )
            .is_err()
        );
        assert_eq!(choose_lan("lan-c", &[], &mut rng).unwrap(), "lan-c");
    }
}
