//! Transactions and their canonical encoding.
//!
//! # Wire format (version 1)
//!
//! A signed transaction is the [Borsh](https://borsh.io) encoding of [`SignedTx`]: fixed-width
//! little-endian integers, `u32` length prefixes for strings, one-byte enum tags. Borsh has exactly one
//! encoding per value, and [`SignedTx::decode`] additionally rejects:
//! - input longer than [`MAX_TX_BYTES`] and trailing bytes after the value,
//! - a `version` other than [`TX_VERSION`] and unknown transaction kinds,
//! - a chain id that is empty, longer than 32 bytes or not `[a-z0-9-]`,
//! - a zero transfer amount.
//!
//! so `decode(bytes) == Ok(tx)` implies `tx.encode() == bytes`.
//!
//! ```text
//! SignedTx  = TxBody ‖ signature: [u8; 64]
//! TxBody    = version: u8 ‖ chain_id: string ‖ sender: [u8; 32] ‖ nonce: u64 ‖ kind: TxKind
//! TxKind    = 0x00 ‖ to: [u8; 32] ‖ amount: u128            (Transfer)
//!           | 0x01 ‖ kind: u8 ‖ capacity_w: u32             (RegisterDevice)
//!           | 0x02 ‖ slot: u64 ‖ side: u8 ‖ energy_mwh: u64 ‖ price_per_kwh: u64 ‖ location: string
//!                                                          (PlaceOrder)
//!           | 0x03 ‖ slot: u64 ‖ order_id: u64              (CancelOrder)
//!           | 0x04 ‖ slot: u64 ‖ import_mwh: u64 ‖ export_mwh: u64  (SubmitReading)
//! string    = len: u32 ‖ UTF-8 bytes
//! ```
//!
//! The signature is ed25519 over `"gridmesh/tx/v1\0" ‖ borsh(TxBody)` by the sender's key (the sender
//! address is the public key). The transaction hash is BLAKE3 over the whole signed encoding.
//!
//! New kinds (device registration, readings, orders, stakes) are appended to [`TxKind`] with new tags;
//! existing tags never change meaning.

use borsh::{BorshDeserialize, BorshSerialize};
pub use gridmesh_market::Side;
use gridmesh_types::units::MAX_SLOT;
use gridmesh_types::{Address, Amount, Hash32};

use crate::crypto::{self, Keypair, SignatureError, TX_SIGNING_DOMAIN};

/// The only transaction format version this node accepts.
pub const TX_VERSION: u8 = 1;
/// Upper bound on an encoded transaction; larger input is rejected before decoding.
pub const MAX_TX_BYTES: usize = 1024;
/// Upper bound on the length of a chain id.
pub const MAX_CHAIN_ID_LEN: usize = 32;

