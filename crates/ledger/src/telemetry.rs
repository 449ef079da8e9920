//! Raw device telemetry: the high-resolution samples a device signs, the commitment a slot reading
//! makes to them, and the fraud proofs that can be built from one sample.
//!
//! Samples stay off the ledger, in the owner's node (and whichever gateway relayed them). A device's
//! slot reading ([`crate::tx::DeviceReading`]) carries the Merkle root over the slot's samples and
//! their count, so one sample with its inclusion proof can later show that a reading contradicts the
//! telemetry it committed to, without publishing the rest of the home's profile.
//!
//! # Wire format of a sample ([`SAMPLE_BYTES`] = 132 bytes, little endian)
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 32 | device public key (ed25519) |
//! | 32 | 8 | `seq`: the device's sample counter, strictly increasing |
//! | 40 | 8 | `time_ms`: end of the sample interval, Unix milliseconds |
//! | 48 | 8 | `out_register_mwh`: cumulative energy produced or discharged |
//! | 56 | 8 | `in_register_mwh`: cumulative energy consumed or charged |
//! | 64 | 4 | `power_w`: signed instantaneous power, positive out of the device |
//! | 68 | 64 | ed25519 signature over [`TELEMETRY_DOMAIN`] ‖ chain id (u32 length + UTF-8) ‖ bytes 0..68 |
//!
//! The Merkle leaf of a sample is `BLAKE3(all 132 bytes)` (see [`crate::merkle`] for the tree).

use crate::crypto::{self, SignatureError};
use crate::merkle;
use borsh::{BorshDeserialize, BorshSerialize};
use gridmesh_types::{Address, Hash32};

/// Encoded size of one sample.
pub const SAMPLE_BYTES: usize = 132;
/// Bytes a sample's signature covers.
const SIGNED_BYTES: usize = 68;
/// Domain separation of telemetry signatures.
pub const TELEMETRY_DOMAIN: &[u8] = b"gridmesh/telemetry/v1\0";

/// One signed telemetry sample.
#[derive(Clone, Copy, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct RawSample {
    pub device: Address,
    pub seq: u64,
    pub time_ms: u64,
    pub out_register_mwh: u64,
    pub in_register_mwh: u64,
    pub power_w: i32,
    pub signature: [u8; 64],
}

/// Why bytes are not a sample.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("a telemetry sample is {SAMPLE_BYTES} bytes, got {0}")]
pub struct SampleLengthError(pub usize);

impl RawSample {
    /// A sample signed by `device` for `chain_id`.
    pub fn signed(
        device: &crypto::Keypair,
        chain_id: &str,
        seq: u64,
        time_ms: u64,
        out_register_mwh: u64,
        in_register_mwh: u64,
        power_w: i32,
    ) -> RawSample {
        let mut s = RawSample::unsigned(
            device.address(),
            seq,
            time_ms,
            out_register_mwh,
            in_register_mwh,
            power_w,
        );
        s.signature = device.sign(&s.message(chain_id));
        s
    }

    /// The same sample of `device` with an all-zero signature (a simulated device whose chain
    /// vouches for it, [`crate::DeviceSignatures::Vouched`]).
    pub fn unsigned(
        device: Address,
        seq: u64,
        time_ms: u64,
        out_register_mwh: u64,
        in_register_mwh: u64,
        power_w: i32,
    ) -> RawSample {
        RawSample {
            device,
            seq,
            time_ms,
            out_register_mwh,
            in_register_mwh,
            power_w,
            signature: [0; 64],
        }
    }

    fn signed_bytes(&self) -> [u8; SIGNED_BYTES] {
        let mut b = [0u8; SIGNED_BYTES];
        b[..32].copy_from_slice(&self.device.0);
        b[32..40].copy_from_slice(&self.seq.to_le_bytes());
        b[40..48].copy_from_slice(&self.time_ms.to_le_bytes());
        b[48..56].copy_from_slice(&self.out_register_mwh.to_le_bytes());
        b[56..64].copy_from_slice(&self.in_register_mwh.to_le_bytes());
        b[64..68].copy_from_slice(&self.power_w.to_le_bytes());
        b
    }

    /// What the device key signs.
    pub fn message(&self, chain_id: &str) -> Vec<u8> {
        telemetry_message(chain_id, &self.signed_bytes())
    }

    /// The 132-byte wire form.
    pub fn encode(&self) -> [u8; SAMPLE_BYTES] {
        let mut b = [0u8; SAMPLE_BYTES];
        b[..SIGNED_BYTES].copy_from_slice(&self.signed_bytes());
        b[SIGNED_BYTES..].copy_from_slice(&self.signature);
        b
    }

