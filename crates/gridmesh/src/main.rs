//! The gridmesh command line. It parses arguments and wires the library crates together; the logic
//! lives in those crates.
//!
//! `--json` output is one JSON document on stdout; human output and progress go to stderr.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use gridmesh_client::client::Client;
use gridmesh_ledger::{Keypair, TxKind};
use gridmesh_node::{NodeConfig, RunningNode, DEFAULT_LISTEN};
use gridmesh_tools::{bench, demo};
use gridmesh_types::{Address, Amount, Hash32};
use serde::Serialize;

/// mimalloc rather than glibc's malloc: the ledger allocates and frees millions of small key/value
/// buffers per simulated day, and glibc's free lists fragment under that (BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const DEFAULT_NODE: &str = "http://127.0.0.1:8645";

#[derive(Parser)]
#[command(
    name = "gridmesh",
    version,
    about = "A node for community-owned energy networks"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// `gridmesh demo`.
#[derive(clap::Args)]
struct DemoArgs {
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

#[derive(Subcommand)]
enum Command {
    /// Run the demo: a simulated 100-home community on an embedded node, a day in about a minute.
    Demo(DemoArgs),
    /// Run a node.
    Node(NodeArgs),
    /// Write and start a local BFT network of several validators (processes on 127.0.0.1).
    Testnet(TestnetArgs),
    /// Make and inspect keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Sign and submit transactions.
    #[command(subcommand)]
    Tx(TxCommand),
    /// Query a node.
    #[command(subcommand)]
    Query(QueryCommand),
    /// Energy market tools.
    #[command(subcommand)]
    Market(MarketCommand),
    /// Grid physics tools.
    #[command(subcommand)]
    Grid(GridCommand),
    /// Device adapters: real hardware protocols into signed telemetry.
    #[command(subcommand)]
    Device(DeviceCommand),
    /// A home's energy agent: bids and asks for the next open slot from the home's forecasts
    /// and the strategy, placed and kept current through the node's API until gate closure.
    Agent(AgentArgs),
    /// Simulate a community from a scenario file (feeder, homes, devices, agents, market,
    /// outages) through the ledger, market and power flow on a simulated clock; writes KPIs (JSON,
    /// CSV), time series (CSV) and an HTML report into --out.
    Sim(SimArgs),
    /// Measure performance.
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(clap::Args)]
struct SimArgs {
    /// The scenario (TOML; see examples/scenarios/).
    scenario: std::path::PathBuf,
    /// Where the report goes (created if missing).
    #[arg(long)]
    out: std::path::PathBuf,
    /// Override a scenario value, e.g. `--set battery.share=0.8` (repeat).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Run once per value of one key: `battery.share=0,0.5,1` or `battery.share=0..1:0.25`.
    #[arg(long, value_name = "KEY=VALUES")]
    sweep: Option<String>,
    /// Print the community KPIs as JSON on stdout.
    #[arg(long)]
    json: bool,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

#[derive(Subcommand)]
enum DeviceCommand {
    /// An OCPP 1.6J central system for EV chargers (`ws://LISTEN/ocpp/{id}`): answers boot,
    /// status, authorization, transactions and meter values, signs every energy register with the
    /// charger's device key and publishes it on MQTT; reads each charger's smart-charging
    /// configuration, then sends the site limit (ChargePointMaxProfile) and the charging plan
    /// (TxDefaultProfile) fitted to it, and clears the plan when a transaction stops.
    Ocpp {
        #[arg(long, default_value = "127.0.0.1:9000")]
        listen: std::net::SocketAddr,
        /// A charger: its charge point id and device key file, `ID=KEYFILE` (repeat).
        #[arg(long = "charger", value_name = "ID=KEYFILE", required = true)]
        chargers: Vec<String>,
        /// Accepted RFID tags (repeat).
        #[arg(long = "id-tag")]
        id_tags: Vec<String>,
        #[arg(long, default_value = gridmesh_ledger::genesis::DEV_CHAIN_ID)]
        chain_id: String,
        /// The broker for the signed samples, HOST:PORT.
        #[arg(long)]
        mqtt: String,
        /// The site's limit for each charger, kW.
        #[arg(long)]
        site_limit_kw: Option<f64>,
        /// The charging plan: `SECONDS:KW` steps from the plan's start, e.g. `0:7.4,900:3.7`.
        #[arg(long, value_delimiter = ',')]
        plan: Vec<String>,
        /// Volts per phase and phases, to turn watts into amperes for chargers that take current.
        #[arg(long, default_value_t = 230.0)]
        volts: f64,
        #[arg(long, default_value_t = 3)]
        phases: u8,
        /// Stop after this many transactions have stopped.
        #[arg(long)]
        sessions: Option<u64>,
        /// Print the event log as JSON at the end.
        #[arg(long)]
        json: bool,
    },
    /// Poll a SunSpec inverter or battery over Modbus TCP (models discovered by walking its map),
    /// sign every measurement with the device key and publish it, and each slot's reading, on
    /// MQTT for a node's gateway. Controls given here (--limit-pct, --charge-pct,
    /// --discharge-pct) are rewritten every poll with a reversion timeout, so the device falls
    /// back by itself when this adapter stops. With --once: discover, apply the controls,
    /// measure once and print, without MQTT.
    Sunspec {
        /// The device, HOST:PORT.
        #[arg(long)]
        modbus: std::net::SocketAddr,
        /// Modbus unit id.
        #[arg(long, default_value_t = 1)]
        unit: u8,
        /// The device's key (registered on the ledger with `tx register-device --device-key`).
        #[arg(long)]
        device_key: PathBuf,
        #[arg(long, default_value = gridmesh_ledger::genesis::DEV_CHAIN_ID)]
        chain_id: String,
        /// The broker, HOST:PORT.
        #[arg(long, required_unless_present = "once")]
        mqtt: Option<String>,
        #[arg(long, default_value_t = 1_000)]
        interval_ms: u64,
        /// Hold the output at this percent of rating.
        #[arg(long)]
        limit_pct: Option<f64>,
        /// Hold charging / discharging at this percent of the battery's maximum rate.
        #[arg(long)]
        charge_pct: Option<f64>,
        #[arg(long)]
        discharge_pct: Option<f64>,
        /// Seconds the device keeps a control after our last write.
        #[arg(long, default_value_t = 30)]
        revert_s: u64,
        /// Stop after this many polls.
        #[arg(long)]
        polls: Option<u64>,
        #[arg(long)]
        once: bool,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum GridCommand {
    /// AC power flow (Newton-Raphson, sparse) on a MATPOWER case or a TOML feeder: voltages,
    /// losses, the lowest voltage, buses outside their band and branches over their rating.
    Powerflow {
        /// A MATPOWER case file (.m, version 2) or a feeder (.toml, see `gridmesh_grid::feeder`).
        #[arg(long)]
        case: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Run an outage scenario (TOML, see `gridmesh_grid::outage`) through the islanding
    /// controller: every transition, and per outage the energy not served, the share of critical
    /// load served, the minutes islanded and the lowest battery state.
    Island {
        #[arg(long)]
        scenario: PathBuf,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum MarketCommand {
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
        /// The feeder (TOML, see `gridmesh_grid::feeder`) whose buses the orders' locations name:
        /// clear without and with its operating envelopes, check both by power flow, and report
        /// the welfare the grid's limits cost.
        #[arg(long)]
        feeder: Option<PathBuf>,
        /// Slot length for the envelopes' energy.
        #[arg(long, default_value_t = 15)]
        slot_minutes: u32,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args)]
struct NodeArgs {
    /// Node config file (TOML, see `gridmesh_node::config`); flags below override it.
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
    /// Run the grid operator's service on this feeder (TOML, see `gridmesh_grid::feeder`):
    /// operating envelopes for every connection point before each gate closure, and islanding
    /// events from the PCC meter's reports (`POST /v1/grid/pcc`). Needs --grid-operator-key.
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

#[derive(Args)]
struct TestnetArgs {
    /// Number of validators.
    #[arg(long, default_value_t = 4)]
    validators: usize,
    /// Number of full nodes (follow the validators, no vote).
    #[arg(long, default_value_t = 0)]
    full_nodes: usize,
    /// Directory for keys, genesis, configs and data (reused if it already holds a testnet).
    #[arg(long)]
    dir: PathBuf,
    /// First p2p port; validator i uses BASE+i for p2p and BASE+100+i for its API.
    #[arg(long, default_value_t = gridmesh_tools::testnet::DEFAULT_BASE_PORT)]
    base_port: u16,
    /// Write the files and exit without starting the validators.
    #[arg(long)]
    init_only: bool,
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Make a new key file and print its address.
    New {
        #[arg(long)]
        out: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Print the address of a key file.
    Show {
        #[arg(long)]
        key: PathBuf,
    },
}

#[derive(Args)]
struct NodeUrl {
    /// The node's API.
    #[arg(long, default_value = DEFAULT_NODE, env = "GRIDMESH_NODE")]
    node: String,
}

#[derive(clap::Args)]
struct AgentArgs {
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
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[command(flatten)]
    node: NodeUrl,
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum TxCommand {
    /// Register a device (PV, battery, EV charger, load, meter) of the key's account. With
    /// --device-key, the device gets its own identity: the device key signs its registration, a
    /// bond is locked, and it carries its location (for solar geometry and the market area).
    RegisterDevice {
        /// pv, battery, ev-charger, load or meter.
        #[arg(long)]
        kind: gridmesh_ledger::DeviceKind,
        /// Rated power in kW, e.g. 5.5.
        #[arg(long)]
        capacity_kw: String,
        /// The device's own key file (its identity on the ledger).
        #[arg(long, requires_all = ["latitude", "longitude"])]
        device_key: Option<PathBuf>,
        /// Market area of the device's connection, e.g. street-1/house-4.
        #[arg(long, default_value = "")]
        location: String,
        /// Coarse position, degrees (north and east positive).
        #[arg(long, allow_hyphen_values = true)]
        latitude: Option<f64>,
        #[arg(long, allow_hyphen_values = true)]
        longitude: Option<f64>,
        /// PV array tilt and azimuth (eastward from north), degrees.
        #[arg(long, default_value_t = 0)]
        tilt: u8,
        #[arg(long, default_value_t = 180)]
        azimuth: u16,
        /// Tokens bonded (at least the market's min_device_bond).
        #[arg(long, default_value = "10")]
        bond: Amount,
        #[command(flatten)]
        common: TxCommon,
    },
    /// Place a market order for a 15-minute delivery slot.
    Order {
        /// Slot index (unix ms / 900000), or `next` for the first slot still open.
        #[arg(long, default_value = "next")]
        slot: String,
        /// bid (buy) or ask (sell).
        #[arg(long)]
        side: String,
        #[arg(long)]
        energy_kwh: String,
        /// Limit price in tokens per kWh.
        #[arg(long)]
        price: String,
        /// Market area of the connection, e.g. street-1/house-4.
        #[arg(long, default_value = "")]
        location: String,
        #[command(flatten)]
        common: TxCommon,
    },
    /// Cancel an open order before gate closure (its escrow returns).
    Cancel {
        #[arg(long)]
        slot: u64,
        #[arg(long)]
        order_id: u64,
        #[command(flatten)]
        common: TxCommon,
    },
    /// Submit the connection meter's import and export for an ended slot.
    Reading {
        #[arg(long)]
        slot: u64,
        #[arg(long, default_value = "0")]
        import_kwh: String,
        #[arg(long, default_value = "0")]
        export_kwh: String,
        #[command(flatten)]
        common: TxCommon,
    },
    /// Grid operator: a connection point's operating envelope for a slot (what its orders may
    /// import and export there).
    Envelope {
        #[arg(long)]
        slot: u64,
        /// The connection's location, as its orders name it.
        #[arg(long)]
        location: String,
        #[arg(long)]
        import_kwh: String,
        #[arg(long)]
        export_kwh: String,
        #[command(flatten)]
        common: TxCommon,
    },
    /// Grid operator: record a transition of the islanding controller (islanded,
    /// resynchronising, reconnected); slots whose gate closes while islanded clear under island
    /// rules.
    GridEvent {
        #[arg(long, value_parser = ["islanded", "resynchronising", "reconnected"])]
        event: String,
        /// When it happened (Unix ms); default: the latest block's time.
        #[arg(long)]
        at_ms: Option<u64>,
        #[command(flatten)]
        common: TxCommon,
    },
    /// Report a device's reading of a slot as false: with --proof-hex, one sample of the
    /// telemetry it committed to (from `GET /v1/telemetry/{device}/{slot}/proof/{index}` of a
    /// node that holds it) that contradicts it, slashing the bond at once; with --physics, a
    /// reading held by a hard physics check, opening a dispute that slashes when the window ends.
    ReportFraud {
        #[arg(long)]
        device: Address,
        #[arg(long)]
        slot: u64,
        #[arg(long, conflicts_with = "physics", required_unless_present = "physics")]
        proof_hex: Option<String>,
        #[arg(long)]
        physics: bool,
        #[command(flatten)]
        common: TxCommon,
    },
    /// Grid operator: dismiss an open physics dispute (nothing is slashed).
    DismissDispute {
        #[arg(long)]
        device: Address,
        #[arg(long)]
        slot: u64,
        #[command(flatten)]
        common: TxCommon,
    },
    /// Grid operator: ask an area's devices to reduce or increase their draw in a slot, valuing
    /// a kWh of response at --value-per-kwh tokens (the weight of the rewards it earns).
    RequestFlex {
        #[arg(long)]
        slot: u64,
        /// Market area, e.g. `street-1` ("" = everyone).
        #[arg(long, default_value = "")]
        area: String,
        #[arg(long, value_parser = ["reduce", "increase"])]
        direction: String,
        #[arg(long)]
        value_per_kwh: String,
        #[command(flatten)]
        common: TxCommon,
    },
    /// Make the key's account a community asset owned in shares (`--holder ADDRESS=SHARES`,
    /// repeated); its market revenue is paid out to the holders pro rata every epoch.
    CreateAsset {
        #[arg(long)]
        name: String,
        #[arg(long = "holder", value_name = "ADDRESS=SHARES", required = true)]
        holders: Vec<String>,
        #[command(flatten)]
        common: TxCommon,
    },
    /// Move shares of a community asset to another account.
    TransferShares {
        #[arg(long)]
        asset: Address,
        #[arg(long)]
        to: Address,
        #[arg(long)]
        shares: u64,
        #[command(flatten)]
        common: TxCommon,
    },
    /// Transfer tokens.
    Transfer {
        #[arg(long)]
        to: Address,
        /// Amount in tokens, e.g. 12.5 (up to 6 decimal places).
        #[arg(long)]
        amount: Amount,
        #[command(flatten)]
        common: TxCommon,
    },
}

#[derive(Args)]
struct TxCommon {
    #[arg(long)]
    key: PathBuf,
    /// Nonce to use (default: the account's next nonce on the node).
    #[arg(long)]
    nonce: Option<u64>,
    /// Return once the node accepted the transaction, without waiting for the block.
    #[arg(long)]
    no_wait: bool,
    #[command(flatten)]
    node: NodeUrl,
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum QueryCommand {
    /// The market's rules, the current slot and the next slot open for orders.
    Market {
        #[command(flatten)]
        node: NodeUrl,
        #[arg(long)]
        json: bool,
    },
    /// A market slot: order book depth, clearing price, volume, trades, welfare, settlement, bills.
    Slot {
        slot: u64,
        #[command(flatten)]
        node: NodeUrl,
        #[arg(long)]
        json: bool,
    },
    /// Chain status.
    Status {
        #[command(flatten)]
        node: NodeUrl,
        #[arg(long)]
        json: bool,
    },
    /// An account's balance and nonce.
    Account {
        address: Address,
        #[command(flatten)]
        node: NodeUrl,
        #[arg(long)]
        json: bool,
    },
    /// A block by height (or `latest`), with transactions and receipts.
    Block {
        height: String,
        #[command(flatten)]
        node: NodeUrl,
        #[arg(long)]
        json: bool,
    },
    /// Token supply: genesis, minted rewards, burns, and whether every balance reconciles with
    /// them; the community fund, bonds and escrow; the last reward epochs.
    Supply {
        #[command(flatten)]
        node: NodeUrl,
        #[arg(long)]
        json: bool,
    },
    /// A home's energy, money, savings, rewards and devices (each device's latest sample where the
    /// node's gateway has one): signs in with the account's key; the owner's home, or one the
    /// owner granted to this account (`--owner`).
    Home {
        /// The account key that signs in.
        #[arg(long)]
        key: PathBuf,
        /// Whose home (default: the key's own).
        #[arg(long)]
        owner: Option<Address>,
        /// Slots up to the current one (96: a day; at most 2976, 31 days).
        #[arg(long, default_value_t = 96)]
        slots: u64,
        #[command(flatten)]
        node: NodeUrl,
        #[arg(long)]
        json: bool,
    },
    /// A transaction by hash, with its receipt.
    Tx {
        hash: Hash32,
        #[command(flatten)]
        node: NodeUrl,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Home schedules (battery, EV, deferrable load over 96 slots): one home, then many over all
    /// cores.
    Agents {
        #[arg(long, default_value_t = 1_000)]
        homes: usize,
        #[arg(long, default_value_t = 21)]
        repeat: usize,
        #[arg(long)]
        json: bool,
    },
    /// A community under every kind of agent over weeks of public weather and load data: bills,
    /// savings against utility-only homes, self-sufficiency, transformer peak, battery cycles.
    Community {
        #[arg(long, default_value_t = 100)]
        homes: usize,
        #[arg(long, default_value_t = 30)]
        days: usize,
        /// Day of 2010 the study starts (0-based; 120 is 1 May).
        #[arg(long, default_value_t = 120)]
        first_day: usize,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// The transformer's rating, kW.
        #[arg(long, default_value_t = 160.0)]
        transformer_kw: f64,
        #[arg(long)]
        json: bool,
    },
    /// Signed device telemetry verified and committed per second: the ingest pipeline alone and
    /// through a Mosquitto broker (MQTT, QoS 1), for each device count.
    Ingest {
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
        #[arg(long)]
        json: bool,
    },
    /// Clear one slot of n random orders with each mechanism; pymarket's Huang auction on the
    /// same orders side by side (from the interop venv, up to --pymarket-max orders).
    Market {
        #[arg(long, value_delimiter = ',', default_value = "10000,100000,1000000")]
        sizes: Vec<usize>,
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "pay-as-clear,pay-as-bid,pay-as-offer,huang,community"
        )]
        mechanisms: Vec<gridmesh_market::Mechanism>,
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
        #[arg(long)]
        json: bool,
    },
    /// ed25519 verification limit and ledger throughput (mempool -> block -> redb), side by side.
    Ledger {
        #[arg(long, default_value_t = 200_000)]
        txs: usize,
        #[arg(long, default_value_t = 10_000)]
        accounts: usize,
        #[arg(long, default_value_t = 1000)]
        block_interval_ms: u64,
        /// Offer load at this fraction of the measured two-core batch-verification limit instead of
        /// as fast as possible (latency at a given load rather than at saturation).
        #[arg(long)]
        offered_load: Option<f64>,
        #[arg(long)]
        json: bool,
    },
    /// BFT validators as processes on loopback vs one solo node, same load through the HTTP API:
    /// finalised transfers per second and submit-to-finalisation latency.
    Testnet {
        /// Network sizes to measure, e.g. `4,7`.
        #[arg(long, value_delimiter = ',', default_value = "4")]
        validators: Vec<usize>,
        #[arg(long, default_value_t = 100_000)]
        txs: usize,
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
        #[arg(long)]
        json: bool,
    },
}

/// Writes one JSON document to stdout. A closed pipe (`| head`) is not an error.
fn print_json<T: Serialize>(v: &T) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let text = serde_json::to_string_pretty(v)?;
    match writeln!(out, "{text}").and_then(|_| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => Ok(r?),
    }
}

fn main() {
    let cli = Cli::parse();
    let default_level = match cli.command {
        Command::Node(_) | Command::Testnet(_) => "info",
        _ => "warn",
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level)),
        )
        .init();
    if let Err(e) = run(cli) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn sim(a: SimArgs) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&a.scenario)
        .with_context(|| format!("reading the scenario {}", a.scenario.display()))?;
    let base = a
        .scenario
        .parent()
        .map(std::path::Path::to_path_buf)
        .unwrap_or_default();
    let context = || format!("scenario {}", a.scenario.display());
    let bar = if a.quiet {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new(0).with_style(
            indicatif::ProgressStyle::with_template(
                "{prefix} [{bar:40}] {pos}/{len} slots, {per_sec}, eta {eta}",
            )
            .expect("template")
            .progress_chars("=> "),
        )
    };
    if let Some(spec) = &a.sweep {
        let (key, values) = gridmesh_sim::scenario::sweep_values(spec).with_context(context)?;
        let runs = gridmesh_sim::sweep(
            &text,
            &base,
            &a.set,
            &key,
            &values,
            &a.out,
            &mut |run, runs, done, total| {
                if done == 1 {
                    bar.reset();
                    bar.set_length(total as u64);
                    bar.set_prefix(format!("{key}={} ({}/{runs})", values[run], run + 1));
                }
                bar.set_position(done as u64);
            },
        )
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(context)?;
        bar.finish_and_clear();
        eprintln!(
            "{:>16} {:>16} {:>16} {:>14} {:>14}",
            key, "self-sufficiency", "self-consumption", "mean bill", "mean savings"
        );
        for r in &runs {
            let c = &r.outcome.community;
            eprintln!(
                "{:>16} {:>15.1}% {:>15.1}% {:>14.2} {:>14.2}",
                r.value,
                c.self_sufficiency * 100.0,
                c.self_consumption.unwrap_or(0.0) * 100.0,
                c.mean_bill,
                c.mean_savings
            );
        }
        eprintln!("summary: {}", a.out.join("sweep.html").display());
        if a.json {
            let rows: Vec<_> = runs
                .iter()
                .map(|r| serde_json::json!({"value": r.value, "community": r.outcome.community, "ledger": r.outcome.ledger, "devices": r.outcome.devices}))
                .collect();
            println!("{}", serde_json::to_string_pretty(&rows)?);
        }
        return Ok(());
    }
    let scenario = gridmesh_sim::Scenario::from_toml(&text, &a.set).with_context(context)?;
    bar.set_prefix(scenario.name.clone());
    let outcome = gridmesh_sim::run(&scenario, &base, &mut |done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    })
    .with_context(context)?;
    bar.finish_and_clear();
    gridmesh_sim::report::write_run(&outcome, &a.out)
        .with_context(|| format!("writing the report into {}", a.out.display()))?;
    eprint!("{}", gridmesh_sim::report::summary(&outcome));
    eprintln!("report: {}", a.out.join("report.html").display());
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "scenario": outcome.scenario,
                "seed": outcome.seed,
                "community": outcome.community,
                "ledger": outcome.ledger,
                "devices": outcome.devices,
                "run_seconds": outcome.run_seconds,
            }))?
        );
    }
    Ok(())
}

