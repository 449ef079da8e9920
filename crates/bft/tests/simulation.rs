//! Deterministic simulation of a BFT network: validators run the real consensus stack and the
//! real ledger (redb in temporary directories) on commonware's deterministic runtime and
//! simulated network, with random latency and message loss chosen by the seed. A failing seed
//! replays exactly: `GRIDMESH_SIM_SEED=<seed> cargo test -p gridmesh-bft --test simulation`.
//!
//! `GRIDMESH_SIM_SEEDS=N` runs N seeds per scenario (default 6 in CI; `scripts/sim` runs 200).

use std::collections::BTreeMap;
use std::num::{NonZeroU64, NonZeroUsize};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use commonware_cryptography::{ed25519, Signer as _};
use commonware_p2p::simulated::{self, Link, Network, Oracle};
use commonware_runtime::{deterministic, Clock, Handle, Runner as _, Spawner, Supervisor as _};
use commonware_utils::Probability;
use gridmesh_bft::app::{address_of, consensus_signer, Behaviour, Replica, ReplicaConfig};
use gridmesh_bft::engine::{self, EngineConfig, Networks, Timing, CHANNELS};
use gridmesh_ledger::genesis::{GenesisAccount, GenesisValidator};
use gridmesh_ledger::{Chain, Genesis, Keypair, Mempool, MempoolConfig, SignedTx};
use gridmesh_types::{Address, Amount, Hash32};

type Pk = ed25519::PublicKey;

const USERS: usize = 16;

fn seeds() -> Vec<u64> {
    if let Ok(s) = std::env::var("GRIDMESH_SIM_SEED") {
        return vec![s.parse().expect("GRIDMESH_SIM_SEED is a number")];
    }
    let n: u64 = std::env::var("GRIDMESH_SIM_SEEDS")
        .ok()
        .map(|s| s.parse().expect("GRIDMESH_SIM_SEEDS is a number"))
        .unwrap_or(6);
    (0..n).collect()
}

struct Node {
    handle: Handle<()>,
    replica: Arc<Replica>,
}

/// A simulated network of validators and what it needs to restart them.
struct Sim {
    ctx: deterministic::Context,
    /// Nodes `0..validators` vote; the rest are full nodes.
    validators: usize,
    oracle: Oracle<Pk, deterministic::Context>,
    signers: Vec<ed25519::PrivateKey>,
    genesis: Genesis,
    dirs: Vec<tempfile::TempDir>,
    nodes: Vec<Option<Node>>,
    old_chains: Vec<Weak<RwLock<Chain>>>,
    behaviours: Vec<Behaviour>,
    users: Vec<Keypair>,
    restarts: Vec<u32>,
    link: Link,
    /// Blocks every node keeps (chain and consensus archives); `None`: all.
    keep_blocks: Option<u64>,
}

fn signer(i: usize) -> (Keypair, ed25519::PrivateKey) {
    let kp = Keypair::from_seed([i as u8 + 1; 32]);
    let sk = consensus_signer(&kp);
    (kp, sk)
}

fn lossy_link(seed: u64) -> Link {
    // Seed-dependent but fixed per run: 10-60 ms latency, up to 20 ms jitter, 1-6 % of messages
    // lost (never retransmitted: harsher than TCP, where loss becomes delay; with one validator
    // down every vote is needed, and more loss makes views time out more than they succeed).
    let latency = 10 + (seed * 7919) % 50;
    let jitter = (seed * 104_729) % 20;
    let loss_pct = 1 + (seed % 6);
    Link {
        latency: Duration::from_millis(latency),
        jitter: Duration::from_millis(jitter),
        success_rate: Probability::from_f64(1.0 - loss_pct as f64 / 100.0).expect("probability"),
    }
}

impl Sim {
    async fn new(ctx: deterministic::Context, n: usize, link: Link) -> Sim {
        Sim::with_full_nodes(ctx, n, 0, link).await
    }

