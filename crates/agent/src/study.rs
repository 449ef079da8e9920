//! A community over weeks: the same homes, weather and households under different agents, so
//! their bills, self-sufficiency, transformer peak and battery wear can be compared side by side.
//!
//! Every home has a household load (BDEW H25 with its own seeded variation, `data`), and by
//! seeded draws rooftop PV under the test reference year's weather, a home battery and an EV
//! that plugs in every evening and must be charged by the next morning. Homes face a time-of-use
//! tariff and trade in a peer-to-peer call auction per slot (`gridmesh-market`, the ledger's
//! clearing code) with the utility as counterparty of last resort.
//!
//! How a home runs its devices and bids depends on its [`AgentKind`]:
//! - without an optimising agent (`Rules`, `ZeroIntelligence`, `LinearRamp`) the battery follows
//!   the usual self-consumption rule (charge from surplus PV, discharge into the home's load,
//!   never below the outage reserve), the EV charges at full power from plug-in, and the home
//!   bids its last slot's net position (intraday persistence) at the strategy's price, or not at
//!   all (`Rules`: utility only);
//! - `Optimising` homes plan 24 hours ahead every hour and whenever the EV plugs in (forecasts:
//!   persistence for load, smart persistence for PV; the driver states departure and energy
//!   needed at plug-in), follow the plan's battery and EV setpoints, and bid the plan's import or
//!   export at their marginal values (computed at each re-plan). With `coordinated`, a community
//!   coordinator allocates import capacity under the transformer limit at every re-plan
//!   ([`crate::community::allocate`]).
//!
//! Settlement: what a home bought or sold peer to peer is paid at the trade's price; the metered
//! rest at the tariff (import at retail, export at feed-in; energy sold but not delivered is
//! bought back at retail, energy bought but not used sold back at feed-in).
//!
//! Cost: `O(slots × homes)` for homes without an optimising agent, plus three 96-slot programs
//! per optimising home per re-plan (the plan and its two marginal values).

use crate::data::{household_load_kw, pv_power_kw, BdewProfile, PvArray, WeatherHour};
use crate::forecast::{home_forecast, Context, Forecaster, Persistence};
use crate::schedule::{Battery, Ev, HomeProblem, Plan, Schedule, DT_H};
use crate::strategy::{LinearRamp, Values, ZeroIntelligence};
use crate::strategy::{MarketView, Optimising, OrderIntent, Position, Side, Strategy};
use crate::thermal::Heating;
use crate::SLOTS_PER_DAY;
use gridmesh_market as market;
use rand::{Rng, SeedableRng};
use serde::Serialize;

/// How a home runs its devices and trades.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AgentKind {
    /// Rule-based devices, no market: the utility-only home.
    Rules,
    /// Rule-based devices, zero-intelligence bids and asks.
    ZeroIntelligence,
    /// Rule-based devices, gsy-e's linear price ramp.
    LinearRamp,
    /// Planned devices, bids at marginal values.
    Optimising,
}

impl AgentKind {
    pub fn name(self) -> &'static str {
        match self {
            AgentKind::Rules => "utility only",
            AgentKind::ZeroIntelligence => "zero intelligence",
            AgentKind::LinearRamp => "linear ramp",
            AgentKind::Optimising => "optimising",
        }
    }
}

/// Where the linear ramp's last update before gate closure lands (0 opening, 1 gate closure):
/// agents that re-price every few minutes over an order window of several slots last move
/// within its final quarter.
pub const RAMP_LAST_UPDATE: f64 = 0.75;

/// A time-of-use tariff in local time (CET), tokens per kWh.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct TouTariff {
    /// 00:00-06:00.
    pub night_per_kwh: f64,
    /// 06:00-17:00 and 21:00-24:00.
    pub day_per_kwh: f64,
    /// 17:00-21:00.
    pub peak_per_kwh: f64,
    pub feed_in_per_kwh: f64,
}

impl Default for TouTariff {
    fn default() -> TouTariff {
        TouTariff {
            night_per_kwh: 0.24,
            day_per_kwh: 0.32,
            peak_per_kwh: 0.40,
            feed_in_per_kwh: 0.08,
        }
    }
}

impl TouTariff {
    /// Retail price of a UTC slot of 2010.
    pub fn retail_at(&self, slot: usize) -> f64 {
        let local_hour = ((slot + 4) % SLOTS_PER_DAY) / 4;
        match local_hour {
            0..=5 => self.night_per_kwh,
            17..=20 => self.peak_per_kwh,
            _ => self.day_per_kwh,
        }
    }
}

/// What the study simulates.
#[derive(Clone, Debug, Serialize)]
pub struct StudyConfig {
    pub homes: usize,
    pub days: usize,
    /// Day of 2010 (0-based) the study starts; at least 7 (forecasts need a week of history).
    pub first_day: usize,
    pub seed: u64,
    pub pv_share: f64,
    pub battery_share: f64,
    pub ev_share: f64,
    /// The transformer's rating, kW (reported against; enforced with `coordinated`).
    pub transformer_kw: f64,
    /// The share of the rating the coordinator allocates; the rest is headroom for forecast
    /// errors (the plans see forecasts, the transformer the actual load).
    pub coordination_share: f64,
    /// Slots between an optimising home's re-plans.
    pub replan_slots: usize,
    /// Slots an optimising home plans ahead.
    pub horizon: usize,
    pub tariff: TouTariff,
}

impl Default for StudyConfig {
    fn default() -> StudyConfig {
        StudyConfig {
            homes: 100,
            days: 30,
            first_day: 120, // 1 May
            seed: 1,
            pv_share: 0.6,
            battery_share: 0.4,
            ev_share: 0.35,
            transformer_kw: 160.0,
            coordination_share: 0.9,
            replan_slots: 4,
            horizon: SLOTS_PER_DAY,
            tariff: TouTariff::default(),
        }
    }
}

/// Why a study cannot run.
#[derive(Debug, thiserror::Error)]
pub enum StudyError {
    #[error("bad study setting: {0}")]
    Config(String),
}

