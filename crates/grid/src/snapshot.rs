//! The feeder as one 15-minute slot left it, for a live view: the power flow's voltages and
//! loadings, the community's figures of the slot, and each home's devices (for its owner's eyes
//! only). The simulator makes snapshots; the node's dashboard shows them.

use crate::unbalanced::{Circuit, Solution};
use crate::{BusKind, Network, PowerFlow};

/// A bus of a [`Snapshot`].
#[derive(Clone, Debug, serde::Serialize)]
pub struct BusState {
    pub name: String,
    pub slack: bool,
    /// The voltage (balanced), or the phase voltage farthest from 1 pu (unbalanced).
    pub vm_pu: f64,
    /// Unbalanced: each phase's voltage to neutral, `(phase 1-3, vm_pu)`; empty when balanced.
    pub phases: Vec<(u8, f64)>,
    /// Unbalanced, three-phase buses: negative- over positive-sequence voltage, %.
    pub unbalance_pct: Option<f64>,
    /// Where the feeder's map puts it (OpenDSS's bus coordinates), when it does.
    pub xy: Option<(f64, f64)>,
}

/// A branch of a [`Snapshot`]: `from` and `to` index [`Snapshot::buses`].
#[derive(Clone, Debug, serde::Serialize)]
pub struct BranchState {
    pub from: usize,
    pub to: usize,
    /// Apparent power over the rating at the more loaded end, percent (`None`: unrated).
    pub loading_percent: Option<f64>,
    /// Active power entering at the `from` end, kW.
    pub p_kw: f64,
    pub transformer: bool,
    /// The line's length, metres, where the feeder gives it.
    pub length_m: Option<f64>,
}

/// What one home's devices did in a slot (kW, 15-minute means): private to the home's owner.
#[derive(Clone, Debug, serde::Serialize)]
pub struct HomeState {
    pub address: gridmesh_types::Address,
    pub load_kw: f64,
    pub pv_kw: f64,
    /// Charging positive.
    pub battery_kw: f64,
    pub battery_soc_kwh: Option<f64>,
    pub battery_capacity_kwh: Option<f64>,
    pub ev_kw: f64,
    /// Exchange with the feeder, import positive.
    pub net_kw: f64,
    /// The bus it is connected at (an index into [`Snapshot::buses`]), where known.
    pub bus: Option<usize>,
    /// Whether it has rooftop PV (its registered devices say so publicly; what the PV makes is
    /// the owner's).
    pub has_pv: bool,
}

/// The feeder as one slot left it: the power flow's voltages and loadings and the community's
/// figures of the slot, for a live view; and each home's devices (for its owner's eyes only).
#[derive(Clone, Debug, serde::Serialize)]
pub struct Snapshot {
    pub slot_start_ms: u64,
    pub row: SlotRow,
    pub vmin_pu: f64,
    pub vmax_pu: f64,
    pub buses: Vec<BusState>,
    pub branches: Vec<BranchState>,
    pub homes: Vec<HomeState>,
}

impl Snapshot {
    /// The snapshot of `net` solved as `pf`, with the slot's `row`; `transformers` are the
    /// indices of the branches that are transformers.
    pub fn of(
        net: &Network,
        pf: &PowerFlow,
        transformers: &[usize],
        row: SlotRow,
        slot_start_ms: u64,
    ) -> Snapshot {
        Snapshot {
            slot_start_ms,
            row,
            vmin_pu: net.buses.iter().map(|b| b.vmin_pu).fold(f64::NAN, f64::max),
            vmax_pu: net.buses.iter().map(|b| b.vmax_pu).fold(f64::NAN, f64::min),
            buses: net
                .buses
                .iter()
                .zip(&pf.vm_pu)
                .map(|(b, v)| BusState {
                    name: b.number.to_string(),
                    slack: b.kind == BusKind::Slack,
                    vm_pu: *v,
                    phases: Vec::new(),
                    unbalance_pct: None,
                    xy: None,
                })
                .collect(),
            branches: net
                .branches
                .iter()
                .zip(&pf.branches)
                .enumerate()
                .map(|(k, (b, f))| BranchState {
                    from: b.from,
                    to: b.to,
                    loading_percent: (b.rate_a_mva > 0.0)
                        .then(|| f.max_mva() / b.rate_a_mva * 100.0),
                    p_kw: f.p_from_mw * 1e3,
                    transformer: transformers.contains(&k),
                    length_m: None,
                })
                .collect(),
            homes: Vec::new(),
        }
    }

