//! Settlement of what was metered: members' readings, each seller's delivered energy split over
//! its trades, estimates for missing readings and their finality. Returns what it owes economics
//! (verified deliveries and sellers' revenue) instead of booking it.

use gridmesh_market::{self as mk, value_floor};
use gridmesh_types::units::slot_start_ms;
use gridmesh_types::{Address, Amount};

use super::escrow_account;
use super::records::{
    Reading, SellerPosition, SettlementBasis, SettlementStatus, SlotRecord, TradeRecord,
    TradeSettlement,
};
use super::{Delivered, Owed};
use crate::arith::share_of;
use crate::config::MarketConfig;
use crate::devices::{check_device_readings, owner_capacity, owner_has_device};
use crate::error::{MarketTxError, TxError};
use crate::kv::{decode as dec, encode as enc, keys, Tag};
use crate::limits::MWH_PER_W_PER_SLOT;
use crate::state::{Event, Origin, Overlay};

/// `SubmitReading`: a member's meter reading of an ended slot; a late one settles its trades for
/// good at once. Returns the events and what the settlement owes economics.
pub(crate) fn submit_reading(
    o: &mut Overlay<'_>,
    cfg: &MarketConfig,
    from: Origin<'_>,
    slot: u64,
    import_mwh: u64,
    export_mwh: u64,
) -> Result<(Vec<Event>, Owed), TxError> {
    let sender = from.sender;
    let now = from.now_ms();
    let ctx = from.ctx;
    let ends_ms = slot_start_ms(slot + 1);
    if now < ends_ms {
        return Err(MarketTxError::SlotNotEnded { slot, ends_ms }.into());
    }
    let deadline_ms = cfg.final_ms(slot);
    if now >= deadline_ms {
        return Err(MarketTxError::ReadingTooLate { slot, deadline_ms }.into());
    }
    // Most readings export nothing (no PV, night): they only need a device, the first found.
    if export_mwh == 0 {
        if !owner_has_device(o, &sender) {
            return Err(MarketTxError::NoDevice.into());
        }
    } else {
        let capacity = owner_capacity(o, &sender);
        if !capacity.any {
            return Err(MarketTxError::NoDevice.into());
        }
        let max_export = capacity.producing_mwh;
        if export_mwh > max_export {
            return Err(MarketTxError::ExportAboveCapacity {
                export_mwh,
                max_mwh: max_export,
            }
            .into());
        }
    }
    let max_import = cfg.max_import_w.saturating_mul(MWH_PER_W_PER_SLOT);
    if import_mwh > max_import {
        return Err(MarketTxError::ImportAboveLimit {
            import_mwh,
            max_mwh: max_import,
        }
        .into());
    }
    let position: Option<SellerPosition> = o.kv_get(&keys::seller(slot, &sender)).map(|b| dec(&b));
    if matches!(&position, Some(p) if p.status == SettlementStatus::Final) {
        return Err(MarketTxError::AlreadySettled(slot).into());
    }
    o.kv_put(
        keys::reading(slot, &sender),
        enc(&Reading {
            import_mwh,
            export_mwh,
            height: ctx.height,
        }),
    );
    let mut settled_trades = 0;
    let mut owed = Owed::default();
    if let Some(p) = position {
        if p.status == SettlementStatus::Provisional {
            // A late reading: settle for good with what was metered.
            settled_trades = p.trades.len() as u32;
            owed = settle_for_good(
                o,
                cfg,
                slot,
                &sender,
                p,
                export_mwh,
                SettlementBasis::LateReading,
            );
            let mut rec: SlotRecord = dec(&o
                .kv_get(&keys::slot(slot))
                .expect("a settled slot has a record"));
            rec.provisional_sellers = rec
                .provisional_sellers
                .checked_sub(1)
                .expect("a provisional seller is counted in its slot");
            if rec.provisional_sellers == 0 {
                rec.settlement = SettlementStatus::Final;
                o.kv_delete(keys::slot_due(Tag::FinalDue, cfg.final_ms(slot), slot));
            }
            o.kv_put(keys::slot(slot), enc(&rec));
        }
    }
    Ok((
        vec![Event::ReadingRecorded {
            slot,
            settled_trades,
        }],
        owed,
    ))
}

