//! The ledger state, its commitment, and the deterministic transition rules for transactions.
//!
//! # Commitment
//!
//! Every piece of state lives in a namespace of sorted key/value entries. A namespace's entries are
//! split by the first [`BUCKET_BITS`] bits of their key into [`BUCKETS`] contiguous buckets; a bucket's
//! hash is `H(key ‖ value ‖ key ‖ value …)` in key order; the namespace root is the Merkle root over its
//! bucket hashes, and the state root is `H("gridmesh/state/v1" ‖ tag ‖ namespace root …)` over the
//! namespaces in a fixed order. Only buckets a block touched are rehashed, so committing a block
//! costs O(B + touched buckets × entries per bucket) hashes rather than O(all state).
//!
//! Namespaces now: accounts (tag 1). Later features add theirs.
//!
//! # Rules
//! Execution is a pure function of the state and the transaction: integers only, checked arithmetic,
//! `BTreeMap`s (never hash-map iteration). A transaction is checked completely before it changes
//! anything, so a rejected transaction leaves the state exactly as it was.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;

use borsh::{BorshDeserialize, BorshSerialize};
use gridmesh_types::{Address, Amount, Hash32};
use serde::Serialize;

use crate::merkle;
use crate::tx::{TxKind, VerifiedTx};

/// Bits of a key that select its bucket.
pub const BUCKET_BITS: u32 = 10;
/// Number of buckets per namespace.
pub const BUCKETS: usize = 1 << BUCKET_BITS;
const NS_ACCOUNTS: u8 = 1;

/// An account: its balance and the nonce its next transaction must carry.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize,
)]
pub struct Account {
    pub balance: Amount,
    pub nonce: u64,
}

/// What a committed transaction did.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    Transfer {
        from: Address,
        to: Address,
        amount: Amount,
    },
}

/// Why a well-formed, correctly signed transaction cannot be applied to the current state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TxError {
    #[error("transaction is for chain {got:?}, this is chain {expected:?}")]
    WrongChainId { expected: String, got: String },
    #[error("nonce {got} is already used (the account's next nonce is {expected})")]
    StaleNonce { expected: u64, got: u64 },
    #[error("nonce {got} is ahead of the account's next nonce {expected}")]
    FutureNonce { expected: u64, got: u64 },
    #[error("insufficient funds: balance {balance} tokens, needs {needed} tokens")]
    InsufficientFunds { balance: Amount, needed: Amount },
    #[error("recipient balance would overflow")]
    BalanceOverflow,
}

fn bucket_of(key: &[u8; 32]) -> usize {
    ((u16::from(key[0]) << 8 | u16::from(key[1])) >> (16 - BUCKET_BITS)) as usize
}

fn bucket_start(bucket: usize) -> Address {
    let prefix = (bucket as u16) << (16 - BUCKET_BITS);
    let mut a = [0u8; 32];
    a[..2].copy_from_slice(&prefix.to_be_bytes());
    Address(a)
}

fn bucket_range(bucket: usize) -> (Bound<Address>, Bound<Address>) {
    let end = if bucket + 1 == BUCKETS {
        Bound::Unbounded
    } else {
        Bound::Excluded(bucket_start(bucket + 1))
    };
    (Bound::Included(bucket_start(bucket)), end)
}

fn hash_entries<'a>(entries: impl Iterator<Item = (&'a Address, &'a Account)>) -> Hash32 {
    let mut h = blake3::Hasher::new();
    for (k, v) in entries {
        if *v == Account::default() {
            continue; // absent and default are the same state
        }
        h.update(&k.0);
        h.update(&v.balance.0.to_le_bytes());
        h.update(&v.nonce.to_le_bytes());
    }
    Hash32(*h.finalize().as_bytes())
}

fn state_root(accounts_root: Hash32) -> Hash32 {
    let mut h = blake3::Hasher::new();
    h.update(b"gridmesh/state/v1");
    h.update(&[NS_ACCOUNTS]);
    h.update(&accounts_root.0);
    Hash32(*h.finalize().as_bytes())
}

/// The complete ledger state with its cached commitment.
#[derive(Clone, Debug)]
pub struct State {
    accounts: BTreeMap<Address, Account>,
    bucket_hashes: Vec<Hash32>,
    root: Hash32,
}

impl Default for State {
    fn default() -> Self {
        State::from_accounts(BTreeMap::new())
    }
}

impl State {
    /// Builds a state (and its commitment, in O(entries)) from a full set of accounts.
    pub fn from_accounts(accounts: BTreeMap<Address, Account>) -> State {
        let bucket_hashes: Vec<Hash32> = (0..BUCKETS)
            .map(|b| hash_entries(accounts.range(bucket_range(b))))
            .collect();
        let root = state_root(merkle::root(&bucket_hashes));
        State {
            accounts,
            bucket_hashes,
            root,
        }
    }

