//! The command line's grammar: the top-level commands and the arguments several share. Each
//! command's own arguments live beside what it does, in `crate::cmd`.

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

use crate::cmd::{
    agent, bench, demo, device, genesis, grid, home, keys, market, node, openadr, query, sim,
    testnet, tx,
};

pub(crate) const DEFAULT_NODE: &str = "http://127.0.0.1:8645";

#[derive(Parser)]
#[command(
    name = "gridmesh",
    version,
    about = "A node for community-owned energy networks"
)]
pub(crate) struct Cli {
    /// How logs are written on stderr: `text` for people, or `json`, one object a line, for a
    /// log collector (journald, Loki, Elasticsearch...).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "GRIDMESH_LOG_FORMAT")]
    pub(crate) log_format: LogFormat,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
pub(crate) enum Command {
    /// Run the demo: a simulated 100-home community on an embedded node, a day in about a minute.
    Demo(demo::DemoArgs),
    /// Run a node.
    Node(Box<node::NodeArgs>),
    /// Write and start a local BFT network of several validators (processes on 127.0.0.1).
    Testnet(testnet::TestnetArgs),
    /// Make and inspect keys.
    #[command(subcommand)]
    Keys(keys::KeysCommand),
    /// Build a community's genesis across machines: each validator's entry, the assembled
    /// file, and its hash for everyone to compare.
    #[command(subcommand)]
    Genesis(genesis::GenesisCommand),
    /// Sign and submit transactions.
    #[command(subcommand)]
    Tx(tx::TxCommand),
    /// Query a node.
    #[command(subcommand)]
    Query(query::QueryCommand),
    /// Energy market tools.
    #[command(subcommand)]
    Market(market::MarketCommand),
    /// Grid physics tools.
    #[command(subcommand)]
    Grid(grid::GridCommand),
    /// The node's OpenADR 3 VTN: register the VENs of grid operators, aggregators and homes.
    #[command(subcommand)]
    Openadr(openadr::OpenadrCommand),
    /// Device adapters: real hardware protocols into signed telemetry.
    #[command(subcommand)]
    Device(device::DeviceCommand),
    /// A home's energy agent: bids and asks for the next open slot from the home's forecasts
    /// and the strategy, placed and kept current through the node's API until gate closure.
    Agent(agent::AgentArgs),
    /// Run a home on its gateway: its devices, its plan and trades, its readings.
    #[command(subcommand)]
    Home(home::HomeCommand),
    /// Simulate a community from a scenario file (feeder, homes, devices, agents, market,
    /// outages) through the ledger, market and power flow on a simulated clock; writes KPIs (JSON,
    /// CSV), time series (CSV) and an HTML report into --out.
    Sim(sim::SimArgs),
    /// Measure performance.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Print the shell completion script for SHELL on stdout, e.g.
    /// `gridmesh completions bash > /etc/bash_completion.d/gridmesh`.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff) on stdout, e.g. `gridmesh man > gridmesh.1; man ./gridmesh.1`.
    Man,
}

#[derive(Args)]
pub(crate) struct NodeUrl {
    /// The node's API.
    #[arg(long, default_value = DEFAULT_NODE, env = "GRIDMESH_NODE")]
    pub(crate) node: String,
}

/// An `--mqtt HOST:PORT` argument.
pub(crate) fn broker_arg(broker: &str) -> anyhow::Result<(String, u16)> {
    broker
        .rsplit_once(':')
        .and_then(|(h, p)| Some((h.to_string(), p.parse::<u16>().ok()?)))
        .filter(|(h, _)| !h.is_empty())
        .with_context(|| format!("--mqtt {broker:?}: expected HOST:PORT, e.g. 127.0.0.1:1883"))
}

/// An energy in kWh from a flag, in mWh.
pub(crate) fn kwh_arg(text: &str, flag: &str) -> anyhow::Result<u64> {
    gridmesh_types::units::parse_kwh(text).with_context(|| format!("{flag} {text:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// Every command and flag says what it is for, in words for people: no flag without help,
    /// no help that points to a Rust module path (issue 24).
    #[test]
    fn every_command_and_flag_has_help_for_people() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            let here = format!("{path} {}", cmd.get_name()).trim().to_string();
            if cmd.get_about().is_none() && path.contains(' ') {
                missing.push(format!("{here}: no about"));
            }
            for arg in cmd.get_arguments() {
                let id = arg.get_id().as_str();
                if matches!(id, "help" | "version") {
                    continue;
                }
                match arg.get_help().map(|h| h.to_string()) {
                    None => missing.push(format!("{here} --{id}: no help")),
                    Some(h) if h.contains("::") || h.contains("gridmesh_") => {
                        missing.push(format!("{here} --{id}: a Rust path in {h:?}"))
                    }
                    Some(_) => {}
                }
            }
            for sub in cmd.get_subcommands() {
                walk(sub, &here, missing);
            }
        }
        let mut missing = Vec::new();
        walk(&Cli::command(), "", &mut missing);
        assert!(
            missing.is_empty(),
            "{} without help:\n{}",
            missing.len(),
            missing.join("\n")
        );
    }
}
