//! Per-phase operating envelopes: how much more each single-phase home may import or export, on
//! its own phase, without any node leaving its voltage band, given the loads as they stand (the
//! forecast). The unbalanced counterpart of [`crate::envelope`]:
//!
//! 1. Solve the base case; the regulators' taps stay where it leaves them.
//! 2. Linearise around it: `Y⁻¹`'s columns at the homes' nodes give each node's voltage change
//!    per kW a home takes on its phase, `s(i, h)`. On an unbalanced feeder the sign varies: a home
//!    exporting on phase a raises phase a and, through the neutral's shift, may lower b and c.
//! 3. Share each node's headroom among the homes that push it that way: a node `i` with
//!    `vmax - v_i` of headroom gives every home with `s(i, h) > 0` at most
//!    `(vmax - v_i) / Σ_h max(s(i, h), 0)`, and likewise downwards. So any combination of homes
//!    inside their envelopes stays in band to first order, whatever the signs. A home's envelope
//!    is its smallest share, less a margin.
//! 4. Verify both corners (every home at its import limit; every home at its export limit) with
//!    the full power flow, against every limit the hosting capacity checks (voltage, unbalance,
//!    lines, transformers); where a corner still breaks one (losses, thermal limits and unbalance
//!    are not in the linearisation) shrink that direction by 10 % and verify again.

use super::hosting::{HostingOptions, Limit};
use super::solve::System;
use super::{Circuit, Connection, SolveError, SolveOptions};

/// One home's envelope on its phase.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct PhaseEnvelope {
    pub load: String,
    pub bus: String,
    pub phase: u8,
    pub import_kw: f64,
    pub export_kw: f64,
    /// The node whose voltage band set each direction, before any shrinking (`max_kw` where no
    /// node did; the broken limit where the case already breaks one).
    pub import_bound_by: String,
    pub export_bound_by: String,
}

impl PhaseEnvelope {
    /// The envelope as energy over a slot of `slot_minutes`, in mWh, rounded down, as the
    /// balanced envelopes enter the market ([`crate::slot_energy_mwh`]).
    pub fn energy_mwh(&self, slot_minutes: u32) -> (u64, u64) {
        (
            crate::slot_energy_mwh(self.import_kw / 1e3, slot_minutes),
            crate::slot_energy_mwh(self.export_kw / 1e3, slot_minutes),
        )
    }
}

/// Every single-phase home's envelope, and how many verification rounds each direction took.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct PhaseEnvelopes {
    pub homes: Vec<PhaseEnvelope>,
    pub import_rounds: usize,
    pub export_rounds: usize,
    /// The limit the loads as they stand already break: then no home may move, and every
    /// envelope is 0.
    pub base_violation: Option<Limit>,
}

/// Settings of the envelope calculation.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PhaseEnvelopeOptions {
    /// Share of every headroom held back.
    pub margin: f64,
    /// Verification rounds per direction before giving up (and returning zero envelopes).
    pub max_rounds: usize,
    /// The limits: the voltage band and, in verification, unbalance and thermal.
    pub limits: HostingOptions,
    /// No envelope is wider than this.
    pub max_kw: f64,
}

impl Default for PhaseEnvelopeOptions {
    fn default() -> Self {
        PhaseEnvelopeOptions {
            margin: 0.05,
            max_rounds: 20,
            limits: HostingOptions::default(),
            max_kw: 100.0,
        }
    }
}

