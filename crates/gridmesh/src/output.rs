//! What a command prints: one JSON document on stdout with `--json`, text for people otherwise
//! (on stderr, with progress; a bare result such as an address on stdout).

use serde::Serialize;

/// Writes one JSON document to stdout. A closed pipe (`| head`) is not an error.
pub(crate) fn print_json<T: Serialize>(v: &T) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let text = serde_json::to_string_pretty(v)?;
    match writeln!(out, "{text}").and_then(|_| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => Ok(r?),
    }
}

/// A result either as JSON (`--json`) or as its text for people, on stderr.
pub(crate) fn emit<T: Serialize + std::fmt::Display>(json: bool, v: &T) -> anyhow::Result<()> {
    if json {
        print_json(v)
    } else {
        eprint!("{v}");
        Ok(())
    }
}
