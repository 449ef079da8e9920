//! Quasi-static time series: the circuit solved at each step with every load at its load
//! shape's multiplier for that time (OpenDSS's `yearly` mode: step `k` at hour `k × step`), the
//! previous step's voltages as the first guess and `Y` factorised once.

use faer::{c64, Accum, Mat, Par};

use super::solve::{magnitude_change, report, System};
use super::{Circuit, Solution, SolveError, SolveOptions};

/// What one step of a time series leaves: its extremes and its power balance.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Step {
    /// 1 for the first step.
    pub step: usize,
    pub hour: f64,
    /// The lowest and highest node voltage in pu (phases 1-3 of every bus).
    pub vmin_pu: f64,
    pub vmax_pu: f64,
    pub losses_kw: f64,
    pub total_power_kw: f64,
    pub iterations: usize,
}

/// A day (or any run) of steps.
#[derive(Clone, Debug, PartialEq)]
pub struct TimeSeries {
    pub steps: Vec<Step>,
    /// The full solutions at the steps asked for, in the order asked.
    pub snapshots: Vec<(usize, Solution)>,
}

/// Most entries of the dense matrices the reduced iteration keeps (`nodes × load nodes`); a
/// larger circuit iterates on the whole sparse system instead.
pub const MAX_REDUCED_ENTRIES: usize = 4_000_000;

/// Steps whose voltages are recovered together, by one matrix product.
const BATCH_STEPS: usize = 64;

/// The fixed point on the loads' nodes alone: `V_A = V0_A + Z_AA J(V_A)` where `V0 = Y⁻¹ I_source`
/// and `Z_AA` is `Y⁻¹` between the nodes loads inject at (and the sources' nodes, for their
/// power). The same iterates as the whole system's (only the loads' injections change from one
/// to the next), at a cost that grows with the number of load nodes squared instead of with the
/// network; every other node follows from the converged injections, `V = V0 + Z J`, for many
/// steps at once.
struct Reduced {
    active: Vec<usize>,
    /// Where each node is in `active` (`usize::MAX`: not there).
    position: Vec<usize>,
    /// `Y⁻¹` at all nodes (rows) per active node (columns).
    z: Mat<c64>,
    z_aa: Mat<c64>,
    v0: Vec<c64>,
}

impl Reduced {
    fn new(system: &mut System) -> Result<Option<Reduced>, SolveError> {
        let mut active = system.load_nodes();
        active.extend(system.source_nodes());
        active.sort_unstable();
        active.dedup();
        let n = system.nodes.len();
        if active.is_empty() || n.saturating_mul(active.len()) > MAX_REDUCED_ENTRIES {
            return Ok(None);
        }
        let z = system.impedance_columns(&active)?;
        let z_aa = Mat::from_fn(active.len(), active.len(), |r, c| z[(active[r], c)]);
        let mut position = vec![usize::MAX; n];
        for (p, &k) in active.iter().enumerate() {
            position[k] = p;
        }
        let v0 = system.direct()?;
        Ok(Some(Reduced {
            active,
            position,
            z,
            z_aa,
            v0,
        }))
    }

    /// Iterates on the active nodes from `va` to the fixed point; leaves the injections it
    /// converged with in `j`.
    fn iterate(
        &self,
        system: &System,
        va: &mut [c64],
        j: &mut Mat<c64>,
        opts: &SolveOptions,
    ) -> Result<usize, SolveError> {
        let a = self.active.len();
        let mut next = Mat::<c64>::zeros(a, 1);
        let mut change = f64::INFINITY;
        for iteration in 1..=opts.max_iterations {
            j.col_mut(0).iter_mut().for_each(|x| *x = c64::ZERO);
            system.load_injections(
                |k| va[self.position[k]],
                |k, i| j[(self.position[k], 0)] += i,
            );
            faer::linalg::matmul::matmul(
                &mut next,
                Accum::Replace,
                &self.z_aa,
                &*j,
                c64::ONE,
                Par::Seq,
            );
            change = 0.0;
            for (p, &k) in self.active.iter().enumerate() {
                let new = self.v0[k] + next[(p, 0)];
                change = change.max(magnitude_change(new, va[p], system.base_v[k]));
                va[p] = new;
            }
            if !change.is_finite() {
                break;
            }
            if change <= opts.tolerance_pu {
                return Ok(iteration);
            }
        }
        Err(SolveError::Diverged {
            iterations: opts.max_iterations,
            change_pu: change,
        })
    }

