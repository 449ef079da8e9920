//! The unbalanced power flow against OpenDSS's own solutions of the reference feeders in
//! `../shared/data/dss` (`*.ref.json`): every node within 1e-6 pu and 1e-4 degrees.

use gridmesh_grid::unbalanced::{Circuit, Solution, SolveOptions};
use serde_json::Value;

fn reference(relative: &str) -> Value {
    serde_json::from_str(&gridmesh_refdata::require_text(relative)).unwrap()
}

/// The largest differences from the reference, in pu and degrees, and where.
fn compare(sol: &Solution, circuit: &Circuit, reference: &Value) -> (f64, f64, String) {
    let mut worst = (0.0f64, 0.0f64, String::new());
    let buses = reference["buses"].as_object().unwrap();
    assert_eq!(buses.len(), circuit.buses.len(), "bus count");
    for (name, nodes) in buses {
        let b = sol
            .buses
            .iter()
            .find(|b| &b.bus == name)
            .unwrap_or_else(|| panic!("bus {name} missing"));
        let base = nodes["_kv_base_ln"].as_f64().unwrap();
        assert!(
            (b.kv_base_ln - base).abs() < 1e-9,
            "{name}: base {} kV, OpenDSS {base}",
            b.kv_base_ln
        );
        for (node, v) in nodes.as_object().unwrap() {
            if node.starts_with('_') {
                continue;
            }
            let n: u8 = node.parse().unwrap();
            let (vm, va) = (v[0].as_f64().unwrap(), v[1].as_f64().unwrap());
            let &(_, m, a) = b
                .nodes
                .iter()
                .find(|(k, _, _)| *k == n)
                .unwrap_or_else(|| panic!("node {name}.{n} missing"));
            let dm = (m - vm).abs();
            let mut da = (a - va).abs() % 360.0;
            da = da.min(360.0 - da);
            if dm > worst.0 {
                worst.0 = dm;
                worst.2 = format!("{name}.{n}: {m} vs {vm}");
            }
            worst.1 = worst.1.max(da);
        }
    }
    worst
}

/// Solves `master` and holds every node to OpenDSS's reference (1e-6 pu, 1e-4 degrees) and the
/// losses to `losses_kw` of it; the solution and the reference.
fn matches_reference(master: &str, reference_file: &str, losses_kw: f64) -> (Solution, Value) {
    let circuit = Circuit::read_dss(&gridmesh_refdata::require(master)).unwrap();
    let sol = circuit.solve(&SolveOptions::default()).unwrap();
    let r = reference(reference_file);
    let (dm, da, at) = compare(&sol, &circuit, &r);
    eprintln!(
        "{master}: worst {dm:e} pu ({at}), {da:e} deg; losses {} kW vs {}",
        sol.losses_kw, r["losses_kw"]
    );
    assert!(dm < 1e-6, "vm off by {dm} at {at}");
    assert!(da < 1e-4, "va off by {da} deg");
    assert!((sol.losses_kw - r["losses_kw"].as_f64().unwrap()).abs() < losses_kw);
    (sol, r)
}

#[test]
fn ieee13_matches_opendss() {
    let (sol, r) = matches_reference(
        "dss/ieee13/IEEE13Nodeckt.dss",
        "dss/ieee13/ieee13.ref.json",
        1e-3,
    );
    // The regulators' taps as OpenDSS's control loop leaves them.
    let taps: Vec<f64> = sol.taps[1..4].iter().map(|(_, t)| t[1]).collect();
    assert_eq!(taps, [1.05625, 1.0375, 1.05625]);
    assert!((sol.total_power_kw - r["total_power_kw"].as_f64().unwrap()).abs() < 1e-3);
}

#[test]
fn european_lv_matches_opendss() {
    matches_reference(
        "dss/ieee-eu-lv/Master.dss",
        "dss/ieee-eu-lv/ieee-eu-lv.ref.json",
        1e-4,
    );
}

