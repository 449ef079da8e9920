//! Properties every mechanism must have, on random order sets (with and without a fee hierarchy):
//! individual rationality, energy balance, exact money conservation, independence from the order
//! orders are listed in, and welfare never above the optimum.

use std::collections::BTreeMap;

use gridmesh_market::{clear, Areas, GridFee, Mechanism, Order, Side, Tariff};
use proptest::prelude::*;

fn order_strategy(n_areas: u32) -> impl Strategy<Value = (bool, u64, u64, u64, u32)> {
    (
        any::<bool>(),
        1u64..5_000_000, // energy: up to 5 kWh
        1u64..400_000,   // price: up to 0.4 tokens/kWh
        0u64..4,         // few distinct arrival times: ties are the interesting case
        0..n_areas,
    )
}

fn build(raw: Vec<(bool, u64, u64, u64, u32)>, coarse: bool) -> Vec<Order> {
    raw.into_iter()
        .enumerate()
        .map(|(i, (bid, energy, price, time, area))| Order {
            id: i as u64 * 7 + 3,
            side: if bid { Side::Bid } else { Side::Ask },
            energy_mwh: energy,
            // Coarse prices create many ties.
            price_per_kwh: if coarse {
                (price / 50_000 + 1) * 50_000
            } else {
                price
            },
            time,
            area,
        })
        .collect()
}

fn hierarchy() -> Areas {
    let fees = [
        GridFee {
            constant_per_kwh: 3_000,
            percent_bps: 100,
        },
        GridFee {
            constant_per_kwh: 1_000,
            percent_bps: 0,
        },
        GridFee {
            constant_per_kwh: 0,
            percent_bps: 50,
        },
    ];
    Areas::from_paths(["s1/h1", "s1/h2", "s2/h3", "s2/h4"], &fees).unwrap()
}

const TARIFF: Tariff = Tariff {
    retail_per_kwh: 300_000,
    feed_in_per_kwh: 80_000,
};

fn check_all(orders: &[Order], areas: &Areas, shuffled: &[Order]) -> Result<(), TestCaseError> {
    let by_id: BTreeMap<u64, Order> = orders.iter().map(|o| (o.id, *o)).collect();
    let flat_no_fees = areas.len() == 1 && areas.fee(0).is_zero();
    for mechanism in Mechanism::ALL {
        let c = clear(orders, areas, mechanism, Some(TARIFF)).unwrap();
        let mut traded: BTreeMap<u64, u64> = BTreeMap::new();
        let (mut paid, mut received) = (0u128, 0u128);
        for t in &c.trades {
            let (b, a) = (by_id[&t.bid], by_id[&t.ask]);
            prop_assert_eq!(b.side, Side::Bid);
            prop_assert_eq!(a.side, Side::Ask);
            prop_assert!(t.energy_mwh > 0);
            prop_assert!(
                t.buyer_price_per_kwh <= b.price_per_kwh,
                "{mechanism}: buyer pays above its limit"
            );
            prop_assert!(
                t.seller_price_per_kwh >= a.price_per_kwh,
                "{mechanism}: seller gets below its ask"
            );
            prop_assert!(t.buyer_price_per_kwh >= t.seller_price_per_kwh + t.fee_per_kwh);
            // Fees: every market on the path between the two areas, once. Huang and community can
            // leave two orders of one branch unmatched there (a price setter; a bid below the local
            // price) that then meet higher up and pay the markets above their branch too.
            let path = areas.path_fee(a.area, a.price_per_kwh, b.area, b.price_per_kwh);
            if matches!(mechanism, Mechanism::Huang | Mechanism::Community) {
                prop_assert!(t.fee_per_kwh >= path);
            } else {
                prop_assert_eq!(t.fee_per_kwh, path);
            }
            // Money: what the buyer pays is split exactly, to the base unit.
            prop_assert_eq!(
                t.buyer_pays(),
                t.seller_receives() + t.fees() + t.operator_receives()
            );
            paid += t.buyer_pays();
            received += t.seller_receives() + t.fees() + t.operator_receives();
            *traded.entry(t.bid).or_default() += t.energy_mwh;
            *traded.entry(t.ask).or_default() += t.energy_mwh;
            if mechanism.has_uniform_price() && flat_no_fees {
                prop_assert_eq!(Some(t.buyer_price_per_kwh), c.clearing_price_per_kwh);
            }
            if mechanism == Mechanism::Community {
                // One local price in the meeting market; fees lie between what the seller keeps
                // and what the buyer pays.
                let p = TARIFF.community_price();
                prop_assert!(t.seller_price_per_kwh <= p && p <= t.buyer_price_per_kwh);
                if flat_no_fees {
                    prop_assert_eq!(t.buyer_price_per_kwh, p);
                }
            }
        }
        prop_assert_eq!(paid, received);
        // Energy bought equals energy sold, and nobody trades more than it offered.
        let bought: u64 = c.trades.iter().map(|t| t.energy_mwh).sum();
        prop_assert_eq!(bought, c.volume_mwh);
        let sold: u64 = traded
            .iter()
            .filter(|(id, _)| by_id[id].side == Side::Ask)
            .map(|(_, q)| q)
            .sum();
        prop_assert_eq!(sold, bought);
        for u in &c.utility {
            let o = by_id[&u.order];
            let left = o.energy_mwh - traded.get(&u.order).copied().unwrap_or(0);
            prop_assert_eq!(u.energy_mwh, left);
            match o.side {
                Side::Bid => prop_assert!(o.price_per_kwh >= TARIFF.retail_per_kwh),
                Side::Ask => prop_assert!(o.price_per_kwh <= TARIFF.feed_in_per_kwh),
            }
        }
        for (id, q) in &traded {
            prop_assert!(
                *q <= by_id[id].energy_mwh,
                "{mechanism}: order {id} over-traded"
            );
        }
        prop_assert!(
            c.welfare <= c.optimal_welfare,
            "{mechanism}: welfare above the optimum"
        );
        if flat_no_fees && matches!(mechanism, Mechanism::PayAsClear | Mechanism::PayAsOffer) {
            prop_assert_eq!(
                c.welfare,
                c.optimal_welfare,
                "{}: efficient mechanisms reach the optimum",
                mechanism
            );
        }
        // The same orders listed in another order give the very same result.
        let again = clear(shuffled, areas, mechanism, Some(TARIFF)).unwrap();
        prop_assert_eq!(&again, &c, "{}: result depends on input order", mechanism);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn flat_market(raw in proptest::collection::vec(order_strategy(1), 0..40), coarse in any::<bool>(), seed in any::<u64>()) {
        let orders = build(raw, coarse);
        let mut shuffled = orders.clone();
        shuffle(&mut shuffled, seed);
        check_all(&orders, &Areas::flat(), &shuffled)?;
    }

    #[test]
    fn hierarchy_with_fees(raw in proptest::collection::vec(order_strategy(7), 0..40), coarse in any::<bool>(), seed in any::<u64>()) {
        let orders = build(raw, coarse);
        let mut shuffled = orders.clone();
        shuffle(&mut shuffled, seed);
        check_all(&orders, &hierarchy(), &shuffled)?;
    }
}

/// A deterministic Fisher-Yates shuffle (splitmix64), so a failing case replays exactly.
fn shuffle(v: &mut [Order], mut seed: u64) {
    let mut next = || {
        seed = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = seed;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    for i in (1..v.len()).rev() {
        let j = (next() % (i as u64 + 1)) as usize;
        v.swap(i, j);
    }
}
