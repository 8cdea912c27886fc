//! The netns backend: `netns/lab.sh` (root) builds the network in namespaces on this host; the
//! kit hands it the flags and streams its output.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use butter_testbed::network;
use butter_testbed::topology::render::netns::{self as lab_plan, Plan};

/// The lab script under the repository root.
fn script(root: &Path) -> PathBuf {
    root.join("netns").join("lab.sh")
}

/// Runs `lab.sh ARGS…`, its output going to ours.
pub fn lab(root: &Path, args: &[String]) -> Result<()> {
    let script = script(root);
    if !script.is_file() {
        bail!(
            "{} is missing (is --root the repository?)",
            script.display()
        );
    }
    println!("+ netns/lab.sh {}", args.join(" "));
    // Its own process group: the nodes it starts inherit it, and a Ctrl-C meant for the kit
    // (a `run` heals and takes the lab down itself) must not stop them behind its back.
    let status = Command::new(&script)
        .args(args)
        .current_dir(root)
        .process_group(0)
        .status()
        .with_context(|| format!("running {}", script.display()))?;
    if !status.success() {
        bail!(
            "`netns/lab.sh {}` failed ({status}); it needs root, iproute2 and nft, and a \
             butter-node binary (`make release`)",
            args.join(" ")
        );
    }
    Ok(())
}

/// The flags of `make lab-up`: the compose network's LANs as routed subnets of `scale` hosts,
/// host 1 of each subnet bootstrapping to the next.
pub fn up_flags(scale: usize, timeout: Option<u64>) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "up".into(),
        "--subnets".into(),
        network::LANS.len().to_string(),
        "--hosts".into(),
        scale.to_string(),
        "--bootstrap".into(),
        "one-per-subnet".into(),
    ];
    extra_flags(&mut args, timeout);
    args
}

/// `--bin` from `BUTTER_NODE_BIN` and `--wait` from the timeout, when given.
fn extra_flags(args: &mut Vec<String>, timeout: Option<u64>) {
    if let Some(bin) = std::env::var_os("BUTTER_NODE_BIN") {
        args.push("--bin".into());
        args.push(bin.to_string_lossy().into_owned());
    }
    if let Some(t) = timeout {
        args.push("--wait".into());
        args.push(t.to_string());
    }
}

/// `up`, then the lab's status table.
pub fn up(root: &Path, scale: usize, timeout: Option<u64>) -> Result<()> {
    lab(root, &up_flags(scale, timeout))?;
    status(root)
}

/// The lab's status table.
pub fn status(root: &Path) -> Result<()> {
    lab(root, &["status".into()])
}

/// Stops every node and removes every namespace the lab made.
pub fn down(root: &Path) -> Result<()> {
    lab(root, &["down".into()])
}

/// The plan for a topology, its warnings printed and its subnets named (`s1 = lan-a, …`).
pub fn plan(t: &butter_testbed::topology::Topology) -> Result<Plan> {
    let p = lab_plan::render(t, lab_plan::netem_available())?;
    for w in &p.warnings {
        eprintln!("warning: {w}");
    }
    let names: Vec<String> = p
        .subnets
        .iter()
        .map(|(i, name)| format!("s{i} = {name}"))
        .collect();
    println!(
        "# topology {}, its sites as lab subnets: {}",
        t.name,
        names.join(", ")
    );
    Ok(p)
}

/// Brings up a topology in the lab: the plan (see [`plan()`]), `lab.sh up` with it, the status.
pub fn up_topology(
    root: &Path,
    t: &butter_testbed::topology::Topology,
    timeout: Option<u64>,
) -> Result<()> {
    let mut args = plan(t)?.args;
    extra_flags(&mut args, timeout);
    lab(root, &args)?;
    status(root)
}
