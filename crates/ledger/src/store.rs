//! Durable storage in redb: blocks, receipts, the transaction index and the account state.
//!
//! Each block is committed in one redb write transaction together with the state changes it makes
//! and the new head height, so after a crash the database holds either all of a block or none of
//! it. redb's commit is durable (fsync) before [`Store::commit_block`] returns.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use gridmesh_types::{Address, Hash32};
use redb::{Database, ReadableTable, ReadableTableMetadata, TableDefinition};

use crate::block::{Block, Receipt};
use crate::state::Account;

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const BLOCKS: TableDefinition<u64, &[u8]> = TableDefinition::new("blocks");
const RECEIPTS: TableDefinition<u64, &[u8]> = TableDefinition::new("receipts");
const TX_INDEX: TableDefinition<[u8; 32], (u64, u32)> = TableDefinition::new("tx_index");
const ACCOUNTS: TableDefinition<[u8; 32], &[u8]> = TableDefinition::new("accounts");

const META_HEAD: &str = "head_height";
const META_CHAIN_ID: &str = "chain_id";
const META_GENESIS: &str = "genesis_hash";

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

/// A handle to the database; cheap to clone, safe to read from several threads while one writes.
#[derive(Clone)]
pub struct Store {
    db: Arc<Database>,
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
    /// Opens (or creates) the database file; redb repairs it after an unclean shutdown.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let db = Database::create(path).map_err(db_err)?;
        let w = db.begin_write().map_err(db_err)?;
        w.open_table(META).map_err(db_err)?;
        w.open_table(BLOCKS).map_err(db_err)?;
        w.open_table(RECEIPTS).map_err(db_err)?;
        w.open_table(TX_INDEX).map_err(db_err)?;
        w.open_table(ACCOUNTS).map_err(db_err)?;
        w.commit().map_err(db_err)?;
        Ok(Store { db: Arc::new(db) })
    }

    /// The stored chain, or `None` for a fresh database.
    pub fn meta(&self) -> Result<Option<StoredMeta>, StoreError> {
        let r = self.db.begin_read().map_err(db_err)?;
        let t = r.open_table(META).map_err(db_err)?;
        let get = |k: &str| -> Result<Option<Vec<u8>>, StoreError> {
            Ok(t.get(k).map_err(db_err)?.map(|v| v.value().to_vec()))
        };
        let Some(head) = get(META_HEAD)? else {
            return Ok(None);
        };
        let head_height = u64::from_le_bytes(
            head.try_into()
                .map_err(|_| StoreError::Corrupt("head height".into()))?,
        );
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
        accounts: &BTreeMap<Address, Account>,
    ) -> Result<(), StoreError> {
        let w = self.db.begin_write().map_err(db_err)?;
        {
            let mut meta = w.open_table(META).map_err(db_err)?;
            meta.insert(META_CHAIN_ID, chain_id.as_bytes())
                .map_err(db_err)?;
            meta.insert(META_GENESIS, block.hash().0.as_slice())
                .map_err(db_err)?;
        }
        self.write_block(&w, block, &[], accounts)?;
        w.commit().map_err(db_err)
    }

    /// Commits a block, its receipts and the accounts it changed in one durable transaction.
    pub fn commit_block(
        &self,
        block: &Block,
        receipts: &[Receipt],
        changed: &BTreeMap<Address, Account>,
    ) -> Result<(), StoreError> {
        let w = self.db.begin_write().map_err(db_err)?;
        self.write_block(&w, block, receipts, changed)?;
        w.commit().map_err(db_err)
    }

    fn write_block(
        &self,
        w: &redb::WriteTransaction,
        block: &Block,
        receipts: &[Receipt],
        changed: &BTreeMap<Address, Account>,
    ) -> Result<(), StoreError> {
        let height = block.header.height;
        let encoded = borsh::to_vec(block).expect("encoding to a Vec cannot fail");
        w.open_table(BLOCKS)
            .map_err(db_err)?
            .insert(height, encoded.as_slice())
            .map_err(db_err)?;
        let encoded = borsh::to_vec(receipts).expect("encoding to a Vec cannot fail");
        w.open_table(RECEIPTS)
            .map_err(db_err)?
            .insert(height, encoded.as_slice())
            .map_err(db_err)?;
        {
            let mut idx = w.open_table(TX_INDEX).map_err(db_err)?;
            // Inserting in key order keeps B-tree page accesses local.
            let mut keys: Vec<(&Hash32, u32)> =
                receipts.iter().map(|r| (&r.tx_hash, r.index)).collect();
            keys.sort_unstable();
            for (hash, index) in keys {
                idx.insert(hash.0, (height, index)).map_err(db_err)?;
            }
        }
        {
            let mut acc = w.open_table(ACCOUNTS).map_err(db_err)?;
            let mut buf = Vec::with_capacity(24);
            for (k, v) in changed {
                if *v == Account::default() {
                    acc.remove(k.0).map_err(db_err)?;
                } else {
                    buf.clear();
                    borsh::to_writer(&mut buf, v).expect("encoding to a Vec cannot fail");
                    acc.insert(k.0, buf.as_slice()).map_err(db_err)?;
                }
            }
        }
        w.open_table(META)
            .map_err(db_err)?
            .insert(META_HEAD, height.to_le_bytes().as_slice())
            .map_err(db_err)?;
        Ok(())
    }

    /// Every stored account (read once at start-up).
    pub fn load_accounts(&self) -> Result<BTreeMap<Address, Account>, StoreError> {
        let r = self.db.begin_read().map_err(db_err)?;
        let t = r.open_table(ACCOUNTS).map_err(db_err)?;
        let mut out = BTreeMap::new();
        for item in t.iter().map_err(db_err)? {
            let (k, v) = item.map_err(db_err)?;
            let acc: Account = borsh::from_slice(v.value()).map_err(|e| {
                StoreError::Corrupt(format!("account {}: {e}", hex::encode(k.value())))
            })?;
            out.insert(Address(k.value()), acc);
        }
        Ok(out)
    }

    pub fn block(&self, height: u64) -> Result<Option<Block>, StoreError> {
        let r = self.db.begin_read().map_err(db_err)?;
        let t = r.open_table(BLOCKS).map_err(db_err)?;
        let Some(v) = t.get(height).map_err(db_err)? else {
            return Ok(None);
        };
        borsh::from_slice(v.value())
            .map(Some)
            .map_err(|e| StoreError::Corrupt(format!("block {height}: {e}")))
    }

    pub fn receipts(&self, height: u64) -> Result<Vec<Receipt>, StoreError> {
        let r = self.db.begin_read().map_err(db_err)?;
        let t = r.open_table(RECEIPTS).map_err(db_err)?;
        let Some(v) = t.get(height).map_err(db_err)? else {
            return Ok(vec![]);
        };
        borsh::from_slice(v.value())
            .map_err(|e| StoreError::Corrupt(format!("receipts of block {height}: {e}")))
    }

    pub fn tx_location(&self, hash: &Hash32) -> Result<Option<TxLocation>, StoreError> {
        let r = self.db.begin_read().map_err(db_err)?;
        let t = r.open_table(TX_INDEX).map_err(db_err)?;
        Ok(t.get(hash.0).map_err(db_err)?.map(|v| {
            let (height, index) = v.value();
            TxLocation { height, index }
        }))
    }

    /// Number of indexed transactions.
    pub fn tx_count(&self) -> Result<u64, StoreError> {
        let r = self.db.begin_read().map_err(db_err)?;
        let t = r.open_table(TX_INDEX).map_err(db_err)?;
        t.len().map_err(db_err)
    }
}
