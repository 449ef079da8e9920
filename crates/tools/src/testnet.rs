//! A local BFT network for development and tests: `gridmesh testnet --validators N --dir DIR`.
//!
//! [`init`] writes, once, everything the validators need:
//!
//! ```text
//! DIR/testnet.toml          the layout below (read back on the next start)
//! DIR/genesis.toml          chain id, validators (keys, p2p addresses), the faucet's balance
//! DIR/faucet.key            holds the whole supply
//! DIR/v<i>/validator.key    validator i's key
//! DIR/v<i>/node.toml        its node config: `gridmesh node --config DIR/v<i>/node.toml`
//! DIR/v<i>/data/            its chain (created when it first starts)
//! DIR/f<j>/node.toml        full node j (if any): follows the validators, has no vote
//! DIR/f<j>/data/node.key    its identity, listed in every validator's `peers`
//! ```
//!
//! Validator i listens for p2p on `base_port + i` and serves its API on `base_port + 100 + i`;
//! full node j uses `base_port + 50 + j` and `base_port + 150 + j`; all on 127.0.0.1.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use gridmesh_ledger::genesis::{GenesisAccount, GenesisValidator, MAX_VALIDATORS};
use gridmesh_ledger::{Genesis, Keypair};
use gridmesh_types::{Address, Amount};
use serde::{Deserialize, Serialize};

use gridmesh_node::config::NodeFile;

/// Chain id of local testnets.
pub const TESTNET_CHAIN_ID: &str = "gridmesh-testnet";
/// Default first port.
pub const DEFAULT_BASE_PORT: u16 = 26600;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TestnetValidator {
    pub index: usize,
    pub address: Address,
    pub api: SocketAddr,
    pub p2p: SocketAddr,
    /// Its node config file, relative to the testnet directory.
    pub config: PathBuf,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Testnet {
    pub chain_id: String,
    pub validators: Vec<TestnetValidator>,
    #[serde(default)]
    pub full_nodes: Vec<TestnetValidator>,
}

impl Testnet {
    pub fn load(dir: &Path) -> anyhow::Result<Testnet> {
        let path = dir.join("testnet.toml");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("{} is not valid", path.display()))
    }

    /// The node config file of validator `i`.
    pub fn config_path(&self, dir: &Path, i: usize) -> PathBuf {
        dir.join(&self.validators[i].config)
    }

    /// The node config file of full node `j`.
    pub fn full_node_config_path(&self, dir: &Path, j: usize) -> PathBuf {
        dir.join(&self.full_nodes[j].config)
    }
}

/// Writes a new testnet of `n` validators into `dir`, or, if `dir` already holds one, loads it
/// (checking it has `n` validators).
pub fn init(dir: &Path, n: usize, base_port: u16) -> anyhow::Result<Testnet> {
    init_with(dir, n, 0, base_port, Vec::new())
}

