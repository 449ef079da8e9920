//! No transaction can panic a validator. Transactions of every kind carry extreme values
//! (amounts near `u128::MAX`, energies and registers near `u64::MAX` and `i64::MAX`, slots and
//! times at the ends of their range, prices at and beyond their bounds, shares that sum past
//! `u64::MAX`) through admission's form checks and block execution over a slot's whole life:
//! gate closure, settlement, the late window, an epoch's close with rewards and asset payouts,
//! and the dispute window. Each is applied or refused with a typed error, and the balances
//! reconcile with the supply at every block. Test builds check overflow, and the release build
//! does too (`overflow-checks`), so an unchecked operation that overflows fails here.

use gridmesh_ledger::economics::EconomicsFile;
use gridmesh_ledger::genesis::GenesisAccount;
use gridmesh_ledger::market::MarketFile;
use gridmesh_ledger::readers::EconomicsReader;
use gridmesh_ledger::telemetry::{RawSample, SampleProof};
use gridmesh_ledger::tx::{
    device_registration_message, DeviceReading, FlexDirection, FraudEvidence, Shareholding,
    TX_VERSION,
};
use gridmesh_ledger::{
    Chain, DeviceInfo, DeviceKind, Genesis, GridEventKind, Keypair, Side, TxBody, TxKind,
    VerifiedTx,
};
use gridmesh_types::units::slot_start_ms;
use gridmesh_types::{Address, Amount, Hash32};
use proptest::prelude::*;

const SLOT: u64 = 1_900_000;
/// The last slot a transaction may name.
const LAST_SLOT: u64 = gridmesh_types::units::MAX_SLOT;
const EMISSION_CAP: u128 = 1_000_000_000_000;
/// What the setup's 7.3 kW devices can deliver in a slot.
const RATED_SLOT_MWH: u64 = 1_825_000;

fn u64s() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(0),
        Just(1),
        Just(u64::MAX),
        Just(u64::MAX - 1),
        Just(i64::MAX as u64),
        Just(i64::MAX as u64 + 1),
        Just(u64::from(u32::MAX)),
        Just(gridmesh_market::MAX_ORDER_MWH),
        Just(gridmesh_market::MAX_ORDER_MWH + 1),
        0..10_000_000u64,
        any::<u64>(),
    ]
}

fn u32s() -> impl Strategy<Value = u32> {
    prop_oneof![
        Just(0),
        Just(1),
        Just(u32::MAX),
        0..100_000u32,
        any::<u32>()
    ]
}

fn amounts() -> impl Strategy<Value = u128> {
    prop_oneof![
        Just(0),
        Just(1),
        Just(u128::MAX),
        Just(u128::MAX - 1),
        Just(u128::MAX / 2),
        Just(u128::MAX / 4),
        Just(u128::from(u64::MAX)),
        0..1_000_000_000u128,
        any::<u128>(),
    ]
}

fn prices() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(0),
        Just(1),
        Just(gridmesh_market::MAX_PRICE_PER_KWH),
        Just(gridmesh_market::MAX_PRICE_PER_KWH + 1),
        Just(u64::MAX),
        0..1_000_000u64,
    ]
}

fn slots() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(0),
        Just(SLOT),
        Just(SLOT + 1),
        Just(SLOT - 1),
        Just(LAST_SLOT),
        Just(LAST_SLOT + 1),
        Just(u64::MAX / 900_000),
        Just(u64::MAX),
        SLOT - 4..SLOT + 8,
    ]
}

fn times() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(0),
        Just(u64::MAX),
        Just(slot_start_ms(SLOT)),
        slot_start_ms(SLOT) - 7_200_000..slot_start_ms(SLOT) + 7_200_000,
    ]
}

fn locations() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just("street-1/house-4".to_string()),
        Just("street-1".to_string()),
        Just("a/b/c/d/e/f/g/h/i/j".to_string()),
        Just("x".repeat(200)),
    ]
}

fn address(i: u8) -> Address {
    if i < 4 {
        key(i).address()
    } else {
        Address([i; 32])
    }
}

fn key(i: u8) -> Keypair {
    Keypair::from_seed([i + 1; 32])
}

/// Device keys are 10 and 11.
fn device_key(i: u8) -> Keypair {
    Keypair::from_seed([10 + i % 2; 32])
}

