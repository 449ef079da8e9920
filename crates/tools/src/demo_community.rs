//! `gridmesh demo`: a simulated community on an embedded node, in accelerated time.
//!
//! The simulator ([`gridmesh_sim`]) draws the community of a scenario (default: the shipped
//! 100-home community) and runs its homes' devices, agents and feeder; its chain is a real node
//! started in a temporary data directory: every member's reading and order is signed with the
//! member's key, admitted by the node's mempool, and committed by the node's solo engine in a
//! block at the slot's time ([`gridmesh_node::NodeConfig::driven`]), stored on disk and served by the
//! node's HTTP API while the day runs. The wall clock paces the run (a simulated day in about a
//! minute by default); at the end the run's KPIs are printed.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use gridmesh_ledger::{Keypair, SignedTx, State, TxKind, VerifiedTx};
use gridmesh_sim::kpi::LedgerKpis;
use gridmesh_sim::ledger::{refusal_reason, SimChain};
use gridmesh_sim::{Outcome, Scenario};
use gridmesh_types::units::slot_of;
use gridmesh_types::{Address, Hash32};

use gridmesh_node::{BlockDriver, NodeConfig, RunningNode, Shared};

/// The demo's default community.
pub const DEFAULT_SCENARIO: &str = include_str!("../../../examples/scenarios/community-100.toml");

/// What the demo runs unless told otherwise: one day, the one with the evening outage.
pub const DEFAULT_OVERRIDES: [&str; 2] = ["period.start=05-04", "period.days=1"];

/// Slots in a simulated day.
const SLOTS_PER_DAY: u64 = 96;

/// How to run the demo.
#[derive(Clone, Debug)]
pub struct DemoOptions {
    /// The scenario (TOML text) and the directory its relative paths start from.
    pub scenario: String,
    pub base_dir: PathBuf,
    /// `key=value` overrides, applied after [`DEFAULT_OVERRIDES`].
    pub overrides: Vec<String>,
    /// Wall-clock seconds per simulated day; 0 runs as fast as the machine allows.
    pub day_seconds: f64,
    /// Where the node's API listens.
    pub listen: SocketAddr,
    /// After the run, keep the node serving its API until Ctrl-C.
    pub keep_serving: bool,
    /// The run's directory: the members' key files (`keys/`) and, after the run, its KPIs and
    /// report. `None`: the keys go to the node's temporary data directory, gone with it.
    pub out: Option<PathBuf>,
}

impl Default for DemoOptions {
    fn default() -> Self {
        DemoOptions {
            scenario: DEFAULT_SCENARIO.to_string(),
            base_dir: PathBuf::from("."),
            overrides: Vec::new(),
            day_seconds: 60.0,
            listen: "127.0.0.1:0".parse().expect("a valid address"),
            keep_serving: false,
            out: None,
        }
    }
}

/// What the demo did.
#[derive(Debug, serde::Serialize)]
pub struct DemoRun {
    /// The node's API while it ran.
    pub api: String,
    pub wall_seconds: f64,
    /// The run's KPIs (the ledger part is the node's chain).
    pub outcome: Outcome,
}

/// The scenario the demo runs with `overrides`.
pub fn scenario(text: &str, overrides: &[String]) -> anyhow::Result<Scenario> {
    let all: Vec<String> = DEFAULT_OVERRIDES
        .iter()
        .map(|s| s.to_string())
        .chain(overrides.iter().cloned())
        .collect();
    Ok(Scenario::from_toml(text, &all)?)
}

/// Runs the demo: starts the node, runs the community, stops the node (after Ctrl-C with
/// [`DemoOptions::keep_serving`]). `say` hears progress: the API address once the node listens,
/// then a line every three simulated hours, then the KPIs.
pub async fn run(
    opts: DemoOptions,
    say: impl Fn(String) + Send + Sync + 'static,
) -> anyhow::Result<DemoRun> {
    let keep_serving = opts.keep_serving;
    let out = opts.out.clone();
    let say: Arc<dyn Fn(String) + Send + Sync> = Arc::new(say);
    let (node, run) = start(opts, say.clone()).await?;
    // The report is written when the run ends, not when the node stops serving.
    if let Some(dir) = &out {
        gridmesh_sim::report::write_run(&run.outcome, dir)
            .with_context(|| format!("writing the report into {}", dir.display()))?;
        say(format!("report: {}", dir.join("report.html").display()));
    }
    if keep_serving {
        say(format!(
            "the run is over; the node keeps serving {} until Ctrl-C",
            run.api
        ));
        tokio::signal::ctrl_c().await?;
    }
    node.stop().await?;
    Ok(run)
}