    /// Every node's voltage at the steps whose injections are the columns of `j`: `V0 + Z J`,
    /// the active nodes as they converged.
    fn recover(&self, j: &Mat<c64>, va: &[Vec<c64>]) -> Mat<c64> {
        let mut all = Mat::<c64>::zeros(self.z.nrows(), j.ncols());
        faer::linalg::matmul::matmul(&mut all, Accum::Replace, &self.z, j, c64::ONE, Par::Seq);
        for c in 0..j.ncols() {
            for (k, v0) in self.v0.iter().enumerate() {
                all[(k, c)] += *v0;
            }
            for (p, &k) in self.active.iter().enumerate() {
                all[(k, c)] = va[c][p];
            }
        }
        all
    }
}

/// A step solved on the active nodes, waiting for its other nodes.
struct Pending {
    step: usize,
    hour: f64,
    iterations: usize,
    source: c64,
    loads: c64,
    va: Vec<c64>,
}

impl Circuit {
    /// Each load's and then each generator's `(p, q)` multiplier at `hour`: its shape's (or 1
    /// without one), loads' times the circuit's load multiplier; an actual-kW shape is turned
    /// into a multiplier of the rating.
    pub fn load_multipliers_at(&self, hour: f64) -> Vec<(f64, f64)> {
        let mult = |l: &super::Load, scale: f64| match l.shape.map(|s| &self.load_shapes[s]) {
            None => (scale, scale),
            Some(shape) => {
                let (p, q) = shape.at_hour(hour);
                if shape.use_actual {
                    let pm = if l.kw != 0.0 { p / l.kw.abs() } else { 0.0 };
                    let qm = if q != 0.0 && l.kvar != 0.0 {
                        q / l.kvar.abs()
                    } else if l.pf_given {
                        pm
                    } else {
                        0.0
                    };
                    (pm, qm)
                } else {
                    (p * scale, q * scale)
                }
            }
        };
        self.loads
            .iter()
            .map(|l| mult(l, self.load_mult))
            .chain(self.generators.iter().map(|g| mult(g, 1.0)))
            .collect()
    }

