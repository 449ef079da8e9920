//! Clearing of one 15-minute delivery slot: pure, integer-only functions the ledger calls at gate
//! closure and the command line calls offline (`gridmesh market clear`).
//!
//! # Units
//! Energy in milliwatt-hours (`u64`), prices in token base units per kWh (`u64`; 1 token = 10^6
//! base units), money in base units (`u128`). No floating point anywhere.
//!
//! # Mechanisms ([`Mechanism`])
//! - `pay-as-clear`: uniform-price call auction. Bids and asks are matched greedily (best bid with
//!   cheapest ask while the bid covers the ask), which maximises welfare; every trade is at the top
//!   of the interval of prices that clear the market, `min(lowest matched bid, lowest ask with
//!   energy left)`.
//! - `pay-as-bid`: continuous double auction in arrival order; a trade is at the bid's price.
//! - `pay-as-offer`: one-sided; buyers, highest limit first, take the cheapest offers at the offer's price.
//! - `huang`: Huang, Scheller-Wolf and Sycara (2002) multi-unit trade reduction, as pymarket
//!   implements it: truthful (no trader gains by misreporting its price) and budget-balanced (the
//!   spread between buyers' and sellers' prices goes to the market operator, never from it).
//! - `community`: one local price, `floor((feed-in + retail) / 2)`, for every bid at or above it and
//!   every ask at or below it; the long side is cut pro rata.
//!
//! The utility is the counterparty of last resort ([`Tariff`]): energy a bid did not get in the
//! market is bought from the utility at retail if the bid's limit allows it, energy an ask did not
//! sell is sold to the utility at the feed-in tariff if the ask accepts it.
//!
//! # Determinism
//! - **Priority** (tie-breaking): bids by price descending, asks by price ascending, then arrival
//!   `time` ascending, then `id` ascending. Huang's mechanism treats orders of one side at one price
//!   as one trader (as pymarket does), so ties never decide who sets the price.
//! - **Rounding**: quantities split pro rata get `floor(share)`, and the leftover milliwatt-hours
//!   go one each to the first orders in priority order that have room. Money: every amount is
//!   rounded down to a base unit: a buyer pays `floor(energy × buyer price)`, a seller receives
//!   `floor(energy × seller price)`, the grid operator `floor(energy × fee)`, and what is left of
//!   the buyer's payment (rounding, and the spread of trade reduction) goes to the market
//!   operator. It is never negative (`floor(x + y) >= floor(x) + floor(y)`), so tokens are
//!   conserved exactly, and a buyer's escrow of `ceil(energy × limit)` always covers its trades.
//! - The result does not depend on the order the orders are listed in (every mechanism sorts by
//!   priority; the continuous one replays arrival `time`).
//!
//! # Compared with gsy-e
//! gsy-e's pay-as-clear scans the order rates for the lowest rate at which supply at or below it
//! covers demand at or above it. On its published cases (7 × 7 orders at rates 1..7; offers
//! 2,3,3,5,6,7,8 against bids 1..7; 1.1/2.2/3.3) our rule gives the same price and volume (tests
//! in `tests/reference.rs`). The two differ when buyers tie at the marginal price with more demand
//! than supply: gsy-e finds no rate and clears nothing; we clear at that price. Grid fees follow
//! gsy-e's hierarchical rule (the buyer pays every market's fee on the path, the seller never gets
//! less than its ask); a percentage fee on the buyer's side is a share of the bid's limit (gsy-e
//! takes a share of the original offer, which a market forwarding a bid cannot know yet).
//!
//! # Welfare
//! `welfare` is `Σ energy × (bid limit − ask limit)` over the peer-to-peer trades (grid fees and
//! the operator's spread are transfers, not losses); `optimal_welfare` is the maximum of the same
//! sum over all matchings of the slot's orders with no areas and no fees, so
//! `welfare / optimal_welfare` is what a mechanism (and the fee structure) costs the community.
//!
//! # Cost
//! O(n log n) in the number of orders (sorting dominates), times the depth of the hierarchy.

mod hierarchy;
mod limits;
mod mechanism;
mod order;

use std::collections::BTreeMap;

use borsh::{BorshDeserialize, BorshSerialize};
use serde::{Deserialize, Serialize};

pub use hierarchy::{
    area_contains, check_location, Areas, GridFee, MAX_AREAS, MAX_AREA_NAME, MAX_DEPTH,
};
pub use limits::{within_limits, AreaLimit};
pub use mechanism::{pro_rata, Mechanism};
pub use order::{value_ceil, value_floor, AreaId, Order, Side, Trade, UtilityTrade};

