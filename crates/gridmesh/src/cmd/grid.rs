//! `gridmesh grid`: offline grid physics tools.

use std::path::PathBuf;

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
}

pub(crate) fn run(command: GridCommand) -> anyhow::Result<()> {
    match command {
        GridCommand::Island { scenario, json } => {
            let report = gridmesh_tools::grid_report::island(&scenario)?;
            emit(json, &report)
        }
        GridCommand::Powerflow { case, json } => {
            let report = gridmesh_tools::grid_report::powerflow(&case)?;
            emit(json, &report)
        }
    }
}
