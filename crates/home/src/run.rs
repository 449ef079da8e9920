//! The home's loop: every poll it reads the devices, signs and stores their samples, closes the
//! slot that ended (history, signed readings queued), lets the agent plan and trade, and drives
//! the battery and PV to the plan, or to local self-consumption when there is no plan to follow.
//!
//! Time is the chain's: the node's clock when it answers, extrapolated at `time_scale` while it
//! is away, never going backwards.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::Context;
use gridmesh_agent::schedule::Schedule;
use gridmesh_client::agent_runner::{
    Agent, AgentConfig, HomeData, HomeSpec, HomeState, Household, StrategyKind,
};
use gridmesh_gateway::sunspec::Measurement;
use gridmesh_gateway::TelemetryStore;
use gridmesh_ledger::tx::DeviceReading;
use gridmesh_ledger::{Keypair, TxKind};
use gridmesh_types::units::{slot_of, slot_start_ms, SLOT_MS};
use serde::Serialize;

use crate::config::HomeConfig;
use crate::devices::Device;
use crate::ev::{EvCharger, EvWant};
use crate::heat_pump::{HeatPump, Heats};
use crate::loads::Load;
use crate::mqtt_meter::MqttMeter;

/// The connection's meter.
enum Meter {
    SunSpec(Device),
    Mqtt(MqttMeter),
}
use crate::journal::{Journal, Queued, SlotRecord};
use crate::status::{PlanRow, Status};

/// Hours of a slot.
const SLOT_H: f64 = 0.25;
/// A slot that planned the EV at least this much (kW) and saw it draw under a tenth of it finds
/// the car full.
const EV_FULL_PLANNED_KW: f64 = 0.2;
/// Change of the battery setpoint worth a write before the refresh is due, kW.
const SETPOINT_STEP_KW: f64 = 0.05;
/// Most transactions from the queue sent in one poll.
const SENDS_PER_POLL: usize = 8;
/// Samples wait in memory at most this long (chain ms) before a durable write: one write per
/// batch, not per poll. A slot's samples are written before its reading commits to them.
const SAMPLE_FLUSH_MS: u64 = 60_000;
/// `status.json` is written at most this often (chain ms), and whenever a slot closes or the
/// mode changes.
const STATUS_EVERY_MS: u64 = 60_000;
/// The microgrid's mode (grid-connected or islanded) is read this often (chain ms).
const GRID_MODE_EVERY_MS: u64 = 60_000;
/// Home Assistant's state is published at most this often (chain ms).
const HA_EVERY_MS: u64 = 10_000;

/// One slot of the plan the home follows. Powers kW, the battery positive discharging.
#[derive(Clone, Debug, Serialize)]
pub struct PlanEntry {
    pub battery_kw: f64,
    pub import_kw: f64,
    pub export_kw: f64,
    /// The battery's energy at the slot's end, kWh.
    pub soc_kwh: f64,
    /// The EV's charging power, kW.
    pub ev_kw: f64,
    /// Each shiftable load's power, kW (the order of `[[home.loads]]`).
    pub loads_kw: Vec<f64>,
    /// The heat pump's power, kW, and the indoor temperature the plan expects at the slot's
    /// end, °C.
    pub heat_pump_kw: f64,
    pub indoor_c: Option<f64>,
    /// The hot-water tank's heat pump, kW, and the tank's temperature at the slot's end, °C.
    pub hot_water_kw: f64,
    pub tank_c: Option<f64>,
}

/// The home as its agent sees it: the reference data with the home's measured history in place,
/// the battery's measured energy, and the plans it receives.
pub struct LiveHome {
    spec: HomeSpec,
    data: HomeData,
    /// The first slot the home measured (its history is the journal's).
    first_measured: Option<u64>,
    pub plans: BTreeMap<u64, PlanEntry>,
    soc_now_kwh: Option<f64>,
    /// The EV now, as its charger says: plugged in, and the session's energy so far (kWh).
    ev_plugged: bool,
    ev_session_kwh: f64,
    /// The EV stopped drawing while the plan allowed it: the car is full (until unplugged).
    ev_full: bool,
    /// Each shiftable load's energy in its window today, kWh.
    loads_done_kwh: Vec<f64>,
    /// The indoor temperature now, °C: the room sensor's, or the building's model.
    indoor_c: Option<f64>,
    /// The hot-water tank's temperature now, °C: its sensor's, or the tank's model.
    tank_c: Option<f64>,
    now_ms: u64,
    /// Which forecast the last plan used: `measured` (the home's own history) or `reference`
    /// (the standard load profile and reference weather, at cold start).
    pub forecast: &'static str,
}

impl LiveHome {
    fn current_slot(&self) -> u64 {
        slot_of(self.now_ms.saturating_sub(1))
    }

    fn record(&mut self, slot: u64, r: SlotRecord) {
        self.data.record(slot, r.load_kw, r.pv_kw);
        self.first_measured.get_or_insert(slot);
    }
}

impl Household for LiveHome {
    fn spec(&self) -> &HomeSpec {
        &self.spec
    }

    fn forecast(&mut self, slot: u64, horizon: usize) -> (Vec<f64>, Vec<f64>) {
        // The learned load model where it beat persistence on the last day; else persistence,
        // which reads the same slot a day back: measured once the home has that day.
        self.forecast = if self.data.learned().is_some_and(|l| l.in_use()) {
            "learned"
        } else if self.first_measured.is_some_and(|first| first + 96 <= slot) {
            "measured"
        } else {
            "reference"
        };
        self.data.forecast(slot, horizon)
    }

    fn outdoor(&mut self, slot: u64, horizon: usize) -> Vec<f64> {
        self.data.outdoor(slot, horizon)
    }

    fn state_at(&mut self, slot: u64) -> HomeState {
        // The measured state now, carried to the slot's start along the plan.
        let c = self.current_slot();
        let mut soc = self.soc_now_kwh.unwrap_or(
            self.spec
                .battery
                .as_ref()
                .map_or(0.0, |b| b.capacity_kwh / 2.0),
        );
        let mut ev_kwh = self.ev_session_kwh;
        let mut loads_kwh = self.loads_done_kwh.clone();
        // The building and the tank from now to the slot's start, heated as planned.
        let outdoor = self
            .data
            .outdoor(c, (slot.saturating_sub(c) as usize).max(1));
        let building = self
            .spec
            .heat_pump
            .as_ref()
            .map(|h| h.heating().store(&outdoor, 0.0));
        let tank = self
            .spec
            .hot_water
            .as_ref()
            .map(|w| w.store(&outdoor, c, 0.0));
        let mut indoor = self.indoor_c;
        let mut tank_c = self.tank_c;
        for s in c..slot {
            let frac = if s == c {
                slot_start_ms(c + 1).saturating_sub(self.now_ms) as f64 / SLOT_MS as f64
            } else {
                1.0
            };
            if let Some(p) = self.plans.get(&s) {
                soc -= p.battery_kw * SLOT_H * frac;
                ev_kwh += p.ev_kw * SLOT_H * frac;
                for (done, kw) in loads_kwh.iter_mut().zip(&p.loads_kw) {
                    *done += kw * SLOT_H * frac;
                }
                if let (Some(b), Some(t)) = (&building, indoor.as_mut()) {
                    *t = b.after((s - c) as usize, *t, p.heat_pump_kw, SLOT_H * frac);
                }
                if let (Some(w), Some(t)) = (&tank, tank_c.as_mut()) {
                    *t = w.after((s - c) as usize, *t, p.hot_water_kw, SLOT_H * frac);
                }
            }
        }
        let mut state = HomeState::default();
        if let Some(b) = &self.spec.battery {
            state.soc_kwh = soc.clamp(0.0, b.capacity_kwh);
        }
        if let Some(e) = &self.spec.ev {
            // Plugged in now: until the departure hour that comes next.
            let plugged =
                self.ev_plugged && !self.ev_full && slot < departure_slot(c, e.departure_hour);
            state.ev_plugged = Some(plugged);
            state.ev_charged_kwh = if plugged { ev_kwh } else { 0.0 };
        }
        // Today's loads: what ran, and what the plan runs until the slot (a new day's start from
        // nothing in the agent).
        if !self.spec.loads.is_empty() {
            state.loads_day = Some(c / 96);
            state.loads_done_kwh = loads_kwh;
        }
        state.indoor_c = indoor;
        state.tank_c = tank_c;
        state
    }

