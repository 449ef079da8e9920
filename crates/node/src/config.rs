//! The node's configuration file (`gridmesh node --config FILE`).
//!
//! ```toml
//! data_dir = "v0"                       # relative paths are relative to this file
//! listen = "127.0.0.1:8645"             # HTTP API (addresses: an IP or a host name, and a port)
//! genesis = "../genesis.toml"
//! validator_key = "v0/validator.key"    # BFT networks: this validator's key
//! p2p_listen = "127.0.0.1:26600"        # BFT networks: default is the genesis address
//! block_interval_ms = 1000              # solo engine only
//! empty_blocks = false                  # solo engine only
//! keep_blocks = 2592000                 # the last 30 days at a block a second (default: all)
//! time_scale = 1                        # solo engine only: simulations and demos, never a real chain
//!
//! [grid_operator]                       # the grid operator's service (envelopes, islanding)
//! feeder = "feeder.toml"                # or an OpenDSS master (.dss)
//! key = "grid-operator.key"             # the genesis grid_operator
//! envelope_lead_slots = 2
//! pcc_timeout_s = 120                   # island when the PCC meter is silent this long
//! resync_s = 300                        # reconnect after this much healthy grid
//! openadr_upstream = "upstream.toml"    # optional: follow the DSO's OpenADR 3 VTN
//!
//! [gateway]                             # a device gateway on an MQTT broker
//! mqtt = "127.0.0.1:1883"               # HOST:PORT
//! key = "gateway.key"                   # signs the devices' readings onto the ledger
//! telemetry_dir = "telemetry"           # default: DATA_DIR/telemetry
//!
//! [tls]                                 # serve the API over HTTPS
//! cert = "api.crt"                      # PEM: the certificate chain
//! key = "api.key"                       # PEM: its private key
//!
//! [mempool]                             # this node's pool; every key is optional
//! deposit_per_tx = "0.01"               # tokens each pending transaction locks
//! max_txs = 200000
//! max_per_sender = 4096
//! max_gapped_per_sender = 64            # waiting behind a missing nonce
//! expiry_blocks = 600                   # dropped if not included within this many blocks
//!
//! [http]                                # the API's connections; every key is optional
//! max_connections = 768                 # default: 3/4 of the descriptor limit, at most 16384
//! header_read_timeout_s = 10            # a request's head, and a keep-alive's next request
//! idle_timeout_s = 60                   # nothing read or written
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

use std::path::{Path, PathBuf};

use gridmesh_ledger::MempoolConfig;

use crate::serve::ServerLimits;
use gridmesh_types::Amount;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeFile {
    pub data_dir: Option<PathBuf>,
    pub listen: Option<gridmesh_types::HostPort>,
    pub genesis: Option<PathBuf>,
    pub validator_key: Option<PathBuf>,
    pub p2p_listen: Option<gridmesh_types::HostPort>,
    pub block_interval_ms: Option<u64>,
    pub empty_blocks: Option<bool>,
    pub keep_blocks: Option<u64>,
    pub time_scale: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grid_operator: Option<GridOperatorFile>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<GatewayFile>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsFile>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mempool: Option<MempoolFile>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpFile>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub peers: Vec<Peer>,
}

/// The `[grid_operator]` section: the grid operator's service (`gridmesh node --grid-feeder`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GridOperatorFile {
    pub feeder: PathBuf,
    pub key: PathBuf,
    pub envelope_lead_slots: Option<u64>,
    pub pcc_timeout_s: Option<u64>,
    pub resync_s: Option<u64>,
    pub openadr_upstream: Option<PathBuf>,
}

/// The `[tls]` section: the API's certificate chain and private key, PEM files.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFile {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The `[gateway]` section: a device gateway on an MQTT broker (`gridmesh node --mqtt`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayFile {
    /// `HOST:PORT` of the broker.
    pub mqtt: String,
    pub key: PathBuf,
    pub telemetry_dir: Option<PathBuf>,
}

/// The `[mempool]` section: the price and bounds of this node's pool (see
/// [`gridmesh_ledger::mempool`]). Absent keys keep the defaults.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MempoolFile {
    /// Decimal tokens.
    pub deposit_per_tx: Option<String>,
    pub max_txs: Option<usize>,
    pub max_per_sender: Option<usize>,
    pub max_gapped_per_sender: Option<usize>,
    pub expiry_blocks: Option<u64>,
}

impl MempoolFile {
    /// The pool's limits: the defaults with this section's values, checked; errors name the key.
    pub fn config(&self) -> Result<MempoolConfig, String> {
        let mut c = MempoolConfig::default();
        if let Some(d) = &self.deposit_per_tx {
            c.deposit_per_tx = d
                .parse::<Amount>()
                .map_err(|e| format!("mempool.deposit_per_tx = {d:?}: {e}"))?;
        }
        c.max_txs = self.max_txs.unwrap_or(c.max_txs);
        // Unset, the per-sender bound shrinks with a smaller pool.
        c.max_per_sender = self
            .max_per_sender
            .unwrap_or(c.max_per_sender.min(c.max_txs));
        c.max_gapped_per_sender = self
            .max_gapped_per_sender
            .unwrap_or(c.max_gapped_per_sender);
        c.expiry_blocks = self.expiry_blocks.unwrap_or(c.expiry_blocks);
        check_mempool(&c)?;
        Ok(c)
    }
}

