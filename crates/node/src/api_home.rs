//! A member's own data, for the member and whom the member grants it: sign-in by a signature
//! challenge, read grants, and the home view (energy and money flows per slot, savings against
//! the utility-only bill, devices and their verification, rewards).
//!
//! Sign-in: `POST /v1/auth/challenge {address}` returns a fresh challenge and the exact bytes to
//! sign (`AUTH_DOMAIN`, the chain id, the address, the challenge); `POST /v1/auth/session
//! {address, challenge, signature}` checks the account key's ed25519 signature and returns a
//! bearer token. The key never leaves the member's hands: the page signs in the browser. Grants
//! (`PUT`/`DELETE /v1/homes/{owner}/grants/{grantee}`, the owner signed in) let another account
//! read the owner's home; they are this node's (kept in `grants.json` in its data directory), not
//! the chain's. Public pages show only community aggregates.
//!
//! Limits: [`MAX_CHALLENGES`] open challenges and [`MAX_SESSIONS`] sessions (the oldest go first),
//! challenges live [`CHALLENGE_TTL`], sessions [`SESSION_TTL`], an owner grants at most
//! [`MAX_GRANTEES`] accounts, a home view covers at most [`MAX_HOME_SLOTS`] slots.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path as FsPath, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use gridmesh_ledger::economics;
use gridmesh_ledger::market::{
    self as lm, DeviceIdentity, DeviceReadingRecord, Reading, ReadingStatus, SlotRecord,
    TradeRecord,
};
use gridmesh_market::value_floor;
use gridmesh_types::units::{slot_of, slot_start_ms};
use gridmesh_types::{Address, Amount};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::api::{ApiError, ApiResult};
use crate::Shared;

/// Domain separation of sign-in signatures.
pub const AUTH_DOMAIN: &[u8] = b"gridmesh/auth/v1\0";
pub const MAX_CHALLENGES: usize = 10_000;
pub const MAX_SESSIONS: usize = 10_000;
pub const CHALLENGE_TTL: Duration = Duration::from_secs(300);
pub const SESSION_TTL: Duration = Duration::from_secs(3600);
pub const MAX_GRANTEES: usize = 100;
/// 31 days of slots.
pub const MAX_HOME_SLOTS: u64 = 2_976;

/// Challenges, sessions and grants of this node.
pub struct Auth {
    challenges: Mutex<HashMap<[u8; 32], (Address, Instant)>>,
    sessions: Mutex<HashMap<String, (Address, Instant)>>,
    grants: Mutex<BTreeMap<Address, BTreeSet<Address>>>,
    grants_file: Option<PathBuf>,
}

impl Auth {
    /// Grants from `data_dir/grants.json` if it exists (`None`: kept in memory only).
    pub fn load(data_dir: Option<&FsPath>) -> anyhow::Result<Auth> {
        let grants_file = data_dir.map(|d| d.join("grants.json"));
        let grants = match &grants_file {
            Some(f) if f.exists() => {
                let text = std::fs::read_to_string(f)?;
                serde_json::from_str(&text)
                    .map_err(|e| anyhow::anyhow!("{} is not a grants file: {e}", f.display()))?
            }
            _ => BTreeMap::new(),
        };
        Ok(Auth {
            challenges: Default::default(),
            sessions: Default::default(),
            grants: Mutex::new(grants),
            grants_file,
        })
    }

    fn save_grants(&self, grants: &BTreeMap<Address, BTreeSet<Address>>) -> Result<(), ApiError> {
        let Some(f) = &self.grants_file else {
            return Ok(());
        };
        let tmp = f.with_extension("json.tmp");
        let text = serde_json::to_string_pretty(grants).expect("grants serialise");
        std::fs::write(&tmp, text)
            .and_then(|()| std::fs::rename(&tmp, f))
            .map_err(ApiError::internal)
    }

    /// The account a bearer token signs in, if the token is valid.
    fn session(&self, headers: &HeaderMap) -> Result<Address, ApiError> {
        let unauthorized =
            |m: &str| ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", m.to_string());
        let token = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| unauthorized("sign in: POST /v1/auth/challenge, then /v1/auth/session, and send Authorization: Bearer <token>"))?;
        let mut sessions = self.sessions.lock().expect("sessions lock");
        match sessions.get(token) {
            Some((who, at)) if at.elapsed() < SESSION_TTL => Ok(*who),
            Some(_) => {
                sessions.remove(token);
                Err(unauthorized("the session has expired: sign in again"))
            }
            None => Err(unauthorized("unknown session token: sign in again")),
        }
    }

    /// Whether `reader` may read `owner`'s home.
    fn may_read(&self, reader: &Address, owner: &Address) -> bool {
        reader == owner
            || self
                .grants
                .lock()
                .expect("grants lock")
                .get(owner)
                .is_some_and(|g| g.contains(reader))
    }
}

