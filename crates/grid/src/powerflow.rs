//! AC power flow by Newton-Raphson in polar coordinates, with a sparse Jacobian and faer's sparse
//! LU, for any topology.
//!
//! The bus admittance matrix and the equations follow MATPOWER's formulation: each branch is a pi
//! model with an ideal transformer `tap · e^(j shift)` at its `from` end; bus shunts are `(Gs + j
//! Bs) / baseMVA`; the injections are the in-service generators minus the loads; generator voltage
//! set points fix `|V|` at PV and slack buses. Reactive limits are not enforced (as in the
//! reference results).

use faer::dyn_stack::{MemBuffer, MemStack};
use faer::sparse::linalg::lu::{factorize_symbolic_lu, LuSymbolicParams, NumericLu, SymbolicLu};
use faer::sparse::linalg::SupernodalThreshold;
use faer::sparse::{Pair, SparseColMat, SymbolicSparseColMat};
use faer::Mat;
use faer::Par;

use crate::complex::C;
use crate::network::{BusKind, Network};

/// Settings of the solver.
#[derive(Clone, Copy, Debug)]
pub struct PowerFlowOptions {
    /// Largest active or reactive mismatch accepted, per unit (MATPOWER's default 1e-8).
    pub tolerance_pu: f64,
    pub max_iterations: usize,
}

impl Default for PowerFlowOptions {
    fn default() -> Self {
        PowerFlowOptions {
            tolerance_pu: 1e-8,
            max_iterations: 20,
        }
    }
}

/// Why power flow has no answer.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PowerFlowError {
    #[error("the network has no slack bus (type 3): nothing balances it")]
    NoSlack,
    #[error("power flow did not converge in {iterations} iterations (largest mismatch {mismatch_pu:.3e} pu): the case may be infeasible or badly conditioned")]
    Diverged { iterations: usize, mismatch_pu: f64 },
    #[error("the Jacobian is singular at iteration {0}: part of the network may be disconnected from the slack")]
    Singular(usize),
}

/// A converged power flow.
#[derive(Clone, Debug, PartialEq)]
pub struct PowerFlow {
    pub iterations: usize,
    /// The largest mismatch left, per unit.
    pub mismatch_pu: f64,
    /// Per bus, in [`Network::buses`] order.
    pub vm_pu: Vec<f64>,
    pub va_deg: Vec<f64>,
    /// Sum of the branch losses (MATPOWER's definition).
    pub losses_mw: f64,
    /// Per branch, in [`Network::branches`] order (zero for branches out of service).
    pub branches: Vec<BranchFlow>,
}

/// The power entering a branch at each end (negative: leaving it there).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct BranchFlow {
    pub p_from_mw: f64,
    pub q_from_mvar: f64,
    pub p_to_mw: f64,
    pub q_to_mvar: f64,
}

impl BranchFlow {
    /// Apparent power at the `from` end.
    pub fn from_mva(&self) -> f64 {
        self.p_from_mw.hypot(self.q_from_mvar)
    }
    /// Apparent power at the `to` end.
    pub fn to_mva(&self) -> f64 {
        self.p_to_mw.hypot(self.q_to_mvar)
    }
    /// The larger of the two ends: what a rating limits.
    pub fn max_mva(&self) -> f64 {
        self.from_mva().max(self.to_mva())
    }
    /// Active losses in the branch.
    pub fn losses_mw(&self) -> f64 {
        self.p_from_mw + self.p_to_mw
    }
}

impl PowerFlow {
    /// The bus with the lowest voltage: (index, vm).
    pub fn min_voltage(&self) -> (usize, f64) {
        self.vm_pu
            .iter()
            .copied()
            .enumerate()
            .fold(
                (0, f64::INFINITY),
                |m, (i, v)| if v < m.1 { (i, v) } else { m },
            )
    }
}

/// A branch's four admittances: (from-from, from-to, to-from, to-to).
pub(crate) fn branch_admittances(net: &Network, k: usize) -> (C, C, C, C) {
    let br = &net.branches[k];
    let ys = C::new(br.r_pu, br.x_pu).inv();
    let bc = C::new(0.0, br.b_pu / 2.0);
    let tap = C::polar(br.tap, br.shift_deg.to_radians());
    let ytt = ys + bc;
    let yff = ytt.scale(1.0 / (br.tap * br.tap));
    let yft = C::default() - ys / tap.conj();
    let ytf = C::default() - ys / tap;
    (yff, yft, ytf, ytt)
}

