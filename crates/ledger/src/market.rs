//! The energy market on the ledger: orders with escrow, clearing at gate closure, settlement of
//! what was metered. The clearing itself is `gridmesh-market`'s pure code; this module keeps the
//! orders, money and records in the state's key/value namespace.
//!
//! # Life of a slot
//! 1. **Orders** (`PlaceOrder`) until gate closure, `gate_closure_minutes` before the slot starts.
//!    A bid locks `ceil(energy × limit)` (its most possible cost) in the escrow account. An ask
//!    needs a producing device (PV or battery) whose rating covers the energy in 15 minutes, and
//!    locks collateral `ceil(energy × max(0, shortfall price − ask))`, enough to compensate its
//!    buyers if it delivers nothing. `CancelOrder` returns the escrow before gate closure.
//! 2. **Clearing**: the first block at or after gate closure clears the slot (before its
//!    transactions, so orders in that block are already late) with the community's mechanism,
//!    grid fees and the slot's tariff. Each trade keeps in escrow what its buyer pays
//!    (`floor(energy × buyer price)`) and its seller's collateral
//!    (`floor(energy × max(0, shortfall price − buyer price))`); the rest is released at once.
//!    `pay-as-bid` is continuous matching: at gate closure it replays the orders still open in
//!    arrival order (block height, then index in block), which gives the trades continuous matching
//!    would have made among them; orders cancelled before the gate never traded.
//! 3. **Readings** (`SubmitReading`): import and export of the sender's grid connection for an
//!    ended slot, checked against its devices' ratings and the connection limit, replaceable until
//!    the sender's trades are settled.
//! 4. **Settlement**, at the first block `correction_window_minutes` after the slot ends. A
//!    seller's delivered energy is `min(export, sold)`, split over its trades pro rata. For each
//!    trade: the buyer pays for what was delivered (seller, grid operator and market operator get
//!    their floors, see `gridmesh-market`), the rest of its escrow returns; for the shortfall
//!    the buyer takes energy from the utility and the seller compensates it from its collateral
//!    (the seller's cost, not the buyer's): the shortfall's share of the trade's collateral,
//!    `floor(collateral × shortfall / energy)`, about `shortfall × (shortfall price − buyer
//!    price)`; the rest of the collateral returns to the seller.
//! 5. **Missing readings**: a seller without a reading at settlement is settled *provisionally* by
//!    the documented estimate "nothing was delivered" (recorded and marked `estimated`; its funds
//!    stay in escrow). A reading that arrives later, before `late_window_minutes` after the slot
//!    ends, re-settles those trades with what was metered (`late`); at the end of that window the
//!    estimate becomes final and the funds move.
//!
//! Everything the utility does (energy imported beyond what was bought, exported beyond what was
//! sold, a buyer's surplus) is billed by the utility itself at its tariff; the ledger derives those
//! bill lines from trades and readings (see the node's slot view) but moves no tokens for them.
//!
//! Token conservation: every token locked sits in the [`escrow_account`]; clearing and settlement
//! only move tokens between it and members, the grid operator and the market operator, and the
//! escrow's balance always equals the escrow and collateral still held by open orders and unsettled
//! trades (property-tested).

use borsh::{BorshDeserialize, BorshSerialize};
use gridmesh_market::{
    self as mk, value_ceil, value_floor, Areas, GridFee, Mechanism, Order, Side, Tariff, Trade,
    UtilityTrade,
};
use gridmesh_physics::pog;
use gridmesh_types::units::{slot_of, slot_of_day, slot_start_ms, SLOTS_PER_DAY, SLOT_MS};
use gridmesh_types::{Address, Amount};
use serde::{Deserialize, Serialize};

use crate::kv;
use crate::state::{Event, Overlay, TxContext, TxError};
use crate::tx::{DeviceKind, GridEventKind, TxKind};

/// Most orders one slot accepts.
pub const MAX_ORDERS_PER_SLOT: u32 = 100_000;
/// How far ahead orders may be placed: 7 days of slots.
pub const MAX_SLOTS_AHEAD: u64 = 7 * SLOTS_PER_DAY;
/// Most devices one account may register.
pub const MAX_DEVICES_PER_OWNER: u32 = 16;
/// Energy a device can deliver in one 15-minute slot per watt of rating, in mWh (0.25 Wh).
pub const MWH_PER_W_PER_SLOT: u64 = 250;
/// Most time-of-use tariff periods per day.
pub const MAX_TARIFF_PERIODS: usize = 96;

const TAG_CONFIG: u8 = 1;
const TAG_META: u8 = 2;
const TAG_OPEN: u8 = 3;
const TAG_ORDER: u8 = 4;
const TAG_SLOT: u8 = 6;
const TAG_TRADE: u8 = 7;
const TAG_SETTLE_DUE: u8 = 8;
const TAG_FINAL_DUE: u8 = 9;
const TAG_DEVICE: u8 = 10;
const TAG_READING: u8 = 11;
const TAG_SELLER: u8 = 12;
const TAG_ENVELOPE: u8 = 13;
const TAG_GRID_MODE: u8 = 14;
const TAG_GRID_EVENT: u8 = 15;
const TAG_DEVICE_KEY: u8 = 16;
const TAG_DEVICE_READING: u8 = 17;
const TAG_VERIFIED_EXPORT: u8 = 18;
const TAG_OWNED_DEVICE: u8 = 19;
const TAG_PRUNE_DUE: u8 = 20;

/// The account that holds every locked token (bids' escrow, asks' collateral). No key controls
/// it: only clearing and settlement move its tokens.
pub fn escrow_account() -> Address {
    Address(*blake3::hash(b"gridmesh/market/escrow").as_bytes())
}

/// A time-of-use period: from this slot of the day (0..96) until the next period's start.
#[derive(Clone, Copy, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize)]
pub struct TouTariff {
    pub from_slot_of_day: u8,
    pub tariff: Tariff,
}

/// The community's market rules, fixed in the genesis (state key `CONFIG`).
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize)]
pub struct MarketConfig {
    pub mechanism: Mechanism,
    pub gate_closure_minutes: u32,
    pub correction_window_minutes: u32,
    pub late_window_minutes: u32,
    /// Sorted by start; the first starts at slot 0 of the day.
    pub tariffs: Vec<TouTariff>,
    /// What a seller's shortfall costs per kWh; `None`: the slot's retail tariff.
    pub shortfall_price_per_kwh: Option<u64>,
    /// Fee of each depth of the market hierarchy, root first.
    pub grid_fees: Vec<GridFee>,
    pub grid_operator: Address,
    pub market_operator: Address,
    /// The largest import of one connection, in watts (bounds bids and readings).
    pub max_import_w: u64,
    /// While the microgrid is islanded: the highest price a bid clears at (scarcity pricing,
    /// bounded), base units per kWh.
    pub island_price_cap_per_kwh: u64,
    /// The least bond a device registered with its own key must put up, base units.
    pub min_device_bond: u128,
    /// Days a slot's records (orders, trades, readings, settlement) stay in the state after the
    /// slot is final; then they are removed (the blocks keep them). 0 keeps them for ever.
    pub history_days: u32,
}

impl Default for MarketConfig {
    fn default() -> Self {
        MarketConfig {
            mechanism: Mechanism::PayAsClear,
            gate_closure_minutes: 5,
            correction_window_minutes: 60,
            late_window_minutes: 24 * 60,
            tariffs: vec![TouTariff {
                from_slot_of_day: 0,
                tariff: Tariff {
                    retail_per_kwh: 300_000,
                    feed_in_per_kwh: 80_000,
                },
            }],
            shortfall_price_per_kwh: None,
            grid_fees: Vec::new(),
            grid_operator: Address(*blake3::hash(b"gridmesh/grid-operator").as_bytes()),
            market_operator: Address(*blake3::hash(b"gridmesh/market-operator").as_bytes()),
            max_import_w: 50_000,
            island_price_cap_per_kwh: 1_000_000,
            min_device_bond: 10_000_000,
            history_days: 0,
        }
    }
}

impl MarketConfig {
    /// Checks the rules; the message says what to fix.
    pub fn check(&self) -> Result<(), String> {
        if self.tariffs.is_empty() || self.tariffs.len() > MAX_TARIFF_PERIODS {
            return Err(format!(
                "list 1 to {MAX_TARIFF_PERIODS} tariff periods (the first from slot 0)"
            ));
        }
        if self.tariffs[0].from_slot_of_day != 0 {
            return Err("the first tariff period must start at slot 0 of the day".into());
        }
        for w in self.tariffs.windows(2) {
            if w[1].from_slot_of_day <= w[0].from_slot_of_day {
                return Err("tariff periods must be in increasing order of from_slot".into());
            }
        }
        for t in &self.tariffs {
            if u64::from(t.from_slot_of_day) >= SLOTS_PER_DAY {
                return Err(format!(
                    "tariff period from_slot {} is not 0..95",
                    t.from_slot_of_day
                ));
            }
            t.tariff.check().map_err(|e| e.to_string())?;
        }
        if self.grid_fees.len() > mk::MAX_DEPTH + 1 {
            return Err(format!("at most {} grid fee levels", mk::MAX_DEPTH + 1));
        }
        if self.grid_fees.iter().any(|f| f.percent_bps > 10_000) {
            return Err("a grid fee percentage is above 100".into());
        }
        if self.max_import_w == 0 {
            return Err("max_import_kw must be positive".into());
        }
        if self.island_price_cap_per_kwh == 0
            || self.island_price_cap_per_kwh > mk::MAX_PRICE_PER_KWH
        {
            return Err(
                "island_price_cap_per_kwh must be positive and within the price limit".into(),
            );
        }
        if self.late_window_minutes < self.correction_window_minutes {
            return Err("late_window_minutes must be at least correction_window_minutes".into());
        }
        if self.history_days > 36_500 {
            return Err("history_days must be at most 36500 (0 keeps every slot)".into());
        }
        Ok(())
    }

    /// The utility's prices in `slot` (time of use).
    pub fn tariff(&self, slot: u64) -> Tariff {
        let s = slot_of_day(slot);
        self.tariffs
            .iter()
            .rev()
            .find(|t| u64::from(t.from_slot_of_day) <= s)
            .unwrap_or(&self.tariffs[0])
            .tariff
    }

