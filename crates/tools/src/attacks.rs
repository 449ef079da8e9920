//! The adversarial suite: the attacks of the abuse review (issue 19) replayed against the real
//! `gridmesh node` binary on loopback, one line per attack: what was tried, and whether the node
//! held or broke.
//!
//! [`Scale::Bounded`] runs in `./scripts/test` (a minute or two on 2 cores); [`Scale::Long`] in
//! `./scripts/bench` at the review's sizes (a 200,000-transaction pool, 10,200 challenges...).
//! Each attack starts a node of its own in a directory of its own, so one that breaks a node
//! cannot spoil the next. Honest transactions sent while an attack runs are timed from submission
//! to commit: that is the latency BENCHMARKS.md reports.
//!
//! Findings 8 (an islanded slot billed by an absent utility) and 10 (every home's profile public)
//! are replayed on the same chain as 3 and 4; their properties are tested in full by
//! `crates/api/tests/island_bills.rs` and `crates/gridmesh/tests/privacy.rs`. The MQTT attack needs
//! Mosquitto (`./scripts/setup` installs it).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use gridmesh_client::client::Client;
use gridmesh_ledger::tx::TxKind;
use gridmesh_ledger::{Keypair, Side, SignedTx};
use gridmesh_types::{Address, Amount, Hash32};
use serde::Serialize;

/// How hard to attack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scale {
    /// Small enough for CI.
    Bounded,
    /// The review's sizes.
    Long,
}

/// What one attack did.
#[derive(Clone, Debug, Serialize)]
pub struct Outcome {
    pub attack: &'static str,
    /// The finding of the review it replays.
    pub finding: u8,
    pub held: bool,
    pub tried: String,
    pub result: String,
    /// Honest transactions sent during the attack, submission to commit.
    pub honest_latency: Option<Latency>,
}

impl Outcome {
    /// The suite's line for people.
    pub fn line(&self) -> String {
        format!(
            "{:<16} {}  tried: {}; {}",
            self.attack,
            if self.held { "held " } else { "BROKE" },
            self.tried,
            self.result
        )
    }
}

