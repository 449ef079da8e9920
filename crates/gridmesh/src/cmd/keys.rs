//! `gridmesh keys`: make and show keys.

use std::path::PathBuf;

use anyhow::{bail, Context};
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
        /// Encrypt the secret with a passphrase (typed twice, or from
        /// GRIDMESH_KEY_PASSPHRASE_FILE / GRIDMESH_KEY_PASSPHRASE).
        #[arg(long)]
        encrypt: bool,
        /// Print the result as one JSON document on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Encrypt a key file's secret with a passphrase, in place (the address stays readable).
    /// Every command then asks for the passphrase, or takes it from the file
    /// GRIDMESH_KEY_PASSPHRASE_FILE names (a node under systemd: LoadCredential).
    Encrypt {
        /// The key file.
        #[arg(long)]
        key: PathBuf,
    },
    /// Write a plain copy of an encrypted key file (for the dashboard's sign-in, which reads
    /// plain key files only). Refused if the copy exists.
    Decrypt {
        /// The encrypted key file.
        #[arg(long)]
        key: PathBuf,
        /// Where to write the plain copy.
        #[arg(long)]
        out: PathBuf,
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
        KeysCommand::New { out, encrypt, json } => {
            if out.exists() {
                bail!(
                    "{} already exists; refusing to overwrite a key",
                    out.display()
                );
            }
            let k = Keypair::generate();
            if encrypt {
                k.save_encrypted(&out, &crate::keyfile::new_passphrase(&out)?)?;
            } else {
                k.save(&out)?;
            }
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
        KeysCommand::Encrypt { key } => {
            if Keypair::is_encrypted_file(&key)? {
                bail!("{} is encrypted already", key.display());
            }
            let k = Keypair::load(&key)?;
            let passphrase = crate::keyfile::new_passphrase(&key)?;
            // Written beside it, then renamed over it: the plain file is never half replaced.
            let dir = key.parent().filter(|d| !d.as_os_str().is_empty());
            let tmp = tempfile::Builder::new()
                .prefix(".gridmesh-key-")
                .tempdir_in(dir.unwrap_or(std::path::Path::new(".")))?;
            let sealed = tmp.path().join("key");
            k.save_encrypted(&sealed, &passphrase)?;
            std::fs::rename(&sealed, &key)
                .with_context(|| format!("replacing {}", key.display()))?;
            eprintln!(
                "encrypted {} (keep the passphrase: without it the key is lost)",
                key.display()
            );
            Ok(())
        }
        KeysCommand::Decrypt { key, out } => {
            if out.exists() {
                bail!(
                    "{} already exists; refusing to overwrite a key",
                    out.display()
                );
            }
            let k = crate::keyfile::load(&key)?;
            k.save(&out)?;
            eprintln!("wrote {} in plain (keep it secret)", out.display());
            Ok(())
        }
        KeysCommand::Show { key, hex, json } => {
            let address = gridmesh_ledger::crypto::key_file_address(&key)?;
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
