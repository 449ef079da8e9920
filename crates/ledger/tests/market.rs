//! The energy market on the ledger, end to end through real blocks: escrow at order time,
//! clearing at gate closure, settlement from meter readings, estimates for missing readings and
//! re-settlement by late ones; bad input is refused with the documented error and changes nothing;
//! tokens are conserved at every block.

use gridmesh_ledger::devices::{
    device_bond_account, DeviceIdentity, DeviceReadingRecord, DeviceStatus, HoldReason,
    ReadingStatus,
};
use gridmesh_ledger::grid_operator::{GridEventRecord, GridMode};
use gridmesh_ledger::market::{
    escrow_account, MarketTxError, OrderRecord, SettlementStatus, SlotRecord, TradeRecord,
};
use gridmesh_ledger::readers::{DeviceReader, EconomicsReader, GridReader, MarketReader};
use gridmesh_ledger::tx::TX_VERSION;
use gridmesh_ledger::{
    Chain, DeviceInfo, DeviceKind, Genesis, GridEventKind, Keypair, Side, TxBody, TxError, TxKind,
    VerifiedTx,
};
use gridmesh_types::units::slot_start_ms;
use gridmesh_types::{Address, Amount};
use proptest::prelude::*;

const SLOT: u64 = 1_900_000; // some slot in 2024

struct Net {
    _dir: tempfile::TempDir,
    chain: Chain,
    keys: Vec<Keypair>,
    supply: Amount,
    /// Every block, to replay on a second replica.
    blocks: Vec<gridmesh_ledger::Block>,
    genesis: Genesis,
}

impl Net {
    fn new(n: usize) -> Net {
        Net::with_mechanism(n, "pay-as-clear", false)
    }

    /// A chain whose market uses `mechanism`, with grid fees (1 ct + 2 % at the root, 0.5 ct per
    /// street) if `fees`.
    fn with_mechanism(n: usize, mechanism: &str, fees: bool) -> Net {
        Net::build(n, mechanism, fees, None)
    }

    /// A pay-as-clear chain whose grid operator is the last key.
    fn with_grid_operator(n: usize) -> Net {
        Net::build(n, "pay-as-clear", false, Some(n - 1))
    }

    fn build(n: usize, mechanism: &str, fees: bool, grid_operator: Option<usize>) -> Net {
        Net::build_with(n, mechanism, fees, grid_operator, |_| {})
    }

    /// As `build`, with `edit` applied to the genesis first.
    fn build_with(
        n: usize,
        mechanism: &str,
        fees: bool,
        grid_operator: Option<usize>,
        edit: impl FnOnce(&mut Genesis),
    ) -> Net {
        let dir = tempfile::tempdir().unwrap();
        let keys: Vec<Keypair> = (0..n)
            .map(|i| Keypair::from_seed([i as u8 + 1; 32]))
            .collect();
        let mut g = Genesis::dev(keys[0].address());
        g.timestamp_ms = slot_start_ms(SLOT) - 3_600_000;
        g.accounts = keys
            .iter()
            .map(|k| gridmesh_ledger::genesis::GenesisAccount {
                address: k.address(),
                balance: Amount::from_tokens(1_000),
            })
            .collect();
        g.market = Some(gridmesh_ledger::market::MarketFile {
            mechanism: mechanism.into(),
            grid_fees: if !fees {
                vec![]
            } else {
                vec![
                    gridmesh_ledger::config::FeeFile {
                        constant_per_kwh: Some("0.01".into()),
                        percent: Some("2".into()),
                    },
                    gridmesh_ledger::config::FeeFile {
                        constant_per_kwh: Some("0.005".into()),
                        percent: None,
                    },
                ]
            },
            grid_operator: Some(grid_operator.map_or(Address([0xee; 32]), |i| keys[i].address())),
            market_operator: Some(Address([0xdd; 32])),
            ..Default::default()
        });
        edit(&mut g);
        let chain = Chain::open(dir.path(), &g).unwrap();
        let supply = chain.state().total_supply();
        Net {
            _dir: dir,
            chain,
            keys,
            supply,
            blocks: vec![],
            genesis: g,
        }
    }

    fn tx(&self, who: usize, kind: TxKind) -> VerifiedTx {
        let k = &self.keys[who];
        TxBody {
            version: TX_VERSION,
            chain_id: self.chain.chain_id().to_string(),
            sender: k.address(),
            nonce: self.chain.account(&k.address()).nonce,
            kind,
        }
        .sign(k)
        .verify()
        .unwrap()
    }

    /// Builds and commits a block at `ts` with one transaction per sender; returns the errors of
    /// those that were rejected.
    fn block(&mut self, ts: u64, txs: Vec<VerifiedTx>) -> Vec<TxError> {
        let built = self.chain.build_block(txs, ts, self.keys[0].address());
        let errors = built.rejected.iter().map(|(_, e)| e.clone()).collect();
        self.blocks.push(built.block.clone());
        self.chain.commit(&built.block, built.executed).unwrap();
        // Tokens are conserved at every block: the balances sum to the genesis supply plus
        // what rewards minted (nothing burns).
        let supply = self.chain.state().supply();
        assert_eq!(supply.genesis, self.supply.0);
        assert_eq!(supply.burned, 0);
        assert_eq!(
            self.chain.state().total_supply().0,
            supply.expected(),
            "the balances reconcile with genesis + minted - burned at every block"
        );
        errors
    }

