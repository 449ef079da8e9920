//! Verifying signed telemetry before it is committed to the store.
//!
//! A batch of payloads (each a concatenation of 132-byte samples, see
//! [`gridmesh_ledger::telemetry`]) goes through, in order:
//!
//! 1. framing: a payload must be a whole number of samples, at most
//!    [`IngestLimits::max_samples_per_payload`];
//! 2. registration: the device must be registered and active ([`DeviceDirectory`]);
//! 3. signatures: ed25519 batch verification over all cores; a failing batch is bisected so one
//!    bad sample costs only itself;
//! 4. sequence and physics, per device in arrival order: the counter strictly increases (a
//!    replayed or reordered sample is refused), time strictly increases and is not in the future
//!    beyond the allowed skew, both registers never fall, and neither grows faster than the
//!    device's rated power (with [`IngestLimits::rating_margin_pct`]) over the elapsed time;
//! 5. commit: one durable store transaction for everything accepted.
//!
//! Nothing rejected is stored; every rejection is counted by reason.

use crate::store::{StoreError, TelemetryStore};
use gridmesh_ledger::crypto::{self, Parallelism, SignedItem};
use gridmesh_ledger::telemetry::{telemetry_message, RawSample, SAMPLE_BYTES};
use gridmesh_types::Address;
use std::collections::HashMap;
use std::sync::Arc;

/// What the gateway needs to know of a registered, active device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceLimits {
    /// Rated power, watts.
    pub capacity_w: u32,
}

/// Which devices may send telemetry (the ledger's registered, active devices).
pub trait DeviceDirectory: Send + Sync {
    fn limits(&self, device: &Address) -> Option<DeviceLimits>;
}

impl DeviceDirectory for HashMap<Address, DeviceLimits> {
    fn limits(&self, device: &Address) -> Option<DeviceLimits> {
        self.get(device).copied()
    }
}

/// Bounds on what one ingest accepts.
#[derive(Clone, Copy, Debug)]
pub struct IngestLimits {
    pub max_samples_per_payload: usize,
    /// How far a sample's time may be ahead of the gateway's clock.
    pub max_future_skew_ms: u64,
    /// Registers may grow at most this share of rated power (percent) over the elapsed time.
    pub rating_margin_pct: u64,
    /// The coarsest register step a device may report (a 10 Wh register jumps by 10 Wh at
    /// once): allowed on top of the rating between two samples, and once per anchor window.
    pub register_quantum_mwh: u64,
    /// Growth is also checked against a sample at least this old, so the quantum cannot be
    /// claimed again and again.
    pub anchor_window_ms: u64,
}

impl Default for IngestLimits {
    fn default() -> Self {
        IngestLimits {
            max_samples_per_payload: 1_024,
            max_future_skew_ms: 10_000,
            rating_margin_pct: 125,
            register_quantum_mwh: 10_000,
            anchor_window_ms: 60_000,
        }
    }
}

/// Why a sample (or a whole payload) was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RejectReason {
    /// The payload is not a whole number of samples, or is empty.
    Malformed,
    /// The payload holds more samples than allowed (all of them refused).
    TooManySamples,
    UnknownDevice,
    BadSignature,
    /// The sample counter did not increase: a replay or a reordering.
    Replay,
    TimeNotIncreasing,
    FromTheFuture,
    RegisterFell,
    /// A register grew faster than the device's rating allows.
    AboveRating,
}

impl RejectReason {
    pub fn describe(self) -> &'static str {
        match self {
            RejectReason::Malformed => "payload is not a whole number of 132-byte samples",
            RejectReason::TooManySamples => "payload holds more samples than allowed",
            RejectReason::UnknownDevice => "device is not registered or not active",
            RejectReason::BadSignature => "signature does not verify for the device key",
            RejectReason::Replay => "sample counter did not increase (replayed or reordered)",
            RejectReason::TimeNotIncreasing => "sample time did not increase",
            RejectReason::FromTheFuture => "sample time is ahead of the gateway's clock",
            RejectReason::RegisterFell => "an energy register fell",
            RejectReason::AboveRating => "a register grew faster than the device's rating allows",
        }
    }
}

/// The outcome of one ingest.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct IngestReport {
    pub accepted: u64,
    /// Refused samples by reason (a refused payload counts as one `Malformed`, or all of its
    /// samples as `TooManySamples`).
    pub rejected: std::collections::BTreeMap<RejectReason, u64>,
}

