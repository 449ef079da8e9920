//! `gridmesh grid powerflow --case MASTER.dss` and `gridmesh grid timeseries`: the unbalanced
//! three-phase power flow of an OpenDSS feeder, reported per bus and node as OpenDSS's
//! `puVmagAngle`, with EN 50160's violations; and the feeder's day through its load shapes.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context;
use gridmesh_grid::unbalanced::{Circuit, Solution, ViolationKind};
use serde::Serialize;

/// One violation of EN 50160's limits.
#[derive(Serialize, Debug)]
pub struct ViolationOut {
    pub bus: String,
    /// The phase for a voltage; absent for a bus's unbalance.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<u8>,
    /// `undervoltage` (below 0.9 pu), `overvoltage` (above 1.1 pu) or `unbalance` (above 2 %).
    pub kind: &'static str,
    /// pu for a voltage, % for unbalance.
    pub value: f64,
}

#[derive(Serialize, Debug)]
pub struct NodeVoltage {
    pub bus: String,
    pub node: u8,
    pub vm_pu: f64,
}

/// The JSON result of an unbalanced power flow.
#[derive(Serialize, Debug)]
pub struct UnbalancedReport {
    pub case: String,
    pub converged: bool,
    pub iterations: usize,
    pub control_iterations: usize,
    pub losses_kw: f64,
    pub total_power_kw: f64,
    /// Bus → node → `[vm_pu, va_deg]`, line-to-neutral on the bus's base.
    pub buses: BTreeMap<String, BTreeMap<String, [f64; 2]>>,
    /// Bus → its line-to-neutral base in kV.
    pub kv_base_ln: BTreeMap<String, f64>,
    /// Three-phase bus → negative- over positive-sequence voltage in %.
    pub unbalance_pct: BTreeMap<String, f64>,
    /// Transformer → its windings' taps in pu, as the regulators left them.
    pub taps: BTreeMap<String, Vec<f64>>,
    /// Capacitor → its steps in service, as its control left them.
    pub capacitor_steps: BTreeMap<String, u32>,
    /// False when the controls still acted as the control iterations ran out (OpenDSS warns
    /// "Max Control Iterations Exceeded").
    pub controls_settled: bool,
    pub min_vm: NodeVoltage,
    pub max_vm: NodeVoltage,
    pub violations: Vec<ViolationOut>,
}

fn kind(k: ViolationKind) -> &'static str {
    match k {
        ViolationKind::Undervoltage => "undervoltage",
        ViolationKind::Overvoltage => "overvoltage",
        ViolationKind::Unbalance => "unbalance",
    }
}

fn case_name(path: &Path, circuit: &Circuit) -> String {
    if circuit.name.is_empty() {
        path.file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default()
    } else {
        circuit.name.clone()
    }
}

fn extreme(sol: &Solution, lowest: bool) -> NodeVoltage {
    let mut best: Option<NodeVoltage> = None;
    for b in &sol.buses {
        for &(node, vm, _) in &b.nodes {
            if !(1..=3).contains(&node) {
                continue;
            }
            let better = best
                .as_ref()
                .is_none_or(|x| if lowest { vm < x.vm_pu } else { vm > x.vm_pu });
            if better {
                best = Some(NodeVoltage {
                    bus: b.bus.clone(),
                    node,
                    vm_pu: vm,
                });
            }
        }
    }
    best.unwrap_or(NodeVoltage {
        bus: String::new(),
        node: 0,
        vm_pu: f64::NAN,
    })
}

/// Reads an OpenDSS feeder.
pub fn read(path: &Path) -> anyhow::Result<Circuit> {
    Circuit::read_dss(path)
        .with_context(|| format!("reading the OpenDSS feeder {}", path.display()))
}

