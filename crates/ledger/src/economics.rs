//! Token economics of the physical layer: rewards per epoch under a capped emission schedule,
//! fraud reports and slashing with a dispute window, the grid operator's flexibility requests,
//! community assets owned in shares, and the supply record that reconciles all of it.
//!
//! # Rewards
//!
//! An epoch is `epoch_slots` market slots (96: a day). During it, each owner earns *points*, in
//! token base units of grid value, for
//!
//! - renewable energy its verified devices delivered to neighbours (settled trades of a seller
//!   whose devices report on the ledger), valued at the slot's retail tariff: the import each
//!   kWh avoided, so an evening kWh is worth more than a midday one;
//! - flexibility delivered when the network asked (a [`TxKind::RequestFlexibility`] for the
//!   device's area and slot): accepted battery discharge against a `reduce` request, battery and
//!   EV charging against an `increase` request, valued at the request's `value_per_kwh`.
//!
//! When the epoch's last slot is final (its late window over), the epoch's emission
//! `epoch_emission >> (epoch / halving_epochs)`, never beyond what the hard cap `emission_cap`
//! leaves, is minted to the owners in proportion to their points (floor; the remainder is never
//! minted). Community assets then pay out their epoch revenue (market proceeds and rewards) to
//! their holders pro rata.
//!
//! # Fraud and slashing
//!
//! Anyone but the owner may report a device's reading of a slot until `dispute_window_minutes`
//! after the slot settles. A sample of the committed telemetry that contradicts the reading
//! ([`crate::telemetry::contradiction`]) slashes at once. A reading held by a hard physics check
//! (register, rating, clear sky; not the statistical neighbour check) opens a dispute that
//! slashes when the window has passed, unless the grid operator dismisses it. A slash takes
//! `slash_percent` of the bond: `reporter_percent` of it to the reporter, the rest to the
//! community fund; the device is marked slashed and can report no more, and its owner forfeits
//! the points of that epoch if it has not closed yet.
//!
//! # Supply
//!
//! Balances only move, except rewards, which are minted. `Supply { genesis, minted, burned }`
//! is kept in the state, and the sum of every balance (escrow, bonds and the community fund
//! included) equals `genesis + minted - burned` after every block (property tests; `GET
//! /v1/supply`).

use crate::kv;
use crate::market::{self as lm, DeviceIdentity, DeviceStatus, ReadingStatus};
use crate::state::{Event, Overlay, TxContext, TxError};
use crate::tx::{DeviceKind, FlexDirection, FraudEvidence, Shareholding, TxKind};
use borsh::{BorshDeserialize, BorshSerialize};
use gridmesh_types::units::{slot_start_ms, SLOT_MS};
use gridmesh_types::{Address, Amount};
use serde::{Deserialize, Serialize};

const TAG_CONFIG: u8 = 30;
const TAG_SUPPLY: u8 = 31;
const TAG_POINTS: u8 = 32;
const TAG_EPOCH_DUE: u8 = 33;
const TAG_EPOCH: u8 = 34;
const TAG_DISPUTE: u8 = 35;
const TAG_DISPUTE_DUE: u8 = 36;
const TAG_FLEX: u8 = 37;
const TAG_ASSET: u8 = 38;
const TAG_ASSET_REVENUE: u8 = 39;

/// Where slashed tokens that do not go to the reporter are kept for the community.
pub fn community_fund_account() -> Address {
    Address(*blake3::hash(b"gridmesh/community-fund").as_bytes())
}

/// The rules of rewards and slashing, fixed in the genesis (`[economics]`).
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize)]
pub struct EconomicsConfig {
    pub epoch_slots: u32,
    /// Base units minted in epoch 0.
    pub epoch_emission: u128,
    /// The emission halves every this many epochs (0: never).
    pub halving_epochs: u32,
    /// The most base units rewards may ever mint.
    pub emission_cap: u128,
    pub dispute_window_minutes: u32,
    pub slash_percent: u8,
    pub reporter_percent: u8,
    /// The epoch of the genesis: the emission schedule starts there.
    pub start_epoch: u64,
}

impl Default for EconomicsConfig {
    fn default() -> Self {
        EconomicsConfig {
            epoch_slots: 96,
            epoch_emission: Amount::from_tokens(10_000).0,
            halving_epochs: 365,
            emission_cap: Amount::from_tokens(5_000_000).0,
            dispute_window_minutes: 7 * 24 * 60,
            slash_percent: 100,
            reporter_percent: 50,
            start_epoch: 0,
        }
    }
}

