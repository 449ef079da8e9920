//! Devices and proof of generation: the devices an owner declares, the devices registered with
//! their own keys (bonded, transferable, retired), their signed readings, and the check of each
//! slot's readings against physics at settlement.
//!
//! Knows nothing of orders, trades or rewards: the market asks it what an owner can produce and
//! what was verified; economics rewards and slashes on what it recorded.

use borsh::{BorshDeserialize, BorshSerialize};
use gridmesh_market as mk;
use gridmesh_physics::pog;
use gridmesh_types::units::{slot_start_ms, SLOT_MS};
use gridmesh_types::{Address, Amount};
use serde::Serialize;

use crate::config::MarketConfig;
use crate::error::{MarketTxError, TxError};
use crate::kv::{decode as dec, encode as enc, keys, Tag};
use crate::limits::{MAX_DEVICES_PER_OWNER, MAX_SAMPLES_PER_READING, MWH_PER_W_PER_SLOT};
use crate::state::{Event, Origin, Overlay};
use crate::tx::{DeviceInfo, DeviceKind, DeviceReading};

/// A device an owner declared without a key of its own (rating only).
#[derive(Clone, Copy, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize)]
pub struct Device {
    pub kind: DeviceKind,
    pub capacity_w: u32,
}

/// Whether a device registered with its own key may still report.
#[derive(Clone, Copy, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize)]
#[borsh(use_discriminant = true)]
#[serde(rename_all = "snake_case")]
#[repr(u8)]
pub enum DeviceStatus {
    Active = 0,
    Decommissioned = 1,
    /// Its bond was slashed for a proven false reading: it can report no more.
    Slashed = 2,
}

/// A device registered with its own key.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize)]
pub struct DeviceIdentity {
    pub owner: Address,
    pub info: DeviceInfo,
    /// Held in [`device_bond_account`] while the device is active.
    pub bond: u128,
    pub registered_height: u64,
    pub status: DeviceStatus,
    /// The register of its last checked reading (accepted or held): the next must continue it.
    pub register_mwh: Option<u64>,
}

/// Where a device reading stands.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReadingStatus {
    /// Waiting for the slot's proof-of-generation check (at settlement).
    Pending,
    Accepted,
    /// Not paid; the reason says which check failed (and whether a fraud report may open a
    /// dispute on it: [`HoldReason::disputable`]).
    Held {
        reason: HoldReason,
    },
}

/// Why a device reading is held: the check that failed and the numbers it failed on. Integers
/// only: the words are the API's (`gridmesh-api`), so rewording a message never changes a state
/// root.
#[derive(Clone, Copy, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize)]
#[serde(rename_all = "snake_case", tag = "check")]
pub enum HoldReason {
    /// The register does not continue the device's last checked reading.
    RegisterMismatch { expected_mwh: u64 },
    /// More than the device's rated power allows in a slot.
    AboveRating { max_mwh: u64 },
    /// More than a clear sky allows at the site and time.
    AboveClearSky { bound_mwh: u64 },
    /// Far above what the neighbours' weather gives (ratios to the clear-sky expectation, ppm).
    NeighbourOutlier { ratio_ppm: u64, expected_ppm: u64 },
    /// The homes of the area that the grid operator's feeder-head meter `head_meter` measures
    /// claim more export than that meter allows (with the loss margin).
    AreaConservation {
        head_meter: Address,
        claimed_mwh: u64,
        bound_mwh: u64,
    },
}

