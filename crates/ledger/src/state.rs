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
//! Namespaces: accounts (tag 1), and the key/value namespace (tag 2, see [`crate::kv`]) that holds
//! the market, devices and readings.
//!
//! # Rules
//! Execution is a pure function of the state and the transaction: integers only, checked arithmetic,
//! sorted collections (a hash map only for point lookups, sorted before use). A transaction is checked completely before it changes
//! anything, so a rejected transaction leaves the state exactly as it was.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::kv::{self, KvSpace};

use borsh::{BorshDeserialize, BorshSerialize};
use gridmesh_types::{Address, Amount, Hash32};
use serde::Serialize;

pub use crate::error::TxError;
use crate::merkle;

/// Bits of a key that select its bucket.
pub const BUCKET_BITS: u32 = 10;
/// Number of buckets per namespace.
pub const BUCKETS: usize = 1 << BUCKET_BITS;
const NS_ACCOUNTS: u8 = 1;
const NS_KV: u8 = 2;

/// An account: its balance and the nonce its next transaction must carry.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize,
)]
pub struct Account {
    pub balance: Amount,
    pub nonce: u64,
}

/// An effect of a committed transaction that the transaction does not state itself. A plain
/// transfer has none (its receipt says it succeeded; the transaction says what moved). Later kinds
/// (settlement payouts, reward minting) record the token movements they cause here.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    Transfer {
        from: Address,
        to: Address,
        amount: Amount,
    },
    /// A market order was placed; `escrow` is what it locked (a bid's maximum cost, an ask's
    /// collateral against falling short).
    OrderPlaced {
        slot: u64,
        order_id: u64,
        escrow: Amount,
    },
    /// An order was cancelled and its escrow returned.
    OrderCancelled {
        slot: u64,
        order_id: u64,
        refund: Amount,
    },
    /// A device was registered under its owner with this index.
    DeviceRegistered {
        index: u32,
    },
    /// A meter reading was recorded; `settled_trades` of the sender's trades were settled by it
    /// (a late reading re-settling trades that had only an estimate).
    ReadingRecorded {
        slot: u64,
        settled_trades: u32,
    },
    /// The grid operator set a connection's envelope for a slot.
    EnvelopeSet {
        slot: u64,
    },
    /// The grid operator set a slot's utility tariff.
    TariffSet {
        slot: u64,
    },
    /// The islanding controller's transition number `seq` was recorded.
    GridEvent {
        seq: u64,
    },
    /// A device was registered with its own key (its bond locked).
    DeviceKeyRegistered {
        device: Address,
    },
    DeviceTransferred {
        device: Address,
        to: Address,
    },
    /// A device was retired and its bond returned.
    DeviceDecommissioned {
        device: Address,
        refund: Amount,
    },
    /// A gateway's batch of device readings was recorded (checked when the slot settles).
    DeviceReadingsRecorded {
        count: u32,
    },
    /// A physics fraud report opened a dispute that slashes at `resolves_ms` unless dismissed.
    DisputeOpened {
        device: Address,
        slot: u64,
        resolves_ms: u64,
    },
    /// A device's bond was slashed for a proven false reading.
    DeviceSlashed {
        device: Address,
        amount: Amount,
        to_reporter: Amount,
    },
}

fn bucket_of(key: &Address) -> usize {
    ((u16::from(key.0[0]) << 8 | u16::from(key.0[1])) >> (16 - BUCKET_BITS)) as usize
}

/// One bucket's accounts, sorted by address, without default (empty) accounts.
pub type Bucket = Vec<(Address, Account)>;

fn hash_bucket(entries: &[(Address, Account)]) -> Hash32 {
    // One buffer, one hash call (see `kv::hash_bucket`).
    let mut buf = Vec::with_capacity(entries.len() * 56);
    for (k, v) in entries {
        debug_assert_ne!(*v, Account::default(), "default accounts are not stored");
        buf.extend_from_slice(&k.0);
        buf.extend_from_slice(&v.balance.0.to_le_bytes());
        buf.extend_from_slice(&v.nonce.to_le_bytes());
    }
    Hash32(*blake3::hash(&buf).as_bytes())
}