impl IngestReport {
    pub fn rejected_total(&self) -> u64 {
        self.rejected.values().sum()
    }

    fn reject(&mut self, r: RejectReason, n: u64) {
        *self.rejected.entry(r).or_default() += n;
    }

    /// Adds another report's counts.
    pub fn merge(&mut self, other: &IngestReport) {
        self.accepted += other.accepted;
        for (r, n) in &other.rejected {
            self.reject(*r, *n);
        }
    }
}

/// Verifies and commits signed samples.
pub struct Ingestor {
    chain_id: String,
    directory: Arc<dyn DeviceDirectory>,
    store: Arc<TelemetryStore>,
    limits: IngestLimits,
    /// Each device's latest accepted sample.
    last: HashMap<Address, RawSample>,
    /// Each device's anchor: an accepted sample up to two windows old.
    anchors: HashMap<Address, RawSample>,
}

impl Ingestor {
    /// An ingestor resuming from what `store` already holds.
    pub fn new(
        chain_id: &str,
        directory: Arc<dyn DeviceDirectory>,
        store: Arc<TelemetryStore>,
        limits: IngestLimits,
    ) -> Result<Ingestor, StoreError> {
        let last = store.latest()?.into_iter().map(|s| (s.device, s)).collect();
        Ok(Ingestor {
            chain_id: chain_id.to_string(),
            directory,
            store,
            limits,
            last,
            anchors: HashMap::new(),
        })
    }

    pub fn store(&self) -> &Arc<TelemetryStore> {
        &self.store
    }

    /// Verifies the samples of `payloads` and commits those that pass, at `now_ms` on the
    /// gateway's clock. On a store error nothing of this batch is committed and the replay state
    /// is unchanged, so the same batch can be retried.
    pub fn ingest(&mut self, payloads: &[&[u8]], now_ms: u64) -> Result<IngestReport, StoreError> {
        let mut report = IngestReport::default();
        let mut samples = Vec::new();
        for p in payloads {
            if p.is_empty() || p.len() % SAMPLE_BYTES != 0 {
                report.reject(RejectReason::Malformed, 1);
                continue;
            }
            let n = p.len() / SAMPLE_BYTES;
            if n > self.limits.max_samples_per_payload {
                report.reject(RejectReason::TooManySamples, n as u64);
                continue;
            }
            for chunk in p.chunks_exact(SAMPLE_BYTES) {
                let s = RawSample::decode(chunk).expect("exact chunk");
                match self.directory.limits(&s.device) {
                    Some(l) => samples.push((s, l)),
                    None => report.reject(RejectReason::UnknownDevice, 1),
                }
            }
        }
        let valid = self.verify_signatures(&samples);
        let mut accepted = Vec::with_capacity(samples.len());
        let mut latest: HashMap<Address, RawSample> = HashMap::new();
        let mut anchors: HashMap<Address, RawSample> = HashMap::new();
        for ((s, limits), ok) in samples.into_iter().zip(valid) {
            if !ok {
                report.reject(RejectReason::BadSignature, 1);
                continue;
            }
            let prev = latest
                .get(&s.device)
                .or_else(|| self.last.get(&s.device))
                .copied();
            let anchor = anchors
                .get(&s.device)
                .or_else(|| self.anchors.get(&s.device))
                .copied();
            match self.check_sequence(prev.as_ref(), anchor.as_ref(), &s, limits, now_ms) {
                Ok(()) => {
                    latest.insert(s.device, s);
                    let window = self.limits.anchor_window_ms;
                    match anchor {
                        Some(a) if s.time_ms - a.time_ms < window => {}
                        // Move the anchor to the sample before this one, so it is never younger
                        // than the window at the next check but one.
                        _ => {
                            anchors.insert(s.device, prev.unwrap_or(s));
                        }
                    }
                    accepted.push(s);
                }
                Err(r) => report.reject(r, 1),
            }
        }
        self.store.append(&accepted)?;
        self.last.extend(latest);
        self.anchors.extend(anchors);
        report.accepted = accepted.len() as u64;
        Ok(report)
    }

