//! `gridmesh market`: offline market tools.

use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;

use crate::output::emit;

#[derive(Subcommand)]
pub(crate) enum MarketCommand {
    /// Clear one slot's orders offline with the ledger's clearing code.
    ///
    /// The file holds {"orders": [{"id", "side": "bid"|"ask", "energy_kwh", "price_per_kwh",
    /// "location"?, "time"?}], "tariff"?: {"retail_per_kwh", "feed_in_per_kwh"}, "grid_fees"?:
    /// [{"constant_per_kwh"?, "percent"?}, ...root first]}; numbers may be decimal strings.
    Clear {
        /// The order file (JSON); `-` reads stdin.
        #[arg(long)]
        orders: PathBuf,
        /// pay-as-clear, pay-as-bid, pay-as-offer, huang or community.
        #[arg(long, default_value = "pay-as-clear")]
        mechanism: gridmesh_market::Mechanism,
        /// The feeder (TOML, as examples/congestion/feeder.toml) whose buses the orders' locations name:
        /// clear without and with its operating envelopes, check both by power flow, and report
        /// the welfare the grid's limits cost.
        #[arg(long)]
        feeder: Option<PathBuf>,
        /// Slot length for the envelopes' energy.
        #[arg(long, default_value_t = 15)]
        slot_minutes: u32,
        /// Print the result as one JSON document on stdout.
        #[arg(long)]
        json: bool,
    },
}

pub(crate) fn run(command: MarketCommand) -> anyhow::Result<()> {
    match command {
        MarketCommand::Clear {
            orders,
            mechanism,
            feeder,
            slot_minutes,
            json,
        } => {
            let text = if orders.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin()).context("reading orders from stdin")?
            } else {
                std::fs::read_to_string(&orders)
                    .with_context(|| format!("reading {}", orders.display()))?
            };
            let set = gridmesh_tools::market_file::OrderSet::parse(&text)
                .with_context(|| format!("in {}", orders.display()))?;
            if let Some(path) = feeder {
                if !(1..=1440).contains(&slot_minutes) {
                    anyhow::bail!("--slot-minutes {slot_minutes} must be 1 to 1440");
                }
                let text = std::fs::read_to_string(&path)
                    .with_context(|| format!("reading {}", path.display()))?;
                let feeder = gridmesh_grid::Feeder::from_toml(&text)
                    .with_context(|| format!("in {}", path.display()))?;
                let report = gridmesh_tools::grid_market::clear_on_feeder(
                    &set,
                    &feeder,
                    mechanism,
                    slot_minutes,
                )?;
                return emit(json, &report);
            }
            let report = set.clear(mechanism)?;
            emit(json, &report)
        }
    }
}
