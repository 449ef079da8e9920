//! Heat pumps as thermal storage: a building (or a hot-water tank) as a first-order RC model
//! heated by a heat pump whose coefficient of performance follows the outdoor temperature.
//!
//! Over a slot of `Δt` with the heat pump drawing `P` (kW electric), the store at `T` loses heat
//! to its surroundings at `T_amb` through `UA` (kW/K), holds `C` (kWh/K) and gives `D` (kW of
//! heat: hot water drawn; negative for gains):
//!
//! ```text
//! C · dT/dt = COP · P − UA · (T − T_amb) − D
//! T_{t+1} = a · T_t + (1 − a) · (T_amb + (COP · P − D) / UA),   a = exp(−UA · Δt / C)
//! ```
//!
//! exact for inputs constant over the slot, and linear in `T` and `P`: the home's linear program
//! takes it as it is and moves heating in time within the owner's comfort band. The band is a
//! hard limit wherever the heat pump can hold it; where it cannot (full power is not enough on a
//! cold night, or the sun overheats a building the heat pump cannot cool), the store follows
//! what the thermostat would reach, and [`ThermalStore::bounds`] says so.

use serde::Serialize;

use crate::schedule::DT_H;

/// How well a building keeps its heat: its specific heat loss per m² of floor, W/(m²·K)
/// (transmission and ventilation, the order of magnitude of EN ISO 13790's values for
/// European dwellings).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Insulation {
    /// Passive house.
    Passive,
    /// Built or renovated to a recent standard.
    Good,
    /// Partly renovated.
    Average,
    /// Unrenovated, before the 1980s.
    Poor,
}

impl Insulation {
    pub fn heat_loss_w_per_m2_k(self) -> f64 {
        match self {
            Insulation::Passive => 0.5,
            Insulation::Good => 0.9,
            Insulation::Average => 1.4,
            Insulation::Poor => 2.2,
        }
    }
}

/// Effective thermal capacity of a medium-weight dwelling per m² of floor, Wh/(m²·K)
/// (EN ISO 13790's "medium" class, 165 kJ/(m²·K)).
pub const CAPACITY_WH_PER_M2_K: f64 = 45.8;

/// Heat capacity of water, kWh/(litre·K).
pub const WATER_KWH_PER_L_K: f64 = 4.186 / 3600.0;

/// Coefficient of performance of an air-source heat pump heating a building at outdoor
/// temperature `t_c` (a linear fit to typical datasheets: 3.5 at 7 °C, 0.07 per kelvin).
pub fn space_heating_cop(t_c: f64) -> f64 {
    (3.5 + 0.07 * (t_c - 7.0)).clamp(1.8, 5.0)
}

/// Coefficient of performance heating hot water (to about 55 °C) at outdoor temperature `t_c`.
pub fn hot_water_cop(t_c: f64) -> f64 {
    (2.6 + 0.05 * (t_c - 7.0)).clamp(1.5, 4.0)
}

/// A home's space heating by heat pump: the building and the owner's comfort band.
#[derive(Clone, Debug, Serialize)]
pub struct Heating {
    pub floor_m2: f64,
    pub insulation: Insulation,
    /// The heat pump's electrical rating, kW.
    pub max_power_kw: f64,
    /// The owner's comfort band, °C.
    pub band_c: (f64, f64),
    /// Heat from people, appliances and the sun, kW.
    pub gains_kw: f64,
    /// A hot-water tank heated by heat pump, if the home has one.
    pub hot_water: Option<HotWater>,
}

/// A hot-water tank: what it holds, what the home draws a day, its band, its heat pump.
#[derive(Clone, Debug, Serialize)]
pub struct HotWater {
    pub litres: f64,
    /// Heat drawn a day, kWh (showers and taps).
    pub kwh_per_day: f64,
    /// The band the water is kept in, °C.
    pub band_c: (f64, f64),
    /// The heat pump's electrical rating for hot water, kW.
    pub max_power_kw: f64,
}

/// Heat lost by a tank per kelvin above its room, kW/K (about 1.5 kWh a day for 200 l at 55 °C).
const TANK_LOSS_KW_PER_K_PER_L: f64 = 0.0000095;
/// The room a tank stands in, °C.
const TANK_ROOM_C: f64 = 18.0;