/// Latencies in milliseconds.
#[derive(Clone, Debug, Serialize)]
pub struct Latency {
    pub count: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Latency {
    fn of(mut ms: Vec<f64>) -> Option<Latency> {
        if ms.is_empty() {
            return None;
        }
        ms.sort_by(f64::total_cmp);
        let at = |p: f64| ms[((ms.len() - 1) as f64 * p).round() as usize];
        Some(Latency {
            count: ms.len(),
            p50_ms: at(0.5),
            p99_ms: at(0.99),
            max_ms: ms[ms.len() - 1],
        })
    }

    fn text(&self) -> String {
        format!(
            "p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
            self.p50_ms, self.p99_ms, self.max_ms
        )
    }
}

/// Runs every attack with the `gridmesh` binary at `exe`, in a temporary directory (kept, with
/// the nodes' logs, if an attack could not run).
pub fn run(exe: &Path, scale: Scale) -> anyhow::Result<Vec<Outcome>> {
    let tmp = tempfile::Builder::new()
        .prefix("gridmesh-attacks-")
        .tempdir()
        .context("creating a temporary directory")?;
    let one = |f: fn(&Path, &Path, Scale) -> anyhow::Result<Outcome>| {
        move |exe: &Path, dir: &Path, scale: Scale| f(exe, dir, scale).map(|o| vec![o])
    };
    let attacks: [(&str, Box<AttackFn>); 8] = [
        ("jam", Box::new(one(mempool_jam))),
        ("slot-fill", Box::new(one(slot_fill))),
        ("economics", Box::new(rewards_and_phantom_energy)),
        ("sign-in", Box::new(one(sign_in_flood))),
        ("pcc", Box::new(one(pcc_from_elsewhere))),
        ("connections", Box::new(one(connection_flood))),
        ("streams", Box::new(one(stream_hog))),
        ("mqtt-junk", Box::new(one(mqtt_junk))),
    ];
    let mut out = Vec::new();
    let mut keep = false;
    for (name, attack) in attacks {
        let dir = tmp.path().join(name.replace('+', "-"));
        std::fs::create_dir_all(&dir)?;
        let outcomes = attack(exe, &dir, scale).unwrap_or_else(|e| {
            keep = true;
            vec![Outcome {
                attack: name,
                finding: 0,
                held: false,
                tried: "nothing: the attack could not run".into(),
                result: format!("{e:#} (logs in {})", dir.display()),
                honest_latency: None,
            }]
        });
        for o in outcomes {
            eprintln!("{}", o.line());
            out.push(o);
        }
    }
    if keep {
        let kept = tmp.keep();
        eprintln!("nodes' directories and logs kept in {}", kept.display());
    }
    Ok(out)
}

type AttackFn = dyn Fn(&Path, &Path, Scale) -> anyhow::Result<Vec<Outcome>>;

/// Finding 1: keys without tokens, then funded keys, send transactions behind a nonce they never
/// send, until the pool is full; honest transfers must still be admitted and commit.
fn mempool_jam(exe: &Path, dir: &Path, scale: Scale) -> anyhow::Result<Outcome> {
    let (pool, funded, per_key, honest) = match scale {
        Scale::Bounded => (4_000usize, 80usize, 200u64, 40usize),
        Scale::Long => (200_000, 3_200, 4_096, 400),
    };
    let config = dir.join("node.toml");
    std::fs::write(&config, format!("[mempool]\nmax_txs = {pool}\n"))?;
    let node = NodeProcess::start(
        exe,
        dir,
        &[
            "--config",
            &config.display().to_string(),
            "--block-interval-ms",
            "200",
        ],
    )?;
    let client = Client::new(&node.url);
    let chain = client.status()?.chain_id;
    let faucet = node.faucet()?;

    // Keys without tokens.
    let paupers: Vec<Keypair> = (0..10).map(|i| Keypair::from_seed(seed(0xa0, i))).collect();
    let mut pauper_sent = 0;
    let mut pauper_admitted = 0;
    for k in &paupers {
        let txs: Vec<SignedTx> = (1..=100).map(|n| cancel(k, &chain, n)).collect();
        pauper_sent += txs.len();
        pauper_admitted += client.submit_batch(&txs)?.accepted;
    }

    // Funded keys, 1 token each (100 deposits), all behind nonce 0.
    let attackers: Vec<Keypair> = (0..funded as u32)
        .map(|i| Keypair::from_seed(seed(0xa1, i)))
        .collect();
    fund(&client, &chain, &faucet, &attackers, Amount::from_tokens(1))?;
    let mut jam_sent = 0;
    let mut jam_admitted = 0;
    for k in &attackers {
        for chunk in (1..=per_key).collect::<Vec<_>>().chunks(1_000) {
            let txs: Vec<SignedTx> = chunk.iter().map(|n| cancel(k, &chain, *n)).collect();
            jam_sent += txs.len();
            jam_admitted += client.submit_batch(&txs)?.accepted;
        }
    }
    let pool_before = client.status()?.mempool_size;

    // Honest transfers, one request each.
    let (committed, refused, latency) = honest_transfers(&client, &chain, &faucet, honest)?;
    let held = pauper_admitted == 0 && committed == honest && refused.is_empty();
    Ok(Outcome {
        attack: "jam",
        finding: 1,
        held,
        tried: format!(
            "{pauper_sent} gapped transactions from 10 keys without tokens, {jam_sent} from {funded} keys with 1 token, into a {pool}-transaction pool"
        ),
        result: format!(
            "{pauper_admitted} of the former and {jam_admitted} of the latter admitted (pool then {pool_before}); {committed} of {honest} honest transfers committed{}{}",
            latency.as_ref().map(|l| format!(" ({})", l.text())).unwrap_or_default(),
            if refused.is_empty() { String::new() } else { format!(", refused: {}", refused.join("; ")) }
        ),
        honest_latency: latency,
    })
}

/// Finding 2: funded keys place dust bids and price-0 bids for one slot; an honest bid must still
/// commit, and each key holds no more orders than its balance has order deposits.
fn slot_fill(exe: &Path, dir: &Path, scale: Scale) -> anyhow::Result<Outcome> {
    let (keys, per_key) = match scale {
        Scale::Bounded => (25u32, 40u64),
        Scale::Long => (250, 400),
    };
    let node = NodeProcess::start(exe, dir, &["--block-interval-ms", "200"])?;
    let client = Client::new(&node.url);
    let chain = client.status()?.chain_id;
    let faucet = node.faucet()?;
    // Read loosely: an older build's market shows no order deposit (then the default's bound is
    // the one to hold).
    let market = get_json(node.addr, "/v1/market")?;
    // A slot whose gate stays open for the whole attack (the chain's clock is the wall clock).
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as u64;
    let slot = gridmesh_types::units::slot_of(now_ms) + 2;
    let deposit: Amount = match market["order_deposit"].as_str() {
        Some(d) => d.parse().context("order_deposit")?,
        None => Amount(gridmesh_ledger::config::DEFAULT_ORDER_DEPOSIT),
    };
    let attackers: Vec<Keypair> = (0..keys)
        .map(|i| Keypair::from_seed(seed(0xa2, i)))
        .collect();
    let honest = Keypair::from_seed(seed(0xa3, 0));
    fund(&client, &chain, &faucet, &attackers, Amount::from_tokens(1))?;
    fund(
        &client,
        &chain,
        &faucet,
        std::slice::from_ref(&honest),
        Amount::from_tokens(10),
    )?;
    let bid = |k: &Keypair, nonce: u64, energy_mwh: u64| {
        SignedTx::new(
            k,
            &chain,
            nonce,
            TxKind::PlaceOrder {
                slot,
                side: Side::Bid,
                energy_mwh,
                price_per_kwh: 0,
                location: String::new(),
            },
        )
    };
    // Dust (1 mWh at price 0, as in the review), one per key, then price-0 bids of the smallest
    // size.
    let mut sent = 0;
    for k in &attackers {
        let mut txs = vec![bid(k, 0, 1)];
        txs.extend((1..=per_key).map(|n| bid(k, n, 1_000)));
        sent += txs.len();
        client.submit_batch(&txs)?;
    }
    // Nonce 0 (the dust) is refused at the block, so the rest waits behind it: send each key's
    // orders again from the nonce the chain expects.
    std::thread::sleep(Duration::from_secs(1));
    for k in &attackers {
        let nonce = client.account(&k.address())?.nonce;
        let txs: Vec<SignedTx> = (0..per_key).map(|n| bid(k, nonce + n, 1_000 + n)).collect();
        sent += txs.len();
        client.submit_batch(&txs)?;
    }
    std::thread::sleep(Duration::from_secs(2));
    let t0 = Instant::now();
    let honest_bid = SignedTx::new(
        &honest,
        &chain,
        client.account(&honest.address())?.nonce,
        TxKind::PlaceOrder {
            slot,
            side: Side::Bid,
            energy_mwh: 1_000_000,
            price_per_kwh: 200_000,
            location: String::new(),
        },
    );
    let hash = client.submit(&honest_bid)?.hash.parse::<Hash32>()?;
    let status = client.wait_committed(&hash, Duration::from_secs(30))?;
    let latency = Latency::of(vec![t0.elapsed().as_secs_f64() * 1e3]);
    let orders = client
        .market_slot(slot)?
        .map(|s| s.orders)
        .unwrap_or_default();
    let most = u64::from(keys) * (Amount::from_tokens(1).0 / deposit.0.max(1)) as u64 + 1;
    let honest_ok = status.status == "committed";
    let held = honest_ok && u64::from(orders) <= most;
    Ok(Outcome {
        attack: "slot-fill",
        finding: 2,
        held,
        tried: format!(
            "{sent} price-0 bids (dust of 1 mWh and bids of 1 Wh) from {keys} keys with 1 token each for one slot"
        ),
        result: format!(
            "the slot holds {orders} orders (each locks {deposit} tokens: at most {most} with the honest one); the honest bid {}{}",
            status.status,
            latency.as_ref().map(|l| format!(" in {:.0} ms", l.max_ms)).unwrap_or_default()
        ),
        honest_latency: latency,
    })
}

/// Findings 3, 4, 8 and 10 on a chain of their own (time 600 times the wall clock, settlement 15
/// minutes after a slot, one-slot reward epochs), in a slot that clears while the microgrid is
/// islanded: an account registers a keyed PV rated `u32::MAX` with the least bond, sells to itself,
/// and reports a reading that commits to no samples (wash trading); a second account with a PV
/// declared without a key sells to a neighbour and meters the export itself (phantom energy); the
/// neighbour meters more than it bought (a utility line, were one connected). Held if the
/// self-trades mint no reward, the phantom seller is paid for nothing, the neighbour's bill has no
/// utility line, and nobody without a session reads the neighbour's metered import.
fn rewards_and_phantom_energy(
    exe: &Path,
    dir: &Path,
    _scale: Scale,
) -> anyhow::Result<Vec<Outcome>> {
    let washer = Keypair::from_seed(seed(0xc0, 0));
    let device = Keypair::from_seed(seed(0xc1, 0));
    let phantom = Keypair::from_seed(seed(0xc2, 0));
    let buyer = Keypair::from_seed(seed(0xc3, 0));
    let operator = Keypair::from_seed(seed(0xc4, 0));
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as u64;
    let accounts: String = [
        (&washer, 100),
        (&phantom, 1),
        (&buyer, 100),
        (&operator, 10),
    ]
    .iter()
    .map(|(k, t)| {
        format!(
            "[[accounts]]\naddress = \"{}\"\nbalance = \"{t}\"\n",
            k.address()
        )
    })
    .collect();
    let genesis = dir.join("genesis.toml");
    std::fs::write(
        &genesis,
        format!(
            "chain_id = \"attacks\"\ntimestamp_ms = {}\n{accounts}[market]\ncorrection_window_minutes = 15\nlate_window_minutes = 15\ngrid_operator = \"{}\"\n[economics]\nepoch_slots = 1\ndispute_window_minutes = 15\n",
            now_ms - 60_000,
            operator.address()
        ),
    )?;
    let node = NodeProcess::start(
        exe,
        dir,
        &[
            "--genesis",
            &genesis.display().to_string(),
            "--time-scale",
            "600",
            "--empty-blocks",
            "--block-interval-ms",
            "100",
        ],
    )?;
    let client = Client::new(&node.url);
    let chain = client.status()?.chain_id;
    let mut nonces = std::collections::BTreeMap::<Address, u64>::new();
    // Sends `kind` from `k` and waits for the block: Ok if it applied, Err with the refusal.
    // The node's reason, without the request's wrapping.
    let why = |e: gridmesh_client::client::ClientError| {
        let e = e.to_string();
        match e.split_once("was rejected: ") {
            Some((_, why)) => why.to_string(),
            None => e,
        }
    };
    let mut hashes = Vec::new();
    let mut send = |k: &Keypair, kind: TxKind| -> anyhow::Result<Result<(), String>> {
        let nonce = nonces.entry(k.address()).or_insert(0);
        let tx = SignedTx::new(k, &chain, *nonce, kind);
        let hash: Hash32 = match client.submit(&tx) {
            Ok(r) => r.hash.parse()?,
            Err(e) => return Ok(Err(why(e))),
        };
        match client.wait_committed(&hash, Duration::from_secs(30)) {
            Ok(_) => {
                *nonce += 1;
                hashes.push((k.address(), hash));
                Ok(Ok(()))
            }
            Err(e) => Ok(Err(why(e))),
        }
    };
    let info = |kind, capacity_w| gridmesh_ledger::tx::DeviceInfo {
        kind,
        capacity_w,
        location: "street-1/washer".into(),
        latitude_microdeg: 0,
        longitude_microdeg: 0,
        tilt_deg: 0,
        azimuth_deg: 0,
    };
    let keyed = |kind, capacity_w| {
        let info = info(kind, capacity_w);
        TxKind::register_device_key(
            &chain,
            &washer.address(),
            &device,
            info,
            Amount::from_tokens(10),
        )
    };
    use gridmesh_ledger::DeviceKind;
    // The review's device: a PV rated u32::MAX with the least bond. Where that is refused, the
    // attacker bonds the largest battery its 10 tokens may.
    let mut wash_steps = Vec::new();
    let huge = send(&washer, keyed(DeviceKind::Pv, u32::MAX))?;
    wash_steps.push(format!(
        "a PV rated {} W with a 10-token bond: {}",
        u32::MAX,
        huge.as_ref()
            .map_or_else(|e| format!("refused ({e})"), |_| "accepted".into())
    ));
    if huge.is_err() {
        if let Err(e) = send(&washer, keyed(DeviceKind::Battery, 10_000))? {
            bail!("registering the washer's battery: {e}");
        }
    }
    let declared = |capacity_w| TxKind::RegisterDevice {
        kind: DeviceKind::Pv,
        capacity_w,
    };
    let mut phantom_steps = Vec::new();
    let huge = send(&phantom, declared(u32::MAX))?;
    phantom_steps.push(format!(
        "a PV declared without a key rated {} W: {}",
        u32::MAX,
        huge.as_ref()
            .map_or_else(|e| format!("refused ({e})"), |_| "accepted".into())
    ));
    if huge.is_err() {
        if let Err(e) = send(&phantom, declared(10_000))? {
            bail!("declaring the phantom PV: {e}");
        }
    }
    let meter = TxKind::RegisterDevice {
        kind: DeviceKind::Meter,
        capacity_w: 10_000,
    };
    if let Err(e) = send(&buyer, meter)? {
        bail!("registering the buyer's meter: {e}");
    }
    // The microgrid islands; a slot whose gate is a few seconds away (600x: a slot is 1.5 s)
    // clears under island rules.
    let at_ms = client.market()?.now_ms;
    let island = TxKind::GridEvent {
        event: gridmesh_ledger::GridEventKind::Islanded,
        at_ms,
    };
    if let Err(e) = send(&operator, island)? {
        bail!("islanding: {e}");
    }
    let slot = client.market()?.next_open_slot + 3;
    let order = |side, wh: u64, milli: u64, at: &str| TxKind::PlaceOrder {
        slot,
        side,
        energy_mwh: wh * 1_000,
        price_per_kwh: milli * 1_000,
        location: at.into(),
    };
    let ask = send(&washer, order(Side::Ask, 2_000, 0, "street-1/washer"))?;
    let bid = send(&washer, order(Side::Bid, 2_000, 300, "street-1/washer"))?;
    wash_steps.push(format!(
        "an ask of 2 kWh at 0 and a bid of 2 kWh at 0.30 from the same account: {}",
        match (&ask, &bid) {
            (Ok(()), Ok(())) => "both placed".to_string(),
            (a, b) => format!("ask {a:?}, bid {b:?}"),
        }
    ));
    let phantom_ask = send(&phantom, order(Side::Ask, 1_000, 200, "street-1/phantom"))?;
    phantom_steps.push(format!(
        "an ask of 1 kWh: {}",
        phantom_ask
            .as_ref()
            .map_or_else(|e| format!("refused ({e})"), |_| "placed".into())
    ));
    if let Err(e) = send(&buyer, order(Side::Bid, 1_000, 250, "street-1/buyer"))? {
        bail!("the buyer's bid: {e}");
    }
    // After the slot: meters and the washer's device report.
    let wait_for = |what: &str, done: &dyn Fn() -> anyhow::Result<bool>| -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !done()? {
            if Instant::now() > deadline {
                bail!("waited 60 s for {what}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    };
    wait_for("the slot to end", &|| {
        Ok(client.market()?.current_slot > slot)
    })?;
    let reading = |import_wh: u64, export_wh: u64| TxKind::SubmitReading {
        slot,
        import_mwh: import_wh * 1_000,
        export_mwh: export_wh * 1_000,
    };
    let readings = |r| TxKind::SubmitDeviceReadings { readings: vec![r] };
    let bare = gridmesh_ledger::tx::DeviceReading::signed(
        &device,
        &chain,
        slot,
        2_000_000,
        0,
        2_000_000,
        Hash32([0; 32]),
        0,
    );
    let bare = send(&washer, readings(bare))?;
    wash_steps.push(format!(
        "a 2 kWh device reading committing to no samples: {}",
        bare.as_ref()
            .map_or_else(|e| format!("refused ({e})"), |_| "accepted".into())
    ));
    if bare.is_err() {
        let committed = gridmesh_ledger::tx::DeviceReading::with_one_sample(
            &device,
            &chain,
            slot,
            1,
            (2_000_000, 2_000_000),
            (0, 0),
        );
        if let Err(e) = send(&washer, readings(committed))? {
            bail!("the washer's committed reading: {e}");
        }
    }
    // The buyer's meter follows: 1.357913 kWh, more than the 1 kWh it bought.
    for (k, import_wh, export_wh) in [(&washer, 2_000, 2_000), (&phantom, 0, 1_000)] {
        if let Err(e) = send(k, reading(import_wh, export_wh))? {
            bail!("a meter reading: {e}");
        }
    }
    let buyer_reading = TxKind::SubmitReading {
        slot,
        import_mwh: 1_357_913,
        export_mwh: 0,
    };
    if let Err(e) = send(&buyer, buyer_reading)? {
        bail!("the buyer's meter reading: {e}");
    }
    let buyer_reading_hash = hashes
        .last()
        .map(|(_, h)| *h)
        .context("the reading's hash")?;
    // Settlement, then the one-slot epoch closes when the slot is final (its late window, 15
    // minutes, over): a minute of chain time later, any reward is minted.
    wait_for("the epoch to close", &|| {
        let end_ms = gridmesh_types::units::slot_start_ms(slot + 1);
        Ok(client.market()?.now_ms > end_ms + 16 * 60_000)
    })?;
    // Read loosely: an older build's views have other fields. Each member's trades and bill
    // are its own: read the slot signed in as that member (an older build shows them to anyone,
    // and its typed view does not decode: its public view then).
    let supply = get_json(node.addr, "/v1/supply")?;
    let public = get_json(node.addr, &format!("/v1/market/slots/{slot}"))?;
    let slot_as = |k: &Keypair| -> serde_json::Value {
        Client::new(&node.url)
            .signed_in(k)
            .ok()
            .and_then(|c| c.market_slot(slot).ok().flatten())
            .and_then(|v| serde_json::to_value(v).ok())
            .unwrap_or_else(|| public.clone())
    };
    let rows = |v: &serde_json::Value, what: &str| v[what].as_array().cloned().unwrap_or_default();
    let washer_hex = washer.address().to_string();
    let phantom_hex = phantom.address().to_string();
    let buyer_hex = buyer.address().to_string();
    let self_trades = rows(&slot_as(&washer), "trades")
        .iter()
        .filter(|t| t["seller"] == washer_hex.as_str() && t["buyer"] == washer_hex.as_str())
        .count();
    let minted: Amount = supply["minted"]
        .as_str()
        .context("the supply's minted")?
        .parse()
        .context("minted")?;
    let phantom_paid: Vec<String> = rows(&slot_as(&phantom), "trades")
        .iter()
        .filter(|t| t["seller"] == phantom_hex.as_str())
        .filter_map(|t| {
            t["settlement"]["delivered_kwh"]
                .as_str()
                .map(str::to_string)
        })
        .collect();
    let phantom_delivered = phantom_paid
        .iter()
        .any(|d| d.parse::<f64>().unwrap_or(0.0) > 0.0);
    // Finding 8: the buyer's bill, as the buyer reads it.
    let bill = rows(&slot_as(&buyer), "bills")
        .into_iter()
        .find(|b| b["account"] == buyer_hex.as_str())
        .context("the buyer's bill")?;
    let utility_lines: Vec<String> = ["utility_import_kwh", "utility_export_kwh"]
        .iter()
        .filter(|k| bill[**k].as_str().is_some_and(|v| v != "0"))
        .map(|k| format!("{k} {}", bill[*k].as_str().unwrap_or("")))
        .collect();
    // Finding 10: what anyone reads of the buyer's metered import, without a session.
    let public_tx = get(
        node.addr,
        &format!("/v1/tx/{buyer_reading_hash}"),
        Duration::from_secs(10),
    )?
    .1;
    let public_slot = get(
        node.addr,
        &format!("/v1/market/slots/{slot}"),
        Duration::from_secs(10),
    )?
    .1;
    let exposed: Vec<&str> = [
        ("its reading's transaction", &public_tx),
        ("the slot", &public_slot),
    ]
    .into_iter()
    .filter(|(_, body)| body.contains("1357913") || body.contains("1.357913"))
    .map(|(what, _)| what)
    .collect();
    Ok(vec![
        Outcome {
            attack: "wash",
            finding: 3,
            held: minted.0 == 0,
            tried: wash_steps.join("; "),
            result: format!(
                "{self_trades} self-trades settled; the epoch minted {minted} tokens in rewards"
            ),
            honest_latency: None,
        },
        Outcome {
            attack: "phantom",
            finding: 4,
            held: !phantom_delivered,
            tried: phantom_steps.join("; ") + "; then metered its own export of 1 kWh",
            result: if phantom_paid.is_empty() {
                "it sold nothing".into()
            } else {
                format!(
                    "its trades settled as delivered: {} kWh",
                    phantom_paid.join(", ")
                )
            },
            honest_latency: None,
        },
        Outcome {
            attack: "island-bill",
            finding: 8,
            held: utility_lines.is_empty(),
            tried: "a slot cleared while islanded; a buyer meters 1.357913 kWh after buying 1 kWh"
                .into(),
            result: if utility_lines.is_empty() {
                "its bill has no utility line".into()
            } else {
                format!("its bill names a utility that was not connected: {}", utility_lines.join(", "))
            },
            honest_latency: None,
        },
        Outcome {
            attack: "profile",
            finding: 10,
            held: exposed.is_empty(),
            tried: "reading the buyer's metered import without a session: its reading's transaction and the slot's view".into(),
            result: if exposed.is_empty() {
                "neither shows it".into()
            } else {
                format!("shown by {}", exposed.join(" and "))
            },
            honest_latency: None,
        },
    ])
}

/// Finding 5: one client floods challenges and its own sessions; a member signing in from another
/// address must keep its challenge and get its session.
fn sign_in_flood(exe: &Path, dir: &Path, scale: Scale) -> anyhow::Result<Outcome> {
    let (challenges, sessions) = match scale {
        Scale::Bounded => (2_000u32, 300u32),
        Scale::Long => (10_200, 10_000),
    };
    let node = NodeProcess::start(exe, dir, &[])?;
    let member = Keypair::from_seed(seed(0xa4, 0));
    let mut member_client = RawClient::connect([127, 0, 0, 2], node.addr)?;
    let (code, c) = member_client.send(
        "POST",
        "/v1/auth/challenge",
        Some(&serde_json::json!({ "address": member.address().to_string() })),
        None,
    )?;
    if code != 200 {
        bail!("the member's challenge was refused: {code} {c}");
    }
    let mut flood = RawClient::connect([127, 0, 0, 1], node.addr)?;
    let mut refused = 0;
    for i in 0..challenges {
        let who = Keypair::from_seed(seed(0xa5, i)).address().to_string();
        let (code, _) = flood.send(
            "POST",
            "/v1/auth/challenge",
            Some(&serde_json::json!({ "address": who })),
            None,
        )?;
        if code != 200 {
            refused += 1;
        }
    }
    // Sessions of the attacker's own key, and a bad session request with the member's challenge.
    let attacker = Keypair::from_seed(seed(0xa6, 0));
    let mut session_refused = 0;
    let mut opened = 0;
    for _ in 0..sessions {
        let (code, c) = flood.send(
            "POST",
            "/v1/auth/challenge",
            Some(&serde_json::json!({ "address": attacker.address().to_string() })),
            None,
        )?;
        if code != 200 {
            session_refused += 1;
            continue;
        }
        let (code, _) = flood.send(
            "POST",
            "/v1/auth/session",
            Some(&session_body(&attacker, &c)?),
            None,
        )?;
        if code == 200 {
            opened += 1;
        } else {
            session_refused += 1;
        }
    }
    let mut burn = session_body(&attacker, &c)?;
    burn["address"] = serde_json::json!(member.address().to_string());
    let _ = flood.send("POST", "/v1/auth/session", Some(&burn), None)?;
    let (code, s) = member_client.send(
        "POST",
        "/v1/auth/session",
        Some(&session_body(&member, &c)?),
        None,
    )?;
    let held = code == 200 && s["token"].is_string();
    Ok(Outcome {
        attack: "sign-in",
        finding: 5,
        held,
        tried: format!(
            "{challenges} challenges and {sessions} sessions of its own key from one client, and a forged session with the member's challenge"
        ),
        result: format!(
            "{refused} challenges and {session_refused} session attempts refused, {opened} sessions opened; the member's sign-in from another address {}",
            if held { "succeeded".to_string() } else { format!("failed: {code} {s}") }
        ),
        honest_latency: None,
    })
}

fn session_body(key: &Keypair, challenge: &serde_json::Value) -> anyhow::Result<serde_json::Value> {
    let message = hex::decode(challenge["message"].as_str().context("challenge message")?)?;
    Ok(serde_json::json!({
        "address": key.address().to_string(),
        "challenge": challenge["challenge"],
        "signature": hex::encode(key.sign(&message)),
    }))
}

/// Finding 6: a page elsewhere (foreign Origin, text/plain) and a same-host reverse proxy (foreign
/// Host) report the grid as gone; the microgrid must not island.
fn pcc_from_elsewhere(exe: &Path, dir: &Path, _scale: Scale) -> anyhow::Result<Outcome> {
    let operator = Keypair::from_seed(seed(0xa7, 0));
    let op_key = dir.join("operator.key");
    operator.save(&op_key)?;
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis();
    let genesis = dir.join("genesis.toml");
    std::fs::write(
        &genesis,
        format!(
            "chain_id = \"attacks\"\ntimestamp_ms = {now_ms}\n[[accounts]]\naddress = \"{op}\"\nbalance = \"100\"\n[market]\ngrid_operator = \"{op}\"\n",
            op = operator.address()
        ),
    )?;
    let feeder = dir.join("feeder.toml");
    std::fs::write(&feeder, CONGESTION_FEEDER)?;
    let node = NodeProcess::start(
        exe,
        dir,
        &[
            "--genesis",
            &genesis.display().to_string(),
            "--grid-feeder",
            &feeder.display().to_string(),
            "--grid-operator-key",
            &op_key.display().to_string(),
        ],
    )?;
    let body = r#"{"grid_available": false}"#;
    let tries = [
        (
            "a page elsewhere, text/plain",
            "text/plain",
            Some("http://evil.example"),
            None,
        ),
        (
            "a page elsewhere, JSON",
            "application/json",
            Some("http://evil.example"),
            None,
        ),
        (
            "a reverse proxy",
            "application/json",
            None,
            Some("community.example"),
        ),
        ("this machine without a key", "application/json", None, None),
    ];
    let mut answers = Vec::new();
    let mut all_refused = true;
    // Signed, but by a key that is neither the PCC meter's nor the grid operator's.
    let member = Keypair::from_seed(seed(0xa7, 1));
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as u64;
    let forged = serde_json::to_string(&gridmesh_api::chain::PccReport::signed(
        &member, "attacks", false, now_ms,
    ))?;
    let code = raw_once(
        node.addr,
        "/v1/grid/pcc",
        &forged,
        "application/json",
        None,
        None,
    )?;
    all_refused &= (400..500).contains(&code);
    answers.push(format!("a member's key: {code}"));
    for (what, content_type, origin, host) in tries {
        let code = raw_once(node.addr, "/v1/grid/pcc", body, content_type, origin, host)?;
        all_refused &= (400..500).contains(&code);
        answers.push(format!("{what}: {code}"));
    }
    std::thread::sleep(Duration::from_secs(2));
    let grid: serde_json::Value = get_json(node.addr, "/v1/grid")?;
    let mode = grid["mode"].as_str().unwrap_or("unknown").to_string();
    let held = all_refused && mode != "islanded";
    Ok(Outcome {
        attack: "pcc",
        finding: 6,
        held,
        tried: "reporting the grid gone with a member's key, without a key, from a page elsewhere (text/plain and JSON) and through a same-host proxy".into(),
        result: format!("answered {}; the grid mode is {mode}", answers.join(", ")),
        honest_latency: None,
    })
}

/// Finding 7: idle and half-sent connections by the thousand; the node must keep its
/// descriptors, close what stalls and answer `/v1/status` again once they are gone.
fn connection_flood(exe: &Path, dir: &Path, scale: Scale) -> anyhow::Result<Outcome> {
    let (idle, half_sent) = match scale {
        Scale::Bounded => (2_000usize, 200usize),
        Scale::Long => (18_000, 1_000),
    };
    let config = dir.join("node.toml");
    std::fs::write(
        &config,
        "[http]\nmax_connections = 512\nheader_read_timeout_s = 2\nidle_timeout_s = 4\n",
    )?;
    let mut node = NodeProcess::start(exe, dir, &["--config", &config.display().to_string()])?;
    let mut held = Vec::new();
    let mut could_not_connect = 0;
    for _ in 0..idle {
        match TcpStream::connect(node.addr) {
            Ok(s) => held.push(s),
            Err(_) => could_not_connect += 1,
        }
    }
    let mut slow = Vec::new();
    for _ in 0..half_sent {
        if let Ok(mut s) = TcpStream::connect(node.addr) {
            let _ = write!(
                s,
                "GET /v1/status HTTP/1.1\r\nhost: {}\r\nx-slow: ",
                node.addr
            );
            slow.push(s);
        }
    }
    // While they are open: an answer (200, or 503 busy) at once, not a hang. A node at its
    // limit answers 503 and closes at once, so the request can meet a closed socket (a broken
    // pipe, a reset): that is the same refusal, at once, and counts as the 503 it was.
    let t0 = Instant::now();
    let mut during = 0;
    for attempt in 1..=3 {
        match get_status(node.addr) {
            Ok(code) => {
                during = code;
                break;
            }
            Err(e) if closed_at_once(&e) => {
                eprintln!("note: /v1/status during the flood: {e:#}: refused by closing");
                during = 503;
                break;
            }
            Err(e) if attempt < 3 => eprintln!("note: /v1/status during the flood: {e:#}; again"),
            Err(e) => return Err(e),
        }
    }
    let during_ms = t0.elapsed().as_secs_f64() * 1e3;
    // The node closes the half-sent ones after the head timeout.
    let t1 = Instant::now();
    let give_up = t1 + Duration::from_secs(12);
    let mut closed = 0;
    for s in &mut slow {
        // One deadline for all: a node that never closes them costs 12 s, not 12 s each.
        let left = give_up
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1));
        s.set_read_timeout(Some(left))?;
        let mut buf = [0u8; 512];
        // An end of stream, an answer (408) or a reset: closed. A read timeout: still open.
        let open = matches!(s.read(&mut buf), Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut));
        if !open {
            closed += 1;
        }
    }
    let closed_secs = t1.elapsed().as_secs_f64();
    // And answers 200 once the idle ones are gone.
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut after = 0;
    while Instant::now() < deadline {
        after = get_status(node.addr).unwrap_or(0);
        if after == 200 {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let alive = node.alive();
    drop(held);
    let held_ok = alive
        && (during == 200 || during == 503)
        && during_ms < 2_000.0
        && after == 200
        && closed == slow.len();
    Ok(Outcome {
        attack: "connections",
        finding: 7,
        held: held_ok,
        tried: format!(
            "{idle} idle and {half_sent} half-sent connections against a node serving 512 ({could_not_connect} could not connect)"
        ),
        result: format!(
            "/v1/status answered {during} in {during_ms:.0} ms meanwhile; {closed} half-sent closed within {closed_secs:.1} s; then {after}; the node {}",
            if alive { "is running" } else { "died" }
        ),
        honest_latency: None,
    })
}

/// Finding 7: one client opens every event stream it can and never reads them; another client
/// must still get one.
fn stream_hog(exe: &Path, dir: &Path, _scale: Scale) -> anyhow::Result<Outcome> {
    let node = NodeProcess::start(exe, dir, &[])?;
    let mut mine = Vec::new();
    let mut refused = 0;
    for _ in 0..64 {
        let (code, s) = open_stream([127, 0, 0, 1], node.addr)?;
        if code == 101 {
            mine.push(s);
        } else {
            refused += 1;
        }
    }
    let (other, _s) = open_stream([127, 0, 0, 2], node.addr)?;
    let held = other == 101 && mine.len() < 64;
    Ok(Outcome {
        attack: "streams",
        finding: 7,
        held,
        tried: "64 event streams from one address, never read".into(),
        result: format!(
            "{} opened, {refused} refused; a stream from another address got {other}",
            mine.len()
        ),
        honest_latency: None,
    })
}

/// Finding 9: retained junk above the gateway's message bound waits on the broker before the
/// node starts, and more arrives while it runs; the gateway must drop and count it and stay
/// connected instead of failing on every reconnect.
fn mqtt_junk(exe: &Path, dir: &Path, _scale: Scale) -> anyhow::Result<Outcome> {
    let broker = crate::broker::LocalMosquitto::start()
        .context("starting Mosquitto (run ./scripts/setup)")?;
    let broker_addr = SocketAddr::from(([127, 0, 0, 1], broker.port));
    let chain = "gridmesh-dev";
    let big = vec![0x5au8; 2 << 20];
    let medium = vec![0xa5u8; 200 << 10];
    mqtt_publish(
        broker_addr,
        &format!("gridmesh/{chain}/readings/junk"),
        &big,
        true,
    )?;
    mqtt_publish(
        broker_addr,
        &format!("gridmesh/{chain}/telemetry/junk"),
        &medium,
        true,
    )?;
    let gateway = Keypair::from_seed(seed(0xa8, 0));
    let gw_key = dir.join("gateway.key");
    gateway.save(&gw_key)?;
    let node = NodeProcess::start(
        exe,
        dir,
        &[
            "--mqtt",
            &broker_addr.to_string(),
            "--gateway-key",
            &gw_key.display().to_string(),
        ],
    )?;
    let stats = || -> anyhow::Result<serde_json::Value> {
        Ok(get_json(node.addr, "/v1/gateway")?["stats"].clone())
    };
    let dropped = |s: &serde_json::Value| -> u64 {
        s["dropped"]
            .as_object()
            .map(|m| m.values().filter_map(|v| v.as_u64()).sum())
            .unwrap_or(0)
    };
    let wait = |at_least: u64| -> anyhow::Result<serde_json::Value> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let s = stats()?;
            if (s["connected"] == true && dropped(&s) >= at_least) || Instant::now() > deadline {
                return Ok(s);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    // The 2 MB messages are above the Maximum Packet Size the gateway announces (MQTT 5): the
    // broker withholds them. The 200 kB ones reach it, above its own bound: dropped, counted.
    wait(1)?;
    // The same while it runs, then three seconds to see whether it loops reconnecting.
    let more = format!("gridmesh/{chain}/readings/more");
    mqtt_publish(broker_addr, &more, &big, false)?;
    mqtt_publish(broker_addr, &more, &medium, false)?;
    wait(2)?;
    std::thread::sleep(Duration::from_secs(3));
    let s = stats()?;
    let connections = s["connections"].as_u64().unwrap_or(0);
    let held = s["connected"] == true && dropped(&s) >= 2 && connections <= 2;
    Ok(Outcome {
        attack: "mqtt-junk",
        finding: 9,
        held,
        tried: "2 MB and 200 kB retained on the gateway's topics before it connected, the same again while it ran (the broker withholds what is above the gateway's announced maximum)".into(),
        result: format!(
            "{} messages dropped and counted ({}); {connections} connection(s) to the broker, connected: {}",
            dropped(&s),
            s["dropped"],
            s["connected"]
        ),
        honest_latency: None,
    })
}

/// Publishes one message with QoS 0 (retained if asked) over MQTT 3.1.1, written by hand so that
/// no client-side bound stops a payload the gateway must survive; returns once the broker has
/// answered a ping sent after it (so it has the message).
fn mqtt_publish(
    broker: SocketAddr,
    topic: &str,
    payload: &[u8],
    retain: bool,
) -> anyhow::Result<()> {
    fn remaining_length(mut n: usize, out: &mut Vec<u8>) {
        loop {
            let mut byte = (n % 128) as u8;
            n /= 128;
            if n > 0 {
                byte |= 0x80;
            }
            out.push(byte);
            if n == 0 {
                break;
            }
        }
    }
    fn string(s: &[u8], out: &mut Vec<u8>) {
        out.extend_from_slice(&(s.len() as u16).to_be_bytes());
        out.extend_from_slice(s);
    }
    let mut s = TcpStream::connect(broker)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut body = Vec::new();
    string(b"MQTT", &mut body);
    body.extend_from_slice(&[4, 0x02, 0, 60]);
    string(b"gridmesh-attacker", &mut body);
    let mut packet = vec![0x10];
    remaining_length(body.len(), &mut packet);
    packet.extend_from_slice(&body);
    s.write_all(&packet)?;
    let mut connack = [0u8; 4];
    s.read_exact(&mut connack)?;
    if connack[0] != 0x20 || connack[3] != 0 {
        bail!("the broker refused the connection: {connack:?}");
    }
    let mut body = Vec::new();
    string(topic.as_bytes(), &mut body);
    body.extend_from_slice(payload);
    let mut packet = vec![0x30 | u8::from(retain)];
    remaining_length(body.len(), &mut packet);
    packet.extend_from_slice(&body);
    s.write_all(&packet)?;
    s.write_all(&[0xc0, 0])?;
    let mut pong = [0u8; 2];
    s.read_exact(&mut pong)?;
    if pong != [0xd0, 0] {
        bail!("the broker did not answer the ping: {pong:?}");
    }
    s.write_all(&[0xe0, 0])?;
    Ok(())
}

/// Opens a WebSocket to `/v1/events` from `from`: the answer's status code and the socket.
fn open_stream(from: [u8; 4], to: SocketAddr) -> anyhow::Result<(u16, TcpStream)> {
    let mut c = RawClient::connect(from, to)?;
    let s = c.stream.get_mut();
    write!(
        s,
        "GET /v1/events HTTP/1.1\r\nhost: {to}\r\nupgrade: websocket\r\nconnection: upgrade\r\n\
         sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nsec-websocket-version: 13\r\n\r\n"
    )?;
    let mut status = String::new();
    c.stream.read_line(&mut status)?;
    let code = status
        .split_whitespace()
        .nth(1)
        .and_then(|x| x.parse().ok())
        .unwrap_or(0);
    Ok((code, c.stream.into_inner()))
}

/// `GET path` on a connection of its own, waiting at most `wait` for the answer: the status code
/// (0 if the node closed it unanswered) and the body.
fn get(addr: SocketAddr, path: &str, wait: Duration) -> anyhow::Result<(u16, String)> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(wait))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n"
    )?;
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map_or("", |x| x.1).to_string();
    Ok((code, body))
}

/// Whether a request failed because the node closed the connection at once (a broken pipe, a
/// reset): how a node at its connection limit refuses when the 503 it wrote is not read first.
fn closed_at_once(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>().is_some_and(|io| {
            matches!(
                io.kind(),
                std::io::ErrorKind::BrokenPipe
                    | std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::ConnectionAborted
            )
        })
    })
}

