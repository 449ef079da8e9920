//! The chain: durable store, in-memory state and head, and the rules that build, check and commit
//! blocks.

use std::path::Path;

use gridmesh_types::{Address, Hash32};

use crate::block::{tx_root, Block, BlockHeader, Receipt, MAX_BLOCK_TXS};
use crate::crypto::{Parallelism, SignatureError};
use crate::dispatch::BlockExecution;
use crate::error::TxError;
use crate::genesis::{Genesis, GenesisError};
use crate::state::{Account, State, StateDiff, TxContext};
use crate::store::{Store, StoreError};
use crate::tx::{verify_signatures, DecodeError, SignedTx, TxBody, UnsignedTx, VerifiedTx};

#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Genesis(#[from] GenesisError),
    #[error("the data directory holds chain {stored_chain:?} with genesis {stored}, not the given genesis {given} of chain {given_chain:?}")]
    GenesisMismatch {
        stored_chain: String,
        stored: Hash32,
        given_chain: String,
        given: Hash32,
    },
    #[error("block {0} is missing from the store")]
    MissingBlock(u64),
    #[error(
        "{dir} held chain {chain_id:?} (genesis {genesis}), but its chain.redb holds no chain: it \
         is missing, empty or was replaced. Starting here would begin a new chain and lose every \
         block, balance and reading of that one. Restore chain.redb from a backup (stop the \
         node, copy the file into {dir}, start again); only to begin a new chain here on \
         purpose, remove {marker} first"
    )]
    ChainLost {
        dir: String,
        chain_id: String,
        genesis: Hash32,
        marker: String,
    },
    #[error("stored state does not match block {height}: its header commits to {expected}, the stored accounts hash to {computed}")]
    StateMismatch {
        height: u64,
        expected: Hash32,
        computed: Hash32,
    },
    #[error(
        "block {got} does not extend the head (expected height {expected} on parent {parent})"
    )]
    NotNext {
        expected: u64,
        got: u64,
        parent: Hash32,
    },
}

/// Why a proposed block is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlockError {
    #[error("block height {got}, expected {expected}")]
    WrongHeight { expected: u64, got: u64 },
    #[error("block parent {got} is not the head {expected}")]
    WrongParent { expected: Hash32, got: Hash32 },
    #[error("block timestamp {got} ms is not after its parent's {parent} ms")]
    TimestampNotAfterParent { parent: u64, got: u64 },
    #[error("block holds {0} transactions, more than {MAX_BLOCK_TXS}")]
    TooManyTxs(usize),
    #[error("header says {header} transactions, the block holds {actual}")]
    TxCountMismatch { header: u32, actual: usize },
    #[error("transaction {index}: {error}")]
    TxForm { index: usize, error: DecodeError },
    #[error("transaction {index}: {error}")]
    Signature { index: usize, error: SignatureError },
    #[error("transaction {index}: {error}")]
    Tx { index: usize, error: TxError },
    #[error("transaction root {got} does not match the transactions ({expected})")]
    TxRootMismatch { expected: Hash32, got: Hash32 },
    #[error("state root {got} does not match execution ({expected})")]
    StateRootMismatch { expected: Hash32, got: Hash32 },
}

/// The result of executing a block against the head state, ready to commit.
#[derive(Clone, Debug)]
pub struct Executed {
    pub block_hash: Hash32,
    pub diff: StateDiff,
    pub receipts: Vec<Receipt>,
}

/// How a block takes the signatures of the device readings its transactions carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceSignatures {
    /// Every reading's signature is checked (batch-verified with the block's, or one by one):
    /// every block a node builds or checks.
    Checked,
    /// The caller vouches for the readings as for the unsigned transactions that carry them
    /// ([`Parent::rehearse`] only): an in-memory chain whose devices are simulated, where
    /// signing and verifying them would measure ed25519, not the community.
    Vouched,
}

/// A block executed from unsigned candidates ([`Parent::rehearse`]): its header and state
/// changes, without the block itself.
#[derive(Debug)]
pub struct Rehearsal {
    pub header: BlockHeader,
    pub executed: Executed,
    /// Candidates that could not be applied (with why).
    pub rejected: Vec<(Hash32, TxError)>,
}

