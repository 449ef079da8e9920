//! `gridmesh bench`: the physical limit (ed25519 verification on this machine) and the ledger's
//! committed-transfer throughput measured against it, in one run.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use anyhow::Context;
use gridmesh_consensus::solo::{SoloConfig, SoloEngine};
use gridmesh_consensus::LedgerApp;
use gridmesh_ledger::genesis::GenesisAccount;
use gridmesh_ledger::mempool::decode_and_verify_batch;
use gridmesh_ledger::{AdmissionError, Chain, Genesis, Keypair, Mempool, MempoolConfig, SignedTx};
use gridmesh_types::Amount;
use serde::Serialize;

/// Signatures per second for raw ed25519 verification on this machine.
#[derive(Clone, Debug, Serialize)]
pub struct Ed25519Rates {
    /// `verify_strict`, one signature at a time, one core.
    pub single_per_core: f64,
    /// Batch verification (batches of 256), one core.
    pub batch_per_core: f64,
    /// Cores used for the machine-wide figures.
    pub cores: usize,
    /// Batch verification split over all cores, as the block path does it.
    pub batch_all_cores: f64,
}

fn signed_messages(n: usize) -> Vec<(Keypair, Vec<u8>, [u8; 64])> {
    (0..n)
        .map(|i| {
            let mut seed = [0u8; 32];
            seed[..8].copy_from_slice(&(i as u64).to_le_bytes());
            let k = Keypair::from_seed(seed);
            let m = format!("reading {i}: 1234 mWh").into_bytes();
            let s = k.sign(&m);
            (k, m, s)
        })
        .collect()
}

/// Measures ed25519 verification rates over `n` distinct signatures.
pub fn ed25519_rates(n: usize) -> Ed25519Rates {
    use gridmesh_ledger::crypto::{verify_batch, verify_one, SignedItem};
    let sigs = signed_messages(n);
    let items: Vec<SignedItem> = sigs
        .iter()
        .map(|(k, m, s)| SignedItem {
            signer: k.address(),
            message: m,
            signature: *s,
        })
        .collect();
    let t = Instant::now();
    for it in &items {
        verify_one(&it.signer, it.message, &it.signature).expect("valid");
    }
    let single = n as f64 / t.elapsed().as_secs_f64();

    // One core: batches of 256 on this thread.
    let keys: Vec<ed25519_dalek::VerifyingKey> = items
        .iter()
        .map(|it| ed25519_dalek::VerifyingKey::from_bytes(&it.signer.0).expect("valid key"))
        .collect();
    let sig: Vec<ed25519_dalek::Signature> = items
        .iter()
        .map(|it| ed25519_dalek::Signature::from_bytes(&it.signature))
        .collect();
    let msgs: Vec<&[u8]> = items.iter().map(|it| it.message).collect();
    let t = Instant::now();
    for start in (0..n).step_by(256) {
        let end = (start + 256).min(n);
        ed25519_dalek::verify_batch(&msgs[start..end], &sig[start..end], &keys[start..end])
            .expect("valid");
    }
    let batch = n as f64 / t.elapsed().as_secs_f64();

    let t = Instant::now();
    verify_batch(&items).expect("valid");
    let all = n as f64 / t.elapsed().as_secs_f64();
    Ed25519Rates {
        single_per_core: single,
        batch_per_core: batch,
        cores: std::thread::available_parallelism()
            .map(|c| c.get())
            .unwrap_or(1),
        batch_all_cores: all,
    }
}

#[derive(Clone, Debug)]
pub struct LedgerBenchOptions {
    /// Signed transfers to push through.
    pub txs: usize,
    /// Funded accounts sending them (round-robin).
    pub accounts: usize,
    pub block_interval: Duration,
    /// Transactions admitted per batch-verification call.
    pub admission_batch: usize,
}

