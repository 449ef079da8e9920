//! A BFT network of real processes: `gridmesh testnet` writes four validators, each runs as its
//! own `gridmesh node`; transfers go to the validators round-robin while one is killed with
//! SIGKILL, the others go on, the killed one restarts and catches up, and every transaction any
//! validator reports as finalised is in the same block on all four. Then a full node that joins
//! from genesis catches up to the same chain.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{gridmesh, NodeProc};
use gridmesh_client::client::Client;
use gridmesh_ledger::{Keypair, SignedTx};
use gridmesh_types::{Address, Amount, Hash32};

const N: usize = 4;
const SENDERS: usize = 8;

fn base_port() -> u16 {
    // Distinct per process so concurrent test runs do not collide, and below Linux's ephemeral
    // range (32768-60999), where the other tests' brokers, nodes and clients take their ports.
    // Each network takes base..base + 160 (p2p, APIs, full nodes).
    20_000 + (std::process::id() % 60) as u16 * 200
}

fn start_validator(dir: &Path, i: usize) -> NodeProc {
    NodeProc::spawn(&[
        "--config".into(),
        dir.join(format!("v{i}/node.toml")).display().to_string(),
    ])
}

fn height(c: &Client) -> u64 {
    c.status().map(|s| s.height).unwrap_or(0)
}

