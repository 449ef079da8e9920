//! The sun's position for an observer: NREL's Solar Position Algorithm (Reda and Andreas 2004,
//! NREL/TP-560-34302; uncertainty ±0.0003° over the years −2000 to 6000), step by step as the paper
//! numbers them.
//!
//! Every transcendental function comes from the `libm` crate (a pure-Rust port of musl's libm),
//! never the platform's, and Rust never fuses a multiply and an add on its own, so every validator on
//! every platform computes the same bits: the proof-of-generation check that uses this may run
//! inside consensus. A test pins outputs to the bit.

use crate::spa_terms::*;

/// Where and in what air the sun is observed.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Observer {
    /// Geographic latitude, north positive.
    pub latitude_deg: f64,
    /// Geographic longitude, east positive.
    pub longitude_deg: f64,
    pub elevation_m: f64,
    /// Annual mean local pressure and temperature (for the refraction correction).
    pub pressure_mbar: f64,
    pub temperature_c: f64,
}

impl Observer {
    /// An observer at this place with the standard atmosphere at its elevation (for refraction,
    /// which changes the result by at most about half a degree near the horizon).
    pub fn at(latitude_deg: f64, longitude_deg: f64, elevation_m: f64) -> Observer {
        Observer {
            latitude_deg,
            longitude_deg,
            elevation_m,
            pressure_mbar: 1013.25 * libm::pow(1.0 - 2.25577e-5 * elevation_m, 5.25588),
            temperature_c: 12.0,
        }
    }
}

/// The sun as the observer sees it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SolarPosition {
    /// Topocentric zenith angle, refraction included.
    pub zenith_deg: f64,
    /// Topocentric azimuth, eastward from north.
    pub azimuth_deg: f64,
    /// 90° − zenith.
    pub elevation_deg: f64,
    /// Earth-sun distance, astronomical units.
    pub earth_sun_au: f64,
    /// Geocentric declination.
    pub declination_deg: f64,
}

const DEG: f64 = std::f64::consts::PI / 180.0;

fn sin_d(x: f64) -> f64 {
    libm::sin(x * DEG)
}
fn cos_d(x: f64) -> f64 {
    libm::cos(x * DEG)
}
fn tan_d(x: f64) -> f64 {
    libm::tan(x * DEG)
}
fn atan2_d(y: f64, x: f64) -> f64 {
    libm::atan2(y, x) / DEG
}
fn asin_d(x: f64) -> f64 {
    libm::asin(x) / DEG
}
/// `x` reduced to [0, 360).
fn limit_360(x: f64) -> f64 {
    let r = x - 360.0 * libm::floor(x / 360.0);
    if r >= 360.0 {
        0.0
    } else {
        r
    }
}

/// Σ A cos(B + C·x) over a table of terms.
fn series(terms: &[[f64; 3]], x: f64) -> f64 {
    terms
        .iter()
        .map(|t| t[0] * libm::cos(t[1] + t[2] * x))
        .sum()
}

/// A polynomial in `x` whose coefficients are the series of `tables`, divided by 10^8 (the
/// paper's eq. 9-11 for L, B and R).
fn earth_periodic(tables: &[&[[f64; 3]]], x: f64) -> f64 {
    let mut power = 1.0;
    let mut sum = 0.0;
    for t in tables {
        sum += series(t, x) * power;
        power *= x;
    }
    sum / 1e8
}

