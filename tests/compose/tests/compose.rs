//! The compose tier: the testbed of `compose/docker-compose.yml` on a real Docker engine.
//!
//! Needs a Docker engine, a compose CLI and the `butter-node:local` image (`make image`);
//! otherwise each test prints `SKIPPED …` and passes (`BUTTER_COMPOSE_REQUIRE=1` makes that a
//! failure). The tests share one network (project `butter`): each brings it up if needed
//! (idempotent) and leaves it running and whole; the nextest group `compose` runs them one at a
//! time, and `make test-compose` takes the network down afterwards. The scale test brings up
//! its 63 containers as a project of its own (`<project>-scale` on `BUTTER_SCALE_SUBNET_PREFIX`,
//! 10.215 unless set) and takes them down itself.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use butter_testbed::api;
use butter_testbed::dashboards::{self, Dashboard};
use butter_testbed::engine::{Health, Role};
use butter_testbed::network;
use butter_testbed::prometheus::{self, HostPrometheus, Target};
use butter_testbed::testbed::{self, NodeView, Testbed, UpOptions};

const READY_TIMEOUT: Duration = Duration::from_secs(90);
/// From every node answering /ready to Docker reporting every container healthy: one check
/// interval (2 s) and the exec of the check, on a loaded machine.
const HEALTHY_TIMEOUT: Duration = Duration::from_secs(30);

/// The testbed, or `None` (after printing why) where this machine cannot run it.
fn bed(test: &str) -> Result<Option<Testbed>> {
    let skip = |why: String| -> Result<Option<Testbed>> {
        if std::env::var("BUTTER_COMPOSE_REQUIRE").is_ok_and(|v| v == "1") {
            bail!("{test}: {why} (BUTTER_COMPOSE_REQUIRE=1)");
        }
        eprintln!("SKIPPED {test}: {why}");
        Ok(None)
    };
    let bed = match Testbed::open(&network::repo_root()) {
        Ok(b) => b,
        Err(e) => return skip(format!("{e:#}")),
    };
    if let Err(e) = bed.compose() {
        return skip(format!("{e:#}"));
    }
    let image = network::image();
    if bed.engine().image_size(&image)?.is_none() {
        return skip(format!(
            "image {image} missing (`make image` builds it offline)"
        ));
    }
    Ok(Some(bed))
}

/// Brings the default network up (3 LANs × 4 + 3 gateways) and waits until every node is ready.
fn network(bed: &Testbed) -> Result<Vec<NodeView>> {
    bed.up(&UpOptions::default())?;
    let views = bed.wait_ready(READY_TIMEOUT)?;
    let expected = network::LANS.len() * (network::DEFAULT_SCALE + 1);
    ensure!(
        views.len() == expected,
        "expected {expected} nodes, found {}:\n{}",
        views.len(),
        testbed::table(&views)
    );
    Ok(views)
}

