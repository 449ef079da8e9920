//! The ledger block as a consensus block.
//!
//! The consensus digest of a block *is* its ledger hash (BLAKE3 of the header, see
//! [`gridmesh_ledger::BlockHeader::hash`]), so a block has one identity everywhere: in votes and
//! certificates, in the API and in the store. The header commits to the transactions through its
//! Merkle `tx_root`; decoding checks that root and the count against the transactions, so a peer
//! cannot pair an honest header with other transactions under the same digest.
//!
//! Wire format: a 4-byte big-endian length, then the Borsh encoding of the block (canonical: one
//! encoding per block, as the marshal requires of a decoded block).

use bytes::{Buf, BufMut};
use commonware_codec::{EncodeSize, Error as CodecError, Read, Write};
use commonware_consensus::types::Height;
use commonware_consensus::{Block as ConsensusBlock, BoundedBlock, Heightable};
use commonware_cryptography::{blake3, Digestible};
use gridmesh_ledger::block::tx_root;
use gridmesh_ledger::tx::MAX_TX_BYTES;
use gridmesh_ledger::Block;
use gridmesh_types::Hash32;

/// Most transactions a block may carry under BFT consensus. Every block travels to every
/// validator in one p2p message, so this bounds the message size:
/// about `MAX_BFT_BLOCK_TXS × MAX_TX_BYTES` = 16 MiB.
pub const MAX_BFT_BLOCK_TXS: usize = 16_384;

/// Upper bound on an encoded header (Borsh: fixed-size fields).
const MAX_HEADER_BYTES: usize = 8 + 32 + 8 + 32 + 32 + 32 + 4;

/// Most bytes of an encoded block.
pub const MAX_BLOCK_BYTES: usize = 4 + MAX_HEADER_BYTES + 4 + MAX_BFT_BLOCK_TXS * MAX_TX_BYTES;

/// The consensus digest of a ledger hash.
pub fn digest_of(hash: Hash32) -> blake3::Digest {
    blake3::Digest(hash.0)
}

/// The ledger hash of a consensus digest.
pub fn hash_of(digest: &blake3::Digest) -> Hash32 {
    Hash32(digest.0)
}

/// A block paired with its digest.
pub fn digested(block: BftBlock) -> commonware_cryptography::Digested<BftBlock> {
    let digest = block.digest();
    commonware_cryptography::Digested::precomputed(block, digest)
}

/// A ledger block carried by consensus.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BftBlock {
    pub block: Block,
    /// Cached ledger hash of the header.
    hash: Hash32,
}

impl BftBlock {
    pub fn new(block: Block) -> Self {
        let hash = block.hash();
        BftBlock { block, hash }
    }

    pub fn hash(&self) -> Hash32 {
        self.hash
    }
}

impl Write for BftBlock {
    fn write(&self, buf: &mut impl BufMut) {
        let bytes = borsh::to_vec(&self.block).expect("encoding to a Vec cannot fail");
        buf.put_u32(bytes.len() as u32);
        buf.put_slice(&bytes);
    }
}

impl EncodeSize for BftBlock {
    fn encode_size(&self) -> usize {
        // Borsh: header fields are fixed-size; each transaction is a length-free struct.
        4 + borsh::object_length(&self.block).expect("block encodes")
    }
}

impl Read for BftBlock {
    type Cfg = ();