/// The sun's position at `unix_s` (seconds since 1970-01-01 UTC, fractions allowed) for
/// `observer`, with `delta_t_s` = TT − UT (about 69 s in 2025; 67 s in the paper's 2003 example).
pub fn solar_position(unix_s: f64, delta_t_s: f64, observer: &Observer) -> SolarPosition {
    // 3.1 Julian day, ephemeris day, centuries and millennium.
    let jd = unix_s / 86_400.0 + 2_440_587.5;
    let jde = jd + delta_t_s / 86_400.0;
    let jc = (jd - 2_451_545.0) / 36_525.0;
    let jce = (jde - 2_451_545.0) / 36_525.0;
    let jme = jce / 10.0;
    // 3.2 The Earth's heliocentric longitude, latitude (degrees) and radius (AU).
    let l = limit_360(earth_periodic(&[&L0, &L1, &L2, &L3, &L4, &L5], jme) / DEG);
    let b = earth_periodic(&[&B0, &B1], jme) / DEG;
    let r = earth_periodic(&[&R0, &R1, &R2, &R3, &R4], jme);
    // 3.3 Geocentric longitude and latitude.
    let theta = limit_360(l + 180.0);
    let beta = -b;
    // 3.4 Nutation in longitude and obliquity.
    let jce2 = jce * jce;
    let jce3 = jce2 * jce;
    let x = [
        297.85036 + 445_267.111_48 * jce - 0.001_914_2 * jce2 + jce3 / 189_474.0,
        357.52772 + 35_999.050_34 * jce - 0.000_160_3 * jce2 - jce3 / 300_000.0,
        134.96298 + 477_198.867_398 * jce + 0.008_697_2 * jce2 + jce3 / 56_250.0,
        93.27191 + 483_202.017_538 * jce - 0.003_682_5 * jce2 + jce3 / 327_270.0,
        125.04452 - 1_934.136_261 * jce + 0.002_070_8 * jce2 + jce3 / 450_000.0,
    ];
    let mut delta_psi = 0.0;
    let mut delta_eps = 0.0;
    for (y, k) in NUTATION_Y.iter().zip(NUTATION_ABCD.iter()) {
        let arg: f64 = y
            .iter()
            .zip(x.iter())
            .map(|(&yi, xi)| f64::from(yi) * xi)
            .sum();
        delta_psi += (k[0] + k[1] * jce) * sin_d(arg);
        delta_eps += (k[2] + k[3] * jce) * cos_d(arg);
    }
    delta_psi /= 36_000_000.0;
    delta_eps /= 36_000_000.0;
    // 3.5 True obliquity of the ecliptic.
    let u = jme / 10.0;
    let eps0 = [
        84_381.448, -4_680.93, -1.55, 1_999.25, -51.38, -249.67, -39.05, 7.12, 27.87, 5.79, 2.45,
    ]
    .iter()
    .rev()
    .fold(0.0, |acc, c| acc * u + c);
    let eps = eps0 / 3_600.0 + delta_eps;
    // 3.6-3.7 Aberration and the apparent sun longitude.
    let delta_tau = -20.4898 / (3_600.0 * r);
    let lambda = theta + delta_psi + delta_tau;
    // 3.8 Apparent sidereal time at Greenwich.
    let nu0 = limit_360(
        280.460_618_37 + 360.985_647_366_29 * (jd - 2_451_545.0) + 0.000_387_933 * jc * jc
            - jc * jc * jc / 38_710_000.0,
    );
    let nu = nu0 + delta_psi * cos_d(eps);
    // 3.9-3.10 Geocentric right ascension and declination.
    let alpha = limit_360(atan2_d(
        sin_d(lambda) * cos_d(eps) - tan_d(beta) * sin_d(eps),
        cos_d(lambda),
    ));
    let delta = asin_d(sin_d(beta) * cos_d(eps) + cos_d(beta) * sin_d(eps) * sin_d(lambda));
    // 3.11 Observer local hour angle.
    let h = limit_360(nu + observer.longitude_deg - alpha);
    // 3.12 Topocentric right ascension and declination (parallax).
    let xi = 8.794 / (3_600.0 * r);
    let phi = observer.latitude_deg;
    let uu = libm::atan(0.996_647_19 * tan_d(phi));
    let xx = libm::cos(uu) + observer.elevation_m / 6_378_140.0 * cos_d(phi);
    let yy = 0.996_647_19 * libm::sin(uu) + observer.elevation_m / 6_378_140.0 * sin_d(phi);
    let denom = cos_d(delta) - xx * sin_d(xi) * cos_d(h);
    let delta_alpha = atan2_d(-xx * sin_d(xi) * sin_d(h), denom);
    let delta_prime = atan2_d((sin_d(delta) - yy * sin_d(xi)) * cos_d(delta_alpha), denom);
    // 3.13 Topocentric local hour angle.
    let h_prime = h - delta_alpha;
    // 3.14 Topocentric zenith angle, with refraction when the sun is near or above the horizon.
    let e0 =
        asin_d(sin_d(phi) * sin_d(delta_prime) + cos_d(phi) * cos_d(delta_prime) * cos_d(h_prime));
    const SUN_RADIUS_DEG: f64 = 0.26667;
    const REFRACTION_AT_HORIZON_DEG: f64 = 0.5667;
    let delta_e = if e0 >= -(SUN_RADIUS_DEG + REFRACTION_AT_HORIZON_DEG) {
        (observer.pressure_mbar / 1_010.0) * (283.0 / (273.0 + observer.temperature_c)) * 1.02
            / (60.0 * tan_d(e0 + 10.3 / (e0 + 5.11)))
    } else {
        0.0
    };
    let elevation = e0 + delta_e;
    // 3.15 Topocentric azimuth, eastward from north.
    let gamma = limit_360(atan2_d(
        sin_d(h_prime),
        cos_d(h_prime) * sin_d(phi) - tan_d(delta_prime) * cos_d(phi),
    ));
    SolarPosition {
        zenith_deg: 90.0 - elevation,
        azimuth_deg: limit_360(gamma + 180.0),
        elevation_deg: elevation,
        earth_sun_au: r,
        declination_deg: delta,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The paper's example (section A5): 2003-10-17 12:30:30 local time at UTC−7 (19:30:30 UT),
    /// 39.742476° N, 105.1786° W, 1,830.14 m, 820 mbar, 11 °C, ΔT = 67 s: topocentric zenith
    /// 50.11162°, azimuth 194.34024°.
    #[test]
    fn reproduces_the_nrel_reference_example() {
        let unix_s = 1_066_419_030.0; // 2003-10-17T19:30:30Z
        let observer = Observer {
            latitude_deg: 39.742476,
            longitude_deg: -105.1786,
            elevation_m: 1830.14,
            pressure_mbar: 820.0,
            temperature_c: 11.0,
        };
        let p = solar_position(unix_s, 67.0, &observer);
        assert!(
            (p.zenith_deg - 50.11162).abs() < 5e-6,
            "zenith {}",
            p.zenith_deg
        );
        assert!(
            (p.azimuth_deg - 194.340241).abs() < 5e-7,
            "azimuth {}",
            p.azimuth_deg
        );
        // The intermediate values the paper prints (Table A5.2).
        assert!(
            (p.earth_sun_au - 0.9965422974).abs() < 1e-9,
            "R {}",
            p.earth_sun_au
        );
        assert!(
            (p.declination_deg - -9.31434).abs() < 5e-6,
            "delta {}",
            p.declination_deg
        );
    }

    /// Outputs pinned to the bit: a change of maths library or of evaluation order fails here,
    /// before validators could disagree.
    #[test]
    fn outputs_are_pinned_to_the_bit() {
        let p = solar_position(1_719_835_200.0, 69.0, &Observer::at(47.3769, 8.5417, 408.0));
        assert_eq!(
            (p.zenith_deg.to_bits(), p.azimuth_deg.to_bits()),
            (PINNED_ZENITH, PINNED_AZIMUTH),
            "zenith {} azimuth {}",
            p.zenith_deg,
            p.azimuth_deg
        );
    }

    const PINNED_ZENITH: u64 = 4627746739978641632;
    const PINNED_AZIMUTH: u64 = 4641120249913864584;

    #[test]
    fn the_sun_is_up_at_noon_and_down_at_midnight() {
        let zurich = Observer::at(47.3769, 8.5417, 408.0);
        // 2024-06-21 11:30 UTC, near solar noon: high in the south.
        let noon = solar_position(1_718_969_400.0, 69.0, &zurich);
        assert!(noon.elevation_deg > 60.0 && (noon.azimuth_deg - 180.0).abs() < 15.0);
        let midnight = solar_position(1_718_969_400.0 + 43_200.0, 69.0, &zurich);
        assert!(midnight.elevation_deg < -15.0);
    }
}