impl StudyConfig {
    pub fn check(&self) -> Result<(), StudyError> {
        let bad = |m: String| Err(StudyError::Config(m));
        if !(1..=10_000).contains(&self.homes) {
            return bad(format!("homes must be 1 to 10000, not {}", self.homes));
        }
        if self.days == 0 || self.first_day < 7 || self.first_day + self.days + 1 > 365 {
            return bad(format!(
                "the study must lie within 2010 after its first week and leave a day for the last plan: first day {} + {} days",
                self.first_day, self.days
            ));
        }
        for (name, v) in [
            ("pv share", self.pv_share),
            ("battery share", self.battery_share),
            ("EV share", self.ev_share),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return bad(format!("{name} must be between 0 and 1, not {v}"));
            }
        }
        if self.transformer_kw.is_nan() || self.transformer_kw <= 0.0 {
            return bad("the transformer rating must be positive".into());
        }
        if !(self.coordination_share > 0.0 && self.coordination_share <= 1.0) {
            return bad("the coordinated share of the rating must be in (0, 1]".into());
        }
        if self.replan_slots == 0 || !(8..=192).contains(&self.horizon) {
            return bad("re-plan at least every slot, over 8 to 192 slots".into());
        }
        let t = &self.tariff;
        let prices = [t.night_per_kwh, t.day_per_kwh, t.peak_per_kwh];
        let below = |p: f64| p.is_nan() || p < t.feed_in_per_kwh;
        if prices.iter().any(|p| below(*p)) || t.feed_in_per_kwh.is_nan() || t.feed_in_per_kwh < 0.0
        {
            return bad(
                "retail prices must be at least the feed-in price, which is not negative".into(),
            );
        }
        Ok(())
    }
}

/// An EV's stay at home: plugged in from `arrival` to before `departure` (UTC slots of 2010),
/// needing `energy_kwh` by then.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Session {
    pub arrival: usize,
    pub departure: usize,
    pub energy_kwh: f64,
}

/// One home of the community: its actual load and equipment.
#[derive(Clone, Debug)]
pub struct Home {
    pub load_kw: Vec<f64>,
    pub pv_kwp: f64,
    pub battery: Option<Battery>,
    pub ev_power_kw: f64,
    pub sessions: Vec<Session>,
    pub import_limit_kw: f64,
    pub export_limit_kw: f64,
    /// Space heating by heat pump (not in `load_kw`): planned within its comfort band.
    pub heating: Option<Heating>,
}

/// The community's homes, the PV production of one kWp (actual and clear sky) and the outdoor
/// temperature per slot (°C; empty where no home heats by heat pump).
pub struct Community {
    pub homes: Vec<Home>,
    pub pv_per_kwp: Vec<f64>,
    pub clear_sky_per_kwp: Vec<f64>,
    pub outdoor_c: Vec<f64>,
}

impl Community {
    /// The outdoor temperature in slot `t` (10 °C where none is known: no heating needed).
    pub fn outdoor_at(&self, t: usize) -> f64 {
        self.outdoor_c.get(t).copied().unwrap_or(10.0)
    }
}

/// Draws the community (seeded): who has what, loads, EV habits.
pub fn community(cfg: &StudyConfig, weather: &[WeatherHour], profile: &BdewProfile) -> Community {
    let (pv_per_kwp, clear_sky_per_kwp) = pv_power_kw(weather, &PvArray::potsdam(1.0));
    let homes = (0..cfg.homes)
        .map(|i| {
            let seed = cfg.seed.wrapping_mul(1_000_003).wrapping_add(i as u64);
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let annual_kwh = rng.gen_range(2_000.0..5_500.0);
            let pv_kwp = if rng.gen_bool(cfg.pv_share) {
                rng.gen_range(4.0..10.0)
            } else {
                0.0
            };
            let battery = rng.gen_bool(cfg.battery_share).then(|| {
                let capacity_kwh: f64 = rng.gen_range(5.0..13.5);
                Battery {
                    capacity_kwh,
                    power_kw: (capacity_kwh / 2.0).min(5.0),
                    charge_efficiency: 0.95,
                    discharge_efficiency: 0.95,
                    initial_kwh: capacity_kwh / 2.0,
                    reserve_kwh: capacity_kwh * 0.1,
                }
            });
            let has_ev = rng.gen_bool(cfg.ev_share);
            let ev_power_kw = if rng.gen_bool(0.5) { 11.0 } else { 7.4 };
            let mut sessions = Vec::new();
            if has_ev {
                let (from, to) = (cfg.first_day - 1, cfg.first_day + cfg.days + 1);
                for day in from..to {
                    // Home between 16:00 and 20:00 local, away between 06:00 and 08:00.
                    let arrival = day * SLOTS_PER_DAY + rng.gen_range(64..80) - 4;
                    let departure = (day + 1) * SLOTS_PER_DAY + rng.gen_range(24..32) - 4;
                    sessions.push(Session {
                        arrival,
                        departure,
                        energy_kwh: rng.gen_range(4.0..14.0),
                    });
                }
            }
            Home {
                load_kw: household_load_kw(profile, annual_kwh, seed),
                pv_kwp,
                battery,
                ev_power_kw,
                sessions,
                import_limit_kw: 30.0,
                export_limit_kw: 10.0,
                heating: None,
            }
        })
        .collect();
    Community {
        homes,
        pv_per_kwp,
        clear_sky_per_kwp,
        outdoor_c: Vec::new(),
    }
}

/// One study run: which agent each home has, and whether the coordinator allocates capacity.
#[derive(Clone, Debug, Serialize)]
pub struct Scenario {
    pub name: String,
    pub agents: Vec<AgentKind>,
    pub coordinated: bool,
}

impl Scenario {
    /// Every home with the same agent.
    pub fn all(name: &str, kind: AgentKind, homes: usize, coordinated: bool) -> Scenario {
        Scenario {
            name: name.to_string(),
            agents: vec![kind; homes],
            coordinated,
        }
    }

