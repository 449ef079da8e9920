//! The grid operator's service, run by the node that holds the grid operator's key
//! (`gridmesh node --grid-feeder FEEDER.toml|MASTER.dss --grid-operator-key KEY`):
//!
//! - **Envelopes before every gate closure.** For each of the next open slots it runs power flow on
//!   the feeder's forecast, derives every connection point's operating envelope
//!   ([`gridmesh_grid::operating_envelopes`]) and submits them as `SetEnvelope` transactions, so
//!   the ledger's clearing trims each home's orders to what the feeder can carry. On a feeder in
//!   TOML the connection points are its buses (other than `pcc` and `lv`); on an unbalanced
//!   OpenDSS feeder they are its single-phase loads, each a home on its phase with a per-phase
//!   envelope ([`gridmesh_grid::unbalanced::Circuit::phase_envelopes`]). An order's `location`
//!   names one.
//! - **Islanding.** It feeds the islanding controller ([`gridmesh_grid::island::Controller`]) with
//!   the PCC meter's reports (`POST /v1/grid/pcc`, from the meter's gateway on this machine) and
//!   the chain's clock: an outage report, or no report for `pcc_timeout`, islands the microgrid;
//!   healthy reports for `resync` reconnect it. Every transition is submitted as a `GridEvent`
//!   transaction, so slots whose gate closes while islanded clear under island rules.
//!
//! - **Its DSO's VTN.** With `--openadr-upstream` it follows an upstream OpenADR 3 VTN
//!   ([`crate::openadr::follow`]): the DSO's capacity limits cap the sum of the envelopes of a
//!   slot and its prices become the slot's tariff (`SetTariff`); a slot whose upstream terms
//!   change while its gate is open is enveloped and priced again.
//!
//! The forecast is the feeder's own loads for now (the agents' forecasts replace it with the
//! agent issue). Times are the chain's (block timestamps), so `--time-scale` simulations work.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use gridmesh_grid::island::{Controller, IslandConfig, Pcc, Transition};
use gridmesh_grid::{operating_envelopes, EnvelopeOptions, Feeder};
use gridmesh_ledger::market::MarketConfig;
use gridmesh_ledger::readers::MarketReader;
use gridmesh_ledger::{GridEventKind, Keypair, TxKind};
use gridmesh_types::units::{slot_of, SLOT_MS};

use crate::openadr::follow::{cap_envelopes, Upstream, UpstreamConfig};
use crate::openadr::upstream::SlotTerms;
use crate::Shared;

/// The feeder the service computes envelopes on.
#[derive(Clone, Debug)]
pub enum OperatorFeeder {
    /// A balanced feeder described in TOML: an envelope per connection bus.
    Balanced(Feeder),
    /// An unbalanced feeder read from OpenDSS: an envelope per single-phase load (a home on its
    /// phase), its load's name the location.
    Unbalanced(Box<gridmesh_grid::unbalanced::Circuit>),
}

impl OperatorFeeder {
    pub fn name(&self) -> String {
        match self {
            OperatorFeeder::Balanced(f) => f.network.name.clone(),
            OperatorFeeder::Unbalanced(c) => c.name.clone(),
        }
    }

    /// The connection points: each one's location (what orders name) and its index (a bus, or
    /// a load).
    pub fn connection_points(&self) -> Vec<(String, usize)> {
        match self {
            OperatorFeeder::Balanced(f) => f
                .names
                .iter()
                .enumerate()
                .skip(2)
                .map(|(i, n)| (n.clone(), i))
                .collect(),
            OperatorFeeder::Unbalanced(c) => c
                .loads
                .iter()
                .enumerate()
                .filter(|(_, l)| {
                    l.phases == 1
                        && l.connection == gridmesh_grid::unbalanced::Connection::Wye
                        && l.terminal.nodes[0] != 0
                })
                .map(|(k, l)| (l.name.clone(), k))
                .collect(),
        }
    }
}

/// Settings of the grid operator service.
#[derive(Clone, Debug)]
pub struct GridOperatorConfig {
    pub feeder: OperatorFeeder,
    pub key: Keypair,
    /// Envelopes are submitted for this many open slots ahead.
    pub lead_slots: u64,
    /// Islanded when the PCC meter has not reported for this long (chain time).
    pub pcc_timeout_ms: u64,
    /// Healthy grid needed before reconnecting (chain time).
    pub resync_ms: u64,
    /// An envelope is only submitted while its slot's gate closure is at least this far away
    /// (chain time): long enough for it to reach a block. The node sets it from its block
    /// interval and time scale ([`gate_margin_ms`]).
    pub gate_margin_ms: u64,
    /// Follow this upstream OpenADR 3 VTN (the DSO's): its limits and prices.
    pub upstream: Option<UpstreamConfig>,
}