    fn planned(&mut self, slot: u64, schedule: &Schedule, _after: &HomeState) {
        let (space, water) = self.spec.thermal_stores();
        let at = |rows: &[Vec<f64>], store: Option<usize>, k: usize| {
            store
                .and_then(|i| rows.get(i))
                .and_then(|r| r.get(k))
                .copied()
        };
        for k in 0..schedule.import_kw.len() {
            self.plans.insert(
                slot + k as u64,
                PlanEntry {
                    battery_kw: schedule.discharge_kw.get(k).copied().unwrap_or(0.0)
                        - schedule.charge_kw.get(k).copied().unwrap_or(0.0),
                    import_kw: schedule.import_kw[k],
                    export_kw: schedule.export_kw.get(k).copied().unwrap_or(0.0),
                    soc_kwh: schedule.soc_kwh.get(k).copied().unwrap_or(0.0),
                    ev_kw: schedule.ev_kw.get(k).copied().unwrap_or(0.0),
                    loads_kw: schedule
                        .deferrable_kw
                        .iter()
                        .map(|r| r.get(k).copied().unwrap_or(0.0))
                        .collect(),
                    heat_pump_kw: at(&schedule.heat_kw, space, k).unwrap_or(0.0),
                    indoor_c: at(&schedule.temperature_c, space, k),
                    hot_water_kw: at(&schedule.heat_kw, water, k).unwrap_or(0.0),
                    tank_c: at(&schedule.temperature_c, water, k),
                },
            );
        }
        let keep_from = self.current_slot().saturating_sub(96);
        self.plans = self.plans.split_off(&keep_from);
    }
}

/// The first slot after `slot` that starts at `hour` (UTC).
pub fn departure_slot(slot: u64, hour: u8) -> u64 {
    let at = slot - slot % 96 + u64::from(hour) * 4;
    if at > slot {
        at
    } else {
        at + 96
    }
}

/// Chain time: the node's when it answers, extrapolated at the configured scale in between.
struct Clock {
    scale: u64,
    base_chain_ms: u64,
    base: Instant,
    last_ms: u64,
    /// The node's time was taken on at least once (a time-scaled clock means nothing before).
    synced: bool,
}

impl Clock {
    fn new(scale: u32, chain_ms: u64) -> Clock {
        Clock {
            scale: u64::from(scale.max(1)),
            base_chain_ms: chain_ms,
            base: Instant::now(),
            last_ms: 0,
            synced: scale <= 1,
        }
    }

    fn extrapolated(&self) -> u64 {
        self.base_chain_ms + self.base.elapsed().as_millis() as u64 * self.scale
    }

    /// The time now, strictly after the last one given.
    fn now(&mut self) -> u64 {
        self.last_ms = self.extrapolated().max(self.last_ms + 1);
        self.last_ms
    }

    /// The node's time: taken on when it is ahead.
    fn sync(&mut self, node_ms: u64) {
        self.synced = true;
        if node_ms > self.extrapolated() {
            self.base_chain_ms = node_ms;
            self.base = Instant::now();
        }
    }
}

/// The registers of one poll (mWh), each `None` where its device did not answer.
#[derive(Clone, Copy, Debug, Default)]
struct Registers {
    pv_out: Option<u64>,
    battery_out: Option<u64>,
    battery_in: Option<u64>,
    grid_import: Option<u64>,
    grid_export: Option<u64>,
    soc_kwh: Option<f64>,
    ev_in: Option<u64>,
}

impl Registers {
    /// `self` where `newer` has nothing.
    fn updated(self, newer: Registers) -> Registers {
        Registers {
            pv_out: newer.pv_out.or(self.pv_out),
            battery_out: newer.battery_out.or(self.battery_out),
            battery_in: newer.battery_in.or(self.battery_in),
            grid_import: newer.grid_import.or(self.grid_import),
            grid_export: newer.grid_export.or(self.grid_export),
            soc_kwh: newer.soc_kwh.or(self.soc_kwh),
            ev_in: newer.ev_in.or(self.ev_in),
        }
    }
}

/// The slot being measured: its registers at the last poll of the slot before (`None` for the
/// first, partial slot) and at its latest poll.
struct OpenSlot {
    slot: u64,
    start: Option<Registers>,
    last: Registers,
    planned: bool,
    /// The shiftable loads' energy in the slot (rated power times the time on), kWh.
    loads_kwh: f64,
    /// The heat pump's and the hot-water heat pump's energy in the slot, kWh.
    heat_kwh: f64,
    water_kwh: f64,
}

fn delta(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    Some(b?.saturating_sub(a?))
}

/// What a run did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct HomeReport {
    pub polls: u64,
    /// Slots measured whole, and of them those the home followed a plan in.
    pub slots: u64,
    pub planned_slots: u64,
    pub replans: u64,
    pub readings_committed: u64,
    pub readings_refused: u64,
    pub last_reading_error: Option<String>,
    pub orders_placed: u64,
    pub sells: bool,
    /// The process's CPU time (user and system, all threads) and its peak resident memory, from
    /// `/proc` (Linux).
    pub cpu_ms: Option<u64>,
    pub peak_memory_kb: Option<u64>,
    /// CPU time spent starting (the reference year of load and PV computed for the forecasts),
    /// included in `cpu_ms`.
    pub startup_cpu_ms: Option<u64>,
}

/// This process's CPU time (ms) and peak resident set (kB), from `/proc/self` (Linux; `None`
/// elsewhere). `/proc` counts CPU in USER_HZ ticks, 100 per second on every Linux.
pub fn own_resources() -> (Option<u64>, Option<u64>) {
    let cpu = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            // Fields after the command name (which may hold spaces, inside parentheses).
            let rest = s.rsplit_once(')')?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
            Some(ticks * 10)
        });
    let peak = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        });
    (cpu, peak)
}

/// What the node's side of the home knows, for the device side.
#[derive(Clone, Debug, Default)]
struct NodeState {
    /// The agent is connected and its last poll answered.
    trading: bool,
    error: Option<String>,
    /// The envelope's export limit in a slot, kW.
    export_cap: Option<(u64, f64)>,
    chain_id: Option<String>,
    sells: bool,
    orders: Vec<gridmesh_client::agent_runner::PlacedOrder>,
    orders_placed: u64,
    readings_committed: u64,
    readings_refused: u64,
    last_reading_error: Option<String>,
    /// The price of buying now (the node's grid price list: cleared, forecast or tariff),
    /// tokens per kWh.
    price_now: Option<f64>,
    /// Today's (UTC) bill, savings and rewards from the node's home view, tokens.
    today: Option<[f64; 3]>,
    /// The slot `price_now` and `today` were read in.
    read_in_slot: Option<u64>,
    /// The microgrid is not grid-connected (`islanded` or `resynchronising`): the plan's trades
    /// with the utility cannot happen, the home runs on self-consumption.
    islanded: Option<String>,
}

/// What the two sides of the home share. The device side never waits on the network: the node
/// side holds these locks only for in-memory work, never across a request.
struct Shared {
    home: Mutex<LiveHome>,
    journal: Mutex<Journal>,
    clock: Mutex<Clock>,
    node: Mutex<NodeState>,
    /// The device side saw the home part from the plan.
    replan: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The agent's view of the shared home: each call takes the lock for its own in-memory work.
struct SharedHome<'a> {
    spec: HomeSpec,
    shared: &'a Shared,
}

impl Household for SharedHome<'_> {
    fn spec(&self) -> &HomeSpec {
        &self.spec
    }
    fn forecast(&mut self, slot: u64, horizon: usize) -> (Vec<f64>, Vec<f64>) {
        lock(&self.shared.home).forecast(slot, horizon)
    }
    fn outdoor(&mut self, slot: u64, horizon: usize) -> Vec<f64> {
        lock(&self.shared.home).outdoor(slot, horizon)
    }
    fn state_at(&mut self, slot: u64) -> HomeState {
        lock(&self.shared.home).state_at(slot)
    }
    fn planned(&mut self, slot: u64, schedule: &Schedule, after: &HomeState) {
        lock(&self.shared.home).planned(slot, schedule, after)
    }
}

