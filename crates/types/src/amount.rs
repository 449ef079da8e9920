//! Token amounts in integer base units.

use std::fmt;
use std::str::FromStr;

use borsh::{BorshDeserialize, BorshSerialize};
use serde::{Deserialize, Serialize};

/// Number of decimal places of the native token.
pub const TOKEN_DECIMALS: u32 = 6;
/// Base units in one token (10^[`TOKEN_DECIMALS`]).
pub const BASE_UNITS_PER_TOKEN: u128 = 10u128.pow(TOKEN_DECIMALS);

/// An amount of the native token, in base units (1 token = 10^6 base units).
///
/// Arithmetic is checked: consensus code uses [`Amount::checked_add`] and
/// [`Amount::checked_sub`] and turns `None` into a typed error, never a wrap-around.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    BorshSerialize,
    BorshDeserialize,
    Serialize,
    Deserialize,
)]
#[serde(transparent)]
pub struct Amount(pub u128);

impl Amount {
    /// Zero tokens.
    pub const ZERO: Amount = Amount(0);

    /// An amount of whole tokens. Panics on overflow (only for constants and tests).
    pub const fn from_tokens(tokens: u64) -> Amount {
        Amount(tokens as u128 * BASE_UNITS_PER_TOKEN)
    }

    /// The amount in base units.
    pub const fn base_units(self) -> u128 {
        self.0
    }

    pub fn checked_add(self, other: Amount) -> Option<Amount> {
        self.0.checked_add(other.0).map(Amount)
    }

    pub fn checked_sub(self, other: Amount) -> Option<Amount> {
        self.0.checked_sub(other.0).map(Amount)
    }

    pub fn is_zero(self) -> bool {
        self.0 == 0
    }
}

/// Errors parsing a decimal token amount such as `"12.5"`.
pub type AmountError = FixedError;

/// Errors parsing a non-negative fixed-point decimal (token amounts, kWh).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FixedError {
    #[error("number is empty")]
    Empty,
    #[error("{0:?} is not a non-negative decimal number (expected e.g. 12.5)")]
    NotDecimal(String),
    #[error("{0:?} has more than {1} decimal places")]
    TooPrecise(String, u32),
    #[error("{0:?} is too large")]
    Overflow(String),
}

/// Parses a non-negative decimal with at most `decimals` places into integer units of
/// 10^-`decimals`: `parse_fixed("12.5", 6) == Ok(12_500_000)`. Exact; no float is involved.
pub fn parse_fixed(s: &str, decimals: u32) -> Result<u128, FixedError> {
    let s = s.trim();
    if s.is_empty() {
        return Err(FixedError::Empty);
    }
    let (whole, frac) = match s.split_once('.') {
        Some((w, f)) => (w, f),
        None => (s, ""),
    };
    let digits_only = |x: &str| x.bytes().all(|b| b.is_ascii_digit());
    if (whole.is_empty() && frac.is_empty())
        || !digits_only(whole)
        || !digits_only(frac)
        || (s.contains('.') && frac.is_empty())
    {
        return Err(FixedError::NotDecimal(s.to_string()));
    }
    if frac.len() > decimals as usize {
        return Err(FixedError::TooPrecise(s.to_string(), decimals));
    }
    let overflow = || FixedError::Overflow(s.to_string());
    let whole: u128 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| overflow())?
    };
    let mut frac_units: u128 = 0;
    for (i, b) in frac.bytes().enumerate() {
        frac_units += u128::from(b - b'0') * 10u128.pow(decimals - 1 - i as u32);
    }
    whole
        .checked_mul(10u128.pow(decimals))
        .and_then(|w| w.checked_add(frac_units))
        .ok_or_else(overflow)
}

/// Prints integer units of 10^-`decimals` as a decimal without trailing zeros.
pub fn format_fixed(units: u128, decimals: u32) -> String {
    let one = 10u128.pow(decimals);
    let whole = units / one;
    let frac = units % one;
    if frac == 0 {
        format!("{whole}")
    } else {
        let frac = format!("{frac:0width$}", width = decimals as usize);
        format!("{whole}.{}", frac.trim_end_matches('0'))
    }
}

impl FromStr for Amount {
    type Err = AmountError;

    /// Parses a non-negative decimal number of tokens: `"12"`, `"12.5"`, `"0.000001"`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_fixed(s, TOKEN_DECIMALS).map(Amount)
    }
}

impl fmt::Display for Amount {
    /// Prints the amount in tokens with no trailing zeros: `12.5`, `3`, `0.000001`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_fixed(self.0, TOKEN_DECIMALS))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_decimal_tokens() {
        assert_eq!("12.5".parse::<Amount>().unwrap(), Amount(12_500_000));
        assert_eq!("12".parse::<Amount>().unwrap(), Amount(12_000_000));
        assert_eq!("0.000001".parse::<Amount>().unwrap(), Amount(1));
        assert_eq!(".5".parse::<Amount>().unwrap(), Amount(500_000));
        assert_eq!("0".parse::<Amount>().unwrap(), Amount(0));
    }

    #[test]
    fn rejects_bad_amounts() {
        for bad in ["", "-1", "1.", "1.2.3", "abc", "1e6", "+1", " . "] {
            assert!(bad.parse::<Amount>().is_err(), "{bad:?} should not parse");
        }
        assert!(matches!(
            "0.0000001".parse::<Amount>(),
            Err(AmountError::TooPrecise(..))
        ));
        assert!(matches!(
            "999999999999999999999999999999999999999".parse::<Amount>(),
            Err(AmountError::Overflow(_))
        ));
    }

    #[test]
    fn displays_without_trailing_zeros() {
        assert_eq!(Amount(12_500_000).to_string(), "12.5");
        assert_eq!(Amount(3_000_000).to_string(), "3");
        assert_eq!(Amount(1).to_string(), "0.000001");
        assert_eq!(Amount(0).to_string(), "0");
    }

    proptest! {
        #[test]
        fn display_parse_round_trip(units in any::<u128>()) {
            let a = Amount(units);
            prop_assert_eq!(a.to_string().parse::<Amount>().unwrap(), a);
        }
    }
}
