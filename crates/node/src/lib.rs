//! The gridmesh node: opens the chain, runs a consensus engine over it and serves the HTTP API.
//!
//! ```text
//! HTTP API (axum) ──submit──▶ Mempool ◀──select── engine ──propose/finalize──▶ Chain (redb)
//!        │                      ▲                  (solo, or BFT: simplex with the other
//!        │                      └── gossip ◀──▶ p2p   validators, see gridmesh-bft)
//!        └──────────────────────── reads ───────────────────────────────────▶ Chain, Store
//! ```
//!
//! The engine is chosen by the genesis: no validators, the solo engine; validators, BFT consensus
//! (the node must then be given a validator key of the set).

pub mod api;
pub mod api_dashboard;
pub mod api_economics;
pub mod api_feeder;
pub mod api_gateway;
pub mod api_home;
pub mod config;
pub mod dashboard;
pub mod device_gateway;
pub mod events;
pub mod grid_operator;
pub mod metrics;
pub mod openadr;
pub mod serve;
pub mod submitter;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex, RwLock};
use std::time::Duration;

use anyhow::{bail, Context};
use gridmesh_consensus::solo::{SoloConfig, SoloEngine};
use gridmesh_consensus::LedgerApp;
use gridmesh_ledger::{Chain, Genesis, Keypair, Mempool, MempoolConfig};
use gridmesh_types::Address;

/// File name of the development faucet key inside the data directory.
pub const FAUCET_KEY_FILE: &str = "faucet.key";
/// File name of the node's own key (its proposer identity).
pub const NODE_KEY_FILE: &str = "node.key";
/// Default API address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8645";
/// Default most transactions per block.
pub const DEFAULT_MAX_BLOCK_TXS: usize = 100_000;

/// Everything a node needs to start.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    /// A genesis file; `None` means development mode (a faucet key in the data dir gets the supply).
    pub genesis: Option<PathBuf>,
    pub block_interval: Duration,
    pub empty_blocks: bool,
    pub max_block_txs: usize,
    pub mempool: MempoolConfig,
    /// Bounds of the API's connections.
    pub http: serve::ServerLimits,
    /// Serve the API over TLS with this certificate and key.
    pub tls: Option<serve::TlsFiles>,
    /// BFT: this validator's key file (its key must be in the genesis validator set).
    pub validator_key: Option<PathBuf>,
    /// BFT: where to accept p2p connections (default: this validator's address in the genesis;
    /// required for a full node).
    pub p2p_listen: Option<SocketAddr>,
    /// BFT: full nodes allowed to connect (a validator lists the full nodes that follow it).
    pub peers: Vec<config::Peer>,
    /// Solo engine: block time runs this many times faster than the wall clock (simulations,
    /// demos, tests of 15-minute market slots). 1 on a real chain.
    pub time_scale: u32,
    /// Solo engine: blocks are produced when [`RunningNode::driver`] asks, at the time it names
    /// (the simulator's clock; the demo), instead of on the interval.
    pub driven: bool,
    /// Run the grid operator's service (envelopes before every gate closure, islanding events).
    pub grid_operator: Option<grid_operator::GridOperatorConfig>,
    /// Run a device gateway (MQTT telemetry and slot readings).
    pub device_gateway: Option<device_gateway::DeviceGatewayConfig>,
    /// Keep only this many of the last blocks (and genesis); `None`: every block.
    pub keep_blocks: Option<u64>,
}

/// The smallest window of blocks a node may keep: a client or peer a few minutes behind still finds
/// what it asks for.
pub const MIN_KEEP_BLOCKS: u64 = 1_000;

