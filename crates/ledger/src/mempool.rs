//! The mempool: verified transactions waiting for a block, bounded in total and per sender, and
//! priced so that a key without tokens cannot hold any of it.
//!
//! Admission checks everything that can be checked before execution and rejects with a typed
//! [`AdmissionError`]: malformed bytes, bad signatures, wrong chain id, duplicates, stale or
//! too-distant nonces, nonces already pending, and senders who cannot afford what they have pending.
//!
//! ## What a pending transaction costs (the admission price)
//! Each pending transaction locks [`MempoolConfig::deposit_per_tx`] of its sender's balance on top
//! of what it may spend (a transfer's amount, a bid's escrow): a sender with balance `B` holds at
//! most `B / deposit` transactions, and a key with no tokens holds none. Nothing is charged: the
//! lock is released when the transaction commits, is refused or expires. It is a rule of this
//! node's pool, not of consensus; blocks from other proposers are not checked against it.
//!
//! ## Ready and gapped
//! A sender's transactions wait in nonce order. Those that run on without a hole from the
//! account's next nonce are *ready* (a block can take them); those beyond a hole are *gapped*.
//! - At most [`MempoolConfig::max_gapped_per_sender`] gapped transactions per sender.
//! - Only ready transactions are gossiped: [`Admitted::ready`] lists those an admission made
//!   ready (the transaction itself, and any gapped ones behind it that it un-gapped).
//! - Every transaction expires [`MempoolConfig::expiry_blocks`] blocks after it was admitted
//!   (a client polling for it learns `expired`).
//! - When the pool is full, a ready transaction still gets in: it evicts the last transaction of
//!   the sender with the most gapped ones, or else (if no sender has a gap) the last transaction
//!   of the sender with the longest queue, when that queue is longer than the newcomer's would be.
//!   The evicted one is remembered as refused (`evicted`). A gapped newcomer to a full pool is
//!   refused.
//!
//! A proposal takes each sender's ready run, senders round-robin.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use gridmesh_types::{Address, Amount, Hash32};

use crate::crypto::{Parallelism, SignatureError};
use crate::state::Account;
use crate::tx::{DecodeError, SignedTx, TxKind, VerifiedTx};

/// Limits of the pool.
#[derive(Clone, Debug)]
pub struct MempoolConfig {
    /// Most transactions held at once.
    pub max_txs: usize,
    /// Most transactions held per sender.
    pub max_per_sender: usize,
    /// How far ahead of the account's next nonce a transaction may be.
    pub max_nonce_gap: u64,
    /// Most transactions per sender that wait behind a missing nonce.
    pub max_gapped_per_sender: usize,
    /// Balance each pending transaction locks (released when it leaves the pool).
    pub deposit_per_tx: Amount,
    /// Blocks after its admission at which a transaction still waiting is dropped.
    pub expiry_blocks: u64,
}

/// The default deposit per pending transaction: 0.01 token.
pub const DEFAULT_DEPOSIT_PER_TX: Amount = Amount(10_000);

impl Default for MempoolConfig {
    fn default() -> Self {
        MempoolConfig {
            max_txs: 200_000,
            max_per_sender: 4_096,
            max_nonce_gap: 4_096,
            max_gapped_per_sender: 64,
            deposit_per_tx: DEFAULT_DEPOSIT_PER_TX,
            expiry_blocks: 600,
        }
    }
}

/// Why a transaction was not admitted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdmissionError {
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error(transparent)]
    Signature(#[from] SignatureError),
    #[error("transaction is for chain {got:?}, this node runs chain {expected:?}")]
    WrongChainId { expected: String, got: String },
    #[error("transaction {0} is already known")]
    Duplicate(Hash32),
    #[error("nonce {got} is already used (the account's next nonce is {expected})")]
    StaleNonce { expected: u64, got: u64 },
    #[error("nonce {got} is more than {max_gap} ahead of the account's next nonce {expected}")]
    NonceTooFar {
        expected: u64,
        got: u64,
        max_gap: u64,
    },
    #[error("a transaction with nonce {0} from this sender is already pending")]
    NonceInUse(u64),
    #[error(
        "insufficient funds: balance {balance} tokens; pending transactions and this one need {needed} tokens \
         (what they may spend, and {deposit} tokens locked per pending transaction)"
    )]
    InsufficientFunds {
        balance: Amount,
        needed: Amount,
        deposit: Amount,
    },
    #[error("mempool is full ({0} transactions); try again later")]
    Full(usize),
    #[error("sender has {0} pending transactions, the most allowed; wait for some to commit")]
    SenderFull(usize),
    #[error(
        "sender has {0} transactions waiting behind a missing nonce (next ready nonce {1}), the most allowed; send nonce {1} first"
    )]
    TooManyGapped(usize, u64),
}

impl AdmissionError {
    /// A stable machine-readable code for APIs.
    pub fn code(&self) -> &'static str {
        match self {
            AdmissionError::Decode(_) => "malformed_tx",
            AdmissionError::Signature(_) => "bad_signature",
            AdmissionError::WrongChainId { .. } => "wrong_chain_id",
            AdmissionError::Duplicate(_) => "duplicate",
            AdmissionError::StaleNonce { .. } => "stale_nonce",
            AdmissionError::NonceTooFar { .. } => "nonce_too_far",
            AdmissionError::NonceInUse(_) => "nonce_in_use",
            AdmissionError::InsufficientFunds { .. } => "insufficient_funds",
            AdmissionError::Full(_) => "mempool_full",
            AdmissionError::SenderFull(_) => "sender_full",
            AdmissionError::TooManyGapped(..) => "too_many_gapped",
        }
    }
}