impl HoldReason {
    /// The reason of a physics hold; `head_meter` names the feeder-head meter of an area check
    /// (the site checks, which never hold for an area, pass any address).
    pub fn of(hold: pog::Hold, head_meter: Address) -> HoldReason {
        match hold {
            pog::Hold::RegisterMismatch { expected_mwh } => {
                HoldReason::RegisterMismatch { expected_mwh }
            }
            pog::Hold::AboveRating { max_mwh } => HoldReason::AboveRating { max_mwh },
            pog::Hold::AboveClearSky { bound_mwh } => HoldReason::AboveClearSky { bound_mwh },
            pog::Hold::NeighbourOutlier {
                ratio_ppm,
                expected_ppm,
            } => HoldReason::NeighbourOutlier {
                ratio_ppm,
                expected_ppm,
            },
            pog::Hold::AreaConservation {
                claimed_mwh,
                bound_mwh,
            } => HoldReason::AreaConservation {
                head_meter,
                claimed_mwh,
                bound_mwh,
            },
        }
    }

    /// The check as the physics crate states it (the area check without its meter).
    pub fn hold(self) -> pog::Hold {
        match self {
            HoldReason::RegisterMismatch { expected_mwh } => {
                pog::Hold::RegisterMismatch { expected_mwh }
            }
            HoldReason::AboveRating { max_mwh } => pog::Hold::AboveRating { max_mwh },
            HoldReason::AboveClearSky { bound_mwh } => pog::Hold::AboveClearSky { bound_mwh },
            HoldReason::NeighbourOutlier {
                ratio_ppm,
                expected_ppm,
            } => pog::Hold::NeighbourOutlier {
                ratio_ppm,
                expected_ppm,
            },
            HoldReason::AreaConservation {
                claimed_mwh,
                bound_mwh,
                ..
            } => pog::Hold::AreaConservation {
                claimed_mwh,
                bound_mwh,
            },
        }
    }

    /// A hard physical bound was broken (register, rating, clear sky): evidence of a false
    /// reading, so a fraud report may open a dispute on it. The statistical checks (neighbours,
    /// area conservation) name no culprit and are never disputable.
    pub fn disputable(self) -> bool {
        self.hold().is_physical()
    }
}

/// A device's reading for a slot, as recorded.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize)]
pub struct DeviceReadingRecord {
    /// The device's owner when the reading arrived.
    pub owner: Address,
    pub energy_out_mwh: u64,
    pub energy_in_mwh: u64,
    pub register_mwh: u64,
    pub raw_root: gridmesh_types::Hash32,
    pub raw_count: u32,
    pub height: u64,
    pub status: ReadingStatus,
}

/// The account holding device bonds (no key controls it; only the state machine moves its
/// tokens).
pub fn device_bond_account() -> Address {
    Address(*blake3::hash(b"gridmesh/device-bonds").as_bytes())
}

/// A reading that passed the proof-of-generation checks, with what economics needs to reward the
/// flexibility it delivered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct VerifiedReading {
    pub owner: Address,
    pub kind: DeviceKind,
    pub location: String,
    pub energy_out_mwh: u64,
    pub energy_in_mwh: u64,
}

/// A registered device's identity, if any.
pub(crate) fn identity(o: &Overlay<'_>, device: &Address) -> Option<DeviceIdentity> {
    o.kv_get(&keys::device_identity(device)).map(|b| dec(&b))
}

/// The devices with their own keys an account owns (any status).
pub(crate) fn owned_devices(o: &Overlay<'_>, owner: &Address) -> Vec<(Address, DeviceIdentity)> {
    o.kv_scan(&keys::owned_devices(owner))
        .into_iter()
        .map(|(k, _)| {
            let device = keys::address_at_end(&k);
            let id = dec(&o
                .kv_get(&keys::device_identity(&device))
                .expect("an owned device exists"));
            (device, id)
        })
        .collect()
}

/// An owner's devices, with or without their own keys, as the market checks them.
pub(crate) struct OwnerCapacity {
    /// Whether the owner has any device (any status).
    pub any: bool,
    /// Most energy its producing devices (declared ones and active keyed ones) deliver in one
    /// slot: the bound of its export reading.
    pub producing_mwh: u64,
    /// Most energy its active producing devices with their own keys and bonds deliver in one
    /// slot: the bound of its asks (a declared device sells nothing).
    pub keyed_producing_mwh: u64,
}

