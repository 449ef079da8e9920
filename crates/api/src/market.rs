//! Read-only views of the market state for the API and the command line: a slot's order book,
//! clearing result, trades with their settlement, and the utility bill lines derived from trades
//! and readings.
//!
//! Energy is printed as decimal kWh strings and money as decimal token strings (exact).

use std::collections::BTreeMap;

use gridmesh_ledger::devices::{HoldReason, ReadingStatus};
use gridmesh_ledger::market::{
    self, OrderRecord, Reading, SettlementStatus, SlotRecord, TradeRecord,
};
use gridmesh_ledger::readers::{DeviceReader, EconomicsReader, GridReader, MarketReader};
use gridmesh_ledger::State;
use gridmesh_market::{value_floor, Side};
use gridmesh_types::units::{format_kwh, slot_start_ms};
use gridmesh_types::{Address, Amount};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Most trades one slot view lists (the totals always cover all).
pub const MAX_TRADES_IN_VIEW: usize = 10_000;

fn tokens(base: u128) -> String {
    Amount(base).to_string()
}

#[derive(Serialize, Deserialize, ToSchema, Debug, Clone, PartialEq, Eq)]
pub struct DepthLevel {
    /// Tokens per kWh.
    pub price_per_kwh: String,
    pub bid_kwh: String,
    pub ask_kwh: String,
}

#[derive(Serialize, Deserialize, ToSchema, Debug, Clone, PartialEq, Eq)]
pub struct MarketView {
    /// Area path ("" is the root market).
    pub area: String,
    pub price_per_kwh: Option<String>,
    pub volume_kwh: String,
}

#[derive(Serialize, Deserialize, ToSchema, Debug, Clone, PartialEq, Eq)]
pub struct SettlementView {
    pub delivered_kwh: String,
    pub buyer_paid: String,
    pub seller_received: String,
    pub grid_fees: String,
    pub operator_received: String,
    pub buyer_refund: String,
    pub compensation: String,
    pub collateral_returned: String,
    /// What the settlement rests on: `provisional_estimate`, `reading`, `late_reading` or
    /// `estimate` (the flags below say the same in parts).
    pub basis: String,
    /// Settled by the estimate "nothing delivered" (no reading from the seller).
    pub estimated: bool,
    /// Funds moved for good (false: provisional, funds held until a reading or the deadline).
    pub is_final: bool,
    /// Settled by a reading that came after the correction window.
    pub late: bool,
}

#[derive(Serialize, Deserialize, ToSchema, Debug, Clone, PartialEq, Eq)]
pub struct TradeView {
    pub index: u32,
    pub bid: u64,
    pub ask: u64,
    pub buyer: String,
    pub seller: String,
    pub energy_kwh: String,
    /// What the buyer pays per kWh, fees included.
    pub price_per_kwh: String,
    pub seller_price_per_kwh: String,
    pub fee_per_kwh: String,
    pub settlement: Option<SettlementView>,
}

/// What one member owes or is owed by the utility for the slot (billed by the utility, not on
/// the ledger): import beyond the energy delivered to it by peers at retail; export beyond what
/// it delivered to peers, and energy it bought but did not use, at feed-in.
#[derive(Serialize, Deserialize, ToSchema, Debug, Clone, PartialEq, Eq)]
pub struct BillView {
    pub account: String,
    pub import_kwh: String,
    pub export_kwh: String,
    pub bought_delivered_kwh: String,
    pub sold_delivered_kwh: String,
    pub utility_import_kwh: String,
    pub utility_cost: String,
    pub utility_export_kwh: String,
    pub utility_credit: String,
    /// Islanded slot (no utility connected): import beyond what was bought and delivered, and
    /// export beyond what was delivered, unpriced (energy the microgrid balanced, not traded).
    /// "0" in a slot with the utility, whose lines above take them.
    pub unmatched_import_kwh: String,
    pub unmatched_export_kwh: String,
    /// No reading: import and export estimated as the energy traded.
    pub estimated: bool,
}