    fn one(&mut self, ts: u64, who: usize, kind: TxKind) -> Result<(), TxError> {
        let tx = self.tx(who, kind);
        match self.block(ts, vec![tx]).pop() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn balance(&self, who: usize) -> u128 {
        self.chain.account(&self.keys[who].address()).balance.0
    }

    /// The key of member `who`'s producing device (see [`keyed_battery`]).
    fn device_key(&self, who: usize) -> Keypair {
        Keypair::from_seed([0x80 | who as u8; 32])
    }

    /// Member `who`'s producing device's signed reading of `slot`: `out_wh` discharged, its
    /// register continued from the chain's last checked reading, committed to one signed sample.
    /// Sent by the device key itself (anyone may send readings; the device's signature counts).
    fn device_reading(&self, who: usize, slot: u64, out_wh: u64) -> VerifiedTx {
        let key = self.device_key(who);
        let last = self
            .chain
            .state()
            .device(&key.address())
            .and_then(|d| d.register_mwh)
            .unwrap_or(0);
        let out_mwh = out_wh * 1_000;
        let r = gridmesh_ledger::tx::DeviceReading::with_one_sample(
            &key,
            self.chain.chain_id(),
            slot,
            slot,
            (out_mwh, last + out_mwh),
            (0, 0),
        );
        TxBody {
            version: TX_VERSION,
            chain_id: self.chain.chain_id().to_string(),
            sender: key.address(),
            nonce: self.chain.account(&key.address()).nonce,
            kind: TxKind::SubmitDeviceReadings { readings: vec![r] },
        }
        .sign(&key)
        .verify()
        .unwrap()
    }

    fn escrow(&self) -> u128 {
        self.chain.account(&escrow_account()).balance.0
    }

    fn order(&self, slot: u64, id: u64) -> OrderRecord {
        let orders = self.chain.state().orders(slot);
        orders.into_iter().find(|(i, _)| *i == id).expect("order").1
    }
}

fn order(side: Side, kwh_milli: u64, price_milli_tokens: u64, location: &str) -> TxKind {
    TxKind::PlaceOrder {
        slot: SLOT,
        side,
        energy_mwh: kwh_milli * 1_000,
        price_per_kwh: price_milli_tokens * 1_000,
        location: location.into(),
    }
}

fn reading(import_wh: u64, export_wh: u64) -> TxKind {
    TxKind::SubmitReading {
        slot: SLOT,
        import_mwh: import_wh * 1_000,
        export_mwh: export_wh * 1_000,
    }
}

fn market_err(r: Result<(), TxError>) -> MarketTxError {
    match r {
        Err(TxError::Market(e)) => e,
        other => panic!("expected a market error, got {other:?}"),
    }
}

#[test]
fn a_slot_from_orders_to_final_settlement() {
    let mut net = Net::new(5);
    let (a, b, c, d) = (1, 2, 3, 4); // sellers a (PV) and b (battery), buyers c and d
    let t0 = slot_start_ms(SLOT) - 3_000_000;
    let errs = net.block(
        t0,
        vec![
            net.tx(a, keyed_battery(&net, a, 5_000)),
            net.tx(b, keyed_battery(&net, b, 3_000)),
            net.tx(
                c,
                TxKind::RegisterDevice {
                    kind: DeviceKind::Meter,
                    capacity_w: 10_000,
                },
            ),
            net.tx(
                d,
                TxKind::RegisterDevice {
                    kind: DeviceKind::Meter,
                    capacity_w: 10_000,
                },
            ),
        ],
    );
    assert!(errs.is_empty(), "{errs:?}");

    // Orders: asks 1 kWh @ 0.10 and 0.5 kWh @ 0.12; bids 1 kWh @ 0.25 and 1 kWh @ 0.20.
    let before_c = net.balance(c);
    let errs = net.block(
        t0 + 1_000,
        vec![
            net.tx(a, order(Side::Ask, 1_000, 100, "street/house-a")),
            net.tx(b, order(Side::Ask, 500, 120, "street/house-b")),
            net.tx(c, order(Side::Bid, 1_000, 250, "street/house-c")),
            net.tx(d, order(Side::Bid, 1_000, 200, "street/house-d")),
        ],
    );
    assert!(errs.is_empty(), "{errs:?}");
    // The bid locked its maximum cost; asks locked collateral against the 0.30 retail price;
    // each order the deposit of 0.1 token.
    let deposit = 100_000;
    assert_eq!(before_c - net.balance(c), 250_000 + deposit);
    assert_eq!(
        net.escrow(),
        250_000 + 200_000 + 200_000 + 90_000 + 4 * deposit
    );

    // After gate closure (5 minutes before the slot) orders are refused, with the times.
    let gate = slot_start_ms(SLOT) - 5 * 60_000;
    let late = net.tx(d, order(Side::Bid, 100, 300, ""));
    let errs = net.block(gate, vec![late]);
    assert!(
        matches!(errs.as_slice(), [TxError::Market(MarketTxError::GateClosed { gate_ms, .. })] if *gate_ms == gate),
        "{errs:?}"
    );
    // That block cleared the slot: pay-as-clear at 0.20, 1.5 kWh.
    let slot: SlotRecord = net.chain.state().slot_record(SLOT).expect("slot record");
    assert_eq!(slot.clearing_price_per_kwh, Some(200_000));
    assert_eq!(slot.volume_mwh, 1_500_000);
    assert_eq!(slot.trades, 2);
    assert_eq!(slot.settlement, SettlementStatus::Pending);
    let t0_rec: TradeRecord = net.chain.state().trades(SLOT)[0].clone();
    assert_eq!(
        (t0_rec.buyer, t0_rec.seller),
        (net.keys[c].address(), net.keys[a].address())
    );
    // c's escrow beyond its trade (0.25 - 0.20 per kWh) came back at clearing.
    assert_eq!(before_c - net.balance(c), 200_000);
    let d_order: OrderRecord = net.order(SLOT, 3);
    assert_eq!(d_order.traded_mwh, 500_000);

    // Readings: a delivered 0.6 of 1 kWh; b sends none in time; buyers report imports.
    let end = slot_start_ms(SLOT + 1);
    assert!(matches!(
        market_err(net.one(end - 1, a, reading(0, 600))),
        MarketTxError::SlotNotEnded { .. }
    ));
    assert!(matches!(
        market_err(net.one(end + 1, a, reading(0, 1_250_001))),
        MarketTxError::ExportAboveCapacity { .. }
    ));
    net.one(end + 2, a, reading(0, 600)).unwrap();
    // a's device measured the 0.6 kWh (b's device reports what b will meter).
    let devs = vec![
        net.device_reading(a, SLOT, 600),
        net.device_reading(b, SLOT, 500),
    ];
    assert!(net.block(end + 2, devs).is_empty());
    net.one(end + 3, c, reading(1_000, 0)).unwrap();
    net.one(end + 4, d, reading(900, 0)).unwrap();

    // Settlement, one hour after the slot.
    let (a0, b0, c0, d0) = (
        net.balance(a),
        net.balance(b),
        net.balance(c),
        net.balance(d),
    );
    assert!(net.block(end + 3_600_000, vec![]).is_empty());
    let slot: SlotRecord = net.chain.state().slot_record(SLOT).expect("slot record");
    assert_eq!(slot.settlement, SettlementStatus::Provisional);
    assert_eq!(slot.provisional_sellers, 1);
    let t: TradeRecord = net.chain.state().trades(SLOT)[0].clone();
    let s = t.settlement.unwrap();
    assert_eq!(s.delivered_mwh, 600_000);
    assert!(s.basis.is_final() && !s.basis.is_estimated());
    // c pays 0.6 kWh × 0.20 = 0.12 to a; a compensates c for 0.4 kWh short: its collateral for
    // this trade is 1 kWh × (0.30 - 0.20) = 0.10, the shortfall's share 0.04.
    assert_eq!(s.buyer_paid, 120_000);
    assert_eq!(s.compensation, 40_000);
    // a receives 0.12 for what it delivered and the 0.06 of collateral it did not need.
    assert_eq!(net.balance(a) - a0, 120_000 + 60_000);
    assert_eq!(net.balance(c) - c0, 200_000 - 120_000 + 40_000);
    // b has no reading: its trade is settled by estimate, funds held.
    let t1: TradeRecord = net.chain.state().trades(SLOT)[1].clone();
    let s1 = t1.settlement.clone().unwrap();
    assert!(s1.basis.is_estimated() && !s1.basis.is_final());
    assert_eq!(net.balance(b), b0);
    assert_eq!(net.balance(d), d0);
    assert_eq!(net.escrow(), t1.buyer_escrow + t1.seller_collateral);

    // A late reading from b re-settles its trade with what was metered.
    net.one(end + 7_200_000, b, reading(0, 500)).unwrap();
    let t1: TradeRecord = net.chain.state().trades(SLOT)[1].clone();
    let s1 = t1.settlement.unwrap();
    assert!(s1.basis.is_final() && s1.basis.is_late() && !s1.basis.is_estimated());
    assert_eq!(s1.delivered_mwh, 500_000);
    assert_eq!(net.balance(b) - b0, 100_000 + t1.seller_collateral);
    let slot: SlotRecord = net.chain.state().slot_record(SLOT).expect("slot record");
    assert_eq!(slot.settlement, SettlementStatus::Final);
    assert_eq!(net.escrow(), 0, "every locked token is released exactly");
    // Settled trades cannot be re-opened by another reading.
    assert!(matches!(
        market_err(net.one(end + 7_300_000, b, reading(0, 100))),
        MarketTxError::AlreadySettled(_)
    ));

    // A second replica replaying every block reaches the same state.
    let dir = tempfile::tempdir().unwrap();
    let g = net.genesis.clone();
    let mut replica = Chain::open(dir.path(), &g).unwrap();
    for blk in &net.blocks {
        let ex = replica.verify_block(blk).unwrap();
        replica.commit(blk, ex).unwrap();
    }
    assert_eq!(replica.state().root(), net.chain.state().root());
    // And reopening from disk reproduces it too.
    drop(replica);
    let replica = Chain::open(dir.path(), &g).unwrap();
    assert_eq!(replica.state().root(), net.chain.state().root());
}

#[test]
fn a_final_slots_records_leave_the_state_after_its_history_days() {
    let mut net = Net::build_with(3, "pay-as-clear", false, None, |g| {
        g.market.as_mut().unwrap().history_days = Some(2);
        g.economics = Some(gridmesh_ledger::economics::EconomicsFile {
            dispute_window_minutes: Some(24 * 60),
            ..Default::default()
        });
    });
    let (seller, buyer) = (1, 2);
    let t0 = slot_start_ms(SLOT) - 3_000_000;
    register(
        &mut net,
        t0,
        &[(seller, DeviceKind::Pv), (buyer, DeviceKind::Meter)],
    );
    let orders = vec![
        net.tx(seller, order(Side::Ask, 1_000, 100, "s/a")),
        net.tx(buyer, order(Side::Bid, 1_000, 250, "s/b")),
    ];
    assert!(net.block(t0 + 1_000, orders).is_empty());
    net.block(slot_start_ms(SLOT) - 300_000, vec![]); // gate closure: cleared
    let readings = vec![
        net.tx(seller, reading(0, 1_000)),
        net.device_reading(seller, SLOT, 1_000),
        net.tx(buyer, reading(1_000, 0)),
    ];
    assert!(net
        .block(slot_start_ms(SLOT + 1) + 1_000, readings)
        .is_empty());
    let records = |net: &Net| {
        let st = net.chain.state();
        st.slot_record(SLOT).is_some() as usize
            + st.trades(SLOT).len()
            + st.readings(SLOT).len()
            + st.orders(SLOT).len()
    };
    let day = 86_400_000;
    let final_ms = slot_start_ms(SLOT + 1) + day;
    net.block(final_ms + day, vec![]); // settled and final, still kept
    assert_eq!(records(&net), 1 + 1 + 2 + 2);
    let paid = net.balance(seller);
    net.block(final_ms + 2 * day, vec![]);
    assert_eq!(records(&net), 0, "the slot's records left the state");
    assert_eq!(net.balance(seller), paid, "pruning moves no tokens");
    // A replica replaying the blocks reaches the same root.
    let dir = tempfile::tempdir().unwrap();
    let mut replica = Chain::open(dir.path(), &net.genesis).unwrap();
    for b in &net.blocks {
        let ex = replica.verify_block(b).unwrap();
        replica.commit(b, ex).unwrap();
    }
    assert_eq!(replica.state().root(), net.chain.state().root());
}

#[test]
fn a_history_shorter_than_the_dispute_window_is_refused() {
    let mut g = Genesis::dev(Address([1; 32]));
    g.market = Some(gridmesh_ledger::market::MarketFile {
        history_days: Some(3),
        ..Default::default()
    });
    let Err(e) = g.state() else {
        panic!("a history shorter than the dispute window was accepted")
    };
    let e = e.to_string();
    assert!(e.contains("history_days 3") && e.contains("8 days"), "{e}");
}

/// Member `who`'s producing device with its own key and the least bond, rated `capacity_w`: a
/// battery, which proof of generation checks on its register and rating alone (whatever the sun
/// at the tests' slot). Only keyed devices sell.
fn keyed_battery(net: &Net, who: usize, capacity_w: u32) -> TxKind {
    let info = DeviceInfo {
        kind: DeviceKind::Battery,
        capacity_w,
        ..pv_info()
    };
    TxKind::register_device_key(
        net.chain.chain_id(),
        &net.keys[who].address(),
        &net.device_key(who),
        info,
        Amount::from_tokens(10),
    )
}

/// Registers each member's device of 10 kW: producing kinds (PV, battery) as a keyed battery
/// ([`keyed_battery`]), the others declared.
fn register(net: &mut Net, ts: u64, who: &[(usize, DeviceKind)]) {
    let txs = who
        .iter()
        .map(|&(i, kind)| {
            let tx = if kind.produces() {
                keyed_battery(net, i, 10_000)
            } else {
                TxKind::RegisterDevice {
                    kind,
                    capacity_w: 10_000,
                }
            };
            net.tx(i, tx)
        })
        .collect();
    let errs = net.block(ts, txs);
    assert!(errs.is_empty(), "{errs:?}");
}

fn envelope(location: &str, import_wh: u64, export_wh: u64) -> TxKind {
    TxKind::SetEnvelope {
        slot: SLOT,
        location: location.into(),
        import_mwh: import_wh * 1_000,
        export_mwh: export_wh * 1_000,
    }
}

/// The grid operator's envelope for a connection trims its orders at clearing: the buyer gets
/// only what its connection may import, the rest of its escrow comes back; only the grid operator
/// may send envelopes, and only before gate closure.
#[test]
fn envelopes_trim_a_connections_orders_at_clearing() {
    let mut net = Net::with_grid_operator(5);
    let (a, c, d, op) = (1, 2, 3, 4);
    let t0 = slot_start_ms(SLOT) - 3_000_000;
    register(
        &mut net,
        t0,
        &[
            (a, DeviceKind::Pv),
            (c, DeviceKind::Meter),
            (d, DeviceKind::Meter),
        ],
    );
    assert_eq!(
        market_err(net.one(t0 + 500, c, envelope("street/house-c", 300, 0))),
        MarketTxError::NotGridOperator
    );
    assert!(
        net.chain.state().envelope(SLOT, "street/house-c").is_none(),
        "a refused envelope is not recorded"
    );
    net.one(t0 + 1_000, op, envelope("street/house-c", 2_000, 0))
        .unwrap();
    // A later envelope for the same connection replaces the first.
    net.one(t0 + 1_500, op, envelope("street/house-c", 300, 0))
        .unwrap();
    let before_c = net.balance(c);
    let errs = net.block(
        t0 + 2_000,
        vec![
            net.tx(a, order(Side::Ask, 1_000, 100, "street/house-a")),
            net.tx(c, order(Side::Bid, 1_000, 250, "street/house-c")),
            net.tx(d, order(Side::Bid, 500, 200, "street/house-d")),
        ],
    );
    assert!(errs.is_empty(), "{errs:?}");
    assert_eq!(
        before_c - net.balance(c),
        250_000 + 100_000,
        "the whole bid is escrowed, with the order deposit"
    );
    let gate = slot_start_ms(SLOT) - 5 * 60_000;
    assert!(matches!(
        market_err(net.one(gate, op, envelope("street/house-d", 1, 0))),
        MarketTxError::GateClosed { .. }
    ));
    let slot: SlotRecord = net.chain.state().slot_record(SLOT).expect("slot record");
    assert_eq!(slot.envelopes, 1);
    assert!(!slot.island);
    // c bought 0.3 kWh (its envelope), d its 0.5 kWh, at the uniform price 0.10 (the seller has
    // energy left, so the price is its ask).
    assert_eq!(slot.volume_mwh, 800_000);
    let c_order: OrderRecord = net.order(SLOT, 1);
    assert_eq!(c_order.traded_mwh, 300_000);
    assert_eq!(
        before_c - net.balance(c),
        300 * 100,
        "escrow beyond 0.3 kWh at 0.10 returned"
    );
    // Without the envelope c's remaining 0.7 kWh would have gone to the utility at retail.
    assert!(
        slot.utility.iter().all(|u| u.order != 1),
        "{:?}",
        slot.utility
    );
}

/// The grid operator's tariff for a slot (its DSO's prices, `SetTariff`) replaces the genesis
/// tariff in that slot's clearing: only from the grid operator, only before gate closure, a later
/// one replacing the first, and never feed-in above retail.
#[test]
fn the_grid_operators_tariff_prices_the_utility_in_its_slot() {
    let mut net = Net::with_grid_operator(5);
    let (c, op) = (2, 4);
    let t0 = slot_start_ms(SLOT) - 3_000_000;
    register(&mut net, t0, &[(c, DeviceKind::Meter)]);
    let genesis = net.chain.state().market_config().tariff(SLOT);
    assert_eq!(net.chain.state().tariff(SLOT), genesis);
    let tariff = |retail_per_kwh, feed_in_per_kwh| TxKind::SetTariff {
        slot: SLOT,
        retail_per_kwh,
        feed_in_per_kwh,
    };
    assert_eq!(
        market_err(net.one(t0 + 500, c, tariff(1, 0))),
        MarketTxError::NotGridOperator
    );
    assert_eq!(
        net.chain.state().tariff(SLOT),
        genesis,
        "refused, not recorded"
    );
    net.one(t0 + 1_000, op, tariff(900_000, 10_000)).unwrap();
    net.one(t0 + 1_500, op, tariff(420_000, 50_000)).unwrap();
    let set = gridmesh_market::Tariff {
        retail_per_kwh: 420_000,
        feed_in_per_kwh: 50_000,
    };
    assert_eq!(net.chain.state().tariff(SLOT), set);
    assert_eq!(net.chain.state().tariff(SLOT + 1), genesis, "one slot only");
    // Feed-in above retail is malformed: refused before it reaches a block.
    let bad = TxBody {
        version: TX_VERSION,
        chain_id: net.chain.chain_id().to_string(),
        sender: net.keys[op].address(),
        nonce: 0,
        kind: tariff(10_000, 20_000),
    }
    .sign(&net.keys[op]);
    let err = bad.check_form().unwrap_err().to_string();
    assert!(err.contains("feed-in"), "{err}");
    // A bid of 1 kWh at 0.60 with no seller: the utility serves it at the slot's retail price.
    let before = net.balance(c);
    net.one(
        t0 + 2_000,
        c,
        order(Side::Bid, 1_000, 600, "street/house-c"),
    )
    .unwrap();
    let gate = slot_start_ms(SLOT) - 5 * 60_000;
    assert!(matches!(
        market_err(net.one(gate, op, tariff(300_000, 0))),
        MarketTxError::GateClosed { .. }
    ));
    let slot: SlotRecord = net.chain.state().slot_record(SLOT).expect("slot record");
    assert_eq!(slot.tariff, set);
    assert_eq!(slot.utility.len(), 1);
    assert_eq!(slot.utility[0].energy_mwh, 1_000_000);
    assert_eq!(slot.utility[0].price_per_kwh, 420_000, "1 kWh at 0.42");
    // The utility bills its own sales: the whole escrow comes back at clearing.
    assert_eq!(before, net.balance(c));
}

/// Islanding transitions are ledger events (only from the grid operator, in the controller's
/// order, never in the future); a slot whose gate closes while islanded clears under island
/// rules: no utility, bids capped at the island price cap.
#[test]
fn grid_events_are_recorded_and_island_slots_clear_without_the_utility() {
    let mut net = Net::with_grid_operator(5);
    let (a, c, op) = (1, 2, 4);
    let t0 = slot_start_ms(SLOT) - 3_000_000;
    register(
        &mut net,
        t0,
        &[(a, DeviceKind::Battery), (c, DeviceKind::Meter)],
    );
    let event = |event, at_ms| TxKind::GridEvent { event, at_ms };
    assert_eq!(
        market_err(net.one(t0 + 100, c, event(GridEventKind::Islanded, t0))),
        MarketTxError::NotGridOperator
    );
    assert!(matches!(
        market_err(net.one(t0 + 200, op, event(GridEventKind::Reconnected, t0))),
        MarketTxError::BadGridTransition { last: None, .. }
    ));
    assert!(matches!(
        market_err(net.one(t0 + 300, op, event(GridEventKind::Islanded, t0 + 10_000))),
        MarketTxError::GridEventTime { .. }
    ));
    net.one(t0 + 1_000, op, event(GridEventKind::Islanded, t0 + 900))
        .unwrap();
    let mode: GridMode = net.chain.state().grid_mode();
    assert!(mode.is_islanded() && mode.since_ms == t0 + 900 && mode.events == 1);
    let errs = net.block(
        t0 + 2_000,
        vec![
            net.tx(a, order(Side::Ask, 500, 100, "street/house-a")),
            net.tx(c, order(Side::Bid, 1_000, 5_000, "street/house-c")), // 5 tokens/kWh
        ],
    );
    assert!(errs.is_empty(), "{errs:?}");
    let gate = slot_start_ms(SLOT) - 5 * 60_000;
    net.block(gate, vec![]);
    let slot: SlotRecord = net.chain.state().slot_record(SLOT).expect("slot record");
    assert!(slot.island);
    assert!(
        slot.utility.is_empty(),
        "no utility in island mode: {:?}",
        slot.utility
    );
    assert_eq!(slot.volume_mwh, 500_000);
    // Scarcity: the uniform price is the (capped) marginal bid, 1 token per kWh by default.
    assert_eq!(slot.clearing_price_per_kwh, Some(1_000_000));
    net.one(
        gate + 1_000,
        op,
        event(GridEventKind::Resynchronising, gate + 500),
    )
    .unwrap();
    net.one(
        gate + 2_000,
        op,
        event(GridEventKind::Reconnected, gate + 1_500),
    )
    .unwrap();
    let mode: GridMode = net.chain.state().grid_mode();
    assert!(!mode.is_islanded() && mode.events == 3);
    let last: GridEventRecord = net.chain.state().grid_event(2).expect("grid event");
    assert_eq!(
        (last.event, last.at_ms),
        (GridEventKind::Reconnected, gate + 1_500)
    );
}

fn pv_info() -> DeviceInfo {
    DeviceInfo {
        kind: DeviceKind::Pv,
        capacity_w: 7_300,
        location: "street-1/house-4".into(),
        latitude_microdeg: 47_376_900,
        longitude_microdeg: 8_541_700,
        tilt_deg: 30,
        azimuth_deg: 180,
    }
}

/// A registration of `device`, signed by the device key for the owner `signed_for` (the sender's
/// address, normally).
fn register_key(net: &Net, device: &Keypair, signed_for: Address, bond_tokens: u64) -> TxKind {
    let info = pv_info();
    let message =
        gridmesh_ledger::tx::device_registration_message(net.chain.chain_id(), &signed_for, &info);
    TxKind::RegisterDeviceKey {
        device: device.address(),
        info,
        bond: Amount::from_tokens(bond_tokens),
        device_signature: device.sign(&message),
    }
}

/// Devices with their own keys: registered with a proof that the owner holds the device key and
/// a bond, handed to another owner, decommissioned with the bond back; every wrong step refused
/// with its reason and nothing moved.
#[test]
fn devices_with_their_own_keys_are_bonded_transferred_and_retired() {
    let mut net = Net::with_grid_operator(4);
    let (alice, bob, carol) = (1, 2, 3);
    let inverter = Keypair::from_seed([42; 32]);
    let t0 = slot_start_ms(SLOT) - 3_000_000;
    let before = net.balance(alice);
    // A signature for another owner, a key that is not the device's, too small a bond, more than
    // the balance: refused, nothing moved.
    let other_owner = net.keys[bob].address();
    let wrong = register_key(&net, &inverter, other_owner, 20);
    assert_eq!(
        market_err(net.one(t0, alice, wrong)),
        MarketTxError::BadDeviceSignature
    );
    let mut forged = register_key(
        &net,
        &Keypair::from_seed([7; 32]),
        net.keys[alice].address(),
        20,
    );
    if let TxKind::RegisterDeviceKey { device, .. } = &mut forged {
        *device = inverter.address();
    }
    assert_eq!(
        market_err(net.one(t0 + 1, alice, forged)),
        MarketTxError::BadDeviceSignature
    );
    let small = register_key(&net, &inverter, net.keys[alice].address(), 1);
    assert!(matches!(
        market_err(net.one(t0 + 2, alice, small)),
        MarketTxError::BondTooSmall { .. }
    ));
    let rich = register_key(&net, &inverter, net.keys[alice].address(), 5_000);
    assert!(matches!(
        net.one(t0 + 3, alice, rich),
        Err(TxError::InsufficientFunds { .. })
    ));
    assert_eq!(net.balance(alice), before);
    assert!(net.chain.state().device(&inverter.address()).is_none());

    // Registered: 20 tokens bonded.
    let ok = register_key(&net, &inverter, net.keys[alice].address(), 20);
    net.one(t0 + 4, alice, ok).unwrap();
    assert_eq!(before - net.balance(alice), 20_000_000);
    assert_eq!(
        net.chain.account(&device_bond_account()).balance.0,
        20_000_000
    );
    let d: DeviceIdentity = net
        .chain
        .state()
        .device(&inverter.address())
        .expect("device");
    assert_eq!(d.owner, net.keys[alice].address());
    assert_eq!(d.info, pv_info());
    assert_eq!(d.status, DeviceStatus::Active);
    // Once only.
    let again = register_key(&net, &inverter, net.keys[alice].address(), 20);
    assert_eq!(
        market_err(net.one(t0 + 5, alice, again)),
        MarketTxError::DeviceExists(inverter.address())
    );

    // Transfer: only by its owner, not to itself.
    let device = inverter.address();
    let to_carol = TxKind::TransferDevice {
        device,
        to: net.keys[carol].address(),
    };
    assert_eq!(
        market_err(net.one(t0 + 6, bob, to_carol.clone())),
        MarketTxError::NotYourDevice(device)
    );
    let to_self = TxKind::TransferDevice {
        device,
        to: net.keys[alice].address(),
    };
    assert_eq!(
        market_err(net.one(t0 + 7, alice, to_self)),
        MarketTxError::TransferToSelf
    );
    net.one(t0 + 8, alice, to_carol).unwrap();
    let d: DeviceIdentity = net.chain.state().device(&device).expect("device");
    assert_eq!(d.owner, net.keys[carol].address());

    // Decommissioned by its new owner: the bond goes to the new owner; nothing more can be done.
    let carol_before = net.balance(carol);
    assert_eq!(
        market_err(net.one(t0 + 9, alice, TxKind::DecommissionDevice { device })),
        MarketTxError::NotYourDevice(device)
    );
    net.one(t0 + 10, carol, TxKind::DecommissionDevice { device })
        .unwrap();
    assert_eq!(net.balance(carol) - carol_before, 20_000_000);
    assert_eq!(net.chain.account(&device_bond_account()).balance.0, 0);
    assert_eq!(
        market_err(net.one(t0 + 11, carol, TxKind::DecommissionDevice { device })),
        MarketTxError::DeviceDecommissioned(device)
    );
    // An unknown device is named.
    let ghost = Keypair::from_seed([9; 32]).address();
    assert_eq!(
        market_err(net.one(t0 + 12, carol, TxKind::DecommissionDevice { device: ghost })),
        MarketTxError::UnknownDevice(ghost)
    );
}

/// Proof of generation at settlement: a PV device claiming more than a clear sky allows at its
/// place and time (Zurich, 17:00 in March, the sun 9° high) is held and its owner is paid for
/// nothing; an honest device's reading is accepted and caps what its owner is paid for; replayed,
/// forged, early and unknown readings are refused.
#[test]
fn device_readings_are_checked_before_they_settle_a_trade() {
    let mut net = Net::with_grid_operator(5);
    let (alice, bob, carol) = (1, 2, 3);
    let t0 = slot_start_ms(SLOT) - 3_000_000;
    register(
        &mut net,
        t0,
        &[
            (alice, DeviceKind::Pv),
            (bob, DeviceKind::Meter),
            (carol, DeviceKind::Pv),
        ],
    );
    let (liar, honest) = (Keypair::from_seed([50; 32]), Keypair::from_seed([51; 32]));
    for (who, device, house, ts) in [
        (alice, &liar, "street-1/house-a", 1),
        (carol, &honest, "street-1/house-c", 2),
    ] {
        let mut info = pv_info();
        info.location = house.into();
        let message = gridmesh_ledger::tx::device_registration_message(
            net.chain.chain_id(),
            &net.keys[who].address(),
            &info,
        );
        let tx = TxKind::RegisterDeviceKey {
            device: device.address(),
            info,
            bond: Amount::from_tokens(20),
            device_signature: device.sign(&message),
        };
        net.one(t0 + ts, who, tx).unwrap();
    }
    let errs = net.block(
        t0 + 10,
        vec![
            net.tx(alice, order(Side::Ask, 1_000, 100, "street-1/house-a")),
            net.tx(carol, order(Side::Ask, 1_000, 120, "street-1/house-c")),
            net.tx(bob, order(Side::Bid, 2_000, 250, "street-1/house-b")),
        ],
    );
    assert!(errs.is_empty(), "{errs:?}");
    let chain_id = net.chain.chain_id().to_string();
    let signed = |k: &Keypair, wh: u64, register_wh: u64| {
        gridmesh_ledger::tx::DeviceReading::signed(
            k,
            &chain_id,
            SLOT,
            wh * 1_000,
            0,
            register_wh * 1_000,
            gridmesh_types::Hash32([7; 32]),
            900,
        )
    };
    // Before the slot has ended: refused.
    let early = TxKind::SubmitDeviceReadings {
        readings: vec![signed(&honest, 500, 500)],
    };
    assert!(matches!(
        market_err(net.one(slot_start_ms(SLOT) + 60_000, carol, early)),
        MarketTxError::SlotNotEnded { .. }
    ));
    let after = slot_start_ms(SLOT + 1) + 60_000;
    // A reading that commits to no samples (none counted, or an all-zero root), or to more
    // than a slot can hold: refused.
    for (root, count) in [
        (gridmesh_types::Hash32([7; 32]), 0),
        (gridmesh_types::Hash32([0; 32]), 900),
    ] {
        let mut r = signed(&honest, 500, 500);
        (r.raw_root, r.raw_count) = (root, count);
        let message = gridmesh_ledger::tx::device_reading_message(&chain_id, &r);
        r.signature = honest.sign(&message);
        assert_eq!(
            market_err(net.one(
                after,
                carol,
                TxKind::SubmitDeviceReadings { readings: vec![r] }
            )),
            MarketTxError::NoSamples(honest.address())
        );
    }
    let mut r = signed(&honest, 500, 500);
    r.raw_count = 9_001;
    r.signature = honest.sign(&gridmesh_ledger::tx::device_reading_message(&chain_id, &r));
    assert!(matches!(
        market_err(net.one(
            after,
            carol,
            TxKind::SubmitDeviceReadings { readings: vec![r] }
        )),
        MarketTxError::TooManySamples { count: 9_001, .. }
    ));
    // A forged signature and an unknown device: refused.
    let mut forged = signed(&honest, 900, 900);
    forged.energy_out_mwh = 1_000_000;
    assert_eq!(
        market_err(net.one(
            after,
            carol,
            TxKind::SubmitDeviceReadings {
                readings: vec![forged]
            }
        )),
        MarketTxError::BadReadingSignature(honest.address())
    );
    let stranger = Keypair::from_seed([52; 32]);
    assert_eq!(
        market_err(net.one(
            after + 1,
            carol,
            TxKind::SubmitDeviceReadings {
                readings: vec![signed(&stranger, 1, 1)]
            }
        )),
        MarketTxError::UnknownDevice(stranger.address())
    );
    // The gateway (here bob's account) batches both devices' readings.
    net.one(
        after + 2,
        bob,
        TxKind::SubmitDeviceReadings {
            readings: vec![signed(&liar, 1_500, 1_500), signed(&honest, 500, 500)],
        },
    )
    .unwrap();
    // Replayed: refused.
    assert!(matches!(
        market_err(net.one(
            after + 3,
            bob,
            TxKind::SubmitDeviceReadings {
                readings: vec![signed(&honest, 500, 500)]
            }
        )),
        MarketTxError::DuplicateDeviceReading { .. }
    ));
    // Both meters say they exported a full kWh.
    let errs = net.block(
        after + 4,
        vec![
            net.tx(alice, reading(0, 1_000)),
            net.tx(carol, reading(0, 1_000)),
        ],
    );
    assert!(errs.is_empty(), "{errs:?}");
    let alice_before = net.balance(alice);
    let carol_before = net.balance(carol);
    // The correction window ends: the device readings are checked, then the slot settles.
    net.block(slot_start_ms(SLOT + 1) + 60 * 60_000, vec![]);
    let lie: DeviceReadingRecord = net
        .chain
        .state()
        .device_reading(SLOT, &liar.address())
        .expect("device reading");
    match &lie.status {
        ReadingStatus::Held { reason } => assert!(
            matches!(reason, HoldReason::AboveClearSky { .. }),
            "{reason:?}"
        ),
        other => panic!("{other:?}"),
    }
    let ok: DeviceReadingRecord = net
        .chain
        .state()
        .device_reading(SLOT, &honest.address())
        .expect("device reading");
    assert_eq!(ok.status, ReadingStatus::Accepted);
    let id: DeviceIdentity = net.chain.state().device(&honest.address()).expect("device");
    assert_eq!(id.register_mwh, Some(500_000));
    // Alice is paid for nothing (her collateral compensates bob); carol for 0.5 kWh at 0.12.
    let t_alice: TradeRecord = net.chain.state().trades(SLOT)[0].clone();
    let t_carol: TradeRecord = net.chain.state().trades(SLOT)[1].clone();
    assert_eq!(t_alice.seller, net.keys[alice].address());
    assert_eq!(t_alice.settlement.as_ref().unwrap().delivered_mwh, 0);
    assert_eq!(t_carol.settlement.as_ref().unwrap().delivered_mwh, 500_000);
    assert!(
        net.balance(alice)
            <= alice_before + t_alice.settlement.as_ref().unwrap().collateral_returned
    );
    assert!(net.balance(carol) > carol_before);

    // The next slot has no market at all: its readings are checked all the same. The honest
    // register follows on; the liar's jumps.
    let next = SLOT + 1;
    let reading_for = |k: &Keypair, wh: u64, register_wh: u64| {
        gridmesh_ledger::tx::DeviceReading::signed(
            k,
            &chain_id,
            next,
            wh * 1_000,
            0,
            register_wh * 1_000,
            gridmesh_types::Hash32([8; 32]),
            900,
        )
    };
    net.one(
        slot_start_ms(next + 1) + 60_000,
        bob,
        TxKind::SubmitDeviceReadings {
            readings: vec![
                reading_for(&honest, 200, 700),
                reading_for(&liar, 100, 99_000),
            ],
        },
    )
    .unwrap();
    net.block(slot_start_ms(next + 1) + 60 * 60_000, vec![]);
    let ok: DeviceReadingRecord = net
        .chain
        .state()
        .device_reading(next, &honest.address())
        .expect("device reading");
    assert_eq!(ok.status, ReadingStatus::Accepted);
    let lie: DeviceReadingRecord = net
        .chain
        .state()
        .device_reading(next, &liar.address())
        .expect("device reading");
    assert!(
        matches!(
            &lie.status,
            ReadingStatus::Held {
                reason: HoldReason::RegisterMismatch { .. }
            }
        ),
        "{:?}",
        lie.status
    );
}

/// Impossible device descriptions are refused before they reach the state.
#[test]
fn device_descriptions_out_of_range_are_malformed() {
    let net = Net::new(2);
    let k = &net.keys[1];
    for (mutate, needle) in [
        (
            Box::new(|i: &mut DeviceInfo| i.tilt_deg = 91) as Box<dyn Fn(&mut DeviceInfo)>,
            "tilt",
        ),
        (
            Box::new(|i: &mut DeviceInfo| i.azimuth_deg = 360),
            "azimuth",
        ),
        (
            Box::new(|i: &mut DeviceInfo| i.latitude_microdeg = 90_000_001),
            "latitude",
        ),
        (Box::new(|i: &mut DeviceInfo| i.capacity_w = 0), "capacity"),
        (
            Box::new(|i: &mut DeviceInfo| i.location = "x".repeat(200)),
            "location",
        ),
    ] {
        let mut info = pv_info();
        mutate(&mut info);
        let tx = TxBody {
            version: TX_VERSION,
            chain_id: net.chain.chain_id().to_string(),
            sender: k.address(),
            nonce: 0,
            kind: TxKind::RegisterDeviceKey {
                device: k.address(),
                info,
                bond: Amount::from_tokens(20),
                device_signature: [0; 64],
            },
        }
        .sign(k);
        let err = tx.check_form().unwrap_err().to_string();
        assert!(err.contains(needle), "{err}");
    }
}

#[test]
fn missing_readings_settle_by_estimate_and_become_final_at_the_deadline() {
    let mut net = Net::new(3);
    let t0 = slot_start_ms(SLOT) - 3_000_000;
    let battery = keyed_battery(&net, 1, 4_000);
    net.one(t0, 1, battery).unwrap();
    net.block(
        t0 + 1,
        vec![
            net.tx(1, order(Side::Ask, 800, 50, "")),
            net.tx(2, order(Side::Bid, 800, 250, "")),
        ],
    );
    let end = slot_start_ms(SLOT + 1);
    let (s0, b0) = (net.balance(1), net.balance(2));
    net.block(end + 3_600_000, vec![]); // clears (gate long passed) and settles
    let slot: SlotRecord = net.chain.state().slot_record(SLOT).expect("slot record");
    assert_eq!(slot.settlement, SettlementStatus::Provisional);
    // A day after the slot the estimate (nothing delivered) becomes final: the buyer gets its
    // money back plus the compensation, the seller the rest of its collateral.
    net.block(end + 24 * 3_600_000, vec![]);
    let slot: SlotRecord = net.chain.state().slot_record(SLOT).expect("slot record");
    assert_eq!(slot.settlement, SettlementStatus::Final);
    let t: TradeRecord = net.chain.state().trades(SLOT)[0].clone();
    let s = t.settlement.unwrap();
    assert!(s.basis.is_estimated() && s.basis.is_final() && s.delivered_mwh == 0);
    assert_eq!(net.escrow(), 0);
    // Clears at 0.25: the buyer's escrow is exactly its trade (0.2); the seller's collateral for
    // the trade is 0.8 kWh × (0.30 − 0.25) = 0.04 of the 0.2 it locked.
    assert_eq!((t.buyer_escrow, t.seller_collateral), (200_000, 40_000));
    assert_eq!(s.compensation, 40_000);
    // And both get their order deposits (0.1 token) back at clearing.
    let deposit = 100_000;
    assert_eq!(net.balance(2) - b0, 200_000 + 40_000 + deposit);
    assert_eq!(net.balance(1) - s0, 200_000 - 40_000 + deposit);
    // Now it is too late for a reading.
    assert!(matches!(
        market_err(net.one(end + 24 * 3_600_000 + 1, 1, reading(0, 800))),
        MarketTxError::ReadingTooLate { .. }
    ));
}

#[test]
fn bad_market_transactions_are_refused_and_change_nothing() {
    let mut net = Net::new(3);
    let t0 = slot_start_ms(SLOT) - 3_000_000;
    // An ask without a producing device.
    assert_eq!(
        market_err(net.one(t0, 1, order(Side::Ask, 100, 100, ""))),
        MarketTxError::NoProducingDevice
    );
    // A device declared without a key sells nothing.
    net.one(
        t0 + 1,
        1,
        TxKind::RegisterDevice {
            kind: DeviceKind::Pv,
            capacity_w: 1_000,
        },
    )
    .unwrap();
    assert_eq!(
        market_err(net.one(t0 + 1, 1, order(Side::Ask, 100, 100, ""))),
        MarketTxError::NoProducingDevice
    );
    let battery = keyed_battery(&net, 1, 1_000);
    net.one(t0 + 1, 1, battery).unwrap();
    // More than a 1 kW battery gives in 15 minutes (250 Wh).
    assert!(matches!(
        market_err(net.one(t0 + 2, 1, order(Side::Ask, 251, 100, ""))),
        MarketTxError::AskAboveCapacity { .. }
    ));
    // A bid its sender cannot pay for: 1,000 tokens are not enough for 10 kWh at 200 tokens.
    let r = net.one(t0 + 3, 2, order(Side::Bid, 10_000, 200_000, ""));
    assert!(matches!(r, Err(TxError::InsufficientFunds { .. })), "{r:?}");
    // Orders too far ahead, with a bad location, or for a slot already closed.
    let far = TxKind::PlaceOrder {
        slot: SLOT + 10_000,
        side: Side::Bid,
        energy_mwh: 1,
        price_per_kwh: 1,
        location: String::new(),
    };
    assert!(matches!(
        market_err(net.one(t0 + 4, 2, far)),
        MarketTxError::SlotTooFar { .. }
    ));
    assert!(matches!(
        market_err(net.one(t0 + 5, 2, order(Side::Bid, 1, 1, "a//b"))),
        MarketTxError::BadLocation(_)
    ));
    // Dust: below the smallest order (1 Wh).
    let dust = TxKind::PlaceOrder {
        slot: SLOT,
        side: Side::Bid,
        energy_mwh: 999,
        price_per_kwh: 0,
        location: String::new(),
    };
    assert_eq!(
        market_err(net.one(t0 + 5, 2, dust)),
        MarketTxError::EnergyTooSmall {
            energy_mwh: 999,
            min_mwh: 1_000
        }
    );
    // Cancelling: only your own open order, and you get the escrow back exactly. The escrow is
    // the bid's cost (1 kWh at 0.1 token) and the order deposit (0.1 token).
    let b0 = net.balance(2);
    net.one(t0 + 6, 2, order(Side::Bid, 1_000, 100, ""))
        .unwrap();
    assert_eq!(b0 - net.balance(2), 100_000 + 100_000);
    let order_id = 0;
    assert_eq!(
        market_err(net.one(
            t0 + 7,
            1,
            TxKind::CancelOrder {
                slot: SLOT,
                order_id
            }
        )),
        MarketTxError::NotYourOrder(order_id)
    );
    net.one(
        t0 + 8,
        2,
        TxKind::CancelOrder {
            slot: SLOT,
            order_id,
        },
    )
    .unwrap();
    assert_eq!(net.balance(2), b0);
    assert!(matches!(
        market_err(net.one(
            t0 + 9,
            2,
            TxKind::CancelOrder {
                slot: SLOT,
                order_id
            }
        )),
        MarketTxError::UnknownOrder { .. }
    ));
    // A reading needs a device; nonsense imports are refused.
    let end = slot_start_ms(SLOT + 1);
    assert_eq!(
        market_err(net.one(end, 2, reading(1, 0))),
        MarketTxError::NoDevice
    );
    assert_eq!(
        market_err(net.one(end, 2, reading(0, 1))),
        MarketTxError::NoDevice
    );
    assert!(matches!(
        market_err(net.one(end + 1, 1, reading(50_000 * 250 / 1000 + 1, 0))),
        MarketTxError::ImportAboveLimit { .. }
    ));
    assert_eq!(net.escrow(), 0);
}

#[derive(Debug, Clone)]
struct Member {
    producer: bool,
    side_bid: bool,
    energy_wh: u64,
    price_milli: u64,
    street: u8,
    /// None: no reading; Some((late, wh)): a reading of that much, in time or late.
    reading: Option<(bool, u64)>,
}

fn member() -> impl Strategy<Value = Member> {
    (
        any::<bool>(),
        any::<bool>(),
        1u64..1_200,
        1u64..400,
        0u8..3,
        proptest::option::of((any::<bool>(), 0u64..1_500)),
    )
        .prop_map(
            |(producer, side_bid, energy_wh, price_milli, street, reading)| Member {
                producer,
                side_bid: side_bid || !producer,
                energy_wh,
                price_milli,
                street,
                reading,
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// A whole slot with random members, orders, readings (in time, late, missing) under every
    /// mechanism: tokens are conserved at every block (checked by `Net::block`) and when the slot
    /// is final the escrow holds nothing.
    #[test]
    fn tokens_are_conserved_over_the_whole_cycle(
        members in proptest::collection::vec(member(), 2..9),
        mech in 0usize..5,
    ) {
        let name = gridmesh_market::Mechanism::ALL[mech].name();
        let mut net = Net::with_mechanism(members.len() + 1, name, true);
        let t0 = slot_start_ms(SLOT) - 3_000_000;
        let regs: Vec<VerifiedTx> = members.iter().enumerate().map(|(i, m)| net.tx(i + 1, if m.producer {
            keyed_battery(&net, i + 1, 6_000)
        } else {
            TxKind::RegisterDevice { kind: DeviceKind::Meter, capacity_w: 6_000 }
        })).collect();
        prop_assert!(net.block(t0, regs).is_empty());
        let orders: Vec<VerifiedTx> = members.iter().enumerate().map(|(i, m)| net.tx(i + 1, TxKind::PlaceOrder {
            slot: SLOT,
            side: if m.side_bid { Side::Bid } else { Side::Ask },
            energy_mwh: m.energy_wh * 1_000,
            price_per_kwh: m.price_milli * 1_000,
            location: format!("s{}/h{i}", m.street),
        })).collect();
        prop_assert!(net.block(t0 + 1, orders).is_empty());
        let end = slot_start_ms(SLOT + 1);
        net.block(end - 1, vec![]); // clears
        let mut in_time: Vec<VerifiedTx> = members.iter().enumerate().filter_map(|(i, m)| match m.reading {
            Some((false, wh)) => Some(net.tx(i + 1, reading(if m.producer { 0 } else { wh }, if m.producer { wh } else { 0 }))),
            _ => None,
        }).collect();
        // Producers' batteries report what they gave, whether their meters report in time or not.
        in_time.extend(members.iter().enumerate().filter_map(|(i, m)| match m.reading {
            Some((_, wh)) if m.producer && wh > 0 => Some(net.device_reading(i + 1, SLOT, wh)),
            _ => None,
        }));
        prop_assert!(net.block(end + 1, in_time).is_empty());
        net.block(end + 3_600_000, vec![]); // settles
        let late: Vec<VerifiedTx> = members.iter().enumerate().filter_map(|(i, m)| match m.reading {
            Some((true, wh)) => Some(net.tx(i + 1, reading(if m.producer { 0 } else { wh }, if m.producer { wh } else { 0 }))),
            _ => None,
        }).collect();
        net.block(end + 7_200_000, late);
        net.block(end + 25 * 3_600_000, vec![]); // estimates become final
        let slot: SlotRecord = net.chain.state().slot_record(SLOT).expect("slot record");
        prop_assert_eq!(slot.settlement, SettlementStatus::Final);
        prop_assert_eq!(net.escrow(), 0, "escrow released exactly");
    }
}

/// A device registered with its own key at `location` (kind and rating given), bonding 20 tokens.
fn register_device(
    net: &mut Net,
    ts: u64,
    owner: usize,
    device: &Keypair,
    kind: DeviceKind,
    location: &str,
) {
    let mut info = pv_info();
    info.kind = kind;
    info.location = location.into();
    if kind != DeviceKind::Pv {
        info.capacity_w = 5_000;
    }
    let message = gridmesh_ledger::tx::device_registration_message(
        net.chain.chain_id(),
        &net.keys[owner].address(),
        &info,
    );
    let tx = TxKind::RegisterDeviceKey {
        device: device.address(),
        info,
        bond: Amount::from_tokens(20),
        device_signature: device.sign(&message),
    };
    net.one(ts, owner, tx).unwrap();
}

/// A rehearsal (the in-memory chain of simulated members) takes a device reading nobody signed
/// only when its caller vouches for the devices; any block a node builds refuses it, and the
/// vouched reading is the signed one without its signatures.
#[test]
fn only_a_rehearsal_told_so_vouches_for_unsigned_device_readings() {
    use gridmesh_ledger::tx::DeviceReading;
    use gridmesh_ledger::{DeviceSignatures, UnsignedTx};
    let mut net = Net::with_grid_operator(3);
    let owner = 1;
    let device = Keypair::from_seed([60; 32]);
    let t0 = slot_start_ms(SLOT) - 3_000_000;
    register_device(
        &mut net,
        t0,
        owner,
        &device,
        DeviceKind::Pv,
        "street-1/house-4",
    );
    let chain_id = net.chain.chain_id().to_string();
    let out = (400_000, 400_000);
    let vouched =
        DeviceReading::vouched_one_sample(device.address(), &chain_id, SLOT, SLOT, out, (0, 0));
    let signed = DeviceReading::with_one_sample(&device, &chain_id, SLOT, SLOT, out, (0, 0));
    assert_eq!(vouched.signature, [0; 64]);
    assert_ne!(signed.signature, [0; 64]);
    assert_eq!(
        (
            vouched.device,
            vouched.slot,
            vouched.energy_out_mwh,
            vouched.energy_in_mwh
        ),
        (
            signed.device,
            signed.slot,
            signed.energy_out_mwh,
            signed.energy_in_mwh
        )
    );
    assert_eq!(
        (vouched.register_mwh, vouched.raw_count),
        (signed.register_mwh, signed.raw_count)
    );
    assert_ne!(
        vouched.raw_root, signed.raw_root,
        "the sample's signature is in its leaf"
    );
    let after = slot_start_ms(SLOT + 1) + 60_000;
    let kind = TxKind::SubmitDeviceReadings {
        readings: vec![vouched],
    };
    let unsigned = || {
        let sender = net.keys[owner].address();
        let nonce = net.chain.account(&sender).nonce;
        UnsignedTx::new(sender, &chain_id, nonce, kind.clone()).unwrap()
    };
    let proposer = net.keys[0].address();
    let parent = net.chain.parent();
    let checked = parent.rehearse(
        &chain_id,
        [unsigned()],
        after,
        proposer,
        DeviceSignatures::Checked,
    );
    assert_eq!(checked.header.tx_count, 0);
    assert_eq!(
        checked
            .rejected
            .iter()
            .map(|(_, e)| market_err(Err(e.clone())))
            .collect::<Vec<_>>(),
        vec![MarketTxError::BadReadingSignature(device.address())]
    );
    let taken = parent.rehearse(
        &chain_id,
        [unsigned()],
        after,
        proposer,
        DeviceSignatures::Vouched,
    );
    assert!(taken.rejected.is_empty(), "{:?}", taken.rejected);
    assert_eq!(taken.header.tx_count, 1);
    assert_ne!(taken.header.state_root, checked.header.state_root);
    // A signed transaction carrying the same reading: refused by the node's own block.
    assert_eq!(
        market_err(net.one(after, owner, kind.clone())),
        MarketTxError::BadReadingSignature(device.address())
    );
    // The signed reading goes in either way.
    let signed_kind = TxKind::SubmitDeviceReadings {
        readings: vec![signed],
    };
    net.one(after + 1, owner, signed_kind).unwrap();
}

#[allow(clippy::too_many_arguments)]
fn device_reading(
    net: &Net,
    k: &Keypair,
    slot: u64,
    out_wh: u64,
    in_wh: u64,
    register_wh: u64,
    root: gridmesh_types::Hash32,
    count: u32,
) -> gridmesh_ledger::tx::DeviceReading {
    gridmesh_ledger::tx::DeviceReading::signed(
        k,
        net.chain.chain_id(),
        slot,
        out_wh * 1_000,
        in_wh * 1_000,
        register_wh * 1_000,
        root,
        count,
    )
}

/// A reading that commits to the one signed sample `k` took at the end of `slot`.
fn committed(
    net: &Net,
    k: &Keypair,
    slot: u64,
    out_wh: u64,
    in_wh: u64,
    register_wh: u64,
) -> gridmesh_ledger::tx::DeviceReading {
    gridmesh_ledger::tx::DeviceReading::with_one_sample(
        k,
        net.chain.chain_id(),
        slot,
        slot,
        (out_wh * 1_000, register_wh * 1_000),
        (in_wh * 1_000, in_wh * 1_000),
    )
}

fn econ_err(r: Result<(), TxError>) -> gridmesh_ledger::economics::EconomicsError {
    match r {
        Err(TxError::Economics(e)) => e,
        other => panic!("expected an economics error, got {other:?}"),
    }
}

/// Rewards for an epoch: verified renewable energy sold to a neighbour (valued at the retail
/// price it avoided) and a battery's discharge the grid operator asked for (valued at the
/// request's price) share the epoch's emission by value; a community asset's revenue (its sale
/// and its reward) is paid out to its holders 3:1; the supply reconciles at every block.
#[test]
fn an_epoch_mints_rewards_by_grid_value_and_pays_out_a_community_asset() {
    use gridmesh_ledger::economics::{self, AssetRecord, EpochRecord, Points};
    use gridmesh_ledger::tx::{FlexDirection, Shareholding};
    let mut net = Net::with_grid_operator(6);
    let (alice, bob, plant, carol, operator) = (1, 2, 3, 4, 5);
    let t0 = slot_start_ms(SLOT) - 3_000_000;
    register(
        &mut net,
        t0,
        &[
            (alice, DeviceKind::Pv),
            (bob, DeviceKind::Meter),
            (plant, DeviceKind::Pv),
        ],
    );
    let (pv_a, pv_plant, battery) = (
        Keypair::from_seed([60; 32]),
        Keypair::from_seed([61; 32]),
        Keypair::from_seed([62; 32]),
    );
    register_device(
        &mut net,
        t0 + 1,
        alice,
        &pv_a,
        DeviceKind::Pv,
        "street-1/house-a",
    );
    register_device(
        &mut net,
        t0 + 2,
        plant,
        &pv_plant,
        DeviceKind::Pv,
        "street-1/plant",
    );
    register_device(
        &mut net,
        t0 + 3,
        bob,
        &battery,
        DeviceKind::Battery,
        "street-1/house-b",
    );
    // The plant's account becomes a community asset: carol holds 3 shares, alice 1.
    let holders = vec![
        Shareholding {
            holder: net.keys[carol].address(),
            shares: 3,
        },
        Shareholding {
            holder: net.keys[alice].address(),
            shares: 1,
        },
    ];
    net.one(
        t0 + 4,
        plant,
        TxKind::CreateAsset {
            name: "street-1 plant".into(),
            holders: holders.clone(),
        },
    )
    .unwrap();
    assert!(matches!(
        econ_err(net.one(
            t0 + 5,
            plant,
            TxKind::CreateAsset {
                name: "again".into(),
                holders
            }
        )),
        economics::EconomicsError::AssetExists(_)
    ));
    // The grid operator asks street-1 to reduce its draw in the slot, at 0.50 a kWh; nobody else
    // may.
    let flex = TxKind::RequestFlexibility {
        slot: SLOT,
        area: "street-1".into(),
        direction: FlexDirection::Reduce,
        value_per_kwh: 500_000,
    };
    assert!(matches!(
        econ_err(net.one(t0 + 6, bob, flex.clone())),
        economics::EconomicsError::NotGridOperator
    ));
    net.one(t0 + 7, operator, flex).unwrap();
    let errs = net.block(
        t0 + 10,
        vec![
            net.tx(alice, order(Side::Ask, 1_000, 100, "street-1/house-a")),
            net.tx(plant, order(Side::Ask, 1_000, 120, "street-1/plant")),
            net.tx(bob, order(Side::Bid, 2_000, 250, "street-1/house-b")),
        ],
    );
    assert!(errs.is_empty(), "{errs:?}");
    let after = slot_start_ms(SLOT + 1) + 60_000;
    let readings = vec![
        committed(&net, &pv_a, SLOT, 500, 0, 500),
        committed(&net, &pv_plant, SLOT, 500, 0, 500),
        committed(&net, &battery, SLOT, 1_000, 0, 1_000),
    ];
    net.one(after, bob, TxKind::SubmitDeviceReadings { readings })
        .unwrap();
    let errs = net.block(
        after + 1,
        vec![
            net.tx(alice, reading(0, 1_000)),
            net.tx(plant, reading(0, 1_000)),
        ],
    );
    assert!(errs.is_empty(), "{errs:?}");
    net.block(slot_start_ms(SLOT + 1) + 60 * 60_000, vec![]);

    // Points: 0.5 kWh each sold at a 0.30 retail price (0.15), the battery's 1 kWh at 0.50.
    let cfg = net.chain.state().economics_config();
    let epoch = cfg.epoch_of(SLOT);
    let points = |net: &Net, who: usize| -> Points {
        net.chain
            .state()
            .points(epoch, &net.keys[who].address())
            .expect("points")
    };
    let (pa, pp, pb) = (points(&net, alice), points(&net, plant), points(&net, bob));
    assert_eq!((pa.renewable_mwh, pa.value), (500_000, 150_000));
    assert_eq!(pp.value, 150_000);
    assert_eq!((pb.flexibility_mwh, pb.value), (1_000_000, 500_000));

    // The epoch closes when its last slot is final: 10,000 tokens by value.
    let plant_before = net.balance(plant);
    let (carol_before, alice_before) = (net.balance(carol), net.balance(alice));
    let last = (epoch + 1) * u64::from(cfg.epoch_slots) - 1;
    let close = slot_start_ms(last + 1) + 24 * 3_600_000;
    net.block(close - 1, vec![]);
    assert!(net.chain.state().epoch(epoch).is_none());
    net.block(close, vec![]);
    let e: EpochRecord = net.chain.state().epoch(epoch).expect("epoch");
    assert_eq!(
        (e.emission, e.minted, e.recipients),
        (10_000_000_000, 10_000_000_000, 3)
    );
    assert_eq!(points(&net, bob).reward, 6_250_000_000);
    assert_eq!(points(&net, alice).reward, 1_875_000_000);
    let supply = net.chain.state().supply();
    assert_eq!(supply.minted, 10_000_000_000);
    // The plant's epoch revenue (its 0.5 kWh sale and its reward) went to its holders 3:1.
    let a: AssetRecord = net
        .chain
        .state()
        .asset(&net.keys[plant].address())
        .expect("asset");
    let revenue = a.paid_out;
    assert!(revenue >= 1_875_000_000, "{revenue}");
    assert_eq!(net.balance(carol) - carol_before, revenue / 4 * 3);
    assert_eq!(
        net.balance(alice) - alice_before,
        1_875_000_000 + revenue / 4,
        "alice's own reward and her quarter of the plant's"
    );
    assert!(net.balance(plant) < plant_before + 1_875_000_000);
    // Shares move between holders; no one can move more than they hold.
    let (asset, to) = (net.keys[plant].address(), net.keys[bob].address());
    let move_shares = |n: u64| TxKind::TransferShares {
        asset,
        to,
        shares: n,
    };
    assert!(matches!(
        econ_err(net.one(close + 1, carol, move_shares(4))),
        economics::EconomicsError::NotEnoughShares { held: 3, wanted: 4 }
    ));
    net.one(close + 2, carol, move_shares(2)).unwrap();
    let a: AssetRecord = net
        .chain
        .state()
        .asset(&net.keys[plant].address())
        .expect("asset");
    assert_eq!(a.holders.len(), 3);
    assert_eq!(a.holders.iter().map(|h| h.shares).sum::<u64>(), 4);
}

/// Fraud: a reading that claims more than the telemetry it committed to is proven false by one
/// committed sample and its bond is slashed at once (half to the reporter, half to the community
/// fund); a reading held by the clear-sky check opens a dispute that slashes after the window
/// unless the grid operator dismisses it. Owners cannot report themselves, nothing is slashed
/// twice, and a consistent sample is no evidence.
#[test]
fn false_readings_are_slashed_by_their_commitment_or_after_a_physics_dispute() {
    use gridmesh_ledger::economics::{self, community_fund_account, Dispute, DisputeState};
    use gridmesh_ledger::telemetry::{self, RawSample, SampleProof};
    use gridmesh_ledger::tx::FraudEvidence;
    let mut net = Net::with_grid_operator(5);
    let (alice, bob, carol, operator) = (1, 2, 3, 4);
    let t0 = slot_start_ms(SLOT) - 3_000_000;
    let (meter, honest, sunny1, sunny2) = (
        Keypair::from_seed([70; 32]),
        Keypair::from_seed([71; 32]),
        Keypair::from_seed([72; 32]),
        Keypair::from_seed([73; 32]),
    );
    register_device(
        &mut net,
        t0,
        alice,
        &meter,
        DeviceKind::Battery,
        "street-1/house-a",
    );
    register_device(
        &mut net,
        t0 + 1,
        bob,
        &honest,
        DeviceKind::Battery,
        "street-1/house-b",
    );
    register_device(
        &mut net,
        t0 + 2,
        alice,
        &sunny1,
        DeviceKind::Pv,
        "street-1/house-a",
    );
    register_device(
        &mut net,
        t0 + 3,
        bob,
        &sunny2,
        DeviceKind::Pv,
        "street-1/house-b",
    );
    // One-second telemetry, 1.8 kW: 500 mWh a second, 450 Wh over the slot.
    let chain_id = net.chain.chain_id().to_string();
    let start = slot_start_ms(SLOT);
    let telemetry = |k: &Keypair| -> Vec<RawSample> {
        (1..=900u64)
            .map(|i| RawSample::signed(k, &chain_id, i, start + i * 1_000, i * 500, 0, 1_800))
            .collect()
    };
    let (t_meter, t_honest) = (telemetry(&meter), telemetry(&honest));
    let (root_m, n_m) = telemetry::commitment(&t_meter);
    let (root_h, n_h) = telemetry::commitment(&t_honest);
    let after = slot_start_ms(SLOT + 1) + 60_000;
    let readings = vec![
        // Claims 600 Wh where its telemetry shows 450.
        device_reading(&net, &meter, SLOT, 600, 0, 600, root_m, n_m),
        device_reading(&net, &honest, SLOT, 450, 0, 450, root_h, n_h),
        // 5 kWh from 7.3 kW of PV in a quarter hour: above its rating.
        committed(&net, &sunny1, SLOT, 5_000, 0, 5_000),
        committed(&net, &sunny2, SLOT, 5_000, 0, 5_000),
    ];
    net.one(after, carol, TxKind::SubmitDeviceReadings { readings })
        .unwrap();
    net.block(slot_start_ms(SLOT + 1) + 60 * 60_000, vec![]);

    let proof = |samples: &[RawSample], i: usize| {
        let leaves: Vec<_> = samples.iter().map(RawSample::leaf).collect();
        FraudEvidence::Commitment(SampleProof {
            sample: samples[i],
            index: i as u32,
            path: gridmesh_ledger::merkle::proof(&leaves, i).unwrap(),
        })
    };
    let report = |device: &Keypair, evidence| TxKind::ReportFraud {
        device: device.address(),
        slot: SLOT,
        evidence,
    };
    let ts = slot_start_ms(SLOT + 1) + 61 * 60_000;
    // The owner may not report its own device; an honest reading's sample proves nothing.
    assert!(matches!(
        econ_err(net.one(ts, alice, report(&meter, proof(&t_meter, 899)))),
        economics::EconomicsError::OwnDevice
    ));
    assert!(matches!(
        econ_err(net.one(ts + 1, carol, report(&honest, proof(&t_honest, 899)))),
        economics::EconomicsError::EvidenceRejected(_)
    ));
    // A sample at the wrong place is no evidence either.
    let mut wrong = proof(&t_meter, 899);
    if let FraudEvidence::Commitment(p) = &mut wrong {
        p.index = 898;
    }
    assert!(matches!(
        econ_err(net.one(ts + 2, carol, report(&meter, wrong))),
        economics::EconomicsError::EvidenceRejected(_)
    ));
    // The last committed sample shows 450 Wh where the reading claims 600: slashed at once.
    let (carol_before, fund_before) = (
        net.balance(carol),
        net.chain.account(&community_fund_account()).balance.0,
    );
    net.one(ts + 3, carol, report(&meter, proof(&t_meter, 899)))
        .unwrap();
    assert_eq!(net.balance(carol) - carol_before, 10_000_000);
    assert_eq!(
        net.chain.account(&community_fund_account()).balance.0 - fund_before,
        10_000_000
    );
    let id: DeviceIdentity = net.chain.state().device(&meter.address()).expect("device");
    assert_eq!((id.status, id.bond), (DeviceStatus::Slashed, 0));
    let d: Dispute = net
        .chain
        .state()
        .dispute(SLOT, &meter.address())
        .expect("dispute");
    assert_eq!(d.state, DisputeState::Upheld);
    assert_eq!(
        d.finding,
        economics::DisputeFinding::Commitment {
            contradiction: gridmesh_ledger::telemetry::Contradiction::LastSampleMismatch
        }
    );
    assert!(matches!(
        econ_err(net.one(ts + 4, bob, report(&meter, proof(&t_meter, 899)))),
        economics::EconomicsError::AlreadyReported { .. }
    ));
    // A slashed device reports no more.
    let next = committed(&net, &meter, SLOT + 1, 1, 0, 601);
    assert_eq!(
        market_err(net.one(
            slot_start_ms(SLOT + 2) + 1,
            carol,
            TxKind::SubmitDeviceReadings {
                readings: vec![next]
            }
        )),
        MarketTxError::DeviceSlashed(meter.address())
    );

    // Its owner may still retire it (what is left of the bond, here nothing, returns).
    net.one(
        slot_start_ms(SLOT + 2) + 2,
        alice,
        TxKind::DecommissionDevice {
            device: meter.address(),
        },
    )
    .unwrap();

    // Physics: both PV readings were held (more than their rating allows). A report opens a
    // dispute that only the window, or the grid operator, decides.
    let ts = net.chain.head().timestamp_ms + 10;
    net.one(ts, carol, report(&sunny1, FraudEvidence::Physics))
        .unwrap();
    net.one(ts + 1, carol, report(&sunny2, FraudEvidence::Physics))
        .unwrap();
    assert!(matches!(
        econ_err(net.one(ts + 2, alice, report(&honest, FraudEvidence::Physics))),
        economics::EconomicsError::NotHeldByPhysics
    ));
    // The grid operator inspected sunny1's site and dismisses its dispute; only it may.
    let dismiss = TxKind::DismissDispute {
        device: sunny1.address(),
        slot: SLOT,
    };
    assert!(matches!(
        econ_err(net.one(ts + 3, carol, dismiss.clone())),
        economics::EconomicsError::NotGridOperator
    ));
    net.one(ts + 4, operator, dismiss).unwrap();
    let window = 7 * 24 * 3_600_000;
    let carol_before = net.balance(carol);
    net.block(ts + 1 + window - 1, vec![]);
    let id2: DeviceIdentity = net.chain.state().device(&sunny2.address()).expect("device");
    assert_eq!(
        id2.status,
        DeviceStatus::Active,
        "not before the window ends"
    );

    net.block(ts + 1 + window, vec![]);
    let id1: DeviceIdentity = net.chain.state().device(&sunny1.address()).expect("device");
    let id2: DeviceIdentity = net.chain.state().device(&sunny2.address()).expect("device");
    assert_eq!((id1.status, id1.bond), (DeviceStatus::Active, 20_000_000));
    assert_eq!((id2.status, id2.bond), (DeviceStatus::Slashed, 0));
    assert_eq!(net.balance(carol) - carol_before, 10_000_000);
    // After the window nothing more can be reported.
    assert!(matches!(
        econ_err(net.one(ts + 2 * window, carol, report(&honest, proof(&t_honest, 0)))),
        economics::EconomicsError::WindowClosed { .. }
    ));
}

/// Conservation per area: the grid operator's feeder-head meter for `street-1` bounds what the
/// street's homes may claim to export. An honest slot passes; a slot where the homes claim more
/// export than their neighbours took and the head passed upstream (with losses) is held, with the
/// reason, and earns nothing.
#[test]
fn an_area_claiming_more_export_than_its_feeder_head_saw_is_held() {
    let mut net = Net::with_grid_operator(4);
    let (alice, bob, operator) = (1, 2, 3);
    let t0 = slot_start_ms(SLOT) - 3_000_000;
    let (head, meter_a, meter_b) = (
        Keypair::from_seed([80; 32]),
        Keypair::from_seed([81; 32]),
        Keypair::from_seed([82; 32]),
    );
    register_device(&mut net, t0, operator, &head, DeviceKind::Meter, "street-1");
    register_device(
        &mut net,
        t0 + 1,
        alice,
        &meter_a,
        DeviceKind::Meter,
        "street-1/house-a",
    );
    register_device(
        &mut net,
        t0 + 2,
        bob,
        &meter_b,
        DeviceKind::Meter,
        "street-1/house-b",
    );
    // Slot 1: alice exports 1 kWh, bob takes 0.3 of it, the head passes 0.68 up (2 % lost).
    // Slot 2: alice claims 1.2 kWh with the same flows.
    for (slot, claim, reg) in [(SLOT, 1_000, 1_000), (SLOT + 1, 1_200, 2_200)] {
        let k = slot - SLOT + 1;
        let readings = vec![
            committed(&net, &head, slot, 680, 0, 680 * k),
            committed(&net, &meter_a, slot, claim, 0, reg),
            committed(&net, &meter_b, slot, 0, 300, 0),
        ];
        let ts = (slot_start_ms(slot + 1) + 60_000).max(net.chain.head().timestamp_ms + 1);
        net.one(ts, bob, TxKind::SubmitDeviceReadings { readings })
            .unwrap();
        net.block(slot_start_ms(slot + 1) + 60 * 60_000, vec![]);
    }
    let status = |slot: u64, k: &Keypair| -> ReadingStatus {
        net.chain
            .state()
            .device_reading(slot, &k.address())
            .expect("device reading")
            .status
    };
    for k in [&head, &meter_a, &meter_b] {
        assert_eq!(status(SLOT, k), ReadingStatus::Accepted);
    }
    assert_eq!(status(SLOT + 1, &head), ReadingStatus::Accepted);
    for k in [&meter_a, &meter_b] {
        match status(SLOT + 1, k) {
            ReadingStatus::Held { reason } => {
                assert!(!reason.disputable());
                // The area is the one the grid operator's head meter of "street-1" measures.
                assert!(
                    matches!(
                        reason,
                        HoldReason::AreaConservation {
                            head_meter,
                            claimed_mwh: 1_200_000,
                            ..
                        } if head_meter == head.address()
                    ),
                    "{reason:?}"
                );
            }
            other => panic!("{other:?}"),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Rewards, slashing and community assets conserve tokens: random keyed devices (some
    /// claiming more than their rating), trades, a flexibility request, physics fraud reports on
    /// whatever was held, an asset, and the epoch's close. At every block the balances reconcile
    /// with genesis + minted (`Net::block`); the epoch mints exactly the sum of its rewards, no
    /// more than its emission, and in the order of the owners' grid value.
    #[test]
    fn rewards_and_slashes_reconcile_with_the_supply(
        members in proptest::collection::vec((any::<bool>(), 1u64..2_000, 1u64..400, any::<bool>()), 2..7),
        flex_value in 1u64..2_000,
    ) {
        use gridmesh_ledger::economics::{EpochRecord, Points};
        use gridmesh_ledger::tx::{FlexDirection, FraudEvidence, Shareholding};
        let n = members.len();
        // keys: 0 faucet, 1..=n members, n+1 buyer, n+2 grid operator
        let mut net = Net::with_grid_operator(n + 3);
        let (buyer, operator) = (n + 1, n + 2);
        let t0 = slot_start_ms(SLOT) - 3_000_000;
        let devices: Vec<Keypair> = (0..n).map(|i| Keypair::from_seed([100 + i as u8; 32])).collect();
        let mut regs: Vec<(usize, DeviceKind)> = (1..=n).map(|i| (i, DeviceKind::Pv)).collect();
        regs.push((buyer, DeviceKind::Meter));
        register(&mut net, t0, &regs);
        for (i, (battery, ..)) in members.iter().enumerate() {
            let kind = if *battery { DeviceKind::Battery } else { DeviceKind::Pv };
            register_device(&mut net, t0 + 1 + i as u64, i + 1, &devices[i], kind, &format!("street-1/h{i}"));
        }
        net.one(t0 + 20, operator, TxKind::RequestFlexibility {
            slot: SLOT, area: "street-1".into(), direction: FlexDirection::Reduce,
            value_per_kwh: flex_value * 1_000,
        }).unwrap();
        // Member 1's account is a community asset held by the buyer and the operator.
        net.one(t0 + 21, 1, TxKind::CreateAsset { name: "plant".into(), holders: vec![
            Shareholding { holder: net.keys[buyer].address(), shares: 2 },
            Shareholding { holder: net.keys[operator].address(), shares: 1 },
        ]}).unwrap();
        let mut orders: Vec<VerifiedTx> = members.iter().enumerate().map(|(i, (_, wh, price, _))| {
            net.tx(i + 1, order(Side::Ask, (*wh).min(1_000), *price, &format!("street-1/h{i}")))
        }).collect();
        orders.push(net.tx(buyer, order(Side::Bid, 5_000, 400, "street-1/buyer")));
        prop_assert!(net.block(t0 + 30, orders).is_empty());
        let after = slot_start_ms(SLOT + 1) + 60_000;
            let readings: Vec<_> = members.iter().enumerate().map(|(i, (_, wh, _, _))| {
            committed(&net, &devices[i], SLOT, *wh, 0, *wh)
        }).collect();
        for (k, chunk) in readings.chunks(5).enumerate() {
            net.one(after + k as u64, buyer, TxKind::SubmitDeviceReadings { readings: chunk.to_vec() }).unwrap();
        }
        let meters: Vec<VerifiedTx> = members.iter().enumerate().map(|(i, (_, wh, ..))| net.tx(i + 1, reading(0, *wh))).collect();
        prop_assert!(net.block(after + 10, meters).is_empty());
        net.block(slot_start_ms(SLOT + 1) + 60 * 60_000, vec![]);
        // Reports on every held reading whose member asked for it.
        let ts = net.chain.head().timestamp_ms + 1;
        for (i, (.., report)) in members.iter().enumerate() {
            let rec: DeviceReadingRecord = net.chain.state().device_reading(SLOT, &devices[i].address()).expect("device reading");
            let held = matches!(rec.status, ReadingStatus::Held { reason } if reason.disputable());
            if *report {
                let r = net.one(ts + i as u64, buyer, TxKind::ReportFraud {
                    device: devices[i].address(), slot: SLOT, evidence: FraudEvidence::Physics,
                });
                prop_assert_eq!(r.is_ok(), held, "{:?}", r);
            }
        }
        let cfg = net.chain.state().economics_config();
        let epoch = cfg.epoch_of(SLOT);
        let last = (epoch + 1) * u64::from(cfg.epoch_slots) - 1;
        net.block(slot_start_ms(last + 1) + 24 * 3_600_000 + 8 * 24 * 3_600_000, vec![]);
        // An epoch in which nobody earned anything is never closed and mints nothing.
        let e: EpochRecord = match net.chain.state().epoch(epoch) {
            Some(e) => e,
            None => EpochRecord { epoch, emission: 0, minted: 0, total_value: 0, recipients: 0, asset_payouts: 0 },
        };
        prop_assert!(e.minted <= e.emission || e.minted == 0);
        let mut rewards: Vec<Points> = (1..=n + 1)
            .filter_map(|i| net.chain.state().points(epoch, &net.keys[i].address()))
            .collect();
        prop_assert_eq!(rewards.iter().map(|p| p.reward).sum::<u128>(), e.minted);
        prop_assert_eq!(net.chain.state().supply().minted, e.minted);
        rewards.sort_by_key(|p| p.value);
        for w in rewards.windows(2) {
            prop_assert!(w[0].reward <= w[1].reward, "rewards follow grid value");
        }
        prop_assert_eq!(net.escrow(), 0);
    }
}

/// A device registered with its own key backs its owner's asks (no legacy registration needed);
/// handed to another account, it backs theirs instead.
#[test]
fn keyed_devices_back_their_owners_asks() {
    let mut net = Net::with_grid_operator(4);
    let (alice, bob) = (1, 2);
    let t0 = slot_start_ms(SLOT) - 3_000_000;
    let pv = Keypair::from_seed([90; 32]);
    let ask = || order(Side::Ask, 1_000, 100, "street-1/house-a");
    assert_eq!(
        market_err(net.one(t0, alice, ask())),
        MarketTxError::NoProducingDevice
    );
    register_device(
        &mut net,
        t0 + 1,
        alice,
        &pv,
        DeviceKind::Pv,
        "street-1/house-a",
    );
    net.one(t0 + 2, alice, ask()).unwrap();
    net.one(
        t0 + 3,
        alice,
        TxKind::TransferDevice {
            device: pv.address(),
            to: net.keys[bob].address(),
        },
    )
    .unwrap();
    assert_eq!(
        market_err(net.one(t0 + 4, alice, ask())),
        MarketTxError::NoProducingDevice
    );
    net.one(t0 + 5, bob, ask()).unwrap();
    // Above what a 7.3 kW array delivers in a quarter hour (1.825 kWh): refused.
    assert!(matches!(
        market_err(net.one(
            t0 + 6,
            bob,
            order(Side::Ask, 2_000, 100, "street-1/house-b")
        )),
        MarketTxError::AskAboveCapacity { .. }
    ));
}

/// A slot's order book costs whoever fills it: every order locks the genesis deposit until the
/// slot clears, even a bid at price 0, so an account can hold only as many orders as its
/// balance has deposits; the deposits come back at clearing.
#[test]
fn every_order_locks_a_deposit_until_its_slot_clears() {
    let mut net = Net::new(3);
    let t0 = slot_start_ms(SLOT) - 3_000_000;
    let zero_price_bid = |n: u64| TxKind::PlaceOrder {
        slot: SLOT,
        side: Side::Bid,
        energy_mwh: 1_000 + n,
        price_per_kwh: 0,
        location: String::new(),
    };
    // Member 1 keeps 0.35 tokens: room for three deposits of 0.1, not four.
    let keep = 350_000;
    let give = net.balance(1) - keep;
    net.one(
        t0,
        1,
        TxKind::Transfer {
            to: net.keys[2].address(),
            amount: Amount(give),
        },
    )
    .unwrap();
    for n in 0..3 {
        net.one(t0 + 1 + n, 1, zero_price_bid(n)).unwrap();
    }
    let r = net.one(t0 + 10, 1, zero_price_bid(3));
    assert!(matches!(r, Err(TxError::InsufficientFunds { .. })), "{r:?}");
    assert_eq!(net.balance(1), keep - 300_000);
    assert_eq!(net.escrow(), 300_000);
    // Past gate closure the slot clears (no asks: nothing trades) and the deposits come back.
    let after_gate = slot_start_ms(SLOT) - 60_000;
    net.block(after_gate, vec![]);
    assert_eq!(net.balance(1), keep);
    assert_eq!(net.escrow(), 0);
}

/// Ratings are bounded per kind by the genesis and a keyed device's bond grows with its rating
/// (the wash-trading attack registered a PV rated `u32::MAX` with the least bond).
#[test]
fn device_ratings_are_bounded_and_bonds_scale_with_them() {
    let mut net = Net::new(3);
    let t0 = slot_start_ms(SLOT) - 3_000_000;
    let huge = TxKind::RegisterDevice {
        kind: DeviceKind::Pv,
        capacity_w: u32::MAX,
    };
    assert_eq!(
        market_err(net.one(t0, 1, huge)),
        MarketTxError::RatingTooHigh {
            kind: "pv",
            capacity_w: u32::MAX,
            max_w: 1_000_000
        }
    );
    let device = Keypair::from_seed([60; 32]);
    let keyed = |net: &Net, capacity_w: u32, bond_tokens: u64| {
        let info = DeviceInfo {
            capacity_w,
            ..pv_info()
        };
        let message = gridmesh_ledger::tx::device_registration_message(
            net.chain.chain_id(),
            &net.keys[1].address(),
            &info,
        );
        TxKind::RegisterDeviceKey {
            device: device.address(),
            info,
            bond: Amount::from_tokens(bond_tokens),
            device_signature: device.sign(&message),
        }
    };
    let tx = keyed(&net, u32::MAX, 900);
    assert!(matches!(
        market_err(net.one(t0 + 1, 1, tx)),
        MarketTxError::RatingTooHigh { .. }
    ));
    // 50 kW of PV bonds 1 token per kW: 50 tokens, not the least 10.
    let tx = keyed(&net, 50_000, 10);
    assert_eq!(
        market_err(net.one(t0 + 2, 1, tx)),
        MarketTxError::BondTooSmall {
            got: 10_000_000,
            min: 50_000_000
        }
    );
    let before = net.balance(1);
    let tx = keyed(&net, 50_000, 50);
    net.one(t0 + 3, 1, tx).unwrap();
    assert_eq!(before - net.balance(1), 50_000_000);
    // A meter does not earn: the least bond whatever its rating.
    let cfg = gridmesh_ledger::MarketConfig::default();
    assert_eq!(cfg.device_bond(DeviceKind::Meter, 5_000_000), 10_000_000);
    assert_eq!(cfg.device_bond(DeviceKind::Battery, 10_001), 10_001_000);
}

/// What a seller sells is paid only as far as its keyed devices measured it (phantom energy: a
/// meter reading alone pays nothing), and trades between accounts of one owner earn no rewards
/// (wash trading: an account buying from itself, from its own device's key, or an asset from
/// its holder).
#[test]
fn phantom_energy_is_not_paid_and_wash_trades_earn_nothing() {
    let mut net = Net::new(5);
    let (a, asset, h, phantom) = (1, 2, 3, 4);
    let t0 = slot_start_ms(SLOT) - 3_000_000;
    register(
        &mut net,
        t0,
        &[
            (a, DeviceKind::Battery),
            (h, DeviceKind::Meter),
            (phantom, DeviceKind::Battery),
        ],
    );
    // a's device key holds tokens to bid with; `asset` is a community asset a holds.
    let dev = net.device_key(a);
    let fund = net.tx(
        a,
        TxKind::Transfer {
            to: dev.address(),
            amount: Amount::from_tokens(50),
        },
    );
    let create = net.tx(
        asset,
        TxKind::CreateAsset {
            name: "a's".into(),
            holders: vec![gridmesh_ledger::tx::Shareholding {
                holder: net.keys[a].address(),
                shares: 1,
            }],
        },
    );
    assert!(net.block(t0 + 1, vec![fund, create]).is_empty());
    let dev_bid = TxBody {
        version: TX_VERSION,
        chain_id: net.chain.chain_id().to_string(),
        sender: dev.address(),
        nonce: 0,
        kind: order(Side::Bid, 500, 300, "s/dev"),
    }
    .sign(&dev)
    .verify()
    .unwrap();
    let orders = vec![
        net.tx(a, order(Side::Ask, 2_000, 100, "s/a")),
        dev_bid,
        net.tx(asset, order(Side::Bid, 500, 300, "s/asset")),
        net.tx(h, order(Side::Bid, 1_000, 300, "s/h")),
        net.tx(phantom, order(Side::Ask, 500, 100, "s/p")),
    ];
    assert!(net.block(t0 + 2, orders).is_empty());
    let own_bid = vec![net.tx(a, order(Side::Bid, 500, 300, "s/a"))];
    assert!(net.block(t0 + 3, own_bid).is_empty());
    net.block(slot_start_ms(SLOT) - 300_000, vec![]); // clears
    let trades = net.chain.state().trades(SLOT);
    assert!(
        trades
            .iter()
            .any(|t| t.seller == net.keys[phantom].address()),
        "{trades:?}"
    );
    // a's battery measured all it sold; the phantom seller's meter says it exported, its
    // device says nothing.
    let end = slot_start_ms(SLOT + 1);
    let readings = vec![
        net.tx(a, reading(500, 2_000)),
        net.device_reading(a, SLOT, 2_000),
        net.tx(phantom, reading(0, 500)),
    ];
    assert!(net.block(end + 1_000, readings).is_empty());
    net.block(end + 3_600_000, vec![]); // settles
    let trades = net.chain.state().trades(SLOT);
    for t in &trades {
        let delivered = t.settlement.as_ref().unwrap().delivered_mwh;
        if t.seller == net.keys[phantom].address() {
            assert_eq!(delivered, 0, "a meter reading alone pays nothing");
        } else {
            assert_eq!(delivered, t.trade.energy_mwh);
        }
    }
    // Of a's buyers only h is another owner: a earns the grid value of what it delivered to h
    // at the retail tariff (0.30), nothing for itself, its device's key or its asset.
    let to_h: u64 = trades
        .iter()
        .filter(|t| t.seller == net.keys[a].address() && t.buyer == net.keys[h].address())
        .map(|t| t.settlement.as_ref().unwrap().delivered_mwh)
        .sum();
    let sold: u64 = trades
        .iter()
        .filter(|t| t.seller == net.keys[a].address())
        .map(|t| t.trade.energy_mwh)
        .sum();
    assert!(
        to_h > 0 && to_h < sold,
        "a sold {sold} mWh, {to_h} of it to h"
    );
    let epoch = net.chain.state().economics_config().epoch_of(SLOT);
    let points = net
        .chain
        .state()
        .points(epoch, &net.keys[a].address())
        .expect("a earned points");
    assert_eq!(points.renewable_mwh, to_h);
    assert_eq!(points.value, u128::from(to_h) * 3 / 10);
    assert!(net
        .chain
        .state()
        .points(epoch, &net.keys[phantom].address())
        .is_none());
}

#[derive(Debug, Clone)]
struct Wash {
    /// The second account is a community asset the first holds (the ledger can tell), or an
    /// unrelated-looking account (it cannot).
    second_is_asset: bool,
    ask_wh: u64,
    /// Bids of the first account, the second, the device's key and an honest neighbour.
    bids_wh: [u64; 4],
    /// What the first account's meter and its battery report.
    meter_export_wh: u64,
    device_out_wh: u64,
}

fn wash() -> impl Strategy<Value = Wash> {
    (
        any::<bool>(),
        1u64..2_500,
        [0u64..1_500, 0u64..1_500, 0u64..1_500, 0u64..1_500],
        0u64..2_500,
        0u64..2_500,
    )
        .prop_map(
            |(second_is_asset, ask_wh, bids_wh, meter_export_wh, device_out_wh)| Wash {
                second_is_asset,
                ask_wh,
                bids_wh,
                meter_export_wh,
                device_out_wh,
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// One owner with several accounts (its own, a second one, its battery's key) trades with
    /// itself and a neighbour however it likes and reports whatever its meter and battery say:
    /// its rewards never exceed the grid value of what its keyed battery measured, and they are
    /// exactly the value delivered to accounts the ledger cannot tie to it.
    #[test]
    fn no_strategy_of_one_owner_earns_more_than_its_verified_exports_are_worth(w in wash()) {
        let mut net = Net::new(5);
        let (a, second, h) = (1, 2, 3);
        let t0 = slot_start_ms(SLOT) - 3_000_000;
        register(&mut net, t0, &[(a, DeviceKind::Battery), (h, DeviceKind::Meter)]);
        let dev = net.device_key(a);
        let mut setup = vec![net.tx(a, TxKind::Transfer { to: dev.address(), amount: Amount::from_tokens(50) })];
        if w.second_is_asset {
            setup.push(net.tx(second, TxKind::CreateAsset {
                name: "second".into(),
                holders: vec![gridmesh_ledger::tx::Shareholding { holder: net.keys[a].address(), shares: 1 }],
            }));
        }
        prop_assert!(net.block(t0 + 1, setup).is_empty());
        let mut orders = vec![net.tx(a, order(Side::Ask, w.ask_wh, 100, "s/a"))];
        let [own, second_wh, dev_wh, h_wh] = w.bids_wh;
        if second_wh > 0 {
            orders.push(net.tx(second, order(Side::Bid, second_wh, 300, "s/b")));
        }
        if h_wh > 0 {
            orders.push(net.tx(h, order(Side::Bid, h_wh, 300, "s/h")));
        }
        if dev_wh > 0 {
            orders.push(TxBody {
                version: TX_VERSION,
                chain_id: net.chain.chain_id().to_string(),
                sender: dev.address(),
                nonce: 0,
                kind: order(Side::Bid, dev_wh, 300, "s/dev"),
            }.sign(&dev).verify().unwrap());
        }
        prop_assert!(net.block(t0 + 2, orders).is_empty());
        if own > 0 {
            prop_assert!(net.block(t0 + 3, vec![net.tx(a, order(Side::Bid, own, 300, "s/a"))]).is_empty());
        }
        net.block(slot_start_ms(SLOT) - 300_000, vec![]); // clears
        let end = slot_start_ms(SLOT + 1);
        let mut readings = vec![net.tx(a, reading(0, w.meter_export_wh))];
        if w.device_out_wh > 0 {
            readings.push(net.device_reading(a, SLOT, w.device_out_wh));
        }
        prop_assert!(net.block(end + 1_000, readings).is_empty());
        net.block(end + 3_600_000, vec![]); // settles

        let retail = 300_000;
        let me = net.keys[a].address();
        let tied = |buyer: &Address| {
            *buyer == me || *buyer == dev.address()
                || (w.second_is_asset && *buyer == net.keys[second].address())
        };
        let trades = net.chain.state().trades(SLOT);
        let to_others: u128 = trades
            .iter()
            .filter(|t| t.seller == me && !tied(&t.buyer))
            .map(|t| gridmesh_market::value_floor(t.settlement.as_ref().unwrap().delivered_mwh, retail))
            .sum();
        let delivered: u64 = trades
            .iter()
            .filter(|t| t.seller == me)
            .map(|t| t.settlement.as_ref().unwrap().delivered_mwh)
            .sum();
        let verified = w.device_out_wh.min(w.meter_export_wh) * 1_000;
        prop_assert!(delivered <= verified, "delivered {delivered} > verified {verified}");
        let epoch = net.chain.state().economics_config().epoch_of(SLOT);
        let points = |who: &Address| net.chain.state().points(epoch, who).map_or(0, |p| p.value);
        let earned = points(&me) + points(&net.keys[second].address()) + points(&dev.address());
        prop_assert_eq!(earned, to_others);
        prop_assert!(earned <= gridmesh_market::value_floor(verified, retail));
    }
}