    /// The standard comparison: utility only, zero intelligence, a mix of all three strategies
    /// (home `i` has strategy `i mod 3`), all optimising, all optimising and coordinated.
    pub fn standard(homes: usize) -> Vec<Scenario> {
        let mix = [
            AgentKind::ZeroIntelligence,
            AgentKind::LinearRamp,
            AgentKind::Optimising,
        ];
        vec![
            Scenario::all("utility only", AgentKind::Rules, homes, false),
            Scenario::all(
                "zero intelligence",
                AgentKind::ZeroIntelligence,
                homes,
                false,
            ),
            Scenario {
                name: "mixed".into(),
                agents: (0..homes).map(|i| mix[i % 3]).collect(),
                coordinated: false,
            },
            Scenario::all("optimising", AgentKind::Optimising, homes, false),
            Scenario::all(
                "optimising, coordinated",
                AgentKind::Optimising,
                homes,
                true,
            ),
        ]
    }
}

/// A group of homes' results (by agent kind).
#[derive(Clone, Debug, Serialize)]
pub struct GroupResult {
    pub agent: AgentKind,
    pub homes: usize,
    /// Mean bill over the study, tokens (negative: the home earned).
    pub mean_bill: f64,
    /// Mean saving against the same homes in the utility-only run (see [`compare`]), tokens.
    pub mean_saving: Option<f64>,
}

/// What one scenario produced.
#[derive(Clone, Debug, Serialize)]
pub struct ScenarioResult {
    pub name: String,
    pub coordinated: bool,
    /// Per home, tokens.
    pub bills: Vec<f64>,
    pub groups: Vec<GroupResult>,
    pub mean_bill: f64,
    /// 1 − energy imported through the transformer / energy the homes used (load and EVs).
    pub self_sufficiency: f64,
    /// The transformer's highest import and export, kW (15-minute means).
    pub transformer_peak_kw: f64,
    /// The highest import between 17:00 and 21:00 local time, kW.
    pub evening_peak_kw: f64,
    pub transformer_peak_export_kw: f64,
    /// Slots the transformer imported more than its rating.
    pub slots_over_rating: usize,
    /// Equivalent full cycles per battery over the study (discharged energy / capacity).
    pub battery_cycles: f64,
    pub p2p_kwh: f64,
    /// Volume-weighted mean peer-to-peer price, tokens per kWh.
    pub mean_p2p_price: f64,
    /// EV energy not delivered by departure, kWh (all homes).
    pub ev_unmet_kwh: f64,
    /// Plans that fell back to the safe plan, and homes the coordinator could not fit.
    pub fallbacks: usize,
    pub unfit: usize,
    pub seconds: f64,
}

/// A home's devices during a run: battery charge, the EV's stay and what it still needs.
#[derive(Clone, Debug)]
pub struct DeviceState {
    pub soc_kwh: f64,
    pub ev_remaining_kwh: f64,
    /// The active session (index into [`Home::sessions`]).
    pub session: Option<usize>,
    /// Energy the battery has discharged, kWh (for cycle counts).
    pub discharged_kwh: f64,
    /// Indoor temperature of a heat-pump home, °C.
    pub indoor_c: f64,
    /// Its hot-water tank's temperature, °C.
    pub tank_c: f64,
}

/// What a home's devices did in one slot, kW (15-minute means).
#[derive(Clone, Copy, Debug)]
pub struct Dispatch {
    /// Grid exchange, import positive (after curtailment at the export limit).
    pub net_kw: f64,
    pub ev_kw: f64,
    /// Battery power, charging positive.
    pub battery_kw: f64,
    /// PV curtailed at the export limit.
    pub curtailed_kw: f64,
    /// The heat pump's power, kW.
    pub heat_kw: f64,
}

impl DeviceState {
    /// The devices at the start of a run.
    pub fn new(h: &Home) -> DeviceState {
        DeviceState {
            soc_kwh: h.battery.as_ref().map_or(0.0, |b| b.initial_kwh),
            ev_remaining_kwh: 0.0,
            session: None,
            discharged_kwh: 0.0,
            // Mid-band at the start.
            indoor_c: h
                .heating
                .as_ref()
                .map_or(20.0, |x| (x.band_c.0 + x.band_c.1) / 2.0),
            tank_c: h
                .heating
                .as_ref()
                .and_then(|x| x.hot_water.as_ref())
                .map_or(50.0, |w| (w.band_c.0 + w.band_c.1) / 2.0),
        }
    }

    /// The heat pumps over slot `t` at `outdoor_c`: each at the plan's power (step `k` of
    /// `planned`: the building, then the tank), raised where the forecast erred to what keeps
    /// its band's lower edge, or on its thermostat without a plan; `off` keeps them off (an
    /// outage). Returns their power.
    pub fn heat(
        &mut self,
        h: &Home,
        planned: Option<(&Schedule, usize)>,
        t: usize,
        outdoor_c: f64,
        off: bool,
    ) -> f64 {
        let Some(heating) = &h.heating else {
            return 0.0;
        };
        let mut stores = vec![(heating.store(&[outdoor_c], self.indoor_c), self.indoor_c)];
        if let Some(w) = &heating.hot_water {
            stores.push((
                w.store(&[outdoor_c], local_slot(t), self.tank_c),
                self.tank_c,
            ));
        }
        let mut total = 0.0;
        let mut after = Vec::with_capacity(2);
        for (n, (store, temp)) in stores.iter().enumerate() {
            let hold = store.power_to_reach(0, *temp, store.min_c);
            let p = if off {
                0.0
            } else {
                match planned {
                    Some((plan, k)) if plan.heat_kw.len() > n => {
                        plan.heat_kw[n][k].clamp(0.0, store.max_power_kw).max(hold)
                    }
                    _ => hold,
                }
            };
            after.push(store.next(0, *temp, p));
            total += p;
        }
        self.indoor_c = after[0];
        if let Some(&tank) = after.get(1) {
            self.tank_c = tank;
        }
        total
    }

    /// Departures and plug-ins at the start of slot `t`: returns whether the car arrived, and the
    /// energy it left without (kWh) if it departed.
    pub fn plug(&mut self, h: &Home, t: usize) -> (bool, f64) {
        let mut unmet = 0.0;
        if let Some(k) = self.session {
            if h.sessions[k].departure <= t {
                unmet = self.ev_remaining_kwh;
                self.session = None;
                self.ev_remaining_kwh = 0.0;
            }
        }
        if self.session.is_none() {
            if let Some(k) = h.sessions.iter().position(|x| x.arrival == t) {
                self.session = Some(k);
                self.ev_remaining_kwh = h.sessions[k].energy_kwh;
                return (true, unmet);
            }
        }
        (false, unmet)
    }