    async fn with_full_nodes(
        ctx: deterministic::Context,
        n: usize,
        full: usize,
        link: Link,
    ) -> Sim {
        let mut keys = Vec::new();
        let mut signers = Vec::new();
        for i in 0..n + full {
            let (kp, sk) = signer(i);
            keys.push(kp);
            signers.push(sk);
        }
        let users: Vec<Keypair> = (0..USERS)
            .map(|i| Keypair::from_seed([100 + i as u8; 32]))
            .collect();
        let genesis = Genesis {
            chain_id: "gridmesh-sim".into(),
            timestamp_ms: 0,
            accounts: users
                .iter()
                .map(|u| GenesisAccount {
                    address: u.address(),
                    balance: Amount::from_tokens(1_000),
                })
                .collect(),
            validators: keys[..n]
                .iter()
                .enumerate()
                .map(|(i, k)| GenesisValidator {
                    public_key: k.address(),
                    p2p_address: format!("127.0.0.1:{}", 7000 + i).parse().unwrap(),
                    power: 1,
                })
                .collect(),
            market: None,
            economics: None,
        };
        genesis.validate().unwrap();
        let pks: Vec<Pk> = signers.iter().map(|s| s.public_key()).collect();
        let (network, oracle) = Network::new_with_split_peers(
            ctx.child("network"),
            simulated::Config {
                max_size: engine::max_message_size(n),
                max_peers_per_set: NonZeroUsize::new(n + full).unwrap(),
                disconnect_on_block: true,
                tracked_peer_sets: NonZeroUsize::new(1).unwrap(),
            },
            pks[..n].to_vec(),
            pks[n..].to_vec(),
        )
        .await;
        network.start();
        for a in &pks {
            for b in &pks {
                if a != b {
                    oracle
                        .add_link(a.clone(), b.clone(), link.clone())
                        .await
                        .unwrap();
                }
            }
        }
        let total = n + full;
        Sim {
            ctx,
            validators: n,
            oracle,
            signers,
            genesis,
            dirs: (0..total).map(|_| tempfile::tempdir().unwrap()).collect(),
            nodes: (0..total).map(|_| None).collect(),
            old_chains: (0..total).map(|_| Weak::new()).collect(),
            behaviours: vec![Behaviour::Honest; total],
            users,
            restarts: vec![0; total],
            link,
            keep_blocks: None,
        }
    }

    fn pk(&self, i: usize) -> Pk {
        self.signers[i].public_key()
    }

    async fn start(&mut self, i: usize) {
        assert!(self.nodes[i].is_none(), "validator {i} is running");
        // A crashed validator's tasks are dropped by the runtime; wait until its database is
        // closed before opening it again, as a restarted process would find it.
        while self.old_chains[i].upgrade().is_some() {
            self.ctx.sleep(Duration::from_millis(10)).await;
        }
        let mut chain = Chain::open(self.dirs[i].path(), &self.genesis).expect("open chain");
        if let Some(keep) = self.keep_blocks {
            chain.set_retention(gridmesh_ledger::store::Retention::Last(keep));
        }
        let mempool = Mempool::new(chain.chain_id(), MempoolConfig::default());
        let namespace = engine::namespace(chain.chain_id(), chain.genesis_hash());
        let chain = Arc::new(RwLock::new(chain));
        self.old_chains[i] = Arc::downgrade(&chain);
        let replica = Replica::new(
            chain,
            Arc::new(Mutex::new(mempool)),
            ReplicaConfig {
                max_block_txs: 4096,
                idle_block_interval: Duration::from_millis(300),
                behaviour: self.behaviours[i],
            },
        );
        let control = self.oracle.control(self.pk(i));
        let mut chans = Vec::new();
        for c in CHANNELS {
            chans.push(control.register(c, engine::channel_quota(c)).await.unwrap());
        }
        let net = Networks::from_pairs(chans);
        let cfg = EngineConfig {
            key: self.signers[i].clone(),
            votes: i < self.validators,
            validators: {
                let mut v: Vec<Pk> = (0..self.validators).map(|j| self.pk(j)).collect();
                v.sort();
                v
            },
            namespace,
            partition_prefix: format!("validator-{i}"),
            // The timeouts a node ships with.
            timing: Timing::default(),
            mailbox_size: NonZeroUsize::new(1024).unwrap(),
            keep_blocks: self.keep_blocks,
            archive_section_blocks: NonZeroU64::new(8).unwrap(),
            floor: gridmesh_ledger::snapshot::consensus_floor(self.dirs[i].path()).unwrap(),
        };
        let peers = self.oracle.manager();
        let r = replica.clone();
        let handle = self
            .ctx
            .child("validator")
            .with_attribute("index", i)
            .with_attribute("restart", self.restarts[i])
            .spawn(move |ctx| async move {
                let h = engine::start(ctx, cfg, r, net, peers, control).await;
                let _ = h.await;
            });
        self.restarts[i] += 1;
        self.nodes[i] = Some(Node { handle, replica });
    }

