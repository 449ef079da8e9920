//! What the dashboard reads beyond the core API: the market's recent slots, the recent blocks, and
//! charts rendered on the server as SVG (plotters, through `gridmesh_charts::line_chart`), so
//! that the page needs no charting script and every chart's axes carry their units.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use gridmesh_charts::{line_chart, Line, PALETTE};
use gridmesh_ledger::market::{self, SlotRecord};
use gridmesh_ledger::readers::MarketReader;
use gridmesh_types::units::{slot_of, slot_start_ms};
use gridmesh_types::Amount;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::api::{ApiError, ApiResult};
use crate::Shared;

/// Most slots one history request covers (a week).
pub const MAX_HISTORY_SLOTS: u64 = 672;
/// Most blocks one list request returns.
pub const MAX_BLOCKS: u64 = 100;

#[derive(Deserialize, IntoParams)]
pub struct HistoryQuery {
    /// Slots up to the current one (1 to 672; default 96, a day).
    pub slots: Option<u64>,
}

/// One slot of the market's history.
#[derive(Serialize, Deserialize, ToSchema, Debug, Clone, PartialEq)]
pub struct PriceRow {
    pub slot: u64,
    pub delivery_start_ms: u64,
    /// `null` before clearing, or when the slot's markets had no single price.
    pub clearing_price_per_kwh: Option<String>,
    /// The volume-weighted mean price of the slot's markets, tokens per kWh.
    pub mean_price_per_kwh: Option<String>,
    pub volume_kwh: String,
    pub orders: u32,
    pub island: bool,
}

#[derive(Serialize, Deserialize, ToSchema, Debug, Clone, PartialEq)]
pub struct PriceHistory {
    /// The current slot (the head's time).
    pub current_slot: u64,
    /// Cleared slots, oldest first (slots without orders are left out).
    pub rows: Vec<PriceRow>,
}

fn base_units_per_kwh(v: u64) -> String {
    Amount(u128::from(v)).to_string()
}

fn kwh(mwh: u64) -> String {
    gridmesh_types::format_fixed(u128::from(mwh), 6)
}

/// Clearing prices and volumes of the last `slots` slots.
pub fn price_history(state: &gridmesh_ledger::State, now_ms: u64, slots: u64) -> PriceHistory {
    let current = slot_of(now_ms);
    let rows = (current.saturating_sub(slots - 1)..=current)
        .filter_map(|slot| {
            let r: SlotRecord = state.slot_record(slot)?;
            let (value, volume) = r
                .markets
                .iter()
                .filter_map(|m| {
                    Some((
                        u128::from(m.price_per_kwh?) * u128::from(m.volume_mwh),
                        m.volume_mwh,
                    ))
                })
                .fold((0u128, 0u64), |(v, q), (mv, mq)| (v + mv, q + mq));
            Some(PriceRow {
                slot,
                delivery_start_ms: slot_start_ms(slot),
                clearing_price_per_kwh: r.clearing_price_per_kwh.map(base_units_per_kwh),
                mean_price_per_kwh: (volume > 0)
                    .then(|| Amount(value / u128::from(volume)).to_string()),
                volume_kwh: kwh(r.volume_mwh),
                orders: r.orders,
                island: r.island,
            })
        })
        .collect();
    PriceHistory {
        current_slot: current,
        rows,
    }
}

fn slots_param(q: &HistoryQuery) -> Result<u64, ApiError> {
    let n = q.slots.unwrap_or(96);
    if !(1..=MAX_HISTORY_SLOTS).contains(&n) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("slots must be 1 to {MAX_HISTORY_SLOTS}, not {n}"),
        ));
    }
    Ok(n)
}

fn head_state(s: &Shared) -> (gridmesh_ledger::State, u64) {
    // A state clone shares its buckets; views are built without holding the lock.
    let chain = s.chain.read().expect("chain lock");
    (chain.state().clone(), chain.head().timestamp_ms)
}

/// Clearing prices and volumes of the recent slots.
#[utoipa::path(get, path = "/v1/market/history", params(HistoryQuery),
    responses((status = 200, body = PriceHistory), (status = 400, body = crate::api::ErrorBody)))]
pub async fn get_history(
    State(s): State<Arc<Shared>>,
    Query(q): Query<HistoryQuery>,
) -> ApiResult<PriceHistory> {
    let n = slots_param(&q)?;
    let (state, now) = head_state(&s);
    Ok(Json(price_history(&state, now, n)))
}

#[derive(Deserialize, IntoParams)]
pub struct BlocksQuery {
    /// Newest blocks to list (1 to 100; default 20).
    pub limit: Option<u64>,
}

