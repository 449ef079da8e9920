//! The ledger as the application of the simplex engine.
//!
//! Simplex asks a replica to propose on, and to verify against, parents that are *notarized but
//! not final*. A [`Replica`] therefore keeps, beside the committed chain, every block it executed
//! that is not final yet, each with the state it leads to (cloning a [`State`] shares its buckets,
//! so this costs O(buckets) per block, not O(accounts)). A parent it has not executed (after a
//! restart, say) is executed from the ancestry marshal provides, back to the committed head.
//!
//! Finalised blocks arrive from marshal in height order, at least once ([`Finalizer`]); applying
//! one is idempotent, exactly as in the solo engine: a block at or below the committed head is
//! acknowledged without being applied again, after checking it is the block committed there.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, UNIX_EPOCH};

use commonware_consensus::marshal::ancestry::Ancestry;
use commonware_consensus::marshal::Update;
use commonware_consensus::simplex::types::Context;
use commonware_consensus::{Application, Reporter};
use commonware_cryptography::{blake3, ed25519, Digested};
use commonware_runtime::{Clock, Metrics, Spawner};
use commonware_utils::Acknowledgement;
use futures::channel::mpsc;
use futures::StreamExt;
use gridmesh_consensus::{already_committed, AppError, Finalized};
use gridmesh_ledger::chain::Executed;
use gridmesh_ledger::{Block, BlockError, BlockHeader, Chain, Mempool, Parent, State};
use gridmesh_types::{Address, Hash32};

use crate::block::{digest_of, BftBlock, MAX_BFT_BLOCK_TXS};

/// How far ahead of a validator's clock a proposal's timestamp may be before it waits to vote.
pub const MAX_CLOCK_DRIFT: Duration = Duration::from_secs(2);

/// Most blocks a replica executes speculatively beyond its committed head. Simplex keeps at most a
/// few notarized blocks in flight, so hitting this means the replica is far behind: it then
/// declines to propose or vote until marshal has delivered the finalised blocks.
pub const MAX_SPECULATIVE: usize = 256;

/// Most executed-but-not-final blocks a replica keeps (on all branches together).
pub const MAX_SPECULATIVE_BLOCKS: usize = 1024;

/// What a validator does when it proposes. Anything but [`Behaviour::Honest`] is fault injection
/// for tests: it shows that honest validators reject such blocks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Behaviour {
    #[default]
    Honest,
    /// Proposes blocks whose header claims a wrong state root.
    WrongStateRoot,
    /// Appends a correctly signed transfer that overdraws its sender.
    InvalidTransaction,
}

/// A block executed on top of its parent, not final yet.
struct Speculative {
    header: BlockHeader,
    state: State,
    executed: Arc<Executed>,
}

/// Counters a validator keeps about consensus (exposed by the node and read by tests).
#[derive(Debug, Default)]
pub struct ReplicaStats {
    pub proposed: AtomicU64,
    pub verified: AtomicU64,
    /// Proposals this replica voted against as invalid (wrong root, invalid transaction, wrong
    /// proposer...).
    pub rejected: AtomicU64,
    /// Proposals it voted against because their parent was overtaken (stale, not invalid).
    pub stale: AtomicU64,
    pub finalized: AtomicU64,
    /// Peers (validators and full nodes) this node holds an authenticated connection to now.
    pub peers_connected: AtomicU64,
}

type Listener = Box<dyn Fn(&Finalized, &Block) + Send + Sync>;

/// How a replica builds blocks.
#[derive(Clone, Copy, Debug)]
pub struct ReplicaConfig {
    /// Most transactions per block (at most [`MAX_BFT_BLOCK_TXS`]).
    pub max_block_txs: usize,
    /// With an empty mempool, a leader waits this long after its parent before proposing an empty
    /// block (keeps an idle network from writing blocks as fast as consensus can agree on them;
    /// must stay below the leader timeout). A transaction arriving ends the wait at once.
    pub idle_block_interval: Duration,
    pub behaviour: Behaviour,
}

impl Default for ReplicaConfig {
    fn default() -> Self {
        ReplicaConfig {
            max_block_txs: MAX_BFT_BLOCK_TXS,
            idle_block_interval: Duration::from_millis(500),
            behaviour: Behaviour::Honest,
        }
    }
}

