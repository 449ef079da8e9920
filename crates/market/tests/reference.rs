//! Published reference results, reproduced.
//!
//! Grid Singularity's gsy-e: the pay-as-clear test cases of its two-sided market
//! (`tests/market/test_two_sided_pay_as_clear.py`) and the hierarchical constant grid-fee example
//! of its documentation (an offer of 0.10 through fees 0.01 + 0.02 + 0.01 costs the buyer 0.14).

use gridmesh_market::{clear, Areas, GridFee, Mechanism, Order, Side, Trade};

/// A price in tokens per kWh with up to two decimals ("cents"), as base units.
fn price(cents: u64) -> u64 {
    cents * 10_000
}

fn orders(bids: &[u64], asks: &[u64]) -> Vec<Order> {
    let mut out = Vec::new();
    for (i, &p) in bids.iter().enumerate() {
        out.push(Order {
            id: i as u64,
            side: Side::Bid,
            energy_mwh: 1_000_000,
            price_per_kwh: p,
            time: 0,
            area: 0,
        });
    }
    for (i, &p) in asks.iter().enumerate() {
        out.push(Order {
            id: 100 + i as u64,
            side: Side::Ask,
            energy_mwh: 1_000_000,
            price_per_kwh: p,
            time: 0,
            area: 0,
        });
    }
    out
}

fn pay_as_clear(bids: &[u64], asks: &[u64]) -> (Option<u64>, u64) {
    let c = clear(
        &orders(bids, asks),
        &Areas::flat(),
        Mechanism::PayAsClear,
        None,
    )
    .unwrap();
    (c.clearing_price_per_kwh, c.volume_mwh)
}

#[test]
fn gsy_e_pay_as_clear_seven_by_seven_clears_at_4_volume_4() {
    let rates: Vec<u64> = (1..=7).map(|r| price(100 * r)).collect();
    assert_eq!(pay_as_clear(&rates, &rates), (Some(price(400)), 4_000_000));
}

#[test]
fn gsy_e_pay_as_clear_uneven_offers_clear_at_5_volume_3() {
    let bids: Vec<u64> = (1..=7).map(|r| price(100 * r)).collect();
    let asks: Vec<u64> = [2, 3, 3, 5, 6, 7, 8].map(|r| price(100 * r)).to_vec();
    assert_eq!(pay_as_clear(&bids, &asks), (Some(price(500)), 3_000_000));
}

#[test]
fn gsy_e_pay_as_clear_decimal_rates_clear_at_2_2() {
    let bids = [price(330), price(220), price(110)];
    let asks = [price(110), price(220), price(330)];
    assert_eq!(pay_as_clear(&bids, &asks), (Some(price(220)), 2_000_000));
}

/// Where we differ from gsy-e: buyers tied at the marginal price with more demand than supply.
/// gsy-e finds no rate at which supply covers demand and clears nothing; we clear at that price
/// and let priority (time, then id) decide which bid trades.
#[test]
fn tied_marginal_buyers_still_clear() {
    let c = clear(
        &orders(&[price(500), price(500)], &[price(300)]),
        &Areas::flat(),
        Mechanism::PayAsClear,
        None,
    )
    .unwrap();
    assert_eq!(c.clearing_price_per_kwh, Some(price(500)));
    assert_eq!(c.volume_mwh, 1_000_000);
    assert_eq!(c.trades[0].bid, 0, "the lower id wins the tie");
}

