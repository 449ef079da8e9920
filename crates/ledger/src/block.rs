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
pub fn tx_root(tx_hashes: &[Hash32]) -> Hash32 {
    let leaves: Vec<Hash32> = tx_hashes.iter().map(|h| merkle::leaf_hash(&h.0)).collect();
    merkle::root(&leaves)
}

/// What executing one transaction of a committed block did.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize)]
pub struct Receipt {
    pub tx_hash: Hash32,
    pub height: u64,
    pub index: u32,
    pub events: Vec<Event>,
}