    fn crash(&mut self, i: usize) {
        let node = self.nodes[i].take().expect("validator is running");
        node.handle.abort();
    }

    async fn cut(&self, i: usize) {
        for j in 0..self.signers.len() {
            if i != j {
                let _ = self.oracle.remove_link(self.pk(i), self.pk(j)).await;
                let _ = self.oracle.remove_link(self.pk(j), self.pk(i)).await;
            }
        }
    }

    async fn heal(&self, i: usize) {
        for j in 0..self.signers.len() {
            if i != j {
                let _ = self
                    .oracle
                    .add_link(self.pk(i), self.pk(j), self.link.clone())
                    .await;
                let _ = self
                    .oracle
                    .add_link(self.pk(j), self.pk(i), self.link.clone())
                    .await;
            }
        }
    }

    fn height(&self, i: usize) -> u64 {
        let node = self.nodes[i].as_ref().expect("running");
        node.replica.chain().read().unwrap().head().height
    }

    fn running(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|i| self.nodes[*i].is_some())
            .collect()
    }

    fn max_height(&self, among: &[usize]) -> u64 {
        among.iter().map(|i| self.height(*i)).max().unwrap_or(0)
    }

    fn min_height(&self, among: &[usize]) -> u64 {
        among.iter().map(|i| self.height(*i)).min().unwrap_or(0)
    }

    /// Submits one transfer per user to a running validator (round-robin), with the nonce that
    /// validator's committed state expects.
    fn submit_round(&self, round: u64) {
        let running = self.running();
        if running.is_empty() {
            return;
        }
        for (u, user) in self.users.iter().enumerate() {
            let v = running[(round as usize + u) % running.len()];
            let node = self.nodes[v].as_ref().unwrap();
            let chain = node.replica.chain().read().unwrap();
            let account = chain.account(&user.address());
            let to = self.users[(u + 1 + round as usize) % USERS].address();
            let tx = SignedTx::transfer(
                user,
                chain.chain_id(),
                account.nonce,
                to,
                Amount(1_000 + round as u128),
            );
            if let Ok(verified) = tx.clone().verify() {
                let mut mp = node.replica.mempool().lock().unwrap();
                if mp.insert(verified, account).is_ok() {
                    node.replica.outbox().push([&tx]);
                }
            }
        }
    }

    /// Runs for `secs` simulated seconds, submitting transactions every 100 ms.
    async fn run(&self, secs: u64, round: &mut u64) {
        for _ in 0..secs * 10 {
            self.submit_round(*round);
            *round += 1;
            self.ctx.sleep(Duration::from_millis(100)).await;
        }
    }

    /// Runs for `secs` and asserts that the highest of `among` rose by at least 3 blocks; returns
    /// the new height.
    async fn assert_progress(
        &self,
        among: &[usize],
        secs: u64,
        round: &mut u64,
        what: &str,
    ) -> u64 {
        let before = self.max_height(among);
        self.run(secs, round).await;
        let after = self.max_height(among);
        assert!(after >= before + 3, "{what}: {before} -> {after}");
        after
    }

    /// Every pair of running validators agrees on every block hash and state root up to the
    /// lower of their heights; the total supply never changes.
    fn check_agreement(&self, among: &[usize]) -> Vec<Hash32> {
        let supply = Amount::from_tokens(1_000 * USERS as u64);
        let mut reference: BTreeMap<u64, (Hash32, Hash32)> = BTreeMap::new();
        for &i in among {
            let node = self.nodes[i].as_ref().unwrap();
            let chain = node.replica.chain().read().unwrap();
            assert_eq!(
                chain.state().total_supply(),
                supply,
                "validator {i}: supply changed"
            );
            // Blocks a node pruned (it keeps a window) are not compared.
            let kept_from = chain.store().kept_from().unwrap();
            for h in std::iter::once(0).chain(kept_from..=chain.head().height) {
                let header = chain.store().header(h).unwrap().expect("stored header");
                let entry = (header.hash(), header.state_root);
                let prev = reference.entry(h).or_insert(entry);
                assert_eq!(*prev, entry, "validator {i} disagrees at height {h}");
            }
        }
        reference.values().map(|(h, _)| *h).collect()
    }

    fn proposers(&self, i: usize) -> Vec<Address> {
        let node = self.nodes[i].as_ref().unwrap();
        let chain = node.replica.chain().read().unwrap();
        (1..=chain.head().height)
            .map(|h| chain.store().header(h).unwrap().unwrap().proposer)
            .collect()
    }

    fn committed_txs(&self, i: usize) -> u64 {
        let node = self.nodes[i].as_ref().unwrap();
        let chain = node.replica.chain().read().unwrap();
        (1..=chain.head().height)
            .map(|h| chain.store().header(h).unwrap().unwrap().tx_count as u64)
            .sum()
    }
}