/// One validator's (or full node's) ledger: the committed chain, its mempool and the blocks it
/// executed that are not final yet.
pub struct Replica {
    chain: Arc<RwLock<Chain>>,
    mempool: Arc<Mutex<Mempool>>,
    speculative: Mutex<HashMap<Hash32, Speculative>>,

    cfg: ReplicaConfig,
    listeners: Mutex<Vec<Listener>>,
    fatal: Mutex<Option<String>>,
    outbox: Arc<crate::gossip::Outbox>,
    pub stats: ReplicaStats,
}

impl Replica {
    pub fn new(
        chain: Arc<RwLock<Chain>>,
        mempool: Arc<Mutex<Mempool>>,
        cfg: ReplicaConfig,
    ) -> Arc<Replica> {
        Arc::new(Replica {
            chain,
            mempool,
            speculative: Mutex::new(HashMap::new()),
            cfg: ReplicaConfig {
                max_block_txs: cfg.max_block_txs.clamp(1, MAX_BFT_BLOCK_TXS),
                ..cfg
            },
            listeners: Mutex::new(Vec::new()),
            fatal: Mutex::new(None),
            outbox: Arc::default(),
            stats: ReplicaStats::default(),
        })
    }

    pub fn chain(&self) -> &Arc<RwLock<Chain>> {
        &self.chain
    }

    pub fn mempool(&self) -> &Arc<Mutex<Mempool>> {
        &self.mempool
    }

    /// Transactions admitted here, waiting to be gossiped to the other validators.
    pub fn outbox(&self) -> Arc<crate::gossip::Outbox> {
        self.outbox.clone()
    }

    /// Calls `f` after every newly committed block (on the finaliser's task: keep it short).
    pub fn on_finalized(&self, f: impl Fn(&Finalized, &Block) + Send + Sync + 'static) {
        self.listeners
            .lock()
            .expect("listeners lock")
            .push(Box::new(f));
    }

    /// Why the replica stopped applying blocks, if it did (a bug or a broken disk: it refuses to
    /// guess).
    pub fn fatal(&self) -> Option<String> {
        self.fatal.lock().expect("fatal lock").clone()
    }

    /// The genesis block as marshal's starting point.
    pub fn genesis(&self) -> BftBlock {
        let chain = self.chain.read().expect("chain lock");
        let block = chain
            .store()
            .block(0)
            .expect("reading the genesis block")
            .expect("a chain always has its genesis block");
        BftBlock::new(block)
    }

    /// Header and state after block `hash`, if it is the committed head or executed speculatively.
    fn tip(&self, hash: Hash32) -> Option<(BlockHeader, State)> {
        let chain = self.chain.read().expect("chain lock");
        if chain.head_hash() == hash {
            return Some((chain.head().clone(), chain.state().clone()));
        }
        let spec = self.speculative.lock().expect("speculative lock");
        spec.get(&hash).map(|s| (s.header.clone(), s.state.clone()))
    }

    fn committed_height(&self) -> u64 {
        self.chain.read().expect("chain lock").head().height
    }

    fn chain_id(&self) -> String {
        self.chain
            .read()
            .expect("chain lock")
            .chain_id()
            .to_string()
    }

    /// Executes `block` on a parent and remembers the result until the block is final.
    fn execute(
        &self,
        parent: (&BlockHeader, &State),
        block: &Block,
    ) -> Result<(BlockHeader, State), BlockError> {
        let chain_id = self.chain_id();
        let p = Parent {
            header: parent.0,
            hash: parent.0.hash(),
            state: parent.1,
        };
        // Transactions this replica's mempool holds were verified on admission or gossip.
        let mempool = &self.mempool;
        let known = |h: &Hash32| mempool.lock().expect("mempool lock").contains(h);
        let executed = p.verify_block_with(&chain_id, block, &known)?;
        Ok(self.remember(parent.1, block.header.clone(), executed))
    }

    fn remember(
        &self,
        parent_state: &State,
        header: BlockHeader,
        executed: Executed,
    ) -> (BlockHeader, State) {
        let mut state = parent_state.clone();
        state.apply(executed.diff.clone());
        let hash = header.hash();
        let mut spec = self.speculative.lock().expect("speculative lock");
        // While finality stalls, views keep producing blocks at the same heights. Past the bound,
        // forget the lowest: a later proposal on it re-executes it from the ancestry.
        while spec.len() >= MAX_SPECULATIVE_BLOCKS {
            let lowest = spec
                .iter()
                .min_by_key(|(_, s)| s.header.height)
                .map(|(h, _)| *h)
                .expect("not empty");
            spec.remove(&lowest);
        }
        spec.insert(
            hash,
            Speculative {
                header: header.clone(),
                state: state.clone(),
                executed: Arc::new(executed),
            },
        );
        (header, state)
    }