fn state_root(accounts_root: Hash32, kv_root: Hash32) -> Hash32 {
    let mut h = blake3::Hasher::new();
    h.update(b"gridmesh/state/v1");
    h.update(&[NS_ACCOUNTS]);
    h.update(&accounts_root.0);
    h.update(&[NS_KV]);
    h.update(&kv_root.0);
    Hash32(*h.finalize().as_bytes())
}

/// The complete ledger state with its cached commitment.
///
/// Accounts live in [`BUCKETS`] sorted vectors, one per commitment bucket: a lookup is a binary
/// search in a small vector, and a block replaces the buckets it touched wholesale. Buckets are
/// shared between clones, so cloning a state costs O(BUCKETS), whatever the number of accounts: a
/// BFT replica keeps one state per executed-but-not-yet-finalised block this way.
#[derive(Clone, Debug)]
pub struct State {
    buckets: Vec<Arc<Bucket>>,
    /// The account buckets' hashes and the tree over them.
    tree: merkle::Tree,
    kv: KvSpace,
    root: Hash32,
}

impl Default for State {
    fn default() -> Self {
        State::from_accounts(std::iter::empty())
    }
}

impl State {
    /// Builds a state (and its commitment, in O(entries)) from a full set of accounts.
    /// Later duplicates of an address replace earlier ones; default accounts are dropped.
    pub fn from_accounts(accounts: impl IntoIterator<Item = (Address, Account)>) -> State {
        State::from_parts(accounts, KvSpace::default())
    }

    /// Builds a state from its accounts and its key/value namespace.
    pub fn from_parts(
        accounts: impl IntoIterator<Item = (Address, Account)>,
        kv: KvSpace,
    ) -> State {
        let sorted: BTreeMap<Address, Account> = accounts.into_iter().collect();
        let mut buckets: Vec<Bucket> = vec![Vec::new(); BUCKETS];
        for (k, v) in sorted {
            if v != Account::default() {
                buckets[bucket_of(&k)].push((k, v));
            }
        }
        let bucket_hashes: Vec<Hash32> = buckets.iter().map(|b| hash_bucket(b)).collect();
        let buckets = buckets.into_iter().map(Arc::new).collect();
        let tree = merkle::Tree::new(bucket_hashes);
        let root = state_root(tree.root(), kv.root());
        State {
            buckets,
            tree,
            kv,
            root,
        }
    }

    /// The key/value namespace (market, devices, readings).
    pub fn kv(&self) -> &KvSpace {
        &self.kv
    }

    /// The commitment to the whole state.
    pub fn root(&self) -> Hash32 {
        self.root
    }

    /// An account (the default, empty account if it was never touched).
    pub fn account(&self, address: &Address) -> Account {
        let bucket = &self.buckets[bucket_of(address)];
        bucket
            .binary_search_by(|(k, _)| k.cmp(address))
            .map(|i| bucket[i].1)
            .unwrap_or_default()
    }

    /// All non-empty accounts in address order.
    pub fn iter(&self) -> impl Iterator<Item = &(Address, Account)> {
        self.buckets.iter().flat_map(|b| b.iter())
    }

    /// The buckets, in order (bucket `i` holds the addresses whose first bits are `i`).
    pub fn buckets(&self) -> impl Iterator<Item = (usize, &[(Address, Account)])> {
        self.buckets
            .iter()
            .enumerate()
            .map(|(i, b)| (i, b.as_slice()))
    }

