//! `gridmesh grid`: offline grid physics tools, and the PCC meter's report to a node.

use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;

use crate::output::emit;

#[derive(Subcommand)]
pub(crate) enum GridCommand {
    /// AC power flow (Newton-Raphson, sparse) on a MATPOWER case or a TOML feeder: voltages,
    /// losses, the lowest voltage, buses outside their band and branches over their rating.
    Powerflow {
        /// A MATPOWER case file (.m, version 2) or a feeder (.toml, see `gridmesh_grid::feeder`).
        #[arg(long)]
        case: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Run an outage scenario (TOML, see `gridmesh_grid::outage`) through the islanding
    /// controller: every transition, and per outage the energy not served, the share of critical
    /// load served, the minutes islanded and the lowest battery state.
    Island {
        #[arg(long)]
        scenario: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Report the upstream grid to a node running the grid operator service, as the PCC meter's
    /// gateway does: signed with the meter's device key (or the grid operator's), timestamped
    /// now. From the node's own machine.
    Pcc {
        /// The PCC meter's device key (a meter the grid operator registered) or the grid
        /// operator's key.
        #[arg(long)]
        key: PathBuf,
        /// Whether the upstream grid is there: `true` or `false` (an outage).
        #[arg(long, action = clap::ArgAction::Set)]
        available: bool,
        #[command(flatten)]
        node: crate::cli::NodeUrl,
    },
}

pub(crate) fn run(command: GridCommand) -> anyhow::Result<()> {
    match command {
        GridCommand::Island { scenario, json } => {
            let report = gridmesh_tools::grid_report::island(&scenario)?;
            emit(json, &report)
        }
        GridCommand::Pcc {
            key,
            available,
            node,
        } => {
            let key = gridmesh_ledger::Keypair::load(&key)
                .with_context(|| format!("loading {}", key.display()))?;
            gridmesh_client::client::Client::new(&node.node).pcc_report(&key, available)?;
            eprintln!(
                "reported the upstream grid {} to {}",
                if available { "available" } else { "gone" },
                node.node
            );
            Ok(())
        }
        GridCommand::Powerflow { case, json } => {
            let report = gridmesh_tools::grid_report::powerflow(&case)?;
            emit(json, &report)
        }
    }
}
