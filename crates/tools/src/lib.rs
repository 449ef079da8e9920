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

/// Runs a peer script of `scripts/interop` with the venv's `python` and reads the JSON it prints;
/// a failure is an error with the script's own words (its stderr).
pub fn run_peer<I, A>(
    python: &std::path::Path,
    script: &str,
    args: I,
) -> anyhow::Result<serde_json::Value>
where
    I: IntoIterator<Item = A>,
    A: AsRef<std::ffi::OsStr>,
{
    use anyhow::Context;
    let script = repo_path(script);
    let out = std::process::Command::new(python)
        .arg(&script)
        .args(args)
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    if !out.status.success() {
        anyhow::bail!(
            "{} failed: {}",
            script.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    serde_json::from_slice(&out.stdout)
        .with_context(|| format!("the output of {}", script.display()))
}

/// The Python of the interop venv, if there is one (`gridmesh_refdata::find_python`).
pub fn interop_python() -> Option<std::path::PathBuf> {
    gridmesh_refdata::find_python()
}
