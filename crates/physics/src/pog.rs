//! Proof-of-generation checks on one slot's PV readings: what physics and the neighbours say a
//! device could have produced. A reading that fails a check is **held** (not paid) with the reason.
//!
//! The checks, in order (the first that fails is the reason):
//!
//! 1. **Register**: a device's cumulative register must equal its last register plus the energy
//!    it reports (a replayed old reading, or energy invented without a register, fails).
//! 2. **Rating**: at most the rated power for the whole slot.
//! 3. **Clear sky**: at most [`pv_energy_bound_mwh`] for the device's place and slot (any
//!    orientation, clear sky, margin 1.25).
//! 4. **Neighbours**: devices of one neighbourhood see the same clouds. Each array's clear-sky
//!    production is split into a beam and a diffuse part (from its registered tilt and azimuth);
//!    the neighbourhood's readings are fitted as `a · beam + b · diffuse` (least squares, a and b
//!    non-negative: how much of the clear-sky beam and diffuse light got through), readings far
//!    above are set aside and the fit repeated; a reading above `1.25 ×` its fitted value plus 3 %
//!    of its rating is an outlier. Needs at least five neighbours reporting, and is skipped at dawn
//!    and dusk (less than 5 % of the rating expected).
//!
//! Integer energies in and out; floats in between, the same bits everywhere: `libm` for every
//! transcendental function, plain IEEE arithmetic otherwise (no `powi`, whose precision is
//! platform-dependent), sorting by `total_cmp`.

use std::collections::BTreeMap;

use crate::clearsky::{
    clear_sky_dni_w_m2, max_plane_irradiance_w_m2, pv_energy_bound_of, step_positions,
    DEFAULT_MARGIN,
};
use crate::solar::{Observer, SolarPosition};

/// A PV device as registered.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PvSite {
    pub rated_w: u64,
    pub observer: Observer,
    /// Array tilt from horizontal and azimuth (eastward from north), as registered.
    pub tilt_deg: f64,
    pub azimuth_deg: f64,
    /// Devices of one neighbourhood are compared with each other.
    pub neighbourhood: u32,
}

/// One device's reading for the slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlotReading {
    /// Index into the sites.
    pub site: usize,
    pub energy_mwh: u64,
    /// The cumulative register after the slot.
    pub register_mwh: u64,
}

/// Why a reading is held.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hold {
    RegisterMismatch {
        expected_mwh: u64,
    },
    AboveRating {
        max_mwh: u64,
    },
    AboveClearSky {
        bound_mwh: u64,
    },
    /// Ratios to the clear-sky expectation, in parts per million.
    NeighbourOutlier {
        ratio_ppm: u64,
        expected_ppm: u64,
    },
    /// The homes of an area claim more export than its feeder-head meter allows.
    AreaConservation {
        claimed_mwh: u64,
        bound_mwh: u64,
    },
}

/// Losses allowed between the homes' meters and the feeder head, percent of the claimed export
/// (a low-voltage feeder loses 2-5 % at full load).
pub const AREA_LOSS_MARGIN_PERCENT: u64 = 5;

/// Energy conservation over an area in one slot. Everything the homes export goes either to
/// their neighbours (who import it) or up through the feeder head, less the losses on the way:
/// `Σ export = Σ import + head export - head import + losses`. The homes' claimed export can
/// therefore be no more than `Σ import + head export - head import` plus the loss margin; above
/// that, some of it was never produced. The check cannot say whose claim is false, so it holds the
/// area's readings (not disputable: it names no culprit).
pub fn area_conservation(
    head_export_mwh: u64,
    head_import_mwh: u64,
    homes_import_mwh: u64,
    homes_export_mwh: u64,
) -> Option<Hold> {
    let through = u128::from(homes_import_mwh) + u128::from(head_export_mwh);
    let available = through.saturating_sub(u128::from(head_import_mwh));
    let losses = u128::from(homes_export_mwh) * u128::from(AREA_LOSS_MARGIN_PERCENT) / 100 + 1_000;
    let bound = available + losses;
    (u128::from(homes_export_mwh) > bound).then(|| Hold::AreaConservation {
        claimed_mwh: homes_export_mwh,
        bound_mwh: u64::try_from(bound).unwrap_or(u64::MAX),
    })
}

impl Hold {
    /// Whether a hard physical bound was broken (register, rating, clear sky): evidence of a
    /// false reading, unlike the statistical neighbour check.
    pub fn is_physical(&self) -> bool {
        !matches!(
            self,
            Hold::NeighbourOutlier { .. } | Hold::AreaConservation { .. }
        )
    }
}

