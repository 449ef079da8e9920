//! Binary Merkle trees over BLAKE3.
//!
//! The leaves are hashes the caller supplies; `node = H(0x01 ‖ left ‖ right)`; an odd node at the end
//! of a level is carried up unchanged (as in RFC 6962's unbalanced trees). The root of no leaves is
//! `H("")`. A leaf must be the hash of data that is never exactly the 65 bytes `0x01 ‖ l ‖ r`, or it
//! could pass for an inner node: transaction encodings are at least 159 bytes and state buckets are
//! multiples of 56 bytes, so both callers are safe without hashing their leaves a second time.

use gridmesh_types::Hash32;

fn node_hash(left: &Hash32, right: &Hash32) -> Hash32 {
    let mut buf = [0u8; 65];
    buf[0] = 1;
    buf[1..33].copy_from_slice(&left.0);
    buf[33..].copy_from_slice(&right.0);
    Hash32(*blake3::hash(&buf).as_bytes())
}

/// The root over already-hashed leaves (use [`leaf_hash`] to make them).
pub fn root(leaves: &[Hash32]) -> Hash32 {
    Tree::new(leaves.to_vec()).root()
}

/// The level above: pairs hashed, an odd last node carried up.
fn next_level(level: &[Hash32]) -> Vec<Hash32> {
    level
        .chunks(2)
        .map(|p| {
            if p.len() == 2 {
                node_hash(&p[0], &p[1])
            } else {
                p[0]
            }
        })
        .collect()
}

/// A tree kept whole, every level, so that changing a few leaves costs their paths to the root
/// instead of the whole tree (a block touches a few of the state's buckets): the same root as
/// [`root`] over the same leaves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tree {
    /// Leaves first; each level above has half as many nodes (rounded up), the last one node.
    levels: Vec<Vec<Hash32>>,
}

impl Tree {
    pub fn new(leaves: Vec<Hash32>) -> Tree {
        let mut levels = vec![leaves];
        while let Some(top) = levels.last().filter(|l| l.len() > 1) {
            let up = next_level(top);
            levels.push(up);
        }
        Tree { levels }
    }

    pub fn leaves(&self) -> &[Hash32] {
        &self.levels[0]
    }

    pub fn root(&self) -> Hash32 {
        match self.levels.last().and_then(|l| l.first()) {
            Some(r) => *r,
            None => Hash32(*blake3::hash(b"").as_bytes()),
        }
    }

    /// The tree with leaves `changes` (index, new leaf) replaced; every index is a leaf's.
    pub fn updated(&self, changes: impl IntoIterator<Item = (usize, Hash32)>) -> Tree {
        let mut t = self.clone();
        let mut dirty: Vec<usize> = changes
            .into_iter()
            .map(|(i, leaf)| {
                t.levels[0][i] = leaf;
                i
            })
            .collect();
        dirty.sort_unstable();
        dirty.dedup();
        for up in 1..t.levels.len() {
            let (below, above) = t.levels.split_at_mut(up);
            let (below, level) = (&below[up - 1], &mut above[0]);
            dirty = dirty.into_iter().map(|i| i / 2).collect();
            dirty.dedup();
            for &p in &dirty {
                level[p] = match below.get(2 * p + 1) {
                    Some(right) => node_hash(&below[2 * p], right),
                    None => below[2 * p],
                };
            }
        }
        t
    }
}

/// The most levels a proof may have: 2^40 leaves is far beyond any tree we build.
pub const MAX_PROOF_DEPTH: usize = 40;

/// The sibling hashes from leaf `index` up to the root of a tree of `leaves.len()` leaves, skipping
/// levels where the node is carried up unchanged. `None` if `index` is out of range.
pub fn proof(leaves: &[Hash32], index: usize) -> Option<Vec<Hash32>> {
    if index >= leaves.len() {
        return None;
    }
    let tree = Tree::new(leaves.to_vec());
    let below_root = &tree.levels[..tree.levels.len() - 1];
    let path = below_root
        .iter()
        .enumerate()
        .filter_map(|(up, level)| level.get((index >> up) ^ 1).copied())
        .collect();
    Some(path)
}