pub(crate) fn live_branch(net: &Network, k: usize) -> bool {
    let br = &net.branches[k];
    br.in_service
        && net.buses[br.from].kind != BusKind::Isolated
        && net.buses[br.to].kind != BusKind::Isolated
}

/// The bus admittance matrix, row by row: (column, value), columns sorted, duplicates summed.
fn ybus(net: &Network) -> Vec<Vec<(usize, C)>> {
    let n = net.buses.len();
    let mut rows: Vec<Vec<(usize, C)>> = vec![Vec::new(); n];
    for (i, b) in net.buses.iter().enumerate() {
        rows[i].push((
            i,
            C::new(b.shunt_mw, b.shunt_mvar).scale(1.0 / net.base_mva),
        ));
    }
    for k in 0..net.branches.len() {
        if !live_branch(net, k) {
            continue;
        }
        let (f, t) = (net.branches[k].from, net.branches[k].to);
        let (yff, yft, ytf, ytt) = branch_admittances(net, k);
        rows[f].push((f, yff));
        rows[f].push((t, yft));
        rows[t].push((f, ytf));
        rows[t].push((t, ytt));
    }
    for row in &mut rows {
        row.sort_by_key(|e| e.0);
        let mut merged: Vec<(usize, C)> = Vec::with_capacity(row.len());
        for &(c, y) in row.iter() {
            match merged.last_mut() {
                Some(last) if last.0 == c => last.1 = last.1 + y,
                _ => merged.push((c, y)),
            }
        }
        *row = merged;
    }
    rows
}

/// Solves the AC power flow of `net`.
///
/// Cost per iteration: O(nonzeros) to build the mismatch and Jacobian, plus one sparse LU
/// factorisation (near-linear on distribution feeders and sparse transmission grids).
pub fn newton_raphson(net: &Network, opts: &PowerFlowOptions) -> Result<PowerFlow, PowerFlowError> {
    NewtonRaphson::new(net)?.solve(opts)
}

/// A network ready for Newton-Raphson again and again: its bus admittance matrix, and after the
/// first solve the Jacobian's pattern and its elimination order, kept; each solve starts flat.
/// What a grid operator needs to solve one feeder under every slot's injections.
pub struct NewtonRaphson<'n> {
    net: &'n Network,
    y: Vec<Vec<(usize, C)>>,
    pairs: Vec<Pair<usize, usize>>,
    factors: Option<(crate::sparse::Symbolic, crate::sparse::Lu<f64>)>,
    /// A pivot vanished once: faer's pivoting LU from then on.
    pivoting: bool,
}