    /// Runs the devices over one slot of actual `load_kw` and `pv_kw`: the plan's setpoints
    /// (step `k` of `planned`), or the rules without one (battery: self-consumption, never below
    /// its reserve; EV: full power from plug-in). With a plan the battery holds the grid exchange
    /// the plan expects and takes the forecast's error, except that where the plan exports it
    /// discharges no more (charges no less) than planned: a shortfall there shrinks the export. PV is curtailed only beyond the export
    /// limit, `export_cap_kw` (an allocation the inverter holds) and, where the plan curtails,
    /// the plan's export.
    pub fn step(
        &mut self,
        h: &Home,
        planned: Option<(&Schedule, usize)>,
        (load_kw, pv_kw): (f64, f64),
        t: usize,
        outdoor_c: f64,
        export_cap_kw: Option<f64>,
    ) -> Dispatch {
        let heat_kw = self.heat(h, planned, t, outdoor_c, false);
        // The heat pump is part of what the battery and the grid see.
        let load_kw = load_kw + heat_kw;
        let want_ev = planned.map_or(h.ev_power_kw, |(p, k)| p.ev_kw[k]);
        let ev_kw = if self.session.is_some() {
            want_ev.clamp(0.0, h.ev_power_kw.min(self.ev_remaining_kwh / DT_H))
        } else {
            0.0
        };
        let battery_kw = match &h.battery {
            Some(b) => {
                let max_ch = ((b.capacity_kwh - self.soc_kwh) / (b.charge_efficiency * DT_H))
                    .clamp(0.0, b.power_kw);
                let max_dis = ((self.soc_kwh - b.reserve_kwh) * b.discharge_efficiency / DT_H)
                    .clamp(0.0, b.power_kw);
                let p = match planned {
                    Some((plan, k)) => {
                        let hold =
                            plan.import_kw[k] - plan.export_kw[k] - (load_kw - pv_kw + ev_kw);
                        // Where the plan exports, a shortfall shrinks the export: the battery
                        // keeps what the plan stores (feed-in pays less than the energy is worth).
                        let planned = plan.charge_kw[k] - plan.discharge_kw[k];
                        if plan.export_kw[k] > 1e-9 {
                            hold.max(planned)
                        } else {
                            hold
                        }
                    }
                    // Self-consumption: the surplus after the EV, or the deficit with it.
                    None => pv_kw - load_kw - ev_kw,
                };
                let p = p.clamp(-max_dis, max_ch);
                self.charge(b, p);
                p
            }
            None => 0.0,
        };
        self.ev_remaining_kwh = (self.ev_remaining_kwh - ev_kw * DT_H).max(0.0);
        let raw = load_kw - pv_kw + battery_kw + ev_kw;
        // The inverter holds the export to the connection's limit and any cap it was given (an
        // envelope, an allocation), and where the plan curtails, to the plan's export.
        let mut export_kw = h
            .export_limit_kw
            .min(export_cap_kw.unwrap_or(f64::INFINITY));
        if let Some((p, k)) =
            planned.filter(|(p, k)| p.curtail_kw.get(*k).is_some_and(|c| *c > 1e-6))
        {
            export_kw = export_kw.min(p.export_kw[k]);
        }
        let net_kw = raw + (-export_kw - raw).clamp(0.0, pv_kw);
        Dispatch {
            net_kw,
            ev_kw,
            battery_kw,
            curtailed_kw: net_kw - raw,
            heat_kw,
        }
    }

    /// Moves `p` kW (charging positive) into the battery for one slot.
    pub fn charge(&mut self, b: &Battery, p: f64) {
        if p >= 0.0 {
            self.soc_kwh += p * b.charge_efficiency * DT_H;
        } else {
            self.soc_kwh += p / b.discharge_efficiency * DT_H;
            self.discharged_kwh -= p * DT_H;
        }
        debug_assert!(self.soc_kwh <= b.capacity_kwh + 1e-9);
        debug_assert!(self.soc_kwh >= -1e-9);
    }
}

/// A home's state during a run.
struct HomeState {
    dev: DeviceState,
    plan: Option<(usize, Schedule)>,
    /// Marginal value of a kWh bought and cost of one sold, from the last re-plan.
    values: (f64, f64),
    last_net_kw: f64,
    zero_intelligence: ZeroIntelligence,
    bill: f64,
    imported_kwh: f64,
    used_kwh: f64,
}

const TOKEN_DECIMALS: u32 = 6;
const UNIT: f64 = 1e6;

