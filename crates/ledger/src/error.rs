//! Why a transaction cannot be applied: one error type per concern, and [`TxError`] over them.
//! A leaf of the crate: every concern returns these, none of them is needed to name them.

use gridmesh_market as mk;
use gridmesh_types::units::{slot_text, utc_text as utc};
use gridmesh_types::{Address, Amount};

use crate::limits::{MAX_DEVICES_PER_OWNER, MAX_ORDERS_PER_SLOT, MAX_SLOTS_AHEAD};
use crate::tx::GridEventKind;

/// Why a well-formed, correctly signed transaction cannot be applied to the current state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TxError {
    #[error("transaction is for chain {got:?}, this is chain {expected:?}")]
    WrongChainId { expected: String, got: String },
    #[error("nonce {got} is already used (the account's next nonce is {expected})")]
    StaleNonce { expected: u64, got: u64 },
    #[error("nonce {got} is ahead of the account's next nonce {expected}")]
    FutureNonce { expected: u64, got: u64 },
    #[error("insufficient funds: balance {balance} tokens, needs {needed} tokens")]
    InsufficientFunds { balance: Amount, needed: Amount },
    #[error("recipient balance would overflow")]
    BalanceOverflow,
    #[error("the sender's nonces are used up")]
    NonceExhausted,
    #[error(transparent)]
    Market(#[from] MarketTxError),
    #[error(transparent)]
    Economics(#[from] EconomicsError),
}

/// Why a market or device transaction cannot be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MarketTxError {
    #[error(
        "{} closed for orders at {} (gate closure); the block's time is {}",
        slot_text(*.slot), utc(*.gate_ms), utc(*.now_ms)
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
    #[error("an ask needs an active producing device (pv or battery) of the seller registered with its own key and bond (a device declared without a key sells nothing)")]
    NoProducingDevice,
    #[error("a {kind} rated {capacity_w} W is above the market's limit of {max_w} W for its kind")]
    RatingTooHigh {
        kind: &'static str,
        capacity_w: u32,
        max_w: u32,
    },
    #[error("device {0}'s reading commits to no samples (raw_count 0 or an all-zero raw_root): a reading must commit to the telemetry it sums")]
    NoSamples(Address),
    #[error("device {device}'s reading commits to {count} samples, above the limit of {max}")]
    TooManySamples {
        device: Address,
        count: u32,
        max: u32,
    },
    #[error("ask of {energy_mwh} mWh exceeds what the seller's producing devices can deliver in 15 minutes ({max_mwh} mWh)")]
    AskAboveCapacity { energy_mwh: u64, max_mwh: u64 },
    #[error("bid of {energy_mwh} mWh exceeds the connection's import limit for 15 minutes ({max_mwh} mWh)")]
    BidAboveImportLimit { energy_mwh: u64, max_mwh: u64 },
    #[error("order energy {0} mWh is above the limit of {lim} mWh", lim = mk::MAX_ORDER_MWH)]
    EnergyTooLarge(u64),
    #[error("order of {energy_mwh} mWh is below the market's smallest order of {min_mwh} mWh")]
    EnergyTooSmall { energy_mwh: u64, min_mwh: u64 },
    #[error("price {0} base units per kWh is above the limit of {lim}", lim = mk::MAX_PRICE_PER_KWH)]
    PriceTooHigh(u64),
    #[error("bad location: {0}")]
    BadLocation(String),
    #[error("an account may register at most {MAX_DEVICES_PER_OWNER} devices")]
    TooManyDevices,
    #[error("a reading needs a registered device of the sender")]
    NoDevice,
    #[error("{} ends at {}; a reading for it can only come after", slot_text(*.slot), utc(*.ends_ms))]
    SlotNotEnded { slot: u64, ends_ms: u64 },
    #[error("readings for {} closed at {}", slot_text(*.slot), utc(*.deadline_ms))]
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
    #[error("grid event time {} is before the last event ({}) or after the block ({})", utc(*.at_ms), utc(*.since_ms), utc(*.now_ms))]
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
    #[error("a device bond of {got} base units is below the {min} a device of its kind and rating must bond")]
    BondTooSmall { got: u128, min: u128 },
    #[error("a device cannot be transferred to its owner")]
    TransferToSelf,
    #[error("device {0}'s signature over its reading is not valid")]
    BadReadingSignature(Address),
    #[error("the ledger has used up its {0}")]
    SequenceExhausted(&'static str),
    #[error("device {device} already reported slot {slot} (a replayed reading)")]
    DuplicateDeviceReading { device: Address, slot: u64 },
}

/// Why an economics transaction (fraud reports, flexibility requests, community assets) cannot be
/// applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EconomicsError {
    #[error("device {0} is not registered")]
    UnknownDevice(Address),
    #[error("an owner cannot report its own device")]
    OwnDevice,
    #[error("device {device} has no reading for slot {slot}")]
    NoReading { device: Address, slot: u64 },
    #[error("device {device}'s reading of slot {slot} is already reported")]
    AlreadyReported { device: Address, slot: u64 },
    #[error("the dispute window for {} closed at {}", slot_text(*.slot), utc(*.closed_ms))]
    WindowClosed { slot: u64, closed_ms: u64 },
    #[error("the evidence does not show the reading false: {0}")]
    EvidenceRejected(String),
    #[error("the reading was not held by a hard physics check (register, rating or clear sky)")]
    NotHeldByPhysics,
    #[error("no open dispute on device {device}'s reading of slot {slot}")]
    NoOpenDispute { device: Address, slot: u64 },
    #[error("only the market's grid operator may do this")]
    NotGridOperator,
    #[error("{} has started; flexibility requests must come before {}", slot_text(*.slot), utc(*.starts_ms))]
    SlotStarted { slot: u64, starts_ms: u64 },
    #[error("account {0} is already a community asset")]
    AssetExists(Address),
    #[error("{0} is not a community asset")]
    UnknownAsset(Address),
    #[error("an asset cannot hold its own shares")]
    SelfHolding,
    #[error("the sender holds {held} shares, fewer than {wanted}")]
    NotEnoughShares { held: u64, wanted: u64 },
    #[error("the asset already has the most holders ({0})")]
    TooManyHolders(usize),
    #[error("the holders' shares add up to more than {} shares", u64::MAX)]
    TooManyShares,
}