impl NodeConfig {
    pub fn new(data_dir: impl Into<PathBuf>) -> NodeConfig {
        NodeConfig {
            data_dir: data_dir.into(),
            listen: DEFAULT_LISTEN.parse().expect("valid default address"),
            genesis: None,
            block_interval: Duration::from_secs(1),
            empty_blocks: false,
            max_block_txs: DEFAULT_MAX_BLOCK_TXS,
            mempool: MempoolConfig::default(),
            http: serve::ServerLimits::default(),
            tls: None,
            validator_key: None,
            p2p_listen: None,
            peers: Vec::new(),
            time_scale: 1,
            driven: false,
            grid_operator: None,
            device_gateway: None,
            keep_blocks: None,
        }
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        if self.block_interval < Duration::from_millis(10)
            || self.block_interval > Duration::from_secs(3600)
        {
            bail!(
                "block interval {:?} is out of range (10 ms to 1 hour)",
                self.block_interval
            );
        }
        if let Some(keep) = self.keep_blocks.filter(|k| *k < MIN_KEEP_BLOCKS) {
            bail!("keep_blocks {keep} is too few: keep at least {MIN_KEEP_BLOCKS} blocks");
        }
        config::check_mempool(&self.mempool).map_err(anyhow::Error::msg)?;
        self.http.check().map_err(anyhow::Error::msg)?;
        if self.max_block_txs == 0 || self.max_block_txs > gridmesh_ledger::block::MAX_BLOCK_TXS {
            bail!(
                "max block transactions {} is out of range (1 to {})",
                self.max_block_txs,
                gridmesh_ledger::block::MAX_BLOCK_TXS
            );
        }
        Ok(())
    }
}

/// `gridmesh node snapshot`: the chain of the stopped node's `data_dir` at its head, written to
/// `out`; a BFT node's with its head's finalisation certificate from its consensus storage, so
/// that a node restored from it starts consensus at that block.
pub fn snapshot(
    data_dir: &std::path::Path,
    out: &std::path::Path,
) -> anyhow::Result<gridmesh_ledger::snapshot::Summary> {
    let consensus = data_dir.join("consensus");
    let floor = if consensus.is_dir() {
        let head = gridmesh_ledger::snapshot::head_height(data_dir)?;
        Some(
            gridmesh_bft::validator::finalization_at(&consensus, head).with_context(|| {
                format!(
                    "{} holds no finalisation certificate of block {head}, the chain's head",
                    consensus.display()
                )
            })?,
        )
    } else {
        None
    };
    Ok(gridmesh_ledger::snapshot::write(data_dir, out, floor)?)
}

/// A service's transactions lock a deposit each in the mempool: say so at start when its account
/// cannot hold even a few of them, instead of letting every submission fail later.
fn warn_if_unfunded(shared: &Shared, service: &str, address: Address, pool: &MempoolConfig) {
    const FEW: u128 = 16;
    let balance = shared
        .chain
        .read()
        .expect("chain lock")
        .account(&address)
        .balance;
    let wanted = gridmesh_types::Amount(pool.deposit_per_tx.0.saturating_mul(FEW));
    if balance < wanted {
        tracing::warn!(
            %address,
            balance = %balance,
            deposit_per_tx = %pool.deposit_per_tx,
            "the {service}'s account holds less than {wanted} tokens: each of its pending transactions locks \
             {} tokens, so its transactions may be refused; transfer tokens to it",
            pool.deposit_per_tx
        );
    }
}

/// Consensus keys and p2p addresses of genesis validators or configured peers, host names
/// resolved now (through the system's resolver and hosts file).
fn consensus_peers<'a>(
    what: &str,
    list: impl Iterator<Item = (&'a Address, &'a gridmesh_types::HostPort)>,
) -> anyhow::Result<Vec<(gridmesh_bft::ConsensusKey, SocketAddr)>> {
    let mut seen = std::collections::BTreeSet::new();
    list.map(|(key, addr)| {
        if !seen.insert(*key) {
            bail!("{what} {key} is listed twice");
        }
        let pk = gridmesh_bft::app::public_key_of(key)
            .with_context(|| format!("{what} {key} is not an ed25519 key"))?;
        let resolved = addr
            .resolve()
            .with_context(|| format!("{what} {key}: its p2p address {addr} does not resolve"))?;
        Ok((pk, resolved))
    })
    .collect()
}

