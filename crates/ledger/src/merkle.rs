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
}