/// An `--mqtt HOST:PORT` argument.
fn broker_arg(broker: &str) -> anyhow::Result<(String, u16)> {
    broker
        .rsplit_once(':')
        .and_then(|(h, p)| Some((h.to_string(), p.parse::<u16>().ok()?)))
        .filter(|(h, _)| !h.is_empty())
        .with_context(|| format!("--mqtt {broker:?}: expected HOST:PORT, e.g. 127.0.0.1:1883"))
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Device(DeviceCommand::Ocpp {
            listen,
            chargers,
            id_tags,
            chain_id,
            mqtt,
            site_limit_kw,
            plan,
            volts,
            phases,
            sessions,
            json,
        }) => {
            use gridmesh_gateway::ocpp;
            let mut keys = std::collections::HashMap::new();
            for c in &chargers {
                let (id, file) = c
                    .split_once('=')
                    .with_context(|| format!("--charger {c:?}: expected ID=KEYFILE"))?;
                let key = Keypair::load(std::path::Path::new(file))
                    .with_context(|| format!("loading the key of charger {id}"))?;
                keys.insert(id.to_string(), key);
            }
            let plan = plan
                .iter()
                .map(|step| {
                    let (s, kw) = step
                        .split_once(':')
                        .with_context(|| format!("--plan step {step:?}: expected SECONDS:KW"))?;
                    let limit_w = kw
                        .parse::<f64>()
                        .ok()
                        .filter(|w| w.is_finite() && *w >= 0.0)
                        .with_context(|| format!("--plan step {step:?}: {kw:?} is not kW"))?
                        * 1000.0;
                    Ok(ocpp::PlanStep {
                        start_s: s
                            .parse()
                            .with_context(|| format!("--plan step {step:?}: bad seconds"))?,
                        limit_w,
                    })
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            if plan.windows(2).any(|w| w[1].start_s <= w[0].start_s) {
                bail!("--plan steps must be in increasing order of seconds");
            }
            let (host, port) = broker_arg(&mqtt)?;
            let cfg = ocpp::OcppConfig {
                chargers: keys,
                id_tags,
                chain_id: chain_id.clone(),
                site_limit_w: site_limit_kw.map(|kw| kw * 1000.0),
                plan,
                volts,
                phases,
            };
            runtime()?.block_on(async move {
                let publisher = std::sync::Arc::new(gridmesh_gateway::mqtt::Publisher::connect(
                    &host,
                    port,
                    &format!("gridmesh-ocpp-{}", std::process::id()),
                    &chain_id,
                ));
                let cs = ocpp::CentralSystem::new(cfg, publisher.clone());
                ocpp::serve(cs.clone(), listen, sessions, |addr| {
                    eprintln!("gridmesh OCPP central system on ws://{addr}/ocpp/{{id}}")
                })
                .await
                .with_context(|| format!("serving OCPP on {listen}"))?;
                let events = cs.events.lock().expect("events lock").clone();
                drop(cs);
                match std::sync::Arc::try_unwrap(publisher) {
                    Ok(p) => p.close().await,
                    Err(_) => tokio::time::sleep(std::time::Duration::from_millis(400)).await,
                }
                if json {
                    print_json(&events)
                } else {
                    for e in events {
                        eprintln!("{e}");
                    }
                    Ok(())
                }
            })
        }
        Command::Device(DeviceCommand::Sunspec {
            modbus,
            unit,
            device_key,
            chain_id,
            mqtt,
            interval_ms,
            limit_pct,
            charge_pct,
            discharge_pct,
            revert_s,
            polls,
            once,
            json,
        }) => {
            use gridmesh_gateway::{adapter, sunspec};
            let key = Keypair::load(&device_key)
                .with_context(|| format!("loading the device key {}", device_key.display()))?;
            let controls = adapter::Controls {
                power_limit_pct: limit_pct,
                charge_pct,
                discharge_pct,
                revert: std::time::Duration::from_secs(revert_s),
            };
            runtime()?.block_on(async move {
                if once {
                    let mut dev = sunspec::SunSpecDevice::connect(modbus, unit).await?;
                    let identity = dev.identity().await?;
                    adapter::apply_controls(&mut dev, &controls).await?;
                    let m = dev.measure().await?;
                    let out = serde_json::json!({
                        "base": dev.base,
                        "models": dev.models,
                        "identity": identity,
                        "measurement": m,
                    });
                    if json {
                        return print_json(&out);
                    }
                    eprintln!(
                        "{} {} (serial {}), SunSpec map at {} with models {:?}",
                        identity.manufacturer,
                        identity.model,
                        identity.serial,
                        dev.base,
                        dev.models.iter().map(|m| m.id).collect::<Vec<_>>()
                    );
                    eprintln!("{m:?}");
                    return Ok(());
                }
                let broker = mqtt.expect("clap requires --mqtt without --once");
                let (host, port) = broker_arg(&broker)?;
                let stats = adapter::run(adapter::AdapterConfig {
                    modbus,
                    unit,
                    chain_id,
                    key,
                    mqtt: (host, port),
                    interval: std::time::Duration::from_millis(interval_ms.max(100)),
                    controls,
                    polls,
                })
                .await;
                if json {
                    print_json(&stats)
                } else {
                    eprintln!("{stats:?}");
                    Ok(())
                }
            })
        }
        Command::Demo(a) => run_demo(a),
        Command::Node(a) => run_node(a),
        Command::Testnet(a) => run_testnet(a),
        Command::Keys(KeysCommand::New { out, json }) => {
            if out.exists() {
                bail!(
                    "{} already exists; refusing to overwrite a key",
                    out.display()
                );
            }
            let k = Keypair::generate();
            k.save(&out)?;
            if json {
                print_json(&serde_json::json!({ "address": k.address(), "key_file": out }))?;
            } else {
                eprintln!("wrote {} (keep it secret)", out.display());
                println!("{}", k.address());
            }
            Ok(())
        }
        Command::Keys(KeysCommand::Show { key }) => {
            println!("{}", Keypair::load(&key)?.address());
            Ok(())
        }
        Command::Tx(TxCommand::RegisterDevice {
            kind,
            capacity_kw,
            device_key,
            location,
            latitude,
            longitude,
            tilt,
            azimuth,
            bond,
            common,
        }) => {
            let w = gridmesh_types::parse_fixed(&capacity_kw, 3)
                .with_context(|| format!("--capacity-kw {capacity_kw:?}"))?;
            let capacity_w = u32::try_from(w).context("--capacity-kw is too large")?;
            if let Some(path) = device_key {
                let device = Keypair::load(&path)
                    .with_context(|| format!("loading the device key {}", path.display()))?;
                let owner = Keypair::load(&common.key)?.address();
                let microdeg = |deg: Option<f64>, what: &str, max: f64| -> anyhow::Result<i32> {
                    let d = deg.unwrap_or(0.0);
                    if !(d.is_finite() && d.abs() <= max) {
                        bail!("--{what} {d} is not within ±{max}°");
                    }
                    Ok((d * 1e6).round() as i32)
                };
                let info = gridmesh_ledger::DeviceInfo {
                    kind,
                    capacity_w,
                    location,
                    latitude_microdeg: microdeg(latitude, "latitude", 90.0)?,
                    longitude_microdeg: microdeg(longitude, "longitude", 180.0)?,
                    tilt_deg: tilt,
                    azimuth_deg: azimuth,
                };
                let chain_id = Client::new(&common.node.node).status()?.chain_id;
                let message =
                    gridmesh_ledger::tx::device_registration_message(&chain_id, &owner, &info);
                let device_address = device.address();
                return submit_kind(
                    &common,
                    TxKind::RegisterDeviceKey {
                        device: device_address,
                        info,
                        bond,
                        device_signature: device.sign(&message),
                    },
                    &format!(
                        "{} {device_address} of {capacity_kw} kW registered, {bond} tokens bonded",
                        kind.name()
                    ),
                );
            }
            submit_kind(
                &common,
                TxKind::RegisterDevice { kind, capacity_w },
                &format!("{} of {capacity_kw} kW registered", kind.name()),
            )
        }
        Command::Tx(TxCommand::Order {
            slot,
            side,
            energy_kwh,
            price,
            location,
            common,
        }) => {
            let slot = match slot.as_str() {
                "next" => Client::new(&common.node.node).market()?.next_open_slot,
                s => s
                    .parse()
                    .with_context(|| format!("--slot {s:?} is not a slot number or `next`"))?,
            };
            let side = match side.as_str() {
                "bid" | "buy" => gridmesh_ledger::Side::Bid,
                "ask" | "sell" => gridmesh_ledger::Side::Ask,
                other => anyhow::bail!("--side {other:?} must be bid or ask"),
            };
            let energy_mwh = gridmesh_types::units::parse_kwh(&energy_kwh)
                .with_context(|| format!("--energy-kwh {energy_kwh:?}"))?;
            let price_per_kwh = u64::try_from(
                price
                    .parse::<Amount>()
                    .with_context(|| format!("--price {price:?}"))?
                    .0,
            )
            .context("--price is too large")?;
            let what = format!(
                "{} {energy_kwh} kWh at {price} tokens/kWh for slot {slot}",
                if side == gridmesh_ledger::Side::Bid {
                    "bid"
                } else {
                    "ask"
                }
            );
            submit_kind(
                &common,
                TxKind::PlaceOrder {
                    slot,
                    side,
                    energy_mwh,
                    price_per_kwh,
                    location,
                },
                &what,
            )
        }
        Command::Tx(TxCommand::Cancel {
            slot,
            order_id,
            common,
        }) => submit_kind(
            &common,
            TxKind::CancelOrder { slot, order_id },
            &format!("cancel order {order_id} of slot {slot}"),
        ),
        Command::Tx(TxCommand::Reading {
            slot,
            import_kwh,
            export_kwh,
            common,
        }) => {
            let (import_mwh, export_mwh) = (
                kwh_arg(&import_kwh, "--import-kwh")?,
                kwh_arg(&export_kwh, "--export-kwh")?,
            );
            submit_kind(
                &common,
                TxKind::SubmitReading {
                    slot,
                    import_mwh,
                    export_mwh,
                },
                &format!(
                    "reading for slot {slot}: import {import_kwh} kWh, export {export_kwh} kWh"
                ),
            )
        }
        Command::Tx(TxCommand::Envelope {
            slot,
            location,
            import_kwh,
            export_kwh,
            common,
        }) => {
            let (import_mwh, export_mwh) = (
                kwh_arg(&import_kwh, "--import-kwh")?,
                kwh_arg(&export_kwh, "--export-kwh")?,
            );
            submit_kind(
                &common,
                TxKind::SetEnvelope {
                    slot,
                    location: location.clone(),
                    import_mwh,
                    export_mwh,
                },
                &format!("envelope of {location:?} in slot {slot}: import {import_kwh} kWh, export {export_kwh} kWh"),
            )
        }
        Command::Tx(TxCommand::GridEvent {
            event,
            at_ms,
            common,
        }) => {
            use gridmesh_ledger::GridEventKind;
            let kind = match event.as_str() {
                "islanded" => GridEventKind::Islanded,
                "resynchronising" => GridEventKind::Resynchronising,
                _ => GridEventKind::Reconnected,
            };
            let at_ms = match at_ms {
                Some(t) => t,
                // The chain's clock (which may run faster than the wall clock in simulations).
                None => Client::new(&common.node.node).status()?.timestamp_ms,
            };
            submit_kind(
                &common,
                TxKind::GridEvent { event: kind, at_ms },
                &format!("grid event {event} at {at_ms} ms"),
            )
        }
        Command::Tx(TxCommand::ReportFraud {
            device,
            slot,
            proof_hex,
            physics,
            common,
        }) => {
            use gridmesh_ledger::tx::FraudEvidence;
            let evidence = match (proof_hex, physics) {
                (Some(h), _) => {
                    let bytes = hex::decode(h.trim())
                        .context("--proof-hex is not hex (copy `proof_hex` from the proof API)")?;
                    FraudEvidence::Commitment(
                        borsh::from_slice(&bytes)
                            .context("--proof-hex does not hold a sample proof")?,
                    )
                }
                (None, _) => FraudEvidence::Physics,
            };
            submit_kind(
                &common,
                TxKind::ReportFraud {
                    device,
                    slot,
                    evidence,
                },
                &format!("fraud report on device {device}, slot {slot}"),
            )
        }
        Command::Tx(TxCommand::DismissDispute {
            device,
            slot,
            common,
        }) => submit_kind(
            &common,
            TxKind::DismissDispute { device, slot },
            &format!("dispute on device {device}, slot {slot} dismissed"),
        ),
        Command::Tx(TxCommand::RequestFlex {
            slot,
            area,
            direction,
            value_per_kwh,
            common,
        }) => {
            use gridmesh_ledger::tx::FlexDirection;
            let value = gridmesh_types::parse_fixed(&value_per_kwh, gridmesh_types::TOKEN_DECIMALS)
                .map_err(|e| anyhow::anyhow!("--value-per-kwh: {e}"))?;
            let value_per_kwh = u64::try_from(value).context("--value-per-kwh is too large")?;
            let direction_kind = if direction == "reduce" {
                FlexDirection::Reduce
            } else {
                FlexDirection::Increase
            };
            submit_kind(
                &common,
                TxKind::RequestFlexibility {
                    slot,
                    area: area.clone(),
                    direction: direction_kind,
                    value_per_kwh,
                },
                &format!("flexibility request: {direction} in {area:?}, slot {slot}"),
            )
        }
        Command::Tx(TxCommand::CreateAsset {
            name,
            holders,
            common,
        }) => {
            let holders = holders
                .iter()
                .map(|h| {
                    let (a, n) = h
                        .split_once('=')
                        .with_context(|| format!("--holder {h:?}: expected ADDRESS=SHARES"))?;
                    Ok(gridmesh_ledger::tx::Shareholding {
                        holder: a.parse().with_context(|| format!("--holder {h:?}"))?,
                        shares: n
                            .parse()
                            .with_context(|| format!("--holder {h:?}: shares must be a number"))?,
                    })
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            submit_kind(
                &common,
                TxKind::CreateAsset {
                    name: name.clone(),
                    holders,
                },
                &format!("community asset {name:?}"),
            )
        }
        Command::Tx(TxCommand::TransferShares {
            asset,
            to,
            shares,
            common,
        }) => submit_kind(
            &common,
            TxKind::TransferShares { asset, to, shares },
            &format!("{shares} shares of {asset} to {to}"),
        ),
        Command::Tx(TxCommand::Transfer { to, amount, common }) => {
            let from = Keypair::load(&common.key)?.address();
            submit_kind(
                &common,
                TxKind::Transfer { to, amount },
                &format!("{amount} tokens from {from} to {to}"),
            )
        }
        Command::Query(q) => run_query(q),
        Command::Grid(GridCommand::Island { scenario, json }) => {
            let report = gridmesh_tools::grid_report::island(&scenario)?;
            if json {
                print_json(&report)
            } else {
                eprint!("{report}");
                Ok(())
            }
        }
        Command::Grid(GridCommand::Powerflow { case, json }) => {
            let report = gridmesh_tools::grid_report::powerflow(&case)?;
            if json {
                print_json(&report)
            } else {
                eprint!("{report}");
                Ok(())
            }
        }
        Command::Market(MarketCommand::Clear {
            orders,
            mechanism,
            feeder,
            slot_minutes,
            json,
        }) => {
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
                return if json {
                    print_json(&report)
                } else {
                    eprint!("{report}");
                    Ok(())
                };
            }
            let report = set.clear(mechanism)?;
            if json {
                print_json(&report)
            } else {
                eprint!("{report}");
                Ok(())
            }
        }
        Command::Bench(BenchCommand::Agents {
            homes,
            repeat,
            json,
        }) => {
            let rows = gridmesh_tools::bench_agent::run(homes.max(1), repeat);
            for r in &rows {
                eprintln!("{r}");
            }
            if json {
                print_json(&rows)?;
            }
            Ok(())
        }
        Command::Sim(a) => sim(a),
        Command::Agent(a) => {
            use gridmesh_client::agent_runner as runner;
            let text = std::fs::read_to_string(&a.home)
                .with_context(|| format!("reading {}", a.home.display()))?;
            let home = runner::HomeSpec::parse(&text)
                .with_context(|| format!("in {}", a.home.display()))?;
            if a.reprice.is_nan() || a.reprice < 0.0 || a.poll_ms == 0 {
                bail!("--reprice must be at least 0 and --poll-ms positive");
            }
            let data =
                runner::HomeData::load(&home, &gridmesh_tools::bench_grid::shared_data_dir())?;
            let cfg = runner::AgentConfig {
                key: Keypair::load(&a.key)?,
                node: a.node.node,
                home,
                strategy: a.strategy,
                slots: a.slots,
                window_ms: a.window_minutes.saturating_mul(60_000),
                gate_margin_ms: a.gate_margin_s.saturating_mul(1_000),
                reprice_per_kwh: a.reprice,
                poll: Duration::from_millis(a.poll_ms),
                seed: a.seed,
            };
            let report = runner::run(&cfg, &data, || false)?;
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
        Command::Bench(BenchCommand::Community {
            homes,
            days,
            first_day,
            seed,
            transformer_kw,
            json,
        }) => {
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
        Command::Bench(BenchCommand::Ingest {
            devices,
            seconds,
            per_message,
            batch_samples,
            no_mqtt,
            json,
        }) => {
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
        Command::Bench(BenchCommand::Grid {
            cases,
            radial_buses,
            repeat,
            no_pandapower,
            json,
        }) => {
            use gridmesh_tools::bench_grid;
            let cases = cases.or_else(|| {
                let d = bench_grid::shared_data_dir().join("grid");
                d.exists().then_some(d)
            });
            if cases.is_none() {
                eprintln!("no ../shared/data/grid: only the generated feeder is measured");
            }
            let python = if no_pandapower {
                None
            } else {
                let p = gridmesh_tools::interop_python();
                if p.is_none() {
                    eprintln!("no interop venv (run ./scripts/setup): pandapower skipped");
                }
                p
            };
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
        Command::Bench(BenchCommand::Market {
            sizes,
            mechanisms,
            repeat,
            pymarket_max,
            pymarket_timeout,
            no_pymarket,
            ledger_homes,
            json,
        }) => {
            let python = if no_pymarket {
                None
            } else {
                let p = gridmesh_tools::interop_python();
                if p.is_none() {
                    eprintln!("no interop venv (run ./scripts/setup): pymarket skipped");
                }
                p
            };
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
        Command::Bench(BenchCommand::Ledger {
            txs,
            accounts,
            block_interval_ms,
            offered_load,
            json,
        }) => {
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
        Command::Bench(BenchCommand::Testnet {
            validators,
            txs,
            accounts,
            offered_tps,
            no_solo,
            base_port,
            json,
        }) => {
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

fn run_demo(a: DemoArgs) -> anyhow::Result<()> {
    if a.tour {
        let report = runtime()?.block_on(demo::run(|line| eprintln!("{line}")))?;
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
    // Check the scenario before binding anything.
    gridmesh_tools::demo_community::scenario(&opts.scenario, &opts.overrides)
        .context("the demo's scenario")?;
    opts.listen = match std::net::TcpListener::bind(a.listen) {
        Ok(_) => a.listen,
        Err(e) => {
            eprintln!("{} is not free ({e}); taking a free port", a.listen);
            std::net::SocketAddr::new(a.listen.ip(), 0)
        }
    };
    opts.keep_serving = a.serve;
    let run = runtime()?.block_on(gridmesh_tools::demo_community::run(opts, |line| {
        eprintln!("{line}")
    }))?;
    if let Some(dir) = &a.out {
        gridmesh_sim::report::write_run(&run.outcome, dir)
            .with_context(|| format!("writing the report into {}", dir.display()))?;
        eprintln!("report: {}", dir.join("report.html").display());
    }
    if a.json {
        print_json(&run)?;
    }
    Ok(())
}

fn run_node(a: NodeArgs) -> anyhow::Result<()> {
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
    cfg.time_scale = a.time_scale.max(1);
    if let (Some(feeder), Some(key)) = (&a.grid_feeder, &a.grid_operator_key) {
        let text = std::fs::read_to_string(feeder)
            .with_context(|| format!("reading {}", feeder.display()))?;
        let feeder_model = gridmesh_grid::Feeder::from_toml(&text)
            .with_context(|| format!("in {}", feeder.display()))?;
        if !(1..=96).contains(&a.envelope_lead_slots) {
            bail!("--envelope-lead-slots must be 1 to 96");
        }
        cfg.grid_operator = Some(gridmesh_node::grid_operator::GridOperatorConfig {
            feeder: feeder_model,
            key: Keypair::load(key)
                .with_context(|| format!("loading the grid operator key {}", key.display()))?,
            lead_slots: a.envelope_lead_slots,
            pcc_timeout_ms: a.pcc_timeout_s.saturating_mul(1000),
            resync_ms: a.resync_s.saturating_mul(1000),
            gate_margin_ms: gridmesh_node::grid_operator::gate_margin_ms(
                cfg.block_interval,
                cfg.time_scale,
            ),
        });
    }
    if let (Some(broker), Some(key)) = (&a.mqtt, &a.gateway_key) {
        let (host, port) = broker_arg(broker)?;
        cfg.device_gateway = Some(gridmesh_node::device_gateway::DeviceGatewayConfig {
            mqtt_host: host,
            mqtt_port: port,
            key: Keypair::load(key)
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

fn run_testnet(a: TestnetArgs) -> anyhow::Result<()> {
    let t = gridmesh_tools::testnet::init_with(
        &a.dir,
        a.validators,
        a.full_nodes,
        a.base_port,
        vec![],
    )?;
    eprintln!(
        "testnet {} in {}: {} validators (genesis {}, faucet key {})",
        t.chain_id,
        a.dir.display(),
        t.validators.len(),
        a.dir.join("genesis.toml").display(),
        a.dir.join("faucet.key").display()
    );
    if a.init_only {
        for i in 0..t.validators.len() {
            println!(
                "validator {i}: gridmesh node --config {}",
                t.config_path(&a.dir, i).display()
            );
        }
        for j in 0..t.full_nodes.len() {
            println!(
                "full node {j}: gridmesh node --config {}",
                t.full_node_config_path(&a.dir, j).display()
            );
        }
        return Ok(());
    }
    let exe = std::env::current_exe().context("locating the gridmesh binary")?;
    let mut children = Vec::new();
    let nodes = t
        .validators
        .iter()
        .map(|v| ("validator", "v", v))
        .chain(t.full_nodes.iter().map(|f| ("full node", "f", f)));
    for (what, prefix, v) in nodes {
        let i = v.index;
        let log_path = a.dir.join(format!("{prefix}{i}/node.log"));
        let log = std::fs::File::create(&log_path)?;
        let child = std::process::Command::new(&exe)
            .args(["node", "--config"])
            .arg(a.dir.join(&v.config))
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {what} {i}"))?;
        println!(
            "{what} {i}: api http://{} p2p {} address {} (log {})",
            v.api,
            v.p2p,
            v.address,
            log_path.display()
        );
        children.push(child);
    }
    eprintln!("running; Ctrl-C stops all validators");
    let mut reported = vec![false; children.len()];
    runtime()?.block_on(async {
        loop {
            tokio::select! {
                _ = shutdown_signal() => break,
                _ = tokio::time::sleep(Duration::from_millis(500)) => {
                    for (i, c) in children.iter_mut().enumerate() {
                        if let Ok(Some(status)) = c.try_wait() {
                            if !reported[i] {
                                eprintln!("node {i} exited ({status}); see its node.log");
                                reported[i] = true;
                            }
                        }
                    }
                }
            }
        }
    });
    for c in &children {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status();
    }
    for mut c in children {
        let _ = c.wait();
    }
    Ok(())
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing a SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

/// Signs a transaction of `kind` with the common key, submits it and (unless --no-wait) waits for
/// its block; prints the receipt's events.
/// An energy in kWh from a flag, in mWh.
fn kwh_arg(text: &str, flag: &str) -> anyhow::Result<u64> {
    gridmesh_types::units::parse_kwh(text).with_context(|| format!("{flag} {text:?}"))
}

fn submit_kind(common: &TxCommon, kind: TxKind, what: &str) -> anyhow::Result<()> {
    let key = Keypair::load(&common.key)?;
    let client = Client::new(&common.node.node);
    let status = client.status()?;
    let nonce = match common.nonce {
        Some(n) => n,
        None => client.account(&key.address())?.nonce,
    };
    let tx = gridmesh_ledger::SignedTx::new(&key, &status.chain_id, nonce, kind);
    let accepted = client
        .submit(&tx)
        .with_context(|| format!("{what}: refused"))?;
    if common.no_wait {
        if common.json {
            print_json(&accepted)?;
        } else {
            eprintln!("submitted {} (pending)", accepted.hash);
        }
        return Ok(());
    }
    let hash: Hash32 = accepted.hash.parse()?;
    let committed = client.wait_committed(&hash, Duration::from_secs(60))?;
    if common.json {
        print_json(&committed)?;
    } else {
        eprintln!(
            "committed {} in block {}: {what}",
            committed.hash,
            committed.height.unwrap_or_default()
        );
        if let Some(r) = &committed.receipt {
            for e in &r.events {
                eprintln!(
                    "  {}",
                    e.details.as_ref().map_or(e.kind.clone(), |d| d.to_string())
                );
            }
        }
    }
    Ok(())
}

fn run_query(q: QueryCommand) -> anyhow::Result<()> {
    match q {
        QueryCommand::Market { node, json } => {
            let m = Client::new(&node.node).market()?;
            if json {
                print_json(&m)?;
            } else {
                eprintln!(
                    "mechanism {}, gate closes {} min before delivery; current slot {}, next open slot {}",
                    m.mechanism, m.gate_closure_minutes, m.current_slot, m.next_open_slot
                );
                eprintln!(
                    "escrow {} holds {} tokens",
                    m.escrow_account, m.escrow_balance
                );
            }
        }
        QueryCommand::Slot { slot, node, json } => {
            let v = Client::new(&node.node)
                .market_slot(slot)?
                .ok_or_else(|| anyhow::anyhow!("slot {slot} has no orders"))?;
            if json {
                return print_json(&v);
            }
            eprintln!(
                "slot {} ({}), {} orders, mechanism {}",
                v.slot, v.status, v.orders, v.mechanism
            );
            eprintln!(
                "clearing price {} tokens/kWh, volume {} kWh, welfare {} of an optimal {}",
                v.clearing_price_per_kwh.as_deref().unwrap_or("-"),
                v.volume_kwh,
                v.welfare,
                v.optimal_welfare
            );
            for m in &v.markets {
                eprintln!(
                    "  market {:<24} {} kWh at {} tokens/kWh",
                    if m.area.is_empty() { "(root)" } else { &m.area },
                    m.volume_kwh,
                    m.price_per_kwh.as_deref().unwrap_or("-")
                );
            }
            for t in &v.trades {
                let s = t.settlement.as_ref().map_or("unsettled".to_string(), |s| {
                    format!(
                        "delivered {} kWh{}{}",
                        s.delivered_kwh,
                        if s.estimated { " (estimated)" } else { "" },
                        if s.is_final { "" } else { ", provisional" }
                    )
                });
                eprintln!(
                    "  #{} bid {} <- ask {}: {} kWh at {} (seller {}, fee {}): {s}",
                    t.index,
                    t.bid,
                    t.ask,
                    t.energy_kwh,
                    t.price_per_kwh,
                    t.seller_price_per_kwh,
                    t.fee_per_kwh
                );
            }
        }
        QueryCommand::Status { node, json } => {
            let s = Client::new(&node.node).status()?;
            if json {
                return print_json(&s);
            }
            eprintln!(
                "chain {} at height {} (head {}, state root {}), {} pending, supply {} tokens",
                s.chain_id, s.height, s.head_hash, s.state_root, s.mempool_size, s.total_supply
            );
        }
        QueryCommand::Account {
            address,
            node,
            json,
        } => {
            let a = Client::new(&node.node).account(&address)?;
            if json {
                return print_json(&a);
            }
            eprintln!(
                "{}: {} tokens, next nonce {}",
                a.address, a.balance, a.nonce
            );
        }
        QueryCommand::Block { height, node, json } => {
            let h = if height == "latest" {
                None
            } else {
                Some(height.parse::<u64>().with_context(|| {
                    format!("block height {height:?} is not a number or `latest`")
                })?)
            };
            let b = Client::new(&node.node)
                .block(h)?
                .with_context(|| format!("no block at height {height}"))?;
            if json {
                return print_json(&b);
            }
            eprintln!(
                "block {} {}\n  parent {}\n  time {} ms, proposer {}\n  tx root {}\n  state root {}\n  {} transactions",
                b.height, b.hash, b.parent_hash, b.timestamp_ms, b.proposer, b.tx_root, b.state_root, b.tx_count
            );
            for t in &b.txs {
                eprintln!(
                    "    {} {} nonce {}: {} {} tokens to {}",
                    t.hash,
                    t.sender,
                    t.nonce,
                    t.kind,
                    t.amount.as_deref().unwrap_or("-"),
                    t.to.as_deref().unwrap_or("-")
                );
            }
        }
        QueryCommand::Supply { node, json } => {
            let v = Client::new(&node.node).supply()?;
            if json {
                return print_json(&v);
            }
            eprintln!(
                "supply at block {}: genesis {} + minted {} - burned {} = {} tokens; balances sum to {} ({})",
                v.height,
                v.genesis,
                v.minted,
                v.burned,
                v.expected,
                v.accounted,
                if v.reconciled { "reconciled" } else { "NOT RECONCILED" }
            );
            eprintln!(
                "community fund {}, device bonds {}, escrow {}; emission cap {}",
                v.community_fund, v.device_bonds, v.escrow, v.emission_cap
            );
            for e in &v.epochs {
                eprintln!(
                    "epoch {}: minted {} of {} to {} owners; assets paid out {}",
                    e.epoch, e.minted, e.emission, e.recipients, e.asset_payouts
                );
            }
            if !v.reconciled {
                bail!("the supply does not reconcile");
            }
        }
        QueryCommand::Home {
            key,
            owner,
            slots,
            node,
            json,
        } => {
            let key = Keypair::load(&key)?;
            let owner = owner.unwrap_or_else(|| key.address());
            let client = Client::new(&node.node);
            let token = client.sign_in(&key)?;
            let h = client.home(&owner, &token, slots)?;
            if json {
                return print_json(&h);
            }
            let t = &h.totals;
            let slot_start_ms = gridmesh_types::units::slot_start_ms;
            let period = if h.last_slot == 0 {
                "no slots yet (the chain has no block with a time)".to_string()
            } else {
                format!(
                    "from {} to {}",
                    gridmesh_sim::kpi::utc(slot_start_ms(h.first_slot) / 1_000),
                    gridmesh_sim::kpi::utc(slot_start_ms(h.last_slot + 1) / 1_000)
                )
            };
            eprintln!("home {}: balance {} tokens; {period}", h.address, h.balance);
            eprintln!(
                "  meter: imported {} kWh, exported {} kWh; from neighbours {} kWh, to neighbours {} kWh",
                t.import_kwh, t.export_kwh, t.bought_kwh, t.sold_kwh
            );
            eprintln!(
                "  bill {} tokens (utility only {}; saved {}); rewards {} tokens",
                t.bill, t.baseline_bill, t.savings, t.rewards
            );
            for d in &h.devices {
                let now = d.now.as_ref().map_or("no sample on this node".into(), |n| {
                    format!(
                        "{} W at {}",
                        n.power_w,
                        gridmesh_sim::kpi::utc(n.time_ms / 1_000)
                    )
                });
                eprintln!(
                    "  device {} ({}, {} W, {}): now {}; readings {} accepted, {} pending, {} held",
                    d.device,
                    d.kind,
                    d.capacity_w,
                    d.status,
                    now,
                    d.readings_accepted,
                    d.readings_pending,
                    d.held.len()
                );
                for x in &d.held {
                    eprintln!("    slot {} held: {}", x.slot, x.reason);
                }
            }
        }
        QueryCommand::Tx { hash, node, json } => {
            let t = Client::new(&node.node)
                .tx(&hash)?
                .with_context(|| format!("transaction {hash} is unknown to the node"))?;
            if json {
                return print_json(&t);
            }
            eprintln!(
                "{} {}{}: {} {} tokens from {} to {}",
                t.hash,
                t.status,
                t.height
                    .map(|h| format!(" in block {h}"))
                    .unwrap_or_default(),
                t.tx.kind,
                t.tx.amount.as_deref().unwrap_or("-"),
                t.tx.sender,
                t.tx.to.as_deref().unwrap_or("-"),
            );
        }
    }
    Ok(())
}
