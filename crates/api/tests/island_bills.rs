//! An islanded slot settles between members only: whatever the members trade and meter, no bill
//! line names the utility, and the energy delivered is what was sold within what the sellers'
//! meters and keyed devices measured (finding 8 of issue 19: an islanded home was billed a
//! feed-in credit by a utility that was not connected).

mod common;

use common::tx;
use gridmesh_api::market::slot_view;
use gridmesh_ledger::readers::MarketReader;
use gridmesh_ledger::tx::{DeviceInfo, DeviceReading};
use gridmesh_ledger::{
    Chain, DeviceKind, Genesis, GridEventKind, Keypair, Side, TxKind, VerifiedTx,
};
use gridmesh_types::units::slot_start_ms;
use gridmesh_types::Amount;
use proptest::prelude::*;

const SLOT: u64 = 1_900_000;

fn key(i: usize) -> Keypair {
    Keypair::from_seed([i as u8 + 1; 32])
}

fn device(i: usize) -> Keypair {
    Keypair::from_seed([0x80 | i as u8; 32])
}

/// A block proposed by the first key: how many transactions it refused.
fn block(chain: &mut Chain, ts: u64, txs: Vec<VerifiedTx>) -> usize {
    common::block(chain, ts, key(0).address(), txs)
}

#[derive(Debug, Clone)]
struct Seller {
    ask_wh: u64,
    meter_wh: u64,
    device_wh: u64,
}

fn seller() -> impl Strategy<Value = Seller> {
    (1u64..1_200, 0u64..=1_250, 0u64..=1_250).prop_map(|(ask_wh, meter_wh, device_wh)| Seller {
        ask_wh,
        meter_wh,
        device_wh,
    })
}

fn battery(i: usize) -> DeviceInfo {
    DeviceInfo {
        kind: DeviceKind::Battery,
        capacity_w: 5_000,
        location: format!("s/{i}"),
        latitude_microdeg: 0,
        longitude_microdeg: 0,
        tilt_deg: 0,
        azimuth_deg: 0,
    }
}

/// A reading of `out_mwh` by seller `i`'s battery, committed to one signed sample.
fn device_reading(chain: &Chain, i: usize, out_mwh: u64) -> DeviceReading {
    DeviceReading::with_one_sample(
        &device(i),
        chain.chain_id(),
        SLOT,
        1,
        (out_mwh, out_mwh),
        (0, 0),
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn an_islanded_slot_has_no_utility_and_delivers_what_was_metered(
        sellers in proptest::collection::vec(seller(), 1..4),
        bids in proptest::collection::vec((1u64..1_500, 0u64..1_500), 1..4),
    ) {
        let n = 1 + sellers.len() + bids.len();
        let operator = n;
        let dir = tempfile::tempdir().unwrap();
        let mut g = Genesis::dev(key(0).address());
        g.timestamp_ms = slot_start_ms(SLOT) - 3_600_000;
        g.accounts = (0..=n)
            .map(|i| gridmesh_ledger::genesis::GenesisAccount {
                address: key(i).address(),
                balance: Amount::from_tokens(1_000),
            })
            .collect();
        g.market = Some(gridmesh_ledger::market::MarketFile {
            grid_operator: Some(key(operator).address()),
            ..Default::default()
        });
        let mut chain = Chain::open(dir.path(), &g).unwrap();
        let t0 = slot_start_ms(SLOT) - 3_000_000;
        let seller_ids: Vec<usize> = (1..=sellers.len()).collect();
        let buyer_ids: Vec<usize> = (sellers.len() + 1..n).collect();
        let mut regs = Vec::new();
        for &i in &seller_ids {
            let owner = key(i).address();
            let bond = Amount::from_tokens(10);
            let kind =
                TxKind::register_device_key(chain.chain_id(), &owner, &device(i), battery(i), bond);
            regs.push(tx(&chain, &key(i), kind));
        }
        for &i in &buyer_ids {
            let kind = TxKind::RegisterDevice { kind: DeviceKind::Meter, capacity_w: 10_000 };
            regs.push(tx(&chain, &key(i), kind));
        }
        let island = TxKind::GridEvent { event: GridEventKind::Islanded, at_ms: t0 };
        regs.push(tx(&chain, &key(operator), island));
        prop_assert_eq!(block(&mut chain, t0, regs), 0);
        let order = |i: usize, side, wh: u64, price_per_kwh| TxKind::PlaceOrder {
            slot: SLOT,
            side,
            energy_mwh: wh * 1_000,
            price_per_kwh,
            location: format!("s/{i}"),
        };
        let mut orders = Vec::new();
        for (s, &i) in sellers.iter().zip(&seller_ids) {
            orders.push(tx(&chain, &key(i), order(i, Side::Ask, s.ask_wh, 100_000)));
        }
        for (b, &i) in bids.iter().zip(&buyer_ids) {
            orders.push(tx(&chain, &key(i), order(i, Side::Bid, b.0, 400_000)));
        }
        prop_assert_eq!(block(&mut chain, t0 + 1_000, orders), 0);
        block(&mut chain, slot_start_ms(SLOT) - 300_000, vec![]); // clears, islanded
        let end = slot_start_ms(SLOT + 1);
        let reading = |import_wh: u64, export_wh: u64| TxKind::SubmitReading {
            slot: SLOT,
            import_mwh: import_wh * 1_000,
            export_mwh: export_wh * 1_000,
        };
        let mut readings = Vec::new();
        for (s, &i) in sellers.iter().zip(&seller_ids) {
            readings.push(tx(&chain, &key(i), reading(0, s.meter_wh)));
            if s.device_wh > 0 {
                let r = device_reading(&chain, i, s.device_wh * 1_000);
                let kind = TxKind::SubmitDeviceReadings { readings: vec![r] };
                readings.push(tx(&chain, &device(i), kind));
            }
        }
        for (b, &i) in bids.iter().zip(&buyer_ids) {
            readings.push(tx(&chain, &key(i), reading(b.1, 0)));
        }
        prop_assert_eq!(block(&mut chain, end + 1_000, readings), 0);
        block(&mut chain, end + 3_600_000, vec![]); // settles
        let view = slot_view(chain.state(), SLOT, end + 3_600_000).expect("the slot");
        prop_assert!(view.island);
        prop_assert!(view.utility.is_empty(), "{:?}", view.utility);
        prop_assert!(!view.bills.is_empty());
        for b in &view.bills {
            prop_assert_eq!(b.utility_import_kwh.as_str(), "0");
            prop_assert_eq!(b.utility_export_kwh.as_str(), "0");
            prop_assert_eq!(b.utility_cost.as_str(), "0");
            prop_assert_eq!(b.utility_credit.as_str(), "0");
        }
        // Each seller delivers what it sold within what its meter and its battery measured.
        let trades = chain.state().trades(SLOT);
        for (s, &i) in sellers.iter().zip(&seller_ids) {
            let mine: Vec<_> = trades.iter().filter(|t| t.seller == key(i).address()).collect();
            let sold: u64 = mine.iter().map(|t| t.trade.energy_mwh).sum();
            let delivered: u64 = mine
                .iter()
                .map(|t| t.settlement.as_ref().unwrap().delivered_mwh)
                .sum();
            let metered = s.meter_wh.min(s.device_wh) * 1_000;
            prop_assert_eq!(delivered, sold.min(metered));
        }
    }
}
