//! `gridmesh agent`: one home's energy agent trading through a node's public API.
//!
//! Every poll the agent reads the market's public rules and clock (`GET /v1/market`: next open
//! slot, its gate closure, the tariff), works out what its home wants in the next open slot, and
//! places that as signed orders (`POST /v1/tx`). While the gate is open it keeps them current:
//! when the strategy's price moves by at least `reprice_per_kwh` (the linear ramp does as the
//! gate nears) or the wanted side changes, it cancels the old order and places a new one. It
//! never re-prices within `gate_margin_ms` of gate closure (the transactions could not reach a
//! block in time). The optimising agent answers the grid operator's published requests to reduce
//! draw: it plans with the request's value on import below its plan without it (the battery
//! discharges, the EV waits), and bids what that plan imports. It also plans within its
//! connection's operating envelopes where the grid operator published them
//! (`GET /v1/market/slots/{slot}/envelope`), planning again when the target slot's arrives.
//!
//! What the agent sees: the market's public rules and clock, its own account and the receipts of
//! its own transactions, and its own home's data (`HomeSpec`: a household of the BDEW profile
//! and rooftop PV under the test reference year, mapped onto the chain's day of the year). It
//! never reads other members' orders, bills or readings.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use gridmesh_agent::data::{
    household_load_kw, parse_bdew, parse_try, pv_power_kw, PvArray, REFERENCE_H25, REFERENCE_TRY,
    SLOTS_2010,
};
use gridmesh_agent::forecast::home_forecast;
use gridmesh_agent::schedule::{
    Battery, Ev, FlexEvent, FlexReward, HomeProblem, Plan, Schedule, DT_H,
};
use gridmesh_agent::strategy::{
    LinearRamp, MarketView, Optimising, OrderIntent, Position, Side, Strategy, ZeroIntelligence,
};
use gridmesh_ledger::{Keypair, TxKind};
use gridmesh_types::units::{slot_start_ms, SLOT_MS};
use gridmesh_types::{Address, Hash32};
use serde::{Deserialize, Serialize};

use crate::client::Client;

/// A home as its agent knows it (TOML).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HomeSpec {
    /// The market area of the home's connection, e.g. `street-1/home-4`.
    #[serde(default)]
    pub location: String,
    /// The household's yearly consumption (BDEW H25 profile), kWh.
    pub annual_kwh: f64,
    /// Seed of the household's own variation around the profile.
    #[serde(default)]
    pub seed: u64,
    /// Rooftop PV, kWp (south, 30°).
    #[serde(default)]
    pub pv_kwp: f64,
    pub battery: Option<BatterySpec>,
    pub ev: Option<EvSpec>,
    /// Loads the plan may shift within their daily windows (a boiler, a heat pump run as a
    /// timer).
    #[serde(default)]
    pub loads: Vec<LoadSpec>,
    /// Space heating by a heat pump the plan moves in time within the comfort band (the
    /// building as a thermal store, the heat pump's COP from the outdoor temperature).
    pub heat_pump: Option<HeatPumpSpec>,
    /// A hot-water tank heated by its own heat pump (a heat-pump water heater, or a heat pump's
    /// hot-water circuit driven on its own), moved in time within the tank's band.
    pub hot_water: Option<HotWaterSpec>,
}

/// A heat pump heating the home: the building (its floor area and insulation class), the heat
/// pump's electrical rating, and the owner's comfort band.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HeatPumpSpec {
    pub floor_m2: f64,
    /// `passive`, `good`, `average` or `poor`.
    pub insulation: gridmesh_agent::thermal::Insulation,
    pub max_power_kw: f64,
    /// The band the home is kept in, °C: `[low, high]`.
    pub comfort_c: [f64; 2],
    /// Heat from people, appliances and the sun, kW.
    #[serde(default = "gains_kw")]
    pub gains_kw: f64,
}

fn gains_kw() -> f64 {
    0.3
}

impl HeatPumpSpec {
    /// The building and its band as the planner models them.
    pub fn heating(&self) -> gridmesh_agent::thermal::Heating {
        gridmesh_agent::thermal::Heating {
            floor_m2: self.floor_m2,
            insulation: self.insulation,
            max_power_kw: self.max_power_kw,
            band_c: (self.comfort_c[0], self.comfort_c[1]),
            gains_kw: self.gains_kw,
            hot_water: None,
        }
    }
}

/// A hot-water tank: what it holds, the heat the home draws from it a day (40 % from 06:00 to
/// 08:00 UTC, 50 % from 18:00 to 21:00, the rest over the day), the band the water is kept in,
/// and the electrical rating of the heat pump that heats it.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HotWaterSpec {
    pub litres: f64,
    pub kwh_per_day: f64,
    /// The band the water is kept in, °C: `[low, high]`.
    pub band_c: [f64; 2],
    pub max_power_kw: f64,
}

impl HotWaterSpec {
    /// The tank as the planner models it.
    pub fn hot_water(&self) -> gridmesh_agent::thermal::HotWater {
        gridmesh_agent::thermal::HotWater {
            litres: self.litres,
            kwh_per_day: self.kwh_per_day,
            band_c: (self.band_c[0], self.band_c[1]),
            max_power_kw: self.max_power_kw,
        }
    }

    /// The tank over `outdoor_c` (its heat pump's COP) from `slot` on, at `tank_c` now.
    pub fn store(
        &self,
        outdoor_c: &[f64],
        slot: u64,
        tank_c: f64,
    ) -> gridmesh_agent::thermal::ThermalStore {
        self.hot_water()
            .store(outdoor_c, (slot % 96) as usize, tank_c)
    }
}

/// A load that needs `energy_kwh` every day, run between `earliest_hour` and `latest_hour`
/// (UTC, 0-24; done by then) at up to `power_kw`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LoadSpec {
    pub name: String,
    pub power_kw: f64,
    pub energy_kwh: f64,
    pub earliest_hour: u8,
    pub latest_hour: u8,
}

impl LoadSpec {
    /// Today's window of the day of `slot`, as absolute slots [from, to).
    pub fn window(&self, slot: u64) -> (u64, u64) {
        let day = slot - slot % 96;
        (
            day + u64::from(self.earliest_hour) * 4,
            day + u64::from(self.latest_hour) * 4,
        )
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BatterySpec {
    pub capacity_kwh: f64,
    pub power_kw: f64,
    #[serde(default = "efficiency")]
    pub efficiency: f64,
    /// Kept for outages.
    #[serde(default)]
    pub reserve_kwh: f64,
}

fn efficiency() -> f64 {
    0.95
}

/// An EV plugged in every day from `arrival_hour` to `departure_hour` (UTC, 0-23; departure
/// the next day if earlier), needing `energy_kwh` by departure.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EvSpec {
    pub power_kw: f64,
    pub energy_kwh: f64,
    pub arrival_hour: u8,
    pub departure_hour: u8,
}

impl HomeSpec {
    /// Which of a plan's thermal stores (`Schedule::heat_kw`, `temperature_c`) are the
    /// building's and the hot-water tank's.
    pub fn thermal_stores(&self) -> (Option<usize>, Option<usize>) {
        let space = self.heat_pump.as_ref().map(|_| 0);
        let water = self
            .hot_water
            .as_ref()
            .map(|_| usize::from(self.heat_pump.is_some()));
        (space, water)
    }

