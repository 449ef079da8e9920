//! The community's market rules, fixed in the genesis: the `[market]` section of the genesis file
//! ([`MarketFile`]), checked into a [`MarketConfig`] that every concern reads (the market's gates
//! and windows, the grid operator's address, the least device bond).
//!
//! Knows nothing of how orders, devices or rewards are kept: it is the rules, not their state.

use borsh::{BorshDeserialize, BorshSerialize};
use gridmesh_market::{self as mk, GridFee, Mechanism, Tariff};
use gridmesh_types::units::{slot_of, slot_of_day, slot_start_ms, SLOTS_PER_DAY};
use gridmesh_types::Address;
use serde::{Deserialize, Serialize};

use crate::error::MarketTxError;
use crate::kv::{self, keys, KvSpace};
use crate::limits::{
    MAX_DEVICE_BOND_PER_KW, MAX_DEVICE_RATING_W, MAX_SLOTS_AHEAD, MAX_TARIFF_PERIODS,
    MWH_PER_W_PER_SLOT,
};
use crate::tx::DeviceKind;

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
    /// Tokens (base units) every order locks on top of its escrow until its slot clears or it is
    /// cancelled: a slot's order book has room for [`crate::limits::MAX_ORDERS_PER_SLOT`], and
    /// filling it locks that many deposits.
    pub order_deposit: u128,
    /// The smallest order, milliwatt-hours.
    pub min_order_mwh: u64,
    /// The highest rating a device of each kind may declare, watts (indexed by
    /// [`DeviceKind`] as `u8`): a rating bounds what a device may claim, so an unbounded one
    /// would let a reading claim anything.
    pub max_device_w: [u32; DEVICE_KINDS],
    /// Bond per kW of rating of a keyed device that earns (PV, battery, EV charger), base units,
    /// on top of nothing: a device's bond is the larger of this and `min_device_bond`.
    pub device_bond_per_kw: u128,
}

/// How many device kinds there are (the length of [`MarketConfig::max_device_w`]).
pub const DEVICE_KINDS: usize = 5;

/// The default highest ratings, watts: PV and batteries up to a community plant (1 MW), chargers
/// up to a fast charger (350 kW), loads 100 kW, meters 10 MW (a feeder head).
pub const DEFAULT_MAX_DEVICE_W: [u32; DEVICE_KINDS] =
    [1_000_000, 1_000_000, 350_000, 100_000, 10_000_000];
/// The default bond per kW of an earning device: 1 token (a 10 kW rooftop bonds the minimum).
pub const DEFAULT_DEVICE_BOND_PER_KW: u128 = 1_000_000;

/// The default order deposit: 0.1 token.
pub const DEFAULT_ORDER_DEPOSIT: u128 = 100_000;
/// The default smallest order: 1 Wh.
pub const DEFAULT_MIN_ORDER_MWH: u64 = 1_000;

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
            order_deposit: DEFAULT_ORDER_DEPOSIT,
            min_order_mwh: DEFAULT_MIN_ORDER_MWH,
            max_device_w: DEFAULT_MAX_DEVICE_W,
            device_bond_per_kw: DEFAULT_DEVICE_BOND_PER_KW,
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
        if self.order_deposit == 0 {
            return Err(
                "order_deposit must be above 0: orders that lock nothing could fill a slot".into(),
            );
        }
        if self.order_deposit > crate::limits::MAX_ORDER_DEPOSIT {
            return Err("order_deposit must be at most 1000 tokens".into());
        }
        if self.min_order_mwh == 0 || self.min_order_mwh > mk::MAX_ORDER_MWH {
            return Err("min_order_kwh must be above 0 and within the order size limit".into());
        }
        for kind in DeviceKind::ALL {
            let w = self.max_device_w[kind as usize];
            if w == 0 || u64::from(w) > MAX_DEVICE_RATING_W {
                return Err(format!(
                    "max_device_kw.{} must be above 0 and at most {} kW",
                    kind.name().replace('-', "_"),
                    MAX_DEVICE_RATING_W / 1000
                ));
            }
        }
        if self.device_bond_per_kw > MAX_DEVICE_BOND_PER_KW {
            return Err("device_bond_per_kw must be at most 1000 tokens".into());
        }
        Ok(())
    }

    /// The highest rating a device of `kind` may declare, watts.
    pub fn max_device_w(&self, kind: DeviceKind) -> u32 {
        self.max_device_w[kind as usize]
    }

    /// Checks a device's declared rating against the genesis bound of its kind.
    pub fn check_rating(&self, kind: DeviceKind, capacity_w: u32) -> Result<(), MarketTxError> {
        let max_w = self.max_device_w(kind);
        if capacity_w > max_w {
            return Err(MarketTxError::RatingTooHigh {
                kind: kind.name(),
                capacity_w,
                max_w,
            });
        }
        Ok(())
    }

    /// The bond a keyed device of `kind` rated `capacity_w` must put up: `min_device_bond`, or
    /// `device_bond_per_kw` per kW (rounded up) for a device that earns, whichever is more.
    pub fn device_bond(&self, kind: DeviceKind, capacity_w: u32) -> u128 {
        if !kind.earns() {
            return self.min_device_bond;
        }
        // capacity ≤ 2^32 W and the rate ≤ 10^9: the product fits in u128.
        let scaled = (u128::from(capacity_w) * self.device_bond_per_kw).div_ceil(1000);
        scaled.max(self.min_device_bond)
    }

    /// Whether `slot` still takes orders (and envelopes) at `now_ms`: before its gate closure and
    /// no more than [`MAX_SLOTS_AHEAD`] slots ahead.
    pub fn check_open(&self, slot: u64, now_ms: u64) -> Result<(), MarketTxError> {
        let gate_ms = self.gate_closure_ms(slot);
        if now_ms >= gate_ms {
            return Err(MarketTxError::GateClosed {
                slot,
                gate_ms,
                now_ms,
            });
        }
        let max_slot = slot_of(now_ms).saturating_add(MAX_SLOTS_AHEAD);
        if slot > max_slot {
            return Err(MarketTxError::SlotTooFar { slot, max_slot });
        }
        Ok(())
    }

    /// The largest import of one connection in one slot.
    pub fn max_import_mwh(&self) -> u64 {
        self.max_import_w.saturating_mul(MWH_PER_W_PER_SLOT)
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
    /// Tokens each order locks until its slot clears or it is cancelled (default 0.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_deposit: Option<String>,
    /// The smallest order, kWh (default 0.001).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_order_kwh: Option<String>,
    /// Tokens of bond per kW of rating of a keyed PV, battery or EV charger (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_bond_per_kw: Option<String>,
    /// The highest rating per device kind, kW.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_device_kw: Option<MaxDeviceFile>,
}

