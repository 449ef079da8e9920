//! The simulator's chain: [`SimChain`] is what a run needs of a ledger; [`SimLedger`] is the
//! ledger's own block building and state machine, kept in memory (the demo drives a real node's
//! chain through the same trait: signed transactions, its mempool, its store and API).
//!
//! In memory, members' transactions are [`UnsignedTx`] (signing and verifying millions of
//! transactions would measure ed25519, not the community: BENCHMARKS.md), but everything after
//! the signature check is the node's code path: `Parent::rehearse` runs the same executor as
//! `Parent::build_block` on an overlay, clearing and settlement at the block's time, computes the
//! state root, and the state applies the diff. The keyed devices' readings those transactions
//! carry are vouched for likewise unless the scenario asks for their signatures to be checked
//! (`devices.check_signatures`, [`DeviceSignatures`]). An unsigned transaction is not a `VerifiedTx`, so
//! no node, mempool or replica can take one. The final state root identifies a run: same scenario and seed, same
//! root.

use std::collections::{BTreeMap, HashMap};

use gridmesh_ledger::config::{FeeFile, MarketFile, TariffFile};
use gridmesh_ledger::economics::EconomicsFile;
use gridmesh_ledger::genesis::GenesisAccount;
use gridmesh_ledger::market::{SlotRecord, TradeRecord};
use gridmesh_ledger::readers::{EconomicsReader, MarketReader};
use gridmesh_ledger::{BlockHeader, DeviceSignatures, Genesis, Keypair, State, TxKind, UnsignedTx};
use gridmesh_types::{Address, Amount, Hash32};

use crate::kpi::LedgerKpis;

/// What a run needs of a chain.
pub trait SimChain: Send {
    /// A member's transaction as this chain takes it: signed and verified on a node's chain,
    /// unsigned in memory ([`UnsignedTx`]).
    type Tx: Send;
    /// A transaction of `sender` with the next nonce after `pending` others of it in this block.
    fn tx(&self, sender: Address, pending: u64, kind: TxKind) -> Option<Self::Tx>;

    /// The transactions of a block, in order, from what each sender asks (sender, kind): each
    /// sender's numbered on after its earlier ones here, those that cannot be formed left out
    /// ([`txs_one_by_one`]).
    fn txs(&self, calls: Vec<(Address, TxKind)>) -> Vec<Self::Tx> {
        txs_one_by_one(self, calls)
    }

    /// Builds, executes and commits the next block at `timestamp_ms` with `txs`.
    fn block(&mut self, txs: Vec<Self::Tx>, timestamp_ms: u64) -> Result<(), String>;
    /// Reads the committed state.
    fn read<R>(&self, f: impl FnOnce(&State) -> R) -> R;
    /// The chain at the end of a run.
    fn kpis(&self) -> LedgerKpis;

    /// Whether this chain checks the keyed devices' signatures on their readings (a node's
    /// chain always does), or takes the readings unsigned, vouched for by the run.
    fn device_signatures(&self) -> DeviceSignatures {
        DeviceSignatures::Checked
    }

    /// Whether this chain shows the feeder live ([`SimChain::feeder`] is then called after every
    /// slot; building a snapshot costs O(buses)).
    fn wants_feeder(&self) -> bool {
        false
    }

    /// The feeder as the slot just simulated left it (the demo's node serves it to its page).
    fn feeder(&mut self, _snapshot: gridmesh_grid::snapshot::Snapshot) {}

    fn balance(&self, a: &Address) -> u128 {
        self.read(|s| s.account(a).balance.0)
    }

    /// The cleared slot's record, if it was cleared.
    fn slot(&self, slot: u64) -> Option<SlotRecord> {
        self.read(|s| s.slot_record(slot))
    }

    /// The slot's trades.
    fn trades(&self, slot: u64) -> Vec<TradeRecord> {
        self.read(|s| s.trades(slot))
    }
}

/// Tokens minted to `owner` by the epochs of chain slots `slots` that have closed.
pub fn rewards(
    chain: &impl SimChain,
    owner: &Address,
    slots: std::ops::RangeInclusive<u64>,
) -> u128 {
    chain.read(|st| {
        let cfg = st.economics_config();
        (cfg.epoch_of(*slots.start())..=cfg.epoch_of(*slots.end()))
            .filter_map(|e| st.points(e, owner))
            .map(|p| p.reward)
            .sum()
    })
}

/// [`SimChain::txs`] made one by one with [`SimChain::tx`]: a sender's next transaction takes
/// the nonce after its earlier ones that formed.
pub fn txs_one_by_one<C: SimChain + ?Sized>(
    chain: &C,
    calls: Vec<(Address, TxKind)>,
) -> Vec<C::Tx> {
    let mut pending: HashMap<Address, u64> = HashMap::new();
    calls
        .into_iter()
        .filter_map(|(sender, kind)| {
            let p = pending.entry(sender).or_default();
            let tx = chain.tx(sender, *p, kind)?;
            *p += 1;
            Some(tx)
        })
        .collect()
}

