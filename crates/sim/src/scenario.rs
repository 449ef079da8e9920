//! The scenario file: what community to simulate, over which days, under which rules.
//!
//! Every section and key has a default, so the smallest scenario is `name = "x"`. Unknown keys are
//! errors (a misspelt key would otherwise be silently ignored), and [`Scenario::check`] names the
//! key and the accepted range of every bad value. `--set key=value` overrides ([`set`]) are applied
//! to the parsed TOML before it is read, so they are checked the same way.
//!
//! ```toml
//! name = "street-20"
//! seed = 1
//!
//! [period]
//! start = "05-01"        # month-day of the data year (2010), UTC
//! days = 7
//!
//! [homes]
//! count = 20
//! annual_kwh = [2000, 5500]   # drawn uniformly per home
//! # file = "homes.csv"        # or home by home: bus, annual_kwh, pv_kwp, battery_kwh, ev, heat_pump
//!
//! [pv]
//! share = 0.6                 # of homes
//! kwp = [4, 10]
//!
//! [agents]
//! strategy = "zero-intelligence"   # or mix = { optimising = 0.5, zero-intelligence = 0.5 }
//! # replan_slots = 4          # optimising homes re-plan hourly,
//! # step_slots = 4            # planning each slot until then and hourly steps beyond
//! # staggered = true          # a quarter of the homes each slot, in turn
//! # keep_plan_slots = 16      # at its turn a home keeps a plan that still holds, up to 4 hours old
//! # coordinated = true        # optimising homes share the feeder's limits, both ways
//!
//! [feeder]
//! # matpower = "case33bw.m"   # a radial MATPOWER case instead of the generated feeder
//! # home_buses = [18, 22, 33] # and the buses its homes sit on, in turn
//! # dss = "Master.dss"        # or an OpenDSS feeder, solved unbalanced, per phase
//! # home_loads = ["LOAD1"]    # and the single-phase loads its homes replace, in turn
//! transformer_kva = 250
//!
//! [[outages]]
//! start = "05-03 18:00"
//! hours = 3
//!
//! [devices]
//! keyed_share = 0.5           # of PV and battery homes: devices with their own keys (the rest only buy)
//! # check_signatures = true   # sign and verify every reading in memory, as on a node
//!
//! [spoofing]
//! devices = 2                 # keyed inverters that claim more than they make
//! factor = 1.5
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Largest community a scenario may describe.
pub const MAX_HOMES: usize = 20_000;
/// Longest period, days.
pub const MAX_DAYS: usize = 366;
/// Most outages of one scenario.
pub const MAX_OUTAGES: usize = 64;
/// Most runs of one sweep.
pub const MAX_SWEEP_RUNS: usize = 64;

/// Why a scenario cannot run.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("scenario is not valid TOML: {0}")]
    Toml(String),
    #[error("scenario: {0}")]
    Invalid(String),
    #[error("--set {0}: {1}")]
    Override(String, String),
    #[error("{path}: {message}")]
    Data { path: String, message: String },
}

/// A deserialisation error with, for an unknown field, the known one closest to it (at most two
/// edits away): "unknown field `cont`, expected one of `count`, ..." gains "(did you mean
/// `count`?)".
fn with_suggestion(error: &str) -> String {
    let Some(rest) = error.split("unknown field `").nth(1) else {
        return error.to_string();
    };
    let Some((unknown, expected)) = rest.split_once('`') else {
        return error.to_string();
    };
    let closest = expected
        .split('`')
        .skip(1)
        .step_by(2)
        .map(|known| (strsim::damerau_levenshtein(unknown, known), known))
        .min();
    match closest {
        Some((d, known)) if d <= 2 => format!("{} (did you mean `{known}`?)", error.trim_end()),
        _ => error.to_string(),
    }
}

fn bad<T>(m: impl Into<String>) -> Result<T, ScenarioError> {
    Err(ScenarioError::Invalid(m.into()))
}

/// A whole scenario.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    #[serde(default = "one_u64")]
    pub seed: u64,
    #[serde(default)]
    pub period: Period,
    #[serde(default)]
    pub data: DataSources,
    #[serde(default)]
    pub homes: Homes,
    #[serde(default)]
    pub pv: Pv,
    #[serde(default)]
    pub battery: BatterySpec,
    #[serde(default)]
    pub ev: EvSpec,
    #[serde(default)]
    pub heat_pump: HeatPump,
    #[serde(default)]
    pub tariff: Tariff,
    #[serde(default)]
    pub market: Market,
    #[serde(default)]
    pub agents: Agents,
    #[serde(default)]
    pub feeder: FeederChoice,
    #[serde(default)]
    pub outages: Vec<Outage>,
    #[serde(default)]
    pub devices: Devices,
    #[serde(default)]
    pub spoofing: Spoofing,
}

fn one_u64() -> u64 {
    1
}

/// When: days of the data year (2010, UTC), 15-minute slots.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Period {
    /// `MM-DD` of the first day.
    pub start: String,
    pub days: usize,
    /// Only 15 (the ledger's market slot).
    pub resolution_minutes: u32,
}

impl Default for Period {
    fn default() -> Period {
        Period {
            start: "05-01".into(),
            days: 7,
            resolution_minutes: 15,
        }
    }
}

