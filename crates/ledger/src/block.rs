//! Blocks, headers and receipts.

use borsh::{BorshDeserialize, BorshSerialize};
use gridmesh_types::{Address, Hash32};
use serde::Serialize;

use crate::merkle;
use crate::state::Event;
use crate::tx::SignedTx;

/// Most transactions one block may hold.
pub const MAX_BLOCK_TXS: usize = 200_000;

/// A block header: everything a replica needs to check a block follows its parent.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct BlockHeader {
    pub height: u64,
    pub parent_hash: Hash32,
    /// Milliseconds since the Unix epoch, set by the proposer; strictly increasing along the chain.
    /// The only clock the state machine sees.
    pub timestamp_ms: u64,
    /// Merkle root over the block's transaction hashes, in block order.
    pub tx_root: Hash32,
    /// The state root after executing this block.
    pub state_root: Hash32,
    pub proposer: Address,
    pub tx_count: u32,
}

impl BlockHeader {
    /// BLAKE3 over a domain separator and the header's canonical (Borsh) encoding.
    pub fn hash(&self) -> Hash32 {
        let mut h = blake3::Hasher::new();
        h.update(b"gridmesh/block/v1\0");
        h.update(&borsh::to_vec(self).expect("encoding to a Vec cannot fail"));
        Hash32(*h.finalize().as_bytes())
    }
}

/// A header with its transactions.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct Block {
    pub header: BlockHeader,
    pub txs: Vec<SignedTx>,
}

impl Block {
    pub fn hash(&self) -> Hash32 {
        self.header.hash()
    }
}

/// The Merkle root over transaction hashes.
///
/// The leaves are the transaction hashes themselves (BLAKE3 of the encoding), not hashed again:
/// a leaf could only pass for an inner node `H(0x01 ‖ left ‖ right)` if a transaction's encoding were
/// those 65 bytes, and every encoding is longer (at least 159 bytes, checked by a test). This halves
/// the hashing.
pub fn tx_root(tx_hashes: &[Hash32]) -> Hash32 {
    merkle::root(tx_hashes)
}

/// What executing one transaction of a committed block did.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize)]
pub struct Receipt {
    pub tx_hash: Hash32,
    pub height: u64,
    pub index: u32,
    pub events: Vec<Event>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::Keypair;
    use gridmesh_types::Amount;

    #[test]
    fn no_transaction_encoding_can_pass_for_an_inner_merkle_node() {
        // The shortest possible transaction: a one-character chain id.
        let k = Keypair::from_seed([1; 32]);
        let tx = SignedTx::transfer(&k, "a", 0, Address([2; 32]), Amount(1));
        assert_eq!(tx.encode().len(), 159);
        assert!(tx.encode().len() > 65);
    }

    #[test]
    fn tx_root_commits_to_order_and_content() {
        let h: Vec<Hash32> = (0u8..4).map(|i| Hash32([i; 32])).collect();
        let mut swapped = h.clone();
        swapped.swap(1, 2);
        assert_ne!(tx_root(&h), tx_root(&swapped));
        assert_ne!(tx_root(&h), tx_root(&h[..3]));
        assert_ne!(tx_root(&[]), tx_root(&h[..1]));
    }
}
