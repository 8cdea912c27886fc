//! Issue 5 acceptance in the netns lab: private nodes behind real NATs (nftables masquerade) reach
//! each other through a public relay, punch a direct path where the NATs allow it
//! (endpoint-independent mapping) and stay relayed where they do not (symmetric); an item stored
//! behind one NAT survives the loss of that whole LAN.
//!
//! Needs root and a built `butter-node`; otherwise each test prints `SKIPPED …` and passes
//! (`BUTTER_NETNS_REQUIRE=1` makes that a failure).

use std::net::SocketAddr;
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use butter_netns_tests::lab::{Config, Environment, Lab};
use butter_netns_tests::relay_api;
use butter_testbed::http;
use serde_json::Value;

const TIMEOUT: Duration = Duration::from_secs(15);

fn hosts_of(lab: &Lab, subnet: u32) -> Vec<usize> {
    (0..lab.hosts().len())
        .filter(|i| lab.hosts()[*i].subnet == subnet)
        .collect()
}

fn json(http: SocketAddr, path: &str) -> Result<Value> {
    relay_api::json(http, path)
}

fn id(lab: &Lab, i: usize) -> Result<String> {
    Ok(lab.id_of(i).context("unidentified host")?.to_string())
}

/// Calls `echo` on `to` from `from` until it answers; returns the path the answer took.
fn call(lab: &Lab, from: usize, to: usize, within: Duration) -> Result<String> {
    relay_api::echo_until(lab.hosts()[from].http, &id(lab, to)?, within).with_context(|| {
        format!(
            "{} calling {} (logs under {})",
            lab.hosts()[from].name,
            lab.hosts()[to].name,
            lab.log_path(from).display()
        )
    })
}

fn path_to(lab: &Lab, from: usize, to: usize) -> Result<String> {
    relay_api::path_to(lab.hosts()[from].http, &id(lab, to)?)
}

fn wait_path_in(
    lab: &Lab,
    from: usize,
    to: usize,
    want: &[&str],
    within: Duration,
) -> Result<Duration> {
    let start = Instant::now();
    loop {
        let path = path_to(lab, from, to)?;
        if want.contains(&path.as_str()) {
            return Ok(start.elapsed());
        }
        if start.elapsed() > within {
            bail!(
                "path {} → {} is {path:?}, not one of {want:?}, after {within:?} (logs: {} and {})",
                lab.hosts()[from].name,
                lab.hosts()[to].name,
                lab.log_path(from).display(),
                lab.log_path(to).display()
            );
        }
        sleep(Duration::from_millis(200));
    }
}

fn wait_home_relay(lab: &Lab, i: usize, within: Duration) -> Result<String> {
    relay_api::wait_home_relay(lab.hosts()[i].http, within)
        .with_context(|| lab.hosts()[i].name.clone())
}

/// Two private LANs behind NATs of the given types, one public host, `hosts` per LAN.
fn nat_lab(env: &Environment, nats: &[&str], hosts: u32) -> Result<Lab> {
    let mut lab = Lab::up(env, &Config::new(nats.len() as u32, hosts).nat(1, nats))?;
    lab.identify()?;
    Ok(lab)
}

#[test]
fn private_nodes_behind_eim_nats_punch_a_direct_path() -> Result<()> {
    let Some(env) = Environment::detect_or_skip("relay over eim NATs") else {
        return Ok(());
    };
    let lab = nat_lab(&env, &["eim", "eim"], 1)?;
    let (a, b) = (hosts_of(&lab, 1)[0], hosts_of(&lab, 2)[0]);
    wait_home_relay(&lab, a, Duration::from_secs(20))?;
    wait_home_relay(&lab, b, Duration::from_secs(20))?;
    let first = call(&lab, a, b, Duration::from_secs(30))?;
    // Either a coordinated punch moved the call off the relay, or both sides dialled each
    // other's public (observed) address at once, which opens the same hole without a relay.
    let took = wait_path_in(&lab, a, b, &["punched", "direct"], Duration::from_secs(20))?;
    let path = call(&lab, a, b, Duration::from_secs(10))?;
    ensure!(path == "punched" || path == "direct", "path {path}");
    println!("eim ↔ eim: first call {first}, then {path} after {took:?}");
    Ok(())
}

