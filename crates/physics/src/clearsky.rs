//! Clear-sky bounds: the most irradiance a plane of any orientation can receive, and so the most
//! energy a PV system can produce in an interval, at a place and time.
//!
//! The rule (documented, so that a held reading can be explained):
//!
//! - Direct normal irradiance under a clear sky: Meinel's `E0 · 0.7^(AM^0.678)` with Laue's
//!   altitude correction, `E0 [(1 − 0.14 h) 0.7^(AM^0.678) + 0.14 h]` (h in km), where `E0` is the
//!   solar constant 1,361 W/m² over the Earth-sun distance squared and `AM` Kasten and Young's air
//!   mass, corrected for pressure.
//! - Diffuse and reflected light on any plane: at most `0.12 E0 sin(elevation) + 25 W/m²`.
//! - The most a plane can receive is the sum (a plane facing the sun). Below the horizon there is
//!   no direct light; the diffuse allowance fades to zero 2° below it.
//! - A PV system of rated power `P` (at 1,000 W/m²) produces at most `P · min(1, POA / 1000) ·
//!   margin`, with `margin` = 1.25 by default: cold cells (+8 % at −10 °C), cloud-edge enhancement
//!   over minutes, meter class tolerance. The interval's bound sums that power over 1-minute steps
//!   (sun position at each step's middle) and floors to a mWh.

use crate::solar::{solar_position, Observer, SolarPosition};

/// The solar constant (TSI), W/m².
pub const SOLAR_CONSTANT_W_M2: f64 = 1361.0;
/// Headroom over the clear-sky power a PV reading is allowed.
pub const DEFAULT_MARGIN: f64 = 1.25;
/// Integration step of an interval's bound, seconds.
pub const STEP_S: u32 = 60;

/// Kasten and Young's (1989) relative air mass at this apparent zenith, times the pressure ratio;
/// None when the sun is below the horizon.
pub fn air_mass(zenith_deg: f64, pressure_mbar: f64) -> Option<f64> {
    if zenith_deg >= 90.0 {
        return None;
    }
    let relative = 1.0
        / (libm::cos(zenith_deg.to_radians())
            + 0.50572 * libm::pow(96.07995 - zenith_deg, -1.6364));
    Some(relative * pressure_mbar / 1013.25)
}

/// Clear-sky direct normal irradiance, W/m² (Meinel with Laue's altitude correction).
pub fn clear_sky_dni_w_m2(pos: &SolarPosition, observer: &Observer) -> f64 {
    let Some(am) = air_mass(pos.zenith_deg, observer.pressure_mbar) else {
        return 0.0;
    };
    let e0 = SOLAR_CONSTANT_W_M2 / (pos.earth_sun_au * pos.earth_sun_au);
    let h_km = (observer.elevation_m / 1000.0).clamp(0.0, 5.0);
    let t = libm::pow(0.7, libm::pow(am, 0.678));
    e0 * ((1.0 - 0.14 * h_km) * t + 0.14 * h_km)
}

/// The most irradiance any plane can receive under a clear sky, W/m² (see the module rule).
pub fn max_plane_irradiance_w_m2(pos: &SolarPosition, observer: &Observer) -> f64 {
    let e0 = SOLAR_CONSTANT_W_M2 / (pos.earth_sun_au * pos.earth_sun_au);
    let elevation = pos.elevation_deg;
    if elevation <= -2.0 {
        return 0.0;
    }
    let diffuse = if elevation < 0.0 {
        25.0 * (elevation + 2.0) / 2.0
    } else {
        0.12 * e0 * libm::sin(elevation.to_radians()) + 25.0
    };
    clear_sky_dni_w_m2(pos, observer) + diffuse
}

/// The sun at the middle of each [`STEP_S`] step of an interval: (step length s, position).
pub fn step_positions(
    observer: &Observer,
    start_unix_s: i64,
    duration_s: u32,
    delta_t_s: f64,
) -> Vec<(u32, SolarPosition)> {
    let mut out = Vec::with_capacity(duration_s.div_ceil(STEP_S) as usize);
    let mut t = 0u32;
    while t < duration_s {
        let step = STEP_S.min(duration_s - t);
        let mid = start_unix_s as f64 + f64::from(t) + f64::from(step) / 2.0;
        out.push((step, solar_position(mid, delta_t_s, observer)));
        t += step;
    }
    out
}