fn load_or_create_key(path: &Path) -> anyhow::Result<Keypair> {
    if path.exists() {
        Ok(Keypair::load(path)?)
    } else {
        let k = Keypair::generate();
        k.save(path)?;
        Ok(k)
    }
}

/// State shared by the API handlers and the engine.
pub struct Shared {
    pub chain: Arc<RwLock<Chain>>,
    pub mempool: Arc<Mutex<Mempool>>,
    pub node_address: Address,
    pub committed_txs: std::sync::atomic::AtomicU64,
    /// BFT only: where admitted transactions wait to be gossiped to the other validators.
    pub outbox: Option<Arc<gridmesh_bft::gossip::Outbox>>,
    /// BFT only: the replica (its consensus counters feed `/metrics`).
    pub replica: Option<Arc<gridmesh_bft::app::Replica>>,
    /// Number of validators (1 for solo).
    pub validators: usize,
    /// The validators' keys (the genesis set; solo: this node, the one proposer).
    pub validator_set: Vec<Address>,
    /// The grid operator service's PCC reports and status, if this node runs it.
    pub grid: Option<GridHandles>,
    /// The device gateway's counters and telemetry store, once started.
    pub gateway: std::sync::OnceLock<device_gateway::GatewayHandles>,
    /// Committed blocks, for `GET /v1/events`.
    pub events: events::Events,
    /// Sign-in challenges, sessions and read grants of members' homes.
    pub auth: api_home::Auth,
    /// The feeder as its power flow was last solved next to this node (the demo's simulator).
    pub feeder: std::sync::Mutex<api_feeder::FeederLive>,
    /// The OpenADR 3 VTN: its VENs, tokens, reports and subscriptions.
    pub openadr: openadr::Vtn,
    /// The block engine's clock, once it runs on its own (not for a driven node).
    pub clock: std::sync::OnceLock<NodeClock>,
    /// The API's latency per route, for `/metrics`.
    pub latency: metrics::Latency,
}

/// The clock a node's blocks take their time from: the wall clock, or for a time-scaled solo
/// node one that runs `scale` times faster from its anchor.
#[derive(Clone, Copy, Debug)]
pub struct NodeClock {
    start_ms: u64,
    started: std::time::Instant,
    scale: u64,
    block_interval_ms: u64,
}

impl NodeClock {
    pub fn new(start_ms: u64, scale: u32, block_interval: Duration) -> NodeClock {
        NodeClock {
            start_ms,
            started: std::time::Instant::now(),
            scale: u64::from(scale.max(1)),
            block_interval_ms: u64::try_from(block_interval.as_millis()).unwrap_or(u64::MAX),
        }
    }

    /// The node's clock now, ms.
    pub fn now_ms(&self) -> u64 {
        let elapsed = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.start_ms
            .saturating_add(elapsed.saturating_mul(self.scale))
    }

    /// Ten block intervals of the node's clock: no block for that long while transactions wait
    /// is a stall.
    pub fn stall_after_ms(&self) -> u64 {
        self.block_interval_ms
            .saturating_mul(10)
            .saturating_mul(self.scale)
    }

    /// The time the node's next block will carry at the latest: its clock one block interval
    /// from now. On a time-scaled node without empty blocks the head's time can be far behind.
    pub fn next_block_ms(&self) -> u64 {
        let elapsed = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.start_ms.saturating_add(
            elapsed
                .saturating_add(self.block_interval_ms)
                .saturating_mul(self.scale),
        )
    }
}

/// What the API needs of the grid operator service.
pub struct GridHandles {
    pub pcc: Arc<Mutex<grid_operator::PccReports>>,
    pub status: Arc<Mutex<grid_operator::OperatorStatus>>,
    pub feeder_name: String,
    pub connection_points: usize,
    /// What the follower of the DSO's VTN keeps, when the service follows one.
    pub upstream: Option<Arc<Mutex<openadr::follow::Upstream>>>,
}

/// How to stop the engine thread.
enum EngineStop {
    Solo(mpsc::Sender<()>),
    Bft(futures::channel::oneshot::Sender<()>),
}