/// Observes until `ok` holds for the views or `timeout` passes; returns the last views.
fn until(
    bed: &Testbed,
    timeout: Duration,
    mut ok: impl FnMut(&[NodeView]) -> Result<()>,
) -> Result<Vec<NodeView>> {
    let deadline = Instant::now() + timeout;
    loop {
        let views = bed.observe()?;
        match ok(&views) {
            Ok(()) => return Ok(views),
            Err(e) if Instant::now() >= deadline => {
                bail!("{e:#}\nafter {timeout:?}:\n{}", testbed::table(&views))
            }
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

fn same_24(a: Ipv4Addr, b: Ipv4Addr) -> bool {
    a.octets()[..3] == b.octets()[..3]
}

fn ids(views: &[NodeView], pick: impl Fn(&NodeView) -> bool) -> BTreeSet<String> {
    views
        .iter()
        .filter(|v| pick(v))
        .filter_map(|v| v.id().map(String::from))
        .collect()
}

fn knows(v: &NodeView, id: &str) -> bool {
    v.peers.iter().flatten().any(|p| p.id == id)
}

/// A LAN node's multicast-discovered peers must be in its own LAN, by site and by address.
fn multicast_inside_lan(views: &[NodeView]) -> Result<()> {
    let mut bad = String::new();
    for v in views.iter().filter(|v| v.container.role == Role::Node) {
        let own = v.container.lan_ip().context("node without LAN address")?;
        for p in v.peers.iter().flatten().filter(|p| p.source == "multicast") {
            let foreign_addr = p
                .addrs
                .iter()
                .filter_map(|a| a.parse::<std::net::SocketAddr>().ok())
                .any(
                    |a| matches!(a.ip(), IpAddr::V4(ip) if !same_24(ip, own) && !ip.is_loopback()),
                );
            let only_foreign = !p
                .addrs
                .iter()
                .filter_map(|a| a.parse::<std::net::SocketAddr>().ok())
                .any(|a| matches!(a.ip(), IpAddr::V4(ip) if same_24(ip, own)));
            if p.site != v.container.lan || (foreign_addr && only_foreign) {
                let _ = writeln!(
                    bad,
                    "{} ({}) knows {} of site {} at {:?} via multicast",
                    v.container.label(),
                    v.container.lan,
                    &p.id[..10.min(p.id.len())],
                    p.site,
                    p.addrs
                );
            }
        }
    }
    ensure!(bad.is_empty(), "multicast crossed a LAN:\n{bad}");
    Ok(())
}

#[test]
fn lans_come_up_multicast_stays_inside_each_lan_and_gateways_know_each_other() -> Result<()> {
    let Some(bed) = bed("lans_come_up")? else {
        return Ok(());
    };
    let views = network(&bed)?;
    let gateways = views
        .iter()
        .filter(|v| v.container.role == Role::Gateway)
        .count();
    ensure!(gateways == network::LANS.len(), "{gateways} gateways");

    // Issue 6: Docker's own health check (`butter-node health`, i.e. /ready, every 2 s) turns
    // every node and gateway `healthy` soon after they answer /ready themselves.
    let start = Instant::now();
    let healthy = bed.wait_healthy(HEALTHY_TIMEOUT)?;
    ensure!(
        healthy.len() == views.len(),
        "{} of {} nodes checked for health",
        healthy.len(),
        views.len()
    );
    for v in &healthy {
        ensure!(
            v.health.as_ref().is_some_and(Health::is_healthy),
            "{}: not healthy in the list",
            v.container.label()
        );
        // The list carries the state only; the last check's output comes from an inspect.
        let h = bed.engine().health(&v.container.id)?;
        ensure!(
            h.last_output
                .as_deref()
                .is_some_and(|o| o.starts_with("ready: 200 from 127.0.0.1:7100/ready")),
            "{}: the last health check said {:?}",
            v.container.label(),
            h.last_output
        );
    }
    eprintln!(
        "Docker reports all {} nodes healthy {:.1} s after they were all ready",
        healthy.len(),
        start.elapsed().as_secs_f64()
    );
    for v in &views {
        let lan = &v.container.lan;
        ensure!(
            v.container
                .ips
                .keys()
                .all(|n| n == lan || (n == network::WAN && v.container.role == Role::Gateway)),
            "{} is on networks {:?}: LAN nodes sit on their LAN only, gateways on LAN + WAN",
            v.container.label(),
            v.container.ips.keys().collect::<Vec<_>>()
        );
        ensure!(
            v.status.as_ref().is_some_and(|s| &s.site == lan),
            "{} reports site {:?}, expected {lan}",
            v.container.label(),
            v.status.as_ref().map(|s| &s.site)
        );
    }

    // Every node knows every other node of its LAN, gateway included; gateways know each other.
    let start = Instant::now();
    let views = until(&bed, Duration::from_secs(15), |views| {
        let mut missing = String::new();
        for v in views {
            let lan = &v.container.lan;
            let want = ids(views, |o| &o.container.lan == lan && o.id() != v.id());
            let want_gw = if v.container.role == Role::Gateway {
                ids(views, |o| {
                    o.container.role == Role::Gateway && o.id() != v.id()
                })
            } else {
                BTreeSet::new()
            };
            for id in want.iter().chain(&want_gw) {
                if !knows(v, id) {
                    let _ = writeln!(
                        missing,
                        "{} does not know {}",
                        v.container.label(),
                        &id[..10]
                    );
                }
            }
        }
        ensure!(missing.is_empty(), "{missing}");
        multicast_inside_lan(views)
    })?;
    eprintln!(
        "every node knows its LAN and the gateways know each other after {:.1} s",
        start.elapsed().as_secs_f64()
    );
    // Gateways found each other over the WAN, as gateways: their records carry their LAN's site.
    for g in views.iter().filter(|v| v.container.role == Role::Gateway) {
        let sites: BTreeSet<&str> = g.peers.iter().flatten().map(|p| p.site.as_str()).collect();
        for lan in network::LANS {
            ensure!(
                sites.contains(lan),
                "{} knows no host of {lan}: {sites:?}",
                g.container.label()
            );
        }
    }

    // Multicast must stay inside each LAN for a while, not only at one instant.
    let watch = Instant::now() + Duration::from_secs(5);
    while Instant::now() < watch {
        multicast_inside_lan(&bed.observe()?)?;
        std::thread::sleep(Duration::from_millis(500));
    }

    let via_multicast = views
        .iter()
        .flat_map(|v| v.peers.iter().flatten())
        .filter(|p| p.source == "multicast")
        .count();
    eprintln!(
        "{via_multicast} table entries came from multicast (0 means the check above was vacuous: \
         see a_node_without_bootstrap_finds_its_lan_by_multicast_only)"
    );

    // T7: every node knows hosts in the other LANs (LAN nodes learn them from their gateway and
    // reach them over relayed paths). Measured from here, asserted within 60 s (on a fresh
    // network this loaded machine has taken up to 40 s), reported against the 10 s target.
    let start = Instant::now();
    until(&bed, Duration::from_secs(60), |views| {
        let mut missing = String::new();
        for v in views {
            let by_site = v.peers_by_site();
            for lan in network::LANS.iter().filter(|l| **l != v.container.lan) {
                if by_site.get(*lan).copied().unwrap_or(0) == 0 {
                    let _ = writeln!(missing, "{} knows no host of {lan}", v.container.label());
                }
            }
        }
        ensure!(missing.is_empty(), "{missing}");
        Ok(())
    })?;
    let took = start.elapsed();
    eprintln!(
        "T7: every node knows hosts of every other LAN {:.1} s after its own LAN was meshed \
         (target 10 s: {})",
        took.as_secs_f64(),
        if took <= Duration::from_secs(10) {
            "met"
        } else {
            "missed"
        }
    );
    Ok(())
}

#[test]
fn compose_file_is_valid_and_shipped_prometheus_config_passes_promtool() -> Result<()> {
    let root = network::repo_root();
    match std::process::Command::new("promtool")
        .arg("--version")
        .output()
    {
        Ok(_) => {
            let out = prometheus::promtool_check(&network::prometheus_config(&root))?;
            eprintln!("{}", out.trim());
        }
        Err(_) => {
            eprintln!("SKIPPED promtool check: promtool missing (apt-get install prometheus)")
        }
    }
    match butter_testbed::compose::Compose::detect(
        &network::compose_file(&root),
        &network::project(),
    ) {
        Ok(c) => {
            c.check()?;
            eprintln!("`{} config` accepts the compose file", c.program());
        }
        Err(e) => eprintln!("SKIPPED compose config check: {e:#}"),
    }
    Ok(())
}

/// Variable assignments to try, each with whether every query must return data: every variable
/// at "All" (must), the first LAN with all its nodes (must), then every variable at its first
/// real value (must parse and run; one node need not have, say, started a retrieval).
fn assignments(
    p: &HostPrometheus,
    board: &Dashboard,
) -> Result<Vec<(BTreeMap<String, String>, bool)>> {
    let mut all = dashboards::builtins();
    for v in &board.variables {
        all.insert(
            v.name.clone(),
            v.all_value.clone().unwrap_or_else(|| ".*".into()),
        );
    }
    let mut one = dashboards::builtins();
    let mut one_lan = all.clone();
    for v in &board.variables {
        let (selector, label) = v.label_values().with_context(|| {
            format!("{}: variable {} is not label_values()", board.title, v.name)
        })?;
        let selector = dashboards::substitute(&selector, &one);
        let values = p.label_values(&label, &selector)?;
        let first = values.first().with_context(|| {
            format!(
                "{}: variable {} has no values ({selector})",
                board.title, v.name
            )
        })?;
        one.insert(v.name.clone(), first.clone());
        if v.name == "lan" {
            one_lan.insert(v.name.clone(), first.clone());
        }
    }
    Ok(vec![(all, true), (one_lan, true), (one, false)])
}

/// Gives the data overlay something to show: every node stores one item, then retrieves the
/// item of another node of its LAN (retrieval across LANs is checked by
/// `items_stored_in_lan_a_are_retrieved_from_lan_b_after_lan_a_stops`).
fn store_and_retrieve(views: &[NodeView]) -> Result<()> {
    let mut stored: Vec<(String, String, std::net::SocketAddr)> = Vec::new();
    for v in views {
        let addr = v.container.http().context("node without address")?;
        let content = format!(
            "dashboard test item from {} at {:?}: {}",
            v.container.label(),
            std::time::SystemTime::now(),
            "x".repeat(4000)
        );
        let id = api::put_item(addr, content.as_bytes())?;
        stored.push((v.container.lan.clone(), id, addr));
    }
    for (i, (lan, _, addr)) in stored.iter().enumerate() {
        let other = stored
            .iter()
            .cycle()
            .skip(i + 1)
            .take(stored.len())
            .find(|(l, _, a)| l == lan && a != addr)
            .context("a LAN with one node")?;
        api::get_item(*addr, &other.1)
            .with_context(|| format!("retrieving {} through {addr}", other.1))?;
    }
    Ok(())
}

#[test]
fn every_dashboard_query_returns_data_from_a_real_prometheus() -> Result<()> {
    let Some(bed) = bed("dashboards")? else {
        return Ok(());
    };
    if std::process::Command::new("prometheus")
        .arg("--version")
        .output()
        .is_err()
    {
        if std::env::var("BUTTER_COMPOSE_REQUIRE").is_ok_and(|v| v == "1") {
            bail!("prometheus missing (apt-get install prometheus)");
        }
        eprintln!("SKIPPED dashboards: prometheus missing (apt-get install prometheus)");
        return Ok(());
    }
    let views = network(&bed)?;
    store_and_retrieve(&views)?;
    let targets: Vec<Target> = views
        .iter()
        .filter_map(|v| Target::of(&v.container))
        .collect();
    let p = HostPrometheus::start(&targets, Duration::from_secs(1), 0)?;
    // Enough scrapes for rate() over the substituted $__rate_interval.
    p.wait_scraped(targets.len(), 8, Duration::from_secs(60))
        .with_context(|| p.log())?;

    let boards = Dashboard::load_dir(&network::dashboards_dir(&network::repo_root()))?;
    let mut failures = String::new();
    let mut ran = 0;
    for b in &boards {
        for (vars, must) in assignments(&p, b)? {
            for q in &b.queries {
                let expr = dashboards::substitute(&q.expr, &vars);
                ensure!(
                    !expr.contains('$'),
                    "{} / {}: unsubstituted variable in {expr}",
                    b.title,
                    q.panel
                );
                ran += 1;
                match p.query(&expr) {
                    Ok(s) if !s.is_empty() || !must => {}
                    Ok(_) => {
                        let _ = writeln!(
                            failures,
                            "{} / {} [{}]: no data: {expr}",
                            b.title, q.panel, q.ref_id
                        );
                    }
                    Err(e) => {
                        let _ =
                            writeln!(failures, "{} / {} [{}]: {e:#}", b.title, q.panel, q.ref_id);
                    }
                }
            }
        }
        // Every butter_ series a dashboard names is exported by the live nodes.
        let names: BTreeSet<String> = b
            .queries
            .iter()
            .flat_map(|q| dashboards::metric_names(&q.expr))
            .collect();
        for n in names {
            if p.query(&format!("count({n})"))?.is_empty() {
                let _ = writeln!(failures, "{}: metric {n} not exported by any node", b.title);
            }
        }
    }
    ensure!(
        failures.is_empty(),
        "dashboard queries without data:\n{failures}"
    );
    eprintln!(
        "{ran} dashboard queries over {} dashboards returned data",
        boards.len()
    );
    Ok(())
}

/// Every node of `lan` (gateway included) knows every other one.
fn lan_meshed(views: &[NodeView], lan: &str) -> Result<()> {
    let in_lan: Vec<&NodeView> = views.iter().filter(|v| v.container.lan == lan).collect();
    for v in &in_lan {
        for o in &in_lan {
            if let Some(id) = o.id() {
                ensure!(
                    v.id() == Some(id) || knows(v, id),
                    "{} does not know {}",
                    v.container.label(),
                    o.container.label()
                );
            }
        }
    }
    Ok(())
}

/// Restarts the victim container when dropped, so the shared network stays whole.
struct Revive<'a> {
    bed: &'a Testbed,
    id: String,
}

impl Drop for Revive<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.bed.engine().start(&self.id) {
            eprintln!("could not restart the killed container: {e:#}");
        }
    }
}