/// A block built from candidate transactions.
#[derive(Debug)]
pub struct Built {
    pub block: Block,
    pub executed: Executed,
    /// Candidates that could not be applied (with why), so the mempool can drop them.
    pub rejected: Vec<(Hash32, TxError)>,
}

/// The file in a data directory that says which chain it holds (written when the chain is first
/// opened there; see [`Chain::open`]).
pub const CHAIN_MARKER: &str = "chain.marker";

/// What [`CHAIN_MARKER`] says.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Marker {
    chain_id: String,
    genesis: Hash32,
}

impl Marker {
    /// The marker in `dir`, if there is one that reads as one.
    fn read(dir: &Path) -> Option<Marker> {
        let text = std::fs::read_to_string(dir.join(CHAIN_MARKER)).ok()?;
        let field = |key: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(key)?.trim().strip_prefix('='))
                .map(|v| v.trim().trim_matches('"').to_string())
        };
        let mut genesis = [0u8; 32];
        hex::decode_to_slice(field("genesis_hash")?, &mut genesis).ok()?;
        Some(Marker {
            chain_id: field("chain_id")?,
            genesis: Hash32(genesis),
        })
    }

    fn write(&self, dir: &Path) -> std::io::Result<()> {
        let text = format!(
            "# This data directory holds the chain below. If chain.redb goes missing or empty,\n\
             # the node refuses to start a new chain here: restore chain.redb from a backup.\n\
             chain_id = \"{}\"\ngenesis_hash = \"{}\"\n",
            self.chain_id,
            hex::encode(self.genesis.0)
        );
        let tmp = dir.join(format!("{CHAIN_MARKER}.tmp"));
        std::fs::write(&tmp, text)?;
        std::fs::File::open(&tmp)?.sync_all()?;
        std::fs::rename(&tmp, dir.join(CHAIN_MARKER))
    }
}

pub struct Chain {
    store: Store,
    state: State,
    head: BlockHeader,
    head_hash: Hash32,
    chain_id: String,
    genesis_hash: Hash32,
    /// How many blocks the store keeps ([`Chain::set_retention`]).
    retention: crate::store::Retention,
}

impl Chain {
    /// Opens the chain in `dir` (see [`Store::open`]), creating it from `genesis` if new. On an existing
    /// chain, checks the genesis matches and that the stored state hashes to the head's state root.
    ///
    /// A directory that once held a chain says so in [`CHAIN_MARKER`]: with that file there and
    /// no chain in `chain.redb` (deleted, truncated, replaced by an empty one) it refuses to
    /// start, rather than beginning a new chain over the lost one ([`ChainError::ChainLost`]).
    pub fn open(dir: &Path, genesis: &Genesis) -> Result<Chain, ChainError> {
        let marker = Marker::read(dir);
        let chain_file = dir.join("chain.redb");
        let lost = |m: Marker| ChainError::ChainLost {
            dir: dir.display().to_string(),
            chain_id: m.chain_id,
            genesis: m.genesis,
            marker: dir.join(CHAIN_MARKER).display().to_string(),
        };
        if let Some(m) = &marker {
            // Checked before the store would create an empty database in its place.
            if std::fs::metadata(&chain_file).map_or(true, |f| f.len() == 0) {
                return Err(lost(m.clone()));
            }
        }
        let store = Store::open(dir)?;
        let (genesis_block, genesis_state) = genesis.block()?;
        let given = genesis_block.hash();
        let meta = match (store.meta()?, marker.clone()) {
            (Some(m), _) => m,
            (None, Some(m)) => return Err(lost(m)),
            (None, None) => {
                store.init_genesis(&genesis.chain_id, &genesis_block, &genesis_state)?;
                store.meta()?.expect("genesis was just written")
            }
        };
        if meta.genesis_hash != given || meta.chain_id != genesis.chain_id {
            return Err(ChainError::GenesisMismatch {
                stored_chain: meta.chain_id,
                stored: meta.genesis_hash,
                given_chain: genesis.chain_id.clone(),
                given,
            });
        }
        if marker.is_none() {
            Marker {
                chain_id: meta.chain_id.clone(),
                genesis: meta.genesis_hash,
            }
            .write(dir)
            .map_err(|e| StoreError::Corrupt(format!("writing {CHAIN_MARKER}: {e}")))?;
        }
        store.claim_index(meta.genesis_hash)?;
        let head = store
            .header(meta.head_height)?
            .ok_or(ChainError::MissingBlock(meta.head_height))?;
        // Pruned blocks cannot be indexed again (a rebuilt index starts at the oldest kept).
        let indexed = store.indexed_height()?;
        for height in (indexed + 1).max(store.kept_from()?)..=head.height {
            let block = store
                .block(height)?
                .ok_or(ChainError::MissingBlock(height))?;
            let hashes: Vec<Hash32> = block.txs.iter().map(|t| t.hash()).collect();
            store.index_block(height, &hashes)?;
            tracing::info!(
                height,
                "re-indexed transactions of a block committed before a crash"
            );
        }
        let state = State::from_parts(store.load_accounts()?, store.load_kv()?);
        if state.root() != head.state_root {
            return Err(ChainError::StateMismatch {
                height: head.height,
                expected: head.state_root,
                computed: state.root(),
            });
        }
        Ok(Chain {
            head_hash: head.hash(),
            store,
            state,
            head,
            chain_id: genesis.chain_id.clone(),
            genesis_hash: given,
            retention: crate::store::Retention::All,
        })
    }

