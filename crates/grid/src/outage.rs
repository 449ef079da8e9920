//! Outage scenarios for the islanding controller: a community's homes (load split into critical,
//! essential and deferrable parts), PV, grid-forming storage, and the events that take the main
//! grid away (outages) or make its meter go silent (reading gaps), run step by step through
//! [`Controller`]. The result: every transition, the KPIs of every outage, and per-step totals.
//!
//! ```toml
//! homes = 40
//! step_minutes = 5
//! hours = 24
//! [load]
//! profile_kw = [0.3, 0.25, 0.22, 0.2, 0.2, 0.25, 0.4, 0.6, 0.5, 0.45, 0.45, 0.5,
//!               0.55, 0.5, 0.45, 0.5, 0.6, 0.8, 1.0, 1.0, 0.9, 0.7, 0.5, 0.4]  # per home, by hour
//! critical_share = 0.15      # fridge, medical devices, communications
//! essential_share = 0.45     # lights, cooking; the rest is deferrable (EV, heat pump, laundry)
//! [pv]
//! homes_with_pv = 25
//! peak_kw = 5.0              # per PV home at solar noon, a sine between sunrise and sunset
//! sunrise_hour = 6.0
//! sunset_hour = 20.0
//! [storage]
//! capacity_kwh = 200.0
//! max_power_kw = 60.0
//! initial_soc = 0.6          # shares of capacity
//! reserve = 0.3
//! min = 0.05
//! charge_efficiency = 0.95
//! [island]
//! resync_minutes = 5
//! reading_timeout_minutes = 2
//! [[outages]]
//! start_hour = 17.5
//! duration_hours = 4.0
//! [[reading_gaps]]
//! start_hour = 9.0
//! duration_minutes = 10.0
//! ```
//!
//! Home `i`'s load is the profile times `0.7 + 0.6 · ((i · 37) mod 100) / 100` (a spread of sizes,
//! reproducible). Steps are aligned to the scenario's start (midnight).

use serde::Deserialize;

use crate::island::{
    Controller, Dispatch, IslandConfig, KpiRecorder, OutageKpis, Pcc, Priority, Storage, Transition,
};

/// The most steps a scenario may run.
pub const MAX_STEPS: usize = 1_000_000;
/// The most homes a scenario may hold.
pub const MAX_HOMES: usize = 100_000;

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutageScenario {
    pub homes: usize,
    #[serde(default = "five")]
    pub step_minutes: u32,
    #[serde(default = "day")]
    pub hours: u32,
    pub load: LoadSpec,
    pub pv: PvSpec,
    pub storage: StorageSpec,
    pub island: IslandSpec,
    #[serde(default)]
    pub outages: Vec<Event>,
    #[serde(default)]
    pub reading_gaps: Vec<Gap>,
}