/// Decodes bytes and verifies the signature: the stateless half of admission (no lock needed).
pub fn decode_and_verify(bytes: &[u8]) -> Result<VerifiedTx, AdmissionError> {
    Ok(SignedTx::decode(bytes)?.verify()?)
}

/// Decodes and verifies many transactions at once with batch signature verification (falling back
/// to one-by-one checks only when a batch fails). One result per input, in order.
pub fn decode_and_verify_batch(
    inputs: &[&[u8]],
    parallelism: Parallelism,
) -> Vec<Result<VerifiedTx, AdmissionError>> {
    let decoded: Vec<Result<SignedTx, AdmissionError>> = inputs
        .iter()
        .map(|b| SignedTx::decode(b).map_err(AdmissionError::from))
        .collect();
    let good: Vec<&SignedTx> = decoded.iter().filter_map(|r| r.as_ref().ok()).collect();
    let all_valid = crate::tx::verify_signatures(&good, parallelism).is_ok();
    decoded
        .into_iter()
        .map(|r| {
            r.and_then(|tx| {
                if all_valid {
                    Ok(VerifiedTx::new_unchecked(tx))
                } else {
                    tx.verify().map_err(AdmissionError::from)
                }
            })
        })
        .collect()
}

/// Tokens a pending transaction may take from its sender: a transfer's amount, a bid's escrow.
/// (An ask's collateral depends on the slot's tariff; it is checked when the block executes.)
fn cost(tx: &VerifiedTx) -> Amount {
    match &tx.tx().body.kind {
        TxKind::Transfer { amount, .. } => *amount,
        TxKind::PlaceOrder {
            side: crate::tx::Side::Bid,
            energy_mwh,
            price_per_kwh,
            ..
        } => Amount(gridmesh_market::value_ceil(*energy_mwh, *price_per_kwh)),
        _ => Amount::ZERO,
    }
}

struct Pending {
    tx: VerifiedTx,
    /// The height of the last block when it was admitted.
    admitted_height: u64,
}

/// One sender's pending transactions.
struct SenderQueue {
    txs: BTreeMap<u64, Pending>,
    /// What the queued transactions may spend (deposits aside).
    spend: Amount,
    /// The account's next nonce when last seen: every queued nonce is at least this.
    base_nonce: u64,
    /// The first nonce from `base_nonce` up that is not queued: `base_nonce..ready_end` are ready.
    ready_end: u64,
}

impl SenderQueue {
    fn new(base_nonce: u64) -> SenderQueue {
        SenderQueue {
            txs: BTreeMap::new(),
            spend: Amount::ZERO,
            base_nonce,
            ready_end: base_nonce,
        }
    }

    fn ready_len(&self) -> usize {
        usize::try_from(self.ready_end - self.base_nonce).expect("at most max_per_sender")
    }

    fn gapped_len(&self) -> usize {
        self.txs.len() - self.ready_len()
    }

    /// Moves `ready_end` over the queued nonces that follow it; returns the transactions passed.
    fn extend_ready(&mut self) -> Vec<VerifiedTx> {
        let from = self.ready_end;
        while self.txs.contains_key(&self.ready_end) {
            self.ready_end += 1;
        }
        self.txs
            .range(from..self.ready_end)
            .map(|(_, p)| p.tx.clone())
            .collect()
    }
}

/// One sender's pending transactions, (nonce, hash) in nonce order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PendingOf {
    /// Those a block can take now: from the account's next nonce on without a hole.
    pub ready: Vec<(u64, Hash32)>,
    /// Those waiting behind a missing nonce.
    pub gapped: Vec<(u64, Hash32)>,
}

/// A transaction admitted.
#[derive(Debug)]
pub struct Admitted {
    pub hash: Hash32,
    /// The transactions this admission made ready, in nonce order: the admitted one unless it waits
    /// behind a missing nonce, and any that waited behind it. These are the ones to gossip.
    pub ready: Vec<VerifiedTx>,
}

/// How many recently rejected transactions the mempool remembers (with why), so that a client
/// waiting for one learns the reason instead of timing out.
pub const MAX_REJECTED_REMEMBERED: usize = 10_000;

pub struct Mempool {
    cfg: MempoolConfig,
    chain_id: String,
    senders: BTreeMap<Address, SenderQueue>,
    by_hash: HashMap<Hash32, (Address, u64)>,
    /// Senders holding gapped transactions, by how many.
    by_gapped: BTreeSet<(usize, Address)>,
    /// Senders by how many transactions they hold.
    by_len: BTreeSet<(usize, Address)>,
    /// Every transaction by the height at which it was admitted (for expiry).
    by_height: BTreeSet<(u64, Hash32)>,
    /// The height of the last block applied.
    height: u64,
    rejected: HashMap<Hash32, String>,
    rejected_order: VecDeque<Hash32>,
}

