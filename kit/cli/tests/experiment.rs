//! `butter-kit run` and `butter-kit compare` as a user runs them, without a testbed: a bad
//! experiment file exits 2 with the file, the line and what to change before anything is
//! brought up; `compare` prints reports side by side.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("kit/cli sits two levels below the repository")
        .to_path_buf()
}

fn kit(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_butter-kit"))
        .current_dir(root())
        .args(args)
        .output()
        .expect("butter-kit runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn bad_experiment_files_exit_2_with_file_line_and_what_to_change() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let topology = root().join("topologies/default.toml");
    let head = format!("topology = {:?}\n", topology.display().to_string());
    let cases = [
        (
            "unknown-key.toml",
            "[workload]\nitems = 5\nrate = 3\n",
            ":4:",
            "unknown field `rate`",
        ),
        (
            "no-such-site.toml",
            "[[fault]]\ndo = \"kill-site\"\nsite = \"lan-x\"\n",
            ":4:",
            "site \"lan-x\" is not in topology default; use random or one of lan-a, lan-b, lan-c",
        ),
        (
            "no-such-node.toml",
            "[[fault]]\ndo = \"pause\"\ntarget = \"gw-z\"\n",
            ":4:",
            "\"gw-z\" is not a node of topology default",
        ),
        (
            "zero-items.toml",
            "[workload]\nitems = 0\n",
            ":3:",
            "items = 0: must be at least 1",
        ),
        (
            "wrong-key-for-fault.toml",
            "[[fault]]\ndo = \"heal\"\nsite = \"lan-a\"\n",
            ":4:",
            "fault 1 (heal) takes no `site`",
        ),
    ];
    for backend in ["compose", "netns"] {
        for (name, body, at, says) in &cases {
            let file = dir.path().join(name);
            std::fs::write(&file, format!("{head}{body}")).expect("write the file");
            let path = file.display().to_string();
            let out = kit(&["--backend", backend, "run", &path]);
            let err = text(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{name} on {backend}: {err}");
            assert!(
                err.contains(&format!("{path}{at}")),
                "{name}: no {path}{at} in {err}"
            );
            assert!(err.contains(says), "{name}: {err}");
        }
    }
    let missing = kit(&["run", "experiments/nope.toml"]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(text(&missing.stderr).contains("cannot read the experiment file"));
    let k8s = kit(&["--backend", "k8s", "run", "experiments/parity.toml"]);
    assert_ne!(k8s.status.code(), Some(0));
    assert!(text(&k8s.stderr).contains("--backend compose or netns"));
}

#[test]
fn run_and_compare_have_help() {
    let out = kit(&["run", "--help"]);
    assert!(out.status.success());
    let help = text(&out.stdout);
    assert!(help.contains("--seed") && help.contains("Ctrl-C"), "{help}");
    assert!(kit(&["compare", "--help"]).status.success());
}

#[test]
fn compare_prints_reports_side_by_side() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let report = |backend: &str, took: f64| {
        serde_json::json!({
            "scenario": "parity", "seed": 7, "r": 3, "started_unix_ms": 0,
            "duration_secs": 100.0, "initial_replication_secs": 2.0,
            "items": {"stored": 30, "lost": 0, "retrievable": 30, "retrievable_first_try": 30,
                      "wrong_content": 0, "at_r": 30, "under_r": 0, "lost_but_listed": 0},
            "lost_by_lan": {},
            "recoveries": [{"after": "kill lan-a-2, lan-b-3", "fault_t_secs": 10.0,
                            "back_at_r_secs": took, "timeout_secs": 60.0, "target_secs": 120.0,
                            "at_r_when_done": 30, "unavailable_when_done": 0}],
            "events": [], "samples": [], "problems": [],
            "backend": backend, "max_lost": 0
        })
    };
    let mut paths = Vec::new();
    for (b, took) in [("netns", 8.5), ("compose", 11.25)] {
        let d = dir.path().join(b);
        std::fs::create_dir_all(&d).expect("mkdir");
        std::fs::write(d.join("report.json"), report(b, took).to_string()).expect("write");
        paths.push(d.display().to_string());
    }
    let mut args = vec!["compare"];
    args.extend(paths.iter().map(String::as_str));
    let out = kit(&args);
    let table = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let row = table
        .lines()
        .find(|l| l.starts_with("back at r after kill lan-a-2"))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(row.contains("8.5 s") && row.contains("11.2 s"), "{row}");
    assert!(table.lines().next().unwrap_or("").contains("netns"));
    assert!(table.contains("PASS"));
}
