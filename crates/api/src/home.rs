//! A member's home as the API shows it to the member and whom the member grants it: sign-in
//! messages, and the home view built from the state (energy and money per slot, savings against
//! the utility-only bill, devices and their verification, rewards).

use gridmesh_ledger::devices::ReadingStatus;
use gridmesh_ledger::market::{Reading, SlotRecord};
use gridmesh_ledger::readers::{DeviceReader, EconomicsReader, GridReader, MarketReader};
use gridmesh_market::value_floor;
use gridmesh_types::units::{slot_of, slot_start_ms};
use gridmesh_types::{Address, Amount};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// 31 days of slots.
pub const MAX_HOME_SLOTS: u64 = 2_976;

/// Domain separation of sign-in signatures.
pub const AUTH_DOMAIN: &[u8] = b"gridmesh/auth/v1\0";

/// What a sign-in signs.
pub fn auth_message(chain_id: &str, address: &Address, challenge: &[u8; 32]) -> Vec<u8> {
    let mut m = AUTH_DOMAIN.to_vec();
    m.extend_from_slice(chain_id.as_bytes());
    m.push(0);
    m.extend_from_slice(&address.0);
    m.extend_from_slice(challenge);
    m
}

#[derive(Serialize, Deserialize, ToSchema, Debug)]
pub struct ChallengeRequest {
    pub address: String,
}

#[derive(Serialize, Deserialize, ToSchema, Debug)]
pub struct ChallengeResponse {
    pub challenge: String,
    /// The bytes to sign with the account's key, hex.
    pub message: String,
    pub expires_in_s: u64,
}

#[derive(Serialize, Deserialize, ToSchema, Debug)]
pub struct SessionRequest {
    pub address: String,
    pub challenge: String,
    /// The account key's ed25519 signature of the challenge's message, hex.
    pub signature: String,
}

#[derive(Serialize, Deserialize, ToSchema, Debug)]
pub struct SessionResponse {
    pub token: String,
    pub address: String,
    pub expires_in_s: u64,
}

#[derive(Serialize, Deserialize, ToSchema, Debug)]
pub struct GrantsView {
    pub owner: String,
    pub grantees: Vec<String>,
}

/// One slot of a home: its meter, its trades and its utility bill lines.
#[derive(Serialize, Deserialize, ToSchema, Debug, Clone, PartialEq)]
pub struct HomeSlot {
    pub slot: u64,
    pub delivery_start_ms: u64,
    pub import_kwh: String,
    pub export_kwh: String,
    pub bought_kwh: String,
    pub sold_kwh: String,
    /// What the home ordered for the slot (its agent's plan: bids to buy, asks to sell), kWh.
    pub ordered_buy_kwh: String,
    pub ordered_sell_kwh: String,
    /// Settled P2P payments, tokens (pending trades count when settled).
    pub p2p_paid: String,
    pub p2p_received: String,
    pub utility_cost: String,
    pub utility_credit: String,
    /// What the same meter would have cost with the utility alone, tokens (negative: a credit).
    pub baseline_bill: String,
}

/// A device of the home and its verification.
#[derive(Serialize, Deserialize, ToSchema, Debug, Clone, PartialEq)]
pub struct HomeDevice {
    pub device: String,
    pub kind: String,
    pub capacity_w: u32,
    pub location: String,
    /// `active`, `decommissioned` or `slashed`.
    pub status: String,
    /// Readings of the covered slots: accepted, pending, and held with their reasons.
    pub readings_accepted: u32,
    pub readings_pending: u32,
    pub held: Vec<HeldReading>,
    /// The device's latest signed sample this node's device gateway received (none without a
    /// gateway, or before the device's first sample).
    pub now: Option<DeviceNow>,
}

/// What a device said in its latest signed sample.
#[derive(Serialize, Deserialize, ToSchema, Debug, Clone, PartialEq)]
pub struct DeviceNow {
    /// End of the sample's interval, ms since the epoch.
    pub time_ms: u64,
    /// Power at that time, W (positive: delivering to the home or the grid; a battery or EV
    /// charging is negative).
    pub power_w: i32,
    /// The device's energy registers, kWh.
    pub out_register_kwh: String,
    pub in_register_kwh: String,
}