    /// The price a seller's shortfall costs in `slot`.
    pub fn shortfall_price(&self, slot: u64) -> u64 {
        self.shortfall_price_per_kwh
            .unwrap_or_else(|| self.tariff(slot).retail_per_kwh)
    }

    /// When orders for `slot` close, in ms.
    pub fn gate_closure_ms(&self, slot: u64) -> u64 {
        slot_start_ms(slot).saturating_sub(u64::from(self.gate_closure_minutes) * 60_000)
    }

    /// When `slot` settles (readings due), in ms.
    pub fn settlement_ms(&self, slot: u64) -> u64 {
        slot_start_ms(slot + 1) + u64::from(self.correction_window_minutes) * 60_000
    }

    /// When estimates of `slot` become final and no reading is accepted any more, in ms.
    pub fn final_ms(&self, slot: u64) -> u64 {
        slot_start_ms(slot + 1) + u64::from(self.late_window_minutes) * 60_000
    }

    /// When `slot`'s records leave the state (with `history_days` set), in ms.
    pub fn prune_ms(&self, slot: u64) -> u64 {
        self.final_ms(slot) + u64::from(self.history_days) * 86_400_000
    }
}

/// The `[market]` section of a genesis file: prices as decimal tokens per kWh.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MarketFile {
    #[serde(default = "default_mechanism")]
    pub mechanism: String,
    #[serde(default)]
    pub gate_closure_minutes: Option<u32>,
    #[serde(default)]
    pub correction_window_minutes: Option<u32>,
    #[serde(default)]
    pub late_window_minutes: Option<u32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tariffs: Vec<TariffFile>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shortfall_price_per_kwh: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub grid_fees: Vec<FeeFile>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grid_operator: Option<Address>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub market_operator: Option<Address>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_import_kw: Option<String>,
    /// Highest clearing price while islanded, tokens per kWh (default 1).
    pub island_price_cap_per_kwh: Option<String>,
    /// The least bond of a device registered with its own key, tokens (default 10).
    pub min_device_bond: Option<String>,
    /// Days a final slot's records stay in the state (default 0: for ever).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history_days: Option<u32>,
}

fn default_mechanism() -> String {
    "pay-as-clear".into()
}