#[derive(Serialize, Deserialize, ToSchema, Debug, Clone, PartialEq)]
pub struct BlockSummary {
    pub height: u64,
    pub hash: String,
    pub timestamp_ms: u64,
    pub tx_count: u32,
    pub proposer: String,
    pub state_root: String,
}

#[derive(Serialize, Deserialize, ToSchema, Debug, Clone, PartialEq)]
pub struct BlockList {
    pub head: u64,
    /// Newest first.
    pub blocks: Vec<BlockSummary>,
}

/// The newest blocks' headers.
#[utoipa::path(get, path = "/v1/blocks", params(BlocksQuery),
    responses((status = 200, body = BlockList), (status = 400, body = crate::api::ErrorBody)))]
pub async fn get_blocks(
    State(s): State<Arc<Shared>>,
    Query(q): Query<BlocksQuery>,
) -> ApiResult<BlockList> {
    let limit = q.limit.unwrap_or(20);
    if !(1..=MAX_BLOCKS).contains(&limit) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("limit must be 1 to {MAX_BLOCKS}, not {limit}"),
        ));
    }
    let (store, head) = {
        let chain = s.chain.read().expect("chain lock");
        (chain.store().clone(), chain.head().height)
    };
    let mut blocks = Vec::new();
    for height in (head.saturating_sub(limit - 1)..=head).rev() {
        let Some(h) = store.header(height).map_err(ApiError::internal)? else {
            continue;
        };
        blocks.push(BlockSummary {
            height,
            hash: h.hash().to_string(),
            timestamp_ms: h.timestamp_ms,
            tx_count: h.tx_count,
            proposer: h.proposer.to_string(),
            state_root: h.state_root.to_string(),
        });
    }
    Ok(Json(BlockList { head, blocks }))
}

/// An SVG chart as the API answers it (never cached: charts follow the chain; light or dark by
/// the reader's setting), or why it failed.
pub(crate) fn svg(result: Result<String, impl std::fmt::Display>) -> Response {
    match result {
        Ok(body) => (
            [
                (header::CONTENT_TYPE, "image/svg+xml"),
                (header::CACHE_CONTROL, "no-store"),
            ],
            gridmesh_charts::themed(&body),
        )
            .into_response(),
        Err(e) => ApiError::internal(e).into_response(),
    }
}

/// Hours before now of a slot, for chart axes.
fn hours_ago(slot: u64, current: u64) -> f64 {
    -((current - slot) as f64) / 4.0
}

/// The recent slots' prices (mean of each slot's markets) and volumes as an SVG chart.
#[utoipa::path(get, path = "/v1/charts/prices.svg", params(HistoryQuery),
    responses((status = 200, content_type = "image/svg+xml", body = String),
              (status = 400, body = crate::api::ErrorBody)))]
pub async fn get_prices_chart(
    State(s): State<Arc<Shared>>,
    Query(q): Query<HistoryQuery>,
) -> Result<Response, ApiError> {
    let n = slots_param(&q)?;
    let (state, now) = head_state(&s);
    let h = price_history(&state, now, n);
    let num = |v: &Option<String>| v.as_deref().and_then(|p| p.parse::<f64>().ok());
    // A slot without trades has no price: the line breaks there.
    let prices: Vec<(f64, f64)> = h
        .rows
        .iter()
        .map(|r| {
            (
                hours_ago(r.slot, h.current_slot),
                num(&r.mean_price_per_kwh).unwrap_or(f64::NAN),
            )
        })
        .collect();
    let volumes: Vec<(f64, f64)> = h
        .rows
        .iter()
        .filter_map(|r| {
            Some((
                hours_ago(r.slot, h.current_slot),
                r.volume_kwh.parse::<f64>().ok()?,
            ))
        })
        .collect();
    Ok(svg(gridmesh_charts::two_axis_chart(
        "Clearing prices and volume",
        "hours before the current slot (h)",
        (
            "mean clearing price (tokens/kWh)",
            &[Line {
                name: "price (tokens/kWh, left)",
                color: PALETTE[0],
                points: prices,
            }],
        ),
        (
            "volume traded (kWh)",
            &[Line {
                name: "volume (kWh, right)",
                color: PALETTE[1],
                points: volumes,
            }],
        ),
    )))
}

#[derive(Deserialize, IntoParams)]
pub struct DepthQuery {
    /// The market slot.
    pub slot: u64,
}

