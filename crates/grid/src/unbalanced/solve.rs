//! The unbalanced power flow: each element's primitive admittance matrix over its conductors,
//! their sum as the nodal admittance matrix `Y` (faer's sparse LU, factorised once and again
//! only when a tap moves), and the fixed point `V = Y⁻¹ (I_source + I_load(V))` where each load
//! injects its nominal admittance's current less the current its model draws: the
//! current-injection method OpenDSS calls its normal solution. Regulators are sampled after a
//! converged solution and their taps moved as OpenDSS's static control loop moves them.

use std::collections::HashMap;
use std::f64::consts::PI;

use faer::c64;

use super::{
    CapControlKind, Capacitor, Circuit, Connection, Line, Load, LoadModel, Monitored, PhaseChoice,
    PtPhase, Transformer,
};
use crate::sparse::{SparseError, Symbolic};

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SolveError {
    #[error("the network's admittance matrix is singular: a node has no path to the source or ground (check the buses of `{0}`)")]
    Singular(String),
    #[error("the power flow did not converge in {iterations} iterations (largest voltage change {change_pu:e} pu)")]
    Diverged { iterations: usize, change_pu: f64 },
    #[error("no bus has a voltage base: give the script `Set voltagebases=[...]`")]
    NoVoltageBases,
}

/// How hard to solve.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SolveOptions {
    /// Largest change of any node's voltage magnitude between two iterations, per unit of its
    /// base, at which the solution has converged.
    pub tolerance_pu: f64,
    pub max_iterations: usize,
    /// Solutions with regulators moving taps in between (1: taps stay where they are).
    pub max_control_iterations: usize,
}

impl Default for SolveOptions {
    fn default() -> Self {
        SolveOptions {
            tolerance_pu: 1e-10,
            max_iterations: 100,
            max_control_iterations: 10,
        }
    }
}

/// A primitive admittance matrix over an element's conductors (`None`: ground).
#[derive(Clone, Debug)]
struct Prim {
    nodes: Vec<Option<usize>>,
    y: Vec<c64>,
}

impl Prim {
    fn new(nodes: Vec<Option<usize>>) -> Prim {
        let n = nodes.len();
        assert!(n <= 16, "an element of {n} conductors");
        Prim {
            nodes,
            y: vec![c64::ZERO; n * n],
        }
    }
    fn order(&self) -> usize {
        self.nodes.len()
    }
    fn add(&mut self, i: usize, j: usize, v: c64) {
        let n = self.order();
        self.y[i * n + j] += v;
    }
    /// The currents into the element's conductors at voltages `v`, handed to `each(conductor,
    /// current)` (no allocation: element matrices have at most 16 conductors).
    fn each_current(&self, v: &[c64], mut each: impl FnMut(usize, c64)) {
        let n = self.order();
        let mut vt = [c64::ZERO; 16];
        for (k, node) in self.nodes.iter().enumerate() {
            vt[k] = node.map_or(c64::ZERO, |k| v[k]);
        }
        for (i, row) in self.y.chunks_exact(n).enumerate() {
            each(i, row.iter().zip(&vt[..n]).map(|(y, v)| y * v).sum());
        }
    }

    /// The currents into the element's conductors at voltages `v`.
    fn currents(&self, v: &[c64]) -> Vec<c64> {
        let mut out = vec![c64::ZERO; self.order()];
        self.each_current(v, |i, c| out[i] = c);
        out
    }

    /// The complex power the element takes in, summed over its conductors (its losses).
    fn power(&self, v: &[c64]) -> c64 {
        let mut s = c64::ZERO;
        self.each_current(v, |i, c| {
            if let Some(k) = self.nodes[i] {
                s += v[k] * c.conj();
            }
        });
        s
    }
}

fn invert(m: &[c64], n: usize) -> Option<Vec<c64>> {
    // Gauss-Jordan with partial pivoting: element matrices are at most a few conductors.
    let mut a = m.to_vec();
    let mut inv = vec![c64::ZERO; n * n];
    for i in 0..n {
        inv[i * n + i] = c64::ONE;
    }
    for col in 0..n {
        let pivot = (col..n).max_by(|&x, &y| {
            a[x * n + col]
                .norm()
                .partial_cmp(&a[y * n + col].norm())
                .unwrap_or(std::cmp::Ordering::Equal)
        })?;
        if a[pivot * n + col].norm() == 0.0 {
            return None;
        }
        for k in 0..n {
            a.swap(col * n + k, pivot * n + k);
            inv.swap(col * n + k, pivot * n + k);
        }
        let d = a[col * n + col].inv();
        for k in 0..n {
            a[col * n + k] *= d;
            inv[col * n + k] *= d;
        }
        for r in 0..n {
            if r != col {
                let f = a[r * n + col];
                if f != c64::ZERO {
                    for k in 0..n {
                        let (ak, ik) = (a[col * n + k], inv[col * n + k]);
                        a[r * n + k] -= f * ak;
                        inv[r * n + k] -= f * ik;
                    }
                }
            }
        }
    }
    Some(inv)
}

/// How much a node's voltage magnitude moved from `old` to `new`: per unit of its base `base_v`,
/// or relative where it has none (OpenDSS's convergence measure). Magnitudes by `sqrt` of the
/// square: `hypot`'s care for overflow costs more than a whole iteration, and node voltages are
/// nowhere near overflow.
/// The active power entering element `p` through its first `conductors` conductors at voltages
/// `v`, kW.
fn power_into_kw(p: &Prim, v: &[c64], conductors: usize) -> f64 {
    let mut w = 0.0;
    p.each_current(v, |i, c| {
        if let (true, Some(k)) = (i < conductors, p.nodes[i]) {
            w += (v[k] * c.conj()).re;
        }
    });
    w / 1000.0
}

pub(crate) fn magnitude_change(new: c64, old: c64, base_v: f64) -> f64 {
    let (a, b) = (new.norm_sqr().sqrt(), old.norm_sqr().sqrt());
    if base_v > 0.0 {
        (a - b).abs() / base_v
    } else if a != 0.0 {
        (1.0 - b / a).abs()
    } else {
        0.0
    }
}

/// Where a node of the circuit is: its bus and node number.
type NodeKey = (usize, u8);

/// OpenDSS's CAP_EPSILON: 10 kvar at 345 kV on each conductor of a line in the series-only
/// matrix, so a bus that only a capacitance holds still has a path.
const CAP_EPSILON_S: f64 = 10e3 / (345e3 * 345e3);

/// The circuit as a nodal system, ready to solve again and again.
pub(crate) struct System<'c> {
    pub(crate) circuit: &'c Circuit,
    pub(crate) nodes: Vec<NodeKey>,
    /// Each node's line-to-neutral base in volts (0: none).
    pub(crate) base_v: Vec<f64>,
    lines: Vec<Prim>,
    transformers: Vec<Prim>,
    capacitors: Vec<Prim>,
    sources: Vec<Prim>,
    /// Each source's injected current at its terminal's nodes.
    source_current: Vec<c64>,
    /// The loads, then the generators (as loads drawing negative power), then any added by
    /// the caller, and their models in the same order.
    loads: Vec<LoadState>,
    models: Vec<Load>,
    index: HashMap<NodeKey, usize>,
    /// The taps in force, per transformer and winding.
    pub(crate) taps: Vec<Vec<f64>>,
    regulators: Vec<RegState>,
    /// Each capacitor's steps in service, and each capacitor control's state.
    pub(crate) cap_steps: Vec<u32>,
    cap_controls: Vec<CapState>,
    /// Whether the last solve's controls came to rest within the control iterations.
    pub(crate) controls_settled: bool,
    series_only: bool,
    lu: Option<Lu>,
}

struct Lu {
    pairs: Vec<(usize, usize)>,
    values: Vec<c64>,
    symbolic: Symbolic,
    numeric: crate::sparse::Lu<c64>,
}

#[derive(Clone, Debug)]
struct LoadState {
    prim: Prim,
    /// Per phase: the conductors it is across (the second for wye is the neutral).
    phases: Vec<(usize, usize)>,
    /// Per phase at the present multiplier.
    w: f64,
    var: f64,
    base_v: f64,
}

#[derive(Clone, Debug, Default)]
struct RegState {
    pending_pu: f64,
    armed: bool,
    due_s: f64,
}

/// Whether a measure is past a setting.
type Threshold = fn(f64, f64) -> bool;

