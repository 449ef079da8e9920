//! Durable storage in redb: blocks, receipts, the transaction index and the account state.
//!
//! Each block is committed in one redb write transaction together with its receipts, the state
//! changes it makes and the new head height, so after a crash the database holds either all of a
//! block or none of it. redb's commit is durable (fsync) before [`Store::commit_block`] returns.
//!
//! Files in the data directory: `chain.redb` (blocks, receipts, state) and `tx_index.redb`.
//!
//! A node may keep only the last blocks ([`Retention`]): each commit then also deletes, in the same
//! transaction, the oldest blocks (header, transactions, receipts) that fell out of the window, at
//! most [`PRUNE_BLOCKS_PER_COMMIT`] at a time, never one the index has not reached. The genesis
//! block and the state are always kept (the state holds what the market and settlement still
//! need; the ledger prunes its own old slots). Index segments whose every entry is older than the
//! window are dropped whole. redb reuses the freed pages, so the files stop growing once the window
//! is full.
//!
//! The transaction index (hash -> height, position) is derived data. It is written by
//! [`Store::index_block`] right after the block commits, into a database file of its own: random
//! hash keys make its inserts touch pages all over its B-tree, and neither the time nor the page
//! churn of that should delay or slow down the next block's commit. The index records how far it got
//! (`indexed_height`); it can lag behind the chain after a crash (never run ahead, as it is written
//! after the block is durable), and [`crate::Chain::open`] then indexes the missing blocks again.
//! It also records the genesis of the chain it indexes: an index that cannot be opened, belongs to
//! another chain or runs ahead of this one (a `chain.redb` replaced under it) is removed and built
//! again from the chain's blocks, so that a lookup never answers with another chain's transaction.

use std::path::Path;
use std::sync::Arc;

use gridmesh_types::{Address, Hash32};
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};

use crate::block::{Block, BlockHeader, Receipt};
use crate::state::Account;
use crate::state::Event;
use crate::tx::SignedTx;

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
/// height -> Borsh-encoded [`BlockHeader`].
const HEADERS: TableDefinition<u64, &[u8]> = TableDefinition::new("headers");
/// (height, chunk) -> Borsh `Vec<SignedTx>` of the block's transactions `chunk * CHUNK ..`.
/// Chunks keep writes to a few hundred appends per block (one value per transaction costs three
/// times as much; one value per block makes reading one transaction decode the whole block).
const TXS: TableDefinition<(u64, u32), &[u8]> = TableDefinition::new("txs");
/// (height, chunk) -> Borsh `Vec<Vec<Event>>`: the receipts' events of the same transactions.
const RECEIPTS: TableDefinition<(u64, u32), &[u8]> = TableDefinition::new("receipts");
/// Transactions per stored chunk.
const CHUNK: usize = 256;
/// Most entries in one transaction-index segment. Random hash keys make every insert touch a random
/// B-tree leaf, so an index that only grows would make each block rewrite more pages than the last.
/// The index is therefore a sequence of segments `tx_index_000000, tx_index_000001, …`: new entries go
/// to the newest, which is closed when full. A block's indexing cost is bounded by the segment
/// size; a lookup probes the segments newest first (O(segments × log segment)).
pub const INDEX_SEGMENT_ENTRIES: u64 = 1 << 18;

fn index_segment_name(segment: u32) -> String {
    format!("tx_index_{segment:06}")
}

fn index_segment(name: &str) -> TableDefinition<'_, [u8; 32], (u64, u32)> {
    TableDefinition::new(name)
}
/// commitment bucket -> Borsh `Vec<(Address, Account)>`, sorted: the state is written a bucket at a
/// time, a few hundred sequential values per block instead of one random insert per account.
const ACCOUNTS: TableDefinition<u16, &[u8]> = TableDefinition::new("account_buckets");
/// Key/value bucket number -> Borsh `Vec<(key, value)>` (market, devices, readings).
const KV: TableDefinition<u16, &[u8]> = TableDefinition::new("kv_buckets");

const META_HEAD: &str = "head_height";
const META_CHAIN_ID: &str = "chain_id";
const META_GENESIS: &str = "genesis_hash";
const META_INDEXED: &str = "indexed_height";
const META_SEGMENT: &str = "index_segment";
/// Blocks `1..kept_from` were pruned (absent: none).
const META_KEPT_FROM: &str = "kept_from";
/// The oldest index segment still held (those before it were dropped).
const META_OLDEST_SEGMENT: &str = "oldest_index_segment";

/// The highest block height indexed into segment `segment` (meta key of the index).
fn segment_top_key(segment: u32) -> String {
    format!("segment_top_{segment:06}")
}

