//! A chain's state at its head as one file: to back a node up, move it to another machine or
//! start another node without the chain's history.
//!
//! The file is `GMSNAP01`, then the Borsh encoding of the chain id, the genesis block, the head's
//! header and the whole state (accounts and the key/value space), then the BLAKE3 hash of that
//! encoding. It is written from a stopped node's data directory ([`write`]) and checked whole
//! before a node is made from it ([`restore`]): the hash, the genesis block's own hash, and the
//! state's root against the head header's. A restored node holds genesis and the head's header;
//! the blocks in between are pruned as far as it can tell anyone ([`crate::store::Store::kept_from`]
//! is the next height), and it goes on from the head.

use std::io::Write as _;
use std::path::Path;

use borsh::{BorshDeserialize, BorshSerialize};
use gridmesh_types::{Address, Hash32};

use crate::block::{Block, BlockHeader};
use crate::state::{Account, State};
use crate::store::{Store, StoreError};

/// The first bytes of a snapshot file (and its format's version).
pub const MAGIC: &[u8; 8] = b"GMSNAP01";

#[derive(BorshSerialize, BorshDeserialize)]
struct Body {
    chain_id: String,
    genesis: Block,
    head: BlockHeader,
    accounts: Vec<(Address, Account)>,
    kv: Vec<(Vec<u8>, Vec<u8>)>,
    /// A BFT node's: the head block's finalisation certificate, as the consensus engine encodes
    /// it (opaque here), from which a restored node starts consensus.
    consensus_floor: Option<Vec<u8>>,
}

/// Where a restored BFT node finds its consensus floor (the engine reads it at start).
pub const CONSENSUS_FLOOR_FILE: &str = "consensus-floor.bin";

/// The consensus floor a restore left in the data directory `dir`, if any.
pub fn consensus_floor(dir: &Path) -> Result<Option<Vec<u8>>, SnapshotError> {
    let path = dir.join(CONSENSUS_FLOOR_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(&path)(e)),
    }
}

