//! What the API's tests share: signing a transaction with the sender's next nonce, and committing
//! a block of them.

use gridmesh_ledger::tx::TX_VERSION;
use gridmesh_ledger::{Chain, Keypair, TxBody, TxKind, VerifiedTx};
use gridmesh_types::Address;

/// `kind` from `k`, signed with its next nonce on `chain`.
pub fn tx(chain: &Chain, k: &Keypair, kind: TxKind) -> VerifiedTx {
    TxBody {
        version: TX_VERSION,
        chain_id: chain.chain_id().to_string(),
        sender: k.address(),
        nonce: chain.account(&k.address()).nonce,
        kind,
    }
    .sign(k)
    .verify()
    .unwrap()
}

/// Builds and commits a block of `txs` at `ts`, proposed by `proposer`: how many were refused.
pub fn block(chain: &mut Chain, ts: u64, proposer: Address, txs: Vec<VerifiedTx>) -> usize {
    let built = chain.build_block(txs, ts, proposer);
    let rejected = built.rejected.len();
    chain.commit(&built.block, built.executed).unwrap();
    rejected
}
