//! Inverters and batteries with their own keys, and the inverters that lie.
//!
//! With `devices.keyed_share` (all by default), a share of the homes with PV or a battery register
//! their inverter and battery with their own keys and bonds (`RegisterDeviceKey`), and each device
//! signs a reading of every slot in which it moved energy (`SubmitDeviceReadings`, with a
//! cumulative register and a commitment to the signed sample it sums). On a chain that vouches
//! for its devices (in memory, unless `devices.check_signatures`), the readings and samples are
//! the same but unsigned. Only those homes can sell:
//! the ledger pays a seller for no more than its keyed devices measured, and a home whose devices
//! are declared without keys only buys. The ledger checks each slot's readings
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
use gridmesh_ledger::tx::{DeviceInfo, DeviceReading, FraudEvidence};
use gridmesh_ledger::{DeviceKind, DeviceSignatures, Keypair, TxKind};
use gridmesh_types::{Address, Amount};
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
    /// What it bonded, base units.
    bond: u128,
    spoofs: bool,
    register_mwh: u64,
    /// The slot of its reading a fraud report was sent for.
    reported: Option<u64>,
    /// Still reporting (not slashed).
    active: bool,
}

/// A home battery with its own key.
struct KeyedBattery {
    key: Keypair,
    out_register_mwh: u64,
    in_register_mwh: u64,
}

/// The run's keyed inverters and batteries, by home.
/// Which of a home's keyed devices a reading is of.
#[derive(Clone, Copy, Debug)]
enum KeyedDevice {
    Inverter,
    Battery,
}

/// Energy through a device in a slot and its register after it, mWh.
type Counted = (u64, u64);

/// A home's keyed devices' readings of a slot before their keys sign them: per device, what
/// came out of it and what went into it.
pub struct UnsignedReadings {
    home: usize,
    slot: u64,
    /// What was measured: the panels' output and the battery's (out, in).
    measured: (u64, (u64, u64)),
    readings: Vec<(KeyedDevice, Counted, Counted)>,
}

/// A home's keyed devices' readings of a slot, signed ([`Inverters::signed`]).
pub struct SignedReadings {
    unsigned: UnsignedReadings,
    tx: TxKind,
}

pub struct Inverters {
    homes: Vec<Option<Inverter>>,
    batteries: Vec<Option<KeyedBattery>>,
    chain_id: String,
    /// Whether the devices sign their readings (or the chain vouches for them unsigned).
    signatures: DeviceSignatures,
    /// The scenario's bond per device, tokens (a device bonds at least what the market asks for
    /// its rating).
    bond: Amount,
    market: gridmesh_ledger::config::MarketConfig,
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

/// A battery's key in a run.
pub fn battery_key(seed: u64, i: usize) -> Keypair {
    Keypair::from_seed(
        *blake3::hash(format!("gridmesh-sim/battery/{seed}/{i}").as_bytes()).as_bytes(),
    )
}

impl Inverters {
    /// Draws which homes with PV or a battery have keyed devices, and which keyed inverters
    /// spoof.
    pub fn draw(
        s: &Scenario,
        c: &Community,
        chain_id: &str,
        signatures: DeviceSignatures,
    ) -> Result<Inverters, String> {
        let homes_of = &c.homes.homes;
        let mut producing: Vec<usize> = (0..homes_of.len())
            .filter(|&i| homes_of[i].pv_kwp > 0.0 || homes_of[i].battery.is_some())
            .collect();
        let mut rng = rand::rngs::StdRng::seed_from_u64(s.seed ^ 0x6b65_7965_645f_7076);
        producing.shuffle(&mut rng);
        let keyed = if s.devices.keyed_share > 0.0 && !producing.is_empty() {
            ((producing.len() as f64 * s.devices.keyed_share).round() as usize)
                .clamp(1, producing.len())
        } else {
            0
        };
        let keyed_pv = producing[..keyed]
            .iter()
            .filter(|&&i| homes_of[i].pv_kwp > 0.0)
            .count();
        if s.spoofing.devices > keyed_pv {
            return Err(format!(
                "spoofing.devices is {}, but only {keyed_pv} of the {} PV homes have keyed inverters (devices.keyed_share {})",
                s.spoofing.devices,
                homes_of.iter().filter(|h| h.pv_kwp > 0.0).count(),
                s.devices.keyed_share
            ));
        }
        // The run's genesis leaves the device rules at their defaults.
        let market = gridmesh_ledger::config::MarketConfig::default();
        let bond = Amount::from_tokens(s.devices.bond);
        let mut homes: Vec<Option<Inverter>> = (0..homes_of.len()).map(|_| None).collect();
        let mut batteries: Vec<Option<KeyedBattery>> = (0..homes_of.len()).map(|_| None).collect();
        let mut spoofers = 0;
        for &i in &producing[..keyed] {
            let h = &homes_of[i];
            if h.pv_kwp > 0.0 {
                let capacity_w = (h.pv_kwp * 1e3).ceil() as u32;
                homes[i] = Some(Inverter {
                    key: inverter_key(s.seed, i),
                    bond: bond.0.max(market.device_bond(DeviceKind::Pv, capacity_w)),
                    spoofs: spoofers < s.spoofing.devices,
                    register_mwh: 0,
                    reported: None,
                    active: true,
                });
                spoofers += 1;
            }
            if h.battery.is_some() {
                batteries[i] = Some(KeyedBattery {
                    key: battery_key(s.seed, i),
                    out_register_mwh: 0,
                    in_register_mwh: 0,
                });
            }
        }
        Ok(Inverters {
            homes,
            batteries,
            chain_id: chain_id.to_string(),
            signatures,
            bond,
            market,
            factor: s.spoofing.factor,
            report: s.spoofing.report,
            reports: Vec::new(),
            kpis: DeviceKpis {
                keyed_inverters: keyed_pv,
                spoofing_inverters: s.spoofing.devices,
                ..Default::default()
            },
        })
    }

