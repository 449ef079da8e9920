//! Key performance indicators of a run, per home and for the community, and its time series.
//!
//! Definitions (energy in kWh over the period, power as 15-minute means):
//! - **self-sufficiency**: 1 − energy imported / energy used (load served, heat pump and EV);
//!   for the community the import is the feeder's exchange with the grid (homes netted).
//! - **self-consumption**: 1 − energy exported / PV energy produced (after curtailment).
//! - **bill**: the utility's bill lines plus what the home paid (minus received) on the ledger
//!   for energy (rewards are not energy: they are counted apart);
//!   **savings**: the baseline bill (same homes and devices, rules only, no market) minus the bill.
//! - **tokens earned**: a member's balance change on the ledger over the run (market proceeds
//!   minus payments, fees and compensations, plus rewards).
//! - **rewards**: tokens minted to the member for its verified devices' deliveries (epochs that
//!   closed within the run).
//! - **Gini of savings**: mean absolute difference of the homes' savings over twice their mean
//!   (`None` when the mean saving is not positive).
//! - **market welfare efficiency**: gains from trade achieved / the most these orders could have
//!   achieved (`gridmesh-market`'s welfare), over all slots.
//! - **violations**: bus-slots outside the voltage band, branch-slots over their rating.
//! - **energy not served**, **critical load served**: in outages (islanded slots) only.

use gridmesh_agent::schedule::DT_H;
use gridmesh_ledger::market::SlotRecord;
use serde::Serialize;

pub use gridmesh_grid::snapshot::SlotRow;
pub use gridmesh_types::units::utc;

use crate::community::Community;
use crate::engine::SLOT_2010;
use crate::feeder::Feeder;
use crate::island::{HomeStep, IslandStep};
use crate::scenario::{Scenario, Strategy};

/// One home over the run.
#[derive(Clone, Debug, Serialize)]
pub struct HomeKpis {
    pub home: usize,
    pub area: String,
    pub strategy: Strategy,
    pub pv_kwp: f64,
    pub battery_kwh: f64,
    pub ev: bool,
    pub heat_pump: bool,
    pub used_kwh: f64,
    pub pv_kwh: f64,
    pub import_kwh: f64,
    pub export_kwh: f64,
    pub self_sufficiency: f64,
    pub self_consumption: Option<f64>,
    pub bill: f64,
    pub baseline_bill: f64,
    pub savings: f64,
    pub tokens_earned: f64,
    pub rewards: f64,
    pub p2p_bought_kwh: f64,
    pub p2p_sold_kwh: f64,
    pub peak_import_kw: f64,
    pub peak_export_kw: f64,
    pub energy_not_served_kwh: f64,
    pub ev_unmet_kwh: f64,
    pub battery_cycles: f64,
}

/// The community over the run.
#[derive(Clone, Debug, Serialize)]
pub struct CommunityKpis {
    pub homes: usize,
    pub days: usize,
    pub used_kwh: f64,
    pub pv_kwh: f64,
    pub import_kwh: f64,
    pub export_kwh: f64,
    pub self_sufficiency: f64,
    pub self_consumption: Option<f64>,
    pub mean_bill: f64,
    pub mean_baseline_bill: f64,
    pub mean_savings: f64,
    /// Savings as a share of the baseline bill.
    pub savings_share: Option<f64>,
    pub gini_of_savings: Option<f64>,
    pub peak_import_kw: f64,
    /// When the community imported most (the slot's start, UTC; the first of equals).
    pub peak_import_at_utc: Option<String>,
    pub peak_export_kw: f64,
    pub transformer_rating_kw: f64,
    /// The most loaded distribution transformer's highest loading, % of its rating.
    pub peak_transformer_loading_percent: f64,
    pub slots_over_transformer_rating: usize,
    pub losses_kwh: f64,
    pub losses_share_of_import: Option<f64>,
    pub min_voltage_pu: Option<f64>,
    pub max_voltage_pu: Option<f64>,
    /// Bus-slots outside the voltage band (a bus's phases each count, unbalanced), and
    /// branch-slots over their rating.
    pub voltage_violations: usize,
    pub thermal_violations: usize,
    /// Unbalanced feeders: bus-slots whose voltage unbalance was over 2 % (EN 50160), and the
    /// largest unbalance seen, %.
    pub unbalance_violations: usize,
    pub max_unbalance_pct: Option<f64>,
    pub power_flow_failures: usize,
    pub outage_slots: usize,
    pub energy_not_served_kwh: f64,
    pub baseline_energy_not_served_kwh: f64,
    pub critical_load_served: Option<f64>,
    pub p2p_kwh: f64,
    pub p2p_value_tokens: f64,
    pub mean_p2p_price: Option<f64>,
    pub tokens_earned: f64,
    pub tokens_paid: f64,
    /// Tokens minted as rewards.
    pub rewards_minted: f64,
    pub market_welfare_efficiency: Option<f64>,
    /// With `market.envelopes`: slots the grid operator sent envelopes for, slots it could not
    /// (the forecast already violated a limit), and connection points whose orders clearing
    /// trimmed to their envelope, summed over slots.
    pub envelope_slots: usize,
    pub envelope_failures: usize,
    pub envelope_trims: u64,
    pub ev_unmet_kwh: f64,
    pub plans: usize,
    pub plan_fallbacks: usize,
    /// Turns at which an optimising home kept its plan, which still held (`agents.keep_plan_slots`).
    pub plans_kept: usize,
    /// Heat pumps: the energy they drew, the coldest indoor temperature of any heat-pump home
    /// and the home-slots below the comfort band or with the hot water below its band (0
    /// wherever the heat pumps can hold them).
    pub heat_pump_kwh: f64,
    pub min_indoor_c: Option<f64>,
    pub slots_below_comfort: usize,
}

