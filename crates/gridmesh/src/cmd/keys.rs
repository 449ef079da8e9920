//! `gridmesh keys`: make and show keys.

use std::path::PathBuf;

use anyhow::bail;
use clap::Subcommand;
use gridmesh_ledger::Keypair;

use crate::output::print_json;

#[derive(Subcommand)]
pub(crate) enum KeysCommand {
    /// Make a new key file and print its address (checksummed, `gm1…`).
    New {
        /// Where to write the key file (refused if it exists).
        #[arg(long)]
        out: PathBuf,
        /// Print the result as one JSON document on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Print the address of a key file (checksummed, `gm1…`; --hex for 64 hex characters).
    Show {
        /// The key file.
        #[arg(long)]
        key: PathBuf,
        /// Print the address as 64 hex characters instead.
        #[arg(long, conflicts_with = "json")]
        hex: bool,
        /// Print both forms as one JSON document on stdout.
        #[arg(long)]
        json: bool,
    },
}

pub(crate) fn run(command: KeysCommand) -> anyhow::Result<()> {
    match command {
        KeysCommand::New { out, json } => {
            if out.exists() {
                bail!(
                    "{} already exists; refusing to overwrite a key",
                    out.display()
                );
            }
            let k = Keypair::generate();
            k.save(&out)?;
            if json {
                print_json(&serde_json::json!({
                    "address": k.address(),
                    "checksummed": k.address().checksummed(),
                    "key_file": out,
                }))?;
            } else {
                eprintln!("wrote {} (keep it secret)", out.display());
                println!("{}", k.address().checksummed());
            }
            Ok(())
        }
        KeysCommand::Show { key, hex, json } => {
            let address = Keypair::load(&key)?.address();
            if json {
                print_json(&serde_json::json!({
                    "address": address,
                    "checksummed": address.checksummed(),
                }))?;
            } else if hex {
                println!("{address}");
            } else {
                println!("{}", address.checksummed());
            }
            Ok(())
        }
    }
}
