//! The devices and token-economics part of the demo: one sunny June day on a street, through the
//! real ledger (an in-process chain, blocks at chosen times).
//!
//! Six homes' inverters register with their own keys and bonds; at 11:00 they sell their solar
//! to a neighbour's bid. One inverter claims more than its rating could produce: held, not paid,
//! and a neighbour's fraud report slashes its bond once the dispute window passes. Another
//! commits to its raw telemetry but claims more in its slot reading: one committed sample proves it
//! at once. A community battery answers the grid operator's evening request. When the day's epoch
//! closes, rewards are minted by grid value, the community battery pays its holders, and the
//! supply reconciles.

use anyhow::{bail, Context};
use gridmesh_ledger::devices::ReadingStatus;
use gridmesh_ledger::economics::{self, EpochRecord};
use gridmesh_ledger::readers::{DeviceReader, EconomicsReader};
use gridmesh_ledger::telemetry::{self, RawSample, SampleProof};
use gridmesh_ledger::tx::{DeviceInfo, DeviceReading, FlexDirection, FraudEvidence, Shareholding};
use gridmesh_ledger::{Chain, DeviceKind, Genesis, Keypair, Side, TxKind};
use gridmesh_types::units::slot_start_ms;
use gridmesh_types::{Address, Amount, Hash32};
use serde::Serialize;

/// 2025-06-21 11:00 UTC.
const SLOT: u64 = 1_945_004;
/// The evening slot the grid operator asks batteries to discharge in (18:00 UTC).
const EVENING: u64 = SLOT + 28;

#[derive(Debug, Serialize)]
pub struct DemoDevices {
    pub devices_registered: usize,
    /// Readings accepted and held, with the reasons of those held.
    pub accepted: usize,
    pub held: Vec<String>,
    /// Bonds slashed: (device, tokens, how it was proven).
    pub slashed: Vec<(String, String, String)>,
    pub community_fund: String,
    pub epoch_minted: String,
    pub rewards: Vec<(String, String)>,
    pub asset_paid_out: String,
    pub supply_reconciled: bool,
}

struct Street {
    _dir: tempfile::TempDir,
    chain: Chain,
    keys: Vec<Keypair>,
}

impl Street {
    fn send(&mut self, ts: u64, who: usize, kind: TxKind) -> anyhow::Result<()> {
        self.block(ts, vec![(who, kind)])
    }

    fn block(&mut self, ts: u64, txs: Vec<(usize, TxKind)>) -> anyhow::Result<()> {
        let mut nonces = std::collections::HashMap::new();
        let verified = txs
            .into_iter()
            .map(|(who, kind)| {
                let k = &self.keys[who];
                let n = nonces
                    .entry(who)
                    .or_insert_with(|| self.chain.account(&k.address()).nonce);
                let tx = gridmesh_ledger::SignedTx::new(k, self.chain.chain_id(), *n, kind);
                *n += 1;
                tx.verify().expect("signed here")
            })
            .collect::<Vec<_>>();
        let built = self.chain.build_block(verified, ts, self.keys[0].address());
        if let Some((_, e)) = built.rejected.first() {
            bail!("demo transaction refused: {e}");
        }
        self.chain.commit(&built.block, built.executed)?;
        Ok(())
    }

    fn balance(&self, a: &Address) -> u128 {
        self.chain.account(a).balance.0
    }
}

fn tokens(base: u128) -> String {
    Amount(base).to_string()
}