/// A slot's order book as cumulative demand and supply curves, SVG.
#[utoipa::path(get, path = "/v1/charts/depth.svg", params(DepthQuery),
    responses((status = 200, content_type = "image/svg+xml", body = String),
              (status = 404, body = crate::api::ErrorBody)))]
pub async fn get_depth_chart(
    State(s): State<Arc<Shared>>,
    Query(q): Query<DepthQuery>,
) -> Result<Response, ApiError> {
    let (state, now) = head_state(&s);
    let view = gridmesh_api::market::slot_view(&state, q.slot, now)
        .ok_or_else(|| ApiError::not_found(format!("slot {} has no orders", q.slot)))?;
    let levels: Vec<(f64, f64, f64)> = view
        .depth
        .iter()
        .filter_map(|l| {
            Some((
                l.price_per_kwh.parse().ok()?,
                l.bid_kwh.parse().ok()?,
                l.ask_kwh.parse().ok()?,
            ))
        })
        .collect();
    // Demand: what bids at or above a price would buy; supply: asks at or below it.
    let mut demand = Vec::new();
    let mut acc = 0.0;
    for (p, bid, _) in levels.iter().rev() {
        acc += bid;
        demand.push((acc, *p));
    }
    let mut supply = Vec::new();
    acc = 0.0;
    for (p, _, ask) in &levels {
        acc += ask;
        supply.push((acc, *p));
    }
    Ok(svg(line_chart(
        &format!(
            "Order book, delivery from {}",
            gridmesh_types::units::utc_text(gridmesh_types::units::slot_start_ms(q.slot))
        ),
        "cumulative energy (kWh)",
        "price (tokens/kWh)",
        &[
            Line {
                name: "bids (demand)",
                color: PALETTE[0],
                points: demand,
            },
            Line {
                name: "asks (supply)",
                color: PALETTE[1],
                points: supply,
            },
        ],
    )))
}

#[derive(Deserialize, IntoParams)]
pub struct OrdersQuery {
    /// The account whose orders to list.
    pub owner: String,
}

/// One order on the ledger.
#[derive(Serialize, Deserialize, ToSchema, Debug, Clone, PartialEq)]
pub struct OrderView {
    pub slot: u64,
    pub delivery_start_ms: u64,
    pub id: u64,
    /// `bid` or `ask`.
    pub side: String,
    pub energy_kwh: String,
    pub price_per_kwh: String,
    pub location: String,
    /// `open` (waiting for its gate closure) or `cleared`.
    pub status: String,
    pub traded_kwh: String,
}

#[derive(Serialize, Deserialize, ToSchema, Debug, Clone, PartialEq)]
pub struct OrderList {
    pub owner: String,
    /// Orders of the last day and of the open slots up to a week ahead, newest slot first.
    pub orders: Vec<OrderView>,
}

/// An account's orders of the last day and the open slots ahead: for its session and whom it
/// grants them (the public sees the order book's depth, `/v1/charts/depth.svg`).
#[utoipa::path(get, path = "/v1/market/orders", params(OrdersQuery),
    responses((status = 200, body = OrderList), (status = 400, body = crate::api::ErrorBody),
              (status = 401, body = crate::api::ErrorBody), (status = 403, body = crate::api::ErrorBody)))]
pub async fn get_orders(
    State(s): State<Arc<Shared>>,
    Query(q): Query<OrdersQuery>,
    headers: axum::http::HeaderMap,
) -> ApiResult<OrderList> {
    let owner = crate::api_home::parse_address(&q.owner, "owner")?;
    s.auth.reader_of(&headers, &owner)?;
    let (state, now) = head_state(&s);
    let current = slot_of(now);
    let mut orders = Vec::new();
    for slot in (current.saturating_sub(95)..=current + market::MAX_SLOTS_AHEAD).rev() {
        for (order_id, o) in state.orders(slot) {
            if o.owner != owner {
                continue;
            }
            orders.push(OrderView {
                slot,
                delivery_start_ms: slot_start_ms(slot),
                id: order_id,
                side: match o.side {
                    gridmesh_market::Side::Bid => "bid".into(),
                    gridmesh_market::Side::Ask => "ask".into(),
                },
                energy_kwh: kwh(o.energy_mwh),
                price_per_kwh: base_units_per_kwh(o.price_per_kwh),
                location: o.location.clone(),
                status: match o.status {
                    market::OrderStatus::Open => "open".into(),
                    market::OrderStatus::Cleared => "cleared".into(),
                },
                traded_kwh: kwh(o.traded_mwh),
            });
        }
    }
    Ok(Json(OrderList {
        owner: owner.to_string(),
        orders,
    }))
}

