//! `gridmesh bench market`: time to clear one slot of n orders, per mechanism, and pymarket's
//! Huang auction on the very same order sets, side by side.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use gridmesh_market::{clear, Areas, Mechanism, Order, Side};
use serde::Serialize;

pub struct MarketBenchOptions {
    pub sizes: Vec<usize>,
    pub mechanisms: Vec<Mechanism>,
    /// Timed runs per size and mechanism (the median is reported).
    pub repeat: usize,
    /// The Python with pymarket; `None` skips the comparison.
    pub python: Option<PathBuf>,
    /// Largest order set given to pymarket (its Huang auction is quadratic).
    pub pymarket_max: usize,
    /// Give up on pymarket after this long per size.
    pub pymarket_timeout: Duration,
}

#[derive(Serialize, Clone, Debug)]
pub struct MarketBenchRow {
    pub orders: usize,
    pub mechanism: String,
    pub median_ms: f64,
    pub trades: usize,
    pub volume_kwh: f64,
    /// welfare / optimal welfare.
    pub efficiency: Option<f64>,
    /// pymarket's time to clear the same orders (Huang only), where it ran.
    pub pymarket_ms: Option<f64>,
    /// pymarket time / ours.
    pub speedup_vs_pymarket: Option<f64>,
    /// Why pymarket has no time here, if it has none.
    pub pymarket_note: Option<String>,
}

/// A deterministic order set: alternating sides at random, 0.1-5 kWh in whole Wh, prices
/// 0.05-0.40 tokens/kWh to the base unit (so large sets have many equal prices).
pub fn orders(n: usize, seed: u64) -> Vec<Order> {
    let mut s = seed;
    let mut next = move || {
        s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    (0..n)
        .map(|i| {
            let side = if next() % 2 == 0 {
                Side::Bid
            } else {
                Side::Ask
            };
            let energy_mwh = (100 + next() % 4_901) * 1_000;
            let base = 50_000 + next() % 350_001;
            // Buyers bid a little higher on average than sellers ask, so about half of the energy trades.
            let price_per_kwh = if side == Side::Bid {
                base + 40_000
            } else {
                base
            };
            Order {
                id: i as u64,
                side,
                energy_mwh,
                price_per_kwh,
                time: i as u64,
                area: 0,
            }
        })
        .collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Runs pymarket's Huang auction on `orders` in a child process; returns its clearing time.
fn pymarket_time(
    python: &Path,
    orders: &[Order],
    timeout: Duration,
) -> anyhow::Result<Option<Duration>> {
    let script = crate::repo_path("scripts/interop/pymarket_peer.py");
    let file = tempfile::NamedTempFile::new()?;
    let json: Vec<serde_json::Value> = orders
        .iter()
        .map(|o| {
            serde_json::json!({
                "id": o.id,
                "side": if o.side == Side::Bid { "bid" } else { "ask" },
                "energy": o.energy_mwh,
                "price": o.price_per_kwh,
            })
        })
        .collect();
    serde_json::to_writer(std::io::BufWriter::new(file.as_file()), &json)?;
    let mut child = Command::new(python)
        .arg(&script)
        .arg("bench")
        .arg(file.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("starting {}", python.display()))?;
    let start = Instant::now();
    loop {
        if child.try_wait()?.is_some() {
            break;
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("pymarket peer failed on {} orders", orders.len());
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let secs = v["clear_seconds"]
        .as_f64()
        .context("pymarket peer printed no time")?;
    Ok(Some(Duration::from_secs_f64(secs)))
}

/// Runs the benchmark; `progress` gets one line per measurement.
pub fn run(
    opts: &MarketBenchOptions,
    mut progress: impl FnMut(&str),
) -> anyhow::Result<Vec<MarketBenchRow>> {
    let mut rows = Vec::new();
    for &n in &opts.sizes {
        let set = orders(n, 0x5eed ^ n as u64);
        let areas = Areas::flat();
        let mut pymarket: Option<(Option<f64>, Option<String>)> = None;
        for &mechanism in &opts.mechanisms {
            let tariff = (mechanism == Mechanism::Community).then_some(gridmesh_market::Tariff {
                retail_per_kwh: 300_000,
                feed_in_per_kwh: 80_000,
            });
            let mut times = Vec::new();
            let mut result = None;
            for _ in 0..opts.repeat.max(1) {
                let start = Instant::now();
                let c = clear(&set, &areas, mechanism, tariff)?;
                times.push(start.elapsed().as_secs_f64() * 1e3);
                result = Some(c);
            }
            let c = result.expect("ran at least once");
            let ms = median(times);
            let (py_ms, note) = if mechanism == Mechanism::Huang {
                pymarket
                    .get_or_insert_with(|| match &opts.python {
                        None => (None, Some("no python with pymarket".to_string())),
                        Some(_) if n > opts.pymarket_max => (
                            None,
                            Some(format!("not run above {} orders", opts.pymarket_max)),
                        ),
                        Some(py) => match pymarket_time(py, &set, opts.pymarket_timeout) {
                            Ok(Some(d)) => (Some(d.as_secs_f64() * 1e3), None),
                            Ok(None) => (
                                None,
                                Some(format!(
                                    "did not finish in {} s",
                                    opts.pymarket_timeout.as_secs()
                                )),
                            ),
                            Err(e) => (None, Some(format!("{e:#}"))),
                        },
                    })
                    .clone()
            } else {
                (None, None)
            };
            let row = MarketBenchRow {
                orders: n,
                mechanism: mechanism.name().to_string(),
                median_ms: ms,
                trades: c.trades.len(),
                volume_kwh: c.volume_mwh as f64 / 1e6,
                efficiency: (c.optimal_welfare > 0)
                    .then(|| c.welfare as f64 / c.optimal_welfare as f64),
                speedup_vs_pymarket: py_ms.map(|p| p / ms.max(1e-9)),
                pymarket_ms: py_ms,
                pymarket_note: note,
            };
            progress(&row.to_string());
            rows.push(row);
        }
    }
    Ok(rows)
}

impl std::fmt::Display for MarketBenchRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:>9} orders  {:<13} {:>10.2} ms  {:>8} trades  efficiency {}",
            self.orders,
            self.mechanism,
            self.median_ms,
            self.trades,
            self.efficiency
                .map_or("-".to_string(), |e| format!("{:.1}%", e * 100.0))
        )?;
        match (self.pymarket_ms, &self.pymarket_note) {
            (Some(p), _) => write!(
                f,
                "  | pymarket {:.1} ms: {:.0}x faster",
                p,
                self.speedup_vs_pymarket.unwrap_or(0.0)
            ),
            (None, Some(n)) => write!(f, "  | pymarket: {n}"),
            _ => Ok(()),
        }
    }
}

