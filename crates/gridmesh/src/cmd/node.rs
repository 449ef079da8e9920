//! `gridmesh node`: run a node.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use gridmesh_node::{NodeConfig, RunningNode, DEFAULT_LISTEN};

use crate::cli::broker_arg;
use crate::cmd::{runtime, shutdown_signal};
use crate::output::outln;

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub(crate) struct NodeArgs {
    #[command(subcommand)]
    action: Option<NodeAction>,
    /// Node config file (TOML): every flag below has its key (data_dir, listen, genesis,
    /// validator_key, p2p_listen, block_interval_ms, empty_blocks, keep_blocks, time_scale,
    /// [grid_operator],
    /// [gateway], [[peers]]), and [mempool] and [http] set the pool and the API's bounds; see
    /// the README. Flags given here override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Directory for the chain database and keys (created if missing).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// API address, HOST:PORT (an IP or a host name) [default: 127.0.0.1:8645].
    #[arg(long)]
    listen: Option<gridmesh_types::HostPort>,
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
    p2p_listen: Option<gridmesh_types::HostPort>,
    /// A full node allowed to connect (BFT networks), KEY@HOST:PORT; repeatable.
    #[arg(long = "peer")]
    peers: Vec<gridmesh_node::config::Peer>,
    /// Milliseconds between blocks (solo engine) [default: 1000].
    #[arg(long)]
    block_interval_ms: Option<u64>,
    /// Produce blocks even when no transaction is waiting (solo engine).
    #[arg(long)]
    empty_blocks: bool,
    /// Keep only the last N blocks (at least 1,000; and genesis): older blocks, their
    /// transactions and receipts are deleted as new ones commit, so the chain's files stop
    /// growing. The state is always whole. [default: every block]
    #[arg(long, value_name = "N")]
    keep_blocks: Option<u64>,
    /// Run block time N times faster than the wall clock (solo engine; simulations, demos and
    /// tests of 15-minute market slots, never a community's real chain) [default: 1].
    #[arg(long)]
    time_scale: Option<u32>,
    /// Run the grid operator's service on this feeder: operating envelopes for every connection
    /// point before each gate closure, and islanding events from the PCC meter's reports (`POST
    /// /v1/grid/pcc`). A feeder in TOML (as examples/congestion/feeder.toml; its buses are the
    /// connection points) or an OpenDSS master (.dss; its single-phase loads are, each with an
    /// envelope on its own phase). Needs --grid-operator-key.
    #[arg(long)]
    grid_feeder: Option<PathBuf>,
    /// The market's grid operator key (the genesis `grid_operator`).
    #[arg(long)]
    grid_operator_key: Option<PathBuf>,
    /// Envelopes are submitted for this many open slots ahead [default: 2].
    #[arg(long)]
    envelope_lead_slots: Option<u64>,
    /// Island when the PCC meter has not reported for this many seconds of chain time
    /// [default: 120].
    #[arg(long)]
    pcc_timeout_s: Option<u64>,
    /// Reconnect after this many seconds of healthy grid (chain time) [default: 300].
    #[arg(long)]
    resync_s: Option<u64>,
    /// Follow the DSO's OpenADR 3 VTN described in this file (TOML: url, client_id,
    /// client_secret, program, ...; see the README, "The community as a VEN of its DSO"): its
    /// capacity limits cap the sum of the envelopes, its prices become the slot's tariff, and
    /// the community's usage is reported back. Needs --grid-feeder.
    #[arg(long, value_name = "FILE")]
    openadr_upstream: Option<PathBuf>,
    /// Run a device gateway on this MQTT broker (`HOST:PORT`): signed telemetry on
    /// `gridmesh/<chain>/telemetry/+` into the local telemetry store, devices' slot readings on
    /// `gridmesh/<chain>/readings/+` onto the ledger. Needs --gateway-key.
    #[arg(long, value_name = "HOST:PORT")]
    mqtt: Option<String>,
    /// The key that signs the gateway's `SubmitDeviceReadings` transactions.
    #[arg(long)]
    gateway_key: Option<PathBuf>,
    /// Where the telemetry store lives (default: DATA_DIR/telemetry).
    #[arg(long)]
    telemetry_dir: Option<PathBuf>,
    /// Serve the API over HTTPS with this certificate chain (PEM); with --tls-key.
    #[arg(long)]
    tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long)]
    tls_key: Option<PathBuf>,
}