    pub fn chain_id(&self) -> &str {
        &self.chain_id
    }

    pub fn genesis_hash(&self) -> Hash32 {
        self.genesis_hash
    }

    pub fn head(&self) -> &BlockHeader {
        &self.head
    }

    pub fn head_hash(&self) -> Hash32 {
        self.head_hash
    }

    pub fn state(&self) -> &State {
        &self.state
    }

    pub fn account(&self, address: &Address) -> Account {
        self.state.account(address)
    }

    /// A read handle for blocks, receipts and the transaction index (usable without the chain).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The head as a parent to build on or verify against.
    pub fn parent(&self) -> Parent<'_> {
        Parent {
            header: &self.head,
            hash: self.head_hash,
            state: &self.state,
        }
    }

    /// Builds the next block on the head (see [`Parent::build_block`]).
    pub fn build_block(
        &self,
        candidates: impl IntoIterator<Item = VerifiedTx>,
        timestamp_ms: u64,
        proposer: Address,
    ) -> Built {
        self.parent()
            .build_block(&self.chain_id, candidates, timestamp_ms, proposer)
    }

    /// Checks a block that should extend the head (see [`Parent::verify_block`]).
    pub fn verify_block(&self, block: &Block) -> Result<Executed, BlockError> {
        self.parent().verify_block(&self.chain_id, block)
    }

    /// Durably commits an executed block (one redb transaction), applies it in memory and indexes
    /// its transactions.
    pub fn commit(&mut self, block: &Block, executed: Executed) -> Result<(), ChainError> {
        self.persist(block, &executed)?;
        let hashes: Vec<Hash32> = executed.receipts.iter().map(|r| r.tx_hash).collect();
        self.apply(block, executed);
        self.index(block.header.height, &hashes)
    }

    /// Writes the transaction index for a block already persisted (see [`Store::index_block`]).
    pub fn index(&self, height: u64, tx_hashes: &[Hash32]) -> Result<(), ChainError> {
        Ok(self.store.index_block(height, tx_hashes)?)
    }

    /// Keeps only the last blocks from now on (see [`crate::store::Retention`]); every block by
    /// default.
    pub fn set_retention(&mut self, retention: crate::store::Retention) {
        self.retention = retention;
    }

    /// The durable half of [`Chain::commit`]: writes the block, receipts, transaction index and
    /// state changes in one redb transaction. Takes `&self` so that readers (and mempool admission)
    /// are not blocked while the disk syncs; [`Chain::apply`] must follow before the next block.
    pub fn persist(&self, block: &Block, executed: &Executed) -> Result<(), ChainError> {
        if block.header.height != self.head.height + 1 || block.header.parent_hash != self.head_hash
        {
            return Err(ChainError::NotNext {
                expected: self.head.height + 1,
                got: block.header.height,
                parent: self.head_hash,
            });
        }
        debug_assert_eq!(executed.block_hash, block.hash());
        self.store
            .commit_block(block, &executed.receipts, &executed.diff, self.retention)?;
        Ok(())
    }

    /// The in-memory half of [`Chain::commit`], after [`Chain::persist`] succeeded for this block.
    pub fn apply(&mut self, block: &Block, executed: Executed) {
        assert_eq!(
            block.header.height,
            self.head.height + 1,
            "applying a block out of order"
        );
        self.state.apply(executed.diff);
        assert_eq!(
            self.state.root(),
            block.header.state_root,
            "committed state diverged from the block's state root"
        );
        self.head = block.header.clone();
        self.head_hash = executed.block_hash;
    }
}