/// One device's signed reading for the slot and what the proof-of-generation check made of it.
#[derive(Serialize, Deserialize, ToSchema, Debug, Clone, PartialEq, Eq)]
pub struct DeviceReadingView {
    pub device: String,
    pub owner: String,
    pub energy_out_kwh: String,
    pub energy_in_kwh: String,
    pub register_kwh: String,
    /// Merkle root of the raw telemetry the owner keeps.
    pub raw_root: String,
    /// How many samples the root covers.
    pub raw_samples: u32,
    /// `pending` (checked at settlement), `accepted` or `held`.
    pub status: String,
    /// Why a held reading is held.
    pub reason: Option<String>,
}

/// The most device readings a slot view lists.
pub const MAX_DEVICE_READINGS_IN_VIEW: usize = 10_000;

/// The utility as counterparty of one order at clearing.
#[derive(Serialize, Deserialize, ToSchema, Debug, Clone, PartialEq, Eq)]
pub struct UtilityView {
    pub order_id: u64,
    /// `bid`: the member bought from the utility at retail; `ask`: sold to it at feed-in.
    pub side: String,
    pub energy_kwh: String,
    pub price_per_kwh: String,
}

#[derive(Serialize, Deserialize, ToSchema, Debug, Clone, PartialEq, Eq)]
pub struct SlotView {
    pub slot: u64,
    pub delivery_start_ms: u64,
    pub gate_closure_ms: u64,
    /// `open` (taking orders), `closed` (gate passed, clearing at the next block), `cleared`,
    /// `provisional` (settled, some sellers by estimate) or `final`.
    pub status: String,
    pub mechanism: String,
    pub retail_per_kwh: String,
    pub feed_in_per_kwh: String,
    pub orders: u32,
    /// Energy offered per price level, by price ascending.
    pub depth: Vec<DepthLevel>,
    /// The one price of the slot (uniform-price mechanisms, all trades in one market).
    pub clearing_price_per_kwh: Option<String>,
    /// Each market (area) where something traded, bottom-up: with a house/street/feeder hierarchy
    /// local trades clear in their street before the rest meets at the feeder.
    pub markets: Vec<MarketView>,
    pub volume_kwh: String,
    pub welfare: String,
    pub optimal_welfare: String,
    pub trades_total: u32,
    pub trades: Vec<TradeView>,
    pub bills: Vec<BillView>,
    /// Energy the utility sold to (`bid`) or bought from (`ask`) members at clearing, per order.
    pub utility: Vec<UtilityView>,
    /// Devices' signed readings for the slot with their proof-of-generation status (up to
    /// 10,000).
    pub device_readings: Vec<DeviceReadingView>,
    /// Cleared under island rules (no utility; bids capped at the island price cap).
    pub island: bool,
    /// Trades, bills and device readings not listed: each member's are shown only to the
    /// member's session and whom it grants them (the public sees the slot's aggregates).
    #[serde(default)]
    pub private_rows_hidden: u32,
    /// Connection points whose orders were trimmed to the grid operator's envelope.
    pub envelopes: u32,
}

