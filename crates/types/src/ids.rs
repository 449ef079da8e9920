//! Fixed-size identifiers: account addresses and 32-byte hashes.
//!
//! Both print as 64 hex characters (the wire form: JSON, key files, URLs). An address also has a
//! checksummed text form for people, [`Address::checksummed`]: bech32m (BIP-350) with the prefix
//! `gm`, `gm1` and 58 more characters. Its checksum catches any typo of up to four characters, so
//! an address copied with a slip is refused instead of paid. Addresses parse from either form.

use std::fmt;
use std::str::FromStr;

use borsh::{BorshDeserialize, BorshSerialize};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Errors parsing a hex identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("{what} {input:?} is not 64 hex characters (32 bytes)")]
    BadHex { what: &'static str, input: String },
    #[error(
        "address {input:?} has a typo: its checksum does not match (compare it character by \
         character with the one you were given)"
    )]
    BadChecksum { input: String },
    #[error(
        "address {input:?} is not a gridmesh address: checksummed addresses start with `gm1` and \
         have 61 characters, hex ones 64 hex characters"
    )]
    NotAnAddress { input: String },
}

/// The human-readable prefix of checksummed addresses.
pub const ADDRESS_PREFIX: &str = "gm";

fn parse_hex(s: &str, what: &'static str) -> Result<[u8; 32], IdError> {
    let t = s.trim();
    let t = t.strip_prefix("0x").unwrap_or(t);
    let mut out = [0u8; 32];
    hex::decode_to_slice(t, &mut out).map_err(|_| IdError::BadHex {
        what,
        input: s.to_string(),
    })?;
    Ok(out)
}

macro_rules! hex32 {
    ($(#[$doc:meta])* $name:ident, $what:literal, $parse:path) => {
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
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                $parse(s).map($name)
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
    "address",
    parse_address
);
hex32!(
    /// A 32-byte BLAKE3 hash (of a transaction, a block header, a state commitment).
    Hash32,
    "hash",
    parse_hash
);

/// A hash from 64 hex characters, with or without a `0x` prefix.
fn parse_hash(s: &str) -> Result<[u8; 32], IdError> {
    parse_hex(s, "hash")
}

/// An address from its checksummed form (`gm1…`, either case) or from 64 hex characters (with
/// or without `0x`, no checksum).
fn parse_address(s: &str) -> Result<[u8; 32], IdError> {
    use bech32::primitives::decode::{CheckedHrpstring, UncheckedHrpstring};
    let t = s.trim();
    let prefixed = t
        .get(..ADDRESS_PREFIX.len() + 1)
        .is_some_and(|p| p.eq_ignore_ascii_case(&format!("{ADDRESS_PREFIX}1")));
    if !prefixed {
        return parse_hex(s, "address");
    }
    let not_an_address = || IdError::NotAnAddress {
        input: s.to_string(),
    };
    // Well formed (characters, length) first, so that only a checksum that fails is a typo.
    let unchecked = UncheckedHrpstring::new(t).map_err(|_| not_an_address())?;
    if unchecked.hrp().to_lowercase() != ADDRESS_PREFIX {
        return Err(not_an_address());
    }
    let checked =
        CheckedHrpstring::new::<bech32::Bech32m>(t).map_err(|_| IdError::BadChecksum {
            input: s.to_string(),
        })?;
    let bytes: Vec<u8> = checked.byte_iter().collect();
    bytes.try_into().map_err(|_| not_an_address())
}

impl Address {
    /// The checksummed text form for people: `gm1` and 58 characters (bech32m, BIP-350).
    pub fn checksummed(&self) -> String {
        let hrp = bech32::Hrp::parse_unchecked(ADDRESS_PREFIX);
        bech32::encode::<bech32::Bech32m>(hrp, &self.0)
            .expect("32 bytes are within bech32's length limit")
    }
}

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

    #[test]
    fn the_checksummed_form_round_trips_in_either_case() {
        let a = Address(std::array::from_fn(|i| (i * 37 + 11) as u8));
        let text = a.checksummed();
        assert!(text.starts_with("gm1"), "{text}");
        assert_eq!(text.len(), 61);
        assert_eq!(text.parse::<Address>().unwrap(), a);
        assert_eq!(text.to_uppercase().parse::<Address>().unwrap(), a);
        assert_eq!(format!("  {text} ").parse::<Address>().unwrap(), a);
        // A hash has no checksummed form.
        assert!(text.parse::<Hash32>().is_err());
    }

    #[test]
    fn a_typo_in_a_checksummed_address_is_refused_and_named() {
        const CHARSET: &[u8] = b"qpzry9x8gf2tvdw0s3jn54khce6mua7l";
        let a = Address([0xa5; 32]);
        let text = a.checksummed();
        // Every one-character slip after the prefix, with every other character.
        for i in 3..text.len() {
            for &c in CHARSET {
                if c == text.as_bytes()[i] {
                    continue;
                }
                let mut typo = text.clone().into_bytes();
                typo[i] = c;
                let typo = String::from_utf8(typo).unwrap();
                let e = typo.parse::<Address>().unwrap_err();
                assert_eq!(
                    e,
                    IdError::BadChecksum {
                        input: typo.clone()
                    },
                    "{typo}"
                );
                assert!(e.to_string().contains("has a typo"), "{e}");
            }
        }
        // Two neighbours swapped.
        let mut swapped = text.clone().into_bytes();
        let i = (3..text.len() - 1)
            .find(|&i| swapped[i] != swapped[i + 1])
            .unwrap();
        swapped.swap(i, i + 1);
        let swapped = String::from_utf8(swapped).unwrap();
        assert!(matches!(
            swapped.parse::<Address>(),
            Err(IdError::BadChecksum { .. })
        ));
        // A character left out, another prefix, a character bech32 does not use.
        for bad in [
            text[..text.len() - 1].to_string(),
            format!("bc1{}", &text[3..]),
            format!("{}b", &text[..text.len() - 1]),
        ] {
            assert!(bad.parse::<Address>().is_err(), "{bad}");
        }
        assert!(matches!(
            format!("{}b", &text[..text.len() - 1]).parse::<Address>(),
            Err(IdError::NotAnAddress { .. })
        ));
    }

    proptest::proptest! {
        #[test]
        fn every_address_round_trips_through_both_forms(bytes in proptest::array::uniform32(0u8..)) {
            let a = Address(bytes);
            proptest::prop_assert_eq!(a.checksummed().parse::<Address>().unwrap(), a);
            proptest::prop_assert_eq!(a.to_string().parse::<Address>().unwrap(), a);
        }
    }
}