/// [`init`], with more funded accounts in the genesis (benchmarks).
pub fn init_with(
    dir: &Path,
    n: usize,
    full: usize,
    base_port: u16,
    accounts: Vec<GenesisAccount>,
) -> anyhow::Result<Testnet> {
    if dir.join("testnet.toml").exists() {
        let t = Testnet::load(dir)?;
        if t.validators.len() != n || t.full_nodes.len() != full {
            bail!(
                "{} already holds a testnet of {} validators and {} full nodes, not {n} and \
                 {full}; use another --dir",
                dir.display(),
                t.validators.len(),
                t.full_nodes.len()
            );
        }
        return Ok(t);
    }
    if n == 0 || n > MAX_VALIDATORS.min(50) {
        bail!("a testnet has 1 to 50 validators, not {n}");
    }
    if full > 50 {
        bail!("a testnet has at most 50 full nodes, not {full}");
    }
    if base_port as usize + 100 + n > u16::MAX as usize {
        bail!("base port {base_port} leaves no room for {n} validators");
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let faucet = Keypair::generate();
    faucet.save(&dir.join("faucet.key"))?;
    let mut full_nodes = Vec::new();
    let mut peers = Vec::new();
    for j in 0..full {
        let fdir = dir.join(format!("f{j}"));
        std::fs::create_dir_all(fdir.join("data"))?;
        let key = Keypair::generate();
        key.save(&fdir.join("data").join(gridmesh_node::NODE_KEY_FILE))?;
        let p2p: SocketAddr = format!("127.0.0.1:{}", base_port as usize + 50 + j).parse()?;
        let api: SocketAddr = format!("127.0.0.1:{}", base_port as usize + 150 + j).parse()?;
        let node = NodeFile {
            data_dir: Some("data".into()),
            listen: Some(api.into()),
            genesis: Some("../genesis.toml".into()),
            p2p_listen: Some(p2p.into()),
            ..Default::default()
        };
        std::fs::write(fdir.join("node.toml"), node.to_toml())?;
        peers.push(gridmesh_node::config::Peer {
            public_key: key.address(),
            p2p_address: p2p.into(),
        });
        full_nodes.push(TestnetValidator {
            index: j,
            address: key.address(),
            api,
            p2p,
            config: PathBuf::from(format!("f{j}/node.toml")),
        });
    }
    let mut validators = Vec::new();
    let mut genesis_validators = Vec::new();
    for i in 0..n {
        let vdir = dir.join(format!("v{i}"));
        std::fs::create_dir_all(&vdir)?;
        let key = Keypair::generate();
        key.save(&vdir.join("validator.key"))?;
        let p2p: SocketAddr = format!("127.0.0.1:{}", base_port as usize + i).parse()?;
        let api: SocketAddr = format!("127.0.0.1:{}", base_port as usize + 100 + i).parse()?;
        let node = NodeFile {
            data_dir: Some("data".into()),
            listen: Some(api.into()),
            genesis: Some("../genesis.toml".into()),
            validator_key: Some("validator.key".into()),
            p2p_listen: Some(p2p.into()),
            peers: peers.clone(),
            ..Default::default()
        };
        std::fs::write(vdir.join("node.toml"), node.to_toml())?;
        genesis_validators.push(GenesisValidator {
            public_key: key.address(),
            p2p_address: p2p.into(),
            power: 1,
        });
        validators.push(TestnetValidator {
            index: i,
            address: key.address(),
            api,
            p2p,
            config: PathBuf::from(format!("v{i}/node.toml")),
        });
    }
    let genesis = Genesis {
        chain_id: TESTNET_CHAIN_ID.into(),
        timestamp_ms: 0,
        accounts: std::iter::once(GenesisAccount {
            address: faucet.address(),
            balance: Amount::from_tokens(1_000_000_000),
        })
        .chain(accounts)
        .collect(),
        validators: genesis_validators,
        market: None,
        economics: None,
    };
    genesis.validate()?;
    std::fs::write(dir.join("genesis.toml"), genesis.to_toml())?;
    let t = Testnet {
        chain_id: TESTNET_CHAIN_ID.into(),
        validators,
        full_nodes,
    };
    std::fs::write(dir.join("testnet.toml"), toml::to_string_pretty(&t)?)?;
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_a_consistent_testnet_once() {
        let dir = tempfile::tempdir().unwrap();
        let t = init(dir.path(), 4, 30000).unwrap();
        assert_eq!(t.validators.len(), 4);
        let g = Genesis::load(&dir.path().join("genesis.toml")).unwrap();
        assert_eq!(g.validators.len(), 4);
        for (i, v) in t.validators.iter().enumerate() {
            let f = NodeFile::load(&t.config_path(dir.path(), i)).unwrap();
            let key = Keypair::load(f.validator_key.as_ref().unwrap()).unwrap();
            assert_eq!(key.address(), v.address);
            assert_eq!(g.validators[i].public_key, v.address);
            assert_eq!(f.p2p_listen, Some(v.p2p.into()));
            assert_eq!(f.listen, Some(v.api.into()));
        }
        // A second init loads, it does not regenerate keys.
        assert_eq!(init(dir.path(), 4, 31000).unwrap(), t);
        assert!(init(dir.path(), 5, 30000).is_err());
        assert!(init(&dir.path().join("x"), 0, 30000).is_err());
        let with_full = init_with(&dir.path().join("y"), 4, 2, 32000, vec![]).unwrap();
        assert_eq!(with_full.full_nodes.len(), 2);
        let v0 = NodeFile::load(&with_full.config_path(&dir.path().join("y"), 0)).unwrap();
        assert_eq!(v0.peers.len(), 2);
        let f0 =
            NodeFile::load(&with_full.full_node_config_path(&dir.path().join("y"), 0)).unwrap();
        assert!(f0.validator_key.is_none());
        let key = Keypair::load(&f0.data_dir.unwrap().join(gridmesh_node::NODE_KEY_FILE)).unwrap();
        assert_eq!(key.address(), v0.peers[0].public_key);
    }
}