/// Where load and weather come from: `builtin` (the DWD test reference year for Potsdam and the
/// BDEW H25 household profile, shipped in the binary) or a CSV file (see [`crate::data`]).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DataSources {
    pub weather: String,
    pub load: String,
}

impl Default for DataSources {
    fn default() -> DataSources {
        DataSources {
            weather: "builtin".into(),
            load: "builtin".into(),
        }
    }
}

/// The homes.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Homes {
    pub count: usize,
    /// Annual household consumption, drawn uniformly per home, kWh.
    pub annual_kwh: [f64; 2],
    /// Share of each home's load that must stay on in an outage.
    pub critical_share: f64,
    /// The connection's limits, kW.
    pub import_limit_kw: f64,
    pub export_limit_kw: f64,
    /// Tokens each member's account starts with.
    pub initial_tokens: u64,
    /// A CSV of the homes as the planner knows them (`bus`, `annual_kwh`, `pv_kwp`,
    /// `battery_kwh`, `ev`, `heat_pump`; any subset; an empty cell is drawn), one row per home:
    /// `count` must match it. Empty: every home is drawn.
    pub file: String,
}

impl Default for Homes {
    fn default() -> Homes {
        Homes {
            count: 20,
            annual_kwh: [2_000.0, 5_500.0],
            critical_share: 0.3,
            import_limit_kw: 30.0,
            export_limit_kw: 10.0,
            initial_tokens: 1_000,
            file: String::new(),
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Pv {
    pub share: f64,
    pub kwp: [f64; 2],
}

impl Default for Pv {
    fn default() -> Pv {
        Pv {
            share: 0.6,
            kwp: [4.0, 10.0],
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BatterySpec {
    pub share: f64,
    pub capacity_kwh: [f64; 2],
    /// Power as a share of capacity per hour (0.5: a 10 kWh battery has 5 kW), at most `max_power_kw`.
    pub c_rate: f64,
    pub max_power_kw: f64,
    /// One-way efficiency of charging and of discharging.
    pub efficiency: f64,
    /// Kept for outages, as a share of capacity.
    pub reserve_share: f64,
}

impl Default for BatterySpec {
    fn default() -> BatterySpec {
        BatterySpec {
            share: 0.4,
            capacity_kwh: [5.0, 13.5],
            c_rate: 0.5,
            max_power_kw: 5.0,
            efficiency: 0.95,
            reserve_share: 0.1,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EvSpec {
    pub share: f64,
    /// Charger powers to choose from (uniformly), kW.
    pub power_kw: Vec<f64>,
    /// Energy needed per evening, drawn uniformly, kWh.
    pub energy_kwh: [f64; 2],
    /// Local (CET) hours between which the car arrives, and leaves the next morning.
    pub arrival_hour: [f64; 2],
    pub departure_hour: [f64; 2],
}

impl Default for EvSpec {
    fn default() -> EvSpec {
        EvSpec {
            share: 0.35,
            power_kw: vec![7.4, 11.0],
            energy_kwh: [4.0, 14.0],
            arrival_hour: [16.0, 20.0],
            departure_hour: [6.0, 8.0],
        }
    }
}

/// Air-source heat pumps heating their homes: each home a first-order RC building (its heat
/// loss and capacity from its floor area and insulation class), its heat pump's COP falling
/// with the outdoor temperature, held within the owner's comfort band. Optimising homes move
/// heating in time within the band (`shifting`); the others, and all of them with `shifting =
/// false`, heat on a thermostat at the band's lower edge.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HeatPump {
    pub share: f64,
    /// Heated floor area, m², drawn uniformly.
    pub floor_m2: [f64; 2],
    /// Insulation classes drawn from, each as likely (`passive`, `good`, `average`, `poor`).
    pub insulation: Vec<gridmesh_agent::thermal::Insulation>,
    /// The comfort band, °C.
    pub comfort_c: [f64; 2],
    /// Heat from people, appliances and the sun, kW.
    pub gains_kw: f64,
    /// Electrical rating, kW.
    pub max_power_kw: f64,
    /// Whether optimising homes plan their heating (off: thermostat, for comparison).
    pub shifting: bool,
    /// Each heat-pump home's hot-water tank: litres (0: none), heat drawn a day (kWh), the
    /// band it is kept in (°C) and its heat pump's rating for it (kW).
    pub tank_litres: f64,
    pub hot_water_kwh_per_day: f64,
    pub hot_water_c: [f64; 2],
    pub hot_water_power_kw: f64,
}

impl Default for HeatPump {
    fn default() -> HeatPump {
        use gridmesh_agent::thermal::Insulation;
        HeatPump {
            share: 0.0,
            floor_m2: [90.0, 180.0],
            insulation: vec![Insulation::Good, Insulation::Average, Insulation::Poor],
            comfort_c: [20.0, 23.0],
            gains_kw: 0.3,
            max_power_kw: 4.0,
            shifting: true,
            tank_litres: 200.0,
            hot_water_kwh_per_day: 6.0,
            hot_water_c: [45.0, 60.0],
            hot_water_power_kw: 2.0,
        }
    }
}

/// The utility's tariff: time of use in local time (CET), tokens per kWh.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Tariff {
    /// 00:00-06:00.
    pub night: f64,
    /// 06:00-17:00 and 21:00-24:00.
    pub day: f64,
    /// 17:00-21:00.
    pub peak: f64,
    pub feed_in: f64,
}

impl Default for Tariff {
    fn default() -> Tariff {
        let t = gridmesh_agent::study::TouTariff::default();
        Tariff {
            night: t.night_per_kwh,
            day: t.day_per_kwh,
            peak: t.peak_per_kwh,
            feed_in: t.feed_in_per_kwh,
        }
    }
}

/// Inverters with their own keys: they register with a bond and report a signed reading every
/// slot, checked at settlement by proof of generation (register, rating, clear sky, neighbours).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Devices {
    /// Share of the homes with PV or a battery whose devices have their own keys (default all;
    /// the others only buy: the ledger pays a seller for what its keyed devices measured).
    pub keyed_share: f64,
    /// Bond of a keyed device, tokens (at least what the market asks for its rating).
    pub bond: u64,
    /// Tokens minted a day per home of the community, shared among the owners of verified
    /// devices by the grid value of what they delivered (the ledger's epoch emission).
    pub rewards_per_home_per_day: f64,
    /// Whether the chain in memory checks the keyed devices' signatures: each device signs its
    /// reading and the telemetry sample it commits to, and every block batch-verifies them, as
    /// on a node. Off by default: the run vouches for its simulated devices as for its members'
    /// unsigned transactions, since signing and verifying them measures ed25519, not the
    /// community (the outcome is the same but for the signatures themselves, so the final state
    /// root differs). A run on a node's chain (the demo) always signs.
    pub check_signatures: bool,
}

impl Default for Devices {
    fn default() -> Devices {
        Devices {
            keyed_share: 1.0,
            bond: 20,
            rewards_per_home_per_day: 0.1,
            check_signatures: false,
        }
    }
}

/// Keyed inverters that lie: each claims `factor` times what it produced (keeping its register
/// consistent with its claims, so only physics can catch it).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Spoofing {
    /// How many of the keyed inverters spoof.
    pub devices: usize,
    /// Claimed output over real output.
    pub factor: f64,
    /// The grid operator reports every reading held by a hard physics check as fraud (its
    /// device is slashed when the dispute window passes).
    pub report: bool,
}

impl Default for Spoofing {
    fn default() -> Spoofing {
        Spoofing {
            devices: 0,
            factor: 1.5,
            report: true,
        }
    }
}

/// The market on the ledger.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Market {
    /// `pay-as-clear`, `pay-as-bid`, `pay-as-offer`, `huang` or `community`.
    pub mechanism: String,
    /// Grid fee per kWh traded between streets, tokens (0: none).
    pub grid_fee_per_kwh: f64,
    /// The grid operator sends every trading home an operating envelope for each slot before its
    /// gate closure (from the feeder's power flow around the other homes' last exchange), and
    /// clearing trims the home's orders to it.
    pub envelopes: bool,
}

impl Default for Market {
    fn default() -> Market {
        Market {
            mechanism: "pay-as-clear".into(),
            grid_fee_per_kwh: 0.0,
            envelopes: false,
        }
    }
}

/// Which agent each home has.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Agents {
    /// Every home's strategy, unless `mix` is given: `utility-only`, `zero-intelligence`,
    /// `linear-ramp` or `optimising`.
    pub strategy: String,
    /// Shares of homes per strategy (summing to 1); homes are assigned in proportion, seeded.
    #[serde(default)]
    pub mix: BTreeMap<String, f64>,
    /// Optimising homes' import and export are allocated by a coordinator within their
    /// transformer's rating, and the feeder's linearised limits: on a balanced radial feeder its
    /// cables' ratings and the voltage band at its ends, on an unbalanced one the band at each
    /// home's phase.
    pub coordinated: bool,
    /// Slots between an optimising home's re-plans.
    pub replan_slots: usize,
    /// Optimising homes re-plan in turn, a `replan_slots`-th of them each slot (each home still
    /// every `replan_slots`), rather than all in the same slot. Homes do not re-plan in step in
    /// the field, and a coordinator then fits each turn around the plans of the others.
    pub staggered: bool,
    /// Beyond the slots until its next re-plan, an optimising home plans in steps of this
    /// many slots (1: every slot; 4: hourly). The slots that run before a re-plan are always
    /// planned one by one.
    pub step_slots: usize,
    /// At its turn an optimising home keeps its plan while the plan still holds (its battery,
    /// heating and car where the plan put them, its forecasts, prices and limits what the plan
    /// was made for), up to this many slots after it was made; 0: re-plan at every turn.
    pub keep_plan_slots: usize,
}

impl Default for Agents {
    fn default() -> Agents {
        Agents {
            strategy: "zero-intelligence".into(),
            mix: BTreeMap::new(),
            coordinated: false,
            replan_slots: 4,
            staggered: true,
            step_slots: 4,
            keep_plan_slots: 16,
        }
    }
}

/// The feeder: generated, or read from a MATPOWER case (homes spread over its load buses in turn).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FeederChoice {
    /// A MATPOWER file; empty: generate a radial feeder.
    pub matpower: String,
    /// MATPOWER: the bus numbers where homes sit, taken in turn (home 1 on the first, ...; a
    /// bus named twice gets twice the homes). Empty: every load (PQ) bus of the case in turn.
    pub home_buses: Vec<u32>,
    /// An OpenDSS script (its master file): the feeder solved unbalanced, phase by phase; its
    /// loads are replaced by the homes. Empty: a MATPOWER case or a generated feeder.
    pub dss: String,
    /// OpenDSS: the single-phase loads whose places the homes take, in turn (a load named
    /// twice gets twice the homes). Empty: every single-phase load of the feeder in turn.
    pub home_loads: Vec<String>,
    /// Generated: homes per distribution transformer (more homes: an MV feeder with several).
    pub homes_per_transformer: usize,
    pub transformer_kva: f64,
    /// Generated: low-voltage cables leaving each transformer, and homes per cable bus.
    pub streets: usize,
    pub homes_per_bus: usize,
    /// Generated: cable between buses along a street, m.
    pub bus_spacing_m: f64,
    pub vmin_pu: f64,
    pub vmax_pu: f64,
    /// Solve power flow every slot (off: only the transformer's energy balance).
    pub power_flow: bool,
}

impl Default for FeederChoice {
    fn default() -> FeederChoice {
        FeederChoice {
            matpower: String::new(),
            home_buses: Vec::new(),
            dss: String::new(),
            home_loads: Vec::new(),
            homes_per_transformer: 120,
            transformer_kva: 400.0,
            streets: 4,
            homes_per_bus: 2,
            bus_spacing_m: 30.0,
            vmin_pu: 0.94,
            vmax_pu: 1.06,
            power_flow: true,
        }
    }
}

/// The upstream grid fails: the community islands, its batteries and PV serve its critical loads
/// first, and the market clears under island rules.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Outage {
    /// `MM-DD HH:MM` (UTC) of the data year, on a slot boundary.
    pub start: String,
    pub hours: f64,
}

/// A strategy of a home.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    UtilityOnly,
    ZeroIntelligence,
    LinearRamp,
    Optimising,
}

