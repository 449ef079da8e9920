//! `gridmesh query`: read a node through its API.

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Subcommand;
use gridmesh_client::client::Client;
use gridmesh_types::{Address, Hash32};

use crate::cli::NodeUrl;
use crate::output::outln;
use crate::output::print_json;

#[derive(Subcommand)]
pub(crate) enum QueryCommand {
    /// The market's rules, the current slot and the next slot open for orders.
    Market {
        #[command(flatten)]
        node: NodeUrl,
        /// Print the result as one JSON document on stdout.
        #[arg(long)]
        json: bool,
    },
    /// A market slot: order book depth, clearing price, volume and welfare; with --key, the
    /// account's own trades, settlement, bill and device readings.
    Slot {
        /// The slot: 15-minute periods since 1970 (unix ms / 900,000).
        slot: u64,
        /// Sign in with this account's key file: the slot then lists its own trades, bill and
        /// device readings (and those of whom granted it theirs); without it, the slot's
        /// aggregates only.
        #[arg(long)]
        key: Option<std::path::PathBuf>,
        #[command(flatten)]
        node: NodeUrl,
        /// Print the result as one JSON document on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Chain status.
    Status {
        #[command(flatten)]
        node: NodeUrl,
        /// Print the result as one JSON document on stdout.
        #[arg(long)]
        json: bool,
    },
    /// An account's balance and nonce.
    Account {
        /// The account's address: checksummed (`gm1…`) or 64 hex characters.
        address: Address,
        #[command(flatten)]
        node: NodeUrl,
        /// Print the result as one JSON document on stdout.
        #[arg(long)]
        json: bool,
    },
    /// An account's transactions waiting in the node's mempool: ready ones, and those behind a
    /// missing nonce (`tx drop-gapped` drops these).
    Pending {
        /// The account's address: checksummed (`gm1…`) or 64 hex characters.
        address: Address,
        #[command(flatten)]
        node: NodeUrl,
        /// Print the result as one JSON document on stdout.
        #[arg(long)]
        json: bool,
    },
    /// A block by height (or `latest`), with transactions and receipts.
    Block {
        /// The block height, or `latest`.
        height: String,
        #[command(flatten)]
        node: NodeUrl,
        /// Print the result as one JSON document on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Token supply: genesis, minted rewards, burns, and whether every balance reconciles with
    /// them; the community fund, bonds and escrow; the last reward epochs.
    Supply {
        #[command(flatten)]
        node: NodeUrl,
        /// Print the result as one JSON document on stdout.
        #[arg(long)]
        json: bool,
    },
    /// A home's energy, money, savings, rewards and devices (each device's latest sample where the
    /// node's gateway has one): signs in with the account's key; the owner's home, or one the
    /// owner granted to this account (`--owner`).
    Home {
        /// The account key that signs in.
        #[arg(long)]
        key: PathBuf,
        /// Whose home (default: the key's own).
        #[arg(long)]
        owner: Option<Address>,
        /// Slots up to the current one (96: a day; at most 2976, 31 days).
        #[arg(long, default_value_t = 96)]
        slots: u64,
        #[command(flatten)]
        node: NodeUrl,
        /// Print the result as one JSON document on stdout.
        #[arg(long)]
        json: bool,
    },
    /// A transaction by hash, with its receipt.
    Tx {
        /// The transaction's hash, 64 hex characters.
        hash: Hash32,
        #[command(flatten)]
        node: NodeUrl,
        /// Print the result as one JSON document on stdout.
        #[arg(long)]
        json: bool,
    },
}

pub(crate) fn run(q: QueryCommand) -> anyhow::Result<()> {
    match q {
        QueryCommand::Market { node, json } => {
            let m = Client::new(&node.node).market()?;
            if json {
                print_json(&m)?;
            } else {
                outln!(
                    "mechanism {}, gate closes {} min before delivery; current slot {}, next open slot {}",
                    m.mechanism, m.gate_closure_minutes, m.current_slot, m.next_open_slot
                );
                outln!(
                    "escrow {} holds {} tokens",
                    m.escrow_account,
                    m.escrow_balance
                );
            }
        }
        QueryCommand::Slot {
            slot,
            key,
            node,
            json,
        } => {
            let mut client = Client::new(&node.node);
            if let Some(path) = key {
                let key = crate::keyfile::load(&path)
                    .with_context(|| format!("loading the key {}", path.display()))?;
                client = client.signed_in(&key)?;
            }
            let v = client
                .market_slot(slot)?
                .ok_or_else(|| anyhow::anyhow!("slot {slot} has no orders"))?;
            if json {
                return print_json(&v);
            }
            outln!(
                "slot {} ({}), {} orders, mechanism {}",
                v.slot,
                v.status,
                v.orders,
                v.mechanism
            );
            outln!(
                "clearing price {} tokens/kWh, volume {} kWh, welfare {} of an optimal {}",
                v.clearing_price_per_kwh.as_deref().unwrap_or("-"),
                v.volume_kwh,
                v.welfare,
                v.optimal_welfare
            );
            for m in &v.markets {
                outln!(
                    "  market {:<24} {} kWh at {} tokens/kWh",
                    if m.area.is_empty() { "(root)" } else { &m.area },
                    m.volume_kwh,
                    m.price_per_kwh.as_deref().unwrap_or("-")
                );
            }
            for t in &v.trades {
                let s = t.settlement.as_ref().map_or("unsettled".to_string(), |s| {
                    format!(
                        "delivered {} kWh{}{}",
                        s.delivered_kwh,
                        if s.estimated { " (estimated)" } else { "" },
                        if s.is_final { "" } else { ", provisional" }
                    )
                });
                outln!(
                    "  #{} bid {} <- ask {}: {} kWh at {} (seller {}, fee {}): {s}",
                    t.index,
                    t.bid,
                    t.ask,
                    t.energy_kwh,
                    t.price_per_kwh,
                    t.seller_price_per_kwh,
                    t.fee_per_kwh
                );
            }
            if v.private_rows_hidden > 0 {
                outln!(
                    "  {} trades, bills and device readings of other members not shown (each member's are its own: --key to sign in)",
                    v.private_rows_hidden
                );
            }
        }
        QueryCommand::Status { node, json } => {
            let s = Client::new(&node.node).status()?;
            if json {
                return print_json(&s);
            }
            outln!(
                "chain {} at height {} (head {}, state root {}), {} pending, supply {} tokens",
                s.chain_id,
                s.height,
                s.head_hash,
                s.state_root,
                s.mempool_size,
                s.total_supply
            );
            if s.oldest_block > 1 {
                outln!(
                    "blocks 1 to {} were pruned (this node keeps the last blocks only)",
                    s.oldest_block - 1
                );
            }
        }
        QueryCommand::Account {
            address,
            node,
            json,
        } => {
            let a = Client::new(&node.node).account(&address)?;
            if json {
                return print_json(&a);
            }
            outln!(
                "{}: balance {} tokens, next nonce {}{}",
                a.checksummed,
                a.balance,
                a.nonce,
                if a.known {
                    ""
                } else {
                    " (the chain has never seen this address)"
                }
            );
        }
        QueryCommand::Pending {
            address,
            node,
            json,
        } => {
            let p = Client::new(&node.node).pending(&address)?;
            if json {
                return print_json(&p);
            }
            outln!(
                "{}: next nonce {}, {} ready, {} behind a missing nonce",
                address.checksummed(),
                p.next_nonce,
                p.ready.len(),
                p.gapped.len()
            );
            for (what, list) in [("ready", &p.ready), ("gapped", &p.gapped)] {
                for t in list {
                    outln!("  {what:6} nonce {:>6}  {}", t.nonce, t.hash);
                }
            }
        }
        QueryCommand::Block { height, node, json } => {
            let h = if height == "latest" {
                None
            } else {
                Some(height.parse::<u64>().with_context(|| {
                    format!("block height {height:?} is not a number or `latest`")
                })?)
            };
            let b = Client::new(&node.node)
                .block(h)?
                .with_context(|| format!("no block at height {height}"))?;
            if json {
                return print_json(&b);
            }
            outln!(
                "block {} {}\n  parent {}\n  time {} ms, proposer {}\n  tx root {}\n  state root {}\n  {} transactions",
                b.height, b.hash, b.parent_hash, b.timestamp_ms, b.proposer, b.tx_root, b.state_root, b.tx_count
            );
            for t in &b.txs {
                outln!(
                    "    {} {} nonce {}: {} {} tokens to {}",
                    t.hash,
                    t.sender,
                    t.nonce,
                    t.kind,
                    t.amount.as_deref().unwrap_or("-"),
                    t.to.as_deref().unwrap_or("-")
                );
            }
        }
        QueryCommand::Supply { node, json } => {
            let v = Client::new(&node.node).supply()?;
            if json {
                return print_json(&v);
            }
            outln!(
                "supply at block {}: genesis {} + minted {} - burned {} = {} tokens; balances sum to {} ({})",
                v.height,
                v.genesis,
                v.minted,
                v.burned,
                v.expected,
                v.accounted,
                if v.reconciled { "reconciled" } else { "NOT RECONCILED" }
            );
            outln!(
                "community fund {}, device bonds {}, escrow {}; emission cap {}",
                v.community_fund,
                v.device_bonds,
                v.escrow,
                v.emission_cap
            );
            for e in &v.epochs {
                outln!(
                    "epoch {}: minted {} of {} to {} owners; assets paid out {}",
                    e.epoch,
                    e.minted,
                    e.emission,
                    e.recipients,
                    e.asset_payouts
                );
            }
            if !v.reconciled {
                bail!("the supply does not reconcile");
            }
        }
        QueryCommand::Home {
            key,
            owner,
            slots,
            node,
            json,
        } => {
            let key = crate::keyfile::load(&key)?;
            let owner = owner.unwrap_or_else(|| key.address());
            let client = Client::new(&node.node);
            let token = client.sign_in(&key)?;
            let h = client.home(&owner, &token, slots)?;
            if json {
                return print_json(&h);
            }
            let t = &h.totals;
            let slot_start_ms = gridmesh_types::units::slot_start_ms;
            let period = if h.last_slot == 0 {
                "no slots yet (the chain has no block with a time)".to_string()
            } else {
                format!(
                    "from {} to {}",
                    gridmesh_types::units::utc(slot_start_ms(h.first_slot) / 1_000),
                    gridmesh_types::units::utc(slot_start_ms(h.last_slot + 1) / 1_000)
                )
            };
            outln!("home {}: balance {} tokens; {period}", h.address, h.balance);
            outln!(
                "  meter: imported {} kWh, exported {} kWh; from neighbours {} kWh, to neighbours {} kWh",
                t.import_kwh, t.export_kwh, t.bought_kwh, t.sold_kwh
            );
            outln!(
                "  bill {} tokens (utility only {}; saved {}); rewards {} tokens",
                t.bill,
                t.baseline_bill,
                t.savings,
                t.rewards
            );
            for d in &h.devices {
                let now = d.now.as_ref().map_or("no sample on this node".into(), |n| {
                    format!(
                        "{} W at {}",
                        n.power_w,
                        gridmesh_types::units::utc(n.time_ms / 1_000)
                    )
                });
                outln!(
                    "  device {} ({}, {} W, {}): now {}; readings {} accepted, {} pending, {} held",
                    d.device,
                    d.kind,
                    d.capacity_w,
                    d.status,
                    now,
                    d.readings_accepted,
                    d.readings_pending,
                    d.held.len()
                );
                for x in &d.held {
                    outln!("    slot {} held: {}", x.slot, x.reason);
                }
            }
        }
        QueryCommand::Tx { hash, node, json } => {
            let t = Client::new(&node.node)
                .tx(&hash)?
                .with_context(|| format!("transaction {hash} is unknown to the node"))?;
            if json {
                return print_json(&t);
            }
            outln!(
                "{} {}{}: {} {} tokens from {} to {}",
                t.hash,
                t.status,
                t.height
                    .map(|h| format!(" in block {h}"))
                    .unwrap_or_default(),
                t.tx.kind,
                t.tx.amount.as_deref().unwrap_or("-"),
                t.tx.sender,
                t.tx.to.as_deref().unwrap_or("-"),
            );
        }
    }
    Ok(())
}