impl std::fmt::Display for Hold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Hold::RegisterMismatch { expected_mwh } => write!(
                f,
                "the register does not follow the last one (expected {expected_mwh} mWh)"
            ),
            Hold::AboveRating { max_mwh } => {
                write!(f, "more than the rated power allows ({max_mwh} mWh)")
            }
            Hold::AboveClearSky { bound_mwh } => write!(
                f,
                "more than a clear sky allows at this place and time ({bound_mwh} mWh)"
            ),
            Hold::NeighbourOutlier {
                ratio_ppm,
                expected_ppm,
            } => write!(
                f,
                "far above what its neighbours' weather gives it ({:.3} of its rating, expected {:.3})",
                *ratio_ppm as f64 / 1e6,
                *expected_ppm as f64 / 1e6
            ),
            Hold::AreaConservation {
                claimed_mwh,
                bound_mwh,
            } => write!(
                f,
                "the area's homes claim {claimed_mwh} mWh of export, more than its feeder-head meter allows ({bound_mwh} mWh with losses)"
            ),
        }
    }
}

/// Thresholds of the neighbour check.
pub const NEIGHBOUR_FACTOR: f64 = 1.15;
pub const NEIGHBOUR_FLOOR: f64 = 0.02;
pub const MIN_NEIGHBOURS: usize = 5;
/// ΔT used for the checks (TT − UT, seconds; 69 s in the 2020s).
pub const DELTA_T_S: f64 = 69.0;

/// Clear-sky irradiance on a tilted plane, split into the direct beam on the plane and an
/// isotropic sky-diffuse share (W/m²).
fn clear_plane_w_m2(pos: &SolarPosition, site: &PvSite) -> (f64, f64) {
    if pos.elevation_deg <= 0.0 {
        return (0.0, 0.0);
    }
    let dni = clear_sky_dni_w_m2(pos, &site.observer);
    let z = pos.zenith_deg.to_radians();
    let tilt = site.tilt_deg.to_radians();
    let cos_aoi = libm::cos(z) * libm::cos(tilt)
        + libm::sin(z)
            * libm::sin(tilt)
            * libm::cos((pos.azimuth_deg - site.azimuth_deg).to_radians());
    let diffuse_horizontal = 0.1 * dni * libm::cos(z) + 20.0;
    (
        dni * cos_aoi.max(0.0),
        diffuse_horizontal * (1.0 + libm::cos(tilt)) / 2.0,
    )
}

/// What a site's array makes under a clear sky over the slot, mWh (not floored), from the slot's
/// [`step_positions`] at the site: (direct beam part, diffuse part).
pub fn clear_sky_expected_mwh(site: &PvSite, positions: &[(u32, SolarPosition)]) -> (f64, f64) {
    expected_from(site.rated_w, &plane_steps(site, positions))
}

/// Each step's length (s) and clear-sky beam and diffuse on the site's plane (W/m²): the same
/// for every array of one orientation at one place.
fn plane_steps(site: &PvSite, positions: &[(u32, SolarPosition)]) -> Vec<(u32, f64, f64)> {
    positions
        .iter()
        .map(|(step, pos)| {
            let (beam, diffuse) = clear_plane_w_m2(pos, site);
            (*step, beam, diffuse)
        })
        .collect()
}

/// [`clear_sky_expected_mwh`] of an array of `rated_w` from its plane's [`plane_steps`].
fn expected_from(rated_w: u64, steps: &[(u32, f64, f64)]) -> (f64, f64) {
    steps
        .iter()
        .fold((0.0, 0.0), |(d, f), (step, beam, diffuse)| {
            let k = rated_w as f64 / 1000.0 * f64::from(*step) / 3.6;
            (d + beam * k, f + diffuse * k)
        })
}

/// A reading in the neighbour check, in mWh: what it says, its array's clear-sky beam and diffuse
/// parts, and its rating over the slot.
struct Candidate {
    index: usize,
    energy: f64,
    beam: f64,
    diffuse: f64,
    full: f64,
}