/// A capacitor control between samples: OpenDSS's armed action on the control queue.
#[derive(Clone, Copy, Debug)]
struct CapState {
    /// Close one more step (`Some(true)`), open one (`Some(false)`), or nothing.
    pending: Option<bool>,
    armed: bool,
    due_s: f64,
    /// When the bank was last opened, s on the (static) control clock.
    last_open_s: f64,
}

fn key_nodes<'a>(
    index: &'a HashMap<NodeKey, usize>,
    t: &'a super::Terminal,
) -> impl Iterator<Item = Option<usize>> + 'a {
    let bus = t.bus;
    t.nodes.iter().map(move |&n| {
        if n == 0 {
            None
        } else {
            index.get(&(bus, n)).copied()
        }
    })
}

impl Transformer {
    /// The conductor pairs each phase's coil of each winding spans, in the order of the
    /// element's conductors (`phases + 1` per winding).
    fn coils(&self, winding: usize, phase: usize) -> (usize, usize) {
        let nconds = self.phases + 1;
        let base = winding * nconds;
        if self.phases == 1 {
            return (base, base + 1);
        }
        match self.windings[winding].connection {
            Connection::Wye => (base + phase, base + self.phases),
            Connection::Delta => {
                let p = phase as i64 + 1 + i64::from(self.delta_direction);
                let n = self.phases as i64;
                let next = if n > 2 {
                    if p > n {
                        1
                    } else if p < 1 {
                        n
                    } else {
                        p
                    }
                } else if p < 1 {
                    3
                } else {
                    p
                };
                (base + phase, base + next as usize - 1)
            }
        }
    }

    /// OpenDSS's transformer model: the windings' short-circuit impedances on a one-volt base
    /// (`Zb`), their admittance among windings, scaled by each coil's voltage and tap onto the
    /// coils' ends, repeated for every phase.
    fn prim(&self, taps: &[f64], nodes: Vec<Option<usize>>, series_only: bool) -> Prim {
        let nw = self.windings.len();
        let phases = self.phases as f64;
        let va_base = self.windings[0].kva * 1000.0;
        let z_base = 1.0 / (va_base / phases);
        let w1 = &self.windings[0];
        let m = nw - 1;
        let mut zb = vec![c64::ZERO; m * m];
        for i in 0..m {
            zb[i * m + i] = c64::new(w1.r_pu + self.windings[i + 1].r_pu, self.x_sc_pu[i]) * z_base;
        }
        let mut k = m;
        for i in 0..m {
            for j in i + 1..m {
                let zij = c64::new(
                    self.windings[i + 1].r_pu + self.windings[j + 1].r_pu,
                    self.x_sc_pu[k],
                ) * z_base;
                zb[i * m + j] = (zb[i * m + i] + zb[j * m + j] - zij) * 0.5;
                zb[j * m + i] = zb[i * m + j];
                k += 1;
            }
        }
        let zb_inv = invert(&zb, m).unwrap_or_else(|| {
            let mut e = vec![c64::ZERO; m * m];
            (0..m).for_each(|i| e[i * m + i] = c64::new(1e-12, 0.0));
            e
        });
        // Y_1volt = Aᵀ Zb⁻¹ A, A = [-1 | I].
        let a = |r: usize, c: usize| -> f64 {
            if c == 0 {
                -1.0
            } else if c == r + 1 {
                1.0
            } else {
                0.0
            }
        };
        let mut y1 = vec![c64::ZERO; nw * nw];
        for i in 0..nw {
            for j in 0..nw {
                let mut s = c64::ZERO;
                for r in 0..m {
                    for c in 0..m {
                        s += zb_inv[r * m + c] * (a(r, i) * a(c, j));
                    }
                }
                y1[i * nw + j] = s;
            }
        }
        if !series_only {
            let nl = c64::new(
                self.pct_no_load_loss / 100.0 / z_base,
                -self.pct_imag / 100.0 / z_base,
            );
            y1[nw + 1] += nl;
        }
        // Onto the coils' two ends: a-end +1/(Vbase·tap), b-end -1/(Vbase·tap).
        let scale: Vec<f64> = (0..nw)
            .map(|w| {
                let t = if taps[w] == 0.0 { 0.0001 } else { taps[w] };
                1.0 / (self.windings[w].coil_voltage_v(self.phases) * t)
            })
            .collect();
        let n2 = 2 * nw;
        let mut yt = vec![c64::ZERO; n2 * n2];
        for i in 0..n2 {
            for j in 0..n2 {
                let si = if i % 2 == 0 {
                    scale[i / 2]
                } else {
                    -scale[i / 2]
                };
                let sj = if j % 2 == 0 {
                    scale[j / 2]
                } else {
                    -scale[j / 2]
                };
                yt[i * n2 + j] = y1[(i / 2) * nw + j / 2] * (si * sj);
            }
        }
        let ppm = |w: usize| -> f64 {
            let v = self.windings[w].coil_voltage_v(self.phases);
            -self.ppm_antifloat * 1e-6 / (v * v / (va_base / phases)) / 2.0
        };
        if self.ppm_antifloat != 0.0 {
            for w in 0..nw {
                let add = c64::new(0.0, ppm(w));
                yt[(2 * w) * n2 + 2 * w] += add;
                yt[(2 * w + 1) * n2 + 2 * w + 1] += add;
            }
        }
        let mut prim = Prim::new(nodes);
        for p in 0..self.phases {
            let term = |i: usize| -> usize {
                let (a, b) = self.coils(i / 2, p);
                if i % 2 == 0 {
                    a
                } else {
                    b
                }
            };
            for i in 0..n2 {
                for j in 0..=i {
                    let v = yt[i * n2 + j];
                    let (ti, tj) = (term(i), term(j));
                    prim.add(ti, tj, v);
                    if ti != tj {
                        prim.add(tj, ti, v);
                    }
                }
            }
        }
        let nconds = self.phases + 1;
        for (w, winding) in self.windings.iter().enumerate() {
            if winding.connection != Connection::Wye {
                continue;
            }
            let j = w * nconds + self.phases;
            let v = if winding.r_neutral_ohm >= 0.0 {
                if winding.r_neutral_ohm == 0.0 && winding.x_neutral_ohm == 0.0 {
                    c64::new(1e6, 0.0)
                } else {
                    c64::new(winding.r_neutral_ohm, winding.x_neutral_ohm).inv()
                }
            } else if self.ppm_antifloat != 0.0 {
                c64::new(0.0, ppm(w))
            } else {
                c64::ZERO
            };
            prim.add(j, j, v);
        }
        prim
    }
}

impl Line {
    fn prim(&self, nodes: Vec<Option<usize>>, series_only: bool) -> Prim {
        let n = self.phases();
        let zinv = invert(&self.z_series_ohm, n).unwrap_or_else(|| {
            let mut e = vec![c64::ZERO; n * n];
            (0..n).for_each(|i| e[i * n + i] = c64::new(1e-12, 0.0));
            e
        });
        let mut p = Prim::new(nodes);
        for i in 0..n {
            for j in 0..n {
                let y = zinv[i * n + j];
                p.add(i, j, y);
                p.add(i + n, j + n, y);
                p.add(i, j + n, -y);
                p.add(i + n, j, -y);
                if !series_only {
                    let half = self.y_shunt_s[i * n + j] * 0.5;
                    p.add(i, j, half);
                    p.add(i + n, j + n, half);
                }
            }
            if series_only {
                p.add(i, i, c64::new(0.0, CAP_EPSILON_S));
                p.add(i + n, i + n, c64::new(0.0, CAP_EPSILON_S));
            }
        }
        p
    }
}

impl Capacitor {
    /// The bank with `in_service` steps closed (none: nothing connects).
    fn prim(&self, in_service: u32, nodes: Vec<Option<usize>>, series_only: bool) -> Prim {
        let n = self.terminal.nodes.len();
        let y = c64::new(0.0, self.step_y_s * f64::from(in_service))
            * if series_only { 1e-10 } else { 1.0 };
        let mut p = Prim::new(nodes);
        match self.connection {
            Connection::Wye => {
                for i in 0..n {
                    p.add(i, i, y);
                    p.add(i + n, i + n, y);
                    if !series_only {
                        p.add(i, i + n, -y);
                        p.add(i + n, i, -y);
                    }
                }
            }
            Connection::Delta => {
                for i in 0..n {
                    let j = (i + 1) % n;
                    p.add(i, i, y);
                    p.add(j, j, y);
                    if !series_only {
                        p.add(i, j, -y);
                        p.add(j, i, -y);
                    }
                }
            }
        }
        p
    }
}