/// Whether the owner has any device, declared or keyed (what a meter reading without export
/// needs): the first entry found answers, where [`owner_capacity`] reads them all.
pub(crate) fn owner_has_device(o: &Overlay<'_>, owner: &Address) -> bool {
    let mut any = false;
    for prefix in [keys::devices(owner), keys::owned_devices(owner)] {
        o.kv_visit_while(&prefix, |_, _| {
            any = true;
            std::ops::ControlFlow::Break(())
        });
        if any {
            return true;
        }
    }
    false
}

/// One pass over the owner's devices (on the path of every ask and reading: no copies).
pub(crate) fn owner_capacity(o: &Overlay<'_>, owner: &Address) -> OwnerCapacity {
    let mut c = OwnerCapacity {
        any: false,
        producing_mwh: 0,
        keyed_producing_mwh: 0,
    };
    o.kv_visit(&keys::devices(owner), |_, v| {
        let d: Device = dec(v);
        c.any = true;
        if d.kind.produces() {
            c.producing_mwh = c
                .producing_mwh
                .saturating_add(u64::from(d.capacity_w) * MWH_PER_W_PER_SLOT);
        }
    });
    let mut keyed = Vec::new();
    o.kv_visit(&keys::owned_devices(owner), |k, _| {
        keyed.push(keys::address_at_end(k))
    });
    for device in keyed {
        c.any = true;
        let d: DeviceIdentity = dec(&o
            .kv_get(&keys::device_identity(&device))
            .expect("an owned device exists"));
        if d.status == DeviceStatus::Active && d.info.kind.produces() {
            let mwh = u64::from(d.info.capacity_w) * MWH_PER_W_PER_SLOT;
            c.producing_mwh = c.producing_mwh.saturating_add(mwh);
            c.keyed_producing_mwh = c.keyed_producing_mwh.saturating_add(mwh);
        }
    }
    c
}

