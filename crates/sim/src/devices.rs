//! Inverters with their own keys, and the ones that lie.
//!
//! With `devices.keyed_share`, a share of the PV homes register their inverter with its own key
//! and a bond (`RegisterDeviceKey`), and the inverter signs a reading of its output every slot
//! (`SubmitDeviceReadings`, with a cumulative register). The ledger checks each slot's readings
//! at settlement (proof of generation: register, rating, clear sky at the inverter's place and
//! orientation, the neighbours of its transformer); a held reading is not paid. `spoofing.devices`
//! of the keyed inverters claim `spoofing.factor` times their output, keeping their register
//! consistent with their claims. With `spoofing.report`, the run's grid operator reports a device's
//! first reading held by a hard physics check as fraud; the dispute slashes its bond when the
//! window passes, and the device can report no more. The KPIs count readings, holds of liars and
//! of honest inverters (false alarms), reports and slashes.

use std::collections::BTreeMap;

use gridmesh_ledger::devices::{DeviceIdentity, DeviceStatus, ReadingStatus};
use gridmesh_ledger::economics::DisputeState;
use gridmesh_ledger::readers::{DeviceReader, EconomicsReader};
use gridmesh_ledger::tx::{device_registration_message, DeviceInfo, DeviceReading, FraudEvidence};
use gridmesh_ledger::{DeviceKind, Keypair, TxKind};
use gridmesh_types::{Address, Amount, Hash32};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::Serialize;

use crate::community::Community;
use crate::ledger::SimChain;
use crate::scenario::Scenario;

/// Where the built-in weather was measured (Potsdam) and how the modelled arrays face: what a
/// keyed inverter declares, so that proof of generation checks it against the right sun.
const LATITUDE_MICRODEG: i32 = 52_380_000;
const LONGITUDE_MICRODEG: i32 = 13_070_000;
const TILT_DEG: u8 = 30;
const AZIMUTH_DEG: u16 = 180;

/// What the keyed inverters did over a run.
#[derive(Clone, Debug, Default, Serialize)]
pub struct DeviceKpis {
    pub keyed_inverters: usize,
    pub spoofing_inverters: usize,
    /// Signed readings committed.
    pub readings: u64,
    /// Readings that claimed more than the inverter made.
    pub false_readings: u64,
    /// Readings held by proof of generation: false ones (caught) and true ones (false alarms).
    pub false_readings_held: u64,
    pub true_readings_held: u64,
    /// Held readings by reason (numbers masked as `#`).
    pub hold_reasons: BTreeMap<String, u64>,
    pub fraud_reports: u64,
    /// Inverters slashed by the end of the run: liars and honest ones.
    pub spoofers_slashed: usize,
    pub honest_slashed: usize,
    /// Bond taken by slashes, tokens.
    pub bonds_slashed_tokens: f64,
}

struct Inverter {
    key: Keypair,
    spoofs: bool,
    register_mwh: u64,
    /// The slot of its reading a fraud report was sent for.
    reported: Option<u64>,
    /// Still reporting (not slashed).
    active: bool,
}

/// The run's keyed inverters, by home.
pub struct Inverters {
    homes: Vec<Option<Inverter>>,
    chain_id: String,
    bond: Amount,
    factor: f64,
    report: bool,
    /// Fraud reports for the next block: (device, chain slot).
    reports: Vec<(Address, u64)>,
    pub kpis: DeviceKpis,
}

/// An inverter's key in a run.
pub fn inverter_key(seed: u64, i: usize) -> Keypair {
    Keypair::from_seed(
        *blake3::hash(format!("gridmesh-sim/inverter/{seed}/{i}").as_bytes()).as_bytes(),
    )
}

impl Inverters {
    /// Draws which PV homes have keyed inverters and which of those spoof.
    pub fn draw(s: &Scenario, c: &Community, chain_id: &str) -> Result<Inverters, String> {
        let mut pv: Vec<usize> = (0..c.homes.homes.len())
            .filter(|&i| c.homes.homes[i].pv_kwp > 0.0)
            .collect();
        let mut rng = rand::rngs::StdRng::seed_from_u64(s.seed ^ 0x6b65_7965_645f_7076);
        pv.shuffle(&mut rng);
        let keyed = if s.devices.keyed_share > 0.0 {
            ((pv.len() as f64 * s.devices.keyed_share).round() as usize).clamp(1, pv.len())
        } else {
            0
        };
        if s.spoofing.devices > keyed {
            return Err(format!(
                "spoofing.devices is {}, but only {keyed} of the {} PV homes have keyed inverters (devices.keyed_share {})",
                s.spoofing.devices,
                pv.len(),
                s.devices.keyed_share
            ));
        }
        let mut homes: Vec<Option<Inverter>> = (0..c.homes.homes.len()).map(|_| None).collect();
        for (k, &i) in pv[..keyed].iter().enumerate() {
            homes[i] = Some(Inverter {
                key: inverter_key(s.seed, i),
                spoofs: k < s.spoofing.devices,
                register_mwh: 0,
                reported: None,
                active: true,
            });
        }
        Ok(Inverters {
            homes,
            chain_id: chain_id.to_string(),
            bond: Amount::from_tokens(s.devices.bond),
            factor: s.spoofing.factor,
            report: s.spoofing.report,
            reports: Vec::new(),
            kpis: DeviceKpis {
                keyed_inverters: keyed,
                spoofing_inverters: s.spoofing.devices,
                ..Default::default()
            },
        })
    }

    pub fn is_keyed(&self, i: usize) -> bool {
        self.homes[i].is_some()
    }

