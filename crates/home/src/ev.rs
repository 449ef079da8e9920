//! The home's EV charger over OCPP 1.6J. The home runs the central system its charger connects
//! to (the gateway's, [`gridmesh_gateway::ocpp::CentralSystem`]) and drives it from the plan:
//!
//! - **Smart charging**: the plan's next slots go to the charger as a `TxDefaultProfile` (in
//!   watts or in amperes, as many periods as the charger takes), valid for the reversion time
//!   only and renewed before it runs out: if the home dies, the charger returns to its own
//!   default by itself. Sent again whenever the plan changes, the charger boots again or a new
//!   transaction starts.
//! - **Start and stop**, for a charger that answers SmartCharging `NotSupported` (or rejects the
//!   profile): charging is started while the slot's planned energy is not yet delivered, and
//!   stopped once it is (`RemoteStartTransaction` / `RemoteStopTransaction`).
//! - Without a plan (the node away, no plan for the slot yet): the EV's minimum rate.
//!
//! The charger's meter values become samples signed with the charger's key, for the home's
//! telemetry store, the community's broker and the charger's slot readings. The session's energy
//! (the register since the car was plugged in) is what the plan counts toward the EV's needs.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use gridmesh_gateway::ocpp::{CentralSystem, ChargerState, OcppConfig, PlanStep, SampleSink};
use gridmesh_ledger::telemetry::RawSample;
use gridmesh_ledger::Keypair;
use gridmesh_types::units::{slot_start_ms, SLOT_MS};

use crate::config::EvChargerConfig;
use crate::devices::DeviceStatus;

/// Samples held for the loop between two polls at most (the oldest go first).
const MAX_PENDING_SAMPLES: usize = 4_096;
/// A planned power this close to the last one sent needs no new profile, W.
const PROFILE_STEP_W: f64 = 50.0;
/// Slots of the plan a profile carries.
pub const PROFILE_SLOTS: u64 = 8;
/// A slot's planned energy this close to delivered counts as delivered (start/stop), kWh.
const DELIVERED_KWH: f64 = 0.01;

/// What the EV should get now.
#[derive(Clone, Debug, PartialEq)]
pub enum EvWant {
    /// The plan's power per slot (slot, kW), from the slot before the one running.
    Plan(Vec<(u64, f64)>),
    /// No plan to follow: the EV's minimum rate while it is plugged in.
    Minimum,
}

/// The charger now, for the loop.
#[derive(Clone, Debug, Default)]
pub struct EvNow {
    pub plugged: bool,
    /// Power of the last meter value while a transaction runs, kW.
    pub charging_kw: f64,
    /// The energy register, mWh.
    pub register_mwh: Option<u64>,
    /// Energy charged since the car was plugged in, kWh.
    pub session_kwh: f64,
}

/// Signed samples from the central system, collected for the loop.
#[derive(Default)]
struct Collected(Mutex<Vec<RawSample>>);

impl SampleSink for Collected {
    fn publish(&self, sample: RawSample) {
        let mut v = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if v.len() >= MAX_PENDING_SAMPLES {
            v.remove(0);
        }
        v.push(sample);
    }
}

/// The profile last sent, and what it was sent under.
#[derive(Clone, Debug)]
struct Sent {
    start_ms: u64,
    steps: Vec<PlanStep>,
    boots: u64,
    transaction: Option<String>,
    at: Instant,
}

pub struct EvCharger {
    cp: String,
    cs: Arc<CentralSystem>,
    samples: Arc<Collected>,
    /// The charger has a key of its own (registered): its samples and readings count.
    pub key: Option<Keypair>,
    remote_tag: String,
    min_kw: f64,
    sent: Option<Sent>,
    /// A call to the charger is under way (one at a time).
    busy: Arc<AtomicBool>,
    last_error: Arc<Mutex<Option<String>>>,
    /// The register when the car was plugged in, and whether it is.
    session_start_mwh: Option<u64>,
    plugged: bool,
    /// The register at the start of the slot running (start/stop counts the slot's energy).
    slot_start: Option<(u64, u64)>,
    state: ChargerState,
}

