//! The off-chain telemetry store: verified samples per device in time order (redb).
//!
//! A home's high-resolution profile never goes on the ledger; it stays here, in the node of the
//! owner (or the community gateway that relayed it), so that a slot reading's commitment can be
//! recomputed and any one sample proven against it ([`TelemetryStore::proof`]).
//!
//! Tables: `samples`: (device, time_ms, seq) → the 132-byte signed sample; `last`: device → its
//! latest accepted sample, for replay and register checks across restarts. Every
//! [`TelemetryStore::append`] is one write transaction, durable when it returns.

use gridmesh_ledger::merkle;
use gridmesh_ledger::telemetry::{RawSample, SampleProof, SAMPLE_BYTES};
use gridmesh_types::{Address, Hash32};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use std::path::Path;

type SampleKey = ([u8; 32], u64, u64);
const SAMPLES: TableDefinition<SampleKey, &[u8]> = TableDefinition::new("samples");
const LAST: TableDefinition<[u8; 32], &[u8]> = TableDefinition::new("last");

/// The most samples one slot of one device may hold (one per second is 900).
pub const MAX_SAMPLES_PER_SLOT: usize = 9_000;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("telemetry store directory {0}: {1}")]
    Io(String, std::io::Error),
    #[error("telemetry store: {0}")]
    Redb(Box<redb::Error>),
    #[error("telemetry store holds a damaged sample record of {0} bytes")]
    Corrupt(usize),
    #[error("device {device} has more than {MAX_SAMPLES_PER_SLOT} samples in the slot")]
    TooManySamples { device: Address },
}

fn db_err<E: Into<redb::Error>>(e: E) -> StoreError {
    StoreError::Redb(Box::new(e.into()))
}

/// What a slot's samples commit to, as a device's reading must state it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct SlotCommitment {
    pub device: Address,
    /// The slot spans `(start_ms, end_ms]`.
    pub start_ms: u64,
    pub end_ms: u64,
    pub count: u32,
    pub root: Hash32,
    /// Output register of the first and last sample (None without samples).
    pub first_out_register_mwh: Option<u64>,
    pub last_out_register_mwh: Option<u64>,
}

/// Samples of the devices this node serves.
pub struct TelemetryStore {
    db: Database,
}

impl TelemetryStore {
    /// Opens (or creates) `telemetry.redb` in `dir`.
    pub fn open(dir: &Path) -> Result<TelemetryStore, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::Io(dir.display().to_string(), e))?;
        let db = Database::create(dir.join("telemetry.redb")).map_err(db_err)?;
        let w = db.begin_write().map_err(db_err)?;
        w.open_table(SAMPLES).map_err(db_err)?;
        w.open_table(LAST).map_err(db_err)?;
        w.commit().map_err(db_err)?;
        Ok(TelemetryStore { db })
    }

    /// Stores accepted samples and each device's latest one, in one durable transaction.
    pub fn append(&self, samples: &[RawSample]) -> Result<(), StoreError> {
        if samples.is_empty() {
            return Ok(());
        }
        let w = self.db.begin_write().map_err(db_err)?;
        {
            let mut t = w.open_table(SAMPLES).map_err(db_err)?;
            let mut last = w.open_table(LAST).map_err(db_err)?;
            let mut latest: std::collections::HashMap<Address, &RawSample> = Default::default();
            for s in samples {
                t.insert((s.device.0, s.time_ms, s.seq), s.encode().as_slice())
                    .map_err(db_err)?;
                latest
                    .entry(s.device)
                    .and_modify(|l| {
                        if s.seq > l.seq {
                            *l = s
                        }
                    })
                    .or_insert(s);
            }
            for (d, s) in latest {
                last.insert(d.0, s.encode().as_slice()).map_err(db_err)?;
            }
        }
        w.commit().map_err(db_err)
    }

    /// The latest stored sample of each device (to resume replay checks after a restart).
    pub fn latest(&self) -> Result<Vec<RawSample>, StoreError> {
        let r = self.db.begin_read().map_err(db_err)?;
        let t = r.open_table(LAST).map_err(db_err)?;
        let mut out = Vec::new();
        for item in t.iter().map_err(db_err)? {
            let (_, v) = item.map_err(db_err)?;
            out.push(decode(v.value())?);
        }
        Ok(out)
    }

    /// The latest stored sample of `device` (what the device did last, as far as this node knows).
    pub fn last(&self, device: &Address) -> Result<Option<RawSample>, StoreError> {
        let r = self.db.begin_read().map_err(db_err)?;
        let t = r.open_table(LAST).map_err(db_err)?;
        t.get(device.0)
            .map_err(db_err)?
            .map(|v| decode(v.value()))
            .transpose()
    }

    /// The device's samples whose interval ends in `(start_ms, end_ms]`, in time order.
    pub fn samples(
        &self,
        device: &Address,
        start_ms: u64,
        end_ms: u64,
    ) -> Result<Vec<RawSample>, StoreError> {
        let r = self.db.begin_read().map_err(db_err)?;
        let t = r.open_table(SAMPLES).map_err(db_err)?;
        let mut out = Vec::new();
        let from = (device.0, start_ms.saturating_add(1), 0u64);
        let to = (device.0, end_ms, u64::MAX);
        for item in t.range(from..=to).map_err(db_err)? {
            let (_, v) = item.map_err(db_err)?;
            if out.len() == MAX_SAMPLES_PER_SLOT {
                return Err(StoreError::TooManySamples { device: *device });
            }
            out.push(decode(v.value())?);
        }
        Ok(out)
    }

    /// The commitment of the device's samples in `(start_ms, end_ms]`.
    pub fn commitment(
        &self,
        device: &Address,
        start_ms: u64,
        end_ms: u64,
    ) -> Result<SlotCommitment, StoreError> {
        let samples = self.samples(device, start_ms, end_ms)?;
        let (root, count) = gridmesh_ledger::telemetry::commitment(&samples);
        Ok(SlotCommitment {
            device: *device,
            start_ms,
            end_ms,
            count,
            root,
            first_out_register_mwh: samples.first().map(|s| s.out_register_mwh),
            last_out_register_mwh: samples.last().map(|s| s.out_register_mwh),
        })
    }

    /// Sample `index` of the device's samples in `(start_ms, end_ms]` with its inclusion proof
    /// under their commitment; `None` if there are not that many.
    pub fn proof(
        &self,
        device: &Address,
        start_ms: u64,
        end_ms: u64,
        index: u32,
    ) -> Result<Option<SampleProof>, StoreError> {
        let samples = self.samples(device, start_ms, end_ms)?;
        let leaves: Vec<Hash32> = samples.iter().map(RawSample::leaf).collect();
        Ok(
            merkle::proof(&leaves, index as usize).map(|path| SampleProof {
                sample: samples[index as usize],
                index,
                path,
            }),
        )
    }

    /// Deletes samples that ended at or before `before_ms` (retention), returning how many.
    pub fn prune(&self, before_ms: u64) -> Result<u64, StoreError> {
        let w = self.db.begin_write().map_err(db_err)?;
        let mut removed = 0;
        {
            let mut t = w.open_table(SAMPLES).map_err(db_err)?;
            let devices: Vec<[u8; 32]> = {
                let last = w.open_table(LAST).map_err(db_err)?;
                let mut d = Vec::new();
                for item in last.iter().map_err(db_err)? {
                    d.push(item.map_err(db_err)?.0.value());
                }
                d
            };
            for d in devices {
                let keys: Vec<SampleKey> = t
                    .range((d, 0, 0)..=(d, before_ms, u64::MAX))
                    .map_err(db_err)?
                    .map(|i| i.map(|(k, _)| k.value()))
                    .collect::<Result<_, _>>()
                    .map_err(db_err)?;
                for k in keys {
                    t.remove(k).map_err(db_err)?;
                    removed += 1;
                }
            }
        }
        w.commit().map_err(db_err)?;
        Ok(removed)
    }
}