fn five() -> u32 {
    5
}
fn day() -> u32 {
    24
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoadSpec {
    pub profile_kw: Vec<f64>,
    pub critical_share: f64,
    pub essential_share: f64,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PvSpec {
    pub homes_with_pv: usize,
    pub peak_kw: f64,
    pub sunrise_hour: f64,
    pub sunset_hour: f64,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageSpec {
    pub capacity_kwh: f64,
    pub max_power_kw: f64,
    pub initial_soc: f64,
    pub reserve: f64,
    pub min: f64,
    pub charge_efficiency: f64,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IslandSpec {
    pub resync_minutes: f64,
    pub reading_timeout_minutes: f64,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Event {
    pub start_hour: f64,
    pub duration_hours: f64,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Gap {
    pub start_hour: f64,
    pub duration_minutes: f64,
}

/// What is wrong with a scenario.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("outage scenario TOML: {0}")]
    Toml(#[from] toml::de::Error),
    #[error("{0}")]
    Invalid(String),
}

/// One step's totals.
#[derive(Clone, Debug, PartialEq)]
pub struct Step {
    pub at_ms: u64,
    pub islanded: bool,
    pub demand_kw: f64,
    pub pv_kw: f64,
    pub dispatch: Dispatch,
    pub soc_pct: f64,
}

/// A scenario's run.
#[derive(Clone, Debug)]
pub struct OutageRun {
    pub transitions: Vec<Transition>,
    pub outages: Vec<OutageKpis>,
    pub steps: Vec<Step>,
}

fn invalid(msg: String) -> ScenarioError {
    ScenarioError::Invalid(msg)
}

impl OutageScenario {
    pub fn from_toml(text: &str) -> Result<OutageScenario, ScenarioError> {
        let s: OutageScenario = toml::from_str(text)?;
        s.check()?;
        Ok(s)
    }

    /// Validates every number, naming the first that is wrong.
    pub fn check(&self) -> Result<(), ScenarioError> {
        if self.homes == 0 || self.homes > MAX_HOMES {
            return Err(invalid(format!(
                "homes must be 1 to {MAX_HOMES}, not {}",
                self.homes
            )));
        }
        if self.step_minutes == 0 || 60 % self.step_minutes != 0 {
            return Err(invalid(format!(
                "step_minutes must divide an hour (1, 2, 3, 4, 5, 6, 10, 12, 15, 20, 30 or 60), not {}",
                self.step_minutes
            )));
        }
        let steps = self.hours as usize * 60 / self.step_minutes as usize;
        if steps == 0 || steps > MAX_STEPS {
            return Err(invalid(format!(
                "hours x steps per hour must be 1 to {MAX_STEPS} steps, not {steps}"
            )));
        }
        let l = &self.load;
        if l.profile_kw.len() != 24 || l.profile_kw.iter().any(|x| !(x.is_finite() && *x >= 0.0)) {
            return Err(invalid(
                "load.profile_kw must be 24 non-negative numbers (kW per home, by hour)".into(),
            ));
        }
        let shares_ok = (0.0..=1.0).contains(&l.critical_share)
            && (0.0..=1.0).contains(&l.essential_share)
            && l.critical_share + l.essential_share <= 1.0;
        if !shares_ok {
            return Err(invalid(format!(
                "load.critical_share ({}) and load.essential_share ({}) must be shares summing to at most 1",
                l.critical_share, l.essential_share
            )));
        }
        let p = &self.pv;
        let pv_ok = p.homes_with_pv <= self.homes
            && p.peak_kw.is_finite()
            && p.peak_kw >= 0.0
            && (0.0..24.0).contains(&p.sunrise_hour)
            && p.sunrise_hour < p.sunset_hour
            && p.sunset_hour <= 24.0;
        if !pv_ok {
            return Err(invalid(
                "pv: homes_with_pv <= homes, peak_kw >= 0, 0 <= sunrise_hour < sunset_hour <= 24"
                    .into(),
            ));
        }
        self.storage_model()
            .check()
            .map_err(|e| invalid(format!("storage: {e}")))?;
        let i = &self.island;
        if !(i.resync_minutes >= 0.0 && i.reading_timeout_minutes > 0.0) {
            return Err(invalid(
                "island: resync_minutes >= 0 and reading_timeout_minutes > 0".into(),
            ));
        }
        for (n, e) in self.outages.iter().enumerate() {
            if !(e.start_hour >= 0.0 && e.duration_hours > 0.0 && e.duration_hours.is_finite()) {
                return Err(invalid(format!(
                    "outages[{n}]: start_hour >= 0 and duration_hours > 0"
                )));
            }
        }
        for (n, g) in self.reading_gaps.iter().enumerate() {
            if !(g.start_hour >= 0.0 && g.duration_minutes > 0.0 && g.duration_minutes.is_finite())
            {
                return Err(invalid(format!(
                    "reading_gaps[{n}]: start_hour >= 0 and duration_minutes > 0"
                )));
            }
        }
        Ok(())
    }

    fn storage_model(&self) -> Storage {
        let s = &self.storage;
        Storage {
            capacity_kwh: s.capacity_kwh,
            max_power_kw: s.max_power_kw,
            soc_kwh: s.initial_soc * s.capacity_kwh,
            reserve_kwh: s.reserve * s.capacity_kwh,
            min_kwh: s.min * s.capacity_kwh,
            charge_efficiency: s.charge_efficiency,
        }
    }

    /// PV of one PV home at `hour` (clear-sky sine between sunrise and sunset).
    fn pv_kw(&self, hour: f64) -> f64 {
        let p = &self.pv;
        if hour <= p.sunrise_hour || hour >= p.sunset_hour {
            return 0.0;
        }
        p.peak_kw
            * (std::f64::consts::PI * (hour - p.sunrise_hour) / (p.sunset_hour - p.sunrise_hour))
                .sin()
    }

    /// Runs the scenario. O(steps × homes log homes) (the island dispatch sorts the loads).
    pub fn run(&self) -> OutageRun {
        let step_ms = u64::from(self.step_minutes) * 60_000;
        let step_h = f64::from(self.step_minutes) / 60.0;
        let steps = self.hours as usize * 60 / self.step_minutes as usize;
        let mut controller = Controller::new(
            IslandConfig {
                resync_ms: (self.island.resync_minutes * 60_000.0) as u64,
                reading_timeout_ms: (self.island.reading_timeout_minutes * 60_000.0) as u64,
            },
            0,
        );
        let mut storage = self.storage_model();
        let mut kpis = KpiRecorder::default();
        let mut transitions = Vec::new();
        let mut out = Vec::with_capacity(steps);
        let size: Vec<f64> = (0..self.homes)
            .map(|i| 0.7 + 0.6 * ((i * 37) % 100) as f64 / 100.0)
            .collect();
        let l = &self.load;
        let deferrable_share = 1.0 - l.critical_share - l.essential_share;
        let mut loads: Vec<(Priority, f64)> = Vec::with_capacity(3 * self.homes);
        for k in 0..steps {
            let at_ms = (k as u64 + 1) * step_ms;
            let hour = (k as f64 + 0.5) * step_h;
            let in_window = |start_h: f64, dur_h: f64| {
                let now_h = at_ms as f64 / 3_600_000.0;
                now_h > start_h && now_h <= start_h + dur_h + 1e-9
            };
            let down = self
                .outages
                .iter()
                .any(|e| in_window(e.start_hour, e.duration_hours));
            let silent = self
                .reading_gaps
                .iter()
                .any(|g| in_window(g.start_hour, g.duration_minutes / 60.0));
            let pcc = if down {
                Pcc::Down
            } else if silent {
                Pcc::Silent
            } else {
                Pcc::Healthy
            };
            let transition = controller.observe(at_ms, pcc);
            if let Some(t) = transition {
                transitions.push(t);
            }
            let profile = l.profile_kw[(hour as usize).min(23)];
            loads.clear();
            for s in &size {
                let kw = profile * s;
                loads.push((Priority::Critical, kw * l.critical_share));
                loads.push((Priority::Essential, kw * l.essential_share));
                loads.push((Priority::Deferrable, kw * deferrable_share));
            }
            let pv_kw = self.pv_kw(hour) * self.pv.homes_with_pv as f64;
            let d = controller.dispatch(step_h, &loads, pv_kw, &mut storage);
            kpis.record(transition, controller.is_islanded(), step_h, &d, &storage);
            out.push(Step {
                at_ms,
                islanded: controller.is_islanded(),
                demand_kw: loads.iter().map(|x| x.1).sum(),
                pv_kw,
                soc_pct: if storage.capacity_kwh > 0.0 {
                    100.0 * storage.soc_kwh / storage.capacity_kwh
                } else {
                    0.0
                },
                dispatch: d,
            });
        }
        OutageRun {
            transitions,
            outages: kpis.finish(),
            steps: out,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shipped example scenario.
    const EVENING: &str = include_str!("../../../examples/island/outage.toml");

    #[test]
    fn an_evening_outage_keeps_critical_loads_on_and_reconnects() {
        let s = OutageScenario::from_toml(EVENING).unwrap();
        let run = s.run();
        // The reading gap at 09:00: islanded once the 2-minute timeout passed, back when readings
        // resume and 5 minutes of healthy grid passed; the outage at 17:30 the same way.
        let kinds: Vec<&str> = run
            .transitions
            .iter()
            .map(|t| match t {
                Transition::Islanded { .. } => "islanded",
                Transition::Resynchronising { .. } => "resync",
                Transition::Reconnected { .. } => "reconnected",
            })
            .collect();
        assert_eq!(
            kinds,
            [
                "islanded",
                "resync",
                "reconnected",
                "islanded",
                "resync",
                "reconnected"
            ]
        );
        assert_eq!(run.outages.len(), 2);
        let evening = &run.outages[1];
        assert_eq!(evening.islanded_at_ms, (17 * 60 + 35) * 60_000);
        // 4 hours out, plus the resynchronisation.
        assert!(
            (evening.minutes_islanded - 245.0).abs() < 1e-9,
            "{}",
            evening.minutes_islanded
        );
        assert!(evening.energy_not_served_kwh > 0.0);
        assert!(
            (evening.critical_served_share - 1.0).abs() < 1e-12,
            "{evening:?}"
        );
        assert!(evening.lowest_soc_pct >= 5.0 - 1e-9 && evening.lowest_soc_pct < 60.0);
        // Every step balances: served = PV used + storage (+ grid), and the state of charge stays
        // within [min, capacity].
        for st in &run.steps {
            let d = &st.dispatch;
            let supply = d.pv_used_kw + d.storage_kw + d.grid_kw;
            assert!((d.served_kw - supply).abs() < 1e-9, "{st:?}");
            assert!((d.served_kw + d.shed_kw - st.demand_kw).abs() < 1e-9);
            assert!(st.soc_pct >= 5.0 - 1e-9 && st.soc_pct <= 100.0 + 1e-9);
            if !st.islanded {
                assert_eq!(d.shed_kw, 0.0);
            }
        }
    }

    #[test]
    fn a_bigger_battery_serves_more_and_bad_scenarios_are_named() {
        let small = OutageScenario::from_toml(EVENING).unwrap().run();
        let big = OutageScenario::from_toml(
            &EVENING.replace("capacity_kwh = 120.0", "capacity_kwh = 400.0"),
        )
        .unwrap()
        .run();
        assert!(big.outages[1].energy_not_served_kwh < small.outages[1].energy_not_served_kwh);
        let err = |t: &str| OutageScenario::from_toml(t).unwrap_err().to_string();
        assert!(
            err(&EVENING.replace("step_minutes = 5", "step_minutes = 7"))
                .contains("step_minutes must divide an hour")
        );
        assert!(
            err(&EVENING.replace("critical_share = 0.15", "critical_share = 0.75"))
                .contains("summing to at most 1")
        );
        assert!(err(&EVENING.replace("reserve = 0.3", "reserve = 0.01")).contains("storage:"));
        assert!(err(&EVENING.replace("homes_with_pv = 25", "homes_with_pv = 41")).contains("pv:"));
        assert!(
            err(&EVENING.replace("duration_hours = 4.0", "duration_hours = -1.0"))
                .contains("outages[0]")
        );
        assert!(err(&EVENING.replace("0.4]", "]")).contains("24 non-negative numbers"));
        assert!(err("homes = 1").contains("missing field"));
    }
}
