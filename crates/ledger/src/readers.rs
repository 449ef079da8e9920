//! Typed, read-only views of a committed state for the node, its API and the simulator: records
//! by what they are (a slot, a device, an envelope, an epoch), never by key. Only the ledger knows
//! the key layouts ([`crate::kv`]); these traits are the narrow doors through which everyone else
//! reads, one per concern.
//!
//! ```no_run
//! # fn f(state: &gridmesh_ledger::State) {
//! use gridmesh_ledger::readers::MarketReader;
//! let cleared = state.slot_record(1_000);
//! # }
//! ```

use gridmesh_types::Address;

use crate::config::{stored_config, MarketConfig};
use crate::devices::{DeviceIdentity, DeviceReadingRecord};
use crate::economics::{
    self, AssetRecord, Dispute, EconomicsConfig, EpochRecord, FlexRecord, Points, Supply,
};
use crate::grid_operator::{EnvelopeRecord, GridEventRecord, GridMode};
use crate::kv::{decode, keys, KvSpace, Tag};
use crate::market::{OrderRecord, Reading, SlotRecord, TradeRecord};
use crate::state::State;

/// Anything that holds a committed key/value space: a [`State`] or its [`KvSpace`].
pub trait StateReader {
    fn kv_space(&self) -> &KvSpace;
}

impl StateReader for State {
    fn kv_space(&self) -> &KvSpace {
        self.kv()
    }
}

impl StateReader for KvSpace {
    fn kv_space(&self) -> &KvSpace {
        self
    }
}

/// The market's records: its rules, orders, cleared slots, trades and meter readings.
pub trait MarketReader: StateReader {
    /// The community's market rules (the default if the genesis stored none).
    fn market_config(&self) -> MarketConfig {
        stored_config(self.kv_space())
    }

    /// A slot's orders with their ids, in id order (open until cleared).
    fn orders(&self, slot: u64) -> Vec<(u64, OrderRecord)> {
        self.kv_space()
            .scan(&keys::group(Tag::Order, slot))
            .map(|(k, v)| (keys::u64_after_group(k), decode(v)))
            .collect()
    }

    /// How many orders a slot holds.
    fn order_count(&self, slot: u64) -> usize {
        self.kv_space().scan(&keys::group(Tag::Order, slot)).count()
    }

    /// A cleared slot's record.
    fn slot_record(&self, slot: u64) -> Option<SlotRecord> {
        self.kv_space().get(&keys::slot(slot)).map(decode)
    }

    /// A cleared slot's trades, in trade order.
    fn trades(&self, slot: u64) -> Vec<TradeRecord> {
        self.kv_space()
            .scan(&keys::group(Tag::Trade, slot))
            .map(|(_, v)| decode(v))
            .collect()
    }

    /// A member's meter reading of a slot.
    fn reading(&self, slot: u64, member: &Address) -> Option<Reading> {
        self.kv_space()
            .get(&keys::reading(slot, member))
            .map(decode)
    }

    /// Every member's meter reading of a slot, by member.
    fn readings(&self, slot: u64) -> Vec<(Address, Reading)> {
        self.kv_space()
            .scan(&keys::group(Tag::Reading, slot))
            .map(|(k, v)| (keys::address_at_end(k), decode(v)))
            .collect()
    }
}

/// Devices registered with their own keys and their readings.
pub trait DeviceReader: StateReader {
    /// A device registered with its own key.
    fn device(&self, device: &Address) -> Option<DeviceIdentity> {
        self.kv_space()
            .get(&keys::device_identity(device))
            .map(decode)
    }

    /// The devices with their own keys an account owns now (any status).
    fn owned_devices(&self, owner: &Address) -> Vec<(Address, DeviceIdentity)> {
        let kv = self.kv_space();
        kv.scan(&keys::owned_devices(owner))
            .filter_map(|(k, _)| {
                let device = keys::address_at_end(k);
                kv.get(&keys::device_identity(&device))
                    .map(|v| (device, decode(v)))
            })
            .collect()
    }

    /// A device's reading of a slot.
    fn device_reading(&self, slot: u64, device: &Address) -> Option<DeviceReadingRecord> {
        self.kv_space()
            .get(&keys::device_reading(slot, device))
            .map(decode)
    }

    /// Every device reading of a slot, by device.
    fn device_readings(&self, slot: u64) -> Vec<(Address, DeviceReadingRecord)> {
        self.kv_space()
            .scan(&keys::group(Tag::DeviceReading, slot))
            .map(|(k, v)| (keys::address_at_end(k), decode(v)))
            .collect()
    }
}

/// The grid operator's envelopes and the islanding state.
pub trait GridReader: StateReader {
    /// The utility's prices in a slot: the grid operator's (`SetTariff`), else the genesis
    /// time-of-use tariff.
    fn tariff(&self, slot: u64) -> gridmesh_market::Tariff {
        self.kv_space()
            .get(&keys::tariff(slot))
            .map_or_else(|| stored_config(self.kv_space()).tariff(slot), decode)
    }

    /// A connection's envelope in a slot.
    fn envelope(&self, slot: u64, location: &str) -> Option<EnvelopeRecord> {
        self.kv_space()
            .get(&keys::envelope(slot, location))
            .map(decode)
    }

    /// The islanding state (connected since genesis if nothing was recorded).
    fn grid_mode(&self) -> GridMode {
        self.kv_space()
            .get(&keys::grid_mode())
            .map(decode)
            .unwrap_or(GridMode {
                last: None,
                since_ms: 0,
                events: 0,
            })
    }

    /// The islanding transition number `seq`.
    fn grid_event(&self, seq: u64) -> Option<GridEventRecord> {
        self.kv_space().get(&keys::grid_event(seq)).map(decode)
    }
}

/// Rewards, epochs, disputes, flexibility requests and the supply.
pub trait EconomicsReader: StateReader {
    fn economics_config(&self) -> EconomicsConfig {
        economics::stored_config(self.kv_space())
    }

    /// The supply record.
    fn supply(&self) -> Supply {
        economics::supply(self.kv_space())
    }

    /// An owner's points (and reward, once the epoch closed) in an epoch.
    fn points(&self, epoch: u64, owner: &Address) -> Option<Points> {
        self.kv_space().get(&keys::points(epoch, owner)).map(decode)
    }

    /// A closed epoch's record.
    fn epoch(&self, epoch: u64) -> Option<EpochRecord> {
        self.kv_space().get(&keys::epoch(epoch)).map(decode)
    }

    /// A community asset.
    fn asset(&self, asset: &Address) -> Option<AssetRecord> {
        self.kv_space().get(&keys::asset(asset)).map(decode)
    }

    /// Every closed epoch, oldest first.
    fn epochs(&self) -> Vec<EpochRecord> {
        self.kv_space()
            .scan(&keys::group(Tag::Epoch, 0))
            .map(|(_, v)| decode(v))
            .collect()
    }

    /// The dispute on a device's reading of a slot.
    fn dispute(&self, slot: u64, device: &Address) -> Option<Dispute> {
        self.kv_space()
            .get(&keys::dispute(slot, device))
            .map(decode)
    }

    /// Every flexibility request of a slot (area, request).
    fn flex_requests(&self, slot: u64) -> Vec<(String, FlexRecord)> {
        economics::flex_requests(self.kv_space(), slot)
    }
}

impl<T: StateReader + ?Sized> MarketReader for T {}
impl<T: StateReader + ?Sized> DeviceReader for T {}
impl<T: StateReader + ?Sized> GridReader for T {}
impl<T: StateReader + ?Sized> EconomicsReader for T {}