/// `GET /v1/status`: its status code.
fn get_status(addr: SocketAddr) -> anyhow::Result<u16> {
    Ok(get(addr, "/v1/status", Duration::from_secs(5))?.0)
}

const CONGESTION_FEEDER: &str = include_str!("../../../examples/congestion/feeder.toml");

fn seed(tag: u8, i: u32) -> [u8; 32] {
    let mut s = [tag; 32];
    s[..4].copy_from_slice(&i.to_be_bytes());
    s
}

fn cancel(k: &Keypair, chain: &str, nonce: u64) -> SignedTx {
    SignedTx::new(
        k,
        chain,
        nonce,
        TxKind::CancelOrder {
            slot: 1,
            order_id: nonce,
        },
    )
}

/// Transfers `amount` from the faucet to each key and waits for the last to commit.
fn fund(
    client: &Client,
    chain: &str,
    faucet: &Keypair,
    to: &[Keypair],
    amount: Amount,
) -> anyhow::Result<()> {
    let mut nonce = client.account(&faucet.address())?.nonce;
    let mut last = None;
    for chunk in to.chunks(1_000) {
        let txs: Vec<SignedTx> = chunk
            .iter()
            .map(|k| {
                nonce += 1;
                SignedTx::transfer(faucet, chain, nonce - 1, k.address(), amount)
            })
            .collect();
        let r = client.submit_batch(&txs)?;
        if r.rejected > 0 {
            bail!(
                "funding refused: {:?}",
                r.results.iter().find_map(|x| x.error.clone())
            );
        }
        last = r.results.last().and_then(|x| x.hash.clone());
    }
    if let Some(h) = last {
        let s = client.wait_committed(&h.parse()?, Duration::from_secs(60))?;
        if s.status != "committed" {
            bail!("funding did not commit: {}", s.status);
        }
    }
    Ok(())
}

