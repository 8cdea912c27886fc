use super::*;

fn repo_file(name: &str) -> std::path::PathBuf {
    crate::network::repo_root().join("topologies").join(name)
}

fn bad(text: &str) -> Error {
    Topology::parse(text, "bad.toml").expect_err("the file should be refused")
}

#[test]
fn the_default_topology_is_todays_network() {
    let t = Topology::load(&repo_file("default.toml")).unwrap();
    let names: Vec<&str> = t.sites.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, crate::network::LANS);
    assert!(
        t.sites
            .iter()
            .all(|s| s.nodes == crate::network::DEFAULT_SCALE && s.gateway && s.nat == Nat::None)
    );
    assert_eq!(t.bootstrap, Policy::Gateways);
    assert_eq!(t.total_nodes(), 15);
}

#[test]
fn every_shipped_topology_loads() {
    let dir = crate::network::repo_root().join("topologies");
    let mut n = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            Topology::load(&path).unwrap_or_else(|e| panic!("{e}"));
            n += 1;
        }
    }
    assert!(n >= 4, "only {n} topologies");
}

#[test]
fn an_unknown_key_names_its_line_and_the_readme() {
    let e = bad("[[site]]\nname = \"a\"\nnodes = 2\nnodse = 3\n");
    assert_eq!((e.file.as_str(), e.line), ("bad.toml", 4), "{e}");
    assert!(e.message.contains("unknown field `nodse`"), "{e}");
    assert!(e.message.contains("topologies/README.md"), "{e}");
    assert!(e.to_string().starts_with("bad.toml:4:"), "{e}");
}

#[test]
fn zero_nodes_names_the_value_and_what_to_do() {
    let e = bad("[[site]]\nname = \"a\"\nnodes = 2\n\n[[site]]\nname = \"b\"\nnodes = 0\n");
    assert_eq!((e.line, e.column), (7, 9), "{e}");
    assert!(
        e.message.contains("nodes = 0") && e.message.contains("1 to 200"),
        "{e}"
    );
}

#[test]
fn other_mistakes_are_refused_with_their_line() {
    let cases: [(&str, usize, &str); 8] = [
        ("", 1, "no sites"),
        ("[[site]]\nname = \"A b\"\nnodes = 1\n", 2, "lowercase"),
        (
            "[[site]]\nname = \"a\"\nnodes = 1\n[[site]]\nname = \"a\"\nnodes = 1\n",
            5,
            "twice",
        ),
        (
            "[[site]]\nname = \"a\"\nnodes = 1\nnat = \"full-cone\"\n",
            4,
            "unknown variant",
        ),
        (
            "[[site]]\nname = \"a\"\nnodes = 1\n[[link]]\nsite = \"z\"\nloss = 1.0\n",
            5,
            "does not exist",
        ),
        (
            "[[site]]\nname = \"a\"\nnodes = 1\n[[link]]\nsite = \"a\"\nloss = 120.0\n",
            6,
            "0 to 100",
        ),
        (
            "[[site]]\nname = \"a\"\nnodes = 1\n[[link]]\nsite = \"a\"\nrate = \"fast\"\n",
            6,
            "10mbit",
        ),
        (
            "[[site]]\nname = \"a\"\nnodes = 1\ngateway = false\n",
            1,
            "set gateway = true",
        ),
    ];
    for (text, line, says) in cases {
        let e = bad(text);
        assert_eq!(e.line, line, "{text:?}: {e}");
        assert!(e.message.contains(says), "{text:?}: {e}");
    }
}