/// An empty `[market]` section: pay-as-clear, every other rule at its default.
impl Default for MarketFile {
    fn default() -> MarketFile {
        MarketFile {
            mechanism: default_mechanism(),
            gate_closure_minutes: None,
            correction_window_minutes: None,
            late_window_minutes: None,
            tariffs: Vec::new(),
            shortfall_price_per_kwh: None,
            grid_fees: Vec::new(),
            grid_operator: None,
            market_operator: None,
            max_import_kw: None,
            island_price_cap_per_kwh: None,
            min_device_bond: None,
            history_days: None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TariffFile {
    pub from_slot: u8,
    pub retail_per_kwh: String,
    pub feed_in_per_kwh: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeeFile {
    #[serde(default)]
    pub constant_per_kwh: Option<String>,
    /// Percent of the order's limit price (up to two decimals).
    #[serde(default)]
    pub percent: Option<String>,
}

fn price(what: &str, s: &str) -> Result<u64, String> {
    let v = gridmesh_types::parse_fixed(s, gridmesh_types::TOKEN_DECIMALS)
        .map_err(|e| format!("{what}: {e}"))?;
    u64::try_from(v).map_err(|_| format!("{what}: {s} is too large"))
}

impl MarketFile {
    /// The checked configuration.
    pub fn to_config(&self) -> Result<MarketConfig, String> {
        let d = MarketConfig::default();
        let mut tariffs = Vec::new();
        for (i, t) in self.tariffs.iter().enumerate() {
            tariffs.push(TouTariff {
                from_slot_of_day: t.from_slot,
                tariff: Tariff {
                    retail_per_kwh: price(
                        &format!("tariffs[{i}].retail_per_kwh"),
                        &t.retail_per_kwh,
                    )?,
                    feed_in_per_kwh: price(
                        &format!("tariffs[{i}].feed_in_per_kwh"),
                        &t.feed_in_per_kwh,
                    )?,
                },
            });
        }
        let mut grid_fees = Vec::new();
        for (i, f) in self.grid_fees.iter().enumerate() {
            let constant_per_kwh = match &f.constant_per_kwh {
                Some(c) => price(&format!("grid_fees[{i}].constant_per_kwh"), c)?,
                None => 0,
            };
            let percent_bps = match &f.percent {
                Some(p) => gridmesh_types::parse_fixed(p, 2)
                    .map_err(|e| format!("grid_fees[{i}].percent: {e}"))?
                    .try_into()
                    .map_err(|_| format!("grid_fees[{i}].percent is too large"))?,
                None => 0,
            };
            grid_fees.push(GridFee {
                constant_per_kwh,
                percent_bps,
            });
        }
        let max_import_w = match &self.max_import_kw {
            Some(kw) => {
                let w = gridmesh_types::parse_fixed(kw, 3)
                    .map_err(|e| format!("max_import_kw: {e}"))?;
                u64::try_from(w).map_err(|_| "max_import_kw is too large".to_string())?
            }
            None => d.max_import_w,
        };
        let c = MarketConfig {
            mechanism: self.mechanism.parse()?,
            gate_closure_minutes: self.gate_closure_minutes.unwrap_or(d.gate_closure_minutes),
            correction_window_minutes: self
                .correction_window_minutes
                .unwrap_or(d.correction_window_minutes),
            late_window_minutes: self.late_window_minutes.unwrap_or(d.late_window_minutes),
            tariffs: if tariffs.is_empty() {
                d.tariffs
            } else {
                tariffs
            },
            shortfall_price_per_kwh: self
                .shortfall_price_per_kwh
                .as_deref()
                .map(|s| price("shortfall_price_per_kwh", s))
                .transpose()?,
            grid_fees,
            grid_operator: self.grid_operator.unwrap_or(d.grid_operator),
            market_operator: self.market_operator.unwrap_or(d.market_operator),
            max_import_w,
            island_price_cap_per_kwh: self
                .island_price_cap_per_kwh
                .as_deref()
                .map(|s| price("island_price_cap_per_kwh", s))
                .transpose()?
                .unwrap_or(d.island_price_cap_per_kwh),
            min_device_bond: match &self.min_device_bond {
                Some(t) => gridmesh_types::parse_fixed(t, gridmesh_types::TOKEN_DECIMALS)
                    .map_err(|e| format!("min_device_bond: {e}"))?,
                None => d.min_device_bond,
            },
            history_days: self.history_days.unwrap_or(d.history_days),
        };
        c.check()?;
        Ok(c)
    }
}

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

/// A connection point's envelope in one slot.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize)]
pub struct EnvelopeRecord {
    pub location: String,
    pub import_mwh: u64,
    pub export_mwh: u64,
}

/// The islanding controller's state as the ledger knows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize)]
pub struct GridMode {
    /// The last transition (None: connected since genesis).
    pub last: Option<GridEventKind>,
    pub since_ms: u64,
    /// Transitions recorded so far.
    pub events: u64,
}

impl GridMode {
    /// Whether the PCC breaker is open (islanded or still resynchronising).
    pub fn is_islanded(&self) -> bool {
        matches!(
            self.last,
            Some(GridEventKind::Islanded | GridEventKind::Resynchronising)
        )
    }
}

/// Whether a device registered with its own key may still report.
#[derive(Clone, Copy, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize)]
#[borsh(use_discriminant = true)]
#[serde(rename_all = "snake_case")]
#[repr(u8)]
pub enum DeviceStatus {
    Active = 0,
    Decommissioned = 1,
    /// Its bond was slashed for a proven false reading: it can report no more.
    Slashed = 2,
}

/// A device registered with its own key.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize)]
pub struct DeviceIdentity {
    pub owner: Address,
    pub info: crate::tx::DeviceInfo,
    /// Held in [`device_bond_account`] while the device is active.
    pub bond: u128,
    pub registered_height: u64,
    pub status: DeviceStatus,
    /// The register of its last checked reading (accepted or held): the next must continue it.
    pub register_mwh: Option<u64>,
}

/// Where a device reading stands.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReadingStatus {
    /// Waiting for the slot's proof-of-generation check (at settlement).
    Pending,
    Accepted,
    /// Not paid; the reason says which check failed (and whether a fraud report may open a
    /// dispute on it: [`HoldReason::disputable`]).
    Held {
        reason: HoldReason,
    },
}

/// Why a device reading is held: the check that failed and the numbers it failed on. Integers
/// only: the words are the API's (`gridmesh-api`), so rewording a message never changes a state
/// root.
#[derive(Clone, Copy, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize)]
#[serde(rename_all = "snake_case", tag = "check")]
pub enum HoldReason {
    /// The register does not continue the device's last checked reading.
    RegisterMismatch { expected_mwh: u64 },
    /// More than the device's rated power allows in a slot.
    AboveRating { max_mwh: u64 },
    /// More than a clear sky allows at the site and time.
    AboveClearSky { bound_mwh: u64 },
    /// Far above what the neighbours' weather gives (ratios to the clear-sky expectation, ppm).
    NeighbourOutlier { ratio_ppm: u64, expected_ppm: u64 },
    /// The homes of the area that the grid operator's feeder-head meter `head_meter` measures
    /// claim more export than that meter allows (with the loss margin).
    AreaConservation {
        head_meter: Address,
        claimed_mwh: u64,
        bound_mwh: u64,
    },
}

impl HoldReason {
    /// The reason of a physics hold; `head_meter` names the feeder-head meter of an area check
    /// (the site checks, which never hold for an area, pass any address).
    pub fn of(hold: pog::Hold, head_meter: Address) -> HoldReason {
        match hold {
            pog::Hold::RegisterMismatch { expected_mwh } => {
                HoldReason::RegisterMismatch { expected_mwh }
            }
            pog::Hold::AboveRating { max_mwh } => HoldReason::AboveRating { max_mwh },
            pog::Hold::AboveClearSky { bound_mwh } => HoldReason::AboveClearSky { bound_mwh },
            pog::Hold::NeighbourOutlier {
                ratio_ppm,
                expected_ppm,
            } => HoldReason::NeighbourOutlier {
                ratio_ppm,
                expected_ppm,
            },
            pog::Hold::AreaConservation {
                claimed_mwh,
                bound_mwh,
            } => HoldReason::AreaConservation {
                head_meter,
                claimed_mwh,
                bound_mwh,
            },
        }
    }

    /// The check as the physics crate states it (the area check without its meter).
    pub fn hold(self) -> pog::Hold {
        match self {
            HoldReason::RegisterMismatch { expected_mwh } => {
                pog::Hold::RegisterMismatch { expected_mwh }
            }
            HoldReason::AboveRating { max_mwh } => pog::Hold::AboveRating { max_mwh },
            HoldReason::AboveClearSky { bound_mwh } => pog::Hold::AboveClearSky { bound_mwh },
            HoldReason::NeighbourOutlier {
                ratio_ppm,
                expected_ppm,
            } => pog::Hold::NeighbourOutlier {
                ratio_ppm,
                expected_ppm,
            },
            HoldReason::AreaConservation {
                claimed_mwh,
                bound_mwh,
                ..
            } => pog::Hold::AreaConservation {
                claimed_mwh,
                bound_mwh,
            },
        }
    }

    /// A hard physical bound was broken (register, rating, clear sky): evidence of a false
    /// reading, so a fraud report may open a dispute on it. The statistical checks (neighbours,
    /// area conservation) name no culprit and are never disputable.
    pub fn disputable(self) -> bool {
        self.hold().is_physical()
    }
}

/// A device's reading for a slot, as recorded.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize)]
pub struct DeviceReadingRecord {
    /// The device's owner when the reading arrived.
    pub owner: Address,
    pub energy_out_mwh: u64,
    pub energy_in_mwh: u64,
    pub register_mwh: u64,
    pub raw_root: gridmesh_types::Hash32,
    pub raw_count: u32,
    pub height: u64,
    pub status: ReadingStatus,
}

pub fn device_reading_key(slot: u64, device: &Address) -> Vec<u8> {
    kv::key(TAG_DEVICE_READING, slot, &device.0)
}

pub fn device_readings_prefix(slot: u64) -> Vec<u8> {
    kv::key(TAG_DEVICE_READING, slot, &[])
}

fn verified_export_key(slot: u64, owner: &Address) -> Vec<u8> {
    kv::key(TAG_VERIFIED_EXPORT, slot, &owner.0)
}

/// The account holding device bonds (no key controls it; only the state machine moves its
/// tokens).
pub fn device_bond_account() -> Address {
    Address(*blake3::hash(b"gridmesh/device-bonds").as_bytes())
}

pub fn device_key_key(device: &Address) -> Vec<u8> {
    kv::key(TAG_DEVICE_KEY, owner_group(device), &device.0)
}

/// One recorded transition.
#[derive(Clone, Copy, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize)]
pub struct GridEventRecord {
    pub event: GridEventKind,
    pub at_ms: u64,
    pub height: u64,
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
struct SellerPosition {
    trades: Vec<u32>,
    status: SettlementStatus,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize)]
pub struct Device {
    pub kind: DeviceKind,
    pub capacity_w: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize)]
pub struct Reading {
    pub import_mwh: u64,
    pub export_mwh: u64,
    pub height: u64,
}

#[derive(Clone, Copy, Debug, Default, BorshSerialize, BorshDeserialize)]
struct Meta {
    next_order_id: u64,
}

/// Why a market or device transaction cannot be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MarketTxError {
    #[error(
        "slot {slot} closed for orders at {gate_ms} ms (gate closure); block time is {now_ms} ms"
    )]
    GateClosed {
        slot: u64,
        gate_ms: u64,
        now_ms: u64,
    },
    #[error("slot {slot} is more than {MAX_SLOTS_AHEAD} slots (7 days) ahead; the latest open slot is {max_slot}")]
    SlotTooFar { slot: u64, max_slot: u64 },
    #[error("slot {0} already holds {MAX_ORDERS_PER_SLOT} orders")]
    SlotFull(u64),
    #[error("order {order_id} does not exist in slot {slot}")]
    UnknownOrder { slot: u64, order_id: u64 },
    #[error("order {0} belongs to another account")]
    NotYourOrder(u64),
    #[error("order {0} is already cleared")]
    OrderNotOpen(u64),
    #[error("an ask needs a registered producing device (pv or battery) of the seller")]
    NoProducingDevice,
    #[error("ask of {energy_mwh} mWh exceeds what the seller's producing devices can deliver in 15 minutes ({max_mwh} mWh)")]
    AskAboveCapacity { energy_mwh: u64, max_mwh: u64 },
    #[error("bid of {energy_mwh} mWh exceeds the connection's import limit for 15 minutes ({max_mwh} mWh)")]
    BidAboveImportLimit { energy_mwh: u64, max_mwh: u64 },
    #[error("order energy {0} mWh is above the limit of {lim} mWh", lim = mk::MAX_ORDER_MWH)]
    EnergyTooLarge(u64),
    #[error("price {0} base units per kWh is above the limit of {lim}", lim = mk::MAX_PRICE_PER_KWH)]
    PriceTooHigh(u64),
    #[error("bad location: {0}")]
    BadLocation(String),
    #[error("an account may register at most {MAX_DEVICES_PER_OWNER} devices")]
    TooManyDevices,
    #[error("a reading needs a registered device of the sender")]
    NoDevice,
    #[error("slot {slot} ends at {ends_ms} ms; a reading for it can only come after")]
    SlotNotEnded { slot: u64, ends_ms: u64 },
    #[error("readings for slot {slot} closed at {deadline_ms} ms")]
    ReadingTooLate { slot: u64, deadline_ms: u64 },
    #[error("the sender's trades in slot {0} are already settled for good")]
    AlreadySettled(u64),
    #[error("export of {export_mwh} mWh is more than the sender's producing devices can deliver in 15 minutes ({max_mwh} mWh)")]
    ExportAboveCapacity { export_mwh: u64, max_mwh: u64 },
    #[error("import of {import_mwh} mWh is more than the connection limit allows in 15 minutes ({max_mwh} mWh)")]
    ImportAboveLimit { import_mwh: u64, max_mwh: u64 },
    #[error("only the market's grid operator may send envelopes and grid events")]
    NotGridOperator,
    #[error(
        "grid event {event:?} cannot follow {last:?} (islanded -> resynchronising -> reconnected)"
    )]
    BadGridTransition {
        last: Option<GridEventKind>,
        event: GridEventKind,
    },
    #[error("grid event time {at_ms} ms is before the last event ({since_ms} ms) or after the block ({now_ms} ms)")]
    GridEventTime {
        at_ms: u64,
        since_ms: u64,
        now_ms: u64,
    },
    #[error("device {0} is already registered")]
    DeviceExists(Address),
    #[error("device {0} is not registered")]
    UnknownDevice(Address),
    #[error("device {0} belongs to another account")]
    NotYourDevice(Address),
    #[error("device {0} is decommissioned")]
    DeviceDecommissioned(Address),
    #[error("device {0} was slashed for a false reading and can report no more")]
    DeviceSlashed(Address),
    #[error("the device key's signature over its registration is not valid")]
    BadDeviceSignature,
    #[error("a device bond of {got} base units is below the minimum of {min}")]
    BondTooSmall { got: u128, min: u128 },
    #[error("a device cannot be transferred to its owner")]
    TransferToSelf,
    #[error("device {0}'s signature over its reading is not valid")]
    BadReadingSignature(Address),
    #[error("device {device} already reported slot {slot} (a replayed reading)")]
    DuplicateDeviceReading { device: Address, slot: u64 },
}

fn enc<T: BorshSerialize>(v: &T) -> Vec<u8> {
    borsh::to_vec(v).expect("encoding to a Vec cannot fail")
}

/// Decodes a record the state machine wrote itself; failure means corrupted state (a bug).
fn dec<T: BorshDeserialize>(bytes: &[u8]) -> T {
    borsh::from_slice(bytes).expect("market state records decode")
}

fn owner_group(a: &Address) -> u64 {
    u64::from_be_bytes(a.0[..8].try_into().expect("8 bytes"))
}

pub fn config_key() -> Vec<u8> {
    kv::key(TAG_CONFIG, 0, &[])
}

fn meta_key() -> Vec<u8> {
    kv::key(TAG_META, 0, &[])
}

fn open_key(slot: u64) -> Vec<u8> {
    kv::key(TAG_OPEN, 0, &slot.to_be_bytes())
}

pub fn order_key(slot: u64, id: u64) -> Vec<u8> {
    kv::key(TAG_ORDER, slot, &id.to_be_bytes())
}

pub fn orders_prefix(slot: u64) -> Vec<u8> {
    kv::key(TAG_ORDER, slot, &[])
}

pub fn slot_key(slot: u64) -> Vec<u8> {
    kv::key(TAG_SLOT, slot, &[])
}

pub fn trade_key(slot: u64, index: u32) -> Vec<u8> {
    kv::key(TAG_TRADE, slot, &index.to_be_bytes())
}

pub fn trades_prefix(slot: u64) -> Vec<u8> {
    kv::key(TAG_TRADE, slot, &[])
}

fn due_key(tag: u8, due_ms: u64, slot: u64) -> Vec<u8> {
    let mut rest = due_ms.to_be_bytes().to_vec();
    rest.extend_from_slice(&slot.to_be_bytes());
    kv::key(tag, 0, &rest)
}

fn device_key(owner: &Address, index: u32) -> Vec<u8> {
    let mut rest = owner.0.to_vec();
    rest.extend_from_slice(&index.to_be_bytes());
    kv::key(TAG_DEVICE, owner_group(owner), &rest)
}

pub fn devices_prefix(owner: &Address) -> Vec<u8> {
    kv::key(TAG_DEVICE, owner_group(owner), &owner.0)
}