/// The proof-of-generation check of a slot's device readings (at its settlement): PV readings
/// through `gridmesh_physics::pog::check_slot` (register, rating, clear sky, neighbours by the
/// first level of their market area), other devices through the register and rating checks.
/// Every reading becomes accepted or held with its reason. What an owner's keyed devices measured
/// is the cap on what it is paid for as a seller (its verified export): the accepted output of its
/// producing devices, and no more than its own keyed meters' accepted export where it has one.
/// Returns the accepted readings, in device order, for the rewards of flexibility.
pub(crate) fn check_device_readings(
    o: &mut Overlay<'_>,
    market: &MarketConfig,
    slot: u64,
) -> Vec<VerifiedReading> {
    use gridmesh_physics::pog::{PvSite, SlotReading};
    let entries: Vec<(Address, DeviceReadingRecord)> = o
        .kv_scan(&keys::group(Tag::DeviceReading, slot))
        .into_iter()
        .map(|(k, v)| (keys::address_at_end(&k), dec(&v)))
        .filter(|(_, r): &(Address, DeviceReadingRecord)| r.status == ReadingStatus::Pending)
        .collect();
    if entries.is_empty() {
        return Vec::new();
    }
    let ids: Vec<DeviceIdentity> = entries
        .iter()
        .map(|(d, _)| {
            dec(&o
                .kv_get(&keys::device_identity(d))
                .expect("a reading's device is registered"))
        })
        .collect();
    let mut neighbourhoods: std::collections::BTreeMap<String, u32> = Default::default();
    let mut sites = Vec::new();
    let mut pv_readings = Vec::new();
    let mut pv_index = Vec::new();
    let mut held: Vec<Option<HoldReason>> = vec![None; entries.len()];
    let start_s = (slot_start_ms(slot) / 1000) as i64;
    let duration_s = (SLOT_MS / 1000) as u32;
    for (i, ((_, r), id)) in entries.iter().zip(&ids).enumerate() {
        if id.info.kind == DeviceKind::Pv {
            let top = id.info.location.split('/').next().unwrap_or("").to_string();
            let n = neighbourhoods.len() as u32;
            let neighbourhood = *neighbourhoods.entry(top).or_insert(n);
            sites.push(PvSite {
                rated_w: u64::from(id.info.capacity_w),
                observer: gridmesh_physics::Observer::at(
                    f64::from(id.info.latitude_microdeg) / 1e6,
                    f64::from(id.info.longitude_microdeg) / 1e6,
                    0.0,
                ),
                tilt_deg: f64::from(id.info.tilt_deg),
                azimuth_deg: f64::from(id.info.azimuth_deg),
                neighbourhood,
            });
            pv_readings.push(SlotReading {
                site: sites.len() - 1,
                energy_mwh: r.energy_out_mwh,
                register_mwh: r.register_mwh,
            });
            pv_index.push(i);
        } else {
            if let Some(last) = id.register_mwh {
                if r.register_mwh != last.saturating_add(r.energy_out_mwh) {
                    held[i] = Some(HoldReason::RegisterMismatch {
                        expected_mwh: last.saturating_add(r.energy_out_mwh),
                    });
                }
            }
            let max_mwh = u64::from(id.info.capacity_w) * MWH_PER_W_PER_SLOT;
            if held[i].is_none() && r.energy_out_mwh.max(r.energy_in_mwh) > max_mwh {
                held[i] = Some(HoldReason::AboveRating { max_mwh });
            }
        }
    }
    let pv_held = pog::check_slot(&sites, start_s, duration_s, &pv_readings, |s| {
        ids[pv_index[s]].register_mwh
    });
    for (k, h) in pv_index.iter().zip(pv_held) {
        // The site checks never hold for an area: no feeder-head meter to name.
        held[*k] = h.map(|h| {
            debug_assert!(!matches!(h, pog::Hold::AreaConservation { .. }));
            HoldReason::of(h, Address([0; 32]))
        });
    }
    // Conservation per area against the grid operator's feeder-head meters: a meter of the grid
    // operator measures the area named by its location; the homes' meters in that area may not
    // claim more export than it allows. A violation holds the area's meter and producing-device
    // readings (the check names no culprit).
    for (h, ((head_device, head), head_id)) in entries.iter().zip(&ids).enumerate() {
        if head_id.info.kind != DeviceKind::Meter || head_id.owner != market.grid_operator {
            continue;
        }
        let area = head_id.info.location.as_str();
        let members: Vec<usize> = (0..entries.len())
            .filter(|&j| {
                let loc = ids[j].info.location.as_str();
                j != h && ids[j].owner != market.grid_operator && mk::area_contains(area, loc)
            })
            .collect();
        let (mut import, mut export) = (0u64, 0u64);
        for &j in &members {
            if ids[j].info.kind == DeviceKind::Meter {
                import = import.saturating_add(entries[j].1.energy_in_mwh);
                export = export.saturating_add(entries[j].1.energy_out_mwh);
            }
        }
        if let Some(v) =
            pog::area_conservation(head.energy_out_mwh, head.energy_in_mwh, import, export)
        {
            for &j in &members {
                let kind = ids[j].info.kind;
                if held[j].is_none() && (kind == DeviceKind::Meter || kind.produces()) {
                    held[j] = Some(HoldReason::of(v, *head_device));
                }
            }
        }
    }
    // Per owner: accepted production, and its keyed meters' accepted export (if any).
    let mut verified: std::collections::BTreeMap<Address, (u64, Option<u64>)> = Default::default();
    let mut accepted = Vec::new();
    for (((device, mut r), mut id), h) in entries.into_iter().zip(ids).zip(held) {
        let owner_total = verified.entry(r.owner).or_insert((0, None));
        r.status = match h {
            Some(reason) => ReadingStatus::Held { reason },
            None => {
                if id.info.kind.produces() {
                    owner_total.0 = owner_total.0.saturating_add(r.energy_out_mwh);
                } else if id.info.kind == DeviceKind::Meter {
                    let m = owner_total.1.get_or_insert(0);
                    *m = m.saturating_add(r.energy_out_mwh);
                }
                accepted.push(VerifiedReading {
                    owner: r.owner,
                    kind: id.info.kind,
                    location: id.info.location.clone(),
                    energy_out_mwh: r.energy_out_mwh,
                    energy_in_mwh: r.energy_in_mwh,
                });
                ReadingStatus::Accepted
            }
        };
        // The next reading must continue from this one's register, held or not: a register
        // that jumps is caught at the next step too.
        id.register_mwh = Some(r.register_mwh);
        o.kv_put(keys::device_identity(&device), enc(&id));
        o.kv_put(keys::device_reading(slot, &device), enc(&r));
    }
    for (owner, (produced, metered)) in verified {
        let mwh = metered.map_or(produced, |m| produced.min(m));
        o.kv_put(keys::verified_export(slot, &owner), enc(&mwh));
    }
    accepted
}

