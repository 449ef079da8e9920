//! The feeder as one 15-minute slot left it, for a live view: the power flow's voltages and
//! loadings, the community's figures of the slot, and each home's devices (for its owner's eyes
//! only). The simulator makes snapshots; the node's dashboard shows them.

use crate::{BusKind, Network, PowerFlow};

/// A bus of a [`Snapshot`].
#[derive(Clone, Debug, serde::Serialize)]
pub struct BusState {
    pub number: u32,
    pub slack: bool,
    pub vm_pu: f64,
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
                    number: b.number,
                    slack: b.kind == BusKind::Slack,
                    vm_pu: *v,
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
                })
                .collect(),
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
    pub losses_kw: f64,
    pub transformer_loading_percent: f64,
    pub islanded: bool,
    pub not_served_kw: f64,
}
