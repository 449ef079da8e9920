//! `gridmesh demo`: the most the project can do today, end to end, in one command.
//!
//! Starts an embedded node in a temporary data directory (block time 600x the wall clock, so a
//! 15-minute market slot passes in 1.5 s), creates household accounts, moves tokens between them
//! with real signed transactions over the node's HTTP API, lets them trade one market slot (devices,
//! orders, clearing at gate closure, meter readings, settlement), shows that bad transactions are
//! refused, and prints what the ledger committed. Then the grid examples (`grid_part`) and a day of
//! devices and token economics on a street (`crate::demo_devices`).

use std::time::Duration;

use anyhow::Context;
use gridmesh_ledger::{DeviceKind, Keypair, Side, SignedTx, TxKind};
use gridmesh_types::{Address, Amount};
use serde::Serialize;

use gridmesh_client::client::Client;
use gridmesh_node::{NodeConfig, RunningNode, FAUCET_KEY_FILE};

#[derive(Debug, Serialize)]
pub struct DemoTransfer {
    pub from: String,
    pub to: String,
    pub amount: String,
    pub memo: String,
    pub hash: String,
    pub height: u64,
}

#[derive(Debug, Serialize)]
pub struct DemoHousehold {
    pub name: String,
    pub address: String,
    pub balance: String,
    pub nonce: u64,
}

#[derive(Debug, Serialize)]
pub struct DemoRefusal {
    pub attempt: String,
    pub error: String,
}

#[derive(Debug, Serialize)]
pub struct DemoReport {
    pub chain_id: String,
    pub api: String,
    pub height: u64,
    pub state_root: String,
    pub total_supply: String,
    pub transfers: Vec<DemoTransfer>,
    pub refused: Vec<DemoRefusal>,
    pub households: Vec<DemoHousehold>,
    /// The traded slot as `GET /v1/market/slots/{slot}` shows it once settled.
    pub market: gridmesh_api::market::SlotView,
    pub grid: DemoGrid,
    /// Devices with their own keys, proof of generation, fraud, rewards and a community asset.
    pub devices: crate::demo_devices::DemoDevices,
}

/// The grid layer on the shipped examples.
#[derive(Serialize)]
pub struct DemoGrid {
    /// `examples/congestion`: one evening slot cleared without and with the feeder's envelopes.
    pub congestion: crate::grid_market::GridClearReport,
    /// `examples/island/outage.toml` through the islanding controller.
    pub island: crate::grid_report::IslandReport,
}

impl std::fmt::Debug for DemoGrid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DemoGrid")
            .field("lost_welfare", &self.congestion.lost_welfare)
            .field("island", &self.island)
            .finish_non_exhaustive()
    }
}

const CONGESTION_FEEDER: &str = include_str!("../../../examples/congestion/feeder.toml");
const CONGESTION_ORDERS: &str = include_str!("../../../examples/congestion/orders.json");
const OUTAGE: &str = include_str!("../../../examples/island/outage.toml");

/// The grid part of the demo: offline, on the examples compiled into the binary.
pub fn grid_part(say: &dyn Fn(String)) -> anyhow::Result<DemoGrid> {
    let feeder = gridmesh_grid::Feeder::from_toml(CONGESTION_FEEDER)?;
    let set = crate::market_file::OrderSet::parse(CONGESTION_ORDERS)?;
    let congestion = crate::grid_market::clear_on_feeder(
        &set,
        &feeder,
        gridmesh_market::Mechanism::PayAsClear,
        15,
    )?;
    say(format!(
        "grid: 20 EVs on a 100 kVA transformer at 18:00: cleared blind, the transformer runs at {:.0}% ({}); with operating envelopes at {:.0}%, costing {} tokens ({:.0}%) of the slot's surplus",
        congestion.unconstrained.transformer_loading_pct,
        congestion.unconstrained.violation.as_deref().unwrap_or("no violation"),
        congestion.constrained.transformer_loading_pct,
        congestion.lost_welfare,
        congestion.lost_welfare_pct
    ));
    let island = crate::grid_report::island_from_toml(OUTAGE)?;
    if let Some(o) = island
        .outages
        .iter()
        .max_by(|a, b| a.minutes_islanded.total_cmp(&b.minutes_islanded))
    {
        say(format!(
            "grid: a {:.0}-minute evening outage at {}: islanded on {} homes' batteries, {:.0}% of critical load served, {:.1} kWh of other load shed, batteries down to {:.0}%",
            o.minutes_islanded,
            o.islanded_at,
            island.homes,
            o.critical_load_served_pct,
            o.energy_not_served_kwh,
            o.lowest_battery_soc_pct
        ));
    }
    Ok(DemoGrid { congestion, island })
}