/// A block to build on or verify against: its header, its hash and the state after it. The
/// committed head is one ([`Chain::parent`]); a BFT replica also builds on blocks it has executed
/// but that are not final yet, each with the state it leads to.
#[derive(Clone, Copy, Debug)]
pub struct Parent<'a> {
    pub header: &'a BlockHeader,
    pub hash: Hash32,
    pub state: &'a State,
}

impl Parent<'_> {
    /// Builds the block after this parent from `candidates` in order, skipping those that do not apply.
    /// The timestamp is raised to one millisecond after the parent's if needed.
    pub fn build_block(
        &self,
        chain_id: &str,
        candidates: impl IntoIterator<Item = VerifiedTx>,
        timestamp_ms: u64,
        proposer: Address,
    ) -> Built {
        let mut txs = Vec::new();
        let run = self.execute(
            chain_id,
            candidates,
            timestamp_ms,
            proposer,
            DeviceSignatures::Checked,
            |tx: &VerifiedTx| (&tx.tx().body, tx.hash()),
            |tx| txs.push(tx.into_tx()),
        );
        Built {
            block: Block {
                header: run.header,
                txs,
            },
            executed: run.executed,
            rejected: run.rejected,
        }
    }

    /// Executes the block after this parent from transactions nobody signed (an in-memory chain
    /// of simulated members, see [`UnsignedTx`]) exactly as [`Parent::build_block`] would, and
    /// returns the header and state changes, but no [`Block`]: what it yields can be applied to
    /// an in-memory [`State`], never committed to a [`Chain`] or sent to a replica.
    ///
    /// `devices` says whether the device readings those transactions carry are checked
    /// against their devices' signatures, as in any block, or vouched for like the
    /// transactions themselves.
    pub fn rehearse(
        &self,
        chain_id: &str,
        candidates: impl IntoIterator<Item = UnsignedTx>,
        timestamp_ms: u64,
        proposer: Address,
        devices: DeviceSignatures,
    ) -> Rehearsal {
        self.execute(
            chain_id,
            candidates,
            timestamp_ms,
            proposer,
            devices,
            |tx: &UnsignedTx| (tx.body(), tx.hash()),
            drop,
        )
    }

    /// The one block executor behind [`Parent::build_block`] and [`Parent::rehearse`]: `parts`
    /// reads a candidate's body and hash, `accepted` takes each candidate that applied, in order.
    #[allow(clippy::too_many_arguments)]
    fn execute<T>(
        &self,
        chain_id: &str,
        candidates: impl IntoIterator<Item = T>,
        timestamp_ms: u64,
        proposer: Address,
        devices: DeviceSignatures,
        parts: impl Fn(&T) -> (&TxBody, Hash32),
        mut accepted: impl FnMut(T),
    ) -> Rehearsal {
        let height = self.header.height + 1;
        let timestamp_ms = timestamp_ms.max(self.header.timestamp_ms + 1);
        let mut overlay = BlockExecution::begin(self.state, height, timestamp_ms);
        let mut hashes = Vec::new();
        let mut receipts = Vec::new();
        let mut rejected = Vec::new();
        let candidates: Vec<T> = candidates.into_iter().collect();
        let readings_verified = match devices {
            DeviceSignatures::Checked => {
                readings_verified(chain_id, candidates.iter().map(|t| parts(t).0))
            }
            DeviceSignatures::Vouched => vec![true; candidates.len()],
        };
        for (tx, readings_verified) in candidates.into_iter().zip(readings_verified) {
            if hashes.len() == MAX_BLOCK_TXS {
                break;
            }
            let index = hashes.len() as u32;
            let ctx = TxContext {
                chain_id,
                height,
                timestamp_ms,
                index,
                readings_verified,
            };
            let (body, hash) = parts(&tx);
            match overlay.apply_tx(body, &ctx) {
                Ok(events) => {
                    receipts.push(Receipt {
                        tx_hash: hash,
                        height,
                        index,
                        events,
                    });
                    hashes.push(hash);
                    accepted(tx);
                }
                Err(e) => rejected.push((hash, e)),
            }
        }
        let diff = overlay.finish();
        let header = BlockHeader {
            height,
            parent_hash: self.hash,
            timestamp_ms,
            tx_root: tx_root(&hashes),
            state_root: diff.root,
            proposer,
            tx_count: hashes.len() as u32,
        };
        let block_hash = header.hash();
        Rehearsal {
            header,
            executed: Executed {
                block_hash,
                diff,
                receipts,
            },
            rejected,
        }
    }

    /// Checks a block proposed by someone else (see [`Parent::verify_block_with`]), checking
    /// every signature.
    pub fn verify_block(&self, chain_id: &str, block: &Block) -> Result<Executed, BlockError> {
        self.verify_block_with(chain_id, block, &|_| false)
    }

    /// Checks a block proposed by someone else: it extends this parent, every transaction is well-formed,
    /// signed (batch verification) and applies, and the roots match. Changes nothing.
    /// Signatures of transactions for which `signature_checked` returns true are not checked again:
    /// a replica passes the transactions its mempool already verified (the hash covers the
    /// signature, so the same hash means the same, already valid, signature).
    pub fn verify_block_with(
        &self,
        chain_id: &str,
        block: &Block,
        signature_checked: &dyn Fn(&Hash32) -> bool,
    ) -> Result<Executed, BlockError> {
        let h = &block.header;
        if h.height != self.header.height + 1 {
            return Err(BlockError::WrongHeight {
                expected: self.header.height + 1,
                got: h.height,
            });
        }
        if h.parent_hash != self.hash {
            return Err(BlockError::WrongParent {
                expected: self.hash,
                got: h.parent_hash,
            });
        }
        if h.timestamp_ms <= self.header.timestamp_ms {
            return Err(BlockError::TimestampNotAfterParent {
                parent: self.header.timestamp_ms,
                got: h.timestamp_ms,
            });
        }
        if block.txs.len() > MAX_BLOCK_TXS {
            return Err(BlockError::TooManyTxs(block.txs.len()));
        }
        if h.tx_count as usize != block.txs.len() {
            return Err(BlockError::TxCountMismatch {
                header: h.tx_count,
                actual: block.txs.len(),
            });
        }
        for (index, tx) in block.txs.iter().enumerate() {
            tx.check_form()
                .map_err(|error| BlockError::TxForm { index, error })?;
        }
        let hashes: Vec<Hash32> = block.txs.iter().map(|t| t.hash()).collect();
        let unchecked: Vec<usize> = (0..hashes.len())
            .filter(|&i| !signature_checked(&hashes[i]))
            .collect();
        let to_check: Vec<&SignedTx> = unchecked.iter().map(|&i| &block.txs[i]).collect();
        verify_signatures(&to_check, Parallelism::AllCores).map_err(|(j, error)| {
            BlockError::Signature {
                index: unchecked[j],
                error,
            }
        })?;
        let verified: Vec<VerifiedTx> = block
            .txs
            .iter()
            .zip(&hashes)
            .map(|(t, h)| VerifiedTx::new_unchecked_with_hash(t.clone(), *h))
            .collect();
        let root = tx_root(&hashes);
        if root != h.tx_root {
            return Err(BlockError::TxRootMismatch {
                expected: root,
                got: h.tx_root,
            });
        }
        let mut overlay = BlockExecution::begin(self.state, h.height, h.timestamp_ms);
        let mut receipts = Vec::with_capacity(verified.len());
        let readings_verified = readings_verified(chain_id, verified.iter().map(|t| &t.tx().body));
        for ((index, tx), readings_verified) in verified.iter().enumerate().zip(readings_verified) {
            let ctx = TxContext {
                chain_id,
                height: h.height,
                timestamp_ms: h.timestamp_ms,
                index: index as u32,
                readings_verified,
            };
            let events = overlay
                .apply_tx(&tx.tx().body, &ctx)
                .map_err(|error| BlockError::Tx { index, error })?;
            receipts.push(Receipt {
                tx_hash: tx.hash(),
                height: h.height,
                index: index as u32,
                events,
            });
        }
        let diff = overlay.finish();
        if diff.root != h.state_root {
            return Err(BlockError::StateRootMismatch {
                expected: diff.root,
                got: h.state_root,
            });
        }
        Ok(Executed {
            block_hash: block.hash(),
            diff,
            receipts,
        })
    }
}

