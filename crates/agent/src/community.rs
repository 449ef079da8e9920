//! Community coordination: homes plan for themselves within import and export allocations that
//! keep the feeder within its limits: a transformer's rating, and any other limit the homes' net
//! imports or exports share linearly ([`SharedLimit`]: a cable's rating, a node's voltage).
//!
//! Price signals alone herd: every home's linear program moves all its flexible load to the same
//! cheapest slot, so a surcharge there sends them all to the next one (tried first; it oscillated).
//! The coordinator therefore allocates capacity, as operating envelopes do: homes plan one after
//! the other; each gets, per slot, what the limit leaves after the homes already planned and the
//! least the homes still to plan need (load − PV, and the heating their thermostats would run).
//! Every home stays optimal within its allocation; flexible load fills the valleys; the
//! transformer stays within its limit whenever each home can meet its needs inside what is left.
//! A home that cannot is given the least it needs on its own (its thermostat's heating, with its
//! battery idle) where its allocation is below that, and only if it cannot meet its needs even
//! so is it planned without an allocation; both are counted. Homes take turns in an order
//! rotated by `rotation`, so no home is always last.

use crate::schedule::{HomeProblem, Plan, Schedule};
use crate::strategy::Values;

use serde::Serialize;

#[derive(Clone, Debug, Serialize)]
pub struct CoordinationReport {
    pub homes: usize,
    pub limit_kw: f64,
    /// The transformer's net load per slot without and with coordination, kW.
    pub uncoordinated_kw: Vec<f64>,
    pub coordinated_kw: Vec<f64>,
    pub uncoordinated_peak_kw: f64,
    pub coordinated_peak_kw: f64,
    /// The homes' energy cost at their own prices (without surcharges), tokens.
    pub uncoordinated_cost: f64,
    pub coordinated_cost: f64,
    /// Homes that could not meet their needs within their allocation (planned without it).
    pub unfit: usize,
}

fn net_load(schedules: &[Schedule], slots: usize) -> Vec<f64> {
    (0..slots)
        .map(|t| {
            schedules
                .iter()
                .map(|s| s.import_kw[t] - s.export_kw[t])
                .sum()
        })
        .collect()
}

fn plan(p: &HomeProblem) -> Option<Schedule> {
    match p.plan() {
        Plan::Optimal(s) => Some(s),
        Plan::Fallback { .. } => None,
    }
}

/// The coordinator's result: each home's schedule within its allocation, and the problems
/// with their allocations (`import_cap_kw`).
#[derive(Clone, Debug)]
pub struct Allocation {
    pub schedules: Vec<Schedule>,
    /// Each home's marginal values within its allocation (see
    /// [`crate::strategy::Optimising::plan_and_values`]; `None` where they could not be priced).
    pub values: Vec<Option<Values>>,
    pub problems: Vec<HomeProblem>,
    /// What each home's inverter may export per slot, kW (empty: no export limit applies): its
    /// planned export and an even share (by weight) of the room the plans leave on the export
    /// limits it loads, so that PV beyond the forecast is exported only as far as every home
    /// doing so, the others importing as planned, keeps within them.
    pub export_caps_kw: Vec<Vec<f64>>,
    /// Homes that could not meet their needs within their allocation (planned without it).
    pub unfit: usize,
}

/// A limit the homes' net loads share, per slot `t`, in one `direction`:
/// `Σ_i weights[i] · flow_i(t) + others_kw[t] ≤ limit_kw` over the homes being allocated, with
/// `flow` the net import (import limits) or the net export (export limits); a weight of zero:
/// the home does not load it. A transformer or a cable weighs every home behind it by one; a
/// bus's voltage (linearised, in kW at the bus) weighs each home by how much it moves it
/// against the home at the bus.
#[derive(Clone, Debug)]
pub struct SharedLimit {
    pub direction: Direction,
    pub weights: Vec<f64>,
    /// What the homes not being allocated put on it, per slot (weighted likewise).
    pub others_kw: Vec<f64>,
    pub limit_kw: f64,
}

/// Which way a shared limit is loaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Import,
    Export,
}