/// `n` transfers from the faucet, one request each; how many committed, the refusals, and the
/// latencies from submission to commit.
fn honest_transfers(
    client: &Client,
    chain: &str,
    faucet: &Keypair,
    n: usize,
) -> anyhow::Result<(usize, Vec<String>, Option<Latency>)> {
    let mut nonce = client.account(&faucet.address())?.nonce;
    let mut pending = Vec::new();
    let mut refused = Vec::new();
    for i in 0..n {
        let to = Address(seed(0xb0, i as u32));
        let tx = SignedTx::transfer(faucet, chain, nonce, to, Amount(1));
        let t0 = Instant::now();
        match client.submit(&tx) {
            Ok(r) => {
                nonce += 1;
                pending.push((r.hash.parse::<Hash32>()?, t0));
            }
            Err(e) => refused.push(e.to_string()),
        }
    }
    let mut latencies = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !pending.is_empty() && Instant::now() < deadline {
        let mut still = Vec::new();
        for (h, t0) in pending {
            match client.tx(&h)?.map(|s| s.status) {
                Some(s) if s == "committed" => latencies.push(t0.elapsed().as_secs_f64() * 1e3),
                Some(s) if s == "pending" => still.push((h, t0)),
                other => refused.push(format!("{h}: {other:?}")),
            }
        }
        pending = still;
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok((latencies.len(), refused, Latency::of(latencies)))
}

/// `GET path` as JSON.
fn get_json(addr: SocketAddr, path: &str) -> anyhow::Result<serde_json::Value> {
    let (code, body) = get(addr, path, Duration::from_secs(10))?;
    serde_json::from_str(&body).with_context(|| format!("GET {path}: {code} {body}"))
}

/// One POST on its own connection with chosen headers; the status code.
fn raw_once(
    addr: SocketAddr,
    path: &str,
    body: &str,
    content_type: &str,
    origin: Option<&str>,
    host: Option<&str>,
) -> anyhow::Result<u16> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let origin = origin
        .map(|o| format!("origin: {o}\r\n"))
        .unwrap_or_default();
    let host = host.map(str::to_string).unwrap_or_else(|| addr.to_string());
    let request = format!(
        "POST {path} HTTP/1.1\r\nhost: {host}\r\n{origin}content-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = s.write_all(request.as_bytes());
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer);
    text.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .with_context(|| format!("no HTTP answer from the node: {text:?}"))
}

