//! The grid operator on the ledger: operating envelopes per connection and slot (what the
//! clearing trims orders to), and the islanding controller's transitions (the market clears under
//! island rules while the point of common coupling is open).
//!
//! Knows nothing of orders, devices or rewards: the market reads the envelopes and the mode.

use borsh::{BorshDeserialize, BorshSerialize};
use gridmesh_market::Tariff;
use serde::Serialize;

use crate::config::MarketConfig;
use crate::error::{MarketTxError, TxError};
use crate::kv::{decode as dec, encode as enc, keys};
use crate::state::{Event, Origin, Overlay};
use crate::tx::GridEventKind;

/// A connection point's envelope in one slot.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize)]
pub struct EnvelopeRecord {
    pub location: String,
    pub import_mwh: u64,
    pub export_mwh: u64,
}

/// The islanding controller's state as the ledger knows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize)]
pub struct GridMode {
    /// The last transition (None: connected since genesis).
    pub last: Option<GridEventKind>,
    pub since_ms: u64,
    /// Transitions recorded so far.
    pub events: u64,
}

impl GridMode {
    /// Whether the PCC breaker is open (islanded or still resynchronising).
    pub fn is_islanded(&self) -> bool {
        matches!(
            self.last,
            Some(GridEventKind::Islanded | GridEventKind::Resynchronising)
        )
    }
}

/// One recorded transition.
#[derive(Clone, Copy, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize)]
pub struct GridEventRecord {
    pub event: GridEventKind,
    pub at_ms: u64,
    pub height: u64,
}

/// The islanding state the ledger holds.
pub(crate) fn grid_mode(o: &Overlay<'_>) -> GridMode {
    o.kv_get(&keys::grid_mode())
        .map(|b| dec(&b))
        .unwrap_or(GridMode {
            last: None,
            since_ms: 0,
            events: 0,
        })
}

/// The rule of every transaction here: only the market's grid operator sends it.
fn only_grid_operator(cfg: &MarketConfig, from: &Origin<'_>) -> Result<(), MarketTxError> {
    if from.sender == cfg.grid_operator {
        Ok(())
    } else {
        Err(MarketTxError::NotGridOperator)
    }
}

/// `SetEnvelope`: the grid operator sets a connection's import and export limits for a slot.
pub(crate) fn set_envelope(
    o: &mut Overlay<'_>,
    cfg: &MarketConfig,
    from: Origin<'_>,
    slot: u64,
    location: &str,
    import_mwh: u64,
    export_mwh: u64,
) -> Result<Vec<Event>, TxError> {
    let now = from.now_ms();
    only_grid_operator(cfg, &from)?;
    cfg.check_open(slot, now)?;
    gridmesh_market::check_location(location)
        .map_err(|e| MarketTxError::BadLocation(e.to_string()))?;
    o.kv_put(
        keys::envelope(slot, location),
        enc(&EnvelopeRecord {
            location: location.to_string(),
            import_mwh,
            export_mwh,
        }),
    );
    Ok(vec![Event::EnvelopeSet { slot }])
}

/// `SetTariff`: the grid operator sets the utility's prices of a slot (checked in the
/// transaction's form: feed-in at most retail, within the price limit).
pub(crate) fn set_tariff(
    o: &mut Overlay<'_>,
    cfg: &MarketConfig,
    from: Origin<'_>,
    slot: u64,
    tariff: Tariff,
) -> Result<Vec<Event>, TxError> {
    only_grid_operator(cfg, &from)?;
    cfg.check_open(slot, from.now_ms())?;
    o.kv_put(keys::tariff(slot), enc(&tariff));
    Ok(vec![Event::TariffSet { slot }])
}

/// The utility's prices in `slot`: the grid operator's, else the genesis time-of-use tariff.
pub(crate) fn tariff(o: &Overlay<'_>, cfg: &MarketConfig, slot: u64) -> Tariff {
    o.kv_get(&keys::tariff(slot))
        .map_or_else(|| cfg.tariff(slot), |b| dec(&b))
}

/// `GridEvent`: the grid operator records an islanding transition.
pub(crate) fn grid_event(
    o: &mut Overlay<'_>,
    cfg: &MarketConfig,
    from: Origin<'_>,
    event: GridEventKind,
    at_ms: u64,
) -> Result<Vec<Event>, TxError> {
    let now = from.now_ms();
    let ctx = from.ctx;
    only_grid_operator(cfg, &from)?;
    let mode = grid_mode(o);
    let ok = matches!(
        (mode.last, event),
        (
            None | Some(GridEventKind::Reconnected),
            GridEventKind::Islanded
        ) | (
            Some(GridEventKind::Resynchronising),
            GridEventKind::Islanded
        ) | (
            Some(GridEventKind::Islanded),
            GridEventKind::Resynchronising
        ) | (
            Some(GridEventKind::Resynchronising),
            GridEventKind::Reconnected
        )
    );
    if !ok {
        return Err(MarketTxError::BadGridTransition {
            last: mode.last,
            event,
        }
        .into());
    }
    if at_ms < mode.since_ms || at_ms > now {
        return Err(MarketTxError::GridEventTime {
            at_ms,
            since_ms: mode.since_ms,
            now_ms: now,
        }
        .into());
    }
    let seq = mode.events;
    let events = seq
        .checked_add(1)
        .ok_or(MarketTxError::SequenceExhausted("grid events"))?;
    o.kv_put(
        keys::grid_event(seq),
        enc(&GridEventRecord {
            event,
            at_ms,
            height: ctx.height,
        }),
    );
    o.kv_put(
        keys::grid_mode(),
        enc(&GridMode {
            last: Some(event),
            since_ms: at_ms,
            events,
        }),
    );
    Ok(vec![Event::GridEvent { seq }])
}
