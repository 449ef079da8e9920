//! The state machine's explicit limits: what one slot, one owner and one device may hold. Checked
//! at admission and in the handlers; the error messages quote them.

use gridmesh_types::units::SLOTS_PER_DAY;

/// Most orders one slot accepts.
pub const MAX_ORDERS_PER_SLOT: u32 = 100_000;
/// The largest order deposit a genesis may set: 1,000 tokens.
pub const MAX_ORDER_DEPOSIT: u128 = 1_000_000_000;
/// How far ahead orders may be placed: 7 days of slots.
pub const MAX_SLOTS_AHEAD: u64 = 7 * SLOTS_PER_DAY;
/// Most devices one account may register.
pub const MAX_DEVICES_PER_OWNER: u32 = 16;
/// Energy a device can deliver in one 15-minute slot per watt of rating, in mWh (0.25 Wh).
pub const MWH_PER_W_PER_SLOT: u64 = 250;
/// Most time-of-use tariff periods per day.
pub const MAX_TARIFF_PERIODS: usize = 96;
/// The highest device rating a genesis may allow: 100 MW.
pub const MAX_DEVICE_RATING_W: u64 = 100_000_000;
/// The highest bond per kW a genesis may ask: 1,000 tokens.
pub const MAX_DEVICE_BOND_PER_KW: u128 = 1_000_000_000;
/// Most raw samples one device reading may commit to (10 per second over a slot).
pub const MAX_SAMPLES_PER_READING: u32 = 9_000;
