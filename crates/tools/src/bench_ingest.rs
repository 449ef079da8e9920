//! `gridmesh bench ingest`: signed telemetry verified and committed per second.
//!
//! Homes' devices each send one sample a second; `per_message` samples of one device travel in
//! one MQTT message (a device that publishes every few seconds, or a home gateway's batch).
//! Samples are signed before the clock starts (that is the devices' work). Two paths are timed:
//!
//! - `direct`: the ingest pipeline alone (framing, registration, batch signature verification over
//!   all cores, replay and physics checks, one durable redb commit per batch);
//! - `mqtt`: the same through a Mosquitto broker: a publisher with QoS 1, the node's gateway
//!   subscribed, from the first publish to the last sample committed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use gridmesh_gateway::ingest::IngestLimits;
use gridmesh_gateway::mqtt::{publish_all, MqttConfig, MqttGateway, ReadingSink};
use gridmesh_gateway::{DeviceLimits, Ingestor, TelemetryStore};
use gridmesh_ledger::telemetry::RawSample;
use gridmesh_ledger::tx::DeviceReading;
use gridmesh_ledger::Keypair;
use serde::Serialize;

#[derive(Clone, Debug)]
pub struct IngestBenchOptions {
    pub devices: usize,
    /// Seconds of telemetry per device (one sample a second).
    pub seconds: usize,
    pub per_message: usize,
    /// Samples verified and committed together.
    pub batch_samples: usize,
    /// Run the MQTT path (needs Mosquitto).
    pub mqtt: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct IngestBenchRow {
    pub path: &'static str,
    pub devices: usize,
    pub samples: u64,
    pub per_message: usize,
    pub seconds: f64,
    pub samples_per_s: f64,
}

impl std::fmt::Display for IngestBenchRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:<7} {:>6} devices {:>8} samples ({:>3}/msg)  {:>7.2} s  {:>9.0} samples/s",
            self.path,
            self.devices,
            self.samples,
            self.per_message,
            self.seconds,
            self.samples_per_s
        )
    }
}

const CHAIN: &str = "bench-ingest";