pub fn envelope_key(slot: u64, location: &str) -> Vec<u8> {
    kv::key(
        TAG_ENVELOPE,
        slot,
        blake3::hash(location.as_bytes()).as_bytes(),
    )
}

pub fn envelopes_prefix(slot: u64) -> Vec<u8> {
    kv::key(TAG_ENVELOPE, slot, &[])
}

pub fn grid_mode_key() -> Vec<u8> {
    kv::key(TAG_GRID_MODE, 0, &[])
}

pub fn grid_event_key(seq: u64) -> Vec<u8> {
    kv::key(TAG_GRID_EVENT, 0, &seq.to_be_bytes())
}

/// The islanding state the ledger holds.
pub fn grid_mode(o: &Overlay<'_>) -> GridMode {
    o.kv_get(&grid_mode_key())
        .map(|b| dec(&b))
        .unwrap_or(GridMode {
            last: None,
            since_ms: 0,
            events: 0,
        })
}

pub fn reading_key(slot: u64, who: &Address) -> Vec<u8> {
    kv::key(TAG_READING, slot, &who.0)
}

pub fn readings_prefix(slot: u64) -> Vec<u8> {
    kv::key(TAG_READING, slot, &[])
}

fn seller_key(slot: u64, who: &Address) -> Vec<u8> {
    kv::key(TAG_SELLER, slot, &who.0)
}

/// The market configuration stored at genesis (the default if none was).
pub fn config(o: &mut Overlay<'_>) -> MarketConfig {
    if let Some(c) = &o.market_config {
        return c.clone();
    }
    let c = o
        .kv_get(&config_key())
        .map(|b| dec::<MarketConfig>(&b))
        .unwrap_or_default();
    o.market_config = Some(c.clone());
    c
}

/// The market configuration stored in a committed state (the default if none was).
pub fn stored_config(kv: &kv::KvSpace) -> MarketConfig {
    kv.get(&config_key()).map(dec).unwrap_or_default()
}

/// Decodes a market record read from the state (API views, benchmarks).
pub fn decode<T: BorshDeserialize>(bytes: &[u8]) -> T {
    dec(bytes)
}

/// The key/value entry that stores `config` at genesis.
pub fn genesis_entry(config: &MarketConfig) -> (Vec<u8>, Vec<u8>) {
    (config_key(), enc(config))
}

fn owned_device_key(owner: &Address, device: &Address) -> Vec<u8> {
    let mut rest = owner.0.to_vec();
    rest.extend_from_slice(&device.0);
    kv::key(TAG_OWNED_DEVICE, owner_group(owner), &rest)
}

pub fn owned_devices_prefix(owner: &Address) -> Vec<u8> {
    kv::key(TAG_OWNED_DEVICE, owner_group(owner), &owner.0)
}

/// The devices with their own keys an account owns (any status).
pub fn owned_devices(o: &Overlay<'_>, owner: &Address) -> Vec<(Address, DeviceIdentity)> {
    o.kv_scan(&owned_devices_prefix(owner))
        .into_iter()
        .map(|(k, _)| {
            let device = Address(k[k.len() - 32..].try_into().expect("owned device key"));
            let id = dec(&o
                .kv_get(&device_key_key(&device))
                .expect("an owned device exists"));
            (device, id)
        })
        .collect()
}

/// An owner's devices, with or without their own keys, as the market checks them.
struct OwnerCapacity {
    /// Whether the owner has any device (any status).
    any: bool,
    /// Most energy its producing devices (keyed ones when active) deliver in one slot.
    producing_mwh: u64,
}

/// One pass over the owner's devices (on the path of every ask and reading: no copies).
fn owner_capacity(o: &Overlay<'_>, owner: &Address) -> OwnerCapacity {
    let mut c = OwnerCapacity {
        any: false,
        producing_mwh: 0,
    };
    o.kv_visit(&devices_prefix(owner), |_, v| {
        let d: Device = dec(v);
        c.any = true;
        if d.kind.produces() {
            c.producing_mwh = c
                .producing_mwh
                .saturating_add(u64::from(d.capacity_w) * MWH_PER_W_PER_SLOT);
        }
    });
    let mut keyed = Vec::new();
    o.kv_visit(&owned_devices_prefix(owner), |k, _| {
        keyed.push(Address(
            k[k.len() - 32..].try_into().expect("owned device key"),
        ))
    });
    for device in keyed {
        c.any = true;
        let d: DeviceIdentity = dec(&o
            .kv_get(&device_key_key(&device))
            .expect("an owned device exists"));
        if d.status == DeviceStatus::Active && d.info.kind.produces() {
            c.producing_mwh = c
                .producing_mwh
                .saturating_add(u64::from(d.info.capacity_w) * MWH_PER_W_PER_SLOT);
        }
    }
    c
}

/// The proof-of-generation check of a slot's device readings (at its settlement): PV readings
/// through `gridmesh_physics::pog::check_slot` (register, rating, clear sky, neighbours by the
/// first level of their market area), other devices through the register and rating checks.
/// Every reading becomes accepted or held with its reason; accepted output is summed per owner
/// (the cap on what the owner is paid for as a seller).
fn check_device_readings(o: &mut Overlay<'_>, slot: u64) {
    use gridmesh_physics::pog::{PvSite, SlotReading};
    let entries: Vec<(Address, DeviceReadingRecord)> = o
        .kv_scan(&device_readings_prefix(slot))
        .into_iter()
        .map(|(k, v)| {
            (
                Address(k[kv::GROUP_LEN..].try_into().expect("device reading key")),
                dec(&v),
            )
        })
        .filter(|(_, r): &(Address, DeviceReadingRecord)| r.status == ReadingStatus::Pending)
        .collect();
    if entries.is_empty() {
        return;
    }
    let ids: Vec<DeviceIdentity> = entries
        .iter()
        .map(|(d, _)| {
            dec(&o
                .kv_get(&device_key_key(d))
                .expect("a reading's device is registered"))
        })
        .collect();
    let mut neighbourhoods: std::collections::BTreeMap<String, u32> = Default::default();
    let mut sites = Vec::new();
    let mut pv_readings = Vec::new();
    let mut pv_index = Vec::new();
    let mut held: Vec<Option<HoldReason>> = vec![None; entries.len()];
    let start_s = (slot_start_ms(slot) / 1000) as i64;
    let duration_s = (SLOT_MS / 1000) as u32;
    for (i, ((_, r), id)) in entries.iter().zip(&ids).enumerate() {
        if id.info.kind == DeviceKind::Pv {
            let top = id.info.location.split('/').next().unwrap_or("").to_string();
            let n = neighbourhoods.len() as u32;
            let neighbourhood = *neighbourhoods.entry(top).or_insert(n);
            sites.push(PvSite {
                rated_w: u64::from(id.info.capacity_w),
                observer: gridmesh_physics::Observer::at(
                    f64::from(id.info.latitude_microdeg) / 1e6,
                    f64::from(id.info.longitude_microdeg) / 1e6,
                    0.0,
                ),
                tilt_deg: f64::from(id.info.tilt_deg),
                azimuth_deg: f64::from(id.info.azimuth_deg),
                neighbourhood,
            });
            pv_readings.push(SlotReading {
                site: sites.len() - 1,
                energy_mwh: r.energy_out_mwh,
                register_mwh: r.register_mwh,
            });
            pv_index.push(i);
        } else {
            if let Some(last) = id.register_mwh {
                if r.register_mwh != last.saturating_add(r.energy_out_mwh) {
                    held[i] = Some(HoldReason::RegisterMismatch {
                        expected_mwh: last.saturating_add(r.energy_out_mwh),
                    });
                }
            }
            let max_mwh = u64::from(id.info.capacity_w) * MWH_PER_W_PER_SLOT;
            if held[i].is_none() && r.energy_out_mwh.max(r.energy_in_mwh) > max_mwh {
                held[i] = Some(HoldReason::AboveRating { max_mwh });
            }
        }
    }
    let pv_held = pog::check_slot(&sites, start_s, duration_s, &pv_readings, |s| {
        ids[pv_index[s]].register_mwh
    });
    for (k, h) in pv_index.iter().zip(pv_held) {
        // The site checks never hold for an area: no feeder-head meter to name.
        held[*k] = h.map(|h| {
            debug_assert!(!matches!(h, pog::Hold::AreaConservation { .. }));
            HoldReason::of(h, Address([0; 32]))
        });
    }
    let market = config(o);
    // Conservation per area against the grid operator's feeder-head meters: a meter of the grid
    // operator measures the area named by its location; the homes' meters in that area may not
    // claim more export than it allows. A violation holds the area's meter and producing-device
    // readings (the check names no culprit).
    for (h, ((head_device, head), head_id)) in entries.iter().zip(&ids).enumerate() {
        if head_id.info.kind != DeviceKind::Meter || head_id.owner != market.grid_operator {
            continue;
        }
        let area = head_id.info.location.as_str();
        let members: Vec<usize> = (0..entries.len())
            .filter(|&j| {
                let loc = ids[j].info.location.as_str();
                j != h && ids[j].owner != market.grid_operator && mk::area_contains(area, loc)
            })
            .collect();
        let (mut import, mut export) = (0u64, 0u64);
        for &j in &members {
            if ids[j].info.kind == DeviceKind::Meter {
                import = import.saturating_add(entries[j].1.energy_in_mwh);
                export = export.saturating_add(entries[j].1.energy_out_mwh);
            }
        }
        if let Some(v) =
            pog::area_conservation(head.energy_out_mwh, head.energy_in_mwh, import, export)
        {
            for &j in &members {
                let kind = ids[j].info.kind;
                if held[j].is_none() && (kind == DeviceKind::Meter || kind.produces()) {
                    held[j] = Some(HoldReason::of(v, *head_device));
                }
            }
        }
    }
    let mut verified: std::collections::BTreeMap<Address, u64> = Default::default();
    for (((device, mut r), mut id), h) in entries.into_iter().zip(ids).zip(held) {
        let owner_total = verified.entry(r.owner).or_insert(0);
        r.status = match h {
            Some(reason) => ReadingStatus::Held { reason },
            None => {
                *owner_total = owner_total.saturating_add(r.energy_out_mwh);
                // Flexibility the network asked for, weighted by what it is worth to the grid.
                if let Some(req) = crate::economics::flex_request(o, slot, &id.info.location) {
                    let mwh = crate::economics::flexibility_delivered(
                        id.info.kind,
                        req,
                        r.energy_out_mwh,
                        r.energy_in_mwh,
                    );
                    let value = mk::value_floor(mwh, req.value_per_kwh);
                    crate::economics::add_points(o, &market, slot, &r.owner, 0, mwh, value);
                }
                ReadingStatus::Accepted
            }
        };
        // The next reading must continue from this one's register, held or not: a register
        // that jumps is caught at the next step too.
        id.register_mwh = Some(r.register_mwh);
        o.kv_put(device_key_key(&device), enc(&id));
        o.kv_put(device_reading_key(slot, &device), enc(&r));
    }
    for (owner, mwh) in verified {
        o.kv_put(verified_export_key(slot, &owner), enc(&mwh));
    }
}