/// gsy-e's constant grid-fee example: PV in House 2 offers 1 kWh at 0.10; the load in House 1
/// buys it through Neighbourhood 2 (0.01), the Grid market (0.02) and Neighbourhood 1 (0.01);
/// houses charge nothing. The buyer pays 0.14, the seller keeps 0.10, the fees are 0.04.
#[test]
fn gsy_e_hierarchical_constant_fees_cost_the_buyer_0_14() {
    let fees = [
        GridFee {
            constant_per_kwh: price(2),
            percent_bps: 0,
        }, // Grid (root)
        GridFee {
            constant_per_kwh: price(1),
            percent_bps: 0,
        }, // Neighbourhoods
        GridFee::default(), // Houses
    ];
    let areas = Areas::from_paths(["n1/house1", "n2/house2"], &fees).unwrap();
    let h1 = areas.find("n1/house1").unwrap();
    let h2 = areas.find("n2/house2").unwrap();
    let o = vec![
        Order {
            id: 1,
            side: Side::Ask,
            energy_mwh: 1_000_000,
            price_per_kwh: price(10),
            time: 0,
            area: h2,
        },
        Order {
            id: 2,
            side: Side::Bid,
            energy_mwh: 1_000_000,
            price_per_kwh: price(30),
            time: 1,
            area: h1,
        },
    ];
    for mechanism in [Mechanism::PayAsOffer, Mechanism::PayAsClear] {
        let c = clear(&o, &areas, mechanism, None).unwrap();
        assert_eq!(c.trades.len(), 1, "{mechanism}");
        let t: Trade = c.trades[0];
        assert_eq!(t.area, 0, "they meet in the Grid market");
        assert_eq!(t.fee_per_kwh, price(4));
        if mechanism == Mechanism::PayAsOffer {
            assert_eq!(t.buyer_price_per_kwh, price(14));
            assert_eq!(t.seller_price_per_kwh, price(10));
            assert_eq!(t.buyer_pays(), 140_000);
        }
        assert_eq!(
            t.buyer_pays(),
            t.seller_receives() + t.fees() + t.operator_receives()
        );
    }
    // A bid of 0.139 cannot pay offer plus fees: no trade.
    let mut low = o.clone();
    low[1].price_per_kwh = price(14) - 1;
    assert!(clear(&low, &areas, Mechanism::PayAsOffer, None)
        .unwrap()
        .trades
        .is_empty());
    // Inside one house the same two orders pay only that house's fee (none).
    let mut local = o.clone();
    local[1].area = h2;
    let c = clear(&local, &areas, Mechanism::PayAsOffer, None).unwrap();
    assert_eq!(c.trades[0].fee_per_kwh, 0);
    assert_eq!(c.trades[0].area, h2);
}

/// The network charge rule (documented in the crate): a trade pays the fee of every market on the
/// path between seller and buyer, once. Neighbours on one street meet in their street's market and
/// pay its fee only; a trade across the feeder also pays the feeder's and the other street's.
#[test]
fn a_trade_between_neighbours_costs_less_than_one_across_the_feeder() {
    let fees = [
        GridFee {
            constant_per_kwh: price(2),
            percent_bps: 0,
        }, // the feeder (root)
        GridFee {
            constant_per_kwh: price(1),
            percent_bps: 0,
        }, // streets
    ];
    let paths = ["street-1/home-1", "street-1/home-2", "street-2/home-1"];
    let areas = Areas::from_paths(paths, &fees).unwrap();
    let order = |id, side, price_ct, path: &str| Order {
        id,
        side,
        energy_mwh: 1_000_000,
        price_per_kwh: price(price_ct),
        time: id,
        area: areas.find(path).unwrap(),
    };
    let fee_of = |buyer: &str| {
        let o = vec![
            order(1, Side::Ask, 10, "street-1/home-1"),
            order(2, Side::Bid, 30, buyer),
        ];
        let c = clear(&o, &areas, Mechanism::PayAsOffer, None).unwrap();
        assert_eq!(c.trades.len(), 1);
        c.trades[0].fee_per_kwh
    };
    assert_eq!(
        fee_of("street-1/home-2"),
        price(1),
        "neighbours: the street's fee"
    );
    assert_eq!(
        fee_of("street-2/home-1"),
        price(1) + price(2) + price(1),
        "across the feeder: both streets and the feeder"
    );
}
