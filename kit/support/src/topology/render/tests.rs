use super::*;
use crate::topology::{Endpoint, Shape};

fn load(name: &str) -> Topology {
    Topology::load(&crate::network::repo_root().join("topologies").join(name))
        .unwrap_or_else(|e| panic!("{e}"))
}

fn all_three(t: &Topology) -> (Shape, Shape, Shape) {
    let compose = compose::shape(&compose::render(t).unwrap_or_else(|e| panic!("{e}")));
    let netns = netns::shape(&netns::render(t, true).unwrap_or_else(|e| panic!("{e}")));
    let k8s = k8s::shape(&k8s::render(t, "../../../base").unwrap_or_else(|e| panic!("{e}")));
    (compose, netns, k8s)
}

#[test]
fn the_three_renderings_agree_on_sites_nodes_and_bootstrap_edges() {
    for name in ["default.toml", "five-sites.toml"] {
        let t = load(name);
        let (compose, netns, k8s) = all_three(&t);
        assert_eq!(compose, netns, "{name}: compose vs netns");
        assert_eq!(compose, k8s, "{name}: compose vs k8s");
        assert_eq!(compose.sites.len(), t.sites.len(), "{name}");
    }
    let t = load("default.toml");
    let (shape, _, _) = all_three(&t);
    assert_eq!(shape.sites["lan-b"], (4, 1));
    let gw = |s: &str| Endpoint::Gateway(s.into());
    assert!(
        shape
            .edges
            .contains(&(Endpoint::Nodes("lan-a".into()), gw("lan-a")))
    );
    assert!(shape.edges.contains(&(gw("lan-a"), gw("lan-c"))));
    // 3 nodes→gateway edges and 3 × 2 gateway edges.
    assert_eq!(shape.edges.len(), 9);
}

#[test]
fn a_policy_without_bootstrap_renders_no_edges_anywhere() {
    let text = "[bootstrap]\npolicy = \"none\"\n[[site]]\nname = \"x\"\nnodes = 2\n[[site]]\nname = \"y\"\nnodes = 2\n";
    let t = Topology::parse(text, "none.toml").unwrap();
    let (compose, netns, k8s) = all_three(&t);
    assert!(compose.edges.is_empty() && netns.edges.is_empty() && k8s.edges.is_empty());
    assert_eq!(compose, netns);
    assert_eq!(compose, k8s);
}

#[test]
fn the_default_topology_renders_the_lab_up_flags() {
    let plan = netns::render(&load("default.toml"), true).unwrap();
    assert_eq!(
        plan.command(),
        "netns/lab.sh up --subnets 3 --hosts 5 --gateways --bootstrap gateways \
         --site-name s1=lan-a --site-name s2=lan-b --site-name s3=lan-c"
    );
    assert_eq!(plan.subnets[2], (3, "lan-c".to_string()));
}

#[test]
fn nat_renders_for_netns_and_is_refused_by_compose_and_k8s_with_the_line() {
    let t = load("nat.toml");
    let plan = netns::render(&t, true).unwrap();
    assert_eq!(
        plan.command(),
        "netns/lab.sh up --topology nat --subnets 2 --hosts 4 --public 1 --nat s1=eim \
         --forward s1 --nat s2=symmetric --forward s2 --gateways --bootstrap public \
         --site-name s0=public --site-name s1=home --site-name s2=office"
    );
    let shape = netns::shape(&plan);
    assert_eq!(shape.sites["public"], (1, 0));
    assert_eq!(shape.sites["office"], (3, 1));
    assert!(shape.edges.contains(&(
        Endpoint::Gateway("home".into()),
        Endpoint::First("public".into())
    )));
    let nat_line = t
        .text
        .lines()
        .position(|l| l.starts_with("nat = \"endpoint-independent\""))
        .unwrap()
        + 1;
    for e in [
        compose::render(&t).unwrap_err(),
        k8s::render(&t, "../base").unwrap_err(),
    ] {
        assert_eq!(e.line, nat_line, "{e}");
        assert!(
            e.message.contains("NAT preset \"endpoint-independent\""),
            "{e}"
        );
        assert!(e.message.contains("--backend netns"), "{e}");
    }
}

#[test]
fn presets_the_lab_lacks_and_uneven_sites_are_refused_by_netns() {
    let text = "[bootstrap]\npolicy = \"public\"\n[[site]]\nname = \"p\"\nnodes = 1\ngateway = false\n\
                [[site]]\nname = \"q\"\nnodes = 2\nnat = \"port-restricted\"\n";
    let e = netns::render(&Topology::parse(text, "pr.toml").unwrap(), true).unwrap_err();
    assert_eq!(e.line, 10, "{e}");
    assert!(
        e.message.contains("endpoint-independent or symmetric"),
        "{e}"
    );
    let text = "[[site]]\nname = \"a\"\nnodes = 2\n[[site]]\nname = \"b\"\nnodes = 3\n";
    let e = netns::render(&Topology::parse(text, "uneven.toml").unwrap(), true).unwrap_err();
    assert_eq!(e.line, 4, "{e}");
    assert!(e.message.contains("every subnet alike"), "{e}");
    // Compose runs uneven sites.
    let shape = compose::shape(&compose::render(&Topology::parse(text, "u").unwrap()).unwrap());
    assert_eq!(shape.sites["b"], (3, 1));
}