fn runner(seed: u64) -> deterministic::Runner {
    // `RUST_LOG=gridmesh_bft=debug` shows what the validators did.
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
    deterministic::Runner::new(
        deterministic::Config::new()
            .with_seed(seed)
            .with_timeout(Some(Duration::from_secs(600))),
    )
}

/// One validator crashes and the rest go on; it restarts and catches up through block sync; then
/// another is partitioned away and the rest go on; the partition heals and everyone agrees.
#[test]
fn crash_partition_restart_keep_finalising_and_agree() {
    for seed in seeds() {
        let (hashes, txs) = runner(seed).start(|ctx| async move {
            let mut sim = Sim::new(ctx, 4, lossy_link(seed)).await;
            for i in 0..4 {
                sim.start(i).await;
            }
            let mut round = 0;
            sim.run(8, &mut round).await;
            let all = [0, 1, 2, 3];
            let h0 = sim.min_height(&all);
            assert!(h0 >= 3, "seed {seed}: only {h0} blocks with everyone up");

            // Validator 3 crashes: the other three go on.
            sim.crash(3);
            let after = sim
                .assert_progress(
                    &[0, 1, 2],
                    15,
                    &mut round,
                    &format!("seed {seed}, one crashed"),
                )
                .await;

            // Validator 3 restarts and catches up from its peers (block sync).
            sim.start(3).await;
            let mut waited = 0;
            while sim.height(3) < after {
                assert!(
                    waited < 30,
                    "seed {seed}: restarted validator stuck at {}, network at {after}",
                    sim.height(3)
                );
                sim.run(1, &mut round).await;
                waited += 1;
            }
            // Validator 2 is cut off: 0, 1 and 3 go on. Every vote now needs the validator that
            // just restarted; on some seeds it takes 10-15 s (fetch timeouts) before it votes again.
            sim.cut(2).await;
            sim.assert_progress(
                &[0, 1, 3],
                25,
                &mut round,
                &format!("seed {seed}, one partitioned"),
            )
            .await;

            // The partition heals: 2 catches up too.
            sim.heal(2).await;
            sim.run(8, &mut round).await;
            let top = sim.max_height(&all);
            let low = sim.min_height(&all);
            assert!(
                top - low <= 3,
                "seed {seed}: heights {low}..{top} after healing"
            );
            let hashes = sim.check_agreement(&all);
            let txs = sim.committed_txs(0);
            assert!(txs > 0, "seed {seed}: no transaction committed");
            (hashes, txs)
        });
        eprintln!(
            "seed {seed}: {} blocks, {txs} transactions, all agree",
            hashes.len()
        );
    }
}