use mechanism::{clear_market, optimal_welfare, Eff};

/// Most orders one slot may hold.
pub const MAX_ORDERS_PER_SLOT: usize = 1 << 22;
/// Highest limit price, in base units per kWh (one million tokens per kWh).
pub const MAX_PRICE_PER_KWH: u64 = 1_000_000_000_000;
/// Largest single order, in mWh (1 GWh: far beyond any community asset in 15 minutes).
pub const MAX_ORDER_MWH: u64 = 1_000_000_000_000;

/// The utility's prices for one slot.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    BorshSerialize,
    BorshDeserialize,
)]
pub struct Tariff {
    /// What the utility charges per kWh it supplies (base units).
    pub retail_per_kwh: u64,
    /// What the utility pays per kWh it takes (base units).
    pub feed_in_per_kwh: u64,
}

impl Tariff {
    /// The community mechanism's local price: halfway between feed-in and retail, rounded down.
    pub fn community_price(&self) -> u64 {
        ((u128::from(self.feed_in_per_kwh) + u128::from(self.retail_per_kwh)) / 2) as u64
    }

    pub fn check(&self) -> Result<(), MarketError> {
        if self.feed_in_per_kwh > self.retail_per_kwh {
            return Err(MarketError::BadTariff(format!(
                "feed-in tariff {} is above the retail tariff {} (base units per kWh)",
                self.feed_in_per_kwh, self.retail_per_kwh
            )));
        }
        if self.retail_per_kwh > MAX_PRICE_PER_KWH {
            return Err(MarketError::BadTariff(format!(
                "retail tariff {} is above the limit {MAX_PRICE_PER_KWH}",
                self.retail_per_kwh
            )));
        }
        Ok(())
    }
}

/// Why an order set cannot be cleared.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MarketError {
    #[error("order id {0} appears twice")]
    DuplicateId(u64),
    #[error("order {0} has no energy")]
    ZeroEnergy(u64),
    #[error("order {id} offers {energy_mwh} mWh, more than the limit of {MAX_ORDER_MWH} mWh")]
    TooMuchEnergy { id: u64, energy_mwh: u64 },
    #[error(
        "order {id} has price {price} base units per kWh, above the limit of {MAX_PRICE_PER_KWH}"
    )]
    PriceTooHigh { id: u64, price: u64 },
    #[error("order {id} is in area {area}, which does not exist")]
    UnknownArea { id: u64, area: AreaId },
    #[error("{0} orders in one slot, more than the limit of {MAX_ORDERS_PER_SLOT}")]
    TooManyOrders(usize),
    #[error("the community mechanism needs a tariff (its price lies between feed-in and retail)")]
    CommunityNeedsTariff,
    #[error("bad tariff: {0}")]
    BadTariff(String),
    #[error("bad location {0:?}: {1}")]
    BadLocation(String, String),
    #[error("more than {MAX_AREAS} market areas")]
    TooManyAreas,
}

/// The result of one market (area) of the hierarchy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AreaResult {
    pub area: AreaId,
    /// The uniform price in this market (mechanisms with one, if anything traded).
    pub price_per_kwh: Option<u64>,
    pub volume_mwh: u64,
}

/// Everything one cleared slot produced.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Clearing {
    pub mechanism: Mechanism,
    /// Peer-to-peer trades, in clearing order (markets bottom-up, then match order).
    pub trades: Vec<Trade>,
    /// Energy bought from and sold to the utility (only with a tariff), by order id.
    pub utility: Vec<UtilityTrade>,
    /// The one price every trade of the slot had, for uniform-price mechanisms whose trades all
    /// happened in one market; `None` otherwise.
    pub clearing_price_per_kwh: Option<u64>,
    /// Energy traded peer to peer.
    pub volume_mwh: u64,
    /// Gains from trade achieved, in base units (rounded down).
    pub welfare: u128,
    /// The maximum gains from trade of these orders (copper plate, no fees), in base units.
    pub optimal_welfare: u128,
    /// Markets where something traded.
    pub markets: Vec<AreaResult>,
}

