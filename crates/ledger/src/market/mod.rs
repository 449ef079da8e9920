//! The energy market on the ledger: orders with escrow, clearing at gate closure, settlement of
//! what was metered. The clearing itself is `gridmesh-market`'s pure code; this module keeps the
//! orders, money and records in the state's key/value namespace.
//!
//! - [`orders`]: placing and cancelling orders with their escrow;
//! - [`clearing`]: the slot at gate closure, within the grid operator's envelopes;
//! - [`settlement`]: readings, settlement of what was metered, estimates and finality;
//! - [`records`]: what the state keeps of it; the rules are [`crate::config`].
//!
//! Knows nothing of rewards: settlement returns what it owes economics ([`Owed`]) and the
//! dispatcher hands it over. It reads devices (what an owner can produce, what was verified) and
//! the grid operator's envelopes and mode.
//!
//! # Life of a slot
//! 1. **Orders** (`PlaceOrder`) until gate closure, `gate_closure_minutes` before the slot starts.
//!    A bid locks `ceil(energy × limit)` (its most possible cost) in the escrow account. An ask
//!    needs active producing devices (PV or battery) registered with their own keys and bonds
//!    whose ratings cover the energy in 15 minutes, and
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
//!    seller's delivered energy is `min(export, verified, sold)`, split over its trades pro rata,
//!    where `verified` is what its keyed devices measured and proof of generation accepted (0
//!    without an accepted reading: a device declared without a key sells nothing). For each
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
//! A slot cleared while islanded has no utility: it settles between members only, and what was
//! not traded is unmatched and unpriced (no utility line).
//!
//! Token conservation: every token locked sits in the [`escrow_account`]; clearing and settlement
//! only move tokens between it and members, the grid operator and the market operator, and the
//! escrow's balance always equals the escrow and collateral still held by open orders and unsettled
//! trades (property-tested).

pub mod clearing;
pub mod orders;
pub mod records;
pub mod settlement;

use gridmesh_types::{Address, Amount};

use crate::devices::VerifiedReading;
use crate::kv::{keys, KvSpace, Tag};
use crate::state::Overlay;

pub use crate::config::{MarketConfig, MarketFile, TouTariff};
pub use crate::error::MarketTxError;
pub use crate::limits::{
    MAX_DEVICES_PER_OWNER, MAX_ORDERS_PER_SLOT, MAX_SLOTS_AHEAD, MAX_TARIFF_PERIODS,
    MWH_PER_W_PER_SLOT,
};
pub use records::{
    MarketResult, OrderRecord, OrderStatus, Reading, SettlementBasis, SettlementStatus, SlotRecord,
    TradeRecord, TradeSettlement,
};

/// The account that holds every locked token (bids' escrow, asks' collateral). No key controls
/// it: only clearing and settlement move its tokens.
pub fn escrow_account() -> Address {
    Address(*blake3::hash(b"gridmesh/market/escrow").as_bytes())
}

/// Energy a seller's verified devices delivered to one trade's buyer in a slot, and what it is
/// worth (the import it avoided).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Delivered {
    pub slot: u64,
    pub seller: Address,
    pub buyer: Address,
    pub energy_mwh: u64,
    pub value: u128,
}

/// What the market owes economics after a block's market work or a transaction: the grid value
/// to reward and the revenue of community assets. The market computes it; economics books it
/// (`crate::economics::book`), so the market never writes economics' records.
#[derive(Debug, Default)]
#[must_use = "what the market owes economics must be booked"]
pub(crate) struct Owed {
    /// Device readings that passed the proof-of-generation checks, by slot (flexibility).
    pub verified: Vec<(u64, VerifiedReading)>,
    /// Verified energy delivered, per trade.
    pub delivered: Vec<Delivered>,
    /// What each seller received, by slot (revenue, if the seller is a community asset).
    pub received: Vec<(u64, Address, Amount)>,
    /// Slots whose records were removed.
    pub pruned: Vec<u64>,
}

impl Owed {
    pub fn append(&mut self, mut other: Owed) {
        self.verified.append(&mut other.verified);
        self.delivered.append(&mut other.delivered);
        self.received.append(&mut other.received);
        self.pruned.append(&mut other.pruned);
    }
}

/// The earliest time a block has market work to do without any transaction (a gate closing, a
/// settlement or a deadline).
pub(crate) fn next_due_ms(kv: &KvSpace) -> Option<u64> {
    let cfg = crate::config::stored_config(kv);
    let open = keys::group(Tag::OpenSlot, 0);
    let gate = kv
        .scan(&open)
        .next()
        .map(|(k, _)| cfg.gate_closure_ms(keys::u64_after_group(k)));
    let due = |tag: Tag| {
        let prefix = keys::group(tag, 0);
        let first = kv.scan(&prefix).next().map(|(k, _)| keys::due_ms_of(k));
        first
    };
    [
        gate,
        due(Tag::SettleDue),
        due(Tag::FinalDue),
        due(Tag::PruneDue),
    ]
    .into_iter()
    .flatten()
    .min()
}

/// Runs before a block's transactions: clears every slot whose gate has closed, settles every
/// slot whose correction window has ended, makes final the estimates whose late window has, and
/// removes the slots whose history has passed. Returns what it owes economics.
pub(crate) fn begin_block(
    o: &mut Overlay<'_>,
    cfg: &MarketConfig,
    height: u64,
    timestamp_ms: u64,
) -> Owed {
    let open = o.kv_scan(&keys::group(Tag::OpenSlot, 0));
    for (k, _) in open {
        let slot = keys::u64_after_group(&k);
        if cfg.gate_closure_ms(slot) > timestamp_ms {
            break; // keys are in slot order
        }
        clearing::clear_slot(o, cfg, slot, height);
    }
    let mut owed = Owed::default();
    // Settlement, then finality, then pruning: each due index in due order.
    for tag in [Tag::SettleDue, Tag::FinalDue, Tag::PruneDue] {
        for (k, _) in o.kv_scan(&keys::group(tag, 0)) {
            let due = keys::due_ms_of(&k);
            let slot = keys::due_slot_of(&k);
            if due > timestamp_ms {
                break;
            }
            o.kv_delete(k);
            match tag {
                Tag::SettleDue => owed.append(settlement::settle_slot(o, cfg, slot)),
                Tag::FinalDue => owed.append(settlement::finalize_slot(o, cfg, slot)),
                _ => {
                    prune_slot(o, slot);
                    owed.pruned.push(slot);
                }
            }
        }
    }
    owed
}

/// Removes a slot's records from the state (`history_days` after it became final): its orders,
/// clearing record, trades, readings, seller positions, envelopes, tariff, device readings and verified
/// export (economics removes its flexibility requests). Nothing of it can change any more:
/// settlement, estimates, disputes and the epoch's rewards are done by then (the genesis checks
/// the window covers them).
fn prune_slot(o: &mut Overlay<'_>, slot: u64) {
    for tag in [
        Tag::Order,
        Tag::Slot,
        Tag::Trade,
        Tag::Reading,
        Tag::Seller,
        Tag::Envelope,
        Tag::Tariff,
        Tag::DeviceReading,
        Tag::VerifiedExport,
    ] {
        for (k, _) in o.kv_scan(&keys::group(tag, slot)) {
            o.kv_delete(k);
        }
    }
}
