//! `gridmesh bench testnet`: finalised transfers per second and submit-to-finalisation latency
//! of a network of real node processes on loopback, driven through the HTTP API as clients
//! would, beside the same load on a single solo node.
//!
//! Method: sign every transfer first (round r of every account uses nonce r). One client thread
//! per node posts batches of [`BATCH`] to its node (`POST /v1/txs`), so the load is spread
//! round-robin over the validators and gossip must carry each transaction to the others. An
//! observer polls node 0 and fetches each new block: a transaction's latency is the time from the
//! start of the request that submitted it until node 0 served the block that holds it.
//! Throughput is finalised transactions over the time from the first submission to the last
//! finalisation.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use gridmesh_ledger::{Genesis, SignedTx};
use gridmesh_types::Hash32;
use serde::Serialize;

use crate::bench::{bench_keys, funded, sign_transfers};
use gridmesh_client::client::Client;

/// Transactions per HTTP request.
pub const BATCH: usize = 1000;

#[derive(Clone, Debug)]
pub struct NetBenchOptions {
    /// The `gridmesh` binary to run nodes with.
    pub exe: PathBuf,
    /// 0 for a solo node, else the number of BFT validators.
    pub validators: usize,
    pub accounts: usize,
    pub txs: usize,
    /// Offered load in transactions per second (all clients together); `None` saturates.
    pub offered_per_sec: Option<f64>,
    pub base_port: u16,
}

#[derive(Clone, Debug, Serialize)]
pub struct NetBenchReport {
    /// `solo` or `bft`.
    pub consensus: String,
    pub validators: usize,
    pub txs: usize,
    pub accounts: usize,
    pub offered_per_sec: Option<f64>,
    pub finalized: usize,
    pub blocks: u64,
    pub seconds: f64,
    pub finalized_per_sec: f64,
    pub latency_p50_ms: f64,
    pub latency_p99_ms: f64,
    pub latency_max_ms: f64,
    /// Largest block.
    pub max_block_txs: usize,
}