/// OpenDSS's day on the European LV feeder: 1,440 one-minute steps, each step's lowest and
/// highest node voltage, and the whole solution at minutes 1, 566 and 1440.
#[test]
fn european_lv_day_matches_opendss() {
    let path = gridmesh_refdata::require("dss/ieee-eu-lv/Master.dss");
    let circuit = Circuit::read_dss(&path).unwrap();
    let r = reference("dss/ieee-eu-lv/ieee-eu-lv.ref.json");
    let daily = &r["daily"];
    let t0 = std::time::Instant::now();
    let day = circuit
        .time_series(1440, 1.0 / 60.0, &SolveOptions::default(), &[1, 566, 1440])
        .unwrap();
    eprintln!("day in {:?}", t0.elapsed());
    let minmax = daily["min_max_vm_pu_per_step"].as_array().unwrap();
    assert_eq!(day.steps.len(), minmax.len());
    let mut worst = 0.0f64;
    for (s, m) in day.steps.iter().zip(minmax) {
        worst = worst
            .max((s.vmin_pu - m[0].as_f64().unwrap()).abs())
            .max((s.vmax_pu - m[1].as_f64().unwrap()).abs());
    }
    eprintln!("worst min/max {worst:e} pu");
    assert!(worst < 1e-6, "a step's extreme is off by {worst} pu");
    for (step, sol) in &day.snapshots {
        let at = &daily["snapshots_at_minute"][step.to_string()];
        let (dm, da, at) = compare(sol, &circuit, at);
        eprintln!("minute {step}: worst {dm:e} pu ({at}), {da:e} deg");
        assert!(dm < 1e-6, "minute {step}: vm off by {dm} at {at}");
        assert!(da < 1e-4, "minute {step}: va off by {da} deg");
    }
}

/// Hosting capacity on the European LV feeder's homes: each answer checked by a full power flow
/// with the PV as a generator in the circuit: within every limit at the answer, the reported
/// limit broken a little above it.
#[test]
fn hosting_capacity_is_checked_by_power_flow_at_the_answer() {
    use gridmesh_grid::unbalanced::{HostingOptions, Limit, Load};
    let path = gridmesh_refdata::require("dss/ieee-eu-lv/Master.dss");
    let circuit = Circuit::read_dss(&path).unwrap();
    let opts = HostingOptions::default();
    let t0 = std::time::Instant::now();
    let hosting = circuit
        .hosting_capacity(&SolveOptions::default(), &opts)
        .unwrap();
    eprintln!("{} answers in {:?}", hosting.len(), t0.elapsed());
    assert_eq!(hosting.len(), 55, "one per home's phase");
    let kws: Vec<f64> = hosting.iter().map(|h| h.kw).collect();
    let (lo, hi) = kws
        .iter()
        .fold((f64::INFINITY, 0.0f64), |(a, b), &k| (a.min(k), b.max(k)));
    eprintln!("from {lo:.1} to {hi:.1} kW");
    // Homes far down the feeder host less than homes near the transformer.
    assert!(lo > 1.0 && hi > 2.0 * lo, "{lo} .. {hi}");
    let with_pv = |h: &gridmesh_grid::unbalanced::Hosting, kw: f64| {
        let mut c = circuit.clone();
        let bus = c.bus(&h.bus).unwrap();
        let kv = c.buses[bus].kv_base_ln;
        c.generators
            .push(Load::single_phase_generator("pv", bus, h.node, kv, kw));
        c.solve(&SolveOptions::default()).unwrap()
    };
    for h in hosting.iter().step_by(9) {
        let at = with_pv(h, h.kw);
        assert!(at.violations().is_empty(), "{h:?}: {:?}", at.violations());
        let above = with_pv(h, h.kw + 2.0 * opts.resolution_kw);
        let broken = above.violations();
        match &h.limit {
            Limit::Overvoltage { .. } | Limit::Undervoltage { .. } | Limit::Unbalance { .. } => {
                assert!(!broken.is_empty(), "{h:?}: nothing binds above the answer")
            }
            Limit::Line { line, rating_a, .. } => {
                let k = circuit.lines.iter().position(|l| &l.name == line).unwrap();
                assert!(at.line_current_a[k] <= *rating_a, "{h:?}");
                assert!(above.line_current_a[k] > *rating_a, "{h:?}");
            }
            Limit::Transformer { transformer, .. } => {
                let k = circuit
                    .transformers
                    .iter()
                    .position(|t| &t.name == transformer)
                    .unwrap();
                assert!(at.transformer_loading_pct[k] <= 100.0, "{h:?}");
                assert!(above.transformer_loading_pct[k] > 100.0, "{h:?}");
            }
            other => panic!("{h:?}: {other:?} on this feeder"),
        }
    }
}

