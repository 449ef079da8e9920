//! Interop: our unbalanced power flow against OpenDSS itself (DSS C-API through opendssdirect.py,
//! in the project's venv) on generated feeders: a Dyn substation, a regulator with line-drop
//! compensation, three-, two- and one-phase laterals on matrix and sequence line codes (with
//! and without charging), wye and delta loads of models 1, 2 and 5 on one to three phases,
//! shunt capacitors and an LV transformer. Every node within 1e-6 pu and 1e-4 degrees (which
//! holds only where both control loops left the regulator on the same tap), losses within 1e-6
//! of each other.
//!
//! OpenDSS runs in the venv (`./scripts/setup`); without it the test fails.

use gridmesh_grid::unbalanced::{Circuit, SolveOptions};
use gridmesh_tools::bench_feeder::generated_dss_feeder;

#[test]
fn unbalanced_power_flow_agrees_with_opendss_on_generated_feeders() {
    let python = gridmesh_refdata::require_python();
    let scratch = tempfile::tempdir().unwrap();
    let cases = [
        (1u64, 30usize, 60u32),
        (2, 80, 60),
        (3, 150, 50),
        (4, 300, 60),
    ];
    let mut files = Vec::new();
    for (seed, buses, hz) in cases {
        let path = scratch.path().join(format!("gen{seed}.dss"));
        std::fs::write(&path, generated_dss_feeder(seed, buses, hz)).unwrap();
        files.push(path);
    }
    let theirs = gridmesh_tools::run_peer(
        &python,
        "scripts/interop/opendss_peer.py",
        std::iter::once(std::ffi::OsStr::new("solve")).chain(files.iter().map(|f| f.as_os_str())),
    )
    .unwrap_or_else(|e| panic!("{e:#}"));
    for path in &files {
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        let peer = &theirs[path.to_string_lossy().as_ref()];
        assert_eq!(peer["converged"], true, "{name}: OpenDSS did not converge");
        let circuit = Circuit::read_dss(path).unwrap_or_else(|e| panic!("{name}: {e}"));
        let sol = circuit
            .solve(&SolveOptions::default())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let peer_buses = peer["buses"].as_object().unwrap();
        assert_eq!(peer_buses.len(), sol.buses.len(), "{name}: bus count");
        let (mut worst_vm, mut worst_va, mut nodes) = (0.0f64, 0.0f64, 0);
        for b in &sol.buses {
            let p = &peer_buses[&b.bus];
            let base = peer["kv_base_ln"][&b.bus].as_f64().unwrap();
            assert!((b.kv_base_ln - base).abs() < 1e-9, "{name} {}: base", b.bus);
            for &(node, vm, va) in &b.nodes {
                let v = &p[node.to_string()];
                let (pm, pa) = (v[0].as_f64().unwrap(), v[1].as_f64().unwrap());
                let dm = (vm - pm).abs();
                let mut da = (va - pa).abs() % 360.0;
                da = da.min(360.0 - da);
                assert!(dm < 1e-6, "{name} {}.{node}: {vm} pu, OpenDSS {pm}", b.bus);
                assert!(da < 1e-4, "{name} {}.{node}: {va}°, OpenDSS {pa}°", b.bus);
                worst_vm = worst_vm.max(dm);
                worst_va = worst_va.max(da);
                nodes += 1;
            }
        }
        let losses = peer["losses_kw"].as_f64().unwrap();
        assert!(
            (sol.losses_kw - losses).abs() <= 1e-6 * losses.abs().max(1.0),
            "{name}: losses {} kW, OpenDSS {losses}",
            sol.losses_kw
        );
        eprintln!(
            "{name}: {nodes} nodes, worst {worst_vm:.1e} pu and {worst_va:.1e}°, taps {:?}",
            sol.taps.iter().find(|(t, _)| t == "reg").map(|(_, t)| t)
        );
    }
}
