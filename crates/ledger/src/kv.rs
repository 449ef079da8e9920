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

pub fn hash_bucket(entries: &[(Vec<u8>, Vec<u8>)]) -> Hash32 {
    let mut h = blake3::Hasher::new();
    for (k, v) in entries {
        h.update(&(k.len() as u32).to_le_bytes());
        h.update(k);
        h.update(&(v.len() as u32).to_le_bytes());
        h.update(v);
    }
    Hash32(*h.finalize().as_bytes())
}

/// The key/value namespace with its cached commitment; cheap to clone (buckets are shared).
#[derive(Clone, Debug)]
pub struct KvSpace {
    buckets: Vec<Arc<KvBucket>>,
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
            buckets: buckets.into_iter().map(Arc::new).collect(),
            hashes,
        }
    }

    pub fn root(&self) -> Hash32 {
        self.root
    }

    pub fn get(&self, key: &[u8]) -> Option<&[u8]> {
        let b = &self.buckets[bucket_of(key)];
        b.binary_search_by(|(k, _)| k.as_slice().cmp(key))
            .ok()
            .map(|i| b[i].1.as_slice())
    }

    /// Entries whose key starts with `prefix` (at least [`GROUP_LEN`] bytes), in key order.
    pub fn scan<'a>(&'a self, prefix: &'a [u8]) -> impl Iterator<Item = (&'a [u8], &'a [u8])> + 'a {
        let b = &self.buckets[bucket_of(prefix)];
        let start = b.partition_point(|(k, _)| k.as_slice() < prefix);
        b[start..]
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
