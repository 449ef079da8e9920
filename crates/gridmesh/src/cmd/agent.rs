//! `gridmesh agent`: a home's trading agent against a node's API.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};

use crate::cli::NodeUrl;
use crate::output::print_json;

#[derive(clap::Args)]
pub(crate) struct AgentArgs {
    /// The home's account key (it signs the orders).
    #[arg(long)]
    key: PathBuf,
    /// The home: location, household, PV, battery, EV (TOML).
    #[arg(long)]
    home: PathBuf,
    /// zero-intelligence, linear-ramp or optimising.
    #[arg(long, default_value = "optimising")]
    strategy: gridmesh_client::agent_runner::StrategyKind,
    /// Stop after this many slots (default: run until interrupted).
    #[arg(long)]
    slots: Option<u64>,
    /// The order window before gate closure, minutes of chain time (the ramp's span).
    #[arg(long, default_value_t = 60)]
    window_minutes: u64,
    /// No new orders this close to gate closure, seconds of chain time.
    #[arg(long, default_value_t = 120)]
    gate_margin_s: u64,
    /// Re-price when the price moved by at least this, tokens per kWh.
    #[arg(long, default_value_t = 0.01)]
    reprice: f64,
    /// Real time between looks at the market, ms.
    #[arg(long, default_value_t = 1_000)]
    poll_ms: u64,
    /// Seed of the zero-intelligence and ramp strategies' randomness.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[command(flatten)]
    node: NodeUrl,
    /// Print the result as one JSON document on stdout.
    #[arg(long)]
    json: bool,
}

pub(crate) fn run(a: AgentArgs) -> anyhow::Result<()> {
    use gridmesh_client::agent_runner as runner;
    let text = std::fs::read_to_string(&a.home)
        .with_context(|| format!("reading {}", a.home.display()))?;
    let home =
        runner::HomeSpec::parse(&text).with_context(|| format!("in {}", a.home.display()))?;
    if a.reprice.is_nan() || a.reprice < 0.0 || a.poll_ms == 0 {
        bail!("--reprice must be at least 0 and --poll-ms positive");
    }
    let data = runner::HomeData::reference(&home)?;
    let cfg = runner::AgentConfig {
        key: crate::keyfile::load(&a.key)?,
        node: a.node.node,
        strategy: a.strategy,
        slots: a.slots,
        window_ms: a.window_minutes.saturating_mul(60_000),
        gate_margin_ms: a.gate_margin_s.saturating_mul(1_000),
        reprice_per_kwh: a.reprice,
        poll: Duration::from_millis(a.poll_ms),
        seed: a.seed,
    };
    let mut home = runner::SyntheticHome::new(home, data);
    let report = runner::run(&cfg, &mut home, || false)?;
    eprintln!(
        "{} slots: {} orders placed, {} cancelled to re-price, {} refused{}",
        report.slots,
        report.placed,
        report.cancelled,
        report.refused,
        report
            .last_error
            .as_deref()
            .map_or(String::new(), |e| format!(" (last: {e})"))
    );
    if a.json {
        print_json(&report)?;
    }
    Ok(())
}