/// The sender's active device registered with its own key.
fn own_active_device(
    o: &Overlay<'_>,
    sender: &Address,
    device: &Address,
) -> Result<DeviceIdentity, MarketTxError> {
    let d: DeviceIdentity = identity(o, device).ok_or(MarketTxError::UnknownDevice(*device))?;
    if d.owner != *sender {
        return Err(MarketTxError::NotYourDevice(*device));
    }
    match d.status {
        DeviceStatus::Active => Ok(d),
        DeviceStatus::Decommissioned => Err(MarketTxError::DeviceDecommissioned(*device)),
        DeviceStatus::Slashed => Err(MarketTxError::DeviceSlashed(*device)),
    }
}

// The transactions.

/// `RegisterDevice`: a device declared by its owner (rating only, no key).
pub(crate) fn register_device(
    o: &mut Overlay<'_>,
    cfg: &MarketConfig,
    from: Origin<'_>,
    kind: DeviceKind,
    capacity_w: u32,
) -> Result<Vec<Event>, TxError> {
    let sender = from.sender;
    cfg.check_rating(kind, capacity_w)?;
    let n = o.kv_scan(&keys::devices(&sender)).len() as u32;
    if n >= MAX_DEVICES_PER_OWNER {
        return Err(MarketTxError::TooManyDevices.into());
    }
    o.kv_put(keys::device(&sender, n), enc(&Device { kind, capacity_w }));
    Ok(vec![Event::DeviceRegistered { index: n }])
}

/// `RegisterDeviceKey`: a device with its own key, its registration signed by that key and its
/// bond locked.
pub(crate) fn register_device_key(
    o: &mut Overlay<'_>,
    cfg: &MarketConfig,
    from: Origin<'_>,
    device: &Address,
    info: &DeviceInfo,
    bond: Amount,
    device_signature: &[u8; 64],
) -> Result<Vec<Event>, TxError> {
    let sender = from.sender;
    let ctx = from.ctx;
    if o.kv_get(&keys::device_identity(device)).is_some() {
        return Err(MarketTxError::DeviceExists(*device).into());
    }
    if owned_devices(o, &sender).len() >= MAX_DEVICES_PER_OWNER as usize {
        return Err(MarketTxError::TooManyDevices.into());
    }
    cfg.check_rating(info.kind, info.capacity_w)?;
    let min = cfg.device_bond(info.kind, info.capacity_w);
    if bond.0 < min {
        return Err(MarketTxError::BondTooSmall { got: bond.0, min }.into());
    }
    mk::check_location(&info.location).map_err(|e| MarketTxError::BadLocation(e.to_string()))?;
    let message = crate::tx::device_registration_message(ctx.chain_id, &sender, info);
    crate::crypto::verify_one(device, &message, device_signature)
        .map_err(|_| MarketTxError::BadDeviceSignature)?;
    // The bond moves last: everything above is checked, and a short balance fails here
    // before anything is written.
    o.move_funds(sender, device_bond_account(), bond)?;
    o.kv_put(
        keys::device_identity(device),
        enc(&DeviceIdentity {
            owner: sender,
            info: info.clone(),
            bond: bond.0,
            registered_height: ctx.height,
            status: DeviceStatus::Active,
            register_mwh: None,
        }),
    );
    o.kv_put(keys::owned_device(&sender, device), Vec::new());
    Ok(vec![Event::DeviceKeyRegistered { device: *device }])
}

