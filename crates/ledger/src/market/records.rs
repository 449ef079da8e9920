//! What the state keeps of the market: orders, cleared slots, trades with their settlement,
//! sellers' positions and meter readings.

use borsh::{BorshDeserialize, BorshSerialize};
use gridmesh_market::{Mechanism, Side, Tariff, Trade, UtilityTrade};
use gridmesh_types::Address;
use serde::Serialize;

/// Whether an order still waits for clearing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize)]
#[borsh(use_discriminant = true)]
#[serde(rename_all = "snake_case")]
#[repr(u8)]
pub enum OrderStatus {
    Open = 0,
    Cleared = 1,
}

#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize)]
pub struct OrderRecord {
    pub owner: Address,
    pub side: Side,
    pub energy_mwh: u64,
    pub price_per_kwh: u64,
    pub location: String,
    /// Arrival: block height << 32 | index in block.
    pub time: u64,
    /// Tokens this order still holds in escrow (0 once cleared: trades hold theirs).
    pub escrow: u128,
    pub traded_mwh: u64,
    pub status: OrderStatus,
}

/// How far a slot's settlement has come.
#[derive(Clone, Copy, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize)]
#[borsh(use_discriminant = true)]
#[serde(rename_all = "snake_case")]
#[repr(u8)]
pub enum SettlementStatus {
    /// Cleared; readings are still due.
    Pending = 0,
    /// Settled, but some sellers only by estimate (funds held until a reading or the deadline).
    Provisional = 1,
    /// Every trade settled for good.
    Final = 2,
}

/// A cleared slot.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize)]
pub struct SlotRecord {
    pub mechanism: Mechanism,
    pub cleared_at_height: u64,
    pub tariff: Tariff,
    pub shortfall_price_per_kwh: u64,
    pub orders: u32,
    pub clearing_price_per_kwh: Option<u64>,
    pub volume_mwh: u64,
    pub welfare: u128,
    pub optimal_welfare: u128,
    pub trades: u32,
    /// Every market (area) where something traded: its path, uniform price (if the mechanism has
    /// one) and volume. With a hierarchy a slot has several.
    pub markets: Vec<MarketResult>,
    pub utility: Vec<UtilityTrade>,
    pub settlement: SettlementStatus,
    /// Sellers whose trades are settled only by estimate.
    pub provisional_sellers: u32,
    /// Cleared under island rules (the microgrid was islanded at gate closure).
    pub island: bool,
    /// Connection points whose orders were trimmed to a grid operator's envelope.
    pub envelopes: u32,
}

/// One market (area) of a cleared slot.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize)]
pub struct MarketResult {
    /// Area path ("" for the root).
    pub area: String,
    pub price_per_kwh: Option<u64>,
    pub volume_mwh: u64,
}

/// How one trade was settled.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize)]
pub struct TradeSettlement {
    pub delivered_mwh: u64,
    pub buyer_paid: u128,
    pub seller_received: u128,
    pub grid_fees: u128,
    pub operator_received: u128,
    pub buyer_refund: u128,
    /// Paid by the seller to the buyer for the shortfall.
    pub compensation: u128,
    pub collateral_returned: u128,
    /// What the settlement rests on, and whether it can still change.
    pub basis: SettlementBasis,
}

/// What a trade's settlement rests on. One enum, so no impossible combination (a final
/// settlement that is still waiting, a late estimate) can be recorded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SettlementBasis {
    /// No reading yet at the end of the correction window: settled by the estimate "nothing
    /// delivered", provisionally. The funds stay in escrow until a late reading or the deadline.
    ProvisionalEstimate,
    /// The seller's reading, in time. Final.
    Reading,
    /// A reading that came after the correction window, before the deadline. Final.
    LateReading,
    /// No reading by the deadline: the estimate "nothing delivered" stands. Final.
    Estimate,
}

impl SettlementBasis {
    /// Settled by the estimate (no reading from the seller).
    pub fn is_estimated(self) -> bool {
        matches!(
            self,
            SettlementBasis::ProvisionalEstimate | SettlementBasis::Estimate
        )
    }

    /// Funds moved; nothing will change any more.
    pub fn is_final(self) -> bool {
        !matches!(self, SettlementBasis::ProvisionalEstimate)
    }

    /// Settled by a reading that arrived after the correction window.
    pub fn is_late(self) -> bool {
        matches!(self, SettlementBasis::LateReading)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize)]
pub struct TradeRecord {
    pub trade: Trade,
    pub buyer: Address,
    pub seller: Address,
    /// What the buyer pays if everything is delivered, held in escrow.
    pub buyer_escrow: u128,
    /// The seller's collateral held for this trade.
    pub seller_collateral: u128,
    pub settlement: Option<TradeSettlement>,
}

/// A seller's trades in one slot, and whether they are settled.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub(crate) struct SellerPosition {
    pub trades: Vec<u32>,
    pub status: SettlementStatus,
}

/// A member's meter reading of its connection for an ended slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize)]
pub struct Reading {
    pub import_mwh: u64,
    pub export_mwh: u64,
    pub height: u64,
}

/// Counters of the market.
#[derive(Clone, Copy, Debug, Default, BorshSerialize, BorshDeserialize)]
pub(crate) struct Meta {
    pub next_order_id: u64,
}
