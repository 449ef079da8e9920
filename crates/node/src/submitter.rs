//! Signing and admitting a service's own transactions (grid operator, device gateway) with
//! consecutive nonces, recovering when one is refused at block time.

use crate::Shared;
use gridmesh_ledger::mempool::AdmissionError;
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

    /// Whether none of the transactions signed here may still be pending: then a call to
    /// [`Submitter::submit`] with nothing new has nothing to mend.
    pub fn idle(&self) -> bool {
        self.in_flight.is_empty()
    }

    /// Signs `kinds` with the next nonces and admits them (and queues them for gossip). Returns
    /// the refusals by the mempool, and a refusal at block time of an earlier transaction: what
    /// was queued behind that one is withdrawn and signed again, first, with the nonces from the
    /// chain's, so that nothing but the refused transaction is lost (an islanding event behind
    /// an envelope that came too late, say).
    ///
    /// The key may sign elsewhere too (an operator's CLI with the service's key): a nonce another
    /// transaction of the key holds in the mempool is skipped, not fought over. What the mempool
    /// refuses for now (full, this key's queue full, its deposits locked) comes back in
    /// [`Submitted::unsent`], unsigned and in order from the first refused, for the caller to
    /// submit again or give up on.
    pub fn submit(&mut self, shared: &Shared, mut kinds: Vec<TxKind>) -> Submitted {
        let mut errors = Vec::new();
        let mut unsent = Vec::new();
        let admitted = {
            let chain = shared.chain.read().expect("chain lock");
            let mut mempool = shared.mempool.lock().expect("mempool lock");
            // In nonce order: the first one refused at block time leaves a gap, so whatever was
            // signed after it was refused with it or can never apply as it is. A gap another
            // signer of the key left (its transaction refused) strands ours the same way: from
            // the first of ours waiting behind a missing nonce, they are signed again.
            let me = self.key.address();
            let gapped = mempool.pending_of(&me).gapped;
            let stranded = self.in_flight.iter().position(|(h, _)| {
                mempool.rejection(h).is_some() || gapped.iter().any(|(_, g)| g == h)
            });
            if let Some(at) = stranded {
                let mut behind = Vec::new();
                for (i, (h, kind)) in self.in_flight.drain(at..).enumerate() {
                    match mempool.rejection(&h) {
                        Some(why) if i == 0 => errors.push(format!("refused at block time: {why}")),
                        _ => {
                            mempool.remove(&h);
                            behind.push(kind);
                        }
                    }
                }
                kinds.splice(0..0, behind);
            }
            self.in_flight.retain(|(h, _)| mempool.contains(h));
            let account = chain.account(&me);
            // After this key's run of pending transactions, whoever signed them.
            let mut nonce = mempool
                .pending_of(&me)
                .ready
                .last()
                .map_or(account.nonce, |(n, _)| n + 1)
                .max(account.nonce + self.in_flight.len() as u64);
            let mut admitted = Vec::new();
            let mut kinds = kinds.into_iter();
            'kinds: for kind in kinds.by_ref() {
                for _ in 0..=MAX_TAKEN_NONCES {
                    let tx = sign(&self.key, chain.chain_id(), nonce, kind.clone());
                    match mempool.insert(tx, account) {
                        Ok(a) => {
                            nonce += 1;
                            self.in_flight.push((a.hash, kind));
                            admitted.extend(a.ready.into_iter().map(VerifiedTx::into_tx));
                            continue 'kinds;
                        }
                        // Another signer of this key holds it (a gapped one, past the run).
                        Err(AdmissionError::NonceInUse(_)) => nonce += 1,
                        Err(e) if for_now(&e) => {
                            errors.push(e.to_string());
                            unsent.push(kind);
                            break 'kinds;
                        }
                        Err(e) => {
                            errors.push(e.to_string());
                            continue 'kinds;
                        }
                    }
                }
                errors.push(format!(
                    "the next {MAX_TAKEN_NONCES} nonces of this key are pending from another signer"
                ));
                unsent.push(kind);
                break;
            }
            unsent.extend(kinds);
            admitted
        };
        if let Some(outbox) = &shared.outbox {
            outbox.push(&admitted);
        }
        Submitted { errors, unsent }
    }
}

/// Nonces skipped, at most, past transactions of the same key from another signer: the most a
/// sender may hold waiting behind a missing nonce by default.
const MAX_TAKEN_NONCES: usize = 64;

