//! The key/value namespace of the state: everything beyond account balances (market orders,
//! trades, devices, readings, settlement records), as Borsh-encoded values under byte keys.
//!
//! A key is `tag (1 byte) ‖ group (8 bytes, big-endian) ‖ rest`. All keys of one `tag ‖ group`
//! prefix (say, every order of one slot) live in one commitment bucket, chosen by the first
//! [`KV_BUCKET_BITS`] bits of `BLAKE3(tag ‖ group)`, so a prefix scan reads one sorted vector and
//! a block that adds to one slot rehashes one bucket. A bucket's hash is `H(len(k) ‖ k ‖ len(v) ‖ v
//! …)` in key order; the namespace root is the Merkle root over the bucket hashes.

use std::collections::BTreeMap;
use std::sync::Arc;

use borsh::{BorshDeserialize, BorshSerialize};
use gridmesh_types::Hash32;

use crate::merkle;

/// Bits of a group hash that select its bucket.
pub const KV_BUCKET_BITS: u32 = 10;
/// Buckets of the key/value namespace.
pub const KV_BUCKETS: usize = 1 << KV_BUCKET_BITS;
/// Length of the `tag ‖ group` prefix that selects the bucket.
pub const GROUP_LEN: usize = 9;

/// One entry: key and Borsh-encoded value, shared by the states that hold it: a block that
/// touches a bucket copies its other entries by reference, not byte by byte.
pub type KvEntry = Arc<(Vec<u8>, Vec<u8>)>;
/// One bucket: entries sorted by key.
pub type KvBucket = Vec<KvEntry>;

/// A key: `tag ‖ group ‖ rest`.
pub(crate) fn key(tag: u8, group: u64, rest: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(GROUP_LEN + rest.len());
    k.push(tag);
    k.extend_from_slice(&group.to_be_bytes());
    k.extend_from_slice(rest);
    k
}

/// Every namespace of the key/value space, in one place: each concern's records live under their
/// own tag, and no two concerns can share one (the discriminants are the bytes in the keys, so
/// they never change).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub(crate) enum Tag {
    // The market (`crate::config`, `crate::market`).
    MarketConfig = 1,
    MarketMeta = 2,
    /// Slots with orders waiting for clearing (group 0, slot in the rest).
    OpenSlot = 3,
    Order = 4,
    Slot = 6,
    Trade = 7,
    SettleDue = 8,
    FinalDue = 9,
    Reading = 11,
    Seller = 12,
    PruneDue = 20,
    // Devices and proof of generation (`crate::devices`).
    Device = 10,
    DeviceKey = 16,
    DeviceReading = 17,
    VerifiedExport = 18,
    OwnedDevice = 19,
    // The grid operator (`crate::grid_operator`).
    Envelope = 13,
    GridMode = 14,
    GridEvent = 15,
    /// A slot's utility tariff in place of the genesis one (`SetTariff`).
    Tariff = 21,
    // Economics (`crate::economics`).
    EconomicsConfig = 30,
    Supply = 31,
    Points = 32,
    EpochDue = 33,
    Epoch = 34,
    Dispute = 35,
    DisputeDue = 36,
    Flex = 37,
    Asset = 38,
    AssetRevenue = 39,
}

impl Tag {
    /// Every tag, for the registry's own checks.
    #[cfg(test)]
    const ALL: [Tag; 30] = [
        Tag::MarketConfig,
        Tag::MarketMeta,
        Tag::OpenSlot,
        Tag::Order,
        Tag::Slot,
        Tag::Trade,
        Tag::SettleDue,
        Tag::FinalDue,
        Tag::Reading,
        Tag::Seller,
        Tag::PruneDue,
        Tag::Device,
        Tag::DeviceKey,
        Tag::DeviceReading,
        Tag::VerifiedExport,
        Tag::OwnedDevice,
        Tag::Envelope,
        Tag::GridMode,
        Tag::GridEvent,
        Tag::Tariff,
        Tag::EconomicsConfig,
        Tag::Supply,
        Tag::Points,
        Tag::EpochDue,
        Tag::Epoch,
        Tag::Dispute,
        Tag::DisputeDue,
        Tag::Flex,
        Tag::Asset,
        Tag::AssetRevenue,
    ];
}