/// What one slot of `homes` households costs on the ledger, block by block.
#[derive(Serialize, Clone, Debug)]
pub struct LedgerSlotReport {
    pub homes: usize,
    pub mechanism: String,
    pub orders: usize,
    pub trades: u32,
    pub volume_kwh: f64,
    /// Executing (building) the block of `homes` order transactions, and committing it.
    pub orders_block_ms: f64,
    pub orders_commit_ms: f64,
    /// The gate-closure block: clearing the slot and writing every trade.
    pub clearing_block_ms: f64,
    pub clearing_commit_ms: f64,
    /// A second replica verifying the clearing block (re-execution).
    pub clearing_verify_ms: f64,
    /// The block of `homes` meter readings.
    pub readings_block_ms: f64,
    /// The settlement block: every trade paid out of escrow.
    pub settlement_block_ms: f64,
    pub settlement_commit_ms: f64,
    pub settlement_verify_ms: f64,
}

impl std::fmt::Display for LedgerSlotReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{} homes, {} orders -> {} trades, {:.1} kWh ({})",
            self.homes, self.orders, self.trades, self.volume_kwh, self.mechanism
        )?;
        writeln!(
            f,
            "  orders block     execute {:>8.1} ms  commit {:>7.1} ms",
            self.orders_block_ms, self.orders_commit_ms
        )?;
        writeln!(
            f,
            "  clearing block   execute {:>8.1} ms  commit {:>7.1} ms  verify {:>7.1} ms",
            self.clearing_block_ms, self.clearing_commit_ms, self.clearing_verify_ms
        )?;
        writeln!(
            f,
            "  readings block   execute {:>8.1} ms",
            self.readings_block_ms
        )?;
        write!(
            f,
            "  settlement block execute {:>8.1} ms  commit {:>7.1} ms  verify {:>7.1} ms",
            self.settlement_block_ms, self.settlement_commit_ms, self.settlement_verify_ms
        )
    }
}

