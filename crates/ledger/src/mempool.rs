//! The mempool: verified transactions waiting for a block, bounded in total and per sender.
//!
//! Admission checks everything that can be checked before execution and rejects with a typed
//! [`AdmissionError`]: malformed bytes, bad signatures, wrong chain id, duplicates, stale or
//! too-distant nonces, nonces already pending, transfers the sender cannot afford together with its
//! other pending transactions, and a full pool. Transactions wait per sender in nonce order; a
//! proposal takes each sender's contiguous run starting at the account's next nonce.

use std::collections::{BTreeMap, HashMap};

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
}

impl Default for MempoolConfig {
    fn default() -> Self {
        MempoolConfig {
            max_txs: 200_000,
            max_per_sender: 4_096,
            max_nonce_gap: 4_096,
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
    #[error("insufficient funds: balance {balance} tokens, pending and this transaction need {needed} tokens")]
    InsufficientFunds { balance: Amount, needed: Amount },
    #[error("mempool is full ({0} transactions); try again later")]
    Full(usize),
    #[error("sender has {0} pending transactions, the most allowed; wait for some to commit")]
    SenderFull(usize),
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

#[derive(Default)]
struct SenderQueue {
    txs: BTreeMap<u64, VerifiedTx>,
    pending_cost: Amount,
}

/// How many recently rejected transactions the mempool remembers (with why), so that a client
/// waiting for one learns the reason instead of timing out.
pub const MAX_REJECTED_REMEMBERED: usize = 10_000;

pub struct Mempool {
    cfg: MempoolConfig,
    chain_id: String,
    senders: BTreeMap<Address, SenderQueue>,
    by_hash: HashMap<Hash32, (Address, u64)>,
    rejected: HashMap<Hash32, String>,
    rejected_order: std::collections::VecDeque<Hash32>,
}

impl Mempool {
    pub fn new(chain_id: &str, cfg: MempoolConfig) -> Mempool {
        Mempool {
            cfg,
            chain_id: chain_id.to_string(),
            senders: BTreeMap::new(),
            by_hash: HashMap::new(),
            rejected: HashMap::new(),
            rejected_order: std::collections::VecDeque::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.by_hash.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_hash.is_empty()
    }

    pub fn contains(&self, hash: &Hash32) -> bool {
        self.by_hash.contains_key(hash)
    }

    pub fn get(&self, hash: &Hash32) -> Option<&VerifiedTx> {
        let (sender, nonce) = self.by_hash.get(hash)?;
        self.senders.get(sender)?.txs.get(nonce)
    }

    /// Admits a verified transaction given the sender's committed account.
    pub fn insert(&mut self, tx: VerifiedTx, account: Account) -> Result<Hash32, AdmissionError> {
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
        let queue = self.senders.get(&body.sender);
        if queue.is_some_and(|q| q.txs.contains_key(&body.nonce)) {
            return Err(AdmissionError::NonceInUse(body.nonce));
        }
        let queued = queue.map_or(0, |q| q.txs.len());
        if queued >= self.cfg.max_per_sender {
            return Err(AdmissionError::SenderFull(queued));
        }
        let pending = queue.map_or(Amount::ZERO, |q| q.pending_cost);
        let needed = pending.checked_add(cost(&tx)).unwrap_or(Amount(u128::MAX));
        if needed > account.balance {
            return Err(AdmissionError::InsufficientFunds {
                balance: account.balance,
                needed,
            });
        }
        if self.by_hash.len() >= self.cfg.max_txs {
            return Err(AdmissionError::Full(self.cfg.max_txs));
        }
        let (sender, nonce) = (body.sender, body.nonce);
        let q = self.senders.entry(sender).or_default();
        q.pending_cost = needed;
        q.txs.insert(nonce, tx);
        self.by_hash.insert(hash, (sender, nonce));
        Ok(hash)
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
            runs.push(run.map(|(_, tx)| tx).peekable());
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

    /// Drops one transaction (a proposal found it could not apply).
    /// Drops a transaction a block could not apply and remembers why (the last
    /// [`MAX_REJECTED_REMEMBERED`]).
    pub fn reject(&mut self, hash: &Hash32, reason: String) {
        self.remove(hash);
        if self.rejected.insert(*hash, reason).is_none() {
            self.rejected_order.push_back(*hash);
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

    pub fn remove(&mut self, hash: &Hash32) {
        if let Some((sender, nonce)) = self.by_hash.remove(hash) {
            if let Some(q) = self.senders.get_mut(&sender) {
                if let Some(tx) = q.txs.remove(&nonce) {
                    q.pending_cost = q.pending_cost.checked_sub(cost(&tx)).unwrap_or_default();
                }
                if q.txs.is_empty() {
                    self.senders.remove(&sender);
                }
            }
        }
    }

    /// After a block: for each sender it touched, drops transactions whose nonce is now used and
    /// those the new balance can no longer pay for.
    pub fn revalidate<'a>(
        &mut self,
        senders: impl IntoIterator<Item = &'a Address>,
        account: impl Fn(&Address) -> Account,
    ) {
        for sender in senders {
            let Some(q) = self.senders.get_mut(sender) else {
                continue;
            };
            let acc = account(sender);
            let mut spent = Amount::ZERO;
            let mut dropped = Vec::new();
            for (nonce, tx) in q.txs.iter() {
                let keep = *nonce >= acc.nonce
                    && spent
                        .checked_add(cost(tx))
                        .is_some_and(|s| s <= acc.balance);
                if keep {
                    spent = spent.checked_add(cost(tx)).expect("checked above");
                } else {
                    dropped.push(*nonce);
                }
            }
            for n in dropped {
                if let Some(tx) = q.txs.remove(&n) {
                    self.by_hash.remove(&tx.hash());
                }
            }
            q.pending_cost = spent;
            if q.txs.is_empty() {
                self.senders.remove(sender);
            }
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

    #[test]
    fn typed_rejections() {
        let k = Keypair::from_seed([1; 32]);
        let mut mp = Mempool::new(
            CHAIN,
            MempoolConfig {
                max_txs: 3,
                max_per_sender: 2,
                max_nonce_gap: 10,
            },
        );
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
        assert!(matches!(
            mp.insert(tx(&k, 6, 91), a),
            Err(AdmissionError::InsufficientFunds { .. })
        ));
        assert!(mp.insert(tx(&k, 6, 90), a).is_ok());
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
        assert!(matches!(
            mp.insert(tx(&k3, 0, 1), acct(10, 0)),
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
    fn select_takes_contiguous_runs_round_robin_and_revalidate_prunes() {
        let a = Keypair::from_seed([1; 32]);
        let b = Keypair::from_seed([2; 32]);
        let mut mp = Mempool::new(CHAIN, MempoolConfig::default());
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

        // a's nonces 0..2 committed and its balance dropped to 1: nonce 4 (cost 1) stays.
        mp.revalidate([a.address()].iter(), |_| acct(1, 3));
        assert_eq!(mp.len(), 3);
        mp.revalidate([a.address()].iter(), |_| acct(0, 3));
        assert_eq!(mp.len(), 2);
        let h = tx(&b, 0, 1).hash();
        mp.remove(&h);
        assert!(!mp.contains(&h));
        assert_eq!(mp.len(), 1);
    }
}