/// HTTP/1.1 on one kept-alive connection from a chosen loopback address: another client, as the
/// node sees it.
struct RawClient {
    stream: BufReader<TcpStream>,
    addr: SocketAddr,
}

impl RawClient {
    fn connect(from: [u8; 4], to: SocketAddr) -> anyhow::Result<RawClient> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()?;
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.bind(SocketAddr::from((from, 0)))?;
        let stream = rt.block_on(socket.connect(to))?.into_std()?;
        stream.set_nonblocking(false)?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        Ok(RawClient {
            stream: BufReader::new(stream),
            addr: to,
        })
    }

    fn send(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
        token: Option<&str>,
    ) -> anyhow::Result<(u16, serde_json::Value)> {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let auth = token
            .map(|t| format!("authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        let request = format!(
            "{method} {path} HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\n{auth}content-length: {}\r\n\r\n{body}",
            self.addr,
            body.len()
        );
        self.stream.get_mut().write_all(request.as_bytes())?;
        let mut status = String::new();
        self.stream.read_line(&mut status)?;
        let code: u16 = status
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .with_context(|| format!("not an HTTP status line: {status:?}"))?;
        let mut length = 0usize;
        loop {
            let mut line = String::new();
            self.stream.read_line(&mut line)?;
            if line == "\r\n" || line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    length = v.trim().parse()?;
                }
            }
        }
        let mut buf = vec![0; length];
        self.stream.read_exact(&mut buf)?;
        Ok((
            code,
            serde_json::from_slice(&buf).unwrap_or(serde_json::Value::Null),
        ))
    }
}