/// A refusal's reason without its numbers, so that refusals group by kind.
pub fn refusal_reason(e: &impl std::fmt::Display) -> String {
    e.to_string()
        .chars()
        .map(|c| if c.is_ascii_digit() { '#' } else { c })
        .collect()
}

/// Days a final slot's records stay in the run's state.
pub const HISTORY_DAYS: u32 = 2;

/// A chain held in memory.
pub struct SimLedger {
    pub chain_id: String,
    pub state: State,
    pub header: BlockHeader,
    pub hash: Hash32,
    proposer: Address,
    /// Whether its blocks check the devices' signatures on their readings.
    devices: DeviceSignatures,
    /// Refusals by reason (the error's text without numbers), for the run's report.
    pub rejected: BTreeMap<String, u64>,
    pub transactions: u64,
}

/// A member's key in a run: derived from the scenario's seed and the home's number (a run's
/// members are simulated; never use these keys on a real chain).
pub fn member_key(seed: u64, i: usize) -> Keypair {
    Keypair::from_seed(
        *blake3::hash(format!("gridmesh-sim/member/{seed}/{i}").as_bytes()).as_bytes(),
    )
}

/// A member's address in a run.
pub fn member(seed: u64, i: usize) -> Address {
    member_key(seed, i).address()
}

/// The key of the community's grid operator in a run.
pub fn grid_operator_key(seed: u64) -> Keypair {
    Keypair::from_seed(
        *blake3::hash(format!("gridmesh-sim/grid-operator/{seed}").as_bytes()).as_bytes(),
    )
}

/// The community's grid operator in a run.
pub fn grid_operator(seed: u64) -> Address {
    grid_operator_key(seed).address()
}

/// Tokens with six decimals as the ledger's decimal text.
pub fn token_text(v: f64) -> String {
    format!("{:.6}", v)
}

/// The genesis of a run.
pub struct GenesisSpec<'a> {
    pub chain_id: String,
    pub timestamp_ms: u64,
    pub members: &'a [Address],
    pub initial_tokens: u64,
    pub operator: Address,
    pub mechanism: &'a str,
    /// (first UTC slot of the day, retail, feed-in), tokens per kWh.
    pub tariffs: Vec<(u8, f64, f64)>,
    pub grid_fee_per_kwh: f64,
    pub max_import_kw: f64,
    /// Tokens minted per epoch (a day) to the owners of verified devices.
    pub epoch_emission_tokens: f64,
}

impl GenesisSpec<'_> {
    /// The run's genesis, validated.
    pub fn genesis(&self) -> Result<Genesis, String> {
        let g = self;
        let genesis = Genesis {
            chain_id: g.chain_id.clone(),
            timestamp_ms: g.timestamp_ms,
            accounts: g
                .members
                .iter()
                .map(|a| GenesisAccount {
                    address: *a,
                    balance: Amount::from_tokens(g.initial_tokens),
                })
                .chain(std::iter::once(GenesisAccount {
                    address: g.operator,
                    balance: Amount::from_tokens(1_000),
                }))
                .collect(),
            validators: vec![],
            market: Some(MarketFile {
                mechanism: g.mechanism.to_string(),
                gate_closure_minutes: Some(5),
                correction_window_minutes: Some(60),
                late_window_minutes: Some(24 * 60),
                tariffs: g
                    .tariffs
                    .iter()
                    .map(|(from, retail, feed_in)| TariffFile {
                        from_slot: *from,
                        retail_per_kwh: token_text(*retail),
                        feed_in_per_kwh: token_text(*feed_in),
                    })
                    .collect(),
                grid_fees: if g.grid_fee_per_kwh > 0.0 {
                    vec![FeeFile {
                        constant_per_kwh: Some(token_text(g.grid_fee_per_kwh)),
                        percent: None,
                    }]
                } else {
                    Vec::new()
                },
                grid_operator: Some(g.operator),
                max_import_kw: Some(format!("{:.3}", g.max_import_kw)),
                history_days: Some(HISTORY_DAYS),
                ..Default::default()
            }),
            // Disputes within a day, so that a slot's records leave the state two days after
            // it is final: a run's state stays bounded however long it is.
            economics: Some(EconomicsFile {
                dispute_window_minutes: Some(24 * 60),
                epoch_emission: Some(token_text(g.epoch_emission_tokens)),
                ..Default::default()
            }),
        };
        genesis.validate().map_err(|e| e.to_string())?;
        Ok(genesis)
    }
}

