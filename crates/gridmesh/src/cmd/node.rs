//! `gridmesh node`: run a node.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use gridmesh_node::{NodeConfig, RunningNode, DEFAULT_LISTEN};

use crate::cli::broker_arg;
use crate::cmd::{runtime, shutdown_signal};

#[derive(Args)]
pub(crate) struct NodeArgs {
    /// Node config file (TOML: data_dir, listen, genesis, block_interval_ms, [mempool], [http],
    /// [[peers]]; see the README); flags given here override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Directory for the chain database and keys (created if missing).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// API address [default: 127.0.0.1:8645].
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Genesis file (TOML). Without it the node runs the development chain: a faucet key is written
    /// to DATA_DIR/faucet.key on first start and holds the whole supply. A genesis that lists
    /// validators makes the node a BFT validator (it then needs --validator-key).
    #[arg(long)]
    genesis: Option<PathBuf>,
    /// This validator's key file (BFT networks).
    #[arg(long)]
    validator_key: Option<PathBuf>,
    /// Where to accept p2p connections (BFT networks) [default: the genesis address of this
    /// validator].
    #[arg(long)]
    p2p_listen: Option<SocketAddr>,
    /// A full node allowed to connect (BFT networks), KEY@HOST:PORT; repeatable.
    #[arg(long = "peer")]
    peers: Vec<gridmesh_node::config::Peer>,
    /// Milliseconds between blocks (solo engine) [default: 1000].
    #[arg(long)]
    block_interval_ms: Option<u64>,
    /// Produce blocks even when no transaction is waiting (solo engine).
    #[arg(long)]
    empty_blocks: bool,
    /// Run block time N times faster than the wall clock (solo engine; simulations, demos and
    /// tests of 15-minute market slots, never a community's real chain).
    #[arg(long, default_value_t = 1)]
    time_scale: u32,
    /// Run the grid operator's service on this feeder: operating envelopes for every connection
    /// point before each gate closure, and islanding events from the PCC meter's reports (`POST
    /// /v1/grid/pcc`). A feeder in TOML (as examples/congestion/feeder.toml; its buses are the
    /// connection points) or an OpenDSS master (.dss; its single-phase loads are, each with an
    /// envelope on its own phase). Needs --grid-operator-key.
    #[arg(long, requires = "grid_operator_key")]
    grid_feeder: Option<PathBuf>,
    /// The market's grid operator key (the genesis `grid_operator`).
    #[arg(long, requires = "grid_feeder")]
    grid_operator_key: Option<PathBuf>,
    /// Envelopes are submitted for this many open slots ahead.
    #[arg(long, default_value_t = 2)]
    envelope_lead_slots: u64,
    /// Island when the PCC meter has not reported for this many seconds of chain time.
    #[arg(long, default_value_t = 120)]
    pcc_timeout_s: u64,
    /// Reconnect after this many seconds of healthy grid (chain time).
    #[arg(long, default_value_t = 300)]
    resync_s: u64,
    /// Follow the DSO's OpenADR 3 VTN described in this file (TOML: url, client_id,
    /// client_secret, program, ...; see the README, "The community as a VEN of its DSO"): its
    /// capacity limits cap the sum of the envelopes, its prices become the slot's tariff, and
    /// the community's usage is reported back. Needs --grid-feeder.
    #[arg(long, requires = "grid_feeder", value_name = "FILE")]
    openadr_upstream: Option<PathBuf>,
    /// Run a device gateway on this MQTT broker (`HOST:PORT`): signed telemetry on
    /// `gridmesh/<chain>/telemetry/+` into the local telemetry store, devices' slot readings on
    /// `gridmesh/<chain>/readings/+` onto the ledger. Needs --gateway-key.
    #[arg(long, requires = "gateway_key", value_name = "HOST:PORT")]
    mqtt: Option<String>,
    /// The key that signs the gateway's `SubmitDeviceReadings` transactions.
    #[arg(long, requires = "mqtt")]
    gateway_key: Option<PathBuf>,
    /// Where the telemetry store lives (default: DATA_DIR/telemetry).
    #[arg(long, requires = "mqtt")]
    telemetry_dir: Option<PathBuf>,
}

