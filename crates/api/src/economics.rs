//! The token economics as the API shows it: the supply and its reconciliation, reward epochs.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// One closed reward epoch.
#[derive(Serialize, Deserialize, ToSchema, Debug, Clone)]
pub struct EpochView {
    pub epoch: u64,
    /// What the schedule allowed, tokens.
    pub emission: String,
    pub minted: String,
    /// Sum of the recipients' grid value, tokens.
    pub total_value: String,
    pub recipients: u32,
    /// Paid out by community assets to their holders, tokens.
    pub asset_payouts: String,
}

/// The token supply, reconciled: every balance (accounts, escrow, bonds, community fund) must sum
/// to genesis + minted - burned.
#[derive(Serialize, Deserialize, ToSchema, Debug, Clone)]
pub struct SupplyView {
    pub height: u64,
    pub genesis: String,
    pub minted: String,
    pub burned: String,
    /// genesis + minted - burned.
    pub expected: String,
    /// The sum of every balance.
    pub accounted: String,
    pub reconciled: bool,
    pub emission_cap: String,
    pub community_fund: String,
    pub device_bonds: String,
    pub escrow: String,
    /// The latest closed epochs, newest first.
    pub epochs: Vec<EpochView>,
}