/// Runs one scenario over the community.
pub fn run(cfg: &StudyConfig, c: &Community, scenario: &Scenario) -> ScenarioResult {
    let started = std::time::Instant::now();
    let n = c.homes.len();
    assert_eq!(scenario.agents.len(), n, "one agent per home");
    let first = cfg.first_day * SLOTS_PER_DAY;
    let last = first + cfg.days * SLOTS_PER_DAY;
    let mut states: Vec<HomeState> = c
        .homes
        .iter()
        .enumerate()
        .map(|(i, h)| HomeState {
            dev: DeviceState::new(h),
            plan: None,
            values: (0.0, 0.0),
            last_net_kw: h.load_kw[first - 1] - c.pv_per_kwp[first - 1] * h.pv_kwp,
            zero_intelligence: ZeroIntelligence::new(cfg.seed ^ ((i as u64) << 20)),
            bill: 0.0,
            imported_kwh: 0.0,
            used_kwh: 0.0,
        })
        .collect();
    let mut transformer_kw = Vec::with_capacity(last - first);
    let (mut p2p_kwh, mut p2p_value, mut ev_unmet, mut fallbacks, mut unfit) =
        (0.0, 0.0, 0.0, 0usize, 0usize);
    let optimising: Vec<usize> = (0..n)
        .filter(|&i| scenario.agents[i] == AgentKind::Optimising)
        .collect();
    for t in first..last {
        // Plug-ins and departures.
        let mut arrived: Vec<usize> = Vec::new();
        for (i, (h, s)) in c.homes.iter().zip(states.iter_mut()).enumerate() {
            let (came, unmet) = s.dev.plug(h, t);
            ev_unmet += unmet;
            if came {
                arrived.push(i);
            }
        }
        // Optimising homes re-plan every `replan_slots`, and a home alone when its car plugs in.
        let due: Vec<usize> = if (t - first) % cfg.replan_slots == 0 {
            optimising.clone()
        } else {
            arrived
                .into_iter()
                .filter(|i| scenario.agents[*i] == AgentKind::Optimising)
                .collect()
        };
        if !due.is_empty() {
            let problems: Vec<HomeProblem> = due
                .iter()
                .map(|&i| problem(c, i, &states[i].dev, t, cfg.horizon, &cfg.tariff))
                .collect();
            let planned = if scenario.coordinated {
                // Capacity left by the homes not planning now: the inflexible net load of homes
                // without an optimising agent and the current plans of those with one.
                let all: Vec<usize> = (0..c.homes.len()).collect();
                let others = capacity_users(
                    c,
                    &all,
                    &optimising,
                    &due,
                    |j| states[j].plan.as_ref(),
                    t,
                    cfg.horizon,
                );
                let a = crate::community::allocate(
                    &problems,
                    &others,
                    cfg.transformer_kw * cfg.coordination_share,
                    t / cfg.replan_slots,
                );
                unfit += a.unfit;
                with_values(
                    due.into_iter().zip(a.problems).collect(),
                    Some((a.schedules, a.values)),
                )
            } else {
                with_values(due.into_iter().zip(problems).collect(), None)
            };
            for (i, schedule, values, fell_back) in planned {
                fallbacks += usize::from(fell_back);
                states[i].plan = Some((t, schedule));
                states[i].values = values;
            }
        }
        // Devices act on the actual slot.
        let retail = cfg.tariff.retail_at(t);
        let feed_in = cfg.tariff.feed_in_per_kwh;
        let mut orders = Vec::new();
        let mut net_kw = vec![0.0; n];
        for i in 0..n {
            let (h, s) = (&c.homes[i], &mut states[i]);
            let kind = scenario.agents[i];
            let load = h.load_kw[t];
            let pv = c.pv_per_kwp[t] * h.pv_kwp;
            let planned = s.plan.as_ref().and_then(|(origin, p)| {
                let k = t - origin;
                (kind == AgentKind::Optimising && k < p.import_kw.len()).then_some((p, k))
            });
            let d = s.dev.step(h, planned, (load, pv), t, c.outdoor_at(t), None);
            let (net, ev_kw) = (d.net_kw, d.ev_kw);
            net_kw[i] = net;
            s.used_kwh += (load + ev_kw) * DT_H;
            s.imported_kwh += net.max(0.0) * DT_H;
            // The home's orders for this slot.
            let position = match planned {
                Some((p, k)) => Position {
                    import_kwh: p.import_kw[k] * DT_H,
                    export_kwh: p.export_kw[k] * DT_H,
                },
                None => Position {
                    import_kwh: s.last_net_kw.max(0.0) * DT_H,
                    export_kwh: (-s.last_net_kw).max(0.0) * DT_H,
                },
            };
            let view = MarketView {
                retail_per_kwh: retail,
                feed_in_per_kwh: feed_in,
                elapsed: RAMP_LAST_UPDATE,
            };
            let intents: Vec<OrderIntent> = match kind {
                AgentKind::Rules => Vec::new(),
                AgentKind::ZeroIntelligence => s.zero_intelligence.orders(&position, &view),
                AgentKind::LinearRamp => LinearRamp.orders(&position, &view),
                AgentKind::Optimising => crate::strategy::at_values(&position, s.values, &view),
            };
            for o in intents {
                if let Some((side, energy_mwh, price)) = o.to_units(TOKEN_DECIMALS) {
                    orders.push(market::Order {
                        id: (i as u64) << 1 | u64::from(side == Side::Ask),
                        side: match side {
                            Side::Bid => market::Side::Bid,
                            Side::Ask => market::Side::Ask,
                        },
                        energy_mwh,
                        price_per_kwh: price,
                        time: 0,
                        area: 0,
                    });
                }
            }
            s.last_net_kw = net;
        }
        // Clearing and settlement.
        let (mut bought, mut sold) = (vec![0.0; n], vec![0.0; n]);
        let mut paid = vec![0.0; n];
        if !orders.is_empty() {
            let tariff = market::Tariff {
                retail_per_kwh: (retail * UNIT).round() as u64,
                feed_in_per_kwh: (feed_in * UNIT).round() as u64,
            };
            let cleared = market::clear(
                &orders,
                &market::Areas::flat(),
                market::Mechanism::PayAsClear,
                Some(tariff),
            )
            .expect("the study's orders are well formed");
            for tr in &cleared.trades {
                let (b, a) = ((tr.bid >> 1) as usize, (tr.ask >> 1) as usize);
                let kwh = tr.energy_mwh as f64 / 1e6;
                bought[b] += kwh;
                sold[a] += kwh;
                paid[b] += tr.buyer_pays() as f64 / UNIT;
                paid[a] -= tr.seller_receives() as f64 / UNIT;
                p2p_kwh += kwh;
                p2p_value += tr.buyer_pays() as f64 / UNIT;
            }
        }
        for i in 0..n {
            let import = net_kw[i].max(0.0) * DT_H;
            let export = (-net_kw[i]).max(0.0) * DT_H;
            let utility = (import - bought[i]).max(0.0) * retail
                - (bought[i] - import).max(0.0) * feed_in
                - (export - sold[i]).max(0.0) * feed_in
                + (sold[i] - export).max(0.0) * retail;
            states[i].bill += paid[i] + utility;
        }
        transformer_kw.push(net_kw.iter().sum::<f64>());
    }
    let bills: Vec<f64> = states.iter().map(|s| s.bill).collect();
    let mut groups: Vec<GroupResult> = Vec::new();
    for kind in [
        AgentKind::Rules,
        AgentKind::ZeroIntelligence,
        AgentKind::LinearRamp,
        AgentKind::Optimising,
    ] {
        let members: Vec<f64> = (0..n)
            .filter(|&i| scenario.agents[i] == kind)
            .map(|i| bills[i])
            .collect();
        if !members.is_empty() {
            groups.push(GroupResult {
                agent: kind,
                homes: members.len(),
                mean_bill: members.iter().sum::<f64>() / members.len() as f64,
                mean_saving: None,
            });
        }
    }
    let imported: f64 = transformer_kw.iter().map(|p| p.max(0.0) * DT_H).sum();
    let used: f64 = states.iter().map(|s| s.used_kwh).sum();
    let batteries: Vec<(f64, f64)> = c
        .homes
        .iter()
        .zip(&states)
        .filter_map(|(h, s)| {
            h.battery
                .as_ref()
                .map(|b| (s.dev.discharged_kwh, b.capacity_kwh))
        })
        .collect();
    ScenarioResult {
        name: scenario.name.clone(),
        coordinated: scenario.coordinated,
        mean_bill: bills.iter().sum::<f64>() / n as f64,
        bills,
        groups,
        self_sufficiency: 1.0 - imported / used.max(1e-9),
        transformer_peak_kw: transformer_kw.iter().copied().fold(0.0, f64::max),
        evening_peak_kw: transformer_kw
            .iter()
            .enumerate()
            .filter(|(k, _)| (68..84).contains(&((first + k + 4) % SLOTS_PER_DAY)))
            .map(|(_, p)| *p)
            .fold(0.0, f64::max),
        transformer_peak_export_kw: transformer_kw.iter().map(|p| -p).fold(0.0, f64::max),
        slots_over_rating: transformer_kw
            .iter()
            .filter(|p| **p > cfg.transformer_kw)
            .count(),
        battery_cycles: if batteries.is_empty() {
            0.0
        } else {
            batteries.iter().map(|(d, c)| d / c).sum::<f64>() / batteries.len() as f64
        },
        p2p_kwh,
        mean_p2p_price: if p2p_kwh > 0.0 {
            p2p_value / p2p_kwh
        } else {
            0.0
        },
        ev_unmet_kwh: ev_unmet,
        fallbacks,
        unfit,
        seconds: started.elapsed().as_secs_f64(),
    }
}

