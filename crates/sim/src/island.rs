//! One slot of an islanded community: the main grid is gone, so the homes' PV and batteries must
//! cover the community's load between them (the batteries form the grid; the feeder carries
//! energy between homes).
//!
//! - EVs pause (their sessions still run out).
//! - A surplus charges the batteries in proportion to what each can take; the rest is curtailed.
//! - A deficit is discharged from the batteries in proportion to what each can give, down to
//!   empty (the outage is what the reserve is for). What is still missing is shed: non-critical
//!   loads first, then critical ones, in the same share at every home.

use gridmesh_agent::schedule::DT_H;
use gridmesh_agent::study::{Community, DeviceState, Dispatch};

/// What one home did in the slot, kW.
#[derive(Clone, Copy, Debug, Default)]
pub struct HomeStep {
    /// Exchange with the feeder, import positive.
    pub net_kw: f64,
    pub ev_kw: f64,
    /// Charging positive.
    pub battery_kw: f64,
    pub curtailed_kw: f64,
    /// Load not served.
    pub shed_kw: f64,
    /// Critical load not served.
    pub critical_shed_kw: f64,
}

impl From<Dispatch> for HomeStep {
    fn from(d: Dispatch) -> HomeStep {
        HomeStep {
            net_kw: d.net_kw,
            ev_kw: d.ev_kw,
            battery_kw: d.battery_kw,
            curtailed_kw: d.curtailed_kw,
            shed_kw: 0.0,
            critical_shed_kw: 0.0,
        }
    }
}

/// The community's islanded slot.
pub struct IslandStep {
    pub homes: Vec<HomeStep>,
    /// Critical load demanded and shed, kWh.
    pub critical_kwh: f64,
    pub critical_shed_kwh: f64,
    /// All load shed (energy not served), kWh.
    pub shed_kwh: f64,
}

/// Runs slot `u` islanded over the homes' devices `devs` (one per home).
pub fn dispatch(
    c: &Community,
    devs: &mut [&mut DeviceState],
    u: usize,
    critical_share: f64,
) -> IslandStep {
    let n = c.homes.len();
    let pv: Vec<f64> = c.homes.iter().map(|h| c.pv_per_kwp[u] * h.pv_kwp).collect();
    let load: Vec<f64> = c.homes.iter().map(|h| h.load_kw[u]).collect();
    let (pv_total, load_total): (f64, f64) = (pv.iter().sum(), load.iter().sum());
    let mut homes = vec![HomeStep::default(); n];
    let critical_total = load_total * critical_share;
    let mut shed_total = 0.0;
    let mut critical_shed_total = 0.0;
    if pv_total >= load_total {
        let room: Vec<f64> = c
            .homes
            .iter()
            .zip(devs.iter())
            .map(|(h, d)| {
                h.battery.as_ref().map_or(0.0, |b| {
                    ((b.capacity_kwh - d.soc_kwh) / (b.charge_efficiency * DT_H))
                        .clamp(0.0, b.power_kw)
                })
            })
            .collect();
        let room_total: f64 = room.iter().sum();
        let surplus = pv_total - load_total;
        let share = if room_total > 0.0 {
            (surplus / room_total).min(1.0)
        } else {
            0.0
        };
        let curtailed = surplus - share * room_total;
        for i in 0..n {
            let p = room[i] * share;
            if let Some(b) = &c.homes[i].battery {
                devs[i].charge(b, p);
            }
            // Curtailment falls on PV owners in proportion to their production.
            let curtail = if pv_total > 0.0 {
                curtailed * pv[i] / pv_total
            } else {
                0.0
            };
            homes[i] = HomeStep {
                net_kw: load[i] - pv[i] + curtail + p,
                battery_kw: p,
                curtailed_kw: curtail,
                ..HomeStep::default()
            };
        }
    } else {
        let give: Vec<f64> = c
            .homes
            .iter()
            .zip(devs.iter())
            .map(|(h, d)| {
                h.battery.as_ref().map_or(0.0, |b| {
                    (d.soc_kwh * b.discharge_efficiency / DT_H).clamp(0.0, b.power_kw)
                })
            })
            .collect();
        let give_total: f64 = give.iter().sum();
        let deficit = load_total - pv_total;
        let share = if give_total > 0.0 {
            (deficit / give_total).min(1.0)
        } else {
            0.0
        };
        let supply = pv_total + share * give_total;
        let missing = (load_total - supply).max(0.0);
        // Shed non-critical load first, then critical, as the same share at every home.
        let non_critical = load_total - critical_total;
        let (shed_nc, shed_c) = if missing <= non_critical {
            (missing, 0.0)
        } else {
            (non_critical, missing - non_critical)
        };
        shed_total = missing;
        critical_shed_total = shed_c;
        for i in 0..n {
            let p = -give[i] * share;
            if let Some(b) = &c.homes[i].battery {
                devs[i].charge(b, p);
            }
            let frac = |x: f64, total: f64| if total > 0.0 { x / total } else { 0.0 };
            let nc_i = load[i] * (1.0 - critical_share);
            let c_i = load[i] * critical_share;
            let shed_i = frac(shed_nc, non_critical) * nc_i + frac(shed_c, critical_total) * c_i;
            homes[i] = HomeStep {
                net_kw: load[i] - shed_i - pv[i] + p,
                battery_kw: p,
                shed_kw: shed_i,
                critical_shed_kw: frac(shed_c, critical_total) * c_i,
                ..HomeStep::default()
            };
        }
    }
    // EVs wait for the grid.
    IslandStep {
        homes,
        critical_kwh: critical_total * DT_H,
        critical_shed_kwh: critical_shed_total * DT_H,
        shed_kwh: shed_total * DT_H,
    }
}
