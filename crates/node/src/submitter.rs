//! Signing and admitting a service's own transactions (grid operator, device gateway) with
//! consecutive nonces, recovering when one is refused at block time.

use crate::Shared;
use gridmesh_ledger::tx::{TxKind, VerifiedTx};
use gridmesh_ledger::Keypair;
use gridmesh_types::Hash32;

/// A key's transactions in flight.
pub struct Submitter {
    key: Keypair,
    /// This service's transactions still in the mempool (their nonces are taken).
    in_flight: Vec<Hash32>,
}

impl Submitter {
    pub fn new(key: Keypair) -> Submitter {
        Submitter {
            key,
            in_flight: Vec::new(),
        }
    }

    /// How many of this key's transactions are still in the mempool.
    pub fn in_flight(&mut self, shared: &Shared) -> usize {
        let mempool = shared.mempool.lock().expect("mempool lock");
        self.in_flight.retain(|h| mempool.contains(h));
        self.in_flight.len()
    }

    /// Signs `kinds` with the next nonces and admits them (and queues them for gossip). Returns
    /// the refusals by the mempool, and a refusal at block time of an earlier transaction (after
    /// which what was queued behind it is withdrawn and the nonces start again from the chain's).
    pub fn submit(&mut self, shared: &Shared, kinds: Vec<TxKind>) -> Vec<String> {
        let mut errors = Vec::new();
        let admitted = {
            let chain = shared.chain.read().expect("chain lock");
            let mut mempool = shared.mempool.lock().expect("mempool lock");
            let mut refused = None;
            self.in_flight.retain(|h| {
                if let Some(why) = mempool.rejection(h) {
                    refused = Some(why.to_string());
                }
                mempool.contains(h)
            });
            if let Some(why) = refused {
                // A refused transaction leaves a gap in our nonces: what was queued behind it
                // can never apply.
                for h in self.in_flight.drain(..) {
                    mempool.remove(&h);
                }
                errors.push(format!("refused at block time: {why}"));
            }
            let account = chain.account(&self.key.address());
            let mut nonce = account.nonce + self.in_flight.len() as u64;
            let mut admitted = Vec::new();
            for kind in kinds {
                let tx = sign(&self.key, chain.chain_id(), nonce, kind);
                match mempool.insert(tx, account) {
                    Ok(a) => {
                        nonce += 1;
                        self.in_flight.push(a.hash);
                        admitted.extend(a.ready.into_iter().map(VerifiedTx::into_tx));
                    }
                    Err(e) => errors.push(e.to_string()),
                }
            }
            admitted
        };
        if let Some(outbox) = &shared.outbox {
            outbox.push(&admitted);
        }
        errors
    }
}

fn sign(key: &Keypair, chain_id: &str, nonce: u64, kind: TxKind) -> VerifiedTx {
    gridmesh_ledger::SignedTx::new(key, chain_id, nonce, kind)
        .verify()
        .expect("a transaction we just signed verifies")
}