impl Strategy {
    pub const ALL: [Strategy; 4] = [
        Strategy::UtilityOnly,
        Strategy::ZeroIntelligence,
        Strategy::LinearRamp,
        Strategy::Optimising,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Strategy::UtilityOnly => "utility-only",
            Strategy::ZeroIntelligence => "zero-intelligence",
            Strategy::LinearRamp => "linear-ramp",
            Strategy::Optimising => "optimising",
        }
    }

    pub fn parse(s: &str) -> Option<Strategy> {
        Strategy::ALL.into_iter().find(|k| k.name() == s)
    }
}

/// Cumulative days before each month of 2010.
const MONTH_START: [usize; 13] = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334, 365];

/// Day of the year (0-based) of `MM-DD`.
pub fn parse_day(s: &str) -> Option<usize> {
    let (m, d) = s.trim().split_once('-')?;
    let (m, d): (usize, usize) = (m.parse().ok()?, d.parse().ok()?);
    if !(1..=12).contains(&m) || d == 0 || d > MONTH_START[m] - MONTH_START[m - 1] {
        return None;
    }
    Some(MONTH_START[m - 1] + d - 1)
}

/// Slot of the year (0-based) of `MM-DD HH:MM`, on a 15-minute boundary.
pub fn parse_slot(s: &str) -> Option<usize> {
    let (day, time) = s.trim().split_once(' ')?;
    let (h, m) = time.trim().split_once(':')?;
    let (h, m): (usize, usize) = (h.parse().ok()?, m.parse().ok()?);
    if h > 23 || m > 59 || m % 15 != 0 {
        return None;
    }
    Some(parse_day(day)? * 96 + h * 4 + m / 15)
}