/// Runs the home until `stop` is set or `max_slots` whole slots were measured: the device side
/// on this thread, the node side (planning, trading, sending readings) on another, so a slow or
/// absent node never delays a reading or a setpoint.
pub fn run(
    cfg: &HomeConfig,
    stop: &AtomicBool,
    max_slots: Option<u64>,
) -> anyhow::Result<HomeReport> {
    std::fs::create_dir_all(&cfg.data_dir)
        .with_context(|| format!("creating the data dir {}", cfg.data_dir.display()))?;
    let owner = Keypair::load(&cfg.key)
        .with_context(|| format!("loading the owner's key {} (`key`)", cfg.key.display()))?;
    let journal = Journal::open(&cfg.data_dir)?;
    let mut data = HomeData::reference(&cfg.home)?;
    for (slot, r) in &journal.history {
        data.record(*slot, r.load_kw, r.pv_kw);
    }
    let chain_id_file = cfg.data_dir.join("chain-id");
    let chain_id: Option<String> = std::fs::read_to_string(&chain_id_file)
        .ok()
        .map(|s| s.trim().to_string());
    let shared = Shared {
        home: Mutex::new(LiveHome {
            spec: planned_spec(cfg),
            data,
            first_measured: journal.history.keys().next().copied(),
            plans: BTreeMap::new(),
            soc_now_kwh: None,
            ev_plugged: false,
            ev_session_kwh: 0.0,
            ev_full: false,
            loads_done_kwh: vec![0.0; cfg.home.loads.len()],
            indoor_c: cfg
                .home
                .heat_pump
                .as_ref()
                .map(|h| (h.comfort_c[0] + h.comfort_c[1]) / 2.0),
            tank_c: cfg
                .home
                .hot_water
                .as_ref()
                .map(|w| (w.band_c[0] + w.band_c[1]) / 2.0),
            now_ms: 0,
            forecast: "reference",
        }),
        journal: Mutex::new(journal),
        clock: Mutex::new(Clock::new(cfg.time_scale, wall_ms())),
        node: Mutex::new(NodeState {
            chain_id,
            ..NodeState::default()
        }),
        replan: AtomicBool::new(false),
    };
    let startup_cpu_ms = own_resources().0;
    let done = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let node_side = std::thread::Builder::new()
            .name("home-node".into())
            .spawn_scoped(scope, || {
                node_loop(cfg, &owner, &shared, &done, &chain_id_file)
            })?;
        let report = device_loop(cfg, &shared, stop, max_slots);
        done.store(true, Ordering::Relaxed);
        let _ = node_side.join();
        report.map(|mut r| {
            (r.cpu_ms, r.peak_memory_kb) = own_resources();
            r.startup_cpu_ms = startup_cpu_ms;
            r
        })
    })
}

/// The node side: connects the agent, lets it plan and trade, learns the envelope of the slot
/// running, and sends what the device side queued.
fn node_loop(
    cfg: &HomeConfig,
    owner: &Keypair,
    shared: &Shared,
    done: &AtomicBool,
    chain_id_file: &Path,
) {
    let agent_cfg = AgentConfig {
        key: owner.clone(),
        node: cfg.node.clone(),
        strategy: StrategyKind::Optimising,
        slots: None,
        window_ms: 3_600_000,
        gate_margin_ms: cfg.control.gate_margin_s.saturating_mul(1_000),
        reprice_per_kwh: 0.01,
        poll: Duration::from_millis(cfg.node_poll_ms),
        seed: 0,
    };
    let mut household = SharedHome {
        spec: planned_spec(cfg),
        shared,
    };
    let mut agent: Option<Agent<'_>> = None;
    let mut session: Option<String> = None;
    let mut envelope_checked: Option<u64> = None;
    // The day the load model was last trained (chain days), and when the microgrid's mode was
    // last read (chain ms).
    let mut trained_day: Option<u64> = None;
    let mut grid_read_at = 0u64;
    let retry = Duration::from_secs(cfg.control.node_retry_s);
    let poll = Duration::from_millis(cfg.node_poll_ms);
    while !done.load(Ordering::Relaxed) {
        std::thread::sleep(poll);
        if agent.is_none() {
            match Agent::connect(&agent_cfg) {
                Ok(a) => {
                    let mut n = lock(&shared.node);
                    if n.chain_id.as_deref() != Some(a.chain_id()) {
                        n.chain_id = Some(a.chain_id().to_string());
                        if let Err(e) = std::fs::write(chain_id_file, a.chain_id()) {
                            tracing::warn!(error = %e, "cannot keep the chain id");
                        }
                    }
                    n.sells = a.report().sells;
                    agent = Some(a);
                }
                Err(e) => {
                    let mut n = lock(&shared.node);
                    n.trading = false;
                    n.error = Some(format!("{e:#}"));
                    drop(n);
                    sleep_unless(done, retry);
                    continue;
                }
            }
        }
        let a = agent.as_mut().expect("connected");
        if shared.replan.swap(false, Ordering::Relaxed) {
            a.replan();
        }
        match a.poll(&mut household) {
            Ok(_) => {
                let now_ms = a.market().map(|m| m.now_ms);
                if let Some(now_ms) = now_ms {
                    lock(&shared.clock).sync(now_ms);
                }
                let now_ms = lock(&shared.clock).now();
                let slot = slot_of(now_ms.saturating_sub(1));
                // A slot's envelope is final at its gate closure: read once as the slot starts.
                let mut cap = None;
                if envelope_checked != Some(slot) {
                    match a.client().envelope(slot, &cfg.home.location) {
                        Ok(e) => {
                            envelope_checked = Some(slot);
                            cap = e
                                .and_then(|e| e.export_kwh.parse::<f64>().ok())
                                .map(|kwh| (slot, kwh / SLOT_H));
                        }
                        Err(e) => tracing::debug!(error = %e, "envelope not read"),
                    }
                }
                let sent = send_queue(a, shared);
                let stale = lock(&shared.node).read_in_slot != Some(slot);
                let mut money = None;
                if stale {
                    let price = a
                        .client()
                        .grid_prices()
                        .ok()
                        .and_then(|p| p.first().map(|p| p.value));
                    let today = home_today(a.client(), owner, &mut session, slot);
                    money = Some((price, today));
                }
                // The microgrid's mode, once a chain minute: an island changes what the home may
                // do within a minute.
                let grid_mode = if now_ms >= grid_read_at + GRID_MODE_EVERY_MS {
                    grid_read_at = now_ms;
                    a.client().grid().ok().map(|g| g.mode)
                } else {
                    None
                };
                let mut n = lock(&shared.node);
                if let Some((price, today)) = money {
                    n.price_now = price;
                    n.today = today.or(n.today);
                    n.read_in_slot = Some(slot);
                }
                if let Some(mode) = grid_mode {
                    let island = (mode != "grid-connected").then_some(mode);
                    if island.is_some() && n.islanded.is_none() {
                        tracing::warn!("the community is islanded: local self-consumption");
                    }
                    n.islanded = island;
                }
                if n.error.is_some() {
                    tracing::info!("the node is back: following the plan again");
                }
                n.trading = true;
                n.error = None;
                if cap.is_some() {
                    n.export_cap = cap;
                }
                n.orders_placed = a.report().placed;
                n.orders = a.report().orders.iter().rev().take(12).cloned().collect();
                n.readings_committed += sent.committed;
                n.readings_refused += sent.refused;
                if sent.last_error.is_some() {
                    n.last_reading_error = sent.last_error;
                }
                drop(n);
                // Once a chain day (the clock now the node's): train the load model on a copy of
                // the history, away from the device side.
                if trained_day != Some(slot / 96) {
                    trained_day = Some(slot / 96);
                    let data = lock(&shared.home).data.clone();
                    let started = Instant::now();
                    if let Some(m) = data.train_load(slot) {
                        tracing::info!(
                            rows = m.training_rows,
                            mae_learned_kw = m.mae_learned_kw,
                            mae_persistence_kw = m.mae_persistence_kw,
                            in_use = m.in_use(),
                            seconds = started.elapsed().as_secs_f64(),
                            "trained the load model on the home's history"
                        );
                        lock(&shared.home)
                            .data
                            .set_learned(Some(std::sync::Arc::new(m)));
                    }
                }
            }
            Err(e) => {
                let mut n = lock(&shared.node);
                if n.error.is_none() {
                    tracing::warn!(error = %format!("{e:#}"), "the node is away: local self-consumption until it is back");
                }
                n.trading = false;
                n.error = Some(format!("{e:#}"));
                drop(n);
                sleep_unless(done, retry);
            }
        }
    }
}

/// Today's (UTC) bill, savings and rewards of the owner's home, tokens, signed in (again when the
/// session lapsed).
fn home_today(
    client: &gridmesh_client::Client,
    owner: &Keypair,
    session: &mut Option<String>,
    slot: u64,
) -> Option<[f64; 3]> {
    let slots = slot % 96 + 1;
    for _ in 0..2 {
        let token = match session.clone() {
            Some(t) => t,
            None => {
                let t = client.sign_in(owner).ok()?;
                *session = Some(t.clone());
                t
            }
        };
        match client.home(&owner.address(), &token, slots) {
            Ok(v) => {
                let t = |s: &str| s.parse::<f64>().ok();
                return Some([
                    t(&v.totals.bill)?,
                    t(&v.totals.savings)?,
                    t(&v.totals.rewards)?,
                ]);
            }
            Err(_) => *session = None,
        }
    }
    None
}