/// Encodes a state record.
pub(crate) fn encode<T: BorshSerialize>(v: &T) -> Vec<u8> {
    borsh::to_vec(v).expect("encoding to a Vec cannot fail")
}

/// Decodes a record the state machine wrote itself; failure means corrupted state (a bug).
pub(crate) fn decode<T: BorshDeserialize>(bytes: &[u8]) -> T {
    borsh::from_slice(bytes).expect("state records decode")
}

/// The key layout of every record, by concern. Only the ledger builds keys: the node, its API and
/// the simulator read through [`crate::readers`].
pub(crate) mod keys {
    use super::{key, Tag, GROUP_LEN};
    use gridmesh_types::Address;

    /// Keys grouped by owner spread one owner's records over one bucket.
    fn owner_group(a: &Address) -> u64 {
        u64::from_be_bytes(a.0[..8].try_into().expect("8 bytes"))
    }

    /// Every key of `tag` in `group` (a slot's records of one kind, say).
    pub fn group(tag: Tag, group: u64) -> Vec<u8> {
        key(tag as u8, group, &[])
    }

    /// A due index entry: `due_ms ‖ rest` in group 0, so a scan yields them in due order.
    pub fn due(tag: Tag, due_ms: u64, rest: &[u8]) -> Vec<u8> {
        let mut r = due_ms.to_be_bytes().to_vec();
        r.extend_from_slice(rest);
        key(tag as u8, 0, &r)
    }

    /// The due time of a [`due`] key.
    pub fn due_ms_of(k: &[u8]) -> u64 {
        u64::from_be_bytes(k[GROUP_LEN..GROUP_LEN + 8].try_into().expect("due key"))
    }

    /// What follows the due time in a [`due`] key.
    pub fn due_rest_of(k: &[u8]) -> &[u8] {
        &k[GROUP_LEN + 8..]
    }

    /// The slot of a [`slot_due`] key.
    pub fn due_slot_of(k: &[u8]) -> u64 {
        u64::from_be_bytes(due_rest_of(k)[..8].try_into().expect("slot due key"))
    }

    /// The area of a [`flex`] key (`None` if it is not text, which the ledger never writes).
    pub fn flex_area_of(k: &[u8]) -> Option<&str> {
        std::str::from_utf8(&k[GROUP_LEN..]).ok()
    }

    /// The `u64` that follows the group (a slot, order id or due time).
    pub fn u64_after_group(k: &[u8]) -> u64 {
        u64::from_be_bytes(
            k[GROUP_LEN..GROUP_LEN + 8]
                .try_into()
                .expect("u64 after group"),
        )
    }

    /// The address a key ends with.
    pub fn address_at_end(k: &[u8]) -> Address {
        Address(
            k[k.len() - 32..]
                .try_into()
                .expect("key ends with an address"),
        )
    }

    // The market.
    pub fn market_config() -> Vec<u8> {
        key(Tag::MarketConfig as u8, 0, &[])
    }
    pub fn market_meta() -> Vec<u8> {
        key(Tag::MarketMeta as u8, 0, &[])
    }
    pub fn open_slot(slot: u64) -> Vec<u8> {
        key(Tag::OpenSlot as u8, 0, &slot.to_be_bytes())
    }
    pub fn order(slot: u64, id: u64) -> Vec<u8> {
        key(Tag::Order as u8, slot, &id.to_be_bytes())
    }
    pub fn slot(slot: u64) -> Vec<u8> {
        key(Tag::Slot as u8, slot, &[])
    }
    pub fn trade(slot: u64, index: u32) -> Vec<u8> {
        key(Tag::Trade as u8, slot, &index.to_be_bytes())
    }
    pub fn slot_due(tag: Tag, due_ms: u64, slot: u64) -> Vec<u8> {
        due(tag, due_ms, &slot.to_be_bytes())
    }
    pub fn reading(slot: u64, who: &Address) -> Vec<u8> {
        key(Tag::Reading as u8, slot, &who.0)
    }
    pub fn seller(slot: u64, who: &Address) -> Vec<u8> {
        key(Tag::Seller as u8, slot, &who.0)
    }

