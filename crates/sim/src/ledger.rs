//! The simulator's chain: the ledger's own block building and state machine, kept in memory.
//!
//! Members' transactions are [`VerifiedTx::simulated`] (the simulator holds no member keys and
//! signing millions of transactions would measure ed25519, not the community), but everything
//! after the signature check is the node's code path: `Parent::build_block` executes them on an
//! overlay, runs clearing and settlement at the block's time, computes the state root, and the
//! state applies the diff. The final state root identifies a run: same scenario and seed, same
//! root.

use std::collections::BTreeMap;

use gridmesh_ledger::economics::EconomicsFile;
use gridmesh_ledger::genesis::GenesisAccount;
use gridmesh_ledger::market::{self, FeeFile, MarketFile, SlotRecord, TariffFile, TradeRecord};
use gridmesh_ledger::{BlockHeader, Genesis, State, TxKind, VerifiedTx};
use gridmesh_types::{Address, Amount, Hash32};

/// Days a final slot's records stay in the run's state.
pub const HISTORY_DAYS: u32 = 2;

/// A chain held in memory.
pub struct SimLedger {
    pub chain_id: String,
    pub state: State,
    pub header: BlockHeader,
    pub hash: Hash32,
    proposer: Address,
    /// Refusals by reason (the error's text without numbers), for the run's report.
    pub rejected: BTreeMap<String, u64>,
    pub transactions: u64,
}

/// A member's address in a run: derived from the scenario's seed and the home's number.
pub fn member(seed: u64, i: usize) -> Address {
    Address(*blake3::hash(format!("gridmesh-sim/member/{seed}/{i}").as_bytes()).as_bytes())
}

/// The community's grid operator in a run.
pub fn grid_operator(seed: u64) -> Address {
    Address(*blake3::hash(format!("gridmesh-sim/grid-operator/{seed}").as_bytes()).as_bytes())
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
}

impl SimLedger {
    pub fn new(g: &GenesisSpec) -> Result<SimLedger, String> {
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
                shortfall_price_per_kwh: None,
                grid_fees: if g.grid_fee_per_kwh > 0.0 {
                    vec![FeeFile {
                        constant_per_kwh: Some(token_text(g.grid_fee_per_kwh)),
                        percent: None,
                    }]
                } else {
                    Vec::new()
                },
                grid_operator: Some(g.operator),
                market_operator: None,
                max_import_kw: Some(format!("{:.3}", g.max_import_kw)),
                island_price_cap_per_kwh: None,
                min_device_bond: None,
                history_days: Some(HISTORY_DAYS),
            }),
            // Disputes within a day, so that a slot's records leave the state two days after
            // it is final: a run's state stays bounded however long it is.
            economics: Some(EconomicsFile {
                dispute_window_minutes: Some(24 * 60),
                ..Default::default()
            }),
        };
        genesis.validate().map_err(|e| e.to_string())?;
        let (block, state) = genesis.block().map_err(|e| e.to_string())?;
        Ok(SimLedger {
            chain_id: g.chain_id.clone(),
            state,
            hash: block.header.hash(),
            header: block.header,
            proposer: g.operator,
            rejected: BTreeMap::new(),
            transactions: 0,
        })
    }

    /// A transaction of `sender` with the next nonce after `pending` others of it in this block.
    pub fn tx(&self, sender: Address, pending: u64, kind: TxKind) -> Option<VerifiedTx> {
        let nonce = self.state.account(&sender).nonce + pending;
        match VerifiedTx::simulated(sender, &self.chain_id, nonce, kind) {
            Ok(tx) => Some(tx),
            Err(e) => {
                tracing::warn!(%e, "the simulator made a malformed transaction");
                None
            }
        }
    }

    /// Builds, executes and applies the next block at `timestamp_ms`.
    pub fn block(&mut self, txs: Vec<VerifiedTx>, timestamp_ms: u64) {
        let parent = gridmesh_ledger::Parent {
            header: &self.header,
            hash: self.hash,
            state: &self.state,
        };
        let built = parent.build_block(&self.chain_id, txs, timestamp_ms, self.proposer);
        for (_, e) in &built.rejected {
            let reason: String = e
                .to_string()
                .chars()
                .map(|c| if c.is_ascii_digit() { '#' } else { c })
                .collect();
            *self.rejected.entry(reason).or_insert(0) += 1;
        }
        self.transactions += built.block.txs.len() as u64;
        self.state.apply(built.executed.diff);
        self.hash = built.executed.block_hash;
        self.header = built.block.header;
    }

    pub fn balance(&self, a: &Address) -> u128 {
        self.state.account(a).balance.0
    }

    /// The cleared slot's record, if it was cleared.
    pub fn slot(&self, slot: u64) -> Option<SlotRecord> {
        self.state
            .kv()
            .get(&market::slot_key(slot))
            .map(market::decode)
    }

    /// The slot's trades.
    pub fn trades(&self, slot: u64) -> Vec<TradeRecord> {
        self.state
            .kv()
            .scan(&market::trades_prefix(slot))
            .map(|(_, v)| market::decode(v))
            .collect()
    }
}