fn decode(bytes: &[u8]) -> Result<RawSample, StoreError> {
    if bytes.len() != SAMPLE_BYTES {
        return Err(StoreError::Corrupt(bytes.len()));
    }
    RawSample::decode(bytes).map_err(|_| StoreError::Corrupt(bytes.len()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use gridmesh_ledger::crypto::Keypair;
    use gridmesh_ledger::telemetry::{self, Contradiction};
    use gridmesh_ledger::tx::DeviceReading;

    #[test]
    fn a_slot_commitment_survives_a_restart_and_proves_each_sample() {
        let dir = tempfile::tempdir().unwrap();
        let key = Keypair::from_seed([9; 32]);
        let other = Keypair::from_seed([10; 32]);
        let (start, end) = (900_000u64, 1_800_000u64);
        let samples: Vec<RawSample> = (0..=1_000u64)
            .map(|i| RawSample::signed(&key, "c", i, start + i * 1000, 100 + i, 0, 3_600))
            .collect();
        {
            let store = TelemetryStore::open(dir.path()).unwrap();
            store.append(&samples[..500]).unwrap();
            store.append(&samples[500..]).unwrap();
            store
                .append(&[RawSample::signed(&other, "c", 1, start + 5_000, 1, 0, 0)])
                .unwrap();
        }
        let store = TelemetryStore::open(dir.path()).unwrap();
        let mut latest = store.latest().unwrap();
        latest.sort_by_key(|s| s.seq);
        assert_eq!(latest.last().unwrap(), &samples[1_000]);
        assert_eq!(
            store.last(&key.address()).unwrap().as_ref(),
            Some(&samples[1_000])
        );
        let stranger = Keypair::from_seed([11; 32]).address();
        assert_eq!(store.last(&stranger).unwrap(), None);
        // (start, end]: sample 0 ends at the start and belongs to the slot before.
        let c = store.commitment(&key.address(), start, end).unwrap();
        assert_eq!(c.count, 900);
        assert_eq!(c.last_out_register_mwh, Some(1_000));
        assert_eq!((c.root, c.count), telemetry::commitment(&samples[1..=900]));
        let reading = DeviceReading::signed(&key, "c", 1, 900, 0, 1_000, c.root, c.count);
        let inflated = DeviceReading::signed(&key, "c", 1, 1_900, 0, 2_000, c.root, c.count);
        let p = store
            .proof(&key.address(), start, end, 899)
            .unwrap()
            .unwrap();
        assert!(telemetry::contradiction("c", &reading.claim(), start, end, &p).is_err());
        assert_eq!(
            telemetry::contradiction("c", &inflated.claim(), start, end, &p),
            Ok(Contradiction::LastSampleMismatch)
        );
        assert!(store
            .proof(&key.address(), start, end, 900)
            .unwrap()
            .is_none());
        assert_eq!(store.prune(start + 100_000).unwrap(), 102); // and the other device's
        assert_eq!(
            store.commitment(&key.address(), start, end).unwrap().count,
            800
        );
    }
}