/// A member's balance change over a run, and the part of it minted as rewards, tokens.
#[derive(Clone, Copy, Debug, Default)]
pub struct TokenFlows {
    pub earned: f64,
    pub rewards: f64,
}

/// The ledger at the end of the run.
#[derive(Clone, Debug, Serialize)]
pub struct LedgerKpis {
    pub chain_id: String,
    pub height: u64,
    pub state_root: String,
    pub transactions: u64,
    /// Key/value entries of the final state (bounded by the market's history: a longer run does
    /// not grow it).
    pub state_entries: usize,
    /// Entries of the largest commitment bucket (what one block may rehash).
    pub largest_bucket: usize,
    /// Transactions the state machine refused, by reason (numbers masked as `#`).
    pub rejected: std::collections::BTreeMap<String, u64>,
}

impl LedgerKpis {
    /// The KPIs of a chain whose head is `head` with `state`.
    pub fn of(
        chain_id: &str,
        head: &gridmesh_ledger::BlockHeader,
        state: &gridmesh_ledger::State,
        transactions: u64,
        rejected: &std::collections::BTreeMap<String, u64>,
    ) -> LedgerKpis {
        let sizes = || state.kv().buckets().map(|(_, b)| b.len());
        LedgerKpis {
            chain_id: chain_id.to_string(),
            height: head.height,
            state_root: head.state_root.to_string(),
            transactions,
            state_entries: sizes().sum(),
            largest_bucket: sizes().max().unwrap_or(0),
            rejected: rejected.clone(),
        }
    }
}

/// Everything a run produced.
#[derive(Clone, Debug, Serialize)]
pub struct Outcome {
    pub scenario: String,
    pub seed: u64,
    pub community: CommunityKpis,
    pub ledger: LedgerKpis,
    /// Keyed inverters, proof of generation and spoofing.
    pub devices: crate::devices::DeviceKpis,
    pub run_seconds: f64,
    pub seconds_per_simulated_day: f64,
    pub homes: Vec<HomeKpis>,
    #[serde(skip)]
    pub series: Vec<SlotRow>,
}

#[derive(Clone, Default)]
struct HomeAcc {
    used: f64,
    pv: f64,
    import: f64,
    export: f64,
    utility_bill: f64,
    baseline_bill: f64,
    bought_mwh: u64,
    sold_mwh: u64,
    peak_import: f64,
    peak_export: f64,
    shed: f64,
    ev_unmet: f64,
}

/// What one slot's power flow gave, balanced or unbalanced.
#[derive(Clone, Debug, PartialEq)]
pub struct FlowFigures {
    pub losses_kw: f64,
    /// The lowest and highest voltage of any bus (unbalanced: of any phase) but the source's.
    pub min_vm_pu: f64,
    pub max_vm_pu: f64,
    pub voltage_violations: usize,
    pub thermal_violations: usize,
    pub unbalance_violations: usize,
    pub max_unbalance_pct: Option<f64>,
    /// The most loaded distribution transformer, % of its rating.
    pub transformer_loading_percent: f64,
}