/// Least squares `y ≈ a·d + b·f` with `a, b ≥ 0`.
fn fit(points: &[(f64, f64, f64)]) -> (f64, f64) {
    let (mut sdd, mut sff, mut sdf, mut syd, mut syf) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for &(y, d, f) in points {
        sdd += d * d;
        sff += f * f;
        sdf += d * f;
        syd += y * d;
        syf += y * f;
    }
    let det = sdd * sff - sdf * sdf;
    if det.abs() > 1e-12 * (sdd * sff).max(1e-300) {
        let a = (syd * sff - syf * sdf) / det;
        let b = (syf * sdd - syd * sdf) / det;
        if a >= 0.0 && b >= 0.0 {
            return (a, b);
        }
    }
    // On the boundary: the better of beam only and diffuse only.
    let a = if sdd > 0.0 { (syd / sdd).max(0.0) } else { 0.0 };
    let b = if sff > 0.0 { (syf / sff).max(0.0) } else { 0.0 };
    let err = |a: f64, b: f64| -> f64 {
        points
            .iter()
            .map(|&(y, d, f)| {
                // Plain multiplication: `powi`'s precision is platform-dependent.
                let e = y - a * d - b * f;
                e * e
            })
            .sum()
    };
    if err(a, 0.0) <= err(0.0, b) {
        (a, 0.0)
    } else {
        (0.0, b)
    }
}