    /// The header and state after `parent`, executing it and any of its ancestors this replica has
    /// not executed yet (taken from `ancestry`, which continues with `parent`'s parent). `None`
    /// when the branch does not extend the committed chain or one of its blocks is invalid.
    async fn resolve<A: Ancestry<BftBlock>>(
        &self,
        parent: Digested<BftBlock>,
        ancestry: &mut A,
    ) -> Option<(BlockHeader, State)> {
        let committed = self.committed_height();
        let mut path = Vec::new();
        let mut cur = parent;
        let mut base = loop {
            if let Some(t) = self.tip(cur.inner().hash()) {
                break t;
            }
            if cur.inner().block.header.height <= committed || path.len() >= MAX_SPECULATIVE {
                tracing::debug!(
                    height = cur.inner().block.header.height,
                    committed,
                    "parent does not extend the committed chain"
                );
                return None;
            }
            path.push(cur);
            cur = ancestry.next().await?;
        };
        for b in path.iter().rev() {
            match self.execute((&base.0, &base.1), &b.inner().block) {
                Ok(next) => base = next,
                Err(e) => {
                    tracing::warn!(height = b.inner().block.header.height, error = %e, "an ancestor does not execute");
                    return None;
                }
            }
        }
        Some(base)
    }

    /// Builds the block after `parent` (see [`Application::propose`]).
    fn build(
        &self,
        parent: (&BlockHeader, &State),
        timestamp_ms: u64,
        proposer: Address,
    ) -> BftBlock {
        let chain_id = self.chain_id();
        let candidates = self
            .mempool
            .lock()
            .expect("mempool lock")
            .select(|a| parent.1.account(a), self.cfg.max_block_txs);
        let p = Parent {
            header: parent.0,
            hash: parent.0.hash(),
            state: parent.1,
        };
        let built = p.build_block(&chain_id, candidates, timestamp_ms, proposer);
        if !built.rejected.is_empty()
            && p.hash == self.chain.read().expect("chain lock").head_hash()
        {
            // On the committed head, a transaction that does not apply never will.
            let mut mp = self.mempool.lock().expect("mempool lock");
            for (hash, why) in &built.rejected {
                tracing::debug!(%hash, %why, "dropping transaction that no longer applies");
                mp.reject(hash, why.to_string());
            }
        }
        let mut block = built.block;
        match self.cfg.behaviour {
            Behaviour::Honest => {
                self.remember(parent.1, block.header.clone(), built.executed);
            }
            Behaviour::WrongStateRoot => {
                block.header.state_root.0[0] ^= 1;
            }
            Behaviour::InvalidTransaction => {
                let thief = gridmesh_ledger::Keypair::from_seed([0xEE; 32]);
                let tx = gridmesh_ledger::SignedTx::transfer(
                    &thief,
                    &chain_id,
                    0,
                    proposer,
                    gridmesh_types::Amount::from_tokens(1_000_000),
                );
                block.txs.push(tx);
                let hashes: Vec<Hash32> = block.txs.iter().map(|t| t.hash()).collect();
                block.header.tx_root = gridmesh_ledger::block::tx_root(&hashes);
                block.header.tx_count = block.txs.len() as u32;
            }
        }
        BftBlock::new(block)
    }

