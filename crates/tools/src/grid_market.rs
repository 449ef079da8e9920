//! Grid-aware clearing (`gridmesh market clear --feeder FEEDER.toml`): the slot's orders cleared
//! twice, without and with the feeder's operating envelopes, each result checked by AC power flow
//! on the feeder, and the welfare the envelopes cost.
//!
//! Every order's `location` must name a bus of the feeder (the bus `name` in the TOML): that bus is
//! the order's connection point. The envelopes are computed around the feeder's forecast loads
//! ([`gridmesh_grid::operating_envelopes`]), turned into mWh per slot by
//! [`gridmesh_grid::Envelope::energy_mwh`], and the orders trimmed to them
//! ([`gridmesh_market::within_limits`]) before the same clearing runs.

use std::collections::BTreeMap;

use anyhow::{bail, Context};
use gridmesh_grid::{
    operating_envelopes, violations, Binding, EnvelopeOptions, Feeder, PowerFlowOptions,
    RadialFeeder,
};
use gridmesh_market::{clear, within_limits, AreaLimit, Clearing, Mechanism, Side};
use gridmesh_types::{format_fixed, TOKEN_DECIMALS};
use serde::Serialize;

use crate::market_file::{ClearReport, OrderSet};

/// A connection point's envelope, as reported.
#[derive(Serialize)]
pub struct EnvelopeOut {
    pub location: String,
    pub import_kw: f64,
    pub export_kw: f64,
    /// What binds the import: `transformer`, `line FROM-TO`, `voltage at BUS` or `none`.
    pub import_binding: String,
    pub export_binding: String,
}

/// What a cleared slot does to the feeder.
#[derive(Serialize)]
pub struct Physics {
    /// The first limit violated, or None.
    pub violation: Option<String>,
    /// Every limit violated (buses by name; the transformer is `pcc-lv`).
    pub violations: Vec<String>,
    pub transformer_loading_pct: f64,
    pub min_vm_pu: f64,
    pub losses_kw: f64,
    /// Gains from trade including the utility's trades, tokens.
    pub surplus: String,
    pub market: ClearReport,
}

/// Both clearings side by side.
#[derive(Serialize)]
pub struct GridClearReport {
    pub feeder: String,
    pub slot_minutes: u32,
    pub envelopes: Vec<EnvelopeOut>,
    pub unconstrained: Physics,
    pub constrained: Physics,
    /// Surplus lost to the grid's limits, tokens and share of the unconstrained surplus.
    pub lost_welfare: String,
    pub lost_welfare_pct: f64,
}

fn binding_text(feeder: &Feeder, b: Binding) -> String {
    match b {
        Binding::Thermal { branch } if branch == feeder.transformer => "transformer".into(),
        Binding::Thermal { branch } => {
            let br = &feeder.network.branches[branch];
            format!("line {}-{}", feeder.names[br.from], feeder.names[br.to])
        }
        Binding::Voltage { bus } => format!("voltage at {}", feeder.names[bus]),
        Binding::None => "none".into(),
    }
}

