//! The genesis: chain id, start time, initial balances and, for a network of several validators,
//! the validator set.
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
//!
//! [[validators]]               # none: the solo engine; one or more: BFT consensus
//! public_key = "<64 hex characters>"   # the validator's ed25519 key (signs votes)
//! p2p_address = "10.0.0.5:7100"        # where its peers reach it: an IP or a host name
//! power = 1                            # voting power (see below)
//!
//! [market]                     # optional: the energy market's rules (defaults shown)
//! mechanism = "pay-as-clear"   # pay-as-bid, pay-as-offer, huang, community
//! gate_closure_minutes = 5
//! correction_window_minutes = 60
//! late_window_minutes = 1440
//! max_import_kw = "50"
//! # shortfall_price_per_kwh = "0.40"   # default: the slot's retail tariff
//! # grid_operator = "<hex>"; market_operator = "<hex>"   # who receives fees and spreads; the
//! #   grid operator also sends envelopes and islanding events
//! # island_price_cap_per_kwh = "1.0"  # highest clearing price while islanded
//! # min_device_bond = "10"             # tokens a device with its own key must bond at least
//! # device_bond_per_kw = "1"           # tokens per kW of a keyed PV, battery or EV charger
//! #                                    #   (the bond is the larger of the two)
//! # order_deposit = "0.1"              # tokens every order locks until its slot clears
//! # min_order_kwh = "0.001"            # the smallest order
//! [market.max_device_kw]       # the highest rating of a device of each kind, kW
//! pv = "1000"
//! battery = "1000"
//! ev_charger = "350"
//! load = "100"
//! meter = "10000"
//! [[market.tariffs]]           # time of use: from this slot of the day (0..95) on
//! from_slot = 0
//! retail_per_kwh = "0.30"
//! feed_in_per_kwh = "0.08"
//! [[market.grid_fees]]         # one per level of the market hierarchy, root first
//! constant_per_kwh = "0.01"
//! percent = "0"
//!
//! [economics]                  # optional: rewards and slashing (defaults shown)
//! epoch_slots = 96             # a reward epoch: one day of 15-minute slots
//! epoch_emission = "10000"     # tokens minted in epoch 0, shared by grid value
//! halving_epochs = 365         # the emission halves every year
//! emission_cap = "5000000"     # never more than this minted in all
//! dispute_window_minutes = 10080
//! slash_percent = 100          # of a device's bond, for a proven false reading
//! reporter_percent = 50        # of the slash to the reporter; the rest to the community fund
//! ```
//!
//! The genesis block's `parent_hash` commits to the validator set (zero when there is none), so
//! nodes given different sets disagree on the genesis hash and refuse to share a data directory.
//! The BFT engine (simplex) counts one vote per validator: every validator must have the same
//! power, and a quorum is any 2f+1 of n = 3f+1 validators.

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

/// A validator of a BFT network.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenesisValidator {
    /// Its ed25519 public key: signs its votes and authenticates its p2p connections.
    pub public_key: Address,
    /// Where the other nodes reach it (`host:port`; a host name is resolved by each node when
    /// it starts). Not part of the genesis hash: a validator may move.
    pub p2p_address: gridmesh_types::HostPort,
    /// Voting power; the engine counts one vote per validator, so all must be equal.
    #[serde(default = "one")]
    pub power: u64,
}

fn one() -> u64 {
    1
}

