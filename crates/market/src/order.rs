//! Orders, trades and the money arithmetic every mechanism shares.

use borsh::{BorshDeserialize, BorshSerialize};
use gridmesh_types::units::MWH_PER_KWH;
use serde::{Deserialize, Serialize};

/// Which side of the market an order is on.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    BorshSerialize,
    BorshDeserialize,
    Serialize,
    Deserialize,
)]
#[borsh(use_discriminant = true)]
#[serde(rename_all = "snake_case")]
#[repr(u8)]
pub enum Side {
    /// A buyer: wants up to `energy_mwh` at no more than `price_per_kwh`.
    Bid = 0,
    /// A seller: offers up to `energy_mwh` for no less than `price_per_kwh`.
    Ask = 1,
}

impl Side {
    pub fn name(self) -> &'static str {
        match self {
            Side::Bid => "bid",
            Side::Ask => "ask",
        }
    }
}

impl std::str::FromStr for Side {
    type Err = String;
    /// `bid` (or `buy`), `ask` (or `sell`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "bid" | "buy" => Ok(Side::Bid),
            "ask" | "sell" => Ok(Side::Ask),
            _ => Err(format!("unknown side {s:?} (expected bid or ask)")),
        }
    }
}

/// Index of an area (a market) in an [`crate::Areas`] tree; 0 is the root.
pub type AreaId = u32;

/// One order of one slot, as the mechanisms see it.
///
/// `time` is the arrival order (on the ledger: block height << 32 | index in block) and `id` a
/// unique identifier; together with the price they define the priority every mechanism uses:
/// bids by price descending, asks by price ascending, then `time` ascending, then `id` ascending.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Order {
    pub id: u64,
    pub side: Side,
    pub energy_mwh: u64,
    /// Limit price in token base units per kWh: the most a bid pays, the least an ask accepts.
    pub price_per_kwh: u64,
    pub time: u64,
    /// The market area the order sits in (a house, a street...); 0 without a hierarchy.
    pub area: AreaId,
}

/// A matched quantity between one bid and one ask.
///
/// Prices are per kWh in token base units. `buyer_price_per_kwh` includes every grid fee on the
/// path between the two areas; `seller_price_per_kwh` is what the seller keeps. The difference is
/// `fee_per_kwh` (to the grid operator) plus, for trade-reduction mechanisms, the auction's
/// budget surplus (to the market operator).
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    BorshSerialize,
    BorshDeserialize,
    Serialize,
    Deserialize,
)]
pub struct Trade {
    pub bid: u64,
    pub ask: u64,
    pub energy_mwh: u64,
    pub buyer_price_per_kwh: u64,
    pub seller_price_per_kwh: u64,
    pub fee_per_kwh: u64,
    /// The market (area) where the two orders met.
    pub area: AreaId,
}

impl Trade {
    /// What the buyer pays: `floor(energy × buyer price)`, in base units.
    pub fn buyer_pays(&self) -> u128 {
        value_floor(self.energy_mwh, self.buyer_price_per_kwh)
    }

    /// What the seller receives: `floor(energy × seller price)`.
    pub fn seller_receives(&self) -> u128 {
        value_floor(self.energy_mwh, self.seller_price_per_kwh)
    }

    /// What the grid operator receives: `floor(energy × fee)`.
    pub fn fees(&self) -> u128 {
        value_floor(self.energy_mwh, self.fee_per_kwh)
    }

    /// The rest of the buyer's payment, to the market operator: rounding remainders and the
    /// budget surplus of trade-reduction mechanisms. Never negative: `buyer price >= seller price
    /// + fee` for every trade a mechanism makes, and `floor(x + y) >= floor(x) + floor(y)`.
    pub fn operator_receives(&self) -> u128 {
        self.buyer_pays() - self.seller_receives() - self.fees()
    }
}

/// Energy bought from or sold to the utility, the counterparty of last resort.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    BorshSerialize,
    BorshDeserialize,
    Serialize,
    Deserialize,
)]
pub struct UtilityTrade {
    /// The member's order.
    pub order: u64,
    /// `Bid`: the member buys from the utility at retail; `Ask`: sells to it at feed-in.
    pub side: Side,
    pub energy_mwh: u64,
    pub price_per_kwh: u64,
}

impl UtilityTrade {
    /// The payment, rounded down to a base unit.
    pub fn amount(&self) -> u128 {
        value_floor(self.energy_mwh, self.price_per_kwh)
    }
}

/// `energy × price`, rounded down to a base unit (payouts).
pub fn value_floor(energy_mwh: u64, price_per_kwh: u64) -> u128 {
    u128::from(energy_mwh) * u128::from(price_per_kwh) / u128::from(MWH_PER_KWH)
}

/// `energy × price`, rounded up to a base unit (payments and escrow).
pub fn value_ceil(energy_mwh: u64, price_per_kwh: u64) -> u128 {
    (u128::from(energy_mwh) * u128::from(price_per_kwh)).div_ceil(u128::from(MWH_PER_KWH))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding_favours_nobody_and_conserves() {
        // 1 mWh at 1.5 base units per kWh is 0.0000015 base units.
        assert_eq!(value_floor(1, 1_500_000), 1);
        assert_eq!(value_ceil(1, 1_500_000), 2);
        assert_eq!(value_ceil(1, 1_000_000), 1);
        assert_eq!(value_floor(1_000_000, 4), 4);
        assert_eq!(value_ceil(1_000_000, 4), 4);
        let t = Trade {
            bid: 1,
            ask: 2,
            energy_mwh: 333,
            buyer_price_per_kwh: 1_000_001,
            seller_price_per_kwh: 900_000,
            fee_per_kwh: 100_000,
            area: 0,
        };
        assert_eq!(
            t.buyer_pays(),
            t.seller_receives() + t.fees() + t.operator_receives()
        );
    }
}
