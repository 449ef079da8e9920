//! Energy agents: forecasts at 15-minute resolution, home schedules, bidding strategies and
//! community coordination.
//!
//! - [`data`]: the public reference data turned into 15-minute series (pure parsers over text):
//!   a test reference year's weather (DWD TRY, hourly), PV production of an array under it, and a
//!   household's load from the BDEW standard load profile.
//! - [`forecast`]: forecasters (persistence, seasonal naive, smart persistence for PV) behind one
//!   trait, so evaluation and agents do not care which one runs; EV availability from plug-in
//!   history.
//! - [`learned`]: gradient-boosted trees (smartcore) on calendar features, the recent past, the
//!   clear-sky profile and a weather forecast.
//! - [`schedule`]: a home's least-cost schedule of battery, EV and deferrable loads (a linear
//!   program; binaries only where the relaxation would import and export at once), with
//!   infeasible requests explained and a safe fallback); [`dp`] plans the homes whose program
//!   decouples into one store at a time exactly without the simplex.
//! - [`lp`] holds a program as data (and writes it as MPS for HiGHS); [`simplex`] solves the
//!   continuous ones, a bounded dual simplex with a dense basis inverse sized for a home's
//!   program, and microlp the rest (binaries, or anything the dual simplex cannot verify).
//! - [`replan`]: whether a plan still holds at a re-plan (the devices where it put them, the
//!   forecasts unchanged), so that a home re-plans only when its inputs changed.
//! - [`thermal`]: heat pumps as thermal storage: a building or a hot-water tank as a first-order
//!   RC model, the COP by outdoor temperature, the comfort band and the thermostat.
//! - [`strategy`]: bidding strategies (zero intelligence, gsy-e's linear ramp, the optimising
//!   agent bidding its schedule at its marginal values) and the ledger's integer orders.
//! - [`community`]: a coordinator that keeps the transformer within its limit by allocating
//!   import capacity per slot, as operating envelopes do (valley filling).
//! - [`study`]: a community over weeks under different agents (bills, self-sufficiency,
//!   transformer peak, battery cycles), cleared by the market crate.
//! - [`eval`]: rolling-origin evaluation: MAE, RMSE and skill against persistence by horizon.
//!
//! Floats throughout: forecasts never enter consensus; agents turn them into orders (integers).

pub mod community;
pub mod data;
pub(crate) mod dp;
pub mod eval;
pub mod forecast;
pub mod learned;
pub mod lp;
pub mod replan;
pub mod schedule;
pub mod simplex;
pub mod strategy;
pub mod study;
pub mod thermal;

/// Quarter hours in a day.
pub const SLOTS_PER_DAY: usize = 96;
