//! Grid limits in the market: each connection point (an area of the hierarchy, usually one home)
//! may import and export at most what its operating envelope allows in the slot.
//!
//! [`within_limits`] trims the orders before clearing, so every mechanism respects the envelopes
//! whatever it matches: an area's bids keep, highest price first (then earliest, then lowest id),
//! as much energy as its import limit allows, and its asks, cheapest first, as much as its export
//! limit allows; the rest of each order is not offered in this slot. The trimmed orders are the
//! owners' most valuable energy, so the welfare lost to the grid is as small as envelopes allow.
//! Integer only: the limits come from the grid crate's one quantising function.

use std::collections::BTreeMap;

use crate::order::{AreaId, Order, Side};

/// What an area may import (buy) and export (sell) in one slot, mWh.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AreaLimit {
    pub import_mwh: u64,
    pub export_mwh: u64,
}

/// The orders trimmed to their areas' limits, in the order given (orders trimmed to nothing
/// are left out). Areas without a limit are not touched.
pub fn within_limits(orders: &[Order], limits: &BTreeMap<AreaId, AreaLimit>) -> Vec<Order> {
    let mut keep: Vec<u64> = orders.iter().map(|o| o.energy_mwh).collect();
    let mut by_area: BTreeMap<(AreaId, Side), Vec<usize>> = BTreeMap::new();
    for (i, o) in orders.iter().enumerate() {
        if limits.contains_key(&o.area) {
            by_area.entry((o.area, o.side)).or_default().push(i);
        }
    }
    for ((area, side), mut idx) in by_area {
        let limit = limits[&area];
        let mut left = match side {
            Side::Bid => {
                idx.sort_by_key(|&i| {
                    let o = &orders[i];
                    (std::cmp::Reverse(o.price_per_kwh), o.time, o.id)
                });
                limit.import_mwh
            }
            Side::Ask => {
                idx.sort_by_key(|&i| {
                    let o = &orders[i];
                    (o.price_per_kwh, o.time, o.id)
                });
                limit.export_mwh
            }
        };
        for i in idx {
            keep[i] = keep[i].min(left);
            left -= keep[i];
        }
    }
    orders
        .iter()
        .zip(keep)
        .filter(|(_, e)| *e > 0)
        .map(|(o, e)| Order {
            energy_mwh: e,
            ..*o
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(id: u64, side: Side, energy_mwh: u64, price: u64, area: AreaId) -> Order {
        Order {
            id,
            side,
            energy_mwh,
            price_per_kwh: price,
            time: id,
            area,
        }
    }

    #[test]
    fn the_most_valuable_energy_is_kept_within_the_limit() {
        let orders = [
            order(1, Side::Bid, 2_000, 10, 0),
            order(2, Side::Bid, 3_000, 30, 0),
            order(3, Side::Ask, 4_000, 5, 0),
            order(4, Side::Ask, 1_000, 2, 0),
            order(5, Side::Bid, 9_000, 1, 1), // no limit in area 1
        ];
        let limits = BTreeMap::from([(
            0,
            AreaLimit {
                import_mwh: 4_000,
                export_mwh: 1_500,
            },
        )]);
        let out = within_limits(&orders, &limits);
        let energy: Vec<(u64, u64)> = out.iter().map(|o| (o.id, o.energy_mwh)).collect();
        assert_eq!(
            energy,
            [(1, 1_000), (2, 3_000), (3, 500), (4, 1_000), (5, 9_000)]
        );
        // Nothing left: the order is gone.
        let none = BTreeMap::from([(
            0,
            AreaLimit {
                import_mwh: 0,
                export_mwh: 0,
            },
        )]);
        assert_eq!(within_limits(&orders, &none).len(), 1);
    }
}