/// What [`Submitter::submit`] could not do.
#[derive(Debug, Default)]
pub struct Submitted {
    /// Refusals, by the mempool now or by a block since the last call.
    pub errors: Vec<String>,
    /// What the mempool refused for now, and everything after it: not signed.
    pub unsent: Vec<TxKind>,
}

/// A refusal that may not hold later: room in the mempool or this key's queue, deposits locked
/// by pending transactions, a nonce gap a commit closes.
fn for_now(e: &AdmissionError) -> bool {
    matches!(
        e,
        AdmissionError::Full(_)
            | AdmissionError::SenderFull(_)
            | AdmissionError::TooManyGapped(..)
            | AdmissionError::NonceTooFar { .. }
            | AdmissionError::InsufficientFunds { .. }
    )
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

    /// A driven node whose market's grid operator is `op`, at chain time `t0`.
    struct Fixture {
        rt: tokio::runtime::Runtime,
        _dir: tempfile::TempDir,
        node: crate::RunningNode,
        driver: crate::BlockDriver,
        shared: std::sync::Arc<Shared>,
        t0: u64,
    }

    impl Fixture {
        fn new(op: &Keypair, mempool: gridmesh_ledger::MempoolConfig) -> Fixture {
            let rt = tokio::runtime::Runtime::new().unwrap();
            let dir = tempfile::tempdir().unwrap();
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
            cfg.mempool = mempool;
            let node = rt.block_on(crate::RunningNode::start(cfg)).unwrap();
            let driver = node.driver.clone().unwrap();
            let shared = node.shared.clone();
            Fixture {
                rt,
                _dir: dir,
                node,
                driver,
                shared,
                t0,
            }
        }

        fn islanded(&self) -> bool {
            let chain = self.shared.chain.read().unwrap();
            chain.state().grid_mode().is_islanded()
        }

        fn events(&self) -> u64 {
            self.shared.chain.read().unwrap().state().grid_mode().events
        }

        fn nonce(&self, who: &Keypair) -> u64 {
            let chain = self.shared.chain.read().unwrap();
            chain.account(&who.address()).nonce
        }

        /// A transaction of `key` signed elsewhere (its operator's CLI), put in the mempool.
        fn foreign(&self, key: &Keypair, nonce: u64, kind: TxKind) -> Hash32 {
            let chain = self.shared.chain.read().unwrap();
            let tx = sign(key, chain.chain_id(), nonce, kind);
            let account = chain.account(&key.address());
            let mut mempool = self.shared.mempool.lock().unwrap();
            mempool.insert(tx, account).unwrap().hash
        }

        fn stop(self) {
            self.rt.block_on(self.node.stop()).unwrap();
        }
    }

    fn event(f: &Fixture, event: GridEventKind, after_ms: u64) -> TxKind {
        TxKind::GridEvent {
            event,
            at_ms: f.t0 + after_ms,
        }
    }

    /// The service's key signs at the operator's CLI too: a nonce the CLI's transaction holds
    /// in the mempool is skipped, and the service's own transactions apply behind it.
    #[test]
    fn a_nonce_another_signer_of_the_key_holds_is_skipped() {
        let op = Keypair::generate();
        let f = Fixture::new(&op, Default::default());
        let to = Keypair::generate().address();
        let transfer = TxKind::Transfer {
            to,
            amount: gridmesh_types::Amount::from_tokens(1),
        };
        f.foreign(&op, 0, transfer.clone());
        let mut submitter = Submitter::new(op.clone());
        let sent = submitter.submit(
            &f.shared,
            vec![
                event(&f, GridEventKind::Islanded, 1),
                event(&f, GridEventKind::Resynchronising, 2),
            ],
        );
        assert!(sent.errors.is_empty(), "{sent:?}");
        assert!(sent.unsent.is_empty(), "{sent:?}");
        // A gapped one of the CLI's, past the run: skipped too.
        f.foreign(&op, 4, transfer);
        let sent = submitter.submit(&f.shared, vec![event(&f, GridEventKind::Reconnected, 3)]);
        assert!(sent.errors.is_empty(), "{sent:?}");
        f.driver.block_at(f.t0 + 1_000).unwrap();
        assert_eq!(f.events(), 3, "the three transitions applied");
        assert!(!f.islanded(), "reconnected");
        assert_eq!(f.nonce(&op), 5, "the CLI's two and the service's three");
        assert_eq!(submitter.in_flight(&f.shared), 0);
        f.stop();
    }

    /// The CLI's transaction that the service's ones stand behind is refused at block time: the
    /// gap it leaves would strand them, so they are signed again, and apply.
    #[test]
    fn a_gap_another_signer_of_the_key_left_has_ours_signed_again() {
        let op = Keypair::generate();
        let f = Fixture::new(&op, Default::default());
        let cli = f.foreign(
            &op,
            0,
            TxKind::Transfer {
                to: Keypair::generate().address(),
                amount: gridmesh_types::Amount::from_tokens(1),
            },
        );
        let mut submitter = Submitter::new(op.clone());
        let sent = submitter.submit(&f.shared, vec![event(&f, GridEventKind::Islanded, 1)]);
        assert!(sent.errors.is_empty(), "{sent:?}");
        // The CLI's transaction is refused (as a block refuses one): the service's, at the next
        // nonce, waits behind the gap and the next block cannot take it.
        f.shared
            .mempool
            .lock()
            .unwrap()
            .reject(&cli, "refused for the test".into());
        f.driver.block_at(f.t0 + 1_000).unwrap();
        assert!(!f.islanded());
        let again = submitter.submit(&f.shared, Vec::new());
        assert!(again.errors.is_empty(), "not ours: {again:?}");
        assert!(again.unsent.is_empty(), "{again:?}");
        f.driver.block_at(f.t0 + 2_000).unwrap();
        assert!(
            f.islanded(),
            "signed again at the chain's nonce and applied"
        );
        assert_eq!(submitter.in_flight(&f.shared), 0);
        f.stop();
    }

    /// A mempool that takes two transactions of a sender at a time: the rest come back unsent,
    /// in order and unsigned, and go in once a block has taken the first.
    #[test]
    fn what_the_mempool_refuses_for_now_comes_back_in_order() {
        let op = Keypair::generate();
        let mempool = gridmesh_ledger::MempoolConfig {
            max_per_sender: 2,
            max_gapped_per_sender: 2,
            ..Default::default()
        };
        let f = Fixture::new(&op, mempool);
        let kinds = vec![
            event(&f, GridEventKind::Islanded, 1),
            event(&f, GridEventKind::Resynchronising, 2),
            event(&f, GridEventKind::Reconnected, 3),
            event(&f, GridEventKind::Islanded, 4),
        ];
        let mut submitter = Submitter::new(op.clone());
        let sent = submitter.submit(&f.shared, kinds.clone());
        assert_eq!(sent.errors.len(), 1, "{sent:?}");
        assert!(sent.errors[0].contains("pending transactions"), "{sent:?}");
        assert_eq!(sent.unsent, kinds[2..], "the last two, in order");
        f.driver.block_at(f.t0 + 1_000).unwrap();
        assert_eq!(f.events(), 2);
        let sent = submitter.submit(&f.shared, sent.unsent);
        assert!(sent.errors.is_empty() && sent.unsent.is_empty(), "{sent:?}");
        f.driver.block_at(f.t0 + 2_000).unwrap();
        assert_eq!(f.events(), 4, "nothing lost, nothing twice");
        assert!(f.islanded());
        f.stop();
    }

    /// An envelope that reaches its block after the slot's gate is refused; the islanding event
    /// signed behind it cannot apply with the gap it leaves, and is signed again, not lost.
    #[test]
    fn what_stood_behind_a_refused_transaction_is_signed_again() {
        let op = Keypair::generate();
        let f = Fixture::new(&op, Default::default());
        let slot = 2_000_002;
        let gate_ms = f
            .shared
            .chain
            .read()
            .unwrap()
            .state()
            .market_config()
            .gate_closure_ms(slot);
        let mut submitter = Submitter::new(op);
        let sent = submitter.submit(
            &f.shared,
            vec![
                TxKind::SetEnvelope {
                    slot,
                    location: "street-1/home-1".into(),
                    import_mwh: 1_000,
                    export_mwh: 0,
                },
                event(&f, GridEventKind::Islanded, 1),
            ],
        );
        assert!(sent.errors.is_empty(), "{sent:?}");
        f.driver.block_at(gate_ms + 1).unwrap();
        assert!(
            !f.islanded(),
            "the event cannot apply behind the refused envelope"
        );
        let again = submitter.submit(&f.shared, Vec::new());
        assert!(
            again.errors[0].contains("refused at block time"),
            "{again:?}"
        );
        assert_eq!(again.errors.len(), 1, "{again:?}");
        f.driver.block_at(gate_ms + 2).unwrap();
        assert!(f.islanded(), "the event was signed again and applied");
        assert_eq!(submitter.in_flight(&f.shared), 0);
        assert!(submitter.submit(&f.shared, Vec::new()).errors.is_empty());
        assert!(submitter.idle());
        f.stop();
    }
}
