//! The reference cases of `../shared/data/grid` import completely: every bus the independent
//! solver's results name is there, with the slack, loads and branches the case holds.

use std::path::PathBuf;

use gridmesh_grid::{parse_case, BusKind};

/// `../shared/data/grid` next to the repository (or `GRIDMESH_SHARED_DATA/grid`).
fn data_dir() -> Option<PathBuf> {
    let dir = match std::env::var_os("GRIDMESH_SHARED_DATA") {
        Some(d) => PathBuf::from(d).join("grid"),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/grid"),
    };
    dir.exists().then_some(dir)
}

#[test]
fn every_reference_case_imports() {
    let Some(dir) = data_dir() else {
        eprintln!("skipped: no ../shared/data/grid next to the repository");
        return;
    };
    for (case, radial) in [
        ("case33bw", true),
        ("case118", false),
        ("case300", false),
        ("case9241pegase", false),
    ] {
        let text = std::fs::read_to_string(dir.join(format!("{case}.m"))).unwrap();
        let started = std::time::Instant::now();
        let net = parse_case(&text).unwrap_or_else(|e| panic!("{case}: {e}"));
        let took = started.elapsed();
        let reference: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(dir.join(format!("{case}.ref.json"))).unwrap(),
        )
        .unwrap();
        assert_eq!(
            net.buses.len() as u64,
            reference["buses"].as_u64().unwrap(),
            "{case}"
        );
        for number in reference["vm_pu"].as_object().unwrap().keys() {
            let n: u32 = number.parse().unwrap();
            assert!(net.bus_index(n).is_some(), "{case}: bus {n} missing");
        }
        assert_eq!(net.slack_buses().count(), 1, "{case}: one slack bus");
        assert_eq!(net.is_radial(), radial, "{case}");
        assert!(net.total_load_mw() > 0.0);
        assert!(!net.branches.is_empty() && !net.generators.is_empty());
        eprintln!(
            "{case}: {} buses, {} branches, parsed in {took:?}",
            net.buses.len(),
            net.branches.len()
        );
    }
    // case33bw: the Baran and Wu feeder, 12.66 kV, 3.715 MW of load.
    let net = parse_case(&std::fs::read_to_string(dir.join("case33bw.m")).unwrap()).unwrap();
    assert_eq!(net.buses[0].kind, BusKind::Slack);
    assert_eq!(net.buses[0].base_kv, 12.66);
    assert!(
        (net.total_load_mw() - 3.715).abs() < 1e-9,
        "{}",
        net.total_load_mw()
    );
}
