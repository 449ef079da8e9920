//! Proof of generation on a simulated community: 60 PV arrays in three neighbourhoods of
//! Greensboro NC, producing what a measured year of weather (TMY3: hourly direct, diffuse and
//! global irradiance) gives their orientation (tilt 15-40°, azimuth 135-225°), each with its own
//! efficiency (78-92 %) and ±5 % noise per reading; six of them lie: inflating by 1.3x, 1.6x and 2.5x,
//! replaying an earlier day's production, shifting midday production into the evening, and
//! re-sending a stale reading. Every third day of the year, every 15-minute slot goes through
//! `pog::check_slot`. Target: more than 95 % of the false energy held, under 1 % of honest
//! readings held.

mod common;

use std::collections::BTreeMap;

use gridmesh_physics::pog::{check_slot, Hold, PvSite, SlotReading, DELTA_T_S};
use gridmesh_physics::{solar_position, Observer};

use common::Rng;

/// Hourly (GHI, DNI, DHI) of the TMY3 file by hour of the year (hour ending, local standard time).
fn tmy3() -> Option<(Observer, f64, Vec<[f64; 3]>)> {
    let text = gridmesh_refdata::require_text("weather/723170TYA.CSV");
    let mut lines = text.lines();
    let head: Vec<&str> = lines.next()?.split(',').collect();
    let observer = Observer::at(
        head[4].parse().ok()?,
        head[5].parse().ok()?,
        head[6].parse().ok()?,
    );
    let tz_h: f64 = head[3].parse().ok()?;
    lines.next();
    let hours = lines
        .map(|l| {
            let c: Vec<&str> = l.split(',').collect();
            [
                c[4].parse().unwrap(),
                c[7].parse().unwrap(),
                c[10].parse().unwrap(),
            ]
        })
        .collect();
    Some((observer, tz_h, hours))
}