fn sleep_unless(done: &AtomicBool, d: Duration) {
    let until = Instant::now() + d;
    while Instant::now() < until && !done.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(20).min(d));
    }
}

/// The device side: reads, signs, measures slots, drives the battery and PV, writes the status.
fn device_loop(
    cfg: &HomeConfig,
    shared: &Shared,
    stop: &AtomicBool,
    max_slots: Option<u64>,
) -> anyhow::Result<HomeReport> {
    // Modbus on this thread's own runtime: a request costs its two system calls, not a hand-off
    // to a worker thread and back. The MQTT connections (Home Assistant, the community gateway)
    // live on a runtime of their own, so they go on between polls.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let bg = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("home-mqtt")
        .enable_all()
        .build()?;
    let device_key =
        |p: &Option<std::path::PathBuf>, what: &str| -> anyhow::Result<Option<Keypair>> {
            p.as_ref()
                .map(|p| {
                    Keypair::load(p).with_context(|| {
                        format!("loading the {what} key {} (`{what}.key`)", p.display())
                    })
                })
                .transpose()
        };
    let mut pv = match &cfg.pv {
        Some(d) => Some(Device::new(
            "pv",
            d.sunspec,
            d.unit,
            device_key(&d.key, "pv")?,
        )),
        None => None,
    };
    let mut battery = match &cfg.battery {
        Some(d) => Some(Device::new(
            "battery",
            d.sunspec,
            d.unit,
            device_key(&d.key, "battery")?,
        )),
        None => None,
    };
    // The charger's central system: bound now, started once the chain (and so what its samples
    // are signed for) is known.
    let mut ev_listener = cfg
        .ev
        .as_ref()
        .map(|e| EvCharger::bind(e.ocpp_listen))
        .transpose()?;
    let ev_key = match &cfg.ev {
        Some(e) => device_key(&e.key, "ev")?,
        None => None,
    };
    let mut ev: Option<EvCharger> = None;
    let mut loads: Vec<Load> = {
        let _guard = bg.enter();
        cfg.home
            .loads
            .iter()
            .map(|spec| {
                let switch = cfg
                    .loads
                    .iter()
                    .find(|l| l.name == spec.name)
                    .expect("checked: a switch per load");
                Load::new(spec.clone(), switch)
            })
            .collect()
    };
    let mut heat_pump = cfg.home.heat_pump.as_ref().map(|spec| {
        let _guard = bg.enter();
        let c = cfg
            .heat_pump
            .as_ref()
            .expect("checked: a heat pump's drive");
        HeatPump::new(
            Heats::Space,
            (spec.comfort_c, spec.max_power_kw),
            (&c.drive, c.indoor.as_ref()),
            &ha_id(cfg),
        )
    });
    let mut hot_water = cfg.home.hot_water.as_ref().map(|spec| {
        let _guard = bg.enter();
        let c = cfg
            .hot_water
            .as_ref()
            .expect("checked: a hot-water heat pump's drive");
        HeatPump::new(
            Heats::Water,
            (spec.band_c, spec.max_power_kw),
            (&c.drive, c.tank.as_ref()),
            &ha_id(cfg),
        )
    });
    let meter_cfg = cfg.grid_meter.as_ref().expect("checked: a grid meter");
    let mut meter = match (&meter_cfg.sunspec, &meter_cfg.mqtt) {
        (Some(addr), _) => Meter::SunSpec(Device::new("grid_meter", *addr, meter_cfg.unit, None)),
        (None, Some(q)) => {
            let _guard = bg.enter();
            Meter::Mqtt(MqttMeter::start(
                q,
                &format!("gridmesh-home-meter-{}", ha_id(cfg)),
            ))
        }
        (None, None) => unreachable!("checked: a SunSpec or an MQTT meter"),
    };
    let store = TelemetryStore::open(&cfg.data_dir.join("telemetry"))
        .with_context(|| format!("opening the telemetry store in {}", cfg.data_dir.display()))?;
    let spec = planned_spec(cfg);
    let ha = cfg.home_assistant.as_ref().map(|h| {
        let _guard = bg.enter();
        let (host, port) = h.broker();
        let credentials = h.username.clone().zip(h.password.clone());
        crate::ha::HomeAssistant::start(
            &host,
            port,
            credentials,
            &h.discovery_prefix,
            &ha_id(cfg),
            &cfg.home.location,
        )
    });
    // Chain times of the last HA state, status and durable sample write.
    let (mut ha_published, mut status_written, mut stored_at) = (0u64, 0u64, 0u64);
    let mut last_mode = "";
    let mut unstored: Vec<gridmesh_ledger::telemetry::RawSample> = Vec::new();
    let mut publisher = None;
    let mut open: Option<OpenSlot> = None;
    let mut report = HomeReport::default();
    let mut status = Status::new(&cfg.data_dir);
    let mut written: Option<(f64, Instant)> = None;
    let mut pv_limit_written: Option<(f64, Instant)> = None;
    let revert = cfg.reversion();
    let refresh = revert / 3;
    let poll = Duration::from_millis(cfg.poll_ms);
    let mut last_seq: u64 = 0;

    let scale = u64::from(cfg.time_scale.max(1));
    let poll_chain_ms = cfg.poll_ms.saturating_mul(scale);
    let revert_chain_ms = (revert.as_millis() as u64).saturating_mul(scale);
    while !stop.load(Ordering::Relaxed) && max_slots.is_none_or(|n| report.slots < n) {
        std::thread::sleep(next_poll_in(
            lock(&shared.clock).extrapolated(),
            poll,
            poll_chain_ms,
            scale,
        ));
        report.polls += 1;
        let now = lock(&shared.clock).now();
        let slot = slot_of(now - 1);
        let node = lock(&shared.node).clone();

        // 1. Read every device.
        let pv_m = pv.as_mut().map(|d| rt.block_on(d.measure(now)));
        let bat_m = battery.as_mut().map(|d| rt.block_on(d.measure(now)));
        let grid_m = match &mut meter {
            Meter::SunSpec(d) => rt.block_on(d.measure(now)),
            Meter::Mqtt(m) => m.measure(now),
        };
        let ok = |m: &Option<Result<Measurement, String>>| {
            m.as_ref().and_then(|r| r.as_ref().ok()).cloned()
        };
        let (pv_now, bat_now, grid_now) = (ok(&pv_m), ok(&bat_m), grid_m.as_ref().ok().cloned());
        if let (None, Some(c), Some(id)) = (&ev, &cfg.ev, &node.chain_id) {
            if let Some(listener) = ev_listener.take() {
                ev = Some(EvCharger::start(c, ev_key.clone(), id, listener, &bg)?);
            }
        }
        let ev_now = ev.as_mut().map(|e| e.observe(slot));
        let loads_kwh: f64 = loads.iter_mut().map(|l| l.account(now)).sum();
        // The heat pumps' energy since the last poll, and the indoor and the tank's temperature:
        // their sensors', or their stores' models run on with what the heat pumps drew.
        let (heat_kwh, heat_kw_now, indoor_c) = match (heat_pump.as_mut(), &spec.heat_pump) {
            (Some(hp), Some(building)) => {
                let mut h = lock(&shared.home);
                let last = h.indoor_c.unwrap_or(building.comfort_c[0]);
                let outdoor = h.data.outdoor(slot, 1);
                let (kwh, kw, c) = hp.observe(now, last, |c| building.heating().store(&outdoor, c));
                h.indoor_c = Some(c);
                (kwh, kw, Some(c))
            }
            _ => (0.0, 0.0, None),
        };
        let (water_kwh, water_kw_now, tank_c) = match (hot_water.as_mut(), &spec.hot_water) {
            (Some(hw), Some(tank)) => {
                let mut h = lock(&shared.home);
                let last = h.tank_c.unwrap_or(tank.band_c[0]);
                let outdoor = h.data.outdoor(slot, 1);
                let (kwh, kw, c) = hw.observe(now, last, |c| tank.store(&outdoor, slot, c));
                h.tank_c = Some(c);
                (kwh, kw, Some(c))
            }
            _ => (0.0, 0.0, None),
        };
        let capacity = cfg.home.battery.as_ref().map(|b| b.capacity_kwh);
        let regs = Registers {
            pv_out: pv_now.as_ref().and_then(|m| m.out_register_mwh),
            battery_out: bat_now.as_ref().map(|m| m.out_register_mwh.unwrap_or(0)),
            battery_in: bat_now.as_ref().map(|m| m.in_register_mwh.unwrap_or(0)),
            grid_import: grid_now.as_ref().map(|m| m.in_register_mwh.unwrap_or(0)),
            grid_export: grid_now.as_ref().map(|m| m.out_register_mwh.unwrap_or(0)),
            soc_kwh: bat_now
                .as_ref()
                .and_then(|m| m.soc_pct)
                .zip(capacity)
                .map(|(pct, cap)| pct / 100.0 * cap),
            ev_in: ev_now.as_ref().and_then(|e| e.register_mwh),
        };
        let soc_now = {
            let mut h = lock(&shared.home);
            h.now_ms = now;
            if regs.soc_kwh.is_some() {
                h.soc_now_kwh = regs.soc_kwh;
            }
            if let Some(e) = &ev_now {
                h.ev_plugged = e.plugged;
                h.ev_session_kwh = e.session_kwh;
                h.ev_full &= e.plugged;
            }
            h.loads_done_kwh = loads.iter().map(|l| l.done_kwh).collect();
            h.soc_now_kwh
        };

        // 2. Sign what the keyed devices measured, keep it, publish it: once the clock is the
        // chain's (a time-scaled home's is not before it heard from the node).
        let timed = lock(&shared.clock).synced;
        if let Some(id) = node.chain_id.as_ref().filter(|_| timed) {
            let seq = now.max(last_seq + 1);
            last_seq = seq;
            let mut samples = Vec::new();
            for (dev, m) in [(&pv, &pv_now), (&battery, &bat_now)] {
                if let (Some(Device { key: Some(key), .. }), Some(m)) = (dev, m) {
                    samples.push(gridmesh_gateway::sunspec::sample(key, id, seq, m));
                }
            }
            if let Some(e) = &ev {
                samples.extend(e.take_samples());
            }
            if let (None, Some(m)) = (&publisher, &cfg.mqtt) {
                let (host, port) = crate::config::host_port(m).expect("checked: host:port");
                let _guard = bg.enter();
                publisher = Some(gridmesh_gateway::mqtt::Publisher::connect(
                    &host,
                    port,
                    &format!("gridmesh-home-{}", cfg.home.location.replace('/', "-")),
                    id,
                ));
            }
            if let Some(p) = &publisher {
                for s in &samples {
                    p.try_sample(s);
                }
            }
            unstored.extend(samples);
        }
        let slot_ended = open.as_ref().is_some_and(|o| o.slot != slot);
        if slot_ended || now >= stored_at + SAMPLE_FLUSH_MS || unstored.len() >= 4_096 {
            if let Err(e) = store.append(&unstored) {
                tracing::error!(error = %e, "cannot store samples");
            }
            unstored.clear();
            stored_at = now;
        }

        // 3. Close the slot that ended.
        match open.as_mut().filter(|_| timed) {
            None if !timed => {}
            None => {
                open = Some(OpenSlot {
                    slot,
                    start: None,
                    last: regs,
                    planned: false,
                    loads_kwh: 0.0,
                    heat_kwh: 0.0,
                    water_kwh: 0.0,
                })
            }
            Some(o) if o.slot == slot => {
                o.last = o.last.updated(regs);
                o.loads_kwh += loads_kwh;
                o.heat_kwh += heat_kwh;
                o.water_kwh += water_kwh;
            }
            Some(o) => {
                let ended = std::mem::replace(
                    o,
                    OpenSlot {
                        slot,
                        start: (slot == o.slot + 1).then_some(o.last),
                        last: o.last.updated(regs),
                        planned: false,
                        // What ran since the last poll ran mostly in the slot that ended.
                        loads_kwh: 0.0,
                        heat_kwh: 0.0,
                        water_kwh: 0.0,
                    },
                );
                let ended_loads_kwh = ended.loads_kwh + loads_kwh;
                let ended_heat_kwh = ended.heat_kwh + heat_kwh;
                let ended_water_kwh = ended.water_kwh + water_kwh;
                if let (Some(start), Some(id)) = (ended.start, node.chain_id.as_deref()) {
                    let keys = (
                        pv.as_ref().and_then(|d| d.key.as_ref()),
                        battery.as_ref().and_then(|d| d.key.as_ref()),
                        ev.as_ref().and_then(|e| e.key.as_ref()),
                    );
                    let mut journal = lock(&shared.journal);
                    let mut record = close_slot(
                        id,
                        &store,
                        keys,
                        ended.slot,
                        start,
                        ended.last,
                        ended.planned,
                        (ended_loads_kwh, ended_heat_kwh, ended_water_kwh),
                        &mut journal,
                        cfg.control.max_queued_readings,
                    );
                    record.indoor_c = indoor_c;
                    record.tank_c = tank_c;
                    let mut home = lock(&shared.home);
                    if let Some(p) = home.plans.get(&ended.slot).filter(|_| ended.planned) {
                        record.planned_battery_kw = Some(p.battery_kw);
                        record.planned_grid_kw = Some(p.import_kw - p.export_kw);
                        record.planned_ev_kw = cfg.ev.as_ref().map(|_| p.ev_kw);
                        // A car that drew next to nothing of a slot's plan is full: the plan
                        // stops asking it for more (a charger's meter lags a minute, so what is
                        // left of the session's energy is no reason to keep trying).
                        let full = p.ev_kw > EV_FULL_PLANNED_KW && record.ev_kw < 0.1 * p.ev_kw;
                        record.planned_loads_kw =
                            (!p.loads_kw.is_empty()).then(|| p.loads_kw.iter().sum());
                        record.planned_heat_pump_kw =
                            cfg.home.heat_pump.as_ref().map(|_| p.heat_pump_kw);
                        record.planned_hot_water_kw =
                            cfg.home.hot_water.as_ref().map(|_| p.hot_water_kw);
                        let planned_soc_kwh = p.soc_kwh;
                        if full && home.ev_plugged && !home.ev_full {
                            tracing::info!(slot = ended.slot, "the EV takes no more: full");
                            home.ev_full = true;
                        }
                        // Watch: the battery parted from the plan by more than the threshold.
                        if let Some(soc) = record.soc_kwh {
                            if (soc - planned_soc_kwh).abs() > cfg.control.replan_soc_kwh {
                                tracing::info!(
                                    slot = ended.slot,
                                    measured_kwh = soc,
                                    planned_kwh = planned_soc_kwh,
                                    "the battery parted from the plan: planning again"
                                );
                                report.replans += 1;
                                shared.replan.store(true, Ordering::Relaxed);
                            }
                        }
                    }
                    report.slots += 1;
                    report.planned_slots += u64::from(ended.planned);
                    home.record(ended.slot, record);
                    drop(home);
                    journal.record(ended.slot, record);
                    if let Err(e) = journal.save() {
                        tracing::error!(error = %e, "cannot save the journal");
                    }
                }
            }
        }

        // 4. Drive the battery and PV: the plan while the node answers, else self-consumption.
        let plan = lock(&shared.home)
            .plans
            .get(&slot)
            .cloned()
            .filter(|_| node.trading && node.islanded.is_none());
        let grid_kw = grid_now
            .as_ref()
            .and_then(|m| m.power_w)
            .map(|w| f64::from(w) / 1e3);
        // The battery's meter counts charging as import: positive W charging.
        let battery_kw = bat_now
            .as_ref()
            .and_then(|m| m.power_w)
            .map(|w| -f64::from(w) / 1e3);
        let pv_kw = pv_now
            .as_ref()
            .and_then(|m| m.power_w)
            .map(|w| f64::from(w) / 1e3);
        // The heat pumps' power this poll: the plan's within the band, or the thermostat's.
        let next = |hp: Option<&HeatPump>, now_c: Option<f64>, planned: Option<f64>| {
            let (hp, now_c) = (hp?, now_c?);
            let kw = hp.wanted_kw(planned, now_c);
            Some((kw, hp.power_after(kw, slot)))
        };
        let heat_next = next(
            heat_pump.as_ref(),
            indoor_c,
            plan.as_ref().map(|p| p.heat_pump_kw),
        );
        let water_next = next(
            hot_water.as_ref(),
            tank_c,
            plan.as_ref().map(|p| p.hot_water_kw),
        );
        // What the home draws beyond its PV: import plus discharge, and the heat pumps' changes
        // about to be made (known before the meter sees them).
        let change = |next: Option<(f64, f64)>, now_kw: f64| next.map_or(0.0, |(_, a)| a - now_kw);
        let net_kw = grid_kw.map(|g| {
            g + battery_kw.unwrap_or(0.0)
                + change(heat_next, heat_kw_now)
                + change(water_next, water_kw_now)
        });
        let ev_kw = ev_now.as_ref().map(|e| e.charging_kw);
        let mut target_kw = None;
        if let (Some(b), Some(dev)) = (&spec.battery, battery.as_mut()) {
            let soc = soc_now.unwrap_or(b.capacity_kwh / 2.0);
            // The EV's draw is in `net_kw`: where it departs from the plan (a full car, a charger
            // started and stopped) the battery holds the grid exchange the home traded, too.
            let wanted = battery_setpoint_kw(plan.as_ref(), net_kw, b.power_kw);
            let wanted = if wanted > 0.0 && soc <= b.reserve_kwh {
                0.0
            } else {
                wanted
            };
            target_kw = Some(wanted);
            let due = written.is_none_or(|(kw, at): (f64, Instant)| {
                (kw - wanted).abs() > SETPOINT_STEP_KW || at.elapsed() >= refresh
            });
            if due {
                match rt.block_on(dev.hold_battery(wanted, revert)) {
                    Ok(()) => written = Some((wanted, Instant::now())),
                    Err(e) => tracing::debug!(error = %e, "battery setpoint not written"),
                }
            }
        }
        // No export beyond the envelope (in self-consumption too: the last one known).
        if let (Some(dev), Some((_, cap_kw)), Some(pv_kw), Some(net_kw)) =
            (pv.as_mut(), node.export_cap, pv_kw, net_kw)
        {
            let pct = pv_limit_pct(
                net_kw + pv_kw,
                target_kw.unwrap_or(0.0),
                cap_kw,
                cfg.home.pv_kwp,
            );
            let due = pv_limit_written.is_none_or(|(p, at): (f64, Instant)| {
                (p - pct).abs() > 1.0 || at.elapsed() >= refresh
            });
            if due && (pct < 100.0 || pv_limit_written.is_some_and(|(p, _)| p < 100.0)) {
                match rt.block_on(dev.limit_pv(pct, revert)) {
                    Ok(()) => pv_limit_written = Some((pct, Instant::now())),
                    Err(e) => tracing::debug!(error = %e, "PV limit not written"),
                }
            }
        }
        // The EV: the plan's next slots, or its minimum rate without a plan.
        if let Some(e) = ev.as_mut() {
            let want = if plan.is_some() {
                EvWant::Plan(
                    lock(&shared.home)
                        .plans
                        // From the slot before: a charger whose clock is behind has its limit.
                        .range(slot.saturating_sub(1)..slot + crate::ev::PROFILE_SLOTS)
                        .map(|(k, p)| (*k, p.ev_kw))
                        .collect(),
                )
            } else {
                EvWant::Minimum
            };
            e.drive(&want, now, revert_chain_ms, refresh, &bg);
        }
        // The heat pump: the plan's power within the band, or the thermostat.
        if let (Some(hp), Some((kw, _))) = (heat_pump.as_mut(), heat_next) {
            rt.block_on(hp.drive(kw, slot, refresh));
        }
        if let (Some(hw), Some((kw, _))) = (hot_water.as_mut(), water_next) {
            rt.block_on(hw.drive(kw, slot, refresh));
        }
        // The shiftable loads: on until the slot's planned energy is done, or by their window.
        for (k, l) in loads.iter_mut().enumerate() {
            let planned_kw = plan
                .as_ref()
                .map(|p| p.loads_kw.get(k).copied().unwrap_or(0.0));
            let on = l.wanted(planned_kw, slot);
            rt.block_on(l.drive(on, refresh));
        }
        if let Some(o) = open.as_mut() {
            o.planned |= plan.is_some();
        }

        // 5. Home Assistant, every few seconds.
        if let Some(ha) = ha.as_ref().filter(|_| now >= ha_published + HA_EVERY_MS) {
            ha_published = now;
            let kwh = |v: Option<u64>| v.map(|mwh| (mwh as f64 / 1e3).round() / 1e3);
            let round = |v: Option<f64>, digits: i32| {
                v.map(|x| (x * 10f64.powi(digits)).round() / 10f64.powi(digits))
            };
            let plan_slots: Vec<serde_json::Value> = lock(&shared.home)
                .plans
                .range(slot..slot + 8)
                .map(|(k, p)| {
                    serde_json::json!({
                        "start": gridmesh_types::units::rfc3339(slot_start_ms(*k) / 1_000),
                        "battery_kw": round(Some(p.battery_kw), 2),
                        "grid_kw": round(Some(p.import_kw - p.export_kw), 2),
                    })
                })
                .collect();
            let today = node.today.map(|t| t.map(|v| (v * 1e4).round() / 1e4));
            ha.publish_state(&serde_json::json!({
                "grid_import": kwh(regs.grid_import),
                "grid_export": kwh(regs.grid_export),
                "pv_energy": kwh(regs.pv_out),
                "battery_charged": kwh(regs.battery_in),
                "battery_discharged": kwh(regs.battery_out),
                "battery_soc": round(bat_now.as_ref().and_then(|m| m.soc_pct), 1),
                "battery_power": round(battery_kw, 2),
                "ev_energy": kwh(regs.ev_in),
                "ev_power": round(ev_kw, 2),
                "grid_power": round(grid_kw, 2),
                "price_now": round(node.price_now, 4),
                "plan": plan_slots.first().map(|p| p["battery_kw"].clone()),
                "plan_slots": plan_slots,
                "bill_today": today.map(|t| t[0]),
                "savings_today": today.map(|t| t[1]),
                "tokens_earned_today": today.map(|t| t[2]),
            }));
        }

        // 6. Status: every few seconds, when a slot closed and when the mode changed.
        let mode = if plan.is_some() {
            "plan"
        } else {
            "self-consumption"
        };
        if !(slot_ended || mode != last_mode || now >= status_written + STATUS_EVERY_MS) {
            continue;
        }
        status_written = now;
        last_mode = mode;
        report.readings_committed = node.readings_committed;
        report.readings_refused = node.readings_refused;
        report.last_reading_error = node.last_reading_error.clone();
        report.orders_placed = node.orders_placed;
        report.sells = node.sells;
        let (queued, dropped, last_day) = {
            let j = lock(&shared.journal);
            (
                j.queue.len(),
                j.dropped,
                crate::status::last_day(slot, &j.history),
            )
        };
        let home = lock(&shared.home);
        status.update(|s| {
            s.time_ms = now;
            s.slot = slot;
            s.mode = if plan.is_some() {
                "plan"
            } else {
                "self-consumption"
            };
            s.fallback_reason = match (&node.error, plan) {
                (Some(e), _) => Some(format!("the node is away: {e}")),
                (None, None) if node.islanded.is_some() => Some(format!(
                    "the community is {}: no trade with the grid",
                    node.islanded.as_deref().unwrap_or("islanded")
                )),
                (None, None) if !node.trading => Some("not connected to the node yet".into()),
                (None, None) => Some("no plan covers this slot yet".into()),
                (None, Some(_)) => None,
            };
            s.forecast = home.forecast;
            s.learned = home.data.learned().map(|l| crate::status::LearnedStatus {
                trained_at_ms: slot_start_ms(l.trained_at),
                training_rows: l.training_rows,
                mae_learned_kw: l.mae_learned_kw,
                mae_persistence_kw: l.mae_persistence_kw,
                in_use: l.in_use(),
            });
            s.devices.clear();
            for d in [pv.as_ref(), battery.as_ref()].into_iter().flatten() {
                s.devices.insert(d.name.to_string(), d.status());
            }
            for l in &loads {
                s.devices
                    .insert(format!("load {}", l.spec.name), l.status());
            }
            if let Some(hp) = &heat_pump {
                s.devices.insert("heat_pump".to_string(), hp.status());
            }
            if let Some(hw) = &hot_water {
                s.devices.insert("hot_water".to_string(), hw.status());
            }
            s.now.indoor_c = indoor_c;
            s.now.tank_c = tank_c;
            s.devices.insert(
                "grid_meter".to_string(),
                match &meter {
                    Meter::SunSpec(d) => d.status(),
                    Meter::Mqtt(m) => m.status(),
                },
            );
            if let Some(e) = &ev {
                s.devices.insert("ev".to_string(), e.status());
            }
            s.now.ev_kw = ev_kw;
            s.now.ev_plugged = ev_now.as_ref().map(|e| e.plugged);
            s.now.ev_session_kwh = ev_now.as_ref().map(|e| e.session_kwh);
            s.setpoints.ev_control = ev.as_ref().map(|e| e.control());
            s.setpoints.ev_ocpp = ev.as_ref().and_then(|e| e.ocpp_version());
            s.now.pv_kw = pv_kw;
            s.now.battery_kw = battery_kw;
            s.now.grid_kw = grid_kw;
            s.now.load_kw = net_kw.map(|n| n + pv_kw.unwrap_or(0.0));
            s.now.soc_kwh = soc_now;
            s.setpoints.battery_kw = target_kw;
            s.setpoints.pv_limit_pct = pv_limit_written.map(|(p, _)| p);
            s.export_cap_kw = node.export_cap.filter(|(s, _)| *s == slot).map(|(_, c)| c);
            s.plan = home
                .plans
                .range(slot..slot + 8)
                .map(|(k, p)| PlanRow::planned(*k, p))
                .collect();
            s.last_day = last_day;
            s.readings_queued = queued;
            s.readings_dropped = dropped;
            s.orders = node.orders.clone();
            s.report = report.clone();
        });
    }
    // Leave the battery to its own control now rather than at its timeout.
    if let Some(dev) = battery.as_mut() {
        let _ = rt.block_on(dev.hold_battery(0.0, Duration::from_secs(1)));
    }
    Ok(report)
}