/// What a transaction does. Extended by later features with new variants (never reordered).
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
#[borsh(use_discriminant = true)]
#[repr(u8)]
pub enum TxKind {
    /// Move `amount` base units from the sender to `to`.
    Transfer { to: Address, amount: Amount } = 0,
    /// Register a device of the sender (PV, battery, EV charger, load, meter) with its rated power.
    RegisterDevice { kind: DeviceKind, capacity_w: u32 } = 1,
    /// Place an order for a delivery slot. A bid locks `ceil(energy × price)` in escrow; an ask
    /// needs a producing device (PV or battery) and locks collateral against falling short.
    PlaceOrder {
        slot: u64,
        side: Side,
        energy_mwh: u64,
        price_per_kwh: u64,
        /// The market area the sender's connection sits in, e.g. `street-1/house-4` ("" = root).
        location: String,
    } = 2,
    /// Cancel an open order of the sender before gate closure; its escrow is returned.
    CancelOrder { slot: u64, order_id: u64 } = 3,
    /// The sender's grid-connection meter for a delivery slot that has ended: energy imported
    /// from and exported to the grid. Signed by the owner's key until devices sign their own.
    SubmitReading {
        slot: u64,
        import_mwh: u64,
        export_mwh: u64,
    } = 4,
    /// The grid operator's operating envelope for one connection point (`location`, as orders
    /// name it) in a slot: the most its orders may buy and sell there. Only the market's grid
    /// operator may send it, before the slot's gate closure; a later one for the same location
    /// replaces it. Clearing trims the location's orders to it (`gridmesh_market::within_limits`).
    SetEnvelope {
        slot: u64,
        location: String,
        import_mwh: u64,
        export_mwh: u64,
    } = 5,
    /// A transition of the microgrid's islanding controller, reported by the grid operator at
    /// `at_ms` (no later than the block's time). While islanded, slots clear under island rules.
    GridEvent { event: GridEventKind, at_ms: u64 } = 6,
    /// Register a device with its own key, owned by the sender, bonding `bond` (at least the
    /// market's `min_device_bond`). `device_signature` is the device key's signature over
    /// [`device_registration_message`], proving the sender holds the device (a key cannot be
    /// registered by someone who does not). Location: the market area the device's connection sits
    /// in, coarse coordinates (microdegrees) and, for PV, the array's tilt and azimuth.
    RegisterDeviceKey {
        device: Address,
        info: DeviceInfo,
        bond: Amount,
        device_signature: [u8; 64],
    } = 7,
    /// Hand a device of the sender, with its bond, to another account.
    TransferDevice { device: Address, to: Address } = 8,
    /// Retire a device of the sender: it can no longer report, and its bond returns.
    DecommissionDevice { device: Address } = 9,
    /// Readings signed by devices' own keys, batched by a gateway (any sender): each device's
    /// energy out of and into it over an ended slot, its cumulative register, and a commitment to
    /// the raw telemetry behind it. Checked for proof of generation when the slot settles.
    SubmitDeviceReadings { readings: Vec<DeviceReading> } = 10,
    /// Evidence that a device's reading of `slot` was false, sent by anyone but its owner within
    /// the dispute window. A committed sample that contradicts the reading slashes the bond at
    /// once; a reading held by a hard physics check opens a dispute that slashes when the window
    /// ends unless the grid operator dismisses it. See [`crate::economics`].
    ReportFraud {
        device: Address,
        slot: u64,
        evidence: FraudEvidence,
    } = 11,
    /// The grid operator dismisses an open physics dispute (e.g. a site inspection found a
    /// faulty but honest meter): nothing is slashed.
    DismissDispute { device: Address, slot: u64 } = 12,
    /// The grid operator asks the devices of `area` to reduce (discharge, defer) or increase
    /// (charge, absorb surplus) their draw in `slot`, and what a kWh of response is worth to the
    /// grid (the weight of the reward it earns). Before the slot starts; a later one replaces it.
    RequestFlexibility {
        slot: u64,
        area: String,
        direction: FlexDirection,
        value_per_kwh: u64,
    } = 13,
    /// Makes the sender a community asset (a shared PV plant or battery) owned in shares; its
    /// market revenue of each epoch is paid out to the holders pro rata.
    CreateAsset {
        name: String,
        holders: Vec<Shareholding>,
    } = 14,
    /// Moves `shares` of `asset` from the sender to `to`.
    TransferShares {
        asset: Address,
        to: Address,
        shares: u64,
    } = 15,
    /// The utility's prices in `slot` (base units per kWh) in place of the genesis tariff: the
    /// grid operator passes on what its DSO or supplier publishes (an OpenADR `PRICE` and
    /// `EXPORT_PRICE`). Only the grid operator may send it, before the slot's gate closure; a
    /// later one replaces it.
    SetTariff {
        slot: u64,
        retail_per_kwh: u64,
        feed_in_per_kwh: u64,
    } = 16,
}

impl TxKind {
    /// The latest delivery slot the transaction names, if any (checked against [`MAX_SLOT`]
    /// with its form).
    pub fn latest_slot(&self) -> Option<u64> {
        match self {
            TxKind::PlaceOrder { slot, .. }
            | TxKind::CancelOrder { slot, .. }
            | TxKind::SubmitReading { slot, .. }
            | TxKind::SetEnvelope { slot, .. }
            | TxKind::SetTariff { slot, .. }
            | TxKind::ReportFraud { slot, .. }
            | TxKind::DismissDispute { slot, .. }
            | TxKind::RequestFlexibility { slot, .. } => Some(*slot),
            TxKind::SubmitDeviceReadings { readings } => readings.iter().map(|r| r.slot).max(),
            TxKind::Transfer { .. }
            | TxKind::RegisterDevice { .. }
            | TxKind::GridEvent { .. }
            | TxKind::RegisterDeviceKey { .. }
            | TxKind::TransferDevice { .. }
            | TxKind::DecommissionDevice { .. }
            | TxKind::CreateAsset { .. }
            | TxKind::TransferShares { .. } => None,
        }
    }
}

/// What shows a reading false.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
#[borsh(use_discriminant = true)]
#[repr(u8)]
pub enum FraudEvidence {
    /// One sample of the telemetry the reading committed to, with its inclusion proof.
    Commitment(crate::telemetry::SampleProof) = 0,
    /// The reading was held by a hard physics check (register, rating, clear sky).
    Physics = 1,
}

/// Which way a flexibility request asks devices to move.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, BorshSerialize, BorshDeserialize, serde::Serialize,
)]
#[borsh(use_discriminant = true)]
#[serde(rename_all = "kebab-case")]
#[repr(u8)]
pub enum FlexDirection {
    /// Less draw from the grid: batteries discharge, loads defer.
    Reduce = 0,
    /// More draw: batteries and EVs charge (valley filling, local surplus).
    Increase = 1,
}

