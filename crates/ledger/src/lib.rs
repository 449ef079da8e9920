//! The gridmesh ledger: transactions, blocks, the deterministic state machine, durable storage and
//! the mempool.
//!
//! The state machine is a pure function `(state, block) -> (state', receipts)` (see
//! [`Chain::verify_block`] and [`state::Overlay::apply_tx`]): no clocks, randomness, floats, hash-map
//! iteration or I/O inside it. Time enters only through the block header.

pub mod block;
pub mod chain;
pub mod crypto;
pub mod economics;
pub mod genesis;
pub mod kv;
pub mod market;
pub mod mempool;
pub mod merkle;
pub mod state;
pub mod store;
pub mod telemetry;
pub mod tx;

pub use block::{Block, BlockHeader, Receipt};
pub use chain::{BlockError, Built, Chain, ChainError, Executed, Parent, Rehearsal};
pub use crypto::Keypair;
pub use genesis::Genesis;
pub use market::{MarketConfig, MarketTxError};
pub use mempool::{AdmissionError, Mempool, MempoolConfig};
pub use state::{Account, Event, State, TxContext, TxError};
pub use tx::{
    DeviceInfo, DeviceKind, GridEventKind, Side, SignedTx, TxBody, TxKind, UnsignedTx, VerifiedTx,
};