/// The battery's setpoint (positive discharging), from what the home draws beyond its PV now
/// (`net_kw`, measured). Following a plan, the battery holds the plan's exchange with the grid:
/// the plan's own battery power, corrected by how far the home's load and PV are from their
/// forecasts, so a forecast error lands in the battery (as self-consumption would have it) and not
/// on the grid, where the home's orders stand. Except where the plan exports: there the battery
/// discharges no more (charges no less) than planned, and a shortfall shrinks the export, since
/// feed-in pays less than the stored energy is worth (the simulator's homes, 30 days: a mean bill
/// 2.2 % lower in May, 0.5 % in January). Without a plan: self-consumption, the battery covering
/// the home or taking its surplus. Within the battery's power either way.
pub fn battery_setpoint_kw(plan: Option<&PlanEntry>, net_kw: Option<f64>, power_kw: f64) -> f64 {
    let kw = match (plan, net_kw) {
        (Some(p), Some(net)) if p.export_kw > 1e-9 => {
            (net - (p.import_kw - p.export_kw)).min(p.battery_kw)
        }
        (Some(p), Some(net)) => net - (p.import_kw - p.export_kw),
        (Some(p), None) => p.battery_kw,
        (None, Some(net)) => net,
        (None, None) => 0.0,
    };
    kw.clamp(-power_kw, power_kw)
}

