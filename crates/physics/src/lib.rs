//! Physics for proof of generation (issue 6): where the sun is, and how much a PV system could
//! possibly have produced in an interval, so that a reading above it is held instead of paid.
//!
//! The results may be computed inside consensus, so they are the same bits on every platform:
//! transcendental functions come from `libm`, arithmetic is plain IEEE 754 double precision, and
//! tests pin outputs to the bit.

pub mod clearsky;
pub mod pog;
pub mod solar;
mod spa_terms;

pub use clearsky::{max_plane_irradiance_w_m2, pv_energy_bound_mwh, DEFAULT_MARGIN};
pub use solar::{solar_position, Observer, SolarPosition};