#[test]
fn spoofed_production_is_held_and_honest_production_is_not() {
    let (centre, tz_h, hours) = tmy3().expect("the TMY3 file parses");
    let seed = std::env::var("GRIDMESH_POG_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2026);
    let mut rng = Rng(seed);
    let sites: Vec<PvSite> = (0..60)
        .map(|i| PvSite {
            rated_w: 3_000 + 1_000 * (rng.next() % 8),
            observer: Observer {
                latitude_deg: centre.latitude_deg + 0.02 * f64::from(i / 20),
                ..centre
            },
            tilt_deg: rng.uniform(15.0, 40.0),
            azimuth_deg: rng.uniform(135.0, 225.0),
            neighbourhood: i / 20,
        })
        .collect();
    // Each array's own efficiency (inverter, wiring, soiling): 78 % to 92 %.
    let efficiency: Vec<f64> = (0..sites.len()).map(|_| rng.uniform(0.78, 0.92)).collect();
    // Liars, two per neighbourhood.
    let liars: BTreeMap<usize, &str> = [
        (3, "inflate 1.3x"),
        (11, "inflate 1.6x"),
        (24, "inflate 2.5x"),
        (33, "replay an earlier day"),
        (45, "shift midday into the evening"),
        (52, "re-send a stale reading"),
    ]
    .into_iter()
    .collect();
    let year_start = 1_546_300_800i64 - (tz_h * 3_600.0) as i64; // 2019-01-01 00:00 local
                                                                 // True production per site per slot (mWh), from the weather and each array's orientation.
    let slot_s = 900i64;
    let truth = |i: usize, slot: i64, noise: f64| -> u64 {
        let site = &sites[i];
        let hour = (slot / 4) as usize; // hour index of the year; TMY hour ending = index + 1
        let [ghi, dni, dhi] = hours[hour % hours.len()];
        let mid = (year_start + slot * slot_s + slot_s / 2) as f64;
        let pos = solar_position(mid, DELTA_T_S, &site.observer);
        if pos.elevation_deg <= 0.0 {
            return 0;
        }
        let z = pos.zenith_deg.to_radians();
        let t = site.tilt_deg.to_radians();
        let cos_aoi = z.cos() * t.cos()
            + z.sin() * t.sin() * (pos.azimuth_deg - site.azimuth_deg).to_radians().cos();
        let poa = dni * cos_aoi.max(0.0)
            + dhi * (1.0 + t.cos()) / 2.0
            + ghi * 0.2 * (1.0 - t.cos()) / 2.0;
        (site.rated_w as f64 * poa / 1000.0 * efficiency[i] * noise * 250.0) as u64
    };
    let mut register: Vec<u64> = vec![1_000_000; sites.len()];
    let mut history: Vec<BTreeMap<i64, (u64, u64)>> = vec![BTreeMap::new(); sites.len()];
    let (mut honest, mut honest_held) = (0u64, 0u64);
    let (mut false_mwh, mut false_caught_mwh) = (0u128, 0u128);
    let mut reasons: BTreeMap<String, u64> = BTreeMap::new();
    let mut per_liar: BTreeMap<&str, (u128, u128)> = BTreeMap::new();
    for day in (0..365).step_by(3) {
        for q in 0..96 {
            let slot = day * 96 + q;
            let mut readings = Vec::new();
            let mut true_of = Vec::new();
            for i in 0..sites.len() {
                // Meter and model noise, ±5 % per reading.
                let noise = rng.uniform(0.95, 1.05);
                let actual = truth(i, slot, noise);
                let (energy, reg) = match liars.get(&i).copied() {
                    Some("inflate 1.3x") => (actual * 13 / 10, None),
                    Some("inflate 1.6x") => (actual * 16 / 10, None),
                    Some("inflate 2.5x") => (actual * 25 / 10, None),
                    // What it made on the same slot nine days earlier (a sunnier day, often).
                    Some("replay an earlier day") => {
                        (actual.max(truth(i, slot - 9 * 96, 1.0)), None)
                    }
                    // Claims at 17:00 what it made at 13:00.
                    Some("shift midday into the evening") => {
                        (actual.max(truth(i, slot - 16, 1.0)), None)
                    }
                    // Re-sends yesterday's reading at this hour, register and all.
                    Some(_) => match history[i].get(&(slot - 96 * 3)) {
                        Some(&(e, r)) if e > 0 => (e.max(actual), Some(r)),
                        _ => (actual, None),
                    },
                    None => (actual, None),
                };
                if energy == 0 {
                    continue;
                }
                let reg = reg.unwrap_or(register[i] + energy);
                readings.push(SlotReading {
                    site: i,
                    energy_mwh: energy,
                    register_mwh: reg,
                });
                true_of.push(actual);
            }
            if readings.is_empty() {
                continue;
            }
            let start = year_start + slot * slot_s;
            let held = check_slot(&sites, start, slot_s as u32, &readings, |s| {
                Some(register[s])
            });
            for ((r, h), actual) in readings.iter().zip(&held).zip(&true_of) {
                if liars.contains_key(&r.site) {
                    let extra = r.energy_mwh.saturating_sub(*actual);
                    false_mwh += u128::from(extra);
                    let entry = per_liar.entry(liars[&r.site]).or_default();
                    entry.0 += u128::from(extra);
                    if h.is_some() {
                        false_caught_mwh += u128::from(extra);
                        entry.1 += u128::from(extra);
                    }
                } else {
                    honest += 1;
                    if let Some(h) = h {
                        honest_held += 1;
                        *reasons.entry(format!("honest: {}", kind(h))).or_default() += 1;
                    }
                }
                if let Some(h) = h {
                    if liars.contains_key(&r.site) {
                        *reasons.entry(format!("liar: {}", kind(h))).or_default() += 1;
                    }
                }
                // Every checked reading moves the register on, as on the ledger.
                register[r.site] = r.register_mwh;
                history[r.site].insert(slot, (r.energy_mwh, r.register_mwh));
            }
        }
    }
    let caught = false_caught_mwh as f64 / false_mwh as f64;
    let fp = honest_held as f64 / honest as f64;
    eprintln!(
        "false energy {:.1} kWh, {:.1} % held; honest readings {honest}, {:.3} % held; {reasons:?}",
        false_mwh as f64 / 1e6,
        100.0 * caught,
        100.0 * fp
    );
    for (liar, (f, c)) in &per_liar {
        eprintln!(
            "  {liar}: {:.1} kWh false, {:.1} % held",
            *f as f64 / 1e6,
            100.0 * *c as f64 / (*f as f64).max(1.0)
        );
    }
    assert!(caught > 0.95, "caught {caught}");
    assert!(fp < 0.01, "false positives {fp}");
}

fn kind(h: &Hold) -> &'static str {
    match h {
        Hold::RegisterMismatch { .. } => "register",
        Hold::AboveRating { .. } => "rating",
        Hold::AboveClearSky { .. } => "clear sky",
        Hold::NeighbourOutlier { .. } => "neighbours",
        Hold::AreaConservation { .. } => "area conservation",
    }
}
