//! `gridmesh grid`: offline grid physics tools, and the PCC meter's report to a node.

use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;

use crate::output::emit;

#[derive(Subcommand)]
pub(crate) enum GridCommand {
    /// AC power flow: balanced (Newton-Raphson, sparse) on a MATPOWER case or a TOML feeder,
    /// with the lowest voltage, buses outside their band and branches over their rating; or
    /// unbalanced three-phase on an OpenDSS feeder (.dss), per bus and phase, with EN 50160's
    /// violations (outside 0.9-1.1 pu, unbalance above 2 %).
    Powerflow {
        /// A MATPOWER case file (.m, version 2), a feeder described in TOML (.toml), or an
        /// OpenDSS master script (.dss) and the files it redirects to.
        #[arg(long)]
        case: PathBuf,
        /// Print the result as JSON on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Quasi-static time series of an OpenDSS feeder through its loads' load shapes (as
    /// OpenDSS's yearly mode: step k at minute k × step): each step's lowest and highest node
    /// voltage, losses and power, and the run's totals.
    Timeseries {
        /// An OpenDSS master script (.dss).
        #[arg(long)]
        case: PathBuf,
        /// How many minutes to run.
        #[arg(long, default_value_t = 1440)]
        minutes: usize,
        /// Minutes per step.
        #[arg(long, default_value_t = 1.0)]
        step_minutes: f64,
        /// Print the result as JSON on stdout.
        #[arg(long)]
        json: bool,
    },
    /// PV hosting capacity of an OpenDSS feeder: per bus and phase, the most single-phase PV
    /// (unity power factor) that fits before a voltage (0.9-1.1 pu), unbalance (2 %), line or
    /// transformer limit binds, found by power flow with the regulators' taps as the case
    /// leaves them.
    HostingCapacity {
        /// An OpenDSS master script (.dss).
        #[arg(long)]
        case: PathBuf,
        /// Scale every load by this (PV's worst case is light load, e.g. 0.2); the case's own
        /// load multiplier without it.
        #[arg(long)]
        load_mult: Option<f64>,
        /// Every bus's phases, not only those homes (loads) are on.
        #[arg(long)]
        all_buses: bool,
        /// How close to the most that fits the answer is, in kW.
        #[arg(long, default_value_t = 0.1)]
        resolution_kw: f64,
        /// Print the result as JSON on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Per-phase operating envelopes of an OpenDSS feeder's single-phase homes: how much more
    /// each may import or export on its own phase with every node in its band (first order,
    /// shared among the homes that push a node the same way), both corners verified by power
    /// flow against voltage, unbalance and thermal limits.
    Envelopes {
        /// An OpenDSS master script (.dss).
        #[arg(long)]
        case: PathBuf,
        /// Scale every load by this first (the slot's forecast).
        #[arg(long)]
        load_mult: Option<f64>,
        /// Print the result as JSON on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Run an outage scenario (TOML, as examples/island/outage.toml) through the islanding
    /// controller: every transition, and per outage the energy not served, the share of critical
    /// load served, the minutes islanded and the lowest battery state.
    Island {
        /// The outage scenario file (TOML).
        #[arg(long)]
        scenario: PathBuf,
        /// Print the result as one JSON document on stdout.
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
            let key =
                crate::keyfile::load(&key).with_context(|| format!("loading {}", key.display()))?;
            gridmesh_client::client::Client::new(&node.node).pcc_report(&key, available)?;
            eprintln!(
                "reported the upstream grid {} to {}",
                if available { "available" } else { "gone" },
                node.node
            );
            Ok(())
        }
        GridCommand::Powerflow { case, json } => {
            if case
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("dss"))
            {
                let report = gridmesh_tools::grid_unbalanced::powerflow(&case)?;
                return emit(json, &report);
            }
            let report = gridmesh_tools::grid_report::powerflow(&case)?;
            emit(json, &report)
        }
        GridCommand::HostingCapacity {
            case,
            load_mult,
            all_buses,
            resolution_kw,
            json,
        } => {
            let report = gridmesh_tools::grid_unbalanced::hosting_capacity(
                &case,
                load_mult,
                all_buses,
                resolution_kw,
            )?;
            emit(json, &report)
        }
        GridCommand::Envelopes {
            case,
            load_mult,
            json,
        } => {
            let report = gridmesh_tools::grid_unbalanced::envelopes(&case, load_mult)?;
            emit(json, &report)
        }
        GridCommand::Timeseries {
            case,
            minutes,
            step_minutes,
            json,
        } => {
            let report = gridmesh_tools::grid_unbalanced::timeseries(&case, minutes, step_minutes)?;
            emit(json, &report)
        }
    }
}