#[test]
fn killed_node_leaves_its_lan_peers_tables_within_8_s() -> Result<()> {
    let Some(bed) = bed("killed_node")? else {
        return Ok(());
    };
    network(&bed)?;
    let lan = network::LANS[1];
    // Everyone in the LAN knows everyone before the kill.
    let views = until(&bed, Duration::from_secs(15), |views| {
        lan_meshed(views, lan)
    })?;
    let victim = views
        .iter()
        .find(|v| {
            v.container.lan == lan && v.container.role == Role::Node && v.container.number == 2
        })
        .context("no node 2 in lan-b")?
        .clone();
    let victim_id = victim.id().context("victim has no id")?.to_string();
    let witnesses: Vec<_> = views
        .iter()
        .filter(|v| v.container.lan == lan && v.id() != Some(&victim_id))
        .map(|v| (v.container.label(), v.container.http()))
        .collect();

    let _revive = Revive {
        bed: &bed,
        id: victim.container.id.clone(),
    };
    bed.engine().kill(&victim.container.id)?;
    let killed = Instant::now();
    let deadline = killed + Duration::from_secs(8);
    loop {
        let still: Vec<String> = witnesses
            .iter()
            .filter(|(_, addr)| {
                addr.and_then(|a| api::peers(a).ok())
                    .is_none_or(|peers| peers.iter().any(|p| p.id == victim_id))
            })
            .map(|(name, _)| name.clone())
            .collect();
        if still.is_empty() {
            eprintln!(
                "{} left every {lan} peer's table {:.2} s after SIGKILL",
                victim.container.label(),
                killed.elapsed().as_secs_f64()
            );
            break;
        }
        if Instant::now() >= deadline {
            bail!(
                "{} still listed 8 s after SIGKILL by: {}",
                victim.container.label(),
                still.join(", ")
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(_revive);
    // The restarted node comes back with its volume, so with the same peer id.
    let addr = loop {
        let c = bed
            .nodes()?
            .into_iter()
            .find(|c| c.id == victim.container.id)
            .context("victim container gone")?;
        if let Some(a) = c.http().filter(|_| c.is_up()) {
            break a;
        }
        ensure!(
            killed.elapsed() < Duration::from_secs(60),
            "victim did not restart"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let t = Instant::now();
    loop {
        if let Ok(s) = api::status(addr) {
            ensure!(
                s.id == victim_id,
                "restarted node has a new id {} (volume lost?)",
                s.id
            );
            break;
        }
        ensure!(
            t.elapsed() < Duration::from_secs(30),
            "restarted node does not answer"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    bed.wait_ready(READY_TIMEOUT)?;
    // Leave the LAN whole for the next test: everyone knows the restarted node again. A killed
    // peer is "recently dead" for a while, so re-admission is not immediate: measured, bounded.
    let restarted = Instant::now();
    until(&bed, Duration::from_secs(90), |views| {
        lan_meshed(views, lan)
    })?;
    eprintln!(
        "{} known again by every {lan} peer {:.1} s after its restart",
        victim.container.label(),
        restarted.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Removes a throwaway container when dropped.
struct Scratch<'a> {
    bed: &'a Testbed,
    id: String,
}

impl Drop for Scratch<'_> {
    fn drop(&mut self) {
        let _ = self.bed.engine().remove(&self.id);
    }
}

/// Multicast alone: a fresh node with no bootstrap list, started on lan-c, must find every node of
/// lan-c (and nothing outside it) by beacons.
#[test]
fn a_node_without_bootstrap_finds_its_lan_by_multicast_only() -> Result<()> {
    let Some(bed) = bed("multicast_only")? else {
        return Ok(());
    };
    let views = network(&bed)?;
    let lan = network::LANS[2];
    let want = ids(&views, |v| v.container.lan == lan);
    let network = format!("{}_{lan}", bed.project());
    let id = bed.engine().create_scratch(
        &network::image(),
        &[
            "BUTTER_NETWORK=butter-compose",
            &format!("BUTTER_SITE={lan}"),
            "BUTTER_DATA_DIR=/data",
        ],
        Some(&network),
    )?;
    let _scratch = Scratch { bed: &bed, id };
    bed.engine().start(&_scratch.id)?;
    let ip = bed
        .engine()
        .ip(&_scratch.id)?
        .context("scratch node has no address")?;
    let addr = std::net::SocketAddr::from((ip, network::HTTP_PORT));
    let start = Instant::now();
    loop {
        let peers = api::peers(addr).unwrap_or_default();
        let known: BTreeSet<String> = peers.iter().map(|p| p.id.clone()).collect();
        let foreign: Vec<&api::Peer> = peers
            .iter()
            .filter(|p| p.source == "multicast" && p.site != lan)
            .collect();
        ensure!(
            foreign.is_empty(),
            "multicast crossed into {lan}: {foreign:?}"
        );
        if want.is_subset(&known) {
            eprintln!(
                "a node without bootstrap knew all {} nodes of {lan} after {:.2} s",
                want.len(),
                start.elapsed().as_secs_f64()
            );
            return Ok(());
        }
        ensure!(
            start.elapsed() < Duration::from_secs(10),
            "after 10 s a node on {lan} with multicast only knows {} of {}: {peers:?}",
            known.intersection(&want).count(),
            want.len()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Starts the given containers again when dropped (a stopped LAN comes back for the next test).
struct ReviveAll<'a> {
    bed: &'a Testbed,
    ids: Vec<String>,
}

impl Drop for ReviveAll<'_> {
    fn drop(&mut self) {
        for id in &self.ids {
            if let Err(e) = self.bed.engine().start(id) {
                eprintln!("could not restart a stopped container: {e:#}");
            }
        }
    }
}

/// A peer id shortened for messages.
fn short(id: &str) -> &str {
    &id[..10.min(id.len())]
}

/// Whether `relay`, a short id as `/peers` shows in `relays`, names the peer `id`.
fn names(relay: &str, id: &str) -> bool {
    !relay.is_empty() && id.starts_with(relay)
}

/// Every LAN node announces its own gateway as its first relay, as its gateway's table shows.
fn gateways_are_home_relays(views: &[NodeView]) -> Result<()> {
    let mut bad = String::new();
    for g in views.iter().filter(|v| v.container.role == Role::Gateway) {
        let gw = g.id().context("gateway without id")?;
        for n in views
            .iter()
            .filter(|v| v.container.role == Role::Node && v.container.lan == g.container.lan)
        {
            let id = n.id().context("node without id")?;
            let relays = g
                .peers
                .iter()
                .flatten()
                .find(|p| p.id == id)
                .map(|p| p.relays.clone());
            if relays
                .as_ref()
                .is_none_or(|r| !r.first().is_some_and(|r| names(r, gw)))
            {
                let _ = writeln!(
                    bad,
                    "{} announces relays {relays:?} to {}, expected its gateway {}",
                    n.container.label(),
                    g.container.label(),
                    short(gw)
                );
            }
        }
    }
    ensure!(bad.is_empty(), "{bad}");
    Ok(())
}

/// Issue 5 in compose: LAN nodes keep their gateway as home relay and reach other LANs only
/// through it; an item stored by a private node of lan-a gets group members on other LANs, so
/// with every lan-a container (gateway included) SIGKILLed it is still retrieved from lan-b.
#[test]
fn items_stored_in_lan_a_are_retrieved_from_lan_b_after_lan_a_stops() -> Result<()> {
    let Some(bed) = bed("lan_a_stops")? else {
        return Ok(());
    };
    network(&bed)?;
    let (lan_a, lan_b) = (network::LANS[0], network::LANS[1]);

    // Each LAN node announces its own gateway as its relay (seen in its gateway's table), and
    // some lan-a node runs a relayed connection to a host of another LAN. Every lan-a node also
    // knows hosts of both other LANs before storing: a group is placed from the writer's table
    // when the item is stored, and a full group is not moved to other sites later.
    let start = Instant::now();
    let views = until(&bed, Duration::from_secs(60), |views| {
        gateways_are_home_relays(views)?;
        for v in views
            .iter()
            .filter(|v| v.container.role == Role::Node && v.container.lan == lan_a)
        {
            let by_site = v.peers_by_site();
            for lan in network::LANS.iter().filter(|l| **l != lan_a) {
                ensure!(
                    by_site.get(*lan).copied().unwrap_or(0) > 0,
                    "{} knows no host of {lan} yet",
                    v.container.label()
                );
            }
        }
        let relayed = views
            .iter()
            .filter(|v| v.container.role == Role::Node && v.container.lan == lan_a)
            .flat_map(|v| v.peers.iter().flatten())
            .any(|p| p.site != lan_a && p.path == "relayed");
        ensure!(
            relayed,
            "no {lan_a} node has a relayed connection to a host of another LAN"
        );
        Ok(())
    })?;
    eprintln!(
        "every LAN node announces its gateway as relay, and a {lan_a} node runs a relayed path, \
         after {:.1} s",
        start.elapsed().as_secs_f64()
    );
    // LAN nodes have no route out of their LAN: every connection they have to a host of
    // another LAN is relayed.
    for v in views.iter().filter(|v| v.container.role == Role::Node) {
        for p in v.peers.iter().flatten() {
            ensure!(
                p.site == v.container.lan || p.path == "relayed" || p.path == "none",
                "{} reaches {} of {} over a {} path",
                v.container.label(),
                short(&p.id),
                p.site,
                p.path
            );
        }
    }

    // Store items through the lan-a nodes (private: they reach other LANs only via gw-a).
    let writers: Vec<&NodeView> = views
        .iter()
        .filter(|v| v.container.role == Role::Node && v.container.lan == lan_a)
        .collect();
    ensure!(!writers.is_empty(), "no {lan_a} node");
    let mut items: Vec<(String, Vec<u8>, std::net::SocketAddr)> = Vec::new();
    for i in 0..8 {
        let w = writers[i % writers.len()];
        let addr = w.container.http().context("node without address")?;
        let content = format!(
            "item {i} stored in {lan_a} through {} at {:?}: {}",
            w.container.label(),
            std::time::SystemTime::now(),
            "y".repeat(2000 + i)
        )
        .into_bytes();
        let id = api::put_item(addr, &content)?;
        items.push((id, content, addr));
    }

    // Every item's group gets a member holding it outside lan-a (not gw-a, which is in lan-a).
    let placed = Instant::now();
    let deadline = placed + Duration::from_secs(60);
    loop {
        let mut pending = String::new();
        for (id, _, addr) in &items {
            match api::group(*addr, id) {
                Ok(g) => {
                    let sites: BTreeSet<&str> = g
                        .members
                        .iter()
                        .filter(|m| m.holding)
                        .map(|m| m.site.as_str())
                        .collect();
                    if sites.len() < 2 || sites.iter().all(|s| *s == lan_a) {
                        let _ = writeln!(
                            pending,
                            "{}: {} group holds it on {sites:?}",
                            short(id),
                            g.state
                        );
                    }
                }
                Err(e) => {
                    let _ = writeln!(pending, "{}: {e:#}", short(id));
                }
            }
        }
        if pending.is_empty() {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "after 60 s some groups have no member outside {lan_a}:\n{pending}{}",
            testbed::table(&bed.observe()?)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    eprintln!(
        "all {} groups hold their item on at least 2 LANs {:.1} s after storing",
        items.len(),
        placed.elapsed().as_secs_f64()
    );

    // Stop (SIGKILL: no hand-off) every container of lan-a, gateway included.
    let victims: Vec<String> = bed
        .nodes()?
        .into_iter()
        .filter(|c| c.lan == lan_a && c.is_up())
        .map(|c| c.id)
        .collect();
    ensure!(
        victims.len() == network::DEFAULT_SCALE + 1,
        "{} running containers in {lan_a}",
        victims.len()
    );
    let revive = ReviveAll {
        bed: &bed,
        ids: victims.clone(),
    };
    for id in &victims {
        bed.engine().kill(id)?;
    }
    let killed = Instant::now();
    ensure!(
        bed.observe()?.iter().all(|v| v.container.lan != lan_a),
        "{lan_a} still has running containers"
    );

    // Every item comes back through lan-b nodes, with the bytes stored.
    let readers: Vec<std::net::SocketAddr> = bed
        .observe()?
        .iter()
        .filter(|v| v.container.role == Role::Node && v.container.lan == lan_b)
        .filter_map(|v| v.container.http())
        .collect();
    ensure!(!readers.is_empty(), "no {lan_b} node");
    for (i, (id, content, _)) in items.iter().enumerate() {
        let reader = readers[i % readers.len()];
        let deadline = Instant::now() + Duration::from_secs(45);
        let got = loop {
            match api::get_item(reader, id) {
                Ok(got) => break got,
                Err(e) if Instant::now() >= deadline => {
                    bail!("{id} not retrievable through {reader} with {lan_a} down: {e:#}")
                }
                Err(_) => std::thread::sleep(Duration::from_millis(500)),
            }
        };
        ensure!(
            &got == content,
            "{id} through {reader}: {} bytes that differ from the {} stored",
            got.len(),
            content.len()
        );
    }
    eprintln!(
        "all {} items retrieved with matching bytes through {lan_b} within {:.1} s of killing \
         every {lan_a} container",
        items.len(),
        killed.elapsed().as_secs_f64()
    );

    // Leave the network whole for the next test: lan-a meshed again, the gateways know each
    // other, lan-a nodes relayed through gw-a again (restarted peers are "recently dead" to
    // the others for a while, so this is bounded, not immediate).
    drop(revive);
    bed.wait_ready(READY_TIMEOUT)?;
    let restarted = Instant::now();
    until(&bed, Duration::from_secs(90), |views| {
        lan_meshed(views, lan_a)?;
        let gateways = ids(views, |v| v.container.role == Role::Gateway);
        for g in views.iter().filter(|v| v.container.role == Role::Gateway) {
            for id in &gateways {
                ensure!(
                    g.id() == Some(id.as_str()) || knows(g, id),
                    "{} does not know gateway {}",
                    g.container.label(),
                    short(id)
                );
            }
        }
        gateways_are_home_relays(views)
    })?;
    eprintln!(
        "{lan_a} whole again (meshed, gateways known, relayed through gw-a) {:.1} s after \
         its restart",
        restarted.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The `butter-kit` binary (crate `kit/cli`), built now as `make up` would run it, from this
/// workspace's target directory.
fn kit_binary() -> Result<std::path::PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let built = std::process::Command::new(cargo)
        .args(["build", "-q", "--locked", "-p", "butter-kit"])
        .current_dir(network::repo_root())
        .status()
        .context("building butter-kit")?;
    ensure!(built.success(), "cargo build -p butter-kit failed: {built}");
    // This test runs from <target>/debug/deps/; the binary is in <target>/debug/.
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .context("the test binary has no target directory")?;
    let kit = dir.join("butter-kit");
    ensure!(kit.is_file(), "{} missing after the build", kit.display());
    Ok(kit)
}

/// `butter-kit` with the environment of a project of its own: `{tier project}-scale` on
/// `BUTTER_SCALE_SUBNET_PREFIX` (10.215 unless set), so the 63 containers of the scale test
/// neither replace the tier's network nor clash with another network's subnets.
struct ScaleProject {
    kit: std::path::PathBuf,
    project: String,
    prefix: String,
}

impl ScaleProject {
    fn new(kit: std::path::PathBuf) -> Self {
        ScaleProject {
            kit,
            project: format!("{}-scale", network::project()),
            prefix: std::env::var("BUTTER_SCALE_SUBNET_PREFIX")
                .ok()
                .filter(|p| !p.is_empty())
                .unwrap_or_else(|| "10.215".into()),
        }
    }

    /// Runs `butter-kit ARGS` on this project; returns its status, stdout and stderr.
    fn run(&self, args: &[&str]) -> Result<(std::process::ExitStatus, String, String)> {
        let out = std::process::Command::new(&self.kit)
            .args(["--root", &network::repo_root().display().to_string()])
            .args(args)
            .env("BUTTER_COMPOSE_PROJECT", &self.project)
            .env("BUTTER_SUBNET_PREFIX", &self.prefix)
            .output()
            .with_context(|| format!("running butter-kit {}", args.join(" ")))?;
        Ok((
            out.status,
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    }
}

impl Drop for ScaleProject {
    fn drop(&mut self) {
        match self.run(&["down"]) {
            Ok((status, _, _)) if status.success() => {}
            Ok((_, out, err)) => eprintln!("butter-kit down ({}): {err}{out}", self.project),
            Err(e) => eprintln!("butter-kit down ({}): {e:#}", self.project),
        }
    }
}

/// The kit at scale (issue 19), as a user runs it: `butter-kit up --scale 20` (3 × 20 + 3 = 63
/// containers, in a project of its own) prints its progress (`ready N/M`, a line every few
/// seconds off a terminal) up to every node and ends with the table; `butter-kit status` then
/// lists every node, each ready; `down` removes it all.
#[test]
fn the_kit_at_scale_20_shows_progress_and_status_lists_every_node() -> Result<()> {
    // The tier's network is left alone: the scale test runs in a project of its own.
    if bed("kit_at_scale")?.is_none() {
        return Ok(());
    }
    const SCALE: usize = 20;
    let total = network::LANS.len() * (SCALE + 1);
    let scale = ScaleProject::new(kit_binary()?);

    let start = Instant::now();
    let (status, out, err) = scale.run(&["up", "--scale", &SCALE.to_string()])?;
    let up_took = start.elapsed();
    ensure!(
        status.success(),
        "butter-kit up --scale {SCALE} failed:\n{err}\n{out}"
    );
    let progress: Vec<usize> = err
        .lines()
        .filter_map(|l| {
            let (n, rest) = l.strip_prefix("ready ")?.split_once('/')?;
            rest.starts_with(&format!("{total} "))
                .then(|| n.parse().ok())
                .flatten()
        })
        .collect();
    // Nodes can all be ready by the first round (containers become ready while compose still
    // creates the others): then the one line is `ready 63/63`.
    ensure!(
        progress.last() == Some(&total),
        "up did not report its progress (`ready N/{total}` lines, the last {total}/{total}):\n{err}"
    );
    ensure!(
        out.contains(&format!("{total} nodes ready in")),
        "up did not end with the count of ready nodes:\n{out}"
    );

    let engine = butter_testbed::engine::Engine::connect(&scale.project)?;
    let nodes = engine.containers()?;
    ensure!(
        nodes.len() == total,
        "{} node containers in {}, expected {total}",
        nodes.len(),
        scale.project
    );
    // Every node must have its row in every pass; a node may be momentarily not ready (a
    // gateway busy relaying for 20 nodes missing one /ready deadline), so up to three passes
    // are allowed for every row to say ready, as a user would run status again.
    let mut status_took = Duration::ZERO;
    let mut last = String::new();
    let mut all_ready = false;
    for _ in 0..3 {
        let start = Instant::now();
        let (status, table, err) = scale.run(&["status"])?;
        status_took = status_took.max(start.elapsed());
        ensure!(status.success(), "butter-kit status failed:\n{err}");
        let mut missing = Vec::new();
        let mut not_ready = Vec::new();
        for c in &nodes {
            let label = c.label();
            match table
                .lines()
                .find(|l| l.split_whitespace().next() == Some(label.as_str()))
            {
                Some(row) if row.split_whitespace().nth(4) == Some("yes") => {}
                Some(row) => not_ready.push(row.to_string()),
                None => missing.push(label),
            }
        }
        ensure!(
            missing.is_empty(),
            "status at scale {SCALE} has no row for {missing:?}:\n{table}"
        );
        last = table;
        if not_ready.is_empty() {
            all_ready = true;
            break;
        }
        eprintln!("status: not ready yet: {not_ready:?}");
        std::thread::sleep(Duration::from_secs(2));
    }
    ensure!(
        all_ready && last.contains(&format!("{total}/{total} ready")),
        "status at scale {SCALE}: not every node ready in three passes:\n{last}"
    );
    eprintln!(
        "scale {SCALE} ({total} containers): up ready in {:.1} s, status in {:.2} s",
        up_took.as_secs_f64(),
        status_took.as_secs_f64()
    );
    Ok(())
}

/// A topology file as a user brings it up (`make up TOPOLOGY=…` runs `butter-kit up
/// --topology`): two sites with other names and uneven sizes come up with their gateways, every
/// node ready, each gateway knowing a host of the other site; `butter-kit down` then removes
/// every container, network and volume and the rendered file, and the default network comes
/// back for the other tests.
#[test]
fn a_topology_file_comes_up_with_its_sites_and_down_leaves_nothing() -> Result<()> {
    let Some(bed) = bed("topology_file")? else {
        return Ok(());
    };
    let kit = kit_binary()?;
    let root = network::repo_root();
    let dir = std::env::temp_dir().join(format!("butter-topology-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let file = dir.join("two-sites.toml");
    std::fs::write(
        &file,
        "name = \"two-sites\"\n[bootstrap]\npolicy = \"gateways\"\n\
         [[site]]\nname = \"north\"\nnodes = 3\n[[site]]\nname = \"south\"\nnodes = 2\n",
    )?;
    bed.down()?;
    let run = |args: &[&str]| {
        std::process::Command::new(&kit)
            .arg("--root")
            .arg(&root)
            .args(args)
            .output()
            .context("running butter-kit")
    };
    let up = run(&["up", "--topology", &file.display().to_string()])?;
    let out = String::from_utf8_lossy(&up.stdout).into_owned();
    ensure!(
        up.status.success(),
        "butter-kit up --topology failed:\n{}\n{out}",
        String::from_utf8_lossy(&up.stderr)
    );
    ensure!(out.contains("7 nodes ready in"), "{out}");
    let rendered = testbed::rendered_file(&root, bed.project());
    ensure!(
        rendered.is_file(),
        "no rendered file at {}",
        rendered.display()
    );
    let topo = Testbed::open(&root)?;
    let views = until(&topo, Duration::from_secs(60), |views| {
        let count = |lan: &str, role: Role| {
            views
                .iter()
                .filter(|v| v.container.lan == lan && v.container.role == role && v.ready)
                .count()
        };
        ensure!(
            (count("north", Role::Node), count("north", Role::Gateway)) == (3, 1)
                && (count("south", Role::Node), count("south", Role::Gateway)) == (2, 1),
            "not 3 + 1 north and 2 + 1 south nodes ready"
        );
        for v in views.iter().filter(|v| v.container.role == Role::Gateway) {
            let other = if v.container.lan == "north" {
                "south"
            } else {
                "north"
            };
            ensure!(
                v.peers_by_site().get(other).copied().unwrap_or(0) > 0,
                "{} knows no host of {other}",
                v.container.label()
            );
        }
        Ok(())
    })?;
    eprintln!("{}", testbed::table(&views));
    let down = run(&["down"])?;
    ensure!(
        down.status.success(),
        "butter-kit down failed: {}",
        String::from_utf8_lossy(&down.stderr)
    );
    ensure!(!rendered.exists(), "down left {}", rendered.display());
    let left = bed.engine().leftovers()?;
    ensure!(left.is_empty(), "left after down: {left:?}");
    ensure!(bed.nodes()?.is_empty(), "containers left after down");
    let _ = std::fs::remove_dir_all(&dir);
    network(&bed)?;
    Ok(())
}
