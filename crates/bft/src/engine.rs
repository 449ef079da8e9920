//! Wires one validator: simplex consensus, marshal (ordered delivery of finalised blocks and
//! backfill from peers), buffered broadcast of proposed blocks, and transaction gossip, all on one
//! commonware runtime and one p2p network (simulated in tests, authenticated TCP in the node).
//!
//! ```text
//!   p2p channels                                     gridmesh
//!   ------------                                     --------
//!   0 votes ---------\
//!   1 certificates ---+--> simplex ---> Inline ----> LedgerApplication::{propose, verify}
//!   2 simplex fetch -/        |          (marshal       (Replica: chain + speculative blocks)
//!                             v           wrapper)
//!   3 backfill ---------> marshal ------------------> Finalizer -> Replica::finalize (redb)
//!   4 blocks -----------> buffered broadcast ---^
//!   5 transactions -----> gossip <----------------> Mempool
//! ```

use std::num::{NonZeroU16, NonZeroU64, NonZeroUsize};
use std::sync::Arc;
use std::time::Duration;

use commonware_broadcast::buffered;
use commonware_consensus::marshal::core::Actor as MarshalActor;
use commonware_consensus::marshal::resolver::p2p as marshal_resolver;
use commonware_consensus::marshal::standard::{Inline, Standard};
use commonware_consensus::marshal::{self, Start};
use commonware_consensus::simplex::config::{ForwardPolicy, SkipPolicy};
use commonware_consensus::simplex::elector::RoundRobin;
use commonware_consensus::simplex::scheme::ed25519::Scheme;
use commonware_consensus::simplex::{self, SkipBudget};
use commonware_consensus::types::{Epoch, FixedEpocher, ViewDelta};
use commonware_cryptography::certificate::{ConstantProvider, Scheme as _, Verifier as _};
use commonware_cryptography::{ed25519, Digestible, Sha256};
use commonware_p2p::{Blocker, Provider, Receiver, Sender};
use commonware_parallel::Sequential;
use commonware_runtime::buffer::paged::CacheRef;
use commonware_runtime::{Clock, Handle, Metrics, Spawner, Storage};
use commonware_storage::archive::prunable;
use commonware_storage::translator::EightCap;
use commonware_utils::ordered::Set;
use commonware_utils::TryCollect as _;
use rand_core::CryptoRng;

use crate::app::{Finalizer, LedgerApplication, Replica};
use crate::block::BftBlock;
use crate::gossip;

/// p2p channel of simplex votes.
pub const CHANNEL_VOTES: u64 = 0;
/// p2p channel of simplex certificates.
pub const CHANNEL_CERTIFICATES: u64 = 1;
/// p2p channel of simplex's own fetches of missing certificates.
pub const CHANNEL_SIMPLEX_RESOLVER: u64 = 2;
/// p2p channel of marshal's backfill of finalised blocks.
pub const CHANNEL_BACKFILL: u64 = 3;
/// p2p channel of proposed blocks (buffered broadcast).
pub const CHANNEL_BLOCKS: u64 = 4;
/// p2p channel of transaction gossip.
pub const CHANNEL_TXS: u64 = 5;
/// All channels, in registration order.
pub const CHANNELS: [u64; 6] = [
    CHANNEL_VOTES,
    CHANNEL_CERTIFICATES,
    CHANNEL_SIMPLEX_RESOLVER,
    CHANNEL_BACKFILL,
    CHANNEL_BLOCKS,
    CHANNEL_TXS,
];

/// Per-peer rate limit of a channel (messages per second; also the burst a peer may send at
/// once). The p2p layer sizes each channel's inbound queue for one burst from every peer, so
/// these bound memory too: keep them near what the protocol needs.
pub fn channel_quota(channel: u64) -> commonware_runtime::Quota {
    let per_second = match channel {
        // A few votes and certificates per view, a few views per second, with room for replay.
        CHANNEL_VOTES | CHANNEL_CERTIFICATES => 8192,
        CHANNEL_SIMPLEX_RESOLVER | CHANNEL_BACKFILL => 8192,
        // One message per proposal.
        CHANNEL_BLOCKS => 8192,
        // Gossip batches every few milliseconds.
        _ => 8192,
    };
    commonware_runtime::Quota::per_second(std::num::NonZeroU32::new(per_second).unwrap())
}

/// One epoch for the whole chain: the validator set is fixed by the genesis.
const EPOCH_LENGTH: NonZeroU64 = NonZeroU64::new(1 << 48).unwrap();
const PAGE_SIZE: NonZeroU16 = NonZeroU16::new(4096).unwrap();
const PAGE_CACHE_PAGES: NonZeroUsize = NonZeroUsize::new(1024).unwrap();
const IO_BUFFER: NonZeroUsize = NonZeroUsize::new(1 << 20).unwrap();