/// Most validators a genesis may list (each vote is checked by every validator, so cost grows
/// with n²; the BFT engine's certificates are sized for this bound).
pub const MAX_VALIDATORS: usize = 100;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Genesis {
    pub chain_id: String,
    #[serde(default)]
    pub timestamp_ms: u64,
    #[serde(default)]
    pub accounts: Vec<GenesisAccount>,
    /// Empty for a single node (solo engine).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub validators: Vec<GenesisValidator>,
    /// The market's rules; the defaults of [`crate::config::MarketConfig`] when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub market: Option<crate::config::MarketFile>,
    /// Rewards, emission and slashing; the defaults of [`crate::economics::EconomicsConfig`]
    /// when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub economics: Option<crate::economics::EconomicsFile>,
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
    #[error("genesis total supply overflows (the balances plus the economics' emission cap must fit in u128 base units)")]
    SupplyOverflow,
    #[error("genesis lists validator {0} twice")]
    DuplicateValidator(Address),
    #[error("genesis lists two validators at p2p address {0}")]
    DuplicateValidatorAddress(gridmesh_types::HostPort),
    #[error("genesis lists {0} validators, at most {MAX_VALIDATORS} are supported")]
    TooManyValidators(usize),
    #[error(
        "validator {key} has power {power} but {first} has {first_power}: the BFT engine (simplex) \
         counts one vote per validator, so every validator must have the same power"
    )]
    UnequalPower {
        key: Address,
        power: u64,
        first: Address,
        first_power: u64,
    },
    #[error("validator {0} has power 0; list only validators that vote")]
    ZeroPower(Address),
    #[error("genesis [market]: {0}")]
    Market(String),
    #[error("genesis [economics]: {0}")]
    Economics(String),
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
            validators: vec![],
            market: None,
            economics: None,
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
        self.validator_set_hash()?;
        self.state().map(|_| ())
    }

    /// The commitment to the validator set the genesis block carries as its parent hash (zero for
    /// none), after checking the set.
    pub fn validator_set_hash(&self) -> Result<Hash32, GenesisError> {
        if self.validators.is_empty() {
            return Ok(Hash32::default());
        }
        if self.validators.len() > MAX_VALIDATORS {
            return Err(GenesisError::TooManyValidators(self.validators.len()));
        }
        let mut keys = std::collections::BTreeSet::new();
        let mut addrs = std::collections::BTreeSet::new();
        let first = &self.validators[0];
        let mut h = blake3::Hasher::new();
        h.update(b"gridmesh/validators/v1");
        for v in &self.validators {
            if v.power == 0 {
                return Err(GenesisError::ZeroPower(v.public_key));
            }
            if v.power != first.power {
                return Err(GenesisError::UnequalPower {
                    key: v.public_key,
                    power: v.power,
                    first: first.public_key,
                    first_power: first.power,
                });
            }
            if !keys.insert(v.public_key) {
                return Err(GenesisError::DuplicateValidator(v.public_key));
            }
            if !addrs.insert(v.p2p_address.clone()) {
                return Err(GenesisError::DuplicateValidatorAddress(
                    v.p2p_address.clone(),
                ));
            }
        }
        // Order-independent: the set, sorted by key.
        for v in self.validators_sorted() {
            h.update(&v.public_key.0);
            h.update(&v.power.to_le_bytes());
        }
        Ok(Hash32(*h.finalize().as_bytes()))
    }

    /// The validators in key order (the order the BFT engine indexes them in).
    pub fn validators_sorted(&self) -> Vec<&GenesisValidator> {
        let mut v: Vec<&GenesisValidator> = self.validators.iter().collect();
        v.sort_by_key(|v| v.public_key);
        v
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
        let market = match &self.market {
            Some(m) => m.to_config().map_err(GenesisError::Market)?,
            None => crate::config::MarketConfig::default(),
        };
        let economics = match &self.economics {
            Some(e) => e.to_config().map_err(GenesisError::Economics)?,
            None => crate::economics::EconomicsConfig::default(),
        };
        // Rewards mint up to the emission cap on top of the genesis supply: all of it must fit
        // in the supply's integer, so no mint can ever overflow it.
        if supply.0.checked_add(economics.emission_cap).is_none() {
            return Err(GenesisError::SupplyOverflow);
        }
        // A slot's records may only leave the state once nothing can read them: its disputes
        // and its epoch's rewards (a day after it is final) are over.
        let needed = u64::from(economics.dispute_window_minutes) + 24 * 60;
        if market.history_days > 0 && u64::from(market.history_days) * 24 * 60 < needed {
            return Err(GenesisError::Market(format!(
                "history_days {} is shorter than the dispute window plus an epoch ({} days)",
                market.history_days,
                needed.div_ceil(24 * 60)
            )));
        }
        let mut entries = vec![crate::config::genesis_entry(&market)];
        entries.extend(crate::economics::genesis_entries(
            &economics,
            self.timestamp_ms,
            supply.0,
        ));
        let kv = crate::kv::KvSpace::from_entries(entries);
        Ok(State::from_parts(accounts, kv))
    }

    /// Block 0: no transactions, the genesis state root.
    pub fn block(&self) -> Result<(Block, State), GenesisError> {
        let state = self.state()?;
        let header = BlockHeader {
            height: 0,
            parent_hash: self.validator_set_hash()?,
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

    #[test]
    fn validators_are_checked_and_committed_to() {
        let v = |k: u8, port: u16, power: u64| GenesisValidator {
            public_key: Address([k; 32]),
            p2p_address: format!("127.0.0.1:{port}").parse().unwrap(),
            power,
        };
        let mut g = Genesis::dev(Address([3; 32]));
        let solo = g.block().unwrap().0.hash();
        g.validators = vec![v(1, 7001, 1), v(2, 7002, 1)];
        let text = g.to_toml();
        assert_eq!(toml::from_str::<Genesis>(&text).unwrap(), g);
        let two = g.block().unwrap().0.hash();
        assert_ne!(solo, two, "the validator set is part of the genesis hash");
        g.validators.reverse();
        assert_eq!(
            g.block().unwrap().0.hash(),
            two,
            "listing order does not matter"
        );
        g.validators.push(v(3, 7003, 2));
        assert!(matches!(
            g.validate(),
            Err(GenesisError::UnequalPower { .. })
        ));
        g.validators[2] = v(2, 7003, 1);
        assert!(matches!(
            g.validate(),
            Err(GenesisError::DuplicateValidator(_))
        ));
        g.validators[2] = v(3, 7001, 1);
        assert!(matches!(
            g.validate(),
            Err(GenesisError::DuplicateValidatorAddress(_))
        ));
        g.validators[2] = v(3, 7003, 0);
        assert!(matches!(g.validate(), Err(GenesisError::ZeroPower(_))));
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("g.toml");
        std::fs::write(
            &p,
            "chain_id = \"ok\"\n[[validators]]\npublic_key = \"zz\"\np2p_address = \"127.0.0.1:1\"\n",
        )
        .unwrap();
        let err = Genesis::load(&p).unwrap_err().to_string();
        assert!(err.contains("public_key"), "{err}");
    }
}