/// The home's id in Home Assistant: its location, made a topic level.
pub fn ha_id(cfg: &HomeConfig) -> String {
    cfg.home
        .location
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect()
}

/// The household the home plans and drives: the configured one with the battery's and the EV's
/// power kept a little below their ratings. A slot's reading is the register's change between the last polls
/// before the slot's two ends, a window up to one poll longer than the slot; the ledger bounds a
/// reading by the rating over the slot itself. So the home leaves one poll's share of the slot,
/// and 1 % more, unused: 1.1 % at a real home's 1 s poll.
pub fn planned_spec(cfg: &HomeConfig) -> HomeSpec {
    let mut spec = cfg.home.clone();
    let poll_chain_ms = cfg.poll_ms.saturating_mul(u64::from(cfg.time_scale)) as f64;
    let headroom = (poll_chain_ms / SLOT_MS as f64 + 0.01).min(0.5);
    if let Some(b) = spec.battery.as_mut() {
        b.power_kw *= 1.0 - headroom;
    }
    // The charger's register comes with its meter values, up to a minute late at either end.
    if let Some(e) = spec.ev.as_mut() {
        e.power_kw *= 1.0 - headroom - 60_000.0 / SLOT_MS as f64;
    }
    spec
}

/// Real time to the next poll: `poll`, or less to poll just before the slot's end (a quarter poll,
/// at most 5 s of chain time, before it). A slot's reading spans its registers from the last poll
/// of the slot before to its own last poll: with both just before the slot's ends, the span is the
/// slot's fifteen minutes whatever the poll, give or take how late the thread wakes.
pub fn next_poll_in(now_ms: u64, poll: Duration, poll_chain_ms: u64, scale: u64) -> Duration {
    let margin_ms = (poll_chain_ms / 4).clamp(1, 5_000);
    let close_at = slot_start_ms(slot_of(now_ms) + 1).saturating_sub(margin_ms);
    if close_at <= now_ms {
        return poll;
    }
    let to_close = Duration::from_millis((close_at - now_ms) / scale.max(1));
    poll.min(to_close.max(Duration::from_millis(1)))
}