impl Scenario {
    /// Parses a scenario with `overrides` (`key.path=value`) applied first, and checks it.
    ///
    /// An error an override brings is blamed on that `--set`, not on the file, and an unknown
    /// key names the closest known one.
    pub fn from_toml(text: &str, overrides: &[String]) -> Result<Scenario, ScenarioError> {
        let mut value: toml::Value =
            toml::from_str(text).map_err(|e| ScenarioError::Toml(e.to_string()))?;
        let parse = |v: &toml::Value| -> Result<Scenario, String> {
            v.clone()
                .try_into()
                .map_err(|e: toml::de::Error| with_suggestion(&e.to_string()))
        };
        // The file alone first, then each override on top: the first that breaks is named.
        parse(&value).map_err(ScenarioError::Invalid)?;
        for o in overrides {
            set(&mut value, o)?;
            parse(&value).map_err(|e| ScenarioError::Override(o.clone(), e))?;
        }
        let scenario = parse(&value).map_err(ScenarioError::Invalid)?;
        scenario.check()?;
        Ok(scenario)
    }

    /// The market mechanism named by `market.mechanism`.
    pub fn mechanism(&self) -> Option<gridmesh_market::Mechanism> {
        gridmesh_market::Mechanism::ALL
            .into_iter()
            .find(|m| m.name() == self.market.mechanism)
    }

    /// The first day (0-based day of 2010).
    pub fn first_day(&self) -> usize {
        parse_day(&self.period.start).expect("checked")
    }

