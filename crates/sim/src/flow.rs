//! The feeder slot by slot: its power flow for the homes' exchange, and the grid operator's
//! operating envelopes for the next slot around a forecast.
//!
//! - Balanced feeders (generated or MATPOWER): the radial sweep; an envelope per home's bus
//!   ([`gridmesh_grid::envelope`]).
//! - OpenDSS feeders: the unbalanced power flow phase by phase, the regulators' taps carried
//!   from slot to slot as OpenDSS keeps them; an envelope per home on its own phase
//!   ([`Circuit::phase_envelopes`]). A load that several homes took shares its envelope equally
//!   among the trading homes on it.
//!
//! Cost per slot: O(buses) for the sweep; for an unbalanced feeder one fixed-point solve on the
//! factorisation built once (refactorised only when a regulator moves a tap), and for envelopes
//! a factorisation, one impedance column per home and a few verifying solves.

use gridmesh_grid::envelope::{operating_envelopes, EnvelopeOptions, Violation};
use gridmesh_grid::powerflow::{PowerFlow, PowerFlowOptions};
use gridmesh_grid::snapshot::{SlotRow, Snapshot};
use gridmesh_grid::sweep::RadialFeeder;
use gridmesh_grid::unbalanced::{
    Circuit, HostingOptions, PhaseEnvelopeOptions, PowerFlowModel, Solution,
};
use gridmesh_grid::{BusKind, Network};

use crate::engine::SimError;
use crate::feeder::{Feeder, Grid};
use crate::kpi::FlowFigures;

/// Largest voltage unbalance of a three-phase bus, % (EN 50160).
const UNBALANCE_MAX_PCT: f64 = 2.0;
/// Minutes of a slot.
const SLOT_MINUTES: u32 = 15;

/// A slot's solved power flow.
pub enum Solved {
    Balanced(PowerFlow),
    Unbalanced(Box<Solution>),
}

/// The feeder's power flow and envelopes during a run.
pub struct SlotFlow<'f> {
    feeder: &'f Feeder,
    band_pu: (f64, f64),
    kind: Kind<'f>,
}

enum Kind<'f> {
    Balanced {
        radial: Box<RadialFeeder>,
        /// The slot's loads.
        loaded: Network,
        /// The forecast the envelopes are made around.
        forecast: Network,
    },
    Unbalanced {
        circuit: &'f Circuit,
        model: Box<PowerFlowModel<'f>>,
        forecast: Box<Circuit>,
        /// The number of homes on each load (0: none).
        homes_on: Vec<usize>,
    },
}