impl Clearing {
    /// Gains from trade including the utility's trades, in base units (rounded down): the peer
    /// to peer [`welfare`](Clearing::welfare) plus, for every order the utility served, energy ×
    /// (bid limit − retail) or energy × (feed-in − ask limit). What grid limits cost a community
    /// is the fall of this number. `orders` are those cleared.
    pub fn surplus(&self, orders: &[Order]) -> u128 {
        let limit: BTreeMap<u64, u64> = orders.iter().map(|o| (o.id, o.price_per_kwh)).collect();
        self.welfare
            + self
                .utility
                .iter()
                .map(|u| {
                    let l = limit.get(&u.order).copied().unwrap_or(u.price_per_kwh);
                    let gain = match u.side {
                        Side::Bid => l.saturating_sub(u.price_per_kwh),
                        Side::Ask => u.price_per_kwh.saturating_sub(l),
                    };
                    value_floor(u.energy_mwh, gain)
                })
                .sum::<u128>()
    }

    /// Energy each order traded peer to peer, by order id.
    pub fn traded_by_order(&self) -> BTreeMap<u64, u64> {
        let mut m = BTreeMap::new();
        for t in &self.trades {
            *m.entry(t.bid).or_insert(0) += t.energy_mwh;
            *m.entry(t.ask).or_insert(0) += t.energy_mwh;
        }
        m
    }
}

/// Checks an order set: unique ids, positive bounded energy, bounded prices, known areas.
pub fn check_orders(orders: &[Order], areas: &Areas) -> Result<(), MarketError> {
    if orders.len() > MAX_ORDERS_PER_SLOT {
        return Err(MarketError::TooManyOrders(orders.len()));
    }
    let mut ids: Vec<u64> = orders.iter().map(|o| o.id).collect();
    ids.sort_unstable();
    if let Some(w) = ids.windows(2).find(|w| w[0] == w[1]) {
        return Err(MarketError::DuplicateId(w[0]));
    }
    for o in orders {
        if o.energy_mwh == 0 {
            return Err(MarketError::ZeroEnergy(o.id));
        }
        if o.energy_mwh > MAX_ORDER_MWH {
            return Err(MarketError::TooMuchEnergy {
                id: o.id,
                energy_mwh: o.energy_mwh,
            });
        }
        if o.price_per_kwh > MAX_PRICE_PER_KWH {
            return Err(MarketError::PriceTooHigh {
                id: o.id,
                price: o.price_per_kwh,
            });
        }
        if o.area as usize >= areas.len() {
            return Err(MarketError::UnknownArea {
                id: o.id,
                area: o.area,
            });
        }
    }
    Ok(())
}

