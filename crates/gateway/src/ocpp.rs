//! An OCPP central system for EV chargers: JSON over WebSocket (`ws://HOST:PORT/ocpp/{id}`), in
//! 1.6J (subprotocol `ocpp1.6`) and 2.0.1 (`ocpp2.0.1`, [`v201`]), whichever the charger offers
//! (2.0.1 first; a charger that names no subprotocol is taken as 1.6J, one that names only others
//! is closed at once).
//!
//! In 1.6J, from the charge point: BootNotification, Heartbeat, StatusNotification, Authorize,
//! StartTransaction, StopTransaction and MeterValues are answered; the energy register of every
//! meter value (and of a transaction's start and stop) becomes a sample signed with the charger's
//! device key. Toward the charge point, after it booted: GetConfiguration of the smart-charging keys
//! first (which rate unit, how many periods, how deep a stack it takes), then the site's limit as a
//! `ChargePointMaxProfile` on connector 0 and our charging plan as a `TxDefaultProfile` on
//! connector 1, both standard profiles fitted to what the charger said it supports; when a
//! transaction stops, the plan is cleared (ClearChargingProfile). The limit in force in each
//! interval is the lower of the site's and the charger's profile ([`composite`]).
//!
//! A controller (the home's loop) drives a charger while it runs: [`CentralSystem::charger`]
//! tells what the charger last said (connector status, transaction, energy register, power, its
//! smart-charging keys), [`CentralSystem::set_plan`] replaces the `TxDefaultProfile` with a new
//! plan, and [`CentralSystem::remote_start`] / [`CentralSystem::remote_stop`] switch charging
//! where a charger answers SmartCharging `NotSupported`. The same calls drive a 2.0.1 charger
//! with its own messages: the controller does not need to know which version a charger speaks.

pub mod v201;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, StreamExt};
use gridmesh_ledger::crypto::Keypair;
use gridmesh_ledger::telemetry::RawSample;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::sync::{mpsc, oneshot, Notify};

/// Largest OCPP message accepted.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;
/// How long a charge point has to answer one of our calls.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// The smart-charging configuration keys read before any profile is sent.
pub const SMART_CHARGING_KEYS: [&str; 4] = [
    "ChargeProfileMaxStackLevel",
    "ChargingScheduleAllowedChargingRateUnit",
    "ChargingScheduleMaxPeriods",
    "MaxChargingProfilesInstalled",
];

/// The OCPP version a charger speaks, from the WebSocket subprotocol it was accepted on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Version {
    #[serde(rename = "1.6")]
    V16,
    #[serde(rename = "2.0.1")]
    V201,
}

impl Version {
    /// The subprotocols we accept, most preferred first.
    pub const SUBPROTOCOLS: [&'static str; 2] = ["ocpp2.0.1", "ocpp1.6"];

    pub fn from_subprotocol(p: &str) -> Option<Version> {
        match p {
            "ocpp1.6" => Some(Version::V16),
            "ocpp2.0.1" => Some(Version::V201),
            _ => None,
        }
    }
}

/// Where signed samples go (an MQTT publisher in the node's setup).
pub trait SampleSink: Send + Sync {
    fn publish(&self, sample: RawSample);
}

/// One step of a charging plan: from `start_s` after the plan starts, at most `limit_w`.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct PlanStep {
    pub start_s: u32,
    pub limit_w: f64,
}

#[derive(Clone)]
pub struct OcppConfig {
    /// Charge point id → the charger's device key (registered on the ledger).
    pub chargers: HashMap<String, Keypair>,
    /// Accepted id tags; empty: every tag (a home's own charger on the home's own network).
    pub id_tags: Vec<String>,
    pub chain_id: String,
    /// The site's limit for the charger (connector 0), watts.
    pub site_limit_w: Option<f64>,
    /// Our plan for connector 1.
    pub plan: Vec<PlanStep>,
    /// For converting watts to amperes when a charger takes current only.
    pub volts: f64,
    pub phases: u8,
}

/// What a charger said about smart charging.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct SmartChargingConfig {
    pub max_stack_level: u32,
    /// "Current", "Power" or both ("Current,Power").
    pub allowed_units: Vec<String>,
    pub max_periods: usize,
    pub max_profiles: u32,
}

impl SmartChargingConfig {
    /// From a GetConfiguration answer; absent keys take the standard's most cautious reading.
    pub fn from_response(v: &Value) -> SmartChargingConfig {
        let mut c = SmartChargingConfig {
            max_stack_level: 0,
            allowed_units: vec!["Current".into()],
            max_periods: 1,
            max_profiles: 1,
        };
        for k in v["configurationKey"].as_array().into_iter().flatten() {
            let value = k["value"].as_str().unwrap_or("");
            match k["key"].as_str().unwrap_or("") {
                "ChargeProfileMaxStackLevel" => c.max_stack_level = value.parse().unwrap_or(0),
                "ChargingScheduleAllowedChargingRateUnit" => {
                    c.allowed_units = value
                        .split(',')
                        .map(|s| s.trim().to_string())
                        .filter(|s| !s.is_empty())
                        .collect()
                }
                "ChargingScheduleMaxPeriods" => c.max_periods = value.parse().unwrap_or(1),
                "MaxChargingProfilesInstalled" => c.max_profiles = value.parse().unwrap_or(1),
                _ => {}
            }
        }
        c.max_periods = c.max_periods.max(1);
        c
    }

