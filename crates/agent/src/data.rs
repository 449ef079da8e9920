//! Reference data as 15-minute series.
//!
//! - [`parse_try`]: a DWD test reference year (`TRY2010_04_Jahr.dat`, Potsdam): hourly cloud
//!   cover, temperature, direct and diffuse horizontal irradiance; hour `HH` (1..24, CET) is the
//!   hour ending at HH:00 CET. The year is 2010 (the TRY's edition), not a leap year.
//! - [`pv_power_kw`]: what a fixed array makes under that weather, per quarter hour: the hour's
//!   beam and diffuse irradiance, the sun's position at the middle of each quarter hour (NREL SPA,
//!   `gridmesh_physics`), isotropic-sky transposition, −0.4 %/K above 25 °C, 14 % system losses.
//! - [`parse_bdew`] and [`household_load_kw`]: the BDEW 2025 household profile (H25: kWh per
//!   quarter hour per month and day type, for 1,000,000 kWh a year) scaled to one home, with the
//!   2010 calendar (Saturdays, Sundays and German public holidays), and — because one home is not
//!   the average of thousands — a seeded multiplicative AR(1) variation (documented synthetic
//!   layer: the profile and the weather are measured, the household's randomness is not).

use gridmesh_physics::{solar_position, Observer};
use rand::{Rng, SeedableRng};

/// The DWD test reference year 2010 for Potsdam (region 4), as shipped in `data/` (DWD open data,
/// via demandlib, MIT): the weather the simulator's built-in scenarios, a home's agent and the
/// tests use unless given other data.
pub const REFERENCE_TRY: &str = include_str!("../data/TRY2010_04_Jahr.dat");
/// The BDEW 2025 household profile (H25), as shipped in `data/` (via demandlib, MIT).
pub const REFERENCE_H25: &str = include_str!("../data/h25.csv");

/// 2010-01-01 00:00 UTC.
pub const YEAR_START_UNIX_S: i64 = 1_262_304_000;
/// Quarter hours in 2010.
pub const SLOTS_2010: usize = 365 * 96;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum DataError {
    #[error("line {line}: {reason}")]
    Bad { line: usize, reason: String },
    #[error("expected {expected} hourly rows, found {found}")]
    Rows { expected: usize, found: usize },
}

/// One hour of the test reference year.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct WeatherHour {
    /// Cloud cover, eighths (9 = sky not visible).
    pub cloud_octas: u8,
    pub temperature_c: f64,
    pub beam_horizontal_w_m2: f64,
    pub diffuse_horizontal_w_m2: f64,
}

/// Parses the DWD TRY format: the rows after the `***` line, 8,760 of them in time order.
pub fn parse_try(text: &str) -> Result<Vec<WeatherHour>, DataError> {
    let mut rows = Vec::with_capacity(8_760);
    let mut started = false;
    for (i, line) in text.lines().enumerate() {
        if !started {
            started = line.trim() == "***";
            continue;
        }
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.is_empty() {
            continue;
        }
        let bad = |reason: &str| DataError::Bad {
            line: i + 1,
            reason: reason.to_string(),
        };
        if f.len() < 16 {
            return Err(bad("fewer than 16 columns"));
        }
        let num = |k: usize, what: &str| -> Result<f64, DataError> {
            f[k].parse::<f64>()
                .map_err(|_| bad(&format!("{what} {:?} is not a number", f[k])))
        };
        rows.push(WeatherHour {
            cloud_octas: num(5, "cloud cover")? as u8,
            temperature_c: num(8, "temperature")?,
            beam_horizontal_w_m2: num(13, "beam irradiance")?.max(0.0),
            diffuse_horizontal_w_m2: num(14, "diffuse irradiance")?.max(0.0),
        });
    }
    if rows.len() != 8_760 {
        return Err(DataError::Rows {
            expected: 8_760,
            found: rows.len(),
        });
    }
    Ok(rows)
}

/// The weather hour a quarter hour of 2010 (UTC slot index) falls in: TRY hours are CET
/// (UTC+1) and hour HH covers (HH−1, HH], so UTC slot s lies in row `(s / 4 + 1) % 8760`.
fn hour_of_slot(slot: usize) -> usize {
    (slot / 4 + 1) % 8_760
}