/// The sections a prunable archive holds in `partition`, by their first height.
async fn archive_sections(ctx: &deterministic::Context, partition: &str) -> Vec<u64> {
    let mut s: Vec<u64> = commonware_runtime::Storage::scan(ctx, partition)
        .await
        .unwrap()
        .into_iter()
        .map(|name| u64::from_be_bytes(name.try_into().unwrap()))
        .collect();
    s.sort_unstable();
    s
}

/// Validators keeping the last 24 blocks: marshal's archives drop their old sections (8 blocks
/// each) and the chains their old blocks; a validator that crashed restarts on its pruned
/// archives and catches up from its peers; all agree on the blocks they kept.
#[test]
fn validators_keeping_a_window_prune_their_archives_and_restart_on_them() {
    for seed in seeds().into_iter().take(2) {
        runner(seed).start(|ctx| async move {
            let mut sim = Sim::new(ctx.child("sim"), 4, lossy_link(seed)).await;
            sim.keep_blocks = Some(24);
            for i in 0..4 {
                sim.start(i).await;
            }
            let mut round = 0;
            while sim.min_height(&[0, 1, 2, 3]) < 60 {
                sim.run(2, &mut round).await;
            }
            // Sections held in validator 0's block archive (8 blocks each, named by their first
            // height): the window's, and at most two more (one being filled, one pruned at the
            // next section boundary).
            let held = archive_sections(&ctx, "validator-0-blocks-sections-value").await;
            let height = sim.height(0);
            assert!(
                held.len() <= 24 / 8 + 2
                    && held[0] + 24 + 2 * 8 >= height
                    && *held.last().unwrap() <= height,
                "seed {seed}: sections from {held:?} at height {height}"
            );
            // The chain keeps its window too.
            let node = sim.nodes[0].as_ref().unwrap();
            let kept = node
                .replica
                .chain()
                .read()
                .unwrap()
                .store()
                .kept_from()
                .unwrap();
            assert!(
                kept > 1 && kept + 25 >= height,
                "seed {seed}: chain from {kept} at {height}"
            );
            sim.crash(1);
            // Down for fewer blocks than the window: its peers still hold what it missed.
            sim.assert_progress(&[0, 2, 3], 4, &mut round, &format!("seed {seed}"))
                .await;
            sim.start(1).await;
            let target = sim.max_height(&[0, 2, 3]);
            let mut waited = 0;
            while sim.height(1) < target {
                assert!(
                    waited < 30,
                    "seed {seed}: validator 1 stuck at {}",
                    sim.height(1)
                );
                sim.run(1, &mut round).await;
                waited += 1;
            }
            sim.check_agreement(&[0, 1, 2, 3]);
            let later = archive_sections(&ctx, "validator-0-blocks-sections-value").await;
            assert!(later[0] > held[0], "seed {seed}: {held:?} then {later:?}");
        });
    }
}