/// Runs `scenarios` over the community and fills every group's saving against the first
/// scenario (the utility-only baseline of [`Scenario::standard`]).
/// `progress` hears of every scenario as it finishes.
pub fn compare(
    cfg: &StudyConfig,
    c: &Community,
    scenarios: &[Scenario],
    mut progress: impl FnMut(&ScenarioResult),
) -> Vec<ScenarioResult> {
    let mut results: Vec<ScenarioResult> = scenarios
        .iter()
        .map(|s| {
            let r = run(cfg, c, s);
            progress(&r);
            r
        })
        .collect();
    let Some(baseline) = results.first().map(|r| r.bills.clone()) else {
        return results;
    };
    for (r, s) in results.iter_mut().zip(scenarios) {
        for g in &mut r.groups {
            let saved: Vec<f64> = (0..baseline.len())
                .filter(|&i| s.agents[i] == g.agent)
                .map(|i| baseline[i] - r.bills[i])
                .collect();
            g.mean_saving = Some(saved.iter().sum::<f64>() / saved.len().max(1) as f64);
        }
    }
    results
}

/// The results as a Markdown table (one row per scenario and agent group).
pub fn table(cfg: &StudyConfig, results: &[ScenarioResult]) -> String {
    use std::fmt::Write;
    let mut out = format!(
        "{} homes, {} days from day {} of 2010 (Potsdam weather, BDEW H25 households), transformer {:.0} kW\n\n",
        cfg.homes, cfg.days, cfg.first_day, cfg.transformer_kw
    );
    out += "| scenario | agents | homes | mean bill (tokens) | saving vs utility only | self-sufficiency | transformer peak (kW) | evening peak (kW) | slots over rating | battery cycles | P2P (kWh) | P2P price | run (s) |\n";
    out += "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n";
    for r in results {
        for (k, g) in r.groups.iter().enumerate() {
            let shared = |v: String| if k == 0 { v } else { String::new() };
            let _ = writeln!(
                out,
                "| {} | {} | {} | {:.2} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                shared(r.name.clone()),
                g.agent.name(),
                g.homes,
                g.mean_bill,
                g.mean_saving.map_or("-".into(), |s| format!("{s:.2}")),
                shared(format!("{:.1} %", r.self_sufficiency * 100.0)),
                shared(format!("{:.1}", r.transformer_peak_kw)),
                shared(format!("{:.1}", r.evening_peak_kw)),
                shared(r.slots_over_rating.to_string()),
                shared(format!("{:.2}", r.battery_cycles)),
                shared(format!("{:.0}", r.p2p_kwh)),
                shared(if r.p2p_kwh > 0.0 {
                    format!("{:.3}", r.mean_p2p_price)
                } else {
                    "-".into()
                }),
                shared(format!("{:.1}", r.seconds)),
            );
        }
    }
    out
}

/// Home `i`'s problem at slot `t` over `horizon` slots: forecasts from what it has observed
/// before `t`, its devices' state `s`, the tariff.
pub fn problem(
    c: &Community,
    i: usize,
    s: &DeviceState,
    t: usize,
    horizon: usize,
    tariff: &TouTariff,
) -> HomeProblem {
    let h = &c.homes[i];
    let hz = horizon.min(c.pv_per_kwp.len() - t);
    let (load_kw, pv_per_kwp) =
        home_forecast(&h.load_kw, &c.pv_per_kwp, &c.clear_sky_per_kwp, t, hz);
    let pv_kw: Vec<f64> = pv_per_kwp.into_iter().map(|p| p * h.pv_kwp).collect();
    let ev = s.session.and_then(|k| {
        let session = &h.sessions[k];
        (s.ev_remaining_kwh > 1e-6).then(|| Ev {
            power_kw: h.ev_power_kw,
            energy_needed_kwh: s.ev_remaining_kwh,
            arrival: 0,
            departure: (session.departure - t).min(hz),
        })
    });
    HomeProblem {
        load_kw,
        pv_kw,
        import_price: (t..t + hz).map(|u| tariff.retail_at(u)).collect(),
        export_price: vec![tariff.feed_in_per_kwh; hz],
        import_limit_kw: h.import_limit_kw,
        import_cap_kw: Vec::new(),
        export_cap_kw: Vec::new(),
        export_limit_kw: h.export_limit_kw,
        battery: h.battery.clone().map(|b| Battery {
            initial_kwh: s.soc_kwh,
            ..b
        }),
        ev,
        deferrable: Vec::new(),
        // Its heating, over the weather's temperatures (the home's forecast of them).
        thermal: h
            .heating
            .iter()
            .flat_map(|x| {
                let outdoor: Vec<f64> = (t..t + hz).map(|u| c.outdoor_at(u)).collect();
                let tank = x
                    .hot_water
                    .as_ref()
                    .map(|w| w.store(&outdoor, local_slot(t), s.tank_c));
                std::iter::once(x.store(&outdoor, s.indoor_c)).chain(tank)
            })
            .collect(),
        flex: None,
        resolution: None,
        warm: None,
    }
}

