//! The simulation loop: one ledger block per 15-minute slot, on a simulated clock.
//!
//! At the start of slot `u` (block time = the slot's start):
//! 1. the block's own rules run first: slot `u` is cleared (its gate closed five minutes ago),
//!    slot `u − 5` is settled (the correction window is an hour);
//! 2. its transactions: every home's meter reading of slot `u − 1` and its orders for slot
//!    `u + 1` (the grid operator's islanding events too, when an outage starts or ends);
//! 3. then the slot happens: cars plug in, optimising homes re-plan, devices run on the actual
//!    load and weather (or, in an outage, the islanded community shares its PV and batteries,
//!    critical loads first), and the feeder's power flow is solved for the homes' exchange.
//!
//! Bills: what the ledger moved (P2P payments, fees, compensations) plus the utility's bill lines
//! the ledger derives from settled trades and readings (import beyond what was bought at retail,
//! export beyond what was sold and purchases not used at feed-in). The baseline is the same
//! homes with the same devices under their rules and no market, billed by the utility alone.
//!
//! Cost per slot: O(homes) for devices, orders and readings, O(orders log orders) for clearing,
//! O(buses) for the radial sweep, plus the optimising homes' linear programs at each re-plan.

use std::collections::HashMap;

use gridmesh_agent::community::{Direction, SharedLimit};
use gridmesh_agent::replan::{self, Drift};
use gridmesh_agent::schedule::{Resolution, Schedule, DT_H};
use gridmesh_agent::strategy::{
    LinearRamp, MarketView, OrderIntent, Position, Side as AgentSide, Strategy as _,
    ZeroIntelligence,
};
use gridmesh_agent::study::{self, DeviceState, TouTariff, RAMP_LAST_UPDATE};
use gridmesh_ledger::{DeviceKind, DeviceSignatures, GridEventKind, Side, TxKind};
use gridmesh_types::units::{slot_start_ms, SLOT_MS};
use gridmesh_types::Address;

use crate::community::Community;
use crate::feeder::Feeder;
use crate::kpi::{Accumulator, Outcome, TokenFlows};
use crate::ledger::{GenesisSpec, SimChain, SimLedger};
use crate::scenario::{Scenario, Strategy};

/// Why a run stopped.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error(transparent)]
    Scenario(#[from] crate::scenario::ScenarioError),
    #[error("the feeder cannot be solved: {0}")]
    Feeder(String),
    #[error("the run's genesis is invalid: {0}")]
    Genesis(String),
    #[error("the chain failed: {0}")]
    Chain(String),
    #[error("scenario: {0}")]
    Devices(String),
}

/// First slot of 2010 on the ledger's slot numbering (slots since the Unix epoch).
pub const SLOT_2010: u64 = gridmesh_agent::data::YEAR_START_UNIX_S as u64 / 900;
/// Slots between a slot's end and its settlement (the correction window).
const SETTLE_LAG: usize = 5;
/// Reactive power drawn per kW of consumption (power factor about 0.98).
const Q_PER_P: f64 = 0.2;

/// How far an optimising home's devices and forecasts may be from its plan at its turn for it to
/// keep the plan instead of re-planning, for a plan at most `max_age_slots` old
/// (`agents.keep_plan_slots`).
fn keep_drift(max_age_slots: usize) -> Drift {
    Drift {
        soc_kwh: 0.1,
        temperature_k: 0.1,
        ev_kwh: 0.1,
        forecast_kw: 0.05,
        max_age_slots,
    }
}
/// Hours the planner looks ahead.
const HORIZON: usize = 96;

/// A home during the run.
struct HomeRun {
    address: Address,
    dev: DeviceState,
    /// The same devices under their rules, without a market: the baseline.
    base: DeviceState,
    plan: Option<(usize, Schedule)>,
    /// The problem its plan solved (before any allocation), while `agents.keep_plan_slots` lets
    /// a plan that still holds be kept.
    planned: Option<gridmesh_agent::schedule::HomeProblem>,
    /// Its plan's net load per slot, kW (what the coordinator shares the feeder around).
    plan_net_kw: Vec<f64>,
    /// The export cap per slot the coordinator allocated with the plan (its inverter holds it).
    export_cap_kw: Vec<f64>,
    values: (f64, f64),
    zi: ZeroIntelligence,
    /// Metered exchange of recent slots, mWh (import, export), by slot modulo the ring.
    readings: [(u64, u64); RING],
    /// What its devices moved in recent slots, mWh (PV output, battery discharge, battery
    /// charge), by slot modulo the ring.
    device_energy: [(u64, u64, u64); RING],
    /// Grid exchange of the last slot, kW.
    last_net_kw: f64,
}

const RING: usize = 8;

/// The time-of-use tariff of a scenario.
pub fn tariff(s: &Scenario) -> TouTariff {
    TouTariff {
        night_per_kwh: s.tariff.night,
        day_per_kwh: s.tariff.day,
        peak_per_kwh: s.tariff.peak,
        feed_in_per_kwh: s.tariff.feed_in,
    }
}

/// The same tariff as the ledger's periods (UTC slot of the day; local time is UTC + 1 h).
fn ledger_tariffs(t: &TouTariff) -> Vec<(u8, f64, f64)> {
    let f = t.feed_in_per_kwh;
    vec![
        (0, t.night_per_kwh, f),
        (20, t.day_per_kwh, f),
        (64, t.peak_per_kwh, f),
        (80, t.day_per_kwh, f),
        (92, t.night_per_kwh, f),
    ]
}