/// Runs the devices part; human-readable progress goes through `say`.
pub fn devices_part(say: &dyn Fn(String)) -> anyhow::Result<DemoDevices> {
    // keys: 0 genesis, 1-6 homes, 7 buyer, 8 grid operator, 9 community battery asset
    let keys: Vec<Keypair> = (0..10u8)
        .map(|i| Keypair::from_seed([200 + i; 32]))
        .collect();
    let (buyer, operator, asset) = (7, 8, 9);
    let mut g = Genesis::dev(keys[0].address());
    g.chain_id = "gridmesh-demo-devices".into();
    g.timestamp_ms = slot_start_ms(SLOT) - 3_600_000;
    g.accounts = keys
        .iter()
        .map(|k| gridmesh_ledger::genesis::GenesisAccount {
            address: k.address(),
            balance: Amount::from_tokens(1_000),
        })
        .collect();
    g.market = Some(gridmesh_ledger::config::MarketFile {
        late_window_minutes: Some(60),
        grid_operator: Some(keys[operator].address()),
        ..Default::default()
    });
    g.economics = Some(economics::EconomicsFile {
        dispute_window_minutes: Some(120),
        ..Default::default()
    });
    let dir = tempfile::tempdir().context("creating a temporary data directory")?;
    let chain = Chain::open(dir.path(), &g)?;
    let mut st = Street {
        _dir: dir,
        chain,
        keys,
    };
    let chain_id = st.chain.chain_id().to_string();
    let t0 = slot_start_ms(SLOT) - 3_000_000;

    // Inverters with their own keys (Zurich, south-facing, 7.3 kW) and the community battery.
    let inverters: Vec<Keypair> = (0..6u8)
        .map(|i| Keypair::from_seed([150 + i; 32]))
        .collect();
    let battery = Keypair::from_seed([170; 32]);
    let info = |kind: DeviceKind, capacity_w: u32, location: String| DeviceInfo {
        kind,
        capacity_w,
        location,
        latitude_microdeg: 47_376_900,
        longitude_microdeg: 8_541_700,
        tilt_deg: 30,
        azimuth_deg: 180,
    };
    let mut registrations = Vec::new();
    for (i, inv) in inverters.iter().enumerate() {
        registrations.push((
            i + 1,
            inv,
            info(DeviceKind::Pv, 7_300, format!("street-1/home-{}", i + 1)),
        ));
    }
    registrations.push((
        asset,
        &battery,
        info(DeviceKind::Battery, 10_000, "street-1/battery".into()),
    ));
    let mut txs = Vec::new();
    for (owner, device, info) in registrations {
        let message = gridmesh_ledger::tx::device_registration_message(
            &chain_id,
            &st.keys[owner].address(),
            &info,
        );
        txs.push((
            owner,
            TxKind::RegisterDeviceKey {
                device: device.address(),
                info,
                bond: Amount::from_tokens(20),
                device_signature: device.sign(&message),
            },
        ));
    }
    let devices_registered = txs.len();
    st.block(t0, txs)?;
    say(
        "devices: 6 inverters and a community battery registered with their own keys, 20 tokens bonded each; the battery is owned 60/40 by two neighbours"
    .to_string());
    st.send(
        t0 + 1,
        asset,
        TxKind::CreateAsset {
            name: "street-1 battery".into(),
            holders: vec![
                Shareholding {
                    holder: st.keys[buyer].address(),
                    shares: 60,
                },
                Shareholding {
                    holder: st.keys[operator].address(),
                    shares: 40,
                },
            ],
        },
    )?;
    st.send(
        t0 + 2,
        operator,
        TxKind::RequestFlexibility {
            slot: EVENING,
            area: "street-1".into(),
            direction: FlexDirection::Reduce,
            value_per_kwh: 500_000,
        },
    )?;
    // Every home asks 1 kWh at 0.10; the neighbour bids for 6 kWh at 0.25.
    let mut orders: Vec<(usize, TxKind)> = (1..=6)
        .map(|i| {
            (
                i,
                TxKind::PlaceOrder {
                    slot: SLOT,
                    side: Side::Ask,
                    energy_mwh: 1_000_000,
                    price_per_kwh: 100_000,
                    location: format!("street-1/home-{i}"),
                },
            )
        })
        .collect();
    orders.push((
        buyer,
        TxKind::PlaceOrder {
            slot: SLOT,
            side: Side::Bid,
            energy_mwh: 6_000_000,
            price_per_kwh: 250_000,
            location: "street-1/buyer".into(),
        },
    ));
    st.block(t0 + 10, orders)?;

    // 11:00-11:15: honest inverters made 1.2-1.3 kWh. Home 5 claims 2.4 kWh (its 7.3 kW cannot
    // make more than 1.825 in a quarter hour). Home 6 commits to its one-second telemetry (1.2 kWh)
    // but claims 1.4 kWh in its reading.
    let start = slot_start_ms(SLOT);
    let telemetry: Vec<RawSample> = (1..=900u64)
        .map(|i| {
            RawSample::signed(
                &inverters[5],
                &chain_id,
                i,
                start + i * 1_000,
                i * 1_333,
                0,
                4_800,
            )
        })
        .collect();
    let (root, count) = telemetry::commitment(&telemetry);
    // Every reading commits to the samples it sums; homes 1-5 took one at the slot's end.
    let end = slot_start_ms(SLOT + 1);
    let one = |k: &Keypair, mwh: u64| {
        telemetry::commitment(&[RawSample::signed(k, &chain_id, 1, end, mwh, 0, 0)])
    };
    let claimed = [1_250_000, 1_300_000, 1_200_000, 1_280_000, 2_400_000];
    let mut claims: Vec<(u64, Hash32, u32)> = claimed
        .iter()
        .zip(&inverters)
        .map(|(&mwh, k)| {
            let (root, count) = one(k, mwh);
            (mwh, root, count)
        })
        .collect();
    claims.push((1_400_000, root, count));
    let readings: Vec<DeviceReading> = inverters
        .iter()
        .zip(claims.iter().copied())
        .map(|(k, (mwh, root, count))| {
            DeviceReading::signed(k, &chain_id, SLOT, mwh, 0, mwh, root, count)
        })
        .collect();
    let after = slot_start_ms(SLOT + 1) + 60_000;
    let mut txs = Vec::new();
    for chunk in readings.chunks(5) {
        txs.push((
            buyer,
            TxKind::SubmitDeviceReadings {
                readings: chunk.to_vec(),
            },
        ));
    }
    st.block(after, txs)?;
    // The connection meters say each home exported what its inverter claims.
    let meters: Vec<(usize, TxKind)> = (1..=6)
        .map(|i| {
            (
                i,
                TxKind::SubmitReading {
                    slot: SLOT,
                    import_mwh: 0,
                    export_mwh: claims[i - 1].0.min(1_000_000),
                },
            )
        })
        .collect();
    st.block(after + 1_000, meters)?;
    // Settlement, an hour after the slot: proof of generation runs first.
    st.block(slot_start_ms(SLOT + 1) + 60 * 60_000, vec![])?;
    let mut accepted = 0;
    let mut held = Vec::new();
    for (i, k) in inverters.iter().enumerate() {
        let r = st
            .chain
            .state()
            .device_reading(SLOT, &k.address())
            .context("a reading")?;
        match r.status {
            ReadingStatus::Accepted => accepted += 1,
            ReadingStatus::Held { reason } => {
                held.push(format!(
                    "home {}: {}",
                    i + 1,
                    gridmesh_api::market::hold_text(reason)
                ));
            }
            ReadingStatus::Pending => {}
        }
    }
    say(format!(
        "devices: 11:00 slot settled: {accepted} of 6 inverter readings pass proof of generation; held: {}",
        if held.is_empty() { "none".to_string() } else { held.join("; ") }
    ));

    // Fraud reports: the neighbour proves home 6's reading false with its last committed sample
    // (slashed at once), and reports home 5's held reading (slashed when the window passes).
    let leaves: Vec<Hash32> = telemetry.iter().map(RawSample::leaf).collect();
    let proof = SampleProof {
        sample: telemetry[899],
        index: 899,
        path: gridmesh_ledger::merkle::proof(&leaves, 899).context("a proof")?,
    };
    let ts = st.chain.head().timestamp_ms + 1_000;
    let fund = economics::community_fund_account();
    st.block(
        ts,
        vec![
            (
                buyer,
                TxKind::ReportFraud {
                    device: inverters[5].address(),
                    slot: SLOT,
                    evidence: FraudEvidence::Commitment(proof),
                },
            ),
            (
                buyer,
                TxKind::ReportFraud {
                    device: inverters[4].address(),
                    slot: SLOT,
                    evidence: FraudEvidence::Physics,
                },
            ),
        ],
    )?;
    let mut slashed = Vec::new();
    let mut to_reporter = 0u128;
    if let Some(d) = st.chain.state().dispute(SLOT, &inverters[5].address()) {
        if d.state == economics::DisputeState::Upheld {
            slashed.push(("home 6".into(), tokens(d.slashed), "commitment".into()));
            to_reporter += d.to_reporter;
        }
    }
    say(format!(
        "devices: a neighbour proves home 6's reading false with one committed telemetry sample ({}): its bond is slashed at once; home 5's held reading opens a 2-hour dispute",
        telemetry::Contradiction::LastSampleMismatch.describe()
    ));
    // The evening: the community battery discharges 2 kWh as the grid operator asked.
    let evening_after = slot_start_ms(EVENING + 1) + 60_000;
    let (root, count) = telemetry::commitment(&[RawSample::signed(
        &battery,
        &chain_id,
        1,
        slot_start_ms(EVENING + 1),
        2_000_000,
        0,
        8_000,
    )]);
    let r = DeviceReading::signed(
        &battery, &chain_id, EVENING, 2_000_000, 0, 2_000_000, root, count,
    );
    st.send(
        evening_after.max(st.chain.head().timestamp_ms + 1),
        buyer,
        TxKind::SubmitDeviceReadings { readings: vec![r] },
    )?;
    st.block(slot_start_ms(EVENING + 1) + 60 * 60_000, vec![])?;
    // The dispute window passes; the day's epoch closes once its last slot is final.
    let cfg = st.chain.state().economics_config();
    let epoch = cfg.epoch_of(SLOT);
    let last = (epoch + 1) * u64::from(cfg.epoch_slots) - 1;
    let close = slot_start_ms(last + 1) + 60 * 60_000;
    st.block(close, vec![])?;
    if let Some(d) = st.chain.state().dispute(SLOT, &inverters[4].address()) {
        if d.state == economics::DisputeState::Upheld {
            slashed.push(("home 5".into(), tokens(d.slashed), "physics".into()));
            to_reporter += d.to_reporter;
        }
    }
    let e: EpochRecord = st.chain.state().epoch(epoch).context("the epoch closed")?;
    let mut rewards = Vec::new();
    for (who, name) in (1..=6)
        .map(|i| (i, format!("home {i}")))
        .chain([(asset, "community battery".to_string())])
    {
        if let Some(p) = st.chain.state().points(epoch, &st.keys[who].address()) {
            if p.reward > 0 {
                rewards.push((name, tokens(p.reward)));
            }
        }
    }
    let a = st
        .chain
        .state()
        .asset(&st.keys[asset].address())
        .context("the asset")?;
    let supply = st.chain.state().supply();
    let reconciled = st.chain.state().total_supply().0 == supply.expected();
    say(format!(
        "devices: slashed {}; the reporter got {} tokens, the community fund {}; home 6 forfeits the day's rewards",
        slashed
            .iter()
            .map(|(d, t, how)| format!("{d} {t} tokens ({how})"))
            .collect::<Vec<_>>()
            .join(", "),
        tokens(to_reporter),
        tokens(st.balance(&fund))
    ));
    say(format!(
        "devices: the day's epoch minted {} tokens by grid value: {}; the community battery paid {} tokens to its holders 60/40; supply {} = genesis + minted ({})",
        tokens(e.minted),
        rewards
            .iter()
            .map(|(n, t)| format!("{n} {t}"))
            .collect::<Vec<_>>()
            .join(", "),
        tokens(a.paid_out),
        tokens(st.chain.state().total_supply().0),
        if reconciled { "reconciled" } else { "NOT reconciled" }
    ));
    if !reconciled {
        bail!("the demo's supply does not reconcile");
    }
    Ok(DemoDevices {
        devices_registered,
        accepted,
        held,
        slashed,
        community_fund: tokens(st.balance(&fund)),
        epoch_minted: tokens(e.minted),
        rewards,
        asset_paid_out: tokens(a.paid_out),
        supply_reconciled: reconciled,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_devices_demo_catches_both_liars_and_reconciles() {
        let d = super::devices_part(&|_| {}).unwrap();
        assert_eq!(d.accepted, 5, "{d:?}");
        assert_eq!(d.held.len(), 1, "{d:?}");
        assert!(d.held[0].starts_with("home 5"), "{d:?}");
        assert_eq!(d.slashed.len(), 2, "{d:?}");
        assert_eq!(d.community_fund, "20");
        assert!(d.supply_reconciled);
        // 10,000 tokens split by value, floored to the base unit.
        let minted: f64 = d.epoch_minted.parse().unwrap();
        assert!((9_999.99..=10_000.0).contains(&minted), "{d:?}");
        assert!(d.rewards.iter().any(|(n, _)| n == "community battery"));
        assert!(
            d.rewards
                .iter()
                .all(|(n, _)| n != "home 5" && n != "home 6"),
            "{d:?}"
        );
        assert_ne!(d.asset_paid_out, "0");
    }
}
