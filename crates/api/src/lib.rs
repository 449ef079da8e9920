//! The gridmesh HTTP API's wire format: what `/v1/...` answers and takes, and the views of the
//! ledger state those answers are built from. The node serves these types (`gridmesh-node`);
//! clients read them (`gridmesh-client`, the command line, the tools); neither needs the other.
//!
//! Knows nothing of HTTP servers, the node's wiring, the simulator or any I/O: every function
//! here is a pure function of ledger values.

pub mod chain;
pub mod economics;
pub mod home;
pub mod market;
pub mod tariff;

pub use chain::*;
