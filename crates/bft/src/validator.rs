//! A validator on a real network: commonware's Tokio runtime, authenticated and encrypted TCP
//! between the validators named in the genesis (ed25519 handshake, ChaCha20-Poly1305), and the
//! consensus stack of [`crate::engine`].
//!
//! [`run`] blocks its thread until told to stop (or until the replica hits a fatal error); the
//! node runs it on a thread of its own, beside the HTTP API, sharing the chain and the mempool.

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use commonware_cryptography::{ed25519, ChaCha20Poly1305, Signer as _};
use commonware_p2p::authenticated::lookup;
use commonware_p2p::{Address, AddressableManager as _, AddressableTrackedPeers};
use commonware_runtime::{Clock, Metrics as _, Runner as _, Supervisor as _};
use commonware_stream::cups::{self, Cups};
use commonware_stream::sake::{self, Sake};
use commonware_utils::ordered::Map;
use commonware_utils::TryCollect as _;
use futures::channel::oneshot;
use futures::FutureExt as _;

use crate::app::Replica;
use crate::engine::{self, EngineConfig, Networks, Timing, CHANNELS};

/// Everything a validator process needs besides its ledger.
#[derive(Clone)]
pub struct ValidatorConfig {
    /// The node's key (p2p identity; a validator also votes with it).
    pub key: ed25519::PrivateKey,
    /// Validator (votes) or full node (follows).
    pub votes: bool,
    /// The genesis validators and their p2p addresses.
    pub validators: Vec<(ed25519::PublicKey, SocketAddr)>,
    /// Other nodes (full nodes) allowed to connect: they receive blocks and certificates but
    /// have no vote.
    pub peers: Vec<(ed25519::PublicKey, SocketAddr)>,
    /// Where this validator accepts p2p connections.
    pub p2p_listen: SocketAddr,
    /// Consensus namespace (see [`engine::namespace`]).
    pub namespace: Vec<u8>,
    /// Directory of the consensus engine's own storage (votes journal, finalised block archive).
    pub storage_dir: PathBuf,
    pub timing: Timing,
    /// Runtime worker threads.
    pub worker_threads: usize,
    /// Keep only this many of the last blocks in the consensus archives (`None`: every block).
    pub keep_blocks: Option<u64>,
    /// Restored from a snapshot: the certificate of the chain's first block (see
    /// [`EngineConfig::floor`]).
    pub floor: Option<Vec<u8>>,
}

/// The encoded finalisation certificate of block `height` in a stopped node's consensus
/// storage (`DATA_DIR/consensus`), for a snapshot ([`engine::finalization_at`]).
pub fn finalization_at(storage_dir: &std::path::Path, height: u64) -> Option<Vec<u8>> {
    let runtime = commonware_runtime::tokio::Config::new()
        .with_worker_threads(1)
        .with_storage_directory(storage_dir.to_path_buf())
        .with_catch_panics(false);
    commonware_runtime::tokio::Runner::new(runtime).start(|context| async move {
        engine::finalization_at(
            context,
            PARTITION_PREFIX,
            engine::ARCHIVE_SECTION_BLOCKS,
            height,
        )
        .await
    })
}

/// Prefix of a node's consensus storage partitions.
const PARTITION_PREFIX: &str = "gridmesh";