/// One trade of an account, from its side.
#[derive(Serialize, Deserialize, ToSchema, Debug, Clone, PartialEq)]
pub struct MyTradeView {
    pub slot: u64,
    pub delivery_start_ms: u64,
    /// `bought` or `sold`.
    pub side: String,
    pub counterparty: String,
    pub energy_kwh: String,
    /// The account's price per kWh (what the buyer pays, fees included, or what the seller gets).
    pub price_per_kwh: String,
    /// Once settled: energy delivered and what the account paid or received.
    pub delivered_kwh: Option<String>,
    pub settled_tokens: Option<String>,
}

#[derive(Serialize, Deserialize, ToSchema, Debug, Clone, PartialEq)]
pub struct MyTradeList {
    pub owner: String,
    /// Trades of the last day, newest slot first.
    pub trades: Vec<MyTradeView>,
}

/// An account's trades of the last day: for its session and whom it grants them (the public sees
/// each slot's volume and prices).
#[utoipa::path(get, path = "/v1/market/trades", params(OrdersQuery),
    responses((status = 200, body = MyTradeList), (status = 400, body = crate::api::ErrorBody),
              (status = 401, body = crate::api::ErrorBody), (status = 403, body = crate::api::ErrorBody)))]
pub async fn get_trades(
    State(s): State<Arc<Shared>>,
    Query(q): Query<OrdersQuery>,
    headers: axum::http::HeaderMap,
) -> ApiResult<MyTradeList> {
    let owner = crate::api_home::parse_address(&q.owner, "owner")?;
    s.auth.reader_of(&headers, &owner)?;
    let (state, now) = head_state(&s);
    let current = slot_of(now);
    let mut trades = Vec::new();
    for slot in (current.saturating_sub(95)..=current).rev() {
        for t in state.trades(slot) {
            let bought = t.buyer == owner;
            if !bought && t.seller != owner {
                continue;
            }
            let settled = t.settlement.as_ref();
            trades.push(MyTradeView {
                slot,
                delivery_start_ms: slot_start_ms(slot),
                side: if bought { "bought" } else { "sold" }.into(),
                counterparty: if bought { t.seller } else { t.buyer }.to_string(),
                energy_kwh: kwh(t.trade.energy_mwh),
                price_per_kwh: base_units_per_kwh(if bought {
                    t.trade.buyer_price_per_kwh
                } else {
                    t.trade.seller_price_per_kwh
                }),
                delivered_kwh: settled.map(|x| kwh(x.delivered_mwh)),
                settled_tokens: settled.map(|x| {
                    Amount(if bought {
                        x.buyer_paid
                    } else {
                        x.seller_received
                    })
                    .to_string()
                }),
            });
        }
    }
    Ok(Json(MyTradeList {
        owner: owner.to_string(),
        trades,
    }))
}

/// The grid price list for tools that plan by price (evcc's custom tariff format): what a kWh
/// from the grid costs in each 15-minute slot from the current one over the next 24 hours; the
/// cleared price where the slot cleared, else the same quarter hour's mean of the last 7 days,
/// else the utility's retail tariff. Tokens per kWh.
#[utoipa::path(get, path = "/v1/tariff/grid",
    responses((status = 200, body = Vec<gridmesh_api::tariff::PricePoint>)))]
pub async fn get_grid_tariff(
    State(s): State<Arc<Shared>>,
) -> ApiResult<Vec<gridmesh_api::tariff::PricePoint>> {
    price_list(&s, gridmesh_api::tariff::PriceSide::Grid)
}

/// The feed-in price list (evcc's custom tariff format): what a kWh fed in earns in each
/// 15-minute slot from the current one over the next 24 hours; the cleared sellers' price where
/// the slot cleared, else the same quarter hour's mean of the last 7 days, else the utility's
/// feed-in tariff. Tokens per kWh.
#[utoipa::path(get, path = "/v1/tariff/feedin",
    responses((status = 200, body = Vec<gridmesh_api::tariff::PricePoint>)))]
pub async fn get_feedin_tariff(
    State(s): State<Arc<Shared>>,
) -> ApiResult<Vec<gridmesh_api::tariff::PricePoint>> {
    price_list(&s, gridmesh_api::tariff::PriceSide::FeedIn)
}

/// The price list of `side` at the head's time.
fn price_list(
    s: &Shared,
    side: gridmesh_api::tariff::PriceSide,
) -> ApiResult<Vec<gridmesh_api::tariff::PricePoint>> {
    let (state, now) = head_state(s);
    Ok(Json(gridmesh_api::tariff::price_list(&state, now, side)))
}