impl Mempool {
    /// An empty pool for a chain at height 0 (see [`Mempool::at_height`]).
    pub fn new(chain_id: &str, cfg: MempoolConfig) -> Mempool {
        Mempool {
            cfg,
            chain_id: chain_id.to_string(),
            senders: BTreeMap::new(),
            by_hash: HashMap::new(),
            by_gapped: BTreeSet::new(),
            by_len: BTreeSet::new(),
            by_height: BTreeSet::new(),
            height: 0,
            rejected: HashMap::new(),
            rejected_order: VecDeque::new(),
        }
    }

    /// The pool of a chain whose last block is at `height` (a restarted node): expiry counts from
    /// there.
    pub fn at_height(mut self, height: u64) -> Mempool {
        self.height = height;
        self
    }

    pub fn config(&self) -> &MempoolConfig {
        &self.cfg
    }

    pub fn len(&self) -> usize {
        self.by_hash.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_hash.is_empty()
    }

    /// Transactions waiting behind a missing nonce.
    pub fn gapped_len(&self) -> usize {
        self.by_gapped.iter().map(|(n, _)| n).sum()
    }

    pub fn contains(&self, hash: &Hash32) -> bool {
        self.by_hash.contains_key(hash)
    }

    pub fn get(&self, hash: &Hash32) -> Option<&VerifiedTx> {
        let (sender, nonce) = self.by_hash.get(hash)?;
        self.senders.get(sender)?.txs.get(nonce).map(|p| &p.tx)
    }

    /// Admits a verified transaction given the sender's committed account.
    pub fn insert(&mut self, tx: VerifiedTx, account: Account) -> Result<Admitted, AdmissionError> {
        let body = &tx.tx().body;
        if body.chain_id != self.chain_id {
            return Err(AdmissionError::WrongChainId {
                expected: self.chain_id.clone(),
                got: body.chain_id.clone(),
            });
        }
        let hash = tx.hash();
        if self.by_hash.contains_key(&hash) {
            return Err(AdmissionError::Duplicate(hash));
        }
        if body.nonce < account.nonce {
            return Err(AdmissionError::StaleNonce {
                expected: account.nonce,
                got: body.nonce,
            });
        }
        if body.nonce - account.nonce > self.cfg.max_nonce_gap {
            return Err(AdmissionError::NonceTooFar {
                expected: account.nonce,
                got: body.nonce,
                max_gap: self.cfg.max_nonce_gap,
            });
        }
        let (sender, nonce) = (body.sender, body.nonce);
        // What the chain has committed since this sender was last seen leaves first.
        let mut ready = self.advance(&sender, account.nonce);
        let (queued, ready_end, gapped, spend) = match self.senders.get(&sender) {
            Some(q) if q.txs.contains_key(&nonce) => return Err(AdmissionError::NonceInUse(nonce)),
            Some(q) => (q.txs.len(), q.ready_end, q.gapped_len(), q.spend),
            None => (0, account.nonce, 0, Amount::ZERO),
        };
        if queued >= self.cfg.max_per_sender {
            return Err(AdmissionError::SenderFull(queued));
        }
        let is_ready = nonce == ready_end;
        if !is_ready && gapped >= self.cfg.max_gapped_per_sender {
            return Err(AdmissionError::TooManyGapped(gapped, ready_end));
        }
        let needed = self
            .deposits(queued + 1)
            .and_then(|d| d.checked_add(spend))
            .and_then(|s| s.checked_add(cost(&tx)))
            .unwrap_or(Amount(u128::MAX));
        if needed > account.balance {
            return Err(AdmissionError::InsufficientFunds {
                balance: account.balance,
                needed,
                deposit: self.cfg.deposit_per_tx,
            });
        }
        if self.by_hash.len() >= self.cfg.max_txs && !(is_ready && self.evict_for(queued + 1)) {
            return Err(AdmissionError::Full(self.cfg.max_txs));
        }
        self.unindex(&sender);
        let height = self.height;
        let q = self
            .senders
            .entry(sender)
            .or_insert_with(|| SenderQueue::new(account.nonce));
        q.spend = q.spend.checked_add(cost(&tx)).expect("at most the balance");
        q.txs.insert(
            nonce,
            Pending {
                tx,
                admitted_height: height,
            },
        );
        if is_ready {
            ready.extend(q.extend_ready());
        }
        self.by_hash.insert(hash, (sender, nonce));
        self.by_height.insert((height, hash));
        self.reindex(&sender);
        Ok(Admitted { hash, ready })
    }

    /// The deposits `n` pending transactions lock.
    fn deposits(&self, n: usize) -> Option<Amount> {
        self.cfg
            .deposit_per_tx
            .0
            .checked_mul(u128::try_from(n).ok()?)
            .map(Amount)
    }

    /// Makes room for a ready transaction whose sender would then hold `len`: evicts the last
    /// transaction of the sender with the most gapped ones, or else of the longest queue if it is
    /// longer than `len`. False if there is nothing to evict.
    fn evict_for(&mut self, len: usize) -> bool {
        let victim = match (self.by_gapped.last(), self.by_len.last()) {
            (Some(&(_, sender)), _) => sender,
            (None, Some(&(longest, sender))) if longest > len => sender,
            _ => return false,
        };
        let nonce = *self.senders[&victim]
            .txs
            .keys()
            .next_back()
            .expect("indexed queues hold transactions");
        self.unindex(&victim);
        let tx = self.take(&victim, nonce).expect("queued");
        self.reindex(&victim);
        self.remember(
            tx.hash(),
            "evicted: the mempool was full and a ready transaction of a shorter queue needed the room"
                .to_string(),
        );
        true
    }