/// Cloud cover (octas) and temperature (°C) of each quarter hour of 2010 (UTC slots), from the
/// hour it falls in.
pub fn weather_per_slot(weather: &[WeatherHour]) -> (Vec<f64>, Vec<f64>) {
    (0..SLOTS_2010)
        .map(|s| {
            let w = &weather[hour_of_slot(s)];
            (f64::from(w.cloud_octas), w.temperature_c)
        })
        .unzip()
}

/// The day type (0 Saturday, 1 Sunday/holiday, 2 working day) of each quarter hour of 2010 (UTC
/// slots, local days).
pub fn day_types() -> Vec<u8> {
    (0..SLOTS_2010)
        .map(|s| calendar(((s + 4) % SLOTS_2010) / 96).1 as u8)
        .collect()
}

/// A fixed PV array.
#[derive(Clone, Copy, Debug)]
pub struct PvArray {
    pub rated_kw: f64,
    pub tilt_deg: f64,
    /// Eastward from north.
    pub azimuth_deg: f64,
    pub observer: Observer,
}

impl PvArray {
    /// A south-facing 30° array at Potsdam (the TRY's station).
    pub fn potsdam(rated_kw: f64) -> PvArray {
        PvArray {
            rated_kw,
            tilt_deg: 30.0,
            azimuth_deg: 180.0,
            observer: Observer::at(52.38, 13.07, 81.0),
        }
    }
}

/// Power in the middle of each quarter hour of 2010 (UTC), kW, and the clear-sky plane
/// irradiance bound's power at the same instants (for clear-sky indices).
pub fn pv_power_kw(weather: &[WeatherHour], array: &PvArray) -> (Vec<f64>, Vec<f64>) {
    let (tilt, az) = (array.tilt_deg.to_radians(), array.azimuth_deg.to_radians());
    let mut power = Vec::with_capacity(SLOTS_2010);
    let mut clear = Vec::with_capacity(SLOTS_2010);
    for slot in 0..SLOTS_2010 {
        let w = &weather[hour_of_slot(slot)];
        let t = YEAR_START_UNIX_S as f64 + slot as f64 * 900.0 + 450.0;
        let pos = solar_position(t, 67.0, &array.observer);
        let zenith = pos.zenith_deg.to_radians();
        let sun_az = pos.azimuth_deg.to_radians();
        let cos_aoi = zenith.cos() * tilt.cos() + zenith.sin() * tilt.sin() * (sun_az - az).cos();
        let cs_dni = gridmesh_physics::clearsky::clear_sky_dni_w_m2(&pos, &array.observer);
        let (poa, poa_clear) = if pos.zenith_deg >= 89.0 {
            (w.diffuse_horizontal_w_m2 * (1.0 + tilt.cos()) / 2.0, 0.0)
        } else {
            let dni = (w.beam_horizontal_w_m2 / zenith.cos()).min(cs_dni);
            let ghi = w.beam_horizontal_w_m2 + w.diffuse_horizontal_w_m2;
            let beam = dni * cos_aoi.max(0.0);
            let diffuse = w.diffuse_horizontal_w_m2 * (1.0 + tilt.cos()) / 2.0;
            let ground = 0.2 * ghi * (1.0 - tilt.cos()) / 2.0;
            let clear_beam = cs_dni * cos_aoi.max(0.0);
            let clear_diffuse = 0.1 * cs_dni * zenith.cos() * (1.0 + tilt.cos()) / 2.0;
            (beam + diffuse + ground, clear_beam + clear_diffuse)
        };
        // Hourly weather spread over quarter hours would put an hour's twilight diffuse light
        // into quarters before sunrise: no plane receives more than the physical bound at the
        // instant (what proof of generation checks readings against).
        let poa = poa.min(gridmesh_physics::clearsky::max_plane_irradiance_w_m2(
            &pos,
            &array.observer,
        ));
        let to_kw = |poa: f64| {
            let cell_c = w.temperature_c + 0.03 * poa;
            (array.rated_kw * poa / 1_000.0 * (1.0 - 0.004 * (cell_c - 25.0)) * 0.86).max(0.0)
        };
        power.push(to_kw(poa));
        clear.push(to_kw(poa_clear));
    }
    (power, clear)
}

