//! `gridmesh home`: run a home (its devices, plan, trades and readings), write its config, show
//! its status.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{bail, Context};
use clap::Subcommand;

use crate::cmd::{runtime, shutdown_signal};
use crate::output::print_json;

#[derive(Subcommand)]
pub(crate) enum HomeCommand {
    /// Run the home: read its devices, plan and trade through the node, drive the battery and
    /// PV, report each slot's signed readings; local self-consumption while the node is away.
    Run {
        /// The home's config (`gridmesh home init` writes one).
        #[arg(long, default_value = "home.toml")]
        config: PathBuf,
        /// Stop after this many slots were measured whole (default: run until interrupted).
        #[arg(long)]
        slots: Option<u64>,
        /// Print the run's summary as JSON when it ends.
        #[arg(long)]
        json: bool,
    },
    /// Write a commented config for a home.
    Init {
        /// Where to write it (refuses to overwrite).
        #[arg(long, default_value = "home.toml")]
        out: PathBuf,
        /// A SunSpec device (Modbus TCP `HOST:PORT`) to walk and fill in; repeat for each.
        #[arg(long, value_name = "HOST:PORT")]
        discover: Vec<std::net::SocketAddr>,
    },
    /// What a running home is doing: devices now, setpoints, the plan versus what was measured
    /// today, the latest orders and the readings' fate.
    Status {
        /// The home's config file (the one `home run` uses).
        #[arg(long, default_value = "home.toml")]
        config: PathBuf,
        /// Print the result as one JSON document on stdout.
        #[arg(long)]
        json: bool,
    },
}

pub(crate) fn run(command: HomeCommand) -> anyhow::Result<()> {
    match command {
        HomeCommand::Run {
            config,
            slots,
            json,
        } => {
            let cfg = gridmesh_home::HomeConfig::load(&config)?;
            let stop = Arc::new(AtomicBool::new(false));
            let flag = stop.clone();
            std::thread::Builder::new()
                .name("signals".into())
                .spawn(move || {
                    if let Ok(rt) = runtime() {
                        rt.block_on(shutdown_signal());
                        flag.store(true, Ordering::Relaxed);
                    }
                })?;
            eprintln!(
                "gridmesh home for {} on {}: status in {}",
                cfg.home.location,
                cfg.node,
                cfg.data_dir
                    .join(gridmesh_home::status::STATUS_FILE)
                    .display()
            );
            let report = gridmesh_home::run(&cfg, &stop, slots)?;
            eprintln!(
                "{} slots measured ({} on plan), {} readings committed, {} refused, {} orders placed",
                report.slots,
                report.planned_slots,
                report.readings_committed,
                report.readings_refused,
                report.orders_placed
            );
            if json {
                print_json(&report)?;
            }
            Ok(())
        }
        HomeCommand::Init { out, discover } => {
            if out.exists() {
                bail!("{} exists: not overwritten (choose --out)", out.display());
            }
            let mut found = String::new();
            if discover.is_empty() {
                found = gridmesh_home::config::UNDISCOVERED.to_string();
            } else {
                let rt = runtime()?;
                for addr in &discover {
                    found += &rt
                        .block_on(gridmesh_home::config::discover(*addr))
                        .with_context(|| format!("discovering {addr}"))?;
                }
                if !found.contains("[grid_meter]") {
                    found += "# The connection's meter: a SunSpec meter (models 201-204), positive W importing.\n[grid_meter]\nsunspec = \"192.168.1.21:502\"\nunit = 1\n";
                }
            }
            std::fs::write(&out, gridmesh_home::config::template(&found))
                .with_context(|| format!("writing {}", out.display()))?;
            eprintln!(
                "wrote {}: edit node, key, [home] and the devices, then `gridmesh home run --config {}`",
                out.display(),
                out.display()
            );
            Ok(())
        }
        HomeCommand::Status { config, json } => {
            let cfg = gridmesh_home::HomeConfig::load(&config)?;
            let s = gridmesh_home::read_status(&cfg.data_dir)?;
            if json {
                return print_json(&s);
            }
            print!("{}", gridmesh_home::status::human(&s));
            Ok(())
        }
    }
}