/// Timeouts of the consensus protocol.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    /// How long a validator waits for the leader's proposal before voting to skip the view.
    pub leader_timeout: Duration,
    /// How long it waits for the view to certify before voting to skip it (> leader timeout).
    pub certification_timeout: Duration,
    /// How often it repeats a skip vote while stuck in a view. A validator that sees no progress
    /// for `2 × certification_timeout + timeout_retry` votes to skip views early.
    pub timeout_retry: Duration,
    /// How long it waits for a peer to answer a fetch.
    pub fetch_timeout: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            leader_timeout: Duration::from_secs(1),
            certification_timeout: Duration::from_secs(2),
            timeout_retry: Duration::from_millis(500),
            fetch_timeout: Duration::from_secs(2),
        }
    }
}

/// What one validator needs besides its ledger and its network.
#[derive(Clone)]
pub struct EngineConfig {
    /// The node's key: its identity on the network and, for a validator, the key it votes with.
    pub key: ed25519::PrivateKey,
    /// Whether this node votes (a validator) or only follows (a full node: it checks the
    /// validators' certificates and applies the finalised blocks, and votes on nothing).
    pub votes: bool,
    /// Every validator's key (the genesis validator set).
    pub validators: Vec<ed25519::PublicKey>,
    /// Domain separation of votes: derived from the chain id and genesis hash, so votes of one
    /// network are worthless on another.
    pub namespace: Vec<u8>,
    /// Prefix of the engine's storage partitions.
    pub partition_prefix: String,
    pub timing: Timing,
    /// Bound of each actor's mailbox.
    pub mailbox_size: NonZeroUsize,
    /// Keep only this many of the last finalised blocks (and their certificates) in the consensus
    /// archives; `None`: every block. Pruned a section at a time, so up to
    /// [`EngineConfig::archive_section_blocks`] more stay.
    pub keep_blocks: Option<u64>,
    /// Blocks per section of the consensus archives: what pruning removes at once. Fixed for the
    /// life of a data directory ([`ARCHIVE_SECTION_BLOCKS`]; smaller in tests).
    pub archive_section_blocks: NonZeroU64,
    /// A node restored from a snapshot: the finalisation certificate of the block its chain starts
    /// at ([`finalization_at`], encoded). Consensus starts from that block instead of genesis.
    pub floor: Option<Vec<u8>>,
}

/// A finalisation certificate of this network.
pub type FinalizationOf = commonware_consensus::simplex::types::Finalization<
    Scheme,
    commonware_cryptography::blake3::Digest,
>;

/// A snapshot's consensus floor, checked: `Err` when it does not decode as a finalisation
/// certificate of this network's kind (a damaged file: the node must not start from genesis
/// behind peers that pruned); `Ok(None)` when it certifies another block than `head`, the chain's
/// head (the chain has gone on from it, and consensus keeps its own record since); else the floor.
pub fn decode_floor(
    bytes: &[u8],
    head: gridmesh_types::Hash32,
) -> Result<Option<FinalizationOf>, String> {
    use commonware_codec::Decode as _;
    let f = FinalizationOf::decode_cfg(
        bytes.to_vec(),
        &Scheme::certificate_codec_config_unbounded(),
    )
    .map_err(|e| format!("the consensus floor does not decode: {e}"))?;
    Ok((crate::block::hash_of(&f.proposal.payload) == head).then_some(f))
}

/// The encoded finalisation certificate of block `height` in the consensus archive under
/// `prefix` (a stopped node's), or `None` where the archive holds none for it: what a snapshot
/// carries so that a node restored from it starts consensus at that block.
pub async fn finalization_at<E>(
    context: E,
    prefix: &str,
    section: NonZeroU64,
    height: u64,
) -> Option<Vec<u8>>
where
    E: Spawner + Metrics + Clock + Storage,
{
    use commonware_codec::Encode as _;
    use commonware_storage::archive::{Archive as _, Identifier};
    let page_cache = CacheRef::new(PAGE_SIZE, PAGE_CACHE_PAGES);
    let archive: prunable::Archive<_, _, commonware_cryptography::blake3::Digest, FinalizationOf> =
        prunable::Archive::init(
            context.child("snapshot_finalizations"),
            archive_config(
                prefix,
                "finalizations",
                &page_cache,
                section,
                Scheme::certificate_codec_config_unbounded(),
            ),
        )
        .await
        .ok()?;
    let found = archive.get(Identifier::Index(height)).await.ok()??;
    Some(found.encode().to_vec())
}

/// Blocks per section of the consensus archives (about eight minutes at two blocks a second).
pub const ARCHIVE_SECTION_BLOCKS: NonZeroU64 = NonZeroU64::new(1024).unwrap();

