//! Interop: our unbalanced power flow against OpenDSS itself (DSS C-API through opendssdirect.py,
//! in the project's venv) on generated feeders: a Dyn substation, a regulator with line-drop
//! compensation, three-, two- and one-phase laterals on matrix and sequence line codes (with
//! and without charging), wye and delta loads of models 1, 2 and 5 on one to three phases,
//! shunt capacitors and an LV transformer. Every node within 1e-6 pu and 1e-4 degrees (which
//! holds only where both control loops left the regulator on the same tap), losses within 1e-6
//! of each other.
//!
//! PV systems and storage (model 1) likewise, a regulator holding a remote bus, and capacitor
//! controls: voltage, current and kvar controls with their delays, multi-step
//! banks and the voltage override switch as OpenDSS's static control loop switches them, beside
//! the regulator.
//!
//! OpenDSS runs in the venv (`./scripts/setup`); without it the test fails.

use gridmesh_grid::unbalanced::{Circuit, SolveOptions};
use gridmesh_tools::bench_feeder::generated_dss_feeder;

/// The `bus2` of every line of `phases` phases in a generated feeder, in order, as written
/// (with its nodes).
fn line_ends(text: &str, phases: usize) -> Vec<String> {
    let tag = format!(" phases={phases} ");
    text.lines()
        .filter(|l| l.starts_with("new line.") && l.contains(&tag))
        .filter_map(|l| {
            l.split(" bus2=")
                .nth(1)?
                .split(' ')
                .next()
                .map(str::to_string)
        })
        .collect()
}

/// A bus name without its nodes.
fn bus_name(spec: &str) -> String {
    spec.split('.').next().unwrap_or(spec).to_string()
}

/// A generated feeder with capacitor banks under control: at the far end of three of its
/// three-phase laterals, a three-step bank all out under voltage control (it should close steps
/// until the voltage is up or the steps run out), a bank out under current control on the first
/// line, and a bank in under kvar control at the substation that wants it out, each with its own
/// delay; the last with the voltage override.
fn with_capacitor_controls(seed: u64, buses: usize, hz: u32, on_v: f64) -> String {
    let text = generated_dss_feeder(seed, buses, hz);
    let three: Vec<String> = line_ends(&text, 3).iter().map(|b| bus_name(b)).collect();
    let far = |k: usize| three[three.len() - 1 - k * three.len() / 4].clone();
    let first_line = text
        .lines()
        .find(|l| l.starts_with("new line."))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap()
        .to_string();
    let controls = format!(
        "new capacitor.cv bus1={a} phases=3 kvar=600 kv=4.16 numsteps=3 states=[0 0 0]\n\
         new capcontrol.cv element=line.l{a_line} terminal=2 capacitor=cv type=voltage ptratio=20 onsetting={on_v} offsetting={off_v} delay=30 ptphase=avg\n\
         new capacitor.ci bus1={b} phases=3 kvar=150 kv=4.16 states=[0]\n\
         new capcontrol.ci element={first_line} terminal=1 capacitor=ci type=current ctratio=1 onsetting=1 offsetting=0.5 delay=10 ctphase=max\n\
         new capacitor.ck bus1={c} phases=3 kvar=100 kv=4.16 conn=delta\n\
         new capcontrol.ck element=transformer.sub terminal=1 capacitor=ck type=kvar onsetting=1e9 offsetting=1e8 delay=20 delayoff=5 voltoverride=yes vmin=100 vmax=140 ptratio=60\n",
        off_v = on_v + 8.0,
        a = far(0),
        a_line = far(0).trim_start_matches('b'),
        b = far(1),
        c = far(2),
    );
    text.replace("set voltagebases", &format!("{controls}set voltagebases"))
}