    /// The snapshot of the unbalanced `circuit` solved as `sol`, phase by phase, with the
    /// slot's `row`; every bus's phases are judged against `band_pu` (low, high). Lines and
    /// transformers are the branches (a transformer from its first winding's bus to its
    /// second's), the source's bus the slack.
    pub fn of_phases(
        circuit: &Circuit,
        sol: &Solution,
        band_pu: (f64, f64),
        row: SlotRow,
        slot_start_ms: u64,
    ) -> Snapshot {
        let source_bus = circuit.sources.first().map(|s| s.terminal.bus);
        let buses = circuit
            .buses
            .iter()
            .zip(&sol.buses)
            .enumerate()
            .map(|(k, (bus, v))| {
                let phases: Vec<(u8, f64)> = v
                    .nodes
                    .iter()
                    .filter(|(n, ..)| (1..=3).contains(n))
                    .map(|&(n, vm, _)| (n, vm))
                    .collect();
                let vm_pu = phases.iter().map(|&(_, vm)| vm).fold(1.0f64, |worst, vm| {
                    if (vm - 1.0).abs() > (worst - 1.0).abs() {
                        vm
                    } else {
                        worst
                    }
                });
                BusState {
                    name: bus.name.clone(),
                    slack: Some(k) == source_bus,
                    vm_pu,
                    phases,
                    unbalance_pct: v.unbalance_pct,
                    xy: bus.xy,
                }
            })
            .collect();
        let lines = circuit.lines.iter().enumerate().map(|(k, l)| BranchState {
            from: l.from.bus,
            to: l.to.bus,
            loading_percent: (l.rating_a > 0.0).then(|| sol.line_current_a[k] / l.rating_a * 100.0),
            p_kw: sol.line_power_kw[k],
            transformer: false,
            length_m: l.length_m,
        });
        let transformers = circuit
            .transformers
            .iter()
            .enumerate()
            .filter(|(_, t)| t.windings.len() >= 2)
            .map(|(k, t)| BranchState {
                from: t.windings[0].terminal.bus,
                to: t.windings[1].terminal.bus,
                loading_percent: Some(sol.transformer_loading_pct[k]),
                p_kw: sol.transformer_power_kw[k],
                transformer: true,
                length_m: None,
            });
        Snapshot {
            slot_start_ms,
            row,
            vmin_pu: band_pu.0,
            vmax_pu: band_pu.1,
            buses,
            branches: lines.chain(transformers).collect(),
            homes: Vec::new(),
        }
    }
}

/// One slot of the time series.
#[derive(Clone, Debug, serde::Serialize)]
pub struct SlotRow {
    pub time_utc: String,
    pub pcc_kw: f64,
    pub load_kw: f64,
    pub pv_kw: f64,
    pub battery_kw: f64,
    pub ev_kw: f64,
    pub p2p_kwh: f64,
    pub clearing_price: Option<f64>,
    pub min_vm_pu: Option<f64>,
    pub max_vm_pu: Option<f64>,
    /// Unbalanced feeders: the largest voltage unbalance of any three-phase bus, %.
    pub max_unbalance_pct: Option<f64>,
    pub losses_kw: f64,
    pub transformer_loading_percent: f64,
    pub islanded: bool,
    pub not_served_kw: f64,
}