/// The consensus namespace of a chain.
pub fn namespace(chain_id: &str, genesis_hash: gridmesh_types::Hash32) -> Vec<u8> {
    format!("gridmesh/{chain_id}/{genesis_hash}").into_bytes()
}

/// The p2p channels a validator uses, each a (sender, receiver) pair.
pub struct Networks<S, R> {
    pub votes: (S, R),
    pub certificates: (S, R),
    pub simplex_resolver: (S, R),
    pub backfill: (S, R),
    pub blocks: (S, R),
    pub txs: (S, R),
}

impl<S, R> Networks<S, R> {
    /// The channels from (sender, receiver) pairs registered in [`CHANNELS`] order.
    pub fn from_pairs(pairs: impl IntoIterator<Item = (S, R)>) -> Self {
        let mut pairs = pairs.into_iter();
        let mut next = || {
            pairs
                .next()
                .expect("one (sender, receiver) pair per channel")
        };
        Networks {
            votes: next(),
            certificates: next(),
            simplex_resolver: next(),
            backfill: next(),
            blocks: next(),
            txs: next(),
        }
    }
}

/// The largest p2p message a validator sends: a whole block (buffered broadcast or backfill),
/// with its finalisation certificate.
pub fn max_message_size(validators: usize) -> u32 {
    let n = validators as u32;
    commonware_p2p::max_message_size(&[
        simplex::max_payload_size::<Scheme, commonware_cryptography::blake3::Digest>(n),
        marshal::max_payload_size::<Standard<BftBlock>, Scheme>(n, &()),
        gossip::MAX_BATCH_BYTES,
    ])
}

