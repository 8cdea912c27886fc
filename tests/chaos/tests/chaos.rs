//! The chaos tier, against the live compose network: each fault once (and `heal` undoing it),
//! then the CI scenario (`compose/chaos/ci.toml`: 50 items, kill 2 nodes, kill a LAN, heal).
//!
//! Runs only with `BUTTER_CHAOS=1` (`make test-chaos` sets it, builds the image and takes the
//! network down afterwards), because it breaks the shared network on purpose; without it every
//! test says why it skipped. With it, a missing engine or image is a failure, and a network that
//! is not up is brought up (`compose up`, as `make up` does).

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use butter_chaos::faults::Chaos;
use butter_chaos::log::FaultLog;
use butter_chaos::run::{self, Options, wait_ready};
use butter_chaos::scenario::Scenario;
use butter_testbed::engine::{Container, Engine, State};
use butter_testbed::network;
use butter_testbed::testbed::{Testbed, UpOptions};
use rand::SeedableRng;
use rand::rngs::StdRng;

fn out_dir(name: &str) -> PathBuf {
    network::repo_root()
        .join("target")
        .join("chaos-test")
        .join(name)
}

/// The engine with the network up and ready, or `None` (skip) without `BUTTER_CHAOS=1`.
fn network() -> Option<Engine> {
    if std::env::var("BUTTER_CHAOS").as_deref() != Ok("1") {
        eprintln!(
            "SKIP: the chaos tier breaks the compose network on purpose; run it with \
             `make test-chaos` (or BUTTER_CHAOS=1 with the network up)"
        );
        return None;
    }
    let engine = Engine::connect(&network::project())
        .expect("BUTTER_CHAOS=1 but the Docker engine is unavailable");
    if engine.containers().expect("list containers").is_empty() {
        eprintln!("the compose network is down: bringing it up");
        let bed = Testbed::open(&network::repo_root()).expect("compose CLI");
        bed.up(&UpOptions::default())
            .expect("compose up (is the image built? `make image`)");
    }
    // Whatever an earlier run left broken is healed first.
    let log = FaultLog::create(None, Instant::now()).expect("log");
    Chaos::new(&engine, &log, out_dir("faults"))
        .heal()
        .expect("heal");
    wait_ready(&engine, Duration::from_secs(120)).expect("every node ready");
    Some(engine)
}

fn find<'a>(cs: &'a [Container], label: &str) -> &'a Container {
    cs.iter()
        .find(|c| c.label() == label)
        .unwrap_or_else(|| panic!("no {label}"))
}

fn has_loss_table(engine: &Engine, c: &Container) -> bool {
    let pid = engine.pid(&c.id).expect("pid");
    let out = std::process::Command::new("nsenter")
        .args(["-t", &pid.to_string(), "-n", "nft", "list", "tables"])
        .output()
        .expect("nsenter nft");
    String::from_utf8_lossy(&out.stdout).contains(butter_chaos::loss::TABLE)
}

