//! Small versions of the rigs: seconds in a debug build. Every assertion message names its seed so
//! a failure can be replayed with `butter-sim run --seed N` or the rig's `--seeds N`.

use std::time::Duration;

use butter_proto::rbfs;
use butter_sim::churn::Churn;
use butter_sim::output;
use butter_sim::rigs::{self, ChurnRig, RetrievalRig};
use butter_sim::world::{Scenario, World, run};

fn small_churn(seed: u64) -> Scenario {
    Scenario {
        seed,
        nodes: 60,
        items: 60,
        churn: Churn::PerSecond { chance: 1.0 / 50.0 },
        churn_window: (Duration::from_secs(10), Duration::from_secs(25)),
        probe_rate: 4.0,
        probe_window: (Duration::from_secs(8), Duration::from_secs(30)),
        duration: Duration::from_secs(30),
        ..Scenario::default()
    }
}

#[test]
fn same_seed_same_event_log_different_seed_different_log() {
    for seed in [7, 8] {
        let a = run(small_churn(seed));
        let b = run(small_churn(seed));
        assert_eq!(
            a.log_hash, b.log_hash,
            "seed {seed}: same seed gave different event logs"
        );
        assert_eq!(a.events, b.events, "seed {seed}");
        assert_eq!(
            serde_json::to_string(&a.series).unwrap(),
            serde_json::to_string(&b.series).unwrap(),
            "seed {seed}: series differ"
        );
        assert!(a.deaths > 0, "seed {seed}: the scenario must churn");
    }
    assert_ne!(run(small_churn(7)).log_hash, run(small_churn(8)).log_hash);
}

#[test]
fn churn_rig_small_beats_the_original_and_separates_loss_from_search_failure() {
    let rig = ChurnRig {
        nodes: 120,
        items: 150,
        rates: vec![50, 1000],
        seeds: vec![1, 2],
        ..ChurnRig::default()
    };
    let rows = rig.run(|_, _, _| {});
    let seeds = &rig.seeds;
    let at50 = &rows[0];
    assert_eq!(at50.items, 300, "seeds {seeds:?}: every item swept");
    assert!(
        at50.deaths > 100,
        "seeds {seeds:?}: churn happened ({})",
        at50.deaths
    );
    assert!(
        at50.retrievable_pct >= 95.0,
        "seeds {seeds:?}: c=1/50 → {:.2} %",
        at50.retrievable_pct
    );
    assert_eq!(
        at50.items - at50.lost - at50.retrieval_failed,
        (at50.retrievable_pct / 100.0 * at50.items as f64).round() as usize
    );
    let at1000 = &rows[1];
    assert_eq!(
        at1000.lost + at1000.retrieval_failed,
        0,
        "seeds {seeds:?}: c=1/1000 must keep and find all"
    );
    assert!(
        at50.repair_ratio < 1.5,
        "seeds {seeds:?}: repair bytes / lost bytes {:.2}",
        at50.repair_ratio
    );
}

#[test]
fn retrieval_rig_small_meets_t11_on_100_nodes() {
    let rig = RetrievalRig {
        sizes: vec![100],
        queries: 150,
        seed: 3,
        ..RetrievalRig::default()
    };
    let rows = rig.run(|_| {});
    let seed = rig.seed;
    let [flood, original, ours] = [&rows[0], &rows[1], &rows[2]];
    assert!(
        ours.queries >= 140,
        "seed {seed}: {} searches ran",
        ours.queries
    );
    assert!(
        ours.found_4_hops_pct >= 99.0,
        "seed {seed}: ours found within 4 hops {:.1} %",
        ours.found_4_hops_pct
    );
    assert!(
        ours.msgs_mean <= 100.0,
        "seed {seed}: ours {:.1} messages per search",
        ours.msgs_mean
    );
    assert_eq!(
        ours.found_pct, ours.found_4_hops_pct,
        "seed {seed}: guided searches respect the hop limit"
    );
    assert!(
        flood.found_pct >= 99.0,
        "seed {seed}: flood {:.1} %",
        flood.found_pct
    );
    assert!(
        flood.msgs_mean > 10.0 * ours.msgs_mean,
        "seed {seed}: flood must cost far more"
    );
    assert!(
        original.msgs_mean > 3.0 * ours.msgs_mean,
        "seed {seed}: original RBFS must cost more"
    );
}