/// A generated feeder with PV systems and batteries: a three-phase PV whose kVA caps its
/// watts at power factor 0.95, a single-phase one absorbing vars, one under its cut-out; a
/// battery discharging at 60 %, a single-phase one charging at 75 %, a delta one idling, and one
/// told to charge when full (it idles).
fn with_inverters(seed: u64, buses: usize, hz: u32) -> String {
    let text = generated_dss_feeder(seed, buses, hz);
    let (three, one) = (line_ends(&text, 3), line_ends(&text, 1));
    let t = |k: usize| {
        three[three.len() - 1 - k]
            .split('.')
            .next()
            .unwrap()
            .to_string()
    };
    let o = |k: usize| one[one.len() - 1 - k].clone();
    let ders = format!(
        "new pvsystem.pv3 bus1={t0} phases=3 kv=4.16 pmpp=400 kva=420 irradiance=1.1 pf=0.95\n\
         new pvsystem.pv1 bus1={o0} phases=1 kv=2.4 pmpp=50 kva=60 irradiance=0.8 kvar=-10\n\
         new pvsystem.pvoff bus1={t1} phases=3 kv=4.16 pmpp=100 kva=100 irradiance=0.1\n\
         new storage.bd bus1={t2} phases=3 kv=4.16 kwrated=200 kwhrated=800 state=discharging %discharge=60 pf=0.98\n\
         new storage.bc bus1={o1} phases=1 kv=2.4 kwrated=20 kwhrated=60 %stored=50 kw=-15\n\
         new storage.bi bus1={t3} phases=3 kv=4.16 conn=delta kwrated=30 kwhrated=90\n\
         new storage.bfull bus1={t4} phases=3 kv=4.16 kwrated=50 kwhrated=100 state=charging\n",
        t0 = t(0),
        t1 = t(1),
        t2 = t(2),
        t3 = t(3),
        t4 = t(4),
        o0 = o(0),
        o1 = o(1),
    );
    text.replace("set voltagebases", &format!("{ders}set voltagebases"))
}

/// A generated feeder whose regulator holds a far bus's phase instead of its own winding (the
/// RegControl's `bus=`), on that bus's own PT.
fn with_remote_regulation(seed: u64, buses: usize, hz: u32) -> String {
    let text = generated_dss_feeder(seed, buses, hz);
    let far = bus_name(line_ends(&text, 3).last().unwrap());
    text.lines()
        .map(|l| {
            if l.starts_with("new regcontrol.reg ") {
                format!("{l} bus={far}.2 remoteptratio=20.5")
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
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
        std::fs::write(&path, generated_dss_feeder(seed, buses, hz)).unwrap();
        files.push(path);
    }
    // Feeders with capacitor controls: a voltage control that closes every step, and two that
    // close two of three (its setting between the voltage with one step in and with two).
    for (seed, buses, hz, on_v) in [
        (5u64, 60usize, 60u32, 140.0),
        (6, 120, 60, 126.8),
        (7, 200, 50, 127.8),
    ] {
        let path = scratch.path().join(format!("capctl{seed}.dss"));
        std::fs::write(&path, with_capacitor_controls(seed, buses, hz, on_v)).unwrap();
        files.push(path);
    }
    for (seed, buses, hz) in [(10u64, 100usize, 60u32), (11, 220, 60)] {
        let path = scratch.path().join(format!("remote{seed}.dss"));
        std::fs::write(&path, with_remote_regulation(seed, buses, hz)).unwrap();
        files.push(path);
    }
    for (seed, buses, hz) in [(8u64, 90usize, 60u32), (9, 250, 50)] {
        let path = scratch.path().join(format!("der{seed}.dss"));
        std::fs::write(&path, with_inverters(seed, buses, hz)).unwrap();
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
        // What each PV system and battery delivers, by OpenDSS's rules for each (all at
        // voltages inside their band, so at their nominal power).
        if name.starts_with("der") {
            assert_eq!(
                peer["ders"].as_object().unwrap().len(),
                7,
                "{name}: {}",
                peer["ders"]
            );
        }
        for (name, kw_kvar) in peer["ders"].as_object().unwrap() {
            let g = circuit
                .generators
                .iter()
                .find(|g| g.name == *name)
                .unwrap_or_else(|| panic!("{name}: no {name}"));
            let (kw, kvar) = (kw_kvar[0].as_f64().unwrap(), kw_kvar[1].as_f64().unwrap());
            assert!(
                (g.kw - kw).abs() < 1e-6 && (g.kvar - kvar).abs() < 1e-6,
                "{name}: {name} draws {} kW {} kvar, OpenDSS {kw} kW {kvar} kvar",
                g.kw,
                g.kvar
            );
        }
        for (cap, steps) in &sol.capacitor_steps {
            assert_eq!(
                peer["capacitor_steps"][cap].as_u64(),
                Some(u64::from(*steps)),
                "{name}: capacitor {cap}'s steps in service"
            );
        }
        let losses = peer["losses_kw"].as_f64().unwrap();
        assert!(
            (sol.losses_kw - losses).abs() <= 1e-6 * losses.abs().max(1.0),
            "{name}: losses {} kW, OpenDSS {losses}",
            sol.losses_kw
        );
        eprintln!(
            "{name}: {nodes} nodes, worst {worst_vm:.1e} pu and {worst_va:.1e}°, taps {:?}, capacitors {:?}, {} control iterations",
            sol.taps.iter().find(|(t, _)| t == "reg").map(|(_, t)| t),
            sol.capacitor_steps,
            sol.control_iterations
        );
    }
}