    // Devices.
    pub fn device(owner: &Address, index: u32) -> Vec<u8> {
        let mut rest = owner.0.to_vec();
        rest.extend_from_slice(&index.to_be_bytes());
        key(Tag::Device as u8, owner_group(owner), &rest)
    }
    pub fn devices(owner: &Address) -> Vec<u8> {
        key(Tag::Device as u8, owner_group(owner), &owner.0)
    }
    /// A device's identity, in one of 16 groups by its key's first 4 bits: settlement rewrites
    /// the register of every device that reported in a slot, and a few larger buckets cost a
    /// block far less to copy and rehash than one bucket per device.
    pub fn device_identity(device: &Address) -> Vec<u8> {
        key(Tag::DeviceKey as u8, owner_group(device) >> 60, &device.0)
    }
    pub fn owned_device(owner: &Address, device: &Address) -> Vec<u8> {
        let mut rest = owner.0.to_vec();
        rest.extend_from_slice(&device.0);
        key(Tag::OwnedDevice as u8, owner_group(owner), &rest)
    }
    pub fn owned_devices(owner: &Address) -> Vec<u8> {
        key(Tag::OwnedDevice as u8, owner_group(owner), &owner.0)
    }
    pub fn device_reading(slot: u64, device: &Address) -> Vec<u8> {
        key(Tag::DeviceReading as u8, slot, &device.0)
    }
    pub fn verified_export(slot: u64, owner: &Address) -> Vec<u8> {
        key(Tag::VerifiedExport as u8, slot, &owner.0)
    }

    // The grid operator.
    pub fn envelope(slot: u64, location: &str) -> Vec<u8> {
        key(
            Tag::Envelope as u8,
            slot,
            blake3::hash(location.as_bytes()).as_bytes(),
        )
    }
    pub fn tariff(slot: u64) -> Vec<u8> {
        key(Tag::Tariff as u8, slot, &[])
    }
    pub fn grid_mode() -> Vec<u8> {
        key(Tag::GridMode as u8, 0, &[])
    }
    pub fn grid_event(seq: u64) -> Vec<u8> {
        key(Tag::GridEvent as u8, 0, &seq.to_be_bytes())
    }

    // Economics.
    pub fn economics_config() -> Vec<u8> {
        key(Tag::EconomicsConfig as u8, 0, &[])
    }
    pub fn supply() -> Vec<u8> {
        key(Tag::Supply as u8, 0, &[])
    }
    pub fn points(epoch: u64, owner: &Address) -> Vec<u8> {
        key(Tag::Points as u8, epoch, &owner.0)
    }
    pub fn epoch(epoch: u64) -> Vec<u8> {
        key(Tag::Epoch as u8, 0, &epoch.to_be_bytes())
    }
    pub fn dispute(slot: u64, device: &Address) -> Vec<u8> {
        key(Tag::Dispute as u8, slot, &device.0)
    }
    pub fn flex(slot: u64, area: &str) -> Vec<u8> {
        key(Tag::Flex as u8, slot, area.as_bytes())
    }
    pub fn asset(asset: &Address) -> Vec<u8> {
        key(Tag::Asset as u8, 0, &asset.0)
    }
    pub fn asset_revenue(epoch: u64, asset: &Address) -> Vec<u8> {
        key(Tag::AssetRevenue as u8, epoch, &asset.0)
    }
}

/// The bucket of a key (or of a prefix at least [`GROUP_LEN`] long): the first
/// [`KV_BUCKET_BITS`] of its group's BLAKE3 hash.
///
/// Every read and write of the key/value space asks for it, and a block's keys share a few
/// groups (a slot's readings, an owner group's devices), so each thread remembers the groups it
/// met last ([`GROUP_CACHE_SLOTS`], direct-mapped): a hit is a few integer operations where
/// the hash of nine bytes costs about a tenth of a microsecond. Same answer either way.
pub fn bucket_of(key: &[u8]) -> usize {
    assert!(key.len() >= GROUP_LEN, "keys start with tag and group");
    let group: [u8; GROUP_LEN] = key[..GROUP_LEN].try_into().expect("GROUP_LEN bytes");
    thread_local! {
        static SEEN: std::cell::RefCell<Vec<Option<SeenGroup>>> =
            std::cell::RefCell::new(vec![None; GROUP_CACHE_SLOTS]);
    }
    let word = u64::from_le_bytes(group[1..].try_into().expect("8 bytes")) ^ u64::from(group[0]);
    let slot = (word.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 54) as usize % GROUP_CACHE_SLOTS;
    SEEN.with(|seen| {
        let mut seen = seen.borrow_mut();
        match seen[slot] {
            Some((g, b)) if g == group => usize::from(b),
            _ => {
                let b = bucket_of_group(&group);
                seen[slot] = Some((group, b as u16));
                b
            }
        }
    })
}