/// How far ahead of gate closure an envelope must be submitted for it to be final before the
/// gate closes: five block intervals of chain time (the head's timestamp lags the clock by up to
/// one, the block that takes it may come one later, and a loaded machine delays both), and never
/// under a minute.
pub fn gate_margin_ms(block_interval: Duration, time_scale: u32) -> u64 {
    let block_ms = u64::try_from(block_interval.as_millis()).unwrap_or(u64::MAX);
    block_ms
        .saturating_mul(5)
        .saturating_mul(u64::from(time_scale.max(1)))
        .max(60_000)
}

/// The last report of the PCC meter: whether the upstream grid is there.
#[derive(Debug, Default)]
pub struct PccReports {
    /// Reports not yet seen by the controller; the latest wins.
    pending: Option<bool>,
    /// The time of the last accepted report: a report must be newer (replays are refused).
    last_ms: Option<u64>,
}

/// How far a PCC report's time may be from the node's clock.
pub const PCC_MAX_SKEW_MS: u64 = 60_000;

/// Transactions the service holds while the mempool refuses them for now: a day's envelopes for
/// a hundred connection points.
const MAX_QUEUED: usize = 10_000;

/// Why a signed PCC report was refused (its signature and signer were checked before).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PccRefusal {
    #[error("a report of {timestamp_ms} ms is not newer than the last accepted one ({last_ms} ms): a replay")]
    Replayed { timestamp_ms: u64, last_ms: u64 },
    #[error("the report's time {timestamp_ms} ms is more than {PCC_MAX_SKEW_MS} ms from this node's clock ({now_ms} ms)")]
    OutOfTime { timestamp_ms: u64, now_ms: u64 },
}

impl PccReports {
    /// Takes a report made at `timestamp_ms` if it is newer than the last and near `now_ms`.
    pub fn report(
        &mut self,
        grid_available: bool,
        timestamp_ms: u64,
        now_ms: u64,
    ) -> Result<(), PccRefusal> {
        if timestamp_ms.abs_diff(now_ms) > PCC_MAX_SKEW_MS {
            return Err(PccRefusal::OutOfTime {
                timestamp_ms,
                now_ms,
            });
        }
        if let Some(last_ms) = self.last_ms {
            if timestamp_ms <= last_ms {
                return Err(PccRefusal::Replayed {
                    timestamp_ms,
                    last_ms,
                });
            }
        }
        self.last_ms = Some(timestamp_ms);
        self.pending = Some(grid_available);
        Ok(())
    }
}

/// What the service has done, for `/v1/grid`.
#[derive(Debug, Default, Clone)]
pub struct OperatorStatus {
    /// Slots whose envelopes were submitted.
    pub enveloped_slots: BTreeSet<u64>,
    pub envelopes_submitted: u64,
    pub transitions_submitted: u64,
    /// The last error (envelopes that could not be computed, transactions refused).
    pub last_error: Option<String>,
}

/// The running service's thread.
pub struct GridOperator {
    stop: mpsc::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl GridOperator {
    /// Starts the service on its own thread; `pcc`, `status` and `upstream` (what the
    /// follower of the DSO's VTN keeps, if it runs) are shared with the API.
    pub fn start(
        shared: Arc<Shared>,
        cfg: GridOperatorConfig,
        pcc: Arc<Mutex<PccReports>>,
        status: Arc<Mutex<OperatorStatus>>,
        upstream: Option<Arc<Mutex<Upstream>>>,
    ) -> std::io::Result<GridOperator> {
        let (stop, stopped) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("grid-operator".into())
            .spawn(move || run(shared, cfg, pcc, status, upstream, stopped))?;
        Ok(GridOperator { stop, thread })
    }

    pub fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.thread.join();
    }
}