    pub fn parse(text: &str) -> anyhow::Result<HomeSpec> {
        let h: HomeSpec = toml::from_str(text)?;
        h.check()?;
        Ok(h)
    }

    pub fn check(&self) -> anyhow::Result<()> {
        if !(self.annual_kwh > 0.0 && self.annual_kwh <= 1e6) {
            bail!(
                "annual_kwh must be above 0 and at most 1000000, not {}",
                self.annual_kwh
            );
        }
        if !(0.0..=1_000.0).contains(&self.pv_kwp) {
            bail!("pv_kwp must be 0 to 1000, not {}", self.pv_kwp);
        }
        if let Some(b) = &self.battery {
            if !(b.capacity_kwh > 0.0 && b.power_kw > 0.0) {
                bail!("the battery needs a positive capacity_kwh and power_kw");
            }
            if !(b.efficiency > 0.0 && b.efficiency <= 1.0) {
                bail!("battery efficiency must be in (0, 1], not {}", b.efficiency);
            }
            if !(0.0..b.capacity_kwh).contains(&b.reserve_kwh) {
                bail!("the battery's reserve_kwh must be below its capacity");
            }
        }
        for (k, l) in self.loads.iter().enumerate() {
            if l.name.is_empty() || self.loads[..k].iter().any(|o| o.name == l.name) {
                bail!("each load needs a name of its own ({:?})", l.name);
            }
            if !(l.power_kw > 0.0 && l.power_kw <= 1_000.0) {
                bail!("load {}: power_kw must be above 0 and at most 1000", l.name);
            }
            if l.earliest_hour >= l.latest_hour || l.latest_hour > 24 {
                bail!(
                    "load {}: earliest_hour must come before latest_hour, both 0-24 (UTC)",
                    l.name
                );
            }
            let most = l.power_kw * f64::from(l.latest_hour - l.earliest_hour);
            if !(l.energy_kwh >= 0.0 && l.energy_kwh <= most) {
                bail!(
                    "load {}: energy_kwh must be 0 to {most} (its power over its window)",
                    l.name
                );
            }
        }
        if let Some(h) = &self.heat_pump {
            if !(h.floor_m2 > 0.0 && h.floor_m2 <= 10_000.0) {
                bail!(
                    "heat_pump.floor_m2 must be above 0 and at most 10000, not {}",
                    h.floor_m2
                );
            }
            if !(h.max_power_kw > 0.0 && h.max_power_kw <= 100.0) {
                bail!(
                    "heat_pump.max_power_kw must be above 0 and at most 100, not {}",
                    h.max_power_kw
                );
            }
            let [low, high] = h.comfort_c;
            if !(5.0..=30.0).contains(&low) || !(5.0..=30.0).contains(&high) || low > high {
                bail!("heat_pump.comfort_c is [low, high] within 5-30 °C, low first, not {low}, {high}");
            }
            if !(0.0..=20.0).contains(&h.gains_kw) {
                bail!("heat_pump.gains_kw must be 0 to 20, not {}", h.gains_kw);
            }
        }
        if let Some(w) = &self.hot_water {
            if !(w.litres >= 20.0 && w.litres <= 10_000.0) {
                bail!("hot_water.litres must be 20 to 10000, not {}", w.litres);
            }
            if !(w.max_power_kw > 0.0 && w.max_power_kw <= 50.0) {
                bail!(
                    "hot_water.max_power_kw must be above 0 and at most 50, not {}",
                    w.max_power_kw
                );
            }
            let [low, high] = w.band_c;
            if !(20.0..=95.0).contains(&low) || !(20.0..=95.0).contains(&high) || low >= high {
                bail!(
                    "hot_water.band_c is [low, high] within 20-95 °C, low first, not {low}, {high}"
                );
            }
            // What the tank's heat pump can put in a day at the worst COP.
            let most = w.max_power_kw * 24.0 * gridmesh_agent::thermal::hot_water_cop(-50.0);
            if !(w.kwh_per_day >= 0.0 && w.kwh_per_day <= most / 2.0) {
                bail!(
                    "hot_water.kwh_per_day must be 0 to {:.0} (half what its heat pump heats a day), not {}",
                    most / 2.0,
                    w.kwh_per_day
                );
            }
        }
        if let Some(e) = &self.ev {
            if !(e.power_kw > 0.0 && e.energy_kwh >= 0.0) {
                bail!("the EV needs a positive power_kw and a non-negative energy_kwh");
            }
            if e.arrival_hour > 23 || e.departure_hour > 23 || e.arrival_hour == e.departure_hour {
                bail!("EV arrival_hour and departure_hour are different hours 0-23");
            }
        }
        Ok(())
    }
}

/// Which strategy bids for the home.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StrategyKind {
    ZeroIntelligence,
    LinearRamp,
    Optimising,
}

impl std::str::FromStr for StrategyKind {
    type Err = String;
    fn from_str(s: &str) -> Result<StrategyKind, String> {
        match s {
            "zero-intelligence" => Ok(StrategyKind::ZeroIntelligence),
            "linear-ramp" => Ok(StrategyKind::LinearRamp),
            "optimising" => Ok(StrategyKind::Optimising),
            _ => Err(format!(
                "unknown strategy {s:?}: zero-intelligence, linear-ramp or optimising"
            )),
        }
    }
}

/// The agent's settings.
pub struct AgentConfig {
    pub key: Keypair,
    pub node: String,
    pub strategy: StrategyKind,
    /// Stop after the orders of this many slots went past their gate (`None`: run until
    /// stopped).
    pub slots: Option<u64>,
    /// How far ahead of gate closure the order window opens (the ramp's 0), chain ms.
    pub window_ms: u64,
    /// No new orders within this long before gate closure, chain ms.
    pub gate_margin_ms: u64,
    /// Re-price when the strategy's price moved by at least this, tokens per kWh.
    pub reprice_per_kwh: f64,
    pub poll: Duration,
    pub seed: u64,
}

/// The home's year of data (2010, twice in a row so any slot of the year has a week behind it),
/// with what the home measured in place of the reference, and once it has enough of its own
/// history a learned load model.
#[derive(Clone)]
pub struct HomeData {
    load_kw: Vec<f64>,
    pv_kw: Vec<f64>,
    clear_sky_kw: Vec<f64>,
    /// The outdoor temperature per slot, °C (the reference year's: the home's forecast of it).
    outdoor_c: Vec<f64>,
    /// Which slots hold the home's own measurements.
    measured: Vec<bool>,
    learned: Option<std::sync::Arc<LearnedLoad>>,
}

/// Measured days a learned load model needs before it is trained.
pub const LEARN_AFTER_DAYS: usize = 7;