impl Circuit {
    /// The per-phase envelopes of every single-phase wye load (a home on one phase), the loads as
    /// the circuit has them.
    pub fn phase_envelopes(
        &self,
        solve: &SolveOptions,
        opts: &PhaseEnvelopeOptions,
    ) -> Result<PhaseEnvelopes, SolveError> {
        let mut system = System::new(self, false);
        let (base, _, _) = system.solve_with_controls(solve)?;
        let Some((homes, home_nodes)) = self.single_phase_homes(&system) else {
            return Ok(PhaseEnvelopes {
                homes: vec![],
                import_rounds: 0,
                export_rounds: 0,
                base_violation: None,
            });
        };
        let limits = &opts.limits;
        if let Some(broken) = system.first_limit(&base, limits) {
            let homes = homes
                .iter()
                .map(|&k| {
                    let l = &self.loads[k];
                    PhaseEnvelope {
                        load: l.name.clone(),
                        bus: self.buses[l.terminal.bus].name.clone(),
                        phase: l.terminal.nodes[0],
                        import_kw: 0.0,
                        export_kw: 0.0,
                        import_bound_by: broken.to_string(),
                        export_bound_by: broken.to_string(),
                    }
                })
                .collect();
            return Ok(PhaseEnvelopes {
                homes,
                import_rounds: 0,
                export_rounds: 0,
                base_violation: Some(broken),
            });
        }
        let z = system.impedance_columns(&home_nodes)?;
        // s(i, h): pu change of node i's magnitude per kW of extra import at home h.
        let phase_nodes: Vec<usize> = (0..system.nodes.len())
            .filter(|&i| (1..=3).contains(&system.nodes[i].1) && system.base_v[i] > 0.0)
            .collect();
        let mut import: Vec<(f64, usize)> = vec![(opts.max_kw, usize::MAX); homes.len()];
        let mut export: Vec<(f64, usize)> = vec![(opts.max_kw, usize::MAX); homes.len()];
        let mut s = vec![0.0; homes.len()];
        for &i in &phase_nodes {
            let vi = base[i];
            let vm = vi.norm() / system.base_v[i];
            for (h, &a) in home_nodes.iter().enumerate() {
                s[h] = magnitude_per_kw(vi, base[a], z[(i, h)], system.base_v[i]);
            }
            let up: f64 = s.iter().map(|x| x.max(0.0)).sum();
            let down: f64 = s.iter().map(|x| (-x).max(0.0)).sum();
            let (head_up, head_down) = (limits.vmax_pu - vm, vm - limits.vmin_pu);
            for h in 0..homes.len() {
                // Import moves node i by s·x, export by -s·y: a home that raises the node
                // importing lowers it exporting, and shares each headroom with the homes pushing
                // the same way.
                let (imp, exp) = if s[h] > 0.0 {
                    (head_up / up, head_down / up)
                } else if s[h] < 0.0 {
                    (head_down / down, head_up / down)
                } else {
                    continue;
                };
                if imp < import[h].0 {
                    import[h] = (imp.max(0.0), i);
                }
                if exp < export[h].0 {
                    export[h] = (exp.max(0.0), i);
                }
            }
        }
        let mut import_kw: Vec<f64> = import.iter().map(|x| x.0 * (1.0 - opts.margin)).collect();
        let mut export_kw: Vec<f64> = export.iter().map(|x| x.0 * (1.0 - opts.margin)).collect();
        // Verify the corners with a generator at every home (negative for import).
        let gens: Vec<usize> = homes
            .iter()
            .map(|&k| {
                let t = &self.loads[k].terminal;
                system.add_generator(t.bus, t.nodes[0])
            })
            .collect();
        let verify = |system: &mut System, kw: &mut [f64], sign: f64| -> usize {
            for round in 1..=opts.max_rounds {
                for (&g, &x) in gens.iter().zip(kw.iter()) {
                    system.set_generation(g, sign * x);
                }
                let mut v = base.clone();
                let broken: Option<Limit> = match system.solve_fixed_point(&mut v, solve) {
                    Ok(_) => system.first_limit(&v, limits),
                    Err(_) => Some(Limit::NoSolution),
                };
                if broken.is_none() {
                    return round;
                }
                kw.iter_mut().for_each(|x| *x *= 0.9);
            }
            kw.iter_mut().for_each(|x| *x = 0.0);
            opts.max_rounds
        };
        let import_rounds = verify(&mut system, &mut import_kw, -1.0);
        let export_rounds = verify(&mut system, &mut export_kw, 1.0);
        let name = |i: usize| -> String {
            if i == usize::MAX {
                return "max_kw".into();
            }
            let (b, n) = system.nodes[i];
            format!("{}.{n}", self.buses[b].name)
        };
        let out = homes
            .iter()
            .enumerate()
            .map(|(h, &k)| {
                let l = &self.loads[k];
                PhaseEnvelope {
                    load: l.name.clone(),
                    bus: self.buses[l.terminal.bus].name.clone(),
                    phase: l.terminal.nodes[0],
                    import_kw: import_kw[h],
                    export_kw: export_kw[h],
                    import_bound_by: name(import[h].1),
                    export_bound_by: name(export[h].1),
                }
            })
            .collect();
        Ok(PhaseEnvelopes {
            homes: out,
            import_rounds,
            export_rounds,
            base_violation: None,
        })
    }

