//! `butter-kit render` as a user runs it: what each backend would run for a topology file, and
//! exit status 2 with the file, the line and what to change for a file it cannot run.

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
fn the_default_topology_renders_for_every_backend() {
    let compose = kit(&["render"]);
    assert!(compose.status.success(), "{}", text(&compose.stderr));
    assert!(text(&compose.stdout).contains("BUTTER_BOOTSTRAP: gw-b:7000"));
    let netns = kit(&["--backend", "netns", "render"]);
    assert!(netns.status.success(), "{}", text(&netns.stderr));
    assert!(
        text(&netns.stdout).contains("netns/lab.sh up --subnets 3 --hosts 5 --gateways"),
        "{}",
        text(&netns.stdout)
    );
    let k8s = kit(&["--backend", "k8s", "render"]);
    assert!(k8s.status.success(), "{}", text(&k8s.stderr));
    assert!(text(&k8s.stdout).contains("# ---- lan-c-gw/kustomization.yaml"));
}

#[test]
fn bad_files_exit_2_with_file_line_and_what_to_change() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let cases = [
        (
            "unknown.toml",
            "[[site]]\nname = \"a\"\nnodes = 2\nzone = \"x\"\n",
            &["render"][..],
            ":4:",
            "unknown field `zone`",
        ),
        (
            "zero.toml",
            "[[site]]\nname = \"a\"\nnodes = 0\n",
            &["render"][..],
            ":3:9:",
            "nodes = 0",
        ),
        (
            "nat.toml",
            "[bootstrap]\npolicy = \"public\"\n[[site]]\nname = \"p\"\nnodes = 1\ngateway = false\n[[site]]\nname = \"q\"\nnodes = 2\nnat = \"symmetric\"\n",
            &["render"][..],
            ":10:7:",
            "--backend netns",
        ),
        (
            "uneven.toml",
            "[[site]]\nname = \"a\"\nnodes = 2\n[[site]]\nname = \"b\"\nnodes = 3\n",
            &["--backend", "netns", "render"][..],
            ":4:",
            "every subnet alike",
        ),
    ];
    for (name, body, args, at, says) in cases {
        let file = dir.path().join(name);
        std::fs::write(&file, body).expect("write the file");
        let mut args = args.to_vec();
        let path = file.display().to_string();
        args.extend(["--topology", &path]);
        let out = kit(&args);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{name}: {err}");
        assert!(
            err.contains(&format!("{path}{at}")),
            "{name}: no {at} in {err}"
        );
        assert!(err.contains(says), "{name}: {err}");
    }
    let missing = kit(&["render", "--topology", "topologies/nope.toml"]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(text(&missing.stderr).contains("cannot read the topology file"));
}
