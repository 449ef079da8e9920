//! API of the token economics: the supply and its reconciliation, reward epochs.

use crate::api::ApiResult;
use crate::Shared;
use axum::extract::State;
use axum::Json;
pub use gridmesh_api::economics::*;
use gridmesh_ledger::economics::{self, EpochRecord};
use gridmesh_ledger::readers::EconomicsReader;
use gridmesh_types::Amount;
use std::sync::Arc;

/// The most closed epochs listed.
pub const MAX_EPOCHS_IN_VIEW: usize = 30;

fn tokens(base: u128) -> String {
    Amount(base).to_string()
}

/// Token supply and its reconciliation, community fund, bonds, escrow, the last reward epochs.
#[utoipa::path(get, path = "/v1/supply", responses((status = 200, body = SupplyView)))]
pub async fn get_supply(State(s): State<Arc<Shared>>) -> ApiResult<SupplyView> {
    let chain = s.chain.read().expect("chain lock");
    let state = chain.state();
    let supply = state.supply();
    let cfg = state.economics_config();
    let accounted = state.total_supply().0;
    let balance = |a| chain.account(&a).balance.0;
    let mut epochs: Vec<EpochView> = state
        .epochs()
        .into_iter()
        .map(|e: EpochRecord| EpochView {
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
        device_bonds: tokens(balance(gridmesh_ledger::devices::device_bond_account())),
        escrow: tokens(balance(gridmesh_ledger::market::escrow_account())),
        epochs,
    }))
}
