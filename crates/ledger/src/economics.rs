//! Token economics of the physical layer: rewards per epoch under a capped emission schedule,
//! fraud reports and slashing with a dispute window, the grid operator's flexibility requests,
//! community assets owned in shares, and the supply record that reconciles all of it.
//!
//! # Rewards
//!
//! An epoch is `epoch_slots` market slots (96: a day). During it, each owner earns *points*, in
//! token base units of grid value, for
//!
//! - energy its keyed devices measured and delivered to neighbours (settled trades, capped by
//!   the seller's verified export), valued at the slot's retail tariff: the import each kWh
//!   avoided, so an evening kWh is worth more than a midday one. A trade between accounts the
//!   ledger can tell answer to one owner (the same account, an owner and its devices' keys, an
//!   asset and its holders) earns nothing;
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

use borsh::{BorshDeserialize, BorshSerialize};
use gridmesh_types::units::{slot_start_ms, SLOT_MS};
use gridmesh_types::{Address, Amount};
use serde::{Deserialize, Serialize};

use crate::arith::{percent_of, share_of};
use crate::config::MarketConfig;
use crate::devices::{
    device_bond_account, DeviceIdentity, DeviceReadingRecord, DeviceStatus, HoldReason,
    ReadingStatus,
};
use crate::kv::{decode as dec, encode as enc, keys, KvSpace, Tag};
use crate::market::Owed;
use crate::state::{Event, Origin, Overlay};
use crate::tx::{DeviceKind, FlexDirection, FraudEvidence, Shareholding};

pub use crate::error::{EconomicsError, TxError};

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

    /// The first slot of `epoch` (slots end long before `u64` does: saturating is exact).
    pub fn first_slot_of(&self, epoch: u64) -> u64 {
        epoch.saturating_mul(u64::from(self.epoch_slots))
    }

    /// The last slot of `epoch`.
    pub fn last_slot_of(&self, epoch: u64) -> u64 {
        self.first_slot_of(epoch)
            .saturating_add(u64::from(self.epoch_slots))
            .saturating_sub(1)
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
        reason: HoldReason,
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
        (keys::economics_config(), enc(&cfg)),
        (
            keys::supply(),
            enc(&Supply {
                genesis: genesis_supply,
                minted: 0,
                burned: 0,
            }),
        ),
    ]
}

pub fn stored_config(kv: &KvSpace) -> EconomicsConfig {
    kv.get(&keys::economics_config())
        .map(dec)
        .unwrap_or_default()
}

pub fn config(o: &Overlay<'_>) -> EconomicsConfig {
    o.kv_get(&keys::economics_config())
        .map(|b| dec(&b))
        .unwrap_or_default()
}

/// The supply record (a state without one is treated as having minted nothing).
pub fn supply(kv: &KvSpace) -> Supply {
    kv.get(&keys::supply()).map(dec).unwrap_or_default()
}

fn mint(o: &mut Overlay<'_>, to: Address, amount: u128) {
    if amount == 0 {
        return;
    }
    o.mint(to, Amount(amount))
        .expect("a reward cannot overflow a balance under the emission cap");
    let mut s: Supply = o
        .kv_get(&keys::supply())
        .map(|b| dec(&b))
        .unwrap_or_default();
    s.minted = s
        .minted
        .checked_add(amount)
        .expect("minting stays under the emission cap, which fits the supply");
    o.kv_put(keys::supply(), enc(&s));
}

fn schedule_epoch(o: &mut Overlay<'_>, market: &MarketConfig, cfg: &EconomicsConfig, epoch: u64) {
    o.kv_put(
        keys::due(
            Tag::EpochDue,
            market.final_ms(cfg.last_slot_of(epoch)),
            &epoch.to_be_bytes(),
        ),
        Vec::new(),
    );
}