    /// Each home's strategy: `mix` shares rounded by largest remainder, assigned by a seeded
    /// shuffle, or everyone on `strategy`.
    pub fn strategies(&self) -> Vec<Strategy> {
        use rand::seq::SliceRandom;
        use rand::SeedableRng;
        let n = self.homes.count;
        if self.agents.mix.is_empty() {
            return vec![Strategy::parse(&self.agents.strategy).expect("checked"); n];
        }
        let shares: Vec<(Strategy, f64)> = self
            .agents
            .mix
            .iter()
            .map(|(k, v)| (Strategy::parse(k).expect("checked"), *v))
            .collect();
        let mut counts: Vec<usize> = shares
            .iter()
            .map(|(_, s)| (s * n as f64).floor() as usize)
            .collect();
        let mut rest: Vec<(usize, f64)> = shares
            .iter()
            .enumerate()
            .map(|(i, (_, s))| (i, s * n as f64 - (s * n as f64).floor()))
            .collect();
        rest.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        let mut missing = n - counts.iter().sum::<usize>();
        for (i, _) in rest {
            if missing == 0 {
                break;
            }
            counts[i] += 1;
            missing -= 1;
        }
        let mut out: Vec<Strategy> = shares
            .iter()
            .zip(&counts)
            .flat_map(|((k, _), c)| std::iter::repeat_n(*k, *c))
            .collect();
        let mut rng = rand::rngs::StdRng::seed_from_u64(self.seed ^ 0x5eed_a6e7);
        out.shuffle(&mut rng);
        out
    }

    /// Outages as (first slot of the year, slots).
    pub fn outage_slots(&self) -> Vec<(usize, usize)> {
        self.outages
            .iter()
            .map(|o| {
                (
                    parse_slot(&o.start).expect("checked"),
                    (o.hours * 4.0).round() as usize,
                )
            })
            .collect()
    }

