//! When a re-plan can be skipped: a home whose devices are where its plan put them, and whose
//! forecasts, prices and limits over the rest of the plan are what the plan was made for, would
//! re-plan little more than the plan it has. Re-planning only when the inputs changed is what
//! event-triggered model-predictive control does; it saves the solver's time where nothing
//! happened (the night, for a home whose load forecast is yesterday's and whose PV makes
//! nothing).
//!
//! [`Drift`] bounds what may differ, [`plan_holds`] checks a plan against a fresh problem. It
//! knows nothing of who calls it: the simulator's engine and any home agent decide when to ask.

use crate::schedule::{HomeProblem, Schedule, DT_H};

/// How far a home may be from its plan and still keep it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Drift {
    /// The battery's charge against the plan's at this slot, kWh.
    pub soc_kwh: f64,
    /// Each thermal store's temperature against the plan's, K.
    pub temperature_k: f64,
    /// The EV's energy still needed against what the plan leaves, kWh.
    pub ev_kwh: f64,
    /// The load and PV forecast of each slot still planned against the plan's, kW.
    pub forecast_kw: f64,
    /// The oldest a plan may be, slots: each slot kept shortens its look-ahead by one.
    pub max_age_slots: usize,
}

impl Drift {
    /// No drift at all: only a plan whose inputs are unchanged holds.
    pub const NONE: Drift = Drift {
        soc_kwh: 0.0,
        temperature_k: 0.0,
        ev_kwh: 0.0,
        forecast_kw: 0.0,
        max_age_slots: usize::MAX,
    };
}

