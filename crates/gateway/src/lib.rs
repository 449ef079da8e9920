//! Device gateways: how readings from real hardware reach the ledger.
//!
//! - [`store`]: the off-chain telemetry store (redb): every verified sample of the devices this
//!   node serves, per device in time order, with the commitment and inclusion proofs of a slot.
//! - [`ingest`]: verification of signed samples in batches (signature, registration, replay,
//!   monotonic registers, rated power) before they are committed to the store.
//! - [`mqtt`]: the MQTT front end (topic layout and payloads documented there), feeding
//!   [`ingest`] and relaying devices' signed slot readings to the ledger.
//!
//! Nothing here runs inside consensus: the ledger sees only slot readings and fraud proofs.

pub mod adapter;
pub mod ingest;
pub mod mqtt;
pub mod ocpp;
pub mod store;
pub mod sunspec;

pub use ingest::{DeviceDirectory, DeviceLimits, IngestReport, Ingestor, RejectReason};
pub use store::{SlotCommitment, StoreError, TelemetryStore};
