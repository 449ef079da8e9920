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
//! Limits, so that no flood takes a member's challenge or session away ([`AuthLimits`]):
//! - a client (an IP address) holds at most [`MAX_CHALLENGES_PER_CLIENT`] open challenges: its
//!   next one replaces its own oldest, never another client's;
//! - a node holds at most [`MAX_CHALLENGES`] open challenges and [`MAX_SESSIONS`] sessions: when
//!   full it answers 503 (`busy`) and evicts nobody;
//! - an account holds at most [`MAX_SESSIONS_PER_ADDRESS`] sessions and a client at most
//!   [`MAX_SESSIONS_PER_CLIENT`]: a new one replaces the account's (or the client's) own oldest.
//!   Only the account's key opens its sessions, so a flood of sessions only ever evicts the
//!   flooder's own;
//! - a failed sign-in consumes nothing: a challenge is used up only by a session request for its
//!   account with a valid signature, so someone who sees a challenge cannot burn it.
//!
//! Challenges live [`CHALLENGE_TTL`], sessions [`SESSION_TTL`], an owner grants at most
//! [`MAX_GRANTEES`] accounts, a home view covers at most [`MAX_HOME_SLOTS`] slots.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path as FsPath, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use gridmesh_types::Address;
use serde::Deserialize;
use utoipa::IntoParams;

use crate::api::{ApiError, ApiResult};
use crate::Shared;

pub use gridmesh_api::home::*;

pub const MAX_CHALLENGES: usize = 10_000;
pub const MAX_CHALLENGES_PER_CLIENT: usize = 16;
pub const MAX_SESSIONS: usize = 10_000;
pub const MAX_SESSIONS_PER_ADDRESS: usize = 8;
pub const MAX_SESSIONS_PER_CLIENT: usize = 64;
pub const CHALLENGE_TTL: Duration = Duration::from_secs(300);
pub const SESSION_TTL: Duration = Duration::from_secs(3600);
pub const MAX_GRANTEES: usize = 100;

/// The bounds on sign-in state (the constants above by default).
#[derive(Clone, Copy, Debug)]
pub struct AuthLimits {
    pub challenges: usize,
    pub challenges_per_client: usize,
    pub sessions: usize,
    pub sessions_per_address: usize,
    pub sessions_per_client: usize,
}

impl Default for AuthLimits {
    fn default() -> Self {
        AuthLimits {
            challenges: MAX_CHALLENGES,
            challenges_per_client: MAX_CHALLENGES_PER_CLIENT,
            sessions: MAX_SESSIONS,
            sessions_per_address: MAX_SESSIONS_PER_ADDRESS,
            sessions_per_client: MAX_SESSIONS_PER_CLIENT,
        }
    }
}

/// An open challenge or a session: whose, asked for by which client, since when.
#[derive(Clone, Copy, Debug)]
struct Issued {
    address: Address,
    client: IpAddr,
    at: Instant,
}

impl Issued {
    fn now(address: Address, client: IpAddr) -> Issued {
        Issued {
            address,
            client,
            at: Instant::now(),
        }
    }
}

/// Challenges, sessions and grants of this node.
pub struct Auth {
    limits: AuthLimits,
    challenges: Mutex<HashMap<[u8; 32], Issued>>,
    sessions: Mutex<HashMap<String, Issued>>,
    grants: Mutex<BTreeMap<Address, BTreeSet<Address>>>,
    grants_file: Option<PathBuf>,
}

/// Why sign-in state was not issued.
#[derive(Debug, PartialEq, Eq)]
enum Refused {
    /// The node holds as many as it may: nobody's is evicted, try again later.
    Busy,
}

/// The key of the oldest of `map`'s entries that `which` selects.
fn oldest<K: Clone>(map: &HashMap<K, Issued>, which: impl Fn(&Issued) -> bool) -> Option<K> {
    map.iter()
        .filter(|(_, i)| which(i))
        .min_by_key(|(_, i)| i.at)
        .map(|(k, _)| k.clone())
}