/// Collects a run's KPIs as it goes.
pub struct Accumulator {
    homes: Vec<HomeAcc>,
    first: usize,
    window_start: usize,
    series: Vec<SlotRow>,
    transformer_kw: f64,
    welfare: u128,
    optimal_welfare: u128,
    p2p_mwh: u64,
    p2p_value: f64,
    losses_kwh: f64,
    min_vm: Option<f64>,
    max_vm: Option<f64>,
    voltage_violations: usize,
    thermal_violations: usize,
    unbalance_violations: usize,
    max_unbalance: Option<f64>,
    pf_failures: usize,
    over_rating: usize,
    peak_loading: f64,
    critical_kwh: f64,
    critical_shed_kwh: f64,
    baseline_shed_kwh: f64,
    outage_slots: usize,
    plans: usize,
    fallbacks: usize,
    plans_kept: usize,
    envelope_slots: usize,
    envelope_failures: usize,
    envelope_trims: u64,
    heat_kwh: f64,
    min_indoor_c: Option<f64>,
    below_comfort: usize,
}

impl Accumulator {
    pub fn new(s: &Scenario, c: &Community, feeder: &Feeder) -> Accumulator {
        Accumulator {
            homes: vec![HomeAcc::default(); s.homes.count],
            first: c.warmup,
            window_start: c.window_start,
            series: Vec::with_capacity(c.slots),
            transformer_kw: feeder.transformer_kw,
            welfare: 0,
            optimal_welfare: 0,
            p2p_mwh: 0,
            p2p_value: 0.0,
            losses_kwh: 0.0,
            min_vm: None,
            max_vm: None,
            voltage_violations: 0,
            thermal_violations: 0,
            unbalance_violations: 0,
            max_unbalance: None,
            pf_failures: 0,
            over_rating: 0,
            peak_loading: 0.0,
            critical_kwh: 0.0,
            critical_shed_kwh: 0.0,
            baseline_shed_kwh: 0.0,
            outage_slots: 0,
            plans: 0,
            fallbacks: 0,
            plans_kept: 0,
            envelope_slots: 0,
            envelope_failures: 0,
            envelope_trims: 0,
            heat_kwh: 0.0,
            min_indoor_c: None,
            below_comfort: 0,
        }
    }

    /// A heat-pump home's slot: its heat pumps' power and the temperatures they left (the
    /// house, and the hot water where it has a tank).
    pub fn heating(
        &mut self,
        _home: usize,
        heat_kw: f64,
        dev: &gridmesh_agent::study::DeviceState,
        heating: Option<&gridmesh_agent::thermal::Heating>,
    ) {
        let Some(h) = heating else { return };
        let indoor = dev.indoor_c;
        self.heat_kwh += heat_kw * DT_H;
        self.min_indoor_c = Some(self.min_indoor_c.map_or(indoor, |m| m.min(indoor)));
        // A hundredth of a kelvin is the thermostat's own accuracy.
        let cold_water = h
            .hot_water
            .as_ref()
            .is_some_and(|w| dev.tank_c < w.band_c.0 - 0.01);
        self.below_comfort += usize::from(indoor < h.band_c.0 - 0.01 || cold_water);
    }

    /// Slot `u`'s row of the time series, once something was recorded for it.
    pub fn series_row(&self, u: usize) -> Option<&SlotRow> {
        self.series.get(u.checked_sub(self.first)?)
    }

    fn row(&mut self, u: usize) -> &mut SlotRow {
        let k = u - self.first;
        while self.series.len() <= k {
            let slot = SLOT_2010 + (self.window_start + self.first + self.series.len()) as u64;
            self.series.push(SlotRow {
                time_utc: utc(slot * 900),
                pcc_kw: 0.0,
                load_kw: 0.0,
                pv_kw: 0.0,
                battery_kw: 0.0,
                ev_kw: 0.0,
                p2p_kwh: 0.0,
                clearing_price: None,
                min_vm_pu: None,
                max_vm_pu: None,
                max_unbalance_pct: None,
                losses_kw: 0.0,
                transformer_loading_percent: 0.0,
                islanded: false,
                not_served_kw: 0.0,
            });
        }
        &mut self.series[k]
    }

    /// The ledger cleared slot `u`.
    pub fn cleared(&mut self, u: usize, record: Option<SlotRecord>) {
        let Some(r) = record else { return };
        self.welfare += r.welfare;
        self.optimal_welfare += r.optimal_welfare;
        self.p2p_mwh += r.volume_mwh;
        self.envelope_trims += u64::from(r.envelopes);
        let row = self.row(u);
        row.p2p_kwh = r.volume_mwh as f64 / 1e6;
        row.clearing_price = r.clearing_price_per_kwh.map(|p| p as f64 / 1e6);
        row.islanded = r.island;
    }