/// The sender's active device registered with its own key.
fn own_active_device(
    o: &Overlay<'_>,
    sender: &Address,
    device: &Address,
) -> Result<DeviceIdentity, MarketTxError> {
    let d: DeviceIdentity = o
        .kv_get(&device_key_key(device))
        .map(|b| dec(&b))
        .ok_or(MarketTxError::UnknownDevice(*device))?;
    if d.owner != *sender {
        return Err(MarketTxError::NotYourDevice(*device));
    }
    match d.status {
        DeviceStatus::Active => Ok(d),
        DeviceStatus::Decommissioned => Err(MarketTxError::DeviceDecommissioned(*device)),
        DeviceStatus::Slashed => Err(MarketTxError::DeviceSlashed(*device)),
    }
}

/// Whether `slot` still takes orders (and envelopes) at `now_ms`: before its gate closure and no
/// more than 7 days ahead.
fn check_open(cfg: &MarketConfig, slot: u64, now_ms: u64) -> Result<(), MarketTxError> {
    let gate_ms = cfg.gate_closure_ms(slot);
    if now_ms >= gate_ms {
        return Err(MarketTxError::GateClosed {
            slot,
            gate_ms,
            now_ms,
        });
    }
    let max_slot = slot_of(now_ms) + MAX_SLOTS_AHEAD;
    if slot > max_slot {
        return Err(MarketTxError::SlotTooFar { slot, max_slot });
    }
    Ok(())
}