/// Verifies the signatures of every device reading a block's transactions carry in one batch
/// (over all cores): per transaction, whether all its readings are valid. If the batch fails, no
/// transaction is marked and each handler checks its readings one by one, naming the device at
/// fault: the outcome is the same either way, so it never changes a state root.
fn readings_verified<'b>(chain_id: &str, bodies: impl Iterator<Item = &'b TxBody>) -> Vec<bool> {
    let bodies: Vec<&TxBody> = bodies.collect();
    let messages: Vec<Vec<Vec<u8>>> = bodies
        .iter()
        .map(|b| match &b.kind {
            crate::tx::TxKind::SubmitDeviceReadings { readings } => readings
                .iter()
                .map(|r| crate::tx::device_reading_message(chain_id, r))
                .collect(),
            _ => Vec::new(),
        })
        .collect();
    let mut items = Vec::new();
    for (b, ms) in bodies.iter().zip(&messages) {
        if let crate::tx::TxKind::SubmitDeviceReadings { readings } = &b.kind {
            for (r, m) in readings.iter().zip(ms) {
                items.push(crate::crypto::SignedItem {
                    signer: r.device,
                    message: m,
                    signature: r.signature,
                });
            }
        }
    }
    let all_valid =
        !items.is_empty() && crate::crypto::verify_batch(&items, Parallelism::AllCores).is_ok();
    messages
        .iter()
        .map(|ms| all_valid && !ms.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::Keypair;
    use crate::tx::SignedTx;
    use gridmesh_types::Amount;

    fn setup() -> (tempfile::TempDir, Genesis, Keypair) {
        let dir = tempfile::tempdir().unwrap();
        let faucet = Keypair::from_seed([42; 32]);
        (dir, Genesis::dev(faucet.address()), faucet)
    }

    #[test]
    fn verification_skips_only_signatures_the_caller_checked() {
        let (dir, genesis, faucet) = setup();
        let chain = Chain::open(dir.path(), &genesis).unwrap();
        let good = SignedTx::transfer(&faucet, "gridmesh-dev", 0, Address([1; 32]), Amount(5));
        let mut forged =
            SignedTx::transfer(&faucet, "gridmesh-dev", 1, Address([2; 32]), Amount(5));
        forged.signature[0] ^= 1;
        let built = chain.build_block(
            [good.clone(), forged.clone()]
                .into_iter()
                .map(VerifiedTx::new_unchecked),
            1,
            faucet.address(),
        );
        assert_eq!(built.block.txs.len(), 2);
        // Checked in full, the forged signature is found, by its index.
        assert!(matches!(
            chain.verify_block(&built.block),
            Err(BlockError::Signature { index: 1, .. })
        ));
        // Skipping the good one still finds it; only what the caller vouches for is skipped.
        let good_hash = good.hash();
        assert!(matches!(
            chain
                .parent()
                .verify_block_with("gridmesh-dev", &built.block, &|h| *h == good_hash),
            Err(BlockError::Signature { index: 1, .. })
        ));
        let forged_hash = forged.hash();
        assert!(chain
            .parent()
            .verify_block_with("gridmesh-dev", &built.block, &|h| *h == forged_hash)
            .is_ok());
    }

    #[test]
    fn build_commit_reopen_and_replay_give_the_same_roots() {
        let (dir, genesis, faucet) = setup();
        let alice = Keypair::from_seed([1; 32]).address();
        let mut chain = Chain::open(dir.path(), &genesis).unwrap();
        let mut blocks = vec![];
        for n in 0..3u64 {
            let tx = SignedTx::transfer(&faucet, &genesis.chain_id, n, alice, Amount(1_000_000))
                .verify()
                .unwrap();
            let built = chain.build_block([tx], 1000 + n, faucet.address());
            assert!(built.rejected.is_empty());
            blocks.push(built.block.clone());
            chain.commit(&built.block, built.executed).unwrap();
        }
        assert_eq!(chain.account(&alice).balance, Amount(3_000_000));
        let root = chain.state().root();
        drop(chain);

        let chain = Chain::open(dir.path(), &genesis).unwrap();
        assert_eq!(chain.head().height, 3);
        assert_eq!(chain.state().root(), root);
        assert_eq!(chain.store().tx_count().unwrap(), 3);

        // A second replica replays the same blocks through verify_block and reaches the same roots.
        let dir2 = tempfile::tempdir().unwrap();
        let mut replica = Chain::open(dir2.path(), &genesis).unwrap();
        for b in &blocks {
            let ex = replica.verify_block(b).unwrap();
            replica.commit(b, ex).unwrap();
        }
        assert_eq!(replica.state().root(), root);
        assert_eq!(replica.head_hash(), chain.head_hash());
    }

    /// Three blocks of one transfer each: the chain and the transactions' hashes.
    fn three_blocks(dir: &Path, genesis: &Genesis, faucet: &Keypair) -> Vec<Hash32> {
        let mut chain = Chain::open(dir, genesis).unwrap();
        let alice = Keypair::from_seed([1; 32]).address();
        (0..3u64)
            .map(|n| {
                let tx = SignedTx::transfer(faucet, &genesis.chain_id, n, alice, Amount(1_000))
                    .verify()
                    .unwrap();
                let hash = tx.hash();
                let built = chain.build_block([tx], 1000 + n, faucet.address());
                chain.commit(&built.block, built.executed).unwrap();
                hash
            })
            .collect()
    }

    #[test]
    fn a_directory_that_lost_its_chain_refuses_to_start_a_new_one() {
        let (dir, genesis, faucet) = setup();
        let hashes = three_blocks(dir.path(), &genesis, &faucet);
        assert!(dir.path().join(CHAIN_MARKER).exists());
        let file = dir.path().join("chain.redb");
        // Truncated to nothing, then gone: refused, and nothing written in its place.
        std::fs::File::create(&file).unwrap();
        let err = Chain::open(dir.path(), &genesis).err().unwrap();
        assert!(matches!(err, ChainError::ChainLost { .. }), "{err}");
        assert!(err.to_string().contains("Restore chain.redb"), "{err}");
        assert_eq!(std::fs::metadata(&file).unwrap().len(), 0);
        std::fs::remove_file(&file).unwrap();
        assert!(matches!(
            Chain::open(dir.path(), &genesis),
            Err(ChainError::ChainLost { .. })
        ));
        assert!(!file.exists());
        // Begun again on purpose: the old index answers for none of the new chain.
        std::fs::remove_file(dir.path().join(CHAIN_MARKER)).unwrap();
        let chain = Chain::open(dir.path(), &genesis).unwrap();
        assert_eq!(chain.head().height, 0);
        for h in &hashes {
            assert_eq!(chain.store().tx_location(h).unwrap(), None);
        }
        assert!(dir.path().join(CHAIN_MARKER).exists());
    }

    #[test]
    fn a_damaged_or_foreign_index_is_built_again_from_the_chain() {
        let (dir, genesis, faucet) = setup();
        let hashes = three_blocks(dir.path(), &genesis, &faucet);
        let index = dir.path().join("tx_index.redb");
        let found = |chain: &Chain| -> Vec<Option<u64>> {
            hashes
                .iter()
                .map(|h| chain.store().tx_location(h).unwrap().map(|l| l.height))
                .collect()
        };
        std::fs::write(&index, b"not a database at all").unwrap();
        let chain = Chain::open(dir.path(), &genesis).unwrap();
        assert_eq!(found(&chain), vec![Some(1), Some(2), Some(3)]);
        drop(chain);
        // Another chain's index put in its place.
        let other = tempfile::tempdir().unwrap();
        let other_genesis = Genesis::dev(Keypair::from_seed([7; 32]).address());
        three_blocks(other.path(), &other_genesis, &Keypair::from_seed([7; 32]));
        std::fs::copy(other.path().join("tx_index.redb"), &index).unwrap();
        let chain = Chain::open(dir.path(), &genesis).unwrap();
        assert_eq!(found(&chain), vec![Some(1), Some(2), Some(3)]);
        assert_eq!(chain.store().tx_count().unwrap(), 3);
    }

    #[test]
    fn verify_rejects_tampered_blocks() {
        let (dir, genesis, faucet) = setup();
        let chain = Chain::open(dir.path(), &genesis).unwrap();
        let alice = Keypair::from_seed([1; 32]).address();
        let tx = SignedTx::transfer(&faucet, &genesis.chain_id, 0, alice, Amount(5))
            .verify()
            .unwrap();
        let good = chain.build_block([tx], 10, faucet.address()).block;
        assert!(chain.verify_block(&good).is_ok());

        let mut b = good.clone();
        b.header.state_root = Hash32([1; 32]);
        assert!(matches!(
            chain.verify_block(&b),
            Err(BlockError::StateRootMismatch { .. })
        ));
        let mut b = good.clone();
        b.txs[0].signature[0] ^= 1;
        assert!(matches!(
            chain.verify_block(&b),
            Err(BlockError::Signature { index: 0, .. })
        ));
        let mut b = good.clone();
        b.header.height = 5;
        assert!(matches!(
            chain.verify_block(&b),
            Err(BlockError::WrongHeight { .. })
        ));
        let mut b = good.clone();
        b.header.timestamp_ms = 0;
        assert!(matches!(
            chain.verify_block(&b),
            Err(BlockError::TimestampNotAfterParent { .. })
        ));
        // an overdraft inside a block
        let rich = SignedTx::transfer(&faucet, &genesis.chain_id, 0, alice, Amount(u128::MAX / 2));
        let mut b = good.clone();
        b.txs = vec![rich];
        assert!(chain.verify_block(&b).is_err());
    }

    #[test]
    fn a_block_committed_but_not_indexed_is_indexed_on_open() {
        let (dir, genesis, faucet) = setup();
        let mut chain = Chain::open(dir.path(), &genesis).unwrap();
        let tx = SignedTx::transfer(&faucet, &genesis.chain_id, 0, Address([5; 32]), Amount(7))
            .verify()
            .unwrap();
        let hash = tx.hash();
        let built = chain.build_block([tx], 10, faucet.address());
        // As if the process died between the block's commit and its indexing.
        chain.persist(&built.block, &built.executed).unwrap();
        chain.apply(&built.block, built.executed);
        assert_eq!(chain.store().tx_location(&hash).unwrap(), None);
        drop(chain);
        let chain = Chain::open(dir.path(), &genesis).unwrap();
        let loc = chain.store().tx_location(&hash).unwrap().unwrap();
        assert_eq!((loc.height, loc.index), (1, 0));
        assert_eq!(chain.store().indexed_height().unwrap(), 1);
    }

    #[test]
    fn wrong_genesis_is_refused() {
        let (dir, genesis, _) = setup();
        drop(Chain::open(dir.path(), &genesis).unwrap());
        let other = Genesis::dev(Address([9; 32]));
        assert!(matches!(
            Chain::open(dir.path(), &other),
            Err(ChainError::GenesisMismatch { .. })
        ));
    }
}