/// `TransferDevice`: an active device moves to a new owner.
pub(crate) fn transfer_device(
    o: &mut Overlay<'_>,
    from: Origin<'_>,
    device: &Address,
    to: &Address,
) -> Result<Vec<Event>, TxError> {
    let sender = from.sender;
    let mut d = own_active_device(o, &sender, device)?;
    if *to == sender {
        return Err(MarketTxError::TransferToSelf.into());
    }
    if owned_devices(o, to).len() >= MAX_DEVICES_PER_OWNER as usize {
        return Err(MarketTxError::TooManyDevices.into());
    }
    d.owner = *to;
    o.kv_put(keys::device_identity(device), enc(&d));
    o.kv_delete(keys::owned_device(&sender, device));
    o.kv_put(keys::owned_device(to, device), Vec::new());
    Ok(vec![Event::DeviceTransferred {
        device: *device,
        to: *to,
    }])
}

/// `DecommissionDevice`: a device is retired and what is left of its bond returns.
pub(crate) fn decommission_device(
    o: &mut Overlay<'_>,
    from: Origin<'_>,
    device: &Address,
) -> Result<Vec<Event>, TxError> {
    let sender = from.sender;
    // A slashed device may be retired too: what is left of its bond returns.
    let mut d = match own_active_device(o, &sender, device) {
        Err(MarketTxError::DeviceSlashed(_)) => dec(&o
            .kv_get(&keys::device_identity(device))
            .expect("checked above")),
        other => other?,
    };
    o.move_funds(device_bond_account(), sender, Amount(d.bond))
        .expect("the bond account holds every active device's bond");
    let refund = d.bond;
    d.bond = 0;
    d.status = DeviceStatus::Decommissioned;
    o.kv_put(keys::device_identity(device), enc(&d));
    o.kv_delete(keys::owned_device(&sender, device));
    Ok(vec![Event::DeviceDecommissioned {
        device: *device,
        refund: Amount(refund),
    }])
}