/// Applies a market or device transaction (not a transfer) of `sender`. Everything is checked
/// before the first write; the caller increments the nonce.
pub(crate) fn apply(
    o: &mut Overlay<'_>,
    sender: Address,
    kind: &TxKind,
    ctx: &TxContext,
) -> Result<Vec<Event>, TxError> {
    let cfg = config(o);
    let now = ctx.timestamp_ms;
    match kind {
        TxKind::Transfer { .. } => unreachable!("transfers are applied by the state"),
        TxKind::ReportFraud { .. }
        | TxKind::DismissDispute { .. }
        | TxKind::RequestFlexibility { .. }
        | TxKind::CreateAsset { .. }
        | TxKind::TransferShares { .. } => {
            unreachable!("economics transactions are applied by crate::economics")
        }
        TxKind::RegisterDevice { kind, capacity_w } => {
            let n = o.kv_scan(&devices_prefix(&sender)).len() as u32;
            if n >= MAX_DEVICES_PER_OWNER {
                return Err(MarketTxError::TooManyDevices.into());
            }
            o.kv_put(
                device_key(&sender, n),
                enc(&Device {
                    kind: *kind,
                    capacity_w: *capacity_w,
                }),
            );
            Ok(vec![Event::DeviceRegistered { index: n }])
        }
        TxKind::PlaceOrder {
            slot,
            side,
            energy_mwh,
            price_per_kwh,
            location,
        } => {
            let (slot, energy_mwh, price) = (*slot, *energy_mwh, *price_per_kwh);
            check_open(&cfg, slot, now)?;
            if energy_mwh > mk::MAX_ORDER_MWH {
                return Err(MarketTxError::EnergyTooLarge(energy_mwh).into());
            }
            if price > mk::MAX_PRICE_PER_KWH {
                return Err(MarketTxError::PriceTooHigh(price).into());
            }
            if !location.is_empty() {
                Areas::from_paths([location.as_str()], &[])
                    .map_err(|e| MarketTxError::BadLocation(e.to_string()))?;
            }
            let open: u32 = o.kv_get(&open_key(slot)).map(|b| dec(&b)).unwrap_or(0);
            if open >= MAX_ORDERS_PER_SLOT {
                return Err(MarketTxError::SlotFull(slot).into());
            }
            let escrow = match side {
                Side::Bid => {
                    let max_mwh = cfg.max_import_w.saturating_mul(MWH_PER_W_PER_SLOT);
                    if energy_mwh > max_mwh {
                        return Err(MarketTxError::BidAboveImportLimit {
                            energy_mwh,
                            max_mwh,
                        }
                        .into());
                    }
                    value_ceil(energy_mwh, price)
                }
                Side::Ask => {
                    let max_mwh = owner_capacity(o, &sender).producing_mwh;
                    if max_mwh == 0 {
                        return Err(MarketTxError::NoProducingDevice.into());
                    }
                    if energy_mwh > max_mwh {
                        return Err(MarketTxError::AskAboveCapacity {
                            energy_mwh,
                            max_mwh,
                        }
                        .into());
                    }
                    value_ceil(energy_mwh, cfg.shortfall_price(slot).saturating_sub(price))
                }
            };
            // The only step that can fail from here on; it changes nothing if it does.
            o.move_funds(sender, escrow_account(), Amount(escrow))?;
            let mut meta: Meta = o.kv_get(&meta_key()).map(|b| dec(&b)).unwrap_or_default();
            let order_id = meta.next_order_id;
            meta.next_order_id += 1;
            o.kv_put(meta_key(), enc(&meta));
            o.kv_put(open_key(slot), enc(&(open + 1)));
            o.kv_put(
                order_key(slot, order_id),
                enc(&OrderRecord {
                    owner: sender,
                    side: *side,
                    energy_mwh,
                    price_per_kwh: price,
                    location: location.clone(),
                    time: ctx.arrival(),
                    escrow,
                    traded_mwh: 0,
                    status: OrderStatus::Open,
                }),
            );
            Ok(vec![Event::OrderPlaced {
                slot,
                order_id,
                escrow: Amount(escrow),
            }])
        }
        TxKind::CancelOrder { slot, order_id } => {
            let (slot, order_id) = (*slot, *order_id);
            let Some(bytes) = o.kv_get(&order_key(slot, order_id)) else {
                return Err(MarketTxError::UnknownOrder { slot, order_id }.into());
            };
            let rec: OrderRecord = dec(&bytes);
            if rec.owner != sender {
                return Err(MarketTxError::NotYourOrder(order_id).into());
            }
            if rec.status != OrderStatus::Open {
                return Err(MarketTxError::OrderNotOpen(order_id).into());
            }
            let gate_ms = cfg.gate_closure_ms(slot);
            if now >= gate_ms {
                return Err(MarketTxError::GateClosed {
                    slot,
                    gate_ms,
                    now_ms: now,
                }
                .into());
            }
            o.move_funds(escrow_account(), sender, Amount(rec.escrow))
                .expect("escrow holds every open order's escrow");
            o.kv_delete(order_key(slot, order_id));
            let open: u32 = o.kv_get(&open_key(slot)).map(|b| dec(&b)).unwrap_or(1);
            if open <= 1 {
                o.kv_delete(open_key(slot));
            } else {
                o.kv_put(open_key(slot), enc(&(open - 1)));
            }
            Ok(vec![Event::OrderCancelled {
                slot,
                order_id,
                refund: Amount(rec.escrow),
            }])
        }
        TxKind::SubmitReading {
            slot,
            import_mwh,
            export_mwh,
        } => {
            let (slot, import_mwh, export_mwh) = (*slot, *import_mwh, *export_mwh);
            let ends_ms = slot_start_ms(slot + 1);
            if now < ends_ms {
                return Err(MarketTxError::SlotNotEnded { slot, ends_ms }.into());
            }
            let deadline_ms = cfg.final_ms(slot);
            if now >= deadline_ms {
                return Err(MarketTxError::ReadingTooLate { slot, deadline_ms }.into());
            }
            let capacity = owner_capacity(o, &sender);
            if !capacity.any {
                return Err(MarketTxError::NoDevice.into());
            }
            let max_export = capacity.producing_mwh;
            if export_mwh > max_export {
                return Err(MarketTxError::ExportAboveCapacity {
                    export_mwh,
                    max_mwh: max_export,
                }
                .into());
            }
            let max_import = cfg.max_import_w.saturating_mul(MWH_PER_W_PER_SLOT);
            if import_mwh > max_import {
                return Err(MarketTxError::ImportAboveLimit {
                    import_mwh,
                    max_mwh: max_import,
                }
                .into());
            }
            let position: Option<SellerPosition> =
                o.kv_get(&seller_key(slot, &sender)).map(|b| dec(&b));
            if matches!(&position, Some(p) if p.status == SettlementStatus::Final) {
                return Err(MarketTxError::AlreadySettled(slot).into());
            }
            o.kv_put(
                reading_key(slot, &sender),
                enc(&Reading {
                    import_mwh,
                    export_mwh,
                    height: ctx.height,
                }),
            );
            let mut settled_trades = 0;
            if let Some(p) = position {
                if p.status == SettlementStatus::Provisional {
                    // A late reading: settle for good with what was metered.
                    settled_trades = p.trades.len() as u32;
                    settle_for_good(
                        o,
                        &cfg,
                        slot,
                        &sender,
                        p,
                        export_mwh,
                        SettlementBasis::LateReading,
                    );
                    let mut rec: SlotRecord = dec(&o
                        .kv_get(&slot_key(slot))
                        .expect("a settled slot has a record"));
                    rec.provisional_sellers -= 1;
                    if rec.provisional_sellers == 0 {
                        rec.settlement = SettlementStatus::Final;
                        o.kv_delete(due_key(TAG_FINAL_DUE, cfg.final_ms(slot), slot));
                    }
                    o.kv_put(slot_key(slot), enc(&rec));
                }
            }
            Ok(vec![Event::ReadingRecorded {
                slot,
                settled_trades,
            }])
        }
        TxKind::SetEnvelope {
            slot,
            location,
            import_mwh,
            export_mwh,
        } => {
            if sender != cfg.grid_operator {
                return Err(MarketTxError::NotGridOperator.into());
            }
            let slot = *slot;
            check_open(&cfg, slot, now)?;
            if !location.is_empty() {
                Areas::from_paths([location.as_str()], &[])
                    .map_err(|e| MarketTxError::BadLocation(e.to_string()))?;
            }
            o.kv_put(
                envelope_key(slot, location),
                enc(&EnvelopeRecord {
                    location: location.clone(),
                    import_mwh: *import_mwh,
                    export_mwh: *export_mwh,
                }),
            );
            Ok(vec![Event::EnvelopeSet { slot }])
        }
        TxKind::RegisterDeviceKey {
            device,
            info,
            bond,
            device_signature,
        } => {
            if o.kv_get(&device_key_key(device)).is_some() {
                return Err(MarketTxError::DeviceExists(*device).into());
            }
            if owned_devices(o, &sender).len() >= MAX_DEVICES_PER_OWNER as usize {
                return Err(MarketTxError::TooManyDevices.into());
            }
            if bond.0 < cfg.min_device_bond {
                return Err(MarketTxError::BondTooSmall {
                    got: bond.0,
                    min: cfg.min_device_bond,
                }
                .into());
            }
            if !info.location.is_empty() {
                Areas::from_paths([info.location.as_str()], &[])
                    .map_err(|e| MarketTxError::BadLocation(e.to_string()))?;
            }
            let message = crate::tx::device_registration_message(ctx.chain_id, &sender, info);
            crate::crypto::verify_one(device, &message, device_signature)
                .map_err(|_| MarketTxError::BadDeviceSignature)?;
            // The bond moves last: everything above is checked, and a short balance fails here
            // before anything is written.
            o.move_funds(sender, device_bond_account(), *bond)?;
            o.kv_put(
                device_key_key(device),
                enc(&DeviceIdentity {
                    owner: sender,
                    info: info.clone(),
                    bond: bond.0,
                    registered_height: ctx.height,
                    status: DeviceStatus::Active,
                    register_mwh: None,
                }),
            );
            o.kv_put(owned_device_key(&sender, device), Vec::new());
            Ok(vec![Event::DeviceKeyRegistered { device: *device }])
        }
        TxKind::TransferDevice { device, to } => {
            let mut d = own_active_device(o, &sender, device)?;
            if *to == sender {
                return Err(MarketTxError::TransferToSelf.into());
            }
            if owned_devices(o, to).len() >= MAX_DEVICES_PER_OWNER as usize {
                return Err(MarketTxError::TooManyDevices.into());
            }
            d.owner = *to;
            o.kv_put(device_key_key(device), enc(&d));
            o.kv_delete(owned_device_key(&sender, device));
            o.kv_put(owned_device_key(to, device), Vec::new());
            Ok(vec![Event::DeviceTransferred {
                device: *device,
                to: *to,
            }])
        }
        TxKind::DecommissionDevice { device } => {
            // A slashed device may be retired too: what is left of its bond returns.
            let mut d = match own_active_device(o, &sender, device) {
                Err(MarketTxError::DeviceSlashed(_)) => {
                    dec(&o.kv_get(&device_key_key(device)).expect("checked above"))
                }
                other => other?,
            };
            o.move_funds(device_bond_account(), sender, Amount(d.bond))
                .expect("the bond account holds every active device's bond");
            let refund = d.bond;
            d.bond = 0;
            d.status = DeviceStatus::Decommissioned;
            o.kv_put(device_key_key(device), enc(&d));
            o.kv_delete(owned_device_key(&sender, device));
            Ok(vec![Event::DeviceDecommissioned {
                device: *device,
                refund: Amount(refund),
            }])
        }
        TxKind::SubmitDeviceReadings { readings } => {
            let mut seen = std::collections::BTreeSet::new();
            let mut records = Vec::with_capacity(readings.len());
            for r in readings {
                let d: DeviceIdentity = o
                    .kv_get(&device_key_key(&r.device))
                    .map(|b| dec(&b))
                    .ok_or(MarketTxError::UnknownDevice(r.device))?;
                match d.status {
                    DeviceStatus::Active => {}
                    DeviceStatus::Decommissioned => {
                        return Err(MarketTxError::DeviceDecommissioned(r.device).into())
                    }
                    DeviceStatus::Slashed => {
                        return Err(MarketTxError::DeviceSlashed(r.device).into())
                    }
                }
                let message = crate::tx::device_reading_message(ctx.chain_id, r);
                crate::crypto::verify_one(&r.device, &message, &r.signature)
                    .map_err(|_| MarketTxError::BadReadingSignature(r.device))?;
                let ends_ms = slot_start_ms(r.slot + 1);
                if now < ends_ms {
                    return Err(MarketTxError::SlotNotEnded {
                        slot: r.slot,
                        ends_ms,
                    }
                    .into());
                }
                let deadline_ms = cfg.settlement_ms(r.slot);
                if now >= deadline_ms {
                    return Err(MarketTxError::ReadingTooLate {
                        slot: r.slot,
                        deadline_ms,
                    }
                    .into());
                }
                if !seen.insert((r.slot, r.device))
                    || o.kv_get(&device_reading_key(r.slot, &r.device)).is_some()
                {
                    return Err(MarketTxError::DuplicateDeviceReading {
                        device: r.device,
                        slot: r.slot,
                    }
                    .into());
                }
                for x in [r.energy_out_mwh, r.energy_in_mwh] {
                    if x > mk::MAX_ORDER_MWH {
                        return Err(MarketTxError::EnergyTooLarge(x).into());
                    }
                }
                records.push((
                    device_reading_key(r.slot, &r.device),
                    DeviceReadingRecord {
                        owner: d.owner,
                        energy_out_mwh: r.energy_out_mwh,
                        energy_in_mwh: r.energy_in_mwh,
                        register_mwh: r.register_mwh,
                        raw_root: r.raw_root,
                        raw_count: r.raw_count,
                        height: ctx.height,
                        status: ReadingStatus::Pending,
                    },
                ));
            }
            let count = records.len() as u32;
            for (k, rec) in records {
                o.kv_put(k, enc(&rec));
            }
            // The check runs when the slot settles, traded or not.
            for slot in seen.iter().map(|(slot, _)| *slot) {
                o.kv_put(
                    due_key(TAG_SETTLE_DUE, cfg.settlement_ms(slot), slot),
                    Vec::new(),
                );
            }
            Ok(vec![Event::DeviceReadingsRecorded { count }])
        }
        TxKind::GridEvent { event, at_ms } => {
            if sender != cfg.grid_operator {
                return Err(MarketTxError::NotGridOperator.into());
            }
            let mode = grid_mode(o);
            let ok = matches!(
                (mode.last, event),
                (
                    None | Some(GridEventKind::Reconnected),
                    GridEventKind::Islanded
                ) | (
                    Some(GridEventKind::Resynchronising),
                    GridEventKind::Islanded
                ) | (
                    Some(GridEventKind::Islanded),
                    GridEventKind::Resynchronising
                ) | (
                    Some(GridEventKind::Resynchronising),
                    GridEventKind::Reconnected
                )
            );
            if !ok {
                return Err(MarketTxError::BadGridTransition {
                    last: mode.last,
                    event: *event,
                }
                .into());
            }
            if *at_ms < mode.since_ms || *at_ms > now {
                return Err(MarketTxError::GridEventTime {
                    at_ms: *at_ms,
                    since_ms: mode.since_ms,
                    now_ms: now,
                }
                .into());
            }
            let seq = mode.events;
            o.kv_put(
                grid_event_key(seq),
                enc(&GridEventRecord {
                    event: *event,
                    at_ms: *at_ms,
                    height: ctx.height,
                }),
            );
            o.kv_put(
                grid_mode_key(),
                enc(&GridMode {
                    last: Some(*event),
                    since_ms: *at_ms,
                    events: seq + 1,
                }),
            );
            Ok(vec![Event::GridEvent { seq }])
        }
    }
}

/// The earliest time a block has market work to do without any transaction (a gate closing, a
/// settlement or a deadline), so an engine that skips empty blocks still makes that block.
pub fn next_due_ms(state: &crate::State) -> Option<u64> {
    let kv = state.kv();
    let cfg = stored_config(kv);
    let open_prefix = kv::key(TAG_OPEN, 0, &[]);
    let gate = kv.scan(&open_prefix).next().map(|(k, _)| {
        cfg.gate_closure_ms(u64::from_be_bytes(
            k[kv::GROUP_LEN..].try_into().expect("slot key"),
        ))
    });
    let due = |tag: u8| {
        let prefix = kv::key(tag, 0, &[]);
        let first = kv
            .scan(&prefix)
            .next()
            .map(|(k, _)| u64::from_be_bytes(k[9..17].try_into().expect("due key")));
        first
    };
    [
        gate,
        due(TAG_SETTLE_DUE),
        due(TAG_FINAL_DUE),
        due(TAG_PRUNE_DUE),
        crate::economics::next_due_ms(kv),
    ]
    .into_iter()
    .flatten()
    .min()
}

