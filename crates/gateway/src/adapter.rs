//! A device adapter: polls a SunSpec device, signs what it measures with the device's key and
//! publishes it on MQTT, sample by sample and, at each slot's end, the slot reading committing to
//! the slot's samples. It keeps the controls it was given in force by rewriting them every poll,
//! each with its reversion timeout, so the device falls back by itself when the adapter stops.

use crate::sunspec::{Measurement, SunSpecDevice, SunSpecError};
use gridmesh_ledger::crypto::Keypair;
use gridmesh_ledger::telemetry::{self, RawSample};
use gridmesh_ledger::tx::DeviceReading;
use gridmesh_types::units::SLOT_MS;
use std::net::SocketAddr;
use std::time::Duration;

/// Controls to hold on the device.
#[derive(Clone, Debug, Default)]
pub struct Controls {
    /// Output limit, percent of rating (model 123).
    pub power_limit_pct: Option<f64>,
    /// Charge and discharge limits, percent of WChaMax (model 124).
    pub charge_pct: Option<f64>,
    pub discharge_pct: Option<f64>,
    /// How long the device keeps a control after the last write.
    pub revert: Duration,
}

#[derive(Clone, Debug)]
pub struct AdapterConfig {
    pub modbus: SocketAddr,
    pub unit: u8,
    pub chain_id: String,
    pub key: Keypair,
    /// Broker (host, port).
    pub mqtt: (String, u16),
    pub interval: Duration,
    pub controls: Controls,
    /// Stop after this many polls (tests); `None` runs until the process ends.
    pub polls: Option<u64>,
}

/// What an adapter run did.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct AdapterStats {
    pub polls: u64,
    pub samples_published: u64,
    pub readings_published: u64,
    pub failures: u64,
    pub last_error: Option<String>,
}

/// Applies the controls (if any) on the device.
pub async fn apply_controls(dev: &mut SunSpecDevice, c: &Controls) -> Result<(), SunSpecError> {
    if let Some(p) = c.power_limit_pct {
        dev.set_power_limit(p, c.revert).await?;
    }
    if c.charge_pct.is_some() || c.discharge_pct.is_some() {
        dev.set_storage_rates(c.charge_pct, c.discharge_pct, c.revert)
            .await?;
    }
    Ok(())
}

/// The slot whose span `(start, end]` holds `time_ms`.
fn slot_of_sample(time_ms: u64) -> u64 {
    time_ms.saturating_sub(1) / SLOT_MS
}

/// Builds a slot's signed reading from its samples and the last sample before the slot.
pub fn slot_reading(
    key: &Keypair,
    chain_id: &str,
    slot: u64,
    before: &RawSample,
    samples: &[RawSample],
) -> Option<DeviceReading> {
    let last = samples.last()?;
    let (root, count) = telemetry::commitment(samples);
    Some(DeviceReading::signed(
        key,
        chain_id,
        slot,
        last.out_register_mwh
            .saturating_sub(before.out_register_mwh),
        last.in_register_mwh.saturating_sub(before.in_register_mwh),
        last.out_register_mwh,
        root,
        count,
    ))
}

/// Polls and publishes until `polls` are done (or forever). A device that does not answer is
/// retried every interval with the failure counted and logged; nothing is published for it.
pub async fn run(cfg: AdapterConfig) -> AdapterStats {
    let publisher = crate::mqtt::Publisher::connect(
        &cfg.mqtt.0,
        cfg.mqtt.1,
        &format!("gridmesh-adapter-{}", &cfg.key.address().to_string()[..12]),
        &cfg.chain_id,
    );
    let mut stats = AdapterStats::default();
    let mut dev: Option<SunSpecDevice> = None;
    let mut slot: Option<u64> = None;
    let mut in_slot: Vec<RawSample> = Vec::new();
    let mut before: Option<RawSample> = None;
    let mut tick = tokio::time::interval(cfg.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while cfg.polls.is_none_or(|n| stats.polls < n) {
        tick.tick().await;
        stats.polls += 1;
        let measured: Result<Measurement, SunSpecError> = async {
            if dev.is_none() {
                dev = Some(SunSpecDevice::connect(cfg.modbus, cfg.unit).await?);
            }
            let d = dev.as_mut().expect("connected");
            apply_controls(d, &cfg.controls).await?;
            d.measure().await
        }
        .await;
        let m = match measured {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(device = %cfg.modbus, error = %e, "SunSpec poll failed");
                stats.failures += 1;
                stats.last_error = Some(e.to_string());
                dev = None; // reconnect next time
                continue;
            }
        };
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let s = crate::sunspec::sample(&cfg.key, &cfg.chain_id, now_ms, &m);
        let this_slot = slot_of_sample(now_ms);
        if slot.is_some_and(|p| p != this_slot) {
            // The slot ended: its reading, if we saw the slot from its start.
            if let (Some(p), Some(b)) = (slot, before.as_ref()) {
                if let Some(r) = slot_reading(&cfg.key, &cfg.chain_id, p, b, &in_slot) {
                    if publisher.reading(&r).await {
                        stats.readings_published += 1;
                    }
                }
            }
            before = in_slot.last().copied();
            in_slot.clear();
        }
        slot = Some(this_slot);
        in_slot.push(s);
        if publisher.sample(&s).await {
            stats.samples_published += 1;
        }
    }
    publisher.close().await;
    stats
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slot_reading_commits_to_its_samples_and_continues_the_register() {
        let key = Keypair::from_seed([5; 32]);
        let start = 1_000 * SLOT_MS;
        let before = RawSample::signed(&key, "c", start, start, 10_000, 500, 0);
        let samples: Vec<RawSample> = (1..=900u64)
            .map(|i| {
                let t = start + i * 1_000;
                RawSample::signed(&key, "c", t, t, 10_000 + i * 100, 500 + i, 360)
            })
            .collect();
        assert_eq!(slot_of_sample(start), 999);
        assert_eq!(slot_of_sample(start + SLOT_MS), 1_000);
        let r = slot_reading(&key, "c", 1_000, &before, &samples).unwrap();
        assert_eq!(
            (r.energy_out_mwh, r.energy_in_mwh, r.register_mwh),
            (90_000, 900, 100_000)
        );
        assert_eq!((r.raw_root, r.raw_count), telemetry::commitment(&samples));
        assert!(slot_reading(&key, "c", 1_000, &before, &[]).is_none());
    }
}