    /// Home `i`'s utility bill line of a settled slot, and its delivered trades (mWh).
    pub fn utility_bill(&mut self, i: usize, bill: f64, bought_mwh: u64, sold_mwh: u64) {
        let h = &mut self.homes[i];
        h.utility_bill += bill;
        h.bought_mwh += bought_mwh;
        h.sold_mwh += sold_mwh;
    }

    pub fn ev_unmet(&mut self, i: usize, kwh: f64) {
        self.homes[i].ev_unmet += kwh;
    }

    /// The grid operator sent envelopes for a slot (`Ok`) or could not (`Err`: why).
    pub fn envelopes(&mut self, u: usize, sent: Result<(), String>) {
        match sent {
            Ok(()) => self.envelope_slots += 1,
            Err(e) => {
                if self.envelope_failures == 0 {
                    tracing::warn!(slot = u, error = %e, "no envelopes for a slot");
                }
                self.envelope_failures += 1;
            }
        }
    }

    pub fn planned(&mut self, fell_back: bool) {
        self.plans += 1;
        self.fallbacks += usize::from(fell_back);
    }

    /// Turns at which `n` homes kept a plan that still held.
    pub fn plans_kept(&mut self, n: usize) {
        self.plans_kept += n;
    }

    /// The baseline home's exchange in a grid-connected slot.
    pub fn baseline(&mut self, i: usize, net_kw: f64, retail: f64, feed_in: f64) {
        self.homes[i].baseline_bill +=
            net_kw.max(0.0) * DT_H * retail - (-net_kw).max(0.0) * DT_H * feed_in;
    }

    /// An islanded slot: the run's and the baseline's.
    pub fn island(&mut self, u: usize, step: &IslandStep, base: &IslandStep) {
        self.outage_slots += 1;
        self.critical_kwh += step.critical_kwh;
        self.critical_shed_kwh += step.critical_shed_kwh;
        self.baseline_shed_kwh += base.shed_kwh;
        let row = self.row(u);
        row.islanded = true;
        row.not_served_kw = step.shed_kwh / DT_H;
    }

    /// Home `i` in slot `u`: its devices, the load it served and its PV's production.
    pub fn home_slot(&mut self, i: usize, u: usize, d: &HomeStep, served_load_kw: f64, pv_kw: f64) {
        let h = &mut self.homes[i];
        h.used += (served_load_kw + d.ev_kw) * DT_H;
        h.pv += (pv_kw - d.curtailed_kw) * DT_H;
        h.import += d.net_kw.max(0.0) * DT_H;
        h.export += (-d.net_kw).max(0.0) * DT_H;
        h.peak_import = h.peak_import.max(d.net_kw);
        h.peak_export = h.peak_export.max(-d.net_kw);
        h.shed += d.shed_kw * DT_H;
        let row = self.row(u);
        row.load_kw += served_load_kw;
        row.pv_kw += pv_kw - d.curtailed_kw;
        row.battery_kw += d.battery_kw;
        row.ev_kw += d.ev_kw;
    }

    /// Slot `u`'s power flow, as [`crate::flow`] read it.
    pub fn power_flow(&mut self, u: usize, f: &FlowFigures) {
        self.losses_kwh += f.losses_kw * DT_H;
        self.voltage_violations += f.voltage_violations;
        self.thermal_violations += f.thermal_violations;
        self.unbalance_violations += f.unbalance_violations;
        self.over_rating += usize::from(f.transformer_loading_percent > 100.0);
        self.peak_loading = self.peak_loading.max(f.transformer_loading_percent);
        self.min_vm = Some(self.min_vm.map_or(f.min_vm_pu, |m| m.min(f.min_vm_pu)));
        self.max_vm = Some(self.max_vm.map_or(f.max_vm_pu, |m| m.max(f.max_vm_pu)));
        if let Some(x) = f.max_unbalance_pct {
            self.max_unbalance = Some(self.max_unbalance.map_or(x, |m| m.max(x)));
        }
        let row = self.row(u);
        row.losses_kw = f.losses_kw;
        row.min_vm_pu = Some(f.min_vm_pu);
        row.max_vm_pu = Some(f.max_vm_pu);
        row.max_unbalance_pct = f.max_unbalance_pct;
        row.transformer_loading_percent = f.transformer_loading_percent;
    }