impl HotWater {
    /// Heat drawn in the slot `local_slot` of the day (local time, 0-95), kW: 40 % of the day's
    /// use between 06:00 and 08:00, 50 % between 18:00 and 21:00, the rest spread over the day.
    pub fn draw_kw(&self, local_slot: usize) -> f64 {
        let day = self.kwh_per_day;
        let spread = 0.1 * day / 24.0;
        let s = local_slot % 96;
        spread
            + if (24..32).contains(&s) {
                0.4 * day / 2.0
            } else if (72..84).contains(&s) {
                0.5 * day / 3.0
            } else {
                0.0
            }
    }

    /// The tank over the outdoor temperatures `outdoor_c` from local slot `local_slot0`, at
    /// `tank_c` now.
    pub fn store(&self, outdoor_c: &[f64], local_slot0: usize, tank_c: f64) -> ThermalStore {
        let draw: Vec<f64> = (0..outdoor_c.len())
            .map(|k| self.draw_kw(local_slot0 + k))
            .collect();
        ThermalStore::hot_water_tank(
            self.litres,
            self.litres * TANK_LOSS_KW_PER_K_PER_L,
            TANK_ROOM_C,
            self.max_power_kw,
            outdoor_c,
            &draw,
            self.band_c,
            tank_c,
        )
    }
}

impl Heating {
    /// The building over the outdoor temperatures `outdoor_c`, from `indoor_c`.
    pub fn store(&self, outdoor_c: &[f64], indoor_c: f64) -> ThermalStore {
        let mut s = ThermalStore::building(
            self.floor_m2,
            self.insulation,
            self.max_power_kw,
            outdoor_c,
            self.band_c,
            indoor_c,
        );
        s.demand_kw = vec![-self.gains_kw; outdoor_c.len()];
        s
    }
}

/// A thermal store a heat pump heats, over the slots of a home's problem.
#[derive(Clone, Debug, Serialize)]
pub struct ThermalStore {
    /// What it is, for people ("space heating", "hot water").
    pub name: String,
    /// The heat pump's electrical rating, kW.
    pub max_power_kw: f64,
    /// Coefficient of performance per slot.
    pub cop: Vec<f64>,
    /// The surroundings' temperature per slot, °C (outdoors for a building).
    pub ambient_c: Vec<f64>,
    /// Heat drawn per slot, kW (hot water used; negative for solar and internal gains).
    pub demand_kw: Vec<f64>,
    pub ua_kw_per_k: f64,
    pub capacity_kwh_per_k: f64,
    /// Temperature at the start of the first slot, °C.
    pub initial_c: f64,
    /// The owner's comfort band, °C.
    pub min_c: f64,
    pub max_c: f64,
}

impl ThermalStore {
    /// A building of `floor_m2` with `insulation`, its heat pump of `max_power_kw`, under the
    /// outdoor temperatures `outdoor_c` (one per slot), kept within `band_c`, starting at
    /// `initial_c`.
    pub fn building(
        floor_m2: f64,
        insulation: Insulation,
        max_power_kw: f64,
        outdoor_c: &[f64],
        band_c: (f64, f64),
        initial_c: f64,
    ) -> ThermalStore {
        ThermalStore {
            name: "space heating".into(),
            max_power_kw,
            cop: outdoor_c.iter().map(|t| space_heating_cop(*t)).collect(),
            ambient_c: outdoor_c.to_vec(),
            demand_kw: vec![0.0; outdoor_c.len()],
            ua_kw_per_k: floor_m2 * insulation.heat_loss_w_per_m2_k() / 1000.0,
            capacity_kwh_per_k: floor_m2 * CAPACITY_WH_PER_M2_K / 1000.0,
            initial_c,
            min_c: band_c.0,
            max_c: band_c.1,
        }
    }