/// Whether `plan`, the schedule of `planned` made `age` slots ago, still holds for `now`, the
/// home's problem at this slot: the devices where the plan put them, the forecasts, prices,
/// limits and the stores' surroundings over the slots both cover within `drift` (prices, limits
/// and the stores' models exactly), nothing new to plan (an EV that came, a flexibility event,
/// deferrable loads), and the plan no older than `drift.max_age_slots`. A plan that holds is
/// followed from slot `age` on. Neither problem may carry a coordinator's allocation: the caps
/// are compared as they are.
pub fn plan_holds(
    planned: &HomeProblem,
    plan: &Schedule,
    age: usize,
    now: &HomeProblem,
    drift: &Drift,
) -> bool {
    if age == 0 || age > drift.max_age_slots || age >= planned.slots() {
        return false;
    }
    // The slots still planned that `now` covers.
    let overlap = (planned.slots() - age).min(now.slots());
    if plan.import_kw.len() != planned.slots() || now.slots() == 0 {
        return false;
    }
    if planned.flex.is_some()
        || now.flex.is_some()
        || !planned.deferrable.is_empty()
        || !now.deferrable.is_empty()
        || planned.resolution != now.resolution
        || planned.import_limit_kw != now.import_limit_kw
        || planned.export_limit_kw != now.export_limit_kw
    {
        return false;
    }
    // Slot `age + t` of what was planned against slot `t` of what is asked now.
    let same = |planned: &[f64], now: &[f64], tol: f64| match (
        planned.get(age..age + overlap),
        now.get(..overlap),
    ) {
        (Some(a), Some(b)) => a.iter().zip(b).all(|(x, y)| (x - y).abs() <= tol),
        _ => false,
    };
    let caps_same = |a: &[f64], b: &[f64]| (a.is_empty() && b.is_empty()) || same(a, b, 0.0);
    if !same(&planned.import_price, &now.import_price, 0.0)
        || !same(&planned.export_price, &now.export_price, 0.0)
        || !same(&planned.load_kw, &now.load_kw, drift.forecast_kw)
        || !same(&planned.pv_kw, &now.pv_kw, drift.forecast_kw)
        || !caps_same(&planned.import_cap_kw, &now.import_cap_kw)
        || !caps_same(&planned.export_cap_kw, &now.export_cap_kw)
    {
        return false;
    }
    let battery_holds = match (&planned.battery, &now.battery) {
        (None, None) => true,
        (Some(a), Some(b)) => {
            a.capacity_kwh == b.capacity_kwh
                && a.power_kw == b.power_kw
                && a.reserve_kwh == b.reserve_kwh
                && plan
                    .soc_kwh
                    .get(age - 1)
                    .is_some_and(|s| (s - b.initial_kwh).abs() <= drift.soc_kwh)
        }
        _ => false,
    };
    if !battery_holds {
        return false;
    }
    // What the plan leaves the EV to charge after slot `age`, kWh.
    let ev_left = |ev: &crate::schedule::Ev| {
        ev.energy_needed_kwh - plan.ev_kw[..age].iter().sum::<f64>() * DT_H
    };
    let ev_holds = match (&planned.ev, &now.ev) {
        (None, None) => true,
        // Charged as planned, or gone when the plan expected it to go.
        (Some(a), None) => ev_left(a).abs() <= drift.ev_kwh || a.departure <= age,
        // A car the plan does not know.
        (None, Some(_)) => false,
        (Some(a), Some(b)) => {
            a.power_kw == b.power_kw
                && (ev_left(a) - b.energy_needed_kwh).abs() <= drift.ev_kwh
                // It stays at least as long as the plan charges it.
                && b.departure + age >= a.departure
        }
    };
    if !ev_holds {
        return false;
    }
    planned.thermal.len() == now.thermal.len()
        && plan.temperature_c.len() == planned.thermal.len()
        && planned
            .thermal
            .iter()
            .zip(&now.thermal)
            .zip(&plan.temperature_c)
            .all(|((a, b), temps)| {
                a.max_power_kw == b.max_power_kw
                    && a.min_c == b.min_c
                    && a.max_c == b.max_c
                    && a.ua_kw_per_k == b.ua_kw_per_k
                    && a.capacity_kwh_per_k == b.capacity_kwh_per_k
                    && same(&a.cop, &b.cop, 0.0)
                    && same(&a.ambient_c, &b.ambient_c, 0.0)
                    && same(&a.demand_kw, &b.demand_kw, 0.0)
                    && temps
                        .get(age - 1)
                        .is_some_and(|t| (t - b.initial_c).abs() <= drift.temperature_k)
            })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::{example_home, following, Plan};

    const DRIFT: Drift = Drift {
        soc_kwh: 0.1,
        temperature_k: 0.1,
        ev_kwh: 0.1,
        forecast_kw: 0.05,
        max_age_slots: 16,
    };

    /// A home with a battery, a car plugged in until slot 40 and (seed 3) a heat pump heating the
    /// house and its hot water, and its plan.
    fn planned(seed: u64) -> (HomeProblem, Schedule) {
        let mut p = example_home(seed);
        p.deferrable.clear();
        if let Some(ev) = &mut p.ev {
            ev.arrival = 0;
            ev.departure = 40;
        }
        let Plan::Optimal(plan) = p.plan() else {
            panic!("example home {seed} has a plan")
        };
        (p, plan)
    }

    #[test]
    fn a_plan_holds_while_the_home_follows_it_and_its_forecasts_stand() {
        for seed in [1, 3] {
            let (p, plan) = planned(seed);
            assert_eq!(p.thermal.len(), if seed == 3 { 2 } else { 0 });
            for age in [1, 4, 16] {
                let now = following(&p, &plan, age);
                assert!(
                    plan_holds(&p, &plan, age, &now, &DRIFT),
                    "seed {seed}, age {age}"
                );
            }
            // Too old, or asked in the slot it was made.
            assert!(!plan_holds(
                &p,
                &plan,
                17,
                &following(&p, &plan, 17),
                &DRIFT
            ));
            assert!(!plan_holds(&p, &plan, 0, &p, &DRIFT));
        }
    }

    #[test]
    fn a_plan_no_longer_holds_once_the_home_or_its_forecast_moved() {
        let (p, plan) = planned(3);
        let age = 4;
        let base = following(&p, &plan, age);
        assert!(plan_holds(&p, &plan, age, &base, &DRIFT));
        let moved = |f: &dyn Fn(&mut HomeProblem)| {
            let mut now = base.clone();
            f(&mut now);
            plan_holds(&p, &plan, age, &now, &DRIFT)
        };
        // Within the drift allowed, the plan holds.
        assert!(moved(&|n| n.load_kw[30] += 0.04));
        assert!(moved(&|n| n.battery.as_mut().unwrap().initial_kwh += 0.09));
        // Beyond it, the home re-plans: its battery, its house, its car, its forecasts.
        assert!(!moved(&|n| n.battery.as_mut().unwrap().initial_kwh -= 0.2));
        assert!(!moved(&|n| n.thermal[0].initial_c -= 0.3));
        assert!(!moved(&|n| n.thermal[1].initial_c += 0.3));
        assert!(!moved(&|n| n.ev.as_mut().unwrap().energy_needed_kwh += 1.0));
        assert!(!moved(&|n| n.ev.as_mut().unwrap().departure -= 8));
        assert!(!moved(&|n| n.load_kw[50] += 0.5));
        assert!(!moved(&|n| n.pv_kw[20] -= 0.5));
        assert!(!moved(&|n| n.import_price[10] += 0.01));
        assert!(!moved(&|n| n.thermal[0].ambient_c[5] -= 1.0));
        assert!(!moved(&|n| n.import_cap_kw = vec![1.0; n.slots()]));
        // Something the plan does not know of.
        let (q, plan_q) = {
            let mut q = p.clone();
            q.ev = None;
            let Plan::Optimal(s) = q.plan() else { panic!() };
            (q, s)
        };
        let mut came = following(&q, &plan_q, age);
        assert!(plan_holds(&q, &plan_q, age, &came, &DRIFT));
        came.ev = base.ev.clone();
        assert!(!plan_holds(&q, &plan_q, age, &came, &DRIFT), "a car came");
    }

    #[test]
    fn with_no_drift_allowed_only_unchanged_inputs_hold() {
        let (p, plan) = planned(1);
        let now = following(&p, &plan, 4);
        assert!(plan_holds(&p, &plan, 4, &now, &Drift::NONE));
        let mut off = now.clone();
        off.pv_kw[40] += 1e-6;
        assert!(!plan_holds(&p, &plan, 4, &off, &Drift::NONE));
    }
}
