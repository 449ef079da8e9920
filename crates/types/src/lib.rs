//! Units and identifiers shared by every gridmesh crate.
//!
//! Everything that enters consensus is an integer: token amounts are [`Amount`]s in base units
//! (1 token = 10^6 base units), identifiers are fixed-size byte arrays. Human-readable forms
//! (decimal token strings, hex identifiers) are parsed and printed here, once.

mod amount;
mod ids;
mod net;
pub mod units;

pub use amount::{
    format_fixed, parse_fixed, Amount, AmountError, FixedError, BASE_UNITS_PER_TOKEN,
    TOKEN_DECIMALS,
};
pub use ids::{Address, Hash32, IdError, ADDRESS_PREFIX};
pub use net::{HostPort, HostPortError};