    fn takes_power(&self) -> bool {
        self.allowed_units.iter().any(|u| u == "Power")
    }
}

/// What a charger last told the central system.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct ChargerState {
    pub connected: bool,
    /// The version it speaks (while connected, and after).
    pub version: Option<Version>,
    /// Boot notifications so far: a new one means the charger may have lost its profiles.
    pub boots: u64,
    /// Connector 1's last status: 1.6J's (`Available`, `Preparing`, `Charging`, `SuspendedEV`,
    /// ...) or 2.0.1's (`Available`, `Occupied`, `Reserved`, `Unavailable`, `Faulted`).
    pub status: Option<String>,
    /// The transaction running: 1.6J's number (ours) or 2.0.1's id (the charger's).
    pub transaction: Option<String>,
    /// 2.0.1: the charging state of the transaction (`Charging`, `EVConnected`, `SuspendedEV`,
    /// `SuspendedEVSE`, `Idle`).
    pub charging_state: Option<String>,
    /// The energy register of the last meter value, start or stop, mWh.
    pub register_mwh: Option<u64>,
    /// The power of the last meter value, W (0 when a transaction stops).
    pub power_w: Option<f64>,
    /// Its smart-charging keys, read after each boot.
    pub smart_charging: Option<SmartChargingConfig>,
    /// Whether it takes charging profiles: unknown until one was sent; `false` once it answered
    /// `NotSupported` or rejected one.
    pub takes_profiles: Option<bool>,
}

impl ChargerState {
    /// A vehicle is plugged in: the connector is occupied or a transaction runs.
    pub fn plugged(&self) -> bool {
        self.transaction.is_some()
            || matches!(
                self.status.as_deref(),
                Some(
                    "Preparing"
                        | "Charging"
                        | "SuspendedEV"
                        | "SuspendedEVSE"
                        | "Finishing"
                        | "Occupied"
                )
            )
    }
}

/// How a charger answered a charging profile.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum ProfileAnswer {
    Accepted,
    Rejected,
    NotSupported,
}

/// A schedule in the unit a charger takes: (start second, limit) steps.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Schedule {
    /// "W" or "A".
    pub unit: &'static str,
    pub periods: Vec<(u32, f64)>,
}

/// Fits a plan to a charger: at most `max_periods` steps (the last ones merged at their lowest
/// limit, so the schedule never allows more than the plan), in watts if it takes power, else in
/// amperes per phase at `volts` and `phases`.
pub fn fit_plan(plan: &[PlanStep], c: &SmartChargingConfig, volts: f64, phases: u8) -> Schedule {
    let mut steps: Vec<(u32, f64)> = plan.iter().map(|p| (p.start_s, p.limit_w)).collect();
    if steps.len() > c.max_periods {
        let tail_min = steps[c.max_periods - 1..]
            .iter()
            .map(|s| s.1)
            .fold(f64::INFINITY, f64::min);
        steps.truncate(c.max_periods);
        steps[c.max_periods - 1].1 = tail_min;
    }
    if c.takes_power() {
        // Whole watts: OCPP's limits are multiples of 0.1, and a fraction of a watt matters to
        // nobody.
        Schedule {
            unit: "W",
            periods: steps.into_iter().map(|(s, w)| (s, w.floor())).collect(),
        }
    } else {
        let per_amp = volts * f64::from(phases.max(1));
        Schedule {
            unit: "A",
            periods: steps
                .into_iter()
                .map(|(s, w)| (s, (w / per_amp * 10.0).floor() / 10.0))
                .collect(),
        }
    }
}

/// The limit in force at `t_s` under a schedule (its last period at or before `t_s`).
pub fn limit_at(s: &Schedule, t_s: u32) -> Option<f64> {
    s.periods
        .iter()
        .rev()
        .find(|(start, _)| *start <= t_s)
        .map(|p| p.1)
}

/// The composite schedule of a site's and a charger's profiles (same unit): at every breakpoint
/// of either, the lower of the two limits in force.
pub fn composite(site: &Schedule, charger: &Schedule) -> Schedule {
    let mut starts: Vec<u32> = site
        .periods
        .iter()
        .chain(&charger.periods)
        .map(|p| p.0)
        .collect();
    starts.sort_unstable();
    starts.dedup();
    let mut periods: Vec<(u32, f64)> = Vec::new();
    for t in starts {
        let l = match (limit_at(site, t), limit_at(charger, t)) {
            (Some(a), Some(b)) => a.min(b),
            (Some(a), None) | (None, Some(a)) => a,
            (None, None) => continue,
        };
        if periods.last().is_none_or(|p| p.1 != l) {
            periods.push((t, l));
        }
    }
    Schedule {
        unit: charger.unit,
        periods,
    }
}