/// What a sign-in signs.
pub fn auth_message(chain_id: &str, address: &Address, challenge: &[u8; 32]) -> Vec<u8> {
    let mut m = AUTH_DOMAIN.to_vec();
    m.extend_from_slice(chain_id.as_bytes());
    m.push(0);
    m.extend_from_slice(&address.0);
    m.extend_from_slice(challenge);
    m
}

pub(crate) fn parse_address(s: &str, what: &str) -> Result<Address, ApiError> {
    s.parse().map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("{what} {s:?} is not an address (64 hex digits)"),
        )
    })
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

/// A sign-in challenge for an account.
#[utoipa::path(post, path = "/v1/auth/challenge", request_body = ChallengeRequest,
    responses((status = 200, body = ChallengeResponse), (status = 400, body = crate::api::ErrorBody)))]
pub async fn post_challenge(
    State(s): State<Arc<Shared>>,
    Json(req): Json<ChallengeRequest>,
) -> ApiResult<ChallengeResponse> {
    let address = parse_address(&req.address, "address")?;
    let challenge: [u8; 32] = rand::random();
    {
        let mut open = s.auth.challenges.lock().expect("challenges lock");
        open.retain(|_, (_, at)| at.elapsed() < CHALLENGE_TTL);
        if open.len() >= MAX_CHALLENGES {
            let oldest = open.iter().min_by_key(|(_, (_, at))| *at).map(|(k, _)| *k);
            if let Some(k) = oldest {
                open.remove(&k);
            }
        }
        open.insert(challenge, (address, Instant::now()));
    }
    let chain_id = s.chain.read().expect("chain lock").chain_id().to_string();
    Ok(Json(ChallengeResponse {
        challenge: hex::encode(challenge),
        message: hex::encode(auth_message(&chain_id, &address, &challenge)),
        expires_in_s: CHALLENGE_TTL.as_secs(),
    }))
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

/// Signs in with a signed challenge; the token reads the account's home (and those granted).
#[utoipa::path(post, path = "/v1/auth/session", request_body = SessionRequest,
    responses((status = 200, body = SessionResponse), (status = 400, body = crate::api::ErrorBody),
              (status = 401, body = crate::api::ErrorBody)))]
pub async fn post_session(
    State(s): State<Arc<Shared>>,
    Json(req): Json<SessionRequest>,
) -> ApiResult<SessionResponse> {
    let address = parse_address(&req.address, "address")?;
    let bad =
        |code: &'static str, m: &str| ApiError::new(StatusCode::UNAUTHORIZED, code, m.to_string());
    let challenge: [u8; 32] = hex::decode(&req.challenge)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| bad("bad_challenge", "challenge is not 32 bytes of hex"))?;
    let signature: [u8; 64] = hex::decode(&req.signature)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| bad("bad_signature", "signature is not 64 bytes of hex"))?;
    // A challenge is used once, by the account it was made for, before it expires.
    let issued = s
        .auth
        .challenges
        .lock()
        .expect("challenges lock")
        .remove(&challenge);
    match issued {
        Some((who, at)) if who == address && at.elapsed() < CHALLENGE_TTL => {}
        _ => {
            return Err(bad(
                "bad_challenge",
                "unknown, used or expired challenge for this address: ask for a new one",
            ))
        }
    }
    let chain_id = s.chain.read().expect("chain lock").chain_id().to_string();
    gridmesh_ledger::crypto::verify_one(
        &address,
        &auth_message(&chain_id, &address, &challenge),
        &signature,
    )
    .map_err(|_| {
        bad(
            "bad_signature",
            "the signature is not the account key's over the challenge",
        )
    })?;
    let token = hex::encode(rand::random::<[u8; 32]>());
    {
        let mut sessions = s.auth.sessions.lock().expect("sessions lock");
        sessions.retain(|_, (_, at)| at.elapsed() < SESSION_TTL);
        if sessions.len() >= MAX_SESSIONS {
            let oldest = sessions
                .iter()
                .min_by_key(|(_, (_, at))| *at)
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                sessions.remove(&k);
            }
        }
        sessions.insert(token.clone(), (address, Instant::now()));
    }
    Ok(Json(SessionResponse {
        token,
        address: address.to_string(),
        expires_in_s: SESSION_TTL.as_secs(),
    }))
}

#[derive(Serialize, Deserialize, ToSchema, Debug)]
pub struct GrantsView {
    pub owner: String,
    pub grantees: Vec<String>,
}

