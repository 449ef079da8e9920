//! `gridmesh bench feeder`: the unbalanced power flow beside OpenDSS and power-grid-model in
//! one run. Snapshots of the reference feeders and of generated feeders of two sizes (ours
//! prepared, as the peers' models are built, and cold from the circuit in memory; OpenDSS's
//! `solve` after `set mode=snapshot`; power-grid-model's asymmetric Newton-Raphson where it can
//! rebuild the feeder), and the European LV feeder's day at two lengths against OpenDSS's yearly
//! mode. Each time is the median of `repeat` runs.

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::Context;
use gridmesh_grid::unbalanced::{Circuit, PowerFlowModel, SolveOptions};
use serde::Serialize;

#[derive(Clone, Debug)]
pub struct FeederBenchOptions {
    pub repeat: usize,
    /// Buses of the generated feeders.
    pub generated: Vec<usize>,
    /// Steps of the European LV feeder's day (one minute each).
    pub day_steps: Vec<usize>,
    /// The interop venv's Python, for OpenDSS and power-grid-model; None skips the peers.
    pub python: Option<PathBuf>,
}

#[derive(Clone, Debug, Serialize)]
pub struct FeederBenchRow {
    pub case: String,
    /// `snapshot` or `day`.
    pub kind: &'static str,
    pub buses: usize,
    pub nodes: usize,
    pub steps: usize,
    /// Ours: the node voltages on a prepared model, as OpenDSS's `solve` gives them (snapshot),
    /// or the whole run (day).
    pub gridmesh_ms: f64,
    /// Ours with the report (every bus, unbalance, losses, line currents, transformer
    /// loading), as power-grid-model's result holds its nodes' and branches' (snapshot).
    pub gridmesh_report_ms: Option<f64>,
    /// Ours from the circuit in memory, element matrices and ordering included (snapshot).
    pub gridmesh_cold_ms: Option<f64>,
    pub opendss_ms: Option<f64>,
    pub pgm_ms: Option<f64>,
    /// OpenDSS's time over ours.
    pub opendss_ratio: Option<f64>,
    /// power-grid-model's time over ours with the report.
    pub pgm_ratio: Option<f64>,
}

impl std::fmt::Display for FeederBenchRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:<14} {:<8} {:>6} buses {:>6} nodes {:>5} steps  gridmesh {:>9.3} ms",
            self.case, self.kind, self.buses, self.nodes, self.steps, self.gridmesh_ms
        )?;
        if let (Some(r), Some(c)) = (self.gridmesh_report_ms, self.gridmesh_cold_ms) {
            write!(f, " (reported {r:.3}, cold {c:.3})")?;
        }
        if let (Some(o), Some(r)) = (self.opendss_ms, self.opendss_ratio) {
            write!(f, "  OpenDSS {o:>9.3} ms {r:>5.1}x")?;
        }
        if let (Some(p), Some(r)) = (self.pgm_ms, self.pgm_ratio) {
            write!(f, "  power-grid-model {p:>7.3} ms {r:>5.1}x")?;
        }
        Ok(())
    }
}

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