fn infos() -> impl Strategy<Value = DeviceInfo> {
    (
        0..5u8,
        u32s(),
        locations(),
        any::<i32>(),
        any::<i32>(),
        any::<u8>(),
        any::<u16>(),
    )
        .prop_map(
            |(kind, capacity_w, location, lat, lon, tilt, az)| DeviceInfo {
                kind: [
                    DeviceKind::Pv,
                    DeviceKind::Battery,
                    DeviceKind::EvCharger,
                    DeviceKind::Load,
                    DeviceKind::Meter,
                ][usize::from(kind)],
                capacity_w,
                location,
                latitude_microdeg: lat,
                longitude_microdeg: lon,
                tilt_deg: tilt,
                azimuth_deg: az,
            },
        )
}

/// What a generated transaction is; signatures are made once the sender and chain are known.
#[derive(Clone, Debug)]
enum Gen {
    Kind(TxKind),
    Register {
        device: u8,
        info: DeviceInfo,
        bond: u128,
    },
    Readings(Vec<(u8, u64, u64, u64, u64, u32)>),
    Commitment {
        device: u8,
        slot: u64,
        seq: u64,
        time_ms: u64,
        out: u64,
        inn: u64,
        power_w: i32,
        index: u32,
    },
}

fn gens() -> impl Strategy<Value = Gen> {
    prop_oneof![
        (0..6u8, amounts()).prop_map(|(to, a)| Gen::Kind(TxKind::Transfer {
            to: address(to),
            amount: Amount(a)
        })),
        (0..5u8, u32s()).prop_map(|(k, capacity_w)| Gen::Kind(TxKind::RegisterDevice {
            kind: [
                DeviceKind::Pv,
                DeviceKind::Battery,
                DeviceKind::EvCharger,
                DeviceKind::Load,
                DeviceKind::Meter
            ][usize::from(k)],
            capacity_w
        })),
        (slots(), any::<bool>(), u64s(), prices(), locations()).prop_map(
            |(slot, bid, energy_mwh, price_per_kwh, location)| Gen::Kind(TxKind::PlaceOrder {
                slot,
                side: if bid { Side::Bid } else { Side::Ask },
                energy_mwh,
                price_per_kwh,
                location,
            })
        ),
        (slots(), u64s())
            .prop_map(|(slot, order_id)| Gen::Kind(TxKind::CancelOrder { slot, order_id })),
        (slots(), u64s(), u64s()).prop_map(|(slot, import_mwh, export_mwh)| Gen::Kind(
            TxKind::SubmitReading {
                slot,
                import_mwh,
                export_mwh
            }
        )),
        (slots(), locations(), u64s(), u64s()).prop_map(
            |(slot, location, import_mwh, export_mwh)| Gen::Kind(TxKind::SetEnvelope {
                slot,
                location,
                import_mwh,
                export_mwh
            })
        ),
        (0..3u8, times()).prop_map(|(e, at_ms)| Gen::Kind(TxKind::GridEvent {
            event: [
                GridEventKind::Islanded,
                GridEventKind::Resynchronising,
                GridEventKind::Reconnected
            ][usize::from(e)],
            at_ms
        })),
        (0..2u8, infos(), amounts()).prop_map(|(device, info, bond)| Gen::Register {
            device,
            info,
            bond
        }),
        (0..2u8, 0..6u8).prop_map(|(d, to)| Gen::Kind(TxKind::TransferDevice {
            device: device_key(d).address(),
            to: address(to)
        })),
        (0..2u8).prop_map(|d| Gen::Kind(TxKind::DecommissionDevice {
            device: device_key(d).address()
        })),
        prop::collection::vec((0..2u8, slots(), u64s(), u64s(), u64s(), u32s()), 1..4)
            .prop_map(Gen::Readings),
        (0..2u8, slots()).prop_map(|(d, slot)| Gen::Kind(TxKind::ReportFraud {
            device: device_key(d).address(),
            slot,
            evidence: FraudEvidence::Physics
        })),
        (
            0..2u8,
            slots(),
            u64s(),
            times(),
            u64s(),
            u64s(),
            any::<i32>(),
            u32s()
        )
            .prop_map(|(device, slot, seq, time_ms, out, inn, power_w, index)| {
                Gen::Commitment {
                    device,
                    slot,
                    seq,
                    time_ms,
                    out,
                    inn,
                    power_w,
                    index,
                }
            }),
        (0..2u8, slots()).prop_map(|(d, slot)| Gen::Kind(TxKind::DismissDispute {
            device: device_key(d).address(),
            slot
        })),
        (slots(), locations(), any::<bool>(), prices()).prop_map(
            |(slot, area, reduce, value_per_kwh)| Gen::Kind(TxKind::RequestFlexibility {
                slot,
                area,
                direction: if reduce {
                    FlexDirection::Reduce
                } else {
                    FlexDirection::Increase
                },
                value_per_kwh
            })
        ),
        prop::collection::vec((0..6u8, u64s()), 0..5).prop_map(|h| Gen::Kind(
            TxKind::CreateAsset {
                name: "plant".into(),
                holders: h
                    .into_iter()
                    .map(|(i, shares)| Shareholding {
                        holder: address(i),
                        shares
                    })
                    .collect()
            }
        )),
        (0..6u8, 0..6u8, u64s()).prop_map(|(a, to, shares)| Gen::Kind(TxKind::TransferShares {
            asset: address(a),
            to: address(to),
            shares
        })),
    ]
}