fn owner_only(s: &Shared, headers: &HeaderMap, owner: &Address) -> Result<(), ApiError> {
    let who = s.auth.session(headers)?;
    if who != *owner {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "only the owner manages who may read a home",
        ));
    }
    Ok(())
}

/// Who may read the owner's home (the owner signed in).
#[utoipa::path(get, path = "/v1/homes/{address}/grants",
    responses((status = 200, body = GrantsView), (status = 401, body = crate::api::ErrorBody),
              (status = 403, body = crate::api::ErrorBody)))]
pub async fn get_grants(
    State(s): State<Arc<Shared>>,
    Path(owner): Path<String>,
    headers: HeaderMap,
) -> ApiResult<GrantsView> {
    let owner = parse_address(&owner, "owner")?;
    owner_only(&s, &headers, &owner)?;
    let grants = s.auth.grants.lock().expect("grants lock");
    Ok(Json(GrantsView {
        owner: owner.to_string(),
        grantees: grants
            .get(&owner)
            .map(|g| g.iter().map(Address::to_string).collect())
            .unwrap_or_default(),
    }))
}

/// Lets `grantee` read the owner's home (the owner signed in).
#[utoipa::path(put, path = "/v1/homes/{address}/grants/{grantee}",
    responses((status = 200, body = GrantsView), (status = 401, body = crate::api::ErrorBody),
              (status = 403, body = crate::api::ErrorBody), (status = 409, body = crate::api::ErrorBody)))]
pub async fn put_grant(
    State(s): State<Arc<Shared>>,
    Path((owner, grantee)): Path<(String, String)>,
    headers: HeaderMap,
) -> ApiResult<GrantsView> {
    change_grant(&s, &owner, &grantee, &headers, true)
}

/// Withdraws `grantee`'s access to the owner's home (the owner signed in).
#[utoipa::path(delete, path = "/v1/homes/{address}/grants/{grantee}",
    responses((status = 200, body = GrantsView), (status = 401, body = crate::api::ErrorBody),
              (status = 403, body = crate::api::ErrorBody)))]
pub async fn delete_grant(
    State(s): State<Arc<Shared>>,
    Path((owner, grantee)): Path<(String, String)>,
    headers: HeaderMap,
) -> ApiResult<GrantsView> {
    change_grant(&s, &owner, &grantee, &headers, false)
}

fn change_grant(
    s: &Shared,
    owner: &str,
    grantee: &str,
    headers: &HeaderMap,
    add: bool,
) -> ApiResult<GrantsView> {
    let owner = parse_address(owner, "owner")?;
    let grantee = parse_address(grantee, "grantee")?;
    owner_only(s, headers, &owner)?;
    let mut grants = s.auth.grants.lock().expect("grants lock");
    let mut next = grants.clone();
    let set = next.entry(owner).or_default();
    if add {
        if set.len() >= MAX_GRANTEES && !set.contains(&grantee) {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "too_many_grants",
                format!("a home may be shared with at most {MAX_GRANTEES} accounts"),
            ));
        }
        set.insert(grantee);
    } else {
        set.remove(&grantee);
        if set.is_empty() {
            next.remove(&owner);
        }
    }
    s.auth.save_grants(&next)?;
    *grants = next;
    Ok(Json(GrantsView {
        owner: owner.to_string(),
        grantees: grants
            .get(&owner)
            .map(|g| g.iter().map(Address::to_string).collect())
            .unwrap_or_default(),
    }))
}