/// Inserts `issued` under `key` within the bounds: the client's (and the account's, where given)
/// own oldest goes first; when the whole table is full, nothing is evicted and the insert refused.
fn issue<K: Clone + std::hash::Hash + Eq>(
    map: &mut HashMap<K, Issued>,
    key: K,
    issued: Issued,
    ttl: Duration,
    total: usize,
    per_client: usize,
    per_address: Option<usize>,
) -> Result<(), Refused> {
    map.retain(|_, i| i.at.elapsed() < ttl);
    if let Some(max) = per_address {
        if map.values().filter(|i| i.address == issued.address).count() >= max {
            if let Some(k) = oldest(map, |i| i.address == issued.address) {
                map.remove(&k);
            }
        }
    }
    if map.values().filter(|i| i.client == issued.client).count() >= per_client {
        if let Some(k) = oldest(map, |i| i.client == issued.client) {
            map.remove(&k);
        }
    }
    if map.len() >= total {
        return Err(Refused::Busy);
    }
    map.insert(key, issued);
    Ok(())
}

fn busy(what: &str) -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "busy",
        format!("this node holds as many {what} as it may; try again in a few minutes"),
    )
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
            limits: AuthLimits::default(),
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

    /// The same, with other bounds (tests).
    pub fn with_limits(mut self, limits: AuthLimits) -> Auth {
        self.limits = limits;
        self
    }

    /// Opens a challenge for `address`, asked for by `client`.
    fn open_challenge(
        &self,
        challenge: [u8; 32],
        address: Address,
        client: IpAddr,
    ) -> Result<(), Refused> {
        let mut open = self.challenges.lock().expect("challenges lock");
        let l = self.limits;
        issue(
            &mut open,
            challenge,
            Issued::now(address, client),
            CHALLENGE_TTL,
            l.challenges,
            l.challenges_per_client,
            None,
        )
    }

    /// Opens a session for `address` (its key signed the challenge), asked for by `client`.
    fn open_session(&self, token: String, address: Address, client: IpAddr) -> Result<(), Refused> {
        let mut sessions = self.sessions.lock().expect("sessions lock");
        let l = self.limits;
        issue(
            &mut sessions,
            token,
            Issued::now(address, client),
            SESSION_TTL,
            l.sessions,
            l.sessions_per_client,
            Some(l.sessions_per_address),
        )
    }

    /// The account a bearer token signs in, if the token is valid.
    pub(crate) fn session(&self, headers: &HeaderMap) -> Result<Address, ApiError> {
        let unauthorized =
            |m: &str| ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", m.to_string());
        let token = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| unauthorized("sign in: POST /v1/auth/challenge, then /v1/auth/session, and send Authorization: Bearer <token>"))?;
        let mut sessions = self.sessions.lock().expect("sessions lock");
        match sessions.get(token) {
            Some(i) if i.at.elapsed() < SESSION_TTL => Ok(i.address),
            Some(_) => {
                sessions.remove(token);
                Err(unauthorized("the session has expired: sign in again"))
            }
            None => Err(unauthorized("unknown session token: sign in again")),
        }
    }

    /// Who asks, for the endpoints anyone may call: a valid session's account and the owners
    /// who granted it their data; nobody in particular without one (a missing, expired or unknown
    /// token reads as the public: public views never fail for a stale session).
    pub(crate) fn viewer(&self, headers: &HeaderMap) -> Viewer {
        let Ok(reader) = self.session(headers) else {
            return Viewer::default();
        };
        let mut accounts: BTreeSet<Address> = self
            .grants
            .lock()
            .expect("grants lock")
            .iter()
            .filter(|(_, grantees)| grantees.contains(&reader))
            .map(|(owner, _)| *owner)
            .collect();
        accounts.insert(reader);
        Viewer { accounts }
    }

    /// The signed-in reader, who must be `owner` or one `owner` granted its data.
    pub(crate) fn reader_of(
        &self,
        headers: &HeaderMap,
        owner: &Address,
    ) -> Result<Address, ApiError> {
        let reader = self.session(headers)?;
        if !self.may_read(&reader, owner) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "this member's data is for the member and whom the member grants it",
            ));
        }
        Ok(reader)
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

/// Whose per-member data a request may see: the signed-in account and the owners who granted it
/// theirs (empty for the public). See the privacy section of ARCHITECTURE.md.
#[derive(Clone, Debug, Default)]
pub(crate) struct Viewer {
    accounts: BTreeSet<Address>,
}

impl Viewer {
    /// Whether the request may see `owner`'s energy.
    pub(crate) fn sees(&self, owner: &Address) -> bool {
        self.accounts.contains(owner)
    }

    /// As [`Viewer::sees`], for an address as the views print it.
    pub(crate) fn sees_text(&self, owner: &str) -> bool {
        owner.parse::<Address>().is_ok_and(|a| self.sees(&a))
    }
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

/// A sign-in challenge for an account.
#[utoipa::path(post, path = "/v1/auth/challenge", request_body = ChallengeRequest,
    responses((status = 200, body = ChallengeResponse), (status = 400, body = crate::api::ErrorBody),
              (status = 503, body = crate::api::ErrorBody, description = "the node holds as many challenges as it may")))]
