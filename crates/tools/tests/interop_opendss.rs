//! Interop: our unbalanced power flow against OpenDSS itself (DSS C-API through opendssdirect.py,
//! in the project's venv) on generated feeders: a Dyn substation, a regulator with line-drop
//! compensation, three-, two- and one-phase laterals on matrix and sequence line codes (with
//! and without charging), wye and delta loads of models 1, 2 and 5 on one to three phases,
//! shunt capacitors and an LV transformer. Every node within 1e-6 pu and 1e-4 degrees (which
//! holds only where both control loops left the regulator on the same tap), losses within 1e-6
//! of each other.
//!
//! OpenDSS runs in the venv (`./scripts/setup`); without it the test fails.

use std::fmt::Write as _;
use std::process::Command;

use gridmesh_grid::unbalanced::{Circuit, SolveOptions};

/// A small deterministic generator (64-bit LCG), so each seed is one feeder.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
    fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.next()
    }
    fn pick(&mut self, n: usize) -> usize {
        ((self.next() * n as f64) as usize).min(n - 1)
    }
}

fn phases_text(p: &[u8]) -> String {
    p.iter().map(|x| format!(".{x}")).collect()
}

/// An OpenDSS master for a radial feeder of `buses` buses.
fn feeder(seed: u64, buses: usize, hz: u32) -> String {
    let mut r = Rng(seed);
    let mut s = String::new();
    let _ = writeln!(s, "clear\nset defaultbasefrequency={hz}");
    let _ = writeln!(
        s,
        "new circuit.gen{seed} basekv=12.47 pu={:.4} phases=3 bus1=sourcebus mvasc3={:.0} mvasc1={:.0}",
        r.range(1.0, 1.03),
        r.range(150.0, 500.0),
        r.range(100.0, 400.0)
    );
    let _ = writeln!(
        s,
        "new transformer.sub phases=3 windings=2 buses=[sourcebus b0] conns=[delta wye] kvs=[12.47 4.16] kvas=[6000 6000] xhl={:.2} %rs=[0.4 0.4]",
        r.range(1.0, 6.0)
    );
    let _ = writeln!(s, "new transformer.reg phases=3 windings=2 buses=[b0 r0] conns=[wye wye] kvs=[4.16 4.16] kvas=[6000 6000] xhl=0.01 %loadloss=0.01");
    let _ = writeln!(
        s,
        "new regcontrol.reg transformer=reg winding=2 vreg={:.0} band=2 ptratio=20 ctprim=700 r=3 x=9",
        r.range(121.0, 124.0)
    );
    s.push_str(
        "new linecode.m3 nphases=3 units=mi\n~ rmatrix=(0.3465 | 0.1560 0.3375 | 0.1580 0.1535 0.3414)\n~ xmatrix=(1.0179 | 0.5017 1.0478 | 0.4236 0.3849 1.0348)\n",
    );
    s.push_str("new linecode.c3 nphases=3 units=mi\n~ rmatrix=[0.791721 |0.318476 0.781649 |0.28345 0.318476 0.791721]\n~ xmatrix=[0.438352 |0.0276838 0.396697 |-0.0184204 0.0276838 0.438352]\n~ cmatrix=[383.948 |0 383.948 |0 0 383.948]\n");
    s.push_str("new linecode.s3 nphases=3 r1=0.25 x1=0.45 r0=0.7 x0=1.6 c1=11 c0=4 units=km\n");
    s.push_str("new linecode.m2 nphases=2 units=mi rmatrix=(1.3238 | 0.2066 1.3294) xmatrix=(1.3569 | 0.4591 1.3471)\n");
    s.push_str("new linecode.m1 nphases=1 units=mi rmatrix=(1.3292) xmatrix=(1.3475)\n");
    s.push_str(
        "new linecode.c1 nphases=1 units=mi rmatrix=(1.3425) xmatrix=(0.5124) cmatrix=[236]\n",
    );
    let mut bus_phases: Vec<Vec<u8>> = vec![vec![1, 2, 3]];
    for i in 1..buses {
        // Laterals hang mostly off three-phase buses, as feeders are built.
        let parent = loop {
            let p = r.pick(i);
            if bus_phases[p].len() == 3 || r.next() < 0.3 {
                break p;
            }
        };
        let pp = bus_phases[parent].clone();
        let x = r.next();
        let phases: Vec<u8> = match pp.len() {
            3 if x < 0.65 => pp.clone(),
            3 if x < 0.8 => {
                let skip = r.pick(3);
                pp.iter()
                    .enumerate()
                    .filter(|(k, _)| *k != skip)
                    .map(|(_, p)| *p)
                    .collect()
            }
            2 if x < 0.5 => pp.clone(),
            _ => vec![pp[r.pick(pp.len())]],
        };
        let code = match phases.len() {
            3 => ["m3", "c3", "s3"][r.pick(3)],
            2 => "m2",
            _ => ["m1", "c1"][r.pick(2)],
        };
        let from = if parent == 0 {
            "r0".to_string()
        } else {
            format!("b{parent}")
        };
        let _ = writeln!(
            s,
            "new line.l{i} phases={} bus1={from}{} bus2=b{i}{} linecode={code} length={:.0} units=ft",
            phases.len(),
            phases_text(&phases),
            phases_text(&phases),
            r.range(80.0, 600.0)
        );
        bus_phases.push(phases);
    }
    let mut n_loads = 0;
    for (i, phases) in bus_phases.iter().enumerate().skip(1) {
        if r.next() > 0.6 {
            continue;
        }
        n_loads += 1;
        let model = [1, 2, 5][r.pick(3)];
        let (kw, pf) = (r.range(10.0, 120.0), r.range(0.85, 0.99));
        let spec = match (phases.len(), r.pick(3)) {
            (3, 0) => format!("bus1=b{i} phases=3 conn=wye kv=4.16"),
            (3, 1) => format!("bus1=b{i} phases=3 conn=delta kv=4.16"),
            (3, _) => format!("bus1=b{i}.{} phases=1 conn=wye kv=2.4", phases[r.pick(3)]),
            (2, _) => format!(
                "bus1=b{i}{} phases=1 conn=delta kv=4.16",
                phases_text(phases)
            ),
            _ => format!("bus1=b{i}{} phases=1 conn=wye kv=2.4", phases_text(phases)),
        };
        let _ = writeln!(
            s,
            "new load.ld{i} {spec} model={model} kw={kw:.1} pf={pf:.3}"
        );
    }
    assert!(n_loads > 0);
    let three: Vec<usize> = (1..buses).filter(|&i| bus_phases[i].len() == 3).collect();
    if let Some(&b) = three.get(r.pick(three.len().max(1))) {
        let _ = writeln!(s, "new capacitor.cap3 bus1=b{b} phases=3 kvar=300 kv=4.16");
        let _ = writeln!(s, "new transformer.lv phases=3 windings=2 buses=[b{b} lv] conns=[wye wye] kvs=[4.16 0.48] kvas=[300 300] xhl=2 %r=0.55");
        let _ = writeln!(
            s,
            "new load.lv1 bus1=lv.2 phases=1 kv=0.277 kw=40 kvar=20 model=1"
        );
        let _ = writeln!(
            s,
            "new load.lv3 bus1=lv phases=3 kv=0.48 kw=60 pf=0.9 model=2"
        );
    }
    if let Some(i) = (1..buses).find(|&i| bus_phases[i].len() == 1) {
        let _ = writeln!(
            s,
            "new capacitor.cap1 bus1=b{i}{} phases=1 kvar=50 kv=2.4",
            phases_text(&bus_phases[i])
        );
    }
    s.push_str("set voltagebases=[12.47 4.16 0.48]\ncalcv\nset tolerance=1e-10\nsolve\n");
    s
}

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
        std::fs::write(&path, feeder(seed, buses, hz)).unwrap();
        files.push(path);
    }
    let out = Command::new(&python)
        .arg(gridmesh_tools::repo_path("scripts/interop/opendss_peer.py"))
        .arg("solve")
        .args(&files)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "OpenDSS peer: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let theirs: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
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
