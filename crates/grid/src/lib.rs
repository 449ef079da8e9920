//! The community's feeder: a network model an engineer reads like a textbook (buses, branches,
//! generators, in per unit on the case's MVA base), imported from MATPOWER case files.
//!
//! Floats are fine here: power flow and limits run outside consensus (see DESIGN.md); what enters
//! the ledger from this crate is quantised to integers by one documented function
//! ([`Envelope::energy_mwh`]).
//!
//! What is here: the network model and MATPOWER (version 2) import/export (`matpower`); OpenDSS
//! scripts read into their objects (`dss`: the import of unbalanced feeders starts there); feeders
//! described in TOML (`feeder`); AC power flow by Newton-Raphson with a sparse Jacobian and faer's
//! sparse LU (`powerflow`) and by backward/forward sweep on radial feeders (`sweep`); dynamic
//! operating envelopes per connection point (`envelope`); the microgrid islanding controller
//! (`island`) and outage scenarios with their KPIs (`outage`).

mod complex;
pub mod dss;
pub mod envelope;
pub mod feeder;
pub mod island;
pub mod matpower;
mod network;
pub mod outage;
pub mod powerflow;
pub mod snapshot;
mod sparse;
pub mod sweep;
pub mod unbalanced;

pub use envelope::{
    first_violation, operating_envelopes, slot_energy_mwh, violations, Binding, Envelope,
    EnvelopeError, EnvelopeOptions, Envelopes, Violation,
};
pub use feeder::{Feeder, FeederError, FeederSpec};
pub use matpower::{parse_case, write_case, CaseError};
pub use network::{Branch, Bus, BusKind, Generator, Network};
pub use powerflow::{
    newton_raphson, BranchFlow, NewtonRaphson, PowerFlow, PowerFlowError, PowerFlowOptions,
};
pub use sweep::{generated_radial_feeder, RadialFeeder, SweepError};