/// The utility's bill lines of a settled slot (tokens, bought and sold as delivered in mWh, per
/// home) and what its trades paid: the ledger's rule (import beyond what was bought at retail;
/// export beyond what was sold and purchases not used at feed-in; nothing while islanded).
fn settled_bills(
    ledger: &impl SimChain,
    index: &HashMap<Address, usize>,
    slot: u64,
    readings: &[(u64, u64)],
    tou: &TouTariff,
    settled: usize,
    island: bool,
) -> (f64, Vec<(f64, u64, u64)>) {
    let mut pos = vec![(0u64, 0u64); readings.len()];
    let mut paid = 0.0;
    for t in ledger.trades(slot) {
        let d = t
            .settlement
            .as_ref()
            .map_or(t.trade.energy_mwh, |x| x.delivered_mwh);
        paid += t.settlement.as_ref().map_or(0, |x| x.buyer_paid) as f64 / 1e6;
        if let Some(&b) = index.get(&t.buyer) {
            pos[b].0 += d;
        }
        if let Some(&a) = index.get(&t.seller) {
            pos[a].1 += d;
        }
    }
    let retail = tou.retail_at(settled);
    let lines = readings
        .iter()
        .zip(pos)
        .map(|(&(import, export), (bought, sold))| {
            let utility_import = import.saturating_sub(bought);
            let utility_export = export.saturating_sub(sold) + bought.saturating_sub(import);
            let bill = if island {
                0.0
            } else {
                utility_import as f64 / 1e6 * retail
                    - utility_export as f64 / 1e6 * tou.feed_in_per_kwh
            };
            (bill, bought, sold)
        })
        .collect();
    (paid, lines)
}

/// The chain's slot number of the run's slot `u`.
fn chain_slot(c: &Community, u: usize) -> u64 {
    SLOT_2010 + (c.window_start + u) as u64
}

/// The chain id of a run of `s`.
pub fn chain_id(s: &Scenario) -> String {
    format!("gridmesh-sim-{}", s.seed)
}

/// The genesis of a run of `s` with the community `c`: its members' and grid operator's
/// accounts, the market with the scenario's tariff and fees; its time two slots before the run's
/// first.
pub fn genesis(s: &Scenario, c: &Community) -> Result<gridmesh_ledger::Genesis, SimError> {
    let addresses: Vec<Address> = (0..c.homes.homes.len())
        .map(|i| crate::ledger::member(s.seed, i))
        .collect();
    GenesisSpec {
        chain_id: chain_id(s),
        timestamp_ms: slot_start_ms(chain_slot(c, c.warmup)) - 2 * SLOT_MS,
        members: &addresses,
        initial_tokens: s.homes.initial_tokens,
        operator: crate::ledger::grid_operator(s.seed),
        mechanism: &s.market.mechanism,
        tariffs: ledger_tariffs(&tariff(s)),
        grid_fee_per_kwh: s.market.grid_fee_per_kwh,
        max_import_kw: s.homes.import_limit_kw,
        epoch_emission_tokens: s.devices.rewards_per_home_per_day * s.homes.count as f64,
    }
    .genesis()
    .map_err(SimError::Genesis)
}