fn wait_until(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(start.elapsed() < timeout, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Senders with their next nonce; each sticks to one validator so a killed validator cannot
/// leave a gap in another sender's nonces.
struct Load {
    senders: Vec<(Keypair, u64)>,
    submitted: Vec<Hash32>,
    round: u64,
}

impl Load {
    /// One transfer per sender whose validator is up.
    fn tick(&mut self, clients: &[Client], up: &[bool], chain_id: &str) {
        for (s, (key, nonce)) in self.senders.iter_mut().enumerate() {
            let v = s % N;
            if !up[v] {
                continue;
            }
            let to = gridmesh_types::Address([(s as u8).wrapping_add(1); 32]);
            let tx = SignedTx::transfer(
                key,
                chain_id,
                *nonce,
                to,
                Amount(1_000 + self.round as u128),
            );
            if let Ok(r) = clients[v].submit(&tx) {
                self.submitted.push(r.hash.parse().unwrap());
                *nonce += 1;
            }
        }
        self.round += 1;
    }

    /// After a validator restarts, its senders continue from the nonce it has committed.
    fn resync(&mut self, v: usize, client: &Client) {
        for (s, (key, nonce)) in self.senders.iter_mut().enumerate() {
            if s % N == v {
                *nonce = client.account(&key.address()).unwrap().nonce;
            }
        }
    }
}

#[test]
fn four_validators_survive_a_kill_and_agree_on_every_finalised_transaction() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("net");
    let out = gridmesh(&[
        "testnet",
        "--validators",
        "4",
        "--dir",
        dir.to_str().unwrap(),
        "--full-nodes",
        "1",
        "--base-port",
        &base_port().to_string(),
        "--init-only",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let mut procs: Vec<Option<NodeProc>> = (0..N).map(|i| Some(start_validator(&dir, i))).collect();
    let clients: Vec<Client> = procs
        .iter()
        .map(|p| Client::new(&p.as_ref().unwrap().url))
        .collect();
    wait_until(
        "all validators finalise blocks",
        Duration::from_secs(120),
        || clients.iter().all(|c| height(c) >= 2),
    );
    let status = clients[0].status().unwrap();
    assert_eq!(status.consensus, "bft");
    assert_eq!(status.validators, 4);
    let chain_id = status.chain_id.clone();
    let url0 = procs[0].as_ref().unwrap().url.clone();
    let metrics = ureq::get(&format!("{url0}/metrics"))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    assert!(
        metrics.contains("gridmesh_bft_finalized_total"),
        "{metrics}"
    );
    let peers_of = |url: &str| -> Option<u64> {
        let m = ureq::get(&format!("{url}/metrics"))
            .call()
            .ok()?
            .into_string()
            .ok()?;
        m.lines()
            .find_map(|l| l.strip_prefix("gridmesh_bft_peers_connected "))
            .and_then(|v| v.trim().parse().ok())
    };
    wait_until(
        "validator 0 is connected to its three peers",
        Duration::from_secs(15),
        || peers_of(&url0) == Some(3),
    );

    // Fund the senders from the faucet (through validator 1: any validator will do).
    let faucet = Keypair::load(&dir.join("faucet.key")).unwrap();
    let senders: Vec<Keypair> = (0..SENDERS)
        .map(|i| Keypair::from_seed([50 + i as u8; 32]))
        .collect();
    let mut last = Hash32::default();
    for (n, s) in senders.iter().enumerate() {
        let tx = SignedTx::transfer(
            &faucet,
            &chain_id,
            n as u64,
            s.address(),
            Amount::from_tokens(1_000),
        );
        last = clients[1].submit(&tx).unwrap().hash.parse().unwrap();
    }
    clients[1]
        .wait_committed(&last, Duration::from_secs(60))
        .unwrap();

    let mut load = Load {
        senders: senders.into_iter().map(|k| (k, 0)).collect(),
        submitted: Vec::new(),
        round: 0,
    };
    let mut up = [true; N];
    let tick = Duration::from_millis(50);
    let run = |load: &mut Load, up: &[bool], secs: u64| {
        let end = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < end {
            load.tick(&clients, up, &chain_id);
            std::thread::sleep(tick);
        }
    };

    run(&mut load, &up, 4);
    // SIGKILL validator 3 under load: no shutdown code runs.
    procs[3].take().unwrap().kill9();
    up[3] = false;
    let at_kill = height(&clients[0]);
    run(&mut load, &up, 6);
    assert_eq!(
        peers_of(&url0),
        Some(2),
        "/metrics counts the killed validator out"
    );
    let without = height(&clients[0]);
    assert!(
        without >= at_kill + 3,
        "three validators stalled: {at_kill} -> {without}"
    );

    // Restart it: it catches up from its peers.
    procs[3] = Some(start_validator(&dir, 3));
    let restarted = Client::new(&procs[3].as_ref().unwrap().url);
    let target = height(&clients[0]);
    wait_until(
        "the restarted validator catches up",
        Duration::from_secs(90),
        || height(&restarted) >= target,
    );
    load.resync(3, &restarted);
    let mut clients = clients;
    clients[3] = restarted;
    let run = |load: &mut Load, secs: u64| {
        let end = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < end {
            load.tick(&clients, &[true; N], &chain_id);
            std::thread::sleep(tick);
        }
    };
    run(&mut load, 4);

    // Drain: wait until every validator's mempool is empty and heights agree.
    wait_until("mempools drain", Duration::from_secs(60), || {
        clients
            .iter()
            .all(|c| c.status().map(|s| s.mempool_size == 0).unwrap_or(false))
    });
    // Transactions waiting behind a missing nonce stay in the validator that admitted them (issue
    // 19, finding 1: before, 200 such sat in all four pools); once the nonce arrives, they are
    // gossiped and commit everywhere.
    let next = clients[0].account(&faucet.address()).unwrap().nonce;
    let gapped: Vec<SignedTx> = (1..=20)
        .map(|n| SignedTx::transfer(&faucet, &chain_id, next + n, Address([9; 32]), Amount(1)))
        .collect();
    let r = clients[0].submit_batch(&gapped).unwrap();
    assert_eq!(r.accepted, 20);
    std::thread::sleep(Duration::from_secs(2));
    let pools: Vec<usize> = clients
        .iter()
        .map(|c| c.status().unwrap().mempool_size)
        .collect();
    assert_eq!(pools, [20, 0, 0, 0], "gapped transactions were gossiped");
    let fill = SignedTx::transfer(&faucet, &chain_id, next, Address([9; 32]), Amount(1));
    clients[0].submit(&fill).unwrap();
    wait_until(
        "the un-gapped transactions commit everywhere",
        Duration::from_secs(60),
        || {
            clients.iter().all(|c| {
                c.account(&faucet.address())
                    .map(|a| a.nonce == next + 21)
                    .unwrap_or(false)
            })
        },
    );
    let top = clients.iter().map(height).max().unwrap();
    wait_until(
        "all validators reach the same height",
        Duration::from_secs(60),
        || clients.iter().all(|c| height(c) >= top),
    );

    // Every transaction any validator reports as finalised is in the same block on all four.
    let mut finalised = 0;
    for hash in &load.submitted {
        let mut seen: BTreeMap<usize, (u64, String)> = BTreeMap::new();
        for (v, c) in clients.iter().enumerate() {
            if let Some(t) = c.tx(hash).unwrap() {
                if t.status == "committed" {
                    seen.insert(v, (t.height.unwrap(), t.block_hash.unwrap()));
                }
            }
        }
        if seen.is_empty() {
            continue;
        }
        finalised += 1;
        assert_eq!(
            seen.len(),
            N,
            "tx {hash} finalised on {:?} only",
            seen.keys()
        );
        let first = seen.values().next().unwrap().clone();
        assert!(
            seen.values().all(|x| *x == first),
            "tx {hash} in different blocks: {seen:?}"
        );
    }
    assert!(
        finalised * 10 >= load.submitted.len() * 9,
        "only {finalised} of {} submitted transactions were finalised",
        load.submitted.len()
    );
    // Same chain, block for block (sampled every few heights and at the top).
    let heights: Vec<u64> = (1..=top).step_by(7).chain([top]).collect();
    for h in heights {
        let hashes: Vec<String> = clients
            .iter()
            .map(|c| c.block(Some(h)).unwrap().unwrap().hash)
            .collect();
        assert!(
            hashes.iter().all(|x| *x == hashes[0]),
            "fork at height {h}: {hashes:?}"
        );
    }

    // Validator 3 is made again from a snapshot of its own data directory: restored, it starts
    // consensus at the snapshot's block (the block's certificate is in the file), not at genesis,
    // and follows the others.
    let v3 = dir.join("v3");
    procs[3].take().unwrap().terminate();
    let file = tmp.path().join("v3.snapshot");
    let wrote = gridmesh(&[
        "node",
        "snapshot",
        "--data-dir",
        v3.join("data").to_str().unwrap(),
        "--out",
        file.to_str().unwrap(),
    ]);
    let said = String::from_utf8_lossy(&wrote.stdout);
    assert!(
        wrote.status.success() && said.contains("consensus starts at this block"),
        "{said} {}",
        String::from_utf8_lossy(&wrote.stderr)
    );
    std::fs::rename(v3.join("data"), v3.join("data.old")).unwrap();
    let restored = gridmesh(&[
        "node",
        "restore",
        "--snapshot",
        file.to_str().unwrap(),
        "--data-dir",
        v3.join("data").to_str().unwrap(),
    ]);
    assert!(restored.status.success(), "{restored:?}");
    // A damaged floor stops the node with why (it would otherwise start from genesis).
    let floor = v3.join("data").join("consensus-floor.bin");
    let good = std::fs::read(&floor).unwrap();
    std::fs::write(&floor, &good[1..]).unwrap();
    let refused = gridmesh(&["node", "--config", v3.join("node.toml").to_str().unwrap()]);
    let why = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && why.contains("consensus floor does not decode"),
        "{why}"
    );
    std::fs::write(&floor, &good).unwrap();
    procs[3] = Some(start_validator(&dir, 3));
    let from = clients[3].status().unwrap().oldest_block - 1;
    wait_until(
        "the restored validator follows the others",
        Duration::from_secs(90),
        || height(&clients[3]) > from + 3 && height(&clients[3]) + 3 >= height(&clients[0]),
    );
    let h = height(&clients[3]);
    let hash_at = |c: &Client| c.block(Some(h)).unwrap().unwrap().hash;
    assert_eq!(hash_at(&clients[3]), hash_at(&clients[0]), "block {h}");
    eprintln!(
        "{} submitted, {finalised} finalised on all {N} validators and the full node, {top} blocks; \
         validator 3 restored at block {from}, following at {h}",
        load.submitted.len()
    );
}

/// Mistakes in setting up a BFT node get a clear error and change nothing.
#[test]
fn bft_setup_mistakes_are_refused_clearly() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("net");
    let d = dir.to_str().unwrap();
    let out = gridmesh(&[
        "testnet",
        "--validators",
        "4",
        "--dir",
        d,
        "--base-port",
        "41000",
        "--init-only",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let genesis = dir.join("genesis.toml");
    let g = genesis.to_str().unwrap();
    let data = tmp.path().join("data");
    let data = data.to_str().unwrap();
    let fails = |args: &[&str], needle: &str| {
        let out = gridmesh(args);
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(
            err.contains(needle),
            "{args:?}: expected {needle:?} in {err}"
        );
    };
    // Neither a validator key nor a p2p address for a full node.
    fails(
        &[
            "node",
            "--data-dir",
            data,
            "--genesis",
            g,
            "--listen",
            "127.0.0.1:0",
        ],
        "--validator-key",
    );
    // A key that is not one of the validators.
    let stranger = tmp.path().join("stranger.key");
    let made = gridmesh(&["keys", "new", "--out", stranger.to_str().unwrap()]);
    assert!(made.status.success());
    let stranger_address = String::from_utf8(made.stdout).unwrap().trim().to_string();
    fails(
        &[
            "node",
            "--data-dir",
            data,
            "--genesis",
            g,
            "--listen",
            "127.0.0.1:0",
            "--validator-key",
            stranger.to_str().unwrap(),
        ],
        "not in the genesis validator set",
    );
    // A validator key for a solo (no-validator) chain.
    fails(
        &[
            "node",
            "--data-dir",
            data,
            "--listen",
            "127.0.0.1:0",
            "--validator-key",
            stranger.to_str().unwrap(),
        ],
        "lists no validators",
    );
    // A broken config file, and a malformed peer.
    let bad = tmp.path().join("bad.toml");
    std::fs::write(&bad, "data_dir = \"x\"\nvalidator_keys = \"oops\"\n").unwrap();
    fails(
        &["node", "--config", bad.to_str().unwrap()],
        "validator_keys",
    );
    fails(
        &["node", "--data-dir", data, "--peer", "nonsense"],
        "KEY@HOST:PORT",
    );
    // A peer key that is not a curve point, and the same full node listed twice.
    fails(
        &[
            "node",
            "--config",
            dir.join("v0/node.toml").to_str().unwrap(),
            "--peer",
            &format!("{}@127.0.0.1:9", "ab".repeat(32)),
        ],
        "not an ed25519 key",
    );
    let peer = format!("{stranger_address}@127.0.0.1:9");
    fails(
        &[
            "node",
            "--config",
            dir.join("v0/node.toml").to_str().unwrap(),
            "--peer",
            &peer,
            "--peer",
            &peer,
        ],
        "listed twice",
    );
    // Reusing a testnet directory with another size.
    fails(
        &["testnet", "--validators", "5", "--dir", d, "--init-only"],
        "already holds a testnet",
    );
    // A genesis whose validators have unequal power.
    let text = std::fs::read_to_string(&genesis)
        .unwrap()
        .replacen("power = 1", "power = 2", 1);
    let unequal = tmp.path().join("unequal.toml");
    std::fs::write(&unequal, text).unwrap();
    fails(
        &[
            "node",
            "--data-dir",
            data,
            "--genesis",
            unequal.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ],
        "same power",
    );
}