#[test]
fn a_missing_item_fails_in_bounded_messages_in_the_sim() {
    // Items are stored only after the searches: every search is for an item nobody holds yet.
    let sc = Scenario {
        seed: 5,
        nodes: 80,
        items: 20,
        store_window: (Duration::from_secs(200), Duration::from_secs(201)),
        duration: Duration::from_secs(40),
        ..Scenario::default()
    };
    let mut w = World::new(sc);
    let ids: Vec<_> = (0..10u32)
        .map(|i| butter_proto::item::ItemId::of(&i.to_le_bytes()))
        .collect();
    for id in &ids {
        w.search_at(Duration::from_secs(20), *id);
    }
    let report = w.run();
    assert_eq!(report.queries.len(), 10, "seed 5");
    let cfg = rbfs::Config::default();
    let bound: u32 = (0..cfg.attempts)
        .map(|a| 2 * cfg.budget * cfg.budget_growth.pow(a) + 3)
        .sum();
    for q in &report.queries {
        assert!(!q.found, "seed 5: nothing to find");
        assert!(
            q.messages <= bound,
            "seed 5: {} messages > bound {bound}",
            q.messages
        );
        assert!(q.seconds < 5.0, "seed 5: gave up after {:.1} s", q.seconds);
    }
}

#[test]
fn a_whole_site_failing_loses_nothing() {
    for seed in [11, 12] {
        let sc = Scenario {
            seed,
            nodes: 60,
            sites: 4,
            items: 80,
            churn: Churn::SiteFailure {
                site: 2,
                at: Duration::from_secs(12),
            },
            churn_window: (Duration::from_secs(12), Duration::from_secs(13)),
            final_sweep: Some(Duration::from_secs(25)),
            duration: Duration::from_secs(35),
            ..Scenario::default()
        };
        let report = run(sc);
        assert_eq!(
            report.deaths, 15,
            "seed {seed}: one site of 15 nodes failed"
        );
        assert_eq!(
            report.lost_at_end, 0,
            "seed {seed}: groups span sites, nothing lost"
        );
        let found = report.queries.iter().filter(|q| q.sweep && q.found).count();
        assert_eq!(
            found, 80,
            "seed {seed}: every item found after the site failure"
        );
        let last = report.series.last().expect("samples");
        assert_eq!(last.held_ok, 80, "seed {seed}: every group back at r");
    }
}

#[test]
fn maintenance_messages_per_node_do_not_grow_with_items() {
    let rows = rigs::maintenance(30, &[10, 200], 9);
    let (few, many) = (&rows[0], &rows[1]);
    assert!(
        many.replicas_per_node >= 19.0 * few.replicas_per_node,
        "seed 9"
    );
    let ratio = many.total_per_node_s / few.total_per_node_s;
    assert!(
        (0.85..1.15).contains(&ratio),
        "seed 9: {:.3} vs {:.3} msgs/node/s",
        few.total_per_node_s,
        many.total_per_node_s
    );
}