impl FlexDirection {
    pub fn name(self) -> &'static str {
        match self {
            FlexDirection::Reduce => "reduce",
            FlexDirection::Increase => "increase",
        }
    }
}

impl std::str::FromStr for FlexDirection {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [FlexDirection::Reduce, FlexDirection::Increase]
            .into_iter()
            .find(|d| d.name() == s)
            .ok_or_else(|| format!("unknown direction {s:?} (expected reduce or increase)"))
    }
}

/// One holder's shares of a community asset.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, serde::Serialize)]
pub struct Shareholding {
    pub holder: Address,
    pub shares: u64,
}

/// Most holders of one community asset.
pub const MAX_ASSET_HOLDERS: usize = 16;
/// Longest asset name.
pub const MAX_ASSET_NAME_LEN: usize = 32;

/// The most device readings one transaction carries (the transaction size limit).
pub const MAX_DEVICE_READINGS_PER_TX: usize = 5;

/// One slot's reading of a device, signed by the device key.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, serde::Serialize)]
pub struct DeviceReading {
    pub device: Address,
    pub slot: u64,
    /// Energy the device produced or discharged (PV, battery) over the slot.
    pub energy_out_mwh: u64,
    /// Energy it consumed or charged.
    pub energy_in_mwh: u64,
    /// Its cumulative output register after the slot.
    pub register_mwh: u64,
    /// Merkle root of the raw high-resolution telemetry the owner's node keeps
    /// ([`crate::telemetry`]), and how many samples it covers.
    pub raw_root: Hash32,
    pub raw_count: u32,
    #[serde(skip)]
    pub signature: [u8; 64],
}

impl DeviceReading {
    /// What the reading claims about its committed samples (what a fraud proof can contradict).
    pub fn claim(&self) -> crate::telemetry::ReadingClaim {
        crate::telemetry::ReadingClaim {
            device: self.device,
            energy_out_mwh: self.energy_out_mwh,
            register_mwh: self.register_mwh,
            raw_root: self.raw_root,
            raw_count: self.raw_count,
        }
    }
}

/// Domain separation of device reading signatures.
pub const DEVICE_READING_DOMAIN: &[u8] = b"gridmesh/device-reading/v1\0";

/// What a device key signs for a reading: the domain, the chain id and every field but the
/// signature.
pub fn device_reading_message(chain_id: &str, r: &DeviceReading) -> Vec<u8> {
    let mut m = DEVICE_READING_DOMAIN.to_vec();
    m.extend_from_slice(&borsh::to_vec(&chain_id.to_string()).expect("a string encodes"));
    m.extend_from_slice(&r.device.0);
    for x in [r.slot, r.energy_out_mwh, r.energy_in_mwh, r.register_mwh] {
        m.extend_from_slice(&x.to_le_bytes());
    }
    m.extend_from_slice(&r.raw_root.0);
    m.extend_from_slice(&r.raw_count.to_le_bytes());
    m
}

impl DeviceReading {
    /// A reading signed by `device`.
    #[allow(clippy::too_many_arguments)]
    pub fn signed(
        device: &Keypair,
        chain_id: &str,
        slot: u64,
        energy_out_mwh: u64,
        energy_in_mwh: u64,
        register_mwh: u64,
        raw_root: Hash32,
        raw_count: u32,
    ) -> DeviceReading {
        let mut r = DeviceReading::unsigned(
            device.address(),
            slot,
            energy_out_mwh,
            energy_in_mwh,
            register_mwh,
            raw_root,
            raw_count,
        );
        r.signature = device.sign(&device_reading_message(chain_id, &r));
        r
    }

    /// The same reading of `device` with an all-zero signature (see
    /// [`DeviceReading::vouched_one_sample`]).
    pub fn unsigned(
        device: Address,
        slot: u64,
        energy_out_mwh: u64,
        energy_in_mwh: u64,
        register_mwh: u64,
        raw_root: Hash32,
        raw_count: u32,
    ) -> DeviceReading {
        DeviceReading {
            device,
            slot,
            energy_out_mwh,
            energy_in_mwh,
            register_mwh,
            raw_root,
            raw_count,
            signature: [0; 64],
        }
    }

    /// A reading of `slot` signed by `device` that commits to the one sample the device signs at
    /// the slot's end (sample counter `seq`): what a device keeping no finer telemetry reports.
    /// `out` and `inn` are the slot's energy and the register after it, out of and into the
    /// device, mWh.
    pub fn with_one_sample(
        device: &Keypair,
        chain_id: &str,
        slot: u64,
        seq: u64,
        out: (u64, u64),
        inn: (u64, u64),
    ) -> DeviceReading {
        DeviceReading::one_sample(
            device.address(),
            Some(device),
            chain_id,
            slot,
            seq,
            out,
            inn,
        )
    }