fn run(
    shared: Arc<Shared>,
    cfg: GridOperatorConfig,
    pcc: Arc<Mutex<PccReports>>,
    status: Arc<Mutex<OperatorStatus>>,
    upstream: Option<Arc<Mutex<Upstream>>>,
    stopped: mpsc::Receiver<()>,
) {
    let me = cfg.key.address();
    let (start_ms, market) = {
        let chain = shared.chain.read().expect("chain lock");
        (chain.head().timestamp_ms, chain.state().market_config())
    };
    if market.grid_operator != me {
        let msg = format!(
            "the grid operator key {me} is not the market's grid operator {}: envelopes and grid events would be refused",
            market.grid_operator
        );
        tracing::error!("{msg}");
        status.lock().expect("status lock").last_error = Some(msg);
        return;
    }
    let homes = cfg.feeder.connection_points();
    let mut controller = Controller::new(
        IslandConfig {
            resync_ms: cfg.resync_ms,
            reading_timeout_ms: cfg.pcc_timeout_ms,
        },
        start_ms,
    );
    let mut submitter = crate::submitter::Submitter::new(cfg.key.clone());
    let mut queued: Vec<TxKind> = Vec::new();
    // The upstream terms each open slot was enveloped and priced under: a slot is done again
    // when they change while its gate is still far enough away.
    let mut applied: BTreeMap<u64, SlotTerms> = BTreeMap::new();
    loop {
        match stopped.recv_timeout(Duration::from_millis(100)) {
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            _ => return,
        }
        let now = shared.chain.read().expect("chain lock").head().timestamp_ms;
        // Islanding: one observation per poll.
        let report = pcc.lock().expect("pcc lock").pending.take();
        let observation = match report {
            Some(true) => Pcc::Healthy,
            Some(false) => Pcc::Down,
            None => Pcc::Silent,
        };
        if let Some(t) = controller.observe(now, observation) {
            tracing::info!(?t, "islanding controller transition");
            let (event, at_ms) = match t {
                Transition::Islanded { at_ms, .. } => (GridEventKind::Islanded, at_ms),
                Transition::Resynchronising { at_ms } => (GridEventKind::Resynchronising, at_ms),
                Transition::Reconnected { at_ms } => (GridEventKind::Reconnected, at_ms),
            };
            queued.push(TxKind::GridEvent { event, at_ms });
            status.lock().expect("status lock").transitions_submitted += 1;
        }
        // Envelopes (and the DSO's prices) for the next open slots whose gate is at least a
        // block away.
        let slots = next_slots(&market, now, cfg.lead_slots, cfg.gate_margin_ms);
        for &slot in &slots {
            let terms = upstream
                .as_ref()
                .map(|u| u.lock().expect("upstream lock").terms(slot))
                .unwrap_or_default();
            let before = applied.insert(slot, terms);
            if before == Some(terms) {
                continue;
            }
            if before.is_some() {
                tracing::info!(
                    slot,
                    ?terms,
                    "the DSO's terms changed: enveloping the slot again"
                );
            }
            match envelopes_for(&cfg.feeder, &homes, slot, &terms) {
                Ok(txs) => {
                    let mut st = status.lock().expect("status lock");
                    st.envelopes_submitted += txs.len() as u64;
                    st.enveloped_slots.insert(slot);
                    queued.extend(txs);
                }
                Err(e) => {
                    tracing::warn!(slot, error = %e, "no envelopes for this slot");
                    let mut st = status.lock().expect("status lock");
                    st.last_error = Some(format!("slot {slot}: {e}"));
                    st.enveloped_slots.insert(slot);
                }
            }
            let Some(u) = &upstream else { continue };
            // Only the limits changed: the slot's tariff stands.
            let prices = |t: &SlotTerms| (t.price_per_kwh, t.export_price_per_kwh);
            if before.is_some_and(|b| prices(&b) == prices(&terms)) {
                continue;
            }
            let genesis = market.tariff(slot);
            let was_priced = before
                .is_some_and(|t| t.price_per_kwh.is_some() || t.export_price_per_kwh.is_some());
            let tariff = match u.lock().expect("upstream lock").tariff(&terms, genesis) {
                Some(Ok(t)) => Some(t),
                Some(Err(e)) => {
                    tracing::warn!(slot, error = %e, "the DSO's prices are no tariff");
                    status.lock().expect("status lock").last_error =
                        Some(format!("slot {slot}: the DSO's prices: {e}"));
                    was_priced.then_some(genesis)
                }
                // Prices withdrawn upstream: the genesis tariff again.
                None => was_priced.then_some(genesis),
            };
            if let Some(t) = tariff {
                queued.push(TxKind::SetTariff {
                    slot,
                    retail_per_kwh: t.retail_per_kwh,
                    feed_in_per_kwh: t.feed_in_per_kwh,
                });
            }
        }
        if let Some(&first) = slots.first() {
            applied.retain(|&s, _| s >= first);
        }
        {
            let mut st = status.lock().expect("status lock");
            while st.enveloped_slots.len() > 1_000 {
                st.enveloped_slots.pop_first();
            }
        }
        // With nothing new, still while transactions are in flight: one refused at block time
        // has those behind it signed again now, not when the next slot is enveloped.
        if queued.is_empty() && submitter.idle() {
            continue;
        }
        let take = queued.len().min(1_000);
        let submitted = submitter.submit(&shared, queued.drain(..take).collect());
        // Refused for now (the mempool or this key's queue full): first again at the next poll.
        queued.splice(0..0, submitted.unsent);
        let mut excess = queued.len().saturating_sub(MAX_QUEUED);
        if excess > 0 {
            tracing::warn!(
                dropped = excess,
                "the grid operator's queue is full: its oldest envelopes and tariffs are dropped"
            );
            // Grid events stay: the ledger's mode follows nothing else.
            queued.retain(|k| {
                let drop = excess > 0 && !matches!(k, TxKind::GridEvent { .. });
                excess -= usize::from(drop);
                !drop
            });
        }
        if let Some(e) = submitted.errors.last() {
            let mut st = status.lock().expect("status lock");
            // Once, not at every poll while the mempool stays full.
            if st.last_error.as_ref() != Some(e) {
                tracing::warn!(error = %e, "a grid operator transaction was refused");
            }
            st.last_error = Some(e.clone());
        }
    }
}