    /// Checks every value; the message names the key and what it accepts.
    pub fn check(&self) -> Result<(), ScenarioError> {
        if self.name.trim().is_empty() || self.name.len() > 64 {
            return bad("name must be 1 to 64 characters");
        }
        let p = &self.period;
        let Some(first) = parse_day(&p.start) else {
            return bad(format!(
                "period.start {:?} is not a day of the year as MM-DD (e.g. \"05-01\")",
                p.start
            ));
        };
        if !(1..=MAX_DAYS).contains(&p.days) {
            return bad(format!(
                "period.days must be 1 to {MAX_DAYS}, not {}",
                p.days
            ));
        }
        if first < 7 {
            return bad(format!(
                "period.start {:?}: start on 01-08 or later (the agents' forecasts need a week of history)",
                p.start
            ));
        }
        if p.resolution_minutes != 15 {
            return bad(format!(
                "period.resolution_minutes must be 15 (the market's slot), not {}",
                p.resolution_minutes
            ));
        }
        let h = &self.homes;
        if !(1..=MAX_HOMES).contains(&h.count) {
            return bad(format!(
                "homes.count must be 1 to {MAX_HOMES}, not {}",
                h.count
            ));
        }
        range("homes.annual_kwh", h.annual_kwh, 100.0, 100_000.0)?;
        unit_share("homes.critical_share", h.critical_share)?;
        positive("homes.import_limit_kw", h.import_limit_kw, 1_000.0)?;
        positive("homes.export_limit_kw", h.export_limit_kw, 1_000.0)?;
        if !(1..=1_000_000_000).contains(&h.initial_tokens) {
            return bad("homes.initial_tokens must be 1 to 10^9");
        }
        unit_share("pv.share", self.pv.share)?;
        range("pv.kwp", self.pv.kwp, 0.1, 1_000.0)?;
        let b = &self.battery;
        unit_share("battery.share", b.share)?;
        range("battery.capacity_kwh", b.capacity_kwh, 0.1, 10_000.0)?;
        positive("battery.c_rate", b.c_rate, 10.0)?;
        positive("battery.max_power_kw", b.max_power_kw, 10_000.0)?;
        if !(b.efficiency > 0.5 && b.efficiency <= 1.0) {
            return bad(format!(
                "battery.efficiency must be in (0.5, 1], not {}",
                b.efficiency
            ));
        }
        if !(0.0..0.9).contains(&b.reserve_share) {
            return bad(format!(
                "battery.reserve_share must be in [0, 0.9), not {}",
                b.reserve_share
            ));
        }
        let e = &self.ev;
        unit_share("ev.share", e.share)?;
        if e.power_kw.is_empty()
            || e.power_kw
                .iter()
                .any(|p| !(*p > 0.0 && *p <= h.import_limit_kw))
        {
            return bad(format!(
                "ev.power_kw must list charger powers above 0 and at most homes.import_limit_kw ({} kW)",
                h.import_limit_kw
            ));
        }
        range("ev.energy_kwh", e.energy_kwh, 0.0, 200.0)?;
        range("ev.arrival_hour", e.arrival_hour, 12.0, 23.75)?;
        range("ev.departure_hour", e.departure_hour, 0.0, 11.75)?;
        let hp = &self.heat_pump;
        unit_share("heat_pump.share", hp.share)?;
        range("heat_pump.floor_m2", hp.floor_m2, 10.0, 10_000.0)?;
        range("heat_pump.comfort_c", hp.comfort_c, 5.0, 35.0)?;
        if hp.insulation.is_empty() {
            return bad(
                "heat_pump.insulation needs at least one class (passive, good, average, poor)",
            );
        }
        range_inclusive("heat_pump.gains_kw", hp.gains_kw, 0.0, 20.0)?;
        range_inclusive("heat_pump.tank_litres", hp.tank_litres, 0.0, 5_000.0)?;
        if hp.tank_litres > 0.0 {
            range_inclusive(
                "heat_pump.hot_water_kwh_per_day",
                hp.hot_water_kwh_per_day,
                0.0,
                100.0,
            )?;
            range("heat_pump.hot_water_c", hp.hot_water_c, 20.0, 95.0)?;
            positive("heat_pump.hot_water_power_kw", hp.hot_water_power_kw, 100.0)?;
        }
        positive("heat_pump.max_power_kw", hp.max_power_kw, 100.0)?;
        let t = &self.tariff;
        for (k, v) in [("night", t.night), ("day", t.day), ("peak", t.peak)] {
            if !(v.is_finite() && v >= t.feed_in && v <= 100.0) {
                return bad(format!(
                    "tariff.{k} must be at least tariff.feed_in ({}) and at most 100 tokens/kWh, not {v}",
                    t.feed_in
                ));
            }
        }
        if !(t.feed_in.is_finite() && t.feed_in >= 0.0) {
            return bad("tariff.feed_in must not be negative");
        }
        if self.mechanism().is_none() {
            return bad(format!(
                "market.mechanism {:?} is not one of pay-as-clear, pay-as-bid, pay-as-offer, huang, community",
                self.market.mechanism
            ));
        }
        if !(0.0..=10.0).contains(&self.market.grid_fee_per_kwh) {
            return bad("market.grid_fee_per_kwh must be 0 to 10 tokens/kWh");
        }
        let a = &self.agents;
        let known = || {
            Strategy::ALL
                .iter()
                .map(|s| s.name())
                .collect::<Vec<_>>()
                .join(", ")
        };
        if a.mix.is_empty() {
            if Strategy::parse(&a.strategy).is_none() {
                return bad(format!(
                    "agents.strategy {:?} is not one of {}",
                    a.strategy,
                    known()
                ));
            }
        } else {
            for (k, v) in &a.mix {
                if Strategy::parse(k).is_none() {
                    return bad(format!("agents.mix: {k:?} is not one of {}", known()));
                }
                unit_share(&format!("agents.mix.{k}"), *v)?;
            }
            let sum: f64 = a.mix.values().sum();
            if (sum - 1.0).abs() > 1e-6 {
                return bad(format!("agents.mix shares must sum to 1, not {sum}"));
            }
        }
        if !(1..=96).contains(&a.replan_slots) {
            return bad("agents.replan_slots must be 1 to 96");
        }
        if !(1..=8).contains(&a.step_slots) {
            return bad("agents.step_slots must be 1 (every slot) to 8 (two hours)");
        }
        if a.keep_plan_slots > 48 {
            return bad(
                "agents.keep_plan_slots must be 0 (re-plan at every turn) to 48 (half a day)",
            );
        }
        let f = &self.feeder;
        if !f.dss.is_empty() && !f.matpower.is_empty() {
            return bad("feeder.dss and feeder.matpower both name a feeder: keep one");
        }
        if !f.home_loads.is_empty() && f.dss.is_empty() {
            return bad(
                "feeder.home_loads places homes on an OpenDSS feeder's loads: set feeder.dss too",
            );
        }
        if !f.home_buses.is_empty() && !f.dss.is_empty() {
            return bad("feeder.home_buses places homes on a MATPOWER case's buses: an OpenDSS feeder takes feeder.home_loads");
        }
        if f.home_loads.len() > MAX_HOMES {
            return bad(format!(
                "feeder.home_loads may name at most {MAX_HOMES} loads"
            ));
        }
        if f.matpower.is_empty() && f.dss.is_empty() {
            if !(1..=2_000).contains(&f.homes_per_transformer) {
                return bad("feeder.homes_per_transformer must be 1 to 2000");
            }
            if !(1..=16).contains(&f.streets) || !(1..=16).contains(&f.homes_per_bus) {
                return bad("feeder.streets and feeder.homes_per_bus must be 1 to 16");
            }
            positive("feeder.transformer_kva", f.transformer_kva, 100_000.0)?;
            positive("feeder.bus_spacing_m", f.bus_spacing_m, 10_000.0)?;
            if !f.home_buses.is_empty() {
                return bad("feeder.home_buses places homes on a MATPOWER case's buses: set feeder.matpower too (a generated feeder places its homes along its streets)");
            }
        }
        if f.home_buses.len() > MAX_HOMES {
            return bad(format!(
                "feeder.home_buses may name at most {MAX_HOMES} buses"
            ));
        }
        if !(f.vmin_pu > 0.5 && f.vmin_pu < 1.0 && f.vmax_pu > 1.0 && f.vmax_pu < 1.5) {
            return bad("feeder.vmin_pu must be in (0.5, 1) and feeder.vmax_pu in (1, 1.5)");
        }
        unit_share("devices.keyed_share", self.devices.keyed_share)?;
        if !(10..=1_000_000).contains(&self.devices.bond) {
            return bad(format!(
                "devices.bond must be 10 (the market's minimum) to 1000000 tokens, not {}",
                self.devices.bond
            ));
        }
        if self.devices.bond >= self.homes.initial_tokens {
            return bad(format!(
                "devices.bond ({}) must be less than homes.initial_tokens ({})",
                self.devices.bond, self.homes.initial_tokens
            ));
        }
        range_inclusive(
            "devices.rewards_per_home_per_day",
            self.devices.rewards_per_home_per_day,
            0.0,
            100.0,
        )?;
        let sp = &self.spoofing;
        if !(sp.factor > 1.0 && sp.factor <= 100.0) {
            return bad(format!(
                "spoofing.factor must be above 1 and at most 100, not {}",
                sp.factor
            ));
        }
        if sp.devices > 0 && self.devices.keyed_share <= 0.0 {
            return bad("spoofing.devices needs keyed inverters: set devices.keyed_share above 0");
        }
        if self.outages.len() > MAX_OUTAGES {
            return bad(format!("at most {MAX_OUTAGES} outages"));
        }
        let (from, to) = (first * 96, (first + p.days) * 96);
        for (i, o) in self.outages.iter().enumerate() {
            let Some(s) = parse_slot(&o.start) else {
                return bad(format!(
                    "outages[{i}].start {:?} is not MM-DD HH:MM on a quarter hour (e.g. \"05-03 18:00\")",
                    o.start
                ));
            };
            if !(o.hours >= 0.25 && o.hours <= 72.0) {
                return bad(format!("outages[{i}].hours must be 0.25 to 72"));
            }
            let end = s + (o.hours * 4.0).round() as usize;
            // Periods may wrap past the end of the data year.
            let wrap = |x: usize| if x < from { x + 365 * 96 } else { x };
            if wrap(s) < from || wrap(end) > to {
                return bad(format!(
                    "outages[{i}] ({} for {} h) is not within the period",
                    o.start, o.hours
                ));
            }
        }
        Ok(())
    }
}

