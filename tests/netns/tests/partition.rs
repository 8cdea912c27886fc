//! `lab.sh partition sN` / `unpartition`, the netns lab's WAN cut that `butter-kit run` uses for
//! an experiment's `partition` fault: the router forwards nothing to or from the subnet, traffic
//! inside it and the admin path (the root namespace observing nodes) go on, and `unpartition`
//! mends it and names what it lifted.
//!
//! Needs root and a built `butter-node`; otherwise it prints `SKIPPED …` and passes
//! (`BUTTER_NETNS_REQUIRE=1` makes that a failure).

use anyhow::{Result, ensure};
use butter_netns_tests::lab::{Bootstrap, Config, Environment, Lab};

/// HTTP status of `GET /health` on host `to`, asked from inside host `from` ("000": no answer
/// within 2 s).
fn health_from(lab: &Lab, from: &str, to: usize) -> String {
    let url = format!("http://{}/health", lab.hosts()[to].http);
    lab.script([
        "exec",
        from,
        "curl",
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "--max-time",
        "2",
        &url,
    ])
    .unwrap_or_else(|_| "000".into())
    .trim()
    .to_string()
}

#[test]
fn a_partition_cuts_the_subnet_off_and_unpartition_mends_it() -> Result<()> {
    let Some(env) = Environment::detect_or_skip("a_partition_cuts_the_subnet_off") else {
        return Ok(());
    };
    let lab = Lab::up(&env, &Config::new(2, 2).bootstrap(Bootstrap::OnePerSubnet))?;
    let (same, other) = (
        lab.host_index("s1h1").expect("s1h1"),
        lab.host_index("s2h2").expect("s2h2"),
    );
    let me = &lab.hosts()[lab.host_index("s1h2").expect("s1h2")];
    let admin = || butter_netns_tests::node_api::ready(me.http).is_ok();
    ensure!(
        health_from(&lab, "s1h2", other) == "200",
        "no path before the cut"
    );
    lab.script(["partition", "s1"])?;
    ensure!(
        health_from(&lab, "s1h2", other) == "000",
        "s1 still reaches s2"
    );
    ensure!(
        health_from(&lab, "s1h2", same) == "200",
        "s1 lost its own subnet"
    );
    ensure!(admin(), "the root namespace lost its admin path to s1");
    let lifted = lab.script(["unpartition"])?;
    ensure!(lifted.trim() == "bt-router", "unpartition named {lifted:?}");
    ensure!(
        health_from(&lab, "s1h2", other) == "200",
        "no path after the heal"
    );
    ensure!(
        lab.script(["unpartition"])?.trim().is_empty(),
        "nothing left to lift"
    );
    Ok(())
}