    /// Whether home `i` has any device with its own key (and so may sell).
    pub fn is_keyed(&self, i: usize) -> bool {
        self.homes[i].is_some() || self.batteries[i].is_some()
    }

    /// What home `i`'s keyed devices still reporting can deliver in a slot, mWh (what its asks
    /// may offer).
    pub fn keyed_capacity_mwh(&self, i: usize, home: &gridmesh_agent::study::Home) -> u64 {
        let pv = self.homes[i]
            .as_ref()
            .filter(|v| v.active)
            .map_or(0, |_| (home.pv_kwp * 1e3).ceil() as u64 * 250);
        let battery = self.batteries[i].as_ref().map_or(0, |_| {
            home.battery
                .as_ref()
                .map_or(0, |b| (b.power_kw * 1e3).ceil() as u64 * 250)
        });
        pv + battery
    }

    fn register(&self, key: &Keypair, owner: &Address, info: DeviceInfo, bond: u128) -> TxKind {
        TxKind::register_device_key(&self.chain_id, owner, key, info, Amount(bond))
    }

    fn info(kind: DeviceKind, capacity_w: u32, area: &str) -> DeviceInfo {
        DeviceInfo {
            kind,
            capacity_w,
            location: area.to_string(),
            latitude_microdeg: LATITUDE_MICRODEG,
            longitude_microdeg: LONGITUDE_MICRODEG,
            tilt_deg: TILT_DEG,
            azimuth_deg: AZIMUTH_DEG,
        }
    }

    /// Home `i`'s registration of its keyed inverter of `kwp` at `area`, owned by `owner`.
    pub fn registration(&self, i: usize, owner: &Address, area: &str, kwp: f64) -> Option<TxKind> {
        let inv = self.homes[i].as_ref()?;
        let info = Self::info(DeviceKind::Pv, (kwp * 1e3).ceil() as u32, area);
        Some(self.register(&inv.key, owner, info, inv.bond))
    }

    /// Home `i`'s registration of its keyed battery of `kw` at `area`, owned by `owner`.
    pub fn battery_registration(
        &self,
        i: usize,
        owner: &Address,
        area: &str,
        kw: f64,
    ) -> Option<TxKind> {
        let b = self.batteries[i].as_ref()?;
        let capacity_w = (kw * 1e3).ceil() as u32;
        let bond = self
            .bond
            .0
            .max(self.market.device_bond(DeviceKind::Battery, capacity_w));
        let info = Self::info(DeviceKind::Battery, capacity_w, area);
        Some(self.register(&b.key, owner, info, bond))
    }

