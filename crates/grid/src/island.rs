//! The microgrid islanding controller: a state machine that takes the community off the main grid
//! when the point of common coupling (PCC) is lost, keeps the lights on from its grid-forming
//! batteries and PV, sheds load by declared priority (critical loads last), and resynchronises and
//! reconnects when the grid is back.
//!
//! ```text
//!                 PCC lost (outage, or no upstream reading for reading_timeout_ms)
//!  GridConnected ─────────────────────────────────────────────────────────────▶ Islanded
//!        ▲                                                                         │ PCC healthy
//!        │  grid healthy for resync_ms                                             ▼
//!        └──────────────────────────────────────────────────────────────── Resynchronising
//!                                             (PCC lost again: back to Islanded)
//! ```
//!
//! While islanded (and resynchronising: the breaker is still open) the batteries take the balance
//! ([`Controller::dispatch`]): PV serves the loads first, batteries the rest within their power,
//! surplus PV charges them (the rest is curtailed). Non-critical loads may draw the batteries down
//! only to the **reserve**; below it the energy is kept for critical loads, which may use it down to
//! the **minimum** state of charge. When supply falls short, whole loads are shed, deferrable first,
//! then essential, then critical; within a class the largest first. Every transition is returned as
//! a [`Transition`] for the ledger.
//!
//! Floats, like the rest of this crate: the controller runs in the node, outside consensus; what
//! the ledger records is the transition, with integer timestamps.

/// A load's declared priority; loads are shed in this order (deferrable first).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Priority {
    Deferrable,
    Essential,
    Critical,
}

/// The community's grid-forming storage, as one aggregate.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Storage {
    pub capacity_kwh: f64,
    pub max_power_kw: f64,
    pub soc_kwh: f64,
    /// Kept for critical loads: others may not draw the storage below it.
    pub reserve_kwh: f64,
    /// Never drawn below (battery protection).
    pub min_kwh: f64,
    /// One-way charge efficiency (energy stored per energy taken).
    pub charge_efficiency: f64,
}

impl Storage {
    /// Checks the storage's numbers.
    pub fn check(&self) -> Result<(), String> {
        let ok = self.capacity_kwh >= 0.0
            && self.max_power_kw >= 0.0
            && (0.0..=self.capacity_kwh).contains(&self.min_kwh)
            && (self.min_kwh..=self.capacity_kwh).contains(&self.reserve_kwh)
            && (self.min_kwh..=self.capacity_kwh).contains(&self.soc_kwh)
            && self.charge_efficiency > 0.0
            && self.charge_efficiency <= 1.0;
        if ok {
            Ok(())
        } else {
            Err(format!("storage needs 0 <= min <= reserve <= capacity, min <= soc <= capacity, power >= 0 and efficiency in (0, 1]: {self:?}"))
        }
    }
}

/// The controller's mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    GridConnected,
    Islanded { since_ms: u64 },
    Resynchronising { since_ms: u64 },
}

/// Why the microgrid islanded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cause {
    /// The PCC reported the upstream grid gone (an outage).
    Outage,
    /// No upstream reading since this time.
    ReadingLost { last_seen_ms: u64 },
}

/// A change of mode, for the ledger.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    Islanded { at_ms: u64, cause: Cause },
    Resynchronising { at_ms: u64 },
    Reconnected { at_ms: u64 },
}

impl Transition {
    pub fn at_ms(&self) -> u64 {
        match *self {
            Transition::Islanded { at_ms, .. }
            | Transition::Resynchronising { at_ms }
            | Transition::Reconnected { at_ms } => at_ms,
        }
    }
}

/// What the PCC tells the controller at one step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pcc {
    /// A reading arrived and the upstream grid is within its band.
    Healthy,
    /// A reading arrived and the upstream grid is gone.
    Down,
    /// No reading arrived this step.
    Silent,
}

/// The controller's settings.
#[derive(Clone, Copy, Debug)]
pub struct IslandConfig {
    /// The grid must be healthy this long before the microgrid reconnects.
    pub resync_ms: u64,
    /// Islanding when no upstream reading arrived for this long.
    pub reading_timeout_ms: u64,
}