#[test]
fn links_become_lab_flags_and_a_missing_netem_is_a_warning() {
    let t = load("lossy.toml");
    let plan = netns::render(&t, false).unwrap();
    let cmd = plan.command();
    assert!(
        cmd.contains("--loss s2=2 --rate s2=10mbit --delay s3=20"),
        "{cmd}"
    );
    assert_eq!(plan.warnings.len(), 1, "{:?}", plan.warnings);
    assert!(plan.warnings[0].contains("netem"), "{:?}", plan.warnings);
    assert!(netns::render(&t, true).unwrap().warnings.is_empty());
    // What lab.sh cannot take is refused at the link's line: a fraction of a percent, a link
    // on the public segment.
    let fraction = t.text.replace("loss = 2.0", "loss = 2.5");
    let e = netns::render(&Topology::parse(&fraction, "f.toml").unwrap(), true).unwrap_err();
    assert!(e.message.contains("whole percentages"), "{e}");
    let public = "[bootstrap]\npolicy = \"public\"\n[[site]]\nname = \"p\"\nnodes = 1\ngateway = false\n\
                  [[site]]\nname = \"q\"\nnodes = 2\nnat = \"symmetric\"\n[[link]]\nsite = \"p\"\nloss = 1.0\n";
    let e = netns::render(&Topology::parse(public, "p.toml").unwrap(), true).unwrap_err();
    assert_eq!(e.line, 11, "{e}");
    assert!(e.message.contains("public segment"), "{e}");
    let e = compose::render(&t).unwrap_err();
    assert!(
        e.message.contains("link shaping") && e.message.contains("netns"),
        "{e}"
    );
}

/// `docker-compose config` (no engine needed) prints the same resolved file for the shipped
/// compose file and for the default topology's rendering.
#[test]
fn the_default_topology_renders_a_file_compose_resolves_like_the_shipped_one() {
    let root = crate::network::repo_root();
    let dir = tempfile::tempdir().unwrap();
    let rendered = dir.path().join("default.yml");
    std::fs::write(&rendered, compose::render(&load("default.toml")).unwrap()).unwrap();
    let config = |file: &std::path::Path| {
        std::process::Command::new("docker-compose")
            .arg("--project-name")
            .arg("butter")
            .arg("--project-directory")
            .arg(root.join("compose"))
            .arg("--file")
            .arg(file)
            .args(["--profile", "monitoring", "config"])
            .env_remove("BUTTER_SUBNET_PREFIX")
            .env_remove("BUTTER_IMAGE")
            .output()
    };
    let shipped = match config(&crate::network::compose_file(&root)) {
        Ok(o) if o.status.success() => o.stdout,
        Ok(o) => panic!("{}", String::from_utf8_lossy(&o.stderr)),
        Err(e) => {
            eprintln!("SKIPPED: no docker-compose here ({e}); CI installs it");
            return;
        }
    };
    let ours = config(&rendered).unwrap();
    assert!(
        ours.status.success(),
        "{}",
        String::from_utf8_lossy(&ours.stderr)
    );
    let (a, b) = (
        String::from_utf8_lossy(&shipped),
        String::from_utf8_lossy(&ours.stdout),
    );
    assert!(a.contains("gw-c") && a.contains("10.210.3.2"), "{a}");
    assert_eq!(
        a, b,
        "the rendered default differs from compose/docker-compose.yml"
    );
}

/// `k8s/overlays/topology-default` is the default topology's overlay as rendered now, so
/// `make k8s-check` validates what `render --backend k8s` produces.
#[test]
fn the_shipped_default_overlay_is_the_current_rendering() {
    let dir = crate::network::repo_root().join("k8s/overlays/topology-default");
    let overlay = k8s::render(&load("default.toml"), "../../../base").unwrap();
    for (path, text) in &overlay {
        let shipped = std::fs::read_to_string(dir.join(path)).unwrap_or_default();
        assert_eq!(
            &shipped, text,
            "k8s/overlays/topology-default/{path} is stale: butter-kit --backend k8s render \
             --out k8s/overlays/topology-default"
        );
    }
    let files = std::fs::read_dir(&dir).unwrap().count();
    assert_eq!(files, 8, "k8s/overlays/topology-default holds other files");
}
