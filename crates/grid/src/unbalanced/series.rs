//! Quasi-static time series: the circuit solved at each step with every load at its load
//! shape's multiplier for that time (OpenDSS's `yearly` mode: step `k` at hour `k × step`), the
//! previous step's voltages as the first guess and `Y` factorised once.

use faer::{c64, Accum, Mat, Par};

use super::solve::{report, System};
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

/// The fixed point on the loads' nodes alone: `V_A = V0_A + Z_AA J(V_A)` where `V0 = Y⁻¹ I_source`
/// and `Z_AA` is `Y⁻¹` between the nodes loads inject at. The same iterates as the whole
/// system's (only the loads' injections change from one to the next), at a cost that grows
/// with the number of load nodes squared instead of with the network; every other node follows
/// from the converged injections by one product.
struct Reduced {
    active: Vec<usize>,
    /// Where each node is in `active` (`usize::MAX`: not there).
    position: Vec<usize>,
    /// `Y⁻¹` at all nodes (rows) per load node (columns).
    z: Mat<c64>,
    z_aa: Mat<c64>,
    v0: Vec<c64>,
}

impl Reduced {
    fn new(system: &mut System) -> Result<Option<Reduced>, SolveError> {
        let active = system.load_nodes();
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
        let v0 = system.sources_only()?;
        Ok(Some(Reduced {
            active,
            position,
            z,
            z_aa,
            v0,
        }))
    }

    /// Iterates on the load nodes from `v` and writes every node's voltage back to `v`.
    fn solve(
        &self,
        system: &System,
        v: &mut [c64],
        opts: &SolveOptions,
    ) -> Result<usize, SolveError> {
        let a = self.active.len();
        let mut va: Vec<c64> = self.active.iter().map(|&k| v[k]).collect();
        let mut j = Mat::<c64>::zeros(a, 1);
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
                &j,
                c64::ONE,
                Par::Seq,
            );
            change = 0.0;
            for (p, &k) in self.active.iter().enumerate() {
                let new = self.v0[k] + next[(p, 0)];
                let base = system.base_v[k];
                let e = if base > 0.0 {
                    (new.norm() - va[p].norm()).abs() / base
                } else {
                    (1.0 - va[p].norm() / new.norm()).abs()
                };
                change = change.max(e);
                va[p] = new;
            }
            if !change.is_finite() {
                break;
            }
            if change <= opts.tolerance_pu {
                // Every node from the injections the load nodes converged with.
                let mut all = Mat::<c64>::zeros(v.len(), 1);
                faer::linalg::matmul::matmul(
                    &mut all,
                    Accum::Replace,
                    &self.z,
                    &j,
                    c64::ONE,
                    Par::Seq,
                );
                for (k, x) in v.iter_mut().enumerate() {
                    *x = self.v0[k] + all[(k, 0)];
                }
                for (p, &k) in self.active.iter().enumerate() {
                    v[k] = va[p];
                }
                return Ok(iteration);
            }
        }
        Err(SolveError::Diverged {
            iterations: opts.max_iterations,
            change_pu: change,
        })
    }
}

impl Circuit {
    /// Each load's `(p, q)` multiplier at `hour`: its shape's (or 1 without one), times the
    /// circuit's load multiplier; an actual-kW shape is turned into a multiplier of the load's
    /// rating.
    pub fn load_multipliers_at(&self, hour: f64) -> Vec<(f64, f64)> {
        self.loads
            .iter()
            .map(|l| match l.shape.map(|s| &self.load_shapes[s]) {
                None => (self.load_mult, self.load_mult),
                Some(shape) => {
                    let (p, q) = shape.at_hour(hour);
                    if shape.use_actual {
                        let pm = if l.kw != 0.0 { p / l.kw } else { 0.0 };
                        let qm = if q != 0.0 && l.kvar != 0.0 {
                            q / l.kvar
                        } else if l.pf_given {
                            pm
                        } else {
                            0.0
                        };
                        (pm, qm)
                    } else {
                        (p * self.load_mult, q * self.load_mult)
                    }
                }
            })
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
        let phase_nodes: Vec<usize> = system
            .nodes
            .iter()
            .enumerate()
            .filter(|(k, &(_, n))| (1..=3).contains(&n) && system.base_v[*k] > 0.0)
            .map(|(k, _)| k)
            .collect();
        let mut out = TimeSeries {
            steps: Vec::with_capacity(steps),
            snapshots: Vec::new(),
        };
        for step in 1..=steps {
            let hour = step as f64 * step_h;
            system.set_load_multipliers(&self.load_multipliers_at(hour));
            let mut iterations = 0;
            let mut control_iterations = 0;
            for ci in 1..=opts.max_control_iterations.max(1) {
                control_iterations = ci;
                iterations += match &reduced {
                    Some(r) => r.solve(&system, &mut v, opts)?,
                    None => system.solve_fixed_point(&mut v, opts)?,
                };
                if ci >= opts.max_control_iterations || !system.control(&v) {
                    break;
                }
                // A tap moved: Y and so the reduced system are new.
                reduced = Reduced::new(&mut system)?;
            }
            let (mut vmin, mut vmax) = (f64::INFINITY, f64::NEG_INFINITY);
            for &k in &phase_nodes {
                let pu = v[k].norm() / system.base_v[k];
                vmin = vmin.min(pu);
                vmax = vmax.max(pu);
            }
            let source: c64 = system.source_power(&v);
            let loads = system.load_power(&v);
            out.steps.push(Step {
                step,
                hour,
                vmin_pu: vmin,
                vmax_pu: vmax,
                losses_kw: (source.re - loads.re) / 1000.0,
                total_power_kw: source.re / 1000.0,
                iterations,
            });
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

#[cfg(test)]
mod probe {
    use super::*;

    #[test]
    #[ignore]
    fn probe_costs() {
        let path = std::path::PathBuf::from("/work/shared/data/dss/ieee-eu-lv/Master.dss");
        let circuit = Circuit::read_dss(&path).unwrap();
        let mut system = System::new(&circuit, false);
        let t = std::time::Instant::now();
        for _ in 0..100 {
            system.factorise_for_probe();
        }
        eprintln!("factorise {:?}", t.elapsed() / 100);
        let mut v = system.direct().unwrap();
        let t = std::time::Instant::now();
        for _ in 0..100 {
            system.solve_for_probe(&mut v);
        }
        eprintln!(
            "solve {:?}; nodes {}; {}",
            t.elapsed() / 100,
            system.nodes.len(),
            system.probe_nnz()
        );
    }
}