/// Clears `set` on `feeder` without and with operating envelopes.
pub fn clear_on_feeder(
    set: &OrderSet,
    feeder: &Feeder,
    mechanism: Mechanism,
    slot_minutes: u32,
) -> anyhow::Result<GridClearReport> {
    // Connection points: one per market area that holds orders.
    let mut bus_of_area: BTreeMap<u32, usize> = BTreeMap::new();
    for o in &set.orders {
        if bus_of_area.contains_key(&o.area) {
            continue;
        }
        let location = set.areas.path(o.area);
        let Some(bus) = feeder.bus(location) else {
            bail!(
                "order {:?}: location {location:?} is no bus of the feeder (every order's location must name a [[buses]] entry)",
                set.ids[o.id as usize]
            );
        };
        bus_of_area.insert(o.area, bus);
    }
    let areas: Vec<u32> = bus_of_area.keys().copied().collect();
    let buses: Vec<usize> = bus_of_area.values().copied().collect();
    let env = operating_envelopes(&feeder.network, &buses, &EnvelopeOptions::default())
        .context("operating envelopes")?;
    let limits: BTreeMap<u32, AreaLimit> = areas
        .iter()
        .zip(&env.connections)
        .map(|(&a, e)| {
            let (import_mwh, export_mwh) = e.energy_mwh(slot_minutes);
            (
                a,
                AreaLimit {
                    import_mwh,
                    export_mwh,
                },
            )
        })
        .collect();
    let physics = |orders: &[gridmesh_market::Order], c: &Clearing| -> anyhow::Result<Physics> {
        let area_of: BTreeMap<u64, u32> = orders.iter().map(|o| (o.id, o.area)).collect();
        let mut net_mwh: BTreeMap<u32, i128> = BTreeMap::new();
        for t in &c.trades {
            *net_mwh.entry(area_of[&t.bid]).or_default() += i128::from(t.energy_mwh);
            *net_mwh.entry(area_of[&t.ask]).or_default() -= i128::from(t.energy_mwh);
        }
        for u in &c.utility {
            let sign = if u.side == Side::Bid { 1 } else { -1 };
            *net_mwh.entry(area_of[&u.order]).or_default() += sign * i128::from(u.energy_mwh);
        }
        let mut case = feeder.network.clone();
        for (area, mwh) in net_mwh {
            // mWh over the slot -> MW.
            case.buses[bus_of_area[&area]].load_mw +=
                mwh as f64 / 1e9 * 60.0 / f64::from(slot_minutes);
        }
        let pf = RadialFeeder::new(&case)?
            .solve(&case, &PowerFlowOptions::default())
            .context("power flow on the cleared slot")?;
        let t = &case.branches[feeder.transformer];
        let all: Vec<String> = violations(&case, &pf)
            .iter()
            .map(|v| v.describe(&case, |i| feeder.names[i].clone()))
            .collect();
        Ok(Physics {
            violation: all.first().cloned(),
            violations: all,
            transformer_loading_pct: 100.0 * pf.branches[feeder.transformer].max_mva()
                / t.rate_a_mva,
            min_vm_pu: pf.min_voltage().1,
            losses_kw: pf.losses_mw * 1e3,
            surplus: format_fixed(c.surplus(orders), TOKEN_DECIMALS),
            market: ClearReport::new(c, set),
        })
    };
    let free = clear(&set.orders, &set.areas, mechanism, set.tariff)?;
    let trimmed = within_limits(&set.orders, &limits);
    let bound = clear(&trimmed, &set.areas, mechanism, set.tariff)?;
    let (s_free, s_bound) = (free.surplus(&set.orders), bound.surplus(&trimmed));
    let lost = s_free.saturating_sub(s_bound);
    Ok(GridClearReport {
        feeder: feeder.network.name.clone(),
        slot_minutes,
        envelopes: areas
            .iter()
            .zip(&env.connections)
            .map(|(&a, e)| EnvelopeOut {
                location: set.areas.path(a).to_string(),
                import_kw: e.import_mw * 1e3,
                export_kw: e.export_mw * 1e3,
                import_binding: binding_text(feeder, e.import_binding),
                export_binding: binding_text(feeder, e.export_binding),
            })
            .collect(),
        unconstrained: physics(&set.orders, &free)?,
        constrained: physics(&trimmed, &bound)?,
        lost_welfare: format_fixed(lost, TOKEN_DECIMALS),
        lost_welfare_pct: if s_free == 0 {
            0.0
        } else {
            100.0 * lost as f64 / s_free as f64
        },
    })
}

impl std::fmt::Display for GridClearReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (name, p) in [
            ("without the grid", &self.unconstrained),
            ("with envelopes  ", &self.constrained),
        ] {
            writeln!(
                f,
                "{name}: surplus {} tokens, transformer at {:.0}%, lowest voltage {:.4} pu, losses {:.2} kW: {}",
                p.surplus,
                p.transformer_loading_pct,
                p.min_vm_pu,
                p.losses_kw,
                p.violation.as_deref().unwrap_or("within every limit")
            )?;
        }
        writeln!(
            f,
            "welfare lost to the grid's limits: {} tokens ({:.1}%)",
            self.lost_welfare, self.lost_welfare_pct
        )
    }
}
