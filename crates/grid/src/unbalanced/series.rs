//! Quasi-static time series: the circuit solved at each step with every load at its load
//! shape's multiplier for that time (OpenDSS's `yearly` mode: step `k` at hour `k × step`), the
//! previous step's voltages as the first guess and `Y` factorised once.

use faer::c64;

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
                iterations += system.solve_fixed_point(&mut v, opts)?;
                if ci >= opts.max_control_iterations || !system.control(&v) {
                    break;
                }
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