/// One step's dispatch, all in kW averaged over the step.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Dispatch {
    /// Per load (in the order given): served or shed.
    pub served: Vec<bool>,
    pub served_kw: f64,
    pub shed_kw: f64,
    pub critical_demand_kw: f64,
    pub critical_served_kw: f64,
    /// Positive: discharging.
    pub storage_kw: f64,
    pub pv_used_kw: f64,
    pub pv_curtailed_kw: f64,
    /// From the main grid (grid-connected only; negative: export).
    pub grid_kw: f64,
}

/// The islanding state machine.
#[derive(Clone, Debug)]
pub struct Controller {
    cfg: IslandConfig,
    mode: Mode,
    last_reading_ms: u64,
    healthy_since_ms: Option<u64>,
}

impl Controller {
    /// A controller that starts grid-connected at `now_ms`.
    pub fn new(cfg: IslandConfig, now_ms: u64) -> Controller {
        Controller {
            cfg,
            mode: Mode::GridConnected,
            last_reading_ms: now_ms,
            healthy_since_ms: Some(now_ms),
        }
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Whether the breaker at the PCC is open (the batteries form the grid).
    pub fn is_islanded(&self) -> bool {
        self.mode != Mode::GridConnected
    }

    /// Feeds one observation of the PCC; returns the transition it causes, if any.
    pub fn observe(&mut self, now_ms: u64, pcc: Pcc) -> Option<Transition> {
        match pcc {
            Pcc::Healthy => {
                self.last_reading_ms = now_ms;
                self.healthy_since_ms.get_or_insert(now_ms);
            }
            Pcc::Down => {
                self.last_reading_ms = now_ms;
                self.healthy_since_ms = None;
            }
            Pcc::Silent => {}
        }
        let silent_too_long =
            now_ms.saturating_sub(self.last_reading_ms) > self.cfg.reading_timeout_ms;
        let lost = pcc == Pcc::Down || silent_too_long;
        if silent_too_long {
            self.healthy_since_ms = None;
        }
        let cause = if pcc == Pcc::Down {
            Cause::Outage
        } else {
            Cause::ReadingLost {
                last_seen_ms: self.last_reading_ms,
            }
        };
        let (next, t) = match self.mode {
            Mode::GridConnected if lost => (
                Mode::Islanded { since_ms: now_ms },
                Some(Transition::Islanded {
                    at_ms: now_ms,
                    cause,
                }),
            ),
            Mode::Islanded { .. } if pcc == Pcc::Healthy => (
                Mode::Resynchronising { since_ms: now_ms },
                Some(Transition::Resynchronising { at_ms: now_ms }),
            ),
            Mode::Resynchronising { .. } if lost => (
                Mode::Islanded { since_ms: now_ms },
                Some(Transition::Islanded {
                    at_ms: now_ms,
                    cause,
                }),
            ),
            Mode::Resynchronising { .. }
                if self
                    .healthy_since_ms
                    .is_some_and(|s| now_ms.saturating_sub(s) >= self.cfg.resync_ms) =>
            {
                (
                    Mode::GridConnected,
                    Some(Transition::Reconnected { at_ms: now_ms }),
                )
            }
            m => (m, None),
        };
        self.mode = next;
        t
    }

    /// Dispatches one step of `step_h` hours: `loads` are (priority, kW) per load, `pv_kw` the
    /// PV available. Grid-connected, everything is served and the grid takes the balance (the
    /// storage is left alone: the market and the home agents schedule it). Islanded, see the module
    /// documentation. Updates `storage`.
    pub fn dispatch(
        &self,
        step_h: f64,
        loads: &[(Priority, f64)],
        pv_kw: f64,
        storage: &mut Storage,
    ) -> Dispatch {
        let critical_demand_kw: f64 = loads
            .iter()
            .filter(|l| l.0 == Priority::Critical)
            .map(|l| l.1)
            .sum();
        if !self.is_islanded() {
            let served_kw: f64 = loads.iter().map(|l| l.1).sum();
            return Dispatch {
                served: vec![true; loads.len()],
                served_kw,
                shed_kw: 0.0,
                critical_demand_kw,
                critical_served_kw: critical_demand_kw,
                storage_kw: 0.0,
                pv_used_kw: pv_kw,
                pv_curtailed_kw: 0.0,
                grid_kw: served_kw - pv_kw,
            };
        }
        // Shed whole loads, lowest priority and largest first, until the rest can be supplied.
        let mut order: Vec<usize> = (0..loads.len()).collect();
        order.sort_by(|&a, &b| {
            loads[a]
                .0
                .cmp(&loads[b].0)
                .then(loads[b].1.total_cmp(&loads[a].1))
                .then(a.cmp(&b))
        });
        let mut served = vec![true; loads.len()];
        let mut critical: f64 = critical_demand_kw;
        let mut other: f64 = loads.iter().map(|l| l.1).sum::<f64>() - critical;
        let feasible = |critical: f64, other: f64| {
            let deficit = critical + other - pv_kw;
            if deficit <= 1e-12 {
                return true;
            }
            let critical_deficit = (critical - pv_kw).max(0.0);
            let floor = if deficit > critical_deficit + 1e-12 {
                storage.reserve_kwh
            } else {
                storage.min_kwh
            };
            deficit <= storage.max_power_kw + 1e-12
                && deficit * step_h <= (storage.soc_kwh - floor).max(0.0) + 1e-12
        };
        for &i in &order {
            if feasible(critical, other) {
                break;
            }
            served[i] = false;
            if loads[i].0 == Priority::Critical {
                critical -= loads[i].1;
            } else {
                other -= loads[i].1;
            }
        }
        let served_kw = critical + other;
        let (storage_kw, pv_used_kw, pv_curtailed_kw) = if served_kw >= pv_kw {
            let discharge = served_kw - pv_kw;
            storage.soc_kwh -= discharge * step_h;
            (discharge, pv_kw, 0.0)
        } else {
            let surplus = pv_kw - served_kw;
            let room_kw = (storage.capacity_kwh - storage.soc_kwh).max(0.0)
                / (step_h * storage.charge_efficiency);
            let charge = surplus.min(storage.max_power_kw).min(room_kw);
            storage.soc_kwh += charge * step_h * storage.charge_efficiency;
            (-charge, served_kw + charge, surplus - charge)
        };
        storage.soc_kwh = storage
            .soc_kwh
            .clamp(storage.min_kwh.min(storage.soc_kwh), storage.capacity_kwh);
        Dispatch {
            served,
            served_kw,
            shed_kw: loads.iter().map(|l| l.1).sum::<f64>() - served_kw,
            critical_demand_kw,
            critical_served_kw: critical,
            storage_kw,
            pv_used_kw,
            pv_curtailed_kw,
            grid_kw: 0.0,
        }
    }
}

/// What one outage cost, from islanding to reconnection.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OutageKpis {
    pub islanded_at_ms: u64,
    pub reconnected_at_ms: Option<u64>,
    pub minutes_islanded: f64,
    pub energy_not_served_kwh: f64,
    pub critical_demand_kwh: f64,
    pub critical_served_kwh: f64,
    /// Critical energy served over critical energy demanded (1 when none was demanded).
    pub critical_served_share: f64,
    pub lowest_soc_pct: f64,
}