    fn check_sequence(
        &self,
        prev: Option<&RawSample>,
        anchor: Option<&RawSample>,
        s: &RawSample,
        limits: DeviceLimits,
        now_ms: u64,
    ) -> Result<(), RejectReason> {
        if s.time_ms > now_ms.saturating_add(self.limits.max_future_skew_ms) {
            return Err(RejectReason::FromTheFuture);
        }
        let Some(p) = prev else {
            return Ok(());
        };
        if s.seq <= p.seq {
            return Err(RejectReason::Replay);
        }
        if s.time_ms <= p.time_ms {
            return Err(RejectReason::TimeNotIncreasing);
        }
        if s.out_register_mwh < p.out_register_mwh || s.in_register_mwh < p.in_register_mwh {
            return Err(RejectReason::RegisterFell);
        }
        // Most energy at rated power over the elapsed time (W × ms / 3,600 = mWh), plus one
        // register step; against the previous sample and against the anchor.
        let most_mwh = |elapsed_ms: u64| {
            u128::from(limits.capacity_w)
                * u128::from(elapsed_ms)
                * u128::from(self.limits.rating_margin_pct)
                / (3_600 * 100)
                + 1
                + u128::from(self.limits.register_quantum_mwh)
        };
        for base in [Some(p), anchor].into_iter().flatten() {
            if s.time_ms <= base.time_ms {
                continue;
            }
            let grew = |a: u64, b: u64| u128::from(a.saturating_sub(b));
            let most = most_mwh(s.time_ms - base.time_ms);
            if grew(s.out_register_mwh, base.out_register_mwh) > most
                || grew(s.in_register_mwh, base.in_register_mwh) > most
            {
                return Err(RejectReason::AboveRating);
            }
        }
        Ok(())
    }