/// Most old blocks one commit deletes: a node that starts pruning a long chain catches up over
/// its next blocks instead of stalling one commit.
pub const PRUNE_BLOCKS_PER_COMMIT: u64 = 64;

/// How many blocks a node keeps.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Retention {
    /// Every block since genesis (an archive node).
    #[default]
    All,
    /// The last this many blocks (and genesis).
    Last(u64),
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage: {0}")]
    Redb(Box<redb::Error>),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

fn db_err<E: Into<redb::Error>>(e: E) -> StoreError {
    StoreError::Redb(Box::new(e.into()))
}

/// A little-endian number from a `meta` table (0 when absent).
fn meta_number<const N: usize>(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    key: &str,
) -> Result<[u8; N], StoreError> {
    match table.get(key).map_err(db_err)? {
        None => Ok([0; N]),
        Some(v) => v
            .value()
            .try_into()
            .map_err(|_| StoreError::Corrupt(format!("meta {key}"))),
    }
}

fn meta_u64(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    key: &str,
) -> Result<u64, StoreError> {
    meta_number(table, key).map(u64::from_le_bytes)
}

fn meta_u32(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    key: &str,
) -> Result<u32, StoreError> {
    meta_number(table, key).map(u32::from_le_bytes)
}

fn decode<T: borsh::BorshDeserialize>(bytes: &[u8], height: u64) -> Result<T, StoreError> {
    borsh::from_slice(bytes).map_err(|e| StoreError::Corrupt(format!("block {height}: {e}")))
}

/// Records, in `w`, which chain the database holds: its id and its genesis block's hash.
fn write_identity(
    w: &redb::WriteTransaction,
    chain_id: &str,
    genesis: &Block,
) -> Result<(), StoreError> {
    let mut meta = w.open_table(META).map_err(db_err)?;
    meta.insert(META_CHAIN_ID, chain_id.as_bytes())
        .map_err(db_err)?;
    meta.insert(META_GENESIS, genesis.hash().0.as_slice())
        .map_err(db_err)?;
    Ok(())
}

/// A handle to the database; cheap to clone, safe to read from several threads while one writes.
#[derive(Clone)]
pub struct Store {
    db: Arc<Database>,
    index: Arc<Database>,
    /// [`INDEX_SEGMENT_ENTRIES`], smaller in tests.
    segment_entries: u64,
}

/// Where a committed transaction is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TxLocation {
    pub height: u64,
    pub index: u32,
}

/// What the store says about its chain when opened.
pub struct StoredMeta {
    pub head_height: u64,
    pub chain_id: String,
    pub genesis_hash: Hash32,
}

