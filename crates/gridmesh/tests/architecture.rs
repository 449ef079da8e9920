//! The crate rules of ARCHITECTURE.md, checked against `cargo metadata`: which crate may know which.
//! A dependency that breaks one fails here with the rule and the path through which the crate
//! reaches what it must not know.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::Path;
use std::process::Command;

/// `cargo metadata` of the workspace (its own crates only).
fn metadata() -> serde_json::Value {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../Cargo.toml");
    let out = Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .arg("--manifest-path")
        .arg(&manifest)
        .output()
        .expect("running cargo metadata");
    assert!(
        out.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("metadata JSON")
}

/// Workspace crates and their normal and build dependencies on other workspace crates
/// (dev-dependencies are left out: a test may drive the crate with a client).
fn workspace_graph() -> BTreeMap<String, BTreeSet<String>> {
    let meta = metadata();
    let packages = meta["packages"].as_array().expect("packages");
    let names: BTreeSet<String> = packages
        .iter()
        .map(|p| p["name"].as_str().expect("name").to_string())
        .collect();
    packages
        .iter()
        .map(|p| {
            let deps = p["dependencies"]
                .as_array()
                .expect("dependencies")
                .iter()
                .filter(|d| d["kind"].is_null() || d["kind"] == "build")
                .map(|d| d["name"].as_str().expect("name").to_string())
                .filter(|n| names.contains(n))
                .collect();
            (p["name"].as_str().expect("name").to_string(), deps)
        })
        .collect()
}

/// The path by which `from` reaches `to` through normal dependencies, if it does.
fn path(graph: &BTreeMap<String, BTreeSet<String>>, from: &str, to: &str) -> Option<Vec<String>> {
    let mut came_from: BTreeMap<&str, &str> = BTreeMap::new();
    let mut queue = VecDeque::from([from]);
    while let Some(at) = queue.pop_front() {
        for next in graph.get(at).into_iter().flatten() {
            if next == from || came_from.contains_key(next.as_str()) {
                continue;
            }
            came_from.insert(next, at);
            if next == to {
                let mut p = vec![to.to_string()];
                let mut k = to;
                while let Some(&prev) = came_from.get(k) {
                    p.push(prev.to_string());
                    k = prev;
                    if k == from {
                        break;
                    }
                }
                p.reverse();
                return Some(p);
            }
            queue.push_back(next);
        }
    }
    None
}

fn g(name: &str) -> String {
    format!("gridmesh-{name}")
}

/// (crate, what it must know nothing of, why)
const RULES: &[(&str, &[&str], &str)] = &[
    (
        "types",
        &["*"],
        "the vocabulary every crate shares knows no other crate",
    ),
    ("charts", &["*"], "charts draw the numbers they are given"),
    (
        "physics",
        &["*"],
        "physics runs inside consensus on libm alone",
    ),
    (
        "market",
        &["ledger", "grid", "agent", "sim", "node"],
        "clearing is pure and knows no ledger",
    ),
    (
        "grid",
        &["ledger", "market", "agent", "sim", "node"],
        "power flow knows no ledger",
    ),
    (
        "agent",
        &["ledger", "grid", "sim", "node", "client"],
        "agents plan on data, not on a ledger",
    ),
    (
        "ledger",
        &[
            "consensus",
            "bft",
            "node",
            "gateway",
            "api",
            "client",
            "sim",
            "tools",
            "agent",
            "grid",
            "charts",
        ],
        "the state machine knows nothing above it",
    ),
    (
        "api",
        &[
            "node",
            "client",
            "sim",
            "tools",
            "consensus",
            "bft",
            "gateway",
        ],
        "the wire format has no server",
    ),
    (
        "client",
        &[
            "node",
            "sim",
            "tools",
            "consensus",
            "bft",
            "gateway",
            "grid",
        ],
        "a client knows the API only",
    ),
    (
        "home",
        &["node", "sim", "tools", "consensus", "bft", "grid"],
        "the home is a client of the node, on the home's gateway",
    ),
    (
        "node",
        &["sim", "tools", "client", "agent", "home"],
        "the node that ships knows no simulator, tools or clients",
    ),
    (
        "sim",
        &[
            "node",
            "consensus",
            "bft",
            "gateway",
            "api",
            "client",
            "tools",
        ],
        "the simulator runs the ledger in memory, not a node",
    ),
];

#[test]
fn every_crate_keeps_to_what_it_may_know() {
    let graph = workspace_graph();
    let mut broken = Vec::new();
    for (krate, forbidden, why) in RULES {
        let from = g(krate);
        assert!(
            graph.contains_key(&from),
            "no crate {from} in the workspace"
        );
        let targets: Vec<String> = if forbidden == &["*"] {
            graph.keys().filter(|k| **k != from).cloned().collect()
        } else {
            forbidden.iter().map(|f| g(f)).collect()
        };
        for to in targets {
            assert!(
                graph.contains_key(&to),
                "rule names {to}, which is not in the workspace"
            );
            if let Some(p) = path(&graph, &from, &to) {
                broken.push(format!("{from} reaches {to} ({}): {why}", p.join(" -> ")));
            }
        }
    }
    assert!(
        broken.is_empty(),
        "crate rules broken:\n{}",
        broken.join("\n")
    );
}

#[test]
fn only_the_tools_and_the_binary_know_both_node_and_sim() {
    let graph = workspace_graph();
    let both: BTreeSet<&str> = graph
        .keys()
        .filter(|k| {
            path(&graph, k, "gridmesh-node").is_some() && path(&graph, k, "gridmesh-sim").is_some()
        })
        .map(String::as_str)
        .collect();
    assert_eq!(both, BTreeSet::from(["gridmesh", "gridmesh-tools"]));
}

#[test]
fn the_path_finder_sees_a_broken_rule() {
    // The check above must be able to fail: a graph where node reaches sim through tools.
    let graph: BTreeMap<String, BTreeSet<String>> = [
        ("gridmesh-node", vec!["gridmesh-tools"]),
        ("gridmesh-tools", vec!["gridmesh-sim"]),
        ("gridmesh-sim", vec![]),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.into_iter().map(String::from).collect()))
    .collect();
    assert_eq!(
        path(&graph, "gridmesh-node", "gridmesh-sim"),
        Some(vec![
            "gridmesh-node".into(),
            "gridmesh-tools".into(),
            "gridmesh-sim".into()
        ])
    );
    assert_eq!(path(&graph, "gridmesh-sim", "gridmesh-node"), None);
}