/// A load model trained on the home's measured history, and how it did against persistence on
/// the last measured day (held out of its training).
pub struct LearnedLoad {
    model: gridmesh_agent::learned::Learned,
    /// The slot it was trained at.
    pub trained_at: u64,
    pub training_rows: usize,
    /// Mean absolute error on the held-out day, kW: the learned model's and persistence's.
    pub mae_learned_kw: f64,
    pub mae_persistence_kw: f64,
}

impl LearnedLoad {
    /// Whether it beat persistence on the held-out day (and so forecasts the load).
    pub fn in_use(&self) -> bool {
        self.mae_learned_kw < self.mae_persistence_kw
    }
}

impl HomeData {
    /// The reference year that ships with the agent (the DWD test reference year for Potsdam,
    /// the BDEW H25 household profile), scaled to the home.
    pub fn reference(home: &HomeSpec) -> anyhow::Result<HomeData> {
        let weather = parse_try(REFERENCE_TRY)?;
        let profile = parse_bdew(REFERENCE_H25)?;
        let load = household_load_kw(&profile, home.annual_kwh, home.seed);
        let (pv, clear) = pv_power_kw(&weather, &PvArray::potsdam(home.pv_kwp));
        let twice = |v: Vec<f64>| [v.clone(), v].concat();
        let measured = vec![false; 2 * load.len()];
        let (_, outdoor) = gridmesh_agent::data::weather_per_slot(&weather);
        Ok(HomeData {
            load_kw: twice(load),
            pv_kw: twice(pv),
            clear_sky_kw: twice(clear),
            outdoor_c: twice(outdoor),
            measured,
            learned: None,
        })
    }
}

/// The index into [`HomeData`] of the chain's slot `slot` (same slot of the year, second copy).
fn year_index(slot: u64) -> usize {
    let ms = slot_start_ms(slot);
    let days = (ms / 86_400_000) as i64;
    // Days since 1970-01-01 of 1 January of the same year.
    let (mut year, mut start) = (1970i64, 0i64);
    loop {
        let len = if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 {
            366
        } else {
            365
        };
        if days < start + len {
            break;
        }
        start += len;
        year += 1;
    }
    let slot_of_year = ((ms - start as u64 * 86_400_000) / SLOT_MS) as usize;
    SLOTS_2010 + slot_of_year.min(SLOTS_2010 - 1)
}

/// What the agent did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct AgentReport {
    /// Slots whose gate passed with the agent's orders in place.
    pub slots: u64,
    pub placed: u64,
    pub cancelled: u64,
    /// Transactions refused (by the node or at block time), with the last reason.
    pub refused: u64,
    pub last_error: Option<String>,
    /// Whether the account has an active producing device with its own key and bond, the only
    /// kind the market lets sell: without one the agent only buys.
    pub sells: bool,
    /// Asks the plan wanted but the agent did not place (no keyed producing device).
    pub asks_skipped: u64,
    /// Every order placed: slot, side, energy (mWh), price (base units per kWh), order id.
    pub orders: Vec<PlacedOrder>,
}

#[derive(Clone, Debug, Serialize)]
pub struct PlacedOrder {
    pub slot: u64,
    pub side: Side,
    pub energy_mwh: u64,
    pub price_per_kwh: u64,
    pub order_id: Option<u64>,
    pub cancelled: bool,
}

/// An order of ours: waiting for its block (`hash`) or live (`order_id`).
struct Live {
    report_index: usize,
    hash: Hash32,
    order_id: Option<u64>,
}

/// The home's state a plan starts from: measured by a live home, assumed (the plans were carried
/// out) by a synthetic one.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct HomeState {
    pub soc_kwh: f64,
    /// Energy charged into the EV in its current session, and the day that session began.
    pub ev_charged_kwh: f64,
    pub ev_session_day: Option<u64>,
    /// Whether the EV is plugged in, as its charger says (a live home): then `ev_charged_kwh`
    /// is the session's measured energy. `None`: plugged by the spec's daily hours.
    pub ev_plugged: Option<bool>,
    /// Each shiftable load's energy so far in its window of `loads_day` (kWh, the spec's order).
    pub loads_done_kwh: Vec<f64>,
    pub loads_day: Option<u64>,
    /// The indoor temperature of a home heated by its heat pump, °C: measured by a live home's
    /// sensor, or where it has none what the building's model says the plans left.
    pub indoor_c: Option<f64>,
    /// The hot-water tank's temperature, °C, likewise.
    pub tank_c: Option<f64>,
}

/// What the agent knows of its home: its description, forecasts, the state a plan starts from,
/// and where the plans go. The synthetic household of `gridmesh agent` and the live home of
/// `gridmesh home` implement it; the planning and the trading are this module's, once.
pub trait Household {
    fn spec(&self) -> &HomeSpec;
    /// Load and PV forecasts (kW) for `horizon` slots from `slot`, from what was known before it.
    fn forecast(&mut self, slot: u64, horizon: usize) -> (Vec<f64>, Vec<f64>);
    /// The outdoor temperature forecast (°C) for `horizon` slots from `slot`.
    fn outdoor(&mut self, slot: u64, horizon: usize) -> Vec<f64>;
    /// The home's state at the start of `slot`.
    fn state_at(&mut self, slot: u64) -> HomeState;
    /// The optimising plan made for the slots from `slot` on (the schedule's first entry is
    /// `slot`), and the state once `slot` is delivered as planned.
    fn planned(&mut self, slot: u64, schedule: &Schedule, after: &HomeState);
}

/// A household of the reference profiles whose plans are assumed carried out (`gridmesh agent`).
pub struct SyntheticHome {
    spec: HomeSpec,
    data: HomeData,
    state: HomeState,
    /// The state after the last planned slot, taken on once a later slot is planned.
    pending: Option<(u64, HomeState)>,
}

impl SyntheticHome {
    pub fn new(spec: HomeSpec, data: HomeData) -> SyntheticHome {
        let state = HomeState {
            soc_kwh: spec.battery.as_ref().map_or(0.0, |b| b.capacity_kwh / 2.0),
            // A heated home starts in the middle of its band.
            indoor_c: spec
                .heat_pump
                .as_ref()
                .map(|h| (h.comfort_c[0] + h.comfort_c[1]) / 2.0),
            tank_c: spec
                .hot_water
                .as_ref()
                .map(|w| (w.band_c[0] + w.band_c[1]) / 2.0),
            ..HomeState::default()
        };
        SyntheticHome {
            spec,
            data,
            state,
            pending: None,
        }
    }
}

impl Household for SyntheticHome {
    fn spec(&self) -> &HomeSpec {
        &self.spec
    }

    fn forecast(&mut self, slot: u64, horizon: usize) -> (Vec<f64>, Vec<f64>) {
        self.data.forecast(slot, horizon)
    }

    fn outdoor(&mut self, slot: u64, horizon: usize) -> Vec<f64> {
        self.data.outdoor(slot, horizon)
    }