pub async fn post_challenge(
    State(s): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Json(req): Json<ChallengeRequest>,
) -> ApiResult<ChallengeResponse> {
    let address = parse_address(&req.address, "address")?;
    let challenge: [u8; 32] = rand::random();
    s.auth
        .open_challenge(challenge, address, peer.ip())
        .map_err(|Refused::Busy| busy("open sign-in challenges"))?;
    let chain_id = s.chain.read().expect("chain lock").chain_id().to_string();
    Ok(Json(ChallengeResponse {
        challenge: hex::encode(challenge),
        message: hex::encode(auth_message(&chain_id, &address, &challenge)),
        expires_in_s: CHALLENGE_TTL.as_secs(),
    }))
}

/// Signs in with a signed challenge; the token reads the account's home (and those granted).
#[utoipa::path(post, path = "/v1/auth/session", request_body = SessionRequest,
    responses((status = 200, body = SessionResponse), (status = 400, body = crate::api::ErrorBody),
              (status = 401, body = crate::api::ErrorBody),
              (status = 503, body = crate::api::ErrorBody, description = "the node holds as many sessions as it may")))]
pub async fn post_session(
    State(s): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
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
    // A challenge is used once, by the account it was made for, before it expires; a request
    // that names another account or carries a bad signature uses up nothing.
    let unknown = || {
        bad(
            "bad_challenge",
            "unknown, used or expired challenge for this address: ask for a new one",
        )
    };
    let open = s
        .auth
        .challenges
        .lock()
        .expect("challenges lock")
        .get(&challenge)
        .copied();
    match open {
        Some(i) if i.address == address && i.at.elapsed() < CHALLENGE_TTL => {}
        _ => return Err(unknown()),
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
    // Signed: use the challenge up (unless a concurrent request just did).
    let used = s
        .auth
        .challenges
        .lock()
        .expect("challenges lock")
        .remove(&challenge);
    if used.is_none() {
        return Err(unknown());
    }
    let token = hex::encode(rand::random::<[u8; 32]>());
    s.auth
        .open_session(token.clone(), address, peer.ip())
        .map_err(|Refused::Busy| busy("sessions"))?;
    Ok(Json(SessionResponse {
        token,
        address: address.to_string(),
        expires_in_s: SESSION_TTL.as_secs(),
    }))
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
    params(("address" = String, Path, description = "the home owner's account, 64 hex characters")),
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
    params(("address" = String, Path, description = "the home owner's account, 64 hex characters"),
        ("grantee" = String, Path, description = "the account given or denied access, 64 hex characters")),
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
    params(("address" = String, Path, description = "the home owner's account, 64 hex characters"),
        ("grantee" = String, Path, description = "the account given or denied access, 64 hex characters")),
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

/// A home's energy and money flows, savings, devices and rewards: for its owner and whom the
/// owner granted it (a session token from `/v1/auth/session`).
#[utoipa::path(get, path = "/v1/homes/{address}", params(("address" = String, Path, description = "the home owner's account, 64 hex characters"), HomeQuery),
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
#[utoipa::path(get, path = "/v1/homes/{address}/flows.svg", params(("address" = String, Path, description = "the home owner's account, 64 hex characters"), HomeQuery),
    responses((status = 200, content_type = "image/svg+xml", body = String),
              (status = 400, body = crate::api::ErrorBody), (status = 401, body = crate::api::ErrorBody),
              (status = 403, body = crate::api::ErrorBody)))]