    /// Number of non-empty accounts.
    pub fn len(&self) -> usize {
        self.buckets.iter().map(|b| b.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Sum of all balances (for supply checks).
    pub fn total_supply(&self) -> Amount {
        Amount(self.iter().map(|(_, a)| a.balance.0).sum())
    }

    /// A scratch view for executing transactions without touching this state.
    pub fn overlay(&self) -> Overlay<'_> {
        Overlay {
            base: self,
            changes: HashMap::new(),
            kv: BTreeMap::new(),
        }
    }

    /// Applies a finished overlay. `diff` must have been made from this very state.
    pub fn apply(&mut self, diff: StateDiff) {
        for (b, entries, hash) in diff.buckets {
            self.buckets[b] = Arc::new(entries);
            debug_assert_eq!(diff.tree.leaves()[b], hash);
        }
        self.tree = diff.tree;
        self.kv.apply(diff.kv, diff.kv_tree);
        debug_assert_eq!(
            state_root(merkle::root(self.tree.leaves()), self.kv.root()),
            diff.root
        );
        self.root = diff.root;
    }
}

/// Where a transaction executes: the chain, and the block and position it is in. Block time is the
/// header's timestamp, the only clock the state machine sees.
#[derive(Clone, Copy, Debug)]
pub struct TxContext<'a> {
    pub chain_id: &'a str,
    pub height: u64,
    pub timestamp_ms: u64,
    /// Index of the transaction in its block.
    pub index: u32,
    /// The device readings the transaction carries (if any) were verified with the block's
    /// batch ([`crate::chain`]): their handler need not check each signature again.
    pub readings_verified: bool,
}

/// A transaction in execution: who sent it and where it runs (what every handler needs besides
/// the transaction's own fields).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Origin<'c> {
    pub sender: Address,
    pub ctx: &'c TxContext<'c>,
}

impl Origin<'_> {
    /// Block time, the only clock of the state machine.
    pub fn now_ms(&self) -> u64 {
        self.ctx.timestamp_ms
    }
}

impl TxContext<'_> {
    /// Arrival order for market priority: block height, then index in the block.
    pub fn arrival(&self) -> u64 {
        self.height << 32 | u64::from(self.index)
    }
}

/// The changes one block makes, with the commitment they lead to.
#[derive(Clone, Debug)]
pub struct StateDiff {
    /// Every touched account bucket's new contents and hash.
    pub buckets: Vec<(usize, Bucket, Hash32)>,
    /// Every touched key/value bucket's new contents and hash.
    pub kv: Vec<(usize, kv::KvBucket, Hash32)>,
    /// The tree over the account buckets' hashes after the changes.
    pub tree: merkle::Tree,
    /// The tree over the key/value buckets' hashes after the changes.
    pub kv_tree: merkle::Tree,
    /// The state root after the changes.
    pub root: Hash32,
}

impl StateDiff {
    /// Whether the diff changes nothing.
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty() && self.kv.is_empty()
    }
}

/// Pending changes over a read-only base state.
///
/// Changes are kept in a hash map for O(1) point lookups (keyed with a random SipHash key, so
/// chosen addresses cannot degrade it); [`Overlay::finish`] sorts them before anything depends on
/// their order, so hash-map order never reaches the state or its root.
pub struct Overlay<'a> {
    base: &'a State,
    changes: HashMap<Address, Account>,
    /// Key/value changes (`None` deletes), sorted.
    kv: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
}