    /// Home `i`'s keyed devices' readings of chain slot `slot`, in which its panels made
    /// `made_mwh` and its battery discharged `out_mwh` and charged `in_mwh`: one of each device
    /// that moved energy, on registers that count it, to be signed ([`Inverters::signed`]), or
    /// `None`. The registers move on only when the readings go into a block
    /// ([`Inverters::submit`]).
    pub fn readings(
        &self,
        i: usize,
        slot: u64,
        made_mwh: u64,
        (out_mwh, in_mwh): (u64, u64),
    ) -> Option<UnsignedReadings> {
        let mut readings = Vec::new();
        if let Some(inv) = self.homes[i].as_ref().filter(|v| v.active && made_mwh > 0) {
            let claimed = if inv.spoofs {
                (made_mwh as f64 * self.factor).round() as u64
            } else {
                made_mwh
            };
            readings.push((
                KeyedDevice::Inverter,
                (claimed, inv.register_mwh + claimed),
                (0, 0),
            ));
        }
        if let Some(b) = self.batteries[i]
            .as_ref()
            .filter(|_| out_mwh > 0 || in_mwh > 0)
        {
            readings.push((
                KeyedDevice::Battery,
                (out_mwh, b.out_register_mwh + out_mwh),
                (in_mwh, b.in_register_mwh + in_mwh),
            ));
        }
        (!readings.is_empty()).then_some(UnsignedReadings {
            home: i,
            slot,
            measured: (made_mwh, (out_mwh, in_mwh)),
            readings,
        })
    }

    /// Each home's readings signed by its devices' keys, on the machine's cores (two
    /// signatures a reading: its telemetry sample's and its own), or unsigned where the chain
    /// vouches for its devices. The simulator makes a slot's readings beside the block that runs
    /// then, ahead of the block they go in.
    pub fn signed(&self, unsigned: Vec<Option<UnsignedReadings>>) -> Vec<Option<SignedReadings>> {
        let mut out: Vec<Option<SignedReadings>> = Vec::new();
        out.resize_with(unsigned.len(), || None);
        let jobs: Vec<UnsignedReadings> = unsigned.into_iter().flatten().collect();
        let signed = gridmesh_agent::study::on_cores(jobs, |r| {
            let tx = self.sign(&r);
            (r.home, SignedReadings { unsigned: r, tx })
        });
        for (i, s) in signed {
            out[i] = Some(s);
        }
        out
    }

    fn sign(&self, r: &UnsignedReadings) -> TxKind {
        let readings = r
            .readings
            .iter()
            .map(|(device, out, inn)| {
                let key = match device {
                    KeyedDevice::Inverter => self.homes[r.home].as_ref().map(|v| &v.key),
                    KeyedDevice::Battery => self.batteries[r.home].as_ref().map(|b| &b.key),
                }
                .expect("a reading only of a keyed device");
                match self.signatures {
                    DeviceSignatures::Checked => DeviceReading::with_one_sample(
                        key,
                        &self.chain_id,
                        r.slot,
                        r.slot,
                        *out,
                        *inn,
                    ),
                    DeviceSignatures::Vouched => DeviceReading::vouched_one_sample(
                        key.address(),
                        &self.chain_id,
                        r.slot,
                        r.slot,
                        *out,
                        *inn,
                    ),
                }
            })
            .collect();
        TxKind::SubmitDeviceReadings { readings }
    }

    /// The transactions of signed readings as they go into a block, by home: their devices'
    /// registers move on. An inverter slashed since its reading was signed
    /// ([`Inverters::refresh`]) reports no more: its home's readings are made and signed again
    /// without it.
    pub fn submit(&mut self, signed: Vec<Option<SignedReadings>>) -> Vec<Option<TxKind>> {
        signed
            .into_iter()
            .map(|s| {
                let s = s?;
                let r = &s.unsigned;
                let slashed = r.readings.iter().any(|(d, ..)| {
                    matches!(d, KeyedDevice::Inverter)
                        && !self.homes[r.home].as_ref().is_some_and(|v| v.active)
                });
                let (r, tx) = if slashed {
                    let (made_mwh, moved) = r.measured;
                    let r = self.readings(r.home, r.slot, made_mwh, moved)?;
                    let tx = self.sign(&r);
                    (r, tx)
                } else {
                    (s.unsigned, s.tx)
                };
                self.count(&r);
                Some(tx)
            })
            .collect()
    }

    /// Moves the registers of the devices of readings `r` on, and counts the inverter's.
    fn count(&mut self, r: &UnsignedReadings) {
        for (device, (out_mwh, out_register_mwh), (_, in_register_mwh)) in &r.readings {
            match device {
                KeyedDevice::Inverter => {
                    let inv = self.homes[r.home].as_mut().expect("a keyed inverter");
                    inv.register_mwh = *out_register_mwh;
                    self.kpis.readings += 1;
                    self.kpis.false_readings += u64::from(*out_mwh > r.measured.0);
                }
                KeyedDevice::Battery => {
                    let b = self.batteries[r.home].as_mut().expect("a keyed battery");
                    b.out_register_mwh = *out_register_mwh;
                    b.in_register_mwh = *in_register_mwh;
                }
            }
        }
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
        for inv in self.homes.iter().flatten() {
            let bond = inv.bond;
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