/// Allocates import capacity under `limit_kw` to `homes` (same number of slots) in turn, on top
/// of `others_kw`, the forecast net load of homes that do not take part (empty: none).
pub fn allocate(
    homes: &[HomeProblem],
    others_kw: &[f64],
    limit_kw: f64,
    rotation: usize,
) -> Allocation {
    let limit = SharedLimit {
        direction: Direction::Import,
        weights: vec![1.0; homes.len()],
        others_kw: others_kw.to_vec(),
        limit_kw,
    };
    allocate_within(homes, &[limit], rotation)
}

/// Allocates import and export capacity to `homes` (same number of slots) in turn within every
/// one of `limits`: each home gets, per slot and direction, the least any limit it loads leaves
/// after the homes already planned and the least the homes still to plan need, over its weight
/// there. Homes need no export (they can curtail PV), so export is allocated first come, in the
/// rotating order.
pub fn allocate_within(
    homes: &[HomeProblem],
    limits: &[SharedLimit],
    rotation: usize,
) -> Allocation {
    let slots = homes.first().map_or(0, |h| h.slots());
    // The least each home needs per slot: its net load with its heat pumps on their
    // thermostats (heating just in time), battery idle.
    let needs: Vec<Vec<f64>> = homes
        .iter()
        .map(|h| {
            let mut need: Vec<f64> = (0..slots).map(|t| h.load_kw[t] - h.pv_kw[t]).collect();
            for store in &h.thermal {
                let (kw, _) = store.thermostat();
                need.iter_mut().zip(kw).for_each(|(n, k)| *n += k);
            }
            need.into_iter().map(|n| n.max(0.0)).collect()
        })
        .collect();
    // Per home, the limits it loads and its weight on each (most limits load few homes).
    let loads: Vec<Vec<(usize, f64)>> = (0..homes.len())
        .map(|i| {
            limits
                .iter()
                .enumerate()
                .filter(|(_, l)| l.weights[i] != 0.0)
                .map(|(c, l)| (c, l.weights[i]))
                .collect()
        })
        .collect();
    // Per limit: what the homes still to plan need at least, and what is committed.
    let mut still: Vec<Vec<f64>> = vec![vec![0.0; slots]; limits.len()];
    for (load, need) in loads.iter().zip(&needs) {
        for &(c, w) in load {
            if limits[c].direction == Direction::Import {
                still[c].iter_mut().zip(need).for_each(|(s, n)| *s += w * n);
            }
        }
    }
    let mut committed: Vec<Vec<f64>> = limits
        .iter()
        .map(|l| {
            (0..slots)
                .map(|t| l.others_kw.get(t).copied().unwrap_or(0.0))
                .collect()
        })
        .collect();
    type Planned = (HomeProblem, Schedule, Option<Values>);
    let mut planned: Vec<Option<Planned>> = vec![None; homes.len()];
    let mut unfit = 0;
    for k in 0..homes.len() {
        let i = (k + rotation) % homes.len();
        let h = &homes[i];
        let mut cap = vec![f64::INFINITY; slots];
        let mut export_cap = vec![f64::INFINITY; slots];
        for &(c, w) in &loads[i] {
            let l = &limits[c];
            if w <= 0.0 {
                continue;
            }
            let cap = match l.direction {
                Direction::Import => &mut cap,
                Direction::Export => &mut export_cap,
            };
            let still = &mut still[c];
            if l.direction == Direction::Import {
                still
                    .iter_mut()
                    .zip(&needs[i])
                    .for_each(|(s, n)| *s -= w * n);
            }
            for ((cap, s), k) in cap.iter_mut().zip(still.iter()).zip(&committed[c]) {
                let left = (l.limit_kw - k - s) / w;
                *cap = cap.min(left.max(0.0));
            }
        }
        let within = |cap: Vec<f64>, own: &[f64]| -> Vec<f64> {
            cap.into_iter()
                .enumerate()
                .map(|(t, c)| c.min(own.get(t).copied().unwrap_or(f64::INFINITY)))
                .collect()
        };
        let mut capped = h.clone();
        capped.import_cap_kw = within(cap, &h.import_cap_kw);
        if export_cap.iter().any(|c| c.is_finite()) {
            capped.export_cap_kw = within(export_cap, &h.export_cap_kw);
        }
        let agent = crate::strategy::Optimising { problem: capped };
        let (problem, s, values) = match agent.plan_and_values() {
            (Plan::Optimal(s), values) => (agent.problem, s, values),
            (Plan::Fallback { .. }, _) => {
                unfit += 1;
                // At least what it needs on its own where the allocation is below that.
                let mut least = agent.problem;
                for (cap, need) in least.import_cap_kw.iter_mut().zip(&needs[i]) {
                    *cap = cap.max(*need);
                }
                let agent = crate::strategy::Optimising { problem: least };
                match agent.plan_and_values() {
                    (Plan::Optimal(s), values) => (agent.problem, s, values),
                    (Plan::Fallback { .. }, _) => {
                        let free = crate::strategy::Optimising { problem: h.clone() };
                        match free.plan_and_values() {
                            (Plan::Optimal(s), values) => (free.problem, s, values),
                            (Plan::Fallback { .. }, _) => (free.problem, h.safe_plan(), None),
                        }
                    }
                }
            }
        };
        for &(c, w) in &loads[i] {
            let w = match limits[c].direction {
                Direction::Import => w,
                Direction::Export => -w,
            };
            let net = s.import_kw.iter().zip(&s.export_kw);
            for (c, (import, export)) in committed[c].iter_mut().zip(net) {
                *c += w * (import - export);
            }
        }
        planned[i] = Some((problem, s, values));
    }
    // Each export limit's room left per slot by the plans (net: a planned import makes room),
    // shared by weight among the homes loading it.
    let share: Vec<Option<Vec<f64>>> = limits
        .iter()
        .zip(&committed)
        .map(|(l, committed)| {
            let weights: f64 = l.weights.iter().filter(|w| **w > 0.0).sum();
            (l.direction == Direction::Export && weights > 0.0).then(|| {
                committed
                    .iter()
                    .map(|c| (l.limit_kw - c).max(0.0) / weights)
                    .collect()
            })
        })
        .collect();
    let mut out = Allocation {
        schedules: Vec::with_capacity(homes.len()),
        values: Vec::with_capacity(homes.len()),
        problems: Vec::with_capacity(homes.len()),
        export_caps_kw: Vec::with_capacity(homes.len()),
        unfit,
    };
    for (i, (problem, s, values)) in planned.into_iter().map(|p| p.expect("planned")).enumerate() {
        let mut extra: Option<Vec<f64>> = None;
        for &(c, w) in &loads[i] {
            if let (Some(share), true) = (&share[c], w > 0.0) {
                let e = extra.get_or_insert_with(|| vec![f64::INFINITY; slots]);
                for (e, s) in e.iter_mut().zip(share) {
                    *e = e.min(*s);
                }
            }
        }
        out.export_caps_kw
            .push(extra.map_or_else(Vec::new, |extra| {
                extra.iter().zip(&s.export_kw).map(|(e, x)| x + e).collect()
            }));
        out.problems.push(problem);
        out.schedules.push(s);
        out.values.push(values);
    }
    out
}