    /// The commitment to the whole state.
    pub fn root(&self) -> Hash32 {
        self.root
    }

    /// An account (the default, empty account if it was never touched).
    pub fn account(&self, address: &Address) -> Account {
        self.accounts.get(address).copied().unwrap_or_default()
    }

    pub fn accounts(&self) -> &BTreeMap<Address, Account> {
        &self.accounts
    }

    /// Sum of all balances (for supply checks).
    pub fn total_supply(&self) -> Amount {
        Amount(self.accounts.values().map(|a| a.balance.0).sum())
    }

    /// A scratch view for executing transactions without touching this state.
    pub fn overlay(&self) -> Overlay<'_> {
        Overlay {
            base: self,
            changes: BTreeMap::new(),
        }
    }

    /// Applies a finished overlay. `diff` must have been made from this very state.
    pub fn apply(&mut self, diff: StateDiff) {
        for (k, v) in diff.accounts {
            if v == Account::default() {
                self.accounts.remove(&k);
            } else {
                self.accounts.insert(k, v);
            }
        }
        for (b, h) in diff.bucket_hashes {
            self.bucket_hashes[b] = h;
        }
        debug_assert_eq!(state_root(merkle::root(&self.bucket_hashes)), diff.root);
        self.root = diff.root;
    }
}

/// The changes one block makes, with the commitment they lead to.
#[derive(Clone, Debug, Default)]
pub struct StateDiff {
    /// Changed accounts, new values (default value = deleted).
    pub accounts: BTreeMap<Address, Account>,
    bucket_hashes: Vec<(usize, Hash32)>,
    /// The state root after the changes.
    pub root: Hash32,
}

/// Pending changes over a read-only base state.
pub struct Overlay<'a> {
    base: &'a State,
    changes: BTreeMap<Address, Account>,
}

impl Overlay<'_> {
    pub fn account(&self, address: &Address) -> Account {
        self.changes
            .get(address)
            .copied()
            .unwrap_or_else(|| self.base.account(address))
    }

    /// Sets an account directly (genesis).
    pub fn set_account(&mut self, address: Address, account: Account) {
        self.changes.insert(address, account);
    }

    /// Checks and applies one verified transaction. On error nothing changed.
    pub fn apply_tx(&mut self, tx: &VerifiedTx, chain_id: &str) -> Result<Vec<Event>, TxError> {
        let body = &tx.tx().body;
        if body.chain_id != chain_id {
            return Err(TxError::WrongChainId {
                expected: chain_id.to_string(),
                got: body.chain_id.clone(),
            });
        }
        let mut sender = self.account(&body.sender);
        if body.nonce < sender.nonce {
            return Err(TxError::StaleNonce {
                expected: sender.nonce,
                got: body.nonce,
            });
        }
        if body.nonce > sender.nonce {
            return Err(TxError::FutureNonce {
                expected: sender.nonce,
                got: body.nonce,
            });
        }
        match body.kind {
            TxKind::Transfer { to, amount } => {
                let new_sender_balance =
                    sender
                        .balance
                        .checked_sub(amount)
                        .ok_or(TxError::InsufficientFunds {
                            balance: sender.balance,
                            needed: amount,
                        })?;
                if to == body.sender {
                    sender.nonce += 1;
                    self.changes.insert(body.sender, sender);
                } else {
                    let mut recipient = self.account(&to);
                    recipient.balance = recipient
                        .balance
                        .checked_add(amount)
                        .ok_or(TxError::BalanceOverflow)?;
                    sender.balance = new_sender_balance;
                    sender.nonce += 1;
                    self.changes.insert(body.sender, sender);
                    self.changes.insert(to, recipient);
                }
                Ok(vec![Event::Transfer {
                    from: body.sender,
                    to,
                    amount,
                }])
            }
        }
    }

    /// Computes the new commitment and returns the changes (the base is untouched).
    pub fn finish(self) -> StateDiff {
        let dirty: BTreeSet<usize> = self.changes.keys().map(|k| bucket_of(&k.0)).collect();
        let mut bucket_hashes = Vec::with_capacity(dirty.len());
        let mut all = self.base.bucket_hashes.clone();
        for b in dirty {
            let merged = merge(
                self.base.accounts.range(bucket_range(b)),
                self.changes.range(bucket_range(b)),
            );
            let h = hash_entries(merged.iter().map(|(k, v)| (*k, *v)));
            all[b] = h;
            bucket_hashes.push((b, h));
        }
        StateDiff {
            root: state_root(merkle::root(&all)),
            accounts: self.changes,
            bucket_hashes,
        }
    }
}