/// Settles `slot` at the end of its correction window: first the proof-of-generation check of its
/// device readings, then every seller by its reading or, without one, provisionally by estimate.
pub(crate) fn settle_slot(o: &mut Overlay<'_>, cfg: &MarketConfig, slot: u64) -> Owed {
    let mut owed = Owed {
        verified: check_device_readings(o, cfg, slot)
            .into_iter()
            .map(|r| (slot, r))
            .collect(),
        ..Owed::default()
    };
    let Some(bytes) = o.kv_get(&keys::slot(slot)) else {
        return owed;
    };
    let mut rec: SlotRecord = dec(&bytes);
    let positions = o.kv_scan(&keys::group(Tag::Seller, slot));
    let mut provisional = 0u32;
    for (k, v) in positions {
        let seller = keys::address_at_end(&k);
        let p: SellerPosition = dec(&v);
        let reading: Option<Reading> = o.kv_get(&keys::reading(slot, &seller)).map(|b| dec(&b));
        match reading {
            Some(r) => owed.append(settle_for_good(
                o,
                cfg,
                slot,
                &seller,
                p,
                r.export_mwh,
                SettlementBasis::Reading,
            )),
            None => {
                provisional = provisional.saturating_add(1);
                settle_by_estimate(o, slot, &seller, p);
            }
        }
    }
    rec.provisional_sellers = provisional;
    rec.settlement = if provisional > 0 {
        o.kv_put(
            keys::slot_due(Tag::FinalDue, cfg.final_ms(slot), slot),
            Vec::new(),
        );
        SettlementStatus::Provisional
    } else {
        SettlementStatus::Final
    };
    o.kv_put(keys::slot(slot), enc(&rec));
    owed
}

/// Makes final the estimates of `slot` at the end of its late window: nothing was delivered.
pub(crate) fn finalize_slot(o: &mut Overlay<'_>, cfg: &MarketConfig, slot: u64) -> Owed {
    let mut owed = Owed::default();
    let Some(bytes) = o.kv_get(&keys::slot(slot)) else {
        return owed;
    };
    let mut rec: SlotRecord = dec(&bytes);
    for (k, v) in o.kv_scan(&keys::group(Tag::Seller, slot)) {
        let p: SellerPosition = dec(&v);
        if p.status == SettlementStatus::Provisional {
            let seller = keys::address_at_end(&k);
            // The estimate becomes final: nothing was delivered.
            owed.append(settle_for_good(
                o,
                cfg,
                slot,
                &seller,
                p,
                0,
                SettlementBasis::Estimate,
            ));
        }
    }
    rec.provisional_sellers = 0;
    rec.settlement = SettlementStatus::Final;
    o.kv_put(keys::slot(slot), enc(&rec));
    owed
}

/// Records a seller's trades as settled by the estimate "nothing delivered", provisionally:
/// the funds stay in escrow until a late reading or the end of the late window.
fn settle_by_estimate(o: &mut Overlay<'_>, slot: u64, seller: &Address, p: SellerPosition) {
    for &i in &p.trades {
        let mut t: TradeRecord = dec(&o.kv_get(&keys::trade(slot, i)).expect("trade"));
        t.settlement = Some(settlement_of(&t, 0, SettlementBasis::ProvisionalEstimate));
        o.kv_put(keys::trade(slot, i), enc(&t));
    }
    o.kv_put(
        keys::seller(slot, seller),
        enc(&SellerPosition {
            trades: p.trades,
            status: SettlementStatus::Provisional,
        }),
    );
}