/// Whether `leaf` is leaf `index` of a tree of `count` leaves with root `root`, by `path` (from
/// [`proof`]). The count fixes where the tree carries nodes up, so a proof holds for one position
/// only; callers take the count from a commitment (a reading commits to its number of samples).
pub fn verify_proof(root: &Hash32, leaf: &Hash32, index: u64, count: u64, path: &[Hash32]) -> bool {
    if index >= count || path.len() > MAX_PROOF_DEPTH {
        return false;
    }
    let mut hash = *leaf;
    let (mut i, mut width) = (index, count);
    let mut steps = path.iter();
    while width > 1 {
        let sibling = i ^ 1;
        if sibling < width {
            let Some(s) = steps.next() else {
                return false;
            };
            hash = if i % 2 == 0 {
                node_hash(&hash, s)
            } else {
                node_hash(s, &hash)
            };
        }
        i /= 2;
        width = width.div_ceil(2);
    }
    steps.next().is_none() && hash == *root
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Changing any leaves of a kept tree gives the root of the whole tree computed again, at
    /// every size (carried nodes included).
    #[test]
    fn a_kept_tree_updated_in_place_has_the_roots_of_the_whole_tree() {
        let mut seed = 7u64;
        let mut next = || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            seed >> 33
        };
        for n in 0..=40usize {
            let mut leaves: Vec<Hash32> = (0..n).map(|i| Hash32([i as u8; 32])).collect();
            let mut tree = Tree::new(leaves.clone());
            assert_eq!(tree.root(), root(&leaves), "{n} leaves");
            for round in 0..6u8 {
                if n == 0 {
                    break;
                }
                let changes: Vec<(usize, Hash32)> = (0..1 + next() % 5)
                    .map(|_| (next() as usize % n, Hash32([round.wrapping_add(100); 32])))
                    .map(|(i, mut h)| {
                        h.0[1] = i as u8;
                        (i, h)
                    })
                    .collect();
                for (i, h) in &changes {
                    leaves[*i] = *h;
                }
                tree = tree.updated(changes);
                assert_eq!(tree.leaves(), leaves.as_slice());
                assert_eq!(tree.root(), root(&leaves), "{n} leaves, round {round}");
                assert_eq!(tree, Tree::new(leaves.clone()));
            }
        }
    }

    #[test]
    fn root_depends_on_every_leaf_and_order() {
        let leaves: Vec<Hash32> = (0u8..5).map(|i| Hash32([i; 32])).collect();
        let r = root(&leaves);
        for i in 0..5 {
            let mut l = leaves.clone();
            l[i] = Hash32([99; 32]);
            assert_ne!(root(&l), r);
        }
        let mut swapped = leaves.clone();
        swapped.swap(0, 1);
        assert_ne!(root(&swapped), r);
        assert_eq!(root(&leaves[..1]), leaves[0]);
        assert_ne!(root(&[]), root(&leaves[..1]));
    }

    #[test]
    fn every_leaf_has_a_proof_that_holds_only_in_its_place() {
        for n in 1..=17usize {
            let leaves: Vec<Hash32> = (0..n).map(|i| Hash32([i as u8 + 1; 32])).collect();
            let r = root(&leaves);
            for i in 0..n {
                let p = proof(&leaves, i).unwrap();
                assert!(
                    verify_proof(&r, &leaves[i], i as u64, n as u64, &p),
                    "n={n} i={i}"
                );
                // Another position, another count, another leaf or a tampered path fail.
                if n > 1 {
                    let j = (i + 1) % n;
                    assert!(!verify_proof(&r, &leaves[i], j as u64, n as u64, &p));
                    assert!(!verify_proof(&r, &leaves[j], i as u64, n as u64, &p));
                }
                if let Some(first) = p.first() {
                    let mut bad = p.clone();
                    bad[0] = Hash32([first.0[0] ^ 1; 32]);
                    assert!(!verify_proof(&r, &leaves[i], i as u64, n as u64, &bad));
                }
            }
            assert!(proof(&leaves, n).is_none());
            assert!(!verify_proof(&r, &leaves[0], n as u64, n as u64, &[]));
        }
    }
}