    pub fn power_flow_failed(&mut self, u: usize, why: String) {
        self.pf_failures += 1;
        tracing::warn!(slot = u, %why, "power flow failed");
    }

    /// Without power flow: the transformers' loading from the homes' net exchange alone.
    pub fn transformer_only(&mut self, u: usize, pcc_kw: f64) {
        let loading = pcc_kw.abs() / self.transformer_kw * 100.0;
        self.over_rating += usize::from(loading > 100.0);
        self.peak_loading = self.peak_loading.max(loading);
        self.row(u).transformer_loading_percent = loading;
    }

    pub fn slot_done(&mut self, u: usize, nets: &[f64]) {
        let row = self.row(u);
        row.pcc_kw = nets.iter().sum::<f64>() + row.losses_kw;
    }

    /// Value of P2P trades as settled (what buyers paid), tokens.
    pub fn p2p_paid(&mut self, tokens: f64) {
        self.p2p_value += tokens;
    }

    /// The run's KPIs: `tokens` and `cycles` per home (ledger balance change, battery cycles).
    #[allow(clippy::too_many_arguments)]
    pub fn finish(
        self,
        s: &Scenario,
        c: &Community,
        feeder: &Feeder,
        ledger: LedgerKpis,
        tokens: Vec<TokenFlows>,
        cycles: Vec<f64>,
        seconds: f64,
    ) -> Outcome {
        let n = self.homes.len();
        let homes: Vec<HomeKpis> = self
            .homes
            .iter()
            .enumerate()
            .map(|(i, h)| {
                let home = &c.homes.homes[i];
                let bill = h.utility_bill - (tokens[i].earned - tokens[i].rewards);
                HomeKpis {
                    home: i + 1,
                    area: feeder.home_area[i].clone(),
                    strategy: c.strategies[i],
                    pv_kwp: home.pv_kwp,
                    battery_kwh: home.battery.as_ref().map_or(0.0, |b| b.capacity_kwh),
                    ev: !home.sessions.is_empty(),
                    heat_pump: c.heat_pump_kw[i] > 0.0,
                    used_kwh: h.used,
                    pv_kwh: h.pv,
                    import_kwh: h.import,
                    export_kwh: h.export,
                    self_sufficiency: 1.0 - h.import / h.used.max(1e-9),
                    self_consumption: (h.pv > 1e-9).then(|| 1.0 - h.export / h.pv),
                    bill,
                    baseline_bill: h.baseline_bill,
                    savings: h.baseline_bill - bill,
                    tokens_earned: tokens[i].earned,
                    rewards: tokens[i].rewards,
                    p2p_bought_kwh: h.bought_mwh as f64 / 1e6,
                    p2p_sold_kwh: h.sold_mwh as f64 / 1e6,
                    peak_import_kw: h.peak_import,
                    peak_export_kw: h.peak_export,
                    energy_not_served_kwh: h.shed,
                    ev_unmet_kwh: h.ev_unmet,
                    battery_cycles: cycles[i],
                }
            })
            .collect();
        let sum = |f: &dyn Fn(&HomeKpis) -> f64| homes.iter().map(f).sum::<f64>();
        let used = sum(&|h| h.used_kwh);
        let pv = sum(&|h| h.pv_kwh);
        let import: f64 = self
            .series
            .iter()
            .map(|r| (r.pcc_kw - r.losses_kw).max(0.0) * DT_H)
            .sum();
        let export: f64 = self
            .series
            .iter()
            .map(|r| (-(r.pcc_kw - r.losses_kw)).max(0.0) * DT_H)
            .sum();
        let savings: Vec<f64> = homes.iter().map(|h| h.savings).collect();
        let mean = |v: f64| v / n as f64;
        let mean_savings = mean(savings.iter().sum());
        let baseline = mean(sum(&|h| h.baseline_bill));
        let p2p_kwh = self.p2p_mwh as f64 / 1e6;
        let earned = sum(&|h| h.tokens_earned.max(0.0));
        let community = CommunityKpis {
            homes: n,
            days: s.period.days,
            used_kwh: used,
            pv_kwh: pv,
            import_kwh: import,
            export_kwh: export,
            self_sufficiency: 1.0 - import / used.max(1e-9),
            self_consumption: (pv > 1e-9).then(|| 1.0 - export / pv),
            mean_bill: mean(sum(&|h| h.bill)),
            mean_baseline_bill: baseline,
            mean_savings,
            savings_share: (baseline.abs() > 1e-9).then(|| mean_savings / baseline),
            gini_of_savings: gini(&savings),
            peak_import_kw: self.series.iter().map(|r| r.pcc_kw).fold(0.0, f64::max),
            peak_import_at_utc: self
                .series
                .iter()
                .filter(|r| r.pcc_kw > 0.0)
                .max_by(|a, b| a.pcc_kw.total_cmp(&b.pcc_kw))
                .map(|r| r.time_utc.clone()),
            peak_export_kw: self.series.iter().map(|r| -r.pcc_kw).fold(0.0, f64::max),
            transformer_rating_kw: self.transformer_kw,
            peak_transformer_loading_percent: self.peak_loading,
            slots_over_transformer_rating: self.over_rating,
            losses_kwh: self.losses_kwh,
            losses_share_of_import: (import > 1e-9).then(|| self.losses_kwh / import),
            min_voltage_pu: self.min_vm,
            max_voltage_pu: self.max_vm,
            voltage_violations: self.voltage_violations,
            thermal_violations: self.thermal_violations,
            unbalance_violations: self.unbalance_violations,
            max_unbalance_pct: self.max_unbalance,
            power_flow_failures: self.pf_failures,
            outage_slots: self.outage_slots,
            energy_not_served_kwh: sum(&|h| h.energy_not_served_kwh),
            baseline_energy_not_served_kwh: self.baseline_shed_kwh,
            critical_load_served: (self.critical_kwh > 0.0)
                .then(|| 1.0 - self.critical_shed_kwh / self.critical_kwh),
            p2p_kwh,
            p2p_value_tokens: self.p2p_value,
            mean_p2p_price: (p2p_kwh > 1e-9).then(|| self.p2p_value / p2p_kwh),
            tokens_earned: earned,
            tokens_paid: sum(&|h| (-h.tokens_earned).max(0.0)),
            rewards_minted: sum(&|h| h.rewards),
            market_welfare_efficiency: (self.optimal_welfare > 0)
                .then(|| self.welfare as f64 / self.optimal_welfare as f64),
            envelope_slots: self.envelope_slots,
            envelope_failures: self.envelope_failures,
            envelope_trims: self.envelope_trims,
            ev_unmet_kwh: sum(&|h| h.ev_unmet_kwh),
            plans: self.plans,
            plan_fallbacks: self.fallbacks,
            plans_kept: self.plans_kept,
            heat_pump_kwh: self.heat_kwh,
            min_indoor_c: self.min_indoor_c,
            slots_below_comfort: self.below_comfort,
        };
        Outcome {
            scenario: s.name.clone(),
            seed: s.seed,
            community,
            ledger,
            devices: Default::default(),
            run_seconds: seconds,
            seconds_per_simulated_day: seconds / s.period.days as f64,
            homes,
            series: self.series,
        }
    }
}