/// Runs before a block's transactions: clears every slot whose gate has closed, settles every
/// slot whose correction window has ended, and makes final the estimates whose late window has.
pub fn begin_block(o: &mut Overlay<'_>, height: u64, timestamp_ms: u64) {
    let cfg = config(o);
    let open = o.kv_scan(&kv::key(TAG_OPEN, 0, &[]));
    for (k, _) in open {
        let slot = u64::from_be_bytes(k[kv::GROUP_LEN..].try_into().expect("slot key"));
        if cfg.gate_closure_ms(slot) > timestamp_ms {
            break; // keys are in slot order
        }
        clear_slot(o, &cfg, slot, height);
    }
    // Settlement, then finality, then pruning: each due index in due order.
    for tag in [TAG_SETTLE_DUE, TAG_FINAL_DUE, TAG_PRUNE_DUE] {
        for (k, _) in o.kv_scan(&kv::key(tag, 0, &[])) {
            let due = u64::from_be_bytes(k[9..17].try_into().expect("due key"));
            let slot = u64::from_be_bytes(k[17..25].try_into().expect("due key"));
            if due > timestamp_ms {
                break;
            }
            o.kv_delete(k);
            match tag {
                TAG_SETTLE_DUE => settle_slot(o, &cfg, slot),
                TAG_FINAL_DUE => finalize_slot(o, &cfg, slot),
                _ => prune_slot(o, slot),
            }
        }
    }
}

/// Removes a slot's records from the state (`history_days` after it became final): its orders,
/// clearing record, trades, readings, seller positions, envelopes, device readings, verified
/// export and flexibility requests. Nothing of it can change any more: settlement, estimates,
/// disputes and the epoch's rewards are done by then (the genesis checks the window covers them).
fn prune_slot(o: &mut Overlay<'_>, slot: u64) {
    for tag in [
        TAG_ORDER,
        TAG_SLOT,
        TAG_TRADE,
        TAG_READING,
        TAG_SELLER,
        TAG_ENVELOPE,
        TAG_DEVICE_READING,
        TAG_VERIFIED_EXPORT,
    ] {
        for (k, _) in o.kv_scan(&kv::key(tag, slot, &[])) {
            o.kv_delete(k);
        }
    }
    crate::economics::prune_slot(o, slot);
}

fn clear_slot(o: &mut Overlay<'_>, cfg: &MarketConfig, slot: u64, height: u64) {
    o.kv_delete(open_key(slot));
    if cfg.history_days > 0 {
        o.kv_put(due_key(TAG_PRUNE_DUE, cfg.prune_ms(slot), slot), Vec::new());
    }
    let records: Vec<(u64, OrderRecord)> = o
        .kv_scan(&orders_prefix(slot))
        .into_iter()
        .map(|(k, v)| {
            let id = u64::from_be_bytes(k[kv::GROUP_LEN..].try_into().expect("order key"));
            (id, dec::<OrderRecord>(&v))
        })
        .filter(|(_, r)| r.status == OrderStatus::Open)
        .collect();
    let tariff = cfg.tariff(slot);
    let shortfall = cfg.shortfall_price(slot);
    // Areas from the orders' locations (in order-id order, so the tree is the same everywhere).
    // More distinct locations than one hierarchy holds: one market with the root's fee.
    let areas = Areas::from_paths(
        records.iter().map(|(_, r)| r.location.as_str()),
        &cfg.grid_fees,
    )
    .unwrap_or_else(|_| Areas::with_root_fee(cfg.grid_fees.first().copied().unwrap_or_default()));
    // Island rules while the PCC breaker is open: no utility counterparty, bids clear at most at
    // the island price cap (scarcity pricing, bounded); the community mechanism, which needs the
    // utility's prices, clears pay-as-clear.
    let island = grid_mode(o).is_islanded();
    let orders: Vec<Order> = records
        .iter()
        .map(|(id, r)| Order {
            id: *id,
            side: r.side,
            energy_mwh: r.energy_mwh,
            price_per_kwh: if island && r.side == Side::Bid {
                r.price_per_kwh.min(cfg.island_price_cap_per_kwh)
            } else {
                r.price_per_kwh
            },
            time: r.time,
            area: areas.find(&r.location).unwrap_or(0),
        })
        .collect();
    // The grid operator's envelopes: each connection's orders trimmed to what it may import and
    // export (envelopes for locations without orders change nothing).
    let limits: std::collections::BTreeMap<u32, mk::AreaLimit> = o
        .kv_scan(&envelopes_prefix(slot))
        .into_iter()
        .map(|(_, v)| dec::<EnvelopeRecord>(&v))
        .filter_map(|e| {
            let area = areas.find(&e.location)?;
            // Only a connection's own market: with more locations than one hierarchy holds,
            // every order sits in the root and an envelope cannot tell them apart.
            (areas.path(area) == e.location).then_some((
                area,
                mk::AreaLimit {
                    import_mwh: e.import_mwh,
                    export_mwh: e.export_mwh,
                },
            ))
        })
        .collect();
    let orders = if limits.is_empty() {
        orders
    } else {
        mk::within_limits(&orders, &limits)
    };
    let (mechanism, utility_tariff) = match (island, cfg.mechanism) {
        (false, m) => (m, Some(tariff)),
        (true, Mechanism::Community) => (Mechanism::PayAsClear, None),
        (true, m) => (m, None),
    };
    // Every order was checked at placement (energy, price, location, count) and the tariff was
    // checked in the genesis, so clearing cannot refuse them.
    let clearing = mk::clear(&orders, &areas, mechanism, utility_tariff)
        .expect("orders were validated when placed");
    let index_of: std::collections::BTreeMap<u64, usize> = records
        .iter()
        .enumerate()
        .map(|(i, (id, _))| (*id, i))
        .collect();
    let mut held = vec![0u128; records.len()];
    let mut traded = vec![0u64; records.len()];
    let mut sellers: std::collections::BTreeMap<Address, Vec<u32>> = Default::default();
    for (i, t) in clearing.trades.iter().enumerate() {
        let (bi, ai) = (index_of[&t.bid], index_of[&t.ask]);
        let buyer_escrow = value_floor(t.energy_mwh, t.buyer_price_per_kwh);
        let seller_collateral = value_floor(
            t.energy_mwh,
            shortfall.saturating_sub(t.buyer_price_per_kwh),
        );
        held[bi] += buyer_escrow;
        held[ai] += seller_collateral;
        traded[bi] += t.energy_mwh;
        traded[ai] += t.energy_mwh;
        let seller = records[ai].1.owner;
        sellers.entry(seller).or_default().push(i as u32);
        o.kv_put(
            trade_key(slot, i as u32),
            enc(&TradeRecord {
                trade: *t,
                buyer: records[bi].1.owner,
                seller,
                buyer_escrow,
                seller_collateral,
                settlement: None,
            }),
        );
    }
    for (i, (id, r)) in records.iter().enumerate() {
        let release = r
            .escrow
            .checked_sub(held[i])
            .expect("an order's escrow covers its trades");
        o.move_funds(escrow_account(), r.owner, Amount(release))
            .expect("escrow holds every open order's escrow");
        let mut r = r.clone();
        r.escrow = 0;
        r.traded_mwh = traded[i];
        r.status = OrderStatus::Cleared;
        o.kv_put(order_key(slot, *id), enc(&r));
    }
    for (seller, trades) in sellers {
        o.kv_put(
            seller_key(slot, &seller),
            enc(&SellerPosition {
                trades,
                status: SettlementStatus::Pending,
            }),
        );
    }
    o.kv_put(
        slot_key(slot),
        enc(&SlotRecord {
            mechanism,
            cleared_at_height: height,
            tariff,
            shortfall_price_per_kwh: shortfall,
            orders: records.len() as u32,
            clearing_price_per_kwh: clearing.clearing_price_per_kwh,
            volume_mwh: clearing.volume_mwh,
            welfare: clearing.welfare,
            optimal_welfare: clearing.optimal_welfare,
            trades: clearing.trades.len() as u32,
            markets: clearing
                .markets
                .iter()
                .map(|m| MarketResult {
                    area: areas.path(m.area).to_string(),
                    price_per_kwh: m.price_per_kwh,
                    volume_mwh: m.volume_mwh,
                })
                .collect(),
            utility: clearing.utility,
            settlement: SettlementStatus::Pending,
            provisional_sellers: 0,
            island,
            envelopes: limits.len() as u32,
        }),
    );
    o.kv_put(
        due_key(TAG_SETTLE_DUE, cfg.settlement_ms(slot), slot),
        Vec::new(),
    );
}

fn settle_slot(o: &mut Overlay<'_>, cfg: &MarketConfig, slot: u64) {
    check_device_readings(o, slot);
    let Some(bytes) = o.kv_get(&slot_key(slot)) else {
        return;
    };
    let mut rec: SlotRecord = dec(&bytes);
    let positions = o.kv_scan(&kv::key(TAG_SELLER, slot, &[]));
    let mut provisional = 0u32;
    for (k, v) in positions {
        let seller = Address(k[kv::GROUP_LEN..].try_into().expect("seller key"));
        let p: SellerPosition = dec(&v);
        let reading: Option<Reading> = o.kv_get(&reading_key(slot, &seller)).map(|b| dec(&b));
        match reading {
            Some(r) => settle_for_good(
                o,
                cfg,
                slot,
                &seller,
                p,
                r.export_mwh,
                SettlementBasis::Reading,
            ),
            None => {
                provisional += 1;
                settle_by_estimate(o, slot, &seller, p);
            }
        }
    }
    rec.provisional_sellers = provisional;
    rec.settlement = if provisional > 0 {
        o.kv_put(due_key(TAG_FINAL_DUE, cfg.final_ms(slot), slot), Vec::new());
        SettlementStatus::Provisional
    } else {
        SettlementStatus::Final
    };
    o.kv_put(slot_key(slot), enc(&rec));
}

fn finalize_slot(o: &mut Overlay<'_>, cfg: &MarketConfig, slot: u64) {
    let Some(bytes) = o.kv_get(&slot_key(slot)) else {
        return;
    };
    let mut rec: SlotRecord = dec(&bytes);
    for (k, v) in o.kv_scan(&kv::key(TAG_SELLER, slot, &[])) {
        let p: SellerPosition = dec(&v);
        if p.status == SettlementStatus::Provisional {
            let seller = Address(k[kv::GROUP_LEN..].try_into().expect("seller key"));
            // The estimate becomes final: nothing was delivered.
            settle_for_good(o, cfg, slot, &seller, p, 0, SettlementBasis::Estimate);
        }
    }
    rec.provisional_sellers = 0;
    rec.settlement = SettlementStatus::Final;
    o.kv_put(slot_key(slot), enc(&rec));
}