/// Starts a validator's consensus stack on `context`. Returns the simplex engine's handle; the
/// other actors are its siblings under `context`.
pub async fn start<E, S, R, P, B>(
    context: E,
    cfg: EngineConfig,
    replica: Arc<Replica>,
    net: Networks<S, R>,
    peers: P,
    blocker: B,
) -> Handle<()>
where
    E: CryptoRng + Spawner + Metrics + Clock + Storage,
    S: Sender<PublicKey = ed25519::PublicKey>,
    R: Receiver<PublicKey = ed25519::PublicKey>,
    P: Provider<PublicKey = ed25519::PublicKey>,
    B: Blocker<PublicKey = ed25519::PublicKey>,
{
    let public_key = commonware_cryptography::Signer::public_key(&cfg.key);
    let participants: Set<ed25519::PublicKey> = cfg
        .validators
        .iter()
        .cloned()
        .try_collect()
        .expect("validator keys are distinct (checked by the genesis)");
    let scheme = if cfg.votes {
        Scheme::signer(&cfg.namespace, participants, cfg.key.clone())
            .expect("this validator is in the validator set")
    } else {
        Scheme::verifier(&cfg.namespace, participants)
    };
    let n = scheme.participants().len();
    let prefix = cfg.partition_prefix.clone();
    let page_cache = CacheRef::new(PAGE_SIZE, PAGE_CACHE_PAGES);

    // Backfill of finalised blocks from peers.
    let resolver = marshal_resolver::init(
        context.child("marshal_resolver"),
        marshal_resolver::Config {
            public_key: public_key.clone(),
            peer_provider: peers.clone(),
            blocker: blocker.clone(),
            mailbox_size: cfg.mailbox_size,
            fetch_timeout: commonware_utils::NonZeroDuration::new(cfg.timing.fetch_timeout)
                .expect("fetch timeout is not zero"),
            fetch_retry_delay: Duration::from_millis(100),
            priority_requests: false,
            priority_responses: false,
        },
        net.backfill,
    );

    // Proposed blocks, broadcast whole to every validator.
    let (broadcast, buffer) = buffered::Engine::new(
        context.child("broadcast"),
        buffered::Config {
            public_key: public_key.clone(),
            mailbox_size: cfg.mailbox_size,
            deque_size: 10,
            priority: false,
            codec_config: (),
            peer_provider: peers.clone(),
            strategy: Sequential,
        },
    );
    broadcast.start(net.blocks);

    // Finalised blocks and their certificates, by height, in sections that pruning removes whole.
    let section = cfg.archive_section_blocks;
    let finalizations = prunable::Archive::init(
        context.child("finalizations_by_height"),
        archive_config(
            &prefix,
            "finalizations",
            &page_cache,
            section,
            Scheme::certificate_codec_config_unbounded(),
        ),
    )
    .await
    .expect("opening the finalisation archive");
    let blocks = prunable::Archive::init(
        context.child("finalized_blocks"),
        archive_config(&prefix, "blocks", &page_cache, section, ()),
    )
    .await
    .expect("opening the block archive");

    let genesis = replica.genesis();
    let genesis_digest = genesis.digest();
    // A node restored from a snapshot starts from the certificate of the block its chain holds.
    // Once the chain has gone on from it, consensus has its own record and the floor is done.
    let floor: Option<FinalizationOf> = cfg.floor.as_ref().and_then(|bytes| {
        let head = replica.chain().read().expect("chain lock").head_hash();
        decode_floor(bytes, head).expect("the consensus floor is checked before the node starts")
    });
    let provider = ConstantProvider::new(scheme.clone());
    let (marshal_actor, marshal_mailbox, _floor) =
        MarshalActor::<_, Standard<BftBlock>, _, _, _, _, _>::init(
            context.child("marshal"),
            finalizations,
            blocks,
            marshal::Config {
                provider,
                epocher: FixedEpocher::new(EPOCH_LENGTH),
                start: match &floor {
                    Some(f) => Start::Floor(f.clone()),
                    None => Start::Genesis(crate::block::digested(genesis)),
                },
                partition_prefix: prefix.clone(),
                mailbox_size: cfg.mailbox_size,
                view_retention: ViewDelta::new(10),
                prunable_items_per_section: NonZeroU64::new(10).unwrap(),
                page_cache: page_cache.clone(),
                replay_buffer: IO_BUFFER,
                key_write_buffer: IO_BUFFER,
                value_write_buffer: IO_BUFFER,
                block_codec_config: (),
                max_repair: NonZeroUsize::new(16).unwrap(),
                max_pending_acks: NonZeroUsize::new(16).unwrap(),
                strategy: Sequential,
            },
        )
        .await;
    // Beyond the window, marshal prunes its archives at each section's end (never above what it
    // has processed).
    let prune: Option<crate::app::Prune> = cfg.keep_blocks.map(|keep| {
        let mailbox = marshal_mailbox.clone();
        Box::new(move |height: u64| {
            if height % section.get() == 0 && height > keep {
                mailbox.prune(commonware_consensus::types::Height::new(height - keep));
            }
        }) as crate::app::Prune
    });
    let finalizer = Finalizer::start(context.child("finalizer"), replica.clone(), prune);
    marshal_actor.start(finalizer, buffer, resolver);

    gossip::start(context.child("gossip"), replica.clone(), net.txs);

    let inline = Inline::new(
        context.child("inline"),
        LedgerApplication::new(replica),
        marshal_mailbox,
        FixedEpocher::new(EPOCH_LENGTH),
    );
    let engine = simplex::Engine::new(
        context.child("simplex"),
        simplex::Config {
            scheme,
            elector: RoundRobin::<Sha256>::default(),
            blocker,
            automaton: inline.clone(),
            relay: inline.clone(),
            reporter: inline,
            strategy: Sequential,
            partition: format!("{prefix}-simplex"),
            mailbox_size: cfg.mailbox_size,
            epoch: Epoch::zero(),
            floor: match floor {
                Some(f) => simplex::config::Floor::Finalized(f),
                None => simplex::config::Floor::Genesis(genesis_digest),
            },
            replay_buffer: IO_BUFFER,
            write_buffer: IO_BUFFER,
            page_cache,
            leader_timeout: cfg.timing.leader_timeout,
            certification_timeout: cfg.timing.certification_timeout,
            timeout_retry: cfg.timing.timeout_retry,
            view_retention: ViewDelta::new(10),
            skip: SkipPolicy::Enabled {
                timeout: cfg.timing.certification_timeout * 2 + cfg.timing.timeout_retry,
                budget: SkipBudget::Participants,
            },
            fetch_timeout: commonware_utils::NonZeroDuration::new(cfg.timing.fetch_timeout)
                .expect("fetch timeout is not zero"),
            fetch_retry_delay: Duration::from_millis(500),
            forward: ForwardPolicy::Disabled,
            track_historical_votes: false,
        },
    );
    tracing::info!(
        validators = n,
        %public_key,
        role = if cfg.votes { "validator" } else { "full node" },
        "starting BFT consensus"
    );
    engine.start(net.votes, net.certificates, net.simplex_resolver)
}

fn archive_config<C>(
    prefix: &str,
    name: &str,
    page_cache: &CacheRef,
    items_per_section: NonZeroU64,
    codec: C,
) -> prunable::Config<EightCap, C> {
    // Partitions of their own: the archives of versions before pruning were immutable ones.
    prunable::Config {
        translator: EightCap,
        metadata_partition: format!("{prefix}-{name}-sections-metadata"),
        key_partition: format!("{prefix}-{name}-sections-key"),
        key_page_cache: page_cache.clone(),
        value_partition: format!("{prefix}-{name}-sections-value"),
        compression: None,
        codec_config: codec,
        items_per_section,
        key_write_buffer: IO_BUFFER,
        value_write_buffer: IO_BUFFER,
        replay_buffer: IO_BUFFER,
    }
}