/// The view of `slot` at `now_ms` (the head's time). `None` if the slot never had an order.
pub fn slot_view(state: &State, slot: u64, now_ms: u64) -> Option<SlotView> {
    let cfg = state.market_config();
    let orders: Vec<OrderRecord> = state.orders(slot).into_iter().map(|(_, o)| o).collect();
    let record: Option<SlotRecord> = state.slot_record(slot);
    let device_readings: Vec<DeviceReadingView> = state
        .device_readings(slot)
        .into_iter()
        .take(MAX_DEVICE_READINGS_IN_VIEW)
        .map(|(device, r)| {
            let (status, reason) = match r.status {
                ReadingStatus::Pending => ("pending", None),
                ReadingStatus::Accepted => ("accepted", None),
                ReadingStatus::Held { reason } => ("held", Some(hold_text(reason))),
            };
            DeviceReadingView {
                device: device.to_string(),
                owner: r.owner.to_string(),
                energy_out_kwh: format_kwh(r.energy_out_mwh),
                energy_in_kwh: format_kwh(r.energy_in_mwh),
                register_kwh: format_kwh(r.register_mwh),
                raw_root: r.raw_root.to_string(),
                raw_samples: r.raw_count,
                status: status.into(),
                reason,
            }
        })
        .collect();
    if orders.is_empty() && record.is_none() && device_readings.is_empty() {
        return None;
    }
    let mut levels: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
    for o in &orders {
        let l = levels.entry(o.price_per_kwh).or_default();
        match o.side {
            Side::Bid => l.0 += o.energy_mwh,
            Side::Ask => l.1 += o.energy_mwh,
        }
    }
    let depth = levels
        .into_iter()
        .map(|(p, (b, a))| DepthLevel {
            price_per_kwh: tokens(p.into()),
            bid_kwh: format_kwh(b),
            ask_kwh: format_kwh(a),
        })
        .collect();
    let tariff = record
        .as_ref()
        .map_or_else(|| state.tariff(slot), |r| r.tariff);
    let gate = cfg.gate_closure_ms(slot);
    let trades: Vec<TradeRecord> = state.trades(slot);
    let readings: BTreeMap<Address, Reading> = state.readings(slot).into_iter().collect();
    let status = match &record {
        None if now_ms < gate => "open",
        None => "closed",
        Some(r) => match r.settlement {
            SettlementStatus::Pending => "cleared",
            SettlementStatus::Provisional => "provisional",
            SettlementStatus::Final => "final",
        },
    };
    Some(SlotView {
        slot,
        delivery_start_ms: slot_start_ms(slot),
        gate_closure_ms: gate,
        status: status.to_string(),
        mechanism: record
            .as_ref()
            .map_or(cfg.mechanism, |r| r.mechanism)
            .name()
            .to_string(),
        retail_per_kwh: tokens(tariff.retail_per_kwh.into()),
        feed_in_per_kwh: tokens(tariff.feed_in_per_kwh.into()),
        orders: orders.len() as u32,
        depth,
        clearing_price_per_kwh: record
            .as_ref()
            .and_then(|r| r.clearing_price_per_kwh)
            .map(|p| tokens(p.into())),
        markets: record.as_ref().map_or(Vec::new(), |r| {
            r.markets
                .iter()
                .map(|m| MarketView {
                    area: m.area.clone(),
                    price_per_kwh: m.price_per_kwh.map(|p| tokens(p.into())),
                    volume_kwh: format_kwh(m.volume_mwh),
                })
                .collect()
        }),
        volume_kwh: format_kwh(record.as_ref().map_or(0, |r| r.volume_mwh)),
        welfare: tokens(record.as_ref().map_or(0, |r| r.welfare)),
        optimal_welfare: tokens(record.as_ref().map_or(0, |r| r.optimal_welfare)),
        trades_total: trades.len() as u32,
        utility: record.as_ref().map_or_else(Vec::new, |r| {
            r.utility
                .iter()
                .map(|u| UtilityView {
                    order_id: u.order,
                    side: match u.side {
                        gridmesh_market::Side::Bid => "bid".into(),
                        gridmesh_market::Side::Ask => "ask".into(),
                    },
                    energy_kwh: format_kwh(u.energy_mwh),
                    price_per_kwh: tokens(u.price_per_kwh.into()),
                })
                .collect()
        }),
        device_readings,
        island: record.as_ref().is_some_and(|r| r.island),
        private_rows_hidden: 0,
        envelopes: record.as_ref().map_or(0, |r| r.envelopes),
        bills: if record.is_some() {
            bills(
                &trades,
                &readings,
                tariff,
                record.as_ref().is_some_and(|r| r.island),
            )
        } else {
            Vec::new()
        },
        trades: trades
            .iter()
            .take(MAX_TRADES_IN_VIEW)
            .enumerate()
            .map(|(i, t)| trade_view(i as u32, t))
            .collect(),
    })
}

impl SlotView {
    /// Keeps only the trades, bills and device readings of members `sees` accepts (by their
    /// address as printed), counting what it hides.
    pub fn only_for(&mut self, sees: impl Fn(&str) -> bool) {
        let before = self.trades.len() + self.bills.len() + self.device_readings.len();
        self.trades.retain(|t| sees(&t.buyer) || sees(&t.seller));
        self.bills.retain(|b| sees(&b.account));
        self.device_readings.retain(|d| sees(&d.owner));
        let after = self.trades.len() + self.bills.len() + self.device_readings.len();
        self.private_rows_hidden = self
            .private_rows_hidden
            .saturating_add((before - after) as u32);
    }
}

