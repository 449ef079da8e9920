//! The price lists for tools that plan by price (`/v1/tariff/grid`, `/v1/tariff/feedin`): one
//! entry per slot from the current one over the next 24 hours, the cleared price where a slot
//! traded, the same quarter hour's recent mean as the forecast, the tariff otherwise.

mod common;

use common::tx;
use gridmesh_api::tariff::{price_list, PriceSide, LIST_SLOTS};
use gridmesh_ledger::readers::MarketReader;
use gridmesh_ledger::tx::DeviceInfo;
use gridmesh_ledger::{Chain, DeviceKind, Genesis, Keypair, Side, TxKind, VerifiedTx};
use gridmesh_types::units::{rfc3339, slot_start_ms, SLOTS_PER_DAY};
use gridmesh_types::Amount;

/// Slot 68 of a day: the evening tariff's first quarter hour.
const SLOT: u64 = 96 * 19_791 + 68;

fn key(i: u8) -> Keypair {
    Keypair::from_seed([i + 1; 32])
}

/// A block proposed by the first key, every transaction of which applies.
fn block(chain: &mut Chain, ts: u64, txs: Vec<VerifiedTx>) {
    assert_eq!(common::block(chain, ts, key(0).address(), txs), 0);
}

#[test]
fn a_price_list_gives_the_cleared_price_then_the_forecast_then_the_tariff() {
    let dir = tempfile::tempdir().unwrap();
    let mut g = Genesis::dev(key(0).address());
    g.timestamp_ms = slot_start_ms(SLOT) - 3_600_000;
    g.accounts = (0..3)
        .map(|i| gridmesh_ledger::genesis::GenesisAccount {
            address: key(i).address(),
            balance: Amount::from_tokens(1_000),
        })
        .collect();
    let tariff = |from_slot, retail: &str, feed_in: &str| gridmesh_ledger::config::TariffFile {
        from_slot,
        retail_per_kwh: retail.into(),
        feed_in_per_kwh: feed_in.into(),
    };
    g.market = Some(gridmesh_ledger::market::MarketFile {
        tariffs: vec![tariff(0, "0.30", "0.08"), tariff(68, "0.42", "0.05")],
        ..Default::default()
    });
    let mut chain = Chain::open(dir.path(), &g).unwrap();
    let (seller, buyer) = (key(1), key(2));
    let t0 = slot_start_ms(SLOT) - 3_000_000;
    let info = DeviceInfo {
        kind: DeviceKind::Battery,
        capacity_w: 5_000,
        location: "s/a".into(),
        latitude_microdeg: 0,
        longitude_microdeg: 0,
        tilt_deg: 0,
        azimuth_deg: 0,
    };
    let register = TxKind::register_device_key(
        chain.chain_id(),
        &seller.address(),
        &Keypair::from_seed([9; 32]),
        info,
        Amount::from_tokens(10),
    );
    let meter = TxKind::RegisterDevice {
        kind: DeviceKind::Meter,
        capacity_w: 10_000,
    };
    let regs = vec![tx(&chain, &seller, register), tx(&chain, &buyer, meter)];
    block(&mut chain, t0, regs);
    let order = |side, wh: u64, price: u64, at: &str| TxKind::PlaceOrder {
        slot: SLOT,
        side,
        energy_mwh: wh * 1_000,
        price_per_kwh: price,
        location: at.into(),
    };
    let orders = vec![
        tx(&chain, &seller, order(Side::Ask, 1_000, 100_000, "s/a")),
        tx(&chain, &buyer, order(Side::Bid, 600, 250_000, "s/b")),
    ];
    block(&mut chain, t0 + 1_000, orders);
    block(&mut chain, slot_start_ms(SLOT) - 300_000, vec![]); // clears
    let trades = chain.state().trades(SLOT);
    assert_eq!(trades.len(), 1);
    let (buyer_price, seller_price) = (
        trades[0].trade.buyer_price_per_kwh,
        trades[0].trade.seller_price_per_kwh,
    );

    let now = slot_start_ms(SLOT) + 60_000;
    for (side, cleared, tariff_now, tariff_before) in [
        (PriceSide::Grid, buyer_price, 0.42, 0.30),
        (PriceSide::FeedIn, seller_price, 0.05, 0.08),
    ] {
        let list = price_list(chain.state(), now, side);
        assert_eq!(list.len() as u64, LIST_SLOTS);
        assert_eq!(list[0].start, rfc3339(slot_start_ms(SLOT) / 1000));
        for w in list.windows(2) {
            assert_eq!(w[0].end, w[1].start, "one entry per slot, contiguous");
        }
        // The slot that traded: its cleared price.
        assert_eq!(list[0].value, cleared as f64 / 1e6);
        // The next slots: the tariff (evening from slot 68 of the day, then the day's first).
        assert_eq!(list[1].value, tariff_now);
        let morning = (SLOTS_PER_DAY - SLOT % SLOTS_PER_DAY) as usize;
        assert_eq!(list[morning].value, tariff_before);
        // The same quarter hour tomorrow: the forecast from today's cleared price.
        assert_eq!(list[SLOTS_PER_DAY as usize].value, cleared as f64 / 1e6);
    }
}