/// Accumulates [`OutageKpis`] step by step.
#[derive(Clone, Debug, Default)]
pub struct KpiRecorder {
    pub outages: Vec<OutageKpis>,
    open: Option<OutageKpis>,
}

impl KpiRecorder {
    /// Records one step that ended at `now_ms` with `mode` after `transition`.
    pub fn record(
        &mut self,
        transition: Option<Transition>,
        islanded: bool,
        step_h: f64,
        d: &Dispatch,
        storage: &Storage,
    ) {
        match transition {
            Some(Transition::Islanded { at_ms, .. }) if self.open.is_none() => {
                self.open = Some(OutageKpis {
                    islanded_at_ms: at_ms,
                    lowest_soc_pct: 100.0,
                    ..Default::default()
                });
            }
            Some(Transition::Reconnected { at_ms }) => {
                if let Some(mut o) = self.open.take() {
                    o.reconnected_at_ms = Some(at_ms);
                    self.close(o);
                }
            }
            _ => {}
        }
        if let (true, Some(o)) = (islanded, self.open.as_mut()) {
            o.minutes_islanded += step_h * 60.0;
            o.energy_not_served_kwh += d.shed_kw * step_h;
            o.critical_demand_kwh += d.critical_demand_kw * step_h;
            o.critical_served_kwh += d.critical_served_kw * step_h;
            let pct = if storage.capacity_kwh > 0.0 {
                100.0 * storage.soc_kwh / storage.capacity_kwh
            } else {
                0.0
            };
            o.lowest_soc_pct = o.lowest_soc_pct.min(pct);
        }
    }

    fn close(&mut self, mut o: OutageKpis) {
        o.critical_served_share = if o.critical_demand_kwh > 0.0 {
            o.critical_served_kwh / o.critical_demand_kwh
        } else {
            1.0
        };
        self.outages.push(o);
    }