impl DeviceNow {
    pub fn of(s: &gridmesh_ledger::telemetry::RawSample) -> DeviceNow {
        DeviceNow {
            time_ms: s.time_ms,
            power_w: s.power_w,
            out_register_kwh: kwh(s.out_register_mwh),
            in_register_kwh: kwh(s.in_register_mwh),
        }
    }
}

#[derive(Serialize, Deserialize, ToSchema, Debug, Clone, PartialEq)]
pub struct HeldReading {
    pub slot: u64,
    pub reason: String,
}

/// Sums over the covered slots, tokens and kWh.
#[derive(Serialize, Deserialize, ToSchema, Debug, Clone, PartialEq, Default)]
pub struct HomeTotals {
    pub import_kwh: String,
    pub export_kwh: String,
    pub bought_kwh: String,
    pub sold_kwh: String,
    pub p2p_paid: String,
    pub p2p_received: String,
    pub utility_cost: String,
    pub utility_credit: String,
    /// Utility cost − credit + P2P paid − received.
    pub bill: String,
    /// The utility-only bill of the same meter.
    pub baseline_bill: String,
    /// Baseline − bill.
    pub savings: String,
    /// Rewards minted to the account by the epochs of the covered slots.
    pub rewards: String,
}

#[derive(Serialize, Deserialize, ToSchema, Debug, Clone, PartialEq)]
pub struct HomeView {
    pub address: String,
    pub balance: String,
    pub first_slot: u64,
    pub last_slot: u64,
    pub totals: HomeTotals,
    /// Slots with a reading or a trade, oldest first.
    pub slots: Vec<HomeSlot>,
    pub devices: Vec<HomeDevice>,
    /// The home's devices in the latest slot, where this node sees them (the demo's simulator).
    pub live: Option<HomeLiveView>,
}

/// Signed tokens (negative allowed) as decimal text.
fn signed_tokens(v: i128) -> String {
    if v < 0 {
        format!("-{}", Amount(v.unsigned_abs()))
    } else {
        Amount(v as u128).to_string()
    }
}

fn kwh(mwh: u64) -> String {
    gridmesh_types::format_fixed(u128::from(mwh), 6)
}