    /// Parses the wire form (any 132 bytes parse; the signature is checked separately).
    pub fn decode(bytes: &[u8]) -> Result<RawSample, SampleLengthError> {
        let b: &[u8; SAMPLE_BYTES] = bytes
            .try_into()
            .map_err(|_| SampleLengthError(bytes.len()))?;
        let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().expect("8 bytes"));
        Ok(RawSample {
            device: Address(b[..32].try_into().expect("32 bytes")),
            seq: u64_at(32),
            time_ms: u64_at(40),
            out_register_mwh: u64_at(48),
            in_register_mwh: u64_at(56),
            power_w: i32::from_le_bytes(b[64..68].try_into().expect("4 bytes")),
            signature: b[68..].try_into().expect("64 bytes"),
        })
    }

    /// The sample's Merkle leaf.
    pub fn leaf(&self) -> Hash32 {
        Hash32(*blake3::hash(&self.encode()).as_bytes())
    }

    /// Checks the device's signature.
    pub fn verify(&self, chain_id: &str) -> Result<(), SignatureError> {
        crypto::verify_one(&self.device, &self.message(chain_id), &self.signature)
    }
}

/// The signed message for the first 68 bytes of a sample (exposed for batch verifiers that build
/// messages without decoding).
pub fn telemetry_message(chain_id: &str, signed: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(TELEMETRY_DOMAIN.len() + 4 + chain_id.len() + signed.len());
    m.extend_from_slice(TELEMETRY_DOMAIN);
    m.extend_from_slice(&(chain_id.len() as u32).to_le_bytes());
    m.extend_from_slice(chain_id.as_bytes());
    m.extend_from_slice(signed);
    m
}

/// The commitment of a slot's samples: Merkle root over their leaves in time order, and count.
pub fn commitment(samples: &[RawSample]) -> (Hash32, u32) {
    let leaves: Vec<Hash32> = samples.iter().map(RawSample::leaf).collect();
    (merkle::root(&leaves), samples.len() as u32)
}

/// One committed sample and the path that places it under a reading's root.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct SampleProof {
    pub sample: RawSample,
    /// Its position among the slot's samples (0 = first).
    pub index: u32,
    pub path: Vec<Hash32>,
}

/// How one committed sample contradicts the reading that committed to it.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    serde::Serialize,
    borsh::BorshSerialize,
    borsh::BorshDeserialize,
)]
#[serde(rename_all = "kebab-case")]
#[borsh(use_discriminant = true)]
#[repr(u8)]
pub enum Contradiction {
    /// The sample lies outside the reading's slot.
    OutsideSlot = 0,
    /// Its output register is above the register the reading claims at the end of the slot.
    RegisterAboveEnd = 1,
    /// Its output register is below the register the reading implies at the slot's start (end
    /// minus the energy out).
    RegisterBelowStart = 2,
    /// It is the slot's last sample and its register differs from the reading's.
    LastSampleMismatch = 3,
}

impl Contradiction {
    pub fn describe(self) -> &'static str {
        match self {
            Contradiction::OutsideSlot => "a committed sample lies outside the reading's slot",
            Contradiction::RegisterAboveEnd => {
                "a committed sample's register is above the reading's end-of-slot register"
            }
            Contradiction::RegisterBelowStart => {
                "a committed sample's register is below the reading's start-of-slot register"
            }
            Contradiction::LastSampleMismatch => {
                "the slot's last committed sample disagrees with the reading's register"
            }
        }
    }
}

/// Why a proof is not evidence against a reading.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProofError {
    #[error("the sample is from device {sample}, the reading from {reading}")]
    OtherDevice { sample: Address, reading: Address },
    #[error("the sample's signature does not verify: {0}")]
    Signature(#[from] SignatureError),
    #[error("the sample is not committed at index {index} of the reading's {count} samples")]
    NotCommitted { index: u32, count: u32 },
    #[error("the sample is consistent with the reading")]
    Consistent,
}

/// What a slot reading claims about its committed samples: the part a sample can contradict
/// (see `DeviceReading::claim` in [`crate::tx`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadingClaim {
    pub device: Address,
    pub energy_out_mwh: u64,
    pub register_mwh: u64,
    pub raw_root: Hash32,
    pub raw_count: u32,
}