/// Records a seller's trades as settled by the estimate "nothing delivered", provisionally:
/// the funds stay in escrow until a late reading or the end of the late window.
fn settle_by_estimate(o: &mut Overlay<'_>, slot: u64, seller: &Address, p: SellerPosition) {
    for &i in &p.trades {
        let mut t: TradeRecord = dec(&o.kv_get(&trade_key(slot, i)).expect("trade"));
        t.settlement = Some(settlement_of(&t, 0, SettlementBasis::ProvisionalEstimate));
        o.kv_put(trade_key(slot, i), enc(&t));
    }
    o.kv_put(
        seller_key(slot, seller),
        enc(&SellerPosition {
            trades: p.trades,
            status: SettlementStatus::Provisional,
        }),
    );
}

/// What a trade's settlement moves when `delivered_mwh` of it was delivered.
fn settlement_of(t: &TradeRecord, delivered_mwh: u64, basis: SettlementBasis) -> TradeSettlement {
    let tr = &t.trade;
    let shortfall = tr.energy_mwh - delivered_mwh;
    let buyer_paid = value_floor(delivered_mwh, tr.buyer_price_per_kwh);
    let seller_received = value_floor(delivered_mwh, tr.seller_price_per_kwh);
    let grid_fees = value_floor(delivered_mwh, tr.fee_per_kwh);
    let operator_received = buyer_paid - seller_received - grid_fees;
    // The collateral was sized as floor(energy × (shortfall price − buyer price)); compensation is
    // the shortfall's part of it.
    let compensation = if tr.energy_mwh == 0 {
        0
    } else {
        t.seller_collateral * u128::from(shortfall) / u128::from(tr.energy_mwh)
    };
    TradeSettlement {
        delivered_mwh,
        buyer_paid,
        seller_received,
        grid_fees,
        operator_received,
        buyer_refund: t.buyer_escrow - buyer_paid,
        compensation,
        collateral_returned: t.seller_collateral - compensation,
        basis,
    }
}

/// Splits `export_mwh` (capped at what was sold) over the seller's trades pro rata, moves the
/// money of each trade out of escrow and marks the position final.
fn settle_for_good(
    o: &mut Overlay<'_>,
    cfg: &MarketConfig,
    slot: u64,
    seller: &Address,
    p: SellerPosition,
    export_mwh: u64,
    basis: SettlementBasis,
) {
    let trades: Vec<TradeRecord> = p
        .trades
        .iter()
        .map(|&i| dec(&o.kv_get(&trade_key(slot, i)).expect("trade")))
        .collect();
    let energies: Vec<u64> = trades.iter().map(|t| t.trade.energy_mwh).collect();
    let sold: u64 = energies.iter().sum();
    // A seller whose devices report on the ledger is paid for no more than what they produced
    // and passed the proof-of-generation checks.
    let verified = o.kv_get(&verified_export_key(slot, seller));
    let export_mwh = match &verified {
        Some(b) => export_mwh.min(dec::<u64>(b)),
        None => export_mwh,
    };
    let delivered = mk::pro_rata(&energies, export_mwh.min(sold));
    if verified.is_some() {
        // Verified renewable energy delivered to neighbours, valued at the import it avoided.
        let mwh: u64 = delivered.iter().sum();
        let value = mk::value_floor(mwh, cfg.tariff(slot).retail_per_kwh);
        crate::economics::add_points(o, cfg, slot, seller, mwh, 0, value);
    }
    for ((&i, mut t), d) in p.trades.iter().zip(trades).zip(delivered) {
        let s = settlement_of(&t, d, basis);
        let e = escrow_account();
        let pay = |o: &mut Overlay<'_>, to: Address, amount: u128| {
            o.move_funds(e, to, Amount(amount))
                .expect("escrow holds every unsettled trade's funds");
        };
        pay(o, t.seller, s.seller_received + s.collateral_returned);
        crate::economics::note_revenue(o, cfg, slot, &t.seller, s.seller_received);
        pay(o, cfg.grid_operator, s.grid_fees);
        pay(o, cfg.market_operator, s.operator_received);
        pay(o, t.buyer, s.buyer_refund + s.compensation);
        t.settlement = Some(s);
        o.kv_put(trade_key(slot, i), enc(&t));
    }
    o.kv_put(
        seller_key(slot, seller),
        enc(&SellerPosition {
            trades: p.trades,
            status: SettlementStatus::Final,
        }),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a held reading, a settlement and a dispute store is the check and its numbers, never
    /// words: the bytes are pinned here, so no rewording of a message can reach a state root.
    #[test]
    fn state_holds_checks_and_numbers_not_words() {
        let held = ReadingStatus::Held {
            reason: HoldReason::AboveClearSky { bound_mwh: 1234 },
        };
        // Held = 2, AboveClearSky = 2, then the bound, little-endian.
        assert_eq!(
            borsh::to_vec(&held).unwrap(),
            [2, 2, 0xd2, 0x04, 0, 0, 0, 0, 0, 0]
        );
        let area = ReadingStatus::Held {
            reason: HoldReason::AreaConservation {
                head_meter: Address([7; 32]),
                claimed_mwh: 1,
                bound_mwh: 2,
            },
        };
        let bytes = borsh::to_vec(&area).unwrap();
        assert_eq!(bytes.len(), 1 + 1 + 32 + 8 + 8);
        assert_eq!(&bytes[..2], &[2, 4]);
        let finding = crate::economics::DisputeFinding::Physics {
            reason: HoldReason::AboveRating { max_mwh: 5 },
        };
        assert_eq!(
            borsh::to_vec(&finding).unwrap(),
            [1, 1, 5, 0, 0, 0, 0, 0, 0, 0]
        );
        let finding = crate::economics::DisputeFinding::Commitment {
            contradiction: crate::telemetry::Contradiction::LastSampleMismatch,
        };
        assert_eq!(borsh::to_vec(&finding).unwrap(), [0, 3]);
        // One basis instead of three flags: provisional estimate 0, reading 1, late 2, estimate 3.
        for (b, byte) in [
            (SettlementBasis::ProvisionalEstimate, 0u8),
            (SettlementBasis::Reading, 1),
            (SettlementBasis::LateReading, 2),
            (SettlementBasis::Estimate, 3),
        ] {
            assert_eq!(borsh::to_vec(&b).unwrap(), [byte]);
        }
        assert!(!SettlementBasis::ProvisionalEstimate.is_final());
        assert!(SettlementBasis::Estimate.is_final() && SettlementBasis::Estimate.is_estimated());
        assert!(SettlementBasis::LateReading.is_late() && !SettlementBasis::Reading.is_late());
    }

    #[test]
    fn only_hard_physics_holds_are_disputable() {
        let head = Address([1; 32]);
        assert!(HoldReason::RegisterMismatch { expected_mwh: 1 }.disputable());
        assert!(HoldReason::AboveRating { max_mwh: 1 }.disputable());
        assert!(HoldReason::AboveClearSky { bound_mwh: 1 }.disputable());
        assert!(!HoldReason::NeighbourOutlier {
            ratio_ppm: 1,
            expected_ppm: 1
        }
        .disputable());
        let area = pog::Hold::AreaConservation {
            claimed_mwh: 3,
            bound_mwh: 2,
        };
        let reason = HoldReason::of(area, head);
        assert!(!reason.disputable());
        assert_eq!(reason.hold(), area);
    }

    #[test]
    fn the_default_is_an_empty_section() {
        assert_eq!(
            toml::from_str::<MarketFile>("").unwrap(),
            MarketFile::default()
        );
    }

    fn file() -> MarketFile {
        toml::from_str(
            r#"
            mechanism = "huang"
            gate_closure_minutes = 10
            max_import_kw = "22.5"
            [[tariffs]]
            from_slot = 0
            retail_per_kwh = "0.30"
            feed_in_per_kwh = "0.08"
            [[tariffs]]
            from_slot = 68
            retail_per_kwh = "0.42"
            feed_in_per_kwh = "0.05"
            [[grid_fees]]
            constant_per_kwh = "0.02"
            percent = "1.5"
            "#,
        )
        .unwrap()
    }

    #[test]
    fn genesis_market_section_parses_with_time_of_use() {
        let c = file().to_config().unwrap();
        assert_eq!(c.mechanism, Mechanism::Huang);
        assert_eq!(c.gate_closure_minutes, 10);
        assert_eq!(c.correction_window_minutes, 60);
        assert_eq!(c.max_import_w, 22_500);
        assert_eq!(
            c.grid_fees[0],
            GridFee {
                constant_per_kwh: 20_000,
                percent_bps: 150
            }
        );
        // Slot 68 of the day is 17:00 UTC: the evening tariff.
        assert_eq!(c.tariff(96 * 10 + 67).retail_per_kwh, 300_000);
        assert_eq!(c.tariff(96 * 10 + 68).retail_per_kwh, 420_000);
        assert_eq!(c.shortfall_price(96 * 10 + 70), 420_000);
        assert_eq!(c.gate_closure_ms(4), 4 * 900_000 - 600_000);
    }

    #[test]
    fn bad_market_sections_say_what_is_wrong() {
        let mut f = file();
        f.mechanism = "lottery".into();
        assert!(f.to_config().unwrap_err().contains("unknown mechanism"));
        let mut f = file();
        f.tariffs[1].from_slot = 0;
        assert!(f.to_config().unwrap_err().contains("increasing"));
        let mut f = file();
        f.tariffs[0].feed_in_per_kwh = "0.50".into();
        assert!(f.to_config().unwrap_err().contains("feed-in"));
        let mut f = file();
        f.tariffs[0].retail_per_kwh = "abc".into();
        assert!(f
            .to_config()
            .unwrap_err()
            .contains("tariffs[0].retail_per_kwh"));
        let mut f = file();
        f.late_window_minutes = Some(5);
        assert!(f.to_config().unwrap_err().contains("late_window_minutes"));
        let mut f = file();
        f.grid_fees[0].percent = Some("150".into());
        assert!(f.to_config().unwrap_err().contains("above 100"));
        assert!(toml::from_str::<MarketFile>("mechanizm = \"huang\"").is_err());
    }
}