/// Starts the node, runs the community on it and returns the node still serving (the caller
/// stops it; its data directory lives as long as the node) with what the run did.
pub async fn start(
    opts: DemoOptions,
    say: Arc<dyn Fn(String) + Send + Sync>,
) -> anyhow::Result<(ServingNode, DemoRun)> {
    let s = scenario(&opts.scenario, &opts.overrides)?;
    let inputs = gridmesh_sim::data::load_scenario(&s, &opts.base_dir)?;
    let c = gridmesh_sim::community::build(&s, &inputs);
    let feeder = gridmesh_sim::feeder::build(&s.feeder, &c.buses, &opts.base_dir)?;
    let genesis = gridmesh_sim::engine::genesis(&s, &c)?;

    let dir = tempfile::tempdir().context("creating a temporary data directory")?;
    let genesis_path = dir.path().join("genesis.toml");
    std::fs::write(&genesis_path, genesis.to_toml())
        .with_context(|| format!("writing {}", genesis_path.display()))?;
    let mut cfg = NodeConfig::new(dir.path().join("node"));
    cfg.listen = opts.listen;
    cfg.genesis = Some(genesis_path);
    cfg.driven = true;
    // After the run the chain carries on in real time from the run's last block.
    cfg.block_interval = Duration::from_millis(200);
    let mut node = RunningNode::start(cfg).await?;
    let api = format!("http://{}", node.api_addr);
    say(format!(
        "gridmesh demo: {} ({} homes, {} day{} from {}), embedded node at {api}, chain {}",
        s.name,
        s.homes.count,
        s.period.days,
        if s.period.days == 1 { "" } else { "s" },
        s.period.start,
        genesis.chain_id
    ));
    say(format!(
        "  dashboard: {api}/ (live while the day runs; --serve keeps it up afterwards)"
    ));
    say(format!(
        "  a simulated day takes {}; members' readings and orders are signed, admitted by the mempool and committed by the node",
        if opts.day_seconds > 0.0 {
            format!("about {:.0} s", opts.day_seconds)
        } else {
            "as little as the machine allows".into()
        }
    ));
    // The members' key files, so that My home can be tried with the demo.
    let keys_dir = opts.out.as_deref().unwrap_or(dir.path()).join("keys");
    std::fs::create_dir_all(&keys_dir)
        .with_context(|| format!("creating {}", keys_dir.display()))?;
    let members: Vec<Keypair> = (0..s.homes.count)
        .map(|i| gridmesh_sim::ledger::member_key(s.seed, i))
        .collect();
    for (i, k) in members.iter().enumerate() {
        let path = keys_dir.join(format!("home-{:04}.key", i + 1));
        k.save(&path)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    say(format!(
        "  the members' key files: {} (home-0001.key ...); on My home, paste one's JSON to sign in as that member",
        keys_dir.display()
    ));
    let mut keys: HashMap<Address, Keypair> =
        members.into_iter().map(|k| (k.address(), k)).collect();
    let operator = gridmesh_sim::ledger::grid_operator_key(s.seed);
    keys.insert(operator.address(), operator);
    let chain = NodeChain {
        shared: node.shared.clone(),
        driver: node.driver.clone().context("a driven node has a driver")?,
        chain_id: genesis.chain_id.clone(),
        keys,
        per_slot: (opts.day_seconds > 0.0)
            .then(|| Duration::from_secs_f64(opts.day_seconds / SLOTS_PER_DAY as f64)),
        started: Instant::now(),
        blocks: 0,
        transactions: 0,
        rejected: BTreeMap::new(),
        in_flight: Vec::new(),
        say: say.clone(),
    };
    let started = Instant::now();
    let result = tokio::task::spawn_blocking(move || {
        let mut chain = chain;
        gridmesh_sim::engine::run_on(&s, &c, &feeder, &mut chain, &mut |_, _| {})
    })
    .await?;
    let wall_seconds = started.elapsed().as_secs_f64();
    // The simulator's driver is gone with its chain; dropping this one lets the node's engine
    // carry on on its own clock (orders placed on the dashboard still clear and settle).
    node.driver = None;
    let node = ServingNode { node, _dir: dir };
    let outcome = match result {
        Ok(o) => o,
        Err(e) => {
            node.stop().await?;
            return Err(e.into());
        }
    };
    for line in gridmesh_sim::report::summary(&outcome).lines() {
        say(line.to_string());
    }
    Ok((
        node,
        DemoRun {
            api,
            wall_seconds,
            outcome,
        },
    ))
}

/// The demo's node and its temporary data directory.
pub struct ServingNode {
    pub node: RunningNode,
    _dir: tempfile::TempDir,
}

impl ServingNode {
    pub async fn stop(self) -> anyhow::Result<()> {
        self.node.stop().await
    }
}

/// A running node's chain, driven by the simulator.
struct NodeChain {
    shared: Arc<Shared>,
    driver: BlockDriver,
    chain_id: String,
    keys: HashMap<Address, Keypair>,
    /// Wall time per slot, if paced.
    per_slot: Option<Duration>,
    started: Instant,
    blocks: u32,
    transactions: u64,
    rejected: BTreeMap<String, u64>,
    /// Admitted transactions of the last block, to learn which the block refused.
    in_flight: Vec<Hash32>,
    say: Arc<dyn Fn(String) + Send + Sync>,
}

impl NodeChain {
    /// A line on what the block at `timestamp_ms` did, every three simulated hours.
    fn report(&self, timestamp_ms: u64) {
        let slot = slot_of(timestamp_ms);
        if slot % 12 != 0 {
            return;
        }
        let (height, line) = {
            let chain = self.shared.chain.read().expect("chain lock");
            let record = gridmesh_ledger::readers::MarketReader::slot_record(chain.state(), slot);
            let line = match record {
                Some(r) => {
                    let (value, volume) = r
                        .markets
                        .iter()
                        .filter_map(|m| {
                            Some((m.price_per_kwh? as f64 * m.volume_mwh as f64, m.volume_mwh))
                        })
                        .fold((0.0, 0), |(v, q), (mv, mq)| (v + mv, q + mq));
                    format!(
                        "{} orders, {:.1} kWh traded{}{}",
                        r.orders,
                        r.volume_mwh as f64 / 1e6,
                        if volume > 0 {
                            format!(" at {:.3} tokens/kWh", value / volume as f64 / 1e6)
                        } else {
                            String::new()
                        },
                        if r.island { ", islanded" } else { "" }
                    )
                }
                None => "no orders".into(),
            };
            (chain.head().height, line)
        };
        let minutes = (slot % SLOTS_PER_DAY) * 15;
        (self.say)(format!(
            "  {:02}:{:02} UTC  block {height:>4}  {:>6} transactions  {line}",
            minutes / 60,
            minutes % 60,
            self.transactions
        ));
    }
}

impl SimChain for NodeChain {
    type Tx = VerifiedTx;

    fn tx(&self, sender: Address, pending: u64, kind: TxKind) -> Option<VerifiedTx> {
        let key = self.keys.get(&sender)?;
        let nonce = self
            .shared
            .chain
            .read()
            .expect("chain lock")
            .account(&sender)
            .nonce
            + pending;
        SignedTx::new(key, &self.chain_id, nonce, kind)
            .verify()
            .ok()
    }

    fn block(&mut self, txs: Vec<VerifiedTx>, timestamp_ms: u64) -> Result<(), String> {
        {
            // Lock order as everywhere: chain, then mempool.
            let chain = self.shared.chain.read().expect("chain lock");
            let mut mempool = self.shared.mempool.lock().expect("mempool lock");
            self.in_flight.clear();
            for tx in txs {
                let account = chain.account(&tx.sender());
                match mempool.insert(tx, account) {
                    Ok(a) => self.in_flight.push(a.hash),
                    Err(e) => *self.rejected.entry(refusal_reason(&e)).or_insert(0) += 1,
                }
            }
        }
        if let Some(per_slot) = self.per_slot {
            let due = self.started + per_slot * self.blocks;
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
        }
        self.driver
            .block_at(timestamp_ms)
            .map_err(|e| e.to_string())?;
        self.blocks += 1;
        let mempool = self.shared.mempool.lock().expect("mempool lock");
        for h in &self.in_flight {
            if let Some(why) = mempool.rejection(h) {
                *self.rejected.entry(refusal_reason(&why)).or_insert(0) += 1;
            } else if !mempool.contains(h) {
                self.transactions += 1;
            }
        }
        drop(mempool);
        self.report(timestamp_ms);
        Ok(())
    }

    fn wants_feeder(&self) -> bool {
        true
    }

    fn feeder(&mut self, snapshot: gridmesh_grid::snapshot::Snapshot) {
        gridmesh_node::api_feeder::FeederLive::push(&self.shared.feeder, snapshot);
    }

    fn read<R>(&self, f: impl FnOnce(&State) -> R) -> R {
        f(self.shared.chain.read().expect("chain lock").state())
    }

    fn kpis(&self) -> LedgerKpis {
        let chain = self.shared.chain.read().expect("chain lock");
        LedgerKpis::of(
            &self.chain_id,
            chain.head(),
            chain.state(),
            self.transactions,
            &self.rejected,
        )
    }
}