/// Block time runs this many times faster than the wall clock in the demo.
const DEMO_TIME_SCALE: u32 = 600;

const HOUSEHOLDS: [&str; 5] = [
    "Ada (rooftop PV + battery)",
    "Ben (EV charger)",
    "Cleo (heat pump)",
    "Dev (PV)",
    "Eve (flat, no DER)",
];

/// Runs the demo with the node's API on `listen`; human-readable progress goes to stderr through
/// `say`.
pub async fn run(
    listen: std::net::SocketAddr,
    say: impl Fn(String) + Send + 'static,
) -> anyhow::Result<DemoReport> {
    let dir = tempfile::tempdir().context("creating a temporary data directory")?;
    let mut cfg = NodeConfig::new(dir.path());
    cfg.listen = listen;
    cfg.block_interval = Duration::from_millis(250);
    cfg.time_scale = DEMO_TIME_SCALE;
    let node = RunningNode::start(cfg).await?;
    let api = format!("http://{}", node.api_addr);
    let faucet_path = dir.path().join(FAUCET_KEY_FILE);
    let result = tokio::task::spawn_blocking({
        let api = api.clone();
        move || script(&api, &faucet_path, &say)
    })
    .await?;
    node.stop().await?;
    result
}

fn script(
    api: &str,
    faucet_path: &std::path::Path,
    say: &dyn Fn(String),
) -> anyhow::Result<DemoReport> {
    let client = Client::new(api);
    let status = client.status()?;
    say(format!(
        "gridmesh demo: embedded node on {api}, chain {} (solo engine, 250 ms blocks, time {DEMO_TIME_SCALE}x)",
        status.chain_id
    ));
    let faucet = Keypair::load(faucet_path)?;
    let homes: Vec<(String, Keypair)> = HOUSEHOLDS
        .iter()
        .map(|n| (n.to_string(), Keypair::generate()))
        .collect();
    let name_of = |a: &Address| -> String {
        if *a == faucet.address() {
            return "community faucet".into();
        }
        homes
            .iter()
            .find(|(_, k)| k.address() == *a)
            .map(|(n, _)| n.split(' ').next().unwrap_or(n).to_string())
            .unwrap_or_else(|| a.to_string())
    };
    let mut nonces = std::collections::BTreeMap::<Address, u64>::new();
    let mut transfers = Vec::new();
    let mut send = |from: &Keypair, to: Address, amount: &str, memo: &str| -> anyhow::Result<()> {
        let amount: Amount = amount.parse()?;
        let nonce = nonces.entry(from.address()).or_insert(0);
        let tx = SignedTx::transfer(from, &status.chain_id, *nonce, to, amount);
        let accepted = client.submit(&tx)?;
        *nonce += 1;
        let hash = accepted.hash.parse()?;
        let done = client.wait_committed(&hash, Duration::from_secs(30))?;
        let height = done.height.unwrap_or_default();
        say(format!(
            "  block {height:>3}  {:<16} -> {:<16} {:>8} tokens  {memo}",
            name_of(&from.address()),
            name_of(&to),
            amount.to_string(),
        ));
        transfers.push(DemoTransfer {
            from: from.address().to_string(),
            to: to.to_string(),
            amount: amount.to_string(),
            memo: memo.into(),
            hash: accepted.hash,
            height,
        });
        Ok(())
    };

    say("Welcome grants from the community faucet:".into());
    for (_, k) in &homes {
        send(&faucet, k.address(), "100", "welcome grant")?;
    }
    say("Neighbours pay each other for energy:".into());
    let [ada, ben, cleo, dev, eve] = [0, 1, 2, 3, 4].map(|i| &homes[i].1);
    send(
        ben,
        ada.address(),
        "3.42",
        "11.4 kWh of Ada's midday solar for Ben's EV",
    )?;
    send(
        cleo,
        dev.address(),
        "1.875",
        "6.25 kWh of Dev's PV for Cleo's heat pump",
    )?;
    send(
        eve,
        ada.address(),
        "0.96",
        "evening energy from Ada's battery",
    )?;
    send(
        ada,
        eve.address(),
        "0.5",
        "Ada shares savings with Eve (solidarity tariff)",
    )?;

    let market = trade_one_slot(&client, &status.chain_id, &homes, say)?;

    say("Bad transactions are refused and change nothing:".into());
    let mut refused = Vec::new();
    let mut refuse = |attempt: &str, tx: SignedTx| {
        let err = client
            .submit(&tx)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_else(|| "ACCEPTED (unexpected)".into());
        say(format!("  {attempt}: {err}"));
        refused.push(DemoRefusal {
            attempt: attempt.into(),
            error: err,
        });
    };
    let eve_nonce = client.account(&eve.address())?.nonce;
    refuse(
        "Eve overdraws",
        SignedTx::transfer(
            eve,
            &status.chain_id,
            eve_nonce,
            ben.address(),
            Amount::from_tokens(1_000),
        ),
    );
    refuse(
        "Ben replays a committed transfer",
        SignedTx::transfer(ben, &status.chain_id, 0, ada.address(), "3.42".parse()?),
    );
    let mut forged = SignedTx::transfer(eve, &status.chain_id, eve_nonce, eve.address(), Amount(1));
    forged.body.sender = ada.address();
    refuse("Eve forges a transfer from Ada", forged);
    refuse(
        "a transaction for another chain",
        SignedTx::transfer(ada, "some-other-chain", 1, ben.address(), Amount(1)),
    );

    let status = client.status()?;
    let mut households = Vec::new();
    say(format!(
        "Committed: height {}, state root {}, total supply {} tokens (unchanged)",
        status.height, status.state_root, status.total_supply
    ));
    for (name, k) in &homes {
        let a = client.account(&k.address())?;
        say(format!(
            "  {name:<28} {:>10} tokens  nonce {}",
            a.balance, a.nonce
        ));
        households.push(DemoHousehold {
            name: name.clone(),
            address: a.address,
            balance: a.balance,
            nonce: a.nonce,
        });
    }
    Ok(DemoReport {
        chain_id: status.chain_id,
        api: api.to_string(),
        height: status.height,
        state_root: status.state_root,
        total_supply: status.total_supply,
        transfers,
        refused,
        households,
        market,
        grid: grid_part(say)?,
        devices: crate::demo_devices::devices_part(say)?,
    })
}