impl Overlay<'_> {
    pub fn account(&self, address: &Address) -> Account {
        self.changes
            .get(address)
            .copied()
            .unwrap_or_else(|| self.base.account(address))
    }

    pub(crate) fn set(&mut self, address: Address, account: Account) {
        self.changes.insert(address, account);
    }

    /// Sets an account directly (genesis, tests).
    pub fn set_account(&mut self, address: Address, account: Account) {
        self.set(address, account);
    }

    /// The base state this overlay writes over.
    pub fn base(&self) -> &State {
        self.base
    }

    /// A key/value entry, with this overlay's changes.
    pub fn kv_get(&self, key: &[u8]) -> Option<Vec<u8>> {
        match self.kv.get(key) {
            Some(v) => v.clone(),
            None => self.base.kv.get(key).map(<[u8]>::to_vec),
        }
    }

    pub fn kv_put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.kv.insert(key, Some(value));
    }

    pub fn kv_delete(&mut self, key: Vec<u8>) {
        self.kv.insert(key, None);
    }

    /// Entries under `prefix` (at least `tag ‖ group`), with this overlay's changes, in key order.
    pub fn kv_scan(&self, prefix: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut out = Vec::new();
        self.kv_visit(prefix, |k, v| out.push((k.to_vec(), v.to_vec())));
        out
    }

    /// Calls `f` with each entry under `prefix` (at least `tag ‖ group`), with this overlay's
    /// changes, in key order, without copying them (the hot paths of transactions).
    pub fn kv_visit(&self, prefix: &[u8], mut f: impl FnMut(&[u8], &[u8])) {
        self.kv_visit_while(prefix, |k, v| {
            f(k, v);
            std::ops::ControlFlow::Continue(())
        });
    }

    /// [`Overlay::kv_visit`] until `f` breaks.
    pub fn kv_visit_while(
        &self,
        prefix: &[u8],
        mut f: impl FnMut(&[u8], &[u8]) -> std::ops::ControlFlow<()>,
    ) {
        let base = self.base.kv.scan(prefix);
        let mut changes = self
            .kv
            .range::<[u8], _>((
                std::ops::Bound::Included(prefix),
                std::ops::Bound::Unbounded,
            ))
            .take_while(|(k, _)| k.starts_with(prefix))
            .peekable();
        let mut base = base.peekable();
        loop {
            let take_change = match (base.peek(), changes.peek()) {
                (None, None) => break,
                (Some(_), None) => false,
                (None, Some(_)) => true,
                (Some((bk, _)), Some((ck, _))) => match (*bk).cmp(ck.as_slice()) {
                    std::cmp::Ordering::Less => false,
                    std::cmp::Ordering::Greater => true,
                    std::cmp::Ordering::Equal => {
                        base.next();
                        true
                    }
                },
            };
            let flow = if take_change {
                match changes.next().expect("peeked") {
                    (k, Some(v)) => f(k, v),
                    (_, None) => std::ops::ControlFlow::Continue(()),
                }
            } else {
                let (k, v) = base.next().expect("peeked");
                f(k, v)
            };
            if flow.is_break() {
                break;
            }
        }
    }

    /// Creates `amount` in `to` (rewards; the caller records it in the supply).
    pub(crate) fn mint(&mut self, to: Address, amount: Amount) -> Result<(), TxError> {
        let mut t = self.account(&to);
        t.balance = t
            .balance
            .checked_add(amount)
            .ok_or(TxError::BalanceOverflow)?;
        self.set(to, t);
        Ok(())
    }

    /// Moves `amount` between accounts (no nonce change); fails without effect if `from` lacks it.
    pub(crate) fn move_funds(
        &mut self,
        from: Address,
        to: Address,
        amount: Amount,
    ) -> Result<(), TxError> {
        if amount.is_zero() || from == to {
            return Ok(());
        }
        let mut f = self.account(&from);
        let mut t = self.account(&to);
        f.balance = f
            .balance
            .checked_sub(amount)
            .ok_or(TxError::InsufficientFunds {
                balance: f.balance,
                needed: amount,
            })?;
        t.balance = t
            .balance
            .checked_add(amount)
            .ok_or(TxError::BalanceOverflow)?;
        self.set(from, f);
        self.set(to, t);
        Ok(())
    }

    /// Computes the touched buckets' new contents and the new commitment (the base is untouched).
    pub fn finish(self) -> StateDiff {
        let mut kv_touched = Vec::new();
        // Group by bucket, keys sorted within. A key's bucket hashes its group (tag and group);
        // the keys of one group are adjacent in key order, so each group is hashed once.
        let mut last: Option<(&[u8], usize)> = None;
        let mut kv_changes: Vec<_> = self
            .kv
            .iter()
            .map(|(k, v)| {
                let group = k.get(..kv::GROUP_LEN);
                let b = match last {
                    Some((g, b)) if Some(g) == group => b,
                    _ => kv::bucket_of(k),
                };
                last = group.map(|g| (g, b));
                (b, k, v)
            })
            .collect();
        kv_changes.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
        for group in kv_changes.chunk_by(|a, b| a.0 == b.0) {
            let b = group[0].0;
            let entries: Vec<(&Vec<u8>, &Option<Vec<u8>>)> =
                group.iter().map(|(_, k, v)| (*k, *v)).collect();
            let merged = kv::merge(self.base.kv.bucket(b), &entries);
            let hash = kv::hash_bucket(&merged);
            kv_touched.push((b, merged, hash));
        }
        let kv_tree = self
            .base
            .kv
            .tree()
            .updated(kv_touched.iter().map(|(b, _, h)| (*b, *h)));
        let mut buckets = Vec::new();
        let mut changes: Vec<(Address, Account)> = self.changes.into_iter().collect();
        changes.sort_unstable_by_key(|(address, _)| *address);
        for group in changes.chunk_by(|a, b| bucket_of(&a.0) == bucket_of(&b.0)) {
            let b = bucket_of(&group[0].0);
            let merged = merge(&self.base.buckets[b], group);
            let hash = hash_bucket(&merged);
            buckets.push((b, merged, hash));
        }
        let tree = self
            .base
            .tree
            .updated(buckets.iter().map(|(b, _, h)| (*b, *h)));
        StateDiff {
            root: state_root(tree.root(), kv_tree.root()),
            buckets,
            kv: kv_touched,
            tree,
            kv_tree,
        }
    }
}