/// A full node joins after the validators pruned the blocks before it could: from a snapshot of
/// a validator's chain with its head's finalisation certificate, it starts consensus at that
/// block, follows the validators and agrees with them.
#[test]
fn a_node_restored_from_a_snapshot_follows_validators_that_pruned_its_past() {
    for seed in seeds().into_iter().take(2) {
        runner(seed).start(|ctx| async move {
            let mut sim = Sim::with_full_nodes(ctx.child("sim"), 4, 1, lossy_link(seed)).await;
            // A window that outlasts the snapshot's trip (a block is made every ~50 ms here).
            sim.keep_blocks = Some(200);
            for i in 0..4 {
                sim.start(i).await;
            }
            let mut round = 0;
            while sim.min_height(&[0, 1, 2, 3]) < 300 {
                sim.run(2, &mut round).await;
            }
            // Validator 0 stops; its data directory makes the snapshot (with the certificate of
            // its head from its consensus archive), restored as the full node's.
            sim.crash(0);
            while sim.old_chains[0].upgrade().is_some() {
                ctx.sleep(Duration::from_millis(10)).await;
            }
            let dir0 = sim.dirs[0].path().to_path_buf();
            let head = gridmesh_ledger::snapshot::head_height(&dir0).unwrap();
            let floor = engine::finalization_at(
                ctx.child("snapshot"),
                "validator-0",
                NonZeroU64::new(8).unwrap(),
                head,
            )
            .await
            .expect("the head's certificate is in the archive");
            let head_hash = Chain::open(&dir0, &sim.genesis).unwrap().head_hash();
            assert!(
                engine::decode_floor(&floor, head_hash).unwrap().is_some(),
                "the floor certifies the head"
            );
            assert!(engine::decode_floor(&floor[1..], head_hash).is_err());
            let file = sim.dirs[4].path().join("chain.snapshot");
            let written = gridmesh_ledger::snapshot::write(&dir0, &file, Some(floor)).unwrap();
            assert!(written.consensus_floor && written.height == head);
            let restored = tempfile::tempdir().unwrap();
            gridmesh_ledger::snapshot::restore(&file, restored.path()).unwrap();
            sim.dirs[4] = restored;
            sim.start(0).await;
            let kept_from = {
                let node = sim.nodes[1].as_ref().unwrap();
                let chain = node.replica.chain().read().unwrap();
                chain.store().kept_from().unwrap()
            };
            assert!(
                kept_from > 24,
                "seed {seed}: the validators pruned to {kept_from}"
            );
            sim.start(4).await;
            let mut waited = 0;
            loop {
                sim.run(1, &mut round).await;
                let target = sim.max_height(&[0, 1, 2, 3]);
                if sim.height(4) + 2 >= target && sim.height(4) > head + 5 {
                    break;
                }
                waited += 1;
                assert!(
                    waited < 40,
                    "seed {seed}: the restored node at {} (from {head}), validators at {target}",
                    sim.height(4)
                );
            }
            sim.check_agreement(&[0, 1, 2, 3, 4]);
        });
    }
}

/// With two of four down there is no quorum: nothing finalises, and nothing forks. When one
/// returns, blocks finalise again.
#[test]
fn two_of_four_down_stalls_then_resumes_without_fork() {
    for seed in seeds() {
        runner(seed).start(|ctx| async move {
            let mut sim = Sim::new(ctx, 4, lossy_link(seed)).await;
            for i in 0..4 {
                sim.start(i).await;
            }
            let mut round = 0;
            sim.run(6, &mut round).await;
            sim.crash(2);
            sim.crash(3);
            // Let blocks already certified drain.
            sim.run(3, &mut round).await;
            let stalled = sim.max_height(&[0, 1]);
            sim.run(10, &mut round).await;
            assert_eq!(
                sim.max_height(&[0, 1]),
                stalled,
                "seed {seed}: finalised without a quorum"
            );
            sim.start(3).await;
            // Validator 3's height is at most the stalled one, so this is progress past the stall.
            sim.assert_progress(
                &[0, 1, 3],
                12,
                &mut round,
                &format!("seed {seed}, one returned"),
            )
            .await;
            sim.check_agreement(&[0, 1, 3]);
        });
    }
}

