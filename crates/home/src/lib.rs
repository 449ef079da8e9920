//! `gridmesh home`: one process per home, on the home's gateway. It reads the home's devices
//! (SunSpec inverters, batteries and meters over Modbus TCP, an EV charger over OCPP 1.6J through
//! the central system it runs, a grid meter over MQTT from a P1/DSMR bridge), signs their samples with each
//! device's key and keeps them, plans and trades with the one home agent of `gridmesh-client`
//! (the same planning and order code `gridmesh agent` runs), drives the battery and PV to the
//! plan with setpoints that revert by themselves, and reports each slot's signed readings so the
//! slot settles. Without a node, a market or a plan it runs the home on local self-consumption.
//!
//! A client of the node: it knows the node only through its HTTP API (`gridmesh-client`), and
//! nothing of the simulator.

pub mod config;
pub mod devices;
pub mod ev;
pub mod ha;
pub mod heat_pump;
pub mod journal;
pub mod loads;
pub mod mqtt_meter;
pub mod run;
pub mod status;

pub use config::HomeConfig;
pub use run::{run, HomeReport};
pub use status::read_status;
