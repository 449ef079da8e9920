//! `gridmesh keys`: make and show keys.

use std::path::PathBuf;

use anyhow::bail;
use clap::Subcommand;
use gridmesh_ledger::Keypair;

use crate::output::print_json;

#[derive(Subcommand)]
pub(crate) enum KeysCommand {
    /// Make a new key file and print its address.
    New {
        /// Where to write the key file (refused if it exists).
        #[arg(long)]
        out: PathBuf,
        /// Print the result as one JSON document on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Print the address of a key file.
    Show {
        /// The key file.
        #[arg(long)]
        key: PathBuf,
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
                print_json(&serde_json::json!({ "address": k.address(), "key_file": out }))?;
            } else {
                eprintln!("wrote {} (keep it secret)", out.display());
                println!("{}", k.address());
            }
            Ok(())
        }
        KeysCommand::Show { key } => {
            println!("{}", Keypair::load(&key)?.address());
            Ok(())
        }
    }
}