impl<'f> SlotFlow<'f> {
    /// Ready to solve `feeder`, judging voltages against `band_pu` (low, high).
    pub fn new(feeder: &'f Feeder, band_pu: (f64, f64)) -> Result<SlotFlow<'f>, SimError> {
        let kind = match &feeder.grid {
            Grid::Balanced(net) => Kind::Balanced {
                radial: Box::new(
                    RadialFeeder::new(net).map_err(|e| SimError::Feeder(e.to_string()))?,
                ),
                loaded: net.clone(),
                forecast: net.clone(),
            },
            Grid::Unbalanced(circuit) => {
                let mut homes_on = vec![0; circuit.loads.len()];
                for &k in &feeder.home_site {
                    homes_on[k] += 1;
                }
                Kind::Unbalanced {
                    circuit,
                    model: Box::new(
                        PowerFlowModel::new(circuit)
                            .map_err(|e| SimError::Feeder(e.to_string()))?,
                    ),
                    forecast: circuit.clone(),
                    homes_on,
                }
            }
        };
        Ok(SlotFlow {
            feeder,
            band_pu,
            kind,
        })
    }

    /// The envelopes, energy over a slot in mWh (import, export), of the homes `traders`, around
    /// a forecast where the homes `others` exchange what they say (home, kW, import positive).
    /// `Err`: why there are none (the forecast already breaks a limit, or it does not solve).
    pub fn envelopes(
        &mut self,
        traders: &[usize],
        others: impl Iterator<Item = (usize, f64)>,
    ) -> Result<Vec<(u64, u64)>, String> {
        let sites = &self.feeder.home_site;
        match &mut self.kind {
            Kind::Balanced { forecast, .. } => {
                for b in &mut forecast.buses {
                    b.load_mw = 0.0;
                    b.load_mvar = 0.0;
                }
                for (i, kw) in others {
                    forecast.buses[sites[i]].load_mw += kw / 1e3;
                }
                let buses: Vec<usize> = traders.iter().map(|&i| sites[i]).collect();
                let env = operating_envelopes(forecast, &buses, &EnvelopeOptions::default())
                    .map_err(|e| e.to_string())?;
                Ok(env
                    .connections
                    .iter()
                    .map(|e| e.energy_mwh(SLOT_MINUTES))
                    .collect())
            }
            Kind::Unbalanced {
                forecast, homes_on, ..
            } => {
                for l in &mut forecast.loads {
                    l.kw = 0.0;
                    l.kvar = 0.0;
                }
                for (i, kw) in others {
                    forecast.loads[sites[i]].kw += kw;
                }
                let opts = PhaseEnvelopeOptions {
                    limits: HostingOptions {
                        vmin_pu: self.band_pu.0,
                        vmax_pu: self.band_pu.1,
                        ..HostingOptions::default()
                    },
                    ..PhaseEnvelopeOptions::default()
                };
                let env = forecast
                    .phase_envelopes(&forecast.solve_options, &opts)
                    .map_err(|e| e.to_string())?;
                if let Some(broken) = env.base_violation {
                    return Err(format!("the forecast already breaks a limit: {broken}"));
                }
                // Trading homes per load: they share its envelope.
                let mut traders_on = vec![0usize; homes_on.len()];
                for &i in traders {
                    traders_on[sites[i]] += 1;
                }
                traders
                    .iter()
                    .map(|&i| {
                        let load = &forecast.loads[sites[i]].name;
                        let e = env
                            .homes
                            .iter()
                            .find(|e| e.load == *load)
                            .ok_or_else(|| format!("no envelope for load `{load}`"))?;
                        let (import_mwh, export_mwh) = e.energy_mwh(SLOT_MINUTES);
                        let share = traders_on[sites[i]] as u64;
                        Ok((import_mwh / share, export_mwh / share))
                    })
                    .collect()
            }
        }
    }

    /// The power flow with each home exchanging `net_kw` (import positive) and drawing
    /// `kvar`.
    pub fn solve(&mut self, net_kw: &[f64], kvar: &[f64]) -> Result<Solved, String> {
        let sites = &self.feeder.home_site;
        match &mut self.kind {
            Kind::Balanced { radial, loaded, .. } => {
                for b in &mut loaded.buses {
                    b.load_mw = 0.0;
                    b.load_mvar = 0.0;
                }
                for (i, &bus) in sites.iter().enumerate() {
                    loaded.buses[bus].load_mw += net_kw[i] / 1e3;
                    loaded.buses[bus].load_mvar += kvar[i] / 1e3;
                }
                radial
                    .solve(loaded, &PowerFlowOptions::default())
                    .map(Solved::Balanced)
                    .map_err(|e| e.to_string())
            }
            Kind::Unbalanced {
                circuit,
                model,
                homes_on,
                ..
            } => {
                let mut per_load = vec![(0.0, 0.0); homes_on.len()];
                for (i, &k) in sites.iter().enumerate() {
                    per_load[k].0 += net_kw[i];
                    per_load[k].1 += kvar[i];
                }
                for (k, &(kw, kvar)) in per_load.iter().enumerate() {
                    if homes_on[k] > 0 {
                        model.set_load(k, kw, kvar);
                    }
                }
                model
                    .solve(&circuit.solve_options)
                    .map_err(|e| e.to_string())
                    .and_then(|sol| {
                        if sol.converged {
                            Ok(Solved::Unbalanced(Box::new(sol)))
                        } else {
                            Err(format!(
                                "no convergence in {} iterations",
                                circuit.solve_options.max_iterations
                            ))
                        }
                    })
            }
        }
    }

    /// What a solved slot gave: losses, voltages, violations, transformer loading.
    pub fn figures(&self, solved: &Solved) -> FlowFigures {
        let (lo_band, hi_band) = self.band_pu;
        match (&self.kind, solved) {
            (Kind::Balanced { loaded, .. }, Solved::Balanced(pf)) => {
                let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
                for (b, v) in loaded.buses.iter().zip(&pf.vm_pu) {
                    if b.kind != BusKind::Slack {
                        lo = lo.min(*v);
                        hi = hi.max(*v);
                    }
                }
                let violations = gridmesh_grid::envelope::violations(loaded, pf);
                let voltage = violations
                    .iter()
                    .filter(|v| matches!(v, Violation::Voltage { .. }))
                    .count();
                FlowFigures {
                    losses_kw: pf.losses_mw * 1e3,
                    min_vm_pu: lo,
                    max_vm_pu: hi,
                    voltage_violations: voltage,
                    thermal_violations: violations.len() - voltage,
                    unbalance_violations: 0,
                    max_unbalance_pct: None,
                    transformer_loading_percent: self
                        .feeder
                        .transformers
                        .iter()
                        .map(|&k| pf.branches[k].max_mva() / loaded.branches[k].rate_a_mva * 100.0)
                        .fold(0.0, f64::max),
                }
            }
            (Kind::Unbalanced { circuit, .. }, Solved::Unbalanced(sol)) => {
                let source = circuit.sources.first().map(|s| s.terminal.bus);
                let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
                let (mut voltage, mut unbalance) = (0, 0);
                let mut max_unbalance: Option<f64> = None;
                for (k, b) in sol.buses.iter().enumerate() {
                    if Some(k) == source || b.kv_base_ln == 0.0 {
                        continue;
                    }
                    for &(node, vm, _) in &b.nodes {
                        if (1..=3).contains(&node) {
                            lo = lo.min(vm);
                            hi = hi.max(vm);
                            voltage += usize::from(vm < lo_band || vm > hi_band);
                        }
                    }
                    if let Some(u) = b.unbalance_pct {
                        unbalance += usize::from(u > UNBALANCE_MAX_PCT);
                        max_unbalance = Some(max_unbalance.map_or(u, |m| m.max(u)));
                    }
                }
                let lines = circuit
                    .lines
                    .iter()
                    .zip(&sol.line_current_a)
                    .filter(|(l, &i)| l.rating_a > 0.0 && i > l.rating_a)
                    .count();
                let transformers = sol
                    .transformer_loading_pct
                    .iter()
                    .filter(|&&p| p > 100.0)
                    .count();
                FlowFigures {
                    losses_kw: sol.losses_kw,
                    min_vm_pu: lo,
                    max_vm_pu: hi,
                    voltage_violations: voltage,
                    thermal_violations: lines + transformers,
                    unbalance_violations: unbalance,
                    max_unbalance_pct: max_unbalance,
                    transformer_loading_percent: self
                        .feeder
                        .transformers
                        .iter()
                        .map(|&k| sol.transformer_loading_pct[k])
                        .fold(0.0, f64::max),
                }
            }
            _ => unreachable!("a solution of another feeder"),
        }
    }

    /// The live view of a solved slot.
    pub fn snapshot(&self, solved: &Solved, row: SlotRow, slot_start_ms: u64) -> Snapshot {
        match (&self.kind, solved) {
            (Kind::Balanced { loaded, .. }, Solved::Balanced(pf)) => {
                Snapshot::of(loaded, pf, &self.feeder.transformers, row, slot_start_ms)
            }
            (Kind::Unbalanced { circuit, .. }, Solved::Unbalanced(sol)) => {
                Snapshot::of_phases(circuit, sol, self.band_pu, row, slot_start_ms)
            }
            _ => unreachable!("a solution of another feeder"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::FeederChoice;

    fn eu_lv(homes: usize) -> Feeder {
        let master = gridmesh_refdata::require("dss/ieee-eu-lv/Master.dss");
        let f = FeederChoice {
            dss: master.file_name().unwrap().to_string_lossy().into_owned(),
            ..FeederChoice::default()
        };
        crate::feeder::build(&f, &vec![None; homes], master.parent().unwrap()).unwrap()
    }

    /// The slot's solve (loads set on a model built once, taps carried) is the feeder solved
    /// afresh with the homes' exchange as its loads, slot after slot.
    #[test]
    fn a_slot_is_the_feeder_solved_with_the_homes_as_its_loads() {
        // 60 homes on 55 loads: five loads have two.
        let feeder = eu_lv(60);
        let Grid::Unbalanced(circuit) = &feeder.grid else {
            panic!("an OpenDSS feeder is unbalanced");
        };
        assert_eq!(feeder.transformer_kw, 800.0);
        assert_eq!(feeder.home_area[0], "load1/h1");
        assert_eq!(feeder.home_site[55], feeder.home_site[0]);
        let mut flow = SlotFlow::new(&feeder, (0.9, 1.1)).unwrap();
        for slot in 0..3 {
            // Homes importing and exporting, a different mix each slot.
            let net_kw: Vec<f64> = (0..60)
                .map(|i| ((i * 7 + slot * 13) % 11) as f64 - 5.0)
                .collect();
            let kvar: Vec<f64> = net_kw.iter().map(|p| p.max(0.0) * 0.2).collect();
            let Solved::Unbalanced(sol) = flow.solve(&net_kw, &kvar).unwrap() else {
                panic!("an unbalanced solution");
            };
            let mut fresh = (**circuit).clone();
            for (i, &k) in feeder.home_site.iter().enumerate() {
                fresh.loads[k].kw += net_kw[i];
                fresh.loads[k].kvar += kvar[i];
            }
            let want = fresh.solve(&fresh.solve_options).unwrap();
            let worst = sol
                .voltages_v
                .iter()
                .zip(&want.voltages_v)
                .zip(&sol.nodes)
                .map(|((a, b), &(bus, _))| (a - b).norm() / (circuit.buses[bus].kv_base_ln * 1e3))
                .fold(0.0, f64::max);
            assert!(worst < 1e-8, "slot {slot}: {worst} pu apart");
            assert!((sol.losses_kw - want.losses_kw).abs() < 1e-6);
            let f = flow.figures(&Solved::Unbalanced(sol));
            assert!(f.max_unbalance_pct.unwrap() > 0.0);
            assert!(f.min_vm_pu < f.max_vm_pu);
            assert!(f.transformer_loading_percent > 0.0);
        }
    }

    /// Trading homes on one load share its envelope; a forecast that already breaks the band
    /// gives none, and says why.
    #[test]
    fn homes_on_one_load_share_its_envelope() {
        let feeder = eu_lv(110);
        let mut flow = SlotFlow::new(&feeder, (0.9, 1.1)).unwrap();
        // Homes 0-54 trade; 55-109 (one per load) do not, drawing nothing.
        let alone: Vec<usize> = (0..55).collect();
        let env = flow.envelopes(&alone, (55..110).map(|i| (i, 0.0))).unwrap();
        assert_eq!(env.len(), 55);
        assert!(env.iter().all(|&(i, e)| i > 0 && e > 0), "{env:?}");
        let all: Vec<usize> = (0..110).collect();
        let shared = flow.envelopes(&all, std::iter::empty()).unwrap();
        for i in 0..55 {
            assert_eq!(shared[i], (env[i].0 / 2, env[i].1 / 2), "home {i}");
            assert_eq!(shared[i], shared[i + 55]);
        }
        // Every non-trading home exporting 30 kW: the forecast is over 1.1 pu.
        let e = flow
            .envelopes(&alone, (55..110).map(|i| (i, -30.0)))
            .unwrap_err();
        assert!(e.contains("already breaks"), "{e}");
    }
}