/// A `gridmesh node` process, stopped (SIGTERM, then killed) when dropped.
struct NodeProcess {
    child: Child,
    url: String,
    addr: SocketAddr,
    data: PathBuf,
}

impl NodeProcess {
    /// Starts a node; a build older than the config file's sections (`[mempool]`, `[http]`) is
    /// started again without the file, at its defaults, and says so in its log.
    fn start(exe: &Path, dir: &Path, args: &[&str]) -> anyhow::Result<NodeProcess> {
        match Self::start_once(exe, dir, args) {
            Err(e) if args.contains(&"--config") && format!("{e:#}").contains("unknown field") => {
                let i = args.iter().position(|a| *a == "--config").expect("checked");
                let rest: Vec<&str> = args[..i].iter().chain(&args[i + 2..]).copied().collect();
                eprintln!(
                    "note: {} does not know this attack's node config; its defaults are used",
                    exe.display()
                );
                Self::start_once(exe, dir, &rest)
            }
            other => other,
        }
    }

    fn start_once(exe: &Path, dir: &Path, args: &[&str]) -> anyhow::Result<NodeProcess> {
        let addr = {
            let l = TcpListener::bind("127.0.0.1:0")?;
            l.local_addr()?
        };
        let data = dir.join("data");
        let log = std::fs::File::create(dir.join("node.log"))?;
        let child = Command::new(exe)
            .arg("node")
            .arg("--data-dir")
            .arg(&data)
            .arg("--listen")
            .arg(addr.to_string())
            .args(args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", exe.display()))?;
        let mut node = NodeProcess {
            child,
            url: format!("http://{addr}"),
            addr,
            data,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if Client::new(&node.url).status().is_ok() {
                return Ok(node);
            }
            if let Some(status) = node.child.try_wait()? {
                let log = std::fs::read_to_string(dir.join("node.log")).unwrap_or_default();
                let log: String = log.split_whitespace().collect::<Vec<_>>().join(" ");
                bail!(
                    "the node exited ({status}): {}",
                    log.chars().take(400).collect::<String>()
                );
            }
            if Instant::now() > deadline {
                bail!("the node did not answer within 60 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Whether the process is still running.
    fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    fn faucet(&self) -> anyhow::Result<Keypair> {
        let path = self.data.join(gridmesh_node::FAUCET_KEY_FILE);
        Keypair::load(&path).with_context(|| format!("loading {}", path.display()))
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