/// What a snapshot holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Summary {
    pub chain_id: String,
    pub genesis_hash: Hash32,
    pub height: u64,
    pub state_root: Hash32,
    pub accounts: usize,
    pub kv_entries: usize,
    /// Whether it carries a BFT node's consensus floor.
    pub consensus_floor: bool,
    /// Size of the file.
    pub bytes: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0} holds no chain (no chain.redb with a head)")]
    NoChain(String),
    #[error("cannot open the chain in {dir} ({source}); is a node running on it? Stop it first")]
    InUse {
        dir: String,
        #[source]
        source: StoreError,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0} is not a gridmesh snapshot (it does not start with {MAGIC:?})")]
    NotASnapshot(String),
    #[error("{0} is damaged: its content does not match its hash")]
    Damaged(String),
    #[error(
        "the state in {what} hashes to {computed}, not to the state root of its head block {height} \
         ({expected})"
    )]
    StateMismatch {
        what: String,
        height: u64,
        expected: Hash32,
        computed: Hash32,
    },
    #[error("{0} already holds a chain: restore into a new, empty directory")]
    HoldsAChain(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SnapshotError + '_ {
    move |source| SnapshotError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// The state's root must be the head's: what a snapshot holds is what the chain agreed on.
fn check_state(
    accounts: &[(Address, Account)],
    kv: &[(Vec<u8>, Vec<u8>)],
    head: &BlockHeader,
    what: &Path,
) -> Result<State, SnapshotError> {
    let state = State::from_parts(
        accounts.iter().copied(),
        crate::kv::KvSpace::from_entries(kv.iter().cloned()),
    );
    if state.root() != head.state_root {
        return Err(SnapshotError::StateMismatch {
            what: what.display().to_string(),
            height: head.height,
            expected: head.state_root,
            computed: state.root(),
        });
    }
    Ok(state)
}

/// The store of the (stopped) node's data directory `dir` and what it says of its chain.
fn open_chain(dir: &Path) -> Result<(Store, crate::store::StoredMeta), SnapshotError> {
    let no_chain = || SnapshotError::NoChain(dir.display().to_string());
    if !dir.join("chain.redb").exists() {
        return Err(no_chain());
    }
    let store = Store::open(dir).map_err(|source| SnapshotError::InUse {
        dir: dir.display().to_string(),
        source,
    })?;
    let meta = store.meta()?.ok_or_else(no_chain)?;
    Ok((store, meta))
}

/// The head height of the chain in the (stopped) node's data directory `dir`.
pub fn head_height(dir: &Path) -> Result<u64, SnapshotError> {
    Ok(open_chain(dir)?.1.head_height)
}

/// Writes the chain of the (stopped) node's data directory `dir` at its head to `out`, by way
/// of a temporary file renamed into place; a BFT node's with the head's finalisation certificate
/// (`consensus_floor`, read from its consensus archive by the caller).
pub fn write(
    dir: &Path,
    out: &Path,
    consensus_floor: Option<Vec<u8>>,
) -> Result<Summary, SnapshotError> {
    let (store, meta) = open_chain(dir)?;
    let missing = |what: &str| StoreError::Corrupt(format!("{what} is missing"));
    let genesis = store
        .block(0)?
        .ok_or_else(|| missing("the genesis block"))?;
    let head = store
        .header(meta.head_height)?
        .ok_or_else(|| missing("the head block's header"))?;
    let accounts = store.load_accounts()?;
    let kv: Vec<(Vec<u8>, Vec<u8>)> = store
        .load_kv()?
        .buckets()
        .flat_map(|(_, entries)| entries.iter().map(|e| (**e).clone()))
        .collect();
    check_state(&accounts, &kv, &head, &dir.join("chain.redb"))?;
    let body = Body {
        chain_id: meta.chain_id,
        genesis,
        head,
        accounts,
        kv,
        consensus_floor,
    };
    let bytes = borsh::to_vec(&body).expect("encoding to a Vec cannot fail");
    let tmp = out.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp).map_err(io(&tmp))?;
    f.write_all(MAGIC)
        .and_then(|()| f.write_all(&bytes))
        .and_then(|()| f.write_all(blake3::hash(&bytes).as_bytes()))
        .and_then(|()| f.sync_all())
        .map_err(io(&tmp))?;
    std::fs::rename(&tmp, out).map_err(io(out))?;
    Ok(summary(&body, (MAGIC.len() + bytes.len() + 32) as u64))
}

fn summary(body: &Body, bytes: u64) -> Summary {
    Summary {
        chain_id: body.chain_id.clone(),
        genesis_hash: body.genesis.hash(),
        height: body.head.height,
        state_root: body.head.state_root,
        accounts: body.accounts.len(),
        kv_entries: body.kv.len(),
        consensus_floor: body.consensus_floor.is_some(),
        bytes,
    }
}

/// Reads and checks a snapshot file: its magic, its hash, its state against its head.
fn read(path: &Path) -> Result<(Body, State, u64), SnapshotError> {
    let data = std::fs::read(path).map_err(io(path))?;
    let name = || path.display().to_string();
    let Some(rest) = data.strip_prefix(MAGIC.as_slice()) else {
        return Err(SnapshotError::NotASnapshot(name()));
    };
    if rest.len() < 32 {
        return Err(SnapshotError::Damaged(name()));
    }
    let (bytes, hash) = rest.split_at(rest.len() - 32);
    if blake3::hash(bytes).as_bytes() != hash {
        return Err(SnapshotError::Damaged(name()));
    }
    let body = Body::try_from_slice(bytes).map_err(|_| SnapshotError::Damaged(name()))?;
    let state = check_state(&body.accounts, &body.kv, &body.head, path)?;
    Ok((body, state, data.len() as u64))
}

/// What the snapshot file at `path` holds, checked whole.
pub fn inspect(path: &Path) -> Result<Summary, SnapshotError> {
    let (body, _, bytes) = read(path)?;
    Ok(summary(&body, bytes))
}