#[test]
fn series_are_written_as_csv_json_and_svg() {
    let report = run(small_churn(3));
    let dir = std::env::temp_dir().join(format!("butter-sim-test-{}", std::process::id()));
    output::write_series(&dir, "t", "test", &report.series).unwrap();
    let csv = std::fs::read_to_string(dir.join("t.csv")).unwrap();
    assert!(csv.starts_with("t_s,live_nodes"));
    assert_eq!(csv.lines().count(), report.series.len() + 1);
    let svg = std::fs::read_to_string(dir.join("t.svg")).unwrap();
    assert!(svg.contains("<svg") && svg.contains("retrieval success"));
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("t.json")).unwrap()).unwrap();
    assert_eq!(json.as_array().map(Vec::len), Some(report.series.len()));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn the_fault_explorer_holds_every_invariant_on_its_first_seeds() {
    // `butter-sim explore --seeds 1..20`: random topologies, churn, partitions, loss, liars and
    // replayers. Seed 14 has a liar and a replayer in one group: it held only once the core
    // banned liars (before, the liar stayed a member and its group sat below r).
    for seed in 1..=20 {
        let o = butter_sim::explore::run_seed(seed);
        assert!(
            o.broken.is_empty(),
            "seed {seed} ({}): {}; replay: {}",
            o.scenario,
            o.broken.join("; "),
            butter_sim::explore::replay_command(seed)
        );
    }
    // Found by the explorer, kept as regressions: 760, 385 and 922 (two nodes ordered the same
    // two views oppositely because each counted only the sites it knew: both sides left for the
    // other's view and every copy went, in 760 with no node dying).
    // 761: a holder recorded a rival view, its own group then merged past it (a newer view at a
    // higher version), and once the rival's members had proven their copies it left for the
    // stale rival anyway; members of the newer view did the same towards older views, each
    // side's holders dropped on the other's proofs, and an item vanished with holders up.
    for seed in [760, 385, 922, 761] {
        let o = butter_sim::explore::run_seed(seed);
        assert!(o.broken.is_empty(), "seed {seed}: {}", o.broken.join("; "));
    }
    let o = butter_sim::explore::run_seed(14);
    assert!(
        o.scenario.contains("replayer") && o.scenario.contains("liar"),
        "{}",
        o.scenario
    );
    // 136: groups re-formed inside a partition won the merge at the heal, the other side's
    // trimmed holders dropped their copies and the winning site failed (2 items lost). Nothing
    // is lost now; one group still sits below r a minute after the faults (an orphan holding
    // the last copy waits on proofs from members that have died), a known gap.
    let o = butter_sim::explore::run_seed(136);
    assert_eq!(o.destroyed, 0, "seed 136: {}", o.broken.join("; "));
    assert!(
        !o.broken.iter().any(|b| b.contains("vanished")),
        "seed 136: {}",
        o.broken.join("; ")
    );
    // Same seed, same run.
    assert_eq!(
        butter_sim::explore::run_seed(9).log_hash,
        butter_sim::explore::run_seed(9).log_hash
    );
}

#[test]
fn the_explorer_catches_an_item_dropped_by_a_live_node() {
    // The checks are real: a run where a live node deletes an item everywhere breaks the
    // "no item vanishes while a holder is up" invariant (a delete is a drop by live nodes).
    let sc = Scenario {
        seed: 4,
        nodes: 20,
        items: 5,
        duration: Duration::from_secs(30),
        check_invariants: true,
        ..Scenario::default()
    };
    let mut w = World::new(sc.clone());
    w.delete_at(Duration::from_secs(15), 0);
    let report = w.run();
    assert_eq!(
        report.invariants.dropped_by_live, 1,
        "{:?}",
        report.invariants
    );
    assert!(!butter_sim::explore::check(&sc, &report).is_empty());
}

#[test]
fn full_tables_settle_instead_of_trading_hosts_forever() {
    // 400 nodes on 16 sites: every table is full (capacity 64) and exchanges keep offering hosts
    // the diversity rule would take. Each trade used to be a Hello whose answer offered the next
    // candidate (~19 dials per node per second at 500 nodes). At capacity one candidate per
    // exchange now, none from a candidate's answer, evicted hosts remembered.
    let sc = Scenario {
        seed: 2,
        nodes: 400,
        sites: 16,
        items: 0,
        duration: Duration::from_secs(50),
        measure_from: Duration::from_secs(30),
        ..Scenario::default()
    };
    let report = run(sc);
    let hellos: u64 = report
        .messages
        .iter()
        .filter(|(k, _)| k.starts_with("hello_"))
        .map(|(_, v)| v)
        .sum();
    let per_node_s = hellos as f64 / 400.0 / 20.0;
    // Measured: 0.24; 1.30 without the limit on candidates at capacity.
    assert!(
        per_node_s < 0.6,
        "seed 2: {per_node_s:.2} Hellos per node per second once tables are full"
    );
}