impl Load {
    /// The conductors each phase is across.
    fn phase_conductors(&self) -> Vec<(usize, usize)> {
        let nconds = self.terminal.nodes.len();
        (0..self.phases)
            .map(|i| match self.connection {
                Connection::Wye => (i, nconds - 1),
                Connection::Delta => (i, (i + 1) % nconds),
            })
            .collect()
    }
}

impl LoadState {
    fn new(
        load: &Load,
        nodes: Vec<Option<usize>>,
        mult: (f64, f64),
        series_only: bool,
        in_y: bool,
    ) -> LoadState {
        let mut s = LoadState {
            prim: Prim::new(nodes),
            phases: load.phase_conductors(),
            w: 0.0,
            var: 0.0,
            base_v: load.phase_base_v(),
        };
        s.set(load, mult);
        if !in_y {
            return s;
        }
        let y = s.yeq() * if series_only { 1e-10 } else { 1.0 };
        for &(a, b) in &s.phases.clone() {
            s.prim.add(a, a, y);
            s.prim.add(b, b, y);
            if !series_only {
                s.prim.add(a, b, -y);
                s.prim.add(b, a, -y);
            }
        }
        if load.connection == Connection::Wye {
            let k = s.prim.order();
            let n = k - 1;
            // An open neutral keeps a sliver of admittance to ground.
            s.prim.y[n * k + n] *= 1.000001;
        }
        s
    }

    fn set(&mut self, load: &Load, (p, q): (f64, f64)) {
        let phases = load.phases as f64;
        self.w = 1000.0 * load.kw * p / phases;
        self.var = 1000.0 * load.kvar * q / phases;
    }

    fn yeq(&self) -> c64 {
        c64::new(self.w, -self.var) / (self.base_v * self.base_v)
    }

    /// The current the load draws across one phase at voltage `v` (OpenDSS's models with
    /// their low- and high-voltage fallbacks to impedances).
    fn current(&self, load: &Load, v: c64) -> c64 {
        let vmag = v.norm_sqr().sqrt();
        let yeq = self.yeq();
        let (vlow, v95, v105) = (
            load.vlow_pu * self.base_v,
            load.vmin_pu * self.base_v,
            load.vmax_pu * self.base_v,
        );
        let s = c64::new(self.w, self.var);
        match load.model {
            LoadModel::ConstantImpedance => yeq * v,
            LoadModel::ConstantPower => {
                if vmag <= vlow {
                    yeq * v
                } else if vmag <= v95 {
                    let y95 = yeq / (load.vmin_pu * load.vmin_pu);
                    let ilow = yeq * vlow;
                    let m95 = (y95 * v95 - ilow) / (v95 - vlow);
                    (ilow + m95 * (vmag - vlow)) / vmag * v
                } else if vmag > v105 {
                    yeq / (load.vmax_pu * load.vmax_pu) * v
                } else {
                    (s / v).conj()
                }
            }
            LoadModel::Source => {
                if vmag <= v95 {
                    yeq / (load.vmin_pu * load.vmin_pu) * v
                } else if vmag > v105 {
                    yeq / (load.vmax_pu * load.vmax_pu) * v
                } else {
                    (s / v).conj()
                }
            }
            LoadModel::ConstantCurrent => {
                if vmag <= vlow {
                    yeq * v
                } else if vmag <= v95 {
                    let ilow = yeq * vlow;
                    let m95 = (yeq * self.base_v - ilow) / (v95 - vlow);
                    (ilow + m95 * (vmag - vlow)) / vmag * v
                } else if vmag > v105 {
                    yeq / load.vmax_pu * v
                } else {
                    (s / (v / vmag * self.base_v)).conj()
                }
            }
        }
    }
}

