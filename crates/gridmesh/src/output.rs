//! What a command prints: its result on stdout, one JSON document with `--json` and text for
//! people otherwise (so that `gridmesh query account X | grep balance` works); progress, logs and
//! errors on stderr.

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

/// A result either as JSON (`--json`) or as its text for people, on stdout.
pub(crate) fn emit<T: Serialize + std::fmt::Display>(json: bool, v: &T) -> anyhow::Result<()> {
    if json {
        print_json(v)
    } else {
        text(format_args!("{v}"));
        Ok(())
    }
}

/// Writes a result's text to stdout; a closed pipe (`| head`) ends the output quietly.
pub(crate) fn text(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_fmt(args).and_then(|_| out.flush()) {
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            eprintln!("error: writing the result: {e}");
        }
    }
}

/// `println!` for a command's result: on stdout, a closed pipe not being an error.
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::output::text(format_args!("{}\n", format_args!($($arg)*)))
    };
}
pub(crate) use outln;