    /// A hot-water tank of `litres` (losing `ua_kw_per_k` to a room at `room_c`), drawn from
    /// at `draw_kw` of heat per slot, heated by a heat pump of `max_power_kw` at outdoor
    /// temperatures `outdoor_c`.
    #[allow(clippy::too_many_arguments)]
    pub fn hot_water_tank(
        litres: f64,
        ua_kw_per_k: f64,
        room_c: f64,
        max_power_kw: f64,
        outdoor_c: &[f64],
        draw_kw: &[f64],
        band_c: (f64, f64),
        initial_c: f64,
    ) -> ThermalStore {
        ThermalStore {
            name: "hot water".into(),
            max_power_kw,
            cop: outdoor_c.iter().map(|t| hot_water_cop(*t)).collect(),
            ambient_c: vec![room_c; outdoor_c.len()],
            demand_kw: draw_kw.to_vec(),
            ua_kw_per_k,
            capacity_kwh_per_k: litres * WATER_KWH_PER_L_K,
            initial_c,
            min_c: band_c.0,
            max_c: band_c.1,
        }
    }

    pub fn slots(&self) -> usize {
        self.cop.len()
    }

    /// The share of the temperature difference kept over a slot, `exp(−UA·Δt/C)`.
    pub fn decay(&self) -> f64 {
        (-self.ua_kw_per_k * DT_H / self.capacity_kwh_per_k).exp()
    }

    /// The temperature at the end of slot `t` from `temp_c` at its start with the heat pump at
    /// `p_kw`.
    pub fn next(&self, t: usize, temp_c: f64, p_kw: f64) -> f64 {
        self.after(t, temp_c, p_kw, DT_H)
    }

    /// The temperature `dt_h` hours into slot `t` from `temp_c` with the heat pump at `p_kw`
    /// (a live home's model between two looks at its devices).
    pub fn after(&self, t: usize, temp_c: f64, p_kw: f64, dt_h: f64) -> f64 {
        let a = (-self.ua_kw_per_k * dt_h / self.capacity_kwh_per_k).exp();
        a * temp_c
            + (1.0 - a)
                * (self.ambient_c[t] + (self.cop[t] * p_kw - self.demand_kw[t]) / self.ua_kw_per_k)
    }

    /// The power that brings `temp_c` to `target_c` by the end of slot `t`, within the heat
    /// pump's range.
    pub fn power_to_reach(&self, t: usize, temp_c: f64, target_c: f64) -> f64 {
        let a = self.decay();
        let free = self.next(t, temp_c, 0.0);
        let per_kw = (1.0 - a) * self.cop[t] / self.ua_kw_per_k;
        ((target_c - free) / per_kw).clamp(0.0, self.max_power_kw)
    }

    /// The thermostat: each slot, the power that holds the lower edge of the band (or as near
    /// as full power gets), and the temperatures it leaves. What a home without a plan does, and
    /// the proof that the band (as [`ThermalStore::bounds`] widens it) can be kept.
    pub fn thermostat(&self) -> (Vec<f64>, Vec<f64>) {
        let mut temp = self.initial_c;
        let (mut p, mut temps) = (Vec::new(), Vec::new());
        for t in 0..self.slots() {
            let kw = self.power_to_reach(t, temp, self.min_c);
            temp = self.next(t, temp, kw);
            p.push(kw);
            temps.push(temp);
        }
        (p, temps)
    }

    /// The temperature each slot may end at, `(low, high)`: the comfort band, widened only
    /// where the thermostat cannot keep it (below it at full power, above it with the heat pump
    /// off).
    pub fn bounds(&self) -> Vec<(f64, f64)> {
        let (_, temps) = self.thermostat();
        temps
            .into_iter()
            .map(|t| (self.min_c.min(t), self.max_c.max(t)))
            .collect()
    }