#[test]
fn no_crate_has_a_simulation_feature() {
    // Unsigned transactions are `UnsignedTx`, executed by `Parent::rehearse` only: no feature
    // switches them into the ledger a node runs.
    let meta = metadata();
    for p in meta["packages"].as_array().expect("packages") {
        let name = p["name"].as_str().unwrap_or_default();
        if let Some(f) = p["features"].as_object() {
            assert!(
                !f.contains_key("simulation"),
                "{name} declares a simulation feature"
            );
        }
        for d in p["dependencies"].as_array().into_iter().flatten() {
            if d["name"] == "gridmesh-ledger" {
                let features = d["features"].as_array().map_or(0, Vec::len);
                assert_eq!(features, 0, "{name} turns on features of gridmesh-ledger");
            }
        }
    }
}

/// Only the ledger knows the key layouts of its state: the keys are `pub(crate)` there (so no
/// other crate can build one), and no other crate reads the key/value space by hand either; they
/// read through `gridmesh_ledger::readers`.
#[test]
fn only_the_ledger_reads_its_key_value_space() {
    let crates = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut offenders = Vec::new();
    let mut stack = vec![crates.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let p = entry.unwrap().path();
            if p.is_dir() {
                if p != crates.join("ledger") && !p.ends_with("target") {
                    stack.push(p);
                }
            } else if p.extension().is_some_and(|e| e == "rs")
                && !p.ends_with("gridmesh/tests/architecture.rs")
            {
                let text = std::fs::read_to_string(&p).unwrap();
                for (n, line) in text.lines().enumerate() {
                    if ["kv().get(", "kv().scan(", "kv_space()", "kv::key("]
                        .iter()
                        .any(|pat| line.contains(pat))
                    {
                        offenders.push(format!("{}:{}: {}", p.display(), n + 1, line.trim()));
                    }
                }
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "read the ledger's state through its readers, not by key:\n{}",
        offenders.join("\n")
    );
}

/// The LICENSE file is the licence every crate declares (issue 24).
#[test]
fn the_license_file_is_the_licence_the_crates_declare() {
    let meta = metadata();
    let licences: BTreeSet<&str> = meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["license"].as_str().unwrap_or("none"))
        .collect();
    assert_eq!(licences, BTreeSet::from(["Apache-2.0"]), "{licences:?}");
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../LICENSE"))
        .expect("a LICENSE file at the root");
    assert!(
        text.contains("Apache License") && text.contains("Version 2.0, January 2004"),
        "LICENSE is not the Apache License 2.0"
    );
}
