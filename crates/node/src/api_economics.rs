//! API of the token economics: the supply and its reconciliation, reward epochs.

use crate::api::ApiResult;
use crate::Shared;
use axum::extract::State;
use axum::Json;
use gridmesh_ledger::economics::{self, EpochRecord};
use gridmesh_types::Amount;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use utoipa::ToSchema;

/// The most closed epochs listed.
pub const MAX_EPOCHS_IN_VIEW: usize = 30;

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

fn tokens(base: u128) -> String {
    Amount(base).to_string()
}

/// Token supply and its reconciliation, community fund, bonds, escrow, the last reward epochs.
#[utoipa::path(get, path = "/v1/supply", responses((status = 200, body = SupplyView)))]
pub async fn get_supply(State(s): State<Arc<Shared>>) -> ApiResult<SupplyView> {
    let chain = s.chain.read().expect("chain lock");
    let state = chain.state();
    let kv = state.kv();
    let supply = economics::supply(kv);
    let cfg = economics::stored_config(kv);
    let accounted = state.total_supply().0;
    let balance = |a| chain.account(&a).balance.0;
    let mut epochs: Vec<EpochView> = kv
        .scan(&economics::epochs_prefix())
        .map(|(_, v)| gridmesh_ledger::market::decode::<EpochRecord>(v))
        .map(|e| EpochView {
            epoch: e.epoch,
            emission: tokens(e.emission),
            minted: tokens(e.minted),
            total_value: tokens(e.total_value),
            recipients: e.recipients,
            asset_payouts: tokens(e.asset_payouts),
        })
        .collect();
    epochs.reverse();
    epochs.truncate(MAX_EPOCHS_IN_VIEW);
    Ok(Json(SupplyView {
        height: chain.head().height,
        genesis: tokens(supply.genesis),
        minted: tokens(supply.minted),
        burned: tokens(supply.burned),
        expected: tokens(supply.expected()),
        accounted: tokens(accounted),
        reconciled: accounted == supply.expected(),
        emission_cap: tokens(cfg.emission_cap),
        community_fund: tokens(balance(economics::community_fund_account())),
        device_bonds: tokens(balance(gridmesh_ledger::market::device_bond_account())),
        escrow: tokens(balance(gridmesh_ledger::market::escrow_account())),
        epochs,
    }))
}
