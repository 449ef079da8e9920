//! Signing and admitting a service's own transactions (grid operator, device gateway) with
//! consecutive nonces, recovering when one is refused at block time.

use crate::Shared;
use gridmesh_ledger::tx::{TxKind, VerifiedTx};
use gridmesh_ledger::Keypair;
use gridmesh_types::Hash32;

/// A key's transactions in flight.
pub struct Submitter {
    key: Keypair,
    /// This service's transactions still in the mempool (their nonces are taken), with what
    /// each does, to sign it again if one before it is refused.
    in_flight: Vec<(Hash32, TxKind)>,
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
        self.in_flight.retain(|(h, _)| mempool.contains(h));
        self.in_flight.len()
    }

    /// Signs `kinds` with the next nonces and admits them (and queues them for gossip). Returns
    /// the refusals by the mempool, and a refusal at block time of an earlier transaction: what
    /// was queued behind that one is withdrawn and signed again, first, with the nonces from the
    /// chain's, so that nothing but the refused transaction is lost (an islanding event behind
    /// an envelope that came too late, say).
    pub fn submit(&mut self, shared: &Shared, mut kinds: Vec<TxKind>) -> Vec<String> {
        let mut errors = Vec::new();
        let admitted = {
            let chain = shared.chain.read().expect("chain lock");
            let mut mempool = shared.mempool.lock().expect("mempool lock");
            // In nonce order: the first one refused at block time leaves a gap, so whatever was
            // signed after it was refused with it or can never apply as it is.
            let first_refused = self
                .in_flight
                .iter()
                .position(|(h, _)| mempool.rejection(h).is_some());
            if let Some(at) = first_refused {
                let why = mempool
                    .rejection(&self.in_flight[at].0)
                    .map(|w| w.to_string())
                    .unwrap_or_default();
                let behind: Vec<TxKind> = self
                    .in_flight
                    .drain(at..)
                    .skip(1)
                    .map(|(h, kind)| {
                        mempool.remove(&h);
                        kind
                    })
                    .collect();
                kinds.splice(0..0, behind);
                errors.push(format!("refused at block time: {why}"));
            }
            self.in_flight.retain(|(h, _)| mempool.contains(h));
            let account = chain.account(&self.key.address());
            let mut nonce = account.nonce + self.in_flight.len() as u64;
            let mut admitted = Vec::new();
            for kind in kinds {
                let tx = sign(&self.key, chain.chain_id(), nonce, kind.clone());
                match mempool.insert(tx, account) {
                    Ok(a) => {
                        nonce += 1;
                        self.in_flight.push((a.hash, kind));
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

#[cfg(test)]
mod tests {
    use super::*;
    use gridmesh_ledger::readers::{GridReader, MarketReader};
    use gridmesh_ledger::GridEventKind;
    use gridmesh_types::units::slot_start_ms;

    /// An envelope that reaches its block after the slot's gate is refused; the islanding event
    /// signed behind it cannot apply with the gap it leaves, and is signed again, not lost.
    #[test]
    fn what_stood_behind_a_refused_transaction_is_signed_again() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let op = Keypair::generate();
        let t0 = slot_start_ms(2_000_000);
        let genesis = dir.path().join("genesis.toml");
        std::fs::write(
            &genesis,
            format!(
                "chain_id = \"resign\"\ntimestamp_ms = {t0}\n[[accounts]]\naddress = \"{a}\"\n\
                 balance = \"100\"\n[market]\ngrid_operator = \"{a}\"\n",
                a = op.address()
            ),
        )
        .unwrap();
        let mut cfg = crate::NodeConfig::new(dir.path().join("data"));
        cfg.listen = "127.0.0.1:0".parse().unwrap();
        cfg.genesis = Some(genesis);
        cfg.driven = true;
        let node = rt.block_on(crate::RunningNode::start(cfg)).unwrap();
        let driver = node.driver.clone().unwrap();
        let shared = node.shared.clone();
        let islanded = || {
            shared
                .chain
                .read()
                .unwrap()
                .state()
                .grid_mode()
                .is_islanded()
        };
        let slot = 2_000_002;
        let gate_ms = shared
            .chain
            .read()
            .unwrap()
            .state()
            .market_config()
            .gate_closure_ms(slot);
        let mut submitter = Submitter::new(op);
        let sent = submitter.submit(
            &shared,
            vec![
                TxKind::SetEnvelope {
                    slot,
                    location: "street-1/home-1".into(),
                    import_mwh: 1_000,
                    export_mwh: 0,
                },
                TxKind::GridEvent {
                    event: GridEventKind::Islanded,
                    at_ms: t0 + 1,
                },
            ],
        );
        assert!(sent.is_empty(), "{sent:?}");
        driver.block_at(gate_ms + 1).unwrap();
        assert!(
            !islanded(),
            "the event cannot apply behind the refused envelope"
        );
        let again = submitter.submit(&shared, Vec::new());
        assert!(again[0].contains("refused at block time"), "{again:?}");
        assert_eq!(again.len(), 1, "{again:?}");
        driver.block_at(gate_ms + 2).unwrap();
        assert!(islanded(), "the event was signed again and applied");
        assert_eq!(submitter.in_flight(&shared), 0);
        rt.block_on(node.stop()).unwrap();
    }
}
