//! `gridmesh demo`: the most the project can do today, end to end, in one command.
//!
//! Starts an embedded node in a temporary data directory, creates household accounts, moves tokens
//! between them with real signed transactions over the node's HTTP API, shows that bad transactions
//! are refused, and prints what the ledger committed.

use std::time::Duration;

use anyhow::Context;
use gridmesh_ledger::{Keypair, SignedTx};
use gridmesh_types::{Address, Amount};
use serde::Serialize;

use crate::client::Client;
use crate::{NodeConfig, RunningNode, FAUCET_KEY_FILE};

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
}

const HOUSEHOLDS: [&str; 5] = [
    "Ada (rooftop PV + battery)",
    "Ben (EV charger)",
    "Cleo (heat pump)",
    "Dev (PV)",
    "Eve (flat, no DER)",
];

/// Runs the demo; human-readable progress goes to stderr through `say`.
pub async fn run(say: impl Fn(String) + Send + 'static) -> anyhow::Result<DemoReport> {
    let dir = tempfile::tempdir().context("creating a temporary data directory")?;
    let mut cfg = NodeConfig::new(dir.path());
    cfg.listen = "127.0.0.1:0".parse()?;
    cfg.block_interval = Duration::from_millis(250);
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
        "gridmesh demo: embedded node on {api}, chain {} (solo engine, 250 ms blocks)",
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
    })
}
