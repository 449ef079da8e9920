//! Price lists for tools that plan by price (evcc, home energy managers): what a kWh costs from
//! the grid (`/v1/tariff/grid`) and earns fed in (`/v1/tariff/feedin`), one entry per 15-minute
//! slot from the current one over the next 24 hours, in the format evcc's custom tariff reads:
//! `[{"start": RFC 3339 UTC, "end": …, "value": tokens per kWh}]`.
//!
//! Each slot's value is, in order of preference:
//! 1. **cleared**: the slot's trades' mean price, volume-weighted (what buyers paid, fees
//!    included, for the grid list; what sellers received for the feed-in list);
//! 2. **forecast**: the same quarter hour's cleared mean over the last [`FORECAST_DAYS`] days;
//! 3. **tariff**: the utility's time-of-use tariff (retail for the grid list, feed-in for the
//!    other).

use gridmesh_ledger::readers::{GridReader, MarketReader};
use gridmesh_ledger::State;
use gridmesh_types::units::{rfc3339, slot_of, slot_start_ms, SLOTS_PER_DAY, SLOT_MS};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Days of the same quarter hour a forecast averages.
pub const FORECAST_DAYS: u64 = 7;
/// Slots a list covers: the current one and the next 24 hours.
pub const LIST_SLOTS: u64 = SLOTS_PER_DAY + 1;

/// Which price a list gives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PriceSide {
    /// What a kWh from the grid costs (a buyer's price).
    Grid,
    /// What a kWh fed in earns (a seller's price).
    FeedIn,
}

/// One slot's price.
#[derive(Serialize, Deserialize, ToSchema, Debug, Clone, PartialEq)]
pub struct PricePoint {
    /// The slot's start, RFC 3339 UTC.
    pub start: String,
    /// The slot's end, RFC 3339 UTC.
    pub end: String,
    /// Tokens per kWh.
    pub value: f64,
}

/// The mean price of `slot`'s trades for `side`, base units per kWh, if it traded.
fn cleared(state: &State, slot: u64, side: PriceSide) -> Option<u128> {
    let (mut value, mut energy) = (0u128, 0u128);
    for t in state.trades(slot) {
        let price = match side {
            PriceSide::Grid => t.trade.buyer_price_per_kwh,
            PriceSide::FeedIn => t.trade.seller_price_per_kwh,
        };
        value += u128::from(price) * u128::from(t.trade.energy_mwh);
        energy += u128::from(t.trade.energy_mwh);
    }
    (energy > 0).then(|| value / energy)
}

/// The price list for `side` from the slot `now_ms` falls in over the next 24 hours.
pub fn price_list(state: &State, now_ms: u64, side: PriceSide) -> Vec<PricePoint> {
    let first = slot_of(now_ms);
    (first..first + LIST_SLOTS)
        .map(|slot| {
            let forecast = || {
                let past: Vec<u128> = (1..=FORECAST_DAYS)
                    .filter_map(|d| slot.checked_sub(d * SLOTS_PER_DAY))
                    .filter_map(|s| cleared(state, s, side))
                    .collect();
                (!past.is_empty()).then(|| past.iter().sum::<u128>() / past.len() as u128)
            };
            let tariff = || {
                let t = state.tariff(slot);
                u128::from(match side {
                    PriceSide::Grid => t.retail_per_kwh,
                    PriceSide::FeedIn => t.feed_in_per_kwh,
                })
            };
            let base = cleared(state, slot, side)
                .or_else(forecast)
                .unwrap_or_else(tariff);
            let start_s = slot_start_ms(slot) / 1000;
            PricePoint {
                start: rfc3339(start_s),
                end: rfc3339(start_s + SLOT_MS / 1000),
                // Base units of 10^-6 token: exact in an f64 for any price the market allows.
                value: base as f64 / 1e6,
            }
        })
        .collect()
}