/// The BDEW profile: `[month][day type]` → 96 quarter-hour values (kWh per quarter hour for
/// 1,000,000 kWh a year); day types 0 Saturday, 1 Sunday/holiday, 2 working day.
pub struct BdewProfile {
    pub values: Vec<[[f64; 96]; 3]>,
}

/// Parses `h25.csv`: two header lines, then 96 rows of 36 values (12 months × SA, FT, WT).
pub fn parse_bdew(text: &str) -> Result<BdewProfile, DataError> {
    let mut values = vec![[[0.0; 96]; 3]; 12];
    let mut rows = 0;
    for (i, line) in text.lines().enumerate().skip(2) {
        if line.trim().is_empty() {
            continue;
        }
        let f: Vec<&str> = line.split(',').collect();
        if f.len() != 37 || rows >= 96 {
            return Err(DataError::Bad {
                line: i + 1,
                reason: "expected a time and 36 values".into(),
            });
        }
        for (k, v) in f[1..].iter().enumerate() {
            values[k / 3][k % 3][rows] = v.trim().parse().map_err(|_| DataError::Bad {
                line: i + 1,
                reason: format!("{v:?} is not a number"),
            })?;
        }
        rows += 1;
    }
    if rows != 96 {
        return Err(DataError::Rows {
            expected: 96,
            found: rows,
        });
    }
    Ok(BdewProfile { values })
}

/// Day of year (0-based) of German public holidays of 2010 (nationwide).
const HOLIDAYS_2010: [usize; 9] = [0, 91, 94, 120, 132, 143, 275, 358, 359];

/// Month (0-11) and day type (0 Saturday, 1 Sunday/holiday, 2 working day) of a 2010 day.
pub fn calendar(day: usize) -> (usize, usize) {
    const MONTH_DAYS: [usize; 12] = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    let (mut month, mut d) = (0, day);
    while d >= MONTH_DAYS[month] {
        d -= MONTH_DAYS[month];
        month += 1;
    }
    // 2010-01-01 was a Friday.
    let weekday = (day + 4) % 7; // 0 Monday .. 6 Sunday
    let kind = if weekday == 6 || HOLIDAYS_2010.contains(&day) {
        1
    } else if weekday == 5 {
        0
    } else {
        2
    };
    (month, kind)
}

/// A household's load over 2010, kW per quarter hour (UTC; the profile is local time, CET):
/// the profile scaled to `annual_kwh`, with the seeded variation of [`with_variation`].
pub fn household_load_kw(profile: &BdewProfile, annual_kwh: f64, seed: u64) -> Vec<f64> {
    let scale = annual_kwh / 1_000_000.0 * 4.0; // kWh per quarter hour -> kW
    let base: Vec<f64> = (0..SLOTS_2010)
        .map(|slot| {
            let local = (slot + 4) % SLOTS_2010; // CET = UTC + 1 h
            let (month, kind) = calendar(local / 96);
            profile.values[month][kind][local % 96] * scale
        })
        .collect();
    with_variation(&base, seed)
}

/// A load series times a seeded multiplicative variation: `exp` of an AR(1) process with
/// coefficient 0.95 per quarter hour and standard deviation 0.35, mean one.
pub fn with_variation(base_kw: &[f64], seed: u64) -> Vec<f64> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let (phi, sigma) = (0.95f64, 0.35f64);
    let innovation = sigma * (1.0 - phi * phi).sqrt();
    let mut x = 0.0f64;
    base_kw
        .iter()
        .map(|base| {
            // A standard normal from two uniforms (Box-Muller).
            let (u1, u2): (f64, f64) = (rng.gen_range(1e-12..1.0), rng.gen());
            let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
            x = phi * x + innovation * z;
            base * (x - sigma * sigma / 2.0).exp()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_2010_calendar_knows_weekends_and_holidays() {
        assert_eq!(calendar(0), (0, 1)); // New Year, a Friday holiday
        assert_eq!(calendar(1), (0, 0)); // Saturday 2 January
        assert_eq!(calendar(2), (0, 1)); // Sunday
        assert_eq!(calendar(3), (0, 2)); // Monday
        assert_eq!(calendar(91), (3, 1)); // Good Friday, 2 April
        assert_eq!(calendar(364), (11, 2)); // Friday 31 December
        assert_eq!(hour_of_slot(0), 1);
        assert_eq!(hour_of_slot(SLOTS_2010 - 1), 0);
    }
}