fn trade_view(index: u32, t: &TradeRecord) -> TradeView {
    let tr = &t.trade;
    TradeView {
        index,
        bid: tr.bid,
        ask: tr.ask,
        buyer: t.buyer.to_string(),
        seller: t.seller.to_string(),
        energy_kwh: format_kwh(tr.energy_mwh),
        price_per_kwh: tokens(tr.buyer_price_per_kwh.into()),
        seller_price_per_kwh: tokens(tr.seller_price_per_kwh.into()),
        fee_per_kwh: tokens(tr.fee_per_kwh.into()),
        settlement: t.settlement.as_ref().map(|s| SettlementView {
            delivered_kwh: format_kwh(s.delivered_mwh),
            buyer_paid: tokens(s.buyer_paid),
            seller_received: tokens(s.seller_received),
            grid_fees: tokens(s.grid_fees),
            operator_received: tokens(s.operator_received),
            buyer_refund: tokens(s.buyer_refund),
            compensation: tokens(s.compensation),
            collateral_returned: tokens(s.collateral_returned),
            basis: basis_name(s.basis).into(),
            estimated: s.basis.is_estimated(),
            is_final: s.basis.is_final(),
            late: s.basis.is_late(),
        }),
    }
}

/// Why a reading is held, in words (the state holds only the check and its numbers).
pub fn hold_text(reason: HoldReason) -> String {
    match reason {
        HoldReason::AreaConservation { head_meter, .. } => {
            format!("area of feeder-head meter {head_meter}: {}", reason.hold())
        }
        _ => reason.hold().to_string(),
    }
}

/// The API's name of a settlement basis.
pub fn basis_name(b: market::SettlementBasis) -> &'static str {
    match b {
        market::SettlementBasis::ProvisionalEstimate => "provisional_estimate",
        market::SettlementBasis::Reading => "reading",
        market::SettlementBasis::LateReading => "late_reading",
        market::SettlementBasis::Estimate => "estimate",
    }
}

/// Utility bill lines of every member with a trade or a reading in the slot; in an islanded slot
/// there is no utility: what was not traded is unmatched, unpriced.
fn bills(
    trades: &[TradeRecord],
    readings: &BTreeMap<Address, Reading>,
    tariff: gridmesh_market::Tariff,
    island: bool,
) -> Vec<BillView> {
    // (bought delivered, sold delivered) per member; unsettled trades count as delivered.
    let mut pos: BTreeMap<Address, (u64, u64)> = BTreeMap::new();
    for t in trades {
        let d = t
            .settlement
            .as_ref()
            .map_or(t.trade.energy_mwh, |s| s.delivered_mwh);
        pos.entry(t.buyer).or_default().0 += d;
        pos.entry(t.seller).or_default().1 += d;
    }
    for who in readings.keys() {
        pos.entry(*who).or_default();
    }
    pos.into_iter()
        .map(|(who, (bought, sold))| {
            let (import, export, estimated) = match readings.get(&who) {
                Some(r) => (r.import_mwh, r.export_mwh, false),
                None => (bought, sold, true),
            };
            let unmatched_import = import.saturating_sub(bought);
            let unmatched_export = export.saturating_sub(sold) + bought.saturating_sub(import);
            let (utility_import, utility_export, unmatched_import, unmatched_export) = if island {
                (0, 0, unmatched_import, unmatched_export)
            } else {
                (unmatched_import, unmatched_export, 0, 0)
            };
            BillView {
                account: who.to_string(),
                import_kwh: format_kwh(import),
                export_kwh: format_kwh(export),
                bought_delivered_kwh: format_kwh(bought),
                sold_delivered_kwh: format_kwh(sold),
                utility_import_kwh: format_kwh(utility_import),
                utility_cost: tokens(value_floor(utility_import, tariff.retail_per_kwh)),
                utility_export_kwh: format_kwh(utility_export),
                utility_credit: tokens(value_floor(utility_export, tariff.feed_in_per_kwh)),
                unmatched_import_kwh: format_kwh(unmatched_import),
                unmatched_export_kwh: format_kwh(unmatched_export),
                estimated,
            }
        })
        .collect()
}

