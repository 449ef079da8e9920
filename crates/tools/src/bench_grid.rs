//! `gridmesh bench grid`: AC power flow on every MATPOWER case of the shared data and on a
//! generated radial feeder, with pandapower on the same cases side by side in one run.
//!
//! Both sides solve by Newton-Raphson from a flat start to a 1e-8 mismatch and are timed from a
//! network already in memory to the solved voltages and flows (ours: the admittance matrix,
//! Jacobians, sparse LU and branch flows; pandapower: its `runpp`, numba on, after one warm-up run so
//! JIT compilation is not counted). The generated feeder is also solved by our backward/forward
//! sweep. Each time is the median of `repeat` runs.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use gridmesh_grid::{
    generated_radial_feeder, newton_raphson, parse_case, write_case, Network, NewtonRaphson,
    PowerFlowOptions, RadialFeeder,
};
use serde::Serialize;

#[derive(Clone, Debug)]
pub struct GridBenchOptions {
    /// The folder of `*.m` cases (`../shared/data/grid`).
    pub cases: Option<PathBuf>,
    /// Buses of the generated radial feeder (0 skips it).
    pub radial_buses: usize,
    pub repeat: usize,
    /// The interop venv's Python, for pandapower; None skips the peer.
    pub python: Option<PathBuf>,
}

#[derive(Clone, Debug, Serialize)]
pub struct GridBenchRow {
    pub case: String,
    pub buses: usize,
    pub branches: usize,
    /// `newton-raphson` or `sweep`.
    pub method: &'static str,
    pub iterations: usize,
    pub gridmesh_ms: f64,
    /// Newton-Raphson on a prepared network (`NewtonRaphson`: the admittance matrix, the
    /// Jacobian's pattern and ordering kept from a first solve), as lightsim2grid keeps its own.
    pub gridmesh_prepared_ms: Option<f64>,
    pub pandapower_ms: Option<f64>,
    /// pandapower's time over ours.
    pub speedup: Option<f64>,
    /// lightsim2grid's `ac_pf` (KLU, its analysis kept).
    pub lightsim2grid_ms: Option<f64>,
    /// lightsim2grid's time over ours prepared.
    pub lightsim2grid_ratio: Option<f64>,
    /// power-grid-model's iterative current method (the sweep's counterpart).
    pub pgm_ms: Option<f64>,
    /// power-grid-model's time over our sweep.
    pub pgm_ratio: Option<f64>,
}

impl std::fmt::Display for GridBenchRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:<16} {:>6} buses  {:<14} {:>2} it  gridmesh {:>9.3} ms",
            self.case, self.buses, self.method, self.iterations, self.gridmesh_ms
        )?;
        if let Some(p) = self.gridmesh_prepared_ms {
            write!(f, " (prepared {p:>8.3})")?;
        }
        if let (Some(p), Some(s)) = (self.pandapower_ms, self.speedup) {
            write!(f, "  pandapower {p:>9.3} ms  {s:>6.1}x")?;
        }
        if let (Some(l), Some(r)) = (self.lightsim2grid_ms, self.lightsim2grid_ratio) {
            write!(f, "  lightsim2grid {l:>8.3} ms  {r:>5.2}x")?;
        }
        if let (Some(p), Some(r)) = (self.pgm_ms, self.pgm_ratio) {
            write!(f, "  power-grid-model {p:>8.3} ms  {r:>5.2}x")?;
        }
        Ok(())
    }
}

/// The shared data folder (`gridmesh_refdata`: `GRIDMESH_SHARED_DATA`, else `../shared/data`).
pub fn shared_data_dir() -> PathBuf {
    gridmesh_refdata::dir()
}

/// The median of `repeat` runs of `f`, in ms.
pub(crate) fn median_ms(repeat: usize, mut f: impl FnMut()) -> f64 {
    let mut times: Vec<Duration> = (0..repeat.max(1))
        .map(|_| {
            let started = Instant::now();
            f();
            started.elapsed()
        })
        .collect();
    times.sort();
    times[times.len() / 2].as_secs_f64() * 1e3
}

