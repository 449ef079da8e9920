//! gridmesh's developer and research tools, for the people who build and study gridmesh rather
//! than the communities that run it: the demos (`demo_community`: the simulated community driving
//! an embedded node; `demo`, `demo_devices`: the scripted tour), the benchmarks (`bench*`), the
//! local testnet launcher (`testnet`), offline studies on order files and feeders (`market_file`,
//! `grid_market`, `grid_report`) and a Mosquitto broker for tests and benchmarks (`broker`).
//!
//! The only crate that depends on both the node and the simulator: the node that ships knows
//! nothing of this crate.

pub mod attacks;
pub mod bench;
pub mod bench_agent;
pub mod bench_feeder;
pub mod bench_grid;
pub mod bench_ingest;
pub mod bench_market;
pub mod bench_net;
pub mod broker;
pub mod demo;
pub mod demo_community;
pub mod demo_devices;
pub mod grid_market;
pub mod grid_report;
pub mod grid_unbalanced;
pub mod market_file;
pub mod testnet;

/// A path inside the source tree these tools were built from (scripts, the interop venv).
pub fn repo_path(relative: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(relative)
}

/// The Python of the interop venv, if there is one (`gridmesh_refdata::find_python`).
pub fn interop_python() -> Option<std::path::PathBuf> {
    gridmesh_refdata::find_python()
}