    /// [`DeviceReading::with_one_sample`] of `device` with neither the sample nor the reading
    /// signed (all-zero signatures): a simulated device's reading in an unsigned transaction
    /// whose caller vouches for its devices too ([`crate::DeviceSignatures::Vouched`]). Any
    /// block a node builds or checks refuses it.
    pub fn vouched_one_sample(
        device: Address,
        chain_id: &str,
        slot: u64,
        seq: u64,
        out: (u64, u64),
        inn: (u64, u64),
    ) -> DeviceReading {
        DeviceReading::one_sample(device, None, chain_id, slot, seq, out, inn)
    }

    /// The one-sample reading of `device`, sample and reading signed by `signer` if any.
    fn one_sample(
        device: Address,
        signer: Option<&Keypair>,
        chain_id: &str,
        slot: u64,
        seq: u64,
        (out_mwh, out_register_mwh): (u64, u64),
        (in_mwh, in_register_mwh): (u64, u64),
    ) -> DeviceReading {
        use crate::telemetry::RawSample;
        // The slot's mean power, W (mWh per quarter hour × 4 / 1000), positive out of the device.
        let power_w = (i128::from(out_mwh) - i128::from(in_mwh)) * 4 / 1000;
        let power_w = power_w.clamp(i128::from(i32::MIN), i128::from(i32::MAX)) as i32;
        let time_ms = gridmesh_types::units::slot_start_ms(slot.saturating_add(1));
        let (reg_out, reg_in) = (out_register_mwh, in_register_mwh);
        let sample = match signer {
            Some(k) => RawSample::signed(k, chain_id, seq, time_ms, reg_out, reg_in, power_w),
            None => RawSample::unsigned(device, seq, time_ms, reg_out, reg_in, power_w),
        };
        let (root, count) = crate::telemetry::commitment(&[sample]);
        match signer {
            Some(k) => {
                DeviceReading::signed(k, chain_id, slot, out_mwh, in_mwh, reg_out, root, count)
            }
            None => DeviceReading::unsigned(device, slot, out_mwh, in_mwh, reg_out, root, count),
        }
    }
}

/// What a device is and where it sits.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, serde::Serialize)]
pub struct DeviceInfo {
    pub kind: DeviceKind,
    /// Rated power (PV: at 1,000 W/m²), watts.
    pub capacity_w: u32,
    /// The market area of its connection, e.g. `street-1/house-4`.
    pub location: String,
    /// Coarse position for solar geometry, microdegrees (north and east positive).
    pub latitude_microdeg: i32,
    pub longitude_microdeg: i32,
    /// PV only (0 otherwise): tilt from horizontal and azimuth eastward from north, degrees.
    pub tilt_deg: u8,
    pub azimuth_deg: u16,
}

/// Domain separation of device registration signatures.
pub const DEVICE_REGISTRATION_DOMAIN: &[u8] = b"gridmesh/device-registration/v1\0";

impl TxKind {
    /// `RegisterDeviceKey`: `device` registered under `owner` on `chain_id` as `info` says,
    /// signed by the device key, bonding `bond`.
    pub fn register_device_key(
        chain_id: &str,
        owner: &Address,
        device: &Keypair,
        info: DeviceInfo,
        bond: Amount,
    ) -> TxKind {
        let message = device_registration_message(chain_id, owner, &info);
        TxKind::RegisterDeviceKey {
            device: device.address(),
            info,
            bond,
            device_signature: device.sign(&message),
        }
    }
}

/// What a device key signs to be registered under `owner` on `chain_id`: the domain, the chain
/// id, the owner and the canonical encoding of `info`.
pub fn device_registration_message(chain_id: &str, owner: &Address, info: &DeviceInfo) -> Vec<u8> {
    let mut m = DEVICE_REGISTRATION_DOMAIN.to_vec();
    m.extend_from_slice(&borsh::to_vec(&chain_id.to_string()).expect("a string encodes"));
    m.extend_from_slice(&owner.0);
    m.extend_from_slice(&borsh::to_vec(info).expect("device info encodes"));
    m
}

/// A transition of the islanding controller (`gridmesh_grid::island`).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, BorshSerialize, BorshDeserialize, serde::Serialize,
)]
#[borsh(use_discriminant = true)]
#[serde(rename_all = "kebab-case")]
#[repr(u8)]
pub enum GridEventKind {
    /// The PCC breaker opened: the batteries form the grid.
    Islanded = 0,
    /// The main grid is back; the microgrid is synchronising to it.
    Resynchronising = 1,
    /// The PCC breaker closed again.
    Reconnected = 2,
}