/// The report of a solved circuit.
pub fn report(case: String, sol: &Solution) -> UnbalancedReport {
    UnbalancedReport {
        case,
        converged: sol.converged,
        iterations: sol.iterations,
        control_iterations: sol.control_iterations,
        losses_kw: sol.losses_kw,
        total_power_kw: sol.total_power_kw,
        buses: sol
            .buses
            .iter()
            .map(|b| {
                (
                    b.bus.clone(),
                    b.nodes
                        .iter()
                        .map(|&(n, vm, va)| (n.to_string(), [vm, va]))
                        .collect(),
                )
            })
            .collect(),
        kv_base_ln: sol
            .buses
            .iter()
            .map(|b| (b.bus.clone(), b.kv_base_ln))
            .collect(),
        unbalance_pct: sol
            .buses
            .iter()
            .filter_map(|b| b.unbalance_pct.map(|u| (b.bus.clone(), u)))
            .collect(),
        taps: sol.taps.iter().cloned().collect(),
        capacitor_steps: sol.capacitor_steps.iter().cloned().collect(),
        controls_settled: sol.controls_settled,
        min_vm: extreme(sol, true),
        max_vm: extreme(sol, false),
        violations: sol
            .violations()
            .into_iter()
            .map(|v| ViolationOut {
                bus: v.bus,
                node: (v.node != 0).then_some(v.node),
                kind: kind(v.kind),
                value: v.value,
            })
            .collect(),
    }
}

/// `gridmesh grid powerflow --case MASTER.dss`.
pub fn powerflow(path: &Path) -> anyhow::Result<UnbalancedReport> {
    let circuit = read(path)?;
    let sol = circuit
        .solve(&circuit.solve_options)
        .with_context(|| format!("power flow on {}", path.display()))?;
    Ok(report(case_name(path, &circuit), &sol))
}

impl std::fmt::Display for UnbalancedReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{}: converged in {} iterations ({} control {}); {} kW delivered, {} kW lost ({:.2} %)",
            self.case,
            self.iterations,
            self.control_iterations,
            if self.control_iterations == 1 {
                "pass"
            } else {
                "passes"
            },
            kw(self.total_power_kw),
            kw(self.losses_kw),
            100.0 * self.losses_kw / self.total_power_kw.max(f64::MIN_POSITIVE),
        )?;
        writeln!(
            f,
            "voltages {:.4} pu ({}.{}) to {:.4} pu ({}.{}); most unbalanced bus {}",
            self.min_vm.vm_pu,
            self.min_vm.bus,
            self.min_vm.node,
            self.max_vm.vm_pu,
            self.max_vm.bus,
            self.max_vm.node,
            self.unbalance_pct
                .iter()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .map_or("none".to_string(), |(b, u)| format!("{b} at {u:.2} %")),
        )?;
        if !self.controls_settled {
            writeln!(
                f,
                "warning: the regulators and capacitor controls were still acting after {} control passes (set maxcontroliter higher, or widen their bands)",
                self.control_iterations
            )?;
        }
        for (c, steps) in &self.capacitor_steps {
            writeln!(
                f,
                "  capacitor {c}: {steps} step{} in",
                if *steps == 1 { "" } else { "s" }
            )?;
        }
        for (t, taps) in &self.taps {
            if taps.iter().any(|&x| x != 1.0) {
                let taps: Vec<String> = taps.iter().map(|x| format!("{x:.5}")).collect();
                writeln!(f, "  transformer {t}: taps {}", taps.join(", "))?;
            }
        }
        if self.violations.is_empty() {
            writeln!(
                f,
                "within EN 50160 (0.9-1.1 pu, unbalance up to 2 %) everywhere"
            )?;
        } else {
            writeln!(f, "{} EN 50160 violations:", self.violations.len())?;
            for v in &self.violations {
                match v.node {
                    Some(n) => writeln!(f, "  {}.{n}: {} {:.4} pu", v.bus, v.kind, v.value)?,
                    None => writeln!(f, "  {}: {} {:.2} %", v.bus, v.kind, v.value)?,
                }
            }
        }
        Ok(())
    }
}

/// One step of a time series, as reported.
#[derive(Serialize, Debug)]
pub struct StepOut {
    pub minute: f64,
    pub vmin_pu: f64,
    pub vmax_pu: f64,
    pub losses_kw: f64,
    pub total_power_kw: f64,
}

#[derive(Serialize, Debug)]
pub struct Extreme {
    pub minute: f64,
    pub vm_pu: f64,
}

/// `gridmesh grid timeseries`: every step's extremes and power, and the run's totals.
#[derive(Serialize, Debug)]
pub struct TimeSeriesReport {
    pub case: String,
    pub steps: usize,
    pub step_minutes: f64,
    /// Wall-clock seconds the solves took.
    pub seconds: f64,
    pub energy_kwh: f64,
    pub losses_kwh: f64,
    pub lowest: Extreme,
    pub highest: Extreme,
    /// Steps with a node outside 0.9-1.1 pu.
    pub steps_outside_limits: usize,
    pub series: Vec<StepOut>,
}