fn range_inclusive(key: &str, v: f64, min: f64, max: f64) -> Result<(), ScenarioError> {
    if (min..=max).contains(&v) {
        Ok(())
    } else {
        bad(format!("{key} must be between {min} and {max}, not {v}"))
    }
}

fn unit_share(key: &str, v: f64) -> Result<(), ScenarioError> {
    if (0.0..=1.0).contains(&v) {
        Ok(())
    } else {
        bad(format!("{key} must be between 0 and 1, not {v}"))
    }
}

fn positive(key: &str, v: f64, max: f64) -> Result<(), ScenarioError> {
    if v > 0.0 && v <= max {
        Ok(())
    } else {
        bad(format!("{key} must be above 0 and at most {max}, not {v}"))
    }
}

fn range(key: &str, r: [f64; 2], min: f64, max: f64) -> Result<(), ScenarioError> {
    if r[0].is_finite() && r[1].is_finite() && min <= r[0] && r[0] <= r[1] && r[1] <= max {
        Ok(())
    } else {
        bad(format!(
            "{key} must be [low, high] with {min} <= low <= high <= {max}, not [{}, {}]",
            r[0], r[1]
        ))
    }
}

/// Applies one `key.path=value` override. The value is read as TOML (`0.5`, `true`, `"x"`,
/// `[1, 2]`), or as a string when it is not valid TOML (`agents.strategy=optimising`).
pub fn set(root: &mut toml::Value, assignment: &str) -> Result<(), ScenarioError> {
    let err = |m: &str| ScenarioError::Override(assignment.to_string(), m.to_string());
    let (path, raw) = assignment
        .split_once('=')
        .ok_or_else(|| err("expected key=value"))?;
    let path: Vec<&str> = path.trim().split('.').collect();
    if path.iter().any(|p| p.is_empty()) {
        return Err(err("empty key"));
    }
    let value = parse_value(raw.trim());
    let mut at = root;
    for (i, key) in path.iter().enumerate() {
        let table = at
            .as_table_mut()
            .ok_or_else(|| err(&format!("{} is not a table", path[..i].join("."))))?;
        if i + 1 == path.len() {
            table.insert((*key).to_string(), value);
            return Ok(());
        }
        at = table
            .entry((*key).to_string())
            .or_insert_with(|| toml::Value::Table(Default::default()));
    }
    unreachable!("the path has at least one key")
}

fn parse_value(raw: &str) -> toml::Value {
    let doc = format!("v = {raw}");
    match toml::from_str::<toml::Table>(&doc) {
        Ok(mut t) => t.remove("v").expect("parsed"),
        Err(_) => toml::Value::String(raw.to_string()),
    }
}