/// What a registered device is.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, BorshSerialize, BorshDeserialize, serde::Serialize,
)]
#[borsh(use_discriminant = true)]
#[serde(rename_all = "kebab-case")]
#[repr(u8)]
pub enum DeviceKind {
    Pv = 0,
    Battery = 1,
    EvCharger = 2,
    Load = 3,
    Meter = 4,
}

impl GridEventKind {
    pub fn name(self) -> &'static str {
        match self {
            GridEventKind::Islanded => "islanded",
            GridEventKind::Resynchronising => "resynchronising",
            GridEventKind::Reconnected => "reconnected",
        }
    }
}

impl std::str::FromStr for GridEventKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [
            GridEventKind::Islanded,
            GridEventKind::Resynchronising,
            GridEventKind::Reconnected,
        ]
        .into_iter()
        .find(|e| e.name() == s)
        .ok_or_else(|| {
            format!("unknown grid event {s:?} (expected islanded, resynchronising or reconnected)")
        })
    }
}

impl DeviceKind {
    /// Every kind, in discriminant order.
    pub const ALL: [DeviceKind; 5] = [
        DeviceKind::Pv,
        DeviceKind::Battery,
        DeviceKind::EvCharger,
        DeviceKind::Load,
        DeviceKind::Meter,
    ];

    /// Whether the device can export energy (and so back an ask).
    pub fn produces(self) -> bool {
        matches!(self, DeviceKind::Pv | DeviceKind::Battery)
    }

    /// Whether the device can earn rewards (energy sold, flexibility delivered): its bond scales
    /// with its rating.
    pub fn earns(self) -> bool {
        matches!(
            self,
            DeviceKind::Pv | DeviceKind::Battery | DeviceKind::EvCharger
        )
    }

    pub fn name(self) -> &'static str {
        match self {
            DeviceKind::Pv => "pv",
            DeviceKind::Battery => "battery",
            DeviceKind::EvCharger => "ev-charger",
            DeviceKind::Load => "load",
            DeviceKind::Meter => "meter",
        }
    }
}

impl std::str::FromStr for DeviceKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        DeviceKind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| {
                format!(
                    "unknown device kind {s:?} (expected pv, battery, ev-charger, load or meter)"
                )
            })
    }
}

/// Longest order location (area path).
pub const MAX_LOCATION_LEN: usize = 128;

/// The signed part of a transaction.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct TxBody {
    pub version: u8,
    pub chain_id: String,
    pub sender: Address,
    pub nonce: u64,
    pub kind: TxKind,
}

/// A transaction with the sender's signature.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct SignedTx {
    pub body: TxBody,
    pub signature: [u8; 64],
}

/// Why bytes are not a well-formed transaction (checked without any state).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("transaction is {0} bytes, more than the limit of {MAX_TX_BYTES}")]
    TooLarge(usize),
    #[error("transaction bytes are malformed: {0}")]
    Malformed(String),
    #[error("transaction version {0} is not supported (expected {TX_VERSION})")]
    UnsupportedVersion(u8),
    #[error("chain id {0:?} is invalid (1-32 characters of a-z, 0-9 and '-')")]
    BadChainId(String),
    #[error("transfer amount must be greater than zero")]
    ZeroAmount,
    #[error("{0}")]
    BadField(String),
}

/// Checks that a chain id is 1-32 characters of `[a-z0-9-]`.
pub fn valid_chain_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_CHAIN_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

impl TxBody {
    /// The bytes the sender signs: domain separator, then the body's canonical encoding.
    pub fn signing_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(TX_SIGNING_DOMAIN.len() + 128);
        out.extend_from_slice(TX_SIGNING_DOMAIN);
        borsh::to_writer(&mut out, self).expect("writing to a Vec cannot fail");
        out
    }

    /// Signs the body with `key`. The key must belong to `self.sender`.
    pub fn sign(self, key: &Keypair) -> SignedTx {
        debug_assert_eq!(key.address(), self.sender, "signing with a foreign key");
        let signature = key.sign(&self.signing_bytes());
        SignedTx {
            body: self,
            signature,
        }
    }
}

impl SignedTx {
    /// `kind` from `key`'s account with `nonce` on chain `chain_id`, in the current version,
    /// signed.
    pub fn new(key: &Keypair, chain_id: &str, nonce: u64, kind: TxKind) -> SignedTx {
        TxBody {
            version: TX_VERSION,
            chain_id: chain_id.to_string(),
            sender: key.address(),
            nonce,
            kind,
        }
        .sign(key)
    }

    /// A signed transfer (convenience for clients and tests).
    pub fn transfer(
        key: &Keypair,
        chain_id: &str,
        nonce: u64,
        to: Address,
        amount: Amount,
    ) -> SignedTx {
        SignedTx::new(key, chain_id, nonce, TxKind::Transfer { to, amount })
    }