pub(crate) fn run(a: NodeArgs) -> anyhow::Result<()> {
    let file = match &a.config {
        Some(path) => gridmesh_node::config::NodeFile::load(path)?,
        None => Default::default(),
    };
    let data_dir = a
        .data_dir
        .or(file.data_dir)
        .context("no data directory: pass --data-dir DIR (or data_dir in --config)")?;
    let mut cfg = NodeConfig::new(&data_dir);
    cfg.listen = a
        .listen
        .or(file.listen)
        .unwrap_or(DEFAULT_LISTEN.parse().expect("valid default"));
    cfg.genesis = a.genesis.or(file.genesis);
    cfg.validator_key = a.validator_key.or(file.validator_key);
    cfg.p2p_listen = a.p2p_listen.or(file.p2p_listen);
    cfg.peers = file.peers.into_iter().chain(a.peers).collect();
    cfg.block_interval = Duration::from_millis(
        a.block_interval_ms
            .or(file.block_interval_ms)
            .unwrap_or(1000),
    );
    cfg.empty_blocks = a.empty_blocks || file.empty_blocks.unwrap_or(false);
    if let Some(m) = &file.mempool {
        cfg.mempool = m
            .config()
            .map_err(|e| anyhow::anyhow!("in the node config: {e}"))?;
    }
    if let Some(h) = &file.http {
        cfg.http = h
            .limits()
            .map_err(|e| anyhow::anyhow!("in the node config: {e}"))?;
    }
    cfg.time_scale = a.time_scale.max(1);
    if let (Some(feeder), Some(key)) = (&a.grid_feeder, &a.grid_operator_key) {
        use gridmesh_node::grid_operator::OperatorFeeder;
        let feeder_model = if feeder
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("dss"))
        {
            let circuit = gridmesh_grid::unbalanced::Circuit::read_dss(feeder)
                .with_context(|| format!("reading the OpenDSS feeder {}", feeder.display()))?;
            let model = OperatorFeeder::Unbalanced(Box::new(circuit));
            if model.connection_points().is_empty() {
                bail!(
                    "{} has no single-phase load: the connection points of an OpenDSS feeder are its single-phase loads",
                    feeder.display()
                );
            }
            model
        } else {
            let text = std::fs::read_to_string(feeder)
                .with_context(|| format!("reading {}", feeder.display()))?;
            OperatorFeeder::Balanced(
                gridmesh_grid::Feeder::from_toml(&text)
                    .with_context(|| format!("in {}", feeder.display()))?,
            )
        };
        if !(1..=96).contains(&a.envelope_lead_slots) {
            bail!("--envelope-lead-slots must be 1 to 96");
        }
        cfg.grid_operator = Some(gridmesh_node::grid_operator::GridOperatorConfig {
            feeder: feeder_model,
            key: crate::keyfile::load(key)
                .with_context(|| format!("loading the grid operator key {}", key.display()))?,
            lead_slots: a.envelope_lead_slots,
            pcc_timeout_ms: a.pcc_timeout_s.saturating_mul(1000),
            resync_ms: a.resync_s.saturating_mul(1000),
            gate_margin_ms: gridmesh_node::grid_operator::gate_margin_ms(
                cfg.block_interval,
                cfg.time_scale,
            ),
            upstream: match &a.openadr_upstream {
                Some(path) => Some(
                    gridmesh_node::openadr::follow::UpstreamConfig::load(path)
                        .map_err(|e| anyhow::anyhow!("--openadr-upstream {e}"))?,
                ),
                None => None,
            },
        });
    }
    if let (Some(broker), Some(key)) = (&a.mqtt, &a.gateway_key) {
        let (host, port) = broker_arg(broker)?;
        cfg.device_gateway = Some(gridmesh_node::device_gateway::DeviceGatewayConfig {
            mqtt_host: host,
            mqtt_port: port,
            key: crate::keyfile::load(key)
                .with_context(|| format!("loading the gateway key {}", key.display()))?,
            telemetry_dir: a.telemetry_dir.clone(),
        });
    }
    runtime()?.block_on(async move {
        let mut node = RunningNode::start(cfg).await?;
        eprintln!("gridmesh node: API on http://{}/v1/status", node.api_addr);
        let engine_died = tokio::select! {
            _ = shutdown_signal() => false,
            _ = node.engine_exited() => true,
        };
        tracing::info!("shutting down");
        let stopped = node.stop().await;
        if engine_died {
            bail!("the block engine stopped unexpectedly; see the log above");
        }
        stopped
    })
}
