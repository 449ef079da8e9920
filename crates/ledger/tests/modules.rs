//! The ledger's concerns import each other in one direction only: no circle, and each concern
//! knows nothing of those built on it (the rules ARCHITECTURE.md states for the ledger). Read
//! from the sources, so a new `use crate::…` that closes a circle fails here, not in review.
//!
//! Only production code counts: a module's `#[cfg(test)]` tests (at the end of each file) may use
//! anything.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Top-level module of every source file under `src/`, with the crate-level modules each one
/// names (`crate::x`, `crate::{x, y}`, or `super::x` from a file of a directory module).
fn module_graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    collect(&src, &mut files);
    assert!(files.len() > 10, "found the ledger's sources in {src:?}");
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in files {
        let rel = file.strip_prefix(&src).unwrap();
        let module = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_string();
        let text = std::fs::read_to_string(&file).unwrap();
        let production = match text.find("#[cfg(test)]\nmod tests") {
            Some(at) => &text[..at],
            None => &text[..],
        };
        let deps = graph.entry(module.clone()).or_default();
        for line in production.lines() {
            let code = line.split("//").next().unwrap();
            for name in crate_paths(code) {
                if name != module && name != "lib" {
                    deps.insert(name);
                }
            }
        }
    }
    graph.remove("lib");
    graph
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            collect(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The crate-level modules a line of code names through `crate::`.
fn crate_paths(code: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        // `gridmesh_ledger::…` or `other_crate::…` are not this crate.
        let before = rest[..at].chars().last();
        rest = &rest[at + "crate::".len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                let name = ident(item.trim());
                if !name.is_empty() {
                    names.push(name);
                }
            }
        } else {
            let name = ident(rest);
            if !name.is_empty() {
                names.push(name);
            }
        }
    }
    names
}

fn ident(s: &str) -> String {
    s.chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect()
}

/// Module names that start with a capital are types re-exported at the root (`crate::State`):
/// map them to the module that defines them.
fn resolve(name: &str) -> &str {
    match name {
        "State" | "Account" | "Event" | "TxContext" => "state",
        "Keypair" => "crypto",
        "Genesis" => "genesis",
        "Block" | "BlockHeader" | "Receipt" => "block",
        "MarketConfig" => "config",
        "TxError" | "MarketTxError" | "EconomicsError" => "error",
        other => other,
    }
}

fn edges() -> BTreeMap<String, BTreeSet<String>> {
    module_graph()
        .into_iter()
        .map(|(m, deps)| {
            let deps = deps
                .iter()
                .map(|d| resolve(d).to_string())
                .filter(|d| *d != m)
                .collect();
            (m, deps)
        })
        .collect()
}

#[test]
fn the_ledgers_modules_import_each_other_without_a_circle() {
    let graph = edges();
    // Depth-first search for a back edge; report the circle it closes.
    fn visit(
        m: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) {
        if done.contains(m) {
            return;
        }
        if let Some(at) = path.iter().position(|p| p == m) {
            let mut circle = path[at..].to_vec();
            circle.push(m.to_string());
            panic!(
                "the ledger's modules import in a circle: {}",
                circle.join(" -> ")
            );
        }
        path.push(m.to_string());
        for d in graph.get(m).into_iter().flatten() {
            visit(d, graph, path, done);
        }
        path.pop();
        done.insert(m.to_string());
    }
    let mut done = BTreeSet::new();
    for m in graph.keys() {
        visit(m, &graph, &mut Vec::new(), &mut done);
    }
}

#[test]
fn each_concern_knows_nothing_of_those_built_on_it() {
    let graph = edges();
    for (module, never) in [
        (
            "kv",
            &[
                "state",
                "market",
                "economics",
                "devices",
                "grid_operator",
                "dispatch",
            ][..],
        ),
        (
            "state",
            &[
                "market",
                "economics",
                "devices",
                "grid_operator",
                "config",
                "dispatch",
            ],
        ),
        (
            "config",
            &[
                "state",
                "market",
                "economics",
                "devices",
                "grid_operator",
                "dispatch",
            ],
        ),
        (
            "devices",
            &["market", "economics", "grid_operator", "dispatch"],
        ),
        (
            "grid_operator",
            &["market", "economics", "devices", "dispatch"],
        ),
        ("market", &["economics", "dispatch"]),
        ("economics", &["dispatch", "chain"]),
    ] {
        let deps = graph
            .get(module)
            .unwrap_or_else(|| panic!("module {module} exists"));
        for n in never {
            assert!(
                !deps.contains(*n),
                "{module} imports {n}, which is built on it ({module} imports {deps:?})"
            );
        }
    }
    // Outside readers come through `readers`; nothing in the state machine reads through it.
    for (module, deps) in &graph {
        assert!(
            !deps.contains("readers"),
            "{module} imports readers, the door for code outside the ledger"
        );
    }
    // The only one that knows every concern is the dispatcher.
    let dispatch = &graph["dispatch"];
    for concern in ["devices", "grid_operator", "market", "economics"] {
        assert!(dispatch.contains(concern), "dispatch applies {concern}");
    }
}

#[test]
fn the_scanner_sees_grouped_and_plain_paths() {
    assert_eq!(
        crate_paths("use crate::{devices, economics::book, grid_operator};"),
        ["devices", "economics", "grid_operator"]
    );
    assert_eq!(
        crate_paths("let x = crate::market::escrow_account();"),
        ["market"]
    );
    assert!(crate_paths("use gridmesh_ledger::market;").is_empty());
}