fn make(chain: &Chain, sender: u8, g: Gen) -> TxKind {
    let chain_id = chain.chain_id();
    match g {
        Gen::Kind(k) => k,
        Gen::Register { device, info, bond } => {
            let d = device_key(device);
            let message = device_registration_message(chain_id, &key(sender).address(), &info);
            TxKind::RegisterDeviceKey {
                device: d.address(),
                info,
                bond: Amount(bond),
                device_signature: d.sign(&message),
            }
        }
        Gen::Readings(rs) => TxKind::SubmitDeviceReadings {
            readings: rs
                .into_iter()
                .map(|(d, slot, out, inn, register, count)| {
                    DeviceReading::signed(
                        &device_key(d),
                        chain_id,
                        slot,
                        out,
                        inn,
                        register,
                        Hash32([d.wrapping_add(1); 32]),
                        count,
                    )
                })
                .collect(),
        },
        Gen::Commitment {
            device,
            slot,
            seq,
            time_ms,
            out,
            inn,
            power_w,
            index,
        } => {
            let d = device_key(device);
            let sample = RawSample::signed(&d, chain_id, seq, time_ms, out, inn, power_w);
            TxKind::ReportFraud {
                device: d.address(),
                slot,
                evidence: FraudEvidence::Commitment(SampleProof {
                    sample,
                    index,
                    path: vec![Hash32([7; 32]); (index % 4) as usize],
                }),
            }
        }
    }
}

/// Block times over a slot's whole life: before it, at its gate closure, after it, after the
/// correction window, the late window, the epoch and the dispute window.
fn ladder() -> Vec<u64> {
    let start = slot_start_ms(SLOT);
    vec![
        start - 3_000_000,
        start - 1_000_000,
        start - 60_000,
        start + 1_000,
        start + 900_000 + 1_000,
        start + 900_000 + 3_600_000 + 1_000,
        start + 900_000 + 25 * 3_600_000,
        start + 3 * 86_400_000,
        start + 8 * 86_400_000,
        start + 20 * 86_400_000,
    ]
}

fn genesis(big: u128, dir: &std::path::Path) -> Chain {
    let mut g = Genesis::dev(key(0).address());
    g.timestamp_ms = slot_start_ms(SLOT) - 3_600_000;
    let small = Amount::from_tokens(1_000).0;
    g.accounts = vec![
        GenesisAccount {
            address: key(0).address(),
            balance: Amount(small),
        },
        GenesisAccount {
            address: key(1).address(),
            balance: Amount(big),
        },
        GenesisAccount {
            address: key(2).address(),
            balance: Amount(big),
        },
        GenesisAccount {
            address: key(3).address(),
            balance: Amount(1),
        },
    ];
    g.market = Some(MarketFile {
        grid_operator: Some(key(0).address()),
        market_operator: Some(Address([0xdd; 32])),
        ..Default::default()
    });
    g.economics = Some(EconomicsFile {
        epoch_slots: Some(4),
        epoch_emission: Some(Amount(EMISSION_CAP / 2).to_string()),
        emission_cap: Some(Amount(EMISSION_CAP).to_string()),
        dispute_window_minutes: Some(60),
        ..Default::default()
    });
    Chain::open(dir, &g).unwrap()
}