struct Procs(Vec<Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &self.0 {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
        }
        for c in &mut self.0 {
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn spawn_node(exe: &Path, args: &[String], log: &Path) -> anyhow::Result<Child> {
    let log = std::fs::File::create(log)?;
    Command::new(exe)
        .arg("node")
        .args(args)
        .env(
            "RUST_LOG",
            std::env::var("GRIDMESH_BENCH_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .context("starting a node")
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Runs one measurement (see the module docs). On failure the nodes' directory (with their logs)
/// is kept and named in the error.
pub fn run(opts: &NetBenchOptions) -> anyhow::Result<NetBenchReport> {
    anyhow::ensure!(opts.accounts >= 2, "need at least 2 accounts");
    let tmp = tempfile::Builder::new()
        .prefix("gridmesh-bench-")
        .tempdir()
        .context("creating a temporary directory")?;
    let result = measure(opts, tmp.path());
    if result.is_err() || std::env::var_os("GRIDMESH_BENCH_KEEP").is_some() {
        eprintln!("node directories and logs kept in {}", tmp.path().display());
        let _ = tmp.keep();
    }
    result
}

fn measure(opts: &NetBenchOptions, dir: &Path) -> anyhow::Result<NetBenchReport> {
    let keys = bench_keys(opts.accounts);
    let mut procs = Procs(Vec::new());
    let mut urls = Vec::new();
    let chain_id;
    if opts.validators == 0 {
        let genesis = Genesis {
            chain_id: "gridmesh-bench".into(),
            timestamp_ms: 0,
            accounts: funded(&keys),
            validators: vec![],
            market: None,
            economics: None,
        };
        chain_id = genesis.chain_id.clone();
        std::fs::write(dir.join("genesis.toml"), genesis.to_toml())?;
        let api = format!("127.0.0.1:{}", opts.base_port + 100);
        let args: Vec<String> = [
            "--data-dir",
            dir.join("solo").to_str().unwrap(),
            "--genesis",
            dir.join("genesis.toml").to_str().unwrap(),
            "--listen",
            &api,
            "--block-interval-ms",
            "100",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        procs
            .0
            .push(spawn_node(&opts.exe, &args, &dir.join("solo.log"))?);
        urls.push(format!("http://{api}"));
    } else {
        let t = crate::testnet::init_with(dir, opts.validators, 0, opts.base_port, funded(&keys))?;
        chain_id = t.chain_id.clone();
        for (i, v) in t.validators.iter().enumerate() {
            let args = vec![
                "--config".to_string(),
                t.config_path(dir, i).display().to_string(),
            ];
            procs.0.push(spawn_node(
                &opts.exe,
                &args,
                &dir.join(format!("v{i}.log")),
            )?);
            urls.push(format!("http://{}", v.api));
        }
    }
    tracing::info!(txs = opts.txs, "signing transfers");
    let encoded = sign_transfers(&keys, &chain_id, opts.txs);
    let hashes: Vec<Hash32> = encoded
        .iter()
        .map(|b| SignedTx::decode(b).expect("we signed it").hash())
        .collect();
    let clients: Vec<Client> = urls.iter().map(|u| Client::new(u)).collect();
    let deadline = Instant::now() + Duration::from_secs(180);
    // A BFT network is up once it finalises blocks; a solo node makes none while idle.
    let min_height = u64::from(opts.validators > 0);
    for c in &clients {
        while c.status().map(|s| s.height < min_height).unwrap_or(true) {
            if Instant::now() > deadline {
                bail!("nodes did not start (logs in {})", dir.display());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let start_height = clients[0].status()?.height;

    // Submission: batch b goes to node b % nodes; its send time is recorded per transaction.
    let batches: Vec<(usize, &[Vec<u8>])> = encoded.chunks(BATCH).enumerate().collect();
    let nodes = clients.len();
    let submitted_at: Arc<Mutex<HashMap<Hash32, Instant>>> =
        Arc::new(Mutex::new(HashMap::with_capacity(opts.txs)));
    let hash_index: HashMap<Hash32, usize> =
        hashes.iter().enumerate().map(|(i, h)| (*h, i)).collect();
    let done = AtomicBool::new(false);
    let t0 = Instant::now();
    let mut observed: Vec<(Instant, usize)> = Vec::new(); // (when, txs) per block
    let mut latencies: Vec<f64> = Vec::with_capacity(opts.txs);
    let mut blocks = 0u64;
    let mut max_block = 0usize;
    let result: anyhow::Result<()> = std::thread::scope(|s| {
        for (node, url) in urls.iter().enumerate() {
            let mine: Vec<(usize, &[Vec<u8>])> = batches
                .iter()
                .filter(|(b, _)| b % nodes == node)
                .cloned()
                .collect();
            let client = Client::new(url);
            let submitted_at = submitted_at.clone();
            let hashes = &hashes;
            let done = &done;
            s.spawn(move || {
                for (b, chunk) in mine {
                    if done.load(Ordering::Relaxed) {
                        return;
                    }
                    if let Some(rate) = opts.offered_per_sec {
                        let due = t0 + Duration::from_secs_f64((b * BATCH) as f64 / rate);
                        if let Some(wait) = due.checked_duration_since(Instant::now()) {
                            std::thread::sleep(wait);
                        }
                    }
                    let txs: Vec<SignedTx> = chunk
                        .iter()
                        .map(|e| SignedTx::decode(e).expect("valid"))
                        .collect();
                    let sent = Instant::now();
                    {
                        let mut m = submitted_at.lock().expect("lock");
                        for i in 0..chunk.len() {
                            m.insert(hashes[b * BATCH + i], sent);
                        }
                    }
                    // A full mempool answers 503/429 per transaction: retry those.
                    let mut pending = txs;
                    while !pending.is_empty() && !done.load(Ordering::Relaxed) {
                        match client.submit_batch(&pending) {
                            Ok(r) => {
                                pending = pending
                                    .into_iter()
                                    .zip(r.results)
                                    .filter(|(_, item)| {
                                        matches!(
                                            item.error.as_deref(),
                                            Some("mempool_full") | Some("sender_full")
                                        )
                                    })
                                    .map(|(t, _)| t)
                                    .collect();
                                if !pending.is_empty() {
                                    std::thread::sleep(Duration::from_millis(20));
                                }
                            }
                            Err(e) => {
                                tracing::warn!(error = %e, "submission failed; retrying");
                                std::thread::sleep(Duration::from_millis(100));
                            }
                        }
                    }
                }
            });
        }
        // Observer: follow node 0's finalised blocks.
        let mut next = start_height + 1;
        let mut seen = 0usize;
        let mut last_progress = Instant::now();
        while seen < opts.txs {
            let head = clients[0].status()?.height;
            if head < next {
                if last_progress.elapsed() > Duration::from_secs(60) {
                    done.store(true, Ordering::Relaxed);
                    bail!(
                        "no progress for 60 s: {seen} of {} finalised (logs in {})",
                        opts.txs,
                        dir.display()
                    );
                }
                std::thread::sleep(Duration::from_millis(5));
                continue;
            }
            for h in next..=head {
                let block = clients[0]
                    .block(Some(h))?
                    .with_context(|| format!("block {h} disappeared"))?;
                let now = Instant::now();
                let sent = submitted_at.lock().expect("lock");
                for t in &block.txs {
                    let hash: Hash32 = t.hash.parse().expect("hash");
                    if hash_index.contains_key(&hash) {
                        if let Some(at) = sent.get(&hash) {
                            latencies.push(now.duration_since(*at).as_secs_f64() * 1e3);
                        }
                        seen += 1;
                    }
                }
                blocks += 1;
                max_block = max_block.max(block.txs.len());
                observed.push((now, block.txs.len()));
            }
            next = head + 1;
            last_progress = Instant::now();
        }
        done.store(true, Ordering::Relaxed);
        Ok(())
    });
    result?;
    let last = observed
        .iter()
        .rev()
        .find(|(_, n)| *n > 0)
        .map(|(t, _)| *t)
        .unwrap_or_else(Instant::now);
    let seconds = last.duration_since(t0).as_secs_f64();
    latencies.sort_by(|a, b| a.total_cmp(b));
    drop(procs);
    Ok(NetBenchReport {
        consensus: if opts.validators == 0 { "solo" } else { "bft" }.into(),
        validators: opts.validators.max(1),
        txs: opts.txs,
        accounts: opts.accounts,
        offered_per_sec: opts.offered_per_sec,
        finalized: latencies.len(),
        blocks,
        seconds,
        finalized_per_sec: latencies.len() as f64 / seconds,
        latency_p50_ms: percentile(&latencies, 0.5),
        latency_p99_ms: percentile(&latencies, 0.99),
        latency_max_ms: latencies.last().copied().unwrap_or(0.0),
        max_block_txs: max_block,
    })
}

impl std::fmt::Display for NetBenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let who = if self.consensus == "solo" {
            "solo node".to_string()
        } else {
            format!("{} validators", self.validators)
        };
        write!(
            f,
            "{who:>13}: {:>8.0} finalised tx/s  latency p50 {:>6.0} ms  p99 {:>6.0} ms  max {:>6.0} ms  ({} tx in {} blocks, largest {}, {:.1} s)",
            self.finalized_per_sec,
            self.latency_p50_ms,
            self.latency_p99_ms,
            self.latency_max_ms,
            self.finalized,
            self.blocks,
            self.max_block_txs,
            self.seconds
        )
    }
}
