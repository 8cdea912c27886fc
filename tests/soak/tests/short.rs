//! A short soak (5 nodes, ~20 s of churn and client load) through the real `butter-soak` binary
//! and debug `butter-node` processes: it passes, loses nothing, churns, deletes beyond its working
//! set, and writes its figures.
//! Needs `butter-node` built beside `butter-soak` (`cargo build -p butter-node`; a workspace test
//! run builds it).

#![allow(clippy::unwrap_used)] // test: a panic is the failure message

use std::path::Path;
use std::process::Command;

#[test]
fn a_short_soak_loses_nothing_and_reports_every_node() {
    let soak = Path::new(env!("CARGO_BIN_EXE_butter-soak"));
    let node = soak.parent().unwrap().join("butter-node");
    assert!(
        node.is_file(),
        "no {}; run `cargo build -p butter-node` first",
        node.display()
    );
    let out = tempfile_dir();
    let run = Command::new(soak)
        .args(["--nodes", "5", "--minutes", "0.35", "--seed", "7"])
        .args([
            "--churn-every",
            "4",
            "--down-secs",
            "2",
            "--sample-every",
            "3",
        ])
        .args([
            "--settle-secs",
            "5",
            "--put-every-ms",
            "200",
            "--keep",
            "20",
        ])
        .arg("--bin")
        .arg(&node)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    eprintln!("{stdout}{}", String::from_utf8_lossy(&run.stderr));
    assert!(run.status.success(), "the short soak failed");
    assert!(stdout.contains("PASS: no acknowledged item lost"));

    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("soak.json")).unwrap()).unwrap();
    assert!(
        report["items_acknowledged"].as_u64() >= Some(30),
        "{}",
        report["items_acknowledged"]
    );
    assert_eq!(report["items_lost"].as_array().map(Vec::len), Some(0));
    // The working set: older items were deleted through members, the 20 newest checked.
    assert!(
        report["client"]["deletes_ok"].as_u64() >= Some(10),
        "{}",
        report["client"]
    );
    assert!(report["items_live_checked"].as_u64() <= Some(21));
    let stops =
        report["churn"]["sigkill"].as_u64().unwrap() + report["churn"]["sigterm"].as_u64().unwrap();
    assert!(stops >= 3, "only {stops} churn stops");
    assert_eq!(report["churn"]["crashes"], 0);
    let nodes = report["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 5);
    for n in nodes {
        assert!(n["rss_max_kib"].as_u64() > Some(1000), "{n}");
        assert!(n["anon_end_kib"].as_u64() > Some(100), "{n}");
        assert!(n["heap_end_kib"].as_u64() > Some(100), "{n}");
        assert!(
            n["tasks"][1].as_f64() > Some(0.0),
            "tasks gauge missing: {n}"
        );
    }
    for plot in ["rss.svg", "heap.svg"] {
        assert!(
            std::fs::read_to_string(out.join(plot))
                .unwrap()
                .contains("<svg")
        );
    }
    let _ = std::fs::remove_dir_all(&out);
}

/// A fresh directory under the target's temporary directory.
fn tempfile_dir() -> std::path::PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("soak-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}