impl EconomicsConfig {
    pub fn check(&self) -> Result<(), String> {
        if self.epoch_slots == 0 || self.epoch_slots > 96 * 31 {
            return Err("epoch_slots must be 1 to 2976 (a month)".into());
        }
        if self.slash_percent > 100 || self.reporter_percent > 100 {
            return Err("slash_percent and reporter_percent are at most 100".into());
        }
        if self.epoch_emission > self.emission_cap {
            return Err("epoch_emission is above emission_cap".into());
        }
        Ok(())
    }

    /// The epoch of a slot.
    pub fn epoch_of(&self, slot: u64) -> u64 {
        slot / u64::from(self.epoch_slots)
    }

    /// The schedule's emission of `epoch`, before the cap (counted from the genesis epoch).
    pub fn scheduled_emission(&self, epoch: u64) -> u128 {
        let age = epoch.saturating_sub(self.start_epoch);
        let halvings = match self.halving_epochs {
            0 => 0,
            h => age / u64::from(h),
        };
        if halvings >= 128 {
            0
        } else {
            self.epoch_emission >> halvings
        }
    }

    fn dispute_window_ms(&self) -> u64 {
        u64::from(self.dispute_window_minutes) * 60_000
    }
}

/// The `[economics]` section of a genesis file: amounts in decimal tokens.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EconomicsFile {
    pub epoch_slots: Option<u32>,
    pub epoch_emission: Option<String>,
    pub halving_epochs: Option<u32>,
    pub emission_cap: Option<String>,
    pub dispute_window_minutes: Option<u32>,
    pub slash_percent: Option<u8>,
    pub reporter_percent: Option<u8>,
}

impl EconomicsFile {
    pub fn to_config(&self) -> Result<EconomicsConfig, String> {
        let d = EconomicsConfig::default();
        let tokens = |what: &str, v: &Option<String>, default: u128| match v {
            Some(s) => gridmesh_types::parse_fixed(s, gridmesh_types::TOKEN_DECIMALS)
                .map_err(|e| format!("{what}: {e}")),
            None => Ok(default),
        };
        let c = EconomicsConfig {
            epoch_slots: self.epoch_slots.unwrap_or(d.epoch_slots),
            epoch_emission: tokens("epoch_emission", &self.epoch_emission, d.epoch_emission)?,
            halving_epochs: self.halving_epochs.unwrap_or(d.halving_epochs),
            emission_cap: tokens("emission_cap", &self.emission_cap, d.emission_cap)?,
            dispute_window_minutes: self
                .dispute_window_minutes
                .unwrap_or(d.dispute_window_minutes),
            slash_percent: self.slash_percent.unwrap_or(d.slash_percent),
            reporter_percent: self.reporter_percent.unwrap_or(d.reporter_percent),
            start_epoch: 0,
        };
        c.check()?;
        Ok(c)
    }
}

/// Tokens created and destroyed since the genesis.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize,
)]
pub struct Supply {
    pub genesis: u128,
    pub minted: u128,
    pub burned: u128,
}

impl Supply {
    /// What the balances must sum to.
    pub fn expected(&self) -> u128 {
        self.genesis + self.minted - self.burned
    }
}

/// An owner's points in an epoch.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize,
)]
pub struct Points {
    pub renewable_mwh: u64,
    pub flexibility_mwh: u64,
    /// Grid value, base units: the weight of the owner's share of the emission.
    pub value: u128,
    /// Minted to the owner when the epoch closed.
    pub reward: u128,
    /// A device of the owner was slashed for a reading of this epoch: no reward for it.
    pub forfeited: bool,
}

/// A closed epoch.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize)]
pub struct EpochRecord {
    pub epoch: u64,
    pub emission: u128,
    pub minted: u128,
    pub total_value: u128,
    pub recipients: u32,
    pub asset_payouts: u128,
}