/// Sends on drop: tells the node when an engine thread ends, normally or by a panic.
struct OnExit(Option<tokio::sync::oneshot::Sender<()>>);

impl Drop for OnExit {
    fn drop(&mut self) {
        if let Some(tx) = self.0.take() {
            let _ = tx.send(());
        }
    }
}

/// Asks a driven node ([`NodeConfig::driven`]) for its next block.
#[derive(Clone)]
pub struct BlockDriver {
    ticks: mpsc::Sender<gridmesh_consensus::solo::Tick>,
}

impl BlockDriver {
    /// Produces and commits the next block at `timestamp_ms` with what waits in the mempool;
    /// returns its height. Blocks the calling thread until the block is committed.
    pub fn block_at(&self, timestamp_ms: u64) -> anyhow::Result<u64> {
        let (done, answer) = mpsc::sync_channel(1);
        self.ticks
            .send(gridmesh_consensus::solo::Tick { timestamp_ms, done })
            .map_err(|_| anyhow::anyhow!("the block engine has stopped"))?;
        answer
            .recv()
            .map_err(|_| anyhow::anyhow!("the block engine stopped before answering"))?
            .map_err(|e| anyhow::anyhow!("block at {timestamp_ms} ms failed: {e}"))
    }
}

/// A started node: its API address and a way to stop it.
pub struct RunningNode {
    pub api_addr: SocketAddr,
    pub shared: Arc<Shared>,
    /// Present when the node was started with [`NodeConfig::driven`].
    pub driver: Option<BlockDriver>,
    stop_engine: EngineStop,
    engine: std::thread::JoinHandle<()>,
    engine_exit: tokio::sync::oneshot::Receiver<()>,
    stop_http: tokio::sync::oneshot::Sender<()>,
    http: tokio::task::JoinHandle<std::io::Result<()>>,
    /// The OpenADR VTN's notifier (subscriptions' callbacks).
    notifier: tokio::task::JoinHandle<()>,
    grid_operator: Option<grid_operator::GridOperator>,
    follower: Option<openadr::follow::Follower>,
    device_gateway: Option<gridmesh_gateway::mqtt::MqttGateway>,
}