    /// Durably applies a finalised block; idempotent (see the module docs).
    #[allow(clippy::result_large_err)] // once per block, on a cold path: size does not matter
    pub fn finalize(&self, block: &Block) -> Result<Finalized, AppError> {
        let hash = block.hash();
        let height = block.header.height;
        let info = |newly_applied, commit_time| Finalized {
            height,
            hash,
            tx_count: block.header.tx_count,
            timestamp_ms: block.header.timestamp_ms,
            newly_applied,
            commit_time,
            index_time: Duration::ZERO,
        };
        let chain = self.chain.read().expect("chain lock");
        if already_committed(&chain, block)? {
            return Ok(info(false, Duration::ZERO));
        }
        let t0 = std::time::Instant::now();
        // The speculative entry stays until the block is applied: a replica verifying a child
        // meanwhile must find the parent's state either here or as the committed head.
        let cached = self
            .speculative
            .lock()
            .expect("speculative lock")
            .get(&hash)
            .filter(|s| s.header.parent_hash == chain.head_hash())
            .map(|s| s.executed.clone());
        let executed = match cached {
            Some(e) => e,
            // Not executed here yet (caught up through block sync). A quorum of validators
            // checked its signatures before finalising it; batch verification is randomised and
            // could, on a crafted signature, disagree with theirs and halt this replica, so only
            // execution and the roots are checked again.
            None => Arc::new(
                chain
                    .parent()
                    .verify_block_with(chain.chain_id(), block, &|_| true)?,
            ),
        };
        chain.persist(block, &executed)?;
        drop(chain);
        let hashes: Vec<Hash32> = executed.receipts.iter().map(|r| r.tx_hash).collect();
        {
            let mut chain = self.chain.write().expect("chain lock");
            // Blocks at or below a final height can no longer be built on.
            self.speculative
                .lock()
                .expect("speculative lock")
                .retain(|_, s| s.header.height > height);
            let executed = Arc::try_unwrap(executed).unwrap_or_else(|shared| (*shared).clone());
            chain.apply(block, executed);
        }
        let commit_time = t0.elapsed();
        let chain = self.chain.read().expect("chain lock");
        chain
            .index(height, &hashes)
            .map_err(|source| AppError::IndexFailed { height, source })?;
        let senders: BTreeSet<Address> = block.txs.iter().map(|t| t.body.sender).collect();
        let ready = self.mempool.lock().expect("mempool lock").revalidate(
            senders.iter(),
            |a| chain.account(a),
            height,
        );
        drop(chain);
        // Transactions that waited here for a nonce another validator held are ready now.
        self.outbox.push(ready.iter().map(|t| t.tx()));
        self.stats.finalized.fetch_add(1, Ordering::Relaxed);
        let f = info(true, commit_time);
        for l in self.listeners.lock().expect("listeners lock").iter() {
            l(&f, block);
        }
        Ok(f)
    }
}

fn now_ms(clock: &impl Clock) -> u64 {
    clock
        .current()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}

/// The consensus signer of a validator key file's key (the same ed25519 key).
pub fn consensus_signer(key: &gridmesh_ledger::Keypair) -> ed25519::PrivateKey {
    use commonware_codec::DecodeExt as _;
    ed25519::PrivateKey::decode(key.secret_seed().to_vec()).expect("a 32-byte seed is a key")
}

/// The consensus public key of an address.
pub fn public_key_of(address: &Address) -> Option<ed25519::PublicKey> {
    use commonware_codec::DecodeExt as _;
    ed25519::PublicKey::decode(address.0.to_vec()).ok()
}

/// The address of a consensus public key (both are the 32-byte ed25519 key).
pub fn address_of(key: &ed25519::PublicKey) -> Address {
    let bytes: &[u8] = key.as_ref();
    Address(bytes.try_into().expect("ed25519 public keys are 32 bytes"))
}

/// The [`Application`] handed to marshal's inline-verification wrapper. Cheap to clone.
#[derive(Clone)]
pub struct LedgerApplication {
    replica: Arc<Replica>,
}

impl LedgerApplication {
    pub fn new(replica: Arc<Replica>) -> Self {
        LedgerApplication { replica }
    }
}

type Ctx = Context<blake3::Digest, ed25519::PublicKey>;