/// Signed payloads of every device, message by message, interleaved across devices as they
/// would arrive: (device index, payload).
fn payloads(
    keys: &[Keypair],
    t0_ms: u64,
    seconds: usize,
    per_message: usize,
) -> Vec<(usize, Vec<u8>)> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let chunk = keys.len().div_ceil(threads).max(1);
    let per_device: Vec<Vec<Vec<u8>>> = std::thread::scope(|s| {
        let handles: Vec<_> = keys
            .chunks(chunk)
            .map(|ks| {
                s.spawn(move || {
                    ks.iter()
                        .map(|k| {
                            let samples: Vec<[u8; 132]> = (1..=seconds as u64)
                                .map(|t| {
                                    RawSample::signed(
                                        k,
                                        CHAIN,
                                        t,
                                        t0_ms + t * 1_000,
                                        t * 500,
                                        0,
                                        1_800,
                                    )
                                    .encode()
                                })
                                .collect();
                            samples.chunks(per_message).map(|c| c.concat()).collect()
                        })
                        .collect::<Vec<Vec<Vec<u8>>>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("signer thread"))
            .collect()
    });
    let rounds = seconds.div_ceil(per_message);
    let mut out = Vec::with_capacity(rounds * keys.len());
    let mut iters: Vec<_> = per_device.into_iter().map(|v| v.into_iter()).collect();
    for _ in 0..rounds {
        for (d, it) in iters.iter_mut().enumerate() {
            if let Some(p) = it.next() {
                out.push((d, p));
            }
        }
    }
    out
}

fn setup(keys: &[Keypair], batch_samples: usize) -> anyhow::Result<(tempfile::TempDir, Ingestor)> {
    let dir = tempfile::tempdir()?;
    let directory: std::collections::HashMap<_, _> = keys
        .iter()
        .map(|k| (k.address(), DeviceLimits { capacity_w: 5_000 }))
        .collect();
    let store = Arc::new(TelemetryStore::open(dir.path())?);
    let limits = IngestLimits {
        max_samples_per_payload: batch_samples.max(1_024),
        ..Default::default()
    };
    let ing = Ingestor::new(CHAIN, Arc::new(directory), store, limits)?;
    Ok((dir, ing))
}

struct NoSink;
impl ReadingSink for NoSink {
    fn submit(&self, _: Vec<DeviceReading>) -> Result<(), String> {
        Ok(())
    }
}

pub fn run(o: &IngestBenchOptions) -> anyhow::Result<Vec<IngestBenchRow>> {
    if o.devices == 0 || o.seconds == 0 || o.per_message == 0 || o.per_message > 1_024 {
        bail!("devices and seconds must be positive, per-message 1 to 1024");
    }
    let keys: Vec<Keypair> = (0..o.devices)
        .map(|i| {
            let mut seed = [0u8; 32];
            seed[..8].copy_from_slice(&(i as u64 + 1).to_le_bytes());
            Keypair::from_seed(seed)
        })
        .collect();
    eprintln!(
        "signing {} samples of {} devices...",
        o.devices * o.seconds,
        o.devices
    );
    // The telemetry of the last `seconds` (the gateway refuses samples from the future).
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as u64;
    let t0_ms = now_ms - (o.seconds as u64 + 1) * 1_000;
    let msgs = payloads(&keys, t0_ms, o.seconds, o.per_message);
    let total = (o.devices * o.seconds) as u64;
    let mut rows = Vec::new();

    // Direct: the pipeline without a broker, in batches as the gateway's worker forms them.
    let (_dir, mut ing) = setup(&keys, o.batch_samples)?;
    let per_batch = (o.batch_samples / o.per_message).max(1);
    let start = Instant::now();
    let mut accepted = 0;
    for batch in msgs.chunks(per_batch) {
        let refs: Vec<&[u8]> = batch.iter().map(|(_, p)| p.as_slice()).collect();
        let r = ing.ingest(&refs, now_ms)?;
        accepted += r.accepted;
        if r.rejected_total() > 0 {
            bail!("the benchmark's own samples were refused: {:?}", r.rejected);
        }
    }
    let secs = start.elapsed().as_secs_f64();
    if accepted != total {
        bail!("{accepted} of {total} samples accepted");
    }
    rows.push(IngestBenchRow {
        path: "direct",
        devices: o.devices,
        samples: total,
        per_message: o.per_message,
        seconds: secs,
        samples_per_s: total as f64 / secs,
    });
    drop(ing);

    if o.mqtt {
        let broker = crate::broker::LocalMosquitto::start()?;
        let (_dir, ing) = setup(&keys, o.batch_samples)?;
        let mut cfg = MqttConfig::new("127.0.0.1", broker.port, CHAIN);
        cfg.batch_samples = o.batch_samples;
        let gw = MqttGateway::start(cfg.clone(), ing, Arc::new(NoSink))?;
        let start = Instant::now();
        while !gw.stats().connected {
            if start.elapsed() > Duration::from_secs(10) {
                bail!("the gateway did not connect to mosquitto");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        std::thread::sleep(Duration::from_millis(200)); // the subscription is acknowledged
        let messages: Vec<(String, Vec<u8>)> = msgs
            .into_iter()
            .map(|(d, p)| {
                (
                    format!("gridmesh/{CHAIN}/telemetry/{}", keys[d].address()),
                    p,
                )
            })
            .collect();
        let start = Instant::now();
        publish_all("127.0.0.1", broker.port, "bench-publisher", messages)
            .map_err(|e| anyhow::anyhow!(e))?;
        loop {
            let s = gw.stats();
            if s.samples.accepted + s.samples.rejected_total() >= total {
                if s.samples.accepted != total {
                    bail!(
                        "{} of {total} samples accepted: {:?}",
                        s.samples.accepted,
                        s.samples.rejected
                    );
                }
                break;
            }
            if start.elapsed() > Duration::from_secs(600) {
                bail!("only {} of {total} samples arrived", s.samples.accepted);
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        let secs = start.elapsed().as_secs_f64();
        gw.stop();
        rows.push(IngestBenchRow {
            path: "mqtt",
            devices: o.devices,
            samples: total,
            per_message: o.per_message,
            seconds: secs,
            samples_per_s: total as f64 / secs,
        });
    }
    Ok(rows)
}
