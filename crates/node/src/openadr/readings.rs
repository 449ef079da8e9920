//! A VEN's usage reports as its meter's readings: for a VEN registered with its connection's
//! meter (`gridmesh openadr ven add --connection LOC --device-key meter.key`), every `USAGE`
//! interval of one whole slot it reports, once the slot has ended and before it settles,
//! becomes that meter's `SubmitDeviceReadings` on the ledger, signed with the meter's key that
//! the node keeps. Usage above zero is what the home took from the grid (the meter's `in`),
//! below zero what it gave (`out`); kWh, or Wh where the report's descriptor says so.
//!
//! The VEN's OAuth credentials are what the reading rests on: the node signs for the meter
//! because the operator handed it the key for exactly this VEN. The ledger checks such readings
//! as any meter's: its rating, its register, and conservation against the feeder-head meter.
//!
//! One thread takes the reports in order, at most [`MAX_QUEUED`] waiting (a VTN answers 503
//! beyond). A meter's readings wait for its earlier ones to be in a block, since each continues
//! the register the one before left.

use std::collections::HashMap;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gridmesh_ledger::readers::{DeviceReader, MarketReader};
use gridmesh_ledger::tx::{DeviceKind, DeviceReading, TxKind};
use gridmesh_ledger::Keypair;
use gridmesh_types::units::slot_start_ms;
use gridmesh_types::Address;

use super::upstream::slot_values;
use super::wire::ReportIn;
use crate::submitter::Submitter;
use crate::Shared;

/// Reports waiting to become readings, at most.
pub const MAX_QUEUED: usize = 1_000;
/// Longest a meter's readings wait for its earlier ones to reach a block.
pub const MAX_WAIT: Duration = Duration::from_secs(30);
/// Slots back a meter's last reading is looked for (its register goes on from there).
const LOOKBACK_SLOTS: u64 = 4 * 96;

/// One report's usage for one meter.
pub struct Job {
    pub ven: String,
    /// The VEN's connection: its meter must be there.
    pub connection: String,
    pub key: Keypair,
    /// Per slot, the energy the home took from the grid, mWh (negative: gave).
    pub usage: Vec<(u64, i64)>,
}

/// The slots of `report` with a `USAGE` over one whole slot, in mWh (what is left out is said
/// in the second value). Wh where its payload descriptor for `USAGE` says `WH`, else kWh.
pub fn usage_of(report: &ReportIn) -> (Vec<(u64, i64)>, Vec<String>) {
    let per_wh = report
        .payload_descriptors
        .iter()
        .flatten()
        .find(|d| d["payloadType"] == "USAGE")
        .and_then(|d| d["units"].as_str())
        .is_some_and(|u| u.eq_ignore_ascii_case("WH"));
    let mwh_per_unit = if per_wh { 1e3 } else { 1e6 };
    let mut out = Vec::new();
    let mut skipped = Vec::new();
    for r in &report.resources {
        let resource = serde_json::to_value(r).expect("a resource serialises");
        let (values, left) = slot_values(&resource, "USAGE");
        skipped.extend(left);
        for (slot, v) in values {
            let mwh = (v * mwh_per_unit).round();
            if mwh.abs() > gridmesh_market::MAX_ORDER_MWH as f64 {
                skipped.push(format!("USAGE {v} in slot {slot} is beyond any meter"));
                continue;
            }
            out.push((slot, mwh as i64));
        }
    }
    out.sort_by_key(|u| u.0);
    out.dedup_by_key(|u| u.0);
    (out, skipped)
}

/// Starts the thread; its sender takes the jobs.
pub fn spawn(shared: Arc<Shared>) -> std::io::Result<SyncSender<Job>> {
    let (tx, rx) = sync_channel(MAX_QUEUED);
    std::thread::Builder::new()
        .name("openadr-readings".into())
        .spawn(move || run(shared, rx))?;
    Ok(tx)
}

fn run(shared: Arc<Shared>, rx: Receiver<Job>) {
    // One per meter that reported (at most the registry's VENs).
    let mut submitters: HashMap<Address, (Submitter, u64)> = HashMap::new();
    while let Ok(job) = rx.recv() {
        let device = job.key.address();
        let (submitter, last_seq) = submitters
            .entry(device)
            .or_insert_with(|| (Submitter::new(job.key.clone()), 0));
        let waited = Instant::now();
        while submitter.in_flight(&shared) > 0 && waited.elapsed() < MAX_WAIT {
            std::thread::sleep(Duration::from_millis(100));
        }
        match readings_of(&shared, &job, last_seq) {
            Ok(readings) if readings.is_empty() => {}
            Ok(readings) => {
                let n = readings.len();
                let submitted =
                    submitter.submit(&shared, vec![TxKind::SubmitDeviceReadings { readings }]);
                match submitted.errors.last() {
                    None => {
                        tracing::info!(ven = %job.ven, %device, readings = n, "a VEN's usage as its meter's readings")
                    }
                    Some(e) => {
                        tracing::warn!(ven = %job.ven, %device, error = %e, "a VEN's meter readings were refused")
                    }
                }
            }
            Err(e) => {
                tracing::warn!(ven = %job.ven, %device, "a VEN's usage not taken as readings: {e}")
            }
        }
    }
}

