//! Clients of a gridmesh node, through its public HTTP API only: the blocking API client
//! (`client`) that the command line, the tools and the tests use, and a home's energy agent
//! (`agent_runner`) that trades for its owner against any node.
//!
//! Knows nothing of the node's wiring, its storage or the simulator: what it reads and sends is
//! the wire format of `gridmesh-api` and transactions signed with `gridmesh-ledger`'s keys.

pub mod agent_runner;
pub mod client;

pub use client::{Client, ClientError};