/// A sweep: one key over a list of values (`battery.share=0,0.25,0.5`), or `key=a..b:step`.
pub fn sweep_values(spec: &str) -> Result<(String, Vec<String>), ScenarioError> {
    let err = |m: &str| ScenarioError::Override(spec.to_string(), m.to_string());
    let (key, values) = spec
        .split_once('=')
        .ok_or_else(|| err("expected key=v1,v2,... or key=from..to:step"))?;
    let values: Vec<String> = if let Some((range, step)) = values.split_once(':') {
        let (a, b) = range
            .split_once("..")
            .ok_or_else(|| err("expected from..to:step"))?;
        let num = |s: &str| s.trim().parse::<f64>().map_err(|_| err("not a number"));
        let (a, b, step) = (num(a)?, num(b)?, num(step)?);
        if step.is_nan() || step <= 0.0 || b < a {
            return Err(err("need from <= to and a positive step"));
        }
        let n = ((b - a) / step + 1e-9).floor() as usize + 1;
        if n > MAX_SWEEP_RUNS {
            return Err(err(&format!("at most {MAX_SWEEP_RUNS} runs")));
        }
        (0..n)
            .map(|i| {
                let v = a + step * i as f64;
                format!("{}", (v * 1e9).round() / 1e9)
            })
            .collect()
    } else {
        values.split(',').map(|v| v.trim().to_string()).collect()
    };
    if values.is_empty() || values.len() > MAX_SWEEP_RUNS || values.iter().any(|v| v.is_empty()) {
        return Err(err(&format!("give 1 to {MAX_SWEEP_RUNS} values")));
    }
    Ok((key.trim().to_string(), values))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_smallest_scenario_is_a_name() {
        let s = Scenario::from_toml("name = \"x\"", &[]).unwrap();
        assert_eq!(s.homes.count, 20);
        assert_eq!(s.first_day(), 120);
        assert_eq!(s.strategies().len(), 20);
    }

    #[test]
    fn mistakes_are_named() {
        let err = |text: &str| Scenario::from_toml(text, &[]).unwrap_err().to_string();
        assert!(err("name = \"x\"\n[homes]\ncuont = 3").contains("unknown field `cuont`"));
        assert!(err("name = \"x\"\n[period]\nstart = \"13-01\"").contains("period.start"));
        assert!(err("name = \"x\"\n[pv]\nshare = 1.5").contains("pv.share"));
        assert!(err("name = \"x\"\n[agents]\nstrategy = \"greedy\"").contains("greedy"));
        assert!(err("name = \"x\"\n[agents.mix]\noptimising = 0.5").contains("sum to 1"));
        assert!(err("name = \"x\"\n[battery]\ncapacity_kwh = [10, 5]").contains("low <= high"));
        assert!(
            err("name = \"x\"\n[[outages]]\nstart = \"06-01 10:00\"\nhours = 2")
                .contains("not within the period")
        );
        assert!(err("name = ").contains("not valid TOML"));
    }

    #[test]
    fn overrides_apply_before_checking() {
        let s = Scenario::from_toml(
            "name = \"x\"",
            &[
                "battery.share=0.9".into(),
                "agents.strategy=optimising".into(),
                "homes.count=7".into(),
            ],
        )
        .unwrap();
        assert_eq!(s.battery.share, 0.9);
        assert_eq!(s.agents.strategy, "optimising");
        assert_eq!(s.homes.count, 7);
        let e = Scenario::from_toml("name = \"x\"", &["homes.count=0".into()]).unwrap_err();
        assert!(e.to_string().contains("homes.count"), "{e}");
        let e = Scenario::from_toml("name = \"x\"", &["nothing".into()]).unwrap_err();
        assert!(e.to_string().contains("key=value"), "{e}");
        // A typo in an override is the override's, with the key it was meant to be (issue 24);
        // one in the file is the file's.
        let e = Scenario::from_toml("name = \"x\"", &["homes.cont=3".into()]).unwrap_err();
        assert!(
            matches!(&e, ScenarioError::Override(o, _) if o == "homes.cont=3"),
            "{e}"
        );
        assert!(e.to_string().contains("did you mean `count`?"), "{e}");
        let e = Scenario::from_toml(
            "name = \"x\"\n[homes]\ncuont = 3",
            &["homes.count=3".into()],
        )
        .unwrap_err();
        assert!(matches!(&e, ScenarioError::Invalid(_)), "{e}");
        assert!(e.to_string().contains("did you mean `count`?"), "{e}");
        let e = Scenario::from_toml("name = \"x\"", &["zzz.qqq=1".into()]).unwrap_err();
        assert!(!e.to_string().contains("did you mean"), "{e}");
    }

    #[test]
    fn mixes_are_shared_out_exactly() {
        let s = Scenario::from_toml(
            "name = \"x\"\n[homes]\ncount = 10\n[agents.mix]\noptimising = 0.35\nzero-intelligence = 0.65",
            &[],
        )
        .unwrap();
        let k = s.strategies();
        let opt = k.iter().filter(|s| **s == Strategy::Optimising).count();
        assert_eq!(opt, 4); // 3.5 and 6.5: the tie goes to the first strategy by name
        assert_eq!(k.len(), 10);
        assert_eq!(k, s.strategies(), "seeded");
    }

    #[test]
    fn sweeps_list_or_step() {
        let (k, v) = sweep_values("battery.share=0..1:0.25").unwrap();
        assert_eq!(k, "battery.share");
        assert_eq!(v, ["0", "0.25", "0.5", "0.75", "1"]);
        let (_, v) = sweep_values("agents.strategy=utility-only,optimising").unwrap();
        assert_eq!(v, ["utility-only", "optimising"]);
        assert!(sweep_values("x=0..1:0").is_err());
    }

    #[test]
    fn days_and_slots_of_the_year() {
        assert_eq!(parse_day("01-01"), Some(0));
        assert_eq!(parse_day("12-31"), Some(364));
        assert_eq!(parse_day("02-29"), None);
        assert_eq!(parse_slot("01-02 00:15"), Some(97));
        assert_eq!(parse_slot("01-02 00:10"), None);
    }
}