#[test]
fn behind_a_symmetric_nat_the_call_stays_relayed() -> Result<()> {
    let Some(env) = Environment::detect_or_skip("relay over a symmetric NAT") else {
        return Ok(());
    };
    let lab = nat_lab(&env, &["eim", "symmetric"], 1)?;
    let (a, b) = (hosts_of(&lab, 1)[0], hosts_of(&lab, 2)[0]);
    wait_home_relay(&lab, a, Duration::from_secs(20))?;
    wait_home_relay(&lab, b, Duration::from_secs(20))?;
    ensure!(call(&lab, a, b, Duration::from_secs(30))? == "relayed");
    // The punch was tried and failed; the relayed path keeps working.
    sleep(Duration::from_secs(8));
    let failed: f64 = [a, b]
        .iter()
        .map(|i| {
            relay_api::counter(
                lab.hosts()[*i].http,
                "butter_holepunch_total",
                &[("outcome", "failed")],
            )
        })
        .sum::<Result<f64>>()?;
    ensure!(failed >= 1.0, "no failed punch was counted");
    ensure!(call(&lab, a, b, Duration::from_secs(10))? == "relayed");
    ensure!(call(&lab, b, a, Duration::from_secs(10))? == "relayed");
    Ok(())
}

#[test]
fn an_item_stored_behind_a_nat_survives_the_loss_of_its_whole_lan() -> Result<()> {
    let Some(env) = Environment::detect_or_skip("item survives its LAN") else {
        return Ok(());
    };
    let lab = nat_lab(&env, &["eim", "eim"], 3)?;
    let lan_a = hosts_of(&lab, 1);
    let lan_b = hosts_of(&lab, 2);
    for &i in lan_a.iter().chain(&lan_b) {
        wait_home_relay(&lab, i, Duration::from_secs(30))?;
    }
    let content: Vec<u8> = b"stored behind a NAT, kept across it ".repeat(400);
    let writer = lab.hosts()[lan_a[0]].http;
    let r = http::request(writer, "PUT", "/items", &content, TIMEOUT)?;
    ensure!(
        r.status == 200 || r.status == 201,
        "PUT: {} {}",
        r.status,
        String::from_utf8_lossy(&r.body)
    );
    let put: Value = serde_json::from_slice(&r.body)?;
    let id = put["id"].as_str().context("no id")?.to_string();
    // The group reaches r = 3 with members outside LAN A.
    let deadline = Instant::now() + Duration::from_secs(45);
    let site_a = json(writer, "/status")?["site"]
        .as_str()
        .context("no site")?
        .to_string();
    loop {
        let g = json(writer, &format!("/items/{id}/group"))?;
        let members = g["members"].as_array().cloned().unwrap_or_default();
        let outside = members
            .iter()
            .filter(|m| m["live"] == true && m["holding"] == true)
            .filter(|m| m["site"].as_str().is_some_and(|s| s != site_a))
            .count();
        if g["state"] == "goldilocks" && outside >= 1 && members.len() >= 3 {
            println!("group: {g}");
            break;
        }
        if Instant::now() > deadline {
            bail!("the group never reached r with members outside LAN A: {g}");
        }
        sleep(Duration::from_millis(500));
    }
    for &i in &lan_a {
        lab.kill(i)?;
    }
    let reader = lab.hosts()[lan_b[0]].http;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = http::get(reader, &format!("/items/{id}"), TIMEOUT)?;
        if r.status == 200 {
            ensure!(r.body == content, "retrieved bytes differ");
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("item lost with LAN A: {}", String::from_utf8_lossy(&r.body));
        }
        sleep(Duration::from_millis(500));
    }
}
