//! The MQTT front end: signed telemetry and slot readings from devices, through any broker.
//!
//! # Topics and payloads
//!
//! | topic | payload |
//! |---|---|
//! | `gridmesh/{chain_id}/telemetry/{id}` | 1 to 1,024 signed samples, 132 bytes each, concatenated ([`gridmesh_ledger::telemetry`]) |
//! | `gridmesh/{chain_id}/readings/{id}` | one slot reading signed by the device: the Borsh encoding of [`DeviceReading`] |
//!
//! `{id}` is free (the device's hex key, or a home gateway's name when it concentrates several
//! devices): every sample names its device and is checked against that device's key. The node
//! subscribes with QoS 1; when its ingest queue is full it stops reading from the broker, which
//! then queues (Mosquitto: `max_queued_messages`) rather than the node dropping silently.
//!
//! # Nothing stops ingest
//! The node's subscriber speaks MQTT 5 and announces [`CLIENT_MAX_PACKET_BYTES`] as its Maximum
//! Packet Size, so the broker drops anything larger for it (MQTT 5, 3.1.2.11.4) instead of sending
//! a packet that would break the connection; with MQTT 3.1.1 one retained message over the
//! client's bound broke it on every reconnect. Payloads above [`MAX_PACKET_BYTES`] (larger than
//! any valid telemetry) but within the client's bound are dropped and counted
//! ([`GatewayStats::dropped`]); so are messages on topics the gateway does not serve.
//!
//! A slot reading is relayed to the ledger only if its signature holds and, when this gateway
//! holds telemetry for that device and slot, its commitment (root and count) equals the one
//! recomputed from the stored samples and its register equals the last sample's; otherwise it is
//! refused and counted. Samples that arrived
//! before the reading are committed first.

use crate::ingest::{IngestReport, Ingestor};
use crate::store::StoreError;
use gridmesh_ledger::crypto;
use gridmesh_ledger::telemetry::RawSample;
use gridmesh_ledger::tx::{device_reading_message, DeviceReading, MAX_DEVICE_READINGS_PER_TX};
use gridmesh_types::units::{slot_start_ms, SLOT_MS};
use rumqttc::v5;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Largest MQTT packet accepted: a full telemetry payload with room for the topic.
pub const MAX_PACKET_BYTES: usize = 1_024 * gridmesh_ledger::telemetry::SAMPLE_BYTES + 1_024;

/// The node subscriber's Maximum Packet Size, announced to the broker (which drops larger packets
/// for it): eight times [`MAX_PACKET_BYTES`], so what lies between is seen, dropped and counted.
pub const CLIENT_MAX_PACKET_BYTES: u32 = 8 * MAX_PACKET_BYTES as u32;

/// Where relayed readings go (the node signs them into `SubmitDeviceReadings` transactions).
pub trait ReadingSink: Send + Sync {
    /// Submits up to [`MAX_DEVICE_READINGS_PER_TX`] readings.
    fn submit(&self, readings: Vec<DeviceReading>) -> Result<(), String>;
}

/// How to reach the broker and how to batch.
#[derive(Clone, Debug)]
pub struct MqttConfig {
    pub host: String,
    pub port: u16,
    pub client_id: String,
    pub chain_id: String,
    /// Payloads waiting for the ingest worker; beyond it the broker connection is not read.
    pub queue_payloads: usize,
    /// Samples verified and committed together (one store transaction).
    pub batch_samples: usize,
    /// Longest wait to fill a batch.
    pub batch_wait: Duration,
}

impl MqttConfig {
    pub fn new(host: &str, port: u16, chain_id: &str) -> MqttConfig {
        MqttConfig {
            host: host.to_string(),
            port,
            client_id: format!("gridmesh-{}", std::process::id()),
            chain_id: chain_id.to_string(),
            queue_payloads: 4_096,
            batch_samples: 8_192,
            batch_wait: Duration::from_millis(20),
        }
    }

    pub fn telemetry_filter(&self) -> String {
        format!("gridmesh/{}/telemetry/+", self.chain_id)
    }

    pub fn readings_filter(&self) -> String {
        format!("gridmesh/{}/readings/+", self.chain_id)
    }
}

/// What the gateway has done so far.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct GatewayStats {
    pub connected: bool,
    pub connections: u64,
    pub payloads: u64,
    pub samples: IngestReport,
    pub readings_relayed: u64,
    /// Refused readings by reason.
    pub readings_refused: std::collections::BTreeMap<String, u64>,
    /// Messages dropped before ingest, by reason (`oversized`: above [`MAX_PACKET_BYTES`];
    /// `unknown-topic`).
    pub dropped: std::collections::BTreeMap<String, u64>,
    pub last_error: Option<String>,
}