/// Merges a sorted bucket with sorted, distinct changes (changes win); drops default accounts.
fn merge(older: &[(Address, Account)], newer: &[(Address, Account)]) -> Bucket {
    let mut out = Vec::with_capacity(older.len() + newer.len());
    let mut older = older.iter().copied().peekable();
    let mut newer = newer.iter().copied().peekable();
    loop {
        let next = match (older.peek(), newer.peek()) {
            (None, None) => break,
            (Some(_), None) => older.next(),
            (None, Some(_)) => newer.next(),
            (Some(o), Some(n)) => match o.0.cmp(&n.0) {
                std::cmp::Ordering::Less => older.next(),
                std::cmp::Ordering::Greater => newer.next(),
                std::cmp::Ordering::Equal => {
                    older.next();
                    newer.next()
                }
            },
        };
        let (k, v) = next.expect("peeked");
        if v != Account::default() {
            out.push((k, v));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::Keypair;
    use crate::tx::SignedTx;
    use proptest::prelude::*;

    const CHAIN: &str = "test-chain";

    fn ctx() -> TxContext<'static> {
        TxContext {
            chain_id: CHAIN,
            height: 1,
            timestamp_ms: 1,
            index: 0,
            readings_verified: false,
        }
    }

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
        let mut o = crate::dispatch::BlockExecution::begin(&s, 1, 1);
        o.apply_tx(&tx.tx().body, &ctx()).unwrap();
        let diff = o.finish();
        let before = s.root();
        s.apply(diff);
        assert_ne!(s.root(), before, "a balance change changes the root");
        assert_eq!(s.root(), State::from_accounts(s.iter().copied()).root());
        assert_eq!(s.len(), 50);
    }

    #[test]
    fn buckets_follow_address_order() {
        assert_eq!(bucket_of(&Address([0; 32])), 0);
        assert_eq!(bucket_of(&Address([0xff; 32])), BUCKETS - 1);
        let s = State::from_accounts((0..=255u8).map(|i| {
            (
                Address([i; 32]),
                Account {
                    balance: Amount(1),
                    nonce: 0,
                },
            )
        }));
        let order: Vec<Address> = s.iter().map(|(a, _)| *a).collect();
        let mut sorted = order.clone();
        sorted.sort();
        assert_eq!(
            order, sorted,
            "iterating buckets in order yields addresses in order"
        );
        assert_eq!(s.account(&Address([7; 32])).balance, Amount(1));
        let mut near = [7u8; 32];
        near[31] = 8;
        assert_eq!(s.account(&Address(near)), Account::default());
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
                let before_accounts: Vec<(Address, Account)> = s.iter().copied().collect();
                let before_root = s.root();
                let before_nonce = s.account(&keys[from].address()).nonce;
                let mut o = crate::dispatch::BlockExecution::begin(&s, 1, 1);
                match o.apply_tx(&tx.tx().body, &ctx()) {
                    Ok(_) => {
                        s.apply(o.finish());
                        prop_assert_eq!(s.account(&keys[from].address()).nonce, before_nonce + 1);
                    }
                    Err(_) => {
                        let diff = o.finish();
                        prop_assert!(diff.is_empty());
                        prop_assert_eq!(diff.root, before_root);
                        prop_assert_eq!(s.iter().copied().collect::<Vec<_>>(), before_accounts);
                    }
                }
                prop_assert_eq!(s.total_supply(), supply);
                prop_assert_eq!(s.root(), State::from_accounts(s.iter().copied()).root());
            }
        }
    }
}
