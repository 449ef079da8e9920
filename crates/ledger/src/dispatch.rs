//! The one place transactions meet the concerns that apply them: a block's execution runs the
//! block-level rules (market, then economics), then each transaction through one exhaustive
//! match over [`TxKind`], checking chain and nonce first and counting the nonce last.
//!
//! The concerns ([`crate::devices`], [`crate::grid_operator`], [`crate::market`],
//! [`crate::economics`]) know nothing of each other's writes: what the market owes economics
//! comes back as [`Owed`] and is booked here. The rules are read once per block.

use crate::config::{stored_config, MarketConfig};
use crate::error::TxError;
use crate::market::{self, orders::NewOrder};
use crate::state::{Account, Event, Origin, Overlay, State, StateDiff, TxContext};
use crate::tx::{TxBody, TxKind};
use crate::{devices, economics, grid_operator};
use gridmesh_types::{Address, Amount};

/// A block in execution over its parent's state: begun with the block-level rules, fed the
/// block's transactions in order, finished into the state diff.
pub struct BlockExecution<'a> {
    o: Overlay<'a>,
    market: MarketConfig,
}

impl<'a> BlockExecution<'a> {
    /// Starts a block at `height` and header time `timestamp_ms` over `parent`: runs the rules
    /// that need no transaction (market clearing at gate closure, settlement, finality, pruning,
    /// then disputes and epochs). Deterministic in the state, height and header time.
    pub fn begin(parent: &'a State, height: u64, timestamp_ms: u64) -> BlockExecution<'a> {
        let mut o = parent.overlay();
        let market = stored_config(parent.kv());
        let owed = market::begin_block(&mut o, &market, height, timestamp_ms);
        economics::book(&mut o, &market, owed);
        economics::begin_block(&mut o, &market, timestamp_ms);
        BlockExecution { o, market }
    }

    /// Checks and applies one verified transaction. On error nothing changed.
    pub fn apply_tx(&mut self, body: &TxBody, ctx: &TxContext) -> Result<Vec<Event>, TxError> {
        apply_tx(&mut self.o, &self.market, body, ctx)
    }

    /// The changes the block made, with the commitment they lead to.
    pub fn finish(self) -> StateDiff {
        self.o.finish()
    }
}

/// The earliest time a block has work to do without any transaction (a gate closing, a
/// settlement, a deadline, a dispute or an epoch), so an engine that skips empty blocks still
/// makes that block.
pub fn next_due_ms(state: &State) -> Option<u64> {
    [
        market::next_due_ms(state.kv()),
        economics::next_due_ms(state.kv()),
    ]
    .into_iter()
    .flatten()
    .min()
}

fn apply_tx(
    o: &mut Overlay<'_>,
    cfg: &MarketConfig,
    body: &TxBody,
    ctx: &TxContext,
) -> Result<Vec<Event>, TxError> {
    if body.chain_id != ctx.chain_id {
        return Err(TxError::WrongChainId {
            expected: ctx.chain_id.to_string(),
            got: body.chain_id.clone(),
        });
    }
    let account = o.account(&body.sender);
    let nonce = account.nonce;
    if body.nonce < nonce {
        return Err(TxError::StaleNonce {
            expected: nonce,
            got: body.nonce,
        });
    }
    if body.nonce > nonce {
        return Err(TxError::FutureNonce {
            expected: nonce,
            got: body.nonce,
        });
    }
    let from = Origin {
        sender: body.sender,
        ctx,
    };
    // Counted before any handler writes, so that this error too changes nothing.
    let next_nonce = nonce.checked_add(1).ok_or(TxError::NonceExhausted)?;
    // Every handler checks everything before its first write, so an error changes nothing.
    let events = match &body.kind {
        // The hot path: the sender's account is read once, and its balance and nonce written once.
        TxKind::Transfer { to, amount } => {
            return transfer(o, body.sender, account, next_nonce, *to, *amount)
                .map(|()| Vec::new());
        }
        TxKind::RegisterDevice { kind, capacity_w } => {
            devices::register_device(o, cfg, from, *kind, *capacity_w)?
        }
        TxKind::PlaceOrder {
            slot,
            side,
            energy_mwh,
            price_per_kwh,
            location,
        } => market::orders::place_order(
            o,
            cfg,
            from,
            NewOrder {
                slot: *slot,
                side: *side,
                energy_mwh: *energy_mwh,
                price_per_kwh: *price_per_kwh,
                location,
            },
        )?,
        TxKind::CancelOrder { slot, order_id } => {
            market::orders::cancel_order(o, cfg, from, *slot, *order_id)?
        }
        TxKind::SubmitReading {
            slot,
            import_mwh,
            export_mwh,
        } => {
            let (events, owed) =
                market::settlement::submit_reading(o, cfg, from, *slot, *import_mwh, *export_mwh)?;
            economics::book(o, cfg, owed);
            events
        }
        TxKind::SetEnvelope {
            slot,
            location,
            import_mwh,
            export_mwh,
        } => grid_operator::set_envelope(o, cfg, from, *slot, location, *import_mwh, *export_mwh)?,
        TxKind::SetTariff {
            slot,
            retail_per_kwh,
            feed_in_per_kwh,
        } => grid_operator::set_tariff(
            o,
            cfg,
            from,
            *slot,
            gridmesh_market::Tariff {
                retail_per_kwh: *retail_per_kwh,
                feed_in_per_kwh: *feed_in_per_kwh,
            },
        )?,
        TxKind::GridEvent { event, at_ms } => {
            grid_operator::grid_event(o, cfg, from, *event, *at_ms)?
        }
        TxKind::RegisterDeviceKey {
            device,
            info,
            bond,
            device_signature,
        } => devices::register_device_key(o, cfg, from, device, info, *bond, device_signature)?,
        TxKind::TransferDevice { device, to } => devices::transfer_device(o, from, device, to)?,
        TxKind::DecommissionDevice { device } => devices::decommission_device(o, from, device)?,
        TxKind::SubmitDeviceReadings { readings } => {
            devices::submit_device_readings(o, cfg, from, readings)?
        }
        TxKind::ReportFraud {
            device,
            slot,
            evidence,
        } => economics::report_fraud(o, cfg, from, device, *slot, evidence)?,
        TxKind::DismissDispute { device, slot } => {
            economics::dismiss_dispute(o, cfg, from, device, *slot)?
        }
        TxKind::RequestFlexibility {
            slot,
            area,
            direction,
            value_per_kwh,
        } => economics::request_flexibility(o, cfg, from, *slot, area, *direction, *value_per_kwh)?,
        TxKind::CreateAsset { name, holders } => economics::create_asset(o, from, name, holders)?,
        TxKind::TransferShares { asset, to, shares } => {
            economics::transfer_shares(o, from, asset, to, *shares)?
        }
    };
    let mut sender = o.account(&body.sender);
    sender.nonce = next_nonce;
    o.set(body.sender, sender);
    Ok(events)
}

/// `Transfer` from `from` (whose account is `sender`), counting its nonce: needs the funds even to
/// oneself (then only the nonce moves).
fn transfer(
    o: &mut Overlay<'_>,
    from: Address,
    mut sender: Account,
    next_nonce: u64,
    to: Address,
    amount: Amount,
) -> Result<(), TxError> {
    let new_balance = sender
        .balance
        .checked_sub(amount)
        .ok_or(TxError::InsufficientFunds {
            balance: sender.balance,
            needed: amount,
        })?;
    if to != from {
        let mut recipient = o.account(&to);
        recipient.balance = recipient
            .balance
            .checked_add(amount)
            .ok_or(TxError::BalanceOverflow)?;
        sender.balance = new_balance;
        o.set(to, recipient);
    }
    sender.nonce = next_nonce;
    o.set(from, sender);
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::devices::{HoldReason, ReadingStatus};
    use crate::market::SettlementBasis;
    use gridmesh_types::Address;

    /// What a held reading, a settlement and a dispute store is the check and its numbers, never
    /// words: the bytes are pinned here, so no rewording of a message can reach a state root.
    #[test]
    fn state_holds_checks_and_numbers_not_words() {
        let held = ReadingStatus::Held {
            reason: HoldReason::AboveClearSky { bound_mwh: 1234 },
        };
        // Held = 2, AboveClearSky = 2, then the bound, little-endian.
        assert_eq!(
            borsh::to_vec(&held).unwrap(),
            [2, 2, 0xd2, 0x04, 0, 0, 0, 0, 0, 0]
        );
        let area = ReadingStatus::Held {
            reason: HoldReason::AreaConservation {
                head_meter: Address([7; 32]),
                claimed_mwh: 1,
                bound_mwh: 2,
            },
        };
        let bytes = borsh::to_vec(&area).unwrap();
        assert_eq!(bytes.len(), 1 + 1 + 32 + 8 + 8);
        assert_eq!(&bytes[..2], &[2, 4]);
        let finding = crate::economics::DisputeFinding::Physics {
            reason: HoldReason::AboveRating { max_mwh: 5 },
        };
        assert_eq!(
            borsh::to_vec(&finding).unwrap(),
            [1, 1, 5, 0, 0, 0, 0, 0, 0, 0]
        );
        let finding = crate::economics::DisputeFinding::Commitment {
            contradiction: crate::telemetry::Contradiction::LastSampleMismatch,
        };
        assert_eq!(borsh::to_vec(&finding).unwrap(), [0, 3]);
        // One basis instead of three flags: provisional estimate 0, reading 1, late 2, estimate 3.
        for (b, byte) in [
            (SettlementBasis::ProvisionalEstimate, 0u8),
            (SettlementBasis::Reading, 1),
            (SettlementBasis::LateReading, 2),
            (SettlementBasis::Estimate, 3),
        ] {
            assert_eq!(borsh::to_vec(&b).unwrap(), [byte]);
        }
        assert!(!SettlementBasis::ProvisionalEstimate.is_final());
        assert!(SettlementBasis::Estimate.is_final() && SettlementBasis::Estimate.is_estimated());
        assert!(SettlementBasis::LateReading.is_late() && !SettlementBasis::Reading.is_late());
    }
}
