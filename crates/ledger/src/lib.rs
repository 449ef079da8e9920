//! The gridmesh ledger: transactions, blocks, the deterministic state machine, durable storage and
//! the mempool.
//!
//! The state machine is a pure function `(state, block) -> (state', receipts)` (see
//! [`Chain::verify_block`] and [`dispatch::BlockExecution`]): no clocks, randomness, floats,
//! hash-map iteration or I/O inside it. Time enters only through the block header.
//!
//! The concerns of the state machine, each a module that knows nothing of those after it:
//! [`kv`] (the key/value space and every key layout) and [`state`] (accounts, overlay,
//! commitment); [`config`] (the community's rules); [`devices`] (registry and proof of
//! generation); [`grid_operator`] (envelopes, islanding); [`market`] (orders, clearing,
//! settlement); [`economics`] (rewards, disputes, assets); [`dispatch`] (one match over
//! transaction kinds, and the order of the block-level rules). Outside readers go through
//! [`readers`], never through keys.

mod arith;
pub mod block;
pub mod chain;
pub mod config;
pub mod crypto;
pub mod devices;
pub mod dispatch;
pub mod economics;
pub mod error;
pub mod genesis;
pub mod grid_operator;
pub mod kv;
pub mod limits;
pub mod market;
pub mod mempool;
pub mod merkle;
pub mod readers;
pub mod snapshot;
pub mod state;
pub mod store;
pub mod telemetry;
pub mod tx;

pub use block::{Block, BlockHeader, Receipt};
pub use chain::{
    BlockError, Built, Chain, ChainError, DeviceSignatures, Executed, Parent, Rehearsal,
};
pub use config::MarketConfig;
pub use crypto::Keypair;
pub use dispatch::BlockExecution;
pub use error::{EconomicsError, MarketTxError, TxError};
pub use genesis::Genesis;
pub use mempool::{AdmissionError, Admitted, Mempool, MempoolConfig};
pub use readers::StateReader;
pub use state::{Account, Event, State, TxContext};
pub use tx::{
    DeviceInfo, DeviceKind, GridEventKind, Side, SignedTx, TxBody, TxKind, UnsignedTx, VerifiedTx,
};