/// Gini coefficient: mean absolute difference over twice the mean (`None` unless the mean is
/// positive). With negative values (homes that lost) it can exceed 1. O(n log n).
pub fn gini(values: &[f64]) -> Option<f64> {
    let n = values.len();
    let mean = values.iter().sum::<f64>() / n.max(1) as f64;
    if n == 0 || mean <= 0.0 {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    // Σ_i Σ_j |x_i − x_j| = 2 Σ_i (2i − n + 1) x_i over sorted x.
    let total: f64 = v
        .iter()
        .enumerate()
        .map(|(i, x)| (2.0 * i as f64 - n as f64 + 1.0) * x)
        .sum::<f64>()
        * 2.0;
    Some(total / (2.0 * (n * n) as f64 * mean))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gini_of_equal_and_unequal_shares() {
        assert_eq!(gini(&[1.0, 1.0, 1.0]), Some(0.0));
        let g = gini(&[0.0, 0.0, 0.0, 4.0]).unwrap();
        assert!((g - 0.75).abs() < 1e-12, "{g}");
        assert_eq!(gini(&[-1.0, 0.5]), None);
    }

    #[test]
    fn utc_dates() {
        assert_eq!(utc(1_262_304_000), "2010-01-01T00:00Z");
        assert_eq!(
            utc(1_262_304_000 + 120 * 86_400 + 3_600 + 900),
            "2010-05-01T01:15Z"
        );
        assert_eq!(utc(951_782_400), "2000-02-29T00:00Z");
    }
}
