//! Transaction gossip: a transaction admitted by one validator's API reaches every validator's
//! mempool, so whichever validator leads next can include it.
//!
//! Admitted transactions wait in a bounded outbox ([`MAX_OUTBOX`]; when it is full, new ones are
//! not gossiped but stay in the local mempool, to be proposed when this validator leads). Every
//! [`FLUSH_INTERVAL`] the outbox is sent to all peers in batches of at most [`MAX_BATCH_TXS`].
//! Validators are fully connected, so a received transaction is not forwarded again.
//!
//! Only ready transactions are gossiped (see [`gridmesh_ledger::mempool`]): one that waits behind
//! a missing nonce stays in the pool that admitted it until the nonce arrives there (by the API, by
//! gossip or in a block); then it is gossiped with the others it un-gapped.
//!
//! A batch is `u32 count ‖ (u16 length ‖ canonical transaction)*`, big-endian. A receiver decodes
//! and batch-verifies it and offers each transaction to its mempool, which rejects duplicates,
//! stale nonces and overdrafts as it does for the API. A malformed batch is dropped and its sender
//! blocked.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Buf, BufMut};
use commonware_cryptography::ed25519;
use commonware_p2p::{Receiver, Recipients, Sender};
use commonware_runtime::{Clock, Spawner};
use gridmesh_ledger::crypto::Parallelism;
use gridmesh_ledger::mempool::decode_and_verify_batch;
use gridmesh_ledger::tx::MAX_TX_BYTES;
use gridmesh_ledger::SignedTx;

use crate::app::Replica;

/// Most transactions waiting to be gossiped.
pub const MAX_OUTBOX: usize = 100_000;
/// Most transactions in one gossip message.
pub const MAX_BATCH_TXS: usize = 4096;
/// Most bytes of one gossip message.
pub const MAX_BATCH_BYTES: usize = 4 + MAX_BATCH_TXS * (2 + MAX_TX_BYTES);
/// How often the outbox is flushed.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(5);

/// Transactions admitted locally, waiting to be gossiped.
#[derive(Default)]
pub struct Outbox {
    queue: Mutex<VecDeque<Vec<u8>>>,
}

impl Outbox {
    /// Queues transactions for gossip; returns how many were queued (the rest did not fit).
    pub fn push<'a>(&self, txs: impl IntoIterator<Item = &'a SignedTx>) -> usize {
        let mut q = self.queue.lock().expect("outbox lock");
        let mut n = 0;
        for tx in txs {
            if q.len() >= MAX_OUTBOX {
                break;
            }
            q.push_back(tx.encode());
            n += 1;
        }
        n
    }

    fn take_batch(&self) -> Option<Vec<u8>> {
        let mut q = self.queue.lock().expect("outbox lock");
        if q.is_empty() {
            return None;
        }
        let n = q.len().min(MAX_BATCH_TXS);
        let mut out = Vec::with_capacity(4 + n * 200);
        out.put_u32(n as u32);
        for tx in q.drain(..n) {
            out.put_u16(tx.len() as u16);
            out.put_slice(&tx);
        }
        Some(out)
    }
}

/// Splits a gossip message into transaction encodings.
pub fn decode_batch(mut buf: &[u8]) -> Result<Vec<&[u8]>, &'static str> {
    if buf.len() < 4 {
        return Err("truncated count");
    }
    let n = buf.get_u32() as usize;
    if n == 0 || n > MAX_BATCH_TXS {
        return Err("transaction count out of range");
    }
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        if buf.len() < 2 {
            return Err("truncated length");
        }
        let len = buf.get_u16() as usize;
        if len > MAX_TX_BYTES || buf.len() < len {
            return Err("transaction length out of range");
        }
        out.push(&buf[..len]);
        buf.advance(len);
    }
    if !buf.is_empty() {
        return Err("trailing bytes");
    }
    Ok(out)
}

/// Starts the sending and receiving tasks.
pub fn start<E, S, R>(context: E, replica: Arc<Replica>, (mut sender, mut receiver): (S, R))
where
    E: Spawner + Clock,
    S: Sender<PublicKey = ed25519::PublicKey>,
    R: Receiver<PublicKey = ed25519::PublicKey>,
{
    let outbox = replica.outbox();
    context.child("send").spawn(move |ctx| async move {
        loop {
            while let Some(batch) = outbox.take_batch() {
                sender.send(Recipients::All, batch, false);
            }
            ctx.sleep(FLUSH_INTERVAL).await;
        }
    });
    context
        .child("receive")
        .shared(true)
        .spawn(move |_| async move {
            while let Ok((peer, msg)) = receiver.recv().await {
                let bytes = msg.as_ref();
                let txs = match decode_batch(bytes) {
                    Ok(t) => t,
                    Err(why) => {
                        tracing::warn!(%peer, why, "dropping malformed transaction gossip");
                        continue;
                    }
                };
                let verified = decode_and_verify_batch(&txs, Parallelism::ThisThread);
                let chain = replica.chain().read().expect("chain lock");
                let mut mempool = replica.mempool().lock().expect("mempool lock");
                let mut admitted = 0usize;
                let mut unblocked = Vec::new();
                for tx in verified.into_iter().flatten() {
                    let account = chain.account(&tx.sender());
                    let hash = tx.hash();
                    if let Ok(a) = mempool.insert(tx, account) {
                        admitted += 1;
                        // Peers have what they sent; not what it made ready here.
                        unblocked.extend(
                            a.ready
                                .into_iter()
                                .filter(|t| t.hash() != hash)
                                .map(|t| t.into_tx()),
                        );
                    }
                }
                drop(mempool);
                drop(chain);
                replica.outbox().push(&unblocked);
                tracing::trace!(%peer, received = txs.len(), admitted, "transaction gossip");
            }
        });
}

#[cfg(test)]
mod tests {
    use super::*;
    use gridmesh_ledger::Keypair;
    use gridmesh_types::{Address, Amount};

    #[test]
    fn batches_round_trip_and_bad_batches_are_refused() {
        let k = Keypair::from_seed([3; 32]);
        let txs: Vec<SignedTx> = (0..5)
            .map(|n| SignedTx::transfer(&k, "gridmesh-dev", n, Address([1; 32]), Amount(1)))
            .collect();
        let outbox = Outbox::default();
        assert_eq!(outbox.push(&txs), 5);
        let batch = outbox.take_batch().unwrap();
        assert!(outbox.take_batch().is_none());
        let parts = decode_batch(&batch).unwrap();
        assert_eq!(parts.len(), 5);
        assert_eq!(SignedTx::decode(parts[4]).unwrap(), txs[4]);
        assert!(decode_batch(&batch[..batch.len() - 1]).is_err());
        let mut long = batch.clone();
        long.push(0);
        assert!(decode_batch(&long).is_err());
        assert!(decode_batch(&[0, 0, 0, 0]).is_err());
        assert!(decode_batch(&[0xff, 0xff, 0xff, 0xff]).is_err());
    }
}