pub async fn get_home_chart(
    state: State<Arc<Shared>>,
    path: Path<String>,
    query: Query<HomeQuery>,
    headers: HeaderMap,
) -> Result<axum::response::Response, ApiError> {
    use gridmesh_charts::{line_chart, Line, PALETTE};
    let Json(view) = get_home(state, path, query, headers).await?;
    let series = |f: &dyn Fn(&HomeSlot) -> &String| per_slot(&view, |r| kwh(f(r)));
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

/// A home view's slots as chart points: hours before the current slot, and `f` of the slot.
fn per_slot(view: &HomeView, f: impl Fn(&HomeSlot) -> f64) -> Vec<(f64, f64)> {
    view.slots
        .iter()
        .map(|r| (-((view.last_slot - r.slot) as f64) / 4.0, f(r)))
        .collect()
}

/// A decimal kWh of the API as a number (0 where it is not one).
fn kwh(v: &str) -> f64 {
    v.parse().unwrap_or(0.0)
}

/// A home's plan against what happened, SVG: per slot, the exchange with the grid its orders
/// planned (bought less sold ordered) and the one its meter measured (imported less exported)
/// (owner or grantee, like the home view).
#[utoipa::path(get, path = "/v1/homes/{address}/plan.svg", params(("address" = String, Path, description = "the home owner's account, 64 hex characters"), HomeQuery),
    responses((status = 200, content_type = "image/svg+xml", body = String),
              (status = 400, body = crate::api::ErrorBody), (status = 401, body = crate::api::ErrorBody),
              (status = 403, body = crate::api::ErrorBody)))]
pub async fn get_plan_chart(
    state: State<Arc<Shared>>,
    path: Path<String>,
    query: Query<HomeQuery>,
    headers: HeaderMap,
) -> Result<axum::response::Response, ApiError> {
    use gridmesh_charts::{line_chart, Line, PALETTE};
    let Json(view) = get_home(state, path, query, headers).await?;
    let series = |f: &dyn Fn(&HomeSlot) -> f64| per_slot(&view, f);
    let svg = line_chart(
        "My home's plan and what happened: grid exchange per 15 minutes (+ import)",
        "hours before the current slot (h)",
        "energy (kWh)",
        &[
            Line {
                name: "planned (ordered)",
                color: PALETTE[2],
                points: series(&|r| kwh(&r.ordered_buy_kwh) - kwh(&r.ordered_sell_kwh)),
            },
            Line {
                name: "metered",
                color: PALETTE[0],
                points: series(&|r| kwh(&r.import_kwh) - kwh(&r.export_kwh)),
            },
        ],
    );
    Ok(crate::api_dashboard::svg(svg))
}

/// A home's money per hour as stacked bars, SVG: spent (utility, neighbours) above the axis,
/// earned (feed-in credit, neighbours) below (owner or grantee, like the home view).
#[utoipa::path(get, path = "/v1/homes/{address}/money.svg", params(("address" = String, Path, description = "the home owner's account, 64 hex characters"), HomeQuery),
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
    use gridmesh_charts::plotters::prelude::*;
    use gridmesh_charts::PALETTE;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn at(address: u8, client: u8) -> Issued {
        Issued::now(Address([address; 32]), IpAddr::from([127, 0, 0, client]))
    }

    /// A flooding client replaces only its own; a full table refuses and evicts nobody.
    #[test]
    fn a_flood_evicts_only_the_flooders_own() {
        let ttl = Duration::from_secs(60);
        let mut map: HashMap<u32, Issued> = HashMap::new();
        issue(&mut map, 0, at(1, 1), ttl, 10, 3, None).unwrap();
        for k in 1..100 {
            std::thread::sleep(Duration::from_micros(10));
            issue(&mut map, k, at(2, 2), ttl, 10, 3, None).unwrap();
        }
        assert!(map.contains_key(&0), "the member's entry survives");
        assert_eq!(
            map.values().filter(|i| i.client == at(2, 2).client).count(),
            3
        );
        assert!(
            map.contains_key(&99) && !map.contains_key(&96),
            "the flooder's newest stay"
        );
        // Full: refused, and nothing evicted.
        for c in 3..9 {
            issue(&mut map, 100 + u32::from(c), at(c, c), ttl, 10, 3, None).unwrap();
        }
        assert_eq!(map.len(), 10);
        assert_eq!(
            issue(&mut map, 200, at(9, 9), ttl, 10, 3, None),
            Err(Refused::Busy)
        );
        assert_eq!(map.len(), 10);
        assert!(map.contains_key(&0));
    }

    /// An account's sessions beyond its bound replace its own oldest, not anyone else's.
    #[test]
    fn sessions_are_bounded_per_account() {
        let ttl = Duration::from_secs(60);
        let mut map: HashMap<u32, Issued> = HashMap::new();
        issue(&mut map, 0, at(1, 1), ttl, 100, 50, Some(2)).unwrap();
        for k in 1..20 {
            std::thread::sleep(Duration::from_micros(10));
            issue(&mut map, k, at(2, 1), ttl, 100, 50, Some(2)).unwrap();
        }
        assert!(map.contains_key(&0));
        assert_eq!(map.len(), 3);
    }
}