fn sane_info(kind: DeviceKind) -> DeviceInfo {
    DeviceInfo {
        kind,
        capacity_w: 7_300,
        location: "street-1/house-4".into(),
        latitude_microdeg: 47_376_900,
        longitude_microdeg: 8_541_700,
        tilt_deg: 30,
        azimuth_deg: 180,
    }
}

/// Transactions that put the chain where the deep paths run (devices with bonds, an asset with
/// shares near `u64::MAX`, a flexibility request at the price bound, orders of the largest
/// energy at the price bounds, readings of extreme energies), placed before the random ones of
/// the same block so they take the senders' first slots. `(energy, price, amount)` are extremes.
fn setup(block: usize, (energy, price, amount): (u64, u64, u128)) -> Vec<(u8, Gen)> {
    let order = |side, slot, energy_mwh, price_per_kwh| {
        Gen::Kind(TxKind::PlaceOrder {
            slot,
            side,
            energy_mwh,
            price_per_kwh,
            location: "street-1/house-4".into(),
        })
    };
    match block {
        0 => vec![
            (
                1,
                Gen::Register {
                    device: 0,
                    info: sane_info(DeviceKind::Pv),
                    bond: amount.max(1),
                },
            ),
            (
                2,
                Gen::Register {
                    device: 1,
                    info: sane_info(DeviceKind::Battery),
                    bond: Amount::from_tokens(20).0,
                },
            ),
            (
                3,
                Gen::Kind(TxKind::CreateAsset {
                    name: "plant".into(),
                    holders: vec![
                        Shareholding {
                            holder: address(1),
                            shares: u64::MAX / 2,
                        },
                        Shareholding {
                            holder: address(2),
                            shares: u64::MAX / 2 + 1,
                        },
                    ],
                }),
            ),
            (
                0,
                Gen::Kind(TxKind::RequestFlexibility {
                    slot: SLOT,
                    area: "street-1".into(),
                    direction: FlexDirection::Reduce,
                    value_per_kwh: gridmesh_market::MAX_PRICE_PER_KWH,
                }),
            ),
        ],
        1 => vec![
            (1, order(Side::Ask, SLOT, RATED_SLOT_MWH, 1)),
            (
                2,
                order(
                    Side::Bid,
                    SLOT,
                    energy.clamp(1, gridmesh_market::MAX_ORDER_MWH),
                    price.min(gridmesh_market::MAX_PRICE_PER_KWH),
                ),
            ),
            (
                3,
                Gen::Kind(TxKind::Transfer {
                    to: address(3),
                    amount: Amount(1),
                }),
            ),
        ],
        2 => vec![
            (
                2,
                order(Side::Ask, SLOT + 1, energy.clamp(1, RATED_SLOT_MWH), price),
            ),
            (1, order(Side::Bid, SLOT + 1, energy.max(1), price)),
        ],
        4 => vec![
            (
                1,
                Gen::Kind(TxKind::SubmitReading {
                    slot: SLOT,
                    import_mwh: energy,
                    export_mwh: energy,
                }),
            ),
            (
                3,
                Gen::Readings(vec![
                    (
                        0,
                        SLOT,
                        energy,
                        0,
                        energy,
                        gridmesh_ledger::limits::MAX_SAMPLES_PER_READING,
                    ),
                    (1, SLOT, energy, energy, energy, 1),
                ]),
            ),
        ],
        // Settled: the PV reading above its rating is held by physics. Report it; the dispute
        // window (an hour) ends before the next block, which slashes the (extreme) bond.
        5 => vec![(
            2,
            Gen::Kind(TxKind::ReportFraud {
                device: device_key(0).address(),
                slot: SLOT,
                evidence: FraudEvidence::Physics,
            }),
        )],
        _ => Vec::new(),
    }
}

fn signed(chain: &Chain, sender: u8, kind: TxKind) -> Option<VerifiedTx> {
    let k = key(sender);
    let body = TxBody {
        version: TX_VERSION,
        chain_id: chain.chain_id().to_string(),
        sender: k.address(),
        nonce: chain.account(&k.address()).nonce,
        kind,
    };
    // Admission decodes (form and bounds) and verifies: a malformed transaction never reaches
    // a block, as in the mempool and in a replica's block check.
    let bytes = body.sign(&k).encode();
    gridmesh_ledger::SignedTx::decode(&bytes)
        .ok()?
        .verify()
        .ok()
}