    fn state_at(&mut self, slot: u64) -> HomeState {
        if let Some((planned, after)) = self.pending.take() {
            if slot > planned {
                self.state = after;
            } else {
                self.pending = Some((planned, after));
            }
        }
        self.state.clone()
    }

    fn planned(&mut self, slot: u64, _schedule: &Schedule, after: &HomeState) {
        self.pending = Some((slot, after.clone()));
    }
}

impl HomeData {
    /// Forecasts from `slot` over `horizon` slots (persistence and smart persistence on the
    /// year's data before `slot`).
    pub fn forecast(&self, slot: u64, horizon: usize) -> (Vec<f64>, Vec<f64>) {
        let origin = year_index(slot);
        let (mut load, pv) = home_forecast(
            &self.load_kw,
            &self.pv_kw,
            &self.clear_sky_kw,
            origin,
            horizon,
        );
        if let Some(l) = self.learned.as_ref().filter(|l| l.in_use()) {
            use gridmesh_agent::forecast::Forecaster;
            load = l.model.forecast(
                &self.load_kw,
                origin,
                horizon,
                &gridmesh_agent::forecast::Context { clear_sky_kw: None },
            );
        }
        (load, pv)
    }

    /// The outdoor temperature forecast from `slot` over `horizon` slots, °C.
    pub fn outdoor(&self, slot: u64, horizon: usize) -> Vec<f64> {
        let origin = year_index(slot);
        (origin..origin + horizon)
            .map(|i| self.outdoor_c[i.min(self.outdoor_c.len() - 1)])
            .collect()
    }

    /// Puts what the home measured in `slot` (mean kW) in place of the reference data: the
    /// forecasts from then on persist the home's own load and PV.
    pub fn record(&mut self, slot: u64, load_kw: f64, pv_kw: f64) {
        let i = year_index(slot);
        self.load_kw[i] = load_kw;
        self.pv_kw[i] = pv_kw;
        self.measured[i] = true;
    }

    /// The learned load model, once trained.
    pub fn learned(&self) -> Option<&LearnedLoad> {
        self.learned.as_deref()
    }

    /// Puts a model trained by [`HomeData::train_load`] (on a copy, away from the loop) in place.
    pub fn set_learned(&mut self, model: Option<std::sync::Arc<LearnedLoad>>) {
        self.learned = model;
    }

    /// Trains boosted trees on the home's measured load before `slot` (at least
    /// [`LEARN_AFTER_DAYS`] measured days, the last five weeks), the last measured day held out
    /// and scored against persistence; `None` with too little history. Features: the time of
    /// day and year, the day type, the recent past and the reference year's weather at that time
    /// of year (climatology: the home has no weather forecast; the trees learn how much it
    /// counts).
    pub fn train_load(&self, slot: u64) -> Option<LearnedLoad> {
        use gridmesh_agent::forecast::{Context as FcContext, Forecaster, Persistence};
        use gridmesh_agent::learned::{Exogenous, Learned, Target, TrainOptions};
        let now = year_index(slot);
        let from = now.saturating_sub(5 * 7 * 96);
        let measured_days = self.measured[from..now].iter().filter(|m| **m).count() / 96;
        if measured_days < LEARN_AFTER_DAYS {
            return None;
        }
        // The held-out day: the last whole day measured before now.
        let test_from = now - now % 96 - 96;
        let weather = parse_try(REFERENCE_TRY).ok()?;
        let (cloud, temperature) = gridmesh_agent::data::weather_per_slot(&weather);
        let twice = |v: Vec<f64>| [v.clone(), v].concat();
        let exogenous = Exogenous {
            cloud_octas: twice(cloud),
            temperature_c: twice(temperature),
            day_type: day_types_around(slot),
            clear_sky_kw: None,
        };
        let measured = &self.measured;
        // Hourly origins whose day ahead holds measured targets, before the held-out day.
        let origins: Vec<usize> = (from..test_from)
            .step_by(4)
            .filter(|o| measured[*o])
            .collect();
        let options = TrainOptions {
            horizon_step: 6,
            trees: 60,
            max_depth: 5,
        };
        let model = Learned::train(
            Target::Load,
            &self.load_kw,
            exogenous,
            origins,
            |t| t >= test_from || !measured[t],
            options,
        )
        .ok()?;
        // Day-ahead forecasts from each hour of the held-out day's start, scored on what was
        // measured there.
        let ctx = FcContext { clear_sky_kw: None };
        let (mut learned_err, mut persistence_err, mut n) = (0.0, 0.0, 0usize);
        for origin in (test_from - 96..test_from).step_by(4) {
            let l = model.forecast(&self.load_kw, origin, 96, &ctx);
            let p = Persistence.forecast(&self.load_kw, origin, 96, &ctx);
            for (h, t) in (origin..origin + 96).enumerate() {
                if t >= test_from && t < now && measured[t] {
                    learned_err += (l[h] - self.load_kw[t]).abs();
                    persistence_err += (p[h] - self.load_kw[t]).abs();
                    n += 1;
                }
            }
        }
        if n == 0 {
            return None;
        }
        Some(LearnedLoad {
            training_rows: model.training_rows,
            model,
            trained_at: slot,
            mae_learned_kw: learned_err / n as f64,
            mae_persistence_kw: persistence_err / n as f64,
        })
    }
}

/// The day type (0 Saturday, 1 Sunday, 2 another day; local days, UTC+1) of each index of the
/// doubled year arrays as the real calendar has it around `slot`: the second copy is `slot`'s
/// year, the first the year before (the reference year's own days fall elsewhere in the week).
fn day_types_around(slot: u64) -> Vec<u8> {
    let here = year_index(slot) - SLOTS_2010;
    // The Unix day of the first slot of the second copy, and of the first copy.
    let this_year = (slot_start_ms(slot) / 86_400_000) as i64 - (here / 96) as i64;
    let last_year = this_year - 365;
    (0..2 * SLOTS_2010)
        .map(|i| {
            let (start, k) = if i < SLOTS_2010 {
                (last_year, i)
            } else {
                (this_year, i - SLOTS_2010)
            };
            // 1970-01-01 was a Thursday: (day + 4) % 7 is 0 on Sundays.
            let local_day = start + ((k + 4) / 96) as i64;
            match (local_day + 4).rem_euclid(7) {
                6 => 0,
                0 => 1,
                _ => 2,
            }
        })
        .collect()
}

/// What one poll found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Polled {
    /// Trading goes on.
    Trading,
    /// The configured number of slots is done.
    Done,
}

/// A home's trading agent: plans the next open slot and keeps its orders current, one poll at a
/// time, for any [`Household`].
pub struct Agent<'a> {
    cfg: &'a AgentConfig,
    client: Client,
    me: Address,
    chain_id: String,
    report: AgentReport,
    nonce: u64,
    /// After an error the nonce is read again before anything is sent.
    resync: bool,
    target: Option<u64>,
    live: Vec<Live>,
    zi: ZeroIntelligence,
    /// The target slot's plan.
    wanted: Option<SlotPlan>,
    /// Plan the target slot again at the next poll (the home parted from its plan).
    replan: bool,
    /// When (chain ms) the agent last looked for a late envelope of its target slot.
    envelope_looked_ms: u64,
    market: Option<gridmesh_api::market::MarketInfo>,
}

