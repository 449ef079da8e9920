//! Fixed-size identifiers: account addresses and 32-byte hashes.

use std::fmt;
use std::str::FromStr;

use borsh::{BorshDeserialize, BorshSerialize};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Errors parsing a hex identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("{what} {input:?} is not 64 hex characters (32 bytes)")]
    BadHex { what: &'static str, input: String },
}

macro_rules! hex32 {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(
            Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, BorshSerialize, BorshDeserialize,
        )]
        pub struct $name(pub [u8; 32]);

        impl $name {
            pub const fn as_bytes(&self) -> &[u8; 32] {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&hex::encode(self.0))
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self)
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            /// Parses 64 hex characters, with or without a `0x` prefix.
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                let t = s.trim();
                let t = t.strip_prefix("0x").unwrap_or(t);
                let mut out = [0u8; 32];
                hex::decode_to_slice(t, &mut out).map_err(|_| IdError::BadHex {
                    what: $what,
                    input: s.to_string(),
                })?;
                Ok($name(out))
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.to_string())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <String as Deserialize>::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

hex32!(
    /// An account address: the account's ed25519 public key (32 bytes, printed as 64 hex characters).
    Address,
    "address"
);
hex32!(
    /// A 32-byte BLAKE3 hash (of a transaction, a block header, a state commitment).
    Hash32,
    "hash"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_and_errors() {
        let a = Address([7; 32]);
        let s = a.to_string();
        assert_eq!(s.len(), 64);
        assert_eq!(s.parse::<Address>().unwrap(), a);
        assert_eq!(format!("0x{s}").parse::<Address>().unwrap(), a);
        assert!("abc".parse::<Address>().is_err());
        assert!("zz".repeat(32).parse::<Hash32>().is_err());
        let json = serde_json::to_string(&a).unwrap();
        assert_eq!(serde_json::from_str::<Address>(&json).unwrap(), a);
    }
}