    /// The canonical encoding.
    pub fn encode(&self) -> Vec<u8> {
        borsh::to_vec(self).expect("writing to a Vec cannot fail")
    }

    /// Decodes and checks form (not signature, not state). See the module docs for the rules.
    pub fn decode(bytes: &[u8]) -> Result<SignedTx, DecodeError> {
        if bytes.len() > MAX_TX_BYTES {
            return Err(DecodeError::TooLarge(bytes.len()));
        }
        let tx: SignedTx =
            borsh::from_slice(bytes).map_err(|e| DecodeError::Malformed(e.to_string()))?;
        tx.check_form()?;
        Ok(tx)
    }

    /// Stateless validity rules beyond what the encoding itself enforces.
    pub fn check_form(&self) -> Result<(), DecodeError> {
        if self.body.version != TX_VERSION {
            return Err(DecodeError::UnsupportedVersion(self.body.version));
        }
        if !valid_chain_id(&self.body.chain_id) {
            return Err(DecodeError::BadChainId(self.body.chain_id.clone()));
        }
        let bad = |m: &str| Err(DecodeError::BadField(m.to_string()));
        if let Some(slot) = self.body.kind.latest_slot().filter(|s| *s > MAX_SLOT) {
            return bad(&format!(
                "slot {slot} is after the last slot of the year 9999 ({MAX_SLOT})"
            ));
        }
        match &self.body.kind {
            TxKind::Transfer { amount, .. } if amount.is_zero() => Err(DecodeError::ZeroAmount),
            TxKind::Transfer { .. } => Ok(()),
            TxKind::RegisterDevice { capacity_w, .. } if *capacity_w == 0 => {
                bad("device capacity must be greater than zero watts")
            }
            TxKind::RegisterDevice { .. } => Ok(()),
            TxKind::PlaceOrder { energy_mwh: 0, .. } => {
                bad("order energy must be greater than zero")
            }
            TxKind::PlaceOrder { location, .. } if location.len() > MAX_LOCATION_LEN => bad(
                &format!("order location is longer than {MAX_LOCATION_LEN} bytes"),
            ),
            TxKind::PlaceOrder { .. } | TxKind::CancelOrder { .. } => Ok(()),
            TxKind::SubmitReading { .. } | TxKind::GridEvent { .. } => Ok(()),
            TxKind::SetEnvelope { location, .. } if location.len() > MAX_LOCATION_LEN => bad(
                &format!("envelope location is longer than {MAX_LOCATION_LEN} bytes"),
            ),
            TxKind::SetEnvelope { .. } => Ok(()),
            TxKind::SetTariff {
                retail_per_kwh,
                feed_in_per_kwh,
                ..
            } => gridmesh_market::Tariff {
                retail_per_kwh: *retail_per_kwh,
                feed_in_per_kwh: *feed_in_per_kwh,
            }
            .check()
            .or_else(|e| bad(&e.to_string())),
            TxKind::RegisterDeviceKey { info, .. } => {
                if info.capacity_w == 0 {
                    return bad("device capacity must be greater than zero watts");
                }
                if info.location.len() > MAX_LOCATION_LEN {
                    return bad(&format!(
                        "device location is longer than {MAX_LOCATION_LEN} bytes"
                    ));
                }
                if info.latitude_microdeg.unsigned_abs() > 90_000_000
                    || info.longitude_microdeg.unsigned_abs() > 180_000_000
                {
                    return bad("device latitude must be within ±90° and longitude within ±180°");
                }
                if info.tilt_deg > 90 || info.azimuth_deg >= 360 {
                    return bad("device tilt must be 0 to 90° and azimuth 0 to 359°");
                }
                Ok(())
            }
            TxKind::TransferDevice { .. } | TxKind::DecommissionDevice { .. } => Ok(()),
            TxKind::SubmitDeviceReadings { readings }
                if readings.is_empty() || readings.len() > MAX_DEVICE_READINGS_PER_TX =>
            {
                bad(&format!(
                    "a batch holds 1 to {MAX_DEVICE_READINGS_PER_TX} device readings"
                ))
            }
            TxKind::SubmitDeviceReadings { .. } => Ok(()),
            TxKind::ReportFraud {
                evidence: FraudEvidence::Commitment(p),
                ..
            } if p.path.len() > crate::merkle::MAX_PROOF_DEPTH => {
                bad("a sample's inclusion proof is deeper than any tree")
            }
            TxKind::ReportFraud { .. } | TxKind::DismissDispute { .. } => Ok(()),
            TxKind::RequestFlexibility { area, .. } if area.len() > MAX_LOCATION_LEN => bad(
                &format!("flexibility area is longer than {MAX_LOCATION_LEN} bytes"),
            ),
            TxKind::RequestFlexibility {
                value_per_kwh: 0, ..
            } => bad("a flexibility request must value its response above zero"),
            TxKind::RequestFlexibility { .. } => Ok(()),
            TxKind::CreateAsset { name, holders } => {
                if name.is_empty() || name.len() > MAX_ASSET_NAME_LEN {
                    return bad(&format!(
                        "asset name must be 1 to {MAX_ASSET_NAME_LEN} bytes"
                    ));
                }
                if holders.is_empty() || holders.len() > MAX_ASSET_HOLDERS {
                    return bad(&format!("an asset has 1 to {MAX_ASSET_HOLDERS} holders"));
                }
                if holders.iter().any(|h| h.shares == 0) {
                    return bad("every holder must hold at least one share");
                }
                let mut seen: Vec<&Address> = holders.iter().map(|h| &h.holder).collect();
                seen.sort();
                if seen.windows(2).any(|w| w[0] == w[1]) {
                    return bad("a holder is listed twice");
                }
                if holders
                    .iter()
                    .try_fold(0u64, |a, h| a.checked_add(h.shares))
                    .is_none()
                {
                    return bad("total shares overflow");
                }
                Ok(())
            }
            TxKind::TransferShares { shares: 0, .. } => bad("transfer at least one share"),
            TxKind::TransferShares { .. } => Ok(()),
        }
    }