impl RunningNode {
    /// Opens the chain, starts the engine and binds the API. Call inside a Tokio runtime.
    pub async fn start(cfg: NodeConfig) -> anyhow::Result<RunningNode> {
        cfg.validate()?;
        std::fs::create_dir_all(&cfg.data_dir)
            .with_context(|| format!("creating data directory {}", cfg.data_dir.display()))?;
        let genesis = match &cfg.genesis {
            Some(path) => Genesis::load(path)?,
            None => {
                let faucet = load_or_create_key(&cfg.data_dir.join(FAUCET_KEY_FILE))?;
                Genesis::dev(faucet.address())
            }
        };
        let bft = !genesis.validators.is_empty();
        if bft && (cfg.time_scale != 1 || cfg.driven) {
            anyhow::bail!(
                "accelerated or driven time is for a single node's simulations; validators keep real time"
            );
        }
        let validator_key = if !bft {
            if cfg.validator_key.is_some() {
                bail!("--validator-key is for a BFT network, but this genesis lists no validators");
            }
            None
        } else if let Some(path) = &cfg.validator_key {
            let key = Keypair::load(path)
                .with_context(|| format!("loading the validator key {}", path.display()))?;
            if !genesis
                .validators
                .iter()
                .any(|v| v.public_key == key.address())
            {
                bail!(
                    "validator key {} ({}) is not in the genesis validator set",
                    path.display(),
                    key.address()
                );
            }
            Some(key)
        } else {
            // A full node: it follows the validators and needs an address they can allow.
            if cfg.p2p_listen.is_none() {
                bail!(
                    "this genesis lists {} validators: run a validator with --validator-key FILE, \
                     or a full node with --p2p-listen ADDR (listed in the validators' peers)",
                    genesis.validators.len()
                );
            }
            None
        };
        let node_key = match &validator_key {
            Some(k) => k.clone(),
            None => load_or_create_key(&cfg.data_dir.join(NODE_KEY_FILE))?,
        };
        let mut chain = Chain::open(&cfg.data_dir, &genesis)
            .with_context(|| format!("opening the chain in {}", cfg.data_dir.display()))?;
        if let Some(keep) = cfg.keep_blocks {
            chain.set_retention(gridmesh_ledger::store::Retention::Last(keep));
        }
        tracing::info!(
            chain_id = chain.chain_id(),
            height = chain.head().height,
            state_root = %chain.state().root(),
            "chain opened"
        );
        let namespace = gridmesh_bft::engine::namespace(chain.chain_id(), chain.genesis_hash());
        let mempool =
            Mempool::new(chain.chain_id(), cfg.mempool.clone()).at_height(chain.head().height);
        let chain = Arc::new(RwLock::new(chain));
        let mempool = Arc::new(Mutex::new(mempool));
        let replica = bft.then(|| {
            gridmesh_bft::app::Replica::new(
                chain.clone(),
                mempool.clone(),
                gridmesh_bft::app::ReplicaConfig {
                    max_block_txs: cfg.max_block_txs,
                    ..Default::default()
                },
            )
        });
        let shared = Arc::new(Shared {
            chain,
            mempool,
            node_address: node_key.address(),
            committed_txs: Default::default(),
            outbox: replica.as_ref().map(|r| r.outbox()),
            replica: replica.clone(),
            validators: genesis.validators.len().max(1),
            validator_set: if genesis.validators.is_empty() {
                vec![node_key.address()]
            } else {
                genesis
                    .validators_sorted()
                    .iter()
                    .map(|v| v.public_key)
                    .collect()
            },
            grid: cfg.grid_operator.as_ref().map(|g| GridHandles {
                pcc: Default::default(),
                status: Default::default(),
                feeder_name: g.feeder.name(),
                connection_points: g.feeder.connection_points().len(),
                upstream: g
                    .upstream
                    .as_ref()
                    .map(|u| Arc::new(Mutex::new(openadr::follow::Upstream::new(u)))),
            }),
            gateway: Default::default(),
            events: events::Events::new(cfg.http.idle_timeout),
            auth: api_home::Auth::load(Some(&cfg.data_dir))?,
            feeder: Default::default(),
            openadr: openadr::Vtn::new(&cfg.data_dir),
            clock: Default::default(),
            latency: Default::default(),
        });

        // A BFT node's peers and validators are checked before anything is bound: a bad key is
        // the error to report, whatever the ports.
        let mut consensus = if bft {
            Some((
                consensus_peers(
                    "peer",
                    cfg.peers.iter().map(|p| (&p.public_key, &p.p2p_address)),
                )?,
                consensus_peers(
                    "validator",
                    genesis
                        .validators
                        .iter()
                        .map(|v| (&v.public_key, &v.p2p_address)),
                )?,
            ))
        } else {
            None
        };
        let tls = match &cfg.tls {
            Some(files) => Some(files.server_config()?),
            None => None,
        };
        let listener = tokio::net::TcpListener::bind(cfg.listen)
            .await
            .with_context(|| format!("binding the API to {}", cfg.listen))?;
        let api_addr = listener.local_addr()?;

        let (exited, engine_exit) = tokio::sync::oneshot::channel();
        let mut driver = None;
        let (stop_engine, engine) = match replica {
            Some(replica) => {
                let votes = validator_key.is_some();
                let me = genesis
                    .validators
                    .iter()
                    .find(|v| v.public_key == node_key.address());
                let p2p_listen = match (cfg.p2p_listen, me) {
                    (Some(a), _) => a,
                    (None, Some(v)) => v.p2p_address.resolve().with_context(|| {
                        format!(
                            "this validator's p2p address {} does not resolve",
                            v.p2p_address
                        )
                    })?,
                    (None, None) => unreachable!("a full node without --p2p-listen was refused"),
                };
                let (peers, validators) = consensus.take().expect("checked before binding");
                // Restored from a snapshot: its consensus floor, checked here so that a damaged
                // one stops the node with why instead of starting consensus from genesis.
                let floor = gridmesh_ledger::snapshot::consensus_floor(&cfg.data_dir)?;
                if let Some(bytes) = &floor {
                    let head = replica.chain().read().expect("chain lock").head_hash();
                    gridmesh_bft::engine::decode_floor(bytes, head).map_err(|e| {
                        anyhow::anyhow!(
                            "{}: {e}; restore the data directory from its snapshot again",
                            cfg.data_dir
                                .join(gridmesh_ledger::snapshot::CONSENSUS_FLOOR_FILE)
                                .display()
                        )
                    })?;
                }
                let vcfg = gridmesh_bft::validator::ValidatorConfig {
                    key: gridmesh_bft::app::consensus_signer(&node_key),
                    votes,
                    validators,
                    peers,
                    p2p_listen,
                    namespace,
                    storage_dir: cfg.data_dir.join("consensus"),
                    timing: Default::default(),
                    worker_threads: 2,
                    keep_blocks: cfg.keep_blocks,
                    // Restored from a snapshot: consensus starts at the chain's block.
                    floor,
                };
                let counter = shared.clone();
                replica.on_finalized(move |f, _| {
                    counter
                        .committed_txs
                        .fetch_add(u64::from(f.tx_count), std::sync::atomic::Ordering::Relaxed);
                    counter.events.block(f);
                });
                let (stop, stopped) = futures::channel::oneshot::channel();
                let thread = std::thread::Builder::new()
                    .name("bft-validator".into())
                    .spawn(move || {
                        let _on_exit = OnExit(Some(exited));
                        gridmesh_bft::validator::run(vcfg, replica, stopped);
                    })?;
                (EngineStop::Bft(stop), thread)
            }
            None => {
                let app = LedgerApp::new(
                    shared.chain.clone(),
                    shared.mempool.clone(),
                    cfg.max_block_txs,
                );
                let engine = SoloEngine::new(
                    app,
                    SoloConfig {
                        block_interval: cfg.block_interval,
                        empty_blocks: cfg.empty_blocks,
                        proposer: node_key.address(),
                        time_scale: cfg.time_scale,
                    },
                );
                let start_ms = clock_start_ms(&cfg.data_dir, cfg.time_scale)?;
                if !cfg.driven {
                    let _ = shared.clock.set(NodeClock::new(
                        start_ms,
                        cfg.time_scale,
                        cfg.block_interval,
                    ));
                }
                let (stop, stopped) = mpsc::channel();
                let counter = shared.clone();
                let count = move |f: &gridmesh_consensus::Finalized, _took| {
                    counter
                        .committed_txs
                        .fetch_add(u64::from(f.tx_count), std::sync::atomic::Ordering::Relaxed);
                    counter.events.block(f);
                };
                let ticks = cfg.driven.then(|| {
                    let (tx, rx) = mpsc::channel();
                    driver = Some(BlockDriver { ticks: tx });
                    rx
                });
                let thread = std::thread::Builder::new()
                    .name("solo-engine".into())
                    .spawn(move || {
                        let _on_exit = OnExit(Some(exited));
                        match ticks {
                            Some(ticks) => engine.run_driven(stopped, ticks, count),
                            None => engine.run_from(stopped, count, start_ms),
                        }
                    })?;
                (EngineStop::Solo(stop), thread)
            }
        };

        let services = [
            cfg.grid_operator
                .as_ref()
                .map(|g| ("grid operator", g.key.address())),
            cfg.device_gateway
                .as_ref()
                .map(|g| ("device gateway", g.key.address())),
        ];
        for (service, address) in services.into_iter().flatten() {
            warn_if_unfunded(&shared, service, address, &cfg.mempool);
        }
        let grid_operator = match (&cfg.grid_operator, &shared.grid) {
            (Some(g), Some(h)) => Some(grid_operator::GridOperator::start(
                shared.clone(),
                g.clone(),
                h.pcc.clone(),
                h.status.clone(),
                h.upstream.clone(),
            )?),
            _ => None,
        };
        let follower = match (
            cfg.grid_operator.as_ref().and_then(|g| g.upstream.as_ref()),
            shared.grid.as_ref().and_then(|h| h.upstream.as_ref()),
        ) {
            (Some(u), Some(state)) => Some(openadr::follow::Follower::start(
                shared.clone(),
                u.clone(),
                state.clone(),
            )?),
            _ => None,
        };
        let device_gateway = match &cfg.device_gateway {
            Some(g) => {
                let (gw, handles) = device_gateway::start(shared.clone(), g, &cfg.data_dir)?;
                let _ = shared.gateway.set(handles);
                Some(gw)
            }
            None => None,
        };
        let router = api::router(shared.clone());
        let notifier = openadr::notify::spawn(shared.clone());
        let _ = shared
            .openadr
            .readings
            .set(openadr::readings::spawn(shared.clone())?);
        let (stop_http, http_stopped) = tokio::sync::oneshot::channel::<()>();
        let limits = cfg.http.clone();
        let http = tokio::spawn(async move {
            serve::serve(listener, router, limits, tls, async {
                let _ = http_stopped.await;
            })
            .await
        });
        tracing::info!(%api_addr, "API listening");
        Ok(RunningNode {
            api_addr,
            shared,
            driver,
            stop_engine,
            engine,
            engine_exit,
            stop_http,
            notifier,
            http,
            grid_operator,
            follower,
            device_gateway,
        })
    }