impl<'a> Agent<'a> {
    /// Connects to the node: its chain, the account's nonce, and whether it may sell.
    pub fn connect(cfg: &'a AgentConfig) -> anyhow::Result<Agent<'a>> {
        let client = Client::new(&cfg.node);
        let me: Address = cfg.key.address();
        let chain_id = client.status()?.chain_id;
        let report = AgentReport {
            sells: keyed_producer(&client, &cfg.key)?,
            ..AgentReport::default()
        };
        if !report.sells {
            tracing::warn!(
                "{me} has no active PV or battery registered with its own key: the agent only buys (register one with `tx register-device --device-key`)"
            );
        }
        let nonce = client.account(&me)?.nonce;
        Ok(Agent {
            cfg,
            client,
            me,
            chain_id,
            report,
            nonce,
            resync: false,
            target: None,
            live: Vec::new(),
            zi: ZeroIntelligence::new(cfg.seed),
            wanted: None,
            replan: false,
            envelope_looked_ms: 0,
            market: None,
        })
    }

    pub fn report(&self) -> &AgentReport {
        &self.report
    }

    pub fn into_report(self) -> AgentReport {
        self.report
    }

    /// Plans the target slot again at the next poll, from the home's state then (a live home
    /// calls it when what it measures has parted from the plan).
    pub fn replan(&mut self) {
        self.replan = true;
    }

    /// The market as the last poll read it.
    pub fn market(&self) -> Option<&gridmesh_api::market::MarketInfo> {
        self.market.as_ref()
    }

    /// The node's client (the live home sends its readings through it).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// One look at the market: a new target slot is planned, a late envelope planned within,
    /// and the orders kept current. An error (the node is away) leaves the agent ready to go on
    /// once it is back.
    pub fn poll(&mut self, home: &mut dyn Household) -> anyhow::Result<Polled> {
        if self.resync {
            self.nonce = self.client.account(&self.me)?.nonce;
            self.resync = false;
        }
        let polled = self.poll_once(home);
        if polled.is_err() {
            self.resync = true;
        }
        polled
    }

    fn poll_once(&mut self, home: &mut dyn Household) -> anyhow::Result<Polled> {
        let cfg = self.cfg;
        let client = &self.client;
        let report = &mut self.report;
        let info = client.market()?;
        let now = info.now_ms;
        let slot = info.next_open_slot;
        if self.target != Some(slot) {
            if let Some(done) = self.target {
                if self
                    .live
                    .iter()
                    .any(|l| report.orders[l.report_index].slot == done)
                {
                    report.slots += 1;
                }
                if cfg.slots.is_some_and(|n| report.slots >= n) {
                    self.market = Some(info);
                    return Ok(Polled::Done);
                }
            }
            self.live.clear();
            self.target = Some(slot);
            self.wanted = None;
            self.wanted = Some(plan_slot(cfg, home, &info, client, slot)?);
        } else if cfg.strategy == StrategyKind::Optimising
            && (self.replan
                || (!self.wanted.as_ref().is_some_and(|w| w.envelope_known)
                    && self.envelope_looked_ms + ENVELOPE_LOOK_MS <= now
                    && {
                        self.envelope_looked_ms = now;
                        client.envelope(slot, &home.spec().location)?.is_some()
                    }))
        {
            // The home parted from its plan, or the grid operator's envelope arrived after the
            // plan: plan again (within it).
            self.wanted = Some(plan_slot(cfg, home, &info, client, slot)?);
        }
        self.replan = false;
        // Learn the ids of our orders that reached a block.
        for l in self.live.iter_mut().filter(|l| l.order_id.is_none()) {
            match client.tx(&l.hash) {
                Ok(Some(t)) if t.status == "committed" => {
                    l.order_id = t.receipt.as_ref().and_then(|r| {
                        r.events
                            .iter()
                            .find(|e| e.kind == "order_placed")
                            .and_then(|e| e.details.as_ref()?.get("order_id")?.as_u64())
                    });
                    report.orders[l.report_index].order_id = l.order_id;
                }
                Ok(_) => {}
                // Refused at block time (e.g. the gate closed first): the nonce is free again.
                Err(e) => {
                    refused(report, &anyhow::Error::new(e));
                    report.orders[l.report_index].cancelled = true;
                    self.nonce = client.account(&self.me)?.nonce;
                }
            }
        }
        self.live
            .retain(|l| !report.orders[l.report_index].cancelled);
        self.market = Some(info);
        let info = self.market.as_ref().expect("just set");
        if now + cfg.gate_margin_ms >= info.next_gate_closure_ms {
            return Ok(Polled::Trading);
        }
        let (retail, feed_in) = tariff_at(info, slot)?;
        let view = MarketView {
            retail_per_kwh: retail,
            feed_in_per_kwh: feed_in,
            elapsed: 1.0 - (info.next_gate_closure_ms - now) as f64 / cfg.window_ms.max(1) as f64,
        };
        let plan = self.wanted.as_ref().expect("planned for the target slot");
        let (position, values) = (plan.position, plan.values);
        let intents: Vec<OrderIntent> = match cfg.strategy {
            StrategyKind::ZeroIntelligence => {
                // Drawn once per slot: a new draw every poll would only churn orders.
                if self.live.is_empty() {
                    self.zi.orders(&position, &view)
                } else {
                    Vec::new()
                }
            }
            StrategyKind::LinearRamp => LinearRamp.orders(&position, &view),
            StrategyKind::Optimising => gridmesh_agent::strategy::at_values(
                &position,
                values.unwrap_or((retail, feed_in)),
                &view,
            ),
        };
        let decimals = gridmesh_types::TOKEN_DECIMALS;
        // The market refuses smaller orders.
        let min_order_mwh = gridmesh_types::parse_fixed(&info.min_order_kwh, 6)
            .ok()
            .and_then(|m| u64::try_from(m).ok())
            .unwrap_or(gridmesh_ledger::config::DEFAULT_MIN_ORDER_MWH);
        let location = home.spec().location.clone();
        for intent in intents {
            let Some((side, energy_mwh, price)) = intent.to_units(decimals) else {
                continue;
            };
            if energy_mwh < min_order_mwh {
                continue;
            }
            // Only keyed devices sell: an ask without one is refused at the block.
            if side == Side::Ask && !report.sells {
                report.asks_skipped += 1;
                continue;
            }
            let current = self
                .live
                .iter()
                .position(|l| report.orders[l.report_index].side == side);
            if let Some(k) = current {
                let o = &report.orders[self.live[k].report_index];
                let step = cfg.reprice_per_kwh * 10f64.powi(decimals as i32);
                if (o.price_per_kwh as f64 - price as f64).abs() < step {
                    continue;
                }
                // Re-price: the old order must have reached a block before it can be cancelled.
                let Some(order_id) = self.live[k].order_id else {
                    continue;
                };
                let kind = TxKind::CancelOrder { slot, order_id };
                match submit(client, &cfg.key, &self.chain_id, self.nonce, kind) {
                    Ok(_) => {
                        self.nonce += 1;
                        report.cancelled += 1;
                        report.orders[self.live[k].report_index].cancelled = true;
                        self.live.remove(k);
                    }
                    Err(e) => {
                        refused(report, &e);
                        self.nonce = client.account(&self.me)?.nonce;
                        continue;
                    }
                }
            }
            let kind = TxKind::PlaceOrder {
                slot,
                side: match side {
                    Side::Bid => gridmesh_ledger::Side::Bid,
                    Side::Ask => gridmesh_ledger::Side::Ask,
                },
                energy_mwh,
                price_per_kwh: price,
                location: location.clone(),
            };
            match submit(client, &cfg.key, &self.chain_id, self.nonce, kind) {
                Ok(hash) => {
                    self.nonce += 1;
                    report.placed += 1;
                    report.orders.push(PlacedOrder {
                        slot,
                        side,
                        energy_mwh,
                        price_per_kwh: price,
                        order_id: None,
                        cancelled: false,
                    });
                    self.live.push(Live {
                        report_index: report.orders.len() - 1,
                        hash,
                        order_id: None,
                    });
                }
                Err(e) => {
                    refused(report, &e);
                    self.nonce = client.account(&self.me)?.nonce;
                }
            }
        }
        Ok(Polled::Trading)
    }

    /// Sends a transaction of the home's account (readings, ...) with the agent's nonce.
    pub fn send(&mut self, kind: TxKind) -> anyhow::Result<Hash32> {
        if self.resync {
            self.nonce = self.client.account(&self.me)?.nonce;
            self.resync = false;
        }
        match submit(
            &self.client,
            &self.cfg.key,
            &self.chain_id,
            self.nonce,
            kind,
        ) {
            Ok(hash) => {
                self.nonce += 1;
                Ok(hash)
            }
            Err(e) => {
                self.resync = true;
                Err(e)
            }
        }
    }

    pub fn chain_id(&self) -> &str {
        &self.chain_id
    }
}

/// Runs the agent for `home` until `slots` are done or `stop` returns true.
pub fn run(
    cfg: &AgentConfig,
    home: &mut dyn Household,
    stop: impl Fn() -> bool,
) -> anyhow::Result<AgentReport> {
    let mut agent = Agent::connect(cfg)?;
    let started = Instant::now();
    while !stop() {
        std::thread::sleep(cfg.poll);
        if agent.poll(home)? == Polled::Done {
            break;
        }
        tracing::debug!(elapsed = ?started.elapsed(), "agent poll");
    }
    Ok(agent.into_report())
}

/// Whether `key`'s account has an active producing device with its own key (read from its home
/// view, signed in: the devices are the owner's to see).
fn keyed_producer(client: &Client, key: &Keypair) -> anyhow::Result<bool> {
    let token = client.sign_in(key)?;
    let home = client.home(&key.address(), &token, 1)?;
    Ok(home
        .devices
        .iter()
        .any(|d| d.status == "active" && (d.kind == "pv" || d.kind == "battery")))
}

fn refused(report: &mut AgentReport, e: &anyhow::Error) {
    tracing::warn!(error = %e, "an agent transaction was refused");
    report.refused += 1;
    report.last_error = Some(format!("{e:#}"));
}

fn submit(
    client: &Client,
    key: &Keypair,
    chain_id: &str,
    nonce: u64,
    kind: TxKind,
) -> anyhow::Result<Hash32> {
    let tx = gridmesh_ledger::SignedTx::new(key, chain_id, nonce, kind);
    Ok(client.submit(&tx)?.hash.parse()?)
}

/// Retail and feed-in price of `slot` from the market's public tariff, tokens per kWh.
fn tariff_at(info: &gridmesh_api::market::MarketInfo, slot: u64) -> anyhow::Result<(f64, f64)> {
    let of_day = (slot % 96) as u8;
    let period = info
        .tariffs
        .iter()
        .rev()
        .find(|p| p.from_slot_of_day <= of_day)
        .or(info.tariffs.first())
        .context("the market publishes no tariff")?;
    Ok((
        period.retail_per_kwh.parse()?,
        period.feed_in_per_kwh.parse()?,
    ))
}

/// A plan for the target slot.
struct SlotPlan {
    position: Position,
    /// The optimising strategy's marginal values (a kWh bought, a kWh sold).
    values: Option<(f64, f64)>,
    envelope_known: bool,
}

/// How often (chain ms) the agent looks for an envelope published after its plan: a minute, so
/// a poll every few seconds is not a request more each.
const ENVELOPE_LOOK_MS: u64 = 60_000;

/// Slots ahead whose envelopes the optimising agent reads (the grid operator publishes a few).
const ENVELOPE_LOOKAHEAD: u64 = 4;

/// What the home wants in `slot` (from forecasts made before it), and for the optimising
/// strategy its marginal values, within the grid operator's envelopes where published.
fn plan_slot(
    cfg: &AgentConfig,
    household: &mut dyn Household,
    info: &gridmesh_api::market::MarketInfo,
    client: &Client,
    slot: u64,
) -> anyhow::Result<SlotPlan> {
    let mut home = household.state_at(slot);
    let spec = household.spec().clone();
    let horizon = 96;
    let (load, pv) = household.forecast(slot, horizon);
    if cfg.strategy != StrategyKind::Optimising {
        let net = load[0] - pv[0];
        return Ok(SlotPlan {
            position: Position {
                import_kwh: net.max(0.0) * DT_H,
                export_kwh: (-net).max(0.0) * DT_H,
            },
            values: None,
            envelope_known: false,
        });
    }
    // The connection's envelopes: import and export caps in the slots that have one.
    let (import_limit_kw, export_limit_kw) = (30.0, 30.0);
    let mut import_cap_kw = vec![import_limit_kw; horizon];
    let mut export_cap_kw = vec![export_limit_kw; horizon];
    let mut envelope_known = false;
    for k in 0..ENVELOPE_LOOKAHEAD {
        if let Some(e) = client.envelope(slot + k, &spec.location)? {
            let import_kwh: f64 = e.import_kwh.parse().context("an envelope's import_kwh")?;
            let export_kwh: f64 = e.export_kwh.parse().context("an envelope's export_kwh")?;
            import_cap_kw[k as usize] = import_kwh / DT_H;
            export_cap_kw[k as usize] = export_kwh / DT_H;
            envelope_known |= k == 0;
        }
    }
    let mut prices = Vec::with_capacity(horizon);
    for k in 0..horizon as u64 {
        prices.push(tariff_at(info, slot + k)?);
    }
    let ev = spec.ev.as_ref().and_then(|e| {
        let hour = (slot % 96 / 4) as u8;
        let plugged = home
            .ev_plugged
            .unwrap_or(if e.arrival_hour < e.departure_hour {
                (e.arrival_hour..e.departure_hour).contains(&hour)
            } else {
                hour >= e.arrival_hour || hour < e.departure_hour
            });
        if !plugged {
            home.ev_session_day = None;
            return None;
        }
        // A session is named by the day it began (a live home's charger tells its own).
        let day = (slot - u64::from(hour < e.arrival_hour) * 96) / 96;
        if home.ev_plugged.is_none() && home.ev_session_day != Some(day) {
            home.ev_session_day = Some(day);
            home.ev_charged_kwh = 0.0;
        }
        let hours_left = (i64::from(e.departure_hour) - i64::from(hour)).rem_euclid(24) as usize;
        let needed = (e.energy_kwh - home.ev_charged_kwh).max(0.0);
        (needed > 1e-6).then(|| Ev {
            power_kw: e.power_kw,
            energy_needed_kwh: needed,
            arrival: 0,
            departure: (hours_left * 4 - (slot % 4) as usize).max(1),
        })
    });
    let problem = HomeProblem {
        load_kw: load,
        pv_kw: pv,
        import_price: prices.iter().map(|p| p.0).collect(),
        export_price: prices.iter().map(|p| p.1).collect(),
        import_limit_kw,
        import_cap_kw,
        export_cap_kw,
        export_limit_kw,
        battery: spec.battery.as_ref().map(|b| Battery {
            capacity_kwh: b.capacity_kwh,
            power_kw: b.power_kw,
            charge_efficiency: b.efficiency.sqrt(),
            discharge_efficiency: b.efficiency.sqrt(),
            initial_kwh: home.soc_kwh.max(b.reserve_kwh),
            reserve_kwh: b.reserve_kwh,
        }),
        ev,
        deferrable: deferrable(&spec, &mut home, slot, horizon),
        thermal: {
            let mut stores = Vec::new();
            let outdoor = if spec.heat_pump.is_some() || spec.hot_water.is_some() {
                household.outdoor(slot, horizon)
            } else {
                Vec::new()
            };
            if let Some(h) = &spec.heat_pump {
                let band = h.comfort_c;
                let indoor = home.indoor_c.unwrap_or((band[0] + band[1]) / 2.0);
                stores.push(h.heating().store(&outdoor, indoor));
            }
            if let Some(w) = &spec.hot_water {
                let band = w.band_c;
                let tank = home.tank_c.unwrap_or((band[0] + band[1]) / 2.0);
                stores.push(w.store(&outdoor, slot, tank));
            }
            stores
        },
        flex: None,
        resolution: None,
        warm: None,
    };
    // A request to reduce draw in the horizon: answered from the schedule (import below the
    // plan without it is worth the request's value, up to the battery's power per slot).
    let event = reduce_request(info, slot, &spec, horizon);
    let (problem, schedule) = match event.and_then(|e| Some((e, problem.respond(&e)?))) {
        Some((e, (base, with, response))) => {
            tracing::info!(
                slot,
                delivered_kwh = response.delivered_kwh,
                "answering a flexibility request"
            );
            let mut p = problem;
            p.flex = Some(FlexReward {
                from: e.from,
                to: e.to,
                reduce_kw: e.reduce_kw,
                value_per_kwh: e.value_per_kwh,
                baseline_kw: base.import_kw,
            });
            (p, with)
        }
        None => {
            let schedule = match problem.plan() {
                Plan::Optimal(s) => s,
                Plan::Fallback { reason, schedule } => {
                    tracing::warn!(%reason, "no optimal plan; the safe plan is bid");
                    schedule
                }
            };
            (problem, schedule)
        }
    };
    if let Some(s) = schedule.soc_kwh.first() {
        home.soc_kwh = *s;
    }
    home.ev_charged_kwh += schedule.ev_kw.first().copied().unwrap_or(0.0) * DT_H;
    for (done, run) in home.loads_done_kwh.iter_mut().zip(&schedule.deferrable_kw) {
        *done += run.first().copied().unwrap_or(0.0) * DT_H;
    }
    let (space, water) = spec.thermal_stores();
    let first = |k: Option<usize>| {
        k.and_then(|k| schedule.temperature_c.get(k))
            .and_then(|t| t.first())
            .copied()
    };
    if let Some(t) = first(space) {
        home.indoor_c = Some(t);
    }
    if let Some(t) = first(water) {
        home.tank_c = Some(t);
    }
    let position = Position {
        import_kwh: schedule.import_kw[0] * DT_H,
        export_kwh: schedule.export_kw[0] * DT_H,
    };
    household.planned(slot, &schedule, &home);
    let agent = Optimising { problem };
    Ok(SlotPlan {
        position,
        values: agent.marginal_values_from(schedule.cost),
        envelope_known,
    })
}

/// The shiftable loads as the problem's deferrable loads from `slot`, one each in the spec's
/// order: what is left of today's window, or tomorrow's once today's has passed (a new day
/// starts each load at nothing done).
fn deferrable(
    spec: &HomeSpec,
    home: &mut HomeState,
    slot: u64,
    horizon: usize,
) -> Vec<gridmesh_agent::schedule::Deferrable> {
    let day = slot / 96;
    if home.loads_day != Some(day) || home.loads_done_kwh.len() != spec.loads.len() {
        home.loads_day = Some(day);
        home.loads_done_kwh = vec![0.0; spec.loads.len()];
    }
    let mut out = Vec::new();
    for (l, done) in spec.loads.iter().zip(&home.loads_done_kwh) {
        let (from, to) = l.window(slot);
        let (from, to, need) = if slot < to {
            (from.max(slot), to, (l.energy_kwh - done).max(0.0))
        } else {
            (from + 96, to + 96, l.energy_kwh)
        };
        // Every load has its entry (the schedule's runs follow the spec's order); one with
        // nothing to do in the horizon runs nowhere.
        let earliest = ((from - slot) as usize).min(horizon - 1);
        let latest = ((to - slot) as usize).clamp(earliest + 1, horizon);
        // What fits in the window's part inside the horizon (and its power).
        let fits = (latest - earliest) as f64 * l.power_kw * DT_H;
        out.push(gridmesh_agent::schedule::Deferrable {
            name: l.name.clone(),
            energy_kwh: if need > 1e-6 && (from - slot) < horizon as u64 {
                need.min(fits)
            } else {
                0.0
            },
            power_kw: l.power_kw,
            earliest,
            latest,
        });
    }
    out
}

/// The first run of consecutive slots in the horizon with a `reduce` request covering the home's
/// location, as an event over the problem's slots (value: the run's lowest).
fn reduce_request(
    info: &gridmesh_api::market::MarketInfo,
    slot: u64,
    home: &HomeSpec,
    horizon: usize,
) -> Option<FlexEvent> {
    let covers = |area: &str| gridmesh_market::area_contains(area, &home.location);
    let mut asked: Vec<(u64, f64)> = info
        .flexibility_requests
        .iter()
        .filter(|r| r.direction == "reduce" && covers(&r.area) && r.slot >= slot)
        .filter(|r| r.slot < slot + horizon as u64)
        .filter_map(|r| Some((r.slot, r.value_per_kwh.parse::<f64>().ok()?)))
        .collect();
    asked.sort_by_key(|a| a.0);
    let (first, _) = *asked.first()?;
    let run: Vec<&(u64, f64)> = asked
        .iter()
        .enumerate()
        .take_while(|(k, a)| a.0 == first + *k as u64)
        .map(|(_, a)| a)
        .collect();
    let reduce_kw = home.battery.as_ref().map_or(0.0, |b| b.power_kw)
        + home.ev.as_ref().map_or(0.0, |e| e.power_kw);
    (reduce_kw > 0.0).then(|| FlexEvent {
        from: (first - slot) as usize,
        to: (first - slot) as usize + run.len(),
        reduce_kw,
        value_per_kwh: run.iter().map(|a| a.1).fold(f64::INFINITY, f64::min),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_home_file_is_checked_and_slots_map_onto_the_year() {
        let h = HomeSpec::parse(
            "location = \"street-1/home-2\"\nannual_kwh = 3500\npv_kwp = 6\n[battery]\ncapacity_kwh = 10\npower_kw = 5\n",
        )
        .unwrap();
        assert_eq!(h.battery.unwrap().efficiency, 0.95);
        for (text, why) in [
            ("annual_kwh = -1\n", "annual_kwh"),
            ("annual_kwh = 3000\nsolar = 4\n", "unknown field"),
            (
                "annual_kwh = 3000\n[ev]\npower_kw = 11\nenergy_kwh = 10\narrival_hour = 18\ndeparture_hour = 18\n",
                "different hours",
            ),
            (
                "annual_kwh = 3000\n[battery]\ncapacity_kwh = 10\npower_kw = 5\nreserve_kwh = 10\n",
                "reserve",
            ),
        ] {
            let e = HomeSpec::parse(text).unwrap_err();
            assert!(format!("{e:#}").contains(why), "{text}: {e:#}");
        }
        // 2026-11-24 00:00 UTC is day 327 (0-based) of its year.
        let slot = 1_795_478_400_000 / SLOT_MS;
        assert_eq!(year_index(slot), SLOTS_2010 + 327 * 96);
        // 1 January.
        assert_eq!(year_index(1_767_225_600_000 / SLOT_MS), SLOTS_2010);
    }

    #[test]
    fn a_shiftable_load_is_planned_in_what_is_left_of_its_window_or_tomorrows() {
        let spec = HomeSpec::parse(
            "annual_kwh = 3000\n[[loads]]\nname = \"boiler\"\npower_kw = 2\nenergy_kwh = 3\nearliest_hour = 10\nlatest_hour = 16\n",
        )
        .unwrap();
        let day = 96 * 20_000;
        let mut home = HomeState::default();
        // 08:00: the whole window ahead.
        let d = deferrable(&spec, &mut home, day + 32, 96);
        assert_eq!((d[0].earliest, d[0].latest, d[0].energy_kwh), (8, 32, 3.0));
        // 12:00 with 1 kWh done: what is left of today's.
        home.loads_done_kwh[0] = 1.0;
        let d = deferrable(&spec, &mut home, day + 48, 96);
        assert_eq!((d[0].earliest, d[0].latest, d[0].energy_kwh), (0, 16, 2.0));
        // 17:00: tomorrow's, whole; the next day starts at nothing done.
        let d = deferrable(&spec, &mut home, day + 68, 96);
        assert_eq!((d[0].earliest, d[0].latest, d[0].energy_kwh), (68, 92, 3.0));
        let d = deferrable(&spec, &mut home, day + 96 + 40, 96);
        assert_eq!(home.loads_done_kwh, vec![0.0]);
        assert_eq!(d[0].energy_kwh, 3.0);
        // Done for today: an entry that runs nowhere, so the runs keep the spec's order.
        home.loads_done_kwh[0] = 3.0;
        let d = deferrable(&spec, &mut home, day + 96 + 44, 96);
        assert_eq!(d[0].energy_kwh, 0.0);
        for (text, why) in [
            (
                "power_kw = 0\nenergy_kwh = 1\nearliest_hour = 1\nlatest_hour = 2",
                "power_kw",
            ),
            (
                "power_kw = 1\nenergy_kwh = 3\nearliest_hour = 1\nlatest_hour = 2",
                "energy_kwh",
            ),
            (
                "power_kw = 1\nenergy_kwh = 1\nearliest_hour = 5\nlatest_hour = 5",
                "earliest_hour",
            ),
            (
                "power_kw = 1\nenergy_kwh = 1\nearliest_hour = 5\nlatest_hour = 25",
                "earliest_hour",
            ),
        ] {
            let e = HomeSpec::parse(&format!(
                "annual_kwh = 1\n[[loads]]\nname = \"x\"\n{text}\n"
            ))
            .unwrap_err()
            .to_string();
            assert!(e.contains(why), "{why}: {e}");
        }
    }

    #[test]
    fn a_load_model_learns_the_homes_week_and_is_used_where_it_beats_persistence() {
        let spec = HomeSpec::parse("annual_kwh = 3000\n").unwrap();
        let mut data = HomeData::reference(&spec).unwrap();
        // A Sunday 00:00 UTC, 7 June 2026 (day 20_611 since 1970, (d + 4) % 7 == 0): the day held out
        // is a Saturday, where persistence repeats Friday.
        let sunday = 20_611u64;
        assert_eq!((sunday + 4) % 7, 0);
        let now = sunday * 96;
        assert!(data.train_load(now).is_none(), "no history, no model");
        // Three weeks of a home that is out on working days and in at weekends.
        for s in now - 21 * 96..now {
            let weekday = (s / 96 + 4) % 7;
            let base = if weekday == 0 || weekday == 6 {
                1.5
            } else {
                0.3
            };
            let of_day = (s % 96) as f64 / 96.0;
            data.record(
                s,
                base + 0.2 * (2.0 * std::f64::consts::PI * of_day).sin(),
                0.0,
            );
        }
        let m = data.train_load(now).expect("three weeks suffice");
        eprintln!(
            "learned {:.3} kW off, persistence {:.3} kW, {} rows",
            m.mae_learned_kw, m.mae_persistence_kw, m.training_rows
        );
        assert!(
            m.mae_learned_kw < 0.5 * m.mae_persistence_kw,
            "{}",
            m.mae_learned_kw
        );
        assert!(m.in_use());
        data.set_learned(Some(std::sync::Arc::new(m)));
        // Sunday's forecast is a weekend's.
        let (load, _) = data.forecast(now, 96);
        let mean = load.iter().sum::<f64>() / 96.0;
        assert!((mean - 1.5).abs() < 0.3, "{mean}");
        // The calendar is the real one: that Sunday is a Sunday.
        assert_eq!(day_types_around(now)[year_index(now) + 8], 1);
        assert_eq!(day_types_around(now)[year_index(now) - 96 + 8], 0);
    }
}
