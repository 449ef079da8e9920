//! The solar position against pvlib's independent implementation of NREL's SPA, and the clear-sky
//! PV bound against a year of measured irradiance (TMY3, Greensboro NC).
//!
//! pvlib runs in the project's venv (`./scripts/setup`); without it that test fails. The TMY3
//! file comes from `../shared/data/weather` (a failure if absent).

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use gridmesh_physics::clearsky::{max_plane_irradiance_w_m2, DEFAULT_MARGIN};
use gridmesh_physics::{solar_position, Observer};

use common::{repo, Rng};

/// 1,000 random instants (1950-2100) and places (±66° latitude, any longitude, 0-4,000 m): zenith
/// and azimuth within 1e-6° of pvlib wherever the sun is more than a degree from the zenith (the
/// azimuth is undefined there).
#[test]
fn solar_position_agrees_with_pvlib() {
    let python = gridmesh_refdata::require_python();
    let mut rng = Rng(7);
    let cases: Vec<serde_json::Value> = (0..1_000)
        .map(|_| {
            serde_json::json!({
                "unix_s": rng.uniform(-631_152_000.0, 4_102_444_800.0).floor(),
                "lat": rng.uniform(-66.0, 66.0),
                "lon": rng.uniform(-180.0, 180.0),
                "elev_m": rng.uniform(0.0, 4_000.0),
                "pressure_mbar": rng.uniform(600.0, 1_050.0),
                "temp_c": rng.uniform(-20.0, 40.0),
                "delta_t_s": rng.uniform(30.0, 120.0),
            })
        })
        .collect();
    let mut child = Command::new(python)
        .arg(repo("scripts/interop/pvlib_peer.py"))
        .arg("spa")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(serde_json::json!({ "cases": cases }).to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let theirs: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let (mut worst_zen, mut worst_azi) = (0.0f64, 0.0f64);
    for (i, c) in cases.iter().enumerate() {
        let f = |k: &str| c[k].as_f64().unwrap();
        let observer = Observer {
            latitude_deg: f("lat"),
            longitude_deg: f("lon"),
            elevation_m: f("elev_m"),
            pressure_mbar: f("pressure_mbar"),
            temperature_c: f("temp_c"),
        };
        let p = solar_position(f("unix_s"), f("delta_t_s"), &observer);
        let zen = theirs["zenith_deg"][i].as_f64().unwrap();
        let azi = theirs["azimuth_deg"][i].as_f64().unwrap();
        worst_zen = worst_zen.max((p.zenith_deg - zen).abs());
        if p.zenith_deg > 1.0 {
            let d = (p.azimuth_deg - azi).abs();
            worst_azi = worst_azi.max(d.min(360.0 - d));
        }
    }
    eprintln!(
        "1,000 cases: worst |dzenith| {worst_zen:.1e} deg, worst |dazimuth| {worst_azi:.1e} deg"
    );
    assert!(worst_zen < 1e-6 && worst_azi < 1e-6);
}

/// A year of hourly measured irradiance in Greensboro (TMY3): an honest PV array, modelled as
/// producing in proportion to the measured global horizontal irradiance, is flagged by the
/// clear-sky bound in fewer than 1 % of its daylight hours; and the bound is not loose (the
/// clearest hours come within 30 % of it).
#[test]
fn honest_production_passes_the_clear_sky_bound_on_a_measured_year() {
    let text = gridmesh_refdata::require_text("weather/723170TYA.CSV");
    let mut lines = text.lines();
    let head: Vec<&str> = lines.next().unwrap().split(',').collect();
    let tz_h: f64 = head[3].parse().unwrap();
    let observer = Observer::at(
        head[4].parse().unwrap(),
        head[5].parse().unwrap(),
        head[6].parse().unwrap(),
    );
    lines.next(); // column names
    let (mut daylight, mut flagged) = (0u32, 0u32);
    let mut tightest = 0.0f64;
    for line in lines {
        let col: Vec<&str> = line.split(',').collect();
        let (date, time) = (col[0], col[1]);
        let ghi: f64 = col[4].parse().unwrap();
        let (m, d, _y): (u32, u32, u32) = {
            let p: Vec<u32> = date.split('/').map(|x| x.parse().unwrap()).collect();
            (p[0], p[1], p[2])
        };
        let hour: u32 = time[..2].parse().unwrap();
        // TMY3 values are the hour ending at the time given, local standard time; the calendar
        // is 2019's (a typical year has no leap day).
        let days = days_before_month_2019(m) + d - 1;
        let end_utc = 1_546_300_800.0 + f64::from(days) * 86_400.0 + f64::from(hour) * 3_600.0
            - tz_h * 3_600.0;
        // The bound's mean over the hour, per minute.
        let mut bound = 0.0;
        for k in 0..60 {
            let t = end_utc - 3_600.0 + 30.0 + 60.0 * f64::from(k);
            let p = solar_position(t, 69.0, &observer);
            bound += max_plane_irradiance_w_m2(&p, &observer).min(1000.0) * DEFAULT_MARGIN;
        }
        bound /= 60.0;
        if ghi > 0.0 {
            daylight += 1;
            if ghi > bound {
                flagged += 1;
            }
            if bound > 200.0 {
                tightest = tightest.max(ghi / bound);
            }
        }
    }
    let share = f64::from(flagged) / f64::from(daylight);
    eprintln!(
        "TMY3 Greensboro: {daylight} daylight hours, {flagged} flagged ({:.3} %), clearest hour at {:.0} % of the bound",
        100.0 * share,
        100.0 * tightest
    );
    assert!(daylight > 4_000);
    assert!(share < 0.01, "{share}");
    assert!(tightest > 0.7, "{tightest}");
}

fn days_before_month_2019(m: u32) -> u32 {
    [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334][(m - 1) as usize]
}
