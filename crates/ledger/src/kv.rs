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

use gridmesh_types::Hash32;

use crate::merkle;

/// Bits of a group hash that select its bucket.
pub const KV_BUCKET_BITS: u32 = 10;
/// Buckets of the key/value namespace.
pub const KV_BUCKETS: usize = 1 << KV_BUCKET_BITS;
/// Length of the `tag ‖ group` prefix that selects the bucket.
pub const GROUP_LEN: usize = 9;

/// One entry: key and Borsh-encoded value.
pub type KvEntry = (Vec<u8>, Vec<u8>);
/// One bucket: entries sorted by key.
pub type KvBucket = Vec<KvEntry>;

/// A key: `tag ‖ group ‖ rest`.
pub fn key(tag: u8, group: u64, rest: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(GROUP_LEN + rest.len());
    k.push(tag);
    k.extend_from_slice(&group.to_be_bytes());
    k.extend_from_slice(rest);
    k
}

/// The bucket of a key (or of a prefix at least [`GROUP_LEN`] long).
pub fn bucket_of(key: &[u8]) -> usize {
    assert!(key.len() >= GROUP_LEN, "keys start with tag and group");
    let h = blake3::hash(&key[..GROUP_LEN]);
    let b = h.as_bytes();
    ((u16::from(b[0]) << 8 | u16::from(b[1])) >> (16 - KV_BUCKET_BITS)) as usize
}

/// A bucket's commitment: `H(len(k) ‖ k ‖ len(v) ‖ v …)` in key order, lengths as `u32` LE.
///
/// The stream is laid out in one buffer and hashed in one call: BLAKE3 then hashes its 1 KiB
/// chunks side by side in SIMD lanes, where feeding it entry by entry (four small updates each)
/// cost several times more on the ledger's busiest buckets. Same bytes, same hash.
pub fn hash_bucket(entries: &[(Vec<u8>, Vec<u8>)]) -> Hash32 {
    let len: usize = entries.iter().map(|(k, v)| 8 + k.len() + v.len()).sum();
    let mut buf = Vec::with_capacity(len);
    for (k, v) in entries {
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
type Head = [u8; HEAD_LEN];

/// A key's first [`HEAD_LEN`] bytes, zero-padded. Heads order like keys, except that keys with
/// the same head may be in either order: `head(a) < head(b)` implies `a < b`.
fn head(key: &[u8]) -> Head {
    let mut h = [0; HEAD_LEN];
    let n = key.len().min(HEAD_LEN);
    h[..n].copy_from_slice(&key[..n]);
    h
}

fn heads(bucket: &[KvEntry]) -> Arc<[Head]> {
    bucket.iter().map(|(k, _)| head(k)).collect()
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
    hashes: Vec<Hash32>,
    root: Hash32,
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
            buckets[bucket_of(&k)].push((k, v));
        }
        let hashes: Vec<Hash32> = buckets.iter().map(|b| hash_bucket(b)).collect();
        KvSpace {
            root: merkle::root(&hashes),
            heads: buckets.iter().map(|b| heads(b)).collect(),
            buckets: buckets.into_iter().map(Arc::new).collect(),
            hashes,
        }
    }

    /// The first position in bucket `b` whose key is not below `key`.
    fn lower_bound(&self, b: usize, key: &[u8]) -> usize {
        let (entries, heads) = (&self.buckets[b], &self.heads[b]);
        let h = head(key);
        let lo = heads.partition_point(|x| *x < h);
        let hi = lo + heads[lo..].partition_point(|x| *x == h);
        lo + entries[lo..hi].partition_point(|(k, _)| k.as_slice() < key)
    }

    pub fn root(&self) -> Hash32 {
        self.root
    }

    pub fn get(&self, key: &[u8]) -> Option<&[u8]> {
        let b = bucket_of(key);
        let i = self.lower_bound(b, key);
        self.buckets[b]
            .get(i)
            .filter(|(k, _)| k.as_slice() == key)
            .map(|(_, v)| v.as_slice())
    }

    /// Entries whose key starts with `prefix` (at least [`GROUP_LEN`] bytes), in key order.
    pub fn scan<'a>(&'a self, prefix: &'a [u8]) -> impl Iterator<Item = (&'a [u8], &'a [u8])> + 'a {
        let i = bucket_of(prefix);
        let start = self.lower_bound(i, prefix);
        self.buckets[i][start..]
            .iter()
            .take_while(move |(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.as_slice(), v.as_slice()))
    }

    /// Every entry, bucket by bucket (for storage).
    pub fn buckets(&self) -> impl Iterator<Item = (usize, &[KvEntry])> {
        self.buckets
            .iter()
            .enumerate()
            .map(|(i, b)| (i, b.as_slice()))
    }

    pub(crate) fn bucket(&self, i: usize) -> &[(Vec<u8>, Vec<u8>)] {
        &self.buckets[i]
    }

    pub(crate) fn hashes(&self) -> &[Hash32] {
        &self.hashes
    }

    /// Applies new contents of touched buckets; `root` must be the root they lead to.
    pub(crate) fn apply(&mut self, touched: Vec<(usize, KvBucket, Hash32)>, root: Hash32) {
        for (b, entries, hash) in touched {
            self.heads[b] = heads(&entries);
            self.buckets[b] = Arc::new(entries);
            self.hashes[b] = hash;
        }
        debug_assert_eq!(merkle::root(&self.hashes), root);
        self.root = root;
    }
}

/// Merges a sorted bucket with sorted, distinct changes (`None` deletes).
pub(crate) fn merge(
    older: &[(Vec<u8>, Vec<u8>)],
    newer: &[(&Vec<u8>, &Option<Vec<u8>>)],
) -> KvBucket {
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
                out.push((newer[j].0.clone(), v.clone()));
            }
            j += 1;
        } else {
            out.push(older[i].clone());
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::strategy::Just;

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
        let old = vec![
            (vec![1u8], vec![1u8]),
            (vec![3], vec![3]),
            (vec![5], vec![5]),
        ];
        let (k2, k3, k5) = (vec![2u8], vec![3u8], vec![5u8]);
        let (v2, v3, del) = (Some(vec![20u8]), Some(vec![30u8]), None);
        let merged = merge(&old, &[(&k2, &v2), (&k3, &v3), (&k5, &del)]);
        assert_eq!(
            merged,
            vec![(vec![1], vec![1]), (vec![2], vec![20]), (vec![3], vec![30])]
        );
    }
}
