//! The node's configuration file (`gridmesh node --config FILE`).
//!
//! ```toml
//! data_dir = "v0"                       # relative paths are relative to this file
//! listen = "127.0.0.1:8645"             # HTTP API
//! genesis = "../genesis.toml"
//! validator_key = "v0/validator.key"    # BFT networks: this validator's key
//! p2p_listen = "127.0.0.1:26600"        # BFT networks: default is the genesis address
//! block_interval_ms = 1000              # solo engine only
//! empty_blocks = false                  # solo engine only
//!
//! [[peers]]                             # BFT networks: full nodes allowed to connect
//! public_key = "<64 hex characters>"    # the full node's node.key
//! p2p_address = "127.0.0.1:26650"
//! ```
//!
//! A node of a BFT network without `validator_key` is a full node: it follows the validators
//! (identity: `DATA_DIR/node.key`) and needs `p2p_listen`; the validators must list it in
//! `peers`.
//!
//! Command-line flags override the file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeFile {
    pub data_dir: Option<PathBuf>,
    pub listen: Option<SocketAddr>,
    pub genesis: Option<PathBuf>,
    pub validator_key: Option<PathBuf>,
    pub p2p_listen: Option<SocketAddr>,
    pub block_interval_ms: Option<u64>,
    pub empty_blocks: Option<bool>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub peers: Vec<Peer>,
}

/// A node allowed to connect besides the validators.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Peer {
    pub public_key: gridmesh_types::Address,
    pub p2p_address: SocketAddr,
}

impl std::str::FromStr for Peer {
    type Err = String;

    /// `KEY@HOST:PORT`.
    fn from_str(s: &str) -> Result<Peer, String> {
        let (key, addr) = s
            .split_once('@')
            .ok_or_else(|| format!("peer {s:?} is not KEY@HOST:PORT"))?;
        Ok(Peer {
            public_key: key.parse().map_err(|e| format!("peer key {key:?}: {e}"))?,
            p2p_address: addr
                .parse()
                .map_err(|e| format!("peer address {addr:?}: {e}"))?,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {path} is not valid: {reason}")]
    Parse { path: String, reason: String },
}

impl NodeFile {
    /// Reads a config file; relative paths in it become relative to its directory.
    pub fn load(path: &Path) -> Result<NodeFile, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.display().to_string(),
            source,
        })?;
        let mut f: NodeFile = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        for p in [&mut f.data_dir, &mut f.genesis, &mut f.validator_key]
            .into_iter()
            .flatten()
        {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        Ok(f)
    }

    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("config serialises")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loads_resolves_paths_and_rejects_mistakes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("node.toml");
        std::fs::write(
            &p,
            "data_dir = \"data\"\nlisten = \"127.0.0.1:1\"\nvalidator_key = \"/abs/v.key\"\n",
        )
        .unwrap();
        let f = NodeFile::load(&p).unwrap();
        assert_eq!(f.data_dir.unwrap(), dir.path().join("data"));
        assert_eq!(f.validator_key.unwrap(), PathBuf::from("/abs/v.key"));
        std::fs::write(&p, "data_dir = \"d\"\nlisen = \"127.0.0.1:1\"\n").unwrap();
        let err = NodeFile::load(&p).unwrap_err().to_string();
        assert!(err.contains("lisen"), "{err}");
        std::fs::write(&p, "listen = \"not an address\"\n").unwrap();
        assert!(NodeFile::load(&p).is_err());
        assert!(NodeFile::load(&dir.path().join("missing.toml")).is_err());
        let key = "ab".repeat(32);
        let peer: Peer = format!("{key}@127.0.0.1:9").parse().unwrap();
        assert_eq!(peer.p2p_address.port(), 9);
        assert!("nokey".parse::<Peer>().is_err());
        assert!(format!("{key}@nowhere").parse::<Peer>().is_err());
        std::fs::write(
            &p,
            format!("[[peers]]\npublic_key = \"{key}\"\np2p_address = \"127.0.0.1:9\"\n"),
        )
        .unwrap();
        assert_eq!(NodeFile::load(&p).unwrap().peers, vec![peer]);
    }
}
