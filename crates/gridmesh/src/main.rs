//! The gridmesh command line. It parses arguments and wires the library crates together; the logic
//! lives in those crates.
//!
//! A command's result goes to stdout (one JSON document with `--json`, text for people
//! otherwise); progress, logs and errors go to stderr.

mod cli;
mod cmd;
mod keyfile;
mod output;

use clap::Parser;

use cli::{Cli, Command};

/// mimalloc rather than glibc's malloc: the ledger allocates and frees millions of small key/value
/// buffers per simulated day, and glibc's free lists fragment under that (BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let cli = Cli::parse();
    let default_level = match cli.command {
        Command::Node(_) | Command::Testnet(_) => "info",
        _ => "warn",
    };
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let logs = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter);
    match cli.log_format {
        cli::LogFormat::Json => logs.json().init(),
        // Colours only for a person at a terminal, not in a file or a pipe.
        cli::LogFormat::Text => logs.with_ansi(std::io::stderr().is_terminal()).init(),
    }
    if let Err(e) = run(cli) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

/// Hands the parsed command to its module.
fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Demo(a) => cmd::demo::run(a),
        Command::Node(a) => cmd::node::run(*a),
        Command::Testnet(a) => cmd::testnet::run(a),
        Command::Keys(c) => cmd::keys::run(c),
        Command::Genesis(c) => cmd::genesis::run(c),
        Command::Tx(c) => cmd::tx::run(c),
        Command::Query(c) => cmd::query::run(c),
        Command::Market(c) => cmd::market::run(c),
        Command::Grid(c) => cmd::grid::run(c),
        Command::Device(c) => cmd::device::run(c),
        Command::Openadr(c) => cmd::openadr::run(c),
        Command::Agent(a) => cmd::agent::run(a),
        Command::Home(c) => cmd::home::run(c),
        Command::Sim(a) => cmd::sim::run(a),
        Command::Bench(c) => cmd::bench::run(c),
        // Written whole through output::text, so that `| head` is no error.
        Command::Completions { shell } => {
            use clap::CommandFactory;
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "gridmesh", &mut script);
            output::text(format_args!("{}", String::from_utf8_lossy(&script)));
            Ok(())
        }
        Command::Man => {
            use clap::CommandFactory;
            let mut page = Vec::new();
            clap_mangen::Man::new(Cli::command()).render(&mut page)?;
            output::text(format_args!("{}", String::from_utf8_lossy(&page)));
            Ok(())
        }
    }
}