impl EvCharger {
    /// Starts the central system on `listener` (bound by the caller, so a wrong address fails at
    /// start), on the runtime `bg`.
    pub fn start(
        cfg: &EvChargerConfig,
        key: Option<Keypair>,
        chain_id: &str,
        listener: std::net::TcpListener,
        bg: &tokio::runtime::Runtime,
    ) -> anyhow::Result<EvCharger> {
        // A charger without a key of its own is driven all the same; its samples are signed
        // with a throwaway key and kept nowhere.
        let signing = key.clone().unwrap_or_else(Keypair::generate);
        let samples = Arc::new(Collected::default());
        let cs = CentralSystem::new(
            OcppConfig {
                chargers: HashMap::from([(cfg.charge_point.clone(), signing)]),
                id_tags: cfg.id_tags.clone(),
                chain_id: chain_id.to_string(),
                site_limit_w: None,
                plan: Vec::new(),
                volts: cfg.volts,
                phases: cfg.phases,
            },
            samples.clone(),
        );
        listener.set_nonblocking(true)?;
        let listener = {
            let _guard = bg.enter();
            tokio::net::TcpListener::from_std(listener)?
        };
        let server = cs.clone();
        bg.spawn(async move {
            if let Err(e) = gridmesh_gateway::ocpp::serve_on(server, listener).await {
                tracing::error!(error = %e, "the EV charger's central system stopped");
            }
        });
        Ok(EvCharger {
            cp: cfg.charge_point.clone(),
            cs,
            samples,
            key,
            remote_tag: cfg.remote_tag.clone(),
            min_kw: cfg.min_kw,
            sent: None,
            busy: Arc::new(AtomicBool::new(false)),
            last_error: Arc::new(Mutex::new(None)),
            session_start_mwh: None,
            plugged: false,
            slot_start: None,
            state: ChargerState::default(),
        })
    }

    /// Binds the central system's address (before the chain is known, so a wrong address is an
    /// error at start).
    pub fn bind(addr: SocketAddr) -> anyhow::Result<std::net::TcpListener> {
        std::net::TcpListener::bind(addr).with_context(|| {
            format!("cannot listen for the EV charger on {addr} (`ev.ocpp_listen`)")
        })
    }

    /// What the charger said since the last poll; `slot` is the slot running.
    pub fn observe(&mut self, slot: u64) -> EvNow {
        self.state = self.cs.charger(&self.cp);
        let s = &self.state;
        let plugged = s.plugged();
        if plugged && (!self.plugged || self.session_start_mwh.is_none()) {
            self.session_start_mwh = s.register_mwh;
        }
        if !plugged {
            self.session_start_mwh = None;
        }
        self.plugged = plugged;
        if let Some(r) = s.register_mwh {
            if self.slot_start.is_none_or(|(sl, _)| sl != slot) {
                self.slot_start = Some((slot, r));
            }
        }
        EvNow {
            plugged,
            charging_kw: if s.transaction.is_some() {
                s.power_w.unwrap_or(0.0) / 1e3
            } else {
                0.0
            },
            register_mwh: s.register_mwh,
            session_kwh: match (self.session_start_mwh, s.register_mwh) {
                (Some(a), Some(b)) => b.saturating_sub(a) as f64 / 1e6,
                _ => 0.0,
            },
        }
    }

    /// The signed samples that came in since the last call (none without a key of its own).
    pub fn take_samples(&self) -> Vec<RawSample> {
        let v = std::mem::take(&mut *self.samples.0.lock().unwrap_or_else(|e| e.into_inner()));
        if self.key.is_some() {
            v
        } else {
            Vec::new()
        }
    }