    /// Up to `max` transactions ready to execute: for each sender, the run of consecutive nonces that
    /// starts at the account's next nonce. Senders are visited round-robin so that one busy sender
    /// cannot fill a block alone.
    pub fn select(&self, account: impl Fn(&Address) -> Account, max: usize) -> Vec<VerifiedTx> {
        let mut runs: Vec<std::iter::Peekable<_>> = Vec::new();
        for (addr, q) in &self.senders {
            let mut next = account(addr).nonce;
            let run = q.txs.range(next..).take_while(move |(n, _)| {
                let ok = **n == next;
                next += 1;
                ok
            });
            runs.push(run.map(|(_, p)| &p.tx).peekable());
        }
        let mut out = Vec::with_capacity(max.min(self.len()));
        while out.len() < max && !runs.is_empty() {
            runs.retain_mut(|run| {
                if out.len() >= max {
                    return true;
                }
                match run.next() {
                    Some(tx) => {
                        out.push(tx.clone());
                        true
                    }
                    None => false,
                }
            });
        }
        out
    }

    /// Drops a transaction a block could not apply and remembers why (the last
    /// [`MAX_REJECTED_REMEMBERED`]).
    pub fn reject(&mut self, hash: &Hash32, reason: String) {
        self.remove(hash);
        self.remember(*hash, reason);
    }

    fn remember(&mut self, hash: Hash32, reason: String) {
        if self.rejected.insert(hash, reason).is_none() {
            self.rejected_order.push_back(hash);
            if self.rejected_order.len() > MAX_REJECTED_REMEMBERED {
                if let Some(old) = self.rejected_order.pop_front() {
                    self.rejected.remove(&old);
                }
            }
        }
    }

    /// Why a recently dropped transaction was rejected.
    pub fn rejection(&self, hash: &Hash32) -> Option<&str> {
        self.rejected.get(hash).map(String::as_str)
    }

    /// Drops a transaction (its sender's later ones then wait behind the gap it leaves).
    pub fn remove(&mut self, hash: &Hash32) {
        if let Some(&(sender, nonce)) = self.by_hash.get(hash) {
            self.unindex(&sender);
            self.take(&sender, nonce);
            self.reindex(&sender);
        }
    }

    /// `sender`'s pending transactions as (nonce, hash): those a block can take now (ready) and
    /// those waiting behind a missing nonce (gapped), each in nonce order.
    pub fn pending_of(&self, sender: &Address) -> PendingOf {
        let Some(q) = self.senders.get(sender) else {
            return PendingOf::default();
        };
        let (mut ready, mut gapped) = (Vec::new(), Vec::new());
        for (&nonce, p) in &q.txs {
            let into = if nonce < q.ready_end {
                &mut ready
            } else {
                &mut gapped
            };
            into.push((nonce, p.tx.hash()));
        }
        PendingOf { ready, gapped }
    }

    /// Drops `sender`'s transactions waiting behind a missing nonce, those from `from_nonce` up
    /// (with their deposits), and remembers them as dropped by their sender. Returns what was
    /// dropped, (nonce, hash) in nonce order. Ready transactions stay: they may be in a block
    /// already, here or at a peer (gapped ones never left this node).
    pub fn drop_gapped(&mut self, sender: &Address, from_nonce: u64) -> Vec<(u64, Hash32)> {
        let Some(q) = self.senders.get(sender) else {
            return Vec::new();
        };
        let first = from_nonce.max(q.ready_end);
        let nonces: Vec<u64> = q.txs.range(first..).map(|(n, _)| *n).collect();
        if nonces.is_empty() {
            return Vec::new();
        }
        self.unindex(sender);
        let mut dropped = Vec::with_capacity(nonces.len());
        for nonce in nonces {
            if let Some(tx) = self.take(sender, nonce) {
                let hash = tx.hash();
                self.remember(
                    hash,
                    "dropped by its sender while it waited behind a missing nonce".into(),
                );
                dropped.push((nonce, hash));
            }
        }
        self.reindex(sender);
        dropped
    }