/// Groups each thread remembers the bucket of ([`bucket_of`]).
const GROUP_CACHE_SLOTS: usize = 1024;

/// A group met and its bucket.
type SeenGroup = ([u8; GROUP_LEN], u16);

fn bucket_of_group(group: &[u8; GROUP_LEN]) -> usize {
    let h = blake3::hash(group);
    let b = h.as_bytes();
    ((u16::from(b[0]) << 8 | u16::from(b[1])) >> (16 - KV_BUCKET_BITS)) as usize
}

/// A bucket's commitment: `H(len(k) ‖ k ‖ len(v) ‖ v …)` in key order, lengths as `u32` LE.
///
/// The stream is laid out in one buffer and hashed in one call: BLAKE3 then hashes its 1 KiB
/// chunks side by side in SIMD lanes, where feeding it entry by entry (four small updates each)
/// cost several times more on the ledger's busiest buckets. Same bytes, same hash.
pub fn hash_bucket(entries: &[KvEntry]) -> Hash32 {
    let len: usize = entries.iter().map(|e| 8 + e.0.len() + e.1.len()).sum();
    let mut buf = Vec::with_capacity(len);
    for e in entries {
        let (k, v) = &**e;
        buf.extend_from_slice(&(k.len() as u32).to_le_bytes());
        buf.extend_from_slice(k);
        buf.extend_from_slice(&(v.len() as u32).to_le_bytes());
        buf.extend_from_slice(v);
    }
    Hash32(*blake3::hash(&buf).as_bytes())
}

/// Bytes of a key kept inline in a bucket's search index: tag, group and the next 15 bytes
/// (enough to tell apart the addresses and order ids that follow the group).
const HEAD_LEN: usize = 24;
/// A key's head as three big-endian words: they compare as the bytes do, in three integer
/// comparisons instead of a call to `memcmp` at every step of a lookup's binary search.
type Head = [u64; HEAD_LEN / 8];

/// A key's first [`HEAD_LEN`] bytes, zero-padded. Heads order like keys, except that keys with
/// the same head may be in either order: `head(a) < head(b)` implies `a < b`.
fn head(key: &[u8]) -> Head {
    let mut h = [0; HEAD_LEN];
    let n = key.len().min(HEAD_LEN);
    h[..n].copy_from_slice(&key[..n]);
    std::array::from_fn(|i| u64::from_be_bytes(h[8 * i..8 * i + 8].try_into().expect("8 bytes")))
}

fn heads(bucket: &[KvEntry]) -> Arc<[Head]> {
    bucket.iter().map(|e| head(&e.0)).collect()
}

/// The key/value namespace with its cached commitment; cheap to clone (buckets are shared).
///
/// Each bucket carries the heads of its keys in one contiguous array: a lookup binary-searches
/// that (a few cache lines) and compares whole keys, which live in separate allocations, only
/// among entries with the same head. The index is derived, never committed.
#[derive(Clone, Debug)]
pub struct KvSpace {
    buckets: Vec<Arc<KvBucket>>,
    heads: Vec<Arc<[Head]>>,
    /// The buckets' hashes and the tree over them.
    tree: merkle::Tree,
}

impl Default for KvSpace {
    fn default() -> Self {
        KvSpace::from_entries(std::iter::empty())
    }
}

impl KvSpace {
    /// Builds the namespace from all its entries (later duplicates win).
    pub fn from_entries(entries: impl IntoIterator<Item = (Vec<u8>, Vec<u8>)>) -> KvSpace {
        let sorted: BTreeMap<Vec<u8>, Vec<u8>> = entries.into_iter().collect();
        let mut buckets: Vec<KvBucket> = vec![Vec::new(); KV_BUCKETS];
        for (k, v) in sorted {
            buckets[bucket_of(&k)].push(Arc::new((k, v)));
        }
        let hashes: Vec<Hash32> = buckets.iter().map(|b| hash_bucket(b)).collect();
        KvSpace {
            tree: merkle::Tree::new(hashes),
            heads: buckets.iter().map(|b| heads(b)).collect(),
            buckets: buckets.into_iter().map(Arc::new).collect(),
        }
    }