proptest! {
    // 64 cases in CI; `GRIDMESH_EXTREME_CASES=5000` searches longer.
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("GRIDMESH_EXTREME_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(64)
    ))]

    #[test]
    fn no_transaction_panics_a_validator_and_the_supply_reconciles(
        supply_at_the_limit in any::<bool>(),
        extreme in (u64s(), prices(), amounts()),
        blocks in prop::collection::vec(prop::collection::vec((0..4u8, gens()), 0..4), 10),
    ) {
        run(supply_at_the_limit, extreme, blocks)?;
    }
}

/// Runs the ladder of blocks with the setup and `blocks`' random transactions; checks the supply
/// at every block. Returns the chain's final state for more checks.
fn run(
    supply_at_the_limit: bool,
    extreme: (u64, u64, u128),
    blocks: Vec<Vec<(u8, Gen)>>,
) -> Result<(tempfile::TempDir, Chain), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    // The largest genesis the emission cap still fits above, or a quarter of it.
    let small = Amount::from_tokens(1_000).0 + 1;
    let big = if supply_at_the_limit {
        (u128::MAX - EMISSION_CAP - small) / 2
    } else {
        u128::MAX / 8
    };
    let mut chain = genesis(big, dir.path());
    let genesis_supply = chain.state().total_supply().0;
    for (i, (ts, txs)) in ladder().into_iter().zip(blocks).enumerate() {
        let mut seen = std::collections::BTreeSet::new();
        let txs: Vec<VerifiedTx> = setup(i, extreme)
            .into_iter()
            .chain(txs)
            .filter(|(s, _)| seen.insert(*s))
            .filter_map(|(s, g)| {
                let kind = make(&chain, s, g);
                signed(&chain, s, kind)
            })
            .collect();
        let built = chain.build_block(txs, ts, key(0).address());
        chain.commit(&built.block, built.executed).unwrap();
        let supply = chain.state().supply();
        prop_assert_eq!(supply.genesis, genesis_supply);
        prop_assert!(supply.minted <= EMISSION_CAP);
        prop_assert_eq!(chain.state().total_supply().0, supply.expected());
    }
    Ok((dir, chain))
}

/// A genesis whose supply leaves no room for the emission cap is refused with a clear error.
#[test]
fn a_genesis_without_room_for_the_emission_cap_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut g = Genesis::dev(key(0).address());
    g.accounts = vec![GenesisAccount {
        address: key(1).address(),
        balance: Amount(u128::MAX - EMISSION_CAP + 1),
    }];
    g.economics = Some(EconomicsFile {
        emission_cap: Some(Amount(EMISSION_CAP).to_string()),
        ..Default::default()
    });
    let err = Chain::open(dir.path(), &g)
        .err()
        .expect("refused")
        .to_string();
    assert!(err.contains("emission cap"), "{err}");
}

/// The largest bond a member can post, held by physics, reported and slashed when the dispute
/// window ends: the slash splits it without overflow, and the supply still reconciles.
#[test]
fn the_largest_bond_is_slashed_without_overflow() {
    // 10 kWh in a quarter hour from a 7.3 kW array: above its rating, held, disputable.
    let bond = u128::MAX / 4;
    let (_dir, chain) = run(true, (10_000_000, 1_000, bond), vec![Vec::new(); 10]).unwrap();
    let d = chain
        .state()
        .dispute(SLOT, &device_key(0).address())
        .expect("the report opened a dispute");
    assert_eq!(d.state, gridmesh_ledger::economics::DisputeState::Upheld);
    assert_eq!(d.slashed, bond);
    assert_eq!(d.to_reporter, bond / 2);
}

/// A transaction that names a slot after the year 9999 is malformed: refused when decoded, by
/// the mempool and by every replica, before any arithmetic sees the slot.
#[test]
fn a_slot_after_the_year_9999_is_malformed() {
    let k = key(1);
    let encoded = |slot| {
        TxBody {
            version: TX_VERSION,
            chain_id: "gridmesh-dev".into(),
            sender: k.address(),
            nonce: 0,
            kind: TxKind::SubmitReading {
                slot,
                import_mwh: 0,
                export_mwh: 0,
            },
        }
        .sign(&k)
        .encode()
    };
    assert!(gridmesh_ledger::SignedTx::decode(&encoded(LAST_SLOT)).is_ok());
    let err = gridmesh_ledger::SignedTx::decode(&encoded(LAST_SLOT + 1))
        .unwrap_err()
        .to_string();
    assert!(err.contains("year 9999"), "{err}");
}
