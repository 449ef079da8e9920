//! Key files at the command line: an encrypted one asks for its passphrase on a terminal when
//! the environment does not give it (see [`gridmesh_ledger::crypto::Keypair::load`]).

use std::io::IsTerminal;
use std::path::Path;

use anyhow::{bail, Context};
use gridmesh_ledger::crypto::{KeyFileError, PASSPHRASE_ENV, PASSPHRASE_FILE_ENV};
use gridmesh_ledger::Keypair;

/// The shortest passphrase a new encrypted key file takes.
pub(crate) const MIN_PASSPHRASE_CHARS: usize = 8;

/// Loads a key file; an encrypted one without a passphrase in the environment asks for it on
/// the terminal.
pub(crate) fn load(path: &Path) -> anyhow::Result<Keypair> {
    match Keypair::load(path) {
        Err(KeyFileError::Locked { .. }) if std::io::stdin().is_terminal() => {
            let passphrase =
                rpassword::prompt_password(format!("passphrase of {}: ", path.display()))
                    .context("reading the passphrase from the terminal")?;
            Ok(Keypair::load_with(path, Some(&passphrase))?)
        }
        other => Ok(other?),
    }
}

/// The passphrase for a key file being encrypted: from the environment, else typed twice on
/// the terminal.
pub(crate) fn new_passphrase(path: &Path) -> anyhow::Result<String> {
    let from_env = gridmesh_ledger::crypto::passphrase_from_env()?;
    let passphrase = match from_env {
        Some(p) => p,
        None if std::io::stdin().is_terminal() => {
            let first =
                rpassword::prompt_password(format!("new passphrase for {}: ", path.display()))?;
            let again = rpassword::prompt_password("the same again: ")?;
            if first != again {
                bail!("the two passphrases differ; nothing was written");
            }
            first
        }
        None => bail!(
            "no passphrase: not on a terminal, and neither {PASSPHRASE_FILE_ENV} nor \
             {PASSPHRASE_ENV} is set"
        ),
    };
    if passphrase.chars().count() < MIN_PASSPHRASE_CHARS {
        bail!(
            "the passphrase is shorter than {MIN_PASSPHRASE_CHARS} characters; nothing was written"
        );
    }
    Ok(passphrase)
}
