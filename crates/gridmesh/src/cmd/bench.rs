//! `gridmesh bench`: performance measurements.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Subcommand;
use gridmesh_tools::bench;

use crate::output::print_json;

#[derive(Subcommand)]
pub(crate) enum BenchCommand {
    /// Home schedules (battery, EV, deferrable load over 96 slots): one home, then many over all
    /// cores.
    Agents {
        /// Homes planned over all cores.
        #[arg(long, default_value_t = 1_000)]
        homes: usize,
        /// Runs of the one home; the median is reported.
        #[arg(long, default_value_t = 21)]
        repeat: usize,
        /// Print the result as one JSON document on stdout.
        #[arg(long)]
        json: bool,
    },
    /// A community under every kind of agent over weeks of public weather and load data: bills,
    /// savings against utility-only homes, self-sufficiency, transformer peak, battery cycles.
    Community {
        /// Homes in the community.
        #[arg(long, default_value_t = 100)]
        homes: usize,
        /// Days simulated.
        #[arg(long, default_value_t = 30)]
        days: usize,
        /// Day of 2010 the study starts (0-based; 120 is 1 May).
        #[arg(long, default_value_t = 120)]
        first_day: usize,
        /// Seed of the homes drawn and their agents.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// The transformer's rating, kW.
        #[arg(long, default_value_t = 160.0)]
        transformer_kw: f64,
        /// Print the result as one JSON document on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Signed device telemetry verified and committed per second: the ingest pipeline alone and
    /// through a Mosquitto broker (MQTT, QoS 1), for each device count.
    Ingest {
        /// Device counts to measure, e.g. `1000,10000`.
        #[arg(long, value_delimiter = ',', default_value = "1000,10000")]
        devices: Vec<usize>,
        /// Seconds of one-per-second telemetry per device.
        #[arg(long, default_value_t = 20)]
        seconds: usize,
        /// Samples of one device per MQTT message.
        #[arg(long, default_value_t = 10)]
        per_message: usize,
        /// Samples verified and committed together.
        #[arg(long, default_value_t = 8_192)]
        batch_samples: usize,
        /// Skip the MQTT path.
        #[arg(long)]
        no_mqtt: bool,
        /// Print the result as one JSON document on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Unbalanced three-phase power flow on OpenDSS feeders (the shared IEEE 13 and European LV
    /// feeders and generated ones) beside OpenDSS and power-grid-model, and the European LV
    /// feeder's day beside OpenDSS's yearly mode.
    Feeder {
        /// Runs per case; the median is reported.
        #[arg(long, default_value_t = 50)]
        repeat: usize,
        /// Buses of the generated feeders.
        #[arg(long, value_delimiter = ',', default_value = "300,3000")]
        generated: Vec<usize>,
        /// Steps of the day (one minute each).
        #[arg(long, value_delimiter = ',', default_value = "360,1440")]
        day_steps: Vec<usize>,
        /// Skip OpenDSS and power-grid-model.
        #[arg(long)]
        no_peers: bool,
        /// Print the result as one JSON document on stdout.
        #[arg(long)]
        json: bool,
    },
    /// AC power flow on every MATPOWER case of the shared data and on a generated radial feeder,
    /// pandapower on the same cases side by side (Newton-Raphson, flat start, 1e-8 tolerance).
    Grid {
        /// Folder of MATPOWER `.m` cases (default: ../shared/data/grid).
        #[arg(long)]
        cases: Option<PathBuf>,
        /// Buses of the generated radial feeder (0 skips it).
        #[arg(long, default_value_t = 10_000)]
        radial_buses: usize,
        /// Runs per case; the median is reported.
        #[arg(long, default_value_t = 20)]
        repeat: usize,
        /// Skip pandapower.
        #[arg(long)]
        no_pandapower: bool,
        /// Print the result as one JSON document on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Clear one slot of n random orders with each mechanism; pymarket's Huang auction on the
    /// same orders side by side (from the interop venv, up to --pymarket-max orders).
    Market {
        /// Order counts of the slots cleared, e.g. `10000,100000`.
        #[arg(long, value_delimiter = ',', default_value = "10000,100000,1000000")]
        sizes: Vec<usize>,
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "pay-as-clear,pay-as-bid,pay-as-offer,huang,community"
        )]
        /// Mechanisms to clear with.
        mechanisms: Vec<gridmesh_market::Mechanism>,
        /// Runs per size and mechanism; the median is reported.
        #[arg(long, default_value_t = 3)]
        repeat: usize,
        /// Largest order set to give pymarket (its Huang auction grows quadratically).
        #[arg(long, default_value_t = 10_000)]
        pymarket_max: usize,
        /// Seconds before giving up on pymarket for one size.
        #[arg(long, default_value_t = 600)]
        pymarket_timeout: u64,
        /// Skip pymarket.
        #[arg(long)]
        no_pymarket: bool,
        /// Also run one slot of this many homes through real ledger blocks (orders, clearing,
        /// readings, settlement) and report each block's time; 0 skips it.
        #[arg(long, default_value_t = 10_000)]
        ledger_homes: usize,
        /// Print the result as one JSON document on stdout.
        #[arg(long)]
        json: bool,
    },
    /// The adversarial suite: the abuse review's attacks against this binary's node, one line per
    /// attack (tried, held or broke). Exits with an error if any attack broke the node.
    Attacks {
        /// The review's sizes (a 200,000-transaction pool, 10,200 challenges...) instead of the
        /// bounded ones `./scripts/test` runs.
        #[arg(long)]
        long: bool,
        /// Attack the node of another `gridmesh` binary (an older build, to compare) instead of
        /// this one's.
        #[arg(long, value_name = "PATH")]
        binary: Option<PathBuf>,
        /// Print the result as one JSON document on stdout.
        #[arg(long)]
        json: bool,
    },
    /// ed25519 verification limit and ledger throughput (mempool -> block -> redb), side by side.
    Ledger {
        /// Transfers offered.
        #[arg(long, default_value_t = 200_000)]
        txs: usize,
        /// Accounts they are spread over.
        #[arg(long, default_value_t = 10_000)]
        accounts: usize,
        /// Milliseconds between blocks.
        #[arg(long, default_value_t = 1000)]
        block_interval_ms: u64,
        /// Offer load at this fraction of the measured two-core batch-verification limit instead of
        /// as fast as possible (latency at a given load rather than at saturation).
        #[arg(long)]
        offered_load: Option<f64>,
        /// Print the result as one JSON document on stdout.
        #[arg(long)]
        json: bool,
    },
    /// BFT validators as processes on loopback vs one solo node, same load through the HTTP API:
    /// finalised transfers per second and submit-to-finalisation latency.
    Testnet {
        /// Network sizes to measure, e.g. `4,7`.
        #[arg(long, value_delimiter = ',', default_value = "4")]
        validators: Vec<usize>,
        /// Transfers offered.
        #[arg(long, default_value_t = 100_000)]
        txs: usize,
        /// Accounts they are spread over.
        #[arg(long, default_value_t = 10_000)]
        accounts: usize,
        /// Offer this many transactions per second instead of as many as the nodes take.
        #[arg(long)]
        offered_tps: Option<f64>,
        /// Skip the solo-node baseline.
        #[arg(long)]
        no_solo: bool,
        /// First port (p2p BASE+i, API BASE+100+i).
        #[arg(long, default_value_t = 27600)]
        base_port: u16,
        /// Print the result as one JSON document on stdout.
        #[arg(long)]
        json: bool,
    },
}

/// The interop venv's Python for a side-by-side comparison with `peer`, unless `--no-PEER` left
/// it out. A comparison asked for but impossible is an error, not a row quietly missing.
fn peer_python(skip: bool, peer: &str) -> anyhow::Result<Option<PathBuf>> {
    if skip {
        return Ok(None);
    }
    gridmesh_tools::interop_python().map(Some).with_context(|| {
        format!(
            "no interop venv for the {peer} comparison: run ./scripts/setup, or pass --no-{peer}"
        )
    })
}

pub(crate) fn run(command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Agents {
            homes,
            repeat,
            json,
        } => {
            let rows = gridmesh_tools::bench_agent::run(homes.max(1), repeat);
            for r in &rows {
                eprintln!("{r}");
            }
            let python = gridmesh_tools::interop_python();
            if python.is_none() {
                eprintln!("no interop venv: HiGHS left out of the solvers' comparison (run ./scripts/setup)");
            }
            let solvers = gridmesh_tools::bench_agent::solvers(200, python.as_deref())?;
            for r in &solvers {
                eprintln!("{r}");
            }
            if json {
                print_json(&serde_json::json!({ "homes": rows, "solvers": solvers }))?;
            }
            Ok(())
        }
        BenchCommand::Community {
            homes,
            days,
            first_day,
            seed,
            transformer_kw,
            json,
        } => {
            let cfg = gridmesh_agent::study::StudyConfig {
                homes,
                days,
                first_day,
                seed,
                transformer_kw,
                ..Default::default()
            };
            let results = gridmesh_tools::bench_agent::community_study(&cfg)?;
            eprint!("{}", gridmesh_agent::study::table(&cfg, &results));
            if json {
                print_json(&results)?;
            }
            Ok(())
        }
        BenchCommand::Ingest {
            devices,
            seconds,
            per_message,
            batch_samples,
            no_mqtt,
            json,
        } => {
            let mut rows = Vec::new();
            for n in devices {
                for row in gridmesh_tools::bench_ingest::run(
                    &gridmesh_tools::bench_ingest::IngestBenchOptions {
                        devices: n,
                        seconds,
                        per_message,
                        batch_samples,
                        mqtt: !no_mqtt,
                    },
                )? {
                    eprintln!("{row}");
                    rows.push(row);
                }
            }
            if json {
                print_json(&rows)?;
            }
            Ok(())
        }
        BenchCommand::Feeder {
            repeat,
            generated,
            day_steps,
            no_peers,
            json,
        } => {
            let python = peer_python(no_peers, "peers")?;
            let rows = gridmesh_tools::bench_feeder::run(
                &gridmesh_tools::bench_feeder::FeederBenchOptions {
                    repeat,
                    generated,
                    day_steps,
                    python,
                },
                |row| eprintln!("{row}"),
            )?;
            if json {
                print_json(&rows)?;
            }
            Ok(())
        }
        BenchCommand::Grid {
            cases,
            radial_buses,
            repeat,
            no_pandapower,
            json,
        } => {
            use gridmesh_tools::bench_grid;
            let cases = cases.or_else(|| {
                let d = bench_grid::shared_data_dir().join("grid");
                d.exists().then_some(d)
            });
            if cases.is_none() {
                eprintln!("no ../shared/data/grid: only the generated feeder is measured");
            }
            let python = peer_python(no_pandapower, "pandapower")?;
            let rows = bench_grid::run(
                &bench_grid::GridBenchOptions {
                    cases,
                    radial_buses,
                    repeat,
                    python,
                },
                |row| eprintln!("{row}"),
            )?;
            if json {
                print_json(&rows)?;
            }
            Ok(())
        }
        BenchCommand::Market {
            sizes,
            mechanisms,
            repeat,
            pymarket_max,
            pymarket_timeout,
            no_pymarket,
            ledger_homes,
            json,
        } => {
            let python = peer_python(no_pymarket, "pymarket")?;
            let rows = gridmesh_tools::bench_market::run(
                &gridmesh_tools::bench_market::MarketBenchOptions {
                    sizes,
                    mechanisms,
                    repeat,
                    python,
                    pymarket_max,
                    pymarket_timeout: Duration::from_secs(pymarket_timeout),
                },
                |line| eprintln!("{line}"),
            )?;
            let mut ledger = Vec::new();
            if ledger_homes > 0 {
                for m in [
                    gridmesh_market::Mechanism::PayAsClear,
                    gridmesh_market::Mechanism::Huang,
                ] {
                    eprintln!("one slot of {ledger_homes} homes through ledger blocks ({m})...");
                    let r = gridmesh_tools::bench_market::ledger_slot(ledger_homes, m)?;
                    eprintln!("{r}");
                    ledger.push(r);
                }
            }
            if json {
                print_json(&serde_json::json!({"clearing": rows, "ledger_slot": ledger}))?;
            }
            Ok(())
        }
        BenchCommand::Attacks { long, binary, json } => {
            let exe = match binary {
                Some(b) => b,
                None => std::env::current_exe().context("locating the gridmesh binary")?,
            };
            let scale = if long {
                gridmesh_tools::attacks::Scale::Long
            } else {
                gridmesh_tools::attacks::Scale::Bounded
            };
            let outcomes = gridmesh_tools::attacks::run(&exe, scale)?;
            if json {
                print_json(&outcomes)?;
            }
            let broke: Vec<&str> = outcomes
                .iter()
                .filter(|o| !o.held)
                .map(|o| o.attack)
                .collect();
            if !broke.is_empty() {
                anyhow::bail!("the node broke under: {}", broke.join(", "));
            }
            Ok(())
        }
        BenchCommand::Ledger {
            txs,
            accounts,
            block_interval_ms,
            offered_load,
            json,
        } => {
            let summary = bench::ledger_vs_limit(
                &bench::LedgerBenchOptions {
                    txs,
                    accounts,
                    block_interval: Duration::from_millis(block_interval_ms),
                    ..Default::default()
                },
                offered_load,
            )?;
            if json {
                print_json(&summary)?;
            } else {
                eprintln!("{summary}");
            }
            Ok(())
        }
        BenchCommand::Testnet {
            validators,
            txs,
            accounts,
            offered_tps,
            no_solo,
            base_port,
            json,
        } => {
            let exe = std::env::current_exe().context("locating the gridmesh binary")?;
            let sizes: Vec<usize> = (!no_solo)
                .then_some(0)
                .into_iter()
                .chain(validators)
                .collect();
            let mut reports = Vec::new();
            for n in sizes {
                eprintln!(
                    "measuring {} ({txs} transfers from {accounts} accounts)...",
                    if n == 0 {
                        "a solo node".to_string()
                    } else {
                        format!("{n} validators")
                    }
                );
                let r =
                    gridmesh_tools::bench_net::run(&gridmesh_tools::bench_net::NetBenchOptions {
                        exe: exe.clone(),
                        validators: n,
                        accounts,
                        txs,
                        offered_per_sec: offered_tps,
                        base_port,
                    })?;
                eprintln!("{r}");
                reports.push(r);
            }
            if let Some(solo) = reports.iter().find(|r| r.consensus == "solo") {
                for r in reports.iter().filter(|r| r.consensus == "bft") {
                    eprintln!(
                        "{} validators / solo: throughput {:.2}x, p99 latency {:.2}x",
                        r.validators,
                        r.finalized_per_sec / solo.finalized_per_sec,
                        r.latency_p99_ms / solo.latency_p99_ms.max(1e-9)
                    );
                }
            }
            if json {
                print_json(&reports)?;
            }
            Ok(())
        }
    }
}