    /// BLAKE3 of the canonical encoding.
    pub fn hash(&self) -> Hash32 {
        Hash32(*blake3::hash(&self.encode()).as_bytes())
    }

    /// Checks the signature strictly and returns a [`VerifiedTx`].
    pub fn verify(self) -> Result<VerifiedTx, SignatureError> {
        crypto::verify_one(
            &self.body.sender,
            &self.body.signing_bytes(),
            &self.signature,
        )?;
        Ok(VerifiedTx::new_unchecked(self))
    }
}

/// A transaction whose form and signature have been checked, with its hash and encoding cached.
///
/// Only [`SignedTx::verify`] and the block path's batch verification construct one, so code that
/// takes a `VerifiedTx` never sees an unsigned transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedTx {
    tx: SignedTx,
    hash: Hash32,
}

impl VerifiedTx {
    pub(crate) fn new_unchecked(tx: SignedTx) -> VerifiedTx {
        let hash = tx.hash();
        VerifiedTx { tx, hash }
    }

    /// `hash` must be `tx.hash()` (computed by the caller already).
    pub(crate) fn new_unchecked_with_hash(tx: SignedTx, hash: Hash32) -> VerifiedTx {
        debug_assert_eq!(tx.hash(), hash);
        VerifiedTx { tx, hash }
    }

    pub fn tx(&self) -> &SignedTx {
        &self.tx
    }

    pub fn into_tx(self) -> SignedTx {
        self.tx
    }

    pub fn hash(&self) -> Hash32 {
        self.hash
    }

    pub fn sender(&self) -> Address {
        self.tx.body.sender
    }

    pub fn nonce(&self) -> u64 {
        self.tx.body.nonce
    }
}

/// A transaction its caller vouches for instead of a signature: what an in-memory chain whose
/// members are simulated executes (`gridmesh-sim`, through [`crate::Parent::rehearse`]).
///
/// It is not a [`VerifiedTx`] and cannot become one: no mempool, [`crate::Chain`] or replica
/// accepts it, and a rehearsal yields a header and a state diff but no [`crate::Block`], so
/// nothing built from unsigned transactions can be committed to a node's chain, gossiped or
/// verified by another replica. Its form is checked like any transaction's; its hash is that of
/// its encoding with an all-zero signature.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnsignedTx {
    body: TxBody,
    hash: Hash32,
}

impl UnsignedTx {
    pub fn new(
        sender: Address,
        chain_id: &str,
        nonce: u64,
        kind: TxKind,
    ) -> Result<UnsignedTx, DecodeError> {
        let tx = SignedTx {
            body: TxBody {
                version: TX_VERSION,
                chain_id: chain_id.to_string(),
                sender,
                nonce,
                kind,
            },
            signature: [0; 64],
        };
        tx.check_form()?;
        let hash = tx.hash();
        Ok(UnsignedTx {
            body: tx.body,
            hash,
        })
    }

    pub fn body(&self) -> &TxBody {
        &self.body
    }

    pub fn hash(&self) -> Hash32 {
        self.hash
    }

    pub fn sender(&self) -> Address {
        self.body.sender
    }
}

