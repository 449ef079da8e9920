//! `gridmesh bench`: the physical limit (ed25519 verification on this machine) and the ledger's
//! committed-transfer throughput measured against it, in one run.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use anyhow::Context;
use gridmesh_consensus::solo::{SoloConfig, SoloEngine};
use gridmesh_consensus::LedgerApp;
use gridmesh_ledger::crypto::Parallelism;
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
    /// Cores used for the machine-wide figure.
    pub cores: usize,
    /// Batch verification with one thread per core, measured.
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

/// Measures raw ed25519 verification with ed25519-dalek itself (every signature's public key is
/// decompressed each time, as a verifier that has never seen the key must), best of three runs.
pub fn ed25519_rates(n: usize) -> Ed25519Rates {
    use ed25519_dalek::{Signature, VerifyingKey};
    let sigs = signed_messages(n);
    let items: Vec<([u8; 32], &[u8], Signature)> = sigs
        .iter()
        .map(|(k, m, s)| (k.address().0, m.as_slice(), Signature::from_bytes(s)))
        .collect();
    let best_rate = |count: usize, f: &(dyn Fn() + Sync)| {
        (0..3)
            .map(|_| {
                let t = Instant::now();
                f();
                count as f64 / t.elapsed().as_secs_f64()
            })
            .fold(0.0, f64::max)
    };
    let key = |k: &[u8; 32]| VerifyingKey::from_bytes(k).expect("valid key");
    let batch = |part: &[([u8; 32], &[u8], Signature)]| {
        for sub in part.chunks(256) {
            let keys: Vec<VerifyingKey> = sub.iter().map(|i| key(&i.0)).collect();
            let msgs: Vec<&[u8]> = sub.iter().map(|i| i.1).collect();
            let sigs: Vec<Signature> = sub.iter().map(|i| i.2).collect();
            ed25519_dalek::verify_batch(&msgs, &sigs, &keys).expect("valid");
        }
    };
    let single = best_rate(n, &|| {
        for (k, m, s) in &items {
            key(k).verify_strict(m, s).expect("valid");
        }
    });
    let per_core = best_rate(n, &|| batch(&items));
    let cores = std::thread::available_parallelism()
        .map(|c| c.get())
        .unwrap_or(1);
    let all = best_rate(n, &|| {
        std::thread::scope(|s| {
            for part in items.chunks(n.div_ceil(cores)) {
                s.spawn(move || batch(part));
            }
        })
    });
    Ed25519Rates {
        single_per_core: single,
        batch_per_core: per_core,
        cores,
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
    /// Offered load in transactions per second; `None` pushes as fast as admission allows.
    pub offered_per_sec: Option<f64>,
}

impl Default for LedgerBenchOptions {
    fn default() -> Self {
        LedgerBenchOptions {
            txs: 200_000,
            accounts: 10_000,
            block_interval: Duration::from_secs(1),
            admission_batch: 1_024,
            offered_per_sec: None,
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct LedgerBenchReport {
    pub txs: usize,
    pub offered_per_sec: Option<f64>,
    pub accounts: usize,
    pub block_interval_ms: u64,
    pub blocks: usize,
    pub seconds: f64,
    /// Sustained committed transfers per second: transactions in every block after the first,
    /// divided by the time from the first block's commit to the last one's.
    pub committed_per_sec: f64,
    /// Transfers per second from the first admission to the last commit (includes warm-up and the
    /// wait for the last block's slot).
    pub end_to_end_per_sec: f64,
    /// Block commit latency: making the block durable in redb and applying it to the state.
    pub block_commit_p50_ms: f64,
    pub block_commit_p99_ms: f64,
    pub block_commit_max_ms: f64,
    /// The whole block step: build from the mempool, commit, then index the transactions.
    pub block_step_p50_ms: f64,
    pub block_step_p99_ms: f64,
    pub index_p99_ms: f64,
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
    let keys = bench_keys(opts.accounts);
    let genesis = Genesis {
        chain_id: "gridmesh-bench".into(),
        timestamp_ms: 0,
        accounts: funded(&keys),
        validators: vec![],
        market: None,
        economics: None,
    };
    tracing::info!(txs = opts.txs, "signing transfers");
    let encoded = sign_transfers(&keys, &genesis.chain_id, opts.txs);
    let threads = std::thread::available_parallelism()
        .map(|c| c.get())
        .unwrap_or(1);

    let chain = Chain::open(dir.path(), &genesis)?;
    let supply = chain.state().total_supply();
    let chain = Arc::new(RwLock::new(chain));
    let mempool = Arc::new(Mutex::new(Mempool::new(
        &genesis.chain_id,
        MempoolConfig::default(),
    )));
    let app = LedgerApp::new(
        chain.clone(),
        mempool.clone(),
        gridmesh_node::DEFAULT_MAX_BLOCK_TXS,
    );
    let engine = SoloEngine::new(
        app,
        SoloConfig {
            block_interval: opts.block_interval,
            empty_blocks: false,
            proposer: keys[0].address(),
            time_scale: 1,
        },
    );
    let committed = Arc::new(AtomicU64::new(0));
    // (commit ms, whole step ms, index ms, transactions, finished at) per block
    type Sample = (f64, f64, f64, u32, Instant);
    let latencies = Arc::new(Mutex::new(Vec::<Sample>::new()));
    let (stop, stopped) = mpsc::channel();
    let engine = {
        let committed = committed.clone();
        let latencies = latencies.clone();
        std::thread::Builder::new()
            .name("engine".into())
            .spawn(move || {
                engine.run(stopped, |f, took| {
                    committed.fetch_add(u64::from(f.tx_count), Ordering::SeqCst);
                    latencies.lock().expect("latencies").push((
                        f.commit_time.as_secs_f64() * 1e3,
                        took.as_secs_f64() * 1e3,
                        f.index_time.as_secs_f64() * 1e3,
                        f.tx_count,
                        Instant::now(),
                    ));
                })
            })?
    };

    // Admission pipeline as a busy node runs it: one verifier per core batch-verifies chunks of
    // incoming transactions on its own thread; one thread admits the verified chunks to the mempool.
    tracing::info!("admitting and committing");
    let start = Instant::now();
    let verifiers = threads;
    let admitted: anyhow::Result<()> = std::thread::scope(|s| {
        let (tx, rx) = mpsc::sync_channel::<Vec<gridmesh_ledger::VerifiedTx>>(2 * verifiers);
        let chunks: Vec<&[Vec<u8>]> = encoded.chunks(opts.admission_batch).collect();
        for v in 0..verifiers {
            let tx = tx.clone();
            let mine: Vec<&[Vec<u8>]> = chunks.iter().skip(v).step_by(verifiers).copied().collect();
            std::thread::Builder::new()
                .name("verifier".into())
                .spawn_scoped(s, move || {
                    lower_priority();
                    for chunk in mine {
                        let inputs: Vec<&[u8]> = chunk.iter().map(|b| b.as_slice()).collect();
                        let verified = decode_and_verify_batch(&inputs, Parallelism::ThisThread)
                            .into_iter()
                            .map(|r| r.expect("benchmark transactions are valid"))
                            .collect();
                        if tx.send(verified).is_err() {
                            return;
                        }
                    }
                })
                .expect("spawn a verifier thread");
        }
        drop(tx);
        let inserter = std::thread::Builder::new()
            .name("admission".into())
            .spawn_scoped(s, || admit(rx, start, opts, &chain, &mempool))
            .expect("spawn the admission thread");
        inserter.join().expect("inserter panicked")
    });
    admitted?;
    let (mut seen, mut progress_at) = (0, Instant::now());
    while seen < opts.txs as u64 {
        std::thread::sleep(Duration::from_millis(1));
        let now = committed.load(Ordering::SeqCst);
        if now > seen {
            (seen, progress_at) = (now, Instant::now());
        } else if progress_at.elapsed() > 10 * opts.block_interval + Duration::from_secs(10) {
            let _ = stop.send(());
            anyhow::bail!(
                "the ledger stopped committing: {seen} of {} transfers after {:?}",
                opts.txs,
                start.elapsed()
            );
        }
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
    let sorted = |f: fn(&Sample) -> f64| {
        let mut v: Vec<f64> = lat.iter().map(f).collect();
        v.sort_by(|a, b| a.total_cmp(b));
        v
    };
    let (ms, step, index) = (sorted(|l| l.0), sorted(|l| l.1), sorted(|l| l.2));
    Ok(LedgerBenchReport {
        txs: opts.txs,
        offered_per_sec: opts.offered_per_sec,
        accounts: opts.accounts,
        block_interval_ms: opts.block_interval.as_millis() as u64,
        blocks: lat.len(),
        seconds,
        committed_per_sec: match (lat.first(), lat.last()) {
            (Some(first), Some(last)) if lat.len() > 1 => {
                let txs: u64 = lat[1..].iter().map(|l| u64::from(l.3)).sum();
                txs as f64 / last.4.duration_since(first.4).as_secs_f64()
            }
            _ => opts.txs as f64 / seconds,
        },
        end_to_end_per_sec: opts.txs as f64 / seconds,
        block_commit_p50_ms: percentile(&ms, 0.5),
        block_commit_p99_ms: percentile(&ms, 0.99),
        block_commit_max_ms: ms.last().copied().unwrap_or(0.0),
        block_step_p50_ms: percentile(&step, 0.5),
        block_step_p99_ms: percentile(&step, 0.99),
        index_p99_ms: percentile(&index, 0.99),
        largest_block_txs: lat.iter().map(|l| l.3).max().unwrap_or(0),
    })
}

/// Deterministic benchmark accounts.
pub fn bench_keys(n: usize) -> Vec<Keypair> {
    (0..n)
        .map(|i| {
            let mut seed = [7u8; 32];
            seed[..8].copy_from_slice(&(i as u64).to_le_bytes());
            Keypair::from_seed(seed)
        })
        .collect()
}

/// A million tokens for each key.
pub fn funded(keys: &[Keypair]) -> Vec<GenesisAccount> {
    keys.iter()
        .map(|k| GenesisAccount {
            address: k.address(),
            balance: Amount::from_tokens(1_000_000),
        })
        .collect()
}

/// Signs `txs` transfers round-robin over `keys` (round r uses nonce r), in parallel: the
/// clients' work, done before measuring. Returns canonical encodings.
pub fn sign_transfers(keys: &[Keypair], chain_id: &str, txs: usize) -> Vec<Vec<u8>> {
    let n = keys.len();
    let threads = std::thread::available_parallelism()
        .map(|c| c.get())
        .unwrap_or(1);
    let per = txs.div_ceil(threads);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || {
                    (t * per..((t + 1) * per).min(txs))
                        .map(|i| {
                            let (round, from) = (i / n, i % n);
                            let to = keys[(from + 1 + round % (n - 1)) % n].address();
                            SignedTx::transfer(
                                &keys[from],
                                chain_id,
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
    })
}

/// The admitting half of the bench's admission pipeline: paces (if asked), then inserts verified
/// chunks into the mempool, waiting while it is full.
fn admit(
    rx: mpsc::Receiver<Vec<gridmesh_ledger::VerifiedTx>>,
    start: Instant,
    opts: &LedgerBenchOptions,
    chain: &RwLock<Chain>,
    mempool: &Mutex<Mempool>,
) -> anyhow::Result<()> {
    lower_priority();
    for (i, mut pending) in rx.into_iter().enumerate() {
        if let Some(rate) = opts.offered_per_sec {
            let due = start + Duration::from_secs_f64((i * opts.admission_batch) as f64 / rate);
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
        }
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
    Ok(())
}

/// The ledger's throughput next to the machine's verification limit, measured in one run.
#[derive(Clone, Debug, Serialize)]
pub struct LedgerVsLimit {
    pub ed25519: Ed25519Rates,
    pub ledger: LedgerBenchReport,
    /// Batch verification per core times the number of cores.
    pub batch_limit_per_sec: f64,
    /// Sustained committed transfers per second over the limit.
    pub ratio: f64,
}

/// Measures the raw ed25519 limit, then drives the ledger; `offered_load` (a fraction of the limit)
/// paces the load instead of saturating admission.
pub fn ledger_vs_limit(
    opts: &LedgerBenchOptions,
    offered_load: Option<f64>,
) -> anyhow::Result<LedgerVsLimit> {
    if let Some(f) = offered_load {
        anyhow::ensure!(
            (0.01..=2.0).contains(&f),
            "offered load {f} is out of range (0.01 to 2, a fraction of the limit)"
        );
    }
    eprintln!("measuring raw ed25519 verification ...");
    let ed25519 = ed25519_rates(20_000);
    let limit = ed25519.batch_per_core * ed25519.cores as f64;
    let opts = LedgerBenchOptions {
        offered_per_sec: offered_load.map(|f| f * limit),
        ..opts.clone()
    };
    eprintln!(
        "driving {} signed transfers from {} accounts through the ledger{} ...",
        opts.txs,
        opts.accounts,
        opts.offered_per_sec
            .map(|r| format!(" at {r:.0}/s"))
            .unwrap_or_default()
    );
    let ledger = ledger(&opts)?;
    Ok(LedgerVsLimit {
        ratio: ledger.committed_per_sec / limit,
        ed25519,
        ledger,
        batch_limit_per_sec: limit,
    })
}

impl std::fmt::Display for LedgerVsLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (e, l) = (&self.ed25519, &self.ledger);
        writeln!(
            f,
            "ed25519 verify_strict:  {:>9.0} sig/s per core",
            e.single_per_core
        )?;
        writeln!(
            f,
            "ed25519 batch (256):    {:>9.0} sig/s per core; {:.0} sig/s measured on {} cores; limit {:.0}",
            e.batch_per_core, e.batch_all_cores, e.cores, self.batch_limit_per_sec
        )?;
        writeln!(
            f,
            "ledger committed:       {:>9.0} transfers/s sustained, {:.0}/s end to end ({} txs, {} accounts, {} blocks of up to {} txs{})",
            l.committed_per_sec,
            l.end_to_end_per_sec,
            l.txs,
            l.accounts,
            l.blocks,
            l.largest_block_txs,
            l.offered_per_sec.map(|r| format!(", offered {r:.0}/s")).unwrap_or_default()
        )?;
        writeln!(f, "ratio to batch limit:   {:>9.2}", self.ratio)?;
        writeln!(
            f,
            "block commit latency:   p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms at {} ms blocks (durable + applied)",
            l.block_commit_p50_ms, l.block_commit_p99_ms, l.block_commit_max_ms, l.block_interval_ms
        )?;
        write!(
            f,
            "whole block step:       p50 {:.1} ms, p99 {:.1} ms (build + commit + tx index; index p99 {:.1} ms)",
            l.block_step_p50_ms, l.block_step_p99_ms, l.index_p99_ms
        )
    }
}

/// Admission yields to block production: its threads run at a lower priority (nice 10), so that
/// under load the engine still commits on time and admission absorbs the backlog.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: plain system calls on the calling thread; no memory is shared with the kernel.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, 10);
    }
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
            offered_per_sec: Some(20_000.0),
        })
        .unwrap();
        assert_eq!(r.txs, 2_000);
        assert!(r.blocks >= 1 && r.committed_per_sec > 0.0);
        let rates = ed25519_rates(512);
        assert!(rates.single_per_core > 0.0 && rates.batch_per_core > 0.0);
    }
}
