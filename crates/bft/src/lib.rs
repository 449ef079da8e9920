//! Several validators: the gridmesh ledger replicated by commonware's simplex BFT consensus.
//!
//! - [`block`]: the ledger block as a consensus block (digest = ledger hash);
//! - [`app`]: the [`app::Replica`] (committed chain + speculative blocks), the
//!   [`app::LedgerApplication`] simplex proposes and verifies through, and the [`app::Finalizer`]
//!   marshal delivers finalised blocks to.

pub mod app;
pub mod block;
pub mod engine;
pub mod gossip;
pub mod validator;

/// A node's public key as consensus and p2p know it (the same ed25519 key as its ledger address).
pub use commonware_cryptography::ed25519::PublicKey as ConsensusKey;