/// Adds points to `owner` for work in `slot`.
fn add_points(
    o: &mut Overlay<'_>,
    market: &MarketConfig,
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
    let k = keys::points(epoch, owner);
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
fn note_revenue(o: &mut Overlay<'_>, market: &MarketConfig, slot: u64, to: &Address, amount: u128) {
    if amount == 0 || o.kv_get(&keys::asset(to)).is_none() {
        return;
    }
    let cfg = config(o);
    let epoch = cfg.epoch_of(slot);
    let k = keys::asset_revenue(epoch, to);
    let r: u128 = o.kv_get(&k).map(|b| dec(&b)).unwrap_or(0);
    o.kv_put(k, enc(&r.saturating_add(amount)));
    schedule_epoch(o, market, &cfg, epoch);
}

/// Books what the market owes: points for verified renewable energy delivered to neighbours and
/// for flexibility delivered where the network asked, revenue of community assets, and the removal
/// of pruned slots' flexibility requests. Only sums change, so the order of the entries does not
/// matter.
pub(crate) fn book(o: &mut Overlay<'_>, market: &MarketConfig, owed: Owed) {
    for (slot, r) in owed.verified {
        // Flexibility the network asked for, weighted by what it is worth to the grid.
        if let Some(req) = flex_request(o, slot, &r.location) {
            let mwh = flexibility_delivered(r.kind, req, r.energy_out_mwh, r.energy_in_mwh);
            let value = gridmesh_market::value_floor(mwh, req.value_per_kwh);
            add_points(o, market, slot, &r.owner, 0, mwh, value);
        }
    }
    for d in owed.delivered {
        // Energy an owner sells itself (or its own devices or assets) is worth nothing to the
        // grid: it earns nothing.
        if !same_owner(o, &d.seller, &d.buyer) {
            add_points(o, market, d.slot, &d.seller, d.energy_mwh, 0, d.value);
        }
    }
    for (slot, seller, amount) in owed.received {
        note_revenue(o, market, slot, &seller, amount.0);
    }
    for slot in owed.pruned {
        for (k, _) in o.kv_scan(&keys::group(Tag::Flex, slot)) {
            o.kv_delete(k);
        }
    }
}

/// Whether the ledger can tell that `a` and `b` answer to one owner: the same account, a device
/// registered to the other (in any status), or a community asset the other holds shares of.
/// Accounts an owner keeps apart are not told apart here; what they earn is still bounded by
/// what the owner's keyed devices measured (see the settlement's cap).
fn same_owner(o: &Overlay<'_>, a: &Address, b: &Address) -> bool {
    let device_of = |device: &Address, owner: &Address| {
        crate::devices::identity(o, device).is_some_and(|d| d.owner == *owner)
    };
    let holds = |asset: &Address, holder: &Address| {
        o.kv_get(&keys::asset(asset)).is_some_and(|b| {
            dec::<AssetRecord>(&b)
                .holders
                .iter()
                .any(|h| h.holder == *holder)
        })
    };
    a == b || device_of(a, b) || device_of(b, a) || holds(a, b) || holds(b, a)
}

/// The flexibility request that applies to a device at `location` in `slot`: the most specific
/// area that contains it.
fn flex_request(o: &Overlay<'_>, slot: u64, location: &str) -> Option<FlexRecord> {
    o.kv_scan(&keys::group(Tag::Flex, slot))
        .into_iter()
        .filter_map(|(k, v)| {
            let area = keys::flex_area_of(&k)?.to_string();
            gridmesh_market::area_contains(&area, location)
                .then(|| (area.len(), dec::<FlexRecord>(&v)))
        })
        .max_by_key(|(len, _)| *len)
        .map(|(_, r)| r)
}

/// Every flexibility request of `slot` (area, request), as stored in `kv` (for views).
pub fn flex_requests(kv: &KvSpace, slot: u64) -> Vec<(String, FlexRecord)> {
    kv.scan(&keys::group(Tag::Flex, slot))
        .filter_map(|(k, v)| {
            let area = keys::flex_area_of(k)?.to_string();
            Some((area, dec::<FlexRecord>(v)))
        })
        .collect()
}

/// Points for a device's accepted reading under a flexibility request.
fn flexibility_delivered(
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

fn grid_operator_only(market: &MarketConfig, sender: &Address) -> Result<(), EconomicsError> {
    if *sender != market.grid_operator {
        return Err(EconomicsError::NotGridOperator);
    }
    Ok(())
}

/// `ReportFraud`: evidence that a device's reading is false; a contradiction of its committed
/// samples slashes at once, a hard physics hold opens a dispute.
pub(crate) fn report_fraud(
    o: &mut Overlay<'_>,
    market: &MarketConfig,
    from: Origin<'_>,
    device: &Address,
    slot: u64,
    evidence: &FraudEvidence,
) -> Result<Vec<Event>, TxError> {
    let sender = from.sender;
    let now = from.now_ms();
    let ctx = from.ctx;
    let cfg = config(o);
    let id: DeviceIdentity =
        crate::devices::identity(o, device).ok_or(EconomicsError::UnknownDevice(*device))?;
    if id.owner == sender {
        return Err(EconomicsError::OwnDevice.into());
    }
    let rec: DeviceReadingRecord = o
        .kv_get(&keys::device_reading(slot, device))
        .map(|b| dec(&b))
        .ok_or(EconomicsError::NoReading {
            device: *device,
            slot,
        })?;
    if o.kv_get(&keys::dispute(slot, device)).is_some() {
        return Err(EconomicsError::AlreadyReported {
            device: *device,
            slot,
        }
        .into());
    }
    let closed_ms = market
        .settlement_ms(slot)
        .saturating_add(cfg.dispute_window_ms());
    if now > closed_ms {
        return Err(EconomicsError::WindowClosed { slot, closed_ms }.into());
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
            let reading = crate::telemetry::ReadingClaim {
                device: *device,
                energy_out_mwh: rec.energy_out_mwh,
                register_mwh: rec.register_mwh,
                raw_root: rec.raw_root,
                raw_count: rec.raw_count,
            };
            let start = slot_start_ms(slot);
            let c = crate::telemetry::contradiction(
                ctx.chain_id,
                &reading,
                start,
                start + SLOT_MS,
                proof,
            )
            .map_err(|e| EconomicsError::EvidenceRejected(e.to_string()))?;
            let mut dispute = dispute(DisputeFinding::Commitment { contradiction: c });
            let events = slash(o, &cfg, device, slot, &mut dispute);
            o.kv_put(keys::dispute(slot, device), enc(&dispute));
            Ok(events)
        }
        FraudEvidence::Physics => {
            let reason = match rec.status {
                ReadingStatus::Held { reason } if reason.disputable() => reason,
                _ => return Err(EconomicsError::NotHeldByPhysics.into()),
            };
            let mut dispute = dispute(DisputeFinding::Physics { reason });
            dispute.resolves_ms = now.saturating_add(cfg.dispute_window_ms());
            let mut rest = slot.to_be_bytes().to_vec();
            rest.extend_from_slice(&device.0);
            o.kv_put(
                keys::due(Tag::DisputeDue, dispute.resolves_ms, &rest),
                Vec::new(),
            );
            let resolves_ms = dispute.resolves_ms;
            o.kv_put(keys::dispute(slot, device), enc(&dispute));
            Ok(vec![Event::DisputeOpened {
                device: *device,
                slot,
                resolves_ms,
            }])
        }
    }
}

/// `DismissDispute`: the grid operator dismisses an open dispute.
pub(crate) fn dismiss_dispute(
    o: &mut Overlay<'_>,
    market: &MarketConfig,
    from: Origin<'_>,
    device: &Address,
    slot: u64,
) -> Result<Vec<Event>, TxError> {
    let sender = from.sender;
    grid_operator_only(market, &sender)?;
    let k = keys::dispute(slot, device);
    let mut d: Dispute = o
        .kv_get(&k)
        .map(|b| dec(&b))
        .filter(|d: &Dispute| d.state == DisputeState::Open)
        .ok_or(EconomicsError::NoOpenDispute {
            device: *device,
            slot,
        })?;
    let mut rest = slot.to_be_bytes().to_vec();
    rest.extend_from_slice(&device.0);
    o.kv_delete(keys::due(Tag::DisputeDue, d.resolves_ms, &rest));
    d.state = DisputeState::Dismissed;
    o.kv_put(k, enc(&d));
    Ok(vec![])
}

/// `RequestFlexibility`: the grid operator asks an area for flexibility in a future slot.
pub(crate) fn request_flexibility(
    o: &mut Overlay<'_>,
    market: &MarketConfig,
    from: Origin<'_>,
    slot: u64,
    area: &str,
    direction: FlexDirection,
    value_per_kwh: u64,
) -> Result<Vec<Event>, TxError> {
    let sender = from.sender;
    let now = from.now_ms();
    grid_operator_only(market, &sender)?;
    let starts_ms = slot_start_ms(slot);
    if now >= starts_ms {
        return Err(EconomicsError::SlotStarted { slot, starts_ms }.into());
    }
    o.kv_put(
        keys::flex(slot, area),
        enc(&FlexRecord {
            direction,
            value_per_kwh,
        }),
    );
    Ok(vec![])
}

/// `CreateAsset`: the sender becomes a community asset owned in shares.
pub(crate) fn create_asset(
    o: &mut Overlay<'_>,
    from: Origin<'_>,
    name: &str,
    holders: &[Shareholding],
) -> Result<Vec<Event>, TxError> {
    let sender = from.sender;
    if o.kv_get(&keys::asset(&sender)).is_some() {
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
        keys::asset(&sender),
        enc(&AssetRecord {
            name: name.to_string(),
            holders: holders.to_vec(),
            total_shares,
            paid_out: 0,
        }),
    );
    Ok(vec![])
}

/// `TransferShares`: a holder moves shares of a community asset.
pub(crate) fn transfer_shares(
    o: &mut Overlay<'_>,
    from: Origin<'_>,
    asset: &Address,
    to: &Address,
    shares: u64,
) -> Result<Vec<Event>, TxError> {
    let sender = from.sender;
    let mut a: AssetRecord = o
        .kv_get(&keys::asset(asset))
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
    if held < shares {
        return Err(EconomicsError::NotEnoughShares {
            held,
            wanted: shares,
        }
        .into());
    }
    if *to != sender {
        if !a.holders.iter().any(|h| h.holder == *to) {
            if a.holders.len() == crate::tx::MAX_ASSET_HOLDERS && held != shares {
                return Err(EconomicsError::TooManyHolders(a.holders.len()).into());
            }
            a.holders.push(Shareholding {
                holder: *to,
                shares: 0,
            });
        }
        for h in &mut a.holders {
            // The sender holds at least `shares`, and every holding is a part of the total.
            if h.holder == sender {
                h.shares = h.shares.saturating_sub(shares);
            } else if h.holder == *to {
                h.shares = h.shares.saturating_add(shares);
            }
        }
        a.holders.retain(|h| h.shares > 0);
        o.kv_put(keys::asset(asset), enc(&a));
    }
    Ok(vec![])
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
    let k = keys::device_identity(device);
    let mut id: DeviceIdentity = dec(&o.kv_get(&k).expect("a disputed device is registered"));
    let amount = percent_of(id.bond, cfg.slash_percent);
    let to_reporter = percent_of(amount, cfg.reporter_percent);
    let bonds = device_bond_account();
    o.move_funds(bonds, dispute.reporter, Amount(to_reporter))
        .expect("the bond account holds every active bond");
    o.move_funds(
        bonds,
        community_fund_account(),
        Amount(amount.saturating_sub(to_reporter)),
    )
    .expect("the bond account holds every active bond");
    id.bond = id.bond.saturating_sub(amount);
    if id.status == DeviceStatus::Active {
        id.status = DeviceStatus::Slashed;
    }
    o.kv_put(k, enc(&id));
    let epoch = cfg.epoch_of(slot);
    if o.kv_get(&keys::epoch(epoch)).is_none() {
        let pk = keys::points(epoch, &dispute.owner);
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
pub(crate) fn next_due_ms(kv: &KvSpace) -> Option<u64> {
    [Tag::EpochDue, Tag::DisputeDue]
        .into_iter()
        .filter_map(|tag| {
            kv.scan(&keys::group(tag, 0))
                .next()
                .map(|(k, _)| keys::due_ms_of(k))
        })
        .min()
}

/// Runs at the start of a block (after the market's own work): resolves disputes whose window
/// has passed and closes epochs whose last slot is final.
pub(crate) fn begin_block(o: &mut Overlay<'_>, market: &MarketConfig, timestamp_ms: u64) {
    let cfg = config(o);
    for rest in take_due(o, Tag::DisputeDue, timestamp_ms) {
        let slot = u64::from_be_bytes(rest[..8].try_into().expect("due key"));
        let device = Address(rest[8..40].try_into().expect("due key"));
        let dk = keys::dispute(slot, &device);
        let mut d: Dispute = dec(&o.kv_get(&dk).expect("a due dispute exists"));
        if d.state == DisputeState::Open {
            slash(o, &cfg, &device, slot, &mut d);
            o.kv_put(dk, enc(&d));
        }
    }
    for rest in take_due(o, Tag::EpochDue, timestamp_ms) {
        let epoch = u64::from_be_bytes(rest[..8].try_into().expect("due key"));
        close_epoch(o, market, &cfg, epoch);
    }
}

/// Removes the entries of a due index (tag ‖ group ‖ due ms ‖ rest) that are due at
/// `timestamp_ms` and returns their rests, in due order.
fn take_due(o: &mut Overlay<'_>, tag: Tag, timestamp_ms: u64) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for (k, _) in o.kv_scan(&keys::group(tag, 0)) {
        if keys::due_ms_of(&k) > timestamp_ms {
            break;
        }
        out.push(keys::due_rest_of(&k).to_vec());
        o.kv_delete(k);
    }
    out
}

/// Mints the epoch's rewards and pays out community assets' revenue.
fn close_epoch(o: &mut Overlay<'_>, market: &MarketConfig, cfg: &EconomicsConfig, epoch: u64) {
    let supply: Supply = o
        .kv_get(&keys::supply())
        .map(|b| dec(&b))
        .unwrap_or_default();
    let emission = cfg
        .scheduled_emission(epoch)
        .min(cfg.emission_cap.saturating_sub(supply.minted));
    let entries: Vec<(Address, Points)> = o
        .kv_scan(&keys::group(Tag::Points, epoch))
        .into_iter()
        .map(|(k, v)| (keys::address_at_end(&k), dec(&v)))
        .collect();
    let total = entries
        .iter()
        .fold(0u128, |sum, (_, p)| sum.saturating_add(p.value));
    let mut minted = 0u128;
    let mut recipients = 0u32;
    for (owner, mut p) in entries {
        // emission ≤ 5e9 tokens of 1e6 base units and value ≤ 2^80 in any real epoch: the
        // product fits in u128; saturate rather than wrap if a test pushes it.
        let reward = emission
            .saturating_mul(p.value)
            .checked_div(total)
            .unwrap_or(0);
        if reward > 0 {
            mint(o, owner, reward);
            // Each reward is a share of the emission: the sum stays under it.
            minted = minted.saturating_add(reward);
            recipients = recipients.saturating_add(1);
            note_revenue(o, market, cfg.first_slot_of(epoch), &owner, reward);
        }
        p.reward = reward;
        o.kv_put(keys::points(epoch, &owner), enc(&p));
    }
    let mut asset_payouts = 0u128;
    for (k, v) in o.kv_scan(&keys::group(Tag::AssetRevenue, epoch)) {
        let asset = keys::address_at_end(&k);
        let revenue: u128 = dec(&v);
        o.kv_delete(k);
        let mut a: AssetRecord = dec(&o.kv_get(&keys::asset(&asset)).expect("an asset"));
        let available = revenue.min(o.account(&asset).balance.0);
        for h in &a.holders {
            let share = share_of(available, h.shares, a.total_shares);
            o.move_funds(asset, h.holder, Amount(share))
                .expect("shares of what the asset holds");
            // At most what the asset paid out of its own balance: both stay within the supply.
            a.paid_out = a.paid_out.saturating_add(share);
            asset_payouts = asset_payouts.saturating_add(share);
        }
        o.kv_put(keys::asset(&asset), enc(&a));
    }
    // A revenue noted for this epoch while closing it (rewards to an asset) re-scheduled the
    // close; it has just been paid out.
    o.kv_delete(keys::due(
        Tag::EpochDue,
        market.final_ms(cfg.last_slot_of(epoch)),
        &epoch.to_be_bytes(),
    ));
    o.kv_put(
        keys::epoch(epoch),
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