/// Signs and submits one market or device transaction and waits for its block.
fn submit(client: &Client, chain_id: &str, key: &Keypair, kind: TxKind) -> anyhow::Result<u64> {
    let nonce = client.account(&key.address())?.nonce;
    let tx = gridmesh_ledger::SignedTx::new(key, chain_id, nonce, kind);
    let hash = client.submit(&tx)?.hash.parse()?;
    Ok(client
        .wait_committed(&hash, Duration::from_secs(30))?
        .height
        .unwrap_or_default())
}

fn wait_until(what: &str, mut done: impl FnMut() -> anyhow::Result<bool>) -> anyhow::Result<()> {
    let start = std::time::Instant::now();
    while !done()? {
        if start.elapsed() > Duration::from_secs(60) {
            anyhow::bail!("the demo timed out waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// The households trade one 15-minute slot: PV owners sell, the others buy; the slot clears at gate
/// closure, meters report, and the ledger settles what was delivered.
fn trade_one_slot(
    client: &Client,
    chain_id: &str,
    homes: &[(String, Keypair)],
    say: &dyn Fn(String),
) -> anyhow::Result<gridmesh_api::market::SlotView> {
    let short = |i: usize| homes[i].0.split(' ').next().unwrap_or("").to_string();
    say("Devices: Ada 6 kW PV + 5 kW battery, Dev 4 kW PV + 4 kW battery, Ben an EV charger, Cleo a heat pump, Eve a meter; the batteries that sell have their own keys and bond 10 tokens each".into());
    let declared = [
        (0, DeviceKind::Pv, 6_000),
        (1, DeviceKind::EvCharger, 11_000),
        (2, DeviceKind::Load, 3_000),
        (3, DeviceKind::Pv, 4_000),
        (4, DeviceKind::Meter, 10_000),
    ];
    for (i, kind, capacity_w) in declared {
        submit(
            client,
            chain_id,
            &homes[i].1,
            TxKind::RegisterDevice { kind, capacity_w },
        )?;
    }
    // Only keyed, bonded devices sell: Ada's and Dev's batteries sign their own readings.
    let batteries = [
        (0, Keypair::generate(), 5_000, "street-1/ada"),
        (3, Keypair::generate(), 4_000, "street-2/dev"),
    ];
    for (i, key, capacity_w, location) in &batteries {
        let info = gridmesh_ledger::tx::DeviceInfo {
            kind: DeviceKind::Battery,
            capacity_w: *capacity_w,
            location: location.to_string(),
            latitude_microdeg: 0,
            longitude_microdeg: 0,
            tilt_deg: 0,
            azimuth_deg: 0,
        };
        let owner = homes[*i].1.address();
        let register =
            TxKind::register_device_key(chain_id, &owner, key, info, Amount::from_tokens(10));
        submit(client, chain_id, &homes[*i].1, register)?;
    }
    let slot = client.market()?.next_open_slot + 1;
    say(format!(
        "Market slot {slot} ({} UTC delivery, pay-as-clear, gate closes 5 minutes before):",
        {
            let minutes = (slot % 96) * 15;
            format!("{:02}:{:02}", minutes / 60, minutes % 60)
        }
    ));
    // (home, side, kWh in Wh, price in thousandths of a token)
    let orders = [
        (0, Side::Ask, 1_200, 90, "street-1/ada"),
        (3, Side::Ask, 800, 110, "street-2/dev"),
        (1, Side::Bid, 1_000, 250, "street-1/ben"),
        (2, Side::Bid, 600, 200, "street-2/cleo"),
        (4, Side::Bid, 500, 150, "street-2/eve"),
    ];
    for (i, side, wh, milli, location) in orders {
        let h = submit(
            client,
            chain_id,
            &homes[i].1,
            TxKind::PlaceOrder {
                slot,
                side,
                energy_mwh: wh * 1_000,
                price_per_kwh: milli * 1_000,
                location: location.into(),
            },
        )?;
        say(format!(
            "  block {h:>3}  {:<5} {} {:.1} kWh at {:.3} tokens/kWh ({location})",
            short(i),
            if side == Side::Bid { "bids" } else { "asks" },
            wh as f64 / 1e3,
            milli as f64 / 1e3
        ));
    }
    wait_until("clearing", || {
        Ok(client
            .market_slot(slot)?
            .is_some_and(|v| v.status != "open" && v.status != "closed"))
    })?;
    let v = client.market_slot(slot)?.context("the slot exists")?;
    say(format!(
        "  cleared at gate closure: {} kWh in {} trades, welfare {} of an optimal {} tokens",
        v.volume_kwh, v.trades_total, v.welfare, v.optimal_welfare
    ));
    for m in &v.markets {
        say(format!(
            "    market {:<9} {} kWh at {} tokens/kWh",
            if m.area.is_empty() { "feeder" } else { &m.area },
            m.volume_kwh,
            m.price_per_kwh.as_deref().unwrap_or("-")
        ));
    }
    say("After delivery the batteries and meters report (Dev's battery gave 0.5 of the 0.8 kWh he sold; Eve's meter is offline):".into());
    // Each battery signs one sample at the slot's end and a reading that commits to it. The
    // chain's clock moves with its blocks: until the slot has ended (each attempt makes a block)
    // the reading is refused as early, and the next attempt is a new sample.
    for ((i, key, ..), out_wh) in batteries.iter().zip([1_200u64, 500]) {
        let out_mwh = out_wh * 1_000;
        let started = std::time::Instant::now();
        for seq in 1.. {
            let reading = gridmesh_ledger::tx::DeviceReading::with_one_sample(
                key,
                chain_id,
                slot,
                seq,
                (out_mwh, out_mwh),
                (0, 0),
            );
            let kind = TxKind::SubmitDeviceReadings {
                readings: vec![reading],
            };
            match submit(client, chain_id, &homes[*i].1, kind) {
                Ok(_) => break,
                Err(e)
                    if format!("{e:#}").contains("can only come after")
                        && started.elapsed() < Duration::from_secs(60) =>
                {
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => return Err(e),
            }
        }
    }
    let readings = [(0, 0, 1_200), (3, 0, 500), (1, 1_000, 0), (2, 700, 0)];
    for (i, import_wh, export_wh) in readings {
        submit(
            client,
            chain_id,
            &homes[i].1,
            TxKind::SubmitReading {
                slot,
                import_mwh: import_wh * 1_000,
                export_mwh: export_wh * 1_000,
            },
        )?;
    }
    wait_until("settlement", || {
        Ok(client
            .market_slot(slot)?
            .is_some_and(|v| v.status == "final"))
    })?;
    // Each household's trades, bill and readings are its own: the public view of the slot shows
    // none of them, so the tour reads the slot signed in as each household in turn.
    let mut v = client.market_slot(slot)?.context("the slot exists")?;
    for (_, k) in homes {
        let mine = client
            .clone()
            .signed_in(k)?
            .market_slot(slot)?
            .context("the slot exists")?;
        for t in mine.trades {
            if !v.trades.iter().any(|x| x.index == t.index) {
                v.trades.push(t);
            }
        }
        for b in mine.bills {
            if !v.bills.iter().any(|x| x.account == b.account) {
                v.bills.push(b);
            }
        }
        for d in mine.device_readings {
            if !v.device_readings.iter().any(|x| x.device == d.device) {
                v.device_readings.push(d);
            }
        }
    }
    v.trades.sort_by_key(|t| t.index);
    v.private_rows_hidden = 0;
    let name = |a: &str| {
        homes
            .iter()
            .position(|(_, k)| k.address().to_string() == a)
            .map_or(a.to_string(), short)
    };
    say("  settled one hour after delivery:".into());
    for t in &v.trades {
        if let Some(s) = &t.settlement {
            say(format!(
                "    {:<5} -> {:<5} {} of {} kWh delivered: paid {}, compensation {}",
                name(&t.seller),
                name(&t.buyer),
                s.delivered_kwh,
                t.energy_kwh,
                s.buyer_paid,
                s.compensation
            ));
        }
    }
    for b in &v.bills {
        say(format!(
            "    {:<5} utility bill: import {} kWh for {}, export {} kWh for {}{}",
            name(&b.account),
            b.utility_import_kwh,
            b.utility_cost,
            b.utility_export_kwh,
            b.utility_credit,
            if b.estimated {
                " (estimated: no reading)"
            } else {
                ""
            }
        ));
    }
    Ok(v)
}