/// `SubmitDeviceReadings`: a gateway's batch of signed device readings, recorded for the check
/// at settlement.
pub(crate) fn submit_device_readings(
    o: &mut Overlay<'_>,
    cfg: &MarketConfig,
    from: Origin<'_>,
    readings: &[DeviceReading],
) -> Result<Vec<Event>, TxError> {
    let now = from.now_ms();
    let ctx = from.ctx;
    let mut seen = std::collections::BTreeSet::new();
    let mut records = Vec::with_capacity(readings.len());
    for r in readings {
        let d: DeviceIdentity =
            identity(o, &r.device).ok_or(MarketTxError::UnknownDevice(r.device))?;
        match d.status {
            DeviceStatus::Active => {}
            DeviceStatus::Decommissioned => {
                return Err(MarketTxError::DeviceDecommissioned(r.device).into())
            }
            DeviceStatus::Slashed => return Err(MarketTxError::DeviceSlashed(r.device).into()),
        }
        // A reading must commit to the samples it sums, so that one of them can contradict it.
        if r.raw_count == 0 || r.raw_root.0 == [0; 32] {
            return Err(MarketTxError::NoSamples(r.device).into());
        }
        if r.raw_count > MAX_SAMPLES_PER_READING {
            return Err(MarketTxError::TooManySamples {
                device: r.device,
                count: r.raw_count,
                max: MAX_SAMPLES_PER_READING,
            }
            .into());
        }
        // Checked with the block's batch, or here one by one to name the device at fault.
        if !ctx.readings_verified {
            let message = crate::tx::device_reading_message(ctx.chain_id, r);
            crate::crypto::verify_one(&r.device, &message, &r.signature)
                .map_err(|_| MarketTxError::BadReadingSignature(r.device))?;
        }
        let ends_ms = slot_start_ms(r.slot + 1);
        if now < ends_ms {
            return Err(MarketTxError::SlotNotEnded {
                slot: r.slot,
                ends_ms,
            }
            .into());
        }
        let deadline_ms = cfg.settlement_ms(r.slot);
        if now >= deadline_ms {
            return Err(MarketTxError::ReadingTooLate {
                slot: r.slot,
                deadline_ms,
            }
            .into());
        }
        if !seen.insert((r.slot, r.device))
            || o.kv_get(&keys::device_reading(r.slot, &r.device)).is_some()
        {
            return Err(MarketTxError::DuplicateDeviceReading {
                device: r.device,
                slot: r.slot,
            }
            .into());
        }
        for x in [r.energy_out_mwh, r.energy_in_mwh] {
            if x > mk::MAX_ORDER_MWH {
                return Err(MarketTxError::EnergyTooLarge(x).into());
            }
        }
        records.push((
            keys::device_reading(r.slot, &r.device),
            DeviceReadingRecord {
                owner: d.owner,
                energy_out_mwh: r.energy_out_mwh,
                energy_in_mwh: r.energy_in_mwh,
                register_mwh: r.register_mwh,
                raw_root: r.raw_root,
                raw_count: r.raw_count,
                height: ctx.height,
                status: ReadingStatus::Pending,
            },
        ));
    }
    let count = records.len() as u32;
    for (k, rec) in records {
        o.kv_put(k, enc(&rec));
    }
    // The check runs when the slot settles, traded or not.
    for slot in seen.iter().map(|(slot, _)| *slot) {
        o.kv_put(
            keys::slot_due(Tag::SettleDue, cfg.settlement_ms(slot), slot),
            Vec::new(),
        );
    }
    Ok(vec![Event::DeviceReadingsRecorded { count }])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A meter reading's device check: a declared device or a keyed one answers; none, or one
    /// this block removed (a transferred keyed device), does not.
    #[test]
    fn an_owner_has_a_device_declared_or_keyed() {
        let state = crate::state::State::default();
        let mut o = state.overlay();
        let (declared, keyed, none) = (Address([1; 32]), Address([2; 32]), Address([3; 32]));
        let meter = Device {
            kind: DeviceKind::Meter,
            capacity_w: 11_000,
        };
        o.kv_put(keys::device(&declared, 0), enc(&meter));
        o.kv_put(keys::owned_device(&keyed, &Address([9; 32])), Vec::new());
        assert!(owner_has_device(&o, &declared));
        assert!(owner_has_device(&o, &keyed));
        assert!(!owner_has_device(&o, &none));
        // What owner_capacity says of the same owners.
        assert!(owner_capacity(&o, &declared).any);
        assert!(!owner_capacity(&o, &none).any);
        o.kv_delete(keys::owned_device(&keyed, &Address([9; 32])));
        assert!(!owner_has_device(&o, &keyed));
    }

    #[test]
    fn only_hard_physics_holds_are_disputable() {
        let head = Address([1; 32]);
        assert!(HoldReason::RegisterMismatch { expected_mwh: 1 }.disputable());
        assert!(HoldReason::AboveRating { max_mwh: 1 }.disputable());
        assert!(HoldReason::AboveClearSky { bound_mwh: 1 }.disputable());
        assert!(!HoldReason::NeighbourOutlier {
            ratio_ppm: 1,
            expected_ppm: 1
        }
        .disputable());
        let area = pog::Hold::AreaConservation {
            claimed_mwh: 3,
            bound_mwh: 2,
        };
        let reason = HoldReason::of(area, head);
        assert!(!reason.disputable());
        assert_eq!(reason.hold(), area);
    }
}