    /// Which samples carry a valid device signature (batch verification, bisected on failure).
    fn verify_signatures(&self, samples: &[(RawSample, DeviceLimits)]) -> Vec<bool> {
        let messages: Vec<Vec<u8>> = samples
            .iter()
            .map(|(s, _)| telemetry_message(&self.chain_id, &s.encode()[..68]))
            .collect();
        let items: Vec<SignedItem<'_>> = samples
            .iter()
            .zip(&messages)
            .map(|((s, _), m)| SignedItem {
                signer: s.device,
                message: m,
                signature: s.signature,
            })
            .collect();
        let mut valid = vec![true; items.len()];
        let mut from = 0;
        while from < items.len() {
            match crypto::verify_batch(&items[from..], Parallelism::AllCores) {
                Ok(()) => break,
                Err((i, _)) => {
                    valid[from + i] = false;
                    from += i + 1;
                }
            }
        }
        valid
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gridmesh_ledger::crypto::Keypair;

    const CHAIN: &str = "c";
    const T0: u64 = 1_800_000_000_000;

    fn setup() -> (tempfile::TempDir, Ingestor, Keypair) {
        let dir = tempfile::tempdir().unwrap();
        let key = Keypair::from_seed([1; 32]);
        let mut devices = HashMap::new();
        devices.insert(key.address(), DeviceLimits { capacity_w: 3_600 });
        let store = Arc::new(TelemetryStore::open(dir.path()).unwrap());
        let ing = Ingestor::new(CHAIN, Arc::new(devices), store, IngestLimits::default()).unwrap();
        (dir, ing, key)
    }

    fn payload(samples: &[RawSample]) -> Vec<u8> {
        samples.iter().flat_map(|s| s.encode()).collect()
    }

    #[test]
    fn honest_samples_are_committed_and_every_bad_one_is_refused_with_its_reason() {
        let (_dir, mut ing, key) = setup();
        // 3,600 W for one second is 1,000 mWh; the margin allows 1,250.
        let good: Vec<RawSample> = (1..=10)
            .map(|i| RawSample::signed(&key, CHAIN, i, T0 + i * 1_000, i * 1_000, 0, 3_600))
            .collect();
        let r = ing.ingest(&[&payload(&good)], T0 + 20_000).unwrap();
        assert_eq!((r.accepted, r.rejected_total()), (10, 0));

        let stranger = Keypair::from_seed([2; 32]);
        let mut forged = RawSample::signed(&key, CHAIN, 11, T0 + 11_000, 11_000, 0, 3_600);
        forged.out_register_mwh = 99_000;
        let bad = [
            good[9],                                                               // replay
            RawSample::signed(&key, CHAIN, 12, T0 + 10_000, 11_000, 0, 0),         // time
            RawSample::signed(&key, CHAIN, 13, T0 + 13_000, 9_000, 0, 0),          // fell
            RawSample::signed(&key, CHAIN, 14, T0 + 14_000, 30_000, 0, 0),         // too fast
            RawSample::signed(&key, CHAIN, 15, T0 + 60_000, 10_500, 0, 0),         // future
            RawSample::signed(&stranger, CHAIN, 1, T0 + 11_000, 0, 0, 0),          // unknown
            RawSample::signed(&key, "other-chain", 16, T0 + 11_000, 10_500, 0, 0), // signature
            forged,                                                                // signature
            RawSample::signed(&key, CHAIN, 17, T0 + 11_000, 11_200, 0, 0),         // fine
        ];
        let r = ing
            .ingest(&[&payload(&bad), &[0u8; 131], &[]], T0 + 20_000)
            .unwrap();
        let expect: std::collections::BTreeMap<RejectReason, u64> = [
            (RejectReason::Replay, 1),
            (RejectReason::TimeNotIncreasing, 1),
            (RejectReason::RegisterFell, 1),
            (RejectReason::AboveRating, 1),
            (RejectReason::FromTheFuture, 1),
            (RejectReason::UnknownDevice, 1),
            (RejectReason::BadSignature, 2),
            (RejectReason::Malformed, 2),
        ]
        .into_iter()
        .collect();
        assert_eq!(r.rejected, expect);
        assert_eq!(r.accepted, 1);
        let stored = ing
            .store()
            .samples(&key.address(), T0, T0 + 60_000)
            .unwrap();
        assert_eq!(stored.len(), 11);
        assert_eq!(stored.last().unwrap().seq, 17);

        let too_many: Vec<RawSample> = (0..1_025)
            .map(|i| RawSample::signed(&key, CHAIN, 100 + i, T0 + 12_000 + i, 11_200, 0, 0))
            .collect();
        let r = ing.ingest(&[&payload(&too_many)], T0 + 20_000).unwrap();
        assert_eq!(r.rejected[&RejectReason::TooManySamples], 1_025);
    }

    #[test]
    fn a_coarse_register_passes_but_its_step_cannot_be_claimed_again_and_again() {
        let (_dir, mut ing, key) = setup();
        // 3.6 kW with a 10 Wh register polled every 300 ms: a 10 Wh step now and then is fine.
        let mut reg = 0;
        let honest: Vec<RawSample> = (1..=200u64)
            .map(|i| {
                if i % 33 == 0 {
                    reg += 10_000;
                }
                RawSample::signed(&key, CHAIN, i, T0 + i * 300, reg, 0, 3_600)
            })
            .collect();
        let r = ing.ingest(&[&payload(&honest)], T0 + 100_000).unwrap();
        assert_eq!((r.accepted, r.rejected_total()), (200, 0));
        // A liar adds one step every second sample: the anchor catches it within a minute.
        let t1 = T0 + 60_000;
        let liar: Vec<RawSample> = (201..=300u64)
            .map(|i| {
                if i % 2 == 0 {
                    reg += 10_000;
                }
                RawSample::signed(&key, CHAIN, i, t1 + i * 300, reg, 0, 3_600)
            })
            .collect();
        let r = ing.ingest(&[&payload(&liar)], t1 + 200_000).unwrap();
        assert!(r.rejected[&RejectReason::AboveRating] >= 40, "{r:?}");
    }

    #[test]
    fn replay_protection_survives_a_restart() {
        let (dir, mut ing, key) = setup();
        let s = RawSample::signed(&key, CHAIN, 5, T0, 0, 0, 0);
        assert_eq!(ing.ingest(&[&s.encode()], T0).unwrap().accepted, 1);
        let store = ing.store().clone();
        drop(ing);
        let mut devices = HashMap::new();
        devices.insert(key.address(), DeviceLimits { capacity_w: 3_600 });
        let mut again =
            Ingestor::new(CHAIN, Arc::new(devices), store, IngestLimits::default()).unwrap();
        let r = again.ingest(&[&s.encode()], T0).unwrap();
        assert_eq!(r.rejected[&RejectReason::Replay], 1);
        drop(dir);
    }
}
