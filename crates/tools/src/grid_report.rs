//! `gridmesh grid powerflow --case FILE.m|FEEDER.toml [--json]`: AC power flow on a MATPOWER case
//! or a TOML feeder (bus numbers: `pcc` 1, `lv` 2, then the listed buses), with the limits it
//! violates.

use std::collections::BTreeMap;

use anyhow::Context;
use gridmesh_grid::{newton_raphson, parse_case, PowerFlowOptions};
use serde::Serialize;

#[derive(Serialize, Debug)]
pub struct MinVoltage {
    pub bus: u32,
    pub vm_pu: f64,
}

#[derive(Serialize, Debug)]
pub struct VoltageViolation {
    pub bus: u32,
    pub vm_pu: f64,
    pub vmin_pu: f64,
    pub vmax_pu: f64,
}

#[derive(Serialize, Debug)]
pub struct Overload {
    pub from_bus: u32,
    pub to_bus: u32,
    pub flow_mva: f64,
    pub rate_a_mva: f64,
    pub loading_pct: f64,
}

/// The JSON result.
#[derive(Serialize, Debug)]
pub struct PowerFlowReport {
    pub case: String,
    pub converged: bool,
    pub iterations: usize,
    pub mismatch_pu: f64,
    pub losses_kw: f64,
    pub min_vm: MinVoltage,
    /// Keyed by MATPOWER bus number.
    pub vm_pu: BTreeMap<u32, f64>,
    pub va_deg: BTreeMap<u32, f64>,
    /// Buses outside their [vmin, vmax] band.
    pub voltage_violations: Vec<VoltageViolation>,
    /// Branches whose larger end flow exceeds RATE_A (0 = unlimited).
    pub overloaded_branches: Vec<Overload>,
}

/// Reads a case and solves it; non-convergence is an error with the reason.
pub fn powerflow(path: &std::path::Path) -> anyhow::Result<PowerFlowReport> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let net = if path.extension().is_some_and(|e| e == "toml") {
        gridmesh_grid::Feeder::from_toml(&text)
            .with_context(|| format!("in {}", path.display()))?
            .network
    } else {
        parse_case(&text).with_context(|| format!("in {}", path.display()))?
    };
    let pf = newton_raphson(&net, &PowerFlowOptions::default())
        .with_context(|| format!("power flow on {}", path.display()))?;
    let (imin, vmin) = pf.min_voltage();
    let number = |i: usize| net.buses[i].number;
    Ok(PowerFlowReport {
        case: if net.name.is_empty() {
            path.file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default()
        } else {
            net.name.clone()
        },
        converged: true,
        iterations: pf.iterations,
        mismatch_pu: pf.mismatch_pu,
        losses_kw: pf.losses_mw * 1000.0,
        min_vm: MinVoltage {
            bus: number(imin),
            vm_pu: vmin,
        },
        vm_pu: (0..net.buses.len())
            .map(|i| (number(i), pf.vm_pu[i]))
            .collect(),
        va_deg: (0..net.buses.len())
            .map(|i| (number(i), pf.va_deg[i]))
            .collect(),
        voltage_violations: net
            .buses
            .iter()
            .zip(&pf.vm_pu)
            .filter(|(b, &v)| v < b.vmin_pu - 1e-9 || v > b.vmax_pu + 1e-9)
            .map(|(b, &v)| VoltageViolation {
                bus: b.number,
                vm_pu: v,
                vmin_pu: b.vmin_pu,
                vmax_pu: b.vmax_pu,
            })
            .collect(),
        overloaded_branches: net
            .branches
            .iter()
            .enumerate()
            .filter(|(_, br)| br.in_service && br.rate_a_mva > 0.0)
            .filter_map(|(k, br)| {
                let flow = pf.branches[k].max_mva();
                (flow > br.rate_a_mva).then(|| Overload {
                    from_bus: number(br.from),
                    to_bus: number(br.to),
                    flow_mva: flow,
                    rate_a_mva: br.rate_a_mva,
                    loading_pct: 100.0 * flow / br.rate_a_mva,
                })
            })
            .collect(),
    })
}

impl std::fmt::Display for PowerFlowReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{}: converged in {} iterations (mismatch {:.1e} pu), losses {:.3} kW, lowest voltage {:.5} pu at bus {}",
            self.case, self.iterations, self.mismatch_pu, self.losses_kw, self.min_vm.vm_pu, self.min_vm.bus
        )?;
        writeln!(
            f,
            "{} buses outside their voltage band, {} branches over their rating",
            self.voltage_violations.len(),
            self.overloaded_branches.len()
        )?;
        for v in &self.voltage_violations {
            writeln!(
                f,
                "  bus {}: {:.4} pu outside [{}, {}]",
                v.bus, v.vm_pu, v.vmin_pu, v.vmax_pu
            )?;
        }
        for o in &self.overloaded_branches {
            writeln!(
                f,
                "  branch {}-{}: {:.2} MVA of {} ({:.0}%)",
                o.from_bus, o.to_bus, o.flow_mva, o.rate_a_mva, o.loading_pct
            )?;
        }
        Ok(())
    }
}