/// `gridmesh grid timeseries --case MASTER.dss --minutes N`: the feeder through its load shapes
/// (OpenDSS's yearly mode: step `k` at minute `k × step`).
pub fn timeseries(
    path: &Path,
    minutes: usize,
    step_minutes: f64,
) -> anyhow::Result<TimeSeriesReport> {
    anyhow::ensure!(step_minutes > 0.0, "--step-minutes must be above 0");
    let circuit = read(path)?;
    let steps = (minutes as f64 / step_minutes).round() as usize;
    anyhow::ensure!(
        steps >= 1,
        "--minutes {minutes} holds no step of {step_minutes} minutes"
    );
    let t0 = std::time::Instant::now();
    let day = circuit
        .time_series(steps, step_minutes / 60.0, &circuit.solve_options, &[])
        .with_context(|| format!("time series on {}", path.display()))?;
    let seconds = t0.elapsed().as_secs_f64();
    let h = step_minutes / 60.0;
    let lowest = day
        .steps
        .iter()
        .min_by(|a, b| a.vmin_pu.total_cmp(&b.vmin_pu))
        .expect("at least one step");
    let highest = day
        .steps
        .iter()
        .max_by(|a, b| a.vmax_pu.total_cmp(&b.vmax_pu))
        .expect("at least one step");
    Ok(TimeSeriesReport {
        case: case_name(path, &circuit),
        steps,
        step_minutes,
        seconds,
        energy_kwh: day.steps.iter().map(|s| s.total_power_kw * h).sum(),
        losses_kwh: day.steps.iter().map(|s| s.losses_kw * h).sum(),
        lowest: Extreme {
            minute: lowest.hour * 60.0,
            vm_pu: lowest.vmin_pu,
        },
        highest: Extreme {
            minute: highest.hour * 60.0,
            vm_pu: highest.vmax_pu,
        },
        steps_outside_limits: day
            .steps
            .iter()
            .filter(|s| s.vmin_pu < 0.9 || s.vmax_pu > 1.1)
            .count(),
        series: day
            .steps
            .iter()
            .map(|s| StepOut {
                minute: s.hour * 60.0,
                vmin_pu: s.vmin_pu,
                vmax_pu: s.vmax_pu,
                losses_kw: s.losses_kw,
                total_power_kw: s.total_power_kw,
            })
            .collect(),
    })
}

/// A power or energy for people: whole with thousands separators from 100 up, three
/// significant digits below.
fn kw(x: f64) -> String {
    let a = x.abs();
    if a >= 100.0 {
        let digits = format!("{:.0}", a);
        let mut out = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i) % 3 == 0 {
                out.push(',');
            }
            out.push(c);
        }
        format!("{}{out}", if x < 0.0 { "-" } else { "" })
    } else if a >= 10.0 {
        format!("{x:.1}")
    } else if a >= 1.0 {
        format!("{x:.2}")
    } else {
        format!("{x:.3}")
    }
}

fn clock(minute: f64) -> String {
    let m = minute.round() as i64;
    format!("{:02}:{:02}", (m / 60) % 24, m % 60)
}

impl std::fmt::Display for TimeSeriesReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{}: {} steps of {} min solved in {:.2} s",
            self.case, self.steps, self.step_minutes, self.seconds
        )?;
        writeln!(
            f,
            "{} kWh delivered, {} kWh lost; voltages from {:.4} pu ({}) to {:.4} pu ({}); {} steps outside 0.9-1.1 pu",
            kw(self.energy_kwh),
            kw(self.losses_kwh),
            self.lowest.vm_pu,
            clock(self.lowest.minute),
            self.highest.vm_pu,
            clock(self.highest.minute),
            self.steps_outside_limits
        )
    }
}

/// One bus and phase's hosting capacity.
#[derive(Serialize, Debug)]
pub struct HostingOut {
    pub bus: String,
    pub phase: u8,
    pub kw: f64,
    pub limit: gridmesh_grid::unbalanced::Limit,
}

/// `gridmesh grid hosting-capacity`.
#[derive(Serialize, Debug)]
pub struct HostingReport {
    pub case: String,
    /// The loads' multiplier the capacity holds at (PV's worst case is light load).
    pub load_mult: f64,
    pub resolution_kw: f64,
    pub seconds: f64,
    pub answers: Vec<HostingOut>,
}