fn count_drop(stats: &Mutex<GatewayStats>, why: &str) {
    let mut s = stats.lock().unwrap_or_else(|e| e.into_inner());
    *s.dropped.entry(why.to_string()).or_default() += 1;
}

enum Inbound {
    Telemetry(bytes::Bytes),
    Reading(bytes::Bytes),
}

/// A running MQTT gateway: its connection task and ingest worker.
pub struct MqttGateway {
    stats: Arc<Mutex<GatewayStats>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl MqttGateway {
    /// Connects to the broker (reconnecting on failure) and starts ingesting.
    pub fn start(
        config: MqttConfig,
        ingestor: Ingestor,
        sink: Arc<dyn ReadingSink>,
    ) -> std::io::Result<MqttGateway> {
        let stats = Arc::new(Mutex::new(GatewayStats::default()));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (tx, rx) = mpsc::channel(config.queue_payloads.max(1));
        let conn = {
            let (config, stats, stop) = (config.clone(), stats.clone(), stop.clone());
            std::thread::Builder::new()
                .name("mqtt-conn".into())
                .spawn(move || connection(config, tx, stats, stop))?
        };
        let worker = {
            let stats = stats.clone();
            std::thread::Builder::new()
                .name("mqtt-ingest".into())
                .spawn(move || worker(config, ingestor, sink, rx, stats))?
        };
        Ok(MqttGateway {
            stats,
            stop,
            threads: vec![conn, worker],
        })
    }

    pub fn stats(&self) -> GatewayStats {
        self.stats.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// A handle the API can read stats through.
    pub fn stats_handle(&self) -> Arc<Mutex<GatewayStats>> {
        self.stats.clone()
    }

    /// Disconnects, commits what was queued and joins the threads.
    pub fn stop(mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn set_error(stats: &Mutex<GatewayStats>, e: String) {
    let mut s = stats.lock().unwrap_or_else(|e| e.into_inner());
    s.last_error = Some(e);
}

fn connection(
    config: MqttConfig,
    tx: mpsc::Sender<Inbound>,
    stats: Arc<Mutex<GatewayStats>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return set_error(&stats, format!("mqtt runtime: {e}")),
    };
    rt.block_on(async move {
        use v5::mqttbytes::v5::Packet;
        let mut opts = v5::MqttOptions::new(&config.client_id, &config.host, config.port);
        opts.set_keep_alive(Duration::from_secs(30))
            .set_max_packet_size(Some(CLIENT_MAX_PACKET_BYTES))
            .set_clean_start(true);
        let (client, mut events) = v5::AsyncClient::new(opts, 64);
        let telemetry_prefix = format!("gridmesh/{}/telemetry/", config.chain_id);
        let readings_prefix = format!("gridmesh/{}/readings/", config.chain_id);
        while !stop.load(std::sync::atomic::Ordering::SeqCst) {
            let ev = tokio::time::timeout(Duration::from_millis(200), events.poll()).await;
            match ev {
                Err(_) => continue, // wake up to check `stop`
                Ok(Ok(v5::Event::Incoming(Packet::ConnAck(_)))) => {
                    {
                        let mut s = stats.lock().unwrap_or_else(|e| e.into_inner());
                        s.connected = true;
                        s.connections += 1;
                    }
                    tracing::info!(host = %config.host, port = config.port, "connected to the MQTT broker");
                    for f in [config.telemetry_filter(), config.readings_filter()] {
                        if let Err(e) = client.subscribe(f, v5::mqttbytes::QoS::AtLeastOnce).await {
                            set_error(&stats, format!("subscribe: {e}"));
                        }
                    }
                }
                Ok(Ok(v5::Event::Incoming(Packet::Publish(p)))) => {
                    if p.payload.len() > MAX_PACKET_BYTES {
                        count_drop(&stats, "oversized");
                        continue;
                    }
                    let msg = if p.topic.starts_with(telemetry_prefix.as_bytes()) {
                        Inbound::Telemetry(p.payload)
                    } else if p.topic.starts_with(readings_prefix.as_bytes()) {
                        Inbound::Reading(p.payload)
                    } else {
                        count_drop(&stats, "unknown-topic");
                        continue;
                    };
                    if tx.send(msg).await.is_err() {
                        return;
                    }
                }
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    {
                        let mut s = stats.lock().unwrap_or_else(|e| e.into_inner());
                        s.connected = false;
                        s.last_error = Some(format!("broker {}:{}: {e}", config.host, config.port));
                    }
                    tracing::warn!(host = %config.host, port = config.port, error = %e, "MQTT connection failed; retrying in 1 s");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
        let _ = client.disconnect().await;
    });
}

fn worker(
    config: MqttConfig,
    mut ingestor: Ingestor,
    sink: Arc<dyn ReadingSink>,
    mut rx: mpsc::Receiver<Inbound>,
    stats: Arc<Mutex<GatewayStats>>,
) {
    let mut relay = Vec::new();
    let mut batch: Vec<bytes::Bytes> = Vec::new();
    let mut batch_samples = 0usize;
    let mut deadline: Option<Instant> = None;
    loop {
        let next = if batch.is_empty() {
            match rx.blocking_recv() {
                Some(m) => Some(m),
                None => break,
            }
        } else {
            match rx.try_recv() {
                Ok(m) => Some(m),
                Err(mpsc::error::TryRecvError::Disconnected) => break,
                Err(mpsc::error::TryRecvError::Empty) => {
                    if deadline.is_some_and(|d| Instant::now() < d) {
                        std::thread::sleep(Duration::from_millis(1));
                        continue;
                    }
                    None
                }
            }
        };
        match next {
            Some(Inbound::Telemetry(p)) => {
                batch_samples += p.len() / gridmesh_ledger::telemetry::SAMPLE_BYTES;
                batch.push(p);
                deadline.get_or_insert_with(|| Instant::now() + config.batch_wait);
                if batch_samples < config.batch_samples {
                    continue;
                }
                commit(&mut ingestor, &mut batch, &stats);
            }
            Some(Inbound::Reading(p)) => {
                commit(&mut ingestor, &mut batch, &stats);
                match check_reading(&config.chain_id, &ingestor, &p) {
                    Ok(r) => relay.push(r),
                    Err(why) => {
                        tracing::warn!(%why, "refused a device reading");
                        let mut s = stats.lock().unwrap_or_else(|e| e.into_inner());
                        *s.readings_refused.entry(why).or_default() += 1;
                    }
                }
                if relay.len() == MAX_DEVICE_READINGS_PER_TX {
                    submit(&*sink, &mut relay, &stats);
                }
                continue;
            }
            None => commit(&mut ingestor, &mut batch, &stats),
        }
        batch_samples = 0;
        deadline = None;
        if !relay.is_empty() {
            submit(&*sink, &mut relay, &stats);
        }
    }
    commit(&mut ingestor, &mut batch, &stats);
    if !relay.is_empty() {
        submit(&*sink, &mut relay, &stats);
    }
}

fn commit(ingestor: &mut Ingestor, batch: &mut Vec<bytes::Bytes>, stats: &Mutex<GatewayStats>) {
    if batch.is_empty() {
        return;
    }
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let payloads: Vec<&[u8]> = batch.iter().map(|b| b.as_ref()).collect();
    let outcome = ingestor.ingest(&payloads, now_ms);
    let mut s = stats.lock().unwrap_or_else(|e| e.into_inner());
    s.payloads += batch.len() as u64;
    match outcome {
        Ok(r) => s.samples.merge(&r),
        Err(e) => {
            // Nothing of the batch was committed; the samples are lost to this gateway (the
            // device's own buffer, or another gateway, still has them).
            tracing::error!(error = %e, samples = payloads.len(), "telemetry commit failed");
            s.last_error = Some(e.to_string());
        }
    }
    batch.clear();
}

fn submit(sink: &dyn ReadingSink, relay: &mut Vec<DeviceReading>, stats: &Mutex<GatewayStats>) {
    let n = relay.len() as u64;
    match sink.submit(std::mem::take(relay)) {
        Ok(()) => {
            stats
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .readings_relayed += n
        }
        Err(e) => {
            tracing::warn!(error = %e, "could not submit device readings");
            set_error(stats, format!("submit readings: {e}"));
        }
    }
}

/// Decodes a slot reading, checks its signature and its commitment against stored telemetry.
pub fn check_reading(
    chain_id: &str,
    ingestor: &Ingestor,
    payload: &[u8],
) -> Result<DeviceReading, String> {
    let r: DeviceReading =
        borsh::from_slice(payload).map_err(|_| "not a Borsh-encoded device reading".to_string())?;
    crypto::verify_one(
        &r.device,
        &device_reading_message(chain_id, &r),
        &r.signature,
    )
    .map_err(|_| "signature does not verify for the device key".to_string())?;
    let start = slot_start_ms(r.slot);
    let held = ingestor
        .store()
        .commitment(&r.device, start, start + SLOT_MS)
        .map_err(|e: StoreError| e.to_string())?;
    if held.count > 0 {
        if held.root != r.raw_root || held.count != r.raw_count {
            return Err("commitment differs from the telemetry this gateway holds".to_string());
        }
        if held.last_out_register_mwh != Some(r.register_mwh) {
            return Err("register differs from the slot's last telemetry sample".to_string());
        }
    }
    Ok(r)
}

/// Publishes `messages` (topic, payload) with QoS 1 on one connection and returns once the broker
/// has acknowledged every one of them: a device simulator's (and the ingest benchmark's) sender.
pub fn publish_all(
    host: &str,
    port: u16,
    client_id: &str,
    messages: Vec<(String, Vec<u8>)>,
) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async move {
        let mut opts = MqttOptions::new(client_id, host, port);
        opts.set_keep_alive(Duration::from_secs(30))
            .set_max_packet_size(MAX_PACKET_BYTES, MAX_PACKET_BYTES)
            .set_inflight(1_000);
        let (client, mut events) = AsyncClient::new(opts, 1_024);
        let total = messages.len();
        let sender = tokio::spawn(async move {
            for (topic, payload) in messages {
                client
                    .publish(topic, QoS::AtLeastOnce, false, payload)
                    .await
                    .map_err(|e| e.to_string())?;
            }
            Ok::<_, String>(client)
        });
        let mut acked = 0;
        while acked < total {
            match events.poll().await {
                Ok(Event::Incoming(Packet::PubAck(_))) => acked += 1,
                Ok(_) => {}
                Err(e) => return Err(format!("broker {host}:{port}: {e}")),
            }
        }
        let client = sender.await.map_err(|e| e.to_string())??;
        let _ = client.disconnect().await;
        // Let the disconnect go out.
        let _ = tokio::time::timeout(Duration::from_millis(100), events.poll()).await;
        Ok(())
    })
}

/// A device side's connection to the broker: publishes signed samples and slot readings on the
/// documented topics (reconnecting on its own). Create it inside a Tokio runtime.
pub struct Publisher {
    client: AsyncClient,
    chain_id: String,
    pump: tokio::task::JoinHandle<()>,
}

impl Publisher {
    pub fn connect(host: &str, port: u16, client_id: &str, chain_id: &str) -> Publisher {
        let mut opts = MqttOptions::new(client_id, host, port);
        opts.set_keep_alive(Duration::from_secs(30))
            .set_max_packet_size(MAX_PACKET_BYTES, MAX_PACKET_BYTES);
        let (client, mut events) = AsyncClient::new(opts, 1_024);
        let pump = tokio::spawn(async move {
            loop {
                if let Err(e) = events.poll().await {
                    tracing::warn!(error = %e, "MQTT publisher connection failed; retrying in 1 s");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        });
        Publisher {
            client,
            chain_id: chain_id.to_string(),
            pump,
        }
    }

    fn telemetry_topic(&self, s: &RawSample) -> String {
        format!("gridmesh/{}/telemetry/{}", self.chain_id, s.device)
    }

    /// Queues a sample (false if the queue is full).
    pub fn try_sample(&self, s: &RawSample) -> bool {
        self.client
            .try_publish(
                self.telemetry_topic(s),
                QoS::AtLeastOnce,
                false,
                s.encode().to_vec(),
            )
            .is_ok()
    }

    pub async fn sample(&self, s: &RawSample) -> bool {
        self.client
            .publish(
                self.telemetry_topic(s),
                QoS::AtLeastOnce,
                false,
                s.encode().to_vec(),
            )
            .await
            .is_ok()
    }

    pub async fn reading(&self, r: &DeviceReading) -> bool {
        let topic = format!("gridmesh/{}/readings/{}", self.chain_id, r.device);
        let payload = borsh::to_vec(r).expect("a reading encodes");
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload)
            .await
            .is_ok()
    }

    /// Lets queued messages out, then disconnects.
    pub async fn close(self) {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let _ = self.client.disconnect().await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        self.pump.abort();
    }
}

impl crate::ocpp::SampleSink for Publisher {
    fn publish(&self, sample: RawSample) {
        if !self.try_sample(&sample) {
            tracing::warn!(device = %sample.device, "MQTT queue full: a sample was dropped");
        }
    }
}