/// What else `gridmesh node` does with a data directory, the node stopped.
#[derive(clap::Subcommand)]
pub(crate) enum NodeAction {
    /// Write the chain's state at its head to one file (the node must be stopped): a backup, or
    /// a new node without the history. Checked against the head's state root before writing; a
    /// BFT node's carries its head's finalisation certificate, so that the restored node starts
    /// consensus there.
    Snapshot {
        /// The node's data directory.
        #[arg(long)]
        data_dir: PathBuf,
        /// The snapshot file to write.
        #[arg(long)]
        out: PathBuf,
    },
    /// Make a new data directory from a snapshot: the node started on it goes on from the
    /// snapshot's block (the blocks before it are not there). Start it with the same genesis
    /// file (a development chain also needs its faucet.key copied in).
    Restore {
        /// The snapshot file (`gridmesh node snapshot`).
        #[arg(long)]
        snapshot: PathBuf,
        /// The new data directory (created; refused if it holds a chain).
        #[arg(long)]
        data_dir: PathBuf,
    },
}

fn snapshot_action(action: NodeAction) -> anyhow::Result<()> {
    use gridmesh_ledger::snapshot;
    let (done, s) = match action {
        NodeAction::Snapshot { data_dir, out } => {
            let s = gridmesh_node::snapshot(&data_dir, &out)?;
            (format!("wrote {}", out.display()), s)
        }
        NodeAction::Restore { snapshot, data_dir } => {
            let s = snapshot::restore(&snapshot, &data_dir)?;
            (format!("restored into {}", data_dir.display()), s)
        }
    };
    outln!(
        "{done}: chain {} at block {} (state root {}), {} accounts, {} state entries, {} bytes{}",
        s.chain_id,
        s.height,
        s.state_root,
        s.accounts,
        s.kv_entries,
        s.bytes,
        if s.consensus_floor {
            "; consensus starts at this block (its finalisation certificate is in the file)"
        } else {
            ""
        }
    );
    Ok(())
}