    /// Closes an outage still open at the end of a run (no reconnection yet).
    pub fn finish(mut self) -> Vec<OutageKpis> {
        if let Some(o) = self.open.take() {
            self.close(o);
        }
        self.outages
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: u64 = 60_000;

    fn cfg() -> IslandConfig {
        IslandConfig {
            resync_ms: 5 * MIN,
            reading_timeout_ms: 2 * MIN,
        }
    }

    #[test]
    fn an_outage_islands_then_resynchronises_and_reconnects() {
        let mut c = Controller::new(cfg(), 0);
        assert_eq!(c.observe(MIN, Pcc::Healthy), None);
        assert_eq!(
            c.observe(2 * MIN, Pcc::Down),
            Some(Transition::Islanded {
                at_ms: 2 * MIN,
                cause: Cause::Outage
            })
        );
        assert_eq!(c.observe(3 * MIN, Pcc::Down), None);
        assert_eq!(
            c.observe(4 * MIN, Pcc::Healthy),
            Some(Transition::Resynchronising { at_ms: 4 * MIN })
        );
        // A flicker during resynchronisation: back to the island, the clock starts again.
        assert!(matches!(
            c.observe(5 * MIN, Pcc::Down),
            Some(Transition::Islanded { .. })
        ));
        assert!(matches!(
            c.observe(6 * MIN, Pcc::Healthy),
            Some(Transition::Resynchronising { .. })
        ));
        assert_eq!(c.observe(10 * MIN, Pcc::Healthy), None);
        assert_eq!(
            c.observe(11 * MIN, Pcc::Healthy),
            Some(Transition::Reconnected { at_ms: 11 * MIN })
        );
        assert_eq!(c.mode(), Mode::GridConnected);
    }

    #[test]
    fn a_silent_upstream_meter_islands_after_the_timeout() {
        let mut c = Controller::new(cfg(), 0);
        assert_eq!(c.observe(MIN, Pcc::Silent), None);
        assert_eq!(c.observe(2 * MIN, Pcc::Silent), None);
        assert_eq!(
            c.observe(2 * MIN + 1, Pcc::Silent),
            Some(Transition::Islanded {
                at_ms: 2 * MIN + 1,
                cause: Cause::ReadingLost { last_seen_ms: 0 }
            })
        );
    }

    fn storage(soc_kwh: f64) -> Storage {
        Storage {
            capacity_kwh: 100.0,
            max_power_kw: 30.0,
            soc_kwh,
            reserve_kwh: 30.0,
            min_kwh: 5.0,
            charge_efficiency: 0.95,
        }
    }

    #[test]
    fn island_dispatch_sheds_by_priority_and_keeps_the_reserve_for_critical_loads() {
        let mut c = Controller::new(cfg(), 0);
        c.observe(MIN, Pcc::Down);
        let loads = [
            (Priority::Critical, 4.0),
            (Priority::Deferrable, 20.0),
            (Priority::Essential, 10.0),
            (Priority::Essential, 5.0),
        ];
        // Plenty of energy but 30 kW of power for 39 kW: the deferrable load goes.
        let mut s = storage(90.0);
        let d = c.dispatch(0.25, &loads, 0.0, &mut s);
        assert_eq!(d.served, [true, false, true, true]);
        assert!(
            (d.storage_kw - 19.0).abs() < 1e-9 && (s.soc_kwh - (90.0 - 19.0 * 0.25)).abs() < 1e-9
        );
        // Near the reserve: only what keeps the storage above it; critical loads may go below.
        // 4 + 5 kW for 15 minutes is 2.25 kWh: fits in 2.5 kWh above the reserve.
        let mut s = storage(32.5);
        let d = c.dispatch(0.25, &loads, 0.0, &mut s);
        assert_eq!(d.served, [true, false, false, true]);
        let mut s = storage(31.0);
        let d = c.dispatch(0.25, &loads, 0.0, &mut s);
        assert_eq!(d.served, [true, false, false, false]);
        assert!((s.soc_kwh - 30.0).abs() < 1e-9);
        let mut s = storage(5.5);
        let d = c.dispatch(0.25, &loads, 0.0, &mut s);
        assert_eq!(d.served, [false, false, false, false]); // 1 kWh needed, 0.5 above the minimum
        assert_eq!(d.critical_served_kw, 0.0);
        // PV surplus charges the storage, the rest is curtailed.
        let mut s = storage(99.0);
        let d = c.dispatch(0.25, &loads, 60.0, &mut s);
        assert!(d.served.iter().all(|&x| x));
        assert!((s.soc_kwh - 100.0).abs() < 1e-9);
        assert!(d.pv_curtailed_kw > 0.0 && (d.pv_used_kw + d.pv_curtailed_kw - 60.0).abs() < 1e-9);
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn pcc() -> impl Strategy<Value = Pcc> {
            prop_oneof![Just(Pcc::Healthy), Just(Pcc::Down), Just(Pcc::Silent)]
        }

        fn priority() -> impl Strategy<Value = Priority> {
            prop_oneof![
                Just(Priority::Critical),
                Just(Priority::Essential),
                Just(Priority::Deferrable)
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            /// Whatever the PCC does and whatever the loads and PV: transitions follow the state
            /// machine (reconnection only after resync_ms of healthy readings), every step
            /// balances, the storage stays within [min, capacity], a critical load is shed only
            /// when no non-critical load is served, and shed loads are never more important
            /// than served ones.
            #[test]
            fn the_controller_keeps_its_invariants(
                observations in proptest::collection::vec((pcc(), 0.0f64..40.0), 1..200),
                loads in proptest::collection::vec((priority(), 0.0f64..15.0), 0..12),
                soc in 5.0f64..100.0,
            ) {
                let cfg = IslandConfig { resync_ms: 5 * MIN, reading_timeout_ms: 2 * MIN };
                let mut c = Controller::new(cfg, 0);
                let mut s = storage(soc);
                let mut healthy_since: Option<u64> = Some(0);
                for (k, (obs, pv)) in observations.iter().enumerate() {
                    let now = (k as u64 + 1) * MIN;
                    let before = c.mode();
                    match obs {
                        Pcc::Healthy => { healthy_since.get_or_insert(now); }
                        Pcc::Down => healthy_since = None,
                        Pcc::Silent => {}
                    }
                    let t = c.observe(now, *obs);
                    match (before, t) {
                        (_, None) => prop_assert_eq!(c.mode(), before),
                        (Mode::GridConnected, Some(Transition::Islanded { .. })) => {}
                        (Mode::Islanded { .. }, Some(Transition::Resynchronising { .. })) => {
                            prop_assert_eq!(*obs, Pcc::Healthy)
                        }
                        (Mode::Resynchronising { .. }, Some(Transition::Islanded { .. })) => {}
                        (Mode::Resynchronising { .. }, Some(Transition::Reconnected { .. })) => {
                            prop_assert!(healthy_since.is_some_and(|h| now - h >= cfg.resync_ms));
                        }
                        (m, t) => prop_assert!(false, "{:?} -> {:?}", m, t),
                    }
                    if *obs == Pcc::Down {
                        prop_assert!(c.is_islanded());
                    }
                    let d = c.dispatch(1.0 / 12.0, &loads, *pv, &mut s);
                    prop_assert!((d.served_kw - d.pv_used_kw - d.storage_kw - d.grid_kw).abs() < 1e-9);
                    prop_assert!(d.pv_used_kw <= *pv + 1e-9 && d.pv_curtailed_kw >= -1e-9);
                    prop_assert!(s.soc_kwh >= s.min_kwh - 1e-9 && s.soc_kwh <= s.capacity_kwh + 1e-9);
                    prop_assert!(d.storage_kw <= s.max_power_kw + 1e-9);
                    let served_non_critical = loads.iter().zip(&d.served)
                        .any(|(l, &on)| on && l.0 != Priority::Critical && l.1 > 0.0);
                    let shed_critical = loads.iter().zip(&d.served)
                        .any(|(l, &on)| !on && l.0 == Priority::Critical);
                    prop_assert!(!(served_non_critical && shed_critical));
                    let lowest_served = loads.iter().zip(&d.served)
                        .filter(|(_, &on)| on).map(|(l, _)| l.0).min();
                    let highest_shed = loads.iter().zip(&d.served)
                        .filter(|(_, &on)| !on).map(|(l, _)| l.0).max();
                    if let (Some(lo), Some(hi)) = (lowest_served, highest_shed) {
                        prop_assert!(hi <= lo, "shed {:?} while serving {:?}", hi, lo);
                    }
                }
            }
        }
    }
}