    /// Why the store is unfit for a problem of `slots`, if it is.
    pub fn malformed(&self, slots: usize) -> Option<String> {
        let n = |v: &[f64]| v.len() == slots && v.iter().all(|x| x.is_finite());
        if !(n(&self.cop) && n(&self.ambient_c) && n(&self.demand_kw)) {
            return Some(format!(
                "{}: COP, ambient temperature and demand need one finite value per slot",
                self.name
            ));
        }
        let valid = self.cop.iter().all(|c| *c > 0.0)
            && self.ua_kw_per_k > 0.0
            && self.capacity_kwh_per_k > 0.0
            && self.max_power_kw >= 0.0
            && self.min_c <= self.max_c
            && self.initial_c.is_finite();
        if !valid {
            return Some(format!(
                "{}: positive COP, UA and capacity, a power rating and a band low ≤ high",
                self.name
            ));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn house(outdoor: f64) -> ThermalStore {
        ThermalStore::building(
            140.0,
            Insulation::Average,
            4.0,
            &[outdoor; 96],
            (20.0, 23.0),
            21.0,
        )
    }

    /// The discrete step is the exact solution of the RC equation: halving the step twice over
    /// gives the same temperature, and with no heating the house tends to the outdoors with the
    /// time constant C/UA.
    #[test]
    fn the_step_is_the_exact_rc_solution() {
        let h = house(0.0);
        let tau_h = h.capacity_kwh_per_k / h.ua_kw_per_k;
        assert!((20.0..60.0).contains(&tau_h), "{tau_h} h");
        let after = h.next(0, 21.0, 0.0);
        let exact = 21.0 * (-DT_H / tau_h).exp();
        assert!((after - exact).abs() < 1e-12);
        // Heat at P for a slot, by the closed form and by small Euler steps.
        let p = 2.0;
        let mut t = 21.0;
        let steps = 100_000;
        for _ in 0..steps {
            t += DT_H / steps as f64 / h.capacity_kwh_per_k
                * (h.cop[0] * p - h.ua_kw_per_k * (t - 0.0));
        }
        assert!(
            (h.next(0, 21.0, p) - t).abs() < 1e-6,
            "{} vs {t}",
            h.next(0, 21.0, p)
        );
    }

    /// The thermostat holds the lower edge where it can, and the bounds widen only where it
    /// cannot.
    #[test]
    fn the_thermostat_holds_the_band_where_the_heat_pump_can() {
        let mild = house(5.0);
        let (p, temps) = mild.thermostat();
        assert!(temps.iter().all(|t| (t - 20.0).abs() < 1e-9 || *t > 20.0));
        // It coasts from 21 °C down to the edge, then holds it with part power.
        assert!(p.iter().all(|p| (0.0..4.0).contains(p)));
        assert_eq!(p[0], 0.0);
        assert!(p[95] > 0.5 && (temps[95] - 20.0).abs() < 1e-9);
        assert!(mild.bounds().iter().all(|b| *b == (20.0, 23.0)));
        // At −30 °C 4 kW cannot hold 20 °C in a poorly insulated house: the lower bound follows
        // what full power reaches.
        let cold = ThermalStore::building(
            200.0,
            Insulation::Poor,
            4.0,
            &[-30.0; 96],
            (20.0, 23.0),
            21.0,
        );
        let b = cold.bounds();
        assert!(b[95].0 < 20.0 && b[95].1 == 23.0, "{:?}", b[95]);
    }

    /// A store that does not fit its problem is named before anything is solved.
    #[test]
    fn a_store_that_does_not_fit_is_named() {
        let h = house(5.0);
        assert_eq!(h.malformed(96), None);
        assert!(h
            .malformed(48)
            .unwrap()
            .contains("one finite value per slot"));
        let mut bad = house(5.0);
        bad.min_c = 25.0;
        assert!(bad.malformed(96).unwrap().contains("band low"));
        let mut p = crate::schedule::example_home(3);
        p.thermal[0].ua_kw_per_k = f64::NAN;
        match p.plan() {
            crate::schedule::Plan::Fallback { reason, .. } => {
                assert!(reason.to_string().contains("space heating"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
    }

    /// A day's draws add up to the day's hot water, morning and evening as described.
    #[test]
    fn a_days_hot_water_draws_add_up() {
        let w = HotWater {
            litres: 200.0,
            kwh_per_day: 6.0,
            band_c: (45.0, 60.0),
            max_power_kw: 2.0,
        };
        let day: f64 = (0..96).map(|s| w.draw_kw(s) * DT_H).sum();
        assert!((day - 6.0).abs() < 1e-12, "{day}");
        let morning: f64 = (24..32).map(|s| w.draw_kw(s) * DT_H).sum();
        assert!(morning > 2.4 && morning < 2.5, "{morning}");
        // Standing losses: about 1.5 kWh a day at 55 °C in an 18 °C room.
        let tank = w.store(&[5.0; 96], 0, 55.0);
        let loss_kwh_per_day = tank.ua_kw_per_k * (55.0 - 18.0) * 24.0;
        assert!((1.0..2.0).contains(&loss_kwh_per_day), "{loss_kwh_per_day}");
    }
}
