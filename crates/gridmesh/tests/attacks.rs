//! The adversarial suite at its bounded size, through the real binary (`gridmesh bench attacks`):
//! every attack it replays must leave the node standing. `./scripts/bench` runs it at the
//! review's sizes (`--long`).

mod common;

use common::{gridmesh, stdout_json};

#[test]
fn the_node_holds_against_every_attack_the_suite_replays() {
    let out = gridmesh(&["bench", "attacks", "--json"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the suite failed:\n{stderr}");
    let outcomes = stdout_json(&out);
    let outcomes = outcomes.as_array().expect("one outcome per attack");
    let attacks: Vec<&str> = outcomes
        .iter()
        .map(|o| o["attack"].as_str().unwrap())
        .collect();
    assert_eq!(
        attacks,
        [
            "jam",
            "slot-fill",
            "wash",
            "phantom",
            "island-bill",
            "profile",
            "sign-in",
            "pcc",
            "connections",
            "streams",
            "mqtt-junk"
        ]
    );
    for o in outcomes {
        assert_eq!(o["held"], true, "{o}");
        // One line per attack for people, on stderr.
        let name = o["attack"].as_str().unwrap();
        assert!(
            stderr
                .lines()
                .any(|l| l.starts_with(name) && l.contains("held") && l.contains("tried:")),
            "no line for {name}:\n{stderr}"
        );
    }
    // Honest transactions under the jam and the slot fill committed, and were timed.
    for name in ["jam", "slot-fill"] {
        let o = outcomes.iter().find(|o| o["attack"] == name).unwrap();
        assert!(o["honest_latency"]["count"].as_u64().unwrap() >= 1, "{o}");
    }
}