/// Runs a scenario on a chain in memory; `progress(done, total)` hears of every simulated slot.
pub fn run(
    s: &Scenario,
    c: &Community,
    feeder: &Feeder,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Outcome, SimError> {
    let devices = if s.devices.check_signatures {
        DeviceSignatures::Checked
    } else {
        DeviceSignatures::Vouched
    };
    let mut ledger = SimLedger::new(
        &genesis(s, c)?,
        crate::ledger::grid_operator(s.seed),
        devices,
    )
    .map_err(SimError::Genesis)?;
    run_on(s, c, feeder, &mut ledger, progress)
}

/// Runs a scenario on `ledger`, a chain started from [`genesis`] of `s` and `c` with nothing
/// committed since.
pub fn run_on(
    s: &Scenario,
    c: &Community,
    feeder: &Feeder,
    ledger: &mut impl SimChain,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Outcome, SimError> {
    let started = std::time::Instant::now();
    let n = c.homes.homes.len();
    let tou = tariff(s);
    let chain_slot = |u: usize| chain_slot(c, u);
    let operator = crate::ledger::grid_operator(s.seed);
    let addresses: Vec<Address> = (0..n).map(|i| crate::ledger::member(s.seed, i)).collect();
    let index: HashMap<Address, usize> =
        addresses.iter().enumerate().map(|(i, a)| (*a, i)).collect();
    let first = c.warmup;
    let end = c.warmup + c.slots;
    let mut inverters =
        crate::devices::Inverters::draw(s, c, &chain_id(s), ledger.device_signatures())
            .map_err(SimError::Devices)?;
    // Devices: every home's meter, and what it has (a keyed inverter with its own key and bond).
    let mut regs: Vec<(Address, TxKind)> = Vec::new();
    for (i, h) in c.homes.homes.iter().enumerate() {
        let mut reg = |kind| regs.push((addresses[i], kind));
        let plain = |kind, w: f64| TxKind::RegisterDevice {
            kind,
            capacity_w: w.ceil() as u32,
        };
        reg(plain(DeviceKind::Meter, s.homes.import_limit_kw * 1e3));
        if h.pv_kwp > 0.0 {
            reg(inverters
                .registration(i, &addresses[i], &feeder.home_area[i], h.pv_kwp)
                .unwrap_or_else(|| plain(DeviceKind::Pv, h.pv_kwp * 1e3)));
        }
        if let Some(b) = &h.battery {
            reg(inverters
                .battery_registration(i, &addresses[i], &feeder.home_area[i], b.power_kw)
                .unwrap_or_else(|| plain(DeviceKind::Battery, b.power_kw * 1e3)));
        }
        if !h.sessions.is_empty() {
            reg(plain(DeviceKind::EvCharger, h.ev_power_kw * 1e3));
        }
    }
    let regs = ledger.txs(regs);
    ledger
        .block(regs, slot_start_ms(chain_slot(first)) - SLOT_MS)
        .map_err(SimError::Chain)?;
    let initial: Vec<u128> = addresses.iter().map(|a| ledger.balance(a)).collect();
    // Producing capacity the ledger counts per home bounds its export reading, mWh per slot.
    let battery_mwh = |h: &gridmesh_agent::study::Home| {
        h.battery
            .as_ref()
            .map_or(0, |b| (b.power_kw * 1e3).ceil() as u64 * 250)
    };
    let mut max_export_mwh: Vec<u64> = c
        .homes
        .homes
        .iter()
        .map(|h| {
            let w = (h.pv_kwp * 1e3).ceil()
                + h.battery
                    .as_ref()
                    .map_or(0.0, |b| (b.power_kw * 1e3).ceil());
            (w as u64) * 250
        })
        .collect();
    // What a home's keyed devices can deliver bounds its asks (declared devices sell nothing).
    let mut max_ask_mwh: Vec<u64> = (0..n)
        .map(|i| inverters.keyed_capacity_mwh(i, &c.homes.homes[i]))
        .collect();
    let max_import_mwh = ((s.homes.import_limit_kw * 1e3).ceil() as u64) * 250;
    let mut homes: Vec<HomeRun> = c
        .homes
        .homes
        .iter()
        .enumerate()
        .map(|(i, h)| HomeRun {
            address: addresses[i],
            dev: DeviceState::new(h),
            base: DeviceState::new(h),
            plan: None,
            planned: None,
            plan_net_kw: Vec::new(),
            export_cap_kw: Vec::new(),
            values: (0.0, 0.0),
            zi: ZeroIntelligence::new(s.seed ^ ((i as u64) << 20)),
            readings: [(0, 0); RING],
            device_energy: [(0, 0, 0); RING],
            last_net_kw: h.load_kw[first - 1] - c.homes.pv_per_kwp[first - 1] * h.pv_kwp,
        })
        .collect();
    let mut flow = crate::flow::SlotFlow::new(feeder, (s.feeder.vmin_pu, s.feeder.vmax_pu))?;
    let outages: Vec<(usize, usize)> = s
        .outage_slots()
        .into_iter()
        .map(|(start, len)| {
            let u = (start + gridmesh_agent::data::SLOTS_2010 - c.window_start)
                % gridmesh_agent::data::SLOTS_2010;
            (u, u + len)
        })
        .collect();
    let islanded = |u: usize| outages.iter().any(|(a, b)| (*a..*b).contains(&u));
    // The feeder's cables and voltages, linearised, for the coordinator.
    let feeder_limits = if s.agents.coordinated {
        feeder.limits((s.feeder.vmin_pu, s.feeder.vmax_pu), Q_PER_P)
    } else {
        Vec::new()
    };
    // Per transformer: its rating and the feeder's limits its homes load, without those another
    // implies (once a run).
    let group_limits: Vec<Vec<GroupLimit>> = feeder
        .capacity_groups
        .iter()
        .map(|(members, kw)| {
            let limits: Vec<GroupLimit> = std::iter::once(GroupLimit::transformer(
                members,
                kw * crate::feeder::PLANNING_SHARE,
            ))
            .chain(
                feeder_limits
                    .iter()
                    .filter_map(|l| GroupLimit::of(l, members)),
            )
            .collect();
            let all = limits.len();
            let kept = without_implied(limits);
            tracing::debug!(
                homes = members.len(),
                limits = all,
                kept = kept.len(),
                "a transformer's limits for its coordinator"
            );
            kept
        })
        .collect();
    let optimising: Vec<usize> = (0..n)
        .filter(|&i| c.strategies[i] == Strategy::Optimising)
        .collect();
    // Every optimising home plans at the first slot and re-plans every `replan_slots`: in turn
    // (a `replan_slots`-th of them each slot, so that each slot's plans run beside its block)
    // or all at once.
    let replan_phase = replan_phases(optimising.len(), s.agents.replan_slots, s.agents.staggered);
    // Operating envelopes go to the homes that trade, around a forecast of the others (their
    // last slot's exchange).
    let traders: Vec<usize> = (0..n)
        .filter(|&i| c.strategies[i] != Strategy::UtilityOnly)
        .collect();
    let mut acc = Accumulator::new(s, c, feeder);
    let mut island_slots: Vec<bool> = vec![false; end + SETTLE_LAG + 1];
    // Where the homes are on the feeder, for its live drawing.
    let home_buses = feeder.home_buses();
    // The keyed devices' readings of the last slot, signed while its block ran.
    let mut signed_readings = None;
    // Transactions of the last block, to make room for the next one's at once.
    let mut calls_last = 0;
    let mut wall = WallTime::default();
    for u in first..end + SETTLE_LAG {
        let slot_started = std::time::Instant::now();
        let in_period = u < end;
        // 1-2. The block: readings of u − 1, orders for u + 1, islanding events, each
        // (sender, what) in the block's order, made transactions at once below.
        let mut calls: Vec<(Address, TxKind)> = Vec::with_capacity(calls_last);
        if in_period && islanded(u) != (u > first && islanded(u - 1)) {
            let at = slot_start_ms(chain_slot(u));
            let events: &[GridEventKind] = if islanded(u) {
                &[GridEventKind::Islanded]
            } else {
                &[GridEventKind::Resynchronising, GridEventKind::Reconnected]
            };
            for e in events {
                calls.push((
                    operator,
                    TxKind::GridEvent {
                        event: *e,
                        at_ms: at,
                    },
                ));
            }
        }
        if s.market.envelopes && u + 1 < end && !traders.is_empty() {
            let others = homes
                .iter()
                .enumerate()
                .filter(|(i, _)| c.strategies[*i] == Strategy::UtilityOnly)
                .map(|(i, h)| (i, h.last_net_kw));
            let sent = flow.envelopes(&traders, others).map(|env| {
                for (&i, (import_mwh, export_mwh)) in traders.iter().zip(env) {
                    calls.push((
                        operator,
                        TxKind::SetEnvelope {
                            slot: chain_slot(u + 1),
                            location: feeder.home_area[i].clone(),
                            import_mwh,
                            export_mwh,
                        },
                    ));
                }
            });
            acc.envelopes(u, sent);
        }
        for report in inverters.take_reports() {
            calls.push((operator, report));
        }
        // A slashed inverter no longer counts as producing capacity: the home's export reading
        // and asks are bounded by its battery alone (the panels still make what they make).
        for i in inverters.refresh(&*ledger, slot_start_ms(chain_slot(u))) {
            max_export_mwh[i] = battery_mwh(&c.homes.homes[i]);
            max_ask_mwh[i] = inverters.keyed_capacity_mwh(i, &c.homes.homes[i]);
        }
        let retail_next = tou.retail_at(u + 1);
        // The keyed devices' own readings of what the panels made and the battery moved in
        // u − 1, signed beside the last block.
        let mut device_readings = match signed_readings.take() {
            Some(signed) => inverters.submit(signed),
            None => vec![None; n],
        };
        for (i, h) in homes.iter_mut().enumerate() {
            if u > first && u - 1 < end {
                let (import_mwh, export_mwh) = h.readings[(u - 1) % RING];
                // What the ledger counts now (an inverter slashed since is not).
                let export_mwh = export_mwh.min(max_export_mwh[i]);
                calls.push((
                    h.address,
                    TxKind::SubmitReading {
                        slot: chain_slot(u - 1),
                        import_mwh,
                        export_mwh,
                    },
                ));
                if let Some(kind) = device_readings[i].take() {
                    calls.push((h.address, kind));
                }
            }
            if u + 1 >= end {
                continue;
            }
            let kind = c.strategies[i];
            let position = match (&h.plan, kind) {
                (Some((origin, p)), Strategy::Optimising) if u + 1 - origin < p.import_kw.len() => {
                    Position {
                        import_kwh: p.import_kw[u + 1 - origin] * DT_H,
                        export_kwh: p.export_kw[u + 1 - origin] * DT_H,
                    }
                }
                _ => Position {
                    import_kwh: h.last_net_kw.max(0.0) * DT_H,
                    export_kwh: (-h.last_net_kw).max(0.0) * DT_H,
                },
            };
            let view = MarketView {
                retail_per_kwh: retail_next,
                feed_in_per_kwh: tou.feed_in_per_kwh,
                elapsed: RAMP_LAST_UPDATE,
            };
            let intents: Vec<OrderIntent> = match kind {
                Strategy::UtilityOnly => Vec::new(),
                Strategy::ZeroIntelligence => h.zi.orders(&position, &view),
                Strategy::LinearRamp => LinearRamp.orders(&position, &view),
                Strategy::Optimising => {
                    gridmesh_agent::strategy::at_values(&position, h.values, &view)
                }
            };
            for o in intents {
                let Some((side, mut energy_mwh, price)) = o.to_units(6) else {
                    continue;
                };
                if side == AgentSide::Ask {
                    // An ask is backed by the home's keyed producing devices.
                    energy_mwh = energy_mwh.min(max_ask_mwh[i]);
                }
                if energy_mwh < gridmesh_ledger::config::DEFAULT_MIN_ORDER_MWH {
                    continue;
                }
                calls.push((
                    h.address,
                    TxKind::PlaceOrder {
                        slot: chain_slot(u + 1),
                        side: match side {
                            AgentSide::Bid => Side::Bid,
                            AgentSide::Ask => Side::Ask,
                        },
                        energy_mwh,
                        price_per_kwh: price,
                        location: feeder.home_area[i].clone(),
                    },
                ));
            }
        }
        calls_last = calls.len();
        let txs = ledger.txs(calls);
        // The block runs on its own thread while the slot's devices, agents and feeder run on
        // this one: nothing in the slot depends on the block, and the next block needs both.
        let settling = (u >= first + SETTLE_LAG).then(|| {
            let settled = u - SETTLE_LAG;
            let readings: Vec<(u64, u64)> =
                homes.iter().map(|h| h.readings[settled % RING]).collect();
            (settled, readings, island_slots[settled])
        });
        let ledger_ref = &mut *ledger;
        let index_ref = &index;
        let tou_ref = &tou;
        let keyed = inverters.reporting();
        let inverters_ref = &inverters;
        let live_feeder = ledger_ref.wants_feeder();
        let mut solved = None;
        let mut signed = None;
        let mut homes_live = Vec::new();
        let live_home =
            |i: usize, d: &crate::island::HomeStep, load: f64, pv: f64, dev: &DeviceState| {
                gridmesh_grid::snapshot::HomeState {
                    address: addresses[i],
                    load_kw: load,
                    pv_kw: pv - d.curtailed_kw,
                    battery_kw: d.battery_kw,
                    battery_soc_kwh: c.homes.homes[i].battery.as_ref().map(|_| dev.soc_kwh),
                    battery_capacity_kwh: c.homes.homes[i].battery.as_ref().map(|b| b.capacity_kwh),
                    ev_kw: d.ev_kw,
                    net_kw: d.net_kw,
                    bus: home_buses.get(i).copied(),
                    has_pv: c.homes.homes[i].pv_kwp > 0.0,
                }
            };
        // The ledger's block beside the slot's homes, agents and power flow, on the pool's
        // threads (rayon's, kept for the run: no thread started per slot).
        wall.transactions_s += slot_started.elapsed().as_secs_f64();
        let block = move || {
            let block_started = std::time::Instant::now();
            ledger_ref.block(txs, slot_start_ms(chain_slot(u)))?;
            let cleared = if in_period {
                ledger_ref.slot(chain_slot(u))
            } else {
                None
            };
            let bills = settling.as_ref().map(|(settled, readings, island)| {
                settled_bills(
                    ledger_ref,
                    index_ref,
                    chain_slot(*settled),
                    readings,
                    tou_ref,
                    *settled,
                    *island,
                )
            });
            let verdicts = settling.as_ref().map(|(settled, ..)| {
                let slot = chain_slot(*settled);
                (
                    slot,
                    crate::devices::Inverters::judged(&*ledger_ref, slot, &keyed),
                )
            });
            let block_s = block_started.elapsed().as_secs_f64();
            Ok::<_, String>((cleared, bills, verdicts, block_s))
        };
        let slot = || {
            let homes_started = std::time::Instant::now();
            let mut plans_s = 0.0;
            if in_period {
                // 3. The slot itself.
                island_slots[u] = islanded(u);
                let mut arrived = Vec::new();
                for (i, (h, home)) in homes.iter_mut().zip(&c.homes.homes).enumerate() {
                    let (came, unmet) = h.dev.plug(home, u);
                    h.base.plug(home, u);
                    acc.ev_unmet(i, unmet);
                    if came && c.strategies[i] == Strategy::Optimising {
                        arrived.push(i);
                    }
                }
                // The homes whose turn it is to re-plan, and those whose car just came.
                let mut due: Vec<usize> = optimising
                    .iter()
                    .zip(&replan_phase)
                    .filter(|(_, k)| replans_at(u - first, **k, s.agents.replan_slots))
                    .map(|(i, _)| *i)
                    .chain(arrived.iter().copied())
                    .collect();
                due.sort_unstable();
                due.dedup();
                let plans_started = std::time::Instant::now();
                if !due.is_empty() {
                    let mut problems: Vec<_> = due
                        .iter()
                        .map(|&i| {
                            let mut p =
                                study::problem(&c.homes, i, &homes[i].dev, u, HORIZON, &tou);
                            // Planned slot by slot until the next re-plan, in steps beyond.
                            p.resolution = Some(Resolution {
                                fine_slots: s.agents.replan_slots,
                                step_slots: s.agents.step_slots,
                            });
                            // The simplex starts from the home's last optimal basis.
                            p.warm = homes[i].plan.as_ref().and_then(|(origin, plan)| {
                                Some(gridmesh_agent::schedule::Warm {
                                    elapsed_slots: u - origin,
                                    basis: plan.basis.clone()?,
                                })
                            });
                            if !s.heat_pump.shifting {
                                // Heating on its thermostat: an inflexible load in the plan.
                                for h in std::mem::take(&mut p.thermal) {
                                    let (kw, _) = h.thermostat();
                                    p.load_kw.iter_mut().zip(kw).for_each(|(l, k)| *l += k);
                                }
                            }
                            p
                        })
                        .collect();
                    // A home whose plan still holds (its devices where the plan put them, its
                    // forecasts unchanged) keeps it; a car that just came is always planned for.
                    if s.agents.keep_plan_slots > 0 {
                        let drift = keep_drift(s.agents.keep_plan_slots);
                        let holds: Vec<bool> = due
                            .iter()
                            .zip(&problems)
                            .map(|(&i, p)| {
                                arrived.binary_search(&i).is_err()
                                    && match (&homes[i].plan, &homes[i].planned) {
                                        (Some((origin, plan)), Some(old)) => {
                                            replan::plan_holds(old, plan, u - origin, p, &drift)
                                        }
                                        _ => false,
                                    }
                            })
                            .collect();
                        acc.plans_kept(holds.iter().filter(|h| **h).count());
                        (due, problems) = due
                            .into_iter()
                            .zip(problems)
                            .zip(holds)
                            .filter_map(|(due, holds)| (!holds).then_some(due))
                            .unzip();
                    }
                    // What each plan is made for, to tell at the next turn whether it holds.
                    let mut asked: HashMap<usize, gridmesh_agent::schedule::HomeProblem> =
                        if s.agents.keep_plan_slots > 0 {
                            due.iter().copied().zip(problems.iter().cloned()).collect()
                        } else {
                            HashMap::new()
                        };
                    let planned = if s.agents.coordinated {
                        // Each transformer's homes share its rating and the feeder's limits
                        // behind it (cables, voltage), planned in turn by the coordinator; the
                        // transformers side by side on the machine's cores.
                        let mut problems: Vec<Option<_>> = problems.into_iter().map(Some).collect();
                        // What the homes not planning now put on the feeder, once for every
                        // transformer's and limit's sum.
                        let others = study::Others::new(
                            &c.homes,
                            0..n,
                            &optimising,
                            &due,
                            |j| {
                                let (origin, _) = homes[j].plan.as_ref()?;
                                Some((*origin, homes[j].plan_net_kw.as_slice()))
                            },
                            u,
                            HORIZON,
                        );
                        let jobs: Vec<_> = feeder
                            .capacity_groups
                            .iter()
                            .zip(&group_limits)
                            .filter_map(|((members, _), group_limits)| {
                                let in_group = |i: &usize| members.binary_search(i).is_ok();
                                let due_g: Vec<usize> =
                                    due.iter().copied().filter(in_group).collect();
                                if due_g.is_empty() {
                                    return None;
                                }
                                let problems_g: Vec<_> = due
                                    .iter()
                                    .zip(problems.iter_mut())
                                    .filter(|(i, _)| in_group(i))
                                    .map(|(_, p)| p.take().expect("one group per home"))
                                    .collect();
                                let limits: Vec<SharedLimit> = group_limits
                                    .iter()
                                    .map(|l| l.shared(&due_g, &others))
                                    .collect();
                                Some((due_g, problems_g, limits))
                            })
                            .collect();
                        let rotation = u / s.agents.replan_slots;
                        let allocated = study::on_cores(jobs, |(due_g, problems_g, limits)| {
                            let a = gridmesh_agent::community::allocate_within(
                                &problems_g,
                                &limits,
                                rotation,
                            );
                            (due_g, a)
                        });
                        let (mut chosen, mut schedules, mut values) =
                            (Vec::new(), Vec::new(), Vec::new());
                        for (due_g, a) in &allocated {
                            for (&i, cap) in due_g.iter().zip(&a.export_caps_kw) {
                                homes[i].export_cap_kw = cap.clone();
                            }
                        }
                        for (due_g, a) in allocated {
                            chosen.extend(due_g.into_iter().zip(a.problems));
                            schedules.extend(a.schedules);
                            values.extend(a.values);
                        }
                        study::with_values(chosen, Some((schedules, values)))
                    } else {
                        study::with_values(due.into_iter().zip(problems).collect(), None)
                    };
                    for (i, schedule, values, fell_back) in planned {
                        acc.planned(fell_back);
                        homes[i].plan_net_kw = study::net_kw(&schedule);
                        homes[i].plan = Some((u, schedule));
                        homes[i].planned = if fell_back { None } else { asked.remove(&i) };
                        homes[i].values = values;
                    }
                }
                plans_s = plans_started.elapsed().as_secs_f64();
                let pv_per_kwp = c.homes.pv_per_kwp[u];
                let retail = tou.retail_at(u);
                let mut nets = vec![0.0; n];
                // (PV output, battery kW, charging positive) per home.
                let mut device_kw = vec![(0.0, 0.0); n];
                if island_slots[u] {
                    let step = crate::island::dispatch(
                        &c.homes,
                        &mut homes.iter_mut().map(|h| &mut h.dev).collect::<Vec<_>>(),
                        u,
                        s.homes.critical_share,
                    );
                    let base = crate::island::dispatch(
                        &c.homes,
                        &mut homes.iter_mut().map(|h| &mut h.base).collect::<Vec<_>>(),
                        u,
                        s.homes.critical_share,
                    );
                    acc.island(u, &step, &base);
                    // Heat pumps are not critical: off while islanded, the homes cool.
                    for (i, (h, home)) in homes.iter_mut().zip(&c.homes.homes).enumerate() {
                        let outdoor = c.temperature_c[u];
                        h.dev.heat(home, None, u, outdoor, true);
                        h.base.heat(home, None, u, outdoor, true);
                        acc.heating(i, 0.0, &h.dev, home.heating.as_ref());
                    }
                    for (i, d) in step.homes.iter().enumerate() {
                        nets[i] = d.net_kw;
                        let load = c.homes.homes[i].load_kw[u] - d.shed_kw;
                        let pv = pv_per_kwp * c.homes.homes[i].pv_kwp;
                        device_kw[i] = (pv - d.curtailed_kw, d.battery_kw);
                        acc.home_slot(i, u, d, load, pv);
                        if live_feeder {
                            homes_live.push(live_home(i, d, load, pv, &homes[i].dev));
                        }
                    }
                } else {
                    for (i, (h, home)) in homes.iter_mut().zip(&c.homes.homes).enumerate() {
                        let load = home.load_kw[u];
                        let pv = pv_per_kwp * home.pv_kwp;
                        let planned = h.plan.as_ref().and_then(|(origin, p)| {
                            let k = u - origin;
                            (c.strategies[i] == Strategy::Optimising && k < p.import_kw.len())
                                .then_some((p, k))
                        });
                        let outdoor = c.temperature_c[u];
                        let cap = h
                            .plan
                            .as_ref()
                            .and_then(|(origin, _)| h.export_cap_kw.get(u - origin).copied());
                        let d = h.dev.step(home, planned, (load, pv), u, outdoor, cap);
                        let b = h.base.step(home, None, (load, pv), u, outdoor, None);
                        acc.baseline(i, b.net_kw, retail, tou.feed_in_per_kwh);
                        acc.heating(i, d.heat_kw, &h.dev, home.heating.as_ref());
                        nets[i] = d.net_kw;
                        // What the home used includes its heat pump.
                        let load = load + d.heat_kw;
                        let d = crate::island::HomeStep::from(d);
                        device_kw[i] = (pv - d.curtailed_kw, d.battery_kw);
                        acc.home_slot(i, u, &d, load, pv);
                        if live_feeder {
                            homes_live.push(live_home(i, &d, load, pv, &h.dev));
                        }
                    }
                }
                for (i, h) in homes.iter_mut().enumerate() {
                    let net_kw = nets[i];
                    let import =
                        ((net_kw.max(0.0) * DT_H * 1e6).round() as u64).min(max_import_mwh);
                    let export =
                        (((-net_kw).max(0.0) * DT_H * 1e6).round() as u64).min(max_export_mwh[i]);
                    h.readings[u % RING] = (import, export);
                    let mwh = |kw: f64| (kw.max(0.0) * DT_H * 1e6).round() as u64;
                    let (pv_kw, battery_kw) = device_kw[i];
                    h.device_energy[u % RING] = (mwh(pv_kw), mwh(-battery_kw), mwh(battery_kw));
                    h.last_net_kw = net_kw;
                }
                // The keyed devices' readings of this slot, for the next block, signed on the
                // machine's cores while this one runs.
                let unsigned = homes
                    .iter()
                    .enumerate()
                    .map(|(i, h)| {
                        let (made_mwh, out_mwh, in_mwh) = h.device_energy[u % RING];
                        inverters_ref.readings(i, chain_slot(u), made_mwh, (out_mwh, in_mwh))
                    })
                    .collect();
                signed = Some(inverters_ref.signed(unsigned));
                // The feeder.
                if s.feeder.power_flow {
                    let kvar: Vec<f64> = c
                        .homes
                        .homes
                        .iter()
                        .map(|home| home.load_kw[u].max(0.0) * Q_PER_P)
                        .collect();
                    match flow.solve(&nets, &kvar) {
                        Ok(pf) => {
                            acc.power_flow(u, &flow.figures(&pf));
                            if live_feeder {
                                solved = Some(pf);
                            }
                        }
                        Err(e) => acc.power_flow_failed(u, e.to_string()),
                    }
                } else {
                    acc.transformer_only(u, nets.iter().sum());
                }
                acc.slot_done(u, &nets);
            }
            (homes_started.elapsed().as_secs_f64(), plans_s)
        };
        let joined = std::time::Instant::now();
        let ((homes_s, plans_s), block) = rayon::join(slot, block);
        let (cleared, bills, verdicts, block_s) = block.map_err(SimError::Chain)?;
        wall.slots_s += joined.elapsed().as_secs_f64();
        wall.homes_s += homes_s;
        wall.plans_s += plans_s;
        wall.block_s += block_s;
        if in_period {
            acc.cleared(u, cleared);
            progress(u + 1 - first, c.slots);
        }
        signed_readings = signed;
        if let Some((slot, v)) = verdicts {
            inverters.record(slot, v);
        }
        if let (Some(pf), Some(row)) = (solved, acc.series_row(u)) {
            let mut snapshot = flow.snapshot(&pf, row.clone(), slot_start_ms(chain_slot(u)));
            snapshot.homes = homes_live;
            ledger.feeder(snapshot);
        }
        if let Some((paid, lines)) = bills {
            acc.p2p_paid(paid);
            for (i, (bill, bought, sold)) in lines.into_iter().enumerate() {
                acc.utility_bill(i, bill, bought, sold);
            }
        }
    }
    tracing::debug!(?wall, "where the run's time went");
    let run_slots = chain_slot(first)..=chain_slot(end - 1);
    let tokens: Vec<TokenFlows> = addresses
        .iter()
        .zip(&initial)
        .map(|(a, i0)| TokenFlows {
            earned: (ledger.balance(a) as f64 - *i0 as f64) / 1e6,
            rewards: crate::ledger::rewards(&*ledger, a, run_slots.clone()) as f64 / 1e6,
        })
        .collect();
    let cycles: Vec<f64> = homes
        .iter()
        .zip(&c.homes.homes)
        .map(|(h, home)| {
            home.battery
                .as_ref()
                .map_or(0.0, |b| h.dev.discharged_kwh / b.capacity_kwh)
        })
        .collect();
    let mut outcome = acc.finish(
        s,
        c,
        feeder,
        ledger.kpis(),
        tokens,
        cycles,
        started.elapsed().as_secs_f64(),
    );
    outcome.devices = inverters.finish(&*ledger);
    Ok(outcome)
}

/// Each of `homes` optimising homes' turn to re-plan, `0..replan_slots`: in turn by their order
/// (`staggered`), or all the same.
fn replan_phases(homes: usize, replan_slots: usize, staggered: bool) -> Vec<usize> {
    (0..homes)
        .map(|k| if staggered { k % replan_slots } else { 0 })
        .collect()
}

/// Whether a home of turn `phase` re-plans at the run's slot `run_slot` (0: its first): every
/// home plans at the first, then every `replan_slots` in its turn.
fn replans_at(run_slot: usize, phase: usize, replan_slots: usize) -> bool {
    run_slot == 0 || (run_slot + phase) % replan_slots == 0
}

/// Where a run's wall time went, seconds summed over its slots (logged at debug level): the
/// transactions built between slots, then each slot's homes (their plans among them) beside its
/// block, and the two together.
#[derive(Debug, Default)]
struct WallTime {
    transactions_s: f64,
    homes_s: f64,
    plans_s: f64,
    block_s: f64,
    slots_s: f64,
}

/// A limit as the coordinator of one transformer's homes shares it: `Σ weight · net flow that
/// way (kW) ≤ limit_kw` over the group's homes on it (home, weight; sorted by home), the limit
/// being the group's share of it (by weight) where it also carries homes behind other
/// transformers.
#[derive(Clone, Debug, PartialEq)]
struct GroupLimit {
    direction: Direction,
    homes: Vec<(usize, f64)>,
    limit_kw: f64,
}

impl GroupLimit {
    /// The transformer's rating (`limit_kw` at the planning share), its homes `members` alike.
    fn transformer(members: &[usize], limit_kw: f64) -> GroupLimit {
        GroupLimit {
            direction: Direction::Import,
            homes: members.iter().map(|&i| (i, 1.0)).collect(),
            limit_kw,
        }
    }

    /// Limit `l` as the homes `members` (sorted) of one transformer load it; `None` where they
    /// do not.
    fn of(l: &crate::feeder::FeederLimit, members: &[usize]) -> Option<GroupLimit> {
        let homes: Vec<(usize, f64)> = l
            .homes
            .iter()
            .copied()
            .filter(|(i, _)| members.binary_search(i).is_ok())
            .collect();
        if homes.is_empty() {
            return None;
        }
        let total: f64 = l.homes.iter().map(|(_, w)| w.abs()).sum();
        let ours: f64 = homes.iter().map(|(_, w)| w.abs()).sum();
        Some(GroupLimit {
            direction: l.direction,
            homes,
            limit_kw: l.limit_kw * ours / total,
        })
    }

    /// The factor `λ > 0` with `other`'s weights `λ ·` this limit's (to rounding), where both
    /// limit the same flow of the same homes; `None` where they are not so proportional.
    fn scale_to(&self, other: &GroupLimit) -> Option<f64> {
        let (&(first, w), &(other_first, v)) = (self.homes.first()?, other.homes.first()?);
        if self.direction != other.direction
            || self.homes.len() != other.homes.len()
            || first != other_first
            || w == 0.0
        {
            return None;
        }
        let lambda = v / w;
        let proportional = self
            .homes
            .iter()
            .zip(&other.homes)
            .all(|(&(i, w), &(j, v))| i == j && (v - lambda * w).abs() <= 1e-12 * v.abs());
        (lambda > 0.0 && lambda.is_finite() && proportional).then_some(lambda)
    }

    /// The limit weighted over the group's `due` homes (sorted), around what the homes not
    /// planning now put on it (`others`: their net import, or export).
    fn shared(&self, due: &[usize], others: &study::Others<'_>) -> SharedLimit {
        let weights = due
            .iter()
            .map(|i| {
                self.homes
                    .binary_search_by_key(i, |(j, _)| *j)
                    .map_or(0.0, |k| self.homes[k].1)
            })
            .collect();
        let mut others_kw = others.weighted(&self.homes);
        if self.direction == Direction::Export {
            others_kw.iter_mut().for_each(|o| *o = -*o);
        }
        SharedLimit {
            direction: self.direction,
            weights,
            others_kw,
            limit_kw: self.limit_kw,
        }
    }
}

/// `limits` without those another of them implies. Two limits of the same flow of the same
/// homes with proportional weights (`Σ λw·x ≤ L'` against `Σ w·x ≤ L`) bind together, the one
/// with the smaller `L'/λ` first, every slot and whatever the homes plan: only that one is
/// kept, where the first of them stood. A radial feeder's limits above a transformer (its
/// cables, the voltage at every far end of the other transformers' streets) load all its homes
/// alike, so most of a transformer's limits are its rating again at another scale: the
/// coordinator shares the same envelope with far fewer sums.
fn without_implied(limits: Vec<GroupLimit>) -> Vec<GroupLimit> {
    let mut kept: Vec<GroupLimit> = Vec::with_capacity(limits.len());
    for l in limits {
        match kept
            .iter_mut()
            .find_map(|k| k.scale_to(&l).map(|lambda| (k, lambda)))
        {
            Some((k, lambda)) => {
                if l.limit_kw / lambda < k.limit_kw {
                    *k = l;
                }
            }
            None => kept.push(l),
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::{replan_phases, replans_at, without_implied, Direction, GroupLimit};

    /// The slots (of a run of `slots`) at which each of `homes` re-plans.
    fn schedule(homes: usize, every: usize, staggered: bool, slots: usize) -> Vec<Vec<usize>> {
        replan_phases(homes, every, staggered)
            .into_iter()
            .map(|k| (0..slots).filter(|&u| replans_at(u, k, every)).collect())
            .collect()
    }

    #[test]
    fn homes_re_plan_in_turn_each_every_replan_slots() {
        let (homes, every, slots) = (10, 4, 41);
        let turns = schedule(homes, every, true, slots);
        for (k, at) in turns.iter().enumerate() {
            assert_eq!(at[0], 0, "home {k} plans at the first slot");
            assert!(at[1] >= 1 && at[1] <= every, "home {k}: {at:?}");
            assert!(
                at.windows(2).skip(1).all(|w| w[1] - w[0] == every),
                "home {k}: {at:?}"
            );
        }
        // After the first slot, a quarter of the homes re-plan each slot (10 over 4: 2 or 3).
        for u in 1..slots {
            let due = turns.iter().filter(|at| at.contains(&u)).count();
            assert!((2..=3).contains(&due), "slot {u}: {due} homes");
        }
    }

    #[test]
    fn homes_not_staggered_re_plan_together() {
        let turns = schedule(10, 4, false, 41);
        let together: Vec<usize> = (0..41).step_by(4).collect();
        assert!(turns.iter().all(|at| *at == together), "{turns:?}");
    }

    fn limit(direction: Direction, homes: &[(usize, f64)], limit_kw: f64) -> GroupLimit {
        GroupLimit {
            direction,
            homes: homes.to_vec(),
            limit_kw,
        }
    }

    #[test]
    fn a_limit_another_implies_is_dropped_and_the_tighter_kept_where_the_first_stood() {
        use Direction::{Export, Import};
        let all = [(1, 1.0), (4, 1.0), (7, 1.0)];
        // The rating, then the same homes at a third of the weight: 200 kW there is 600 kW at
        // the rating's scale, looser, so dropped; at twice the weight 250 kW is 125 kW, tighter,
        // so it takes the first one's place.
        let rating = limit(Import, &all, 360.0);
        let third: Vec<(usize, f64)> = all.iter().map(|&(i, w)| (i, w / 3.0)).collect();
        let twice: Vec<(usize, f64)> = all.iter().map(|&(i, w)| (i, 2.0 * w)).collect();
        // Kept: the other direction, another set of homes, weights not in proportion, a
        // negative scale.
        let export = limit(Export, &all, 100.0);
        let street = limit(Import, &[(1, 1.0), (4, 1.0)], 50.0);
        let uneven = limit(Import, &[(1, 1.0), (4, 2.0), (7, 3.0)], 500.0);
        let negative: Vec<(usize, f64)> = all.iter().map(|&(i, w)| (i, -w)).collect();
        let limits = vec![
            rating,
            export.clone(),
            limit(Import, &third, 200.0),
            street.clone(),
            uneven.clone(),
            limit(Import, &twice, 250.0),
            limit(Import, &negative, 10.0),
            // The uneven one again, looser at half the weight (600 kW at its scale).
            limit(Import, &[(1, 0.5), (4, 1.0), (7, 1.5)], 300.0 * 2.0),
        ];
        let kept = without_implied(limits);
        assert_eq!(
            kept,
            vec![
                limit(Import, &twice, 250.0),
                export,
                street,
                uneven,
                limit(Import, &negative, 10.0),
            ]
        );
        // Nothing to drop: the same limits back, in order.
        let distinct = vec![
            limit(Import, &all, 1.0),
            limit(Export, &all, 1.0),
            limit(Import, &[(1, 1.0)], 1.0),
        ];
        assert_eq!(without_implied(distinct.clone()), distinct);
    }
}