impl<E> Application<E> for LedgerApplication
where
    E: Clock + Spawner + Metrics,
{
    type SigningScheme = commonware_consensus::simplex::scheme::ed25519::Scheme;
    type Context = Ctx;
    type Block = BftBlock;
    type Input = ();

    async fn propose(
        &mut self,
        (clock, context): (E, Ctx),
        ancestry: impl Ancestry<BftBlock>,
        _input: (),
    ) -> Option<Digested<BftBlock>> {
        let mut ancestry = ancestry;
        let parent = ancestry.next().await?;
        let (header, state) = self.replica.resolve(parent, &mut ancestry).await?;
        // Idle: wait (briefly) for a transaction rather than write an empty block at once.
        let idle_until =
            header.timestamp_ms + self.replica.cfg.idle_block_interval.as_millis() as u64;
        while self
            .replica
            .mempool
            .lock()
            .expect("mempool lock")
            .is_empty()
            && now_ms(&clock) < idle_until
        {
            clock.sleep(Duration::from_millis(5)).await;
        }
        let proposer = address_of(&context.leader);
        let block = self
            .replica
            .build((&header, &state), now_ms(&clock), proposer);
        self.replica.stats.proposed.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(
            height = block.block.header.height,
            txs = block.block.txs.len(),
            round = %context.round,
            node = ?clock.name(),
            "proposed"
        );
        let digest = digest_of(block.hash());
        Some(Digested::precomputed(block, digest))
    }

    async fn verify(
        &mut self,
        (clock, context): (E, Ctx),
        ancestry: impl Ancestry<BftBlock>,
    ) -> bool {
        tracing::trace!(round = %context.round, node = ?clock.name(), "verify requested");
        let mut ancestry = ancestry;
        let Some(block) = ancestry.next().await else {
            return false;
        };
        let Some(parent) = ancestry.next().await else {
            return false;
        };
        let reject = |why: &dyn std::fmt::Display| {
            tracing::warn!(
                height = block.inner().block.header.height,
                proposer = %address_of(&context.leader),
                round = %context.round,
                %why,
                "voting against proposal"
            );
            self.replica.stats.rejected.fetch_add(1, Ordering::Relaxed);
            false
        };
        let header = &block.inner().block.header;
        if header.proposer != address_of(&context.leader) {
            return reject(&format!(
                "block names proposer {} but the round's leader is {}",
                header.proposer,
                address_of(&context.leader)
            ));
        }
        let Some((ph, ps)) = self.replica.resolve(parent, &mut ancestry).await else {
            // Usually a stale proposal: its parent was overtaken by a finalised sibling.
            tracing::debug!(
                height = header.height,
                round = %context.round,
                node = ?clock.name(),
                "voting against a proposal whose parent does not extend the committed chain"
            );
            self.replica.stats.stale.fetch_add(1, Ordering::Relaxed);
            return false;
        };
        // A proposal from the future waits (the view times out if it waits too long); the
        // state machine itself only sees the timestamp.
        let ahead = header.timestamp_ms.saturating_sub(now_ms(&clock));
        if ahead > MAX_CLOCK_DRIFT.as_millis() as u64 {
            clock
                .sleep(Duration::from_millis(ahead) - MAX_CLOCK_DRIFT)
                .await;
        }
        match self.replica.execute((&ph, &ps), &block.inner().block) {
            Ok(_) => {
                self.replica.stats.verified.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(height = header.height, round = %context.round, node = ?clock.name(), "verified");
                true
            }
            Err(e) => reject(&e),
        }
    }
}

/// Receives finalised blocks from marshal and applies them on its own task, in order; acknowledges
/// each once it is durable. On an error it stops acknowledging (marshal then stops delivering) and
/// records why in [`Replica::fatal`].
#[derive(Clone)]
pub struct Finalizer {
    tx: mpsc::UnboundedSender<(Digested<BftBlock>, commonware_utils::acknowledgement::Exact)>,
}

/// Called with each newly applied height (the engine prunes its archives from it).
pub type Prune = Box<dyn Fn(u64) + Send>;

impl Finalizer {
    /// Starts the applying task on `context`; `prune` hears of every block newly applied.
    pub fn start<E: Spawner>(context: E, replica: Arc<Replica>, prune: Option<Prune>) -> Self {
        let (tx, mut rx) =
            mpsc::unbounded::<(Digested<BftBlock>, commonware_utils::acknowledgement::Exact)>();
        context.shared(true).spawn(move |_| async move {
            while let Some((block, ack)) = rx.next().await {
                match replica.finalize(&block.inner().block) {
                    Ok(f) => {
                        if f.newly_applied {
                            tracing::debug!(height = f.height, txs = f.tx_count, "finalized");
                            if let Some(prune) = &prune {
                                prune(f.height);
                            }
                        }
                        ack.acknowledge();
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "cannot apply a finalised block; stopping");
                        *replica.fatal.lock().expect("fatal lock") = Some(e.to_string());
                        return;
                    }
                }
            }
        });
        Finalizer { tx }
    }
}

impl Reporter for Finalizer {
    type Activity = Update<BftBlock>;

    fn report(&mut self, activity: Self::Activity) -> commonware_actor::Feedback {
        if let Update::Block(block, ack) = activity {
            if self.tx.unbounded_send((block, ack)).is_err() {
                return commonware_actor::Feedback::Closed;
            }
        }
        commonware_actor::Feedback::Ok
    }
}