/// Clears one slot's orders over a hierarchy of markets (see the crate docs and [`Areas`]).
pub fn clear(
    orders: &[Order],
    areas: &Areas,
    mechanism: Mechanism,
    tariff: Option<Tariff>,
) -> Result<Clearing, MarketError> {
    check_orders(orders, areas)?;
    if let Some(t) = &tariff {
        t.check()?;
    }
    let community_price = match (mechanism, tariff) {
        (Mechanism::Community, None) => return Err(MarketError::CommunityNeedsTariff),
        (_, t) => t.map(|t| t.community_price()),
    };
    let mut bids_at: Vec<Vec<Eff>> = vec![Vec::new(); areas.len()];
    let mut asks_at: Vec<Vec<Eff>> = vec![Vec::new(); areas.len()];
    for (i, o) in orders.iter().enumerate() {
        let e = Eff {
            order: i as u32,
            price: o.price_per_kwh,
            time: o.time,
            id: o.id,
            rem: o.energy_mwh,
        };
        match o.side {
            Side::Bid => bids_at[o.area as usize].push(e),
            Side::Ask => asks_at[o.area as usize].push(Eff {
                // Entering its own market: that market's fee. Prices are bounded, so no overflow.
                price: e.price + areas.fee(o.area).per_kwh(o.price_per_kwh),
                ..e
            }),
        }
    }
    let mut unmatched: Vec<u64> = orders.iter().map(|o| o.energy_mwh).collect();
    let mut trades = Vec::new();
    let mut markets = Vec::new();
    for area in areas.bottom_up() {
        let mut bids = std::mem::take(&mut bids_at[area as usize]);
        let mut asks = std::mem::take(&mut asks_at[area as usize]);
        if bids.is_empty() && asks.is_empty() {
            continue;
        }
        let cleared = clear_market(mechanism, &mut bids, &mut asks, community_price);
        let mut volume = 0u64;
        for m in &cleared.matches {
            let (b, a) = (&bids[m.bid], &asks[m.ask]);
            let (bo, ao) = (&orders[b.order as usize], &orders[a.order as usize]);
            let buyer_side_fees = bo.price_per_kwh - b.price;
            let seller_side_fees = a.price - ao.price_per_kwh;
            debug_assert!(m.buyer_price <= b.price && m.seller_price >= a.price);
            debug_assert!(m.buyer_price >= m.seller_price);
            trades.push(Trade {
                bid: bo.id,
                ask: ao.id,
                energy_mwh: m.energy_mwh,
                buyer_price_per_kwh: m.buyer_price + buyer_side_fees,
                seller_price_per_kwh: m.seller_price - seller_side_fees,
                fee_per_kwh: buyer_side_fees + seller_side_fees,
                area,
            });
            unmatched[b.order as usize] -= m.energy_mwh;
            unmatched[a.order as usize] -= m.energy_mwh;
            volume += m.energy_mwh;
        }
        if volume > 0 {
            markets.push(AreaResult {
                area,
                price_per_kwh: cleared.price,
                volume_mwh: volume,
            });
        }
        // What is left moves up one market, paying the fees of leaving this one (bids) or of
        // entering the parent (asks). A bid that cannot cover the fee stops here.
        if let Some(parent) = areas.parent(area) {
            for b in bids.into_iter().filter(|b| b.rem > 0) {
                let fee = areas
                    .fee(area)
                    .per_kwh(orders[b.order as usize].price_per_kwh);
                if let Some(price) = b.price.checked_sub(fee) {
                    bids_at[parent as usize].push(Eff { price, ..b });
                }
            }
            for a in asks.into_iter().filter(|a| a.rem > 0) {
                let fee = areas
                    .fee(parent)
                    .per_kwh(orders[a.order as usize].price_per_kwh);
                asks_at[parent as usize].push(Eff {
                    price: a.price.saturating_add(fee),
                    ..a
                });
            }
        }
    }
    let mut utility: Vec<UtilityTrade> = match tariff {
        None => Vec::new(),
        Some(t) => orders
            .iter()
            .zip(&unmatched)
            .filter(|(_, &left)| left > 0)
            .filter_map(|(o, &left)| match o.side {
                Side::Bid if o.price_per_kwh >= t.retail_per_kwh => {
                    Some((o, left, t.retail_per_kwh))
                }
                Side::Ask if o.price_per_kwh <= t.feed_in_per_kwh => {
                    Some((o, left, t.feed_in_per_kwh))
                }
                _ => None,
            })
            .map(|(o, left, price)| UtilityTrade {
                order: o.id,
                side: o.side,
                energy_mwh: left,
                price_per_kwh: price,
            })
            .collect(),
    };
    utility.sort_unstable_by_key(|u| u.order);
    let price_of = |id: u64, by_id: &BTreeMap<u64, u64>| by_id[&id];
    let by_id: BTreeMap<u64, u64> = orders.iter().map(|o| (o.id, o.price_per_kwh)).collect();
    let gains: u128 = trades
        .iter()
        .map(|t| {
            u128::from(t.energy_mwh) * u128::from(price_of(t.bid, &by_id) - price_of(t.ask, &by_id))
        })
        .sum();
    let all: Vec<Eff> = orders
        .iter()
        .enumerate()
        .map(|(i, o)| Eff {
            order: i as u32,
            price: o.price_per_kwh,
            time: o.time,
            id: o.id,
            rem: o.energy_mwh,
        })
        .collect();
    let (all_bids, all_asks): (Vec<Eff>, Vec<Eff>) = all
        .into_iter()
        .partition(|e| orders[e.order as usize].side == Side::Bid);
    let optimal = optimal_welfare(all_bids, all_asks);
    let per_kwh = u128::from(gridmesh_types::units::MWH_PER_KWH);
    let clearing_price_per_kwh = match markets.as_slice() {
        [only] if mechanism.has_uniform_price() => only.price_per_kwh,
        _ => None,
    };
    Ok(Clearing {
        mechanism,
        volume_mwh: trades.iter().map(|t| t.energy_mwh).sum(),
        trades,
        utility,
        clearing_price_per_kwh,
        welfare: gains / per_kwh,
        optimal_welfare: optimal / per_kwh,
        markets,
    })
}

/// Energy offered at each price level: (price, bid energy at that price, ask energy at that price),
/// by price ascending. The order book depth a slot shows before and after clearing.
pub fn depth(orders: &[Order]) -> Vec<(u64, u64, u64)> {
    let mut levels: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
    for o in orders {
        let l = levels.entry(o.price_per_kwh).or_default();
        match o.side {
            Side::Bid => l.0 = l.0.saturating_add(o.energy_mwh),
            Side::Ask => l.1 = l.1.saturating_add(o.energy_mwh),
        }
    }
    levels.into_iter().map(|(p, (b, a))| (p, b, a)).collect()
}
