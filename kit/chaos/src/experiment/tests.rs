use super::*;

fn dir() -> PathBuf {
    butter_testbed::network::repo_root().join("experiments")
}

fn parse(text: &str) -> Result<Experiment, Error> {
    Experiment::parse(text, "x.toml", &dir())
}

const HEAD: &str = "topology = \"../topologies/default.toml\"\n";

fn fails(text: &str, line: usize, needle: &str) {
    let full = format!("{HEAD}{text}");
    let e = parse(&full).expect_err(&full);
    assert_eq!(e.file, "x.toml");
    assert_eq!(e.line, line + 1, "{e}");
    assert!(e.message.contains(needle), "{needle:?} not in {e}");
}

#[test]
fn the_shipped_experiments_parse() {
    for entry in std::fs::read_dir(dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            Experiment::load(&path).unwrap_or_else(|e| panic!("{e}"));
        }
    }
    let e = Experiment::load(&dir().join("parity.toml")).unwrap();
    assert_eq!(e.name, "parity");
    assert_eq!(e.topology.sites.len(), 3);
    assert_eq!(e.workload.items, 30);
    assert_eq!(e.checks.max_lost, 0);
    assert_eq!(e.workload.reads_per_sec, 5.0);
    let names: Vec<&str> = e.faults.iter().map(Step::name).collect();
    assert_eq!(
        names,
        ["kill", "wait-r", "kill-lan", "wait-r", "heal", "wait-r"]
    );
    let sc = e.scenario();
    assert_eq!(sc.survival.items, 30);
    assert_eq!(sc.seed, Some(7));
}

#[test]
fn every_fault_kind_maps_to_a_chaos_step() {
    let text = format!(
        "{HEAD}[[fault]]\ndo = \"pause\"\ntarget = \"gw-a\"\n\
         [[fault]]\ndo = \"unpause\"\ntarget = \"random\"\n\
         [[fault]]\ndo = \"restart\"\ntarget = \"lan-b-4\"\n\
         [[fault]]\ndo = \"partition\"\nsite = \"random\"\n\
         [[fault]]\ndo = \"loss\"\ntarget = \"random-node\"\npct = 20\ncount = 3\n\
         [[fault]]\ndo = \"sleep\"\nsecs = 2\n\
         [[fault]]\ndo = \"wait-r\"\n"
    );
    let e = parse(&text).unwrap();
    assert_eq!(
        e.faults[4],
        Step::Loss {
            target: "random-node".into(),
            pct: 20,
            count: 3
        }
    );
    assert_eq!(
        e.faults[6],
        Step::WaitR {
            timeout_secs: 120.0,
            target_secs: None
        }
    );
    assert_eq!(e.workload.items, Survival::default().items);
}

#[test]
fn mistakes_name_the_line_and_what_to_change() {
    // An unknown key, at the top and in a fault.
    fails("colour = \"red\"\n", 1, "unknown field `colour`");
    fails(
        "[[fault]]\ndo = \"kill\"\ntarget = \"random\"\nlan = \"x\"\n",
        4,
        "unknown field `lan`",
    );
    // A key the action does not take.
    fails(
        "[[fault]]\ndo = \"kill-site\"\ntarget = \"lan-a-1\"\n",
        3,
        "takes `site`",
    );
    // A site or node the topology does not have.
    fails(
        "[[fault]]\ndo = \"kill-site\"\nsite = \"lan-z\"\n",
        3,
        "site \"lan-z\" is not in topology default",
    );
    fails(
        "[[fault]]\ndo = \"partition\"\nsite = \"north\"\n",
        3,
        "lan-a, lan-b, lan-c",
    );
    fails(
        "[[fault]]\ndo = \"kill\"\ntarget = \"lan-a-9\"\n",
        3,
        "not a node of topology default",
    );
    // 0 items, and other numbers out of range.
    fails(
        "[workload]\nitems = 0\n",
        2,
        "items = 0: must be at least 1",
    );
    fails("[workload]\nr = 40\n", 2, "at most that");
    fails(
        "[workload]\nreads_per_sec = 500\n",
        2,
        "must be 0 (no reads) to 50",
    );
    fails(
        "[[fault]]\ndo = \"loss\"\ntarget = \"gw-a\"\npct = 0\n",
        4,
        "pct = 0",
    );
    fails(
        "[[fault]]\ndo = \"kill\"\ntarget = \"random\"\ncount = 0\n",
        4,
        "count = 0",
    );
    fails(
        "[[fault]]\ndo = \"kill\"\ntarget = \"gw-a\"\ncount = 2\n",
        4,
        "one node",
    );
    fails(
        "[[fault]]\ndo = \"wait-r\"\ntimeout_secs = -1\n",
        3,
        "more than 0",
    );
    // A fault that is none, or lacks what it needs.
    fails("[[fault]]\ndo = \"explode\"\n", 2, "use one of kill, pause");
    fails("[[fault]]\ndo = \"kill-site\"\n", 1, "needs `site`");
    fails("[checks]\nback_at_r_secs = 0\n", 2, "more than 0");
    // No topology, or one that is not there.
    let e = parse("[workload]\nitems = 3\n").unwrap_err();
    assert!(e.message.contains("no topology"), "{e}");
    let e = parse("topology = \"nowhere.toml\"\n").unwrap_err();
    assert_eq!(e.line, 1);
    assert!(e.message.contains("no such file"), "{e}");
}