    /// After the block at `height`: for each sender it touched, drops the transactions whose
    /// nonce is now used and those the new balance can no longer pay for (with their deposits);
    /// then drops every transaction admitted `expiry_blocks` or more blocks ago. Returns the
    /// transactions that became ready (a nonce they waited for was committed from elsewhere).
    pub fn revalidate<'a>(
        &mut self,
        senders: impl IntoIterator<Item = &'a Address>,
        account: impl Fn(&Address) -> Account,
        height: u64,
    ) -> Vec<VerifiedTx> {
        self.height = self.height.max(height);
        let mut ready = Vec::new();
        for sender in senders {
            if !self.senders.contains_key(sender) {
                continue;
            }
            let acc = account(sender);
            ready.extend(self.advance(sender, acc.nonce));
            let Some(q) = self.senders.get(sender) else {
                continue;
            };
            let mut spend = Amount::ZERO;
            let mut kept = 0usize;
            let mut unpaid = Vec::new();
            for (nonce, p) in &q.txs {
                let with = spend.checked_add(cost(&p.tx));
                let needed = with
                    .zip(self.deposits(kept + 1))
                    .and_then(|(s, d)| s.checked_add(d));
                match (with, needed) {
                    (Some(with), Some(needed)) if needed <= acc.balance => {
                        spend = with;
                        kept += 1;
                    }
                    _ => unpaid.push(*nonce),
                }
            }
            if unpaid.is_empty() {
                continue;
            }
            self.unindex(sender);
            for nonce in unpaid {
                if let Some(tx) = self.take(sender, nonce) {
                    self.remember(
                        tx.hash(),
                        format!(
                            "insufficient funds: the sender's balance of {} tokens no longer covers it",
                            acc.balance
                        ),
                    );
                }
            }
            self.reindex(sender);
        }
        let expiry = self.cfg.expiry_blocks;
        while let Some(&(admitted, hash)) = self.by_height.first() {
            if admitted.saturating_add(expiry) > self.height {
                break;
            }
            self.reject(
                &hash,
                format!("expired: not included within {expiry} blocks of its admission"),
            );
        }
        ready.retain(|tx| self.contains(&tx.hash()));
        ready
    }

    /// Brings `sender`'s queue up to the account's next nonce: what is below it was committed and
    /// leaves. Returns the transactions that became ready.
    fn advance(&mut self, sender: &Address, next_nonce: u64) -> Vec<VerifiedTx> {
        match self.senders.get(sender) {
            Some(q) if next_nonce > q.base_nonce => {}
            _ => return Vec::new(),
        }
        self.unindex(sender);
        let q = self.senders.get_mut(sender).expect("checked above");
        let kept = q.txs.split_off(&next_nonce);
        for (_, p) in std::mem::replace(&mut q.txs, kept) {
            q.spend = q.spend.checked_sub(cost(&p.tx)).unwrap_or_default();
            let hash = p.tx.hash();
            self.by_hash.remove(&hash);
            self.by_height.remove(&(p.admitted_height, hash));
        }
        q.base_nonce = next_nonce;
        q.ready_end = q.ready_end.max(next_nonce);
        // Those from the old end of the ready run were waiting for a nonce now committed.
        let from = q.ready_end;
        q.extend_ready();
        let ready = q
            .txs
            .range(from..q.ready_end)
            .map(|(_, p)| p.tx.clone())
            .collect();
        self.reindex(sender);
        ready
    }

    /// Takes one transaction out of `sender`'s queue; the caller keeps the sender indices.
    fn take(&mut self, sender: &Address, nonce: u64) -> Option<VerifiedTx> {
        let q = self.senders.get_mut(sender)?;
        let p = q.txs.remove(&nonce)?;
        q.spend = q.spend.checked_sub(cost(&p.tx)).unwrap_or_default();
        if nonce < q.ready_end {
            q.ready_end = nonce;
        }
        let hash = p.tx.hash();
        self.by_hash.remove(&hash);
        self.by_height.remove(&(p.admitted_height, hash));
        Some(p.tx)
    }

    /// Checks every index against the queues (tests).
    #[cfg(test)]
    fn assert_consistent(&self) {
        let mut txs = 0;
        for (addr, q) in &self.senders {
            assert!(!q.txs.is_empty());
            assert!(q.txs.keys().all(|n| *n >= q.base_nonce));
            let mut end = q.base_nonce;
            while q.txs.contains_key(&end) {
                end += 1;
            }
            assert_eq!(q.ready_end, end, "ready run of {addr:?}");
            let spend = q
                .txs
                .values()
                .fold(Amount::ZERO, |s, p| s.checked_add(cost(&p.tx)).unwrap());
            assert_eq!(q.spend, spend);
            assert!(self.by_len.contains(&(q.txs.len(), *addr)));
            let gapped = q.gapped_len();
            assert_eq!(gapped > 0, self.by_gapped.contains(&(gapped, *addr)));
            for (n, p) in &q.txs {
                assert_eq!(self.by_hash[&p.tx.hash()], (*addr, *n));
                assert!(self.by_height.contains(&(p.admitted_height, p.tx.hash())));
            }
            txs += q.txs.len();
        }
        assert_eq!(self.by_hash.len(), txs);
        assert_eq!(self.by_height.len(), txs);
        assert_eq!(self.by_len.len(), self.senders.len());
        assert!(txs <= self.cfg.max_txs);
    }

    /// Takes `sender` out of the indices by length and gaps (before its queue changes).
    fn unindex(&mut self, sender: &Address) {
        if let Some(q) = self.senders.get(sender) {
            self.by_len.remove(&(q.txs.len(), *sender));
            let gapped = q.gapped_len();
            if gapped > 0 {
                self.by_gapped.remove(&(gapped, *sender));
            }
        }
    }

    /// Puts `sender` back into the indices after its queue changed, or forgets an empty queue.
    fn reindex(&mut self, sender: &Address) {
        let Some(q) = self.senders.get(sender) else {
            return;
        };
        if q.txs.is_empty() {
            self.senders.remove(sender);
            return;
        }
        self.by_len.insert((q.txs.len(), *sender));
        let gapped = q.gapped_len();
        if gapped > 0 {
            self.by_gapped.insert((gapped, *sender));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::Keypair;

    const CHAIN: &str = "test";

    fn acct(balance: u128, nonce: u64) -> Account {
        Account {
            balance: Amount(balance),
            nonce,
        }
    }

    fn tx(k: &Keypair, nonce: u64, amount: u128) -> VerifiedTx {
        SignedTx::transfer(k, CHAIN, nonce, Address([5; 32]), Amount(amount))
            .verify()
            .unwrap()
    }

    /// Small limits, and a deposit of 1 base unit per pending transaction.
    fn small(max_txs: usize, max_per_sender: usize) -> MempoolConfig {
        MempoolConfig {
            max_txs,
            max_per_sender,
            max_nonce_gap: 10,
            max_gapped_per_sender: 2,
            deposit_per_tx: Amount(1),
            expiry_blocks: 5,
        }
    }

    #[test]
    fn typed_rejections() {
        let k = Keypair::from_seed([1; 32]);
        let mut mp = Mempool::new(CHAIN, small(3, 2));
        let a = acct(100, 5);
        assert!(mp.insert(tx(&k, 5, 10), a).is_ok());
        assert!(matches!(
            mp.insert(tx(&k, 5, 10), a),
            Err(AdmissionError::Duplicate(_))
        ));
        assert!(matches!(
            mp.insert(tx(&k, 5, 11), a),
            Err(AdmissionError::NonceInUse(5))
        ));
        assert!(matches!(
            mp.insert(tx(&k, 4, 10), a),
            Err(AdmissionError::StaleNonce {
                expected: 5,
                got: 4
            })
        ));
        assert!(matches!(
            mp.insert(tx(&k, 16, 10), a),
            Err(AdmissionError::NonceTooFar { .. })
        ));
        // 10 + 89 spent and two deposits of 1: 101 > 100.
        assert!(matches!(
            mp.insert(tx(&k, 6, 89), a),
            Err(AdmissionError::InsufficientFunds { .. })
        ));
        assert!(mp.insert(tx(&k, 6, 88), a).is_ok());
        assert!(matches!(
            mp.insert(tx(&k, 7, 1), a),
            Err(AdmissionError::SenderFull(2))
        ));
        let other = SignedTx::transfer(&k, "elsewhere", 9, Address([5; 32]), Amount(1))
            .verify()
            .unwrap();
        assert!(matches!(
            mp.insert(other, a),
            Err(AdmissionError::WrongChainId { .. })
        ));
        let k2 = Keypair::from_seed([2; 32]);
        assert!(mp.insert(tx(&k2, 0, 1), acct(10, 0)).is_ok());
        let k3 = Keypair::from_seed([3; 32]);
        // Full, and no queue is longer than the newcomer's would be.
        let mut full = small(3, 2);
        full.max_per_sender = 4;
        let mut mp3 = Mempool::new(CHAIN, full);
        for n in 0..3 {
            mp3.insert(tx([&k, &k2, &k3][n], 0, 1), acct(10, 0))
                .unwrap();
        }
        let k4 = Keypair::from_seed([4; 32]);
        assert!(matches!(
            mp3.insert(tx(&k4, 0, 1), acct(10, 0)),
            Err(AdmissionError::Full(3))
        ));
        let mut bytes = tx(&k, 9, 1).into_tx().encode();
        bytes[120] ^= 1;
        assert!(matches!(
            decode_and_verify(&bytes),
            Err(AdmissionError::Signature(_))
        ));
        assert!(matches!(
            decode_and_verify(&bytes[..50]),
            Err(AdmissionError::Decode(_))
        ));
        let good: Vec<Vec<u8>> = (0..100).map(|n| tx(&k, n, 1).into_tx().encode()).collect();
        let mut inputs: Vec<&[u8]> = good.iter().map(|b| b.as_slice()).collect();
        assert!(decode_and_verify_batch(&inputs, Parallelism::AllCores)
            .iter()
            .all(|r| r.is_ok()));
        inputs[3] = &bytes;
        inputs[7] = &bytes[..50];
        let results = decode_and_verify_batch(&inputs, Parallelism::AllCores);
        assert!(matches!(results[3], Err(AdmissionError::Signature(_))));
        assert!(matches!(results[7], Err(AdmissionError::Decode(_))));
        assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 98);
    }

    #[test]
    fn a_key_without_tokens_holds_nothing_and_a_balance_holds_what_its_deposits_cover() {
        let k = Keypair::from_seed([1; 32]);
        let mut mp = Mempool::new(CHAIN, MempoolConfig::default());
        let cancel = |n| {
            SignedTx::new(
                &k,
                CHAIN,
                n,
                TxKind::CancelOrder {
                    slot: 1,
                    order_id: 1,
                },
            )
            .verify()
            .unwrap()
        };
        let e = mp.insert(cancel(0), acct(0, 0)).unwrap_err();
        assert_eq!(e.code(), "insufficient_funds");
        assert!(
            e.to_string().contains("0.01 tokens locked per pending"),
            "{e}"
        );
        // 0.05 tokens hold five pending transactions.
        for n in 0..5 {
            mp.insert(cancel(n), acct(50_000, 0)).unwrap();
        }
        assert!(matches!(
            mp.insert(cancel(5), acct(50_000, 0)),
            Err(AdmissionError::InsufficientFunds { .. })
        ));
    }

    #[test]
    fn gapped_transactions_are_bounded_not_gossiped_and_evicted_first_under_pressure() {
        let honest = Keypair::from_seed([1; 32]);
        let jammer = Keypair::from_seed([2; 32]);
        let mut mp = Mempool::new(CHAIN, small(4, 8));
        // Nonce 0 is never sent: 1 and 2 wait behind it, 3 is one too many.
        for n in [1, 2] {
            let a = mp.insert(tx(&jammer, n, 0), acct(100, 0)).unwrap();
            assert!(a.ready.is_empty(), "a gapped transaction is not gossiped");
        }
        assert!(matches!(
            mp.insert(tx(&jammer, 3, 0), acct(100, 0)),
            Err(AdmissionError::TooManyGapped(2, 0))
        ));
        assert_eq!(mp.gapped_len(), 2);
        let a = mp.insert(tx(&honest, 0, 1), acct(100, 0)).unwrap();
        assert_eq!(a.ready.len(), 1);
        mp.insert(tx(&honest, 1, 1), acct(100, 0)).unwrap();
        assert_eq!(mp.len(), 4);
        // Full: a gapped newcomer is refused, a ready one evicts the jammer's last gapped one.
        assert!(matches!(
            mp.insert(tx(&honest, 3, 1), acct(100, 0)),
            Err(AdmissionError::Full(4))
        ));
        let evicted = tx(&jammer, 2, 0).hash();
        mp.insert(tx(&honest, 2, 1), acct(100, 0)).unwrap();
        assert!(!mp.contains(&evicted));
        assert!(mp.rejection(&evicted).unwrap().starts_with("evicted"));
        assert_eq!(mp.gapped_len(), 1);
        // The jammer's missing nonce arrives at the full pool: it takes its own gapped one's room.
        let a = mp.insert(tx(&jammer, 0, 0), acct(100, 0)).unwrap();
        assert_eq!(a.ready.len(), 1);
        assert!(!mp.contains(&tx(&jammer, 1, 0).hash()));
        assert_eq!(mp.gapped_len(), 0);
        // Elsewhere, the missing nonce makes it and the one behind it ready, to be gossiped.
        let mut roomy = Mempool::new(CHAIN, small(10, 8));
        roomy.insert(tx(&jammer, 1, 0), acct(100, 0)).unwrap();
        let a = roomy.insert(tx(&jammer, 0, 0), acct(100, 0)).unwrap();
        let nonces: Vec<u64> = a.ready.iter().map(|t| t.nonce()).collect();
        assert_eq!(nonces, [0, 1]);
    }

    #[test]
    fn a_sender_drops_its_gapped_transactions_and_gets_their_deposits_back() {
        let k = Keypair::from_seed([3; 32]);
        let other = Keypair::from_seed([4; 32]);
        let mut mp = Mempool::new(CHAIN, small(10, 8));
        let mut cfg = small(10, 8);
        cfg.max_gapped_per_sender = 4;
        let mut mp4 = Mempool::new(CHAIN, cfg);
        // Nonces 0 and 1 ready, 3, 4 and 6 behind the missing 2 (and 5).
        for n in [0, 1, 3, 4, 6] {
            mp4.insert(tx(&k, n, 10), acct(80, 0)).unwrap();
        }
        mp4.insert(tx(&other, 5, 0), acct(100, 0)).unwrap();
        let p = mp4.pending_of(&k.address());
        let nonces = |v: &[(u64, Hash32)]| v.iter().map(|(n, _)| *n).collect::<Vec<_>>();
        assert_eq!(nonces(&p.ready), [0, 1]);
        assert_eq!(nonces(&p.gapped), [3, 4, 6]);
        // Five pending lock 50 spent and 5 deposits of the balance of 80: another transfer of
        // 40 does not fit.
        assert!(matches!(
            mp4.insert(tx(&k, 2, 40), acct(80, 0)),
            Err(AdmissionError::InsufficientFunds { .. })
        ));
        // From nonce 4 up: 4 and 6 go, 3 stays; a nonce below the gap drops no ready one.
        let dropped = mp4.drop_gapped(&k.address(), 4);
        assert_eq!(nonces(&dropped), [4, 6]);
        assert_eq!(
            mp4.rejection(&dropped[0].1).unwrap(),
            "dropped by its sender while it waited behind a missing nonce"
        );
        mp4.assert_consistent();
        let dropped = mp4.drop_gapped(&k.address(), 0);
        assert_eq!(nonces(&dropped), [3]);
        assert_eq!(nonces(&mp4.pending_of(&k.address()).ready), [0, 1]);
        assert!(mp4.pending_of(&k.address()).gapped.is_empty());
        mp4.assert_consistent();
        // Their spend and deposits are released: the transfer of 40 fits now.
        mp4.insert(tx(&k, 2, 40), acct(80, 0)).unwrap();
        // Nothing of another sender's, and nothing at all for a sender with no gap.
        assert!(mp4.drop_gapped(&k.address(), 0).is_empty());
        assert_eq!(mp4.pending_of(&other.address()).gapped.len(), 1);
        assert!(mp.drop_gapped(&k.address(), 0).is_empty());
        mp4.assert_consistent();
    }

    #[test]
    fn with_no_gaps_the_longest_queue_gives_up_its_last_transaction() {
        let busy = Keypair::from_seed([1; 32]);
        let other = Keypair::from_seed([2; 32]);
        let mut mp = Mempool::new(CHAIN, small(3, 8));
        for n in 0..3 {
            mp.insert(tx(&busy, n, 1), acct(100, 0)).unwrap();
        }
        mp.insert(tx(&other, 0, 1), acct(100, 0)).unwrap();
        assert!(!mp.contains(&tx(&busy, 2, 1).hash()));
        assert!(mp.contains(&tx(&busy, 1, 1).hash()), "no gap is made");
        // Queues of two and one: neither's next would leave the longest queue shorter.
        for t in [tx(&other, 1, 1), tx(&busy, 2, 1)] {
            assert!(matches!(
                mp.insert(t, acct(100, 0)),
                Err(AdmissionError::Full(3))
            ));
        }
    }

    #[test]
    fn transactions_expire_by_height() {
        let k = Keypair::from_seed([1; 32]);
        let mut mp = Mempool::new(CHAIN, small(10, 8)).at_height(100);
        mp.insert(tx(&k, 3, 1), acct(100, 0)).unwrap();
        mp.revalidate([].iter(), |_| acct(100, 0), 104);
        assert_eq!(mp.len(), 1);
        mp.revalidate([].iter(), |_| acct(100, 0), 105);
        assert!(mp.is_empty());
        let h = tx(&k, 3, 1).hash();
        assert!(mp.rejection(&h).unwrap().starts_with("expired"));
        assert_eq!(mp.gapped_len(), 0);
    }

    #[test]
    fn select_takes_contiguous_runs_round_robin_and_revalidate_prunes() {
        let a = Keypair::from_seed([1; 32]);
        let b = Keypair::from_seed([2; 32]);
        let mut mp = Mempool::new(CHAIN, small(100, 8));
        for n in [0, 1, 2, 4] {
            mp.insert(tx(&a, n, 1), acct(100, 0)).unwrap();
        }
        for n in [0, 1] {
            mp.insert(tx(&b, n, 1), acct(100, 0)).unwrap();
        }
        let picked = mp.select(|_| acct(100, 0), 10);
        assert_eq!(picked.len(), 5, "nonce 4 of a waits for 3");
        let first_two: Vec<Address> = picked[..2].iter().map(|t| t.sender()).collect();
        assert!(first_two.contains(&a.address()) && first_two.contains(&b.address()));
        assert_eq!(mp.select(|_| acct(100, 0), 3).len(), 3);

        // a's nonces 0..2 committed and its balance dropped to 2: nonce 4 (cost 1, deposit 1)
        // stays, and is ready now that 3 was committed (from another node's pool).
        let ready = mp.revalidate([a.address()].iter(), |_| acct(2, 4), 1);
        assert_eq!(mp.len(), 3);
        assert_eq!(ready.len(), 1);
        assert_eq!(mp.gapped_len(), 0);
        mp.revalidate([a.address()].iter(), |_| acct(1, 4), 2);
        assert_eq!(mp.len(), 2);
        let h = tx(&b, 0, 1).hash();
        mp.remove(&h);
        assert!(!mp.contains(&h));
        assert_eq!(mp.len(), 1);
        assert_eq!(
            mp.gapped_len(),
            1,
            "b's nonce 1 waits behind the nonce removed"
        );
    }

    proptest::proptest! {
        /// Whatever arrives, commits or is dropped, the indices match the queues, the pool stays
        /// within its bounds, and what a sender holds never needs more than its balance.
        #[test]
        fn indices_and_bounds_hold_under_any_sequence(
            ops in proptest::collection::vec((0u8..4, 0u8..4, 0u64..8, 0u128..20), 1..120)
        ) {
            let keys: Vec<Keypair> = (1..=4).map(|i| Keypair::from_seed([i; 32])).collect();
            let mut committed = [0u64; 4];
            let balance = 40u128;
            let mut mp = Mempool::new(CHAIN, small(6, 4));
            let mut height = 0;
            for (op, who, nonce, amount) in ops {
                let k = &keys[who as usize];
                match op {
                    0 | 1 => {
                        let n = committed[who as usize] + nonce;
                        let _ = mp.insert(tx(k, n, amount), acct(balance, committed[who as usize]));
                    }
                    2 => {
                        committed[who as usize] += nonce % 3;
                        height += 1;
                        let c = committed;
                        let idx = |a: &Address| keys.iter().position(|k| k.address() == *a).unwrap();
                        let ready = mp.revalidate(
                            [k.address()].iter(),
                            |a| acct(balance, c[idx(a)]),
                            height,
                        );
                        proptest::prop_assert!(ready.iter().all(|t| mp.contains(&t.hash())));
                    }
                    _ => {
                        let n = committed[who as usize] + nonce;
                        mp.remove(&tx(k, n, amount).hash());
                    }
                }
                mp.assert_consistent();
                for q in mp.senders.values() {
                    let needed = q.spend.0 + q.txs.len() as u128;
                    proptest::prop_assert!(needed <= balance);
                }
            }
        }
    }
}