#[derive(Deserialize, IntoParams)]
pub struct HomeQuery {
    /// Slots up to the current one (1 to 2976; default 96, a day).
    pub slots: Option<u64>,
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
    fn of(s: &gridmesh_ledger::telemetry::RawSample) -> DeviceNow {
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
    pub live: Option<crate::api_feeder::HomeLiveView>,
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
    let kv = state.kv();
    let cfg: lm::MarketConfig = kv
        .get(&lm::config_key())
        .map(lm::decode)
        .unwrap_or_default();
    let last = slot_of(now_ms);
    let first = last.saturating_sub(slots - 1);
    let mut rows = Vec::new();
    let mut t = [0u64; 4]; // import, export, bought, sold (mWh)
    let mut money = [0i128; 5]; // paid, received, utility cost, utility credit, baseline
    for slot in first..=last {
        let reading: Option<Reading> = kv.get(&lm::reading_key(slot, owner)).map(lm::decode);
        let record: Option<SlotRecord> = kv.get(&lm::slot_key(slot)).map(lm::decode);
        let (mut bought, mut sold, mut paid, mut received) = (0u64, 0u64, 0u128, 0u128);
        if record.is_some() {
            for (_, v) in kv.scan(&lm::trades_prefix(slot)) {
                let tr: TradeRecord = lm::decode(v);
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
        if reading.is_none() && bought == 0 && sold == 0 {
            continue;
        }
        let tariff = record
            .as_ref()
            .map_or_else(|| cfg.tariff(slot), |r| r.tariff);
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
            p2p_paid: Amount(paid).to_string(),
            p2p_received: Amount(received).to_string(),
            utility_cost: Amount(cost).to_string(),
            utility_credit: Amount(credit).to_string(),
            baseline_bill: signed_tokens(baseline),
        });
    }
    let bill = money[2] - money[3] + money[0] - money[1];
    let econ = economics::stored_config(kv);
    let rewards: u128 = (econ.epoch_of(first)..=econ.epoch_of(last))
        .filter_map(|e| kv.get(&economics::points_key(e, owner)))
        .map(|v| lm::decode::<economics::Points>(v).reward)
        .sum();
    let devices = kv
        .scan(&lm::owned_devices_prefix(owner))
        .map(|(k, _)| Address(k[k.len() - 32..].try_into().expect("owned device key")))
        .filter_map(|device| {
            let id: DeviceIdentity = kv.get(&lm::device_key_key(&device)).map(lm::decode)?;
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
                let Some(r) = kv.get(&lm::device_reading_key(slot, &device)) else {
                    continue;
                };
                match lm::decode::<DeviceReadingRecord>(r).status {
                    ReadingStatus::Accepted => d.readings_accepted += 1,
                    ReadingStatus::Pending => d.readings_pending += 1,
                    ReadingStatus::Held { reason, .. } => d.held.push(HeldReading { slot, reason }),
                }
            }
            Some(d)
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

/// A home's energy and money flows, savings, devices and rewards: for its owner and whom the
/// owner granted it (a session token from `/v1/auth/session`).
#[utoipa::path(get, path = "/v1/homes/{address}", params(HomeQuery),
    responses((status = 200, body = HomeView), (status = 400, body = crate::api::ErrorBody),
              (status = 401, body = crate::api::ErrorBody), (status = 403, body = crate::api::ErrorBody)))]
pub async fn get_home(
    State(s): State<Arc<Shared>>,
    Path(owner): Path<String>,
    Query(q): Query<HomeQuery>,
    headers: HeaderMap,
) -> ApiResult<HomeView> {
    let owner = parse_address(&owner, "address")?;
    let slots = q.slots.unwrap_or(96);
    if !(1..=MAX_HOME_SLOTS).contains(&slots) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("slots must be 1 to {MAX_HOME_SLOTS}, not {slots}"),
        ));
    }
    let reader = s.auth.session(&headers)?;
    if !s.auth.may_read(&reader, &owner) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "this home's data is for its owner and whom the owner grants it",
        ));
    }
    let (state, now) = {
        let chain = s.chain.read().expect("chain lock");
        (chain.state().clone(), chain.head().timestamp_ms)
    };
    let mut view = home_view(&state, &owner, now, slots);
    view.live = crate::api_feeder::FeederLive::home(&s.feeder, &owner);
    if let Some(g) = s.gateway.get() {
        for d in &mut view.devices {
            let Ok(device) = d.device.parse::<Address>() else {
                continue;
            };
            match g.store.last(&device) {
                Ok(last) => d.now = last.as_ref().map(DeviceNow::of),
                Err(e) => tracing::warn!("the telemetry store could not answer for {device}: {e}"),
            }
        }
    }
    Ok(Json(view))
}

/// A home's energy per slot as an SVG chart: metered import and export, and what of it was traded
/// with neighbours (owner or grantee, like the home view).
#[utoipa::path(get, path = "/v1/homes/{address}/flows.svg", params(HomeQuery),
    responses((status = 200, content_type = "image/svg+xml", body = String),
              (status = 400, body = crate::api::ErrorBody), (status = 401, body = crate::api::ErrorBody),
              (status = 403, body = crate::api::ErrorBody)))]
