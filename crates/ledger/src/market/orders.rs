//! Orders: a bid locks its most possible cost, an ask its collateral against falling short, and
//! every order the genesis `order_deposit` (returned when its slot clears), so that a slot's
//! capacity costs whoever fills it; both can be cancelled before gate closure. Orders below the
//! genesis `min_order_kwh` are refused.

use gridmesh_market::{self as mk, value_ceil, Side};
use gridmesh_types::Amount;

use super::escrow_account;
use super::records::{Meta, OrderRecord, OrderStatus};
use crate::config::MarketConfig;
use crate::devices::owner_capacity;
use crate::error::{MarketTxError, TxError};
use crate::kv::{decode as dec, encode as enc, keys};
use crate::limits::{MAX_ORDERS_PER_SLOT, MWH_PER_W_PER_SLOT};
use crate::state::{Event, Origin, Overlay};

/// The fields of a `PlaceOrder` transaction.
#[derive(Clone, Copy, Debug)]
pub(crate) struct NewOrder<'k> {
    pub slot: u64,
    pub side: Side,
    pub energy_mwh: u64,
    pub price_per_kwh: u64,
    pub location: &'k str,
}

/// `PlaceOrder`: an order for a slot that is still open, with its escrow locked.
pub(crate) fn place_order(
    o: &mut Overlay<'_>,
    cfg: &MarketConfig,
    from: Origin<'_>,
    order: NewOrder<'_>,
) -> Result<Vec<Event>, TxError> {
    let sender = from.sender;
    let now = from.now_ms();
    let ctx = from.ctx;
    let NewOrder {
        slot,
        side,
        energy_mwh,
        price_per_kwh: price,
        location,
    } = order;
    cfg.check_open(slot, now)?;
    if energy_mwh > mk::MAX_ORDER_MWH {
        return Err(MarketTxError::EnergyTooLarge(energy_mwh).into());
    }
    if energy_mwh < cfg.min_order_mwh {
        return Err(MarketTxError::EnergyTooSmall {
            energy_mwh,
            min_mwh: cfg.min_order_mwh,
        }
        .into());
    }
    if price > mk::MAX_PRICE_PER_KWH {
        return Err(MarketTxError::PriceTooHigh(price).into());
    }
    mk::check_location(location).map_err(|e| MarketTxError::BadLocation(e.to_string()))?;
    let open: u32 = o
        .kv_get(&keys::open_slot(slot))
        .map(|b| dec(&b))
        .unwrap_or(0);
    if open >= MAX_ORDERS_PER_SLOT {
        return Err(MarketTxError::SlotFull(slot).into());
    }
    let escrow = match side {
        Side::Bid => {
            let max_mwh = cfg.max_import_w.saturating_mul(MWH_PER_W_PER_SLOT);
            if energy_mwh > max_mwh {
                return Err(MarketTxError::BidAboveImportLimit {
                    energy_mwh,
                    max_mwh,
                }
                .into());
            }
            value_ceil(energy_mwh, price)
        }
        Side::Ask => {
            let max_mwh = owner_capacity(o, &sender).keyed_producing_mwh;
            if max_mwh == 0 {
                return Err(MarketTxError::NoProducingDevice.into());
            }
            if energy_mwh > max_mwh {
                return Err(MarketTxError::AskAboveCapacity {
                    energy_mwh,
                    max_mwh,
                }
                .into());
            }
            value_ceil(energy_mwh, cfg.shortfall_price(slot).saturating_sub(price))
        }
    };
    // Every order locks the deposit too; clearing releases what its trades do not hold, so the
    // deposit comes back when the slot clears (or the order is cancelled). Both terms are bounded
    // (energy, price and deposit limits), so the sum cannot overflow.
    let escrow = escrow
        .checked_add(cfg.order_deposit)
        .expect("bounded by the order limits");
    let mut meta: Meta = o
        .kv_get(&keys::market_meta())
        .map(|b| dec(&b))
        .unwrap_or_default();
    let order_id = meta.next_order_id;
    meta.next_order_id = order_id
        .checked_add(1)
        .ok_or(MarketTxError::SequenceExhausted("order ids"))?;
    // The only step that can fail from here on; it changes nothing if it does.
    o.move_funds(sender, escrow_account(), Amount(escrow))?;
    o.kv_put(keys::market_meta(), enc(&meta));
    // `open` is below MAX_ORDERS_PER_SLOT (checked above).
    o.kv_put(keys::open_slot(slot), enc(&(open + 1)));
    o.kv_put(
        keys::order(slot, order_id),
        enc(&OrderRecord {
            owner: sender,
            side,
            energy_mwh,
            price_per_kwh: price,
            location: location.to_string(),
            time: ctx.arrival(),
            escrow,
            traded_mwh: 0,
            status: OrderStatus::Open,
        }),
    );
    Ok(vec![Event::OrderPlaced {
        slot,
        order_id,
        escrow: Amount(escrow),
    }])
}

/// `CancelOrder`: an open order is withdrawn before gate closure and its escrow returned.
pub(crate) fn cancel_order(
    o: &mut Overlay<'_>,
    cfg: &MarketConfig,
    from: Origin<'_>,
    slot: u64,
    order_id: u64,
) -> Result<Vec<Event>, TxError> {
    let sender = from.sender;
    let now = from.now_ms();
    let Some(bytes) = o.kv_get(&keys::order(slot, order_id)) else {
        return Err(MarketTxError::UnknownOrder { slot, order_id }.into());
    };
    let rec: OrderRecord = dec(&bytes);
    if rec.owner != sender {
        return Err(MarketTxError::NotYourOrder(order_id).into());
    }
    if rec.status != OrderStatus::Open {
        return Err(MarketTxError::OrderNotOpen(order_id).into());
    }
    let gate_ms = cfg.gate_closure_ms(slot);
    if now >= gate_ms {
        return Err(MarketTxError::GateClosed {
            slot,
            gate_ms,
            now_ms: now,
        }
        .into());
    }
    o.move_funds(escrow_account(), sender, Amount(rec.escrow))
        .expect("escrow holds every open order's escrow");
    o.kv_delete(keys::order(slot, order_id));
    let open: u32 = o
        .kv_get(&keys::open_slot(slot))
        .map(|b| dec(&b))
        .unwrap_or(1);
    if open <= 1 {
        o.kv_delete(keys::open_slot(slot));
    } else {
        o.kv_put(keys::open_slot(slot), enc(&(open - 1)));
    }
    Ok(vec![Event::OrderCancelled {
        slot,
        order_id,
        refund: Amount(rec.escrow),
    }])
}