    /// The first position in bucket `b` whose key is not below `key`.
    fn lower_bound(&self, b: usize, key: &[u8]) -> usize {
        let (entries, heads) = (&self.buckets[b], &self.heads[b]);
        let h = head(key);
        let lo = heads.partition_point(|x| *x < h);
        let hi = lo + heads[lo..].partition_point(|x| *x == h);
        lo + entries[lo..hi].partition_point(|e| e.0.as_slice() < key)
    }

    pub fn root(&self) -> Hash32 {
        self.tree.root()
    }

    pub fn get(&self, key: &[u8]) -> Option<&[u8]> {
        let b = bucket_of(key);
        let i = self.lower_bound(b, key);
        self.buckets[b]
            .get(i)
            .filter(|e| e.0.as_slice() == key)
            .map(|e| e.1.as_slice())
    }

    /// Entries whose key starts with `prefix` (at least [`GROUP_LEN`] bytes), in key order.
    pub fn scan<'a>(&'a self, prefix: &'a [u8]) -> impl Iterator<Item = (&'a [u8], &'a [u8])> + 'a {
        let i = bucket_of(prefix);
        let start = self.lower_bound(i, prefix);
        self.buckets[i][start..]
            .iter()
            .take_while(move |e| e.0.starts_with(prefix))
            .map(|e| (e.0.as_slice(), e.1.as_slice()))
    }

    /// Every entry, bucket by bucket (for storage).
    pub fn buckets(&self) -> impl Iterator<Item = (usize, &[KvEntry])> {
        self.buckets
            .iter()
            .enumerate()
            .map(|(i, b)| (i, b.as_slice()))
    }

    pub(crate) fn bucket(&self, i: usize) -> &[KvEntry] {
        &self.buckets[i]
    }

    pub(crate) fn tree(&self) -> &merkle::Tree {
        &self.tree
    }

    /// Applies new contents of touched buckets; `tree` must be the tree over their hashes.
    pub(crate) fn apply(&mut self, touched: Vec<(usize, KvBucket, Hash32)>, tree: merkle::Tree) {
        for (b, entries, hash) in touched {
            debug_assert_eq!(tree.leaves()[b], hash);
            self.heads[b] = heads(&entries);
            self.buckets[b] = Arc::new(entries);
        }
        debug_assert_eq!(merkle::root(tree.leaves()), tree.root());
        self.tree = tree;
    }
}