/// A grid operator's request for flexibility.
#[derive(Clone, Copy, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize)]
pub struct FlexRecord {
    pub direction: FlexDirection,
    pub value_per_kwh: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
#[borsh(use_discriminant = true)]
#[repr(u8)]
pub enum DisputeState {
    /// A physics dispute waiting for its window to pass.
    Open = 0,
    Upheld = 1,
    Dismissed = 2,
}

/// What a fraud report showed: a committed sample that contradicts the reading (slashed at
/// once), or a hard physics hold (disputed until its window passes). Enums and integers only: the
/// API words them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize)]
#[serde(rename_all = "snake_case", tag = "evidence")]
pub enum DisputeFinding {
    Commitment {
        contradiction: crate::telemetry::Contradiction,
    },
    Physics {
        reason: crate::market::HoldReason,
    },
}

/// A fraud report on one device's reading of one slot.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize)]
pub struct Dispute {
    pub reporter: Address,
    pub owner: Address,
    /// What the evidence shows.
    pub finding: DisputeFinding,
    pub opened_ms: u64,
    pub resolves_ms: u64,
    pub state: DisputeState,
    pub slashed: u128,
    pub to_reporter: u128,
}

/// A community asset: the account of a shared plant, owned in shares.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize)]
pub struct AssetRecord {
    pub name: String,
    pub holders: Vec<Shareholding>,
    pub total_shares: u64,
    /// Paid out to holders so far, base units.
    pub paid_out: u128,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EconomicsError {
    #[error("device {0} is not registered")]
    UnknownDevice(Address),
    #[error("an owner cannot report its own device")]
    OwnDevice,
    #[error("device {device} has no reading for slot {slot}")]
    NoReading { device: Address, slot: u64 },
    #[error("device {device}'s reading of slot {slot} is already reported")]
    AlreadyReported { device: Address, slot: u64 },
    #[error("the dispute window for slot {slot} closed at {closed_ms} ms")]
    WindowClosed { slot: u64, closed_ms: u64 },
    #[error("the evidence does not show the reading false: {0}")]
    EvidenceRejected(String),
    #[error("the reading was not held by a hard physics check (register, rating or clear sky)")]
    NotHeldByPhysics,
    #[error("no open dispute on device {device}'s reading of slot {slot}")]
    NoOpenDispute { device: Address, slot: u64 },
    #[error("only the market's grid operator may do this")]
    NotGridOperator,
    #[error("slot {slot} has started; flexibility requests must come before {starts_ms} ms")]
    SlotStarted { slot: u64, starts_ms: u64 },
    #[error("account {0} is already a community asset")]
    AssetExists(Address),
    #[error("{0} is not a community asset")]
    UnknownAsset(Address),
    #[error("an asset cannot hold its own shares")]
    SelfHolding,
    #[error("the sender holds {held} shares, fewer than {wanted}")]
    NotEnoughShares { held: u64, wanted: u64 },
    #[error("the asset already has the most holders ({0})")]
    TooManyHolders(usize),
    #[error("the holders' shares add up to more than {} shares", u64::MAX)]
    TooManyShares,
}

fn enc<T: BorshSerialize>(v: &T) -> Vec<u8> {
    borsh::to_vec(v).expect("encoding to a Vec cannot fail")
}

fn dec<T: BorshDeserialize>(bytes: &[u8]) -> T {
    borsh::from_slice(bytes).expect("economics state records decode")
}

fn config_key() -> Vec<u8> {
    kv::key(TAG_CONFIG, 0, &[])
}
fn supply_key() -> Vec<u8> {
    kv::key(TAG_SUPPLY, 0, &[])
}
pub fn points_key(epoch: u64, owner: &Address) -> Vec<u8> {
    kv::key(TAG_POINTS, epoch, &owner.0)
}
pub fn points_prefix(epoch: u64) -> Vec<u8> {
    kv::key(TAG_POINTS, epoch, &[])
}
pub fn epoch_key(epoch: u64) -> Vec<u8> {
    kv::key(TAG_EPOCH, 0, &epoch.to_be_bytes())
}
pub fn epochs_prefix() -> Vec<u8> {
    kv::key(TAG_EPOCH, 0, &[])
}
pub fn dispute_key(slot: u64, device: &Address) -> Vec<u8> {
    kv::key(TAG_DISPUTE, slot, &device.0)
}
fn flex_key(slot: u64, area: &str) -> Vec<u8> {
    kv::key(TAG_FLEX, slot, area.as_bytes())
}
pub fn asset_key(asset: &Address) -> Vec<u8> {
    kv::key(TAG_ASSET, 0, &asset.0)
}
fn revenue_key(epoch: u64, asset: &Address) -> Vec<u8> {
    kv::key(TAG_ASSET_REVENUE, epoch, &asset.0)
}
fn due_key(tag: u8, due_ms: u64, rest: &[u8]) -> Vec<u8> {
    let mut r = due_ms.to_be_bytes().to_vec();
    r.extend_from_slice(rest);
    kv::key(tag, 0, &r)
}

/// The genesis entries: the rules (the schedule starting at the genesis' epoch) and the supply
/// record.
pub fn genesis_entries(
    cfg: &EconomicsConfig,
    genesis_ms: u64,
    genesis_supply: u128,
) -> Vec<(Vec<u8>, Vec<u8>)> {
    let cfg = EconomicsConfig {
        start_epoch: cfg.epoch_of(gridmesh_types::units::slot_of(genesis_ms)),
        ..cfg.clone()
    };
    vec![
        (config_key(), enc(&cfg)),
        (
            supply_key(),
            enc(&Supply {
                genesis: genesis_supply,
                minted: 0,
                burned: 0,
            }),
        ),
    ]
}

pub fn stored_config(kv: &kv::KvSpace) -> EconomicsConfig {
    kv.get(&config_key()).map(dec).unwrap_or_default()
}

pub fn config(o: &Overlay<'_>) -> EconomicsConfig {
    o.kv_get(&config_key()).map(|b| dec(&b)).unwrap_or_default()
}

/// The supply record (a state without one is treated as having minted nothing).
pub fn supply(kv: &kv::KvSpace) -> Supply {
    kv.get(&supply_key()).map(dec).unwrap_or_default()
}

fn mint(o: &mut Overlay<'_>, to: Address, amount: u128) {
    if amount == 0 {
        return;
    }
    o.mint(to, Amount(amount))
        .expect("a reward cannot overflow a balance under the emission cap");
    let mut s: Supply = o.kv_get(&supply_key()).map(|b| dec(&b)).unwrap_or_default();
    s.minted += amount;
    o.kv_put(supply_key(), enc(&s));
}

fn schedule_epoch(
    o: &mut Overlay<'_>,
    market: &lm::MarketConfig,
    cfg: &EconomicsConfig,
    epoch: u64,
) {
    let last_slot = (epoch + 1) * u64::from(cfg.epoch_slots) - 1;
    o.kv_put(
        due_key(
            TAG_EPOCH_DUE,
            market.final_ms(last_slot),
            &epoch.to_be_bytes(),
        ),
        Vec::new(),
    );
}

/// Adds points to `owner` for work in `slot`.
pub(crate) fn add_points(
    o: &mut Overlay<'_>,
    market: &lm::MarketConfig,
    slot: u64,
    owner: &Address,
    renewable_mwh: u64,
    flexibility_mwh: u64,
    value: u128,
) {
    if value == 0 {
        return;
    }
    let cfg = config(o);
    let epoch = cfg.epoch_of(slot);
    let k = points_key(epoch, owner);
    let mut p: Points = o.kv_get(&k).map(|b| dec(&b)).unwrap_or_default();
    if p.forfeited {
        return;
    }
    p.renewable_mwh = p.renewable_mwh.saturating_add(renewable_mwh);
    p.flexibility_mwh = p.flexibility_mwh.saturating_add(flexibility_mwh);
    p.value = p.value.saturating_add(value);
    o.kv_put(k, enc(&p));
    schedule_epoch(o, market, &cfg, epoch);
}

/// Records `amount` paid to `to` for `slot`, if `to` is a community asset (its revenue).
pub(crate) fn note_revenue(
    o: &mut Overlay<'_>,
    market: &lm::MarketConfig,
    slot: u64,
    to: &Address,
    amount: u128,
) {
    if amount == 0 || o.kv_get(&asset_key(to)).is_none() {
        return;
    }
    let cfg = config(o);
    let epoch = cfg.epoch_of(slot);
    let k = revenue_key(epoch, to);
    let r: u128 = o.kv_get(&k).map(|b| dec(&b)).unwrap_or(0);
    o.kv_put(k, enc(&(r + amount)));
    schedule_epoch(o, market, &cfg, epoch);
}

/// Removes `slot`'s flexibility requests (the market prunes the slot's records).
pub(crate) fn prune_slot(o: &mut Overlay<'_>, slot: u64) {
    for (k, _) in o.kv_scan(&kv::key(TAG_FLEX, slot, &[])) {
        o.kv_delete(k);
    }
}

/// The flexibility request that applies to a device at `location` in `slot`: the most specific
/// area that contains it.
pub(crate) fn flex_request(o: &Overlay<'_>, slot: u64, location: &str) -> Option<FlexRecord> {
    o.kv_scan(&kv::key(TAG_FLEX, slot, &[]))
        .into_iter()
        .filter_map(|(k, v)| {
            let area = std::str::from_utf8(&k[kv::GROUP_LEN..]).ok()?.to_string();
            gridmesh_market::area_contains(&area, location)
                .then(|| (area.len(), dec::<FlexRecord>(&v)))
        })
        .max_by_key(|(len, _)| *len)
        .map(|(_, r)| r)
}

/// Every flexibility request of `slot` (area, request), as stored in `kv` (for views).
pub fn flex_requests(kv: &crate::kv::KvSpace, slot: u64) -> Vec<(String, FlexRecord)> {
    kv.scan(&kv::key(TAG_FLEX, slot, &[]))
        .filter_map(|(k, v)| {
            let area = std::str::from_utf8(&k[kv::GROUP_LEN..]).ok()?.to_string();
            Some((area, dec::<FlexRecord>(v)))
        })
        .collect()
}

/// Points for a device's accepted reading under a flexibility request.
pub(crate) fn flexibility_delivered(
    kind: DeviceKind,
    request: FlexRecord,
    energy_out_mwh: u64,
    energy_in_mwh: u64,
) -> u64 {
    match (request.direction, kind) {
        (FlexDirection::Reduce, DeviceKind::Battery) => energy_out_mwh,
        (FlexDirection::Increase, DeviceKind::Battery | DeviceKind::EvCharger) => energy_in_mwh,
        _ => 0,
    }
}

fn grid_operator_only(market: &lm::MarketConfig, sender: &Address) -> Result<(), EconomicsError> {
    if *sender != market.grid_operator {
        return Err(EconomicsError::NotGridOperator);
    }
    Ok(())
}

/// Applies transaction kinds 11 to 15.
pub(crate) fn apply(
    o: &mut Overlay<'_>,
    sender: Address,
    kind: &TxKind,
    ctx: &TxContext,
) -> Result<Vec<Event>, TxError> {
    let market = lm::config(o);
    let cfg = config(o);
    let now = ctx.timestamp_ms;
    match kind {
        TxKind::ReportFraud {
            device,
            slot,
            evidence,
        } => {
            let id: DeviceIdentity = o
                .kv_get(&lm::device_key_key(device))
                .map(|b| dec(&b))
                .ok_or(EconomicsError::UnknownDevice(*device))?;
            if id.owner == sender {
                return Err(EconomicsError::OwnDevice.into());
            }
            let rec: lm::DeviceReadingRecord = o
                .kv_get(&lm::device_reading_key(*slot, device))
                .map(|b| dec(&b))
                .ok_or(EconomicsError::NoReading {
                    device: *device,
                    slot: *slot,
                })?;
            if o.kv_get(&dispute_key(*slot, device)).is_some() {
                return Err(EconomicsError::AlreadyReported {
                    device: *device,
                    slot: *slot,
                }
                .into());
            }
            let closed_ms = market.settlement_ms(*slot) + cfg.dispute_window_ms();
            if now > closed_ms {
                return Err(EconomicsError::WindowClosed {
                    slot: *slot,
                    closed_ms,
                }
                .into());
            }
            let dispute = |finding| Dispute {
                reporter: sender,
                owner: id.owner,
                finding,
                opened_ms: now,
                resolves_ms: now,
                state: DisputeState::Open,
                slashed: 0,
                to_reporter: 0,
            };
            match evidence {
                FraudEvidence::Commitment(proof) => {
                    let reading = crate::tx::DeviceReading {
                        device: *device,
                        slot: *slot,
                        energy_out_mwh: rec.energy_out_mwh,
                        energy_in_mwh: rec.energy_in_mwh,
                        register_mwh: rec.register_mwh,
                        raw_root: rec.raw_root,
                        raw_count: rec.raw_count,
                        signature: [0; 64],
                    };
                    let start = slot_start_ms(*slot);
                    let c = crate::telemetry::contradiction(
                        ctx.chain_id,
                        &reading,
                        start,
                        start + SLOT_MS,
                        proof,
                    )
                    .map_err(|e| EconomicsError::EvidenceRejected(e.to_string()))?;
                    let mut dispute = dispute(DisputeFinding::Commitment { contradiction: c });
                    let events = slash(o, &cfg, device, *slot, &mut dispute);
                    o.kv_put(dispute_key(*slot, device), enc(&dispute));
                    Ok(events)
                }
                FraudEvidence::Physics => {
                    let reason = match rec.status {
                        ReadingStatus::Held { reason } if reason.disputable() => reason,
                        _ => return Err(EconomicsError::NotHeldByPhysics.into()),
                    };
                    let mut dispute = dispute(DisputeFinding::Physics { reason });
                    dispute.resolves_ms = now + cfg.dispute_window_ms();
                    let mut rest = slot.to_be_bytes().to_vec();
                    rest.extend_from_slice(&device.0);
                    o.kv_put(
                        due_key(TAG_DISPUTE_DUE, dispute.resolves_ms, &rest),
                        Vec::new(),
                    );
                    let resolves_ms = dispute.resolves_ms;
                    o.kv_put(dispute_key(*slot, device), enc(&dispute));
                    Ok(vec![Event::DisputeOpened {
                        device: *device,
                        slot: *slot,
                        resolves_ms,
                    }])
                }
            }
        }
        TxKind::DismissDispute { device, slot } => {
            grid_operator_only(&market, &sender)?;
            let k = dispute_key(*slot, device);
            let mut d: Dispute = o
                .kv_get(&k)
                .map(|b| dec(&b))
                .filter(|d: &Dispute| d.state == DisputeState::Open)
                .ok_or(EconomicsError::NoOpenDispute {
                    device: *device,
                    slot: *slot,
                })?;
            let mut rest = slot.to_be_bytes().to_vec();
            rest.extend_from_slice(&device.0);
            o.kv_delete(due_key(TAG_DISPUTE_DUE, d.resolves_ms, &rest));
            d.state = DisputeState::Dismissed;
            o.kv_put(k, enc(&d));
            Ok(vec![])
        }
        TxKind::RequestFlexibility {
            slot,
            area,
            direction,
            value_per_kwh,
        } => {
            grid_operator_only(&market, &sender)?;
            let starts_ms = slot_start_ms(*slot);
            if now >= starts_ms {
                return Err(EconomicsError::SlotStarted {
                    slot: *slot,
                    starts_ms,
                }
                .into());
            }
            o.kv_put(
                flex_key(*slot, area),
                enc(&FlexRecord {
                    direction: *direction,
                    value_per_kwh: *value_per_kwh,
                }),
            );
            Ok(vec![])
        }
        TxKind::CreateAsset { name, holders } => {
            if o.kv_get(&asset_key(&sender)).is_some() {
                return Err(EconomicsError::AssetExists(sender).into());
            }
            if holders.iter().any(|h| h.holder == sender) {
                return Err(EconomicsError::SelfHolding.into());
            }
            let total_shares = holders
                .iter()
                .try_fold(0u64, |sum, h| sum.checked_add(h.shares))
                .ok_or(EconomicsError::TooManyShares)?;
            o.kv_put(
                asset_key(&sender),
                enc(&AssetRecord {
                    name: name.clone(),
                    holders: holders.clone(),
                    total_shares,
                    paid_out: 0,
                }),
            );
            Ok(vec![])
        }
        TxKind::TransferShares { asset, to, shares } => {
            let mut a: AssetRecord = o
                .kv_get(&asset_key(asset))
                .map(|b| dec(&b))
                .ok_or(EconomicsError::UnknownAsset(*asset))?;
            if to == asset {
                return Err(EconomicsError::SelfHolding.into());
            }
            let held = a
                .holders
                .iter()
                .find(|h| h.holder == sender)
                .map_or(0, |h| h.shares);
            if held < *shares {
                return Err(EconomicsError::NotEnoughShares {
                    held,
                    wanted: *shares,
                }
                .into());
            }
            if *to != sender {
                if !a.holders.iter().any(|h| h.holder == *to) {
                    if a.holders.len() == crate::tx::MAX_ASSET_HOLDERS && held != *shares {
                        return Err(EconomicsError::TooManyHolders(a.holders.len()).into());
                    }
                    a.holders.push(Shareholding {
                        holder: *to,
                        shares: 0,
                    });
                }
                for h in &mut a.holders {
                    if h.holder == sender {
                        h.shares -= shares;
                    } else if h.holder == *to {
                        h.shares += shares;
                    }
                }
                a.holders.retain(|h| h.shares > 0);
                o.kv_put(asset_key(asset), enc(&a));
            }
            Ok(vec![])
        }
        _ => unreachable!("economics::apply handles kinds 11 to 15"),
    }
}

/// `amount × percent / 100`, rounded down, for any `amount` (no intermediate overflow) and
/// `percent` ≤ 100.
fn percent_of(amount: u128, percent: u8) -> u128 {
    debug_assert!(percent <= 100);
    let p = u128::from(percent);
    amount / 100 * p + amount % 100 * p / 100
}

/// `amount × part / whole`, rounded down, for any `amount` (no intermediate overflow) and
/// `part` ≤ `whole` (a holder's shares of all; none of nothing).
fn share_of(amount: u128, part: u64, whole: u64) -> u128 {
    if whole == 0 {
        return 0;
    }
    debug_assert!(part <= whole);
    let (p, w) = (u128::from(part), u128::from(whole));
    amount / w * p + amount % w * p / w
}

/// Slashes the device's bond for `dispute` (upheld), marks the device slashed, and forfeits its
/// owner's points of the reading's epoch if that epoch has not closed yet.
fn slash(
    o: &mut Overlay<'_>,
    cfg: &EconomicsConfig,
    device: &Address,
    slot: u64,
    dispute: &mut Dispute,
) -> Vec<Event> {
    let k = lm::device_key_key(device);
    let mut id: DeviceIdentity = dec(&o.kv_get(&k).expect("a disputed device is registered"));
    let amount = percent_of(id.bond, cfg.slash_percent);
    let to_reporter = percent_of(amount, cfg.reporter_percent);
    let bonds = lm::device_bond_account();
    o.move_funds(bonds, dispute.reporter, Amount(to_reporter))
        .expect("the bond account holds every active bond");
    o.move_funds(
        bonds,
        community_fund_account(),
        Amount(amount - to_reporter),
    )
    .expect("the bond account holds every active bond");
    id.bond -= amount;
    if id.status == DeviceStatus::Active {
        id.status = DeviceStatus::Slashed;
    }
    o.kv_put(k, enc(&id));
    let epoch = cfg.epoch_of(slot);
    if o.kv_get(&epoch_key(epoch)).is_none() {
        let pk = points_key(epoch, &dispute.owner);
        let mut p: Points = o.kv_get(&pk).map(|b| dec(&b)).unwrap_or_default();
        p.value = 0;
        p.forfeited = true;
        o.kv_put(pk, enc(&p));
    }
    dispute.state = DisputeState::Upheld;
    dispute.slashed = amount;
    dispute.to_reporter = to_reporter;
    vec![Event::DeviceSlashed {
        device: *device,
        amount: Amount(amount),
        to_reporter: Amount(to_reporter),
    }]
}

/// The earliest epoch close or dispute resolution.
pub fn next_due_ms(kv: &kv::KvSpace) -> Option<u64> {
    [TAG_EPOCH_DUE, TAG_DISPUTE_DUE]
        .into_iter()
        .filter_map(|tag| {
            kv.scan(&kv::key(tag, 0, &[])).next().map(|(k, _)| {
                u64::from_be_bytes(k[kv::GROUP_LEN..kv::GROUP_LEN + 8].try_into().expect("due"))
            })
        })
        .min()
}

/// Runs at the start of a block (after the market's own work): resolves disputes whose window
/// has passed and closes epochs whose last slot is final.
pub(crate) fn begin_block(o: &mut Overlay<'_>, timestamp_ms: u64) {
    let cfg = config(o);
    for rest in take_due(o, TAG_DISPUTE_DUE, timestamp_ms) {
        let slot = u64::from_be_bytes(rest[..8].try_into().expect("due key"));
        let device = Address(rest[8..40].try_into().expect("due key"));
        let dk = dispute_key(slot, &device);
        let mut d: Dispute = dec(&o.kv_get(&dk).expect("a due dispute exists"));
        if d.state == DisputeState::Open {
            slash(o, &cfg, &device, slot, &mut d);
            o.kv_put(dk, enc(&d));
        }
    }
    for rest in take_due(o, TAG_EPOCH_DUE, timestamp_ms) {
        let epoch = u64::from_be_bytes(rest[..8].try_into().expect("due key"));
        close_epoch(o, &cfg, epoch);
    }
}

/// Removes the entries of a due index (tag ‖ group ‖ due ms ‖ rest) that are due at
/// `timestamp_ms` and returns their rests, in due order.
fn take_due(o: &mut Overlay<'_>, tag: u8, timestamp_ms: u64) -> Vec<Vec<u8>> {
    let at = kv::GROUP_LEN;
    let mut out = Vec::new();
    for (k, _) in o.kv_scan(&kv::key(tag, 0, &[])) {
        let due = u64::from_be_bytes(k[at..at + 8].try_into().expect("due key"));
        if due > timestamp_ms {
            break;
        }
        out.push(k[at + 8..].to_vec());
        o.kv_delete(k);
    }
    out
}

/// Mints the epoch's rewards and pays out community assets' revenue.
fn close_epoch(o: &mut Overlay<'_>, cfg: &EconomicsConfig, epoch: u64) {
    let supply: Supply = o.kv_get(&supply_key()).map(|b| dec(&b)).unwrap_or_default();
    let emission = cfg
        .scheduled_emission(epoch)
        .min(cfg.emission_cap.saturating_sub(supply.minted));
    let entries: Vec<(Address, Points)> = o
        .kv_scan(&points_prefix(epoch))
        .into_iter()
        .map(|(k, v)| {
            (
                Address(k[kv::GROUP_LEN..].try_into().expect("points key")),
                dec(&v),
            )
        })
        .collect();
    let total: u128 = entries.iter().map(|(_, p)| p.value).sum();
    let mut minted = 0u128;
    let mut recipients = 0u32;
    let market = lm::config(o);
    for (owner, mut p) in entries {
        // emission ≤ 5e9 tokens of 1e6 base units and value ≤ 2^80 in any real epoch: the
        // product fits in u128; saturate rather than wrap if a test pushes it.
        let reward = emission
            .saturating_mul(p.value)
            .checked_div(total)
            .unwrap_or(0);
        if reward > 0 {
            mint(o, owner, reward);
            minted += reward;
            recipients += 1;
            note_revenue(
                o,
                &market,
                epoch * u64::from(cfg.epoch_slots),
                &owner,
                reward,
            );
        }
        p.reward = reward;
        o.kv_put(points_key(epoch, &owner), enc(&p));
    }
    let mut asset_payouts = 0u128;
    for (k, v) in o.kv_scan(&kv::key(TAG_ASSET_REVENUE, epoch, &[])) {
        let asset = Address(k[kv::GROUP_LEN..].try_into().expect("revenue key"));
        let revenue: u128 = dec(&v);
        o.kv_delete(k);
        let mut a: AssetRecord = dec(&o.kv_get(&asset_key(&asset)).expect("an asset"));
        let available = revenue.min(o.account(&asset).balance.0);
        for h in &a.holders {
            let share = share_of(available, h.shares, a.total_shares);
            o.move_funds(asset, h.holder, Amount(share))
                .expect("shares of what the asset holds");
            // At most what the asset paid out of its own balance: both stay within the supply.
            a.paid_out = a.paid_out.saturating_add(share);
            asset_payouts = asset_payouts.saturating_add(share);
        }
        o.kv_put(asset_key(&asset), enc(&a));
    }
    // A revenue noted for this epoch while closing it (rewards to an asset) re-scheduled the
    // close; it has just been paid out.
    let last_slot = (epoch + 1) * u64::from(cfg.epoch_slots) - 1;
    o.kv_delete(due_key(
        TAG_EPOCH_DUE,
        market.final_ms(last_slot),
        &epoch.to_be_bytes(),
    ));
    o.kv_put(
        epoch_key(epoch),
        enc(&EpochRecord {
            epoch,
            emission,
            minted,
            total_value: total,
            recipients,
            asset_payouts,
        }),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentages_and_shares_are_exact_and_never_overflow() {
        for amount in [
            0,
            1,
            99,
            100,
            12_345,
            u128::MAX / 3,
            u128::MAX - 1,
            u128::MAX,
        ] {
            for pct in [0u8, 1, 33, 50, 99, 100] {
                let exact = if amount <= u128::MAX / 100 {
                    Some(amount * u128::from(pct) / 100)
                } else {
                    None
                };
                let got = percent_of(amount, pct);
                if let Some(e) = exact {
                    assert_eq!(got, e);
                }
                assert!(got <= amount);
            }
            assert_eq!(percent_of(amount, 100), amount);
            assert_eq!(share_of(amount, u64::MAX, u64::MAX), amount);
            assert_eq!(share_of(amount, 0, u64::MAX), 0);
            let half = share_of(amount, u64::MAX / 2, u64::MAX - 1);
            assert!(half <= amount / 2 + 1, "{half} of {amount}");
        }
        assert_eq!(share_of(10, 1, 3), 3);
        assert_eq!(share_of(u128::MAX, 1, 2), u128::MAX / 2);
        assert_eq!(share_of(5, 1, 0), 0);
    }

    #[test]
    fn the_emission_halves_and_never_passes_the_cap() {
        let c = EconomicsConfig {
            epoch_emission: 1_000,
            halving_epochs: 10,
            emission_cap: 15_000,
            ..Default::default()
        };
        assert_eq!(c.scheduled_emission(0), 1_000);
        assert_eq!(c.scheduled_emission(9), 1_000);
        assert_eq!(c.scheduled_emission(10), 500);
        assert_eq!(c.scheduled_emission(35), 125);
        assert_eq!(c.scheduled_emission(10 * 200), 0);
        // The whole schedule sums below 2 × 10 × 1,000; the cap binds first.
        let mut minted = 0u128;
        for e in 0..10_000 {
            minted += c.scheduled_emission(e).min(c.emission_cap - minted);
        }
        assert_eq!(minted, 15_000);
    }

    #[test]
    fn economics_sections_say_what_is_wrong() {
        let f: EconomicsFile =
            toml::from_str("epoch_emission = \"500\"\nslash_percent = 50").unwrap();
        let c = f.to_config().unwrap();
        assert_eq!(c.epoch_emission, Amount::from_tokens(500).0);
        assert_eq!(c.slash_percent, 50);
        let bad: EconomicsFile = toml::from_str("slash_percent = 150").unwrap();
        assert!(bad.to_config().unwrap_err().contains("at most 100"));
        let bad: EconomicsFile = toml::from_str("epoch_emission = \"x\"").unwrap();
        assert!(bad.to_config().unwrap_err().contains("epoch_emission"));
        assert!(toml::from_str::<EconomicsFile>("epoch_slot = 4").is_err());
    }
}