impl Store {
    /// Opens (or creates) the database files in `dir`; redb repairs them after an unclean shutdown.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        let db = Database::create(dir.join("chain.redb")).map_err(db_err)?;
        let w = db.begin_write().map_err(db_err)?;
        w.open_table(META).map_err(db_err)?;
        w.open_table(HEADERS).map_err(db_err)?;
        w.open_table(TXS).map_err(db_err)?;
        w.open_table(RECEIPTS).map_err(db_err)?;
        w.open_table(ACCOUNTS).map_err(db_err)?;
        w.open_table(KV).map_err(db_err)?;
        w.commit().map_err(db_err)?;
        let store = Store {
            db: Arc::new(db),
            index: Arc::new(Self::create_index(dir)?),
            segment_entries: INDEX_SEGMENT_ENTRIES,
        };
        let chain = store.meta()?.map(|m| (m.genesis_hash, m.head_height));
        let Some(why) = store.index_unusable(chain) else {
            return Ok(store);
        };
        tracing::warn!("tx_index.redb {why}: building it again from the chain");
        let Store {
            db,
            index,
            segment_entries,
        } = store;
        drop(index); // the only handle: the file is closed
        let path = dir.join("tx_index.redb");
        std::fs::remove_file(&path)
            .map_err(|e| StoreError::Corrupt(format!("removing {}: {e}", path.display())))?;
        Ok(Store {
            db,
            index: Arc::new(Self::create_index(dir)?),
            segment_entries,
        })
    }

    /// Opens (or creates) the transaction index with its tables; one that cannot be opened is
    /// removed and created afresh (it holds nothing the chain does not).
    fn create_index(dir: &Path) -> Result<Database, StoreError> {
        let path = dir.join("tx_index.redb");
        let open = || -> Result<Database, StoreError> {
            let index = Database::create(&path).map_err(db_err)?;
            let w = index.begin_write().map_err(db_err)?;
            w.open_table(META).map_err(db_err)?;
            w.open_table(index_segment(&index_segment_name(0)))
                .map_err(db_err)?;
            w.commit().map_err(db_err)?;
            Ok(index)
        };
        match open() {
            Ok(index) => Ok(index),
            Err(e) if path.exists() => {
                tracing::warn!(
                    "tx_index.redb cannot be opened ({e}): building it again from the chain"
                );
                std::fs::remove_file(&path).map_err(|e| {
                    StoreError::Corrupt(format!("removing {}: {e}", path.display()))
                })?;
                open()
            }
            Err(e) => Err(e),
        }
    }

    /// Why the index cannot serve `chain` (its genesis and head height; `None`: no chain yet),
    /// if it cannot: it indexes another chain, or blocks beyond the head.
    fn index_unusable(&self, chain: Option<(Hash32, u64)>) -> Option<String> {
        let read = || -> Result<(Option<Vec<u8>>, u64), StoreError> {
            let r = self.index.begin_read().map_err(db_err)?;
            let meta = r.open_table(META).map_err(db_err)?;
            let genesis = meta
                .get(META_GENESIS)
                .map_err(db_err)?
                .map(|v| v.value().to_vec());
            Ok((genesis, meta_u64(&meta, META_INDEXED)?))
        };
        let (genesis, indexed) = match read() {
            Ok(v) => v,
            Err(e) => return Some(format!("cannot be read ({e})")),
        };
        let head = chain.map_or(0, |c| c.1);
        match (chain, genesis) {
            (Some((g, _)), Some(other)) if other != g.0 => {
                Some("indexes another chain (its genesis differs)".into())
            }
            (None, Some(_)) => Some("indexes a chain this directory no longer holds".into()),
            _ if indexed > head => Some(format!(
                "runs to height {indexed}, beyond the chain's head {head}"
            )),
            _ => None,
        }
    }

    /// Records that the index serves the chain of genesis `genesis` (done once).
    pub fn claim_index(&self, genesis: Hash32) -> Result<(), StoreError> {
        let w = self.index.begin_write().map_err(db_err)?;
        {
            let mut meta = w.open_table(META).map_err(db_err)?;
            if meta.get(META_GENESIS).map_err(db_err)?.is_none() {
                meta.insert(META_GENESIS, genesis.0.as_slice())
                    .map_err(db_err)?;
            }
        }
        w.commit().map_err(db_err)
    }

    /// The stored chain, or `None` for a fresh database.
    pub fn meta(&self) -> Result<Option<StoredMeta>, StoreError> {
        let r = self.db.begin_read().map_err(db_err)?;
        let t = r.open_table(META).map_err(db_err)?;
        let get = |k: &str| -> Result<Option<Vec<u8>>, StoreError> {
            Ok(t.get(k).map_err(db_err)?.map(|v| v.value().to_vec()))
        };
        if get(META_HEAD)?.is_none() {
            return Ok(None);
        }
        let head_height = meta_u64(&t, META_HEAD)?;
        let chain_id = String::from_utf8(get(META_CHAIN_ID)?.unwrap_or_default())
            .map_err(|_| StoreError::Corrupt("chain id".into()))?;
        let genesis_hash = Hash32(
            get(META_GENESIS)?
                .unwrap_or_default()
                .try_into()
                .map_err(|_| StoreError::Corrupt("genesis hash".into()))?,
        );
        Ok(Some(StoredMeta {
            head_height,
            chain_id,
            genesis_hash,
        }))
    }

    /// Writes the genesis block and state into a fresh database, atomically.
    pub fn init_genesis(
        &self,
        chain_id: &str,
        block: &Block,
        state: &crate::state::State,
    ) -> Result<(), StoreError> {
        let w = self.db.begin_write().map_err(db_err)?;
        write_identity(&w, chain_id, block)?;
        self.write_block(&w, block, &[], state.buckets(), state.kv().buckets())?;
        w.commit().map_err(db_err)
    }

    /// Writes a chain restored from a snapshot into a fresh database, atomically: genesis, the
    /// head's header (its transactions are not in a snapshot) and the whole state; blocks up to
    /// the head count as pruned ([`crate::snapshot`]).
    pub fn restore(
        &self,
        chain_id: &str,
        genesis: &Block,
        head: &BlockHeader,
        state: &crate::state::State,
    ) -> Result<(), StoreError> {
        let w = self.db.begin_write().map_err(db_err)?;
        write_identity(&w, chain_id, genesis)?;
        if head.height == 0 {
            self.write_block(&w, genesis, &[], state.buckets(), state.kv().buckets())?;
        } else {
            let empty = crate::state::State::default();
            self.write_block(&w, genesis, &[], empty.buckets(), empty.kv().buckets())?;
            let head = Block {
                header: head.clone(),
                txs: Vec::new(),
            };
            self.write_block(&w, &head, &[], state.buckets(), state.kv().buckets())?;
            w.open_table(META)
                .map_err(db_err)?
                .insert(
                    META_KEPT_FROM,
                    (head.header.height + 1).to_le_bytes().as_slice(),
                )
                .map_err(db_err)?;
        }
        w.commit().map_err(db_err)
    }

    /// Commits a block, its receipts and the account buckets it changed in one durable transaction.
    /// With [`Retention::Last`], the blocks that fell out of the window go in the same transaction.
    pub fn commit_block(
        &self,
        block: &Block,
        receipts: &[Receipt],
        diff: &crate::state::StateDiff,
        retention: Retention,
    ) -> Result<(), StoreError> {
        let started = std::time::Instant::now();
        let w = self.db.begin_write().map_err(db_err)?;
        self.write_block(
            &w,
            block,
            receipts,
            diff.buckets.iter().map(|(b, e, _)| (*b, e.as_slice())),
            diff.kv.iter().map(|(b, e, _)| (*b, e.as_slice())),
        )?;
        if let Retention::Last(keep) = retention {
            self.prune(&w, block.header.height, keep)?;
        }
        let written = std::time::Instant::now();
        w.commit().map_err(db_err)?;
        tracing::debug!(
            height = block.header.height,
            write_ms = (written - started).as_millis() as u64,
            sync_ms = written.elapsed().as_millis() as u64,
            "block stored"
        );
        Ok(())
    }

    /// Deletes the oldest blocks beyond the last `keep` at head `height`, in `w`: at most
    /// [`PRUNE_BLOCKS_PER_COMMIT`], never genesis, never one the index has not reached (the
    /// index is built from the blocks after a crash).
    fn prune(&self, w: &redb::WriteTransaction, height: u64, keep: u64) -> Result<(), StoreError> {
        let mut meta = w.open_table(META).map_err(db_err)?;
        let from = meta_u64(&meta, META_KEPT_FROM)?.max(1);
        let indexed = self.indexed_height()?;
        let to = (height.saturating_add(1).saturating_sub(keep.max(1)))
            .min(indexed.saturating_add(1))
            .min(from.saturating_add(PRUNE_BLOCKS_PER_COMMIT));
        if to <= from {
            return Ok(());
        }
        let mut headers = w.open_table(HEADERS).map_err(db_err)?;
        let mut txs = w.open_table(TXS).map_err(db_err)?;
        let mut rcpts = w.open_table(RECEIPTS).map_err(db_err)?;
        for h in from..to {
            headers.remove(h).map_err(db_err)?;
        }
        txs.retain_in((from, 0)..(to, 0), |_, _| false)
            .map_err(db_err)?;
        rcpts
            .retain_in((from, 0)..(to, 0), |_, _| false)
            .map_err(db_err)?;
        meta.insert(META_KEPT_FROM, to.to_le_bytes().as_slice())
            .map_err(db_err)?;
        Ok(())
    }

    /// The oldest block this store still holds after genesis: blocks `1..kept_from` were pruned
    /// (1 when none were).
    pub fn kept_from(&self) -> Result<u64, StoreError> {
        let r = self.db.begin_read().map_err(db_err)?;
        Ok(meta_u64(&r.open_table(META).map_err(db_err)?, META_KEPT_FROM)?.max(1))
    }

    fn write_block<'a>(
        &self,
        w: &redb::WriteTransaction,
        block: &Block,
        receipts: &[Receipt],
        changed: impl IntoIterator<Item = (usize, &'a [(Address, Account)])>,
        kv_changed: impl IntoIterator<Item = (usize, &'a [crate::kv::KvEntry])>,
    ) -> Result<(), StoreError> {
        let height = block.header.height;
        debug_assert_eq!(block.txs.len(), receipts.len());
        let header = borsh::to_vec(&block.header).expect("encoding to a Vec cannot fail");
        w.open_table(HEADERS)
            .map_err(db_err)?
            .insert(height, header.as_slice())
            .map_err(db_err)?;
        {
            let mut txs = w.open_table(TXS).map_err(db_err)?;
            let mut rcpts = w.open_table(RECEIPTS).map_err(db_err)?;
            let mut buf = Vec::with_capacity(CHUNK * 200);
            for (chunk, (t, r)) in block
                .txs
                .chunks(CHUNK)
                .zip(receipts.chunks(CHUNK))
                .enumerate()
            {
                let key = (height, chunk as u32);
                buf.clear();
                borsh::to_writer(&mut buf, t).expect("encoding to a Vec cannot fail");
                txs.insert(key, buf.as_slice()).map_err(db_err)?;
                buf.clear();
                let events: Vec<&Vec<crate::state::Event>> = r.iter().map(|r| &r.events).collect();
                borsh::to_writer(&mut buf, &events).expect("encoding to a Vec cannot fail");
                rcpts.insert(key, buf.as_slice()).map_err(db_err)?;
            }
        }
        {
            let mut acc = w.open_table(ACCOUNTS).map_err(db_err)?;
            let mut buf = Vec::new();
            for (bucket, entries) in changed {
                let key = u16::try_from(bucket).expect("bucket numbers fit in 16 bits");
                if entries.is_empty() {
                    acc.remove(key).map_err(db_err)?;
                } else {
                    buf.clear();
                    borsh::to_writer(&mut buf, &entries).expect("encoding to a Vec cannot fail");
                    acc.insert(key, buf.as_slice()).map_err(db_err)?;
                }
            }
            let mut kv = w.open_table(KV).map_err(db_err)?;
            for (bucket, entries) in kv_changed {
                let key = u16::try_from(bucket).expect("bucket numbers fit in 16 bits");
                if entries.is_empty() {
                    kv.remove(key).map_err(db_err)?;
                } else {
                    // Encoded as the `Vec<(Vec<u8>, Vec<u8>)>` that `load_kv` reads.
                    buf.clear();
                    let len =
                        u32::try_from(entries.len()).expect("a bucket holds under 2^32 entries");
                    buf.extend_from_slice(&len.to_le_bytes());
                    for e in entries {
                        borsh::to_writer(&mut buf, &**e).expect("encoding to a Vec cannot fail");
                    }
                    kv.insert(key, buf.as_slice()).map_err(db_err)?;
                }
            }
        }
        w.open_table(META)
            .map_err(db_err)?
            .insert(META_HEAD, height.to_le_bytes().as_slice())
            .map_err(db_err)?;
        Ok(())
    }

    /// Records where each of a committed block's transactions is, and that blocks up to `height`
    /// are indexed, in one durable transaction. Idempotent.
    pub fn index_block(&self, height: u64, tx_hashes: &[Hash32]) -> Result<(), StoreError> {
        let w = self.index.begin_write().map_err(db_err)?;
        {
            let mut meta = w.open_table(META).map_err(db_err)?;
            if meta_u64(&meta, META_INDEXED)? >= height {
                return Ok(()); // already indexed: nothing to do
            }
            let mut segment = meta_u32(&meta, META_SEGMENT)?;
            let mut name = index_segment_name(segment);
            let full = {
                let idx = w.open_table(index_segment(&name)).map_err(db_err)?;
                let len = idx.len().map_err(db_err)?;
                len > 0 && len + tx_hashes.len() as u64 > self.segment_entries
            };
            if full {
                segment += 1;
                name = index_segment_name(segment);
                meta.insert(META_SEGMENT, segment.to_le_bytes().as_slice())
                    .map_err(db_err)?;
            }
            let mut idx = w.open_table(index_segment(&name)).map_err(db_err)?;
            // Inserting in key order keeps B-tree page accesses local.
            let mut keys: Vec<(&Hash32, u32)> = tx_hashes.iter().zip(0u32..).collect();
            keys.sort_unstable();
            for (hash, index) in keys {
                idx.insert(hash.0, (height, index)).map_err(db_err)?;
            }
            drop(idx);
            meta.insert(META_INDEXED, height.to_le_bytes().as_slice())
                .map_err(db_err)?;
            meta.insert(
                segment_top_key(segment).as_str(),
                height.to_le_bytes().as_slice(),
            )
            .map_err(db_err)?;
            // A closed segment whose every entry is in pruned blocks goes whole (one a block).
            let oldest = meta_u32(&meta, META_OLDEST_SEGMENT)?;
            if oldest < segment {
                let top = meta_u64(&meta, &segment_top_key(oldest))?;
                if top < self.kept_from()? {
                    w.delete_table(index_segment(&index_segment_name(oldest)))
                        .map_err(db_err)?;
                    meta.remove(segment_top_key(oldest).as_str())
                        .map_err(db_err)?;
                    meta.insert(META_OLDEST_SEGMENT, (oldest + 1).to_le_bytes().as_slice())
                        .map_err(db_err)?;
                }
            }
        }
        w.commit().map_err(db_err)
    }

    /// The height up to which the transaction index is complete.
    pub fn indexed_height(&self) -> Result<u64, StoreError> {
        let r = self.index.begin_read().map_err(db_err)?;
        meta_u64(&r.open_table(META).map_err(db_err)?, META_INDEXED)
    }

    /// Every stored account (read once at start-up).
    pub fn load_accounts(&self) -> Result<Vec<(Address, Account)>, StoreError> {
        let r = self.db.begin_read().map_err(db_err)?;
        let t = r.open_table(ACCOUNTS).map_err(db_err)?;
        let mut out = Vec::new();
        for item in t.iter().map_err(db_err)? {
            let (k, v) = item.map_err(db_err)?;
            let entries: Vec<(Address, Account)> = borsh::from_slice(v.value())
                .map_err(|e| StoreError::Corrupt(format!("account bucket {}: {e}", k.value())))?;
            out.extend(entries);
        }
        Ok(out)
    }

    /// The whole key/value namespace (read once at start-up).
    pub fn load_kv(&self) -> Result<crate::kv::KvSpace, StoreError> {
        let r = self.db.begin_read().map_err(db_err)?;
        let t = r.open_table(KV).map_err(db_err)?;
        let mut out = Vec::new();
        for item in t.iter().map_err(db_err)? {
            let (k, v) = item.map_err(db_err)?;
            let entries: Vec<(Vec<u8>, Vec<u8>)> = borsh::from_slice(v.value())
                .map_err(|e| StoreError::Corrupt(format!("kv bucket {}: {e}", k.value())))?;
            out.extend(entries);
        }
        Ok(crate::kv::KvSpace::from_entries(out))
    }

    pub fn header(&self, height: u64) -> Result<Option<BlockHeader>, StoreError> {
        let r = self.db.begin_read().map_err(db_err)?;
        let t = r.open_table(HEADERS).map_err(db_err)?;
        let Some(v) = t.get(height).map_err(db_err)? else {
            return Ok(None);
        };
        borsh::from_slice(v.value())
            .map(Some)
            .map_err(|e| StoreError::Corrupt(format!("header {height}: {e}")))
    }

    pub fn block(&self, height: u64) -> Result<Option<Block>, StoreError> {
        let Some(header) = self.header(height)? else {
            return Ok(None);
        };
        let r = self.db.begin_read().map_err(db_err)?;
        let t = r.open_table(TXS).map_err(db_err)?;
        let mut txs = Vec::with_capacity(header.tx_count as usize);
        for item in t.range((height, 0)..=(height, u32::MAX)).map_err(db_err)? {
            let (_, v) = item.map_err(db_err)?;
            txs.extend(decode::<Vec<SignedTx>>(v.value(), height)?);
        }
        Ok(Some(Block { header, txs }))
    }

    /// A block with the receipts of its transactions, in block order.
    pub fn block_with_receipts(
        &self,
        height: u64,
    ) -> Result<Option<(Block, Vec<Receipt>)>, StoreError> {
        let Some(block) = self.block(height)? else {
            return Ok(None);
        };
        let r = self.db.begin_read().map_err(db_err)?;
        let t = r.open_table(RECEIPTS).map_err(db_err)?;
        let mut events = Vec::with_capacity(block.txs.len());
        for item in t.range((height, 0)..=(height, u32::MAX)).map_err(db_err)? {
            let (_, v) = item.map_err(db_err)?;
            events.extend(decode::<Vec<Vec<Event>>>(v.value(), height)?);
        }
        let receipts = block
            .txs
            .iter()
            .zip(events)
            .zip(0u32..)
            .map(|((tx, events), index)| Receipt {
                tx_hash: tx.hash(),
                height,
                index,
                events,
            })
            .collect();
        Ok(Some((block, receipts)))
    }

    /// One committed transaction with its receipt.
    pub fn tx_at(&self, loc: TxLocation) -> Result<Option<(SignedTx, Receipt)>, StoreError> {
        let r = self.db.begin_read().map_err(db_err)?;
        let key = (loc.height, loc.index / CHUNK as u32);
        let at = loc.index as usize % CHUNK;
        let (Some(txs), Some(events)) = (
            r.open_table(TXS)
                .map_err(db_err)?
                .get(key)
                .map_err(db_err)?,
            r.open_table(RECEIPTS)
                .map_err(db_err)?
                .get(key)
                .map_err(db_err)?,
        ) else {
            return Ok(None);
        };
        let mut txs = decode::<Vec<SignedTx>>(txs.value(), loc.height)?;
        let mut events = decode::<Vec<Vec<Event>>>(events.value(), loc.height)?;
        if at >= txs.len() || at >= events.len() {
            return Ok(None);
        }
        let tx = txs.swap_remove(at);
        let receipt = Receipt {
            tx_hash: tx.hash(),
            height: loc.height,
            index: loc.index,
            events: events.swap_remove(at),
        };
        Ok(Some((tx, receipt)))
    }

    /// The index segments held, oldest to newest, read in `r`.
    fn segments(r: &redb::ReadTransaction) -> Result<std::ops::RangeInclusive<u32>, StoreError> {
        let meta = r.open_table(META).map_err(db_err)?;
        Ok(meta_u32(&meta, META_OLDEST_SEGMENT)?..=meta_u32(&meta, META_SEGMENT)?)
    }

    pub fn tx_location(&self, hash: &Hash32) -> Result<Option<TxLocation>, StoreError> {
        let r = self.index.begin_read().map_err(db_err)?;
        for segment in Self::segments(&r)?.rev() {
            let name = index_segment_name(segment);
            let t = r.open_table(index_segment(&name)).map_err(db_err)?;
            if let Some(v) = t.get(hash.0).map_err(db_err)? {
                let (height, index) = v.value();
                return Ok(Some(TxLocation { height, index }));
            }
        }
        Ok(None)
    }

    /// Number of transactions the index holds (not those of segments dropped with their blocks).
    pub fn tx_count(&self) -> Result<u64, StoreError> {
        let r = self.index.begin_read().map_err(db_err)?;
        let mut total = 0;
        for segment in Self::segments(&r)? {
            let name = index_segment_name(segment);
            total += r
                .open_table(index_segment(&name))
                .map_err(db_err)?
                .len()
                .map_err(db_err)?;
        }
        Ok(total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::tx_root;
    use crate::crypto::Keypair;
    use crate::state::Event;
    use gridmesh_types::Amount;

    fn block_with(height: u64, n: u32, key: &Keypair) -> (Block, Vec<Receipt>) {
        let txs: Vec<SignedTx> = (0..n)
            .map(|i| {
                SignedTx::transfer(
                    key,
                    "t",
                    u64::from(i) + height * 1000,
                    Address([9; 32]),
                    Amount(1 + u128::from(i)),
                )
            })
            .collect();
        let hashes: Vec<Hash32> = txs.iter().map(|t| t.hash()).collect();
        let receipts = txs
            .iter()
            .zip(0u32..)
            .map(|(t, index)| Receipt {
                tx_hash: t.hash(),
                height,
                index,
                events: vec![Event::Transfer {
                    from: key.address(),
                    to: Address([9; 32]),
                    amount: Amount(1 + u128::from(index)),
                }],
            })
            .collect();
        let header = BlockHeader {
            height,
            parent_hash: Hash32::default(),
            timestamp_ms: height,
            tx_root: tx_root(&hashes),
            state_root: Hash32::default(),
            proposer: key.address(),
            tx_count: n,
        };
        (Block { header, txs }, receipts)
    }

    #[test]
    fn chunked_blocks_and_receipts_read_back_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let key = Keypair::from_seed([3; 32]);
        let (block, receipts) = block_with(1, 600, &key); // three chunks, the last one partial
        store
            .commit_block(
                &block,
                &receipts,
                &crate::state::State::default().overlay().finish(),
                Retention::All,
            )
            .unwrap();
        assert_eq!(store.block(1).unwrap().unwrap(), block);
        assert_eq!(
            store.block_with_receipts(1).unwrap().unwrap(),
            (block.clone(), receipts.clone())
        );
        for i in [0u32, 255, 256, 511, 512, 599] {
            let (tx, r) = store
                .tx_at(TxLocation {
                    height: 1,
                    index: i,
                })
                .unwrap()
                .unwrap();
            assert_eq!(tx, block.txs[i as usize]);
            assert_eq!(r, receipts[i as usize]);
        }
        assert!(store
            .tx_at(TxLocation {
                height: 1,
                index: 600
            })
            .unwrap()
            .is_none());
        assert!(store
            .tx_at(TxLocation {
                height: 2,
                index: 0
            })
            .unwrap()
            .is_none());
        assert!(store.block(2).unwrap().is_none());
    }

    #[test]
    fn index_rolls_over_segments_and_finds_every_transaction() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        store.segment_entries = 10;
        let key = Keypair::from_seed([4; 32]);
        let mut all = Vec::new();
        for height in 1..=8u64 {
            let (block, receipts) = block_with(height, 4, &key);
            store
                .commit_block(
                    &block,
                    &receipts,
                    &crate::state::State::default().overlay().finish(),
                    Retention::All,
                )
                .unwrap();
            let hashes: Vec<Hash32> = receipts.iter().map(|r| r.tx_hash).collect();
            store.index_block(height, &hashes).unwrap();
            // indexing the same block again (replay after a crash) changes nothing
            store.index_block(height, &hashes).unwrap();
            all.extend(hashes.into_iter().zip(0u32..).map(|(h, i)| (h, height, i)));
        }
        let r = store.index.begin_read().unwrap();
        assert!(
            *Store::segments(&r).unwrap().end() >= 3,
            "10-entry segments rolled over"
        );
        assert_eq!(store.tx_count().unwrap(), 32);
        assert_eq!(store.indexed_height().unwrap(), 8);
        for (hash, height, index) in all {
            assert_eq!(
                store.tx_location(&hash).unwrap(),
                Some(TxLocation { height, index })
            );
        }
        assert_eq!(store.tx_location(&Hash32([1; 32])).unwrap(), None);
    }

    /// With a window of 10 blocks: the older blocks (header, transactions, receipts) go as new
    /// ones commit, never genesis, never past the index, at most a batch a commit; the index's
    /// old segments go with them; the file stops growing; what is kept reads back exactly.
    #[test]
    fn a_window_of_blocks_prunes_the_older_ones_and_their_index_and_the_file_stops_growing() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        store.segment_entries = 20;
        let key = Keypair::from_seed([5; 32]);
        let (genesis, _) = block_with(0, 0, &key);
        store
            .init_genesis("t", &genesis, &crate::state::State::default())
            .unwrap();
        let keep = 10;
        let mut hashes_at = Vec::new();
        let mut size_at = Vec::new();
        let commit = |store: &Store, height: u64, index: bool| {
            let (block, receipts) = block_with(height, 300, &key); // two chunks each
            store
                .commit_block(
                    &block,
                    &receipts,
                    &crate::state::State::default().overlay().finish(),
                    Retention::Last(keep),
                )
                .unwrap();
            let hashes: Vec<Hash32> = receipts.iter().map(|r| r.tx_hash).collect();
            if index {
                store.index_block(height, &hashes).unwrap();
            }
            (block, receipts, hashes)
        };
        for height in 1..=200u64 {
            let (_, _, hashes) = commit(&store, height, true);
            hashes_at.push(hashes);
            if height % 50 == 0 {
                size_at.push(
                    std::fs::metadata(dir.path().join("chain.redb"))
                        .unwrap()
                        .len(),
                );
            }
            assert_eq!(
                store.kept_from().unwrap(),
                (height + 1).saturating_sub(keep).max(1)
            );
        }
        assert_eq!(store.kept_from().unwrap(), 191);
        assert!(store.header(190).unwrap().is_none() && store.block(190).unwrap().is_none());
        assert!(store.block_with_receipts(5).unwrap().is_none());
        assert!(store.header(0).unwrap().is_some(), "genesis is kept");
        for h in 191..=200u64 {
            let (block, receipts) = store.block_with_receipts(h).unwrap().unwrap();
            assert_eq!((block.txs.len(), receipts.len()), (300, 300));
        }
        let r = store.index.begin_read().unwrap();
        let segments = Store::segments(&r).unwrap();
        drop(r);
        assert!(
            *segments.start() > 100,
            "old segments dropped: {segments:?}"
        );
        // Kept transactions are found; a pruned one's segment is gone with its block.
        let last = &hashes_at[199][299];
        assert_eq!(
            store.tx_location(last).unwrap(),
            Some(TxLocation {
                height: 200,
                index: 299
            })
        );
        assert!(store
            .tx_at(TxLocation {
                height: 200,
                index: 299
            })
            .unwrap()
            .is_some());
        assert_eq!(store.tx_location(&hashes_at[0][0]).unwrap(), None);
        assert!(store
            .tx_at(TxLocation {
                height: 1,
                index: 0
            })
            .unwrap()
            .is_none());
        assert_eq!(store.tx_count().unwrap() as usize % 300, 0);
        // Freed pages are reused: the file is no larger after 200 blocks than after 100.
        assert!(
            size_at[3] <= size_at[1],
            "chain.redb after 50, 100, 150, 200 blocks: {size_at:?}"
        );
        // Blocks the index has not reached are kept (the index is rebuilt from them).
        for height in 201..=300u64 {
            commit(&store, height, false);
        }
        assert_eq!(store.kept_from().unwrap(), 201, "stops at the index");
        // Then the backlog goes a batch a commit.
        store.index_block(300, &[]).unwrap();
        commit(&store, 301, true);
        assert_eq!(store.kept_from().unwrap(), 201 + PRUNE_BLOCKS_PER_COMMIT);
        commit(&store, 302, true);
        assert_eq!(store.kept_from().unwrap(), 293);
        assert!(store.block(292).unwrap().is_none() && store.block(293).unwrap().is_some());
    }
}
