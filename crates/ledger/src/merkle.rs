//! Binary Merkle trees over BLAKE3 with domain-separated leaves and nodes.
//!
//! `leaf = H(0x00 ‖ data)`, `node = H(0x01 ‖ left ‖ right)`; an odd node at the end of a level is
//! carried up unchanged (as in RFC 6962's unbalanced trees). The root of no leaves is `H("")`.

use gridmesh_types::Hash32;

pub fn leaf_hash(data: &[u8]) -> Hash32 {
    let mut h = blake3::Hasher::new();
    h.update(&[0]);
    h.update(data);
    Hash32(*h.finalize().as_bytes())
}

fn node_hash(left: &Hash32, right: &Hash32) -> Hash32 {
    let mut buf = [0u8; 65];
    buf[0] = 1;
    buf[1..33].copy_from_slice(&left.0);
    buf[33..].copy_from_slice(&right.0);
    Hash32(*blake3::hash(&buf).as_bytes())
}

/// The root over already-hashed leaves (use [`leaf_hash`] to make them).
pub fn root(leaves: &[Hash32]) -> Hash32 {
    if leaves.is_empty() {
        return Hash32(*blake3::hash(b"").as_bytes());
    }
    let mut level: Vec<Hash32> = leaves.to_vec();
    while level.len() > 1 {
        level = level
            .chunks(2)
            .map(|p| {
                if p.len() == 2 {
                    node_hash(&p[0], &p[1])
                } else {
                    p[0]
                }
            })
            .collect();
    }
    level[0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_depends_on_every_leaf_and_order() {
        let leaves: Vec<Hash32> = (0u8..5).map(|i| leaf_hash(&[i])).collect();
        let r = root(&leaves);
        for i in 0..5 {
            let mut l = leaves.clone();
            l[i] = leaf_hash(&[99]);
            assert_ne!(root(&l), r);
        }
        let mut swapped = leaves.clone();
        swapped.swap(0, 1);
        assert_ne!(root(&swapped), r);
        assert_eq!(root(&leaves[..1]), leaves[0]);
        assert_ne!(root(&[]), root(&leaves[..1]));
    }
}