impl<'c> System<'c> {
    /// The circuit's nodes and element matrices; `series_only` leaves out loads, capacitors
    /// and line charging (the zero-load solution voltage bases come from).
    pub(crate) fn new(circuit: &'c Circuit, series_only: bool) -> System<'c> {
        let mut index: HashMap<NodeKey, usize> = HashMap::new();
        let mut nodes: Vec<NodeKey> = Vec::new();
        let mut add = |t: &super::Terminal| {
            for &n in &t.nodes {
                if n != 0 && !index.contains_key(&(t.bus, n)) {
                    index.insert((t.bus, n), nodes.len());
                    nodes.push((t.bus, n));
                }
            }
        };
        circuit.sources.iter().for_each(|s| add(&s.terminal));
        for l in &circuit.lines {
            add(&l.from);
            add(&l.to);
        }
        for t in &circuit.transformers {
            t.windings.iter().for_each(|w| add(&w.terminal));
        }
        for c in &circuit.capacitors {
            add(&c.terminal);
            add(&c.terminal2);
        }
        circuit.loads.iter().for_each(|l| add(&l.terminal));
        circuit.generators.iter().for_each(|g| add(&g.terminal));
        let base_v = nodes
            .iter()
            .map(|&(b, _)| circuit.buses[b].kv_base_ln * 1000.0)
            .collect();
        let taps: Vec<Vec<f64>> = circuit
            .transformers
            .iter()
            .map(|t| t.windings.iter().map(|w| w.tap_pu).collect())
            .collect();
        let lines = circuit
            .lines
            .iter()
            .map(|l| {
                let n: Vec<_> = key_nodes(&index, &l.from)
                    .chain(key_nodes(&index, &l.to))
                    .collect();
                l.prim(n, series_only)
            })
            .collect();
        let transformers = circuit
            .transformers
            .iter()
            .zip(&taps)
            .map(|(t, taps)| {
                let n: Vec<_> = t
                    .windings
                    .iter()
                    .flat_map(|w| key_nodes(&index, &w.terminal))
                    .collect();
                t.prim(taps, n, series_only)
            })
            .collect();
        let capacitors = circuit
            .capacitors
            .iter()
            .map(|c| {
                let n: Vec<_> = key_nodes(&index, &c.terminal)
                    .chain(key_nodes(&index, &c.terminal2))
                    .collect();
                c.prim(c.in_service, n, series_only)
            })
            .collect();
        let mut source_current = Vec::new();
        let sources = circuit
            .sources
            .iter()
            .map(|s| {
                let n = s.terminal.nodes.len();
                let zinv = invert(&s.z_ohm, n).unwrap_or_else(|| {
                    let mut e = vec![c64::ZERO; n * n];
                    (0..n).for_each(|i| e[i * n + i] = c64::new(1e12, 0.0));
                    e
                });
                let mut p = Prim::new(key_nodes(&index, &s.terminal).collect());
                p.y.clone_from(&zinv);
                let vs: Vec<c64> = (0..n)
                    .map(|i| {
                        let deg = s.angle_deg - i as f64 * 360.0 / n as f64;
                        c64::from_polar(s.voltage_v, deg * PI / 180.0)
                    })
                    .collect();
                source_current
                    .extend((0..n).map(|i| (0..n).map(|j| zinv[i * n + j] * vs[j]).sum::<c64>()));
                p
            })
            .collect();
        let mut models: Vec<Load> = circuit.loads.clone();
        models.extend(circuit.generators.iter().cloned());
        let loads = models
            .iter()
            .enumerate()
            .map(|(k, l)| {
                let is_load = k < circuit.loads.len();
                let m = if is_load {
                    (circuit.load_mult, circuit.load_mult)
                } else {
                    (1.0, 1.0)
                };
                // Generators inject only: a negative admittance in Y would only weaken it.
                LoadState::new(
                    l,
                    key_nodes(&index, &l.terminal).collect(),
                    m,
                    series_only,
                    is_load,
                )
            })
            .collect();
        System {
            circuit,
            nodes,
            base_v,
            lines,
            transformers,
            capacitors,
            sources,
            source_current,
            loads,
            models,
            index,
            taps,
            regulators: vec![RegState::default(); circuit.regulators.len()],
            cap_steps: circuit.capacitors.iter().map(|c| c.in_service).collect(),
            cap_controls: circuit
                .cap_controls
                .iter()
                .map(|c| CapState {
                    pending: None,
                    armed: false,
                    due_s: 0.0,
                    last_open_s: -c.dead_time_s,
                })
                .collect(),
            controls_settled: true,
            series_only,
            lu: None,
        }
    }

    fn prims(&self) -> impl Iterator<Item = &Prim> {
        self.lines
            .iter()
            .chain(&self.transformers)
            .chain(&self.capacitors)
            .chain(&self.sources)
            .chain(self.loads.iter().map(|l| &l.prim))
    }

    /// Factorises `Y` (the pattern once; the numbers again after a tap moved).
    fn factorise(&mut self) -> Result<(), SolveError> {
        let n = self.nodes.len();
        let singular = |name: String| SolveError::Singular(name);
        let mut values = self
            .lu
            .as_mut()
            .map(|lu| std::mem::take(&mut lu.values))
            .unwrap_or_default();
        values.clear();
        let mut pairs = Vec::new();
        for p in self.prims() {
            let k = p.order();
            for i in 0..k {
                let Some(ni) = p.nodes[i] else { continue };
                for j in 0..k {
                    let Some(nj) = p.nodes[j] else { continue };
                    if self.lu.is_none() {
                        pairs.push((ni, nj));
                    }
                    values.push(p.y[i * k + j]);
                }
            }
        }
        if self.lu.is_none() {
            // A bus's nodes are eliminated together: the ordering runs on the buses' graph.
            let block_of: Vec<usize> = self.nodes.iter().map(|&(b, _)| b).collect();
            let symbolic =
                Symbolic::new_blocked(n, &pairs, &block_of).map_err(|e| singular(e.to_string()))?;
            let numeric = crate::sparse::Lu::new(&symbolic);
            self.lu = Some(Lu {
                pairs,
                values: vec![],
                symbolic,
                numeric,
            });
        }
        let lu = self.lu.as_mut().expect("set above");
        debug_assert_eq!(lu.pairs.len(), values.len());
        let nodes = &self.nodes;
        let buses = &self.circuit.buses;
        lu.numeric
            .factorise(&lu.symbolic, &values)
            .map_err(|e| match e {
                SparseError::ZeroPivot(k) => {
                    let (b, node) = nodes[k];
                    singular(format!("{}.{node}", buses[b].name))
                }
                e => singular(e.to_string()),
            })?;
        lu.values = values;
        Ok(())
    }

    /// Solves `Y x = rhs` in place; `refine` adds one step of iterative refinement (the
    /// residual solved again), for when the last digits count: short LV cables (tens of
    /// kilosiemens) beside a weakly grounded source can leave a plain solve's voltages noisy
    /// near 1e-9 pu, above the tolerance.
    fn solve_in_place(&mut self, rhs: &mut [c64], refine: bool) {
        let lu = self.lu.as_ref().expect("factorised before solving");
        if !refine {
            lu.numeric.solve(&lu.symbolic, rhs);
            return;
        }
        let b = rhs.to_vec();
        lu.numeric.solve(&lu.symbolic, rhs);
        let mut r = b;
        for (&(row, col), y) in lu.pairs.iter().zip(&lu.values) {
            r[row] -= *y * rhs[col];
        }
        lu.numeric.solve(&lu.symbolic, &mut r);
        for (x, d) in rhs.iter_mut().zip(&r) {
            *x += *d;
        }
    }

    /// The sources' currents into the network.
    fn injections(&self) -> Vec<c64> {
        let mut i = vec![c64::ZERO; self.nodes.len()];
        let mut k = 0;
        for s in &self.sources {
            for node in &s.nodes {
                if let Some(n) = node {
                    i[*n] += self.source_current[k];
                }
                k += 1;
            }
        }
        i
    }

    /// Each load's multipliers of its kW and kvar (`None`: the snapshot's).
    pub(crate) fn set_load_multipliers(&mut self, mults: &[(f64, f64)]) {
        for ((state, load), &m) in self.loads.iter_mut().zip(&self.models).zip(mults) {
            state.set(load, m);
        }
    }

    /// Every load's injected current at voltages `v(node)`: the current its nominal admittance
    /// in `Y` draws less the current its model draws, handed to `add(node, current)`.
    pub(crate) fn load_injections(
        &self,
        v: impl Fn(usize) -> c64,
        mut add: impl FnMut(usize, c64),
    ) {
        for (state, load) in self.loads.iter().zip(&self.models) {
            let k = state.prim.order();
            debug_assert!(k <= 8);
            let mut vt = [c64::ZERO; 8];
            for (i, n) in state.prim.nodes.iter().enumerate() {
                if let Some(n) = n {
                    vt[i] = v(*n);
                }
            }
            let mut inj = [c64::ZERO; 8];
            for (i, row) in state.prim.y.chunks_exact(k).enumerate() {
                inj[i] = row.iter().zip(&vt[..k]).map(|(y, v)| y * v).sum();
            }
            for &(a, b) in &state.phases {
                let i = state.current(load, vt[a] - vt[b]);
                inj[a] -= i;
                inj[b] += i;
            }
            for (i, n) in state.prim.nodes.iter().enumerate() {
                if let Some(n) = n {
                    add(*n, inj[i]);
                }
            }
        }
    }

    /// The nodes loads inject at, each once, in order.
    pub(crate) fn load_nodes(&self) -> Vec<usize> {
        let mut out: Vec<usize> = self
            .loads
            .iter()
            .flat_map(|l| l.prim.nodes.iter().flatten().copied())
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }

    /// The columns of `Y⁻¹` at `nodes`: each node's voltages everywhere per ampere injected.
    pub(crate) fn impedance_columns(
        &mut self,
        nodes: &[usize],
    ) -> Result<faer::Mat<c64>, SolveError> {
        if self.lu.is_none() {
            self.factorise()?;
        }
        let n = self.nodes.len();
        let mut z = faer::Mat::<c64>::zeros(n, nodes.len());
        let mut col = vec![c64::ZERO; n];
        for (c, &k) in nodes.iter().enumerate() {
            col.iter_mut().for_each(|x| *x = c64::ZERO);
            col[k] = c64::ONE;
            self.solve_in_place(&mut col, true);
            z.col_mut(c).iter_mut().zip(&col).for_each(|(z, x)| *z = *x);
        }
        Ok(z)
    }

    /// The voltages with the taps as they are: the fixed point from `v`.
    pub(crate) fn solve_fixed_point(
        &mut self,
        v: &mut Vec<c64>,
        opts: &SolveOptions,
    ) -> Result<usize, SolveError> {
        if self.lu.is_none() {
            self.factorise()?;
        }
        let source = self.injections();
        let mut change = f64::INFINITY;
        let mut refine = false;
        for iteration in 1..=opts.max_iterations {
            let mut rhs = source.clone();
            if !self.series_only {
                self.load_injections(|k| v[k], |k, i| rhs[k] += i);
            }
            // Refined from when the iterates stall near the tolerance: the solve's own error,
            // not the fixed point's, is then what is left.
            self.solve_in_place(&mut rhs, refine);
            let change_before = change;
            change = 0.0;
            for (k, new) in rhs.iter().enumerate() {
                change = change.max(magnitude_change(*new, v[k], self.base_v[k]));
            }
            refine |= change < 1e-7 && change > 0.5 * change_before;
            *v = rhs;
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

    /// A snapshot from the direct solution: fixed points with the regulators and capacitor
    /// controls sampled between them until no tap or step moves (or the control iterations run
    /// out: then [`System::controls_settled`] is false, where OpenDSS warns). The voltages, the
    /// fixed-point iterations over all passes, and the passes.
    pub(crate) fn solve_with_controls(
        &mut self,
        opts: &SolveOptions,
    ) -> Result<(Vec<c64>, usize, usize), SolveError> {
        let mut v = self.direct()?;
        let mut iterations = 0;
        let mut control_iterations = 0;
        self.controls_settled = true;
        let controlled =
            !self.circuit.regulators.is_empty() || !self.circuit.cap_controls.is_empty();
        for ci in 1..=opts.max_control_iterations.max(1) {
            control_iterations = ci;
            iterations += self.solve_fixed_point(&mut v, opts)?;
            if ci >= opts.max_control_iterations {
                self.controls_settled = !controlled;
                break;
            }
            if !self.control(&v) {
                break;
            }
        }
        Ok((v, iterations, control_iterations))
    }

    /// `Y⁻¹ I_source`: the voltages with the loads as their nominal admittances and no other
    /// injection (the fixed point's first guess, and `V0` of the reduced iteration).
    pub(crate) fn direct(&mut self) -> Result<Vec<c64>, SolveError> {
        if self.lu.is_none() {
            self.factorise()?;
        }
        let mut v = self.injections();
        self.solve_in_place(&mut v, false);
        Ok(v)
    }

    /// Samples every regulator at voltages `v` and moves the taps the nearest actions move, as
    /// OpenDSS's static control mode does. Whether a tap moved.
    pub(crate) fn control(&mut self, v: &[c64]) -> bool {
        let circuit = self.circuit;
        for (k, r) in circuit.regulators.iter().enumerate() {
            let t = &circuit.transformers[r.transformer];
            let prim = &self.transformers[r.transformer];
            let vt: Vec<c64> = prim
                .nodes
                .iter()
                .map(|n| n.map_or(c64::ZERO, |n| v[n]))
                .collect();
            let coil: Vec<c64> = (0..t.phases)
                .map(|p| {
                    let (a, b) = t.coils(r.winding, p);
                    vt[a] - vt[b]
                })
                .collect();
            let phase = match r.pt_phase {
                PtPhase::Phase(p) => p - 1,
                PtPhase::Max | PtPhase::Min => {
                    let mut best = 0;
                    for p in 1..coil.len() {
                        let better = match r.pt_phase {
                            PtPhase::Max => coil[p].norm() > coil[best].norm(),
                            _ => coil[p].norm() < coil[best].norm(),
                        };
                        if better {
                            best = p;
                        }
                    }
                    best
                }
            };
            let mut vcontrol = coil[phase] / r.pt_ratio;
            if let Some((bus, node)) = r.regulated_node {
                // The remote node against ground, on its own PT; no line-drop compensation.
                let at = self.index.get(&(bus, node)).map_or(c64::ZERO, |&k| v[k]);
                vcontrol = at / r.remote_pt_ratio;
            } else if r.r_ldc_v != 0.0 || r.x_ldc_v != 0.0 {
                let currents = prim.currents(v);
                let i = currents[(t.phases + 1) * r.winding + phase] / r.ct_primary_a;
                vcontrol += c64::new(r.r_ldc_v, r.x_ldc_v) * i;
            }
            let vactual = vcontrol.norm();
            let state = &mut self.regulators[k];
            if (r.vreg_v - vactual).abs() > r.band_v / 2.0 {
                let boost_pu = (r.vreg_v - vactual) * r.pt_ratio
                    / t.windings[r.winding].coil_voltage_v(t.phases);
                let step = t.windings[r.tap_winding].tap_step_pu();
                let mut pending = if step > 0.0 {
                    (boost_pu / step).round_ties_even() * step
                } else {
                    0.0
                };
                if r.tap_winding != r.winding {
                    pending = -pending;
                }
                state.pending_pu = pending;
                if pending != 0.0 && !state.armed {
                    let w = &t.windings[r.tap_winding];
                    let tap = self.taps[r.transformer][r.tap_winding];
                    let can = if pending > 0.0 {
                        tap < w.max_tap_pu
                    } else {
                        tap > w.min_tap_pu
                    };
                    if can {
                        state.armed = true;
                        state.due_s = r.delay_s;
                    }
                }
            } else {
                state.pending_pu = 0.0;
                state.armed = false;
            }
        }
        self.sample_cap_controls(v);
        // The nearest actions: every armed regulator and capacitor control due first (the
        // static clock stays at 0, as OpenDSS's static control mode leaves it).
        let Some(due) = self
            .regulators
            .iter()
            .filter(|s| s.armed)
            .map(|s| s.due_s)
            .chain(
                self.cap_controls
                    .iter()
                    .filter(|s| s.armed)
                    .map(|s| s.due_s),
            )
            .min_by(f64::total_cmp)
        else {
            return false;
        };
        let switched = self.switch_capacitors(due);
        let mut moved = false;
        for (k, r) in circuit.regulators.iter().enumerate() {
            let state = &mut self.regulators[k];
            if !state.armed || state.due_s > due {
                continue;
            }
            state.armed = false;
            if state.pending_pu == 0.0 {
                continue;
            }
            let w = &circuit.transformers[r.transformer].windings[r.tap_winding];
            let step = w.tap_step_pu();
            let n = ((0.7 * state.pending_pu.abs() / step).trunc() as u32)
                .max(1)
                .min(r.max_tap_change);
            let change = f64::from(n) * step * state.pending_pu.signum();
            state.pending_pu = 0.0;
            let tap = &mut self.taps[r.transformer][r.tap_winding];
            let new = (*tap + change).clamp(w.min_tap_pu, w.max_tap_pu);
            if new != *tap {
                *tap = new;
                moved = true;
            }
        }
        if moved {
            self.rebuild_transformers();
        } else if switched {
            self.refactorise_if_factorised();
        }
        moved || switched
    }

    /// Samples every capacitor control at voltages `v`, as OpenDSS's CapControl does: arms a
    /// step in or out (after its delay; a close within the dead time of the last opening
    /// waits it out), or disarms what no longer holds.
    fn sample_cap_controls(&mut self, v: &[c64]) {
        let circuit = self.circuit;
        for (k, cc) in circuit.cap_controls.iter().enumerate() {
            let cap = &circuit.capacitors[cc.capacitor];
            let in_service = self.cap_steps[cc.capacitor];
            let closed = in_service > 0;
            let available = cap.steps - in_service;
            let (prim, conductors, phases) = match cc.element {
                Monitored::Line(l) => {
                    let p = &self.lines[l];
                    let n = circuit.lines[l].phases();
                    (p, n, n)
                }
                Monitored::Transformer(t) => {
                    let n = circuit.transformers[t].phases;
                    (&self.transformers[t], n + 1, n)
                }
            };
            let offset = cc.terminal * conductors;
            let terminal_v = |i: usize| prim.nodes[offset + i].map_or(c64::ZERO, |n| v[n]);
            let control_voltage = || {
                let vs: Vec<f64> = (0..phases).map(|i| terminal_v(i).norm()).collect();
                let vm = match cc.pt_phase {
                    PhaseChoice::Average => vs.iter().sum::<f64>() / phases as f64,
                    PhaseChoice::Max => vs.iter().copied().fold(0.0, f64::max),
                    PhaseChoice::Min => vs.iter().copied().fold(f64::INFINITY, f64::min),
                    PhaseChoice::Phase(p) => {
                        if cap.connection == Connection::Delta {
                            let q = p % phases;
                            (terminal_v(p - 1) - terminal_v(q)).norm()
                        } else {
                            vs[p - 1]
                        }
                    }
                };
                vm / cc.pt_ratio
            };
            let state = self.cap_controls[k];
            let mut pending = state.pending;
            let mut should = false;
            if let (Some((vmin, vmax)), false) =
                (cc.voltage_override, cc.kind == CapControlKind::Voltage)
            {
                let vtest = control_voltage();
                if !closed && vtest < vmin {
                    (pending, should) = (Some(true), true);
                } else if closed && vtest > vmax {
                    (pending, should) = (Some(false), true);
                }
            }
            if !should {
                // (measure, switch in when, switch out when)
                let (x, close_when, open_when): (f64, Threshold, Threshold) = match cc.kind {
                    CapControlKind::Voltage => {
                        (control_voltage(), |x, on| x < on, |x, off| x > off)
                    }
                    CapControlKind::Current => {
                        let mut i = Vec::with_capacity(phases);
                        prim.each_current(v, |c, cur| {
                            if (offset..offset + phases).contains(&c) {
                                i.push(cur.norm());
                            }
                        });
                        let im = match cc.ct_phase {
                            PhaseChoice::Average => i.iter().sum::<f64>() / phases as f64,
                            PhaseChoice::Max => i.iter().copied().fold(0.0, f64::max),
                            PhaseChoice::Min => i.iter().copied().fold(f64::INFINITY, f64::min),
                            PhaseChoice::Phase(p) => i[p - 1],
                        };
                        (im / cc.ct_ratio, |x, on| x > on, |x, off| x < off)
                    }
                    CapControlKind::Kvar => {
                        let mut q = 0.0;
                        prim.each_current(v, |c, cur| {
                            if (offset..offset + conductors).contains(&c) {
                                q += (terminal_v(c - offset) * cur.conj()).im;
                            }
                        });
                        (q / 1000.0, |x, on| x > on, |x, off| x < off)
                    }
                };
                if !closed {
                    if close_when(x, cc.on) {
                        (pending, should) = (Some(true), true);
                    } else {
                        pending = None;
                    }
                } else if cc.kind == CapControlKind::Voltage {
                    pending = None;
                    if open_when(x, cc.off) {
                        (pending, should) = (Some(false), true);
                    } else if available > 0 && close_when(x, cc.on) {
                        (pending, should) = (Some(true), true);
                    }
                } else if open_when(x, cc.off) {
                    (pending, should) = (Some(false), true);
                } else if available > 0 {
                    if close_when(x, cc.on) {
                        (pending, should) = (Some(true), true);
                    }
                } else {
                    pending = None;
                }
            }
            let state = &mut self.cap_controls[k];
            state.pending = pending;
            if should && !state.armed {
                state.due_s = if pending == Some(true) {
                    // The static clock stands at 0.
                    if -state.last_open_s < cc.dead_time_s {
                        cc.delay_on_s
                            .max(cc.dead_time_s + cc.delay_on_s + state.last_open_s)
                    } else {
                        cc.delay_on_s
                    }
                } else {
                    cc.delay_off_s
                };
                state.armed = true;
            }
            if state.armed && state.pending.is_none() {
                state.armed = false;
            }
        }
    }

    /// Carries out every capacitor control's action due at `due` s; whether a bank changed.
    fn switch_capacitors(&mut self, due: f64) -> bool {
        let circuit = self.circuit;
        let mut changed = false;
        for (k, cc) in circuit.cap_controls.iter().enumerate() {
            let state = &mut self.cap_controls[k];
            if !state.armed || state.due_s > due {
                continue;
            }
            let steps = &mut self.cap_steps[cc.capacitor];
            let total = circuit.capacitors[cc.capacitor].steps;
            match state.pending {
                Some(false) if *steps > 0 => {
                    *steps -= 1;
                    if total == 1 {
                        state.last_open_s = 0.0;
                    }
                    changed = true;
                }
                Some(true) if *steps < total => {
                    *steps += 1;
                    changed = true;
                }
                _ => {}
            }
            state.armed = false;
            state.pending = None;
        }
        if changed {
            for (k, c) in circuit.capacitors.iter().enumerate() {
                let nodes = self.capacitors[k].nodes.clone();
                self.capacitors[k] = c.prim(self.cap_steps[k], nodes, self.series_only);
            }
        }
        changed
    }

    fn rebuild_transformers(&mut self) {
        for (k, t) in self.circuit.transformers.iter().enumerate() {
            let nodes = self.transformers[k].nodes.clone();
            self.transformers[k] = t.prim(&self.taps[k], nodes, self.series_only);
        }
        self.refactorise_if_factorised();
    }

    /// After a tap or a capacitor step moved: the pattern is the same, the numbers are
    /// factorised again.
    fn refactorise_if_factorised(&mut self) {
        if self.lu.is_some() {
            let _ = self.factorise();
        }
    }

    /// The network's losses: the power every line, transformer and capacitor takes in.
    pub(crate) fn losses(&self, v: &[c64]) -> c64 {
        self.lines
            .iter()
            .chain(&self.transformers)
            .chain(&self.capacitors)
            .map(|p| p.power(v))
            .sum()
    }

    /// The index of `bus`'s `node` among the system's nodes.
    pub(crate) fn node_index(&self, bus: usize, node: u8) -> Option<usize> {
        self.index.get(&(bus, node)).copied()
    }

    /// Adds a single-phase generator at `bus`'s `node` (to ground), producing nothing until
    /// [`System::set_generation`]; its index.
    pub(crate) fn add_generator(&mut self, bus: usize, node: u8) -> usize {
        let model = Load::single_phase_generator(
            "hosting",
            bus,
            node,
            self.circuit.buses[bus].kv_base_ln,
            0.0,
        );
        let nodes = key_nodes(&self.index, &model.terminal).collect();
        self.loads.push(LoadState::new(
            &model,
            nodes,
            (1.0, 1.0),
            self.series_only,
            false,
        ));
        self.models.push(model);
        self.loads.len() - 1
    }

    /// Sets the generator `k` (from [`System::add_generator`]) to produce `kw` at unity power
    /// factor.
    pub(crate) fn set_generation(&mut self, k: usize, kw: f64) {
        self.models[k].kw = -kw;
        self.loads[k].set(&self.models[k], (1.0, 1.0));
    }

    /// Removes the generator added last.
    pub(crate) fn remove_generator(&mut self, k: usize) {
        debug_assert_eq!(k + 1, self.loads.len());
        self.loads.truncate(k);
        self.models.truncate(k);
    }

    /// Each line's largest conductor current in amperes.
    pub(crate) fn line_currents(&self, v: &[c64]) -> Vec<f64> {
        self.lines
            .iter()
            .map(|p| {
                let mut largest = 0.0f64;
                p.each_current(v, |_, i| largest = largest.max(i.norm_sqr()));
                largest.sqrt()
            })
            .collect()
    }

    /// Each line's active power entering at its `from` terminal (the first half of its
    /// conductors), kW.
    pub(crate) fn line_power_kw(&self, v: &[c64]) -> Vec<f64> {
        self.lines
            .iter()
            .map(|p| power_into_kw(p, v, p.order() / 2))
            .collect()
    }

    /// Each transformer's active power entering at its first winding (its phases and neutral),
    /// kW.
    pub(crate) fn transformer_power_kw(&self, v: &[c64]) -> Vec<f64> {
        self.circuit
            .transformers
            .iter()
            .zip(&self.transformers)
            .map(|(t, p)| power_into_kw(p, v, t.phases + 1))
            .collect()
    }

    /// Each transformer's loading: its largest winding terminal current over the winding's
    /// rated line current, in %.
    pub(crate) fn transformer_loading(&self, v: &[c64]) -> Vec<f64> {
        self.circuit
            .transformers
            .iter()
            .zip(&self.transformers)
            .map(|(t, p)| {
                let i = p.currents(v);
                let nconds = t.phases + 1;
                let ln = if t.phases > 1 { 3f64.sqrt() } else { 1.0 };
                t.windings
                    .iter()
                    .enumerate()
                    .map(|(w, winding)| {
                        let rated =
                            winding.kva * 1000.0 / t.phases as f64 / (winding.kv * 1000.0 / ln);
                        (0..t.phases)
                            .map(|c| i[w * nconds + c].norm_sqr().sqrt() / rated * 100.0)
                            .fold(0.0, f64::max)
                    })
                    .fold(0.0, f64::max)
            })
            .collect()
    }

    /// The power the loads draw.
    pub(crate) fn load_power(&self, v: &[c64]) -> c64 {
        self.load_power_at(|k| v[k])
    }

    /// The power the loads draw at voltages `v(node)` (of their nodes only).
    pub(crate) fn load_power_at(&self, v: impl Fn(usize) -> c64) -> c64 {
        let mut s = c64::ZERO;
        for (state, load) in self.loads.iter().zip(&self.models) {
            let vt = |k: usize| state.prim.nodes[k].map_or(c64::ZERO, &v);
            for &(a, b) in &state.phases {
                let u = vt(a) - vt(b);
                s += u * state.current(load, u).conj();
            }
        }
        s
    }

    /// The power the sources deliver into the network.
    pub(crate) fn source_power(&self, v: &[c64]) -> c64 {
        self.source_power_at(|k| v[k])
    }

    /// The power the sources deliver at voltages `v(node)` (of their nodes only).
    pub(crate) fn source_power_at(&self, v: impl Fn(usize) -> c64) -> c64 {
        let mut s = c64::ZERO;
        let mut k = 0;
        for p in &self.sources {
            let n = p.order();
            let vt: Vec<c64> = p.nodes.iter().map(|x| x.map_or(c64::ZERO, &v)).collect();
            for (c, node) in p.nodes.iter().enumerate() {
                let i: c64 = (0..n).map(|j| p.y[c * n + j] * vt[j]).sum();
                if node.is_some() {
                    s += vt[c] * (self.source_current[k] - i).conj();
                }
                k += 1;
            }
        }
        s
    }

    /// The nodes the sources connect to.
    pub(crate) fn source_nodes(&self) -> Vec<usize> {
        self.sources
            .iter()
            .flat_map(|p| p.nodes.iter().flatten().copied())
            .collect()
    }
}

/// One bus's voltages: per node `(node, vm_pu, va_deg)` on its line-to-neutral base, and its
/// voltage unbalance factor where it has phases 1, 2 and 3.
#[derive(Clone, Debug, PartialEq)]
pub struct BusVoltages {
    pub bus: String,
    pub kv_base_ln: f64,
    pub nodes: Vec<(u8, f64, f64)>,
    pub unbalance_pct: Option<f64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ViolationKind {
    /// Below 0.9 pu (EN 50160).
    Undervoltage,
    /// Above 1.1 pu (EN 50160).
    Overvoltage,
    /// Negative- over positive-sequence voltage above 2 % (EN 50160).
    Unbalance,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Violation {
    pub bus: String,
    /// The node (phase) for a voltage, 0 for the bus's unbalance.
    pub node: u8,
    pub kind: ViolationKind,
    /// pu for a voltage, % for unbalance.
    pub value: f64,
}

/// EN 50160's limits on a low- or medium-voltage network.
pub const VOLTAGE_MIN_PU: f64 = 0.9;
pub const VOLTAGE_MAX_PU: f64 = 1.1;
pub const UNBALANCE_MAX_PCT: f64 = 2.0;

/// A solved circuit.
#[derive(Clone, Debug, PartialEq)]
pub struct Solution {
    pub converged: bool,
    /// Fixed-point iterations over all control iterations.
    pub iterations: usize,
    pub control_iterations: usize,
    pub losses_kw: f64,
    pub losses_kvar: f64,
    pub total_power_kw: f64,
    pub buses: Vec<BusVoltages>,
    /// Every tap after the controls: per transformer (by name), per winding.
    pub taps: Vec<(String, Vec<f64>)>,
    /// Each line's largest conductor current in amperes, in the circuit's order.
    pub line_current_a: Vec<f64>,
    /// Each line's active power entering at its `from` terminal, kW.
    pub line_power_kw: Vec<f64>,
    /// Each transformer's active power entering at its first winding, kW.
    pub transformer_power_kw: Vec<f64>,
    /// Each capacitor bank's steps in service, as its control left them.
    pub capacitor_steps: Vec<(String, u32)>,
    /// False when the regulators and capacitor controls were still acting when the control
    /// iterations ran out (OpenDSS's "Max Control Iterations Exceeded"): the taps and steps are
    /// where the last iteration left them.
    pub controls_settled: bool,
    /// Each transformer's loading in % of its rating, in the circuit's order.
    pub transformer_loading_pct: Vec<f64>,
    /// Each node's voltage phasor in volts, in the order of [`Solution::nodes`].
    pub voltages_v: Vec<c64>,
    pub nodes: Vec<(usize, u8)>,
}

impl Solution {
    /// Every EN 50160 violation: node voltages outside 0.9-1.1 pu and buses unbalanced above
    /// 2 %. Neutral nodes (numbers above 3) carry no voltage limit.
    pub fn violations(&self) -> Vec<Violation> {
        let mut out = Vec::new();
        for b in &self.buses {
            for &(node, vm, _) in &b.nodes {
                if !(1..=3).contains(&node) {
                    continue;
                }
                let kind = if vm < VOLTAGE_MIN_PU {
                    ViolationKind::Undervoltage
                } else if vm > VOLTAGE_MAX_PU {
                    ViolationKind::Overvoltage
                } else {
                    continue;
                };
                out.push(Violation {
                    bus: b.bus.clone(),
                    node,
                    kind,
                    value: vm,
                });
            }
            if let Some(u) = b.unbalance_pct {
                if u > UNBALANCE_MAX_PCT {
                    out.push(Violation {
                        bus: b.bus.clone(),
                        node: 0,
                        kind: ViolationKind::Unbalance,
                        value: u,
                    });
                }
            }
        }
        out
    }

    /// The lowest and highest phase-node voltage in pu.
    pub fn voltage_range_pu(&self) -> (f64, f64) {
        self.buses
            .iter()
            .flat_map(|b| b.nodes.iter())
            .filter(|(n, _, _)| (1..=3).contains(n))
            .fold(
                (f64::INFINITY, f64::NEG_INFINITY),
                |(lo, hi), &(_, vm, _)| (lo.min(vm), hi.max(vm)),
            )
    }
}

/// The negative- over positive-sequence magnitude of three phase voltages, in %.
pub fn unbalance_pct(va: c64, vb: c64, vc: c64) -> f64 {
    let a = c64::from_polar(1.0, 2.0 * PI / 3.0);
    let a2 = a * a;
    let v1 = (va + a * vb + a2 * vc) / 3.0;
    let v2 = (va + a2 * vb + a * vc) / 3.0;
    if v1.norm() == 0.0 {
        0.0
    } else {
        v2.norm() / v1.norm() * 100.0
    }
}

pub(crate) fn report(
    system: &System,
    v: Vec<c64>,
    converged: bool,
    iterations: usize,
    control_iterations: usize,
) -> Solution {
    let circuit = system.circuit;
    let mut per_bus: Vec<Vec<(u8, c64)>> = vec![Vec::new(); circuit.buses.len()];
    for (k, &(b, n)) in system.nodes.iter().enumerate() {
        per_bus[b].push((n, v[k]));
    }
    let buses = circuit
        .buses
        .iter()
        .zip(per_bus)
        .map(|(bus, mut nodes)| {
            nodes.sort_by_key(|(n, _)| *n);
            let base = bus.kv_base_ln * 1000.0;
            let phase = |p: u8| nodes.iter().find(|(n, _)| *n == p).map(|(_, v)| *v);
            let unbalance_pct = match (phase(1), phase(2), phase(3)) {
                (Some(a), Some(b), Some(c)) => Some(unbalance_pct(a, b, c)),
                _ => None,
            };
            BusVoltages {
                bus: bus.name.clone(),
                kv_base_ln: bus.kv_base_ln,
                nodes: nodes
                    .iter()
                    .map(|&(n, v)| {
                        let vm = if base > 0.0 {
                            v.norm_sqr().sqrt() / base
                        } else {
                            v.norm_sqr().sqrt()
                        };
                        (n, vm, v.arg().to_degrees())
                    })
                    .collect(),
                unbalance_pct,
            }
        })
        .collect();
    let losses = system.losses(&v);
    let line_current_a = system.line_currents(&v);
    let line_power_kw = system.line_power_kw(&v);
    let transformer_power_kw = system.transformer_power_kw(&v);
    let transformer_loading_pct = system.transformer_loading(&v);
    Solution {
        line_current_a,
        line_power_kw,
        transformer_power_kw,
        capacitor_steps: circuit
            .capacitors
            .iter()
            .zip(&system.cap_steps)
            .map(|(c, &n)| (c.name.clone(), n))
            .collect(),
        controls_settled: system.controls_settled,
        transformer_loading_pct,
        converged,
        iterations,
        control_iterations,
        losses_kw: losses.re / 1000.0,
        losses_kvar: losses.im / 1000.0,
        total_power_kw: system.source_power(&v).re / 1000.0,
        buses,
        taps: circuit
            .transformers
            .iter()
            .zip(&system.taps)
            .map(|(t, taps)| (t.name.clone(), taps.clone()))
            .collect(),
        voltages_v: v,
        nodes: system.nodes.clone(),
    }
}

impl Circuit {
    /// Every bus's voltage base: the system's base nearest each bus's voltage with no load, as
    /// OpenDSS's `Calcvoltagebases` sets them.
    pub fn set_voltage_bases(&mut self) -> Result<(), SolveError> {
        if self.voltage_bases_kv.is_empty() {
            return Err(SolveError::NoVoltageBases);
        }
        let bases = {
            let mut system = System::new(self, true);
            let v = system.direct()?;
            let mut first: Vec<Option<c64>> = vec![None; self.buses.len()];
            for (k, &(b, _)) in system.nodes.iter().enumerate() {
                first[b].get_or_insert(v[k]);
            }
            first
                .iter()
                .map(|v| {
                    let kv_ll = v.map_or(0.0, |v| v.norm() * 0.001 * 3f64.sqrt());
                    let mut best = (f64::INFINITY, 0.0);
                    for &base in &self.voltage_bases_kv {
                        if base == 0.0 {
                            break;
                        }
                        let d = (1.0 - kv_ll / base).abs();
                        if d < best.0 {
                            best = (d, base);
                        }
                    }
                    best.1 / 3f64.sqrt()
                })
                .collect::<Vec<f64>>()
        };
        for (bus, base) in self.buses.iter_mut().zip(bases) {
            bus.kv_base_ln = base;
        }
        Ok(())
    }

    /// The power flow of the circuit as it stands (a snapshot), regulators moving taps between
    /// solutions until none needs to.
    pub fn solve(&self, opts: &SolveOptions) -> Result<Solution, SolveError> {
        PowerFlowModel::new(self)?.solve(opts)
    }
}

/// A circuit ready to solve: its element matrices built and its admittance matrix ordered for
/// factorisation (what depends on the topology alone), so that solving again (another load,
/// another tap) costs only the numbers.
pub struct PowerFlowModel<'c> {
    system: System<'c>,
    /// The taps the present factorisation is for.
    factorised_taps: Vec<Vec<f64>>,
    voltages: Vec<c64>,
    iterations: usize,
    control_iterations: usize,
}

impl<'c> PowerFlowModel<'c> {
    pub fn new(circuit: &'c Circuit) -> Result<PowerFlowModel<'c>, SolveError> {
        if circuit.buses.iter().all(|b| b.kv_base_ln == 0.0) {
            return Err(SolveError::NoVoltageBases);
        }
        let mut system = System::new(circuit, false);
        system.factorise()?;
        let factorised_taps = system.taps.clone();
        Ok(PowerFlowModel {
            system,
            factorised_taps,
            voltages: Vec::new(),
            iterations: 0,
            control_iterations: 0,
        })
    }

    /// The node voltages of a snapshot (in the order of [`Solution::nodes`]): from the direct
    /// solution, regulators sampled between solutions. The taps start where the last solve of
    /// this model left them (the circuit's own at first), as OpenDSS keeps them from one solve
    /// to the next.
    pub fn solve_voltages(&mut self, opts: &SolveOptions) -> Result<&[c64], SolveError> {
        let system = &mut self.system;
        debug_assert_eq!(self.factorised_taps, system.taps);
        let (v, iterations, control_iterations) = system.solve_with_controls(opts)?;
        self.factorised_taps.clone_from(&system.taps);
        self.voltages = v;
        self.iterations = iterations;
        self.control_iterations = control_iterations;
        Ok(&self.voltages)
    }

    /// Sets load `k`'s (in [`Circuit::loads`]' order) demand for the solves that follow, kW and
    /// kvar spread evenly over its phases; negative: it exports. The admittance matrix keeps the
    /// load's nominal admittance: only the injections change, and nothing is refactorised.
    pub fn set_load(&mut self, k: usize, kw: f64, kvar: f64) {
        let system = &mut self.system;
        assert!(
            k < system.circuit.loads.len(),
            "load {k} of {}",
            system.circuit.loads.len()
        );
        system.models[k].kw = kw;
        system.models[k].kvar = kvar;
        system.loads[k].set(&system.models[k], (1.0, 1.0));
    }

    /// A snapshot ([`PowerFlowModel::solve_voltages`]) and its report: every bus's voltages
    /// and unbalance, losses, taps, line currents and transformer loading.
    pub fn solve(&mut self, opts: &SolveOptions) -> Result<Solution, SolveError> {
        self.solve_voltages(opts)?;
        Ok(report(
            &self.system,
            self.voltages.clone(),
            true,
            self.iterations,
            self.control_iterations,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Energy is conserved: what every line, transformer and capacitor takes in, element by
    /// element (the losses a snapshot reports), is what the sources deliver less what the loads
    /// draw (the losses a time series reports), to the solution's own accuracy.
    #[test]
    fn losses_element_by_element_equal_sources_less_loads() {
        for case in ["dss/ieee13/IEEE13Nodeckt.dss", "dss/ieee-eu-lv/Master.dss"] {
            let circuit = Circuit::read_dss(&gridmesh_refdata::require(case)).unwrap();
            let mut model = PowerFlowModel::new(&circuit).unwrap();
            let sol = model.solve(&SolveOptions::default()).unwrap();
            let v = &sol.voltages_v;
            let balance = model.system.source_power(v) - model.system.load_power(v);
            let by_element = model.system.losses(v);
            assert!(
                (by_element.re / 1000.0 - sol.losses_kw).abs() < 1e-12,
                "{case}"
            );
            assert!(
                (by_element - balance).norm() < 1e-7 * model.system.source_power(v).norm(),
                "{case}: {by_element} element by element, {balance} by balance"
            );
        }
    }

    #[test]
    fn a_node_without_a_path_to_ground_is_named() {
        let script = crate::dss::parse(
            "new circuit.x basekv=12.47\nnew line.a bus1=sourcebus bus2=b r1=0.1 x1=0.2 c1=0 c0=0\nnew load.island bus1=c.1.2 phases=1 conn=delta kv=12.47 kw=10\nset voltagebases=[12.47]\n",
            std::path::Path::new("/x/island.dss"),
        )
        .unwrap();
        let circuit = Circuit::from_dss(&script).unwrap();
        let err = circuit
            .solve(&SolveOptions::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("singular") && err.contains("c."), "{err}");
    }

    /// A feeder with a four-step bank under voltage control at its end.
    fn banked(on_v: f64, off_v: f64, states: &str) -> Circuit {
        let text = format!(
            "new circuit.c basekv=12.47 pu=1.0 mvasc3=200 mvasc1=200\n\
             new line.l1 bus1=sourcebus bus2=b1 phases=3 r1=0.3 x1=0.6 r0=0.6 x0=1.2 length=5 units=km\n\
             new load.ld bus1=b1 phases=3 kv=12.47 kw=3000 pf=0.9\n\
             new capacitor.c1 bus1=b1 phases=3 kv=12.47 kvar=1200 numsteps=4 states={states}\n\
             new capcontrol.cc element=line.l1 terminal=2 capacitor=c1 type=voltage ptratio=60 onsetting={on_v} offsetting={off_v} ptphase=avg\n\
             set voltagebases=[12.47]\ncalcv\n"
        );
        let script = crate::dss::parse(&text, std::path::Path::new("/x/banked.dss")).unwrap();
        Circuit::from_dss(&script).unwrap()
    }

    /// The control's voltage at b1 (the average phase over the PT ratio) with `steps` in.
    fn control_v(steps: u32) -> f64 {
        let fixed = [
            "[0 0 0 0]",
            "[1 0 0 0]",
            "[1 1 0 0]",
            "[1 1 1 0]",
            "[1 1 1 1]",
        ];
        // Settings no voltage reaches: the control never acts.
        let c = banked(0.0, 1e6, fixed[steps as usize]);
        let sol = c.solve(&SolveOptions::default()).unwrap();
        assert_eq!(sol.capacitor_steps, vec![("c1".to_string(), steps)]);
        let b1 = sol.buses.iter().find(|b| b.bus == "b1").unwrap();
        let avg = b1.nodes.iter().map(|n| n.1).sum::<f64>() / 3.0;
        avg * b1.kv_base_ln * 1000.0 / 60.0
    }

    /// Steps close one per control pass while the voltage is under `on`, and stop where it is
    /// not; settings that make a step overshoot both ways never settle, and the solution says so.
    #[test]
    fn a_voltage_control_closes_steps_until_the_voltage_is_up() {
        let v: Vec<f64> = (0..=4).map(control_v).collect();
        assert!(
            v.windows(2).all(|w| w[1] > w[0] + 0.1),
            "each step lifts: {v:?}"
        );
        // Under `on` until the third step is in.
        let on = (v[2] + v[3]) / 2.0;
        let sol = banked(on, on + 10.0, "[0 0 0 0]")
            .solve(&SolveOptions::default())
            .unwrap();
        assert_eq!(sol.capacitor_steps[0].1, 3);
        assert!(sol.controls_settled);
        assert_eq!(
            sol.control_iterations, 4,
            "three steps, one per pass, then a quiet pass"
        );
        let b1 = sol.buses.iter().find(|b| b.bus == "b1").unwrap();
        let avg = b1.nodes.iter().map(|n| n.1).sum::<f64>() / 3.0 * b1.kv_base_ln * 1000.0 / 60.0;
        assert!((avg - v[3]).abs() < 1e-6, "{avg} against {}", v[3]);
        // Over `off` with every step in: steps open until it is not.
        let off = (v[1] + v[2]) / 2.0;
        let sol = banked(0.0, off, "[1 1 1 1]")
            .solve(&SolveOptions::default())
            .unwrap();
        assert_eq!(sol.capacitor_steps[0].1, 1);
        // One step overshoots past `off`, and out again under `on`: it hunts.
        let on = (v[0] + v[1]) / 2.0;
        let off = on + (v[1] - v[0]) / 4.0;
        let sol = banked(on, off, "[0 0 0 0]")
            .solve(&SolveOptions::default())
            .unwrap();
        assert!(!sol.controls_settled);
        assert_eq!(
            sol.control_iterations,
            SolveOptions::default().max_control_iterations
        );
    }
}