/// A validator that proposes blocks with a wrong state root, or with a transaction that does not
/// apply, has them voted down: none of its blocks is ever finalised, the others go on.
#[test]
fn byzantine_proposals_are_rejected() {
    for behaviour in [Behaviour::WrongStateRoot, Behaviour::InvalidTransaction] {
        for seed in seeds() {
            runner(seed).start(|ctx| async move {
                let mut sim = Sim::new(ctx, 4, lossy_link(seed)).await;
                sim.behaviours[3] = behaviour;
                for i in 0..4 {
                    sim.start(i).await;
                }
                let mut round = 0;
                sim.run(20, &mut round).await;
                let honest = [0, 1, 2];
                assert!(
                    sim.min_height(&honest) >= 5,
                    "seed {seed}: honest validators stalled"
                );
                sim.check_agreement(&honest);
                let byzantine = address_of(&sim.pk(3));
                for i in honest {
                    assert!(
                        !sim.proposers(i).contains(&byzantine),
                        "seed {seed} {behaviour:?}: a faulty block was finalised"
                    );
                }
                let rejected: u64 = honest
                    .iter()
                    .map(|i| {
                        sim.nodes[*i]
                            .as_ref()
                            .unwrap()
                            .replica
                            .stats
                            .rejected
                            .load(std::sync::atomic::Ordering::Relaxed)
                    })
                    .sum();
                assert!(
                    rejected > 0,
                    "seed {seed} {behaviour:?}: nothing was rejected"
                );
            });
        }
    }
}

/// A full node started long after genesis fetches every block from the validators, checks each
/// finalisation certificate, and ends up with the same chain; it never votes.
#[test]
fn full_node_joins_from_genesis() {
    for seed in seeds() {
        runner(seed).start(|ctx| async move {
            let mut sim = Sim::with_full_nodes(ctx, 4, 1, lossy_link(seed)).await;
            for i in 0..4 {
                sim.start(i).await;
            }
            let mut round = 0;
            sim.run(10, &mut round).await;
            let before = sim.max_height(&[0, 1, 2, 3]);
            assert!(before >= 5, "seed {seed}: validators at {before}");
            sim.start(4).await;
            sim.run(10, &mut round).await;
            let full = sim.height(4);
            assert!(
                full >= before,
                "seed {seed}: full node at {full}, validators were at {before}"
            );
            sim.check_agreement(&[0, 1, 2, 3, 4]);
            let stats = &sim.nodes[4].as_ref().unwrap().replica.stats;
            assert_eq!(stats.proposed.load(std::sync::atomic::Ordering::Relaxed), 0);
        });
    }
}

/// The same seed gives the same chain, block for block.
#[test]
fn same_seed_same_chain() {
    let run = |seed| {
        runner(seed).start(|ctx| async move {
            let mut sim = Sim::new(ctx, 4, lossy_link(seed)).await;
            for i in 0..4 {
                sim.start(i).await;
            }
            let mut round = 0;
            sim.run(6, &mut round).await;
            sim.check_agreement(&[0, 1, 2, 3])
        })
    };
    let a = run(7);
    let b = run(7);
    assert!(a.len() > 3);
    assert_eq!(a, b);
}