impl SimLedger {
    /// A chain in memory from `genesis`, its blocks proposed by `proposer`, checking the
    /// signatures of device readings or not as `devices` says.
    pub fn new(
        genesis: &Genesis,
        proposer: Address,
        devices: DeviceSignatures,
    ) -> Result<SimLedger, String> {
        let (block, state) = genesis.block().map_err(|e| e.to_string())?;
        Ok(SimLedger {
            chain_id: genesis.chain_id.clone(),
            state,
            hash: block.header.hash(),
            header: block.header,
            proposer,
            devices,
            rejected: BTreeMap::new(),
            transactions: 0,
        })
    }
}

impl SimChain for SimLedger {
    type Tx = UnsignedTx;

    fn tx(&self, sender: Address, pending: u64, kind: TxKind) -> Option<UnsignedTx> {
        let nonce = self.state.account(&sender).nonce + pending;
        match UnsignedTx::new(sender, &self.chain_id, nonce, kind) {
            Ok(tx) => Some(tx),
            Err(e) => {
                tracing::warn!(%e, "the simulator made a malformed transaction");
                None
            }
        }
    }

    /// As [`SimChain::txs`], on the machine's cores: numbered as if each forms (the simulator
    /// makes none that cannot), and one by one again from those that did where one does not
    /// (whether one forms does not depend on its nonce).
    fn txs(&self, calls: Vec<(Address, TxKind)>) -> Vec<UnsignedTx> {
        use rayon::prelude::*;
        let mut pending: HashMap<Address, u64> = HashMap::new();
        let numbered: Vec<(Address, u64, TxKind)> = calls
            .into_iter()
            .map(|(sender, kind)| {
                let p = pending.entry(sender).or_default();
                *p += 1;
                (sender, *p - 1, kind)
            })
            .collect();
        let made: Vec<Option<UnsignedTx>> = numbered
            .into_par_iter()
            .map(|(sender, p, kind)| self.tx(sender, p, kind))
            .collect();
        if made.iter().all(Option::is_some) {
            return made.into_iter().flatten().collect();
        }
        let formed = made
            .into_iter()
            .flatten()
            .map(|tx| (tx.sender(), tx.body().kind.clone()))
            .collect();
        txs_one_by_one(self, formed)
    }

    fn block(&mut self, txs: Vec<UnsignedTx>, timestamp_ms: u64) -> Result<(), String> {
        let parent = gridmesh_ledger::Parent {
            header: &self.header,
            hash: self.hash,
            state: &self.state,
        };
        let run = parent.rehearse(
            &self.chain_id,
            txs,
            timestamp_ms,
            self.proposer,
            self.devices,
        );
        for (_, e) in &run.rejected {
            *self.rejected.entry(refusal_reason(e)).or_insert(0) += 1;
        }
        self.transactions += u64::from(run.header.tx_count);
        self.state.apply(run.executed.diff);
        self.hash = run.executed.block_hash;
        self.header = run.header;
        Ok(())
    }

    fn read<R>(&self, f: impl FnOnce(&State) -> R) -> R {
        f(&self.state)
    }

    fn device_signatures(&self) -> DeviceSignatures {
        self.devices
    }

    fn kpis(&self) -> LedgerKpis {
        LedgerKpis::of(
            &self.chain_id,
            &self.header,
            &self.state,
            self.transactions,
            &self.rejected,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Made at once or one by one, a block's transactions are the same: each sender's numbered
    /// on, and one that cannot be formed (an order of no energy) left out with the next of its
    /// sender taking its nonce.
    #[test]
    fn a_blocks_transactions_made_at_once_are_those_made_one_by_one() {
        let (a, b) = (Address([1; 32]), Address([2; 32]));
        let genesis = Genesis::dev(a);
        let chain = SimLedger::new(&genesis, a, DeviceSignatures::Checked).unwrap();
        let order = |energy_mwh| TxKind::PlaceOrder {
            slot: 10,
            side: gridmesh_ledger::Side::Bid,
            energy_mwh,
            price_per_kwh: 100_000,
            location: String::new(),
        };
        let reading = TxKind::SubmitReading {
            slot: 9,
            import_mwh: 100,
            export_mwh: 0,
        };
        let calls = |bad: bool| {
            vec![
                (a, reading.clone()),
                (b, reading.clone()),
                (a, order(if bad { 0 } else { 500 })),
                (b, order(700)),
                (a, order(900)),
            ]
        };
        for bad in [false, true] {
            let at_once = chain.txs(calls(bad));
            assert_eq!(at_once, txs_one_by_one(&chain, calls(bad)), "bad: {bad}");
            let nonces: Vec<(Address, u64)> = at_once
                .iter()
                .map(|t| (t.sender(), t.body().nonce))
                .collect();
            let expected = if bad {
                vec![(a, 0), (b, 0), (b, 1), (a, 1)]
            } else {
                vec![(a, 0), (b, 0), (a, 1), (b, 1), (a, 2)]
            };
            assert_eq!(nonces, expected, "bad: {bad}");
        }
    }
}