/// The PV limit (percent of `rated_kw`) that keeps export within `export_cap_kw`: PV may cover
/// the home's `load_kw`, the battery's charging (`battery_kw` negative) and the cap, no more.
pub fn pv_limit_pct(load_kw: f64, battery_kw: f64, export_cap_kw: f64, rated_kw: f64) -> f64 {
    let allowed_kw = (load_kw.max(0.0) + (-battery_kw).max(0.0) + export_cap_kw.max(0.0)).max(0.0);
    (allowed_kw / rated_kw * 100.0).clamp(0.0, 100.0)
}

fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Measures a slot that ended: its record, and its signed readings queued (the connection's
/// meter reading, and each keyed device's reading committing to its samples in the slot).
#[allow(clippy::too_many_arguments)]
fn close_slot(
    chain_id: &str,
    store: &TelemetryStore,
    (pv_key, battery_key, ev_key): (Option<&Keypair>, Option<&Keypair>, Option<&Keypair>),
    slot: u64,
    start: Registers,
    end: Registers,
    planned: bool,
    (loads_kwh, heat_kwh, water_kwh): (f64, f64, f64),
    journal: &mut Journal,
    max_queue: usize,
) -> SlotRecord {
    let kwh = |mwh: Option<u64>| mwh.map_or(0.0, |v| v as f64 / 1e6);
    let pv = delta(start.pv_out, end.pv_out);
    let b_out = delta(start.battery_out, end.battery_out);
    let b_in = delta(start.battery_in, end.battery_in);
    let imp = delta(start.grid_import, end.grid_import);
    let exp = delta(start.grid_export, end.grid_export);
    let ev = delta(start.ev_in, end.ev_in);
    // The household's load: what the home drew, less what went into the EV, the shiftable
    // loads and the heat pumps (planned apart).
    let record = SlotRecord {
        load_kw: (kwh(imp) - kwh(exp) + kwh(pv) + kwh(b_out)
            - kwh(b_in)
            - kwh(ev)
            - loads_kwh
            - heat_kwh
            - water_kwh)
            .max(0.0)
            / SLOT_H,
        heat_pump_kw: heat_kwh / SLOT_H,
        planned_heat_pump_kw: None,
        indoor_c: None,
        hot_water_kw: water_kwh / SLOT_H,
        planned_hot_water_kw: None,
        tank_c: None,
        ev_kw: kwh(ev) / SLOT_H,
        loads_kw: loads_kwh / SLOT_H,
        planned_loads_kw: None,
        pv_kw: kwh(pv) / SLOT_H,
        battery_kw: (kwh(b_out) - kwh(b_in)) / SLOT_H,
        import_kwh: kwh(imp),
        export_kwh: kwh(exp),
        soc_kwh: end.soc_kwh,
        planned,
        planned_battery_kw: None,
        planned_grid_kw: None,
        planned_ev_kw: None,
    };
    if let (Some(import_mwh), Some(export_mwh)) = (imp, exp) {
        let kind = TxKind::SubmitReading {
            slot,
            import_mwh,
            export_mwh,
        };
        journal.enqueue(Queued::new(slot, "meter", &kind), max_queue);
    }
    let (from_ms, to_ms) = (slot_start_ms(slot), slot_start_ms(slot + 1));
    let mut readings = Vec::new();
    // The register a reading carries is the device's export register: a charger's stays 0.
    for (key, out, inn, register) in [
        (pv_key, pv, Some(0), end.pv_out),
        (battery_key, b_out, b_in, end.battery_out),
        (ev_key, ev.map(|_| 0), ev, ev.map(|_| 0)),
    ] {
        let (Some(key), Some(out), Some(inn), Some(register)) = (key, out, inn, register) else {
            continue;
        };
        match store.commitment(&key.address(), from_ms, to_ms) {
            Ok(c) if c.count > 0 => readings.push(DeviceReading::signed(
                key, chain_id, slot, out, inn, register, c.root, c.count,
            )),
            // A charger reports meter values only while it charges.
            Ok(_) if out == 0 && inn == 0 => {}
            Ok(_) => {
                tracing::warn!(slot, device = %key.address(), "no samples in the slot: no reading")
            }
            Err(e) => tracing::error!(error = %e, "cannot read the telemetry store"),
        }
    }
    if !readings.is_empty() {
        let kind = TxKind::SubmitDeviceReadings { readings };
        journal.enqueue(Queued::new(slot, "devices", &kind), max_queue);
    }
    record
}

/// What one round of sending did.
#[derive(Default)]
struct Sent {
    committed: u64,
    refused: u64,
    last_error: Option<String>,
}

/// What became of one queued transaction.
enum Fate {
    Sent(String),
    Committed,
    /// Its slot has not ended on the chain yet, or the node forgot it: send it again.
    Again,
    Refused(String),
    Unchanged,
}

/// Sends what waits in the queue (oldest first) and learns what became of what was sent: a
/// committed reading leaves the queue; one refused because its slot has not ended on the chain
/// yet is sent again later; one refused for another reason is dropped and counted. The queue's
/// lock is held only to copy it and to apply the outcomes, never across a request.
fn send_queue(agent: &mut Agent<'_>, shared: &Shared) -> Sent {
    let items: Vec<Queued> = lock(&shared.journal)
        .queue
        .iter()
        .take(4 * SENDS_PER_POLL)
        .cloned()
        .collect();
    let mut fates = Vec::with_capacity(items.len());
    let mut sends = 0;
    let mut blocked = false;
    for q in &items {
        let fate = if let Some(hash) = &q.sent {
            match hash.parse().map(|h| agent.client().tx(&h)) {
                Err(_) => Fate::Again,
                Ok(Ok(Some(t))) if t.status == "committed" => Fate::Committed,
                Ok(Ok(Some(_))) => Fate::Unchanged,
                Ok(Ok(None)) => Fate::Again,
                Ok(Err(e)) => {
                    let msg = format!("{e:#}");
                    if msg.contains("can only come after") {
                        Fate::Again
                    } else if matches!(e, gridmesh_client::ClientError::Unreachable { .. }) {
                        Fate::Unchanged
                    } else {
                        Fate::Refused(msg)
                    }
                }
            }
        } else if blocked || sends >= SENDS_PER_POLL {
            Fate::Unchanged
        } else {
            sends += 1;
            match q.kind() {
                Err(e) => Fate::Refused(format!("a damaged queue entry: {e:#}")),
                Ok(kind) => match agent.send(kind) {
                    Ok(hash) => Fate::Sent(hash.to_string()),
                    Err(e) => {
                        let msg = format!("{e:#}");
                        if msg.contains("can only come after") || msg.contains("cannot reach") {
                            // Its slot has not ended on the chain yet (nor have later ones), or
                            // the node is away.
                            blocked = true;
                            Fate::Unchanged
                        } else {
                            Fate::Refused(msg)
                        }
                    }
                },
            }
        };
        fates.push(fate);
    }
    let mut sent = Sent::default();
    let mut journal = lock(&shared.journal);
    let mut changed = false;
    for (q, fate) in items.iter().zip(fates) {
        let same = |e: &Queued| e.slot == q.slot && e.what == q.what && e.kind_hex == q.kind_hex;
        let Some(k) = journal.queue.iter().position(same) else {
            continue;
        };
        match fate {
            Fate::Unchanged => {}
            Fate::Sent(hash) => {
                journal.queue[k].sent = Some(hash);
                changed = true;
            }
            Fate::Again => {
                journal.queue[k].sent = None;
                changed = true;
            }
            Fate::Committed => {
                sent.committed += 1;
                journal.queue.remove(k);
                changed = true;
            }
            Fate::Refused(msg) => {
                tracing::warn!(slot = q.slot, what = %q.what, error = %msg, "reading refused");
                sent.refused += 1;
                sent.last_error = Some(msg);
                journal.queue.remove(k);
                changed = true;
            }
        }
    }
    if changed {
        if let Err(e) = journal.save() {
            tracing::error!(error = %e, "cannot save the journal");
        }
    }
    sent
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pv_is_limited_to_what_the_home_the_battery_and_the_envelope_take() {
        // 1 kW load, charging 2 kW, 0.5 kW export allowed: 3.5 of 7 kW.
        assert!((pv_limit_pct(1.0, -2.0, 0.5, 7.0) - 50.0).abs() < 1e-9);
        // A discharging battery takes nothing.
        assert!((pv_limit_pct(1.0, 2.0, 0.0, 5.0) - 20.0).abs() < 1e-9);
        // Never above 100 % or below 0 %.
        assert_eq!(pv_limit_pct(10.0, -5.0, 10.0, 6.0), 100.0);
        assert_eq!(pv_limit_pct(-1.0, 1.0, -1.0, 6.0), 0.0);
    }

    #[test]
    fn the_battery_holds_the_plans_grid_exchange_but_not_an_export_or_covers_the_home() {
        let plan = PlanEntry {
            battery_kw: -2.0,
            import_kw: 2.5,
            export_kw: 0.0,
            soc_kwh: 5.0,
            ev_kw: 0.0,
            loads_kw: Vec::new(),
            heat_pump_kw: 0.0,
            indoor_c: None,
            hot_water_kw: 0.0,
            tank_c: None,
        };
        // Planned: charge 2 kW, import 2.5 kW for a 0.5 kW home. The home draws 0.8 kW: the
        // battery charges 1.7 kW and the grid stays at the plan's 2.5 kW.
        assert!((battery_setpoint_kw(Some(&plan), Some(0.8), 5.0) + 1.7).abs() < 1e-9);
        // Without a measurement, the plan as it is.
        assert_eq!(battery_setpoint_kw(Some(&plan), None, 5.0), -2.0);
        // Without a plan, self-consumption, within the battery's power.
        assert_eq!(battery_setpoint_kw(None, Some(0.7), 5.0), 0.7);
        assert_eq!(battery_setpoint_kw(None, Some(-9.0), 5.0), -5.0);
        assert_eq!(battery_setpoint_kw(None, None, 5.0), 0.0);
        // Planned: export 3 kW of a 4 kW surplus, charging 1 kW. Less PV (a 2 kW surplus): the
        // battery keeps charging 1 kW and the export shrinks to 1 kW; more PV (5 kW): the battery
        // takes the extra, the export stays.
        let exporting = PlanEntry {
            battery_kw: -1.0,
            import_kw: 0.0,
            export_kw: 3.0,
            ..plan
        };
        assert_eq!(battery_setpoint_kw(Some(&exporting), Some(-2.0), 5.0), -1.0);
        assert_eq!(battery_setpoint_kw(Some(&exporting), Some(-5.0), 5.0), -2.0);
    }

    #[test]
    fn the_process_knows_its_cpu_time_and_memory() {
        let (cpu, peak) = own_resources();
        assert!(peak.is_some_and(|kb| kb > 100), "{peak:?}");
        // Busy until the CPU time moves (a tick is 10 ms), within 5 s of wall time.
        let busy = std::time::Instant::now();
        while own_resources().0 == cpu && busy.elapsed() < Duration::from_secs(5) {
            std::hint::black_box(0);
        }
        let (after, _) = own_resources();
        assert!(after.unwrap() > cpu.unwrap(), "{cpu:?} {after:?}");
    }

    #[test]
    fn the_last_poll_of_a_slot_comes_just_before_its_end() {
        let poll = Duration::from_secs(15);
        let slot_start = slot_start_ms(100);
        // Mid-slot: a whole poll.
        assert_eq!(next_poll_in(slot_start + 60_000, poll, 15_000, 1), poll);
        // 10 s before the end: 10 s less the margin (3.75 s).
        assert_eq!(
            next_poll_in(slot_start + SLOT_MS - 10_000, poll, 15_000, 1),
            Duration::from_millis(6_250)
        );
        // Within the margin: the next poll falls in the next slot.
        assert_eq!(
            next_poll_in(slot_start + SLOT_MS - 1_000, poll, 15_000, 1),
            poll
        );
        // At 600 times: 55 s of chain time to the poll (the margin at most 5 s) are 91 real ms.
        assert_eq!(
            next_poll_in(
                slot_start + SLOT_MS - 60_000,
                Duration::from_millis(100),
                60_000,
                600
            ),
            Duration::from_millis(91)
        );
    }

    #[test]
    fn the_clock_never_goes_back_and_follows_a_node_ahead() {
        let mut c = Clock::new(600, 1_000_000);
        let a = c.now();
        c.sync(0);
        let b = c.now();
        assert!(b > a, "{a} {b}");
        c.sync(a + 3_600_000);
        assert!(c.now() >= a + 3_600_000);
    }
}