/// An OpenDSS master for a radial feeder of `buses` buses (deterministic per seed): a Dyn
/// substation, a regulator with line-drop compensation, three-, two- and one-phase laterals on
/// matrix and sequence line codes (with and without charging), wye and delta loads of models 1,
/// 2 and 5, shunt capacitors and an LV transformer; solved at 1e-10.
pub fn generated_dss_feeder(seed: u64, buses: usize, hz: u32) -> String {
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
    debug_assert!(n_loads > 0);
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

/// Runs the benchmark; `progress` gets one line per finished row.
pub fn run(
    opts: &FeederBenchOptions,
    mut progress: impl FnMut(&FeederBenchRow),
) -> anyhow::Result<Vec<FeederBenchRow>> {
    let data = gridmesh_refdata::dir().join("dss");
    let scratch = tempfile::tempdir().context("a scratch folder for the generated feeders")?;
    let mut cases: Vec<(String, PathBuf, bool)> = vec![
        (
            "ieee13".into(),
            data.join("ieee13/IEEE13Nodeckt.dss"),
            false,
        ),
        (
            "ieee-eu-lv".into(),
            data.join("ieee-eu-lv/Master.dss"),
            true,
        ),
    ];
    for (k, &buses) in opts.generated.iter().enumerate() {
        let path = scratch.path().join(format!("generated{buses}.dss"));
        std::fs::write(&path, generated_dss_feeder(k as u64 + 11, buses, 60))?;
        cases.push((format!("generated{buses}"), path, false));
    }
    let repeat = opts.repeat.max(1).to_string();
    let paths: Vec<String> = cases
        .iter()
        .map(|c| c.1.to_string_lossy().into_owned())
        .collect();
    let (opendss, pgm) = match &opts.python {
        Some(python) => {
            let mut args = vec!["time".to_string(), repeat.clone()];
            args.extend(paths.iter().cloned());
            let o = crate::run_peer(python, "scripts/interop/opendss_peer.py", &args)?;
            // power-grid-model takes the feeders it can rebuild (three-phase lines).
            let mut args = vec!["time".to_string(), repeat.clone()];
            args.extend(
                cases
                    .iter()
                    .filter(|c| c.2)
                    .map(|c| c.1.to_string_lossy().into_owned()),
            );
            let p = crate::run_peer(python, "scripts/interop/pgm_peer.py", &args)?;
            (Some(o), Some(p))
        }
        None => (None, None),
    };
    let solve = SolveOptions::default();
    let mut rows = Vec::new();
    for (i, (name, path, _)) in cases.iter().enumerate() {
        let circuit =
            Circuit::read_dss(path).with_context(|| format!("reading {}", path.display()))?;
        let mut model = PowerFlowModel::new(&circuit)?;
        let sol = model.solve(&solve)?;
        let ours = crate::bench_grid::median_ms(opts.repeat, || {
            std::hint::black_box(model.solve_voltages(&solve).is_ok());
        });
        let reported = crate::bench_grid::median_ms(opts.repeat, || {
            std::hint::black_box(model.solve(&solve).ok());
        });
        let cold = crate::bench_grid::median_ms(opts.repeat, || {
            std::hint::black_box(circuit.solve(&solve).ok());
        });
        let key = &paths[i];
        let seconds = |v: &Option<serde_json::Value>| {
            v.as_ref()
                .and_then(|v| v[key.as_str()]["median_seconds"].as_f64())
                .map(|s| s * 1e3)
        };
        let (o, p) = (seconds(&opendss), seconds(&pgm));
        let row = FeederBenchRow {
            case: name.clone(),
            kind: "snapshot",
            buses: circuit.buses.len(),
            nodes: sol.nodes.len(),
            steps: 1,
            gridmesh_ms: ours,
            gridmesh_report_ms: Some(reported),
            gridmesh_cold_ms: Some(cold),
            opendss_ms: o,
            pgm_ms: p,
            opendss_ratio: o.map(|o| o / ours),
            pgm_ratio: p.map(|p| p / reported),
        };
        progress(&row);
        rows.push(row);
    }
    let lv = &cases[1];
    let circuit = Circuit::read_dss(&lv.1)?;
    for &steps in &opts.day_steps {
        let runs = opts.repeat.clamp(1, 5);
        let ours = crate::bench_grid::median_ms(runs, || {
            std::hint::black_box(circuit.time_series(steps, 1.0 / 60.0, &solve, &[]).ok());
        });
        let theirs = match &opts.python {
            Some(python) => {
                let v = crate::run_peer(
                    python,
                    "scripts/interop/opendss_peer.py",
                    &[
                        "day".into(),
                        lv.1.to_string_lossy().into_owned(),
                        steps.to_string(),
                        runs.to_string(),
                    ],
                )?;
                v["median_seconds"].as_f64().map(|s| s * 1e3)
            }
            None => None,
        };
        let row = FeederBenchRow {
            case: lv.0.clone(),
            kind: "day",
            buses: circuit.buses.len(),
            nodes: 0,
            steps,
            gridmesh_ms: ours,
            gridmesh_report_ms: None,
            gridmesh_cold_ms: None,
            opendss_ms: theirs,
            pgm_ms: None,
            opendss_ratio: theirs.map(|t| t / ours),
            pgm_ratio: None,
        };
        progress(&row);
        rows.push(row);
    }
    Ok(rows)
}