/// One transition of the islanding controller, as reported.
#[derive(Serialize, Debug)]
pub struct TransitionOut {
    /// Time since the scenario's start, `HH:MM`.
    pub at: String,
    pub at_ms: u64,
    /// `islanded`, `resynchronising` or `reconnected`.
    pub kind: &'static str,
    /// For `islanded`: `outage` or `reading lost since HH:MM`.
    pub cause: Option<String>,
}

/// One outage's KPIs, as reported.
#[derive(Serialize, Debug)]
pub struct OutageOut {
    pub islanded_at: String,
    pub reconnected_at: Option<String>,
    pub minutes_islanded: f64,
    pub energy_not_served_kwh: f64,
    pub critical_load_served_pct: f64,
    pub lowest_battery_soc_pct: f64,
}

/// `gridmesh grid island --scenario FILE.toml`: the run's transitions and KPIs.
#[derive(Serialize, Debug)]
pub struct IslandReport {
    pub homes: usize,
    pub steps: usize,
    pub transitions: Vec<TransitionOut>,
    pub outages: Vec<OutageOut>,
    pub energy_demand_kwh: f64,
    pub energy_served_kwh: f64,
    pub pv_curtailed_kwh: f64,
}

fn clock(ms: u64) -> String {
    let minutes = ms / 60_000;
    format!("{:02}:{:02}", minutes / 60, minutes % 60)
}

/// Runs an outage scenario file through the islanding controller.
pub fn island(path: &std::path::Path) -> anyhow::Result<IslandReport> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    island_from_toml(&text).with_context(|| format!("in {}", path.display()))
}

/// Runs an outage scenario (its TOML text) through the islanding controller.
pub fn island_from_toml(text: &str) -> anyhow::Result<IslandReport> {
    use gridmesh_grid::island::{Cause, Transition};
    let scenario = gridmesh_grid::outage::OutageScenario::from_toml(text)?;
    let run = scenario.run();
    let step_h = f64::from(scenario.step_minutes) / 60.0;
    Ok(IslandReport {
        homes: scenario.homes,
        steps: run.steps.len(),
        transitions: run
            .transitions
            .iter()
            .map(|t| {
                let (kind, cause) = match t {
                    Transition::Islanded { cause, .. } => (
                        "islanded",
                        Some(match cause {
                            Cause::Outage => "outage".to_string(),
                            Cause::ReadingLost { last_seen_ms } => {
                                format!("reading lost since {}", clock(*last_seen_ms))
                            }
                        }),
                    ),
                    Transition::Resynchronising { .. } => ("resynchronising", None),
                    Transition::Reconnected { .. } => ("reconnected", None),
                };
                TransitionOut {
                    at: clock(t.at_ms()),
                    at_ms: t.at_ms(),
                    kind,
                    cause,
                }
            })
            .collect(),
        outages: run
            .outages
            .iter()
            .map(|o| OutageOut {
                islanded_at: clock(o.islanded_at_ms),
                reconnected_at: o.reconnected_at_ms.map(clock),
                minutes_islanded: o.minutes_islanded,
                energy_not_served_kwh: o.energy_not_served_kwh,
                critical_load_served_pct: 100.0 * o.critical_served_share,
                lowest_battery_soc_pct: o.lowest_soc_pct,
            })
            .collect(),
        energy_demand_kwh: run.steps.iter().map(|s| s.demand_kw * step_h).sum(),
        energy_served_kwh: run
            .steps
            .iter()
            .map(|s| s.dispatch.served_kw * step_h)
            .sum(),
        pv_curtailed_kwh: run
            .steps
            .iter()
            .map(|s| s.dispatch.pv_curtailed_kw * step_h)
            .sum(),
    })
}

impl std::fmt::Display for IslandReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{} homes, {} steps: {:.1} of {:.1} kWh served, {:.1} kWh of PV curtailed",
            self.homes,
            self.steps,
            self.energy_served_kwh,
            self.energy_demand_kwh,
            self.pv_curtailed_kwh
        )?;
        for t in &self.transitions {
            writeln!(
                f,
                "  {} {}{}",
                t.at,
                t.kind,
                t.cause
                    .as_ref()
                    .map(|c| format!(" ({c})"))
                    .unwrap_or_default()
            )?;
        }
        for o in &self.outages {
            writeln!(
                f,
                "outage at {}: {:.0} min islanded, {:.1} kWh not served, {:.1}% of critical load served, battery down to {:.1}%",
                o.islanded_at,
                o.minutes_islanded,
                o.energy_not_served_kwh,
                o.critical_load_served_pct,
                o.lowest_battery_soc_pct
            )?;
        }
        Ok(())
    }
}
