//! The node's device gateway: MQTT telemetry into the local telemetry store, devices' slot
//! readings onto the ledger (signed by the gateway's key into `SubmitDeviceReadings`).

use crate::submitter::Submitter;
use crate::Shared;
use gridmesh_gateway::ingest::IngestLimits;
use gridmesh_gateway::mqtt::{GatewayStats, MqttConfig, MqttGateway, ReadingSink};
use gridmesh_gateway::{DeviceDirectory, DeviceLimits, Ingestor, TelemetryStore};
use gridmesh_ledger::devices::DeviceStatus;
use gridmesh_ledger::readers::DeviceReader;
use gridmesh_ledger::tx::{DeviceReading, TxKind};
use gridmesh_ledger::Keypair;
use gridmesh_types::Address;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How the node reaches its devices.
#[derive(Clone, Debug)]
pub struct DeviceGatewayConfig {
    /// The MQTT broker, `host:port`.
    pub mqtt_host: String,
    pub mqtt_port: u16,
    /// Signs the `SubmitDeviceReadings` transactions (pays nothing but needs an account nonce).
    pub key: Keypair,
    /// Where the telemetry store lives (default: `<data dir>/telemetry`).
    pub telemetry_dir: Option<PathBuf>,
}

/// What the API reads of the gateway.
pub struct GatewayHandles {
    pub stats: Arc<Mutex<GatewayStats>>,
    pub store: Arc<TelemetryStore>,
    pub broker: String,
}

/// How long a device's registration is trusted before it is read from the chain again.
const DIRECTORY_TTL: Duration = Duration::from_secs(5);

/// The chain's registered, active devices, cached for [`DIRECTORY_TTL`].
pub struct ChainDirectory {
    shared: Arc<Shared>,
    cache: Mutex<HashMap<Address, (Option<DeviceLimits>, Instant)>>,
}

/// Most devices cached (the cache is emptied when full).
const DIRECTORY_CAPACITY: usize = 200_000;

impl ChainDirectory {
    pub fn new(shared: Arc<Shared>) -> ChainDirectory {
        ChainDirectory {
            shared,
            cache: Default::default(),
        }
    }

    fn lookup(&self, device: &Address) -> Option<DeviceLimits> {
        let chain = self.shared.chain.read().expect("chain lock");
        let d = chain.state().device(device)?;
        (d.status == DeviceStatus::Active).then_some(DeviceLimits {
            capacity_w: d.info.capacity_w,
        })
    }
}

impl DeviceDirectory for ChainDirectory {
    fn limits(&self, device: &Address) -> Option<DeviceLimits> {
        let mut cache = self.cache.lock().expect("directory lock");
        if let Some((l, at)) = cache.get(device) {
            if at.elapsed() < DIRECTORY_TTL {
                return *l;
            }
        }
        let l = self.lookup(device);
        if cache.len() >= DIRECTORY_CAPACITY {
            cache.clear();
        }
        cache.insert(*device, (l, Instant::now()));
        l
    }
}

/// Relays readings into the mempool as the gateway's transactions.
struct LedgerSink {
    shared: Arc<Shared>,
    submitter: Mutex<Submitter>,
}

impl ReadingSink for LedgerSink {
    fn submit(&self, readings: Vec<DeviceReading>) -> Result<(), String> {
        // What the mempool refuses for now is lost to the relay as any refusal is (the device's
        // own buffer still has it).
        let submitted = self.submitter.lock().expect("submitter lock").submit(
            &self.shared,
            vec![TxKind::SubmitDeviceReadings { readings }],
        );
        match submitted.errors.last() {
            None => Ok(()),
            Some(e) => Err(e.clone()),
        }
    }
}

/// Opens the telemetry store and connects to the broker.
pub fn start(
    shared: Arc<Shared>,
    cfg: &DeviceGatewayConfig,
    data_dir: &std::path::Path,
) -> anyhow::Result<(MqttGateway, GatewayHandles)> {
    let dir = cfg
        .telemetry_dir
        .clone()
        .unwrap_or_else(|| data_dir.join("telemetry"));
    let store = Arc::new(TelemetryStore::open(&dir)?);
    let chain_id = shared
        .chain
        .read()
        .expect("chain lock")
        .chain_id()
        .to_string();
    let ingestor = Ingestor::new(
        &chain_id,
        Arc::new(ChainDirectory::new(shared.clone())),
        store.clone(),
        IngestLimits::default(),
    )?;
    let sink = Arc::new(LedgerSink {
        shared: shared.clone(),
        submitter: Mutex::new(Submitter::new(cfg.key.clone())),
    });
    let gw = MqttGateway::start(
        MqttConfig::new(&cfg.mqtt_host, cfg.mqtt_port, &chain_id),
        ingestor,
        sink,
    )?;
    let handles = GatewayHandles {
        stats: gw.stats_handle(),
        store,
        broker: format!("{}:{}", cfg.mqtt_host, cfg.mqtt_port),
    };
    Ok((gw, handles))
}