/// The market's rules as the API shows them.
#[derive(Serialize, Deserialize, ToSchema, Debug, Clone, PartialEq, Eq)]
pub struct MarketInfo {
    pub mechanism: String,
    pub gate_closure_minutes: u32,
    pub correction_window_minutes: u32,
    pub late_window_minutes: u32,
    /// The slot the head's time is in, and the first slot still open for orders when the node
    /// builds its next block (on a time-scaled node without empty blocks the head's time lags
    /// its clock: an order for a slot open at the head's time may reach a block after its gate).
    pub current_slot: u64,
    pub next_open_slot: u64,
    /// Orders placed so far for the next open slot.
    pub next_open_orders: u32,
    /// The head block's time and the next open slot's gate closure (ms since the epoch).
    pub now_ms: u64,
    /// The latest time the node's next block will carry, by its clock (none for a node whose
    /// blocks someone else times).
    #[serde(default)]
    pub next_block_ms: Option<u64>,
    pub next_gate_closure_ms: u64,
    /// The utility's time-of-use tariff: periods from a slot of the day (UTC) on, in tokens per
    /// kWh.
    pub tariffs: Vec<TariffPeriod>,
    /// The grid operator's flexibility requests for the next 96 slots (what devices delivering
    /// in the asked direction are rewarded for).
    pub flexibility_requests: Vec<FlexRequestView>,
    pub escrow_account: String,
    pub escrow_balance: String,
    pub grid_operator: String,
    pub market_operator: String,
    /// Tokens every order locks until its slot clears or it is cancelled.
    pub order_deposit: String,
    /// The smallest order, kWh.
    pub min_order_kwh: String,
}

/// A flexibility request: in `slot`, devices in `area` ("" = everywhere) that `reduce` (battery
/// discharge) or `increase` (battery and EV charging) their draw earn `value_per_kwh`.
#[derive(Serialize, Deserialize, ToSchema, Debug, Clone, PartialEq, Eq)]
pub struct FlexRequestView {
    pub slot: u64,
    pub area: String,
    pub direction: String,
    pub value_per_kwh: String,
}

/// One period of the time-of-use tariff.
#[derive(Serialize, Deserialize, ToSchema, Debug, Clone, PartialEq, Eq)]
pub struct TariffPeriod {
    pub from_slot_of_day: u8,
    pub retail_per_kwh: String,
    pub feed_in_per_kwh: String,
}

/// The market at the head's time `now_ms`, its next open slot the first whose gate is still open
/// at `next_block_ms` (the node's next block's time, when known).
pub fn market_info(state: &State, now_ms: u64, next_block_ms: Option<u64>) -> MarketInfo {
    let cfg = state.market_config();
    let current = gridmesh_types::units::slot_of(now_ms);
    let open_at = next_block_ms.map_or(now_ms, |t| t.max(now_ms));
    let mut next = current + 1;
    while cfg.gate_closure_ms(next) <= open_at {
        next += 1;
    }
    MarketInfo {
        mechanism: cfg.mechanism.name().into(),
        gate_closure_minutes: cfg.gate_closure_minutes,
        correction_window_minutes: cfg.correction_window_minutes,
        late_window_minutes: cfg.late_window_minutes,
        current_slot: current,
        next_open_slot: next,
        next_open_orders: state.order_count(next) as u32,
        now_ms,
        next_block_ms,
        next_gate_closure_ms: cfg.gate_closure_ms(next),
        tariffs: cfg
            .tariffs
            .iter()
            .map(|t| TariffPeriod {
                from_slot_of_day: t.from_slot_of_day,
                retail_per_kwh: tokens(u128::from(t.tariff.retail_per_kwh)),
                feed_in_per_kwh: tokens(u128::from(t.tariff.feed_in_per_kwh)),
            })
            .collect(),
        flexibility_requests: (current..current + 96)
            .flat_map(|slot| {
                state
                    .flex_requests(slot)
                    .into_iter()
                    .map(move |(area, r)| FlexRequestView {
                        slot,
                        area,
                        direction: r.direction.name().into(),
                        value_per_kwh: tokens(u128::from(r.value_per_kwh)),
                    })
            })
            .collect(),
        escrow_account: market::escrow_account().to_string(),
        escrow_balance: state.account(&market::escrow_account()).balance.to_string(),
        grid_operator: cfg.grid_operator.to_string(),
        market_operator: cfg.market_operator.to_string(),
        order_deposit: tokens(cfg.order_deposit),
        min_order_kwh: format_kwh(cfg.min_order_mwh),
    }
}
