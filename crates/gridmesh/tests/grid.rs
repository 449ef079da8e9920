//! `gridmesh grid powerflow` through the real binary.

mod common;

use std::path::PathBuf;

use common::{gridmesh, stdout_json};

#[test]
fn powerflow_on_the_ieee_33_bus_feeder() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/grid");
    if !dir.exists() {
        eprintln!("skipped: no ../shared/data/grid next to the repository");
        return;
    }
    let case = dir.join("case33bw.m");
    let r = stdout_json(&gridmesh(&[
        "grid",
        "powerflow",
        "--case",
        case.to_str().unwrap(),
        "--json",
    ]));
    assert_eq!(r["converged"], true);
    assert_eq!(r["min_vm"]["bus"], 18);
    assert!((r["min_vm"]["vm_pu"].as_f64().unwrap() - 0.9131).abs() < 5e-5);
    assert!((r["losses_kw"].as_f64().unwrap() - 202.7).abs() < 0.05);
    assert_eq!(r["vm_pu"].as_object().unwrap().len(), 33);
    assert_eq!(r["vm_pu"]["1"].as_f64(), Some(1.0));
    // A file that is not a case: a clear error, non-zero exit.
    let out = gridmesh(&["grid", "powerflow", "--case", "Cargo.toml"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("mpc.version"));
}