    /// The voltages at the single-phase homes' nodes linearised around the loads as they stand
    /// (step 2 of the envelopes): each home's node voltage there, and how it moves per kW any
    /// home imports on its phase. What a coordinator shares the voltage band with.
    pub fn phase_sensitivities(
        &self,
        solve: &SolveOptions,
    ) -> Result<PhaseSensitivities, SolveError> {
        let mut system = System::new(self, false);
        let (base, _, _) = system.solve_with_controls(solve)?;
        let Some((homes, home_nodes)) = self.single_phase_homes(&system) else {
            return Ok(PhaseSensitivities::default());
        };
        let z = system.impedance_columns(&home_nodes)?;
        let mut pu_per_kw = vec![vec![0.0; homes.len()]; homes.len()];
        let mut vm_pu = Vec::with_capacity(homes.len());
        for (row, &i) in pu_per_kw.iter_mut().zip(&home_nodes) {
            let vi = base[i];
            vm_pu.push(vi.norm() / system.base_v[i]);
            for (s, (h, &a)) in row.iter_mut().zip(home_nodes.iter().enumerate()) {
                *s = magnitude_per_kw(vi, base[a], z[(i, h)], system.base_v[i]);
            }
        }
        Ok(PhaseSensitivities {
            loads: homes,
            vm_pu,
            pu_per_kw,
        })
    }

    /// The single-phase wye loads (a home on one phase) and their nodes in `system`; `None`
    /// where there are none or one has no node.
    fn single_phase_homes(&self, system: &System) -> Option<(Vec<usize>, Vec<usize>)> {
        let homes: Vec<usize> = (0..self.loads.len())
            .filter(|&k| {
                let l = &self.loads[k];
                l.phases == 1 && l.connection == Connection::Wye && l.terminal.nodes[0] != 0
            })
            .collect();
        let nodes: Vec<usize> = homes
            .iter()
            .filter_map(|&k| {
                let t = &self.loads[k].terminal;
                system.node_index(t.bus, t.nodes[0])
            })
            .collect();
        (!homes.is_empty() && nodes.len() == homes.len()).then_some((homes, nodes))
    }
}

/// The voltages at the single-phase homes' nodes, linearised ([`Circuit::phase_sensitivities`]).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PhaseSensitivities {
    /// The homes: indices into the circuit's loads.
    pub loads: Vec<usize>,
    /// Each home's node voltage with the loads as they stand, pu.
    pub vm_pu: Vec<f64>,
    /// `pu_per_kw[i][h]`: home `i`'s node voltage change per kW more import at home `h`, pu.
    pub pu_per_kw: Vec<Vec<f64>>,
}

/// How node `i`'s voltage magnitude (`v_i`, base `base_v`) moves, pu, per kW more import at a
/// home's node (`v_a`), `z_ia` the impedance between them: 1 kW more import is an injection of
/// `-conj(1000 / V_a)` at its node, and the magnitude moves by the change's part along `V_i`.
fn magnitude_per_kw(v_i: faer::c64, v_a: faer::c64, z_ia: faer::c64, base_v: f64) -> f64 {
    let di = -(faer::c64::new(1000.0, 0.0) / v_a).conj();
    let dv = z_ia * di;
    (v_i.conj() * dv).re / v_i.norm() / base_v
}