/// The local (CET) slot of the day of window slot `t` (the window starts at a UTC midnight).
fn local_slot(t: usize) -> usize {
    (t + 4) % SLOTS_PER_DAY
}

/// The net load (kW, per step from `t`) of the homes of `members` (sorted) not planning now:
/// the inflexible forecast of homes without an optimising agent plus the current plans of
/// optimising homes not `due` (both sorted). What a coordinated allocation shares their
/// transformer's capacity around.
pub fn capacity_users<'a>(
    c: &Community,
    members: &[usize],
    optimising: &[usize],
    due: &[usize],
    plan: impl Fn(usize) -> Option<&'a (usize, Schedule)>,
    t: usize,
    horizon: usize,
) -> Vec<f64> {
    let weighted: Vec<(usize, f64)> = members.iter().map(|&i| (i, 1.0)).collect();
    weighted_users(c, &weighted, optimising, due, plan, t, horizon)
}

/// [`capacity_users`] with each home's net load weighted: Σ weight · net load over the homes
/// of `members` (home, weight; sorted by home) not planning now. What a limit the homes load
/// unequally (a bus's voltage) is shared around.
pub fn weighted_users<'a>(
    c: &Community,
    members: &[(usize, f64)],
    optimising: &[usize],
    due: &[usize],
    plan: impl Fn(usize) -> Option<&'a (usize, Schedule)>,
    t: usize,
    horizon: usize,
) -> Vec<f64> {
    let mut nets: Vec<Option<(usize, Vec<f64>)>> = vec![None; c.homes.len()];
    for &(i, _) in members {
        nets[i] = plan(i).map(|(origin, p)| (*origin, net_kw(p)));
    }
    Others::new(
        c,
        members.iter().map(|(i, _)| *i),
        optimising,
        due,
        |i| {
            nets[i]
                .as_ref()
                .map(|(origin, net)| (*origin, net.as_slice()))
        },
        t,
        horizon,
    )
    .weighted(members)
}

/// A schedule's net load per slot, kW: import − export.
pub fn net_kw(s: &Schedule) -> Vec<f64> {
    s.import_kw
        .iter()
        .zip(&s.export_kw)
        .map(|(import, export)| import - export)
        .collect()
}

/// The net load (kW, per step of `horizon` from `t`) of each home not planning now, as a
/// coordinator sees it: the persistence forecast of a home without an optimising agent, the
/// current plan of an optimising home not due. Built once per slot for every limit's sum
/// ([`Others::weighted`]): a feeder's limits each weigh many of the same homes. The plans' net
/// loads are borrowed, not copied: most homes keep theirs from slot to slot.
pub struct Others<'a> {
    /// Steps of the horizon.
    steps: usize,
    /// Window slot of the first step.
    t: usize,
    homes: Vec<OtherHome<'a>>,
    /// The net load forecasts of the homes without an optimising agent.
    forecasts: Vec<Vec<f64>>,
}

/// A home as [`Others`] holds it.
#[derive(Clone, Copy, Default)]
enum OtherHome<'a> {
    /// Planning now, or not asked for.
    #[default]
    Absent,
    /// Without an optimising agent: its forecast, at this index of [`Others`]'s forecasts.
    Forecast(usize),
    /// An optimising home's plan made at window slot `.0`: its net load per slot ([`net_kw`]).
    Plan(usize, &'a [f64]),
}

impl<'a> Others<'a> {
    /// The net loads of `homes` (any order) of community `c` at window slot `t`: `optimising`
    /// lists the homes with an optimising agent, `due` those planning now (both sorted), and
    /// `plan` gives the slot an optimising home's current plan was made at and its net load
    /// ([`net_kw`]).
    pub fn new(
        c: &Community,
        homes: impl IntoIterator<Item = usize>,
        optimising: &[usize],
        due: &[usize],
        plan: impl Fn(usize) -> Option<(usize, &'a [f64])>,
        t: usize,
        horizon: usize,
    ) -> Others<'a> {
        let steps = horizon.min(c.pv_per_kwp.len() - t);
        let none = Context { clear_sky_kw: None };
        let mut pv: Option<Vec<f64>> = None;
        let mut forecasts = Vec::new();
        let mut out = vec![OtherHome::Absent; c.homes.len()];
        for i in homes {
            out[i] = if optimising.binary_search(&i).is_err() {
                let pv =
                    pv.get_or_insert_with(|| Persistence.forecast(&c.pv_per_kwp, t, steps, &none));
                let h = &c.homes[i];
                let load = Persistence.forecast(&h.load_kw, t, steps, &none);
                forecasts.push((0..steps).map(|k| load[k] - pv[k] * h.pv_kwp).collect());
                OtherHome::Forecast(forecasts.len() - 1)
            } else if due.binary_search(&i).is_err() {
                plan(i).map_or(OtherHome::Absent, |(origin, net)| {
                    OtherHome::Plan(origin, net)
                })
            } else {
                OtherHome::Absent
            };
        }
        Others {
            steps,
            t,
            homes: out,
            forecasts,
        }
    }