    fn read_cfg(buf: &mut impl Buf, _: &()) -> Result<Self, CodecError> {
        if buf.remaining() < 4 {
            return Err(CodecError::EndOfBuffer);
        }
        let len = buf.get_u32() as usize;
        if len > MAX_BLOCK_BYTES - 4 {
            return Err(CodecError::Invalid(
                "BftBlock",
                "longer than the block size limit",
            ));
        }
        if buf.remaining() < len {
            return Err(CodecError::EndOfBuffer);
        }
        let mut bytes = vec![0u8; len];
        buf.copy_to_slice(&mut bytes);
        let block: Block = borsh::from_slice(&bytes)
            .map_err(|_| CodecError::Invalid("BftBlock", "not a Borsh-encoded block"))?;
        if block.txs.len() > MAX_BFT_BLOCK_TXS {
            return Err(CodecError::Invalid("BftBlock", "too many transactions"));
        }
        if block.header.tx_count as usize != block.txs.len() {
            return Err(CodecError::Invalid(
                "BftBlock",
                "transaction count differs from the header",
            ));
        }
        let hashes: Vec<Hash32> = block.txs.iter().map(|t| t.hash()).collect();
        if tx_root(&hashes) != block.header.tx_root {
            return Err(CodecError::Invalid(
                "BftBlock",
                "transactions do not match the header's root",
            ));
        }
        Ok(BftBlock::new(block))
    }
}

impl Digestible for BftBlock {
    type Digest = blake3::Digest;

    fn digest(&self) -> blake3::Digest {
        digest_of(self.hash)
    }
}

impl Heightable for BftBlock {
    fn height(&self) -> Height {
        Height::new(self.block.header.height)
    }
}

impl ConsensusBlock for BftBlock {
    fn parent(&self) -> blake3::Digest {
        digest_of(self.block.header.parent_hash)
    }
}

impl BoundedBlock for BftBlock {
    fn max_encode_size(_: &()) -> usize {
        MAX_BLOCK_BYTES
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use commonware_codec::{Decode, Encode};
    use gridmesh_ledger::{BlockHeader, Keypair, SignedTx};
    use gridmesh_types::{Address, Amount};

    fn block(n: u64) -> Block {
        let k = Keypair::from_seed([5; 32]);
        let txs: Vec<SignedTx> = (0..n)
            .map(|i| SignedTx::transfer(&k, "gridmesh-dev", i, Address([1; 32]), Amount(1)))
            .collect();
        let hashes: Vec<Hash32> = txs.iter().map(|t| t.hash()).collect();
        Block {
            header: BlockHeader {
                height: 3,
                parent_hash: Hash32([9; 32]),
                timestamp_ms: 77,
                tx_root: tx_root(&hashes),
                state_root: Hash32([1; 32]),
                proposer: k.address(),
                tx_count: n as u32,
            },
            txs,
        }
    }

    #[test]
    fn round_trips_and_digest_is_the_ledger_hash() {
        let b = BftBlock::new(block(5));
        let bytes = b.encode();
        assert_eq!(bytes.len(), b.encode_size());
        let back = BftBlock::decode_cfg(bytes.clone(), &()).unwrap();
        assert_eq!(back, b);
        assert_eq!(back.encode(), bytes, "canonical");
        assert_eq!(hash_of(&b.digest()), b.block.hash());
        assert_eq!(b.parent(), digest_of(Hash32([9; 32])));
        assert_eq!(b.height(), Height::new(3));
    }

    #[test]
    fn rejects_swapped_transactions_truncation_and_trailing_bytes() {
        let mut b = block(3);
        b.txs.swap(0, 1);
        let bytes = BftBlock::new(b).encode();
        let err = BftBlock::decode_cfg(bytes, &()).unwrap_err();
        assert!(err.to_string().contains("root"), "{err}");

        let mut b = block(3);
        b.header.tx_count = 2;
        assert!(BftBlock::decode_cfg(BftBlock::new(b).encode(), &()).is_err());

        let bytes = BftBlock::new(block(2)).encode();
        assert!(BftBlock::decode_cfg(bytes.slice(..bytes.len() - 1), &()).is_err());
        let mut long = bytes.to_vec();
        long.push(0);
        assert!(BftBlock::decode_cfg(long, &()).is_err());
        let mut huge = vec![0xff, 0xff, 0xff, 0xff];
        huge.extend_from_slice(&[0; 16]);
        assert!(BftBlock::decode_cfg(huge, &()).is_err());
    }
}