/// What a trade's settlement moves when `delivered_mwh` of it was delivered.
fn settlement_of(t: &TradeRecord, delivered_mwh: u64, basis: SettlementBasis) -> TradeSettlement {
    let tr = &t.trade;
    let shortfall = tr
        .energy_mwh
        .checked_sub(delivered_mwh)
        .expect("a trade delivers at most its energy");
    let buyer_paid = value_floor(delivered_mwh, tr.buyer_price_per_kwh);
    let seller_received = value_floor(delivered_mwh, tr.seller_price_per_kwh);
    let grid_fees = value_floor(delivered_mwh, tr.fee_per_kwh);
    let operator_received = buyer_paid
        .checked_sub(seller_received)
        .and_then(|rest| rest.checked_sub(grid_fees))
        .expect("the buyer's price covers the seller's price and the grid fee");
    // The collateral was sized as floor(energy × (shortfall price − buyer price)); compensation is
    // the shortfall's part of it.
    let compensation = share_of(t.seller_collateral, shortfall, tr.energy_mwh);
    TradeSettlement {
        delivered_mwh,
        buyer_paid,
        seller_received,
        grid_fees,
        operator_received,
        buyer_refund: t
            .buyer_escrow
            .checked_sub(buyer_paid)
            .expect("a buyer's escrow covers what it pays"),
        compensation,
        collateral_returned: t
            .seller_collateral
            .checked_sub(compensation)
            .expect("compensation is a part of the collateral"),
        basis,
    }
}

/// Splits `export_mwh` (capped at what was sold) over the seller's trades pro rata, moves the
/// money of each trade out of escrow and marks the position final.
fn settle_for_good(
    o: &mut Overlay<'_>,
    cfg: &MarketConfig,
    slot: u64,
    seller: &Address,
    p: SellerPosition,
    export_mwh: u64,
    basis: SettlementBasis,
) -> Owed {
    let mut owed = Owed::default();
    let trades: Vec<TradeRecord> = p
        .trades
        .iter()
        .map(|&i| dec(&o.kv_get(&keys::trade(slot, i)).expect("trade")))
        .collect();
    let energies: Vec<u64> = trades.iter().map(|t| t.trade.energy_mwh).collect();
    let sold = energies
        .iter()
        .try_fold(0u64, |sum, e| sum.checked_add(*e))
        .expect("a slot's energy is bounded by its orders");
    // A seller is paid for no more than its keyed devices measured and the proof-of-generation
    // checks passed (nothing without an accepted reading: a declared device sells nothing).
    let verified_mwh = o
        .kv_get(&keys::verified_export(slot, seller))
        .map_or(0, |b| dec::<u64>(&b));
    let delivered = mk::pro_rata(&energies, export_mwh.min(verified_mwh).min(sold));
    let retail = crate::grid_operator::tariff(o, cfg, slot).retail_per_kwh;
    for (t, &d) in trades.iter().zip(&delivered) {
        if d > 0 {
            // Verified energy delivered to a buyer, valued at the import it avoided; economics
            // decides whether it earns (not between accounts of one owner).
            owed.delivered.push(Delivered {
                slot,
                seller: *seller,
                buyer: t.buyer,
                energy_mwh: d,
                value: mk::value_floor(d, retail),
            });
        }
    }
    for ((&i, mut t), d) in p.trades.iter().zip(trades).zip(delivered) {
        let s = settlement_of(&t, d, basis);
        let e = escrow_account();
        let pay = |o: &mut Overlay<'_>, to: Address, amount: u128| {
            o.move_funds(e, to, Amount(amount))
                .expect("escrow holds every unsettled trade's funds");
        };
        // Each sum is a part of the trade's escrow, so none can overflow.
        pay(o, t.seller, s.seller_received + s.collateral_returned);
        owed.received
            .push((slot, t.seller, Amount(s.seller_received)));
        pay(o, cfg.grid_operator, s.grid_fees);
        pay(o, cfg.market_operator, s.operator_received);
        pay(o, t.buyer, s.buyer_refund + s.compensation);
        t.settlement = Some(s);
        o.kv_put(keys::trade(slot, i), enc(&t));
    }
    o.kv_put(
        keys::seller(slot, seller),
        enc(&SellerPosition {
            trades: p.trades,
            status: SettlementStatus::Final,
        }),
    );
    owed
}