fn profile_json(id: u32, stack: u32, purpose: &str, s: &Schedule, start: &str) -> Value {
    json!({
        "chargingProfileId": id,
        "stackLevel": stack,
        "chargingProfilePurpose": purpose,
        "chargingProfileKind": "Absolute",
        "chargingSchedule": {
            "startSchedule": start,
            "chargingRateUnit": s.unit,
            "chargingSchedulePeriod": s.periods.iter()
                .map(|(t, l)| json!({"startPeriod": t, "limit": l}))
                .collect::<Vec<_>>(),
        },
    })
}

/// RFC 3339 (UTC, milliseconds) of Unix milliseconds.
pub fn rfc3339_ms(ms: u64) -> String {
    humantime::format_rfc3339_millis(SystemTime::UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

/// Our plan's id and purpose on connector 1.
const PLAN_PROFILE_ID: u32 = 2;

/// Parses a decimal meter value in `unit` (Wh or kWh) into mWh, exactly.
pub fn energy_mwh(value: &str, unit: &str) -> Option<u64> {
    let scale: u32 = match unit {
        "Wh" | "" => 3,
        "kWh" => 6,
        _ => return None,
    };
    gridmesh_types::parse_fixed(value.trim(), scale)
        .ok()
        .and_then(|v| u64::try_from(v).ok())
}

/// Parses an OCPP timestamp (RFC 3339, UTC) into Unix milliseconds.
pub fn timestamp_ms(s: &str) -> Option<u64> {
    gridmesh_types::units::parse_rfc3339_ms(s)
}

pub(crate) fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

/// The central system's shared state.
pub struct CentralSystem {
    cfg: OcppConfig,
    sink: Arc<dyn SampleSink>,
    next_tx: AtomicU64,
    /// Everything that happened, in order (the CLI prints it; tests read it).
    pub events: Mutex<Vec<Value>>,
    /// Transactions stopped so far.
    pub stopped: AtomicU64,
    /// Each charger's last register sent, mWh.
    registers: Mutex<HashMap<String, u64>>,
    /// What each charger last said, and the connection to each one online.
    states: Mutex<HashMap<String, ChargerState>>,
    links: Mutex<HashMap<String, Link>>,
    pub changed: Notify,
}

impl CentralSystem {
    pub fn new(cfg: OcppConfig, sink: Arc<dyn SampleSink>) -> Arc<CentralSystem> {
        Arc::new(CentralSystem {
            cfg,
            sink,
            next_tx: AtomicU64::new(1),
            events: Mutex::new(Vec::new()),
            stopped: AtomicU64::new(0),
            registers: Mutex::new(HashMap::new()),
            states: Mutex::new(HashMap::new()),
            links: Mutex::new(HashMap::new()),
            changed: Notify::new(),
        })
    }

    /// What charger `cp` last said (all default if it never connected).
    pub fn charger(&self, cp: &str) -> ChargerState {
        self.states
            .lock()
            .expect("states lock")
            .get(cp)
            .cloned()
            .unwrap_or_default()
    }

    fn update(&self, cp: &str, f: impl FnOnce(&mut ChargerState)) {
        f(self
            .states
            .lock()
            .expect("states lock")
            .entry(cp.to_string())
            .or_default());
    }

    fn link(&self, cp: &str) -> Result<Link, String> {
        self.links
            .lock()
            .expect("links lock")
            .get(cp)
            .cloned()
            .ok_or_else(|| format!("charge point {cp:?} is not connected"))
    }

    /// Replaces our plan on charger `cp`'s connector (evse) 1: a `TxDefaultProfile` starting at
    /// `start_ms` (Unix ms, the plan's clock), valid until `valid_to_ms` (after which the charger
    /// returns to its own default), fitted to the charger's smart-charging keys. A charger that
    /// answers `NotSupported` (as a call error or a status) or rejects the profile is marked as
    /// not taking profiles.
    pub async fn set_plan(
        &self,
        cp: &str,
        plan: &[PlanStep],
        start_ms: u64,
        valid_to_ms: u64,
    ) -> Result<ProfileAnswer, String> {
        let link = self.link(cp)?;
        let conf = self
            .charger(cp)
            .smart_charging
            .ok_or_else(|| format!("charge point {cp:?} has not told its smart-charging keys"))?;
        let schedule = fit_plan(plan, &conf, self.cfg.volts, self.cfg.phases);
        let (start, valid_to) = (rfc3339_ms(start_ms), rfc3339_ms(valid_to_ms));
        let duration_s = valid_to_ms.saturating_sub(start_ms).div_ceil(1_000);
        let stack = conf.max_stack_level.min(1);
        let request = match link.version {
            Version::V16 => {
                let mut profile = profile_json(
                    PLAN_PROFILE_ID,
                    stack,
                    "TxDefaultProfile",
                    &schedule,
                    &start,
                );
                profile["validFrom"] = json!(start);
                profile["validTo"] = json!(valid_to);
                profile["chargingSchedule"]["duration"] = json!(duration_s);
                json!({"connectorId": 1, "csChargingProfiles": profile})
            }
            Version::V201 => {
                v201::set_plan_request(&schedule, stack, &start, &valid_to, duration_s)
            }
        };
        let r = link.call("SetChargingProfile", request).await;
        let answer = match &r {
            Ok(v) => match v["status"].as_str() {
                Some("Accepted") => ProfileAnswer::Accepted,
                Some("NotSupported") => ProfileAnswer::NotSupported,
                _ => ProfileAnswer::Rejected,
            },
            Err(e) if e.contains("NotSupported") || e.contains("NotImplemented") => {
                ProfileAnswer::NotSupported
            }
            Err(e) => return Err(e.clone()),
        };
        self.update(cp, |s| {
            s.takes_profiles = Some(answer == ProfileAnswer::Accepted);
        });
        self.log(json!({"event": "plan", "charge_point": cp,
            "schedule": schedule, "valid_to": valid_to, "answer": answer}));
        Ok(answer)
    }

    /// Asks charger `cp` to start charging on connector 1 for `id_tag`; true if it accepted.
    pub async fn remote_start(&self, cp: &str, id_tag: &str) -> Result<bool, String> {
        let link = self.link(cp)?;
        let r = match link.version {
            Version::V16 => {
                link.call(
                    "RemoteStartTransaction",
                    json!({"connectorId": 1, "idTag": id_tag}),
                )
                .await?
            }
            Version::V201 => {
                let id = self.next_tx.fetch_add(1, Ordering::Relaxed);
                link.call("RequestStartTransaction", v201::request_start(id_tag, id))
                    .await?
            }
        };
        let ok = r["status"] == "Accepted";
        self.log(json!({"event": "remote_start", "charge_point": cp, "accepted": ok}));
        Ok(ok)
    }

    /// Asks charger `cp` to stop its transaction; true if it accepted (false without one).
    pub async fn remote_stop(&self, cp: &str) -> Result<bool, String> {
        let Some(tx) = self.charger(cp).transaction else {
            return Ok(false);
        };
        let link = self.link(cp)?;
        let r = match link.version {
            // Our own numbers, so they parse.
            Version::V16 => {
                let tx: u64 = tx
                    .parse()
                    .map_err(|_| format!("transaction {tx:?} is not a 1.6J transaction"))?;
                link.call("RemoteStopTransaction", json!({"transactionId": tx}))
                    .await?
            }
            Version::V201 => {
                link.call("RequestStopTransaction", json!({"transactionId": tx}))
                    .await?
            }
        };
        let ok = r["status"] == "Accepted";
        self.log(json!({"event": "remote_stop", "charge_point": cp, "accepted": ok}));
        Ok(ok)
    }

    fn log(&self, v: Value) {
        tracing::info!(event = %v, "ocpp");
        self.events.lock().expect("events lock").push(v);
        self.changed.notify_waiters();
    }

    /// The router: `GET /ocpp/{id}` upgrades known charge points to OCPP 2.0.1 or 1.6J.
    pub fn router(self: &Arc<Self>) -> axum::Router {
        axum::Router::new()
            .route("/ocpp/{id}", axum::routing::get(upgrade))
            .with_state(self.clone())
    }

    fn sample(&self, cp: &str, time_ms: u64, in_register_mwh: u64, power_w: i32) {
        // meterStart/meterStop come in whole Wh, meter values often finer: a register up to
        // 1 Wh below the last one is the same reading truncated, not a fall.
        let in_register_mwh = {
            let mut last = self.registers.lock().expect("registers lock");
            let l = last.entry(cp.to_string()).or_insert(0);
            let r = if in_register_mwh < *l && *l - in_register_mwh < 1_000 {
                *l
            } else {
                in_register_mwh
            };
            *l = r;
            r
        };
        self.update(cp, |s| {
            s.register_mwh = Some(in_register_mwh);
            s.power_w = Some(f64::from(power_w));
        });
        if let Some(key) = self.cfg.chargers.get(cp) {
            self.sink.publish(RawSample::signed(
                key,
                &self.cfg.chain_id,
                time_ms,
                time_ms,
                0,
                in_register_mwh,
                -power_w,
            ));
        }
    }
}

async fn upgrade(
    Path(id): Path<String>,
    State(cs): State<Arc<CentralSystem>>,
    headers: axum::http::HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    if !cs.cfg.chargers.contains_key(&id) {
        return (
            axum::http::StatusCode::NOT_FOUND,
            format!("unknown charge point {id:?}"),
        )
            .into_response();
    }
    let offered = headers.contains_key(axum::http::header::SEC_WEBSOCKET_PROTOCOL);
    let ws = ws.protocols(Version::SUBPROTOCOLS);
    let version = match ws.selected_protocol().and_then(|p| p.to_str().ok()) {
        Some(p) => Version::from_subprotocol(p),
        // A charger that names no subprotocol is an old 1.6J one.
        None if !offered => Some(Version::V16),
        None => None,
    };
    ws.max_message_size(MAX_MESSAGE_BYTES)
        .on_upgrade(move |socket| async move {
            match version {
                Some(v) => session(cs, id, v, socket).await,
                // OCPP-J: no subprotocol agreed, so the handshake completes without one and the
                // connection is closed at once.
                None => {
                    cs.log(json!({"event": "unsupported_protocol", "charge_point": id,
                        "accepted": Version::SUBPROTOCOLS}));
                    let mut socket = socket;
                    let _ = socket.send(Message::Close(None)).await;
                }
            }
        })
}

type Pending = Arc<Mutex<HashMap<String, oneshot::Sender<Result<Value, String>>>>>;

/// One charge point's connection, as our calls to it need it.
#[derive(Clone)]
struct Link {
    cs: Arc<CentralSystem>,
    cp: String,
    version: Version,
    out: mpsc::Sender<Message>,
    pending: Pending,
    seq: Arc<AtomicU64>,
}

impl Link {
    /// Sends a CALL to the charge point and waits for its result.
    async fn call(&self, action: &str, payload: Value) -> Result<Value, String> {
        let id = format!("cs-{}", self.seq.fetch_add(1, Ordering::Relaxed));
        let (tx, rx) = oneshot::channel();
        self.pending
            .lock()
            .expect("pending lock")
            .insert(id.clone(), tx);
        let frame = json!([2, id, action, payload]).to_string();
        self.out
            .send(Message::Text(frame.into()))
            .await
            .map_err(|_| "the charge point disconnected".to_string())?;
        match tokio::time::timeout(CALL_TIMEOUT, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err("the charge point disconnected".into()),
            Err(_) => {
                self.pending.lock().expect("pending lock").remove(&id);
                Err(format!("no answer to {action} within {CALL_TIMEOUT:?}"))
            }
        }
    }

    /// Clears our plan from the charger once a transaction stops, and counts the session.
    async fn clear_plan(&self) {
        if self.cs.charger(&self.cp).takes_profiles == Some(false) {
            // It holds no profile of ours: nothing to clear.
            self.cs
                .log(json!({"event": "plan_cleared", "charge_point": self.cp,
                "status": "NoProfile"}));
            self.cs.stopped.fetch_add(1, Ordering::SeqCst);
            self.cs.changed.notify_waiters();
            return;
        }
        let request = match self.version {
            Version::V16 => {
                json!({"id": PLAN_PROFILE_ID, "connectorId": 1, "chargingProfilePurpose": "TxDefaultProfile"})
            }
            Version::V201 => v201::clear_plan_request(),
        };
        let r = self.call("ClearChargingProfile", request).await;
        self.cs
            .log(json!({"event": "plan_cleared", "charge_point": self.cp,
            "status": r.map(|v| v["status"].clone()).unwrap_or_else(Value::String)}));
        self.cs.stopped.fetch_add(1, Ordering::SeqCst);
        self.cs.changed.notify_waiters();
    }
}

async fn session(cs: Arc<CentralSystem>, cp: String, version: Version, socket: WebSocket) {
    let (mut sink, mut stream) = socket.split();
    let (out, mut out_rx) = mpsc::channel::<Message>(64);
    let writer = tokio::spawn(async move {
        while let Some(m) = out_rx.recv().await {
            if sink.send(m).await.is_err() {
                break;
            }
        }
    });
    let pending: Pending = Default::default();
    let link = Link {
        cs: cs.clone(),
        cp: cp.clone(),
        version,
        out: out.clone(),
        pending: pending.clone(),
        seq: Arc::new(AtomicU64::new(1)),
    };
    cs.links
        .lock()
        .expect("links lock")
        .insert(cp.clone(), link.clone());
    cs.update(&cp, |s| {
        s.connected = true;
        s.version = Some(version);
    });
    cs.log(json!({"event": "connected", "charge_point": cp, "version": version}));
    while let Some(msg) = stream.next().await {
        let text = match msg {
            Ok(Message::Text(t)) => t.to_string(),
            Ok(Message::Close(_)) | Err(_) => break,
            Ok(_) => continue,
        };
        let frame: Value = match serde_json::from_str(&text) {
            Ok(v) => v,
            Err(e) => {
                cs.log(json!({"event": "malformed", "charge_point": cp, "error": e.to_string()}));
                continue;
            }
        };
        match frame[0].as_u64() {
            Some(2) => {
                let id = frame[1].as_str().unwrap_or("").to_string();
                let action = frame[2].as_str().unwrap_or("").to_string();
                let handled = match version {
                    Version::V16 => handle_call(&cs, &cp, &action, &frame[3]),
                    Version::V201 => v201::handle_call(&cs, &cp, &action, &frame[3]),
                };
                // The transaction ends: 1.6J's StopTransaction, 2.0.1's TransactionEvent Ended.
                let ended = handled.is_ok()
                    && (action == "StopTransaction"
                        || (action == "TransactionEvent" && frame[3]["eventType"] == "Ended"));
                let reply = match handled {
                    Ok(payload) => json!([3, id, payload]),
                    Err((code, why)) => json!([4, id, code, why, {}]),
                };
                if out
                    .send(Message::Text(reply.to_string().into()))
                    .await
                    .is_err()
                {
                    break;
                }
                if action == "BootNotification" {
                    let link = link.clone();
                    tokio::spawn(async move {
                        match link.version {
                            Version::V16 => smart_charging(&link).await,
                            Version::V201 => v201::smart_charging(&link).await,
                        }
                    });
                }
                if ended {
                    let link = link.clone();
                    tokio::spawn(async move { link.clear_plan().await });
                }
            }
            Some(3) | Some(4) => {
                let id = frame[1].as_str().unwrap_or("");
                if let Some(tx) = pending.lock().expect("pending lock").remove(id) {
                    let _ = tx.send(if frame[0] == 3 {
                        Ok(frame[2].clone())
                    } else {
                        Err(format!("{}: {}", frame[2], frame[3]))
                    });
                }
            }
            _ => cs.log(json!({"event": "malformed", "charge_point": cp, "frame": text})),
        }
    }
    cs.links.lock().expect("links lock").remove(&cp);
    cs.update(&cp, |s| s.connected = false);
    cs.log(json!({"event": "disconnected", "charge_point": cp}));
    drop(link);
    drop(out);
    let _ = writer.await;
}

/// Reads the charger's smart-charging configuration, then sends the site limit and our plan
/// fitted to it, and logs the composite limit.
async fn smart_charging(link: &Link) {
    let (cs, cp) = (&link.cs, link.cp.as_str());
    let conf = match link
        .call("GetConfiguration", json!({"key": SMART_CHARGING_KEYS}))
        .await
    {
        Ok(v) => SmartChargingConfig::from_response(&v),
        Err(e) => {
            cs.log(json!({"event": "configuration_failed", "charge_point": cp, "error": e}));
            return;
        }
    };
    cs.log(json!({"event": "configuration", "charge_point": cp, "smart_charging": conf}));
    cs.update(cp, |s| {
        s.smart_charging = Some(conf.clone());
        s.boots += 1;
    });
    send_site_and_plan(link, &conf).await;
}

/// After a boot: the site's limit (connector or evse 0) and our plan (1), fitted to `conf` and
/// written as the charger's version writes them, each answer logged (whether the charger takes
/// our plan is its answer to the plan); the composite limit of the two as we compute it.
async fn send_site_and_plan(link: &Link, conf: &SmartChargingConfig) -> Option<Schedule> {
    let (cs, cp) = (&link.cs, link.cp.as_str());
    let start = now_rfc3339();
    let (volts, phases) = (cs.cfg.volts, cs.cfg.phases);
    let site = cs.cfg.site_limit_w.map(|w| {
        let step = PlanStep {
            start_s: 0,
            limit_w: w,
        };
        fit_plan(&[step], conf, volts, phases)
    });
    let plan = (!cs.cfg.plan.is_empty()).then(|| fit_plan(&cs.cfg.plan, conf, volts, phases));
    let site_purpose = match link.version {
        Version::V16 => "ChargePointMaxProfile",
        Version::V201 => "ChargingStationMaxProfile",
    };
    let stack = conf.max_stack_level.min(1);
    let sends = [
        site.as_ref().map(|s| (0, 1, 0, site_purpose, s)),
        plan.as_ref()
            .map(|s| (1, PLAN_PROFILE_ID, stack, "TxDefaultProfile", s)),
    ];
    for (at, id, stack, purpose, s) in sends.into_iter().flatten() {
        let request = match link.version {
            Version::V16 => json!({"connectorId": at,
                "csChargingProfiles": profile_json(id, stack, purpose, s, &start)}),
            Version::V201 => json!({"evseId": at,
                "chargingProfile": v201::profile_json(id, stack, purpose, s, &start)}),
        };
        let r = link.call("SetChargingProfile", request).await;
        let status = r.map(|v| v["status"].clone()).unwrap_or_else(Value::String);
        if at == 1 {
            cs.update(cp, |st| st.takes_profiles = Some(status == "Accepted"));
        }
        cs.log(
            json!({"event": "profile", "charge_point": cp, "connector": at,
            "purpose": purpose, "schedule": s, "status": status}),
        );
    }
    let ours = match (site, plan) {
        (Some(site), Some(plan)) => Some(composite(&site, &plan)),
        (site, plan) => site.or(plan),
    };
    if let Some(o) = &ours {
        cs.log(json!({"event": "effective_limit", "charge_point": cp, "schedule": o}));
    }
    ours
}

/// An OCPP CALLERROR: its code and description.
pub(crate) type CallError = (&'static str, String);

/// A transaction's start or stop register (`meterStart`/`meterStop`, whole Wh) at its timestamp,
/// signed as a sample; returns the register.
fn register_sample(cs: &CentralSystem, cp: &str, p: &Value, field: &str) -> Result<u64, CallError> {
    let meter_wh = p[field]
        .as_u64()
        .ok_or_else(|| ("FormationViolation", format!("{field} missing")))?;
    let at = p["timestamp"]
        .as_str()
        .and_then(timestamp_ms)
        .ok_or_else(|| {
            (
                "FormationViolation",
                "timestamp missing or not RFC 3339".to_string(),
            )
        })?;
    cs.sample(cp, at, meter_wh * 1_000, 0);
    Ok(meter_wh)
}

fn handle_call(cs: &CentralSystem, cp: &str, action: &str, p: &Value) -> Result<Value, CallError> {
    let violation = |what: &str| ("FormationViolation", what.to_string());
    let tag_status = |tag: &str| {
        if cs.cfg.id_tags.is_empty() || cs.cfg.id_tags.iter().any(|t| t == tag) {
            "Accepted"
        } else {
            "Invalid"
        }
    };
    match action {
        "BootNotification" => {
            cs.log(json!({"event": "boot", "charge_point": cp,
                "vendor": p["chargePointVendor"], "model": p["chargePointModel"]}));
            Ok(json!({"status": "Accepted", "currentTime": now_rfc3339(), "interval": 300}))
        }
        "Heartbeat" => Ok(json!({"currentTime": now_rfc3339()})),
        "StatusNotification" => {
            if p["connectorId"] == 1 {
                if let Some(status) = p["status"].as_str() {
                    cs.update(cp, |s| s.status = Some(status.to_string()));
                }
            }
            cs.log(json!({"event": "status", "charge_point": cp,
                "connector": p["connectorId"], "status": p["status"], "error": p["errorCode"]}));
            Ok(json!({}))
        }
        "Authorize" => {
            let tag = p["idTag"]
                .as_str()
                .ok_or_else(|| violation("idTag missing"))?;
            Ok(json!({"idTagInfo": {"status": tag_status(tag)}}))
        }
        "StartTransaction" => {
            let tag = p["idTag"]
                .as_str()
                .ok_or_else(|| violation("idTag missing"))?;
            let meter_wh = register_sample(cs, cp, p, "meterStart")?;
            let tx = cs.next_tx.fetch_add(1, Ordering::Relaxed);
            cs.update(cp, |s| s.transaction = Some(tx.to_string()));
            cs.log(json!({"event": "transaction_started", "charge_point": cp,
                "transaction_id": tx, "meter_start_wh": meter_wh}));
            Ok(json!({"transactionId": tx, "idTagInfo": {"status": tag_status(tag)}}))
        }
        "StopTransaction" => {
            let meter_wh = register_sample(cs, cp, p, "meterStop")?;
            cs.update(cp, |s| {
                s.transaction = None;
                s.power_w = Some(0.0);
            });
            cs.log(json!({"event": "transaction_stopped", "charge_point": cp,
                "transaction_id": p["transactionId"], "meter_stop_wh": meter_wh}));
            Ok(json!({"idTagInfo": {"status": "Accepted"}}))
        }
        "MeterValues" => {
            // Parse all first: a message with one bad value changes nothing.
            let mut samples = Vec::new();
            for mv in p["meterValue"].as_array().into_iter().flatten() {
                let Some(at) = mv["timestamp"].as_str().and_then(timestamp_ms) else {
                    return Err(violation("meterValue timestamp missing or not RFC 3339"));
                };
                let (mut energy, mut power) = (None, 0i32);
                for sv in mv["sampledValue"].as_array().into_iter().flatten() {
                    let value = sv["value"].as_str().unwrap_or("");
                    let unit = sv["unit"].as_str().unwrap_or("Wh");
                    match sv["measurand"]
                        .as_str()
                        .unwrap_or("Energy.Active.Import.Register")
                    {
                        "Energy.Active.Import.Register" => {
                            energy = Some(energy_mwh(value, unit).ok_or_else(|| {
                                violation(&format!("energy value {value:?} {unit} is not a number"))
                            })?)
                        }
                        "Power.Active.Import" => {
                            let w: f64 = value.parse().unwrap_or(0.0);
                            power = if unit == "kW" { w * 1000.0 } else { w } as i32;
                        }
                        _ => {}
                    }
                }
                if let Some(e) = energy {
                    samples.push((at, e, power));
                }
            }
            for (at, e, power) in &samples {
                cs.sample(cp, *at, *e, *power);
            }
            cs.log(json!({"event": "meter_values", "charge_point": cp, "samples": samples.len()}));
            Ok(json!({}))
        }
        other => Err(("NotImplemented", format!("{other} is not supported"))),
    }
}

/// Runs the central system on a listener already bound, until the process ends.
pub async fn serve_on(
    cs: Arc<CentralSystem>,
    listener: tokio::net::TcpListener,
) -> std::io::Result<()> {
    axum::serve(listener, cs.router()).await
}

/// Runs the central system on `listen` until `sessions` transactions have stopped (or forever).
pub async fn serve(
    cs: Arc<CentralSystem>,
    listen: SocketAddr,
    sessions: Option<u64>,
    ready: impl FnOnce(SocketAddr),
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    ready(listener.local_addr()?);
    let router = cs.router();
    let done = {
        let cs = cs.clone();
        async move {
            loop {
                let notified = cs.changed.notified();
                if sessions.is_some_and(|n| cs.stopped.load(Ordering::SeqCst) >= n) {
                    break;
                }
                notified.await;
            }
            // Let the last exchanges finish.
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    };
    axum::serve(listener, router)
        .with_graceful_shutdown(done)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(units: &str, periods: usize) -> SmartChargingConfig {
        SmartChargingConfig::from_response(&json!({"configurationKey": [
            {"key": "ChargingScheduleAllowedChargingRateUnit", "value": units},
            {"key": "ChargingScheduleMaxPeriods", "value": periods.to_string()},
            {"key": "ChargeProfileMaxStackLevel", "value": "3"},
        ]}))
    }

    fn plan() -> Vec<PlanStep> {
        [
            (0, 7_400.0),
            (900, 3_700.0),
            (1_800, 11_000.0),
            (2_700, 5_000.0),
        ]
        .into_iter()
        .map(|(start_s, limit_w)| PlanStep { start_s, limit_w })
        .collect()
    }

    #[test]
    fn a_plan_is_fitted_to_what_the_charger_takes_and_never_allows_more() {
        let w = fit_plan(&plan(), &conf("Current,Power", 10), 230.0, 3);
        assert_eq!(w.unit, "W");
        assert_eq!(w.periods.len(), 4);
        let a = fit_plan(&plan(), &conf("Current", 2), 230.0, 3);
        assert_eq!(a.unit, "A");
        // 7.4 kW at 3 × 230 V is 10.72 A → 10.7; the last three steps merge at their lowest.
        assert_eq!(a.periods, vec![(0, 10.7), (900, 5.3)]);
        for t in [0, 899, 900, 2_000, 3_000] {
            let allowed_w = limit_at(&a, t).unwrap() * 690.0;
            let plan_w = plan()
                .iter()
                .rev()
                .find(|p| p.start_s <= t)
                .unwrap()
                .limit_w;
            assert!(allowed_w <= plan_w + 1e-9, "t={t}");
        }
        // A charger that says nothing takes one period in amperes.
        let cautious = SmartChargingConfig::from_response(&json!({}));
        assert_eq!(fit_plan(&plan(), &cautious, 230.0, 1).periods.len(), 1);
    }

    #[test]
    fn the_effective_limit_is_the_lower_profile_in_every_interval() {
        let site = Schedule {
            unit: "A",
            periods: vec![(0, 16.0), (1_200, 8.0)],
        };
        let charger = Schedule {
            unit: "A",
            periods: vec![(0, 10.0), (600, 20.0), (1_800, 6.0)],
        };
        let c = composite(&site, &charger);
        assert_eq!(
            c.periods,
            vec![(0, 10.0), (600, 16.0), (1_200, 8.0), (1_800, 6.0)]
        );
        for t in (0..2_400).step_by(60) {
            let want = limit_at(&site, t)
                .unwrap()
                .min(limit_at(&charger, t).unwrap());
            assert_eq!(limit_at(&c, t), Some(want), "t={t}");
        }
    }

    #[test]
    fn a_1_6_meter_values_message_with_one_bad_value_changes_nothing() {
        let (cs, kept) = v201::tests::system();
        let value = |v: &str| {
            json!({"timestamp": "2026-12-06T10:00:00Z", "sampledValue": [
                {"value": v, "measurand": "Energy.Active.Import.Register", "unit": "Wh"}]})
        };
        let bad = json!({"connectorId": 1, "meterValue": [value("1000"), value("lots")]});
        let e = handle_call(&cs, "CS_1", "MeterValues", &bad).unwrap_err();
        assert_eq!(e.0, "FormationViolation");
        assert!(kept.0.lock().unwrap().is_empty());
        assert_eq!(cs.charger("CS_1").register_mwh, None);
        let good = json!({"connectorId": 1, "meterValue": [value("1000"), value("1001.5")]});
        handle_call(&cs, "CS_1", "MeterValues", &good).unwrap();
        assert_eq!(kept.0.lock().unwrap().len(), 2);
        assert_eq!(cs.charger("CS_1").register_mwh, Some(1_001_500));
    }

    #[test]
    fn meter_values_and_timestamps_parse_exactly() {
        assert_eq!(energy_mwh("1000.6167", "kWh"), Some(1_000_616_700));
        assert_eq!(energy_mwh("1234", "Wh"), Some(1_234_000));
        assert_eq!(energy_mwh("12.5", ""), Some(12_500));
        assert_eq!(energy_mwh("abc", "Wh"), None);
        assert_eq!(energy_mwh("1", "varh"), None);
        assert_eq!(
            timestamp_ms("2026-11-24T18:00:00.250Z"),
            Some(1_795_543_200_250)
        );
        assert_eq!(timestamp_ms("yesterday"), None);
    }
}
