//! The community a scenario describes: each home's load, equipment and EV habits over the run's
//! window, drawn from the scenario's distributions with the scenario's seed.
//!
//! Series are indexed by the window's own slots: slot 0 is the start of the week before the
//! period (the agents' forecast history), the period starts at [`Community::warmup`], and the
//! window ends two days after it (the last plans look a day ahead). A window that runs past
//! 31 December continues with the data year's January.

use gridmesh_agent::data::{pv_power_kw, weather_per_slot, PvArray, SLOTS_2010};
use gridmesh_agent::schedule::Battery;
use gridmesh_agent::study::{self, Home, Session};
use gridmesh_agent::SLOTS_PER_DAY;
use rand::{Rng, SeedableRng};

use crate::data::Inputs;
use crate::scenario::{Scenario, Strategy};

/// Slots of forecast history before the period.
pub const WARMUP_SLOTS: usize = 7 * SLOTS_PER_DAY;
/// Slots after the period (the last plans' horizon).
pub const TAIL_SLOTS: usize = 2 * SLOTS_PER_DAY;

/// The homes and the community-wide series.
pub struct Community {
    /// Homes as the agents' study code models them (heat pumps apart from the load).
    pub homes: study::Community,
    pub strategies: Vec<Strategy>,
    /// Electrical rating of each home's heat pump, kW (0: none).
    pub heat_pump_kw: Vec<f64>,
    /// The MATPOWER bus each home sits on, where the homes file names one.
    pub buses: Vec<Option<u32>>,
    /// Outdoor temperature per slot, °C.
    pub temperature_c: Vec<f64>,
    /// Slot of the data year the window starts at.
    pub window_start: usize,
    pub warmup: usize,
    /// Slots of the period.
    pub slots: usize,
}

/// The window's slots of a year-long series (wrapping past the year's end).
fn window(series: &[f64], start: usize, len: usize) -> Vec<f64> {
    (0..len).map(|u| series[(start + u) % SLOTS_2010]).collect()
}

/// Draws the community of `s` (seeded: the same scenario gives the same homes). What the homes
/// file says of a home replaces that draw; every home draws from its own seed, so a home the
/// file leaves blank is drawn as without the file.
pub fn build(s: &Scenario, inputs: &Inputs) -> Community {
    let slots = s.period.days * SLOTS_PER_DAY;
    let window_start = s.first_day() * SLOTS_PER_DAY - WARMUP_SLOTS;
    let len = WARMUP_SLOTS + slots + TAIL_SLOTS;
    let (pv, clear) = pv_power_kw(&inputs.weather, &PvArray::potsdam(1.0));
    let (_, temperature) = weather_per_slot(&inputs.weather);
    let temperature_c = window(&temperature, window_start, len);
    let strategies = s.strategies();
    let home = |i: usize| -> (Home, f64) {
        let seed = s.seed.wrapping_mul(1_000_003).wrapping_add(i as u64);
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let draw = |rng: &mut rand::rngs::StdRng, r: [f64; 2]| {
            if r[1] > r[0] {
                rng.gen_range(r[0]..r[1])
            } else {
                r[0]
            }
        };
        let known = inputs.homes.get(i).cloned().unwrap_or_default();
        let annual_kwh = draw(&mut rng, s.homes.annual_kwh);
        let annual_kwh = known.annual_kwh.unwrap_or(annual_kwh);
        let pv_kwp = if rng.gen_bool(s.pv.share) {
            draw(&mut rng, s.pv.kwp)
        } else {
            0.0
        };
        let pv_kwp = known.pv_kwp.unwrap_or(pv_kwp);
        let b = &s.battery;
        let drawn_kwh = rng
            .gen_bool(b.share)
            .then(|| draw(&mut rng, b.capacity_kwh));
        let capacity_kwh = match known.battery_kwh {
            Some(c) => (c > 0.0).then_some(c),
            None => drawn_kwh,
        };
        let battery = capacity_kwh.map(|capacity_kwh| Battery {
            capacity_kwh,
            power_kw: (capacity_kwh * b.c_rate).min(b.max_power_kw),
            charge_efficiency: b.efficiency,
            discharge_efficiency: b.efficiency,
            initial_kwh: capacity_kwh / 2.0,
            reserve_kwh: capacity_kwh * b.reserve_share,
        });
        let e = &s.ev;
        let has_ev = rng.gen_bool(e.share);
        let has_ev = known.ev.unwrap_or(has_ev);
        let ev_power_kw = e.power_kw[rng.gen_range(0..e.power_kw.len())];
        let mut sessions = Vec::new();
        if has_ev {
            // Local time is UTC + 1 h: slot of day = local hour × 4 − 4.
            for day in 0..len / SLOTS_PER_DAY - 1 {
                let arrive = (draw(&mut rng, e.arrival_hour) * 4.0).round() as usize;
                let leave = (draw(&mut rng, e.departure_hour) * 4.0).round() as usize;
                sessions.push(Session {
                    arrival: (day * SLOTS_PER_DAY + arrive).saturating_sub(4),
                    departure: ((day + 1) * SLOTS_PER_DAY + leave).saturating_sub(4),
                    energy_kwh: draw(&mut rng, e.energy_kwh),
                });
            }
        }
        let hp = &s.heat_pump;
        let has_hp = rng.gen_bool(hp.share);
        let has_hp = known.heat_pump.unwrap_or(has_hp);
        let heating = has_hp.then(|| gridmesh_agent::thermal::Heating {
            floor_m2: draw(&mut rng, hp.floor_m2),
            insulation: hp.insulation[rng.gen_range(0..hp.insulation.len())],
            max_power_kw: hp.max_power_kw,
            band_c: (hp.comfort_c[0], hp.comfort_c[1]),
            gains_kw: hp.gains_kw,
            hot_water: (hp.tank_litres > 0.0).then(|| gridmesh_agent::thermal::HotWater {
                litres: hp.tank_litres,
                kwh_per_day: hp.hot_water_kwh_per_day,
                band_c: (hp.hot_water_c[0], hp.hot_water_c[1]),
                max_power_kw: hp.hot_water_power_kw,
            }),
        });
        let hp_kw = heating.as_ref().map_or(0.0, |h| h.max_power_kw);
        let load_kw = window(&inputs.load.home(annual_kwh, seed), window_start, len);
        let h = Home {
            load_kw,
            pv_kwp,
            battery,
            ev_power_kw,
            sessions,
            import_limit_kw: s.homes.import_limit_kw,
            export_limit_kw: s.homes.export_limit_kw,
            heating,
        };
        (h, hp_kw)
    };
    // Each home draws from its own seed, so drawing them on every core gives the same community.
    let (homes, heat_pump_kw): (Vec<Home>, Vec<f64>) = {
        use rayon::prelude::*;
        (0..s.homes.count).into_par_iter().map(home).unzip()
    };
    Community {
        homes: study::Community {
            homes,
            pv_per_kwp: window(&pv, window_start, len),
            clear_sky_per_kwp: window(&clear, window_start, len),
            outdoor_c: temperature_c.clone(),
        },
        strategies,
        heat_pump_kw,
        buses: (0..s.homes.count)
            .map(|i| inputs.homes.get(i).and_then(|h| h.bus))
            .collect(),
        temperature_c,
        window_start,
        warmup: WARMUP_SLOTS,
        slots,
    }
}