pub async fn get_home_chart(
    state: State<Arc<Shared>>,
    path: Path<String>,
    query: Query<HomeQuery>,
    headers: HeaderMap,
) -> Result<axum::response::Response, ApiError> {
    use gridmesh_sim::report::{line_chart, Line, PALETTE};
    let Json(view) = get_home(state, path, query, headers).await?;
    let last = view.last_slot;
    let series = |f: &dyn Fn(&HomeSlot) -> &String| -> Vec<(f64, f64)> {
        view.slots
            .iter()
            .map(|r| {
                (
                    -((last - r.slot) as f64) / 4.0,
                    f(r).parse::<f64>().unwrap_or(0.0),
                )
            })
            .collect()
    };
    let svg = line_chart(
        "My home's energy per 15 minutes",
        "hours before the current slot (h)",
        "energy (kWh)",
        &[
            Line {
                name: "imported",
                color: PALETTE[0],
                points: series(&|r| &r.import_kwh),
            },
            Line {
                name: "exported",
                color: PALETTE[1],
                points: series(&|r| &r.export_kwh),
            },
            Line {
                name: "bought from neighbours",
                color: PALETTE[2],
                points: series(&|r| &r.bought_kwh),
            },
            Line {
                name: "sold to neighbours",
                color: PALETTE[3],
                points: series(&|r| &r.sold_kwh),
            },
        ],
    );
    Ok(crate::api_dashboard::svg(svg))
}

/// A home's money per hour as stacked bars, SVG: spent (utility, neighbours) above the axis,
/// earned (feed-in credit, neighbours) below (owner or grantee, like the home view).
#[utoipa::path(get, path = "/v1/homes/{address}/money.svg", params(HomeQuery),
    responses((status = 200, content_type = "image/svg+xml", body = String),
              (status = 400, body = crate::api::ErrorBody), (status = 401, body = crate::api::ErrorBody),
              (status = 403, body = crate::api::ErrorBody)))]
pub async fn get_money_chart(
    state: State<Arc<Shared>>,
    path: Path<String>,
    query: Query<HomeQuery>,
    headers: HeaderMap,
) -> Result<axum::response::Response, ApiError> {
    let Json(view) = get_home(state, path, query, headers).await?;
    Ok(crate::api_dashboard::svg(money_chart(&view)))
}

/// Stacked hourly bars of `view`'s money flows, tokens.
fn money_chart(view: &HomeView) -> Result<String, String> {
    use gridmesh_sim::report::PALETTE;
    use plotters::prelude::*;
    let n = |s: &String| s.parse::<f64>().unwrap_or(0.0);
    // Per hour before now: [utility cost, paid to neighbours, feed-in credit, from neighbours].
    let hours = view.last_slot.saturating_sub(view.first_slot) / 4 + 1;
    let mut bars = vec![[0.0f64; 4]; hours as usize];
    for r in &view.slots {
        let h = ((view.last_slot - r.slot) / 4) as usize;
        for (acc, v) in bars[h].iter_mut().zip([
            &r.utility_cost,
            &r.p2p_paid,
            &r.utility_credit,
            &r.p2p_received,
        ]) {
            *acc += n(v);
        }
    }
    let top = bars.iter().map(|b| b[0] + b[1]).fold(0.01, f64::max) * 1.1;
    let bottom = -bars.iter().map(|b| b[2] + b[3]).fold(0.01, f64::max) * 1.1;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (900, 320)).into_drawing_area();
        let e = |e: &dyn std::fmt::Display| e.to_string();
        root.fill(&WHITE).map_err(|x| e(&x))?;
        let mut chart = ChartBuilder::on(&root)
            .caption("My money per hour", ("sans-serif", 18))
            .margin(10)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(-(hours as f64)..0.0, bottom..top)
            .map_err(|x| e(&x))?;
        chart
            .configure_mesh()
            .x_desc("hours before now (h)")
            .y_desc("tokens (spent above, earned below)")
            .light_line_style(RGBColor(235, 235, 235))
            .draw()
            .map_err(|x| e(&x))?;
        let names = [
            "to the utility",
            "to neighbours",
            "feed-in credit",
            "from neighbours",
        ];
        for (k, name) in names.iter().enumerate() {
            let colour = PALETTE[k];
            let rects = bars.iter().enumerate().map(move |(h, b)| {
                let x1 = -(h as f64);
                let x0 = x1 - 0.9;
                // Stack: spent upwards (utility, then neighbours), earned downwards.
                let (lo, hi) = match k {
                    0 => (0.0, b[0]),
                    1 => (b[0], b[0] + b[1]),
                    2 => (-b[2], 0.0),
                    _ => (-b[2] - b[3], -b[2]),
                };
                Rectangle::new([(x0, lo), (x1 - 0.1, hi)], colour.filled())
            });
            chart
                .draw_series(rects)
                .map_err(|x| e(&x))?
                .label(*name)
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 5), (x + 12, y + 5)], colour.filled())
                });
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.3))
            .draw()
            .map_err(|x| e(&x))?;
        root.present().map_err(|x| e(&x))?;
    }
    Ok(svg)
}