/// `[market.max_device_kw]`: the highest rating of each device kind, kW (each optional).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaxDeviceFile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pv: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub battery: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ev_charger: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meter: Option<String>,
}

impl MaxDeviceFile {
    fn to_watts(&self) -> Result<[u32; DEVICE_KINDS], String> {
        let mut w = DEFAULT_MAX_DEVICE_W;
        for (kind, v) in [
            (DeviceKind::Pv, &self.pv),
            (DeviceKind::Battery, &self.battery),
            (DeviceKind::EvCharger, &self.ev_charger),
            (DeviceKind::Load, &self.load),
            (DeviceKind::Meter, &self.meter),
        ] {
            if let Some(kw) = v {
                let key = format!("max_device_kw.{}", kind.name().replace('-', "_"));
                let watts =
                    gridmesh_types::parse_fixed(kw, 3).map_err(|e| format!("{key}: {e}"))?;
                w[kind as usize] =
                    u32::try_from(watts).map_err(|_| format!("{key} is too large"))?;
            }
        }
        Ok(w)
    }
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
            order_deposit: None,
            min_order_kwh: None,
            device_bond_per_kw: None,
            max_device_kw: None,
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
            order_deposit: match &self.order_deposit {
                Some(t) => gridmesh_types::parse_fixed(t, gridmesh_types::TOKEN_DECIMALS)
                    .map_err(|e| format!("order_deposit: {e}"))?,
                None => d.order_deposit,
            },
            min_order_mwh: match &self.min_order_kwh {
                Some(kwh) => u64::try_from(
                    gridmesh_types::parse_fixed(kwh, 6)
                        .map_err(|e| format!("min_order_kwh: {e}"))?,
                )
                .map_err(|_| "min_order_kwh is too large".to_string())?,
                None => d.min_order_mwh,
            },
            max_device_w: match &self.max_device_kw {
                Some(m) => m.to_watts()?,
                None => d.max_device_w,
            },
            device_bond_per_kw: match &self.device_bond_per_kw {
                Some(t) => gridmesh_types::parse_fixed(t, gridmesh_types::TOKEN_DECIMALS)
                    .map_err(|e| format!("device_bond_per_kw: {e}"))?,
                None => d.device_bond_per_kw,
            },
        };
        c.check()?;
        Ok(c)
    }
}

/// The market configuration stored in a committed state (the default if none was).
pub fn stored_config(kv: &KvSpace) -> MarketConfig {
    kv.get(&keys::market_config())
        .map(kv::decode)
        .unwrap_or_default()
}

/// The key/value entry that stores `config` at genesis.
pub fn genesis_entry(config: &MarketConfig) -> (Vec<u8>, Vec<u8>) {
    (keys::market_config(), kv::encode(config))
}

#[cfg(test)]
mod tests {
    use super::*;

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