impl Default for LedgerBenchOptions {
    fn default() -> Self {
        LedgerBenchOptions {
            txs: 200_000,
            accounts: 10_000,
            block_interval: Duration::from_secs(1),
            admission_batch: 1_024,
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct LedgerBenchReport {
    pub txs: usize,
    pub accounts: usize,
    pub block_interval_ms: u64,
    pub blocks: usize,
    pub seconds: f64,
    /// Committed transfers per second, from first admission to last commit.
    pub committed_per_sec: f64,
    pub block_commit_p50_ms: f64,
    pub block_commit_p99_ms: f64,
    pub block_commit_max_ms: f64,
    pub largest_block_txs: u32,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx]
}

/// Drives pre-signed transfers through batch admission -> mempool -> solo engine -> redb commit,
/// with the real engine on its own thread, and measures throughput and block commit latency.
pub fn ledger(opts: &LedgerBenchOptions) -> anyhow::Result<LedgerBenchReport> {
    anyhow::ensure!(opts.accounts >= 2, "need at least 2 accounts");
    let dir = tempfile::tempdir().context("creating a temporary data directory")?;
    let keys: Vec<Keypair> = (0..opts.accounts)
        .map(|i| {
            let mut seed = [7u8; 32];
            seed[..8].copy_from_slice(&(i as u64).to_le_bytes());
            Keypair::from_seed(seed)
        })
        .collect();
    let genesis = Genesis {
        chain_id: "gridmesh-bench".into(),
        timestamp_ms: 0,
        accounts: keys
            .iter()
            .map(|k| GenesisAccount {
                address: k.address(),
                balance: Amount::from_tokens(1_000_000),
            })
            .collect(),
    };

    // Sign everything up front (clients' work, not the ledger's), in parallel.
    tracing::info!(txs = opts.txs, "signing transfers");
    let n = opts.accounts;
    let threads = std::thread::available_parallelism()
        .map(|c| c.get())
        .unwrap_or(1);
    let per = opts.txs.div_ceil(threads);
    let encoded: Vec<Vec<u8>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let keys = &keys;
                let chain_id = genesis.chain_id.clone();
                s.spawn(move || {
                    (t * per..((t + 1) * per).min(opts.txs))
                        .map(|i| {
                            let (round, from) = (i / n, i % n);
                            let to = keys[(from + 1 + round % (n - 1)) % n].address();
                            SignedTx::transfer(
                                &keys[from],
                                &chain_id,
                                round as u64,
                                to,
                                Amount(10_000),
                            )
                            .encode()
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("signer"))
            .collect()
    });

    let chain = Chain::open(dir.path(), &genesis)?;
    let supply = chain.state().total_supply();
    let chain = Arc::new(RwLock::new(chain));
    let mempool = Arc::new(Mutex::new(Mempool::new(
        &genesis.chain_id,
        MempoolConfig {
            max_txs: 200_000,
            ..MempoolConfig::default()
        },
    )));
    let app = LedgerApp::new(chain.clone(), mempool.clone(), 100_000);
    let engine = SoloEngine::new(
        app,
        SoloConfig {
            block_interval: opts.block_interval,
            empty_blocks: false,
            proposer: keys[0].address(),
        },
    );
    let committed = Arc::new(AtomicU64::new(0));
    let latencies = Arc::new(Mutex::new(Vec::<(f64, u32)>::new()));
    let (stop, stopped) = mpsc::channel();
    let engine = {
        let committed = committed.clone();
        let latencies = latencies.clone();
        std::thread::spawn(move || {
            engine.run(stopped, |f, took| {
                committed.fetch_add(u64::from(f.tx_count), Ordering::SeqCst);
                latencies
                    .lock()
                    .expect("latencies")
                    .push((took.as_secs_f64() * 1e3, f.tx_count));
            })
        })
    };

    tracing::info!("admitting and committing");
    let start = Instant::now();
    for chunk in encoded.chunks(opts.admission_batch) {
        let inputs: Vec<&[u8]> = chunk.iter().map(|b| b.as_slice()).collect();
        let mut pending: Vec<_> = decode_and_verify_batch(&inputs)
            .into_iter()
            .map(|r| r.expect("benchmark transactions are valid"))
            .collect();
        while !pending.is_empty() {
            let guard = chain.read().expect("chain lock");
            let mut mp = mempool.lock().expect("mempool lock");
            let mut rest = Vec::new();
            for tx in pending {
                let account = guard.account(&tx.sender());
                match mp.insert(tx.clone(), account) {
                    Ok(_) => {}
                    Err(AdmissionError::Full(_)) => rest.push(tx),
                    Err(e) => anyhow::bail!("benchmark transaction rejected: {e}"),
                }
            }
            drop(mp);
            drop(guard);
            pending = rest;
            if !pending.is_empty() {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }
    while committed.load(Ordering::SeqCst) < opts.txs as u64 {
        std::thread::sleep(Duration::from_millis(1));
    }
    let seconds = start.elapsed().as_secs_f64();
    let _ = stop.send(());
    engine
        .join()
        .map_err(|_| anyhow::anyhow!("engine panicked"))?;

    let chain = chain.read().expect("chain lock");
    anyhow::ensure!(chain.state().total_supply() == supply, "supply changed");
    anyhow::ensure!(
        chain.store().tx_count()? == opts.txs as u64,
        "not every transfer was indexed"
    );

    let lat = latencies.lock().expect("latencies");
    let mut ms: Vec<f64> = lat.iter().map(|(m, _)| *m).collect();
    ms.sort_by(|a, b| a.total_cmp(b));
    Ok(LedgerBenchReport {
        txs: opts.txs,
        accounts: opts.accounts,
        block_interval_ms: opts.block_interval.as_millis() as u64,
        blocks: lat.len(),
        seconds,
        committed_per_sec: opts.txs as f64 / seconds,
        block_commit_p50_ms: percentile(&ms, 0.5),
        block_commit_p99_ms: percentile(&ms, 0.99),
        block_commit_max_ms: ms.last().copied().unwrap_or(0.0),
        largest_block_txs: lat.iter().map(|(_, n)| *n).max().unwrap_or(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_ledger_bench_commits_everything() {
        let r = ledger(&LedgerBenchOptions {
            txs: 2_000,
            accounts: 50,
            block_interval: Duration::from_millis(50),
            admission_batch: 256,
        })
        .unwrap();
        assert_eq!(r.txs, 2_000);
        assert!(r.blocks >= 1 && r.committed_per_sec > 0.0);
        let rates = ed25519_rates(512);
        assert!(rates.single_per_core > 0.0 && rates.batch_per_core > 0.0);
    }
}