/// `gridmesh grid hosting-capacity --case MASTER.dss`: per bus and phase the most single-phase PV
/// that fits before a voltage (0.9-1.1 pu), unbalance (2 %), line or transformer limit binds.
pub fn hosting_capacity(
    path: &Path,
    load_mult: Option<f64>,
    all_buses: bool,
    resolution_kw: f64,
) -> anyhow::Result<HostingReport> {
    use gridmesh_grid::unbalanced::HostingOptions;
    anyhow::ensure!(resolution_kw > 0.0, "--resolution-kw must be above 0");
    let mut circuit = read(path)?;
    if let Some(m) = load_mult {
        anyhow::ensure!(m >= 0.0, "--load-mult must be 0 or more");
        circuit.load_mult = m;
    }
    let opts = HostingOptions {
        all_buses,
        resolution_kw,
        ..HostingOptions::default()
    };
    let t0 = std::time::Instant::now();
    let answers = circuit
        .hosting_capacity(&circuit.solve_options, &opts)
        .with_context(|| format!("hosting capacity on {}", path.display()))?;
    let seconds = t0.elapsed().as_secs_f64();
    Ok(HostingReport {
        case: case_name(path, &circuit),
        load_mult: circuit.load_mult,
        resolution_kw,
        seconds,
        answers: answers
            .into_iter()
            .map(|h| HostingOut {
                bus: h.bus,
                phase: h.node,
                kw: h.kw,
                limit: h.limit,
            })
            .collect(),
    })
}

impl std::fmt::Display for HostingReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{}: PV hosting capacity of {} bus phases at {} × the loads, to {} kW ({:.1} s)",
            self.case,
            self.answers.len(),
            self.load_mult,
            self.resolution_kw,
            self.seconds
        )?;
        let mut sorted: Vec<&HostingOut> = self.answers.iter().collect();
        sorted.sort_by(|a, b| a.kw.total_cmp(&b.kw));
        for a in sorted {
            writeln!(
                f,
                "  {:>12}  {:>8} kW  {}",
                format!("{}.{}", a.bus, a.phase),
                kw(a.kw),
                a.limit
            )?;
        }
        Ok(())
    }
}

/// `gridmesh grid envelopes --case MASTER.dss`: every single-phase home's operating envelope on
/// its phase around the loads as they stand.
#[derive(Serialize, Debug)]
pub struct EnvelopeReport {
    pub case: String,
    pub load_mult: f64,
    pub seconds: f64,
    #[serde(flatten)]
    pub envelopes: gridmesh_grid::unbalanced::PhaseEnvelopes,
}

pub fn envelopes(path: &Path, load_mult: Option<f64>) -> anyhow::Result<EnvelopeReport> {
    let mut circuit = read(path)?;
    if let Some(m) = load_mult {
        anyhow::ensure!(m >= 0.0, "--load-mult must be 0 or more");
        circuit.load_mult = m;
    }
    let t0 = std::time::Instant::now();
    let envelopes = circuit
        .phase_envelopes(&circuit.solve_options, &Default::default())
        .with_context(|| format!("operating envelopes on {}", path.display()))?;
    Ok(EnvelopeReport {
        case: case_name(path, &circuit),
        load_mult: circuit.load_mult,
        seconds: t0.elapsed().as_secs_f64(),
        envelopes,
    })
}

impl std::fmt::Display for EnvelopeReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{}: operating envelopes of {} homes on their phases at {} × the loads ({:.2} s; corners verified in {} and {} rounds)",
            self.case,
            self.envelopes.homes.len(),
            self.load_mult,
            self.seconds,
            self.envelopes.import_rounds,
            self.envelopes.export_rounds
        )?;
        if let Some(broken) = &self.envelopes.base_violation {
            return writeln!(
                f,
                "the loads as they stand already break a limit ({broken}): no home may move, every envelope is 0"
            );
        }
        for h in &self.envelopes.homes {
            writeln!(
                f,
                "  {:>12} {:>10}  import {:>7} kW (by {}), export {:>7} kW (by {})",
                h.load,
                format!("{}.{}", h.bus, h.phase),
                kw(h.import_kw),
                h.import_bound_by,
                kw(h.export_kw),
                h.export_bound_by
            )?;
        }
        Ok(())
    }
}