/// The next `lead` slots whose gate closure is more than `margin_ms` of chain time away.
fn next_slots(market: &MarketConfig, now_ms: u64, lead: u64, margin_ms: u64) -> Vec<u64> {
    let first = slot_of(now_ms) + 1;
    let lead = lead.max(1);
    (first..first + lead + margin_ms / SLOT_MS + 2)
        .filter(|&s| market.gate_closure_ms(s) > now_ms.saturating_add(margin_ms))
        .take(lead as usize)
        .collect()
}

/// The `SetEnvelope` transactions of one slot, their sum within the DSO's limits of the slot.
fn envelopes_for(
    feeder: &OperatorFeeder,
    homes: &[(String, usize)],
    slot: u64,
    terms: &SlotTerms,
) -> anyhow::Result<Vec<TxKind>> {
    let minutes = (SLOT_MS / 60_000) as u32;
    let mut energies: Vec<(u64, u64)> = match feeder {
        OperatorFeeder::Balanced(feeder) => {
            let buses: Vec<usize> = homes.iter().map(|h| h.1).collect();
            let env = operating_envelopes(&feeder.network, &buses, &EnvelopeOptions::default())?;
            env.connections
                .iter()
                .map(|e| e.energy_mwh(minutes))
                .collect()
        }
        OperatorFeeder::Unbalanced(circuit) => {
            let env = circuit.phase_envelopes(&circuit.solve_options, &Default::default())?;
            env.homes.iter().map(|h| h.energy_mwh(minutes)).collect()
        }
    };
    cap_envelopes(&mut energies, terms);
    Ok(homes
        .iter()
        .zip(energies)
        .map(
            |((name, _), (import_mwh, export_mwh))| TxKind::SetEnvelope {
                slot,
                location: name.clone(),
                import_mwh,
                export_mwh,
            },
        )
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_go_to_slots_whose_gate_is_beyond_the_margin() {
        let market = MarketConfig::default();
        // 600x with 1 s blocks: 50 minutes of chain time.
        let margin = gate_margin_ms(Duration::from_secs(1), 600);
        assert_eq!(margin, 3_000_000);
        assert_eq!(gate_margin_ms(Duration::from_secs(1), 1), 60_000);
        let now = 1_000 * SLOT_MS + 60_000;
        for lead in [1, 2, 8] {
            let slots = next_slots(&market, now, lead, margin);
            assert_eq!(slots.len(), lead as usize, "{slots:?}");
            assert!(slots
                .iter()
                .all(|&s| market.gate_closure_ms(s) > now + margin));
            assert!(market.gate_closure_ms(slots[0] - 1) <= now + margin);
        }
    }
}
