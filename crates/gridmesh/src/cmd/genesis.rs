//! `gridmesh genesis`: build a community's genesis across machines. Each validator makes its
//! key on its own host and hands over only its public part (`genesis validator`); the operator
//! assembles the file (`genesis assemble`); everyone checks the hash (`genesis hash`) before
//! starting.

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Subcommand;
use gridmesh_ledger::genesis::{Genesis, GenesisAccount, GenesisValidator};
use gridmesh_types::{Address, Amount, HostPort};
use serde::{Deserialize, Serialize};

use crate::output::{outln, print_json};

#[derive(Subcommand)]
pub(crate) enum GenesisCommand {
    /// On a validator's host: print its entry for the genesis (public key and p2p address; the
    /// key file never leaves the host). Hand the output to whoever assembles the genesis.
    Validator {
        /// This validator's key file (made here with `gridmesh keys new`).
        #[arg(long)]
        key: PathBuf,
        /// Where the other validators reach this one: HOST:PORT, an IP or a host name.
        #[arg(long)]
        p2p_address: HostPort,
        /// Write the entry to this file instead of stdout.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Assemble a genesis from the validators' entries (and a base file with the market's and
    /// economics' rules, if any); checks it and prints its hash.
    Assemble {
        /// The community's chain id (letters, digits, `-`, `_`, `.`), unless --base has one.
        #[arg(long)]
        chain_id: Option<String>,
        /// A validator's entry from `genesis validator`; repeat for each.
        #[arg(long = "validator", value_name = "FILE", required = true)]
        validators: Vec<PathBuf>,
        /// An initial balance, ADDRESS=TOKENS; repeat for each.
        #[arg(long = "account", value_name = "ADDRESS=TOKENS")]
        accounts: Vec<String>,
        /// The chain's start, ms since the epoch [default: --base's, else now].
        #[arg(long)]
        timestamp_ms: Option<u64>,
        /// A genesis file whose accounts, [market] and [economics] are kept (its validators are
        /// replaced).
        #[arg(long)]
        base: Option<PathBuf>,
        /// Where to write the genesis (refused if it exists).
        #[arg(long)]
        out: PathBuf,
    },
    /// Print a genesis file's hash (the hash of block 0), for every operator to compare before
    /// starting their node.
    Hash {
        /// The genesis file.
        #[arg(long)]
        genesis: PathBuf,
        /// Print the result as one JSON document on stdout.
        #[arg(long)]
        json: bool,
    },
}

/// A validator's entry, as `genesis validator` writes it: one `[[validators]]` table.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    validators: Vec<GenesisValidator>,
}

#[derive(Serialize)]
struct HashView {
    chain_id: String,
    genesis_hash: String,
    validators: usize,
    accounts: usize,
    timestamp_ms: u64,
}

pub(crate) fn run(command: GenesisCommand) -> anyhow::Result<()> {
    match command {
        GenesisCommand::Validator {
            key,
            p2p_address,
            out,
        } => {
            let address = gridmesh_ledger::crypto::key_file_address(&key)?;
            let entry = Entry {
                validators: vec![GenesisValidator {
                    public_key: address,
                    p2p_address,
                    power: 1,
                }],
            };
            let text = format!(
                "# gridmesh genesis entry of validator {}\n{}",
                address.checksummed(),
                toml::to_string_pretty(&entry).expect("an entry serialises")
            );
            match out {
                Some(path) => {
                    if path.exists() {
                        bail!("{} already exists", path.display());
                    }
                    std::fs::write(&path, text)
                        .with_context(|| format!("writing {}", path.display()))?;
                    eprintln!(
                        "wrote {}: hand it to whoever assembles the genesis",
                        path.display()
                    );
                }
                None => print!("{text}"),
            }
            Ok(())
        }
        GenesisCommand::Assemble {
            chain_id,
            validators,
            accounts,
            timestamp_ms,
            base,
            out,
        } => {
            if out.exists() {
                bail!(
                    "{} already exists; refusing to overwrite a genesis",
                    out.display()
                );
            }
            let mut g = match &base {
                Some(path) => {
                    let text = std::fs::read_to_string(path)
                        .with_context(|| format!("reading {}", path.display()))?;
                    toml::from_str::<Genesis>(&text)
                        .with_context(|| format!("--base {}", path.display()))?
                }
                None => Genesis {
                    chain_id: String::new(),
                    timestamp_ms: 0,
                    accounts: vec![],
                    validators: vec![],
                    market: None,
                    economics: None,
                },
            };
            if let Some(id) = chain_id {
                g.chain_id = id;
            }
            if g.chain_id.is_empty() {
                bail!("no chain id: pass --chain-id ID (or a --base genesis that has one)");
            }
            g.timestamp_ms = match (timestamp_ms, base.is_some()) {
                (Some(t), _) => t,
                (None, true) => g.timestamp_ms,
                (None, false) => std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)?
                    .as_millis() as u64,
            };
            g.validators.clear();
            for path in &validators {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading the validator entry {}", path.display()))?;
                let entry: Entry = toml::from_str(&text).with_context(|| {
                    format!(
                        "{} is not a validator entry (as `gridmesh genesis validator` writes)",
                        path.display()
                    )
                })?;
                g.validators.extend(entry.validators);
            }
            for a in &accounts {
                let (address, tokens) = a
                    .split_once('=')
                    .with_context(|| format!("--account {a:?}: expected ADDRESS=TOKENS"))?;
                let address: Address = address
                    .parse()
                    .with_context(|| format!("--account {a:?}"))?;
                let balance: Amount = tokens
                    .parse()
                    .with_context(|| format!("--account {a:?}: the balance"))?;
                g.accounts.push(GenesisAccount { address, balance });
            }
            g.validate().context("the assembled genesis")?;
            let hash = g.block()?.0.hash();
            std::fs::write(&out, g.to_toml())
                .with_context(|| format!("writing {}", out.display()))?;
            eprintln!(
                "wrote {}: chain {}, {} validators, {} accounts",
                out.display(),
                g.chain_id,
                g.validators.len(),
                g.accounts.len()
            );
            outln!("genesis hash {hash}");
            Ok(())
        }
        GenesisCommand::Hash { genesis, json } => {
            let g = Genesis::load(&genesis)?;
            let view = HashView {
                chain_id: g.chain_id.clone(),
                genesis_hash: g.block()?.0.hash().to_string(),
                validators: g.validators.len(),
                accounts: g.accounts.len(),
                timestamp_ms: g.timestamp_ms,
            };
            if json {
                return print_json(&view);
            }
            outln!(
                "genesis hash {} (chain {}, {} validators, {} accounts, starting {})",
                view.genesis_hash,
                view.chain_id,
                view.validators,
                view.accounts,
                gridmesh_types::units::utc_text(view.timestamp_ms)
            );
            Ok(())
        }
    }
}