/// [`pv_energy_bound_mwh`] from the interval's [`step_positions`] (to share them among devices
/// at one place).
pub fn pv_energy_bound_from(
    rated_w: u64,
    observer: &Observer,
    positions: &[(u32, SolarPosition)],
    margin: f64,
) -> u64 {
    let steps = positions
        .iter()
        .map(|(step, pos)| (*step, max_plane_irradiance_w_m2(pos, observer)));
    pv_energy_bound_of(rated_w, steps, margin)
}

/// [`pv_energy_bound_from`] from each step's length (s) and [`max_plane_irradiance_w_m2`] then
/// (to share them among devices at one place).
pub fn pv_energy_bound_of(
    rated_w: u64,
    steps: impl IntoIterator<Item = (u32, f64)>,
    margin: f64,
) -> u64 {
    let mut mwh = 0.0;
    for (step, poa) in steps {
        let power_w = rated_w as f64 * (poa / 1000.0).min(1.0) * margin;
        // W × s → mWh: / 3600 × 1000.
        mwh += power_w * f64::from(step) / 3.6;
    }
    libm::floor(mwh) as u64
}

/// The most energy a PV system of `rated_w` at `observer` can produce from `start_unix_s` for
/// `duration_s` seconds, in mWh (floored). `delta_t_s` as in [`solar_position`].
pub fn pv_energy_bound_mwh(
    rated_w: u64,
    observer: &Observer,
    start_unix_s: i64,
    duration_s: u32,
    delta_t_s: f64,
    margin: f64,
) -> u64 {
    let positions = step_positions(observer, start_unix_s, duration_s, delta_t_s);
    pv_energy_bound_from(rated_w, observer, &positions, margin)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zurich() -> Observer {
        Observer::at(47.3769, 8.5417, 408.0)
    }

    #[test]
    fn clear_sky_irradiance_is_plausible() {
        // 2024-06-21 11:30 UTC: near solar noon in Zurich, the sun at ~66°.
        let p = solar_position(1_718_969_400.0, 69.0, &zurich());
        let dni = clear_sky_dni_w_m2(&p, &zurich());
        let poa = max_plane_irradiance_w_m2(&p, &zurich());
        assert!((850.0..1000.0).contains(&dni), "{dni}");
        assert!((1000.0..1250.0).contains(&poa), "{poa}");
        // Midnight: nothing.
        let night = solar_position(1_718_969_400.0 + 43_200.0, 69.0, &zurich());
        assert_eq!(max_plane_irradiance_w_m2(&night, &zurich()), 0.0);
        assert_eq!(air_mass(95.0, 1013.25), None);
        assert!((air_mass(0.0, 1013.25).unwrap() - 1.0).abs() < 1e-3);
        assert!((air_mass(60.0, 1013.25).unwrap() - 1.995).abs() < 0.01);
    }

    #[test]
    fn a_slot_bound_follows_the_sun() {
        let z = zurich();
        let noon = 1_718_968_500; // 2024-06-21 11:15 UTC, a 15-minute slot
        let at_noon = pv_energy_bound_mwh(5_000, &z, noon, 900, 69.0, DEFAULT_MARGIN);
        // 5 kW for a quarter hour is 1.25 kWh; the clear sky at noon allows the full rating times
        // the margin.
        assert_eq!(at_noon, 1_562_500, "{at_noon}");
        // 07:15 local: an east-facing array can already make most of its rating.
        let morning = pv_energy_bound_mwh(5_000, &z, noon - 6 * 3600, 900, 69.0, DEFAULT_MARGIN);
        assert!(morning > at_noon / 2 && morning < at_noon, "{morning}");
        // 05:45 local, just after sunrise: little.
        let dawn =
            pv_energy_bound_mwh(5_000, &z, noon - 7 * 3600 - 1800, 900, 69.0, DEFAULT_MARGIN);
        assert!(dawn < at_noon / 3, "{dawn}");
        let night = pv_energy_bound_mwh(5_000, &z, noon + 11 * 3600, 900, 69.0, DEFAULT_MARGIN);
        assert_eq!(night, 0);
    }

    /// Pinned to the bit (see `solar`): the same integer on every platform.
    #[test]
    fn the_bound_is_pinned() {
        let z = zurich();
        let b = pv_energy_bound_mwh(7_300, &z, 1_718_944_200, 900, 69.0, DEFAULT_MARGIN);
        assert_eq!(b, PINNED_BOUND, "{b}");
    }

    const PINNED_BOUND: u64 = 1_164_716;
}
