//! `gridmesh demo`: the simulated community on an embedded node, or the scripted tour.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use gridmesh_node::DEFAULT_LISTEN;
use gridmesh_tools::demo;

use crate::cmd::runtime;
use crate::output::print_json;

/// `gridmesh demo`.
#[derive(clap::Args)]
pub(crate) struct DemoArgs {
    /// The scenario to run (default: the shipped 100-home community, examples/scenarios/community-100.toml).
    #[arg(long)]
    scenario: Option<PathBuf>,
    /// Simulated days (default 1: the day of the community's evening outage).
    #[arg(long)]
    days: Option<usize>,
    /// Wall-clock seconds per simulated day; 0 runs as fast as the machine allows.
    #[arg(long, default_value_t = 60.0)]
    day_seconds: f64,
    /// Override a scenario value, e.g. `--set battery.share=0.8` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Where the node's API listens (a free port is taken if this one is in use).
    #[arg(long, default_value = DEFAULT_LISTEN)]
    listen: std::net::SocketAddr,
    /// Keep the node serving its API after the run, until Ctrl-C.
    #[arg(long)]
    serve: bool,
    /// Also write the run's KPIs (JSON, CSV) and HTML report into DIR, as `gridmesh sim` does.
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// The scripted walkthrough instead: households, signed transfers, one market slot, refused
    /// transactions, the grid examples and devices with their own keys (about 15 s).
    #[arg(long)]
    tour: bool,
    /// Print the result as one JSON document on stdout.
    #[arg(long)]
    json: bool,
}

pub(crate) fn run(a: DemoArgs) -> anyhow::Result<()> {
    let listen = match std::net::TcpListener::bind(a.listen) {
        Ok(_) => a.listen,
        Err(e) => {
            eprintln!("{} is not free ({e}); taking a free port", a.listen);
            std::net::SocketAddr::new(a.listen.ip(), 0)
        }
    };
    if a.tour {
        let report = runtime()?.block_on(demo::run(listen, |line| eprintln!("{line}")))?;
        if a.json {
            print_json(&report)?;
        }
        return Ok(());
    }
    if !(a.day_seconds.is_finite() && (0.0..=86_400.0).contains(&a.day_seconds)) {
        bail!("--day-seconds must be between 0 and 86400");
    }
    let mut opts = gridmesh_tools::demo_community::DemoOptions {
        day_seconds: a.day_seconds,
        overrides: a.set,
        ..Default::default()
    };
    if let Some(path) = &a.scenario {
        opts.scenario =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        opts.base_dir = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
    }
    if let Some(days) = a.days {
        opts.overrides.push(format!("period.days={days}"));
    }
    gridmesh_tools::demo_community::scenario(&opts.scenario, &opts.overrides)
        .context("the demo's scenario")?;
    opts.listen = listen;
    opts.keep_serving = a.serve;
    opts.out = a.out.clone();
    let run = runtime()?.block_on(gridmesh_tools::demo_community::run(opts, |line| {
        eprintln!("{line}")
    }))?;
    if a.json {
        print_json(&run)?;
    }
    Ok(())
}