    /// Drives the charger toward `want` at chain time `now_ms`. A profile is valid for
    /// `revert_chain_ms` and sent again after `refresh` (real time). Never waits on the charger:
    /// the call runs on `bg`, one at a time.
    pub fn drive(
        &mut self,
        want: &EvWant,
        now_ms: u64,
        revert_chain_ms: u64,
        refresh: Duration,
        bg: &tokio::runtime::Runtime,
    ) {
        let s = self.state.clone();
        if !s.connected || s.smart_charging.is_none() || self.busy.load(Ordering::Relaxed) {
            return;
        }
        if s.takes_profiles == Some(false) {
            self.start_stop(want, now_ms, bg);
            return;
        }
        let (start_ms, steps) = profile_steps(want, now_ms, self.min_kw);
        let valid_to_ms = valid_to_ms(start_ms, &steps, now_ms, revert_chain_ms);
        let due = self.sent.as_ref().is_none_or(|p| {
            p.start_ms != start_ms
                || p.boots != s.boots
                || p.transaction != s.transaction
                || p.at.elapsed() >= refresh
                || p.steps.len() != steps.len()
                || p.steps.iter().zip(&steps).any(|(a, b)| {
                    a.start_s != b.start_s || (a.limit_w - b.limit_w).abs() > PROFILE_STEP_W
                })
        });
        if !due {
            return;
        }
        self.sent = Some(Sent {
            start_ms,
            steps: steps.clone(),
            boots: s.boots,
            transaction: s.transaction.clone(),
            at: Instant::now(),
        });
        let (cs, cp) = (self.cs.clone(), self.cp.clone());
        self.call(bg, async move {
            match cs.set_plan(&cp, &steps, start_ms, valid_to_ms).await {
                Ok(gridmesh_gateway::ocpp::ProfileAnswer::Accepted) => None,
                Ok(a) => Some(format!(
                    "the charger answered {a:?} to a charging profile: starting and stopping it instead"
                )),
                Err(e) => Some(e),
            }
        });
    }

    /// Runs one call to the charger on `bg` (the next waits for it); what went wrong, if
    /// anything, is kept for the status.
    fn call(
        &self,
        bg: &tokio::runtime::Runtime,
        call: impl std::future::Future<Output = Option<String>> + Send + 'static,
    ) {
        let (busy, last_error) = (self.busy.clone(), self.last_error.clone());
        busy.store(true, Ordering::Relaxed);
        bg.spawn(async move {
            let error = call.await;
            *last_error.lock().unwrap_or_else(|e| e.into_inner()) = error;
            busy.store(false, Ordering::Relaxed);
        });
    }

    /// Start/stop: charging while the slot's planned energy is not delivered (always at the
    /// minimum-rate fallback, the charger's only rate here being its own).
    fn start_stop(&mut self, want: &EvWant, now_ms: u64, bg: &tokio::runtime::Runtime) {
        let s = &self.state;
        let slot = gridmesh_types::units::slot_of(now_ms.saturating_sub(1));
        let on = match want {
            EvWant::Minimum => true,
            EvWant::Plan(p) => {
                let planned_kwh = p
                    .iter()
                    .find(|(sl, _)| *sl == slot)
                    .map_or(0.0, |(_, kw)| kw * 0.25);
                let delivered_kwh = match (self.slot_start, s.register_mwh) {
                    (Some((sl, a)), Some(b)) if sl == slot => b.saturating_sub(a) as f64 / 1e6,
                    _ => 0.0,
                };
                planned_kwh > delivered_kwh + DELIVERED_KWH
            }
        };
        let start = on && s.plugged() && s.transaction.is_none();
        let stop = !on && s.transaction.is_some();
        if !(start || stop) {
            return;
        }
        let (cs, cp, tag) = (self.cs.clone(), self.cp.clone(), self.remote_tag.clone());
        self.call(bg, async move {
            let r = if start {
                cs.remote_start(&cp, &tag).await
            } else {
                cs.remote_stop(&cp).await
            };
            let what = if start { "start" } else { "stop" };
            match r {
                Ok(true) => None,
                Ok(false) => Some(format!("the charger refused to {what} charging")),
                Err(e) => Some(e),
            }
        });
    }