pub(crate) fn run(a: NodeArgs) -> anyhow::Result<()> {
    if let Some(action) = a.action {
        return snapshot_action(action);
    }
    let file = match &a.config {
        Some(path) => gridmesh_node::config::NodeFile::load(path)?,
        None => Default::default(),
    };
    let data_dir = a
        .data_dir
        .or(file.data_dir)
        .context("no data directory: pass --data-dir DIR (or data_dir in --config)")?;
    let mut cfg = NodeConfig::new(&data_dir);
    let resolve = |what: &str, a: &gridmesh_types::HostPort| {
        a.resolve()
            .with_context(|| format!("{what} {a} does not resolve"))
    };
    cfg.listen = match a.listen.or(file.listen) {
        Some(l) => resolve("listen", &l)?,
        None => DEFAULT_LISTEN.parse().expect("valid default"),
    };
    cfg.genesis = a.genesis.or(file.genesis);
    cfg.validator_key = a.validator_key.or(file.validator_key);
    cfg.p2p_listen = match a.p2p_listen.or(file.p2p_listen) {
        Some(l) => Some(resolve("p2p_listen", &l)?),
        None => None,
    };
    cfg.peers = file.peers.into_iter().chain(a.peers).collect();
    cfg.block_interval = Duration::from_millis(
        a.block_interval_ms
            .or(file.block_interval_ms)
            .unwrap_or(1000),
    );
    cfg.empty_blocks = a.empty_blocks || file.empty_blocks.unwrap_or(false);
    cfg.keep_blocks = a.keep_blocks.or(file.keep_blocks);
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
    let tls_cert = a
        .tls_cert
        .clone()
        .or(file.tls.as_ref().map(|t| t.cert.clone()));
    let tls_key = a
        .tls_key
        .clone()
        .or(file.tls.as_ref().map(|t| t.key.clone()));
    cfg.tls = match (tls_cert, tls_key) {
        (Some(cert), Some(key)) => Some(gridmesh_node::serve::TlsFiles { cert, key }),
        (None, None) => None,
        _ => bail!("HTTPS needs both --tls-cert and --tls-key (tls.cert and tls.key)"),
    };
    cfg.time_scale = a.time_scale.or(file.time_scale).unwrap_or(1);
    if cfg.time_scale == 0 {
        bail!("time_scale must be at least 1 (1: real time)");
    }
    // The grid operator's service and the gateway: flags, else the file's sections.
    let fg = file.grid_operator.clone().unwrap_or_default();
    let grid_feeder = a
        .grid_feeder
        .clone()
        .or(file.grid_operator.as_ref().map(|g| g.feeder.clone()));
    let grid_operator_key = a
        .grid_operator_key
        .clone()
        .or(file.grid_operator.as_ref().map(|g| g.key.clone()));
    let envelope_lead_slots = a
        .envelope_lead_slots
        .or(fg.envelope_lead_slots)
        .unwrap_or(2);
    let pcc_timeout_s = a.pcc_timeout_s.or(fg.pcc_timeout_s).unwrap_or(120);
    let resync_s = a.resync_s.or(fg.resync_s).unwrap_or(300);
    let openadr_upstream = a.openadr_upstream.clone().or(fg.openadr_upstream);
    if grid_feeder.is_some() != grid_operator_key.is_some() {
        bail!("the grid operator's service needs both --grid-feeder and --grid-operator-key (grid_operator.feeder and .key)");
    }
    if openadr_upstream.is_some() && grid_feeder.is_none() {
        bail!("--openadr-upstream (grid_operator.openadr_upstream) needs the grid operator's service: --grid-feeder and --grid-operator-key");
    }
    let fw = file.gateway.clone();
    let mqtt = a.mqtt.clone().or(fw.as_ref().map(|g| g.mqtt.clone()));
    let gateway_key = a.gateway_key.clone().or(fw.as_ref().map(|g| g.key.clone()));
    let telemetry_dir = a
        .telemetry_dir
        .clone()
        .or(fw.as_ref().and_then(|g| g.telemetry_dir.clone()));
    if mqtt.is_some() != gateway_key.is_some() {
        bail!("a device gateway needs both --mqtt and --gateway-key (gateway.mqtt and .key)");
    }
    if telemetry_dir.is_some() && mqtt.is_none() {
        bail!("--telemetry-dir (gateway.telemetry_dir) needs a device gateway: --mqtt and --gateway-key");
    }
    if let (Some(feeder), Some(key)) = (&grid_feeder, &grid_operator_key) {
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
        if !(1..=96).contains(&envelope_lead_slots) {
            bail!("--envelope-lead-slots (grid_operator.envelope_lead_slots) must be 1 to 96");
        }
        cfg.grid_operator = Some(gridmesh_node::grid_operator::GridOperatorConfig {
            feeder: feeder_model,
            key: crate::keyfile::load(key)
                .with_context(|| format!("loading the grid operator key {}", key.display()))?,
            lead_slots: envelope_lead_slots,
            pcc_timeout_ms: pcc_timeout_s.saturating_mul(1000),
            resync_ms: resync_s.saturating_mul(1000),
            gate_margin_ms: gridmesh_node::grid_operator::gate_margin_ms(
                cfg.block_interval,
                cfg.time_scale,
            ),
            upstream: match &openadr_upstream {
                Some(path) => Some(
                    gridmesh_node::openadr::follow::UpstreamConfig::load(path)
                        .map_err(|e| anyhow::anyhow!("--openadr-upstream {e}"))?,
                ),
                None => None,
            },
        });
    }
    if let (Some(broker), Some(key)) = (&mqtt, &gateway_key) {
        let (host, port) = broker_arg(broker)?;
        cfg.device_gateway = Some(gridmesh_node::device_gateway::DeviceGatewayConfig {
            mqtt_host: host,
            mqtt_port: port,
            key: crate::keyfile::load(key)
                .with_context(|| format!("loading the gateway key {}", key.display()))?,
            telemetry_dir: telemetry_dir.clone(),
        });
    }
    let tls = cfg.tls.is_some();
    runtime()?.block_on(async move {
        let mut node = RunningNode::start(cfg).await?;
        let scheme = if tls { "https" } else { "http" };
        eprintln!(
            "gridmesh node: API on {scheme}://{}/v1/status",
            node.api_addr
        );
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};

    #[derive(Parser)]
    struct Wrapper {
        #[command(flatten)]
        node: NodeArgs,
    }

    /// Every flag of `gridmesh node` has its key in the config file (issue 24), so that a
    /// node runs from its file alone: a new flag fails here until the file takes it too.
    #[test]
    fn every_flag_has_a_key_in_the_config_file() {
        let keys = [
            ("data_dir", "data_dir"),
            ("listen", "listen"),
            ("genesis", "genesis"),
            ("validator_key", "validator_key"),
            ("p2p_listen", "p2p_listen"),
            ("peers", "peers"),
            ("block_interval_ms", "block_interval_ms"),
            ("empty_blocks", "empty_blocks"),
            ("keep_blocks", "keep_blocks"),
            ("time_scale", "time_scale"),
            ("grid_feeder", "grid_operator.feeder"),
            ("grid_operator_key", "grid_operator.key"),
            ("envelope_lead_slots", "grid_operator.envelope_lead_slots"),
            ("pcc_timeout_s", "grid_operator.pcc_timeout_s"),
            ("resync_s", "grid_operator.resync_s"),
            ("openadr_upstream", "grid_operator.openadr_upstream"),
            ("mqtt", "gateway.mqtt"),
            ("gateway_key", "gateway.key"),
            ("telemetry_dir", "gateway.telemetry_dir"),
            ("tls_cert", "tls.cert"),
            ("tls_key", "tls.key"),
        ];
        // A file with every key (the module documentation's example, in full).
        let full = r#"
            data_dir = "d"
            listen = "node-1.coop.test:8645"
            genesis = "genesis.toml"
            validator_key = "v.key"
            p2p_listen = "0.0.0.0:26600"
            block_interval_ms = 1000
            empty_blocks = false
            keep_blocks = 100000
            time_scale = 1
            [grid_operator]
            feeder = "feeder.toml"
            key = "op.key"
            envelope_lead_slots = 2
            pcc_timeout_s = 120
            resync_s = 300
            openadr_upstream = "upstream.toml"
            [gateway]
            mqtt = "broker.coop.test:1883"
            key = "gw.key"
            telemetry_dir = "telemetry"
            [tls]
            cert = "api.crt"
            key = "api.key"
            [mempool]
            max_txs = 1000
            [http]
            max_connections = 64
            [[peers]]
            public_key = "0000000000000000000000000000000000000000000000000000000000000000"
            p2p_address = "full-1.coop.test:26650"
        "#;
        let parsed: gridmesh_node::config::NodeFile = toml::from_str(full).unwrap();
        let table: toml::Value = toml::Value::try_from(&parsed).unwrap();
        for arg in Wrapper::command().get_arguments() {
            let id = arg.get_id().as_str();
            if id == "config" {
                continue;
            }
            let key = keys
                .iter()
                .find(|(flag, _)| *flag == id)
                .map(|(_, key)| *key)
                .unwrap_or_else(|| panic!("--{id} has no key in the node's config file"));
            let found = key.split('.').try_fold(&table, |t, k| t.get(k));
            assert!(found.is_some(), "config key {key} (for --{id}) is not read");
        }
    }
}
