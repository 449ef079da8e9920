//! Interop: home schedules exported as MPS and solved by HiGHS (highspy in the project's venv)
//! reach the same optimal objective as our microlp solve, within a relative gap of 1e-6, on
//! varied homes (prices, PV, battery, EV, deferrable loads; one with a negative export price, one
//! with a negative import price whose relaxation would import and export at once, so it is
//! exported and compared with its binaries). Each home twice: every slot a step, and in the
//! simulator's steps (the first hour by the quarter hour, then hourly). Homes with one device
//! (a battery, an EV, a heat pump heating the house) are planned without the simplex, by dynamic
//! programming: HiGHS checks those optima too.

use gridmesh_agent::schedule::{example_home, HomeProblem, Plan, Resolution};
use std::path::PathBuf;
use std::process::Command;

#[test]
fn highs_finds_the_same_optimum_on_the_exported_programs() {
    let py = gridmesh_refdata::require_python();
    let dir = tempfile::tempdir().unwrap();
    let mut ours = Vec::new();
    let mut files = Vec::new();
    let homes = (1..=8u64).flat_map(|seed| {
        let fine = example_home(seed);
        let stepped = HomeProblem {
            resolution: Some(Resolution {
                fine_slots: 4,
                step_slots: 4,
            }),
            ..fine.clone()
        };
        [(seed, fine), (seed + 100, stepped)]
    });
    // One device each, in the simulator's steps: planned by dynamic programming.
    let single = (1..=4u64).flat_map(|seed| {
        let stepped = |mut h: HomeProblem| {
            h.resolution = Some(Resolution {
                fine_slots: 4,
                step_slots: 4,
            });
            h.deferrable.clear();
            h
        };
        let ev = HomeProblem {
            battery: None,
            thermal: vec![],
            ..stepped(example_home(seed))
        };
        let battery = HomeProblem {
            ev: None,
            thermal: vec![],
            ..stepped(example_home(seed))
        };
        let heated = example_home(3 * seed);
        let heat_pump = HomeProblem {
            battery: None,
            ev: None,
            thermal: heated.thermal[..1].to_vec(),
            ..stepped(heated.clone())
        };
        [
            (seed + 200, ev),
            (seed + 250, battery),
            (3 * seed + 300, heat_pump),
        ]
    });
    let homes = homes.chain(single);
    for (seed, p) in homes {
        let Plan::Optimal(s) = p.plan() else {
            panic!("home {seed} is feasible")
        };
        // The program HiGHS gets is the one whose optimum we report: with the binaries if the
        // relaxation needed them.
        let lp = p.lp_of(&s);
        let file = dir.path().join(format!("home{seed}.mps"));
        std::fs::write(&file, lp.to_mps(&format!("home{seed}"))).unwrap();
        files.push(file);
        ours.push((seed, s.objective, s.milp));
    }
    let out = Command::new(&py)
        .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/interop/highs_peer.py"))
        .args(&files)
        .output()
        .expect("run highs_peer.py");
    assert!(
        out.status.success(),
        "highs_peer.py: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // HiGHS prints its banner on stdout before any option applies: the JSON is the last line.
    let stdout = String::from_utf8_lossy(&out.stdout);
    let theirs: Vec<serde_json::Value> =
        serde_json::from_str(stdout.lines().last().unwrap_or("")).unwrap();
    for ((seed, obj, milp), h) in ours.iter().zip(&theirs) {
        assert_eq!(h["status"], "Optimal", "home {seed}: {h}");
        let highs = h["objective"].as_f64().unwrap();
        let gap = (obj - highs).abs() / highs.abs().max(1.0);
        eprintln!("home {seed}: ours {obj:.9} HiGHS {highs:.9} gap {gap:.1e} milp {milp}");
        assert!(gap < 1e-6, "home {seed}: {obj} vs {highs}");
    }
    assert_eq!(theirs.len(), 28, "HiGHS answered for every program");
    assert!(ours.iter().any(|o| o.2), "one home needs the binaries");
    assert!(
        ours.iter().any(|o| o.2 && o.0 > 100),
        "one home in steps needs the binaries"
    );
}