/// Merges two sorted runs; entries of `newer` replace those of `older` with the same key.
fn merge<'a>(
    older: impl Iterator<Item = (&'a Address, &'a Account)>,
    newer: impl Iterator<Item = (&'a Address, &'a Account)>,
) -> Vec<(&'a Address, &'a Account)> {
    let mut out = Vec::new();
    let mut older = older.peekable();
    let mut newer = newer.peekable();
    loop {
        match (older.peek(), newer.peek()) {
            (None, None) => return out,
            (Some(_), None) => out.push(older.next().unwrap()),
            (None, Some(_)) => out.push(newer.next().unwrap()),
            (Some(o), Some(n)) => match o.0.cmp(n.0) {
                std::cmp::Ordering::Less => out.push(older.next().unwrap()),
                std::cmp::Ordering::Greater => out.push(newer.next().unwrap()),
                std::cmp::Ordering::Equal => {
                    older.next();
                    out.push(newer.next().unwrap());
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::Keypair;
    use crate::tx::SignedTx;
    use proptest::prelude::*;

    const CHAIN: &str = "test-chain";

    #[test]
    fn incremental_root_equals_full_recompute() {
        let mut s = State::default();
        let keys: Vec<Keypair> = (0..50u8).map(|i| Keypair::from_seed([i; 32])).collect();
        let mut o = s.overlay();
        for k in &keys {
            o.set_account(
                k.address(),
                Account {
                    balance: Amount(1_000),
                    nonce: 0,
                },
            );
        }
        s.apply(o.finish());
        let tx = SignedTx::transfer(&keys[0], CHAIN, 0, keys[1].address(), Amount(10))
            .verify()
            .unwrap();
        let mut o = s.overlay();
        o.apply_tx(&tx, CHAIN).unwrap();
        let diff = o.finish();
        let before = s.root();
        s.apply(diff);
        assert_ne!(s.root(), before, "a balance change changes the root");
        assert_eq!(s.root(), State::from_accounts(s.accounts().clone()).root());
    }

    #[test]
    fn bucket_ranges_cover_keys() {
        for key in [[0u8; 32], [0xff; 32], [0x12; 32], [0x80; 32]] {
            let b = bucket_of(&key);
            let (lo, hi) = bucket_range(b);
            let a = Address(key);
            assert!(match lo {
                Bound::Included(l) => l <= a,
                _ => false,
            });
            assert!(match hi {
                Bound::Excluded(h) => a < h,
                Bound::Unbounded => true,
                _ => false,
            });
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Transfer {
            from: usize,
            to: usize,
            amount: u128,
            nonce_skew: i8,
        },
        WrongChain {
            from: usize,
        },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            8 => (0usize..6, 0usize..7, 0u128..2_000, prop_oneof![8 => Just(0i8), 1 => Just(-1i8), 1 => Just(1i8)])
                .prop_map(|(from, to, amount, nonce_skew)| Op::Transfer { from, to, amount, nonce_skew }),
            1 => (0usize..6).prop_map(|from| Op::WrongChain { from }),
        ]
    }

    proptest! {
        /// Random valid and invalid transactions: supply is conserved exactly, nonces move by one on
        /// success only, and a rejected transaction changes neither the accounts nor the root.
        #[test]
        fn conservation_nonces_and_no_effect_on_error(ops in proptest::collection::vec(op(), 1..60)) {
            let keys: Vec<Keypair> = (0..7u8).map(|i| Keypair::from_seed([i + 1; 32])).collect();
            let mut s = State::default();
            let mut o = s.overlay();
            for k in &keys[..6] {
                o.set_account(k.address(), Account { balance: Amount(5_000), nonce: 0 });
            }
            s.apply(o.finish());
            let supply = s.total_supply();
            for op in ops {
                let (from, tx) = match op {
                    Op::Transfer { from, to, amount, nonce_skew } => {
                        let n = s.account(&keys[from].address()).nonce as i64 + nonce_skew as i64;
                        let Ok(n) = u64::try_from(n) else { continue };
                        if amount == 0 { continue; }
                        (from, SignedTx::transfer(&keys[from], CHAIN, n, keys[to].address(), Amount(amount)))
                    }
                    Op::WrongChain { from } => {
                        let n = s.account(&keys[from].address()).nonce;
                        (from, SignedTx::transfer(&keys[from], "other", n, keys[0].address(), Amount(1)))
                    }
                };
                let tx = tx.verify().unwrap();
                let before_accounts = s.accounts().clone();
                let before_root = s.root();
                let before_nonce = s.account(&keys[from].address()).nonce;
                let mut o = s.overlay();
                match o.apply_tx(&tx, CHAIN) {
                    Ok(_) => {
                        s.apply(o.finish());
                        prop_assert_eq!(s.account(&keys[from].address()).nonce, before_nonce + 1);
                    }
                    Err(_) => {
                        let diff = o.finish();
                        prop_assert!(diff.accounts.is_empty());
                        prop_assert_eq!(diff.root, before_root);
                        prop_assert_eq!(s.accounts(), &before_accounts);
                    }
                }
                prop_assert_eq!(s.total_supply(), supply);
                prop_assert_eq!(s.root(), State::from_accounts(s.accounts().clone()).root());
            }
        }
    }
}
