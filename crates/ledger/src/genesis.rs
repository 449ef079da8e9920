//! The genesis: chain id, start time and initial balances.
//!
//! A genesis file is TOML:
//!
//! ```toml
//! chain_id = "my-community"
//! timestamp_ms = 1767225600000
//!
//! [[accounts]]
//! address = "<64 hex characters>"
//! balance = "1000000"          # tokens, decimal (up to 6 places)
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use gridmesh_types::{Address, Amount, Hash32};
use serde::{Deserialize, Serialize};

use crate::block::{tx_root, Block, BlockHeader};
use crate::state::{Account, State};
use crate::tx::valid_chain_id;

/// Chain id of the development genesis.
pub const DEV_CHAIN_ID: &str = "gridmesh-dev";
/// Supply minted to the faucet by the development genesis: one billion tokens.
pub const DEV_SUPPLY: Amount = Amount::from_tokens(1_000_000_000);

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenesisAccount {
    pub address: Address,
    /// Decimal tokens in files; base units in memory.
    #[serde(with = "amount_as_tokens")]
    pub balance: Amount,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Genesis {
    pub chain_id: String,
    #[serde(default)]
    pub timestamp_ms: u64,
    #[serde(default)]
    pub accounts: Vec<GenesisAccount>,
}

#[derive(Debug, thiserror::Error)]
pub enum GenesisError {
    #[error("genesis file {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("genesis file {path} is not valid: {reason}")]
    Parse { path: String, reason: String },
    #[error("genesis chain id {0:?} is invalid (1-32 characters of a-z, 0-9 and '-')")]
    BadChainId(String),
    #[error("genesis lists account {0} twice")]
    DuplicateAccount(Address),
    #[error("genesis total supply overflows")]
    SupplyOverflow,
}

impl Genesis {
    /// The development genesis: the whole supply to `faucet`.
    pub fn dev(faucet: Address) -> Genesis {
        Genesis {
            chain_id: DEV_CHAIN_ID.to_string(),
            timestamp_ms: 0,
            accounts: vec![GenesisAccount {
                address: faucet,
                balance: DEV_SUPPLY,
            }],
        }
    }

    pub fn load(path: &Path) -> Result<Genesis, GenesisError> {
        let text = std::fs::read_to_string(path).map_err(|source| GenesisError::Io {
            path: path.display().to_string(),
            source,
        })?;
        let g: Genesis = toml::from_str(&text).map_err(|e| GenesisError::Parse {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        g.validate()?;
        Ok(g)
    }

    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("genesis serialises")
    }

    pub fn validate(&self) -> Result<(), GenesisError> {
        self.state().map(|_| ())
    }

    /// The initial state.
    pub fn state(&self) -> Result<State, GenesisError> {
        if !valid_chain_id(&self.chain_id) {
            return Err(GenesisError::BadChainId(self.chain_id.clone()));
        }
        let mut accounts = BTreeMap::new();
        let mut supply = Amount::ZERO;
        for a in &self.accounts {
            supply = supply
                .checked_add(a.balance)
                .ok_or(GenesisError::SupplyOverflow)?;
            let acc = Account {
                balance: a.balance,
                nonce: 0,
            };
            if accounts.insert(a.address, acc).is_some() {
                return Err(GenesisError::DuplicateAccount(a.address));
            }
        }
        Ok(State::from_accounts(accounts))
    }

    /// Block 0: no transactions, the genesis state root.
    pub fn block(&self) -> Result<(Block, State), GenesisError> {
        let state = self.state()?;
        let header = BlockHeader {
            height: 0,
            parent_hash: Hash32::default(),
            timestamp_ms: self.timestamp_ms,
            tx_root: tx_root(&[]),
            state_root: state.root(),
            proposer: Address::default(),
            tx_count: 0,
        };
        Ok((
            Block {
                header,
                txs: vec![],
            },
            state,
        ))
    }
}

mod amount_as_tokens {
    use gridmesh_types::Amount;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(a: &Amount, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&a.to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Amount, D::Error> {
        let s = <String as Deserialize>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_round_trip_and_errors() {
        let g = Genesis::dev(Address([3; 32]));
        let text = g.to_toml();
        assert_eq!(toml::from_str::<Genesis>(&text).unwrap(), g);
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("g.toml");
        std::fs::write(&p, "chain_id = \"Bad Id\"\n").unwrap();
        assert!(matches!(
            Genesis::load(&p),
            Err(GenesisError::BadChainId(_))
        ));
        std::fs::write(&p, "chain_id = \"ok\"\nsurprise = 1\n").unwrap();
        assert!(matches!(Genesis::load(&p), Err(GenesisError::Parse { .. })));
        let a = Address([1; 32]);
        std::fs::write(
            &p,
            format!("chain_id = \"ok\"\n[[accounts]]\naddress = \"{a}\"\nbalance = \"1\"\n[[accounts]]\naddress = \"{a}\"\nbalance = \"2\"\n"),
        )
        .unwrap();
        assert!(matches!(
            Genesis::load(&p),
            Err(GenesisError::DuplicateAccount(_))
        ));
        std::fs::write(
            &p,
            format!("chain_id = \"ok\"\n[[accounts]]\naddress = \"{a}\"\nbalance = \"1.5\"\n"),
        )
        .unwrap();
        let g = Genesis::load(&p).unwrap();
        assert_eq!(g.accounts[0].balance, Amount(1_500_000));
    }
}