/// Makes the data directory `dir` (new, or without a chain) hold the snapshot's chain at its head.
/// The node started on it checks the genesis against its own, as on every start.
pub fn restore(path: &Path, dir: &Path) -> Result<Summary, SnapshotError> {
    let (body, state, bytes) = read(path)?;
    let name = || dir.display().to_string();
    if dir.join(crate::chain::CHAIN_MARKER).exists() {
        return Err(SnapshotError::HoldsAChain(name()));
    }
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let store = Store::open(dir).map_err(|source| SnapshotError::InUse {
        dir: name(),
        source,
    })?;
    if store.meta()?.is_some() {
        return Err(SnapshotError::HoldsAChain(name()));
    }
    store.restore(&body.chain_id, &body.genesis, &body.head, &state)?;
    if let Some(floor) = &body.consensus_floor {
        let path = dir.join(CONSENSUS_FLOOR_FILE);
        std::fs::write(&path, floor).map_err(io(&path))?;
    }
    Ok(summary(&body, bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::Chain;
    use crate::crypto::Keypair;
    use crate::genesis::Genesis;
    use crate::tx::SignedTx;
    use gridmesh_types::Amount;

    fn commit_transfers(chain: &mut Chain, faucet: &Keypair, to: Address, blocks: u64) {
        for _ in 0..blocks {
            let nonce = chain.account(&faucet.address()).nonce;
            let tx = SignedTx::transfer(faucet, chain.chain_id(), nonce, to, Amount(1_000))
                .verify()
                .unwrap();
            let at = chain.head().timestamp_ms + 1_000;
            let built = chain.build_block([tx], at, faucet.address());
            chain.commit(&built.block, built.executed).unwrap();
        }
    }

    /// A snapshot of a chain at block 5 makes a node at block 5 with the same state, which goes
    /// on to the same block 6 as the original; a damaged file, a directory with a chain, a
    /// directory without one are each refused by name.
    #[test]
    fn a_restored_chain_goes_on_like_the_original_and_bad_input_is_refused() {
        let faucet = Keypair::from_seed([7; 32]);
        let genesis = Genesis::dev(faucet.address());
        let alice = Keypair::from_seed([8; 32]).address();
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let mut chain = Chain::open(a.path(), &genesis).unwrap();
        commit_transfers(&mut chain, &faucet, alice, 5);
        drop(chain);
        let file = b.path().join("chain.snapshot");
        let written = write(a.path(), &file, None).unwrap();
        assert_eq!(written.height, 5);
        assert_eq!(written.bytes, std::fs::metadata(&file).unwrap().len());
        assert_eq!(inspect(&file).unwrap(), written);

        let restored_dir = b.path().join("node");
        let restored = restore(&file, &restored_dir).unwrap();
        assert_eq!(restored, written);
        let mut copy = Chain::open(&restored_dir, &genesis).unwrap();
        let mut chain = Chain::open(a.path(), &genesis).unwrap();
        assert_eq!(copy.head_hash(), chain.head_hash());
        assert_eq!(copy.state().root(), chain.state().root());
        assert_eq!(copy.account(&alice).balance, Amount(5_000));
        assert_eq!(copy.store().kept_from().unwrap(), 6);
        assert!(copy.store().block(3).unwrap().is_none());
        commit_transfers(&mut chain, &faucet, alice, 1);
        commit_transfers(&mut copy, &faucet, alice, 1);
        assert_eq!(
            copy.head_hash(),
            chain.head_hash(),
            "block 6 is the same block"
        );
        drop(copy);
        assert!(Chain::open(&restored_dir, &genesis).is_ok(), "it reopens");

        assert!(matches!(
            restore(&file, &restored_dir),
            Err(SnapshotError::HoldsAChain(_))
        ));
        let mut bytes = std::fs::read(&file).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 1;
        let damaged = b.path().join("damaged.snapshot");
        std::fs::write(&damaged, &bytes).unwrap();
        assert!(matches!(
            restore(&damaged, &b.path().join("other")),
            Err(SnapshotError::Damaged(_))
        ));
        assert!(!b.path().join("other").join("chain.redb").exists());
        std::fs::write(&damaged, b"not a snapshot").unwrap();
        assert!(matches!(
            inspect(&damaged),
            Err(SnapshotError::NotASnapshot(_))
        ));
        let empty = tempfile::tempdir().unwrap();
        assert!(matches!(
            write(empty.path(), &b.path().join("x"), None),
            Err(SnapshotError::NoChain(_))
        ));
    }
}