/// Market transactions under BFT: users register devices and place orders through different
/// validators; the slot clears at gate closure inside a consensus block (the block-level rule runs
/// on every replica, speculatively and at finalisation), and every validator holds the same trades,
/// escrow and state root.
#[test]
fn a_market_slot_clears_identically_on_every_validator() {
    use gridmesh_ledger::market::{escrow_account, MarketFile, SlotRecord};
    use gridmesh_ledger::readers::MarketReader;
    use gridmesh_ledger::{DeviceKind, Side, TxBody, TxKind};

    // Two seeds in the default run (each simulates 78 s); GRIDMESH_SIM_SEEDS / _SEED choose more.
    let explicit = std::env::var_os("GRIDMESH_SIM_SEEDS").is_some()
        || std::env::var_os("GRIDMESH_SIM_SEED").is_some();
    let seeds: Vec<u64> = seeds()
        .into_iter()
        .take(if explicit { usize::MAX } else { 2 })
        .collect();
    for seed in seeds {
        runner(seed).start(|ctx| async move {
            let mut sim = Sim::new(ctx, 4, lossy_link(seed)).await;
            // The simulated clock starts at the Unix epoch: slot 1 starts at 900 s; with a 14-minute
            // gate its orders close at 60 s of simulated time.
            sim.genesis.market = Some(MarketFile {
                gate_closure_minutes: Some(14),
                ..Default::default()
            });
            for i in 0..4 {
                sim.start(i).await;
            }
            sim.ctx.sleep(Duration::from_secs(3)).await;
            // Each user: a device, then an order for slot 1 (nonces 0 and 1), via validator u % 4.
            for (u, user) in sim.users.iter().enumerate() {
                let node = sim.nodes[u % 4].as_ref().unwrap();
                let seller = u % 2 == 0;
                // Sellers sell from a battery with its own key and bond (a declared device
                // sells nothing); buyers declare a meter.
                let register = if seller {
                    let key = Keypair::from_seed([0xb0 ^ u as u8; 32]);
                    let info = gridmesh_ledger::tx::DeviceInfo {
                        kind: DeviceKind::Battery,
                        capacity_w: 5_000,
                        location: format!("street-{}/home-{u}", u % 3),
                        latitude_microdeg: 0,
                        longitude_microdeg: 0,
                        tilt_deg: 0,
                        azimuth_deg: 0,
                    };
                    TxKind::register_device_key(
                        &sim.genesis.chain_id,
                        &user.address(),
                        &key,
                        info,
                        Amount::from_tokens(10),
                    )
                } else {
                    TxKind::RegisterDevice {
                        kind: DeviceKind::Meter,
                        capacity_w: 5_000,
                    }
                };
                let kinds = [
                    register,
                    TxKind::PlaceOrder {
                        slot: 1,
                        side: if seller { Side::Ask } else { Side::Bid },
                        energy_mwh: 200_000 + 50_000 * u as u64,
                        price_per_kwh: if seller {
                            80_000 + 5_000 * u as u64
                        } else {
                            150_000 + 5_000 * u as u64
                        },
                        location: format!("street-{}/home-{u}", u % 3),
                    },
                ];
                for (nonce, kind) in kinds.into_iter().enumerate() {
                    let tx = TxBody {
                        version: gridmesh_ledger::tx::TX_VERSION,
                        chain_id: sim.genesis.chain_id.clone(),
                        sender: user.address(),
                        nonce: nonce as u64,
                        kind,
                    }
                    .sign(user);
                    let account = node
                        .replica
                        .chain()
                        .read()
                        .unwrap()
                        .account(&user.address());
                    let verified = tx.clone().verify().unwrap();
                    let mut mp = node.replica.mempool().lock().unwrap();
                    mp.insert(verified, account).expect("admitted");
                    node.replica.outbox().push([&tx]);
                }
            }
            // Past the gate (60 s) and then some.
            sim.ctx.sleep(Duration::from_secs(75)).await;
            sim.check_agreement(&[0, 1, 2, 3]);
            let mut records = Vec::new();
            for i in 0..4 {
                let node = sim.nodes[i].as_ref().unwrap();
                let chain = node.replica.chain().read().unwrap();
                assert!(
                    chain.head().timestamp_ms > 60_000,
                    "validator {i} passed the gate"
                );
                let rec: SlotRecord = chain.state().slot_record(1).expect("slot 1 cleared");
                records.push((rec, chain.account(&escrow_account()).balance));
            }
            assert!(
                records[0].0.trades > 0 && records[0].0.orders == USERS as u32,
                "{:?}",
                records[0].0
            );
            assert!(
                records.iter().all(|r| *r == records[0]),
                "validators disagree on the slot"
            );
        });
    }
}
