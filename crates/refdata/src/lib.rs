//! Where the reference data kept beside the repository lives, and the Python of the reference
//! peers ([`require_python`]). The data: MATPOWER cases with their reference
//! solutions, weather, load profiles, OpenDSS feeders (`../shared/data`, see its README for sources
//! and licences). Tests and benchmarks find it here and nowhere else.
//!
//! `GRIDMESH_SHARED_DATA` names another folder. A test that needs a file calls [`require`], which
//! fails the test when the file is missing: no test passes by skipping its data. What ships in the
//! repository itself (the reference year of `gridmesh-agent`) needs no locator.
//!
//! Knows no other gridmesh crate.

use std::path::{Path, PathBuf};

/// The environment variable that points at another copy of the shared data.
pub const ENV: &str = "GRIDMESH_SHARED_DATA";

/// The shared data folder: `$GRIDMESH_SHARED_DATA`, else `shared/data` beside the repository.
pub fn dir() -> PathBuf {
    match std::env::var_os(ENV) {
        Some(d) => PathBuf::from(d),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data"),
    }
}

/// A file or folder of the shared data, if it is there (benchmarks that can do without it).
pub fn find(relative: &str) -> Option<PathBuf> {
    let p = dir().join(relative);
    p.exists().then_some(p)
}

/// A file or folder of the shared data that must be there.
///
/// # Panics
/// When it is missing, with the path looked at and how to point at another copy: a test that
/// needs reference data fails without it.
pub fn require(relative: &str) -> PathBuf {
    let p = dir().join(relative);
    assert!(
        p.exists(),
        "the reference data {} is missing: put the shared data beside the repository \
         (../shared/data) or set {ENV} to its folder",
        p.display()
    );
    p
}

/// The Python of the interop venv that holds the reference peers (pandapower, pymarket, pvlib,
/// highspy, paho-mqtt, pymodbus, ocpp): `GRIDMESH_PYTHON`, else `.venv/bin/python` of the
/// repository, as `./scripts/setup` makes it. `None` if there is none (benchmarks that can do
/// without a peer).
pub fn find_python() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("GRIDMESH_PYTHON") {
        return Some(PathBuf::from(p));
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python");
    venv.exists().then_some(venv)
}

/// The interop venv's Python, which must be there.
///
/// # Panics
/// When there is none: an interop test fails without its peer, never passes by skipping.
pub fn require_python() -> PathBuf {
    find_python().unwrap_or_else(|| {
        panic!("the interop venv is missing: run ./scripts/setup (or set GRIDMESH_PYTHON)")
    })
}

/// The text of a shared data file that must be there (see [`require`]).
///
/// # Panics
/// When the file is missing or cannot be read as UTF-8 text.
pub fn require_text(relative: &str) -> String {
    let p = require(relative);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_file_fails_with_its_path() {
        let missing = "no/such/file.csv";
        let err = std::panic::catch_unwind(|| require(missing)).unwrap_err();
        let msg = err.downcast_ref::<String>().expect("a formatted message");
        assert!(msg.contains("no/such/file.csv"), "{msg}");
        assert!(msg.contains(ENV), "{msg}");
        assert!(find(missing).is_none());
    }
}