/// Runs one slot of `homes` households (half with 5 kW of PV selling, half buying, in 100
/// streets with grid fees) through real blocks on a chain in a temporary directory, and a second
/// replica that verifies the clearing and settlement blocks.
pub fn ledger_slot(homes: usize, mechanism: Mechanism) -> anyhow::Result<LedgerSlotReport> {
    use gridmesh_ledger::config::{FeeFile, MarketFile};
    use gridmesh_ledger::genesis::GenesisAccount;
    use gridmesh_ledger::readers::MarketReader;
    use gridmesh_ledger::{Chain, DeviceKind, Genesis, TxKind, VerifiedTx};
    use gridmesh_types::units::slot_start_ms;

    const SLOT: u64 = 1_950_000;
    let keys = crate::bench::bench_keys(homes);
    let genesis = Genesis {
        chain_id: "gridmesh-bench".into(),
        timestamp_ms: slot_start_ms(SLOT) - 7_200_000,
        accounts: keys
            .iter()
            .map(|k| GenesisAccount {
                address: k.address(),
                balance: gridmesh_types::Amount::from_tokens(1_000),
            })
            .collect(),
        validators: vec![],
        market: Some(MarketFile {
            mechanism: mechanism.name().into(),
            grid_fees: vec![
                FeeFile {
                    constant_per_kwh: Some("0.01".into()),
                    percent: None,
                },
                FeeFile {
                    constant_per_kwh: Some("0.005".into()),
                    percent: None,
                },
            ],
            ..Default::default()
        }),
        economics: None,
    };
    let dir = tempfile::tempdir()?;
    let replica_dir = tempfile::tempdir()?;
    let mut chain = Chain::open(dir.path(), &genesis)?;
    let mut replica = Chain::open(replica_dir.path(), &genesis)?;
    let proposer = keys[0].address();
    let sign = |chain: &Chain, i: usize, nonce: u64, kind: TxKind| -> VerifiedTx {
        gridmesh_ledger::SignedTx::new(&keys[i], chain.chain_id(), nonce, kind)
            .verify()
            .expect("own signature")
    };
    // One block: returns (execute ms, commit ms, verify-on-replica ms).
    let step = |chain: &mut Chain,
                replica: &mut Chain,
                txs: Vec<VerifiedTx>,
                ts: u64|
     -> anyhow::Result<(f64, f64, f64)> {
        let n = txs.len();
        let t = Instant::now();
        let built = chain.build_block(txs, ts, proposer);
        let exec = t.elapsed().as_secs_f64() * 1e3;
        if !built.rejected.is_empty() {
            bail!(
                "{} of {n} transactions rejected, first: {}",
                built.rejected.len(),
                built.rejected[0].1
            );
        }
        let t = Instant::now();
        let ex = replica.verify_block(&built.block)?;
        let verify = t.elapsed().as_secs_f64() * 1e3;
        replica.commit(&built.block, ex)?;
        let t = Instant::now();
        chain.commit(&built.block, built.executed)?;
        Ok((exec, t.elapsed().as_secs_f64() * 1e3, verify))
    };
    let t0 = genesis.timestamp_ms + 1_000;
    let seller = |i: usize| i % 2 == 0;
    // Sellers sell from batteries with their own keys (only keyed, bonded devices sell); buyers
    // declare a meter.
    let battery_key = |i: usize| {
        let mut seed = [0xba; 32];
        seed[..8].copy_from_slice(&(i as u64).to_le_bytes());
        gridmesh_ledger::Keypair::from_seed(seed)
    };
    let regs: Vec<VerifiedTx> = (0..homes)
        .map(|i| {
            let kind = if seller(i) {
                let key = battery_key(i);
                let info = gridmesh_ledger::tx::DeviceInfo {
                    kind: DeviceKind::Battery,
                    capacity_w: 5_000,
                    location: format!("s{}/h{i}", i % 100),
                    latitude_microdeg: 0,
                    longitude_microdeg: 0,
                    tilt_deg: 0,
                    azimuth_deg: 0,
                };
                TxKind::register_device_key(
                    chain.chain_id(),
                    &keys[i].address(),
                    &key,
                    info,
                    gridmesh_types::Amount::from_tokens(10),
                )
            } else {
                TxKind::RegisterDevice {
                    kind: DeviceKind::Meter,
                    capacity_w: 5_000,
                }
            };
            sign(&chain, i, 0, kind)
        })
        .collect();
    step(&mut chain, &mut replica, regs, t0)?;
    let mut rng = 0x5eed_u64;
    let mut next = move || {
        rng = rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    let orders: Vec<VerifiedTx> = (0..homes)
        .map(|i| {
            let (side, energy_mwh, price_per_kwh) = if seller(i) {
                (
                    Side::Ask,
                    500_000 + next() % 700_000,
                    50_000 + next() % 150_000,
                )
            } else {
                (
                    Side::Bid,
                    300_000 + next() % 700_000,
                    100_000 + next() % 250_000,
                )
            };
            sign(
                &chain,
                i,
                1,
                TxKind::PlaceOrder {
                    slot: SLOT,
                    side,
                    energy_mwh,
                    price_per_kwh,
                    location: format!("s{}/h{i}", i % 100),
                },
            )
        })
        .collect();
    let (orders_block_ms, orders_commit_ms, _) =
        step(&mut chain, &mut replica, orders, t0 + 1_000)?;
    let gate = slot_start_ms(SLOT) - 5 * 60_000;
    let (clearing_block_ms, clearing_commit_ms, clearing_verify_ms) =
        step(&mut chain, &mut replica, vec![], gate)?;
    let slot = chain
        .state()
        .slot_record(SLOT)
        .context("the slot was not cleared")?;
    let end = slot_start_ms(SLOT + 1);
    let mut readings = Vec::new();
    for i in 0..homes {
        let (import_mwh, export_mwh) = if seller(i) {
            (0, next() % 1_250_000)
        } else {
            (next() % 1_000_000, 0)
        };
        readings.push(sign(
            &chain,
            i,
            2,
            TxKind::SubmitReading {
                slot: SLOT,
                import_mwh,
                export_mwh,
            },
        ));
        if seller(i) {
            // The battery's own reading of what it discharged, committed to its one sample.
            let key = battery_key(i);
            let reading = gridmesh_ledger::tx::DeviceReading::with_one_sample(
                &key,
                chain.chain_id(),
                SLOT,
                1,
                (export_mwh, export_mwh),
                (0, 0),
            );
            readings.push(sign(
                &chain,
                i,
                3,
                TxKind::SubmitDeviceReadings {
                    readings: vec![reading],
                },
            ));
        }
    }
    let (readings_block_ms, _, _) = step(&mut chain, &mut replica, readings, end + 1_000)?;
    let (settlement_block_ms, settlement_commit_ms, settlement_verify_ms) =
        step(&mut chain, &mut replica, vec![], end + 3_600_000)?;
    if chain
        .account(&gridmesh_ledger::market::escrow_account())
        .balance
        .0
        != 0
    {
        bail!("escrow not empty after settlement");
    }
    if chain.state().root() != replica.state().root() {
        bail!("replica diverged");
    }
    Ok(LedgerSlotReport {
        homes,
        mechanism: mechanism.name().into(),
        orders: homes,
        trades: slot.trades,
        volume_kwh: slot.volume_mwh as f64 / 1e6,
        orders_block_ms,
        orders_commit_ms,
        clearing_block_ms,
        clearing_commit_ms,
        clearing_verify_ms,
        readings_block_ms,
        settlement_block_ms,
        settlement_commit_ms,
        settlement_verify_ms,
    })
}