/// Checks a [`SampleProof`] against `reading` and names the contradiction it proves. A sample
/// belongs to the slot whose span `(slot_start_ms, slot_end_ms]` holds the end of its interval.
pub fn contradiction(
    chain_id: &str,
    reading: &ReadingClaim,
    slot_start_ms: u64,
    slot_end_ms: u64,
    proof: &SampleProof,
) -> Result<Contradiction, ProofError> {
    let s = &proof.sample;
    if s.device != reading.device {
        return Err(ProofError::OtherDevice {
            sample: s.device,
            reading: reading.device,
        });
    }
    s.verify(chain_id)?;
    if !merkle::verify_proof(
        &reading.raw_root,
        &s.leaf(),
        u64::from(proof.index),
        u64::from(reading.raw_count),
        &proof.path,
    ) {
        return Err(ProofError::NotCommitted {
            index: proof.index,
            count: reading.raw_count,
        });
    }
    let start_register = reading.register_mwh.saturating_sub(reading.energy_out_mwh);
    if s.time_ms <= slot_start_ms || s.time_ms > slot_end_ms {
        Ok(Contradiction::OutsideSlot)
    } else if s.out_register_mwh > reading.register_mwh {
        Ok(Contradiction::RegisterAboveEnd)
    } else if s.out_register_mwh < start_register {
        Ok(Contradiction::RegisterBelowStart)
    } else if proof.index.checked_add(1) == Some(reading.raw_count)
        && s.out_register_mwh != reading.register_mwh
    {
        Ok(Contradiction::LastSampleMismatch)
    } else {
        Err(ProofError::Consistent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::Keypair;
    use crate::tx::DeviceReading;

    const CHAIN: &str = "test";

    fn slot_samples(key: &Keypair, start_ms: u64, n: u64, start_reg: u64) -> Vec<RawSample> {
        (1..=n)
            .map(|i| {
                RawSample::signed(
                    key,
                    CHAIN,
                    i,
                    start_ms + i * 1000,
                    start_reg + i * 10,
                    0,
                    36,
                )
            })
            .collect()
    }

    #[test]
    fn wire_form_round_trips_and_signature_binds_every_field() {
        let key = Keypair::from_seed([3; 32]);
        let s = RawSample::signed(&key, CHAIN, 7, 1_700_000_000_000, 123, 45, -600);
        let b = s.encode();
        assert_eq!(RawSample::decode(&b).unwrap(), s);
        assert!(s.verify(CHAIN).is_ok());
        assert!(s.verify("other-chain").is_err());
        for byte in 32..68 {
            let mut t = b;
            t[byte] ^= 1;
            assert!(
                RawSample::decode(&t).unwrap().verify(CHAIN).is_err(),
                "byte {byte}"
            );
        }
        assert_eq!(RawSample::decode(&b[..131]), Err(SampleLengthError(131)));
    }

    #[test]
    fn a_committed_sample_proves_an_inflated_reading_and_not_an_honest_one() {
        let key = Keypair::from_seed([4; 32]);
        let (start, end) = (900_000u64, 1_800_000u64);
        let samples = slot_samples(&key, start, 900, 5_000);
        let (root, count) = commitment(&samples);
        let proof_of = |i: usize| SampleProof {
            sample: samples[i],
            index: i as u32,
            path: merkle::proof(&samples.iter().map(RawSample::leaf).collect::<Vec<_>>(), i)
                .unwrap(),
        };
        let honest = DeviceReading::signed(&key, CHAIN, 1, 9_000, 0, 14_000, root, count);
        for i in [0, 450, 899] {
            assert_eq!(
                contradiction(CHAIN, &honest.claim(), start, end, &proof_of(i)),
                Err(ProofError::Consistent)
            );
        }
        // Claiming twice the energy by raising the end register: the last sample disagrees.
        let raised = DeviceReading::signed(&key, CHAIN, 1, 18_000, 0, 23_000, root, count);
        assert_eq!(
            contradiction(CHAIN, &raised.claim(), start, end, &proof_of(899)),
            Ok(Contradiction::LastSampleMismatch)
        );
        // A register lower than the telemetry reached within the slot.
        let low = DeviceReading::signed(&key, CHAIN, 1, 4_000, 0, 9_000, root, count);
        assert_eq!(
            contradiction(CHAIN, &low.claim(), start, end, &proof_of(600)),
            Ok(Contradiction::RegisterAboveEnd)
        );
        // A start register (end minus energy) above where the telemetry began.
        let late_start = DeviceReading::signed(&key, CHAIN, 1, 5_000, 0, 14_000, root, count);
        assert_eq!(
            contradiction(CHAIN, &late_start.claim(), start, end, &proof_of(0)),
            Ok(Contradiction::RegisterBelowStart)
        );
        // Telemetry of another slot (shifted in time) committed as this one.
        assert_eq!(
            contradiction(
                CHAIN,
                &honest.claim(),
                start + 900_000,
                end + 900_000,
                &proof_of(3)
            ),
            Ok(Contradiction::OutsideSlot)
        );
        // A proof at the wrong index, or a forged sample, is no evidence.
        let mut wrong = proof_of(5);
        wrong.index = 6;
        assert!(matches!(
            contradiction(CHAIN, &raised.claim(), start, end, &wrong),
            Err(ProofError::NotCommitted { .. })
        ));
        let mut forged = proof_of(899);
        forged.sample.out_register_mwh = 1;
        assert!(matches!(
            contradiction(CHAIN, &raised.claim(), start, end, &forged),
            Err(ProofError::Signature(_))
        ));
    }
}