    /// Resolves if the block engine's thread ends before [`RunningNode::stop`] (a bug or a fatal
    /// storage error): the node then serves stale data and should stop.
    pub async fn engine_exited(&mut self) {
        let _ = (&mut self.engine_exit).await;
    }

    /// Stops the API, lets the engine finish the block it is committing, and closes the database.
    pub async fn stop(self) -> anyhow::Result<()> {
        let _ = self.stop_http.send(());
        self.notifier.abort();
        if let Some(g) = self.grid_operator {
            tokio::task::spawn_blocking(move || g.stop()).await?;
        }
        if let Some(f) = self.follower {
            tokio::task::spawn_blocking(move || f.stop()).await?;
        }
        if let Some(g) = self.device_gateway {
            tokio::task::spawn_blocking(move || g.stop()).await?;
        }
        match self.stop_engine {
            EngineStop::Solo(tx) => {
                let _ = tx.send(());
            }
            EngineStop::Bft(tx) => {
                let _ = tx.send(());
            }
        }
        tokio::task::spawn_blocking(move || self.engine.join())
            .await?
            .map_err(|_| anyhow::anyhow!("the block engine panicked"))?;
        self.http.await??;
        Ok(())
    }
}

/// The file a time-scaled node keeps its clock's anchor in: the wall time and chain time of its
/// first start (`WALL_MS CHAIN_MS`).
pub const CLOCK_ANCHOR_FILE: &str = "clock-anchor";

/// The block time a solo node's clock starts from. At real time, the wall clock. A time-scaled
/// node's clock runs `time_scale` times faster than the wall clock from an anchor kept in the
/// data dir, so a restarted node goes on with the same accelerated clock (the time it was down
/// included) instead of falling back to the wall clock, behind its own blocks.
pub fn clock_start_ms(data_dir: &std::path::Path, time_scale: u32) -> anyhow::Result<u64> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    if time_scale <= 1 {
        return Ok(now);
    }
    let path = data_dir.join(CLOCK_ANCHOR_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let mut it = text.split_whitespace().map(str::parse::<u64>);
            let (Some(Ok(wall)), Some(Ok(chain))) = (it.next(), it.next()) else {
                anyhow::bail!(
                    "{} is not `WALL_MS CHAIN_MS`: delete it to restart the accelerated clock from now",
                    path.display()
                );
            };
            Ok(chain.saturating_add(
                now.saturating_sub(wall)
                    .saturating_mul(u64::from(time_scale)),
            ))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::write(&path, format!("{now} {now}\n"))
                .with_context(|| format!("writing {}", path.display()))?;
            Ok(now)
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}