/// The home of `owner` over the last `slots` slots at `now_ms`.
pub fn home_view(
    state: &gridmesh_ledger::State,
    owner: &Address,
    now_ms: u64,
    slots: u64,
) -> HomeView {
    let last = slot_of(now_ms);
    let first = last.saturating_sub(slots - 1);
    let mut rows = Vec::new();
    let mut t = [0u64; 4]; // import, export, bought, sold (mWh)
    let mut money = [0i128; 5]; // paid, received, utility cost, utility credit, baseline
    for slot in first..=last {
        let reading: Option<Reading> = state.reading(slot, owner);
        let record: Option<SlotRecord> = state.slot_record(slot);
        let (mut bought, mut sold, mut paid, mut received) = (0u64, 0u64, 0u128, 0u128);
        if record.is_some() {
            for tr in state.trades(slot) {
                if tr.buyer != *owner && tr.seller != *owner {
                    continue;
                }
                let delivered = tr
                    .settlement
                    .as_ref()
                    .map_or(tr.trade.energy_mwh, |s| s.delivered_mwh);
                if tr.buyer == *owner {
                    bought += delivered;
                    paid += tr.settlement.as_ref().map_or(0, |s| s.buyer_paid);
                }
                if tr.seller == *owner {
                    sold += delivered;
                    received += tr.settlement.as_ref().map_or(0, |s| s.seller_received);
                }
            }
        }
        let (mut ordered_buy, mut ordered_sell) = (0u64, 0u64);
        for (_, o) in state.orders(slot) {
            if o.owner == *owner {
                match o.side {
                    gridmesh_market::Side::Bid => ordered_buy += o.energy_mwh,
                    gridmesh_market::Side::Ask => ordered_sell += o.energy_mwh,
                }
            }
        }
        if reading.is_none() && bought == 0 && sold == 0 && ordered_buy == 0 && ordered_sell == 0 {
            continue;
        }
        let tariff = record
            .as_ref()
            .map_or_else(|| state.tariff(slot), |r| r.tariff);
        let island = record.as_ref().is_some_and(|r| r.island);
        let (import, export) = reading.map_or((bought, sold), |r| (r.import_mwh, r.export_mwh));
        let utility_import = import.saturating_sub(bought);
        let utility_export = export.saturating_sub(sold) + bought.saturating_sub(import);
        let (cost, credit, baseline) = if island {
            (0, 0, 0)
        } else {
            (
                value_floor(utility_import, tariff.retail_per_kwh),
                value_floor(utility_export, tariff.feed_in_per_kwh),
                value_floor(import, tariff.retail_per_kwh) as i128
                    - value_floor(export, tariff.feed_in_per_kwh) as i128,
            )
        };
        for (acc, v) in t.iter_mut().zip([import, export, bought, sold]) {
            *acc += v;
        }
        for (acc, v) in money.iter_mut().zip([
            paid as i128,
            received as i128,
            cost as i128,
            credit as i128,
            baseline,
        ]) {
            *acc += v;
        }
        rows.push(HomeSlot {
            slot,
            delivery_start_ms: slot_start_ms(slot),
            import_kwh: kwh(import),
            export_kwh: kwh(export),
            bought_kwh: kwh(bought),
            sold_kwh: kwh(sold),
            ordered_buy_kwh: kwh(ordered_buy),
            ordered_sell_kwh: kwh(ordered_sell),
            p2p_paid: Amount(paid).to_string(),
            p2p_received: Amount(received).to_string(),
            utility_cost: Amount(cost).to_string(),
            utility_credit: Amount(credit).to_string(),
            baseline_bill: signed_tokens(baseline),
        });
    }
    let bill = money[2] - money[3] + money[0] - money[1];
    let econ = state.economics_config();
    let rewards: u128 = (econ.epoch_of(first)..=econ.epoch_of(last))
        .filter_map(|e| state.points(e, owner))
        .map(|p| p.reward)
        .sum();
    let devices = state
        .owned_devices(owner)
        .into_iter()
        .map(|(device, id)| {
            let mut d = HomeDevice {
                device: device.to_string(),
                kind: id.info.kind.name().to_string(),
                capacity_w: id.info.capacity_w,
                location: id.info.location.clone(),
                status: format!("{:?}", id.status).to_lowercase(),
                readings_accepted: 0,
                readings_pending: 0,
                held: Vec::new(),
                now: None,
            };
            for slot in first..=last {
                let Some(r) = state.device_reading(slot, &device) else {
                    continue;
                };
                match r.status {
                    ReadingStatus::Accepted => d.readings_accepted += 1,
                    ReadingStatus::Pending => d.readings_pending += 1,
                    ReadingStatus::Held { reason } => d.held.push(HeldReading {
                        slot,
                        reason: crate::market::hold_text(reason),
                    }),
                }
            }
            d
        })
        .collect();
    HomeView {
        address: owner.to_string(),
        balance: state.account(owner).balance.to_string(),
        first_slot: first,
        last_slot: last,
        totals: HomeTotals {
            import_kwh: kwh(t[0]),
            export_kwh: kwh(t[1]),
            bought_kwh: kwh(t[2]),
            sold_kwh: kwh(t[3]),
            p2p_paid: signed_tokens(money[0]),
            p2p_received: signed_tokens(money[1]),
            utility_cost: signed_tokens(money[2]),
            utility_credit: signed_tokens(money[3]),
            bill: signed_tokens(bill),
            baseline_bill: signed_tokens(money[4]),
            savings: signed_tokens(money[4] - bill),
            rewards: Amount(rewards).to_string(),
        },
        slots: rows,
        devices,
        live: None,
    }
}

/// A home's devices in the latest slot (kW, 15-minute means): for the home's owner and grantees.
#[derive(Serialize, Deserialize, ToSchema, Debug, Clone, PartialEq)]
pub struct HomeLiveView {
    pub slot_start_ms: u64,
    pub load_kw: f64,
    pub pv_kw: f64,
    /// Charging positive.
    pub battery_kw: f64,
    pub battery_soc_percent: Option<f64>,
    pub ev_kw: f64,
    /// Exchange with the grid, import positive.
    pub net_kw: f64,
}