    /// Home `i`'s registration of its keyed inverter of `kwp` at `area`, owned by `owner`.
    pub fn registration(&self, i: usize, owner: &Address, area: &str, kwp: f64) -> Option<TxKind> {
        let inv = self.homes[i].as_ref()?;
        let info = DeviceInfo {
            kind: DeviceKind::Pv,
            capacity_w: (kwp * 1e3).ceil() as u32,
            location: area.to_string(),
            latitude_microdeg: LATITUDE_MICRODEG,
            longitude_microdeg: LONGITUDE_MICRODEG,
            tilt_deg: TILT_DEG,
            azimuth_deg: AZIMUTH_DEG,
        };
        let message = device_registration_message(&self.chain_id, owner, &info);
        Some(TxKind::RegisterDeviceKey {
            device: inv.key.address(),
            info,
            bond: self.bond,
            device_signature: inv.key.sign(&message),
        })
    }

    /// Home `i`'s inverter's signed reading of chain slot `slot`, in which it made `made_mwh`;
    /// `None` if it has no keyed inverter or can report no more.
    pub fn reading(&mut self, i: usize, slot: u64, made_mwh: u64) -> Option<TxKind> {
        let inv = self.homes[i].as_mut().filter(|v| v.active)?;
        let claimed = if inv.spoofs {
            (made_mwh as f64 * self.factor).round() as u64
        } else {
            made_mwh
        };
        inv.register_mwh += claimed;
        self.kpis.readings += 1;
        self.kpis.false_readings += u64::from(claimed > made_mwh);
        let r = DeviceReading::signed(
            &inv.key,
            &self.chain_id,
            slot,
            claimed,
            0,
            inv.register_mwh,
            Hash32([0; 32]),
            0,
        );
        Some(TxKind::SubmitDeviceReadings { readings: vec![r] })
    }

    /// The keyed inverters still reporting, by home.
    pub fn reporting(&self) -> Vec<(usize, Address)> {
        self.homes
            .iter()
            .enumerate()
            .filter_map(|(i, v)| {
                v.as_ref()
                    .filter(|v| v.active)
                    .map(|v| (i, v.key.address()))
            })
            .collect()
    }

    /// How proof of generation judged the readings of the settled chain slot `slot` of
    /// `devices` (read on the chain right after the settling block).
    pub fn judged(
        chain: &impl SimChain,
        slot: u64,
        devices: &[(usize, Address)],
    ) -> Vec<(usize, ReadingStatus)> {
        chain.read(|st| {
            devices
                .iter()
                .filter_map(|(i, d)| {
                    let r = st.device_reading(slot, d)?;
                    Some((*i, r.status))
                })
                .collect()
        })
    }

    /// Counts the verdicts on slot `slot`'s readings, and queues the fraud reports.
    pub fn record(&mut self, slot: u64, verdicts: Vec<(usize, ReadingStatus)>) {
        for (i, status) in verdicts {
            let ReadingStatus::Held { reason } = status else {
                continue;
            };
            let Some(inv) = self.homes[i].as_mut() else {
                continue;
            };
            if inv.spoofs {
                self.kpis.false_readings_held += 1;
            } else {
                self.kpis.true_readings_held += 1;
            }
            *self
                .kpis
                .hold_reasons
                .entry(crate::ledger::refusal_reason(&reason.hold()))
                .or_insert(0) += 1;
            if reason.disputable() && self.report && inv.reported.is_none() {
                inv.reported = Some(slot);
                self.reports.push((inv.key.address(), slot));
            }
        }
    }

    /// The fraud reports for the next block.
    pub fn take_reports(&mut self) -> Vec<TxKind> {
        self.kpis.fraud_reports += self.reports.len() as u64;
        self.reports
            .drain(..)
            .map(|(device, slot)| TxKind::ReportFraud {
                device,
                slot,
                evidence: FraudEvidence::Physics,
            })
            .collect()
    }

    /// Learns which reported inverters are slashed by the block at `block_ms` (their dispute is
    /// upheld, or resolves by then): they report no more. Returns their homes.
    pub fn refresh(&mut self, chain: &impl SimChain, block_ms: u64) -> Vec<usize> {
        let mut slashed = Vec::new();
        for (i, inv) in self.homes.iter_mut().enumerate() {
            let Some(inv) = inv.as_mut().filter(|v| v.active) else {
                continue;
            };
            let Some(slot) = inv.reported else { continue };
            let dispute = chain.read(|st| st.dispute(slot, &inv.key.address()));
            let gone = dispute.is_some_and(|d| match d.state {
                DisputeState::Open => d.resolves_ms <= block_ms,
                DisputeState::Upheld => true,
                DisputeState::Dismissed => false,
            });
            if gone {
                inv.active = false;
                slashed.push(i);
            }
        }
        slashed
    }

    /// The KPIs at the end of the run.
    pub fn finish(mut self, chain: &impl SimChain) -> DeviceKpis {
        let bond = self.bond.0;
        for inv in self.homes.iter().flatten() {
            let Some(d) = status(chain, &inv.key.address()) else {
                continue;
            };
            if d.status == DeviceStatus::Slashed {
                if inv.spoofs {
                    self.kpis.spoofers_slashed += 1;
                } else {
                    self.kpis.honest_slashed += 1;
                }
            }
            self.kpis.bonds_slashed_tokens += bond.saturating_sub(d.bond) as f64 / 1e6;
        }
        self.kpis
    }
}

fn status(chain: &impl SimChain, device: &Address) -> Option<DeviceIdentity> {
    chain.read(|st| st.device(device))
}