/// The `[http]` section: bounds of the API's connections (see [`crate::serve`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpFile {
    pub max_connections: Option<usize>,
    pub header_read_timeout_s: Option<u64>,
    pub idle_timeout_s: Option<u64>,
}

impl HttpFile {
    /// The bounds: the defaults with this section's values, checked; errors name the key.
    pub fn limits(&self) -> Result<ServerLimits, String> {
        let mut l = ServerLimits::default();
        l.max_connections = self.max_connections.unwrap_or(l.max_connections);
        if let Some(s) = self.header_read_timeout_s {
            l.header_read_timeout = std::time::Duration::from_secs(s);
        }
        if let Some(s) = self.idle_timeout_s {
            l.idle_timeout = std::time::Duration::from_secs(s);
        }
        l.check()?;
        Ok(l)
    }
}

/// Bounds of the pool's limits; errors name the `[mempool]` key.
pub fn check_mempool(c: &MempoolConfig) -> Result<(), String> {
    if !(1..=10_000_000).contains(&c.max_txs) {
        return Err(format!(
            "mempool.max_txs = {} is out of range (1 to 10000000)",
            c.max_txs
        ));
    }
    if !(1..=c.max_txs).contains(&c.max_per_sender) {
        return Err(format!(
            "mempool.max_per_sender = {} is out of range (1 to max_txs)",
            c.max_per_sender
        ));
    }
    if c.max_gapped_per_sender > c.max_per_sender {
        return Err(format!(
            "mempool.max_gapped_per_sender = {} is above max_per_sender",
            c.max_gapped_per_sender
        ));
    }
    if c.expiry_blocks == 0 {
        return Err("mempool.expiry_blocks must be at least 1".into());
    }
    if c.deposit_per_tx == Amount::ZERO {
        return Err(
            "mempool.deposit_per_tx must be above 0: a key without tokens could then fill the pool"
                .into(),
        );
    }
    Ok(())
}

/// A node allowed to connect besides the validators.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Peer {
    pub public_key: gridmesh_types::Address,
    pub p2p_address: gridmesh_types::HostPort,
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
        let mut paths: Vec<&mut PathBuf> = [&mut f.data_dir, &mut f.genesis, &mut f.validator_key]
            .into_iter()
            .flatten()
            .collect();
        if let Some(g) = &mut f.grid_operator {
            paths.extend([&mut g.feeder, &mut g.key]);
            paths.extend(g.openadr_upstream.as_mut());
        }
        if let Some(t) = &mut f.tls {
            paths.extend([&mut t.cert, &mut t.key]);
        }
        if let Some(g) = &mut f.gateway {
            paths.push(&mut g.key);
            paths.extend(g.telemetry_dir.as_mut());
        }
        for p in paths {
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

    #[test]
    fn the_mempool_section_is_checked_and_errors_name_the_key() {
        let parse = |t: &str| {
            toml::from_str::<NodeFile>(t)
                .unwrap()
                .mempool
                .unwrap()
                .config()
        };
        let c = parse("[mempool]\ndeposit_per_tx = \"0.5\"\nexpiry_blocks = 10\n").unwrap();
        assert_eq!(c.deposit_per_tx, Amount(500_000));
        assert_eq!(c.expiry_blocks, 10);
        assert_eq!(c.max_txs, MempoolConfig::default().max_txs);
        for (bad, key) in [
            ("deposit_per_tx = \"0\"", "mempool.deposit_per_tx"),
            ("deposit_per_tx = \"ten\"", "mempool.deposit_per_tx"),
            ("max_txs = 0", "mempool.max_txs"),
            ("max_per_sender = 300000", "mempool.max_per_sender"),
            (
                "max_gapped_per_sender = 5000",
                "mempool.max_gapped_per_sender",
            ),
            ("expiry_blocks = 0", "mempool.expiry_blocks"),
        ] {
            let err = parse(&format!("[mempool]\n{bad}\n")).unwrap_err();
            assert!(err.contains(key), "{bad}: {err}");
        }
        assert!(toml::from_str::<NodeFile>("[mempool]\ndeposit = 1\n").is_err());
        let http = |t: &str| {
            toml::from_str::<NodeFile>(t)
                .unwrap()
                .http
                .unwrap()
                .limits()
        };
        let l = http("[http]\nmax_connections = 100\nidle_timeout_s = 5\n").unwrap();
        assert_eq!(l.max_connections, 100);
        assert_eq!(l.idle_timeout, std::time::Duration::from_secs(5));
        let err = http("[http]\nheader_read_timeout_s = 0\n").unwrap_err();
        assert!(err.contains("http.header_read_timeout"), "{err}");
        let err = http("[http]\nmax_connections = 0\n").unwrap_err();
        assert!(err.contains("http.max_connections"), "{err}");
    }
}