/// Batch-verifies the signatures of `txs` without taking them.
///
/// On failure, returns the index of the first transaction whose signature is invalid.
pub fn verify_signatures(
    txs: &[&SignedTx],
    parallelism: crypto::Parallelism,
) -> Result<(), (usize, SignatureError)> {
    let messages: Vec<Vec<u8>> = txs.iter().map(|t| t.body.signing_bytes()).collect();
    let items: Vec<crypto::SignedItem> = txs
        .iter()
        .zip(&messages)
        .map(|(t, m)| crypto::SignedItem {
            signer: t.body.sender,
            message: m,
            signature: t.signature,
        })
        .collect();
    crypto::verify_batch(&items, parallelism)
}

/// Verifies a block's worth of transactions with batch verification.
///
/// On failure, returns the index of the first transaction whose signature is invalid.
pub fn verify_all(
    txs: Vec<SignedTx>,
    parallelism: crypto::Parallelism,
) -> Result<Vec<VerifiedTx>, (usize, SignatureError)> {
    verify_signatures(&txs.iter().collect::<Vec<_>>(), parallelism)?;
    Ok(txs.into_iter().map(VerifiedTx::new_unchecked).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> SignedTx {
        let k = Keypair::from_seed([1; 32]);
        SignedTx::transfer(&k, "gridmesh-dev", 3, Address([9; 32]), Amount(12_500_000))
    }

    #[test]
    fn encoding_round_trips_and_signature_verifies() {
        let tx = sample();
        let bytes = tx.encode();
        assert_eq!(SignedTx::decode(&bytes).unwrap(), tx);
        assert!(tx.clone().verify().is_ok());
    }

    #[test]
    fn layout_is_as_documented() {
        let tx = sample();
        let b = tx.encode();
        // version, chain id length + bytes, sender, nonce, kind tag, to, amount, signature
        assert_eq!(b[0], TX_VERSION);
        assert_eq!(&b[1..5], &12u32.to_le_bytes());
        assert_eq!(&b[5..17], b"gridmesh-dev");
        assert_eq!(&b[17..49], tx.body.sender.as_bytes());
        assert_eq!(&b[49..57], &3u64.to_le_bytes());
        assert_eq!(b[57], 0);
        assert_eq!(&b[58..90], &[9u8; 32]);
        assert_eq!(&b[90..106], &12_500_000u128.to_le_bytes());
        assert_eq!(&b[106..170], &tx.signature);
        assert_eq!(b.len(), 170);
    }

    #[test]
    fn rejects_trailing_bytes_bad_version_chain_and_kind() {
        let tx = sample();
        let mut b = tx.encode();
        b.push(0);
        assert!(matches!(
            SignedTx::decode(&b),
            Err(DecodeError::Malformed(_))
        ));
        let mut b = tx.encode();
        b[0] = 2;
        assert_eq!(
            SignedTx::decode(&b),
            Err(DecodeError::UnsupportedVersion(2))
        );
        let mut b = tx.encode();
        b[5] = b'G';
        assert!(matches!(
            SignedTx::decode(&b),
            Err(DecodeError::BadChainId(_))
        ));
        let mut b = tx.encode();
        b[57] = 7; // unknown kind
        assert!(matches!(
            SignedTx::decode(&b),
            Err(DecodeError::Malformed(_))
        ));
        let mut b = tx.encode();
        b.truncate(100);
        assert!(matches!(
            SignedTx::decode(&b),
            Err(DecodeError::Malformed(_))
        ));
        assert!(matches!(
            SignedTx::decode(&vec![0; MAX_TX_BYTES + 1]),
            Err(DecodeError::TooLarge(_))
        ));
        let k = Keypair::from_seed([1; 32]);
        let zero = SignedTx::transfer(&k, "gridmesh-dev", 0, Address([9; 32]), Amount(0));
        assert_eq!(
            SignedTx::decode(&zero.encode()),
            Err(DecodeError::ZeroAmount)
        );
    }

    #[test]
    fn tampering_breaks_the_signature() {
        let mut tx = sample();
        tx.body.nonce += 1;
        assert!(matches!(tx.verify(), Err(SignatureError::Invalid(_))));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4096))]

        /// Fuzz the decoder: arbitrary bytes never panic, and whatever decodes is canonical.
        #[test]
        fn decoder_never_panics_and_is_canonical(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            if let Ok(tx) = SignedTx::decode(&bytes) {
                prop_assert_eq!(tx.encode(), bytes);
            }
        }

        /// Mutations of a valid encoding (the interesting neighbourhood) either fail or stay canonical.
        #[test]
        fn mutated_encodings_are_rejected_or_canonical(
            idx in 0usize..170, byte in any::<u8>(), cut in 0usize..175, extra in proptest::collection::vec(any::<u8>(), 0..8)
        ) {
            let mut b = sample().encode();
            b[idx] = byte;
            b.truncate(cut);
            b.extend(extra);
            if let Ok(tx) = SignedTx::decode(&b) {
                prop_assert_eq!(tx.encode(), b);
            }
        }
    }
}
