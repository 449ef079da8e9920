//! Interop: our AC power flow against pandapower's (Newton-Raphson, flat start, 1e-8) on every
//! MATPOWER case of `../shared/data/grid` and on generated radial feeders: every bus voltage
//! within 1e-6 pu and 1e-6 degrees, losses within 0.01 %; on the radial feeders our
//! backward/forward sweep too.
//!
//! pandapower runs in the project's venv (`./scripts/setup`); without it the test fails.

use std::path::PathBuf;

use gridmesh_grid::{
    generated_radial_feeder, newton_raphson, parse_case, write_case, PowerFlow, PowerFlowOptions,
    RadialFeeder,
};

#[test]
fn power_flow_agrees_with_pandapower_on_every_case() {
    let python = gridmesh_refdata::require_python();
    let scratch = tempfile::tempdir().unwrap();
    let mut files: Vec<PathBuf> = Vec::new();
    let grid = gridmesh_refdata::require("grid");
    for case in ["case33bw", "case118", "case300", "case9241pegase"] {
        files.push(grid.join(format!("{case}.m")));
    }
    for (buses, seed) in [(200, 1), (2_000, 2)] {
        let net = generated_radial_feeder(buses, seed);
        let path = scratch.path().join(format!("{}.m", net.name));
        std::fs::write(&path, write_case(&net)).unwrap();
        files.push(path);
    }
    let theirs = gridmesh_tools::run_peer(
        &python,
        "scripts/interop/pandapower_peer.py",
        std::iter::once(std::ffi::OsStr::new("solve")).chain(files.iter().map(|f| f.as_os_str())),
    )
    .unwrap_or_else(|e| panic!("{e:#}"));
    for path in &files {
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        let peer = &theirs[path.to_string_lossy().as_ref()];
        assert_eq!(
            peer["converged"], true,
            "{name}: pandapower did not converge"
        );
        let net = parse_case(&std::fs::read_to_string(path).unwrap()).unwrap();
        let mut solutions = vec![(
            "newton-raphson",
            newton_raphson(&net, &PowerFlowOptions::default()).unwrap(),
        )];
        if let Ok(feeder) = RadialFeeder::new(&net) {
            solutions.push((
                "sweep",
                feeder.solve(&net, &PowerFlowOptions::default()).unwrap(),
            ));
        }
        for (method, pf) in &solutions {
            compare(&name, method, &net, pf, peer);
        }
    }
}

fn compare(
    name: &str,
    method: &str,
    net: &gridmesh_grid::Network,
    pf: &PowerFlow,
    peer: &serde_json::Value,
) {
    let mut worst_vm = 0.0f64;
    let mut worst_va = 0.0f64;
    for (i, bus) in net.buses.iter().enumerate() {
        let key = bus.number.to_string();
        let vm = peer["vm_pu"][&key]
            .as_f64()
            .unwrap_or_else(|| panic!("{name}: pandapower has no bus {key}"));
        let va = peer["va_degree"][&key].as_f64().unwrap();
        worst_vm = worst_vm.max((pf.vm_pu[i] - vm).abs());
        worst_va = worst_va.max((pf.va_deg[i] - va).abs());
    }
    let losses_kw = pf.losses_mw * 1000.0;
    let peer_losses_kw = peer["losses_kw"].as_f64().unwrap();
    eprintln!(
        "{name} ({method}): worst |dVm| {worst_vm:.1e} pu, worst |dVa| {worst_va:.1e} deg, losses {losses_kw:.3} kW vs pandapower {peer_losses_kw:.3} kW"
    );
    assert!(worst_vm < 1e-6, "{name} ({method}): |dVm| {worst_vm}");
    assert!(worst_va < 1e-6, "{name} ({method}): |dVa| {worst_va}");
    assert!(
        (losses_kw - peer_losses_kw).abs() <= 1e-4 * peer_losses_kw.abs().max(1.0),
        "{name} ({method}): losses {losses_kw} vs {peer_losses_kw}"
    );
}