    /// Σ weight · net load over `members` (home, weight) per step: the homes without an
    /// optimising agent first, then the planned ones, each in the members' order.
    pub fn weighted(&self, members: &[(usize, f64)]) -> Vec<f64> {
        let mut sum = vec![0.0; self.steps];
        for &(i, w) in members {
            if let OtherHome::Forecast(f) = self.homes[i] {
                sum.iter_mut()
                    .zip(&self.forecasts[f])
                    .for_each(|(o, x)| *o += w * x);
            }
        }
        for &(i, w) in members {
            if let OtherHome::Plan(origin, net) = self.homes[i] {
                // Steps k with t + k − origin within the plan.
                let first = origin.saturating_sub(self.t).min(self.steps);
                let from = self.t + first - origin;
                sum[first..]
                    .iter_mut()
                    .zip(net.get(from..).unwrap_or(&[]))
                    .for_each(|(o, x)| *o += w * x);
            }
        }
        sum
    }
}

/// Plans and prices each home, unless `schedules` are given with their marginal values (`None`
/// where they could not be priced): (home, schedule, marginal values, fell back), over the cores.
pub fn with_values(
    problems: Vec<(usize, HomeProblem)>,
    schedules: Option<(Vec<Schedule>, Vec<Option<Values>>)>,
) -> Vec<(usize, Schedule, Values, bool)> {
    type Given = Option<(Schedule, Option<Values>)>;
    let given: Vec<Given> = match schedules {
        Some((s, v)) => s.into_iter().zip(v).map(Some).collect(),
        None => vec![None; problems.len()],
    };
    let jobs: Vec<((usize, HomeProblem), Given)> = problems.into_iter().zip(given).collect();
    on_cores(jobs, |((i, p), given)| {
        let retail = p.import_price[0];
        let feed_in = p.export_price[0];
        let agent = Optimising { problem: p };
        let (plan, values) = match given {
            // Planned and priced already (by the coordinator).
            Some((s, values)) => (Plan::Optimal(s), values),
            None => agent.plan_and_values(),
        };
        let (schedule, fell_back) = match plan {
            Plan::Optimal(s) => (s, false),
            Plan::Fallback { schedule, .. } => (schedule, true),
        };
        let values = if fell_back {
            (retail, feed_in)
        } else {
            values.unwrap_or((retail, feed_in))
        };
        (i, schedule, values, fell_back)
    })
}

/// `work` done on each of `jobs` on the machine's cores, the results in the jobs' order. The
/// threads are rayon's, kept for the process: a simulated slot calls this several times, and
/// starting and ending threads for each call cost more than the work of a small community.
pub fn on_cores<J: Send, R: Send>(jobs: Vec<J>, work: impl Fn(J) -> R + Sync + Send) -> Vec<R> {
    use rayon::prelude::*;
    jobs.into_par_iter().map(work).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the homes not planning now put on a limit, summed home by home and step by step as
    /// the coordinator did before [`Others`]: the same numbers to the bit.
    #[test]
    fn others_sum_what_the_homes_not_planning_put_on_a_limit() {
        let slots = 3 * SLOTS_PER_DAY;
        let wave = |k: usize, a: f64| {
            (0..slots)
                .map(|t| a + ((t * k) % 17) as f64 * 0.13)
                .collect()
        };
        let home = |k: usize| Home {
            load_kw: wave(k + 1, 0.3),
            pv_kwp: k as f64 * 1.5,
            battery: None,
            ev_power_kw: 0.0,
            sessions: Vec::new(),
            import_limit_kw: 20.0,
            export_limit_kw: 20.0,
            heating: None,
        };
        let c = Community {
            homes: (0..6).map(home).collect(),
            pv_per_kwp: wave(5, 0.0),
            clear_sky_per_kwp: vec![0.0; slots],
            outdoor_c: Vec::new(),
        };
        let t = SLOTS_PER_DAY + 7;
        let horizon = 40;
        // Homes 1, 2, 4 and 5 optimise; 2 plans now; 4's plan runs out within the horizon; 5
        // has none yet.
        let optimising = [1, 2, 4, 5];
        let due = [2];
        let schedule = |from: usize, len: usize, k: usize| -> (usize, Schedule) {
            let s = Schedule {
                import_kw: (0..len).map(|u| ((u * k) % 7) as f64 * 0.7).collect(),
                export_kw: (0..len).map(|u| ((u + k) % 5) as f64 * 0.3).collect(),
                ..Schedule::default()
            };
            (from, s)
        };
        let plans = [
            None,
            Some(schedule(t - 3, 96, 3)),
            Some(schedule(t - 1, 96, 5)),
            None,
            Some(schedule(t - 2, 20, 2)),
            None,
        ];
        let members: Vec<(usize, f64)> =
            vec![(0, 0.5), (1, 1.0), (2, 0.7), (3, -0.2), (4, 1.3), (5, 0.9)];
        let got = weighted_users(
            &c,
            &members,
            &optimising,
            &due,
            |j| plans[j].as_ref(),
            t,
            horizon,
        );
        // Before: the inflexible homes' forecasts first, then each planned home, step by step.
        let none = Context { clear_sky_kw: None };
        let pv = Persistence.forecast(&c.pv_per_kwp, t, horizon, &none);
        let mut want = vec![0.0; horizon];
        for &(i, w) in members.iter().filter(|(i, _)| !optimising.contains(i)) {
            let load = Persistence.forecast(&c.homes[i].load_kw, t, horizon, &none);
            for (k, o) in want.iter_mut().enumerate() {
                *o += w * (load[k] - pv[k] * c.homes[i].pv_kwp);
            }
        }
        for &(j, w) in members
            .iter()
            .filter(|(j, _)| optimising.contains(j) && !due.contains(j))
        {
            if let Some((origin, p)) = &plans[j] {
                for (k, o) in want.iter_mut().enumerate() {
                    let u = t + k - origin;
                    if u < p.import_kw.len() {
                        *o += w * (p.import_kw[u] - p.export_kw[u]);
                    }
                }
            }
        }
        assert_eq!(got.len(), horizon);
        for (k, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(g.to_bits(), w.to_bits(), "step {k}: {g} against {w}");
        }
        // The planning home adds nothing, and home 4's plan ends at step 18.
        let only = |i: usize| {
            weighted_users(
                &c,
                &[(i, 1.0)],
                &optimising,
                &due,
                |j| plans[j].as_ref(),
                t,
                horizon,
            )
        };
        assert!(only(2).iter().all(|x| *x == 0.0));
        assert!(only(4)[18..].iter().all(|x| *x == 0.0));
        assert!(only(4)[..18].iter().any(|x| *x != 0.0));
    }
}