#[test]
fn each_fault_is_applied_logged_and_healed() {
    let Some(engine) = network() else { return };
    let dir = out_dir("faults");
    std::fs::create_dir_all(&dir).unwrap();
    let log_path = dir.join("faults.jsonl");
    let log = FaultLog::create(Some(&log_path), Instant::now()).unwrap();
    let chaos = Chaos::new(&engine, &log, dir.clone());
    let mut rng = StdRng::seed_from_u64(11);
    let before = engine.containers().unwrap();
    let wan_ip: Ipv4Addr = find(&before, "gw-c").ips[network::WAN];

    let killed = chaos.kill("random-node", 2, &mut rng).unwrap();
    chaos.pause("gw-b", 1, &mut rng).unwrap();
    chaos.partition("lan-c", &mut rng).unwrap();
    chaos.loss("lan-a-1", 30, 1, &mut rng).unwrap();

    let cs = engine.containers().unwrap();
    for k in &killed {
        assert_eq!(find(&cs, k).state, State::Stopped, "{k} killed");
        assert!(!k.starts_with("gw-"), "random-node picked a gateway: {k}");
    }
    assert_eq!(find(&cs, "gw-b").state, State::Paused);
    assert!(
        !find(&cs, "gw-c").ips.contains_key(network::WAN),
        "gw-c still on the WAN"
    );
    assert!(has_loss_table(&engine, find(&cs, "lan-a-1")));

    let healed = chaos.heal().unwrap();
    assert!(healed.errors.is_empty(), "{:?}", healed.errors);
    let cs = engine.containers().unwrap();
    assert!(cs.iter().all(Container::is_up), "all running after heal");
    assert_eq!(
        find(&cs, "gw-c").ips.get(network::WAN),
        Some(&wan_ip),
        "gw-c back on the WAN at its pinned address"
    );
    assert!(!has_loss_table(&engine, find(&cs, "lan-a-1")));

    let events: Vec<serde_json::Value> = std::fs::read_to_string(&log_path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let actions: Vec<&str> = events.iter().filter_map(|e| e["action"].as_str()).collect();
    assert_eq!(actions, ["kill", "pause", "partition", "loss"]);
    assert_eq!(events.last().unwrap()["event"], "heal");
    assert!(events.iter().all(|e| e["ts_unix_ms"].as_u64().is_some()));

    // The same seed picks the same victims against the same network.
    let mut again = StdRng::seed_from_u64(11);
    let t = butter_chaos::target::Target::parse("random-node").unwrap();
    let pool = engine.containers().unwrap();
    let picked: Vec<String> =
        butter_chaos::target::choose(&t, &pool, 2, Container::is_up, &mut again)
            .unwrap()
            .iter()
            .map(|c| c.label())
            .collect();
    assert_eq!(picked, killed);
    wait_ready(&engine, Duration::from_secs(120)).unwrap();
}

#[test]
fn ci_scenario_loses_nothing() {
    let Some(_engine) = network() else { return };
    let path = network::repo_root()
        .join("compose")
        .join("chaos")
        .join("ci.toml");
    let scenario = Scenario::load(&path).unwrap();
    let out = out_dir("run");
    // A real Prometheus scrapes the driver's fault series during the run, as the compose
    // monitoring profile does, to check the dashboards' "Chaos faults" annotation query.
    let chaos_metrics = std::net::SocketAddr::from((
        Ipv4Addr::LOCALHOST,
        std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .unwrap()
            .local_addr()
            .unwrap()
            .port(),
    ));
    let prom = butter_testbed::prometheus::HostPrometheus::start_with_chaos(
        &[],
        Duration::from_secs(1),
        0,
        chaos_metrics,
    )
    .expect("prometheus (Debian package `prometheus`) for the annotation check");
    let started_ms = butter_chaos::log::unix_ms();
    let (report, dir) = run::run(Options {
        scenario,
        seed: Some(1),
        items: None,
        out,
        up: false,
        root: network::repo_root(),
        metrics: Some(chaos_metrics),
    })
    .unwrap();
    let ended_ms = butter_chaos::log::unix_ms();
    // The annotation query of every dashboard returns the faults, at times within the run.
    std::thread::sleep(Duration::from_secs(3));
    for file in [
        "butter-overview",
        "butter-data",
        "butter-membership",
        "butter-transport",
    ] {
        let path = network::repo_root()
            .join("dashboards")
            .join(format!("{file}.json"));
        let d: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        let expr = d["annotations"]["list"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["name"] == "Chaos faults")
            .and_then(|a| a["expr"].as_str())
            .unwrap_or_else(|| panic!("{file}: no Chaos faults annotation"));
        let samples = prom.query(expr).unwrap();
        let kills: Vec<f64> = samples
            .iter()
            .filter(|s| s.metric.get("action").map(String::as_str) == Some("kill"))
            .map(|s| s.value.1.parse().unwrap())
            .collect();
        assert!(
            kills.len() >= 2,
            "{file}: {expr} returned {samples:?}; prometheus log: {}",
            prom.log()
        );
        for ms in kills {
            assert!(
                (started_ms as f64..=ended_ms as f64).contains(&ms),
                "{file}: fault at {ms} outside the run {started_ms}..{ended_ms}"
            );
        }
    }
    println!("{}", report.table());
    for f in ["report.json", "health.svg", "faults.jsonl", "summary.txt"] {
        assert!(dir.join(f).is_file(), "{f} written");
    }
    assert_eq!(report.items.stored, 50);
    assert!(report.samples.len() > 10, "sampled about once a second");
    let kill2 = &report.recoveries[0];
    assert!(
        kill2.after.starts_with("kill "),
        "first wait follows the kill of 2: {}",
        kill2.after
    );
    assert_eq!(report.items.wrong_content, 0, "no node served wrong bytes");
    assert_eq!(
        report.items.lost, 0,
        "items lost (by LAN stored in: {:?})",
        report.lost_by_lan
    );
    // Recovery time is a figure (T9: 15 s), reported in the table and README, not a gate: on this
    // shared 2-core machine it is dominated by load. Losing data or serving wrong bytes is a gate.
    println!(
        "groups back at r after killing 2 nodes: {:?} s (T9 target 15 s{})",
        kill2.back_at_r_secs,
        if kill2.missed() { ", missed" } else { "" }
    );
}

/// Issue 18's fault mix (`compose/chaos/mixed.toml`, seed 11 as in the report): pause 3, cut a
/// LAN off, 20 % loss on 3, restart 2, unpause 1, kill 2, heal. Gate: nothing lost, no wrong
/// bytes. Figure: how long after the heal every group was back at r (target 60 s).
#[test]
fn mixed_fault_then_heal_loses_nothing() {
    let Some(_engine) = network() else { return };
    let path = network::repo_root()
        .join("compose")
        .join("chaos")
        .join("mixed.toml");
    let scenario = Scenario::load(&path).unwrap();
    let (report, _dir) = run::run(Options {
        scenario,
        seed: Some(11),
        items: None,
        out: out_dir("mixed"),
        up: false,
        root: network::repo_root(),
        metrics: None,
    })
    .unwrap();
    println!("{}", report.table());
    assert_eq!(report.items.wrong_content, 0, "no node served wrong bytes");
    assert_eq!(
        report.items.lost, 0,
        "items lost (by LAN stored in: {:?})",
        report.lost_by_lan
    );
    let heal = report
        .recoveries
        .iter()
        .find(|r| r.after.contains("heal"))
        .expect("a wait after the heal");
    println!(
        "mixed fault: every group back at r {:?} s after the heal (target 60 s{})",
        heal.back_at_r_secs,
        if heal.missed() { ", missed" } else { "" }
    );
}