    /// The OCPP version the charger speaks, once it connected.
    pub fn ocpp_version(&self) -> Option<&'static str> {
        self.state.version.map(|v| match v {
            gridmesh_gateway::ocpp::Version::V16 => "1.6",
            gridmesh_gateway::ocpp::Version::V201 => "2.0.1",
        })
    }

    /// How the charger is driven: `profile` (smart charging), `start-stop` or `unknown` (no
    /// answer yet).
    pub fn control(&self) -> &'static str {
        match self.state.takes_profiles {
            Some(true) => "profile",
            Some(false) => "start-stop",
            None => "unknown",
        }
    }

    pub fn status(&self) -> DeviceStatus {
        let s = &self.state;
        let error = self
            .last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        DeviceStatus {
            connected: s.connected,
            error: if s.connected {
                error
            } else {
                Some(format!(
                    "charge point {:?} is not connected to the home's central system",
                    self.cp
                ))
            },
            power_kw: s.power_w.map(|w| w / 1e3),
            soc_pct: None,
            out_register_kwh: None,
            in_register_kwh: s.register_mwh.map(|v| v as f64 / 1e6),
        }
    }
}

/// The profile for `want` at `now_ms`: its start (the first planned slot's start: the caller
/// passes the slot before the one running, so a charger whose clock is behind is covered) and
/// steps, one per planned slot; the minimum rate from a slot ago without a plan.
pub fn profile_steps(want: &EvWant, now_ms: u64, min_kw: f64) -> (u64, Vec<PlanStep>) {
    match want {
        // From a slot back: a charger whose clock is behind has it in force too.
        EvWant::Minimum => (
            now_ms.saturating_sub(SLOT_MS),
            vec![PlanStep {
                start_s: 0,
                limit_w: min_kw * 1e3,
            }],
        ),
        EvWant::Plan(p) => {
            let Some(first) = p.first().map(|(s, _)| *s) else {
                return (now_ms, Vec::new());
            };
            let start_ms = slot_start_ms(first);
            let steps = p
                .iter()
                .take(PROFILE_SLOTS as usize + 1)
                .map(|(slot, kw)| PlanStep {
                    start_s: ((slot - first) * SLOT_MS / 1_000) as u32,
                    limit_w: (kw * 1e3).max(0.0),
                })
                .collect();
            (start_ms, steps)
        }
    }
}

/// Until when a profile holds: the end of its last step's slot, and no longer than the reversion
/// time from now.
pub fn valid_to_ms(start_ms: u64, steps: &[PlanStep], now_ms: u64, revert_chain_ms: u64) -> u64 {
    steps
        .last()
        .map_or(now_ms, |p| {
            start_ms + u64::from(p.start_s) * 1_000 + SLOT_MS
        })
        .min(now_ms + revert_chain_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plan_becomes_one_step_per_slot_from_the_slots_start() {
        let want = EvWant::Plan(vec![(100, 0.0), (101, 7.4), (102, 3.25)]);
        let now = slot_start_ms(100) + 60_000;
        let (start, steps) = profile_steps(&want, now, 1.4);
        assert_eq!(start, slot_start_ms(100));
        assert_eq!(
            steps,
            vec![
                PlanStep {
                    start_s: 0,
                    limit_w: 0.0
                },
                PlanStep {
                    start_s: 900,
                    limit_w: 7_400.0
                },
                PlanStep {
                    start_s: 1_800,
                    limit_w: 3_250.0
                },
            ]
        );
        let (start, steps) = profile_steps(&EvWant::Minimum, now, 1.4);
        assert_eq!(start, now - SLOT_MS);
        assert_eq!(steps.len(), 1);
        assert!((steps[0].limit_w - 1_400.0).abs() < 1e-9);
    }

    #[test]
    fn a_profile_holds_to_its_last_slot_or_the_reversion_time() {
        let want = EvWant::Plan(vec![(99, 1.0), (100, 2.0), (101, 3.0)]);
        let now = slot_start_ms(100) + 60_000;
        let (start, steps) = profile_steps(&want, now, 1.4);
        // To the end of slot 101, or a minute from now.
        assert_eq!(
            valid_to_ms(start, &steps, now, 3_600_000),
            slot_start_ms(102)
        );
        assert_eq!(valid_to_ms(start, &steps, now, 60_000), now + 60_000);
    }
}