impl<'n> NewtonRaphson<'n> {
    pub fn new(net: &'n Network) -> Result<NewtonRaphson<'n>, PowerFlowError> {
        if net.slack_buses().next().is_none() {
            return Err(PowerFlowError::NoSlack);
        }
        Ok(NewtonRaphson {
            net,
            y: ybus(net),
            pairs: Vec::new(),
            factors: None,
            pivoting: false,
        })
    }

    /// The same network on faer's pivoting LU from the start (what a vanishing pivot falls back
    /// to), for tests.
    #[cfg(test)]
    fn pivoting(mut self) -> Self {
        self.pivoting = true;
        self
    }

    /// Solves from a flat start (the buses' and generators' set voltages).
    pub fn solve(&mut self, opts: &PowerFlowOptions) -> Result<PowerFlow, PowerFlowError> {
        let net = self.net;
        let y = &self.y;
        let pairs = &mut self.pairs;
        let ours = &mut self.factors;
        let pivoting = &mut self.pivoting;
        let record_pattern = pairs.is_empty();
        let n = net.buses.len();
        // Injections and initial voltages.
        let mut sbus = vec![C::default(); n];
        let mut vm: Vec<f64> = net.buses.iter().map(|b| b.vm_pu).collect();
        let mut va: Vec<f64> = net.buses.iter().map(|b| b.va_deg.to_radians()).collect();
        for (i, b) in net.buses.iter().enumerate() {
            sbus[i] = C::new(-b.load_mw, -b.load_mvar).scale(1.0 / net.base_mva);
        }
        for g in net.generators.iter().filter(|g| g.in_service) {
            sbus[g.bus] = sbus[g.bus] + C::new(g.p_mw, g.q_mvar).scale(1.0 / net.base_mva);
            if matches!(net.buses[g.bus].kind, BusKind::Pv | BusKind::Slack) {
                vm[g.bus] = g.vset_pu;
            }
        }
        // Unknowns: angles of PV and PQ buses, magnitudes of PQ buses.
        let mut ang_col = vec![usize::MAX; n];
        let mut mag_col = vec![usize::MAX; n];
        let mut cols = 0;
        for (i, b) in net.buses.iter().enumerate() {
            if matches!(b.kind, BusKind::Pv | BusKind::Pq) {
                ang_col[i] = cols;
                cols += 1;
            }
        }
        for (i, b) in net.buses.iter().enumerate() {
            if b.kind == BusKind::Pq {
                mag_col[i] = cols;
                cols += 1;
            }
        }
        // Rows use the same numbering: P of PV/PQ buses at their angle column, Q of PQ buses at
        // their magnitude column.
        let mut v: Vec<C> = (0..n).map(|i| C::polar(vm[i], va[i])).collect();
        let mut iterations = 0;
        let mut values: Vec<f64> = Vec::new();
        let mut pattern: Option<(SymbolicSparseColMat<usize>, _, SymbolicLu<usize>, MemBuffer)> =
            None;
        let mut numeric = NumericLu::<usize, f64>::new();
        loop {
            let current: Vec<C> = (0..n)
                .map(|i| {
                    y[i].iter()
                        .fold(C::default(), |acc, &(k, yik)| acc + yik * v[k])
                })
                .collect();
            let mut f = vec![0.0; cols];
            for i in 0..n {
                let mis = v[i] * current[i].conj() - sbus[i];
                if ang_col[i] != usize::MAX {
                    f[ang_col[i]] = mis.re;
                }
                if mag_col[i] != usize::MAX {
                    f[mag_col[i]] = mis.im;
                }
            }
            let mismatch = f.iter().fold(0.0f64, |m, x| m.max(x.abs()));
            if mismatch < opts.tolerance_pu {
                return Ok(finish(net, v, iterations, mismatch));
            }
            if iterations == opts.max_iterations || !mismatch.is_finite() {
                return Err(PowerFlowError::Diverged {
                    iterations,
                    mismatch_pu: mismatch,
                });
            }
            iterations += 1;
            // The Jacobian's pattern is the same at every iteration: its symbolic structure and LU
            // ordering are computed once, each iteration only refills values and refactorises.
            values.clear();
            let record = record_pattern && iterations == 1;
            for i in 0..n {
                let (rp, rq) = (ang_col[i], mag_col[i]);
                if rp == usize::MAX {
                    continue; // slack (or isolated) bus: no equation
                }
                let vi = v[i];
                let unit_i = vi.scale(1.0 / vm[i]);
                for &(k, yik) in &y[i] {
                    let yv = yik * v[k];
                    let mut ds_dva = (vi * yv.conj()).j().scale(-1.0);
                    let mut ds_dvm = vi * (yik * v[k].scale(1.0 / vm[k])).conj();
                    if k == i {
                        ds_dva = ds_dva + (vi * current[i].conj()).j();
                        ds_dvm = ds_dvm + current[i].conj() * unit_i;
                    }
                    let mut put = |r: usize, c: usize, x: f64| {
                        if record {
                            pairs.push(Pair::new(r, c));
                        }
                        values.push(x);
                    };
                    if ang_col[k] != usize::MAX {
                        put(rp, ang_col[k], ds_dva.re);
                        if rq != usize::MAX {
                            put(rq, ang_col[k], ds_dva.im);
                        }
                    }
                    if mag_col[k] != usize::MAX {
                        put(rp, mag_col[k], ds_dvm.re);
                        if rq != usize::MAX {
                            put(rq, mag_col[k], ds_dvm.im);
                        }
                    }
                }
            }
            // Our own sparse LU (minimum degree, no pivoting: the Jacobian of a power network keeps
            // its pivots on the diagonal); faer's pivoting LU if a pivot vanishes.
            if ours.is_none() && !*pivoting {
                let entries: Vec<(usize, usize)> = pairs.iter().map(|p| (p.row, p.col)).collect();
                // A bus's angle and magnitude are eliminated together: the ordering runs on the
                // buses' graph.
                let mut block_of = vec![0; cols];
                for i in 0..n {
                    for c in [ang_col[i], mag_col[i]] {
                        if c != usize::MAX {
                            block_of[c] = i;
                        }
                    }
                }
                match crate::sparse::Symbolic::new_blocked(cols, &entries, &block_of) {
                    Ok(s) => {
                        let lu = crate::sparse::Lu::new(&s);
                        *ours = Some((s, lu));
                    }
                    Err(_) => *pivoting = true,
                }
            }
            let mut dx = Mat::from_fn(cols, 1, |r, _| -f[r]);
            let mut solved = false;
            if let (Some((s, lu)), false) = (ours.as_mut(), *pivoting) {
                if lu.factorise(s, &values).is_ok() {
                    let x = dx
                        .col_mut(0)
                        .try_as_col_major_mut()
                        .expect("one column")
                        .as_slice_mut();
                    lu.solve(s, x);
                    solved = true;
                } else {
                    *pivoting = true;
                }
            }
            if !solved {
                if pattern.is_none() {
                    let (symbolic, order) =
                        SymbolicSparseColMat::try_new_from_indices(cols, cols, pairs)
                            .map_err(|_| PowerFlowError::Singular(iterations))?;
                    let lu = factorize_symbolic_lu(
                        symbolic.as_ref(),
                        LuSymbolicParams {
                            supernodal_flop_ratio_threshold: SupernodalThreshold::AUTO,
                            ..Default::default()
                        },
                    )
                    .map_err(|_| PowerFlowError::Singular(iterations))?;
                    let scratch = MemBuffer::new(
                        lu.factorize_numeric_lu_scratch::<f64>(Par::Seq, Default::default())
                            .or(lu.solve_in_place_scratch::<f64>(1, Par::Seq)),
                    );
                    pattern = Some((symbolic, order, lu, scratch));
                }
                let (symbolic, order, symbolic_lu, scratch) = pattern.as_mut().expect("set above");
                let jac = SparseColMat::new_from_argsort(symbolic.clone(), order, &values)
                    .map_err(|_| PowerFlowError::Singular(iterations))?;
                let lu = symbolic_lu
                    .factorize_numeric_lu(
                        &mut numeric,
                        jac.as_ref(),
                        Par::Seq,
                        MemStack::new(scratch),
                        Default::default(),
                    )
                    .map_err(|_| PowerFlowError::Singular(iterations))?;
                lu.solve_in_place_with_conj(
                    faer::Conj::No,
                    dx.as_mut(),
                    Par::Seq,
                    MemStack::new(scratch),
                );
            }
            for i in 0..n {
                if ang_col[i] != usize::MAX {
                    va[i] += dx[(ang_col[i], 0)];
                }
                if mag_col[i] != usize::MAX {
                    vm[i] += dx[(mag_col[i], 0)];
                }
            }
            if (0..cols).any(|r| !dx[(r, 0)].is_finite()) {
                return Err(PowerFlowError::Singular(iterations));
            }
            v = (0..n).map(|i| C::polar(vm[i], va[i])).collect();
        }
    }
}

pub(crate) fn finish(net: &Network, v: Vec<C>, iterations: usize, mismatch: f64) -> PowerFlow {
    let mut losses_mw = 0.0;
    let mut flows = vec![BranchFlow::default(); net.branches.len()];
    for (k, flow) in flows.iter_mut().enumerate() {
        if !live_branch(net, k) {
            continue;
        }
        let (f, t) = (net.branches[k].from, net.branches[k].to);
        let (yff, yft, ytf, ytt) = branch_admittances(net, k);
        let sf = v[f] * (yff * v[f] + yft * v[t]).conj();
        let st = v[t] * (ytf * v[f] + ytt * v[t]).conj();
        losses_mw += (sf + st).re * net.base_mva;
        *flow = BranchFlow {
            p_from_mw: sf.re * net.base_mva,
            q_from_mvar: sf.im * net.base_mva,
            p_to_mw: st.re * net.base_mva,
            q_to_mvar: st.im * net.base_mva,
        };
    }
    PowerFlow {
        iterations,
        mismatch_pu: mismatch,
        vm_pu: v.iter().map(|x| x.norm()).collect(),
        va_deg: v.iter().map(|x| x.im.atan2(x.re).to_degrees()).collect(),
        losses_mw,
        branches: flows,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matpower::parse_case;

    /// Our sparse LU and faer's pivoting LU (the fallback) reach the same answer, and a
    /// prepared network solves again to the same bits.
    #[test]
    fn both_factorisations_and_a_second_solve_agree() {
        let net = parse_case(&gridmesh_refdata::require_text("grid/case118.m")).unwrap();
        let opts = PowerFlowOptions::default();
        let ours = newton_raphson(&net, &opts).unwrap();
        let faer = NewtonRaphson::new(&net)
            .unwrap()
            .pivoting()
            .solve(&opts)
            .unwrap();
        assert_eq!(ours.iterations, faer.iterations);
        for (a, b) in ours.vm_pu.iter().zip(&faer.vm_pu) {
            assert!((a - b).abs() < 1e-12);
        }
        let mut model = NewtonRaphson::new(&net).unwrap();
        let first = model.solve(&opts).unwrap();
        let again = model.solve(&opts).unwrap();
        assert_eq!(first.vm_pu, again.vm_pu);
        assert_eq!(first.va_deg, again.va_deg);
    }

    /// Two buses: the slack at 1.0 pu feeding a load over one line.
    fn two_bus(load_mw: f64) -> Network {
        parse_case(&format!(
            "mpc.version = '2';\nmpc.baseMVA = 1;\nmpc.bus = [\n1 3 0 0 0 0 1 1 0 0.4 1 1.1 0.9;\n2 1 {load_mw} {q} 0 0 1 1 0 0.4 1 1.1 0.9;\n];\nmpc.gen = [\n1 0 0 10 -10 1 1 1 10 0;\n];\nmpc.branch = [\n1 2 0.01 0.02 0 0 0 0 0 0 1 -360 360;\n];\n",
            q = load_mw / 2.0
        ))
        .unwrap()
    }

    #[test]
    fn two_buses_balance_and_satisfy_kirchhoff() {
        let net = two_bus(0.5);
        let pf = newton_raphson(&net, &PowerFlowOptions::default()).unwrap();
        assert!(pf.mismatch_pu < 1e-8);
        // The current through the line: |V1 - V2| / |z| = |S2| / |V2|.
        let v1 = C::polar(pf.vm_pu[0], pf.va_deg[0].to_radians());
        let v2 = C::polar(pf.vm_pu[1], pf.va_deg[1].to_radians());
        let i = (v1 - v2) / C::new(0.01, 0.02);
        let s2 = v2 * i.conj();
        assert!(
            (s2.re - 0.5).abs() < 1e-8 && (s2.im - 0.25).abs() < 1e-8,
            "{s2:?}"
        );
        // Losses are i²r.
        assert!((pf.losses_mw - i.norm().powi(2) * 0.01).abs() < 1e-9);
        assert!(pf.vm_pu[1] < 1.0);
    }

    #[test]
    fn failures_are_errors_not_answers() {
        // Far beyond what the line can carry: no solution exists.
        let err = newton_raphson(&two_bus(50.0), &PowerFlowOptions::default()).unwrap_err();
        assert!(
            matches!(
                err,
                PowerFlowError::Diverged { .. } | PowerFlowError::Singular(_)
            ),
            "{err}"
        );
        let mut net = two_bus(0.5);
        net.buses[0].kind = BusKind::Pq;
        assert_eq!(
            newton_raphson(&net, &PowerFlowOptions::default()).unwrap_err(),
            PowerFlowError::NoSlack
        );
    }
}