/// The meter's readings of `job`'s slots that have ended and not yet settled and that it has
/// no reading for, its register going on from its last reading.
fn readings_of(
    shared: &Shared,
    job: &Job,
    last_seq: &mut u64,
) -> Result<Vec<DeviceReading>, String> {
    let device = job.key.address();
    let chain = shared.chain.read().expect("chain lock");
    let state = chain.state();
    let now = chain.head().timestamp_ms;
    let market = state.market_config();
    let id = state
        .device(&device)
        .ok_or_else(|| format!("the meter {device} is not registered on the ledger"))?;
    if id.info.kind != DeviceKind::Meter || id.info.location != job.connection {
        return Err(format!(
            "device {device} is a {} at {:?}, not the meter of {:?}",
            id.info.kind.name(),
            id.info.location,
            job.connection
        ));
    }
    let Some(&(first, _)) = job.usage.first() else {
        return Ok(Vec::new());
    };
    // The register its last reading left (pending or settled), else the settled one.
    let mut register = (first.saturating_sub(LOOKBACK_SLOTS)..first)
        .rev()
        .find_map(|s| state.device_reading(s, &device))
        .map(|r| r.register_mwh)
        .or(id.register_mwh)
        .unwrap_or(0);
    let mut readings = Vec::new();
    for &(slot, mwh) in &job.usage {
        let ended = slot_start_ms(slot + 1) <= now;
        if !ended || market.settlement_ms(slot) <= now.saturating_add(1_000) {
            tracing::warn!(ven = %job.ven, slot, "usage of a slot not ended or already settling: not a reading");
            continue;
        }
        if state.device_reading(slot, &device).is_some() {
            tracing::warn!(ven = %job.ven, slot, "the meter has a reading of this slot already");
            continue;
        }
        let (out_mwh, in_mwh) = if mwh < 0 {
            (mwh.unsigned_abs(), 0)
        } else {
            (0, mwh as u64)
        };
        register = register
            .checked_add(out_mwh)
            .ok_or("the meter's register would overflow")?;
        // A sample counter that only grows: the wall clock in ms, or one more than the last.
        *last_seq = super::wire::wall_ms().max(*last_seq + 1);
        readings.push(DeviceReading::with_one_sample(
            &job.key,
            chain.chain_id(),
            slot,
            *last_seq,
            (out_mwh, register),
            (in_mwh, in_mwh),
        ));
    }
    Ok(readings)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn usage_of_whole_slots_in_kwh_or_wh() {
        let report = json!({
            "programID": "prices", "eventID": "prices", "clientName": "home-1",
            "resources": [{"resourceName": "meter",
                "intervalPeriod": {"start": "2026-12-06T17:00:00Z", "duration": "PT15M"},
                "intervals": [
                    {"id": 0, "payloads": [{"type": "USAGE", "values": [0.42]}]},
                    {"id": 1, "payloads": [{"type": "USAGE", "values": [-0.25]}]},
                    {"id": 2, "intervalPeriod": {"start": "2026-12-06T17:40:00Z", "duration": "PT15M"},
                     "payloads": [{"type": "USAGE", "values": [1.0]}]},
                    {"id": 3, "intervalPeriod": {"start": "2026-12-06T18:00:00Z", "duration": "PT15M"},
                     "payloads": [{"type": "USAGE", "values": ["much"]},
                                  {"type": "DEMAND", "values": [3.0]}]}]}],
        });
        let first = gridmesh_types::units::parse_rfc3339_ms("2026-12-06T17:00:00Z").unwrap()
            / gridmesh_types::units::SLOT_MS;
        let r: ReportIn = serde_json::from_value(report.clone()).unwrap();
        let (usage, skipped) = usage_of(&r);
        // 17:40 is no slot's start; "much" is no number.
        assert_eq!(usage, vec![(first, 420_000), (first + 1, -250_000)]);
        assert_eq!(skipped.len(), 2, "{skipped:?}");
        let mut wh = report;
        wh["payloadDescriptors"] = json!([{"objectType": "REPORT_PAYLOAD_DESCRIPTOR", "payloadType": "USAGE", "units": "WH"}]);
        let r: ReportIn = serde_json::from_value(wh).unwrap();
        assert_eq!(usage_of(&r).0[0], (first, 420));
    }
}