/// Coordinates `homes` (same number of slots) under a transformer limit, and compares with each
/// home planning freely.
pub fn coordinate(homes: &[HomeProblem], limit_kw: f64, rotation: usize) -> CoordinationReport {
    let slots = homes.first().map_or(0, |h| h.slots());
    let cost = |schedules: &[Schedule]| -> f64 {
        homes.iter().zip(schedules).map(|(h, s)| h.cost_of(s)).sum()
    };
    let free: Vec<Schedule> = homes
        .iter()
        .map(|h| plan(h).unwrap_or_else(|| h.safe_plan()))
        .collect();
    let uncoordinated = net_load(&free, slots);
    let Allocation {
        schedules, unfit, ..
    } = allocate(homes, &[], limit_kw, rotation);
    let load = net_load(&schedules, slots);
    let peak = |v: &[f64]| v.iter().copied().fold(f64::MIN, f64::max);
    CoordinationReport {
        homes: homes.len(),
        limit_kw,
        uncoordinated_peak_kw: peak(&uncoordinated),
        coordinated_peak_kw: peak(&load),
        uncoordinated_kw: uncoordinated,
        uncoordinated_cost: cost(&free),
        coordinated_cost: cost(&schedules),
        coordinated_kw: load,
        unfit,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::example_home;

    #[test]
    fn allocations_bring_the_evening_peak_under_the_transformer_limit() {
        // 30 homes whose EVs all plug in at 17:30 and whose tariff drops at 21:00: without
        // coordination they all charge at 21:00.
        let homes: Vec<HomeProblem> = (1..=30)
            .filter(|s| *s != 7 && *s != 8)
            .map(|seed| {
                let mut h = example_home(seed);
                for t in 84..96 {
                    h.import_price[t] = 0.15;
                }
                h
            })
            .collect();
        let free = coordinate(&homes, f64::INFINITY, 0);
        let limit = free.uncoordinated_peak_kw * 0.6;
        let r = coordinate(&homes, limit, 3);
        eprintln!(
            "{} homes: peak {:.1} kW -> {:.1} kW (limit {:.1}), {} unfit; cost {:.2} -> {:.2}",
            r.homes,
            r.uncoordinated_peak_kw,
            r.coordinated_peak_kw,
            limit,
            r.unfit,
            r.uncoordinated_cost,
            r.coordinated_cost
        );
        assert_eq!(r.unfit, 0);
        assert!(r.coordinated_peak_kw <= limit * 1.02, "{r:?}");
        assert!(r.coordinated_peak_kw < r.uncoordinated_peak_kw * 0.65);
        // Energy is moved, not lost: the EVs still get what they need (each plan is feasible).
        assert!(r.coordinated_cost >= r.uncoordinated_cost - 1e-6);
        assert!(r.coordinated_cost < r.uncoordinated_cost * 1.15);
    }

    /// An export limit (a voltage rise, a cable's reverse flow) shared by weight: the homes'
    /// planned exports keep within it, and so do the caps their inverters hold, each the home's
    /// planned export and an even share of the room left.
    #[test]
    fn export_allocations_and_the_inverters_caps_keep_within_a_shared_export_limit() {
        let homes: Vec<HomeProblem> = (1..=12).map(example_home).collect();
        let slots = homes[0].slots();
        let free: Vec<Schedule> = homes.iter().filter_map(plan).collect();
        assert_eq!(free.len(), homes.len());
        let exported = |t: usize, s: &[Schedule], w: &[f64]| -> f64 {
            s.iter().zip(w).map(|(s, w)| w * s.export_kw[t]).sum()
        };
        let net_exported = |t: usize, s: &[Schedule], w: &[f64]| -> f64 {
            s.iter()
                .zip(w)
                .map(|(s, w)| w * (s.export_kw[t] - s.import_kw[t]))
                .sum()
        };
        // Homes further out weigh more, as on a cable.
        let weights: Vec<f64> = (0..homes.len()).map(|i| 0.5 + i as f64 / 12.0).collect();
        let peak = (0..slots)
            .map(|t| exported(t, &free, &weights))
            .fold(0.0, f64::max);
        assert!(peak > 1.0, "the homes export: {peak} kW");
        let limit = SharedLimit {
            direction: Direction::Export,
            weights: weights.clone(),
            others_kw: vec![0.2 * peak; slots],
            limit_kw: 0.7 * peak,
        };
        let a = allocate_within(&homes, &[limit], 5);
        assert_eq!(a.unfit, 0);
        for t in 0..slots {
            // Net, as the limit is linear: a home's planned import makes room.
            let planned = net_exported(t, &a.schedules, &weights) + 0.2 * peak;
            assert!(
                planned <= 0.7 * peak + 1e-6,
                "slot {t}: {planned} of {}",
                0.7 * peak
            );
            // Every home exporting up to its cap, the importers importing as planned.
            let caps: f64 = a
                .export_caps_kw
                .iter()
                .zip(&a.schedules)
                .zip(&weights)
                .map(|((c, s), w)| w * (c[t] - s.import_kw[t]))
                .sum();
            assert!(
                caps + 0.2 * peak <= 0.7 * peak + 1e-6,
                "slot {t}: caps {caps}"
            );
            for (s, c) in a.schedules.iter().zip(&a.export_caps_kw) {
                assert!(s.export_kw[t] <= c[t] + 1e-9);
            }
        }
        // Held back, not lost: the homes curtail or store what they may not export.
        let curtailed: f64 = a.schedules.iter().flat_map(|s| &s.curtail_kw).sum();
        let stored: f64 = a.schedules.iter().flat_map(|s| &s.charge_kw).sum();
        let stored_free: f64 = free.iter().flat_map(|s| &s.charge_kw).sum();
        assert!(
            curtailed > 0.0 || stored > stored_free,
            "{curtailed} {stored} {stored_free}"
        );
    }
}