/// Runs the validator until `stop` fires or the replica fails. Blocks the calling thread.
pub fn run(cfg: ValidatorConfig, replica: Arc<Replica>, stop: oneshot::Receiver<()>) {
    let runtime = commonware_runtime::tokio::Config::new()
        .with_worker_threads(cfg.worker_threads.max(1))
        .with_storage_directory(cfg.storage_dir.clone())
        .with_catch_panics(false);
    let runner = commonware_runtime::tokio::Runner::new(runtime);
    runner.start(|context| async move {
        let n = cfg.validators.len();
        let me = cfg.key.public_key();
        let mut p2p = lookup::Config::local(
            Cups::<_, ChaCha20Poly1305>::new(
                Sake {
                    signer: cfg.key.clone(),
                    synchrony_bound: Duration::from_secs(5),
                    max_handshake_age: Duration::from_secs(10),
                    version: sake::Version::V1,
                },
                cups::Version::V1,
            ),
            &cfg.namespace,
            cfg.p2p_listen,
            NonZeroUsize::new(n + cfg.peers.len() + 1).unwrap(),
            engine::max_message_size(n),
            NonZeroUsize::new(4096).unwrap(),
        );
        // Validators of one community restart often during tests and upgrades: reconnect fast.
        p2p.peer_connection_cooldown = Duration::from_millis(250);
        p2p.dial_frequency = Duration::from_millis(250);
        // The validator set is fixed by the genesis: one peer set (this also sizes each
        // channel's inbound queue, see `engine::channel_quota`).
        p2p.tracked_peer_sets = NonZeroUsize::new(1).unwrap();
        let (mut network, mut oracle) = lookup::Network::new(context.child("network"), p2p);
        let primary = address_map(cfg.validators.iter());
        // Full nodes are secondary peers: accepted and sent blocks and certificates, no vote.
        let secondary = address_map(
            cfg.peers
                .iter()
                .filter(|(k, _)| !cfg.validators.iter().any(|(v, _)| v == k)),
        );
        oracle.track(0, AddressableTrackedPeers::new(primary, secondary));
        let net = Networks::from_pairs(
            CHANNELS
                .iter()
                .map(|c| network.register(*c, engine::channel_quota(*c))),
        );
        network.start();
        let mut validators: Vec<ed25519::PublicKey> =
            cfg.validators.iter().map(|(k, _)| k.clone()).collect();
        validators.sort();
        let engine_cfg = EngineConfig {
            key: cfg.key.clone(),
            votes: cfg.votes,
            validators,
            namespace: cfg.namespace.clone(),
            partition_prefix: PARTITION_PREFIX.into(),
            timing: cfg.timing,
            mailbox_size: NonZeroUsize::new(4096).unwrap(),
            keep_blocks: cfg.keep_blocks,
            archive_section_blocks: engine::ARCHIVE_SECTION_BLOCKS,
            floor: cfg.floor.clone(),
        };
        let _engine = engine::start(
            context.child("engine"),
            engine_cfg,
            replica.clone(),
            net,
            oracle.clone(),
            oracle,
        )
        .await;
        tracing::info!(%me, listen = %cfg.p2p_listen, validators = n, votes = cfg.votes, "consensus running");
        let mut stop = stop.fuse();
        let mut ticks = 0u64;
        loop {
            futures::select! {
                _ = stop => break,
                _ = context.sleep(Duration::from_millis(200)).fuse() => {
                    if let Some(why) = replica.fatal() {
                        tracing::error!(%why, "validator stopping");
                        break;
                    }
                    ticks += 1;
                    if ticks % 5 == 1 {
                        let connected = connected_peers(&context.encode());
                        replica.stats.peers_connected.store(connected, std::sync::atomic::Ordering::Relaxed);
                    }
                }
            }
        }
    });
}

/// How many peers the p2p network holds a connection to, from the runtime's metrics: the
/// tracker's directory keeps one `connected` sample per connected peer, removed when it goes
/// (`network_tracker_directory_connected{peer=...}` in commonware-p2p 2026.10).
fn connected_peers(metrics: &str) -> u64 {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('{').map(|(name, _)| name))
        .filter(|name| name.starts_with("network_tracker") && name.ends_with("_connected"))
        .count() as u64
}

/// The p2p address book of a list of distinct keys (checked by the genesis and the config).
fn address_map<'a>(
    peers: impl Iterator<Item = &'a (ed25519::PublicKey, SocketAddr)>,
) -> Map<ed25519::PublicKey, Address> {
    peers
        .map(|(k, a)| (k.clone(), Address::from(*a)))
        .try_collect()
        .expect("p2p keys are distinct")
}

#[cfg(test)]
mod tests {
    #[test]
    fn connected_peers_are_counted_from_the_tracker_only() {
        let text = "# HELP network_tracker_directory_connected Unix timestamp...\n\
            # TYPE network_tracker_directory_connected gauge\n\
            network_tracker_directory_connected{peer=\"aa\"} 1765000000000\n\
            network_tracker_directory_connected{peer=\"bb\"} 1765000000001\n\
            network_tracker_directory_tracked 3\n\
            engine_marshal_connected{epoch=\"0\"} 1\n";
        assert_eq!(super::connected_peers(text), 2);
        assert_eq!(super::connected_peers(""), 0);
    }
}