    /// Solves `steps` steps of `step_h` hours each, the first at `step_h`; keeps the full
    /// solution at the steps in `snapshots` (1-based).
    pub fn time_series(
        &self,
        steps: usize,
        step_h: f64,
        opts: &SolveOptions,
        snapshots: &[usize],
    ) -> Result<TimeSeries, SolveError> {
        if self.buses.iter().all(|b| b.kv_base_ln == 0.0) {
            return Err(SolveError::NoVoltageBases);
        }
        let mut system = System::new(self, false);
        let mut v = system.direct()?;
        let mut reduced = Reduced::new(&mut system)?;
        let phase_nodes: Vec<(usize, f64)> = system
            .nodes
            .iter()
            .enumerate()
            .filter(|(k, &(_, n))| (1..=3).contains(&n) && system.base_v[*k] > 0.0)
            .map(|(k, _)| (k, 1.0 / (system.base_v[k] * system.base_v[k])))
            .collect();
        let extremes = |v: &[c64]| -> (f64, f64) {
            let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
            for &(k, inv_base2) in &phase_nodes {
                let pu2 = v[k].norm_sqr() * inv_base2;
                lo = lo.min(pu2);
                hi = hi.max(pu2);
            }
            (lo.sqrt(), hi.sqrt())
        };
        let mut out = TimeSeries {
            steps: Vec::with_capacity(steps),
            snapshots: Vec::new(),
        };
        let finish = |out: &mut TimeSeries, p: &Pending, (vmin, vmax): (f64, f64)| {
            out.steps.push(Step {
                step: p.step,
                hour: p.hour,
                vmin_pu: vmin,
                vmax_pu: vmax,
                losses_kw: (p.source.re - p.loads.re) / 1000.0,
                total_power_kw: p.source.re / 1000.0,
                iterations: p.iterations,
            });
        };
        // Without controls no step needs every node before the next: steps are solved on
        // the active nodes and recovered many at a time.
        let controlled = !self.regulators.is_empty() || !self.cap_controls.is_empty();
        if let (Some(r), false) = (&reduced, controlled) {
            let a = r.active.len();
            let mut va: Vec<c64> = r.active.iter().map(|&k| v[k]).collect();
            let mut j = Mat::<c64>::zeros(a, 1);
            let mut batch: Vec<Pending> = Vec::with_capacity(BATCH_STEPS);
            let mut injections = Mat::<c64>::zeros(a, BATCH_STEPS);
            let at = |va: &[c64], k: usize| va[r.position[k]];
            for step in 1..=steps {
                let hour = step as f64 * step_h;
                system.set_load_multipliers(&self.load_multipliers_at(hour));
                let iterations = r.iterate(&system, &mut va, &mut j, opts)?;
                let c = batch.len();
                for p in 0..a {
                    injections[(p, c)] = j[(p, 0)];
                }
                batch.push(Pending {
                    step,
                    hour,
                    iterations,
                    source: system.source_power_at(|k| at(&va, k)),
                    loads: system.load_power_at(|k| at(&va, k)),
                    va: va.clone(),
                });
                if batch.len() == BATCH_STEPS || step == steps {
                    let cols = batch.len();
                    let jm = injections.subcols(0, cols).to_owned();
                    let vas: Vec<Vec<c64>> = batch.iter().map(|p| p.va.clone()).collect();
                    let all = r.recover(&jm, &vas);
                    for (c, p) in batch.drain(..).enumerate() {
                        let col = all
                            .col(c)
                            .try_as_col_major()
                            .expect("a matrix's column is contiguous")
                            .as_slice();
                        finish(&mut out, &p, extremes(col));
                        if snapshots.contains(&p.step) {
                            let v: Vec<c64> = col.to_vec();
                            out.snapshots
                                .push((p.step, report(&system, v, true, p.iterations, 1)));
                        }
                    }
                }
            }
            return Ok(out);
        }
        for step in 1..=steps {
            let hour = step as f64 * step_h;
            system.set_load_multipliers(&self.load_multipliers_at(hour));
            let mut iterations = 0;
            let mut control_iterations = 0;
            for ci in 1..=opts.max_control_iterations.max(1) {
                control_iterations = ci;
                iterations += match &reduced {
                    Some(r) => {
                        let mut va: Vec<c64> = r.active.iter().map(|&k| v[k]).collect();
                        let mut j = Mat::<c64>::zeros(r.active.len(), 1);
                        let its = r.iterate(&system, &mut va, &mut j, opts)?;
                        let all = r.recover(&j, &[va]);
                        v.iter_mut()
                            .zip(all.col(0).iter())
                            .for_each(|(x, y)| *x = *y);
                        its
                    }
                    None => system.solve_fixed_point(&mut v, opts)?,
                };
                if ci >= opts.max_control_iterations {
                    system.controls_settled = false;
                    break;
                }
                if !system.control(&v) {
                    system.controls_settled = true;
                    break;
                }
                // A tap moved: Y and so the reduced system are new.
                reduced = Reduced::new(&mut system)?;
            }
            let p = Pending {
                step,
                hour,
                iterations,
                source: system.source_power(&v),
                loads: system.load_power(&v),
                va: vec![],
            };
            finish(&mut out, &p, extremes(&v));
            if snapshots.contains(&step) {
                out.snapshots.push((
                    step,
                    report(&system, v.clone(), true, iterations, control_iterations),
                ));
            }
        }
        Ok(out)
    }
}