/// Runs the benchmark; `progress` gets one line per finished row.
pub fn run(
    opts: &GridBenchOptions,
    mut progress: impl FnMut(&GridBenchRow),
) -> anyhow::Result<Vec<GridBenchRow>> {
    let mut cases: Vec<(String, PathBuf, Network)> = Vec::new();
    if let Some(dir) = &opts.cases {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .with_context(|| format!("reading {}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "m"))
            .collect();
        files.sort();
        for path in files {
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            let net = parse_case(&text).with_context(|| format!("in {}", path.display()))?;
            let name = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            cases.push((name, path, net));
        }
        cases.sort_by_key(|c| c.2.buses.len());
    }
    let scratch = tempfile::tempdir().context("a scratch folder for the generated feeder")?;
    if opts.radial_buses >= 2 {
        let net = generated_radial_feeder(opts.radial_buses, 42);
        let path = scratch.path().join(format!("{}.m", net.name));
        std::fs::write(&path, write_case(&net))?;
        cases.push((net.name.clone(), path, net));
    }
    if cases.is_empty() {
        bail!("no cases: neither a case folder nor a generated feeder");
    }
    let peer = match &opts.python {
        Some(python) => Some(pandapower_times(python, opts.repeat, &cases)?),
        None => None,
    };
    // power-grid-model's iterative current on the radial feeders, beside our sweep.
    let radial: Vec<&PathBuf> = cases
        .iter()
        .filter(|c| RadialFeeder::new(&c.2).is_ok())
        .map(|c| &c.1)
        .collect();
    let pgm: Option<serde_json::Value> = match (&opts.python, radial.is_empty()) {
        (Some(python), false) => {
            let mut args = vec!["radial".into(), opts.repeat.max(1).to_string().into()];
            args.extend(radial.iter().map(|p| p.as_os_str().to_owned()));
            Some(crate::run_peer::<_, std::ffi::OsString>(
                python,
                "scripts/interop/pgm_peer.py",
                args,
            )?)
        }
        _ => None,
    };
    let pf_opts = PowerFlowOptions::default();
    let mut rows = Vec::new();
    for (i, (name, path, net)) in cases.iter().enumerate() {
        let theirs = peer.as_ref().map(|p| p[i].0);
        let pgm_ms = pgm.as_ref().and_then(|v| {
            v[path.to_string_lossy().as_ref()]["median_seconds"]
                .as_f64()
                .map(|s| s * 1e3)
        });
        let lightsim = peer.as_ref().and_then(|p| p[i].1);
        let mut push = |method: &'static str,
                        iterations: usize,
                        ours: f64,
                        prepared: Option<f64>,
                        theirs: Option<f64>| {
            let ls = if method == "newton-raphson" {
                lightsim
            } else {
                None
            };
            let row = GridBenchRow {
                case: name.clone(),
                buses: net.buses.len(),
                branches: net.branches.len(),
                method,
                iterations,
                gridmesh_ms: ours,
                gridmesh_prepared_ms: prepared,
                pandapower_ms: theirs,
                speedup: theirs.map(|t| t / ours),
                lightsim2grid_ms: ls,
                lightsim2grid_ratio: ls.zip(prepared).map(|(l, p)| l / p),
                pgm_ms: pgm_ms.filter(|_| method == "sweep"),
                pgm_ratio: pgm_ms.filter(|_| method == "sweep").map(|p| p / ours),
            };
            progress(&row);
            rows.push(row);
        };
        let pf = newton_raphson(net, &pf_opts).with_context(|| format!("power flow on {name}"))?;
        let ours = median_ms(opts.repeat, || {
            std::hint::black_box(newton_raphson(net, &pf_opts).ok());
        });
        let mut model = NewtonRaphson::new(net)?;
        model.solve(&pf_opts)?;
        let prepared = median_ms(opts.repeat, || {
            std::hint::black_box(model.solve(&pf_opts).ok());
        });
        push(
            "newton-raphson",
            pf.iterations,
            ours,
            Some(prepared),
            theirs,
        );
        let Ok(feeder) = RadialFeeder::new(net) else {
            continue;
        };
        // Operating envelopes for every load bus of a radial feeder (what the grid operator
        // computes before each gate closure): sensitivities plus the two verified corners.
        let homes: Vec<usize> = (0..net.buses.len())
            .filter(|&b| net.buses[b].kind == gridmesh_grid::BusKind::Pq)
            .collect();
        let envelopes = || {
            gridmesh_grid::operating_envelopes(
                net,
                &homes,
                &gridmesh_grid::EnvelopeOptions::default(),
            )
        };
        if let Ok(env) = envelopes() {
            let ours = median_ms(opts.repeat.min(5), || {
                std::hint::black_box(envelopes().ok());
            });
            push("envelopes", env.rounds.0 + env.rounds.1, ours, None, None);
        }
        let pf = feeder.solve(net, &pf_opts)?;
        let ours = median_ms(opts.repeat, || {
            std::hint::black_box(feeder.solve(net, &pf_opts).ok());
        });
        push("sweep", pf.iterations, ours, None, theirs);
    }
    Ok(rows)
}

/// pandapower's median `runpp` time per case and lightsim2grid's `ac_pf`, in ms, in the order
/// given.
fn pandapower_times(
    python: &Path,
    repeat: usize,
    cases: &[(String, PathBuf, Network)],
) -> anyhow::Result<Vec<(f64, Option<f64>)>> {
    let mut args: Vec<std::ffi::OsString> = vec!["bench".into(), repeat.max(1).to_string().into()];
    args.extend(cases.iter().map(|c| c.1.as_os_str().to_owned()));
    let v = crate::run_peer(python, "scripts/interop/pandapower_peer.py", args)?;
    cases
        .iter()
        .map(|c| {
            let r = &v[c.1.to_string_lossy().as_ref()];
            let pp = r["median_seconds"]
                .as_f64()
                .map(|s| s * 1e3)
                .with_context(|| format!("pandapower gave no time for {}", c.0))?;
            Ok((pp, r["lightsim2grid_seconds"].as_f64().map(|s| s * 1e3)))
        })
        .collect()
}