/// Merges a sorted bucket with sorted, distinct changes (`None` deletes).
pub(crate) fn merge(older: &[KvEntry], newer: &[(&Vec<u8>, &Option<Vec<u8>>)]) -> KvBucket {
    let mut out = Vec::with_capacity(older.len() + newer.len());
    let (mut i, mut j) = (0, 0);
    while i < older.len() || j < newer.len() {
        let take_new = match (older.get(i), newer.get(j)) {
            (Some(o), Some(n)) => match o.0.cmp(n.0) {
                std::cmp::Ordering::Less => false,
                std::cmp::Ordering::Greater => true,
                std::cmp::Ordering::Equal => {
                    i += 1; // replaced
                    true
                }
            },
            (Some(_), None) => false,
            (None, _) => true,
        };
        if take_new {
            if let Some(v) = newer[j].1 {
                out.push(Arc::new((newer[j].0.clone(), v.clone())));
            }
            j += 1;
        } else {
            out.push(Arc::clone(&older[i]));
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    /// One byte per namespace: no two tags share one, and the registry lists every tag.
    #[test]
    fn every_tag_is_its_own_namespace() {
        let mut bytes: Vec<u8> = super::Tag::ALL.iter().map(|t| *t as u8).collect();
        bytes.sort_unstable();
        let n = bytes.len();
        bytes.dedup();
        assert_eq!(bytes.len(), n, "two tags share a byte");
    }

    use super::*;
    use proptest::strategy::Just;

    /// The remembered buckets are the hashed ones, for groups met once, again, and after another
    /// group took their place in the cache; a key and its group's prefix share a bucket.
    #[test]
    fn a_remembered_bucket_is_the_hashed_one() {
        let groups: Vec<[u8; GROUP_LEN]> = (0..20_000u64)
            .map(|i| {
                let k = key((i % 31) as u8, i.wrapping_mul(0x0123_4567_89ab_cdef), &[]);
                k.try_into().expect("GROUP_LEN bytes")
            })
            .collect();
        for _ in 0..3 {
            for g in &groups {
                assert_eq!(bucket_of(g), bucket_of_group(g));
                let mut k = g.to_vec();
                k.extend_from_slice(b"rest of the key");
                assert_eq!(bucket_of(&k), bucket_of_group(g));
            }
        }
        // The hash itself, pinned: buckets decide the state root.
        let h = blake3::hash(&key(11, 42, &[]));
        let b = h.as_bytes();
        let expected = ((usize::from(b[0]) << 8) | usize::from(b[1])) >> (16 - KV_BUCKET_BITS);
        assert_eq!(bucket_of(&key(11, 42, b"x")), expected);
        assert!(groups.iter().all(|g| bucket_of(g) < KV_BUCKETS));
    }

    #[test]
    fn one_group_one_bucket_and_scans_in_order() {
        let entries: Vec<(Vec<u8>, Vec<u8>)> = (0..50u64)
            .map(|i| (key(4, 7, &i.to_be_bytes()), vec![i as u8]))
            .chain((0..5u64).map(|i| (key(4, 8, &i.to_be_bytes()), vec![1])))
            .collect();
        let kv = KvSpace::from_entries(entries);
        let prefix = key(4, 7, &[]);
        let got: Vec<u8> = kv.scan(&prefix).map(|(_, v)| v[0]).collect();
        assert_eq!(got, (0..50u8).collect::<Vec<_>>());
        assert_eq!(kv.get(&key(4, 7, &3u64.to_be_bytes())), Some(&[3u8][..]));
        assert_eq!(kv.get(&key(4, 9, &[])), None);
    }

    proptest::proptest! {
        /// The head index finds what a plain sorted map finds, including keys that share their
        /// first 24 bytes, keys that are prefixes of others and trailing zero bytes.
        #[test]
        fn lookups_through_the_head_index_match_a_sorted_map(
            rests in proptest::collection::vec(
                proptest::collection::vec(proptest::prop_oneof![Just(0u8), Just(1u8), Just(255u8)], 0..20),
                0..60,
            ),
            group in 0u64..3,
            probes in proptest::collection::vec(
                proptest::collection::vec(proptest::prop_oneof![Just(0u8), Just(1u8), Just(255u8)], 0..20),
                1..20,
            ),
        ) {
            let model: BTreeMap<Vec<u8>, Vec<u8>> = rests
                .iter()
                .enumerate()
                .map(|(i, r)| (key(4, group, r), vec![i as u8]))
                .collect();
            let kv = KvSpace::from_entries(model.clone());
            for p in probes.iter().chain(rests.iter()) {
                let k = key(4, group, p);
                proptest::prop_assert_eq!(kv.get(&k), model.get(&k).map(|v| v.as_slice()));
                let scanned: Vec<&[u8]> = kv.scan(&k).map(|(k, _)| k).collect();
                let expected: Vec<&[u8]> = model
                    .range(k.clone()..)
                    .take_while(|(x, _)| x.starts_with(&k))
                    .map(|(x, _)| x.as_slice())
                    .collect();
                proptest::prop_assert_eq!(scanned, expected);
            }
        }
    }

    #[test]
    fn merge_replaces_inserts_and_deletes() {
        let old: Vec<KvEntry> = [(1u8, 1u8), (3, 3), (5, 5)]
            .into_iter()
            .map(|(k, v)| Arc::new((vec![k], vec![v])))
            .collect();
        let (k2, k3, k5) = (vec![2u8], vec![3u8], vec![5u8]);
        let (v2, v3, del) = (Some(vec![20u8]), Some(vec![30u8]), None);
        let merged = merge(&old, &[(&k2, &v2), (&k3, &v3), (&k5, &del)]);
        let merged: Vec<(Vec<u8>, Vec<u8>)> = merged.iter().map(|e| (**e).clone()).collect();
        assert_eq!(
            merged,
            vec![(vec![1], vec![1]), (vec![2], vec![20]), (vec![3], vec![30])]
        );
        // The untouched entry is the old one, shared, not a copy.
        assert!(Arc::ptr_eq(&merge(&old, &[(&k2, &v2)])[0], &old[0]));
    }
}
