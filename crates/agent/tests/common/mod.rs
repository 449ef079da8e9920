//! Helpers for the agent's tests on the reference data.

use std::path::PathBuf;

/// A file of `../shared/data` (or `GRIDMESH_SHARED_DATA`), `None` if it is not there.
pub fn shared(rel: &str) -> Option<String> {
    let base = std::env::var_os("GRIDMESH_SHARED_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data"));
    std::fs::read_to_string(base.join(rel)).ok()
}