/// Per-phase envelopes on the European LV feeder: every home gets one on its phase, and any mix
/// of homes inside their envelopes stays within every limit, checked by full power flows with
/// the homes at random points of their envelopes (and at both corners).
#[test]
fn phase_envelopes_hold_for_homes_anywhere_inside_them() {
    use gridmesh_grid::unbalanced::{Load, PhaseEnvelopeOptions};
    let path = gridmesh_refdata::require("dss/ieee-eu-lv/Master.dss");
    let circuit = Circuit::read_dss(&path).unwrap();
    let t0 = std::time::Instant::now();
    let env = circuit
        .phase_envelopes(&SolveOptions::default(), &PhaseEnvelopeOptions::default())
        .unwrap();
    eprintln!(
        "{} envelopes in {:?}, rounds {} / {}",
        env.homes.len(),
        t0.elapsed(),
        env.import_rounds,
        env.export_rounds
    );
    assert_eq!(env.homes.len(), 55);
    assert!(env
        .homes
        .iter()
        .all(|h| h.import_kw > 0.5 && h.export_kw > 0.5));
    let mut state = 7u64;
    let mut rand = || {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1);
        (state >> 11) as f64 / (1u64 << 53) as f64
    };
    for trial in 0..6 {
        let mut c = circuit.clone();
        for h in &env.homes {
            // Corners first, then random points inside the envelope (import negative).
            let x = match trial {
                0 => h.import_kw,
                1 => -h.export_kw,
                _ => h.import_kw - rand() * (h.import_kw + h.export_kw),
            };
            let bus = c.bus(&h.bus).unwrap();
            let kv = c.buses[bus].kv_base_ln;
            // x is extra import: a generator producing -x.
            c.generators.push(Load::single_phase_generator(
                &format!("extra-{}", h.load),
                bus,
                h.phase,
                kv,
                -x,
            ));
        }
        let sol = c.solve(&SolveOptions::default()).unwrap();
        assert!(
            sol.violations().is_empty(),
            "trial {trial}: {:?}",
            sol.violations()
        );
        for (line, i) in c.lines.iter().zip(&sol.line_current_a) {
            assert!(*i <= line.rating_a, "trial {trial}: {} at {i} A", line.name);
        }
    }
}

/// The linearised voltages at the European LV feeder's homes (what a coordinator shares): with
/// every home exporting 1 kW and then 2 kW on its phase, each home's node rises as the
/// sensitivities predict, within 15 % of the rise (the rest is the power flow's curvature).
#[test]
fn the_phase_sensitivities_predict_the_homes_voltages() {
    let path = gridmesh_refdata::require("dss/ieee-eu-lv/Master.dss");
    let mut c = Circuit::read_dss(&path).unwrap();
    for l in &mut c.loads {
        l.kw = 0.0;
        l.kvar = 0.0;
    }
    let s = c.phase_sensitivities(&c.solve_options).unwrap();
    assert_eq!(s.loads.len(), 55);
    assert!(
        s.vm_pu.iter().all(|v| (v - 1.05).abs() < 1e-3),
        "{:?}",
        s.vm_pu
    );
    for (i, row) in s.pu_per_kw.iter().enumerate() {
        // A kW imported at a home lowers its own node more than any other home's kW does.
        let own = row[i];
        assert!(own < 0.0);
        assert!(row.iter().all(|x| *x >= own - 1e-12));
    }
    for kw in [1.0, 2.0] {
        let mut exporting = c.clone();
        for &k in &s.loads {
            exporting.loads[k].kw = -kw;
        }
        let sol = exporting.solve(&exporting.solve_options).unwrap();
        for (i, &k) in s.loads.iter().enumerate() {
            let l = &exporting.loads[k];
            let bus = &exporting.buses[l.terminal.bus].name;
            let b = sol.buses.iter().find(|b| &b.bus == bus).unwrap();
            let actual = b
                .nodes
                .iter()
                .find(|n| n.0 == l.terminal.nodes[0])
                .unwrap()
                .1;
            let rise: f64 = s.pu_per_kw[i].iter().map(|x| -x * kw).sum();
            let err = (actual - s.vm_pu[i] - rise).abs();
            assert!(
                err <= 0.15 * (actual - s.vm_pu[i]).abs() + 1e-4,
                "home {i} at {kw} kW: {actual:.4} pu, predicted {:.4}",
                s.vm_pu[i] + rise
            );
        }
    }
}
