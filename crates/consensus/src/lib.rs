//! The interface between whatever orders blocks and the gridmesh state machine, and the solo engine.
//!
//! An engine (the embedded [`solo`] engine now, a BFT engine for several validators later) drives an
//! [`Application`] through three calls:
//!
//! 1. [`Application::propose`]: the leader builds a block on its head from its mempool;
//! 2. [`Application::verify`]: every validator re-executes a proposal and checks its roots before voting;
//! 3. [`Application::finalize`]: every replica durably applies a block the engine has finalised.
//!    Finalising is idempotent: a block already applied (redelivered after a restart) is acknowledged
//!    and not applied twice.
//!
//! [`LedgerApp`] implements it over the ledger's [`Chain`] and [`Mempool`].

pub mod solo;

use std::sync::{Arc, Mutex, RwLock};

use gridmesh_ledger::chain::Executed;
use gridmesh_ledger::{Block, BlockError, Chain, ChainError, Mempool};
use gridmesh_types::{Address, Hash32};

/// A block the engine finalised and the application committed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finalized {
    pub height: u64,
    pub hash: Hash32,
    pub tx_count: u32,
    pub timestamp_ms: u64,
    /// False when the block had already been applied (redelivery).
    pub newly_applied: bool,
    /// Time to make the block durable and apply it to the in-memory state.
    pub commit_time: std::time::Duration,
    /// Time to write its transaction index afterwards.
    pub index_time: std::time::Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("invalid block: {0}")]
    InvalidBlock(#[from] BlockError),
    #[error(transparent)]
    Chain(#[from] ChainError),
    #[error("block {height} conflicts with the committed block {committed} at that height")]
    Conflict { height: u64, committed: Hash32 },
    /// The block is committed but its transactions could not be indexed. The index must grow in
    /// height order, so the replica stops; on restart it indexes the block again.
    #[error("block {height} is committed but indexing it failed: {source}")]
    IndexFailed {
        height: u64,
        #[source]
        source: ChainError,
    },
}

impl AppError {
    /// Whether the engine must stop rather than try again.
    pub fn is_fatal(&self) -> bool {
        matches!(self, AppError::IndexFailed { .. })
    }
}

/// Whether a finalised block is already committed (a redelivery): `Ok(true)` if the same block
/// is committed at its height, `Ok(false)` if it is above the head, [`AppError::Conflict`] if a
/// different block is committed there. Every engine's finalisation starts with this.
#[allow(clippy::result_large_err)] // once per block, on a cold path: size does not matter
pub fn already_committed(chain: &Chain, block: &Block) -> Result<bool, AppError> {
    let height = block.header.height;
    if height > chain.head().height {
        return Ok(false);
    }
    if height < chain.store().kept_from().map_err(ChainError::from)? {
        // Committed long ago and pruned since (the node keeps a window of blocks): final, and
        // nothing here to compare it with.
        return Ok(true);
    }
    let committed = chain
        .store()
        .header(height)
        .map_err(ChainError::from)?
        .map(|h| h.hash())
        .unwrap_or_default();
    if committed == block.hash() {
        Ok(true)
    } else {
        Err(AppError::Conflict { height, committed })
    }
}

/// What block ordering needs from the state machine.
pub trait Application: Send {
    /// Builds the next block from pending transactions, stamped `timestamp_ms` (raised if needed to
    /// follow the parent), proposed by `proposer`.
    fn propose(&mut self, timestamp_ms: u64, proposer: Address) -> Result<Block, AppError>;
    /// Re-executes a block proposed elsewhere and checks it; changes nothing.
    fn verify(&mut self, block: &Block) -> Result<(), AppError>;
    /// Durably applies a finalised block; idempotent for blocks already applied.
    fn finalize(&mut self, block: &Block) -> Result<Finalized, AppError>;
    /// Whether any transaction waits for a block.
    fn has_pending(&self) -> bool;
    /// Whether a block at `now_ms` has work even without transactions (a market gate closing, a
    /// settlement falling due).
    fn has_due_work(&self, _now_ms: u64) -> bool {
        false
    }
    /// Height and hash of the last applied block.
    fn head(&self) -> (u64, Hash32);
}

/// The ledger as an [`Application`]: the chain and mempool are shared with the node's API.
pub struct LedgerApp {
    chain: Arc<RwLock<Chain>>,
    mempool: Arc<Mutex<Mempool>>,
    max_block_txs: usize,
    /// The execution of the last block this replica proposed or verified, reused on finalisation.
    cached: Option<Executed>,
}

impl LedgerApp {
    pub fn new(
        chain: Arc<RwLock<Chain>>,
        mempool: Arc<Mutex<Mempool>>,
        max_block_txs: usize,
    ) -> Self {
        LedgerApp {
            chain,
            mempool,
            max_block_txs,
            cached: None,
        }
    }
}

impl Application for LedgerApp {
    fn propose(&mut self, timestamp_ms: u64, proposer: Address) -> Result<Block, AppError> {
        let t0 = std::time::Instant::now();
        let chain = self.chain.read().expect("chain lock poisoned");
        let candidates = self
            .mempool
            .lock()
            .expect("mempool lock poisoned")
            .select(|a| chain.account(a), self.max_block_txs);
        let t1 = std::time::Instant::now();
        let built = chain.build_block(candidates, timestamp_ms, proposer);
        drop(chain);
        tracing::debug!(
            select_ms = (t1 - t0).as_millis() as u64,
            build_ms = t1.elapsed().as_millis() as u64,
            "proposed"
        );
        if !built.rejected.is_empty() {
            let mut mp = self.mempool.lock().expect("mempool lock poisoned");
            for (hash, why) in &built.rejected {
                tracing::debug!(%hash, %why, "dropping transaction that no longer applies");
                mp.reject(hash, why.to_string());
            }
        }
        self.cached = Some(built.executed);
        Ok(built.block)
    }

    fn verify(&mut self, block: &Block) -> Result<(), AppError> {
        let executed = self
            .chain
            .read()
            .expect("chain lock poisoned")
            .verify_block(block)?;
        self.cached = Some(executed);
        Ok(())
    }

    fn finalize(&mut self, block: &Block) -> Result<Finalized, AppError> {
        let hash = block.hash();
        let info = |newly_applied, commit_time, index_time| Finalized {
            height: block.header.height,
            hash,
            tx_count: block.header.tx_count,
            timestamp_ms: block.header.timestamp_ms,
            newly_applied,
            commit_time,
            index_time,
        };
        // Only the engine's thread writes the chain, so the head cannot move between the read
        // (persist, while API readers and admission go on) and the short write (apply).
        let chain = self.chain.read().expect("chain lock poisoned");
        if already_committed(&chain, block)? {
            return Ok(info(false, Default::default(), Default::default()));
        }
        let executed = match self.cached.take() {
            Some(ex) if ex.block_hash == hash => ex,
            _ => chain.verify_block(block)?,
        };
        let t0 = std::time::Instant::now();
        chain.persist(block, &executed)?;
        drop(chain);
        let t1 = std::time::Instant::now();
        let hashes: Vec<Hash32> = executed.receipts.iter().map(|r| r.tx_hash).collect();
        self.chain
            .write()
            .expect("chain lock poisoned")
            .apply(block, executed);
        let t2 = std::time::Instant::now();
        let chain = self.chain.read().expect("chain lock poisoned");
        // Index before the transactions leave the mempool, so a client polling by hash sees
        // `pending` until it sees `committed`, never `unknown` in between.
        chain
            .index(block.header.height, &hashes)
            .map_err(|source| AppError::IndexFailed {
                height: block.header.height,
                source,
            })?;
        let t3 = std::time::Instant::now();
        let senders: std::collections::BTreeSet<Address> =
            block.txs.iter().map(|t| t.body.sender).collect();
        self.mempool
            .lock()
            .expect("mempool lock poisoned")
            .revalidate(senders.iter(), |a| chain.account(a), block.header.height);
        tracing::debug!(
            persist_ms = (t1 - t0).as_millis() as u64,
            apply_ms = (t2 - t1).as_millis() as u64,
            index_ms = (t3 - t2).as_millis() as u64,
            "committed"
        );
        Ok(info(true, t2 - t0, t3 - t2))
    }

    fn has_due_work(&self, now_ms: u64) -> bool {
        let chain = self.chain.read().expect("chain lock poisoned");
        gridmesh_ledger::dispatch::next_due_ms(chain.state()).is_some_and(|due| due <= now_ms)
    }

    fn has_pending(&self) -> bool {
        !self
            .mempool
            .lock()
            .expect("mempool lock poisoned")
            .is_empty()
    }

    fn head(&self) -> (u64, Hash32) {
        let chain = self.chain.read().expect("chain lock poisoned");
        (chain.head().height, chain.head_hash())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gridmesh_ledger::{Genesis, Keypair, MempoolConfig, SignedTx};
    use gridmesh_types::Amount;

    fn app(dir: &std::path::Path, faucet: &Keypair) -> LedgerApp {
        let genesis = Genesis::dev(faucet.address());
        let chain = Chain::open(dir, &genesis).unwrap();
        let mempool = Mempool::new(chain.chain_id(), MempoolConfig::default());
        LedgerApp::new(
            Arc::new(RwLock::new(chain)),
            Arc::new(Mutex::new(mempool)),
            10_000,
        )
    }

    #[test]
    fn propose_verify_finalize_and_redelivery_is_idempotent() {
        let faucet = Keypair::from_seed([7; 32]);
        let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let mut leader = app(d1.path(), &faucet);
        let mut follower = app(d2.path(), &faucet);
        for n in 0..5 {
            let tx = SignedTx::transfer(&faucet, "gridmesh-dev", n, Address([1; 32]), Amount(10))
                .verify()
                .unwrap();
            let acc = leader.chain.read().unwrap().account(&faucet.address());
            leader.mempool.lock().unwrap().insert(tx, acc).unwrap();
        }
        let block = leader.propose(1_000, faucet.address()).unwrap();
        assert_eq!(block.txs.len(), 5);
        follower.verify(&block).unwrap();
        let a = leader.finalize(&block).unwrap();
        let b = follower.finalize(&block).unwrap();
        assert!(a.newly_applied && b.newly_applied);
        assert_eq!(leader.head(), follower.head());
        assert!(
            !leader.has_pending(),
            "committed transactions leave the mempool"
        );
        // Redelivery after a restart: acknowledged, not applied twice.
        let again = follower.finalize(&block).unwrap();
        assert!(!again.newly_applied);
        assert_eq!(
            follower
                .chain
                .read()
                .unwrap()
                .account(&Address([1; 32]))
                .balance,
            Amount(50)
        );
        // A different block at a committed height is a conflict.
        let mut other = block.clone();
        other.header.timestamp_ms += 1;
        assert!(matches!(
            follower.finalize(&other),
            Err(AppError::Conflict { .. })
        ));
    }
}