/// Checks one slot's readings; `last_register(site)` is the site's register before the slot (None
/// for a first reading, which sets it). One result per reading, in order.
pub fn check_slot(
    sites: &[PvSite],
    start_unix_s: i64,
    duration_s: u32,
    readings: &[SlotReading],
    last_register: impl Fn(usize) -> Option<u64>,
) -> Vec<Option<Hold>> {
    // The sun's positions over the slot and the most a plane can take, once per place; the
    // clear sky on each plane, once per orientation there.
    let mut places: BTreeMap<[u64; 3], Vec<(u32, SolarPosition)>> = BTreeMap::new();
    let mut most: BTreeMap<[u64; 3], Vec<(u32, f64)>> = BTreeMap::new();
    let mut planes: BTreeMap<[u64; 5], Vec<(u32, f64, f64)>> = BTreeMap::new();
    let place = |s: &PvSite| {
        [
            s.observer.latitude_deg.to_bits(),
            s.observer.longitude_deg.to_bits(),
            s.observer.elevation_m.to_bits(),
        ]
    };
    let plane = |s: &PvSite| {
        let [a, b, c] = place(s);
        [a, b, c, s.tilt_deg.to_bits(), s.azimuth_deg.to_bits()]
    };
    for r in readings {
        let s = &sites[r.site];
        let positions = places
            .entry(place(s))
            .or_insert_with(|| step_positions(&s.observer, start_unix_s, duration_s, DELTA_T_S));
        most.entry(place(s)).or_insert_with(|| {
            positions
                .iter()
                .map(|(step, pos)| (*step, max_plane_irradiance_w_m2(pos, &s.observer)))
                .collect()
        });
        planes
            .entry(plane(s))
            .or_insert_with(|| plane_steps(s, positions));
    }
    let mut held: Vec<Option<Hold>> = readings
        .iter()
        .map(|r| {
            let site = &sites[r.site];
            if let Some(last) = last_register(r.site) {
                let expected_mwh = last.saturating_add(r.energy_mwh);
                if r.register_mwh != expected_mwh {
                    return Some(Hold::RegisterMismatch { expected_mwh });
                }
            }
            let max_mwh = site.rated_w * u64::from(duration_s) * 1000 / 3600;
            if r.energy_mwh > max_mwh {
                return Some(Hold::AboveRating { max_mwh });
            }
            let bound_mwh = pv_energy_bound_of(
                site.rated_w,
                most[&place(site)].iter().copied(),
                DEFAULT_MARGIN,
            );
            (r.energy_mwh > bound_mwh).then_some(Hold::AboveClearSky { bound_mwh })
        })
        .collect();
    // Neighbours: one neighbourhood shares its clouds, so its readings follow
    // `a · beam_i + b · diffuse_i` (each array's clear-sky beam and diffuse parts, from its
    // orientation) for one pair (a, b). Fit it on the readings not held so far, drop those far
    // above the fit, fit again, and hold what stands far above the second fit.
    let mut groups: BTreeMap<u32, Vec<Candidate>> = BTreeMap::new();
    for (i, r) in readings.iter().enumerate() {
        let site = &sites[r.site];
        let (beam, diffuse) = expected_from(site.rated_w, &planes[&plane(site)]);
        let full = site.rated_w as f64 * f64::from(duration_s) / 3.6;
        if beam + diffuse < 0.05 * full || held[i].is_some() {
            continue;
        }
        groups
            .entry(site.neighbourhood)
            .or_default()
            .push(Candidate {
                index: i,
                energy: r.energy_mwh as f64,
                beam,
                diffuse,
                full,
            });
    }
    for list in groups.values() {
        if list.len() < MIN_NEIGHBOURS {
            continue;
        }
        let points = |keep: &dyn Fn(&Candidate) -> bool| -> Vec<(f64, f64, f64)> {
            list.iter()
                .filter(|p| keep(p))
                .map(|p| (p.energy, p.beam, p.diffuse))
                .collect()
        };
        let first = fit(&points(&|_| true));
        let above = |(a, b): (f64, f64), p: &Candidate| {
            p.energy > NEIGHBOUR_FACTOR * (a * p.beam + b * p.diffuse) + NEIGHBOUR_FLOOR * p.full
        };
        let kept = points(&|p| !above(first, p));
        let second = if kept.len() >= MIN_NEIGHBOURS {
            fit(&kept)
        } else {
            first
        };
        for p in list {
            if above(second, p) {
                let predicted = second.0 * p.beam + second.1 * p.diffuse;
                held[p.index] = Some(Hold::NeighbourOutlier {
                    ratio_ppm: (p.energy / p.full * 1e6) as u64,
                    expected_ppm: (predicted / p.full * 1e6) as u64,
                });
            }
        }
    }
    held
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_area_cannot_export_more_than_its_head_meter_saw_plus_losses() {
        // 10 homes export 1 kWh each; 3 kWh go to neighbours, 6.7 kWh through the head (3 % lost).
        assert_eq!(area_conservation(6_700_000, 0, 3_000_000, 10_000_000), None);
        // The same homes claim 12 kWh: 2 kWh were never there.
        let h = area_conservation(6_700_000, 0, 3_000_000, 12_000_000).unwrap();
        assert_eq!(
            h,
            Hold::AreaConservation {
                claimed_mwh: 12_000_000,
                bound_mwh: 9_700_000 + 600_000 + 1_000
            }
        );
        assert!(!h.is_physical());
        // Importing through the head while claiming export beyond what neighbours took.
        assert!(area_conservation(0, 2_000_000, 1_000_000, 1_500_000).is_some());
        assert_eq!(area_conservation(0, 0, 0, 0), None);
        assert_eq!(area_conservation(u64::MAX, 0, u64::MAX, u64::MAX), None);
    }

    fn street(n: usize) -> Vec<PvSite> {
        (0..n)
            .map(|i| PvSite {
                rated_w: 5_000,
                observer: Observer::at(47.3769, 8.5417, 408.0),
                tilt_deg: 20.0 + (i % 3) as f64 * 10.0,
                azimuth_deg: 160.0 + (i % 5) as f64 * 10.0,
                neighbourhood: 1,
            })
            .collect()
    }

    #[test]
    fn each_check_holds_what_it_should() {
        let sites = street(8);
        let noon = 1_718_968_500; // 2024-06-21 11:15 UTC
                                  // Everyone makes 50 % of their clear-sky expectation (thin clouds); site 1 inflates, site 2 breaks its
                                  // register, site 3 claims more than its rating.
        let mut readings: Vec<SlotReading> = sites
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let positions = step_positions(&s.observer, noon, 900, DELTA_T_S);
                let (beam, diffuse) = clear_sky_expected_mwh(s, &positions);
                let e = (0.5 * (beam + diffuse)) as u64;
                SlotReading {
                    site: i,
                    energy_mwh: e,
                    register_mwh: 10_000_000 + e,
                }
            })
            .collect();
        readings[1].energy_mwh = readings[1].energy_mwh * 3 / 2;
        readings[1].register_mwh = 10_000_000 + readings[1].energy_mwh;
        readings[2].register_mwh = 5;
        readings[3].energy_mwh = 1_300_000;
        readings[3].register_mwh = 10_000_000 + 1_300_000;
        let held = check_slot(&sites, noon, 900, &readings, |_| Some(10_000_000));
        assert!(
            matches!(held[1], Some(Hold::NeighbourOutlier { .. })),
            "{:?}",
            held[1]
        );
        assert!(matches!(held[2], Some(Hold::RegisterMismatch { .. })));
        assert!(matches!(
            held[3],
            Some(Hold::AboveRating { max_mwh: 1_250_000 })
        ));
        for i in [0, 4, 5, 6, 7] {
            assert_eq!(held[i], None, "honest site {i}");
        }
        // At night anything is above the clear sky.
        let night = check_slot(
            &sites,
            noon + 11 * 3600,
            900,
            &[SlotReading {
                site: 0,
                energy_mwh: 1,
                register_mwh: 1,
            }],
            |_| None,
        );
        assert_eq!(night[0], Some(Hold::AboveClearSky { bound_mwh: 0 }));
        assert!(night[0].unwrap().to_string().contains("clear sky"));
    }
}
